"""Hostile conditions: fork, other threads changing the inputs, Ctrl-C.

Each failure mode here is a hang or a crash of the interpreter, so each runs
in a child process, in a session of its own, with a timeout (the child's
whole process group is killed when it runs out):

* fork: after the parent ran multi-threaded kernels, a child made by
  ``os.fork()``, a ``multiprocessing`` pool and a ``ProcessPoolExecutor``
  with the "fork" start method run kernels (one thread each) and get the
  parent's results bit for bit. (libgomp's thread pool does not survive a
  fork: a child that opens a team of two threads waits forever.)
* races: while the main thread calls the ops, another thread writes
  out-of-range values into ``max_pool2d_backward``'s indices or the labels
  of ``softmax_cross_entropy``, or changes the shape attribute of the arrays
  passed in (between validation and kernel), or the values that adaptive max
  pooling compares; the process must survive (errors are fine, out-of-bounds
  accesses are not), and the pooling's indices stay in their windows.
* Ctrl-C: SIGINT during a call of several seconds raises KeyboardInterrupt
  within 0.5 s, leaves no thread computing, and the next call works. Long
  calls run in pieces (``_backend.in_pieces``); in-process tests below check
  that pieces give the same bits as the whole call, that small calls are
  one piece, and that a long convolution backward sums in short chunks
  (pieces hold whole chunks).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastcnn
from fastcnn import _backend
from fastcnn import functional as F

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastcnn.__file__)))
needs_compiled = pytest.mark.skipif(
    fastcnn.get_backend() != "cython", reason="about the compiled kernels (numpy backend run)")


def _start(code: str) -> subprocess.Popen:
    """A child Python running `code` on the compiled kernels, in its own session."""
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT, FASTCNN_BACKEND="cython")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=PACKAGE_ROOT,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """Wait for `proc`; kill its whole process group (forked children too) and
    fail if it is still running after `timeout` seconds."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the child hung (killed after {timeout} s)\nstdout:\n{out}\nstderr:\n{err}")
    assert proc.returncode == 0, (
        f"the child failed with status {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}")
    return out, err


def _run(code: str, timeout: float = 120) -> str:
    return _finish(_start(code), timeout)[0]


# ---------------------------------------------------------------------------
# fork

# The parent runs every kernel family on a team of two threads (the size
# limits lowered so that these small inputs are parallel), then its children
# run the same calls.
FORK_PRELUDE = """
    import os, sys
    import numpy as np
    import fastcnn
    from fastcnn import _backend, functional as F

    _backend.PARALLEL_BYTES = 0
    _backend.PARALLEL_MACS = 0
    fastcnn.set_num_threads(2)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 8, 33, 31))
    w = rng.standard_normal((6, 8, 3, 3))

    def calls(_=None):
        out, idx = F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
        y = F.conv2d(x, w, padding=1)
        return [out, idx, F.max_pool2d_backward(out, idx, x.shape), F.avg_pool2d(x, 2),
                F.im2col(x, 3), y, *F.conv2d_backward(y, x, w, padding=1),
                np.array(fastcnn.get_num_threads())]

    def same(a, b):
        return all(u.dtype == v.dtype and u.shape == v.shape and u.tobytes() == v.tobytes()
                   for u, v in zip(a, b))

    parent = calls()
    assert parent[-1] == 2
"""


@needs_compiled
def test_forked_child_runs_kernels_after_parallel_parent():
    out = _run(FORK_PRELUDE + """
    pid = os.fork()
    if pid == 0:
        child = calls()
        # one thread in the child, the parent's bits
        os._exit(0 if child[-1] == 1 and same(child[:-1], parent[:-1]) else 3)
    _, status = os.waitpid(pid, 0)
    print("child status", os.waitstatus_to_exitcode(status))
    assert fastcnn.get_num_threads() == 2  # the parent is unchanged
    assert same(calls(), parent)
    """, timeout=30)
    assert "child status 0" in out


