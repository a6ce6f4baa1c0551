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

#endif
