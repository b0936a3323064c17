"""Threads: concurrent calls, OpenMP thread counts and per-thread backends.

* Many Python threads (``concurrent.futures``, 8 workers) call every public
  op, and a whole layer stack, at once and in a
  shuffled order, some of them under ``use_backend("numpy")``: every result is
  bitwise identical to the same call made serially beforehand. The compiled
  kernels release the GIL, so these calls really overlap (and each opens its
  own OpenMP team).
* Results are bitwise identical for 1, 2 and 4 OpenMP threads, chosen with
  ``fastcnn.set_num_threads`` and with
  ``threadpoolctl.threadpool_limits(n, user_api="openmp")`` (DESIGN.md: work is
  split by (n, c) plane, so no two threads write one element and every sum
  adds in one order).
* ``use_backend`` is a context variable: a block in one thread does not change
  the backend of any other thread, including threads started inside the block.

The inputs are chosen to make a race or a thread-count dependence visible:
many (n, c) planes, overlapping windows (col2im and the pool backwards add
into shared pixels), integer-valued data with ties for max pooling.
"""

from __future__ import annotations

import concurrent.futures
import random
import threading

import numpy as np
import pytest

import fastcnn
from fastcnn import _backend, reference
from fastcnn import functional as F

threadpoolctl = pytest.importorskip("threadpoolctl")
from fastcnn import layers as L
from fastcnn.model import Sequential

COMPILED = _backend.compiled_available()
OPENMP = COMPILED and _backend.build_info().get("openmp", False)
needs_compiled = pytest.mark.skipif(not COMPILED, reason="compiled kernels not built")


