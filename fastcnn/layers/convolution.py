"""Convolution layers."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .._docstrings import fill_doc
from .._validation import (
    Window,
    check_nchw,
    check_same_dtype,
    conv_padding,
    conv_window,
    input_shape_4d,
    pair,
    positive_int,
)
from .activation import _rectifier
from .base import _WEIGHTED_ARGS, _float_dtype, _Weighted

__all__ = ["Conv2D", "ConvTranspose2D"]


def _channel_args(c: str) -> str:
    """The docstring section (see fastcnn._docstrings) of a convolution layer's
    first arguments, its input channels named `c`."""
    return f"""
in_channels, out_channels : int
    {c} and F; both divisible by `groups`.
kernel_size, stride, dilation : int or (int, int)
"""


class _Convolution(_Weighted):
    """What the convolution layers share: channels that `groups` divides, the
    kernel size, stride and dtype, the input check and the parameters' repr."""

    _positional = ("in_channels", "out_channels")
    # Each layer adds its own keywords after these (see _Weighted).
    _keywords = {"kernel_size": None, "stride": (1, 1), "padding": (0, 0)}

    def __init__(self, in_channels, out_channels, kernel_size, stride, groups, dtype) -> None:
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.groups = positive_int(groups, "groups")
        for name in ("in_channels", "out_channels"):
            channels = getattr(self, name)
            if channels % self.groups:
                raise ValueError(f"{name} must be divisible by groups={self.groups}, got {channels}")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.dtype = _float_dtype(dtype)
        self.stride = pair(stride, "stride")

    def _check_input(self, x: np.ndarray) -> None:
        check_nchw(x, "x")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have in_channels={self.in_channels} channels, got shape {x.shape}"
            )

    def _input_shape(self, input_shape) -> tuple[int, int, int, int]:
        shape = input_shape_4d(input_shape)
        if shape[1] != self.in_channels:
            raise ValueError(
                f"input_shape[1] must be in_channels={self.in_channels}, got {shape[1]}"
            )
        return shape



