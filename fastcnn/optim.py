"""Optimizers with the update rules, defaults and checks of ``torch.optim``.

Each optimizer walks the parameters of a :class:`fastcnn.Sequential`, a
layer or a list of layers, nested layers included, reads the gradients the
last ``backward`` wrote into ``layer.grads`` and updates ``layer.params`` in
place. Per-parameter state (``optimizer.state["0.weight"]``, keyed by the
dotted names of :meth:`fastcnn.layers.Layer.named_parameters`) uses
PyTorch's names (``momentum_buffer``, ``exp_avg``, ...). Every step follows
the single-tensor (``foreach=False``) code path of the installed PyTorch
line by line, so results agree with it to rounding; each parameter's update
is one kernel call (:mod:`fastcnn.functional`'s ``_*_step``), weight decay
and ``maximize`` included. :func:`clip_grad_norm_`
and :func:`clip_grad_value_` rescale or clamp the gradients before a step,
as ``torch.nn.utils`` does. Learning-rate schedules are in
:mod:`fastcnn.optim.lr_scheduler`.
"""

from __future__ import annotations

import sys

import numpy as np

from . import functional as F
from ._docstrings import fill_doc
from ._validation import flag, real
from .layers.base import _dotted, _named_arrays, _named_modules

__all__ = [
    "Optimizer",
    "SGD",
    "Adagrad",
    "Adadelta",
    "RMSprop",
    "Adam",
    "AdamW",
    "clip_grad_norm_",
    "clip_grad_value_",
]


def _parameters(lr: str) -> str:
    """The head of an optimizer's Parameters section: `model`, and `lr` defaulting to `lr`."""
    return f"""
    Parameters
    ----------
    model : Sequential, Layer or list of layers
    lr : float, default {lr}
    """


