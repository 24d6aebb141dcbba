/* vmath.h -- branch-free exp, expm1 and log1p that vectorize.
 *
 * Written as straight-line scalar code (selects, integer bit tricks, no
 * libm calls, no table lookups) so that GCC vectorizes the loops that
 * inline them; each function's accuracy is a few ulp over its domain,
 * checked against numpy through the kernels (tests/test_act.py,
 * test_loss.py).  Inputs are clamped so no operation overflows, and results
 * that would be subnormal flush to 0: saturating inputs give the exact
 * limit without raising floating-point flags or taking a slow path.  NaN
 * propagates.
 */
#ifndef FASTNN_VMATH_H
#define FASTNN_VMATH_H

#include <stdint.h>

/* Compile-time dispatch by CPU at run time: each kernel that loops over
 * these gets an AVX-512, an AVX2+FMA and a baseline x86-64 clone, chosen
 * when the library loads (GCC ifunc). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__) && !defined(FNN_NO_CLONES)
#define FNN_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", \
                                 "default")))
#define FNN_CLONES_ON 1
#else
#define FNN_CLONES
#endif

/* How the kernel bodies (*_impl.h) are compiled.  In their own .c files:
 * external functions with CPU dispatch (FNN_VEC) or plain (FNN_FN).  net.c
 * defines these as always-inline before including the bodies, so a whole
 * network step is one function per CPU target with no calls inside (what
 * makes tiny networks fast). */
#ifndef FNN_VEC
#define FNN_VEC FNN_CLONES
#define FNN_FN
#define FNN_FN_STATIC static
#define FNN_VEC_STATIC FNN_CLONES static
#endif

/* "omp simd" needs only -fopenmp-simd (no OpenMP runtime, no threads). */
#if defined(_OPENMP) || defined(FNN_OMP_SIMD)
#define FNN_PRAGMA(x) _Pragma(#x)
#define FNN_SIMD FNN_PRAGMA(omp simd)
#define FNN_SIMD_SUM(v) FNN_PRAGMA(omp simd reduction(+:v))
#define FNN_SIMD_SUM3(a, b, c) FNN_PRAGMA(omp simd reduction(+:a, b, c))
#else
#define FNN_SIMD
#define FNN_SIMD_SUM(v)
#define FNN_SIMD_SUM3(a, b, c)
#endif

static inline double fnn_bits_to_f64(int64_t i)
{
    union { int64_t i; double d; } u;
    u.i = i;
    return u.d;
}

static inline int64_t fnn_f64_to_bits(double d)
{
    union { int64_t i; double d; } u;
    u.d = d;
    return u.i;
}

static inline float fnn_bits_to_f32(int32_t i)
{
    union { int32_t i; float f; } u;
    u.i = i;
    return u.f;
}

static inline int32_t fnn_f32_to_bits(float f)
{
    union { int32_t i; float f; } u;
    u.f = f;
    return u.i;
}

/* ---- double ------------------------------------------------------------
 * x = k ln2 + r, |r| <= ln2/2, with k rounded by the 1.5*2^52 trick (k
 * then sits in the low bits of t).  e^r - 1 = r + r^2 P(r), Taylor to r^13
 * (truncation < 2e-17 relative), P evaluated by Estrin's scheme.  ln2 split fdlibm-style so k*LN2_HI is
 * exact. */
#define FNN_LOG2E 1.4426950408889634
#define FNN_LN2_HI 6.93147180369123816490e-01
#define FNN_LN2_LO 1.90821492927058770002e-10
#define FNN_SHIFT52 6755399441055744.0 /* 0x1.8p52 */

static inline double fnn_expm1_poly_f64(double r)
{
    /* Estrin's scheme: the same polynomial as Horner's rule, but in four
     * levels of independent multiply-adds instead of a chain of twelve, so
     * a lone vector (tiny layers) is not latency-bound. */
    const double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    const double p0 = 1.0 / 2.0 + r * (1.0 / 6.0);
    const double p1 = 1.0 / 24.0 + r * (1.0 / 120.0);
    const double p2 = 1.0 / 720.0 + r * (1.0 / 5040.0);
    const double p3 = 1.0 / 40320.0 + r * (1.0 / 362880.0);
    const double p4 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0);
    const double p5 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0);
    const double q0 = p0 + r2 * p1, q1 = p2 + r2 * p3, q2 = p4 + r2 * p5;
    const double p = (q0 + r4 * q1) + r8 * q2;      /* sum_{i=0}^{11} r^i/(i+2)! */
    return r + r2 * p;
}

