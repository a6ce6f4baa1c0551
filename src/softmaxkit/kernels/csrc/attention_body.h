/* Body of the attention kernels for one instruction set: the forward, the
 * dq pass and the dk/dv pass of the backward (see attention.h for the work
 * items).  The includer defines SK_VW, SK_HAVE_FMA and SK_FMA (and the
 * optional helpers of simd.h) after its target pragmas, then defines
 * SK_ATTN_TABLE, the name of its sk_attn_isa.
 *
 * The formulas are those of softmaxkit.numerics.attention for inputs
 * narrower than float64 ("widened"), in float64:
 *   - scores: sum over d of q_d k_d (each product exact in float64), summed
 *     in order of d, times the scale; the soft cap c tanh(s / c); the
 *     additive mask added; keys the row does not attend (boolean or causal
 *     mask, a -inf bias, a -inf score) selected out as -inf;
 *   - a key block's state (block_state): m the block maximum, e_j =
 *     exp(x_j - m) (simd.h's float64 exp), s the sum of e_j without the
 *     first argmax term, acc = sum_j e_j v_j over the keys read; a block
 *     with +inf scores shares its mass among them; a NaN score makes the row
 *     NaN;
 *   - the merge of the running state and a block's (at_merge, combine);
 *   - finish: acc / (1 + s) and m + log1p(s);
 *   - the backward (attention_vjp_rows): P = exp(x - lse), dS = P (dO . v
 *     + g) with g = dlse - dO . O, the soft cap's chain rule, dq = scale
 *     sum_j dT k_j, dk = scale sum_i dT q_i, dv = sum_i P dO_i.
 * Every product by a weight that may belong to a key or row not read is a
 * selection when its other operand is not finite (at_axpy_sel), so NaN or
 * inf in a masked key, value or row never reaches a result. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "half.h"
#include "simd.h"

#define AT_TQ SK_ATTN_TQ
#define AT_BK SK_ATTN_BK
#define AT_TK SK_ATTN_TK
#define AT_BQ SK_ATTN_BQ

/* n rounded up to whole vectors */
static inline size_t at_pad(size_t n) { return (n + VW - 1) / VW * VW; }

static inline double at_load(int dt, const void *base, size_t i) {
    if (dt == DT_BF16) {
        uint32_t u = (uint32_t)((const uint16_t *)base)[i] << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return (double)f;
    }
    return (double)((const float *)base)[i];
}

static inline void at_store(int dt, void *base, size_t i, double v) {
    if (dt == DT_BF16) ((uint16_t *)base)[i] = round16(DT_BF16, v);
    else ((float *)base)[i] = (float)v;
}

static inline int64_t at_batch_offset(const sk_attn_problem *P, size_t b) {
    int64_t off = 0;
    for (int d = P->nb - 1; d >= 0; d--) {
        size_t n = (size_t)P->bshape[d];
        off += (int64_t)(b % n) * P->bstride[d];
        b /= n;
    }
    return off;
}

/* The causal offset: key j is attended by row i when j <= i + offset. */
static inline int64_t at_causal_offset(const sk_attn_problem *P) {
    return P->causal == 2 ? (int64_t)P->S - (int64_t)P->L : 0;
}

/* The keys [0, end) that rows up to `last` may attend (all of them without
 * a causal mask). */
static inline size_t at_key_end(const sk_attn_problem *P, size_t last) {
    if (!P->causal) return P->S;
    int64_t lim = (int64_t)last + at_causal_offset(P);
    if (lim < 0) return 0;
    return (size_t)lim + 1 < P->S ? (size_t)lim + 1 : P->S;
}

/* The score of row i and key j from the raw dot product: scaled,
 * soft-capped, with the additive mask; -inf where the row does not attend
 * the key (nothing of it is read).  *t receives tanh(s / c) under a soft
 * cap.  `mrow` is the mask at (b, h, i, key 0). */
static inline double at_score(const sk_attn_problem *P, const char *mrow, size_t i, size_t j, double raw, double *t) {
    double x = raw * P->scale;
    if (P->softcap > 0) {
        x = P->softcap * tanh(x / P->softcap);
        if (t) *t = x / P->softcap;
    }
    if (P->causal && (int64_t)j > (int64_t)i + at_causal_offset(P)) return -INF;
    if (P->mask_kind == SK_MASK_BOOL) {
        if (!mrow[(int64_t)j * P->stride_s]) return -INF;
    } else if (P->mask_kind != SK_MASK_NONE) {
        double bias = P->mask_kind == SK_MASK_F32 ? (double)*(const float *)(mrow + (int64_t)j * P->stride_s)
                                                  : *(const double *)(mrow + (int64_t)j * P->stride_s);
        if (bias == -INF) return -INF;
        x += bias;
    }
    return x;
}

/* Row i's scores of the keys j0 .. j0 + AT_BK - 1, in place from the raw
 * dot products in x (keys from nb on are padding: -inf), and tanh(s / c)
 * into t under a soft cap.  Without a mask or soft cap, vectorised. */
