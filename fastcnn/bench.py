"""``fastcnn bench``: time every kernel, op and a training step against NumPy and PyTorch.

Like ``bottleneck.bench()``, this ships in the package so that anyone can see
what fastcnn buys on their own machine. It prints the versions first, then a
table, and can write the raw numbers (``--json``) and a bar chart of the
speed-ups (``--plot``).

What is timed, for each thread count, dtype and shape (:data:`SHAPES`):

* every kernel of :data:`fastcnn._backend.KERNEL_NAMES` twice: the raw kernel
  on validated arrays with preallocated outputs (level ``kernel``: no
  validation, no allocation) and the public op of :mod:`fastcnn.functional`
  (level ``op``: what a user pays);
* ``conv2d`` (forward) and ``conv2d_fwd_bwd`` (``conv2d`` + ``conv2d_backward``);
* ``train_step``: one step of the ``fastcnn demo`` network (forward, softmax
  cross-entropy, backward, SGD with momentum), float32 only;
* ``copy``: ``np.copyto`` and ``Tensor.copy_`` of the input, the memory
  bandwidth the memory-bound kernels are measured against.

Implementations: ``cython`` (the compiled kernels), ``numpy`` (the NumPy twin
of :mod:`fastcnn.reference`) and ``torch`` (PyTorch CPU, when importable),
all at the same thread count (:func:`fastcnn.set_num_threads`,
``torch.set_num_threads`` and ``threadpoolctl`` for NumPy's BLAS). At the
``kernel`` level PyTorch runs its ATen kernels with ``out=`` tensors
(``aten::im2col.out``, ``aten::max_pool2d_with_indices_backward.grad_input``,
...); at the ``op`` level it runs the public ``torch.nn.functional`` call (for
the two pooling backwards, the ATen function autograd itself calls, without
building a graph). conv2d backward in PyTorch is ``torch.autograd.grad`` on a
fresh forward.

Method: one process; every implementation is warmed up (and its result
checked against the compiled one) before timing; then the repeats are
interleaved round-robin over the implementations, starting with a different
one each repeat, so that a noisy moment hits all of them. A sample is the
mean of ``number`` back-to-back calls (calibrated so a sample lasts at least
``min_sample`` seconds), timed with :func:`time.perf_counter` and the garbage
collector off. Reported: the median sample, its min and its interquartile
range. Slow implementations get fewer repeats (``budget`` seconds each, never
fewer than ``min_repeats``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import gc
import importlib
import itertools
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

try:
    import resource
except ImportError:  # Windows
    resource = None

from . import _backend
from . import functional as fn
from ._backend import KERNEL_NAMES, pair_of, use_backend
from ._validation import conv_window, pool_window

__all__ = [
    "SHAPES",
    "OPS",
    "IMPLEMENTATIONS",
    "Shape",
    "add_arguments",
    "run",
    "bench",
    "format_table",
    "format_targets",
    "plot",
]

IMPLEMENTATIONS = ("cython", "numpy", "torch")


@dataclass(frozen=True)
class Shape:
    """One benchmark geometry: the input and the conv/pool layers applied to it.

    im2col, col2im and conv use the conv geometry (stride 1, dilation 1) on
    `x`; the pools use the pool geometry on the conv's output
    (:attr:`pool_input`), as the layers follow each other in a network. A
    shape without a conv (``filters=0``) only serves the training step.
    """

    name: str
    x: tuple[int, int, int, int]
    filters: int = 0
    conv_kernel: int = 0
    conv_padding: int = 0
    pool_kernel: int = 0
    pool_stride: int = 0
    pool_padding: int = 0
    train: bool = False

    @property
    def pool_input(self) -> tuple[int, int, int, int]:
        """Shape of the conv's output (stride 1), the pools' input."""
        n, _, h, w = self.x
        grow = 2 * self.conv_padding - self.conv_kernel + 1
        return (n, self.filters, h + grow, w + grow)

    def describe(self) -> str:
        x = "x".join(map(str, self.x))
        if not self.filters:
            return f"x=({x})"
        pool = f"pool {self.pool_kernel}x{self.pool_kernel} s{self.pool_stride}"
        pool += f" p{self.pool_padding}" if self.pool_padding else ""
        pool += f" on ({'x'.join(map(str, self.pool_input))})"
        return (
            f"x=({x}), conv {self.filters} {self.conv_kernel}x{self.conv_kernel} "
            f"p{self.conv_padding}, {pool}"
        )


SHAPES = {
    s.name: s
    for s in (
        # CIFAR-10 first layer.
        Shape("cifar", (64, 3, 32, 32), 32, 3, 1, 2, 2, 0),
        # A ResNet stage: the large, memory-bound case.
        Shape("resnet", (32, 64, 56, 56), 64, 3, 1, 3, 2, 1),
        # MNIST first layer (LeNet-like); also the demo network on 28x28 images.
        Shape("mnist", (128, 1, 28, 28), 8, 5, 2, 2, 2, 0, train=True),
        # The demo's default data (scikit-learn digits, 8x8): training step only.
        Shape("digits", (128, 1, 8, 8), train=True),
    )
}
#: The shape whose NumPy twin ``--quick`` skips.
LARGE_SHAPE = "resnet"

#: Benchmarks: the registry's kernels, then the composite ones.
OPS = (*KERNEL_NAMES, "conv2d", "conv2d_fwd_bwd", "train_step", "copy")
#: Which targets (issue 4) treat a kernel as memory-bound: all of them.
MEMORY_BOUND = KERNEL_NAMES
COPY_BANDWIDTH_GBPS = 25.0  # nominal copy bandwidth of the reference machine

_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "MKL_NUM_THREADS",
    "FASTCNN_BACKEND",
)


class _Bench(NamedTuple):
    """What to time: a zero-argument callable per implementation."""

    fns: dict[str, Callable[[], Any]]
    nbytes: int | None = None  # bytes read + written, each array once
    flops: float | None = None


class _Config(NamedTuple):
    repeats: int
    min_repeats: int
    budget: float  # seconds of timed calls per implementation and benchmark
    min_sample: float  # seconds a sample lasts at least (several calls if needed)


FULL = _Config(repeats=7, min_repeats=3, budget=2.0, min_sample=0.02)
QUICK = _Config(repeats=3, min_repeats=1, budget=0.25, min_sample=0.005)


# ---------------------------------------------------------------------------
# Optional imports.


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _matplotlib_figure():
    try:
        return importlib.import_module("matplotlib.figure")
    except ImportError as exc:
        raise ImportError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib "
            '(or pip install "fastcnn[bench]")'
        ) from exc


# ---------------------------------------------------------------------------
# Benchmark builders. Each gets the shape, dtype, thread count and the
# implementations to build, and returns a _Bench whose callables return the
# result (compared across implementations once, after the warm-up).


@functools.lru_cache(maxsize=4)
def _random(shape: tuple, dtype_name: str, seed: int) -> np.ndarray:
    """Standard normal data, cached: the same inputs serve every level and
    implementation of a benchmark (no implementation writes to its inputs)."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.dtype(dtype_name))


