# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled max and average pooling, forward and backward.

Python twins: ``fastcnn.reference.max_pool2d``, ``max_pool2d_backward``,
``avg_pool2d`` and ``avg_pool2d_backward``. Inputs (including every index) are
validated by ``fastcnn._validation`` before they get here. Work is split by
(n, c) plane, so no two threads write one element.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.stdint cimport int64_t
from libc.string cimport memset

from window cimport clip, end_inside, first_inside


cdef void _max_pool_plane(
    const floating* src, floating* dst, int64_t* idx, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow,
) noexcept nogil:
    cdef Py_ssize_t oy, ox, i, j, ih0, iw0, ilo, ihi, jlo, jhi, pos, best_pos
    cdef floating v, best
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
                    if v > best or v != v:
                        best = v
                        best_pos = pos
            dst[oy * ow + ox] = best
            idx[oy * ow + ox] = best_pos


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
    cdef Py_ssize_t plane, n, c
    with nogil:
        for plane in prange(N * C, schedule="static", num_threads=num_threads):
            n = plane // C
            c = plane % C
            _max_pool_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], &indices[n, c, 0, 0], H, W,
                            kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    return out.base, indices.base


def max_pool2d_backward(
    const floating[:, :, :, ::1] dout,
    const int64_t[:, :, :, ::1] indices,
    floating[:, :, :, ::1] out not None,
    int num_threads,
):
    """max_pool2d_backward(dout, indices, out, num_threads) -> out"""
    cdef Py_ssize_t N = out.shape[0], C = out.shape[1], H = out.shape[2], W = out.shape[3]
    cdef Py_ssize_t L = dout.shape[2] * dout.shape[3]
    cdef Py_ssize_t plane, n, c, k
    cdef floating* dst
    cdef const floating* g
    cdef const int64_t* idx
    with nogil:
        for plane in prange(N * C, schedule="static", num_threads=num_threads):
            n = plane // C
            c = plane % C
            dst = &out[n, c, 0, 0]
            g = &dout[n, c, 0, 0]
            idx = &indices[n, c, 0, 0]
            memset(dst, 0, H * W * sizeof(floating))
            for k in range(L):
                dst[idx[k]] += g[k]
    return out.base


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


cdef void _avg_pool_plane(
    const floating* src, floating* dst, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow,
    bint count_include_pad, Py_ssize_t divisor_override,
) noexcept nogil:
    cdef Py_ssize_t oy, ox, ih, iw, ih0, iw0
    cdef floating acc
    for oy in range(oh):
        ih0 = oy * sh - ph
        for ox in range(ow):
            iw0 = ox * sw - pw
            acc = 0
            for ih in range(max(ih0, 0), min(ih0 + kh, H)):
                for iw in range(max(iw0, 0), min(iw0 + kw, W)):
                    acc = acc + src[ih * W + iw]
            dst[oy * ow + ox] = acc / <floating> _divisor(
                ih0, iw0, H, W, kh, kw, ph, pw, count_include_pad, divisor_override)


def avg_pool2d(
    const floating[:, :, :, ::1] x,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad, Py_ssize_t divisor_override,
    floating[:, :, :, ::1] out not None,
    int num_threads,
):
    """avg_pool2d(x, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, out, num_threads) -> out"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t oh = out.shape[2], ow = out.shape[3]
    cdef Py_ssize_t plane, n, c
    with nogil:
        for plane in prange(N * C, schedule="static", num_threads=num_threads):
            n = plane // C
            c = plane % C
            _avg_pool_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], H, W, kh, kw, sh, sw,
                            ph, pw, oh, ow, count_include_pad, divisor_override)
    return out.base


cdef void _avg_pool_backward_plane(
    const floating* src, floating* dst, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow,
    bint count_include_pad, Py_ssize_t divisor_override,
) noexcept nogil:
    cdef Py_ssize_t oy, ox, ih, iw, ih0, iw0
    cdef floating g
    memset(dst, 0, H * W * sizeof(floating))
    for oy in range(oh):
        ih0 = oy * sh - ph
        for ox in range(ow):
            iw0 = ox * sw - pw
            g = src[oy * ow + ox] / <floating> _divisor(
                ih0, iw0, H, W, kh, kw, ph, pw, count_include_pad, divisor_override)
            for ih in range(max(ih0, 0), min(ih0 + kh, H)):
                for iw in range(max(iw0, 0), min(iw0 + kw, W)):
                    dst[ih * W + iw] += g


def avg_pool2d_backward(
    const floating[:, :, :, ::1] dout,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad, Py_ssize_t divisor_override,
    floating[:, :, :, ::1] out not None,
    int num_threads,
):
    """avg_pool2d_backward(dout, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, out, num_threads) -> out"""
    cdef Py_ssize_t N = out.shape[0], C = out.shape[1], H = out.shape[2], W = out.shape[3]
    cdef Py_ssize_t oh = dout.shape[2], ow = dout.shape[3]
    cdef Py_ssize_t plane, n, c
    with nogil:
        for plane in prange(N * C, schedule="static", num_threads=num_threads):
            n = plane // C
            c = plane % C
            _avg_pool_backward_plane(&dout[n, c, 0, 0], &out[n, c, 0, 0], H, W, kh, kw, sh, sw,
                                     ph, pw, oh, ow, count_include_pad, divisor_override)
    return out.base
