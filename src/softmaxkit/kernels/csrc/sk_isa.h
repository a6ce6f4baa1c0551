/* Body of one ISA translation unit: the vector helpers and both families,
 * and the table the driver dispatches to.  The includer defines SK_ISA,
 * SK_VW, SK_HAVE_FMA and SK_FMA, after its target pragmas. */
#include "sk_kernels.h"
#include "sk_simd.h"

#define FT float
#define COMP 0
#define FSUF f32
#include "sk_family.h"
static const sk_family fam_f32 = FAMILY_TABLE;
#undef FT
#undef COMP
#undef FSUF
#undef LD
#undef ST
#undef ACC
#undef WRITE_REST
#undef LINE
#undef STREAM_AT
#undef STREAM_END
#undef CE_HARD_GRAD
#undef FAMILY_TABLE

#define FT double
#define COMP 1
#define FSUF f64
#include "sk_family.h"
static const sk_family fam_f64 = FAMILY_TABLE;
