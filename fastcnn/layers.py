"""Stateful layers: parameters, gradients and the cache between forward and backward.

Every layer follows one protocol (:class:`Layer`): ``forward(x, training=True)``
(also ``layer(x)``) returns the output and remembers what ``backward`` needs;
``backward(dout)`` returns the gradient with respect to the input and writes
the parameter gradients into ``grads`` in place. ``params`` and ``grads`` have
the same keys (PyTorch's names: ``weight``, ``bias``) and their arrays are
never re-bound, so optimizers and :meth:`fastcnn.Sequential.load` can hold on
to them. Non-trained saved arrays (BatchNorm's running statistics) live in
``state``.

Convolution and pooling call :mod:`fastcnn.functional`, which validates the
geometry; the element-wise math lives here. Semantics follow ``torch.nn``.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
from scipy.special import expit

from . import _backend
from . import functional as F
from ._backend import chunking, one_blas_thread
from ._validation import (
    SUPPORTED_DTYPES,
    Window,
    as_float_array,
    check_nchw,
    check_same_dtype,
    conv_padding,
    conv_window,
    flag,
    input_shape_4d,
    integer,
    pair,
    pool_window,
    positive_int,
    real,
    shape_tuple,
)

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
]


# ---------------------------------------------------------------------------


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


def _sample_chunks(n: int, sample_bytes: int) -> list[slice]:
    """Slices of ``range(n)`` whose samples take about a cache's worth of bytes."""
    size, count = chunking(n, sample_bytes)
    return [slice(i * size, (i + 1) * size) for i in range(count)]


def _per_channel(values: np.ndarray, length: int) -> np.ndarray:
    """``(C,)`` values repeated into a ``(C, length)`` plane.

    NumPy combines an ``(N, C, length)`` array with a whole plane about twice
    as fast as with a broadcast ``(C, 1)`` column.
    """
    return np.repeat(values, length).reshape(-1, length)


# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Layers with weights.


