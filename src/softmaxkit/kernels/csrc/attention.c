/* The attention entry points (api.h): the kernels of the instruction set in
 * use (attention_body.h), run on the pool's threads (sk_run_tasks). */
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "pool.h"

static const sk_attn_isa *pick(void) {
#if defined(__x86_64__) || defined(_M_X64)
    const char *name = sk_isa_name();
    if (!strcmp(name, "avx512")) return &sk_attn_avx512;
    if (!strcmp(name, "avx2")) return &sk_attn_avx2;
#endif
    return &sk_attn_baseline;
}

static int run(sk_attn_run *R, void (*task)(void *, int), size_t items) {
    R->items = items;
    R->next = 0;
    if (!items) return 0;
    int threads = sk_get_threads();
    if ((size_t)threads > items) threads = (int)items;
    sk_run_tasks(task, R, threads);
    return R->err;
}

int sk_attention_forward(const sk_attn_problem *P, void *out, float *lse) {
    sk_attn_run R;
    memset(&R, 0, sizeof R);
    R.P = P;
    R.group = P->hq / P->hkv;
    R.out = out;
    R.lse_out = lse;
    return run(&R, pick()->forward, P->batch * P->hq * ((P->L + SK_ATTN_TQ - 1) / SK_ATTN_TQ));
}

int sk_attention_backward(const sk_attn_problem *P, const void *out, const float *lse, const void *dout,
                          const float *dlse, void *dq, void *dk, void *dv, double *dsinks, double *dbias) {
    sk_attn_run R;
    memset(&R, 0, sizeof R);
    R.P = P;
    R.group = P->hq / P->hkv;
    R.o = out;
    R.lse = lse;
    R.dout = dout;
    R.dlse = dlse;
    R.dq = dq;
    R.dk = dk;
    R.dv = dv;
    R.dbias = dbias;
    size_t rows = P->batch * P->hq * P->L;
    R.g = malloc((rows ? rows : 1) * sizeof(double));
    if (P->sinks) R.dsink_rows = malloc((rows ? rows : 1) * sizeof(double));
    int rc = SK_ENOMEM;
    if (R.g && (!P->sinks || R.dsink_rows)) {
        const sk_attn_isa *isa = pick();
        /* Enough key heads for the threads: one pass per key head (five
         * products per score); else a dq pass and a dk/dv pass (seven).
         * Both add every term in the same order; the choice depends on the
         * shape only, never on the thread count. */
        R.fused = P->batch * P->hkv >= SK_ATTN_FUSED_HEADS;
        if (R.fused) {
            rc = run(&R, isa->backward_q, P->batch * P->hkv);
        } else {
            rc = run(&R, isa->backward_q, P->batch * P->hq * ((P->L + SK_ATTN_TQ - 1) / SK_ATTN_TQ));
            if (!rc) rc = run(&R, isa->backward_kv, P->batch * P->hkv * ((P->S + SK_ATTN_TK - 1) / SK_ATTN_TK));
        }
    }
    if (!rc && P->sinks) {
        /* each head's sum over the batch and the rows, in that order */
        for (size_t h = 0; h < P->hq; h++) {
            double sum = 0.0;
            for (size_t b = 0; b < P->batch; b++)
                for (size_t i = 0; i < P->L; i++) sum += R.dsink_rows[(b * P->hq + h) * P->L + i];
            dsinks[h] = sum;
        }
    }
    free(R.g);
    free(R.dsink_rows);
    return rc;
}
