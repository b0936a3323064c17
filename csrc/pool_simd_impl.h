/* The kernels of pool_simd.h for one element type and instruction set:
 * included once per pair with T, SFX (name suffix), FCNN_TARGET, the vector
 * type VT of VL lanes, the index vector type IV (int32 lanes for float,
 * int64 for double), the lane mask type MT and the V_*, I_*, M_* and IDX_*
 * operations defined (see pool_simd.h). */

#define FCNN(name) FCNN_CAT(name, SFX)

/* Prefetch `rows` rows of the planes of W columns at `x` from row `ih` on,
 * for reading or writing. The kernels prefetch FCNN_AHEAD bytes ahead of
 * their reads and writes: the hardware prefetchers alone leave a core
 * waiting on memory between bursts of computation. Rows past the plane
 * belong to the thread's next plane, or to none: a prefetch never faults,
 * and its address is formed as an integer. */
#define FCNN_PREFETCH_ROWS(x, W, ih, rows)                                      \
    do {                                                                        \
        uintptr_t p_ = (uintptr_t)(x) + (uintptr_t)((ih) * (W)) * sizeof(T);    \
        uintptr_t end_ = p_ + (uintptr_t)((rows) * (W)) * sizeof(T);            \
        for (p_ &= ~(uintptr_t)63; p_ < end_; p_ += 64)                         \
            _mm_prefetch((const char *)p_, _MM_HINT_T0);                        \
    } while (0)

/* Rows of W cells in FCNN_AHEAD bytes, at least 1. */
static inline ptrdiff_t FCNN(fcnn_rows_ahead)(ptrdiff_t W)
{
    ptrdiff_t rows = FCNN_AHEAD / (W * (ptrdiff_t)sizeof(T));
    return rows > 1 ? rows : 1;
}

/* Mask of the lanes l < n (natural order). */
FCNN_TARGET static inline MT FCNN(fcnn_first_lanes)(ptrdiff_t n)
{
    return I_GT(I_SET1(n), I_LANES);
}

/* Mask of the lanes l with 0 <= c + l < W. */
FCNN_TARGET static inline MT FCNN(fcnn_inside)(ptrdiff_t c, ptrdiff_t W)
{
    return M_ANDNOT(I_GT(I_SET1(-c), I_LANES), I_GT(I_SET1(W - c), I_LANES));
}

/* A block of VL consecutive outputs of an output row: the first input column
 * of its windows, and which of the columns its loads touch lie inside the
 * input. A block reads every other column from c over 2 * VL + 2 columns
 * (the de-interleaving loads at c, c + VL, c + 2, c + 2 + VL); blocks at
 * the edges read the cells outside as padding, through masked loads, which
 * never touch masked-off cells. */
typedef struct {
    ptrdiff_t c;
    int edge;
    MT cols[4];
} FCNN(fcnn_block);

FCNN_TARGET static inline FCNN(fcnn_block) FCNN(fcnn_make_block)(ptrdiff_t k0, ptrdiff_t pw,
                                                                   ptrdiff_t W, const int k)
{
    FCNN(fcnn_block) b;
    b.c = 2 * k0 - pw;
    b.edge = b.c < 0 || b.c + 2 * VL + (k == 3 ? 2 : 0) > W;
    if (b.edge)
        for (int i = 0; i < 4; i++)
            b.cols[i] = FCNN(fcnn_inside)(b.c + (i & 1) * VL + (i & 2), W);
    return b;
}

/* The taps of block `b` in input row `ih` (any row: one outside the input
 * reads as padding), de-interleaved in lane order sigma: E holds the cells
 * at c + 2l (tap 0 of output l), O those at c + 2l + 1 (tap 1) and, for
 * k = 3, E1 those at c + 2l + 2 (tap 2). */
