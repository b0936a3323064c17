"""Fully connected layers."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .._docstrings import fill_doc
from .._validation import check_same_dtype, positive_int
from .base import _WEIGHTED_ARGS, _float_dtype, _Weighted

__all__ = ["Dense"]


@fill_doc(weighted_args=_WEIGHTED_ARGS)
class Dense(_Weighted):
    """Fully connected layer ``y = x @ weight.T + bias``, as ``torch.nn.Linear``.

    Parameters
    ----------
    in_features, out_features : int
    {weighted_args}

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

    _positional = ("in_features", "out_features")

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None) -> None:
        super().__init__()
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        self.dtype = _float_dtype(dtype)
        self._init_params((self.out_features, self.in_features), bias, self.out_features, rng)

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
        self._write_grads(weight=dweight, bias=dbias)
        return dx

    def output_shape(self, input_shape):
        return (super().output_shape(input_shape)[0], self.out_features)
