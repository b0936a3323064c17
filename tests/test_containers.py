"""Layers made of layers: registration, Sequential as a container, Residual, Identity,
train()/eval(), astype, predict and gradient clipping.

* a Layer subclass holding layers as attributes (directly, in lists, tuples,
  Sequentials, nested) has them found under dotted names by
  ``named_parameters``/``named_buffers``/``named_modules``, optimizers,
  ``summary``, ``save``/``load``, ``train``/``eval``, ``astype`` and clipping;
* Sequential: ``len``, indexing, slicing, iteration, ``append``, nesting, repr;
* Residual computes ``body(x) + shortcut(x)``; its backward sums both input
  gradients (finite differences, and a basic block against PyTorch);
* ``astype`` casts every array; an optimizer made before refuses to step;
* ``predict`` runs in evaluation mode over batches and keeps no reference to
  its input;
* ``clip_grad_norm_``/``clip_grad_value_`` as ``torch.nn.utils``.
"""

from __future__ import annotations

import copy
import gc
import weakref

import numpy as np
import pytest

import fastcnn
from fastcnn.gradcheck import gradcheck
from fastcnn.layers.activation import _FUSED, _rectifier
from fastcnn.layers import (
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    ConvTranspose2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Identity,
    Layer,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Residual,
    Tanh,
)
from fastcnn.losses import softmax_cross_entropy
from fastcnn.model import Sequential
from fastcnn.optim import SGD, Adam, clip_grad_norm_, clip_grad_value_


class ConvBNReLU(Layer):
    """The README's custom block: Conv2D, BatchNorm2D and ReLU as attributes."""

    def __init__(self, cin, cout, dtype=np.float32, rng=None):
        super().__init__()
        self.conv = Conv2D(cin, cout, 3, padding=1, bias=False, dtype=dtype, rng=rng)
        self.bn = BatchNorm2D(cout, dtype=dtype)
        self.relu = ReLU()

    def forward(self, x, training=None):
        return self.relu(self.bn(self.conv(x, training), training), training)

    def backward(self, dout):
        return self.conv.backward(self.bn.backward(self.relu.backward(dout)))

    def output_shape(self, input_shape):
        return self.conv.output_shape(input_shape)


