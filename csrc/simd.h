/* What the compiled kernels share about instruction sets: the level picked
 * at run time (csrc/pool_simd.h has kernels for each), and non-temporal
 * copies for outputs much larger than the caches (csrc/pool.pyx and
 * csrc/unfold.pyx build such an output piece by piece in a small per-thread
 * scratch that stays in cache, and stream each piece out).
 *
 * Only x86-64 builds with GCC or Clang have them; elsewhere
 * fcnn_simd_level() is 0 and FCNN_HAVE_STREAM is 0 (fcnn_stream is then
 * memcpy, and the kernels write their outputs directly instead). Each
 * extension module that includes this header has its own cap. */
#ifndef FASTCNN_SIMD_H
#define FASTCNN_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

/* Instruction sets, best last. fcnn_simd_cap lowers the one used (tests run
 * every level a machine has). */
enum { FCNN_SIMD_NONE = 0, FCNN_SIMD_AVX2 = 1, FCNN_SIMD_AVX512 = 2 };
static int fcnn_simd_cap = FCNN_SIMD_AVX512;

static int fcnn_simd_level(void)
{
    int level = __builtin_cpu_supports("avx512f") ? FCNN_SIMD_AVX512
              : __builtin_cpu_supports("avx2")    ? FCNN_SIMD_AVX2
                                                  : FCNN_SIMD_NONE;
    return level < fcnn_simd_cap ? level : fcnn_simd_cap;
}

/* Set the highest level used; returns the previous cap. */
static int fcnn_set_simd_cap(int cap)
{
    int previous = fcnn_simd_cap;
    fcnn_simd_cap = cap;
    return previous;
}

#define FCNN_HAVE_STREAM 1

/* The AVX-512 operations that the kernel-generating macros of several
 * headers take per element type, in this order: unaligned load, unaligned
 * store, zero, broadcast, fused multiply-add. */
#define FCNN_AVX512_OPS_F32                                                         \
    _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps, _mm512_set1_ps, _mm512_fmadd_ps
#define FCNN_AVX512_OPS_F64                                                         \
    _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd, _mm512_set1_pd, _mm512_fmadd_pd

/* Index vectors whose lane i holds start + i * step: the lanes a permutation
 * picks, or the offsets a gather reads (16 or 8 of 32 bits, 8 of 64). */
__attribute__((target("avx512f"))) static inline __m512i fcnn_lanes16(int start, int step)
{
    int lanes[16];
    for (int i = 0; i < 16; i++)
        lanes[i] = start + i * step;
    return _mm512_loadu_si512((const void *)lanes);
}
__attribute__((target("avx2"))) static inline __m256i fcnn_lanes8(int start, int step)
{
    int lanes[8];
    for (int i = 0; i < 8; i++)
        lanes[i] = start + i * step;
    return _mm256_loadu_si256((const __m256i *)lanes);
}
__attribute__((target("avx512f"))) static inline __m512i fcnn_lanes8x64(long long start,
                                                                       long long step)
{
    long long lanes[8];
    for (int i = 0; i < 8; i++)
        lanes[i] = start + i * step;
    return _mm512_loadu_si512((const void *)lanes);
}

/* Lanes [lo, hi) of a mask of `n` lanes, both clipped to [0, n]. */
static inline unsigned long long fcnn_lane_mask(ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t n)
{
    lo = lo < 0 ? 0 : lo > n ? n : lo;
    hi = hi < lo ? lo : hi > n ? n : hi;
    return ((1ULL << hi) - 1) & ~((1ULL << lo) - 1);
}

/* One input row at src (W cells) into its sw column phases at d, PW cells
 * each: phase q's cell m holds input column m*sw + q - pw, or +0.0 outside
 * [0, W). AVX-512 masked loads: a lane outside [0, W) loads +0.0, so a row
 * takes no memset and no scalar loop, and the two phases of stride 2 are
 * the even and odd lanes of the same two vectors. Strides 1 and 2 only
 * (the padded copies of csrc/direct_simd.h, which the direct and the
 * implicit convolutions read). */

#define FCNN_PAD_ROW512(T, SFX, L, V, MASK, vmaskz_load, vmask_store, vpermutex2var, lanes) \
__attribute__((target("avx512f"))) static inline void fcnn_pad_row512_##SFX(           \
    const T *src, ptrdiff_t W, ptrdiff_t sw, ptrdiff_t pw, ptrdiff_t PW, T *d)             \
{                                                                                          \
    if (sw == 1) {                                                                         \
        for (ptrdiff_t m = 0; m < PW; m += L) {                                            \
            /* cell m + t holds input column m + t - pw */                                 \
            MASK in = (MASK)fcnn_lane_mask(pw - m, W + pw - m, L);                             \
            vmask_store(d + m, (MASK)fcnn_lane_mask(0, PW - m, L),                             \
                        vmaskz_load(in, src + (m - pw)));                                  \
        }                                                                                  \
        return;                                                                            \
    }                                                                                      \
    const __m512i even = lanes(0, 2), odd = lanes(1, 2);                                   \
    for (ptrdiff_t m = 0; m < PW; m += L) {                                                \
        /* phase q's cell m + t holds input column 2*(m + t) + q - pw: lanes of            \
         * the 2L columns from 2m - pw */                                                  \
        ptrdiff_t a = 2 * m - pw;                                                          \
        V lo = vmaskz_load((MASK)fcnn_lane_mask(-a, W - a, L), src + a);                       \
        V hi = vmaskz_load((MASK)fcnn_lane_mask(-a - L, W - a - L, L), src + a + L);           \
        MASK out = (MASK)fcnn_lane_mask(0, PW - m, L);                                         \
        vmask_store(d + m, out, vpermutex2var(lo, even, hi));                              \
        vmask_store(d + PW + m, out, vpermutex2var(lo, odd, hi));                          \
    }                                                                                      \
}
FCNN_PAD_ROW512(float, f32, 16, __m512, __mmask16, _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps,
                _mm512_permutex2var_ps, fcnn_lanes16)
