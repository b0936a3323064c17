"""Result arrays that a layer reuses from one call to the next.

A training step makes the same large arrays every time: each layer's
output, the gradient of its input, its partial weight gradients. Freshly
allocated, each costs page faults as the kernel first writes it (the C
library hands large blocks back to the system and maps new ones), which
was a tenth of a small network's step. So every layer owns a
:class:`BufferPool`; while the layer computes, it is the calling thread's
current pool (``with pool:``), and the functional ops take their results
from it through :func:`empty`.

An array is handed out again only when nothing but the pool refers to it:
no variable, cache, view or exported buffer of it is alive anywhere. Reuse
therefore never changes a value that anyone can still read. A pool keeps at
most :data:`MOST_ARRAYS` arrays of one shape and dtype (two generations of a
layer's arrays: the last call's, which the next layer's cache may still
hold, and the one before; Dropout makes two of one shape per call), and only
those of its :data:`MOST_SHAPES` most recently used shapes.

Outside a pool (the public functional API called directly), :func:`empty`
is :func:`numpy.empty`.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

__all__ = ["BufferPool", "empty", "empty_like"]

#: Smaller arrays come quickly from NumPy's and the C library's own caches.
MIN_BYTES = 1 << 16
#: The (shape, dtype) keys a pool keeps arrays for, most recently used last.
MOST_SHAPES = 8
#: The arrays a pool keeps of one key (the oldest leave the pool first).
MOST_ARRAYS = 4


def _refcounts(arrays) -> list[int]:
    counts = []
    for a in arrays:
        counts.append(sys.getrefcount(a))
    return counts


# The reference count of an array held by a pool's list alone, as seen from
# a loop like _refcounts' (measured, as it depends on the interpreter).
_FREE = _refcounts([np.empty(0)])[0]
# A free-threaded interpreter counts references lazily: reuse cannot be proved safe.
_COUNTS_EXACT = getattr(sys, "_is_gil_enabled", lambda: True)()

_local = threading.local()


class BufferPool:
    """A layer's reusable result arrays (see the module docstring).

    ``with pool:`` makes it the current pool of the calling thread until the
    block ends (blocks nest: an inner layer's pool is current inside it).
    """

    __slots__ = ("_arrays", "_lock")

    def __init__(self) -> None:
        self._arrays: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def __reduce__(self):
        # a copied or pickled layer starts with an empty pool
        return BufferPool, ()

    def __enter__(self) -> BufferPool:
        stack = _local.__dict__.setdefault("stack", [])
        stack.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _local.stack.pop()

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised C-contiguous array: one of this pool's that nothing
        else refers to any more, or a new one that the pool keeps."""
        dtype = np.dtype(dtype)
        if not _COUNTS_EXACT or math.prod(shape) * dtype.itemsize < MIN_BYTES:
            return np.empty(shape, dtype)
        key = (shape, dtype)
        with self._lock:
            arrays = self._arrays.pop(key, [])
            self._arrays[key] = arrays  # now the most recently used
            for i, count in enumerate(_refcounts(arrays)):
                a = arrays[i]
                # the owner of an array it dropped may have changed it in place
                if (count == _FREE and a.shape == shape and a.dtype == dtype
                        and a.flags.c_contiguous and a.flags.writeable):
                    return a
            a = np.empty(shape, dtype)
            arrays.append(a)
            del arrays[:-MOST_ARRAYS]
            if len(self._arrays) > MOST_SHAPES:
                del self._arrays[next(iter(self._arrays))]
            return a

    def clear(self) -> None:
        """Drop every kept array (those still in use elsewhere live on there)."""
        with self._lock:
            self._arrays.clear()


def empty(shape, dtype) -> np.ndarray:
    """``numpy.empty(shape, dtype)``, from the calling thread's current pool if any."""
    stack = getattr(_local, "stack", None)
    if not stack:
        return np.empty(shape, dtype)
    return stack[-1].empty(tuple(shape) if isinstance(shape, (tuple, list)) else (shape,), dtype)


def empty_like(a: np.ndarray) -> np.ndarray:
    """:func:`empty` of `a`'s shape and dtype (C order)."""
    return empty(a.shape, a.dtype)
