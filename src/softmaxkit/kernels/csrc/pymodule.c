/* Python bindings of the native kernels: C-contiguous buffers in, results
 * written into caller-provided buffers, the GIL released while kernels run.
 * Argument checking of values happens in softmaxkit.kernels; this layer only
 * checks what it needs to stay memory-safe (formats, sizes, writability). */
#include "outcache.h"

#include <math.h>

#include "api.h"

typedef struct {
    Py_buffer v;
    int held;
} buf_t;

static void release(buf_t *b) {
    if (b->held) PyBuffer_Release(&b->v);
    b->held = 0;
}

static int get(PyObject *o, buf_t *b, int writable, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, &b->v, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s buffer; got %.80s", name,
                     writable ? ", writable" : "", Py_TYPE(o)->tp_name);
        return -1;
    }
    b->held = 1;
    return 0;
}

static const char *strip_order(const char *f) {
    if (!f) return "B";
    if (*f == '@' || *f == '=') return f + 1;
#if PY_LITTLE_ENDIAN
    if (*f == '<') return f + 1;
#else
    if (*f == '>' || *f == '!') return f + 1;
#endif
    return f;
}

/* DT_F16, DT_F32, DT_F64, or -1 for another format.  No buffer format names
 * bfloat16: with `bf16` its bits come as 2-byte integers, DT_BF16, and every
 * other format gives -1. */
static int float_kind(const Py_buffer *v, int bf16) {
    const char *f = strip_order(v->format);
    if (f[1] != '\0') return -1;
    if (bf16) return (*f == 'H' || *f == 'h') && v->itemsize == 2 ? DT_BF16 : -1;
    if (*f == 'e' && v->itemsize == 2) return DT_F16;
    if (*f == 'f' && v->itemsize == 4) return DT_F32;
    if (*f == 'd' && v->itemsize == 8) return DT_F64;
    return -1;
}

static int is_int64(const Py_buffer *v) {
    const char *f = strip_order(v->format);
    return f[1] == '\0' && (*f == 'l' || *f == 'q') && v->itemsize == 8;
}

static const char *DTYPES[] = {"float16", "float32", "float64", "bfloat16"};

/* The rows, their length and the distance between their elements when the
 * array is reduced along `axis` (negative: from the end). */
static int rows_of(const Py_buffer *v, const char *name, long long axis, size_t *rows, size_t *n, size_t *inner) {
    if (v->ndim < 1) {
        PyErr_Format(PyExc_ValueError, "%s must have at least one dimension", name);
        return -1;
    }
    if (axis < -v->ndim || axis >= v->ndim) {
        PyErr_Format(PyExc_ValueError, "axis must be in [%d, %d) for %s of %d dimensions; got %lld", -v->ndim, v->ndim,
                     name, v->ndim, axis);
        return -1;
    }
    int k = (int)(axis < 0 ? axis + v->ndim : axis);
    size_t outer = 1, in = 1;
    for (int i = 0; i < k; i++) outer *= (size_t)v->shape[i];
    for (int i = k + 1; i < v->ndim; i++) in *= (size_t)v->shape[i];
    *n = (size_t)v->shape[k];
    /* no rows when there are no elements: inner may then be 0 */
    *rows = outer * in;
    *inner = in ? in : 1;
    return 0;
}

static int check_float(const buf_t *b, int dtype, int bf16, const char *name) {
    int k = float_kind(&b->v, bf16);
    if (k < 0) {
        const char *format = b->v.format ? b->v.format : "B";
        if (bf16)
            PyErr_Format(PyExc_TypeError,
                         "%s must hold bfloat16 (under the bfloat16 flag: 2-byte integers, format 'H' or 'h'); "
                         "got format '%s'",
                         name, format);
        else
            PyErr_Format(PyExc_TypeError,
                         "%s must hold float16, float32 or float64, or bfloat16 as 2-byte integers with bfloat16 "
                         "set; got format '%s'",
                         name, format);
        return -1;
    }
    if (dtype >= 0 && k != dtype) {
        PyErr_Format(PyExc_TypeError, "%s must be %s like the input; got %s", name, DTYPES[dtype], DTYPES[k]);
        return -1;
    }
    return 0;
}

