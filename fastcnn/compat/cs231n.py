"""CS231n's convolution and pooling functions, backed by :mod:`fastcnn.functional`.

Same names, arguments, returns and dtypes as the course's ``fast_layers.py``,
``im2col.py`` and ``im2col_cython.pyx`` (assignment 2), so that assignment
code switches with one line. The line is in ``cs231n/layer_utils.py``, the
file every model imports its layers through; its second line::

    from .fast_layers import *

becomes::

    from fastcnn.compat.cs231n import *

``classifiers/cnn.py`` and the notebook then get fastcnn's functions through
``layer_utils``. (Swapping the import in ``classifiers/cnn.py`` alone does
nothing: its next line, ``from ..layer_utils import *``, re-imports the
course's functions.) The star import brings exactly the names the course's
``fast_layers`` exports: the ``conv_*``/``max_pool_*`` functions in their
``_fast``, ``_im2col``, ``_strides`` and ``_reshape`` variants, the
``im2col_cython`` trio and the ``im2col.py`` trio. The ``_naive`` functions
(those of the course's ``layers.py``, which students write) and the
``conv_relu*`` sandwiches (``layer_utils``'s own) are here too, by name, but
not in the star import, so that it never replaces the student's code.

- ``conv_param = {'stride': s, 'pad': p}``: zero padding ``p`` on every side.
- ``pool_param = {'pool_height': ph, 'pool_width': pw, 'stride': s}``.
- Forward functions return ``(out, cache)``; backward functions take
  ``(dout, cache)`` and return ``(dx, dw, db)`` for convolutions and ``dx``
  for pooling. Caches are opaque: pass them back unchanged.

Dtypes behave as in the course's NumPy code: operands of different dtypes
promote as ``np.result_type`` (the model's float32 parameters with float64
data give float64; an int64 bias is fine), and each result has the dtype the
course's expression gives it: ``out`` of x, w and b together, ``dx`` of w
and dout, ``dw`` of dout and x, ``db`` of dout, pooling results of x.
Integer results become float64. (The core :mod:`fastcnn.functional` API
stays strict; only the :mod:`fastcnn.compat` modules promote.)

The ``_fast``, ``_im2col``, ``_strides`` and ``_reshape`` variants are one
implementation on the active kernel set (the compiled one unless
:func:`fastcnn.use_backend` says otherwise); the ``_naive`` ones run the same
code on fastcnn's NumPy reference kernels (:mod:`fastcnn.reference`), its
honest slow twin, so timing naive against fast measures something. Unlike
the course's reshape max-pool backward, which splits the gradient evenly
among tied maxima, ties go to the first maximum only (as PyTorch), and any
pool size, stride or input size works (the course's ``max_pool_forward_fast``
falls back for non-square or non-tiling pools to an im2col path that calls
an undefined ``im2col`` and raises NameError).
"""

from __future__ import annotations

import functools

import numpy as np

from .. import _validation as v
from .. import functional as F
from .._backend import use_backend
from .._docstrings import fill_doc
from ..layers import ReLU
from . import _columns
from ._columns import col2im_indices, get_im2col_indices, im2col_indices

