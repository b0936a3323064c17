"""How close each training-step network runs to this machine's multiply-add peak.

For every network of ``fastcnn bench``'s training step, count the
multiply-adds of one step's convolutions and dense layers (forward, input
gradient except the first layer's, weight gradient), time the step in
fastcnn and in PyTorch (one thread each, interleaved, medians), and time a
large single-threaded float32 GEMM, the rate that a tuned BLAS reaches here.
Printed per network: GFLOP per step, each library's time and achieved
GFLOP/s, and the time the step's products alone would take at the GEMM's
rate (a floor for any im2col or implicit-GEMM convolution; only algorithms
with fewer multiplications, such as Winograd's, go below it).

    python benchmarks/roofline.py [--steps 7]
"""

import argparse
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import fastcnn
from fastcnn import layers as L
from fastcnn.bench import cases
from fastcnn.losses import softmax_cross_entropy
from fastcnn.optim import Adam

from backwards import interleaved_medians  # this folder's script

NETS = ("mnist", "cifar-demo", "cifar-vgg", "lenet5", "cifar-resnet", "cifar-allconv", "cifar-wide")


def _products(model, x):
    """Multiply-adds of one training step's convolutions and dense layers."""
    seen = []
    for layer in model.modules():
        if isinstance(layer, (L.Conv2D, L.Dense)):
            forward = layer._forward

            def spy(x, training, layer=layer, forward=forward):
                out = forward(x, training)
                seen.append((layer, x.shape, out[0].shape))
                return out

            layer._forward = spy
    model.forward(x)
    total = 0
    for i, (layer, xs, ys) in enumerate(seen):
        if isinstance(layer, L.Conv2D):
            kh, kw = layer.kernel_size
            macs = int(np.prod(ys)) * xs[1] // layer.groups * kh * kw
        else:
            macs = xs[0] * layer.params["weight"].size
        total += macs * (2 if i == 0 else 3)  # forward, weight gradient, input gradient
    for layer, _, _ in seen:
        del layer._forward
    return total


def _gemm_rate():
    a = np.random.default_rng(0).standard_normal((1536, 1536)).astype(np.float32)
    with threadpool_limits(1):
        (seconds,) = interleaved_medians(lambda: a @ a, repeats=5)
    return 2 * 1536**3 / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7)
    args = parser.parse_args()
    fastcnn.set_num_threads(1)
    torch.set_num_threads(1)
    rate = _gemm_rate()
    print(f"float32 GEMM 1536^3, one thread: {rate / 1e9:.1f} GFLOP/s")
    print(f"{'network':14s} {'GFLOP':>6s} {'fastcnn ms':>10s} {'GFLOP/s':>7s} "
          f"{'torch ms':>8s} {'GFLOP/s':>7s} {'at GEMM rate ms':>15s}")
    for name in NETS:
        shape = cases.SHAPES[name]
        model, x, labels = cases.demo_network(shape)
        flops = 2 * _products(model, x)
        optimizer = Adam(model, lr=1e-3)

        def step():
            loss, dlogits = softmax_cross_entropy(model.forward(x), labels)
            model.backward(dlogits, input_grad=False)
            optimizer.step()

        net = cases._torch_twin(cases.demo_network(shape)[0], torch)
        net.train()
        topt = torch.optim.Adam(net.parameters(), lr=1e-3)
        tx, tl = torch.from_numpy(x), torch.from_numpy(labels)

        def torch_step():
            topt.zero_grad()
            torch.nn.functional.cross_entropy(net(tx), tl).backward()
            topt.step()

        mine, theirs = interleaved_medians(step, torch_step, repeats=args.steps)
        print(f"{name:14s} {flops / 1e9:6.2f} {mine * 1e3:10.1f} {flops / mine / 1e9:7.1f} "
              f"{theirs * 1e3:8.1f} {flops / theirs / 1e9:7.1f} {flops / rate * 1e3:15.1f}")


if __name__ == "__main__":
    main()