static int check_len(const buf_t *b, size_t count, const char *name) {
    if ((size_t)b->v.len != count * (size_t)b->v.itemsize) {
        PyErr_Format(PyExc_ValueError, "%s must hold %zu elements; got %zd", name, count,
                     b->v.len / (b->v.itemsize ? b->v.itemsize : 1));
        return -1;
    }
    return 0;
}

/* int64 class indices, `count` of them */
static int get_int64(PyObject *o, buf_t *b, const char *name, size_t count) {
    if (get(o, b, 0, name)) return -1;
    if (!is_int64(&b->v)) {
        PyErr_Format(PyExc_TypeError, "%s must hold int64 class indices", name);
        return -1;
    }
    return check_len(b, count, name);
}

/* `count` float64 values */
static int get_float64(PyObject *o, buf_t *b, int writable, const char *name, size_t count) {
    if (get(o, b, writable, name)) return -1;
    if (float_kind(&b->v, 0) != DT_F64) {
        PyErr_Format(PyExc_TypeError, "%s must hold float64", name);
        return -1;
    }
    return check_len(b, count, name);
}

static int raise_rc(int rc) {
    if (rc == SK_ENOMEM) PyErr_NoMemory();
    else if (rc == SK_ETARGET)
        PyErr_SetString(PyExc_ValueError, "targets holds a class index outside [0, n_classes) that is not ignore_index");
    return rc ? -1 : 0;
}

/* The arguments: `want` required ones, then the optional bfloat16 flag (its
 * truth into bf16, 0 without it) and the optional reduced axis (into axis,
 * -1 without it). */
#define ARGS_BF16(want, fname, bf16)                                                                        \
    if (nargs < (want) || nargs > (want) + 2) {                                                              \
        PyErr_Format(PyExc_TypeError, fname "() takes %d to %d arguments (%zd given)", (want), (want) + 2,   \
                     nargs);                                                                                \
        return NULL;                                                                                        \
    }                                                                                                       \
    int bf16 = nargs > (want) ? PyObject_IsTrue(args[want]) : 0;                                            \
    if (bf16 < 0) return NULL;                                                                              \
    long long axis = nargs > (want) + 1 ? PyLong_AsLongLong(args[(want) + 1]) : -1;                         \
    if (axis == -1 && PyErr_Occurred()) return NULL;

/* softmax(x, out, temperature, log[, bfloat16[, axis]]) */
static PyObject *py_softmax(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    ARGS_BF16(4, "softmax", bf16);
    double T = PyFloat_AsDouble(args[2]);
    int log = PyObject_IsTrue(args[3]);
    if ((T == -1.0 && PyErr_Occurred()) || log < 0) return NULL;
    buf_t x = {0}, out = {0};
    size_t rows, n, inner;
    int rc = -1;
    if (get(args[0], &x, 0, "x") || get(args[1], &out, 1, "out") || check_float(&x, -1, bf16, "x") ||
        rows_of(&x.v, "x", axis, &rows, &n, &inner))
        goto end;
    int dt = float_kind(&x.v, bf16);
    if (check_float(&out, dt, bf16, "out") || check_len(&out, rows * n, "out")) goto end;
    Py_BEGIN_ALLOW_THREADS
    rc = sk_softmax(dt, x.v.buf, out.v.buf, rows, n, inner, T, log);
    Py_END_ALLOW_THREADS
    rc = raise_rc(rc);
end:
    release(&x);
    release(&out);
    if (rc) return NULL;
    Py_RETURN_NONE;
}

/* logsumexp(x, out[, bfloat16[, axis]]): out holds one value per row */
static PyObject *py_logsumexp(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    ARGS_BF16(2, "logsumexp", bf16);
    buf_t x = {0}, out = {0};
    size_t rows, n, inner;
    int rc = -1;
    if (get(args[0], &x, 0, "x") || get(args[1], &out, 1, "out") || check_float(&x, -1, bf16, "x") ||
        rows_of(&x.v, "x", axis, &rows, &n, &inner))
        goto end;
    int dt = float_kind(&x.v, bf16);
    if (check_float(&out, dt, bf16, "out") || check_len(&out, rows, "out")) goto end;
    Py_BEGIN_ALLOW_THREADS
    rc = sk_logsumexp(dt, x.v.buf, out.v.buf, rows, n, inner);
    Py_END_ALLOW_THREADS
    rc = raise_rc(rc);
end:
    release(&x);
    release(&out);
    if (rc) return NULL;
    Py_RETURN_NONE;
}

