/* The 16-bit conversions of one instruction set: the tables codec_f16 and
 * codec_bf16 (sk_codec) for the unit's sk_isa.  They give bitwise the
 * results of the portable ones in half.c (see there for NaN), which convert
 * the elements after the last whole vector.
 *
 * float16: the includer may define SK_F16_LANES and the conversions of that
 * many elements, SK_F16_WIDEN(dst, src) and SK_F16_NARROW(dst, src) (F16C,
 * AVX-512F); without them the portable loops serve.  bfloat16 is integer
 * arithmetic on the float32 bits (widening a shift, narrowing rounds to
 * nearest even with a carry), written as plain loops that the compiler
 * vectorises for the unit's target. */
#include <string.h>

#include "half.h"
#include "range_kernels.h"

#define CVT_CAT(a, b) a##_##b
#define CVT_FN(name) CVT_CAT(name, SK_ISA)

static void CVT_FN(widen_f16)(const void *src, float *dst, size_t n) {
    const uint16_t *s = src;
    size_t i = 0;
#ifdef SK_F16_LANES
    for (; i + SK_F16_LANES <= n; i += SK_F16_LANES) SK_F16_WIDEN(dst + i, s + i);
#endif
    halves_to_floats(s + i, dst + i, n - i);
}

static void CVT_FN(narrow_f16)(const float *src, void *dst, size_t n) {
    uint16_t *d = dst;
    size_t i = 0;
#ifdef SK_F16_LANES
    for (; i + SK_F16_LANES <= n; i += SK_F16_LANES) SK_F16_NARROW(d + i, src + i);
#endif
    floats_to_halves(src + i, d + i, n - i);
}

/* bfloat16_to_float and float_to_bfloat16 of half.c, inlined so that the
 * loops vectorise */
static void CVT_FN(widen_bf16)(const void *src, float *dst, size_t n) {
    const uint16_t *s = src;
    for (size_t i = 0; i < n; i++) {
        uint32_t b = (uint32_t)s[i] << 16;
        memcpy(dst + i, &b, sizeof b);
    }
}

static void CVT_FN(narrow_bf16)(const float *src, void *dst, size_t n) {
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, src + i, sizeof u);
        uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1)) >> 16, quiet = (u >> 16) | 0x40;
        d[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
    }
}

static const sk_codec codec_f16 = {CVT_FN(widen_f16), CVT_FN(narrow_f16)};
static const sk_codec codec_bf16 = {CVT_FN(widen_bf16), CVT_FN(narrow_bf16)};

#undef CVT_CAT
#undef CVT_FN
