"""Sequential: forward/backward, summary, save/load without pickle, and training.

* forward/backward chain the layers; the gradient of a whole model passes gradcheck;
* ``summary`` lists every layer with its output shape and parameter count;
* ``save``/``load`` round-trip every parameter and running statistic through
  a pickle-free ``.npz``; a mismatched file is rejected with a message naming
  the first mismatch and leaves the model unchanged; loading is in place;
* a short training script on the public API gives the same first losses on
  both backends and learns.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastcnn
from fastcnn import _backend
from fastcnn.gradcheck import gradcheck
from fastcnn.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from fastcnn.losses import softmax_cross_entropy
from fastcnn.model import Sequential, named_layers
from fastcnn.optim import SGD

BACKENDS = ("numpy", "cython") if _backend.compiled_available() else ("numpy",)


def small_cnn(seed=0, channels=4, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return Sequential([
        Conv2D(1, channels, 3, padding=1, dtype=dtype, rng=rng),
        BatchNorm2D(channels, dtype=dtype),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(channels * 4 * 4, 3, dtype=dtype, rng=rng),
    ])


def snapshot(model, copy=True):
    """Every parameter and state array of `model` by its save key (copies by default)."""
    return {
        f"{prefix}{name}": value.copy() if copy else value
        for prefix, layer in named_layers(model)
        for name, value in {**layer.params, **layer.state}.items()
    }


def assert_same_arrays(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def batch(seed=0, n=6):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, n)


# ---------------------------------------------------------------------------
# Forward, backward, summary


def test_forward_and_backward_chain_the_layers():
    model = small_cnn()
    x, _ = batch()
    manual = x
    for layer in model.layers:
        manual = layer.forward(manual, training=False)
    np.testing.assert_array_equal(model(x, training=False), manual)
    dout = np.ones_like(manual)
    manual_dx = dout
    for layer in reversed(model.layers):
        manual_dx = layer.backward(manual_dx)
    np.testing.assert_array_equal(model.backward(dout), manual_dx)


def test_whole_model_passes_gradcheck():
    model = small_cnn(channels=2, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8))
    # Finite differences call the kernels ~2000 times: use the NumPy twin, which
    # the compiled set matches bitwise (test_parity.py, test_layers.py).
    with fastcnn.use_backend("numpy"):
        report = gradcheck(model, x, rng=2)
    assert report.passed, str(report)


def test_summary_lists_layers_shapes_and_parameter_counts():
    text = small_cnn().summary((32, 1, 8, 8))
    lines = text.splitlines()
    assert "Conv2D(1, 4, kernel_size=(3, 3), padding=(1, 1))" in text
    assert any("(32, 4, 8, 8)" in line and line.rstrip().endswith("40") for line in lines)
    assert any("Flatten()" in line and "(32, 64)" in line for line in lines)
    assert any("Dense(64, 3)" in ln and "(32, 3)" in ln and ln.endswith("195") for ln in lines)
    assert lines[-1] == f"Total params: {40 + 8 + 195}"
    with pytest.raises(ValueError, match="in_channels=1"):
        small_cnn().summary((32, 3, 8, 8))


def test_named_layers_and_bad_layers():
    model = small_cnn()
    assert [p for p, _ in named_layers(model)] == [f"{i}." for i in range(6)]
    assert named_layers(model.layers[0]) == [("", model.layers[0])]
    assert [p for p, _ in named_layers([ReLU(), model])][:3] == ["0.", "1.0.", "1.1."]
    with pytest.raises(TypeError, match=r"layers\[1\] must be a fastcnn Layer"):
        Sequential([ReLU(), lambda x: x])
    with pytest.raises(TypeError, match="model must be"):
        named_layers("model")


# ---------------------------------------------------------------------------
# save / load


def trained(model, steps=2):
    """Change weights and running statistics, so a round trip has something to carry."""
    opt = SGD(model, lr=0.1)
    for step in range(steps):
        x, y = batch(step)
        loss, dlogits = softmax_cross_entropy(model(x), y)
        model.backward(dlogits)
        opt.step()
    return model


def test_save_load_round_trip_in_place(tmp_path):
    source = trained(small_cnn(seed=0))
    path = tmp_path / "weights.npz"
    source.save(path)
    with np.load(path, allow_pickle=False) as archive:  # no pickled objects inside
        assert sorted(archive.files) == sorted([
            "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
            "5.weight", "5.bias",
        ])
        assert all(archive[k].dtype == np.float32 for k in archive.files)
    target = small_cnn(seed=1)
    arrays = snapshot(target, copy=False)
    target.load(path)
    assert_same_arrays(snapshot(target), snapshot(source))
    for key, value in snapshot(target, copy=False).items():  # loaded into the same arrays
        assert value is arrays[key]
    x, _ = batch(5)
    np.testing.assert_array_equal(target(x, training=False), source(x, training=False))


def test_save_appends_npz_suffix(tmp_path):
    small_cnn().save(tmp_path / "w")
    assert (tmp_path / "w.npz").exists()


@pytest.mark.parametrize("other, match", [
    (lambda: small_cnn(channels=5), r"'0.weight' has shape \(5, 1, 3, 3\)"),
    (lambda: small_cnn(dtype=np.float64), "dtype float64"),
    (lambda: Sequential(small_cnn().layers[:-1]), "missing key '5.weight'"),
    (lambda: Sequential([*small_cnn().layers, ReLU(), Dense(3, 2, rng=0)]),
     "unexpected key '7.weight'"),
    (lambda: Sequential([small_cnn().layers[0], ReLU(), *small_cnn().layers[2:]]),
     "missing key '1.weight'"),
])
def test_load_rejects_another_architecture_and_changes_nothing(tmp_path, other, match):
    path = tmp_path / "other.npz"
    other().save(path)
    model = trained(small_cnn())
    before = snapshot(model)
    with pytest.raises(ValueError, match=match):
        model.load(path)
    assert_same_arrays(snapshot(model), before)


def test_load_refuses_pickled_objects_and_non_archives(tmp_path):
    model = small_cnn()
    before = snapshot(model)
    arrays = snapshot(model)
    arrays["5.bias"] = np.array([1, "x", None], dtype=object)
    np.savez(tmp_path / "pickled.npz", **arrays)
    with pytest.raises(ValueError, match="allow_pickle"):
        model.load(tmp_path / "pickled.npz")
    with open(tmp_path / "plain.npz", "wb") as file:  # a .npy under an .npz name
        np.save(file, np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz archive"):
        model.load(tmp_path / "plain.npz")
    assert_same_arrays(snapshot(model), before)


def test_optimizer_keeps_working_after_load(tmp_path):
    model = small_cnn(seed=0)
    opt = SGD(model, lr=0.5)
    trained(small_cnn(seed=3)).save(tmp_path / "w.npz")
    model.load(tmp_path / "w.npz")
    x, y = batch()
    model.backward(softmax_cross_entropy(model(x), y)[1])
    before = model.layers[-1].params["weight"].copy()
    opt.step()  # the optimizer holds the same arrays the load filled
    assert not np.array_equal(model.layers[-1].params["weight"], before)
    np.testing.assert_allclose(
        model.layers[-1].params["weight"], before - 0.5 * model.layers[-1].grads["weight"]
    )


# ---------------------------------------------------------------------------
# Training on the public API


def train_losses(backend, steps=8):
    """A user's training script: fixed seeds, Adam, BatchNorm and Dropout."""
    from fastcnn.optim import Adam

    with fastcnn.use_backend(backend):
        rng = np.random.default_rng(0)
        model = Sequential([
            Conv2D(1, 6, 3, padding=1, rng=rng),
            BatchNorm2D(6),
            ReLU(),
            MaxPool2D(3, stride=2, padding=1),
            Conv2D(6, 6, 3, padding=1, groups=3, rng=rng),
            ReLU(),
            Flatten(),
            Dropout(0.2, rng=1),
            Dense(6 * 4 * 4, 3, rng=rng),
        ])
        opt = Adam(model, lr=0.01)
        x, y = batch(0, n=16)
        losses = []
        for _ in range(steps):
            loss, dlogits = softmax_cross_entropy(model(x), y)
            model.backward(dlogits)
            opt.step()
            losses.append(loss)
    return np.array(losses)


def test_training_gives_the_same_losses_on_both_backends_and_learns():
    results = [train_losses(name) for name in BACKENDS]
    for losses in results[1:]:
        # equal but for rounding: the compiled GEMM drivers call SciPy's BLAS,
        # the twins NumPy's, which may order a product's sums differently
        assert losses[0] == results[0][0]
        np.testing.assert_allclose(losses, results[0], rtol=1e-6)
    assert results[0][-1] < 0.8 * results[0][0]
