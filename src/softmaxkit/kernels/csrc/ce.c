/* The cross-entropy row program (see job.h for the phases).
 *
 * Per row, with class coefficients c_j (sk_coef), C = sum c_j, the row's
 * log-sum-exp lse and p = softmax(x):
 *     loss = sum c_j (-log p_j)  (+ z w lse^2 with a z-loss, w the row weight)
 *     grad = ((C p - c) + zg p) / divisor,   zg = 2 z w lse.
 * A class index target without smoothing is "one-hot": its single
 * coefficient needs no pass of its own, and the gradient away from the
 * target and the argmax is C p (+ zg p), one factor times the exponentials.
 */
#include <math.h>

#include "compensated.h"
#include "job.h"

/* One row, as far as this thread's chunk of it goes. */
typedef struct {
    size_t r;               /* the row */
    const char *prob_chunk; /* the chunk's probability targets, input dtype, or NULL */
    char *grad_chunk;       /* the chunk's gradient, input dtype, or NULL */
    const void *x;          /* the chunk's logits, family type */
    void *g;                /* the chunk's gradient, family type, or NULL */
    sk_coef cf;
    double row_weight;
    int general;            /* coefficients other than a single class's: probabilities or smoothing */
    row_scan_t scan;
    /* once the exponentials are summed */
    int inf_row;            /* the row has +inf: its stand-in is used, shifted by 0 */
    double s;               /* sum of exp(x - max) - 1 */
    double log_sum;         /* log1p(s) */
    double lse;
    double loss, coef_sum;
    double coef_rest;       /* sum of c_j over j != argmax */
    double x_t;             /* the target's logit, read before any gradient of the row is written */
} ce_row_t;

/* The coefficients of row r (inv_unmasked: once the row is scanned). */
static void ce_coefficients(rowctx_t *R, size_t r, ce_row_t *C) {
    job_t *J = R->J;
    sk_coef *cf = &C->cf;
    *cf = (sk_coef){.weights = J->class_weight, .target = -1};
    C->row_weight = 1.0;
    if (C->prob_chunk) {
        cf->prob_scale = 1.0 - J->eps;
        cf->smoothing = J->eps;
        if (J->codec) {
            J->codec->widen(C->prob_chunk, R->S->in2_f32, R->len);
            cf->probs = R->S->in2_f32;
        } else {
            cf->probs = C->prob_chunk;
        }
    } else {
        int64_t t = J->targets[r];
        int keep = t != J->ignore_index;
        C->row_weight = keep ? (J->class_weight ? J->class_weight[t] : 1.0) : 0.0;
        cf->target = keep ? t : -1;
        cf->target_coef = (1.0 - J->eps) * C->row_weight;
        cf->smoothing = keep ? J->eps : 0.0;
    }
    C->general = C->prob_chunk != NULL || cf->smoothing != 0.0;
}

/* The coefficient of class j of the whole row (x_j its logit), one at a
 * time: the range kernels' class_coef for a single entry. */
static double class_coef_at(const job_t *J, const ce_row_t *C, double x_j, size_t j) {
    const sk_coef *cf = &C->cf;
    double u = x_j != -INFINITY ? (cf->weights ? cf->inv_unmasked * cf->weights[j] : cf->inv_unmasked) : 0.0;
    double base = cf->smoothing * u;
    if (C->prob_chunk) {
        double q_j = load_at(J, J->probs, C->r, j);
        double y = cf->prob_scale * (cf->weights ? q_j * cf->weights[j] : q_j);
        return cf->smoothing != 0.0 ? y + base : y;
    }
    return (int64_t)j == cf->target ? cf->target_coef + base : base;
}

/* A row with NaN (loss and gradient NaN) or fully masked (every -log p_j
 * +inf, gradient 0): of each term c_j (-log p_j) only whether c_j is 0
 * matters. */
static void ce_limit_row(rowctx_t *R, size_t r, const ce_row_t *C) {
    job_t *J = R->J;
    int nan = C->scan.nan;
    if (R->chunk == 0) {
        double nlp = nan ? NAN : INFINITY, loss = 0.0;
        for (size_t j = 0; j < J->n; j++) {
            double c_j = class_coef_at(J, C, load_at(J, J->x, r, j), j);
            if (c_j != 0.0) loss += c_j * nlp;
        }
        if (J->z_loss != 0.0 && C->row_weight != 0.0)
            loss += J->z_loss * C->row_weight * (nan ? NAN : -INFINITY) * (nan ? NAN : -INFINITY);
        J->loss[r] = loss;
    }
    /* the gradient may be written over the logits read above */
    sync_row(R);
    if (C->g) fill_range(J->dtype, C->g, R->len, nan ? NAN : 0.0);
}

