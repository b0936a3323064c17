"""The course's ``ThreeLayerConvNet`` (as students complete it).

conv - relu - 2x2 max pool - affine - relu - affine - softmax, parameters
drawn from NumPy's global generator and cast to `dtype` (float32 by
default) while the course's data is float64.
"""

import numpy as np

from ..layers import *  # noqa: F403
from ..fast_layers import *  # noqa: F403
from ..layer_utils import *  # noqa: F403


class ThreeLayerConvNet:
    def __init__(self, input_dim=(3, 32, 32), num_filters=32, filter_size=7, hidden_dim=100,
                 num_classes=10, weight_scale=1e-3, reg=0.0, dtype=np.float32):
        C, H, W = input_dim
        self.reg = reg
        self.params = {
            "W1": weight_scale * np.random.randn(num_filters, C, filter_size, filter_size),
            "b1": np.zeros(num_filters),
            "W2": weight_scale * np.random.randn(num_filters * (H // 2) * (W // 2), hidden_dim),
            "b2": np.zeros(hidden_dim),
            "W3": weight_scale * np.random.randn(hidden_dim, num_classes),
            "b3": np.zeros(num_classes),
        }
        for k, v in self.params.items():
            self.params[k] = v.astype(dtype)

    def loss(self, X, y=None):
        W1, b1 = self.params["W1"], self.params["b1"]
        W2, b2 = self.params["W2"], self.params["b2"]
        W3, b3 = self.params["W3"], self.params["b3"]
        conv_param = {"stride": 1, "pad": (W1.shape[2] - 1) // 2}
        pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}

        h1, cache1 = conv_relu_pool_forward(X, W1, b1, conv_param, pool_param)  # noqa: F405
        h2, cache2 = affine_relu_forward(h1, W2, b2)  # noqa: F405
        scores, cache3 = affine_forward(h2, W3, b3)  # noqa: F405
        if y is None:
            return scores

        loss, dscores = softmax_loss(scores, y)  # noqa: F405
        loss += 0.5 * self.reg * sum(np.sum(W * W) for W in (W1, W2, W3))
        grads = {}
        dh2, grads["W3"], grads["b3"] = affine_backward(dscores, cache3)  # noqa: F405
        dh1, grads["W2"], grads["b2"] = affine_relu_backward(dh2, cache2)  # noqa: F405
        _, grads["W1"], grads["b1"] = conv_relu_pool_backward(dh1, cache1)  # noqa: F405
        for name, W in (("W1", W1), ("W2", W2), ("W3", W3)):
            grads[name] += self.reg * W
        return loss, grads
