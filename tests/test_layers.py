"""Layers: gradients, PyTorch semantics, both backends, the layer protocol, bad input.

* every layer's backward against central differences (float64, on both
  backends), Conv2D with stride/padding/dilation/groups/depthwise, pools with
  overlapping windows, BatchNorm in training and evaluation mode, Dropout
  with a fixed generator;
* forward, input gradient and parameter gradients against ``torch.nn`` (skipped
  when PyTorch is not installed), BatchNorm running statistics over several
  steps, Dropout's scaling, PyTorch's init bounds;
* the compiled and NumPy backends give identical results;
* the protocol: ``params``/``grads`` keys, in-place gradients,
  ``output_shape``, inputs never modified, clear errors.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import fastcnn
from fastcnn import _backend
from fastcnn.gradcheck import gradcheck
from fastcnn.model import Sequential
from fastcnn.layers import (
    ELU,
    SELU,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
)

BACKENDS = ("numpy", "cython") if _backend.compiled_available() else ("numpy",)


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastcnn.use_backend(request.param):
        yield request.param


@pytest.fixture
def numpy_backend():
    """For finite differences, which call the kernels hundreds of times.

    The compiled set gives bitwise the same forward and backward
    (test_backends_agree), so checking the gradients once is enough, and the
    NumPy twin is fast for such tiny calls.
    """
    with fastcnn.use_backend("numpy"):
        yield


def away_from_zero(shape, seed, dtype=np.float64):
    """Normal values pushed at least 0.1 away from 0 (the kink of ReLU-like layers)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return (x + 0.1 * np.sign(x)).astype(dtype)


def with_statistics(bn):
    """A BatchNorm whose weight, bias and running statistics are not the defaults."""
    rng = np.random.default_rng(7)
    c = bn.num_features
    bn.params["weight"][...] = rng.uniform(0.5, 1.5, c)
    bn.params["bias"][...] = rng.standard_normal(c)
    bn.state["running_mean"][...] = rng.standard_normal(c)
    bn.state["running_var"][...] = rng.uniform(0.5, 2.0, c)
    return bn


@dataclass
class Case:
    id: str
    make: Callable  # dtype -> Layer, deterministic
    shape: tuple
    torch: Callable | None = None  # torch.nn -> equivalent module
    training: bool = True