static void at_row_scores(const sk_attn_problem *P, const char *mrow, size_t i, size_t j0, size_t nb, double *x,
                          double *t) {
    if (P->mask_kind == SK_MASK_NONE && !(P->softcap > 0)) {
        for (size_t j = 0; j < AT_BK; j += VW) st_d(x + j, ld_d(x + j) * splat(P->scale));
        size_t keep = nb;
        if (P->causal) {
            int64_t lim = (int64_t)i + at_causal_offset(P) - (int64_t)j0 + 1;
            keep = lim < 0 ? 0 : (size_t)lim < nb ? (size_t)lim : nb;
        }
        for (size_t j = keep; j < AT_BK; j++) x[j] = -INF;
        return;
    }
    for (size_t j = 0; j < nb; j++) x[j] = at_score(P, mrow, i, j0 + j, x[j], t ? t + j : NULL);
    for (size_t j = nb; j < AT_BK; j++) x[j] = -INF;
}

/* Vectors per register block of the products below: as many as the
 * registers hold (32 on AVX-512, 16 elsewhere). */
#if VW >= 8
#define AT_NV 4
#define AT_R 4
#else
#define AT_NV 2
#define AT_R 4
#endif

/* c[r * ldc + j] = sum_k a[r * lda + k] bt[k * ldb + j] for rows r < R and
 * columns j < ncols (whole vectors), summed in order of k.  With products
 * exact in float64 this is the same for any row or column grouping and
 * instruction set. */
static inline __attribute__((always_inline)) void at_dot_rows(const double *a, size_t lda, const double *bt,
                                                              size_t ldb, size_t K, double *c, size_t ldc,
                                                              size_t ncols, const int R) {
    size_t j = 0;
    for (; j + AT_NV * VW <= ncols; j += AT_NV * VW) {
        vd acc[AT_R][AT_NV];
        for (int r = 0; r < R; r++)
            for (int u = 0; u < AT_NV; u++) acc[r][u] = splat(0.0);
        for (size_t k = 0; k < K; k++) {
            vd bv[AT_NV];
            for (int u = 0; u < AT_NV; u++) bv[u] = ld_d(bt + k * ldb + j + u * VW);
            for (int r = 0; r < R; r++) {
                vd ar = splat(a[r * lda + k]);
                for (int u = 0; u < AT_NV; u++) acc[r][u] = SK_FMA(ar, bv[u], acc[r][u]);
            }
        }
        for (int r = 0; r < R; r++)
            for (int u = 0; u < AT_NV; u++) st_d(c + r * ldc + j + u * VW, acc[r][u]);
    }
    for (; j < ncols; j += VW) {
        vd acc[AT_R];
        for (int r = 0; r < R; r++) acc[r] = splat(0.0);
        for (size_t k = 0; k < K; k++) {
            vd b0 = ld_d(bt + k * ldb + j);
            for (int r = 0; r < R; r++) acc[r] = SK_FMA(splat(a[r * lda + k]), b0, acc[r]);
        }
        for (int r = 0; r < R; r++) st_d(c + r * ldc + j, acc[r]);
    }
}

static void at_dot(const double *a, size_t lda, const double *bt, size_t ldb, size_t K, double *c, size_t ldc,
                   size_t ncols, size_t rows) {
    size_t r = 0;
    for (; r + AT_R <= rows; r += AT_R) at_dot_rows(a + r * lda, lda, bt, ldb, K, c + r * ldc, ldc, ncols, AT_R);
    for (; r + 2 <= rows; r += 2) at_dot_rows(a + r * lda, lda, bt, ldb, K, c + r * ldc, ldc, ncols, 2);
    if (r < rows) at_dot_rows(a + r * lda, lda, bt, ldb, K, c + r * ldc, ldc, ncols, 1);
}

/* c[r * ldc + :] += sum_{j < n} w[r * ldw + j * sw] b[j * ldb + :] for
 * rows r < R, over ncols columns (whole vectors), in order of j (sw 1: the
 * weights by rows; ldw 1: by columns, a transposed tile read in place). */
static inline __attribute__((always_inline)) void at_axpy_rows(const double *w, size_t ldw, size_t sw, const double *b,
                                                               size_t ldb, size_t n, double *c, size_t ldc,
                                                               size_t ncols, const int R) {
    size_t d = 0;
    for (; d + AT_NV * VW <= ncols; d += AT_NV * VW) {
        vd acc[AT_R][AT_NV];
        for (int r = 0; r < R; r++)
            for (int u = 0; u < AT_NV; u++) acc[r][u] = ld_d(c + r * ldc + d + u * VW);
        for (size_t j = 0; j < n; j++) {
            vd bv[AT_NV];
            for (int u = 0; u < AT_NV; u++) bv[u] = ld_d(b + j * ldb + d + u * VW);
            for (int r = 0; r < R; r++) {
                vd wr = splat(w[r * ldw + j * sw]);
                for (int u = 0; u < AT_NV; u++) acc[r][u] = SK_FMA(wr, bv[u], acc[r][u]);
            }
        }
        for (int r = 0; r < R; r++)
            for (int u = 0; u < AT_NV; u++) st_d(c + r * ldc + d + u * VW, acc[r][u]);
    }
    for (; d < ncols; d += VW) {
        vd acc[AT_R];
        for (int r = 0; r < R; r++) acc[r] = ld_d(c + r * ldc + d);
        for (size_t j = 0; j < n; j++) {
            vd b0 = ld_d(b + j * ldb + d);
            for (int r = 0; r < R; r++) acc[r] = SK_FMA(splat(w[r * ldw + j * sw]), b0, acc[r]);
        }
        for (int r = 0; r < R; r++) st_d(c + r * ldc + d, acc[r]);
    }
}

