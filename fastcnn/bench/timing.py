"""How ``fastcnn bench`` times: warm-up, calibration, interleaved repeats, medians
(the method is described in :mod:`fastcnn.bench`)."""

from __future__ import annotations

import contextlib
import gc
import math
import time
from typing import NamedTuple

import numpy as np

try:
    import resource
except ImportError:  # Windows
    resource = None

from .._backend import use_num_threads

__all__ = ["FULL", "QUICK", "using_threads"]


class _Config(NamedTuple):
    repeats: int
    min_repeats: int
    budget: float  # seconds of timed calls per implementation and benchmark
    min_sample: float  # seconds a sample lasts at least (several calls if needed)


FULL = _Config(repeats=7, min_repeats=3, budget=2.0, min_sample=0.02)
QUICK = _Config(repeats=3, min_repeats=1, budget=0.25, min_sample=0.005)


def _as_arrays(result) -> list[np.ndarray]:
    """Flatten a result (array, tensor, scalar or tuple of them) to NumPy arrays."""
    if isinstance(result, (tuple, list)):
        return [a for item in result for a in _as_arrays(item)]
    if hasattr(result, "detach"):  # a torch tensor
        return [result.detach().numpy()]
    return [np.asarray(result)]


def _max_rel_diff(ref, other) -> float:
    """Largest ``|a - b|`` over the largest ``|a|``, across the arrays of a result.

    Integer arrays (max-pool indices) must be equal. NaN anywhere in a
    difference counts as a disagreement (the inputs are finite).
    """
    ref, other = _as_arrays(ref), _as_arrays(other)
    if len(ref) != len(other):
        return math.inf
    worst = 0.0
    for a, b in zip(ref, other):
        if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
            return math.inf
        if a.size == 0:
            continue
        if a.dtype.kind in "iu":
            if not np.array_equal(a, b):
                return math.inf
            continue
        diff, scale = _max_abs_diff_and_scale(a.reshape(-1), b.reshape(-1))
        worst = max(worst, diff / max(scale, np.finfo(np.float64).tiny) if diff == diff else math.inf)
    return worst


def _max_abs_diff_and_scale(a, b, chunk=1 << 16) -> tuple[float, float]:
    """``max|a - b|`` and ``max|a|`` of 1-D arrays, in cache-sized pieces (no big temporaries)."""
    diff = scale = 0.0
    for start in range(0, a.size, chunk):
        pa, pb = a[start : start + chunk], b[start : start + chunk]
        d = pa - pb
        high, low = float(d.max()), float(d.min())
        if math.isnan(high):
            return math.nan, scale
        diff = max(diff, high, -low)
        scale = max(scale, float(pa.max()), -float(pa.min()))
    return diff, scale


def _tolerance(op: str, dtype) -> float:
    if op == "train_step":
        return 1e-3  # the loss of the first step
    return 1e-3 if np.dtype(dtype) == np.float32 else 1e-9


def _time_calls(call, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def _measure(fns: dict, config: _Config) -> tuple[dict, dict, dict, dict]:
    """Warm up, calibrate and time every callable, interleaved.

    Returns ``(samples, results, number, preempted)``: per implementation,
    the list of seconds per call, the result of its first (warm-up) call,
    the number of calls per sample and the involuntary context switches
    of the process during its samples.
    """
    names = list(fns)
    results, number, repeats = {}, {}, {}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for name in names:
            start = time.perf_counter()
            results[name] = fns[name]()
            t = time.perf_counter() - start
            if t < config.min_sample:  # the first call paid for page faults
                t = _time_calls(fns[name], 1)
            number[name] = max(1, math.ceil(config.min_sample / max(t, 1e-9)))
            fitting = int(config.budget / max(t * number[name], 1e-9))
            repeats[name] = max(config.min_repeats, min(config.repeats, fitting))
        samples = {name: [] for name in names}
        preempted = dict.fromkeys(names, 0)
        for r in range(max(repeats.values(), default=0)):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                if r < repeats[name]:
                    before = _involuntary_switches()
                    samples[name].append(_time_calls(fns[name], number[name]))
                    preempted[name] += _involuntary_switches() - before
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples, results, number, preempted


def _involuntary_switches() -> int:
    """How often this process's threads were preempted so far (a noise indicator)."""
    if resource is None:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def _summary(samples: list[float]) -> dict:
    s = np.asarray(samples)
    q1, median, q3 = np.percentile(s, [25, 50, 75])
    return {
        "median_s": float(median),
        "min_s": float(s.min()),
        "q1_s": float(q1),
        "q3_s": float(q3),
        "repeats": len(samples),
        "samples_s": [float(v) for v in samples],
    }


@contextlib.contextmanager
def using_threads(n: int, torch):
    """Run the block with `n` threads in fastcnn, PyTorch and NumPy's BLAS."""
    from threadpoolctl import threadpool_limits

    with use_num_threads(n):
        torch_saved = torch.get_num_threads() if torch is not None else None
        if torch is not None:
            torch.set_num_threads(n)
        try:
            with threadpool_limits(limits=n, user_api="blas"):
                yield
        finally:
            if torch is not None:
                torch.set_num_threads(torch_saved)
