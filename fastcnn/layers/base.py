"""The layer protocol (:class:`Layer`) and the helpers every layer family shares."""

from __future__ import annotations

import numpy as np

from .._validation import SUPPORTED_DTYPES, Window, as_float_array, flag, shape_tuple

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


class Layer:
    """Base class of all layers.

    Subclasses implement ``_forward(x, training) -> (out, cache)`` and
    ``_backward(dout, cache) -> dx``; the base class converts the input with
    :func:`fastcnn._validation.as_float_array`, keeps the cache, and checks
    that ``dout`` matches the output of the last forward.

    Attributes
    ----------
    params : dict of str to ndarray
        Trained parameters. Updated in place, never re-bound.
    grads : dict of str to ndarray
        Gradients of the last :meth:`backward`, same keys, shapes and dtypes as
        `params`, overwritten in place by every backward.
    state : dict of str to ndarray
        Saved arrays that are not trained (e.g. BatchNorm running statistics).

    Notes
    -----
    A layer whose forward draws random numbers keeps its
    ``numpy.random.Generator`` as ``rng``; :func:`fastcnn.gradcheck.gradcheck`
    restores that generator's state before every evaluation.
    """

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}
        self._cache = None
        # Shape and dtype of the last forward's output; None until forward runs.
        self._out_shape: tuple[int, ...] | None = None
        self._out_dtype: np.dtype | None = None
        # The last window computed by _kept_window, and what it was made from.
        self._window_key = self._window = None

    def _kept_window(self, make, shape, *geometry) -> Window:
        """``make(shape, *geometry)``, computed again only when it can change.

        A window depends on the input's spatial size and the geometry only,
        which stay the same from one training step to the next.
        """
        key = (shape[2:], *geometry)
        if key != self._window_key:
            self._window = make(shape, *geometry)
            self._window_key = key
        return self._window

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)

    def forward(self, x, training: bool = True) -> np.ndarray:
        """Compute the layer's output and remember what :meth:`backward` needs.

        Parameters
        ----------
        x : array_like of float32 or float64
            Input; its required shape depends on the layer. Never modified.
        training : bool, default True
            Training mode (batch statistics for BatchNorm, active Dropout) or
            evaluation mode.

        Returns
        -------
        out : ndarray
            Same dtype as `x`; shape given by :meth:`output_shape`.
        """
        x = as_float_array(x, "x")
        out, self._cache = self._forward(x, flag(training, "training"))
        # A ufunc of a 0-d array gives a NumPy scalar: the contract is an ndarray.
        out = np.asarray(out)
        self._out_shape, self._out_dtype = out.shape, out.dtype
        return out

    def __call__(self, x, training: bool = True) -> np.ndarray:
        return self.forward(x, training)

    def backward(self, dout) -> np.ndarray:
        """Back-propagate `dout` through the last forward call.

        Parameters
        ----------
        dout : array_like
            Gradient of the loss with respect to the output of the last
            :meth:`forward`: same shape and dtype as that output.

        Returns
        -------
        dx : ndarray
            Gradient with respect to that forward's input, same shape and dtype.
            Parameter gradients are written into :attr:`grads` in place.

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
        dout = as_float_array(dout, "dout")
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
        return np.asarray(self._backward(dout, self._cache))

    def output_shape(self, input_shape) -> tuple[int, ...]:
        """Shape of the output for an input of shape `input_shape` (element-wise: the same)."""
        return shape_tuple(input_shape)

    @property
    def num_params(self) -> int:
        """Number of trained scalars."""
        return sum(p.size for p in self.params.values())

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._extra_repr()})"

    def _forward(self, x: np.ndarray, training: bool):
        raise NotImplementedError

    def _backward(self, dout: np.ndarray, cache) -> np.ndarray:
        raise NotImplementedError
