/* Range kernels of one precision family: a template that isa.h includes
 * twice per instruction set, with its parameters set:
 *   FT    the element type: float, or double;
 *   COMP  0 for the float32 family (computed in float64), 1 for the float64
 *         family (exact shift and compensated sums);
 *   FSUF  the suffix of the names: f32, or f64.
 * It defines the table `family_<FSUF>` (range_kernels.h), and at its end it
 * undefines its parameters and every macro it defines, so that the next
 * inclusion starts clean.
 *
 * Every loop body is one vector; the last, partial vector of a range is
 * padded (-inf logits, zero weights and cotangents) and goes through the same
 * code, so the numerics never depend on where an element sits. */

#define CAT2(a, b) a##b
#define XCAT2(a, b) CAT2(a, b)
#define CAT3(a, b, c) a##_##b##_##c
#define XCAT3(a, b, c) CAT3(a, b, c)
#define FN(name) XCAT3(name, SK_ISA, FSUF)

/* one vector of the family's type, whole */
#if COMP
#define LOAD(p) ld_d(p)
#define STORE(p, v) st_d(p, v)
#define ACCUMULATE(s, c, v) vcompensated_add(&(s), &(c), (v))
#else
#define LOAD(p) ld_f(p)
#define STORE(p, v) st_f(p, v)
#define ACCUMULATE(s, c, v) ((s) += (v))
#endif

/* The m < VW elements at p, padded with `fill`, and the store of the first m
 * lanes. */
static inline vd FN(load_tail)(const FT *p, size_t m, double fill) {
    FT buf[VW];
    for (size_t l = 0; l < VW; l++) buf[l] = l < m ? p[l] : (FT)fill;
    return LOAD(buf);
}
static inline void FN(store_tail)(FT *p, size_t m, vd v) {
    FT buf[VW];
    STORE(buf, v);
    memcpy(p, buf, m * sizeof(FT));
}
static inline vd FN(load_tail_f64)(const double *p, size_t m, double fill) {
    double buf[VW];
    for (size_t l = 0; l < VW; l++) buf[l] = l < m ? p[l] : fill;
    return ld_d(buf);
}
static inline void FN(store_tail_f64)(double *p, size_t m, vd v) {
    double buf[VW];
    st_d(buf, v);
    memcpy(p, buf, m * sizeof(double));
}

/* The VW elements at i of a range of n: a whole vector, or the tail padded
 * with `fill`; the store writes only the elements before n.  _F64: of a
 * float64 buffer, whatever the family. */
#define LOAD_AT(p, i, n, fill) ((i) + VW <= (n) ? LOAD((p) + (i)) : FN(load_tail)((p) + (i), (n) - (i), (fill)))
#define LOAD_F64_AT(p, i, n, fill) \
    ((i) + VW <= (n) ? ld_d((p) + (i)) : FN(load_tail_f64)((p) + (i), (n) - (i), (fill)))
#define STORE_AT(p, i, n, v)                               \
    do {                                                   \
        if ((i) + VW <= (n)) STORE((p) + (i), (v));        \
        else FN(store_tail)((p) + (i), (n) - (i), (v));    \
    } while (0)
#define STORE_F64_AT(p, i, n, v)                           \
    do {                                                   \
        if ((i) + VW <= (n)) st_d((p) + (i), (v));         \
        else FN(store_tail_f64)((p) + (i), (n) - (i), (v)); \
    } while (0)

#if COMP
static inline void FN(store_part)(sk_part *p, vd s, vd c, vl maxima) {
    hsum_compensated(s, c, &p->hi, &p->lo);
    p->maxima = (double)hcount(maxima);
}
#else
static inline void FN(store_part)(sk_part *p, vd s, vd c, vl maxima) {
    (void)c;
    p->hi = hsum(s);
    p->lo = 0.0;
    p->maxima = (double)hcount(maxima);
}
#endif

/* The shifted (and scaled) logit z = (x - a) / T as hi + lo; lo is exact
 * (TwoSum, and TwoProduct for the quotient's remainder) in the float64
 * family and 0 in the float32 one, whose difference is exact in float64. */
