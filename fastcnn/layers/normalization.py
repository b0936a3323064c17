"""Normalisation layers: batch, group and layer normalisation."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .._docstrings import fill_doc
from .._validation import check_same_dtype, flag, positive_int, real, shape_tuple
from .activation import FUSABLE_RELU_RAISES, ReLU, _forward_applying
from .base import Layer, _describe_args, _float_dtype

__all__ = ["BatchNorm1D", "BatchNorm2D", "GroupNorm", "LayerNorm"]


class _BatchNorm(Layer):
    """Batch normalisation over every axis but 1 (the channel axis)."""

    _ndims: tuple[int, ...] = ()
    # True while forward_relu runs: the forward then fuses the ReLU after it.
    _relu = False

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
            self.state["running_var"], training, self.momentum, self.eps, self._relu)

    @fill_doc(raises=FUSABLE_RELU_RAISES)
    def forward_relu(self, x, relu: ReLU, training: bool | None = None) -> np.ndarray:
        """``relu.forward(self.forward(x, training))`` in one pass over memory.

        The two layers' backward calls, `relu`'s then this layer's, then
        give the gradients of the unfused pair (the ReLU passes its output
        gradient on, and this layer zeroes it where the ReLU's input was not
        positive, in its own passes). :class:`~fastcnn.layers.Sequential`
        runs a batch norm followed by a ReLU this way.

        {raises}
        """
        return _forward_applying(self, x, relu, training)

    def _backward(self, dout, cache):
        dx, dweight, dbias = F._batch_norm_backward(dout, cache, self.params["weight"])
        self._write_grads(weight=dweight, bias=dbias)
        return dx

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


class _AffineNorm(Layer):
    """What GroupNorm and LayerNorm share: `eps`, an optional learnt ``weight``
    (ones) and ``bias`` (zeros), and a functional pair ``_ops`` (forward,
    backward) that takes the attribute named ``_grouping`` after `x`.

    The flag that asks for the weight and bias is the argument and attribute
    named ``_affine`` (PyTorch names it differently in each layer).
    """

    _ops: tuple = ()
    _grouping = ""
    _affine = ""

    def _init_affine(self, eps, affine, shape, dtype) -> bool:
        """Set eps and dtype and, if `affine`, add the parameters of `shape`; return `affine`."""
        self.eps = real(eps, "eps", low=0, low_open=True)
        affine = flag(affine, self._affine)
        self.dtype = _float_dtype(dtype)
        if affine:
            self._add_param("weight", np.ones(shape, self.dtype))
            self._add_param("bias", np.zeros(shape, self.dtype))
        return affine

    def _forward(self, x, training):
        forward, _ = self._ops
        out = forward(x, getattr(self, self._grouping), self.params.get("weight"),
                      self.params.get("bias"), self.eps)
        return out, x

    def _backward(self, dout, x):
        _, backward = self._ops
        dx, dweight, dbias = backward(dout, x, getattr(self, self._grouping),
                                      self.params.get("weight"), self.eps)
        self._write_grads(weight=dweight, bias=dbias)
        return dx

    def _describe(self, positional: tuple) -> str:
        """The repr's arguments: `positional`, then eps, the affine flag and dtype."""
        return _describe_args(
            positional,
            eps=(self.eps, 1e-5),
            **{self._affine: (getattr(self, self._affine), True)},
            dtype=(self.dtype.name, "float32"),
        )


class GroupNorm(_AffineNorm):
    """Group normalisation, as ``torch.nn.GroupNorm``: statistics per sample and group,
    the same in training and evaluation (no running statistics).

    Parameters
    ----------
    num_groups : int
        Divides `num_channels`.
    num_channels : int
    eps : float, default 1e-5
    affine : bool, default True
        Learn a per-channel ``weight`` (ones) and ``bias`` (zeros).
    dtype : np.float32 or np.float64

    Notes
    -----
    Input ``(N, C, ...)``, output of the same shape; works at batch size 1.
    """

    _ops = (F.group_norm, F.group_norm_backward)
    _grouping = "num_groups"
    _affine = "affine"

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=np.float32) -> None:
        super().__init__()
        self.num_groups = positive_int(num_groups, "num_groups")
        self.num_channels = positive_int(num_channels, "num_channels")
        if self.num_channels % self.num_groups:
            raise ValueError(
                f"num_groups={self.num_groups} must divide num_channels={self.num_channels}"
            )
        self.affine = self._init_affine(eps, affine, self.num_channels, dtype)

    def _forward(self, x, training):
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"x must have shape (N, {self.num_channels}, ...) for num_channels="
                f"{self.num_channels}, got {x.shape}"
            )
        return super()._forward(x, training)

    def _extra_repr(self):
        return self._describe((self.num_groups, self.num_channels))


class LayerNorm(_AffineNorm):
    """Layer normalisation over the trailing axes, as ``torch.nn.LayerNorm``.

    Parameters
    ----------
    normalized_shape : int or tuple of ints
        The trailing dims of the input normalised together, e.g. ``(C, H, W)``.
    eps : float, default 1e-5
    elementwise_affine : bool, default True
        Learn ``weight`` (ones) and ``bias`` (zeros) of shape `normalized_shape`.
    dtype : np.float32 or np.float64
    """

    _ops = (F.layer_norm, F.layer_norm_backward)
    _grouping = "normalized_shape"
    _affine = "elementwise_affine"

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True,
                 dtype=np.float32) -> None:
        super().__init__()
        if isinstance(normalized_shape, (tuple, list)):
            shape = shape_tuple(normalized_shape, "normalized_shape")
        else:
            shape = (positive_int(normalized_shape, "normalized_shape"),)
        if not shape or min(shape) < 1:
            raise ValueError(f"normalized_shape must be positive ints, got {normalized_shape!r}")
        self.normalized_shape = shape
        self.elementwise_affine = self._init_affine(eps, elementwise_affine, shape, dtype)

    def _extra_repr(self):
        return self._describe((self.normalized_shape,))
