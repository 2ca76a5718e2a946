/* tests/unit/test_pool.c — runtime/pool: every index of [0, n) covered exactly once for many
 * n, grain and thread counts, ranges of at least grain, serial cases on the caller's thread,
 * nested and concurrent calls, workers that really take part (and wake from sleep), DTL_THREADS
 * parsing, no thread created by a run (counted in /proc/self/task) and no allocation (when
 * linked with -Wl,--wrap=malloc... and built with -DDTL_TEST_WRAP_MALLOC). */
#include "../../runtime/pool.h"
#include "unit.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef DTL_TEST_WRAP_MALLOC
static atomic_long alloc_count;
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
void *__wrap_malloc(size_t n) { alloc_count++; return __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t m) { alloc_count++; return __real_calloc(n, m); }
void *__wrap_realloc(void *p, size_t n) { alloc_count++; return __real_realloc(p, n); }
void *__wrap_aligned_alloc(size_t a, size_t n) { alloc_count++; return __real_aligned_alloc(a, n); }
#endif

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* The threads of this process, from /proc/self/task; -1 if it cannot be read. */
static int count_tasks(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* count_tasks() once it is want, or after 2 s: a joined thread's /proc entry can outlive the
 * join by a moment (the kernel wakes the joiner before it reaps the thread; seen once in
 * CI on a loaded machine). */
static int count_tasks_settled(int want)
{
    int n = count_tasks();
    for (int i = 0; i < 200 && n != want; i++) {
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        n = count_tasks();
    }
    return n;
}

/* ---- coverage ------------------------------------------------------------------------------ */

#define MAXN 20000
typedef struct cover {
    atomic_int hits[MAXN];
    atomic_int calls, short_ranges, bad_ranges, off_thread;
    int64_t n, grain;
    pthread_t caller;
    int us_per_call;              /* sleep in each call (lets the workers take part) */
    pthread_mutex_t mu;
    pthread_t threads[16];
    int nthreads;                 /* distinct threads seen (up to 16) */
} cover;

static void cover_fn(void *ctx, int64_t begin, int64_t end)
{
    cover *cv = ctx;
    cv->calls++;
    if (begin < 0 || end > cv->n || begin >= end) {
        cv->bad_ranges++;
        return;
    }
    if (end - begin < (cv->grain < 1 ? 1 : cv->grain) && !(begin == 0 && end == cv->n))
        cv->short_ranges++;
    if (!pthread_equal(pthread_self(), cv->caller))
        cv->off_thread++;
    for (int64_t i = begin; i < end; i++)
        cv->hits[i]++;
    pthread_mutex_lock(&cv->mu);
    bool known = false;
    for (int t = 0; t < cv->nthreads; t++)
        known |= pthread_equal(cv->threads[t], pthread_self()) != 0;
    if (!known && cv->nthreads < 16)
        cv->threads[cv->nthreads++] = pthread_self();
    pthread_mutex_unlock(&cv->mu);
    if (cv->us_per_call)
        sleep_us(cv->us_per_call);
}

static void cover_reset(cover *cv, int64_t n, int64_t grain)
{
    for (int64_t i = 0; i < MAXN; i++)
        atomic_store(&cv->hits[i], 0);
    cv->calls = cv->short_ranges = cv->bad_ranges = cv->off_thread = 0;
    cv->n = n;
    cv->grain = grain;
    cv->caller = pthread_self();
    cv->nthreads = 0;
}

/* Runs the loop and checks it; returns the number of calls of fn. */
static int cover_check(dtl_pool *p, cover *cv, int64_t n, int64_t grain)
{
    cover_reset(cv, n, grain);
    dtl_pool_run(p, cover_fn, cv, n, grain);
    int64_t wrong = 0;
    for (int64_t i = 0; i < MAXN; i++)
        wrong += atomic_load(&cv->hits[i]) != (i < n ? 1 : 0);
    bool serial = n <= grain || dtl_pool_size(p) == 1;
    bool ok = wrong == 0 && cv->bad_ranges == 0 && cv->short_ranges == 0 &&
              (n > 0 || cv->calls == 0) && (!serial || n <= 0 || (cv->calls == 1 && !cv->off_thread));
    if (!ok)
        fprintf(stderr, "pool of %d, n=%lld grain=%lld: %lld indexes not covered once, %d calls, "
                "%d bad, %d short, %d off the caller's thread\n", dtl_pool_size(p), (long long)n,
                (long long)grain, (long long)wrong, (int)cv->calls, (int)cv->bad_ranges,
                (int)cv->short_ranges, (int)cv->off_thread);
    CHECK(ok);
    return cv->calls;
}

static cover cv_main, cv_nested, cv_other;

static void test_coverage(void)
{
    static const int threads[] = {1, 2, 3, 4, 8};
    static const int64_t ns[] = {0, 1, 2, 3, 7, 64, 100, 1000, 12345, MAXN};
    static const int64_t grains[] = {-1, 0, 1, 3, 64, 1000, 5000};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        dtl_err err;
        dtl_pool *p = dtl_pool_new(threads[t], &err);
        CHECK(p != NULL);
        if (!p)
            continue;
        CHECK(dtl_pool_size(p) == threads[t]);
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
            for (size_t g = 0; g < sizeof grains / sizeof grains[0]; g++)
                cover_check(p, &cv_main, ns[i], grains[g]);
            cover_check(p, &cv_main, ns[i], ns[i]);     /* n == grain: serial */
            cover_check(p, &cv_main, ns[i], ns[i] + 1); /* n < grain: serial */
        }
        /* More than one range when there is work for several threads. */
        if (threads[t] > 1)
            CHECK(cover_check(p, &cv_main, 1000, 1) > 1);
        dtl_pool_free(p);
    }
    cover_check(NULL, &cv_main, 100, 1); /* no pool: serial */
}