/* cross_entropy(logits, targets, probs, weight, loss, grad, ignore_index, eps, z, grad_divisor[, bfloat16[, axis]])
 * the classes along axis; targets: int64 per row (in row order) or None; probs: logits' shape and dtype or None
 * (exactly one of the two); weight: float64 per class or None; loss: float64
 * per row; grad: logits' shape and dtype, or None; grad_divisor: what the
 * gradient is divided by, finite and not 0 (a "mean" over negative class
 * weights divides by a negative sum).  Returns the sum of row weights (the
 * number of rows for probabilities). */
static PyObject *py_cross_entropy(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    ARGS_BF16(10, "cross_entropy", bf16);
    long long ignore = PyLong_AsLongLong(args[6]);
    double eps = PyFloat_AsDouble(args[7]), z = PyFloat_AsDouble(args[8]), divisor = PyFloat_AsDouble(args[9]);
    if (PyErr_Occurred()) return NULL;
    if (!isfinite(divisor) || divisor == 0.0) {
        PyErr_Format(PyExc_ValueError, "grad_divisor must be finite and not 0; got %R", args[9]);
        return NULL;
    }
    buf_t x = {0}, t = {0}, q = {0}, w = {0}, loss = {0}, g = {0};
    size_t rows, n, inner;
    int rc = -1;
    if (get(args[0], &x, 0, "logits") || check_float(&x, -1, bf16, "logits") || rows_of(&x.v, "logits", axis, &rows, &n, &inner))
        goto end;
    int dt = float_kind(&x.v, bf16);
    if ((args[1] == Py_None) == (args[2] == Py_None)) {
        PyErr_SetString(PyExc_TypeError, "pass exactly one of targets (class indices) and probs");
        goto end;
    }
    if (args[1] != Py_None) {
        if (get_int64(args[1], &t, "targets", rows)) goto end;
    } else if (get(args[2], &q, 0, "probs") || check_float(&q, dt, bf16, "probs") || check_len(&q, rows * n, "probs")) {
        goto end;
    }
    if (args[3] != Py_None && get_float64(args[3], &w, 0, "weight", n)) goto end;
    if (get_float64(args[4], &loss, 1, "loss", rows)) goto end;
    if (args[5] != Py_None &&
        (get(args[5], &g, 1, "grad") || check_float(&g, dt, bf16, "grad") || check_len(&g, rows * n, "grad")))
        goto end;
    Py_BEGIN_ALLOW_THREADS
    rc = sk_cross_entropy(dt, x.v.buf, g.held ? g.v.buf : NULL, loss.v.buf, rows, n, inner, t.held ? t.v.buf : NULL,
                          q.held ? q.v.buf : NULL, w.held ? w.v.buf : NULL, ignore, eps, z, divisor);
    Py_END_ALLOW_THREADS
    rc = raise_rc(rc);
end:
    release(&x);
    release(&t);
    release(&q);
    release(&w);
    release(&loss);
    release(&g);
    if (rc) return NULL;
    Py_RETURN_NONE;
}

/* vjp(y, cotangent, out, log[, bfloat16[, axis]]): softmax VJP from probabilities y,
 * or the log_softmax VJP from log-probabilities y */
static PyObject *py_vjp(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    ARGS_BF16(4, "vjp", bf16);
    int log = PyObject_IsTrue(args[3]);
    if (log < 0) return NULL;
    buf_t y = {0}, g = {0}, out = {0};
    size_t rows, n, inner;
    int rc = -1;
    if (get(args[0], &y, 0, "y") || get(args[1], &g, 0, "cotangent") || get(args[2], &out, 1, "out") ||
        check_float(&y, -1, bf16, "y") || rows_of(&y.v, "y", axis, &rows, &n, &inner))
        goto end;
    int dt = float_kind(&y.v, bf16);
    if (check_float(&g, dt, bf16, "cotangent") || check_len(&g, rows * n, "cotangent") || check_float(&out, dt, bf16, "out") ||
        check_len(&out, rows * n, "out"))
        goto end;
    Py_BEGIN_ALLOW_THREADS
    rc = sk_vjp(dt, log, y.v.buf, g.v.buf, out.v.buf, rows, n, inner);
    Py_END_ALLOW_THREADS
    rc = raise_rc(rc);
end:
    release(&y);
    release(&g);
    release(&out);
    if (rc) return NULL;
    Py_RETURN_NONE;
}

