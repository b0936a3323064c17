# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled adaptive average and max pooling, forward and backward.

Python twins: ``fastcnn.reference.adaptive_avg_pool2d_forward``,
``adaptive_avg_pool2d_backward`` and ``adaptive_max_pool2d_forward``. (The
backward of adaptive max pooling is max_pool2d_backward's scatter, in
pool.pyx.) Inputs are validated by ``fastcnn.functional`` first; every
window is computed here from the shapes, never read from the caller, and no
value of the data decides where a kernel reads or writes outside a window.

Window i of n along an axis of `size` cells covers cells ``floor(i*size/n)``
to ``ceil((i+1)*size/n)`` (exclusive), as PyTorch's; windows overlap where
n does not divide size. The results are PyTorch's bit for bit, save one
case: a window's cells are summed one after the other in row-major order
from +0.0, and the sum divided by the window's height, then by its width
(a 1x1 output, which PyTorch computes as a mean, in yet another order, is
summed in lanes: see PLANE_LANES); the maximum is the cell that PyTorch's
scan (``v > best or isnan(v)`` from -inf and the window's first cell)
keeps; the backward adds each window's share to its cells in row-major
window order, from +0.0. Work is split by (n, c) plane: no two threads
write one element, and no result depends on the thread count.

A plane goes a row of windows at a time, each of its input rows read once
(and those of two overlapping window rows twice): the sums carry every
window's running sum from one input row to the next, which keeps as many
independent chains of additions in flight as there are windows in a row.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int64_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from scratch cimport per_thread_scratch

cdef extern from "adaptive.h" nogil:
    void fcnn_max_columns_f32(const float* src, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1,
                              float* best, int64_t* row_of)
    void fcnn_max_columns_f64(const double* src, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1,
                              double* best, int64_t* row_of)
    int64_t fcnn_max_window_f32(const float* best, const int64_t* row_of, Py_ssize_t W,
                                Py_ssize_t w0, Py_ssize_t w1)
    int64_t fcnn_max_window_f64(const double* best, const int64_t* row_of, Py_ssize_t W,
                                Py_ssize_t w0, Py_ssize_t w1)


cdef inline Py_ssize_t _start(Py_ssize_t i, Py_ssize_t size, Py_ssize_t n) noexcept nogil:
    # floor(i*size/n) without forming i*size, which can overflow: with
    # size = q*n + r it is i*q + floor(i*r/n), and i*r < n*n < 2**62.
    return i * (size // n) + i * (size % n) // n


cdef inline Py_ssize_t _end(Py_ssize_t i, Py_ssize_t size, Py_ssize_t n) noexcept nogil:
    # ceil((i+1)*size/n), likewise
    return (i + 1) * (size // n) + ((i + 1) * (size % n) + n - 1) // n


cdef Py_ssize_t* _windows(Py_ssize_t H, Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow,
                          bint covers) except NULL:
    """Allocate (free with ``free``) and fill the tables of a plane's windows.

    Cells ``[0, 2*oh)``: the windows' first and end rows, ``[2*oh, 2*oh +
    2*ow)`` their first and end columns. With `covers`, then ``2*H`` cells:
    for each input row, the first window row that holds it and the end of
    those window rows (they are consecutive).
    """
    cdef Py_ssize_t stride = 0
    cdef Py_ssize_t* t = <Py_ssize_t*> per_thread_scratch(
        1, 2 * (oh + ow) + (2 * H if covers else 0), sizeof(Py_ssize_t), &stride)
    cdef Py_ssize_t i, ih, lo = 0, hi = 0
    for i in range(oh):
        t[i] = _start(i, H, oh)
        t[oh + i] = _end(i, H, oh)
    for i in range(ow):
        t[2 * oh + i] = _start(i, W, ow)
        t[2 * oh + ow + i] = _end(i, W, ow)
    if covers:
        # both ends of the windows grow with i, so a sweep finds each row's
        # windows: those that end after it, up to the first that starts after it
        for ih in range(H):
            while lo < oh and t[oh + lo] <= ih:
                lo += 1
            hi = max(hi, lo)
            while hi < oh and t[hi] <= ih:
                hi += 1
            t[2 * (oh + ow) + ih] = lo
            t[2 * (oh + ow) + H + ih] = hi
    return t


cdef void _avg_plane(
    const floating* src, floating* dst, Py_ssize_t W, const Py_ssize_t* t,
    Py_ssize_t oh, Py_ssize_t ow,
) noexcept nogil:
    cdef const Py_ssize_t* ws = t + 2 * oh
    cdef const Py_ssize_t* we = ws + ow
    cdef Py_ssize_t oy, ox, ih, iw
    cdef floating acc
    cdef floating* row
    cdef const floating* line
    for oy in range(oh):
        row = dst + oy * ow
        for ox in range(ow):
            row[ox] = 0
        for ih in range(t[oy], t[oh + oy]):
            line = src + ih * W
            for ox in range(ow):
                acc = row[ox]
                for iw in range(ws[ox], we[ox]):
                    acc = acc + line[iw]
                row[ox] = acc
        for ox in range(ow):
            row[ox] = row[ox] / <floating> (t[oh + oy] - t[oy]) / <floating> (we[ox] - ws[ox])


# A 1x1 output (a global average) sums its plane in this many interleaved
# lanes, which keeps as many additions in flight (and vectorises), then adds
# up the lanes in order. (One sum of the whole plane would wait on each
# addition: a global average of 56x56 planes took 4.5 times PyTorch's time.)
cdef enum:
    PLANE_LANES = 16


cdef floating _plane_sum(const floating* src, Py_ssize_t n) noexcept nogil:
    """Cell i goes to lane i % PLANE_LANES; each lane adds from +0.0 in order."""
    cdef floating lanes[PLANE_LANES]
    cdef floating total = 0
    cdef Py_ssize_t i, k, full = n - n % PLANE_LANES
    for k in range(PLANE_LANES):
        lanes[k] = 0
    for i in range(full // PLANE_LANES):
        for k in range(PLANE_LANES):
            lanes[k] = lanes[k] + src[i * PLANE_LANES + k]
    for i in range(full, n):
        lanes[i - full] = lanes[i - full] + src[i]
    for k in range(PLANE_LANES):
        total = total + lanes[k]
    return total


cdef _avg_forward(
    const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, int num_threads,
    Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow,
):
    cdef Py_ssize_t plane, n, c
    cdef Py_ssize_t* t = _windows(H, W, oh, ow, False)
    try:
        with nogil:
            for plane in prange(N * C, schedule="static", num_threads=num_threads):
                n = plane // C
                c = plane % C
                if oh == 1 and ow == 1:
                    out[n, c, 0, 0] = (_plane_sum(&x[n, c, 0, 0], H * W) / <floating> H
                                       / <floating> W)
                else:
                    _avg_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], W, t, oh, ow)
    finally:
        free(t)
    return out.base


cdef void _max_plane(
    const floating* src, floating* dst, int64_t* idx, Py_ssize_t W, const Py_ssize_t* t,
    Py_ssize_t oh, Py_ssize_t ow, floating* best, int64_t* row_of,
) noexcept nogil:
    # PyTorch's scan of a window keeps its last NaN, or else its first
    # maximum, in row-major order (adaptive.h): whole input rows of a window
    # row update running column maxima, then each window picks among its
    # columns. The cell picked gives the output its value (of tied -0.0 and
    # 0.0, the first one's). Its index lies in the window whatever the data.
    cdef const Py_ssize_t* ws = t + 2 * oh
    cdef const Py_ssize_t* we = ws + ow
    cdef Py_ssize_t oy, ox
    cdef int64_t pos
    for oy in range(oh):
        if floating is float:
            fcnn_max_columns_f32(src, W, t[oy], t[oh + oy], best, row_of)
        else:
            fcnn_max_columns_f64(src, W, t[oy], t[oh + oy], best, row_of)
        for ox in range(ow):
            if floating is float:
                pos = fcnn_max_window_f32(best, row_of, W, ws[ox], we[ox])
            else:
                pos = fcnn_max_window_f64(best, row_of, W, ws[ox], we[ox])
            dst[oy * ow + ox] = src[pos]
            idx[oy * ow + ox] = pos


def adaptive_max_pool2d_forward(
    const floating[:, :, :, ::1] x not None,
    floating[:, :, :, ::1] out not None,
    int64_t[:, :, :, ::1] indices not None,
    int num_threads,
):
    """adaptive_max_pool2d_forward(x, out, indices, num_threads) -> (out, indices)"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t oh = out.shape[2], ow = out.shape[3]
    cdef Py_ssize_t plane, n, c
    cdef Py_ssize_t stride = 0, rows_stride = 0
    cdef floating* columns = NULL
    cdef int64_t* rows = NULL
    cdef Py_ssize_t* t = _windows(H, W, oh, ow, False)
    try:
        columns = <floating*> per_thread_scratch(num_threads, W, sizeof(floating), &stride)
        rows = <int64_t*> per_thread_scratch(num_threads, W, sizeof(int64_t), &rows_stride)
        with nogil, parallel(num_threads=num_threads):
            for plane in prange(N * C, schedule="static"):
                n = plane // C
                c = plane % C
                _max_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], &indices[n, c, 0, 0], W, t, oh, ow,
                           columns + threadid() * stride, rows + threadid() * rows_stride)
    finally:
        free(t)
        free(columns)
        free(rows)
    return out.base, indices.base


cdef inline void _add_shares(
    floating* line, const floating* shares, const Py_ssize_t* ws, const Py_ssize_t* we,
    Py_ssize_t ow,
) noexcept nogil:
    """Add a window row's shares to an input row, window by window."""
    cdef Py_ssize_t ox, iw
    cdef floating s
    for ox in range(ow):
        s = shares[ox]
        for iw in range(ws[ox], we[ox]):
            line[iw] += s


cdef void _avg_backward_plane(
    const floating* g, floating* dst, floating* share, floating* pattern, Py_ssize_t H,
    Py_ssize_t W, const Py_ssize_t* t, Py_ssize_t oh, Py_ssize_t ow,
) noexcept nogil:
    # A cell gets its windows' shares in row-major window order, added to
    # +0.0 (as PyTorch's scatter into a zeroed plane). Row by row: an input
    # row starts as the sums of the first window row that holds it, a
    # pattern shared by all the input rows it starts (`pattern`); the shares
    # of the window rows after it are added on top.
    cdef const Py_ssize_t* ws = t + 2 * oh
    cdef const Py_ssize_t* we = ws + ow
    cdef const Py_ssize_t* first = we + ow
    cdef const Py_ssize_t* end = first + H
    cdef Py_ssize_t oy, ox, ih, current = -1
    cdef floating* line
    for oy in range(oh):
        for ox in range(ow):
            share[oy * ow + ox] = (g[oy * ow + ox] / <floating> (t[oh + oy] - t[oy])
                                   / <floating> (we[ox] - ws[ox]))
    for ih in range(H):
        line = dst + ih * W
        if first[ih] != current:
            current = first[ih]
            memset(pattern, 0, W * sizeof(floating))
            _add_shares(pattern, share + current * ow, ws, we, ow)
        memcpy(line, pattern, W * sizeof(floating))
        for oy in range(current + 1, end[ih]):
            _add_shares(line, share + oy * ow, ws, we, ow)


cdef _avg_backward(
    const floating[:, :, :, ::1] dout, floating[:, :, :, ::1] out, int num_threads,
    Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow,
):
    cdef Py_ssize_t plane, n, c
    cdef Py_ssize_t stride = 0
    cdef floating* shares = NULL
    cdef floating* s
    cdef Py_ssize_t* t = _windows(H, W, oh, ow, True)
    try:
        # per thread: the plane's shares, then a pattern row
        shares = <floating*> per_thread_scratch(num_threads, oh * ow + W, sizeof(floating),
                                                &stride)
        with nogil, parallel(num_threads=num_threads):
            s = shares + threadid() * stride
            for plane in prange(N * C, schedule="static"):
                n = plane // C
                c = plane % C
                _avg_backward_plane(&dout[n, c, 0, 0], &out[n, c, 0, 0], s, s + oh * ow, H, W,
                                    t, oh, ow)
    finally:
        free(t)
        free(shares)
    return out.base


def _adaptive_avg_pool2d(
    bint backward,
    const floating[:, :, :, ::1] src not None,
    floating[:, :, :, ::1] out not None,
    int num_threads,
):
    """_adaptive_avg_pool2d(backward, src, out, num_threads) -> out

    adaptive_avg_pool2d_forward of the input `src` into `out`, or, if
    `backward`, adaptive_avg_pool2d_backward of the output gradient `src`
    into `out`.
    """
    cdef Py_ssize_t N = out.shape[0], C = out.shape[1]
    if backward:
        return _avg_backward(src, out, num_threads, N, C, out.shape[2], out.shape[3],
                             src.shape[2], src.shape[3])
    return _avg_forward(src, out, num_threads, N, C, src.shape[2], src.shape[3],
                        out.shape[2], out.shape[3])