FCNN_PAD_ROW512(double, f64, 8, __m512d, __mmask8, _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd,
                _mm512_permutex2var_pd, fcnn_lanes8x64)
#undef FCNN_PAD_ROW512

/* One 64-byte line of the non-temporal copy, per instruction set. (Wider
 * stores are faster, though memory is what limits all three: a 231 MB
 * output was written at 17, 21 and 23 GB/s with 16-, 32- and 64-byte
 * stores on a Xeon with AVX-512, against 9.5 GB/s for memcpy.) */
static inline void fcnn_stream_line_sse2(char *d, const char *s)
{
    for (int k = 0; k < 64; k += 16)
        _mm_stream_si128((__m128i *)(d + k), _mm_loadu_si128((const __m128i *)(s + k)));
}

__attribute__((target("avx2"))) static inline void fcnn_stream_line_avx2(char *d, const char *s)
{
    _mm256_stream_si256((__m256i *)d, _mm256_loadu_si256((const __m256i *)s));
    _mm256_stream_si256((__m256i *)(d + 32), _mm256_loadu_si256((const __m256i *)(s + 32)));
}

__attribute__((target("avx512f"))) static inline void fcnn_stream_line_avx512(char *d, const char *s)
{
    _mm512_stream_si512((void *)d, _mm512_loadu_si512((const void *)s));
}

#define FCNN_STREAM_LINES(isa, target)                                          \
    target static void fcnn_stream_lines_##isa(char *d, const char *s, ptrdiff_t lines) \
    {                                                                           \
        for (ptrdiff_t k = 0; k < lines; k++)                                   \
            fcnn_stream_line_##isa(d + 64 * k, s + 64 * k);                     \
    }
FCNN_STREAM_LINES(sse2, )
FCNN_STREAM_LINES(avx2, __attribute__((target("avx2"))))
FCNN_STREAM_LINES(avx512, __attribute__((target("avx512f"))))
#undef FCNN_STREAM_LINES

/* Copy `nbytes` from s to dst; the whole 64-byte lines of dst with
 * non-temporal stores, which write a line without reading it first (a
 * plain store reads every line it misses) and bypass the caches. The
 * partial lines at either end are copied plainly: a line written only in
 * part by non-temporal stores would cost memory a read of the rest. */
static void fcnn_stream(void *dst, const void *s, ptrdiff_t nbytes)
{
    char *d = (char *)dst;
    const char *src = (const char *)s;
    ptrdiff_t head = (ptrdiff_t)((64 - ((uintptr_t)d & 63)) & 63), lines;
    head = head < nbytes ? head : nbytes;
    lines = (nbytes - head) / 64;
    memcpy(d, src, (size_t)head);
    switch (fcnn_simd_level()) {
    case FCNN_SIMD_AVX512: fcnn_stream_lines_avx512(d + head, src + head, lines); break;
    case FCNN_SIMD_AVX2:   fcnn_stream_lines_avx2(d + head, src + head, lines); break;
    default:               fcnn_stream_lines_sse2(d + head, src + head, lines); break;
    }
    head += 64 * lines;
    memcpy(d + head, src + head, (size_t)(nbytes - head));
}

/* Order the non-temporal stores before whatever follows: every thread that
 * streamed calls it once before its share of the work counts as done. */
static void fcnn_stream_fence(void) { _mm_sfence(); }

#else

static int fcnn_simd_level(void) { return 0; }
static int fcnn_set_simd_cap(int cap) { return cap; }
#define FCNN_HAVE_STREAM 0
#define FCNN_PAD_ROW_NONE(T, SFX)                                                      \
static inline void fcnn_pad_row512_##SFX(const T *src, ptrdiff_t W, ptrdiff_t sw,    \
                                  ptrdiff_t pw, ptrdiff_t PW, T *d) {}
FCNN_PAD_ROW_NONE(float, f32)
FCNN_PAD_ROW_NONE(double, f64)
#undef FCNN_PAD_ROW_NONE
#define fcnn_stream(dst, s, nbytes) memcpy(dst, s, (size_t)(nbytes))
#define fcnn_stream_fence() ((void)0)

#endif
#endif
