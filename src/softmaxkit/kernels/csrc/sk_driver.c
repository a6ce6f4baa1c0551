/* Row programs, threads and dtype handling for the native kernels.
 *
 * A row is processed in phases: (1) maximum, NaN flag, first argmax and the
 * count of logits that are not -inf; (2) the block sums of exp(z); (3) for
 * general cross-entropy coefficients, the loss and coefficient sums; (4) the
 * outputs.  Rows are spread over threads; a few very wide rows are instead
 * split into one chunk per thread (at block boundaries), with a barrier
 * between phases, and every thread combines the shared per-chunk and
 * per-block partials in the same order.  Results are therefore bitwise the
 * same for every thread count.
 *
 * Rows whose answer is a limit follow _numerics.row_stats: a NaN row gives
 * NaN, a fully masked row (maximum -inf) gives the masked values, and a row
 * with +inf is replaced by its stand-in (0 at the +inf entries, -inf
 * elsewhere) and shifted by 0.
 *
 * float16 is converted to float32 chunk by chunk (exactly), goes through the
 * float32 family, and is rounded from float32 to float16.
 */
#include "sk_kernels.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

enum { DT_F16 = 0, DT_F32 = 1, DT_F64 = 2 };
enum { OP_SOFTMAX, OP_LSE, OP_CE, OP_VJP };

static const sk_isa *isa = &sk_isa_baseline;
static int num_threads = 1;

/* --- float16 ------------------------------------------------------------- */

static float h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
    if (e == 0x1f) {
        bits = sign | 0x7f800000u | (m << 13);
    } else if (e == 0) {
        float f = (float)m * 0x1p-24f;
        return sign ? -f : f;
    } else {
        bits = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Round to nearest float16, ties to even (rint uses the default rounding
 * mode, which Python never changes). */
static uint16_t d2h(double v) {
    uint16_t sign = signbit(v) ? 0x8000 : 0;
    double a = fabs(v);
    if (a != a) return sign | 0x7e00;
    if (a >= 65520.0) return sign | 0x7c00;
    if (a < 0x1p-14) return sign | (uint16_t)rint(a * 0x1p24);
    int ex;
    double f = frexp(a, &ex);
    double m = rint(f * 2048.0);
    int e = ex + 14;
    if (m == 2048.0) {
        m = 1024.0;
        e += 1;
    }
    return sign | (uint16_t)((e << 10) + ((int)m - 1024));
}

static double load_any(int dtype, const void *p, size_t j) {
    if (dtype == DT_F64) return ((const double *)p)[j];
    if (dtype == DT_F32) return ((const float *)p)[j];
    return h2f(((const uint16_t *)p)[j]);
}

static void h2f_range(const void *src, float *dst, size_t n) {
    const uint16_t *s = src;
    for (size_t i = 0; i < n; i++) dst[i] = h2f(s[i]);
}

static void f2h_range(const float *src, void *dst, size_t n) {
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++) d[i] = d2h(src[i]);
}

/* --- scalar helpers ---------------------------------------------------- */

static void two_sum_acc(double *s, double *e, double v) {
    double t = *s + v, bb = t - *s, err = (*s - (t - bb)) + (v - bb);
    *e += t - t == 0.0 ? err : 0.0;
    *s = t;
}

/* Sum of block partials, in block order; *cnt gets the count of maxima. */
static double combine(const sk_part *p, size_t nb, int comp, double extra) {
    double s = 0.0, e = 0.0;
    for (size_t b = 0; b < nb; b++) {
        if (comp) {
            two_sum_acc(&s, &e, p[b].hi);
            e += p[b].lo;
        } else {
            s += p[b].hi;
        }
    }
    if (extra != 0.0) {
        if (comp) two_sum_acc(&s, &e, extra);
        else s += extra;
    }
    return s + e;
}

static double count_of(const sk_part *p, size_t nb) {
    double c = 0.0;
    for (size_t b = 0; b < nb; b++) c += p[b].cnt;
    return c;
}

/* hi + lo == x - a exactly (TwoSum), lo = 0 for an infinite difference. */
static double shift1(double x, double a, double *lo) {
    double hi = x - a, bb = hi - x;
    *lo = hi - hi == 0.0 ? (x - (hi - bb)) - (a + bb) : 0.0;
    return hi;
}

static void fill(int dtype, void *out, size_t n, double v) {
    if (dtype == DT_F64) {
        double *o = out;
        for (size_t i = 0; i < n; i++) o[i] = v;
    } else {
        float *o = out;
        for (size_t i = 0; i < n; i++) o[i] = (float)v;
    }
}

