# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled im2col / col2im. Python twins: ``fastcnn.reference.im2col`` and ``col2im``.

Inputs are validated by ``fastcnn._validation`` before they get here. Work is
split by (n, c) plane: each plane owns a disjoint block of the output, so no
two threads ever write one element and results do not depend on the thread count.

im2col outputs of at least ``STREAM_BYTES`` are built piece by piece in a
per-thread scratch that stays in cache, and streamed out with non-temporal
stores (``simd.h``); smaller ones are written in place. Both ways write the
same values.

col2im sums the taps of each image cell in (i, j) order, as the twin does:
tap by tap into the plane, or, for column stride 1 and rows wide enough,
image row by image row with the sums in registers (``fold.h``). Both ways
add the same values in the same order.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stddef cimport ptrdiff_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from simd cimport (
    FCNN_HAVE_STREAM, fcnn_set_simd_cap, fcnn_stream, fcnn_stream_fence,
)
from scratch cimport per_thread_scratch
from window cimport clip, end_inside, first_inside

cdef extern from "fold.h" nogil:
    void fcnn_fold_chunk_f32(float* dst, const float** rows, const ptrdiff_t* shift,
                             ptrdiff_t taps, ptrdiff_t ix)
    void fcnn_fold_chunk_f64(double* dst, const double** rows, const ptrdiff_t* shift,
                             ptrdiff_t taps, ptrdiff_t ix)


# im2col outputs of at least this many bytes are streamed (see simd.h). They
# do not fit in the caches, so their lines go to memory anyway, and a plain
# store first reads each line that it misses: for im2col, which writes kh*kw
# times what it reads, that read is almost half of the traffic. Smaller
# outputs are written in place and stay in the caches for whatever reads
# them next (conv2d's GEMM reads each chunk's columns right away). Measured
# at 1 thread on a 2-core Xeon with AVX-512 (layers of ResNet, CIFAR and
# MNIST sizes): streaming took 1.1-2.2x as long for outputs of 7-29 MB,
# which a cache kept from one call to the next, and 0.55-0.75x as long from
# 43 MB up.
cdef Py_ssize_t STREAM_BYTES = 32 << 20


# Streamed outputs are built in pieces of about this many bytes. Pieces of
# 16-24 KiB were the fastest (images of 56x56 to 1024x1024, both dtypes):
# smaller ones pay the partial lines at their ends and the calls more often,
# larger ones push the input rows they are copied from out of the L1 cache.
cdef Py_ssize_t PIECE_BYTES = 24 << 10


def _streaming(stream_bytes=None, piece_bytes=None):
    """Set ``STREAM_BYTES`` and ``PIECE_BYTES`` (those given); return the previous pair.

    For the tests, which stream small outputs in pieces of every size.
    Results do not depend on them.
    """
    global STREAM_BYTES, PIECE_BYTES
    previous = STREAM_BYTES, PIECE_BYTES
    if stream_bytes is not None:
        STREAM_BYTES = stream_bytes
    if piece_bytes is not None:
        PIECE_BYTES = max(piece_bytes, 1)
    return previous


def _cap_simd(int level):
    """Stream with instruction sets up to `level` (0 SSE2, 1 AVX2, 2 AVX-512); returns the previous cap.

    For the tests, which run every instruction set the machine has.
    """
    return fcnn_set_simd_cap(level)


cdef bint _streams(Py_ssize_t nbytes) noexcept nogil:
    return FCNN_HAVE_STREAM and nbytes >= STREAM_BYTES


