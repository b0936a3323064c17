"""``fastcnn bench``'s command line: its options, their checks, and the run they ask for."""

from __future__ import annotations

import argparse
import datetime
import os
import sys

from .._backend import compiled_available
from .._cli_args import (
    THREADS_HELP,
    comma_list,
    output_file,
    plot_file,
    positive_float,
    positive_int,
    thread_counts,
)
from .cases import IMPLEMENTATIONS, OPS, SHAPES, import_torch
from .plot import plot
from .report import _dump_json, _loadavg, environment, format_header, format_summary
from .runner import bench
from .timing import FULL, QUICK

__all__ = ["add_arguments", "run"]


def _implementations(text: str) -> list[str]:
    """``--impls``: a subset of :data:`IMPLEMENTATIONS`, each of which must be available."""
    impls = comma_list(IMPLEMENTATIONS)(text)
    if "cython" in impls and not compiled_available():
        raise argparse.ArgumentTypeError(
            "cython: the compiled kernels are not built (see `fastcnn info`); choose numpy or torch"
        )
    if "torch" in impls and import_torch() is None:
        raise argparse.ArgumentTypeError("torch: PyTorch is not installed: pip install torch")
    return impls


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to `parser` (called by ``fastcnn bench``)."""
    parser.add_argument(
        "--kernels", metavar="LIST", type=comma_list(OPS),
        help=f"comma-separated benchmarks: {', '.join(OPS)} (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--shapes", metavar="LIST", type=comma_list(tuple(SHAPES)),
        help="comma-separated shapes: "
        + "; ".join(f"{s.name} {s.describe()}" for s in SHAPES.values())
        + " (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--dtypes", metavar="LIST", type=comma_list(("float32", "float64")), default="float32,float64",
        help="comma-separated dtypes",
    )  # fmt: skip
    parser.add_argument(
        "--threads", metavar="LIST", type=thread_counts, default="1,all",
        help=f"comma-separated thread counts, each {THREADS_HELP}",
    )  # fmt: skip
    parser.add_argument(
        "--impls", metavar="LIST", type=_implementations,
        help=f"comma-separated implementations to time, among {','.join(IMPLEMENTATIONS)} "
        "(default: every one available)",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help="fewer, shorter repeats and no NumPy twin on the large shape (about a minute)",
    )  # fmt: skip
    parser.add_argument(
        "--verbose", action="store_true",
        help="print every measured row as it comes (the full listing) instead of the summary at the end",
    )  # fmt: skip
    parser.add_argument(
        "--repeats", type=positive_int,
        help=f"maximum timed repeats per implementation (default: {FULL.repeats}, "
        f"{QUICK.repeats} with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--budget", type=positive_float,
        help=f"seconds of timing per implementation and benchmark (default: {FULL.budget:g}, "
        f"{QUICK.budget:g} with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--json", metavar="FILE", type=output_file,
        help="also write the environment and all records as JSON (default: no file)",
    )  # fmt: skip
    parser.add_argument(
        "--plot", metavar="FILE.png", type=plot_file,
        help="bar chart of the speed-ups, in the format of the suffix (default: no chart)",
    )  # fmt: skip


def run(args) -> int:
    """Run the benchmark as `args` (from :func:`add_arguments`) asks; return the exit status.

    The option values were checked by their argparse types, so the run
    starts at once; 1 if an output file cannot be written after it.
    """
    impls = args.impls or list(IMPLEMENTATIONS)
    torch = import_torch() if "torch" in impls else None
    env = environment(torch)
    config = QUICK if args.quick else FULL
    options = dict(
        repeats=args.repeats or config.repeats,
        min_repeats=min(config.min_repeats, args.repeats or config.min_repeats),
        budget=args.budget or config.budget,
        min_sample=config.min_sample,
        quick=args.quick,
        verbose=args.verbose,
    )
    print(format_header(env, options), flush=True)
    if "torch" in impls and torch is None:
        print("note         PyTorch is not installed (pip install torch): its columns stay empty", flush=True)
    print(flush=True)
    if not args.verbose:
        print("measuring; the summary follows at the end (--verbose prints every row as it is measured)",
              file=sys.stderr, flush=True)  # fmt: skip
    started = datetime.datetime.now(datetime.timezone.utc)
    records = bench(
        ops=args.kernels, shapes=args.shapes, dtypes=args.dtypes, threads=args.threads, impls=impls,
        quick=args.quick, repeats=args.repeats, budget=args.budget, verbose=args.verbose,
    )  # fmt: skip
    if not args.verbose:
        print(format_summary(records))
    env["loadavg_after"] = _loadavg()
    print(f"load average {env['loadavg_after']} (after the run)")
    try:
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
    except OSError as exc:
        print(f"fastcnn bench: error: cannot write {exc.filename or 'the output'}: {exc.strerror or exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0
