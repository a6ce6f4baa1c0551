/* The phases every row program shares, and the row programs of softmax,
 * log_softmax, logsumexp and the two VJPs (see job.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compensated.h"
#include "half.h"
#include "job.h"

/* --- buffers ------------------------------------------------------------ */

static size_t family_size(const job_t *J) { return J->dtype == DT_F64 ? 8 : 4; }

int scratch_init(job_t *J, scratch_t *S, size_t len) {
    memset(S, 0, sizeof *S);
    size_t m = len ? len : 1;
    int need_e = (J->op == OP_SOFTMAX && !J->log && J->dtype != DT_F64) ||
                 (J->op == OP_CE && J->out && J->dtype != DT_F64);
    int need_standin = J->op == OP_SOFTMAX || J->op == OP_CE;
    if (need_e && !(S->e = malloc(m * sizeof(double)))) return -1;
    if (need_standin && !(S->standin = malloc(m * family_size(J)))) return -1;
    if (J->codec) {
        if (!(S->in_f32 = malloc(m * sizeof(float))) || !(S->out_f32 = malloc(m * sizeof(float))) ||
            !(S->in2_f32 = malloc(m * sizeof(float))))
            return -1;
    }
    if (!J->wide && !(S->parts = malloc(4 * (J->blocks ? J->blocks : 1) * sizeof(sk_part)))) return -1;
    if (J->inner > 1) {
        /* tile rows 64 bytes apart modulo 4096, so that the rows of a tile,
           written (or read) side by side, fall in different cache sets */
        size_t row = (m * J->item_size + 63) / 64 * 64;
        row += (4096 + 64 - row % 4096) % 4096;
        S->tile_ld = row / J->item_size;
        size_t bytes = J->tile * row;
        if (!(S->tile_in = malloc(bytes))) return -1;
        if ((J->probs || J->cotangent) && !(S->tile_in2 = malloc(bytes))) return -1;
        if (J->out && J->op != OP_LSE && !(S->tile_out = malloc(bytes))) return -1;
    }
    return 0;
}

void scratch_free(scratch_t *S) {
    free(S->e);
    free(S->standin);
    free(S->in_f32);
    free(S->out_f32);
    free(S->in2_f32);
    free(S->parts);
    free(S->tile_in);
    free(S->tile_in2);
    free(S->tile_out);
}

/* --- values ------------------------------------------------------------- */

double load_as_double(int dtype, const void *p, size_t j) {
    if (dtype == DT_F64) return ((const double *)p)[j];
    if (dtype == DT_F32) return ((const float *)p)[j];
    return widen16(dtype, ((const uint16_t *)p)[j]);
}

/* Element j of row r of `base` (an array of the input's shape). */
double load_at(const job_t *J, const char *base, size_t r, size_t j) {
    return load_as_double(J->dtype, base + row_offset(J, r) * J->item_size, j * J->inner);
}

/* 16-bit rows are filled as float32, converted afterwards */
void fill_range(int dtype, void *out, size_t n, double v) {
    if (dtype == DT_F64) {
        double *o = out;
        for (size_t i = 0; i < n; i++) o[i] = v;
    } else {
        float *o = out;
        for (size_t i = 0; i < n; i++) o[i] = (float)v;
    }
}

/* Sum of block partials and `extra`, in block order. */
double combine_parts(const sk_part *p, size_t blocks, int comp, double extra) {
    double s = 0.0, e = 0.0;
    for (size_t b = 0; b < blocks; b++) {
        if (comp) {
            compensated_add(&s, &e, p[b].hi);
            e += p[b].lo;
        } else {
            s += p[b].hi;
        }
    }
    if (extra != 0.0) {
        if (comp) compensated_add(&s, &e, extra);
        else s += extra;
    }
    return s + e;
}

/* --- rows and tiles ------------------------------------------------------- */

/* This thread's chunk of row r of an input array `base` (input dtype,
 * contiguous): in place, or in `tile`, the input's tile. */
const char *chunk_in(const rowctx_t *R, const char *base, const char *tile, size_t r) {
    const job_t *J = R->J;
    if (J->inner == 1) return base + (r * J->n + R->start) * J->item_size;
    return tile + (r - R->tile_r0) * R->S->tile_ld * J->item_size;
}

