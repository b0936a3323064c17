"""Pooling layers."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .._buffers import empty
from .._docstrings import fill_doc
from .._validation import check_nchw, flag, input_shape_4d, pair, pool_window, spatial_size
from .activation import FUSABLE_RELU_RAISES, ReLU, _forward_applying
from .base import Layer, _describe_args

__all__ = [
    "MaxPool2D",
    "AvgPool2D",
    "GlobalAvgPool2D",
    "AdaptiveAvgPool2D",
    "AdaptiveMaxPool2D",
    "MaxUnpool2D",
]

# Docstring section (see fastcnn._docstrings) of the layers that pool or unpool
# in fixed windows.
_WINDOW_ARGS = """
kernel_size : int or (int, int)
stride : int, (int, int) or None
    ``None`` means `kernel_size`.
padding : int or (int, int)
"""


class _Pool2D(Layer):
    """What max and average pooling share: the window and the output shape.

    Subclasses list their keyword arguments (with defaults) in ``_options``.
    """

    _options: dict = {}
    dilation = (1, 1)  # average pooling has none

    def __init__(self, kernel_size, stride, padding, ceil_mode) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = None if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        self.ceil_mode = flag(ceil_mode, "ceil_mode")

    def output_shape(self, input_shape):
        shape = input_shape_4d(input_shape)
        win = pool_window(
            shape, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode
        )
        return shape[:2] + (win.oh, win.ow)

    def _extra_repr(self):
        return _describe_args(
            kernel_size=(self.kernel_size, None),
            stride=(self.stride, None),
            padding=(self.padding, (0, 0)),
            ceil_mode=(self.ceil_mode, False),
            **{name: (getattr(self, name), default) for name, default in self._options.items()},
        )


@fill_doc(window_args=_WINDOW_ARGS)
class MaxPool2D(_Pool2D):
    """2-D max pooling, as ``torch.nn.MaxPool2d``.

    Parameters
    ----------
    {window_args}
        At most half the kernel; padded cells act as -inf.
    dilation : int or (int, int)
    ceil_mode : bool

    Notes
    -----
    Input ``(N, C, H, W)``, output ``(N, C, oh, ow)``. Ties go to the first
    maximum in the window and NaN propagates; the backward sends each output's
    gradient to exactly one input cell (overlapping windows add up).
    """

    _options = {"dilation": (1, 1)}
    # True while forward_after_relu runs: the forward then applies the ReLU to its output.
    _relu = False

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.dilation = pair(dilation, "dilation")

    @fill_doc(raises=FUSABLE_RELU_RAISES)
    def forward_after_relu(self, x, relu: ReLU, training: bool | None = None) -> np.ndarray:
        """``self.forward(relu.forward(x, training), training)``, pooling
        first: the ReLU then runs on the pooled output, a fraction of `x`.

        The ReLU keeps the order of its inputs and makes no new maximum (its
        zeros stand where the inputs were not positive), so a window's
        maximum is positive exactly where that of its ReLU is, at the same
        cell, and zero or NaN alike otherwise. The output, and the gradient
        of the two layers' backward calls (this layer's, then `relu`'s,
        which passes it on), are the unfused pair's, bit for bit.
        :class:`~fastcnn.layers.Sequential` runs a ReLU followed by a max
        pooling this way.

        {raises}
        """
        x = np.asarray(x)
        return _forward_applying(self, x, relu, training, x.shape)

    def _forward(self, x, training):
        check_nchw(x, "x")
        win = self._kept_window(
            pool_window, x.shape, self.kernel_size, self.stride, self.padding, self.dilation,
            self.ceil_mode,
        )
        out, indices = F._max_pool2d(x, win)
        if not self._relu:
            return out, (indices, x.shape, None)
        out = F._relu(out)
        return out, (indices, x.shape, out)

    def _backward(self, dout, cache):
        # The indices are the forward's own: int64, in range, nothing to check.
        indices, input_shape, relu_out = cache
        if relu_out is not None:  # the fused ReLU's gradient
            dout = F._relu_backward(dout, relu_out)
        return F._max_pool2d_backward(dout, indices, input_shape)


@fill_doc(window_args=_WINDOW_ARGS)
class AvgPool2D(_Pool2D):
    """2-D average pooling, as ``torch.nn.AvgPool2d``.

    Parameters
    ----------
    {window_args}
        At most half the kernel; padded cells are zeros.
    ceil_mode : bool
    count_include_pad : bool
        Whether the padding counts in the divisor.

    Notes
    -----
    Input ``(N, C, H, W)``, output ``(N, C, oh, ow)``.
    """

    _options = {"count_include_pad": True}

    def __init__(
        self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = flag(count_include_pad, "count_include_pad")

    def _forward(self, x, training):
        check_nchw(x, "x")
        args, win = self._kept_window(
            F._avg_args, x.shape, self.kernel_size, self.stride, self.padding, self.ceil_mode,
            self.count_include_pad, None,
        )
        return F._avg_pool2d(x, args, win), (x.shape, args, win)

    def _backward(self, dout, cache):
        return F._avg_pool2d_backward(dout, *cache)


class GlobalAvgPool2D(Layer):
    """Mean over the spatial axes: ``(N, C, H, W)`` -> ``(N, C)``.

    The channel axis is kept and the spatial axes are dropped (as Keras'
    ``GlobalAveragePooling2D``), so the result feeds a :class:`Dense` layer
    directly. Equivalent to ``torch.nn.AdaptiveAvgPool2d(1)`` followed by a
    flatten.
    """

    def _forward(self, x, training):
        check_nchw(x, "x")
        return x.mean(axis=(2, 3)), x.shape

    def _backward(self, dout, input_shape):
        h, w = input_shape[2:]
        dx = empty(input_shape, dout.dtype)
        dx[...] = (dout / (h * w))[:, :, None, None]
        return dx

    def output_shape(self, input_shape):
        return input_shape_4d(input_shape)[:2]


class _AdaptivePool2D(Layer):
    """What the adaptive pools share: the output size and its arithmetic."""

    def __init__(self, output_size) -> None:
        super().__init__()
        spatial_size(output_size, "output_size", allow_none=True)  # validates
        self.output_size = output_size

    def output_shape(self, input_shape):
        n, c, h, w = input_shape_4d(input_shape)
        oh, ow = spatial_size(self.output_size, "output_size", allow_none=True)
        return (n, c, h if oh is None else oh, w if ow is None else ow)

    def _extra_repr(self):
        return f"output_size={self.output_size!r}"


class AdaptiveAvgPool2D(_AdaptivePool2D):
    """Average pooling to a fixed output size, as ``torch.nn.AdaptiveAvgPool2d``.

    Parameters
    ----------
    output_size : int, (int, int), or a pair with None
        ``(oh, ow)``; None keeps the input's size on that axis.

    Notes
    -----
    Input ``(N, C, H, W)``, output ``(N, C, oh, ow)``; ``AdaptiveAvgPool2D(1)``
    is a global average pool that keeps the spatial axes.
    """

    def _forward(self, x, training):
        return F.adaptive_avg_pool2d(x, self.output_size), x.shape

    def _backward(self, dout, input_shape):
        return F.adaptive_avg_pool2d_backward(dout, input_shape)


class AdaptiveMaxPool2D(_AdaptivePool2D):
    """Max pooling to a fixed output size, as ``torch.nn.AdaptiveMaxPool2d``.

    Parameters
    ----------
    output_size : int, (int, int), or a pair with None

    Attributes
    ----------
    indices : ndarray of int64 or None
        The argmax of every window of the last forward (for :class:`MaxUnpool2D`).
    """

    def __init__(self, output_size) -> None:
        super().__init__(output_size)
        self.indices = None

    def _forward(self, x, training):
        out, self.indices = F.adaptive_max_pool2d(x, self.output_size, return_indices=True)
        return out, (self.indices, x.shape)

    def _backward(self, dout, cache):
        indices, input_shape = cache
        return F._max_pool2d_backward(dout, indices, input_shape)

    def _forget_last_forward(self) -> None:
        super()._forget_last_forward()
        self.indices = None


@fill_doc(window_args=_WINDOW_ARGS)
class MaxUnpool2D(Layer):
    """Partial inverse of max pooling, as ``torch.nn.MaxUnpool2d``.

    Parameters
    ----------
    {window_args}

    Notes
    -----
    ``forward(x, indices, output_size=None)`` puts each value of `x` at its
    index (from ``MaxPool2D``/``max_pool2d(..., return_indices=True)``) in a
    zero plane; pass the pooled input's ``(H, W)`` as `output_size` when it
    was odd or pooled with ``ceil_mode``. ``backward(dout)`` returns the
    gradient with respect to `x`.
    """

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = None if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        self._unpool_args = None

    def forward(self, x, indices, output_size=None, training=None):
        """Unpool `x` to the positions `indices` (shape of `x`); see the class notes."""
        self._unpool_args = (indices, output_size)
        try:
            return super().forward(x, training)
        finally:
            self._unpool_args = None

    def __call__(self, x, indices, output_size=None, training=None):
        return self.forward(x, indices, output_size, training)

    def _forward(self, x, training):
        indices, output_size = self._unpool_args
        out = F.max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding, output_size)
        return out, np.array(indices, dtype=np.int64)

    def _backward(self, dout, indices):
        return F.max_unpool2d_backward(dout, indices)

    def output_shape(self, input_shape):
        shape = input_shape_4d(input_shape)
        return shape[:2] + F._unpool_shape(shape, self.kernel_size, self.stride, self.padding,
                                            None)

    def _extra_repr(self):
        return _describe_args(
            kernel_size=(self.kernel_size, None),
            stride=(self.stride, None),
            padding=(self.padding, (0, 0)),
        )
