// XLA FFI handlers that run softmaxkit's native kernels inside jax.jit on CPU.
//
// Built on first use by softmaxkit/backends/jax/native.py against the headers
// jaxlib ships (jax.ffi.include_dir()).  The kernels themselves live in the
// softmaxkit.kernels extension: native.py hands their addresses (api.h) to
// skjax_bind once, so both libraries share one thread pool and one choice of
// instruction set.  Each handler maps an XLA buffer (dense, row-major) to the
// kernels' (outer, n, inner) view along one axis; nothing is copied.
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

extern "C" {
#include "api.h"
}

namespace ffi = xla::ffi;

namespace {

using SoftmaxFn = decltype(&sk_softmax);
using LogsumexpFn = decltype(&sk_logsumexp);
using CrossEntropyFn = decltype(&sk_cross_entropy);
using NarrowFn = decltype(&sk_narrow_f64);
using AttentionForwardFn = decltype(&sk_attention_forward);
using AttentionBackwardFn = decltype(&sk_attention_backward);

SoftmaxFn softmax_kernel = nullptr;
LogsumexpFn logsumexp_kernel = nullptr;
CrossEntropyFn cross_entropy_kernel = nullptr;
NarrowFn narrow_f64 = nullptr;
AttentionForwardFn attention_forward_kernel = nullptr;
AttentionBackwardFn attention_backward_kernel = nullptr;

// The kernels' DT_* code of a float buffer, or -1.
int kernel_dtype(ffi::DataType t) {
    switch (t) {
        case ffi::DataType::F16: return DT_F16;
        case ffi::DataType::F32: return DT_F32;
        case ffi::DataType::F64: return DT_F64;
        case ffi::DataType::BF16: return DT_BF16;
        default: return -1;
    }
}

struct Rows {
    size_t outer = 1, n = 1, inner = 1;
};

// The (outer, n, inner) view of `dims` reduced along `axis` (negative counts from the end).
Rows rows_of(ffi::AnyBuffer::Dimensions dims, int64_t axis) {
    Rows r;
    if (axis < 0) axis += static_cast<int64_t>(dims.size());
    for (int64_t i = 0; i < static_cast<int64_t>(dims.size()); ++i) {
        size_t d = static_cast<size_t>(dims[i]);
        if (i < axis) r.outer *= d;
        else if (i == axis) r.n = d;
        else r.inner *= d;
    }
    return r;
}

ffi::Error check(int rc) {
    if (rc == SK_ENOMEM) return ffi::Error(ffi::ErrorCode::kResourceExhausted, "softmaxkit: out of memory");
    if (rc == SK_ETARGET)
        return ffi::Error::InvalidArgument(
            "softmaxkit.jax.cross_entropy: labels holds a class index outside [0, n_classes) that is not ignore_index");
    return ffi::Error::Success();
}

ffi::Error ready(ffi::AnyBuffer x, int* dtype) {
    if (softmax_kernel == nullptr) return ffi::Error::Internal("softmaxkit: the FFI handlers are not bound to the kernels");
    *dtype = kernel_dtype(x.element_type());
    if (*dtype < 0) return ffi::Error::InvalidArgument("softmaxkit: the native path takes float16, bfloat16, float32 or float64");
    return ffi::Error::Success();
}

ffi::Error Softmax(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y, int64_t axis, double temperature, int64_t log) {
    int dt;
    if (ffi::Error e = ready(x, &dt); e.failure()) return e;
    Rows r = rows_of(x.dimensions(), axis);
    return check(softmax_kernel(dt, x.untyped_data(), y->untyped_data(), r.outer * r.inner, r.n, r.inner, temperature,
                                static_cast<int>(log)));
}

ffi::Error Logsumexp(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> out, int64_t axis) {
    int dt;
    if (ffi::Error e = ready(x, &dt); e.failure()) return e;
    Rows r = rows_of(x.dimensions(), axis);
    return check(logsumexp_kernel(dt, x.untyped_data(), out->untyped_data(), r.outer * r.inner, r.n, r.inner));
}

// Per-row losses (float32 or float64 output; the kernel writes float64, and
// sk_narrow_f64 rounds it in IEEE arithmetic, not XLA's flush-to-zero) and,
// when `grad` has the logits' size, the gradient of their sum divided by
// `divisor` (+inf writes the zero gradient of a "mean" over a total weight of
// 0).  `targets`: class indices (int32 or int64) or probabilities of the
// logits' dtype; `weight`: C class weights or empty.  Classes lie along the
// last axis.  Under jax.vmap every operand gains the same leading batch
// dimensions: `divisor` then holds one value per batch element, and each
// element's rows, targets and weights are passed to the kernel in turn.
ffi::Error CrossEntropy(ffi::AnyBuffer x, ffi::AnyBuffer targets, ffi::AnyBuffer weight, ffi::AnyBuffer divisor,
                        ffi::Result<ffi::AnyBuffer> loss, ffi::Result<ffi::AnyBuffer> grad, int64_t ignore_index,
                        double eps, double z) {
    int dt;
    if (ffi::Error e = ready(x, &dt); e.failure()) return e;
    Rows r = rows_of(x.dimensions(), -1);
    size_t batches = divisor.element_count(), rows = r.outer / (batches ? batches : 1);
    size_t n_weights = weight.element_count() / (batches ? batches : 1);
    size_t item = x.size_bytes() / (x.element_count() ? x.element_count() : 1);
    if (batches == 0 || r.outer == 0) return ffi::Error::Success();

    ffi::DataType tt = targets.element_type();
    bool index = tt == ffi::DataType::S64 || tt == ffi::DataType::S32;
    if (!index && tt != x.element_type())
        return ffi::Error::InvalidArgument("softmaxkit: labels must be int32, int64 or of the logits' dtype");
    if (weight.element_count() && weight.element_type() != ffi::DataType::F64 &&
        weight.element_type() != ffi::DataType::F32)
        return ffi::Error::InvalidArgument("softmaxkit: weight must be float32 or float64");
    if (divisor.element_type() != ffi::DataType::F64 && divisor.element_type() != ffi::DataType::F32)
        return ffi::Error::InvalidArgument("softmaxkit: the gradient divisor must be float32 or float64");

    bool f64 = loss->element_type() == ffi::DataType::F64;
    bool want_grad = grad->element_count() == x.element_count();
    std::vector<int64_t> labels(index ? rows : 0);
    std::vector<double> w(n_weights), staged(f64 ? 0 : rows);
    for (size_t b = 0; b < batches; ++b) {
        if (tt == ffi::DataType::S64) {
            const int64_t* t = static_cast<const int64_t*>(targets.untyped_data()) + b * rows;
            labels.assign(t, t + rows);
        } else if (tt == ffi::DataType::S32) {
            const int32_t* t = static_cast<const int32_t*>(targets.untyped_data()) + b * rows;
            labels.assign(t, t + rows);
        }
        for (size_t j = 0; j < n_weights; ++j)
            w[j] = weight.element_type() == ffi::DataType::F64
                       ? static_cast<const double*>(weight.untyped_data())[b * n_weights + j]
                       : static_cast<const float*>(weight.untyped_data())[b * n_weights + j];
        double d = divisor.element_type() == ffi::DataType::F64 ? static_cast<const double*>(divisor.untyped_data())[b]
                                                                 : static_cast<const float*>(divisor.untyped_data())[b];
        size_t offset = b * rows * r.n * item;
        const char* xb = static_cast<const char*>(x.untyped_data()) + offset;
        const void* probs = index ? nullptr : static_cast<const char*>(targets.untyped_data()) + offset;
        void* g = want_grad ? static_cast<char*>(grad->untyped_data()) + offset : nullptr;
        double* out = f64 ? static_cast<double*>(loss->untyped_data()) + b * rows : staged.data();
        int rc = cross_entropy_kernel(dt, xb, g, out, rows, r.n, 1, index ? labels.data() : nullptr, probs,
                                      n_weights ? w.data() : nullptr, ignore_index, eps, z, d);
        if (rc) return check(rc);
        if (!f64) narrow_f64(staged.data(), static_cast<float*>(loss->untyped_data()) + b * rows, rows);
    }
    return ffi::Error::Success();
}

// --- attention ------------------------------------------------------------------
//
// q (..., Hq, L, D), k (..., Hkv, S, D), v (..., Hkv, S, Dv): one dtype,
// float32 or bfloat16, the same leading dimensions.  The mask (has_mask) has
// the rank of q, each dimension 1 (broadcast: stride 0, never expanded) or
// that of the scores (..., Hq, L, S); PRED selects, F32/F64 is added.
// sinks: empty, or (V..., Hq) float32/float64 where V... are leading
// dimensions of q: under jax.vmap (broadcast_all) each operand gains the
// same leading dimensions, and each index of them is then a problem of its
// own with its own sinks (and its own sum in dsinks).
struct Attention {
    sk_attn_problem P;
    size_t outer = 1, item = 0;
    std::vector<int64_t> outer_dims, mask_outer_stride;
    std::vector<double> sinks;  // outer * Hq
    size_t rows() const { return P.batch * P.hq * P.L; }
    size_t keys() const { return P.batch * P.hkv * P.S; }
    // Byte offset of problem o's mask.
    int64_t mask_offset(size_t o) const {
        int64_t off = 0;
        for (size_t d = outer_dims.size(); d-- > 0;) {
            off += static_cast<int64_t>(o % outer_dims[d]) * mask_outer_stride[d];
            o /= outer_dims[d];
        }
        return off;
    }
};

ffi::Error attention_setup(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer mask,
                           ffi::AnyBuffer sinks, int64_t causal, double scale, double softcap, int64_t has_mask,
                           Attention* A) {
    if (attention_forward_kernel == nullptr)
        return ffi::Error::Internal("softmaxkit: the FFI handlers are not bound to the kernels");
    int dt = kernel_dtype(q.element_type());
    if ((dt != DT_F32 && dt != DT_BF16) || k.element_type() != q.element_type() || v.element_type() != q.element_type())
        return ffi::Error::InvalidArgument("softmaxkit: native attention takes float32 or bfloat16 query, key and value of one dtype");
    auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
    size_t rank = qd.size();
    if (rank < 3 || kd.size() != rank || vd.size() != rank)
        return ffi::Error::InvalidArgument("softmaxkit: query, key and value must have one rank, 3 or more");
    size_t lead = rank - 3;
    for (size_t d = 0; d < lead; ++d)
        if (kd[d] != qd[d] || vd[d] != qd[d])
            return ffi::Error::InvalidArgument("softmaxkit: query, key and value must have the same leading dimensions");
    sk_attn_problem& P = A->P;
    std::memset(&P, 0, sizeof P);
    P.dtype = dt;
    P.hq = qd[lead];
    P.L = qd[lead + 1];
    P.D = qd[lead + 2];
    P.hkv = kd[lead];
    P.S = kd[lead + 1];
    P.Dv = vd[lead + 2];
    if (P.hkv == 0 || P.hq % P.hkv || static_cast<size_t>(kd[lead + 2]) != P.D ||
        static_cast<size_t>(vd[lead]) != P.hkv || static_cast<size_t>(vd[lead + 1]) != P.S)
        return ffi::Error::InvalidArgument("softmaxkit: key must be (..., Hkv, S, D) and value (..., Hkv, S, Dv), Hkv dividing Hq");
    size_t n_outer = 0;
    if (sinks.element_count()) {
        auto sd = sinks.dimensions();
        n_outer = sd.size() - 1;
        bool ok = n_outer <= lead && static_cast<size_t>(sd[n_outer]) == P.hq;
        for (size_t d = 0; ok && d < n_outer; ++d) ok = sd[d] == qd[d];
        if (!ok) return ffi::Error::InvalidArgument("softmaxkit: sinks must be (..., Hq) over leading dimensions of query");
        ffi::DataType st = sinks.element_type();
        if (st != ffi::DataType::F32 && st != ffi::DataType::F64)
            return ffi::Error::InvalidArgument("softmaxkit: sinks must be float32 or float64");
        A->sinks.resize(sinks.element_count());
        for (size_t i = 0; i < A->sinks.size(); ++i)
            A->sinks[i] = st == ffi::DataType::F64 ? static_cast<const double*>(sinks.untyped_data())[i]
                                                   : static_cast<const float*>(sinks.untyped_data())[i];
    }
    if (lead - n_outer > SK_ATTN_MAX_DIMS) return ffi::Error::InvalidArgument("softmaxkit: too many batch dimensions");
    A->outer_dims.assign(qd.begin(), qd.begin() + n_outer);
    for (int64_t n : A->outer_dims) A->outer *= static_cast<size_t>(n);
    P.nb = static_cast<int>(lead - n_outer);
    P.batch = 1;
    for (size_t d = n_outer; d < lead; ++d) {
        P.bshape[d - n_outer] = qd[d];
        P.batch *= static_cast<size_t>(qd[d]);
    }
    A->item = dt == DT_BF16 ? 2 : 4;
    if (has_mask) {
        ffi::DataType mt = mask.element_type();
        P.mask_kind = mt == ffi::DataType::PRED ? SK_MASK_BOOL
                      : mt == ffi::DataType::F32 ? SK_MASK_F32
                      : mt == ffi::DataType::F64 ? SK_MASK_F64
                                                 : -1;
        if (P.mask_kind < 0) return ffi::Error::InvalidArgument("softmaxkit: the attention mask must be bool, float32 or float64");
        auto md = mask.dimensions();
        if (md.size() != rank) return ffi::Error::InvalidArgument("softmaxkit: the attention mask must have the rank of query");
        std::vector<int64_t> target(qd.begin(), qd.begin() + lead);
        target.push_back(static_cast<int64_t>(P.hq));
        target.push_back(static_cast<int64_t>(P.L));
        target.push_back(static_cast<int64_t>(P.S));
        std::vector<int64_t> stride(rank);
        int64_t step = mt == ffi::DataType::PRED ? 1 : (mt == ffi::DataType::F32 ? 4 : 8);
        for (size_t d = rank; d-- > 0;) {
            if (md[d] != 1 && md[d] != target[d])
                return ffi::Error::InvalidArgument("softmaxkit: the attention mask must broadcast to the scores (..., Hq, L, S)");
            stride[d] = md[d] == 1 ? 0 : step;
            step *= md[d];
        }
        A->mask_outer_stride.assign(stride.begin(), stride.begin() + n_outer);
        for (size_t d = n_outer; d < lead; ++d) P.bstride[d - n_outer] = stride[d];
        P.stride_h = stride[lead];
        P.stride_l = stride[lead + 1];
        P.stride_s = stride[lead + 2];
    }
    P.causal = static_cast<int>(causal);
    P.scale = scale;
    P.softcap = softcap;
    return ffi::Error::Success();
}

// Problem o's q, k, v (and mask, sinks) in A->P.
void attention_select(Attention* A, size_t o, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer mask) {
    sk_attn_problem& P = A->P;
    P.q = static_cast<const char*>(q.untyped_data()) + o * A->rows() * P.D * A->item;
    P.k = static_cast<const char*>(k.untyped_data()) + o * A->keys() * P.D * A->item;
    P.v = static_cast<const char*>(v.untyped_data()) + o * A->keys() * P.Dv * A->item;
    if (P.mask_kind != SK_MASK_NONE) P.mask = static_cast<const char*>(mask.untyped_data()) + A->mask_offset(o);
    P.sinks = A->sinks.empty() ? nullptr : A->sinks.data() + o * P.hq;
}

ffi::Error AttentionForward(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer mask,
                            ffi::AnyBuffer sinks, ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse,
                            int64_t causal, double scale, double softcap, int64_t has_mask) {
    Attention A;
    if (ffi::Error e = attention_setup(q, k, v, mask, sinks, causal, scale, softcap, has_mask, &A); e.failure()) return e;
    for (size_t o = 0; o < A.outer; ++o) {
        attention_select(&A, o, q, k, v, mask);
        char* ob = static_cast<char*>(out->untyped_data()) + o * A.rows() * A.P.Dv * A.item;
        float* lb = static_cast<float*>(lse->untyped_data()) + o * A.rows();
        if (int rc = attention_forward_kernel(&A.P, ob, lb)) return check(rc);
    }
    return ffi::Error::Success();
}

// dq, dk, dv in the inputs' dtype; dsinks of the sinks' shape and dtype (empty
// without sinks); dbias, with want_bias, of the scores' shape (..., Hq, L, S)
// in the float mask's dtype (the kernel writes float64, rounded here in IEEE
// arithmetic by sk_narrow_f64), else empty.
ffi::Error AttentionBackward(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer mask,
                             ffi::AnyBuffer sinks, ffi::AnyBuffer out, ffi::AnyBuffer lse, ffi::AnyBuffer dout,
                             ffi::AnyBuffer dlse, ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                             ffi::Result<ffi::AnyBuffer> dv, ffi::Result<ffi::AnyBuffer> dsinks,
                             ffi::Result<ffi::AnyBuffer> dbias, int64_t causal, double scale, double softcap,
                             int64_t has_mask, int64_t want_bias) {
    Attention A;
    if (ffi::Error e = attention_setup(q, k, v, mask, sinks, causal, scale, softcap, has_mask, &A); e.failure()) return e;
    if (lse.element_type() != ffi::DataType::F32 || dlse.element_type() != ffi::DataType::F32)
        return ffi::Error::InvalidArgument("softmaxkit: the attention log-sum-exp and its cotangent must be float32");
    if (want_bias && A.P.mask_kind != SK_MASK_F32 && A.P.mask_kind != SK_MASK_F64)
        return ffi::Error::InvalidArgument("softmaxkit: the bias gradient needs a float mask");
    const sk_attn_problem& P = A.P;
    size_t rows = A.rows(), keys = A.keys(), scores = rows * P.S;
    std::vector<double> ds(A.sinks.empty() ? 0 : P.hq), db(want_bias ? scores : 0);
    bool sinks64 = dsinks->element_type() == ffi::DataType::F64, bias64 = dbias->element_type() == ffi::DataType::F64;
    for (size_t o = 0; o < A.outer; ++o) {
        attention_select(&A, o, q, k, v, mask);
        size_t item = A.item;
        int rc = attention_backward_kernel(
            &P, static_cast<const char*>(out.untyped_data()) + o * rows * P.Dv * item,
            static_cast<const float*>(lse.untyped_data()) + o * rows,
            static_cast<const char*>(dout.untyped_data()) + o * rows * P.Dv * item,
            static_cast<const float*>(dlse.untyped_data()) + o * rows,
            static_cast<char*>(dq->untyped_data()) + o * rows * P.D * item,
            static_cast<char*>(dk->untyped_data()) + o * keys * P.D * item,
            static_cast<char*>(dv->untyped_data()) + o * keys * P.Dv * item, ds.empty() ? nullptr : ds.data(),
            db.empty() ? nullptr : db.data());
        if (rc) return check(rc);
        if (!ds.empty()) {
            if (sinks64) std::memcpy(static_cast<double*>(dsinks->untyped_data()) + o * P.hq, ds.data(), P.hq * sizeof(double));
            else narrow_f64(ds.data(), static_cast<float*>(dsinks->untyped_data()) + o * P.hq, P.hq);
        }
        if (!db.empty()) {
            if (bias64) std::memcpy(static_cast<double*>(dbias->untyped_data()) + o * scores, db.data(), scores * sizeof(double));
            else narrow_f64(db.data(), static_cast<float*>(dbias->untyped_data()) + o * scores, scores);
        }
    }
    return ffi::Error::Success();
}

// The buffers attention_setup reads, first in both attention handlers: q, k, v, mask, sinks.
auto attention_inputs() {
    return ffi::Ffi::Bind()
        .Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>();
}

// The attributes attention_setup reads, after a handler's buffers.
template <typename Binding>
auto attention_attrs(Binding binding) {
    return std::move(binding)
        .template Attr<int64_t>("causal")
        .template Attr<double>("scale")
        .template Attr<double>("softcap")
        .template Attr<int64_t>("has_mask");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(skjax_softmax, Softmax,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("axis")
                                  .Attr<double>("temperature")
                                  .Attr<int64_t>("log"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(skjax_logsumexp, Logsumexp,
                              ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>().Attr<int64_t>("axis"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(skjax_cross_entropy, CrossEntropy,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("ignore_index")
                                  .Attr<double>("eps")
                                  .Attr<double>("z"));

// (q, k, v, mask, sinks) -> (out, lse)
XLA_FFI_DEFINE_HANDLER_SYMBOL(skjax_attention_forward, AttentionForward,
                              attention_attrs(attention_inputs().Ret<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()));

// (q, k, v, mask, sinks, out, lse, dout, dlse) -> (dq, dk, dv, dsinks, dbias)
XLA_FFI_DEFINE_HANDLER_SYMBOL(skjax_attention_backward, AttentionBackward,
                              attention_attrs(attention_inputs()
                                                  .Arg<ffi::AnyBuffer>()
                                                  .Arg<ffi::AnyBuffer>()
                                                  .Arg<ffi::AnyBuffer>()
                                                  .Arg<ffi::AnyBuffer>()
                                                  .Ret<ffi::AnyBuffer>()
                                                  .Ret<ffi::AnyBuffer>()
                                                  .Ret<ffi::AnyBuffer>()
                                                  .Ret<ffi::AnyBuffer>()
                                                  .Ret<ffi::AnyBuffer>())
                                  .Attr<int64_t>("want_bias"));

// The kernels' entry points, from the softmaxkit.kernels extension.
extern "C" void skjax_bind(void* softmax, void* logsumexp, void* cross_entropy, void* attention_forward,
                           void* attention_backward, void* narrow) {
    softmax_kernel = reinterpret_cast<SoftmaxFn>(softmax);
    logsumexp_kernel = reinterpret_cast<LogsumexpFn>(logsumexp);
    cross_entropy_kernel = reinterpret_cast<CrossEntropyFn>(cross_entropy);
    attention_forward_kernel = reinterpret_cast<AttentionForwardFn>(attention_forward);
    attention_backward_kernel = reinterpret_cast<AttentionBackwardFn>(attention_backward);
    narrow_f64 = reinterpret_cast<NarrowFn>(narrow);
}
