"""Containers: a stack of layers (:class:`Sequential`), a skip connection
(:class:`Residual`) and :class:`Identity`."""

from __future__ import annotations

import functools
import inspect
import operator

import numpy as np

from .. import functional as F
from .._docstrings import fill_doc
from .._validation import as_float_array, flag, shape_tuple
from .activation import FUSABLE_RELU_RAISES, ReLU, _check_fusable, _gradient_applicable, _rectifier
from .base import Layer, _named_modules, _output_shape_or_none
from .convolution import Conv2D
from .normalization import BatchNorm1D, BatchNorm2D
from .pooling import MaxPool2D

__all__ = ["Sequential", "Residual", "Identity", "named_layers"]


def named_layers(model, prefix: str = "") -> list[tuple[str, Layer]]:
    """List ``(prefix, layer)`` for every layer of `model` that computes or holds arrays.

    Parameters
    ----------
    model : Layer (a Sequential included), or list/tuple of those
    prefix : str
        Prepended to every prefix (used for nesting).

    Returns
    -------
    list of (str, Layer)
        Every nested layer, parents first, except pure containers (layers with
        sub-layers and no arrays of their own). The prefix of a layer is its
        dotted name and a dot (``"0."``, ``"1.0."``, ``"block.conv1."``), and
        ``""`` for a bare layer, so that ``prefix + name`` gives keys such as
        ``"0.weight"``.
    """
    return [
        (prefix + (name + "." if name else ""), layer)
        for name, layer in _named_modules(model)
        if layer.params or layer.state or next(layer.named_children(), None) is None
    ]


def _check_layer(layer, name: str) -> Layer:
    if not isinstance(layer, Layer):
        raise TypeError(f"{name} must be a fastcnn Layer, got {type(layer).__name__}")
    return layer


def _check_training(training) -> None:
    """Validate a container's `training` argument (None is passed on as is)."""
    if training is not None:
        flag(training, "training")


