/* Max pooling with 2x2 windows and stride 2 that lie inside the plane, for
 * csrc/pool.pyx's planes with short output rows (SHORT_ROW): there the SIMD
 * kernels (pool_simd.h) fill a fraction of a vector per row, and the
 * generic kernel spends more on each window's bounds than on its four
 * cells. Both kernels take a run of consecutive planes, so that nothing is
 * paid per plane.
 *
 * fcnn_max_pool_quads_*: values and flat indices, PyTorch's scan (a cell
 * wins if it is greater or NaN, in row-major order). Starting from the
 * first cell is the generic kernel's start, -inf at that cell's index,
 * followed by that cell. With SSE2, four float32 or two float64 windows at
 * a time, taken in output order across rows and planes.
 *
 * fcnn_max_pool_backward_quads_*: the gradient from indices that tile the
 * planes: the planes zeroed in one go, then each output's ``+0.0 + dout``
 * stored at its index (each cell gets at most one: the tiles are
 * disjoint), which is the generic kernel's zeroing and scatter. Returns 0
 * if some index lies outside its tile (the caller then scatters the
 * planes); such an index is never used as an address, so any values, even
 * ones another thread changes meanwhile, are safe.
 *
 * Written with selects (select.h), not branches: random data mispredict a
 * branch per cell, which made the plain C forward 3x slower than the SIMD
 * kernels' partial vectors. */
#ifndef FASTCNN_POOL_QUADS_H
#define FASTCNN_POOL_QUADS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "select.h"

/* The taps of a window after its first, from the window's top left cell. */
#define FCNN_QUAD_TAPS(W) {1, (W), (W) + 1}

/* One window: the top left cell at x[at], flat index rel in its plane. */
#define FCNN_QUAD(sfx, T)                                                                    \
    static inline void fcnn_quad_##sfx(const T *x, ptrdiff_t at, ptrdiff_t rel, ptrdiff_t W, \
                                       T *out, int64_t *idx)                                 \
    {                                                                                        \
        const ptrdiff_t tap[3] = FCNN_QUAD_TAPS(W);                                          \
        T best = x[at];                                                                      \
        int64_t pos = rel;                                                                   \
        for (int t = 0; t < 3; t++) {                                                        \
            T v = x[at + tap[t]];                                                            \
            int take = (v > best) | (v != v);                                                \
            best = fcnn_select_##sfx(take, best, v);                                         \
            pos = take ? rel + tap[t] : pos;                                                 \
        }                                                                                    \
        *out = best;                                                                         \
        *idx = pos;                                                                          \
    }
FCNN_QUAD(f32, float)
FCNN_QUAD(f64, double)
#undef FCNN_QUAD

#if defined(__SSE2__) || defined(_M_X64)

#include <emmintrin.h>

#define FCNN_QUAD_LANES_F32 4
#define FCNN_QUAD_LANES_F64 2
#define FCNN_QUAD_LOAD_F32(x, at, o) _mm_setr_ps(x[at[0] + o], x[at[1] + o], x[at[2] + o], x[at[3] + o])
#define FCNN_QUAD_LOAD_F64(x, at, o) _mm_setr_pd(x[at[0] + o], x[at[1] + o])
/* The mask of index register k (two int64 lanes) from the lanes' mask. */
#define FCNN_QUAD_MASK_F32(take, k) \
    ((k) == 0 ? _mm_unpacklo_epi32(take, take) : _mm_unpackhi_epi32(take, take))
#define FCNN_QUAD_MASK_F64(take, k) (take)

/* LANES windows at once (their top left cells at x[at[l]], flat indices
 * rel[l]); R registers of int64 indices. */