static void at_axpy(const double *w, size_t ldw, size_t sw, const double *b, size_t ldb, size_t n, double *c,
                    size_t ldc, size_t ncols, size_t rows) {
    size_t r = 0;
    for (; r + AT_R <= rows; r += AT_R) at_axpy_rows(w + r * ldw, ldw, sw, b, ldb, n, c + r * ldc, ldc, ncols, AT_R);
    for (; r + 2 <= rows; r += 2) at_axpy_rows(w + r * ldw, ldw, sw, b, ldb, n, c + r * ldc, ldc, ncols, 2);
    if (r < rows) at_axpy_rows(w + r * ldw, ldw, sw, b, ldb, n, c + r * ldc, ldc, ncols, 1);
}

/* at_axpy where b holds values that are not finite: only the terms with
 * rd[r * ldw + j * sw] set are added (the same fused operation as at_axpy). */
static void at_axpy_sel(const double *w, const unsigned char *rd, size_t ldw, size_t sw, const double *b, size_t ldb,
                        size_t n, double *c, size_t ldc, size_t ncols, size_t rows) {
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < n; j++) {
            if (!rd[r * ldw + j * sw]) continue;
            vd wr = splat(w[r * ldw + j * sw]);
            for (size_t d = 0; d < ncols; d += VW)
                st_d(c + r * ldc + d, SK_FMA(wr, ld_d(b + j * ldb + d), ld_d(c + r * ldc + d)));
        }
}

/* rows x cols values of the input at element `off` (row stride `ld`)
 * into dst as float64, rows ldd apart (zero padding to ldd); returns
 * whether all are finite. */
static int at_rows_in(int dt, const void *src, size_t off, size_t ld, size_t rows, size_t cols, double *dst,
                      size_t ldd) {
    vl bad = (vl){0};
    for (size_t r = 0; r < rows; r++) {
        double *row = dst + r * ldd;
        if (dt == DT_BF16) {
            const uint16_t *in = (const uint16_t *)src + off + r * ld;
            for (size_t c = 0; c < cols; c++) row[c] = at_load(DT_BF16, in, c);
        } else {
            const float *in = (const float *)src + off + r * ld;
            for (size_t c = 0; c < cols; c++) row[c] = (double)in[c];
        }
        for (size_t c = cols; c < ldd; c++) row[c] = 0.0;
        /* finite: v - v is 0, else NaN */
        for (size_t c = 0; c + VW <= ldd; c += VW) {
            vd v = ld_d(row + c);
            bad |= NE(v - v, splat(0.0));
        }
        for (size_t c = ldd / VW * VW; c < ldd; c++) bad[0] |= !isfinite(row[c]);
    }
    return hcount(bad) == 0;
}

/* The same, transposed: dst[c * ldd + r], zero for r in [rows, pad).  Read
 * column by column: the source rows stay in the first-level cache, and the
 * stores are contiguous. */
static void at_rows_in_t(int dt, const void *src, size_t off, size_t ld, size_t rows, size_t cols, double *dst,
                         size_t ldd, size_t pad) {
    for (size_t c = 0; c < cols; c++) {
        double *col = dst + c * ldd;
        if (dt == DT_BF16) {
            const uint16_t *in = (const uint16_t *)src + off + c;
            for (size_t r = 0; r < rows; r++) col[r] = at_load(DT_BF16, in, r * ld);
        } else {
            const float *in = (const float *)src + off + c;
            for (size_t r = 0; r < rows; r++) col[r] = (double)in[r * ld];
        }
        for (size_t r = rows; r < pad; r++) col[r] = 0.0;
    }
}

/* Merges the state (m1, s1, acc1) of keys disjoint from those of (*m0, *s0,
 * acc0) into it: numerics.attention.combine for two states, the running one
 * first.  Ordered by decreasing m (the running state first on a tie), with
 * w = exp(m_other - m_top) (1 on a tie, 0 below a +inf top),
 *     s = s_top + w (1 + s_other),   acc = acc_top + w acc_other;
 * an empty state (m = -inf) is the identity and is never read.  acc1 NULL
 * stands for zeros (a sink).  NaN is the caller's (a row flag). */
static void at_merge(double *m0, double *s0, double *acc0, double m1, double s1, const double *acc1, size_t n) {
    if (m1 == -INF) return;
    if (*m0 == -INF) {
        *m0 = m1;
        *s0 = s1;
        for (size_t d = 0; d < n; d++) acc0[d] = acc1 ? acc1[d] : 0.0;
        return;
    }
    int block_first = m1 > *m0;
    double top = block_first ? m1 : *m0, other = block_first ? *m0 : m1;
    double w = other == top ? 1.0 : top == INF ? 0.0 : exp(other - top);
    if (block_first) {
        *s0 = s1 + w * (1.0 + *s0);
        for (size_t d = 0; d < n; d++) acc0[d] = (acc1 ? acc1[d] : 0.0) + w * acc0[d];
    } else {
        *s0 = *s0 + w * (1.0 + s1);
        for (size_t d = 0; d < n; d++) acc0[d] = acc0[d] + w * (acc1 ? acc1[d] : 0.0);
    }
    *m0 = top;
}

