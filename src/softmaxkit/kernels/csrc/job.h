/* One call of an entry point as a job: rows of one operation, run by the row
 * programs (rows.c, ce.c) on the threads of the pool (pool.c).
 *
 * A row is processed in phases: (1) maximum, NaN flag, first argmax and the
 * count of logits that are not -inf; (2) the block sums of exp(z); (3) for
 * general cross-entropy coefficients, the loss and coefficient sums; (4) the
 * outputs.  Rows are spread over threads; a few very wide rows are instead
 * split into one chunk per thread (at block boundaries), with a barrier
 * between phases, and every thread combines the shared per-chunk and
 * per-block partials in the same order.  Results are therefore bitwise the
 * same for every thread count.
 *
 * A row need not be contiguous: the array is (outer, n, inner), reduced
 * along n, and row r = (r / inner, r % inner) has its elements `inner` apart
 * (inner 1: rows are contiguous and read in place).  Otherwise each thread
 * gathers a tile of consecutive rows (neighbouring r share cache lines) into
 * its scratch, contiguous, runs them there exactly as contiguous rows, and
 * scatters the tile's row-shaped outputs back.  Per-row outputs, the loss and
 * the class indices are in row order r.
 *
 * Rows whose answer is a limit follow softmaxkit.numerics.rows.row_stats: a
 * NaN row gives NaN, a fully masked row (maximum -inf) gives the masked
 * values, and a row with +inf is replaced by its stand-in (0 at the +inf
 * entries, -inf elsewhere) and shifted by 0.
 */
#ifndef SK_JOB_H
#define SK_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "api.h"
#include "pool.h"
#include "range_kernels.h"

enum { OP_SOFTMAX, OP_LSE, OP_CE, OP_VJP };

typedef struct job {
    int op, dtype, log;
    const sk_family *fam;
    const sk_codec *codec;     /* a 16-bit dtype's conversions, or NULL */
    const char *x;             /* logits, or the VJP's y */
    const char *probs;         /* cross-entropy probability targets, or NULL */
    const char *cotangent;     /* VJP */
    char *out;                 /* outputs of the row's shape (one per row for logsumexp), or NULL */
    double *loss;              /* cross-entropy, one per row */
    const int64_t *targets;    /* cross-entropy class indices, or NULL */
    const double *class_weight;
    int64_t ignore_index;
    double temperature, eps, z_loss, grad_divisor;
    size_t rows, n, item_size;
    size_t inner;              /* elements between neighbours of a row; 1: contiguous */
    size_t tile;               /* rows gathered at once when inner > 1 */
    size_t blocks;             /* SK_BLOCK blocks per row */
    int threads;
    int wide;                  /* each row split into one chunk per thread */
    int stream;                /* write the output around the cache (SK_STREAM_MIN) */
    int defer;                 /* write each row's output during the next row's exp_sum */
    size_t batch;              /* rows a thread claims at once (not wide) */
    size_t next_row;           /* atomic: the first row not yet claimed */
    int err;                   /* atomic */
    barrier_t bar;
    /* shared per-chunk partials, two sets (wide) */
    double *chunk_max;
    size_t *chunk_argmax, *chunk_unmasked;
    int *chunk_nan;
    sk_part *parts;            /* 4 * blocks shared block partials (wide) */
    /* a task (sk_run_tasks) instead of rows: each thread calls it once */
    void (*task)(void *ctx, int tid);
    void *task_ctx;
} job_t;

/* A thread's buffers for one job. */
typedef struct {
    double *e;                 /* the row's exponentials, unless they go to the output */
    char *standin;             /* the stand-in of a +inf row, family type */
    float *in_f32, *in2_f32, *out_f32; /* 16-bit rows as float32: x, probs or cotangent, output */
    double chunk_max[2];       /* the per-chunk partials when rows are not split */
    size_t chunk_argmax[2], chunk_unmasked[2];
    int chunk_nan[2];
    sk_part *parts;            /* 4 * blocks block partials when rows are not split */
    /* inner > 1: tiles of rows (input dtype, each row's chunk contiguous) */
    char *tile_in, *tile_in2, *tile_out;
    size_t tile_ld;            /* elements from one row of a tile to the next */
} scratch_t;

/* One thread's view of the rows it runs: its chunk [start, start + len) of
 * each row (the whole row unless the job is wide). */
typedef struct {
    job_t *J;
    scratch_t *S;
    int chunk, chunks, sense;
    int slot;                  /* chunk + chunks * (row parity): the chunk partials alternate between rows */
    size_t start, len;
    size_t next;               /* the row this thread runs next, or rows when none */
    size_t claim_end;          /* the end of the rows this thread has claimed */
    size_t tile_r0, tile_end;  /* the rows in the tiles (inner > 1) */
    sk_write pending;          /* the output of the row before, deferred (J->defer) */
    double *chunk_max;
    size_t *chunk_argmax, *chunk_unmasked;
    int *chunk_nan;
    /* 4 * blocks block partials: the four sets below, in this order */
    sk_part *parts;
    sk_part *exp_parts, *loss_parts, *coef_parts, *rest_parts;
} rowctx_t;

/* What phase 1 finds in a row. */
typedef struct {
    double max;
    int nan;
    size_t argmax;             /* the first one; n unless asked for */
    size_t unmasked;           /* logits that are not -inf; 0 unless asked for */
} row_scan_t;

/* Waits for the other chunks of the row, if it is split. */
static inline void sync_row(rowctx_t *R) {
    if (R->chunks > 1) barrier_wait(&R->J->bar, &R->sense);
}

/* The offset, in elements, of element 0 of row r; element j is inner * j
 * further. */
static inline size_t row_offset(const job_t *J, size_t r) {
    if (J->inner == 1) return r * J->n;
    return (r / J->inner) * J->n * J->inner + r % J->inner;
}

/* rows.c: the parts of a row program, shared by all of them */
int scratch_init(job_t *J, scratch_t *S, size_t len);
void scratch_free(scratch_t *S);
void run_row(rowctx_t *R, size_t r);
const char *chunk_in(const rowctx_t *R, const char *base, const char *tile, size_t r);
char *chunk_out(const rowctx_t *R, size_t r);
double load_at(const job_t *J, const char *base, size_t r, size_t j);
/* s = sum of exp(z) - 1 over row r after exp_pass (the maximum a, the
 * temperature T), rescued for float64 rows of terms below the normal range */
double row_sum_exp_minus_1(const rowctx_t *R, size_t r, double a, double T);
void flush_deferred(rowctx_t *R);
double load_as_double(int dtype, const void *p, size_t j);
void fill_range(int dtype, void *out, size_t n, double v);
double combine_parts(const sk_part *p, size_t blocks, int comp, double extra);
const void *chunk_logits(rowctx_t *R, const char *row);
void scan_row(rowctx_t *R, const void *x, int want_argmax, int want_unmasked, row_scan_t *out);
const void *inf_standin(rowctx_t *R, const void *x);
void exp_pass(rowctx_t *R, const void *x, double a, double T, double *e, int prefetch_out);
double sum_exp_minus_1(const rowctx_t *R);

/* ce.c: the cross-entropy row program (the others are in rows.c) */
void row_cross_entropy(rowctx_t *R, size_t r);

#endif
