"""Learning-rate schedulers: trajectories over many steps against torch.optim.lr_scheduler."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastcnn import optim
from fastcnn.layers import Dense
from fastcnn.optim import SGD, Adagrad, Adam, AdamW, RMSprop, lr_scheduler
from fastcnn.optim.lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    StepLR,
)


def ours_and_theirs(opt_name, **options):
    """A fastcnn optimizer and a torch optimizer built with the same options."""
    torch = pytest.importorskip("torch")
    ours = getattr(optim, opt_name)(Dense(2, 2, rng=0), **options)
    theirs = getattr(torch.optim, opt_name)([torch.zeros(2, requires_grad=True)], **options)
    return ours, theirs, torch


def momentum_of(opt):
    """The momentum OneCycleLR cycles, read the same way from either optimizer."""
    if isinstance(opt, (SGD, RMSprop, Adam)):
        return opt.betas[0] if hasattr(opt, "betas") else opt.momentum
    group = opt.param_groups[0]
    return group["betas"][0] if "betas" in group else group["momentum"]


SCHEDULES = [
    ("SGD", dict(lr=0.1), "StepLR", dict(step_size=7, gamma=0.5), 40),
    ("SGD", dict(lr=0.1), "StepLR", dict(step_size=1), 10),
    ("SGD", dict(lr=0.3), "MultiStepLR", dict(milestones=[3, 10, 10, 25], gamma=0.3), 40),
    ("Adam", dict(lr=0.01), "ExponentialLR", dict(gamma=0.93), 60),
    ("SGD", dict(lr=0.1), "CosineAnnealingLR", dict(T_max=13), 80),
    ("AdamW", dict(lr=0.02), "CosineAnnealingLR", dict(T_max=10, eta_min=0.001), 55),
    ("SGD", dict(lr=0.1, momentum=0.9), "OneCycleLR", dict(max_lr=0.5, total_steps=50), 49),
    ("Adam", dict(lr=1e-3), "OneCycleLR", dict(max_lr=0.01, total_steps=37), 36),
    ("AdamW", dict(lr=1e-3), "OneCycleLR",
     dict(max_lr=0.02, epochs=4, steps_per_epoch=9, pct_start=0.25, anneal_strategy="linear",
          base_momentum=0.8, max_momentum=0.9, div_factor=10.0, final_div_factor=100.0,
          three_phase=True), 35),
    ("RMSprop", dict(lr=1e-3), "OneCycleLR", dict(max_lr=0.01, total_steps=20), 19),
    ("Adagrad", dict(lr=1e-3), "OneCycleLR",
     dict(max_lr=0.01, total_steps=20, cycle_momentum=False), 19),
]


@pytest.mark.parametrize("opt_name, opt_options, name, options, steps", SCHEDULES,
                         ids=[f"{s[2]}-{s[0]}-{i}" for i, s in enumerate(SCHEDULES)])
def test_trajectory_matches_torch(opt_name, opt_options, name, options, steps):
    ours, theirs, torch = ours_and_theirs(opt_name, **opt_options)
    sched = getattr(lr_scheduler, name)(ours, **options)
    t_sched = getattr(torch.optim.lr_scheduler, name)(theirs, **options)
    cycles = name == "OneCycleLR" and options.get("cycle_momentum", True)
    for step in range(steps + 1):
        # Exact: the same float operations in the same order.
        assert ours.lr == theirs.param_groups[0]["lr"], f"step {step}"
        assert sched.get_last_lr() == t_sched.get_last_lr(), f"step {step}"
        if cycles:
            assert momentum_of(ours) == momentum_of(theirs), f"step {step}"
        if step < steps:
            ours.step()
            theirs.step()
            sched.step()
            t_sched.step()


def test_two_schedulers_chain_as_torch():
    ours, theirs, torch = ours_and_theirs("SGD", lr=0.1)
    mine = [StepLR(ours, 4, 0.5), ExponentialLR(ours, 0.9)]
    t = torch.optim.lr_scheduler
    torchs = [t.StepLR(theirs, 4, 0.5), t.ExponentialLR(theirs, 0.9)]
    for _ in range(20):
        ours.step()
        theirs.step()
        for a, b in zip(mine, torchs):
            a.step()
            b.step()
        assert ours.lr == theirs.param_groups[0]["lr"]


@pytest.mark.parametrize("options", [
    dict(),
    dict(mode="max", factor=0.5, patience=2, threshold=0.1, cooldown=3, min_lr=0.004),
    dict(patience=0, threshold_mode="abs", threshold=0.05, eps=0.02),
])
def test_reduce_on_plateau_matches_torch(options):
    ours, theirs, torch = ours_and_theirs("SGD", lr=0.1)
    sched = ReduceLROnPlateau(ours, **options)
    t_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **options)
    rng = np.random.default_rng(0)
    # A noisy metric that improves, stalls, and comes back, plus a NaN.
    metrics = np.concatenate([np.linspace(1, 0.5, 10), 0.5 + 0.02 * rng.standard_normal(40),
                              [float("nan")], np.linspace(0.6, 0.1, 10)])
    for metric in metrics:
        ours.step()
        theirs.step()
        sched.step(metric)
        t_sched.step(metric)
        assert ours.lr == theirs.param_groups[0]["lr"]
        assert sched.get_last_lr() == t_sched.get_last_lr()
    assert ours.lr < 0.1


def test_cosine_values_by_hand():
    opt = SGD(Dense(2, 2, rng=0), lr=1.0)
    sched = CosineAnnealingLR(opt, T_max=4)
    seen = [opt.lr]
    for _ in range(8):
        sched.step()
        seen.append(opt.lr)
    expected = [(1 + math.cos(math.pi * t / 4)) / 2 for t in range(9)]
    np.testing.assert_allclose(seen, expected, atol=1e-15)


def test_one_cycle_refuses_to_step_past_the_end():
    opt = SGD(Dense(2, 2, rng=0), lr=0.1, momentum=0.9)
    sched = OneCycleLR(opt, max_lr=1.0, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="total_steps=3"):
        sched.step()


def test_schedulers_drive_the_optimizer_step():
    layer = Dense(2, 1, bias=False, dtype=np.float64, rng=0)
    layer.grads["weight"][...] = 1.0
    opt = SGD(layer, lr=1.0)
    sched = MultiStepLR(opt, milestones=[1])
    before = layer.params["weight"].copy()
    opt.step()
    sched.step()
    opt.step()
    np.testing.assert_allclose(layer.params["weight"], before - 1.0 - 0.1)


@pytest.mark.parametrize("make, error, match", [
    (lambda o: StepLR("opt", 3), TypeError, "optimizer must be a fastcnn.optim optimizer"),
    (lambda o: StepLR(o, 0), ValueError, "step_size must be a positive int"),
    (lambda o: StepLR(o, 2.0), TypeError, "step_size"),
    (lambda o: StepLR(o, 2, gamma=-1), ValueError, "gamma"),
    (lambda o: MultiStepLR(o, 3), TypeError, "milestones"),
    (lambda o: MultiStepLR(o, [2, -1]), ValueError, "milestones"),
    (lambda o: ExponentialLR(o, "0.9"), TypeError, "gamma"),
    (lambda o: CosineAnnealingLR(o, 0), ValueError, "T_max"),
    (lambda o: CosineAnnealingLR(o, 5, eta_min=-1), ValueError, "eta_min"),
    (lambda o: OneCycleLR(o, 0.1), ValueError, "total_steps"),
    (lambda o: OneCycleLR(o, 0.1, total_steps=0), ValueError, "total_steps"),
    (lambda o: OneCycleLR(o, 0.1, 10, pct_start=1.5), ValueError, "pct_start"),
    (lambda o: OneCycleLR(o, 0.1, 10, anneal_strategy="cosine"), ValueError, "anneal_strategy"),
    (lambda o: OneCycleLR(o, -0.1, 10), ValueError, "max_lr"),
    (lambda o: OneCycleLR(Adagrad(Dense(2, 2, rng=0)), 0.1, 10), ValueError, "cycle_momentum"),
    (lambda o: ReduceLROnPlateau(o, mode="lowest"), ValueError, "mode"),
    (lambda o: ReduceLROnPlateau(o, factor=1.0), ValueError, "factor"),
    (lambda o: ReduceLROnPlateau(o, patience=-1), ValueError, "patience"),
    (lambda o: ReduceLROnPlateau(o, threshold_mode="relative"), ValueError, "threshold_mode"),
    (lambda o: ReduceLROnPlateau(o).step("0.5"), TypeError, "metrics"),
])
def test_arguments_are_validated(make, error, match):
    with pytest.raises(error, match=match):
        make(SGD(Dense(2, 2, rng=0), lr=0.1, momentum=0.9))


def test_adamw_is_found_by_one_cycle_through_betas():
    opt = AdamW(Dense(2, 2, rng=0), lr=1e-3, betas=(0.9, 0.98))
    OneCycleLR(opt, max_lr=0.01, total_steps=10, max_momentum=0.97)
    assert opt.betas == (0.97, 0.98)
    assert opt.lr == pytest.approx(0.01 / 25)
