# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled im2col / col2im. Python twins: ``fastcnn.reference.im2col`` and ``col2im``.

Inputs are validated by ``fastcnn._validation`` before they get here. Work is
split by (n, c) plane: each plane owns a disjoint block of the output, so no
two threads ever write one element and results do not depend on the thread count.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from window cimport clip, end_inside, first_inside


cdef void _im2col_plane(
    const floating* src, floating* dst, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow,
) noexcept nogil:
    cdef Py_ssize_t i, j, oy, ox, iw0, lo, hi, y0, y1, shift
    cdef floating* tap
    cdef floating* row
    cdef const floating* line
    # With stride 1 and rows as long as the input's ("same" padding), a tap's
    # rows are one shifted copy of the plane: one memcpy per tap instead of
    # one per row, which is what small images (rows of a few cells) need.
    cdef bint block = sh == 1 and sw == 1 and ow == W
    for i in range(kh):
        y0 = clip(first_inside(i * dh - ph, sh), 0, oh)
        y1 = clip(end_inside(i * dh - ph, sh, H), y0, oh)
        for j in range(kw):
            tap = dst + (i * kw + j) * oh * ow
            iw0 = j * dw - pw
            lo = clip(first_inside(iw0, sw), 0, ow)
            hi = clip(end_inside(iw0, sw, W), lo, ow)
            if y0 > 0:
                memset(tap, 0, y0 * ow * sizeof(floating))
            if y1 < oh:
                memset(tap + y1 * ow, 0, (oh - y1) * ow * sizeof(floating))
            if y0 == y1:
                continue
            if block and hi > lo:
                # From the first cell inside to the last: never outside the plane.
                shift = (i * dh - ph) * W + iw0
                memcpy(tap + y0 * ow + lo, src + y0 * ow + lo + shift,
                       ((y1 - 1 - y0) * ow + hi - lo) * sizeof(floating))
                # Zero the padding columns: the copy ran through those between
                # rows (by column, so that no memset call is made per row).
                for ox in range(ow - hi + lo):
                    for oy in range(y0, y1 - 1):
                        tap[oy * ow + hi + ox] = 0
                for ox in range(lo):
                    tap[y0 * ow + ox] = 0
                for ox in range(hi, ow):
                    tap[(y1 - 1) * ow + ox] = 0
                continue
            for oy in range(y0, y1):
                row = tap + oy * ow
                line = src + (oy * sh - ph + i * dh) * W
                if lo > 0:
                    memset(row, 0, lo * sizeof(floating))
                if sw == 1:
                    memcpy(row + lo, line + lo + iw0, (hi - lo) * sizeof(floating))
                else:
                    for ox in range(lo, hi):
                        row[ox] = line[ox * sw + iw0]
                if hi < ow:
                    memset(row + hi, 0, (ow - hi) * sizeof(floating))


def im2col(
    const floating[:, :, :, ::1] x,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow,
    floating[:, :, ::1] out not None,
    int num_threads,
):
    """im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, out, num_threads) -> out"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t plane, n, c
    with nogil:
        for plane in prange(N * C, schedule="static", num_threads=num_threads):
            n = plane // C
            c = plane % C
            _im2col_plane(&x[n, c, 0, 0], &out[n, c * kh * kw, 0], H, W,
                          kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    return out.base


cdef void _col2im_plane(
    const floating* src, floating* dst, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow,
) noexcept nogil:
    # Taps in (i, j) order, positions inside: the reference adds in this order too.
    cdef Py_ssize_t i, j, oy, ox, iw0, lo, hi, y0, y1
    cdef const floating* row
    cdef floating* line
    memset(dst, 0, H * W * sizeof(floating))
    for i in range(kh):
        y0 = clip(first_inside(i * dh - ph, sh), 0, oh)
        y1 = clip(end_inside(i * dh - ph, sh, H), y0, oh)
        for j in range(kw):
            iw0 = j * dw - pw
            lo = clip(first_inside(iw0, sw), 0, ow)
            hi = clip(end_inside(iw0, sw, W), lo, ow)
            for oy in range(y0, y1):
                row = src + ((i * kw + j) * oh + oy) * ow
                line = dst + (oy * sh - ph + i * dh) * W
                for ox in range(lo, hi):
                    line[ox * sw + iw0] += row[ox]


def col2im(
    const floating[:, :, ::1] cols,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow,
    floating[:, :, :, ::1] out not None,
    int num_threads,
):
    """col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, out, num_threads) -> out"""
    cdef Py_ssize_t N = out.shape[0], C = out.shape[1], H = out.shape[2], W = out.shape[3]
    cdef Py_ssize_t plane, n, c
    with nogil:
        for plane in prange(N * C, schedule="static", num_threads=num_threads):
            n = plane // C
            c = plane % C
            _col2im_plane(&cols[n, c * kh * kw, 0], &out[n, c, 0, 0], H, W,
                          kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    return out.base
