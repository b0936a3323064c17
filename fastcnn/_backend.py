"""Which kernel set runs: the compiled one ("cython") or the NumPy twin ("numpy").

One registry, :data:`KERNEL_NAMES`, pairs every compiled kernel with its twin
in :mod:`fastcnn.reference`; dispatch, the parity tests and ``fastcnn bench``
all walk it. Both sets share one signature; the compiled kernels take one
extra trailing ``num_threads`` argument, which :func:`kernel` supplies.

Threads: one policy governs every compiled kernel. A kernel runs on an
OpenMP team of :func:`get_num_threads` threads (one for small work), and
the GEMM drivers (conv2d, Dense) call BLAS from inside that team through
``scipy.linalg.cython_blas``, with SciPy's BLAS held to one thread while
any of them runs (:func:`blas_single_threaded`): the team is the only
parallelism, so nothing oversubscribes the cores. NumPy's own BLAS is
never touched. Every kernel splits its work in a way that depends on the
sizes only, so results do not depend on the thread count, nor on what
other Python threads do meanwhile. A forked child process runs one thread.

Long calls run in pieces (:func:`in_pieces`), with Python between them, so
that Ctrl-C interrupts them; the pieces give the whole call's bits.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import os
import threading
import time
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
    "blas_single_threaded",
    "in_pieces",
    "PIECE_SECONDS",
    "TAP_SECONDS",
    "MAC_SECONDS",
]

#: The registry: every kernel of the reference set, which the compiled set mirrors.
KERNEL_NAMES = tuple(reference.__all__)
_KERNEL_SET = frozenset(KERNEL_NAMES)  # (a kernel's every call looks its name up)
#: The kernels that call BLAS (see :func:`blas_single_threaded`).
GEMM_KERNELS = frozenset({"conv2d_forward", "conv2d_backward", "linear_forward", "linear_backward",
                          "winograd_conv2d", "winograd_conv2d_backward"})
BACKENDS = ("cython", "numpy")

try:
    from ._kernels import activation as _activation
    from ._kernels import adaptive as _adaptive
    from ._kernels import conv as _conv
    from ._kernels import direct as _direct
    from ._kernels import loss as _loss
    from ._kernels import norm as _norm
    from ._kernels import openmp as _openmp
    from ._kernels import optim as _optim
    from ._kernels import pool as _pool
    from ._kernels import resample as _resample
    from ._kernels import unfold as _unfold
    from ._kernels import winograd as _winograd

    # The widest build of a module that the CPU runs (same results; see
    # setup.py's SIMD_KERNELS). Importing a wider one could stop the
    # process on an illegal instruction: the CPU is asked first. Every
    # build it runs is imported, so that a build missing one fails here.
    _simd_build = ""
    for _simd_build in ("_avx2", "_avx512")[:_pool._simd_level()]:
        _activation = importlib.import_module(f"._kernels.activation{_simd_build}", __package__)
        _norm = importlib.import_module(f"._kernels.norm{_simd_build}", __package__)
except ImportError as exc:  # a source checkout that was never built
    _openmp = None
    _direct = None
    _simd_build = ""
    _compiled = {}
    _import_error = exc
else:
    # A forward and its backward that differ only in direction are one
    # compiled function taking the direction first, bound here for each.
    _compiled = {
        "im2col": _unfold.im2col,
        "col2im": _unfold.col2im,
        "max_pool2d": _pool.max_pool2d,
        "max_pool2d_backward": _pool.max_pool2d_backward,
        "avg_pool2d": functools.partial(_pool._avg_pool2d, False),
        "avg_pool2d_backward": functools.partial(_pool._avg_pool2d, True),
        "adaptive_avg_pool2d_forward": functools.partial(_adaptive._adaptive_avg_pool2d, False),
        "adaptive_avg_pool2d_backward": functools.partial(_adaptive._adaptive_avg_pool2d, True),
        "adaptive_max_pool2d_forward": _adaptive.adaptive_max_pool2d_forward,
        "conv2d_forward": _conv.conv2d_forward,
        "conv2d_backward": _conv.conv2d_backward,
        "conv2d_direct_forward": _direct.conv2d_direct_forward,
        "conv2d_direct_backward": _direct.conv2d_direct_backward,
        "linear_forward": _conv.linear_forward,
        "linear_backward": _conv.linear_backward,
        "winograd_weight": _winograd.winograd_weight,
        "winograd_conv2d": _winograd.winograd_conv2d,
        "winograd_conv2d_backward": _winograd.winograd_conv2d_backward,
        "batch_norm_stats": _norm.batch_norm_stats,
        "batch_norm_elemt": _norm.batch_norm_elemt,
        "batch_norm_backward_reduce": _norm.batch_norm_backward_reduce,
        "batch_norm_backward_elemt": _norm.batch_norm_backward_elemt,
        "relu": _activation.relu,
        "relu_backward": _activation.relu_backward,
        "add": _activation.add,
        "dropout": _activation.dropout,
        "leaky_relu": _activation.leaky_relu,
        "leaky_relu_backward": _activation.leaky_relu_backward,
        "sigmoid": _activation.sigmoid,
        "sigmoid_backward": functools.partial(_activation._by_output_backward, False),
        "tanh": _activation.tanh,
        "tanh_backward": functools.partial(_activation._by_output_backward, True),
        "elu": _activation.elu,
        "elu_backward": _activation.elu_backward,
        "softmax_cross_entropy": _loss.softmax_cross_entropy,
        "sgd_update": _optim.sgd_update,
        "adam_update": _optim.adam_update,
        "adagrad_update": _optim.adagrad_update,
        "rmsprop_update": _optim.rmsprop_update,
        "adadelta_update": _optim.adadelta_update,
    }
    _compiled.update({
        "interpolate_nearest": functools.partial(_resample._interpolate_nearest, False),
        "interpolate_nearest_backward": functools.partial(_resample._interpolate_nearest, True),
        "interpolate_bilinear": functools.partial(_resample._interpolate_bilinear, False),
        "interpolate_bilinear_backward": functools.partial(_resample._interpolate_bilinear, True),
        "max_unpool2d": functools.partial(_resample._max_unpool2d, False),
        "max_unpool2d_backward": functools.partial(_resample._max_unpool2d, True),
    })
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


# Which convolution algorithm conv2d runs is decided per call from the
# shapes (fastcnn.functional); tests and benchmarks force one here.

#: ``"auto"`` (by shape), or the algorithm that conv2d and its backward run
#: wherever it applies: ``"gemm"`` (im2col + GEMM, csrc/conv.pyx),
#: ``"direct"`` (csrc/direct.pyx: groups = 1, strides no longer than the
#: window) or ``"winograd"``
#: (csrc/winograd.pyx: stride 1, dilation 1, groups = 1, kernels of any
#: size as blocks of 3x3 taps; what it finds not finite is computed by
#: im2col + GEMM instead).
CONV_ALGORITHMS = ("auto", "gemm", "direct", "winograd")
_conv_algorithm: contextvars.ContextVar[str] = contextvars.ContextVar(
    "fastcnn_conv_algorithm", default="auto"
)


def conv_algorithm() -> str:
    """The forced convolution algorithm of the current context, or ``"auto"``."""
    return _conv_algorithm.get()


@contextlib.contextmanager
def use_conv_algorithm(name: str):
    """Run the ``with`` block with convolutions forced to algorithm `name`
    (one of :data:`CONV_ALGORITHMS`), in the current context only."""
    if name not in CONV_ALGORITHMS:
        raise ValueError(f"name must be one of {CONV_ALGORITHMS}, got {name!r}")
    token = _conv_algorithm.set(name)
    try:
        yield
    finally:
        _conv_algorithm.reset(token)


def direct_simd() -> bool:
    """Whether the compiled direct convolution has its AVX2 kernels here."""
    return _direct is not None and _direct._simd_level() > 0


def implicit_conv() -> bool:
    """Whether the compiled conv2d forward reads its taps from a padded copy
    of the input rather than unfolded columns here (AVX-512)."""
    return _openmp is not None and _conv._simd_level() >= 2


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
    """Set the number of threads of every compiled kernel, BLAS calls included.

    The kernels run on an OpenMP team of that size; the ones that call BLAS
    (conv2d, Dense) do so from inside the team with BLAS held to one thread
    (:func:`blas_single_threaded`), so the whole op uses `n` threads. Small
    calls use one (:data:`PARALLEL_BYTES`, :data:`PARALLEL_MACS`).

    Parameters
    ----------
    n : int or None
        ``None`` restores the default (OpenMP's, which honours
        ``OMP_NUM_THREADS`` and ``threadpoolctl``). A positive value is used as
        is, up to :data:`MAX_THREADS` (4 per available CPU); a negative value
        counts back from the default (-1 = all, -2 = all but one, never fewer
        than one). 0 is an error.

    Notes
    -----
    In a process made by ``os.fork()`` (also multiprocessing's "fork" start
    method) every kernel runs on one thread, whatever `n` is: OpenMP's
    threads do not survive a fork, and a child that starts a team of several
    would wait for them forever. Child processes that should use several
    threads need the "spawn" start method.
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
    """The number of threads the compiled kernels will use for the next call.

    Never more than :data:`MAX_THREADS`, whatever ``OMP_NUM_THREADS`` says;
    always 1 in a forked child process (see :func:`set_num_threads`).
    """
    if _forked_child:
        return 1
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
    if name not in _KERNEL_SET:
        raise ValueError(f"kernel name must be one of {KERNEL_NAMES}, got {name!r}")
    return _compiled.get(name), getattr(reference, name)


