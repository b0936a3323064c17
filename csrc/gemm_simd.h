/* An AVX2 + FMA (or AVX-512) matrix product for the conv2d forward driver (csrc/conv.pyx)
 * and the Winograd convolution (csrc/winograd.pyx): ``c = a @ b (+ bias per
 * row)``, row-major, with `a` packed once per call.
 *
 * The driver unfolds a sample into columns b (K x N, row stride ldb) and
 * multiplies the filters a (M x K) by them. A general BLAS packs both
 * operands on every call, and a convolution calls it once per sample, so it
 * packs the same filters N times over; here they are packed once (by
 * fcnn_gemm_pack_*), and b is read where the unfolding wrote it: the driver
 * gives its rows a stride of an odd number of 64-byte lines
 * (fcnn_gemm_ld_*), so that the lines of a column panel spread over every
 * set of the L1 cache.
 *
 * Blocking (as in BLIS): for each block of KC rows of b, for each tile of
 * MR rows of a, for each panel of NR columns of b, the micro-kernel keeps
 * the MR x NR tile of c in 12 vector registers over the block's KC
 * products, loading one panel row and broadcasting MR filter values per
 * step. The tile of a (KC x MR) stays in L1 across the panels, the block
 * of b (the driver keeps N small enough) in L2, and c is written row by
 * row. A partial panel of b is read through masked loads.
 *
 * Each element of c is summed in one fixed order, k = 0, 1, ..., K - 1, by
 * fused multiply-adds from +0.0 (the running sum passes through c between
 * blocks of KC), and the bias is added last: the result depends neither on
 * the thread count nor on where the tile lies. It differs from a BLAS
 * product by rounding only.
 *
 * The AVX-512 micro-kernel (chosen at run time, fcnn_gemm_level) has
 * panels twice as wide and the same order: both give the same bits. Only
 * x86-64 builds with GCC or Clang have them (fcnn_gemm_level() is 0
 * elsewhere, and the driver calls BLAS).
 */
#ifndef FASTCNN_GEMM_SIMD_H
#define FASTCNN_GEMM_SIMD_H

#include <stddef.h>
#include <string.h>

#include "simd.h"

/* Rows of a per tile; columns of b per panel (two AVX2 or two AVX-512
 * vectors); rows of b per block. */
#define FCNN_GEMM_MR 6
#define FCNN_GEMM_NR_F32 16
#define FCNN_GEMM_NR_F64 8
#define FCNN_GEMM_NR512_F32 32
#define FCNN_GEMM_NR512_F64 16
#define FCNN_GEMM_KC 256

/* Row stride for N columns of b: whole panels, an odd number of 64-byte
 * lines (both panel widths are one line). */
static ptrdiff_t fcnn_gemm_ld_f32(ptrdiff_t n) { return FCNN_GEMM_NR_F32 * (((n + 15) / 16) | 1); }
static ptrdiff_t fcnn_gemm_ld_f64(ptrdiff_t n) { return FCNN_GEMM_NR_F64 * (((n + 7) / 8) | 1); }

/* Cells of a packed M x K matrix: MR-row tiles, the last zero-padded. */
static ptrdiff_t fcnn_gemm_packed_size(ptrdiff_t m, ptrdiff_t k)
{
    return (m + FCNN_GEMM_MR - 1) / FCNN_GEMM_MR * FCNN_GEMM_MR * k;
}

/* Pack a (M x K, row stride lda): tile t holds rows t*MR ..., column by
 * column: packed[(t*K + j)*MR + r] = a[(t*MR + r)*lda + j]. */
#define FCNN_GEMM_PACK(T, sfx)                                                      \
    static void fcnn_gemm_pack_##sfx(const T *a, ptrdiff_t lda, ptrdiff_t m, ptrdiff_t k, \
                                     T *packed)                                     \
    {                                                                               \
        for (ptrdiff_t t = 0; t * FCNN_GEMM_MR < m; t++)                            \
            for (ptrdiff_t j = 0; j < k; j++)                                       \
                for (ptrdiff_t r = 0; r < FCNN_GEMM_MR; r++) {                      \
                    ptrdiff_t row = t * FCNN_GEMM_MR + r;                           \
                    packed[(t * k + j) * FCNN_GEMM_MR + r] = row < m ? a[row * lda + j] : 0; \
                }                                                                   \
    }
FCNN_GEMM_PACK(float, f32)
FCNN_GEMM_PACK(double, f64)
#undef FCNN_GEMM_PACK

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

/* 0: none (the drivers call BLAS); FCNN_SIMD_AVX2 with AVX2 and FMA;
 * FCNN_SIMD_AVX512 with AVX-512F (which has FMA), capped as every SIMD
 * kernel of the module is. */