def _inputs(shape: Shape, dtype) -> np.ndarray:
    return _random(shape.x, np.dtype(dtype).name, 0)


def _pool_inputs(shape: Shape, dtype) -> np.ndarray:
    """The pools' input: the conv's output, as in the network the shape describes."""
    return _random(shape.pool_input, np.dtype(dtype).name, 0)


def _gradient(shape, dtype) -> np.ndarray:
    """A ``dout`` (or ``cols``) of `shape`."""
    return _random(tuple(shape), np.dtype(dtype).name, 1)


def _conv_win(shape: Shape, x):
    return conv_window(x.shape, shape.conv_kernel, 1, shape.conv_padding, 1)


def _pool_win(shape: Shape, x):
    return pool_window(x.shape, shape.pool_kernel, shape.pool_stride, shape.pool_padding, 1, False)


def _with_backend(name: str, call: Callable[[], Any]) -> Callable[[], Any]:
    def run_on_backend():
        with use_backend(name):
            return call()

    return run_on_backend


def _fastcnn_op_fns(impls, call) -> dict:
    """The public op on each fastcnn backend asked for."""
    return {name: _with_backend(name, call) for name in ("cython", "numpy") if name in impls}


def _kernel_fns(name, impls, threads, make_args) -> dict:
    """The raw kernels; `make_args()` gives the arguments with fresh output arrays."""
    compiled, twin = pair_of(name)
    fns = {}
    if "cython" in impls and compiled is not None:
        a = make_args()
        fns["cython"] = lambda: compiled(*a, threads)
    if "numpy" in impls:
        b = make_args()
        fns["numpy"] = lambda: twin(*b)
    return fns


def _build_im2col(shape, dtype, level, impls, threads, torch):
    x = _inputs(shape, dtype)
    win = _conv_win(shape, x)
    n, c = x.shape[:2]
    cols_shape = (n, c * win.kh * win.kw, win.oh * win.ow)
    nbytes = x.nbytes + math.prod(cols_shape) * x.itemsize
    k, p = shape.conv_kernel, shape.conv_padding
    if level == "kernel":
        fns = _kernel_fns("im2col", impls, threads, lambda: (x, *win, np.empty(cols_shape, dtype)))
        if torch is not None and "torch" in impls:
            tx, tout = torch.from_numpy(x), torch.from_numpy(np.empty(cols_shape, dtype))
            op = torch.ops.aten.im2col.out
            fns["torch"] = lambda: op(tx, [k, k], [1, 1], [p, p], [1, 1], out=tout)
    else:
        fns = _fastcnn_op_fns(impls, lambda: fn.im2col(x, k, 1, p))
        if torch is not None and "torch" in impls:
            tx = torch.from_numpy(x)
            unfold = torch.nn.functional.unfold
            fns["torch"] = lambda: unfold(tx, k, padding=p)
    return _Bench(fns, nbytes)


def _build_col2im(shape, dtype, level, impls, threads, torch):
    x = _inputs(shape, dtype)
    win = _conv_win(shape, x)
    n, c, h, w = x.shape
    cols = _gradient((n, c * win.kh * win.kw, win.oh * win.ow), dtype)
    nbytes = cols.nbytes + x.nbytes
    k, p = shape.conv_kernel, shape.conv_padding
    if level == "kernel":
        fns = _kernel_fns("col2im", impls, threads, lambda: (cols, *win, np.empty_like(x)))
        if torch is not None and "torch" in impls:
            tcols, tout = torch.from_numpy(cols), torch.from_numpy(np.empty_like(x))
            op = torch.ops.aten.col2im.out
            fns["torch"] = lambda: op(tcols, [h, w], [k, k], [1, 1], [p, p], [1, 1], out=tout)
    else:
        fns = _fastcnn_op_fns(impls, lambda: fn.col2im(cols, (h, w), k, 1, p))
        if torch is not None and "torch" in impls:
            tcols = torch.from_numpy(cols)
            fold = torch.nn.functional.fold
            fns["torch"] = lambda: fold(tcols, (h, w), k, padding=p)
    return _Bench(fns, nbytes)


def _pool_geometry(shape):
    k, s, p = shape.pool_kernel, shape.pool_stride, shape.pool_padding
    return [k, k], [s, s], [p, p]