/* ---- the workers take part, also after sleeping ---------------------------------------------- */

static void test_participation(void)
{
    dtl_err err;
    dtl_pool *p = dtl_pool_new(3, &err);
    CHECK(p != NULL);
    if (!p)
        return;
    int most = 0;
    cv_main.us_per_call = 2000; /* 2 ms per range: the workers surely wake meanwhile */
    for (int attempt = 0; attempt < 20 && most < 2; attempt++) {
        if (attempt % 2)
            sleep_us(3 * DTL_POOL_SPIN_NS / 1000 + 1000); /* the workers go to sleep */
        cover_check(p, &cv_main, 12, 1);
        most = cv_main.nthreads > most ? cv_main.nthreads : most;
    }
    cv_main.us_per_call = 0;
    CHECK(most >= 2);
    dtl_pool_free(p);
}

/* ---- nesting and concurrency ----------------------------------------------------------------- */

typedef struct outer {
    dtl_pool *p;
    atomic_int inner_bad;
    atomic_int hits[64];
} outer;

typedef struct inner {
    atomic_int calls;
    int64_t begin, end;
    pthread_t thread;
    bool other_thread;
} inner;

static void inner_fn(void *ctx, int64_t begin, int64_t end)
{
    inner *in = ctx;
    in->calls++;
    in->begin = begin;
    in->end = end;
    in->other_thread = !pthread_equal(pthread_self(), in->thread);
}

static void outer_fn(void *ctx, int64_t begin, int64_t end)
{
    outer *o = ctx;
    for (int64_t i = begin; i < end; i++) {
        o->hits[i]++;
        inner in = {.thread = pthread_self()};
        dtl_pool_run(o->p, inner_fn, &in, 1000, 1); /* nested: one serial call, this thread */
        if (in.calls != 1 || in.begin != 0 || in.end != 1000 || in.other_thread)
            o->inner_bad++;
    }
}

typedef struct racer {
    dtl_pool *p;
    cover *cv;
    int bad;
} racer;

static void *racer_main(void *arg)
{
    racer *r = arg;
    for (int i = 0; i < 200; i++) {
        cover_reset(r->cv, 5000, 7);
        dtl_pool_run(r->p, cover_fn, r->cv, 5000, 7);
        for (int64_t j = 0; j < 5000; j++)
            r->bad += atomic_load(&r->cv->hits[j]) != 1;
    }
    return NULL;
}

