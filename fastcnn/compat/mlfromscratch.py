"""ML-From-Scratch's convolution and pooling layers and im2col helpers, on fastcnn.

The classes ``Conv2D``, ``MaxPooling2D`` and ``AveragePooling2D`` (and their
bases ``Layer`` and ``PoolingLayer``) follow the layer protocol of
``mlfromscratch/deep_learning/layers.py``, so they work inside the project's
``NeuralNetwork`` next to its own Dense, Activation, Dropout, Flatten and
BatchNormalization layers (which have no convolution or pooling to speed
up). In a script such as ``examples/convolutional_neural_network.py``, keep
the project's layer imports and add one line after them::

    from fastcnn.compat.mlfromscratch import Conv2D, MaxPooling2D, AveragePooling2D

Protocol: ``set_input_shape(shape)``, ``initialize(optimizer)``,
``parameters()``, ``forward_pass(X, training=True)``,
``backward_pass(accum_grad)`` (updates the parameters through per-parameter
copies of the optimizer, ``W_opt.update(W, grad)``, and returns the input
gradient computed with the weights of the forward pass), ``output_shape()``
and ``layer_name()``; attributes ``input_shape`` (per sample), ``trainable``.
``Conv2D.initialize`` draws its weights with
``np.random.uniform(-1/sqrt(fh*fw), 1/sqrt(fh*fw), (F, C, fh, fw))`` from
NumPy's global generator exactly as the original (biases ``w0`` are zeros
of shape ``(F, 1)``), so a seeded network trains identically.

Results have the originals' dtypes: forward outputs follow NumPy promotion
of the input and the (float64) weights, input gradients are float64 (the
original's ``column_to_image`` always returns float64), and
``image_to_column`` keeps float32.

Where this differs from the original:

- Pooling layers train. As published, their default ``padding=0`` makes
  ``determine_padding`` return None and the forward pass fail with
  TypeError (and with ``padding='valid'`` the backward pass still passes 0
  and fails): here 0 means no padding, as "valid".
- Pooling output sizes are floored for windows that do not tile the input
  (the original's ``output_shape`` fails with AssertionError), and
  ``output_shape`` counts "same" padding, which the original ignores
  although its forward pass pads.
- ``determine_padding`` raises ValueError for anything but "same", "valid"
  and 0, where the original returns None and fails later.
- Integer images give float64 columns and outputs, where the original keeps
  the integer dtype in ``image_to_column``; a max-pool window holding NaN
  yields NaN but keeps the last NaN's position, the original the first.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from .. import _validation as v
from .. import functional as F
from . import _columns

__all__ = [
    "determine_padding",
    "get_im2col_indices",
    "image_to_column",
    "column_to_image",
    "Layer",
    "Conv2D",
    "PoolingLayer",
    "MaxPooling2D",
    "AveragePooling2D",
]


def determine_padding(filter_shape, output_shape="same"):
    """Zero padding ``((top, bottom), (left, right))`` for a ``(fh, fw)`` field.

    Parameters
    ----------
    filter_shape : (int, int)
    output_shape : "same", "valid" or 0
        "same" pads ``(fh - 1) // 2`` above and the rest below (likewise
        left and right), whatever the stride, so only stride 1 keeps the
        size; "valid" and 0 do not pad.
    """
    if isinstance(output_shape, str) and output_shape == "same":
        fh, fw = filter_shape
        return ((fh - 1) // 2, fh // 2), ((fw - 1) // 2, fw // 2)
    if (isinstance(output_shape, str) and output_shape == "valid") or (
        not isinstance(output_shape, (str, bool)) and output_shape == 0
    ):
        return (0, 0), (0, 0)
    raise ValueError(f"output_shape must be 'same', 'valid' or 0, got {output_shape!r}")


def _output_size(size_hw, filter_shape, padding, stride) -> tuple[int, int]:
    """``(oh, ow)`` for a ``(H, W)`` input padded by ``((top, bottom), (left, right))``."""
    (top, bottom), (left, right) = padding
    padded = (1, 1, size_hw[0] + top + bottom, size_hw[1] + left + right)
    win = v.conv_window(padded, filter_shape, stride, 0, 1)
    return win.oh, win.ow


def get_im2col_indices(images_shape, filter_shape, padding, stride=1):
    """Fancy indices of every window: ``padded[:, k, i, j]`` is the im2col.

    Parameters
    ----------
    images_shape : tuple of 4 ints
        ``(N, C, H, W)`` of the unpadded images.
    filter_shape : (int, int)
    padding : ((int, int), (int, int))
        ``((top, bottom), (left, right))``, as :func:`determine_padding` gives.
    stride : int
        Windows that do not fit are dropped.

    Returns
    -------
    k : ndarray of int64, shape (C*fh*fw, 1)
    i, j : ndarray of int64, shape (C*fh*fw, oh*ow)
        Channel, padded row and padded column of each row at each output
        position.
    """
    _, c, h, w = v.input_shape_4d(images_shape, "images_shape")
    stride = v.positive_int(stride, "stride")
    out = _output_size((h, w), filter_shape, padding, stride)
    return _columns.window_indices(c, filter_shape, stride, out)


def image_to_column(images, filter_shape, stride, output_shape="same"):
    """Every window of `images` as a column.

    Parameters
    ----------
    images : array_like, shape (N, C, H, W)
    filter_shape : (int, int)
    stride : int
    output_shape : "same", "valid" or 0
        The padding (see :func:`determine_padding`).

    Returns
    -------
    cols : ndarray, shape (C*fh*fw, oh*ow*N), dtype of `images`
        Column ``(y*ow + x)*N + n`` is the window at output position (y, x)
        of image n; row ``(c*fh + a)*fw + b`` its cell (a, b) of channel c.
    """
    (images,) = _columns.promote(images=images)
    padding = determine_padding(filter_shape, output_shape)
    return _columns.unfold(images, filter_shape, stride, padding)


def column_to_image(cols, images_shape, filter_shape, stride, output_shape="same"):
    """Sum columns back into images: the adjoint of :func:`image_to_column`.

    Parameters
    ----------
    cols : array_like of C*fh*fw * oh*ow*N values
        In the layout of :func:`image_to_column`.
    images_shape : tuple of 4 ints
        ``(N, C, H, W)`` of the unpadded images.
    filter_shape, stride, output_shape
        As :func:`image_to_column`.

    Returns
    -------
    images : ndarray of float64, shape `images_shape`
        Overlapping windows add up (in float64, whatever the dtype of `cols`).
    """
    padding = determine_padding(filter_shape, output_shape)
    cols = np.asarray(cols, dtype=np.float64)
    return _columns.fold(cols, images_shape, filter_shape, stride, padding)


class Layer:
    """The layer protocol of ML-From-Scratch's ``NeuralNetwork``."""

    def set_input_shape(self, shape):
        """Set the per-sample shape the layer receives."""
        self.input_shape = shape

    def layer_name(self):
        """Name shown by ``NeuralNetwork.summary``."""
        return self.__class__.__name__

    def parameters(self):
        """Number of trainable parameters."""
        return 0

    def forward_pass(self, X, training=True):
        raise NotImplementedError

    def backward_pass(self, accum_grad):
        raise NotImplementedError

    def output_shape(self):
        raise NotImplementedError