/* convert(src, dst, bfloat16): float16 (with bfloat16, 2-byte integers
 * holding bfloat16) widened into float32, or float32 rounded into it; the
 * direction follows src's format */
static PyObject *py_convert(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "convert() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    int bf16 = PyObject_IsTrue(args[2]);
    if (bf16 < 0) return NULL;
    int half = bf16 ? DT_BF16 : DT_F16;
    buf_t src = {0}, dst = {0};
    int rc = -1;
    if (get(args[0], &src, 0, "src") || get(args[1], &dst, 1, "dst")) goto end;
    int narrow = float_kind(&src.v, 0) == DT_F32;
    if (!narrow && float_kind(&src.v, bf16) != half) {
        PyErr_Format(PyExc_TypeError, "src must hold float32 or %s%s; got format '%s'", DTYPES[half],
                     bf16 ? " as 2-byte integers" : "", src.v.format ? src.v.format : "B");
        goto end;
    }
    if (narrow ? check_float(&dst, half, bf16, "dst") : check_float(&dst, DT_F32, 0, "dst")) goto end;
    size_t n = (size_t)(src.v.len / src.v.itemsize);
    if (check_len(&dst, n, "dst")) goto end;
    Py_BEGIN_ALLOW_THREADS
    sk_convert(half, narrow, src.v.buf, dst.v.buf, n);
    Py_END_ALLOW_THREADS
    rc = 0;
end:
    release(&src);
    release(&dst);
    if (rc) return NULL;
    Py_RETURN_NONE;
}

/* --- attention ------------------------------------------------------------------- */

/* The buffers of one attention call; released by attn_release. */
typedef struct {
    buf_t q, k, v, mask, sinks;
} attn_bufs;

static void attn_release(attn_bufs *B) {
    release(&B->q);
    release(&B->k);
    release(&B->v);
    release(&B->mask);
    release(&B->sinks);
}

/* A float32 (or, with bf16, bfloat16 bits) buffer of `count` elements, of dtype dt. */
static int attn_float(PyObject *o, buf_t *b, int writable, int dt, int bf16, size_t count, const char *name) {
    if (get(o, b, writable, name) || check_float(b, dt, bf16, name)) return -1;
    return check_len(b, count, name);
}

/* A float32 buffer of `count` elements. */
static int attn_f32(PyObject *o, buf_t *b, int writable, size_t count, const char *name) {
    if (get(o, b, writable, name)) return -1;
    if (float_kind(&b->v, 0) != DT_F32) {
        PyErr_Format(PyExc_TypeError, "%s must hold float32", name);
        return -1;
    }
    return check_len(b, count, name);
}

