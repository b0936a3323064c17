/* AVX2 and AVX-512 kernels for the common pooling geometries: square 2x2
 * and 3x3 windows with stride 2 and no dilation, with any padding the
 * validation allows (at most k // 2) and ceil mode; and for max-pool
 * gradients whose indices tile the input in 2x2 cells.
 *
 * csrc/pool.pyx picks them per call when fcnn_simd_level() > 0 and the
 * geometry fits, and runs its generic kernels otherwise. Their results are
 * bitwise identical to the generic kernels': every output lane performs the
 * generic kernel's comparisons or additions, in the same order. Only
 * x86-64 builds with GCC or Clang have them (an instruction set is chosen at
 * run time, per call); elsewhere fcnn_simd_level() is 0.
 *
 * How the work is laid out:
 * - One vector holds VL consecutive outputs of one output row. With stride 2
 *   the taps of those outputs are every other input column, so each tap is
 *   de-interleaved from two loads. The AVX2 shuffles leave the lanes in a
 *   fixed scrambled order (sigma); all taps share it, so the lane-wise
 *   comparisons and sums are unaffected, and one permutation per result
 *   restores the output order. AVX-512 permutes into the natural order.
 * - Cells outside the input (padding, and what a block at the edge would
 *   read past it) are read through masked loads, which never touch
 *   masked-off memory, as -inf for max and +0.0 for avg. -inf never wins a
 *   comparison, and adding +0.0 to a sum that started at +0.0 changes
 *   nothing (such a sum is never -0.0), so they are exactly as good as the
 *   cells the generic kernels skip.
 * - Max windows start from their first tap (from the padding if it is one)
 *   with the index of their first real cell, which is the generic kernel's
 *   start of -inf at that index followed by the first tap. Lanes carry the
 *   index minus their tap-0 column, so a merge blends in a per-tap constant
 *   and the column is added once at the end.
 * - The average backward gathers: each input pixel adds the shares of the
 *   windows that cover it in row-major window order, read from a per-thread
 *   scratch of ``dout / divisor`` rows with +0.0 borders (windows that do
 *   not exist add +0.0).
 */
#ifndef FASTCNN_POOL_SIMD_H
#define FASTCNN_POOL_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

/* Lanes of the widest vectors (AVX-512). Scratch and divisor tables are
 * sized for these; narrower vectors just leave more of the padding unread. */
#define FCNN_VL_F32 16
#define FCNN_VL_F64 8

/* How far ahead of their reads and writes the kernels prefetch. */
#define FCNN_AHEAD 8192

/* The forward kernels work on chunks of this many blocks of outputs (per
 * chunk they keep the blocks' edge masks and, for max pooling, the scans of
 * the window row that consecutive window rows share). */
#define FCNN_CHUNK 32

static ptrdiff_t fcnn_round_up(ptrdiff_t n, ptrdiff_t m) { return (n + m - 1) / m * m; }

/* Backward scratch rows: a +0.0 cell, the ow shares computed in whole
 * vectors, and +0.0 cells up to the last block of input pixel pairs plus one
 * (a pixel pair m reads the shares of windows m - 1 .. m + 1). */
static ptrdiff_t fcnn_pool_bwd_width(ptrdiff_t W, ptrdiff_t ow, ptrdiff_t vl)
{
    ptrdiff_t pairs = fcnn_round_up((W + 1) / 2, vl), shares = fcnn_round_up(ow, vl);
    return 2 + (pairs > shares ? pairs : shares);
}

static void fcnn_fill_f32(float *p, ptrdiff_t n, float value)
{
    for (ptrdiff_t i = 0; i < n; i++)
        p[i] = value;
}

static void fcnn_fill_f64(double *p, ptrdiff_t n, double value)
{
    for (ptrdiff_t i = 0; i < n; i++)
        p[i] = value;
}

#define FCNN_CAT_(a, b) a##_##b
#define FCNN_CAT(a, b) FCNN_CAT_(a, b)

/* Store the first n lanes (0 < n < lanes, natural order) of v, of `type`
 * cells, at p, through a buffer: AVX2's masked stores are microcoded on
 * AMD's cores (tens of cycles each), which made them most of the time of a
 * small plane, whose every row ends in a partial vector. */