/* e^x for x <= 709 (larger x are clamped: the kernels only take e^x of
 * x <= 0).  Results below the smallest normal double flush to exactly 0
 * instead of going subnormal: no slow path on any CPU, and sigmoid /
 * softmax / softplus of saturating inputs are exactly 0 or 1 there. */
static inline double fnn_exp_f64(double x0)
{
    double x = x0 < -708.3964185322641 ? -708.3964185322641 : x0; /* ln DBL_MIN */
    x = x > 709.0 ? 709.0 : x;
    double t = x * FNN_LOG2E + FNN_SHIFT52;
    double kf = t - FNN_SHIFT52;
    int64_t k = fnn_f64_to_bits(t) - fnn_f64_to_bits(FNN_SHIFT52);
    double r = (x - kf * FNN_LN2_HI) - kf * FNN_LN2_LO;
    double q = fnn_expm1_poly_f64(r);
    double s = fnn_bits_to_f64((int64_t)((uint64_t)(k + 1023) << 52));
    double y = s * q + s;                         /* k in [-1022, 1023] */
    return x0 < -708.3964185322641 ? 0.0 : y;
}

/* e^x - 1 without cancellation near 0; clamped to [-40, 709] (below -40
 * the result is -1 to double precision). */
static inline double fnn_expm1_f64(double x)
{
    x = x < -40.0 ? -40.0 : x;
    x = x > 709.0 ? 709.0 : x;
    double t = x * FNN_LOG2E + FNN_SHIFT52;
    double kf = t - FNN_SHIFT52;
    int64_t k = fnn_f64_to_bits(t) - fnn_f64_to_bits(FNN_SHIFT52);
    double r = (x - kf * FNN_LN2_HI) - kf * FNN_LN2_LO;
    double q = fnn_expm1_poly_f64(r);
    double s = fnn_bits_to_f64((int64_t)((uint64_t)(k + 1023) << 52));
    return s * q + (s - 1.0);          /* exactly q when k == 0 */
}

/* log(1 + x) for x in [0, 1] (what softplus needs: x = e^-|z|).  u = 1+x
 * is split as 2^kk (1+f) with f in [sqrt(2)/2 - 1, sqrt(2) - 1], log(1+f)
 * by fdlibm's polynomial in s = f/(2+f); (x - (u-1))/u corrects the
 * rounding of u. */
static inline double fnn_log1p01_f64(double x)
{
    const double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01,
                 Lg3 = 2.857142874366239149e-01, Lg4 = 2.222219843214978396e-01,
                 Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                 Lg7 = 1.479819860511658591e-01;
    double u = 1.0 + x;
    double c = (x - (u - 1.0)) / u;
    int big = u > 1.4142135623730951;
    double f = big ? 0.5 * u - 1.0 : u - 1.0;
    double kk = big ? 1.0 : 0.0;
    double s = f / (2.0 + f);
    double z = s * s;
    double w = z * z;
    double t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
    double t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
    double R = t2 + t1;
    double hfsq = 0.5 * f * f;
    double lg = kk * FNN_LN2_HI
                - ((hfsq - (s * (hfsq + R) + kk * FNN_LN2_LO)) - f);
    return lg + c;
}

/* log x for a positive normal x (softmax's row sums, >= 1): x = 2^k f with
 * f in [1, 2), log x = k ln2 + log1p(f - 1), f - 1 exact; NaN and +inf are
 * returned as they are.  No libm call. */
static inline double fnn_log_f64(double x)
{
    const int64_t bits = fnn_f64_to_bits(x);
    const int64_t k = (bits >> 52) - 1023;
    const double f = fnn_bits_to_f64((bits & 0x000FFFFFFFFFFFFFLL)
                                     | 0x3FF0000000000000LL);
    const double kd = (double)k;
    const double r = (kd * FNN_LN2_HI + fnn_log1p01_f64(f - 1.0)) + kd * FNN_LN2_LO;
    return x - x == 0 ? r : x;                 /* NaN and +inf pass through */
}

