"""Compare a layer's analytic backward with central finite differences.

The check reduces the output to a scalar with a random linear functional
``L(y) = sum(w * y)``, so that one backward call with ``dout = w`` gives the
analytic gradient of L with respect to the input and every parameter, and
``(L(v + eps) - L(v - eps)) / (2 eps)`` gives the numerical one, element by
element.

Layers that draw random numbers in ``forward`` (:class:`fastcnn.layers.Dropout`)
keep their generator as ``layer.rng``; its state is recorded before the
first forward and restored before every evaluation, so each evaluation draws
the same mask and the check is deterministic. BatchNorm's running statistics
and every parameter are restored afterwards: the check leaves the layer as
it found it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._validation import as_float_array
from .layers.base import _named_arrays, _named_modules

__all__ = ["GradcheckReport", "GradcheckError", "gradcheck", "numerical_gradient"]


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` with ``raise_on_failure=True`` when a gradient is wrong."""


@dataclass
class GradcheckReport:
    """Result of :func:`gradcheck`.

    Attributes
    ----------
    max_abs_error : dict of str to float
        ``max |analytic - numerical|`` for ``"x"`` and every parameter (keys as
        in ``layer.params``; ``"0.weight"`` etc. for a Sequential).
    max_rel_error : dict of str to float
        The same divided by ``max |numerical|`` (by 1 when that is 0): a
        norm-wise relative error that does not blow up at tiny entries. It is
        meaningless when the true gradient is zero (a bias followed by
        BatchNorm), which is why `passed` also allows `atol`.
    passed : bool
        Whether every entry satisfies ``|a - n| <= atol + rtol * |n|``.
    failures : list of str
        Names of the arrays that failed.
    """

    max_abs_error: dict[str, float] = field(default_factory=dict)
    max_rel_error: dict[str, float] = field(default_factory=dict)
    passed: bool = True
    failures: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"gradcheck {'passed' if self.passed else 'FAILED: ' + ', '.join(self.failures)}"]
        for name, abs_err in self.max_abs_error.items():
            rel_err = self.max_rel_error[name]
            lines.append(f"  {name}: max abs error {abs_err:.3g}, max rel error {rel_err:.3g}")
        return "\n".join(lines)


def gradcheck(
    layer,
    x,
    *,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    training: bool = True,
    rng=None,
    raise_on_failure: bool = False,
) -> GradcheckReport:
    """Check ``layer.backward`` against central differences, in float64.

    Parameters
    ----------
    layer : Layer or Sequential
        With float64 parameters: built with ``dtype=np.float64``, or a copy
        made by ``copy.deepcopy(layer).astype(np.float64)``.
    x : array_like, float64
        Input; never modified. Keep it small: every element of `x` and of
        every parameter costs two forward calls.
    eps : float
        Finite-difference step.
    rtol, atol : float
        Tolerances of the elementwise test ``|a - n| <= atol + rtol * |n|``.
    training : bool
        Mode passed to every ``forward``.
    rng : numpy.random.Generator, int or None
        Source of the random functional ``w``.
    raise_on_failure : bool
        Raise :class:`GradcheckError` (with the report) instead of returning a
        failed report.

    Returns
    -------
    GradcheckReport

    Notes
    -----
    Avoid inputs at kinks (ReLU at 0, ties in max pooling): there the
    one-sided derivatives differ and no backward can match both.
    """
    x = as_float_array(x, "x")
    if x.dtype != np.float64:
        raise TypeError(
            f"gradcheck needs float64 input for accurate differences, got {x.dtype}; "
            "pass x.astype(np.float64)"
        )
    params = dict(_named_arrays(layer, "params"))
    for name, value in params.items():
        if value.dtype != np.float64:
            raise TypeError(
                f"gradcheck needs float64 parameters, got {name} of dtype {value.dtype}; "
                "check a float64 copy: gradcheck(copy.deepcopy(layer).astype(np.float64), x) "
                "(the layer itself is left as it is)"
            )
    rng = np.random.default_rng(rng)
    layers = [lay for _, lay in _named_modules(layer)]
    generators = [
        lay.rng for lay in layers if isinstance(getattr(lay, "rng", None), np.random.Generator)
    ]
    rng_states = [gen.bit_generator.state for gen in generators]
    saved_state = [(arr, arr.copy()) for lay in layers for arr in lay.state.values()]

    def evaluate(inp: np.ndarray) -> np.ndarray:
        for gen, state in zip(generators, rng_states):
            gen.bit_generator.state = state
        return layer.forward(inp, training=training)

    try:
        out = evaluate(x)
        w = rng.standard_normal(out.shape)
        analytic = {"x": layer.backward(w)}
        analytic.update((name, grad.copy()) for name, grad in _named_arrays(layer, "grads"))
        x_work = x.copy()
        numerical = {"x": numerical_gradient(lambda: np.sum(w * evaluate(x_work)), x_work, eps)}
        for name, value in params.items():
            numerical[name] = numerical_gradient(lambda: np.sum(w * evaluate(x)), value, eps)
    finally:
        for arr, saved in saved_state:
            arr[...] = saved
        for gen, state in zip(generators, rng_states):
            gen.bit_generator.state = state

    report = GradcheckReport()
    for name, num in numerical.items():
        diff = np.abs(analytic[name] - num)
        report.max_abs_error[name] = float(diff.max(initial=0.0))
        scale = float(np.abs(num).max(initial=0.0)) or 1.0
        report.max_rel_error[name] = report.max_abs_error[name] / scale
        if not np.all(diff <= atol + rtol * np.abs(num)):
            report.failures.append(name)
    report.passed = not report.failures
    if raise_on_failure and not report.passed:
        raise GradcheckError(str(report))
    return report


def numerical_gradient(loss, values: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of a scalar function with respect to an array.

    Parameters
    ----------
    loss : callable
        ``loss() -> float``, reading `values` (e.g. through a closure).
    values : ndarray, writeable
        Perturbed in place one entry at a time; every entry is restored.
    eps : float
        Step.

    Returns
    -------
    grad : ndarray, shape and dtype of `values`
        ``(loss(v + eps e_i) - loss(v - eps e_i)) / (2 eps)`` for every entry i.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.array([1.0, 2.0])
    >>> numerical_gradient(lambda: float(np.sum(v ** 2)), v).round(6)
    array([2., 4.])
    """
    grad = np.empty_like(values)
    for idx in np.ndindex(values.shape):
        original = values[idx]
        values[idx] = original + eps
        plus = loss()
        values[idx] = original - eps
        minus = loss()
        values[idx] = original
        grad[idx] = (plus - minus) / (2 * eps)
    return grad
