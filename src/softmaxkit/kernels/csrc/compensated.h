/* Error-free transformations: a sum, a difference or a product as a rounded
 * result plus its exact rounding error.  The scalar forms serve the row
 * programs; where simd.h has been included first (an isa_*.c), the same
 * transformations lane-wise on its vectors follow, with the compensated
 * accumulation the float64 family sums with.  The Python statement of the
 * same helpers is softmaxkit.numerics.precision.
 *
 * An infinite sum or difference has no rounding error (inf - inf would be
 * NaN): the helpers that guard for it say so.
 */
#ifndef SK_COMPENSATED_H
#define SK_COMPENSATED_H

/* Knuth's TwoSum: s + *err == a + b exactly (s finite). */
static inline double two_sum(double a, double b, double *err) {
    double s = a + b, bb = s - a;
    *err = (a - (s - bb)) + (b - bb);
    return s;
}

/* x - a as hi + *lo exactly (TwoSum of x and -a); *lo is 0 where hi is
 * infinite. */
static inline double two_diff(double x, double a, double *lo) {
    double hi = x - a, bb = hi - x;
    *lo = hi - hi == 0.0 ? (x - (hi - bb)) - (a + bb) : 0.0;
    return hi;
}

/* Adds v to the running sum *s + *e; an infinite *s takes no error term. */
static inline void compensated_add(double *s, double *e, double v) {
    double err, t = two_sum(*s, v, &err);
    *e += t - t == 0.0 ? err : 0.0;
    *s = t;
}

#endif

#if defined(SK_VW) && !defined(SK_COMPENSATED_VECTORS)
#define SK_COMPENSATED_VECTORS

/* TwoSum, lane-wise: s + *err == a + b exactly. */
static inline vd vtwo_sum(vd a, vd b, vd *err) {
    vd s = a + b;
    vd bb = s - a;
    *err = (a - (s - bb)) + (b - bb);
    return s;
}

/* two_diff, lane-wise: x - a as hi + *lo, *lo 0 where hi is infinite. */
static inline vd vtwo_diff(vd x, vd a, vd *lo) {
    vd hi = x - a;
    vd bb = hi - x;
    *lo = sel(EQ(hi - hi, splat(0.0)), (x - (hi - bb)) - (a + bb), splat(0.0));
    return hi;
}

/* Compensated accumulation: *s + *c carries the running sum. */
static inline void vcompensated_add(vd *s, vd *c, vd v) {
    vd err;
    vd t = vtwo_sum(*s, v, &err);
    *c += sel(EQ(t - t, splat(0.0)), err, splat(0.0));
    *s = t;
}

/* The lanes of a compensated accumulator (hi, lo) summed into one pair. */
static inline void hsum_compensated(vd hi, vd lo, double *out_hi, double *out_lo) {
    double s = hi[0], e = lo[0];
    for (int i = 1; i < VW; i++) {
        double err, t = two_sum(s, hi[i], &err);
        e += (t - t == 0.0 ? err : 0.0) + lo[i];
        s = t;
    }
    *out_hi = s;
    *out_lo = e;
}

#if !SK_HAVE_FMA
/* Veltkamp's split: a == hi + *lo, each with at most 26 significant bits, so
 * that products of halves are exact. */
static inline vd vsplit(vd a, vd *lo) {
    vd c = a * 134217729.0; /* 2^27 + 1 */
    vd hi = c - (c - a);
    *lo = a - hi;
    return hi;
}

/* Dekker's TwoProduct without a fused multiply-add: the rounding error of
 * p = a * b, so that a * b == p + error exactly (barring overflow). */
static inline vd vtwo_prod_err(vd a, vd b, vd p) {
    vd al, bl;
    vd ah = vsplit(a, &al), bh = vsplit(b, &bl);
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl;
}
#endif

/* The remainder hi - q t of a quotient q = hi / t, which is exact; q t itself
 * may overflow (|hi| near DBL_MAX) although the remainder cannot. */
static inline vd vquotient_remainder(vd hi, vd q, vd t) {
#if SK_HAVE_FMA
    return SK_FMA(-q, t, hi);
#else
    vd p = q * t;
    vd rem = (hi - p) - vtwo_prod_err(q, t, p);
    /* the product or the splits overflowed (q t, or a q or t above 2^996):
       the C library's fused multiply-add, lane by lane */
    vl bad = NE(rem - rem, splat(0.0)) & EQ(q - q, splat(0.0));
    if (hcount(bad))
        for (int i = 0; i < VW; i++)
            if (bad[i]) rem[i] = fma(-q[i], t[i], hi[i]);
    return rem;
#endif
}

#endif