FCNN_TARGET static inline void FCNN(fcnn_row_taps)(
    const T *x, ptrdiff_t H, ptrdiff_t W, ptrdiff_t ih, const FCNN(fcnn_block) *b, T pad,
    VT *E, VT *O, VT *E1, const int k)
{
    int inside = ih >= 0 && ih < H;
    const T *p = x + (inside ? ih : 0) * W + b->c;
    if (inside && !b->edge) {
        VT lo = V_LOAD(p), hi = V_LOAD(p + VL);
        *E = V_EVENS(lo, hi);
        *O = V_ODDS(lo, hi);
        if (k == 3)
            *E1 = V_EVENS(V_LOAD(p + 2), V_LOAD(p + 2 + VL));
        return;
    }
    VT fill = V_SET1(pad);
    MT none = FCNN(fcnn_inside)(0, 0);
    VT lo = V_MASKLOAD(p, inside ? b->cols[0] : none, fill);
    VT hi = V_MASKLOAD(p + VL, inside ? b->cols[1] : none, fill);
    *E = V_EVENS(lo, hi);
    *O = V_ODDS(lo, hi);
    if (k == 3)
        *E1 = V_EVENS(V_MASKLOAD(p + 2, inside ? b->cols[2] : none, fill),
                      V_MASKLOAD(p + 2 + VL, inside ? b->cols[3] : none, fill));
}

/* The generic kernel's step ``if v > best or v != v: best, pos = v, p``. */
#define FCNN_MERGE(best, pos, v, p)                                             \
    do {                                                                        \
        MT take_ = V_TAKE(v, best);                                             \
        best = V_BLEND(best, v, take_);                                         \
        pos = I_BLEND(pos, p, take_);                                           \
    } while (0)

/* The scan of one window row, and with it the whole window, is split in
 * segments: the scan is associative over consecutive segments (a later
 * segment's result wins iff it is greater or NaN), so each window row is
 * scanned on its own and the rows are merged in order. Lanes carry the flat
 * index minus their first tap's column. A segment starts at its first tap
 * with the index of its first real cell: for a window that is the generic
 * kernel's start (-inf at that index, then the first tap), and a segment
 * made only of padding, -inf, never wins a merge. */
typedef struct {
    VT best;
    IV pos;
} FCNN(fcnn_scan);

FCNN_TARGET static inline FCNN(fcnn_scan) FCNN(fcnn_scan_row)(
    const T *x, ptrdiff_t H, ptrdiff_t W, ptrdiff_t ih, const FCNN(fcnn_block) *b, IV first_col,
    const int k)
{
    VT E, O, E1;
    FCNN(fcnn_row_taps)(x, H, W, ih, b, -INFINITY, &E, &O, &E1, k);
    /* the first real row of a window is the row itself or, for the top
       padding, row 0 */
    ptrdiff_t base = (ih > 0 ? ih : 0) * W;
    FCNN(fcnn_scan) s = {E, I_ADD(I_SET1(base), first_col)};
    FCNN_MERGE(s.best, s.pos, O, I_SET1(base + 1));
    if (k == 3)
        FCNN_MERGE(s.best, s.pos, E1, I_SET1(base + 2));
    return s;
}

FCNN_TARGET static inline void FCNN(fcnn_max_rows)(
    const T *x, ptrdiff_t H, ptrdiff_t W, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow,
    T *out, int64_t *idx, const int k)
{
    /* With k = 3 the last row of one window row is the first of the next;
       its scans are kept for a chunk of blocks at a time, so that the input
       is still read row by row. */
    ptrdiff_t ahead = FCNN(fcnn_rows_ahead)(W);
    for (ptrdiff_t c0 = 0; c0 < ow; c0 += FCNN_CHUNK * VL) {
        ptrdiff_t n = ow - c0 < FCNN_CHUNK * VL ? (ow - c0 + VL - 1) / VL : FCNN_CHUNK;
        FCNN(fcnn_block) blocks[FCNN_CHUNK];
        /* per block: real column of each lane's first tap (-1 in the left
           padding), and the offset from it to the first real column */
        IV col[FCNN_CHUNK], first_col[FCNN_CHUNK];
        FCNN(fcnn_scan) shared[FCNN_CHUNK];
        for (ptrdiff_t j = 0; j < n; j++) {
            blocks[j] = FCNN(fcnn_make_block)(c0 + j * VL, pw, W, k);
            col[j] = I_ADD(I_SET1(blocks[j].c), I_SIGMA2);
            first_col[j] = I_MAX0(I_SUB(I_SET1(0), col[j]));
        }
        for (ptrdiff_t oy = 0; oy < oh; oy++) {
            ptrdiff_t ih0 = 2 * oy - ph;
            if (c0 == 0)
                FCNN_PREFETCH_ROWS(x, W, ih0 + k + ahead, 2);
            for (ptrdiff_t j = 0; j < n; j++) {
                ptrdiff_t k0 = c0 + j * VL;
                FCNN(fcnn_scan) w = k == 3 && oy > 0
                    ? shared[j] : FCNN(fcnn_scan_row)(x, H, W, ih0, &blocks[j], first_col[j], k);
                for (int i = 1; i < k; i++) {
                    FCNN(fcnn_scan) r =
                        FCNN(fcnn_scan_row)(x, H, W, ih0 + i, &blocks[j], first_col[j], k);
                    FCNN_MERGE(w.best, w.pos, r.best, r.pos);
                    shared[j] = r;
                }
                VT value = V_UNSCRAMBLE(w.best);
                IV index = I_UNSCRAMBLE(I_ADD(w.pos, col[j]));
                T *o = out + oy * ow + k0;
                int64_t *ix = idx + oy * ow + k0;
                if (ow - k0 >= VL) {
                    V_STORE(o, value);
                    IDX_STORE(ix, index);
                } else {
                    V_STORE_FIRST(o, ow - k0, value);
                    IDX_STORE_FIRST(ix, ow - k0, index);
                }
            }
        }
    }
}