class Optimizer:
    """Base class: collects the parameters and applies the common gradient terms.

    Parameters
    ----------
    model : Sequential, Layer or list of layers
    lr : float
        Learning rate, ``>= 0``; may be changed between steps (``opt.lr = ...``).
    weight_decay : float
        L2 penalty added to the gradient (``grad + weight_decay * param``).
    maximize : bool
        Ascend instead of descend (the gradient is negated first).

    Attributes
    ----------
    state : dict of str to dict
        Per-parameter state keyed like ``"0.weight"``, filled by :meth:`step`.

    Notes
    -----
    The optimizer holds the parameter and gradient arrays that exist when it
    is created. If they are replaced (by ``model.astype`` or an assignment),
    :meth:`step` and :meth:`zero_grad` raise ValueError: create the
    optimizer after ``astype``.
    """

    def __init__(self, model, lr, weight_decay=0, maximize=False) -> None:
        self.lr = real(lr, "lr", low=0)
        self.weight_decay = real(weight_decay, "weight_decay", low=0)
        self.maximize = flag(maximize, "maximize")
        self._layers = [
            (_dotted(prefix, name), layer, name)
            for prefix, layer in _named_modules(model)
            for name in layer.params
        ]
        self._params = [
            (key, layer.params[name], layer.grads[name]) for key, layer, name in self._layers
        ]
        if not self._params:
            raise ValueError("model has no parameters to optimize")
        self.state: dict[str, dict] = {key: {} for key, _, _ in self._params}

    def _check_arrays(self) -> None:
        """Refuse to work on arrays the model no longer uses (state is kept per array)."""
        for (key, layer, name), (_, param, grad) in zip(self._layers, self._params):
            if layer.params.get(name) is not param or layer.grads.get(name) is not grad:
                raise ValueError(
                    f"parameter {key!r} is no longer the array this optimizer was created "
                    "with (model.astype() or an assignment replaced it): create the optimizer "
                    "after astype()"
                )

    def zero_grad(self) -> None:
        """Set every gradient to zero (in place)."""
        self._check_arrays()
        for _, _, grad in self._params:
            grad.fill(0)

    def step(self) -> None:
        """Update every parameter in place from its current gradient."""
        self._check_arrays()
        for key, param, grad in self._params:
            self._update(param, grad, self.state[key])

    # Each optimizer's update rule: a functional step (see fastcnn.functional),
    # called with the attributes named in _options and the common ones.
    _step = None
    _options: tuple = ()

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict,
                weight_decay: float | None = None) -> None:
        """Apply one step to `param` in place from its raw gradient (weight
        decay and ``maximize`` included); `grad` must not be modified.
        `weight_decay`, if given, replaces the optimizer's own."""
        if weight_decay is None:
            weight_decay = self.weight_decay
        self._step(param, grad, state, **{name: getattr(self, name) for name in self._options},
                   lr=self.lr, weight_decay=weight_decay, maximize=self.maximize)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    Parameters
    ----------
    model : Sequential, Layer or list of layers
    lr : float
        Learning rate, ``>= 0``.
    momentum : float, default 0
    dampening : float, default 0
        The new gradient enters the momentum buffer with weight ``1 - dampening``
        (from the second step on; the first step copies the gradient).
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    weight_decay : float, default 0
    maximize : bool, default False
    """

    _step = staticmethod(F._sgd_step)
    _options = ("momentum", "dampening", "nesterov")

    def __init__(
        self, model, lr, momentum=0, dampening=0, nesterov=False, weight_decay=0, maximize=False
    ) -> None:
        super().__init__(model, lr, weight_decay, maximize)
        self.momentum = real(momentum, "momentum", low=0)
        self.dampening = real(dampening, "dampening")
        self.nesterov = flag(nesterov, "nesterov")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                "nesterov=True requires momentum > 0 and dampening = 0, got "
                f"momentum={self.momentum} and dampening={self.dampening}"
            )


@fill_doc(parameters=_parameters("1e-2"))
class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``.

    {parameters}
    lr_decay : float, default 0
        Step k uses ``lr / (1 + (k - 1) * lr_decay)``.
    weight_decay : float, default 0
    initial_accumulator_value : float, default 0
        Starting value of the sum of squared gradients.
    eps : float, default 1e-10
        Added to the square root of the sum.
    maximize : bool, default False
    """

    _step = staticmethod(F._adagrad_step)
    _options = ("lr_decay", "eps")

    def __init__(
        self,
        model,
        lr=1e-2,
        lr_decay=0,
        weight_decay=0,
        initial_accumulator_value=0,
        eps=1e-10,
        maximize=False,
    ) -> None:
        super().__init__(model, lr, weight_decay, maximize)
        self.lr_decay = real(lr_decay, "lr_decay", low=0)
        self.initial_accumulator_value = real(
            initial_accumulator_value, "initial_accumulator_value", low=0
        )
        self.eps = real(eps, "eps", low=0)
        # PyTorch creates the accumulator at construction, not at the first step.
        for key, param, _ in self._params:
            self.state[key].update(step=0, sum=np.full_like(param, self.initial_accumulator_value))


@fill_doc(parameters=_parameters("1.0"))
class Adadelta(Optimizer):
    """Adadelta, as ``torch.optim.Adadelta``.

    {parameters}
        Scales the delta before it is applied.
    rho : float, default 0.9
        Decay of both running averages, in ``[0, 1]``.
    eps : float, default 1e-6
    weight_decay : float, default 0
    maximize : bool, default False
    """

    _step = staticmethod(F._adadelta_step)
    _options = ("rho", "eps")

    def __init__(self, model, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, maximize=False) -> None:
        super().__init__(model, lr, weight_decay, maximize)
        self.rho = real(rho, "rho", low=0, high=1)
        self.eps = real(eps, "eps", low=0)


