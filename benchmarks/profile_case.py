"""Run one ``fastcnn bench`` case in a loop, for a sampling profiler.

(Not ``profile.py``: next to bench.py, that name would shadow the standard
library's ``profile`` module, which PyTorch imports.)

The case is built exactly as the benchmark builds it (``fastcnn.bench``), so a
profile explains a figure of the table. For example, where the time of the
ResNet-shaped convolution forward+backward goes, at one thread::

    perf record -F 999 -g -o /tmp/conv.data -- \\
        python benchmarks/profile_case.py conv2d_fwd_bwd resnet float32 --seconds 20
    perf report -i /tmp/conv.data --no-children --sort dso,symbol --stdio

``benchmarks/results/`` keeps the reports quoted in the closing notes, each
with the command that made it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fastcnn import bench


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("op", choices=sorted(bench._BUILDERS))
    parser.add_argument("shape", choices=sorted(bench.SHAPES))
    parser.add_argument("dtype", choices=["float32", "float64"])
    parser.add_argument("--impl", default="cython", choices=bench.IMPLEMENTATIONS)
    parser.add_argument("--level", default="op", choices=["kernel", "op"],
                        help="the raw kernel or the public op (kernels only)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)

    torch = bench._import_torch() if args.impl == "torch" else None
    if args.impl == "torch" and torch is None:
        parser.error("--impl torch needs PyTorch installed")
    level = args.level if args.op in bench.KERNEL_NAMES else bench._levels(args.op)[0]
    with bench._threads(args.threads, torch):
        case = bench._BUILDERS[args.op](
            bench.SHAPES[args.shape], np.dtype(args.dtype), level, (args.impl,), args.threads, torch
        )
        call = case.fns[args.impl]
        call()  # warm-up: first-touch page faults and lazy initialisation
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            call()
            calls += 1
        elapsed = time.perf_counter() - start
    print(f"{args.op} {args.shape} {args.dtype} {args.impl} ({level}, {args.threads} thread(s)): "
          f"{calls} calls, {1e3 * elapsed / calls:.3f} ms per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