def _build_max_pool2d(shape, dtype, level, impls, threads, torch):
    x = _pool_inputs(shape, dtype)
    win = _pool_win(shape, x)
    out_shape = x.shape[:2] + (win.oh, win.ow)
    size = math.prod(out_shape)
    nbytes = x.nbytes + size * (x.itemsize + 8)
    ks, ss, ps = _pool_geometry(shape)
    if level == "kernel":

        def args():
            return (x, *win.params, np.empty(out_shape, dtype), np.empty(out_shape, np.int64))

        fns = _kernel_fns("max_pool2d", impls, threads, args)
        if torch is not None and "torch" in impls:
            tx = torch.from_numpy(x)
            tout = torch.from_numpy(np.empty(out_shape, dtype))
            tidx = torch.from_numpy(np.empty(out_shape, np.int64))
            op = torch.ops.aten.max_pool2d_with_indices.out
            fns["torch"] = lambda: op(tx, ks, ss, ps, [1, 1], False, out=tout, indices=tidx)
    else:
        k, s, p = shape.pool_kernel, shape.pool_stride, shape.pool_padding
        fns = _fastcnn_op_fns(impls, lambda: fn.max_pool2d(x, k, s, p, return_indices=True))
        if torch is not None and "torch" in impls:
            tx = torch.from_numpy(x)
            pool = torch.nn.functional.max_pool2d
            fns["torch"] = lambda: pool(tx, k, s, p, return_indices=True)
    return _Bench(fns, nbytes)


def _build_max_pool2d_backward(shape, dtype, level, impls, threads, torch):
    x = _pool_inputs(shape, dtype)
    k, s, p = shape.pool_kernel, shape.pool_stride, shape.pool_padding
    _, indices = fn.max_pool2d(x, k, s, p, return_indices=True)
    dout = _gradient(indices.shape, dtype)
    nbytes = dout.nbytes + indices.nbytes + x.nbytes
    ks, ss, ps = _pool_geometry(shape)
    if level == "kernel":
        fns = _kernel_fns(
            "max_pool2d_backward", impls, threads, lambda: (dout, indices, np.empty_like(x))
        )
        if torch is not None and "torch" in impls:
            tx, tdout, tidx = (torch.from_numpy(a) for a in (x, dout, indices))
            tout = torch.from_numpy(np.empty_like(x))
            op = torch.ops.aten.max_pool2d_with_indices_backward.grad_input
            fns["torch"] = lambda: op(tdout, tx, ks, ss, ps, [1, 1], False, tidx, grad_input=tout)
    else:
        fns = _fastcnn_op_fns(impls, lambda: fn.max_pool2d_backward(dout, indices, x.shape))
        if torch is not None and "torch" in impls:
            tx, tdout, tidx = (torch.from_numpy(a) for a in (x, dout, indices))
            # What autograd calls for F.max_pool2d's backward, without building a graph.
            op = torch.ops.aten.max_pool2d_with_indices_backward.default
            fns["torch"] = lambda: op(tdout, tx, ks, ss, ps, [1, 1], False, tidx)
    return _Bench(fns, nbytes)


def _build_avg_pool2d(shape, dtype, level, impls, threads, torch):
    x = _pool_inputs(shape, dtype)
    win = _pool_win(shape, x)
    out_shape = x.shape[:2] + (win.oh, win.ow)
    nbytes = x.nbytes + math.prod(out_shape) * x.itemsize
    ks, ss, ps = _pool_geometry(shape)
    if level == "kernel":
        geometry = (win.kh, win.kw, win.sh, win.sw, win.ph, win.pw, True, 0)
        fns = _kernel_fns(
            "avg_pool2d", impls, threads, lambda: (x, *geometry, np.empty(out_shape, dtype))
        )
        if torch is not None and "torch" in impls:
            tx, tout = torch.from_numpy(x), torch.from_numpy(np.empty(out_shape, dtype))
            op = torch.ops.aten.avg_pool2d.out
            fns["torch"] = lambda: op(tx, ks, ss, ps, False, True, None, out=tout)
    else:
        k, s, p = shape.pool_kernel, shape.pool_stride, shape.pool_padding
        fns = _fastcnn_op_fns(impls, lambda: fn.avg_pool2d(x, k, s, p))
        if torch is not None and "torch" in impls:
            tx = torch.from_numpy(x)
            pool = torch.nn.functional.avg_pool2d
            fns["torch"] = lambda: pool(tx, k, s, p)
    return _Bench(fns, nbytes)


def _build_avg_pool2d_backward(shape, dtype, level, impls, threads, torch):
    x = _pool_inputs(shape, dtype)
    win = _pool_win(shape, x)
    dout = _gradient(x.shape[:2] + (win.oh, win.ow), dtype)
    nbytes = dout.nbytes + x.nbytes
    ks, ss, ps = _pool_geometry(shape)
    if level == "kernel":
        geometry = (win.kh, win.kw, win.sh, win.sw, win.ph, win.pw, True, 0)
        fns = _kernel_fns(
            "avg_pool2d_backward", impls, threads, lambda: (dout, *geometry, np.empty_like(x))
        )
        if torch is not None and "torch" in impls:
            tx, tdout = torch.from_numpy(x), torch.from_numpy(dout)
            tout = torch.from_numpy(np.empty_like(x))
            op = torch.ops.aten.avg_pool2d_backward.grad_input
            fns["torch"] = lambda: op(tdout, tx, ks, ss, ps, False, True, None, grad_input=tout)
    else:
        k, s, p = shape.pool_kernel, shape.pool_stride, shape.pool_padding
        fns = _fastcnn_op_fns(impls, lambda: fn.avg_pool2d_backward(dout, x.shape, k, s, p))
        if torch is not None and "torch" in impls:
            tx, tdout = torch.from_numpy(x), torch.from_numpy(dout)
            # What autograd calls for F.avg_pool2d's backward, without building a graph.
            op = torch.ops.aten.avg_pool2d_backward.default
            fns["torch"] = lambda: op(tdout, tx, ks, ss, ps, False, True, None)
    return _Bench(fns, nbytes)


def _conv_operands(shape, dtype):
    x = _inputs(shape, dtype)
    c, k = shape.x[1], shape.conv_kernel
    rng = np.random.default_rng(2)
    bound = 1 / math.sqrt(c * k * k)
    weight = rng.uniform(-bound, bound, (shape.filters, c, k, k)).astype(dtype)
    bias = rng.uniform(-bound, bound, shape.filters).astype(dtype)
    win = _conv_win(shape, x)
    dout = _gradient((x.shape[0], shape.filters, win.oh, win.ow), dtype)
    flops = 2.0 * x.shape[0] * shape.filters * c * k * k * win.oh * win.ow
    return x, weight, bias, dout, flops


