"""Run one ``fastcnn bench`` case in a loop, for a sampling profiler.

(Not ``profile.py``: next to bench.py, that name would shadow the standard
library's ``profile`` module, which PyTorch imports.)

The case is built exactly as the benchmark builds it (``fastcnn.bench``), so a
profile explains a figure of the table. For example, where the time of the
ResNet-shaped convolution forward+backward goes, at one thread::

    perf record -F 999 -g -o /tmp/conv.data -- \\
        python benchmarks/profile_case.py conv2d_fwd_bwd resnet float32 --seconds 20
    perf report -i /tmp/conv.data --no-children --sort dso,symbol --stdio

``--layers`` (train_step only) prints instead where a training step of the
demo network spends its time, layer by layer (medians over the loop)::

    python benchmarks/profile_case.py train_step mnist float32 --layers --threads 2

``benchmarks/results/`` keeps the reports quoted in the closing notes, each
with the command that made it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fastcnn._backend import KERNEL_NAMES
from fastcnn.bench import cases
from fastcnn.bench.timing import using_threads


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("op", choices=sorted(cases.BUILDERS))
    parser.add_argument("shape", choices=sorted(cases.SHAPES))
    parser.add_argument("dtype", choices=["float32", "float64"])
    parser.add_argument("--impl", default="cython", choices=cases.IMPLEMENTATIONS)
    parser.add_argument("--level", default="op", choices=["kernel", "op"],
                        help="the raw kernel or the public op (kernels only)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--layers", action="store_true",
                        help="train_step: time each layer's forward and backward")
    args = parser.parse_args(argv)
    if args.layers:
        if args.op != "train_step" or args.impl != "cython":
            parser.error("--layers times fastcnn's train_step only")
        with using_threads(args.threads, None):
            _time_layers(cases.SHAPES[args.shape], args.seconds)
        return 0

    torch = cases.import_torch() if args.impl == "torch" else None
    if args.impl == "torch" and torch is None:
        parser.error("--impl torch needs PyTorch installed")
    level = args.level if args.op in KERNEL_NAMES else cases.levels(args.op)[0]
    with using_threads(args.threads, torch):
        case = cases.BUILDERS[args.op](
            cases.SHAPES[args.shape], np.dtype(args.dtype), level, (args.impl,), args.threads, torch
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


def _time_layers(shape, seconds: float) -> None:
    """Per-layer medians of the demo network's forward and backward (as bench's train_step)."""
    from fastcnn.losses import softmax_cross_entropy

    model, x, labels = cases.demo_network(shape)
    times = {(i, way): [] for i in range(len(model.layers)) for way in ("forward", "backward")}
    start = time.perf_counter()
    steps = 0
    while steps < 3 or time.perf_counter() - start < seconds:
        h = x
        for i, layer in enumerate(model.layers):
            t = time.perf_counter()
            h = layer.forward(h)
            times[i, "forward"].append(time.perf_counter() - t)
        _, d = softmax_cross_entropy(h, labels)
        for i in reversed(range(len(model.layers))):
            t = time.perf_counter()
            d = model.layers[i].backward(d)
            times[i, "backward"].append(time.perf_counter() - t)
        steps += 1
    total = 0.0
    print(f"train_step {shape.name} float32, layers of the demo network: median ms over {steps} steps")
    for i, layer in enumerate(model.layers):
        fwd, bwd = (1e3 * float(np.median(times[i, way][1:])) for way in ("forward", "backward"))
        total += fwd + bwd
        print(f"  {i:2d} {layer!r:55.55s} forward {fwd:7.3f}  backward {bwd:7.3f}")
    print(f"  sum of the layers: {total:.3f} ms (the loss and the optimizer step not included)")


if __name__ == "__main__":
    raise SystemExit(main())