CASES = [
    Case("conv", lambda dt: Conv2D(3, 4, 3, dtype=dt, rng=0), (2, 3, 6, 6),
         lambda nn: nn.Conv2d(3, 4, 3)),
    Case("conv-stride-pad", lambda dt: Conv2D(3, 4, (3, 2), stride=(2, 1), padding=(1, 2),
                                              dtype=dt, rng=1), (2, 3, 7, 6),
         lambda nn: nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 2))),
    Case("conv-dilation-nobias", lambda dt: Conv2D(2, 3, 3, dilation=2, padding=1, bias=False,
                                                   dtype=dt, rng=2), (2, 2, 7, 7),
         lambda nn: nn.Conv2d(2, 3, 3, dilation=2, padding=1, bias=False)),
    Case("conv-groups", lambda dt: Conv2D(4, 6, 3, groups=2, padding="same", dtype=dt, rng=3),
         (2, 4, 5, 5), lambda nn: nn.Conv2d(4, 6, 3, groups=2, padding="same")),
    Case("conv-depthwise", lambda dt: Conv2D(3, 3, 2, groups=3, padding="same", dtype=dt, rng=4),
         (2, 3, 5, 5), lambda nn: nn.Conv2d(3, 3, 2, groups=3, padding="same")),
    Case("maxpool-overlap", lambda dt: MaxPool2D(3, stride=2, padding=1), (2, 3, 7, 7),
         lambda nn: nn.MaxPool2d(3, stride=2, padding=1)),
    Case("maxpool-dilation-ceil", lambda dt: MaxPool2D(2, stride=2, dilation=2, ceil_mode=True),
         (2, 2, 7, 6), lambda nn: nn.MaxPool2d(2, stride=2, dilation=2, ceil_mode=True)),
    Case("avgpool-overlap", lambda dt: AvgPool2D(3, stride=2, padding=1), (2, 3, 7, 7),
         lambda nn: nn.AvgPool2d(3, stride=2, padding=1)),
    Case("avgpool-nopad-ceil", lambda dt: AvgPool2D(3, stride=2, padding=1, ceil_mode=True,
                                                    count_include_pad=False), (2, 2, 6, 6),
         lambda nn: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    Case("globalavgpool", lambda dt: GlobalAvgPool2D(), (2, 3, 4, 5),
         lambda nn: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())),
    Case("dense", lambda dt: Dense(5, 4, dtype=dt, rng=5), (3, 5), lambda nn: nn.Linear(5, 4)),
    Case("dense-nobias", lambda dt: Dense(5, 4, bias=False, dtype=dt, rng=6), (3, 5),
         lambda nn: nn.Linear(5, 4, bias=False)),
    Case("flatten", lambda dt: Flatten(), (2, 3, 2, 2), lambda nn: nn.Flatten()),
    Case("relu", lambda dt: ReLU(), (3, 7), lambda nn: nn.ReLU()),
    Case("leakyrelu", lambda dt: LeakyReLU(0.2), (3, 7), lambda nn: nn.LeakyReLU(0.2)),
    Case("sigmoid", lambda dt: Sigmoid(), (3, 7), lambda nn: nn.Sigmoid()),
    Case("tanh", lambda dt: Tanh(), (3, 7), lambda nn: nn.Tanh()),
    Case("elu", lambda dt: ELU(0.7), (3, 7), lambda nn: nn.ELU(0.7)),
    Case("selu", lambda dt: SELU(), (3, 7), lambda nn: nn.SELU()),
    Case("softplus", lambda dt: Softplus(), (3, 7), lambda nn: nn.Softplus()),
    Case("softplus-beta", lambda dt: Softplus(beta=2.0, threshold=1.0), (3, 7),
         lambda nn: nn.Softplus(beta=2.0, threshold=1.0)),
    Case("softmax", lambda dt: Softmax(), (3, 5, 2), lambda nn: nn.Softmax(dim=1)),
    Case("softmax-last", lambda dt: Softmax(axis=-1), (3, 5), lambda nn: nn.Softmax(dim=-1)),
    Case("bn1d-train", lambda dt: with_statistics(BatchNorm1D(4, dtype=dt)), (5, 4),
         lambda nn: nn.BatchNorm1d(4)),
    Case("bn1d-ncl-train", lambda dt: with_statistics(BatchNorm1D(3, dtype=dt)), (2, 3, 4),
         lambda nn: nn.BatchNorm1d(3)),
    Case("bn2d-train", lambda dt: with_statistics(BatchNorm2D(3, momentum=0.3, dtype=dt)),
         (2, 3, 3, 4), lambda nn: nn.BatchNorm2d(3, momentum=0.3)),
    Case("bn1d-eval", lambda dt: with_statistics(BatchNorm1D(4, dtype=dt)), (5, 4),
         lambda nn: nn.BatchNorm1d(4), training=False),
    Case("bn2d-eval", lambda dt: with_statistics(BatchNorm2D(3, eps=1e-3, dtype=dt)),
         (2, 3, 3, 4), lambda nn: nn.BatchNorm2d(3, eps=1e-3), training=False),
    Case("dropout", lambda dt: Dropout(0.3, rng=8), (4, 6)),
    Case("dropout-eval", lambda dt: Dropout(0.3, rng=8), (4, 6), lambda nn: nn.Dropout(0.3),
         training=False),
]
case_ids = [c.id for c in CASES]
all_cases = pytest.mark.parametrize("case", CASES, ids=case_ids)
torch_cases = pytest.mark.parametrize(
    "case", [c for c in CASES if c.torch], ids=[c.id for c in CASES if c.torch]
)


def forward_backward(layer, x, dout, training=True):
    """Output, input gradient and copies of the parameter gradients."""
    out = layer.forward(x, training)
    dx = layer.backward(dout)
    return out, dx, {k: g.copy() for k, g in layer.grads.items()}


# ---------------------------------------------------------------------------
# Gradients


