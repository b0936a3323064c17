"""fastcnn.compat.hipsternet against hipsternet's own layer.py (tests/originals/hipsternet).

Function by function (values, shapes, dtypes, caches where the network
reads them), then hipsternet's networks trained through the README's
one-line swap in neuralnet.py, and through a run-time patch of
``neuralnet.l``, with the same losses.
"""

from __future__ import annotations

import numpy as np
import originals
import pytest
from originals.cs231n import fast_layers as course_fast
from originals.hipsternet import layer as original
from originals.hipsternet import neuralnet, solver

from fastcnn.compat import cs231n, hipsternet

def assert_same(got, want, rtol=1e-12):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


def test_every_function_of_layer_py_and_the_im2col_trio_is_here():
    public = {name for name in dir(original)
              if not name.startswith("_") and callable(getattr(original, name))}
    assert public <= set(hipsternet.__all__)
    assert set(hipsternet.__all__) <= set(dir(hipsternet))
    assert hipsternet.im2col_indices is cs231n.im2col_indices  # one implementation


@pytest.mark.parametrize("stride, padding, field", [(1, 1, 3), (1, 0, 3), (2, 1, 3), (1, 2, 5),
                                                    (3, 0, 3)])
@pytest.mark.parametrize("x_dtype, w_dtype", [(np.float64, np.float64), (np.float32, np.float32),
                                              (np.float32, np.float64)])
def test_conv_matches(backend, stride, padding, field, x_dtype, w_dtype):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 2, 9, 9)).astype(x_dtype)
    W = rng.standard_normal((4, 2, field, field)).astype(w_dtype)
    b = rng.standard_normal((4, 1)).astype(w_dtype)
    rtol = 1e-5 if np.float32 in (x_dtype, w_dtype) else 1e-12
    out, cache = hipsternet.conv_forward(X, W, b, stride, padding)
    want, original_cache = original.conv_forward(X, W, b, stride, padding)
    assert_same(out, want, rtol)
    dout = rng.standard_normal(out.shape).astype(x_dtype)
    for got, expected in zip(hipsternet.conv_backward(dout, cache),
                             original.conv_backward(dout, original_cache)):
        assert_same(got, expected, 10 * rtol)


def test_conv_and_pool_reject_what_the_original_rejects():
    X, W, b = np.ones((1, 1, 6, 6)), np.ones((2, 1, 3, 3)), np.zeros((2, 1))
    for impl in (original, hipsternet):
        with pytest.raises(Exception, match="Invalid output dimension!"):
            impl.conv_forward(X, W, b, stride=2, padding=0)
        with pytest.raises(Exception, match="Invalid output dimension!"):
            impl.maxpool_forward(np.ones((1, 1, 7, 7)))
    with pytest.raises(ValueError, match="b must hold one bias per filter"):
        hipsternet.conv_forward(X, W, np.zeros(3))


