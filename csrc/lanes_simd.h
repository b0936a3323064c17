/* The forward of a convolution with the filters in the vector lanes (AVX-512
 * only, as fcnn_gemm_implicit_*; csrc/conv.pyx chooses it by shape).
 *
 * The implicit product (gemm_simd.h) puts output cells of one row in the
 * lanes: a row of 10 cells fills 10 of 16 lanes, and the filters go in
 * tiles of 6. Here a vector holds 16 filters (8 in float64) of one output
 * cell, and each tap's input value is broadcast from memory: a tile of
 * CELLS consecutive cells x VECS vectors of filters keeps its sums in
 * registers over all taps (24 x 1, 12 x 2, 8 x 3 or 6 x 4), loading VECS
 * filter vectors and CELLS input values per tap. Strides cost nothing: the
 * input is copied into its phases (fcnn_lanes_pad_*), where the cells of an
 * output row, and the rows one after the other, read consecutive values.
 *
 * Phase (a, b) of channel c holds the input cells (i*sh + a - ph, j*sw + b -
 * pw), zero outside the image, for i < Hph and j < PWc: an output cell
 * (y, x) reads tap (c, ky, kx) at flat index (y + di)*PWc + x + dj of the
 * phase (a, b) = (ky*dh % sh, kx*dw % sw), di = ky*dh / sh, dj = kx*dw /
 * sw. So cell j = y*PWc + x reads every tap at j + offs[k]: the tiles run
 * over the flat range of oh*PWc cells, of which the ow of each row are
 * outputs and the rest (x >= ow) are computed and dropped.
 *
 * Each output is summed tap by tap, k = 0, 1, ..., K-1, by fused
 * multiply-adds from +0.0, and the bias is added last, as
 * fcnn_gemm_implicit_* and fcnn_gemm_* sum it: the same bits. */
#ifndef FASTCNN_LANES_SIMD_H
#define FASTCNN_LANES_SIMD_H

#include <stddef.h>
#include <string.h>

#include "simd.h"

/* Bytes of filter rows that a block of taps reads (see fcnn_lanes_conv_*). */
#define FCNN_LANES_BLOCK (24 << 10)

/* Cells that a tile (24 x 1 the widest) may compute past the last output
 * row's. */
#define FCNN_LANES_SLACK 24

/* Cells of a sample's phases: C*sh*sw planes of Hph x PWc cells, then zeros
 * for the taps of the cells computed past the last output (up to PWc - ow
 * + FCNN_LANES_SLACK - 2 further). */
static ptrdiff_t fcnn_lanes_phases(ptrdiff_t planes, ptrdiff_t Hph, ptrdiff_t PWc)
{
    return planes * Hph * PWc + PWc + FCNN_LANES_SLACK;
}

/* The phases of a sample's C planes (H x W, at x) into s (see above and
 * fcnn_lanes_phases). */
#define FCNN_LANES_PAD(T, sfx)                                                      \
    static void fcnn_lanes_pad_##sfx(const T *x, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,   \
                                     ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t ph, ptrdiff_t pw, \
                                     ptrdiff_t Hph, ptrdiff_t PWc, T *s)            \
    {                                                                               \
        if (sh == 1 && sw == 1 && ph == 0 && pw == 0 && Hph == H && PWc == W) {     \
            memcpy(s, x, C * H * W * sizeof(T)); /* the phase is the image */      \
            s += C * H * W;                                                         \
        } else                                                                      \
            for (ptrdiff_t c = 0; c < C; c++)                                       \
                for (ptrdiff_t a = 0; a < sh; a++)                                  \
                    for (ptrdiff_t b = 0; b < sw; b++) {                            \
                        /* the phase's columns j inside the image: 0 <= j*sw + b - pw < W */ \
                        ptrdiff_t lo = pw - b > 0 ? (pw - b + sw - 1) / sw : 0;     \
                        ptrdiff_t hi = (W + pw - b + sw - 1) / sw;                  \
                        lo = lo < PWc ? lo : PWc;                                   \
                        hi = hi < lo ? lo : hi < PWc ? hi : PWc;                    \
                        for (ptrdiff_t i = 0; i < Hph; i++, s += PWc) {             \
                            ptrdiff_t r = i * sh + a - ph, j = 0;                   \
                            if (r >= 0 && r < H) {                                  \
                                const T *row = x + (c * H + r) * W;                 \
                                for (; j < lo; j++)                                 \
                                    s[j] = 0;                                       \
                                for (; j < hi; j++)                                 \
                                    s[j] = row[j * sw + b - pw];                    \
                            }                                                       \
                            for (; j < PWc; j++)                                    \
                                s[j] = 0;                                           \
                        }                                                           \
                    }                                                               \
        for (ptrdiff_t j = 0; j < PWc + FCNN_LANES_SLACK; j++)                      \
            s[j] = 0;                                                               \
    }
