// XLA FFI handlers that run softmaxkit's native kernels inside jax.jit on CPU.
//
// Built on first use by softmaxkit/backends/jax/native.py against the headers
// jaxlib ships (jax.ffi.include_dir()).  The kernels themselves live in the
// softmaxkit.kernels extension: native.py hands their addresses (api.h) to
// skjax_bind once, so both libraries share one thread pool and one choice of
// instruction set.  Each handler maps an XLA buffer (dense, row-major) to the
// kernels' (outer, n, inner) view along one axis; nothing is copied.
#include <cstdint>
#include <string>
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

SoftmaxFn softmax_kernel = nullptr;
LogsumexpFn logsumexp_kernel = nullptr;
CrossEntropyFn cross_entropy_kernel = nullptr;
NarrowFn narrow_f64 = nullptr;

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

// The kernels' entry points, from the softmaxkit.kernels extension.
extern "C" void skjax_bind(void* softmax, void* logsumexp, void* cross_entropy, void* narrow) {
    softmax_kernel = reinterpret_cast<SoftmaxFn>(softmax);
    logsumexp_kernel = reinterpret_cast<LogsumexpFn>(logsumexp);
    cross_entropy_kernel = reinterpret_cast<CrossEntropyFn>(cross_entropy);
    narrow_f64 = reinterpret_cast<NarrowFn>(narrow);
}