static inline vd FN(shift)(vd x, double a, double T, vd *lo) {
#if COMP
    vd va = splat(a);
    vd l;
    vd hi = vtwo_diff(x, va, &l);
    if (T != 1.0) {
        vd vt = splat(T);
        /* x - a beyond DBL_MAX (x and a near opposite ends of the range) can
           still give a finite (x - a) / T: halves, divided by T / 2 (exact,
           as both |x| and |a| exceed DBL_MAX / 2 there) */
        vl over = NE(hi - hi, splat(0.0)) & EQ(x - x, splat(0.0));
        if (hcount(over)) {
            vd lh;
            vd hh = vtwo_diff(x * 0.5, va * 0.5, &lh);
            hi = sel(over, hh, hi);
            l = sel(over, lh, l);
            vt = sel(over, splat(T * 0.5), vt);
        }
        vd q = hi / vt;
        vd rem = vquotient_remainder(hi, q, vt);
        l = sel(EQ(q - q, splat(0.0)), (rem + l) / vt, splat(0.0));
        hi = q;
    }
    *lo = l;
    return hi;
#else
    vd z = x - a;
    if (T != 1.0) z = z / T;
    *lo = splat(0.0);
    return z;
#endif
}

/* The first index in [0, n) of the vector lanes' maxima: lane l of `m0`
 * (and `m1`) holds the largest of the elements i * 2 * lanes + l (+ lanes),
 * first reached in vector iteration `it0[l]` (`it1[l]`); n when no lane
 * holds m. */
#define FIRST_OF_LANES(m0, m1, it0, it1, lanes, m, first)                      \
    do {                                                                       \
        for (int l = 0; l < (lanes); l++) {                                    \
            size_t j0 = (size_t)(it0)[l] * 2 * (lanes) + l;                    \
            size_t j1 = (size_t)(it1)[l] * 2 * (lanes) + (lanes) + l;          \
            if ((m0)[l] == (m) && j0 < (first)) (first) = j0;                  \
            if ((m1)[l] == (m) && j1 < (first)) (first) = j1;                  \
        }                                                                      \
    } while (0)

/* The end of a maximum scan: elements [i, n) one at a time after the vector
 * loop's maximum m (first reached at `at`, n if not asked for) and NaN flag;
 * the results go to *nan and, when `first` is not NULL, *first. */
static inline __attribute__((always_inline)) double FN(max_tail)(const FT *x, size_t i, size_t n, double m, size_t at,
                                                                  int found, int *nan, size_t *first) {
    for (; i < n; i++) {
        double v = x[i];
        if (v != v) {
            found = 1;
        } else if (v > m || (v == m && at == n)) {
            m = v;
            at = i;
        }
    }
    *nan = found;
    if (first) *first = at;
    return m;
}

#if COMP
static inline __attribute__((always_inline)) double FN(max_t)(const FT *x, size_t n, int *nan, size_t *first,
                                                               int want_first) {
    vd m0 = splat(-INF), m1 = m0;
    vl bad = {0}, it0 = {0}, it1 = {0}, it = {0};
    size_t i = 0;
    for (; i + 2 * VW <= n; i += 2 * VW) {
        vd u = LOAD(x + i), w = LOAD(x + i + VW);
        vl gu = GT(u, m0), gw = GT(w, m1);
        bad |= NE(u, u) | NE(w, w);
        m0 = sel(gu, u, m0);
        m1 = sel(gw, w, m1);
        if (want_first) {
            it0 = (it & gu) | (it0 & ~gu);
            it1 = (it & gw) | (it1 & ~gw);
            it += 1;
        }
    }
    double m = hmax(sel(GT(m1, m0), m1, m0));
    int found = hcount(bad) != 0;
    size_t at = n;
    if (want_first && i) FIRST_OF_LANES(m0, m1, it0, it1, VW, m, at);
    return FN(max_tail)(x, i, n, m, at, found, nan, want_first ? first : NULL);
}
#else
/* the maximum needs no widening: twice the lanes in float */
typedef float vfw __attribute__((vector_size(VW * 8)));
typedef int viw __attribute__((vector_size(VW * 8)));
#define FW (2 * VW)
static inline __attribute__((always_inline)) double FN(max_t)(const FT *x, size_t n, int *nan, size_t *first,
                                                               int want_first) {
    vfw m0 = (vfw){0} - __builtin_inff(), m1 = m0;
    viw bad = {0}, it0 = {0}, it1 = {0}, it = {0};
    size_t i = 0;
    for (; i + 2 * FW <= n; i += 2 * FW) {
        vfw u, w;
        memcpy(&u, x + i, sizeof u);
        memcpy(&w, x + i + FW, sizeof w);
        viw gu = (viw)(u > m0), gw = (viw)(w > m1);
        bad |= (viw)(u != u) | (viw)(w != w);
        m0 = (vfw)(((viw)u & gu) | ((viw)m0 & ~gu));
        m1 = (vfw)(((viw)w & gw) | ((viw)m1 & ~gw));
        if (want_first) {
            it0 = (it & gu) | (it0 & ~gu);
            it1 = (it & gw) | (it1 & ~gw);
            it += 1;
        }
    }
    double m = -INF;
    int found = 0;
    for (int l = 0; l < FW; l++) {
        if (m0[l] > m) m = m0[l];
        if (m1[l] > m) m = m1[l];
        found |= bad[l] != 0;
    }
    size_t at = n;
    if (want_first && i) FIRST_OF_LANES(m0, m1, it0, it1, FW, m, at);
    return FN(max_tail)(x, i, n, m, at, found, nan, want_first ? first : NULL);
}
#endif

