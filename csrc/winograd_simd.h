/* The tile transforms of the Winograd convolution (csrc/winograd.pyx) with
 * AVX-512: a vector of tiles at a time (16 in float32, 8 in float64), one
 * tile to a lane, in registers.
 *
 * The portable code (csrc/winograd.h, called per tile row or plane) runs
 * loops over one tile row's tiles, 8 on a 32-wide plane: short vectors,
 * each 1-D transform a pass through memory, and much address arithmetic.
 * Here the input and dout planes are first split once into column phases
 * (fcnn_winograd_phases512_*, layout below), so that one cell of
 * consecutive tiles (in V's order: along a tile row, then on to the next)
 * is one load; a vector of tiles then loads its cells, transforms its
 * columns and then its rows, and stores each transformed cell with one
 * store. The output transform loads each product with one load, and its
 * interleave into the output rows permutes vectors. Every transform uses
 * the expressions of csrc/winograd.h (FCNN_WINOGRAD_*_1D) in the same
 * order: the same bits as the portable code and the NumPy twin. (Gathering
 * the input cells from a plain padded copy instead was slower: 14 against
 * 12 ns a tile on 32x32 planes, the rest of the kernel alike.)
 *
 * Only x86-64 builds with GCC or Clang have them; fcnn_winograd_wide()
 * tells whether they run (AVX-512 at run time, under the module's cap). */
#ifndef FASTCNN_WINOGRAD_SIMD_H
#define FASTCNN_WINOGRAD_SIMD_H

#include <stddef.h>

#include "simd.h"
#include "winograd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

static int fcnn_winograd_wide(void) { return fcnn_simd_level() == FCNN_SIMD_AVX512; }

/* Loops over a tile's 6 cells unrolled whole: every offset a constant
 * combination of a few strides, every cell in a register. */
#define FCNN_UNROLL _Pragma("GCC unroll 6")

/* The layout the tiles' cells are loaded from, per plane of nt tile rows of
 * tw tiles: padded row y = 4*a + b, column x = 4*q + p is
 * l[(4*b + p)*S + a*tw + q] for q < tw, S = (nt + 1)*tw, and, for the two
 * columns past them (q = tw, p < 2), e[(2*b + p)*A + a], A = nt + 1. Cell
 * (i, j) of tile k = ty*tw + tx then lies at
 * l[(4*(i % 4) + j % 4)*S + (i / 4)*tw + j / 4 + k]: the same cell of
 * consecutive tiles is consecutive, along a tile row and on to the next,
 * except that cells j >= 4 of a row's last tile (tx = tw - 1) are in e, at
 * e[(2*(i % 4) + j % 4)*A + i / 4 + ty]. So a vector of tiles loads a cell
 * with one load, and an expanding load of e's cells into the lanes of last
 * tiles, whose rows ty are consecutive from the first lane's. */
#define FCNN_WINOGRAD_TILES512(T, SFX, L, V, MASK, vmaskz_load, vmask_store, vmask_expand,      \
                               vpermutex2var, lanes)                                            \
/* Rows [row0, row0 + rows) of a plane (rows of W cells; cells outside rows  \
 * [0, hr) and columns [0, wr) count as zero), from column -pw on, into 4      \
 * column phases of tw cells: column 4*q + p - pw of row row0 + y goes to     \
 * l[(4*(y % 4) + p)*S + (y / 4)*tw + q]. The same rows `ahead` cells on (the  \
 * next plane's, which the caller transforms next) are prefetched: a plane    \
 * of 32x32 float32 is a page, where the hardware's prefetchers stop. */      \
