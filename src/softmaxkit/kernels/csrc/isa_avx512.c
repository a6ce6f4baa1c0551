/* AVX-512 kernels (F, DQ, BW, VL): eight float64 lanes. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,popcnt"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,popcnt")
#endif
#define SK_ISA avx512
#define SK_VW 8
#define SK_HAVE_FMA 1
#define SK_FMA(a, b, c) ((vd)_mm512_fmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(c)))
/* vmaxpd returns its second operand when either is NaN */
#define SK_MAX(a, b) ((vd)_mm512_max_pd((__m512d)(a), (__m512d)(b)))
#define SK_LOAD_F(p) ((vd)_mm512_cvtps_pd(_mm256_loadu_ps(p)))
#define SK_SCALEF(y, k) ((vd)_mm512_scalef_pd((__m512d)(y), (__m512d)(k)))
/* lane l of the 16-entry table (lo, hi) at the low four bits of lane l of k */
#define SK_PERM16(k, lo, hi) ((vd)_mm512_permutex2var_pd((__m512d)(lo), (__m512i)(k), (__m512d)(hi)))
/* lanes equal to 0 as a bit mask, and s + v in the other lanes */
#define SK_TIE_MASK(z) ((unsigned)_mm512_cmp_pd_mask((__m512d)(z), _mm512_setzero_pd(), _CMP_EQ_OQ))
#define SK_ADD_UNLESS(s, m, v) \
    ((vd)_mm512_mask_add_pd((__m512d)(s), (__mmask8) ~(m), (__m512d)(s), (__m512d)(v)))
/* one vector of float64, rounded to float32, to 32 aligned bytes around the
 * cache; the fence orders those stores before the job ends */
#define SK_STREAM_V(p, v) _mm256_stream_ps((p), _mm512_cvtpd_ps((__m512d)(v)))
#define SK_FENCE() _mm_sfence()
/* sixteen float16 values at a time; vcvtps2ph rounds as told, not as MXCSR says */
#define SK_F16_LANES 16
#define SK_F16_WIDEN(dst, src) \
    _mm512_storeu_ps((dst), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src))))
#define SK_F16_NARROW(dst, src)                                                                        \
    _mm256_storeu_si256((__m256i *)(dst),                                                              \
                        _mm512_cvtps_ph(_mm512_loadu_ps(src), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
#include "isa.h"

const sk_isa sk_isa_avx512 = {"avx512", family_f32, family_f64, codec_f16, codec_bf16};
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