/* --- jobs ----------------------------------------------------------------- */

typedef struct {
    volatile int count;
    volatile int sense;
    int n;
} barrier_t;

static void barrier_wait(barrier_t *b, int *local_sense) {
    int s = !*local_sense;
    *local_sense = s;
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->sense, s, __ATOMIC_RELEASE);
        return;
    }
    /* spin briefly, then yield: the machine may be shared */
    for (int spins = 0; __atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != s; spins++)
        if (spins > 200) sched_yield();
}

typedef struct {
    int op, dtype, log;
    const sk_family *fam;
    const char *x, *y2;   /* logits (or VJP primal) and second input (cotangent / probabilities) */
    char *out;            /* outputs of the row's shape (or per row for logsumexp) */
    double *loss;
    const int64_t *targets;
    const double *w;
    int64_t ignore_index;
    double T, eps, z, denom;
    size_t rows, n, isz;
    /* threads */
    int nt, wide;
    int stream;           /* write the output around the cache (SK_STREAM_MIN) */
    int defer;            /* write each row's output during the next row's sum (row mode, log_softmax) */
    size_t nb;            /* blocks per row */
    size_t batch;
    size_t next_row;      /* atomic, row mode */
    int err;              /* atomic */
    barrier_t bar;
    /* shared per-chunk and per-block partials (wide mode) */
    double *cmax;
    size_t *carg, *cnfin;
    int *cnan;
    sk_part *parts;       /* 4 * nb */
} job_t;

typedef struct {
    double *e;
    char *xs;             /* stand-in of a +inf row, family type */
    float *xb, *ob, *qb;  /* float16 conversions */
    double cmax[2];
    size_t carg[2], cnfin[2];
    int cnan[2];
    sk_part *parts;       /* row mode */
} scratch_t;

typedef struct {
    job_t *J;
    scratch_t *S;
    int c, nc, sense;
    int cur;              /* c + nc * (row parity): chunk partials alternate between rows */
    size_t start, len;
    size_t next;          /* the row this thread runs next, or rows when none */
    sk_write pend;        /* the output of the row before, deferred (J->defer) */
    double *cmax;
    size_t *carg, *cnfin;
    int *cnan;
    sk_part *p1, *p2, *p3, *p4;
} rowctx_t;

static void sync_row(rowctx_t *R) {
    if (R->nc > 1) barrier_wait(&R->J->bar, &R->sense);
}

static size_t fam_size(const job_t *J) { return J->dtype == DT_F64 ? 8 : 4; }

/* Chunk c of nc: whole blocks, so block partials line up with the row. */
static void chunk_range(const job_t *J, int c, int nc, size_t *start, size_t *len) {
    size_t b0 = J->nb * (size_t)c / (size_t)nc, b1 = J->nb * (size_t)(c + 1) / (size_t)nc;
    size_t s = b0 * SK_BLOCK, e = b1 * SK_BLOCK;
    if (e > J->n) e = J->n;
    if (s > e) s = e;
    *start = s;
    *len = e - s;
}

/* The logits of this chunk in the family's type. */
static const void *chunk_x(rowctx_t *R, const char *row) {
    job_t *J = R->J;
    if (J->dtype == DT_F16) {
        h2f_range(row + R->start * 2, R->S->xb, R->len);
        return R->S->xb;
    }
    return row + R->start * J->isz;
}

/* Phase 1 and the combination of its partials: maximum a, NaN flag, first
 * argmax k and the number of logits that are not -inf. */
static void phase1(rowctx_t *R, const void *x, int want_arg, int want_nfin, double *a, int *nan, size_t *k,
                   size_t *nfin) {
    job_t *J = R->J;
    const sk_family *f = J->fam;
    int cn;
    double m = f->max(x, R->len, &cn);
    int base = R->cur - R->c;
    R->cmax[R->cur] = m;
    R->cnan[R->cur] = cn;
    if (want_arg) R->carg[R->cur] = R->start + f->find(x, R->len, m);
    if (want_nfin) R->cnfin[R->cur] = f->nfin(x, R->len);
    sync_row(R);
    double am = -INFINITY;
    int an = 0;
    size_t nf = 0;
    for (int c = base; c < base + R->nc; c++) {
        an |= R->cnan[c];
        if (R->cmax[c] > am) am = R->cmax[c];
        if (want_nfin) nf += R->cnfin[c];
    }
    size_t ak = J->n;
    if (want_arg)
        for (int c = base; c < base + R->nc; c++)
            if (R->cmax[c] == am && R->carg[c] < ak) ak = R->carg[c];
    *a = am;
    *nan = an;
    *k = ak;
    *nfin = nf;
}

