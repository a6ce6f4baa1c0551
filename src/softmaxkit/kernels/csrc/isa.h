/* Body of one ISA translation unit: the vector helpers, both families, each
 * with its table (family_f32, family_f64), and the 16-bit conversions
 * (codec_f16, codec_bf16) for the unit's sk_isa.  The includer defines
 * SK_ISA, SK_VW, SK_HAVE_FMA and SK_FMA, after its target pragmas. */
#include "range_kernels.h"
#include "simd.h"
#include "compensated.h"

#define FT float
#define COMP 0
#define FSUF f32
#include "family.h"

#define FT double
#define COMP 1
#define FSUF f64
#include "family.h"

#include "convert.h"
