"""Every functional op against ``torch.nn.functional`` (the semantics fastcnn promises).

Values must agree within rtol 1e-5 (float32) / 1e-12 (float64), with an
absolute floor of rtol times the largest magnitude (sums that cancel to ~0
have no meaningful relative error); max-pool indices must agree exactly.
Gradients come from torch's autograd. Each test runs on every available
backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import (
    FLOAT_DTYPES,
    Geometry,
    conv_geometries,
    hsettings,
    make_values,
    pool_geometries,
)

import fastcnn
from fastcnn import _backend
from fastcnn import functional as F

torch = pytest.importorskip("torch", reason="PyTorch is the semantic reference; not installed")
TF = torch.nn.functional
torch.set_num_threads(1)

BACKENDS = ("cython", "numpy") if _backend.compiled_available() else ("numpy",)
backends = pytest.mark.parametrize("backend", BACKENDS)
seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from(FLOAT_DTYPES)
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def T(a, grad=False):
    t = torch.from_numpy(np.array(a, copy=True))
    return t.requires_grad_(True) if grad else t


def N(t):
    return t.detach().numpy()


def assert_close(got, expected):
    """Same dtype and shape; values within the dtype's rtol (NaN equal NaN)."""
    expected = np.asarray(expected)
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    rtol = RTOL[got.dtype]
    finite = expected[np.isfinite(expected)]
    scale = float(np.abs(finite).max()) if finite.size else 0.0
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * max(scale, 1.0))


# ---------------------------------------------------------------------------
# unfold / fold


@backends
@hsettings(80)
@given(g=conv_geometries(), dtype=dtypes, kind=st.sampled_from(["normal", "special"]),
       seed=seeds)
def test_im2col_is_unfold(backend, g, dtype, kind, seed):
    x = make_values(np.random.default_rng(seed), g.shape, dtype, kind)
    kw = g.conv_kwargs()
    with fastcnn.use_backend(backend):
        got = F.im2col(x, **kw)
    expected = N(TF.unfold(T(x), **kw))
    # a copy: bitwise equal, not just close
    np.testing.assert_array_equal(got, expected, strict=True)


@backends
@hsettings(80)
@given(g=conv_geometries(), dtype=dtypes, seed=seeds)
def test_col2im_is_fold(backend, g, dtype, seed):
    cols = make_values(np.random.default_rng(seed), g.cols_shape, dtype, "normal")
    kw = g.conv_kwargs()
    with fastcnn.use_backend(backend):
        got = F.col2im(cols, (g.h, g.w), **kw)
    assert_close(got, N(TF.fold(T(cols), (g.h, g.w), **kw)))


# ---------------------------------------------------------------------------
# conv2d, forward and backward


@st.composite
def conv_cases(draw):
    g = draw(conv_geometries(max_n=2, max_c=3, max_k=4, max_d=2, max_p=2))
    groups = draw(st.sampled_from([1, 1, 2, 3, "depthwise"]))
    if groups == "depthwise":
        groups, cg, f = g.c, 1, g.c * draw(st.integers(1, 2))
    else:
        cg, f = g.c, groups * draw(st.integers(1, 3))
    mode = draw(st.sampled_from(["pair", "int", "same", "valid"]))
    stride, padding, h, w = (g.sh, g.sw), (g.ph, g.pw), g.h, g.w
    if mode == "int":
        padding = g.ph
        w = max(w, g.dw * (g.kw - 1) + 1 - 2 * g.ph)
    elif mode == "same":
        padding, stride = "same", 1
    elif mode == "valid":
        padding = "valid"
        h, w = max(h, g.dh * (g.kh - 1) + 1), max(w, g.dw * (g.kw - 1) + 1)
    return dict(shape=(g.n, cg * groups, h, w), wshape=(f, cg, g.kh, g.kw),
                kwargs=dict(stride=stride, padding=padding, dilation=(g.dh, g.dw), groups=groups))


@backends
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@hsettings(100)
@given(case=conv_cases(), dtype=dtypes, seed=seeds, with_bias=st.booleans(),
       algorithm=st.sampled_from(_backend.CONV_ALGORITHMS))
@example(case=dict(shape=(2, 4, 5, 6), wshape=(4, 1, 2, 4),
                   kwargs=dict(stride=1, padding="same", dilation=(2, 1), groups=4)),
         dtype=np.float64, seed=0, with_bias=True, algorithm="auto")
@example(case=dict(shape=(2, 3, 9, 13), wshape=(7, 3, 3, 3),
                   kwargs=dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=1)),
         dtype=np.float32, seed=1, with_bias=True, algorithm="direct")