/* The problem from (q, k, v, mask, sinks, causal, scale, softcap, bfloat16). */
static int attn_problem(PyObject *const *a, attn_bufs *B, sk_attn_problem *P) {
    memset(P, 0, sizeof *P);
    int bf16 = PyObject_IsTrue(a[8]);
    if (bf16 < 0) return -1;
    long causal = PyLong_AsLong(a[5]);
    double scale = PyFloat_AsDouble(a[6]);
    double cap = a[7] == Py_None ? 0.0 : PyFloat_AsDouble(a[7]);
    if (PyErr_Occurred()) return -1;
    if (causal < 0 || causal > 2) {
        PyErr_Format(PyExc_ValueError, "causal must be 0 (none), 1 (top left) or 2 (bottom right); got %ld", causal);
        return -1;
    }
    if (!(isfinite(scale) && scale > 0) || !(isfinite(cap) && cap >= 0)) {
        PyErr_Format(PyExc_ValueError, "scale must be finite and > 0 and softcap None or finite and > 0; got %R and %R",
                     a[6], a[7]);
        return -1;
    }
    if (get(a[0], &B->q, 0, "q") || get(a[1], &B->k, 0, "k") || get(a[2], &B->v, 0, "v") ||
        check_float(&B->q, -1, bf16, "q"))
        return -1;
    int dt = float_kind(&B->q.v, bf16);
    if (dt != DT_F32 && dt != DT_BF16) {
        PyErr_SetString(PyExc_TypeError, "q must hold float32, or bfloat16 bits with bfloat16 set");
        return -1;
    }
    if (check_float(&B->k, dt, bf16, "k") || check_float(&B->v, dt, bf16, "v")) return -1;
    int nd = B->q.v.ndim;
    if (nd < 3 || nd - 3 > SK_ATTN_MAX_DIMS || B->k.v.ndim != nd || B->v.v.ndim != nd) {
        PyErr_Format(PyExc_ValueError, "q, k and v must have the same number of dimensions, 3 to %d", SK_ATTN_MAX_DIMS + 3);
        return -1;
    }
    const Py_ssize_t *qs = B->q.v.shape, *ks = B->k.v.shape, *vs = B->v.v.shape;
    P->nb = nd - 3;
    P->batch = 1;
    for (int d = 0; d < P->nb; d++) {
        if (ks[d] != qs[d] || vs[d] != qs[d]) {
            PyErr_SetString(PyExc_ValueError, "q, k and v must have the same leading (batch) dimensions");
            return -1;
        }
        P->bshape[d] = qs[d];
        P->batch *= (size_t)qs[d];
    }
    P->hq = (size_t)qs[nd - 3];
    P->L = (size_t)qs[nd - 2];
    P->D = (size_t)qs[nd - 1];
    P->hkv = (size_t)ks[nd - 3];
    P->S = (size_t)ks[nd - 2];
    P->Dv = (size_t)vs[nd - 1];
    if (P->hkv == 0 || P->hq % P->hkv || (size_t)ks[nd - 1] != P->D || (size_t)vs[nd - 3] != P->hkv ||
        (size_t)vs[nd - 2] != P->S) {
        PyErr_SetString(PyExc_ValueError,
                        "k must be (..., Hkv, S, D) and v (..., Hkv, S, Dv) with Hkv >= 1 dividing q's Hq");
        return -1;
    }
    P->dtype = dt;
    P->q = B->q.v.buf;
    P->k = B->k.v.buf;
    P->v = B->v.v.buf;
    P->causal = (int)causal;
    P->scale = scale;
    P->softcap = cap;
    if (a[3] != Py_None) {
        if (PyObject_GetBuffer(a[3], &B->mask.v, PyBUF_STRIDED_RO | PyBUF_FORMAT) < 0) return -1;
        B->mask.held = 1;
        const Py_buffer *m = &B->mask.v;
        const char *f = strip_order(m->format);
        if (f[1] == '\0' && *f == '?' && m->itemsize == 1) P->mask_kind = SK_MASK_BOOL;
        else if (f[1] == '\0' && *f == 'f' && m->itemsize == 4) P->mask_kind = SK_MASK_F32;
        else if (f[1] == '\0' && *f == 'd' && m->itemsize == 8) P->mask_kind = SK_MASK_F64;
        else {
            PyErr_Format(PyExc_TypeError, "mask must hold bool, float32 or float64; got format '%s'", m->format);
            return -1;
        }
        int ok = m->ndim == nd && m->strides != NULL;
        for (int d = 0; ok && d < P->nb; d++) ok = m->shape[d] == qs[d];
        ok = ok && (size_t)m->shape[nd - 3] == P->hq && (size_t)m->shape[nd - 2] == P->L &&
             (size_t)m->shape[nd - 1] == P->S;
        if (!ok) {
            PyErr_SetString(PyExc_ValueError, "mask must have the shape (..., Hq, L, S) of the scores (broadcast by strides)");
            return -1;
        }
        P->mask = m->buf;
        for (int d = 0; d < P->nb; d++) P->bstride[d] = m->strides[d];
        P->stride_h = m->strides[nd - 3];
        P->stride_l = m->strides[nd - 2];
        P->stride_s = m->strides[nd - 1];
    }
    if (a[4] != Py_None) {
        if (get_float64(a[4], &B->sinks, 0, "sinks", P->hq)) return -1;
        P->sinks = B->sinks.v.buf;
    }
    return 0;
}

#define ATTN_ARGS "q, k, v, mask, sinks, causal, scale, softcap, bfloat16"

