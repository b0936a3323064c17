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

#endif
