"""The Winograd convolution F(4x4, 3x3) (csrc/winograd.pyx and its twin).

* Kernel level: the weight transform is BITWISE equal between the compiled
  kernel and its NumPy twin (the same expressions in the same order); the
  convolution and its weight gradient (F(3x3, 4x4)) agree to rounding (the
  transforms are bitwise equal too, the 36 products go through two
  different BLAS libraries, or gemm_simd.h's product at the SIMD level
  that has it), over odd sizes, sizes under a tile, cropping
  and padding, blocks and chunks of every shape, and both match a float64
  direct convolution within the torch-parity tolerance (rtol 1e-5 float32 /
  1e-12 float64 of the largest output).
* Public level: conv2d and conv2d_backward with Winograd forced agree with
  the GEMM driver and with torch within that tolerance (float32 up to 512
  input channels, where the choice of points matters, see
  csrc/winograd.h), "auto" picks Winograd only where it is eligible, and a
  NaN or an infinity anywhere gives the GEMM driver's result, bit for bit.
* Thread counts: bitwise identical results for 1, 2 and 4 threads.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from strategies import FLOAT_DTYPES, LAYOUTS, hsettings, make_values, with_layout

import fastcnn
from fastcnn import _backend
from fastcnn import functional as F

COMPILED = _backend.compiled_available()
BACKENDS = ("cython", "numpy") if COMPILED else ("numpy",)
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def _pair(name):
    compiled, reference = _backend.pair_of(name)
    if compiled is None:
        pytest.skip("compiled kernels not built (FASTCNN_BACKEND=numpy run)")
    return compiled, reference


@contextlib.contextmanager
def _gemm_cap(level):
    """The compiled convolution's products by BLAS (level 0) or, where the
    CPU has AVX2 and FMA, by gemm_simd.h (level 1)."""
    from fastcnn._kernels import winograd

    previous = winograd._cap_simd(level)
    try:
        yield
    finally:
        winograd._cap_simd(previous)


def _assert_close(got, expected, rtol=None, bound=None):
    """Within rtol (the dtype's torch-parity one by default) of the largest
    |expected|, or of `bound` (the sums of the terms' magnitudes, same shape:
    a sum that cancels is exact only to the rounding of its terms)."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    rtol = RTOL[got.dtype] if rtol is None else rtol
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    if bound is None:
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)
        return
    error = np.abs(got.astype(np.float64) - expected)
    tol = rtol * (np.abs(expected) + np.maximum(bound, scale))
    assert np.all(error <= tol), f"largest error / tolerance {np.max(error / tol)}"