# Work too small to pay for a second thread runs on the caller's alone. On
# cores shared with other processes, a thread of the team that slept or was
# preempted joins a parallel region a scheduler slice late: milliseconds.
# (Side by side on a 2-core AMD EPYC at 2 threads, 256 KiB rather than 1 MiB
# made the pools of 128x16x8x8 planes 1.3-1.7x as fast and the digits
# network's training step 1.1x. On a 2-core Xeon, 0.5 rather than 2 million
# multiply-adds made digits' 1 -> 16 channel convolution, 1.2 million,
# 1.3-1.4x as fast and its training step 1.05x; other steps within noise.)

#: A compiled kernel whose arrays hold fewer bytes runs on one thread.
PARALLEL_BYTES = 256 << 10

#: A GEMM driver call of fewer multiply-adds runs on one thread.
PARALLEL_MACS = 500_000


def _parallel(parallel: bool | None, args) -> bool:
    """Whether a compiled kernel called with `args` runs on the whole team (see :func:`kernel`)."""
    if parallel is None:
        return sum(a.nbytes for a in args if isinstance(a, np.ndarray)) >= PARALLEL_BYTES
    return parallel


def _runs_twin(twin: bool) -> bool:
    return twin or get_backend() == "numpy"


def kernel(name: str, parallel: bool | None = None, twin: bool = False):
    """The kernel `name` of the active set (or the twin, if `twin`), with the
    reference's signature.

    A compiled kernel runs :func:`get_num_threads` OpenMP threads if
    `parallel` is true, or, when it is None, if its arrays hold at least
    :data:`PARALLEL_BYTES`; else one. The GEMM drivers run inside
    :func:`blas_single_threaded`, and their twins with NumPy's BLAS held to
    one thread likewise. Results do not depend on the thread count.
    """
    compiled, reference_kernel = pair_of(name)
    gemm = name in GEMM_KERNELS
    if _runs_twin(twin):
        if not gemm:
            return reference_kernel

        def call_twin(*args):
            with _single_threaded_numpy_blas:
                return reference_kernel(*args)

        return call_twin
    threads = get_num_threads()

    def call(*args):
        n = threads if _parallel(parallel, args) else 1
        if not gemm:
            return compiled(*args, n)
        with _single_threaded_blas:
            return compiled(*args, n)

    return call