/* The largest of n (whole vectors) values other than NaN, and whether any is NaN. */
static double at_max(const double *x, size_t n, int *nan) {
    vd mx = splat(-INF);
    vl bad = (vl){0};
    for (size_t j = 0; j < n; j += VW) {
        vd v = ld_d(x + j);
        bad |= NE(v, v);
        mx = sel(GT(v, mx), v, mx);
    }
    *nan = hcount(bad) != 0;
    return hmax(mx);
}

/* The first index of n (whole vectors) values equal to a, which one is. */
static size_t at_first(const double *x, double a) {
    size_t j = 0;
    while (hcount(EQ(ld_d(x + j), splat(a))) == 0) j += VW;
    while (!(x[j] == a)) j++;
    return j;
}

static void *at_alloc(size_t doubles) {
    void *p = NULL;
    if (posix_memalign(&p, 64, doubles * sizeof(double) + 64)) return NULL;
    return p;
}

static int at_claim(sk_attn_run *R, size_t *item) {
    if (__atomic_load_n(&R->err, __ATOMIC_RELAXED)) return 0;
    *item = __atomic_fetch_add(&R->next, 1, __ATOMIC_RELAXED);
    return *item < R->items;
}

/* --- forward ------------------------------------------------------------------ */

typedef struct {
    double *qd, *kt, *vb, *x, *e, *acc, *bacc, *m, *s, *bm, *bs;
    unsigned char *rd;
    int *nan;
} at_fwd_scratch;

static void at_forward_item(sk_attn_run *R, at_fwd_scratch *W, size_t item) {
    const sk_attn_problem *P = R->P;
    size_t D = P->D, Dv = P->Dv, Dvp = at_pad(Dv), L = P->L, S = P->S;
    size_t tiles = (L + AT_TQ - 1) / AT_TQ;
    size_t t = item % tiles, bh = item / tiles, h = bh % P->hq, b = bh / P->hq, hk = h / R->group;
    size_t l0 = t * AT_TQ, nr = L - l0 < AT_TQ ? L - l0 : AT_TQ;
    size_t qrow = (b * P->hq + h) * L + l0;
    size_t koff = (b * P->hkv + hk) * S * D, voff = (b * P->hkv + hk) * S * Dv;
    const char *mbase = P->mask_kind ? P->mask + at_batch_offset(P, b) + (int64_t)h * P->stride_h : NULL;
    at_rows_in(P->dtype, P->q, qrow * D, D, nr, D, W->qd, D);
    for (size_t i = 0; i < nr; i++) {
        W->m[i] = -INF;
        W->s[i] = 0.0;
        W->nan[i] = 0;
        memset(W->acc + i * Dvp, 0, Dvp * sizeof(double));
    }
    size_t jend = at_key_end(P, l0 + nr - 1);
    for (size_t j0 = 0; j0 < jend; j0 += AT_BK) {
        size_t nb = S - j0 < AT_BK ? S - j0 : AT_BK;
        at_rows_in_t(P->dtype, P->k, koff + j0 * D, D, nb, D, W->kt, AT_BK, AT_BK);
        int vfin = at_rows_in(P->dtype, P->v, voff + j0 * Dv, Dv, nb, Dv, W->vb, Dvp);
        at_dot(W->qd, D, W->kt, AT_BK, D, W->x, AT_BK, AT_BK, nr);
        for (size_t i = 0; i < nr; i++) {
            double *x = W->x + i * AT_BK, *e = W->e + i * AT_BK;
            unsigned char *rd = W->rd + i * AT_BK;
            const char *mrow = mbase ? mbase + (int64_t)(l0 + i) * P->stride_l : NULL;
            at_row_scores(P, mrow, l0 + i, j0, nb, x, NULL);
            int nan;
            double a = at_max(x, AT_BK, &nan);
            W->nan[i] |= nan;
            W->bm[i] = a;
            W->bs[i] = 0.0;
            if (a == -INF) {
                memset(e, 0, AT_BK * sizeof(double));
                memset(rd, 0, AT_BK);
                continue;
            }
            size_t k = at_first(x, a);
            if (a == INF) {
                /* the +inf scores share the mass: weight 1 each, nothing else read */
                double count = 0.0;
                for (size_t j = 0; j < AT_BK; j++) {
                    rd[j] = x[j] == INF;
                    e[j] = rd[j] ? 1.0 : 0.0;
                    count += e[j];
                }
                W->bs[i] = count - 1.0;
                continue;
            }
            vd zero = splat(0.0), va = splat(a), ninf = splat(-INF);
            for (size_t j = 0; j < AT_BK; j += VW) {
                vd xv = ld_d(x + j);
                vl read = NE(xv, ninf);
                st_d(e + j, sel(read, vexp(xv - va, zero, 1, 0), zero));
                for (int l = 0; l < VW; l++) rd[j + l] = read[l] != 0;
            }
            e[k] = 0.0;
            vd sum = zero;
            for (size_t j = 0; j < AT_BK; j += VW) sum += ld_d(e + j);
            e[k] = 1.0;
            W->bs[i] = hsum(sum);
        }
        memset(W->bacc, 0, nr * Dvp * sizeof(double));
        if (vfin) at_axpy(W->e, AT_BK, 1, W->vb, Dvp, nb, W->bacc, Dvp, Dvp, nr);
        else at_axpy_sel(W->e, W->rd, AT_BK, 1, W->vb, Dvp, nb, W->bacc, Dvp, Dvp, nr);
        for (size_t i = 0; i < nr; i++)
            if (!W->nan[i]) at_merge(W->m + i, W->s + i, W->acc + i * Dvp, W->bm[i], W->bs[i], W->bacc + i * Dvp, Dv);
    }
    for (size_t i = 0; i < nr; i++) {
        size_t row = qrow + i;
        double *acc = W->acc + i * Dvp;
        if (P->sinks) {
            double sink = P->sinks[h];
            if (isnan(sink)) W->nan[i] = 1;
            else if (!W->nan[i]) at_merge(W->m + i, W->s + i, acc, sink, 0.0, NULL, Dv);
        }
        double m = W->m[i], s = W->s[i];
        if (W->nan[i] || isnan(m) || isnan(s)) {
            for (size_t d = 0; d < Dv; d++) at_store(P->dtype, R->out, row * Dv + d, NAN);
            R->lse_out[row] = NAN;
            continue;
        }
        double den = 1.0 + s;
        for (size_t d = 0; d < Dv; d++) at_store(P->dtype, R->out, row * Dv + d, acc[d] / den);
        R->lse_out[row] = (float)(isinf(m) ? m : m + log1p(s));
    }
}

