/* Direct convolution for few input channels (C*kh*kw taps small): the
 * forward pass and the weight and bias gradients, for csrc/direct.pyx.
 *
 * A GEMM of inner dimension C*kh*kw = 9..75 is thin, and an im2col that
 * copies every input cell kh*kw times costs as much as the products. Here
 * each sample (or band of output rows) is copied ONCE into a zero-padded
 * scratch, after which every tap of every output is an in-bounds load:
 *
 * - Layout of the scratch: per channel c, R padded rows r; per row, the
 *   sw column phases q (padded columns q, q + sw, q + 2*sw, ...), each PW
 *   cells long: cell ((c*R + r)*sw + q)*PW + m holds padded column
 *   m*sw + q of padded row r. Output column x of tap (i, j) then reads phase
 *   (j*dw) % sw at m = x + (j*dw) / sw: consecutive outputs read
 *   consecutive cells, whatever the stride. Each tap is one offset from the
 *   start of an output row's data (the caller's table `offs`).
 * - Forward: an output row segment of two vectors and a block of up to
 *   FCNN_DIRECT_FB filters keep their accumulators in registers across all
 *   taps; each tap loads its two input vectors once and multiplies them by
 *   every filter's broadcast weight. The bias is added last. Filters go in
 *   blocks of balanced sizes (fcnn_direct_blocks), their weights packed
 *   tap-major per block (fcnn_direct_pack_*).
 * - Weight gradient: per block of 3 filters x 3 taps, vector accumulators
 *   of dout * input along the output rows, reduced to one sum each at the
 *   end of a sample (lanes added in a fixed order).
 *
 * Every output is summed in a fixed order, the same for every thread
 * count. Products are rounded before they are added (no fused
 * multiply-add: an overflowing product must meet an opposite infinity as
 * inf - inf = NaN, as in the NumPy twin and PyTorch; on AMD cores the
 * additions run on pipes of their own, so this costs no throughput). The
 * forward adds each output's products tap by tap from +0.0, in the generic
 * and the AVX2 code alike: both give the twin's bits. The weight gradient
 * adds in another order than the twin's GEMM, so the two agree to
 * rounding. AVX2 is chosen at run time, per call (fcnn_direct_level);
 * other CPUs and compilers run the generic code.
 */
#ifndef FASTCNN_DIRECT_SIMD_H
#define FASTCNN_DIRECT_SIMD_H

#include <stddef.h>
#include <string.h>

#include "simd.h"

/* Output cells per row segment of the forward (two AVX2 vectors). Scratch
 * rows hold whole segments, so the last one of a row reads in bounds. */
#define FCNN_DIRECT_SEG_F32 16
#define FCNN_DIRECT_SEG_F64 8
/* Most filters per forward block: 6 x 2 accumulators, 2 input vectors and
 * a broadcast weight fill 15 of the 16 AVX2 registers. */
#define FCNN_DIRECT_FB 6
/* The gradients' sums add runs of at most this many vectors (see
 * fcnn_direct_wgrad): their error grows with the run, not the plane. */
#define FCNN_DIRECT_RUN 64

/* 1 where the AVX2 kernels run, else 0 (capped with the module's
 * fcnn_set_simd_cap, as the other SIMD kernels). */
static int fcnn_direct_level(void) { return fcnn_simd_level() > 0; }

/* Filter blocks of the forward: `F` filters in ceil(F / FB) blocks of
 * balanced sizes; block b holds filters [first, first + size). */
static ptrdiff_t fcnn_direct_blocks(ptrdiff_t F) { return (F + FCNN_DIRECT_FB - 1) / FCNN_DIRECT_FB; }

static void fcnn_direct_block(ptrdiff_t F, ptrdiff_t b, ptrdiff_t *first, ptrdiff_t *size)
{
    ptrdiff_t nb = fcnn_direct_blocks(F), q = F / nb, r = F % nb;
    *first = b * q + (b < r ? b : r);
    *size = q + (b < r);
}

#define FCNN_DCAT_(a, b) a##_##b
#define FCNN_DCAT(a, b) FCNN_DCAT_(a, b)

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
static int fcnn_direct_pad_wide(ptrdiff_t sw)
{
    return sw <= 2 && fcnn_simd_level() == FCNN_SIMD_AVX512;
}
#else
static int fcnn_direct_pad_wide(ptrdiff_t sw) { return 0; }
#endif

/* The code that does not depend on the instruction set, per element type. */
#define FCNN_DIRECT_COMMON(T, SFX)                                                   \
/* Copy input rows [row0, row0 + rows) of the C planes (H, W) at x, zero-padded \
 * (rows outside the input and columns outside [0, W) are +0.0), into the     \
 * scratch layout above: R rows per channel, sw phases of PW cells per row;   \
 * padded column 0 is input column -pw. */                                    \
