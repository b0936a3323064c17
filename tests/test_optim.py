"""Optimizers: hand-computed steps, several steps of every option against torch.optim, checks."""

from __future__ import annotations

import numpy as np
import pytest

from fastcnn.layers import BatchNorm1D, Dense, ReLU
from fastcnn.model import Sequential
from fastcnn.optim import SGD, Adadelta, Adagrad, Adam, AdamW, RMSprop


def one_param_layer(values, grad):
    """A bias-free 1x2 Dense whose weight is `values` and gradient `grad`."""
    layer = Dense(2, 1, bias=False, dtype=np.float64, rng=0)
    layer.params["weight"][...] = values
    layer.grads["weight"][...] = grad
    return layer


P, G = np.array([[1.0, 2.0]]), np.array([[0.5, -1.0]])


@pytest.mark.parametrize("make, steps, expected", [
    (lambda m: SGD(m, lr=0.1), 1, P - 0.1 * G),
    (lambda m: SGD(m, lr=0.1, weight_decay=0.2), 1, P - 0.1 * (G + 0.2 * P)),
    (lambda m: SGD(m, lr=0.1, maximize=True), 1, P + 0.1 * G),
    # Momentum: the buffer starts as the gradient, then buf = 0.9 buf + g.
    (lambda m: SGD(m, lr=0.1, momentum=0.9), 2, P - 0.1 * G - 0.1 * 1.9 * G),
    (lambda m: SGD(m, lr=0.1, momentum=0.9, dampening=0.5), 2, P - 0.1 * G - 0.1 * 1.4 * G),
    # Nesterov: the step uses g + 0.9 buf.
    (lambda m: SGD(m, lr=0.1, momentum=0.9, nesterov=True), 2, P - 0.1 * 1.9 * G - 0.1 * 2.71 * G),
    # First step of the adaptive methods, with bias correction where they have it.
    (lambda m: Adam(m, lr=0.1), 1, P - 0.1 * G / (np.abs(G) + 1e-8)),
    # AdamW shrinks the parameter first; the decay never enters the moments.
    (lambda m: AdamW(m, lr=0.1, weight_decay=0.5), 1,
     P * (1 - 0.05) - 0.1 * G / (np.abs(G) + 1e-8)),
    (lambda m: Adagrad(m, lr=0.1), 1, P - 0.1 * G / (np.abs(G) + 1e-10)),
    (lambda m: Adagrad(m, lr=0.1, lr_decay=0.5), 2,
     P - 0.1 * G / (np.abs(G) + 1e-10) - 0.1 / 1.5 * G / (np.sqrt(2) * np.abs(G) + 1e-10)),
    (lambda m: RMSprop(m, lr=0.1), 1, P - 0.1 * G / (0.1 * np.abs(G) + 1e-8)),
    (lambda m: Adadelta(m), 1, P - np.sqrt(1e-6) / np.sqrt(0.1 * G**2 + 1e-6) * G),
], ids=["sgd", "sgd-wd", "sgd-max", "momentum", "dampening", "nesterov", "adam", "adamw",
        "adagrad",
        "adagrad-decay", "rmsprop", "adadelta"])
def test_steps_by_hand(make, steps, expected):
    layer = one_param_layer(P, G)
    opt = make(layer)
    for _ in range(steps):
        opt.step()
    np.testing.assert_allclose(layer.params["weight"], expected, rtol=1e-12, atol=1e-12)