/* The first argmax comes with the maximum, in the same pass: each lane
 * keeps the vector iteration where it last grew (strictly, so its first
 * occurrence), a blend per vector in a loop bound by the reads. */
static double FN(max)(const void *x, size_t n, int *nan, size_t *first) {
    if (first) return FN(max_t)(x, n, nan, first, 1);
    return FN(max_t)(x, n, nan, NULL, 0);
}

static size_t FN(count_unmasked)(const void *xv, size_t n) {
    const FT *x = xv;
    vl cnt = {0};
    size_t i = 0;
    for (; i + VW <= n; i += VW) cnt += NE(LOAD(x + i), splat(-INF));
    size_t c = (size_t)hcount(cnt);
    for (; i < n; i++) c += (double)x[i] != -INF;
    return c;
}

/* log_softmax at i: (hi - log_sum) + lo */
static inline vd FN(log_softmax_at)(const FT *x, size_t i, size_t n, double a, double T, double log_sum) {
    vd lo;
    vd hi = FN(shift)(LOAD_AT(x, i, n, -INF), a, T, &lo);
    vd y = hi - log_sum;
#if COMP
    y = y + lo;
#endif
    return y;
}

/* The vector at i of a known output (sk_write): e * factor, or log_softmax
 * when e is NULL. */
static inline vd FN(output_at)(const double *e, const FT *x, size_t n, double divisor, double factor, double a,
                               double T, double log_sum, size_t i) {
    if (!e) return FN(log_softmax_at)(x, i, n, a, T, log_sum);
#if COMP
    return vdiv(LOAD_F64_AT(e, i, n, 0.0), splat(divisor), splat(factor));
#else
    (void)divisor;
    return LOAD_F64_AT(e, i, n, 0.0) * factor;
#endif
}

/* elements per 64-byte cache line */
#define LINE (64 / (int)sizeof(FT))

/* Writing a row-shaped output.  With `stream` and an ISA that has them
 * (SK_STREAM_V), the whole 64-byte lines of the row, [h, end), are written
 * with non-temporal stores, which skip reading each line into the cache
 * first; the head and tail take ordinary stores, and a fence ends the row.
 * The caller then fetches nothing of the output ahead.  Every element is
 * computed by the same expression either way. */
#if defined(SK_STREAM_V) && !COMP
static inline void FN(lines)(const FT *out, size_t n, int stream, size_t *h, size_t *end) {
    uintptr_t p = (uintptr_t)out;
    size_t hh = !stream || p % sizeof(FT) ? n : (64 - p % 64) % 64 / sizeof(FT);
    if (hh > n) hh = n;
    *h = hh;
    *end = hh + (n - hh) / LINE * LINE;
}
#define STREAM_AT(out, i, v) SK_STREAM_V((out) + (i), (v))
#define STREAM_END(stream)      \
    do {                        \
        if (stream) SK_FENCE(); \
    } while (0)