/* Max pooling of one H x W plane, k x k windows, stride 2: values and int64
 * flat indices, as csrc/pool.pyx's generic kernel. */
FCNN_TARGET static void FCNN(fcnn_max_pool_plane)(
    const T *x, T *out, int64_t *idx, ptrdiff_t H, ptrdiff_t W, ptrdiff_t k, ptrdiff_t ph,
    ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow)
{
    if (k == 2)
        FCNN(fcnn_max_rows)(x, H, W, ph, pw, oh, ow, out, idx, 2);
    else
        FCNN(fcnn_max_rows)(x, H, W, ph, pw, oh, ow, out, idx, 3);
}

FCNN_TARGET static inline void FCNN(fcnn_avg_rows)(
    const T *x, ptrdiff_t H, ptrdiff_t W, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow,
    const T *div, T *out, const int k)
{
    ptrdiff_t ahead = FCNN(fcnn_rows_ahead)(W);
    for (ptrdiff_t c0 = 0; c0 < ow; c0 += FCNN_CHUNK * VL) {
        ptrdiff_t n = ow - c0 < FCNN_CHUNK * VL ? (ow - c0 + VL - 1) / VL : FCNN_CHUNK;
        FCNN(fcnn_block) blocks[FCNN_CHUNK];
        for (ptrdiff_t j = 0; j < n; j++)
            blocks[j] = FCNN(fcnn_make_block)(c0 + j * VL, pw, W, k);
        for (ptrdiff_t oy = 0; oy < oh; oy++) {
            if (c0 == 0)
                FCNN_PREFETCH_ROWS(x, W, 2 * oy - ph + k + ahead, 2);
            for (ptrdiff_t j = 0; j < n; j++) {
                ptrdiff_t k0 = c0 + j * VL;
                VT acc = V_ZERO();
                for (int i = 0; i < k; i++) {
                    VT E, O, E1;
                    FCNN(fcnn_row_taps)(x, H, W, 2 * oy - ph + i, &blocks[j], 0, &E, &O, &E1, k);
                    acc = V_ADD(acc, E);
                    acc = V_ADD(acc, O);
                    if (k == 3)
                        acc = V_ADD(acc, E1);
                }
                acc = V_DIV(V_UNSCRAMBLE(acc), V_LOAD(div + oy * ow + k0));
                if (ow - k0 >= VL)
                    V_STORE(out + oy * ow + k0, acc);
                else
                    V_STORE_FIRST(out + oy * ow + k0, ow - k0, acc);
            }
        }
    }
}

/* Average pooling of one H x W plane, k x k windows, stride 2: the window
 * sum in row-major order from +0.0, divided by `div` (oh x ow divisors,
 * followed by at least VL - 1 readable cells). */
FCNN_TARGET static void FCNN(fcnn_avg_pool_plane)(
    const T *x, T *out, const T *div, ptrdiff_t H, ptrdiff_t W, ptrdiff_t k, ptrdiff_t ph,
    ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow)
{
    if (k == 2)
        FCNN(fcnn_avg_rows)(x, H, W, ph, pw, oh, ow, div, out, 2);
    else
        FCNN(fcnn_avg_rows)(x, H, W, ph, pw, oh, ow, div, out, 3);
}

