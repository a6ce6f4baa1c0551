/* float16 <-> float32 conversion: float16 rows go through the float32 family
 * of range kernels, converted chunk by chunk (exactly) on the way in and
 * rounded to float16 on the way out. */
#ifndef SK_HALF_H
#define SK_HALF_H

#include <stddef.h>
#include <stdint.h>

float half_to_float(uint16_t h);
/* rounded to the nearest float16, ties to even */
uint16_t double_to_half(double v);
void halves_to_floats(const void *src, float *dst, size_t n);
void floats_to_halves(const float *src, void *dst, size_t n);

#endif
