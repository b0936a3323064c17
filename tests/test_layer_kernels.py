"""The kernels between convolutions, through functional's private entry points.

Each entry point (``fastcnn.functional._batch_norm_forward`` and the others
of its section) is checked on both kernel sets against what the layers, the
loss and the optimizers compute today, and against PyTorch where it is
installed:

* batch norm: the output, dx, dweight, dbias and the running statistics of
  ``BatchNorm1D`` / ``BatchNorm2D`` in training and evaluation mode, within
  rounding (the layer sums in the data's dtype, the kernels in float64:
  float32 results agree to 1e-5 relative to their scale, float64 ones to
  1e-12); the empty batch and the one-value error as the layer has them;
  data far from zero, where the entry points stay right to rounding.
* activations: ReLU and LeakyReLU forward and backward equal to the layers
  bit for bit on data the layers handle alike (the ReLU layer multiplies
  dout by the mask, so it differs where dout is inf or NaN: the kernels
  give 0 there, as torch does), and equal to torch. Sigmoid, Tanh, ELU and
  SELU within a few ulps of the layers and of torch (exp, expm1 and tanh
  come from the C library here, from NumPy or SLEEF there); their backward
  passes equal the layers' bit for bit given the same forward output
  (sigmoid, tanh) or input (elu: within ulps, exp again).
* softmax cross-entropy: the loss and the gradient of
  ``fastcnn.losses.softmax_cross_entropy`` (which sums in the logits' dtype:
  within a few float32 ulps, 1e-12 in float64), NaN for the same rows
  (NaN or +inf logits, only -inf logits) and inf where the label's logit
  alone is -inf; and torch's ``cross_entropy``.
* optimizer steps: every optimizer of ``fastcnn.optim`` with its options,
  over many steps of random gradients, BITWISE equal to the optimizer's
  NumPy update, parameters and state alike.
* resampling layers: ``Upsample`` (nearest, bilinear) and ``MaxUnpool2D``
  against torch's modules: nearest's forward and both of max-unpooling's
  passes (repeated indices included: the last one wins) equal bit for bit;
  bilinear's passes and nearest's backward to rounding (torch fuses
  multiply-adds and sums each input cell in another order).

Every entry point reaches its twin under the "numpy" backend and only the
compiled kernel under "cython" (test_threads.py, test_dispatch_really_switches).

Backends: the two kernel sets agree to rounding (sums in another order),
exactly for the element-wise results given the same statistics (see
test_parity.py); here both run every case.
"""

from __future__ import annotations

import numpy as np
import pytest
from strategies import FLOAT_DTYPES, make_values

import fastcnn
from fastcnn import _backend
from fastcnn import functional as F
from fastcnn import losses, optim
from fastcnn.layers import (
    ELU,
    SELU,
    BatchNorm1D,
    BatchNorm2D,
    Dense,
    LeakyReLU,
    MaxUnpool2D,
    ReLU,
    Sigmoid,
    Tanh,
    Upsample,
)

BACKENDS = ("cython", "numpy") if _backend.compiled_available() else ("numpy",)
backends = pytest.mark.parametrize("backend", BACKENDS)
dtypes = pytest.mark.parametrize("dtype", FLOAT_DTYPES)


def _tolerance(dtype):
    return dict(rtol=1e-5, atol=1e-5) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12,
                                                                                  atol=1e-12)