__attribute__((target("avx512f"))) static void fcnn_winograd_phases512_##SFX(                  \
    const T *plane, ptrdiff_t W, ptrdiff_t hr, ptrdiff_t wr, ptrdiff_t row0, ptrdiff_t pw,     \
    ptrdiff_t tw, ptrdiff_t rows, T *restrict l, ptrdiff_t S, ptrdiff_t ahead)                 \
{                                                                                              \
    const __m512i even = lanes(0, 2), odd = lanes(1, 2);                                       \
    /* padded columns [c, c + 4L) of each row: input columns from c - pw, split  \
     * into phases as the even and odd lanes of pairs of vectors, then of those */ \
    for (ptrdiff_t c = 0; c < 4 * tw; c += 4 * L) {                                            \
        MASK keep[4], out = (MASK)fcnn_lane_mask(0, tw - c / 4, L);                            \
        FCNN_UNROLL                                                                            \
        for (int k = 0; k < 4; k++)                                                            \
            keep[k] = (MASK)fcnn_lane_mask(pw - c - k * L, wr + pw - c - k * L, L);            \
        for (ptrdiff_t y = 0; y < rows; y++) {                                                 \
            ptrdiff_t in = row0 + y;                                                           \
            const T *src = plane + in * W + c - pw;                                            \
            T *to = l + 4 * (y % 4) * S + (y / 4) * tw + c / 4;                                \
            MASK inside = in >= 0 && in < hr ? (MASK)~0 : 0;                                   \
            if (c == 0 && inside) {                                                            \
                for (ptrdiff_t o = 0; o < wr; o += 64 / (ptrdiff_t)sizeof(T))                  \
                    _mm_prefetch((const char *)(src + pw + ahead + o), _MM_HINT_T0);           \
                _mm_prefetch((const char *)(src + pw + ahead + wr - 1), _MM_HINT_T0);          \
            }                                                                                  \
            V v[4];                                                                            \
            FCNN_UNROLL                                                                        \
            for (int k = 0; k < 4; k++)                                                        \
                v[k] = vmaskz_load(keep[k] & inside, src + k * L);                             \
            V e01 = vpermutex2var(v[0], even, v[1]), o01 = vpermutex2var(v[0], odd, v[1]);     \
            V e23 = vpermutex2var(v[2], even, v[3]), o23 = vpermutex2var(v[2], odd, v[3]);     \
            vmask_store(to, out, vpermutex2var(e01, even, e23));                               \
            vmask_store(to + S, out, vpermutex2var(o01, even, o23));                           \
            vmask_store(to + 2 * S, out, vpermutex2var(e01, odd, e23));                        \
            vmask_store(to + 3 * S, out, vpermutex2var(o01, odd, o23));                        \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
__attribute__((target("avx512f"))) static inline V fcnn_winograd_cell512_##SFX(                \
    const T *l, const T *e, ptrdiff_t S, ptrdiff_t A, ptrdiff_t tw, ptrdiff_t k0,              \
    ptrdiff_t ty, MASK m, MASK last, int i, int j)                                             \
{                                                                                              \
    V v = vmaskz_load(m, l + (4 * (i % 4) + j % 4) * S + (i / 4) * tw + j / 4 + k0);           \
    if (j >= 4)                                                                                \
        v = vmask_expand(v, last, e + (2 * (i % 4) + j % 4) * A + i / 4 + ty);                 \
    return v;                                                                                  \
}                                                                                              \
/* The transformed input tiles of one plane (rows of W cells at `plane`;       \
 * cells outside rows [0, hr) and columns [0, wr) count as zero): tile k of    \
 * the nt*tw tiles has its cell (i, j) at row row0 + 4*(k / tw) + i and        \
 * column 4*(k % tw) + j - pw; its transformed cell t goes to dst[t*ds + k].   \
 * `scratch` holds (nt + 1)*(16*tw + 8) cells (l and e above); the plane     \
 * `ahead` cells on is prefetched. */                                          \
__attribute__((target("avx512f"))) static void fcnn_winograd_input_plane512_##SFX(           \
    const T *plane, ptrdiff_t W, ptrdiff_t hr, ptrdiff_t wr, ptrdiff_t row0,                   \
    ptrdiff_t pw, ptrdiff_t tw, ptrdiff_t nt, T *scratch, T *restrict dst, ptrdiff_t ds,       \
    ptrdiff_t ahead)                                                                           \
{                                                                                              \
    const ptrdiff_t A = nt + 1, S = A * tw, n = nt * tw;                                       \
    T *l = scratch, *e = scratch + 16 * S;                                                     \
    fcnn_winograd_phases512_##SFX(plane, W, hr, wr, row0, pw, tw, 4 * nt + 2, l, S, ahead);     \
    for (ptrdiff_t y = 0; y < 4 * nt + 2; y++) {                                               \
        ptrdiff_t in = row0 + y;                                                               \
        for (ptrdiff_t p = 0; p < 2; p++) {                                                    \
            ptrdiff_t x = 4 * tw + p - pw;                                                     \
            e[(2 * (y % 4) + p) * A + y / 4] =                                                 \
                in >= 0 && in < hr && x >= 0 && x < wr ? plane[in * W + x] : 0;                \
        }                                                                                      \
    }                                                                                          \
    /* lane t: the column tx of tile k0 + t; ty, col: the row and column of lane 0 */         \
    int first_col[16];                                                                         \
    for (int t = 0, col = 0; t < 16; t++, col = col + 1 == tw ? 0 : col + 1)                   \
        first_col[t] = col;                                                                    \
    __m512i tx = _mm512_loadu_si512((const void *)first_col);                                  \
    const __m512i step = _mm512_set1_epi32((int)(L % tw));                                     \
    const __m512i width = _mm512_set1_epi32((int)tw);                                          \
    const __m512i end = _mm512_set1_epi32((int)(tw - 1));                                      \
    ptrdiff_t ty = 0, col = 0;                                                                 \
    for (ptrdiff_t k0 = 0; k0 < n; k0 += L) {                                                  \
        MASK m = (MASK)fcnn_lane_mask(0, n - k0, L);                                           \
        MASK last = m & (MASK)_mm512_cmpeq_epi32_mask(tx, end);                                \
        V cols[6][6]; /* cols[r][j]: column j's transformed cell r */                         \
        FCNN_UNROLL                                                                            \
        for (int j = 0; j < 6; j++) {                                                          \
            V d0 = fcnn_winograd_cell512_##SFX(l, e, S, A, tw, k0, ty, m, last, 0, j);         \
            V d1 = fcnn_winograd_cell512_##SFX(l, e, S, A, tw, k0, ty, m, last, 1, j);         \
            V d2 = fcnn_winograd_cell512_##SFX(l, e, S, A, tw, k0, ty, m, last, 2, j);         \
            V d3 = fcnn_winograd_cell512_##SFX(l, e, S, A, tw, k0, ty, m, last, 3, j);         \
            V d4 = fcnn_winograd_cell512_##SFX(l, e, S, A, tw, k0, ty, m, last, 4, j);         \
            V d5 = fcnn_winograd_cell512_##SFX(l, e, S, A, tw, k0, ty, m, last, 5, j);         \
            FCNN_WINOGRAD_INPUT_1D(T, V, d0, d1, d2, d3, d4, d5, cols[0][j], cols[1][j],       \
                                   cols[2][j], cols[3][j], cols[4][j], cols[5][j]);            \
        }                                                                                      \
        FCNN_UNROLL                                                                            \
        for (int r = 0; r < 6; r++) {                                                          \
            V y[6];                                                                            \
            FCNN_WINOGRAD_INPUT_1D(T, V, cols[r][0], cols[r][1], cols[r][2], cols[r][3],       \
                                   cols[r][4], cols[r][5], y[0], y[1], y[2], y[3], y[4],       \
                                   y[5]);                                                      \
            FCNN_UNROLL                                                                        \
            for (int s = 0; s < 6; s++)                                                        \
                vmask_store(dst + (6 * r + s) * ds + k0, m, y[s]);                             \
        }                                                                                      \
        tx = _mm512_add_epi32(tx, step);                                                       \
        tx = _mm512_mask_sub_epi32(tx, _mm512_cmpge_epi32_mask(tx, width), tx, width);         \
        col += L % tw;                                                                         \
        ty += L / tw + (col >= tw);                                                            \
        col -= col >= tw ? tw : 0;                                                             \
    }                                                                                          \
}                                                                                              \
/* The transformed dout tiles of one plane (oh rows of ow cells; cells past \
 * them count as zero): tile k of the nt*tw tiles has its cell (i, j) at row  \
 * row0 + 4*(k / tw) + i, column 4*(k % tw) + j; its transformed cell t goes  \
 * to dst[t*ds + k]. `scratch` holds 16*nt*tw cells; the plane `ahead` cells \
 * on is prefetched. Columns first, then rows, as the portable code. */      \
__attribute__((target("avx512f"))) static void fcnn_winograd_dout_plane512_##SFX(            \
    const T *plane, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t row0, ptrdiff_t tw, ptrdiff_t nt,    \
    T *scratch, T *restrict dst, ptrdiff_t ds, ptrdiff_t ahead)                                \
{                                                                                              \
    const ptrdiff_t n = nt * tw;                                                               \
    /* cell (i, j) of tile k at scratch[(4*i + j)*n + k] */                                    \
    fcnn_winograd_phases512_##SFX(plane, ow, oh, ow, row0, 0, tw, 4 * nt, scratch, n, ahead);  \
    for (ptrdiff_t k0 = 0; k0 < n; k0 += L) {                                                  \
        MASK m = (MASK)fcnn_lane_mask(0, n - k0, L);                                           \
        V cols[6][4]; /* cols[r][j]: column j's transformed cell r */                         \
        FCNN_UNROLL                                                                            \
        for (int j = 0; j < 4; j++) {                                                          \
            const T *at = scratch + j * n + k0;                                                \
            V g0 = vmaskz_load(m, at), g1 = vmaskz_load(m, at + 4 * n);                        \
            V g2 = vmaskz_load(m, at + 8 * n), g3 = vmaskz_load(m, at + 12 * n);               \
            FCNN_WINOGRAD_DOUT_1D(T, V, g0, g1, g2, g3, cols[0][j], cols[1][j], cols[2][j],    \
                                  cols[3][j], cols[4][j], cols[5][j]);                         \
        }                                                                                      \
        FCNN_UNROLL                                                                            \
        for (int r = 0; r < 6; r++) {                                                          \
            V y[6];                                                                            \
            FCNN_WINOGRAD_DOUT_1D(T, V, cols[r][0], cols[r][1], cols[r][2], cols[r][3], y[0],  \
                                  y[1], y[2], y[3], y[4], y[5]);                               \
            FCNN_UNROLL                                                                        \
            for (int s = 0; s < 6; s++)                                                        \
                vmask_store(dst + (6 * r + s) * ds + k0, m, y[s]);                             \
        }                                                                                      \
    }                                                                                          \
}

