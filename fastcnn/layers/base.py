"""The layer protocol (:class:`Layer`) and the helpers every layer family shares."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .. import _npz
from .._buffers import BufferPool
from .._validation import (
    SUPPORTED_DTYPES,
    _describe,
    as_float_array,
    flag,
    given_back,
    positive_int,
    shape_tuple,
)

__all__ = ["Layer"]


def _float_dtype(dtype) -> np.dtype:
    """Normalise a layer's `dtype` argument to float32 or float64."""
    try:
        result = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype!r}") from exc
    if result not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be np.float32 or np.float64, got {result}")
    return result


def _describe_args(positional=(), **keyword_and_default) -> str:
    """``"a, b, key=value, ..."`` listing only keywords that differ from their default.

    Keyword arguments are given as ``name=(value, default)``.
    """
    parts = [str(v) for v in positional]
    parts += [f"{k}={v!r}" for k, (v, default) in keyword_and_default.items() if v != default]
    return ", ".join(parts)


def _uniform(rng: np.random.Generator, bound: float, shape, dtype) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


#: The docstring section (see fastcnn._docstrings) of the constructor arguments
#: that every :class:`_Weighted` layer takes.
_WEIGHTED_ARGS = """
bias : bool, default True
dtype : np.float32 or np.float64
rng : numpy.random.Generator, int or None
    Source of the initial weights (``None``: fresh OS entropy).
"""


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _layers_in(value, name: str) -> Iterator[tuple[str, Layer]]:
    """``(name, layer)`` for `value` if it is a layer, or for every layer in it if it
    is a list or tuple (nested to any depth; the i-th item is named ``name.i``)."""
    if isinstance(value, Layer):
        yield name, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _layers_in(item, _dotted(name, str(i)))


def _walk(layer: Layer, name: str, seen: set, out: list) -> None:
    # A layer reachable twice (shared weights) is listed once, under its first name,
    # so an optimizer never steps it twice; `seen` also ends reference cycles.
    if id(layer) in seen:
        return
    seen.add(id(layer))
    out.append((name, layer))
    for child_name, child in layer.named_children():
        _walk(child, _dotted(name, child_name), seen, out)


def _named_arrays(model, kind: str) -> Iterator[tuple[str, np.ndarray]]:
    """``(dotted name, array)`` of the `kind` dict (``"params"``, ``"grads"`` or
    ``"state"``) of every layer of `model` (see :func:`_named_modules`)."""
    for prefix, layer in _named_modules(model):
        for name, value in getattr(layer, kind).items():
            yield _dotted(prefix, name), value


def _output_shape_or_none(layer: Layer, input_shape):
    """``layer.output_shape(input_shape)``, or None for a block that does not say."""
    try:
        return layer.output_shape(input_shape)
    except NotImplementedError:
        return None


def _named_modules(model) -> list[tuple[str, Layer]]:
    """Every layer of `model` with its dotted name, parents before their children.

    Parameters
    ----------
    model : Layer (a Sequential included) or list/tuple of layers, nested to any depth
        A list is named like a Sequential: its i-th entry is ``"i"``.

    Returns
    -------
    list of (str, Layer)
        The model itself is ``""``; names join with dots (``"block.conv1"``).
    """
    if isinstance(model, Layer):
        return list(model.named_modules())
    if not isinstance(model, (list, tuple)):
        raise TypeError(
            "model must be a Sequential, a Layer or a list of layers, "
            f"got {type(model).__name__}"
        )
    seen: set = set()
    out: list = []
    for i, item in enumerate(model):
        if not isinstance(item, (Layer, list, tuple)):
            raise TypeError(f"model[{i}] must be a fastcnn Layer, got {type(item).__name__}")
        for name, layer in _layers_in(item, str(i)):
            _walk(layer, name, seen, out)
    return out


