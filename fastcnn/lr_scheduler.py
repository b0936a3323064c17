"""Learning-rate schedules with the arithmetic of ``torch.optim.lr_scheduler``.

Also importable as :mod:`fastcnn.optim.lr_scheduler`. A scheduler sets the
``lr`` attribute of a :mod:`fastcnn.optim` optimizer: at construction (the
value for step 0) and at every :meth:`LRScheduler.step`, which is called
after ``optimizer.step()``, once per epoch or per batch as the schedule
intends. The values follow PyTorch's recursive (chainable) formulas
operation by operation, so a trajectory agrees with PyTorch's to the last
bit, including when two schedulers drive one optimizer.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter

import numpy as np

from ._validation import choice, flag, integer, positive_int, real
from .optim import Optimizer

__all__ = [
    "LRScheduler",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "OneCycleLR",
    "ReduceLROnPlateau",
]


def _optimizer(optimizer) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be a fastcnn.optim optimizer, got {type(optimizer).__name__}"
        )
    return optimizer


class LRScheduler:
    """Base class: the step counter and the update of ``optimizer.lr``.

    Subclasses implement :meth:`_next_lr` (PyTorch's ``get_lr``).

    Attributes
    ----------
    optimizer : Optimizer
    base_lrs : list of float
        The learning rate the schedule starts from (``optimizer.initial_lr``,
        which the first scheduler of an optimizer sets to its ``lr``).
    last_epoch : int
        Number of :meth:`step` calls so far.
    """

    def __init__(self, optimizer) -> None:
        self.optimizer = _optimizer(optimizer)
        # As PyTorch's setdefault: a second scheduler on one optimizer keeps
        # the first one's starting value.
        if not hasattr(self.optimizer, "initial_lr"):
            self.optimizer.initial_lr = self.optimizer.lr
        self.base_lrs = [self.optimizer.initial_lr]
        self.last_epoch = -1
        self._step_count = 0
        self._initial = True
        self.step()
        self._initial = False

    def step(self) -> None:
        """Advance the schedule by one and set ``optimizer.lr`` (after ``optimizer.step()``)."""
        self._step_count += 1
        self.last_epoch += 1
        self.optimizer.lr = self._next_lr()
        self._last_lr = [self.optimizer.lr]

    def get_last_lr(self) -> list[float]:
        """The learning rate set by the last :meth:`step`, as a one-element list (as PyTorch)."""
        return list(self._last_lr)

    def _next_lr(self) -> float:
        raise NotImplementedError


class StepLR(LRScheduler):
    """Multiply the learning rate by `gamma` every `step_size` steps, as ``torch``'s StepLR.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int
        Positive.
    gamma : float, default 0.1
        ``>= 0``.
    """

    def __init__(self, optimizer, step_size, gamma=0.1) -> None:
        self.step_size = positive_int(step_size, "step_size")
        self.gamma = real(gamma, "gamma", low=0)
        super().__init__(optimizer)

    def _next_lr(self):
        lr = self.optimizer.lr
        if self.last_epoch == 0 or self.last_epoch % self.step_size:
            return lr
        return lr * self.gamma


class MultiStepLR(LRScheduler):
    """Multiply the learning rate by `gamma` at each milestone, as ``torch``'s MultiStepLR.

    Parameters
    ----------
    optimizer : Optimizer
    milestones : iterable of int
        Step counts (non-negative); a milestone listed k times multiplies by
        ``gamma**k``.
    gamma : float, default 0.1
        ``>= 0``.
    """

    def __init__(self, optimizer, milestones, gamma=0.1) -> None:
        try:
            items = list(milestones)
        except TypeError as exc:
            raise TypeError(
                f"milestones must be an iterable of ints, got {type(milestones).__name__}"
            ) from exc
        values = [integer(m, "milestones", "an iterable of ints") for m in items]
        if any(m < 0 for m in values):
            raise ValueError(f"milestones must be non-negative ints, got {values}")
        self.milestones = Counter(values)
        self.gamma = real(gamma, "gamma", low=0)
        super().__init__(optimizer)

    def _next_lr(self):
        lr = self.optimizer.lr
        if self.last_epoch not in self.milestones:
            return lr
        return lr * self.gamma ** self.milestones[self.last_epoch]


class ExponentialLR(LRScheduler):
    """Multiply the learning rate by `gamma` at every step, as ``torch``'s ExponentialLR.

    Parameters
    ----------
    optimizer : Optimizer
    gamma : float
        ``>= 0``.
    """

    def __init__(self, optimizer, gamma) -> None:
        self.gamma = real(gamma, "gamma", low=0)
        super().__init__(optimizer)

    def _next_lr(self):
        lr = self.optimizer.lr
        return lr if self._initial else lr * self.gamma


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the initial learning rate to `eta_min` over `T_max` steps.

    As ``torch``'s CosineAnnealingLR: the recursive form, so the schedule
    also follows changes made to ``optimizer.lr`` by others, and it rises
    again after `T_max` steps (a period of ``2 * T_max``).

    Parameters
    ----------
    optimizer : Optimizer
    T_max : int
        Positive: steps of a half period.
    eta_min : float, default 0
        ``>= 0``: the smallest learning rate.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0) -> None:
        self.T_max = positive_int(T_max, "T_max")
        self.eta_min = real(eta_min, "eta_min", low=0)
        super().__init__(optimizer)

    def _next_lr(self):
        lr, t, t_max, eta_min = self.optimizer.lr, self.last_epoch, self.T_max, self.eta_min
        if self._initial:
            return lr
        if (t - 1 - t_max) % (2 * t_max) == 0:
            return lr + (self.base_lrs[0] - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        return (
            (1 + math.cos(math.pi * t / t_max))
            / (1 + math.cos(math.pi * (t - 1) / t_max))
            * (lr - eta_min)
            + eta_min
        )


class OneCycleLR(LRScheduler):
    """The 1cycle policy, as ``torch``'s OneCycleLR: warm up to `max_lr`, anneal far below.

    Call :meth:`step` after every batch; the learning rate goes from
    ``max_lr / div_factor`` up to `max_lr` over ``pct_start * total_steps``
    steps, then down to ``max_lr / div_factor / final_div_factor`` at step
    ``total_steps - 1`` (with `three_phase`, back to the start value first).
    The momentum (``momentum``, or the first of ``betas`` for Adam and
    AdamW) cycles the other way, between `max_momentum` and `base_momentum`.

    Parameters
    ----------
    optimizer : Optimizer
        With ``momentum`` or ``betas`` if `cycle_momentum`.
    max_lr : float
        Positive.
    total_steps : int, optional
        Positive; or give `epochs` and `steps_per_epoch`.
    epochs, steps_per_epoch : int, optional
    pct_start : float, default 0.3
        Fraction of the steps spent warming up, in ``[0, 1]``.
    anneal_strategy : {"cos", "linear"}, default "cos"
    cycle_momentum : bool, default True
    base_momentum, max_momentum : float, default 0.85 and 0.95
    div_factor : float, default 25
    final_div_factor : float, default 1e4
    three_phase : bool, default False

    Raises
    ------
    ValueError
        From :meth:`step` beyond `total_steps`.
    """

    def __init__(
        self,
        optimizer,
        max_lr,
        total_steps=None,
        epochs=None,
        steps_per_epoch=None,
        pct_start=0.3,
        anneal_strategy="cos",
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
        div_factor=25.0,
        final_div_factor=1e4,
        three_phase=False,
    ) -> None:
        optimizer = _optimizer(optimizer)
        if total_steps is not None:
            self.total_steps = positive_int(total_steps, "total_steps")
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = positive_int(epochs, "epochs") * positive_int(
                steps_per_epoch, "steps_per_epoch"
            )
        else:
            raise ValueError("OneCycleLR needs total_steps, or both epochs and steps_per_epoch")
        pct_start = real(pct_start, "pct_start", low=0, high=1)
        self.anneal_strategy = choice(anneal_strategy, "anneal_strategy", ("cos", "linear"))
        max_lr = real(max_lr, "max_lr", low=0, low_open=True)
        div_factor = real(div_factor, "div_factor", low=0, low_open=True)
        final_div_factor = real(final_div_factor, "final_div_factor", low=0, low_open=True)
        self.cycle_momentum = flag(cycle_momentum, "cycle_momentum")
        self.three_phase = flag(three_phase, "three_phase")
        initial_lr = max_lr / div_factor
        self._values = {
            "initial_lr": initial_lr,
            "max_lr": max_lr,
            "min_lr": initial_lr / final_div_factor,
        }
        # (last step of the phase, lr from, lr to, momentum from, momentum to)
        total = self.total_steps
        if self.three_phase:
            self._phases = [
                (float(pct_start * total) - 1, "initial_lr", "max_lr", "max_m", "base_m"),
                (float(2 * pct_start * total) - 2, "max_lr", "initial_lr", "base_m", "max_m"),
                (total - 1, "initial_lr", "min_lr", "max_m", "max_m"),
            ]
        else:
            self._phases = [
                (float(pct_start * total) - 1, "initial_lr", "max_lr", "max_m", "base_m"),
                (total - 1, "max_lr", "min_lr", "base_m", "max_m"),
            ]
        if self.cycle_momentum:
            self._use_beta1 = hasattr(optimizer, "betas")
            if not self._use_beta1 and not hasattr(optimizer, "momentum"):
                raise ValueError(
                    f"cycle_momentum=True needs an optimizer with momentum or betas, got "
                    f"{type(optimizer).__name__} (pass cycle_momentum=False)"
                )
            self._values["base_m"] = real(base_momentum, "base_momentum", low=0)
            self._values["max_m"] = real(max_momentum, "max_momentum", low=0)
            self._set_momentum(optimizer, self._values["max_m"])
        # PyTorch overwrites initial_lr here, whatever an earlier scheduler set.
        optimizer.initial_lr = initial_lr
        super().__init__(optimizer)

    def _set_momentum(self, optimizer, value: float) -> None:
        if self._use_beta1:
            optimizer.betas = (value, *optimizer.betas[1:])
        else:
            optimizer.momentum = value

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _next_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(
                f"OneCycleLR stepped {step} times, more than total_steps={self.total_steps}"
            )
        values, start_step = self._values, 0.0
        for i, (end_step, lr_from, lr_to, m_from, m_to) in enumerate(self._phases):
            if step <= end_step or i == len(self._phases) - 1:
                pct = (step - start_step) / (end_step - start_step)
                lr = self._anneal(values[lr_from], values[lr_to], pct)
                if self.cycle_momentum:
                    momentum = self._anneal(values[m_from], values[m_to], pct)
                    self._set_momentum(self.optimizer, momentum)
                return lr
            start_step = end_step
        raise AssertionError("unreachable: the last phase always matches")


class ReduceLROnPlateau:
    """Reduce the learning rate when a metric stops improving, as ``torch``'s ReduceLROnPlateau.

    Parameters
    ----------
    optimizer : Optimizer
    mode : {"min", "max"}, default "min"
        Whether the metric should decrease or increase.
    factor : float, default 0.1
        In ``[0, 1)``: ``new_lr = max(lr * factor, min_lr)``.
    patience : int, default 10
        ``>= 0``: steps without improvement tolerated before a reduction.
    threshold : float, default 1e-4
        ``>= 0``: the least change that counts as an improvement.
    threshold_mode : {"rel", "abs"}, default "rel"
        ``rel``: better than ``best * (1 -+ threshold)``; ``abs``: than
        ``best -+ threshold``.
    cooldown : int, default 0
        ``>= 0``: steps after a reduction during which bad steps are not counted.
    min_lr : float, default 0
    eps : float, default 1e-8
        A reduction smaller than this is skipped.
    """

    def __init__(
        self,
        optimizer,
        mode="min",
        factor=0.1,
        patience=10,
        threshold=1e-4,
        threshold_mode="rel",
        cooldown=0,
        min_lr=0.0,
        eps=1e-8,
    ) -> None:
        self.optimizer = _optimizer(optimizer)
        self.mode = choice(mode, "mode", ("min", "max"))
        self.factor = real(factor, "factor", low=0, high=1, high_open=True)
        self.patience = integer(patience, "patience", "a non-negative int")
        self.cooldown = integer(cooldown, "cooldown", "a non-negative int")
        for name in ("patience", "cooldown"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative int, got {getattr(self, name)}")
        self.threshold = real(threshold, "threshold", low=0)
        self.threshold_mode = choice(threshold_mode, "threshold_mode", ("rel", "abs"))
        self.min_lr = real(min_lr, "min_lr", low=0)
        self.eps = real(eps, "eps", low=0)
        self.last_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self._last_lr = [self.optimizer.lr]

    def _is_better(self, value: float) -> bool:
        best, threshold = self.best, self.threshold
        if self.mode == "min":
            return value < (best * (1.0 - threshold) if self.threshold_mode == "rel"
                            else best - threshold)
        return value > (best * (threshold + 1.0) if self.threshold_mode == "rel"
                        else best + threshold)

    def step(self, metrics) -> None:
        """Record this step's metric and reduce the learning rate if due.

        `metrics` is a real number; NaN never counts as an improvement.
        """
        if isinstance(metrics, (bool, np.bool_)) or not isinstance(metrics, numbers.Real):
            raise TypeError(f"metrics must be a real number, got {type(metrics).__name__}")
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old_lr = float(self.optimizer.lr)
            new_lr = max(old_lr * self.factor, self.min_lr)
            if old_lr - new_lr > self.eps:
                self.optimizer.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [self.optimizer.lr]

    def get_last_lr(self) -> list[float]:
        """The learning rate after the last :meth:`step`, as a one-element list (as PyTorch)."""
        return list(self._last_lr)
