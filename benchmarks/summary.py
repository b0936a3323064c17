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

from fastcnn._backend import KERNEL_NAMES
from fastcnn.bench.report import format_ratio


def _find(records, **key):
    """The records whose fields equal `key`."""
    return [r for r in records if all(r.get(k) == v for k, v in key.items())]


def _record(records, **key):
    """The one record matching `key`, or None."""
    found = _find(records, **key)
    return found[0] if found else None


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
            key = dict(op=op, shape=shape, dtype=dtype)
            cy = _record(records, impl="cython", threads=1, level=level, **key)
            if cy is None:
                continue
            numpy = _record(records, impl="numpy", threads=1, level=level, **key)
            # PyTorch's faster way, its out= kernel or its public function.
            torch = min(_find(records, impl="torch", threads=1, **key),
                        key=lambda r: r["median_s"], default=None)
            cy_many = _record(records, impl="cython", threads=many, level=level, **key)
            lines.append(
                f"| {op} | {shape} | {1e3 * cy['median_s']:.3f} | {format_ratio(numpy, cy)} "
                f"| {format_ratio(torch, cy)} | {format_ratio(cy, cy_many) if many > 1 else '-'} |"
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