class Conv2D(Layer):
    """2-D cross-correlation, as ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
        C and F; both divisible by `groups`.
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (int, int), ``"valid"`` or ``"same"``
        ``"same"`` needs stride 1.
    groups : int, default 1
        ``groups == in_channels`` gives a depthwise convolution.
    bias : bool, default True
    dtype : np.float32 or np.float64
    rng : numpy.random.Generator, int or None
        Source of the initial weights (``None``: fresh OS entropy).

    Attributes
    ----------
    params : dict
        ``weight`` of shape ``(F, C // groups, kh, kw)`` and, with `bias`,
        ``bias`` of shape ``(F,)``. Both are initialised as PyTorch does:
        uniform in ``+-1/sqrt(fan_in)``, ``fan_in = C // groups * kh * kw``.

    Notes
    -----
    Input ``(N, C, H, W)``, output ``(N, F, oh, ow)``.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        dtype=np.float32,
        rng=None,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.groups = positive_int(groups, "groups")
        for name in ("in_channels", "out_channels"):
            channels = getattr(self, name)
            if channels % self.groups:
                raise ValueError(
                    f"{name} must be divisible by groups={self.groups}, got {channels}"
                )
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        conv_padding(padding, self.kernel_size, self.stride, self.dilation)  # validates
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding", minimum=0)
        self.dtype = _float_dtype(dtype)
        rng = np.random.default_rng(rng)
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        # Kaiming-uniform with a=sqrt(5) reduces to a bound of 1/sqrt(fan_in).
        bound = 1.0 / math.sqrt(fan_in)
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        self._add_param("weight", _uniform(rng, bound, shape, self.dtype))
        if flag(bias, "bias"):
            self._add_param("bias", _uniform(rng, bound, (self.out_channels,), self.dtype))

    def _check_window(self, x: np.ndarray) -> Window:
        """Check that `x` fits the layer and return the window of its convolution."""
        check_nchw(x, "x")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have in_channels={self.in_channels} channels, got shape {x.shape}"
            )
        check_same_dtype(x=x, weight=self.params["weight"])
        return self._kept_window(
            conv_window, x.shape, self.kernel_size, self.stride, self.padding, self.dilation
        )

    def _forward(self, x, training):
        win = self._check_window(x)
        out = F._conv2d(x, self.params["weight"], self.params.get("bias"), win, self.groups)
        return out, (x, win)

    def _backward(self, dout, cache):
        x, win = cache
        dx, dweight, dbias = F._conv2d_backward(dout, x, self.params["weight"], win, self.groups)
        self.grads["weight"][...] = dweight
        if "bias" in self.grads:
            self.grads["bias"][...] = dbias
        return dx

    def output_shape(self, input_shape):
        n, c, h, w = input_shape_4d(input_shape)
        if c != self.in_channels:
            raise ValueError(f"input_shape[1] must be in_channels={self.in_channels}, got {c}")
        win = conv_window((n, c, h, w), self.kernel_size, self.stride, self.padding, self.dilation)
        return (n, self.out_channels, win.oh, win.ow)

    def _extra_repr(self):
        return _describe_args(
            (self.in_channels, self.out_channels),
            kernel_size=(self.kernel_size, None),
            stride=(self.stride, (1, 1)),
            padding=(self.padding, (0, 0)),
            dilation=(self.dilation, (1, 1)),
            groups=(self.groups, 1),
            bias=("bias" in self.params, True),
            dtype=(self.dtype.name, "float32"),
        )


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

    def _blas(self, n: int):
        """A context for the GEMMs of a batch of `n`: BLAS on one thread unless they are large.

        NumPy's BLAS splits even a GEMM of a few microseconds over all its
        threads (see :data:`fastcnn._backend.PARALLEL_MACS`).
        """
        small = n * self.in_features * self.out_features < _backend.PARALLEL_MACS
        return one_blas_thread() if small else contextlib.nullcontext()

    def _forward(self, x, training):
        self._check_input_shape(x.shape)
        check_same_dtype(x=x, weight=self.params["weight"])
        with self._blas(len(x)):
            out = x @ self.params["weight"].T
        if "bias" in self.params:
            out += self.params["bias"]
        return out, x

    def _backward(self, dout, x):
        with self._blas(len(x)):
            self.grads["weight"][...] = dout.T @ x
            dx = dout @ self.params["weight"]
        if "bias" in self.grads:
            self.grads["bias"][...] = dout.sum(axis=0)
        return dx

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
        # (N, C, L): the statistics are per channel over N and L. The passes
        # go chunk by chunk of samples, each chunk's temporaries in cache;
        # einsum sums several times faster than ndarray.mean. (The passes
        # are memory-bound NumPy calls: a second thread gains little and
        # costs GIL hand-offs, so they run on the caller's thread.)
        n, length = x.shape[0], math.prod(x.shape[2:])
        x3 = x.reshape(n, self.num_features, length)
        parts = _sample_chunks(n, 2 * x3[:1].nbytes)  # x, out
        out = np.empty_like(x3)
        samples = n * length
        if training and samples < 2:
            raise ValueError(
                "training-mode BatchNorm needs more than 1 value per channel, "
                f"got x of shape {x.shape}; use training=False or a larger batch"
            )
        if n == 0:  # nothing to normalise; each (C, L) plane below would cost a sample
            return out.reshape(x.shape), None
        if training:
            mean = sum(np.einsum("ncl->c", x3[part]) for part in parts) / samples
            plane = _per_channel(mean, length)
            var = 0
            for part in parts:
                centered = np.subtract(x3[part], plane, out=out[part])
                var = var + np.einsum("ncl,ncl->c", centered, centered)
            var = var / samples
            momentum = self.momentum
            running_mean, running_var = self.state["running_mean"], self.state["running_var"]
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            # The running variance is the unbiased estimate, as in PyTorch.
            running_var += momentum * var * (samples / (samples - 1))
        else:
            mean, var = self.state["running_mean"].copy(), self.state["running_var"]
            plane = _per_channel(mean, length)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        scale = _per_channel(self.params["weight"] * inv_std, length)
        shift = _per_channel(self.params["bias"], length)
        # Last chunk first: in training, its x - mean is still in cache.
        for part in reversed(parts):
            y = out[part]
            if not training:  # training left x - mean there
                np.subtract(x3[part], plane, out=y)
            y *= scale
            y += shift
        # x and the mean give x_hat again in the backward: cheaper than storing it.
        return out.reshape(x.shape), (x3, plane, inv_std, training)

    def _backward(self, dout, cache):
        if cache is None:  # an empty batch: the sums over it are 0
            self.grads["weight"][...] = 0
            self.grads["bias"][...] = 0
            return np.empty_like(dout)
        x3, plane, inv_std, training = cache
        n, channels, length = x3.shape
        dout3 = dout.reshape(x3.shape)
        parts = _sample_chunks(n, 4 * x3[:1].nbytes)  # x, dout, dx, x - mean
        centered = np.empty((parts[0].stop if parts else 0, channels, length), x3.dtype)
        # dweight = sum(dout * x_hat), x_hat = (x - mean) * inv_std; dbias = sum(dout).
        dweight = dbias = 0
        for part in parts:
            c = np.subtract(x3[part], plane, out=centered[: len(x3[part])])
            dweight = dweight + np.einsum("ncl,ncl->c", dout3[part], c)
            dbias = dbias + np.einsum("ncl->c", dout3[part])
        dweight = dweight * inv_std
        self.grads["weight"][...] = dweight
        self.grads["bias"][...] = dbias
        scale = self.params["weight"] * inv_std
        # The batch mean and variance depend on x in training: with means per
        # channel, dx = scale * (dout - mean(dout) - x_hat * mean(dout * x_hat)),
        # here as dout * a + (x - mean) * b + c.
        a = _per_channel(scale, length)
        if training:
            samples = n * length
            b = _per_channel(-scale * inv_std * dweight / samples, length)
            c = _per_channel(-scale * dbias / samples, length)
        dx = np.empty_like(dout3)
        # Last chunk first: the loop above left its x - mean in `centered`.
        for i, part in enumerate(reversed(parts)):
            d = np.multiply(dout3[part], a, out=dx[part])
            if training:
                t = centered[: len(d)]
                if i:
                    np.subtract(x3[part], plane, out=t)
                t *= b
                d += t
                d += c
        return dx.reshape(dout.shape)

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


# ---------------------------------------------------------------------------
# Pooling and reshaping.


class _Pool2D(Layer):
    """What max and average pooling share: the window and the output shape.

    Subclasses list their keyword arguments (with defaults) in ``_options``;
    ``_geometry()`` gives them all, ready for the functional op.
    """

    _options: dict = {}
    dilation = (1, 1)  # average pooling has none

    def __init__(self, kernel_size, stride, padding, ceil_mode) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = None if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        self.ceil_mode = flag(ceil_mode, "ceil_mode")

    def _geometry(self) -> dict:
        return dict(
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            ceil_mode=self.ceil_mode,
            **{name: getattr(self, name) for name in self._options},
        )

    def output_shape(self, input_shape):
        shape = input_shape_4d(input_shape)
        win = pool_window(
            shape, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode
        )
        return shape[:2] + (win.oh, win.ow)

    def _extra_repr(self):
        return _describe_args(
            kernel_size=(self.kernel_size, None),
            stride=(self.stride, None),
            padding=(self.padding, (0, 0)),
            ceil_mode=(self.ceil_mode, False),
            **{name: (getattr(self, name), default) for name, default in self._options.items()},
        )


class MaxPool2D(_Pool2D):
    """2-D max pooling, as ``torch.nn.MaxPool2d``.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int, (int, int) or None
        ``None`` means `kernel_size`.
    padding : int or (int, int)
        At most half the kernel; padded cells act as -inf.
    dilation : int or (int, int)
    ceil_mode : bool

    Notes
    -----
    Input ``(N, C, H, W)``, output ``(N, C, oh, ow)``. Ties go to the first
    maximum in the window and NaN propagates; the backward sends each output's
    gradient to exactly one input cell (overlapping windows add up).
    """

    _options = {"dilation": (1, 1)}

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.dilation = pair(dilation, "dilation")

    def _forward(self, x, training):
        check_nchw(x, "x")
        win = self._kept_window(
            pool_window, x.shape, self.kernel_size, self.stride, self.padding, self.dilation,
            self.ceil_mode,
        )
        out, indices = F._max_pool2d(x, win)
        return out, (indices, x.shape)

    def _backward(self, dout, cache):
        # The indices are the forward's own: int64, in range, nothing to check.
        indices, input_shape = cache
        return F._max_pool2d_backward(dout, indices, input_shape)


class AvgPool2D(_Pool2D):
    """2-D average pooling, as ``torch.nn.AvgPool2d``.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int, (int, int) or None
        ``None`` means `kernel_size`.
    padding : int or (int, int)
        At most half the kernel; padded cells are zeros.
    ceil_mode : bool
    count_include_pad : bool
        Whether the padding counts in the divisor.

    Notes
    -----
    Input ``(N, C, H, W)``, output ``(N, C, oh, ow)``.
    """

    _options = {"count_include_pad": True}

    def __init__(
        self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = flag(count_include_pad, "count_include_pad")

    def _forward(self, x, training):
        return F.avg_pool2d(x, **self._geometry()), x.shape

    def _backward(self, dout, input_shape):
        return F.avg_pool2d_backward(dout, input_shape, **self._geometry())


class GlobalAvgPool2D(Layer):
    """Mean over the spatial axes: ``(N, C, H, W)`` -> ``(N, C)``.

    The channel axis is kept and the spatial axes are dropped (as Keras'
    ``GlobalAveragePooling2D``), so the result feeds a :class:`Dense` layer
    directly. Equivalent to ``torch.nn.AdaptiveAvgPool2d(1)`` followed by a
    flatten.
    """

    def _forward(self, x, training):
        check_nchw(x, "x")
        return x.mean(axis=(2, 3)), x.shape

    def _backward(self, dout, input_shape):
        h, w = input_shape[2:]
        dx = np.empty(input_shape, dout.dtype)
        dx[...] = (dout / (h * w))[:, :, None, None]
        return dx

    def output_shape(self, input_shape):
        return input_shape_4d(input_shape)[:2]


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


# ---------------------------------------------------------------------------
# Activations: any shape, same shape out.


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


class Dropout(Layer):
    """Inverted dropout, as ``torch.nn.Dropout``.

    Parameters
    ----------
    p : float, default 0.5
        Probability of DROPPING each element, in ``[0, 1]``. Kept elements are
        scaled by ``1 / (1 - p)`` in training; ``p=1`` drops everything.
    rng : numpy.random.Generator, int or None
        Source of the masks (``None``: fresh OS entropy), kept as ``self.rng``.

    Notes
    -----
    ``training=False`` returns the input unchanged. The backward applies the
    mask of the last forward.
    """

    def __init__(self, p=0.5, rng=None) -> None:
        super().__init__()
        self.p = real(p, "p", low=0, high=1)
        self.rng = np.random.default_rng(rng)

    def _forward(self, x, training):
        if not training:
            return x, None
        # p == 1 keeps nothing; the scale is then irrelevant, avoid 1/0.
        scale = 0.0 if self.p == 1 else 1.0 / (1.0 - self.p)
        mask = (self.rng.random(x.shape) >= self.p) * np.asarray(scale, dtype=x.dtype)
        return x * mask, mask

    def _backward(self, dout, mask):
        return dout if mask is None else dout * mask

    def _extra_repr(self):
        return f"p={self.p}"
