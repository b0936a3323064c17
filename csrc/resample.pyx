# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled resampling: interpolate (nearest, bilinear) and max_unpool2d, forward and backward.

Python twins: the functions of the same names in ``fastcnn.reference``.
Work is split by (n, c) plane, so no two threads write one element, and
every plane's sums are made by one thread in a fixed order: results do not
depend on the thread count.

interpolate's kernels read per-axis tables that ``fastcnn.functional``
computes: the source row (column) of every output row (column), and for
bilinear both neighbours and their weights. They are copied here, each
index checked against its axis first. Bilinear works axis by axis: the
forward blends input rows along W, then pairs of those rows along H,
``h0 * (w0 * x00 + w1 * x01) + h1 * (w0 * x10 + w1 * x11)`` as PyTorch; the
backward, its adjoint, sums along H first, then along W. Every cell's
terms are added in the order of the outputs they come from, tap 0 before
tap 1, as in the twins.

max_unpool2d's indices come from the caller and are not checked before:
the kernels read each one once (``indices.pxd``), use it only if it lies
in its plane, and raise ValueError afterwards if one did not.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from indices cimport checked, read_index, scatter_plane
from scratch cimport per_thread_scratch, scratch_if


cdef Py_ssize_t* _checked_copy(const int64_t* src, Py_ssize_t n, Py_ssize_t size,
                               str name) except NULL:
    """A private copy of ``src[:n]`` (free it with ``free``), each value checked in ``[0, size)``."""
    cdef Py_ssize_t i, stride = 0
    cdef Py_ssize_t* copy = <Py_ssize_t*> per_thread_scratch(1, n, sizeof(Py_ssize_t), &stride)
    for i in range(n):
        copy[i] = src[i]
        if <uint64_t> copy[i] >= <uint64_t> size:
            free(copy)
            raise ValueError(f"{name} must lie in [0, {size}), got {src[i]}")
    return copy


cdef int _nearest_shapes(const int64_t[::1] rows, const int64_t[::1] cols, Py_ssize_t oh,
                         Py_ssize_t ow) except -1:
    """Check nearest's tables for an (oh, ow) output (or output gradient)."""
    if rows.shape[0] != oh:
        raise ValueError(f"rows must hold {oh} indices, got {rows.shape[0]}")
    if cols.shape[0] != ow:
        raise ValueError(f"cols must hold {ow} indices, got {cols.shape[0]}")
    return 0


cdef int _linear_shape(const int64_t[:, ::1] table, const floating[:, ::1] weights,
                       Py_ssize_t length, str name) except -1:
    if table.shape[0] != 2 or table.shape[1] != length:
        raise ValueError(f"{name} must have shape (2, {length}), "
                         f"got ({table.shape[0]}, {table.shape[1]})")
    if weights.shape[0] != 2 or weights.shape[1] != length:
        raise ValueError(f"{name}' weights must have shape (2, {length}), "
                         f"got ({weights.shape[0]}, {weights.shape[1]})")
    return 0


cdef int _linear_shapes(const int64_t[:, ::1] rows, const floating[:, ::1] row_weights,
                        const int64_t[:, ::1] cols, const floating[:, ::1] col_weights,
                        Py_ssize_t oh, Py_ssize_t ow) except -1:
    """Check bilinear's tables for an (oh, ow) output (or output gradient)."""
    _linear_shape(rows, row_weights, oh, "rows")
    _linear_shape(cols, col_weights, ow, "cols")
    return 0