cdef inline void _im2col_rows(
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
    cdef Py_ssize_t plane, n, c, i, j, y0, y1, piece, ya, yb, stride = 0
    cdef bint stream = _streams(out.size * sizeof(floating))
    # A streamed output is built in pieces of `rows` output rows of one
    # offset, in scratch that stays in the L1 cache, and streamed out piece
    # by piece: band by band of output rows, every offset of a band in turn,
    # so that the band's input rows stay in cache for all of them (for large
    # images, offset by offset would read the whole plane kh*kw times).
    # Otherwise each offset's row is written in place, as one piece.
    cdef Py_ssize_t pieces = 1
    if stream:
        pieces = clip((oh * ow * sizeof(floating) + PIECE_BYTES - 1) // PIECE_BYTES, 1, oh)
    cdef Py_ssize_t rows = (oh + pieces - 1) // pieces
    pieces = (oh + rows - 1) // rows
    cdef floating* scratch = NULL
    cdef floating* s
    cdef floating* dst
    if stream:
        scratch = <floating*> per_thread_scratch(num_threads, rows * ow, sizeof(floating), &stride)
    try:
        with nogil, parallel(num_threads=num_threads):
            s = scratch + threadid() * stride
            for plane in prange(N * C, schedule="static"):
                n = plane // C
                c = plane % C
                for piece in range(pieces):
                    ya = piece * rows
                    yb = min(ya + rows, oh)
                    for i in range(kh):
                        y0 = clip(first_inside(i * dh - ph, sh), 0, oh)
                        y1 = clip(end_inside(i * dh - ph, sh, H), y0, oh)
                        for j in range(kw):
                            dst = &out[n, (c * kh + i) * kw + j, ya * ow]
                            _im2col_rows(&x[n, c, 0, 0], s if stream else dst, i * dh - ph,
                                         j * dw - pw, y0, y1, ya, yb, W, sh, sw, ow)
                            if stream:
                                fcnn_stream(dst, s, (yb - ya) * ow * sizeof(floating))
            if stream:
                fcnn_stream_fence()
    finally:
        free(scratch)
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


cdef Py_ssize_t _fold_reach(Py_ssize_t W, Py_ssize_t kw, Py_ssize_t pw, Py_ssize_t dw,
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


cdef void _col2im_plane_rows(
    const floating* src, floating* dst, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow,
    const floating** rows, ptrdiff_t* shift, Py_ssize_t* tap_j, Py_ssize_t* reach,
) noexcept nogil:
    """_col2im_plane for column stride 1, image row by image row.

    Each cell is the sum of its taps in (i, j) order, as there; between the
    columns that every tap reaches, 64 bytes at a time in registers (the last
    chunk overlaps the one before and writes the same sums again). `rows`,
    `shift` and `tap_j` hold kh*kw entries, `reach` 2*kw.
    """
    cdef Py_ssize_t V = 64 // sizeof(floating)
    cdef Py_ssize_t i, j, iy, oy, ix, k, t, b
    cdef Py_ssize_t a = _fold_reach(W, kw, pw, dw, ow, reach, &b)
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
                rows[t] = src + ((i * kw + j) * oh + oy // sh) * ow
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


# col2im goes row by row (_col2im_plane_rows) if the columns that every tap
# column reaches make at least this many 64-byte chunks: the cells outside
# them cost a test per tap. Measured at 1 thread, kernel level, against tap
# by tap: 3x3 p1 on 56x56 1.10x as fast in float32 (3.4 chunks) and 1.30x
# in float64, on 32x32 in float64 (3.75) 1.13x; 5x5 p2 on 28x28 1.07x in
# float64 (3 chunks) but 0.85x in float32 (1.5 chunks).
cdef Py_ssize_t FOLD_CHUNKS = 2


def _fold_chunks(chunks=None):
    """Set ``FOLD_CHUNKS`` (if given); return the previous value.

    For the tests, which run the row path on narrow images too. Results do
    not depend on it.
    """
    global FOLD_CHUNKS
    previous = FOLD_CHUNKS
    if chunks is not None:
        FOLD_CHUNKS = chunks
    return previous


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
    cdef Py_ssize_t plane, n, c, tid, b = 0, r_stride = 0, s_stride = 0, i_stride = 0
    cdef Py_ssize_t a = _fold_reach(W, kw, pw, dw, ow, NULL, &b)
    cdef bint by_rows = sw == 1 and (b - a) * <Py_ssize_t> sizeof(floating) >= FOLD_CHUNKS * 64
    # per-thread tables of _col2im_plane_rows
    cdef const floating** rows = NULL
    cdef ptrdiff_t* shift = NULL
    cdef Py_ssize_t* index = NULL
    try:
        if by_rows:
            rows = <const floating**> per_thread_scratch(num_threads, kh * kw, sizeof(floating*), &r_stride)
            shift = <ptrdiff_t*> per_thread_scratch(num_threads, kh * kw, sizeof(ptrdiff_t), &s_stride)
            index = <Py_ssize_t*> per_thread_scratch(num_threads, kh * kw + 2 * kw, sizeof(Py_ssize_t),
                                           &i_stride)
        with nogil, parallel(num_threads=num_threads):
            tid = threadid()
            for plane in prange(N * C, schedule="static"):
                n = plane // C
                c = plane % C
                if by_rows:
                    _col2im_plane_rows(&cols[n, c * kh * kw, 0], &out[n, c, 0, 0], H, W,
                                       kh, kw, sh, ph, pw, dh, dw, oh, ow,
                                       rows + tid * r_stride, shift + tid * s_stride,
                                       index + tid * i_stride, index + tid * i_stride + kh * kw)
                else:
                    _col2im_plane(&cols[n, c * kh * kw, 0], &out[n, c, 0, 0], H, W,
                                  kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    finally:
        free(rows)
        free(shift)
        free(index)
    return out.base
