/* runtime/pool.c — the thread pool.
 *
 * Design: one loop at a time per pool. dtl_pool_run publishes the loop (fn, ctx, n, the
 * number of chunks) under the pool's mutex and bumps an atomic generation counter; workers
 * notice the new generation by spinning on it for up to DTL_POOL_SPIN_NS after their last
 * loop (a training step runs many short loops back to back, and a futex wake-up costs more
 * than a small GEMM), else they sleep on `wake`. Every participant, the caller included,
 * claims chunk indexes one at a time under the mutex (so a worker that wakes late simply finds
 * nothing left, and never reads a half-published loop), runs fn on the chunk's range, and
 * counts it in the atomic `done`; the caller spins, then sleeps on `done_cv`, until done ==
 * nchunks. The chunks are at most CHUNKS_PER_THREAD per thread and at least `grain` items
 * each, so a slow or preempted worker costs little. `busy` (an atomic flag taken with a
 * compare-and-swap) makes a nested or concurrent call run serially instead of deadlocking.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNKS_PER_THREAD 4
#define MIN_STACK_BYTES (1u << 20) /* GEMM keeps its packing buffers on the stack */

struct dtl_pool {
    int nthreads;
    int nworkers; /* started workers: nthreads - 1 once dtl_pool_new succeeded */
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* idle workers sleep here */
    pthread_cond_t done_cv; /* the caller sleeps here when the last chunks take long */
    /* The current loop and the pool's state, under mu: */
    dtl_pool_fn fn;
    void *ctx;
    int64_t n, nchunks, next;
    int sleepers;
    bool caller_waiting;
    bool stop;
    /* Lock-free views: */
    atomic_uint gen;     /* bumped (under mu) for each published loop and at stop */
    atomic_llong done;   /* chunks of the current loop that have finished */
    atomic_int busy;     /* 1 while a loop runs */
};

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins until p->gen differs from seen or DTL_POOL_SPIN_NS passed; returns whether it changed.
 * After the first few microseconds it yields the CPU at each check, so that spinning workers
 * of an oversubscribed machine (more threads than cores) let the others run. */
static bool spin_for_gen(dtl_pool *p, unsigned seen)
{
    int64_t start = 0;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&p->gen, memory_order_acquire) != seen)
            return true;
        cpu_relax();
        if (i % 64 == 0) {
            int64_t t = now_ns();
            if (!start)
                start = t;
            else if (t - start >= DTL_POOL_SPIN_NS)
                return false;
            else if (t - start >= DTL_POOL_SPIN_NS / 16)
                sched_yield();
        }
    }
}

/* Claims and runs chunks of the current loop until none is left. */
static void run_chunks(dtl_pool *p)
{
    for (;;) {
        pthread_mutex_lock(&p->mu);
        if (p->next >= p->nchunks) {
            pthread_mutex_unlock(&p->mu);
            return;
        }
        int64_t i = p->next++, n = p->n, nch = p->nchunks;
        dtl_pool_fn fn = p->fn;
        void *ctx = p->ctx;
        pthread_mutex_unlock(&p->mu);

        int64_t q = n / nch, r = n % nch;
        int64_t begin = i * q + (i < r ? i : r);
        fn(ctx, begin, begin + q + (i < r));
        if (atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel) + 1 == nch) {
            pthread_mutex_lock(&p->mu);
            if (p->caller_waiting)
                pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *worker_main(void *arg)
{
    dtl_pool *p = arg;
    unsigned seen = atomic_load_explicit(&p->gen, memory_order_acquire);
    for (;;) {
        if (!spin_for_gen(p, seen)) {
            pthread_mutex_lock(&p->mu);
            p->sleepers++;
            while (atomic_load_explicit(&p->gen, memory_order_relaxed) == seen && !p->stop)
                pthread_cond_wait(&p->wake, &p->mu);
            p->sleepers--;
            pthread_mutex_unlock(&p->mu);
        }
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        pthread_mutex_lock(&p->mu);
        bool stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            return NULL;
        run_chunks(p);
    }
}

void dtl_pool_run(dtl_pool *p, dtl_pool_fn fn, void *ctx, int64_t n, int64_t grain)
{
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    int expected = 0;
    if (!p || p->nthreads <= 1 || n <= grain ||
        !atomic_compare_exchange_strong_explicit(&p->busy, &expected, 1, memory_order_acquire,
                                                 memory_order_relaxed)) {
        fn(ctx, 0, n);
        return;
    }
    int64_t nch = n / grain, most = (int64_t)p->nthreads * CHUNKS_PER_THREAD;
    if (nch > most)
        nch = most;

    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->nchunks = nch;
    p->next = 0;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    bool wake = p->sleepers > 0;
    pthread_mutex_unlock(&p->mu);
    if (wake)
        pthread_cond_broadcast(&p->wake);

    run_chunks(p);

    int64_t start = 0;
    for (unsigned i = 1; atomic_load_explicit(&p->done, memory_order_acquire) != nch; i++) {
        cpu_relax();
        if (i % 64 == 0) {
            int64_t t = now_ns();
            if (!start) {
                start = t;
            } else if (t - start < DTL_POOL_SPIN_NS) {
                if (t - start >= DTL_POOL_SPIN_NS / 16)
                    sched_yield();
            } else {
                pthread_mutex_lock(&p->mu);
                p->caller_waiting = true;
                while (atomic_load_explicit(&p->done, memory_order_acquire) != nch)
                    pthread_cond_wait(&p->done_cv, &p->mu);
                p->caller_waiting = false;
                pthread_mutex_unlock(&p->mu);
                break;
            }
        }
    }
    atomic_store_explicit(&p->busy, 0, memory_order_release);
}

int dtl_pool_cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)(n < DTL_POOL_MAX_THREADS ? n : DTL_POOL_MAX_THREADS) : 1;
}