cdef Py_ssize_t* _adjoint(const int64_t* index, Py_ssize_t taps, Py_ssize_t length,
                          Py_ssize_t size, str name, const floating* weights,
                          floating** sorted_weights) except NULL:
    """`index` ((taps, length) targets, each checked in ``[0, size)``) read by target.

    Returns a block (free it with ``free``) of size + 1 starts, then
    taps * length sources: target t sums cells ``sources[starts[t]:starts[t + 1]]``,
    in (cell, tap) order. With `weights` ((taps, length) too, or NULL),
    ``sorted_weights[0]`` gets their weights in that order (free it too).
    """
    cdef Py_ssize_t n = taps * length, t, j, tap, e, stride = 0
    cdef Py_ssize_t* copy = _checked_copy(index, n, size, name)
    cdef Py_ssize_t* block = NULL
    cdef Py_ssize_t* starts
    cdef Py_ssize_t* sources
    cdef floating* w = NULL
    try:
        block = <Py_ssize_t*> per_thread_scratch(1, size + 1 + n, sizeof(Py_ssize_t), &stride)
        if weights != NULL:
            w = <floating*> per_thread_scratch(1, n, sizeof(floating), &stride)
    except MemoryError:
        free(copy)
        free(block)
        raise
    starts = block
    sources = block + size + 1
    memset(starts, 0, (size + 1) * sizeof(Py_ssize_t))
    for e in range(n):
        starts[copy[e] + 1] += 1
    for t in range(size):
        starts[t + 1] += starts[t]
    # each target's cursor runs from its start to the next one's...
    for j in range(length):
        for tap in range(taps):
            t = copy[tap * length + j]
            sources[starts[t]] = j
            if w != NULL:
                w[starts[t]] = weights[tap * length + j]
            starts[t] += 1
    # ...which moves every start one target on: move them back
    for t in range(size, 0, -1):
        starts[t] = starts[t - 1]
    starts[0] = 0
    free(copy)
    if sorted_weights != NULL:
        sorted_weights[0] = w
    return block


cdef void _backward_plane(
    const floating* dout, floating* dx, floating* t, Py_ssize_t H, Py_ssize_t W, Py_ssize_t ow,
    const Py_ssize_t* row_starts, const Py_ssize_t* row_sources, const floating* row_weights,
    const Py_ssize_t* col_starts, const Py_ssize_t* col_sources, const floating* col_weights,
) noexcept nogil:
    # Input row by input row: its output rows summed into t (along H), then
    # each cell its columns of t (along W). Weights NULL: nearest, all 1.
    cdef Py_ssize_t ih, j, k, e
    cdef const floating* g
    cdef floating* line
    cdef floating w, acc
    for ih in range(H):
        memset(t, 0, ow * sizeof(floating))
        for e in range(row_starts[ih], row_starts[ih + 1]):
            g = dout + row_sources[e] * ow
            if row_weights == NULL:
                for j in range(ow):
                    t[j] += g[j]
            else:
                w = row_weights[e]
                for j in range(ow):
                    t[j] += w * g[j]
        line = dx + ih * W
        for k in range(W):
            acc = 0
            if col_weights == NULL:
                for e in range(col_starts[k], col_starts[k + 1]):
                    acc += t[col_sources[e]]
            else:
                for e in range(col_starts[k], col_starts[k + 1]):
                    acc += col_weights[e] * t[col_sources[e]]
            line[k] = acc


cdef object _backward(
    const floating[:, :, :, ::1] dout, floating[:, :, :, ::1] out, int num_threads,
    const int64_t* rows, const int64_t* cols, Py_ssize_t taps,
    const floating* row_weights, const floating* col_weights,
):
    """interpolate's backward for (taps, oh) `rows` and (taps, ow) `cols`
    (and their weights, or NULL for nearest)."""
    cdef Py_ssize_t N = out.shape[0], C = out.shape[1], H = out.shape[2], W = out.shape[3]
    cdef Py_ssize_t oh = dout.shape[2], ow = dout.shape[3]
    cdef Py_ssize_t plane, n, c, stride = 0
    cdef floating* rw = NULL
    cdef floating* cw = NULL
    cdef Py_ssize_t* r = _adjoint(rows, taps, oh, H, "rows", row_weights, &rw)
    cdef Py_ssize_t* q = NULL
    cdef floating* scratch = NULL
    cdef floating* t
    try:
        q = _adjoint(cols, taps, ow, W, "cols", col_weights, &cw)
        scratch = <floating*> per_thread_scratch(num_threads, ow, sizeof(floating), &stride)
        with nogil, parallel(num_threads=num_threads):
            t = scratch + threadid() * stride
            for plane in prange(N * C, schedule="static"):
                n = plane // C
                c = plane % C
                _backward_plane(&dout[n, c, 0, 0], &out[n, c, 0, 0], t, H, W, ow,
                                r, r + H + 1, rw, q, q + W + 1, cw)
    finally:
        free(r)
        free(q)
        free(rw)
        free(cw)
        free(scratch)
    return out.base


cdef object _interpolate(
    bint backward, const floating[:, :, :, ::1] src, floating[:, :, :, ::1] out,
    int num_threads, const int64_t* rows, const int64_t* cols, Py_ssize_t taps,
    const floating* row_weights, const floating* col_weights,
):
    """_forward, or _backward if `backward`, from `src` into `out`."""
    if backward:
        return _backward(src, out, num_threads, rows, cols, taps, row_weights, col_weights)
    return _forward(src, out, num_threads, rows, cols, taps, row_weights, col_weights)