/* The output tiles of one plane from its products: product t of tile k is
 * src[t*ss + k] (n tiles); the tile's output cell (i, j) goes to
 * dst[(4*i + j)*n + k]. Rows first, then columns, as the portable code.
 * Returns whether one of the outputs is not finite. */
#define FCNN_WINOGRAD_OUTPUT512(T, SFX, L, V, MASK, vmaskz_load, vmask_store, vcmp_mask,        \
                                vpermutex2var, vblend, vset1, index)                           \
__attribute__((target("avx512f"))) static int fcnn_winograd_output_plane512_##SFX(            \
    const T *src, ptrdiff_t ss, ptrdiff_t n, T *restrict dst)                                  \
{                                                                                              \
    MASK bad = 0;                                                                              \
    for (ptrdiff_t k0 = 0; k0 < n; k0 += L) {                                                  \
        MASK m = (MASK)fcnn_lane_mask(0, n - k0, L);                                           \
        V rows[6][4]; /* rows[r][j]: row r's output cell j */                                  \
        FCNN_UNROLL                                                                            \
        for (int r = 0; r < 6; r++) {                                                          \
            const T *at = src + 6 * r * ss + k0;                                               \
            V m0 = vmaskz_load(m, at), m1 = vmaskz_load(m, at + ss);                           \
            V m2 = vmaskz_load(m, at + 2 * ss), m3 = vmaskz_load(m, at + 3 * ss);              \
            V m4 = vmaskz_load(m, at + 4 * ss), m5 = vmaskz_load(m, at + 5 * ss);              \
            FCNN_WINOGRAD_OUTPUT_1D(T, V, m0, m1, m2, m3, m4, m5, rows[r][0], rows[r][1],      \
                                    rows[r][2], rows[r][3], 1);                                \
        }                                                                                      \
        FCNN_UNROLL                                                                            \
        for (int j = 0; j < 4; j++) {                                                          \
            V y[4];                                                                            \
            FCNN_WINOGRAD_OUTPUT_1D(T, V, rows[0][j], rows[1][j], rows[2][j], rows[3][j],      \
                                    rows[4][j], rows[5][j], y[0], y[1], y[2], y[3], 1);        \
            FCNN_UNROLL                                                                        \
            for (int i = 0; i < 4; i++) {                                                      \
                V d = y[i] - y[i]; /* 0 where y is finite, NaN where not */                    \
                vmask_store(dst + (4 * i + j) * n + k0, m, y[i]);                              \
                bad |= vcmp_mask(m, d, d, _CMP_UNORD_Q);                                       \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    return bad != 0;                                                                           \
}                                                                                              \
/* Cells 4*q + j of n groups of 4 <- phase j: dst[4*q + j] = src[j*ss + q]      \
 * (plus *bias, if not NULL), as fcnn_interleave4_* (csrc/winograd.h). Each of   \
 * 4 vectors of dst takes its even phases' lanes from a permutation of two       \
 * loaded phases, its odd ones from that of the other two. */                     \
__attribute__((target("avx512f"))) static void fcnn_interleave4_512_##SFX(                     \
    const T *src, ptrdiff_t ss, T *restrict dst, ptrdiff_t n, const T *bias)                   \
{                                                                                              \
    const __m512i idx[4] = {index(0), index(1), index(2), index(3)};                         \
    const V b = bias ? vset1(*bias) : vset1(0);                                                \
    for (ptrdiff_t q0 = 0; q0 < n; q0 += L) {                                                  \
        MASK m = (MASK)fcnn_lane_mask(0, n - q0, L);                                           \
        V s0 = vmaskz_load(m, src + q0), s1 = vmaskz_load(m, src + ss + q0);                   \
        V s2 = vmaskz_load(m, src + 2 * ss + q0), s3 = vmaskz_load(m, src + 3 * ss + q0);      \
        FCNN_UNROLL                                                                            \
        for (int v = 0; v < 4; v++) {                                                          \
            V w = vblend((MASK)0xCCCC, vpermutex2var(s0, idx[v], s1),                          \
                         vpermutex2var(s2, idx[v], s3));                                       \
            if (bias)                                                                          \
                w = w + b;                                                                     \
            vmask_store(dst + 4 * q0 + v * L, (MASK)fcnn_lane_mask(0, 4 * (n - q0) - v * L, L), \
                        w);                                                                    \
        }                                                                                      \
    }                                                                                          \
}

/* The lanes vector v of an interleave takes: lane t is cell (L/4)*v + t/4 of
 * phase t % 4, from the first (even phases) or the second (odd phases) of a
 * pair of vectors (constants once v is). */
#define FCNN_IL(L, v, t) (((t) % 2 ? (L) : 0) + (L) / 4 * (v) + (t) / 4)
__attribute__((target("avx512f"))) static inline __m512i fcnn_interleave_index_f32(int v)
{
    return _mm512_setr_epi32(FCNN_IL(16, v, 0), FCNN_IL(16, v, 1), FCNN_IL(16, v, 2),
                             FCNN_IL(16, v, 3), FCNN_IL(16, v, 4), FCNN_IL(16, v, 5),
                             FCNN_IL(16, v, 6), FCNN_IL(16, v, 7), FCNN_IL(16, v, 8),
                             FCNN_IL(16, v, 9), FCNN_IL(16, v, 10), FCNN_IL(16, v, 11),
                             FCNN_IL(16, v, 12), FCNN_IL(16, v, 13), FCNN_IL(16, v, 14),
                             FCNN_IL(16, v, 15));
}
__attribute__((target("avx512f"))) static inline __m512i fcnn_interleave_index_f64(int v)
{
    return _mm512_setr_epi64(FCNN_IL(8, v, 0), FCNN_IL(8, v, 1), FCNN_IL(8, v, 2),
                             FCNN_IL(8, v, 3), FCNN_IL(8, v, 4), FCNN_IL(8, v, 5),
                             FCNN_IL(8, v, 6), FCNN_IL(8, v, 7));
}
#undef FCNN_IL

FCNN_WINOGRAD_OUTPUT512(float, f32, 16, __m512, __mmask16, _mm512_maskz_loadu_ps,
                        _mm512_mask_storeu_ps, _mm512_mask_cmp_ps_mask, _mm512_permutex2var_ps,
                        _mm512_mask_blend_ps, _mm512_set1_ps, fcnn_interleave_index_f32)
FCNN_WINOGRAD_OUTPUT512(double, f64, 8, __m512d, __mmask8, _mm512_maskz_loadu_pd,
                        _mm512_mask_storeu_pd, _mm512_mask_cmp_pd_mask, _mm512_permutex2var_pd,
                        _mm512_mask_blend_pd, _mm512_set1_pd, fcnn_interleave_index_f64)
#undef FCNN_WINOGRAD_OUTPUT512
FCNN_WINOGRAD_TILES512(float, f32, 16, __m512, __mmask16, _mm512_maskz_loadu_ps,
                       _mm512_mask_storeu_ps, _mm512_mask_expandloadu_ps, _mm512_permutex2var_ps,
                       fcnn_lanes16)
FCNN_WINOGRAD_TILES512(double, f64, 8, __m512d, __mmask8, _mm512_maskz_loadu_pd,
                       _mm512_mask_storeu_pd, _mm512_mask_expandloadu_pd, _mm512_permutex2var_pd,
                       fcnn_lanes8x64)
#undef FCNN_WINOGRAD_TILES512
#undef FCNN_UNROLL

#else

static int fcnn_winograd_wide(void) { return 0; }
#define FCNN_WINOGRAD_NONE(T, SFX)                                                    \
static void fcnn_winograd_input_plane512_##SFX(                                             \
    const T *plane, ptrdiff_t W, ptrdiff_t hr, ptrdiff_t wr, ptrdiff_t row0,                \
    ptrdiff_t pw, ptrdiff_t tw, ptrdiff_t nt, T *scratch, T *dst, ptrdiff_t ds,               \
    ptrdiff_t ahead) {}                                                                     \
static void fcnn_winograd_dout_plane512_##SFX(                                               \
    const T *plane, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t row0, ptrdiff_t tw, ptrdiff_t nt,    \
    T *scratch, T *dst, ptrdiff_t ds, ptrdiff_t ahead) {}                                      \
static int fcnn_winograd_output_plane512_##SFX(const T *src, ptrdiff_t ss, ptrdiff_t n,     \
                                               T *dst) { return 0; }                           \
static void fcnn_interleave4_512_##SFX(const T *src, ptrdiff_t ss, T *dst, ptrdiff_t n,        \
                                       const T *bias) {}
FCNN_WINOGRAD_NONE(float, f32)
FCNN_WINOGRAD_NONE(double, f64)
#undef FCNN_WINOGRAD_NONE

#endif
#endif
