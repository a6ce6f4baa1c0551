/* Vector helpers and the vectorised exp, for one instruction set.
 *
 * Included by each isa_*.c (through isa.h) after it has set SK_VW (float64
 * lanes per vector) and SK_FMA(a, b, c) (a*b + c, fused where the ISA has
 * it).  The vectors are GCC/Clang vector extensions; the compiler maps them
 * onto the registers of the target that the translation unit is compiled
 * for.
 *
 * exp
 * ---
 * Only exp(z) for z <= 0 is needed by the softmax family (z = x - max), and a
 * general version (any z) by the log_softmax VJP.  z is reduced as
 *     z = k ln2 + r,   k = round(z / ln2),   |r| <= ln2/2.
 * exp(r) = 1 + r + r^2 P(r), P a polynomial fitted at Chebyshev nodes on
 * [-0.347, 0.347]:
 *   - float32 family: r = z - k ln2 in one fused multiply-add with ln2 rounded
 *     to float64; with |k| <= 1077 that adds at most 2^-45 relative error.  P
 *     has degree 5, relative error < 2^-32 (measured with mpmath at 2001
 *     points); the float32 result is rounded from float64, so the total stays
 *     within 0.5 + 2^-7 ULP of float32.
 *     Where the ISA can pick lanes of a 16-entry table (SK_PERM16, AVX-512),
 *     z = (k/16) ln2 + r instead, |r| <= ln2/32, and
 *         exp(z) = 2^floor(k/16) * T[k mod 16] * (1 + r + r^2 (1/2 + r/6 + r^2/24))
 *     with T[j] = 2^(j/16) rounded to float64: the truncated Taylor series
 *     errs by at most (ln2/32)^5 / 120 < 2^-34.5 (relative), the reduction by
 *     2^-45 as above, the roundings by a few 2^-53; 15 vector operations
 *     instead of 17 on the hot path.
 *   - float64 family: ln2 split in a 32-bit head (k * head and z - k * head
 *     are exact) and a tail.  P has degree 10, approximation error < 2^-61;
 *     1 + r is kept as an exact pair and the low part of the exact shift (lo,
 *     from TwoSum) and of the reduction is added as
 *     exp(r + d) = exp(r) (1 + d); the result is within 0.7 ULP of float64
 *     (rounding analysis; tests measure it against mpmath).
 * 2^k is applied as 2^(k+512) * 2^-512, so results in the subnormal range are
 * rounded once (gradual underflow) and the exponent never overflows; where
 * the ISA scales by a power of two in one instruction (SK_SCALEF, AVX-512's
 * vscalefpd: y * 2^floor(k), one rounding) that replaces the two products
 * and gives the same result in four fewer operations.
 */
#include <math.h>
#include <string.h>

#define VW SK_VW
typedef double vd __attribute__((vector_size(VW * 8)));
typedef long long vl __attribute__((vector_size(VW * 8)));
typedef float vf __attribute__((vector_size(VW * 4)));

#define INF __builtin_inf()

static inline vd splat(double v) { return (vd){0} + v; }
static inline vd sel(vl m, vd a, vd b) { return (vd)(((vl)a & m) | ((vl)b & ~m)); }

/* max(z, c) that keeps a NaN z */
static inline vd clamp_below(vd z, double c) {
#ifdef SK_MAX
    return SK_MAX(splat(c), z);
#else
    return sel((vl)(z < c), splat(c), z);
#endif
}
#define LT(a, b) ((vl)((a) < (b)))
#define GT(a, b) ((vl)((a) > (b)))
#define EQ(a, b) ((vl)((a) == (b)))
#define NE(a, b) ((vl)((a) != (b)))

static inline vd ld_f(const float *p) {
#ifdef SK_LOAD_F
    return SK_LOAD_F(p);
#else
    vf t;
    memcpy(&t, p, sizeof t);
    return __builtin_convertvector(t, vd);
#endif
}
static inline vd ld_d(const double *p) {
    vd t;
    memcpy(&t, p, sizeof t);
    return t;
}
static inline void st_f(float *p, vd v) {
    vf t = __builtin_convertvector(v, vf);
    memcpy(p, &t, sizeof t);
}
static inline void st_d(double *p, vd v) { memcpy(p, &v, sizeof v); }

static inline double hsum(vd v) {
    double s = v[0];
    for (int i = 1; i < VW; i++) s += v[i];
    return s;
}
static inline double hmax(vd v) {
    double s = v[0];
    for (int i = 1; i < VW; i++) s = v[i] > s ? v[i] : s;
    return s;
}
static inline long long hcount(vl m) {
    long long c = 0;
    for (int i = 0; i < VW; i++) c -= m[i];
    return c;
}

static const double SK_LOG2E = 1.4426950408889634;
static const double SK_SHIFT = 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */
static const double SK_LN2HI = 6.93147180369123816490e-01; /* 32 significant bits */
static const double SK_LN2LO = 1.90821492927058770002e-10;
static const double SK_LN2 = 0.6931471805599453;

