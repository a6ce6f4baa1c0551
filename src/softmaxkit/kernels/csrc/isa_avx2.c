/* AVX2 + FMA kernels: four float64 lanes; F16C for the float16 conversions. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c")
#endif
#define SK_ISA avx2
#define SK_VW 4
#define SK_HAVE_FMA 1
#define SK_FMA(a, b, c) ((vd)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
/* vmaxpd returns its second operand when either is NaN */
#define SK_MAX(a, b) ((vd)_mm256_max_pd((__m256d)(a), (__m256d)(b)))
#define SK_LOAD_F(p) ((vd)_mm256_cvtps_pd(_mm_loadu_ps(p)))
/* one vector of float64, rounded to float32, to 16 aligned bytes around the
 * cache; the fence orders those stores before the job ends */
#define SK_STREAM_V(p, v) _mm_stream_ps((p), _mm256_cvtpd_ps((__m256d)(v)))
#define SK_FENCE() _mm_sfence()
/* eight float16 values at a time; vcvtps2ph rounds as told, not as MXCSR says */
#define SK_F16_LANES 8
#define SK_F16_WIDEN(dst, src) _mm256_storeu_ps((dst), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src))))
#define SK_F16_NARROW(dst, src) \
    _mm_storeu_si128((__m128i *)(dst), _mm256_cvtps_ph(_mm256_loadu_ps(src), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
#include "isa.h"

const sk_isa sk_isa_avx2 = {"avx2", family_f32, family_f64, codec_f16, codec_bf16};
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
