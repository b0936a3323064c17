""":func:`bench`: run the cases through the timer and print the table as it goes."""

from __future__ import annotations

import itertools
import sys
import time

import numpy as np

from .._backend import compiled_available, default_num_threads
from .cases import (
    BUILDERS,
    IMPLEMENTATIONS,
    LARGE_SHAPE,
    OPS,
    SHAPES,
    _applies,
    _random,
    import_torch,
    levels,
)
from .report import _COLUMNS, _format_disagreements, _group_title, _line, _table_row
from .timing import FULL, QUICK, _max_rel_diff, _measure, _summary, _tolerance, using_threads

__all__ = ["bench", "default_threads"]


def default_threads() -> list[int]:
    """1 and every core the compiled kernels would use by default."""
    return sorted({1, default_num_threads()})


def bench(
    ops=None,
    shapes=None,
    dtypes=("float32", "float64"),
    threads=None,
    impls=IMPLEMENTATIONS,
    quick=False,
    repeats=None,
    budget=None,
    min_sample=None,
    verbose=True,
    file=None,
) -> list[dict]:
    """Time the kernels, ops and training step; print the table; return the records.

    Parameters
    ----------
    ops : sequence of str, optional
        Names from :data:`OPS` (default: all).
    shapes : sequence of str or Shape, optional
        Names from :data:`SHAPES` or :class:`Shape` objects (default: all of
        :data:`SHAPES`).
    dtypes : sequence of str
        ``"float32"`` and/or ``"float64"``.
    threads : sequence of int, optional
        Thread counts (default: 1 and all cores).
    impls : sequence of str
        Among ``"cython"``, ``"numpy"``, ``"torch"``; unavailable ones are skipped.
    quick : bool
        Fewer and shorter repeats, and no NumPy twin on the large shape.
    repeats, budget, min_sample : optional
        Override the maximum repeats, the seconds of timing per
        implementation and benchmark, and the minimum seconds per sample.
    verbose : bool
        Print the table as it is measured.
    file : file object, optional
        Where to print (default: ``sys.stdout``).

    Returns
    -------
    list of dict
        One record per (threads, dtype, shape, op, level, impl): the
        ``median_s``, ``min_s``, ``q1_s``, ``q3_s`` and ``samples_s`` per
        call, ``number`` of calls per sample, ``nbytes``/``gbps``,
        ``flops``/``gflops`` where they apply, and ``agrees`` /
        ``max_rel_diff`` against the compiled result.
    """
    base = QUICK if quick else FULL
    config = base._replace(
        **{k: v for k, v in dict(repeats=repeats, budget=budget, min_sample=min_sample).items() if v is not None}
    )
    if repeats is not None:
        config = config._replace(min_repeats=min(config.min_repeats, repeats))
    ops = [op for op in OPS if ops is None or op in ops]
    shapes = [SHAPES[s] if isinstance(s, str) else s for s in (SHAPES if shapes is None else shapes)]
    threads = default_threads() if threads is None else sorted(set(threads))
    impls = [i for i in IMPLEMENTATIONS if i in impls]
    torch = import_torch() if "torch" in impls else None
    if torch is None and "torch" in impls:
        impls.remove("torch")
    if "cython" in impls and not compiled_available():
        impls.remove("cython")
    dtypes = [np.dtype(d).name for d in dtypes]

    def emit(text=""):
        if verbose:
            print(text, file=file or sys.stdout, flush=True)

    records = []
    started = time.perf_counter()
    emit(_line([c[0] for c in _COLUMNS]))
    try:
        for n_threads in threads:
            with using_threads(n_threads, torch):
                for dtype, shape in itertools.product(dtypes, shapes):
                    cases = [(op, level) for op in ops if _applies(op, shape, dtype) for level in levels(op)]
                    if cases:
                        emit(_group_title(n_threads, dtype, f"{shape.name}: {shape.describe()}"))
                    for op, level in cases:
                        rows = _run_one(op, level, shape, dtype, n_threads, impls, torch, config, quick)
                        records.extend(rows)
                        emit(_table_row(op, level, {r["impl"]: r for r in rows}))
    finally:
        _random.cache_clear()
    if verbose:
        disagreements = _format_disagreements(records)
        if disagreements:
            emit(disagreements)
        timed = sum(r["median_s"] * r["number"] * r["repeats"] for r in records)
        emit(
            f"\ntotal {time.perf_counter() - started:.0f} s; the process was preempted "
            f"{sum(r['preempted'] for r in records)} times during ~{timed:.1f} s of timed samples "
            "(other load on the machine makes the numbers noisy)"
        )
    return records


def _run_one(op, level, shape, dtype, n_threads, impls, torch, config, quick) -> list[dict]:
    chosen = list(impls)
    if quick and shape.name == LARGE_SHAPE and op != "copy":
        chosen = [i for i in chosen if i != "numpy"]
    built = BUILDERS[op](shape, np.dtype(dtype), level, chosen, n_threads, torch)
    if not built.fns:
        return []
    samples, results, number, preempted = _measure(built.fns, config)
    reference = results.get("cython")
    rows = []
    for impl, times in samples.items():
        rec = {
            "op": op,
            "level": level,
            "shape": shape.name,
            "x": list(shape.x),
            "geometry": f"{shape.name}: {shape.describe()}",
            "dtype": dtype,
            "threads": n_threads,
            "impl": impl,
            "number": number[impl],
            **_summary(times),
            "preempted": preempted[impl],
            "nbytes": built.nbytes,
            "flops": built.flops,
        }
        rec["gbps"] = built.nbytes / rec["median_s"] / 1e9 if built.nbytes else None
        rec["gflops"] = built.flops / rec["median_s"] / 1e9 if built.flops else None
        if reference is not None and impl != "cython":
            diff = _max_rel_diff(reference, results[impl])
            rec["max_rel_diff"] = diff
            rec["agrees"] = bool(diff <= _tolerance(op, dtype))
        rows.append(rec)
    del results, built
    return rows
