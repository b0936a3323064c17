"""The NumPy twin (and, as cheap extra, the compiled set) against independent oracles.

* small cases computed by hand (the bugs of seeds/000-003: ties, NaN,
  overlapping windows, pool sizes other than 2, col2im summing overlaps);
* the adjoint identity <im2col(x), c> == <x, col2im(c)>;
* conv2d against scipy.signal.correlate;
* conv2d_backward against central finite differences;
* a batch of 0 gives empty results of the right shape for every op.

Every test runs the public API under ``use_backend(backend)`` for each
available backend; "numpy" is the reference kernel set.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    Geometry,
    conv_geometries,
    conv_out,
    hsettings,
    make_values,
    pool_geometries,
)

import fastcnn
from fastcnn import _backend
from fastcnn import functional as F
from fastcnn.gradcheck import numerical_gradient

BACKENDS = ("numpy", "cython") if _backend.compiled_available() else ("numpy",)
backends = pytest.mark.parametrize("backend", BACKENDS)
seeds = st.integers(0, 2**32 - 1)


def grid(h, w, dtype=np.float64):
    """1, 2, ..., h*w as a (1, 1, h, w) array."""
    return np.arange(1, h * w + 1, dtype=dtype).reshape(1, 1, h, w)


def plane(rows, dtype=np.float64):
    return np.array(rows, dtype=dtype)[None, None]


# ---------------------------------------------------------------------------
# Hand-computed max pooling.


@backends
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_4x4_by_2x2(backend, dtype):
    x = grid(4, 4, dtype) - 1  # values 0..15, equal to their flat index
    with fastcnn.use_backend(backend):
        out, idx = F.max_pool2d(x, 2, return_indices=True)
        dx = F.max_pool2d_backward(plane([[1, 2], [3, 4]], dtype), idx, x.shape)
    np.testing.assert_array_equal(out, plane([[5, 7], [13, 15]], dtype), strict=True)
    np.testing.assert_array_equal(idx, plane([[5, 7], [13, 15]], np.int64), strict=True)
    expected = np.zeros((4, 4), dtype)
    expected[1, 1], expected[1, 3], expected[3, 1], expected[3, 3] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx, expected[None, None], strict=True)


@backends
def test_max_pool_ties_go_to_first_max(backend):
    x = plane([[3, 1, 0, 5],
               [3, 3, 5, 5],
               [7, 7, 2, 2],
               [7, 7, 2, 2]])
    with fastcnn.use_backend(backend):
        out, idx = F.max_pool2d(x, 2, return_indices=True)
        # the buggy mask of seeds/000 would route dout to every tied cell
        dx = F.max_pool2d_backward(np.ones_like(out), idx, x.shape)
    np.testing.assert_array_equal(out, plane([[3, 5], [7, 2]]))
    np.testing.assert_array_equal(idx, plane([[0, 3], [8, 10]], np.int64))
    np.testing.assert_array_equal(dx.sum(), 4.0)
    assert dx[0, 0, 0, 0] == 1 and dx[0, 0, 1, 0] == 0 and dx[0, 0, 1, 1] == 0


@backends
def test_max_pool_ties_between_signed_zeros_keep_the_first(backend):
    x = plane([[-0.0, 0.0, 0.0, -0.0]])
    with fastcnn.use_backend(backend):
        out, idx = F.max_pool2d(x, (1, 2), return_indices=True)
    np.testing.assert_array_equal(idx, plane([[0, 2]], np.int64))
    # the value is the input at the index: -0.0 first, then +0.0
    np.testing.assert_array_equal(np.signbit(out), plane([[True, False]], bool))


@backends
def test_max_pool_nan_propagates_with_last_nan_index(backend):
    nan = np.nan
    x = plane([[nan, 9, 1, 0],
               [nan, 0, 1, nan],
               [0, nan, 2, 2],
               [nan, 100, 3, 1]])
    with fastcnn.use_backend(backend):
        out, idx = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(out, plane([[nan, nan], [nan, 3]]))
    # window (0,0): NaNs at 0 and 4 -> last is 4; window (0,1): NaN at 7;
    # window (1,0): NaNs at 9 and 12 (100 after them does not win) -> 12.
    np.testing.assert_array_equal(idx, plane([[4, 7], [12, 14]], np.int64))


@backends
def test_max_pool_padding_never_wins(backend):
    x = np.full((1, 1, 3, 3), -5.0)
    x[0, 0, 2, 2] = -4.0
    with fastcnn.use_backend(backend):
        out, idx = F.max_pool2d(x, 3, stride=1, padding=1, return_indices=True)
    # padded cells act as -inf, not 0
    np.testing.assert_array_equal(out, plane([[-5, -5, -5], [-5, -4, -4], [-5, -4, -4]]))
    np.testing.assert_array_equal(idx, plane([[0, 0, 1], [0, 8, 8], [3, 8, 8]], np.int64))


@backends
def test_max_pool_all_neg_inf_window_indexes_first_real_cell(backend):
    x = np.full((1, 1, 3, 3), -np.inf)
    with fastcnn.use_backend(backend):
        out, idx = F.max_pool2d(x, 2, stride=2, padding=1, return_indices=True)
    assert np.all(out == -np.inf)
    # windows start at -1 and 1 along each axis: first real cells are 0, 1 / 1, 2
    np.testing.assert_array_equal(idx, plane([[0, 1], [3, 4]], np.int64))


@backends
def test_max_pool_size3_stride2_overlapping_backward(backend):
    # Pool size 3, stride 2: windows share row/column 2. One large value at the
    # centre is the max of all four windows, so its gradient is the SUM.
    x = grid(5, 5)
    x[0, 0, 2, 2] = 100.0
    dout = plane([[1, 2], [3, 4]])
    with fastcnn.use_backend(backend):
        out, idx = F.max_pool2d(x, 3, stride=2, return_indices=True)
        dx = F.max_pool2d_backward(dout, idx, x.shape)
    np.testing.assert_array_equal(out, plane([[100, 100], [100, 100]]))
    np.testing.assert_array_equal(idx, np.full((1, 1, 2, 2), 12, np.int64))
    expected = np.zeros((1, 1, 5, 5))
    expected[0, 0, 2, 2] = 10.0
    np.testing.assert_array_equal(dx, expected)
    # and without the outlier: maxima at the windows' bottom-right corners
    with fastcnn.use_backend(backend):
        out, idx = F.max_pool2d(grid(5, 5), 3, stride=2, return_indices=True)
    np.testing.assert_array_equal(out, plane([[13, 15], [23, 25]]))
    np.testing.assert_array_equal(idx, plane([[12, 14], [22, 24]], np.int64))


@backends
def test_max_pool_overlapping_stride1_backward_adds(backend):
    x = plane([[1, 2, 3], [4, 9, 5], [6, 7, 8]])
    with fastcnn.use_backend(backend):
        out, idx = F.max_pool2d(x, 2, stride=1, return_indices=True)
        dx = F.max_pool2d_backward(plane([[1, 2], [3, 4]]), idx, x.shape)
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), 9.0))
    np.testing.assert_array_equal(idx, np.full((1, 1, 2, 2), 4, np.int64))
    np.testing.assert_array_equal(dx, plane([[0, 0, 0], [0, 10, 0], [0, 0, 0]]))


@backends
def test_max_pool_dilation(backend):
    x = grid(5, 5) - 1
    with fastcnn.use_backend(backend):
        out, idx = F.max_pool2d(x, 2, stride=1, dilation=2, return_indices=True)
    np.testing.assert_array_equal(out, x[:, :, 2:, 2:])
    np.testing.assert_array_equal(idx, x[:, :, 2:, 2:].astype(np.int64))


@backends
def test_max_pool_ceil_mode_partial_window(backend):
    x = grid(5, 5) - 1
    with fastcnn.use_backend(backend):
        floor_out = F.max_pool2d(x, 2)
        out, idx = F.max_pool2d(x, 2, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(floor_out, plane([[6, 8], [16, 18]]))
    np.testing.assert_array_equal(out, plane([[6, 8, 9], [16, 18, 19], [21, 23, 24]]))
    np.testing.assert_array_equal(idx, out.astype(np.int64))


# ---------------------------------------------------------------------------
# Hand-computed average pooling.


@backends
def test_avg_pool_count_include_pad_and_override(backend):
    x = np.ones((1, 1, 2, 2))
    with fastcnn.use_backend(backend):
        incl = F.avg_pool2d(x, 3, stride=1, padding=1)
        excl = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        over = F.avg_pool2d(x, 2, divisor_override=3)
    np.testing.assert_allclose(incl, np.full((1, 1, 2, 2), 4 / 9), rtol=1e-15)
    np.testing.assert_array_equal(excl, np.ones((1, 1, 2, 2)))
    np.testing.assert_allclose(over, np.full((1, 1, 1, 1), 4 / 3), rtol=1e-15)


@backends
def test_avg_pool_ceil_mode_overhang_not_counted(backend):
    # Column x = [1, 2, 3, 4], kernel (3, 1), stride (2, 1), padding (1, 0),
    # ceil mode: windows [-1, 1], [1, 3], [3, 5]. Cell 5 lies beyond the
    # padding (H + p = 5), so it is not in the count_include_pad divisor.
    x = np.arange(1.0, 5.0).reshape(1, 1, 4, 1)
    kw = dict(kernel_size=(3, 1), stride=(2, 1), padding=(1, 0), ceil_mode=True)
    with fastcnn.use_backend(backend):
        incl = F.avg_pool2d(x, **kw)
        excl = F.avg_pool2d(x, count_include_pad=False, **kw)
        dincl = F.avg_pool2d_backward(np.ones_like(incl), x.shape, **kw)
        dexcl = F.avg_pool2d_backward(np.ones_like(excl), x.shape, count_include_pad=False, **kw)
    np.testing.assert_allclose(incl.ravel(), [3 / 3, 9 / 3, 4 / 2], rtol=1e-15)
    np.testing.assert_allclose(excl.ravel(), [3 / 2, 9 / 3, 4 / 1], rtol=1e-15)
    np.testing.assert_allclose(dincl.ravel(), [1 / 3, 1 / 3 + 1 / 3, 1 / 3, 1 / 3 + 1 / 2],
                               rtol=1e-15)
    np.testing.assert_allclose(dexcl.ravel(), [1 / 2, 1 / 2 + 1 / 3, 1 / 3, 1 / 3 + 1],
                               rtol=1e-15)


@backends
def test_avg_pool_backward_spreads_evenly(backend):
    with fastcnn.use_backend(backend):
        dx = F.avg_pool2d_backward(np.ones((1, 1, 2, 2)), (1, 1, 3, 3), 2, stride=1)
    np.testing.assert_array_equal(dx, plane([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4)


# ---------------------------------------------------------------------------
# im2col / col2im by hand (seeds/003).


@backends
def test_im2col_row_and_column_order(backend):
    x = np.concatenate([grid(3, 3), 10 * grid(3, 3)], axis=1)  # (1, 2, 3, 3)
    with fastcnn.use_backend(backend):
        cols = F.im2col(x, 2)
    one = np.array([[1, 2, 4, 5], [2, 3, 5, 6], [4, 5, 7, 8], [5, 6, 8, 9]], dtype=float)
    np.testing.assert_array_equal(cols, np.concatenate([one, 10 * one])[None])


@backends
def test_im2col_padding_is_zero_and_rectangular(backend):
    x = grid(2, 3)
    with fastcnn.use_backend(backend):
        cols = F.im2col(x, (1, 2), stride=(1, 2), padding=(0, 1))
    # windows start at columns -1 and 1 on each row
    np.testing.assert_array_equal(cols, np.array([[[0, 2, 0, 5], [1, 3, 4, 6]]], dtype=float))


@backends
def test_col2im_of_ones_counts_window_coverage(backend):
    x = grid(3, 3)
    with fastcnn.use_backend(backend):
        cols = F.im2col(x, 3, padding=1)
        coverage = F.col2im(np.ones_like(cols), 3, 3, padding=1)
        roundtrip = F.col2im(cols, (3, 3), 3, padding=1)
        strided = F.col2im(np.ones((1, 4, 4)), (4, 4), 2, stride=2)
        overlap = F.col2im(np.ones((1, 9, 4)), (5, 5), 3, stride=2)
    np.testing.assert_array_equal(coverage, plane([[4, 6, 4], [6, 9, 6], [4, 6, 4]]))
    np.testing.assert_array_equal(roundtrip, plane([[4, 12, 12], [24, 45, 36], [28, 48, 36]]))
    np.testing.assert_array_equal(strided, np.ones((1, 1, 4, 4)))
    expected = np.ones((5, 5))
    expected[2, :] *= 2
    expected[:, 2] *= 2
    np.testing.assert_array_equal(overlap, expected[None, None])


# ---------------------------------------------------------------------------
# The adjoint identity.


@backends
@hsettings(100)
@given(g=conv_geometries(), seed=seeds)
def test_col2im_is_the_adjoint_of_im2col(backend, g, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g.shape)
    c = rng.standard_normal(g.cols_shape)
    with fastcnn.use_backend(backend):
        lhs = np.vdot(F.im2col(x, **g.conv_kwargs()), c)
        rhs = np.vdot(x, F.col2im(c, (g.h, g.w), **g.conv_kwargs()))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12 * np.sqrt(c.size))


# ---------------------------------------------------------------------------
# conv2d against scipy.signal.correlate.


def scipy_conv2d(x, w, b, stride, padding, dilation, groups):
    """conv2d from scipy.signal.correlate: pad, dilate the kernel, correlate
    each group's channels jointly (mode 'valid'), subsample by the stride."""
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    if padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        pads = ((th // 2, th - th // 2), (tw // 2, tw - tw // 2))
    elif padding == "valid":
        pads = ((0, 0), (0, 0))
    else:
        pads = ((padding[0],) * 2, (padding[1],) * 2)
    xp = np.pad(x, ((0, 0), (0, 0)) + pads)
    wdil = np.zeros((f, cg, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    wdil[:, :, ::dh, ::dw] = w
    fg = f // groups
    rows = []
    for i in range(n):
        maps = []
        for j in range(f):
            grp = j // fg
            full = scipy.signal.correlate(xp[i, grp * cg:(grp + 1) * cg], wdil[j], mode="valid",
                                          method="direct")
            maps.append(full[0, ::sh, ::sw] + (0.0 if b is None else b[j]))
        rows.append(maps)
    return np.array(rows).reshape(n, f, *rows[0][0].shape) if n else None


@st.composite
def conv_cases(draw):
    g = draw(conv_geometries(max_n=2, max_c=2, max_k=4, max_d=2, max_p=2))
    groups = draw(st.sampled_from([1, 2, 3]))
    fg = draw(st.integers(1, 2))
    mode = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    stride, padding = (g.sh, g.sw), (g.ph, g.pw)
    h, w = g.h, g.w
    if mode == "int":
        padding = g.ph
        w = max(w, g.dw * (g.kw - 1) + 1 - 2 * g.ph)
    elif mode == "same":
        padding, stride = "same", (1, 1)
    elif mode == "valid":
        padding = "valid"
        h, w = max(h, g.dh * (g.kh - 1) + 1), max(w, g.dw * (g.kw - 1) + 1)
    return dict(shape=(g.n, g.c * groups, h, w), wshape=(groups * fg, g.c, g.kh, g.kw),
                stride=stride, padding=padding, dilation=(g.dh, g.dw), groups=groups)


def _as_pair_padding(padding):
    return (padding, padding) if isinstance(padding, int) else padding


@backends
@hsettings(100)
@given(case=conv_cases(), seed=seeds, with_bias=st.booleans())
def test_conv2d_matches_scipy_correlate(backend, case, seed, with_bias):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["shape"])
    w = rng.standard_normal(case["wshape"])
    b = rng.standard_normal(case["wshape"][0]) if with_bias else None
    padding = case["padding"]
    stride = case["stride"]
    with fastcnn.use_backend(backend):
        # stride as given (int when square), padding as given (int/pair/str)
        out = F.conv2d(x, w, b, stride=stride[0] if stride[0] == stride[1] else stride,
                       padding=padding, dilation=case["dilation"], groups=case["groups"])
    expected = scipy_conv2d(x, w, b, stride, padding if isinstance(padding, str)
                            else _as_pair_padding(padding), case["dilation"], case["groups"])
    assert out.shape == expected.shape
    if padding == "same":
        assert out.shape[2:] == x.shape[2:]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@backends
@pytest.mark.parametrize("kernel", [(2, 2), (4, 3), (2, 1)])
def test_conv2d_same_even_kernel_pads_bottom_right(backend, kernel):
    x = np.zeros((1, 1, 5, 6))
    x[0, 0, -1, -1] = 1.0  # only the bottom-right pixel
    w = np.ones((1, 1) + kernel)
    with fastcnn.use_backend(backend):
        out = F.conv2d(x, w, padding="same")
    # window (i, j) starts at (i - top, j - left) with top = (kh-1)//2: the
    # bottom-right pixel is seen by windows i >= H-1 - (kh-1) + top, etc.
    kh, kw = kernel
    top, left = (kh - 1) // 2, (kw - 1) // 2
    expected = np.zeros((5, 6))
    expected[5 - 1 - (kh - 1) + top:, 6 - 1 - (kw - 1) + left:] = 1.0
    np.testing.assert_array_equal(out[0, 0], expected)


@backends
def test_conv2d_depthwise_by_hand(backend):
    x = np.stack([grid(3, 3)[0, 0], -grid(3, 3)[0, 0]])[None]  # (1, 2, 3, 3)
    w = np.stack([np.ones((1, 2, 2)), 2 * np.ones((1, 2, 2))])  # (2, 1, 2, 2)
    with fastcnn.use_backend(backend):
        out = F.conv2d(x, w, np.array([0.5, -0.5]), groups=2)
    s = np.array([[12, 16], [24, 28]], dtype=float)
    np.testing.assert_array_equal(out, np.stack([s + 0.5, -2 * s - 0.5])[None])


# ---------------------------------------------------------------------------
# conv2d_backward against central finite differences.

FD_CASES = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, dilation=1, groups=1),
    dict(stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2),
    dict(stride=1, padding="same", dilation=1, groups=4),  # depthwise, even kernel
    dict(stride=3, padding="valid", dilation=2, groups=1),
]


def _central_diff_input(x, w, b, dout, kwargs, eps=1e-6):
    """d <conv2d(x), dout> / dx by central differences, one element at a time.

    Image n only affects output n, so the perturbed copies of image n (one per
    element) are stacked into one batch: two conv2d calls per image."""
    per = x[0].size
    bumps = eps * np.eye(per).reshape((per,) + x.shape[1:])
    grad = np.empty_like(x)
    for n in range(x.shape[0]):
        up = F.conv2d(x[n][None] + bumps, w, b, **kwargs)
        down = F.conv2d(x[n][None] - bumps, w, b, **kwargs)
        grad[n] = (np.tensordot(up - down, dout[n], axes=3) / (2 * eps)).reshape(x.shape[1:])
    return grad


@backends
@pytest.mark.parametrize("case", FD_CASES, ids=lambda c: "-".join(map(str, c.values())))
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv2d_backward_matches_finite_differences(backend, case, with_bias):
    rng = np.random.default_rng(7)
    groups = case["groups"]
    x = rng.standard_normal((2, 4, 6, 7))
    kernel = (2, 2) if case["padding"] == "same" else (3, 2)
    w = rng.standard_normal((4, 4 // groups) + kernel)
    b = rng.standard_normal(4) if with_bias else None
    with fastcnn.use_backend(backend):
        out = F.conv2d(x, w, b, **case)
        dout = rng.standard_normal(out.shape)

        def loss():
            return float(np.vdot(F.conv2d(x, w, b, **case), dout))

        dx, dw, db = F.conv2d_backward(dout, x, w, **case)
        dx_fd = _central_diff_input(x, w, b, dout, case)
        dw_fd = numerical_gradient(loss, w)
        db_fd = numerical_gradient(loss, b) if with_bias else None
    assert dx.shape == x.shape and dw.shape == w.shape
    assert db.shape == (4,)  # dbias is returned whether or not the forward had a bias
    np.testing.assert_allclose(dx, dx_fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, dw_fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, dout.sum(axis=(0, 2, 3)), rtol=1e-12)
    if with_bias:
        np.testing.assert_allclose(db, db_fd, rtol=1e-6, atol=1e-7)


@backends
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_backward_dtypes(backend, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 5)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    with fastcnn.use_backend(backend):
        dout = np.ones(F.conv2d(x, w).shape, dtype)
        grads = F.conv2d_backward(dout, x, w)
    assert [g.dtype for g in grads] == [np.dtype(dtype)] * 3
    np.testing.assert_array_equal(grads[2], np.full(4, 2 * 3 * 3, dtype))


# ---------------------------------------------------------------------------
# Empty batch.


def _empty_im2col(x, w, b):
    cols = F.im2col(x, (3, 2), stride=2, padding=1)
    assert cols.shape == (0, 3 * 6, conv_out(7, 3, 2, 2, 1) * conv_out(6, 2, 2, 2, 1))
    assert cols.dtype == x.dtype


def _empty_col2im(x, w, b):
    cols = np.empty((0, 3 * 6, 16), x.dtype)
    back = F.col2im(cols, (7, 6), (3, 2), stride=2, padding=1)
    assert back.shape == x.shape and back.dtype == x.dtype


def _empty_conv2d(x, w, b):
    out = F.conv2d(x, w, b, padding="same")
    assert out.shape == (0, 4, 7, 6) and out.dtype == x.dtype
    out = F.conv2d(x, np.ones((6, 1, 3, 2), x.dtype), groups=3, stride=2, padding=1)
    assert out.shape == (0, 6, 4, 4) and out.dtype == x.dtype


def _empty_conv2d_backward(x, w, b):
    dx, dw, db = F.conv2d_backward(np.empty((0, 4, 7, 6), x.dtype), x, w, padding="same")
    assert dx.shape == x.shape and dx.dtype == x.dtype
    np.testing.assert_array_equal(dw, np.zeros_like(w), strict=True)
    np.testing.assert_array_equal(db, np.zeros(4, x.dtype), strict=True)


def _empty_max_pool2d(x, w, b):
    out, idx = F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    assert out.shape == idx.shape == (0, 3, 4, 3)
    assert out.dtype == x.dtype and idx.dtype == np.int64


def _empty_max_pool2d_backward(x, w, b):
    dout = np.empty((0, 3, 4, 3), x.dtype)
    dx = F.max_pool2d_backward(dout, np.empty((0, 3, 4, 3), np.int64), x.shape)
    assert dx.shape == x.shape and dx.dtype == x.dtype


def _empty_avg_pool2d(x, w, b):
    out = F.avg_pool2d(x, 2, ceil_mode=True)
    assert out.shape == (0, 3, 4, 3) and out.dtype == x.dtype


def _empty_avg_pool2d_backward(x, w, b):
    dx = F.avg_pool2d_backward(np.empty((0, 3, 4, 3), x.dtype), x.shape, 2, ceil_mode=True)
    assert dx.shape == x.shape and dx.dtype == x.dtype


EMPTY_BATCH_CHECKS = [_empty_im2col, _empty_col2im, _empty_conv2d, _empty_conv2d_backward,
                      _empty_max_pool2d, _empty_max_pool2d_backward, _empty_avg_pool2d,
                      _empty_avg_pool2d_backward]


@backends
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("check", EMPTY_BATCH_CHECKS, ids=lambda f: f.__name__[7:])
def test_empty_batch_gives_empty_results(backend, dtype, check):
    x = np.empty((0, 3, 7, 6), dtype)
    w = np.ones((4, 3, 3, 2), dtype)
    b = np.ones(4, dtype)
    with fastcnn.use_backend(backend):
        check(x, w, b)


# ---------------------------------------------------------------------------
# Shapes follow the formulas of DESIGN.md.


@backends
@hsettings(100)
@given(g=pool_geometries(), seed=seeds)
def test_pool_output_shapes_follow_the_formula(backend, g, seed):
    x = make_values(np.random.default_rng(seed), g.shape, np.float64, "normal")
    with fastcnn.use_backend(backend):
        out = F.max_pool2d(x, **g.max_pool_kwargs())
        if g.dh == g.dw == 1:
            assert F.avg_pool2d(x, **g.avg_pool_kwargs()).shape == g.pool_shape
    assert out.shape == g.pool_shape


@backends
def test_pool_stride_defaults_to_kernel(backend):
    x = grid(6, 9)
    with fastcnn.use_backend(backend):
        assert F.max_pool2d(x, (2, 3)).shape == (1, 1, 3, 3)
        np.testing.assert_array_equal(F.max_pool2d(x, (2, 3)),
                                      F.max_pool2d(x, (2, 3), stride=(2, 3)))
        np.testing.assert_array_equal(F.avg_pool2d(x, (2, 3)),
                                      F.avg_pool2d(x, (2, 3), stride=(2, 3)))


def test_geometry_helper_sanity():
    g = Geometry(1, 1, 5, 5, 3, 3, 2, 2, 1, 1, 1, 1, True)
    assert (g.pool_oh, g.pool_ow) == (3, 3)
    assert (g.conv_oh, g.conv_ow) == (3, 3)
