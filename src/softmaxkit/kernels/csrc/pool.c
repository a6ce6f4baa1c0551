/* The threads a job runs on: the barrier of split rows, each thread's share
 * of the rows, the planner that decides how many threads and how to split,
 * and the pool of workers that runs them (see job.h). */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"

void barrier_wait(barrier_t *b, int *local_sense) {
    int s = !*local_sense;
    *local_sense = s;
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->sense, s, __ATOMIC_RELEASE);
        return;
    }
    /* spin briefly, then yield: the machine may be shared */
    for (int spins = 0; __atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != s; spins++)
        if (spins > 200) sched_yield();
}

/* --- one thread's share ----------------------------------------------------- */

/* Chunk c of nc: whole blocks, so block partials line up with the row. */
static void chunk_range(const job_t *J, int c, int nc, size_t *start, size_t *len) {
    size_t b0 = J->blocks * (size_t)c / (size_t)nc, b1 = J->blocks * (size_t)(c + 1) / (size_t)nc;
    size_t s = b0 * SK_BLOCK, e = b1 * SK_BLOCK;
    if (e > J->n) e = J->n;
    if (s > e) s = e;
    *start = s;
    *len = e - s;
}

static void name_parts(rowctx_t *R, sk_part *parts, size_t blocks) {
    R->parts = parts;
    R->exp_parts = parts;
    R->loss_parts = parts + blocks;
    R->coef_parts = parts + 2 * blocks;
    R->rest_parts = parts + 3 * blocks;
}

/* Wide: chunk `tid` of every row, in step with the other threads. */
static void run_chunks(job_t *J, rowctx_t *R, int failed) {
    /* every thread must reach every barrier: agree on failure first */
    if (failed) __atomic_store_n(&J->err, SK_ENOMEM, __ATOMIC_RELAXED);
    barrier_wait(&J->bar, &R->sense);
    if (__atomic_load_n(&J->err, __ATOMIC_RELAXED)) return;
    name_parts(R, J->parts, J->blocks);
    for (size_t r = 0; r < J->rows; r++) {
        R->next = r + 1;
        R->claim_end = r + 1;
        run_row(R, r);
    }
}

/* Not wide: whole rows, claimed in batches. */
static void run_rows(job_t *J, rowctx_t *R) {
    name_parts(R, R->S->parts, J->blocks);
    /* batches are claimed one ahead, so that the last row of a batch knows
     * the row that follows it */
    size_t r0 = __atomic_fetch_add(&J->next_row, J->batch, __ATOMIC_RELAXED);
    while (r0 < J->rows) {
        size_t r1 = r0 + J->batch < J->rows ? r0 + J->batch : J->rows;
        size_t n0 = __atomic_fetch_add(&J->next_row, J->batch, __ATOMIC_RELAXED);
        R->claim_end = r1;
        for (size_t r = r0; r < r1; r++) {
            R->next = r + 1 < r1 ? r + 1 : n0;
            run_row(R, r);
        }
        r0 = n0;
    }
    flush_deferred(R);
}

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define SK_MXCSR_FTZ 0x8000u
#define SK_MXCSR_DAZ 0x0040u
#define SK_MXCSR_ROUNDING 0x6000u
unsigned sk_fp_enter(void) {
    unsigned old = _mm_getcsr();
    _mm_setcsr(old & ~(SK_MXCSR_FTZ | SK_MXCSR_DAZ | SK_MXCSR_ROUNDING));
    return old;
}
void sk_fp_leave(unsigned old) { _mm_setcsr(old); }
#else
unsigned sk_fp_enter(void) { return 0; }
void sk_fp_leave(unsigned old) { (void)old; }
#endif