static int fcnn_gemm_level(void)
{
    int level = fcnn_simd_level();
    return level == FCNN_SIMD_AVX2 && !__builtin_cpu_supports("fma") ? 0 : level;
}

/* Lanes below n (of a vector of LANES) set, for masked loads. */
__attribute__((target("avx2"))) static __m256i fcnn_gemm_mask_f32(ptrdiff_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 0 ? 0 : n > 8 ? 8 : n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
__attribute__((target("avx2"))) static __m256i fcnn_gemm_mask_f64(ptrdiff_t n)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n < 0 ? 0 : n > 4 ? 4 : n),
                              _mm256_setr_epi64x(0, 1, 2, 3));
}

/* The micro-kernel's kc steps, each row `p` of the b panel read as the two
 * vectors `load0` and `load1`. */
#define FCNN_GEMM_STEPS(T, V, vset1, vfmadd, load0, load1)                          \
    for (ptrdiff_t k = 0; k < kc; k++) {                                            \
        const T *p = b + k * ldb;                                                   \
        V b0 = load0, b1 = load1;                                                   \
        for (int r = 0; r < FCNN_GEMM_MR; r++) {                                    \
            V w = vset1(a[k * FCNN_GEMM_MR + r]);                                   \
            acc[r][0] = vfmadd(w, b0, acc[r][0]);                                   \
            acc[r][1] = vfmadd(w, b1, acc[r][1]);                                   \
        }                                                                           \
    }

/* The micro-kernel: c[0:rows, 0:cols] (row stride ldc) = (c if `accumulate`
 * else 0) + a_tile @ b_panel over kc steps, plus bias[0:rows] if `bias`.
 * A partial panel of b is read through masked loads, which touch none of
 * the cells past `cols`, and a tile of c with fewer columns goes through a
 * local copy; of a tile with fewer rows, only its rows are read and
 * written: only the operands' own cells are touched. */
#define FCNN_GEMM_KERNEL(T, V, sfx, NR, LANES, vload, vstore, vzero, vset1, vfmadd, vadd, \
                         vmaskload)                                                 \
    __attribute__((target("avx2,fma"))) static void fcnn_gemm_tile_##sfx(          \
        ptrdiff_t kc, const T *a, const T *b, ptrdiff_t ldb, T *c, ptrdiff_t ldc,      \
        int accumulate, const T *bias, ptrdiff_t rows, ptrdiff_t cols)              \
    {                                                                               \
        T local[FCNN_GEMM_MR * NR];                                                 \
        T *dst = c;                                                                 \
        ptrdiff_t ld = ldc;                                                         \
        if (cols < NR) {                                                            \
            dst = local, ld = NR;                                                   \
            memset(local, 0, sizeof local);                                         \
            if (accumulate)                                                         \
                for (ptrdiff_t r = 0; r < rows; r++)                                \
                    memcpy(local + r * NR, c + r * ldc, cols * sizeof(T));          \
        }                                                                           \
        V acc[FCNN_GEMM_MR][2];                                                     \
        /* the local copy has every row; c, only `rows` */                          \
        ptrdiff_t own_rows = dst == local ? FCNN_GEMM_MR : rows;                    \
        for (int r = 0; r < FCNN_GEMM_MR; r++) {                                    \
            int load = accumulate && r < own_rows;                                  \
            acc[r][0] = load ? vload(dst + r * ld) : vzero();                       \
            acc[r][1] = load ? vload(dst + r * ld + LANES) : vzero();               \
        }                                                                           \
        if (cols == NR)                                                             \
            FCNN_GEMM_STEPS(T, V, vset1, vfmadd, vload(p), vload(p + LANES))        \
        else {                                                                      \
            __m256i m0 = fcnn_gemm_mask_##sfx(cols), m1 = fcnn_gemm_mask_##sfx(cols - LANES); \
            FCNN_GEMM_STEPS(T, V, vset1, vfmadd, vmaskload(p, m0),                  \
                            vmaskload(p + LANES, m1))                               \
        }                                                                           \
        for (int r = 0; r < FCNN_GEMM_MR; r++) {                                    \
            if (bias && r < rows) {                                                 \
                V s = vset1(bias[r]);                                               \
                acc[r][0] = vadd(acc[r][0], s);                                     \
                acc[r][1] = vadd(acc[r][1], s);                                     \
            }                                                                       \
            if (r < own_rows) {                                                     \
                vstore(dst + r * ld, acc[r][0]);                                    \
                vstore(dst + r * ld + LANES, acc[r][1]);                            \
            }                                                                       \
        }                                                                           \
        if (dst == local)                                                           \
            for (ptrdiff_t r = 0; r < rows; r++)                                    \
                memcpy(c + r * ldc, local + r * NR, cols * sizeof(T));              \
    }