/* The stand-in of a +inf row for this chunk: 0 at +inf, -inf elsewhere. */
static const void *standin(rowctx_t *R, const void *x) {
    job_t *J = R->J;
    if (fam_size(J) == 8) {
        const double *s = x;
        double *d = (double *)R->S->xs;
        for (size_t i = 0; i < R->len; i++) d[i] = s[i] == INFINITY ? 0.0 : -INFINITY;
    } else {
        const float *s = x;
        float *d = (float *)R->S->xs;
        for (size_t i = 0; i < R->len; i++) d[i] = s[i] == INFINITY ? 0.0f : -INFINITY;
    }
    return R->S->xs;
}

/* The next row's chunk of logits and, for a row-shaped output, of the
 * output: prefetched during this row's exponential pass. */
static sk_ahead ahead(const rowctx_t *R, int with_out) {
    const job_t *J = R->J;
    sk_ahead ah = {0};
    if (R->next >= J->rows) return ah;
    size_t off = (R->next * J->n + R->start) * J->isz;
    ah.rd = J->x + off;
    ah.rd_bytes = R->len * J->isz;
    if (with_out && J->out) {
        ah.wr = J->out + off;
        ah.wr_bytes = ah.rd_bytes;
    }
    return ah;
}

/* The exponential pass of this chunk; meanwhile the next row is prefetched
 * and the deferred output of the row before is written. */
static void run_sum(rowctx_t *R, const void *x, double a, double T, double *e, int with_out) {
    sk_ahead ah = ahead(R, with_out);
    ah.w = R->pend;
    R->J->fam->sum(x, R->len, a, T, e, R->p1 + R->start / SK_BLOCK, &ah);
    R->pend.out = NULL;
    sync_row(R);
}

/* Writes a row's known output, or, when rows are deferred, leaves it to the
 * next sum (or to flush).  A row of the +inf stand-in is written at once:
 * the stand-in buffer is reused. */
static void finish(rowctx_t *R, const sk_write *w) {
    job_t *J = R->J;
    if (J->defer && w->x != (const void *)R->S->xs) R->pend = *w;
    else J->fam->write(w, J->stream);
}

static void flush(rowctx_t *R) {
    if (!R->pend.out) return;
    R->J->fam->write(&R->pend, R->J->stream);
    R->pend.out = NULL;
}

static double row_s(rowctx_t *R) {
    int comp = R->J->dtype == DT_F64;
    return combine(R->p1, R->J->nb, comp, count_of(R->p1, R->J->nb) - 1.0);
}

/* --- softmax, log_softmax, logsumexp -------------------------------------- */

static void prog_softmax(rowctx_t *R, size_t r) {
    job_t *J = R->J;
    const char *row = J->x + r * J->n * J->isz;
    char *orow = J->out + r * J->n * J->isz;
    const void *x = chunk_x(R, row);
    void *o = J->dtype == DT_F16 ? (void *)R->S->ob : (void *)(orow + R->start * J->isz);
    double a;
    int nan;
    size_t k, nf;
    phase1(R, x, 0, 0, &a, &nan, &k, &nf);
    if (nan || a == -INFINITY) {
        fill(J->dtype, o, R->len, nan ? NAN : (J->log ? -INFINITY : 0.0));
    } else {
        if (a == INFINITY) {
            x = standin(R, x);
            a = 0.0;
        }
        double *e = J->log ? NULL : (J->dtype == DT_F64 ? (double *)o : R->S->e);
        run_sum(R, x, a, J->T, e, !J->stream);
        double s = row_s(R);
        sk_write w = {o, R->len, e, x, 1.0 + s, 1.0 / (1.0 + s), a, J->T, log1p(s)};
        finish(R, &w);
    }
    if (J->dtype == DT_F16) f2h_range(R->S->ob, orow + R->start * 2, R->len);
}

static void prog_lse(rowctx_t *R, size_t r) {
    job_t *J = R->J;
    const char *row = J->x + r * J->n * J->isz;
    const void *x = chunk_x(R, row);
    double a, v;
    int nan;
    size_t k, nf;
    phase1(R, x, 0, 0, &a, &nan, &k, &nf);
    if (nan) {
        v = NAN;
    } else if (a == -INFINITY || a == INFINITY) {
        v = a;
    } else {
        run_sum(R, x, a, 1.0, NULL, 0);
        v = a + log1p(row_s(R));
    }
    if (R->c != 0) return;
    if (J->dtype == DT_F64) ((double *)J->out)[r] = v;
    else if (J->dtype == DT_F32) ((float *)J->out)[r] = (float)v;
    else ((uint16_t *)J->out)[r] = d2h(v);
}