static void at_forward_task(void *arg, int tid) {
    (void)tid;
    sk_attn_run *R = arg;
    const sk_attn_problem *P = R->P;
    size_t D = P->D, Dvp = at_pad(P->Dv);
    size_t TB = AT_TQ * AT_BK;
    double *buf = at_alloc(AT_TQ * D + D * AT_BK + AT_BK * Dvp + 2 * TB + 2 * AT_TQ * Dvp + 4 * AT_TQ + TB / 8 +
                           AT_TQ);
    if (!buf) {
        __atomic_store_n(&R->err, SK_ENOMEM, __ATOMIC_RELAXED);
        return;
    }
    at_fwd_scratch W;
    double *p = buf;
    W.x = p, p += TB;
    W.e = p, p += TB;
    W.kt = p, p += D * AT_BK;
    W.vb = p, p += AT_BK * Dvp;
    W.acc = p, p += AT_TQ * Dvp;
    W.bacc = p, p += AT_TQ * Dvp;
    W.qd = p, p += AT_TQ * D;
    W.m = p, p += AT_TQ;
    W.s = p, p += AT_TQ;
    W.bm = p, p += AT_TQ;
    W.bs = p, p += AT_TQ;
    W.rd = (unsigned char *)p, p += TB / 8;
    W.nan = (int *)p;
    size_t item;
    while (at_claim(R, &item)) at_forward_item(R, &W, item);
    free(buf);
}

/* --- backward: dq, g and the sink's gradient per row ---------------------------- */

typedef struct {
    double *qd, *dod, *kt, *vt, *kb, *x, *dp, *tc, *dqa, *lse, *g;
    unsigned char *rd;
    /* the fused pass only: q and dO padded, P, and a key head's dK and dV
     * accumulators */
    double *qb, *dob, *p, *dka, *dva;
} at_bwdq_scratch;

/* One row's dT from its scores x (in place): P = exp(x - lse) where read
 * (x not -inf, the row live), dS = P (dp + g), then the soft cap's chain
 * rule dT = dS (1 - t^2).  `rd` marks the entries read; dS goes to db (its
 * first nb entries) when db is not NULL: the additive mask's gradient. */
static inline void at_ds_row(const sk_attn_problem *P, double *x, const double *dp, const double *tc, double lse,
                             double g, unsigned char *rd, double *db, size_t nb, double *p) {
    int live = !isinf(lse);
    vd zero = splat(0.0), vlse = splat(lse), vg = splat(g), ninf = splat(-INF), one = splat(1.0);
    for (size_t j = 0; j < AT_BK; j += VW) {
        vd xv = ld_d(x + j);
        vl read = NE(xv, ninf);
        if (!live) read = (vl){0};
        vd pv = sel(read, vexp(sel(read, xv, vlse) - vlse, zero, 1, 1), zero);
        vd ds = sel(read, pv * (ld_d(dp + j) + vg), zero);
        if (db)
            for (int l = 0; l < VW && j + l < nb; l++) db[j + l] = ds[l];
        if (P->softcap > 0) {
            vd t = ld_d(tc + j);
            ds = ds * (one - t * t);
        }
        for (int l = 0; l < VW; l++) rd[j + l] = read[l] != 0;
        if (p) st_d(p + j, pv);
        st_d(x + j, ds);
    }
}

/* dq, g and the sink's gradient of query tile t of head h in batch entry b;
 * with dka and dva (the fused pass), also their terms of dK and dV for the
 * key head, added in order of the rows. */