@needs_compiled
def test_fork_start_method_pools_finish_with_the_parents_results():
    out = _run(FORK_PRELUDE + """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    fork = multiprocessing.get_context("fork")
    with fork.Pool(2) as pool:
        results = pool.map(calls, range(4))
    with ProcessPoolExecutor(2, mp_context=fork) as executor:
        results += list(executor.map(calls, range(4)))
    assert all(r[-1] == 1 and same(r[:-1], parent[:-1]) for r in results)
    print("pools ok", len(results))
    """, timeout=30)
    assert "pools ok 8" in out


# ---------------------------------------------------------------------------
# races: another thread changes the inputs while the ops run

# Switch threads as often as possible; the mutating thread makes a Python
# call after each change, which is where it hands over the GIL.
RACE_PRELUDE = """
    import sys, threading, time
    import numpy as np
    import fastcnn
    from fastcnn import functional as F

    sys.setswitchinterval(1e-6)

    def pause():
        pass

    def hammer(seconds, call, mutate):
        stop = threading.Event()

        def mutator():
            while not stop.is_set():
                mutate()

        thread = threading.Thread(target=mutator)
        thread.start()
        end, calls, errors = time.monotonic() + seconds, 0, 0
        try:
            while time.monotonic() < end:
                try:
                    call()
                    calls += 1
                except (ValueError, TypeError):
                    errors += 1  # the mutation was seen by the validation
        finally:
            stop.set()
            thread.join()
        return calls, errors
"""


@needs_compiled
def test_indices_and_labels_changed_during_a_call_never_go_out_of_bounds():
    out = _run(RACE_PRELUDE + """
    rng = np.random.default_rng(0)
    for shape, k, dtype in (((8, 16, 64, 64), 2, np.float64), ((4, 8, 64, 64), 3, np.float32)):
        x = rng.standard_normal(shape).astype(dtype)
        # 2x2 windows take the kernel that checks whether indices tile the input
        y, idx = F.max_pool2d(x, k, return_indices=True)
        good = idx.copy()

        def mutate():
            idx[...] = 1 << 40  # far outside every plane
            pause()
            idx[...] = -(1 << 40)
            pause()
            idx[...] = good

        print(hammer(1.0, lambda: F.max_pool2d_backward(y, idx, x.shape), mutate))

    from fastcnn.losses import softmax_cross_entropy
    logits = rng.standard_normal((4096, 10))
    labels = rng.integers(0, 10, 4096)
    good = labels.copy()

    def mutate():
        labels[::7] = 1 << 40
        pause()
        labels[::7] = -(1 << 40)
        pause()
        labels[...] = good

    print(hammer(1.0, lambda: softmax_cross_entropy(logits, labels), mutate))
    print("survived")
    """, timeout=60)
    assert "survived" in out


@needs_compiled
def test_values_changed_during_adaptive_max_pool_keep_its_indices_in_their_windows():
    # The values decide which cell of a window wins, never where a kernel
    # reads or writes: another thread flipping cells to NaN, -inf and back
    # meanwhile gives each index in its window all the same.
    out = _run(RACE_PRELUDE + """
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 16, 45, 37))
    good = x.copy()

    def mutate():
        x[:, :, ::3] = np.nan
        pause()
        x[:, :, 1::2] = -np.inf
        pause()
        x[...] = good

    windows_h = [(i * 45 // 7, -(-(i + 1) * 45 // 7)) for i in range(7)]
    windows_w = [(j * 37 // 40, -(-(j + 1) * 37 // 40)) for j in range(40)]

    def call():
        idx = F.adaptive_max_pool2d(x, (7, 40), return_indices=True)[1]
        rows, cols = idx // 37, idx % 37
        for i, (start, end) in enumerate(windows_h):
            assert ((start <= rows[:, :, i]) & (rows[:, :, i] < end)).all()
        for j, (start, end) in enumerate(windows_w):
            assert ((start <= cols[..., j]) & (cols[..., j] < end)).all()

    fastcnn.set_num_threads(2)
    calls, _ = hammer(1.0, call, mutate)
    print("survived", calls > 0)
    """, timeout=60)
    assert "survived True" in out


