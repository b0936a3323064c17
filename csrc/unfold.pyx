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
from libc.stdlib cimport free

from planes cimport FOLD_CHUNKS_DEFAULT, fold_by_rows, fold_plane, fold_tables, im2col_rows
from simd cimport (
    FCNN_HAVE_STREAM, fcnn_set_simd_cap, fcnn_stream, fcnn_stream_fence,
)
from scratch cimport scratch_if
from window cimport clip, end_inside, first_inside


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
    cdef floating* scratch = <floating*> scratch_if(stream, num_threads, rows * ow,
                                                    sizeof(floating), &stride)
    cdef floating* s
    cdef floating* dst
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
                            im2col_rows(&x[n, c, 0, 0], s if stream else dst, i * dh - ph,
                                         j * dw - pw, y0, y1, ya, yb, W, sh, sw, ow)
                            if stream:
                                fcnn_stream(dst, s, (yb - ya) * ow * sizeof(floating))
            if stream:
                fcnn_stream_fence()
    finally:
        free(scratch)
    return out.base


# See planes.pxd; the tests lower it to run the row path on narrow images.
cdef Py_ssize_t FOLD_CHUNKS = FOLD_CHUNKS_DEFAULT


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
    cdef Py_ssize_t plane, stride = 0
    cdef bint by_rows = fold_by_rows(W, kw, sw, pw, dw, ow, sizeof(floating), FOLD_CHUNKS)
    cdef void** tables = fold_tables(num_threads if by_rows else 0, kh, kw, &stride)
    cdef void** t
    try:
        with nogil, parallel(num_threads=num_threads):
            t = tables + threadid() * stride
            for plane in prange(N * C, schedule="static"):
                fold_plane(&cols[plane // C, plane % C * kh * kw, 0],
                           &out[plane // C, plane % C, 0, 0], H, W,
                           kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, oh * ow, by_rows,
                           <const floating**> t, <ptrdiff_t*> (t + kh * kw),
                           <Py_ssize_t*> (t + 2 * kh * kw))
    finally:
        free(tables)
    return out.base
