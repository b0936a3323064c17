"""hipsternet's layer functions, with convolution and pooling on fastcnn.

Same names, arguments, ``(out, cache)`` returns and dtypes as
``hipsternet/layer.py`` (including the im2col trio that it star-imports from
``hipsternet/im2col.py``), so that the one line of ``hipsternet/neuralnet.py``::

    import hipsternet.layer as l

becomes::

    import fastcnn.compat.hipsternet as l

and every network (``ConvNet``, ``FeedForwardNet``, the recurrent ones) runs
its layers through this module. Patching ``hipsternet.neuralnet.l`` at run
time works too: ``NeuralNet`` binds its ``forward_nonlins`` /
``backward_nonlins`` dicts at import, so the original ``relu_backward`` then
receives this module's ``relu_forward`` cache; the activation caches are
therefore exactly the originals' (the input for ReLU and leaky ReLU, the
output for sigmoid and tanh). Convolution and pooling caches hold fastcnn's
own data (no column matrix): pass them to this module's backward functions.

Conventions kept: conv bias ``b`` of shape ``(F, 1)`` and ``db`` of shape
``(F, 1)``; fc ``db`` of shape ``(D,)``; ``dropout_forward``'s `p_dropout`
is the KEEP probability and draws from NumPy's global generator exactly as
the original does; batch norm with eps 1e-8 and ``momentum*old +
(1-momentum)*new`` running averages; ReLU's gradient is 0 at 0. Results
have the dtype NumPy gives the original's expressions (float32 stays
float32; float32 images with float64 weights give float64).

Where this differs from the original:

- Pooling backward is correct for non-square inputs: the original unpacks
  ``n, d, w, h = X.shape`` (H and W swapped) and scatters the gradient of an
  H != W input to the wrong pixels.
- Convolution and pooling raise ValueError (a subclass of the original's
  plain ``Exception``), with the same ``'Invalid output dimension!'``
  message first, when the windows do not tile the input; the im2col trio
  checks W against the field width (see
  :func:`~fastcnn.compat.hipsternet.get_im2col_indices`).
- Max-pool ties go to the first maximum, as the original's ``np.argmax``;
  a window holding NaN yields NaN (the original keeps the first NaN's index,
  this the last one's).
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from . import _columns
from ._columns import col2im_indices, get_im2col_indices, im2col_indices

__all__ = [
    "get_im2col_indices",
    "im2col_indices",
    "col2im_indices",
    "fc_forward",
    "fc_backward",
    "relu_forward",
    "relu_backward",
    "lrelu_forward",
    "lrelu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "tanh_forward",
    "tanh_backward",
    "dropout_forward",
    "dropout_backward",
    "bn_forward",
    "bn_backward",
    "conv_forward",
    "conv_backward",
    "maxpool_forward",
    "maxpool_backward",
    "avgpool_forward",
    "avgpool_backward",
]

#: hipsternet's ``constant.eps``, the batch-norm epsilon.
EPS = 1e-8


def fc_forward(X, W, b):
    """Fully connected layer: ``X @ W + b``; cache ``(W, X)``.

    Parameters
    ----------
    X : ndarray, shape (N, D_in)
    W : ndarray, shape (D_in, D_out)
    b : ndarray, shape (1, D_out) or (D_out,)
    """
    return X @ W + b, (W, X)


def fc_backward(dout, cache):
    """Gradients of :func:`fc_forward`: ``(dX, dW, db)``, ``db`` of shape (D_out,)."""
    W, X = cache
    return dout @ W.T, X.T @ dout, dout.sum(axis=0)


def relu_forward(X):
    """``max(X, 0)``; cache `X`."""
    return np.maximum(X, 0), X


def relu_backward(dout, cache):
    """Gradient of :func:`relu_forward`: `dout` where ``X > 0`` (0 at 0)."""
    return np.where(cache <= 0, 0, dout)


def lrelu_forward(X, a=1e-3):
    """Leaky ReLU ``max(a*X, X)``; cache ``(X, a)``."""
    return np.maximum(a * X, X), (X, a)


def lrelu_backward(dout, cache):
    """Gradient of :func:`lrelu_forward`: `dout`, times `a` where ``X < 0``."""
    X, a = cache
    return np.where(X < 0, dout * a, dout)


def sigmoid_forward(X):
    """``1 / (1 + exp(-X))``; cache the output."""
    out = 1.0 / (1.0 + np.exp(-X))
    return out, out


def sigmoid_backward(dout, cache):
    """Gradient of :func:`sigmoid_forward` from its output."""
    return cache * (1.0 - cache) * dout


def tanh_forward(X):
    """``tanh(X)``; cache the output."""
    out = np.tanh(X)
    return out, out


def tanh_backward(dout, cache):
    """Gradient of :func:`tanh_forward` from its output."""
    return (1 - cache**2) * dout


def dropout_forward(X, p_dropout):
    """Inverted dropout that KEEPS each unit with probability `p_dropout`.

    The mask ``np.random.binomial(1, p_dropout, X.shape) / p_dropout`` comes
    from NumPy's global generator, as in the original; it is the cache.
    """
    u = np.random.binomial(1, p_dropout, size=X.shape) / p_dropout
    return X * u, u


def dropout_backward(dout, cache):
    """Gradient of :func:`dropout_forward`: `dout` times the mask."""
    return dout * cache


def bn_forward(X, gamma, beta, cache, momentum=0.9, train=True):
    """Batch normalisation of ``(N, D)`` activations over the batch.

    Parameters
    ----------
    X : ndarray, shape (N, D)
    gamma, beta : ndarray, shape (1, D) or (D,)
    cache : tuple
        ``(running_mean, running_var)``.
    momentum : float
        Running averages become ``momentum*old + (1-momentum)*batch``.
    train : bool
        Batch statistics (True) or the running ones (False).

    Returns
    -------
    out : ndarray, shape (N, D)
    cache : tuple or None
        For :func:`bn_backward` (None when not training).
    running_mean, running_var : ndarray
    """
    running_mean, running_var = cache
    if not train:
        out = gamma * ((X - running_mean) / np.sqrt(running_var + EPS)) + beta
        return out, None, running_mean, running_var
    mu = X.mean(axis=0)
    var = X.var(axis=0)
    X_norm = (X - mu) / np.sqrt(var + EPS)
    running_mean = momentum * running_mean + (1.0 - momentum) * mu
    running_var = momentum * running_var + (1.0 - momentum) * var
    return gamma * X_norm + beta, (X, X_norm, mu, var, gamma, beta), running_mean, running_var


def bn_backward(dout, cache):
    """Gradients of :func:`bn_forward` (training): ``(dX, dgamma, dbeta)``."""
    X, X_norm, mu, var, gamma, beta = cache
    n = X.shape[0]
    X_mu = X - mu
    std_inv = 1.0 / np.sqrt(var + EPS)
    dX_norm = dout * gamma
    dvar = np.sum(dX_norm * X_mu, axis=0) * -0.5 * std_inv**3
    dmu = np.sum(dX_norm * -std_inv, axis=0) + dvar * np.mean(-2.0 * X_mu, axis=0)
    dX = dX_norm * std_inv + dvar * 2 * X_mu / n + dmu / n
    return dX, np.sum(dout * X_norm, axis=0), np.sum(dout, axis=0)


def _tiled_output(size: int, field: int, padding: int, stride: int, axis: str) -> None:
    """The original's check: the output size must be a whole number."""
    if (size - field + 2 * padding) % stride or size - field + 2 * padding < 0:
        raise ValueError(
            f"Invalid output dimension! ({axis} - field + 2*padding) / stride + 1 must be a "
            f"whole number >= 1, got {axis}={size}, field={field}, padding={padding}, "
            f"stride={stride}"
        )


