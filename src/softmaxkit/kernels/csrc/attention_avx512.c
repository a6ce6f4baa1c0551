/* The attention kernels on AVX-512 (F, DQ, BW, VL): eight float64 lanes
 * (attention_body.h). */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,popcnt"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,popcnt")
#endif
#define SK_VW 8
#define SK_HAVE_FMA 1
#define SK_FMA(a, b, c) ((vd)_mm512_fmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(c)))
/* vmaxpd returns its second operand when either is NaN */
#define SK_MAX(a, b) ((vd)_mm512_max_pd((__m512d)(a), (__m512d)(b)))
#define SK_SCALEF(y, k) ((vd)_mm512_scalef_pd((__m512d)(y), (__m512d)(k)))
#define SK_ATTN_TABLE sk_attn_avx512
#include "attention_body.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
