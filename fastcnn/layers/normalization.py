"""Batch normalisation layers."""

from __future__ import annotations

import math

import numpy as np

from .._backend import chunking
from .._validation import check_same_dtype, positive_int, real, shape_tuple
from .base import Layer, _describe_args, _float_dtype

__all__ = ["BatchNorm1D", "BatchNorm2D"]


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