/* --- cross-entropy ------------------------------------------------------- */

/* Scalar class coefficient, for the rows whose loss is a limit. */
static double coef1(const job_t *J, const sk_coef *cf, const void *qrow, double xj, size_t j) {
    double sm = xj != -INFINITY ? (cf->w ? cf->inv_nf * cf->w[j] : cf->inv_nf) : 0.0;
    double base = cf->es * sm;
    if (qrow) {
        double qj = load_any(J->dtype, qrow, j);
        double y = cf->qs * (cf->w ? qj * cf->w[j] : qj);
        return cf->es != 0.0 ? y + base : y;
    }
    return (int64_t)j == cf->t ? cf->hv + base : base;
}

static void prog_ce(rowctx_t *R, size_t r) {
    job_t *J = R->J;
    const sk_family *f = J->fam;
    int comp = J->dtype == DT_F64, want_grad = J->out != NULL;
    size_t n = J->n;
    const char *row = J->x + r * n * J->isz;
    const char *qrow = J->y2 ? J->y2 + r * n * J->isz : NULL;
    char *grow = want_grad ? J->out + r * n * J->isz : NULL;
    const void *x = chunk_x(R, row);
    void *g = !want_grad ? NULL : J->dtype == DT_F16 ? (void *)R->S->ob : (void *)(grow + R->start * J->isz);

    sk_coef cf = {0};
    double row_w = 1.0;
    cf.w = J->w;
    cf.t = -1;
    if (qrow) {
        cf.qs = 1.0 - J->eps;
        cf.es = J->eps;
        if (J->dtype == DT_F16) {
            h2f_range(qrow + R->start * 2, R->S->qb, R->len);
            cf.q = R->S->qb;
        } else {
            cf.q = qrow + R->start * J->isz;
        }
    } else {
        int64_t t = J->targets[r];
        int keep = t != J->ignore_index;
        row_w = keep ? (J->w ? J->w[t] : 1.0) : 0.0;
        cf.t = keep ? t : -1;
        cf.hv = (1.0 - J->eps) * row_w;
        cf.es = keep ? J->eps : 0.0;
    }
    int general = qrow != NULL || cf.es != 0.0;
    double a;
    int nan;
    size_t k, nf;
    phase1(R, x, want_grad, J->eps != 0.0, &a, &nan, &k, &nf);
    cf.inv_nf = 1.0 / (nf == 0 ? 1.0 : (double)nf);
    int has_z = J->z != 0.0;

    if (nan || a == -INFINITY) {
        if (R->c == 0) {
            /* sum of c_j * (-log p_j) with -log p_j NaN or +inf: only whether a
             * coefficient is non-zero matters */
            double lv = nan ? NAN : INFINITY, loss = 0.0;
            for (size_t j = 0; j < n; j++) {
                double cj = coef1(J, &cf, qrow, load_any(J->dtype, row, j), j);
                if (cj != 0.0) loss += cj * lv;
            }
            if (has_z && row_w != 0.0) loss += J->z * row_w * (nan ? NAN : -INFINITY) * (nan ? NAN : -INFINITY);
            J->loss[r] = loss;
        }
        if (want_grad) fill(J->dtype, g, R->len, nan ? NAN : 0.0);
        goto done;
    }
    int inf_row = a == INFINITY;
    const void *xs = x;
    if (inf_row) {
        xs = standin(R, x);
        a = 0.0;
    }
    if (!general && row_w == 0.0) {
        /* an ignored row: every coefficient is 0, so is the gradient */
        if (R->c == 0) J->loss[r] = 0.0;
        if (want_grad) fill(J->dtype, g, R->len, 0.0);
        goto done;
    }
    double *e = !want_grad ? NULL : comp ? (double *)g : R->S->e;
    /* only the one-hot gradient is streamed */
    run_sum(R, xs, a, 1.0, e, !J->stream || general);
    double s = row_s(R), L = log1p(s), d = 1.0 + s;
    double lse = inf_row ? INFINITY : a + L;
    double zg = has_z ? 2.0 * J->z * row_w * (inf_row ? 0.0 : lse) : 0.0;
    double loss, c_sum, c_rest;
    if (!general) {
        int64_t t = cf.t;
        loss = 0.0;
        if (cf.hv != 0.0) {
            double xt = load_any(J->dtype, row, (size_t)t), lo;
            if (inf_row) xt = xt == INFINITY ? 0.0 : -INFINITY;
            double hi = comp ? shift1(xt, a, &lo) : xt - a;
            double nlp = L - hi;
            if (comp) nlp = nlp - lo;
            loss = cf.hv * nlp;
        }
        c_sum = cf.hv;
        c_rest = (size_t)t == k ? 0.0 : cf.hv;
    } else {
        size_t b0 = R->start / SK_BLOCK, kr = k >= R->start ? k - R->start : (size_t)-1;
        f->ce_terms(xs, x, R->len, a, L, &cf, R->start, kr, R->p2 + b0, R->p3 + b0, R->p4 + b0);
        sync_row(R);
        loss = combine(R->p2, J->nb, comp, 0.0);
        c_sum = combine(R->p3, J->nb, comp, 0.0);
        c_rest = combine(R->p4, J->nb, comp, 0.0);
    }
    if (has_z && row_w != 0.0) loss = loss + J->z * row_w * lse * lse;
    if (R->c == 0) J->loss[r] = loss;
    if (!want_grad) goto done;

    size_t end = R->start + R->len;
    int t_here = !general && (size_t)cf.t != k && (size_t)cf.t >= R->start && (size_t)cf.t < end;
    double e_t = t_here ? e[(size_t)cf.t - R->start] : 0.0;
    if (general) {
        f->ce_grad(e, x, g, R->len, d, c_sum, zg, has_z, J->denom, &cf, R->start);
    } else if (comp) {
        f->ce_hard_grad(e, g, R->len, d, c_sum, zg, has_z, J->denom);
    } else {
        /* away from the target and the argmax: ((c + zg) / d) / denom times e */
        double fac = c_sum / d;
        if (has_z) fac += zg / d;
        if (J->denom != 1.0) fac /= J->denom;
        sk_write w = {g, R->len, e, NULL, d, fac, 0.0, 1.0, 0.0};
        f->write(&w, J->stream);
    }
    if (t_here) {
        double p_t = e_t / d;
        double v = c_sum * p_t - cf.hv;
        if (has_z) v = v + zg * p_t;
        if (J->denom != 1.0) v = v / J->denom;
        if (comp) ((double *)g)[(size_t)cf.t - R->start] = v;
        else ((float *)g)[(size_t)cf.t - R->start] = (float)v;
    }
    /* At the argmax, where p_k > 1/2 (s < 1) and the class has a coefficient
       (c_k != 0, of either sign: class weights may be negative), the
       gradient is (C - c_k) - C s / (1 + s), never
       C p_k - c_k; elsewhere C p_k - c_k has nothing to cancel.  The range
       kernels already wrote C p_k - c_k, except the hard-target ones, which
       leave the target's coefficient to this step. */
    int hard_k = !general && (size_t)cf.t == k;
    if (k >= R->start && k < end && ((s < 1.0 && c_sum != c_rest) || hard_k)) {
        double v;
        if (s < 1.0 && c_sum != c_rest) {
            v = c_rest - c_sum * (s / d);
        } else {
            v = c_sum * (1.0 / d) - cf.hv;
        }
        if (has_z) v = v + zg * (1.0 / d);
        if (J->denom != 1.0) v = v / J->denom;
        if (comp) ((double *)g)[k - R->start] = v;
        else ((float *)g)[k - R->start] = (float)v;
    }
done:
    if (want_grad && J->dtype == DT_F16) f2h_range(R->S->ob, grow + R->start * 2, R->len);
}