static void run_thread(job_t *J, int tid) {
    unsigned fp_mode = sk_fp_enter();
    if (J->task) {
        J->task(J->task_ctx, tid);
        sk_fp_leave(fp_mode);
        return;
    }
    scratch_t S;
    rowctx_t R;
    memset(&R, 0, sizeof R);
    R.J = J;
    R.S = &S;
    if (J->wide) {
        R.chunk = tid;
        R.chunks = J->threads;
        chunk_range(J, tid, J->threads, &R.start, &R.len);
        R.chunk_max = J->chunk_max;
        R.chunk_argmax = J->chunk_argmax;
        R.chunk_unmasked = J->chunk_unmasked;
        R.chunk_nan = J->chunk_nan;
    } else {
        R.chunks = 1;
        R.len = J->n;
        R.chunk_max = S.chunk_max;
        R.chunk_argmax = S.chunk_argmax;
        R.chunk_unmasked = S.chunk_unmasked;
        R.chunk_nan = S.chunk_nan;
    }
    int failed = scratch_init(J, &S, R.len);
    if (J->wide) run_chunks(J, &R, failed);
    else if (failed) __atomic_store_n(&J->err, SK_ENOMEM, __ATOMIC_RELAXED);
    else run_rows(J, &R);
    scratch_free(&S);
    sk_fp_leave(fp_mode);
}

/* --- the pool ---------------------------------------------------------------- */

/* A pool of workers; the calling thread is worker 0.  One job at a time: a
 * call that finds the pool busy (another Python thread) runs on its own. */
static pthread_mutex_t pool_busy = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t pool_done = PTHREAD_COND_INITIALIZER;
static int pool_size;
static unsigned long pool_gen;
static job_t *pool_job;
/* threads the posted job uses; 0 once it is done.  A worker that wakes late
 * reads this, never pool_job, which may then point at a finished job. */
static int pool_threads;
static int pool_pending;

typedef struct {
    int id;
    unsigned long gen;
} worker_arg_t;

static void *worker_main(void *arg) {
    worker_arg_t wa = *(worker_arg_t *)arg;
    free(arg);
    int id = wa.id;
    /* the generation when the worker was made: a job posted before it first
     * takes the lock is still seen as new */
    unsigned long seen = wa.gen;
    pthread_mutex_lock(&pool_mu);
    for (;;) {
        while (pool_gen == seen) pthread_cond_wait(&pool_work, &pool_mu);
        seen = pool_gen;
        if (id >= pool_threads) continue;
        job_t *J = pool_job;
        pthread_mutex_unlock(&pool_mu);
        run_thread(J, id);
        pthread_mutex_lock(&pool_mu);
        if (--pool_pending == 0) pthread_cond_signal(&pool_done);
    }
    return NULL;
}

/* Workers 1 .. want-1 exist (as many as could be started); returns how many
 * threads a job may use. */
static int pool_grow(int want) {
    pthread_mutex_lock(&pool_mu);
    while (pool_size + 1 < want) {
        pthread_t th;
        pthread_attr_t attr;
        worker_arg_t *wa = malloc(sizeof *wa);
        if (!wa) break;
        wa->id = pool_size + 1;
        wa->gen = pool_gen;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &attr, worker_main, wa);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            free(wa);
            break;
        }
        pool_size++;
    }
    int have = pool_size + 1;
    pthread_mutex_unlock(&pool_mu);
    return have < want ? have : want;
}