def _build_conv2d(shape, dtype, level, impls, threads, torch):
    x, weight, bias, _, flops = _conv_operands(shape, dtype)
    p = shape.conv_padding
    fns = _fastcnn_op_fns(impls, lambda: fn.conv2d(x, weight, bias, padding=p))
    if torch is not None and "torch" in impls:
        tx, tw, tb = (torch.from_numpy(a) for a in (x, weight, bias))
        conv = torch.nn.functional.conv2d

        def torch_conv2d():
            with torch.no_grad():
                return conv(tx, tw, tb, padding=p)

        fns["torch"] = torch_conv2d
    return _Bench(fns, flops=flops)


def _build_conv2d_fwd_bwd(shape, dtype, level, impls, threads, torch):
    x, weight, bias, dout, flops = _conv_operands(shape, dtype)
    p = shape.conv_padding

    def fastcnn_step():
        fn.conv2d(x, weight, bias, padding=p)
        return fn.conv2d_backward(dout, x, weight, padding=p)

    fns = _fastcnn_op_fns(impls, fastcnn_step)
    if torch is not None and "torch" in impls:
        tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, weight, bias))
        tdout = torch.from_numpy(dout)
        conv, grad = torch.nn.functional.conv2d, torch.autograd.grad

        def torch_step():
            return grad(conv(tx, tw, tb, padding=p), (tx, tw, tb), tdout)

        fns["torch"] = torch_step
    return _Bench(fns, flops=3 * flops)


def _build_copy(shape, dtype, level, impls, threads, torch):
    x = _inputs(shape, dtype)
    fns = {}
    if "numpy" in impls:
        dst = np.empty_like(x)
        fns["numpy"] = lambda: np.copyto(dst, x) or dst
    if torch is not None and "torch" in impls:
        tx, tdst = torch.from_numpy(x), torch.from_numpy(np.empty_like(x))
        fns["torch"] = lambda: tdst.copy_(tx)
    return _Bench(fns, 2 * x.nbytes)


def _torch_twin(model, torch):
    """The same network in ``torch.nn``, with the same initial weights."""
    from . import layers as L

    nn = torch.nn
    modules = []
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            m = nn.Conv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                layer.padding, layer.dilation, layer.groups, bias="bias" in layer.params,
            )  # fmt: skip
        elif isinstance(layer, L.Dense):
            m = nn.Linear(layer.in_features, layer.out_features, bias="bias" in layer.params)
        elif isinstance(layer, L.BatchNorm2D):
            m = nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum)
        elif isinstance(layer, L.MaxPool2D):
            m = nn.MaxPool2d(
                layer.kernel_size, layer.stride, layer.padding, layer.dilation, ceil_mode=layer.ceil_mode
            )
        elif isinstance(layer, L.AvgPool2D):
            m = nn.AvgPool2d(
                layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode, layer.count_include_pad
            )
        elif isinstance(layer, L.ReLU):
            m = nn.ReLU()
        elif isinstance(layer, L.Flatten):
            m = nn.Flatten()
        else:
            raise NotImplementedError(f"no torch.nn twin for {type(layer).__name__}")
        with torch.no_grad():
            for name, value in layer.params.items():
                getattr(m, name).copy_(torch.from_numpy(value))
        modules.append(m)
    return nn.Sequential(*modules)


def demo_network(shape: Shape):
    """``(model, x, labels)`` of the training step on `shape`: a fresh demo
    network (same initial weights every time), float32 inputs, 10 classes."""
    from .demo import build_model

    model = build_model(shape.x[1], shape.x[2:], 10, rng=0)
    labels = np.random.default_rng(3).integers(0, 10, shape.x[0])
    return model, _inputs(shape, np.float32), labels


def _build_train_step(shape, dtype, level, impls, threads, torch):
    """forward + softmax cross-entropy + backward + SGD(momentum=0.9) on the demo network."""
    from .losses import softmax_cross_entropy
    from .optim import SGD

    lr, momentum = 0.01, 0.9
    fns = {}
    for name in ("cython", "numpy"):
        if name not in impls:
            continue
        model, x, labels = demo_network(shape)
        optimizer = SGD(model, lr=lr, momentum=momentum)

        def step(model=model, optimizer=optimizer, x=x, labels=labels):
            loss, dlogits = softmax_cross_entropy(model.forward(x), labels)
            model.backward(dlogits)
            optimizer.step()
            return np.float64(loss)

        fns[name] = _with_backend(name, step)
    if torch is not None and "torch" in impls:
        model, x, labels = demo_network(shape)
        net = _torch_twin(model, torch)
        net.train()
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
        tx, ty = torch.from_numpy(x), torch.from_numpy(labels)
        cross_entropy = torch.nn.functional.cross_entropy

        def torch_step():
            optimizer.zero_grad(set_to_none=True)
            loss = cross_entropy(net(tx), ty)
            loss.backward()
            optimizer.step()
            return np.float64(loss.item())

        fns["torch"] = torch_step
    return _Bench(fns)


_BUILDERS = {
    "im2col": _build_im2col,
    "col2im": _build_col2im,
    "max_pool2d": _build_max_pool2d,
    "max_pool2d_backward": _build_max_pool2d_backward,
    "avg_pool2d": _build_avg_pool2d,
    "avg_pool2d_backward": _build_avg_pool2d_backward,
    "conv2d": _build_conv2d,
    "conv2d_fwd_bwd": _build_conv2d_fwd_bwd,
    "train_step": _build_train_step,
    "copy": _build_copy,
}


def _levels(op: str) -> tuple[str, ...]:
    if op in KERNEL_NAMES:
        return ("kernel", "op")
    if op == "copy":
        return ("baseline",)
    return ("op",)