static void at_backward_q_rows(sk_attn_run *R, at_bwdq_scratch *W, size_t b, size_t h, size_t t, double *dka,
                               double *dva) {
    const sk_attn_problem *P = R->P;
    size_t D = P->D, Dv = P->Dv, Dp = at_pad(D), Dvp = at_pad(Dv), L = P->L, S = P->S;
    size_t hk = h / R->group;
    size_t l0 = t * AT_TQ, nr = L - l0 < AT_TQ ? L - l0 : AT_TQ;
    size_t qrow = (b * P->hq + h) * L + l0;
    size_t koff = (b * P->hkv + hk) * S * D, voff = (b * P->hkv + hk) * S * Dv;
    const char *mbase = P->mask_kind ? P->mask + at_batch_offset(P, b) + (int64_t)h * P->stride_h : NULL;
    at_rows_in(P->dtype, P->q, qrow * D, D, nr, D, W->qd, D);
    at_rows_in(P->dtype, R->dout, qrow * Dv, Dv, nr, Dv, W->dod, Dv);
    int qfin = 1, dofin = 1;
    if (dka) {
        qfin = at_rows_in(P->dtype, P->q, qrow * D, D, nr, D, W->qb, Dp);
        dofin = at_rows_in(P->dtype, R->dout, qrow * Dv, Dv, nr, Dv, W->dob, Dvp);
    }
    for (size_t i = 0; i < nr; i++) {
        size_t row = qrow + i;
        double lse = (double)R->lse[row];
        int live = !isinf(lse);
        double dot = 0.0;
        for (size_t d = 0; d < Dv; d++) dot += W->dod[i * Dv + d] * at_load(P->dtype, R->o, row * Dv + d);
        double g = -dot + (R->dlse ? (double)R->dlse[row] : 0.0);
        g = live ? g : 0.0;
        W->lse[i] = lse;
        W->g[i] = g;
        R->g[row] = g;
        if (R->dsink_rows) {
            double sk = P->sinks[h];
            int ok = live && sk != -INF;
            R->dsink_rows[row] = ok ? exp(sk - lse) * g : 0.0;
        }
        memset(W->dqa + i * Dp, 0, Dp * sizeof(double));
    }
    size_t jend = at_key_end(P, l0 + nr - 1);
    for (size_t j0 = 0; j0 < jend; j0 += AT_BK) {
        size_t nb = S - j0 < AT_BK ? S - j0 : AT_BK;
        at_rows_in_t(P->dtype, P->k, koff + j0 * D, D, nb, D, W->kt, AT_BK, AT_BK);
        at_rows_in_t(P->dtype, P->v, voff + j0 * Dv, Dv, nb, Dv, W->vt, AT_BK, AT_BK);
        int kfin = at_rows_in(P->dtype, P->k, koff + j0 * D, D, nb, D, W->kb, Dp);
        at_dot(W->qd, D, W->kt, AT_BK, D, W->x, AT_BK, AT_BK, nr);
        at_dot(W->dod, Dv, W->vt, AT_BK, Dv, W->dp, AT_BK, AT_BK, nr);
        for (size_t i = 0; i < nr; i++) {
            double *x = W->x + i * AT_BK;
            const char *mrow = mbase ? mbase + (int64_t)(l0 + i) * P->stride_l : NULL;
            at_row_scores(P, mrow, l0 + i, j0, nb, x, W->tc + i * AT_BK);
            at_ds_row(P, x, W->dp + i * AT_BK, W->tc + i * AT_BK, W->lse[i], W->g[i], W->rd + i * AT_BK,
                      R->dbias ? R->dbias + (qrow + i) * S + j0 : NULL, nb, dka ? W->p + i * AT_BK : NULL);
        }
        if (kfin) at_axpy(W->x, AT_BK, 1, W->kb, Dp, nb, W->dqa, Dp, Dp, nr);
        else at_axpy_sel(W->x, W->rd, AT_BK, 1, W->kb, Dp, nb, W->dqa, Dp, Dp, nr);
        if (dka) {
            /* dK_j += sum_i dT_ij q_i, dV_j += sum_i P_ij dO_i: the tiles read by columns */
            if (qfin) at_axpy(W->x, 1, AT_BK, W->qb, Dp, nr, dka + j0 * Dp, Dp, Dp, nb);
            else at_axpy_sel(W->x, W->rd, 1, AT_BK, W->qb, Dp, nr, dka + j0 * Dp, Dp, Dp, nb);
            if (dofin) at_axpy(W->p, 1, AT_BK, W->dob, Dvp, nr, dva + j0 * Dvp, Dvp, Dvp, nb);
            else at_axpy_sel(W->p, W->rd, 1, AT_BK, W->dob, Dvp, nr, dva + j0 * Dvp, Dvp, Dvp, nb);
        }
    }
    for (size_t i = 0; i < nr; i++) {
        size_t row = qrow + i;
        if (R->dbias) {
            /* the keys past the causal bound, skipped above */
            size_t done = (jend + AT_BK - 1) / AT_BK * AT_BK;
            for (size_t j = done < S ? done : S; j < S; j++) R->dbias[row * S + j] = 0.0;
        }
        for (size_t d = 0; d < D; d++) at_store(P->dtype, R->dq, row * D + d, P->scale * W->dqa[i * Dp + d]);
    }
}

static void at_backward_q_item(sk_attn_run *R, at_bwdq_scratch *W, size_t item) {
    size_t tiles = (R->P->L + AT_TQ - 1) / AT_TQ;
    size_t t = item % tiles, bh = item / tiles;
    at_backward_q_rows(R, W, bh / R->P->hq, bh % R->P->hq, t, NULL, NULL);
}

