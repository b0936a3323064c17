"""fastcnn.compat.mlfromscratch against ML-From-Scratch's own layers.py
(tests/originals/mlfromscratch).

The helpers function by function, the layer classes step by step (weights
drawn from the same global generator, the optimizer's updates, the input
gradient), then the project's CNN example and a pooling network trained
through the README's one added import line, with the same losses. The
original's pooling layers cannot train as published; they are compared with
its ``determine_padding`` patched to read 0 as "valid".
"""

from __future__ import annotations

import numpy as np
import originals
import pytest
from originals.mlfromscratch import examples
from originals.mlfromscratch import layers as original

from fastcnn.compat import mlfromscratch

@pytest.fixture
def pooling_fixed(monkeypatch):
    """The original with the fix its pooling layers need: 0 means "valid"."""
    monkeypatch.setattr(original, "determine_padding", original.determine_padding_fixed)


def assert_same(got, want, rtol=1e-12):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("field", [(3, 3), (2, 2), (5, 4), (1, 1)])
def test_determine_padding(field):
    for output_shape in ("same", "valid"):
        assert mlfromscratch.determine_padding(field, output_shape) == original.determine_padding(
            field, output_shape)
    assert mlfromscratch.determine_padding(field, 0) == ((0, 0), (0, 0))
    assert original.determine_padding(field, 0) is None  # the published bug
    with pytest.raises(ValueError, match="output_shape must be 'same', 'valid' or 0"):
        mlfromscratch.determine_padding(field, "full")


CASES = [  # (images shape, filter shape, stride, output_shape)
    ((3, 2, 6, 6), (3, 3), 1, "same"),
    ((3, 2, 6, 6), (3, 3), 2, "same"),
    ((3, 2, 6, 6), (3, 3), 2, "valid"),  # does not tile: truncated to 2x2
    ((2, 3, 5, 7), (2, 2), 1, "same"),  # even field: extra row/column bottom/right
    ((2, 3, 5, 7), (2, 3), 2, "same"),
    ((4, 1, 8, 8), (2, 2), 2, "valid"),
]


@pytest.mark.parametrize("shape, field, stride, output_shape", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_helpers_match(backend, shape, field, stride, output_shape, dtype):
    images = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    padding = original.determine_padding(field, output_shape)
    got = mlfromscratch.get_im2col_indices(shape, field, padding, stride)
    for g, e in zip(got, original.get_im2col_indices(shape, field, padding, stride)):
        assert g.shape == e.shape and g.dtype.kind == "i"
        np.testing.assert_array_equal(g, e)
    cols = mlfromscratch.image_to_column(images, field, stride, output_shape)
    want = original.image_to_column(images, field, stride, output_shape)
    assert cols.dtype == want.dtype == dtype and cols.flags.c_contiguous
    np.testing.assert_array_equal(cols, want)
    back = mlfromscratch.column_to_image(cols, shape, field, stride, output_shape)
    want_back = original.column_to_image(want, shape, field, stride, output_shape)
    assert back.dtype == want_back.dtype == np.float64  # always, as the original
    np.testing.assert_allclose(back, want_back, rtol=1e-12)
    if output_shape == "valid":
        np.testing.assert_array_equal(mlfromscratch.image_to_column(images, field, stride, 0), cols)


def test_column_to_image_takes_any_shape_of_the_right_size():
    cols = np.random.default_rng(2).standard_normal((18, 64))
    want = original.column_to_image(cols, (4, 2, 4, 4), (3, 3), 1, "same")
    got = mlfromscratch.column_to_image(cols.reshape(18, 16, 4), (4, 2, 4, 4), (3, 3), 1, "same")
    np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match="cols must hold"):
        mlfromscratch.column_to_image(cols[:, :-1], (4, 2, 4, 4), (3, 3), 1, "same")


class Recorder:
    """An optimizer that records each gradient and applies a plain SGD step."""

    def __init__(self):
        self.grads = []

    def update(self, w, grad):
        self.grads.append(grad)
        return w - 0.1 * grad


def gradient(out):
    """A fixed random gradient for `out`."""
    return np.random.default_rng(5).standard_normal(out.shape)