FCNN_GEMM_KERNEL(float, __m256, f32, FCNN_GEMM_NR_F32, 8, _mm256_loadu_ps, _mm256_storeu_ps,
                 _mm256_setzero_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps,
                 _mm256_maskload_ps)
FCNN_GEMM_KERNEL(double, __m256d, f64, FCNN_GEMM_NR_F64, 4, _mm256_loadu_pd, _mm256_storeu_pd,
                 _mm256_setzero_pd, _mm256_set1_pd, _mm256_fmadd_pd, _mm256_add_pd,
                 _mm256_maskload_pd)
#undef FCNN_GEMM_KERNEL

/* The AVX-512 micro-kernels: one tile of a (MR rows, packed alike), or two
 * consecutive ones (`a` and `a2`, 2 MR rows), by panels of b twice as wide,
 * two 512-bit vectors: 12 or 24 accumulators of the 32 registers (the
 * wider tile loads each panel row once for twice the products). A partial
 * panel is read, and a partial tile of c read and written, through mask
 * registers, which touch none of the cells they leave out (and cost nothing
 * extra, unlike AVX2's masked stores). Each element of c is summed in the
 * AVX2 kernel's order: both give the same bits. The accumulators are named
 * variables, one per row and half, not an array: GCC stores an array's
 * registers back at every step when the loop has masked loads. Each row is
 * X(row, packed tile, its row there).
 *
 * The two vectors of a panel row are read at p0 + ROW(k) and p1 + ROW(k),
 * with `cols0` and `cols1` cells, and the rows of c written at c0 and c1:
 * in the product, one row of b (ROW(k) = k * ldb, p1 = p0 + LANES, c1 = c0
 * + LANES); in the implicit convolution (fcnn_gemm_implicit_*), two
 * segments of output rows, each read from the padded input at the offset of
 * tap k (ROW(k) = offs[k]). On rows of at most half a vector, a segment
 * holds two (fcnn_gemm_implicit2r512*): its first `split` lanes are read
 * from the first row, the others from the next, `ldb` cells further than
 * their place in the vector (LOAD). */
#define FCNN_GEMM_ROWS6(X, ...)                                                     \
    X(0, a, 0, __VA_ARGS__) X(1, a, 1, __VA_ARGS__) X(2, a, 2, __VA_ARGS__)       \
    X(3, a, 3, __VA_ARGS__) X(4, a, 4, __VA_ARGS__) X(5, a, 5, __VA_ARGS__)
#define FCNN_GEMM_ROWS12(X, ...)                                                    \
    FCNN_GEMM_ROWS6(X, __VA_ARGS__)                                                 \
    X(6, a2, 0, __VA_ARGS__) X(7, a2, 1, __VA_ARGS__) X(8, a2, 2, __VA_ARGS__)    \
    X(9, a2, 3, __VA_ARGS__) X(10, a2, 4, __VA_ARGS__) X(11, a2, 5, __VA_ARGS__)
#define FCNN_GEMM_KERNEL512(name, ROWS, ROW, LOAD, T, V, LANES, M, vmaskload, vmaskmerge, \
                            vmaskstore, vzero, vset1, vfmadd, vadd)                 \
    __attribute__((target("avx512f"))) static void name(                           \
        ptrdiff_t kc, const T *a, const T *a2, const T *p0, const T *p1, ptrdiff_t ldb, \
        const ptrdiff_t *offs, T *c0, T *c1, ptrdiff_t ldc, int accumulate, const T *bias, \
        ptrdiff_t rows, ptrdiff_t cols0, ptrdiff_t cols1, ptrdiff_t split)          \
    {                                                                               \
        M m0 = (M)(cols0 >= LANES ? ~0u : (1u << cols0) - 1);                       \
        M m1 = (M)(cols1 >= LANES ? ~0u : cols1 <= 0 ? 0u : (1u << cols1) - 1);     \
        M lo = (M)(split >= LANES ? ~0u : (1u << split) - 1);                       \
        _Static_assert(FCNN_GEMM_MR == 6, "FCNN_GEMM_ROWS6 names MR rows");         \
        (void)a2, (void)ldb, (void)offs, (void)lo;                                  \
        ROWS(FCNN_GEMM_INIT512, V, vmaskload, vzero)                                \
        for (ptrdiff_t k = 0; k < kc; k++) {                                        \
            V b0 = LOAD(M, m0, p0, ROW, vmaskload, vmaskmerge);                     \
            V b1 = LOAD(M, m1, p1, ROW, vmaskload, vmaskmerge);                     \
            ROWS(FCNN_GEMM_STEP512, V, vset1, vfmadd)                               \
        }                                                                           \
        ROWS(FCNN_GEMM_STORE512, vmaskstore, vset1, vadd)                           \
    }