@needs_compiled
def test_shapes_changed_between_validation_and_kernel_never_go_out_of_bounds():
    # ndarray.shape can be assigned in place: an array the caller still holds
    # may take another shape between the op's checks and its kernel.
    out = _run(RACE_PRELUDE + """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 32, 32))
    w = rng.standard_normal((8, 4, 3, 3))
    y = F.conv2d(x, w)
    p, idx = F.max_pool2d(x, 2, return_indices=True)
    cols = F.im2col(x, 3)
    a = F.avg_pool2d(x, 2)

    def reshaping(*arrays):
        shapes = [arr.shape for arr in arrays]

        def mutate():
            for arr in arrays:  # same size, far more planes
                arr.shape = arr.shape[::-1]
            pause()
            for arr, shape in zip(arrays, shapes):
                arr.shape = shape
        return mutate

    cases = [
        (lambda: F.avg_pool2d(x, 2), (x,)),
        (lambda: F.max_pool2d(x, 2, return_indices=True), (x,)),
        (lambda: F.im2col(x, 3), (x,)),
        (lambda: F.col2im(cols, 32, 3), (cols,)),
        (lambda: F.conv2d(x, w), (x, w)),
        (lambda: F.conv2d_backward(y, x, w), (y, x, w)),
        (lambda: F.max_pool2d_backward(p, idx, x.shape), (p, idx)),
        (lambda: F.avg_pool2d_backward(a, x.shape, 2), (a,)),
        (lambda: F.adaptive_avg_pool2d(x, 5), (x,)),
        (lambda: F.adaptive_max_pool2d(x, 5, return_indices=True), (x,)),
        (lambda: F.adaptive_avg_pool2d_backward(a, x.shape), (a,)),
    ]
    for call, arrays in cases:
        print(hammer(0.3, call, reshaping(*arrays)))
    print("survived")
    """, timeout=60)
    assert "survived" in out


# ---------------------------------------------------------------------------
# Ctrl-C

# Each call takes 3-4 s on two threads of the reference machine (more when
# other processes share its cores), with 0.4-1.6 GB of float64 arrays, filled
# with ones (quick to make; the values do not matter).
LONG_CALLS = {
    # a batch of one: pieces are channel ranges of the one sample
    "avg_pool2d": """
        x = np.ones((1, 384, 256, 256))
        def long_call():
            F.avg_pool2d(x, 21, stride=1)
    """,
    # pieces of samples
    "conv2d": """
        x = np.ones((160, 128, 64, 64))
        w = np.ones((128, 128, 3, 3))
        def long_call():
            F.conv2d(x, w, padding=1)
    """,
    # pieces of whole chunks of samples (two samples per chunk here)
    "conv2d_backward": """
        x = np.ones((256, 64, 64, 64))
        w = np.ones((64, 64, 3, 3))
        def long_call():
            F.conv2d_backward(x, x, w, padding=1)
    """,
}

INTERRUPTED = """
    import signal, threading, time
    import numpy as np
    import fastcnn
    from fastcnn import functional as F

    # a child started from a background job may have inherited SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    fastcnn.set_num_threads(2)
    {setup}
    small = np.arange(2 * 3 * 6 * 6, dtype=np.float64).reshape(2, 3, 6, 6)
    expected = F.avg_pool2d(small, 2)
    print("ready", flush=True)
    start = time.monotonic()
    try:
        long_call()
    except KeyboardInterrupt:
        print("caught", time.monotonic(), flush=True)
    else:
        raise SystemExit(f"finished in {{time.monotonic() - start:.1f}} s without an interrupt")
    # nothing computes any more: no Python thread, no busy OpenMP thread
    assert threading.active_count() == 1
    cpu = time.process_time()
    time.sleep(0.3)
    print("cpu_after", time.process_time() - cpu, flush=True)
    assert np.array_equal(F.avg_pool2d(small, 2), expected)
    print("next call ok", flush=True)
"""