static void test_nesting(void)
{
    dtl_err err;
    dtl_pool *p = dtl_pool_new(3, &err);
    CHECK(p != NULL);
    if (!p)
        return;
    static outer o;
    o.p = p;
    dtl_pool_run(p, outer_fn, &o, 64, 1);
    int wrong = 0;
    for (int i = 0; i < 64; i++)
        wrong += o.hits[i] != 1;
    CHECK(wrong == 0);
    CHECK(o.inner_bad == 0);

    /* Two threads share the pool at once: one of them may run serially, both are right. */
    racer r1 = {.p = p, .cv = &cv_nested}, r2 = {.p = p, .cv = &cv_other};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, racer_main, &r2) == 0);
    racer_main(&r1);
    pthread_join(t, NULL);
    CHECK(r1.bad == 0 && r2.bad == 0);
    /* After all that, the pool still works in parallel. */
    CHECK(cover_check(p, &cv_main, 1000, 1) > 1);
    dtl_pool_free(p);
}

/* ---- threads: created once, never per run ------------------------------------------------------ */

static void nop_fn(void *ctx, int64_t begin, int64_t end)
{
    atomic_long *sum = ctx;
    *sum += end - begin;
}

static void test_no_thread_per_run(void)
{
    int before = count_tasks();
    if (before < 0) {
        printf("test_pool: /proc/self/task unreadable: thread counts not checked\n");
        return;
    }
    dtl_err err;
    dtl_pool *p = dtl_pool_new(4, &err);
    CHECK(p != NULL);
    if (!p)
        return;
    CHECK(count_tasks() == before + 3);
    atomic_long sum = 0;
#ifdef DTL_TEST_WRAP_MALLOC
    long allocs = alloc_count;
#endif
    for (int i = 0; i < 1000; i++)
        dtl_pool_run(p, nop_fn, &sum, 4096, 16);
#ifdef DTL_TEST_WRAP_MALLOC
    CHECK(alloc_count == allocs);
#else
    printf("test_pool: allocation counting not built in (needs -DDTL_TEST_WRAP_MALLOC)\n");
#endif
    CHECK(sum == 1000L * 4096);
    CHECK(count_tasks() == before + 3);
    dtl_pool_free(p);
    CHECK(count_tasks_settled(before) == before);
}

/* ---- sizes and DTL_THREADS --------------------------------------------------------------------- */

static void test_sizes(void)
{
    int cpus = dtl_pool_cpu_count();
    CHECK(cpus >= 1);
    CHECK(dtl_pool_threads_for(NULL) == cpus);
    CHECK(dtl_pool_threads_for("3") == 3);
    CHECK(dtl_pool_threads_for("1") == 1);
    CHECK(dtl_pool_threads_for("1024") == 1024);
    static const char *bad[] = {"", "0", "-2", "+3", " 4", "4 ", "4x", "abc", "2.5", "1025",
                                "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int got = dtl_pool_threads_for(bad[i]);
        if (got != cpus)
            fprintf(stderr, "DTL_THREADS='%s' gave %d threads, want the default %d\n", bad[i],
                    got, cpus);
        CHECK(got == cpus);
    }

    dtl_err err;
    setenv("DTL_THREADS", "3", 1);
    dtl_pool *p = dtl_pool_new(0, &err);
    CHECK(p && dtl_pool_size(p) == 3);
    dtl_pool_free(p);
    setenv("DTL_THREADS", "lots", 1);
    p = dtl_pool_new(-1, &err);
    CHECK(p && dtl_pool_size(p) == cpus);
    dtl_pool_free(p);
    unsetenv("DTL_THREADS");
    p = dtl_pool_new(2, &err); /* an explicit count wins over DTL_THREADS */
    CHECK(p && dtl_pool_size(p) == 2);
    dtl_pool_free(p);

    err.kind = DTL_ERR_NONE;
    CHECK(dtl_pool_new(DTL_POOL_MAX_THREADS + 1, &err) == NULL);
    CHECK(err.kind == DTL_ERR_USAGE && strstr(err.msg, "1025") != NULL);

    dtl_pool_free(NULL);
    CHECK(dtl_pool_size(NULL) == 1);
    dtl_pool *d = dtl_pool_default();
    CHECK(d != NULL && d == dtl_pool_default() && dtl_pool_size(d) >= 1);
    cover_check(d, &cv_main, 777, 5);
}

int main(void)
{
    pthread_mutex_init(&cv_main.mu, NULL);
    pthread_mutex_init(&cv_nested.mu, NULL);
    pthread_mutex_init(&cv_other.mu, NULL);
    test_sizes();
    test_coverage();
    test_participation();
    test_nesting();
    test_no_thread_per_run();
    CHECK_DONE();
}
