"""Which kernel set runs: the compiled one ("cython") or the NumPy twin ("numpy").

One registry, :data:`KERNEL_NAMES`, pairs every compiled kernel with its twin
in :mod:`fastcnn.reference`; dispatch, the parity tests and ``fastcnn bench``
all walk it. Both sets share one signature; the compiled kernels take one
extra trailing ``num_threads`` argument, which :func:`kernel` supplies.

Threads: a compiled kernel called on its own runs :func:`get_num_threads`
OpenMP threads. An op that interleaves kernels with NumPy's BLAS (conv2d and
its backward) instead splits its work into chunks and runs them through
:func:`run_chunks`: that many threads in total, each with a one-thread
kernel and a one-thread BLAS, so that neither thread pool oversubscribes the
cores and the results do not depend on the thread count.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import warnings

import numpy as np

from . import reference
from ._validation import integer

__all__ = [
    "KERNEL_NAMES",
    "BACKENDS",
    "MAX_THREADS",
    "compiled_available",
    "get_backend",
    "set_backend",
    "use_backend",
    "get_num_threads",
    "set_num_threads",
    "default_num_threads",
    "use_num_threads",
    "kernel",
    "pair_of",
    "PARALLEL_BYTES",
    "PARALLEL_MACS",
    "one_blas_thread",
    "chunking",
    "run_chunks",
    "scratch_buffer",
]

#: The registry: every kernel of the reference set, which the compiled set mirrors.
KERNEL_NAMES = tuple(reference.__all__)
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


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_CPUS = _available_cpus()

#: The most threads a kernel call may use: 4 per CPU available to the process.
#: More only slows the kernels down, and an OpenMP runtime that fails to create
#: a thread aborts the process instead of raising.
MAX_THREADS = 4 * _CPUS


def _max_threads() -> int:
    return _openmp.max_threads() if _openmp is not None else 1


def set_num_threads(n: int | None) -> None:
    """Set the number of threads of the compiled kernels and of conv2d.

    The kernels run on an OpenMP team of that size; conv2d and
    conv2d_backward run their chunks of samples on the same team, with
    NumPy's BLAS limited to one thread meanwhile (:func:`run_chunks`), so
    the whole op, BLAS included, uses `n` threads. Small calls use one
    (:data:`PARALLEL_BYTES`, :data:`PARALLEL_MACS`).

    Parameters
    ----------
    n : int or None
        ``None`` restores the default (OpenMP's, which honours
        ``OMP_NUM_THREADS`` and ``threadpoolctl``). A positive value is used as
        is, up to :data:`MAX_THREADS` (4 per available CPU); a negative value
        counts back from the default (-1 = all, -2 = all but one, never fewer
        than one). 0 is an error.
    """
    global _num_threads
    if n is not None:
        n = integer(n, "n", "an int or None")
        if n == 0:
            raise ValueError("n must be a non-zero int or None, got 0")
        if n > MAX_THREADS:
            raise ValueError(
                f"n must be at most {MAX_THREADS} (4 threads per CPU available), got {n}"
            )
    _num_threads = n


def get_num_threads() -> int:
    """The number of threads the compiled kernels and conv2d will use for the next call.

    Never more than :data:`MAX_THREADS`, whatever ``OMP_NUM_THREADS`` says.
    """
    default = default_num_threads()
    if _num_threads is None:
        return default
    if _num_threads < 0:
        return max(1, default + 1 + _num_threads)
    return _num_threads


def default_num_threads() -> int:
    """The thread count of ``set_num_threads(None)``: OpenMP's default, at most :data:`MAX_THREADS`."""
    return min(_max_threads(), MAX_THREADS)


@contextlib.contextmanager
def use_num_threads(n: int | None):
    """Run the ``with`` block after ``set_num_threads(n)``, then restore the previous setting.

    Process-wide, as :func:`set_num_threads` (unlike :func:`use_backend`,
    which is local to the context).
    """
    saved = _num_threads
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(saved)


def pair_of(name: str):
    """``(compiled, reference)`` kernels registered under `name` (compiled may be None)."""
    if name not in KERNEL_NAMES:
        raise ValueError(f"kernel name must be one of {KERNEL_NAMES}, got {name!r}")
    return _compiled.get(name), getattr(reference, name)


# Set to 1 for the duration of run_chunks, in its threads' contexts.
_chunk_thread: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "fastcnn_chunk_thread", default=None
)


# Work too small to pay for a second thread runs on the caller's alone. On
# cores shared with other processes, a thread of the team that slept or was
# preempted joins a parallel region (or takes the GIL back) a scheduler slice
# late, milliseconds: measured, the demo's 2-thread training step took 47 ms
# instead of 5 (digits) and 200 instead of 53 (mnist) with its kernels,
# conv2d chunks and Dense GEMMs on two threads. Large ops still gain.

#: A compiled kernel whose arrays hold fewer bytes runs on one thread: about
#: a millisecond of work (the mnist demo's largest pooling, 11 MB, stays
#: serial; the resnet benchmark's, 32 MB and more, go parallel).
PARALLEL_BYTES = 16 << 20

#: Chunks of conv2d (and Dense GEMMs) of fewer multiply-adds run on one
#: thread: about a millisecond of GEMM. Below that the GIL hand-offs between
#: a chunk's NumPy calls cost a second thread more than it gains.
PARALLEL_MACS = 32_000_000


