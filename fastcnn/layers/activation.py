"""Activation layers: any shape, same shape out."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from .. import functional as F
from .._validation import integer, real
from .base import Layer

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "ELU", "SELU", "Softplus", "Softmax"]


class _Elementwise(Layer):
    """An activation computed by a functional pair ``_ops``, cell by cell.

    ``forward(x, *args)`` and ``backward(dout, saved, *args)``, where ``args``
    are the real-valued constructor arguments (see :meth:`_set_arguments`)
    and ``saved`` is the forward's input, or its output where the gradient
    is computed from that (``_saves_output``).
    """

    _ops: tuple = ()
    _saves_output = False
    _arguments: tuple = ()

    def _set_arguments(self, **arguments) -> None:
        """Check and keep the ops' real-valued `arguments`, in order, as attributes
        of their names (shown by ``repr``)."""
        for name, value in arguments.items():
            setattr(self, name, real(value, name))
        self._arguments = tuple(arguments)

    def _args(self) -> tuple:
        return tuple(getattr(self, name) for name in self._arguments)

    def _forward(self, x, training):
        out = self._ops[0](x, *self._args())
        return out, out if self._saves_output else x

    def _backward(self, dout, saved):
        if saved is _FUSED:
            return dout
        return self._ops[1](dout, saved, *self._args())

    def _fused(self, shape, dtype, out=None) -> None:
        """Stand for this layer's forward, which a neighbouring layer computed
        with its own (see :meth:`fastcnn.layers.BatchNorm2D.forward_relu`,
        :meth:`fastcnn.layers.Residual.forward_relu`,
        :meth:`fastcnn.layers.MaxPool2D.forward_after_relu` and
        :meth:`fastcnn.layers.Conv2D.forward_activation`): its output would
        have had `shape` and `dtype`. The backward computes the gradient from
        `out`, this layer's output, or, if `out` is None, passes `dout` on:
        the other layer applies it. (For the rectifiers only, whose output is
        positive exactly where their input was: see :func:`_rectifier`.)"""
        self._cache = _FUSED if out is None else out
        self._out_shape, self._out_dtype = tuple(shape), np.dtype(dtype)

    def _extra_repr(self):
        return ", ".join(f"{name}={getattr(self, name)}" for name in self._arguments)


# An activation's cache when the layer fused with it applies its gradient.
_FUSED = object()

#: The Raises section of the layers' ``forward_relu`` (see :func:`_check_fusable`).
FUSABLE_RELU_RAISES = """
Raises
------
TypeError
    If `relu` is not a :class:`~fastcnn.layers.ReLU` (a subclass may
    compute something else, and is not fused).
