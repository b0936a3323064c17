"""Fully connected layers."""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .._validation import check_same_dtype, flag, positive_int, shape_tuple
from .base import Layer, _describe_args, _float_dtype, _uniform

__all__ = ["Dense"]


class Dense(Layer):
    """Fully connected layer ``y = x @ weight.T + bias``, as ``torch.nn.Linear``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    dtype : np.float32 or np.float64
    rng : numpy.random.Generator, int or None
        Source of the initial weights (``None``: fresh OS entropy).

    Attributes
    ----------
    params : dict
        ``weight`` of shape ``(out_features, in_features)`` and, with `bias`,
        ``bias`` of shape ``(out_features,)``, uniform in
        ``+-1/sqrt(in_features)`` as in PyTorch.

    Notes
    -----
    Input ``(N, in_features)`` of the layer's dtype, output ``(N, out_features)``.
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None) -> None:
        super().__init__()
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        self.dtype = _float_dtype(dtype)
        rng = np.random.default_rng(rng)
        bound = 1.0 / math.sqrt(self.in_features)
        shape = (self.out_features, self.in_features)
        self._add_param("weight", _uniform(rng, bound, shape, self.dtype))
        if flag(bias, "bias"):
            self._add_param("bias", _uniform(rng, bound, (self.out_features,), self.dtype))

    def _check_input_shape(self, shape) -> None:
        if len(shape) != 2 or shape[1] != self.in_features:
            hint = " (use Flatten before Dense)" if len(shape) > 2 else ""
            raise ValueError(
                f"x must have shape (N, in_features={self.in_features}), got {tuple(shape)}{hint}"
            )

    def _forward(self, x, training):
        self._check_input_shape(x.shape)
        check_same_dtype(x=x, weight=self.params["weight"])
        return F._linear(x, self.params["weight"], self.params.get("bias")), x

    def _backward(self, dout, x, input_grad=True):
        dx, dweight, dbias = F._linear_backward(dout, x, self.params["weight"], input_grad)
        self.grads["weight"][...] = dweight
        if "bias" in self.grads:
            self.grads["bias"][...] = dbias
        return dx

    def _backward_params(self, dout, x):
        self._backward(dout, x, input_grad=False)

    def output_shape(self, input_shape):
        shape = shape_tuple(input_shape)
        self._check_input_shape(shape)
        return (shape[0], self.out_features)

    def _extra_repr(self):
        return _describe_args(
            (self.in_features, self.out_features),
            bias=("bias" in self.params, True),
            dtype=(self.dtype.name, "float32"),
        )