#else
static inline void FN(lines)(const FT *out, size_t n, int stream, size_t *h, size_t *end) {
    (void)out;
    (void)stream;
    *h = *end = n;
}
#define STREAM_AT(out, i, v) ((void)(out), (void)(i), (void)(v))
#define STREAM_END(stream) ((void)(stream))
#endif

/* The elements of [0, n) outside the streamed lines [h, end). */
#define WRITE_REST(out, n, h, end, i, Y)                                  \
    do {                                                                  \
        for (size_t i = 0; i < (h); i += VW) STORE_AT((out), i, (h), (Y)); \
        for (size_t i = (end); i < (n); i += VW) STORE_AT((out), i, (n), (Y)); \
    } while (0)

/* Writes w, except the streamed lines before `from` (already written).
 * Inlined per kind, so that each loop carries no test of it. */
static inline __attribute__((always_inline)) void FN(write_t)(const double *e, const FT *x, double T,
                                                             const sk_write *w, int stream, size_t from) {
    FT *out = w->out;
    size_t n = w->n, h, end;
    double d = w->divisor, f = w->factor, a = w->shift, L = w->log_sum;
    FN(lines)(out, n, stream, &h, &end);
    for (size_t i = from > h ? from : h; i < end; i += VW)
        STREAM_AT(out, i, FN(output_at)(e, x, n, d, f, a, T, L, i));
    WRITE_REST(out, n, h, end, i, FN(output_at)(e, x, n, d, f, a, T, L, i));
    STREAM_END(stream);
}

static void FN(write_from)(const sk_write *w, int stream, size_t from) {
    if (w->e) FN(write_t)(w->e, NULL, 1.0, w, stream, from);
    else if (w->temperature == 1.0) FN(write_t)(NULL, w->x, 1.0, w, stream, from);
    else FN(write_t)(NULL, w->x, w->temperature, w, stream, from);
}

static void FN(write)(const sk_write *w, int stream) { FN(write_from)(w, stream, 0); }

/* Per block: sum of exp(z) over the entries with z != 0, and the number of
 * entries with z == 0 (x equal to the maximum; their terms are exactly 1).
 * With `e`, every exp(z) is stored.  Meanwhile the memory traffic of `ah`
 * runs: one cache line of each look-ahead stream prefetched per vector until
 * they are done, spread over the blocks in proportion, and the log_softmax
 * row `ah->deferred` written, a streamed line per line of x read (float32
 * family, where the ISA streams), the rest of it after the loop.  Inlined
 * for the common cases, so that the T == 1 loops carry no division, and only
 * the loop with a row to write (`wr_row`) tests for it. */
static inline __attribute__((always_inline)) void FN(exp_sum_t)(const FT *x, size_t n, double a, double T, double *e,
                                                               sk_part *parts, const sk_ahead *ah, int wr_row) {
    const char *rd = ah->next_in, *wr = ah->next_out;
    const sk_write *w = &ah->deferred;
    FT *wo = w->out;
    const FT *wx = w->x;
    size_t wn = w->n, wh = 0, wend = 0, lag = 0;
    double wa = w->shift, wT = w->temperature, wL = w->log_sum;
    if (wr_row) {
        FN(lines)(wo, wn, 1, &wh, &wend);
        /* The write trails the read by `lag` elements, half a page apart: a
           load from the same address modulo 4096 as a pending store waits
           for that store to complete. */
        lag = ((uintptr_t)wo - (uintptr_t)x + 2048) % 4096 / sizeof(FT);
    }
    size_t wi = wh;
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += SK_BLOCK, bi++) {
        size_t bn = n - b0 < SK_BLOCK ? n - b0 : SK_BLOCK;
        const char *rd_end = rd ? ah->next_in + ah->next_in_bytes * (b0 + bn) / n : NULL;
        const char *wr_end = wr ? ah->next_out + ah->next_out_bytes * (b0 + bn) / n : NULL;
        vd s = splat(0.0), c = splat(0.0);
        vl maxima = {0};
#if defined(SK_TIE_MASK) && !COMP
        long long ties = 0;
#endif
        for (size_t i = b0; i < b0 + bn; i += VW) {
            if (rd < rd_end) {
                __builtin_prefetch(rd, 0, 2);
                rd += 64;
            }
            if (wr < wr_end) {
                __builtin_prefetch(wr, 1, 2);
                wr += 64;
            }
            /* a whole line at a time: a write-combining buffer flushed with
               part of a line costs a read of it */
            if (wr_row && wi < wend && wi + lag <= i && i % LINE == LINE - VW) {
                for (int l = 0; l < LINE / VW; l++, wi += VW)
                    STREAM_AT(wo, wi, FN(log_softmax_at)(wx, wi, wn, wa, wT, wL));
            }
            vd lo;
            vd z = FN(shift)(LOAD_AT(x, i, b0 + bn, -INF), a, T, &lo);
            vd ev = vexp(z, lo, COMP, 0);
#if defined(SK_TIE_MASK) && !COMP
            /* the same as below, with the ties as a bit mask: fewer operations */
            unsigned tie = SK_TIE_MASK(z);
            s = SK_ADD_UNLESS(s, tie, ev);
            ties += __builtin_popcount(tie);
#else
            vl eq = EQ(z, splat(0.0));
            maxima += eq;
            ACCUMULATE(s, c, sel(eq, splat(0.0), ev));
#endif
            if (e) STORE_F64_AT(e, i, b0 + bn, ev);
        }
        FN(store_part)(&parts[bi], s, c, maxima);
#if defined(SK_TIE_MASK) && !COMP
        parts[bi].maxima = (double)ties;
#endif
    }
    if (wr_row) FN(write_from)(w, 1, wi);
}

