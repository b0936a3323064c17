"""Activation layers: any shape, same shape out."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from .._validation import integer, real
from .base import Layer

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "ELU", "SELU", "Softplus", "Softmax"]


class ReLU(Layer):
    """``max(x, 0)``; the gradient is 1 where ``x > 0`` and 0 elsewhere (as PyTorch)."""

    def _forward(self, x, training):
        return np.maximum(x, 0), x > 0

    def _backward(self, dout, positive):
        return dout * positive


class LeakyReLU(Layer):
    """``x`` where ``x > 0``, else ``negative_slope * x`` (as ``torch.nn.LeakyReLU``).

    Parameters
    ----------
    negative_slope : float, default 0.01
    """

    def __init__(self, negative_slope=0.01) -> None:
        super().__init__()
        self.negative_slope = real(negative_slope, "negative_slope")

    def _forward(self, x, training):
        positive = x > 0
        return np.where(positive, x, x * self.negative_slope), positive

    def _backward(self, dout, positive):
        return np.where(positive, dout, dout * self.negative_slope)

    def _extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Layer):
    """Logistic function ``1 / (1 + exp(-x))``, by ``scipy.special.expit`` (never overflows)."""

    def _forward(self, x, training):
        out = expit(x)
        return out, out

    def _backward(self, dout, out):
        return dout * out * (1 - out)


class Tanh(Layer):
    """Hyperbolic tangent."""

    def _forward(self, x, training):
        out = np.tanh(x)
        return out, out

    def _backward(self, dout, out):
        return dout * (1 - out * out)


def _elu(x: np.ndarray, alpha: float, scale: float):
    """``scale * (x if x > 0 else alpha * expm1(x))`` and its derivative factor."""
    positive = x > 0
    # Clipping at 0 keeps exp from overflowing in the branch np.where discards.
    negative_part = np.minimum(x, 0)
    out = scale * np.where(positive, x, alpha * np.expm1(negative_part))
    slope = scale * np.where(positive, 1, alpha * np.exp(negative_part))
    return out, slope


class ELU(Layer):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)`` (as ``torch.nn.ELU``).

    Parameters
    ----------
    alpha : float, default 1.0
    """

    def __init__(self, alpha=1.0) -> None:
        super().__init__()
        self.alpha = real(alpha, "alpha")

    def _forward(self, x, training):
        return _elu(x, self.alpha, 1.0)

    def _backward(self, dout, slope):
        return dout * slope

    def _extra_repr(self):
        return f"alpha={self.alpha}"


class SELU(Layer):
    """Scaled ELU with PyTorch's constants ``scale * ELU(x, alpha)``."""

    ALPHA = 1.6732632423543772848170429916717
    SCALE = 1.0507009873554804934193349852946

    def _forward(self, x, training):
        return _elu(x, self.ALPHA, self.SCALE)

    def _backward(self, dout, slope):
        return dout * slope


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