@all_cases
def test_gradcheck(case, numpy_backend):
    layer = case.make(np.float64)
    report = gradcheck(layer, away_from_zero(case.shape, seed=11), training=case.training, rng=12)
    assert report.passed, str(report)
    assert set(report.max_abs_error) == {"x", *layer.params}


def test_gradcheck_sequential_with_dropout_and_batchnorm(numpy_backend):
    model = Sequential([
        Conv2D(2, 3, 3, padding=1, dtype=np.float64, rng=0),
        BatchNorm2D(3, dtype=np.float64),
        ReLU(),
        Dropout(0.5, rng=1),
        Flatten(),
        Dense(3 * 4 * 4, 2, dtype=np.float64, rng=2),
    ])
    report = gradcheck(model, away_from_zero((3, 2, 4, 4), seed=1), rng=3)
    assert report.passed, str(report)
    assert {"0.weight", "0.bias", "1.weight", "5.bias"} <= set(report.max_abs_error)


def test_gradcheck_detects_a_wrong_backward():
    class Doubled(Tanh):
        def _backward(self, dout, out):
            return 2 * super()._backward(dout, out)

    report = gradcheck(Doubled(), away_from_zero((2, 3), seed=0))
    assert not report.passed and report.failures == ["x"]
    assert report.max_rel_error["x"] > 0.4
    with pytest.raises(AssertionError, match="FAILED: x"):
        gradcheck(Doubled(), away_from_zero((2, 3), seed=0), raise_on_failure=True)


def test_gradcheck_leaves_the_layer_unchanged():
    bn = with_statistics(BatchNorm2D(3, dtype=np.float64))
    drop = Dropout(0.5, rng=3)
    before = {k: v.copy() for k, v in {**bn.params, **bn.state}.items()}
    rng_state = drop.rng.bit_generator.state
    gradcheck(bn, away_from_zero((2, 3, 3, 3), seed=0))
    gradcheck(drop, away_from_zero((2, 3), seed=0))
    for key, value in {**bn.params, **bn.state}.items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    assert drop.rng.bit_generator.state == rng_state


def test_gradcheck_requires_float64():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(ReLU(), np.ones((2, 2), np.float32))
    with pytest.raises(TypeError, match="weight"):
        gradcheck(Dense(2, 2, rng=0), np.ones((2, 2)))


# ---------------------------------------------------------------------------
# PyTorch semantics