# A compiled kernel runs without the GIL and cannot be stopped: Python
# handles a signal (Ctrl-C's KeyboardInterrupt) only once it returns. Long
# calls therefore run in pieces, with Python bytecode between them.

#: A long call runs in pieces of about this many seconds each. (Each piece
#: ends with its team's barrier, where, on cores shared with other
#: processes, a thread waits for one that was preempted: fewer, longer
#: pieces waste less.)
PIECE_SECONDS = 0.1

#: Rough costs on one thread, from which a call's first piece is sized (the
#: next ones from the time the previous piece took): one cell that a pool
#: window, im2col or col2im touches (the slower kernels' figure: the SIMD
#: pools take a tenth of it; max pooling counts its taps twice), and one
#: multiply-add of a GEMM driver.
TAP_SECONDS = 4e-9
MAC_SECONDS = 2e-10


def in_pieces(name: str, counts, args, piece=None, *, taps: int = 0, macs: int = 0,
              parallel: bool | None = None, twin: bool = False) -> None:
    """Run kernel `name` on `args`, in pieces if the call is long.

    A call estimated to take more than twice :data:`PIECE_SECONDS` runs in
    consecutive pieces of about that long (at least one item per thread of
    the team), so that signal handlers run between them: KeyboardInterrupt
    arrives within about a piece's time, with no thread left computing.
    Other calls run whole, as one piece.

    Parameters
    ----------
    name : str
        A kernel of the registry; `parallel` and `twin` as for
        :func:`kernel`, with ``parallel=None`` decided on the whole call.
    counts : (int,) or (int, int)
        The items of the call. ``(units,)``: the samples of the batch, or
        the chunks of a GEMM driver's batch; a piece holds whole units.
        ``(N, C)``: the (n, c) planes of a kernel that works plane by plane;
        a piece holds whole samples or, when one sample is longer than a
        piece, a range of one sample's channels.
    args : tuple
        The arguments of the whole call.
    piece : callable, optional
        ``piece(index)`` -> the arguments for the items at `index`:
        ``(slice(lo, hi),)`` of units or samples, or
        ``(slice(n, n + 1), slice(lo, hi))`` of one sample's channels. By
        default every array of `args` indexed by `index`. The pieces'
        results together must be the whole call's, bit for bit: items must
        be independent (a chunk of a GEMM driver sums its samples in order,
        so pieces hold whole chunks).
    taps, macs : int
        Rough work of one item (one unit, or one plane for ``(N, C)``):
        cells touched and GEMM multiply-adds (:data:`TAP_SECONDS`,
        :data:`MAC_SECONDS`).
    """
    parallel = _parallel(parallel, args)
    run = kernel(name, parallel, twin)
    units = counts[0]
    planes = counts[1] if len(counts) > 1 else 1
    item = taps * TAP_SECONDS + macs * MAC_SECONDS  # seconds of one item on one thread
    work = units * planes * item
    threads = 1
    if parallel and work > 2 * PIECE_SECONDS and not _runs_twin(twin):
        threads = get_num_threads()
    if work <= 2 * PIECE_SECONDS * threads:
        run(*args)
        return
    if piece is None:
        def piece(index):
            return tuple(a[index] if isinstance(a, np.ndarray) else a for a in args)
    by_units = planes == 1 or planes * item <= PIECE_SECONDS * threads
    if by_units:
        item *= planes
    # items per second, until a piece was timed; the first piece is short,
    # as the estimate may be several times too low (a debug build, say)
    rate = threads / item / 4
    for n in (None,) if by_units else range(units):
        lo, end = 0, units if by_units else planes
        while lo < end:
            # whole rounds of the team: a piece never leaves a thread idle
            count = max(int(rate * PIECE_SECONDS), threads)
            hi = lo + count - count % threads
            if 2 * (end - hi) < count:  # the rest would be a short piece
                hi = end
            index = (slice(lo, hi),) if by_units else (slice(n, n + 1), slice(lo, hi))
            start = time.perf_counter()
            run(*piece(index))
            rate = (hi - lo) / max(time.perf_counter() - start, 1e-9)
            lo = hi