static void FN(exp_sum)(const void *xv, size_t n, double a, double T, double *e, sk_part *parts,
                        const sk_ahead *ah) {
    if (T != 1.0) FN(exp_sum_t)(xv, n, a, T, e, parts, ah, ah->deferred.out != NULL);
    else if (ah->deferred.out) FN(exp_sum_t)(xv, n, a, 1.0, e, parts, ah, 1);
    else if (e) FN(exp_sum_t)(xv, n, a, 1.0, e, parts, ah, 0);
    else FN(exp_sum_t)(xv, n, a, 1.0, NULL, parts, ah, 0);
}

/* p = e / sum: the corrected quotient in the float64 family, the product
 * with the reciprocal r in the float32 one. */
static inline vd FN(prob)(vd e, vd sum, vd r) {
#if COMP
    return vdiv(e, sum, r);
#else
    (void)sum;
    return e * r;
#endif
}

/* The cross-entropy gradient from C p - c: ((C p - c) + zg p) / divisor
 * (sk_ce_grad; ce.c states the same for single entries).  rdiv = 1 / div.
 * cg by value: a store to the gradient cannot change it, so its fields stay
 * out of the loop. */
static inline vd FN(ce_grad_from)(vd cp_minus_c, vd p, sk_ce_grad cg, vd div, vd rdiv) {
    vd y = cp_minus_c;
    if (cg.has_z) y = y + cg.zg * p;
    if (cg.divisor != 1.0) {
#if COMP
        y = vdiv(y, div, rdiv);
#else
        (void)div;
        y = y * rdiv;
#endif
    }
    return y;
}

#if COMP
static void FN(ce_onehot_grad)(const double *e, void *gv, size_t n, const sk_ce_grad *cgp, int stream) {
    (void)stream;
    FT *g = gv;
    const sk_ce_grad cg = *cgp;
    vd sum = splat(cg.sum), r = splat(1.0 / cg.sum);
    vd div = splat(cg.divisor), rdiv = splat(1.0 / cg.divisor);
    for (size_t i = 0; i < n; i += VW) {
        vd p = FN(prob)(LOAD_F64_AT(e, i, n, 0.0), sum, r);
        STORE_AT(g, i, n, FN(ce_grad_from)(cg.coef_sum * p, p, cg, div, rdiv));
    }
}
#else
/* Every entry is e_j times one factor, (C / sum + zg / sum) / divisor: the
 * formula of ce_grad_from with p = e / sum factored out, so that the
 * gradient goes through `write` and streams. */