/* The chunk of row r of the row-shaped output: in place, or in the tile. */
char *chunk_out(const rowctx_t *R, size_t r) {
    const job_t *J = R->J;
    if (J->inner == 1) return J->out + (r * J->n + R->start) * J->item_size;
    return R->S->tile_out + (r - R->tile_r0) * R->S->tile_ld * J->item_size;
}

/* Elements ahead that a transposition prefetches: the hardware does not
 * follow strides this long. */
#define SK_TRANSPOSE_AHEAD 16

/* A transposition between the chunks of rows r0 .. r0 + t - 1 of an array
 * (`arr`: element 0 of the chunk of row r0; element j of the t rows is t
 * adjacent values, `stride` bytes after element j - 1) and a tile holding
 * them one after the other, `ld` elements apart: from the array to the tile
 * (gather) or back.  Each element of the chunk is read (or written) a cache
 * line at a time. */
typedef struct {
    char *arr, *tile;
    size_t len, t, ld, stride, item;
    int gather;
} sk_transpose;

static void prefetch_ahead(const sk_transpose *T, size_t j) {
    if (j + SK_TRANSPOSE_AHEAD >= T->len) return;
    const char *a = T->arr + (j + SK_TRANSPOSE_AHEAD) * T->stride;
    for (size_t c = 0; c < T->t * T->item; c += 64) {
        if (T->gather) __builtin_prefetch(a + c, 0);
        else __builtin_prefetch(a + c, 1);
    }
}

#define SK_TRANSPOSE_ONE(type)                                  \
    do {                                                       \
        type *a = (type *)(T->arr + j * T->stride);            \
        type *b = (type *)T->tile + j;                         \
        for (size_t k = k0; k < T->t; k++) {                   \
            if (T->gather) b[k * T->ld] = a[k];                \
            else a[k] = b[k * T->ld];                          \
        }                                                      \
    } while (0)

/* Rows k0 .. t - 1 of element j. */
static void transpose_one(const sk_transpose *T, size_t j, size_t k0) {
    if (T->item == 8) SK_TRANSPOSE_ONE(uint64_t);
    else if (T->item == 4) SK_TRANSPOSE_ONE(uint32_t);
    else SK_TRANSPOSE_ONE(uint16_t);
}

#ifdef __SSE2__
#include <emmintrin.h>

/* A 4 x 4 block of 4-byte values, rows `ss` bytes apart, to a block with
 * rows `ds` bytes apart, transposed (shuffles: every bit pattern kept). */
static inline void block4x4(const char *src, size_t ss, char *dst, size_t ds) {
    __m128 r0 = _mm_loadu_ps((const float *)src), r1 = _mm_loadu_ps((const float *)(src + ss));
    __m128 r2 = _mm_loadu_ps((const float *)(src + 2 * ss)), r3 = _mm_loadu_ps((const float *)(src + 3 * ss));
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    _mm_storeu_ps((float *)dst, r0);
    _mm_storeu_ps((float *)(dst + ds), r1);
    _mm_storeu_ps((float *)(dst + 2 * ds), r2);
    _mm_storeu_ps((float *)(dst + 3 * ds), r3);
}

/* 4-byte values, four elements at a time; returns the elements done. */
static size_t transpose_by_4(const sk_transpose *T) {
    size_t ds = T->ld * 4, j = 0, kb = T->t & ~(size_t)3;
    for (; j + 4 <= T->len; j += 4) {
        for (size_t i = 0; i < 4; i++) prefetch_ahead(T, j + i);
        char *a = T->arr + j * T->stride, *b = T->tile + j * 4;
        for (size_t k = 0; k < kb; k += 4) {
            if (T->gather) block4x4(a + k * 4, T->stride, b + k * ds, ds);
            else block4x4(b + k * ds, ds, a + k * 4, T->stride);
        }
        for (size_t i = 0; i < 4 && kb < T->t; i++) transpose_one(T, j + i, kb);
    }
    return j;
}
#endif

static void transpose(const rowctx_t *R, char *base, size_t r0, size_t t, char *tile, int gather) {
    const job_t *J = R->J;
    sk_transpose T = {.arr = base + (row_offset(J, r0) + R->start * J->inner) * J->item_size, .tile = tile,
                      .len = R->len, .t = t, .ld = R->S->tile_ld, .stride = J->inner * J->item_size,
                      .item = J->item_size, .gather = gather};
    size_t j = 0;
#ifdef __SSE2__
    if (T.item == 4) j = transpose_by_4(&T);
#endif
    for (; j < T.len; j++) {
        prefetch_ahead(&T, j);
        transpose_one(&T, j, 0);
    }
}

