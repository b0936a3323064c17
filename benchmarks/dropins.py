"""Time fastcnn's drop-ins against the code they replace, on each project's shapes.

    python benchmarks/dropins.py [--repeat N] [--projects cs231n,hipsternet,mlfromscratch]
                                 [--threads N]

For each case: the median time of the original code (the NumPy
re-implementations in ``tests/originals``, the same code the tests compare
with) and of the drop-in, and the speed-up. A case is a forward and a
backward pass, or a whole training step of the project's network (forward,
loss, backward, update). Shapes are each project's typical ones:

- CS231n: the notebook's ThreeLayerConvNet on CIFAR-10 (batch 50, 3x32x32,
  32 7x7 filters, float32 parameters on float64 data) and its timing cells
  (x of (100, 3, 31, 31), 25 3x3 filters, stride 2; pooling (100, 3, 32, 32)).
- hipsternet: ``run_mnist.py cnn``: ConvNet(10 3x3 filters, H=128), batches of
  64 1x28x28 float32 images.
- ML-From-Scratch: the CNN example (batches of 256 1x8x8 digits, 16 then 32
  3x3 filters) and a CIFAR-like conv-pool block (64 x 3x32x32).

The course's Cython kernels (``im2col_cython``, ``col2im_cython``,
``col2im_6d_cython``, used by its conv backward) are NumPy stand-ins in
``tests/originals`` that loop over kernel offsets, so the CS231n rows that
use them approximate the course's speed rather than reproduce it; its
forward conv (as_strided + BLAS) and reshape pooling are pure NumPy in the
course too. NumPy's BLAS runs with its own default threads in both columns;
``--threads`` sets fastcnn's.

Uses the installed fastcnn; if none is importable, the checkout this script
lives in (after ``python setup.py build_ext --inplace``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the originals live with the tests
try:
    import fastcnn
except ImportError:
    sys.path.insert(0, str(ROOT))
    import fastcnn

import numpy as np  # noqa: E402
import originals  # noqa: E402
from originals.cs231n import fast_layers as course_fast  # noqa: E402
from originals.cs231n import im2col as course_im2col  # noqa: E402
from originals.cs231n import im2col_cython as course_cython  # noqa: E402
from originals.cs231n import optim as course_optim  # noqa: E402
from originals.hipsternet import layer as hipster_layer  # noqa: E402
from originals.mlfromscratch import layers as mlfs_layers  # noqa: E402

from fastcnn.compat import cs231n, hipsternet, mlfromscratch  # noqa: E402

PROJECTS = ("cs231n", "hipsternet", "mlfromscratch")


def randn(*shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# Each case builder returns (name, original step, drop-in step): zero-argument
# callables doing the same work on the same data.


def conv_case(module, x, w, b, conv):
    def step():
        out, cache = module.conv_forward_fast(x, w, b, conv)
        module.conv_backward_fast(np.ones_like(out), cache)
    return step


def pool_case(module, x, pool):
    def step():
        out, cache = module.max_pool_forward_fast(x, pool)
        module.max_pool_backward_fast(np.ones_like(out), cache)
    return step


def cs231n_cases(copies):
    x, w, b = randn(50, 3, 32, 32), randn(32, 3, 7, 7, dtype=np.float32), np.zeros(32, np.float32)
    conv = {"stride": 1, "pad": 3}
    yield ("conv fwd+bwd 50x3x32x32, 32 7x7 (f32 w, f64 x)",
           conv_case(course_fast, x, w, b, conv), conv_case(cs231n, x, w, b, conv))
    xt, wt, bt = randn(100, 3, 31, 31), randn(25, 3, 3, 3), randn(25)
    conv = {"stride": 2, "pad": 1}
    yield ("conv fwd+bwd 100x3x31x31, 25 3x3 s2 (notebook)",
           conv_case(course_fast, xt, wt, bt, conv), conv_case(cs231n, xt, wt, bt, conv))
    pool = {"pool_height": 2, "pool_width": 2, "stride": 2}
    xp = randn(100, 3, 32, 32)
    yield ("max pool fwd+bwd 100x3x32x32 2/2 (notebook)",
           pool_case(course_fast, xp, pool), pool_case(cs231n, xp, pool))
    xr = np.maximum(randn(50, 32, 32, 32), 0)
    yield ("max pool fwd+bwd 50x32x32x32 2/2 (ThreeLayerConvNet)",
           pool_case(course_fast, xr, pool), pool_case(cs231n, xr, pool))
    yield ("im2col+col2im_cython 50x3x32x32 7x7 p3 [stand-in]",
           cython_columns(course_cython, x), cython_columns(cs231n, x))
    yield ("im2col+col2im_indices 50x3x32x32 7x7 p3",
           indices_columns(course_im2col, x), indices_columns(cs231n, x))
    course, swapped = copies["cs231n"]
    data = randn(50, 3, 32, 32, seed=1), np.random.default_rng(2).integers(0, 10, 50)
    yield ("ThreeLayerConvNet training step, batch 50",
           cnn_training_step(course, data), cnn_training_step(swapped, data))


def cython_columns(module, x):
    def step():
        cols = module.im2col_cython(x, 7, 7, 3, 1)
        module.col2im_cython(cols, *x.shape, 7, 7, 3, 1)
    return step


def indices_columns(module, x):
    def step():
        cols = module.im2col_indices(x, 7, 7, 3, 1)
        module.col2im_indices(cols, x.shape, 7, 7, 3, 1)
    return step


def cnn_training_step(package, data):
    np.random.seed(0)
    model = package.classifiers.cnn.ThreeLayerConvNet(hidden_dim=100, reg=1e-3)
    configs = {name: {"learning_rate": 1e-4} for name in model.params}
    x, y = data

    def step():
        _, grads = model.loss(x, y)
        for name in model.params:
            model.params[name], configs[name] = course_optim.adam(
                model.params[name], grads[name], configs[name])
    return step


def hipsternet_cases(copies):
    X = randn(64, 1, 28, 28, dtype=np.float32)
    W, b = randn(10, 1, 3, 3), np.zeros((10, 1))

    def conv(layer):
        def step():
            out, cache = layer.conv_forward(X, W, b)
            layer.conv_backward(np.ones_like(out), cache)
        return step

    yield "conv fwd+bwd 64x1x28x28, 10 3x3 p1", conv(hipster_layer), conv(hipsternet)
    H = randn(64, 10, 28, 28)

    def pool(layer, kind):
        def step():
            out, cache = getattr(layer, f"{kind}_forward")(H)
            getattr(layer, f"{kind}_backward")(np.ones_like(out), cache)
        return step

    for kind in ("maxpool", "avgpool"):
        yield (f"{kind} fwd+bwd 64x10x28x28 2/2",
               pool(hipster_layer, kind), pool(hipsternet, kind))
    original, swapped = copies["hipsternet"]
    X_train = X - X.mean(axis=0)
    y = np.random.default_rng(3).integers(0, 10, 64)
    yield ("ConvNet training step, batch 64 (run_mnist.py)",
           convnet_step(original, X_train, y), convnet_step(swapped, X_train, y))


def convnet_step(package, X, y):
    np.random.seed(0)
    nn = package.neuralnet.ConvNet(10, 10, H=128)

    def step():
        grad, _ = nn.train_step(X, y)
        for k in grad:
            nn.model[k] -= 1e-3 * grad[k]
    return step


class Frozen:
    """An optimizer that leaves the weights as they are (timing only)."""

    def update(self, w, grad):
        return w


def layer_case(make, X):
    layer = make()
    layer.set_input_shape(X.shape[1:])
    if hasattr(layer, "initialize"):
        np.random.seed(0)
        layer.initialize(Frozen())

    def step():
        out = layer.forward_pass(X)
        layer.backward_pass(np.ones_like(out))
    return step


def mlfromscratch_cases(copies):
    digits = randn(256, 1, 8, 8)
    hidden = randn(256, 16, 8, 8)
    for X, filters in ((digits, 16), (hidden, 32)):
        yield (f"Conv2D({filters}, 3x3 same) fwd+bwd {'x'.join(map(str, X.shape))} (example)",
               layer_case(lambda: mlfs_layers.Conv2D(filters, (3, 3)), X),
               layer_case(lambda: mlfromscratch.Conv2D(filters, (3, 3)), X))
    cifar = randn(64, 3, 32, 32)
    yield ("Conv2D(32, 3x3 same) fwd+bwd 64x3x32x32",
           layer_case(lambda: mlfs_layers.Conv2D(32, (3, 3)), cifar),
           layer_case(lambda: mlfromscratch.Conv2D(32, (3, 3)), cifar))
    pooled = randn(64, 32, 32, 32)
    for kind in ("MaxPooling2D", "AveragePooling2D"):
        yield (f"{kind} 2x2/2 fwd+bwd 64x32x32x32 [fixed original]",
               layer_case(lambda: getattr(mlfs_layers, kind)((2, 2), 2), pooled),
               layer_case(lambda: getattr(mlfromscratch, kind)((2, 2), 2), pooled))
    original, swapped = copies["mlfromscratch"]
    X = np.random.default_rng(4).random((256, 1, 8, 8))
    y = np.eye(10)[np.random.default_rng(5).integers(0, 10, 256)]
    yield ("CNN example training step, batch 256",
           example_step(original, X, y), example_step(swapped, X, y))


def example_step(package, X, y):
    np.random.seed(0)
    clf = package.examples.convolutional_neural_network()
    return lambda: clf.train_on_batch(X, y)


def load_copies(directory):
    """Each project as published (the tests' originals) and with the README's one-line change."""
    copies = {}
    for project, swap in originals.SWAPS.items():
        original = originals.load_copy(project, f"{project}_original", directory)
        swapped = originals.load_copy(project, f"{project}_fastcnn", directory, [swap])
        for package in (original, swapped):
            importlib.import_module(f"{package.__name__}.{originals.NETWORKS[project]}")
        copies[project] = (original, swapped)
    return copies


def median_ms(step, repeat: int) -> float:
    step()  # warm-up: caches, BLAS threads, lazy imports
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/dropins.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per case (median)")
    parser.add_argument("--projects", default=",".join(PROJECTS),
                        help=f"comma-separated subset of {','.join(PROJECTS)}")
    parser.add_argument("--threads", type=int, default=None, help="fastcnn's thread count")
    args = parser.parse_args(argv)
    projects = args.projects.split(",")
    unknown = set(projects) - set(PROJECTS)
    if unknown or args.repeat < 1:
        parser.error(f"--projects must be among {PROJECTS} and --repeat >= 1, got "
                     f"{args.projects!r} and {args.repeat}")
    if args.threads is not None:
        fastcnn.set_num_threads(args.threads)
    # The original pooling layers cannot run as published; time them fixed.
    mlfs_layers.determine_padding = mlfs_layers.determine_padding_fixed
    print(f"fastcnn {fastcnn.__version__} from {os.path.dirname(fastcnn.__file__)}, "
          f"backend {fastcnn.get_backend()}, {fastcnn.get_num_threads()} threads; "
          f"numpy {np.__version__}; median of {args.repeat} runs")
    builders = {"cs231n": cs231n_cases, "hipsternet": hipsternet_cases,
                "mlfromscratch": mlfromscratch_cases}
    with tempfile.TemporaryDirectory() as directory:
        copies = load_copies(Path(directory))
        header = f"{'case':<58} {'original ms':>12} {'fastcnn ms':>11} {'speed-up':>9}"
        for project in projects:
            print(f"\n{project}\n{header}")
            for name, original, dropin in builders[project](copies):
                before, after = median_ms(original, args.repeat), median_ms(dropin, args.repeat)
                print(f"{name:<58} {before:>12.2f} {after:>11.2f} {before / after:>8.1f}x",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
