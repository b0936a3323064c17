# The per-plane loops of im2col and col2im, shared by unfold.pyx (the
# im2col / col2im kernels) and conv.pyx (the convolution driver, which
# unfolds and folds one sample at a time between its GEMMs).

from cython cimport floating
from libc.stddef cimport ptrdiff_t
from libc.string cimport memcpy, memset

from scratch cimport scratch_if
from window cimport clip, end_inside, first_inside

cdef extern from "fold.h" nogil:
    void fcnn_fold_chunk_f32(float* dst, const float** rows, const ptrdiff_t* shift,
                             ptrdiff_t taps, ptrdiff_t ix)
    void fcnn_fold_chunk_f64(double* dst, const double** rows, const ptrdiff_t* shift,
                             ptrdiff_t taps, ptrdiff_t ix)


cdef inline void im2col_rows(
    const floating* src, floating* dst, Py_ssize_t ih0, Py_ssize_t iw0,
    Py_ssize_t y0, Py_ssize_t y1, Py_ssize_t ya, Py_ssize_t yb,
    Py_ssize_t W, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ow,
) noexcept nogil:
    """Write output rows ``ya <= oy < yb`` of one kernel offset of plane `src`
    to `dst`: cells ``ya*ow`` to ``yb*ow`` of that offset's im2col row.

    The offset is input row ``oy*sh + ih0`` and column ``ox*sw + iw0`` of
    window (oy, ox); ``[y0, y1)`` are the output rows where that is an input row.
    """
    cdef Py_ssize_t oy, ox, lo, hi, shift
    cdef floating* row
    cdef const floating* line
    y0 = clip(y0, ya, yb)
    y1 = clip(y1, y0, yb)
    # the output columns where the offset is an input column
    lo = clip(first_inside(iw0, sw), 0, ow)
    hi = clip(end_inside(iw0, sw, W), lo, ow)
    if y0 > ya:
        memset(dst, 0, (y0 - ya) * ow * sizeof(floating))
    if y1 < yb:
        memset(dst + (y1 - ya) * ow, 0, (yb - y1) * ow * sizeof(floating))
    if y0 == y1:
        return
    dst = dst + (y0 - ya) * ow
    # With stride 1 and rows as long as the input's ("same" padding), the
    # rows are one shifted copy of the plane: one memcpy instead of one per
    # row, which is what small images (rows of a few cells) need.
    if sh == 1 and sw == 1 and ow == W and hi > lo:
        # From the first cell inside to the last: never outside the plane.
        shift = ih0 * W + iw0
        memcpy(dst + lo, src + y0 * ow + lo + shift,
               ((y1 - 1 - y0) * ow + hi - lo) * sizeof(floating))
        # Zero the padding columns: the copy ran through those between
        # rows (by column, so that no memset call is made per row).
        for ox in range(ow - hi + lo):
            for oy in range(y1 - 1 - y0):
                dst[oy * ow + hi + ox] = 0
        for ox in range(lo):
            dst[ox] = 0
        for ox in range(hi, ow):
            dst[(y1 - 1 - y0) * ow + ox] = 0
        return
    for oy in range(y0, y1):
        row = dst + (oy - y0) * ow
        line = src + (oy * sh + ih0) * W
        # padding columns: mostly one on either side, which a store writes
        # faster than a call
        if lo == 1:
            row[0] = 0
        elif lo > 0:
            memset(row, 0, lo * sizeof(floating))
        if sw == 1:
            memcpy(row + lo, line + lo + iw0, (hi - lo) * sizeof(floating))
        elif sw == 2:  # a constant stride, which the compiler vectorises
            for ox in range(lo, hi):
                row[ox] = line[2 * ox + iw0]
        else:
            for ox in range(lo, hi):
                row[ox] = line[ox * sw + iw0]
        if hi == ow - 1:
            row[hi] = 0
        elif hi < ow:
            memset(row + hi, 0, (ow - hi) * sizeof(floating))


cdef inline void col2im_plane(
    const floating* src, floating* dst, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t ld,
) noexcept nogil:
    """col2im of one plane whose kh*kw column rows are `ld` cells apart."""
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
                row = src + (i * kw + j) * ld + oy * ow
                line = dst + (oy * sh - ph + i * dh) * W
                if sw == 2:  # a constant stride, which the compiler vectorises
                    for ox in range(lo, hi):
                        line[2 * ox + iw0] += row[ox]
                else:
                    for ox in range(lo, hi):
                        line[ox * sw + iw0] += row[ox]


cdef inline Py_ssize_t fold_reach(Py_ssize_t W, Py_ssize_t kw, Py_ssize_t pw, Py_ssize_t dw,
                            Py_ssize_t ow, Py_ssize_t* reach, Py_ssize_t* b) noexcept nogil:
    """Column stride 1: tap column j reaches image columns [reach[2j], reach[2j+1]);
    returns a and sets `b`, ``[a, b)`` the columns every tap column reaches.
    `reach` may be NULL."""
    cdef Py_ssize_t j, iw0, lo, hi, a = 0
    b[0] = W
    for j in range(kw):
        iw0 = j * dw - pw
        lo = clip(first_inside(iw0, 1), 0, ow)
        hi = clip(end_inside(iw0, 1, W), lo, ow)
        if reach != NULL:
            reach[2 * j] = lo + iw0
            reach[2 * j + 1] = hi + iw0
        a = max(a, lo + iw0)
        b[0] = min(b[0], hi + iw0)
    a = min(a, W)
    b[0] = clip(b[0], a, W)
    return a