static void fcnn_direct_pad_##SFX(const T *x, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, \
                                  ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t R,      \
                                  ptrdiff_t sw, ptrdiff_t pw, ptrdiff_t PW, T *s)   \
{                                                                                   \
    int wide = fcnn_direct_pad_wide(sw);                                            \
    for (ptrdiff_t c = 0; c < C; c++)                                               \
        for (ptrdiff_t r = 0; r < rows; r++) {                                      \
            ptrdiff_t y = row0 + r;                                                 \
            T *d = s + (c * R + r) * sw * PW;                                       \
            if (y < 0 || y >= H) {                                                  \
                memset(d, 0, (size_t)(sw * PW) * sizeof(T));                        \
                continue;                                                           \
            }                                                                       \
            const T *src = x + (c * H + y) * W;                                     \
            if (wide) {                                                             \
                fcnn_pad_row512_##SFX(src, W, sw, pw, PW, d);                \
                continue;                                                           \
            }                                                                       \
            for (ptrdiff_t q = 0; q < sw; q++) {                                    \
                T *dq = d + q * PW;                                                 \
                /* padded columns m*sw + q - pw inside [0, W): m in [lo, hi) */     \
                ptrdiff_t lo = pw - q > 0 ? (pw - q + sw - 1) / sw : 0;             \
                ptrdiff_t hi = W + pw - q > 0 ? (W + pw - q + sw - 1) / sw : 0;     \
                lo = lo < PW ? lo : PW;                                             \
                hi = hi < PW ? hi : PW;                                             \
                hi = hi > lo ? hi : lo;                                             \
                memset(dq, 0, (size_t)lo * sizeof(T));                              \
                if (sw == 1)                                                        \
                    memcpy(dq + lo, src + lo - pw, (size_t)(hi - lo) * sizeof(T));  \
                else                                                                \
                    for (ptrdiff_t m = lo; m < hi; m++)                             \
                        dq[m] = src[m * sw + q - pw];                               \
                memset(dq + hi, 0, (size_t)(PW - hi) * sizeof(T));                  \
            }                                                                       \
        }                                                                           \
}                                                                                   \
                                                                                    \
/* Weights (F, K) packed for the AVX2 forward: block by block, tap-major     \
 * within a block (the block of filters [f0, f0 + fb) at wp + f0*K). */       \
