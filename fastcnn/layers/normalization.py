"""Batch normalisation layers."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .._validation import check_same_dtype, positive_int, real, shape_tuple
from .base import Layer, _describe_args, _float_dtype

__all__ = ["BatchNorm1D", "BatchNorm2D"]


class _BatchNorm(Layer):
    """Batch normalisation over every axis but 1 (the channel axis)."""

    _ndims: tuple[int, ...] = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32) -> None:
        super().__init__()
        self.num_features = positive_int(num_features, "num_features")
        self.eps = real(eps, "eps", low=0, low_open=True)
        self.momentum = real(momentum, "momentum", low=0, high=1)
        self.dtype = _float_dtype(dtype)
        self._add_param("weight", np.ones(self.num_features, self.dtype))
        self._add_param("bias", np.zeros(self.num_features, self.dtype))
        self.state["running_mean"] = np.zeros(self.num_features, self.dtype)
        self.state["running_var"] = np.ones(self.num_features, self.dtype)

    def _check_input_shape(self, shape) -> None:
        if len(shape) not in self._ndims or shape[1] != self.num_features:
            layouts = " or ".join(
                {2: "(N, C)", 3: "(N, C, L)", 4: "(N, C, H, W)"}[d] for d in self._ndims
            )
            raise ValueError(
                f"x must have shape {layouts} with C=num_features={self.num_features}, "
                f"got {tuple(shape)}"
            )
        if 0 in shape[2:]:
            raise ValueError(f"x must have non-empty spatial dims, got shape {tuple(shape)}")

    def _forward(self, x, training):
        self._check_input_shape(x.shape)
        check_same_dtype(x=x, weight=self.params["weight"])
        return F._batch_norm_forward(
            x, self.params["weight"], self.params["bias"], self.state["running_mean"],
            self.state["running_var"], training, self.momentum, self.eps)

    def _backward(self, dout, cache):
        dx, dweight, dbias = F._batch_norm_backward(dout, cache, self.params["weight"])
        self.grads["weight"][...] = dweight
        self.grads["bias"][...] = dbias
        return dx

    def output_shape(self, input_shape):
        shape = shape_tuple(input_shape)
        self._check_input_shape(shape)
        return shape

    def _extra_repr(self):
        return _describe_args(
            (self.num_features,),
            eps=(self.eps, 1e-5),
            momentum=(self.momentum, 0.1),
            dtype=(self.dtype.name, "float32"),
        )


class BatchNorm1D(_BatchNorm):
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)`` input, as ``torch.nn.BatchNorm1d``.

    Parameters
    ----------
    num_features : int
        C.
    eps : float, default 1e-5
        Added to the variance before the square root.
    momentum : float, default 0.1
        PyTorch's convention: ``running = (1 - momentum) * running + momentum * batch``.
    dtype : np.float32 or np.float64

    Attributes
    ----------
    params : dict
        ``weight`` (ones) and ``bias`` (zeros), shape ``(C,)``.
    state : dict
        ``running_mean`` (zeros) and ``running_var`` (ones), shape ``(C,)``.

    Notes
    -----
    In training mode the output is normalised with the batch mean and the
    biased batch variance, and the running statistics are updated with the
    unbiased variance; in evaluation mode the running statistics are used.
    """

    _ndims = (2, 3)


class BatchNorm2D(_BatchNorm):
    """Batch normalisation of ``(N, C, H, W)`` input, as ``torch.nn.BatchNorm2d``.

    Parameters, attributes and behaviour as :class:`BatchNorm1D`; the
    statistics are taken over N, H and W for each channel.
    """

    _ndims = (4,)