def conv_forward(X, W, b, stride=1, padding=1):
    """Convolution (cross-correlation) with zero padding on all sides.

    Parameters
    ----------
    X : ndarray, shape (N, C, H, W)
    W : ndarray, shape (F, C, fh, fw)
    b : ndarray of F values, shape (F, 1) as hipsternet keeps it
    stride, padding : int
        ``(H - fh + 2*padding) / stride`` must be whole (likewise W).

    Returns
    -------
    out : ndarray, shape (N, F, oh, ow), dtype of X, W and b promoted
    cache : tuple
        ``(X, W, b, stride, padding, None)`` for :func:`conv_backward` (the
        original's last entry is its column matrix, which fastcnn never
        builds).
    """
    n_filters, _, fh, fw = np.shape(W)
    _, _, h, w = np.shape(X)
    _tiled_output(h, fh, padding, stride, "H")
    _tiled_output(w, fw, padding, stride, "W")
    if np.size(b) != n_filters:
        raise ValueError(
            f"b must hold one bias per filter, shape ({n_filters}, 1), got shape {np.shape(b)}"
        )
    bias = np.reshape(b, n_filters)
    out = _columns.conv2d(X, W, bias, stride=stride, padding=padding)
    return out, (X, W, b, stride, padding, None)


def conv_backward(dout, cache):
    """Gradients of :func:`conv_forward`.

    Returns
    -------
    dX : ndarray, shape (N, C, H, W), dtype of W and dout promoted
    dW : ndarray, shape (F, C, fh, fw), dtype of dout and X promoted
    db : ndarray, shape (F, 1), dtype of dout
    """
    X, W, _, stride, padding, _ = cache
    dX, dW, db = _columns.conv2d_backward(dout, X, W, stride=stride, padding=padding)
    return dX, dW, db.reshape(-1, 1)


