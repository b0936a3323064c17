"""Threads and backend switching.

* Every compiled kernel gives BITWISE identical results for 1, 2, 3 and 4
  OpenMP threads (work is split by (n, c) plane, so no two threads write one
  element and no sum depends on the thread count), both through
  ``fastcnn.set_num_threads`` and through
  ``threadpoolctl.threadpool_limits(1, user_api="openmp")``.
* The ops that split their work into chunks of samples over threads
  (conv2d, conv2d_backward; ``_backend.run_chunks``): bitwise identical for
  1 to 4 threads with many small chunks (BatchNorm, chunked on one thread,
  as well), NumPy's BLAS on one
  thread while they run (also when two calls overlap) and restored
  afterwards (also after an exception), the caller's backend and
  ``np.errstate`` in every thread, and the first exception of a chunk
  raised to the caller.
* Small work (kernels under ``_backend.PARALLEL_BYTES``, conv2d chunks under
  ``PARALLEL_MACS``) runs on the caller's thread; the tests above lower both
  limits so that their small inputs still run in parallel.
* ``get_num_threads``/``set_num_threads`` semantics (None resets, 0 is an
  error, negative counts back from the maximum).
* ``set_backend``/``get_backend``/``use_backend`` (restores on exit, also on
  an exception; an invalid name is a ValueError; dispatch really switches).

Every test restores the thread count and the backend it found.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from strategies import Geometry, make_values
from threadpoolctl import threadpool_info, threadpool_limits

import fastcnn
from fastcnn import _backend
from fastcnn import functional as F
from fastcnn.layers import BatchNorm2D

COMPILED = _backend.compiled_available()
needs_compiled = pytest.mark.skipif(
    not COMPILED, reason="compiled kernels not built (FASTCNN_BACKEND=numpy run)")
OPENMP = COMPILED and _backend.build_info().get("openmp", False)
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastcnn.__file__)))


@pytest.fixture(autouse=True)
def restore_state():
    """Put the thread count and the default backend back as they were."""
    threads = getattr(_backend, "_num_threads", None)
    backend = fastcnn.get_backend()
    yield
    fastcnn.set_num_threads(threads)
    fastcnn.set_backend(backend)
    assert fastcnn.get_backend() == backend


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes(), "results differ between thread counts"


# ---------------------------------------------------------------------------
# Bitwise identity across thread counts, kernel level.

SPLIT = [  # (N, C) = 3 * 11 = 33 planes: an odd count, so threads get unequal shares
    Geometry(3, 11, 33, 31, 3, 3, 1, 1, 1, 1, 1, 1, False),  # overlapping windows
    Geometry(3, 11, 33, 31, 3, 2, 2, 3, 1, 1, 2, 1, True),   # dilation, stride, ceil mode
    # the SIMD kernels of csrc/pool_simd.h where the CPU has them; 2x2
    # windows also give max_pool2d_backward indices that tile the input
    Geometry(3, 11, 33, 31, 3, 3, 2, 2, 1, 1, 1, 1, True),
    Geometry(3, 11, 34, 31, 2, 2, 2, 2, 0, 0, 1, 1, False),
]
geometries = pytest.mark.parametrize("g", SPLIT, ids=["overlap", "dilated", "simd3", "simd2"])
dtypes = pytest.mark.parametrize("dtype", [np.float32, np.float64])
THREADS = (2, 3, 4)


def _run_all_kernels(g, dtype, nt):
    """Every compiled kernel on geometry g with nt threads; returns all outputs."""
    k = {name: _backend.pair_of(name)[0] for name in _backend.KERNEL_NAMES}
    rng = np.random.default_rng(11)
    x = make_values(rng, g.shape, dtype, "ties")
    cols = make_values(rng, g.cols_shape, dtype, "normal")
    dout = make_values(rng, g.pool_shape, dtype, "normal")
    outs = [k["im2col"](x, *g.conv_params(), np.empty(g.cols_shape, dtype), nt),
            k["col2im"](cols, *g.conv_params(), np.empty(g.shape, dtype), nt)]
    out, idx = k["max_pool2d"](x, *g.pool_params(), np.empty(g.pool_shape, dtype),
                               np.empty(g.pool_shape, np.int64), nt)
    outs += [out, idx, k["max_pool2d_backward"](dout, idx, np.empty(g.shape, dtype), nt)]
    if g.dh == g.dw == 1:
        avg_shape = g.pool_shape
        for cip, div in ((True, 0), (False, 0), (True, 5)):
            args = (*g.avg_params(), cip, div)
            outs.append(k["avg_pool2d"](x, *args, np.empty(avg_shape, dtype), nt))
            outs.append(k["avg_pool2d_backward"](dout, *args, np.empty(g.shape, dtype), nt))
    return outs


@needs_compiled
@geometries
@dtypes
def test_kernels_bitwise_identical_across_thread_counts(g, dtype):
    one = _run_all_kernels(g, dtype, 1)
    for nt in THREADS:
        for a, b in zip(_run_all_kernels(g, dtype, nt), one):
            _same_bits(a, b)


# ---------------------------------------------------------------------------
# Bitwise identity across thread counts, public API.


def _run_public(dtype):
    rng = np.random.default_rng(12)
    x = make_values(rng, (4, 8, 29, 30), dtype, "normal")
    w = make_values(rng, (6, 4, 3, 3), dtype, "normal")
    b = make_values(rng, (6,), dtype, "normal")
    out = F.conv2d(x, w, b, padding="same", groups=2)
    res = [F.im2col(x, 3, stride=2, padding=1, dilation=2), out]
    res += list(F.conv2d_backward(np.ones_like(out), x, w, padding="same", groups=2))
    cols = F.im2col(x, 3, padding=1)
    res.append(F.col2im(cols, (29, 30), 3, padding=1))
    pooled, idx = F.max_pool2d(x, 3, stride=1, padding=1, return_indices=True)
    res += [pooled, idx, F.max_pool2d_backward(pooled, idx, x.shape)]
    avg = F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    res += [avg, F.avg_pool2d_backward(avg, x.shape, 3, stride=2, padding=1, ceil_mode=True,
                                       count_include_pad=False)]
    return res


@needs_compiled
@dtypes
def test_public_ops_bitwise_identical_with_set_num_threads(small_ops_parallel, dtype):
    with fastcnn.use_backend("cython"):
        fastcnn.set_num_threads(1)
        assert fastcnn.get_num_threads() == 1
        one = _run_public(dtype)
        for nt in THREADS:
            fastcnn.set_num_threads(nt)
            assert fastcnn.get_num_threads() == nt
            for a, b in zip(_run_public(dtype), one):
                _same_bits(a, b)


@needs_compiled
@dtypes
def test_public_ops_bitwise_identical_under_threadpool_limits(small_ops_parallel, dtype):
    fastcnn.set_num_threads(None)
    with fastcnn.use_backend("cython"):
        with threadpool_limits(limits=1, user_api="openmp"):
            if OPENMP:
                # the default follows OpenMP's, which threadpoolctl just lowered
                assert fastcnn.get_num_threads() == 1
            one = _run_public(dtype)
        with threadpool_limits(limits=2, user_api="openmp"):
            if OPENMP:
                assert fastcnn.get_num_threads() == 2
            two = _run_public(dtype)
    for a, b in zip(two, one):
        _same_bits(a, b)


@needs_compiled
def test_concurrent_calls_from_python_threads():
    # The kernels release the GIL; calls from several Python threads at once
    # must not interfere (no shared scratch state).
    rng = np.random.default_rng(13)
    xs = [make_values(rng, (2, 5, 40, 37), np.float64, "ties") for _ in range(8)]

    def work(x):
        with fastcnn.use_backend("cython"):
            out, idx = F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
            return [F.im2col(x, 3, padding=1), out, idx,
                    F.col2im(F.im2col(x, 3, padding=1), (40, 37), 3, padding=1),
                    F.avg_pool2d(x, 2, ceil_mode=True)]

    serial = [work(x) for x in xs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(work, xs * 3))
    for i, res in enumerate(concurrent):
        for a, b in zip(res, serial[i % len(xs)]):
            _same_bits(a, b)


# ---------------------------------------------------------------------------
# Ops chunked over threads (_backend.run_chunks)


@pytest.fixture
def small_chunks(monkeypatch, small_ops_parallel):
    """Chunks of a few KB, so that even small inputs give many, all run in parallel."""
    monkeypatch.setattr(_backend, "CHUNK_BYTES", 4096)


def _blas_threads():
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def _run_chunked(dtype):
    rng = np.random.default_rng(14)
    x = make_values(rng, (40, 6, 24, 23), dtype, "normal")
    w = make_values(rng, (4, 3, 3, 2), dtype, "normal")
    b = make_values(rng, (4,), dtype, "normal")
    out = F.conv2d(x, w, b, stride=(1, 2), padding=1, groups=2)
    res = [out, *F.conv2d_backward(out, x, w, stride=(1, 2), padding=1, groups=2)]
    bn = BatchNorm2D(6, dtype=dtype)
    y = bn.forward(x)
    res += [y, bn.backward(y), bn.grads["weight"], bn.grads["bias"], bn.state["running_var"],
            bn.forward(x, training=False), bn.backward(y)]
    return res


@pytest.mark.parametrize("backend", ["cython", "numpy"] if COMPILED else ["numpy"])
@dtypes
def test_chunked_ops_bitwise_identical_across_thread_counts(small_chunks, backend, dtype):
    with fastcnn.use_backend(backend):
        fastcnn.set_num_threads(1)
        one = _run_chunked(dtype)
        for nt in THREADS:
            fastcnn.set_num_threads(nt)
            for a, b in zip(_run_chunked(dtype), one):
                _same_bits(a, b)


@needs_compiled
def test_small_work_runs_on_the_callers_thread(monkeypatch):
    # Below PARALLEL_BYTES a kernel gets one thread, at or above it the team;
    # conv2d chunks below PARALLEL_MACS run on the caller's thread alone.
    fastcnn.set_num_threads(2)
    seen = []
    compiled = _backend._compiled["max_pool2d"]
    monkeypatch.setitem(_backend._compiled, "max_pool2d",
                        lambda *args: seen.append(args[-1]) or compiled(*args))
    x = np.ones((2, 3, 8, 8), np.float32)
    with fastcnn.use_backend("cython"):
        F.max_pool2d(x, 2)
        monkeypatch.setattr(_backend, "PARALLEL_BYTES", x.nbytes)
        F.max_pool2d(x, 2)
    assert seen == [1, 2]
    threads = []
    monkeypatch.setattr(_backend, "run_chunks",
                        lambda work, n, parallel=True: threads.append(parallel))
    monkeypatch.setattr(F, "run_chunks", _backend.run_chunks)
    F.conv2d(x, np.ones((4, 3, 3, 3), np.float32))
    monkeypatch.setattr(_backend, "PARALLEL_MACS", 0)
    F.conv2d(x, np.ones((4, 3, 3, 3), np.float32))
    assert threads == [False, True]


def test_run_chunks_limits_blas_to_one_thread_and_restores_it(small_chunks):
    fastcnn.set_num_threads(2)
    seen = []
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        _backend.run_chunks(lambda i, scratch: seen.append(_blas_threads()), 6)
        assert _blas_threads() == before
        x = np.ones((8, 3, 9, 9))
        F.conv2d_backward(F.conv2d(x, np.ones((2, 3, 3, 3))), x, np.ones((2, 3, 3, 3)))
        assert _blas_threads() == before
        with pytest.raises(ZeroDivisionError):
            _backend.run_chunks(lambda i, scratch: 1 / 0, 3)
        assert _blas_threads() == before
    assert len(seen) == 6 and all(set(threads) <= {1} for threads in seen)


def test_overlapping_run_chunks_calls_both_run_with_one_blas_thread():
    # (threadpoolctl decides what happens to the limit when such calls end:
    # OpenBLAS's pthreads pool is process-wide. No threadpool_limits here:
    # it would make this thread the one that controls OpenBLAS.)
    fastcnn.set_num_threads(2)
    inside, checked = threading.Barrier(3), threading.Barrier(3)

    def work(i, scratch):
        inside.wait(timeout=30)  # both calls are running
        checked.wait(timeout=30)

    threads = [threading.Thread(target=_backend.run_chunks, args=(work, 1)) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait(timeout=30)
    during = _blas_threads()
    checked.wait(timeout=30)
    for t in threads:
        t.join()
    assert set(during) <= {1}


def test_run_chunks_threads_see_the_callers_context():
    fastcnn.set_num_threads(2)
    seen = set()

    def work(i, scratch):
        time.sleep(0.001)  # let the helper thread take chunks too
        seen.add((threading.get_ident(), fastcnn.get_backend(), np.geterr()["divide"]))

    with fastcnn.use_backend("numpy"), np.errstate(divide="ignore"):
        _backend.run_chunks(work, 20)
    assert {(backend, divide) for _, backend, divide in seen} == {("numpy", "ignore")}
    if _backend._CPUS > 1:
        assert len({ident for ident, _, _ in seen}) == 2


def test_run_chunks_raises_the_first_error_and_starts_no_more_chunks():
    fastcnn.set_num_threads(2)
    started = []

    def work(i, scratch):
        started.append(i)
        if i == 3:
            raise KeyError("chunk 3")
        time.sleep(0.001)

    with pytest.raises(KeyError, match="chunk 3"):
        _backend.run_chunks(work, 1000)
    assert len(started) < 1000


@pytest.mark.parametrize("n, item_bytes", [(0, 8), (1, 10**9), (128, 3000), (7, 1), (1000, 4097)])
def test_chunking_covers_every_item_in_equal_chunks(n, item_bytes):
    size, count = _backend.chunking(n, item_bytes)
    assert count == -(-n // size) and (count == 0) == (n == 0)
    assert size == 1 or size * item_bytes <= _backend.CHUNK_BYTES


# ---------------------------------------------------------------------------
# get/set_num_threads


def test_num_threads_semantics():
    fastcnn.set_num_threads(None)
    default = fastcnn.get_num_threads()
    assert isinstance(default, int) and default >= 1
    fastcnn.set_num_threads(3)
    assert fastcnn.get_num_threads() == 3
    fastcnn.set_num_threads(1)
    assert fastcnn.get_num_threads() == 1
    fastcnn.set_num_threads(-1)  # all
    assert fastcnn.get_num_threads() == default
    fastcnn.set_num_threads(-2)  # all but one, never fewer than one
    assert fastcnn.get_num_threads() == max(1, default - 1)
    fastcnn.set_num_threads(-(default + 10))
    assert fastcnn.get_num_threads() == 1
    fastcnn.set_num_threads(None)  # back to the default
    assert fastcnn.get_num_threads() == default


def test_num_threads_zero_and_bad_types():
    fastcnn.set_num_threads(2)
    with pytest.raises(ValueError, match="0"):
        fastcnn.set_num_threads(0)
    for bad in (1.5, "2", True):
        with pytest.raises(TypeError):
            fastcnn.set_num_threads(bad)
    # An OpenMP runtime that cannot create a thread aborts the process: counts
    # far beyond the machine are refused instead.
    for bad in (_backend.MAX_THREADS + 1, 40000, 2**63):
        with pytest.raises(ValueError, match=f"at most {_backend.MAX_THREADS}"):
            fastcnn.set_num_threads(bad)
    fastcnn.set_num_threads(np.int64(2))
    assert fastcnn.get_num_threads() == 2  # a rejected value changes nothing


def test_use_num_threads_restores_the_setting_and_default_num_threads():
    fastcnn.set_num_threads(None)
    default = fastcnn.get_num_threads()
    assert _backend.default_num_threads() == default
    for setting, expected_after in ((None, default), (-1, default), (1, 1)):
        fastcnn.set_num_threads(setting)
        with _backend.use_num_threads(2):
            assert fastcnn.get_num_threads() == 2
        assert fastcnn.get_num_threads() == expected_after
        with pytest.raises(RuntimeError), _backend.use_num_threads(2):
            raise RuntimeError("the block failed")
        assert fastcnn.get_num_threads() == expected_after
    # The setting, not the count, comes back: -1 follows a later change of the default.
    fastcnn.set_num_threads(-1)
    with _backend.use_num_threads(2):
        pass
    with threadpool_limits(limits=1, user_api="openmp"):
        assert fastcnn.get_num_threads() == 1
    with pytest.raises(ValueError), _backend.use_num_threads(0):
        pass
    assert _backend._num_threads == -1  # a rejected count changes nothing


@pytest.mark.skipif(not OPENMP, reason="build without OpenMP: the default is always 1")
def test_default_threads_follow_threadpool_limits():
    fastcnn.set_num_threads(None)
    with threadpool_limits(limits=1, user_api="openmp"):
        assert fastcnn.get_num_threads() == 1
        fastcnn.set_num_threads(-1)  # counts back from the CURRENT default
        assert fastcnn.get_num_threads() == 1
        fastcnn.set_num_threads(2)  # an explicit count wins over the limit
        assert fastcnn.get_num_threads() == 2


def _python(code, **env):
    environ = dict(os.environ)
    environ.pop("FASTCNN_BACKEND", None)
    environ.update(PYTHONPATH=PACKAGE_ROOT, **env)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ, cwd=PACKAGE_ROOT, timeout=120)
    return proc


@pytest.mark.skipif(not OPENMP, reason="build without OpenMP: OMP_NUM_THREADS has no effect")
def test_default_threads_honour_omp_num_threads():
    proc = _python("import fastcnn; print(fastcnn.get_num_threads())", OMP_NUM_THREADS="3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3"]


# ---------------------------------------------------------------------------
# Backend selection


def test_get_backend_values():
    assert fastcnn.get_backend() in ("cython", "numpy")
    assert _backend.BACKENDS == ("cython", "numpy")


def test_use_backend_switches_and_restores():
    before = fastcnn.get_backend()
    with fastcnn.use_backend("numpy"):
        assert fastcnn.get_backend() == "numpy"
        if COMPILED:
            with fastcnn.use_backend("cython"):
                assert fastcnn.get_backend() == "cython"
            assert fastcnn.get_backend() == "numpy"
    assert fastcnn.get_backend() == before


def test_use_backend_restores_on_exception():
    before = fastcnn.get_backend()
    with pytest.raises(RuntimeError, match="boom"):
        with fastcnn.use_backend("numpy"):
            assert fastcnn.get_backend() == "numpy"
            raise RuntimeError("boom")
    assert fastcnn.get_backend() == before
    with pytest.raises(ValueError):
        with fastcnn.use_backend("numpy"):
            F.im2col(np.ones((3, 4, 4)), 2)  # a fastcnn error inside the block
    assert fastcnn.get_backend() == before


def test_set_backend():
    fastcnn.set_backend("numpy")
    assert fastcnn.get_backend() == "numpy"
    with fastcnn.use_backend("numpy"):
        pass
    assert fastcnn.get_backend() == "numpy"
    if COMPILED:
        fastcnn.set_backend("cython")
        assert fastcnn.get_backend() == "cython"
        with fastcnn.use_backend("numpy"):
            assert fastcnn.get_backend() == "numpy"
        assert fastcnn.get_backend() == "cython"


@pytest.mark.parametrize("bad", ["torch", "", "Numpy", "CYTHON", None, 1])
def test_invalid_backend_name(bad):
    before = fastcnn.get_backend()
    with pytest.raises(ValueError, match="backend"):
        fastcnn.set_backend(bad)
    assert fastcnn.get_backend() == before
    with pytest.raises(ValueError, match="backend"):
        with fastcnn.use_backend(bad):
            pytest.fail("the block must not run")  # pragma: no cover
    assert fastcnn.get_backend() == before


class _Spy:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


@pytest.mark.parametrize("name", _backend.KERNEL_NAMES)
def test_dispatch_really_switches(monkeypatch, name):
    # Count calls into the NumPy twin: the "numpy" backend must use it and the
    # "cython" backend must not.
    spy = _Spy(getattr(fastcnn.reference, name))
    monkeypatch.setattr(fastcnn.reference, name, spy)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    op = {
        "im2col": lambda: F.im2col(x, 2),
        "col2im": lambda: F.col2im(np.ones((2, 12, 25)), 6, 2),
        "max_pool2d": lambda: F.max_pool2d(x, 2),
        "max_pool2d_backward": lambda: F.max_pool2d_backward(
            np.ones((2, 3, 3, 3)), np.zeros((2, 3, 3, 3), np.int64), x.shape),
        "avg_pool2d": lambda: F.avg_pool2d(x, 2),
        "avg_pool2d_backward": lambda: F.avg_pool2d_backward(np.ones((2, 3, 3, 3)), x.shape, 2),
    }[name]
    with fastcnn.use_backend("numpy"):
        op()
    assert spy.calls == 1
    if COMPILED:
        with fastcnn.use_backend("cython"):
            op()
        assert spy.calls == 1


@needs_compiled
def test_use_backend_is_local_to_the_context():
    # use_backend overrides the backend in the current context only: another
    # thread keeps the process-wide default.
    fastcnn.set_backend("cython")
    seen = []
    with fastcnn.use_backend("numpy"):
        t = threading.Thread(target=lambda: seen.append(fastcnn.get_backend()))
        t.start()
        t.join()
        assert fastcnn.get_backend() == "numpy"
    assert seen == ["cython"]


@needs_compiled
@pytest.mark.parametrize("env, expected", [("numpy", "numpy"), ("cython", "cython"),
                                           ("", "cython")])
def test_fastcnn_backend_environment_variable(env, expected):
    proc = _python("import fastcnn; print(fastcnn.get_backend())", FASTCNN_BACKEND=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [expected]
