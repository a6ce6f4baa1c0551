/* float16 codecs (see half.h). */
#include "half.h"

#include <math.h>
#include <string.h>

float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
    if (e == 0x1f) {
        bits = sign | 0x7f800000u | (m << 13);
    } else if (e == 0) {
        float f = (float)m * 0x1p-24f;
        return sign ? -f : f;
    } else {
        bits = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* rint rounds in the default rounding mode, which Python never changes. */
uint16_t double_to_half(double v) {
    uint16_t sign = signbit(v) ? 0x8000 : 0;
    double a = fabs(v);
    if (a != a) return sign | 0x7e00;
    if (a >= 65520.0) return sign | 0x7c00;
    if (a < 0x1p-14) return sign | (uint16_t)rint(a * 0x1p24);
    int ex;
    double f = frexp(a, &ex);
    double m = rint(f * 2048.0);
    int e = ex + 14;
    if (m == 2048.0) {
        m = 1024.0;
        e += 1;
    }
    return sign | (uint16_t)((e << 10) + ((int)m - 1024));
}

void halves_to_floats(const void *src, float *dst, size_t n) {
    const uint16_t *s = src;
    for (size_t i = 0; i < n; i++) dst[i] = half_to_float(s[i]);
}

void floats_to_halves(const float *src, void *dst, size_t n) {
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++) d[i] = double_to_half(src[i]);
}