@fill_doc(channel_args=_channel_args("C"), weighted_args=_WEIGHTED_ARGS)
class Conv2D(_Convolution):
    """2-D cross-correlation, as ``torch.nn.Conv2d``.

    Parameters
    ----------
    {channel_args}
    padding : int, (int, int), ``"valid"`` or ``"same"``
        ``"same"`` needs stride 1.
    groups : int, default 1
        ``groups == in_channels`` gives a depthwise convolution.
    {weighted_args}

    Attributes
    ----------
    params : dict
        ``weight`` of shape ``(F, C // groups, kh, kw)`` and, with `bias`,
        ``bias`` of shape ``(F,)``. Both are initialised as PyTorch does:
        uniform in ``+-1/sqrt(fan_in)``, ``fan_in = C // groups * kh * kw``.

    Notes
    -----
    Input ``(N, C, H, W)``, output ``(N, F, oh, ow)``.
    """

    _keywords = {**_Convolution._keywords, "dilation": (1, 1), "groups": 1}
    # While forward_activation runs: the activation it applies, (name, negative_slope).
    _activation: tuple = ()
    # While a Sequential runs it after a ReLU or a LeakyReLU of slope >= 0 (whose
    # output is x): that activation, whose gradient the backward applies to dx.
    _input_activation: tuple = ()

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        dtype=np.float32,
        rng=None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, groups, dtype)
        self.dilation = pair(dilation, "dilation")
        conv_padding(padding, self.kernel_size, self.stride, self.dilation)  # validates
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding", minimum=0)
        self._init_params((self.out_channels, self.in_channels // self.groups, *self.kernel_size),
                          bias, self.out_channels, rng)

    def _check_window(self, x: np.ndarray) -> Window:
        """Check that `x` fits the layer and return the window of its convolution."""
        self._check_input(x)
        check_same_dtype(x=x, weight=self.params["weight"])
        return self._kept_window(
            conv_window, x.shape, self.kernel_size, self.stride, self.padding, self.dilation
        )

    def _forward(self, x, training):
        win = self._check_window(x)
        out = F._conv2d(x, self.params["weight"], self.params.get("bias"), win, self.groups,
                        *self._activation)
        return out, (x, win, self._input_activation)

    def forward_activation(self, x, activation, training: bool | None = None) -> np.ndarray:
        """``activation.forward(self.forward(x, training))``, the activation
        applied to the outputs as the convolution writes them, while they
        are in cache.

        `activation` is a :class:`~fastcnn.layers.ReLU` or a
        :class:`~fastcnn.layers.LeakyReLU` whose slope is not negative: its
        output is positive exactly where its input is, so its backward
        computes the gradient from the output kept here (the same values as
        from its input). The two layers' backward calls, `activation`'s then
        this layer's, then give the gradients of the unfused pair, bit for
        bit. :class:`~fastcnn.layers.Sequential` runs a convolution followed
        by such an activation this way (but for a ReLU followed by a
        :class:`~fastcnn.layers.MaxPool2D`, which pools first).

        Raises
        ------
        TypeError
            If `activation` is not such a layer (exact types: a subclass may
            compute something else, and is not fused).
        """
        kind = _rectifier(activation)
        if kind is None:
            raise TypeError("activation must be a fastcnn.layers.ReLU or a LeakyReLU of "
                            f"negative_slope >= 0 (not a subclass), got {activation!r}")
        self._activation = kind
        try:
            out = self.forward(x, training)
        finally:
            del self._activation
        activation._fused(out.shape, out.dtype, out)
        return out

    def _backward(self, dout, cache, input_grad=True):
        x, win, before = cache
        dx, dweight, dbias = F._conv2d_backward(dout, x, self.params["weight"], win, self.groups,
                                                input_grad, True, *before)
        self._write_grads(weight=dweight, bias=dbias)
        return dx

    def output_shape(self, input_shape):
        n, c, h, w = self._input_shape(input_shape)
        win = conv_window((n, c, h, w), self.kernel_size, self.stride, self.padding, self.dilation)
        return (n, self.out_channels, win.oh, win.ow)


@fill_doc(channel_args=_channel_args("C_in"), weighted_args=_WEIGHTED_ARGS)
class ConvTranspose2D(_Convolution):
    """2-D transposed convolution, as ``torch.nn.ConvTranspose2d``.

    Parameters
    ----------
    {channel_args}
    padding : int or (int, int)
    output_padding : int or (int, int)
        Smaller than stride or dilation; added at the bottom/right.
    groups : int, default 1
    {weighted_args}

    Attributes
    ----------
    params : dict
        ``weight`` of shape ``(C_in, F // groups, kh, kw)`` and, with `bias`,
        ``bias`` of shape ``(F,)``, both uniform in ``+-1/sqrt(fan_in)`` with
        ``fan_in = F // groups * kh * kw`` (PyTorch's init reads the fan of
        the weight's second axis).

    Notes
    -----
    Input ``(N, C_in, H, W)``, output ``(N, F, oh, ow)`` with
    ``oh = (H - 1) * sh - 2 * ph + dh * (kh - 1) + output_padding_h + 1``.
    """

    _keywords = {**_Convolution._keywords, "output_padding": (0, 0), "groups": 1,
                 "dilation": (1, 1)}

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups=1,
        bias=True,
        dilation=1,
        dtype=np.float32,
        rng=None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, groups, dtype)
        self.padding = pair(padding, "padding", minimum=0)
        self.output_padding = pair(output_padding, "output_padding", minimum=0)
        self.dilation = pair(dilation, "dilation")
        if any(op >= max(s, d) for op, s, d in zip(self.output_padding, self.stride,
                                                    self.dilation)):
            raise ValueError(
                f"output_padding must be smaller than stride or dilation, got output_padding="
                f"{self.output_padding} with stride={self.stride} and dilation={self.dilation}"
            )
        self._init_params((self.in_channels, self.out_channels // self.groups, *self.kernel_size),
                          bias, self.out_channels, rng)

    def _geometry(self) -> dict:
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding, groups=self.groups,
                    dilation=self.dilation)

    def _forward(self, x, training):
        self._check_input(x)
        x, weight, groups, geo = F._conv_transpose_operands(
            x, self.params["weight"], **self._geometry())
        return F._conv_transpose2d(x, weight, self.params.get("bias"), geo, groups), (x, geo)

    def _backward(self, dout, cache, input_grad=True):
        x, geo = cache
        dx, dweight, dbias = F._conv_transpose2d_backward(
            dout, x, self.params["weight"], geo, self.groups, input_grad)
        self._write_grads(weight=dweight, bias=dbias)
        return dx

    def output_shape(self, input_shape):
        n, _, h, w = self._input_shape(input_shape)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        (oph, opw), (dh, dw) = self.output_padding, self.dilation
        return (n, self.out_channels, (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1,
                (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1)
