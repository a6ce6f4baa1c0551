/* Range kernels of one precision family, included twice by each
 * sk_isa_*.c: with FT float / COMP 0 (float32 family, computed in float64)
 * and FT double / COMP 1 (float64 family, exact shift and compensated sums).
 * Every loop body is one vector; the last, partial vector of a range is
 * padded (-inf logits, zero weights and cotangents) and goes through the same
 * code, so the numerics never depend on where an element sits. */

#define CAT3(a, b, c) a##_##b##_##c
#define XCAT3(a, b, c) CAT3(a, b, c)
#define FN(name) XCAT3(name, SK_ISA, FSUF)

#if COMP
#define LD(p) ld_d(p)
#define ST(p, v) st_d(p, v)
#define ACC(s, c, v) acc2(&(s), &(c), (v))
#else
#define LD(p) ld_f(p)
#define ST(p, v) st_f(p, v)
#define ACC(s, c, v) ((s) += (v))
#endif

static inline vd FN(ldt)(const FT *p, size_t m, double fill) {
    FT buf[VW];
    for (size_t l = 0; l < VW; l++) buf[l] = l < m ? p[l] : (FT)fill;
    return LD(buf);
}
static inline void FN(stt)(FT *p, size_t m, vd v) {
    FT buf[VW];
    ST(buf, v);
    memcpy(p, buf, m * sizeof(FT));
}
static inline vd FN(ldt_d)(const double *p, size_t m, double fill) {
    double buf[VW];
    for (size_t l = 0; l < VW; l++) buf[l] = l < m ? p[l] : fill;
    return ld_d(buf);
}
static inline void FN(stt_d)(double *p, size_t m, vd v) {
    double buf[VW];
    st_d(buf, v);
    memcpy(p, buf, m * sizeof(double));
}

/* Load VW elements at i of a range of n: a full vector, or the padded tail. */
#define LDX(p, i, n, fill) ((i) + VW <= (n) ? LD((p) + (i)) : FN(ldt)((p) + (i), (n) - (i), (fill)))
#define LDE(p, i, n, fill) ((i) + VW <= (n) ? ld_d((p) + (i)) : FN(ldt_d)((p) + (i), (n) - (i), (fill)))
#define STX(p, i, n, v)                              \
    do {                                             \
        if ((i) + VW <= (n)) ST((p) + (i), (v));     \
        else FN(stt)((p) + (i), (n) - (i), (v));     \
    } while (0)
#define STE(p, i, n, v)                              \
    do {                                             \
        if ((i) + VW <= (n)) st_d((p) + (i), (v));   \
        else FN(stt_d)((p) + (i), (n) - (i), (v));   \
    } while (0)

#if COMP
static inline void FN(store_part)(sk_part *p, vd s, vd c, vl cnt) {
    hsum2(s, c, &p->hi, &p->lo);
    p->cnt = (double)hcount(cnt);
}
#else
static inline void FN(store_part)(sk_part *p, vd s, vd c, vl cnt) {
    (void)c;
    p->hi = hsum(s);
    p->lo = 0.0;
    p->cnt = (double)hcount(cnt);
}
#endif

/* The shifted (and scaled) logit z = (x - a) / T as hi + lo; lo is exact
 * (TwoSum, and TwoProduct for the quotient's remainder) in the float64
 * family and 0 in the float32 one, whose difference is exact in float64. */
