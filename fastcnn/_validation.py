"""Argument validation, normalisation and output-size arithmetic.

This is the one module that decides what a valid call looks like. Both kernel
sets (compiled and :mod:`fastcnn.reference`) trust what it hands them: a kernel
never sees a shape, index or geometry that could make it read or write out of
bounds. Error messages name the argument, what was expected and what came.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import NamedTuple

import numpy as np

__all__ = [
    "MAX_WINDOW_PARAM",
    "Window",
    "as_float_array",
    "given_back",
    "as_indices",
    "check_same_dtype",
    "check_nchw",
    "integer",
    "positive_int",
    "real",
    "flag",
    "pair",
    "shape_tuple",
    "input_shape_4d",
    "conv_window",
    "pool_window",
    "col2im_window",
    "conv_padding",
    "spatial_size",
    "choice",
    "check_param_shape",
]

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Largest kernel size, stride, padding, dilation or divisor accepted. No real
#: input comes near it, and it keeps every index the compiled kernels compute
#: (sums and products of these with array extents) far inside int64.
MAX_WINDOW_PARAM = 2**31 - 1


class Window(NamedTuple):
    """Sliding-window geometry shared by every kernel.

    ``ph`` and ``pw`` are the top/left padding; cells outside the input are
    zero (im2col) or skipped (pools). ``oh`` and ``ow`` are the output size.
    """

    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    oh: int
    ow: int

    @property
    def params(self) -> tuple[int, ...]:
        """The kernel arguments ``(kh, kw, sh, sw, ph, pw, dh, dw)``."""
        return self[:8]


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of dtype {x.dtype} and shape {x.shape}"
    return f"{type(x).__name__} {x!r}"


def as_float_array(x, name: str) -> np.ndarray:
    """Return `x` as a C-contiguous float32/float64 array in native byte order.

    Views with any strides and read-only arrays are accepted; the result is
    a copy only when the layout requires one, and it is never written to by
    fastcnn (so the caller's data cannot change). Otherwise it is a new view
    of the caller's data, whose shape and strides are fastcnn's own: another
    thread that assigns the caller's array a new ``shape`` cannot change
    what was validated. (Another thread can still change the values; the
    kernels use floats as data only, never to address memory, so that gives
    wrong numbers but never an access out of bounds.)

    Raises
    ------
    TypeError
        If the dtype is not float32 or float64 (float16, integers, bools,
        complex and objects are rejected rather than silently converted).
    """
    # Most calls pass arrays that need nothing (a layer's output feeds the
    # next layer): hand them back without np.require's generic checks.
    if type(x) is np.ndarray and x.dtype in SUPPORTED_DTYPES:
        flags = x.flags
        if flags.c_contiguous and flags.aligned:
            return x.view()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a float32 or float64 array, got {_describe(x)}") from exc
    dtype = arr.dtype
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        raise TypeError(
            f"{name} must have dtype float32 or float64, got {dtype} "
            f"(convert explicitly, e.g. {name}.astype(np.float32))"
        )
    if not dtype.isnative:
        dtype = dtype.newbyteorder("=")
    # Aligned too: the kernels dereference typed pointers.
    result = np.require(arr, dtype=dtype, requirements=("C", "A"))
    return result.view() if result is x else result


def given_back(result, x: np.ndarray, given):
    """`given` itself where `result` is `x` and `x` is the view of `given`
    that :func:`as_float_array` returned; else `result`.

    So an operation that hands its input back unchanged (an identity layer)
    gives the caller's own array, not fastcnn's private view of it.
    """
    if result is x and isinstance(given, np.ndarray) and x.base is not None:
        if x.base is (given if given.base is None else given.base):
            return given
    return result


def check_same_dtype(**arrays: np.ndarray) -> np.dtype:
    """Raise TypeError unless all arrays share one dtype; return it."""
    items = [(k, v) for k, v in arrays.items() if v is not None]
    first_name, first = items[0]
    for other_name, other in items[1:]:
        if other.dtype != first.dtype:
            raise TypeError(
                f"{first_name} and {other_name} must have the same dtype, got "
                f"{first_name}.dtype={first.dtype} and {other_name}.dtype={other.dtype} "
                "(fastcnn never promotes silently)"
            )
    return first.dtype


def check_nchw(x: np.ndarray, name: str) -> None:
    """Require a 4-D ``(N, C, H, W)`` array with C, H, W >= 1."""
    if x.ndim != 4:
        hint = f" (for a single image use {name}[None])" if x.ndim == 3 else ""
        raise ValueError(
            f"{name} must be a 4-D array (N, C, H, W), got {x.ndim}-D with shape {x.shape}{hint}"
        )
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one channel, got shape {x.shape}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name} must have non-empty spatial dims, got shape {x.shape}")


def integer(value, name: str, what: str = "an int") -> int:
    """Return `value` as a Python int.

    Python and NumPy integers and 0-d integer arrays are accepted; bools,
    floats (even integral ones), strings and everything else raise TypeError.
    """
    if type(value) is int:  # the common case, first (a bool's type is bool)
        return value
    if not isinstance(value, (bool, np.bool_)):
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iu":
            return int(value)
        if isinstance(value, numbers.Integral):
            return operator.index(value)
    raise TypeError(f"{name} must be {what}, got {_describe(value)}")


def positive_int(value, name: str, maximum: int | None = None) -> int:
    """Return `value` as an int in ``[1, maximum]`` (TypeError, ValueError otherwise)."""
    result = integer(value, name, "a positive int")
    if result < 1 or (maximum is not None and result > maximum):
        bound = "a positive int" if maximum is None else f"an int in [1, {maximum}]"
        raise ValueError(f"{name} must be {bound}, got {result}")
    return result


def real(value, name: str, low=None, high=None, *, low_open=False, high_open=False) -> float:
    """Return `value` as a float, checking it is a real number in the given interval."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    value = float(value)
    too_low = low is not None and (value < low or (low_open and value == low))
    too_high = high is not None and (value > high or (high_open and value == high))
    if math.isnan(value) or too_low or too_high:
        left = "-inf" if low is None else low
        right = "inf" if high is None else high
        interval = (
            f"{'(' if low_open or low is None else '['}{left}, "
            f"{right}{')' if high_open or high is None else ']'}"
        )
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def flag(value, name: str) -> bool:
    """Require a bool (``True``/``False``, NumPy bools included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_describe(value)}")
    return bool(value)


def pair(value, name: str, minimum: int = 1, maximum: int = MAX_WINDOW_PARAM) -> tuple[int, int]:
    """Normalise an int or a pair of ints to ``(h, w)``, each in ``[minimum, maximum]``."""
    what = "an int or a pair of ints"
    if isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray) and value.ndim > 0):
        if len(value) != 2:
            raise ValueError(f"{name} must be {what}, got {value!r}")
        result = (integer(value[0], name, what), integer(value[1], name, what))
    else:
        v = integer(value, name, what)
        result = (v, v)
    if min(result) < minimum:
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    if max(result) > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")
    return result


def shape_tuple(shape, name: str = "input_shape") -> tuple[int, ...]:
    """Validate a user-given shape: a sequence of non-negative ints."""
    try:
        result = tuple(integer(v, name, "a tuple of ints") for v in shape)
    except TypeError as exc:  # not iterable, or an element is not an int
        raise TypeError(f"{name} must be a tuple of ints, got {shape!r}") from exc
    if any(v < 0 for v in result):
        raise ValueError(f"{name} must be non-negative ints, got {shape!r}")
    return result


def _pool_extent(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Output length along one axis, as PyTorch's pooling_output_shape."""
    span = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    if span < 0:
        return 0
    out = span // s + 1
    # The last window must start inside the input or the left padding.
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _check_windows_hit_input(size: int, k: int, s: int, p: int, d: int, out: int, axis: str):
    """A dilated window can fall entirely into padding; such a max has no input.

    Only a window that starts in the left padding can (the last window always
    starts inside the input), and only if the dilation exceeds the input: its
    first tap at or after 0 is at ``(-start) mod d``, and ``p <= k // 2``
    guarantees that tap exists. With ``d > size`` a non-empty output forces
    ``k <= 2``, so this loop runs at most once.
    """
    if d <= size:
        return
    for o in range(min(out, -(-p // s))):
        if (o * s - p) % d >= size:
            raise ValueError(
                f"pooling window {o} along {axis} covers no input cell (input {axis}={size}, "
                f"kernel_size={k}, stride={s}, padding={p}, dilation={d}); reduce padding or dilation"
            )


def pool_window(shape, kernel_size, stride, padding, dilation, ceil_mode) -> Window:
    """Validate pooling arguments for an input of `shape` and return the window.

    `stride=None` means `kernel_size`. Padding must be at most half the kernel
    (as PyTorch 2.x) and the output must be non-empty.
    """
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride")
    ph, pw = pair(padding, "padding", minimum=0)
    dh, dw = pair(dilation, "dilation")
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(
            f"padding must be at most half of kernel_size, got padding={(ph, pw)} "
            f"for kernel_size={(kh, kw)}"
        )
    _, _, h, w = shape
    ceil_mode = flag(ceil_mode, "ceil_mode")
    oh = _pool_extent(h, kh, sh, ph, dh, ceil_mode)
    ow = _pool_extent(w, kw, sw, pw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"output would be empty: input (H, W)={(h, w)} is too small for kernel_size={(kh, kw)}, "
            f"stride={(sh, sw)}, padding={(ph, pw)}, dilation={(dh, dw)}"
        )
    _check_windows_hit_input(h, kh, sh, ph, dh, oh, "H")
    _check_windows_hit_input(w, kw, sw, pw, dw, ow, "W")
    return Window(kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)


def _conv_extent(size: int, k: int, s: int, p_total: int, d: int) -> int:
    span = size + p_total - d * (k - 1) - 1
    return span // s + 1 if span >= 0 else 0


def conv_padding(padding, kernel_hw, stride_hw, dilation_hw) -> tuple[int, int, int, int]:
    """Resolve conv padding to ``(top, left, bottom, right)``.

    Accepts an int, a pair, ``"valid"`` or ``"same"``. ``"same"`` needs
    stride 1 and, for an even extent, puts the extra cell at the bottom/right
    (as PyTorch does).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride_hw != (1, 1):
                raise ValueError(f"padding='same' requires stride=1, got stride={stride_hw}")
            pads = []
            for k, d in zip(kernel_hw, dilation_hw):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            (t, b), (l, r) = pads
            return (t, l, b, r)
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    ph, pw = pair(padding, "padding", minimum=0)
    return (ph, pw, ph, pw)


def conv_window(shape, kernel_size, stride, padding, dilation) -> Window:
    """Validate im2col/conv arguments for an input of `shape`; return the window."""
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride, "stride")
    dh, dw = pair(dilation, "dilation")
    top, left, bottom, right = conv_padding(padding, (kh, kw), (sh, sw), (dh, dw))
    _, _, h, w = shape
    oh = _conv_extent(h, kh, sh, top + bottom, dh)
    ow = _conv_extent(w, kw, sw, left + right, dw)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"output would be empty: input (H, W)={(h, w)} is smaller than the dilated "
            f"kernel_size={(kh, kw)} (dilation={(dh, dw)}) plus padding={padding!r}"
        )
    return Window(kh, kw, sh, sw, top, left, dh, dw, oh, ow)


def col2im_window(cols_shape, output_size, kernel_size, stride, padding, dilation):
    """Validate col2im arguments; return ``(C, H, W, window)``."""
    if len(cols_shape) != 3:
        raise ValueError(
            f"cols must be a 3-D array (N, C*kh*kw, L), got {len(cols_shape)}-D with shape "
            f"{tuple(cols_shape)}"
        )
    h, w = pair(output_size, "output_size")
    kh, kw = pair(kernel_size, "kernel_size")
    n, rows, length = cols_shape
    if rows == 0 or rows % (kh * kw):
        raise ValueError(
            f"cols.shape[1] must be a positive multiple of kh*kw={kh * kw}, got {rows}"
        )
    c = rows // (kh * kw)
    win = conv_window((n, c, h, w), (kh, kw), stride, padding, dilation)
    if length != win.oh * win.ow:
        raise ValueError(
            f"cols.shape[2] must be the number of windows {win.oh}*{win.ow}={win.oh * win.ow} "
            f"for output_size={(h, w)}, got {length}"
        )
    return c, h, w, win


def as_indices(indices, name: str = "indices") -> np.ndarray:
    """Return integer `indices` as a C-contiguous int64 array (TypeError otherwise).

    Shape and strides are the result's own, as with :func:`as_float_array`,
    but the values may still be the caller's, and another thread can change
    them after they were validated: a compiled kernel reads each index once
    and checks it where it uses it (copying them here would cost more than
    that check).
    """
    arr = np.asarray(indices)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got {arr.dtype}")
    result = np.require(arr, dtype=np.int64, requirements=("C", "A"))
    return result.view() if result is indices else result


def input_shape_4d(input_shape, name: str = "input_shape") -> tuple[int, int, int, int]:
    """Validate a user-given ``(N, C, H, W)`` shape."""
    shape = shape_tuple(input_shape, name)
    if len(shape) != 4:
        raise ValueError(f"{name} must be 4 non-negative ints (N, C, H, W), got {input_shape!r}")
    if min(shape[1:]) == 0:
        raise ValueError(f"{name} must have C, H, W >= 1, got {shape}")
    return shape


def spatial_size(value, name: str, allow_none: bool = False, maximum: int | None = None) -> tuple:
    """Normalise an int or a pair to ``(h, w)`` of positive ints (at most `maximum`);
    with `allow_none`, either entry (or the whole value) may be None ("keep the
    input's size")."""
    if allow_none and value is None:
        return (None, None)
    what = "an int or a pair of ints" + (" (or None)" if allow_none else "")
    if isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray) and value.ndim > 0):
        if len(value) != 2:
            raise ValueError(f"{name} must be {what}, got {value!r}")
        items = tuple(value)
    else:
        items = (value, value)
    result = tuple(
        None if allow_none and item is None else integer(item, name, what) for item in items
    )
    if any(item is not None and item < 1 for item in result):
        raise ValueError(f"{name} must be positive, got {value!r}")
    if maximum is not None and any(item is not None and item > maximum for item in result):
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")
    return result


def choice(value, name: str, choices) -> str:
    """Require `value` to be one of the strings `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
        )
    return value


def check_param_shape(array, name: str, shape: tuple) -> None:
    """Require an affine parameter (weight, bias) of exactly `shape`."""
    if array is not None and array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