static inline vd poly_f32(vd r) {
    vd p = SK_FMA(splat(0.00019891103420544327), r, splat(0.0013933751387987224));
    p = SK_FMA(p, r, splat(0.008333310823923211));
    p = SK_FMA(p, r, splat(0.04166646401078555));
    p = SK_FMA(p, r, splat(0.16666666681725));
    return SK_FMA(p, r, splat(0.5000000013557447));
}

#ifdef SK_PERM16
/* 2^(j/16), j = 0 .. 15, rounded to float64 */
static const double SK_EXP2_16[16] = {
    1.0,
    1.0442737824274138,
    1.0905077326652577,
    1.1387886347566916,
    1.189207115002721,
    1.241857812073484,
    1.2968395546510096,
    1.3542555469368927,
    1.4142135623730951,
    1.4768261459394993,
    1.5422108254079407,
    1.6104903319492543,
    1.681792830507429,
    1.7562521603732995,
    1.8340080864093424,
    1.9152065613971474,
};

/* exp(z) for z in [-746, 0] (or NaN), float32 family: see the top */
static inline vd vexp_table(vd z) {
    vd kd = SK_FMA(z, splat(16.0 * SK_LOG2E), splat(SK_SHIFT));
    vd k16 = SK_FMA(kd, splat(0.0625), splat(-SK_SHIFT * 0.0625)); /* k / 16, exactly */
    vd r = SK_FMA(k16, splat(-SK_LN2), z);
    vd p = SK_FMA(splat(1.0 / 24.0), r, splat(1.0 / 6.0));
    p = SK_FMA(p, r, splat(0.5));
    vd q = SK_FMA(r * r, p, r);
    vd t = SK_PERM16(kd, ld_d(SK_EXP2_16), ld_d(SK_EXP2_16 + 8));
    return SK_SCALEF(SK_FMA(t, q, t), k16);
}
#endif

static inline vd poly_f64(vd r) {
    vd p = SK_FMA(splat(2.091477283224809e-09), r, splat(2.510533724466521e-08));
    p = SK_FMA(p, r, splat(2.755727343657049e-07));
    p = SK_FMA(p, r, splat(2.755725511097889e-06));
    p = SK_FMA(p, r, splat(2.480158732571076e-05));
    p = SK_FMA(p, r, splat(0.00019841269875048905));
    p = SK_FMA(p, r, splat(0.0013888888888883703));
    p = SK_FMA(p, r, splat(0.00833333333332607));
    p = SK_FMA(p, r, splat(0.04166666666666667));
    p = SK_FMA(p, r, splat(0.1666666666666667));
    return SK_FMA(p, r, splat(0.5));
}

/* exp(z + lo) for z <= 0 (or NaN); `comp` selects the float64 accuracy.  With
 * `general`, any z is accepted (overflow gives +inf). */
static inline vd vexp(vd z, vd lo, int comp, int general) {
    /* Below -746, exp(z + lo) rounds to 0 (|lo| is at most about ulp(z)), but
       lo can be as large as ulp(z) itself: it must not survive the clamp
       (exp(-746 + lo) would be nonzero, or +inf). */
    if (comp) lo = sel(LT(z, splat(-746.0)), splat(0.0), lo);
    z = clamp_below(z, -746.0);
#ifdef SK_PERM16
    if (!comp && !general) return vexp_table(z);
#endif
    if (general) z = sel(GT(z, splat(710.0)), splat(710.0), z);
    vd kd = SK_FMA(z, splat(SK_LOG2E), splat(SK_SHIFT));
    vd kf = kd - SK_SHIFT;
    vd y;
    if (comp) {
        vd rh = SK_FMA(kf, splat(-SK_LN2HI), z);
        vd c = SK_FMA(kf, splat(-SK_LN2LO), lo);
        vd r = rh + c;
        vd d = c - (r - rh);
        vd s1 = 1.0 + r;
        vd e1 = r - (s1 - 1.0);
        vd t = SK_FMA(r * r, poly_f64(r), SK_FMA(d, r, d) + e1);
        y = s1 + t;
    } else {
        vd r = SK_FMA(kf, splat(-SK_LN2), z);
        y = 1.0 + SK_FMA(r * r, poly_f32(r), r);
    }
    if (general) {
        vl neg = LT(kf, splat(0.0));
        vl bias = (vl)sel(neg, (vd)((vl){0} + 1535), (vd)((vl){0} + 1022));
        vd scale = (vd)(((vl)kd + bias) << 52);
        return (y * scale) * sel(neg, splat(0x1p-512), splat(2.0));
    }
#ifdef SK_SCALEF
    (void)kd;
    return SK_SCALEF(y, kf);
#else
    vd scale = (vd)(((vl)kd + 1535) << 52);
    return (y * scale) * 0x1p-512;
#endif
}

/* a / b, given rb = 1 / b.  With a fused multiply-add the quotient from the
 * reciprocal is corrected once with its exact remainder (Markstein), which
 * gives the rounded quotient except in rare near-halfway cases (then 1 ULP
 * off) at a fraction of the cost of a division; without one, a division. */
static inline vd vdiv(vd a, vd b, vd rb) {
#if SK_HAVE_FMA
    vd q = a * rb;
    vd rem = SK_FMA(-q, b, a);
    return SK_FMA(rem, rb, q);
#else
    (void)rb;
    return a / b;
#endif
}
