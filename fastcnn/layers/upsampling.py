"""Upsampling layer."""

from __future__ import annotations

from .. import functional as F
from .._validation import input_shape_4d
from .base import Layer, _describe_args

__all__ = ["Upsample"]


class Upsample(Layer):
    """Resample the spatial axes, as ``torch.nn.Upsample`` (:func:`fastcnn.functional.interpolate`).

    Parameters
    ----------
    size : int or (int, int), optional
        Output ``(oh, ow)``; exactly one of `size` and `scale_factor`.
    scale_factor : float or (float, float), optional
    mode : {"nearest", "bilinear"}, default "nearest"
    align_corners : bool, optional
        Bilinear only.
    """

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None) -> None:
        super().__init__()
        self._options = dict(size=size, scale_factor=scale_factor, mode=mode,
                             align_corners=align_corners)
        # (whether the output is empty or too large depends on the input: checked by forward)
        F._interpolate_args(**self._options, recompute_scale_factor=None)
        self.size, self.scale_factor = size, scale_factor
        self.mode, self.align_corners = mode, align_corners

    def _forward(self, x, training):
        return F.interpolate(x, **self._options), x.shape

    def _backward(self, dout, input_shape):
        return F.interpolate_backward(dout, input_shape, **self._options)

    def output_shape(self, input_shape):
        shape = input_shape_4d(input_shape)
        oh, ow, *_ = F._interpolate_plan(shape, **self._options, recompute_scale_factor=None)
        return shape[:2] + (oh, ow)

    def _extra_repr(self):
        return _describe_args(
            size=(self.size, None),
            scale_factor=(self.scale_factor, None),
            mode=(self.mode, "nearest"),
            align_corners=(self.align_corners, None),
        )
