/* Range kernels: loops over a contiguous stretch of one row, vectorised for
 * one instruction set.  Each isa_*.c provides one table of them per precision
 * family; the row programs (rows.c, ce.c) build whole rows out of them,
 * split rows across threads (pool.c) and handle the rows whose answer is a
 * limit (fully masked, +inf, NaN).
 */
#ifndef SK_RANGE_KERNELS_H
#define SK_RANGE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Sums are formed per block of SK_BLOCK elements counted from the start of
 * the row, and the block sums are added in order.  A row split across threads
 * is split at block boundaries, so every thread count gives bitwise the same
 * result. */
#define SK_BLOCK 2048

/* One block's sum: hi + lo (lo is 0 in the float32 family, whose terms carry
 * spare precision) and, for the exponential sums, the number of entries equal
 * to the row maximum, whose terms are exactly 1 and are added separately. */
typedef struct {
    double hi, lo, maxima;
} sk_part;

/* Class coefficients c_j of one cross-entropy row (see
 * softmaxkit.numerics.cross_entropy.class_coefficients):
 *   class index t:   c_j = smoothing * u_j (+ target_coef at j == t)
 *   probabilities q: c_j = prob_scale * q_j * w_j + smoothing * u_j
 * with u_j = inv_unmasked * w_j where the logit is not -inf, else 0
 * (w_j = 1 without class weights). */
typedef struct {
    const void *probs;      /* probabilities (family type) of the range, or NULL */
    const double *weights;  /* class weights (float64) of the whole row, or NULL */
    int64_t target;         /* target class, -1 when none */
    double target_coef;     /* (1 - eps) * row weight */
    double prob_scale;      /* 1 - eps */
    double smoothing;       /* eps where smoothing applies to the row, else 0 */
    double inv_unmasked;    /* 1 / number of logits that are not -inf */
} sk_coef;

/* The constants of one row's cross-entropy gradient
 *     g_j = ((C p_j - c_j) + zg p_j) / divisor,   p_j = e_j / sum,
 * with c_j the class coefficients, C their sum and zg = 2 z w lse the
 * z-loss term (w the row weight). */
typedef struct {
    double sum;        /* sum of exp(x - max) over the row */
    double coef_sum;   /* C */
    double zg;
    int has_z;         /* a z-loss is in use (zg p is added even where zg is 0) */
    double divisor;    /* 1: none */
} sk_ce_grad;

/* A row-shaped output whose values are known once its row's sums are:
 *   y = e * factor                                      (e not NULL)
 *   y = (x - shift) / temperature - log_sum  (+ the low part of the shift)
 *                                                       (log_softmax: e NULL)
 * In the float64 family e * factor is the quotient e / divisor, corrected
 * (vdiv), with factor = 1 / divisor.  `out` NULL: nothing to write. */
typedef struct {
    void *out;
    size_t n;
    const double *e;
    const void *x;
    double divisor, factor, shift, temperature, log_sum;
} sk_write;

/* Memory traffic to overlap with a compute-bound pass (exp_sum): the next
 * row's logits (read) and output (to be written) brought into cache, and
 * the log_softmax output `deferred` of the row before written, streamed
 * where the family and ISA can (see `write` in family.h).  The prefetches
 * are hints only: NULL streams are skipped, and results never depend on
 * them. */
typedef struct {
    const char *next_in;
    char *next_out;
    size_t next_in_bytes, next_out_bytes;
    sk_write deferred;
} sk_ahead;

/* Outputs of at least this many bytes are written around the cache (see
 * `write` in family.h): they cannot stay in it anyway. */
#define SK_STREAM_MIN ((size_t)32 << 20)

/* Range kernels of one precision family.  The float32 family reads and
 * writes float and computes in float64; the float64 family uses exact shifts
 * and compensated sums.  `x`, `out` etc. point at elements of the family's
 * type; `e` buffers are float64. */
typedef struct {
    /* the maximum, in *nan whether there is a NaN, and in *first (unless it
     * is NULL) the first index of an element equal to the maximum, or n */
    double (*max)(const void *x, size_t n, int *nan, size_t *first);
    /* the number of logits that are not -inf */
    size_t (*count_unmasked)(const void *x, size_t n);
    /* per block: the sum of exp((x - a) / temperature) (see sk_part); every
     * term into e unless it is NULL */
    void (*exp_sum)(const void *x, size_t n, double a, double temperature, double *e, sk_part *parts,
                    const sk_ahead *ah);
    void (*write)(const sk_write *w, int stream);
    /* the gradient of a row with a class index target, away from the target
     * and the argmax (where c_j is 0) */
    void (*ce_onehot_grad)(const double *e, void *g, size_t n, const sk_ce_grad *cg, int stream);
    /* per block: sum c_j (-log p_j), sum c_j, and sum c_j over j != k
     * (k relative to the range); xf: the logits that decide which classes
     * are masked */
    void (*ce_terms)(const void *x, const void *xf, size_t n, double a, double log_sum, const sk_coef *cf,
                     size_t off, size_t k, sk_part *loss, sk_part *coef_sum, sk_part *coef_rest);
    /* the gradient with general coefficients, `off` the range's first class */
    void (*ce_grad)(const double *e, const void *xf, void *g, size_t n, const sk_ce_grad *cg, const sk_coef *cf,
                    size_t off);
    void (*softmax_vjp_dot)(const void *p, const void *g, size_t n, sk_part *parts);
    void (*softmax_vjp_write)(const void *p, const void *g, void *out, size_t n, double dot);
    void (*log_softmax_vjp_sum)(const void *y, const void *g, size_t n, sk_part *parts);
    void (*log_softmax_vjp_write)(const void *y, const void *g, void *out, size_t n, double total);
} sk_family;

/* Conversions of one 16-bit format (half.h states the rules): widen is
 * exact, narrow rounds to nearest even. */
typedef struct {
    void (*widen)(const void *src, float *dst, size_t n);
    void (*narrow)(const float *src, void *dst, size_t n);
} sk_codec;

typedef struct {
    const char *name;
    sk_family f32, f64;
    sk_codec f16, bf16;
} sk_isa;

extern const sk_isa sk_isa_baseline;
#if defined(__x86_64__) || defined(_M_X64)
#define SK_X86 1
extern const sk_isa sk_isa_avx2;
extern const sk_isa sk_isa_avx512;
#endif

#endif
