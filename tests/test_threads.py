"""Threads and backend switching.

* Every compiled kernel gives BITWISE identical results for 1, 2, 3 and 4
  OpenMP threads (work is split by (n, c) plane, so no two threads write one
  element and no sum depends on the thread count), both through
  ``fastcnn.set_num_threads`` and through
  ``threadpoolctl.threadpool_limits(1, user_api="openmp")``.
* The GEMM drivers (conv2d by im2col or by Winograd, Dense): bitwise
  identical for 1 to 4 threads (BatchNorm, chunked on one thread, as
  well); SciPy's BLAS, which they
  call, held at one thread while they run (also when two calls overlap)
  and restored afterwards (also after an error), NumPy's BLAS untouched;
  concurrent calls from Python threads give the result of the same call
  made alone, also while other threads change BLAS limits.
* Small work (kernels under ``_backend.PARALLEL_BYTES``, GEMM drivers under
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
import threadpoolctl
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
    return (outs + _run_resample_kernels(g, dtype, nt, k, idx)
            + _run_adaptive_kernels(g, dtype, nt, k) + _run_gemm_kernels(g, dtype, nt, k)
            + _run_direct_kernels(g, dtype, nt, k))


def _run_resample_kernels(g, dtype, nt, k, idx):
    """interpolate (up along H, down along W) and max_unpool2d with max_pool2d's
    indices `idx` on geometry g with nt threads."""
    rng = np.random.default_rng(13)
    x = make_values(rng, g.shape, dtype, "normal")
    size = (2 * g.h + 3, g.w // 2 + 1)
    dout = make_values(rng, g.shape[:2] + size, dtype, "normal")
    outs = []
    for mode, align in (("nearest", False), ("bilinear", False), ("bilinear", True)):
        name, tables = F._interpolate_tables(g.shape, *size, (None, None), mode, align,
                                             np.dtype(dtype))
        outs.append(k[name](x, *tables, np.empty(dout.shape, dtype), nt))
        outs.append(k[name + "_backward"](dout, *tables, np.empty(g.shape, dtype), nt))
    pooled = make_values(rng, g.pool_shape, dtype, "normal")
    outs.append(k["max_unpool2d"](pooled, idx, np.empty(g.shape, dtype), nt))
    outs.append(k["max_unpool2d_backward"](x, idx, np.empty(g.pool_shape, dtype), nt))
    return outs


# Adaptive output sizes: overlapping windows (7 into 33 and 31), outputs
# larger than the input, a global pool, and windows that tile the input
# (11 into 33).
ADAPTIVE_SIZES = [(7, 7), (40, 45), (1, 1), (11, 3)]


def _run_adaptive_kernels(g, dtype, nt, k):
    """The adaptive pool kernels on g's input with nt threads (and max_pool2d_backward
    on their indices, which repeat where windows overlap)."""
    rng = np.random.default_rng(17)
    x = make_values(rng, g.shape, dtype, "ties")
    outs = []
    for size in ADAPTIVE_SIZES:
        shape = g.shape[:2] + size
        dout = make_values(rng, shape, dtype, "normal")
        out, idx = k["adaptive_max_pool2d_forward"](x, np.empty(shape, dtype),
                                                    np.empty(shape, np.int64), nt)
        outs += [out, idx, k["max_pool2d_backward"](dout, idx, np.empty(g.shape, dtype), nt),
                 k["adaptive_avg_pool2d_forward"](x, np.empty(shape, dtype), nt),
                 k["adaptive_avg_pool2d_backward"](dout, np.empty(g.shape, dtype), nt)]
    return outs


def _run_gemm_kernels(g, dtype, nt, k):
    """The GEMM drivers on geometry g (as a convolution with 2 groups) with nt threads."""
    rng = np.random.default_rng(15)
    x = make_values(rng, (g.n * 3, 2 * g.c, g.h, g.w), dtype, "normal")
    f, kg = 6, g.c * g.kh * g.kw
    w = make_values(rng, (f, kg), dtype, "normal")
    b = make_values(rng, (f,), dtype, "normal")
    shape = (x.shape[0], f, g.conv_oh, g.conv_ow)
    y = k["conv2d_forward"](x, w, b, *g.conv_params(), 2, 2, 0.25, np.empty(shape, dtype), nt)
    chunk, parts = 2, -(-x.shape[0] // 2)
    dx, dw, db = (np.empty(x.shape, dtype), np.empty((parts, f, kg), dtype),
                  np.empty((parts, f), dtype))
    k["conv2d_backward"](y, x, w, *g.conv_params(), 2, chunk, 1, 0.0, dx, dw, db, nt)
    flat = x.reshape(len(x), -1)
    wl = make_values(rng, (7, flat.shape[1]), dtype, "normal")
    yl = k["linear_forward"](flat, wl, b[:0], chunk, np.empty((len(x), 7), dtype), nt)
    dxl, dwl, dbl = (np.empty(flat.shape, dtype), np.empty((parts, 7, flat.shape[1]), dtype),
                     np.empty((parts, 7), dtype))
    k["linear_backward"](yl, flat, wl, chunk, dxl, dwl, dbl, nt)
    # Winograd: blocks of 2 samples with a 3x3 kernel, then of 3 tile rows
    # with a kernel of 1x2 blocks of 3x3 taps (stride 1 only)
    oh, ow = g.h + 2, g.w - 2  # padding (2, 0)
    tile_rows = -(-oh // 4)
    wins = []
    for samples, rows, gw in ((2, tile_rows, 1), (1, 3, 2)):
        cv = gw * x.shape[1]
        u = k["winograd_weight"](make_values(rng, (f, cv, 3, 3), dtype, "normal"),
                                 np.empty((36, f, cv), dtype), nt)
        flags = np.empty(-(-len(x) // samples) * -(-tile_rows // rows), np.uint8)
        wins += [u, k["winograd_conv2d"](x, u, b, 2, 0, gw, samples, rows,
                                         np.empty((len(x), f, oh, ow), dtype), flags, nt), flags]
        dout = wins[-2]
        groups = -(-len(x) // samples)
        wins += [np.empty((-(-groups // 2), f, cv * 9), dtype),
                 np.empty((-(-groups // 2), f), dtype)]
        k["winograd_conv2d_backward"](dout, x, 2, 0, gw, samples, rows, 2, *wins[-2:], nt)
    return [y, dx, dw, db, yl, dxl, dwl, dbl, *wins]


def _run_direct_kernels(g, dtype, nt, k):
    """The direct convolution on geometry g (13 filters) with nt threads."""
    rng = np.random.default_rng(16)
    x = make_values(rng, (g.n * 3, 3, g.h, g.w), dtype, "normal")
    f, kk = 13, 3 * g.kh * g.kw
    w = make_values(rng, (f, kk), dtype, "normal")
    b = make_values(rng, (f,), dtype, "normal")
    shape = (x.shape[0], f, g.conv_oh, g.conv_ow)
    y = k["conv2d_direct_forward"](x, w, b, *g.conv_params(), np.empty(shape, dtype), nt)
    chunk, parts = 2, -(-x.shape[0] // 2)
    dw, db = np.empty((parts, f, kk), dtype), np.empty((parts, f), dtype)
    k["conv2d_direct_backward"](y, x, *g.conv_params(), chunk, dw, db, nt)
    return [y, dw, db]


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
    for kwargs in (dict(scale_factor=1.7), dict(size=(13, 61), mode="bilinear", align_corners=True)):
        up = F.interpolate(x, **kwargs)
        res += [up, F.interpolate_backward(up, x.shape, **kwargs)]
    res += [F.max_unpool2d(pooled, idx, 3, stride=1, padding=1, output_size=x.shape),
            F.max_unpool2d_backward(x, idx)]
    with _backend.use_conv_algorithm("winograd"):
        out = F.conv2d(x, w[:, :2].repeat(4, axis=1), b, padding=1)
        res += [out, *F.conv2d_backward(out, x, w[:, :2].repeat(4, axis=1), padding=1)]
    for size in ((7, 7), (31, 40), 1):
        top, where = F.adaptive_max_pool2d(x, size, return_indices=True)
        avg = F.adaptive_avg_pool2d(x, size)
        res += [top, where, F.adaptive_max_pool2d_backward(top, where, x.shape), avg,
                F.adaptive_avg_pool2d_backward(avg, x.shape)]
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
                    F.avg_pool2d(x, 2, ceil_mode=True), *F.adaptive_max_pool2d(
                        x, 7, return_indices=True), F.adaptive_avg_pool2d(x, (6, 50)),
                    F.adaptive_avg_pool2d_backward(x, (2, 5, 9, 11))]

    serial = [work(x) for x in xs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(work, xs * 3))
    for i, res in enumerate(concurrent):
        for a, b in zip(res, serial[i % len(xs)]):
            _same_bits(a, b)


# ---------------------------------------------------------------------------
# Ops that split a batch into chunks, and the BLAS they call


def _blas_threads():
    """``{filepath: threads}`` of every BLAS library loaded."""
    return {p["filepath"]: p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


def _scipy_blas():
    return {lib.filepath for lib in _backend.blas_single_threaded()._find()}


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
def test_chunked_ops_bitwise_identical_across_thread_counts(small_ops_parallel, backend, dtype):
    with fastcnn.use_backend(backend):
        fastcnn.set_num_threads(1)
        one = _run_chunked(dtype)
        for nt in THREADS:
            fastcnn.set_num_threads(nt)
            for a, b in zip(_run_chunked(dtype), one):
                _same_bits(a, b)


def _recording(monkeypatch, name, seen, record=lambda args: args[-1]):
    compiled = _backend._compiled[name]

    def call(*args):
        seen.append(record(args))
        return compiled(*args)

    monkeypatch.setitem(_backend._compiled, name, call)


@needs_compiled
def test_small_work_runs_on_the_callers_thread(monkeypatch):
    # Below PARALLEL_BYTES a kernel gets one thread, at or above it the team;
    # GEMM drivers (and the direct convolution, which this one runs) below
    # PARALLEL_MACS multiply-adds get one thread too.
    fastcnn.set_num_threads(2)
    seen = []
    _recording(monkeypatch, "max_pool2d", seen)
    _recording(monkeypatch, "conv2d_forward", seen)
    _recording(monkeypatch, "conv2d_direct_forward", seen)
    x = np.ones((2, 3, 8, 8), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    with fastcnn.use_backend("cython"):
        F.max_pool2d(x, 2)
        F.conv2d(x, w)
        monkeypatch.setattr(_backend, "PARALLEL_BYTES", x.nbytes)
        monkeypatch.setattr(_backend, "PARALLEL_MACS", 2 * 4 * 27 * 36)
        F.max_pool2d(x, 2)
        F.conv2d(x, w)
    assert seen == [1, 1, 2, 2]


@needs_compiled
def test_gemm_drivers_hold_scipy_blas_at_one_thread_and_leave_numpy_blas_alone(monkeypatch):
    fastcnn.set_num_threads(2)
    scipy_blas, seen = _scipy_blas(), []
    _recording(monkeypatch, "conv2d_backward", seen, lambda args: _blas_threads())
    x = np.ones((8, 3, 9, 9))
    w = np.ones((2, 3, 3, 3))
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        with fastcnn.use_backend("cython"):
            F.conv2d_backward(F.conv2d(x, w), x, w)
            with pytest.raises(ValueError):
                F.conv2d_backward(np.ones((1, 1, 1, 1)), x, w)
        assert _blas_threads() == before  # restored, also after the error
    (during,) = seen
    assert {path: n for path, n in during.items() if path in scipy_blas} == dict.fromkeys(
        scipy_blas, 1)
    assert {path: n for path, n in during.items() if path not in scipy_blas} == {
        path: n for path, n in before.items() if path not in scipy_blas}


def test_overlapping_single_threaded_blas_contexts_restore_once_the_last_leaves():
    # Two Python threads inside at once: the first one out must not lift the
    # limit under the other.
    scipy_blas = _scipy_blas()
    first_in, first_out, second_checked = (threading.Barrier(2) for _ in range(3))
    seen = []

    def first():
        with _backend.blas_single_threaded():
            first_in.wait(timeout=30)
        first_out.wait(timeout=30)
        second_checked.wait(timeout=30)

    def second():
        first_in.wait(timeout=30)
        with _backend.blas_single_threaded():
            first_out.wait(timeout=30)
            seen.append(_blas_threads())
        second_checked.wait(timeout=30)

    with threadpool_limits(limits=2, user_api="blas"):
        threads = [threading.Thread(target=f) for f in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = _blas_threads()
    assert all(seen[0][path] == 1 for path in scipy_blas)
    assert all(after[path] == 2 for path in scipy_blas)


@needs_compiled
@pytest.mark.parametrize("limit_others", [False, True])
def test_concurrent_convolutions_equal_the_same_call_alone(limit_others):
    # Eight conv2d calls from a 4-worker pool, meanwhile (optionally) other
    # threads limiting NumPy's BLAS around their own products: each result
    # is the one made alone. (A limit on SciPy's BLAS set by other code
    # while a call runs is the one thing that can still change its rounding.)
    rng = np.random.default_rng(16)
    x = rng.standard_normal((8, 16, 32, 32), dtype=np.float32)
    w = rng.standard_normal((16, 16, 3, 3), dtype=np.float32)
    fastcnn.set_num_threads(2)
    with fastcnn.use_backend("cython"):
        alone = F.conv2d(x, w, padding=1)
        back_alone = F.conv2d_backward(alone, x, w, padding=1)
        stop = threading.Event()

        numpy_blas = [lib for lib in threadpoolctl.ThreadpoolController().select(user_api="blas")
                      .lib_controllers if lib.filepath not in _scipy_blas()]

        # (straight to the library: threadpoolctl lets one thread set OpenBLAS limits)
        setters = [getattr(lib, "_real_set_num_threads", lib.set_num_threads) for lib in numpy_blas]

        def meddle():
            while not stop.is_set():
                for set_threads in setters:
                    set_threads(1)
                np.ones((64, 64)) @ np.ones((64, 64))
                for set_threads in setters:
                    set_threads(2)

        def work(_):
            out = F.conv2d(x, w, padding=1)
            return out, F.conv2d_backward(out, x, w, padding=1)

        meddlers = [threading.Thread(target=meddle) for _ in range(2 if limit_others else 0)]
        for t in meddlers:
            t.start()
        try:
            with ThreadPoolExecutor(max_workers=4) as pool:
                results = list(pool.map(work, range(8)))
        finally:
            stop.set()
            for t in meddlers:
                t.join()
    for out, back in results:
        _same_bits(out, alone)
        for a, b in zip(back, back_alone):
            _same_bits(a, b)


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


def _batch_norm_round_trip(x, training):
    c = x.shape[1]
    w, b = np.ones(c), np.zeros(c)
    out, cache = F._batch_norm_forward(x, w, b, np.zeros(c), np.ones(c), training, 0.1, 1e-5)
    F._batch_norm_backward(out, cache, w)


def _forced(algorithm, op, *args, **kwargs):
    with _backend.use_conv_algorithm(algorithm):
        return op(*args, **kwargs)


@pytest.mark.parametrize("name", _backend.KERNEL_NAMES)
def test_dispatch_really_switches(monkeypatch, name):
    # Count calls into the NumPy twin: the "numpy" backend must use it and the
    # "cython" backend must not.
    spy = _Spy(getattr(fastcnn.reference, name))
    monkeypatch.setattr(fastcnn.reference, name, spy)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    w = x[0, 0].copy()  # a parameter, updated in place
    op = {
        "im2col": lambda: F.im2col(x, 2),
        "col2im": lambda: F.col2im(np.ones((2, 12, 25)), 6, 2),
        "max_pool2d": lambda: F.max_pool2d(x, 2),
        "max_pool2d_backward": lambda: F.max_pool2d_backward(
            np.ones((2, 3, 3, 3)), np.zeros((2, 3, 3, 3), np.int64), x.shape),
        "avg_pool2d": lambda: F.avg_pool2d(x, 2),
        "avg_pool2d_backward": lambda: F.avg_pool2d_backward(np.ones((2, 3, 3, 3)), x.shape, 2),
        "adaptive_avg_pool2d_forward": lambda: F.adaptive_avg_pool2d(x, 4),
        "adaptive_avg_pool2d_backward": lambda: F.adaptive_avg_pool2d_backward(
            np.ones((2, 3, 4, 4)), x.shape),
        "adaptive_max_pool2d_forward": lambda: F.adaptive_max_pool2d(x, 4),
        "conv2d_forward": lambda: _forced("gemm", F.conv2d, x, np.ones((2, 3, 2, 2))),
        "conv2d_backward": lambda: _forced("gemm", F.conv2d_backward, np.ones((2, 2, 5, 5)), x,
                                           np.ones((2, 3, 2, 2))),
        "conv2d_direct_forward": lambda: _forced("direct", F.conv2d, x, np.ones((2, 3, 2, 2))),
        "conv2d_direct_backward": lambda: _forced("direct", F.conv2d_backward,
                                                  np.ones((2, 2, 5, 5)), x, np.ones((2, 3, 2, 2))),
        "linear_forward": lambda: F._linear(x.reshape(2, -1), np.ones((4, 108)), None),
        "linear_backward": lambda: F._linear_backward(np.ones((2, 4)), x.reshape(2, -1),
                                                      np.ones((4, 108))),
        "winograd_weight": lambda: _forced("winograd", F.conv2d, x, np.ones((2, 3, 3, 3))),
        "winograd_conv2d": lambda: _forced("winograd", F.conv2d, x, np.ones((2, 3, 3, 3))),
        "winograd_conv2d_backward": lambda: _forced("winograd", F.conv2d_backward,
                                                    np.ones((2, 2, 4, 4)), x, np.ones((2, 3, 3, 3))),
        "batch_norm_stats": lambda: _batch_norm_round_trip(x, True),
        "batch_norm_elemt": lambda: _batch_norm_round_trip(x, False),
        "batch_norm_backward_reduce": lambda: _batch_norm_round_trip(x, False),
        "batch_norm_backward_elemt": lambda: _batch_norm_round_trip(x, True),
        "relu": lambda: F._relu(x),
        "relu_backward": lambda: F._relu_backward(x, x),
        "leaky_relu": lambda: F._leaky_relu(x, 0.1),
        "leaky_relu_backward": lambda: F._leaky_relu_backward(x, x, 0.1),
        "add": lambda: F._add(x, x, True),
        "dropout": lambda: F._dropout(x, 0.5, 3),
        "softmax_cross_entropy": lambda: F._softmax_cross_entropy(x.reshape(2, -1),
                                                                  np.array([0, 2])),
        "sgd_update": lambda: F._sgd_step(w, w, {}, lr=0.1, momentum=0.9, dampening=0.0,
                                          nesterov=False, weight_decay=0.0, maximize=False),
        "adam_update": lambda: F._adam_step(w, w, {}, lr=0.1, betas=(0.9, 0.99), eps=1e-8,
                                            weight_decay=0.0, amsgrad=True, maximize=False),
        "adagrad_update": lambda: F._adagrad_step(w, w, {"step": 0, "sum": np.zeros_like(w)},
                                                  lr=0.1, lr_decay=0.0, eps=1e-10,
                                                  weight_decay=0.0, maximize=False),
        "rmsprop_update": lambda: F._rmsprop_step(w, w, {}, lr=0.1, alpha=0.9, eps=1e-8,
                                                  weight_decay=0.0, momentum=0.5, centered=True,
                                                  maximize=False),
        "adadelta_update": lambda: F._adadelta_step(w, w, {}, lr=1.0, rho=0.9, eps=1e-6,
                                                    weight_decay=0.0, maximize=False),
        "sigmoid": lambda: F._sigmoid(x),
        "sigmoid_backward": lambda: F._sigmoid_backward(x, x),
        "tanh": lambda: F._tanh(x),
        "tanh_backward": lambda: F._tanh_backward(x, x),
        "elu": lambda: F._elu(x, 1.0),
        "elu_backward": lambda: F._elu_backward(x, x, 1.0),
        "interpolate_nearest": lambda: F.interpolate(x, scale_factor=1.5),
        "interpolate_nearest_backward": lambda: F.interpolate_backward(x, (2, 3, 3, 3),
                                                                       scale_factor=2),
        "interpolate_bilinear": lambda: F.interpolate(x, size=4, mode="bilinear"),
        "interpolate_bilinear_backward": lambda: F.interpolate_backward(
            x, (2, 3, 4, 4), size=6, mode="bilinear", align_corners=True),
        "max_unpool2d": lambda: F.max_unpool2d(x, np.zeros(x.shape, np.int64), 2),
        "max_unpool2d_backward": lambda: F.max_unpool2d_backward(
            x, np.zeros((2, 3, 3, 3), np.int64)),
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


def _kernel_modules():
    """The compiled kernel modules that were built (every one that setup.py lists)."""
    import importlib.machinery

    folder = os.path.join(os.path.dirname(fastcnn.__file__), "_kernels")
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return sorted(name.split(".")[0] for name in os.listdir(folder) if name.endswith(suffixes))


MISSING_MODULE = """
import importlib.abc, sys, warnings

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "fastcnn._kernels.{module}":
            raise ImportError("{module} was not built")