def _close(got, expected, dtype, scale=1.0):
    """Same dtype and shape; values within the dtype's tolerance times `scale`."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    tol = _tolerance(dtype)
    np.testing.assert_allclose(got, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


# ---------------------------------------------------------------------------
# Batch norm


def _bn_layer(cls, c, dtype, seed):
    bn = cls(c, momentum=0.3, eps=1e-3, dtype=dtype)
    rng = np.random.default_rng(seed)
    bn.params["weight"][...] = rng.uniform(0.5, 1.5, c)
    bn.params["bias"][...] = rng.standard_normal(c)
    bn.state["running_mean"][...] = rng.standard_normal(c)
    bn.state["running_var"][...] = rng.uniform(0.5, 2.0, c)
    return bn


def _bn_functional(bn, x, dout, training):
    """Forward and backward of the entry points, with copies of `bn`'s state.

    Returns (out, dx, dweight, dbias, running_mean, running_var)."""
    running_mean = bn.state["running_mean"].copy()
    running_var = bn.state["running_var"].copy()
    weight = bn.params["weight"]
    out, cache = F._batch_norm_forward(x, weight, bn.params["bias"], running_mean, running_var,
                                       training, bn.momentum, bn.eps)
    dx, dweight, dbias = F._batch_norm_backward(dout, cache, weight)
    return out, dx, dweight, dbias, running_mean, running_var


BN_SHAPES = [
    (BatchNorm2D, (4, 3, 5, 6)),
    (BatchNorm2D, (1, 2, 1, 3)),
    (BatchNorm2D, (3, 1, 40, 33)),  # channels longer than a piece of the compiled tiling
    (BatchNorm1D, (6, 5)),
    (BatchNorm1D, (2, 3, 4)),
    (BatchNorm1D, (2, 1)),
]


@backends
@dtypes
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("cls, shape", BN_SHAPES)
def test_batch_norm_matches_the_layer(backend, dtype, training, cls, shape):
    rng = np.random.default_rng(len(shape) + shape[0])
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    bn = _bn_layer(cls, shape[1], dtype, 1)
    with fastcnn.use_backend(backend):
        got = _bn_functional(bn, x, dout, training)
    x_before = x.copy()
    expected = (bn.forward(x, training), bn.backward(dout), bn.grads["weight"],
                bn.grads["bias"], bn.state["running_mean"], bn.state["running_var"])
    np.testing.assert_array_equal(x, x_before)
    # dweight and dbias are sums over N*L terms of size ~1
    samples = x.size // shape[1]
    for i, (g, e) in enumerate(zip(got, expected)):
        _close(g, e, dtype, scale=samples if i in (2, 3) else 1.0)


@backends
@dtypes
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("cls, shape", BN_SHAPES)
def test_batch_norm_matches_torch(backend, dtype, training, cls, shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(shape[0] * 7 + len(shape))
    x = (rng.standard_normal(shape) * 2 - 1).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    bn = _bn_layer(cls, shape[1], dtype, 2)
    with fastcnn.use_backend(backend):
        out, dx, dweight, dbias, running_mean, running_var = _bn_functional(bn, x, dout, training)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(bn.params["weight"], requires_grad=True)
    tb = torch.tensor(bn.params["bias"], requires_grad=True)
    t_mean = torch.tensor(bn.state["running_mean"])
    t_var = torch.tensor(bn.state["running_var"])
    t_out = torch.nn.functional.batch_norm(tx, t_mean, t_var, tw, tb, training=training,
                                           momentum=bn.momentum, eps=bn.eps)
    t_out.backward(torch.tensor(dout))
    samples = x.size // shape[1]
    for got, expected, scale in ((out, t_out, 1), (dx, tx.grad, 1), (dweight, tw.grad, samples),
                                 (dbias, tb.grad, samples), (running_mean, t_mean, 1),
                                 (running_var, t_var, 1)):
        _close(got, expected.detach().numpy(), dtype, scale)


@backends
@dtypes
def test_batch_norm_far_from_zero(backend, dtype):
    # 1e4 + N(0, 1) in float32 (1e8 in float64): the statistics and the
    # output keep their precision, as computed in float64 from the same data.
    # (In float64 the batch mean itself is rounded to a spacing of 1.5e-8, so
    # x - mean, the output and dx are as good as a few of those.)
    offset = 1e4 if dtype == np.float32 else 1e8
    rng = np.random.default_rng(5)
    x = (offset + rng.standard_normal((8, 3, 7, 9))).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    weight, bias = np.ones(3, dtype), np.zeros(3, dtype)
    with fastcnn.use_backend(backend):
        out, cache = F._batch_norm_forward(x, weight, bias, np.zeros(3, dtype),
                                           np.ones(3, dtype), True, 0.1, 1e-5)
        dx, dweight, dbias = F._batch_norm_backward(dout, cache, weight)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3), keepdims=True)
    centered = x64 - mean
    inv_std = 1 / np.sqrt((centered**2).mean(axis=(0, 2, 3), keepdims=True) + 1e-5)
    x_hat = centered * inv_std
    expected_dx = inv_std * (dout - dout.mean(axis=(0, 2, 3), keepdims=True)
                             - x_hat * (dout * x_hat).mean(axis=(0, 2, 3), keepdims=True))
    atol = 1e-5 if dtype == np.float32 else 4 * np.spacing(offset)
    np.testing.assert_allclose(out, x_hat, rtol=0, atol=atol)
    np.testing.assert_allclose(dx, expected_dx, rtol=0, atol=atol)
    np.testing.assert_allclose(dweight, (dout * x_hat).sum(axis=(0, 2, 3)), rtol=0,
                               atol=atol * x[:, 0].size)


@backends
def test_batch_norm_empty_batch_and_one_value(backend):
    weight, bias = np.ones(3, np.float32), np.zeros(3, np.float32)
    running = np.zeros(3, np.float32), np.ones(3, np.float32)
    with fastcnn.use_backend(backend):
        out, cache = F._batch_norm_forward(np.empty((0, 3, 4, 4), np.float32), weight, bias,
                                           *running, False, 0.1, 1e-5)
        assert out.shape == (0, 3, 4, 4) and out.dtype == np.float32 and cache is None
        dx, dweight, dbias = F._batch_norm_backward(np.empty((0, 3, 4, 4), np.float32), cache,
                                                    weight)
        assert dx.shape == (0, 3, 4, 4)
        np.testing.assert_array_equal(dweight, 0)
        np.testing.assert_array_equal(dbias, 0)
        for shape in ((1, 3), (1, 3, 1, 1), (0, 3, 2, 2)):
            with pytest.raises(ValueError, match="more than 1 value per channel"):
                F._batch_norm_forward(np.ones(shape, np.float32), weight, bias, *running, True,
                                      0.1, 1e-5)
    np.testing.assert_array_equal(running[0], 0)  # untouched by the failed calls
    np.testing.assert_array_equal(running[1], 1)


# ---------------------------------------------------------------------------
# Activations


def _activation_data(dtype, shape=(3, 4, 5, 6)):
    """Both signs, zeros of both signs, infinities and NaN in x; finite dout."""
    rng = np.random.default_rng(9)
    x = make_values(rng, shape, dtype, "normal")
    x.reshape(-1)[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0]
    return x, make_values(rng, shape, dtype, "normal")


ACTIVATIONS = [
    pytest.param(ReLU(), lambda x: F._relu(x), lambda d, x: F._relu_backward(d, x), id="relu"),
    pytest.param(LeakyReLU(0.2), lambda x: F._leaky_relu(x, 0.2),
                 lambda d, x: F._leaky_relu_backward(d, x, 0.2), id="leaky_relu"),
    pytest.param(LeakyReLU(-1.5), lambda x: F._leaky_relu(x, -1.5),
                 lambda d, x: F._leaky_relu_backward(d, x, -1.5), id="leaky_relu-negative"),
]


@backends
@dtypes
@pytest.mark.parametrize("layer, forward, backward", ACTIVATIONS)
def test_activations_match_the_layers(backend, dtype, layer, forward, backward):
    x, dout = _activation_data(dtype)
    with fastcnn.use_backend(backend), np.errstate(invalid="ignore"):
        out, dx = forward(x), backward(dout, x)
    with np.errstate(invalid="ignore"):  # the layers' twins multiply inf by a slope of 0
        expected_out = layer.forward(x)
        expected_dx = layer.backward(dout)
    np.testing.assert_array_equal(out, expected_out, strict=True)
    np.testing.assert_array_equal(dx, expected_dx, strict=True)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(expected_out))


@backends
@dtypes
@pytest.mark.parametrize("layer, forward, backward", ACTIVATIONS)
def test_activations_match_torch(backend, dtype, layer, forward, backward):
    torch = pytest.importorskip("torch")
    x, dout = _activation_data(dtype)
    # torch's ReLU passes the gradient where x is NaN (its mask is
    # "not x <= 0"); ours, as the layers', is "x > 0": NaN gets 0.
    x[np.isnan(x)] = 3.0
    dout.reshape(-1)[-3:] = [np.inf, -np.inf, np.nan]
    x.reshape(-1)[-3:] = [-1.0, -2.0, -3.0]  # where the gradient is blocked or scaled
    with fastcnn.use_backend(backend), np.errstate(invalid="ignore"):
        out, dx = forward(x), backward(dout, x)
    module = (torch.nn.ReLU() if isinstance(layer, ReLU)
              else torch.nn.LeakyReLU(layer.negative_slope))
    tx = torch.tensor(x, requires_grad=True)
    t_out = module(tx)
    t_out.backward(torch.tensor(dout))
    np.testing.assert_array_equal(out, t_out.detach().numpy(), strict=True)
    np.testing.assert_array_equal(dx, tx.grad.numpy(), strict=True)


SMOOTH = [  # (layer, forward, backward from (dout, x, y), torch module, ulps of dx)
    pytest.param(Sigmoid(), F._sigmoid, lambda d, x, y: F._sigmoid_backward(d, y),
                 lambda nn: nn.Sigmoid(), 0, id="sigmoid"),
    pytest.param(Tanh(), F._tanh, lambda d, x, y: F._tanh_backward(d, y),
                 lambda nn: nn.Tanh(), 0, id="tanh"),
    pytest.param(ELU(0.7), lambda x: F._elu(x, 0.7), lambda d, x, y: F._elu_backward(d, x, 0.7),
                 lambda nn: nn.ELU(0.7), 8, id="elu"),
    pytest.param(SELU(), lambda x: F._elu(x, SELU.ALPHA, SELU.SCALE),
                 lambda d, x, y: F._elu_backward(d, x, SELU.ALPHA, SELU.SCALE),
                 lambda nn: nn.SELU(), 8, id="selu"),
]


def _within_ulps(got, expected, dtype, ulps):
    assert got.dtype == expected.dtype == dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=ulps * np.finfo(dtype).eps, atol=0)


@backends
@dtypes
@pytest.mark.parametrize("layer, forward, backward, module, ulps", SMOOTH)
def test_smooth_activations_match_the_layers(backend, dtype, layer, forward, backward, module,
                                             ulps):
    x, dout = _activation_data(dtype)
    x = x * 8  # saturation on both sides
    with fastcnn.use_backend(backend):
        out = forward(x)
        expected_out = layer.forward(x)
        # given the layer's own output, the backward is the layer's
        dx = backward(dout, x, expected_out)
    expected_dx = layer.backward(dout)
    _within_ulps(out, expected_out, dtype, 4)
    _within_ulps(dx, expected_dx, dtype, ulps)


@backends
@dtypes
@pytest.mark.parametrize("layer, forward, backward, module, ulps", SMOOTH)
def test_smooth_activations_match_torch(backend, dtype, layer, forward, backward, module, ulps):
    torch = pytest.importorskip("torch")
    x, dout = _activation_data(dtype)
    x = x * 8
    with fastcnn.use_backend(backend):
        out = forward(x)
        dx = backward(dout, x, out)
    tx = torch.tensor(x, requires_grad=True)
    t_out = module(torch.nn)(tx)
    t_out.backward(torch.tensor(dout))
    # torch's own exp and tanh (SLEEF): a few ulps. dx comes from our output
    # in place of torch's: an ulp of y (at most 1) moves the derivative
    # (1 - y * y, y * (1 - y)) by a few ulps of 1, times dout.
    _within_ulps(out, t_out.detach().numpy(), dtype, 4)
    expected_dx = tx.grad.numpy()
    eps = np.finfo(dtype).eps
    numbers = ~np.isnan(expected_dx)
    np.testing.assert_array_equal(np.isnan(dx), ~numbers)
    assert np.all(np.abs(dx - expected_dx)[numbers]
                  <= 16 * eps * (np.abs(expected_dx) + 4 * np.abs(dout))[numbers])


# ---------------------------------------------------------------------------
# Softmax cross-entropy


def _logits(dtype, n=9, k=6, scale=4.0, seed=10):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, k)) * scale).astype(dtype), rng.integers(0, k, size=n)


@backends
@dtypes
@pytest.mark.parametrize("n, k, scale", [(9, 6, 4.0), (1, 1, 1.0), (2, 300, 30.0), (64, 10, 1e3)])
def test_softmax_cross_entropy_matches_losses(backend, dtype, n, k, scale):
    logits, labels = _logits(dtype, n, k, scale)
    logits_before = logits.copy()
    with fastcnn.use_backend(backend):
        loss, dlogits = F._softmax_cross_entropy(logits, labels.astype(np.int32))
    expected_loss, expected = losses.softmax_cross_entropy(logits, labels)
    np.testing.assert_array_equal(logits, logits_before)
    assert type(loss) is float and dlogits.dtype == dtype and dlogits.shape == (n, k)
    eps = np.finfo(dtype).eps
    assert abs(loss - expected_loss) <= 8 * eps * max(abs(expected_loss), 1.0)
    np.testing.assert_allclose(dlogits, expected, rtol=0, atol=8 * eps / n)


@backends
@dtypes
def test_softmax_cross_entropy_nan_and_inf_rows_as_losses(backend, dtype):
    logits, labels = _logits(dtype, n=5, k=4)
    labels[:] = 0
    logits[0, 2] = np.nan
    logits[1, 1] = np.inf
    logits[2, :] = -np.inf
    logits[3, 0] = -np.inf  # the label's own logit: an infinite loss, finite gradient
    for rows, loss_is in (([0, 1, 2, 3, 4], "nan"), ([3, 4], "inf"), ([4], "finite")):
        # (NumPy warns of inf - inf, as losses does)
        with fastcnn.use_backend(backend), np.errstate(invalid="ignore", divide="ignore"):
            loss, dlogits = F._softmax_cross_entropy(logits[rows], labels[rows])
            expected_loss, expected = losses.softmax_cross_entropy(logits[rows], labels[rows])
        assert {"nan": np.isnan, "inf": np.isposinf, "finite": np.isfinite}[loss_is](loss)
        if loss_is == "finite":
            assert abs(loss - expected_loss) <= 8 * np.finfo(dtype).eps * abs(expected_loss)
        else:
            np.testing.assert_array_equal(loss, expected_loss)
        np.testing.assert_array_equal(np.isnan(dlogits), np.isnan(expected))
        np.testing.assert_allclose(dlogits, expected, rtol=0, atol=8 * np.finfo(dtype).eps)


@backends
@dtypes
def test_softmax_cross_entropy_matches_torch(backend, dtype):
    torch = pytest.importorskip("torch")
    logits, labels = _logits(dtype, n=33, k=7, scale=6.0)
    with fastcnn.use_backend(backend):
        loss, dlogits = F._softmax_cross_entropy(logits, labels)
    t_logits = torch.tensor(logits, requires_grad=True)
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.tensor(labels))
    t_loss.backward()
    eps = np.finfo(dtype).eps
    assert abs(loss - t_loss.item()) <= 8 * eps * max(abs(t_loss.item()), 1.0)
    np.testing.assert_allclose(dlogits, t_logits.grad.numpy(), rtol=0, atol=8 * eps / 33)


# ---------------------------------------------------------------------------
# Optimizer steps

OPTIMIZERS = [  # (id, optimizer class, its options, the functional step)
    ("sgd", optim.SGD, dict(lr=0.1), F._sgd_step),
    ("sgd-momentum", optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.01),
     F._sgd_step),
    ("sgd-nesterov-max", optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True),
     F._sgd_step),
    ("adam", optim.Adam, dict(lr=0.01), F._adam_step),
    ("adam-amsgrad-decay", optim.Adam, dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6,
                                            weight_decay=0.1, amsgrad=True), F._adam_step),
    ("adam-max", optim.Adam, dict(lr=0.01, maximize=True), F._adam_step),
    ("adagrad", optim.Adagrad, dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1,
                                    weight_decay=0.01), F._adagrad_step),
    ("rmsprop", optim.RMSprop, dict(lr=0.01), F._rmsprop_step),
    ("rmsprop-centered-momentum", optim.RMSprop, dict(lr=0.01, alpha=0.9, momentum=0.5,
                                                      centered=True, weight_decay=0.01,
                                                      maximize=True), F._rmsprop_step),
    ("adadelta", optim.Adadelta, dict(lr=1.0, rho=0.8, weight_decay=0.01), F._adadelta_step),
]


def _step_options(opt):
    """The functional step's keyword arguments for optimizer `opt`."""
    names = {
        optim.SGD: ("lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize"),
        optim.Adam: ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"),
        optim.Adagrad: ("lr", "lr_decay", "eps", "weight_decay", "maximize"),
        optim.RMSprop: ("lr", "alpha", "eps", "weight_decay", "momentum", "centered",
                        "maximize"),
        optim.Adadelta: ("lr", "rho", "eps", "weight_decay", "maximize"),
    }[type(opt)]
    return {name: getattr(opt, name) for name in names}


