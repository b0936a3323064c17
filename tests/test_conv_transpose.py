"""conv_transpose2d and ConvTranspose2D: PyTorch parity over odd geometries, both
dtypes and both backends; gradcheck; default init; bad input; inputs untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastcnn
from fastcnn import _backend
from fastcnn import functional as F
from fastcnn.gradcheck import gradcheck
from fastcnn.layers import Conv2D, ConvTranspose2D

BACKENDS = ("cython", "numpy") if _backend.compiled_available() else ("numpy",)

# in, out, groups, H, W, kernel, stride, padding, output_padding, dilation
GEOMETRIES = [
    (4, 6, 1, 5, 7, 3, 1, 0, 0, 1),
    (4, 6, 2, 5, 7, 3, 2, 1, 1, 1),
    (3, 5, 1, 4, 6, (2, 4), (2, 3), (0, 1), (1, 2), 1),
    (6, 3, 3, 5, 5, 3, 2, 2, 1, 2),
    (2, 3, 1, 3, 4, 3, 2, 0, 2, 3),  # output_padding >= stride (allowed by the dilation)
    (2, 3, 1, 3, 4, 3, 1, 3, 0, 2),
    (2, 2, 1, 1, 1, 1, 1, 0, 0, 1),
    (4, 8, 4, 6, 5, 2, 2, 0, 0, 1),  # depthwise-like
    (1, 1, 1, 9, 2, 4, 3, 1, 2, (2, 1)),
    (4, 6, 1, 9, 10, 3, 1, 1, 0, 1),  # Winograd's size: the forward, dx and dweight
]


def data(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_matches_torch(backend, dtype, geometry):
    torch = pytest.importorskip("torch")
    cin, f, groups, h, w, k, stride, padding, output_padding, dilation = geometry
    kh, kw = (k, k) if isinstance(k, int) else k
    x, weight, bias = data((2, cin, h, w), dtype, 0), data((cin, f // groups, kh, kw), dtype, 1), \
        data((f,), dtype, 2)
    args = (stride, padding, output_padding, groups, dilation)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    expected = torch.nn.functional.conv_transpose2d(tx, tw, tb, *args)
    dout = data(tuple(expected.shape), dtype, 3)
    expected.backward(torch.from_numpy(dout))
    tol = dict(rtol=1e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    with fastcnn.use_backend(backend):
        out = F.conv_transpose2d(x, weight, bias, *args)
        dx, dweight, dbias = F.conv_transpose2d_backward(dout, x, weight, *args)
    assert out.dtype == dx.dtype == dweight.dtype == dtype
    np.testing.assert_allclose(out, expected.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    np.testing.assert_allclose(dweight, tw.grad.numpy(), **tol)
    np.testing.assert_allclose(dbias, tb.grad.numpy(), **tol)
    layer = ConvTranspose2D(cin, f, (kh, kw), stride, padding, output_padding, groups,
                            dilation=dilation, dtype=dtype)
    layer.params["weight"][...] = weight
    layer.params["bias"][...] = bias
    np.testing.assert_allclose(layer(x), expected.detach().numpy(), **tol)
    np.testing.assert_allclose(layer.backward(dout), tx.grad.numpy(), **tol)
    np.testing.assert_allclose(layer.grads["weight"], tw.grad.numpy(), **tol)
    assert layer.output_shape(x.shape) == out.shape


def test_is_the_adjoint_of_conv2d():
    """<conv2d(y), x> == <y, conv_transpose2d(x)> for the same weight and geometry."""
    y, weight = data((2, 3, 9, 8), np.float64, 0), data((4, 3, 3, 2), np.float64, 1)
    x = data(F.conv2d(y, weight, stride=2, padding=1).shape, np.float64, 2)
    lhs = np.sum(F.conv2d(y, weight, stride=2, padding=1) * x)
    rhs = np.sum(y * F.conv_transpose2d(x, weight, stride=2, padding=1))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_default_init_as_torch():
    layer = ConvTranspose2D(6, 8, 3, groups=2, rng=0)
    assert layer.params["weight"].shape == (6, 4, 3, 3)
    bound = 1 / math.sqrt(4 * 9)
    for value in layer.params.values():
        assert np.abs(value).max() <= bound and np.abs(value).max() > 0.8 * bound
        assert value.dtype == np.float32
    assert "bias" not in ConvTranspose2D(2, 2, 2, bias=False).params
    assert repr(ConvTranspose2D(2, 4, 2, stride=2)) == \
        "ConvTranspose2D(2, 4, kernel_size=(2, 2), stride=(2, 2))"


@pytest.mark.parametrize("options", [dict(), dict(stride=2, padding=1, output_padding=1),
                                     dict(stride=2, groups=2, dilation=2)], ids=str)
def test_gradcheck(options):
    layer = ConvTranspose2D(2, 4, 3, dtype=np.float64, rng=0, **options)
    assert gradcheck(layer, data((2, 2, 3, 4), np.float64, 5)).passed


def test_undoes_the_size_of_a_strided_conv():
    x = np.zeros((1, 3, 28, 28), np.float32)
    down = Conv2D(3, 8, 3, stride=2, padding=1, rng=0)(x)
    up = ConvTranspose2D(8, 3, 3, stride=2, padding=1, output_padding=1, rng=0)(down)
    assert down.shape == (1, 8, 14, 14) and up.shape == x.shape


X, W = data((2, 4, 5, 5), np.float64, 0), data((4, 3, 3, 3), np.float64, 1)


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.conv_transpose2d(X[0], W), ValueError, r"x\[None\]"),
    (lambda: F.conv_transpose2d(X, W[0]), ValueError, r"weight must be a non-empty 4-D"),
    (lambda: F.conv_transpose2d(X, W[:3]), ValueError, r"weight.shape\[0\] must be x's channels"),
    (lambda: F.conv_transpose2d(X, W, groups=3), ValueError, "groups=3 must divide"),
    (lambda: F.conv_transpose2d(X, W, bias=np.zeros(4)), ValueError, r"bias must have shape \(3,\)"),
    (lambda: F.conv_transpose2d(X, W, output_padding=1), ValueError,
     "output_padding must be smaller than stride or dilation"),
    (lambda: F.conv_transpose2d(X, W, padding=-1), ValueError, "padding"),
    (lambda: F.conv_transpose2d(X, W, padding=4), ValueError, "output would be empty"),
    (lambda: F.conv_transpose2d(X, W, stride=0), ValueError, "stride"),
    (lambda: F.conv_transpose2d(X, W.astype(np.float32)), TypeError,
     "x and weight must have the same dtype"),
    (lambda: F.conv_transpose2d(X.astype(np.int32), W), TypeError, "float32 or float64"),
    (lambda: F.conv_transpose2d_backward(X, X, W), ValueError,
     r"dout must have the conv_transpose2d output shape \(2, 3, 7, 7\)"),
    (lambda: ConvTranspose2D(4, 3, 3, groups=2), ValueError, "divisible by groups=2"),
    (lambda: ConvTranspose2D(4, 4, 3, output_padding=2, stride=2), ValueError,
     "output_padding"),
    (lambda: ConvTranspose2D(3, 4, 3)(X), ValueError, "in_channels=3"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_inputs_are_never_modified():
    x, w, d = X.copy(), W.copy(), data((2, 3, 7, 7), np.float64, 2)
    for a in (x, w, d):
        a.flags.writeable = False
    F.conv_transpose2d(x, w, np.ones(3))
    F.conv_transpose2d_backward(d, x, w)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(w, W)


def test_empty_batch():
    out = F.conv_transpose2d(np.empty((0, 4, 5, 5)), W, stride=2)
    assert out.shape == (0, 3, 11, 11)
    dx, dw, db = F.conv_transpose2d_backward(np.empty((0, 3, 11, 11)), np.empty((0, 4, 5, 5)), W,
                                             stride=2)
    assert dx.shape == (0, 4, 5, 5) and not dw.any() and db.shape == (3,)