# What `from fastcnn.compat.cs231n import *` brings: the names of the
# course's fast_layers.py (which star-imports im2col.py and imports the
# im2col_cython functions), nothing from layers.py or layer_utils.py.
__all__ = [
    "conv_forward_im2col",
    "conv_backward_im2col",
    "conv_forward_strides",
    "conv_backward_strides",
    "conv_forward_fast",
    "conv_backward_fast",
    "max_pool_forward_im2col",
    "max_pool_backward_im2col",
    "max_pool_forward_reshape",
    "max_pool_backward_reshape",
    "max_pool_forward_fast",
    "max_pool_backward_fast",
    "im2col_cython",
    "col2im_cython",
    "col2im_6d_cython",
    "get_im2col_indices",
    "im2col_indices",
    "col2im_indices",
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


def _backward_params(dout_shape: str, forward: str) -> str:
    """The docstring section (see fastcnn._docstrings) of the parameters of the
    backward function of `forward`, whose output has shape `dout_shape`."""
    return f"""
Parameters
----------
dout : array_like, shape {dout_shape}
cache : tuple
    From :func:`{forward}`.
"""


def _conv_geometry(conv_param) -> dict:
    return dict(
        stride=_get(conv_param, "stride", "conv_param"),
        padding=_get(conv_param, "pad", "conv_param"),
    )


def conv_forward_fast(x, w, b, conv_param):
    """Convolution (cross-correlation) forward pass.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    w : array_like, shape (F, C, HH, WW)
    b : array_like, shape (F,)
        Float or integer dtypes, mixed as NumPy allows.
    conv_param : dict
        ``'stride'`` and ``'pad'`` (zero padding on every side).

    Returns
    -------
    out : ndarray, shape (N, F, H', W'), dtype of x, w and b promoted
        ``H' = 1 + (H + 2 * pad - HH) // stride`` (likewise ``W'``).
    cache : tuple
        For :func:`conv_backward_fast`.
    """
    out = _columns.conv2d(x, w, b, **_conv_geometry(conv_param))
    return out, (x, w, conv_param)


@fill_doc(params=_backward_params("(N, F, H', W')", "conv_forward_fast"))
def conv_backward_fast(dout, cache):
    """Convolution backward pass.

    {params}

    Returns
    -------
    dx : ndarray, shape (N, C, H, W), dtype of w and dout promoted
    dw : ndarray, shape (F, C, HH, WW), dtype of dout and x promoted
    db : ndarray, shape (F,), dtype of dout
    """
    x, w, conv_param = cache
    return _columns.conv2d_backward(dout, x, w, **_conv_geometry(conv_param))


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
    x : array_like, shape (N, C, H, W)
    pool_param : dict
        ``'pool_height'``, ``'pool_width'`` and ``'stride'``.

    Returns
    -------
    out : ndarray, shape (N, C, H', W'), dtype of x (float64 for integers)
        ``H' = 1 + (H - pool_height) // stride`` (likewise ``W'``).
    cache : tuple
        For :func:`max_pool_backward_fast`.
    """
    (x,) = _columns.promote(x=x)
    out, indices = F.max_pool2d(x, **_pool_geometry(pool_param), return_indices=True)
    return out, (indices, x.shape, x.dtype)


@fill_doc(params=_backward_params("(N, C, H', W')", "max_pool_forward_fast"))
def max_pool_backward_fast(dout, cache):
    """Max-pooling backward pass: each output's gradient goes to its (first) maximum.

    {params}

    Returns
    -------
    dx : ndarray, shape (N, C, H, W), dtype of the forward's out
    """
    indices, x_shape, dtype = cache
    return F.max_pool2d_backward(np.asarray(dout, dtype=dtype), indices, x_shape)


def im2col_cython(x, field_height, field_width, padding, stride):
    """Every window of `x` as a column: ``im2col_cython.pyx``'s function.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W), float32 or float64
        Any strides. Other dtypes are a TypeError, as in the course.
    field_height, field_width : int
    padding : int
        Zero padding on all four sides.
    stride : int
        Windows that do not fit are dropped (the output size is floored).

    Returns
    -------
    cols : ndarray, shape (C*fh*fw, HH*WW*N), dtype of `x`, C-contiguous
        ``HH = (H + 2*padding - fh) // stride + 1`` (likewise ``WW``); column
        ``(y*WW + x)*N + n`` is window (y, x) of image n, row
        ``(c*fh + a)*fw + b`` its cell (a, b) of channel c.

    Notes
    -----
    The course's kernel writes row ``c*fw*fh + a*fh + b``: for
    ``fh != fw`` rows collide and some stay zero. This computes the intended
    layout, the one of :func:`im2col_indices`; square fields are unaffected.
    """
    x = v.as_float_array(x, "x")
    return _columns.unfold(x, (field_height, field_width), stride, _columns.symmetric(padding))


def col2im_cython(cols, N, C, H, W, field_height, field_width, padding, stride):
    """Sum columns back into images: the adjoint of :func:`im2col_cython`.

    Parameters
    ----------
    cols : array_like, float32 or float64, shape (C*fh*fw, HH*WW*N)
        In the layout of :func:`im2col_cython`.
    N, C, H, W : int
        Shape of the images.
    field_height, field_width, padding, stride : int
        As :func:`im2col_cython`.

    Returns
    -------
    x : ndarray, shape (N, C, H, W), dtype of `cols`
        Overlapping windows add up. For ``fh != fw`` this is the adjoint of
        the intended layout (see :func:`im2col_cython`), not the course's.
    """
    cols = v.as_float_array(cols, "cols")
    return _columns.fold(
        cols, (N, C, H, W), (field_height, field_width), stride, _columns.symmetric(padding)
    )


def col2im_6d_cython(cols, N, C, H, W, HH, WW, pad, stride):
    """Sum the 6-D columns of the course's ``conv_forward_strides`` back into images.

    Parameters
    ----------
    cols : array_like, float32 or float64, shape (C, HH, WW, N, out_h, out_w)
        ``cols[c, a, b, n, y, x]`` is cell (a, b) of channel c of window
        (y, x) of image n, with ``out_h = (H + 2*pad - HH) // stride + 1``
        (likewise ``out_w``).
    N, C, H, W : int
        Shape of the images.
    HH, WW : int
        Field height and width.
    pad, stride : int

    Returns
    -------
    x : ndarray, shape (N, C, H, W), dtype of `cols`
        ``x_padded[n, c, stride*y + a, stride*x + b] += cols[c, a, b, n, y, x]``,
        cropped by `pad`.
    """
    cols = v.as_float_array(cols, "cols")
    if cols.ndim != 6 or cols.shape[:4] != (C, HH, WW, N):
        raise ValueError(
            f"cols must have shape (C, HH, WW, N, out_h, out_w) = {(C, HH, WW, N)} + "
            f"(out_h, out_w), got {cols.shape}"
        )
    out_h, out_w = cols.shape[4:]
    batch_major = cols.transpose(3, 0, 1, 2, 4, 5).reshape(N, C * HH * WW, out_h * out_w)
    return F.col2im(batch_major, (H, W), (HH, WW), stride=stride, padding=pad)


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


def _on_reference_kernels(fast, name: str):
    """`fast` under the name `name`, run with ``fastcnn.use_backend("numpy")``."""

    @functools.wraps(fast)
    def twin(*args, **kwargs):
        with use_backend("numpy"):
            return fast(*args, **kwargs)

    twin.__name__ = twin.__qualname__ = name
    twin.__doc__ = (
        f"{fast.__doc__.splitlines()[0]}\n\n"
        f"    :func:`{fast.__name__}` on fastcnn's NumPy reference kernels: same\n"
        f"    arguments and numbers, the slow twin to time it against.\n"
    )
    return twin


conv_forward_naive = _on_reference_kernels(conv_forward_fast, "conv_forward_naive")
conv_backward_naive = _on_reference_kernels(conv_backward_fast, "conv_backward_naive")
max_pool_forward_naive = _on_reference_kernels(max_pool_forward_fast, "max_pool_forward_naive")
max_pool_backward_naive = _on_reference_kernels(max_pool_backward_fast, "max_pool_backward_naive")

# The course's other fast implementations of the same functions.
conv_forward_im2col = conv_forward_strides = conv_forward_fast
conv_backward_im2col = conv_backward_strides = conv_backward_fast
max_pool_forward_im2col = max_pool_forward_reshape = max_pool_forward_fast
max_pool_backward_im2col = max_pool_backward_reshape = max_pool_backward_fast