class Conv2D(Layer):
    """2-D convolution (cross-correlation) of ``(N, C, H, W)`` batches.

    Parameters
    ----------
    n_filters : int
    filter_shape : (int, int)
    input_shape : (C, H, W), optional
        Needed for the first layer of a network only.
    padding : "same" or "valid"
        See :func:`determine_padding` (even fields pad one more at the
        bottom/right).
    stride : int

    Attributes
    ----------
    W : ndarray, shape (n_filters, C, fh, fw)
    w0 : ndarray, shape (n_filters, 1)
    """

    def __init__(self, n_filters, filter_shape, input_shape=None, padding="same", stride=1):
        self.n_filters = n_filters
        self.filter_shape = filter_shape
        self.padding = padding
        self.stride = stride
        self.input_shape = input_shape
        self.trainable = True

    def initialize(self, optimizer):
        """Draw ``W`` from NumPy's global generator, as the original; zero ``w0``."""
        fh, fw = self.filter_shape
        limit = 1 / math.sqrt(np.prod(self.filter_shape))
        shape = (self.n_filters, self.input_shape[0], fh, fw)
        self.W = np.random.uniform(-limit, limit, size=shape)
        self.w0 = np.zeros((self.n_filters, 1))
        self.W_opt = copy.copy(optimizer)
        self.w0_opt = copy.copy(optimizer)

    def parameters(self):
        return self.W.size + self.w0.size

    def forward_pass(self, X, training=True):
        """``(N, n_filters, oh, ow)``, dtype of X, W and w0 promoted."""
        self.layer_input = X
        padding = determine_padding(self.filter_shape, self.padding)
        self._x, self._padding = _columns.split_padding(X, padding)
        return _columns.conv2d(self._x, self.W, self.w0.reshape(-1), self.stride, self._padding)

    def backward_pass(self, accum_grad):
        """Update W and w0 (if trainable); return the float64 input gradient."""
        dx, grad_w, grad_w0 = _columns.conv2d_backward(
            accum_grad, self._x, self.W, self.stride, self._padding
        )
        if self.trainable:
            self.W = self.W_opt.update(self.W, grad_w)
            self.w0 = self.w0_opt.update(self.w0, grad_w0.reshape(-1, 1))
        h, w = self.layer_input.shape[2:]
        return np.asarray(dx[:, :, :h, :w], dtype=np.float64)

    def output_shape(self):
        _, h, w = self.input_shape
        padding = determine_padding(self.filter_shape, self.padding)
        return (self.n_filters,) + _output_size((h, w), self.filter_shape, padding, self.stride)


