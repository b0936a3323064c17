"""Reuse of the layers' result arrays (fastcnn._buffers): never visible, and
a training step allocates no large array once it has run twice."""

import copy
import pickle
import threading
import tracemalloc

import numpy as np
import pytest

import fastcnn
from fastcnn import Residual, Sequential, _backend, _buffers, layers as L
from fastcnn._buffers import BufferPool
from fastcnn.losses import softmax_cross_entropy
from fastcnn.optim import Adam

LARGE = (64, 1024)  # float32: 256 KiB, above MIN_BYTES


def _taken_again(pool, make_busy=None):
    """Whether a pool hands out the same array again after `make_busy(a)` (if
    given) ran on the array it handed out first."""
    a = pool.empty(LARGE, np.float32)
    first, keep = id(a), make_busy(a) if make_busy else None
    del a
    b = pool.empty(LARGE, np.float32)
    del keep
    return id(b) == first


def test_a_dropped_array_is_handed_out_again():
    assert _taken_again(BufferPool())


@pytest.mark.parametrize("hold", [
    lambda a: a,
    lambda a: a[1:],
    lambda a: a.reshape(-1),
    lambda a: memoryview(a),
    lambda a: [a],
    lambda a: np.frombuffer(a, np.uint8),
], ids=["name", "slice", "reshaped view", "memoryview", "list", "frombuffer"])
def test_an_array_still_referenced_is_never_handed_out(hold):
    assert not _taken_again(BufferPool(), hold)


def _made_read_only(a):
    a.flags.writeable = False


def _reshaped_in_place(a):
    a.shape = (LARGE[1], LARGE[0])


@pytest.mark.parametrize("change", [_made_read_only, _reshaped_in_place])
def test_an_array_changed_in_place_by_its_last_holder_is_not_handed_out(change):
    assert not _taken_again(BufferPool(), change)


def test_small_arrays_are_not_kept():
    pool = BufferPool()
    a = pool.empty((4,), np.float64)
    first = id(a)
    del a
    b = pool.empty((4,), np.float64)
    assert pool._arrays == {}
    del b, first


def test_a_pool_keeps_few_arrays_of_a_shape_and_few_shapes():
    pool = BufferPool()
    held = [pool.empty(LARGE, np.float32) for _ in range(3 * _buffers.MOST_ARRAYS)]
    assert len(pool._arrays[LARGE, np.dtype(np.float32)]) == _buffers.MOST_ARRAYS
    for rows in range(1, 3 * _buffers.MOST_SHAPES):
        held.append(pool.empty((rows, 1 << 15), np.float32))
    assert len(pool._arrays) == _buffers.MOST_SHAPES


def test_copies_and_pickles_of_a_pool_are_empty():
    pool = BufferPool()
    a = pool.empty(LARGE, np.float32)
    for clone in (copy.copy(pool), copy.deepcopy(pool), pickle.loads(pickle.dumps(pool))):
        assert isinstance(clone, BufferPool) and clone._arrays == {}
    del a


def test_empty_uses_the_calling_threads_innermost_pool():
    outer, inner = BufferPool(), BufferPool()
    seen = {}

    def other_thread():
        seen["other"] = _buffers.empty(LARGE, np.float32)

    with outer:
        a = _buffers.empty(LARGE, np.float32)
        with inner:
            b = _buffers.empty(LARGE, np.float32)
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
        c = _buffers.empty(LARGE, np.float32)
    assert any(x is a for x in outer._arrays[LARGE, np.dtype(np.float32)])
    assert any(x is c for x in outer._arrays[LARGE, np.dtype(np.float32)])
    assert [x is b for x in inner._arrays[LARGE, np.dtype(np.float32)]] == [True]
    assert all(x is not seen["other"] for x in outer._arrays[LARGE, np.dtype(np.float32)])
    assert _buffers.empty(LARGE, np.float32) is not a  # no pool outside a block


def _network(rng=0):
    """Every layer family whose arrays the step makes, at sizes above MIN_BYTES."""
    rng = np.random.default_rng(rng)
    block = Residual(Sequential([L.Conv2D(8, 8, 3, padding=1, rng=rng), L.BatchNorm2D(8)]))
    return Sequential([
        L.Conv2D(3, 8, 3, padding=1, rng=rng), L.BatchNorm2D(8), L.ReLU(), block,
        L.Conv2D(8, 16, 3, stride=2, padding=1, rng=rng), L.LeakyReLU(0.1), L.MaxPool2D(2),
        L.Flatten(), L.Dropout(0.5, rng=rng), L.Dense(16 * 8 * 8, 256, rng=rng), L.Tanh(),
        L.Dense(256, 10, rng=rng),
    ])  # fmt: skip


def _training(model, steps):
    """A generator: each next() is one training step of `model`."""
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((128, 3, 32, 32)).astype(np.float32),
                rng.integers(0, 10, 128)) for _ in range(steps)]
    optimizer = Adam(model, lr=1e-2)
    for x, labels in batches:
        _, dlogits = softmax_cross_entropy(model.forward(x), labels)
        model.backward(dlogits)
        optimizer.step()
        yield


@pytest.mark.skipif(not _backend.compiled_available(),
                    reason="compiled kernels not built (FASTCNN_BACKEND=numpy run)")
def test_a_training_step_allocates_no_large_array_after_two():
    # (the NumPy twins are the oracle: they make temporaries freely)
    model = _network()
    with fastcnn.use_backend("cython"):
        steps = _training(model, 3)
        next(steps), next(steps)
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            next(steps)
            peak = tracemalloc.get_traced_memory()[1] - start
        finally:
            tracemalloc.stop()
    # the network's smallest pooled array is 256 KiB; it has 21 of them
    assert peak < 256 << 10


def test_reuse_changes_no_result(backend, monkeypatch):
    reused = _network()
    for _ in _training(reused, 4):
        pass
    monkeypatch.setattr(_buffers, "MIN_BYTES", float("inf"))
    fresh = _network()
    for _ in _training(fresh, 4):
        pass
    for (name, a), (_, b) in zip(reused.named_parameters(), fresh.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_outputs_and_gradients_the_caller_keeps_are_never_overwritten(backend):
    model = _network()
    rng = np.random.default_rng(2)
    kept = []
    for _ in range(4):
        x = rng.standard_normal((128, 3, 32, 32)).astype(np.float32)
        out = model.forward(x)
        dx = model.backward(np.ones_like(out))
        kept.append((out, out.copy(), dx, dx.copy()))
    for out, out_then, dx, dx_then in kept:
        np.testing.assert_array_equal(out, out_then)
        np.testing.assert_array_equal(dx, dx_then)