/* Store the VL pixels of v at dx[iw0 ..), those before column W. */
FCNN_TARGET static inline void FCNN(fcnn_store_pixels)(T *dx, ptrdiff_t iw0, ptrdiff_t W, VT v)
{
    if (W - iw0 >= VL)
        V_STORE(dx + iw0, v);
    else if (W > iw0)
        V_STORE_FIRST(dx + iw0, W - iw0, v);
}

FCNN_TARGET static inline void FCNN(fcnn_avg_backward_rows)(
    const T *dout, const T *div, T *g, ptrdiff_t wg, ptrdiff_t H, ptrdiff_t W, ptrdiff_t ph,
    ptrdiff_t oh, ptrdiff_t ow, T *dx, const int k, const int pw)
{
    /* Input pixel 2m + r (r = 0, 1) is covered by the windows m + first[r]
       .. m + last[r] of a window row: those ox with 2ox - pw <= 2m + r <=
       2ox - pw + k - 1. Pairing pixels from column 0 keeps the stores
       aligned with the rows. */
    const int first[2] = {(pw - k + 4) / 2 - 1, (pw - k + 5) / 2 - 1};  /* ceil((r + pw - k + 1) / 2) */
    const int last[2] = {pw / 2, (pw + 1) / 2};
    ptrdiff_t pairs = (W + 1) / 2, computed = 0, ahead = FCNN(fcnn_rows_ahead)(W);
    for (ptrdiff_t ih = 0; ih < H; ih++) {
        /* the output rows whose windows cover input row ih */
        ptrdiff_t lo = ih + ph - k + 1 > 0 ? (ih + ph - k + 2) / 2 : 0;
        ptrdiff_t hi = (ih + ph) / 2 < oh - 1 ? (ih + ph) / 2 : oh - 1;
        /* shares of the windows of row hi, and one row ahead, so that they
           are stored well before they are loaded; missing windows get +0.0
           (dout 0 over divisor padding 1) */
        for (ptrdiff_t end = hi + 2 < oh ? hi + 2 : oh; computed < end; computed++) {
            T *share = g + computed * wg + 1;
            const T *d = dout + computed * ow, *v = div + computed * ow;
            for (ptrdiff_t ox = 0; ox < ow; ox += VL) {
                VT num = ow - ox >= VL ? V_LOAD(d + ox)
                                       : V_MASKLOAD(d + ox, FCNN(fcnn_first_lanes)(ow - ox), V_ZERO());
                V_STORE(share + ox, V_DIV(num, V_LOAD(v + ox)));
            }
        }
        T *row = dx + ih * W;
        FCNN_PREFETCH_ROWS(dx, W, ih + ahead, 1);
        for (ptrdiff_t m0 = 0; m0 < pairs; m0 += VL) {
            VT even = V_ZERO(), odd = V_ZERO();
            for (ptrdiff_t oy = lo; oy <= hi; oy++) {
                const T *share = g + oy * wg + 1 + m0;
                for (int t = first[0]; t <= last[0]; t++)
                    even = V_ADD(even, V_LOAD(share + t));
                for (int t = first[1]; t <= last[1]; t++)
                    odd = V_ADD(odd, V_LOAD(share + t));
            }
            FCNN(fcnn_store_pixels)(row, 2 * m0, W, V_ZIPLO(even, odd));
            FCNN(fcnn_store_pixels)(row, 2 * m0 + VL, W, V_ZIPHI(even, odd));
        }
    }
}

/* Gradient of average pooling for one plane, k x k windows, stride 2: each
 * input pixel sums ``dout / div`` of the windows covering it, in row-major
 * window order from +0.0 (`div` as for the forward). `g` is this thread's
 * scratch of oh x wg cells (wg = fcnn_pool_bwd_width), filled with +0.0
 * before its first plane; its rows get the shares, between +0.0 borders
 * (windows that do not exist add +0.0). */
