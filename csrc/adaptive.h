/* The two steps of adaptive max pooling (csrc/adaptive.pyx) that find the
 * cell PyTorch's scan of a window keeps: its last NaN, or else its first
 * maximum, in row-major order, which within a window is the order of the
 * flat indices ih * W + iw. Any order of visiting the cells then finds it.
 *
 * fcnn_max_columns_*: the rows [h0, h1) of a row of windows folded into
 * column maxima and the rows they came from: down each column, a cell wins
 * over the running maximum if it is greater or NaN (PyTorch's rule, which
 * in one column keeps the first maximum or the last NaN). With SSE2, eight
 * float32 or four float64 columns at a time, down all the rows in
 * registers; elsewhere column by column.
 *
 * fcnn_max_window_*: a window's cell from its columns' maxima.
 *
 * Written with selects, not branches, which the data would mispredict (GCC
 * turned the plain C selects of the column step into a branch per cell, and
 * the same selects written with vector types into a cmov per 64-bit
 * lane). */
#ifndef FASTCNN_ADAPTIVE_H
#define FASTCNN_ADAPTIVE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "select.h"


/* One column of a window row, scalar: rows [h0, h1) of column `col`. */
#define FCNN_MAX_COLUMN(T, S)                                                   \
    {                                                                           \
        T b = src[h0 * W + col];                                                \
        int64_t r = h0;                                                         \
        for (ptrdiff_t ih = h0 + 1; ih < h1; ih++) {                            \
            T v = src[ih * W + col];                                            \
            int take = (v > b) | (v != v);                                      \
            b = S(take, b, v);                                                  \
            r = take ? ih : r;                                                  \
        }                                                                       \
        best[col] = b;                                                          \
        row_of[col] = r;                                                        \
    }

#if defined(__SSE2__) || defined(_M_X64)

#include <emmintrin.h>

/* Set the int64 rows r of the columns that `take` selects to `here`:
 * float32's four lanes span two registers of rows, float64's two lanes one. */
static inline void fcnn_take_rows_ps(__m128i *r, __m128i here, __m128i take)
{
    r[0] = fcnn_blend(r[0], here, _mm_unpacklo_epi32(take, take));
    r[1] = fcnn_blend(r[1], here, _mm_unpackhi_epi32(take, take));
}

static inline void fcnn_take_rows_pd(__m128i *r, __m128i here, __m128i take)
{
    r[0] = fcnn_blend(r[0], here, take);
}

/* One vector of columns (type T in VT, the intrinsics' suffix X) down rows
 * [h0, h1) from p, the column maxima and their rows (R registers) in
 * registers. */
#define FCNN_MAX_BLOCK(name, T, VT, X, R)                                       \
    static inline void name(const T *p, ptrdiff_t W, ptrdiff_t h0, ptrdiff_t h1, \
                            T *best, int64_t *row_of)                           \
    {                                                                           \
        VT b = _mm_loadu_##X(p);                                                \
        __m128i here = _mm_set1_epi64x(h0), one = _mm_set1_epi64x(1);           \
        __m128i r[R];                                                           \
        for (int k = 0; k < R; k++)                                             \
            r[k] = here;                                                        \
        for (ptrdiff_t ih = h0 + 1; ih < h1; ih++) {                            \
            p += W;                                                             \
            here = _mm_add_epi64(here, one);                                    \
            VT v = _mm_loadu_##X(p);                                            \
            __m128i take = _mm_cast##X##_si128(                                 \
                _mm_or_##X(_mm_cmplt_##X(b, v), _mm_cmpunord_##X(v, v)));       \
            b = _mm_castsi128_##X(                                              \
                fcnn_blend(_mm_cast##X##_si128(b), _mm_cast##X##_si128(v), take)); \
            fcnn_take_rows_##X(r, here, take);                                  \
        }                                                                       \
        _mm_storeu_##X(best, b);                                                \
        for (int k = 0; k < R; k++)                                             \
            _mm_storeu_si128((__m128i *)row_of + k, r[k]);                      \
    }
FCNN_MAX_BLOCK(fcnn_max_block_f32, float, __m128, ps, 2)
FCNN_MAX_BLOCK(fcnn_max_block_f64, double, __m128d, pd, 1)
#undef FCNN_MAX_BLOCK

#define FCNN_MAX_COLUMNS(name, T, S, block, lanes)                              \
    static void name(const T *src, ptrdiff_t W, ptrdiff_t h0, ptrdiff_t h1,     \
                     T *best, int64_t *row_of)                                  \
    {                                                                           \
        ptrdiff_t col = 0;                                                      \
        for (; col + lanes <= W; col += lanes)                                  \
            block(src + h0 * W + col, W, h0, h1, best + col, row_of + col);     \
        for (; col < W; col++)                                                  \
            FCNN_MAX_COLUMN(T, S)                                               \
    }
FCNN_MAX_COLUMNS(fcnn_max_columns_f32, float, fcnn_select_f32, fcnn_max_block_f32, 4)
FCNN_MAX_COLUMNS(fcnn_max_columns_f64, double, fcnn_select_f64, fcnn_max_block_f64, 2)
#undef FCNN_MAX_COLUMNS

#else

#define FCNN_MAX_COLUMNS(name, T, S)                                            \
    static void name(const T *src, ptrdiff_t W, ptrdiff_t h0, ptrdiff_t h1,     \
                     T *best, int64_t *row_of)                                  \
    {                                                                           \
        for (ptrdiff_t col = 0; col < W; col++)                                 \
            FCNN_MAX_COLUMN(T, S)                                               \
    }
FCNN_MAX_COLUMNS(fcnn_max_columns_f32, float, fcnn_select_f32)
FCNN_MAX_COLUMNS(fcnn_max_columns_f64, double, fcnn_select_f64)
#undef FCNN_MAX_COLUMNS

#endif
#undef FCNN_MAX_COLUMN

/* The flat index of the cell that PyTorch's scan keeps in the window of
 * columns [w0, w1), from their maxima `best` and rows `row_of`: the window's
 * maximum first, then of the columns that hold it the one whose cell's
 * index is least (of those that hold a NaN, greatest). Some column always
 * does, so the index lies in the window whatever the data. */
#define FCNN_MAX_WINDOW(name, T)                                                \
    static inline int64_t name(const T *best, const int64_t *row_of,            \
                               ptrdiff_t W, ptrdiff_t w0, ptrdiff_t w1)         \
    {                                                                           \
        T m = best[w0];                                                         \
        int nan = m != m;                                                       \
        for (ptrdiff_t i = w0 + 1; i < w1; i++) {                               \
            T c = best[i];                                                      \
            m = c > m ? c : m;                                                  \
            nan |= c != c;                                                      \
        }                                                                       \
        int64_t q = nan ? -1 : INT64_MAX;                                       \
        for (ptrdiff_t i = w0; i < w1; i++) {                                   \
            T c = best[i];                                                      \
            int64_t p = row_of[i] * W + i;                                      \
            if (nan)                                                            \
                q = (c != c) & (p > q) ? p : q;                                 \
            else                                                                \
                q = (c == m) & (p < q) ? p : q;                                 \
        }                                                                       \
        return q;                                                               \
    }
FCNN_MAX_WINDOW(fcnn_max_window_f32, float)
FCNN_MAX_WINDOW(fcnn_max_window_f64, double)
#undef FCNN_MAX_WINDOW

#endif
