"""Which kernel set runs: the compiled one ("cython") or the NumPy twin ("numpy").

One registry, :data:`KERNEL_NAMES`, pairs every compiled kernel with its twin
in :mod:`fastcnn.reference`; dispatch, the parity tests and ``fastcnn bench``
all walk it. Both sets share one signature; the compiled kernels take one
extra trailing ``num_threads`` argument, which :func:`kernel` supplies.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import warnings

from . import reference

__all__ = [
    "KERNEL_NAMES",
    "BACKENDS",
    "compiled_available",
    "get_backend",
    "set_backend",
    "use_backend",
    "get_num_threads",
    "set_num_threads",
    "kernel",
    "pair_of",
]

KERNEL_NAMES = (
    "im2col",
    "col2im",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
)
BACKENDS = ("cython", "numpy")

try:
    from ._kernels import openmp as _openmp
    from ._kernels import pool as _pool
    from ._kernels import unfold as _unfold
except ImportError as exc:  # a source checkout that was never built
    _openmp = None
    _compiled = {}
    _import_error = exc
else:
    _compiled = {
        "im2col": _unfold.im2col,
        "col2im": _unfold.col2im,
        "max_pool2d": _pool.max_pool2d,
        "max_pool2d_backward": _pool.max_pool2d_backward,
        "avg_pool2d": _pool.avg_pool2d,
        "avg_pool2d_backward": _pool.avg_pool2d_backward,
    }
    _import_error = None


def compiled_available() -> bool:
    """Whether the compiled kernel set was built and imports."""
    return bool(_compiled)


def _check_name(name) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "cython" and not _compiled:
        raise ImportError(
            "the compiled backend is not available (fastcnn._kernels failed to import: "
            f"{_import_error}); reinstall with `pip install .` or use the 'numpy' backend"
        )
    return name


def _initial_backend() -> str:
    requested = os.environ.get("FASTCNN_BACKEND", "").strip().lower()
    if requested:
        return _check_name(requested)
    if _compiled:
        return "cython"
    warnings.warn(
        "fastcnn's compiled kernels are not available "
        f"({_import_error}); falling back to the slow NumPy reference kernels",
        RuntimeWarning,
        stacklevel=3,
    )
    return "numpy"


# set_backend changes the process-wide default; use_backend overrides it in
# the current context only, so that threads and async tasks do not interfere.
_default_backend = _initial_backend()
_context_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fastcnn_backend", default=None
)
_num_threads: int | None = None


def get_backend() -> str:
    """Name of the active kernel set: ``"cython"`` or ``"numpy"``."""
    return _context_backend.get() or _default_backend


def set_backend(name: str) -> None:
    """Make `name` (``"cython"`` or ``"numpy"``) the default kernel set."""
    global _default_backend
    _default_backend = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str):
    """Run the ``with`` block on kernel set `name`, then restore the previous one.

    Examples
    --------
    >>> import fastcnn
    >>> with fastcnn.use_backend("numpy"):
    ...     fastcnn.get_backend()
    'numpy'
    """
    token = _context_backend.set(_check_name(name))
    try:
        yield
    finally:
        _context_backend.reset(token)


def _max_threads() -> int:
    return _openmp.max_threads() if _openmp is not None else 1


def set_num_threads(n: int | None) -> None:
    """Set the number of OpenMP threads the compiled kernels use.

    Parameters
    ----------
    n : int or None
        ``None`` restores the default (OpenMP's, which honours
        ``OMP_NUM_THREADS`` and ``threadpoolctl``). A positive value is used as
        is; a negative value counts back from the default (-1 = all, -2 = all
        but one, never fewer than one). 0 is an error.
    """
    global _num_threads
    if n is None:
        _num_threads = None
        return
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int or None, got {type(n).__name__} {n!r}")
    if n == 0:
        raise ValueError("n must be a non-zero int or None, got 0")
    _num_threads = n


def get_num_threads() -> int:
    """The number of threads the compiled kernels will use for the next call."""
    default = _max_threads()
    if _num_threads is None:
        return default
    if _num_threads < 0:
        return max(1, default + 1 + _num_threads)
    return _num_threads


def pair_of(name: str):
    """``(compiled, reference)`` kernels registered under `name` (compiled may be None)."""
    if name not in KERNEL_NAMES:
        raise ValueError(f"kernel name must be one of {KERNEL_NAMES}, got {name!r}")
    return _compiled.get(name), getattr(reference, name)


def kernel(name: str):
    """The kernel `name` of the active set, with the reference's signature."""
    compiled, twin = pair_of(name)
    if get_backend() == "numpy":
        return twin
    threads = get_num_threads()
    return lambda *args: compiled(*args, threads)


def build_info() -> dict:
    """How the compiled kernels were built (for ``show_config``)."""
    if _openmp is None:
        return {"compiled": False, "error": str(_import_error)}
    simd = ("none", "avx2", "avx512")[_pool._simd_level()]
    return {"compiled": True, "openmp": _openmp.OPENMP, "compiler": _openmp.COMPILER,
            "pool_simd": simd}
