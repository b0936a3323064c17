"""fastcnn.compat.cs231n: the course's signatures and numbers, on both backends.

The oracles are loop implementations written here in the course's naive
style, forward and backward; the sandwich layers are also checked against
central differences, as the course's ``eval_numerical_gradient_array`` does
(on the NumPy backend only: the differences call the kernels hundreds of
times, and the backends are bitwise equal, see test_parity.py).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import fastcnn
from fastcnn import _backend
from fastcnn.compat import cs231n
from fastcnn.gradcheck import numerical_gradient

BACKENDS = ("numpy", "cython") if _backend.compiled_available() else ("numpy",)


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastcnn.use_backend(request.param):
        yield request.param


def loop_conv(x, w, b, stride, pad):
    n, _, h, wd = x.shape
    f, _, hh, ww = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = 1 + (h + 2 * pad - hh) // stride, 1 + (wd + 2 * pad - ww) // stride
    out = np.zeros((n, f, oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            window = xp[:, :, i * stride : i * stride + hh, j * stride : j * stride + ww]
            out[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out


def loop_conv_backward(dout, x, w, stride, pad):
    _, _, hh, ww = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            rows, cols = slice(i * stride, i * stride + hh), slice(j * stride, j * stride + ww)
            dxp[:, :, rows, cols] += np.tensordot(dout[:, :, i, j], w, axes=(1, 0))
            dw += np.tensordot(dout[:, :, i, j], xp[:, :, rows, cols], axes=(0, 0))
    dx = dxp[:, :, pad : pad + x.shape[2], pad : pad + x.shape[3]]
    return dx, dw, dout.sum(axis=(0, 2, 3))


def loop_max_pool(x, ph, pw, stride, dout=None):
    """Max pooling; with `dout`, the gradient instead (inputs must have no ties)."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, 1 + (h - ph) // stride, 1 + (w - pw) // stride), x.dtype)
    dx = np.zeros_like(x)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            window = x[:, :, i * stride : i * stride + ph, j * stride : j * stride + pw]
            out[:, :, i, j] = window.max(axis=(2, 3))
            if dout is not None:
                mask = window == out[:, :, i, j, None, None]
                dx[:, :, i * stride : i * stride + ph, j * stride : j * stride + pw] += (
                    mask * dout[:, :, i, j, None, None]
                )
    return out if dout is None else dx


def conv_operands(rng, x_shape, filters):
    """Random x, 3x3 w and b for `filters` filters."""
    w_shape = (filters, x_shape[1], 3, 3)
    return rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(filters)


def numeric_grads(forward, arrays, dout):
    """Gradients of sum(forward() * dout) with respect to each array (perturbed in place)."""
    with fastcnn.use_backend("numpy"):
        return [numerical_gradient(lambda: np.sum(forward() * dout), a) for a in arrays]


CONV_NAMES = ["naive", "im2col", "strides", "fast"]
POOL_NAMES = ["naive", "im2col", "reshape", "fast"]


def test_variants_are_one_implementation():
    for variant in CONV_NAMES:
        assert getattr(cs231n, f"conv_forward_{variant}") is cs231n.conv_forward_fast
        assert getattr(cs231n, f"conv_backward_{variant}") is cs231n.conv_backward_fast
    for variant in POOL_NAMES:
        assert getattr(cs231n, f"max_pool_forward_{variant}") is cs231n.max_pool_forward_fast
        assert getattr(cs231n, f"max_pool_backward_{variant}") is cs231n.max_pool_backward_fast


