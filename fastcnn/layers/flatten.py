"""Reshaping layers."""

from __future__ import annotations

import math

from .._validation import shape_tuple
from .base import Layer

__all__ = ["Flatten"]


class Flatten(Layer):
    """Flatten all axes but the first: ``(N, d1, d2, ...)`` -> ``(N, d1*d2*...)``.

    As ``torch.nn.Flatten()`` (``start_dim=1``), in C order, so
    ``Flatten`` after an ``(N, C, H, W)`` tensor gives features indexed
    ``c*H*W + h*W + w``.
    """

    def _forward(self, x, training):
        return x.reshape(self.output_shape(x.shape)), x.shape

    def _backward(self, dout, input_shape):
        return dout.reshape(input_shape)

    def output_shape(self, input_shape):
        shape = shape_tuple(input_shape)
        if len(shape) < 2:
            raise ValueError(f"Flatten needs at least a 2-D input (N, ...), got shape {shape}")
        return (shape[0], math.prod(shape[1:]))