/* attention_forward(q, k, v, mask, sinks, causal, scale, softcap, bfloat16, out, lse) */
static PyObject *py_attention_forward(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) {
        PyErr_Format(PyExc_TypeError, "attention_forward() takes 11 arguments (%zd given)", nargs);
        return NULL;
    }
    attn_bufs B;
    memset(&B, 0, sizeof B);
    buf_t out = {0}, lse = {0};
    sk_attn_problem P;
    int rc = -1;
    if (attn_problem(args, &B, &P)) goto end;
    size_t rows = P.batch * P.hq * P.L;
    int bf16 = P.dtype == DT_BF16;
    if (attn_float(args[9], &out, 1, P.dtype, bf16, rows * P.Dv, "out") || attn_f32(args[10], &lse, 1, rows, "lse"))
        goto end;
    Py_BEGIN_ALLOW_THREADS
    rc = sk_attention_forward(&P, out.v.buf, lse.v.buf);
    Py_END_ALLOW_THREADS
    rc = raise_rc(rc);
end:
    attn_release(&B);
    release(&out);
    release(&lse);
    if (rc) return NULL;
    Py_RETURN_NONE;
}

/* attention_backward(q, k, v, mask, sinks, causal, scale, softcap, bfloat16, out, lse, dout, dlse, dq, dk, dv,
 * dsinks, dbias) */
static PyObject *py_attention_backward(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 18) {
        PyErr_Format(PyExc_TypeError, "attention_backward() takes 18 arguments (%zd given)", nargs);
        return NULL;
    }
    attn_bufs B;
    memset(&B, 0, sizeof B);
    buf_t o = {0}, lse = {0}, dout = {0}, dlse = {0}, dq = {0}, dk = {0}, dv = {0}, dsinks = {0}, dbias = {0};
    sk_attn_problem P;
    int rc = -1;
    if (attn_problem(args, &B, &P)) goto end;
    size_t rows = P.batch * P.hq * P.L, keys = P.batch * P.hkv * P.S;
    int bf16 = P.dtype == DT_BF16;
    if (attn_float(args[9], &o, 0, P.dtype, bf16, rows * P.Dv, "out") || attn_f32(args[10], &lse, 0, rows, "lse") ||
        attn_float(args[11], &dout, 0, P.dtype, bf16, rows * P.Dv, "dout") ||
        (args[12] != Py_None && attn_f32(args[12], &dlse, 0, rows, "dlse")) ||
        attn_float(args[13], &dq, 1, P.dtype, bf16, rows * P.D, "dq") ||
        attn_float(args[14], &dk, 1, P.dtype, bf16, keys * P.D, "dk") ||
        attn_float(args[15], &dv, 1, P.dtype, bf16, keys * P.Dv, "dv"))
        goto end;
    if ((args[16] == Py_None) != (P.sinks == NULL)) {
        PyErr_SetString(PyExc_TypeError, "pass dsinks exactly when sinks is given");
        goto end;
    }
    if (args[16] != Py_None && get_float64(args[16], &dsinks, 1, "dsinks", P.hq)) goto end;
    if (args[17] != Py_None) {
        if (P.mask_kind != SK_MASK_F32 && P.mask_kind != SK_MASK_F64) {
            PyErr_SetString(PyExc_TypeError, "dbias needs a float (additive) mask");
            goto end;
        }
        if (get_float64(args[17], &dbias, 1, "dbias", rows * P.S)) goto end;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = sk_attention_backward(&P, o.v.buf, lse.v.buf, dout.v.buf, dlse.held ? dlse.v.buf : NULL, dq.v.buf, dk.v.buf,
                               dv.v.buf, dsinks.held ? dsinks.v.buf : NULL, dbias.held ? dbias.v.buf : NULL);
    Py_END_ALLOW_THREADS
    rc = raise_rc(rc);
end:
    attn_release(&B);
    release(&o);
    release(&lse);
    release(&dout);
    release(&dlse);
    release(&dq);
    release(&dk);
    release(&dv);
    release(&dsinks);
    release(&dbias);
    if (rc) return NULL;
    Py_RETURN_NONE;
}

/* The most threads a call may use: more cannot help on any machine this
 * runs on, and each is a pooled OS thread. */
#define MAX_THREADS 4096