def tolerance(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


def torch_module(case, layer, dtype):
    """The PyTorch twin of `layer`, holding copies of its parameters and state."""
    torch = pytest.importorskip("torch")
    module = case.torch(torch.nn).to(torch.float32 if dtype == np.float32 else torch.float64)
    with torch.no_grad():
        for name, value in {**layer.params, **layer.state}.items():
            getattr(module, name).copy_(torch.from_numpy(value.copy()))
    return module.train(case.training)


def torch_forward_backward(module, x, dout):
    torch = pytest.importorskip("torch")
    xt = torch.from_numpy(x.copy()).requires_grad_()
    with warnings.catch_warnings():
        # PyTorch notes that padding="same" with an even kernel copies the input.
        warnings.filterwarnings("ignore", "Using padding='same'", UserWarning)
        out = module(xt)
    out.backward(torch.from_numpy(dout))
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    return out.detach().numpy(), xt.grad.numpy(), grads


@torch_cases
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch(case, dtype):
    layer = case.make(dtype)
    module = torch_module(case, layer, dtype)
    x = away_from_zero(case.shape, seed=21, dtype=dtype)
    out = layer.forward(x, case.training)
    dout = np.random.default_rng(22).standard_normal(out.shape).astype(dtype)
    dx = layer.backward(dout)
    t_out, t_dx, t_grads = torch_forward_backward(module, x, dout)
    tol = tolerance(dtype)
    assert out.dtype == dx.dtype == dtype
    np.testing.assert_allclose(out, t_out, **tol)
    np.testing.assert_allclose(dx, t_dx, **tol)
    assert set(t_grads) == set(layer.grads)
    for name, grad in layer.grads.items():
        assert grad.dtype == dtype
        np.testing.assert_allclose(grad, t_grads[name], **tol, err_msg=name)
    for name, value in layer.state.items():
        np.testing.assert_allclose(value, getattr(module, name).numpy(), **tol, err_msg=name)


@pytest.mark.parametrize("make, ours, dims", [
    (lambda dt: BatchNorm1D(3, momentum=0.2, dtype=dt), "BatchNorm1d", (6, 3, 2)),
    (lambda dt: BatchNorm2D(3, dtype=dt), "BatchNorm2d", (4, 3, 2, 3)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_running_statistics_match_torch_over_several_steps(make, ours, dims, dtype):
    torch = pytest.importorskip("torch")
    layer = make(dtype)
    module = getattr(torch.nn, ours)(3, momentum=layer.momentum).to(
        torch.float32 if dtype == np.float32 else torch.float64
    )
    rng = np.random.default_rng(0)
    tol = tolerance(dtype)
    for step in range(4):
        x = (rng.standard_normal(dims) * (step + 1) + step).astype(dtype)
        expected = module.train()(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(layer.forward(x), expected, **tol)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(layer.state[name], getattr(module, name).numpy(), **tol)
    x = rng.standard_normal(dims).astype(dtype)
    np.testing.assert_allclose(
        layer.forward(x, training=False), module.eval()(torch.from_numpy(x)).detach(), **tol
    )


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_dropout_scaling_matches_torch(p):
    torch = pytest.importorskip("torch")
    x = np.ones((200, 500))
    out = Dropout(p, rng=0).forward(x)
    t_out = torch.nn.functional.dropout(torch.from_numpy(x), p, training=True).numpy()
    np.testing.assert_array_equal(np.unique(out), np.unique(t_out))
    assert abs(np.mean(out == 0) - p) < 0.01


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make, name", [
    (Sigmoid, "Sigmoid"), (Tanh, "Tanh"), (ELU, "ELU"), (SELU, "SELU"), (Softplus, "Softplus"),
    (ReLU, "ReLU"), (LeakyReLU, "LeakyReLU"),
])
def test_activations_at_extreme_values_match_torch(make, name, dtype):
    # No overflow warnings (filterwarnings=error) and PyTorch's values, including
    # Softplus' switch to the identity above its threshold of 20.
    torch = pytest.importorskip("torch")
    x = np.array([-1e4, -100, -30, -20.5, -1, 1e-3, 1, 19.9, 20.1, 30, 100, 1e4], dtype)
    layer = make()
    out = layer.forward(x)
    dx = layer.backward(np.ones_like(out))
    xt = torch.from_numpy(x.copy()).requires_grad_()
    t_out = getattr(torch.nn, name)()(xt)
    t_out.sum().backward()
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-30)


def test_softmax_of_huge_logits_is_finite():
    out = Softmax().forward(np.array([[1e4, 0.0, -1e4], [1e30, 1e30, 0]], np.float32))
    np.testing.assert_allclose(out, [[1, 0, 0], [0.5, 0.5, 0]])


def test_nan_propagates_through_activations():
    x = np.array([np.nan, 1.0])
    for layer in (ReLU(), LeakyReLU(), ELU(), SELU(), Sigmoid(), Tanh(), Softplus()):
        out = layer.forward(x)
        assert np.isnan(out[0]) and not np.isnan(out[1]), layer


@pytest.mark.parametrize("ours, theirs", [
    (lambda: Conv2D(6, 8, 3, groups=2, rng=0), lambda nn: nn.Conv2d(6, 8, 3, groups=2)),
    (lambda: Dense(300, 20, rng=0), lambda nn: nn.Linear(300, 20)),
])
def test_init_bounds_match_torch(ours, theirs):
    # PyTorch: weight and bias uniform in +-1/sqrt(fan_in); same bound, same spread.
    torch = pytest.importorskip("torch")
    layer = ours()
    torch.manual_seed(0)
    module = theirs(torch.nn)
    for name, value in layer.params.items():
        t_value = getattr(module, name).detach().numpy()
        fan_in = np.prod(layer.params["weight"].shape[1:])
        bound = 1 / np.sqrt(fan_in)
        for v in (value, t_value):
            assert np.abs(v).max() <= bound
        if value.size > 100:
            assert np.abs(value).max() > 0.97 * bound
            np.testing.assert_allclose(value.std(), bound / np.sqrt(3), rtol=0.1)
            np.testing.assert_allclose(value.std(), t_value.std(), rtol=0.1)


def test_init_is_reproducible_and_dtyped():
    a, b = Conv2D(2, 3, 3, rng=42), Conv2D(2, 3, 3, rng=np.random.default_rng(42))
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    assert not np.array_equal(a.params["weight"], Conv2D(2, 3, 3, rng=43).params["weight"])
    assert a.params["weight"].dtype == np.float32
    assert Dense(2, 3, dtype=np.float64).params["bias"].dtype == np.float64
    bn = BatchNorm2D(3)
    np.testing.assert_array_equal(bn.params["weight"], 1)
    np.testing.assert_array_equal(bn.state["running_var"], 1)
    np.testing.assert_array_equal(bn.state["running_mean"], 0)


# ---------------------------------------------------------------------------
# Both backends


@all_cases
def test_backends_agree(case):
    if len(BACKENDS) < 2:
        pytest.skip("compiled backend not built (FASTCNN_BACKEND=numpy run)")
    x = away_from_zero(case.shape, seed=31, dtype=np.float32)
    results = {}
    for name in BACKENDS:
        with fastcnn.use_backend(name):
            layer = case.make(np.float32)
            out = layer.forward(x, case.training)
            dout = np.random.default_rng(32).standard_normal(out.shape).astype(np.float32)
            results[name] = forward_backward(layer, x, dout, case.training)
    (out_a, dx_a, grads_a), (out_b, dx_b, grads_b) = results.values()
    # Exact, but where the twins agree to rounding only (reference.py says
    # which): products (the compiled GEMMs run on SciPy's BLAS, the twins' on
    # NumPy's), BatchNorm's sums, and tanh/exp (NumPy's own vectorised ones).
    same = np.testing.assert_array_equal
    if isinstance(case.make(np.float32), (Conv2D, Dense, BatchNorm1D, BatchNorm2D, Tanh, ELU,
                                          SELU, Sigmoid)):
        def same(a, b):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max(initial=1))
    same(out_a, out_b)
    same(dx_a, dx_b)
    for key in grads_a:
        same(grads_a[key], grads_b[key])


# ---------------------------------------------------------------------------
# The layer protocol


@all_cases
def test_output_shape_params_and_grads(case):
    layer = case.make(np.float32)
    x = away_from_zero(case.shape, seed=1, dtype=np.float32)
    assert layer.output_shape(case.shape) == layer.forward(x, case.training).shape
    assert set(layer.params) == set(layer.grads)
    params_before = dict(layer.params)
    grads_before = dict(layer.grads)
    for name, value in layer.params.items():
        assert layer.grads[name].shape == value.shape and layer.grads[name].dtype == value.dtype
    assert layer.num_params == sum(p.size for p in layer.params.values())
    out = layer.forward(x, case.training)
    dout = np.ones_like(out)
    first = forward_backward(layer, x, dout, case.training)[2]
    second = forward_backward(layer, x, dout, case.training)[2]
    for name in layer.params:
        # Same arrays (updated in place, never re-bound) and overwritten, not accumulated.
        assert layer.params[name] is params_before[name]
        assert layer.grads[name] is grads_before[name]
        np.testing.assert_array_equal(first[name], second[name])


@all_cases
def test_inputs_are_not_modified_and_layouts_do_not_matter(case, backend):
    x = away_from_zero(case.shape, seed=2)
    x_saved = x.copy()
    x.flags.writeable = False
    layer = case.make(np.float64)
    out = layer.forward(x, case.training)
    dout = np.random.default_rng(3).standard_normal(out.shape)
    dout_saved = dout.copy()
    dout.flags.writeable = False
    dx = layer.backward(dout)
    np.testing.assert_array_equal(x, x_saved)
    np.testing.assert_array_equal(dout, dout_saved)
    # Fortran order and negative strides: same numbers.
    other = case.make(np.float64)
    reversed_x = np.ascontiguousarray(x_saved[::-1])[::-1]
    out2 = other.forward(np.asfortranarray(reversed_x), case.training)
    dx2 = other.backward(np.asfortranarray(dout))
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(dx, dx2)


@all_cases
def test_backward_before_forward_is_a_clear_error(case):
    with pytest.raises(RuntimeError, match="before forward"):
        case.make(np.float32).backward(np.ones(case.shape, np.float32))


def test_dout_must_match_the_forward_output():
    layer = Dense(3, 2, rng=0)
    layer.forward(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape.*\(4, 2\)"):
        layer.backward(np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match="float32.*float64"):
        layer.backward(np.ones((4, 2), np.float64))


@pytest.mark.parametrize("layer, x", [
    (Dense(3, 2), np.ones((2, 3))),
    (BatchNorm1D(3), np.ones((2, 3))),
    (BatchNorm2D(3, dtype=np.float64), np.ones((2, 3, 2, 2), np.float32)),
    (Conv2D(3, 2, 1), np.ones((2, 3, 2, 2))),
])
def test_layer_and_input_dtype_must_match(layer, x):
    with pytest.raises(TypeError, match=r"float(32|64).*float(32|64)"):
        layer.forward(x)


@pytest.mark.parametrize("layer, x, match", [
    (Dense(3, 2), np.ones((2, 4), np.float32), r"in_features=3"),
    (Dense(3, 2), np.ones((2, 3, 1), np.float32), "Flatten"),
    (BatchNorm2D(3), np.ones((2, 3, 4), np.float32), r"\(N, C, H, W\)"),
    (BatchNorm1D(3), np.ones((2, 4), np.float32), "num_features=3"),
    (BatchNorm1D(3), np.ones((1, 3), np.float32), "more than 1 value per channel"),
    (Conv2D(3, 2, 3), np.ones((3, 5, 5), np.float32), r"x\[None\]"),
    (Conv2D(3, 2, 3), np.ones((1, 2, 5, 5), np.float32), "in_channels"),
    (MaxPool2D(2, padding=2), np.ones((1, 1, 5, 5), np.float32), "padding"),
    (GlobalAvgPool2D(), np.ones((2, 3), np.float32), "4-D"),
    (Flatten(), np.ones(3, np.float32), "2-D"),
    (Softmax(axis=2), np.ones((2, 3), np.float32), "axis"),
])
def test_bad_input_shapes(layer, x, match):
    with pytest.raises(ValueError, match=match):
        layer.forward(x)


@pytest.mark.parametrize("layer", [ReLU(), Flatten(), Dense(2, 2)])
@pytest.mark.parametrize("x", [np.ones((2, 2), np.float16), np.ones((2, 2), np.int64)])
def test_non_float_input_is_a_type_error(layer, x):
    with pytest.raises(TypeError, match="float32 or float64"):
        layer.forward(x)


@pytest.mark.parametrize("make, error, match", [
    (lambda: Conv2D(0, 4, 3), ValueError, "in_channels"),
    (lambda: Conv2D(3.0, 4, 3), TypeError, "in_channels"),
    (lambda: Conv2D(3, 4, 3, groups=2), ValueError, "divisible by groups"),
    (lambda: Conv2D(3, 4, 0), ValueError, "kernel_size"),
    (lambda: Conv2D(3, 4, 3, stride=(1, 0)), ValueError, "stride"),
    (lambda: Conv2D(3, 4, 3, padding=-1), ValueError, "padding"),
    (lambda: Conv2D(3, 4, 3, padding="full"), ValueError, "padding"),
    (lambda: Conv2D(3, 4, 3, padding="same", stride=2), ValueError, "stride"),
    (lambda: Conv2D(3, 4, 3, dilation=0), ValueError, "dilation"),
    (lambda: Conv2D(3, 4, 3, bias=1), TypeError, "bias"),
    (lambda: Conv2D(3, 4, 3, dtype=np.float16), TypeError, "dtype"),
    (lambda: Dense(3, 0), ValueError, "out_features"),
    (lambda: Dense(3, 2, dtype=np.int32), TypeError, "dtype"),
    (lambda: Dense(3, 2, dtype="nonsense"), TypeError, "dtype"),
    (lambda: MaxPool2D(0), ValueError, "kernel_size"),
    (lambda: MaxPool2D(2, stride=0), ValueError, "stride"),
    (lambda: MaxPool2D(2, ceil_mode="yes"), TypeError, "ceil_mode"),
    (lambda: AvgPool2D(2, padding=-1), ValueError, "padding"),
    (lambda: AvgPool2D(2, count_include_pad=None), TypeError, "count_include_pad"),
    (lambda: BatchNorm2D(0), ValueError, "num_features"),
    (lambda: BatchNorm2D(3, eps=0), ValueError, "eps"),
    (lambda: BatchNorm1D(3, momentum=1.5), ValueError, "momentum"),
    (lambda: BatchNorm1D(3, eps="small"), TypeError, "eps"),
    (lambda: Dropout(1.5), ValueError, r"p must be in \[0, 1\]"),
    (lambda: Dropout(-0.1), ValueError, "p must be"),
    (lambda: Dropout(float("nan")), ValueError, "p must be"),
    (lambda: Dropout("0.5"), TypeError, "p must be a real number"),
    (lambda: LeakyReLU("0.1"), TypeError, "negative_slope"),
    (lambda: ELU(alpha=None), TypeError, "alpha"),
    (lambda: Softplus(beta=0), ValueError, "beta"),
    (lambda: Softmax(axis=1.0), TypeError, "axis"),
])
def test_constructor_arguments_are_validated(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_training_flag_must_be_a_bool():
    with pytest.raises(TypeError, match="training"):
        ReLU().forward(np.ones(2), training="no")


# ---------------------------------------------------------------------------
# Layer-specific behaviour


def test_dropout_modes_and_edge_probabilities():
    x = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    drop = Dropout(0.5, rng=0)
    np.testing.assert_array_equal(drop.forward(x, training=False), x)
    np.testing.assert_array_equal(drop.backward(np.ones_like(x)), 1)
    out = drop.forward(x)
    kept = out != 0
    np.testing.assert_array_equal(out[kept], 2 * x[kept])
    np.testing.assert_array_equal(drop.backward(np.ones_like(x)), 2.0 * kept)
    np.testing.assert_array_equal(Dropout(0.0, rng=0).forward(x), x)
    everything = Dropout(1.0, rng=0)
    np.testing.assert_array_equal(everything.forward(x), 0)
    np.testing.assert_array_equal(everything.backward(np.ones_like(x)), 0)
    # A fixed generator gives reproducible masks; successive calls differ.
    a, b = Dropout(0.5, rng=3), Dropout(0.5, rng=3)
    first = a.forward(x)
    np.testing.assert_array_equal(first, b.forward(x))
    assert not np.array_equal(first, a.forward(np.ones((30, 30), np.float32))[:3, :4])


def test_batchnorm_eval_uses_running_statistics():
    bn = BatchNorm1D(2, eps=0.0001, dtype=np.float64)
    bn.state["running_mean"][...] = [1.0, -2.0]
    bn.state["running_var"][...] = [4.0, 0.25]
    x = np.array([[3.0, -2.0], [1.0, -1.5]])
    expected = (x - [1.0, -2.0]) / np.sqrt(np.array([4.0, 0.25]) + 0.0001)
    np.testing.assert_allclose(bn.forward(x, training=False), expected)
    np.testing.assert_array_equal(bn.state["running_mean"], [1.0, -2.0])  # untouched in eval
    # Training: batch statistics, biased variance to normalise, unbiased into the running one.
    out = bn.forward(x)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(
        bn.state["running_mean"], 0.9 * np.array([1.0, -2.0]) + 0.1 * x.mean(axis=0)
    )
    np.testing.assert_allclose(
        bn.state["running_var"], 0.9 * np.array([4.0, 0.25]) + 0.1 * x.var(axis=0, ddof=1)
    )


@pytest.mark.parametrize("make", [ReLU, LeakyReLU, Sigmoid, Tanh, ELU, SELU, Softplus, Dropout])
def test_elementwise_layers_return_arrays_for_0d_input(make):
    # A ufunc of a 0-d array gives a NumPy scalar; forward and backward
    # promise ndarrays (found by the fuzz suite: Tanh of a 0-d NaN).
    layer = make()
    out = layer.forward(np.array(np.float32(0.5)))
    dx = layer.backward(np.array(np.float32(1.0)))
    assert type(out) is np.ndarray and out.shape == () and out.dtype == np.float32
    assert type(dx) is np.ndarray and dx.shape == () and dx.dtype == np.float32


def test_batchnorm_eval_on_an_empty_batch_allocates_nothing_per_channel():
    # An empty batch of huge planes: the output is empty, the parameter
    # gradients are 0 (sums over nothing), and no (C, H*W) plane is built
    # (2**31 cells: 8 GiB each in float32, 24 GiB for three channels).
    for make, shape in ((BatchNorm2D, (0, 3, 2**31, 1)), (BatchNorm1D, (0, 3, 2**31))):
        bn = make(3)
        x = np.broadcast_to(np.float32(1), shape)
        out = bn.forward(x, training=False)
        assert out.shape == shape and out.dtype == np.float32
        bn.grads["weight"][...] = bn.grads["bias"][...] = 7
        dx = bn.backward(np.empty(shape, np.float32))
        assert dx.shape == shape
        np.testing.assert_array_equal(bn.grads["weight"], 0)
        np.testing.assert_array_equal(bn.grads["bias"], 0)
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            bn.forward(x, training=True)


def test_global_avg_pool_and_flatten_by_hand():
    x = np.arange(24, dtype=np.float64).reshape(1, 2, 3, 4)
    gap = GlobalAvgPool2D()
    np.testing.assert_array_equal(gap.forward(x), [[5.5, 17.5]])
    np.testing.assert_array_equal(
        gap.backward(np.array([[12.0, 24.0]])), np.repeat([1.0, 2.0], 12).reshape(x.shape)
    )
    flat = Flatten()
    np.testing.assert_array_equal(flat.forward(x), x.reshape(1, 24))
    assert flat.forward(np.ones((0, 2, 3))).shape == (0, 6)


def test_repr_shows_non_default_arguments():
    conv = Conv2D(3, 8, 3, padding=1, rng=0)
    assert repr(conv) == "Conv2D(3, 8, kernel_size=(3, 3), padding=(1, 1))"
    assert repr(MaxPool2D(2)) == "MaxPool2D(kernel_size=(2, 2))"
    assert repr(Dropout(0.25)) == "Dropout(p=0.25)"


@pytest.mark.parametrize("make, kind, name, bad", [
    (lambda: Conv2D(3, 4, 3), "params", "weight", np.ones((8, 400, 3, 3), np.float32)),
    (lambda: Conv2D(3, 4, 3), "params", "bias", np.ones(1, np.float32)),
    (lambda: Dense(5, 2), "params", "weight", np.ones((2, 5), np.float32)[:, ::-1]),
    (lambda: BatchNorm2D(3), "params", "weight", np.ones(1, np.float32)),
    (lambda: BatchNorm2D(3), "state", "running_mean", np.zeros(1, np.float32)),
    (lambda: BatchNorm2D(3), "grads", "bias", np.zeros(1, np.float32)),
    (lambda: Dense(5, 2), "params", "bias", [0.0, 0.0]),
])
def test_replaced_arrays_of_the_wrong_kind_are_refused(make, kind, name, bad):
    # The kernels read parameters and state without re-checking them: a
    # replaced array of another shape would make them read out of bounds.
    layer = make()
    shape = (2, 3, 6, 6) if not isinstance(layer, Dense) else (2, 5)
    x = np.ones(shape, np.float32)
    layer.forward(x, training=False)  # state seen as made
    getattr(layer, kind)[name] = bad
    with pytest.raises(ValueError, match=rf"{kind}\['{name}'\] must be"):
        layer.forward(x, training=False)
