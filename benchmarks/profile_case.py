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
shape's network spends its time, layer by layer, at one or more thread
counts side by side (medians over the loop)::

    python benchmarks/profile_case.py train_step mnist float32 --layers --threads 1,2

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
    parser.add_argument("--threads", default="1",
                        help="thread count; with --layers a comma-separated list (e.g. 1,2)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--layers", action="store_true",
                        help="train_step: time each layer's forward and backward")
    args = parser.parse_args(argv)
    if args.layers:
        if args.op != "train_step" or args.impl != "cython":
            parser.error("--layers times fastcnn's train_step only")
        _time_layers(cases.SHAPES[args.shape], args.seconds,
                     [int(n) for n in args.threads.split(",")])
        return 0
    args.threads = int(args.threads)

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


def _layer_medians(shape, seconds: float) -> tuple[list, dict, int]:
    """``(labels, {(i, part): median ms}, steps)`` of the shape's network, as
    bench's train_step runs it (forward, loss, backward, Adam step), with
    "loss" and "optimizer" as two more parts."""
    from fastcnn.losses import softmax_cross_entropy
    from fastcnn.optim import Adam

    model, x, labels = cases.demo_network(shape)
    optimizer = Adam(model, lr=1e-3)
    times: dict = {}

    def timed(key, call, *args):
        t = time.perf_counter()
        result = call(*args)
        times.setdefault(key, []).append(time.perf_counter() - t)
        return result

    # as Sequential.forward runs them: a batch norm and the ReLU after it as one
    runs = model._runs()

    def forward(run, h):
        return run[0].forward(h) if len(run) == 1 else run[0].forward_relu(h, run[1])

    def backward(run, d, input_grad):
        for layer in reversed(run[1:]):
            d = layer.backward(d)
        return run[0].backward(d, input_grad)

    start, steps = time.perf_counter(), 0
    while steps < 3 or time.perf_counter() - start < seconds:
        h = x
        for i, run in enumerate(runs):
            h = timed((i, "forward"), forward, run, h)
        _, d = timed(("loss", ""), softmax_cross_entropy, h, labels)
        for i in reversed(range(len(runs))):
            # as the training step: the first layer computes no input gradient
            d = timed((i, "backward"), backward, runs[i], d, i > 0)
        timed(("optimizer", ""), optimizer.step)
        steps += 1
    # the first step allocates and warms up: left out
    labels = [" + ".join(repr(layer) for layer in run) for run in runs]
    return labels, {k: 1e3 * float(np.median(v[1:])) for k, v in times.items()}, steps


def _time_layers(shape, seconds: float, thread_counts) -> None:
    """Per-layer medians of the shape's network, one column pair per thread count."""
    runs = {}
    for n in thread_counts:
        with using_threads(n, None):
            runs[n] = _layer_medians(shape, seconds)
    layers = runs[thread_counts[0]][0]
    steps = ", ".join(f"{runs[n][2]} at {n}" for n in thread_counts)
    print(f"train_step {shape.name} float32 ({shape.net} network): median ms per step "
          f"(steps: {steps}); forward / backward at each thread count")
    print(f"  {'':59s}" + "".join(f"{f'{n} thread(s)':>20s}" for n in thread_counts))
    totals = dict.fromkeys(thread_counts, 0.0)
    rows = [(f"{i:2d} {label}", [(i, "forward"), (i, "backward")]) for i, label in enumerate(layers)]
    rows += [("loss (softmax cross-entropy)", [("loss", "")]), ("Adam step", [("optimizer", "")])]
    for label, keys in rows:
        cells = ""
        for n in thread_counts:
            values = [runs[n][1][k] for k in keys]
            totals[n] += sum(values)
            cells += f"{' / '.join(f'{v:.3f}' for v in values):>20s}"
        print(f"  {label:59.59s}{cells}")
    print(f"  {'total':59s}" + "".join(f"{totals[n]:>20.3f}" for n in thread_counts))


if __name__ == "__main__":
    raise SystemExit(main())
