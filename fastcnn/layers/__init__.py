"""Stateful layers: parameters, gradients and the cache between forward and backward.

Every layer follows one protocol (:class:`Layer`): ``forward(x, training=None)``
(also ``layer(x)``; None is the mode set by ``train()``/``eval()``) returns
the output and remembers what ``backward`` needs;
``backward(dout)`` returns the gradient with respect to the input and writes
the parameter gradients into ``grads`` in place. ``params`` and ``grads`` have
the same keys (PyTorch's names: ``weight``, ``bias``) and their arrays are
never re-bound, so optimizers and :meth:`fastcnn.Sequential.load` can hold on
to them. Non-trained saved arrays (BatchNorm's running statistics) live in
``state``. A layer that holds layers as attributes (directly, in lists or
tuples) reaches them as ``torch.nn.Module`` does, under dotted names.

Convolution and pooling call :mod:`fastcnn.functional`, which validates the
geometry; the element-wise math lives here. Semantics follow ``torch.nn``.
One module per family, as ``torch.nn.modules``: :mod:`.base` (the protocol),
:mod:`.convolution`, :mod:`.linear`, :mod:`.normalization`, :mod:`.pooling`,
:mod:`.padding`, :mod:`.upsampling`, :mod:`.flatten`, :mod:`.activation`,
:mod:`.dropout` and :mod:`.container`
(:class:`fastcnn.Sequential`, :class:`Residual`, :class:`Identity`).
"""

from .activation import ELU, SELU, LeakyReLU, ReLU, Sigmoid, Softmax, Softplus, Tanh
from .base import Layer
from .container import Identity, Residual
from .convolution import Conv2D, ConvTranspose2D
from .dropout import Dropout
from .flatten import Flatten
from .linear import Dense
from .normalization import BatchNorm1D, BatchNorm2D, GroupNorm, LayerNorm
from .padding import Pad2D
from .pooling import (
    AdaptiveAvgPool2D,
    AdaptiveMaxPool2D,
    AvgPool2D,
    GlobalAvgPool2D,
    MaxPool2D,
    MaxUnpool2D,
)
from .upsampling import Upsample

__all__ = [
    "Layer",
    "Conv2D",
    "MaxPool2D",
    "AvgPool2D",
    "GlobalAvgPool2D",
    "Dense",
    "Flatten",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "ELU",
    "SELU",
    "Softplus",
    "Softmax",
    "BatchNorm1D",
    "BatchNorm2D",
    "Dropout",
    "Residual",
    "Identity",
    "GroupNorm",
    "LayerNorm",
    "Pad2D",
    "Upsample",
    "AdaptiveAvgPool2D",
    "AdaptiveMaxPool2D",
    "MaxUnpool2D",
    "ConvTranspose2D",
]