/* The fused pass: one key head of one batch entry, its query heads and
 * their tiles in order; dK and dV are complete at the end. */
static void at_backward_head_item(sk_attn_run *R, at_bwdq_scratch *W, size_t item) {
    const sk_attn_problem *P = R->P;
    size_t D = P->D, Dv = P->Dv, Dp = at_pad(D), Dvp = at_pad(Dv), S = P->S;
    size_t hk = item % P->hkv, b = item / P->hkv, tiles = (P->L + AT_TQ - 1) / AT_TQ;
    memset(W->dka, 0, S * Dp * sizeof(double));
    memset(W->dva, 0, S * Dvp * sizeof(double));
    for (size_t hh = 0; hh < R->group; hh++)
        for (size_t t = 0; t < tiles; t++) at_backward_q_rows(R, W, b, hk * R->group + hh, t, W->dka, W->dva);
    size_t krow = (b * P->hkv + hk) * S;
    for (size_t j = 0; j < S; j++) {
        for (size_t d = 0; d < D; d++) at_store(P->dtype, R->dk, (krow + j) * D + d, P->scale * W->dka[j * Dp + d]);
        for (size_t d = 0; d < Dv; d++) at_store(P->dtype, R->dv, (krow + j) * Dv + d, W->dva[j * Dvp + d]);
    }
}

static void at_backward_q_task(void *arg, int tid) {
    (void)tid;
    sk_attn_run *R = arg;
    const sk_attn_problem *P = R->P;
    size_t D = P->D, Dv = P->Dv, Dp = at_pad(D);
    size_t TB = AT_TQ * AT_BK;
    size_t Dvp = at_pad(Dv), S = P->S;
    size_t fused = R->fused ? AT_TQ * Dp + AT_TQ * Dvp + TB + S * Dp + S * Dvp : 0;
    double *buf = at_alloc(AT_TQ * D + AT_TQ * Dv + D * AT_BK + Dv * AT_BK + AT_BK * Dp + 3 * TB + AT_TQ * Dp +
                           2 * AT_TQ + TB / 8 + fused);
    if (!buf) {
        __atomic_store_n(&R->err, SK_ENOMEM, __ATOMIC_RELAXED);
        return;
    }
    at_bwdq_scratch W;
    double *p = buf;
    W.x = p, p += TB;
    W.dp = p, p += TB;
    W.tc = p, p += TB;
    W.kt = p, p += D * AT_BK;
    W.vt = p, p += Dv * AT_BK;
    W.kb = p, p += AT_BK * Dp;
    W.dqa = p, p += AT_TQ * Dp;
    W.qd = p, p += AT_TQ * D;
    W.dod = p, p += AT_TQ * Dv;
    W.lse = p, p += AT_TQ;
    W.g = p, p += AT_TQ;
    W.rd = (unsigned char *)p, p += TB / 8;
    size_t item;
    if (R->fused) {
        W.qb = p, p += AT_TQ * Dp;
        W.dob = p, p += AT_TQ * Dvp;
        W.p = p, p += TB;
        W.dka = p, p += S * Dp;
        W.dva = p;
        while (at_claim(R, &item)) at_backward_head_item(R, &W, item);
    } else {
        while (at_claim(R, &item)) at_backward_q_item(R, &W, item);
    }
    free(buf);
}

/* --- backward: dk and dv per key tile ------------------------------------------ */

typedef struct {
    double *kd, *vdd, *qt, *dot, *qb, *dob, *x, *dp, *tc, *p, *dka, *dva, *lse, *g;
    unsigned char *rd;
} at_bwdkv_scratch;

