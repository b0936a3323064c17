/* expm1, float32 tanh and float32 sigmoid as plain arithmetic that the
 * compiler vectorises (csrc/activation.pyx calls them cell by cell in its
 * loops; the C library's functions are calls it cannot vectorise).
 *
 * exp(x) = 2^n * exp(r) with n = round(x / ln 2) and r = x - n ln 2, |r| <=
 * ln 2 / 2: ln 2 is split in two (fdlibm's ln2_hi has 21 trailing zero bits,
 * so n * ln2_hi and x - n * ln2_hi are exact), expm1(r) is its Taylor
 * polynomial, and 2^n is built from n's bits. n is rounded by adding and
 * subtracting 1.5 * 2^52 (the build keeps round-to-nearest and does not
 * reassociate), which leaves n in the low bits of the sum. Every branch is
 * a select between computed values, and arguments are clamped first, so
 * that no lane overflows or raises (NaN passes every clamp and stays NaN).
 *
 * The float64 expm1 errs by at most 2 ulps (tests/test_parity.py measures
 * it). float32 sigmoid and expm1 compute in double with a shorter
 * polynomial (relative error below 1e-12) and round once to float: the
 * result is within an ulp of the exact value, nearly always the correctly
 * rounded one. float32 tanh computes in float (see fcnn_tanh_f).
 *
 * Only arguments <= 0 reach the double exponentials (each caller passes
 * -|x| or min(x, 0)): n is then never positive, and exp never overflows. */
#ifndef FASTCNN_VMATH_H
#define FASTCNN_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The exponentials' two steps, per type S ("" double, "_f" float) of
 * unsigned twin U with E bits of mantissa and exponent bias B:
 * fcnn_reduce##S reduces x to r, x = n ln 2 + r (Cody-Waite: ln 2 in a
 * high part whose products with the n that arise are exact, and a low
 * part), and returns shifted = n + 1.5 * 2^E, whose low bits hold n;
 * fcnn_pow2##S turns that into 2^n, its exponent field n + B (the shift
 * drops the high bits of the sum: 1.5 * 2^E's bits shifted by E are zero). */
#define FCNN_EXP_STEPS(T, U, S, E, B, SHIFTER, INV_LN2, LN2_HI, LN2_LO)     \
    static inline T fcnn_reduce##S(T x, T *r)                                 \
    {                                                                         \
        T shifted = x * INV_LN2 + SHIFTER;                                    \
        T n = shifted - SHIFTER;                                              \
        *r = (x - n * LN2_HI) - n * LN2_LO;                                   \
        return shifted;                                                       \
    }                                                                         \
    static inline T fcnn_pow2##S(T shifted)                                   \
    {                                                                         \
        U bits;                                                               \
        T scale;                                                              \
        memcpy(&bits, &shifted, sizeof bits);                                 \
        bits = (bits + B) << E;                                               \
        memcpy(&scale, &bits, sizeof scale);                                  \
        return scale;                                                         \
    }

/* double, for x <= 0 (finite after the caller's clamp, or NaN), -1022 <= n:
 * ln 2's high part 6.93147180369123816490e-01 */
FCNN_EXP_STEPS(double, uint64_t, , 52, 1023, 0x1.8p52, 0x1.71547652b82fep0, 0x1.62e42feep-1,
               0x1.a39ef35793c76p-33)
/* float, for float32 tanh's positive x: ln 2's high part has 17 bits, so
 * that its products with the n <= 27 that arise are exact */
FCNN_EXP_STEPS(float, uint32_t, _f, 23, 127, 0x1.8p23f, 0x1.715476p0f, 0x1.62e4p-1f,
               0x1.7f7d1cp-20f)
#undef FCNN_EXP_STEPS

/* expm1(r) for |r| <= ln 2 / 2 (a little more after rounding): Taylor to
 * r^degree, as r + r^2 q so that the final addition carries the rounding.
 * To r^13 the truncation is below 2e-17 relative (float64), to r^10 below
 * 7e-13 (enough for a float result). A zero r gives +0: the callers restore
 * -0.0. The degree is a constant where it is called: the loop unrolls. */
static const double fcnn_inverse_factorials[14] = {
    1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320,
    1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800};