/* --- VJPs ----------------------------------------------------------------- */

static void prog_vjp(rowctx_t *R, size_t r) {
    job_t *J = R->J;
    const sk_family *f = J->fam;
    size_t off = r * J->n * J->isz + R->start * J->isz;
    const void *y = J->x + off, *g = J->y2 + off;
    void *o = J->out + off;
    if (J->dtype == DT_F16) {
        h2f_range(y, R->S->xb, R->len);
        h2f_range(g, R->S->qb, R->len);
        y = R->S->xb;
        g = R->S->qb;
        o = R->S->ob;
    }
    /* Rows alternate between two sets of block partials: a thread that has
       passed this row's barrier may write the next row's partials while
       another still combines this row's, but it cannot reach the row after
       next before every thread has passed the next row's barrier. */
    sk_part *parts = r & 1 ? R->p2 : R->p1;
    if (J->log) f->lvjp_sum(y, g, R->len, parts + R->start / SK_BLOCK);
    else f->svjp_dot(y, g, R->len, parts + R->start / SK_BLOCK);
    sync_row(R);
    double v = combine(parts, J->nb, J->dtype == DT_F64, 0.0);
    if (J->log) f->lvjp_w(y, g, o, R->len, v);
    else f->svjp_w(y, g, o, R->len, v);
    if (J->dtype == DT_F16) f2h_range(R->S->ob, J->out + off, R->len);
}

