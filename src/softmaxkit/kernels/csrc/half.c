/* Portable conversions of the 16-bit formats (see half.h). */
#include "half.h"

#include <math.h>
#include <string.h>

#include "api.h"

static float from_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static uint32_t bits_of(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f) return from_bits(sign | 0x7f800000u | (m ? 0x400000u : 0) | (m << 13));
    if (e == 0) {
        float f = (float)m * 0x1p-24f;
        return sign ? -f : f;
    }
    return from_bits(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t float_to_half(float f) {
    uint32_t u = bits_of(f), a = u & 0x7fffffffu;
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    if (a > 0x7f800000u) return sign | 0x7e00 | (uint16_t)((a >> 13) & 0x3ff);
    /* 65520 = 65504 + half its spacing: from there on, inf */
    if (a >= 0x477ff000u) return sign | 0x7c00;
    if (a >= 0x38800000u) {
        /* rebias the exponent and round the 13 bits that go: a carry out of
           the fraction correctly moves up a binade */
        uint32_t r = a - (112u << 23);
        return sign | (uint16_t)((r + 0xfffu + ((r >> 13) & 1)) >> 13);
    }
    /* below 2^-14: adding 0.5 (spacing 2^-24 in float) rounds |f| to a
       multiple of the subnormal spacing, in the default rounding mode */
    return sign | (uint16_t)(bits_of(from_bits(a) + 0.5f) - 0x3f000000u);
}

float bfloat16_to_float(uint16_t h) { return from_bits((uint32_t)h << 16); }

uint16_t float_to_bfloat16(float f) {
    uint32_t u = bits_of(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

void halves_to_floats(const void *src, float *dst, size_t n) {
    const uint16_t *s = src;
    for (size_t i = 0; i < n; i++) dst[i] = half_to_float(s[i]);
}

void floats_to_halves(const float *src, void *dst, size_t n) {
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++) d[i] = float_to_half(src[i]);
}

float widen16(int dtype, uint16_t h) { return dtype == DT_BF16 ? bfloat16_to_float(h) : half_to_float(h); }

/* v rounded to the binary format with `mant` fraction bits and exponent
 * bias `bias` (IEEE layout).  rint rounds in the default rounding mode,
 * which Python never changes. */
static uint16_t round_double(double v, int mant, int bias) {
    uint16_t sign = signbit(v) ? 0x8000 : 0, inf = (uint16_t)(((2 * bias + 1) << mant));
    double a = fabs(v);
    if (a != a) return sign | inf | (uint16_t)(1 << (mant - 1));
    /* the largest finite value plus half its spacing: from there on, inf */
    if (a >= ldexp(2.0 - ldexp(1.0, -mant - 1), bias)) return sign | inf;
    if (a < ldexp(1.0, 1 - bias)) return sign | (uint16_t)rint(ldexp(a, bias - 1 + mant));
    int ex;
    double m = rint(ldexp(frexp(a, &ex), mant + 1));
    int e = ex - 1 + bias;
    if (m == ldexp(1.0, mant + 1)) {
        m = ldexp(1.0, mant);
        e += 1;
    }
    return sign | (uint16_t)((e << mant) + ((int)m - (1 << mant)));
}

uint16_t round16(int dtype, double v) { return dtype == DT_BF16 ? round_double(v, 7, 127) : round_double(v, 10, 15); }