/* An ignored row: every coefficient is 0, so are the loss and gradient. */
static void ce_ignored_row(rowctx_t *R, size_t r, const ce_row_t *C) {
    if (R->chunk == 0) R->J->loss[r] = 0.0;
    if (C->g) fill_range(R->J->dtype, C->g, R->len, 0.0);
}

/* The loss and coefficient sums of a one-hot row: c_t (-log p_t). */
static void ce_onehot_loss(const rowctx_t *R, double a, ce_row_t *C) {
    const job_t *J = R->J;
    const sk_coef *cf = &C->cf;
    C->loss = 0.0;
    if (cf->target_coef != 0.0) {
        double x_t = C->x_t, lo = 0.0;
        if (C->inf_row) x_t = x_t == INFINITY ? 0.0 : -INFINITY;
        int comp = J->dtype == DT_F64;
        double hi = comp ? two_diff(x_t, a, &lo) : x_t - a;
        double nlp = C->log_sum - hi;
        if (comp) nlp = nlp - lo;
        C->loss = cf->target_coef * nlp;
    }
    C->coef_sum = cf->target_coef;
    C->coef_rest = (size_t)cf->target == C->scan.argmax ? 0.0 : cf->target_coef;
}

/* Phase 3 for general coefficients: the loss and coefficient sums of the
 * chunk's blocks, combined over the row. */
static void ce_general_loss(rowctx_t *R, const void *xs, double a, ce_row_t *C) {
    job_t *J = R->J;
    size_t b0 = R->start / SK_BLOCK, k = C->scan.argmax;
    size_t k_here = k >= R->start ? k - R->start : (size_t)-1;
    J->fam->ce_terms(xs, C->x, R->len, a, C->log_sum, &C->cf, R->start, k_here, R->loss_parts + b0,
                     R->coef_parts + b0, R->rest_parts + b0);
    sync_row(R);
    int comp = J->dtype == DT_F64;
    C->loss = combine_parts(R->loss_parts, J->blocks, comp, 0.0);
    C->coef_sum = combine_parts(R->coef_parts, J->blocks, comp, 0.0);
    C->coef_rest = combine_parts(R->rest_parts, J->blocks, comp, 0.0);
}

/* One entry of the gradient from C p - c: ((C p - c) + zg p) / divisor (the
 * range kernels' ce_grad_from, for one entry). */
static double ce_grad_from(double cp_minus_c, double p, const sk_ce_grad *cg) {
    double v = cp_minus_c;
    if (cg->has_z) v = v + cg->zg * p;
    if (cg->divisor != 1.0) v = v / cg->divisor;
    return v;
}

static void store_entry(const job_t *J, void *g, size_t i, double v) {
    if (J->dtype == DT_F64) ((double *)g)[i] = v;
    else ((float *)g)[i] = (float)v;
}

/* At the argmax k, where p_k > 1/2 (s < 1) and the class has a coefficient
 * (c_k != 0, of either sign: class weights may be negative), the gradient
 * is (C - c_k) - C s / (1 + s), never C p_k - c_k; elsewhere C p_k - c_k
 * has nothing to cancel.  The range kernels already wrote C p_k - c_k,
 * except the one-hot ones, which leave the target's coefficient to this
 * step. */
static void ce_fix_argmax(const rowctx_t *R, const ce_row_t *C, const sk_ce_grad *cg) {
    size_t k = C->scan.argmax;
    int cancels = C->s < 1.0 && C->coef_sum != C->coef_rest;
    int target_at_k = !C->general && (size_t)C->cf.target == k;
    if (k < R->start || k >= R->start + R->len || !(cancels || target_at_k)) return;
    double p_k = 1.0 / cg->sum;
    double cp_minus_c =
        cancels ? C->coef_rest - C->coef_sum * (C->s / cg->sum) : C->coef_sum * p_k - C->cf.target_coef;
    store_entry(R->J, C->g, k - R->start, ce_grad_from(cp_minus_c, p_k, cg));
}