/* --- threads ------------------------------------------------------------ */

static int scratch_init(job_t *J, scratch_t *S, size_t len) {
    memset(S, 0, sizeof *S);
    size_t m = len ? len : 1;
    int need_e = (J->op == OP_SOFTMAX && !J->log && J->dtype != DT_F64) || (J->op == OP_CE && J->out && J->dtype != DT_F64);
    int need_xs = J->op == OP_SOFTMAX || J->op == OP_CE;
    if (need_e && !(S->e = malloc(m * sizeof(double)))) return -1;
    if (need_xs && !(S->xs = malloc(m * fam_size(J)))) return -1;
    if (J->dtype == DT_F16) {
        if (!(S->xb = malloc(m * sizeof(float))) || !(S->ob = malloc(m * sizeof(float))) ||
            !(S->qb = malloc(m * sizeof(float))))
            return -1;
    }
    if (!J->wide && !(S->parts = malloc(4 * (J->nb ? J->nb : 1) * sizeof(sk_part)))) return -1;
    return 0;
}

static void scratch_free(scratch_t *S) {
    free(S->e);
    free(S->xs);
    free(S->xb);
    free(S->ob);
    free(S->qb);
    free(S->parts);
}

static void run_row(rowctx_t *R, size_t r) {
    R->cur = R->c + R->nc * (int)(r & 1);
    switch (R->J->op) {
    case OP_SOFTMAX: prog_softmax(R, r); break;
    case OP_LSE: prog_lse(R, r); break;
    case OP_CE: prog_ce(R, r); break;
    default: prog_vjp(R, r); break;
    }
}

static void run_thread(job_t *J, int tid) {
    scratch_t S;
    rowctx_t R;
    memset(&R, 0, sizeof R);
    R.J = J;
    R.S = &S;
    if (J->wide) {
        R.c = tid;
        R.nc = J->nt;
        chunk_range(J, tid, J->nt, &R.start, &R.len);
        R.cmax = J->cmax;
        R.carg = J->carg;
        R.cnfin = J->cnfin;
        R.cnan = J->cnan;
        R.p1 = J->parts;
    } else {
        R.nc = 1;
        R.len = J->n;
        R.cmax = S.cmax;
        R.carg = S.carg;
        R.cnfin = S.cnfin;
        R.cnan = S.cnan;
    }
    int failed = scratch_init(J, &S, R.len);
    if (J->wide) {
        /* every thread must reach every barrier: agree on failure first */
        if (failed) __atomic_store_n(&J->err, SK_ENOMEM, __ATOMIC_RELAXED);
        barrier_wait(&J->bar, &R.sense);
        if (!__atomic_load_n(&J->err, __ATOMIC_RELAXED)) {
            R.p2 = R.p1 + J->nb;
            R.p3 = R.p2 + J->nb;
            R.p4 = R.p3 + J->nb;
            for (size_t r = 0; r < J->rows; r++) {
                R.next = r + 1;
                run_row(&R, r);
            }
        }
    } else if (failed) {
        __atomic_store_n(&J->err, SK_ENOMEM, __ATOMIC_RELAXED);
    } else {
        R.p1 = S.parts;
        R.p2 = R.p1 + J->nb;
        R.p3 = R.p2 + J->nb;
        R.p4 = R.p3 + J->nb;
        /* batches are claimed one ahead, so that the last row of a batch
         * knows the row that follows it */
        size_t r0 = __atomic_fetch_add(&J->next_row, J->batch, __ATOMIC_RELAXED);
        while (r0 < J->rows) {
            size_t r1 = r0 + J->batch < J->rows ? r0 + J->batch : J->rows;
            size_t n0 = __atomic_fetch_add(&J->next_row, J->batch, __ATOMIC_RELAXED);
            for (size_t r = r0; r < r1; r++) {
                R.next = r + 1 < r1 ? r + 1 : n0;
                run_row(&R, r);
            }
            r0 = n0;
        }
        flush(&R);
    }
    scratch_free(&S);
}

/* A pool of workers; the calling thread is worker 0.  One job at a time: a
 * call that finds the pool busy (another Python thread) runs on its own. */
static pthread_mutex_t pool_busy = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t pool_done = PTHREAD_COND_INITIALIZER;
static int pool_size;
static unsigned long pool_gen;
static job_t *pool_job;
/* threads the posted job uses; 0 once it is done.  A worker that wakes late
 * reads this, never pool_job, which may then point at a finished job. */