static inline vd FN(shift)(vd x, double a, double T, vd *lo) {
#if COMP
    vd va = splat(a);
    vd hi = x - va;
    vd bb = hi - x;
    vd l = (x - (hi - bb)) - (va + bb);
    l = sel(EQ(hi - hi, splat(0.0)), l, splat(0.0));
    if (T != 1.0) {
        vd vt = splat(T);
        /* x - a beyond DBL_MAX (x and a near opposite ends of the range) can
           still give a finite (x - a) / T: halves, divided by T / 2 (exact,
           as both |x| and |a| exceed DBL_MAX / 2 there) */
        vl over = NE(hi - hi, splat(0.0)) & EQ(x - x, splat(0.0));
        if (hcount(over)) {
            vd xh = x * 0.5, ah = va * 0.5;
            vd hh = xh - ah, bh = hh - xh;
            hi = sel(over, hh, hi);
            l = sel(over, (xh - (hh - bh)) - (ah + bh), l);
            vt = sel(over, splat(T * 0.5), vt);
        }
        /* the division's remainder hi - q T, which is exact; q T itself may
           overflow (|hi| near DBL_MAX) although the remainder cannot */
        vd q = hi / vt;
#if SK_HAVE_FMA
        vd rem = SK_FMA(-q, vt, hi);
#else
        vd p = q * vt;
        vd c1 = q * 134217729.0, qh = c1 - (c1 - q), ql = q - qh;
        vd c2 = vt * 134217729.0, th = c2 - (c2 - vt), tl = vt - th;
        vd perr = ((qh * th - p) + qh * tl + ql * th) + ql * tl;
        vd rem = (hi - p) - perr;
        /* Dekker's product overflowed (q T, or the splits of a q or T above
           2^996): the C library's fused multiply-add, lane by lane */
        vl bad = NE(rem - rem, splat(0.0)) & EQ(q - q, splat(0.0));
        if (hcount(bad))
            for (int i = 0; i < VW; i++)
                if (bad[i]) rem[i] = fma(-q[i], vt[i], hi[i]);
#endif
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

#if COMP
static double FN(max)(const void *xv, size_t n, int *nan) {
    const FT *x = xv;
    vd m0 = splat(-INF), m1 = m0;
    vl bad = {0};
    size_t i = 0;
    for (; i + 2 * VW <= n; i += 2 * VW) {
        vd u = LD(x + i), w = LD(x + i + VW);
        bad |= NE(u, u) | NE(w, w);
        m0 = sel(GT(u, m0), u, m0);
        m1 = sel(GT(w, m1), w, m1);
    }
    double m = hmax(sel(GT(m1, m0), m1, m0));
    int found = hcount(bad) != 0;
    for (; i < n; i++) {
        double v = x[i];
        if (v != v) found = 1;
        else if (v > m) m = v;
    }
    *nan = found;
    return m;
}
#else
/* the maximum needs no widening: twice the lanes in float */
typedef float vfw __attribute__((vector_size(VW * 8)));
typedef int viw __attribute__((vector_size(VW * 8)));
#define FW (2 * VW)
static double FN(max)(const void *xv, size_t n, int *nan) {
    const float *x = xv;
    vfw m0 = (vfw){0} - INF, m1 = m0;
    viw bad = {0};
    size_t i = 0;
    for (; i + 2 * FW <= n; i += 2 * FW) {
        vfw u, w;
        memcpy(&u, x + i, sizeof u);
        memcpy(&w, x + i + FW, sizeof w);
        viw gu = (viw)(u > m0), gw = (viw)(w > m1);
        bad |= (viw)(u != u) | (viw)(w != w);
        m0 = (vfw)(((viw)u & gu) | ((viw)m0 & ~gu));
        m1 = (vfw)(((viw)w & gw) | ((viw)m1 & ~gw));
    }
    double m = -INF;
    int found = 0;
    for (int l = 0; l < FW; l++) {
        if (m0[l] > m) m = m0[l];
        if (m1[l] > m) m = m1[l];
        found |= bad[l] != 0;
    }
    for (; i < n; i++) {
        double v = x[i];
        if (v != v) found = 1;
        else if (v > m) m = v;
    }
    *nan = found;
    return m;
}
#undef FW
#endif

static size_t FN(find)(const void *xv, size_t n, double a) {
    const FT *x = xv;
    size_t i = 0;
    for (; i + VW <= n; i += VW)
        if (hcount(EQ(LD(x + i), splat(a)))) break;
    for (; i < n; i++)
        if ((double)x[i] == a) return i;
    return n;
}

static size_t FN(nfin)(const void *xv, size_t n) {
    const FT *x = xv;
    vl cnt = {0};
    size_t i = 0;
    for (; i + VW <= n; i += VW) cnt += NE(LD(x + i), splat(-INF));
    size_t c = (size_t)hcount(cnt);
    for (; i < n; i++) c += (double)x[i] != -INF;
    return c;
}

/* log_softmax: (hi - L) + lo */
static inline vd FN(logw1)(const FT *x, size_t i, size_t n, double a, double T, double L) {
    vd lo;
    vd hi = FN(shift)(LDX(x, i, n, -INF), a, T, &lo);
    vd y = hi - L;
#if COMP
    y = y + lo;
#endif
    return y;
}

/* The vector at i of a known output (sk_write): e * f, else log_softmax. */
static inline vd FN(wval)(const double *e, const FT *x, size_t n, double d, double f, double a, double T, double L,
                          size_t i) {
    if (!e) return FN(logw1)(x, i, n, a, T, L);
#if COMP
    return vdiv(LDE(e, i, n, 0.0), splat(d), splat(f));
#else
    (void)d;
    return LDE(e, i, n, 0.0) * f;
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
#define WRITE_REST(out, n, h, end, i, Y)                    \
    do {                                                    \
        for (size_t i = 0; i < (h); i += VW) STX((out), i, (h), (Y)); \
        for (size_t i = (end); i < (n); i += VW) STX((out), i, (n), (Y)); \
    } while (0)

/* Writes w, except the streamed lines before `from` (already written).
 * Inlined per kind, so that each loop carries no test of it. */
static inline __attribute__((always_inline)) void FN(write_t)(const double *e, const FT *x, double T,
                                                             const sk_write *w, int stream, size_t from) {
    FT *out = w->out;
    size_t n = w->n, h, end;
    double d = w->d, f = w->f, a = w->a, L = w->L;
    FN(lines)(out, n, stream, &h, &end);
    for (size_t i = from > h ? from : h; i < end; i += VW) STREAM_AT(out, i, FN(wval)(e, x, n, d, f, a, T, L, i));
    WRITE_REST(out, n, h, end, i, FN(wval)(e, x, n, d, f, a, T, L, i));
    STREAM_END(stream);
}

static void FN(write_from)(const sk_write *w, int stream, size_t from) {
    if (w->e) FN(write_t)(w->e, NULL, 1.0, w, stream, from);
    else if (w->T == 1.0) FN(write_t)(NULL, w->x, 1.0, w, stream, from);
    else FN(write_t)(NULL, w->x, w->T, w, stream, from);
}

static void FN(write)(const sk_write *w, int stream) { FN(write_from)(w, stream, 0); }

/* Per block: sum of exp(z) over the entries with z != 0, and the number of
 * entries with z == 0 (x equal to the maximum; their terms are exactly 1).
 * With `e`, every exp(z) is stored.  Meanwhile the memory traffic of `ah`
 * runs: one cache line of each look-ahead stream prefetched per vector until
 * they are done, spread over the blocks in proportion, and the log_softmax
 * row `ah->w` written, a streamed line per line of x read (float32 family,
 * where the ISA streams), the rest of it after the loop.  Inlined for the common
 * cases, so that the T == 1 loops carry no division, and only the loop with
 * a row to write (`wr_row`) tests for it. */
static inline __attribute__((always_inline)) void FN(sum_t)(const FT *x, size_t n, double a, double T, double *e,
                                                           sk_part *parts, const sk_ahead *ah, int wr_row) {
    const char *rd = ah->rd, *wr = ah->wr;
    const sk_write *w = &ah->w;
    FT *wo = w->out;
    const FT *wx = w->x;
    size_t wn = w->n, wh = 0, wend = 0, lag = 0;
    double wa = w->a, wT = w->T, wL = w->L;
    if (wr_row) {
        FN(lines)(wo, wn, 1, &wh, &wend);
        /* The write trails the read by `lag` elements, half a page apart: a
           load from the same address modulo 4096 as a pending store waits
           for it (measured: twice the time without). */
        lag = ((uintptr_t)wo - (uintptr_t)x + 2048) % 4096 / sizeof(FT);
    }
    size_t wi = wh;
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += SK_BLOCK, bi++) {
        size_t bn = n - b0 < SK_BLOCK ? n - b0 : SK_BLOCK;
        const char *rd_end = rd ? ah->rd + ah->rd_bytes * (b0 + bn) / n : NULL;
        const char *wr_end = wr ? ah->wr + ah->wr_bytes * (b0 + bn) / n : NULL;
        vd s = splat(0.0), c = splat(0.0);
        vl cnt = {0};
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
                for (int l = 0; l < LINE / VW; l++, wi += VW) STREAM_AT(wo, wi, FN(logw1)(wx, wi, wn, wa, wT, wL));
            }
            vd lo;
            vd z = FN(shift)(LDX(x, i, b0 + bn, -INF), a, T, &lo);
            vd ev = vexp(z, lo, COMP, 0);
#if defined(SK_TIE_MASK) && !COMP
            /* the same as below, with the ties as a bit mask: fewer operations */
            unsigned tie = SK_TIE_MASK(z);
            s = SK_ADD_UNLESS(s, tie, ev);
            ties += __builtin_popcount(tie);
#else
            vl eq = EQ(z, splat(0.0));
            cnt += eq;
            ACC(s, c, sel(eq, splat(0.0), ev));
#endif
            if (e) STE(e, i, b0 + bn, ev);
        }
        FN(store_part)(&parts[bi], s, c, cnt);
#if defined(SK_TIE_MASK) && !COMP
        parts[bi].cnt = (double)ties;
#endif
    }
    if (wr_row) FN(write_from)(w, 1, wi);
}

