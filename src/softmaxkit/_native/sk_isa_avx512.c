/* AVX-512 kernels (F, DQ, BW, VL): eight float64 lanes. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#endif
#define SK_ISA avx512
#define SK_VW 8
#define SK_HAVE_FMA 1
#define SK_FMA(a, b, c) ((vd)_mm512_fmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(c)))
/* vmaxpd returns its second operand when either is NaN */
#define SK_MAX(a, b) ((vd)_mm512_max_pd((__m512d)(a), (__m512d)(b)))
#define SK_LOAD_F(p) ((vd)_mm512_cvtps_pd(_mm256_loadu_ps(p)))
#define SK_SCALEF(y, k) ((vd)_mm512_scalef_pd((__m512d)(y), (__m512d)(k)))
#include "sk_isa.h"

const sk_isa sk_isa_avx512 = {"avx512", fam_f32, fam_f64};
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