/* An int in [low, high] from a Python int, or -1 with ValueError (naming
 * `name`, the value and the range) or TypeError set. */
static int int_in(PyObject *arg, const char *name, long long low, long long high, long long *out) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(arg, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow || v < low || v > high) {
        PyErr_Format(PyExc_ValueError, "%s must be an int in [%lld, %lld]; got %R", name, low, high, arg);
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg) {
    (void)self;
    long long v;
    if (int_in(arg, "n", 1, MAX_THREADS, &v)) return NULL;
    sk_set_threads((int)v);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyLong_FromLong(sk_get_threads());
}

static PyObject *py_set_isa(PyObject *self, PyObject *arg) {
    (void)self;
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    if (sk_select_isa(name) != 0) {
        PyErr_Format(PyExc_ValueError, "isa %R is not available on this machine", arg);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *py_isa(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyUnicode_FromString(sk_isa_name());
}

static PyObject *py_block(PyObject *self, PyObject *arg) {
    (void)self;
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred()) return NULL;
    if (size <= 0) {
        PyErr_Format(PyExc_ValueError, "size must be > 0; got %zd", size);
        return NULL;
    }
    return outcache_block((size_t)size);
}

static PyObject *py_set_cache_limit(PyObject *self, PyObject *arg) {
    (void)self;
    long long limit;
    if (int_in(arg, "max_bytes", 0, PY_SSIZE_T_MAX, &limit)) return NULL;
    outcache_set_limit((size_t)limit);
    Py_RETURN_NONE;
}

static PyObject *py_cache_limit(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyLong_FromSize_t(outcache_limit());
}

static PyObject *py_cache_bytes(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyLong_FromSize_t(outcache_bytes());
}

static PyMethodDef methods[] = {
    {"softmax", (PyCFunction)(void (*)(void))py_softmax, METH_FASTCALL, "softmax(x, out, temperature, log[, bfloat16[, axis]])"},
    {"logsumexp", (PyCFunction)(void (*)(void))py_logsumexp, METH_FASTCALL, "logsumexp(x, out[, bfloat16[, axis]])"},
    {"cross_entropy", (PyCFunction)(void (*)(void))py_cross_entropy, METH_FASTCALL,
     "cross_entropy(logits, targets, probs, weight, loss, grad, ignore_index, eps, z, grad_divisor[, bfloat16[, axis]])"},
    {"vjp", (PyCFunction)(void (*)(void))py_vjp, METH_FASTCALL, "vjp(y, cotangent, out, log[, bfloat16[, axis]])"},
    {"attention_forward", (PyCFunction)(void (*)(void))py_attention_forward, METH_FASTCALL,
     "attention_forward(" ATTN_ARGS ", out, lse)"},
    {"attention_backward", (PyCFunction)(void (*)(void))py_attention_backward, METH_FASTCALL,
     "attention_backward(" ATTN_ARGS ", out, lse, dout, dlse, dq, dk, dv, dsinks, dbias)"},
    {"convert", (PyCFunction)(void (*)(void))py_convert, METH_FASTCALL,
     "convert(src, dst, bfloat16): a 16-bit format widened to float32, or float32 rounded to it"},
    {"set_num_threads", py_set_num_threads, METH_O, "set_num_threads(n)"},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads()"},
    {"set_isa", py_set_isa, METH_O, "set_isa(name): 'best', 'avx512', 'avx2' or 'baseline'"},
    {"isa", py_isa, METH_NOARGS, "isa(): the instruction set in use"},
    {"block", py_block, METH_O, "block(size): writable memory for an output, from the output cache when it has some"},
    {"set_cache_limit", py_set_cache_limit, METH_O, "set_cache_limit(bytes): the most the output cache keeps"},
    {"cache_limit", py_cache_limit, METH_NOARGS, "cache_limit(): the most the output cache keeps"},
    {"cache_bytes", py_cache_bytes, METH_NOARGS, "cache_bytes(): bytes the output cache keeps now"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_kernels",
    .m_doc = "Native softmax kernels.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__kernels(void) {
    sk_select_isa("best");
    if (outcache_init() < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m && PyModule_AddIntConstant(m, "MAX_THREADS", MAX_THREADS) < 0) Py_CLEAR(m);
    return m;
}