# -- nearest -----------------------------------------------------------------


cdef void _nearest_plane(
    const floating* x, floating* out, Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow,
    const Py_ssize_t* rows, const Py_ssize_t* cols,
) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const floating* line
    cdef floating* o
    for i in range(oh):
        o = out + i * ow
        if i > 0 and rows[i] == rows[i - 1]:  # upsampling repeats whole rows
            memcpy(o, o - ow, ow * sizeof(floating))
            continue
        line = x + rows[i] * W
        for j in range(ow):
            o[j] = line[cols[j]]


def _interpolate_nearest(
    bint backward,
    const floating[:, :, :, ::1] src,
    const int64_t[::1] rows not None,
    const int64_t[::1] cols not None,
    floating[:, :, :, ::1] out not None,
    int num_threads,
):
    """_interpolate_nearest(backward, src, rows, cols, out, num_threads) -> out

    interpolate_nearest of the input `src` into `out`, or, if `backward`,
    interpolate_nearest_backward of the output gradient `src` into `out`.
    """
    _nearest_shapes(rows, cols, src.shape[2] if backward else out.shape[2],
                    src.shape[3] if backward else out.shape[3])
    return _interpolate(backward, src, out, num_threads, &rows[0], &cols[0], 1, NULL, NULL)


# -- bilinear ----------------------------------------------------------------


cdef void _blend_columns(
    const floating* line, floating* t, Py_ssize_t ow, const Py_ssize_t* c0,
    const Py_ssize_t* c1, const floating* w0, const floating* w1,
) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(ow):
        t[j] = w0[j] * line[c0[j]] + w1[j] * line[c1[j]]


cdef floating* _blended_row(
    Py_ssize_t row, Py_ssize_t keep, Py_ssize_t* tags, floating* slots, Py_ssize_t stride,
    const floating* x, Py_ssize_t W, Py_ssize_t ow, const Py_ssize_t* c0, const Py_ssize_t* c1,
    const floating* w0, const floating* w1,
) noexcept nogil:
    """Input `row` blended along W, from one of two slots (`tags` says which
    rows they hold); a missing row replaces the one that is not `keep`."""
    cdef Py_ssize_t k
    if tags[0] == row:
        return slots
    if tags[1] == row:
        return slots + stride
    k = 1 if tags[0] == keep else 0
    tags[k] = row
    _blend_columns(x + row * W, slots + k * stride, ow, c0, c1, w0, w1)
    return slots + k * stride


cdef void _bilinear_plane(
    const floating* x, floating* out, floating* slots, Py_ssize_t stride,
    Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow,
    const Py_ssize_t* r0, const Py_ssize_t* r1, const floating* rw0, const floating* rw1,
    const Py_ssize_t* c0, const Py_ssize_t* c1, const floating* cw0, const floating* cw1,
) noexcept nogil:
    # Each output row blends two input rows blended along W; with the rows
    # in order, as interpolate's are, each of those is blended once.
    cdef Py_ssize_t i, j
    cdef Py_ssize_t tags[2]
    cdef const floating* a
    cdef const floating* b
    cdef floating* o
    cdef floating wa, wb
    tags[0] = -1
    tags[1] = -1
    for i in range(oh):
        a = _blended_row(r0[i], r1[i], tags, slots, stride, x, W, ow, c0, c1, cw0, cw1)
        b = _blended_row(r1[i], r0[i], tags, slots, stride, x, W, ow, c0, c1, cw0, cw1)
        o = out + i * ow
        wa = rw0[i]
        wb = rw1[i]
        for j in range(ow):
            o[j] = wa * a[j] + wb * b[j]


