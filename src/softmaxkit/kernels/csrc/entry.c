/* The entry points (api.h): the instruction set and thread count in use,
 * and one job per call. */
#include <stdlib.h>
#include <string.h>

#include "job.h"

static const sk_isa *isa = &sk_isa_baseline;
static int num_threads = 1;

int sk_select_isa(const char *name) {
    if (!strcmp(name, "baseline")) {
        isa = &sk_isa_baseline;
        return 0;
    }
#ifdef SK_X86
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    if (!strcmp(name, "avx2") && avx2) {
        isa = &sk_isa_avx2;
        return 0;
    }
    if (!strcmp(name, "avx512") && avx512) {
        isa = &sk_isa_avx512;
        return 0;
    }
    if (!strcmp(name, "best")) {
        isa = avx512 ? &sk_isa_avx512 : avx2 ? &sk_isa_avx2 : &sk_isa_baseline;
        return 0;
    }
#else
    if (!strcmp(name, "best")) {
        isa = &sk_isa_baseline;
        return 0;
    }
#endif
    return -1;
}

const char *sk_isa_name(void) { return isa->name; }
void sk_set_threads(int n) { num_threads = n < 1 ? 1 : n; }
int sk_get_threads(void) { return num_threads; }

/* The most bytes of one tile (inner > 1): an input's and the output's tile
 * stay in a second-level cache of a few MiB. */
#define SK_TILE_BYTES ((size_t)1 << 20)

/* Rows gathered at once: four cache lines of 64 bytes of each element (one
 * line measured slower: the next tile's line is often evicted by then; four
 * 0.75x the time of two, as each line fetched from afar brings its
 * neighbours), fewer for rows too wide for SK_TILE_BYTES. */
static size_t tile_rows(const job_t *J) {
    size_t t = 256 / J->item_size, fit = SK_TILE_BYTES / (J->n * J->item_size + 1);
    if (t > fit) t = fit;
    return t ? t : 1;
}

/* Completes the job's description and runs it. */
static int start(job_t *J) {
    J->fam = J->dtype == DT_F64 ? &isa->f64 : &isa->f32;
    J->codec = J->dtype == DT_F16 ? &isa->f16 : J->dtype == DT_BF16 ? &isa->bf16 : NULL;
    J->item_size = J->dtype == DT_F64 ? 8 : J->dtype == DT_F32 ? 4 : 2;
    J->blocks = (J->n + SK_BLOCK - 1) / SK_BLOCK;
    J->tile = tile_rows(J);
    /* only the float32 family's writers stream (see `write` in family.h);
       rows apart are written to a tile, which stays in the cache */
    J->stream = J->dtype == DT_F32 && J->out && J->inner == 1 && (J->op == OP_SOFTMAX || J->op == OP_CE) &&
                J->rows * J->n * J->item_size >= SK_STREAM_MIN;
    /* log_softmax only: the others write from a float64 buffer of
       exponentials, and deferring them would need a second one */
    J->defer = J->stream && J->op == OP_SOFTMAX && J->log;
    return run_job(J, num_threads);
}

int sk_softmax(int dtype, const void *x, void *out, size_t rows, size_t n, size_t inner, double temperature, int log) {
    job_t J = {.op = OP_SOFTMAX, .dtype = dtype, .log = log, .x = x, .out = out, .rows = n ? rows : 0, .n = n,
               .inner = inner, .temperature = temperature};
    return start(&J);
}

int sk_logsumexp(int dtype, const void *x, void *out, size_t rows, size_t n, size_t inner) {
    job_t J = {.op = OP_LSE, .dtype = dtype, .x = x, .out = out, .rows = rows, .n = n, .inner = inner,
               .temperature = 1.0};
    return start(&J);
}

/* The caller's targets may change while the kernel runs (another thread,
 * with the GIL released): each index is read once, into *copy, and the copy
 * is what is checked and what the rows use. */
static int copy_targets(const int64_t *targets, size_t rows, size_t n, int64_t ignore_index, int64_t **copy) {
    if (rows && !(*copy = malloc(rows * sizeof **copy))) return SK_ENOMEM;
    for (size_t r = 0; r < rows; r++) {
        int64_t t = __atomic_load_n(&targets[r], __ATOMIC_RELAXED);
        (*copy)[r] = t;
        if (t == ignore_index) continue;
        if (t < 0 || (uint64_t)t >= n) {
            free(*copy);
            *copy = NULL;
            return SK_ETARGET;
        }
    }
    return 0;
}

int sk_cross_entropy(int dtype, const void *x, void *grad, double *loss, size_t rows, size_t n, size_t inner,
                     const int64_t *targets, const void *probs, const double *class_weight, int64_t ignore_index,
                     double eps, double z_loss, double grad_divisor) {
    int64_t *own = NULL;
    if (targets) {
        int rc = copy_targets(targets, rows, n, ignore_index, &own);
        if (rc) return rc;
    }
    if (n == 0) {
        free(own);
        return rows ? SK_ETARGET : 0;
    }
    job_t J = {.op = OP_CE, .dtype = dtype, .x = x, .probs = probs, .out = grad, .loss = loss, .targets = own,
               .class_weight = class_weight, .ignore_index = ignore_index, .eps = eps, .z_loss = z_loss,
               .grad_divisor = grad_divisor, .rows = rows, .n = n, .inner = inner, .temperature = 1.0};
    int rc = start(&J);
    free(own);
    return rc;
}

void sk_convert(int dtype, int narrow, const void *src, void *dst, size_t n) {
    const sk_codec *c = dtype == DT_BF16 ? &isa->bf16 : &isa->f16;
    if (narrow) c->narrow(src, dst, n);
    else c->widen(src, dst, n);
}

int sk_vjp(int dtype, int log, const void *y, const void *cotangent, void *out, size_t rows, size_t n,
           size_t inner) {
    job_t J = {.op = OP_VJP, .dtype = dtype, .log = log, .x = y, .cotangent = cotangent, .out = out,
               .rows = n ? rows : 0, .n = n, .inner = inner};
    return start(&J);
}

void sk_narrow_f64(const double *src, float *dst, size_t n) {
    unsigned mode = sk_fp_enter();
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
    sk_fp_leave(mode);
}
