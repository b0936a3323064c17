# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled batch normalisation, as PyTorch's sync-BN decomposition.

Python twins: ``fastcnn.reference.batch_norm_stats``, ``batch_norm_elemt``,
``batch_norm_backward_reduce`` and ``batch_norm_backward_elemt``. Arrays are
``(N, C, L)`` (BatchNorm1D's ``(N, C)`` is L = 1, BatchNorm2D's L = H*W),
C-contiguous, validated in Python; per-channel statistics are float64.

A ReLU after the normalisation can be fused into it (``relu``): the forward
writes ``relu(y)`` of the normalised ``y``, and the backward passes take
the gradient of that output and zero it wherever ``y <= 0``. They need no
mask in memory: y is a monotone function of x (each of its operations
rounds monotonically), so the x whose y is positive form an interval,
found per channel by bisection over the floats with the forward's own
expression (_relu_window); the passes then compare x with its ends, and
the ReLU costs neither a pass over memory nor the arithmetic of y.

Work is split into tiles: a block of rows (samples) times a piece of the
``C*L`` cells of a row, either a piece of one channel's L cells (large L) or
several whole channels (small L), so that every inner loop runs over
contiguous cells whatever L is. Per-channel values the loops need are first
spread over the piece's cells. A reduction writes one partial sum per tile
and channel, and the partials of each channel are then added in tile order:
the results do not depend on the number of threads.

The statistics are sound for data far from zero (1e8 + N(0, 1) in float64):
each channel's values are shifted by one of them, and each tile is reduced
in two passes (its mean, then squares about it) while its rows are in cache;
the tiles' moments are combined about the channel mean. Sums run in double
for float32 data.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY, isfinite
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from scratch cimport per_thread_scratch


# A piece holds at most this many cells of a row: its per-cell accumulators
# and coefficients (a few arrays of doubles) stay in the L1 cache.
cdef Py_ssize_t PIECE_CELLS = 1024
# A tile holds about this many cells: the second pass over a tile's rows in
# batch_norm_stats reads them from the L2 cache.
cdef Py_ssize_t TILE_CELLS = 16384
# Channels of at least this many cells are normalised one by one, with their
# coefficients in registers; shorter ones through per-cell copies of them.
cdef Py_ssize_t WIDE_CELLS = 16


def _tiling_sizes(piece_cells=None, tile_cells=None):
    """Set ``PIECE_CELLS`` and ``TILE_CELLS`` (those given); return the previous pair.

    For the tests, which tile small arrays in every way. Element-wise
    results do not depend on them; sums only by rounding.
    """
    global PIECE_CELLS, TILE_CELLS
    previous = PIECE_CELLS, TILE_CELLS
    if piece_cells is not None:
        PIECE_CELLS = max(piece_cells, 1)
    if tile_cells is not None:
        TILE_CELLS = max(tile_cells, 1)
    return previous


cdef struct Tiling:
    Py_ssize_t N, C, L
    Py_ssize_t per_channel   # pieces per channel (> 1 only if L > PIECE_CELLS)
    Py_ssize_t channels      # whole channels per piece (1 if channels are split)
    Py_ssize_t cells         # cells of a full piece
    Py_ssize_t pieces
    Py_ssize_t rows          # rows per tile
    Py_ssize_t blocks        # blocks of rows
    Py_ssize_t tiles         # pieces times blocks
    Py_ssize_t partials      # one per row block, channel and piece of a channel