/* ---- float -------------------------------------------------------------
 * Same scheme: Taylor to r^7 (truncation < 2e-8 relative). */
#define FNN_LOG2EF 1.44269504088896341f
#define FNN_LN2_HIF 0.693359375f
#define FNN_LN2_LOF (-2.12194440e-4f)
#define FNN_SHIFT23 12582912.0f /* 0x1.8p23 */

static inline float fnn_expm1_poly_f32(float r)
{
    /* Estrin's scheme, as for double */
    const float r2 = r * r, r4 = r2 * r2;
    const float p0 = 0.5f + r * (1.0f / 6.0f);
    const float p1 = 1.0f / 24.0f + r * (1.0f / 120.0f);
    const float p2 = 1.0f / 720.0f + r * (1.0f / 5040.0f);
    const float p = (p0 + r2 * p1) + r4 * p2;       /* sum_{i=0}^{5} r^i/(i+2)! */
    return r + r2 * p;
}

/* e^x for x <= 88 (clamped above), flushing results below the smallest
 * normal float to 0, as for double. */
static inline float fnn_exp_f32(float x0)
{
    float x = x0 < -87.33654475f ? -87.33654475f : x0;     /* ln FLT_MIN */
    x = x > 88.0f ? 88.0f : x;
    float t = x * FNN_LOG2EF + FNN_SHIFT23;
    float kf = t - FNN_SHIFT23;
    int32_t k = fnn_f32_to_bits(t) - fnn_f32_to_bits(FNN_SHIFT23);
    float r = (x - kf * FNN_LN2_HIF) - kf * FNN_LN2_LOF;
    float q = fnn_expm1_poly_f32(r);
    float s = fnn_bits_to_f32((int32_t)((uint32_t)(k + 127) << 23));
    float y = s * q + s;                          /* k in [-126, 127] */
    return x0 < -87.33654475f ? 0.0f : y;
}

/* e^x - 1, clamped to [-20, 88]. */
static inline float fnn_expm1_f32(float x)
{
    x = x < -20.0f ? -20.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float t = x * FNN_LOG2EF + FNN_SHIFT23;
    float kf = t - FNN_SHIFT23;
    int32_t k = fnn_f32_to_bits(t) - fnn_f32_to_bits(FNN_SHIFT23);
    float r = (x - kf * FNN_LN2_HIF) - kf * FNN_LN2_LOF;
    float q = fnn_expm1_poly_f32(r);
    float s = fnn_bits_to_f32((int32_t)((uint32_t)(k + 127) << 23));
    return s * q + (s - 1.0f);
}

/* ---- activations built on the above, one per dtype -------------------- */

/* sigmoid with e = e^-|z| <= 1: exact 0 and 1 at the ends, no overflow. */
static inline double fnn_sigmoid_f64(double z)
{
    double e = fnn_exp_f64(z < 0 ? z : -z);
    double s = 1.0 / (1.0 + e);
    return z < 0 ? e * s : s;
}

static inline float fnn_sigmoid_f32(float z)
{
    float e = fnn_exp_f32(z < 0 ? z : -z);
    float s = 1.0f / (1.0f + e);
    return z < 0 ? e * s : s;
}

/* tanh(z) = -expm1(-2|z|) / (2 + expm1(-2|z|)), sign restored: accurate
 * near 0 (no cancellation) and exactly +-1 for large |z|. */
static inline double fnn_tanh_f64(double z)
{
    double e = fnn_expm1_f64(z < 0 ? 2.0 * z : -2.0 * z);
    double t = -e / (2.0 + e);
    return z < 0 ? -t : t;
}

static inline float fnn_tanh_f32(float z)
{
    float e = fnn_expm1_f32(z < 0 ? 2.0f * z : -2.0f * z);
    float t = -e / (2.0f + e);
    return z < 0 ? -t : t;
}

#endif /* FASTNN_VMATH_H */