FCNN_LANES_PAD(float, f32)
FCNN_LANES_PAD(double, f64)
#undef FCNN_LANES_PAD

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

/* buf[r*ldb + v*LANES + l] = (its value if `accumulate`, else 0) + the sum
 * over k < K of s[offs[k] + r] * wt[k*ldw + v*LANES + l], for the tile's
 * CELLS cells and VECS vectors. */
#define FCNN_LANES_TILE(T, V, sfx, LANES, CELLS, VECS, vload, vstore, vzero, vset1, vfmadd) \
    __attribute__((target("avx512f"))) static void fcnn_lanes_tile##CELLS##x##VECS##_##sfx( \
        ptrdiff_t K, const T *wt, ptrdiff_t ldw, const T *s, const ptrdiff_t *offs, T *buf, \
        ptrdiff_t ldb, int accumulate)                                              \
    {                                                                               \
        V acc[CELLS][VECS];                                                         \
        _Pragma("GCC unroll 24") for (int r = 0; r < CELLS; r++)                   \
            _Pragma("GCC unroll 4") for (int v = 0; v < VECS; v++)                 \
                acc[r][v] = accumulate ? vload(buf + r * ldb + v * LANES) : vzero(); \
        for (ptrdiff_t k = 0; k < K; k++) {                                         \
            const T *p = s + offs[k];                                               \
            V w[VECS];                                                              \
            _Pragma("GCC unroll 4") for (int v = 0; v < VECS; v++)                 \
                w[v] = vload(wt + k * ldw + v * LANES);                             \
            _Pragma("GCC unroll 24") for (int r = 0; r < CELLS; r++) {             \
                V b = vset1(p[r]);                                                  \
                _Pragma("GCC unroll 4") for (int v = 0; v < VECS; v++)             \
                    acc[r][v] = vfmadd(b, w[v], acc[r][v]);                         \
            }                                                                       \
        }                                                                           \
        _Pragma("GCC unroll 24") for (int r = 0; r < CELLS; r++)                   \
            _Pragma("GCC unroll 4") for (int v = 0; v < VECS; v++)                 \
                vstore(buf + r * ldb + v * LANES, acc[r][v]);                       \
    }
#define FCNN_LANES_TILES(T, V, sfx, LANES, ...)                                     \
    FCNN_LANES_TILE(T, V, sfx, LANES, 24, 1, __VA_ARGS__)                           \
    FCNN_LANES_TILE(T, V, sfx, LANES, 12, 2, __VA_ARGS__)                           \
    FCNN_LANES_TILE(T, V, sfx, LANES, 8, 3, __VA_ARGS__)                            \
    FCNN_LANES_TILE(T, V, sfx, LANES, 6, 4, __VA_ARGS__)
FCNN_LANES_TILES(float, __m512, f32, 16, FCNN_AVX512_OPS_F32)
FCNN_LANES_TILES(double, __m512d, f64, 8, FCNN_AVX512_OPS_F64)
#undef FCNN_LANES_TILES
#undef FCNN_LANES_TILE

/* One sample: out (F x oh x ow) = the convolution of its phases s (see
 * fcnn_lanes_pad_*) by wt (K taps x Fp filters, Fp a whole number of
 * vectors, zero past F), + bias (NULL for none). The tiles write their
 * sums into buf (a row of Fp per cell, fcnn_lanes_cells rows), filters in
 * groups of 4 vectors, then 1 to 3; then fcnn_lanes_out_* moves them
 * into out. */
static ptrdiff_t fcnn_lanes_cells(ptrdiff_t oh, ptrdiff_t PWc)
{
    return oh * PWc + FCNN_LANES_SLACK;
}

/* out[f][y][x] = buf[(y*PWc + x)*Fp + f] (+ bias[f]): the tiles' sums of
 * the output cells into the filters' planes. Plain scalar moves (built
 * without the AVX-512 target): vectorised, they would gather. */
