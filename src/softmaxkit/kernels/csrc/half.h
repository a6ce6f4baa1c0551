/* The 16-bit formats, float16 and bfloat16: their rows go through the
 * float32 family of range kernels, widened chunk by chunk (exactly) on the
 * way in and rounded from float32 on the way out.  These are the portable
 * scalar conversions; each instruction set has its vector loops (sk_codec,
 * convert.h), which give bitwise the same results.
 *
 * Widening is exact; a float16 NaN becomes a quiet NaN with its sign and
 * payload, a bfloat16 one keeps its bits.  Narrowing rounds to nearest, ties
 * to even (overflow gives inf), and a NaN becomes a quiet NaN with its sign
 * and the high bits of its payload: the behaviour of the x86 conversion
 * instructions.  Widening and narrowing again gives every bit pattern back,
 * with the quiet bit set on a NaN. */
#ifndef SK_HALF_H
#define SK_HALF_H

#include <stddef.h>
#include <stdint.h>

float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bfloat16_to_float(uint16_t h);
uint16_t float_to_bfloat16(float f);

void halves_to_floats(const void *src, float *dst, size_t n);
void floats_to_halves(const float *src, void *dst, size_t n);

/* A value of a 16-bit dtype (DT_F16 or DT_BF16) as float, and a double
 * rounded once to it (ties to even; a NaN gives the quiet NaN of its sign). */
float widen16(int dtype, uint16_t h);
uint16_t round16(int dtype, double v);

#endif