#define FCNN_STORE_THROUGH(type, lanes, store, p, n, v) do { \
    type b_[lanes]; \
    store(b_, v); \
    for (ptrdiff_t i_ = 0; i_ < (n); i_++) \
        (p)[i_] = b_[i_]; \
} while (0)

/* ---- AVX2, what both types share: 256-bit vectors; masks are vectors. */
#define FCNN_TARGET __attribute__((target("avx2")))
#define IV __m256i
#define I_UNSCRAMBLE(v) _mm256_permute4x64_epi64(v, 0xD8)
#define M_ANDNOT _mm256_andnot_si256
#define M_OR _mm256_or_si256
#define M_ANY(m) (!_mm256_testz_si256(m, m))

/* ---- AVX2, float: 8 lanes, int32 index lanes (the caller guarantees that
 * flat indices fit). The de-interleaving shuffles work within 128-bit
 * halves: lane l holds output sigma(l) = (0, 1, 4, 5, 2, 3, 6, 7)[l], and
 * swapping the middle 64-bit quarters restores the order. */
#define T float
#define SFX f32_avx2
#define VT __m256
#define MT __m256i
#define VL 8
#define V_LOAD _mm256_loadu_ps
#define V_STORE _mm256_storeu_ps
#define V_STORE_FIRST(p, n, v) FCNN_STORE_THROUGH(float, 8, V_STORE, p, n, v)
#define V_MASKLOAD(p, m, fill) \
    _mm256_blendv_ps(fill, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m))
#define V_SET1 _mm256_set1_ps
#define V_ZERO _mm256_setzero_ps
#define V_ADD _mm256_add_ps
#define V_DIV _mm256_div_ps
#define V_EVENS(lo, hi) _mm256_shuffle_ps(lo, hi, 0x88)
#define V_ODDS(lo, hi) _mm256_shuffle_ps(lo, hi, 0xDD)
#define V_UNSCRAMBLE(v) _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8))
#define V_TAKE(v, best) _mm256_castps_si256(_mm256_or_ps( \
    _mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)))
#define V_BLEND(a, b, m) _mm256_blendv_ps(a, b, _mm256_castsi256_ps(m))
#define V_ZIPLO(e, o) _mm256_permute2f128_ps(_mm256_unpacklo_ps(e, o), _mm256_unpackhi_ps(e, o), 0x20)
#define V_ZIPHI(e, o) _mm256_permute2f128_ps(_mm256_unpacklo_ps(e, o), _mm256_unpackhi_ps(e, o), 0x31)
#define I_SET1(x) _mm256_set1_epi32((int32_t)(x))
#define I_ADD _mm256_add_epi32
#define I_SUB _mm256_sub_epi32
#define I_GT _mm256_cmpgt_epi32
#define I_MAX0(v) _mm256_max_epi32(v, _mm256_setzero_si256())
#define I_BLEND(a, b, m) _mm256_castps_si256(_mm256_blendv_ps( \
    _mm256_castsi256_ps(a), _mm256_castsi256_ps(b), _mm256_castsi256_ps(m)))
#define I_LANES _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
#define I_SIGMA2 _mm256_setr_epi32(0, 2, 8, 10, 4, 6, 12, 14)
#define I_EQ _mm256_cmpeq_epi32
#define V_MASKZ(m, v) _mm256_and_ps(_mm256_castsi256_ps(m), v)
/* the low halves of 8 int64 (indices below 2**31) in lane order */
#define IDX_NARROW(lo, hi) _mm256_permute4x64_epi64(_mm256_castps_si256(_mm256_shuffle_ps( \
    _mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi), 0x88)), 0xD8)
#define IDX_LOAD(p) IDX_NARROW(_mm256_loadu_si256((const __m256i *)(p)), \
                               _mm256_loadu_si256((const __m256i *)(p) + 1))
#define IDX_MASKLOAD(p, m) IDX_NARROW( \
    _mm256_maskload_epi64((const long long *)(p), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(m))), \
    _mm256_maskload_epi64((const long long *)(p) + 4, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1))))
#define IDX_STORE(p, v) do { \
    _mm256_storeu_si256((__m256i *)(p), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v))); \
    _mm256_storeu_si256((__m256i *)(p) + 1, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1))); \
} while (0)
#define IDX_STORE_FIRST(p, n, v) FCNN_STORE_THROUGH(int64_t, 8, IDX_STORE, p, n, v)
#include "pool_simd_impl.h"
#include "pool_simd_undef.h"