sys.meta_path.insert(0, Missing())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastcnn
print(fastcnn.get_backend(), any("{module} was not built" in str(w.message) for w in caught))
"""


def _imported_modules():
    """The compiled kernel modules that fastcnn imports on this CPU: all but
    the builds for instruction sets it lacks (importing those could stop
    the process)."""
    from fastcnn._kernels import pool

    lacking = ("avx2", "avx512")[pool._simd_level():]
    return [name for name in _kernel_modules() if name.rpartition("_")[2] not in lacking]


@needs_compiled
@pytest.mark.parametrize("module", _imported_modules() if COMPILED else [])
def test_any_missing_kernel_module_leaves_the_numpy_backend(module):
    # One module missing from a build disables the compiled set with a
    # warning (tests/conftest.py then fails the session): no kernel set runs
    # half compiled.
    assert "adaptive" in _kernel_modules()
    proc = _python(MISSING_MODULE.format(module=module))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["numpy", "True"]


# ---------------------------------------------------------------------------
# The kernels between convolutions (batch norm, activations, loss,
# optimizers): bitwise identical for 1 to 4 threads, sums included (each tile's partial sums are
# added in tile order, whichever thread made them).

LAYER_SHAPES = [  # (N, C, L): many tiles, unequal shares
    (37, 5, 1100),   # channels split into pieces
    (3001, 7, 3),    # several channels per piece, per-cell coefficients
    (45, 3, 40),     # several channels per piece, channel by channel
]


def _run_layer_kernels(shape, dtype, nt):
    """Every compiled kernel between convolutions with nt threads; returns all outputs."""
    k = {name: _backend.pair_of(name)[0] for name in _backend.KERNEL_NAMES}
    rng = np.random.default_rng(14)
    c = shape[1]
    x = (100 + rng.standard_normal(shape)).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    weight, bias = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    mean, var = k["batch_norm_stats"](x, np.empty(c), np.empty(c), nt)
    inv_std = 1 / np.sqrt(var + 1e-5)
    outs = [mean, var]
    for relu in (False, True):
        forward = (mean, inv_std, weight, bias, relu)
        outs.append(k["batch_norm_elemt"](x, *forward, np.empty_like(x), nt))
        sums = k["batch_norm_backward_reduce"](dout, x, *forward, np.empty(c), np.empty(c), nt)
        outs += list(sums)
        for training in (True, False):
            outs.append(k["batch_norm_backward_elemt"](dout, x, *forward, *sums, training,
                                                       np.empty_like(x), nt))
    flat_x, flat_dout = dout.reshape(-1), x.reshape(-1) - 100  # both signs
    out = np.empty_like(flat_x)
    outs += [k["relu"](flat_x, out.copy(), nt),
             k["relu_backward"](flat_dout, flat_x, out.copy(), nt),
             k["leaky_relu"](flat_x, 0.1, out.copy(), nt),
             k["leaky_relu_backward"](flat_dout, flat_x, 0.1, out.copy(), nt),
             k["add"](flat_dout, flat_x, True, out.copy(), nt),
             *k["dropout"](flat_x, 5, 2**52, 2.0, out.copy(), out.copy(), nt),
             k["sigmoid"](flat_x, out.copy(), nt), k["tanh"](flat_x, out.copy(), nt),
             k["sigmoid_backward"](flat_dout, flat_x, out.copy(), nt),
             k["tanh_backward"](flat_dout, flat_x, out.copy(), nt),
             k["elu"](flat_x, 1.5, 1.1, out.copy(), nt),
             k["elu_backward"](flat_dout, flat_x, 1.5, 1.1, out.copy(), nt)]
    logits = x.reshape(shape[0], -1)[:, :37] - 100
    labels = rng.integers(0, logits.shape[1], size=shape[0])
    loss, dlogits = k["softmax_cross_entropy"](logits, labels, np.empty_like(logits), nt)
    outs += [np.array(loss), dlogits]
    param, grad = flat_x.copy(), flat_dout
    states = [np.abs(flat_x) for _ in range(3)]
    k["sgd_update"](param, grad, states[0], 0.1, 0.9, 0.1, 0.01, False, True, False, nt)
    k["adam_update"](param, grad, *states, 0.9, 0.999, 1e-8, 0.01, 0.02, 0.5, True, False, nt)
    k["adagrad_update"](param, grad, states[0], 0.1, 1e-10, 0.0, False, nt)
    k["rmsprop_update"](param, grad, *states, 0.01, 0.99, 1e-8, 0.01, 0.9, True, False, nt)
    k["adadelta_update"](param, grad, *states[:2], 1.0, 0.9, 1e-6, 0.01, True, nt)
    outs += [param, *states]
    return outs


@needs_compiled
@pytest.mark.parametrize("shape", LAYER_SHAPES, ids=["split", "narrow", "grouped"])
@dtypes
def test_layer_kernels_bitwise_identical_across_thread_counts(shape, dtype):
    one = _run_layer_kernels(shape, dtype, 1)
    for nt in THREADS:
        for a, b in zip(_run_layer_kernels(shape, dtype, nt), one):
            _same_bits(a, b)
