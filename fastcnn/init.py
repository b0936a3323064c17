"""Weight initialisers with the arithmetic of ``torch.nn.init``.

Each function fills a NumPy float array in place and returns it. Random ones
take `rng` (a ``numpy.random.Generator``, a seed, or None for fresh OS
entropy); the numbers drawn differ from PyTorch's, their distribution does
not. Fans follow PyTorch: for an array of shape ``(out, in, *kernel)``,
``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``, so a
Dense weight ``(out_features, in_features)`` and a Conv2D weight
``(F, C/groups, kh, kw)`` give the fans PyTorch gives.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._validation import SUPPORTED_DTYPES, real

__all__ = [
    "calculate_gain",
    "uniform_",
    "normal_",
    "constant_",
    "zeros_",
    "ones_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
]

_LINEAR = (
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "sigmoid",
)


def calculate_gain(nonlinearity, param=None) -> float:
    """The recommended gain for `nonlinearity`, as ``torch.nn.init.calculate_gain``.

    Parameters
    ----------
    nonlinearity : str
        ``"linear"``, a convolution name (``"conv2d"``, ``"conv_transpose2d"``,
        ...) or ``"sigmoid"``: 1; ``"tanh"``: 5/3; ``"relu"``: sqrt(2);
        ``"leaky_relu"``: ``sqrt(2 / (1 + param**2))``; ``"selu"``: 3/4.
    param : float, optional
        The negative slope of ``"leaky_relu"`` (default 0.01).

    Returns
    -------
    float
    """
    if nonlinearity in _LINEAR:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else real(param, "param")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(
        "nonlinearity must be 'linear', 'conv1d', 'conv2d', 'conv3d', 'conv_transpose1d', "
        "'conv_transpose2d', 'conv_transpose3d', 'sigmoid', 'tanh', 'relu', 'leaky_relu' or "
        f"'selu', got {nonlinearity!r}"
    )


def _target(array) -> np.ndarray:
    """Check that `array` is a writable float32/float64 ndarray (it is filled in place)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array must be a NumPy array (filled in place), got {type(array).__name__}")
    if array.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"array must have dtype float32 or float64, got {array.dtype}")
    if not array.flags.writeable:
        raise ValueError("array must be writable: it is filled in place, got a read-only array")
    return array


def _fans(array: np.ndarray) -> tuple[int, int]:
    if array.ndim < 2:
        raise ValueError(
            "fan in and fan out need an array of at least 2 dimensions (out, in, ...), "
            f"got shape {array.shape}"
        )
    receptive = math.prod(array.shape[2:])
    return array.shape[1] * receptive, array.shape[0] * receptive


def _fan(array: np.ndarray, mode) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(array)
    return fan_in if mode == "fan_in" else fan_out


def _fill(array: np.ndarray, values) -> np.ndarray:
    array[...] = values
    return array


def uniform_(array, a=0.0, b=1.0, rng=None) -> np.ndarray:
    """Fill `array` with draws from U(a, b), in place; return it.

    Parameters
    ----------
    array : ndarray of float32 or float64
    a, b : float
        ``a <= b``.
    rng : numpy.random.Generator, int or None
    """
    array = _target(array)
    a, b = real(a, "a"), real(b, "b")
    if a > b:
        raise ValueError(f"a must be at most b, got a={a} and b={b}")
    return _fill(array, np.random.default_rng(rng).uniform(a, b, array.shape))


def normal_(array, mean=0.0, std=1.0, rng=None) -> np.ndarray:
    """Fill `array` with draws from N(mean, std**2), in place; return it.

    Parameters
    ----------
    array : ndarray of float32 or float64
    mean : float
    std : float
        ``>= 0``.
    rng : numpy.random.Generator, int or None
    """
    array = _target(array)
    mean, std = real(mean, "mean"), real(std, "std", low=0)
    return _fill(array, np.random.default_rng(rng).normal(mean, std, array.shape))


def constant_(array, val) -> np.ndarray:
    """Fill `array` with `val` (a real number), in place; return it."""
    array = _target(array)
    if isinstance(val, (bool, np.bool_)) or not isinstance(val, numbers.Real):
        raise TypeError(f"val must be a real number, got {type(val).__name__}")
    return _fill(array, val)


def zeros_(array) -> np.ndarray:
    """Fill `array` with 0, in place; return it."""
    return _fill(_target(array), 0)


def ones_(array) -> np.ndarray:
    """Fill `array` with 1, in place; return it."""
    return _fill(_target(array), 1)


def _fill_random(array: np.ndarray, std: float, rng, distribution: str) -> np.ndarray:
    """Fill `array` with draws of standard deviation `std` and mean 0: from
    ``U(-sqrt(3) * std, sqrt(3) * std)`` (``"uniform"``) or ``N(0, std**2)``."""
    rng = np.random.default_rng(rng)
    if distribution == "uniform":
        bound = math.sqrt(3.0) * std
        return _fill(array, rng.uniform(-bound, bound, array.shape))
    return _fill(array, rng.normal(0.0, std, array.shape))


def _xavier(array, gain, rng, distribution: str) -> np.ndarray:
    array = _target(array)
    fan_in, fan_out = _fans(array)
    std = real(gain, "gain") * math.sqrt(2.0 / float(fan_in + fan_out))
    return _fill_random(array, std, rng, distribution)


def xavier_uniform_(array, gain=1.0, rng=None) -> np.ndarray:
    """Glorot uniform: U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``, in place.

    Parameters
    ----------
    array : ndarray of float32 or float64, at least 2-D
    gain : float, default 1.0
    rng : numpy.random.Generator, int or None
    """
    return _xavier(array, gain, rng, "uniform")


def xavier_normal_(array, gain=1.0, rng=None) -> np.ndarray:
    """Glorot normal: N(0, std**2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``, in place.

    Parameters
    ----------
    array, gain, rng
        As for :func:`xavier_uniform_`.
    """
    return _xavier(array, gain, rng, "normal")


def _kaiming(array, a, mode, nonlinearity, rng, distribution: str) -> np.ndarray:
    array = _target(array)
    if array.size == 0:
        return array
    fan = _fan(array, mode)
    std = calculate_gain(nonlinearity, real(a, "a")) / math.sqrt(fan)
    return _fill_random(array, std, rng, distribution)


def kaiming_uniform_(
    array, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None
) -> np.ndarray:
    """He uniform: U(-b, b) with ``b = gain * sqrt(3 / fan)``, in place.

    Parameters
    ----------
    array : ndarray of float32 or float64, at least 2-D
        An empty array is left as it is.
    a : float, default 0
        Negative slope of the leaky ReLU that follows (``nonlinearity="leaky_relu"``);
        ``a = sqrt(5)`` gives PyTorch's default Conv2D/Dense init,
        ``b = 1/sqrt(fan_in)``.
    mode : {"fan_in", "fan_out"}, default "fan_in"
        Preserve the variance of the forward (fan_in) or backward (fan_out) pass.
    nonlinearity : str, default "leaky_relu"
        See :func:`calculate_gain`.
    rng : numpy.random.Generator, int or None
    """
    return _kaiming(array, a, mode, nonlinearity, rng, "uniform")


def kaiming_normal_(
    array, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None
) -> np.ndarray:
    """He normal: N(0, std**2) with ``std = gain / sqrt(fan)``, in place.

    Parameters
    ----------
    array, a, mode, nonlinearity, rng
        As for :func:`kaiming_uniform_`.
    """
    return _kaiming(array, a, mode, nonlinearity, rng, "normal")
