/* Portable kernels: two float64 lanes (SSE2 on x86-64, NEON on aarch64),
 * without fused multiply-add. */
#define SK_ISA baseline
#define SK_VW 2
#define SK_HAVE_FMA 0
#define SK_FMA(a, b, c) ((a) * (b) + (c))
#include "isa.h"

const sk_isa sk_isa_baseline = {"baseline", family_f32, family_f64, codec_f16, codec_bf16};