cdef Tiling _tiling(Py_ssize_t N, Py_ssize_t C, Py_ssize_t L) noexcept nogil:
    cdef Tiling t
    t.N, t.C, t.L = N, C, L
    if L > PIECE_CELLS:
        t.per_channel = (L + PIECE_CELLS - 1) // PIECE_CELLS
        t.cells = (L + t.per_channel - 1) // t.per_channel
        t.channels = 1
        t.pieces = C * t.per_channel
    else:
        t.per_channel = 1
        t.channels = min(C, PIECE_CELLS // L)
        t.cells = t.channels * L
        t.pieces = (C + t.channels - 1) // t.channels
    t.rows = max(1, TILE_CELLS // t.cells)
    t.blocks = (N + t.rows - 1) // t.rows
    t.tiles = t.pieces * t.blocks
    t.partials = t.blocks * C * t.per_channel
    return t


cdef inline void _piece(const Tiling* t, Py_ssize_t k, Py_ssize_t* c0, Py_ssize_t* c1,
                        Py_ssize_t* p0, Py_ssize_t* p1) noexcept nogil:
    """Channels [c0, c1) and row cells [p0, p1) of piece k."""
    cdef Py_ssize_t j
    if t.per_channel > 1:
        c0[0] = k // t.per_channel
        c1[0] = c0[0] + 1
        j = k % t.per_channel
        p0[0] = c0[0] * t.L + j * t.cells
        p1[0] = c0[0] * t.L + min(t.L, (j + 1) * t.cells)
    else:
        c0[0] = k * t.channels
        c1[0] = min(t.C, c0[0] + t.channels)
        p0[0] = c0[0] * t.L
        p1[0] = c1[0] * t.L


cdef inline Py_ssize_t _seg_start(const Tiling* t, Py_ssize_t c, Py_ssize_t p0) noexcept nogil:
    """Where channel c's cells start in a piece starting at row cell p0."""
    return max(c * t.L, p0) - p0


cdef inline Py_ssize_t _seg_end(const Tiling* t, Py_ssize_t c, Py_ssize_t p1,
                                Py_ssize_t p0) noexcept nogil:
    return min((c + 1) * t.L, p1) - p0


cdef inline Py_ssize_t _partial(const Tiling* t, Py_ssize_t b, Py_ssize_t c,
                                Py_ssize_t j) noexcept nogil:
    """Index of the partial of row block b, channel c, piece j of that channel."""
    return (b * t.C + c) * t.per_channel + j


cdef inline double _channel_total(const Tiling* t, const double* partials,
                                  Py_ssize_t c) noexcept nogil:
    """Channel c's partials added in tile order, whatever the number of threads."""
    cdef Py_ssize_t b, j
    cdef double total = 0
    for b in range(t.blocks):
        for j in range(t.per_channel):
            total = total + partials[_partial(t, b, c, j)]
    return total


cdef inline Py_ssize_t _partial_count(const Tiling* t, Py_ssize_t b, Py_ssize_t j) noexcept nogil:
    """How many cells partial (b, any channel, j) covers."""
    cdef Py_ssize_t rows = min(t.N, (b + 1) * t.rows) - b * t.rows
    if t.per_channel == 1:
        return rows * t.L
    return rows * (min(t.L, (j + 1) * t.cells) - j * t.cells)


cdef void _spread(const Tiling* t, const double* per_channel, double* cells, Py_ssize_t c0,
                  Py_ssize_t c1, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """cells[p] = per_channel[channel of cell p0 + p] over a piece."""
    cdef Py_ssize_t c, p
    cdef double v
    for c in range(c0, c1):
        v = per_channel[c]
        for p in range(_seg_start(t, c, p0), _seg_end(t, c, p1, p0)):
            cells[p] = v


cdef double* _doubles(Py_ssize_t n) except NULL:
    cdef double* p = <double*> malloc(max(n, 1) * sizeof(double))
    if p == NULL:
        raise MemoryError(f"cannot allocate {n} doubles")
    return p


# The passes over the tiles (one per kernel below).
cdef enum TilePass:
    STATS, ELEMT, BACKWARD_REDUCE, BACKWARD_ELEMT


cdef int _run_tiles(TilePass kind, const Tiling* t, const floating* x, const floating* dout,
                    floating* out, const double* centre, const double* coef, double* partial,
                    double* partial_2, bint training, bint relu, int num_threads) except -1:
    """Run every tile of pass `kind` on a team of `num_threads` threads.

    The tiles take the arrays they need of `x`, `dout` and `out`, the
    per-channel `centre` (the shift or the mean) and coefficients `coef`
    (see _elemt_tile and _backward_reduce_tile), and write their partial
    sums to `partial` and `partial_2`; `relu` fuses a ReLU.

    Thread w takes the w-th of `num_threads` equal ranges of the tiles in
    row-block order: the rows of the batch that the kernels before and
    after (convolutions, element-wise maps) give the same thread, whose
    cache holds them. It runs its tiles piece by piece, and remembers which
    piece's values its scratch (a few arrays of a piece's cells) holds, so
    that the element-wise passes spread them once per piece.
    """
    cdef Py_ssize_t i, w, k, b, lo, hi, stride = 0, held_stride = 0
    cdef Py_ssize_t arrays = 6 if kind == BACKWARD_ELEMT else 5 if kind == BACKWARD_REDUCE else \
        2 if kind == STATS else 3
    cdef double* scratch = NULL
    cdef Py_ssize_t* held = NULL
    cdef double* s
    cdef Py_ssize_t* piece_in_s
    try:
        scratch = <double*> per_thread_scratch(num_threads, arrays * t.cells, sizeof(double),
                                               &stride)
        held = <Py_ssize_t*> per_thread_scratch(num_threads, 1, sizeof(Py_ssize_t), &held_stride)
        with nogil, parallel(num_threads=num_threads):
            s = scratch + threadid() * stride
            piece_in_s = held + threadid() * held_stride
            piece_in_s[0] = -1
            for w in prange(num_threads, schedule="static"):
                lo = w * t.tiles // num_threads
                hi = (w + 1) * t.tiles // num_threads
                for k in range(t.pieces):
                    for b in range(lo // t.pieces, (hi + t.pieces - 1) // t.pieces):
                        i = b * t.pieces + k
                        if i < lo or i >= hi:
                            continue
                        if kind == STATS:
                            _stats_tile(x, t, k, b, centre, s, s + t.cells, partial, partial_2)
                        elif kind == BACKWARD_REDUCE:
                            _backward_reduce_tile(dout, x, t, k, b, centre, coef, relu, s,
                                                  partial, partial_2)
                        elif kind == ELEMT:  # (a constant kind: the compiler drops the others)
                            _elemt_tile(ELEMT, dout, x, out, t, k, b, training, relu, centre,
                                        coef, s, piece_in_s)
                        else:
                            _elemt_tile(BACKWARD_ELEMT, dout, x, out, t, k, b, training, relu,
                                        centre, coef, s, piece_in_s)
    finally:
        free(scratch)
        free(held)
    return 0


# ---------------------------------------------------------------------------
# Forward statistics


# The reductions take rows four at a time: each accumulator is then loaded
# and stored once per four cells (the additions' order is fixed all the same).


cdef void _sum_rows(double* acc, const floating* x, Py_ssize_t stride, Py_ssize_t rows,
                    const double* centre, Py_ssize_t m, bint squares) noexcept nogil:
    """acc[p] = sum over `rows` rows (`stride` apart) of x[p] - centre[p], or
    of its square if `squares`."""
    cdef Py_ssize_t n, p, last = rows - rows % 4
    cdef const floating* r
    cdef double c, d0, d1, d2, d3
    for p in range(m):
        acc[p] = 0
    for n in range(0, last, 4):
        r = x + n * stride
        if squares:
            for p in range(m):
                c = centre[p]
                d0 = <double> r[p] - c
                d1 = <double> r[stride + p] - c
                d2 = <double> r[2 * stride + p] - c
                d3 = <double> r[3 * stride + p] - c
                acc[p] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        else:
            for p in range(m):
                c = centre[p]
                acc[p] += (((<double> r[p] - c) + (<double> r[stride + p] - c))
                           + ((<double> r[2 * stride + p] - c) + (<double> r[3 * stride + p] - c)))
    for n in range(last, rows):
        r = x + n * stride
        if squares:
            for p in range(m):
                d0 = <double> r[p] - centre[p]
                acc[p] += d0 * d0
        else:
            for p in range(m):
                acc[p] += <double> r[p] - centre[p]


cdef void _stats_tile(const floating* x, const Tiling* t, Py_ssize_t k, Py_ssize_t b,
                      const double* shift, double* acc, double* centre, double* psum,
                      double* pm2) noexcept nogil:
    cdef Py_ssize_t c0, c1, p0, p1, p, c, s0, s1, idx
    cdef Py_ssize_t n0 = b * t.rows, rows = min(t.N, n0 + t.rows) - n0
    cdef Py_ssize_t j = k % t.per_channel, stride = t.C * t.L
    cdef double s, centre_c
    _piece(t, k, &c0, &c1, &p0, &p1)
    x = x + n0 * stride + p0
    _spread(t, shift, centre, c0, c1, p0, p1)
    _sum_rows(acc, x, stride, rows, centre, p1 - p0, False)
    # The tile's (shifted) sums, then squares about the tile's mean.
    for c in range(c0, c1):
        s0 = _seg_start(t, c, p0)
        s1 = _seg_end(t, c, p1, p0)
        s = 0
        for p in range(s0, s1):
            s = s + acc[p]
        idx = _partial(t, b, c, j)
        psum[idx] = s
        centre_c = shift[c] + s / (rows * (s1 - s0))
        for p in range(s0, s1):
            centre[p] = centre_c
    _sum_rows(acc, x, stride, rows, centre, p1 - p0, True)
    for c in range(c0, c1):
        s = 0
        for p in range(_seg_start(t, c, p0), _seg_end(t, c, p1, p0)):
            s = s + acc[p]
        pm2[_partial(t, b, c, j)] = s


def batch_norm_stats(
    const floating[:, :, ::1] x,
    double[::1] mean not None,
    double[::1] var not None,
    int num_threads,
):
    """batch_norm_stats(x, mean, var, num_threads) -> (mean, var)

    Per-channel mean and biased variance of x (N, C, L) over N and L, into
    float64 (C,) arrays.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Tiling t = _tiling(N, C, L)
    cdef Py_ssize_t c, b, j, idx
    cdef double count, ym, d, m2, first
    cdef double* shift = NULL
    cdef double* psum = NULL
    cdef double* pm2 = NULL
    if N * C * L == 0:
        return mean.base, var.base
    try:
        shift = _doubles(C)
        psum = _doubles(t.partials)
        pm2 = _doubles(t.partials)
        for c in range(C):
            # A channel's first value brings the others near zero (a large
            # offset would cost the sums their precision); inf and NaN
            # would make every shifted value NaN.
            first = x[0, c, 0]
            shift[c] = first if isfinite(first) else 0.0
        _run_tiles(STATS, &t, &x[0, 0, 0], NULL, NULL, shift, NULL, psum, pm2, False, False,
                   num_threads)
        with nogil:
            for c in prange(C, schedule="static", num_threads=num_threads):
                ym = _channel_total(&t, psum, c) / (N * L)
                # Tiles' squares about their means, plus their means' spread.
                m2 = 0
                for b in range(t.blocks):
                    for j in range(t.per_channel):
                        idx = _partial(&t, b, c, j)
                        count = _partial_count(&t, b, j)
                        d = psum[idx] / count - ym
                        m2 = m2 + (pm2[idx] + count * d * d)
                mean[c] = shift[c] + ym
                var[c] = m2 / (N * L)
    finally:
        free(shift)
        free(psum)
        free(pm2)
    return mean.base, var.base


# ---------------------------------------------------------------------------
# Forward normalisation


cdef inline floating _normalised(floating x, double centre, double scale,
                                 double shift) noexcept nogil:
    return <floating> ((<double> x - centre) * scale + shift)


cdef inline floating _rectified(floating y, bint relu) noexcept nogil:
    """relu(y) if `relu` (NaN stays NaN, -0.0 becomes 0.0, as the ReLU
    kernel), else y."""
    return 0 if relu and y <= 0 else y


cdef inline floating _through(floating dout, floating x, floating lo, floating hi,
                              bint relu) noexcept nogil:
    """`dout` where the fused ReLU passed its input on (x in its
    _relu_window [lo, hi]); 0 elsewhere (a NaN x included, as the ReLU's
    gradient)."""
    return 0 if relu and not (lo <= x and x <= hi) else dout


cdef inline uint64_t _order(floating v) noexcept nogil:
    """The rank of a non-NaN `v` among the floats of its type (-0.0 just
    below 0.0)."""
    cdef unsigned int u32
    cdef uint64_t u
    if floating is float:
        memcpy(&u32, &v, 4)
        u = u32
        return u ^ (<uint64_t> 1 << 31) if u >> 31 == 0 else ((<uint64_t> 1 << 32) - 1) - u
    else:
        memcpy(&u, &v, 8)
        return u ^ (<uint64_t> 1 << 63) if u >> 63 == 0 else ~u


cdef inline floating _ranked(uint64_t k, floating v) noexcept nogil:
    """The float of rank `k` (_order's inverse), of `v`'s type."""
    cdef unsigned int u32
    if floating is float:
        u32 = <unsigned int> (k ^ (<uint64_t> 1 << 31) if k >> 31
                              else ((<uint64_t> 1 << 32) - 1) - k)
        memcpy(&v, &u32, 4)
    else:
        k = k ^ (<uint64_t> 1 << 63) if k >> 63 else ~k
        memcpy(&v, &k, 8)
    return v


cdef inline bint _positive(uint64_t k, double centre, double scale, double shift,
                           floating kind) noexcept nogil:
    return _normalised(_ranked(k, kind), centre, scale, shift) > 0


cdef void _relu_window(double centre, double scale, double shift, double* lo, double* hi,
                       floating kind) noexcept nogil:
    """The x (of `kind`'s type) whose ``_normalised(x, centre, scale, shift)``
    is positive: those in [lo, hi] (lo > hi if none). They form an interval
    because _normalised is monotone in x, increasing or decreasing with the
    sign of `scale`; with a zero scale it is the shift wherever x - centre
    is finite, an interval too. One positive x (+inf, -inf or 0.0 by that
    sign) splits it into two monotone halves, whose ends are bisected."""
    cdef uint64_t a, b, m
    cdef floating inf = INFINITY
    cdef floating inside = inf if scale > 0 else -inf if scale < 0 else 0
    cdef uint64_t k = _order(inside)
    if not _positive(k, centre, scale, shift, kind):
        lo[0], hi[0] = INFINITY, -INFINITY
        return
    a, b = _order(-inf), k  # the lowest positive x in [a, b]
    while a < b:
        m = a + (b - a) // 2
        if _positive(m, centre, scale, shift, kind):
            b = m
        else:
            a = m + 1
    lo[0] = _ranked(a, kind)
    a, b = k, _order(inf)  # the highest in [a, b]
    while a < b:
        m = b - (b - a) // 2
        if _positive(m, centre, scale, shift, kind):
            a = m
        else:
            b = m - 1
    hi[0] = _ranked(a, kind)


cdef inline floating _input_grad(floating dout, floating x, double centre, double mean_dy,
                                 double proj, double scale, bint training) noexcept nogil:
    if training:
        return <floating> (((<double> dout - mean_dy) - (<double> x - centre) * proj) * scale)
    return <floating> (<double> dout * scale)


cdef void _elemt_tile(TilePass kind, const floating* dout, const floating* x, floating* out,
                      const Tiling* t, Py_ssize_t k, Py_ssize_t b, bint training, bint relu,
                      const double* mean, const double* coef, double* cells,
                      Py_ssize_t* piece_in_cells) noexcept nogil:
    """The cells of tile (k, b) of an element-wise pass: ``_normalised`` of x
    (ELEMT) or ``_input_grad`` of dout and x (BACKWARD_ELEMT), a ReLU fused
    if `relu`.

    `coef` holds per-channel arrays of C values: the scale, then the shift
    (ELEMT), or mean_dy, proj and the ReLU's _relu_window ends lo and hi
    (BACKWARD_ELEMT). `cells` holds those and the mean spread over the
    cells of a piece.
    """
    cdef Py_ssize_t c0, c1, p0, p1, n, p, c, off, s0, s1, m, a
    cdef Py_ssize_t n0 = b * t.rows, n1 = min(t.N, n0 + t.rows)
    cdef Py_ssize_t arrays = 2 if kind == ELEMT else 5
    cdef const double* scale = coef
    cdef const double* shift = coef + t.C  # (the passes have one or the other)
    cdef const double* mean_dy = coef + t.C
    cdef const double* proj = coef + 2 * t.C
    cdef const double* lo = coef + 3 * t.C
    cdef const double* hi = coef + 4 * t.C
    cdef double* centre_p = cells
    cdef double* scale_p = cells + t.cells
    cdef double* shift_p = cells + 2 * t.cells
    cdef double* mean_dy_p = cells + 2 * t.cells
    cdef double* proj_p = cells + 3 * t.cells
    cdef double* lo_p = cells + 4 * t.cells
    cdef double* hi_p = cells + 5 * t.cells
    _piece(t, k, &c0, &c1, &p0, &p1)
    m = p1 - p0
    if t.L >= WIDE_CELLS:  # channel by channel, its coefficients in registers
        for n in range(n0, n1):
            for c in range(c0, c1):
                s0 = _seg_start(t, c, p0)
                s1 = _seg_end(t, c, p1, p0)
                off = n * t.C * t.L + p0
                if kind == ELEMT:
                    for p in range(off + s0, off + s1):
                        out[p] = _rectified(_normalised(x[p], mean[c], scale[c], shift[c]), relu)
                elif training:
                    for p in range(off + s0, off + s1):
                        out[p] = _input_grad(_through(dout[p], x[p], <floating> lo[c],
                                                      <floating> hi[c], relu), x[p],
                                             mean[c], mean_dy[c], proj[c], scale[c], True)
                else:
                    for p in range(off + s0, off + s1):
                        out[p] = _input_grad(_through(dout[p], x[p], <floating> lo[c],
                                                      <floating> hi[c], relu), x[p],
                                             0, 0, 0, scale[c], False)
        return
    if piece_in_cells[0] != k:  # a thread's tiles run piece by piece
        _spread(t, mean, centre_p, c0, c1, p0, p1)
        for a in range(arrays):
            _spread(t, coef + a * t.C, scale_p + a * t.cells, c0, c1, p0, p1)
        piece_in_cells[0] = k
    for n in range(n0, n1):
        off = n * t.C * t.L + p0
        if kind == ELEMT:
            for p in range(m):
                out[off + p] = _rectified(
                    _normalised(x[off + p], centre_p[p], scale_p[p], shift_p[p]), relu)
        elif training:
            for p in range(m):
                out[off + p] = _input_grad(
                    _through(dout[off + p], x[off + p], <floating> lo_p[p], <floating> hi_p[p],
                             relu),
                    x[off + p], centre_p[p], mean_dy_p[p], proj_p[p], scale_p[p], True)
        else:
            for p in range(m):
                out[off + p] = _input_grad(
                    _through(dout[off + p], x[off + p], <floating> lo_p[p], <floating> hi_p[p],
                             relu),
                    x[off + p], 0, 0, 0, scale_p[p], False)


cdef double* _forward_coefficients(const double[::1] mean, const double[::1] inv_std,
                                   const floating[::1] weight, const floating[::1] bias,
                                   bint relu) except NULL:
    """Per channel, the forward's scale ``weight * inv_std`` and shift
    ``bias``, a third array for the caller, then the ends lo and hi of the
    fused ReLU's _relu_window (without `relu`, the whole line, which the
    passes read but never compare): five arrays of C doubles (free them
    with ``free``)."""
    cdef Py_ssize_t C = inv_std.shape[0], c
    cdef double* coef = _doubles(5 * C)
    for c in range(C):
        coef[c] = <double> weight[c] * inv_std[c]
        coef[C + c] = bias[c]
        coef[3 * C + c], coef[4 * C + c] = -INFINITY, INFINITY
        if relu:
            _relu_window(mean[c], coef[c], coef[C + c], coef + 3 * C + c, coef + 4 * C + c,
                         weight[c])
    return coef


def batch_norm_elemt(
    const floating[:, :, ::1] x,
    const double[::1] mean,
    const double[::1] inv_std,
    const floating[::1] weight,
    const floating[::1] bias,
    bint relu,
    floating[:, :, ::1] out not None,
    int num_threads,
):
    """batch_norm_elemt(x, mean, inv_std, weight, bias, relu, out, num_threads) -> out

    ``out = (x - mean) * (weight * inv_std) + bias`` per channel, computed in
    double; mean and inv_std float64 (C,), weight and bias (C,) of x's dtype.
    With `relu`, ``relu(out)`` instead.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Tiling t = _tiling(N, C, L)
    cdef double* coef = NULL
    if N * C * L == 0:
        return out.base
    try:
        coef = _forward_coefficients(mean, inv_std, weight, bias, False)
        _run_tiles(ELEMT, &t, &x[0, 0, 0], NULL, &out[0, 0, 0], &mean[0], coef, NULL, NULL,
                   False, relu, num_threads)
    finally:
        free(coef)
    return out.base


# ---------------------------------------------------------------------------
# Backward


cdef void _backward_reduce_tile(const floating* dout, const floating* x, const Tiling* t,
                                Py_ssize_t k, Py_ssize_t b, const double* mean,
                                const double* coef, bint relu, double* cells, double* psum,
                                double* psum_xc) noexcept nogil:
    """Tile (k, b)'s partial sums of dout and of ``dout * (x - mean)``; with
    `relu`, of dout zeroed outside the fused ReLU's _relu_window, whose
    ends lo and hi per channel `coef` holds. `cells` holds five arrays of
    a piece's cells."""
    cdef Py_ssize_t c0, c1, p0, p1, m, n, p, c, off, idx
    cdef Py_ssize_t n0 = b * t.rows, n1 = min(t.N, n0 + t.rows)
    cdef Py_ssize_t j = k % t.per_channel
    cdef double g, s, s_xc
    cdef floating lo_c, hi_c
    cdef double* acc = cells
    cdef double* acc_xc = cells + t.cells
    cdef double* centre = cells + 2 * t.cells
    cdef double* lo = cells + 3 * t.cells
    cdef double* hi = cells + 4 * t.cells
    _piece(t, k, &c0, &c1, &p0, &p1)
    m = p1 - p0
    _spread(t, mean, centre, c0, c1, p0, p1)
    if relu:
        _spread(t, coef, lo, c0, c1, p0, p1)
        _spread(t, coef + t.C, hi, c0, c1, p0, p1)
    for p in range(m):
        acc[p] = 0
        acc_xc[p] = 0
    for n in range(n0, n1):
        off = n * t.C * t.L + p0
        if relu and c1 - c0 == 1:  # one channel: its window's ends in registers
            lo_c, hi_c = <floating> lo[0], <floating> hi[0]
            for p in range(m):
                g = _through(dout[off + p], x[off + p], lo_c, hi_c, True)
                acc[p] += g
                acc_xc[p] += g * (<double> x[off + p] - centre[p])
        elif relu:
            for p in range(m):
                g = _through(dout[off + p], x[off + p], <floating> lo[p], <floating> hi[p], True)
                acc[p] += g
                acc_xc[p] += g * (<double> x[off + p] - centre[p])
        else:
            for p in range(m):
                g = dout[off + p]
                acc[p] += g
                acc_xc[p] += g * (<double> x[off + p] - centre[p])
    for c in range(c0, c1):
        s = 0
        s_xc = 0
        for p in range(_seg_start(t, c, p0), _seg_end(t, c, p1, p0)):
            s = s + acc[p]
            s_xc = s_xc + acc_xc[p]
        idx = _partial(t, b, c, j)
        psum[idx] = s
        psum_xc[idx] = s_xc


def batch_norm_backward_reduce(
    const floating[:, :, ::1] dout,
    const floating[:, :, ::1] x,
    const double[::1] mean,
    const double[::1] inv_std,
    const floating[::1] weight,
    const floating[::1] bias,
    bint relu,
    double[::1] sum_dout not None,
    double[::1] sum_dout_xc not None,
    int num_threads,
):
    """batch_norm_backward_reduce(dout, x, mean, inv_std, weight, bias, relu, sum_dout, sum_dout_xc, num_threads) -> (sum_dout, sum_dout_xc)

    Per channel, ``sum(dout)`` and ``sum(dout * (x - mean))`` over N and L,
    into float64 (C,) arrays (dbias, and dweight / inv_std). With `relu`
    (the forward's, see :func:`batch_norm_elemt`), dout is zeroed wherever
    the forward's normalised value was not positive; inv_std, weight and
    bias matter only then.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Tiling t = _tiling(N, C, L)
    cdef Py_ssize_t c
    cdef double* psum = NULL
    cdef double* psum_xc = NULL
    cdef double* coef = NULL
    if N * C * L == 0:
        return sum_dout.base, sum_dout_xc.base
    try:
        psum = _doubles(t.partials)
        psum_xc = _doubles(t.partials)
        coef = _forward_coefficients(mean, inv_std, weight, bias, relu)
        _run_tiles(BACKWARD_REDUCE, &t, &x[0, 0, 0], &dout[0, 0, 0], NULL, &mean[0], coef + 3 * C,
                   psum, psum_xc, False, relu, num_threads)
        with nogil:
            for c in prange(C, schedule="static", num_threads=num_threads):
                sum_dout[c] = _channel_total(&t, psum, c)
                sum_dout_xc[c] = _channel_total(&t, psum_xc, c)
    finally:
        free(psum)
        free(psum_xc)
        free(coef)
    return sum_dout.base, sum_dout_xc.base


def batch_norm_backward_elemt(
    const floating[:, :, ::1] dout,
    const floating[:, :, ::1] x,
    const double[::1] mean,
    const double[::1] inv_std,
    const floating[::1] weight,
    const floating[::1] bias,
    bint relu,
    const double[::1] sum_dout,
    const double[::1] sum_dout_xc,
    bint training,
    floating[:, :, ::1] out not None,
    int num_threads,
):
    """batch_norm_backward_elemt(dout, x, mean, inv_std, weight, bias, relu, sum_dout, sum_dout_xc, training, out, num_threads) -> out

    dx of batch norm, computed in double. In training (batch statistics),
    with M = N*L, ``mean_dy = sum_dout / M``,
    ``proj = sum_dout_xc / M * inv_std * inv_std`` and
    ``scale = inv_std * weight`` per channel:
    ``dx = ((dout - mean_dy) - (x - mean) * proj) * scale``. Otherwise
    (running statistics) ``dx = dout * scale``: x, mean and the sums do not
    matter. With `relu` (the forward's), dout is first zeroed as in
    :func:`batch_norm_backward_reduce`.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Tiling t = _tiling(N, C, L)
    cdef Py_ssize_t c
    cdef double count = N * L
    cdef double* coef = NULL
    if N * C * L == 0:
        return out.base
    try:
        # scale (the forward's), mean_dy, proj, lo, hi
        coef = _forward_coefficients(mean, inv_std, weight, bias, relu)
        for c in range(C):
            coef[C + c] = sum_dout[c] / count
            coef[2 * C + c] = sum_dout_xc[c] / count * inv_std[c] * inv_std[c]
        _run_tiles(BACKWARD_ELEMT, &t, &x[0, 0, 0], &dout[0, 0, 0], &out[0, 0, 0], &mean[0],
                   coef, NULL, NULL, training, relu, num_threads)
    finally:
        free(coef)
    return out.base