@backends
@dtypes
@pytest.mark.parametrize("cls, options, step", [p[1:] for p in OPTIMIZERS],
                         ids=[p[0] for p in OPTIMIZERS])
def test_optimizer_steps_equal_the_optimizers_bitwise(backend, dtype, cls, options, step):
    rng = np.random.default_rng(12)
    layer = Dense(33, 17, dtype=dtype, rng=3)
    opt = cls([layer], **options)
    kwargs = _step_options(opt)
    params = {name: p.copy() for name, p in layer.params.items()}
    # Adagrad's state exists from construction on, as in PyTorch
    states = {name: {key: (v.copy() if isinstance(v, np.ndarray) else v)
                     for key, v in opt.state[f"0.{name}"].items()} for name in params}
    for _ in range(25):
        for name, g in layer.grads.items():
            g[...] = rng.standard_normal(g.shape) * rng.choice([1e-3, 1.0, 30.0])
        grads = {name: g.copy() for name, g in layer.grads.items()}
        opt.step()
        with fastcnn.use_backend(backend):
            for name in params:
                step(params[name], grads[name], states[name], **kwargs)
        for name, p in params.items():
            assert p.tobytes() == layer.params[name].tobytes(), name
            np.testing.assert_array_equal(grads[name], layer.grads[name])  # read only
            expected = opt.state[f"0.{name}"]
            assert states[name].keys() == expected.keys()
            for key, value in expected.items():
                got = states[name][key]
                assert (got.tobytes() == value.tobytes() if isinstance(value, np.ndarray)
                        else got == value), (name, key)