static int pool_nt;
static int pool_pending;

typedef struct {
    int id;
    unsigned long gen;
} worker_arg_t;

static void *worker_main(void *arg) {
    worker_arg_t wa = *(worker_arg_t *)arg;
    free(arg);
    int id = wa.id;
    /* the generation when the worker was made: a job posted before it first
     * takes the lock is still seen as new */
    unsigned long seen = wa.gen;
    pthread_mutex_lock(&pool_mu);
    for (;;) {
        while (pool_gen == seen) pthread_cond_wait(&pool_work, &pool_mu);
        seen = pool_gen;
        if (id >= pool_nt) continue;
        job_t *J = pool_job;
        pthread_mutex_unlock(&pool_mu);
        run_thread(J, id);
        pthread_mutex_lock(&pool_mu);
        if (--pool_pending == 0) pthread_cond_signal(&pool_done);
    }
    return NULL;
}

/* Workers 1 .. want-1 exist (as many as could be started); returns how many
 * threads a job may use. */
static int pool_grow(int want) {
    pthread_mutex_lock(&pool_mu);
    while (pool_size + 1 < want) {
        pthread_t th;
        pthread_attr_t attr;
        worker_arg_t *wa = malloc(sizeof *wa);
        if (!wa) break;
        wa->id = pool_size + 1;
        wa->gen = pool_gen;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &attr, worker_main, wa);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            free(wa);
            break;
        }
        pool_size++;
    }
    int have = pool_size + 1;
    pthread_mutex_unlock(&pool_mu);
    return have < want ? have : want;
}