#define FCNN_GEMM_LOAD_ONE(M, m, p, ROW, vmaskload, vmaskmerge) vmaskload(m, (p) + (ROW))
#define FCNN_GEMM_LOAD_TWO(M, m, p, ROW, vmaskload, vmaskmerge)                     \
    vmaskmerge(vmaskload((M)(m & lo), (p) + (ROW)), (M)(m & ~lo), (p) + ldb + (ROW))
#define FCNN_GEMM_INIT512(r, tile, tr, V, vmaskload, vzero)                         \
    V acc##r##0 = accumulate && r < rows ? vmaskload(m0, c0 + r * ldc) : vzero();   \
    V acc##r##1 = accumulate && r < rows ? vmaskload(m1, c1 + r * ldc) : vzero();
#define FCNN_GEMM_STEP512(r, tile, tr, V, vset1, vfmadd)                            \
    {                                                                               \
        V w = vset1(tile[k * FCNN_GEMM_MR + tr]);                                   \
        acc##r##0 = vfmadd(w, b0, acc##r##0);                                       \
        acc##r##1 = vfmadd(w, b1, acc##r##1);                                       \
    }
#define FCNN_GEMM_STORE512(r, tile, tr, vmaskstore, vset1, vadd)                    \
    if (r < rows) {                                                                 \
        if (bias) {                                                                 \
            acc##r##0 = vadd(acc##r##0, vset1(bias[r]));                            \
            acc##r##1 = vadd(acc##r##1, vset1(bias[r]));                            \
        }                                                                           \
        vmaskstore(c0 + r * ldc, m0, acc##r##0);                                    \
        vmaskstore(c1 + r * ldc, m1, acc##r##1);                                    \
    }
#define FCNN_GEMM_KERNELS512(T, V, sfx, LANES, M, ...)                              \
    FCNN_GEMM_KERNEL512(fcnn_gemm_tile512_##sfx, FCNN_GEMM_ROWS6, k * ldb, FCNN_GEMM_LOAD_ONE, \
                        T, V, LANES, M, __VA_ARGS__)                                \
    FCNN_GEMM_KERNEL512(fcnn_gemm_tile512x2_##sfx, FCNN_GEMM_ROWS12, k * ldb,       \
                        FCNN_GEMM_LOAD_ONE, T, V, LANES, M, __VA_ARGS__)            \
    FCNN_GEMM_KERNEL512(fcnn_gemm_implicit512_##sfx, FCNN_GEMM_ROWS6, offs[k],      \
                        FCNN_GEMM_LOAD_ONE, T, V, LANES, M, __VA_ARGS__)            \
    FCNN_GEMM_KERNEL512(fcnn_gemm_implicit512x2_##sfx, FCNN_GEMM_ROWS12, offs[k],   \
                        FCNN_GEMM_LOAD_ONE, T, V, LANES, M, __VA_ARGS__)            \
    FCNN_GEMM_KERNEL512(fcnn_gemm_implicit2r512_##sfx, FCNN_GEMM_ROWS6, offs[k],    \
                        FCNN_GEMM_LOAD_TWO, T, V, LANES, M, __VA_ARGS__)            \
    FCNN_GEMM_KERNEL512(fcnn_gemm_implicit2r512x2_##sfx, FCNN_GEMM_ROWS12, offs[k], \
                        FCNN_GEMM_LOAD_TWO, T, V, LANES, M, __VA_ARGS__)
FCNN_GEMM_KERNELS512(float, __m512, f32, 16, __mmask16, _mm512_maskz_loadu_ps,
                     _mm512_mask_loadu_ps, _mm512_mask_storeu_ps, _mm512_setzero_ps,
                     _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps)
FCNN_GEMM_KERNELS512(double, __m512d, f64, 8, __mmask8, _mm512_maskz_loadu_pd,
                     _mm512_mask_loadu_pd, _mm512_mask_storeu_pd, _mm512_setzero_pd,
                     _mm512_set1_pd, _mm512_fmadd_pd, _mm512_add_pd)
#undef FCNN_GEMM_KERNELS512
#undef FCNN_GEMM_STORE512
#undef FCNN_GEMM_STEP512
#undef FCNN_GEMM_INIT512
#undef FCNN_GEMM_ROWS12
#undef FCNN_GEMM_ROWS6
#undef FCNN_GEMM_KERNEL512
#undef FCNN_GEMM_LOAD_ONE
#undef FCNN_GEMM_LOAD_TWO
#undef FCNN_GEMM_STEPS

/* c (M x N, row stride ldc) = a @ b + bias (bias per row; NULL for none),
 * with `packed` = fcnn_gemm_pack of a (M x K) and b (K x N, row stride ldb);
 * K >= 1. The micro-kernel is the widest that fcnn_gemm_level allows (with
 * AVX-512, two tiles of a at once while two are left), but for a last
 * panel that AVX2's covers (half the work would be masked off). */
#define FCNN_GEMM(T, sfx, NR, NR512)                                                \
    static void fcnn_gemm_##sfx(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *packed, \
                                const T *b, ptrdiff_t ldb, const T *bias, T *c, ptrdiff_t ldc) \
    {                                                                               \
        int wide = fcnn_gemm_level() == FCNN_SIMD_AVX512;                           \
        ptrdiff_t nr = wide ? NR512 : NR, half = NR512 / 2; /* a 512-bit vector */  \
        for (ptrdiff_t k0 = 0; k0 < k; k0 += FCNN_GEMM_KC) {                        \
            ptrdiff_t kc = k - k0 < FCNN_GEMM_KC ? k - k0 : FCNN_GEMM_KC;           \
            int last = k0 + kc == k;                                                \
            ptrdiff_t mr;                                                           \
            for (ptrdiff_t i = 0; i < m; i += mr) {                                 \
                const T *a = packed + (i * k + k0 * FCNN_GEMM_MR);                  \
                mr = wide && m - i > FCNN_GEMM_MR ? 2 * FCNN_GEMM_MR : FCNN_GEMM_MR; \
                for (ptrdiff_t j = 0; j < n; j += nr) {                             \
                    ptrdiff_t rows = m - i < mr ? m - i : mr, cols = n - j < nr ? n - j : nr; \
                    const T *bj = b + k0 * ldb + j, *bi = last && bias ? bias + i : NULL; \
                    if (!wide || cols <= NR)                                        \
                        for (ptrdiff_t t = 0; t < rows; t += FCNN_GEMM_MR)          \
                            fcnn_gemm_tile_##sfx(kc, a + t * k, bj, ldb, c + (i + t) * ldc + j, \
                                                 ldc, k0 > 0, bi ? bi + t : NULL,     \
                                                 rows - t < FCNN_GEMM_MR ? rows - t : FCNN_GEMM_MR, \
                                                 cols);                             \
                    else                                                            \
                        (mr > FCNN_GEMM_MR ? fcnn_gemm_tile512x2_##sfx : fcnn_gemm_tile512_##sfx)( \
                            kc, a, a + FCNN_GEMM_MR * k, bj, bj + half, ldb, NULL,          \
                            c + i * ldc + j, c + i * ldc + j + half, ldc, k0 > 0, bi, rows, \
                            cols < half ? cols : half, cols - half, 0);                     \
                }                                                                   \
            }                                                                       \
        }                                                                           \
    }
