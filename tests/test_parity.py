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
test): every kernel is BITWISE equal between the two sets (checked as equal
values plus the same sign of every zero), including the floating-point sums
(col2im, avg-pool and adaptive avg-pool forward/backward, max-pool backward),
because the twin adds in the compiled kernel's order.
``np.testing.assert_array_equal`` is therefore used (it treats NaN as equal
to NaN). The GEMM drivers (conv2d, linear, Winograd's conv2d) are the
exception: the compiled ones call SciPy's BLAS and the twins NumPy's, which
may pick different kernels for the same product (NumPy uses a GEMV when a
dimension is 1), so the two sets agree to rounding; every other sum in them
(bias, the chunks' gradients, Winograd's transforms) is done in the same
order. (Winograd's kernels are tested in test_winograd.py.)

A last section checks extreme but valid geometry values (strides near 2**63,
a kernel far larger than the input): same answer as the equivalent small
geometry on both backends, no integer overflow.
"""

from __future__ import annotations

import contextlib
import importlib
import platform
import dataclasses

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import fastcnn
from fastcnn import _backend
from fastcnn import _validation
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
    """Equal dtype, shape and values (NaN == NaN), and the same sign of zero."""
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected, strict=True)
    if got.dtype.kind == "f":
        numbers = ~np.isnan(expected)
        np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(expected[numbers]),
                                      err_msg="the sign of a zero differs")


# ---------------------------------------------------------------------------
# Kernel level: pair_of(name)


@hsettings(200)
@given(g=conv_geometries(), dtype=dtypes,
       kind=st.sampled_from(["normal", "ties", "special", "zeros"]), seed=seeds, nt=threads)
@example(g=Geometry(2, 3, 4, 5, 4, 5, 1, 1, 0, 0), dtype=np.float64, kind="normal", seed=0, nt=2)
@example(g=Geometry(1, 2, 3, 3, 5, 5, 1, 1, 1, 1), dtype=np.float32, kind="normal", seed=0, nt=1)
@example(g=Geometry(2, 2, 5, 7, 1, 1, 3, 2, 0, 0), dtype=np.float32, kind="ties", seed=1, nt=2)
@example(g=Geometry(2, 2, 9, 8, 2, 3, 2, 1, 3, 2, 3, 2), dtype=np.float64, kind="special", seed=2,
         nt=3)
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
@example(g=Geometry(2, 3, 4, 5, 4, 5, 1, 1, 0, 0), dtype=np.float64, kind="normal", seed=0, nt=2)
@example(g=Geometry(1, 2, 3, 3, 5, 5, 1, 1, 1, 1), dtype=np.float32, kind="ties", seed=0, nt=1)
@example(g=Geometry(2, 2, 5, 7, 1, 1, 3, 2, 0, 0), dtype=np.float32, kind="ties", seed=1, nt=2)
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
       kind=st.sampled_from(["normal", "ties", "special", "neg_inf", "zeros"]), seed=seeds,
       nt=threads)
@example(g=Geometry(1, 1, 4, 4, 3, 3, 1, 1, 1, 1, 2, 2, True), dtype=np.float32, kind="neg_inf",
         seed=3, nt=1)
@example(g=Geometry(2, 2, 5, 6, 4, 4, 3, 3, 2, 2, 1, 1, True), dtype=np.float64, kind="special",
         seed=4, nt=2)  # padding at its limit k // 2, partial last windows
@example(g=Geometry(2, 3, 4, 5, 4, 5, 1, 1, 0, 0), dtype=np.float32, kind="ties", seed=5, nt=2)
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
       kind=st.sampled_from(["normal", "ties", "special", "zeros"]), seed=seeds, nt=threads,
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


# ---------------------------------------------------------------------------
# Adaptive pools, kernel level. Window i of n along an axis of `size` cells
# covers floor(i*size/n) to ceil((i+1)*size/n), recomputed here with Python's
# integers.


def _adaptive_windows(size, n):
    return [(i * size // n, -(-(i + 1) * size // n)) for i in range(n)]


@st.composite
def adaptive_problems(draw, max_n=3):
    """(input shape, (oh, ow)): windows that overlap or tile the input, outputs
    larger than the input, 1x1 and 1xW outputs, empty batches."""
    n = draw(st.integers(0, max_n))
    c = draw(st.integers(1, 3))
    sizes = []
    for _ in range(2):
        size = draw(st.integers(1, 20))
        out = draw(st.one_of(st.integers(1, 24), st.sampled_from(
            [d for d in range(1, size + 1) if size % d == 0])))  # windows that tile
        sizes.append((size, out))
    (h, oh), (w, ow) = sizes
    return (n, c, h, w), (oh, ow)


adaptive_kinds = st.sampled_from(["normal", "ties", "special", "neg_inf", "nan", "zeros"])


@hsettings(200)
@given(problem=adaptive_problems(), dtype=dtypes, kind=adaptive_kinds, seed=seeds, nt=threads)
@example(problem=((2, 3, 32, 32), (7, 7)), dtype=np.float32, kind="normal", seed=0, nt=2)
@example(problem=((1, 2, 56, 56), (7, 7)), dtype=np.float64, kind="special", seed=1, nt=3)
@example(problem=((2, 2, 19, 23), (1, 1)), dtype=np.float32, kind="zeros", seed=2, nt=1)
@example(problem=((1, 2, 3, 5), (7, 11)), dtype=np.float64, kind="ties", seed=3, nt=2)
def test_kernel_adaptive_avg_pool2d_and_backward(problem, dtype, kind, seed, nt):
    # Each window summed in row-major order from +0.0, then / height / width
    # (a 1x1 output in lanes); each cell's shares added in row-major window
    # order from +0.0: the twin adds in the same order, exact. (inf - inf
    # makes the twin warn.)
    shape, (oh, ow) = problem
    rng = np.random.default_rng(seed)
    x = make_values(rng, shape, dtype, kind)
    dout = make_values(rng, shape[:2] + (oh, ow), dtype, kind)
    for name, src, out_shape in (("adaptive_avg_pool2d_forward", x, shape[:2] + (oh, ow)),
                                 ("adaptive_avg_pool2d_backward", dout, shape)):
        compiled, reference = _pair(name)
        out_c = _garbage(out_shape, dtype, 7.0)
        out_r = _garbage(out_shape, dtype, -3.0)
        with np.errstate(invalid="ignore"):
            assert compiled(src, out_c, nt) is out_c
            assert reference(src, out_r) is out_r
        _assert_same(out_c, out_r)


@hsettings(200)
@given(problem=adaptive_problems(), dtype=dtypes, kind=adaptive_kinds, seed=seeds, nt=threads)
@example(problem=((2, 3, 32, 32), (7, 7)), dtype=np.float32, kind="ties", seed=0, nt=2)
@example(problem=((1, 2, 56, 56), (7, 7)), dtype=np.float64, kind="nan", seed=1, nt=3)
@example(problem=((2, 2, 7, 9), (1, 1)), dtype=np.float32, kind="neg_inf", seed=2, nt=1)
@example(problem=((1, 2, 3, 5), (7, 11)), dtype=np.float64, kind="zeros", seed=3, nt=2)
def test_kernel_adaptive_max_pool2d_and_its_scatter(problem, dtype, kind, seed, nt):
    # Values and int64 argmax exact (last NaN, else first maximum, in each
    # window's row-major order; -inf windows keep their first cell), each
    # index in its window. The backward is max_pool2d_backward's scatter:
    # exact too with these indices, which repeat where windows overlap.
    shape, (oh, ow) = problem
    compiled, reference = _pair("adaptive_max_pool2d_forward")
    rng = np.random.default_rng(seed)
    x = make_values(rng, shape, dtype, kind)
    pool_shape = shape[:2] + (oh, ow)
    out_c, idx_c = _garbage(pool_shape, dtype, 7.0), _garbage(pool_shape, np.int64, -7)
    out_r, idx_r = _garbage(pool_shape, dtype, -3.0), _garbage(pool_shape, np.int64, -3)
    res_c = compiled(x, out_c, idx_c, nt)
    res_r = reference(x, out_r, idx_r)
    assert res_c[0] is out_c and res_c[1] is idx_c
    assert res_r[0] is out_r and res_r[1] is idx_r
    _assert_same(out_c, out_r)
    _assert_same(idx_c, idx_r)
    w = shape[3]
    rows, cols = idx_c // w, idx_c % w
    for i, (start, end) in enumerate(_adaptive_windows(shape[2], oh)):
        assert ((start <= rows[:, :, i]) & (rows[:, :, i] < end)).all()
    for j, (start, end) in enumerate(_adaptive_windows(w, ow)):
        assert ((start <= cols[..., j]) & (cols[..., j] < end)).all()
    compiled, reference = _pair("max_pool2d_backward")
    dout = make_values(rng, pool_shape, dtype, "normal")
    got = compiled(dout, idx_c, _garbage(shape, dtype, 7.0), nt)
    _assert_same(got, reference(dout, idx_c, _garbage(shape, dtype, -3.0)))


def test_adaptive_windows_of_huge_axes_do_not_overflow():
    # floor(i*size/n) and ceil((i+1)*size/n) for sizes whose i*size passes
    # 2**63: the twin's (the compiled kernels' formula) against Python's integers.
    from fastcnn.reference import _adaptive_windows as windows

    for size, n in ((2**62 + 5, 7), (2**63 - 1, 3), (2**50 + 3, 1000), (5, 1000)):
        starts, ends = windows(size, n)
        assert [(int(a), int(b)) for a, b in zip(starts, ends)] == _adaptive_windows(size, n)


# ---------------------------------------------------------------------------
# The SIMD kernels of csrc/pool_simd.h (2x2 and 3x3 windows, stride 2) on
# every instruction set this machine has, and the generic kernels (level 0)
# on the same cases: padding, ceil mode, rows shorter than a vector, partial
# vector blocks, more outputs per row than one chunk of blocks, odd sizes.

from fastcnn._kernels import conv as _conv  # noqa: E402
from fastcnn._kernels import direct as _direct  # noqa: E402
from fastcnn._kernels import pool as _pool  # noqa: E402
from fastcnn._kernels import unfold as _unfold  # noqa: E402
from fastcnn._kernels import winograd as _winograd  # noqa: E402

SIMD_LEVELS = list(range(_pool._simd_level() + 1))
_CAPPED = (_pool, _unfold, _direct, _conv, _winograd)


@contextlib.contextmanager
def _simd_cap(level):
    """The kernel modules with SIMD code (each has its own cap) on
    instruction sets up to `level`."""
    previous = [module._cap_simd(level) for module in _CAPPED]
    try:
        yield
    finally:
        for module, cap in zip(_CAPPED, previous):
            module._cap_simd(cap)


@pytest.fixture(params=SIMD_LEVELS, ids=lambda level: f"simd{level}")
def simd_level(request):
    with _simd_cap(request.param):
        yield request.param


def _simd_cases():
    cases = []
    for k, p in ((2, 0), (2, 1), (3, 0), (3, 1)):
        for h, w in ((2, 2), (3, 5), (6, 7), (4, 14), (8, 16), (17, 33), (9, 1100)):
            for ceil in (False, True):
                g = Geometry(2, 3, h, w, k, k, 2, 2, p, p, 1, 1, ceil)
                if g.pool_oh >= 1 and g.pool_ow >= 1:
                    cases.append(pytest.param(g, id=f"{h}x{w}-k{k}-p{p}" + ("-ceil" * ceil)))
    return cases


@pytest.mark.parametrize("g", _simd_cases())
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_simd_kernels(simd_level, g, dtype):
    rng = np.random.default_rng(g.h * 1000 + g.w)
    kinds = ["special", "zeros", "neg_inf", "normal"]
    for nt, kind in enumerate(kinds, 1):
        x = make_values(rng, g.shape, dtype, kind)
        idx_r = _max_pools_agree(x, g, dtype, nt)
        dout = make_values(rng, g.pool_shape, dtype, kind)
        for cip, div in ((True, 0), (False, 0), (True, 3)):
            args = (*g.avg_params(), cip, div)
            with np.errstate(invalid="ignore"):
                for name, src, shape in (("avg_pool2d", x, g.pool_shape),
                                         ("avg_pool2d_backward", dout, g.shape)):
                    compiled, reference = _pair(name)
                    got = compiled(src, *args, _garbage(shape, dtype, 7.0), nt)
                    _assert_same(got, reference(src, *args, _garbage(shape, dtype, -3.0)))
        # indices from the forward (2x2 windows without padding tile the
        # input), the same with one index moved out of its window, and any
        strays = idx_r.copy()
        strays.reshape(-1)[rng.integers(strays.size)] = rng.integers(g.h * g.w)
        anywhere = rng.integers(0, g.h * g.w, size=g.pool_shape)
        _max_pool_backwards_agree(dout, (idx_r, strays, anywhere), g, dtype, nt)


def _max_pools_agree(x, g, dtype, nt):
    """Assert that the compiled max_pool2d gives its twin's values and indices; return those."""
    out_c, idx_c = _garbage(g.pool_shape, dtype, 7.0), _garbage(g.pool_shape, np.int64, -7)
    out_r, idx_r = _garbage(g.pool_shape, dtype, -3.0), _garbage(g.pool_shape, np.int64, -3)
    _pair("max_pool2d")[0](x, *g.pool_params(), out_c, idx_c, nt)
    _pair("max_pool2d")[1](x, *g.pool_params(), out_r, idx_r)
    _assert_same(out_c, out_r)
    _assert_same(idx_c, idx_r)
    return idx_r


def _max_pool_backwards_agree(dout, indices, g, dtype, nt):
    """Assert that the compiled max_pool2d_backward gives its twin's gradient
    for each of `indices`."""
    compiled, reference = _pair("max_pool2d_backward")
    for idx in indices:
        with np.errstate(invalid="ignore"):  # inf - inf where indices repeat
            got = compiled(dout, idx, _garbage(g.shape, dtype, 7.0), nt)
            _assert_same(got, reference(dout, idx, _garbage(g.shape, dtype, -3.0)))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("kind", ["special", "ties", "neg_inf"])
@pytest.mark.parametrize("h, w", [(4, 6), (5, 15), (2, 2), (8, 16), (8, 8), (4, 4), (2, 4),
                                  (16, 8), (6, 4)])
def test_max_pool2d_short_rows_in_runs(dtype, kind, h, w):
    # 2x2 windows with stride 2 in output rows shorter than pool.SHORT_ROW
    # (8) are pooled in runs of planes of about 1024 outputs, several
    # windows per vector across rows and planes: 600 planes make several
    # runs and a last partial one, and odd output counts leave windows after
    # the last whole vector. (8, 16) has rows of 8 outputs: the other kernels.
    # Where the windows tile the planes exactly in rows of 1, 2 or 4 and a
    # plane's outputs divide 16 or are a multiple of it (2, 2), (8, 8),
    # (4, 4), (2, 4), (16, 8), float32 with AVX-512 takes 16 outputs at a
    # time from 64 loaded cells (pool_quads.h); (6, 4) has planes of 6.
    rng = np.random.default_rng(h * 100 + w)
    g = Geometry(3, 200, h, w, 2, 2, 2, 2, 0, 0)
    x = make_values(rng, g.shape, dtype, kind)
    for nt in (1, 2, 3):
        idx_r = _max_pools_agree(x, g, dtype, nt)
        # the forward's indices; one index out of its tile in the second
        # run (that run is scattered); and any indices
        dout = make_values(rng, g.pool_shape, dtype, "normal")
        stray = idx_r.copy()
        stray[1, 100, 0, 0] = g.h * g.w - 1
        anywhere = rng.integers(0, g.h * g.w, size=g.pool_shape)
        _max_pool_backwards_agree(dout, (idx_r, stray, anywhere), g, dtype, nt)


def test_simd_max_pool2d_backward_streams_large_outputs(simd_level):
    # dx of at least 16 MiB is written through a scratch plane with
    # non-temporal stores; an odd plane size leaves partial lines between
    # planes.
    rng = np.random.default_rng(8)
    g = Geometry(2, 2, 1023, 1025, 3, 3, 2, 2, 1, 1)
    x = make_values(rng, g.shape, np.float64, "ties")
    _, idx = fastcnn.reference.max_pool2d(x, *g.pool_params(), np.empty(g.pool_shape),
                                          np.empty(g.pool_shape, np.int64))
    dout = make_values(rng, g.pool_shape, np.float64, "normal")
    compiled, reference = _pair("max_pool2d_backward")
    got = compiled(dout, idx, _garbage(g.shape, np.float64, 7.0), 2)
    _assert_same(got, reference(dout, idx, _garbage(g.shape, np.float64, -3.0)))


# ---------------------------------------------------------------------------
# im2col's streamed path (outputs of at least unfold.STREAM_BYTES): pieces of
# rows built in a per-thread scratch and copied out with non-temporal stores
# on whole 64-byte lines, plainly at the ends of each piece.


@contextlib.contextmanager
def _streamed(stream_bytes, piece_bytes):
    previous = _unfold._streaming(stream_bytes, piece_bytes)
    try:
        yield
    finally:
        _unfold._streaming(*previous)


@hsettings(200)
@given(g=conv_geometries(extra=40), dtype=dtypes, kind=st.sampled_from(["normal", "special", "zeros"]),
       seed=seeds, nt=threads, level=st.sampled_from(SIMD_LEVELS),
       piece_bytes=st.sampled_from([1, 60, 64, 200, 1000, 4096, 24 << 10]),
       offset=st.integers(0, 17))
@example(g=Geometry(2, 3, 56, 56, 3, 3, 1, 1, 1, 1), dtype=np.float32, kind="normal", seed=0,
         nt=2, level=SIMD_LEVELS[-1], piece_bytes=24 << 10, offset=0)
@example(g=Geometry(1, 2, 45, 37, 4, 3, 2, 1, 3, 0, 2, 1), dtype=np.float64, kind="special",
         seed=1, nt=3, level=0, piece_bytes=1000, offset=5)
def test_kernel_im2col_streamed(g, dtype, kind, seed, nt, level, piece_bytes, offset):
    # Every output streamed, in pieces from one row up, into a destination
    # `offset` cells into a buffer (unaligned, partial lines everywhere);
    # nothing outside the output may change.
    compiled, reference = _pair("im2col")
    x = make_values(np.random.default_rng(seed), g.shape, dtype, kind)
    size = int(np.prod(g.cols_shape))
    buffer = _garbage(size + 40, dtype, 7.0)
    out_c = buffer[offset:offset + size].reshape(g.cols_shape)
    with _simd_cap(level), _streamed(0, piece_bytes):
        assert compiled(x, *g.conv_params(), out_c, nt) is out_c
    _assert_same(out_c, reference(x, *g.conv_params(), _garbage(g.cols_shape, dtype, -3.0)))
    assert (buffer[:offset] == 7).all() and (buffer[offset + size:] == 7).all()


@pytest.mark.parametrize("g, dtype", [
    # just over the default bound (32 MiB), odd widths: "same" padding (one
    # copy per offset), and strided, dilated, asymmetric windows (row by row)
    pytest.param(Geometry(2, 2, 483, 485, 3, 3, 1, 1, 1, 1), np.float32, id="same-f32"),
    pytest.param(Geometry(2, 2, 341, 343, 3, 3, 1, 1, 1, 1), np.float64, id="same-f64"),
    pytest.param(Geometry(1, 3, 700, 701, 3, 2, 2, 1, 1, 2, 2, 3), np.float64, id="strided-f64"),
])
def test_im2col_streams_large_outputs(simd_level, g, dtype):
    compiled, reference = _pair("im2col")
    assert np.prod(g.cols_shape) * np.dtype(dtype).itemsize >= _unfold._streaming()[0]
    x = make_values(np.random.default_rng(g.h), g.shape, dtype, "normal")
    expected = reference(x, *g.conv_params(), _garbage(g.cols_shape, dtype, -3.0))
    for nt in (1, 2):
        got = compiled(x, *g.conv_params(), _garbage(g.cols_shape, dtype, 7.0), nt)
        _assert_same(got, expected)


# ---------------------------------------------------------------------------
# col2im's row path (column stride 1, rows where every tap column reaches at
# least unfold.FOLD_CHUNKS 64-byte chunks): each image row summed in
# registers 64 bytes at a time between the columns that every tap reaches
# (the last chunk overlapping the one before), cell by cell outside them.


@contextlib.contextmanager
def _fold_chunks(chunks):
    previous = _unfold._fold_chunks(chunks)
    try:
        yield
    finally:
        _unfold._fold_chunks(previous)


@hsettings(200)
@given(g=conv_geometries(extra=40), dtype=dtypes,
       kind=st.sampled_from(["normal", "ties", "special", "zeros"]), seed=seeds, nt=threads)
@example(g=Geometry(2, 3, 56, 56, 3, 3, 1, 1, 1, 1), dtype=np.float32, kind="normal", seed=0, nt=2)
@example(g=Geometry(1, 2, 28, 28, 5, 5, 1, 1, 2, 2), dtype=np.float64, kind="zeros", seed=1, nt=3)
@example(g=Geometry(2, 2, 11, 45, 3, 4, 3, 1, 2, 3, 2, 2), dtype=np.float32, kind="special",
         seed=2, nt=1)
@example(g=Geometry(1, 1, 3, 17, 1, 1, 1, 1, 0, 0), dtype=np.float32, kind="zeros", seed=3, nt=1)
def test_kernel_col2im_by_rows(g, dtype, kind, seed, nt):
    # Every col2im of column stride 1 by rows, with chunks wherever one fits
    # (from images too narrow for one to several chunks); any row stride,
    # dilation and padding. Exact, the sign of zeros included.
    g = dataclasses.replace(g, sw=1)
    compiled, reference = _pair("col2im")
    cols = make_values(np.random.default_rng(seed), g.cols_shape, dtype, kind)
    out_c = _garbage(g.shape, dtype, 7.0)
    with np.errstate(invalid="ignore"), _fold_chunks(0):
        assert compiled(cols, *g.conv_params(), out_c, nt) is out_c
        expected = reference(cols, *g.conv_params(), _garbage(g.shape, dtype, -3.0))
    _assert_same(out_c, expected)


@pytest.mark.parametrize("g", [
    # rows by the default bound: the benchmark's 3x3 p1 on 56x56, and
    # dilated, strided, asymmetric windows on rows of 30 to 70 cells
    pytest.param(Geometry(2, 3, 56, 56, 3, 3, 1, 1, 1, 1), id="resnet"),
    pytest.param(Geometry(2, 2, 32, 32, 3, 3, 1, 1, 1, 1), id="cifar"),
    pytest.param(Geometry(1, 3, 13, 70, 2, 5, 2, 1, 1, 3, 3, 2), id="dilated"),
    pytest.param(Geometry(2, 1, 9, 30, 4, 1, 3, 1, 0, 0, 1, 1), id="column"),
])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_col2im_by_rows_default_bound(g, dtype):
    compiled, reference = _pair("col2im")
    rng = np.random.default_rng(g.w)
    for nt, kind in enumerate(["normal", "zeros", "special"], 1):
        cols = make_values(rng, g.cols_shape, dtype, kind)
        with np.errstate(invalid="ignore"):
            got = compiled(cols, *g.conv_params(), _garbage(g.shape, dtype, 7.0), nt)
            _assert_same(got, reference(cols, *g.conv_params(), _garbage(g.shape, dtype, -3.0)))


@pytest.mark.parametrize("g", [Geometry(5, 4, 9, 8, 3, 3, 1, 1, 1, 1),
                               Geometry(3, 6, 11, 7, 2, 3, 2, 1, 0, 1, 1, 2)])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_kernel_conv2d_backward_computes_only_what_is_asked(g, dtype):
    # A dx of no samples skips the input gradient, parts of no chunks the
    # weight and bias gradients; what is computed has the bits of the whole
    # call, in either kernel set.
    compiled, reference = _pair("conv2d_backward")
    rng = np.random.default_rng(8)
    groups, f = 2, 4
    x = make_values(rng, (g.n, 2 * g.c, g.h, g.w), dtype)
    w = make_values(rng, (f, g.c * g.kh * g.kw), dtype)
    dout = make_values(rng, (g.n, f, g.conv_oh, g.conv_ow), dtype)
    chunk, parts = 2, -(-g.n // 2)
    for kernel, extra in ((compiled, (2,)), (reference, ())):
        def run(with_dx, with_dweight):
            dx = _garbage(x.shape if with_dx else (0,) + x.shape[1:], dtype, 7.0)
            dw = _garbage((parts if with_dweight else 0, f, w.shape[1]), dtype, 7.0)
            db = _garbage((parts if with_dweight else 0, f), dtype, 7.0)
            kernel(dout, x, w, *g.conv_params(), groups, chunk, 0, 0.0, dx, dw, db, *extra)
            return dx, dw, db

        dx, dw, db = run(True, True)
        _assert_same(run(True, False)[0], dx)
        only = run(False, True)
        _assert_same(only[1], dw)
        _assert_same(only[2], db)


def test_registry_pairs_every_kernel():
    assert set(_backend.KERNEL_NAMES) == {
        "im2col", "col2im", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
        "avg_pool2d_backward", "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
        "adaptive_max_pool2d_forward", "conv2d_forward", "conv2d_backward",
        "conv2d_direct_forward", "conv2d_direct_backward", "linear_forward",
        "linear_backward", "winograd_weight", "winograd_conv2d", "winograd_conv2d_backward",
        "batch_norm_stats", "batch_norm_elemt", "batch_norm_backward_reduce",
        "batch_norm_backward_elemt", "relu", "relu_backward", "add", "dropout", "leaky_relu",
        "leaky_relu_backward",
        "softmax_cross_entropy", "sgd_update", "adam_update", "adagrad_update", "rmsprop_update",
        "adadelta_update", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "elu",
        "elu_backward",
        "interpolate_nearest", "interpolate_nearest_backward", "interpolate_bilinear",
        "interpolate_bilinear_backward", "max_unpool2d", "max_unpool2d_backward",
    }
    for name in _backend.KERNEL_NAMES:
        compiled, reference = _backend.pair_of(name)
        assert reference is getattr(fastcnn.reference, name)
        if _backend.compiled_available():
            assert callable(compiled)
    with pytest.raises(ValueError, match="conv2d"):
        _backend.pair_of("conv2d")


# ---------------------------------------------------------------------------
# Public level: fastcnn.functional under both backends and odd layouts.

BACKENDS = ("cython", "numpy") if _backend.compiled_available() else ("numpy",)
layouts = st.sampled_from(LAYOUTS)


def _flatten(result):
    return list(result) if isinstance(result, tuple) else [result]


def _assert_close(got, expected):
    """Equal to rounding: what two BLAS libraries may differ by on one product."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    tol = 1e-5 if got.dtype == np.float32 else 1e-12
    scale = np.abs(expected).max(initial=1.0)
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * scale)


def _all_ways(op, arrays, layout, gemm=False, **kwargs):
    """`op(*arrays, **kwargs)` on every backend, with C-contiguous inputs and with
    the same inputs stored as `layout`. Asserts that all results are equal and
    that no input was modified; returns the first result.

    `gemm`: the op multiplies through BLAS, whose compiled driver (SciPy's
    BLAS) and twin (NumPy's) may round differently: each backend must give
    one result for every layout, and the backends must agree to rounding."""
    pristine = [a.copy() for a in arrays]
    results = []
    for backend in BACKENDS:
        with fastcnn.use_backend(backend):
            results.append(_flatten(op(*arrays, **kwargs)))
            odd = [with_layout(a, layout) for a in arrays]
            odd_copies = [a.copy() for a in odd]
            results.append(_flatten(op(*odd, **kwargs)))
            for a, b in zip(odd, odd_copies):
                np.testing.assert_array_equal(a, b, strict=True)
    for a, b in zip(arrays, pristine):
        np.testing.assert_array_equal(a, b, strict=True)
    first = results[0]
    for i, other in enumerate(results[1:], 1):
        assert len(other) == len(first)
        # results[2k] (C-contiguous inputs) and results[2k+1] (`layout`) are backend k's
        own = results[i - i % 2]
        for got, expected, own_c in zip(other, first, own):
            assert isinstance(got, np.ndarray) and got.flags.c_contiguous
            if not gemm:
                _assert_same(got, expected)
            elif i % 2:
                _assert_same(got, own_c)
            else:
                _assert_close(got, expected)
    return first if len(first) > 1 else first[0]


@hsettings(100)
@given(g=conv_geometries(), dtype=dtypes, kind=st.sampled_from(["normal", "ties", "special"]),
       seed=seeds, layout=layouts)
def test_public_im2col(g, dtype, kind, seed, layout):
    x = make_values(np.random.default_rng(seed), g.shape, dtype, kind)
    cols = _all_ways(F.im2col, [x], layout, **g.conv_kwargs())
    assert cols.shape == g.cols_shape and cols.dtype == dtype


@hsettings(100)
@given(g=conv_geometries(), dtype=dtypes, kind=st.sampled_from(["normal", "ties"]), seed=seeds,
       layout=layouts)
def test_public_col2im(g, dtype, kind, seed, layout):
    cols = make_values(np.random.default_rng(seed), g.cols_shape, dtype, kind)
    x = _all_ways(F.col2im, [cols], layout, output_size=(g.h, g.w), **g.conv_kwargs())
    assert x.shape == g.shape and x.dtype == dtype


@st.composite
def conv_problems(draw):
    """(geometry with C = groups * C/groups, F, groups, padding argument, stride)."""
    g = draw(conv_geometries(max_c=2, max_k=3, max_d=2))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    f = groups * draw(st.integers(1, 2))
    padding = draw(st.sampled_from(["pair", "pair", "same", "valid"]))
    g = Geometry(g.n, g.c * groups, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw)
    kwargs = g.conv_kwargs()
    del kwargs["kernel_size"]
    if padding == "same":
        kwargs.update(padding="same", stride=1)
    elif padding == "valid":
        kwargs["padding"] = "valid"
        reach_h, reach_w = g.dh * (g.kh - 1) + 1, g.dw * (g.kw - 1) + 1
        g = Geometry(g.n, g.c, max(g.h, reach_h), max(g.w, reach_w), g.kh, g.kw, g.sh, g.sw,
                     0, 0, g.dh, g.dw)
    return g, f, groups, kwargs


@hsettings(80)
@given(problem=conv_problems(), dtype=dtypes, kind=st.sampled_from(["normal", "ties"]),
       seed=seeds, layout=layouts, with_bias=st.booleans())
def test_public_conv2d_and_backward(problem, dtype, kind, seed, layout, with_bias):
    # The compiled driver calls SciPy's BLAS, the twin NumPy's: equal to rounding.
    g, f, groups, kwargs = problem
    rng = np.random.default_rng(seed)
    x = make_values(rng, g.shape, dtype, kind)
    w = make_values(rng, (f, g.c // groups, g.kh, g.kw), dtype, kind)
    b = make_values(rng, (f,), dtype, kind)
    arrays = [x, w, b] if with_bias else [x, w]
    out = _all_ways(F.conv2d, arrays, layout, gemm=True, groups=groups, **kwargs)
    assert out.dtype == dtype and out.shape[:2] == (g.n, f)
    dout = make_values(rng, out.shape, dtype, kind)
    dx, dw, db = _all_ways(
        lambda d, x_, w_: F.conv2d_backward(d, x_, w_, groups=groups, **kwargs),
        [dout, x, w], layout, gemm=True)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (f,)


# ---------------------------------------------------------------------------
# The direct convolution (csrc/direct.pyx, groups = 1) at every instruction
# set this machine has. Its forward gives the twin's bits (products rounded,
# then added tap by tap from +0.0, at every level); its weight and bias
# gradients add in another order than the twin's GEMMs: equal to rounding,
# with NaN and infinities where the twin has them.

def _assert_sum_close(got, expected, bound):
    """The same NaNs and infinities; finite values within rounding of sums
    whose terms' magnitudes add up to `bound` (same shape)."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(got[~finite], expected[~finite])
    tol = 1e-5 if got.dtype == np.float32 else 1e-13
    assert np.all(np.abs(got[finite] - expected[finite]) <= tol * (bound[finite] + 1))


@hsettings(200)
@given(g=conv_geometries(max_n=5, max_c=8, max_k=7, max_d=2, max_p=3, extra=40),
       f=st.integers(1, 14), dtype=dtypes, kind=st.sampled_from(["normal", "ties", "special", "zeros"]),
       seed=seeds, nt=threads, level=st.sampled_from(SIMD_LEVELS), chunk=st.integers(1, 3),
       with_bias=st.booleans())
@example(g=Geometry(2, 3, 32, 32, 3, 3, 1, 1, 1, 1), f=32, dtype=np.float32, kind="normal",
         seed=0, nt=2, level=SIMD_LEVELS[-1], chunk=1, with_bias=True)  # cifar's first layer
@example(g=Geometry(3, 1, 28, 28, 5, 5, 1, 1, 2, 2), f=8, dtype=np.float64, kind="special",
         seed=1, nt=1, level=SIMD_LEVELS[-1], chunk=2, with_bias=True)  # rows of 1.75 segments
@example(g=Geometry(1, 2, 5, 3, 2, 3, 2, 1, 3, 0, 2, 1), f=7, dtype=np.float32, kind="zeros",
         seed=2, nt=3, level=SIMD_LEVELS[-1], chunk=1, with_bias=False)  # rows under a vector
@example(g=Geometry(5, 4, 9, 47, 7, 1, 3, 3, 0, 3, 1, 2), f=13, dtype=np.float64, kind="ties",
         seed=3, nt=2, level=SIMD_LEVELS[-1], chunk=3, with_bias=True)  # strided, dilated
def test_kernel_conv2d_direct(g, f, dtype, kind, seed, nt, level, chunk, with_bias):
    rng = np.random.default_rng(seed)
    x = make_values(rng, g.shape, dtype, kind)
    k = g.c * g.kh * g.kw
    w = make_values(rng, (f, k), dtype, kind)
    b = make_values(rng, (f,) if with_bias else (0,), dtype, kind)
    out_shape = (g.n, f, g.conv_oh, g.conv_ow)
    compiled, reference = _pair("conv2d_direct_forward")
    with _simd_cap(level), np.errstate(invalid="ignore"):
        out_c = compiled(x, w, b, *g.conv_params(), _garbage(out_shape, dtype, 7.0), nt)
        out_r = reference(x, w, b, *g.conv_params(), _garbage(out_shape, dtype, -3.0))
    _assert_same(out_c, out_r)

    dout = make_values(rng, out_shape, dtype, kind)
    parts = -(-g.n // chunk)
    compiled, reference = _pair("conv2d_direct_backward")
    grads = []
    with _simd_cap(level), np.errstate(invalid="ignore"):
        for run, fill in ((lambda *a: compiled(*a, nt), 7.0), (reference, -3.0)):
            dw, db = _garbage((parts, f, k), dtype, fill), _garbage((parts, f), dtype, fill)
            assert run(dout, x, *g.conv_params(), chunk, dw, db) is dw
            grads.append((dw, db))
        bound_w = reference(np.abs(dout), np.abs(x), *g.conv_params(), chunk,
                            np.empty((parts, f, k), dtype), np.empty((parts, f), dtype))
    bound_b = np.add.reduceat(np.abs(dout).sum(axis=(2, 3)), np.arange(0, g.n, chunk))
    (dw_c, db_c), (dw_r, db_r) = grads
    _assert_sum_close(dw_c, dw_r, bound_w)
    _assert_sum_close(db_c, db_r, bound_b)


def _grouped_conv(g, f, groups, dtype, kind, seed, with_bias):
    """``(g, rng, x, w, b, out_shape)`` of a GEMM driver's test: `g` with its
    channels rounded up to a multiple of `groups`, f*groups filters."""
    if g.c % groups:
        g = dataclasses.replace(g, c=g.c + groups - g.c % groups)
    f = f * groups
    rng = np.random.default_rng(seed)
    x = make_values(rng, g.shape, dtype, kind)
    w = make_values(rng, (f, g.c // groups * g.kh * g.kw), dtype, kind)
    b = make_values(rng, (f,) if with_bias else (0,), dtype, kind)
    return g, rng, x, w, b, (g.n, f, g.conv_oh, g.conv_ow)


# The GEMM driver at every level: BLAS (level 0) and, with AVX2 and FMA (or
# AVX-512, whose micro-kernel gives AVX2's bits), the forward by
# gemm_simd.h's product, which packs the filters once per call and
# multiplies bands of output rows. Cases span several of its blocks of 256
# taps, partial tiles of filters (6 rows) and of outputs (8 or 16 columns),
# several bands per sample and groups.

@hsettings(150)
@given(g=conv_geometries(max_n=3, max_c=40, max_k=5, max_d=2, max_p=2, extra=30),
       f=st.integers(1, 20), groups=st.sampled_from([1, 2, 3]), dtype=dtypes,
       kind=st.sampled_from(["normal", "ties", "special", "zeros"]), seed=seeds, nt=threads,
       level=st.sampled_from(SIMD_LEVELS), with_bias=st.booleans(), chunk=st.integers(1, 3))
@example(g=Geometry(2, 40, 9, 11, 3, 3, 1, 1, 1, 1), f=13, groups=1, dtype=np.float32,
         kind="normal", seed=0, nt=2, level=SIMD_LEVELS[-1], with_bias=True, chunk=1)  # 360 taps
@example(g=Geometry(1, 64, 40, 40, 3, 3, 1, 1, 1, 1), f=7, groups=1, dtype=np.float64,
         kind="normal", seed=1, nt=1, level=SIMD_LEVELS[-1], with_bias=True, chunk=1)  # 10 bands
@example(g=Geometry(2, 300, 5, 7, 1, 1, 1, 1, 0, 0), f=11, groups=3, dtype=np.float32,
         kind="ties", seed=2, nt=3, level=SIMD_LEVELS[-1], with_bias=False, chunk=2)  # 1x1, groups
@example(g=Geometry(3, 16, 4, 4, 3, 3, 1, 1, 1, 1), f=8, groups=2, dtype=np.float32,
         kind="normal", seed=3, nt=2, level=0, with_bias=True, chunk=3)  # a backward batch of 3
@example(g=Geometry(3, 40, 5, 8, 3, 3, 1, 1, 1, 1), f=5, groups=1, dtype=np.float64,
         kind="special", seed=4, nt=2, level=0, with_bias=True, chunk=3)  # batches of 2 and 1
def test_kernel_conv2d_gemm_levels(g, f, groups, dtype, kind, seed, nt, level, with_bias, chunk):
    g, rng, x, w, b, out_shape = _grouped_conv(g, f, groups, dtype, kind, seed, with_bias)
    compiled, reference = _pair("conv2d_forward")
    args = (*g.conv_params(), groups)
    with _simd_cap(level), np.errstate(invalid="ignore", over="ignore"):
        out_c = compiled(x, w, b, *args, 0, 0.0, _garbage(out_shape, dtype, 7.0), nt)
        one = compiled(x, w, b, *args, 0, 0.0, _garbage(out_shape, dtype, -3.0), 1)
        out_r = reference(x, w, b, *args, 0, 0.0, _garbage(out_shape, dtype, -3.0))
        bound = reference(np.abs(x), np.abs(w), np.abs(b), *args, 0, 0.0,
                          np.empty(out_shape, dtype))
    _assert_same(out_c, one)  # the thread count changes nothing
    _assert_sum_close(out_c, out_r, bound)
    if level > 1:  # AVX-512's micro-kernel sums in AVX2's order
        with _simd_cap(1), np.errstate(invalid="ignore", over="ignore"):
            narrow = compiled(x, w, b, *args, 0, 0.0, _garbage(out_shape, dtype, 5.0), nt)
        _assert_same(out_c, narrow)

    # the gradients: the input's alone, and all three (the compiled backward
    # multiplies small planes' samples in batches within a chunk)
    dout = make_values(rng, out_shape, dtype, kind)
    compiled, reference = _pair("conv2d_backward")
    f_, k_ = w.shape
    with _simd_cap(level), np.errstate(invalid="ignore", over="ignore"):
        for parts in (0, -(-g.n // chunk)):
            grads = [(_garbage(g.shape, dtype, fill), _garbage((parts, f_, k_), dtype, fill),
                      _garbage((parts, f_), dtype, fill)) for fill in (7.0, -3.0, 5.0)]
            for run, grad in zip((lambda *a: compiled(*a, nt), lambda *a: compiled(*a, 1),
                                  reference), grads):
                run(dout, x, w, *args, chunk, 0, 0.0, *grad)
            bounds = (np.empty(g.shape, dtype), np.empty((parts, f_, k_), dtype),
                      np.empty((parts, f_), dtype))
            reference(np.abs(dout), np.abs(x), np.abs(w), *args, chunk, 0, 0.0, *bounds)
            for got, one, expected, bound in zip(*grads, bounds):
                _assert_same(got, one)
                _assert_sum_close(got, expected, bound)


# With AVX-512 the forward reads rows wider than a quarter of a vector from a padded
# copy of the input instead of unfolding it (gemm_simd.h's implicit products):
# every output is the same sum, so it gives the AVX2 product's bits. Cases:
# segments of one row and of two, an odd last one, bands of 8 rows and a
# partial band, strides, dilations, 1 to 25 filters (12-row tiles and 6-row
# ones), more than 256 taps; rows of at most half a vector, two to a
# segment (an odd number of them, several bands).

#: The AVX-512 level, where the machine has it (else no case).
_avx512_level = pytest.mark.parametrize("level", SIMD_LEVELS[2:], ids=lambda level: f"simd{level}")
_both_dtypes = pytest.mark.parametrize("dtype", [np.float32, np.float64])


@_avx512_level
@pytest.mark.parametrize("g, f", [
    (Geometry(2, 3, 32, 32, 3, 3, 1, 1, 1, 1), 32),
    (Geometry(3, 6, 14, 14, 5, 5, 1, 1, 0, 0), 16),
    (Geometry(2, 5, 21, 27, 3, 3, 2, 2, 1, 1), 13),
    (Geometry(1, 4, 19, 40, 3, 2, 1, 2, 2, 0, 2, 3), 7),
    (Geometry(2, 40, 11, 13, 3, 3, 1, 1, 1, 1), 25),
    (Geometry(1, 2, 30, 9, 2, 2, 2, 1, 0, 1), 1),
    (Geometry(3, 7, 15, 15, 3, 3, 2, 2, 1, 1), 14),
    (Geometry(2, 4, 13, 11, 3, 3, 2, 2, 1, 1), 13),
    (Geometry(2, 3, 9, 7, 3, 3, 1, 1, 0, 0), 6),
    (Geometry(2, 6, 10, 10, 3, 3, 3, 3, 1, 1), 12),
    (Geometry(1, 2, 40, 12, 3, 3, 1, 2, 1, 1), 3),
])
@_both_dtypes
@pytest.mark.parametrize("kind", ["normal", "special"])
def test_implicit_forward_gives_the_unfolding_bits(level, g, f, dtype, kind):
    rng = np.random.default_rng(11)
    x = make_values(rng, g.shape, dtype, kind)
    w = make_values(rng, (f, g.c * g.kh * g.kw), dtype, kind)
    b = make_values(rng, (f,), dtype, kind)
    out_shape = (g.n, f, g.conv_oh, g.conv_ow)
    compiled, _ = _pair("conv2d_forward")
    args = (*g.conv_params(), 1, 0, 0.0)
    outs = []
    for cap, nt in ((level, 2), (1, 1)):
        with _simd_cap(cap), np.errstate(invalid="ignore", over="ignore"):
            outs.append(compiled(x, w, b, *args, _garbage(out_shape, dtype, 7.0), nt))
    _assert_same(*outs)


# ... or, on rows that fill those products' vectors poorly, with the filters
# in the lanes (lanes_simd.h), reading the input's phases: the same sums
# again. "always" runs it on every case (the default, "auto", by shape):
# strides, dilations, padding larger than the window, 1 to 40 filters
# (tiles of 24 x 1 to 6 x 4 vectors, a partial last vector), more than a
# block of taps, threads.
@hsettings(120)
@given(g=conv_geometries(max_n=3, max_c=40, max_k=5, max_d=2, max_p=3, extra=24),
       f=st.integers(1, 40), dtype=dtypes, kind=st.sampled_from(["normal", "special", "zeros"]),
       seed=seeds, nt=threads, with_bias=st.booleans())
@example(g=Geometry(3, 6, 14, 14, 5, 5, 1, 1, 0, 0), f=16, dtype=np.float32, kind="normal",
         seed=0, nt=2, with_bias=True)  # LeNet-5's second convolution, which "auto" puts so
@example(g=Geometry(2, 64, 10, 9, 3, 3, 2, 2, 1, 1), f=37, dtype=np.float64, kind="normal",
         seed=1, nt=3, with_bias=False)  # 576 taps, 5 vectors of float64
def test_filters_in_lanes_forward_gives_the_same_bits(g, f, dtype, kind, seed, nt, with_bias):
    if _conv._simd_level() < 2:
        return  # no AVX-512: every mode runs the same kernels
    rng = np.random.default_rng(seed)
    x = make_values(rng, g.shape, dtype, kind)
    w = make_values(rng, (f, g.c * g.kh * g.kw), dtype, kind)
    b = make_values(rng, (f,) if with_bias else (0,), dtype, kind)
    out_shape = (g.n, f, g.conv_oh, g.conv_ow)
    compiled, _ = _pair("conv2d_forward")
    args = (*g.conv_params(), 1, 0, 0.0)
    outs = []
    for mode, threads_ in (("always", nt), ("never", 1)):
        previous = _conv._use_lanes(mode)
        try:
            with np.errstate(invalid="ignore", over="ignore"):
                outs.append(compiled(x, w, b, *args, _garbage(out_shape, dtype, 7.0), threads_))
        finally:
            _conv._use_lanes(previous)
    _assert_same(*outs)


# The forward applies a ReLU or LeakyReLU to its outputs (the activation of a
# Conv2D's fused pair) as each band is written: the bits of the activation's
# own kernel after the convolution, whichever product computes it (BLAS,
# gemm_simd.h's unfolded or implicit one, the filters in the lanes), and in
# the twin likewise.
@hsettings(80)
@given(g=conv_geometries(max_n=3, max_c=20, max_k=5, max_d=2, max_p=2, extra=24),
       f=st.integers(1, 24), groups=st.sampled_from([1, 2]), dtype=dtypes,
       kind=st.sampled_from(["normal", "special"]), seed=seeds, nt=threads,
       level=st.sampled_from(SIMD_LEVELS), lanes=st.sampled_from(["auto", "always"]),
       activation=st.sampled_from([(1, 0.0), (2, 0.1), (2, 0.0), (2, 3.0), (2, -0.5)]),
       with_bias=st.booleans())
@example(g=Geometry(2, 6, 14, 14, 5, 5, 1, 1, 0, 0), f=16, groups=1, dtype=np.float32,
         kind="normal", seed=0, nt=2, level=SIMD_LEVELS[-1], lanes="auto", activation=(2, 0.1),
         with_bias=True)  # the filters in the lanes (with AVX-512)
@example(g=Geometry(2, 3, 32, 32, 3, 3, 1, 1, 1, 1), f=32, groups=1, dtype=np.float32,
         kind="special", seed=1, nt=2, level=SIMD_LEVELS[-1], lanes="auto", activation=(1, 0.0),
         with_bias=True)  # the implicit product (with AVX-512), bands of 8 rows
@example(g=Geometry(3, 5, 21, 27, 3, 3, 2, 2, 1, 1), f=13, groups=1, dtype=np.float64,
         kind="normal", seed=2, nt=3, level=min(1, SIMD_LEVELS[-1]), lanes="auto",
         activation=(2, 0.25), with_bias=False)  # the unfolded product (with AVX2)
@example(g=Geometry(2, 4, 9, 7, 3, 3, 1, 1, 0, 0), f=6, groups=2, dtype=np.float32,
         kind="normal", seed=3, nt=2, level=0, lanes="auto", activation=(2, 3.0),
         with_bias=True)  # BLAS, groups
def test_conv2d_forward_activation_gives_the_activation_kernels_bits(
        g, f, groups, dtype, kind, seed, nt, level, lanes, activation, with_bias):
    g, _, x, w, b, out_shape = _grouped_conv(g, f, groups, dtype, kind, seed, with_bias)
    code, slope = activation
    args = (*g.conv_params(), groups)
    compiled, reference = _pair("conv2d_forward")
    previous = _conv._use_lanes(lanes)
    try:
        with _simd_cap(level), np.errstate(invalid="ignore", over="ignore"):
            for run in (lambda *a: compiled(*a, nt), reference):
                plain = run(x, w, b, *args, 0, 0.0, _garbage(out_shape, dtype, 7.0)).reshape(-1)
                expected = (fastcnn.reference.relu(plain, plain.copy()) if code == 1 else
                            fastcnn.reference.leaky_relu(plain, slope, plain.copy()))
                fused = run(x, w, b, *args, code, slope, _garbage(out_shape, dtype, -3.0))
                _assert_same(fused.reshape(-1), expected)
    finally:
        _conv._use_lanes(previous)
    for run in (lambda *a: compiled(*a, nt), reference):
        with pytest.raises(ValueError, match="activation must be 0, 1 or 2, got 3"):
            run(x, w, b, *args, 3, 0.0, np.empty(out_shape, dtype))


# The backward applies the gradient of a ReLU or LeakyReLU whose output is
# its input x (the activation before a Conv2D) to dx as it writes it: the
# bits of the activation's own backward kernel after the convolution's,
# whichever way dx is computed (the fold, or the transposed convolution of
# implicit_input_grad with AVX-512), and in the twin likewise.
@hsettings(60)
@given(g=conv_geometries(max_n=3, max_c=20, max_k=5, max_d=2, max_p=2, extra=24),
       f=st.integers(1, 24), groups=st.sampled_from([1, 2]), dtype=dtypes,
       kind=st.sampled_from(["normal", "special"]), seed=seeds, nt=threads,
       level=st.sampled_from(SIMD_LEVELS), chunk=st.integers(1, 3),
       activation=st.sampled_from([(1, 0.0), (2, 0.1), (2, 0.0), (2, 3.0)]))
@example(g=Geometry(2, 32, 20, 20, 3, 3, 1, 1, 1, 1), f=16, groups=1, dtype=np.float32,
         kind="special", seed=0, nt=2, level=SIMD_LEVELS[-1], chunk=1,
         activation=(2, 0.1))  # the transposed convolution (with AVX-512), stride 1
@example(g=Geometry(3, 32, 34, 33, 3, 3, 2, 2, 1, 1), f=24, groups=1, dtype=np.float64,
         kind="normal", seed=1, nt=3, level=SIMD_LEVELS[-1], chunk=2,
         activation=(1, 0.0))  # ... by phases of stride 2, bands of 8 rows
@example(g=Geometry(2, 6, 9, 11, 3, 3, 2, 2, 1, 1), f=8, groups=2, dtype=np.float32,
         kind="normal", seed=2, nt=2, level=0, chunk=2, activation=(2, 3.0))  # the fold, groups
def test_conv2d_backward_activation_gives_the_activation_kernels_bits(
        g, f, groups, dtype, kind, seed, nt, level, chunk, activation):
    g, rng, x, w, _, out_shape = _grouped_conv(g, f, groups, dtype, kind, seed, False)
    dout = make_values(rng, out_shape, dtype, kind)
    f = out_shape[1]
    code, slope = activation
    args = (*g.conv_params(), groups, chunk)
    parts = -(-g.n // chunk)
    compiled, reference = _pair("conv2d_backward")
    with _simd_cap(level), np.errstate(invalid="ignore", over="ignore"):
        for run in (lambda *a: compiled(*a, nt), reference):
            for want_dw in (True, False):
                grads = [(_garbage(g.shape, dtype, fill),
                          _garbage((parts * want_dw, *w.shape), dtype, fill),
                          _garbage((parts * want_dw, f), dtype, fill)) for fill in (7.0, -3.0)]
                run(dout, x, w, *args, 0, 0.0, *grads[0])
                run(dout, x, w, *args, code, slope, *grads[1])
                plain = grads[0][0].reshape(-1)
                expected = (fastcnn.reference.relu_backward(plain, x.reshape(-1), plain.copy())
                            if code == 1 else fastcnn.reference.leaky_relu_backward(
                                plain, x.reshape(-1), slope, plain.copy()))
                _assert_same(grads[1][0].reshape(-1), expected)
                for got, same in zip(grads[1][1:], grads[0][1:]):
                    _assert_same(got, same)  # the parameters' gradients do not change
    for run in (lambda *a: compiled(*a, nt), reference):
        with pytest.raises(ValueError, match="activation must be 0, 1 or 2, got -1"):
            run(dout, x, w, *args, -1, 0.0, np.empty(g.shape, dtype),
                np.empty((parts, *w.shape), dtype), np.empty((parts, f), dtype))


# ... and, on planes (per phase of the stride) of at least 256 cells, the
# input gradient as the forward of the transposed convolution
# (implicit_input_grad), phase by phase with strides, which sums each cell's
# terms in another order than the GEMM and the fold: the same to rounding,
# NaN and infinities included (filters that are not finite go the GEMM's
# way, whose fold adds no padding), and the same bits at every thread
# count. Cases with strides: odd sizes (phases of unequal widths), no
# padding, strides 3, a dilation that leaves phases no tap (zero), phases
# of at most half a vector (two rows to a segment).

@_avx512_level
@pytest.mark.parametrize("g, f", [
    (Geometry(2, 6, 16, 16, 5, 5, 1, 1, 0, 0), 16),
    (Geometry(3, 13, 20, 18, 3, 3, 1, 1, 1, 1), 7),
    (Geometry(1, 7, 17, 33, 3, 2, 1, 1, 3, 0, 2, 3), 25),
    (Geometry(2, 8, 16, 16, 1, 1, 1, 1, 0, 0), 5),
    (Geometry(1, 6, 24, 12, 2, 4, 1, 1, 1, 2), 1),
    (Geometry(2, 9, 32, 33, 3, 3, 2, 2, 1, 1), 7),
    (Geometry(2, 6, 34, 40, 5, 5, 2, 2, 2, 2), 9),
    (Geometry(2, 7, 33, 37, 3, 3, 2, 2, 0, 0), 6),
    (Geometry(1, 6, 51, 54, 4, 3, 3, 3, 1, 0), 4),
    (Geometry(1, 8, 40, 36, 3, 3, 2, 2, 1, 1, 2, 2), 5),
    (Geometry(1, 13, 20, 16, 3, 3, 2, 2, 1, 1), 5),
])
@_both_dtypes
@pytest.mark.parametrize("kind", ["normal", "special", "infinite filter"])
def test_implicit_input_gradient_agrees_with_the_fold(level, g, f, dtype, kind):
    rng = np.random.default_rng(12)
    x = make_values(rng, g.shape, dtype, "normal")
    w = make_values(rng, (f, g.c * g.kh * g.kw), dtype, "normal")
    if kind == "infinite filter":
        w[-1, -1] = -np.inf
    dout = make_values(rng, (g.n, f, g.conv_oh, g.conv_ow), dtype,
                       "special" if kind == "special" else "normal")
    compiled, reference = _pair("conv2d_backward")
    args = (*g.conv_params(), 1, 1, 0, 0.0)
    none = (np.empty((0, f, w.shape[1]), dtype), np.empty((0, f), dtype))
    grads = []
    with np.errstate(invalid="ignore", over="ignore"):
        for cap, nt in ((level, 2), (level, 1), (1, 1)):
            with _simd_cap(cap):
                grads.append(compiled(dout, x, w, *args, _garbage(g.shape, dtype, 7.0), *none, nt))
        bound = reference(np.abs(dout), x, np.abs(w), *args, np.empty(g.shape, dtype), *none)
    _assert_same(grads[0], grads[1])
    _assert_sum_close(grads[0], grads[2], bound)


# ... and, with windows wider than a cell, at least 64 taps and a vector of
# filters, the weight gradient from padded copies of the input
# (implicit_weight_grad), which sums each weight's terms cell by cell over a
# chunk's samples, where the GEMM sums them sample by sample: the same to
# rounding, NaN and infinities included, and the same bits at every thread
# count. Cases: panels of 4, 2 and 1 vectors of filters and a partial one,
# a partial tile of taps, bands of rows, strides, dilations, narrow rows.

@_avx512_level
@pytest.mark.parametrize("g, f", [
    (Geometry(5, 16, 12, 12, 3, 3, 1, 1, 1, 1), 16),
    (Geometry(3, 4, 21, 19, 5, 5, 2, 2, 2, 2), 33),
    (Geometry(4, 3, 40, 37, 5, 5, 1, 1, 2, 2), 70),
    (Geometry(2, 8, 17, 9, 3, 3, 1, 1, 0, 0, 2, 2), 20),
    (Geometry(3, 7, 15, 30, 3, 4, 3, 2, 1, 2), 16),
])
@_both_dtypes
@pytest.mark.parametrize("kind", ["normal", "special"])
def test_implicit_weight_gradient_agrees_with_the_gemm(level, g, f, dtype, kind):
    rng = np.random.default_rng(13)
    x = make_values(rng, g.shape, dtype, kind)
    w = make_values(rng, (f, g.c * g.kh * g.kw), dtype, "normal")
    dout = make_values(rng, (g.n, f, g.conv_oh, g.conv_ow), dtype, kind)
    compiled, reference = _pair("conv2d_backward")
    chunk = 2
    parts = -(-g.n // chunk)
    args = (*g.conv_params(), 1, chunk, 0, 0.0, np.empty((0, *g.shape[1:]), dtype))

    def parts_of(value):
        return _garbage((parts, f, w.shape[1]), dtype, value), _garbage((parts, f), dtype, value)

    grads = []
    with np.errstate(invalid="ignore", over="ignore"):
        for cap, nt in ((level, 2), (level, 1), (1, 1)):
            grads.append(parts_of(7.0))
            with _simd_cap(cap):
                compiled(dout, x, w, *args, *grads[-1], nt)
        bounds = parts_of(0.0)
        reference(np.abs(dout), np.abs(x), w, *args, *bounds)
    for got, one, gemm, bound in zip(*grads, bounds):
        _assert_same(got, one)
        _assert_sum_close(got, gemm, bound)


@hsettings(80)
@given(problem=conv_problems(), f=st.integers(1, 9), dtype=dtypes,
       kind=st.sampled_from(["normal", "ties", "special"]), seed=seeds, layout=layouts,
       with_bias=st.booleans(), n=st.integers(0, 5))
def test_public_conv2d_direct_equals_gemm(problem, f, dtype, kind, seed, layout, with_bias, n):
    # Forced direct: every backend and layout gives one result (the direct
    # forward's bits on both backends), and the GEMM driver's to rounding,
    # NaN and infinities included (special values in x and the weight).
    g, _, _, kwargs = problem
    rng = np.random.default_rng(seed)
    x = make_values(rng, (n, *g.shape[1:]), dtype, kind)
    w = make_values(rng, (f, g.c, g.kh, g.kw), dtype, kind)
    b = make_values(rng, (f,), dtype, kind)
    arrays = [x, w, b] if with_bias else [x, w]
    with np.errstate(invalid="ignore"):
        with _backend.use_conv_algorithm("direct"):
            # (a stride beyond the window's extent runs the GEMM driver even so)
            win = _validation.conv_window(x.shape, w.shape[2:], **kwargs)
            direct = F._direct_eligible(x, w, win, 1)
            out = _all_ways(F.conv2d, arrays, layout, gemm=not direct, **kwargs)
        with _backend.use_conv_algorithm("gemm"):
            expected = F.conv2d(*arrays, **kwargs)
        _assert_sum_close(out, expected, F.conv2d(*[np.abs(a) for a in arrays], **kwargs))
        dout = make_values(rng, out.shape, dtype, kind)
        with _backend.use_conv_algorithm("direct"):
            grads = _all_ways(lambda d, x_, w_: F.conv2d_backward(d, x_, w_, **kwargs),
                              [dout, x, w], layout, gemm=True)
        with _backend.use_conv_algorithm("gemm"):
            expected = F.conv2d_backward(dout, x, w, **kwargs)
            bounds = F.conv2d_backward(np.abs(dout), np.abs(x), np.abs(w), **kwargs)
    for got, want, bound in zip(grads, expected, bounds):
        _assert_sum_close(got, want, bound)


def test_direct_convolution_is_chosen_for_few_taps():
    x, win = np.ones((2, 3, 16, 16)), _validation.conv_window((2, 3, 16, 16), 3, 1, 1, 1)
    many = _validation.conv_window((2, 16, 8, 8), 3, 1, 1, 1)
    assert F._direct_eligible(x, np.ones((4, 27)), win, 1) == (
        _backend.direct_simd() and not _backend.implicit_conv())
    small = _validation.conv_window((2, 3, 8, 8), 3, 1, 1, 1)
    assert not F._direct_eligible(x[..., :8, :8], np.ones((4, 27)), small, 1)  # short rows
    assert not F._direct_eligible(np.ones((2, 16, 8, 8)), np.ones((4, 144)), many, 1)
    assert not F._direct_eligible(x, np.ones((64, 27)), win, 1)  # many filters
    assert not F._direct_eligible(x, np.ones((3, 9)), win, 3)  # groups: GEMM only
    with _backend.use_conv_algorithm("direct"):
        assert F._direct_eligible(np.ones((2, 16, 8, 8)), np.ones((4, 144)), many, 1)
        assert not F._direct_eligible(x, np.ones((3, 9)), win, 3)
    with _backend.use_conv_algorithm("gemm"):
        assert not F._direct_eligible(x, np.ones((4, 27)), win, 1)
    with pytest.raises(ValueError, match="name"):
        with _backend.use_conv_algorithm("winograd?"):
            pass  # pragma: no cover


@hsettings(100)
@given(g=pool_geometries(), dtype=dtypes,
       kind=st.sampled_from(["normal", "ties", "special", "neg_inf", "zeros"]), seed=seeds,
       layout=layouts)
def test_public_max_pool2d(g, dtype, kind, seed, layout):
    x = make_values(np.random.default_rng(seed), g.shape, dtype, kind)
    out, idx = _all_ways(F.max_pool2d, [x], layout, return_indices=True, **g.max_pool_kwargs())
    assert out.shape == g.pool_shape and out.dtype == dtype
    assert idx.shape == g.pool_shape and idx.dtype == np.int64
    only = _all_ways(F.max_pool2d, [x], "C", **g.max_pool_kwargs())
    _assert_same(only, out)


index_dtypes = st.sampled_from([np.int64, np.int32, np.uint32, np.int16, np.uint64, np.intp])


@hsettings(100)
@given(g=pool_geometries(), dtype=dtypes, seed=seeds, layout=layouts, index_dtype=index_dtypes)
def test_public_max_pool2d_backward(g, dtype, seed, layout, index_dtype):
    rng = np.random.default_rng(seed)
    x = make_values(rng, g.shape, dtype, "ties")
    with fastcnn.use_backend("numpy"):
        _, idx = F.max_pool2d(x, return_indices=True, **g.max_pool_kwargs())
    dout = make_values(rng, g.pool_shape, dtype, "normal")
    dx = _all_ways(F.max_pool2d_backward, [dout, idx.astype(index_dtype)], layout,
                   input_shape=g.shape)
    assert dx.shape == g.shape and dx.dtype == dtype


@hsettings(100)
@given(g=pool_geometries(dilation=False), dtype=dtypes,
       kind=st.sampled_from(["normal", "ties", "special"]), seed=seeds, layout=layouts,
       count_include_pad=st.booleans(), divisor_override=st.sampled_from([None, None, 1, 5]))
def test_public_avg_pool2d_and_backward(g, dtype, kind, seed, layout, count_include_pad,
                                        divisor_override):
    rng = np.random.default_rng(seed)
    x = make_values(rng, g.shape, dtype, kind)
    kwargs = dict(g.avg_pool_kwargs(), count_include_pad=count_include_pad,
                  divisor_override=divisor_override)
    with np.errstate(invalid="ignore"):
        out = _all_ways(F.avg_pool2d, [x], layout, **kwargs)
    assert out.shape == g.pool_shape and out.dtype == dtype
    dout = make_values(rng, g.pool_shape, dtype, "normal")
    dx = _all_ways(F.avg_pool2d_backward, [dout], layout, input_shape=g.shape, **kwargs)
    assert dx.shape == g.shape and dx.dtype == dtype


@hsettings(100)
@given(problem=adaptive_problems(max_n=2), dtype=dtypes, kind=adaptive_kinds, seed=seeds,
       layout=layouts, none_axis=st.sampled_from([None, 0, 1]))
def test_public_adaptive_pools_and_backward(problem, dtype, kind, seed, layout, none_axis):
    shape, output_size = problem
    if none_axis is not None:  # None keeps the input's size on that axis
        output_size = tuple(None if axis == none_axis else size
                            for axis, size in enumerate(output_size))
    pool_shape = shape[:2] + tuple(shape[2 + axis] if size is None else size
                                   for axis, size in enumerate(output_size))
    rng = np.random.default_rng(seed)
    x = make_values(rng, shape, dtype, kind)
    with np.errstate(invalid="ignore"):
        out = _all_ways(F.adaptive_avg_pool2d, [x], layout, output_size=output_size)
    assert out.shape == pool_shape and out.dtype == dtype
    out, idx = _all_ways(F.adaptive_max_pool2d, [x], layout, output_size=output_size,
                         return_indices=True)
    assert out.shape == idx.shape == pool_shape and idx.dtype == np.int64
    _assert_same(_all_ways(F.adaptive_max_pool2d, [x], "C", output_size=output_size), out)
    dout = make_values(rng, pool_shape, dtype, "normal")
    dx = _all_ways(F.adaptive_avg_pool2d_backward, [dout], layout, input_shape=shape)
    assert dx.shape == shape and dx.dtype == dtype
    dx = _all_ways(F.adaptive_max_pool2d_backward, [dout, idx], layout, input_shape=shape)
    assert dx.shape == shape and dx.dtype == dtype


# ---------------------------------------------------------------------------
# Extreme geometry values: either the right answer (that of the equivalent
# small geometry) or a ValueError naming the argument, the same on both
# backends. Never a silently wrong result, an OverflowError or a MemoryError.

BIG = 2**63 - 1


def _global(x):
    return x.reshape(x.shape[:2] + (1, -1))


def _right_or_clear_error(call, expected, names):
    """Run `call` on every backend; all must return `expected` or all raise a
    ValueError whose message names one of `names`."""
    outcomes = []
    for backend in BACKENDS:
        with fastcnn.use_backend(backend):
            try:
                got = _flatten(call())
            except ValueError as exc:
                assert any(n in str(exc) for n in names), f"{backend}: {exc}"
                outcomes.append("ValueError")
                continue
        for g, e in zip(got, _flatten(expected)):
            _assert_same(g, e)
        outcomes.append("result")
    assert len(set(outcomes)) == 1, dict(zip(BACKENDS, outcomes))


HUGE_CASES = [
    # (op, huge kwargs, equivalent small kwargs, argument names): a stride
    # beyond the input leaves a single window, whatever its value.
    pytest.param(F.im2col, dict(kernel_size=2, stride=BIG), dict(kernel_size=2, stride=9),
                 ["stride"], id="im2col-stride"),
    pytest.param(F.im2col, dict(kernel_size=2, stride=(1, BIG - 1), padding=1),
                 dict(kernel_size=2, stride=(1, 11), padding=1), ["stride"],
                 id="im2col-stride-w-padded"),
    pytest.param(F.im2col, dict(kernel_size=1, stride=2**62), dict(kernel_size=1, stride=9),
                 ["stride"], id="im2col-stride-2**62"),
    pytest.param(F.max_pool2d, dict(kernel_size=2, stride=BIG, return_indices=True),
                 dict(kernel_size=2, stride=9, return_indices=True), ["stride"],
                 id="max_pool2d-stride"),
    pytest.param(F.avg_pool2d, dict(kernel_size=3, stride=(BIG, 2), padding=1),
                 dict(kernel_size=3, stride=(11, 2), padding=1), ["stride"],
                 id="avg_pool2d-stride"),
]


@pytest.mark.parametrize("op, huge, small, names", HUGE_CASES)
def test_huge_geometry_values(op, huge, small, names):
    x = make_values(np.random.default_rng(5), (2, 3, 8, 8), np.float64, "normal")
    with fastcnn.use_backend("numpy"):
        expected = op(x, **small)
    _right_or_clear_error(lambda: op(x, **huge), expected, names)


def test_huge_stride_col2im():
    cols = make_values(np.random.default_rng(6), (2, 12, 1), np.float64, "normal")
    with fastcnn.use_backend("numpy"):
        expected = F.col2im(cols, (8, 8), 2, stride=9)
    _right_or_clear_error(lambda: F.col2im(cols, (8, 8), 2, stride=BIG), expected, ["stride"])


@pytest.mark.parametrize("algorithm", ["auto", "gemm", "direct"])
def test_conv2d_stride_beyond_the_input_leaves_one_window(algorithm):
    # The direct kernels copy the input once per column phase of the stride:
    # such a stride once asked them for 2**35 scratch cells (a MemoryError).
    rng = np.random.default_rng(8)
    x = make_values(rng, (2, 3, 8, 8), np.float64, "normal")
    weight = make_values(rng, (4, 3, 2, 2), np.float64, "normal")
    dout = make_values(rng, (2, 4, 1, 1), np.float64, "normal")
    for backend in BACKENDS:
        with fastcnn.use_backend(backend), _backend.use_conv_algorithm(algorithm):
            for stride in (2**31 - 1, (9, 2**31 - 1), (2**31 - 1, 9)):
                np.testing.assert_allclose(F.conv2d(x, weight, stride=stride),
                                           F.conv2d(x, weight, stride=9), rtol=1e-13)
                for got, expected in zip(F.conv2d_backward(dout, x, weight, stride=stride),
                                         F.conv2d_backward(dout, x, weight, stride=9)):
                    np.testing.assert_allclose(got, expected, rtol=1e-13)


@pytest.mark.parametrize("algorithm", ["auto", "gemm", "direct"])
def test_conv2d_widely_dilated_window(algorithm):
    # "same" padding of a 2x2 window dilated by 32769 once asked the direct
    # kernels for a 32770 x 32770 scratch band (a MemoryError).
    rng = np.random.default_rng(9)
    x, dout = (make_values(rng, (1, 2, 3, 3), np.float64, "normal") for _ in range(2))
    weight = make_values(rng, (2, 2, 2, 2), np.float64, "normal")
    # (the NumPy twin pads the input itself: 32772 x 32772 planes, seconds)
    for backend in BACKENDS[:1]:
        with fastcnn.use_backend(backend), _backend.use_conv_algorithm(algorithm):
            # both taps of every window fall in the padding (16384 cells before
            # the input, 16385 after)
            out = F.conv2d(x, weight, padding="same", dilation=32769)
            np.testing.assert_array_equal(out, np.zeros((1, 2, 3, 3)))
            dx, dw, db = F.conv2d_backward(dout, x, weight, padding="same", dilation=32769)
            np.testing.assert_array_equal(dx, np.zeros_like(x))
            np.testing.assert_array_equal(dw, np.zeros_like(weight))
            np.testing.assert_allclose(db, dout.sum(axis=(0, 2, 3)), rtol=1e-13)


# The padded copies of the implicit products are bounded (csrc/conv.pyx's
# IMPLICIT_MAX_SCRATCH): above, the copy of a band of 3x3 planes would be
# 32772 x 32777 cells, 17 GB in float64, which an overcommitting malloc
# grants and the padding then fills. In a process whose address space is
# capped at 3 GiB that is a MemoryError; with the bound, a small unfolding.

_CAPPED_CONV = """
import os, resource, sys
sys.path.insert(0, {where!r})  # the fastcnn this test imported
import numpy as np
# (AddressSanitizer's shadow memory needs terabytes of address space; under
# tools/sanitize.sh its max_allocation_size_mb caps the allocations instead)
if "libasan" not in os.environ.get("LD_PRELOAD", ""):
    limit = 3 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import fastcnn
from fastcnn import functional as F
rng = np.random.default_rng(9)
with fastcnn.use_backend("cython"):  # (the NumPy twin pads the planes itself: 32 GB)
    for dtype in (np.float32, np.float64):
        x, dout = (rng.standard_normal((1, 8, 3, 3)).astype(dtype) for _ in range(2))
        weight = rng.standard_normal((8, 8, 2, 2)).astype(dtype)
        out = F.conv2d(x, weight, padding="same", dilation=32769)
        dx, dw, db = F.conv2d_backward(dout, x, weight, padding="same", dilation=32769)
        assert not out.any() and not dx.any() and not dw.any(), "windows all in the padding"
"""


@pytest.mark.skipif(platform.system() != "Linux", reason="RLIMIT_AS caps the address space on Linux")
def test_padded_copies_stay_small_for_windows_far_larger_than_the_input():
    import os
    import subprocess
    import sys

    _pair("conv2d_forward")  # the compiled kernels, or a skip in a NumPy-only run
    where = os.path.dirname(os.path.dirname(os.path.abspath(fastcnn.__file__)))
    done = subprocess.run([sys.executable, "-c", _CAPPED_CONV.format(where=where)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_kernel_much_larger_than_input_is_a_global_pool():
    # kernel 2**40 with padding 2**39 covers the whole 8x8 input in one window.
    x = make_values(np.random.default_rng(7), (2, 3, 8, 8), np.float64, "normal")
    flat = _global(x)
    _right_or_clear_error(
        lambda: F.max_pool2d(x, 2**40, padding=2**39, return_indices=True),
        (flat.max(axis=-1, keepdims=True), flat.argmax(axis=-1)[..., None]),
        ["kernel_size", "padding"])
    # the average sums 64 cells in some order: compare within a tolerance
    for backend in BACKENDS:
        with fastcnn.use_backend(backend):
            try:
                avg = F.avg_pool2d(x, 2**40, padding=2**39, count_include_pad=False)
            except ValueError as exc:
                assert "kernel_size" in str(exc) or "padding" in str(exc)
                continue
        np.testing.assert_allclose(avg, flat.mean(axis=-1, keepdims=True), rtol=1e-14)


# ---------------------------------------------------------------------------
# Kernels between convolutions (batch norm, activations, loss, optimizers), kernel level.
#
# Element-wise kernels compute each cell with the twin's operations in the
# twin's order (in float64 for batch norm, rounded once): BITWISE equal,
# NaN and infinities included. Reductions (batch norm statistics and the
# backward's sums) add in another order (tiles of rows, four rows at a time)
# and agree to rounding; the tolerances are in each test.

# the builds in use: AVX2 where the CPU has it
from fastcnn._backend import _activation, _norm  # noqa: E402
from fastcnn._kernels import activation as _activation_baseline  # noqa: E402
from fastcnn._kernels import norm as _norm_baseline  # noqa: E402


@contextlib.contextmanager
def _norm_tiling(piece_cells, tile_cells, module=_norm):
    previous = module._tiling_sizes(piece_cells, tile_cells)
    try:
        yield
    finally:
        module._tiling_sizes(*previous)


#: Offsets far larger than the spread: the statistics must keep their precision.
OFFSETS = {np.dtype(np.float32): 1e4, np.dtype(np.float64): 1e8}


def _bn_values(rng, shape, dtype, kind):
    if kind == "offset":
        return (OFFSETS[np.dtype(dtype)] + rng.standard_normal(shape)).astype(dtype)
    return make_values(rng, shape, dtype, kind)


@st.composite
def bn_shapes(draw):
    """(N, C, L) with ones, odd sizes, channels split into pieces (L above
    the piece size) or grouped in pieces (L below), one tile or many."""
    n = draw(st.integers(1, 9))
    c = draw(st.integers(1, 5))
    length = draw(st.sampled_from([1, 2, 3, 7, 15, 16, 17, 40, 100]))
    return n, c, length


tilings = st.sampled_from([(1024, 16384), (1, 1), (3, 5), (16, 40), (40, 7), (7, 100)])
bn_kinds = st.sampled_from(["normal", "offset", "ties", "special", "zeros"])


def _bn_affine(rng, c, dtype, kind):
    """(mean, inv_std, weight, bias) of a normalisation; with `kind` "special"
    or "zeros", also zero, infinite and NaN scales and shifts (the fused
    ReLU's windows of every sort)."""
    mean, inv_std = rng.standard_normal(c), rng.random(c) + 0.1
    odd = kind if kind in ("special", "zeros") else "normal"
    return (mean, inv_std, make_values(rng, (c,), dtype, odd),
            make_values(rng, (c,), dtype, odd if kind == "special" else "normal"))


def _assert_sums_close(got, expected, scale, rtol):
    """float64 per-channel results: the same NaNs, else |got - expected| <= rtol * scale."""
    assert got.dtype == expected.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(got[~finite], expected[~finite])
    error = np.abs(got[finite] - expected[finite])
    assert np.all(error <= rtol * scale[finite]), (got, expected)


@hsettings(200)
@given(shape=bn_shapes(), dtype=dtypes, kind=bn_kinds, seed=seeds, nt=threads, tiling=tilings)
@example(shape=(37, 5, 1100), dtype=np.float32, kind="offset", seed=0, nt=2,
         tiling=(1024, 16384))
@example(shape=(3000, 3, 1), dtype=np.float64, kind="offset", seed=1, nt=3,
         tiling=(1024, 16384))
def test_kernel_batch_norm_stats(shape, dtype, kind, seed, nt, tiling):
    # Both sum in float64, the twin in two passes over x, the kernel over
    # tiles (shifted by each channel's first value, two passes per tile, the
    # tiles' moments combined about the mean). Tolerances: the means within
    # 1e-13 of the largest |x| of the channel (float64 sums of up to a few
    # thousand values err by a few ulps of their largest terms); the
    # variances within 1e-12 of themselves plus the square of that mean
    # tolerance (a mean off by d changes the twin's variance by d**2).
    compiled, reference = _pair("batch_norm_stats")
    x = _bn_values(np.random.default_rng(seed), shape, dtype, kind)
    c = shape[1]
    mean_c, var_c = np.full(c, 7.0), np.full(c, 7.0)
    mean_r, var_r = np.full(c, -3.0), np.full(c, -3.0)
    with _norm_tiling(*tiling):
        res_c = compiled(x, mean_c, var_c, nt)
    with np.errstate(invalid="ignore"):
        res_r = reference(x, mean_r, var_r)
    assert res_c[0] is mean_c and res_c[1] is var_c
    assert res_r[0] is mean_r and res_r[1] is var_r
    largest = np.abs(x.astype(np.float64)).max(axis=(0, 2))
    _assert_sums_close(mean_c, mean_r, largest, 1e-13)
    _assert_sums_close(var_c, var_r, np.abs(var_r) + 1e-14 * largest**2, 1e-12)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 500), (300, 2, 1), (3, 2, 1500)])
def test_kernel_batch_norm_stats_are_exact_to_rounding_far_from_zero(dtype, shape):
    # 1e4 + N(0, 1) in float32 and 1e8 + N(0, 1) in float64, a spread of
    # 1e-4 and 1e-8 of the offset: the mean to a few ulps and the variance
    # to 1e-13 of the exact values (rational arithmetic), with the default
    # tiling and with many small tiles. (A one-pass sum of squares gets no
    # digit of the float64 variance right.)
    from fractions import Fraction

    compiled, reference = _pair("batch_norm_stats")
    x = _bn_values(np.random.default_rng(3), shape, dtype, "offset")
    for c in range(shape[1]):
        values = [Fraction(float(v)) for v in x[:, c].ravel()]
        exact_mean = sum(values) / len(values)
        exact_var = sum((v - exact_mean) ** 2 for v in values) / len(values)
        for tiling in ((1024, 16384), (7, 20)):
            with _norm_tiling(*tiling):
                mean, var = compiled(x, np.empty(shape[1]), np.empty(shape[1]), 2)
            assert abs(Fraction(mean[c]) - exact_mean) <= 4 * np.spacing(float(exact_mean))
            assert abs(Fraction(var[c]) - exact_var) <= Fraction(1e-13) * exact_var
        mean, var = reference(x, np.empty(shape[1]), np.empty(shape[1]))
        assert abs(Fraction(var[c]) - exact_var) <= Fraction(1e-13) * exact_var


@hsettings(150)
@given(shape=bn_shapes(), dtype=dtypes, kind=bn_kinds, seed=seeds, nt=threads, tiling=tilings,
       relu=st.booleans())
def test_kernel_batch_norm_elemt(shape, dtype, kind, seed, nt, tiling, relu):
    # (x - mean) * (weight * inv_std) + bias in float64, rounded once: exact
    # (and the fused ReLU: exact).
    compiled, reference = _pair("batch_norm_elemt")
    rng = np.random.default_rng(seed)
    x = _bn_values(rng, shape, dtype, kind)
    affine = _bn_affine(rng, shape[1], dtype, kind)
    out_c = _garbage(shape, dtype, 7.0)
    out_r = _garbage(shape, dtype, -3.0)
    with _norm_tiling(*tiling), np.errstate(invalid="ignore", over="ignore"):
        assert compiled(x, *affine, relu, out_c, nt) is out_c
        assert reference(x, *affine, relu, out_r) is out_r
    _assert_same(out_c, out_r)


@hsettings(150)
@given(shape=bn_shapes(), dtype=dtypes, kind=bn_kinds, seed=seeds, nt=threads, tiling=tilings,
       relu=st.booleans())
def test_kernel_batch_norm_backward_reduce(shape, dtype, kind, seed, nt, tiling, relu):
    # Plain float64 sums in two orders: within 1e-13 of the sum of the
    # terms' magnitudes (a few ulps of the largest partial sum). With the
    # fused ReLU, the terms it zeroes are the same: one more or less would
    # move a sum by about a term, far beyond that bound.
    compiled, reference = _pair("batch_norm_backward_reduce")
    rng = np.random.default_rng(seed)
    x = _bn_values(rng, shape, dtype, kind)
    dout = make_values(rng, shape, dtype, "normal" if kind == "offset" else kind)
    c = shape[1]
    _, inv_std, weight, bias = _bn_affine(rng, c, dtype, kind)
    with np.errstate(invalid="ignore"):
        mean = fastcnn.reference.batch_norm_stats(x, np.empty(c), np.empty(c))[0]
    args = (dout, x, mean, inv_std, weight, bias, relu)
    sums_c = np.full(c, 7.0), np.full(c, 7.0)
    sums_r = np.full(c, -3.0), np.full(c, -3.0)
    with _norm_tiling(*tiling), np.errstate(invalid="ignore", over="ignore"):
        res_c = compiled(*args, *sums_c, nt)
        res_r = reference(*args, *sums_r)
        dout = fastcnn.reference._through_relu(*args)  # the terms the sums add
        terms = np.abs(dout * (x - mean[:, None]))
    assert res_c[0] is sums_c[0] and res_c[1] is sums_c[1]
    assert res_r[0] is sums_r[0] and res_r[1] is sums_r[1]
    _assert_sums_close(sums_c[0], sums_r[0], np.abs(dout).sum(axis=(0, 2), dtype=np.float64),
                       1e-13)
    _assert_sums_close(sums_c[1], sums_r[1], terms.sum(axis=(0, 2)), 1e-13)


@hsettings(150)
@given(shape=bn_shapes(), dtype=dtypes, kind=bn_kinds, seed=seeds, nt=threads, tiling=tilings,
       training=st.booleans(), relu=st.booleans())
@example(shape=(3, 2, 20), dtype=np.float32, kind="special", seed=0, nt=2, tiling=(1024, 16384),
         training=True, relu=True)
def test_kernel_batch_norm_backward_elemt(shape, dtype, kind, seed, nt, tiling, training, relu):
    # The same per-channel coefficients, then the same float64 operations
    # per cell, rounded once: exact. The fused ReLU zeroes dout where the
    # twin's recomputed forward value is not positive; the kernel compares
    # x with its window's ends instead: the same cells, bit for bit.
    compiled, reference = _pair("batch_norm_backward_elemt")
    rng = np.random.default_rng(seed)
    x = _bn_values(rng, shape, dtype, kind)
    dout = make_values(rng, shape, dtype, "normal" if kind == "offset" else kind)
    c = shape[1]
    mean, inv_std, weight, bias = _bn_affine(rng, c, dtype, kind)
    sum_dout, sum_dout_xc = rng.standard_normal(c) * 10, rng.standard_normal(c) * 10
    args = (dout, x, mean, inv_std, weight, bias, relu, sum_dout, sum_dout_xc, training)
    out_c = _garbage(shape, dtype, 7.0)
    out_r = _garbage(shape, dtype, -3.0)
    with _norm_tiling(*tiling), np.errstate(invalid="ignore", over="ignore"):
        assert compiled(*args, out_c, nt) is out_c
        assert reference(*args, out_r) is out_r
    _assert_same(out_c, out_r)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mean, scale, shift", [
    (0.3, 1.7, -0.2), (-5.0, -3.0, 1.0), (1e4, 1e-3, 7.0), (0.0, 0.0, 1.0), (0.0, 0.0, -1.0),
    (2.0, 1e30, 3.0), (0.1, -1e-30, 0.0), (1e30, 1.0, -1e30),
])
def test_fused_relu_window_ends_to_the_last_float(dtype, mean, scale, shift):
    # The kernels find the x whose normalised value is positive by bisection
    # over the floats; next to the window's ends every float counts: the 400
    # floats nearest the value's root, and the extremes, give the twin's
    # cells (the forward's value recomputed), bit for bit.
    compiled, reference = _pair("batch_norm_backward_elemt")
    root = np.array(mean - shift / scale if scale else 0.0, dtype)
    near = [root]
    for direction in (np.inf, -np.inf):
        v = root
        for _ in range(200):
            v = np.nextafter(v, np.array(direction, dtype))
            near.append(v)
    info = np.finfo(dtype)
    x = np.array(near + [np.inf, -np.inf, np.nan, info.max, -info.max, info.tiny, 0.0, -0.0],
                 dtype).reshape(1, 1, -1)
    dout = np.ones_like(x)
    args = (dout, x, np.array([mean]), np.array([scale]), np.ones(1, dtype),
            np.array([shift], dtype), True, np.zeros(1), np.zeros(1), False)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = reference(*args, np.empty_like(x))
    assert 0 < np.count_nonzero(expected) < x.size or not scale
    _assert_same(compiled(*args, np.empty_like(x), 1), expected)
    # (with a zero scale, dx is zero: the reduction counts the cells let through)
    reduce_c, reduce_r = _pair("batch_norm_backward_reduce")
    with np.errstate(invalid="ignore", over="ignore"):
        passed = reduce_r(*args[:7], np.empty(1), np.empty(1))[0]
    assert 0 < passed[0] < x.size or (scale == 0 and shift < 0)
    assert reduce_c(*args[:7], np.empty(1), np.empty(1), 1)[0] == passed


# Flat sizes around the element-wise kernels' block of 16384 cells.
flat_sizes = st.sampled_from([0, 1, 2, 7, 100, 16383, 16384, 16385, 40000])
slopes = st.sampled_from([0.01, 0.2, 0.1, -0.5, 0.0, 1.0, 3.3])


@hsettings(150)
@given(n=flat_sizes, dtype=dtypes, kind=st.sampled_from(["normal", "ties", "special", "zeros"]),
       seed=seeds, nt=threads, slope=slopes)
@example(n=16385, dtype=np.float32, kind="special", seed=0, nt=3, slope=0.1)
def test_kernel_activations(n, dtype, kind, seed, nt, slope):
    # Selects and one product per cell (the slope rounded to the dtype
    # first, as NumPy rounds a Python float): exact, NaN, infinities and the
    # sign of zeros included. (inf * 0 makes the twin warn.)
    rng = np.random.default_rng(seed)
    x = make_values(rng, (n,), dtype, kind)
    dout = make_values(rng, (n,), dtype, kind)
    for name, args in _relu_calls(x, dout, slope):
        compiled, reference = _pair(name)
        out_c = _garbage((n,), dtype, 7.0)
        out_r = _garbage((n,), dtype, -3.0)
        assert compiled(*args, out_c, nt) is out_c
        with np.errstate(invalid="ignore"):
            assert reference(*args, out_r) is out_r
        _assert_same(out_c, out_r)


@hsettings(100)
@given(n=flat_sizes, dtype=dtypes, kind=st.sampled_from(["normal", "special"]), seed=seeds,
       nt=threads, p=st.sampled_from([0.0, 1e-17, 0.3, 0.5, 0.9, 1.0]),
       key=st.sampled_from([0, 1, 2**63, 2**64 - 1, 0x243F6A8885A308D3]))
def test_kernel_dropout(n, dtype, kind, seed, nt, p, key):
    # Integer draws, a select and one product per cell: exact, NaN and
    # infinities included (a dropped infinity is NaN, as in PyTorch).
    x = make_values(np.random.default_rng(seed), (n,), dtype, kind)
    threshold, scale = math.ceil(p * 2.0**53), 0.0 if p == 1 else 1 / (1 - p)
    results = []
    for kernel, extra in zip(_pair("dropout"), ((nt,), ())):
        out, mask = _garbage((n,), dtype, 7.0), _garbage((n,), dtype, -3.0)
        with np.errstate(invalid="ignore"):
            assert kernel(x, key, threshold, scale, out, mask, *extra) == (out, mask)
        results.append((out, mask))
    for got, expected in zip(*results):
        _assert_same(got, expected)
    mask = results[0][1]
    assert set(np.unique(mask)) <= {dtype(0), dtype(scale)}


def test_dropout_draws_are_uniform_and_independent():
    # Each cell is dropped with probability p, whatever its neighbours and
    # the key; keys give different masks. 2**20 cells: 5 sigma is about 0.005.
    compiled, _ = _pair("dropout")
    n, x = 2**20, np.ones(2**20, np.float32)
    masks = []
    for p, key in [(0.1, 0), (0.5, 1), (0.5, 2), (0.9, 2**64 - 1)]:
        threshold = math.ceil(p * 2.0**53)
        mask = compiled(x, key, threshold, 1.0, np.empty(n, np.float32),
                        np.empty(n, np.float32), 2)[1] > 0
        assert abs(mask.mean() - (1 - p)) < 0.005, (p, key)
        # neighbours, and cells 2**k apart, keep independently of each other
        for gap in (1, 2, 64, 4096):
            both = (mask[gap:] & mask[:-gap]).mean()
            assert abs(both - (1 - p) ** 2) < 0.005, (p, key, gap)
        masks.append(mask)
    assert abs((masks[1] != masks[2]).mean() - 0.5) < 0.005  # two keys: independent masks


def _relu_calls(x, dout, slope):
    """``(kernel name, arguments)`` of the ReLU family's kernels."""
    return [("relu", (x,)), ("relu_backward", (dout, x)), ("leaky_relu", (x, slope)),
            ("leaky_relu_backward", (dout, x, slope)), ("add", (x, dout, False)),
            ("add", (x, dout, True))]


def _assert_within_ulps(got, expected, ulps):
    """Equal dtype and shape, the same NaNs and infinities, and finite values
    within `ulps` units in the last place of the expected ones."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(got[~finite], expected[~finite])
    error = np.abs(got[finite].astype(np.float64) - expected[finite])
    assert np.all(error <= ulps * np.spacing(np.abs(expected[finite]))), (
        np.max(error / np.spacing(np.abs(expected[finite]))))


@hsettings(150)
@given(n=flat_sizes, dtype=dtypes, kind=st.sampled_from(["normal", "wide", "special", "zeros"]),
       seed=seeds, nt=threads, alpha=st.sampled_from([1.0, 0.3, 1.6732632423543772]),
       scale=st.sampled_from([1.0, 1.0507009873554805]))
@example(n=16385, dtype=np.float32, kind="wide", seed=0, nt=3, alpha=1.0, scale=1.0)
def test_kernel_transcendental_activations(n, dtype, kind, seed, nt, alpha, scale):
    # The compiled kernels compute float32 tanh and sigmoid and elu's expm1
    # within an ulp of the exact values (1.1 for tanh; see the test below), and
    # call the C library for float64 tanh and sigmoid and elu_backward; the
    # twins call NumPy's vectorised functions (or SciPy's expit, which calls
    # the C library). NumPy's tanh and float32 exp are up to 3 ulps off
    # here: the outputs agree within 4 ulps, and elu_backward, whose exp goes
    # through three more products into a result of half its size, within 8.
    # The backward passes of sigmoid and tanh (arithmetic on the forward's
    # output) are exact.
    rng = np.random.default_rng(seed)
    if kind == "wide":  # saturation, overflow of exp(-x), subnormal results
        x = (rng.standard_normal(n) * 60).astype(dtype)
    else:
        x = make_values(rng, (n,), dtype, kind)
    dout = make_values(rng, (n,), dtype, "normal" if kind == "wide" else kind)
    y = make_values(rng, (n,), dtype, kind if kind != "wide" else "normal")
    cases = [("sigmoid", (x,), 4), ("tanh", (x,), 4), ("elu", (x, alpha, scale), 4),
             ("elu_backward", (dout, x, alpha, scale), 8), ("sigmoid_backward", (dout, y), 0),
             ("tanh_backward", (dout, y), 0)]
    for name, args, ulps in cases:
        compiled, reference = _pair(name)
        out_c = _garbage((n,), dtype, 7.0)
        out_r = _garbage((n,), dtype, -3.0)
        assert compiled(*args, out_c, nt) is out_c
        with np.errstate(all="ignore"):
            assert reference(*args, out_r) is out_r
        if ulps:
            _assert_within_ulps(out_c, out_r, ulps)
        else:
            _assert_same(out_c, out_r)


def _activation_test_values(dtype):
    """Inputs over every range the kernels treat apart: tiny and subnormal,
    around the reductions' steps, saturation, overflow of exp(-x), zeros of
    both signs, infinities and NaN."""
    rng = np.random.default_rng(12345)
    info = np.finfo(dtype)
    scales = [1e-30, 1e-8, 1e-3, 0.05, 0.3, 1, 3, 10, 30, 100, 800]
    random = [rng.standard_normal(20000) * s for s in scales]
    edges = [0.0, info.smallest_subnormal, info.smallest_subnormal * 7, info.tiny, 0.17, 0.345,
             0.55, 9.0, 9.02, 17.3, 19.06, 20, 25, 37.5, 40, 50, 88.7228, 100, 709.7827, 746]
    edges = np.array(edges, dtype)
    # each edge, its neighbours and its negation
    near = np.concatenate([edges, np.nextafter(edges, dtype(np.inf)),
                           np.nextafter(edges, dtype(0))])
    return np.concatenate([*(r.astype(dtype) for r in random), near, -near,
                           np.array([np.inf, -np.inf, np.nan, -np.nan], dtype)])


def _ulps_from_exact(got, exact, dtype):
    """|got - exact| in units in the last place of `dtype` at `exact`
    (the spacing of the binade that holds |exact|, not the one above)."""
    magnitude = np.abs(exact)
    rounded = magnitude.astype(dtype)
    below = np.where(rounded.astype(exact.dtype) > magnitude,
                     np.nextafter(rounded, dtype(0)), rounded)
    return np.abs(got.astype(exact.dtype) - exact) / np.spacing(below).astype(exact.dtype)


_EXTENDED = np.finfo(np.longdouble).nmant >= 63


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["tanh", "sigmoid", "elu"])
def test_compiled_transcendental_activations_against_the_exact_values(name, dtype):
    # The exact values in long double (64-bit significand or more): in
    # float32, within an ulp for sigmoid and elu, which the kernels compute
    # in double and round once, and 1.1 for tanh, computed in float (its
    # worst cases lie just above 0.75, where the second formula starts:
    # every float32 there is checked); in float64 within 2 for elu
    # (expm1), 3 for tanh and sigmoid (the C library's tanh and exp,
    # measured by the ulp of the lower binade at powers of 2). sigmoid is 0
    # where exp(-x) overflows in the dtype, as torch's and expit's: the
    # exact value there is subnormal.
    if dtype == np.float64 and not _EXTENDED:
        pytest.skip("long double is double here: no exact float64 reference")
    x = _activation_test_values(dtype)
    if name == "tanh" and dtype == np.float32:
        every = np.arange(*np.array([0.75, 0.8], dtype).view(np.uint32), dtype=np.uint32)
        x = np.concatenate([x, every.view(dtype)])
    args = (x, 1.0, 1.0) if name == "elu" else (x,)
    got = _pair(name)[0](*args, np.empty_like(x), 2)
    xl = x.astype(np.longdouble)
    with np.errstate(over="ignore"):
        if name == "tanh":
            exact = np.tanh(xl)
        elif name == "sigmoid":
            # exp(-x) rounds to inf from the largest finite value + half an ulp
            info, two = np.finfo(dtype), np.longdouble(2)
            limit = np.log(two ** info.maxexp * (1 - two ** -(info.nmant + 2)))
            exact = np.where(-xl >= limit, 0, 1 / (1 + np.exp(-xl)))
        else:
            exact = np.where(xl > 0, xl, np.expm1(np.minimum(xl, 0)))
    if dtype == np.float32:
        bound = 1.1 if name == "tanh" else 1
    else:
        bound = 2 if name == "elu" else 3
    nan = np.isnan(x)
    assert np.array_equal(np.isnan(got), nan)
    # zeros keep their sign (tanh(-0.0) = -0.0, elu(-0.0) = -0.0), the
    # infinities give the limits
    zero = exact == 0
    assert np.array_equal(np.signbit(got[zero]), np.signbit(exact[zero]))
    assert np.array_equal(got[np.isinf(x)], exact[np.isinf(x)].astype(dtype))
    finite = np.isfinite(exact)
    ulps = _ulps_from_exact(got[finite], exact[finite], dtype)
    worst = np.argmax(ulps)
    assert ulps[worst] <= bound, (x[finite][worst], got[finite][worst], ulps[worst])


@hsettings(200)
@given(n=st.integers(1, 40), k=st.integers(1, 30), dtype=dtypes,
       kind=st.sampled_from(["normal", "large", "ties", "special", "neg_inf"]), seed=seeds,
       nt=threads)
@example(n=1, k=1, dtype=np.float32, kind="normal", seed=0, nt=1)
def test_kernel_softmax_cross_entropy(n, k, dtype, kind, seed, nt):
    # The row sums are added in another order, the exponentials of float32
    # come from the C library in one and from NumPy in the other (each
    # within an ulp): the gradient agrees within 4 ulps of the dtype
    # relative to |p| + 1 (its scale before the division by N), the loss
    # within 8 ulps of max(|loss|, 1). NaN rows (a NaN, +inf, or only
    # -inf) are NaN in both.
    compiled, reference = _pair("softmax_cross_entropy")
    rng = np.random.default_rng(seed)
    if kind == "large":
        logits = (rng.standard_normal((n, k)) * 100).astype(dtype)
    else:
        logits = make_values(rng, (n, k), dtype, kind)
    labels = rng.integers(0, k, size=n, dtype=np.int64)
    out_c = _garbage((n, k), dtype, 7.0)
    out_r = _garbage((n, k), dtype, -3.0)
    loss_c, res_c = compiled(logits, labels, out_c, nt)
    with np.errstate(invalid="ignore", divide="ignore"):
        loss_r, res_r = reference(logits, labels, out_r)
    assert res_c is out_c and res_r is out_r
    assert type(loss_c) is float and type(loss_r) is float
    assert np.isnan(loss_c) or loss_c == float(dtype(loss_c))  # rounded to the dtype
    eps = np.finfo(dtype).eps
    if not np.isfinite(loss_r):  # NaN, or inf where a label's logit is -inf
        np.testing.assert_array_equal(loss_c, loss_r)
    else:
        assert abs(loss_c - loss_r) <= 8 * eps * max(abs(loss_r), 1.0)
    np.testing.assert_array_equal(np.isnan(out_c), np.isnan(out_r))
    numbers = ~np.isnan(out_r)
    np.testing.assert_allclose(out_c[numbers], out_r[numbers], rtol=0,
                               atol=4 * eps * (1 + 1 / n))


@st.composite
def optimizer_calls(draw):
    """(kernel name, its state arrays' signs, the other arguments) of one
    optimizer update, every option drawn. A state array is "+" where it
    holds squares, "±" where it holds means or momenta."""
    name = draw(st.sampled_from(["sgd_update", "adam_update", "adagrad_update",
                                 "rmsprop_update", "adadelta_update"]))
    rate = st.sampled_from([0.0, 1e-3, 0.1, 0.9, 0.999, 1.0, 1.7])
    decay = st.sampled_from([0.0, 0.0, 1e-2, 0.3])
    maximize = draw(st.booleans())
    if name == "sgd_update":
        momentum = draw(st.sampled_from([0.0, 0.9, 0.5]))
        nesterov = momentum > 0 and draw(st.booleans())
        dampening = 0.0 if nesterov else draw(st.sampled_from([0.0, 0.1]))
        return name, "±", (draw(rate), momentum, dampening, draw(decay), nesterov, maximize,
                           momentum > 0 and draw(st.booleans()))
    if name == "adam_update":
        step = draw(st.integers(1, 30))
        beta1, beta2 = draw(st.sampled_from([0.9, 0.0, 0.5])), draw(st.sampled_from([0.999, 0.9]))
        lr = draw(rate)
        return name, "±++", (beta1, beta2, draw(st.sampled_from([1e-8, 1e-3])), draw(decay),
                             lr / (1 - beta1**step), float(np.sqrt(1 - beta2**step)),
                             draw(st.booleans()), maximize)
    if name == "adagrad_update":
        return name, "+", (draw(rate), draw(st.sampled_from([1e-10, 1e-3])), draw(decay),
                           maximize)
    if name == "rmsprop_update":
        return name, "+±±", (draw(rate), draw(st.sampled_from([0.99, 0.5])),
                             draw(st.sampled_from([1e-8, 1e-2])), draw(decay),
                             draw(st.sampled_from([0.0, 0.9])), draw(st.booleans()), maximize)
    return name, "++", (draw(rate), draw(st.sampled_from([0.9, 0.5])),
                        draw(st.sampled_from([1e-6, 1e-2])), draw(decay), maximize)


@hsettings(300)
@given(call=optimizer_calls(), n=st.sampled_from([0, 1, 2, 7, 100, 16385, 40000]), dtype=dtypes,
       kind=st.sampled_from(["normal", "normal", "ties", "special", "zeros"]), seed=seeds,
       nt=threads)
def test_kernel_optimizer_updates(call, n, dtype, kind, seed, nt):
    # fastcnn.optim's operations in its order, each rounded to the dtype:
    # exact, parameter and every state array, NaN and the sign of zeros
    # included (also for inf and NaN gradients).
    name, signs, options = call
    compiled, reference = _pair(name)
    rng = np.random.default_rng(seed)
    param = make_values(rng, (n,), dtype, "normal")
    grad = make_values(rng, (n,), dtype, kind)
    states = [make_values(rng, (n,), dtype, "normal") for _ in signs]
    states = [a if sign == "±" else np.abs(a) for a, sign in zip(states, signs)]
    arrays_c = [param.copy(), grad.copy()] + [a.copy() for a in states]
    arrays_r = [param.copy(), grad.copy()] + [a.copy() for a in states]
    assert compiled(*arrays_c, *options, nt) is arrays_c[0]
    with np.errstate(all="ignore"):
        assert reference(*arrays_r, *options) is arrays_r[0]
    _assert_same(arrays_c[1], grad)  # the gradient is read only
    for got, expected in zip(arrays_c, arrays_r):
        _assert_same(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("geometry", [
    dict(n=3, c=3, f=4, hw=(9, 7), k=3, stride=1, padding=1, dilation=1, groups=1),
    dict(n=5, c=4, f=6, hw=(11, 12), k=2, stride=2, padding=0, dilation=2, groups=2),
    dict(n=1, c=1, f=1, hw=(4, 4), k=4, stride=1, padding=0, dilation=1, groups=1),
    dict(n=0, c=2, f=2, hw=(5, 5), k=3, stride=1, padding=0, dilation=1, groups=1),
])
@pytest.mark.parametrize("algorithm", ["gemm", "winograd"])
def test_parameter_only_backward_equals_the_full_one(geometry, dtype, backend, algorithm):
    """Skipping the input gradient (a network's first layer) leaves the
    parameter gradients bitwise the same, for the conv (by either algorithm
    where Winograd's is eligible) and linear drivers."""
    g = geometry
    rng = np.random.default_rng(g["c"])
    x = rng.standard_normal((g["n"], g["c"], *g["hw"])).astype(dtype)
    w = rng.standard_normal((g["f"], g["c"] // g["groups"], g["k"], g["k"])).astype(dtype)
    kw = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"])
    with fastcnn.use_backend(backend), _backend.use_conv_algorithm(algorithm):
        dout = rng.standard_normal(F.conv2d(x, w, groups=g["groups"], **kw).shape).astype(dtype)
        full = F.conv2d_backward(dout, x, w, groups=g["groups"], **kw)
        win = _validation.conv_window(x.shape, w.shape[2:], **kw)
        dx, dw, db = F._conv2d_backward(dout, x, w, win, g["groups"], input_grad=False)
        assert dx is None
        np.testing.assert_array_equal(dw, full[1], strict=True)
        np.testing.assert_array_equal(db, full[2], strict=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n, i, o", [(7, 5, 3), (1, 1, 1), (300, 20, 10), (0, 3, 2)])
def test_parameter_only_linear_backward_equals_the_full_one(n, i, o, dtype, backend):
    rng = np.random.default_rng(n)
    x, w = rng.standard_normal((n, i)).astype(dtype), rng.standard_normal((o, i)).astype(dtype)
    dout = rng.standard_normal((n, o)).astype(dtype)
    with fastcnn.use_backend(backend):
        full = F._linear_backward(dout, x, w)
        dx, dw, db = F._linear_backward(dout, x, w, input_grad=False)
    assert dx is None and full[0].shape == x.shape
    np.testing.assert_array_equal(dw, full[1], strict=True)
    np.testing.assert_array_equal(db, full[2], strict=True)


# ---------------------------------------------------------------------------
# The builds of the batch-norm and activation kernels for wider vector units
# (setup.py's SIMD_KERNELS): the widest the CPU runs is the one in use, and
# every one the CPU runs gives the baseline builds' bits.

_X86 = platform.machine().lower() in ("x86_64", "amd64")
#: The builds this CPU runs, narrowest first.
_SIMD_BUILDS = ["avx2", "avx512"][:_pool._simd_level()] if _X86 else []


def test_the_widest_builds_the_cpu_runs_are_used():
    suffix = f"_{_SIMD_BUILDS[-1]}" if _SIMD_BUILDS else ""
    assert _norm.__name__ == f"fastcnn._kernels.norm{suffix}"
    assert _backend.pair_of("batch_norm_stats")[0] is _norm.batch_norm_stats
    assert _backend.pair_of("tanh")[0] is _activation.tanh
    assert _activation.__name__ == f"fastcnn._kernels.activation{suffix}"
    assert _backend.build_info()["simd_builds"] == (
        [f"norm{suffix}", f"activation{suffix}"] if suffix else [])


def _builds(name):
    """`name`'s builds that this CPU runs (a test parameter)."""
    return pytest.mark.parametrize(
        "module", [importlib.import_module(f"fastcnn._kernels.{name}_{isa}") for isa in _SIMD_BUILDS],
        ids=_SIMD_BUILDS)


@_builds("norm")
@hsettings(60)
@given(shape=bn_shapes(), dtype=dtypes, kind=bn_kinds, seed=seeds, nt=threads, tiling=tilings,
       training=st.booleans())
@example(shape=(37, 5, 1100), dtype=np.float32, kind="normal", seed=0, nt=2,
         tiling=(1024, 16384), training=True)
@example(shape=(1, 1, 15), dtype=np.float32, kind="special", seed=52, nt=1,  # NaN signs differed
         tiling=(1024, 16384), training=False)
def test_simd_batch_norm_builds_equal_the_baseline_bitwise(module, shape, dtype, kind, seed, nt,
                                                            tiling, training):
    rng = np.random.default_rng(seed)
    x, dout = _bn_values(rng, shape, dtype, kind), _bn_values(rng, shape, dtype, kind)
    c = shape[1]
    mean, inv_std = rng.standard_normal(c), rng.random(c) + 0.1
    weight, bias = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    results = []
    for module in (_norm_baseline, module):
        with _norm_tiling(*tiling, module=module), np.errstate(all="ignore"):
            stats = module.batch_norm_stats(x, np.empty(c), np.empty(c), nt)
            out = module.batch_norm_elemt(x, mean, inv_std, weight, bias, training,
                                          np.empty_like(x), nt)
            # (the fused ReLU, with and without: `training` picks one)
            forward = (mean, inv_std, weight, bias, training)
            sums = module.batch_norm_backward_reduce(dout, x, *forward, np.empty(c), np.empty(c),
                                                     nt)
            dx = module.batch_norm_backward_elemt(dout, x, *forward, *sums, training,
                                                  np.empty_like(x), nt)
        results.append([*stats, out, *sums, dx])
    for got, expected in zip(*results):
        # IEEE 754 leaves a NaN's sign and payload unspecified, and which of two
        # NaN operands x86 passes on depends on the operand order the compiler
        # chose (it differs between the -O0 and -O3 builds), so NaNs compare as NaNs.
        assert np.array_equal(np.isnan(got), np.isnan(expected))
        assert _nan_canonical(got).tobytes() == _nan_canonical(expected).tobytes()


def _nan_canonical(a):
    return np.where(np.isnan(a), np.array(np.nan, a.dtype), a)


@_builds("activation")
@hsettings(60)
@given(n=flat_sizes, dtype=dtypes, kind=st.sampled_from(["normal", "wide", "special", "zeros"]),
       seed=seeds, nt=threads, slope=slopes)
@example(n=16385, dtype=np.float32, kind="wide", seed=0, nt=2, slope=0.1)
def test_simd_activation_builds_equal_the_baseline_bitwise(module, n, dtype, kind, seed, nt, slope):
    rng = np.random.default_rng(seed)
    x = ((rng.standard_normal(n) * 60).astype(dtype) if kind == "wide"
         else make_values(rng, (n,), dtype, kind))
    dout = make_values(rng, (n,), dtype, "normal" if kind == "wide" else kind)
    calls = [*_relu_calls(x, dout, slope), ("sigmoid", (x,)), ("tanh", (x,)),
             ("elu", (x, 1.6732632423543772, 1.0507009873554805)),
             ("elu_backward", (dout, x, 1.0, 1.0)),
             ("_by_output_backward", (False, dout, x)), ("_by_output_backward", (True, dout, x))]
    for name, args in calls:
        with np.errstate(all="ignore"):
            got, expected = (getattr(build, name)(*args, np.empty((n,), dtype), nt)
                             for build in (module, _activation_baseline))
        assert np.array_equal(np.isnan(got), np.isnan(expected)), name
        assert _nan_canonical(got).tobytes() == _nan_canonical(expected).tobytes(), name
    got, expected = (build.dropout(x, seed, 2**52, 2.0, np.empty((n,), dtype),
                                   np.empty((n,), dtype), nt)
                     for build in (module, _activation_baseline))
    for a, b in zip(got, expected):
        assert _nan_canonical(a).tobytes() == _nan_canonical(b).tobytes(), "dropout"


# ---------------------------------------------------------------------------
# Resampling: interpolate (nearest, bilinear) and max_unpool2d. interpolate's
# kernels take the per-axis tables of functional._interpolate_tables (the
# same for both sets); the backward ones sum each cell's terms in output
# order (tap 0 before tap 1) in both sets, and max_unpool2d keeps the last
# of repeated indices in both: exact.


@st.composite
def interpolate_problems(draw, max_n=3):
    """(x shape, keyword arguments of F.interpolate, (oh, ow), scales, mode, align)."""
    shape = (draw(st.integers(0, max_n)), draw(st.integers(1, 3)), draw(st.integers(1, 13)),
             draw(st.integers(1, 13)))
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    kwargs = {"mode": mode}
    if mode == "bilinear":
        kwargs["align_corners"] = draw(st.sampled_from([None, False, True]))
    if draw(st.booleans()):
        kwargs["size"] = (draw(st.integers(1, 29)), draw(st.integers(1, 29)))
    else:
        factor = st.one_of(st.sampled_from([0.5, 1, 1.1, 2, 3, 2.5]),
                           st.floats(0.25, 3.5).map(lambda f: round(f, 3)))
        kwargs["scale_factor"] = draw(st.one_of(factor, st.tuples(factor, factor)))
        kwargs["recompute_scale_factor"] = draw(st.sampled_from([None, True]))
    try:
        plan = F._interpolate_plan(shape, kwargs.get("size"), kwargs.get("scale_factor"), mode,
                                   kwargs.get("align_corners"),
                                   kwargs.get("recompute_scale_factor"))
    except ValueError:  # an empty output
        plan = draw(st.nothing())
    oh, ow, scales, mode, align = plan
    return shape, kwargs, (oh, ow), scales, mode, align


def _random_tables(rng, mode, shape, oh, ow, dtype, kind):
    """interpolate tables of any in-range indices (repeated, out of order) and any weights."""
    h, w = shape[2:]
    if mode == "nearest":
        return rng.integers(0, h, oh), rng.integers(0, w, ow)
    return (rng.integers(0, h, (2, oh)), make_values(rng, (2, oh), dtype, kind),
            rng.integers(0, w, (2, ow)), make_values(rng, (2, ow), dtype, kind))


@hsettings(250)
@given(problem=interpolate_problems(), dtype=dtypes,
       kind=st.sampled_from(["normal", "ties", "special", "zeros"]), seed=seeds, nt=threads,
       any_tables=st.booleans())
@example(problem=((2, 3, 5, 7), {"mode": "bilinear", "scale_factor": 2}, (10, 14), (2, 2),
                  "bilinear", False), dtype=np.float32, kind="normal", seed=0, nt=2,
         any_tables=False)
@example(problem=((1, 2, 9, 4), {"mode": "nearest", "size": (4, 11)}, (4, 11), (None, None),
                  "nearest", False), dtype=np.float64, kind="zeros", seed=1, nt=3,
         any_tables=False)
def test_kernel_interpolate(problem, dtype, kind, seed, nt, any_tables):
    # Forward: the same expression in the same order. Backward: each input
    # cell's terms summed in output order. Exact, for the tables of any
    # geometry and for any in-range tables and weights.
    shape, _, (oh, ow), scales, mode, align = problem
    rng = np.random.default_rng(seed)
    name, tables = F._interpolate_tables(shape, oh, ow, scales, mode, align, np.dtype(dtype))
    if any_tables:
        tables = _random_tables(rng, mode, shape, oh, ow, dtype, kind)
    x = make_values(rng, shape, dtype, kind)
    dout = make_values(rng, shape[:2] + (oh, ow), dtype, kind)
    for kernel, src, result in ((name, x, shape[:2] + (oh, ow)), (name + "_backward", dout, shape)):
        compiled, reference = _pair(kernel)
        out_c = _garbage(result, dtype, 7.0)
        out_r = _garbage(result, dtype, -3.0)
        with np.errstate(invalid="ignore", over="ignore"):
            assert compiled(src, *tables, out_c, nt) is out_c
            assert reference(src, *tables, out_r) is out_r
        _assert_same(out_c, out_r)


def _unpool_indices(rng, g, how):
    """Indices of max_unpool2d from the pooling of geometry g into its (h, w)
    plane, or any in that plane (many repeated)."""
    if how == "pool":
        x = make_values(rng, g.shape, np.float64, "ties")
        return fastcnn.reference.max_pool2d(x, *g.pool_params(), np.empty(g.pool_shape),
                                            np.empty(g.pool_shape, np.int64))[1]
    plane = g.h * g.w if how == "any" else min(3, g.h * g.w)
    return rng.integers(0, plane, size=g.pool_shape, dtype=np.int64)


@hsettings(200)
@given(g=pool_geometries(), dtype=dtypes, kind=st.sampled_from(["normal", "ties", "special"]),
       seed=seeds, nt=threads, how=st.sampled_from(["pool", "any", "crowded"]))
@example(g=Geometry(2, 2, 7, 9, 2, 2, 2, 2, 0, 0, 1, 1, True), dtype=np.float32, kind="normal",
         seed=0, nt=2, how="pool")  # ceil mode: the last windows hang over
@example(g=Geometry(1, 3, 6, 7, 3, 3, 1, 1, 1, 1), dtype=np.float64, kind="ties", seed=1, nt=3,
         how="crowded")
def test_kernel_max_unpool2d(g, dtype, kind, seed, nt, how):
    # Forward: a scatter in input order, the last of repeated indices
    # staying. Backward: a gather. Exact.
    rng = np.random.default_rng(seed)
    idx = _unpool_indices(rng, g, how)
    x = make_values(rng, g.pool_shape, dtype, kind)
    dout = make_values(rng, g.shape, dtype, kind)
    for name, src, result in (("max_unpool2d", x, g.shape),
                              ("max_unpool2d_backward", dout, g.pool_shape)):
        compiled, reference = _pair(name)
        out_c = _garbage(result, dtype, 7.0)
        out_r = _garbage(result, dtype, -3.0)
        assert compiled(src, idx, out_c, nt) is out_c
        assert reference(src, idx, out_r) is out_r
        _assert_same(out_c, out_r)


def test_kernel_max_unpool2d_last_repeated_index_wins():
    x = np.arange(1.0, 7.0).reshape(1, 1, 2, 3)
    idx = np.array([[[[4, 0, 4], [1, 0, 4]]]])
    expected = np.array([[[[5.0, 4.0], [0.0, 0.0], [6.0, 0.0]]]])
    for kernel, extra in zip(_pair("max_unpool2d"), ((1,), ())):
        np.testing.assert_array_equal(kernel(x, idx, _garbage((1, 1, 3, 2), x.dtype, 7.0), *extra),
                                      expected)


@pytest.mark.parametrize("name", ["max_unpool2d", "max_unpool2d_backward"])
@pytest.mark.parametrize("wrong", [-1, 12, 2**63 - 1])
def test_kernel_max_unpool2d_checks_its_indices(name, wrong):
    # Python does not check the indices' range first: both kernel sets do,
    # with one error (the compiled kernels as they read them).
    idx = np.zeros((2, 3, 2, 2), np.int64)
    idx[1, 2, 1, 0] = wrong
    small, large = np.ones((2, 3, 2, 2)), np.ones((2, 3, 3, 4))
    src, out = (small, large) if name == "max_unpool2d" else (large, small)
    for kernel, extra in zip(_pair(name), ((2,), ())):
        with pytest.raises(ValueError, match=r"indices must lie in \[0, 12\), got 1 outside"):
            kernel(src, idx, out.copy(), *extra)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size, k, s", [(8, 2, 2), (64, 2, 2), (9, 3, 2)])
@pytest.mark.parametrize("wrong", [-1, "plane", 2**63 - 1])
def test_kernel_max_pool2d_backward_checks_its_indices(dtype, size, k, s, wrong):
    # Python does not check the indices' range first: both kernel sets do,
    # with one error, whichever path the plane takes (short rows, tiles of
    # 2x2 windows, or the scatter); valid indices still give the twin's bits.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, size, size)).astype(dtype)
    _, idx = F.max_pool2d(x, k, s, return_indices=True)
    dout = rng.standard_normal(idx.shape).astype(dtype)
    compiled, reference = _pair("max_pool2d_backward")
    _assert_same(compiled(dout, idx, np.empty_like(x), 2), reference(dout, idx, np.empty_like(x)))
    idx[1, 2, 1, 0] = size * size if wrong == "plane" else wrong
    for kernel, extra in ((compiled, (2,)), (reference, ())):
        with pytest.raises(ValueError,
                           match=rf"indices must lie in \[0, {size * size}\), got 1 outside"):
            kernel(dout, idx, np.empty_like(x), *extra)


@pytest.mark.parametrize("name, bad", [
    ("interpolate_nearest", "rows"), ("interpolate_nearest_backward", "cols"),
    ("interpolate_bilinear", "rows"), ("interpolate_bilinear_backward", "cols"),
])
def test_kernel_interpolate_checks_its_tables(name, bad):
    # The compiled kernels address memory through the tables: an index out
    # of its axis, or a table of the wrong length, is an error, not a read
    # out of bounds.
    compiled, _ = _pair(name)
    shape, (oh, ow) = (2, 2, 5, 6), (7, 4)
    mode = name.split("_")[1]
    good = F._interpolate_tables(shape, oh, ow, (None, None), mode, False, np.dtype(np.float64))[1]
    src, out = (np.ones(shape), np.empty((2, 2, oh, ow)))
    if name.endswith("backward"):
        src, out = out, src
    axis = {"rows": 0, "cols": 1 if mode == "nearest" else 2}[bad]
    for wrong in (5 if bad == "rows" else 6, -1):
        tables = list(good)
        tables[axis] = tables[axis].copy()
        tables[axis].reshape(-1)[-1] = wrong
        with pytest.raises(ValueError, match=f"{bad} must lie in"):
            compiled(src, *tables, out, 1)
    tables = list(good)
    tables[axis] = tables[axis][..., :-1].copy()
    with pytest.raises(ValueError, match=bad):
        compiled(src, *tables, out, 1)


@hsettings(100)
@given(problem=interpolate_problems(max_n=2), dtype=dtypes,
       kind=st.sampled_from(["normal", "ties", "special"]), seed=seeds, layout=layouts)
def test_public_interpolate_and_backward(problem, dtype, kind, seed, layout):
    shape, kwargs, (oh, ow), *_ = problem
    rng = np.random.default_rng(seed)
    x = make_values(rng, shape, dtype, kind)
    with np.errstate(invalid="ignore", over="ignore"):
        out = _all_ways(F.interpolate, [x], layout, **kwargs)
        assert out.shape == shape[:2] + (oh, ow) and out.dtype == dtype
        dout = make_values(rng, out.shape, dtype, kind)
        dx = _all_ways(F.interpolate_backward, [dout], layout, input_shape=shape, **kwargs)
    assert dx.shape == shape and dx.dtype == dtype


@hsettings(100)
@given(g=pool_geometries(dilation=False), dtype=dtypes, seed=seeds, layout=layouts,
       index_dtype=index_dtypes, how=st.sampled_from(["pool", "crowded"]))
def test_public_max_unpool2d_and_backward(g, dtype, seed, layout, index_dtype, how):
    rng = np.random.default_rng(seed)
    idx = _unpool_indices(rng, g, how).astype(index_dtype)
    x = make_values(rng, g.pool_shape, dtype, "normal")
    out = _all_ways(F.max_unpool2d, [x, idx], layout, kernel_size=(g.kh, g.kw),
                    stride=(g.sh, g.sw), padding=(g.ph, g.pw), output_size=(g.h, g.w))
    assert out.shape == g.shape and out.dtype == dtype
    dx = _all_ways(F.max_unpool2d_backward, [make_values(rng, g.shape, dtype, "normal"), idx],
                   layout)
    assert dx.shape == g.pool_shape and dx.dtype == dtype