static void at_backward_kv_item(sk_attn_run *R, at_bwdkv_scratch *W, size_t item) {
    const sk_attn_problem *P = R->P;
    size_t D = P->D, Dv = P->Dv, Dp = at_pad(D), Dvp = at_pad(Dv), L = P->L, S = P->S;
    size_t tiles = (S + AT_TK - 1) / AT_TK;
    size_t t = item % tiles, bh = item / tiles, hk = bh % P->hkv, b = bh / P->hkv;
    size_t j0 = t * AT_TK, nk = S - j0 < AT_TK ? S - j0 : AT_TK;
    size_t krow = (b * P->hkv + hk) * S + j0;
    at_rows_in(P->dtype, P->k, krow * D, D, nk, D, W->kd, D);
    at_rows_in(P->dtype, P->v, krow * Dv, Dv, nk, Dv, W->vdd, Dv);
    memset(W->dka, 0, nk * Dp * sizeof(double));
    memset(W->dva, 0, nk * Dvp * sizeof(double));
    int64_t off = at_causal_offset(P);
    for (size_t hh = 0; hh < R->group; hh++) {
        size_t h = hk * R->group + hh;
        const char *mbase = P->mask_kind ? P->mask + at_batch_offset(P, b) + (int64_t)h * P->stride_h : NULL;
        for (size_t i0 = 0; i0 < L; i0 += AT_BQ) {
            size_t nq = L - i0 < AT_BQ ? L - i0 : AT_BQ, nqp = at_pad(nq);
            if (P->causal && (int64_t)(i0 + nq - 1) + off < (int64_t)j0) continue;
            size_t qrow = (b * P->hq + h) * L + i0;
            at_rows_in_t(P->dtype, P->q, qrow * D, D, nq, D, W->qt, AT_BQ, nqp);
            at_rows_in_t(P->dtype, R->dout, qrow * Dv, Dv, nq, Dv, W->dot, AT_BQ, nqp);
            int qfin = at_rows_in(P->dtype, P->q, qrow * D, D, nq, D, W->qb, Dp);
            int dofin = at_rows_in(P->dtype, R->dout, qrow * Dv, Dv, nq, Dv, W->dob, Dvp);
            for (size_t ii = 0; ii < nqp; ii++) {
                W->lse[ii] = ii < nq ? (double)R->lse[qrow + ii] : -INF;
                W->g[ii] = ii < nq ? R->g[qrow + ii] : 0.0;
            }
            at_dot(W->kd, D, W->qt, AT_BQ, D, W->x, AT_BQ, nqp, nk);
            at_dot(W->vdd, Dv, W->dot, AT_BQ, Dv, W->dp, AT_BQ, nqp, nk);
            for (size_t jj = 0; jj < nk; jj++) {
                double *x = W->x + jj * AT_BQ, *tc = W->tc + jj * AT_BQ;
                for (size_t ii = 0; ii < nqp; ii++) {
                    const char *mrow = mbase ? mbase + (int64_t)(i0 + ii) * P->stride_l : NULL;
                    x[ii] = ii < nq ? at_score(P, mrow, i0 + ii, j0 + jj, x[ii], tc + ii) : -INF;
                }
                /* per query lse and g: the vector helper takes one row's; go lane by lane */
                vd zero = splat(0.0), ninf = splat(-INF), one = splat(1.0);
                for (size_t ii = 0; ii < nqp; ii += VW) {
                    vd xv = ld_d(x + ii), lv = ld_d(W->lse + ii), gv = ld_d(W->g + ii);
                    vl read = NE(xv, ninf) & NE(lv, ninf) & NE(lv, splat(INF));
                    vd pv = sel(read, vexp(sel(read, xv, lv) - lv, zero, 1, 1), zero);
                    vd ds = sel(read, pv * (ld_d(W->dp + jj * AT_BQ + ii) + gv), zero);
                    if (P->softcap > 0) {
                        vd tv = ld_d(tc + ii);
                        ds = ds * (one - tv * tv);
                    }
                    for (int l = 0; l < VW; l++) W->rd[jj * AT_BQ + ii + l] = read[l] != 0;
                    st_d(W->p + jj * AT_BQ + ii, pv);
                    st_d(x + ii, ds);
                }
            }
            if (qfin) at_axpy(W->x, AT_BQ, 1, W->qb, Dp, nq, W->dka, Dp, Dp, nk);
            else at_axpy_sel(W->x, W->rd, AT_BQ, 1, W->qb, Dp, nq, W->dka, Dp, Dp, nk);
            if (dofin) at_axpy(W->p, AT_BQ, 1, W->dob, Dvp, nq, W->dva, Dvp, Dvp, nk);
            else at_axpy_sel(W->p, W->rd, AT_BQ, 1, W->dob, Dvp, nq, W->dva, Dvp, Dvp, nk);
        }
    }
    for (size_t jj = 0; jj < nk; jj++) {
        for (size_t d = 0; d < D; d++) at_store(P->dtype, R->dk, (krow + jj) * D + d, P->scale * W->dka[jj * Dp + d]);
        for (size_t d = 0; d < Dv; d++) at_store(P->dtype, R->dv, (krow + jj) * Dv + d, W->dva[jj * Dvp + d]);
    }
}

static void at_backward_kv_task(void *arg, int tid) {
    (void)tid;
    sk_attn_run *R = arg;
    const sk_attn_problem *P = R->P;
    size_t D = P->D, Dv = P->Dv, Dp = at_pad(D), Dvp = at_pad(Dv);
    size_t TB = AT_TK * AT_BQ;
    double *buf = at_alloc(AT_TK * D + AT_TK * Dv + D * AT_BQ + Dv * AT_BQ + AT_BQ * Dp + AT_BQ * Dvp + 4 * TB +
                           AT_TK * Dp + AT_TK * Dvp + 2 * AT_BQ + TB / 8);
    if (!buf) {
        __atomic_store_n(&R->err, SK_ENOMEM, __ATOMIC_RELAXED);
        return;
    }
    at_bwdkv_scratch W;
    double *p = buf;
    W.x = p, p += TB;
    W.dp = p, p += TB;
    W.tc = p, p += TB;
    W.p = p, p += TB;
    W.qt = p, p += D * AT_BQ;
    W.dot = p, p += Dv * AT_BQ;
    W.qb = p, p += AT_BQ * Dp;
    W.dob = p, p += AT_BQ * Dvp;
    W.dka = p, p += AT_TK * Dp;
    W.dva = p, p += AT_TK * Dvp;
    W.kd = p, p += AT_TK * D;
    W.vdd = p, p += AT_TK * Dv;
    W.lse = p, p += AT_BQ;
    W.g = p, p += AT_BQ;
    W.rd = (unsigned char *)p;
    size_t item;
    while (at_claim(R, &item)) at_backward_kv_item(R, &W, item);
    free(buf);
}

const sk_attn_isa SK_ATTN_TABLE = {at_forward_task, at_backward_q_task, at_backward_kv_task};
