"""Padding layer."""

from __future__ import annotations

from .. import functional as F
from .._validation import input_shape_4d, real
from .base import Layer, _describe_args

__all__ = ["Pad2D"]


class Pad2D(Layer):
    """Pad (or crop, with negative amounts) the spatial axes, as :func:`fastcnn.functional.pad`.

    One layer for PyTorch's ``ZeroPad2d``, ``ConstantPad2d``,
    ``ReflectionPad2d``, ``ReplicationPad2d`` and ``CircularPad2d``.

    Parameters
    ----------
    pad : tuple of 4 ints (left, right, top, bottom)
        ``mode="constant"`` also takes ``(left, right)``.
    mode : {"constant", "reflect", "replicate", "circular"}, default "constant"
    value : float, default 0.0
        The fill of ``mode="constant"``.
    """

    def __init__(self, pad, mode="constant", value=0.0) -> None:
        super().__init__()
        # The limits that depend on the input size are checked by the first forward.
        F._pad_args(pad, mode)
        self.pad, self.mode = tuple(pad), mode
        self.value = real(value, "value")

    def _forward(self, x, training):
        return F.pad(x, self.pad, self.mode, self.value), x.shape

    def _backward(self, dout, input_shape):
        return F.pad_backward(dout, input_shape, self.pad, self.mode)

    def output_shape(self, input_shape):
        shape = input_shape_4d(input_shape)
        rows, cols, _ = F._pad_plan(shape, self.pad, self.mode)
        return shape[:2] + (len(rows), len(cols))

    def _extra_repr(self):
        return _describe_args((self.pad,), mode=(self.mode, "constant"), value=(self.value, 0.0))
