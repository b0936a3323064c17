/* expm1, tanh and the logistic sigmoid as plain arithmetic that the
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
 * The float64 functions (fcnn_*_d) err by at most 2 ulps (tests/test_parity.py
 * measures them): tanh corrects its final quotient by its exact residual.
 * The float32 ones compute in double with a shorter polynomial (relative
 * error below 1e-12) and round once to float: the result is within an ulp
 * of the exact value, nearly always the correctly rounded one.
 *
 * Only arguments <= 0 reach the exponentials (each caller passes -|x| or
 * min(x, 0)): n is then never positive, and exp never overflows. */
#ifndef FASTCNN_VMATH_H
#define FASTCNN_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define FCNN_SHIFTER 0x1.8p52
#define FCNN_INV_LN2 0x1.71547652b82fep0
#define FCNN_LN2_HI 0x1.62e42feep-1 /* 6.93147180369123816490e-01 */
#define FCNN_LN2_LO 0x1.a39ef35793c76p-33 /* ln 2 - FCNN_LN2_HI */

/* Reduce x (<= 0, finite after the caller's clamp, or NaN) to r; returns
 * n + 1.5 * 2^52, whose low bits hold n. */
static inline double fcnn_reduce(double x, double *r)
{
    double shifted = x * FCNN_INV_LN2 + FCNN_SHIFTER;
    double n = shifted - FCNN_SHIFTER;
    *r = (x - n * FCNN_LN2_HI) - n * FCNN_LN2_LO;
    return shifted;
}

/* 2^n for shifted = n + 1.5 * 2^52 and -1022 <= n <= 1023: the exponent
 * field is n + 1023, and the shift drops the high bits of the sum (1.5 *
 * 2^52's bits shifted by 52 are zero). */
static inline double fcnn_pow2(double shifted)
{
    uint64_t bits;
    double scale;
    memcpy(&bits, &shifted, sizeof bits);
    bits = (bits + 1023) << 52;
    memcpy(&scale, &bits, sizeof scale);
    return scale;
}

/* expm1(r) for |r| <= ln 2 / 2 (a little more after rounding): Taylor to
 * r^13 (truncation below 2e-17 relative), r + r^2 * q so that the final
 * addition carries the rounding. (A zero r gives +0: the callers restore
 * -0.0.) */
static inline double fcnn_expm1_reduced_d(double r)
{
    double q = 1.0 / 6227020800.0;
    q = q * r + 1.0 / 479001600.0;
    q = q * r + 1.0 / 39916800.0;
    q = q * r + 1.0 / 3628800.0;
    q = q * r + 1.0 / 362880.0;
    q = q * r + 1.0 / 40320.0;
    q = q * r + 1.0 / 5040.0;
    q = q * r + 1.0 / 720.0;
    q = q * r + 1.0 / 120.0;
    q = q * r + 1.0 / 24.0;
    q = q * r + 1.0 / 6.0;
    q = q * r + 0.5;
    return r + r * r * q;
}

/* As fcnn_expm1_reduced_d to r^10 (truncation below 7e-13 relative): enough
 * for a float result. */
static inline double fcnn_expm1_reduced_f(double r)
{
    double q = 1.0 / 39916800.0;
    q = q * r + 1.0 / 3628800.0;
    q = q * r + 1.0 / 362880.0;
    q = q * r + 1.0 / 40320.0;
    q = q * r + 1.0 / 5040.0;
    q = q * r + 1.0 / 720.0;
    q = q * r + 1.0 / 120.0;
    q = q * r + 1.0 / 24.0;
    q = q * r + 1.0 / 6.0;
    q = q * r + 0.5;
    return r + r * r * q;
}

/* expm1(x) for x <= 0 (-inf and NaN included), -0.0 kept. 2^n p + (2^n - 1)
 * with 2^n - 1 exact (n >= -53; below, both are -1 after rounding). */
static inline double fcnn_expm1_nonpositive_d(double x)
{
    double r, shifted, scale, e;
    double clamped = x < -50.0 ? -50.0 : x; /* expm1(-50) rounds to -1 */
    shifted = fcnn_reduce(clamped, &r);
    scale = fcnn_pow2(shifted);
    e = scale * fcnn_expm1_reduced_d(r) + (scale - 1.0);
    return x == 0.0 ? x : e;
}