class Stages(Layer):
    """Sub-layers in a list, a tuple of a list, and a Sequential; no forward needed."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBNReLU(1, 2, rng=0)
        self.blocks = [Dense(2, 2, rng=1), (Dense(2, 3, rng=2), [Dense(3, 1, rng=3)])]
        self.head = Sequential([ReLU(), Sequential([Dense(1, 1, rng=4)])])
        self.width = [1, 2]  # a list without layers is not a sub-layer
        self._cache = (Dense(9, 9, rng=5),)  # the base class's bookkeeping is never searched


def block_model(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return Sequential([
        ConvBNReLU(1, 4, dtype=dtype, rng=rng),
        Residual(Sequential([ConvBNReLU(4, 4, dtype=dtype, rng=rng), Dropout(0.3, rng=seed)])),
        GlobalAvgPool2D(),
        Flatten(),
        Dense(4, 3, dtype=dtype, rng=rng),
    ])


def images(n=6, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 6, 6)).astype(dtype), rng.integers(0, 3, n)


def named_grads(model):
    return {
        f"{prefix}.{name}" if prefix else name: grad
        for prefix, layer in model.named_modules()
        for name, grad in layer.grads.items()
    }


def all_arrays(model):
    return {k: v.copy() for k, v in [*model.named_parameters(), *model.named_buffers()]}


# ---------------------------------------------------------------------------
# Registration


def test_sub_layers_are_found_with_dotted_names():
    model = Stages()
    assert [name for name, _ in model.named_children()] == [
        "stem", "blocks.0", "blocks.1.0", "blocks.1.1.0", "head",
    ]
    assert [name for name, _ in model.named_parameters()] == [
        "stem.conv.weight", "stem.bn.weight", "stem.bn.bias",
        "blocks.0.weight", "blocks.0.bias", "blocks.1.0.weight", "blocks.1.0.bias",
        "blocks.1.1.0.weight", "blocks.1.1.0.bias", "head.1.0.weight", "head.1.0.bias",
    ]
    assert dict(model.named_buffers()).keys() == {"stem.bn.running_mean", "stem.bn.running_var"}
    assert dict(model.named_buffers())["stem.bn.running_var"] is model.stem.bn.state["running_var"]
    names = [name for name, _ in model.named_modules()]
    assert names[:5] == ["", "stem", "stem.conv", "stem.bn", "stem.relu"]
    assert names[-3:] == ["head.0", "head.1", "head.1.0"]
    assert list(model.modules())[0] is model and list(model.children())[0] is model.stem
    assert all(p is q for p, (_, q) in zip(model.parameters(), model.named_parameters()))
    assert model.num_params == 2 * 9 + 4 + 6 + 9 + 4 + 2


def test_a_shared_layer_is_listed_once():
    shared = Dense(2, 2, rng=0)
    model = Sequential([shared, ReLU(), shared])
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    assert len(SGD(model, lr=1).state) == 2  # stepped once per step, not twice


def test_a_reference_cycle_ends():
    model = Stages()
    model.stem.parent = model  # a child that points back at its parent
    assert sum(1 for _ in model.named_modules()) == 12


def test_optimizer_summary_save_and_load_reach_a_custom_block(tmp_path):
    model = Sequential([ConvBNReLU(1, 3, rng=0), Flatten(), Dense(3 * 6 * 6, 3, rng=0)])
    assert model.num_params == 27 + 6 + 109 * 3
    text = model.summary((2, 1, 6, 6))
    assert text.splitlines()[-1] == f"Total params: {27 + 6 + 109 * 3}"
    row = next(line for line in text.splitlines() if line.startswith("0 "))
    assert "ConvBNReLU" in row and "(2, 3, 6, 6)" in row and row.endswith(" 33")
    assert any(ln.startswith("0.conv ") and ln.endswith(" 27") for ln in text.splitlines())

    conv_weight = model[0].conv.params["weight"]
    before = conv_weight.copy()
    opt = Adam(model, lr=0.01)
    assert "0.conv.weight" in opt.state and "0.bn.bias" in opt.state
    x, y = images()
    model.backward(softmax_cross_entropy(model(x), y)[1])
    opt.step()
    assert not np.array_equal(conv_weight, before)  # the inner weights trained

    model.save(tmp_path / "block.npz")
    with np.load(tmp_path / "block.npz") as archive:
        assert set(archive.files) == {
            "0.conv.weight", "0.bn.weight", "0.bn.bias", "0.bn.running_mean",
            "0.bn.running_var", "2.weight", "2.bias",
        }
    other = Sequential([ConvBNReLU(1, 3, rng=5), Flatten(), Dense(3 * 6 * 6, 3, rng=5)])
    other.load(tmp_path / "block.npz")
    for key, value in all_arrays(model).items():
        np.testing.assert_array_equal(all_arrays(other)[key], value, err_msg=key)


def test_custom_block_trains_as_the_same_layers_in_a_sequential():
    flat = Sequential([Conv2D(1, 3, 3, padding=1, bias=False, rng=0), BatchNorm2D(3), ReLU(),
                       Flatten(), Dense(3 * 6 * 6, 3, rng=1)])
    block = Sequential([ConvBNReLU(1, 3, rng=0), Flatten(), Dense(3 * 6 * 6, 3, rng=1)])
    opts = [SGD(flat, lr=0.1, momentum=0.9), SGD(block, lr=0.1, momentum=0.9)]
    for step in range(3):
        x, y = images(seed=step)
        for model, opt in zip((flat, block), opts):
            model.backward(softmax_cross_entropy(model(x), y)[1])
            opt.step()
    np.testing.assert_array_equal(block[0].conv.params["weight"], flat[0].params["weight"])
    np.testing.assert_array_equal(block[0].bn.state["running_var"], flat[1].state["running_var"])
    np.testing.assert_array_equal(block[2].params["weight"], flat[4].params["weight"])


def test_a_block_without_output_shape_shows_unknown_shapes_in_summary():
    class Plain(Layer):
        def __init__(self):
            super().__init__()
            self.inner = Conv2D(1, 2, 3, rng=0)

    with pytest.raises(NotImplementedError,
                       match="Plain holds sub-layers: define its output_shape"):
        Plain().output_shape((1, 1, 5, 5))
    lines = Sequential([Plain(), Flatten()]).summary((1, 1, 5, 5)).splitlines()
    # Inside the block and after it, shapes are unknown: no shape is shown.
    assert [ln.split() for ln in lines[3:6]] == [
        ["0", "Plain", "?", "20"], ["0.inner", "Conv2D(1,", "2,", "kernel_size=(3,", "3))", "20"],
        ["1", "Flatten()", "0"],
    ]


# ---------------------------------------------------------------------------
# Sequential as a container


def test_sequential_is_a_list_of_layers():
    layers = [Conv2D(1, 2, 3, rng=0), ReLU(), Flatten(), Dense(2 * 4 * 4, 3, rng=0)]
    model = Sequential(layers)
    assert isinstance(model, Layer)
    assert len(model) == 4
    assert model[0] is layers[0] and model[-1] is layers[-1] and model[np.int64(1)] is layers[1]
    assert list(model) == layers
    head = model[:2]
    assert isinstance(head, Sequential) and list(head) == layers[:2]
    assert head[0] is layers[0]  # the same layer objects, as torch
    assert list(model[::-1]) == layers[::-1]
    x = images()[0]
    np.testing.assert_array_equal(model[2:](model[:2](x)), model(x))
    assert model.append(Dense(3, 2, rng=0)) is model and len(model) == 5
    assert [name for name, _ in model.named_parameters()][-2:] == ["4.weight", "4.bias"]
    with pytest.raises(IndexError, match="index 5 is out of range for 5 layers"):
        model[5]
    with pytest.raises(TypeError, match="index must be an int or a slice, got str"):
        model["0"]
    with pytest.raises(TypeError, match="layer must be a fastcnn Layer, got function"):
        model.append(lambda x: x)
    assert len(Sequential()) == 0 and Sequential()(x) is x


def test_nested_sequential_is_a_layer():
    inner = Sequential([Conv2D(1, 2, 3, rng=0), ReLU()])
    model = Sequential([inner, Flatten(), Dense(2 * 4 * 4, 3, rng=0)])
    flat = Sequential([*inner, *model[1:]])
    x = images()[0]
    np.testing.assert_array_equal(model(x), flat(x))
    dout = np.ones((6, 3), np.float32)
    np.testing.assert_array_equal(model.backward(dout), flat.backward(dout))
    assert [name for name, _ in model.named_parameters()] == [
        "0.0.weight", "0.0.bias", "2.weight", "2.bias",
    ]
    assert model.output_shape((6, 1, 6, 6)) == (6, 3)
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Sequential(\n"
        "    (0): Conv2D(1, 2, kernel_size=(3, 3))\n"
        "    (1): ReLU()\n"
        "  )\n"
        "  (1): Flatten()\n"
        "  (2): Dense(32, 3)\n"
        ")"
    )
    lines = model.summary((6, 1, 6, 6)).splitlines()
    assert lines[3].split() == ["0", "Sequential", "(6,", "2,", "4,", "4)", "20"]
    assert lines[4].split()[:2] == ["0.0", "Conv2D(1,"] and lines[4].split()[-5:] == [
        "(6,", "2,", "4,", "4)", "20"]
    assert lines[5].split() == ["0.1", "ReLU()", "(6,", "2,", "4,", "4)", "0"]
    assert lines[-1] == "Total params: 119"


# A batch norm followed by a ReLU runs fused in a Sequential
# (BatchNorm2D.forward_relu): the same outputs, gradients and running
# statistics as the two layers one after the other, bit for bit.


class _ShiftedReLU(ReLU):
    """A ReLU subclass: not fused (it may compute something else)."""

    def _forward(self, x, training):
        out, saved = super()._forward(x, training)
        return out + 1, saved


def _run_pair(first, second, x, dout, fused, training=None):
    """``(out, dx)`` of `first` then `second`: through a Sequential (which
    fuses the pair where it can), or layer by layer."""
    if fused:
        model = Sequential([first, second])
        return model.forward(x, training), model.backward(dout)
    out = second.forward(first.forward(x, training), training)
    return out, first.backward(second.backward(dout))


@pytest.mark.parametrize(
    "backend", ["numpy", "cython"] if fastcnn._backend.compiled_available() else ["numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 3, 5, 7), (9, 4), (5, 2, 40, 40)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [ReLU, _ShiftedReLU])
def test_batch_norm_then_relu_runs_fused_and_equals_the_two_layers(backend, dtype, shape,
                                                                   training, relu):
    norm = BatchNorm2D if len(shape) == 4 else BatchNorm1D
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[::17] = np.resize(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype),
                             x.flat[::17].shape)
    dout = rng.standard_normal(shape).astype(dtype)
    weight, bias = rng.standard_normal((2, shape[1]))
    results = []
    with fastcnn.use_backend(backend), np.errstate(invalid="ignore"):
        for fused in (True, False):
            bn, act = norm(shape[1], dtype=dtype), relu()
            bn.params["weight"][:], bn.params["bias"][:] = weight, bias
            bn.state["running_mean"][:], bn.state["running_var"][:] = 0.2, 1.5
            out, dx = _run_pair(bn, act, x, dout, fused, training)
            if fused:
                assert (act._cache is _FUSED) == (relu is ReLU)
            results.append([out, dx, *bn.grads.values(), *bn.state.values()])
    for got, expected in zip(*results):
        assert got.tobytes() == expected.tobytes()


def test_the_relu_of_a_fused_pair_passes_its_gradient_on():
    bn, act = BatchNorm2D(2), ReLU()
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    out = Sequential([bn, act])(x)
    assert (out >= 0).all() and out.shape == x.shape
    dout = np.ones_like(out)
    assert act.backward(dout) is dout  # the batch norm's backward applies the ReLU's mask
    with pytest.raises(ValueError, match="shape"):
        act.backward(dout[:1])
    for other in (_ShiftedReLU(), Identity()):
        with pytest.raises(TypeError, match="relu must be a fastcnn.layers.ReLU"):
            bn.forward_relu(x, other)


# A residual connection followed by a ReLU runs fused likewise
# (Residual.forward_relu): one pass for the sum and the ReLU, the ReLU's
# gradient computed from its output; the same results bit for bit.


@pytest.mark.parametrize(
    "backend", ["numpy", "cython"] if fastcnn._backend.compiled_available() else ["numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 3, 5, 7), (9, 4), (5, 4, 40, 40)])
@pytest.mark.parametrize("relu", [ReLU, _ShiftedReLU])
@pytest.mark.parametrize("shortcut", [False, True])
def test_residual_then_relu_runs_fused_and_equals_the_two_layers(backend, dtype, shape, relu,
                                                                 shortcut):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(dtype)
    # sums that are NaN, infinite, +-0.0 and of either sign
    x.flat[::13] = np.resize(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype),
                             x.flat[::13].shape)
    dout = rng.standard_normal(shape).astype(dtype)
    dout.flat[::11] = np.inf
    results = []
    with fastcnn.use_backend(backend), np.errstate(invalid="ignore"):
        for fused in (True, False):
            body = Sequential([Dense(shape[1], shape[1], rng=3, dtype=dtype)]) if len(
                shape) == 2 else Conv2D(shape[1], shape[1], 3, padding=1, rng=3, dtype=dtype)
            skip = Conv2D(shape[1], shape[1], 1, rng=4, dtype=dtype) if shortcut and len(
                shape) == 4 else None
            block, act = Residual(body, skip), relu()
            out, dx = _run_pair(block, act, x, dout, fused)
            if fused:
                assert (act._cache is out) == (relu is ReLU)
            grads = [g for _, layer in block.named_modules() for g in layer.grads.values()]
            results.append([out, dx, *grads])
    for got, expected in zip(*results):
        assert got.tobytes() == expected.tobytes()


def test_residual_forward_relu_refuses_another_activation():
    block = Residual(Identity())
    x = np.ones((2, 3), np.float32)
    for other in (_ShiftedReLU(), Identity()):
        with pytest.raises(TypeError, match="relu must be a fastcnn.layers.ReLU"):
            block.forward_relu(x, other)


# A ReLU followed by a max pooling runs fused too, pooling first
# (MaxPool2D.forward_after_relu): the ReLU on the pooled output, its gradient
# applied before the pooling's; the same results bit for bit.


@pytest.mark.parametrize(
    "backend", ["numpy", "cython"] if fastcnn._backend.compiled_available() else ["numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [ReLU, _ShiftedReLU])
@pytest.mark.parametrize("pool", [
    dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), dict(kernel_size=2, dilation=2),
    dict(kernel_size=(1, 3), stride=(2, 1))])
@pytest.mark.parametrize("seed", range(3))
def test_relu_then_max_pool_runs_fused_and_equals_the_two_layers(backend, dtype, relu, pool,
                                                                 seed):
    rng = np.random.default_rng(seed)
    shape = (3, 4, 9, 11) if seed else (2, 3, 40, 38)
    # few distinct values: ties within windows, windows of no positive value
    x = rng.integers(-3, 3, shape).astype(dtype) * 0.5
    x.flat[::7 + seed] = np.resize(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype),
                                   x.flat[::7 + seed].shape)
    dout = rng.standard_normal(MaxPool2D(**pool).output_shape(shape)).astype(dtype)
    dout.flat[::5] = [np.inf, -np.inf, np.nan][seed]
    results = []
    with fastcnn.use_backend(backend), np.errstate(invalid="ignore"):
        for fused in (True, False):
            act, mp = relu(), MaxPool2D(**pool)
            out, dx = _run_pair(act, mp, x, dout, fused)
            if fused:
                assert (act._cache is _FUSED) == (relu is ReLU)
            results.append([out, dx])
    for got, expected in zip(*results):
        assert got.shape == expected.shape and got.tobytes() == expected.tobytes()


def test_max_pool_forward_after_relu_passes_the_gradient_through_the_relu():
    act, mp = ReLU(), MaxPool2D(2)
    x = np.random.default_rng(0).standard_normal((4, 2, 6, 6)).astype(np.float32)
    out = mp.forward_after_relu(x, act)
    np.testing.assert_array_equal(out, np.maximum(x.reshape(4, 2, 3, 2, 3, 2).max((3, 5)), 0))
    dx = mp.backward(np.ones_like(out))
    assert dx.shape == x.shape and dx.sum() == (out > 0).sum()
    assert act.backward(dx) is dx  # the pooling's backward applied the ReLU's mask
    with pytest.raises(ValueError, match="shape"):
        act.backward(np.ones_like(out))
    for other in (_ShiftedReLU(), Identity()):
        with pytest.raises(TypeError, match="relu must be a fastcnn.layers.ReLU"):
            mp.forward_after_relu(x, other)
    # unfused again: the pooling's own forward and backward
    np.testing.assert_array_equal(mp.forward(x), x.reshape(4, 2, 3, 2, 3, 2).max((3, 5)))
    assert mp.backward(np.ones_like(out)).sum() == out.size


# A convolution followed by a ReLU, or a LeakyReLU of slope >= 0, runs fused
# as well (Conv2D.forward_activation): the activation applied as the
# convolution writes its outputs, its gradient computed from its output;
# the same results bit for bit, whichever algorithm computes the
# convolution. A ReLU that a max pooling follows keeps pooling first.


class _ShiftedLeakyReLU(LeakyReLU):
    """A LeakyReLU subclass: not fused (it may compute something else)."""

    def _forward(self, x, training):
        out, saved = super()._forward(x, training)
        return out + 1, saved


@pytest.mark.parametrize(
    "backend", ["numpy", "cython"] if fastcnn._backend.compiled_available() else ["numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", [
    ReLU(), LeakyReLU(0.1), LeakyReLU(0.0), LeakyReLU(3.0), LeakyReLU(-0.5), _ShiftedReLU(),
    _ShiftedLeakyReLU(0.2)], ids=repr)
@pytest.mark.parametrize("algorithm", ["auto", "gemm", "direct", "winograd"])
@pytest.mark.parametrize("conv", [
    dict(in_channels=3, out_channels=8, kernel_size=3, padding=1),
    dict(in_channels=6, out_channels=16, kernel_size=5, stride=2, groups=2),
    dict(in_channels=5, out_channels=40, kernel_size=3, padding=1, bias=False)])
def test_conv_then_rectifier_runs_fused_and_equals_the_two_layers(backend, dtype, activation,
                                                                  algorithm, conv):
    rng = np.random.default_rng(9)
    shape = (3, conv["in_channels"], 14, 12)
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[::37] = np.resize(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype),
                             x.flat[::37].shape)
    fused_type = _rectifier(activation) is not None
    results = []
    with (fastcnn.use_backend(backend), fastcnn._backend.use_conv_algorithm(algorithm),
          np.errstate(invalid="ignore", over="ignore")):
        dout = rng.standard_normal(Conv2D(**conv).output_shape(shape)).astype(dtype)
        dout.flat[::23] = np.inf
        for fused in (True, False):
            layer, act = Conv2D(**conv, rng=11, dtype=dtype), copy.deepcopy(activation)
            out, dx = _run_pair(layer, act, x, dout, fused)
            if fused:
                assert (act._cache is out) == fused_type
            results.append([out, dx, *layer.grads.values()])
    for got, expected in zip(*results):
        assert got.tobytes() == expected.tobytes()


# ... and a convolution after such an activation applies its gradient to
# its own input gradient (its input is the activation's output), the
# activation passing its gradient on; again the same bits.


@pytest.mark.parametrize(
    "backend", ["numpy", "cython"] if fastcnn._backend.compiled_available() else ["numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", [
    ReLU(), LeakyReLU(0.1), LeakyReLU(0.0), LeakyReLU(-0.5), _ShiftedReLU()], ids=repr)
@pytest.mark.parametrize("algorithm", ["auto", "gemm", "winograd"])
@pytest.mark.parametrize("before", ["conv", "batch norm", "alone"])
@pytest.mark.parametrize("second", [
    dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=1)])
def test_conv_after_rectifier_applies_its_gradient_and_equals_the_layers(
        backend, dtype, activation, algorithm, before, second):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 4, 18, 18)).astype(dtype)
    x.flat[::41] = np.resize(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype),
                             x.flat[::41].shape)
    # (a ReLU after a batch norm has its gradient applied by the batch norm)
    applies = _rectifier(activation) is not None and not (
        before == "batch norm" and type(activation) is ReLU)
    results = []
    with (fastcnn.use_backend(backend), fastcnn._backend.use_conv_algorithm(algorithm),
          np.errstate(invalid="ignore", over="ignore")):
        for fused in (True, False):
            first = {"conv": Conv2D(4, 32, 3, padding=1, rng=1, dtype=dtype),
                     "batch norm": BatchNorm2D(4, dtype=dtype), "alone": Identity()}[before]
            act, conv = copy.deepcopy(activation), Conv2D(32 if before == "conv" else 4, 8,
                                                          **second, rng=2, dtype=dtype)
            layers = [first, act, conv]
            if fused:
                model = Sequential(layers)
                out = model.forward(x, True)
                assert bool(conv._cache[2]) == applies
                dout = rng.standard_normal(out.shape).astype(dtype)
                dx = model.backward(dout)
            else:
                out = x
                for layer in layers:
                    out = layer.forward(out, True)
                dx = dout
                for layer in reversed(layers):
                    dx = layer.backward(dx)
            grads = [g for layer in layers for g in layer.grads.values()]
            results.append([out, dx, *grads])
    for got, expected in zip(*results):
        assert got.tobytes() == expected.tobytes()


def test_conv_forward_activation_refuses_other_layers_and_keeps_relu_max_pool_pairs():
    layer = Conv2D(2, 3, 3, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)
    for other in (_ShiftedReLU(), LeakyReLU(-0.1), Tanh(), Identity()):
        with pytest.raises(TypeError, match="ReLU or a LeakyReLU of negative_slope >= 0"):
            layer.forward_activation(x, other)
    a, b, relu, leaky, pool = Conv2D(2, 3, 3), Conv2D(3, 3, 3), ReLU(), LeakyReLU(0.1), MaxPool2D(2)
    assert Sequential([a, relu, pool])._runs() == [(a,), (relu, pool)]
    assert Sequential([a, relu, b, leaky, pool])._runs() == [(a, relu), (b, leaky), (pool,)]
    negative = LeakyReLU(-1.0)
    assert Sequential([a, negative])._runs() == [(a,), (negative,)]


# ---------------------------------------------------------------------------
# Residual and Identity


def test_identity():
    x = images()[0]
    layer = Identity()
    assert layer(x) is x and layer.backward(x) is x and repr(layer) == "Identity()"
    assert fastcnn.Identity is Identity and fastcnn.Residual is Residual


@pytest.mark.parametrize("shortcut", [None, "conv", "identity"])
def test_residual_adds_the_branches_and_passes_gradcheck(shortcut):
    rng = np.random.default_rng(0)
    body = Sequential([Conv2D(2, 3, 3, padding=1, stride=2, dtype=np.float64, rng=rng),
                       BatchNorm2D(3, dtype=np.float64), ReLU(),
                       Conv2D(3, 3, 3, padding=1, dtype=np.float64, rng=rng)])
    if shortcut is None:
        body = Sequential([Conv2D(2, 2, 3, padding=1, dtype=np.float64, rng=rng), ReLU()])
        skip = None
    elif shortcut == "conv":
        skip = Conv2D(2, 3, 1, stride=2, bias=False, dtype=np.float64, rng=rng)
    else:
        body = Conv2D(2, 2, 3, padding=1, dtype=np.float64, rng=rng)
        skip = Identity()
    block = Residual(body, skip)
    x = rng.standard_normal((2, 2, 5, 5))
    expected = body(x, training=False) + (x if skip is None else skip(x, training=False))
    np.testing.assert_allclose(block(x, training=False), expected, rtol=1e-12)
    assert block.output_shape(x.shape) == expected.shape
    with fastcnn.use_backend("numpy"):
        report = gradcheck(block, x, rng=1)
    assert report.passed, str(report)
    assert set(report.max_abs_error) == {"x", *dict(block.named_parameters())}


def test_residual_rejects_branches_of_different_shapes():
    block = Residual(Conv2D(2, 3, 3, padding=1, rng=0))
    with pytest.raises(ValueError, match=r"body output shape \(1, 3, 4, 4\) differs from "
                                         r"shortcut output shape \(1, 2, 4, 4\)"):
        block(np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="differs from shortcut output shape"):
        block.output_shape((1, 2, 4, 4))
    with pytest.raises(TypeError, match="body must be a fastcnn Layer"):
        Residual(np.tanh)
    with pytest.raises(TypeError, match="shortcut must be a fastcnn Layer"):
        Residual(ReLU(), "identity")


def test_basic_block_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ours = Residual(
        Sequential([Conv2D(3, 4, 3, stride=2, padding=1, bias=False, dtype=np.float64, rng=rng),
                    BatchNorm2D(4, dtype=np.float64), ReLU(),
                    Conv2D(4, 4, 3, padding=1, bias=False, dtype=np.float64, rng=rng),
                    BatchNorm2D(4, dtype=np.float64)]),
        Sequential([Conv2D(3, 4, 1, stride=2, bias=False, dtype=np.float64, rng=rng),
                    BatchNorm2D(4, dtype=np.float64)]),
    )
    nn = torch.nn
    body = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4)).double()
    short = nn.Sequential(nn.Conv2d(3, 4, 1, 2, bias=False), nn.BatchNorm2d(4)).double()
    theirs = {**{f"body.{k}": v for k, v in body.state_dict().items()},
              **{f"shortcut.{k}": v for k, v in short.state_dict().items()}}
    with torch.no_grad():
        for key, value in ours.named_parameters():
            theirs[key].copy_(torch.from_numpy(value))
    x = rng.standard_normal((3, 3, 7, 7))
    dout = rng.standard_normal((3, 4, 4, 4))
    tx = torch.tensor(x, requires_grad=True)
    expected = body(tx) + short(tx)
    expected.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(ours(x), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.backward(dout), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    their_params = dict([*body.named_parameters(prefix="body"),
                         *short.named_parameters(prefix="shortcut")])
    for key, grad in named_grads(ours).items():
        np.testing.assert_allclose(grad, their_params[key].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=key)
    for key, value in ours.named_buffers():  # running statistics after one training step
        np.testing.assert_allclose(value, theirs[key].numpy(), rtol=1e-12, err_msg=key)


# ---------------------------------------------------------------------------
# train() / eval()


def test_eval_and_train_reach_every_nested_layer():
    model = block_model()
    x = images()[0]
    assert model.eval() is model
    assert all(not layer.training for layer in model.modules())
    stats = all_arrays(model)
    first = model(x)
    np.testing.assert_array_equal(model(x), first)  # Dropout off
    np.testing.assert_array_equal(first, model(x, training=False))
    for key, value in all_arrays(model).items():  # BatchNorm used, not updated
        np.testing.assert_array_equal(value, stats[key], err_msg=key)
    model(x, training=True)  # an explicit argument wins over the mode
    assert not np.array_equal(model[0].bn.state["running_mean"], stats["0.bn.running_mean"])
    assert not model[1].body[1].training  # and leaves the mode alone
    assert model.train() is model and all(layer.training for layer in model.modules())
    moved = model[0].bn.state["running_mean"].copy()
    model(x)
    assert not np.array_equal(model[0].bn.state["running_mean"], moved)


def test_each_layer_keeps_its_own_mode():
    model = block_model().eval()
    model[1].body[1].train()  # only the Dropout trains, as a torch Module would
    x = images()[0]
    assert not np.array_equal(model(x), model(x))
    stats = all_arrays(model)
    model(x)
    np.testing.assert_array_equal(model[0].bn.state["running_mean"], stats["0.bn.running_mean"])
    with pytest.raises(TypeError, match="mode must be True or False"):
        model.train("yes")
    with pytest.raises(TypeError, match="training must be True or False"):
        model(x, training="no")


# ---------------------------------------------------------------------------
# astype


def test_astype_casts_parameters_gradients_and_statistics():
    model = block_model()
    x, y = images()
    model.backward(softmax_cross_entropy(model(x), y)[1])
    before = all_arrays(model)
    assert model.astype(np.float64) is model
    for layer in model.modules():
        for arrays in (layer.params, layer.grads, layer.state):
            assert all(value.dtype == np.float64 for value in arrays.values())
        assert layer._cache is None
    for key, value in all_arrays(model).items():
        np.testing.assert_array_equal(value, before[key].astype(np.float64), err_msg=key)
    assert "dtype='float64'" in repr(model[4])
    out = model(x.astype(np.float64), training=False)
    assert out.dtype == np.float64
    with pytest.raises(TypeError, match="float32"):
        model(x)
    with pytest.raises(RuntimeError, match="before forward"):
        Sequential([Dense(2, 2, rng=0)]).astype(np.float64).backward(np.ones((1, 2)))
    with pytest.raises(TypeError, match="dtype must be np.float32 or np.float64"):
        model.astype(np.float16)


def test_an_optimizer_made_before_astype_refuses_to_step():
    model = block_model()
    opt = Adam(model, lr=0.01)
    opt.step()
    model.astype(np.float64)
    x, y = images(dtype=np.float64)
    model.backward(softmax_cross_entropy(model(x), y)[1])
    before = all_arrays(model)
    message = r"'0.conv.weight' is no longer the array .* create the optimizer after astype"
    with pytest.raises(ValueError, match=message):
        opt.step()
    with pytest.raises(ValueError, match=message):
        opt.zero_grad()
    for key, value in all_arrays(model).items():  # nothing changed
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    Adam(model, lr=0.01).step()  # made after: works
    same = Sequential([Dense(2, 2, rng=0)])
    opt = SGD(same, lr=1)
    same.astype(np.float32)  # no change: the same arrays, the optimizer keeps working
    opt.step()


def test_gradcheck_of_a_float32_layer_says_how_to_get_a_float64_copy():
    model = block_model()
    x = images(n=3)[0].astype(np.float64)
    with pytest.raises(TypeError, match=r"copy\.deepcopy\(layer\)\.astype\(np\.float64\)"):
        gradcheck(model, x)
    with pytest.raises(TypeError, match=r"x\.astype\(np\.float64\)"):
        gradcheck(model, x.astype(np.float32))
    model[1].body[1].p = 0.0  # no dropout: keep the check free of masked kinks
    double = copy.deepcopy(model).astype(np.float64)
    with fastcnn.use_backend("numpy"):
        report = gradcheck(double, x, rng=0, atol=1e-6)
    assert report.passed, str(report)
    assert all(value.dtype == np.float32 for value in model.parameters())


# ---------------------------------------------------------------------------
# predict


def test_predict_is_inference_in_batches():
    model = block_model()
    x = images(n=11)[0]
    model(x)  # training forward: running statistics move away from their init
    stats = all_arrays(model)
    expected = model(x, training=False)
    out = model.predict(x, batch_size=4)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(model.predict(x, batch_size=4), out)  # no Dropout
    assert model.training  # the mode is left alone
    for key, value in all_arrays(model).items():
        np.testing.assert_array_equal(value, stats[key], err_msg=key)
    assert model.predict(x[:0]).shape == (0, 3)
    np.testing.assert_allclose(model.predict(x[::-1], batch_size=4), out[::-1], rtol=1e-6)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        model.predict(x, batch_size=0)
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(np.ones_like(out))  # nothing was kept for backward


def test_predict_keeps_no_reference_to_the_batch():
    model = block_model()
    x = images(n=5)[0]
    ref = weakref.ref(x)
    model.predict(x, batch_size=2)
    del x
    gc.collect()
    assert ref() is None
    assert all(layer._cache is None for layer in model.modules())


# ---------------------------------------------------------------------------
# Gradient clipping


def gradients(model):
    return list(named_grads(model).values())


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, np.inf])
@pytest.mark.parametrize("max_norm", [0.05, 1e3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, dtype):
    torch = pytest.importorskip("torch")
    model = block_model(dtype=dtype)
    x, y = images(dtype=dtype)
    model.backward(softmax_cross_entropy(model(x), y)[1])
    grads = gradients(model)
    params = [torch.zeros(g.shape, dtype=torch.float64 if dtype == np.float64 else torch.float32)
              for g in grads]
    for p, g in zip(params, grads):
        p.grad = torch.from_numpy(g.copy())
    expected = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
    total = clip_grad_norm_(model, max_norm, norm_type)
    assert isinstance(total, float)
    np.testing.assert_allclose(total, expected.item(), rtol=1e-6)
    for g, p in zip(gradients(model), params):  # nested layers included
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=2e-6, atol=1e-9)


def test_clip_grad_value_and_checks():
    model = block_model()
    x, y = images()
    model.backward(softmax_cross_entropy(model(x), y)[1])
    expected = [np.clip(g, -1e-3, 1e-3) for g in gradients(model)]
    assert clip_grad_value_(model, 1e-3) is None
    for g, e in zip(gradients(model), expected):
        np.testing.assert_array_equal(g, e)
    assert max(np.abs(g).max() for g in gradients(model)) == np.float32(1e-3)
    grads = gradients(model)
    norm = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    assert clip_grad_norm_(list(model), 10.0) == pytest.approx(norm, rel=1e-5)  # a list works
    with pytest.raises(ValueError, match="max_norm must be in"):
        clip_grad_norm_(model, -1)
    with pytest.raises(ValueError, match="norm_type must be in"):
        clip_grad_norm_(model, 1, norm_type=0)
    with pytest.raises(TypeError, match="model must be"):
        clip_grad_value_("model", 1)
    assert clip_grad_norm_(ReLU(), 1.0) == 0.0


# ---------------------------------------------------------------------------
# backward(dout, input_grad=False): parameter gradients only


def _first_layer_models(dtype):
    """Models whose first layer has a cheaper parameter-only backward, or none."""
    rng = np.random.default_rng(3)
    return {
        "conv": Sequential([Conv2D(1, 4, 3, padding=1, dtype=dtype, rng=rng), ReLU(),
                            GlobalAvgPool2D(), Flatten(), Dense(4, 3, dtype=dtype, rng=rng)]),
        "grouped conv": Sequential([Conv2D(2, 4, 3, stride=2, groups=2, dtype=dtype, rng=rng),
                                    Flatten(), Dense(16, 3, dtype=dtype, rng=rng)]),
        "dense": Sequential([Flatten(), Dense(36, 3, dtype=dtype, rng=rng)]),
        "transposed conv": Sequential([ConvTranspose2D(1, 2, 3, stride=2, dtype=dtype, rng=rng),
                                       Flatten(), Dense(338, 3, dtype=dtype, rng=rng)]),
        "dense first": Sequential([Dense(6, 3, dtype=dtype, rng=rng)]),
        "custom block": block_model(dtype=dtype),
        "residual": Sequential([Residual(Conv2D(1, 1, 3, padding=1, dtype=dtype, rng=rng),
                                         Conv2D(1, 1, 1, dtype=dtype, rng=rng)),
                                Flatten(), Dense(36, 3, dtype=dtype, rng=rng)]),
    }


@pytest.mark.parametrize(
    "backend", ["numpy", "cython"] if fastcnn._backend.compiled_available() else ["numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(_first_layer_models(np.float32)))
def test_backward_without_input_grad_gives_the_same_parameter_gradients(name, dtype, backend):
    with fastcnn.use_backend(backend):
        x, labels = images(5, dtype=dtype)
        if name == "dense first":
            x = x.reshape(5, 6, 6)[:, 0]
        elif name == "grouped conv":
            x = np.concatenate([x, -x], axis=1)[..., :5, :5]
        grads = []
        for input_grad in (True, False):
            model = _first_layer_models(dtype)[name]
            model.eval()  # Dropout off: both passes see the same forward
            _, dlogits = softmax_cross_entropy(model(x), labels)
            dx = model.backward(dlogits, input_grad=input_grad)
            assert (dx is None) == (not input_grad)
            if input_grad:
                assert dx.shape == x.shape
            grads.append(named_grads(model))
        assert grads[0].keys() == grads[1].keys()
        for key in grads[0]:
            np.testing.assert_array_equal(grads[0][key], grads[1][key], err_msg=key)


def test_a_layer_backward_without_input_grad_returns_none_and_fills_grads():
    conv = Conv2D(2, 3, 3, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    dout = np.ones_like(conv(x))
    conv.grads["weight"][...] = np.nan
    assert conv.backward(dout, input_grad=False) is None
    assert np.isfinite(conv.grads["weight"]).all()
    relu = ReLU()
    relu(x)
    assert relu.backward(np.ones_like(x), input_grad=False) is None


@pytest.mark.parametrize("bad", [0, "no", None])
def test_input_grad_must_be_a_bool(bad):
    model = Sequential([Dense(2, 2, rng=0)])
    model(np.ones((1, 2), np.float32))
    with pytest.raises(TypeError, match="input_grad must be True or False"):
        model.backward(np.ones((1, 2), np.float32), input_grad=bad)


def test_empty_sequential_without_input_grad():
    dout = np.ones((2, 3))
    assert Sequential([]).backward(dout, input_grad=False) is None
    assert Sequential([]).backward(dout) is dout
