/* col2im's inner sum (csrc/unfold.pyx): 64 bytes of an image row, each cell
 * the sum of its cells in `taps` column rows, in their order. The sums stay
 * in registers, so that each image cell is stored once instead of loaded and
 * stored once per tap. Each lane adds the same values in the same order as
 * the scalar loop of the scatter path: the results are identical.
 *
 * Written with GCC/Clang vector types because GCC left the float32 loop
 * scalar; four 16-byte accumulators because one 64-byte vector went through
 * the stack in SSE2 builds. */
#ifndef FASTCNN_FOLD_H
#define FASTCNN_FOLD_H

#include <stddef.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)

typedef float fcnn_f32x4 __attribute__((vector_size(16)));
typedef double fcnn_f64x2 __attribute__((vector_size(16)));

/* dst[ix + q] = sum over k of rows[k][ix - shift[k] + q], for the 64 bytes from ix. */
#define FCNN_FOLD_CHUNK(name, T, V)                                             \
    static inline void name(T *dst, const T **rows, const ptrdiff_t *shift,     \
                            ptrdiff_t taps, ptrdiff_t ix)                       \
    {                                                                           \
        V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, v0, v1, v2, v3;               \
        for (ptrdiff_t k = 0; k < taps; k++) {                                  \
            const char *r = (const char *)(rows[k] + ix - shift[k]);            \
            memcpy(&v0, r, 16);                                                 \
            memcpy(&v1, r + 16, 16);                                            \
            memcpy(&v2, r + 32, 16);                                            \
            memcpy(&v3, r + 48, 16);                                            \
            a0 += v0;                                                           \
            a1 += v1;                                                           \
            a2 += v2;                                                           \
            a3 += v3;                                                           \
        }                                                                       \
        char *d = (char *)(dst + ix);                                           \
        memcpy(d, &a0, 16);                                                     \
        memcpy(d + 16, &a1, 16);                                                \
        memcpy(d + 32, &a2, 16);                                                \
        memcpy(d + 48, &a3, 16);                                                \
    }

#else

#define FCNN_FOLD_CHUNK(name, T, V)                                             \
    static inline void name(T *dst, const T **rows, const ptrdiff_t *shift,     \
                            ptrdiff_t taps, ptrdiff_t ix)                       \
    {                                                                           \
        T acc[64 / sizeof(T)] = {0};                                            \
        for (ptrdiff_t k = 0; k < taps; k++)                                    \
            for (ptrdiff_t q = 0; q < (ptrdiff_t)(64 / sizeof(T)); q++)         \
                acc[q] += rows[k][ix - shift[k] + q];                           \
        memcpy(dst + ix, acc, sizeof acc);                                      \
    }

#endif

FCNN_FOLD_CHUNK(fcnn_fold_chunk_f32, float, fcnn_f32x4)
FCNN_FOLD_CHUNK(fcnn_fold_chunk_f64, double, fcnn_f64x2)
#undef FCNN_FOLD_CHUNK

#endif
