/* The attention kernels on AVX2 + FMA: four float64 lanes (attention_body.h). */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c")
#endif
#define SK_VW 4
#define SK_HAVE_FMA 1
#define SK_FMA(a, b, c) ((vd)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
/* vmaxpd returns its second operand when either is NaN */
#define SK_MAX(a, b) ((vd)_mm256_max_pd((__m256d)(a), (__m256d)(b)))
#define SK_ATTN_TABLE sk_attn_avx2
#include "attention_body.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