static void FN(sum)(const void *xv, size_t n, double a, double T, double *e, sk_part *parts, const sk_ahead *ah) {
    if (T != 1.0) FN(sum_t)(xv, n, a, T, e, parts, ah, ah->w.out != NULL);
    else if (ah->w.out) FN(sum_t)(xv, n, a, 1.0, e, parts, ah, 1);
    else if (e) FN(sum_t)(xv, n, a, 1.0, e, parts, ah, 0);
    else FN(sum_t)(xv, n, a, 1.0, NULL, parts, ah, 0);
}

#if COMP
/* Cross-entropy gradient with a one-hot target, away from the target and
 * the argmax: ((c p) + zg p) / denom with p = e / d. */
static void FN(ce_hard_grad)(const double *e, void *gv, size_t n, double d, double c, double zg, int has_z,
                             double denom) {
    FT *g = gv;
    vd vdd = splat(d), r = splat(1.0 / d), vden = splat(denom), rden = splat(1.0 / denom);
    for (size_t i = 0; i < n; i += VW) {
        vd p = vdiv(LDE(e, i, n, 0.0), vdd, r);
        vd y = c * p;
        if (has_z) y = y + zg * p;
        if (denom != 1.0) y = vdiv(y, vden, rden);
        STX(g, i, n, y);
    }
}
#define CE_HARD_GRAD FN(ce_hard_grad)
#else
#define CE_HARD_GRAD NULL
#endif