static void FN(ce_onehot_grad)(const double *e, void *g, size_t n, const sk_ce_grad *cg, int stream) {
    double factor = cg->coef_sum / cg->sum;
    if (cg->has_z) factor += cg->zg / cg->sum;
    if (cg->divisor != 1.0) factor /= cg->divisor;
    sk_write w = {.out = g, .n = n, .e = e, .divisor = cg->sum, .factor = factor, .temperature = 1.0};
    FN(write)(&w, stream);
}
#endif

/* Class coefficients of the lanes at absolute class index j0 .. j0 + VW - 1. */
static inline vd FN(class_coef)(const sk_coef *cf, vd xf, vd w, vd q, double j0) {
    vd u = sel(NE(xf, splat(-INF)), cf->weights ? cf->inv_unmasked * w : splat(cf->inv_unmasked), splat(0.0));
    vd base = cf->smoothing * u;
    if (cf->probs) {
        vd qw = cf->weights ? q * w : q;
        vd y = cf->prob_scale * qw;
        return cf->smoothing != 0.0 ? y + base : y;
    }
    vd idx = splat(j0);
    for (int l = 0; l < VW; l++) idx[l] += l;
    return sel(EQ(idx, splat((double)cf->target)), cf->target_coef + base, base);
}

static void FN(ce_terms)(const void *xv, const void *xfv, size_t n, double a, double log_sum, const sk_coef *cf,
                         size_t off, size_t k, sk_part *loss, sk_part *coef_sum, sk_part *coef_rest) {
    const FT *x = xv, *xf = xfv, *q = cf->probs;
    const double *w = cf->weights ? cf->weights + off : NULL;
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += SK_BLOCK, bi++) {
        size_t bn = n - b0 < SK_BLOCK ? n - b0 : SK_BLOCK, end = b0 + bn;
        vd s1 = splat(0.0), c1 = s1, s2 = s1, c2 = s1, s3 = s1, c3 = s1;
        for (size_t i = b0; i < end; i += VW) {
            vd lo;
            vd hi = FN(shift)(LOAD_AT(x, i, end, -INF), a, 1.0, &lo);
            vd nlp = log_sum - hi;
#if COMP
            nlp = nlp - lo;
#endif
            vd wv = w ? LOAD_F64_AT(w, i, end, 0.0) : splat(0.0);
            vd qv = q ? LOAD_AT(q, i, end, 0.0) : splat(0.0);
            vd cv = FN(class_coef)(cf, LOAD_AT(xf, i, end, -INF), wv, qv, (double)(off + i));
            if (!(i + VW <= end)) {
                /* padded lanes carry no coefficient */
                for (size_t l = end - i; l < VW; l++) cv[l] = 0.0;
            }
            vl zero = EQ(cv, splat(0.0));
            ACCUMULATE(s1, c1, sel(zero, splat(0.0), cv * nlp));
            ACCUMULATE(s2, c2, cv);
            vd idx = splat((double)i);
            for (int l = 0; l < VW; l++) idx[l] += l;
            ACCUMULATE(s3, c3, sel(EQ(idx, splat((double)k)), splat(0.0), cv));
        }
        vl none = {0};
        FN(store_part)(&loss[bi], s1, c1, none);
        FN(store_part)(&coef_sum[bi], s2, c2, none);
        FN(store_part)(&coef_rest[bi], s3, c3, none);
    }
}

static void FN(ce_grad)(const double *e, const void *xfv, void *gv, size_t n, const sk_ce_grad *cgp,
                        const sk_coef *cf, size_t off) {
    const FT *xf = xfv, *q = cf->probs;
    FT *g = gv;
    const double *w = cf->weights ? cf->weights + off : NULL;
    const sk_ce_grad cg = *cgp;
    vd sum = splat(cg.sum), r = splat(1.0 / cg.sum);
    vd div = splat(cg.divisor), rdiv = splat(1.0 / cg.divisor);
    for (size_t i = 0; i < n; i += VW) {
        vd p = FN(prob)(LOAD_F64_AT(e, i, n, 0.0), sum, r);
        vd wv = w ? LOAD_F64_AT(w, i, n, 0.0) : splat(0.0);
        vd qv = q ? LOAD_AT(q, i, n, 0.0) : splat(0.0);
        vd cv = FN(class_coef)(cf, LOAD_AT(xf, i, n, -INF), wv, qv, (double)(off + i));
        STORE_AT(g, i, n, FN(ce_grad_from)(cg.coef_sum * p - cv, p, cg, div, rdiv));
    }
}

