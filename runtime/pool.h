/* runtime/pool.h — the thread pool: parallel loops over [0, n) for GEMM and elementwise kernels.
 *
 * Contract:
 *  - A pool has a fixed number of threads, counting the caller: dtl_pool_new(N) starts N - 1
 *    workers once; dtl_pool_run never creates a thread. Workers wait for work by spinning
 *    briefly (DTL_POOL_SPIN_NS, so back-to-back loops of one training step do not pay a wake-up)
 *    and then sleeping on a condition variable (an idle pool costs no CPU).
 *  - dtl_pool_run(p, fn, ctx, n, grain) calls fn(ctx, begin, end) on disjoint ranges that cover
 *    [0, n) exactly once, each of at least `grain` items (grain < 1 counts as 1), the caller's
 *    thread taking part, and returns when all calls have returned. A range is handed out to
 *    whichever thread asks first, so which thread runs which range is not fixed. It allocates
 *    nothing and takes no lock when it runs serially: n <= grain, a 1-thread pool, p == NULL,
 *    and any call made while the pool is already running a loop — from inside fn (nesting) or
 *    from another thread at the same time — all run fn(ctx, 0, n) once on the calling thread.
 *    n <= 0 does nothing.
 *  - Thread count: nthreads > 0 is taken as given (at most DTL_POOL_MAX_THREADS); nthreads <= 0
 *    means DTL_THREADS when it is a positive decimal integer <= DTL_POOL_MAX_THREADS (anything
 *    else is ignored), else the number of CPUs this process may run on (sched_getaffinity).
 *  - dtl_pool_default() is the process's shared pool, created on first use under pthread_once
 *    and never freed (the threads sleep when idle; the OS reclaims them at exit). It is the one
 *    process-wide singleton here: every JIT-compiled or ahead-of-time model in a process shares
 *    one set of workers instead of oversubscribing the cores. If its threads cannot be created
 *    it is a 1-thread pool (every run serial), never NULL.
 *  - dtl_pool_free joins the workers; it must not be called while a run on the pool is in
 *    progress. NULL is fine.
 * Errors: dtl_pool_new returns NULL with err set (DTL_ERR_USAGE for a bad nthreads,
 * DTL_ERR_NOMEM when memory or threads cannot be had).
 */
#ifndef DTL_POOL_H
#define DTL_POOL_H

#include <stdint.h>

#include "err.h"

#define DTL_POOL_MAX_THREADS 1024
/* How long an idle worker spins before it sleeps (nanoseconds). */
#define DTL_POOL_SPIN_NS 100000

typedef struct dtl_pool dtl_pool;

/* A pool of nthreads threads including the caller (see above for nthreads <= 0). */
dtl_pool *dtl_pool_new(int nthreads, dtl_err *err);
void dtl_pool_free(dtl_pool *p);
/* The number of threads, the caller included; 1 for NULL. */
int dtl_pool_size(const dtl_pool *p);
/* The process's shared pool (see above). */
dtl_pool *dtl_pool_default(void);

typedef void (*dtl_pool_fn)(void *ctx, int64_t begin, int64_t end);
void dtl_pool_run(dtl_pool *p, dtl_pool_fn fn, void *ctx, int64_t n, int64_t grain);

/* The thread count that nthreads <= 0 means for a DTL_THREADS value `env` (NULL: unset). */
int dtl_pool_threads_for(const char *env);
/* The number of CPUs this process may run on (at least 1). */
int dtl_pool_cpu_count(void);

#endif