static void fcnn_direct_pack_##SFX(const T *w, ptrdiff_t F, ptrdiff_t K, T *wp)    \
{                                                                                   \
    for (ptrdiff_t b = 0; b < fcnn_direct_blocks(F); b++) {                         \
        ptrdiff_t f0, fb;                                                           \
        fcnn_direct_block(F, b, &f0, &fb);                                          \
        for (ptrdiff_t t = 0; t < K; t++)                                           \
            for (ptrdiff_t f = 0; f < fb; f++)                                      \
                wp[f0 * K + t * fb + f] = w[(f0 + f) * K + t];                      \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* One output row of every filter, generic: out[f*L + x] for x < ow, from the \
 * row's data at `base` (tap t at base + offs[t]) and weights (F, K); each    \
 * output adds the rounded products tap by tap from +0.0, then the bias (if   \
 * any). */                                                                   \
static void fcnn_direct_row_##SFX(const T *base, const ptrdiff_t *offs, ptrdiff_t K, \
                                  const T *w, const T *bias, ptrdiff_t F,           \
                                  T *restrict out, ptrdiff_t L, ptrdiff_t ow)       \
{                                                                                   \
    for (ptrdiff_t f = 0; f < F; f++) {                                             \
        T *restrict o = out + f * L;                                                \
        for (ptrdiff_t x = 0; x < ow; x++)                                          \
            o[x] = 0;                                                               \
        for (ptrdiff_t t = 0; t < K; t++) {                                         \
            const T *restrict p = base + offs[t];                                   \
            T wt = w[f * K + t];                                                    \
            for (ptrdiff_t x = 0; x < ow; x++)                                      \
                o[x] = o[x] + wt * p[x];                                            \
        }                                                                           \
        if (bias)                                                                   \
            for (ptrdiff_t x = 0; x < ow; x++)                                      \
                o[x] += bias[f];                                                    \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* One sample's weight and bias gradients, generic: dw (F, K) and db (F)     \
 * from dout (F, oh, ow) and the padded sample at xs (output row y's data at \
 * xs + y*rstep), each a sum over the outputs in row-major order. */          \
static void fcnn_direct_wgrad_##SFX(const T *xs, const ptrdiff_t *offs, ptrdiff_t K, \
                                    const T *d, ptrdiff_t F, ptrdiff_t oh,          \
                                    ptrdiff_t ow, ptrdiff_t rstep, T *dw, T *db)    \
{                                                                                   \
    ptrdiff_t L = oh * ow;                                                          \
    for (ptrdiff_t f = 0; f < F; f++) {                                             \
        const T *df = d + f * L;                                                    \
        for (ptrdiff_t t = 0; t < K; t++) {                                         \
            T s = 0;                                                                \
            for (ptrdiff_t y = 0; y < oh; y++) {                                    \
                const T *p = xs + y * rstep + offs[t];                              \
                for (ptrdiff_t x = 0; x < ow; x++)                                  \
                    s += df[y * ow + x] * p[x];                                     \
            }                                                                       \
            dw[f * K + t] = s;                                                      \
        }                                                                           \
        T s = 0;                                                                    \
        for (ptrdiff_t l = 0; l < L; l++)                                           \
            s += df[l];                                                             \
        db[f] = s;                                                                  \
    }                                                                               \
}

FCNN_DIRECT_COMMON(float, f32)
FCNN_DIRECT_COMMON(double, f64)
#undef FCNN_DIRECT_COMMON

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#define FCNN_TARGET __attribute__((target("avx2")))

#define T float
#define SFX f32_avx2
#define VT __m256
#define VL 8
#define V_LOAD _mm256_loadu_ps
#define V_STORE _mm256_storeu_ps
#define V_SET1 _mm256_set1_ps
#define V_ZERO _mm256_setzero_ps
#define V_ADD _mm256_add_ps
#define V_MUL _mm256_mul_ps
#define V_AND _mm256_and_ps
#define V_MASK(n) _mm256_castsi256_ps(_mm256_cmpgt_epi32( \
    _mm256_set1_epi32((int)(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)))
#define V_MASKLOAD(p, m) _mm256_maskload_ps(p, _mm256_castps_si256(m))
FCNN_TARGET static inline float fcnn_direct_hsum_f32_avx2(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
#define V_HSUM fcnn_direct_hsum_f32_avx2
#include "direct_simd_impl.h"

#define T double
#define SFX f64_avx2
#define VT __m256d
#define VL 4
#define V_LOAD _mm256_loadu_pd
#define V_STORE _mm256_storeu_pd
#define V_SET1 _mm256_set1_pd
#define V_ZERO _mm256_setzero_pd
#define V_ADD _mm256_add_pd
#define V_MUL _mm256_mul_pd
#define V_AND _mm256_and_pd
#define V_MASK(n) _mm256_castsi256_pd(_mm256_cmpgt_epi64( \
    _mm256_set1_epi64x((long long)(n)), _mm256_setr_epi64x(0, 1, 2, 3)))
#define V_MASKLOAD(p, m) _mm256_maskload_pd(p, _mm256_castpd_si256(m))
FCNN_TARGET static inline double fcnn_direct_hsum_f64_avx2(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
#define V_HSUM fcnn_direct_hsum_f64_avx2
#include "direct_simd_impl.h"

#undef FCNN_TARGET

#else

/* No AVX2 kernels: fcnn_direct_level() is 0, so these never run. */
#define FCNN_DIRECT_NONE(T, SFX)                                                     \
static void fcnn_direct_row_##SFX(const T *base, const ptrdiff_t *offs, ptrdiff_t K, \
                                  const T *w, const T *bias, ptrdiff_t F, T *out,   \
                                  ptrdiff_t L, ptrdiff_t ow) {}                     \
static void fcnn_direct_wgrad_##SFX(const T *xs, const ptrdiff_t *offs, ptrdiff_t K, \
                                    const T *d, ptrdiff_t F, ptrdiff_t oh,          \
                                    ptrdiff_t ow, ptrdiff_t rstep, T *dw, T *db) {}
FCNN_DIRECT_NONE(float, f32_avx2)
FCNN_DIRECT_NONE(double, f64_avx2)
#undef FCNN_DIRECT_NONE

#endif

/* The AVX2 kernel where `simd` (fcnn_direct_level() > 0), else the generic one. */
#define FCNN_DIRECT_AT(T, SFX)                                                          \
static inline void fcnn_direct_row_at_##SFX(int simd, const T *base, const ptrdiff_t *offs, \
                                            ptrdiff_t K, const T *w, const T *bias,    \
                                            ptrdiff_t F, T *out, ptrdiff_t L, ptrdiff_t ow) \
{                                                                                       \
    (simd ? fcnn_direct_row_##SFX##_avx2 : fcnn_direct_row_##SFX)(base, offs, K, w, bias, \
                                                                   F, out, L, ow);      \
}                                                                                       \
static inline void fcnn_direct_wgrad_at_##SFX(int simd, const T *xs, const ptrdiff_t *offs, \
                                              ptrdiff_t K, const T *d, ptrdiff_t F,    \
                                              ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t rstep, \
                                              T *dw, T *db)                             \
{                                                                                       \
    (simd ? fcnn_direct_wgrad_##SFX##_avx2 : fcnn_direct_wgrad_##SFX)(xs, offs, K, d, F, oh, \
                                                                       ow, rstep, dw, db); \
}
FCNN_DIRECT_AT(float, f32)
FCNN_DIRECT_AT(double, f64)
#undef FCNN_DIRECT_AT

#endif
