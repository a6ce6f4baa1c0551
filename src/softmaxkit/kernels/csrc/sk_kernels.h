/* Shared declarations of the native kernels.
 *
 * The per-ISA translation units (sk_isa_*.c) each provide one table of
 * "range kernels": loops over a contiguous stretch of one row, vectorised for
 * that instruction set.  The driver (sk_driver.c) builds whole rows out of
 * them, splits rows across threads and handles the rows whose answer is a
 * limit (fully masked, +inf, NaN).  The formulas are those of
 * softmaxkit/_numerics.py; see the module docstring of softmaxkit.kernels.
 */
#ifndef SK_KERNELS_H
#define SK_KERNELS_H

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
    double hi, lo, cnt;
} sk_part;

/* Class coefficients of one cross-entropy row (see _numerics.cross_entropy_rows
 * and _losses.cross_entropy):
 *   class index t: c_j = es * sm_j (+ hv at j == t)
 *   probabilities q: c_j = qs * q_j * w_j + es * sm_j
 * with sm_j = inv_nf * w_j where the logit is not -inf, else 0. */
typedef struct {
    const void *q;     /* probabilities (family type) of the range, or NULL */
    const double *w;   /* class weights (float64) of the whole row, or NULL */
    int64_t t;         /* target class, -1 when none */
    double hv;         /* (1 - eps) * row weight, at the target */
    double qs;         /* 1 - eps, for probabilities */
    double es;         /* eps where smoothing applies to the row, else 0 */
    double inv_nf;     /* 1 / number of logits that are not -inf */
} sk_coef;

/* A row-shaped output whose values are known once its row's sums are:
 *   y = e * f                        (softmax, one-hot cross-entropy gradient)
 *   y = (x - a) / T - L  (+ lo)      (log_softmax), when e is NULL;
 * in the float64 family e * f is the quotient e / d, corrected (vdiv), with
 * f = 1 / d.  `out` NULL: nothing to write. */
typedef struct {
    void *out;
    size_t n;
    const double *e;
    const void *x;
    double d, f, a, T, L;
} sk_write;

/* Memory traffic to overlap with a compute-bound pass (`sum`): the next
 * row's logits (read) and output (to be written) brought into cache, and
 * the log_softmax output `w` of the row before (e NULL) written, streamed
 * where the family and ISA can (see `write` in sk_family.h).  The prefetches
 * are hints only: NULL streams are skipped, and results never depend on
 * them. */
typedef struct {
    const char *rd;
    char *wr;
    size_t rd_bytes, wr_bytes;
    sk_write w;
} sk_ahead;

/* Outputs of at least this many bytes are written around the cache (see
 * `write` in sk_family.h): they cannot stay in it anyway. */
#define SK_STREAM_MIN ((size_t)32 << 20)

/* Range kernels of one precision family.  The float32 family reads and
 * writes float and computes in float64; the float64 family uses exact shifts
 * and compensated sums.  `x`, `out` etc. point at elements of the family's
 * type; `e` buffers are float64. */
typedef struct {
    double (*max)(const void *x, size_t n, int *nan);
    size_t (*find)(const void *x, size_t n, double a);
    size_t (*nfin)(const void *x, size_t n);
    void (*sum)(const void *x, size_t n, double a, double T, double *e, sk_part *parts, const sk_ahead *ah);
    void (*write)(const sk_write *w, int stream);
    /* float64 family only: the float32 one writes e * f (write) */
    void (*ce_hard_grad)(const double *e, void *g, size_t n, double d, double c, double zg, int has_z, double denom);
    void (*ce_terms)(const void *x, const void *xf, size_t n, double a, double L, const sk_coef *cf, size_t off,
                     size_t k, sk_part *loss, sk_part *csum, sk_part *crest);
    void (*ce_grad)(const double *e, const void *xf, void *g, size_t n, double d, double csum, double zg, int has_z,
                    double denom, const sk_coef *cf, size_t off);
    void (*svjp_dot)(const void *p, const void *g, size_t n, sk_part *parts);
    void (*svjp_w)(const void *p, const void *g, void *out, size_t n, double dot);
    void (*lvjp_sum)(const void *y, const void *g, size_t n, sk_part *parts);
    void (*lvjp_w)(const void *y, const void *g, void *out, size_t n, double total);
} sk_family;

typedef struct {
    const char *name;
    sk_family f32, f64;
} sk_isa;

extern const sk_isa sk_isa_baseline;
#if defined(__x86_64__) || defined(_M_X64)
#define SK_X86 1
extern const sk_isa sk_isa_avx2;
extern const sk_isa sk_isa_avx512;
#endif

/* The driver (sk_driver.c).  dtype: 0 float16, 1 float32, 2 float64.  Every
 * entry point returns 0, or SK_ENOMEM, or SK_ETARGET for a class index that is
 * neither in [0, n) nor ignore_index (checked before anything is written).
 * sk_cross_entropy divides the gradient by `denom`, or with denom < 0 by the
 * sum of row weights (the "mean" divisor; 1 when that is 0), and returns that
 * sum in *weight_sum (the number of rows for probability targets). */
#define SK_ENOMEM 1
#define SK_ETARGET 2

int sk_select_isa(const char *name);
const char *sk_isa_name(void);
void sk_set_threads(int n);
int sk_get_threads(void);

int sk_softmax(int dtype, const void *x, void *out, size_t rows, size_t n, double T, int log);
int sk_logsumexp(int dtype, const void *x, void *out, size_t rows, size_t n);
int sk_cross_entropy(int dtype, const void *x, void *grad, double *loss, size_t rows, size_t n,
                     const int64_t *targets, const void *q, const double *w, int64_t ignore_index, double eps,
                     double z, double denom, double *weight_sum);
int sk_vjp(int dtype, int log, const void *y, const void *g, void *out, size_t rows, size_t n);

#endif
