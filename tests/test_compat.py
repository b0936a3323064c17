"""fastcnn.compat.cs231n: the course's signatures, numbers and dtypes, on both backends.

The oracles are loop implementations written here in the course's naive
style, forward and backward, and the course's own code re-implemented in
``tests/originals/cs231n`` (fast_layers, im2col, the im2col_cython
functions, layer_utils and ThreeLayerConvNet); the sandwich layers are also
checked against central differences, as the course's
``eval_numerical_gradient_array`` does (on the NumPy backend only: the
differences call the kernels hundreds of times, and the backends are
bitwise equal, see test_parity.py).
"""

from __future__ import annotations

import inspect

import numpy as np
import originals
import pytest
from originals.cs231n import fast_layers as course_fast
from originals.cs231n import im2col as course_im2col
from originals.cs231n import im2col_cython as course_cython
from originals.cs231n import optim as course_optim
from originals.mlfromscratch import layers as mlfs_layers

import fastcnn
from fastcnn import _backend, reference
from fastcnn.compat import cs231n
from fastcnn.gradcheck import numerical_gradient

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


def test_fast_variants_are_one_implementation():
    for variant in CONV_NAMES[1:]:
        assert getattr(cs231n, f"conv_forward_{variant}") is cs231n.conv_forward_fast
        assert getattr(cs231n, f"conv_backward_{variant}") is cs231n.conv_backward_fast
    for variant in POOL_NAMES[1:]:
        assert getattr(cs231n, f"max_pool_forward_{variant}") is cs231n.max_pool_forward_fast
        assert getattr(cs231n, f"max_pool_backward_{variant}") is cs231n.max_pool_backward_fast


@pytest.mark.parametrize("algorithm, conv_drivers", [
    ("gemm", ["conv2d_forward", "conv2d_backward"]),
    # the direct kernels, and the GEMM driver for dx
    ("direct", ["conv2d_direct_forward", "conv2d_direct_backward", "conv2d_backward"]),
])
def test_naive_variants_run_the_reference_kernels(monkeypatch, algorithm, conv_drivers):
    """Timing naive against fast must not compare fastcnn with itself."""
    calls = []

    def spy(name, kernel):
        def counted(*args):
            calls.append(name)
            return kernel(*args)
        return counted

    for name in ("conv2d_forward", "conv2d_backward", "conv2d_direct_forward",
                 "conv2d_direct_backward", "im2col", "col2im", "max_pool2d",
                 "max_pool2d_backward"):
        monkeypatch.setattr(reference, name, spy(name, getattr(reference, name)))
    backend = fastcnn.get_backend()
    rng = np.random.default_rng(3)
    x, w, b = conv_operands(rng, (2, 3, 6, 6), 4)
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    results = {}
    for variant in ("fast", "naive"):
        calls.clear()
        with _backend.use_conv_algorithm(algorithm):
            out, cache = getattr(cs231n, f"conv_forward_{variant}")(x, w, b,
                                                                    {"stride": 1, "pad": 1})
            grads = getattr(cs231n, f"conv_backward_{variant}")(np.ones_like(out), cache)
        pooled, pool_cache = getattr(cs231n, f"max_pool_forward_{variant}")(out, pool_param)
        dpool = getattr(cs231n, f"max_pool_backward_{variant}")(np.ones_like(pooled), pool_cache)
        results[variant] = [out, *grads, pooled, dpool]
        if variant == "fast" and backend == "cython":
            assert calls == []
    # (the convolution twins unfold and fold through the reference im2col/col2im,
    # the backward once per chunk of samples)
    drivers = [c for c in calls if c not in ("im2col", "col2im")]
    assert drivers == [*conv_drivers, "max_pool2d", "max_pool2d_backward"]
    assert {"im2col", "col2im"} <= set(calls)
    for got, want in zip(results["naive"], results["fast"]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert fastcnn.get_backend() == backend
    assert cs231n.conv_forward_naive is not cs231n.conv_forward_fast
    assert cs231n.conv_forward_naive.__name__ == "conv_forward_naive"


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
    half = [a.astype(np.float16) for a in (x, w, b)]
    with pytest.raises(TypeError, match="float32, float64 or integer"):
        cs231n.conv_forward_fast(*half, {"stride": 1, "pad": 0})


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


# --- The course's own code (tests/originals/cs231n) against the drop-in. ---

CONV = {"stride": 1, "pad": 1}
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}
DTYPES = [np.float32, np.float64, np.int64]