cdef object _forward(
    const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, int num_threads,
    const int64_t* rows, const int64_t* cols, Py_ssize_t taps,
    const floating* row_weights, const floating* col_weights,
):
    """interpolate's forward for (taps, oh) `rows` and (taps, ow) `cols`:
    nearest (taps 1, weights NULL) or bilinear (taps 2, with their weights)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t oh = out.shape[2], ow = out.shape[3]
    cdef Py_ssize_t plane, n, c, stride = 0
    cdef Py_ssize_t* r = _checked_copy(rows, taps * oh, H, "rows")
    cdef Py_ssize_t* q = NULL
    cdef floating* scratch = NULL
    cdef floating* slots
    try:
        q = _checked_copy(cols, taps * ow, W, "cols")
        # bilinear's two blended rows per thread; nearest needs none
        scratch = <floating*> scratch_if(taps == 2, num_threads, 2 * ow, sizeof(floating),
                                         &stride)
        with nogil, parallel(num_threads=num_threads):
            slots = scratch + threadid() * stride
            for plane in prange(N * C, schedule="static"):
                n = plane // C
                c = plane % C
                if taps == 1:
                    _nearest_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], W, oh, ow, r, q)
                else:
                    _bilinear_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], slots, ow, W, oh, ow,
                                    r, r + oh, row_weights, row_weights + oh,
                                    q, q + ow, col_weights, col_weights + ow)
    finally:
        free(r)
        free(q)
        free(scratch)
    return out.base


def _interpolate_bilinear(
    bint backward,
    const floating[:, :, :, ::1] src,
    const int64_t[:, ::1] rows not None,
    const floating[:, ::1] row_weights not None,
    const int64_t[:, ::1] cols not None,
    const floating[:, ::1] col_weights not None,
    floating[:, :, :, ::1] out not None,
    int num_threads,
):
    """_interpolate_bilinear(backward, src, rows, row_weights, cols, col_weights, out, num_threads) -> out

    interpolate_bilinear of the input `src` into `out`, or, if `backward`,
    interpolate_bilinear_backward of the output gradient `src` into `out`.
    """
    _linear_shapes(rows, row_weights, cols, col_weights,
                   src.shape[2] if backward else out.shape[2],
                   src.shape[3] if backward else out.shape[3])
    return _interpolate(backward, src, out, num_threads, &rows[0, 0], &cols[0, 0], 2,
                        &row_weights[0, 0], &col_weights[0, 0])


# -- max_unpool2d -------------------------------------------------------------


cdef Py_ssize_t _unpool_backward_plane(
    const floating* dout, const int64_t* idx, floating* dx, Py_ssize_t L, Py_ssize_t plane,
) noexcept nogil:
    # Returns how many indices were outside the plane; those read cell 0
    # (the caller raises: dx is undefined then). Selects, not branches, four
    # indices at a time: their loads and range checks overlap.
    cdef Py_ssize_t k = 0, outside = 0
    cdef uint64_t size = plane, i0, i1, i2, i3
    while k + 4 <= L:
        i0 = read_index(&idx[k])
        i1 = read_index(&idx[k + 1])
        i2 = read_index(&idx[k + 2])
        i3 = read_index(&idx[k + 3])
        outside += (i0 >= size) + (i1 >= size) + (i2 >= size) + (i3 >= size)
        dx[k] = dout[i0 if i0 < size else 0]
        dx[k + 1] = dout[i1 if i1 < size else 0]
        dx[k + 2] = dout[i2 if i2 < size else 0]
        dx[k + 3] = dout[i3 if i3 < size else 0]
        k += 4
    while k < L:
        i0 = read_index(&idx[k])
        outside += i0 >= size
        dx[k] = dout[i0 if i0 < size else 0]
        k += 1
    return outside


def _max_unpool2d(
    bint backward,
    const floating[:, :, :, ::1] src,
    const int64_t[:, :, :, ::1] indices,
    floating[:, :, :, ::1] out not None,
    int num_threads,
):
    """_max_unpool2d(backward, src, indices, out, num_threads) -> out

    max_unpool2d (a scatter from `src` into `out` by index) or, if
    `backward`, its backward (a gather); Python does not check the indices
    first: this raises ValueError (with `out` undefined) if one lies outside
    its plane.
    """
    cdef Py_ssize_t N = indices.shape[0], C = indices.shape[1]
    cdef Py_ssize_t L = indices.shape[2] * indices.shape[3]
    cdef Py_ssize_t size = (src.shape[2] * src.shape[3] if backward
                            else out.shape[2] * out.shape[3])
    cdef Py_ssize_t plane, n, c, outside = 0
    with nogil:
        for plane in prange(N * C, schedule="static", num_threads=num_threads):
            n = plane // C
            c = plane % C
            if backward:
                outside += _unpool_backward_plane(&src[n, c, 0, 0], &indices[n, c, 0, 0],
                                                  &out[n, c, 0, 0], L, size)
            else:
                outside += scatter_plane(&src[n, c, 0, 0], &indices[n, c, 0, 0],
                                         &out[n, c, 0, 0], L, size, False)
    return checked(out.base, outside, size)

