"""Memory stays flat: every public call, thousands of times, error paths included.

Three measurements of one workload (every public op of ``fastcnn.functional``
with and without odd memory layouts, the compiled kernels' own argument
errors, and the layers/losses/optimizers; each call ends in a
result or in the expected ValueError/TypeError):

* reference counts: the inputs of every call hold as many references after
  the call as before (a Cython memoryview or an exception path that keeps one
  would leak the whole array);
* tracemalloc: the Python heap, NumPy's data buffers included (NumPy reports
  them to tracemalloc), does not grow between a warm-up and the end of a long
  run (threshold: 256 KiB for ~40,000 calls, i.e. under 7 bytes per call);
* RSS from ``/proc/self/statm`` (Linux; catches leaks of C memory that
  tracemalloc cannot see): after a warm-up (OpenMP pools, BLAS buffers,
  allocator arenas), ~100,000 more calls may add at most 2 MiB.

The measured figures are printed (``pytest -s tests/test_leaks.py``).
"""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc

import numpy as np
import pytest

import fastcnn
from fastcnn import _backend
from fastcnn import functional as F

from fastcnn import layers as L
from fastcnn import losses, optim
from fastcnn.model import Sequential

STATM = "/proc/self/statm"


def _expect(error, fn, *args, **kwargs):
    """Call `fn`; it must raise `error` (the error paths must run, not pass silently)."""
    try:
        fn(*args, **kwargs)
    except error:
        return
    raise AssertionError(f"{getattr(fn, '__name__', fn)} did not raise {error.__name__}")