class _SingleThreadedBlas:
    """Holds a BLAS library at one thread while at least one user is inside;
    the first one in sets it, the last one out restores what it was (so
    overlapping users from several Python threads never see each other's
    limits). SciPy's (that of ``scipy.linalg.cython_blas``, which the
    compiled kernels call), or with `numpy` NumPy's (the twins')."""

    def __init__(self, numpy: bool = False) -> None:
        self._numpy = numpy
        self._libraries = None
        self._saved: list[int] = []
        self.after_fork()

    def after_fork(self) -> None:
        """Forget the users: in a forked child, only the thread that forked
        exists, and the lock may have been held by another one."""
        self._lock = threading.Lock()
        self._users = 0

    def _find(self):
        # SciPy's BLAS is the library that threadpoolctl finds outside NumPy's
        # folders (wheels bundle one each); where both are one library, that one.
        import numpy
        import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS)
        from threadpoolctl import ThreadpoolController

        blas = ThreadpoolController().select(user_api="blas").lib_controllers
        home = os.path.dirname(os.path.realpath(numpy.__file__))
        numpy_dirs = (home + os.sep, home + ".libs" + os.sep)
        ours = [lib for lib in blas
                if os.path.realpath(lib.filepath).startswith(numpy_dirs) == self._numpy]
        return ours or blas

    @staticmethod
    def _set(lib, n: int) -> None:
        # threadpoolctl (>= 3.8) ignores an OpenBLAS limit set from any Python
        # thread but the first one that set one; this limit is fastcnn's own
        # (counted across threads above), so it goes to the library directly.
        getattr(lib, "_real_set_num_threads", lib.set_num_threads)(n)

    def __enter__(self):
        with self._lock:
            if self._users == 0:
                if self._libraries is None:
                    self._libraries = self._find()
                self._saved = [lib.num_threads for lib in self._libraries]
                for lib, n in zip(self._libraries, self._saved):
                    if n != 1:
                        self._set(lib, 1)
            self._users += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._users -= 1
            if self._users == 0:
                for lib, n in zip(self._libraries, self._saved):
                    if n != 1:
                        self._set(lib, n)