/* Gathers the inputs of the rows from r on (at most a tile, not past the
 * rows this thread has claimed nor the rows of r's outer index). */
static void gather_tile(rowctx_t *R, size_t r) {
    job_t *J = R->J;
    size_t t = J->tile, left = J->inner - r % J->inner;
    if (t > left) t = left;
    if (t > R->claim_end - r) t = R->claim_end - r;
    R->tile_r0 = r;
    R->tile_end = r + t;
    transpose(R, (char *)J->x, r, t, R->S->tile_in, 1);
    const char *in2 = J->probs ? J->probs : J->cotangent;
    if (in2) transpose(R, (char *)in2, r, t, R->S->tile_in2, 1);
}

static void scatter_tile(rowctx_t *R) {
    if (R->S->tile_out) transpose(R, R->J->out, R->tile_r0, R->tile_end - R->tile_r0, R->S->tile_out, 0);
}

/* --- phases ------------------------------------------------------------- */

/* The logits of this chunk (input dtype) in the family's type. */
const void *chunk_logits(rowctx_t *R, const char *chunk) {
    job_t *J = R->J;
    if (J->codec) {
        J->codec->widen(chunk, R->S->in_f32, R->len);
        return R->S->in_f32;
    }
    return chunk;
}

/* Phase 1 and the combination of its partials over the chunks. */
void scan_row(rowctx_t *R, const void *x, int want_argmax, int want_unmasked, row_scan_t *out) {
    job_t *J = R->J;
    const sk_family *f = J->fam;
    int chunk_nan;
    size_t at = 0;
    double m = f->max(x, R->len, &chunk_nan, want_argmax ? &at : NULL);
    int first = R->slot - R->chunk;
    R->chunk_max[R->slot] = m;
    R->chunk_nan[R->slot] = chunk_nan;
    if (want_argmax) R->chunk_argmax[R->slot] = R->start + at;
    if (want_unmasked) R->chunk_unmasked[R->slot] = f->count_unmasked(x, R->len);
    sync_row(R);
    double max = -INFINITY;
    int nan = 0;
    size_t unmasked = 0;
    for (int c = first; c < first + R->chunks; c++) {
        nan |= R->chunk_nan[c];
        if (R->chunk_max[c] > max) max = R->chunk_max[c];
        if (want_unmasked) unmasked += R->chunk_unmasked[c];
    }
    size_t argmax = J->n;
    if (want_argmax)
        for (int c = first; c < first + R->chunks; c++)
            if (R->chunk_max[c] == max && R->chunk_argmax[c] < argmax) argmax = R->chunk_argmax[c];
    out->max = max;
    out->nan = nan;
    out->argmax = argmax;
    out->unmasked = unmasked;
}

/* The stand-in of a +inf row for this chunk: 0 at +inf, -inf elsewhere. */
const void *inf_standin(rowctx_t *R, const void *x) {
    if (family_size(R->J) == 8) {
        const double *s = x;
        double *d = (double *)R->S->standin;
        for (size_t i = 0; i < R->len; i++) d[i] = s[i] == INFINITY ? 0.0 : -INFINITY;
    } else {
        const float *s = x;
        float *d = (float *)R->S->standin;
        for (size_t i = 0; i < R->len; i++) d[i] = s[i] == INFINITY ? 0.0f : -INFINITY;
    }
    return R->S->standin;
}

/* The next row's chunk of logits and, for a row-shaped output, of the
 * output: prefetched during this row's exponential pass. */
static sk_ahead ahead(const rowctx_t *R, int prefetch_out) {
    const job_t *J = R->J;
    sk_ahead ah = {0};
    /* rows apart: the tiles are gathered a cache line at a time instead */
    if (R->next >= J->rows || J->inner > 1) return ah;
    size_t off = (R->next * J->n + R->start) * J->item_size;
    ah.next_in = J->x + off;
    ah.next_in_bytes = R->len * J->item_size;
    if (prefetch_out && J->out) {
        ah.next_out = J->out + off;
        ah.next_out_bytes = ah.next_in_bytes;
    }
    return ah;
}

/* Phase 2, the exponential pass of this chunk; meanwhile the next row is
 * prefetched and the deferred output of the row before is written. */
