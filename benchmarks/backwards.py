"""Backward passes of max_unpool2d and adaptive_avg_pool2d against PyTorch.

``fastcnn bench`` times these ops forward only. Here, on its shapes' pools
(the pool's output unpooled back onto the conv's output; the conv's output
pooled adaptively to 5x5), each backward is timed at one thread: fastcnn's
public backward function, and the ATen call that PyTorch's autograd makes
for it (a gather of the output gradient at the indices;
``_adaptive_avg_pool2d_backward``). Medians of 21 runs each, the
compared calls timed in turn.

The unpool backward is a gather that moves far more bytes than it computes
on, so it is also compared with the time NumPy takes to move the same bytes
in three plain passes (sum the indices, read one value per cache line of
the gradient, fill the result): "floor/fastcnn" near 1 means the kernel
runs at the memory's speed.

    python benchmarks/backwards.py
"""

import time

import numpy as np
import torch

import fastcnn
import fastcnn.functional as F
from fastcnn.bench import cases


def interleaved_medians(*calls, repeats=21):
    """Median seconds of each call, the calls timed in turn (so that a change
    of the machine's load falls on all of them alike)."""
    times = [[] for _ in calls]
    for call in calls:
        call()
    for _ in range(repeats):
        for call, spent in zip(calls, times):
            start = time.perf_counter()
            call()
            spent.append(time.perf_counter() - start)
    return [float(np.median(spent)) for spent in times]


def main():
    torch.set_num_threads(1)
    fastcnn.set_num_threads(1)
    rng = np.random.default_rng(0)
    print("torch/fastcnn at 1 thread (> 1: fastcnn is faster)")
    for name in ("cifar", "resnet", "mnist"):
        shape = cases.SHAPES[name]
        k, s, p = shape.pool_kernel, shape.pool_stride, shape.pool_padding
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal(shape.pool_input).astype(dtype)
            y, indices = F.max_pool2d(x, k, s, p, return_indices=True)
            dout = rng.standard_normal(x.shape).astype(dtype)
            ti, td = torch.from_numpy(indices), torch.from_numpy(dout)
            lines = dout.reshape(-1)[:: 64 // dout.itemsize]
            dx = np.empty(indices.shape, dtype)
            mine, theirs, floor = interleaved_medians(
                lambda: F.max_unpool2d_backward(dout, indices),
                lambda: torch.gather(td.flatten(2), 2, ti.flatten(2)),
                lambda: (indices.sum(), lines.sum(), dx.fill(0)),
            )
            g = rng.standard_normal(x.shape[:2] + (5, 5)).astype(dtype)
            tx, tg = torch.from_numpy(x), torch.from_numpy(g)
            mine_a, theirs_a = interleaved_medians(
                lambda: F.adaptive_avg_pool2d_backward(g, x.shape),
                lambda: torch.ops.aten._adaptive_avg_pool2d_backward(tg, tx),
            )
            print(f"{name:7s} {np.dtype(dtype).name:8s} max_unpool2d_backward {theirs / mine:5.2f} "
                  f"({mine * 1e3:.3f} ms, floor/fastcnn {floor / mine:4.2f})  adaptive_avg_pool2d_backward {theirs_a / mine_a:5.2f} "
                  f"({mine_a * 1e3:.3f} ms)")


if __name__ == "__main__":
    main()