/* Class coefficients of the lanes at absolute class index j0 .. j0 + VW - 1. */
static inline vd FN(coef)(const sk_coef *cf, vd xf, vd w, vd q, double j0) {
    vd sm = sel(NE(xf, splat(-INF)), cf->w ? cf->inv_nf * w : splat(cf->inv_nf), splat(0.0));
    vd base = cf->es * sm;
    if (cf->q) {
        vd qw = cf->w ? q * w : q;
        vd y = cf->qs * qw;
        return cf->es != 0.0 ? y + base : y;
    }
    vd idx = splat(j0);
    for (int l = 0; l < VW; l++) idx[l] += l;
    return sel(EQ(idx, splat((double)cf->t)), cf->hv + base, base);
}

/* Per block: loss = sum c_j (-log p_j), sum c_j, and sum c_j over j != k
 * (k relative to the range). */
static void FN(ce_terms)(const void *xv, const void *xfv, size_t n, double a, double L, const sk_coef *cf,
                         size_t off, size_t k, sk_part *loss, sk_part *csum, sk_part *crest) {
    const FT *x = xv, *xf = xfv, *q = cf->q;
    const double *w = cf->w ? cf->w + off : NULL;
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += SK_BLOCK, bi++) {
        size_t bn = n - b0 < SK_BLOCK ? n - b0 : SK_BLOCK, end = b0 + bn;
        vd s1 = splat(0.0), c1 = s1, s2 = s1, c2 = s1, s3 = s1, c3 = s1;
        for (size_t i = b0; i < end; i += VW) {
            vd lo;
            vd hi = FN(shift)(LDX(x, i, end, -INF), a, 1.0, &lo);
            vd nlp = L - hi;
#if COMP
            nlp = nlp - lo;
#endif
            vd wv = w ? LDE(w, i, end, 0.0) : splat(0.0);
            vd qv = q ? LDX(q, i, end, 0.0) : splat(0.0);
            vd cv = FN(coef)(cf, LDX(xf, i, end, -INF), wv, qv, (double)(off + i));
            if (!(i + VW <= end)) {
                /* padded lanes carry no coefficient */
                for (size_t l = end - i; l < VW; l++) cv[l] = 0.0;
            }
            vl zero = EQ(cv, splat(0.0));
            ACC(s1, c1, sel(zero, splat(0.0), cv * nlp));
            ACC(s2, c2, cv);
            vd idx = splat((double)i);
            for (int l = 0; l < VW; l++) idx[l] += l;
            ACC(s3, c3, sel(EQ(idx, splat((double)k)), splat(0.0), cv));
        }
        vl none = {0};
        FN(store_part)(&loss[bi], s1, c1, none);
        FN(store_part)(&csum[bi], s2, c2, none);
        FN(store_part)(&crest[bi], s3, c3, none);
    }
}

