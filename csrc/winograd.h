/* The one-dimensional transforms of the Winograd convolution F(4x4, 3x3)
 * and of its weight gradient F(3x3, 4x4) (csrc/winograd.pyx), on the points
 * 0, -1, 1, 1/2, -2 and infinity, and the (de-)interleaving copies around
 * them.
 *
 * Lavin and Gray's points 0, +-1, +-2 give float32 results that stray past
 * 1e-5 of the largest output from 256 input channels on; with 1/2 in place
 * of 2 the error is about three times smaller (as Barabasz, Anderson and
 * Gregg found), within half that at 512 channels. On the same points both
 * algorithms transform the 6x6 input tiles alike.
 *
 * A transform works on n independent vectors at once: element k of vector
 * j is src[k * ss + j], element r of its transform goes to dst[r * ds + j].
 * The loop over j reads and writes contiguous cells, so the
 * compiler vectorises it (the restrict pointers tell it the two do not
 * overlap). Every constant is a power of two or rounded to the type once,
 * and every expression rounds one operation at a time, in the order written
 * (no contraction, see setup.py): the NumPy twin (fastcnn/reference.py)
 * computes the same expressions and gets the same bits. */
#ifndef FASTCNN_WINOGRAD_H
#define FASTCNN_WINOGRAD_H

#include <stddef.h>

/* The rows a transform writes never overlap (ds >= n in every call), which
 * the compiler would otherwise check at run time, row against row: beyond
 * 10 such checks, GCC leaves the loop scalar. */
#if defined(__clang__)
#define FCNN_ROWS_APART _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define FCNN_ROWS_APART _Pragma("GCC ivdep")
#else
#define FCNN_ROWS_APART
#endif

/* The input tile's transform (B transposed) of six cells d0..d5 (variables
 * of type V: scalars, or the vectors of csrc/winograd_simd.h) into the
 * lvalues y0..y5; E is the element type the constants are rounded to. */
#define FCNN_WINOGRAD_INPUT_1D(E, V, d0, d1, d2, d3, d4, d5, y0, y1, y2, y3, y4, y5) \
    do {                                                                        \
        const E half_ = (E)0.5, two_ = 2, c1_5_ = (E)1.5, c2_5_ = (E)2.5;       \
        V a_ = d3 - d1, b_ = d4 - d2;                                           \
        y0 = d0 + d4 - two_ * d2 + c1_5_ * a_;                                  \
        y1 = b_ + half_ * a_ + c1_5_ * (d1 - d2);                               \
        y2 = b_ + c2_5_ * a_ + c1_5_ * (d1 + d2);                               \
        y3 = b_ + two_ * a_;                                                    \
        y4 = b_ - half_ * a_;                                                   \
        y5 = d1 - two_ * d3 + d5 + c1_5_ * b_;                                  \
    } while (0)

/* The weight gradient's transform of four cells g0..g3 of a dout tile (the
 * G of F(3x3, 4x4)) into the lvalues y0..y5, as FCNN_WINOGRAD_INPUT_1D. */
#define FCNN_WINOGRAD_DOUT_1D(E, V, g0, g1, g2, g3, y0, y1, y2, y3, y4, y5)    \
    do {                                                                        \
        const E third_ = (E)(1.0 / 3.0), two_ = 2, four_ = 4, eight_ = 8;       \
        const E c15_ = (E)(1.0 / 15.0), m2c15_ = (E)(-2.0 / 15.0);              \
        V even_ = g0 + g2, odd_ = g1 + g3;                                      \
        y0 = g0;                                                                \
        y1 = (odd_ - even_) * third_;                                           \
        y2 = (even_ + odd_) * third_;                                           \
        y3 = (eight_ * g0 + four_ * g1 + two_ * g2 + g3) * m2c15_;              \
        y4 = (g0 - two_ * g1 + four_ * g2 - eight_ * g3) * c15_;                \
        y5 = g3;                                                                \
    } while (0)

/* The output transform (A transposed) of six products m0..m5 into the
 * lvalues y0..y3, as FCNN_WINOGRAD_INPUT_1D; with `four` false, y3 is not
 * written and y2 lacks the point at infinity's m5 (the weight gradient's
 * three taps add it: y2 + m5). */