"""


class ReLU(_Elementwise):
    """``max(x, 0)``; the gradient is 1 where ``x > 0`` and 0 elsewhere (as PyTorch)."""

    _ops = (F._relu, F._relu_backward)


def _check_fusable(relu) -> None:
    """TypeError unless `relu` is a ReLU that a layer's ``forward_relu`` may
    compute (its exact type: a subclass may compute something else)."""
    if type(relu) is not ReLU:
        raise TypeError(
            f"relu must be a fastcnn.layers.ReLU (not a subclass), got {type(relu).__name__}")


def _rectifier(layer) -> tuple[str, float] | None:
    """``(name, negative_slope)`` of the activation of :func:`F._conv2d
    <fastcnn.functional._conv2d>` that `layer` computes, if it is a ReLU or a
    LeakyReLU of slope >= 0 (exact types: a subclass may compute something
    else), else None. Their outputs are positive exactly where their inputs
    are, so their gradients follow from their outputs."""
    if type(layer) is ReLU:
        return "relu", 0.0
    if type(layer) is LeakyReLU and layer.negative_slope >= 0:
        return "leaky_relu", layer.negative_slope
    return None


def _gradient_applicable(layer) -> bool:
    """Whether the :class:`~fastcnn.layers.Conv2D` after `layer` may apply its
    gradient (see :meth:`fastcnn.layers.Sequential.forward`): a rectifier (see
    :func:`_rectifier`) whose gradient no other layer applies already."""
    return layer is not None and _rectifier(layer) is not None and layer._cache is not _FUSED


def _forward_applying(layer, x, relu, training, relu_shape=None):
    """``layer.forward(x, training)`` with ``layer._relu`` set, which makes it
    compute `relu`'s forward and apply its gradient too; `relu` then stands
    for its part (its output shape `relu_shape`, by default the layer's)."""
    _check_fusable(relu)
    layer._relu = True
    try:
        out = layer.forward(x, training)
    finally:
        del layer._relu
    relu._fused(out.shape if relu_shape is None else relu_shape, out.dtype)
    return out


class LeakyReLU(_Elementwise):
    """``x`` where ``x > 0``, else ``negative_slope * x`` (as ``torch.nn.LeakyReLU``).

    Parameters
    ----------
    negative_slope : float, default 0.01
        The slope of the output for ``x <= 0``.
    """

    _ops = (F._leaky_relu, F._leaky_relu_backward)

    def __init__(self, negative_slope=0.01) -> None:
        super().__init__()
        self._set_arguments(negative_slope=negative_slope)


class Sigmoid(_Elementwise):
    """Logistic function ``1 / (1 + exp(-x))``, by ``scipy.special.expit`` (never overflows)."""

    _ops = (F._sigmoid, F._sigmoid_backward)
    _saves_output = True


class Tanh(_Elementwise):
    """Hyperbolic tangent."""

    _ops = (F._tanh, F._tanh_backward)
    _saves_output = True


class ELU(_Elementwise):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)`` (as ``torch.nn.ELU``).

    Parameters
    ----------
    alpha : float, default 1.0
        ``-alpha`` is the limit of the output as ``x`` goes to ``-inf``.
    """

    _ops = (F._elu, F._elu_backward)

    def __init__(self, alpha=1.0) -> None:
        super().__init__()
        self._set_arguments(alpha=alpha)


class SELU(_Elementwise):
    """Scaled ELU with PyTorch's constants ``scale * ELU(x, alpha)``."""

    ALPHA = 1.6732632423543772848170429916717
    SCALE = 1.0507009873554804934193349852946
    _ops = (F._elu, F._elu_backward)

    def _args(self) -> tuple:
        return self.ALPHA, self.SCALE


class Softplus(Layer):
    """``log(1 + exp(beta * x)) / beta``, linear above a threshold (as ``torch.nn.Softplus``).

    Parameters
    ----------
    beta : float, default 1.0
    threshold : float, default 20.0
        Where ``beta * x > threshold`` the output is ``x`` (and the gradient 1),
        exactly as PyTorch does.
    """

    def __init__(self, beta=1.0, threshold=20.0) -> None:
        super().__init__()
        self.beta = real(beta, "beta", low=0, low_open=True)
        self.threshold = real(threshold, "threshold")

    def _forward(self, x, training):
        bx = x * self.beta
        linear = bx > self.threshold
        # logaddexp(0, t) = log(1 + exp(t)) without overflow. It flags NaN input
        # as invalid; NaN in, NaN out is the intended result (as PyTorch).
        with np.errstate(invalid="ignore"):
            soft = np.logaddexp(0, bx)
        out = np.where(linear, x, soft / self.beta)
        return out, (bx, linear)

    def _backward(self, dout, cache):
        bx, linear = cache
        return np.where(linear, dout, dout * expit(bx))

    def _extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class Softmax(Layer):
    """Softmax along `axis`, shifted by the maximum for stability (as ``torch.nn.Softmax``).

    Parameters
    ----------
    axis : int, default 1
        The class axis; for ``(N, K)`` logits the default normalises each row.
    """

    def __init__(self, axis=1) -> None:
        super().__init__()
        self.axis = integer(axis, "axis")

    def _forward(self, x, training):
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(f"axis={self.axis} is out of range for x of shape {x.shape}")
        shifted = x - x.max(axis=self.axis, keepdims=True)
        out = np.exp(shifted)
        out /= out.sum(axis=self.axis, keepdims=True)
        return out, out

    def _backward(self, dout, out):
        return out * (dout - np.sum(dout * out, axis=self.axis, keepdims=True))

    def _extra_repr(self):
        return f"axis={self.axis}"
