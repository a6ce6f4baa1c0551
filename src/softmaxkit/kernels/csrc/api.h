/* Entry points of the native kernels, called by the Python bindings.
 *
 * Every entry point takes a C-contiguous array of one float dtype (DT_*;
 * bfloat16 is stored as its 16 high bits of float32) of shape (outer, n,
 * inner), reduced along n: rows = outer * inner rows of n elements, row r =
 * (r / inner, r % inner); inner 1 is rows of adjacent elements.  Row-shaped
 * outputs and probability targets have the input's layout; per-row outputs,
 * losses and class indices are in row order r.  They write into buffers the
 * caller provides, and return 0,
 * SK_ENOMEM, or SK_ETARGET for a class index that is neither in [0, n) nor
 * ignore_index (checked before anything is written).  The formulas are those
 * of softmaxkit.numerics; see the module docstring of softmaxkit.kernels.
 */
#ifndef SK_API_H
#define SK_API_H

#include <stddef.h>
#include <stdint.h>

enum { DT_F16 = 0, DT_F32 = 1, DT_F64 = 2, DT_BF16 = 3 };

#define SK_ENOMEM 1
#define SK_ETARGET 2

/* name: "best", "avx512", "avx2" or "baseline"; -1 when this machine lacks it */
int sk_select_isa(const char *name);
const char *sk_isa_name(void);
void sk_set_threads(int n);
int sk_get_threads(void);

int sk_softmax(int dtype, const void *x, void *out, size_t rows, size_t n, size_t inner, double temperature,
               int log);
int sk_logsumexp(int dtype, const void *x, void *out, size_t rows, size_t n, size_t inner);
/* One loss per row into `loss` (float64) and, when `grad` is not NULL, the
 * gradient of their sum divided by `grad_divisor` (finite, not 0).  The
 * reduction and its denominator are the caller's (softmaxkit.numerics.reduction). */
int sk_cross_entropy(int dtype, const void *x, void *grad, double *loss, size_t rows, size_t n, size_t inner,
                     const int64_t *targets, const void *probs, const double *class_weight, int64_t ignore_index,
                     double eps, double z_loss, double grad_divisor);
int sk_vjp(int dtype, int log, const void *y, const void *cotangent, void *out, size_t rows, size_t n,
           size_t inner);
/* n float64 values rounded to float32 in IEEE arithmetic (subnormal results
 * kept, whatever the caller's floating-point mode) */
void sk_narrow_f64(const double *src, float *dst, size_t n);
/* n values of a 16-bit dtype widened to float32 (narrow 0), or float32
 * values rounded to it (narrow 1), by the conversions of the instruction set
 * in use; on one thread */
void sk_convert(int dtype, int narrow, const void *src, void *dst, size_t n);

/* Scaled dot-product attention (attention.c): q (batch, Hq, L, D), k (batch,
 * Hkv, S, D), v (batch, Hkv, S, Dv), C-contiguous, float32 or bfloat16 bits
 * (dtype); query head h reads key head h / (Hq / Hkv).  The mask, when
 * mask_kind is not SK_MASK_NONE, is indexed by byte strides: nb batch
 * dimensions of shapes bshape (their product is batch, in row-major order)
 * and strides bstride, then the head, row and key strides (0 for a
 * broadcast dimension).  causal: 0 none, 1 j <= i, 2 j <= i + S - L.
 * softcap 0: none.  sinks: Hq float64 logits or NULL.  The formulas are
 * those of softmaxkit.numerics.attention, computed in float64. */
enum { SK_MASK_NONE = 0, SK_MASK_BOOL = 1, SK_MASK_F32 = 2, SK_MASK_F64 = 3 };
#define SK_ATTN_MAX_DIMS 32
typedef struct {
    int dtype;
    size_t batch, hq, hkv, L, S, D, Dv;
    const void *q, *k, *v;
    int mask_kind;
    const char *mask;
    int nb;
    int64_t bshape[SK_ATTN_MAX_DIMS], bstride[SK_ATTN_MAX_DIMS];
    int64_t stride_h, stride_l, stride_s;
    int causal;
    double scale, softcap;
    const double *sinks;
} sk_attn_problem;
/* out (batch, Hq, L, Dv) in the input dtype; lse (batch, Hq, L) float32 */
int sk_attention_forward(const sk_attn_problem *P, void *out, float *lse);
/* From the forward's out and lse (float32), the cotangents dout (input
 * dtype) and dlse (float32, or NULL): dq, dk, dv in the input dtype, dsinks
 * (Hq float64; NULL without sinks) and, when dbias is not NULL, the
 * gradient of an additive mask, (batch, Hq, L, S) float64. */
int sk_attention_backward(const sk_attn_problem *P, const void *out, const float *lse, const void *dout,
                          const float *dlse, void *dq, void *dk, void *dv, double *dsinks, double *dbias);

#endif