def _canvas(x, ph, pw, oh, ow, kh=3, kw=3):
    """float64 `x` padded by (ph, pw) at the top/left (negative crops) to
    (oh + kh - 1, ow + kw - 1): what a (kh, kw) convolution of stride 1 with
    an (oh, ow) output reads."""
    n, c, h, w = x.shape
    canvas = np.zeros((n, c, oh + kh - 1, ow + kw - 1))
    rows = [i for i in range(oh + kh - 1) if 0 <= i - ph < h]
    cols = [j for j in range(ow + kw - 1) if 0 <= j - pw < w]
    if rows and cols:
        canvas[:, :, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = \
            x[:, :, rows[0] - ph : rows[-1] + 1 - ph, cols[0] - pw : cols[-1] + 1 - pw]
    return canvas


def _direct(x, weight, bias, ph, pw, oh, ow):
    """float64 cross-correlation, stride 1, top/left padding (ph, pw) (negative crops)."""
    kernel = weight.shape[2:]
    windows = sliding_window_view(_canvas(x, ph, pw, oh, ow, *kernel), kernel, axis=(2, 3))
    out = np.einsum("nchwij,fcij->nfhw", windows, weight.astype(np.float64))
    return out + (bias.astype(np.float64)[:, None, None] if bias.size else 0)


@st.composite
def winograd_problems(draw, side=14, channels=70):
    """(N, C, F, H, W, ph, pw, samples, rows) with a non-empty output, planes
    of at most `side` cells a side, at most `channels` channels and filters."""
    n, c, f = draw(st.integers(1, 5)), draw(st.integers(1, channels)), draw(st.integers(1, channels))
    h, w = draw(st.integers(1, side)), draw(st.integers(1, side))
    # padding from -2 (cropping) to 3, at least what an output row/column needs
    ph = max(draw(st.integers(-2, 3)), -((h - 3) // 2))
    pw = max(draw(st.integers(-2, 3)), -((w - 3) // 2))
    samples = draw(st.integers(1, 3))
    tile_rows = -(-(h + 2 * ph - 2) // 4)
    rows = draw(st.integers(1, 3)) if samples == 1 else tile_rows
    return n, c, f, h, w, ph, pw, samples, rows


def _blocks(n, oh, samples, rows):
    tile_rows = -(-oh // 4)
    return -(-n // samples) * -(-tile_rows // rows)


@hsettings(120)
@given(problem=winograd_problems(), dtype=st.sampled_from(FLOAT_DTYPES),
       with_bias=st.booleans(), seed=st.integers(0, 2**32 - 1), nt=st.sampled_from([1, 2, 3]),
       level=st.sampled_from([0, 1]))
@example(problem=(2, 3, 4, 1, 1, 1, 1, 1, 1), dtype=np.float32, with_bias=True, seed=0, nt=1,
         level=1)
@example(problem=(3, 5, 2, 9, 7, -1, 2, 2, 3), dtype=np.float64, with_bias=False, seed=1, nt=2,
         level=0)
@example(problem=(1, 70, 70, 13, 14, 0, 1, 1, 2), dtype=np.float32, with_bias=True, seed=2, nt=3,
         level=1)
@example(problem=(2, 300, 13, 9, 9, 1, 1, 1, 1), dtype=np.float64, with_bias=True, seed=3, nt=2,
         level=1)  # two blocks of 256 channels; partial tiles of filters and panels of tiles
def test_kernels_match_twin_and_direct_convolution(problem, dtype, with_bias, seed, nt, level):
    n, c, f, h, w, ph, pw, samples, rows = problem
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    rng = np.random.default_rng(seed)
    x = make_values(rng, (n, c, h, w), dtype)
    weight = make_values(rng, (f, c, 3, 3), dtype)
    bias = make_values(rng, (f,) if with_bias else (0,), dtype)
    weight_c, weight_r = _pair("winograd_weight")
    u = weight_r(weight, np.full((36, f, c), -3.0, dtype))
    assert weight_c(weight, np.full((36, f, c), 7.0, dtype), nt).tobytes() == u.tobytes()
    conv_c, conv_r = _pair("winograd_conv2d")
    blocks = _blocks(n, oh, samples, rows)
    flags_c, flags_r = np.full(blocks, 5, np.uint8), np.full(blocks, 6, np.uint8)
    out_c = np.full((n, f, oh, ow), 7.0, dtype)
    out_r = np.full((n, f, oh, ow), -3.0, dtype)
    with _gemm_cap(level):
        assert conv_c(x, u, bias, ph, pw, 1, samples, rows, out_c, flags_c, nt) is out_c
    assert conv_r(x, u, bias, ph, pw, 1, samples, rows, out_r, flags_r) is out_r
    assert not flags_c.any() and not flags_r.any()
    _assert_close(out_c, out_r)
    direct = _direct(x, weight, bias, ph, pw, oh, ow)
    _assert_close(out_c, direct.astype(dtype))
    _assert_close(out_r, direct.astype(dtype))


def _direct_weight_grads(dout, x, ph, pw, kh=3, kw=3):
    """float64 weight and bias gradients of :func:`_direct` with (kh, kw) kernels."""
    oh, ow = dout.shape[2:]
    windows = sliding_window_view(_canvas(x, ph, pw, oh, ow, kh, kw), (oh, ow), axis=(2, 3))
    dweight = np.einsum("ncabij,nfij->fcab", windows, dout.astype(np.float64))
    return dweight, dout.astype(np.float64).sum(axis=(0, 2, 3))


@hsettings(100)
@given(problem=winograd_problems(), dtype=st.sampled_from(FLOAT_DTYPES),
       seed=st.integers(0, 2**32 - 1), nt=st.sampled_from([1, 2, 3]), data=st.data())
@example(problem=(2, 3, 4, 1, 1, 1, 1, 1, 1), dtype=np.float32, seed=0, nt=1, data=None)
@example(problem=(5, 5, 2, 9, 7, -1, 2, 2, 3), dtype=np.float64, seed=1, nt=2, data=None)
@example(problem=(1, 70, 70, 13, 14, 0, 1, 1, 2), dtype=np.float32, seed=2, nt=3, data=None)
def test_weight_gradient_kernels_match_twin_and_direct_convolution(problem, dtype, seed, nt,
                                                                    data):
    n, c, f, h, w, ph, pw, samples, rows = problem
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    groups = -(-n // samples)
    chunk = data.draw(st.integers(1, groups)) if data is not None else 1
    parts = -(-groups // chunk)
    rng = np.random.default_rng(seed)
    x = make_values(rng, (n, c, h, w), dtype)
    dout = make_values(rng, (n, f, oh, ow), dtype)
    compiled, reference = _pair("winograd_conv2d_backward")
    dw_c, db_c = np.full((parts, f, c * 9), 7.0, dtype), np.full((parts, f), 7.0, dtype)
    dw_r, db_r = np.full((parts, f, c * 9), -3.0, dtype), np.full((parts, f), -3.0, dtype)
    assert compiled(dout, x, ph, pw, 1, samples, rows, chunk, dw_c, db_c, nt) is dw_c
    assert reference(dout, x, ph, pw, 1, samples, rows, chunk, dw_r, db_r) is dw_r
    _assert_close(dw_c, dw_r)
    _assert_close(db_c, db_r)
    dweight, dbias = _direct_weight_grads(dout, x, ph, pw)
    for parts_w, parts_b in ((dw_c, db_c), (dw_r, db_r)):
        _assert_close(parts_w.sum(axis=0).reshape(f, c, 3, 3), dweight.astype(dtype))
        _assert_close(parts_b.sum(axis=0), dbias.astype(dtype))


@st.composite
def block_problems(draw):
    """(N, C, F, H, W, kh, kw, ph, pw, samples, rows): kernels of 1 to 8 taps
    a side (1 to 3 blocks of 3x3 taps), a non-empty output."""
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    kh, kw = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    h, w = draw(st.integers(1, 18)), draw(st.integers(1, 18))
    ph = max(draw(st.integers(-2, kh)), -((h - kh) // 2))
    pw = max(draw(st.integers(-2, kw)), -((w - kw) // 2))
    samples = draw(st.integers(1, 3))
    tile_rows = -(-(h + 2 * ph - kh + 1) // 4)
    rows = draw(st.integers(1, 3)) if samples == 1 else tile_rows
    return n, c, f, h, w, kh, kw, ph, pw, samples, rows


@hsettings(80)
@given(problem=block_problems(), dtype=st.sampled_from(FLOAT_DTYPES),
       with_bias=st.booleans(), seed=st.integers(0, 2**32 - 1), nt=st.sampled_from([1, 2, 3]),
       level=st.sampled_from([0, 1]))
@example(problem=(2, 5, 7, 16, 16, 5, 5, 2, 2, 1, 2), dtype=np.float32, with_bias=True, seed=0,
         nt=2, level=1)  # 2x2 blocks, padding 2: blocks (1, *) crop a row
@example(problem=(1, 3, 4, 9, 13, 7, 2, -1, 1, 1, 1), dtype=np.float64, with_bias=False, seed=1,
         nt=1, level=0)  # 3x1 blocks, cropping, a kernel narrower than a block
def test_kernels_of_blocks_of_taps_match_twin_and_direct_convolution(problem, dtype, with_bias,
                                                                     seed, nt, level):
    # A kernel of gh x gw blocks of 3x3 taps: the blocks' input tiles stack
    # as gh*gw*C channels, block (a, b) read with padding (ph - 3a, pw - 3b).
    n, c, f, h, w, kh, kw, ph, pw, samples, rows = problem
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    rng = np.random.default_rng(seed)
    x = make_values(rng, (n, c, h, w), dtype)
    weight = make_values(rng, (f, c, kh, kw), dtype)
    bias = make_values(rng, (f,) if with_bias else (0,), dtype)
    blocks, gw = F._kernel_blocks(weight)
    cv = blocks.shape[1]
    assert gw == -(-kw // 3) and cv == -(-kh // 3) * gw * c
    u = _pair("winograd_weight")[1](blocks, np.empty((36, f, cv), dtype))
    conv_c, conv_r = _pair("winograd_conv2d")
    flags_c, flags_r = (np.full(_blocks(n, oh, samples, rows), v, np.uint8) for v in (5, 6))
    out_c, out_r = np.full((n, f, oh, ow), 7.0, dtype), np.full((n, f, oh, ow), -3.0, dtype)
    with _gemm_cap(level):
        conv_c(x, u, bias, ph, pw, gw, samples, rows, out_c, flags_c, nt)
    conv_r(x, u, bias, ph, pw, gw, samples, rows, out_r, flags_r)
    assert not flags_c.any() and not flags_r.any()
    direct = _direct(x, weight, bias, ph, pw, oh, ow)
    bound = _direct(np.abs(x), np.abs(weight), np.abs(bias), ph, pw, oh, ow)
    for out in (out_c, out_r):
        _assert_close(out, direct.astype(dtype), bound=bound)
    _assert_close(out_c, out_r, bound=bound)
    dout = make_values(rng, (n, f, oh, ow), dtype)
    compiled, reference = _pair("winograd_conv2d_backward")
    parts = -(-n // samples)
    dw_c, db_c = np.full((parts, f, cv * 9), 7.0, dtype), np.full((parts, f), 7.0, dtype)
    dw_r, db_r = np.full((parts, f, cv * 9), -3.0, dtype), np.full((parts, f), -3.0, dtype)
    compiled(dout, x, ph, pw, gw, samples, rows, 1, dw_c, db_c, nt)
    reference(dout, x, ph, pw, gw, samples, rows, 1, dw_r, db_r)
    dweight, dbias = _direct_weight_grads(dout, x, ph, pw, kh, kw)
    bounds = _direct_weight_grads(np.abs(dout), np.abs(x), ph, pw, kh, kw)
    for parts_w, parts_b in ((dw_c, db_c), (dw_r, db_r)):
        got = F._kernels_of_blocks(parts_w.sum(axis=0), weight.shape)
        _assert_close(got, dweight.astype(dtype), bound=bounds[0])
        _assert_close(parts_b.sum(axis=0), dbias.astype(dtype), bound=bounds[1])


def test_kernel_blocks_that_do_not_match_the_input_are_refused():
    conv, _ = _pair("winograd_conv2d")
    backward, _ = _pair("winograd_conv2d_backward")
    x = np.zeros((1, 3, 8, 8))
    with pytest.raises(ValueError, match="gw=2 blocks of 3 channels"):
        conv(x, np.zeros((36, 2, 9)), np.zeros(0), 1, 1, 2, 1, 2, np.empty((1, 2, 8, 8)),
             np.empty(1, np.uint8), 1)
    with pytest.raises(ValueError, match="gw=0"):
        backward(np.zeros((1, 2, 8, 8)), x, 1, 1, 0, 1, 2, 1, np.empty((1, 2, 27)),
                 np.empty((1, 2)), 1)


@contextlib.contextmanager
def _wide_min_tiles(tiles):
    """winograd_simd.h's AVX-512 transforms on every block whose planes hold
    at least `tiles` tiles."""
    from fastcnn._kernels import winograd

    previous = winograd._wide_min_tiles(tiles)
    try:
        yield
    finally:
        winograd._wide_min_tiles(previous)


def _has_avx512():
    from fastcnn._kernels import pool

    return pool._simd_level() >= 2


@pytest.mark.skipif(not COMPILED or not _has_avx512(),
                    reason="no AVX-512 here: only the portable transforms run")
@hsettings(80)
@given(problem=winograd_problems(side=44, channels=6), dtype=st.sampled_from(FLOAT_DTYPES),
       with_bias=st.booleans(), seed=st.integers(0, 2**32 - 1), nt=st.sampled_from([1, 2]),
       special=st.sampled_from([None, np.nan, np.inf, -np.inf]), data=st.data())
@example(problem=(2, 3, 5, 34, 34, 1, 1, 2, 9), dtype=np.float32, with_bias=True, seed=0, nt=2,
         special=None, data=None)  # 8 whole tiles a row, two samples a block
@example(problem=(1, 2, 3, 43, 29, -2, 3, 1, 5), dtype=np.float64, with_bias=False, seed=1,
         nt=1, special=np.inf, data=None)  # partial tiles and vectors, cropping, padding
def test_avx512_transforms_equal_the_portable_ones(problem, dtype, with_bias, seed, nt,
                                                   special, data):
    """The AVX-512 input and output transforms give the portable code's bits
    (the same expressions; the products are the same GEMM), and flag the same
    blocks, on planes of every size (whole and partial vectors, tile rows of
    1 to 11 tiles, cropping and padding)."""
    n, c, f, h, w, ph, pw, samples, rows = problem
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    rng = np.random.default_rng(seed)
    x = make_values(rng, (n, c, h, w), dtype)
    if special is not None:
        x.flat[data.draw(st.integers(0, x.size - 1)) if data else 0] = special
    dout = make_values(rng, (n, f, oh, ow), dtype)
    weight = make_values(rng, (f, c, 3, 3), dtype)
    bias = make_values(rng, (f,) if with_bias else (0,), dtype)
    u = _pair("winograd_weight")[1](weight, np.empty((36, f, c), dtype))
    conv, _ = _pair("winograd_conv2d")
    backward, _ = _pair("winograd_conv2d_backward")
    results = []
    for tiles in (1, 2**62):  # AVX-512 on every block, then on none
        with _wide_min_tiles(tiles):
            out = np.full((n, f, oh, ow), 7.0, dtype)
            flags = np.full(_blocks(n, oh, samples, rows), 5, np.uint8)
            conv(x, u, bias, ph, pw, 1, samples, rows, out, flags, nt)
            parts = -(-n // samples)
            dw, db = np.full((parts, f, c * 9), 7.0, dtype), np.full((parts, f), 7.0, dtype)
            backward(dout, x, ph, pw, 1, samples, rows, 1, dw, db, nt)
            results.append((out, flags, dw, db))
    for wide, portable in zip(*results):
        if special is None:
            assert wide.tobytes() == portable.tobytes()
        else:  # NaN's sign and payload aside
            np.testing.assert_array_equal(wide, portable, strict=True)


@pytest.mark.parametrize("kind", ["nan", "special"])
def test_kernels_flag_blocks_with_values_that_are_not_finite(kind):
    # Only the blocks whose output tiles hold a NaN or an infinity are flagged,
    # the same ones by both kernel sets.
    conv_c, conv_r = _pair("winograd_conv2d")
    rng = np.random.default_rng(4)
    x = make_values(rng, (3, 2, 12, 9), np.float64)
    x[1, 1, 7, 4] = np.nan if kind == "nan" else np.inf
    u = fastcnn.reference.winograd_weight(make_values(rng, (4, 2, 3, 3), np.float64),
                                          np.empty((36, 4, 2)))
    flags_c, flags_r = np.empty(9, np.uint8), np.empty(9, np.uint8)
    conv_c(x, u, np.zeros(4), 1, 1, 1, 1, 1, np.empty((3, 4, 12, 9)), flags_c, 2)
    with np.errstate(invalid="raise", over="raise"):  # (the twin is quiet)
        conv_r(x, u, np.zeros(4), 1, 1, 1, 1, 1, np.empty((3, 4, 12, 9)), flags_r)
    # blocks of one tile row of one sample; row 7 of sample 1 is in tile rows
    # 1 (input rows 3 to 8) and 2 (7 to 12)
    np.testing.assert_array_equal(flags_c, [0, 0, 0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(flags_r, flags_c)


# ---------------------------------------------------------------------------
# Public level


def _conv(algorithm, x, weight, bias=None, **kwargs):
    with _backend.use_conv_algorithm(algorithm):
        return F.conv2d(x, weight, bias, **kwargs)


def _conv_backward(algorithm, dout, x, weight, **kwargs):
    with _backend.use_conv_algorithm(algorithm):
        return F.conv2d_backward(dout, x, weight, **kwargs)


@st.composite
def public_problems(draw):
    n, c, f = draw(st.integers(1, 4)), draw(st.integers(1, 40)), draw(st.integers(1, 40))
    h, w = draw(st.integers(1, 13)), draw(st.integers(1, 13))
    kernel = draw(st.sampled_from([(3, 3)] * 4 + [(5, 5), (4, 6), (1, 7), (2, 2)]))
    padding = draw(st.sampled_from([0, 1, 2, (2, 0), (0, 1), (3, 4), "valid"]
                                   + ["same"] * (kernel == (3, 3))))
    ph, pw = {"same": (1, 1), "valid": (0, 0)}.get(padding, None) or (
        padding if isinstance(padding, tuple) else (padding, padding))
    h, w = max(h, kernel[0] - 2 * ph), max(w, kernel[1] - 2 * pw)
    return (n, c, h, w), f, kernel, padding


@hsettings(60)
@given(problem=public_problems(), dtype=st.sampled_from(FLOAT_DTYPES),
       layout=st.sampled_from(LAYOUTS), with_bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_public_winograd_matches_the_gemm_driver(problem, dtype, layout, with_bias, seed):
    shape, f, kernel, padding = problem
    rng = np.random.default_rng(seed)
    x = make_values(rng, shape, dtype)
    weight = make_values(rng, (f, shape[1], *kernel), dtype)
    bias = make_values(rng, (f,), dtype) if with_bias else None
    gemm = _conv("gemm", x, weight, bias, padding=padding)
    dout = make_values(rng, gemm.shape, dtype)
    expected = (gemm, *_conv_backward("gemm", dout, x, weight, padding=padding))
    magnitudes = [np.abs(a) for a in (x, weight, dout)]
    bounds = (_conv("gemm", *magnitudes[:2], None if bias is None else np.abs(bias),
                    padding=padding),
              *_conv_backward("gemm", magnitudes[2], *magnitudes[:2], padding=padding))
    pristine = [x.copy(), weight.copy(), dout.copy()]
    odd = [with_layout(a, layout) for a in (x, weight, dout)]
    for backend in BACKENDS:
        with fastcnn.use_backend(backend):
            for xs, ws, ds in ((x, weight, dout), odd):
                got = (_conv("winograd", xs, ws, bias, padding=padding),
                       *_conv_backward("winograd", ds, xs, ws, padding=padding))
                for g, e, bound in zip(got, expected, bounds):
                    assert g.flags.c_contiguous
                    _assert_close(g, e, bound=bound)
    for a, b in zip((x, weight, dout), pristine):
        np.testing.assert_array_equal(a, b, strict=True)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("c", [1, 3, 64, 512])
def test_winograd_matches_torch(dtype, c):
    # float32 with many input channels is where Winograd's rounding grows
    # (Lavin and Gray's points failed this from 256 channels on).
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(c)
    x = make_values(rng, (2, c, 11, 14), dtype)
    weight = (rng.standard_normal((24, c, 3, 3)) / np.sqrt(9 * c)).astype(dtype)
    bias = make_values(rng, (24,), dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    tw = torch.from_numpy(weight.copy()).requires_grad_(True)
    tout = torch.nn.functional.conv2d(tx, tw, torch.from_numpy(bias), padding=1)
    dout = make_values(rng, tuple(tout.shape), dtype)
    tout.backward(torch.from_numpy(dout))
    for backend in BACKENDS:
        with fastcnn.use_backend(backend):
            out = _conv("winograd", x, weight, bias, padding=1)
            dx, dw, db = _conv_backward("winograd", dout, x, weight, padding=1)
        _assert_close(out, tout.detach().numpy())
        _assert_close(dx, tx.grad.numpy())
        _assert_close(dw, tw.grad.numpy())


def _calls(monkeypatch, name):
    """Count the calls to kernel `name` (either set)."""
    seen = []
    compiled, reference = _backend.pair_of(name)

    def counted(kernel):
        def call(*args):
            seen.append(name)
            return kernel(*args)
        return call

    if compiled is not None:
        monkeypatch.setitem(_backend._compiled, name, counted(compiled))
    monkeypatch.setattr(fastcnn.reference, name, counted(reference))
    return seen


@pytest.mark.parametrize("case, forward, dx, dweight", [
    (dict(c=4, f=4), True, True, True),
    (dict(c=3, f=40), False, False, False),     # too few input channels to pay
    # (and too many filters for the direct kernels, so that the GEMM driver runs)
    (dict(c=4, f=9), True, False, True),        # the input gradient: C < F/2 (without AVX-512)
    (dict(c=16, f=1), True, True, True),
    (dict(c=16, f=16, size=9), False, False, False),  # 7x7 outputs: too few tiles
    # 10x10 outputs, tiles of 12x12: the gradients pay only with many channels
    # (the input gradient without AVX-512)
    (dict(c=16, f=16, size=10), True, False, False),
    (dict(c=64, f=32, size=10), True, True, True),
    (dict(c=16, f=16, stride=2), False, False, False),  # not eligible:
    (dict(c=16, f=16, dilation=2, size=12), False, False, False),
    (dict(c=16, f=16, groups=2), False, False, False),
    (dict(c=16, f=16, kernel=5), False, False, False),   # kernels of 2x2 blocks of taps:
    (dict(c=16, f=32, kernel=5, size=16), True, False, False),  # each part from its channels
    (dict(c=64, f=64, kernel=5, size=16), True, True, False),
    (dict(c=128, f=128, kernel=4, size=16), True, True, True),
    (dict(c=128, f=128, kernel=5, size=15), False, False, False),  # 13x13 outputs
    (dict(c=128, f=128, kernel=7, size=16), False, False, False),  # 3x3 blocks
])
@pytest.mark.parametrize("avx512", [False, True])
def test_auto_picks_winograd_where_eligible_and_paying(monkeypatch, backend, case, forward, dx,
                                                       dweight, avx512):
    # the cases straddle them
    assert (F._WINOGRAD_MIN_CHANNELS, F._WINOGRAD_MIN_SIZE) == (4, 8)
    assert (F._WINOGRAD_FEW_CHANNELS, F._WINOGRAD_MAX_WASTE) == (2048, 1.15)
    # with AVX-512's kernels, the input gradient runs Winograd wherever the
    # forward does (3x3 kernels)
    monkeypatch.setattr(_backend, "implicit_conv", lambda: avx512)
    dx = dx or avx512 and forward and case.get("kernel", 3) == 3
    seen = _calls(monkeypatch, "winograd_conv2d")
    seen_backward = _calls(monkeypatch, "winograd_conv2d_backward")
    c, f, groups, k = case["c"], case["f"], case.get("groups", 1), case.get("kernel", 3)
    kwargs = dict(stride=case.get("stride", 1), dilation=case.get("dilation", 1), groups=groups,
                  padding=k // 2 - (case.get("size", 12) in (9, 15)))
    rng = np.random.default_rng(5)
    size = case.get("size", 12)
    x = make_values(rng, (2, c, size, size), np.float64)
    weight = make_values(rng, (f, c // groups, k, k), np.float64)
    out = F.conv2d(x, weight, **kwargs)
    assert len(seen) == forward
    grads = F.conv2d_backward(out, x, weight, **kwargs)
    assert len(seen) == forward + dx and len(seen_backward) == dweight
    # whichever runs, "auto" gives one of the two algorithms' results, bit for bit
    with _backend.use_conv_algorithm("winograd" if forward else "gemm"):
        assert F.conv2d(x, weight, **kwargs).tobytes() == out.tobytes()
    with _backend.use_conv_algorithm("winograd" if dx else "gemm"):
        assert F.conv2d_backward(out, x, weight, **kwargs)[0].tobytes() == grads[0].tobytes()
    with _backend.use_conv_algorithm("winograd" if dweight else "gemm"):
        assert F.conv2d_backward(out, x, weight, **kwargs)[1].tobytes() == grads[1].tobytes()


@pytest.mark.parametrize("algorithm", ["gemm", "direct"])
def test_other_algorithms_forced_never_run_winograd(monkeypatch, backend, algorithm):
    seen = [_calls(monkeypatch, "winograd_conv2d"), _calls(monkeypatch, "winograd_conv2d_backward")]
    rng = np.random.default_rng(9)
    x = make_values(rng, (2, 16, 12, 12), np.float64)
    weight = make_values(rng, (16, 16, 3, 3), np.float64)
    with _backend.use_conv_algorithm(algorithm):
        F.conv2d_backward(F.conv2d(x, weight, padding=1), x, weight, padding=1)
    assert seen == [[], []]
    F.conv2d_backward(F.conv2d(x, weight, padding=1), x, weight, padding=1)  # "auto"
    assert seen == [["winograd_conv2d"] * 2, ["winograd_conv2d_backward"]]


@pytest.mark.parametrize("where", ["x", "weight", "bias", "dout"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_values_that_are_not_finite_give_the_gemm_drivers_result(backend, where, value):
    # A NaN or an infinity would spread over Winograd's tiles (and an
    # infinity minus itself is NaN): the GEMM driver computes such calls.
    # (The bias is added after either algorithm: its value stays where it was.)
    rng = np.random.default_rng(6)
    arrays = {"x": make_values(rng, (2, 3, 10, 11), np.float32),
              "weight": make_values(rng, (4, 3, 3, 3), np.float32),
              "bias": make_values(rng, (4,), np.float32),
              "dout": make_values(rng, (2, 4, 10, 11), np.float32)}
    arrays[where][(1,) * arrays[where].ndim] = value
    x, weight, bias, dout = arrays.values()
    with np.errstate(invalid="ignore"):  # (the GEMM twin's inf - inf)
        expected = [_conv("gemm", x, weight, bias, padding=1),
                    *_conv_backward("gemm", dout, x, weight, padding=1)]
        got = [_conv("winograd", x, weight, bias, padding=1),
               *_conv_backward("winograd", dout, x, weight, padding=1)]
    # out, dx, dweight, dbias: those computed from the value come from the GEMM
    # driver, the others from Winograd (equal to rounding, with the value
    # where it was: the bias is added after either algorithm)
    affected = {"x": [0, 2, 3], "weight": [0, 1], "bias": [], "dout": [1, 2, 3]}[where]
    assert not np.isfinite(expected[1 if where == "dout" else 0]).all()
    for i, (g, e) in enumerate(zip(got, expected)):
        if i in affected:
            assert g.tobytes() == e.tobytes()
        else:
            finite = np.isfinite(e)
            np.testing.assert_array_equal(g[~finite], e[~finite])
            _assert_close(np.where(finite, g, 0), np.where(finite, e, 0))


def test_finite_inputs_whose_transform_overflows_give_the_gemm_drivers_result(backend):
    x = np.full((1, 2, 6, 6), 3e38, np.float32)
    weight = np.full((3, 2, 3, 3), 1e-3, np.float32)
    expected = _conv("gemm", x, weight, padding=1)
    assert np.isfinite(expected).all()
    assert _conv("winograd", x, weight, padding=1).tobytes() == expected.tobytes()


def test_use_conv_algorithm_rejects_unknown_names_and_restores():
    assert _backend.conv_algorithm() == "auto"
    with pytest.raises(ValueError, match="name must be one of"):
        with _backend.use_conv_algorithm("fft"):
            pass
    with _backend.use_conv_algorithm("gemm"):
        with pytest.raises(RuntimeError):
            with _backend.use_conv_algorithm("winograd"):
                assert _backend.conv_algorithm() == "winograd"
                raise RuntimeError
        assert _backend.conv_algorithm() == "gemm"
    assert _backend.conv_algorithm() == "auto"


# ---------------------------------------------------------------------------
# Threads


def _run(dtype):
    rng = np.random.default_rng(7)
    x = make_values(rng, (9, 5, 23, 18), dtype)  # several blocks of 2 samples
    big = make_values(rng, (2, 3, 70, 41), dtype)  # blocks of tile rows
    weight = make_values(rng, (6, 5, 3, 3), dtype)
    bias = make_values(rng, (6,), dtype)
    out = _conv("winograd", x, weight, bias, padding=1)
    res = [out, *_conv_backward("winograd", out, x, weight, padding=1)]
    res.append(_conv("winograd", big, weight[:, :3], padding=(2, 0)))
    return res


@pytest.mark.skipif(not COMPILED, reason="compiled kernels not built")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_bitwise_identical_across_thread_counts(small_ops_parallel, dtype):
    assert F._winograd_blocks(9, 23, 18)[0] > 1 and F._winograd_blocks(2, 72, 39)[1] < 18
    with fastcnn.use_backend("cython"):
        with _backend.use_num_threads(1):
            one = _run(dtype)
        for nt in (2, 4):
            with _backend.use_num_threads(nt):
                for a, b in zip(_run(dtype), one):
                    assert a.tobytes() == b.tobytes()