@needs_compiled
@pytest.mark.parametrize("op", sorted(LONG_CALLS))
def test_ctrl_c_interrupts_a_long_call_within_half_a_second(op):
    setup = textwrap.indent(textwrap.dedent(LONG_CALLS[op]), "    ")
    proc = _start(INTERRUPTED.format(setup=setup))
    try:
        line = proc.stdout.readline()
        assert line == "ready\n", line + proc.stderr.read()
        time.sleep(0.5)
        sent = time.monotonic()  # CLOCK_MONOTONIC: the child's clock too
        proc.send_signal(signal.SIGINT)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    out, _ = _finish(proc, timeout=60)
    report = dict(line.split(" ", 1) for line in out.splitlines())
    delay = float(report["caught"]) - sent
    assert delay < 0.5, f"KeyboardInterrupt came {delay:.2f} s after SIGINT"
    assert float(report["cpu_after"]) < 0.1, "threads kept computing after the interrupt"
    assert "next call ok" in out


# ---------------------------------------------------------------------------
# pieces: the same bits as the whole call; small calls are one piece


def _ops(dtype):
    """{name: call} of every op that runs in pieces, on inputs with 2 samples of 5 channels."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 17, 15)).astype(dtype)
    w = rng.standard_normal((6, 5, 3, 3)).astype(dtype)
    xg = rng.standard_normal((2, 6, 17, 15)).astype(dtype)
    wg = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    y = F.conv2d(x, w, b, padding=1)
    dy = rng.standard_normal(y.shape).astype(dtype)
    cols = F.im2col(x, 3, stride=2, padding=1)
    dp = rng.standard_normal((2, 5, 9, 8)).astype(dtype)
    _, idx = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    big = rng.standard_normal((37, 2, 9, 8)).astype(dtype)  # 19 chunks of conv2d_backward
    dbig = rng.standard_normal((37, 6, 7, 6)).astype(dtype)
    flat, dense = big.reshape(37, -1), rng.standard_normal((7, 144)).astype(dtype)
    dflat = rng.standard_normal((37, 7)).astype(dtype)
    return {
        "im2col": lambda: F.im2col(x, 3, stride=2, padding=1),
        "col2im": lambda: F.col2im(cols, (17, 15), 3, stride=2, padding=1),
        "max_pool2d": lambda: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True,
                                           return_indices=True),
        "max_pool2d_backward": lambda: F.max_pool2d_backward(dp, idx, x.shape),
        "avg_pool2d": lambda: F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
        "avg_pool2d_backward": lambda: F.avg_pool2d_backward(dp, x.shape, 3, stride=2,
                                                             padding=1, ceil_mode=True),
        "conv2d": lambda: F.conv2d(x, w, b, padding=1),
        "conv2d-groups": lambda: F.conv2d(xg, wg, b, stride=2, groups=3),
        "conv2d_backward": lambda: F.conv2d_backward(dy, x, w, padding=1),
        "conv2d_backward-chunks": lambda: F.conv2d_backward(dbig, big, w[:, :2], stride=1),
        "linear": lambda: F._linear(flat, dense, dflat[0]),
        "linear_backward": lambda: F._linear_backward(dflat, flat, dense),
        "interpolate-nearest": lambda: F.interpolate(x, scale_factor=1.5),
        "interpolate-bilinear": lambda: F.interpolate(x, size=(9, 31), mode="bilinear"),
        "interpolate_backward": lambda: F.interpolate_backward(
            dp, x.shape, size=(9, 8), mode="bilinear", align_corners=True),
        "max_unpool2d": lambda: F.max_unpool2d(dp, idx, 3, stride=2, padding=1,
                                               output_size=x.shape),
        "max_unpool2d_backward": lambda: F.max_unpool2d_backward(x, idx),
        "adaptive_avg_pool2d": lambda: F.adaptive_avg_pool2d(x, (5, 20)),
        "adaptive_avg_pool2d-global": lambda: F.adaptive_avg_pool2d(x, 1),
        "adaptive_avg_pool2d_backward": lambda: F.adaptive_avg_pool2d_backward(dp, x.shape),
        "adaptive_max_pool2d": lambda: F.adaptive_max_pool2d(x, (5, 20), return_indices=True),
    }


def _flat(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pieces_give_the_bits_of_the_whole_call(monkeypatch, small_ops_parallel, dtype):
    whole = {name: _flat(call()) for name, call in _ops(dtype).items()}
    # Every call in the smallest pieces: one sample, or one channel, per thread.
    monkeypatch.setattr(_backend, "PIECE_SECONDS", 0.0)
    for threads in (1, 2):
        fastcnn.set_num_threads(threads)
        try:
            for name, call in _ops(dtype).items():
                for got, want in zip(_flat(call()), whole[name], strict=True):
                    assert got.dtype == want.dtype and got.shape == want.shape, name
                    assert got.tobytes() == want.tobytes(), f"{name} differs in pieces"
        finally:
            fastcnn.set_num_threads(None)


def _count_pieces(monkeypatch, name):
    """Record the leading shape of the first argument of every call of kernel `name`."""
    compiled, twin = _backend.pair_of(name)
    seen = []

    def spy(kernel):
        def call(first, *rest):
            seen.append(first.shape[:2])
            return kernel(first, *rest)
        return call

    if compiled is not None:
        monkeypatch.setitem(_backend._compiled, name, spy(compiled))
    monkeypatch.setattr(_backend.reference, name, spy(twin))
    return seen


def test_small_calls_are_one_piece_and_long_ones_cover_every_item(monkeypatch):
    x = np.ones((3, 4, 16, 16))
    seen = _count_pieces(monkeypatch, "avg_pool2d")
    F.avg_pool2d(x, 2)
    assert seen == [(3, 4)]
    seen.clear()
    # as if one plane took longer than a piece: one plane per piece (this
    # small call runs on one thread)
    monkeypatch.setattr(_backend, "PIECE_SECONDS", 1e-12)
    F.avg_pool2d(x, 2)
    assert seen == [(1, 1)] * 12
    # a batch of one: ranges of two channels on two threads (the NumPy twin: one)
    seen.clear()
    fastcnn.set_num_threads(2)
    try:
        F.avg_pool2d(np.ones((1, 5, 600, 600)), 2)
    finally:
        fastcnn.set_num_threads(None)
    compiled = fastcnn.get_backend() == "cython"
    assert seen == ([(1, 2), (1, 2), (1, 1)] if compiled else [(1, 1)] * 5)


@pytest.mark.parametrize("algorithm, name, parts_arg", [
    ("gemm", "conv2d_backward", 18), ("direct", "conv2d_direct_backward", 13)])
def test_a_long_convolution_backward_sums_in_short_chunks(monkeypatch, algorithm, name,
                                                          parts_arg):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((48, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    dy = rng.standard_normal((48, 4, 6, 6))
    with _backend.use_conv_algorithm(algorithm):
        usual = F.conv2d_backward(dy, x, w)
    # as if every sample took longer than a chunk should: one chunk per
    # sample, more than the usual most of 32 chunks
    monkeypatch.setattr(F, "_CHUNK_SECONDS", 1e-12)
    chunks = []

    def spy(kernel):
        def call(*args):
            chunks.append(len(args[parts_arg]))  # dweight_parts
            return kernel(*args)
        return call

    compiled, twin = _backend.pair_of(name)
    if compiled is not None:
        monkeypatch.setitem(_backend._compiled, name, spy(compiled))
    monkeypatch.setattr(_backend.reference, name, spy(twin))
    with _backend.use_conv_algorithm(algorithm):
        for got, want in zip(F.conv2d_backward(dy, x, w), usual, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert chunks == [48]