#define FCNN_QUAD_BLOCK(sfx, T, VT, X, LANES, R, LOAD, MASK)                                 \
    static inline void fcnn_quad_block_##sfx(const T *x, const ptrdiff_t *at,                \
                                             const ptrdiff_t *rel, ptrdiff_t W, T *out,      \
                                             int64_t *idx)                                   \
    {                                                                                        \
        const ptrdiff_t tap[3] = FCNN_QUAD_TAPS(W);                                          \
        VT best = LOAD(x, at, 0);                                                            \
        __m128i base[R], pos[R];                                                             \
        for (int k = 0; k < R; k++)                                                          \
            base[k] = pos[k] = _mm_set_epi64x(rel[2 * k + 1], rel[2 * k]);                   \
        for (int t = 0; t < 3; t++) {                                                        \
            VT v = LOAD(x, at, tap[t]);                                                      \
            VT m = _mm_or_##X(_mm_cmplt_##X(best, v), _mm_cmpunord_##X(v, v));               \
            best = _mm_or_##X(_mm_and_##X(m, v), _mm_andnot_##X(m, best));                  \
            __m128i take = _mm_cast##X##_si128(m), o = _mm_set1_epi64x(tap[t]);              \
            for (int k = 0; k < R; k++)                                                      \
                pos[k] = fcnn_blend(pos[k], _mm_add_epi64(base[k], o), MASK(take, k));       \
        }                                                                                    \
        _mm_storeu_##X(out, best);                                                           \
        for (int k = 0; k < R; k++)                                                          \
            _mm_storeu_si128((__m128i *)(idx + 2 * k), pos[k]);                              \
    }
FCNN_QUAD_BLOCK(f32, float, __m128, ps, 4, 2, FCNN_QUAD_LOAD_F32, FCNN_QUAD_MASK_F32)
FCNN_QUAD_BLOCK(f64, double, __m128d, pd, 2, 1, FCNN_QUAD_LOAD_F64, FCNN_QUAD_MASK_F64)
#undef FCNN_QUAD_BLOCK

#else /* one window at a time */

#define FCNN_QUAD_LANES_F32 1
#define FCNN_QUAD_LANES_F64 1
#define fcnn_quad_block_f32(x, at, rel, W, out, idx) fcnn_quad_f32(x, at[0], rel[0], W, out, idx)
#define fcnn_quad_block_f64(x, at, rel, W, out, idx) fcnn_quad_f64(x, at[0], rel[0], W, out, idx)

#endif

#define FCNN_QUADS(sfx, T, LANES)                                                            \
    static void fcnn_max_pool_quads_##sfx(const T *x, T *out, int64_t *idx, ptrdiff_t planes, \
                                          ptrdiff_t H, ptrdiff_t W, ptrdiff_t oh,            \
                                          ptrdiff_t ow)                                      \
    {                                                                                        \
        ptrdiff_t at[LANES], rel[LANES], n = 0, m = 0;                                       \
        for (ptrdiff_t q = 0; q < planes; q++)                                               \
            for (ptrdiff_t oy = 0; oy < oh; oy++)                                            \
                for (ptrdiff_t ox = 0; ox < ow; ox++) {                                      \
                    rel[n] = 2 * (oy * W + ox);                                              \
                    at[n] = q * H * W + rel[n];                                              \
                    m++;                                                                     \
                    if (++n == LANES) {                                                      \
                        fcnn_quad_block_##sfx(x, at, rel, W, out + m - LANES, idx + m - LANES); \
                        n = 0;                                                               \
                    }                                                                        \
                }                                                                            \
        for (ptrdiff_t l = 0; l < n; l++)                                                    \
            fcnn_quad_##sfx(x, at[l], rel[l], W, out + m - n + l, idx + m - n + l);          \
    }                                                                                        \
                                                                                             \
    static int fcnn_max_pool_backward_quads_##sfx(const T *dout, const int64_t *idx, T *dx,  \
                                                  ptrdiff_t planes, ptrdiff_t H,             \
                                                  ptrdiff_t W, ptrdiff_t oh, ptrdiff_t ow)   \
    {                                                                                        \
        int strays = 0;                                                                      \
        memset(dx, 0, (size_t)(planes * H * W) * sizeof(T));                                \
        for (ptrdiff_t q = 0; q < planes; q++, dout += oh * ow, idx += oh * ow, dx += H * W) { \
            for (ptrdiff_t oy = 0; oy < oh; oy++)                                            \
                for (ptrdiff_t ox = 0; ox < ow; ox++) {                                      \
                    ptrdiff_t tile = 2 * (oy * W + ox);                                      \
                    int64_t d = idx[oy * ow + ox] - tile;                                    \
                    int inside = (d == 0) | (d == 1) | (d == W) | (d == W + 1);              \
                    strays |= !inside;                                                       \
                    /* a stray stores +0.0 at its tile's first cell */                       \
                    dx[tile + (inside ? d : 0)] =                                            \
                        fcnn_keep_##sfx(inside, dout[oy * ow + ox] + (T)0);                  \
                }                                                                            \
        }                                                                                    \
        return !strays;                                                                      \
    }