#define FCNN_WINOGRAD_OUTPUT_1D(E, V, m0, m1, m2, m3, m4, m5, y0, y1, y2, y3, four) \
    do {                                                                        \
        const E half_ = (E)0.5, quarter_ = (E)0.25, eighth_ = (E)0.125;         \
        const E two_ = 2, four_ = 4, eight_ = 8;                                \
        V p_ = m2 + m1, q_ = m2 - m1;                                           \
        y0 = m0 + p_ + (m3 + m4);                                               \
        y1 = q_ + (half_ * m3 - two_ * m4);                                     \
        y2 = p_ + (quarter_ * m3 + four_ * m4);                                 \
        if (four)                                                               \
            y3 = q_ + (eighth_ * m3 - eight_ * m4) + m5;                        \
    } while (0)

#define FCNN_WINOGRAD(T, S)                                                     \
    /* weight: 3 taps -> 6 (G) */                                               \
    static inline void fcnn_winograd_weight_##S(const T *restrict src,          \
            ptrdiff_t ss, T *restrict dst, ptrdiff_t ds, ptrdiff_t n)           \
    {                                                                           \
        const T third = (T)(1.0 / 3.0), two = 2, four = 4;                      \
        const T c15 = (T)(1.0 / 15.0), m4c15 = (T)(-4.0 / 15.0);                \
        FCNN_ROWS_APART                                                         \
        for (ptrdiff_t j = 0; j < n; j++) {                                     \
            T g0 = src[j], g1 = src[ss + j], g2 = src[2 * ss + j];              \
            T s = g0 + g2;                                                      \
            dst[j] = g0;                                                        \
            dst[ds + j] = (g1 - s) * third;                                     \
            dst[2 * ds + j] = (s + g1) * third;                                 \
            dst[3 * ds + j] = (four * g0 + g2 + two * g1) * m4c15;              \
            dst[4 * ds + j] = (g0 + four * g2 - two * g1) * c15;                \
            dst[5 * ds + j] = g2;                                               \
        }                                                                       \
    }                                                                           \
    /* input tile: 6 cells -> 6 (B transposed); cells 4 and 5 of vector j    \
     * are src[shift + j] and src[shift + ss + j] (the rows of a tile that  \
     * start the next tile, for the rows of de-interleaved phases). */        \
    static inline void fcnn_winograd_input_shifted_##S(const T *restrict src,   \
            ptrdiff_t ss, ptrdiff_t shift, T *restrict dst, ptrdiff_t ds,       \
            ptrdiff_t n)                                                        \
    {                                                                           \
        FCNN_ROWS_APART                                                         \
        for (ptrdiff_t j = 0; j < n; j++) {                                     \
            T d0 = src[j], d1 = src[ss + j], d2 = src[2 * ss + j];              \
            T d3 = src[3 * ss + j], d4 = src[shift + j];                        \
            T d5 = src[shift + ss + j];                                         \
            FCNN_WINOGRAD_INPUT_1D(T, T, d0, d1, d2, d3, d4, d5, dst[j],         \
                                   dst[ds + j], dst[2 * ds + j], dst[3 * ds + j], \
                                   dst[4 * ds + j], dst[5 * ds + j]);            \
        }                                                                       \
    }                                                                           \
    static inline void fcnn_winograd_input_##S(const T *restrict src,           \
            ptrdiff_t ss, T *restrict dst, ptrdiff_t ds, ptrdiff_t n)           \
    {                                                                           \
        fcnn_winograd_input_shifted_##S(src, ss, 4 * ss, dst, ds, n);           \
    }                                                                           \
    /* weight gradient, dout tile: 4 cells -> 6 (the G of F(3x3, 4x4), whose  \
     * B is the one above) */                                                 \
    static inline void fcnn_winograd_dout_##S(const T *restrict src,            \
            ptrdiff_t ss, T *restrict dst, ptrdiff_t ds, ptrdiff_t n)           \
    {                                                                           \
        FCNN_ROWS_APART                                                         \
        for (ptrdiff_t j = 0; j < n; j++) {                                     \
            T g0 = src[j], g1 = src[ss + j], g2 = src[2 * ss + j];              \
            T g3 = src[3 * ss + j];                                             \
            FCNN_WINOGRAD_DOUT_1D(T, T, g0, g1, g2, g3, dst[j], dst[ds + j],      \
                                  dst[2 * ds + j], dst[3 * ds + j],             \
                                  dst[4 * ds + j], dst[5 * ds + j]);            \
        }                                                                       \
    }                                                                           \
    /* 6 products -> m = 4 output cells (A transposed), or m = 3 weight      \
     * gradient taps (that of F(3x3, 4x4)): the same rows but the last,       \
     * which alone takes the point at infinity. */                            \
    static inline void fcnn_winograd_output_##S(const T *restrict src,          \
            ptrdiff_t ss, T *restrict dst, ptrdiff_t ds, ptrdiff_t n, int m)    \
    {                                                                           \
        FCNN_ROWS_APART                                                         \
        for (ptrdiff_t j = 0; j < n; j++) {                                     \
            T m0 = src[j], m1 = src[ss + j], m2 = src[2 * ss + j];              \
            T m3 = src[3 * ss + j], m4 = src[4 * ss + j], m5 = src[5 * ss + j]; \
            T y2;                                                               \
            FCNN_WINOGRAD_OUTPUT_1D(T, T, m0, m1, m2, m3, m4, m5, dst[j],         \
                                    dst[ds + j], y2, dst[3 * ds + j], m == 4);    \
            dst[2 * ds + j] = m == 4 ? y2 : y2 + m5;                            \
        }                                                                       \
    }                                                                           \
    /* Cells 4*q + j of n groups of 4 <- phase j: dst[4*q + j] = src[j*ss + q] \
     * (plus *bias, if not NULL). */                                          \
    static inline void fcnn_interleave4_##S(const T *restrict src,              \
            ptrdiff_t ss, T *restrict dst, ptrdiff_t n, const T *bias)          \
    {                                                                           \
        if (bias) {                                                             \
            const T b = *bias;                                                  \
            for (ptrdiff_t q = 0; q < n; q++) {                                 \
                dst[4 * q] = src[q] + b;                                        \
                dst[4 * q + 1] = src[ss + q] + b;                               \
                dst[4 * q + 2] = src[2 * ss + q] + b;                           \
                dst[4 * q + 3] = src[3 * ss + q] + b;                           \
            }                                                                   \
        } else {                                                                \
            for (ptrdiff_t q = 0; q < n; q++) {                                 \
                dst[4 * q] = src[q];                                            \
                dst[4 * q + 1] = src[ss + q];                                   \
                dst[4 * q + 2] = src[2 * ss + q];                               \
                dst[4 * q + 3] = src[3 * ss + q];                               \
            }                                                                   \
        }                                                                       \
    }                                                                           \
    /* The other way: dst[j*ds + q] = src[4*q + j]. */                          \
    static inline void fcnn_deinterleave4_##S(const T *restrict src,            \
            T *restrict dst, ptrdiff_t ds, ptrdiff_t n)                         \
    {                                                                           \
        for (ptrdiff_t q = 0; q < n; q++) {                                     \
            dst[q] = src[4 * q];                                                \
            dst[ds + q] = src[4 * q + 1];                                       \
            dst[2 * ds + q] = src[4 * q + 2];                                   \
            dst[3 * ds + q] = src[4 * q + 3];                                   \
        }                                                                       \
    }                                                                           \
    /* Whether one of n cells is not finite (x - x is NaN for those alone). */  \
    static inline int fcnn_any_nonfinite_##S(const T *src, ptrdiff_t n)         \
    {                                                                           \
        int bad = 0;                                                            \
        for (ptrdiff_t j = 0; j < n; j++)                                       \
            bad |= !(src[j] - src[j] == 0);                                     \
        return bad;                                                             \
    }

FCNN_WINOGRAD(float, f32)
FCNN_WINOGRAD(double, f64)
#undef FCNN_WINOGRAD
#undef FCNN_ROWS_APART

#endif