cdef inline void col2im_plane_rows(
    const floating* src, floating* dst, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t ld,
    const floating** rows, ptrdiff_t* shift, Py_ssize_t* tap_j, Py_ssize_t* reach,
) noexcept nogil:
    """col2im_plane for column stride 1, image row by image row.

    Each cell is the sum of its taps in (i, j) order, as there; between the
    columns that every tap reaches, 64 bytes at a time in registers (the last
    chunk overlaps the one before and writes the same sums again). `rows`,
    `shift` and `tap_j` hold kh*kw entries, `reach` 2*kw.
    """
    cdef Py_ssize_t V = 64 // sizeof(floating)
    cdef Py_ssize_t i, j, iy, oy, ix, k, t, b
    cdef Py_ssize_t a = fold_reach(W, kw, pw, dw, ow, reach, &b)
    cdef floating v
    cdef floating* line
    if b - a < V:
        b = a
    for iy in range(H):
        # the taps that put a column row on image row iy, in (i, j) order
        t = 0
        for i in range(kh):
            oy = iy + ph - i * dh
            if oy < 0 or oy % sh != 0 or oy // sh >= oh:
                continue
            for j in range(kw):
                rows[t] = src + (i * kw + j) * ld + oy // sh * ow
                shift[t] = j * dw - pw
                tap_j[t] = j
                t += 1
        line = dst + iy * W
        for ix in range(a):
            v = 0
            for k in range(t):
                if reach[2 * tap_j[k]] <= ix < reach[2 * tap_j[k] + 1]:
                    v += rows[k][ix - shift[k]]
            line[ix] = v
        ix = a
        while ix < b:
            ix = min(ix, b - V)
            if floating is float:
                fcnn_fold_chunk_f32(line, rows, shift, t, ix)
            else:
                fcnn_fold_chunk_f64(line, rows, shift, t, ix)
            ix += V
        for ix in range(b, W):
            v = 0
            for k in range(t):
                if reach[2 * tap_j[k]] <= ix < reach[2 * tap_j[k] + 1]:
                    v += rows[k][ix - shift[k]]
            line[ix] = v


# col2im goes row by row (col2im_plane_rows) if the columns that every tap
# column reaches make at least this many 64-byte chunks: the cells outside
# them cost a test per tap. Measured at 1 thread, kernel level, against tap
# by tap: 3x3 p1 on 56x56 1.10x as fast in float32 (3.4 chunks) and 1.30x
# in float64, on 32x32 in float64 (3.75) 1.13x; 5x5 p2 on 28x28 1.07x in
# float64 (3 chunks) but 0.85x in float32 (1.5 chunks).
cdef enum:
    FOLD_CHUNKS_DEFAULT = 2


cdef inline bint fold_by_rows(Py_ssize_t W, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t pw,
                              Py_ssize_t dw, Py_ssize_t ow, Py_ssize_t itemsize,
                              Py_ssize_t chunks) noexcept nogil:
    """Whether col2im_plane_rows folds planes of this geometry (see FOLD_CHUNKS_DEFAULT)."""
    cdef Py_ssize_t b = 0
    cdef Py_ssize_t a = fold_reach(W, kw, pw, dw, ow, NULL, &b)
    return sw == 1 and (b - a) * itemsize >= chunks * 64


cdef inline void fold_plane(
    const floating* src, floating* dst, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t ld, bint by_rows,
    const floating** rows, ptrdiff_t* shift, Py_ssize_t* index,
) noexcept nogil:
    """col2im of one plane whose kh*kw column rows are `ld` cells apart, by
    rows or tap by tap; `rows`, `shift` (kh*kw entries) and `index` (kh*kw +
    2*kw) are the tables of col2im_plane_rows."""
    if by_rows:
        col2im_plane_rows(src, dst, H, W, kh, kw, sh, ph, pw, dh, dw, oh, ow, ld,
                          rows, shift, index, index + kh * kw)
    else:
        col2im_plane(src, dst, H, W, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, ld)


cdef inline void** fold_tables(Py_ssize_t threads, Py_ssize_t kh, Py_ssize_t kw,
                               Py_ssize_t* stride) except? NULL:
    """Per-thread tables of fold_plane for `threads` threads (none if 0), `stride`
    cells apart: kh*kw row pointers, kh*kw shifts, kh*kw + 2*kw indices, in
    pointer-sized cells. Free with ``free``."""
    return <void**> scratch_if(threads > 0, threads, 3 * kh * kw + 2 * kw, sizeof(void*), stride)
