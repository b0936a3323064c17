"""What ``fastcnn bench`` times: the shapes, the benchmarks and how each is built.

Every builder gets the shape, dtype, level, implementations and thread
count, and returns a :class:`_Bench` of zero-argument callables, one per
implementation, whose results are compared once after the warm-up."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from .. import functional as fn
from .._backend import pair_of, use_backend
from .._validation import conv_window, pool_window

__all__ = [
    "IMPLEMENTATIONS",
    "Shape",
    "SHAPES",
    "LARGE_SHAPE",
    "OPS",
    "BUILDERS",
    "levels",
    "import_torch",
    "demo_network",
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
    #: The network of the training step: "demo" (``fastcnn demo``'s) or one
    #: of :data:`NETWORKS`.
    net: str = "demo"

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
        # The demo's default data (scikit-learn digits, 8x8): its first layer,
        # the small planes of small images, and its training step.
        Shape("digits", (128, 1, 8, 8), 16, 3, 1, 2, 2, 0, train=True),
        # Training steps only: the demo network on CIFAR-sized images, and a
        # VGG-style network (two blocks of two 3x3 convolutions).
        Shape("cifar-demo", (128, 3, 32, 32), train=True),
        Shape("cifar-vgg", (64, 3, 32, 32), train=True, net="vgg"),
        # Other layer types and sizes: LeNet-5 (5x5 convolutions, tanh,
        # average pools, three dense layers), the demo's ResNet (strided and
        # 1x1 convolutions, residual blocks), an all-convolutional network
        # (strided 3x3 convolutions, LeakyReLU) and a wide one (5x5
        # convolutions, a 4096 x 256 dense layer, dropout).
        Shape("lenet5", (128, 1, 32, 32), train=True, net="lenet5"),
        Shape("cifar-resnet", (64, 3, 32, 32), train=True, net="resnet"),
        Shape("cifar-allconv", (64, 3, 32, 32), train=True, net="allconv"),
        Shape("cifar-wide", (64, 3, 32, 32), train=True, net="wide"),
    )
}
#: The shape whose NumPy twin ``--quick`` skips.
LARGE_SHAPE = "resnet"

#: Benchmarks: the registry's kernels, then the composite ones.
#: The memory-bound kernels, timed raw and as ops (the GEMM drivers are
#: timed in conv2d and the training step).
KERNEL_NAMES = ("im2col", "col2im", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
                "avg_pool2d_backward", "max_unpool2d")
OPS = (*KERNEL_NAMES, "conv2d", "conv2d_fwd_bwd", "conv_transpose2d", "adaptive_avg_pool2d",
       "adaptive_max_pool2d", "interpolate", "train_step", "copy")

#: Output size of the adaptive pools (that of VGG's and AlexNet's classifier head).
ADAPTIVE_OUTPUT = 7


class _Bench(NamedTuple):
    """What to time: a zero-argument callable per implementation."""

    fns: dict[str, Callable[[], Any]]
    nbytes: int | None = None  # bytes read + written, each array once
    flops: float | None = None


def import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


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


def _functional_fns(impls, torch, name: str, arrays, **kwargs) -> dict:
    """fastcnn's and PyTorch's functional op `name` on the same arrays and
    keywords (PyTorch's without autograd)."""
    ours = getattr(fn, name)
    fns = _fastcnn_op_fns(impls, lambda: ours(*arrays, **kwargs))
    if torch is not None and "torch" in impls:
        tensors = [torch.from_numpy(a) for a in arrays]
        theirs = getattr(torch.nn.functional, name)

        def torch_call():
            with torch.no_grad():
                return theirs(*tensors, **kwargs)

        fns["torch"] = torch_call
    return fns


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


def _build_max_unpool2d(shape, dtype, level, impls, threads, torch):
    """max_pool2d 2x2's output put back where its indices say, as a decoder
    (SegNet-style) unpools the pools' input."""
    x = _pool_inputs(shape, dtype)
    pooled, indices = fn.max_pool2d(x, 2, return_indices=True)
    size = x.shape[2:]
    nbytes = pooled.nbytes + indices.nbytes + x.nbytes
    if level == "kernel":
        fns = _kernel_fns(
            "max_unpool2d", impls, threads, lambda: (pooled, indices, np.empty_like(x))
        )
        if torch is not None and "torch" in impls:
            tp, tidx = torch.from_numpy(pooled), torch.from_numpy(indices)
            tout = torch.from_numpy(np.empty_like(x))
            op = torch.ops.aten.max_unpool2d.out
            fns["torch"] = lambda: op(tp, tidx, list(size), out=tout)
    else:
        fns = _fastcnn_op_fns(impls, lambda: fn.max_unpool2d(pooled, indices, 2, output_size=size))
        if torch is not None and "torch" in impls:
            tp, tidx = torch.from_numpy(pooled), torch.from_numpy(indices)
            unpool = torch.nn.functional.max_unpool2d
            fns["torch"] = lambda: unpool(tp, tidx, 2, output_size=size)
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
    fns = _functional_fns(impls, torch, "conv2d", (x, weight, bias), padding=shape.conv_padding)
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


def _build_conv_transpose2d(shape, dtype, level, impls, threads, torch):
    """The transposed convolution from the conv's output back to its input
    (the conv's input gradient, as a decoder layer computes it)."""
    _, weight, _, dout, flops = _conv_operands(shape, dtype)
    # conv2d's (F, C, k, k) weight is the (C_in, C_out, k, k) of its adjoint.
    bias = _random((shape.x[1],), np.dtype(dtype).name, 2)
    fns = _functional_fns(impls, torch, "conv_transpose2d", (dout, weight, bias),
                          padding=shape.conv_padding)
    return _Bench(fns, flops=flops)


def _build_adaptive_pool(kind, shape, dtype, level, impls, threads, torch):
    x = _pool_inputs(shape, dtype)
    size = ADAPTIVE_OUTPUT
    ours = getattr(fn, f"adaptive_{kind}_pool2d")
    nbytes = x.nbytes + math.prod(x.shape[:2]) * size * size * x.itemsize
    fns = _fastcnn_op_fns(impls, lambda: ours(x, size))
    if torch is not None and "torch" in impls:
        tx = torch.from_numpy(x)
        theirs = getattr(torch.nn.functional, f"adaptive_{kind}_pool2d")
        fns["torch"] = lambda: theirs(tx, size)
    return _Bench(fns, nbytes)


def _build_interpolate(shape, dtype, level, impls, threads, torch):
    """Bilinear upsampling by 2 of the pools' input, as a decoder or FPN does."""
    x = _pool_inputs(shape, dtype)
    nbytes = 5 * x.nbytes
    fns = _fastcnn_op_fns(impls, lambda: fn.interpolate(x, scale_factor=2, mode="bilinear"))
    if torch is not None and "torch" in impls:
        tx = torch.from_numpy(x)
        interpolate = torch.nn.functional.interpolate
        fns["torch"] = lambda: interpolate(tx, scale_factor=2, mode="bilinear")
    return _Bench(fns, nbytes)


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


def _torch_twin(layer, torch):
    """The same network (a layer, Sequential or Residual) in ``torch.nn``,
    with the same initial weights."""
    from .. import layers as L
    from ..model import Sequential

    nn = torch.nn
    if isinstance(layer, Sequential):
        return nn.Sequential(*(_torch_twin(child, torch) for child in layer.layers))
    if isinstance(layer, L.Residual):
        body = _torch_twin(layer.body, torch)
        shortcut = nn.Identity() if layer.shortcut is None else _torch_twin(layer.shortcut, torch)

        class Residual(nn.Module):
            def __init__(self):
                super().__init__()
                self.body, self.shortcut = body, shortcut

            def forward(self, x):
                return self.body(x) + self.shortcut(x)

        return Residual()
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
    elif isinstance(layer, L.LeakyReLU):
        m = nn.LeakyReLU(layer.negative_slope)
    elif isinstance(layer, L.Tanh):
        m = nn.Tanh()
    elif isinstance(layer, L.Flatten):
        m = nn.Flatten()
    elif isinstance(layer, L.GlobalAvgPool2D):
        m = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    elif isinstance(layer, L.Dropout):
        m = nn.Dropout(layer.p)
    else:
        raise NotImplementedError(f"no torch.nn twin for {type(layer).__name__}")
    with torch.no_grad():
        for name, value in layer.params.items():
            getattr(m, name).copy_(torch.from_numpy(value))
    return m


def _vgg(channels: int, rng):
    """A VGG-style network: two blocks of [3x3 conv - BatchNorm - ReLU] x 2
    (32, then 64 channels), each followed by a 2x2 max-pool, then global
    average pooling, Dropout(0.5) and a dense layer to 10 classes."""
    from .. import layers as L

    stack = []
    for width in (32, 64):
        for _ in range(2):
            stack += [L.Conv2D(channels, width, 3, padding=1, rng=rng), L.BatchNorm2D(width),
                      L.ReLU()]
            channels = width
        stack.append(L.MaxPool2D(2))
    return stack + [L.GlobalAvgPool2D(), L.Dropout(0.5, rng=rng), L.Dense(channels, 10, rng=rng)]


def _lenet5(channels: int, rng):
    from .. import layers as L

    return [L.Conv2D(channels, 6, 5, rng=rng), L.Tanh(), L.AvgPool2D(2),
            L.Conv2D(6, 16, 5, rng=rng), L.Tanh(), L.AvgPool2D(2), L.Flatten(),
            L.Dense(400, 120, rng=rng), L.Tanh(), L.Dense(120, 84, rng=rng), L.Tanh(),
            L.Dense(84, 10, rng=rng)]


def _allconv(channels: int, rng):
    from .. import layers as L

    return [L.Conv2D(channels, 32, 3, padding=1, rng=rng), L.LeakyReLU(0.1),
            L.Conv2D(32, 64, 3, stride=2, padding=1, rng=rng), L.LeakyReLU(0.1),
            L.Conv2D(64, 128, 3, stride=2, padding=1, rng=rng), L.LeakyReLU(0.1),
            L.Conv2D(128, 10, 1, rng=rng), L.GlobalAvgPool2D()]


def _wide(channels: int, rng):
    from .. import layers as L

    return [L.Conv2D(channels, 32, 5, padding=2, rng=rng), L.ReLU(), L.MaxPool2D(2),
            L.Conv2D(32, 64, 5, padding=2, rng=rng), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
            L.Dropout(0.5, rng=rng), L.Dense(64 * 8 * 8, 256, rng=rng), L.ReLU(),
            L.Dense(256, 10, rng=rng)]


def _resnet(channels: int, rng):
    from ..demo import build_resnet

    return build_resnet(channels, 10, rng).layers


#: The training step's networks besides the demo's: builders of their layers
#: from the input channels and a random generator (32x32 inputs).
NETWORKS = {"vgg": _vgg,
            "lenet5": _lenet5, "resnet": _resnet, "allconv": _allconv, "wide": _wide}


def demo_network(shape: Shape):
    """``(model, x, labels)`` of the training step on `shape`: a fresh network
    of kind ``shape.net`` (same initial weights every time), float32 inputs,
    10 classes."""
    from ..demo import build_model
    from ..model import Sequential

    if shape.net == "demo":
        model = build_model(shape.x[1], shape.x[2:], 10, rng=0)
    else:
        model = Sequential(NETWORKS[shape.net](shape.x[1], np.random.default_rng(0)))
    labels = np.random.default_rng(3).integers(0, 10, shape.x[0])
    return model, _inputs(shape, np.float32), labels


def _build_train_step(shape, dtype, level, impls, threads, torch):
    """forward + softmax cross-entropy + backward + Adam step on the shape's network."""
    from ..losses import softmax_cross_entropy
    from ..optim import Adam

    lr = 1e-3
    fns = {}

    # The libraries draw different dropout masks: such a network's losses
    # are not compared (an empty result agrees with any other).
    def comparable(loss):
        return () if shape.net in ("vgg", "wide") else np.float64(loss)

    for name in ("cython", "numpy"):
        if name not in impls:
            continue
        model, x, labels = demo_network(shape)
        optimizer = Adam(model, lr=lr)

        def step(model=model, optimizer=optimizer, x=x, labels=labels):
            loss, dlogits = softmax_cross_entropy(model.forward(x), labels)
            model.backward(dlogits, input_grad=False)
            optimizer.step()
            return comparable(loss)

        fns[name] = _with_backend(name, step)
    if torch is not None and "torch" in impls:
        model, x, labels = demo_network(shape)
        net = _torch_twin(model, torch)
        net.train()
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        tx, ty = torch.from_numpy(x), torch.from_numpy(labels)
        cross_entropy = torch.nn.functional.cross_entropy

        def torch_step():
            optimizer.zero_grad(set_to_none=True)
            loss = cross_entropy(net(tx), ty)
            loss.backward()
            optimizer.step()
            return comparable(loss.item())

        fns["torch"] = torch_step
    return _Bench(fns)


BUILDERS = {
    "im2col": _build_im2col,
    "col2im": _build_col2im,
    "max_pool2d": _build_max_pool2d,
    "max_pool2d_backward": _build_max_pool2d_backward,
    "avg_pool2d": _build_avg_pool2d,
    "avg_pool2d_backward": _build_avg_pool2d_backward,
    "max_unpool2d": _build_max_unpool2d,
    "conv2d": _build_conv2d,
    "conv2d_fwd_bwd": _build_conv2d_fwd_bwd,
    "conv_transpose2d": _build_conv_transpose2d,
    "adaptive_avg_pool2d": functools.partial(_build_adaptive_pool, "avg"),
    "adaptive_max_pool2d": functools.partial(_build_adaptive_pool, "max"),
    "interpolate": _build_interpolate,
    "train_step": _build_train_step,
    "copy": _build_copy,
}


def levels(op: str) -> tuple[str, ...]:
    if op in KERNEL_NAMES:
        return ("kernel", "op")
    if op == "copy":
        return ("baseline",)
    return ("op",)


def _applies(op: str, shape: Shape, dtype) -> bool:
    if op == "train_step":
        return shape.train and np.dtype(dtype) == np.float32
    return bool(shape.filters)