/* softmax VJP: per block, sum of p g over p != 0 */
static void FN(softmax_vjp_dot)(const void *pv, const void *gv, size_t n, sk_part *parts) {
    const FT *p = pv, *g = gv;
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += SK_BLOCK, bi++) {
        size_t bn = n - b0 < SK_BLOCK ? n - b0 : SK_BLOCK, end = b0 + bn;
        vd s = splat(0.0), c = s;
        for (size_t i = b0; i < end; i += VW) {
            vd pp = LOAD_AT(p, i, end, 0.0), gg = LOAD_AT(g, i, end, 0.0);
            ACCUMULATE(s, c, sel(EQ(pp, splat(0.0)), splat(0.0), pp * gg));
        }
        vl none = {0};
        FN(store_part)(&parts[bi], s, c, none);
    }
}

/* softmax VJP: out = p (g - dot), 0 where p == 0 */
static void FN(softmax_vjp_write)(const void *pv, const void *gv, void *outv, size_t n, double dot) {
    const FT *p = pv, *g = gv;
    FT *out = outv;
    for (size_t i = 0; i < n; i += VW) {
        vd pp = LOAD_AT(p, i, n, 0.0), gg = LOAD_AT(g, i, n, 0.0);
        STORE_AT(out, i, n, sel(EQ(pp, splat(0.0)), splat(0.0), pp * (gg - dot)));
    }
}

/* log_softmax VJP: per block, sum of g over the entries with y != -inf */
static void FN(log_softmax_vjp_sum)(const void *yv, const void *gv, size_t n, sk_part *parts) {
    const FT *y = yv, *g = gv;
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += SK_BLOCK, bi++) {
        size_t bn = n - b0 < SK_BLOCK ? n - b0 : SK_BLOCK, end = b0 + bn;
        vd s = splat(0.0), c = s;
        for (size_t i = b0; i < end; i += VW) {
            vd yy = LOAD_AT(y, i, end, -INF), gg = LOAD_AT(g, i, end, 0.0);
            ACCUMULATE(s, c, sel(EQ(yy, splat(-INF)), splat(0.0), gg));
        }
        vl none = {0};
        FN(store_part)(&parts[bi], s, c, none);
    }
}

/* log_softmax VJP: out = g - exp(y) total, 0 where y == -inf.  exp is the
 * float64-accurate one in both families: the difference may cancel. */
static void FN(log_softmax_vjp_write)(const void *yv, const void *gv, void *outv, size_t n, double total) {
    const FT *y = yv, *g = gv;
    FT *out = outv;
    for (size_t i = 0; i < n; i += VW) {
        vd yy = LOAD_AT(y, i, n, -INF), gg = LOAD_AT(g, i, n, 0.0);
        vd ey = vexp(yy, splat(0.0), 1, 1);
        STORE_AT(out, i, n, sel(EQ(yy, splat(-INF)), splat(0.0), gg - ey * total));
    }
}

static const sk_family XCAT2(family_, FSUF) = {
    .max = FN(max),
    .count_unmasked = FN(count_unmasked),
    .exp_sum = FN(exp_sum),
    .write = FN(write),
    .ce_onehot_grad = FN(ce_onehot_grad),
    .ce_terms = FN(ce_terms),
    .ce_grad = FN(ce_grad),
    .softmax_vjp_dot = FN(softmax_vjp_dot),
    .softmax_vjp_write = FN(softmax_vjp_write),
    .log_softmax_vjp_sum = FN(log_softmax_vjp_sum),
    .log_softmax_vjp_write = FN(log_softmax_vjp_write),
};

#undef CAT2
#undef XCAT2
#undef CAT3
#undef XCAT3
#undef FN
#undef LOAD
#undef STORE
#undef ACCUMULATE
#undef LOAD_AT
#undef LOAD_F64_AT
#undef STORE_AT
#undef STORE_F64_AT
#undef FW
#undef FIRST_OF_LANES
#undef LINE
#undef STREAM_AT
#undef STREAM_END
#undef WRITE_REST
#undef FT
#undef COMP
#undef FSUF