FCNN_QUADS(f32, float, FCNN_QUAD_LANES_F32)
FCNN_QUADS(f64, double, FCNN_QUAD_LANES_F64)
#undef FCNN_QUADS


/* float32 with AVX-512, where 2x2 windows tile the planes exactly (H = 2*oh,
 * W = 2*ow) in rows of 1, 2, 4 or 8 outputs: 16 consecutive outputs then
 * read the 64 consecutive input cells of their 16/ow output rows, the first
 * 8 outputs' windows in the first 32 cells and the last 8's at the same
 * places in the next 32. So each tap of 16 windows is two permutations of
 * two loaded vectors and a blend, and the backward writes the 64 cells
 * whole (no zeroing, no scatter). A run of planes is taken 16 outputs at a
 * time where a plane's outputs are a multiple or a divisor of 16 (the
 * lanes then lie in one plane, or in whole planes); the caller takes the
 * rest of the run (a partial vector) with the kernels above. The same
 * values, indices and gradients as those give (the same scan, +0.0 + dout).
 * Only x86-64 builds with GCC or Clang have it. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "simd.h"

static int fcnn_quads512(ptrdiff_t H, ptrdiff_t W, ptrdiff_t oh, ptrdiff_t ow)
{
    ptrdiff_t plane = oh * ow;
    return fcnn_simd_level() == FCNN_SIMD_AVX512 && H == 2 * oh && W == 2 * ow && ow >= 1
           && 8 % ow == 0 && (plane % 16 == 0 || 16 % plane == 0) && H * W <= INT32_MAX;
}

/* Lane l's window: corner[l], its top left cell among the 64 loaded ones;
 * at[l], its flat index in its plane, less 4*(k0 % plane) where a plane
 * holds 16 outputs or more (the first lane's output k0). */
static void fcnn_quad_lanes16(ptrdiff_t oh, ptrdiff_t ow, int *corner, int *at)
{
    ptrdiff_t plane = oh * ow;
    for (int l = 0; l < 16; l++) {
        ptrdiff_t h = l % 8;
        corner[l] = (int)(4 * ow * (h / ow) + 2 * (h % ow) + (l < 8 ? 0 : 32));
        at[l] = (int)(plane < 16 ? corner[l] % (4 * plane) : corner[l]);
    }
}

/* Returns how many of the `outputs` it pooled (a multiple of 16). */
__attribute__((target("avx512f"))) static ptrdiff_t fcnn_max_pool_quads512_f32(
    const float *x, float *out, int64_t *idx, ptrdiff_t outputs, ptrdiff_t oh, ptrdiff_t ow)
{
    int corner[16], at[16], lanes[16];
    fcnn_quad_lanes16(oh, ow, corner, at);
    const ptrdiff_t plane = oh * ow;
    const int off[4] = {0, 1, 2 * (int)ow, 2 * (int)ow + 1};
    __m512i tap[4];
    for (int t = 0; t < 4; t++) {
        for (int l = 0; l < 16; l++)
            lanes[l] = (corner[l] + off[t]) % 32;
        tap[t] = _mm512_loadu_si512((const void *)lanes);
    }
    const __m512i first = _mm512_loadu_si512((const void *)at);
    ptrdiff_t k0 = 0;
    for (; k0 + 16 <= outputs; k0 += 16) {
        const float *in = x + 4 * k0;
        __m512 v0 = _mm512_loadu_ps(in), v1 = _mm512_loadu_ps(in + 16);
        __m512 v2 = _mm512_loadu_ps(in + 32), v3 = _mm512_loadu_ps(in + 48);
        __m512 best = _mm512_mask_blend_ps(0xFF00, _mm512_permutex2var_ps(v0, tap[0], v1),
                                           _mm512_permutex2var_ps(v2, tap[0], v3));
        __m512i pos = _mm512_setzero_si512();
        for (int t = 1; t < 4; t++) {
            __m512 v = _mm512_mask_blend_ps(0xFF00, _mm512_permutex2var_ps(v0, tap[t], v1),
                                            _mm512_permutex2var_ps(v2, tap[t], v3));
            /* a cell wins if it is greater or NaN */
            __mmask16 take = _mm512_cmp_ps_mask(best, v, _CMP_LT_OQ)
                             | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            best = _mm512_mask_mov_ps(best, take, v);
            pos = _mm512_mask_mov_epi32(pos, take, _mm512_set1_epi32(off[t]));
        }
        __m512i flat = _mm512_add_epi32(_mm512_add_epi32(first, pos), _mm512_set1_epi32(
            (int)(plane >= 16 ? 4 * (k0 % plane) : 0)));
        _mm512_storeu_ps(out + k0, best);
        _mm512_storeu_si512((void *)(idx + k0), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(flat)));
        _mm512_storeu_si512((void *)(idx + k0 + 8),
                            _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(flat, 1)));
    }
    return k0;
}

