"""Parity of the two kernel sets: compiled (Cython) vs the NumPy twin.

Two levels:

* kernel level, through ``fastcnn._backend.pair_of(name)``: both kernels get
  the same validated, C-contiguous inputs and a preallocated ``out`` filled
  with DIFFERENT garbage, so an element that a kernel forgets to write shows
  up as a mismatch;
* public level, through ``fastcnn.functional`` under ``use_backend("cython")``
  and ``use_backend("numpy")``, with inputs in odd memory layouts (Fortran,
  channels-last views, negative strides, read-only, strided slices,
  byte-swapped): every layout and both backends give one result.

Exactness (established by running these tests, see the comments of each
test): every kernel is BITWISE equal between the two sets, including the
floating-point sums (col2im, avg-pool forward/backward, max-pool backward),
because the twin adds in the compiled kernel's order. conv2d and
conv2d_backward are exact too: their GEMM is NumPy's on identical im2col
output. ``np.testing.assert_array_equal`` is therefore used throughout (it
treats NaN as equal to NaN).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import fastcnn
from fastcnn import _backend
from fastcnn import functional as F

from strategies import (
    FLOAT_DTYPES,
    LAYOUTS,
    Geometry,
    conv_geometries,
    hsettings,
    make_values,
    pool_geometries,
    with_layout,
)

seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from(FLOAT_DTYPES)
threads = st.sampled_from([1, 2, 3])


def _pair(name):
    compiled, reference = _backend.pair_of(name)
    if compiled is None:  # only reachable when FASTCNN_BACKEND=numpy and no build
        pytest.skip("compiled kernels not built (FASTCNN_BACKEND=numpy run)")
    return compiled, reference


def _garbage(shape, dtype, value):
    return np.full(shape, value, dtype=dtype)


def _assert_same(got, expected):
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected, strict=True)


# ---------------------------------------------------------------------------
# Kernel level: pair_of(name)


@hsettings(200)
@given(g=conv_geometries(), dtype=dtypes, kind=st.sampled_from(["normal", "ties", "special"]),
       seed=seeds, nt=threads)
@example(g=Geometry(1, 1, 3, 3, 3, 3, 1, 1, 1, 1), dtype=np.float64, kind="normal", seed=0, nt=1)
@example(g=Geometry(2, 2, 5, 7, 1, 1, 3, 2, 0, 0), dtype=np.float32, kind="ties", seed=1, nt=2)
def test_kernel_im2col(g, dtype, kind, seed, nt):
    # im2col only copies: exact.
    compiled, reference = _pair("im2col")
    x = make_values(np.random.default_rng(seed), g.shape, dtype, kind)
    out_c = _garbage(g.cols_shape, dtype, 7.0)
    out_r = _garbage(g.cols_shape, dtype, -3.0)
    res_c = compiled(x, *g.conv_params(), out_c, nt)
    res_r = reference(x, *g.conv_params(), out_r)
    assert res_c is out_c and res_r is out_r
    _assert_same(out_c, out_r)


@hsettings(200)
@given(g=conv_geometries(), dtype=dtypes, kind=st.sampled_from(["normal", "ties", "special"]),
       seed=seeds, nt=threads)
@example(g=Geometry(1, 1, 3, 3, 3, 3, 1, 1, 1, 1), dtype=np.float64, kind="ties", seed=0, nt=1)
def test_kernel_col2im(g, dtype, kind, seed, nt):
    # col2im adds the taps of each pixel in (i, j) order in both sets: exact.
    # ("special" values make inf - inf = NaN: silence NumPy's warning in the twin.)
    compiled, reference = _pair("col2im")
    cols = make_values(np.random.default_rng(seed), g.cols_shape, dtype, kind)
    out_c = _garbage(g.shape, dtype, 7.0)
    out_r = _garbage(g.shape, dtype, -3.0)
    with np.errstate(invalid="ignore"):
        res_c = compiled(cols, *g.conv_params(), out_c, nt)
        res_r = reference(cols, *g.conv_params(), out_r)
    assert res_c is out_c and res_r is out_r
    _assert_same(out_c, out_r)


@hsettings(200)
@given(g=pool_geometries(), dtype=dtypes,
       kind=st.sampled_from(["normal", "ties", "special", "neg_inf"]), seed=seeds, nt=threads)
@example(g=Geometry(1, 1, 4, 4, 3, 3, 1, 1, 1, 1, 2, 2, True), dtype=np.float32, kind="neg_inf",
         seed=3, nt=1)
def test_kernel_max_pool2d(g, dtype, kind, seed, nt):
    # Values and int64 argmax: exact (first max on ties, last NaN, -inf windows).
    compiled, reference = _pair("max_pool2d")
    x = make_values(np.random.default_rng(seed), g.shape, dtype, kind)
    out_c, idx_c = _garbage(g.pool_shape, dtype, 7.0), _garbage(g.pool_shape, np.int64, -7)
    out_r, idx_r = _garbage(g.pool_shape, dtype, -3.0), _garbage(g.pool_shape, np.int64, -3)
    res_c = compiled(x, *g.pool_params(), out_c, idx_c, nt)
    res_r = reference(x, *g.pool_params(), out_r, idx_r)
    assert res_c[0] is out_c and res_c[1] is idx_c
    assert res_r[0] is out_r and res_r[1] is idx_r
    _assert_same(out_c, out_r)
    _assert_same(idx_c, idx_r)
    assert idx_c.min() >= 0 and idx_c.max() < g.h * g.w


@hsettings(150)
@given(g=pool_geometries(), dtype=dtypes, kind=st.sampled_from(["normal", "ties"]), seed=seeds,
       nt=threads, from_forward=st.booleans())
def test_kernel_max_pool2d_backward(g, dtype, kind, seed, nt, from_forward):
    # Scatter-add in output order in both sets: exact, also when indices repeat.
    compiled, reference = _pair("max_pool2d_backward")
    rng = np.random.default_rng(seed)
    dout = make_values(rng, g.pool_shape, dtype, kind)
    if from_forward:
        x = make_values(rng, g.shape, dtype, "ties")
        _, idx = fastcnn.reference.max_pool2d(x, *g.pool_params(), np.empty(g.pool_shape, dtype),
                                              np.empty(g.pool_shape, np.int64))
    else:  # any in-range index, many repeated
        idx = rng.integers(0, g.h * g.w, size=g.pool_shape, dtype=np.int64)
    out_c = _garbage(g.shape, dtype, 7.0)
    out_r = _garbage(g.shape, dtype, -3.0)
    assert compiled(dout, idx, out_c, nt) is out_c
    assert reference(dout, idx, out_r) is out_r
    _assert_same(out_c, out_r)


@hsettings(200)
@given(g=pool_geometries(dilation=False), dtype=dtypes,
       kind=st.sampled_from(["normal", "ties", "special"]), seed=seeds, nt=threads,
       count_include_pad=st.booleans(), divisor_override=st.sampled_from([0, 0, 1, 3, 7]))
def test_kernel_avg_pool2d(g, dtype, kind, seed, nt, count_include_pad, divisor_override):
    # The compiled kernel sums the real cells of a window row by row; the twin
    # adds whole shifted planes in (i, j) order with zeros for padding. Same
    # order (adding +0.0 changes nothing), same division: exact.
    compiled, reference = _pair("avg_pool2d")
    x = make_values(np.random.default_rng(seed), g.shape, dtype, kind)
    out_c = _garbage(g.pool_shape, dtype, 7.0)
    out_r = _garbage(g.pool_shape, dtype, -3.0)
    args = (*g.avg_params(), count_include_pad, divisor_override)
    with np.errstate(invalid="ignore"):
        assert compiled(x, *args, out_c, nt) is out_c
        assert reference(x, *args, out_r) is out_r
    _assert_same(out_c, out_r)


@hsettings(200)
@given(g=pool_geometries(dilation=False), dtype=dtypes,
       kind=st.sampled_from(["normal", "ties", "special"]), seed=seeds, nt=threads,
       count_include_pad=st.booleans(), divisor_override=st.sampled_from([0, 0, 1, 3, 7]))
def test_kernel_avg_pool2d_backward(g, dtype, kind, seed, nt, count_include_pad,
                                    divisor_override):
    # Each pixel receives its windows' shares in row-major window order in
    # both sets (the twin adds kernel offsets in decreasing order): exact.
    compiled, reference = _pair("avg_pool2d_backward")
    dout = make_values(np.random.default_rng(seed), g.pool_shape, dtype, kind)
    out_c = _garbage(g.shape, dtype, 7.0)
    out_r = _garbage(g.shape, dtype, -3.0)
    args = (*g.avg_params(), count_include_pad, divisor_override)
    with np.errstate(invalid="ignore"):
        assert compiled(dout, *args, out_c, nt) is out_c
        assert reference(dout, *args, out_r) is out_r
    _assert_same(out_c, out_r)


def test_registry_pairs_every_kernel():
    assert set(_backend.KERNEL_NAMES) == {
        "im2col", "col2im", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
        "avg_pool2d_backward",
    }
    for name in _backend.KERNEL_NAMES:
        compiled, reference = _backend.pair_of(name)
        assert reference is getattr(fastcnn.reference, name)
        if _backend.compiled_available():
            assert callable(compiled)
    with pytest.raises(ValueError, match="conv2d"):
        _backend.pair_of("conv2d")