# ---------------------------------------------------------------------------
# Resampling layers

UPSAMPLE_OPTIONS = [
    dict(scale_factor=2), dict(scale_factor=1.7), dict(size=(4, 11)), dict(scale_factor=(1.1, 0.5)),
    dict(scale_factor=2, mode="bilinear"), dict(scale_factor=(0.6, 1.3), mode="bilinear"),
    dict(size=(13, 9), mode="bilinear", align_corners=True),
    dict(size=(1, 7), mode="bilinear", align_corners=True),
]


@backends
@dtypes
@pytest.mark.parametrize("options", UPSAMPLE_OPTIONS, ids=str)
def test_upsample_matches_torch(backend, dtype, options):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 7)).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    t_out = torch.nn.Upsample(**options)(tx)
    dout = rng.standard_normal(tuple(t_out.shape)).astype(dtype)
    t_out.backward(torch.tensor(dout))
    layer = Upsample(**options)
    with fastcnn.use_backend(backend):
        out, dx = layer(x), layer.backward(dout)
    if options.get("mode", "nearest") == "nearest":
        np.testing.assert_array_equal(out, t_out.detach().numpy(), strict=True)
    else:
        _close(out, t_out.detach().numpy(), dtype)
    _close(dx, tx.grad.numpy(), dtype, scale=4.0)


