"""CS231n's convolution and pooling functions, backed by :mod:`fastcnn.functional`.

Same names, arguments and returns as the course's ``fast_layers.py``,
``layers.py`` and ``layer_utils.py``, so that assignment code switches with
one import::

    from fastcnn.compat.cs231n import conv_forward_fast, conv_backward_fast

- ``conv_param = {'stride': s, 'pad': p}``: zero padding ``p`` on every side.
- ``pool_param = {'pool_height': ph, 'pool_width': pw, 'stride': s}``.
- Forward functions return ``(out, cache)``; backward functions take
  ``(dout, cache)`` and return ``(dx, dw, db)`` for convolutions and ``dx``
  for pooling. Caches are opaque: pass them back unchanged.

The ``_naive``, ``_im2col``, ``_strides``, ``_reshape`` and ``_fast``
variants are one implementation under several names (the course's variants
compute the same numbers). Arrays keep their dtype (the course uses float64);
x, w, b and dout must share it. Unlike the course's reshape and naive
max-pool backward, which send the gradient to every tied maximum, ties go to
the first maximum only (as PyTorch), and any pool size, stride or input size
works.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..layers import ReLU

__all__ = [
    "conv_forward_naive",
    "conv_backward_naive",
    "conv_forward_im2col",
    "conv_backward_im2col",
    "conv_forward_strides",
    "conv_backward_strides",
    "conv_forward_fast",
    "conv_backward_fast",
    "max_pool_forward_naive",
    "max_pool_backward_naive",
    "max_pool_forward_im2col",
    "max_pool_backward_im2col",
    "max_pool_forward_reshape",
    "max_pool_backward_reshape",
    "max_pool_forward_fast",
    "max_pool_backward_fast",
    "conv_relu_forward",
    "conv_relu_backward",
    "conv_relu_pool_forward",
    "conv_relu_pool_backward",
]

_FORMATS = {
    "conv_param": "{'stride': s, 'pad': p}",
    "pool_param": "{'pool_height': ph, 'pool_width': pw, 'stride': s}",
}


def _get(params, key: str, name: str):
    """``params[key]`` with an error that shows the expected dict."""
    try:
        return params[key]
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"{name} must be a dict {_FORMATS[name]}, got {params!r} (missing {key!r})"
        ) from exc


def _conv_geometry(conv_param) -> dict:
    return dict(
        stride=_get(conv_param, "stride", "conv_param"),
        padding=_get(conv_param, "pad", "conv_param"),
    )


def conv_forward_fast(x, w, b, conv_param):
    """Convolution (cross-correlation) forward pass.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict
        ``'stride'`` and ``'pad'`` (zero padding on every side).

    Returns
    -------
    out : ndarray, shape (N, F, H', W')
        ``H' = 1 + (H + 2 * pad - HH) // stride`` (likewise ``W'``).
    cache : tuple
        For :func:`conv_backward_fast`.
    """
    out = F.conv2d(x, w, b, **_conv_geometry(conv_param))
    return out, (x, w, conv_param)


def conv_backward_fast(dout, cache):
    """Convolution backward pass.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H', W')
    cache : tuple
        From :func:`conv_forward_fast`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)
    """
    x, w, conv_param = cache
    return F.conv2d_backward(dout, x, w, **_conv_geometry(conv_param))


def _pool_geometry(pool_param) -> dict:
    kernel_size = (
        _get(pool_param, "pool_height", "pool_param"),
        _get(pool_param, "pool_width", "pool_param"),
    )
    return dict(kernel_size=kernel_size, stride=_get(pool_param, "stride", "pool_param"))


def max_pool_forward_fast(x, pool_param):
    """Max-pooling forward pass.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    pool_param : dict
        ``'pool_height'``, ``'pool_width'`` and ``'stride'``.

    Returns
    -------
    out : ndarray, shape (N, C, H', W')
        ``H' = 1 + (H - pool_height) // stride`` (likewise ``W'``).
    cache : tuple
        For :func:`max_pool_backward_fast`.
    """
    out, indices = F.max_pool2d(x, **_pool_geometry(pool_param), return_indices=True)
    return out, (indices, np.shape(x))


def max_pool_backward_fast(dout, cache):
    """Max-pooling backward pass: each output's gradient goes to its (first) maximum.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H', W')
    cache : tuple
        From :func:`max_pool_forward_fast`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    indices, x_shape = cache
    return F.max_pool2d_backward(dout, indices, x_shape)


def conv_relu_forward(x, w, b, conv_param):
    """Convolution followed by ReLU; returns ``(out, cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    relu = ReLU()
    return relu.forward(a), (conv_cache, relu)


def conv_relu_backward(dout, cache):
    """Backward pass of :func:`conv_relu_forward`; returns ``(dx, dw, db)``."""
    conv_cache, relu = cache
    return conv_backward_fast(relu.backward(dout), conv_cache)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """Convolution, ReLU, then max pooling; returns ``(out, cache)``."""
    s, conv_relu_cache = conv_relu_forward(x, w, b, conv_param)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (conv_relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache):
    """Backward pass of :func:`conv_relu_pool_forward`; returns ``(dx, dw, db)``."""
    conv_relu_cache, pool_cache = cache
    return conv_relu_backward(max_pool_backward_fast(dout, pool_cache), conv_relu_cache)


# The course's other implementations of the same functions.
conv_forward_naive = conv_forward_im2col = conv_forward_strides = conv_forward_fast
conv_backward_naive = conv_backward_im2col = conv_backward_strides = conv_backward_fast
max_pool_forward_naive = max_pool_forward_im2col = max_pool_forward_fast
max_pool_forward_reshape = max_pool_forward_fast
max_pool_backward_naive = max_pool_backward_im2col = max_pool_backward_fast
max_pool_backward_reshape = max_pool_backward_fast