@pytest.mark.parametrize("size, stride", [(2, 2), (3, 1), (2, 1), (4, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pools_match_on_square_inputs(backend, size, stride, dtype):
    # A permutation: no ties, so every argmax is unambiguous.
    X = np.random.default_rng(size + stride).permutation(2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    X = (X / 7.0).astype(dtype)
    dout_rng = np.random.default_rng(2)
    for kind in ("maxpool", "avgpool"):
        out, cache = getattr(hipsternet, f"{kind}_forward")(X, size, stride)
        want, original_cache = getattr(original, f"{kind}_forward")(X, size, stride)
        assert_same(out, want, 1e-6)
        dout = dout_rng.standard_normal(out.shape)
        dX = getattr(hipsternet, f"{kind}_backward")(dout, cache)
        assert_same(dX, getattr(original, f"{kind}_backward")(dout, original_cache), 1e-6)


def test_pool_backward_is_right_for_non_square_inputs(backend):
    """The original swaps H and W in _pool_backward: wrong for H != W."""
    X = np.random.default_rng(3).permutation(2 * 2 * 4 * 6).reshape(2, 2, 4, 6) / 5.0
    dout = np.random.default_rng(4).standard_normal((2, 2, 2, 3))
    pool = {"pool_height": 2, "pool_width": 2, "stride": 2}
    _, course_cache = course_fast.max_pool_forward_reshape(X, pool)
    right = course_fast.max_pool_backward_reshape(dout, course_cache)  # no ties: exact
    wrong = original.maxpool_backward(dout, original.maxpool_forward(X)[1])
    assert not np.allclose(wrong, right)
    dX = hipsternet.maxpool_backward(dout, hipsternet.maxpool_forward(X)[1])
    np.testing.assert_array_equal(dX, right)
    spread = np.repeat(np.repeat(dout / 4, 2, axis=2), 2, axis=3)
    dX = hipsternet.avgpool_backward(dout, hipsternet.avgpool_forward(X)[1])
    np.testing.assert_allclose(dX, spread, rtol=1e-15)


def test_max_pool_ties_go_to_the_first_maximum():
    X = np.ones((1, 1, 2, 2))
    dout = np.array([[[[3.0]]]])
    for impl in (original, hipsternet):
        dX = impl.maxpool_backward(dout, impl.maxpool_forward(X)[1])
        np.testing.assert_array_equal(dX, [[[[3.0, 0], [0, 0]]]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_layers_and_their_caches_match(dtype):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((6, 5)).astype(dtype)
    X[0, :2] = 0  # ReLU's gradient at 0 is 0 here (1 in ML-From-Scratch)
    dout = rng.standard_normal((6, 5)).astype(dtype)
    for name, args in [("relu", ()), ("lrelu", (0.1,)), ("sigmoid", ()), ("tanh", ())]:
        out, cache = getattr(hipsternet, f"{name}_forward")(X, *args)
        want, original_cache = getattr(original, f"{name}_forward")(X, *args)
        assert_same(out, want)
        # NeuralNet binds the original backward at import: it gets our cache.
        assert_same(getattr(original, f"{name}_backward")(dout, cache),
                    getattr(original, f"{name}_backward")(dout, original_cache))
        assert_same(getattr(hipsternet, f"{name}_backward")(dout, cache),
                    getattr(original, f"{name}_backward")(dout, original_cache))
    W, b = rng.standard_normal((5, 3)).astype(dtype), np.zeros((1, 3), dtype)
    out, cache = hipsternet.fc_forward(X, W, b)
    assert_same(out, original.fc_forward(X, W, b)[0])
    douts = rng.standard_normal(out.shape).astype(dtype)
    for got, want in zip(hipsternet.fc_backward(douts, cache), original.fc_backward(douts, cache)):
        assert_same(got, want)
    assert hipsternet.fc_backward(douts, cache)[2].shape == (3,)


def test_dropout_draws_as_the_original(global_rng):
    X = np.random.default_rng(6).standard_normal((50, 40))
    outputs, states = [], []
    for impl in (original, hipsternet):
        global_rng(7)
        out, u = impl.dropout_forward(X, 0.8)  # 0.8 = the KEEP probability
        outputs.append((out, u, impl.dropout_backward(X, u)))
        states.append(np.random.get_state()[1].copy())
    for got, want in zip(*outputs):
        assert_same(got, want)
    np.testing.assert_array_equal(*states)
    assert set(np.unique(outputs[1][1])) == {0.0, 1 / 0.8}


def test_batch_norm_matches():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((16, 5)) * 3 + 1
    gamma, beta = rng.standard_normal((1, 5)), rng.standard_normal((1, 5))
    running = (np.zeros((1, 5)), np.ones((1, 5)))
    for train in (True, False):
        got = hipsternet.bn_forward(X, gamma, beta, running, momentum=0.8, train=train)
        want = original.bn_forward(X, gamma, beta, running, momentum=0.8, train=train)
        for g, w in zip(got[:1] + got[2:], want[:1] + want[2:]):
            assert_same(g, w)
        assert (got[1] is None) == (want[1] is None) == (not train)
    _, cache, _, _ = hipsternet.bn_forward(X, gamma, beta, running)
    dout = rng.standard_normal(X.shape)
    for g, w in zip(hipsternet.bn_backward(dout, cache), original.bn_backward(dout, cache)):
        assert_same(g, w, 1e-10)


def mnist_like(n=96):
    """Mean-subtracted float32 28x28 images (what run_mnist.py feeds) and labels."""
    rng = np.random.default_rng(9)
    X = rng.random((n, 1, 28, 28), dtype=np.float32)
    return X - X.mean(axis=0), rng.integers(0, 10, n)


def train(net_module, make_net, seed, X, y, n_iter):
    np.random.seed(seed)
    nn = make_net(net_module)
    return solver.adam(nn, X, y, alpha=1e-3, mb_size=32, n_iter=n_iter)[1]


def conv_net(module):
    return module.ConvNet(4, 10, H=16)


def test_convnet_trains_the_same_through_the_one_line_swap(load_copy, global_rng):
    swapped = load_copy("hipsternet", "hipsternet_swapped", [originals.SWAPS["hipsternet"]])
    import hipsternet_swapped.neuralnet  # noqa: F401

    assert swapped.neuralnet.l is hipsternet
    X, y = mnist_like()
    want = train(neuralnet, conv_net, 0, X, y, 5)
    got = train(swapped.neuralnet, conv_net, 0, X, y, 5)
    assert want[-1] < want[0]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_networks_train_the_same_with_l_patched_at_run_time(monkeypatch, global_rng):
    """Patching neuralnet.l after import: the class-bound non-linearities stay
    the original's and receive the drop-in's caches."""
    X, y = mnist_like()
    want_conv = train(neuralnet, conv_net, 1, X, y, 4)
    flat = X.reshape(len(X), -1)

    def feed_forward(module):
        return module.FeedForwardNet(flat.shape[1], 10, 32, p_dropout=0.8)

    want_ff = train(neuralnet, feed_forward, 2, flat, y, 4)
    monkeypatch.setattr(neuralnet, "l", hipsternet)
    assert neuralnet.NeuralNet.backward_nonlins["relu"] is original.relu_backward
    np.testing.assert_allclose(train(neuralnet, conv_net, 1, X, y, 4), want_conv, rtol=1e-10)
    np.testing.assert_allclose(train(neuralnet, feed_forward, 2, flat, y, 4), want_ff, rtol=1e-10)