class PoolingLayer(Layer):
    """Base of the pooling layers: windows of `pool_shape` every `stride` cells.

    Parameters
    ----------
    pool_shape : (int, int)
    stride : int
        1 by default, as in the original.
    padding : 0, "valid" or "same"
        Zero padding (see :func:`determine_padding`); zeros take part in the
        max and the mean, as in the original's forward pass.
    """

    def __init__(self, pool_shape=(2, 2), stride=1, padding=0):
        self.pool_shape = pool_shape
        self.stride = stride
        self.padding = padding
        self.trainable = True

    def forward_pass(self, X, training=True):
        """``(N, C, oh, ow)``, dtype of X (float64 for integers)."""
        self.layer_input = X
        (x,) = _columns.promote(X=X)
        x = _columns.zero_pad(x, determine_padding(self.pool_shape, self.padding))
        self._padded_shape = x.shape
        return self._pool_forward(x)

    def backward_pass(self, accum_grad):
        """The float64 input gradient."""
        dx = self._pool_backward(np.asarray(accum_grad, dtype=np.float64))
        (top, _), (left, _) = determine_padding(self.pool_shape, self.padding)
        h, w = self.layer_input.shape[2:]
        return dx[:, :, top : top + h, left : left + w]

    def output_shape(self):
        c, h, w = self.input_shape
        padding = determine_padding(self.pool_shape, self.padding)
        return (c,) + _output_size((h, w), self.pool_shape, padding, self.stride)

    def _pool_forward(self, x):
        raise NotImplementedError

    def _pool_backward(self, dout):
        raise NotImplementedError


class MaxPooling2D(PoolingLayer):
    """Max pooling; the gradient goes to each window's first maximum."""

    def _pool_forward(self, x):
        out, self.cache = F.max_pool2d(x, self.pool_shape, self.stride, return_indices=True)
        return out

    def _pool_backward(self, dout):
        return F.max_pool2d_backward(dout, self.cache, self._padded_shape)


class AveragePooling2D(PoolingLayer):
    """Average pooling; the gradient is spread evenly over each window."""

    def _pool_forward(self, x):
        return F.avg_pool2d(x, self.pool_shape, self.stride)

    def _pool_backward(self, dout):
        return F.avg_pool2d_backward(dout, self._padded_shape, self.pool_shape, self.stride)