FCNN_TARGET static void FCNN(fcnn_avg_pool_backward_plane)(
    const T *dout, T *dx, const T *div, ptrdiff_t H, ptrdiff_t W, ptrdiff_t k, ptrdiff_t ph,
    ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow, T *g, ptrdiff_t wg)
{
    if (k == 2 && pw == 0)
        FCNN(fcnn_avg_backward_rows)(dout, div, g, wg, H, W, ph, oh, ow, dx, 2, 0);
    else if (k == 2)
        FCNN(fcnn_avg_backward_rows)(dout, div, g, wg, H, W, ph, oh, ow, dx, 2, 1);
    else if (pw == 0)
        FCNN(fcnn_avg_backward_rows)(dout, div, g, wg, H, W, ph, oh, ow, dx, 3, 0);
    else
        FCNN(fcnn_avg_backward_rows)(dout, div, g, wg, H, W, ph, oh, ow, dx, 3, 1);
}

/* Gradient of max pooling for one plane whose indices tile it: the index of
 * output (oy, ox) lies in the 2x2 cells (2oy, 2ox) .. (2oy + 1, 2ox + 1),
 * as max pooling with 2x2 windows and stride 2 produces (2 * oh <= H and
 * 2 * ow <= W). Each cell then receives at most one gradient: every cell is
 * written once, with ``+0.0 + dout`` (the generic kernel adds to +0.0) or
 * +0.0, and nothing is zeroed first. Returns 0 if some index lies outside
 * its tile; dx is then wrong, and the caller falls back to the generic
 * kernel for the plane. */
FCNN_TARGET static int FCNN(fcnn_max_pool_backward_tiles)(
    const T *dout, const int64_t *idx, T *dx, ptrdiff_t H, ptrdiff_t W, ptrdiff_t oh,
    ptrdiff_t ow)
{
    ptrdiff_t ahead = FCNN(fcnn_rows_ahead)(W);
    IV twice = I_ADD(I_LANES, I_LANES);
    MT strays = FCNN(fcnn_inside)(0, 0);
    for (ptrdiff_t oy = 0; oy < oh; oy++) {
        T *top = dx + 2 * oy * W, *bottom = top + W;
        FCNN_PREFETCH_ROWS(dx, W, 2 * oy + ahead, 2);
        for (ptrdiff_t k0 = 0; k0 < ow; k0 += VL) {
            const T *g = dout + oy * ow + k0;
            const int64_t *at = idx + oy * ow + k0;
            VT share;
            IV cell;
            MT real = FCNN(fcnn_first_lanes)(ow - k0);
            if (ow - k0 >= VL) {
                share = V_LOAD(g);
                cell = IDX_LOAD(at);
            } else {  /* missing windows: +0.0 everywhere, never stray */
                share = V_MASKLOAD(g, real, V_ZERO());
                cell = IDX_MASKLOAD(at, real);
            }
            share = V_ADD(share, V_ZERO());
            /* offset of the index from the tile's top left cell */
            IV d = I_SUB(cell, I_ADD(I_SET1(2 * oy * W + 2 * k0), twice));
            MT tl = I_EQ(d, I_SET1(0)), tr = I_EQ(d, I_SET1(1));
            MT bl = I_EQ(d, I_SET1(W)), br = I_EQ(d, I_SET1(W + 1));
            strays = M_OR(strays, M_ANDNOT(M_OR(M_OR(tl, tr), M_OR(bl, br)), real));
            VT l = V_MASKZ(tl, share), r = V_MASKZ(tr, share);
            FCNN(fcnn_store_pixels)(top, 2 * k0, W, V_ZIPLO(l, r));
            FCNN(fcnn_store_pixels)(top, 2 * k0 + VL, W, V_ZIPHI(l, r));
            l = V_MASKZ(bl, share);
            r = V_MASKZ(br, share);
            FCNN(fcnn_store_pixels)(bottom, 2 * k0, W, V_ZIPLO(l, r));
            FCNN(fcnn_store_pixels)(bottom, 2 * k0 + VL, W, V_ZIPHI(l, r));
        }
        if (W > 2 * ow) {  /* columns right of the last tile */
            memset(top + 2 * ow, 0, (size_t)(W - 2 * ow) * sizeof(T));
            memset(bottom + 2 * ow, 0, (size_t)(W - 2 * ow) * sizeof(T));
        }
    }
    /* rows under the last tiles */
    memset(dx + 2 * oh * W, 0, (size_t)((H - 2 * oh) * W) * sizeof(T));
    return !M_ANY(strays);
}

#undef FCNN_MERGE
#undef FCNN_PREFETCH_ROWS
#undef FCNN