/* As fcnn_expm1_nonpositive_d, to float accuracy (still in double). */
static inline double fcnn_expm1_nonpositive_f(double x)
{
    double r, shifted, scale, e;
    double clamped = x < -40.0 ? -40.0 : x; /* expm1(-40) rounds to -1 */
    shifted = fcnn_reduce(clamped, &r);
    scale = fcnn_pow2(shifted);
    e = scale * fcnn_expm1_reduced_f(r) + (scale - 1.0);
    return x == 0.0 ? x : e;
}

/* The rounding error of sum = a + b (Knuth's TwoSum: any order of |a|, |b|). */
static inline double fcnn_two_sum_err(double a, double b, double sum)
{
    double b_part = sum - a;
    return (a - (sum - b_part)) + (b - b_part);
}

/* (num + num_lo) - q (den + den_lo) for a quotient q of num / den, with
 * num_lo, den_lo below half an ulp of num, den: q + residual / den is then
 * the quotient to about half an ulp. q den is computed exactly by Dekker's
 * product (no fused multiply-add in these builds). */
static inline double fcnn_split_hi(double a)
{
    double c = 0x1.0000002p27 * a; /* (2^27 + 1) a */
    return c - (c - a);
}

static inline double fcnn_div_residual(double num, double num_lo, double den, double den_lo,
                                       double q)
{
    double product = q * den;
    double q_hi = fcnn_split_hi(q), den_hi = fcnn_split_hi(den);
    double q_lo = q - q_hi, den_lo_part = den - den_hi;
    double product_err = ((q_hi * den_hi - product) + q_hi * den_lo_part + q_lo * den_hi)
                         + q_lo * den_lo_part;
    return (((num - product) - product_err) + num_lo) - q * den_lo;
}

/* tanh(|x|) = -e / (e + 2) with e = expm1(-2|x|) in (-1, 0]: no cancellation
 * near 0, no overflow for large |x| (e reaches -1, the quotient 1); the
 * sign is x's (-0.0 gives -0.0). */
static inline float fcnn_tanh_f(float x)
{
    double e = fcnn_expm1_nonpositive_f(-2.0 * fabs((double)x));
    return (float)copysign(-e / (e + 2.0), (double)x);
}

/* In double, -e / (e + 2) errs by up to 2.5 ulps where tanh is near 1: from
 * |x| = atanh(0.5), tanh(|x|) = 1 - 2E / (1 + E) with E = exp(-2|x|) = e + 1
 * (from the same reduction), where the final subtraction carries the
 * rounding. */
static inline double fcnn_tanh_d(double x)
{
    double y = -2.0 * fabs(x), r, shifted, scale, p, e, e_lo, big, num, den, den_lo, q;
    int near_zero = y > -0.69;
    y = y < -50.0 ? -50.0 : y; /* tanh(25) rounds to 1 */
    shifted = fcnn_reduce(y, &r);
    scale = fcnn_pow2(shifted);
    p = scale * fcnn_expm1_reduced_d(r); /* exact: scale is a power of 2 */
    e = p + (scale - 1.0);
    e_lo = fcnn_two_sum_err(p, scale - 1.0, e);
    e = y == 0.0 ? y : e; /* -0.0 kept */
    big = p + scale;
    /* e + 2 and 1 + big, each with its rounding error (exact: |e| < 2, big <= 1) */
    num = near_zero ? -e : 2.0 * big;
    den = near_zero ? e + 2.0 : 1.0 + big;
    den_lo = near_zero ? ((2.0 - den) + e) + e_lo : (1.0 - den) + big;
    q = num / den;
    /* 1 / den, to the accuracy the correction needs, without a division */
    q = q + fcnn_div_residual(num, near_zero ? -e_lo : 0.0, den, den_lo, q)
            * (near_zero ? 0.5 + 0.5 * q : 1.0 - 0.5 * q);
    return copysign(near_zero ? q : 1.0 - q, x);
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
    e = (1.0 + fcnn_expm1_reduced_f(r)) * fcnn_pow2(shifted);
    return x < -0x1.62e42ep6f ? 0.0f : (float)((x >= 0 ? 1.0 : e) / (1.0 + e));
}

#endif