static inline double fcnn_expm1_reduced(double r, int degree)
{
    double q = fcnn_inverse_factorials[degree];
    for (int k = degree - 1; k >= 2; k--)
        q = q * r + fcnn_inverse_factorials[k];
    return r + r * r * q;
}

/* expm1(x) for x <= 0 (-inf and NaN included), -0.0 kept: 2^n p + (2^n - 1)
 * with 2^n - 1 exact (n >= -53; below, both are -1 after rounding). Below
 * `lowest`, where it rounds to -1, x is clamped. */
static inline double fcnn_expm1_nonpositive(double x, double lowest, int degree)
{
    double r, shifted, scale, e;
    double clamped = x < lowest ? lowest : x;
    shifted = fcnn_reduce(clamped, &r);
    scale = fcnn_pow2(shifted);
    e = scale * fcnn_expm1_reduced(r, degree) + (scale - 1.0);
    return x == 0.0 ? x : e;
}

/* float64 (within 2 ulps) and float32 accuracy (in double) */
static inline double fcnn_expm1_nonpositive_d(double x)
{
    return fcnn_expm1_nonpositive(x, -50.0, 13);
}

static inline double fcnn_expm1_nonpositive_f(double x)
{
    return fcnn_expm1_nonpositive(x, -40.0, 10);
}

/* float32 tanh in float arithmetic (16 cells per 512-bit vector, where
 * double would hold 8). With a = |x|: below 0.75, the odd polynomial
 * a + a^3 P(a^2), its coefficients fitted to tanh's relative error (0.03
 * ulp); from 0.75 (where tanh exceeds 0.63), 1 - 2 / (e^2a + 1), whose
 * quotient is below 0.37 there, so that its rounding errors move the
 * result by less than an ulp; e^2a by fcnn_reduce_f and fcnn_pow2_f and a
 * fitted polynomial. tanh rounds to 1 from a = 9.01:
 * a is clamped to 9.5 there, so that e^2a never overflows. Each result is
 * within 1.1 ulps of the exact value, 99.7 % of them correctly rounded
 * (checked over every float32); NaN gives NaN, -0.0 gives -0.0. */
static inline float fcnn_tanh_f(float x)
{
    float a = fabsf(x), s = a * a;
    float p = 0x1.c8cbbap-10f;
    p = p * s - 0x1.f6786ap-8f;
    p = p * s + 0x1.5f93aap-6f;
    p = p * s - 0x1.b9816cp-5f;
    p = p * s + 0x1.110ddcp-3f;
    p = p * s - 0x1.55554ap-2f;
    float small = a + (a * s) * p;

    float t = a > 9.5f ? 19.0f : a + a; /* NaN stays NaN */
    float r, shifted = fcnn_reduce_f(t, &r);
    float q = 0x1.686acap-10f;
    q = q * r + 0x1.124188p-7f;
    q = q * r + 0x1.555b94p-5f;
    q = q * r + 0x1.555486p-3f;
    q = q * r + 0x1.fffff8p-2f;
    float big = 1.0f - 2.0f / ((1.0f + (r + (r * r) * q)) * fcnn_pow2_f(shifted) + 1.0f);

    return copysignf(a < 0.75f ? small : big, x);
}

/* 1 / (1 + exp(-x)) for x >= 0, exp(x) / (1 + exp(x)) below: one exp of
 * -|x|, which never overflows. Where exp(-x) overflows in the dtype (below
 * -ln of its largest finite value), sigmoid is 0, as 1 / (1 + exp(-x)) in
 * the dtype gives it (and torch and SciPy's expit), not the subnormal
 * number it is. */
static inline float fcnn_sigmoid_f(float x)
{
    double e, clamped = -fabs((double)x);
    double shifted, r;
    clamped = clamped < -100.0 ? -100.0 : clamped; /* the result is 0 there */
    shifted = fcnn_reduce(clamped, &r);
    e = (1.0 + fcnn_expm1_reduced(r, 10)) * fcnn_pow2(shifted);
    return x < -0x1.62e42ep6f ? 0.0f : (float)((x >= 0 ? 1.0 : e) / (1.0 + e));
}

#endif