def _applies(op: str, shape: Shape, dtype) -> bool:
    if op == "train_step":
        return shape.train and np.dtype(dtype) == np.float32
    return bool(shape.filters)


# ---------------------------------------------------------------------------
# Timing.


def _as_arrays(result) -> list[np.ndarray]:
    """Flatten a result (array, tensor, scalar or tuple of them) to NumPy arrays."""
    if isinstance(result, (tuple, list)):
        return [a for item in result for a in _as_arrays(item)]
    if hasattr(result, "detach"):  # a torch tensor
        return [result.detach().numpy()]
    return [np.asarray(result)]


def _max_rel_diff(ref, other) -> float:
    """Largest ``|a - b|`` over the largest ``|a|``, across the arrays of a result.

    Integer arrays (max-pool indices) must be equal. NaN anywhere in a
    difference counts as a disagreement (the inputs are finite).
    """
    ref, other = _as_arrays(ref), _as_arrays(other)
    if len(ref) != len(other):
        return math.inf
    worst = 0.0
    for a, b in zip(ref, other):
        if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
            return math.inf
        if a.size == 0:
            continue
        if a.dtype.kind in "iu":
            if not np.array_equal(a, b):
                return math.inf
            continue
        diff, scale = _max_abs_diff_and_scale(a.reshape(-1), b.reshape(-1))
        worst = max(worst, diff / max(scale, np.finfo(np.float64).tiny) if diff == diff else math.inf)
    return worst


def _max_abs_diff_and_scale(a, b, chunk=1 << 16) -> tuple[float, float]:
    """``max|a - b|`` and ``max|a|`` of 1-D arrays, in cache-sized pieces (no big temporaries)."""
    diff = scale = 0.0
    for start in range(0, a.size, chunk):
        pa, pb = a[start : start + chunk], b[start : start + chunk]
        d = pa - pb
        high, low = float(d.max()), float(d.min())
        if math.isnan(high):
            return math.nan, scale
        diff = max(diff, high, -low)
        scale = max(scale, float(pa.max()), -float(pa.min()))
    return diff, scale


def _tolerance(op: str, dtype) -> float:
    if op == "train_step":
        return 1e-3  # the loss of the first step
    return 1e-3 if np.dtype(dtype) == np.float32 else 1e-9