/* ---- AVX2, double: 4 lanes, int64 index lanes. unpacklo/hi leave lane l
 * holding output sigma(l) = (0, 2, 1, 3)[l]; the same quarter swap restores
 * the order. */
#define T double
#define SFX f64_avx2
#define VT __m256d
#define MT __m256i
#define VL 4
#define V_LOAD _mm256_loadu_pd
#define V_STORE _mm256_storeu_pd
#define V_STORE_FIRST(p, n, v) FCNN_STORE_THROUGH(double, 4, V_STORE, p, n, v)
#define V_MASKLOAD(p, m, fill) \
    _mm256_blendv_pd(fill, _mm256_maskload_pd(p, m), _mm256_castsi256_pd(m))
#define V_SET1 _mm256_set1_pd
#define V_ZERO _mm256_setzero_pd
#define V_ADD _mm256_add_pd
#define V_DIV _mm256_div_pd
#define V_EVENS(lo, hi) _mm256_unpacklo_pd(lo, hi)
#define V_ODDS(lo, hi) _mm256_unpackhi_pd(lo, hi)
#define V_UNSCRAMBLE(v) _mm256_permute4x64_pd(v, 0xD8)
#define V_TAKE(v, best) _mm256_castpd_si256(_mm256_or_pd( \
    _mm256_cmp_pd(v, best, _CMP_GT_OQ), _mm256_cmp_pd(v, v, _CMP_UNORD_Q)))
#define V_BLEND(a, b, m) _mm256_blendv_pd(a, b, _mm256_castsi256_pd(m))
#define V_ZIPLO(e, o) _mm256_permute2f128_pd(_mm256_unpacklo_pd(e, o), _mm256_unpackhi_pd(e, o), 0x20)
#define V_ZIPHI(e, o) _mm256_permute2f128_pd(_mm256_unpacklo_pd(e, o), _mm256_unpackhi_pd(e, o), 0x31)
#define I_SET1(x) _mm256_set1_epi64x((long long)(x))
#define I_ADD _mm256_add_epi64
#define I_SUB _mm256_sub_epi64
#define I_GT _mm256_cmpgt_epi64
#define I_MAX0(v) I_BLEND(_mm256_setzero_si256(), v, I_GT(v, _mm256_setzero_si256()))
#define I_BLEND(a, b, m) _mm256_castpd_si256(_mm256_blendv_pd( \
    _mm256_castsi256_pd(a), _mm256_castsi256_pd(b), _mm256_castsi256_pd(m)))
#define I_LANES _mm256_setr_epi64x(0, 1, 2, 3)
#define I_SIGMA2 _mm256_setr_epi64x(0, 4, 2, 6)
#define I_EQ _mm256_cmpeq_epi64
#define V_MASKZ(m, v) _mm256_and_pd(_mm256_castsi256_pd(m), v)
#define IDX_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define IDX_MASKLOAD(p, m) _mm256_maskload_epi64((const long long *)(p), m)
#define IDX_STORE(p, v) _mm256_storeu_si256((__m256i *)(p), v)
#define IDX_STORE_FIRST(p, n, v) FCNN_STORE_THROUGH(int64_t, 4, IDX_STORE, p, n, v)
#include "pool_simd_impl.h"
#define FCNN_ISA_DONE
#include "pool_simd_undef.h"

/* ---- AVX-512, what both types share: 512-bit vectors; masks are mask registers. */
#define FCNN_TARGET __attribute__((target("avx512f")))
#define IV __m512i
#define I_UNSCRAMBLE(v) (v)
#define M_ANDNOT(a, b) (MT)(~(a) & (b))
#define M_OR(a, b) (MT)((a) | (b))
#define M_ANY(m) ((m) != 0)

/* ---- AVX-512, float: 16 lanes in natural order (vpermt2ps picks the even
 * or odd cells of two vectors), int32 index lanes, mask registers. */