def workload():
    """(name, zero-argument callable, input arrays) for one pass over the public API."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 12, 12))
    x32 = x.astype(np.float32)
    xt = np.moveaxis(np.moveaxis(x, 1, -1).copy(), -1, 1)  # non-contiguous: copied inside
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    cols = F.im2col(x, 3, stride=2, padding=1)
    y = F.conv2d(x, w, b, padding=1)
    dy = rng.standard_normal(y.shape)
    p, idx = F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    dp = rng.standard_normal(p.shape)
    idx32 = idx.astype(np.int32)
    a = F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
    da = rng.standard_normal(a.shape)
    calls = [
        ("im2col", lambda: F.im2col(x, 3, stride=2, padding=1), [x]),
        ("im2col-strided", lambda: F.im2col(xt, (2, 3), dilation=2), [xt]),
        ("col2im", lambda: F.col2im(cols, (12, 12), 3, stride=2, padding=1), [cols]),
        ("conv2d", lambda: F.conv2d(x, w, b, padding=1), [x, w, b]),
        ("conv2d-same", lambda: F.conv2d(xt, w, padding="same"), [xt, w]),
        ("conv2d_backward", lambda: F.conv2d_backward(dy, x, w, padding=1), [dy, x, w]),
        ("max_pool2d", lambda: F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True), [x]),
        ("max_pool2d-f32", lambda: F.max_pool2d(x32, 2, ceil_mode=True), [x32]),
        ("max_pool2d_backward", lambda: F.max_pool2d_backward(dp, idx32, x.shape), [dp, idx32]),
        ("avg_pool2d", lambda: F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True), [x]),
        (
            "avg_pool2d_backward",
            lambda: F.avg_pool2d_backward(da, x.shape, 3, stride=2, padding=1, ceil_mode=True),
            [da],
        ),
        # error paths: validation raises after converting some arguments
        ("error-rank", lambda: _expect(ValueError, F.im2col, x[0], 3), [x]),
        ("error-dtype", lambda: _expect(TypeError, F.conv2d, x, w.astype(np.float32)), [x, w]),
        ("error-int", lambda: _expect(TypeError, F.max_pool2d, idx, 2), [idx]),
        (
            "error-index",
            lambda: _expect(ValueError, F.max_pool2d_backward, dp, idx + 10**6, x.shape),
            [dp, idx],
        ),
        ("error-padding", lambda: _expect(ValueError, F.avg_pool2d, x, 2, padding=5), [x]),
        ("error-cols", lambda: _expect(ValueError, F.col2im, cols[:, :, :-1], 12, 3, 2, 1), [cols]),
        ("error-geometry", lambda: _expect(TypeError, F.conv2d, x, w, stride=1.5), [x, w]),
    ]
    compiled_im2col, _ = _backend.pair_of("im2col")
    if compiled_im2col is not None:
        out = np.empty(cols.shape, np.float32)
        # Cython's own argument checks: a fused-type mismatch and a non-contiguous buffer.
        calls += [
            (
                "kernel-error-dtype",
                lambda: _expect(
                    (TypeError, ValueError), compiled_im2col, x, 3, 3, 2, 2, 1, 1, 1, 1, 6, 6, out, 1
                ),
                [x, out],
            ),
            (
                "kernel-error-layout",
                lambda: _expect(
                    (TypeError, ValueError),
                    compiled_im2col,
                    xt,
                    3,
                    3,
                    2,
                    2,
                    1,
                    1,
                    1,
                    1,
                    6,
                    6,
                    np.empty(cols.shape),
                    1,
                ),
                [xt],
            ),
        ]
    model = Sequential(
        [
            L.Conv2D(3, 4, 3, padding=1, rng=0, dtype=np.float64),
            L.BatchNorm2D(4, dtype=np.float64),
            L.ReLU(),
            L.MaxPool2D(2),
            L.AvgPool2D(2, stride=1, padding=1),
            L.Flatten(),
            L.Dense(4 * 7 * 7, 5, rng=1, dtype=np.float64),
            L.Dropout(0.2, rng=2),
        ]
    )
    opt = optim.Adam(model, lr=1e-3)
    labels = np.array([1, 3])

    def train_step():
        logits = model.forward(x)
        _, dlogits = losses.softmax_cross_entropy(logits, labels)
        model.backward(dlogits)
        opt.step()

    calls += [
        ("layers-train-step", train_step, [x, labels]),
        ("layers-eval", lambda: model.forward(x, training=False), [x]),
        ("mse", lambda: losses.mse(dy, y), [dy, y]),
        ("error-layer-shape", lambda: _expect(ValueError, model.forward, x[:, :2]), [x]),
        (
            "error-loss-labels",
            lambda: _expect(ValueError, losses.softmax_cross_entropy, dy[:, :, 0, 0], np.array([0, 99])),
            [dy],
        ),
    ]
    return calls


def run(calls, repeats):
    for _ in range(repeats):
        for _, call, _ in calls:
            call()


def rss_bytes():
    with open(STATM) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_inputs_keep_their_reference_counts():
    for name, call, inputs in workload():
        call()  # first-call caches (Cython fused dispatch, imports) are not leaks
        before = [sys.getrefcount(a) for a in inputs]
        for _ in range(50):
            call()
        after = [sys.getrefcount(a) for a in inputs]
        assert after == before, f"{name}: reference counts of its inputs went from {before} to {after}"


def test_tracemalloc_flat():
    calls = workload()
    run(calls, 20)  # warm-up
    gc.collect()
    tracemalloc.start(1)
    try:
        run(calls, 20)
        gc.collect()
        start, _ = tracemalloc.get_traced_memory()
        first = tracemalloc.take_snapshot()
        repeats = 1500
        run(calls, repeats)
        gc.collect()
        end, peak = tracemalloc.get_traced_memory()
        growth = end - start
        top = ""
        if growth >= 256 * 1024:
            stats = tracemalloc.take_snapshot().compare_to(first, "lineno")[:5]
            top = "\n".join(str(s) for s in stats)
    finally:
        tracemalloc.stop()
    n = repeats * len(calls)
    print(f"\ntracemalloc: {n} calls, traced {start} -> {end} bytes ({growth:+d}), peak {peak}")
    assert growth < 256 * 1024, f"traced memory grew by {growth} bytes over {n} calls:\n{top}"


@pytest.mark.skipif(not os.path.exists(STATM), reason="RSS is read from /proc/self/statm (Linux)")
def test_rss_flat():
    calls = workload()
    fastcnn.set_num_threads(None)
    run(calls, 200)  # warm-up: OpenMP team, BLAS buffers, allocator arenas
    gc.collect()
    samples = [rss_bytes()]
    repeats = 800
    for _ in range(5):
        run(calls, repeats)
        gc.collect()
        samples.append(rss_bytes())
    n = 5 * repeats * len(calls)
    mib = [round(s / 2**20, 1) for s in samples]
    print(f"\nRSS: {n} calls, MiB after warm-up and after each fifth: {mib}")
    # 2 MiB over ~100,000 calls: a leak of 20 bytes per call, or of one
    # 100-element array per pass over the workload, goes over it.
    assert samples[-1] - samples[0] < 2 * 2**20, f"RSS grew over {n} calls: {mib} MiB"