static void pool_reset_child(void) {
    /* after fork only the forking thread exists */
    pthread_mutex_init(&pool_busy, NULL);
    pthread_mutex_init(&pool_mu, NULL);
    pthread_cond_init(&pool_work, NULL);
    pthread_cond_init(&pool_done, NULL);
    pool_size = 0;
    pool_gen = 0;
    pool_nt = 0;
    pool_job = NULL;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void atfork_install(void) { pthread_atfork(NULL, NULL, pool_reset_child); }

/* Elements per thread below which another thread does not pay off. */
#define MIN_WORK 32768

static void plan(job_t *J, int threads) {
    size_t total = J->rows * (J->n ? J->n : 1);
    size_t by_work = total / MIN_WORK;
    int nt = threads;
    if ((size_t)nt > by_work) nt = by_work ? (int)by_work : 1;
    J->wide = 0;
    if (nt > 1 && J->rows < (size_t)(4 * nt) && J->nb >= (size_t)(4 * nt)) {
        J->wide = 1;
    } else if ((size_t)nt > J->rows) {
        nt = J->rows ? (int)J->rows : 1;
    }
    J->nt = nt;
    size_t b = 16384 / (J->n ? J->n : 1);
    J->batch = b ? b : 1;
}

static int run(job_t *J) {
    J->fam = J->dtype == DT_F64 ? &isa->f64 : &isa->f32;
    J->isz = J->dtype == DT_F64 ? 8 : J->dtype == DT_F32 ? 4 : 2;
    J->nb = (J->n + SK_BLOCK - 1) / SK_BLOCK;
    /* only the float32 family's writers stream (see `write` in sk_family.h) */
    J->stream = J->dtype == DT_F32 && J->out && (J->op == OP_SOFTMAX || J->op == OP_CE) &&
                J->rows * J->n * J->isz >= SK_STREAM_MIN;
    if (J->rows == 0) return 0;
    int threads = num_threads;
    int locked = 0;
    if (threads > 1) {
        locked = pthread_mutex_trylock(&pool_busy) == 0;
        if (!locked) threads = 1;
    }
    plan(J, threads);
    if (J->nt > 1) {
        pthread_once(&atfork_once, atfork_install);
        plan(J, pool_grow(J->nt));
    }
    if (J->wide) {
        J->bar.n = J->nt;
        J->cmax = malloc(2 * J->nt * sizeof(double));
        J->carg = malloc(2 * J->nt * sizeof(size_t));
        J->cnfin = malloc(2 * J->nt * sizeof(size_t));
        J->cnan = malloc(2 * J->nt * sizeof(int));
        J->parts = malloc(4 * J->nb * sizeof(sk_part));
        if (!J->cmax || !J->carg || !J->cnfin || !J->cnan || !J->parts) {
            J->wide = 0;
            plan(J, 1);
        }
    }
    /* log_softmax only: deferring the others, whose writes read a float64
       buffer of exponentials, needs two such buffers, and measured slower */
    J->defer = J->stream && J->op == OP_SOFTMAX && J->log && !J->wide;
    if (J->nt > 1) {
        pthread_mutex_lock(&pool_mu);
        pool_job = J;
        pool_nt = J->nt;
        pool_pending = J->nt - 1;
        pool_gen++;
        pthread_cond_broadcast(&pool_work);
        pthread_mutex_unlock(&pool_mu);
        run_thread(J, 0);
        pthread_mutex_lock(&pool_mu);
        while (pool_pending > 0) pthread_cond_wait(&pool_done, &pool_mu);
        pool_nt = 0;
        pool_job = NULL;
        pthread_mutex_unlock(&pool_mu);
    } else {
        run_thread(J, 0);
    }
    if (locked) pthread_mutex_unlock(&pool_busy);
    free(J->cmax);
    free(J->carg);
    free(J->cnfin);
    free(J->cnan);
    free(J->parts);
    return J->err;
}

/* --- entry points ----------------------------------------------------- */

int sk_select_isa(const char *name) {
    if (!strcmp(name, "baseline")) {
        isa = &sk_isa_baseline;
        return 0;
    }
#ifdef SK_X86
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    if (!strcmp(name, "avx2") && avx2) {
        isa = &sk_isa_avx2;
        return 0;
    }
    if (!strcmp(name, "avx512") && avx512) {
        isa = &sk_isa_avx512;
        return 0;
    }
    if (!strcmp(name, "best")) {
        isa = avx512 ? &sk_isa_avx512 : avx2 ? &sk_isa_avx2 : &sk_isa_baseline;
        return 0;
    }
#else
    if (!strcmp(name, "best")) {
        isa = &sk_isa_baseline;
        return 0;
    }
#endif
    return -1;
}

const char *sk_isa_name(void) { return isa->name; }
void sk_set_threads(int n) { num_threads = n < 1 ? 1 : n; }
int sk_get_threads(void) { return num_threads; }

int sk_softmax(int dtype, const void *x, void *out, size_t rows, size_t n, double T, int log) {
    job_t J = {0};
    J.op = OP_SOFTMAX;
    J.dtype = dtype;
    J.log = log;
    J.x = x;
    J.out = out;
    J.rows = n ? rows : 0;
    J.n = n;
    J.T = T;
    return run(&J);
}

int sk_logsumexp(int dtype, const void *x, void *out, size_t rows, size_t n) {
    job_t J = {0};
    J.op = OP_LSE;
    J.dtype = dtype;
    J.x = x;
    J.out = out;
    J.rows = rows;
    J.n = n;
    J.T = 1.0;
    return run(&J);
}

int sk_cross_entropy(int dtype, const void *x, void *grad, double *loss, size_t rows, size_t n,
                     const int64_t *targets, const void *q, const double *w, int64_t ignore_index, double eps,
                     double z, double denom, double *weight_sum) {
    double total = (double)rows;
    int64_t *own = NULL;
    if (targets) {
        /* The caller's array may change while the kernel runs (another
           thread, with the GIL released): each index is read once, into a
           copy, and the copy is what was checked and what the rows use. */
        if (rows && !(own = malloc(rows * sizeof *own))) return SK_ENOMEM;
        total = 0.0;
        for (size_t r = 0; r < rows; r++) {
            int64_t t = __atomic_load_n(&targets[r], __ATOMIC_RELAXED);
            own[r] = t;
            if (t == ignore_index) continue;
            if (t < 0 || (uint64_t)t >= n) {
                free(own);
                return SK_ETARGET;
            }
            total += w ? w[t] : 1.0;
        }
    }
    *weight_sum = total;
    if (denom < 0.0) denom = total == 0.0 ? 1.0 : total;
    if (n == 0) {
        free(own);
        return rows ? SK_ETARGET : 0;
    }
    job_t J = {0};
    J.op = OP_CE;
    J.dtype = dtype;
    J.x = x;
    J.y2 = q;
    J.out = grad;
    J.loss = loss;
    J.targets = own;
    J.w = w;
    J.ignore_index = ignore_index;
    J.eps = eps;
    J.z = z;
    J.denom = denom;
    J.rows = rows;
    J.n = n;
    J.T = 1.0;
    int rc = run(&J);
    free(own);
    return rc;
}

int sk_vjp(int dtype, int log, const void *y, const void *g, void *out, size_t rows, size_t n) {
    job_t J = {0};
    J.op = OP_VJP;
    J.dtype = dtype;
    J.log = log;
    J.x = y;
    J.y2 = g;
    J.out = out;
    J.rows = n ? rows : 0;
    J.n = n;
    return run(&J);
}