#define T float
#define SFX f32_avx512
#define VT __m512
#define MT __mmask16
#define VL 16
#define V_LOAD _mm512_loadu_ps
#define V_STORE _mm512_storeu_ps
#define V_STORE_FIRST(p, n, v) _mm512_mask_storeu_ps(p, FCNN(fcnn_first_lanes)(n), v)
#define V_MASKLOAD(p, m, fill) _mm512_mask_loadu_ps(fill, m, p)
#define V_SET1 _mm512_set1_ps
#define V_ZERO _mm512_setzero_ps
#define V_ADD _mm512_add_ps
#define V_DIV _mm512_div_ps
#define V_EVENS(lo, hi) _mm512_permutex2var_ps(lo, _mm512_setr_epi32( \
    0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), hi)
#define V_ODDS(lo, hi) _mm512_permutex2var_ps(lo, _mm512_setr_epi32( \
    1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), hi)
#define V_UNSCRAMBLE(v) (v)
#define V_TAKE(v, best) \
    (MT)(_mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q))
#define V_BLEND(a, b, m) _mm512_mask_blend_ps(m, a, b)
#define V_ZIPLO(e, o) _mm512_permutex2var_ps(e, _mm512_setr_epi32( \
    0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), o)
#define V_ZIPHI(e, o) _mm512_permutex2var_ps(e, _mm512_setr_epi32( \
    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), o)
#define I_SET1(x) _mm512_set1_epi32((int32_t)(x))
#define I_ADD _mm512_add_epi32
#define I_SUB _mm512_sub_epi32
#define I_GT _mm512_cmpgt_epi32_mask
#define I_MAX0(v) _mm512_max_epi32(v, _mm512_setzero_si512())
#define I_BLEND(a, b, m) _mm512_mask_blend_epi32(m, a, b)
#define I_LANES _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define I_SIGMA2 _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
#define I_EQ _mm512_cmpeq_epi32_mask
#define V_MASKZ(m, v) _mm512_maskz_mov_ps(m, v)
#define IDX_LOAD(p) _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32( \
    _mm512_loadu_si512(p))), _mm512_cvtepi64_epi32(_mm512_loadu_si512((p) + 8)), 1)
#define IDX_MASKLOAD(p, m) _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32( \
    _mm512_maskz_loadu_epi64((__mmask8)(m), p))), \
    _mm512_cvtepi64_epi32(_mm512_maskz_loadu_epi64((__mmask8)((m) >> 8), (p) + 8)), 1)
#define IDX_STORE(p, v) do { \
    _mm512_storeu_si512((p), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v))); \
    _mm512_storeu_si512((p) + 8, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1))); \
} while (0)
#define IDX_STORE_FIRST(p, n, v) do { \
    MT m_ = FCNN(fcnn_first_lanes)(n); \
    _mm512_mask_storeu_epi64((p), (__mmask8)m_, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v))); \
    _mm512_mask_storeu_epi64((p) + 8, (__mmask8)(m_ >> 8), \
                             _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1))); \
} while (0)
#include "pool_simd_impl.h"
#include "pool_simd_undef.h"

/* ---- AVX-512, double: 8 lanes in natural order, int64 index lanes. */
#define T double
#define SFX f64_avx512
#define VT __m512d
#define MT __mmask8
#define VL 8
#define V_LOAD _mm512_loadu_pd
#define V_STORE _mm512_storeu_pd
#define V_STORE_FIRST(p, n, v) _mm512_mask_storeu_pd(p, FCNN(fcnn_first_lanes)(n), v)
#define V_MASKLOAD(p, m, fill) _mm512_mask_loadu_pd(fill, m, p)
#define V_SET1 _mm512_set1_pd
#define V_ZERO _mm512_setzero_pd
#define V_ADD _mm512_add_pd
#define V_DIV _mm512_div_pd
#define V_EVENS(lo, hi) _mm512_permutex2var_pd(lo, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), hi)
#define V_ODDS(lo, hi) _mm512_permutex2var_pd(lo, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), hi)
#define V_UNSCRAMBLE(v) (v)
#define V_TAKE(v, best) \
    (MT)(_mm512_cmp_pd_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q))
