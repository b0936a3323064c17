"""hipsternet's ``neuralnet.py``: ConvNet and FeedForwardNet over ``layer`` as ``l``.

The import of ``layer`` is the one line the README tells users to change.
Like the original, ``NeuralNet`` binds its non-linearities at import, and
its networks call every other ``l.<function>`` at run time.
"""

import numpy as np

from . import layer as l
from . import loss as loss_fun


class NeuralNet:
    forward_nonlins = dict(relu=l.relu_forward, lrelu=l.lrelu_forward,
                           sigmoid=l.sigmoid_forward, tanh=l.tanh_forward)
    backward_nonlins = dict(relu=l.relu_backward, lrelu=l.lrelu_backward,
                            sigmoid=l.sigmoid_backward, tanh=l.tanh_backward)

    def __init__(self, D, C, H, lam=1e-3, p_dropout=0.8, nonlin="relu"):
        self._init_model(D, C, H)
        self.lam = lam
        self.p_dropout = p_dropout
        self.forward_nonlin = NeuralNet.forward_nonlins[nonlin]
        self.backward_nonlin = NeuralNet.backward_nonlins[nonlin]

    def train_step(self, X_train, y_train):
        y_pred, cache = self.forward(X_train, train=True)
        loss = loss_fun.cross_entropy(self.model, y_pred, y_train, self.lam)
        grad = self.backward(y_pred, y_train, cache)
        return grad, loss


class FeedForwardNet(NeuralNet):
    def forward(self, X, train=False):
        m, caches = self.model, {}
        h = X
        for i in (1, 2):
            h, caches[f"fc{i}"] = l.fc_forward(h, m[f"W{i}"], m[f"b{i}"])
            running = (self.bn_caches[f"bn{i}_mean"], self.bn_caches[f"bn{i}_var"])
            h, caches[f"bn{i}"], mean, var = l.bn_forward(h, m[f"gamma{i}"], m[f"beta{i}"],
                                                          running, train=train)
            self.bn_caches[f"bn{i}_mean"], self.bn_caches[f"bn{i}_var"] = mean, var
            h, caches[f"nl{i}"] = self.forward_nonlin(h)
            if train:
                h, caches[f"u{i}"] = l.dropout_forward(h, self.p_dropout)
        score, caches["fc3"] = l.fc_forward(h, m["W3"], m["b3"])
        return score, caches

    def backward(self, y_pred, y_train, caches):
        grad = {}
        dh, grad["W3"], grad["b3"] = l.fc_backward(loss_fun.dcross_entropy(y_pred, y_train),
                                                  caches["fc3"])
        grad["W3"] += self.lam * self.model["W3"]
        for i in (2, 1):
            dh = self.backward_nonlin(dh, caches[f"nl{i}"])
            dh = l.dropout_backward(dh, caches[f"u{i}"])
            dh, grad[f"gamma{i}"], grad[f"beta{i}"] = l.bn_backward(dh, caches[f"bn{i}"])
            dh, grad[f"W{i}"], grad[f"b{i}"] = l.fc_backward(dh, caches[f"fc{i}"])
            grad[f"W{i}"] += self.lam * self.model[f"W{i}"]
        return grad

    def _init_model(self, D, C, H):
        self.model = dict(
            W1=np.random.randn(D, H) / np.sqrt(D / 2.0),
            W2=np.random.randn(H, H) / np.sqrt(H / 2.0),
            W3=np.random.randn(H, C) / np.sqrt(H / 2.0),
            b1=np.zeros((1, H)), b2=np.zeros((1, H)), b3=np.zeros((1, C)),
            gamma1=np.ones((1, H)), gamma2=np.ones((1, H)),
            beta1=np.zeros((1, H)), beta2=np.zeros((1, H)),
        )
        self.bn_caches = {key: np.zeros((1, H)) for key in ("bn1_mean", "bn2_mean",
                                                            "bn1_var", "bn2_var")}


class ConvNet(NeuralNet):
    """conv 3x3 (pad 1) - relu - maxpool 2 - fc - relu - fc, for 1x28x28 images only."""

    def forward(self, X, train=False):
        h1, h1_cache = l.conv_forward(X, self.model["W1"], self.model["b1"])
        h1, nl_cache1 = l.relu_forward(h1)
        hpool, hpool_cache = l.maxpool_forward(h1)
        h2 = hpool.ravel().reshape(X.shape[0], -1)
        h3, h3_cache = l.fc_forward(h2, self.model["W2"], self.model["b2"])
        h3, nl_cache3 = l.relu_forward(h3)
        score, score_cache = l.fc_forward(h3, self.model["W3"], self.model["b3"])
        return score, (h1_cache, h3_cache, score_cache, hpool_cache, hpool, nl_cache1, nl_cache3)

    def backward(self, y_pred, y_train, cache):
        h1_cache, h3_cache, score_cache, hpool_cache, hpool, nl_cache1, nl_cache3 = cache
        dh3, dW3, db3 = l.fc_backward(loss_fun.dcross_entropy(y_pred, y_train), score_cache)
        dh3 = self.backward_nonlin(dh3, nl_cache3)
        dh2, dW2, db2 = l.fc_backward(dh3, h3_cache)
        dpool = l.maxpool_backward(dh2.ravel().reshape(hpool.shape), hpool_cache)
        dh1 = self.backward_nonlin(dpool, nl_cache1)
        _, dW1, db1 = l.conv_backward(dh1, h1_cache)
        return dict(W1=dW1, W2=dW2, W3=dW3, b1=db1, b2=db2, b3=db3)

    def _init_model(self, D, C, H):
        self.model = dict(
            W1=np.random.randn(D, 1, 3, 3) / np.sqrt(D / 2.0),
            W2=np.random.randn(D * 14 * 14, H) / np.sqrt(D * 14 * 14 / 2.0),
            W3=np.random.randn(H, C) / np.sqrt(H / 2.0),
            b1=np.zeros((D, 1)), b2=np.zeros((1, H)), b3=np.zeros((1, C)),
        )