/* Phase 4: the gradient of the chunk.  In the float64 family `e` is the
 * gradient buffer itself, overwritten here. */
static void ce_write_grad(const rowctx_t *R, const ce_row_t *C, const double *e, double zg) {
    const job_t *J = R->J;
    sk_ce_grad cg = {.sum = 1.0 + C->s, .coef_sum = C->coef_sum, .zg = zg, .has_z = J->z_loss != 0.0,
                     .divisor = J->grad_divisor};
    /* the one-hot target, unless it is the argmax, is written with its
       coefficient below: its exponential is read before e is overwritten */
    size_t t = (size_t)C->cf.target;
    int t_here = !C->general && t != C->scan.argmax && t >= R->start && t < R->start + R->len;
    double e_t = t_here ? e[t - R->start] : 0.0;
    if (C->general) J->fam->ce_grad(e, C->x, C->g, R->len, &cg, &C->cf, R->start);
    else J->fam->ce_onehot_grad(e, C->g, R->len, &cg, J->stream);
    if (t_here) {
        double p_t = e_t / cg.sum;
        store_entry(J, C->g, t - R->start, ce_grad_from(C->coef_sum * p_t - C->cf.target_coef, p_t, &cg));
    }
    ce_fix_argmax(R, C, &cg);
}

/* A row with a finite maximum or +inf: the exponential pass, the loss and
 * the gradient. */
static void ce_regular_row(rowctx_t *R, size_t r, ce_row_t *C) {
    job_t *J = R->J;
    C->inf_row = C->scan.max == INFINITY;
    const void *xs = C->inf_row ? inf_standin(R, C->x) : C->x;
    double a = C->inf_row ? 0.0 : C->scan.max;
    double *e = !C->g ? NULL : J->dtype == DT_F64 ? (double *)C->g : R->S->e;
    /* only the one-hot gradient is streamed */
    exp_pass(R, xs, a, 1.0, e, !J->stream || C->general);
    C->s = C->inf_row ? sum_exp_minus_1(R) : row_sum_exp_minus_1(R, C->r, a, 1.0);
    C->log_sum = log1p(C->s);
    C->lse = C->inf_row ? INFINITY : a + C->log_sum;
    int has_z = J->z_loss != 0.0;
    double zg = has_z ? 2.0 * J->z_loss * C->row_weight * (C->inf_row ? 0.0 : C->lse) : 0.0;
    if (C->general) ce_general_loss(R, xs, a, C);
    else ce_onehot_loss(R, a, C);
    if (has_z && C->row_weight != 0.0) C->loss = C->loss + J->z_loss * C->row_weight * C->lse * C->lse;
    if (R->chunk == 0) J->loss[r] = C->loss;
    if (C->g) ce_write_grad(R, C, e, zg);
}

void row_cross_entropy(rowctx_t *R, size_t r) {
    job_t *J = R->J;
    ce_row_t C = {0};
    C.r = r;
    C.prob_chunk = J->probs ? chunk_in(R, J->probs, R->S->tile_in2, r) : NULL;
    C.grad_chunk = J->out ? chunk_out(R, r) : NULL;
    C.x = chunk_logits(R, chunk_in(R, J->x, R->S->tile_in, r));
    if (C.grad_chunk) C.g = J->codec ? (void *)R->S->out_f32 : (void *)C.grad_chunk;
    ce_coefficients(R, r, &C);
    /* Read before the row's first barrier: a gradient written over the
       logits (float32, in place) overwrites other chunks' entries after it. */
    if (!C.prob_chunk && C.cf.target >= 0) C.x_t = load_at(J, J->x, r, (size_t)C.cf.target);
    scan_row(R, C.x, C.g != NULL, J->eps != 0.0, &C.scan);
    C.cf.inv_unmasked = 1.0 / (C.scan.unmasked == 0 ? 1.0 : (double)C.scan.unmasked);
    if (C.scan.nan || C.scan.max == -INFINITY) ce_limit_row(R, r, &C);
    else if (!C.general && C.row_weight == 0.0) ce_ignored_row(R, r, &C);
    else ce_regular_row(R, r, &C);
    if (C.g && J->codec) J->codec->narrow(R->S->out_f32, C.grad_chunk, R->len);
}