FCNN_GEMM(float, f32, FCNN_GEMM_NR_F32, FCNN_GEMM_NR512_F32)
FCNN_GEMM(double, f64, FCNN_GEMM_NR_F64, FCNN_GEMM_NR512_F64)
#undef FCNN_GEMM

/* The forward of a convolution without its unfolded columns (AVX-512 only,
 * fcnn_gemm_level() == FCNN_SIMD_AVX512): out (M filters x `rows` output
 * rows of `ow`, filter rows ldc apart) = packed filters (fcnn_gemm_pack of
 * M x K) times the taps of a zero-padded input at s, output row y's data at
 * s + y * rstep and tap k at offs[k] from there (csrc/padded.pxd's scratch
 * layout), + bias. The output rows go in segments of a vector (of one row,
 * or of two rows of at most half a vector), two segments at a time, each
 * read where the padded input holds it: the products of the unfolded
 * columns, without writing them. Each output is summed tap by tap from
 * +0.0 by fused multiply-adds and the bias added last, as fcnn_gemm_* sums
 * it: the same bits. */
/* Segment g of `rows` output rows of ow: its first row y, column x and
 * cells (see fcnn_gemm_implicit_*). */
static inline void fcnn_gemm_segment(ptrdiff_t g, int two, ptrdiff_t per_row, ptrdiff_t rows,
                                     ptrdiff_t ow, ptrdiff_t lanes, ptrdiff_t *y, ptrdiff_t *x,
                                     ptrdiff_t *cols)
{
    if (two) {
        *y = 2 * g, *x = 0;
        *cols = (rows - *y < 2 ? rows - *y : 2) * ow;
    } else {
        *y = g / per_row, *x = g % per_row * lanes;
        *cols = ow - *x < lanes ? ow - *x : lanes;
    }
}