def run_layer(make, X, dout, global_rng, initialize=True):
    """Forward, backward and the state of one layer, from a fixed global seed."""
    global_rng(3)
    layer = make()
    layer.set_input_shape(X.shape[1:])
    optimizer = Recorder()
    if initialize:
        layer.initialize(optimizer)
    rng_after_init = np.random.get_state()[1].copy()
    out = layer.forward_pass(X)
    dX = layer.backward_pass(dout(out))
    return layer, out, dX, optimizer, rng_after_init


@pytest.mark.parametrize("filters, field, padding, stride", [
    (4, (3, 3), "same", 1), (4, (3, 3), "valid", 1), (3, (2, 2), "same", 1),
    (3, (3, 2), "same", 2), (2, (3, 3), "valid", 2),
])
@pytest.mark.parametrize("x_dtype", [np.float64, np.float32])
def test_conv2d_layer_matches(backend, global_rng, filters, field, padding, stride, x_dtype):
    X = np.random.default_rng(4).standard_normal((5, 2, 7, 7)).astype(x_dtype)
    runs = [run_layer(lambda impl=impl: impl.Conv2D(filters, field, padding=padding, stride=stride),
                      X, gradient, global_rng) for impl in (original, mlfromscratch)]
    (layer, out, dX, opt, state), (want_layer, want_out, want_dX, want_opt, want_state) = (
        runs[1], runs[0])
    np.testing.assert_array_equal(state, want_state)  # the same draws from the global generator
    assert layer.output_shape() == want_layer.output_shape() == out.shape[1:]
    assert layer.parameters() == want_layer.parameters()
    assert layer.layer_name() == want_layer.layer_name() == "Conv2D"
    assert_same(out, want_out, 1e-12 if x_dtype == np.float64 else 1e-5)
    assert_same(dX, want_dX, 1e-12)
    assert dX.dtype == np.float64
    for got, want in zip(opt.grads, want_opt.grads):  # W_opt and w0_opt share one Recorder
        assert_same(got, want, 1e-11)
    assert [g.shape for g in opt.grads] == [layer.W.shape, (filters, 1)]
    assert_same(layer.W, want_layer.W, 1e-12)
    assert_same(layer.w0, want_layer.w0, 1e-12)


@pytest.mark.parametrize("kind", ["MaxPooling2D", "AveragePooling2D"])
@pytest.mark.parametrize("pool, stride", [((2, 2), 2), ((2, 2), 1), ((3, 3), 1), ((2, 3), 1),
                                          ((3, 3), 3)])
def test_pooling_layers_match_the_fixed_original(backend, global_rng, pooling_fixed, kind, pool,
                                                 stride):
    # A permutation: no ties, so every argmax is unambiguous.
    X = np.random.default_rng(6).permutation(3 * 2 * 6 * 12).reshape(3, 2, 6, 12) / 4.0
    got, want = (run_layer(lambda impl=impl: getattr(impl, kind)(pool, stride), X, gradient,
                           global_rng, initialize=False) for impl in (mlfromscratch, original))
    assert got[0].output_shape() == want[0].output_shape() == got[1].shape[1:]
    assert got[0].parameters() == want[0].parameters() == 0
    assert got[0].layer_name() == want[0].layer_name() == kind
    assert_same(got[1], want[1])
    assert_same(got[2], want[2])


def test_pooling_trains_with_its_default_padding_where_the_original_fails(global_rng):
    X = np.random.default_rng(8).standard_normal((2, 3, 4, 4))
    for kind in ("MaxPooling2D", "AveragePooling2D"):
        layer = getattr(original, kind)(stride=2)
        layer.set_input_shape(X.shape[1:])
        with pytest.raises(TypeError):
            layer.forward_pass(X)
        layer = getattr(original, kind)(stride=2, padding="valid")
        layer.set_input_shape(X.shape[1:])
        out = layer.forward_pass(X)  # works, but the backward pass passes 0 again
        with pytest.raises(TypeError):
            layer.backward_pass(np.ones_like(out))
        layer = getattr(mlfromscratch, kind)(stride=2)
        layer.set_input_shape(X.shape[1:])
        out = layer.forward_pass(X)
        assert out.shape == (2, 3, 2, 2)
        assert layer.backward_pass(np.ones_like(out)).shape == X.shape