def _op_calls(dtype):
    """{name: zero-argument callable} covering every public op, on inputs that expose races."""
    rng = np.random.default_rng(20240607)
    x = rng.standard_normal((6, 8, 23, 19)).astype(dtype)
    ties = rng.integers(-3, 4, (6, 8, 23, 19)).astype(dtype)  # many equal maxima
    w = rng.standard_normal((12, 8, 3, 3)).astype(dtype)
    wg = rng.standard_normal((12, 2, 3, 3)).astype(dtype)  # groups=4
    b = rng.standard_normal(12).astype(dtype)
    geo = dict(stride=2, padding=1, dilation=2)
    cols = F.im2col(x, 3, **geo)
    dcols = rng.standard_normal(cols.shape).astype(dtype)
    y = F.conv2d(x, w, b, padding=1)
    dy = rng.standard_normal(y.shape).astype(dtype)
    x3, w3 = x[:, :3], w[:, :3]  # few channels: the direct convolution (forced below)
    dy3 = rng.standard_normal((6, 12, 23, 19)).astype(dtype)
    pool = dict(stride=1, padding=1, ceil_mode=True)  # overlapping windows
    out, idx = F.max_pool2d(ties, 3, return_indices=True, **pool)
    dpool = rng.standard_normal(out.shape).astype(dtype)
    avg = dict(stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    davg = rng.standard_normal(F.avg_pool2d(x, 3, **avg).shape).astype(dtype)
    wt = rng.standard_normal((8, 6, 3, 3)).astype(dtype)
    dyt = rng.standard_normal(F.conv_transpose2d(x, wt, stride=2, padding=1).shape).astype(dtype)
    _, ada_idx = F.adaptive_max_pool2d(ties, (5, 7), return_indices=True)
    dada = rng.standard_normal(ada_idx.shape).astype(dtype)
    unpool = dict(stride=1, padding=1)  # the pool above: overlapping windows, repeated indices
    calls = {
        "im2col": lambda: F.im2col(x, 3, **geo),
        "col2im": lambda: F.col2im(dcols, (23, 19), 3, **geo),
        "conv2d": lambda: F.conv2d(x, w, b, padding="same"),
        "conv2d-groups": lambda: F.conv2d(x, wg, b, stride=2, groups=4),
        "conv2d_backward": lambda: F.conv2d_backward(dy, x, w, padding=1),
        "conv2d-direct": lambda: _forced("direct", F.conv2d, x3, w3, b, stride=(1, 2),
                                         padding=1),
        "conv2d_backward-direct": lambda: _forced("direct", F.conv2d_backward, dy3, x3, w3,
                                                  padding=2, dilation=2),
        "conv2d-winograd": lambda: _forced("winograd", F.conv2d, x, w, b, padding=1),
        "conv2d_backward-winograd": lambda: _forced("winograd", F.conv2d_backward, dy, x, w,
                                                    padding=1),
        "max_pool2d": lambda: F.max_pool2d(ties, 3, return_indices=True, **pool),
        "max_pool2d-dilated": lambda: F.max_pool2d(x, 2, stride=1, dilation=2, return_indices=True),
        "max_pool2d_backward": lambda: F.max_pool2d_backward(dpool, idx, ties.shape),
        "avg_pool2d": lambda: F.avg_pool2d(x, 3, **avg),
        "avg_pool2d-divisor": lambda: F.avg_pool2d(x, 2, stride=1, divisor_override=3),
        "avg_pool2d_backward": lambda: F.avg_pool2d_backward(davg, x.shape, 3, **avg),
        "conv_transpose2d": lambda: F.conv_transpose2d(x, wt, b[:6], stride=2, padding=1),
        "conv_transpose2d_backward": lambda: F.conv_transpose2d_backward(dyt, x, wt, stride=2,
                                                                         padding=1),
        "pad": lambda: F.pad(x, (2, 1, 3, 0), "reflect"),
        "pad_backward": lambda: F.pad_backward(x, (6, 8, 20, 16), (2, 1, 3, 0), "circular"),
        "interpolate": lambda: F.interpolate(x, scale_factor=1.7, mode="bilinear"),
        "interpolate_backward": lambda: F.interpolate_backward(x, (6, 8, 9, 11), size=(23, 19),
                                                               mode="bilinear"),
        "adaptive_avg_pool2d": lambda: F.adaptive_avg_pool2d(x, (5, 7)),
        "adaptive_avg_pool2d_backward": lambda: F.adaptive_avg_pool2d_backward(x, (6, 8, 30, 40)),
        "adaptive_max_pool2d": lambda: F.adaptive_max_pool2d(ties, (5, 7), return_indices=True),
        "adaptive_max_pool2d_backward": lambda: F.adaptive_max_pool2d_backward(
            dada, ada_idx, ties.shape),
        "max_unpool2d": lambda: F.max_unpool2d(dpool, idx, 3, output_size=ties.shape, **unpool),
        "max_unpool2d_backward": lambda: F.max_unpool2d_backward(ties, idx),
        "group_norm": lambda: F.group_norm(x, 4, b[:8], b[4:]),
        "group_norm_backward": lambda: F.group_norm_backward(ties, x, 2, b[:8]),
        "layer_norm": lambda: F.layer_norm(x, (23, 19)),
        "layer_norm_backward": lambda: F.layer_norm_backward(ties, x, 19, x[0, 0, 0]),
    }
    assert {name.split("-")[0] for name in calls} == set(F.__all__), "an op is missing here"
    calls["layers"] = lambda: _layer_stack_run(x)
    return calls


def _forced(algorithm, op, *args, **kwargs):
    with _backend.use_conv_algorithm(algorithm):
        return op(*args, **kwargs)


def _layer_stack_run(x):
    """Forward and backward through a fresh stack (seeded), returning every output and gradient."""
    model = Sequential([
        L.Conv2D(8, 6, 3, padding=1, rng=1, dtype=x.dtype),
        L.BatchNorm2D(6, dtype=x.dtype),
        L.ReLU(),
        L.MaxPool2D(2, ceil_mode=True),
        L.AvgPool2D(2, stride=1, padding=1),
        L.Flatten(),
        L.Dense(6 * 13 * 11, 5, rng=2, dtype=x.dtype),
        L.Dropout(0.3, rng=3),
    ])  # fmt: skip
    out = model.forward(x)
    dx = model.backward(np.ones_like(out))
    grads = [g.copy() for layer in model.layers for g in layer.grads.values()]
    return out, dx, grads


def _assert_identical(a, b, what):
    if isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b), what
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_identical(u, v, f"{what}[{i}]")
        return
    assert a.dtype == b.dtype and a.shape == b.shape, what
    # Bitwise: the same bytes, so -0.0 vs 0.0 or a different rounding would fail.
    assert a.tobytes() == b.tobytes(), f"{what}: results differ at {np.argwhere(a != b)[:3].tolist()}"


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_python_threads_match_serial_calls(small_ops_parallel, dtype):
    calls = _op_calls(dtype)
    fastcnn.set_num_threads(3)  # more OpenMP threads than cores, from many Python threads
    try:
        # (each backend's own: their GEMMs run on different BLAS libraries)
        serial = {(name, "default"): call() for name, call in calls.items()}
        with fastcnn.use_backend("numpy"):
            serial.update({(name, "numpy"): call() for name, call in calls.items()})
        jobs = [(name, backend) for name in calls for backend in ("default", "numpy") for _ in range(6)]
        random.Random(7).shuffle(jobs)
        start = threading.Barrier(8)

        def run(numbered_job):
            i, (name, backend) = numbered_job
            if i < 8:  # the first eight jobs start together
                start.wait(timeout=30)
            if backend == "numpy":
                with fastcnn.use_backend("numpy"):
                    return fastcnn.get_backend(), calls[name]()
            return fastcnn.get_backend(), calls[name]()

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(run, enumerate(jobs)))
    finally:
        fastcnn.set_num_threads(None)
    default = fastcnn.get_backend()
    for (name, backend), (seen_backend, result) in zip(jobs, results):
        assert seen_backend == ("numpy" if backend == "numpy" else default), (name, backend, seen_backend)
        _assert_identical(result, serial[name, backend], f"{name} in a thread ({backend} backend)")


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_the_openmp_thread_count(small_ops_parallel, dtype):
    calls = _op_calls(dtype)
    results = {}
    try:
        for n in (1, 2, 4):
            fastcnn.set_num_threads(n)
            assert fastcnn.get_num_threads() == n
            results[f"set_num_threads({n})"] = {name: call() for name, call in calls.items()}
        fastcnn.set_num_threads(None)
        for n in (1, 2, 4):
            with threadpoolctl.threadpool_limits(n, user_api="openmp"):
                if OPENMP:  # the default follows OpenMP's, which threadpoolctl sets
                    assert fastcnn.get_num_threads() == n
                results[f"threadpool_limits({n})"] = {name: call() for name, call in calls.items()}
    finally:
        fastcnn.set_num_threads(None)
    reference_run = results.pop("set_num_threads(1)")
    for how, run in results.items():
        for name in calls:
            _assert_identical(run[name], reference_run[name], f"{name} with {how} vs 1 thread")


