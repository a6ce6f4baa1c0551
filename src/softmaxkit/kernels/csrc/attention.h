/* The attention kernels' shared description of one call (attention.c) and
 * the per-instruction-set task functions (attention_body.h, compiled once
 * per instruction set by attention_avx512.c, attention_avx2.c and
 * attention_baseline.c).
 *
 * Work is cut into items of fixed size, never derived from the thread
 * count: the forward and the dq pass take (batch, query head, SK_ATTN_TQ
 * query rows), the dk/dv pass (batch, key head, SK_ATTN_TK keys).  Threads
 * claim items from an atomic counter; each item writes only its own rows
 * of the outputs, so results are bitwise the same for every thread count.
 * Keys go in blocks of SK_ATTN_BK from key 0 (numerics.attention.BLOCK),
 * and the dk/dv pass reads query rows in blocks of SK_ATTN_BQ. */
#ifndef SK_ATTENTION_H
#define SK_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "api.h"

#define SK_ATTN_TQ 64
#define SK_ATTN_BK 128
#define SK_ATTN_TK 64
#define SK_ATTN_BQ 64
/* Key heads (batch x Hkv) from which the backward runs one fused pass per
 * key head (its dK and dV, S x (D + Dv) float64, in the thread's scratch). */
#define SK_ATTN_FUSED_HEADS 16

typedef struct {
    const sk_attn_problem *P;
    size_t group;              /* query heads per key head */
    size_t items;              /* work items of the pass */
    size_t next;               /* atomic: the first item not yet claimed */
    int err;                   /* atomic: SK_ENOMEM */
    /* forward */
    void *out;
    float *lse_out;
    /* backward */
    const void *o, *dout;
    const float *lse, *dlse;
    void *dq, *dk, *dv;
    double *g;                 /* (batch, Hq, L): dlse - dO . O on live rows, else 0 (dq pass) */
    double *dsink_rows;        /* (batch, Hq, L): each row's sink gradient (dq pass), or NULL */
    double *dbias;             /* (batch, Hq, L, S) or NULL */
    int fused;                 /* the dq pass also makes dk and dv, one key head per item */
} sk_attn_run;

typedef struct {
    void (*forward)(void *run, int tid);
    void (*backward_q)(void *run, int tid);
    void (*backward_kv)(void *run, int tid);
} sk_attn_isa;

extern const sk_attn_isa sk_attn_baseline;
#if defined(__x86_64__) || defined(_M_X64)
extern const sk_attn_isa sk_attn_avx2;
extern const sk_attn_isa sk_attn_avx512;
#endif

#endif
