/* Selects of floating-point values that compile to a cmov, not a branch.
 *
 * For comparisons that the data decide (which cell of a window is the
 * maximum), a branch is mispredicted about half the time. GCC turns plain C
 * selects of floats into such branches; through integers it makes them
 * cmovs. */
#ifndef FASTCNN_SELECT_H
#define FASTCNN_SELECT_H

#include <stdint.h>
#include <string.h>

/* b where take, else a. */
#define FCNN_SELECT(name, T, U)                                                 \
    static inline T name(int take, T a, T b)                                    \
    {                                                                           \
        U ua, ub;                                                               \
        memcpy(&ua, &a, sizeof a);                                              \
        memcpy(&ub, &b, sizeof b);                                              \
        ua = take ? ub : ua;                                                    \
        memcpy(&a, &ua, sizeof a);                                              \
        return a;                                                               \
    }
FCNN_SELECT(fcnn_select_f32, float, uint32_t)
FCNN_SELECT(fcnn_select_f64, double, uint64_t)
#undef FCNN_SELECT

/* v where keep, else +0.0: by a mask of v's bits (GCC made a branch of the
 * select above between +0.0 and v). */
#define FCNN_KEEP(name, T, U)                                                   \
    static inline T name(int keep, T v)                                         \
    {                                                                           \
        U u;                                                                    \
        memcpy(&u, &v, sizeof v);                                               \
        u &= -(U)(keep != 0);                                                   \
        memcpy(&v, &u, sizeof v);                                               \
        return v;                                                               \
    }
FCNN_KEEP(fcnn_keep_f32, float, uint32_t)
FCNN_KEEP(fcnn_keep_f64, double, uint64_t)
#undef FCNN_KEEP

#if defined(__SSE2__) || defined(_M_X64)

#include <emmintrin.h>

/* b where take, else a: lane by lane, through any 128-bit vector. */
static inline __m128i fcnn_blend(__m128i a, __m128i b, __m128i take)
{
    return _mm_or_si128(_mm_and_si128(take, b), _mm_andnot_si128(take, a));
}

#endif

#endif