void exp_pass(rowctx_t *R, const void *x, double a, double T, double *e, int prefetch_out) {
    sk_ahead ah = ahead(R, prefetch_out);
    ah.deferred = R->pending;
    R->J->fam->exp_sum(x, R->len, a, T, e, R->exp_parts + R->start / SK_BLOCK, &ah);
    R->pending.out = NULL;
    sync_row(R);
}

/* s = sum of exp(z) - 1 over the row, after exp_pass: the terms equal to 1
 * (the maxima) are added as a count, so that one of them is left out
 * exactly and log1p(s) keeps its accuracy. */
double sum_exp_minus_1(const rowctx_t *R) {
    const sk_part *p = R->exp_parts;
    size_t blocks = R->J->blocks;
    double maxima = 0.0;
    for (size_t b = 0; b < blocks; b++) maxima += p[b].maxima;
    return combine_parts(p, blocks, R->J->dtype == DT_F64, maxima - 1.0);
}

/* s of a float64 row whose other terms all lie below 2^-1000: each term
 * exp(z) = exp(z/2)^2 is formed scaled by 2^512, so that none is rounded to
 * a subnormal on its own, and the sum is rounded once.  Summing terms
 * already rounded to subnormals would give an error of up to half a
 * subnormal spacing per term, many ULPs of a subnormal s (and of the
 * log-probability -log1p(s) at the maximum).  Rare rows: one scalar pass,
 * the same in every thread of a split row.  Terms below 2^-2100 cannot
 * reach the result's last place and are left out. */
static double tiny_sum_exp(const job_t *J, size_t r, double a, double T) {
    double sum = 0.0, comp = 0.0;
    int left_out = 0;
    for (size_t j = 0; j < J->n; j++) {
        double x = load_at(J, J->x, r, j), lo;
        if (x == a && !left_out) {
            left_out = 1;
            continue;
        }
        double hi = two_diff(x, a, &lo);
        if (T != 1.0) {
            double q = hi / T;
            lo = (fma(-q, T, hi) + lo) / T;
            hi = q;
        }
        if (!(hi > -1500.0)) continue;
        double u = ldexp(exp(0.5 * hi), 256);
        compensated_add(&sum, &comp, u * u * (1.0 + lo));
    }
    return ldexp(sum + comp, -512);
}

double row_sum_exp_minus_1(const rowctx_t *R, size_t r, double a, double T) {
    double s = sum_exp_minus_1(R);
    /* not over an output written in place, which may already hold results */
    if (R->J->dtype == DT_F64 && s > 0.0 && s < 0x1p-1000 && R->J->out != R->J->x) s = tiny_sum_exp(R->J, r, a, T);
    return s;
}

/* Writes a row's known output, or, when rows are deferred, leaves it to the
 * next exp_pass (or to flush_deferred).  A row of the +inf stand-in is
 * written at once: the stand-in buffer is reused. */
static void write_output(rowctx_t *R, const sk_write *w) {
    job_t *J = R->J;
    if (J->defer && w->x != (const void *)R->S->standin) R->pending = *w;
    else J->fam->write(w, J->stream);
}

/* Elements per piece of a 16-bit output: its float32 values fit in the
 * first-level cache on their way to being narrowed. */
#define SK_PIECE 1024

/* Writes a 16-bit row's known output to o16 a piece at a time, through the
 * start of the float32 buffer: every element comes out as from one call of
 * `write`, which computes each on its own. */
static void write_narrowed(rowctx_t *R, const sk_write *w, char *o16) {
    const job_t *J = R->J;
    for (size_t i = 0; i < w->n; i += SK_PIECE) {
        sk_write p = *w;
        p.out = R->S->out_f32;
        p.n = w->n - i < SK_PIECE ? w->n - i : SK_PIECE;
        if (p.e) p.e += i;
        if (p.x) p.x = (const float *)p.x + i;
        J->fam->write(&p, 0);
        J->codec->narrow(R->S->out_f32, o16 + i * 2, p.n);
    }
}

void flush_deferred(rowctx_t *R) {
    if (!R->pending.out) return;
    R->J->fam->write(&R->pending, R->J->stream);
    R->pending.out = NULL;
}

/* --- softmax, log_softmax, logsumexp -------------------------------------- */