class Sequential(Layer):
    """Layers applied one after the other; itself a layer, so Sequentials nest.

    Parameters
    ----------
    layers : iterable of Layer

    Attributes
    ----------
    layers : list of Layer
        Named ``"0"``, ``"1"``, ... in :meth:`named_parameters` and saved files.

    Notes
    -----
    A Sequential is also a list of its layers: ``len(model)``, ``model[i]``,
    ``model[i:j]`` (a Sequential of the same layer objects), iteration and
    :meth:`append`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastcnn import Sequential
    >>> from fastcnn.layers import Conv2D, ReLU, Flatten, Dense
    >>> model = Sequential([Conv2D(1, 4, 3, rng=0), ReLU(), Flatten(), Dense(4 * 6 * 6, 10, rng=0)])
    >>> model(np.zeros((2, 1, 8, 8), np.float32)).shape
    (2, 10)
    >>> len(model), model[1], len(model[:2])
    (4, ReLU(), 2)
    """

    def __init__(self, layers=()) -> None:
        super().__init__()
        self.layers = [_check_layer(layer, f"layers[{i}]") for i, layer in enumerate(layers)]

    def named_children(self):
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def append(self, layer) -> Sequential:
        """Add `layer` at the end; return this Sequential."""
        self.layers.append(_check_layer(layer, "layer"))
        return self

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(self.layers[index])
        try:
            return self.layers[operator.index(index)]
        except TypeError:
            raise TypeError(
                f"Sequential index must be an int or a slice, got {type(index).__name__}"
            ) from None
        except IndexError:
            raise IndexError(
                f"Sequential index {index} is out of range for {len(self.layers)} layers"
            ) from None

    def forward(self, x, training: bool | None = None) -> np.ndarray:
        """Run `x` through every layer; see :meth:`fastcnn.layers.Layer.forward`.

        `training` is passed to every layer as given (None: each layer's own mode).
        A batch norm or a :class:`Residual` followed by a ReLU runs as one
        (:meth:`~fastcnn.layers.BatchNorm2D.forward_relu`,
        :meth:`~fastcnn.layers.Residual.forward_relu`), and so do a ReLU
        followed by a max pooling
        (:meth:`~fastcnn.layers.MaxPool2D.forward_after_relu`) and a
        convolution followed by a ReLU or LeakyReLU
        (:meth:`~fastcnn.layers.Conv2D.forward_activation`). A
        :class:`~fastcnn.layers.Conv2D` after such an activation (of its own
        forward, or of a convolution's) applies the activation's gradient to
        its input gradient as it computes it, and the activation passes its
        gradient on.
        """
        _check_training(training)
        before = None  # the last layer run
        for run in self._runs():
            applies = type(run[0]) is Conv2D and _gradient_applicable(before)
            if applies:  # the convolution applies the rectifier's gradient to its own
                run[0]._input_activation = _rectifier(before)
            try:
                x = self._forward_run(run, x, training)
            finally:
                if applies:
                    del run[0]._input_activation
            if applies:
                before._fused(before._out_shape, before._out_dtype)
            before = run[-1]
        return x

    @staticmethod
    def _forward_run(run, x, training):
        if len(run) == 1:
            return run[0].forward(x, training)
        if type(run[0]) is ReLU:
            return run[1].forward_after_relu(x, run[0], training)
        if type(run[0]) is Conv2D:
            return run[0].forward_activation(x, run[1], training)
        return run[0].forward_relu(x, run[1], training)

    def _runs(self) -> list[tuple[Layer, ...]]:
        """The layers as :meth:`forward` runs them, one by one, and as pairs
        a batch norm or a residual connection followed by a ReLU, a ReLU
        followed by a max pooling, and a convolution followed by a ReLU or
        LeakyReLU (unless that ReLU pairs with a max pooling: pooling first
        leaves the ReLU's passes a quarter of the cells)."""
        runs, layers, i = [], self.layers, 0
        while i < len(layers):
            after = layers[i + 1] if i + 1 < len(layers) else None
            then = layers[i + 2] if i + 2 < len(layers) else None
            # (exact types: a subclass may compute something else)
            fused = (type(layers[i]) in (BatchNorm1D, BatchNorm2D, Residual)
                     and type(after) is ReLU
                     or type(layers[i]) is ReLU and type(after) is MaxPool2D
                     or type(layers[i]) is Conv2D and _rectifier(after) is not None
                     and not (type(after) is ReLU and type(then) is MaxPool2D))
            runs.append((layers[i], after) if fused else (layers[i],))
            i += len(runs[-1])
        return runs

    def backward(self, dout, input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate through every layer in reverse; fills each layer's ``grads``.

        `input_grad` applies to the first layer (see
        :meth:`fastcnn.layers.Layer.backward`): a training loop that does not
        use the gradient of its data passes False.

        Returns
        -------
        dx : ndarray or None
            Gradient with respect to the input of the last forward; None if
            `input_grad` is False.
        """
        input_grad = flag(input_grad, "input_grad")
        if not self.layers:
            return dout if input_grad else None
        for layer in reversed(self.layers[1:]):
            dout = layer.backward(dout)
        return _backward(self.layers[0], dout, input_grad)

    def output_shape(self, input_shape):
        shape = shape_tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def _child_input_shapes(self, input_shape):
        shapes = []
        for layer in self.layers:
            shapes.append(input_shape)
            if input_shape is not None:
                input_shape = _output_shape_or_none(layer, input_shape)
        return shapes


@functools.cache
def _takes_input_grad(cls) -> bool:
    return "input_grad" in inspect.signature(cls.backward).parameters


def _backward(layer: Layer, dout, input_grad: bool):
    """``layer.backward(dout, input_grad)``, also for a block whose own
    backward takes `dout` only (its input gradient is then computed and dropped)."""
    if input_grad:
        return layer.backward(dout)
    if _takes_input_grad(type(layer)):
        return layer.backward(dout, input_grad=False)
    layer.backward(dout)
    return None


class Identity(Layer):
    """Returns its input (the same array), as ``torch.nn.Identity``; the gradient passes through."""

    def _forward(self, x, training):
        return x, None

    def _backward(self, dout, cache):
        return dout


class Residual(Layer):
    """A skip connection: ``body(x) + shortcut(x)``.

    Parameters
    ----------
    body : Layer
        A layer or a :class:`Sequential`.
    shortcut : Layer or None, default None
        None is the identity (``body(x) + x``); e.g. a strided 1x1
        :class:`~fastcnn.layers.Conv2D` when `body` changes the shape.

    Notes
    -----
    Both branches must give outputs of one shape. The backward sums the
    input gradients of the two branches. Named ``"body"`` and ``"shortcut"``
    in :meth:`named_parameters` and saved files.
    """

    def __init__(self, body, shortcut=None) -> None:
        super().__init__()
        self.body = _check_layer(body, "body")
        self.shortcut = None if shortcut is None else _check_layer(shortcut, "shortcut")

    def forward(self, x, training: bool | None = None) -> np.ndarray:
        """``body(x) + shortcut(x)``; see :meth:`fastcnn.layers.Layer.forward`."""
        return self._forward_sum(x, training, relu_after=False)

    @fill_doc(raises=FUSABLE_RELU_RAISES)
    def forward_relu(self, x, relu: ReLU, training: bool | None = None) -> np.ndarray:
        """``relu.forward(self.forward(x, training))``, the sum and the ReLU
        in one pass over memory.

        The two layers' backward calls, `relu`'s then this layer's, then
        give the gradients of the unfused pair. :class:`Sequential` runs a
        residual connection followed by a ReLU this way.

        {raises}
        """
        _check_fusable(relu)
        out = self._forward_sum(x, training, relu_after=True)
        relu._fused(out.shape, out.dtype, out)
        return out

    def _forward_sum(self, x, training, relu_after: bool) -> np.ndarray:
        _check_training(training)
        x = as_float_array(x, "x")
        out = self.body.forward(x, training)
        skip = x if self.shortcut is None else self.shortcut.forward(x, training)
        if out.shape != skip.shape:
            raise ValueError(
                f"Residual: body output shape {out.shape} differs from shortcut output shape "
                f"{skip.shape} for x of shape {x.shape}; give a shortcut that matches the body"
            )
        with self._pool:
            return F._add(out, skip, relu_after)

    def backward(self, dout, input_grad: bool = True) -> np.ndarray | None:
        """The sum of the body's and the shortcut's input gradients for `dout`
        (None if `input_grad` is False; see :meth:`fastcnn.layers.Layer.backward`)."""
        input_grad = flag(input_grad, "input_grad")
        dx = _backward(self.body, dout, input_grad)
        if self.shortcut is None:
            skip = as_float_array(dout, "dout")
        else:
            skip = _backward(self.shortcut, dout, input_grad)
        if not input_grad:
            return None
        with self._pool:
            return F._add(dx, skip)

    def output_shape(self, input_shape):
        shape = shape_tuple(input_shape)
        out = self.body.output_shape(shape)
        skip = shape if self.shortcut is None else self.shortcut.output_shape(shape)
        if out != skip:
            raise ValueError(
                f"Residual: body output shape {out} differs from shortcut output shape {skip} "
                f"for input_shape {shape}"
            )
        return out

    def _child_input_shapes(self, input_shape):
        return [input_shape for _ in self.named_children()]