@needs_compiled
def test_use_backend_in_one_thread_does_not_affect_another():
    default = fastcnn.get_backend()
    assert default == "cython"
    inside_block = threading.Event()
    checked = threading.Event()
    seen = {}

    def in_numpy_block():
        with fastcnn.use_backend("numpy"):
            seen["a"] = (fastcnn.get_backend(), _backend.kernel("im2col") is reference.im2col)
            inside_block.set()  # the other thread now looks while this block is open
            checked.wait(timeout=10)
            seen["a after"] = fastcnn.get_backend()
        seen["a restored"] = fastcnn.get_backend()

    def outside():
        inside_block.wait(timeout=10)
        seen["b"] = (fastcnn.get_backend(), _backend.kernel("im2col") is reference.im2col)
        checked.set()

    threads = [threading.Thread(target=in_numpy_block), threading.Thread(target=outside)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert seen["a"] == ("numpy", True)
    assert seen["b"] == ("cython", False)
    assert seen["a after"] == "numpy" and seen["a restored"] == "cython"

    # A thread started inside the block does not inherit it (threads start with a
    # fresh context); the block is still active in the thread that opened it.
    with fastcnn.use_backend("numpy"):
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            assert pool.submit(fastcnn.get_backend).result() == "cython"
        assert fastcnn.get_backend() == "numpy"
    assert fastcnn.get_backend() == "cython"


@needs_compiled
def test_many_threads_switching_backends_see_only_their_own():
    """32 threads each enter and leave use_backend blocks in a loop; none sees another's."""
    errors = []
    go = threading.Barrier(32)

    def worker(i):
        mine = "numpy" if i % 2 else "cython"
        go.wait(timeout=10)
        for _ in range(200):
            with fastcnn.use_backend(mine):
                if fastcnn.get_backend() != mine:
                    errors.append((i, fastcnn.get_backend()))
            if fastcnn.get_backend() != "cython":
                errors.append((i, "after", fastcnn.get_backend()))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:5]
