# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled max and average pooling, forward and backward.

Python twins: ``fastcnn.reference.max_pool2d``, ``max_pool2d_backward``,
``avg_pool2d`` and ``avg_pool2d_backward``. Inputs are validated by
``fastcnn._validation`` before they get here, but for the range of
max_pool2d_backward's indices: its kernels use an index only if it lies in
its plane (reading each once, ``indices.pxd``), and raise ValueError
afterwards if one did not. Work is split by (n, c) plane, so no two threads
write one element.

The common geometries (2x2 and 3x3 windows, stride 2, no dilation) run the
AVX2 / AVX-512 kernels of ``pool_simd.h`` where the CPU has them, and max
pooling's 2x2 windows in short output rows those of ``pool_quads.h``; every
other geometry, and other CPUs, run the generic kernels below. All give the
same bits: the other kernels do the generic kernels' comparisons and
additions in the same order.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY
from libc.stdint cimport INT32_MAX, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from simd cimport (
    FCNN_HAVE_STREAM, fcnn_set_simd_cap, fcnn_simd_level, fcnn_stream, fcnn_stream_fence,
)
from indices cimport checked, scatter_plane
from scratch cimport per_thread_scratch, scratch_if
from window cimport clip, end_inside, first_inside


cdef extern from "pool_simd.h" nogil:
    const Py_ssize_t FCNN_VL_F32, FCNN_VL_F64
    Py_ssize_t fcnn_pool_bwd_width(Py_ssize_t W, Py_ssize_t ow, Py_ssize_t vl)
    void fcnn_fill_f32(float* p, Py_ssize_t n, float value)
    void fcnn_fill_f64(double* p, Py_ssize_t n, double value)
    void fcnn_max_pool_plane_f32(
        const float* x, float* out, int64_t* idx, Py_ssize_t H, Py_ssize_t W, Py_ssize_t k,
        Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow)
    void fcnn_max_pool_plane_f64(
        const double* x, double* out, int64_t* idx, Py_ssize_t H, Py_ssize_t W, Py_ssize_t k,
        Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow)
    void fcnn_avg_pool_plane_f32(
        const float* x, float* out, const float* div, Py_ssize_t H, Py_ssize_t W, Py_ssize_t k,
        Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow)
    void fcnn_avg_pool_plane_f64(
        const double* x, double* out, const double* div, Py_ssize_t H, Py_ssize_t W,
        Py_ssize_t k, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow)
    int fcnn_max_pool_backward_tiles_f32(
        const float* dout, const int64_t* idx, float* dx, Py_ssize_t H, Py_ssize_t W,
        Py_ssize_t oh, Py_ssize_t ow)
    int fcnn_max_pool_backward_tiles_f64(
        const double* dout, const int64_t* idx, double* dx, Py_ssize_t H, Py_ssize_t W,
        Py_ssize_t oh, Py_ssize_t ow)
    void fcnn_avg_pool_backward_plane_f32(
        const float* dout, float* dx, const float* div, Py_ssize_t H, Py_ssize_t W,
        Py_ssize_t k, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow, float* g,
        Py_ssize_t wg)
    void fcnn_avg_pool_backward_plane_f64(
        const double* dout, double* dx, const double* div, Py_ssize_t H, Py_ssize_t W,
        Py_ssize_t k, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow, double* g,
        Py_ssize_t wg)