@fill_doc(parameters=_parameters("1e-2"))
class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``.

    {parameters}
    alpha : float, default 0.99
        Decay of the running average of squared gradients.
    eps : float, default 1e-8
        Added to the square root (outside it, as PyTorch).
    weight_decay : float, default 0
    momentum : float, default 0
    centered : bool, default False
        Normalise by an estimate of the gradient's variance instead of its
        second moment.
    maximize : bool, default False
    """

    _step = staticmethod(F._rmsprop_step)
    _options = ("alpha", "eps", "momentum", "centered")

    def __init__(
        self,
        model,
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0,
        momentum=0,
        centered=False,
        maximize=False,
    ) -> None:
        super().__init__(model, lr, weight_decay, maximize)
        self.alpha = real(alpha, "alpha", low=0)
        self.eps = real(eps, "eps", low=0)
        self.momentum = real(momentum, "momentum", low=0)
        self.centered = flag(centered, "centered")


@fill_doc(parameters=_parameters("1e-3"))
class Adam(Optimizer):
    """Adam (and AMSGrad), as ``torch.optim.Adam``.

    {parameters}
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment estimates, each in ``[0, 1)``.
    eps : float, default 1e-8
        Added to the bias-corrected square root of the second moment.
    weight_decay : float, default 0
        L2 penalty added to the gradient (not decoupled: that is AdamW).
    amsgrad : bool, default False
        Normalise by the maximum of all second moment estimates so far.
    maximize : bool, default False
    """

    _step = staticmethod(F._adam_step)
    _options = ("betas", "eps", "amsgrad")

    def __init__(
        self,
        model,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        amsgrad=False,
        maximize=False,
    ) -> None:
        super().__init__(model, lr, weight_decay, maximize)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        self.betas = (
            real(betas[0], "betas[0]", low=0, high=1, high_open=True),
            real(betas[1], "betas[1]", low=0, high=1, high_open=True),
        )
        self.eps = real(eps, "eps", low=0)
        self.amsgrad = flag(amsgrad, "amsgrad")


@fill_doc(parameters=_parameters("1e-3"))
class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    Each step first shrinks the parameter, ``param *= 1 - lr * weight_decay``,
    then applies the Adam update of the (undecayed) gradient.

    {parameters}
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 1e-2
        Decoupled: never added to the gradient.
    amsgrad : bool, default False
    maximize : bool, default False
    """

    def __init__(
        self,
        model,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        amsgrad=False,
        maximize=False,
    ) -> None:
        super().__init__(model, lr, betas, eps, weight_decay, amsgrad, maximize)

    def _update(self, param, grad, state):
        if self.weight_decay != 0:
            param *= 1 - self.lr * self.weight_decay
        super()._update(param, grad, state, weight_decay=0.0)


def clip_grad_norm_(model, max_norm, norm_type=2.0) -> float:
    """Scale all gradients so that their joint norm is at most `max_norm`, as ``torch.nn.utils``.

    Parameters
    ----------
    model : Sequential, Layer or list of layers
        Every gradient of every nested layer takes part.
    max_norm : float
        ``>= 0``.
    norm_type : float, default 2.0
        ``p > 0`` of the p-norm, or ``inf`` (the largest absolute value).

    Returns
    -------
    float
        The joint norm of the gradients before clipping: the p-norm of the
        per-array p-norms. Gradients are multiplied in place by
        ``min(1, max_norm / (norm + 1e-6))``, in their dtype, as PyTorch does.
    """
    max_norm = real(max_norm, "max_norm", low=0)
    norm_type = real(norm_type, "norm_type", low=0, low_open=True)
    grads = [grad for _, grad in _named_arrays(model, "grads")]
    if not grads:
        return 0.0
    norms = np.array([np.linalg.norm(g.ravel(), norm_type) for g in grads])
    total = np.linalg.norm(norms, norm_type)
    coef = np.minimum(max_norm / (total + 1e-6), 1.0).astype(norms.dtype)
    for grad in grads:
        grad *= coef
    return float(total)


def clip_grad_value_(model, clip_value) -> None:
    """Clamp every gradient into ``[-clip_value, clip_value]`` in place, as ``torch.nn.utils``.

    Parameters
    ----------
    model : Sequential, Layer or list of layers
    clip_value : float
        ``>= 0``.
    """
    clip_value = real(clip_value, "clip_value", low=0)
    for _, grad in _named_arrays(model, "grads"):
        np.clip(grad, -clip_value, clip_value, out=grad)


# Imported last: the schedulers need Optimizer. Registered as a submodule too, as
# os.path is, so that ``from fastcnn.optim.lr_scheduler import StepLR`` works.
from . import lr_scheduler  # noqa: E402

sys.modules[f"{__name__}.lr_scheduler"] = lr_scheduler