@backends
@dtypes
@pytest.mark.parametrize("k, s, p, ceil_mode, indices", [
    (2, 2, 0, False, "pool"), (3, 2, 1, True, "pool"), (3, 1, 1, False, "pool"),
    (2, 2, 0, False, "repeated"),
])
def test_max_unpool_matches_torch(backend, dtype, k, s, p, ceil_mode, indices):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(k + s)
    x = rng.standard_normal((2, 3, 7, 9)).astype(dtype)
    pooled, idx = F.max_pool2d(x, k, s, p, ceil_mode=ceil_mode, return_indices=True)
    if indices == "repeated":
        idx = rng.integers(0, 5, idx.shape)
    tp = torch.tensor(pooled, requires_grad=True)
    t_out = torch.nn.MaxUnpool2d(k, s, p)(tp, torch.from_numpy(idx), output_size=x.shape)
    dout = rng.standard_normal(x.shape).astype(dtype)
    t_out.backward(torch.tensor(dout))
    layer = MaxUnpool2D(k, s, p)
    with fastcnn.use_backend(backend):
        out, dx = layer(pooled, idx, x.shape), layer.backward(dout)
    np.testing.assert_array_equal(out, t_out.detach().numpy(), strict=True)
    np.testing.assert_array_equal(dx, tp.grad.numpy(), strict=True)