CONFIGS = [
    (SGD, "SGD", dict(lr=0.1)),
    (SGD, "SGD", dict(lr=0.1, momentum=0.9)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    (SGD, "SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    (SGD, "SGD", dict(lr=0.1, momentum=0.5, maximize=True)),
    (Adagrad, "Adagrad", dict()),
    (Adagrad, "Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1,
                              initial_accumulator_value=0.5, eps=1e-8)),
    (Adagrad, "Adagrad", dict(maximize=True)),
    (Adadelta, "Adadelta", dict()),
    (Adadelta, "Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1, maximize=True)),
    (RMSprop, "RMSprop", dict()),
    (RMSprop, "RMSprop", dict(lr=0.01, momentum=0.9)),
    (RMSprop, "RMSprop", dict(centered=True)),
    (RMSprop, "RMSprop", dict(lr=0.02, alpha=0.9, eps=1e-6, weight_decay=0.1, momentum=0.5,
                              centered=True, maximize=True)),
    (Adam, "Adam", dict()),
    (Adam, "Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    (Adam, "Adam", dict(lr=0.01, amsgrad=True)),
    (Adam, "Adam", dict(lr=0.01, amsgrad=True, maximize=True, weight_decay=0.01)),
    (AdamW, "AdamW", dict()),
    (AdamW, "AdamW", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3)),
    (AdamW, "AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "ours, theirs, options", CONFIGS,
    ids=[f"{name}-{'-'.join(f'{k}={v}' for k, v in opts.items()) or 'defaults'}"
         for _, name, opts in CONFIGS],
)
def test_several_steps_match_torch(ours, theirs, options, dtype):
    torch = pytest.importorskip("torch")
    model = Sequential([Dense(4, 3, dtype=dtype, rng=0), BatchNorm1D(3, dtype=dtype), ReLU()])
    params = [layer.params[k] for layer in model.layers for k in layer.params]
    grads = [layer.grads[k] for layer in model.layers for k in layer.grads]
    t_params = [torch.tensor(p, requires_grad=True) for p in params]
    opt = ours(model, **options)
    t_opt = getattr(torch.optim, theirs)(t_params, foreach=False, **options)
    rng = np.random.default_rng(0)
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for step in range(6):
        # Shrinking, sign-changing gradients exercise momentum and AMSGrad's maximum.
        for grad, t_param in zip(grads, t_params):
            grad[...] = rng.standard_normal(grad.shape) / (step + 1)
            t_param.grad = torch.from_numpy(grad.copy())
        opt.step()
        t_opt.step()
        for p, t_p in zip(params, t_params):
            assert p.dtype == dtype
            np.testing.assert_allclose(p, t_p.detach().numpy(), **tol, err_msg=f"step {step}")


def test_step_updates_in_place_without_touching_gradients():
    model = Sequential([Dense(3, 2, rng=0), BatchNorm1D(2)])
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    model.backward(np.ones_like(model(x)))
    params = {k: v for layer in model.layers for k, v in layer.params.items()}
    ids = {k: id(v) for k, v in params.items()}
    grads = [g for layer in model.layers for g in layer.grads.values()]
    grads_before = [g.copy() for g in grads]
    opt = Adam(model, lr=0.1, weight_decay=0.5, maximize=True)
    opt.step()
    assert {k: id(v) for layer in model.layers for k, v in layer.params.items()} == ids
    for grad, before in zip(grads, grads_before):
        np.testing.assert_array_equal(grad, before)
    assert set(opt.state) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert opt.state["0.weight"]["step"] == 1
    assert opt.state["0.weight"]["exp_avg"].dtype == np.float32
    opt.zero_grad()
    assert all(not g.any() for layer in model.layers for g in layer.grads.values())


def test_model_can_be_a_layer_a_list_or_a_sequential():
    a, b = Dense(2, 2, rng=0), Dense(2, 2, rng=1)
    assert set(SGD([a, ReLU(), b], lr=1).state) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert set(SGD(a, lr=1).state) == {"weight", "bias"}
    assert set(SGD(Sequential([a]), lr=1).state) == {"0.weight", "0.bias"}
    with pytest.raises(ValueError, match="no parameters"):
        SGD(Sequential([ReLU()]), lr=1)
    with pytest.raises(TypeError, match="model must be"):
        SGD({"weight": np.zeros(2)}, lr=1)


def test_learning_rate_can_change_between_steps():
    layer = one_param_layer(P, G)
    opt = SGD(layer, lr=0.1)
    opt.lr = 1.0
    opt.step()
    np.testing.assert_allclose(layer.params["weight"], P - G)


@pytest.mark.parametrize("make, error, match", [
    (lambda m: SGD(m, lr=-0.1), ValueError, r"lr must be in \[0, inf\)"),
    (lambda m: SGD(m, lr="0.1"), TypeError, "lr must be a real number"),
    (lambda m: SGD(m, lr=0.1, momentum=-1), ValueError, "momentum"),
    (lambda m: SGD(m, lr=0.1, weight_decay=-1), ValueError, "weight_decay"),
    (lambda m: SGD(m, lr=0.1, nesterov=True), ValueError, "nesterov"),
    (lambda m: SGD(m, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "dampening"),
    (lambda m: SGD(m, lr=0.1, nesterov=1), TypeError, "nesterov"),
    (lambda m: Adagrad(m, lr_decay=-1), ValueError, "lr_decay"),
    (lambda m: Adagrad(m, initial_accumulator_value=-1), ValueError, "initial_accumulator_value"),
    (lambda m: Adagrad(m, eps=-1), ValueError, "eps"),
    (lambda m: Adadelta(m, rho=1.5), ValueError, r"rho must be in \[0, 1\]"),
    (lambda m: RMSprop(m, alpha=-0.1), ValueError, "alpha"),
    (lambda m: RMSprop(m, centered="yes"), TypeError, "centered"),
    (lambda m: Adam(m, betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be in \[0, 1\)"),
    (lambda m: Adam(m, betas=(0.9, -0.1)), ValueError, r"betas\[1\]"),
    (lambda m: Adam(m, betas=0.9), TypeError, "pair"),
    (lambda m: Adam(m, lr=float("nan")), ValueError, "lr"),
    (lambda m: Adam(m, amsgrad=None), TypeError, "amsgrad"),
    (lambda m: AdamW(m, weight_decay=-0.1), ValueError, "weight_decay"),
    (lambda m: AdamW(m, betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
])
def test_hyperparameters_are_validated(make, error, match):
    with pytest.raises(error, match=match):
        make(Dense(2, 2, rng=0))