#define FCNN_GEMM_IMPLICIT(T, sfx, LANES)                                           \
    static void fcnn_gemm_implicit_##sfx(ptrdiff_t m, ptrdiff_t k, const T *packed,    \
                                         const ptrdiff_t *offs, const T *s, ptrdiff_t rstep, \
                                         ptrdiff_t rows, ptrdiff_t ow, const T *bias, T *out, \
                                         ptrdiff_t ldc)                             \
    {                                                                               \
        int two = 2 * ow <= LANES;                                                  \
        ptrdiff_t per_row = two ? 1 : (ow + LANES - 1) / LANES;                     \
        ptrdiff_t segs = two ? (rows + 1) / 2 : rows * per_row;                     \
        for (ptrdiff_t g = 0; g < segs; g += 2) {                                   \
            /* segment g, and g + 1 if there is one (else nothing is read nor written) */ \
            ptrdiff_t y0, x0, cols0, y1, x1, cols1;                                 \
            fcnn_gemm_segment(g, two, per_row, rows, ow, LANES, &y0, &x0, &cols0);  \
            fcnn_gemm_segment(g + 1 < segs ? g + 1 : g, two, per_row, rows, ow, LANES, &y1, \
                              &x1, &cols1);                                         \
            cols1 = g + 1 < segs ? cols1 : 0;                                       \
            for (ptrdiff_t i = 0; i < m; i += 2 * FCNN_GEMM_MR) {                   \
                const T *a = packed + i * k;                                        \
                int wide = m - i > FCNN_GEMM_MR;                                    \
                (two ? (wide ? fcnn_gemm_implicit2r512x2_##sfx : fcnn_gemm_implicit2r512_##sfx) \
                     : (wide ? fcnn_gemm_implicit512x2_##sfx : fcnn_gemm_implicit512_##sfx))( \
                    k, a, a + FCNN_GEMM_MR * k, s + y0 * rstep + x0, s + y1 * rstep + x1, \
                    two ? rstep - ow : 0, offs, out + i * ldc + y0 * ow + x0,         \
                    out + i * ldc + y1 * ow + x1, ldc, 0, bias ? bias + i : NULL,     \
                    m - i < 2 * FCNN_GEMM_MR ? m - i : 2 * FCNN_GEMM_MR, cols0, cols1, \
                    two ? ow : 0);                                                  \
            }                                                                       \
        }                                                                           \
    }
FCNN_GEMM_IMPLICIT(float, f32, 16)
FCNN_GEMM_IMPLICIT(double, f64, 8)
#undef FCNN_GEMM_IMPLICIT

/* The weight gradient of a convolution without its unfolded columns
 * (AVX-512 only, as fcnn_gemm_implicit_*), transposed: dwt (K taps x Fp
 * filters, row stride Fp) (+)= the sum over the output cells p of `rows`
 * output rows of `ow` of tap k's value at p in a zero-padded input
 * (csrc/padded.pxd's scratch: output row y's data at s + y * rstep, tap k
 * at offs[k] from there) times dt[p] (cell p's output gradient for the Fp
 * filters, Fp a whole number of vectors, rows Fp apart).
 *
 * It is the product of the unfolded columns (K x P) by dt (P x Fp), the
 * columns' values broadcast where the padded input holds them: a tile of
 * taps x a panel of up to 4 vectors of filters keeps its sums in registers
 * over all cells (6 taps x 4 vectors, or 12 taps x 2 or x 1), each cell
 * loading the panel's vectors once for every tap. Each sum runs over the
 * cells in order (rows, then columns) by fused multiply-adds, from +0.0 or
 * from dwt's value: called on the bands of a chunk's samples in turn, the
 * sums depend on the sizes alone, not on the thread count. They differ from
 * a GEMM of the unfolded columns by rounding. Taps past the last in a tile
 * repeat it and are not stored. */
#define FCNN_WGRAD_T6(X, ...)                                                      \
    X(0, __VA_ARGS__) X(1, __VA_ARGS__) X(2, __VA_ARGS__) X(3, __VA_ARGS__)       \
    X(4, __VA_ARGS__) X(5, __VA_ARGS__)
#define FCNN_WGRAD_T12(X, ...)                                                     \
    FCNN_WGRAD_T6(X, __VA_ARGS__) X(6, __VA_ARGS__) X(7, __VA_ARGS__)             \
    X(8, __VA_ARGS__) X(9, __VA_ARGS__) X(10, __VA_ARGS__) X(11, __VA_ARGS__)
#define FCNN_WGRAD_V1(X, t, ...) X(t, 0, __VA_ARGS__)
#define FCNN_WGRAD_V2(X, t, ...) X(t, 0, __VA_ARGS__) X(t, 1, __VA_ARGS__)
#define FCNN_WGRAD_V4(X, t, ...)                                                   \
    X(t, 0, __VA_ARGS__) X(t, 1, __VA_ARGS__) X(t, 2, __VA_ARGS__) X(t, 3, __VA_ARGS__)
#define FCNN_WGRAD_INIT(t, v, V, LANES, vload, vzero)                              \
    V acc##t##_##v = accumulate && t < taps ? vload(c + t * ldc + v * LANES) : vzero();
#define FCNN_WGRAD_INITS(t, VECS, ...) ptrdiff_t o##t = o[t]; VECS(FCNN_WGRAD_INIT, t, __VA_ARGS__)
#define FCNN_WGRAD_LOAD(_, v, V, LANES, vload) V d##v = vload(d + v * LANES);
#define FCNN_WGRAD_FMA(t, v, vfmadd) acc##t##_##v = vfmadd(b, d##v, acc##t##_##v);
#define FCNN_WGRAD_STEP(t, VECS, V, vset1, vfmadd)                                 \
    {                                                                              \
        V b = vset1(r[o##t]);                                                      \
        VECS(FCNN_WGRAD_FMA, t, vfmadd)                                            \
    }
#define FCNN_WGRAD_STORE(t, v, LANES, vstore)                                      \
    if (t < taps) vstore(c + t * ldc + v * LANES, acc##t##_##v);
#define FCNN_WGRAD_STORES(t, VECS, ...) VECS(FCNN_WGRAD_STORE, t, __VA_ARGS__)
#define FCNN_WGRAD_KERNEL(name, TAPS, VECS, NV, T, V, LANES, vload, vstore, vzero, vset1, \
                          vfmadd)                                                   \
    __attribute__((target("avx512f"))) static void name(                           \
        const T *dt, ptrdiff_t ldt, const T *s, const ptrdiff_t *o, ptrdiff_t taps,   \
        ptrdiff_t rstep, ptrdiff_t rows, ptrdiff_t ow, T *c, ptrdiff_t ldc, int accumulate) \
    {                                                                               \
        TAPS(FCNN_WGRAD_INITS, VECS, V, LANES, vload, vzero)                        \
        for (ptrdiff_t y = 0; y < rows; y++) {                                      \
            const T *r = s + y * rstep, *d = dt + y * ow * ldt;                     \
            for (ptrdiff_t x = 0; x < ow; x++, r++, d += ldt) {                     \
                FCNN_WGRAD_V##NV(FCNN_WGRAD_LOAD, _, V, LANES, vload)               \
                TAPS(FCNN_WGRAD_STEP, VECS, V, vset1, vfmadd)                       \
            }                                                                       \
        }                                                                           \
        TAPS(FCNN_WGRAD_STORES, VECS, LANES, vstore)                                \
    }
#define FCNN_WGRAD_KERNELS(T, V, sfx, LANES, ...)                                   \
    FCNN_WGRAD_KERNEL(fcnn_wgrad_6x4_##sfx, FCNN_WGRAD_T6, FCNN_WGRAD_V4, 4, T, V, LANES, \
                      __VA_ARGS__)                                                  \
    FCNN_WGRAD_KERNEL(fcnn_wgrad_12x2_##sfx, FCNN_WGRAD_T12, FCNN_WGRAD_V2, 2, T, V, LANES, \
                      __VA_ARGS__)                                                  \
    FCNN_WGRAD_KERNEL(fcnn_wgrad_12x1_##sfx, FCNN_WGRAD_T12, FCNN_WGRAD_V1, 1, T, V, LANES, \
                      __VA_ARGS__)                                                  \
    static void fcnn_wgrad_implicit_##sfx(ptrdiff_t K, ptrdiff_t Fp, const T *dt,       \
                                          const T *s, const ptrdiff_t *offs,          \
                                          ptrdiff_t rstep, ptrdiff_t rows, ptrdiff_t ow, \
                                          T *dwt, int accumulate)                     \
    {                                                                               \
        ptrdiff_t o[12];                                                            \
        for (ptrdiff_t j = 0, nv; j < Fp; j += nv * LANES) {                        \
            nv = (Fp - j) / LANES >= 4 ? 4 : (Fp - j) / LANES >= 2 ? 2 : 1;         \
            ptrdiff_t per = nv == 4 ? 6 : 12;                                       \
            for (ptrdiff_t k0 = 0; k0 < K; k0 += per) {                             \
                for (ptrdiff_t t = 0; t < per; t++)                                 \
                    o[t] = offs[k0 + t < K ? k0 + t : K - 1];                       \
                ptrdiff_t taps = K - k0 < per ? K - k0 : per;                       \
                (nv == 4 ? fcnn_wgrad_6x4_##sfx : nv == 2 ? fcnn_wgrad_12x2_##sfx   \
                                                          : fcnn_wgrad_12x1_##sfx)( \
                    dt + j, Fp, s, o, taps, rstep, rows, ow, dwt + k0 * Fp + j, Fp, accumulate); \
            }                                                                       \
        }                                                                           \
    }
FCNN_WGRAD_KERNELS(float, __m512, f32, 16, FCNN_AVX512_OPS_F32)
FCNN_WGRAD_KERNELS(double, __m512d, f64, 8, FCNN_AVX512_OPS_F64)
#undef FCNN_WGRAD_KERNELS
#undef FCNN_WGRAD_KERNEL
#undef FCNN_WGRAD_STORES
#undef FCNN_WGRAD_STORE
#undef FCNN_WGRAD_STEP
#undef FCNN_WGRAD_FMA
#undef FCNN_WGRAD_LOAD
#undef FCNN_WGRAD_INITS
#undef FCNN_WGRAD_INIT
#undef FCNN_WGRAD_V4
#undef FCNN_WGRAD_V2
#undef FCNN_WGRAD_V1
#undef FCNN_WGRAD_T12
#undef FCNN_WGRAD_T6

/* dst[j*ldd + i] = src[i*lds + j] for i < rows, j < cols (AVX-512 only): each
 * row of dst, a vector of rows at a time, gathered from a column of src
 * (the weight gradient's transposes of dout and of its result). */
#define FCNN_TRANSPOSE512(T, sfx, LANES, M, IDX, lanes, vgather, vmaskstore, vzero)       \
    __attribute__((target("avx512f"))) static void fcnn_transpose_##sfx(           \
        const T *src, ptrdiff_t lds, ptrdiff_t rows, ptrdiff_t cols, T *dst, ptrdiff_t ldd) \
    {                                                                               \
        const IDX index = lanes(0, (int)lds);                                       \
        for (ptrdiff_t i0 = 0; i0 < rows; i0 += LANES) {                            \
            M m = (M)(rows - i0 >= LANES ? ~0u : (1u << (rows - i0)) - 1);          \
            for (ptrdiff_t j = 0; j < cols; j++)                                    \
                vmaskstore(dst + j * ldd + i0, m,                                   \
                           vgather(vzero(), m, index, src + i0 * lds + j, sizeof(T))); \
        }                                                                           \
    }
FCNN_TRANSPOSE512(float, f32, 16, __mmask16, __m512i, fcnn_lanes16, _mm512_mask_i32gather_ps,
                  _mm512_mask_storeu_ps, _mm512_setzero_ps)
FCNN_TRANSPOSE512(double, f64, 8, __mmask8, __m256i, fcnn_lanes8, _mm512_mask_i32gather_pd,
                  _mm512_mask_storeu_pd, _mm512_setzero_pd)
#undef FCNN_TRANSPOSE512

#else

static int fcnn_gemm_level(void) { return 0; }  /* the drivers call BLAS */
static void fcnn_gemm_f32(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *packed,
                          const float *b, ptrdiff_t ldb, const float *bias, float *c,
                          ptrdiff_t ldc) {}
static void fcnn_gemm_f64(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const double *packed,
                          const double *b, ptrdiff_t ldb, const double *bias, double *c,
                          ptrdiff_t ldc) {}
static void fcnn_gemm_implicit_f32(ptrdiff_t m, ptrdiff_t k, const float *packed,
                                   const ptrdiff_t *offs, const float *s, ptrdiff_t rstep,
                                   ptrdiff_t rows, ptrdiff_t ow, const float *bias, float *out,
                                   ptrdiff_t ldc) {}
static void fcnn_gemm_implicit_f64(ptrdiff_t m, ptrdiff_t k, const double *packed,
                                   const ptrdiff_t *offs, const double *s, ptrdiff_t rstep,
                                   ptrdiff_t rows, ptrdiff_t ow, const double *bias, double *out,
                                   ptrdiff_t ldc) {}

static void fcnn_wgrad_implicit_f32(ptrdiff_t K, ptrdiff_t Fp, const float *dt, const float *s,
                                    const ptrdiff_t *offs, ptrdiff_t rstep, ptrdiff_t rows,
                                    ptrdiff_t ow, float *dwt, int accumulate) {}
static void fcnn_transpose_f32(const float *src, ptrdiff_t lds, ptrdiff_t rows, ptrdiff_t cols,
                               float *dst, ptrdiff_t ldd) {}
static void fcnn_transpose_f64(const double *src, ptrdiff_t lds, ptrdiff_t rows, ptrdiff_t cols,
                               double *dst, ptrdiff_t ldd) {}
static void fcnn_wgrad_implicit_f64(ptrdiff_t K, ptrdiff_t Fp, const double *dt, const double *s,
                                    const ptrdiff_t *offs, ptrdiff_t rstep, ptrdiff_t rows,
                                    ptrdiff_t ow, double *dwt, int accumulate) {}

#endif
#endif
