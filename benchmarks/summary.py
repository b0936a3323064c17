"""Condense a ``fastcnn bench --json`` file into the Markdown table of the README.

One row per benchmark and shape: milliseconds of the compiled kernels (the
raw kernel for the six kernels, the public op otherwise) at one thread, the
time ratios NumPy twin / compiled and PyTorch / compiled, and the speed-up of
the compiled kernels from one thread to the most threads of the run::

    python benchmarks/summary.py benchmarks/results/2026-12-01.json --dtype float32
"""

from __future__ import annotations

import argparse
import json

from fastcnn.bench import KERNEL_NAMES


def _median(records, **key):
    """The median time of the one record matching `key`, or None."""
    found = [r["median_s"] for r in records if all(r.get(k) == v for k, v in key.items())]
    return found[0] if found else None


def _ratio(num, den) -> str:
    return f"{num / den:.2f}" if num is not None and den else "-"


def table(records, dtype: str) -> str:
    """The Markdown table for `dtype` (see the module docstring)."""
    ops = list(dict.fromkeys(r["op"] for r in records if r["op"] != "copy"))
    shapes = list(dict.fromkeys(r["shape"] for r in records))
    many = max(r["threads"] for r in records)
    lines = [
        f"| op | shape | compiled ms | NumPy / compiled | PyTorch / compiled | {many} threads / 1 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for op in ops:
        level = "kernel" if op in KERNEL_NAMES else "op"
        for shape in shapes:
            key = dict(op=op, shape=shape, dtype=dtype, level=level)
            cy = _median(records, impl="cython", threads=1, **key)
            if cy is None:
                continue
            np_ = _median(records, impl="numpy", threads=1, **key)
            torch = [_median(records, impl="torch", threads=1, **dict(key, level=lv))
                     for lv in ("kernel", "op")]
            torch = min((t for t in torch if t is not None), default=None)
            cy_many = _median(records, impl="cython", threads=many, **key)
            lines.append(
                f"| {op} | {shape} | {1e3 * cy:.3f} | {_ratio(np_, cy)} | {_ratio(torch, cy)} "
                f"| {_ratio(cy, cy_many) if many > 1 else '-'} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    with open(args.json_file) as f:
        records = json.load(f)["records"]
    print(table(records, args.dtype))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
