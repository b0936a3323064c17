"""Time training steps with another build's compiled kernels and with this one's, side by side.

    python benchmarks/compare_builds.py OLD_CHECKOUT [--threads N] [--modules conv,direct]
                                        [--repeats R] [shape ...]

OLD_CHECKOUT is a source tree built in place (``python setup.py build_ext
--inplace``), e.g. a ``git worktree`` of an earlier commit. Both builds'
kernel modules are loaded in this one process; each timed step runs with
the registry's entries (``fastcnn._backend._compiled``) pointing at one
build or the other, alternately, so that both see the same machine load.
Only the compiled kernels differ: the Python layers are this checkout's.
Prints the median of the repeats' fastest steps for each build, and their
ratio (this build / the other).
"""

import argparse
import functools
import importlib.util
import pathlib
import sys
import time

import numpy as np

import fastcnn
from fastcnn import _backend
from fastcnn.bench.cases import SHAPES, demo_network
from fastcnn.losses import softmax_cross_entropy
from fastcnn.optim import Adam

TRAIN_SHAPES = [name for name, shape in SHAPES.items() if shape.train]


def _load(tree: pathlib.Path, module: str):
    """Module ``fastcnn._kernels.<module>`` as built in `tree`."""
    found = sorted((tree / "fastcnn" / "_kernels").glob(f"{module}.*.so"))
    if not found:
        sys.exit(f"compare_builds: no built module {module!r} in {tree} (build it in place first)")
    spec = importlib.util.spec_from_file_location(f"fastcnn._kernels.{module}", found[0])
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def _entries(tree: pathlib.Path, modules) -> dict:
    """The registry's entries from `modules`, rebound to `tree`'s build of them."""
    other = {m: _load(tree, m) for m in modules}
    entries = {}
    for name, fn in _backend._compiled.items():
        inner = fn.func if isinstance(fn, functools.partial) else fn
        module = getattr(inner, "__module__", "").rpartition(".")[2]
        if module in other:
            rebound = getattr(other[module], inner.__name__)
            entries[name] = (functools.partial(rebound, *fn.args, **fn.keywords)
                             if isinstance(fn, functools.partial) else rebound)
    return entries


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=pathlib.Path, help="a source tree built in place")
    parser.add_argument("shapes", nargs="*", default=TRAIN_SHAPES, metavar="shape",
                        help=f"training-step shapes among {', '.join(TRAIN_SHAPES)} (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modules", default="conv,direct",
                        help="comma-separated kernel modules to swap (default: conv,direct)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_intermixed_args(argv)
    unknown = sorted(set(args.shapes) - set(TRAIN_SHAPES))
    if unknown:
        parser.error(f"unknown shapes {unknown}; choose among {TRAIN_SHAPES}")
    fastcnn.set_num_threads(args.threads)
    builds = {"other": _entries(args.old, args.modules.split(",")), "this": {}}
    builds["this"] = {name: _backend._compiled[name] for name in builds["other"]}

    def use(build):
        _backend._compiled.update(builds[build])

    for name in args.shapes:
        model, x, labels = demo_network(SHAPES[name])
        optimizer = Adam(model, lr=1e-3)

        def step():
            loss, dlogits = softmax_cross_entropy(model.forward(x), labels)
            model.backward(dlogits, input_grad=False)
            optimizer.step()

        best = {build: [] for build in builds}
        for build in builds:  # warm-up: buffers, caches
            use(build)
            step()
            step()
        for _ in range(args.repeats):
            for build in builds:
                use(build)
                times = []
                for _ in range(3):
                    start = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - start)
                best[build].append(min(times))
        use("this")
        other, this = (np.median(best[b]) * 1e3 for b in ("other", "this"))
        print(f"{name:14s} {args.threads} thread(s): other build {other:8.2f} ms, "
              f"this build {this:8.2f} ms, this/other {this / other:.2f}", flush=True)


if __name__ == "__main__":
    main()