def kernel(name: str):
    """The kernel `name` of the active set, with the reference's signature.

    A compiled kernel runs :func:`get_num_threads` OpenMP threads if its
    arrays hold at least :data:`PARALLEL_BYTES`, else one; inside
    :func:`run_chunks` one (whose threads are the op's parallelism).
    Results do not depend on the thread count.
    """
    compiled, twin = pair_of(name)
    if get_backend() == "numpy":
        return twin
    threads = _chunk_thread.get() or get_num_threads()
    if threads == 1:
        return lambda *args: compiled(*args, 1)

    def call(*args):
        nbytes = sum(a.nbytes for a in args if isinstance(a, np.ndarray))
        return compiled(*args, threads if nbytes >= PARALLEL_BYTES else 1)

    return call


# threadpoolctl finds the BLAS libraries once: a limit then costs microseconds
# instead of the ~0.1 ms of threadpool_limits, which looks them up every time.
_blas_controller = None


def one_blas_thread():
    """A context limiting NumPy's BLAS to one thread (threadpoolctl's rules).

    OpenBLAS's pthreads pool is process-wide: if several Python threads limit
    it at once, threadpoolctl (>= 3.8) lets the first one decide, and the
    others' limits do nothing. When BLAS runs one thread already (that
    first limit, or the user's), the context does nothing either, and costs
    a microsecond instead of ten.
    """
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController

        _blas_controller = ThreadpoolController().select(user_api="blas")
    if all(lib.num_threads == 1 for lib in _blas_controller.lib_controllers):
        return contextlib.nullcontext()
    return _blas_controller.limit(limits=1)


# Work is split so that one chunk's buffers stay in a core's L2 cache (2 MB
# on the reference machine, half of it left to BLAS and the inputs).
CHUNK_BYTES = 1 << 20


def chunking(n: int, item_bytes: int) -> tuple[int, int]:
    """``(items per chunk, number of chunks)`` for `n` items of `item_bytes` each.

    Equal chunks of at most :data:`CHUNK_BYTES` (at least one item each).
    They depend on the sizes only, not on the thread count, so that sums
    over chunks always add up in the same order.
    """
    count = -(-n * item_bytes // CHUNK_BYTES)
    size = max(1, -(-n // max(count, 1)))
    return size, -(-n // size)


def run_chunks(work, n_chunks: int, parallel: bool = True) -> None:
    """Call ``work(i, scratch)`` once for every chunk ``i`` in ``range(n_chunks)``.

    The chunks run on ``min(get_num_threads(), n_chunks, CPUs)`` threads of
    the OpenMP team that runs the compiled kernels, the caller's thread
    included (on the caller's alone without the compiled kernels). Each
    thread takes the next chunk until none is left and passes its own
    `scratch` dict, where `work` may keep buffers (:func:`scratch_buffer`)
    from one chunk to the next. Meanwhile NumPy's BLAS is limited to one
    thread (threadpoolctl; restored on return) and the kernels that `work`
    gets from :func:`kernel` run one thread each: the op occupies exactly
    that many cores. Every thread runs in a copy of the caller's context
    (the backend of :func:`use_backend`, ``np.errstate``).

    Chunks must not depend on each other nor write the same memory; results
    then do not depend on the number of threads. ``parallel=False`` runs
    them on the caller's thread only (for chunks too small to gain from
    more: every chunk takes the GIL to start its NumPy calls).

    Raises
    ------
    Exception
        The first exception raised by `work`, once the chunks already
        started have finished (no chunk starts after it).
    """
    threads = min(get_num_threads(), n_chunks, _CPUS) if parallel else 1
    if n_chunks <= 0:
        return
    token = _chunk_thread.set(1)
    try:
        with one_blas_thread():
            _run_chunks_on(threads, work, n_chunks)
    finally:
        _chunk_thread.reset(token)


def scratch_buffer(scratch: dict, name: str, shape, dtype) -> np.ndarray:
    """The buffer `name` in a thread's `scratch` dict of :func:`run_chunks`, made on first use."""
    buffer = scratch.get(name)
    if buffer is None:
        buffer = scratch[name] = np.empty(shape, dtype=dtype)
    return buffer


def _run_chunks_on(threads: int, work, n_chunks: int) -> None:
    if threads == 1 or _openmp is None:
        scratch = {}
        for i in range(n_chunks):
            work(i, scratch)
        return
    # The chunks run on the OpenMP team that also runs the kernels, not on
    # threads of their own: after a parallel kernel, OpenMP's idle threads
    # spin for milliseconds, and extra Python threads would wait behind them
    # (the demo's 2-thread training step took 8x as long as its 1-thread one).
    contexts = [contextvars.copy_context() for _ in range(threads)]
    scratches = [{} for _ in range(threads)]
    _openmp.run_parallel(lambda i, t: contexts[t].run(work, i, scratches[t]), n_chunks, threads)


def build_info() -> dict:
    """How the compiled kernels were built (for ``show_config``)."""
    if _openmp is None:
        return {"compiled": False, "error": str(_import_error)}
    simd = ("none", "avx2", "avx512")[_pool._simd_level()]
    return {"compiled": True, "openmp": _openmp.OPENMP, "compiler": _openmp.COMPILER,
            "pool_simd": simd}