def test_conv2d_and_backward_match_torch(backend, case, dtype, seed, with_bias, algorithm):
    rng = np.random.default_rng(seed)
    x = make_values(rng, case["shape"], dtype, "normal")
    w = make_values(rng, case["wshape"], dtype, "normal")
    b = make_values(rng, case["wshape"][:1], dtype, "normal") if with_bias else None
    kw = case["kwargs"]
    tx, tw = T(x, grad=True), T(w, grad=True)
    tb = T(b, grad=True) if with_bias else None
    tout = TF.conv2d(tx, tw, tb, **kw)
    dout = make_values(rng, tuple(tout.shape), dtype, "normal")
    tout.backward(T(dout))
    with fastcnn.use_backend(backend), _backend.use_conv_algorithm(algorithm):
        out = F.conv2d(x, w, b, **kw)
        dx, dw, db = F.conv2d_backward(dout, x, w, **kw)
    assert_close(out, N(tout))
    assert_close(dx, N(tx.grad))
    assert_close(dw, N(tw.grad))
    assert db.shape == (w.shape[0],)
    if with_bias:
        assert_close(db, N(tb.grad))
    else:
        assert_close(db, dout.sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("algorithm", ["gemm", "direct"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_conv2d_with_nan_and_inf_inputs_matches_torch(algorithm, dtype):
    # NaN and infinities in the input: NaN where torch has NaN (a NaN tap,
    # inf - inf), the same infinities elsewhere, with either algorithm.
    # (Both algorithms multiply the padding's zeros too, so an infinite
    # WEIGHT gives NaN at the borders where torch skips the padding.)
    rng = np.random.default_rng(7)
    x = make_values(rng, (3, 2, 11, 9), dtype, "special")
    w = make_values(rng, (5, 2, 3, 3), dtype, "ties")
    b = make_values(rng, (5,), dtype, "ties")
    dout = make_values(rng, (3, 5, 11, 9), dtype, "ties")
    tx, tw, tb = T(x, grad=True), T(w, grad=True), T(b, grad=True)
    tout = TF.conv2d(tx, tw, tb, padding=1)
    tout.backward(T(dout))
    with np.errstate(invalid="ignore"), _backend.use_conv_algorithm(algorithm):
        out = F.conv2d(x, w, b, padding=1)
        _, dw, db = F.conv2d_backward(dout, x, w, padding=1)
    for got, expected in ((out, N(tout)), (dw, N(tw.grad)), (db, N(tb.grad))):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        assert_close(got, expected)


# ---------------------------------------------------------------------------
# max pooling


@backends
@hsettings(120)
@given(g=pool_geometries(), dtype=dtypes,
       kind=st.sampled_from(["normal", "ties", "special", "neg_inf", "nan", "zeros"]),
       seed=seeds)
@example(g=Geometry(1, 2, 7, 7, 3, 3, 2, 2, 1, 1, 1, 1, True), dtype=np.float32, kind="ties",
         seed=0)
@example(g=Geometry(2, 1, 6, 5, 2, 3, 1, 1, 1, 1, 2, 2, True), dtype=np.float64,
         kind="special", seed=1)
def test_max_pool2d_and_backward_match_torch(backend, g, dtype, kind, seed):
    rng = np.random.default_rng(seed)
    x = make_values(rng, g.shape, dtype, kind)
    kw = g.max_pool_kwargs()
    tx = T(x, grad=True)
    tout, tidx = TF.max_pool2d(tx, return_indices=True, **kw)
    dout = make_values(rng, g.pool_shape, dtype, "normal")
    tout.backward(T(dout))
    with fastcnn.use_backend(backend):
        out, idx = F.max_pool2d(x, return_indices=True, **kw)
        dx = F.max_pool2d_backward(dout, idx, x.shape)
    assert_close(out, N(tout))
    np.testing.assert_array_equal(idx, N(tidx), strict=True)
    # the max is a copy of the first maximum: even the sign of a zero matches
    numbers = ~np.isnan(out)
    np.testing.assert_array_equal(np.signbit(out[numbers]), np.signbit(N(tout)[numbers]))
    assert_close(dx, N(tx.grad))


@backends
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_max_pool2d_overlapping_ties_backward_match_torch(backend, dtype):
    # stride < kernel with a constant image: every window ties everywhere and
    # the first cell of each window takes the whole gradient; cells shared by
    # several windows add up.
    x = np.ones((2, 3, 6, 7), dtype)
    dout = np.arange(2 * 3 * 4 * 5, dtype=dtype).reshape(2, 3, 4, 5)
    tx = T(x, grad=True)
    tout, tidx = TF.max_pool2d(tx, 3, stride=1, return_indices=True)
    tout.backward(T(dout))
    with fastcnn.use_backend(backend):
        out, idx = F.max_pool2d(x, 3, stride=1, return_indices=True)
        dx = F.max_pool2d_backward(dout, idx, x.shape)
    np.testing.assert_array_equal(idx, N(tidx), strict=True)
    assert_close(out, N(tout))
    assert_close(dx, N(tx.grad))


# ---------------------------------------------------------------------------
# average pooling


@backends
@hsettings(120)
@given(g=pool_geometries(dilation=False), dtype=dtypes, kind=st.sampled_from(["normal", "nan"]),
       seed=seeds, count_include_pad=st.booleans(),
       divisor_override=st.sampled_from([None, None, 1, 2, 5]))
@example(g=Geometry(1, 1, 4, 1, 3, 1, 2, 1, 1, 0, 1, 1, True), dtype=np.float64, kind="normal",
         seed=0, count_include_pad=True, divisor_override=None)
def test_avg_pool2d_and_backward_match_torch(backend, g, dtype, kind, seed, count_include_pad,
                                            divisor_override):
    rng = np.random.default_rng(seed)
    x = make_values(rng, g.shape, dtype, kind)
    kw = dict(g.avg_pool_kwargs(), count_include_pad=count_include_pad,
              divisor_override=divisor_override)
    tx = T(x, grad=True)
    tout = TF.avg_pool2d(tx, **kw)
    dout = make_values(rng, g.pool_shape, dtype, "normal")
    tout.backward(T(dout))
    with fastcnn.use_backend(backend):
        out = F.avg_pool2d(x, **kw)
        dx = F.avg_pool2d_backward(dout, x.shape, **kw)
    assert_close(out, N(tout))
    assert_close(dx, N(tx.grad))


@backends
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("ceil_mode", [True, False])
def test_avg_pool2d_defaults_match_torch(backend, count_include_pad, ceil_mode):
    x = np.random.default_rng(3).standard_normal((2, 3, 9, 8))
    kw = dict(padding=1, ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    with fastcnn.use_backend(backend):
        out = F.avg_pool2d(x, 3, **kw)  # stride defaults to kernel_size
    assert_close(out, N(TF.avg_pool2d(T(x), 3, **kw)))