cdef extern from "pool_quads.h" nogil:
    void fcnn_max_pool_quads_f32(
        const float* x, float* out, int64_t* idx, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
        Py_ssize_t oh, Py_ssize_t ow)
    void fcnn_max_pool_quads_f64(
        const double* x, double* out, int64_t* idx, Py_ssize_t planes, Py_ssize_t H,
        Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow)
    int fcnn_max_pool_backward_quads_f32(
        const float* dout, const int64_t* idx, float* dx, Py_ssize_t planes, Py_ssize_t H,
        Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow)
    int fcnn_max_pool_backward_quads_f64(
        const double* dout, const int64_t* idx, double* dx, Py_ssize_t planes, Py_ssize_t H,
        Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow)
    bint fcnn_quads512(Py_ssize_t H, Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow)
    Py_ssize_t fcnn_max_pool_quads512_f32(
        const float* x, float* out, int64_t* idx, Py_ssize_t outputs, Py_ssize_t oh,
        Py_ssize_t ow)
    Py_ssize_t fcnn_max_pool_backward_quads512_f32(
        const float* dout, const int64_t* idx, float* dx, Py_ssize_t outputs, Py_ssize_t oh,
        Py_ssize_t ow, int* strays)


# max_pool2d_backward writes outputs of at least this many bytes (beyond the
# per-core caches, so they go to memory anyway) with non-temporal stores:
# those skip the read that a plain store makes of each line it misses. (On
# the reference machine this made float64 ResNet-sized gradients 1.5x faster
# and did not change float32 ones; for outputs that fit in a cache it is
# several times slower, hence the bound.)
cdef Py_ssize_t STREAM_BYTES = 16 << 20

# Output rows shorter than this, of 2x2 windows with stride 2 that lie inside
# the plane, are pooled by pool_quads.h's kernels, in runs of planes of
# about QUAD_RUN outputs.
cdef Py_ssize_t SHORT_ROW = 8
cdef Py_ssize_t QUAD_RUN = 1024


cdef bint _simd_window(
    Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t dh, Py_ssize_t dw, bint int32_indices,
) noexcept nogil:
    """Whether pool_simd.h has kernels for this geometry on this CPU."""
    return (
        fcnn_simd_level() > 0 and kh == kw and (kh == 2 or kh == 3) and sh == 2 and sw == 2
        and dh == 1 and dw == 1
        # float lanes carry int32 flat indices, including those of padding rows
        and (not int32_indices or (H + 3) * W <= INT32_MAX)
    )


def _cap_simd(int level):
    """Use SIMD kernels up to `level` (0 none, 1 AVX2, 2 AVX-512); returns the previous cap.

    For the tests, which run every instruction set the machine has. Results
    do not depend on it.
    """
    return fcnn_set_simd_cap(level)


def _simd_level():
    """The instruction set the SIMD kernels use here (see :func:`_cap_simd`)."""
    return fcnn_simd_level()


cdef void _fill(floating* p, Py_ssize_t n, floating value) noexcept nogil:
    if floating is float:
        fcnn_fill_f32(p, n, value)
    else:
        fcnn_fill_f64(p, n, value)


cdef void _max_pool_plane_generic(
    const floating* src, floating* dst, int64_t* idx, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow,
) noexcept nogil:
    cdef Py_ssize_t oy, ox, i, j, ih0, iw0, ilo, ihi, jlo, jhi, pos, best_pos
    cdef floating v, best
    cdef bint take
    for oy in range(oh):
        ih0 = oy * sh - ph
        ilo = clip(first_inside(ih0, dh), 0, kh)
        ihi = clip(end_inside(ih0, dh, H), ilo, kh)
        for ox in range(ow):
            iw0 = ox * sw - pw
            jlo = clip(first_inside(iw0, dw), 0, kw)
            jhi = clip(end_inside(iw0, dw, W), jlo, kw)
            # PyTorch's scan: ties keep the first maximum, any NaN wins and the
            # last NaN is kept; the index starts at the first real cell.
            best = -INFINITY
            best_pos = (ih0 + ilo * dh) * W + iw0 + jlo * dw
            for i in range(ilo, ihi):
                for j in range(jlo, jhi):
                    pos = (ih0 + i * dh) * W + iw0 + j * dw
                    v = src[pos]
                    # selects, not a branch: which cell wins depends on the data
                    take = (v > best) | (v != v)
                    best = v if take else best
                    best_pos = pos if take else best_pos
            dst[oy * ow + ox] = best
            idx[oy * ow + ox] = best_pos