class Layer:
    """Base class of all layers.

    Subclasses implement ``_forward(x, training) -> (out, cache)`` and
    ``_backward(dout, cache) -> dx``; the base class converts the input with
    :func:`fastcnn._validation.as_float_array`, keeps the cache, and checks
    that ``dout`` matches the output of the last forward.

    A layer made of other layers (a block) assigns them to attributes,
    directly or in lists or tuples, and overrides :meth:`forward` and
    :meth:`backward` to call them; they are found as ``torch.nn.Module``
    finds sub-modules, so :meth:`named_parameters`, optimizers,
    :meth:`summary`, :meth:`save`/:meth:`load`, :meth:`train`/:meth:`eval`
    and :meth:`astype` reach them, under dotted names such as
    ``"conv1.weight"`` or ``"blocks.0.weight"``.

    Attributes
    ----------
    params : dict of str to ndarray
        Trained parameters of this layer itself (not of its sub-layers).
        Updated in place, never re-bound (except by :meth:`astype`).
    grads : dict of str to ndarray
        Gradients of the last :meth:`backward`, same keys, shapes and dtypes as
        `params`, overwritten in place by every backward.
    state : dict of str to ndarray
        Saved arrays that are not trained (e.g. BatchNorm running statistics).
    training : bool
        The mode :meth:`forward` uses when it is not given `training`; set by
        :meth:`train` and :meth:`eval`. True for a new layer.

    Notes
    -----
    A layer whose forward draws random numbers keeps its
    ``numpy.random.Generator`` as ``rng``; :func:`fastcnn.gradcheck.gradcheck`
    restores that generator's state before every evaluation.

    While ``_forward`` and ``_backward`` run, the functional ops take their
    large results from the layer's pool (:mod:`fastcnn._buffers`): arrays of
    earlier calls that nothing refers to any more. A block that computes
    outside them takes its arrays with ``with self._pool:`` and
    :func:`fastcnn._buffers.empty`.
    """

    # Attributes of the base class that may hold anything (a cache can hold a
    # layer): never searched for sub-layers.
    _NOT_SUB_LAYERS = frozenset({"_cache", "_window", "_window_key"})

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}
        self.training = True
        self._cache = None
        # The arrays its computations make, reused from call to call.
        self._pool = BufferPool()
        # Shape and dtype of the last forward's output; None until forward runs.
        self._out_shape: tuple[int, ...] | None = None
        self._out_dtype: np.dtype | None = None
        # The last window computed by _kept_window, and what it was made from.
        self._window_key = self._window = None
        # The shape of every parameter, gradient and state array, as made
        # (see _check_arrays).
        self._shapes: dict[tuple[str, str], tuple[int, ...]] = {}

    def _kept_window(self, make, shape, *geometry):
        """``make(shape, *geometry)``, computed again only when it can change.

        A window (and whatever else `make` derives with it) depends on the
        input's spatial size and the geometry only, which stay the same from
        one training step to the next.
        """
        key = (shape[2:], *geometry)
        if key != self._window_key:
            self._window = make(shape, *geometry)
            self._window_key = key
        return self._window

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        self._shapes["params", name] = self._shapes["grads", name] = value.shape

    def _write_grads(self, **grads: np.ndarray) -> None:
        """Copy gradients into :attr:`grads` in place, by parameter name; those of
        parameters the layer does not have (a bias it was made without) are dropped."""
        for name, value in grads.items():
            if name in self.grads:
                self.grads[name][...] = value

    def _check_arrays(self) -> None:
        """Refuse parameters, gradients or state that were replaced by arrays
        the kernels cannot take as they are: the kernels read them without
        further checks, so a wrong shape would read or write out of bounds.

        Shapes are those of :meth:`_add_param` (state arrays: as first seen).
        """
        for kind in ("params", "grads", "state"):
            for name, value in getattr(self, kind).items():
                shape = self._shapes.setdefault((kind, name), np.shape(value))
                if not (isinstance(value, np.ndarray) and value.shape == shape
                        and value.dtype in SUPPORTED_DTYPES and value.flags.c_contiguous
                        and value.flags.aligned and value.flags.writeable):
                    raise ValueError(
                        f"{type(self).__name__}.{kind}[{name!r}] must be a writeable, "
                        f"C-contiguous float32/float64 ndarray of shape {shape}, got "
                        f"{_describe(value)}; change its values in place instead "
                        "of replacing it"
                    )

    def _mode(self, training) -> bool:
        """`training` if given, else the layer's own mode (see :meth:`train`)."""
        return self.training if training is None else flag(training, "training")

    def forward(self, x, training: bool | None = None) -> np.ndarray:
        """Compute the layer's output and remember what :meth:`backward` needs.

        Parameters
        ----------
        x : array_like of float32 or float64
            Input; its required shape depends on the layer. Never modified.
        training : bool or None, default None
            Training mode (batch statistics for BatchNorm, active Dropout) or
            evaluation mode; None uses :attr:`training` (True unless
            :meth:`eval` was called). A container passes the argument on
            unchanged, so an explicit value applies to every nested layer.

        Returns
        -------
        out : ndarray
            Same dtype as `x`; shape given by :meth:`output_shape`.
        """
        given, x = x, as_float_array(x, "x")
        self._check_arrays()
        with self._pool:
            out, self._cache = self._forward(x, self._mode(training))
        # A ufunc of a 0-d array gives a NumPy scalar: the contract is an ndarray.
        out = given_back(np.asarray(out), x, given)
        self._out_shape, self._out_dtype = out.shape, out.dtype
        return out

    def __call__(self, x, training: bool | None = None) -> np.ndarray:
        return self.forward(x, training)

    def backward(self, dout, input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate `dout` through the last forward call.

        Parameters
        ----------
        dout : array_like
            Gradient of the loss with respect to the output of the last
            :meth:`forward`: same shape and dtype as that output.
        input_grad : bool, default True
            False when nothing needs the gradient with respect to the input
            (the data fed to a network's first layer, as PyTorch does for an
            input without ``requires_grad``): only the parameter gradients
            are computed, which saves a convolution's input-gradient GEMM.

        Returns
        -------
        dx : ndarray or None
            Gradient with respect to that forward's input, same shape and
            dtype; None if `input_grad` is False. Parameter gradients are
            written into :attr:`grads` in place.

        Raises
        ------
        RuntimeError
            If :meth:`forward` has not been called yet.
        """
        if self._out_shape is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before forward(): run forward "
                "first, it stores what backward needs"
            )
        given, dout = dout, as_float_array(dout, "dout")
        self._check_arrays()
        if dout.shape != self._out_shape:
            raise ValueError(
                f"dout must have the shape of the last forward output {self._out_shape}, "
                f"got {dout.shape}"
            )
        if dout.dtype != self._out_dtype:
            raise TypeError(
                f"dout must have the dtype of the last forward output {self._out_dtype}, "
                f"got dout.dtype={dout.dtype} (fastcnn never promotes silently)"
            )
        with self._pool:
            if not flag(input_grad, "input_grad"):
                self._backward_params(dout, self._cache)
                return None
            dx = self._backward(dout, self._cache)
        return given_back(np.asarray(dx), dout, given)

    def output_shape(self, input_shape) -> tuple[int, ...]:
        """Shape of the output for an input of shape `input_shape`.

        The default is the element-wise answer (the same shape), for an input
        that :meth:`_check_input_shape` accepts. A block of sub-layers must
        override it to appear with shapes in :meth:`summary`.

        Raises
        ------
        NotImplementedError
            For a layer with sub-layers that does not override it.
        """
        if next(self.named_children(), None) is not None:
            raise NotImplementedError(
                f"{type(self).__name__} holds sub-layers: define its "
                "output_shape(input_shape) to give its output shape"
            )
        shape = shape_tuple(input_shape)
        self._check_input_shape(shape)
        return shape

    def _check_input_shape(self, shape: tuple[int, ...]) -> None:
        """Raise ValueError if an input of `shape` does not fit this layer (any does here)."""

    # -- sub-layers --------------------------------------------------------

    def named_children(self) -> Iterator[tuple[str, Layer]]:
        """The direct sub-layers, ``(name, layer)``, in the order they were assigned.

        A layer held by an attribute ``conv`` is ``"conv"``; the i-th layer of
        a list or tuple ``blocks`` is ``"blocks.i"`` (``"blocks.i.j"`` nested).
        """
        for attr, value in vars(self).items():
            if attr not in self._NOT_SUB_LAYERS:
                yield from _layers_in(value, attr)

    def children(self) -> Iterator[Layer]:
        """The direct sub-layers (see :meth:`named_children`)."""
        for _, layer in self.named_children():
            yield layer

    def named_modules(self) -> Iterator[tuple[str, Layer]]:
        """This layer (``""``) and every nested layer with its dotted name, parents first.

        A layer reachable twice is listed once, under its first name.
        """
        out: list = []
        _walk(self, "", set(), out)
        return iter(out)

    def modules(self) -> Iterator[Layer]:
        """This layer and every nested layer (see :meth:`named_modules`)."""
        for _, layer in self.named_modules():
            yield layer

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every trained array of this layer and its sub-layers: ``("conv1.weight", array)``."""
        return _named_arrays(self, "params")

    def parameters(self) -> Iterator[np.ndarray]:
        """Every trained array (see :meth:`named_parameters`)."""
        for _, value in self.named_parameters():
            yield value

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every saved, untrained array (``state``, e.g. ``"bn.running_mean"``), nested included."""
        return _named_arrays(self, "state")

    @property
    def num_params(self) -> int:
        """Number of trained scalars, sub-layers included."""
        return sum(p.size for p in self.parameters())

    # -- modes, dtype, inference ------------------------------------------

    def train(self, mode: bool = True) -> Layer:
        """Set :attr:`training` of this layer and every nested layer; return this layer.

        ``forward(x)`` then uses that mode; ``forward(x, training=...)`` still
        overrides it for one call.
        """
        mode = flag(mode, "mode")
        for layer in self.modules():
            layer.training = mode
        return self

    def eval(self) -> Layer:
        """Evaluation mode for this layer and every nested layer: ``train(False)``."""
        return self.train(False)

    def _forget_last_forward(self) -> None:
        """Drop what the last forward kept for backward (it references the batch)."""
        self._cache = None
        self._out_shape = self._out_dtype = None

    def astype(self, dtype) -> Layer:
        """Cast every parameter, gradient and state array, nested layers included.

        Parameters
        ----------
        dtype : np.float32 or np.float64

        Returns
        -------
        Layer
            This layer, now computing in `dtype` (inputs must then have it).

        Notes
        -----
        Arrays already of `dtype` are kept; the others are replaced by cast
        copies, so an optimizer created before refuses to step: create it
        after ``astype``. What the last forward kept for backward is dropped.
        ``copy.deepcopy(layer).astype(np.float64)`` gives a float64 copy and
        leaves the layer as it is.
        """
        dtype = _float_dtype(dtype)
        for layer in self.modules():
            for arrays in (layer.params, layer.grads, layer.state):
                for name, value in arrays.items():
                    if value.dtype.kind == "f" and value.dtype != dtype:
                        arrays[name] = value.astype(dtype)
            if isinstance(getattr(layer, "dtype", None), np.dtype):
                layer.dtype = dtype
            layer._forget_last_forward()
            layer._pool.clear()
        return self

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Outputs for `x` in evaluation mode, batch by batch, keeping nothing for backward.

        Parameters
        ----------
        x : array_like of float32 or float64, shape (N, ...)
            Never modified.
        batch_size : int, default 256
            Samples per forward call.

        Returns
        -------
        ndarray
            The outputs of all batches, concatenated along axis 0.

        Notes
        -----
        Every forward runs with ``training=False`` (no dropout, BatchNorm uses
        and keeps its running statistics) whatever :attr:`training` says.
        After each batch, every layer drops what it kept for backward, so no
        layer holds a reference to `x`; a :meth:`backward` must follow a new
        :meth:`forward`.
        """
        x = as_float_array(x, "x")
        if x.ndim == 0:
            raise ValueError("x must have a batch axis, got a 0-d array")
        batch_size = positive_int(batch_size, "batch_size")
        layers = list(self.modules())
        outputs = []
        try:
            # One call even for an empty x: it gives the output's shape.
            for start in range(0, max(len(x), 1), batch_size):
                outputs.append(self.forward(x[start : start + batch_size], training=False))
                for layer in layers:
                    layer._forget_last_forward()
        finally:
            for layer in layers:
                layer._forget_last_forward()
        return np.concatenate(outputs)

    # -- saving ------------------------------------------------------------

    def _saved_arrays(self) -> dict[str, np.ndarray]:
        """Every parameter and state array by its dotted name, e.g. ``"0.weight"``."""
        return dict(self.named_parameters()) | dict(self.named_buffers())

    def save(self, path) -> None:
        """Write every parameter and state array (nested included) to ``.npz``, atomically.

        Parameters
        ----------
        path : str or os.PathLike
            Destination; ``.npz`` is appended if missing (as ``np.savez``
            does, and :meth:`load` reads the same name). Keys are the dotted
            names of :meth:`named_parameters` and :meth:`named_buffers`, e.g.
            ``"0.weight"``, ``"1.running_mean"``, ``"block.conv1.weight"``.

        Notes
        -----
        The file is written beside the target under a temporary name, flushed
        to disk and renamed over it: an interrupted or failed save leaves the
        previous file as it was, and a failed one removes the temporary file
        (a process killed outright can leave ``.NAME.npz.<random>.tmp``
        behind). No pickle is involved.

        Raises
        ------
        FileNotFoundError
            If the directory does not exist.
        OSError
            If writing fails (e.g. a full disk); the previous file is intact.
        """
        _npz.save(path, self._saved_arrays())

    def load(self, path) -> None:
        """Copy the arrays of an ``.npz`` file written by :meth:`save` into this layer.

        Every member's name, shape and dtype (from its ``.npy`` header) is
        checked against the model before any data is read, only what the
        model expects is read, and the model changes only if the whole file
        matches. Arrays are copied into the existing ones in place
        (optimizers keep working).

        Parameters
        ----------
        path : str or os.PathLike
            ``.npz`` is appended if missing, as in :meth:`save`.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            Naming the file and the problem: not an ``.npz`` archive (a text,
            empty or truncated file), a missing or unexpected key, a shape
            or dtype that differs from the model's (the key is the dotted
            path of the layer), a member larger or smaller than its header
            says, pickled objects, or corrupt data.
        """
        owners = {}
        for prefix, layer in self.named_modules():
            for name in (*layer.params, *layer.state):
                owners[_dotted(prefix, name)] = f"layer {prefix!r} ({type(layer).__name__})"
        expected = self._saved_arrays()
        loaded = _npz.load(path, expected, owners)
        for key, target in expected.items():
            target[...] = loaded[key]

    def summary(self, input_shape) -> str:
        """A table of the nested layers, their output shapes and parameter counts.

        Parameters
        ----------
        input_shape : tuple of int
            Full input shape, batch included, e.g. ``(1, 1, 28, 28)``.

        Returns
        -------
        str
            One row per layer (the sub-layers of a container, indented under
            it, named by their dotted path) and the total number of
            parameters. The rows inside a block other than a
            :class:`~fastcnn.Sequential` or :class:`~fastcnn.layers.Residual`
            show no shape: only the block knows how data flows through them.
            A block that does not define :meth:`output_shape` shows ``?``.
        """
        shape = shape_tuple(input_shape)
        rows = [("#", "Layer", "Output shape", "Params"), ("", "Input", str(shape), "")]

        def add_children(layer, prefix, shape, depth):
            children = list(layer.named_children())
            shapes = [None] * len(children) if shape is None else layer._child_input_shapes(shape)
            for (name, child), child_shape in zip(children, shapes):
                add(_dotted(prefix, name), child, child_shape, depth)

        def add(name, layer, shape, depth):
            if shape is None:  # how data flows into this layer is unknown
                shown = ""
            else:
                out_shape = _output_shape_or_none(layer, shape)
                shown = "?" if out_shape is None else str(out_shape)
            leaf = next(layer.named_children(), None) is None
            rows.append((
                name,
                "  " * depth + (repr(layer) if leaf else type(layer).__name__),
                shown,
                f"{layer.num_params:,}",
            ))
            add_children(layer, name, shape, depth + 1)

        if next(self.named_children(), None) is None:
            add("", self, shape, 0)
        else:
            add_children(self, "", shape, 0)
        widths = [max(len(row[k]) for row in rows) for k in range(4)]

        def line(row):
            return (
                f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  "
                f"{row[2]:<{widths[2]}}  {row[3]:>{widths[3]}}"
            ).rstrip()

        rule = "-" * (sum(widths) + 6)
        total = f"Total params: {self.num_params:,}"
        return "\n".join([line(rows[0]), rule, *map(line, rows[1:]), rule, total])

    def _child_input_shapes(self, input_shape) -> list:
        """The input shape of each direct sub-layer, in order, for `input_shape` (None: unknown)."""
        return [None for _ in self.named_children()]

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self._extra_repr()})"
        body = "".join(
            f"\n  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in children
        )
        return f"{type(self).__name__}({self._extra_repr()}{body}\n)"

    def _forward(self, x: np.ndarray, training: bool):
        raise NotImplementedError

    def _backward(self, dout: np.ndarray, cache) -> np.ndarray:
        raise NotImplementedError

    def _backward_params(self, dout: np.ndarray, cache) -> None:
        """The parameter gradients of :meth:`_backward` alone; layers whose
        input gradient costs something worth saving override it."""
        self._backward(dout, cache)


