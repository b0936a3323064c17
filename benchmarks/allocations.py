"""What a training step allocates once it has run twice: page faults and
the largest amount of new memory it holds at once, for each network of
``fastcnn bench``'s training step, with the layers' result arrays reused
(fastcnn's default, :mod:`fastcnn._buffers`) and, beside it, allocated anew
each time.

    python benchmarks/allocations.py [--steps 5] [--shapes mnist,cifar-vgg]

Counts, not times: they do not depend on the machine's load. A minor page
fault is the system mapping a page on its first touch (``getrusage``'s
``ru_minflt``); the peak is tracemalloc's, which sees NumPy's arrays but not
the compiled kernels' scratch buffers (their faults are in the first column).
"""

from __future__ import annotations

import argparse
import resource
import tracemalloc

from fastcnn import _buffers
from fastcnn.bench import cases
from fastcnn.bench.timing import using_threads
from fastcnn.losses import softmax_cross_entropy
from fastcnn.optim import Adam


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(shape, steps: int) -> tuple[float, float]:
    """``(minor page faults per step, peak new MiB in a step)`` after two warm-up steps."""
    model, x, labels = cases.demo_network(shape)
    optimizer = Adam(model, lr=1e-3)

    def step():
        _, dlogits = softmax_cross_entropy(model.forward(x), labels)
        model.backward(dlogits, input_grad=False)
        optimizer.step()

    step()
    step()
    start = _faults()
    for _ in range(steps):
        step()
    faults = (_faults() - start) / steps
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return faults, peak / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="steps counted (after two warm-up)")
    parser.add_argument("--shapes", default=",".join(
        name for name, shape in cases.SHAPES.items() if shape.train))
    args = parser.parse_args(argv)
    print(f"float32, one thread, {args.steps} steps after two; per training step:")
    print(f"{'network':16s}{'page faults':>14s}{'(anew)':>10s}{'peak new MiB':>15s}{'(anew)':>10s}")
    reuse = _buffers.MIN_BYTES
    with using_threads(1, None):
        for name in args.shapes.split(","):
            shape = cases.SHAPES[name]
            results = []
            for min_bytes in (reuse, float("inf")):
                _buffers.MIN_BYTES = min_bytes
                try:
                    results.append(measure(shape, args.steps))
                finally:
                    _buffers.MIN_BYTES = reuse
            (faults, peak), (faults_anew, peak_anew) = results
            print(f"{name:16s}{faults:14.0f}{faults_anew:10.0f}{peak:15.2f}{peak_anew:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