@pytest.mark.parametrize("x_dtype", DTYPES)
@pytest.mark.parametrize("w_dtype", DTYPES[:2])
@pytest.mark.parametrize("b_dtype", DTYPES)
def test_mixed_dtypes_promote_as_the_course(backend, x_dtype, w_dtype, b_dtype):
    rng = np.random.default_rng(7)
    x = (10 * rng.standard_normal((2, 3, 6, 6))).astype(x_dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(w_dtype)
    b = (10 * rng.standard_normal(4)).astype(b_dtype)
    out, cache = cs231n.conv_forward_fast(x, w, b, CONV)
    want, course_cache = course_fast.conv_forward_fast(x, w, b, CONV)
    assert out.dtype == want.dtype and out.shape == want.shape
    # The course may multiply in float32 and add a float64 bias: a float64
    # result of float32 accuracy, where the drop-in computes in float64.
    low = np.float32 in (x_dtype, w_dtype, b_dtype)
    rtol = 1e-5 if low else 1e-12
    np.testing.assert_allclose(out, want, rtol=rtol, atol=rtol)
    for dout_dtype in (np.float32, np.float64):
        dout = rng.standard_normal(out.shape).astype(dout_dtype)
        got = cs231n.conv_backward_fast(dout, cache)
        expected = course_fast.conv_backward_fast(dout, course_cache)
        for g, e in zip(got, expected):
            assert g.dtype == e.dtype and g.shape == e.shape
            tol = 1e-4 if low or dout_dtype == np.float32 else 1e-11
            np.testing.assert_allclose(g, e, rtol=tol, atol=tol)
    pooled, pool_cache = cs231n.max_pool_forward_fast(out.astype(x_dtype), POOL)
    want_pooled, course_pool_cache = course_fast.max_pool_forward_fast(out.astype(x_dtype), POOL)
    if x_dtype == np.int64:  # integer results become float64
        assert pooled.dtype == np.float64
    else:
        assert pooled.dtype == want_pooled.dtype
    np.testing.assert_array_equal(pooled, want_pooled)
    dpool = rng.standard_normal(pooled.shape)
    dx = cs231n.max_pool_backward_fast(dpool, pool_cache)
    assert dx.dtype == pooled.dtype
    if x_dtype != np.int64:  # integer ties: the course splits the gradient
        np.testing.assert_allclose(dx, course_fast.max_pool_backward_fast(dpool, course_pool_cache),
                                   rtol=1e-6)


def test_the_notebooks_filter_demo_takes_an_int_bias(backend):
    # ConvolutionalNetworks.ipynb: w blurs/grays two images, b = np.array([0, 128]).
    x = np.random.default_rng(8).random((2, 3, 20, 20)) * 255
    w = np.zeros((2, 3, 3, 3))
    w[0, :, 1, 1] = [0.3, 0.6, 0.1]
    w[1, 2, 1, 1] = 1
    b = np.array([0, 128])
    out, _ = cs231n.conv_forward_naive(x, w, b, CONV)
    want, _ = course_fast.conv_forward_fast(x, w, b, CONV)
    assert out.dtype == want.dtype == np.float64
    np.testing.assert_allclose(out, want, rtol=1e-12)


IM2COL_CASES = [  # (x shape, field_height, field_width, padding, stride)
    ((2, 3, 7, 7), 3, 3, 1, 1),
    ((2, 3, 7, 7), 3, 3, 1, 2),
    ((3, 2, 6, 8), 2, 2, 0, 2),
    ((1, 2, 7, 5), 1, 3, 1, 2),
    ((2, 1, 4, 4), 4, 4, 0, 1),
]


@pytest.mark.parametrize("shape, fh, fw, padding, stride", IM2COL_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_py_functions_match_the_course(backend, shape, fh, fw, padding, stride, dtype):
    x = np.random.default_rng(9).standard_normal(shape).astype(dtype)
    got = cs231n.get_im2col_indices(shape, fh, fw, padding, stride)
    for g, e in zip(got, course_im2col.get_im2col_indices(shape, fh, fw, padding, stride)):
        assert g.shape == e.shape and g.dtype.kind == "i"
        np.testing.assert_array_equal(g, e)
    cols = cs231n.im2col_indices(x, fh, fw, padding, stride)
    want = course_im2col.im2col_indices(x, fh, fw, padding, stride)
    assert cols.dtype == want.dtype and cols.flags.c_contiguous
    np.testing.assert_array_equal(cols, want)
    k, i, j = got
    n, last = shape[0], i.shape[1] - 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    # The layout itself: position-major, batch-minor columns.
    window = xp[n - 1, k[:, 0], i[:, last], j[:, last]]
    np.testing.assert_array_equal(cols[:, last * n + n - 1], window)
    back = cs231n.col2im_indices(cols, shape, fh, fw, padding, stride)
    want_back = course_im2col.col2im_indices(want, shape, fh, fw, padding, stride)
    assert back.dtype == want_back.dtype and back.shape == shape
    np.testing.assert_allclose(back, want_back, rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_im2col_py_checks_width_against_the_field_width():
    # 5x4 image, 3x2 field, stride 2: the windows tile, but the course's
    # assert compares (W - field_HEIGHT) % stride and rejects it.
    x = np.random.default_rng(10).standard_normal((2, 2, 5, 4))
    with pytest.raises(AssertionError):
        course_im2col.im2col_indices(x, 3, 2, 0, 2)
    cols = cs231n.im2col_indices(x, 3, 2, 0, 2)
    np.testing.assert_array_equal(cols, mlfs_layers.image_to_column(x, (3, 2), 2, "valid"))
    with pytest.raises(ValueError, match="W windows must tile"):
        cs231n.im2col_indices(x, 3, 3, 0, 2)
    with pytest.raises(ValueError, match="H windows must tile"):
        cs231n.col2im_indices(np.zeros((18, 4)), (1, 2, 6, 5), 3, 3, 0, 2)


@pytest.mark.parametrize("shape, fh, fw, padding, stride", IM2COL_CASES[:3] + [
    ((2, 3, 6, 6), 3, 3, 0, 2),  # does not tile: the Cython kernels floor
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_cython_functions_match_the_course(backend, shape, fh, fw, padding, stride, dtype):
    x = np.random.default_rng(11).standard_normal(shape).astype(dtype)
    cols = cs231n.im2col_cython(x, fh, fw, padding, stride)
    want = course_cython.im2col_cython(x, fh, fw, padding, stride)
    assert cols.dtype == want.dtype and cols.flags.c_contiguous
    np.testing.assert_array_equal(cols, want)
    back = cs231n.col2im_cython(cols, *shape, fh, fw, padding, stride)
    want_back = course_cython.col2im_cython(want, *shape, fh, fw, padding, stride)
    assert back.dtype == want_back.dtype
    np.testing.assert_allclose(back, want_back, rtol=1e-6 if dtype == np.float32 else 1e-14)
    # Non-contiguous input, as the course's kernels accept any strides.
    fortran = np.asfortranarray(x)
    np.testing.assert_array_equal(cs231n.im2col_cython(fortran, fh, fw, padding, stride), want)


def test_im2col_cython_types_and_non_square_fields():
    x = np.random.default_rng(12).standard_normal((2, 3, 5, 6))
    for impl in (cs231n, course_cython):
        with pytest.raises(TypeError):
            impl.im2col_cython(x.astype(np.int64), 3, 3, 1, 1)
    # The course's row formula uses field_height twice: for 2x3 fields rows
    # collide and rows 5, 11, 17 stay zero. The drop-in gives the intended
    # layout, im2col.py's.
    course = course_cython.im2col_cython(x, 2, 3, 1, 1)
    assert not course[[5, 11, 17]].any()
    cols = cs231n.im2col_cython(x, 2, 3, 1, 1)
    np.testing.assert_array_equal(cols, course_im2col.im2col_indices(x, 2, 3, 1, 1))
    assert cols[[5, 11, 17]].any()


@pytest.mark.parametrize("pad, stride", [(0, 1), (1, 1), (1, 2), (2, 3)])
def test_col2im_6d_matches_the_course(backend, pad, stride):
    n, c, h, w, hh, ww = 2, 3, 7, 7, 3, 3
    out_h, out_w = (h + 2 * pad - hh) // stride + 1, (w + 2 * pad - ww) // stride + 1
    cols = np.random.default_rng(13).standard_normal((c, hh, ww, n, out_h, out_w))
    got = cs231n.col2im_6d_cython(cols, n, c, h, w, hh, ww, pad, stride)
    want = course_cython.col2im_6d_cython(cols, n, c, h, w, hh, ww, pad, stride)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="cols must have shape"):
        cs231n.col2im_6d_cython(cols[0], n, c, h, w, hh, ww, pad, stride)


def test_star_import_replaces_fast_layers_exactly():
    """`from fastcnn.compat.cs231n import *` in layer_utils.py brings what
    `from .fast_layers import *` brought, and nothing that would replace the
    student's layers.py (the _naive functions)."""
    exported = {name for name in dir(course_fast)
                if not name.startswith("_") and callable(getattr(course_fast, name))}
    assert set(cs231n.__all__) == exported - {"as_strided"}
    assert not any(name.endswith("_naive") for name in cs231n.__all__)


def train_three_layer_convnet(course, steps, x, y):
    """The notebook's training cell, in short: ThreeLayerConvNet (float32
    parameters) on float64 data, the Solver's adam updates; the losses."""
    np.random.seed(0)
    model = course.classifiers.cnn.ThreeLayerConvNet(
        input_dim=x.shape[1:], num_filters=8, filter_size=5, hidden_dim=20, weight_scale=1e-2,
        reg=1e-3)
    assert all(p.dtype == np.float32 for p in model.params.values())
    configs = {name: {"learning_rate": 1e-3} for name in model.params}
    losses = []
    for step in range(steps):
        batch = slice(10 * (step % 2), 10 * (step % 2) + 10)
        loss, grads = model.loss(x[batch], y[batch])
        losses.append(loss)
        for name in model.params:
            model.params[name], configs[name] = course_optim.adam(
                model.params[name], grads[name], configs[name])
    return losses, model.loss(x[:5])


def test_the_notebook_trains_the_same_through_the_one_line_swap(load_copy, global_rng):
    import originals.cs231n.classifiers.cnn  # noqa: F401 (the unchanged course)
    import originals.cs231n as course

    swapped = load_copy("cs231n", "cs231n_swapped", [originals.SWAPS["cs231n"]])
    import cs231n_swapped.classifiers.cnn  # noqa: F401

    cnn_globals = vars(swapped.classifiers.cnn)
    assert cnn_globals["conv_forward_fast"] is cs231n.conv_forward_fast
    assert vars(swapped.layer_utils)["max_pool_forward_fast"] is cs231n.max_pool_forward_fast
    rng = np.random.default_rng(14)
    x = rng.standard_normal((20, 3, 12, 12))  # float64, as get_CIFAR10_data gives
    y = rng.integers(0, 10, 20)
    want_losses, want_scores = train_three_layer_convnet(course, 6, x, y)
    losses, scores = train_three_layer_convnet(swapped, 6, x, y)
    assert want_losses[-1] < want_losses[0]
    np.testing.assert_allclose(losses, want_losses, rtol=1e-9)
    assert scores.dtype == want_scores.dtype
    np.testing.assert_allclose(scores, want_scores, rtol=1e-7, atol=1e-10)


def test_swapping_the_import_in_cnn_py_alone_does_nothing(load_copy):
    edit = ("classifiers/cnn.py", "from ..fast_layers import *  # noqa: F403",
            "from fastcnn.compat.cs231n import *  # noqa: F403")
    swapped = load_copy("cs231n", "cs231n_cnn_only", [edit])
    import cs231n_cnn_only.classifiers.cnn  # noqa: F401

    # The next line, `from ..layer_utils import *`, brings the course's back.
    cnn_globals = vars(swapped.classifiers.cnn)
    assert cnn_globals["conv_forward_fast"] is not cs231n.conv_forward_fast
    assert cnn_globals["conv_relu_pool_forward"].__globals__["conv_forward_fast"] is (
        vars(swapped.fast_layers)["conv_forward_fast"])


@pytest.mark.parametrize("stride", [1, 2])
def test_column_functions_take_empty_batches_and_leave_inputs_alone(stride):
    x = np.random.default_rng(15).standard_normal((3, 2, 5, 5))
    x.flags.writeable = False
    cols = cs231n.im2col_indices(x, 3, 3, 1, stride)
    cols.flags.writeable = False
    back = cs231n.col2im_indices(cols, x.shape, 3, 3, 1, stride)
    np.testing.assert_allclose(back, course_im2col.col2im_indices(cols, x.shape, 3, 3, 1, stride))
    empty = cs231n.im2col_indices(x[:0], 3, 3, 1, stride)
    assert empty.shape == (18, 0) and empty.dtype == x.dtype
    assert cs231n.col2im_indices(empty, (0, 2, 5, 5), 3, 3, 1, stride).shape == (0, 2, 5, 5)