@pytest.mark.parametrize("stride, pad", [(1, 0), (1, 1), (2, 1), (3, 2)])
def test_conv_matches_the_loops(backend, stride, pad):
    rng = np.random.default_rng(stride * 10 + pad)
    x, w, b = conv_operands(rng, (2, 3, 7, 7), 4)
    conv_param = {"stride": stride, "pad": pad}
    out, cache = cs231n.conv_forward_naive(x, w, b, conv_param)
    np.testing.assert_allclose(out, loop_conv(x, w, b, stride, pad), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    grads = cs231n.conv_backward_naive(dout, cache)
    for got, want in zip(grads, loop_conv_backward(dout, x, w, stride, pad)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ph, pw, stride", [(2, 2, 2), (3, 3, 2), (2, 3, 1), (3, 2, 3)])
def test_max_pool_matches_the_loops(backend, ph, pw, stride):
    # A permutation: no ties, so the loop's mask picks exactly one cell per window.
    x = np.random.default_rng(ph * pw + stride).permutation(336).reshape(2, 3, 7, 8) / 10.0
    pool_param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    out, cache = cs231n.max_pool_forward_naive(x, pool_param)
    np.testing.assert_array_equal(out, loop_max_pool(x, ph, pw, stride))
    dout = np.random.default_rng(0).standard_normal(out.shape)
    expected = loop_max_pool(x, ph, pw, stride, dout=dout)
    np.testing.assert_allclose(cs231n.max_pool_backward_naive(dout, cache), expected, rtol=1e-14)


def test_max_pool_ties_go_to_the_first_maximum(backend):
    x = np.ones((1, 1, 2, 2))
    out, cache = cs231n.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    dx = cs231n.max_pool_backward_fast(np.array([[[[5.0]]]]), cache)
    np.testing.assert_array_equal(dx, [[[[5.0, 0], [0, 0]]]])


def test_sandwich_layers_match_their_composition(backend):
    rng = np.random.default_rng(4)
    x, w, b = conv_operands(rng, (1, 2, 6, 6), 3)
    conv_param = {"stride": 1, "pad": 1}
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = cs231n.conv_relu_pool_forward(x, w, b, conv_param, pool_param)
    expected = loop_max_pool(np.maximum(loop_conv(x, w, b, 1, 1), 0), 2, 2, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    grads = cs231n.conv_relu_pool_backward(dout, cache)
    def forward():
        return cs231n.conv_relu_pool_forward(x, w, b, conv_param, pool_param)[0]

    for got, want in zip(grads, numeric_grads(forward, [x, w, b], dout)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)

    out, cache = cs231n.conv_relu_forward(x, w, b, conv_param)
    np.testing.assert_allclose(out, np.maximum(loop_conv(x, w, b, 1, 1), 0), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    grads = cs231n.conv_relu_backward(dout, cache)
    expected = numeric_grads(
        lambda: cs231n.conv_relu_forward(x, w, b, conv_param)[0], [x, w, b], dout
    )
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


def test_signatures_are_the_courses():
    params = lambda f: list(inspect.signature(f).parameters)  # noqa: E731
    for variant in CONV_NAMES:
        assert params(getattr(cs231n, f"conv_forward_{variant}")) == ["x", "w", "b", "conv_param"]
        assert params(getattr(cs231n, f"conv_backward_{variant}")) == ["dout", "cache"]
    for variant in POOL_NAMES:
        assert params(getattr(cs231n, f"max_pool_forward_{variant}")) == ["x", "pool_param"]
        assert params(getattr(cs231n, f"max_pool_backward_{variant}")) == ["dout", "cache"]
    assert params(cs231n.conv_relu_pool_forward) == ["x", "w", "b", "conv_param", "pool_param"]
    assert params(cs231n.conv_relu_backward) == ["dout", "cache"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype):
    x, w, b = np.ones((1, 2, 4, 4), dtype), np.ones((3, 2, 3, 3), dtype), np.zeros(3, dtype)
    out, cache = cs231n.conv_relu_pool_forward(
        x, w, b, {"stride": 1, "pad": 1}, {"pool_height": 2, "pool_width": 2, "stride": 2}
    )
    grads = cs231n.conv_relu_pool_backward(np.ones_like(out), cache)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    with pytest.raises(TypeError, match="dtype"):
        cs231n.conv_forward_fast(x, w.astype(np.float16), b, {"stride": 1, "pad": 0})


def test_inputs_are_not_modified():
    rng = np.random.default_rng(5)
    x, w, b = conv_operands(rng, (2, 3, 6, 6), 2)
    saved = [a.copy() for a in (x, w, b)]
    for a in (x, w, b):
        a.flags.writeable = False
    out, cache = cs231n.conv_relu_pool_forward(
        x, w, b, {"stride": 1, "pad": 1}, {"pool_height": 2, "pool_width": 2, "stride": 2}
    )
    dout = np.ones_like(out)
    dout.flags.writeable = False
    cs231n.conv_relu_pool_backward(dout, cache)
    for a, s in zip((x, w, b), saved):
        np.testing.assert_array_equal(a, s)


@pytest.mark.parametrize("call, match", [
    (lambda x, w, b: cs231n.conv_forward_fast(x, w, b, {"stride": 1}), "'pad'"),
    (lambda x, w, b: cs231n.conv_forward_fast(x, w, b, None), "conv_param must be a dict"),
    (lambda x, w, b: cs231n.max_pool_forward_fast(x, {"pool_height": 2, "stride": 2}),
     "'pool_width'"),
    (lambda x, w, b: cs231n.conv_forward_fast(x, w, b, {"stride": 0, "pad": 0}), "stride"),
    (lambda x, w, b: cs231n.conv_forward_fast(x[0], w, b, {"stride": 1, "pad": 0}), r"x\[None\]"),
])
def test_bad_parameters_are_clear_errors(call, match):
    x, w, b = np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3)), np.zeros(3)
    with pytest.raises(ValueError, match=match):
        call(x, w, b)
