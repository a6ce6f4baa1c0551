/* The attention kernels, portable: two float64 lanes, without fused
 * multiply-add (attention_body.h). */
#define SK_VW 2
#define SK_HAVE_FMA 0
#define SK_FMA(a, b, c) ((a) * (b) + (c))
#define SK_ATTN_TABLE sk_attn_baseline
#include "attention_body.h"