int dtl_pool_threads_for(const char *env)
{
    if (env && *env) {
        long v = 0;
        const char *s = env;
        for (; *s >= '0' && *s <= '9' && v <= DTL_POOL_MAX_THREADS; s++)
            v = v * 10 + (*s - '0');
        if (!*s && v >= 1 && v <= DTL_POOL_MAX_THREADS)
            return (int)v;
    }
    int n = dtl_pool_cpu_count();
    return n < DTL_POOL_MAX_THREADS ? n : DTL_POOL_MAX_THREADS;
}

/* Stops and joins the started workers; frees p. */
static void pool_destroy(dtl_pool *p)
{
    if (p->nworkers > 0) {
        pthread_mutex_lock(&p->mu);
        p->stop = true;
        atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
        pthread_mutex_unlock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        for (int i = 0; i < p->nworkers; i++)
            pthread_join(p->workers[i], NULL);
    }
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

dtl_pool *dtl_pool_new(int nthreads, dtl_err *err)
{
    if (nthreads > DTL_POOL_MAX_THREADS) {
        dtl_err_set(err, DTL_ERR_USAGE, "thread pool: %d threads asked for, at most %d", nthreads,
                    DTL_POOL_MAX_THREADS);
        return NULL;
    }
    if (nthreads <= 0)
        nthreads = dtl_pool_threads_for(getenv("DTL_THREADS"));
    dtl_pool *p = calloc(1, sizeof *p);
    pthread_t *workers = nthreads > 1 ? calloc((size_t)nthreads - 1, sizeof *workers) : NULL;
    if (!p || (nthreads > 1 && !workers)) {
        free(p);
        free(workers);
        dtl_err_set(err, DTL_ERR_NOMEM, "thread pool: out of memory");
        return NULL;
    }
    p->nthreads = nthreads;
    p->workers = workers;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->busy, 0);
    if (nthreads == 1)
        return p;

    /* Workers block every signal (they inherit the mask), so signals reach the program's own
     * threads; their stacks hold GEMM's packing buffers. */
    pthread_attr_t attr;
    size_t stack = 0;
    pthread_attr_init(&attr);
    if (pthread_attr_getstacksize(&attr, &stack) == 0 && stack < MIN_STACK_BYTES)
        pthread_attr_setstacksize(&attr, MIN_STACK_BYTES);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = 0;
    for (int i = 0; i < nthreads - 1; i++) {
        rc = pthread_create(&p->workers[i], &attr, worker_main, p);
        if (rc != 0)
            break;
        p->nworkers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pool_destroy(p);
        dtl_err_set(err, DTL_ERR_NOMEM, "thread pool: cannot start %d threads: %s", nthreads - 1,
                    strerror(rc));
        return NULL;
    }
    return p;
}

void dtl_pool_free(dtl_pool *p)
{
    if (p)
        pool_destroy(p);
}

int dtl_pool_size(const dtl_pool *p)
{
    return p ? p->nthreads : 1;
}

/* The shared pool: written once under pthread_once, read-only afterwards. */
static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static dtl_pool *default_pool;
static dtl_pool serial_pool = {.nthreads = 1}; /* when even a 1-thread pool cannot be had */

static void default_init(void)
{
    dtl_err err;
    default_pool = dtl_pool_new(0, &err);
    if (!default_pool)
        default_pool = dtl_pool_new(1, &err);
    if (!default_pool)
        default_pool = &serial_pool;
}

dtl_pool *dtl_pool_default(void)
{
    pthread_once(&default_once, default_init);
    return default_pool;
}