#define V_BLEND(a, b, m) _mm512_mask_blend_pd(m, a, b)
#define V_ZIPLO(e, o) _mm512_permutex2var_pd(e, _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), o)
#define V_ZIPHI(e, o) _mm512_permutex2var_pd(e, _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15), o)
#define I_SET1(x) _mm512_set1_epi64((long long)(x))
#define I_ADD _mm512_add_epi64
#define I_SUB _mm512_sub_epi64
#define I_GT _mm512_cmpgt_epi64_mask
#define I_MAX0(v) _mm512_max_epi64(v, _mm512_setzero_si512())
#define I_BLEND(a, b, m) _mm512_mask_blend_epi64(m, a, b)
#define I_LANES _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7)
#define I_SIGMA2 _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14)
#define I_EQ _mm512_cmpeq_epi64_mask
#define V_MASKZ(m, v) _mm512_maskz_mov_pd(m, v)
#define IDX_LOAD(p) _mm512_loadu_si512(p)
#define IDX_MASKLOAD(p, m) _mm512_maskz_loadu_epi64(m, p)
#define IDX_STORE(p, v) _mm512_storeu_si512((p), v)
#define IDX_STORE_FIRST(p, n, v) _mm512_mask_storeu_epi64((p), FCNN(fcnn_first_lanes)(n), v)
#include "pool_simd_impl.h"
#define FCNN_ISA_DONE
#include "pool_simd_undef.h"

/* The entry points csrc/pool.pyx calls: the best instruction set allowed. */
#define FCNN_DISPATCH(name, sfx, args) \
    (fcnn_simd_level() == FCNN_SIMD_AVX512 ? name##_##sfx##_avx512 args : name##_##sfx##_avx2 args)
#define FCNN_ENTRY_POINTS(T, sfx)                                                              \
    static void fcnn_max_pool_plane_##sfx(                                                     \
        const T *x, T *out, int64_t *idx, ptrdiff_t H, ptrdiff_t W, ptrdiff_t k, ptrdiff_t ph, \
        ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow)                                              \
    {                                                                                          \
        FCNN_DISPATCH(fcnn_max_pool_plane, sfx, (x, out, idx, H, W, k, ph, pw, oh, ow));       \
    }                                                                                          \
    static void fcnn_avg_pool_plane_##sfx(                                                     \
        const T *x, T *out, const T *div, ptrdiff_t H, ptrdiff_t W, ptrdiff_t k, ptrdiff_t ph, \
        ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow)                                              \
    {                                                                                          \
        FCNN_DISPATCH(fcnn_avg_pool_plane, sfx, (x, out, div, H, W, k, ph, pw, oh, ow));       \
    }                                                                                          \
    static int fcnn_max_pool_backward_tiles_##sfx(                                             \
        const T *dout, const int64_t *idx, T *dx, ptrdiff_t H, ptrdiff_t W, ptrdiff_t oh,      \
        ptrdiff_t ow)                                                                          \
    {                                                                                          \
        return FCNN_DISPATCH(fcnn_max_pool_backward_tiles, sfx, (dout, idx, dx, H, W, oh, ow)); \
    }                                                                                          \
    static void fcnn_avg_pool_backward_plane_##sfx(                                            \
        const T *dout, T *dx, const T *div, ptrdiff_t H, ptrdiff_t W, ptrdiff_t k,             \
        ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow, T *g, ptrdiff_t wg)            \
    {                                                                                          \
        FCNN_DISPATCH(fcnn_avg_pool_backward_plane, sfx,                                       \
                      (dout, dx, div, H, W, k, ph, pw, oh, ow, g, wg));                        \
    }
FCNN_ENTRY_POINTS(float, f32)
FCNN_ENTRY_POINTS(double, f64)

#else /* no x86-64 SIMD build: pool.pyx never calls these (fcnn_simd_level() is 0) */

#define FCNN_VL_F32 1
#define FCNN_VL_F64 1
#define fcnn_pool_bwd_width(W, ow, vl) ((ptrdiff_t)0)
#define fcnn_fill_f32(...) ((void)0)
#define fcnn_fill_f64(...) ((void)0)
#define fcnn_max_pool_plane_f32(...) ((void)0)
#define fcnn_max_pool_plane_f64(...) ((void)0)
#define fcnn_avg_pool_plane_f32(...) ((void)0)
#define fcnn_avg_pool_plane_f64(...) ((void)0)
#define fcnn_avg_pool_backward_plane_f32(...) ((void)0)
#define fcnn_max_pool_backward_tiles_f32(...) 0
#define fcnn_max_pool_backward_tiles_f64(...) 0
#define fcnn_avg_pool_backward_plane_f64(...) ((void)0)

#endif
#endif