_single_threaded_blas = _SingleThreadedBlas()
_single_threaded_numpy_blas = _SingleThreadedBlas(numpy=True)


# libgomp's thread pool does not survive fork(): a child that starts a team
# of several threads after its parent ran one waits forever for threads
# that were not copied. As PyTorch does, a forked child runs every kernel on
# its calling thread alone (a team of one never touches the pool).
_forked_child = False


def _after_fork_in_child() -> None:
    global _forked_child
    _forked_child = True
    _single_threaded_blas.after_fork()
    _single_threaded_numpy_blas.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def blas_single_threaded() -> _SingleThreadedBlas:
    """A context holding SciPy's BLAS (the one compiled kernels call) at one thread.

    Reentrant and shared between Python threads: the limit is set by the
    first context to enter and lifted by the last to leave. NumPy's BLAS is
    left alone.
    """
    return _single_threaded_blas


def build_info() -> dict:
    """How the compiled kernels were built (for ``show_config``)."""
    if _openmp is None:
        return {"compiled": False, "error": str(_import_error)}
    simd = ("none", "avx2", "avx512")[_pool._simd_level()]
    return {"compiled": True, "openmp": _openmp.OPENMP, "compiler": _openmp.COMPILER,
            "pool_simd": simd,
            "simd_builds": [f"{name}{_simd_build}" for name in ("norm", "activation")]
                           if _simd_build else []}