static void pool_reset_child(void) {
    /* after fork only the forking thread exists */
    pthread_mutex_init(&pool_busy, NULL);
    pthread_mutex_init(&pool_mu, NULL);
    pthread_cond_init(&pool_work, NULL);
    pthread_cond_init(&pool_done, NULL);
    pool_size = 0;
    pool_gen = 0;
    pool_threads = 0;
    pool_job = NULL;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void atfork_install(void) { pthread_atfork(NULL, NULL, pool_reset_child); }

/* Posts the job to workers 1 .. threads-1, runs share 0 and waits for them. */
static void pool_run(job_t *J) {
    pthread_mutex_lock(&pool_mu);
    pool_job = J;
    pool_threads = J->threads;
    pool_pending = J->threads - 1;
    pool_gen++;
    pthread_cond_broadcast(&pool_work);
    pthread_mutex_unlock(&pool_mu);
    run_thread(J, 0);
    pthread_mutex_lock(&pool_mu);
    while (pool_pending > 0) pthread_cond_wait(&pool_done, &pool_mu);
    pool_threads = 0;
    pool_job = NULL;
    pthread_mutex_unlock(&pool_mu);
}

/* --- planning ------------------------------------------------------------------ */

/* Elements per thread below which another thread does not pay off. */
#define MIN_WORK 32768

/* The threads, whether rows are split, and the batch.  Rows go whole to the
 * threads, at most one thread per row, unless there are fewer than four rows
 * per thread and each row has at least four blocks per thread: then every
 * row is split. */
static void plan(job_t *J, int threads) {
    size_t total = J->rows * (J->n ? J->n : 1);
    size_t by_work = total / MIN_WORK;
    int nt = threads;
    if ((size_t)nt > by_work) nt = by_work ? (int)by_work : 1;
    J->wide = 0;
    if (nt > 1 && J->rows < (size_t)(4 * nt) && J->blocks >= (size_t)(4 * nt)) {
        J->wide = 1;
    } else if ((size_t)nt > J->rows) {
        nt = J->rows ? (int)J->rows : 1;
    }
    J->threads = nt;
    size_t b = 16384 / (J->n ? J->n : 1);
    J->batch = b ? b : 1;
    /* whole tiles, where rows are gathered */
    if (J->inner > 1) J->batch = (J->batch + J->tile - 1) / J->tile * J->tile;
}

/* The shared partials of a wide job; on failure the job is not wide. */
static void alloc_shared(job_t *J) {
    J->bar.n = J->threads;
    J->chunk_max = malloc(2 * J->threads * sizeof(double));
    J->chunk_argmax = malloc(2 * J->threads * sizeof(size_t));
    J->chunk_unmasked = malloc(2 * J->threads * sizeof(size_t));
    J->chunk_nan = malloc(2 * J->threads * sizeof(int));
    J->parts = malloc(4 * J->blocks * sizeof(sk_part));
    if (!J->chunk_max || !J->chunk_argmax || !J->chunk_unmasked || !J->chunk_nan || !J->parts) {
        J->wide = 0;
        plan(J, 1);
    }
}

static void free_shared(job_t *J) {
    free(J->chunk_max);
    free(J->chunk_argmax);
    free(J->chunk_unmasked);
    free(J->chunk_nan);
    free(J->parts);
}

int run_job(job_t *J, int threads) {
    if (J->rows == 0) return 0;
    int locked = 0;
    if (threads > 1) {
        locked = pthread_mutex_trylock(&pool_busy) == 0;
        if (!locked) threads = 1;
    }
    plan(J, threads);
    if (J->threads > 1) {
        pthread_once(&atfork_once, atfork_install);
        plan(J, pool_grow(J->threads));
    }
    if (J->wide) alloc_shared(J);
    /* a deferred row is written by its thread's next row: split rows have
       none of their own */
    if (J->wide) J->defer = 0;
    if (J->threads > 1) pool_run(J);
    else run_thread(J, 0);
    if (locked) pthread_mutex_unlock(&pool_busy);
    free_shared(J);
    return J->err;
}

int sk_run_tasks(void (*fn)(void *ctx, int tid), void *ctx, int threads) {
    job_t J;
    memset(&J, 0, sizeof J);
    J.task = fn;
    J.task_ctx = ctx;
    int locked = 0;
    if (threads > 1) {
        locked = pthread_mutex_trylock(&pool_busy) == 0;
        if (!locked) threads = 1;
    }
    J.threads = 1;
    if (threads > 1) {
        pthread_once(&atfork_once, atfork_install);
        J.threads = pool_grow(threads);
    }
    if (J.threads > 1) {
        pool_run(&J);
    } else {
        run_thread(&J, 0);
    }
    if (locked) pthread_mutex_unlock(&pool_busy);
    return J.threads;
}