/* Returns how many of the `outputs` it took (a multiple of 16); *strays is
 * set if an index lay outside its window (those cells are then +0.0, and
 * the caller scatters the run instead). */
__attribute__((target("avx512f"))) static ptrdiff_t fcnn_max_pool_backward_quads512_f32(
    const float *dout, const int64_t *idx, float *dx, ptrdiff_t outputs, ptrdiff_t oh,
    ptrdiff_t ow, int *strays)
{
    int corner[16], at[16], owner[64], which[64];
    fcnn_quad_lanes16(oh, ow, corner, at);
    const ptrdiff_t plane = oh * ow;
    const int off[4] = {0, 1, 2 * (int)ow, 2 * (int)ow + 1};
    for (int l = 0; l < 16; l++)  /* cell c of the 64: its window's lane and tap */
        for (int t = 0; t < 4; t++) {
            owner[corner[l] + off[t]] = l;
            which[corner[l] + off[t]] = t;
        }
    __m512i own[4], tap_of[4];
    for (int k = 0; k < 4; k++) {
        own[k] = _mm512_loadu_si512((const void *)(owner + 16 * k));
        tap_of[k] = _mm512_loadu_si512((const void *)(which + 16 * k));
    }
    const __m512i first = _mm512_loadu_si512((const void *)at);
    __mmask16 bad = 0;
    ptrdiff_t k0 = 0;
    for (; k0 + 16 <= outputs; k0 += 16) {
        __m512i flat = _mm512_add_epi32(first, _mm512_set1_epi32(
            (int)(plane >= 16 ? 4 * (k0 % plane) : 0)));
        /* each window's tap: where in it its index lies (4: outside) */
        __m512i got = _mm512_set1_epi32(4);
        for (int h = 0; h < 2; h++) {
            __m512i d = _mm512_sub_epi64(
                _mm512_loadu_si512((const void *)(idx + k0 + 8 * h)),
                _mm512_cvtepi32_epi64(h ? _mm512_extracti64x4_epi64(flat, 1)
                                        : _mm512_castsi512_si256(flat)));
            for (int t = 0; t < 4; t++) {
                __mmask16 hit = (__mmask16)(
                    _mm512_cmpeq_epi64_mask(d, _mm512_set1_epi64(off[t])) << (8 * h));
                got = _mm512_mask_mov_epi32(got, hit, _mm512_set1_epi32(t));
            }
        }
        bad |= _mm512_cmpeq_epi32_mask(got, _mm512_set1_epi32(4));
        __m512 g = _mm512_add_ps(_mm512_loadu_ps(dout + k0), _mm512_setzero_ps());
        for (int k = 0; k < 4; k++) {
            __mmask16 keep = _mm512_cmpeq_epi32_mask(_mm512_permutexvar_epi32(own[k], got),
                                                     tap_of[k]);
            _mm512_storeu_ps(dx + 4 * k0 + 16 * k,
                             _mm512_maskz_mov_ps(keep, _mm512_permutexvar_ps(own[k], g)));
        }
    }
    *strays = bad != 0;
    return k0;
}

#else

static int fcnn_quads512(ptrdiff_t H, ptrdiff_t W, ptrdiff_t oh, ptrdiff_t ow) { return 0; }
static ptrdiff_t fcnn_max_pool_quads512_f32(const float *x, float *out, int64_t *idx,
                                            ptrdiff_t outputs, ptrdiff_t oh, ptrdiff_t ow)
{
    return 0;
}
static ptrdiff_t fcnn_max_pool_backward_quads512_f32(const float *dout, const int64_t *idx,
                                                     float *dx, ptrdiff_t outputs, ptrdiff_t oh,
                                                     ptrdiff_t ow, int *strays)
{
    return 0;
}

#endif
#endif