def _pool_input(X, size, stride):
    (X,) = _columns.promote(X=X)
    _, _, h, w = X.shape
    _tiled_output(h, size, 0, stride, "H")
    _tiled_output(w, size, 0, stride, "W")
    return X


def maxpool_forward(X, size=2, stride=2):
    """Max pooling over ``size x size`` windows (ties: the first maximum).

    Parameters
    ----------
    X : ndarray, shape (N, C, H, W)
    size, stride : int
        ``(H - size) / stride`` must be whole (likewise W); no padding.

    Returns
    -------
    out : ndarray, shape (N, C, oh, ow), dtype of X (float64 for integers)
    cache : tuple
        ``(X, size, stride, None, argmax)`` for :func:`maxpool_backward`
        (argmax as :func:`fastcnn.max_pool2d` returns it).
    """
    X = _pool_input(X, size, stride)
    out, indices = F.max_pool2d(X, size, stride, return_indices=True)
    return out, (X, size, stride, None, indices)


def maxpool_backward(dout, cache):
    """Gradient of :func:`maxpool_forward`: each output's to its maximum.

    Returns
    -------
    dX : ndarray, shape and dtype of the forward's X
        Correct for H != W too, unlike the original (see the module notes).
    """
    X, _, _, _, indices = cache
    return F.max_pool2d_backward(np.asarray(dout, dtype=X.dtype), indices, X.shape)


def avgpool_forward(X, size=2, stride=2):
    """Average pooling over ``size x size`` windows.

    Parameters and returns as :func:`maxpool_forward`; the cache is
    ``(X, size, stride, None, None)``.
    """
    X = _pool_input(X, size, stride)
    return F.avg_pool2d(X, size, stride), (X, size, stride, None, None)


def avgpool_backward(dout, cache):
    """Gradient of :func:`avgpool_forward`: ``dout / size**2`` to every cell of its window.

    Returns
    -------
    dX : ndarray, shape and dtype of the forward's X
    """
    X, size, stride, _, _ = cache
    return F.avg_pool2d_backward(np.asarray(dout, dtype=X.dtype), X.shape, size, stride)