static void row_softmax(rowctx_t *R, size_t r) {
    job_t *J = R->J;
    char *oc = chunk_out(R, r);
    const void *x = chunk_logits(R, chunk_in(R, J->x, R->S->tile_in, r));
    void *o = J->codec ? (void *)R->S->out_f32 : (void *)oc;
    row_scan_t sc;
    scan_row(R, x, 0, 0, &sc);
    double a = sc.max;
    if (sc.nan || a == -INFINITY) {
        fill_range(J->dtype, o, R->len, sc.nan ? NAN : (J->log ? -INFINITY : 0.0));
        if (J->codec) J->codec->narrow(R->S->out_f32, oc, R->len);
    } else {
        if (a == INFINITY) {
            x = inf_standin(R, x);
            a = 0.0;
        }
        double *e = J->log ? NULL : (J->dtype == DT_F64 ? (double *)o : R->S->e);
        exp_pass(R, x, a, J->temperature, e, !J->stream);
        /* softmax needs 1 + s alone, which a tiny s does not change */
        double s = J->log ? row_sum_exp_minus_1(R, r, a, J->temperature) : sum_exp_minus_1(R);
        sk_write w = {.out = o,
                      .n = R->len,
                      .e = e,
                      .x = x,
                      .divisor = 1.0 + s,
                      .factor = 1.0 / (1.0 + s),
                      .shift = a,
                      .temperature = J->temperature,
                      .log_sum = log1p(s)};
        if (J->codec) write_narrowed(R, &w, oc);
        else write_output(R, &w);
    }
}

static void row_logsumexp(rowctx_t *R, size_t r) {
    job_t *J = R->J;
    const void *x = chunk_logits(R, chunk_in(R, J->x, R->S->tile_in, r));
    row_scan_t sc;
    scan_row(R, x, 0, 0, &sc);
    double a = sc.max, v;
    if (sc.nan) {
        v = NAN;
    } else if (a == -INFINITY || a == INFINITY) {
        v = a;
    } else {
        exp_pass(R, x, a, 1.0, NULL, 0);
        v = a + log1p(row_sum_exp_minus_1(R, r, a, 1.0));
    }
    if (R->chunk != 0) return;
    if (J->dtype == DT_F64) ((double *)J->out)[r] = v;
    else if (J->dtype == DT_F32) ((float *)J->out)[r] = (float)v;
    else ((uint16_t *)J->out)[r] = round16(J->dtype, v);
}

/* --- VJPs ----------------------------------------------------------------- */

static void row_vjp(rowctx_t *R, size_t r) {
    job_t *J = R->J;
    const sk_family *f = J->fam;
    const void *y = chunk_in(R, J->x, R->S->tile_in, r), *g = chunk_in(R, J->cotangent, R->S->tile_in2, r);
    char *oc = chunk_out(R, r);
    void *o = oc;
    if (J->codec) {
        J->codec->widen(y, R->S->in_f32, R->len);
        J->codec->widen(g, R->S->in2_f32, R->len);
        y = R->S->in_f32;
        g = R->S->in2_f32;
        o = R->S->out_f32;
    }
    /* Rows alternate between two sets of block partials: a thread that has
       passed this row's barrier may write the next row's partials while
       another still combines this row's, but it cannot reach the row after
       next before every thread has passed the next row's barrier. */
    sk_part *parts = R->parts + (r & 1) * J->blocks;
    if (J->log) f->log_softmax_vjp_sum(y, g, R->len, parts + R->start / SK_BLOCK);
    else f->softmax_vjp_dot(y, g, R->len, parts + R->start / SK_BLOCK);
    sync_row(R);
    double v = combine_parts(parts, J->blocks, J->dtype == DT_F64, 0.0);
    if (J->log) f->log_softmax_vjp_write(y, g, o, R->len, v);
    else f->softmax_vjp_write(y, g, o, R->len, v);
    if (J->codec) J->codec->narrow(R->S->out_f32, oc, R->len);
}

void run_row(rowctx_t *R, size_t r) {
    if (R->J->inner > 1 && r >= R->tile_end) gather_tile(R, r);
    R->slot = R->chunk + R->chunks * (int)(r & 1);
    switch (R->J->op) {
    case OP_SOFTMAX: row_softmax(R, r); break;
    case OP_LSE: row_logsumexp(R, r); break;
    case OP_CE: row_cross_entropy(R, r); break;
    default: row_vjp(R, r); break;
    }
    if (R->J->inner > 1 && r + 1 == R->tile_end) scatter_tile(R);
}
