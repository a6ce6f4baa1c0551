/* Threads for the row programs: a sense-reversing spin barrier, and a pool
 * of workers that runs one job at a time (pool.c). */
#ifndef SK_POOL_H
#define SK_POOL_H

typedef struct {
    volatile int count;
    volatile int sense;
    int n;              /* threads that meet at it */
} barrier_t;

/* local_sense: the calling thread's own flag, 0 before its first wait */
void barrier_wait(barrier_t *b, int *local_sense);

struct job;
/* Runs the job on up to `threads` threads (the calling thread among them)
 * and returns its error code. */
int run_job(struct job *J, int threads);

/* Calls fn(ctx, tid) on up to `threads` threads of the pool (the calling
 * thread is tid 0) and returns how many ran it; the task shares out its own
 * work.  As run_job, a call that finds the pool busy runs on one thread. */
int sk_run_tasks(void (*fn)(void *ctx, int tid), void *ctx, int threads);

/* The numerics assume IEEE arithmetic: rounding to nearest, subnormal inputs
 * and results kept.  A caller may run with flush-to-zero or
 * denormals-are-zero set (XLA does, on the threads that call its FFI
 * handlers), so every thread running a job sets that mode with sk_fp_enter
 * and restores its own, which sk_fp_enter returns, with sk_fp_leave. */
unsigned sk_fp_enter(void);
void sk_fp_leave(unsigned mode);

#endif
