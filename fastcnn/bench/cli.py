"""``fastcnn bench``'s command line: its options, their checks, and the run they ask for."""

from __future__ import annotations

import argparse
import datetime
import os
import sys

from .cases import IMPLEMENTATIONS, OPS, SHAPES, import_torch
from .plot import _matplotlib_figure, plot
from .report import _dump_json, _loadavg, environment, format_header
from .runner import bench, default_threads
from .timing import FULL, QUICK

__all__ = ["add_arguments", "run"]


def _parse_list(text: str, allowed, what: str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in allowed]
    if unknown or not items:
        raise ValueError(f"{what} must be a comma-separated subset of {', '.join(allowed)}, got {text!r}")
    return items


def _parse_threads(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"--threads must be comma-separated positive ints such as 1,2, got {text!r}")
    return sorted(set(values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to `parser` (called by ``fastcnn bench``)."""
    parser.add_argument(
        "--kernels", metavar="LIST",
        help=f"comma-separated benchmarks (default: all): {', '.join(OPS)}",
    )  # fmt: skip
    parser.add_argument(
        "--shapes", metavar="LIST",
        help="comma-separated shapes (default: all): "
        + "; ".join(f"{s.name} {s.describe()}" for s in SHAPES.values()),
    )  # fmt: skip
    parser.add_argument("--dtypes", metavar="LIST", default="float32,float64", help="float32,float64 (default: both)")
    parser.add_argument(
        "--threads", metavar="LIST",
        help=f"comma-separated thread counts (default: {','.join(map(str, default_threads()))})",
    )  # fmt: skip
    parser.add_argument(
        "--impls", metavar="LIST", default=",".join(IMPLEMENTATIONS),
        help="implementations to time (default: cython,numpy,torch; torch only if importable)",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help="fewer, shorter repeats and no NumPy twin on the large shape (about a minute)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, help="maximum timed repeats per implementation")
    parser.add_argument("--budget", type=float, help="seconds of timing per implementation and benchmark")
    parser.add_argument("--json", metavar="FILE", help="also write the environment and all records as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="bar chart of the speed-ups (needs matplotlib)")


def run(args) -> int:
    """Run the benchmark as `args` (from :func:`add_arguments`) asks; return the exit code."""
    try:
        ops = _parse_list(args.kernels, OPS, "--kernels") if args.kernels else None
        shapes = _parse_list(args.shapes, tuple(SHAPES), "--shapes") if args.shapes else None
        dtypes = _parse_list(args.dtypes, ("float32", "float64"), "--dtypes")
        impls = _parse_list(args.impls, IMPLEMENTATIONS, "--impls")
        threads = _parse_threads(args.threads) if args.threads else None
        if args.repeats is not None and args.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
        if args.budget is not None and args.budget <= 0:
            raise ValueError(f"--budget must be positive, got {args.budget}")
        if args.plot:
            _matplotlib_figure()  # fail now, not after the run
    except (ValueError, ImportError) as exc:
        print(f"fastcnn bench: error: {exc}", file=sys.stderr)
        return 2
    torch = import_torch() if "torch" in impls else None
    env = environment(torch)
    config = QUICK if args.quick else FULL
    options = dict(
        repeats=args.repeats or config.repeats,
        min_repeats=min(config.min_repeats, args.repeats or config.min_repeats),
        budget=args.budget or config.budget,
        min_sample=config.min_sample,
        quick=args.quick,
    )
    print(format_header(env, options), flush=True)
    if "torch" in impls and torch is None:
        print("note         torch is not importable: its columns stay empty", flush=True)
    print(flush=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    records = bench(
        ops=ops, shapes=shapes, dtypes=dtypes, threads=threads, impls=impls, quick=args.quick,
        repeats=args.repeats, budget=args.budget,
    )  # fmt: skip
    env["loadavg_after"] = _loadavg()
    print(f"load average {env['loadavg_after']} (after the run)")
    if args.json:
        payload = {
            "command": [os.path.basename(sys.argv[0]), *sys.argv[1:]],
            "started_utc": started.isoformat(timespec="seconds"),
            "environment": env,
            "options": options,
            "records": records,
        }
        with open(args.json, "w") as f:
            f.write(_dump_json(payload))
        print(f"records written to {args.json}")
    if args.plot:
        plot(records, args.plot)
        print(f"speed-up chart saved to {args.plot}")
    return 0