def test_pooling_output_shape_floors_where_the_original_asserts(pooling_fixed):
    X = np.random.default_rng(9).standard_normal((2, 1, 5, 5))
    layer = original.MaxPooling2D((2, 2), stride=2)
    layer.set_input_shape(X.shape[1:])
    with pytest.raises(AssertionError):
        layer.output_shape()
    layer = mlfromscratch.MaxPooling2D((2, 2), stride=2)
    layer.set_input_shape(X.shape[1:])
    assert layer.output_shape() == (1, 2, 2)
    out = layer.forward_pass(X)
    np.testing.assert_array_equal(out, X[:, :, :4, :4].reshape(2, 1, 2, 2, 2, 2).max(axis=(3, 5)))
    dX = layer.backward_pass(np.ones_like(out))
    assert dX.shape == X.shape and dX[:, :, 4].sum() == dX[:, :, :, 4].sum() == 0


def test_same_padding_pools_with_zeros_as_the_original_forward_does():
    X = -np.arange(1.0, 37.0).reshape(1, 1, 6, 6)  # all negative: a padded zero wins
    outs = []
    for impl in (original, mlfromscratch):
        layer = impl.MaxPooling2D((3, 3), stride=3, padding="same")  # pads 1 on every side
        layer.set_input_shape(X.shape[1:])
        outs.append(layer.forward_pass(X))
    np.testing.assert_array_equal(*outs)
    np.testing.assert_array_equal(outs[1], [[[[0, 0], [0, X[0, 0, 2, 2]]]]])
    assert layer.output_shape() == (1, 2, 2)
    dX = layer.backward_pass(np.ones((1, 1, 2, 2)))
    # Three windows reach the padding, whose zeros win; the last one's maximum is X[2, 2].
    assert dX.shape == X.shape and dX.sum() == 1 and dX[0, 0, 2, 2] == 1


def one_hot(y):
    return np.eye(10)[y]


def test_the_cnn_example_trains_the_same_through_the_added_import(load_copy, global_rng):
    from sklearn.datasets import load_digits

    swap = originals.SWAPS["mlfromscratch"]  # the drop-ins' import added after the project's
    swapped = load_copy("mlfromscratch", "mlfromscratch_swapped", [swap])
    import mlfromscratch_swapped.examples  # noqa: F401

    assert swapped.examples.Conv2D is mlfromscratch.Conv2D
    digits = load_digits()
    X = (digits.data / 16.0).reshape(-1, 1, 8, 8)[:320]
    y = one_hot(digits.target[:320])
    histories = []
    for module in (examples, swapped.examples):
        global_rng(1)
        clf = module.convolutional_neural_network(validation_data=(X[256:], y[256:]))
        histories.append(clf.fit(X[:256], y[:256], n_epochs=2, batch_size=64))
        histories.append(clf.test_on_batch(X[256:], y[256:]))
    want_train, want_val = histories[0]
    got_train, got_val = histories[2]
    assert want_train[1] < want_train[0]
    np.testing.assert_allclose(got_train, want_train, rtol=1e-10)
    np.testing.assert_allclose(got_val, want_val, rtol=1e-10)
    np.testing.assert_allclose(histories[3], histories[1], rtol=1e-10)


def test_a_pooling_network_trains_the_same(load_copy, global_rng, pooling_fixed):
    swapped = load_copy("mlfromscratch", "mlfromscratch_pools", [originals.SWAPS["mlfromscratch"]])
    import mlfromscratch_pools.examples  # noqa: F401

    rng = np.random.default_rng(10)
    X = rng.random((96, 1, 8, 8), dtype=np.float32)  # float32 images, float64 weights
    y = one_hot(rng.integers(0, 10, 96))
    losses = []
    for module in (examples, swapped.examples):
        global_rng(2)
        clf = module.conv_pool_network()
        losses.append([clf.train_on_batch(X[i:i + 32], y[i:i + 32])[0] for i in (0, 32, 64, 0)])
    assert losses[0][3] < losses[0][0]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-10)