class _Weighted(Layer):
    """A layer with a trained ``weight`` and an optional ``bias`` (Dense and the
    convolutions): PyTorch's default init, and the ``repr`` of PyTorch's arguments.

    ``repr`` shows the attributes named in ``_positional``, then those of
    ``_keywords`` (name: default) that differ from their default, then
    ``bias`` and ``dtype`` if not the defaults.
    """

    _positional: tuple = ()
    _keywords: dict = {}
    dtype: np.dtype

    def _init_params(self, weight_shape: tuple, bias, bias_size: int, rng) -> None:
        """Add ``weight`` and, if `bias`, a ``bias`` of `bias_size`, both uniform in
        ``+-1/sqrt(fan_in)``, ``fan_in`` the product of the weight's axes after the
        first (PyTorch's Kaiming-uniform with a=sqrt(5) reduces to that bound)."""
        rng = np.random.default_rng(rng)
        bound = 1.0 / math.sqrt(math.prod(weight_shape[1:]))
        self._add_param("weight", _uniform(rng, bound, weight_shape, self.dtype))
        if flag(bias, "bias"):
            self._add_param("bias", _uniform(rng, bound, (bias_size,), self.dtype))

    def _extra_repr(self):
        return _describe_args(
            tuple(getattr(self, name) for name in self._positional),
            **{name: (getattr(self, name), default) for name, default in self._keywords.items()},
            bias=("bias" in self.params, True),
            dtype=(self.dtype.name, "float32"),
        )

    def _backward_params(self, dout, cache):
        # Every weighted layer's _backward can skip its input gradient.
        self._backward(dout, cache, input_grad=False)