#define FCNN_LANES_OUT(T, sfx)                                                      \
    static void fcnn_lanes_out_##sfx(const T *buf, ptrdiff_t Fp, ptrdiff_t PWc, ptrdiff_t oh, \
                                     ptrdiff_t ow, ptrdiff_t F, const T *bias, T *out) \
    {                                                                               \
        /* row by row: a row's sums stay in L1 while every filter takes its cells */ \
        for (ptrdiff_t y = 0; y < oh; y++)                                          \
            for (ptrdiff_t f = 0; f < F; f++) {                                     \
                const T *t = buf + y * PWc * Fp + f;                                \
                T *o = out + (f * oh + y) * ow;                                     \
                if (bias) {                                                         \
                    T add = bias[f];                                                \
                    for (ptrdiff_t x = 0; x < ow; x++)                              \
                        o[x] = t[x * Fp] + add;                                     \
                } else                                                              \
                    for (ptrdiff_t x = 0; x < ow; x++)                              \
                        o[x] = t[x * Fp];                                           \
            }                                                                       \
    }
FCNN_LANES_OUT(float, f32)
FCNN_LANES_OUT(double, f64)
#undef FCNN_LANES_OUT

#define FCNN_LANES_CONV(T, sfx, LANES)                                              \
    static void fcnn_lanes_conv_##sfx(ptrdiff_t K, const T *wt, ptrdiff_t Fp, ptrdiff_t F, \
                                      const T *s, const ptrdiff_t *offs, ptrdiff_t PWc, \
                                      ptrdiff_t oh, ptrdiff_t ow, const T *bias, T *out, \
                                      T *buf)                                       \
    {                                                                               \
        ptrdiff_t J = oh * PWc;                                                     \
        for (ptrdiff_t f0 = 0, nv; f0 < F; f0 += nv * LANES) {                      \
            nv = (Fp - f0) / LANES >= 4 ? 4 : (Fp - f0) / LANES;                    \
            /* taps in blocks whose filter rows stay in L1 over the tiles */        \
            ptrdiff_t cells = 24 / nv, kc = FCNN_LANES_BLOCK / (nv * LANES * (ptrdiff_t)sizeof(T)); \
            for (ptrdiff_t k0 = 0; k0 < K; k0 += kc) {                              \
                ptrdiff_t n = K - k0 < kc ? K - k0 : kc;                            \
                for (ptrdiff_t j0 = 0; j0 < J; j0 += cells) {                       \
                    const T *w = wt + k0 * Fp + f0, *p = s + j0;                    \
                    const ptrdiff_t *o = offs + k0;                                 \
                    T *b = buf + j0 * Fp + f0;                                      \
                    int more = k0 > 0;                                              \
                    switch (nv) {                                                   \
                    case 1: fcnn_lanes_tile24x1_##sfx(n, w, Fp, p, o, b, Fp, more); break; \
                    case 2: fcnn_lanes_tile12x2_##sfx(n, w, Fp, p, o, b, Fp, more); break; \
                    case 3: fcnn_lanes_tile8x3_##sfx(n, w, Fp, p, o, b, Fp, more); break;  \
                    default: fcnn_lanes_tile6x4_##sfx(n, w, Fp, p, o, b, Fp, more);        \
                    }                                                               \
                }                                                                   \
            }                                                                       \
        }                                                                           \
        fcnn_lanes_out_##sfx(buf, Fp, PWc, oh, ow, F, bias, out);                   \
    }
FCNN_LANES_CONV(float, f32, 16)
FCNN_LANES_CONV(double, f64, 8)
#undef FCNN_LANES_CONV

#else

static void fcnn_lanes_conv_f32(ptrdiff_t K, const float *wt, ptrdiff_t Fp, ptrdiff_t F,
                                const float *s, const ptrdiff_t *offs, ptrdiff_t PWc,
                                ptrdiff_t oh, ptrdiff_t ow, const float *bias, float *out,
                                float *buf) {}
static void fcnn_lanes_conv_f64(ptrdiff_t K, const double *wt, ptrdiff_t Fp, ptrdiff_t F,
                                const double *s, const ptrdiff_t *offs, ptrdiff_t PWc,
                                ptrdiff_t oh, ptrdiff_t ow, const double *bias, double *out,
                                double *buf) {}

#endif
#endif