def _time_calls(call, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def _measure(fns: dict, config: _Config) -> tuple[dict, dict, dict, dict]:
    """Warm up, calibrate and time every callable, interleaved.

    Returns ``(samples, results, number, preempted)``: per implementation,
    the list of seconds per call, the result of its first (warm-up) call,
    the number of calls per sample and the involuntary context switches
    of the process during its samples.
    """
    names = list(fns)
    results, number, repeats = {}, {}, {}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for name in names:
            start = time.perf_counter()
            results[name] = fns[name]()
            t = time.perf_counter() - start
            if t < config.min_sample:  # the first call paid for page faults
                t = _time_calls(fns[name], 1)
            number[name] = max(1, math.ceil(config.min_sample / max(t, 1e-9)))
            fitting = int(config.budget / max(t * number[name], 1e-9))
            repeats[name] = max(config.min_repeats, min(config.repeats, fitting))
        samples = {name: [] for name in names}
        preempted = dict.fromkeys(names, 0)
        for r in range(max(repeats.values(), default=0)):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                if r < repeats[name]:
                    before = _involuntary_switches()
                    samples[name].append(_time_calls(fns[name], number[name]))
                    preempted[name] += _involuntary_switches() - before
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples, results, number, preempted


def _involuntary_switches() -> int:
    """How often this process's threads were preempted so far (a noise indicator)."""
    if resource is None:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def _summary(samples: list[float]) -> dict:
    s = np.asarray(samples)
    q1, median, q3 = np.percentile(s, [25, 50, 75])
    return {
        "median_s": float(median),
        "min_s": float(s.min()),
        "q1_s": float(q1),
        "q3_s": float(q3),
        "repeats": len(samples),
        "samples_s": [float(v) for v in samples],
    }


@contextlib.contextmanager
def _threads(n: int, torch):
    """Run the block with `n` threads in fastcnn, PyTorch and NumPy's BLAS."""
    from threadpoolctl import threadpool_limits

    saved = _backend._num_threads
    torch_saved = torch.get_num_threads() if torch is not None else None
    _backend.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        _backend.set_num_threads(saved)
        if torch is not None:
            torch.set_num_threads(torch_saved)


# ---------------------------------------------------------------------------
# The report.


def environment(torch=None) -> dict:
    """Versions, build, CPU, thread pools and environment of this process."""
    from threadpoolctl import threadpool_info

    from ._info import config

    cfg = config()
    cfg["fastcnn_path"] = os.path.dirname(os.path.abspath(__file__))
    cfg["git"] = _git_revision(os.path.dirname(cfg["fastcnn_path"]))
    cfg["torch"] = torch.__version__ if torch is not None else None
    cfg["torch_threads"] = torch.get_num_threads() if torch is not None else None
    cfg["cpu"] = _cpu_model()
    cfg["cpu_count"] = os.cpu_count()
    cfg["threadpools"] = [
        {
            k: info.get(k)
            for k in ("user_api", "internal_api", "version", "num_threads", "architecture",
                      "threading_layer", "filepath")
        }  # fmt: skip
        for info in threadpool_info()
    ]
    cfg["env"] = {k: os.environ[k] for k in _ENV_VARS if k in os.environ}
    cfg["loadavg"] = _loadavg()
    return cfg


def _git_revision(path: str) -> str | None:
    """``commit[+dirty]`` of the checkout fastcnn runs from, if it is one."""
    import subprocess

    if not os.path.isdir(os.path.join(path, ".git")):
        return None
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", "-C", path, *a], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "--short=12", "HEAD")
        dirty = run("status", "--porcelain", "--", "fastcnn", "csrc")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def format_header(env: dict, options: dict) -> str:
    """The versions and settings block printed before the table."""
    from ._info import show_config

    import io

    buf = io.StringIO()
    show_config(file=buf)
    lines = ["fastcnn bench", "", *buf.getvalue().rstrip().splitlines()]
    git = f" (git {env['git']})" if env.get("git") else ""
    lines.append(f"location     {env['fastcnn_path']}{git}")
    lines.append(f"torch        {env['torch'] or 'not used (not requested or not installed)'}")
    lines.append(f"cpu          {env['cpu']} ({env['cpu_count']} logical cores)")
    for pool in env["threadpools"]:
        details = ", ".join(
            f"{k}={pool[k]}"
            for k in ("version", "architecture", "threading_layer", "num_threads")
            if pool.get(k) is not None
        )
        lines.append(
            f"threadpool   {pool['user_api']}: {pool['internal_api']} ({details}) "
            f"{os.path.basename(pool['filepath'] or '')}"
        )
    env_vars = " ".join(f"{k}={v}" for k, v in env["env"].items()) or "(none of the thread/BLAS variables set)"
    lines.append(f"environment  {env_vars}")
    if "OPENBLAS_CORETYPE" in env["env"] or "OPENBLAS_L2_SIZE" in env["env"]:
        lines.append(
            "WARNING      OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set and may slow NumPy's GEMMs; "
            "compare with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...`"
        )
    lines.append(f"load average {env['loadavg']} (before the run)")
    lines.append(
        f"method       one process, implementations interleaved round-robin; median of up to "
        f"{options['repeats']} repeats (>= {options['min_repeats']}, ~{options['budget']} s per "
        f"implementation) after a warm-up; a sample lasts >= {options['min_sample'] * 1e3:g} ms"
    )
    lines.append(
        "columns      ms: median per call +- IQR/2 in % of it; rate: GB/s (bytes read + written, "
        "each array once) or GFLOP/s (conv, fwd+bwd = 3x fwd); np/cy and torch/cy: time ratios "
        "(> 1: fastcnn's compiled kernels are faster); '~' after the op: the process was "
        "preempted about once per sample or more (other load), '!': results disagree"
    )
    return "\n".join(lines)


def _rate(rec) -> str:
    if rec is None:
        return "-"
    if rec.get("gflops") is not None:
        return f"{rec['gflops']:.1f} GF/s"
    if rec.get("gbps") is not None:
        return f"{rec['gbps']:.1f} GB/s"
    return ""


def _ms(rec) -> str:
    if rec is None:
        return "-"
    spread = (rec["q3_s"] - rec["q1_s"]) / 2 / rec["median_s"] * 100 if rec["median_s"] else 0
    return f"{rec['median_s'] * 1e3:.3f}\u00b1{spread:.0f}%"


def _ratio(num, den) -> str:
    if num is None or den is None:
        return "-"
    return f"{num['median_s'] / den['median_s']:.2f}"


_COLUMNS = (
    ("op", 23, "<"), ("level", 8, "<"),
    ("cython ms", 14, ">"), ("numpy ms", 14, ">"), ("torch ms", 14, ">"),
    ("cython", 12, ">"), ("numpy", 12, ">"), ("torch", 12, ">"),
    ("np/cy", 7, ">"), ("torch/cy", 9, ">"),
)  # fmt: skip


def _line(cells) -> str:
    return " ".join(f"{c:{align}{width}}" for c, (_, width, align) in zip(cells, _COLUMNS)).rstrip()


def _group_title(threads, dtype, geometry: str) -> str:
    return f"-- {threads} thread{'s' if threads != 1 else ''}, {dtype}, {geometry}"


def _rows(records):
    """Group records by (threads, dtype, shape) and then (op, level), in run order."""
    groups: dict = {}
    for rec in records:
        key = (rec["threads"], rec["dtype"], rec["shape"])
        groups.setdefault(key, {}).setdefault((rec["op"], rec["level"]), {})[rec["impl"]] = rec
    return groups


def _table_row(op, level, by_impl) -> str:
    cy, np_, th = (by_impl.get(k) for k in IMPLEMENTATIONS)
    bad = any(r.get("agrees") is False for r in by_impl.values())
    noisy = any(r["preempted"] >= r["repeats"] for r in by_impl.values())
    name = op + (" !" if bad else "") + (" ~" if noisy else "")
    return _line(
        (name, level, _ms(cy), _ms(np_), _ms(th), _rate(cy), _rate(np_), _rate(th),
         _ratio(np_, cy), _ratio(th, cy))
    )  # fmt: skip


def format_table(records) -> str:
    """The table of `records` (from :func:`bench`), one block per threads/dtype/shape."""
    lines = [_line([c[0] for c in _COLUMNS])]
    for (threads, dtype, _), rows in _rows(records).items():
        first = next(iter(next(iter(rows.values())).values()))
        lines.append(_group_title(threads, dtype, first["geometry"]))
        lines.extend(_table_row(op, level, by_impl) for (op, level), by_impl in rows.items())
    disagreements = _format_disagreements(records)
    if disagreements:
        lines.append(disagreements)
    return "\n".join(lines)


def _format_disagreements(records) -> str:
    bad = [r for r in records if r.get("agrees") is False]
    if not bad:
        return ""
    lines = ["", "! results that disagree with the compiled kernels (the timing compares different work):"]
    lines.extend(
        f"  {r['op']} [{r['level']}] {r['impl']} {r['dtype']} {r['shape']} {r['threads']}t: "
        f"max relative difference {r['max_rel_diff']:.3g}"
        for r in bad
    )
    return "\n".join(lines)


def _find(records, **key):
    return [r for r in records if all(r.get(k) == v for k, v in key.items())]


def format_targets(records) -> str:
    """Issue 4's performance targets, evaluated on `records`."""
    out = ["", "Targets (issue 4); each line: value, then OK or MISS"]

    def verdict(ok):
        return "OK  " if ok else "MISS"

    # 1. Every kernel >= 2x faster than torch at 1 thread.
    lines = []
    for cy in _find(records, impl="cython", level="kernel", threads=1):
        # PyTorch's faster way: its out= kernel or its public function.
        th = _find(records, impl="torch", threads=1, op=cy["op"], dtype=cy["dtype"], shape=cy["shape"])
        if th:
            ratio = min(r["median_s"] for r in th) / cy["median_s"]
            lines.append(f"  {verdict(ratio >= 2)} {ratio:6.2f}x  {cy['op']} {cy['dtype']} {cy['shape']}")
    if lines:
        out.append(
            "1. every kernel >= 2x faster than torch at 1 thread "
            "(torch's faster of out=/functional over the raw compiled kernel):"
        )
        out.extend(lines)

    # 2. Memory-bound kernels >= 50% of copy bandwidth on the large shape.
    lines = []
    for cy in _find(records, impl="cython", level="kernel", shape=LARGE_SHAPE):
        if cy["op"] not in MEMORY_BOUND or cy.get("gbps") is None:
            continue
        copies = [
            r["gbps"]
            for r in _find(records, op="copy", shape=LARGE_SHAPE, threads=cy["threads"], dtype=cy["dtype"])
        ]
        measured = f", {cy['gbps'] / max(copies) * 100:3.0f}% of measured copy {max(copies):.1f}" if copies else ""
        ok = cy["gbps"] >= 0.5 * COPY_BANDWIDTH_GBPS
        lines.append(
            f"  {verdict(ok)} {cy['gbps']:6.1f} GB/s ({cy['gbps'] / COPY_BANDWIDTH_GBPS * 100:3.0f}% of "
            f"{COPY_BANDWIDTH_GBPS:g}{measured})  {cy['op']} {cy['dtype']} {cy['threads']}t"
        )
    if lines:
        out.append(
            f"2. memory-bound kernels >= 50% of ~{COPY_BANDWIDTH_GBPS:g} GB/s copy bandwidth on "
            f"{LARGE_SHAPE} {SHAPES[LARGE_SHAPE].x}:"
        )
        out.extend(lines)

    def versus_torch(op, faster, label, **where):
        """Lines torch/cy for the cython records of `op` (torch at the same thread count)."""
        lines = []
        for cy in _find(records, impl="cython", op=op, **where):
            th = _find(records, impl="torch", op=op, threads=cy["threads"], dtype=cy["dtype"],
                       shape=cy["shape"])
            if th:
                ratio = th[0]["median_s"] / cy["median_s"]
                lines.append(f"  {verdict(faster(ratio))} {ratio:6.2f}x  {label(cy)}")
        return lines

    # 3. conv fwd+bwd not slower than torch at 1 thread.
    lines = versus_torch("conv2d_fwd_bwd", lambda r: r >= 1, lambda cy: f"{cy['dtype']} {cy['shape']}",
                         threads=1)
    if lines:
        out.append("3. conv2d forward+backward not slower than torch at 1 thread (torch/cy):")
        out.extend(lines)

    # 4. More threads >= 1.6x faster than 1 thread on the large shape.
    lines = []
    for cy in _find(records, impl="cython", shape=LARGE_SHAPE, threads=1):
        if cy["level"] == "baseline":
            continue
        for many in _find(records, impl="cython", shape=LARGE_SHAPE, op=cy["op"], level=cy["level"], dtype=cy["dtype"]):
            if many["threads"] == 2:
                ratio = cy["median_s"] / many["median_s"]
                lines.append(
                    f"  {verdict(ratio >= 1.6)} {ratio:6.2f}x  {cy['op']} [{cy['level']}] {cy['dtype']}"
                )
    if lines:
        out.append(f"4. 2 threads >= 1.6x faster than 1 thread on {LARGE_SHAPE} (cython, t1/t2):")
        out.extend(lines)

    # 4b. conv2d with 2 threads never slower than with 1, on every shape.
    lines = []
    for cy in _find(records, impl="cython", threads=1):
        if cy["op"] not in ("conv2d", "conv2d_fwd_bwd"):
            continue
        for two in _find(records, impl="cython", threads=2, op=cy["op"], dtype=cy["dtype"], shape=cy["shape"]):
            ratio = cy["median_s"] / two["median_s"]
            lines.append(f"  {verdict(ratio >= 1)} {ratio:6.2f}x  {cy['op']} {cy['dtype']} {cy['shape']}")
    if lines:
        out.append("4b. conv2d with 2 threads not slower than with 1 (cython, t1/t2):")
        out.extend(lines)

    # 5. A training step of the demo network faster than torch's, at the same thread count.
    lines = versus_torch("train_step", lambda r: r > 1, lambda cy: f"{cy['shape']} {cy['threads']}t")
    if lines:
        out.append("5. demo network's training step faster than torch at the same thread count (torch/cy):")
        out.extend(lines)
    if len(out) == 2:
        out.append("  (not enough data: run with torch, 1 and 2 threads and the resnet shape)")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Driver.


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


def default_threads() -> list[int]:
    """1 and every core the compiled kernels would use by default."""
    return sorted({1, _backend._max_threads()})


def bench(
    ops=None,
    shapes=None,
    dtypes=("float32", "float64"),
    threads=None,
    impls=IMPLEMENTATIONS,
    quick=False,
    repeats=None,
    budget=None,
    min_sample=None,
    verbose=True,
    file=None,
) -> list[dict]:
    """Time the kernels, ops and training step; print the table; return the records.

    Parameters
    ----------
    ops : sequence of str, optional
        Names from :data:`OPS` (default: all).
    shapes : sequence of str or Shape, optional
        Names from :data:`SHAPES` or :class:`Shape` objects (default: all of
        :data:`SHAPES`).
    dtypes : sequence of str
        ``"float32"`` and/or ``"float64"``.
    threads : sequence of int, optional
        Thread counts (default: 1 and all cores).
    impls : sequence of str
        Among ``"cython"``, ``"numpy"``, ``"torch"``; unavailable ones are skipped.
    quick : bool
        Fewer and shorter repeats, and no NumPy twin on the large shape.
    repeats, budget, min_sample : optional
        Override the maximum repeats, the seconds of timing per
        implementation and benchmark, and the minimum seconds per sample.
    verbose : bool
        Print the table as it is measured, then the targets of issue 4.
    file : file object, optional
        Where to print (default: ``sys.stdout``).

    Returns
    -------
    list of dict
        One record per (threads, dtype, shape, op, level, impl): the
        ``median_s``, ``min_s``, ``q1_s``, ``q3_s`` and ``samples_s`` per
        call, ``number`` of calls per sample, ``nbytes``/``gbps``,
        ``flops``/``gflops`` where they apply, and ``agrees`` /
        ``max_rel_diff`` against the compiled result.
    """
    base = QUICK if quick else FULL
    config = base._replace(
        **{k: v for k, v in dict(repeats=repeats, budget=budget, min_sample=min_sample).items() if v is not None}
    )
    if repeats is not None:
        config = config._replace(min_repeats=min(config.min_repeats, repeats))
    ops = [op for op in OPS if ops is None or op in ops]
    shapes = [SHAPES[s] if isinstance(s, str) else s for s in (SHAPES if shapes is None else shapes)]
    threads = default_threads() if threads is None else sorted(set(threads))
    impls = [i for i in IMPLEMENTATIONS if i in impls]
    torch = _import_torch() if "torch" in impls else None
    if torch is None and "torch" in impls:
        impls.remove("torch")
    if "cython" in impls and not _backend.compiled_available():
        impls.remove("cython")
    dtypes = [np.dtype(d).name for d in dtypes]

    def emit(text=""):
        if verbose:
            print(text, file=file or sys.stdout, flush=True)

    records = []
    started = time.perf_counter()
    emit(_line([c[0] for c in _COLUMNS]))
    try:
        for n_threads in threads:
            with _threads(n_threads, torch):
                for dtype, shape in itertools.product(dtypes, shapes):
                    cases = [(op, level) for op in ops if _applies(op, shape, dtype) for level in _levels(op)]
                    if cases:
                        emit(_group_title(n_threads, dtype, f"{shape.name}: {shape.describe()}"))
                    for op, level in cases:
                        rows = _run_one(op, level, shape, dtype, n_threads, impls, torch, config, quick)
                        records.extend(rows)
                        emit(_table_row(op, level, {r["impl"]: r for r in rows}))
    finally:
        _random.cache_clear()
    if verbose:
        disagreements = _format_disagreements(records)
        if disagreements:
            emit(disagreements)
        emit(format_targets(records))
        timed = sum(r["median_s"] * r["number"] * r["repeats"] for r in records)
        emit(
            f"\ntotal {time.perf_counter() - started:.0f} s; the process was preempted "
            f"{sum(r['preempted'] for r in records)} times during ~{timed:.1f} s of timed samples "
            "(other load on the machine makes the numbers noisy)"
        )
    return records


def _run_one(op, level, shape, dtype, n_threads, impls, torch, config, quick) -> list[dict]:
    chosen = list(impls)
    if quick and shape.name == LARGE_SHAPE and op != "copy":
        chosen = [i for i in chosen if i != "numpy"]
    built = _BUILDERS[op](shape, np.dtype(dtype), level, chosen, n_threads, torch)
    if not built.fns:
        return []
    samples, results, number, preempted = _measure(built.fns, config)
    reference = results.get("cython")
    rows = []
    for impl, times in samples.items():
        rec = {
            "op": op,
            "level": level,
            "shape": shape.name,
            "x": list(shape.x),
            "geometry": f"{shape.name}: {shape.describe()}",
            "dtype": dtype,
            "threads": n_threads,
            "impl": impl,
            "number": number[impl],
            **_summary(times),
            "preempted": preempted[impl],
            "nbytes": built.nbytes,
            "flops": built.flops,
        }
        rec["gbps"] = built.nbytes / rec["median_s"] / 1e9 if built.nbytes else None
        rec["gflops"] = built.flops / rec["median_s"] / 1e9 if built.flops else None
        if reference is not None and impl != "cython":
            diff = _max_rel_diff(reference, results[impl])
            rec["max_rel_diff"] = diff
            rec["agrees"] = bool(diff <= _tolerance(op, dtype))
        rows.append(rec)
    del results, built
    return rows


def _dump_json(payload: dict) -> str:
    """Indented JSON, except one line per record (greppable, diffable)."""
    head = json.dumps({k: v for k, v in payload.items() if k != "records"}, indent=1)
    records = ",\n  ".join(json.dumps(r) for r in payload["records"])
    return f'{head[:-2]},\n "records": [\n  {records}\n ]\n}}\n'


def plot(records, path: str) -> None:
    """Save a bar chart of the speed-ups over NumPy and PyTorch (kernel level and conv)."""
    figure_module = _matplotlib_figure()
    groups = sorted({(r["threads"], r["dtype"]) for r in records})
    fig = figure_module.Figure(figsize=(14, 3.6 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, (threads, dtype) in zip(axes, groups):
        labels, speedups = [], {"numpy": [], "torch": []}
        for (t, d, shape), rows in _rows(records).items():
            if (t, d) != (threads, dtype):
                continue
            for (op, level), by_impl in rows.items():
                cy = by_impl.get("cython")
                if cy is None or level == "op" and op in KERNEL_NAMES:
                    continue
                labels.append(f"{op}\n{shape}")
                for impl in speedups:
                    other = by_impl.get(impl)
                    speedups[impl].append(other["median_s"] / cy["median_s"] if other else np.nan)
        pos = np.arange(len(labels))
        for k, (impl, values) in enumerate(speedups.items()):
            ax.bar(pos + (k - 0.5) * 0.4, values, 0.4, label=f"{impl} time / cython time")
        ax.axhline(1, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(pos, labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("speed-up of fastcnn (log)")
        ax.set_title(f"{threads} thread{'s' if threads != 1 else ''}, {dtype} (kernels: raw, preallocated)")
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


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
    torch = _import_torch() if "torch" in impls else None
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