/* Cross-entropy gradient, general coefficients: ((C p - c) + zg p) / denom. */
static void FN(ce_grad)(const double *e, const void *xfv, void *gv, size_t n, double d, double csum, double zg,
                        int has_z, double denom, const sk_coef *cf, size_t off) {
    const FT *xf = xfv, *q = cf->q;
    FT *g = gv;
    const double *w = cf->w ? cf->w + off : NULL;
    vd vdd = splat(d), r = splat(1.0 / d), vden = splat(denom), rden = splat(1.0 / denom);
    for (size_t i = 0; i < n; i += VW) {
        vd ev = LDE(e, i, n, 0.0);
#if COMP
        vd p = vdiv(ev, vdd, r);
#else
        (void)vdd;
        vd p = ev * r;
#endif
        vd wv = w ? LDE(w, i, n, 0.0) : splat(0.0);
        vd qv = q ? LDX(q, i, n, 0.0) : splat(0.0);
        vd cv = FN(coef)(cf, LDX(xf, i, n, -INF), wv, qv, (double)(off + i));
        vd y = csum * p - cv;
        if (has_z) y = y + zg * p;
        if (denom != 1.0) {
#if COMP
            y = vdiv(y, vden, rden);
#else
            (void)vden;
            y = y * rden;
#endif
        }
        STX(g, i, n, y);
    }
}

/* softmax VJP: per block, sum of p g over p != 0 */
static void FN(svjp_dot)(const void *pv, const void *gv, size_t n, sk_part *parts) {
    const FT *p = pv, *g = gv;
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += SK_BLOCK, bi++) {
        size_t bn = n - b0 < SK_BLOCK ? n - b0 : SK_BLOCK, end = b0 + bn;
        vd s = splat(0.0), c = s;
        for (size_t i = b0; i < end; i += VW) {
            vd pp = LDX(p, i, end, 0.0), gg = LDX(g, i, end, 0.0);
            ACC(s, c, sel(EQ(pp, splat(0.0)), splat(0.0), pp * gg));
        }
        vl none = {0};
        FN(store_part)(&parts[bi], s, c, none);
    }
}

/* softmax VJP: out = p (g - dot), 0 where p == 0 */
static void FN(svjp_w)(const void *pv, const void *gv, void *outv, size_t n, double dot) {
    const FT *p = pv, *g = gv;
    FT *out = outv;
    for (size_t i = 0; i < n; i += VW) {
        vd pp = LDX(p, i, n, 0.0), gg = LDX(g, i, n, 0.0);
        STX(out, i, n, sel(EQ(pp, splat(0.0)), splat(0.0), pp * (gg - dot)));
    }
}

/* log_softmax VJP: per block, sum of g over the entries with y != -inf */
static void FN(lvjp_sum)(const void *yv, const void *gv, size_t n, sk_part *parts) {
    const FT *y = yv, *g = gv;
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += SK_BLOCK, bi++) {
        size_t bn = n - b0 < SK_BLOCK ? n - b0 : SK_BLOCK, end = b0 + bn;
        vd s = splat(0.0), c = s;
        for (size_t i = b0; i < end; i += VW) {
            vd yy = LDX(y, i, end, -INF), gg = LDX(g, i, end, 0.0);
            ACC(s, c, sel(EQ(yy, splat(-INF)), splat(0.0), gg));
        }
        vl none = {0};
        FN(store_part)(&parts[bi], s, c, none);
    }
}

/* log_softmax VJP: out = g - exp(y) total, 0 where y == -inf.  exp is the
 * float64-accurate one in both families: the difference may cancel. */
static void FN(lvjp_w)(const void *yv, const void *gv, void *outv, size_t n, double total) {
    const FT *y = yv, *g = gv;
    FT *out = outv;
    for (size_t i = 0; i < n; i += VW) {
        vd yy = LDX(y, i, n, -INF), gg = LDX(g, i, n, 0.0);
        vd ey = vexp(yy, splat(0.0), 1, 1);
        STX(out, i, n, sel(EQ(yy, splat(-INF)), splat(0.0), gg - ey * total));
    }
}

#define FAMILY_TABLE                                                                             \
    {                                                                                            \
        FN(max), FN(find), FN(nfin), FN(sum), FN(write), CE_HARD_GRAD, FN(ce_terms), FN(ce_grad), \
            FN(svjp_dot), FN(svjp_w), FN(lvjp_sum), FN(lvjp_w)                                    \
    }