cdef bint _quads(Py_ssize_t H, Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """Whether 2x2 windows with stride 2 lie inside the plane, in short rows."""
    return 2 * oh <= H and 2 * ow <= W and ow < SHORT_ROW


cdef void _max_pool_quads(
    const floating* x, floating* out, int64_t* idx, Py_ssize_t planes, Py_ssize_t H,
    Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow,
) noexcept nogil:
    cdef Py_ssize_t done = 0, whole
    if floating is float:
        if fcnn_quads512(H, W, oh, ow):  # whole vectors, then the planes left
            done = fcnn_max_pool_quads512_f32(x, out, idx, planes * oh * ow, oh, ow)
            whole = done // (oh * ow)
            x, out, idx, planes = x + whole * H * W, out + done, idx + done, planes - whole
        fcnn_max_pool_quads_f32(x, out, idx, planes, H, W, oh, ow)
    else:
        fcnn_max_pool_quads_f64(x, out, idx, planes, H, W, oh, ow)


cdef int _max_pool_backward_quads(
    const floating* g, const int64_t* idx, floating* dx, Py_ssize_t planes, Py_ssize_t H,
    Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow,
) noexcept nogil:
    cdef Py_ssize_t done = 0, whole
    cdef int strays = 0
    if floating is float:
        if fcnn_quads512(H, W, oh, ow):  # whole vectors, then the planes left
            done = fcnn_max_pool_backward_quads512_f32(g, idx, dx, planes * oh * ow, oh, ow,
                                                       &strays)
            if strays:
                return 0
            whole = done // (oh * ow)
            g, idx, dx, planes = g + done, idx + done, dx + whole * H * W, planes - whole
        return fcnn_max_pool_backward_quads_f32(g, idx, dx, planes, H, W, oh, ow)
    else:
        return fcnn_max_pool_backward_quads_f64(g, idx, dx, planes, H, W, oh, ow)


cdef void _max_pool_plane(
    bint simd, const floating* src, floating* dst, int64_t* idx, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow,
) noexcept nogil:
    """One plane of max_pool2d: by pool_simd.h if `simd`, else generically."""
    if not simd:
        _max_pool_plane_generic(src, dst, idx, H, W, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    elif floating is float:
        fcnn_max_pool_plane_f32(src, dst, idx, H, W, kh, ph, pw, oh, ow)
    else:
        fcnn_max_pool_plane_f64(src, dst, idx, H, W, kh, ph, pw, oh, ow)


def max_pool2d(
    const floating[:, :, :, ::1] x,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    floating[:, :, :, ::1] out not None,
    int64_t[:, :, :, ::1] indices not None,
    int num_threads,
):
    """max_pool2d(x, kh, kw, sh, sw, ph, pw, dh, dw, out, indices, num_threads) -> (out, indices)"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t oh = out.shape[2], ow = out.shape[3]
    cdef Py_ssize_t plane, lo, run = max(QUAD_RUN // max(oh * ow, 1), 1)
    cdef bint simd = _simd_window(H, W, kh, kw, sh, sw, dh, dw, floating is float)
    if (N * C > 0 and kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
            and dh == 1 and dw == 1 and _quads(H, W, oh, ow)):
        with nogil:
            for lo in prange(0, N * C, run, schedule="static", num_threads=num_threads):
                _max_pool_quads(&x[0, 0, 0, 0] + lo * H * W, &out[0, 0, 0, 0] + lo * oh * ow,
                                &indices[0, 0, 0, 0] + lo * oh * ow, min(run, N * C - lo),
                                H, W, oh, ow)
        return out.base, indices.base
    with nogil:
        for plane in prange(N * C, schedule="static", num_threads=num_threads):
            _max_pool_plane(simd, &x[plane // C, plane % C, 0, 0],
                            &out[plane // C, plane % C, 0, 0],
                            &indices[plane // C, plane % C, 0, 0], H, W, kh, kw, sh, sw, ph, pw,
                            dh, dw, oh, ow)
    return out.base, indices.base


cdef int _tiles_plane(
    const floating* g, const int64_t* idx, floating* dst, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t oh, Py_ssize_t ow,
) noexcept nogil:
    """Gradient of one plane whose indices tile it in 2x2 cells (see
    pool_simd.h): 0 if some index lies outside its tile."""
    if _quads(H, W, oh, ow):
        return _max_pool_backward_quads(g, idx, dst, 1, H, W, oh, ow)
    if floating is float:
        return fcnn_max_pool_backward_tiles_f32(g, idx, dst, H, W, oh, ow)
    else:
        return fcnn_max_pool_backward_tiles_f64(g, idx, dst, H, W, oh, ow)


cdef Py_ssize_t _max_pool_backward_plane(
    const floating* g, const int64_t* idx, floating* dst, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t oh, Py_ssize_t ow, bint tiles, floating* s,
) noexcept nogil:
    """One plane of max_pool2d_backward: by tiles if `tiles` and they fit, else
    scattered into `dst`, or into scratch `s` streamed to `dst` if `s` is not
    NULL; returns how many indices lay outside the plane (a plane with one
    does not fit the tiles)."""
    cdef Py_ssize_t outside
    if tiles and _tiles_plane(g, idx, dst, H, W, oh, ow):
        return 0
    if s == NULL:
        return scatter_plane(g, idx, dst, oh * ow, H * W, True)
    outside = scatter_plane(g, idx, s, oh * ow, H * W, True)
    fcnn_stream(dst, s, H * W * sizeof(floating))
    return outside


def max_pool2d_backward(
    const floating[:, :, :, ::1] dout,
    const int64_t[:, :, :, ::1] indices,
    floating[:, :, :, ::1] out not None,
    int num_threads,
):
    """max_pool2d_backward(dout, indices, out, num_threads) -> out

    Raises ValueError (with `out` undefined) if an index lies outside its
    plane.
    """
    cdef Py_ssize_t N = out.shape[0], C = out.shape[1], H = out.shape[2], W = out.shape[3]
    cdef Py_ssize_t outside = 0
    cdef Py_ssize_t oh = dout.shape[2], ow = dout.shape[3]
    cdef Py_ssize_t plane, lo, hi, run = max(QUAD_RUN // max(oh * ow, 1), 1)
    # Indices that tile the input in 2x2 cells (as 2x2 windows with stride 2
    # give) let every cell be written once, without zeroing and scattering
    # (short rows: the planes of a run are zeroed at once and each gradient
    # stored once, pool_quads.h). The indices come from the user: whether
    # the first plane's do decides which kernel to try, and a plane whose
    # indices do not falls back. (The tile kernel only compares indices with
    # its cells' positions, so any values, even ones changed by another
    # thread meanwhile, are safe there.)
    cdef bint quads = _quads(H, W, oh, ow)
    cdef bint tiles = N * C > 0 and 2 * oh <= H and 2 * ow <= W and (
        quads or fcnn_simd_level() > 0 and (floating is double or (H + 3) * W <= INT32_MAX)
    )
    cdef bint stream
    cdef Py_ssize_t stride = 0
    cdef floating* scratch = NULL
    cdef floating* s
    if tiles:
        with nogil:
            tiles = _tiles_plane(&dout[0, 0, 0, 0], &indices[0, 0, 0, 0], &out[0, 0, 0, 0],
                                 H, W, oh, ow)
    if tiles and quads:  # in runs of planes; a run with strays is scattered
        with nogil:
            for lo in prange(0, N * C, run, schedule="static", num_threads=num_threads):
                hi = min(lo + run, N * C)
                if not _max_pool_backward_quads(&dout[0, 0, 0, 0] + lo * oh * ow,
                                                &indices[0, 0, 0, 0] + lo * oh * ow,
                                                &out[0, 0, 0, 0] + lo * H * W, hi - lo,
                                                H, W, oh, ow):
                    for plane in range(lo, hi):
                        outside += scatter_plane(&dout[0, 0, 0, 0] + plane * oh * ow,
                                                 &indices[0, 0, 0, 0] + plane * oh * ow,
                                                 &out[0, 0, 0, 0] + plane * H * W, oh * ow,
                                                 H * W, True)
        return checked(out.base, outside, H * W)
    # Otherwise each plane is zeroed and scattered into while it is in cache:
    # in place, or in a per-thread scratch plane that is then streamed out.
    stream = not tiles and FCNN_HAVE_STREAM and out.size * sizeof(floating) >= STREAM_BYTES
    scratch = <floating*> scratch_if(stream, num_threads, H * W, sizeof(floating), &stride)
    try:
        with nogil, parallel(num_threads=num_threads):
            s = scratch + threadid() * stride
            for plane in prange(N * C, schedule="static"):
                outside += _max_pool_backward_plane(&dout[plane // C, plane % C, 0, 0],
                                                    &indices[plane // C, plane % C, 0, 0],
                                                    &out[plane // C, plane % C, 0, 0], H, W, oh,
                                                    ow, tiles, s)
            fcnn_stream_fence()
    finally:
        free(scratch)
    return checked(out.base, outside, H * W)


cdef inline Py_ssize_t _divisor(
    Py_ssize_t ih0, Py_ssize_t iw0, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
    bint count_include_pad, Py_ssize_t divisor_override,
) noexcept nogil:
    # As PyTorch: the window clipped to the padded input, or to the input.
    cdef Py_ssize_t ih1, iw1
    if divisor_override:
        return divisor_override
    ih1 = min(ih0 + kh, H + ph)
    iw1 = min(iw0 + kw, W + pw)
    if count_include_pad:
        return (ih1 - ih0) * (iw1 - iw0)
    return (min(ih1, H) - max(ih0, 0)) * (min(iw1, W) - max(iw0, 0))


cdef int _divisor_table(
    floating** div, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow,
    bint count_include_pad, Py_ssize_t divisor_override, Py_ssize_t padding,
) except -1:
    """Allocate ``div[0]`` (the caller frees it) and fill ``div[0][oy * ow + ox]``
    with window (oy, ox)'s divisor, and the `padding` cells after them with 1
    (vector loads may read them)."""
    cdef Py_ssize_t oy, ox, stride = 0
    cdef floating* d = <floating*> per_thread_scratch(1, oh * ow + padding, sizeof(floating),
                                                      &stride)
    div[0] = d
    with nogil:
        for oy in range(oh):
            for ox in range(ow):
                d[oy * ow + ox] = <floating> _divisor(oy * sh - ph, ox * sw - pw, H, W, kh, kw,
                                                      ph, pw, count_include_pad, divisor_override)
        for ox in range(padding):
            d[oh * ow + ox] = 1
    return 0


cdef inline void _avg_pool_plane_generic(
    bint backward, const floating* src, floating* dst, const floating* div,
    Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow,
) noexcept nogil:
    """Each window's sum of the input plane `src` over its divisor, into the
    output plane `dst`; or, if `backward`, each output gradient of `src` over
    its divisor added to the cells of its window in the input gradient `dst`."""
    cdef Py_ssize_t oy, ox, ih, iw, ih0, iw0
    cdef floating acc, g
    if backward:
        memset(dst, 0, H * W * sizeof(floating))
    for oy in range(oh):
        ih0 = oy * sh - ph
        for ox in range(ow):
            iw0 = ox * sw - pw
            if backward:
                g = src[oy * ow + ox] / div[oy * ow + ox]
                for ih in range(max(ih0, 0), min(ih0 + kh, H)):
                    for iw in range(max(iw0, 0), min(iw0 + kw, W)):
                        dst[ih * W + iw] += g
            else:
                acc = 0
                for ih in range(max(ih0, 0), min(ih0 + kh, H)):
                    for iw in range(max(iw0, 0), min(iw0 + kw, W)):
                        acc = acc + src[ih * W + iw]
                dst[oy * ow + ox] = acc / div[oy * ow + ox]


cdef void _avg_pool_plane(
    bint backward, bint simd, const floating* src, floating* dst, const floating* div,
    Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow, floating* g, Py_ssize_t wg,
) noexcept nogil:
    """One plane as _avg_pool_plane_generic: by pool_simd.h if `simd` (the
    backward with a thread's rows of shares `g`, `wg` cells each), else
    generically."""
    # (a constant direction for the generic walk: the compiler drops the other)
    if not simd and backward:
        _avg_pool_plane_generic(True, src, dst, div, H, W, kh, kw, sh, sw, ph, pw, oh, ow)
    elif not simd:
        _avg_pool_plane_generic(False, src, dst, div, H, W, kh, kw, sh, sw, ph, pw, oh, ow)
    elif backward:
        if floating is float:
            fcnn_avg_pool_backward_plane_f32(src, dst, div, H, W, kh, ph, pw, oh, ow, g, wg)
        else:
            fcnn_avg_pool_backward_plane_f64(src, dst, div, H, W, kh, ph, pw, oh, ow, g, wg)
    elif floating is float:
        fcnn_avg_pool_plane_f32(src, dst, div, H, W, kh, ph, pw, oh, ow)
    else:
        fcnn_avg_pool_plane_f64(src, dst, div, H, W, kh, ph, pw, oh, ow)


def _avg_pool2d(
    bint backward, const floating[:, :, :, ::1] src,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad, Py_ssize_t divisor_override,
    floating[:, :, :, ::1] out not None,
    int num_threads,
):
    """_avg_pool2d(backward, src, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, out, num_threads) -> out

    avg_pool2d of the input `src` into `out`, or, if `backward`, its gradient:
    avg_pool2d_backward of the output gradient `src` into `out`.
    """
    cdef Py_ssize_t N = out.shape[0], C = out.shape[1], H, W, oh, ow
    cdef Py_ssize_t plane, stride = 0
    cdef Py_ssize_t lanes = FCNN_VL_F32 if floating is float else FCNN_VL_F64
    cdef floating* div = NULL
    cdef floating* shares = NULL
    cdef floating* g
    if backward:
        H, W, oh, ow = out.shape[2], out.shape[3], src.shape[2], src.shape[3]
    else:
        H, W, oh, ow = src.shape[2], src.shape[3], out.shape[2], out.shape[3]
    cdef bint simd = _simd_window(H, W, kh, kw, sh, sw, 1, 1, False)
    # The SIMD backward: each thread's rows of shares, with +0.0 borders.
    cdef Py_ssize_t wg = fcnn_pool_bwd_width(W, ow, lanes) if simd and backward else 0
    cdef Py_ssize_t per_thread = oh * wg
    _divisor_table(&div, H, W, kh, kw, sh, sw, ph, pw, oh, ow, count_include_pad,
                   divisor_override, lanes)
    try:
        shares = <floating*> scratch_if(wg > 0, num_threads, per_thread, sizeof(floating),
                                        &stride)
        with nogil, parallel(num_threads=num_threads):
            g = shares + threadid() * stride
            if wg > 0:
                _fill(g, per_thread, 0)
            for plane in prange(N * C, schedule="static"):
                _avg_pool_plane(backward, simd, &src[plane // C, plane % C, 0, 0],
                                &out[plane // C, plane % C, 0, 0], div, H, W, kh, kw, sh, sw,
                                ph, pw, oh, ow, g, wg)
    finally:
        free(div)
        free(shares)
    return out.base

