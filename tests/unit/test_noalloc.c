/* tests/unit/test_noalloc.c — a training step allocates nothing and starts no thread, on every
 * backend (the reference, and each backend under test: tests/unit/backend_testlib.h).
 *
 * The test binary interposes the whole malloc family (malloc, calloc, realloc, free,
 * posix_memalign, aligned_alloc, memalign, valloc, pvalloc — glibc's "replacing malloc"
 * rules: ELF symbol interposition, so calls from libc itself and from shared libraries such
 * as LLVM's are seen too) and forwards to glibc's __libc_* functions, counting every call;
 * it interposes pthread_create likewise (forwarding through dlsym(RTLD_NEXT)). Only dtl's
 * threads count: the program's and those started by a dtl routine; a thread whose start
 * routine lies in another library (CUDA's runtime and driver start their own, which allocate
 * whenever they like) is "foreign" and its allocations and threads are not counted. For each
 * backend it plans the step, eval and infer graphs of examples/mnist_mlp.dtl at batch 32,
 * runs 2 warm-up steps (lazy one-time work such as a thread pool starting is allowed there),
 * then asserts that 50 steps (and a few eval and infer runs) make zero allocations and
 * create zero threads, and that the process has as many threads after them as before
 * (/proc/self/task). A sanity check first shows that the counting works.
 *
 * Under AddressSanitizer (whose own malloc this would fight) and under valgrind the test
 * skips (exit 77) with a message.
 */
#define _GNU_SOURCE 1

#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend_testlib.h"
#include "unit.h"

/* Under AddressSanitizer, MemorySanitizer or ThreadSanitizer the sanitizer's allocator stands
 * where the interposers would count: the test is skipped, saying so. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DTL_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer) || \
    __has_feature(thread_sanitizer)
#define DTL_TEST_SANITIZED 1
#endif
#endif


#define WARMUP 2
#define STEPS 50
#define EVALS 5

#ifndef DTL_TEST_SANITIZED

/* ---- the interposers --------------------------------------------------------------------- */

static atomic_long n_alloc, n_free, n_threads;
static _Thread_local bool foreign;   /* this thread is another library's (see above) */

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t align, size_t n);

static void count_alloc(void)
{
    if (!foreign)
        atomic_fetch_add_explicit(&n_alloc, 1, memory_order_relaxed);
}

void *malloc(size_t n)
{
    count_alloc();
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    count_alloc();
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    count_alloc();
    return __libc_realloc(p, n);
}

void free(void *p)
{
    if (p && !foreign)
        atomic_fetch_add_explicit(&n_free, 1, memory_order_relaxed);
    __libc_free(p);
}

void *memalign(size_t align, size_t n);
void *memalign(size_t align, size_t n)
{
    count_alloc();
    return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    count_alloc();
    return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    count_alloc();
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return 22;   /* EINVAL */
    void *p = __libc_memalign(align, n);
    if (!p && n)
        return 12;   /* ENOMEM */
    *out = p;
    return 0;
}

void *valloc(size_t n);
void *valloc(size_t n)
{
    count_alloc();
    return __libc_memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

void *pvalloc(size_t n);
void *pvalloc(size_t n)
{
    count_alloc();
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return __libc_memalign(page, (n + page - 1) / page * page);
}

typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

/* Whether code at fn is dtl's: in this program, or in a library named libdtl* (the CUDA
 * plugin). */
static bool ours(const void *fn)
{
    static const void *exe;
    Dl_info me, at;
    if (!exe && dladdr((const void *)&ours, &me))
        exe = me.dli_fbase;
    if (!dladdr(fn, &at) || at.dli_fbase == exe)
        return true;
    const char *base = at.dli_fname ? strrchr(at.dli_fname, '/') : NULL;
    base = base ? base + 1 : at.dli_fname;
    return base && strncmp(base, "libdtl", 6) == 0;
}

typedef struct foreign_start {
    void *(*fn)(void *);
    void *arg;
} foreign_start;

static void *run_foreign(void *vs)
{
    foreign = true;
    foreign_start s = *(foreign_start *)vs;
    __libc_free(vs);
    return s.fn(s.arg);
}

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    static pthread_create_fn real;
    if (!real) {
        void *sym = dlsym(RTLD_NEXT, "pthread_create");
        memcpy(&real, &sym, sizeof real);
    }
    if (!real)
        return 11;   /* EAGAIN */
    if (!foreign)
        atomic_fetch_add_explicit(&n_threads, 1, memory_order_relaxed);
    void *fp;
    memcpy(&fp, &fn, sizeof fp);
    if (ours(fp))
        return real(t, attr, fn, arg);
    foreign_start *s = __libc_malloc(sizeof *s);
    if (!s)
        return 11;
    s->fn = fn;
    s->arg = arg;
    int e = real(t, attr, run_foreign, s);
    if (e != 0)
        __libc_free(s);
    return e;
}

/* ---- the test ---------------------------------------------------------------------------- */

static long tasks(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* The counters work: an allocation and a thread made here are seen. */
static void test_sanity(void)
{
    void *(*volatile m)(size_t) = malloc;
    long a0 = atomic_load(&n_alloc), f0 = atomic_load(&n_free);
    void *p = m(24);
    free(p);
    CHECK(atomic_load(&n_alloc) == a0 + 1 && atomic_load(&n_free) == f0 + 1);
    /* libc's own allocation is seen too. Through a volatile pointer: clang (14) knows strdup
     * and deletes a strdup of a literal whose result is only freed, so no malloc would run. */
    char *(*volatile dup)(const char *) = strdup;
    char *s = dup("inside libc");
    CHECK(atomic_load(&n_alloc) == a0 + 2);
    free(s);
}

static void *nothing(void *arg)
{
    return arg;
}

static void *allocate(void *arg)
{
    return malloc((size_t)arg);
}

/* Runs fn(arg) in a thread; its result in *res, the allocations counted meanwhile returned. */
static long thread_allocs(void *(*fn)(void *), void *arg, void **res)
{
    long t0 = atomic_load(&n_threads), a0 = atomic_load(&n_alloc);
    pthread_t th;
    *res = NULL;
    CHECK(pthread_create(&th, NULL, fn, arg) == 0);
    pthread_join(th, res);
    CHECK(atomic_load(&n_threads) == t0 + 1);
    return atomic_load(&n_alloc) - a0;
}

/* A thread of this program counts, with its allocations; one started by another library's
 * routine does not: libc's strdup as the start routine (it takes and returns one pointer, as
 * a start routine does: the call is the ABI's same call) allocates unseen. Starting a thread
 * may allocate by itself (glibc's thread-local storage), hence the comparison with a thread
 * that does nothing. */
static void test_sanity_thread(void)
{
    void *p;
    thread_allocs(nothing, NULL, &p);   /* (once-only work) */
    long base = thread_allocs(nothing, NULL, &p);
    long mine = thread_allocs(allocate, (void *)24, &p);
    CHECK(p && mine == base + 1);
    free(p);
    long theirs = thread_allocs((void *(*)(void *))(void (*)(void))strdup, "foreign", &p);
    CHECK(p && strcmp(p, "foreign") == 0 && theirs == base);
    free(p);
}

typedef struct counts {
    long alloc, free, threads, tasks;
} counts;

static counts now(void)
{
    return (counts){atomic_load(&n_alloc), atomic_load(&n_free), atomic_load(&n_threads), 0};
}

static void test_backend(const bt_backend *b, const dtl_lowered *low)
{
    dtl_err err = {0};
    dtl_store *st = dtl_store_new(7);
    dtl_plan *step = dtl_plan_new(b->be, &low->step, st, &b->opts, &err);
    dtl_plan *eval = step ? dtl_plan_new(b->be, &low->eval, st, &b->opts, &err) : NULL;
    dtl_plan *infer = eval ? dtl_plan_new(b->be, &low->infer, st, &b->opts, &err) : NULL;
    if (!infer) {
        fprintf(stderr, "%s: cannot plan the MLP: %s\n", b->name, err.msg);
        CHECK(!"plans");
        dtl_plan_free(step);
        dtl_plan_free(eval);
        dtl_store_free(st);
        return;
    }
    bt_batch batch;
    CHECK(bt_batch_init(&batch, &low->step, 10));
    bool ok = true;
    int64_t k = 0;
    for (; ok && k < WARMUP; k++) {
        bt_batch_fill(&batch, 11, (uint64_t)k, k + 1);
        ok = dtl_plan_run(step, batch.in, batch.nin, &err) &&
             dtl_plan_run(eval, batch.in, batch.nin, &err) &&
             dtl_plan_run(infer, batch.in, batch.nin, &err);
    }
    long tasks0 = tasks();
    counts c0 = now();
    for (; ok && k < WARMUP + STEPS; k++) {
        bt_batch_fill(&batch, 11, (uint64_t)k, k + 1);
        ok = dtl_plan_run(step, batch.in, batch.nin, &err);
    }
    counts c1 = now();
    for (int e = 0; ok && e < EVALS; e++)
        ok = dtl_plan_run(eval, batch.in, batch.nin, &err) &&
             dtl_plan_run(infer, batch.in, batch.nin, &err);
    counts c2 = now();
    long tasks1 = tasks();
    if (!ok)
        fprintf(stderr, "%s: a run failed: %s\n", b->name, err.msg);
    CHECK(ok);
    dtl_tensor loss;
    CHECK(dtl_plan_output(step, "loss", &loss, &err));
    printf("%-12s %d steps: %ld allocations, %ld frees, %ld threads created; %d eval+infer: "
           "%ld allocations, %ld frees, %ld threads; tasks %ld -> %ld\n",
           b->name, STEPS, c1.alloc - c0.alloc, c1.free - c0.free, c1.threads - c0.threads,
           EVALS, c2.alloc - c1.alloc, c2.free - c1.free, c2.threads - c1.threads, tasks0,
           tasks1);
    CHECK(c1.alloc == c0.alloc);
    CHECK(c1.free == c0.free);
    CHECK(c1.threads == c0.threads);
    CHECK(c2.alloc == c1.alloc);
    CHECK(c2.free == c1.free);
    CHECK(c2.threads == c1.threads);
    CHECK(tasks0 > 0 && tasks1 == tasks0);
    bt_batch_free(&batch);
    dtl_plan_free(infer);
    dtl_plan_free(eval);
    dtl_plan_free(step);
    dtl_store_free(st);
}

int main(void)
{
    const char *pre = getenv("LD_PRELOAD");
    if (pre && (strstr(pre, "vgpreload") || strstr(pre, "valgrind"))) {
        printf("test_noalloc: skipped under valgrind (it replaces malloc itself)\n");
        return 77;
    }
    test_sanity();
    test_sanity_thread();
    if (check_failures) {
        fprintf(stderr, "test_noalloc: the allocation counters do not work in this build\n");
        CHECK_DONE();
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/examples/mnist_mlp.dtl", bt_srcdir());
    dtl_lower_opts lo = {.batch = 32};
    bt_model m;
    if (!bt_model_load(&m, path, NULL, &lo)) {
        CHECK(!"examples/mnist_mlp.dtl loads");
        CHECK_DONE();
    }
    static const bt_backend ref = {"ref", &dtl_backend_ref, {0}};
    test_backend(&ref, &m.low);
    size_t nb;
    const bt_backend *bes = bt_backends(&nb);
    for (size_t i = 0; i < nb; i++)
        test_backend(&bes[i], &m.low);
    bt_model_free(&m);
    CHECK_DONE();
}

#else

int main(void)
{
    (void)check_failures, (void)check_count;
    printf("test_noalloc: skipped under a sanitizer (it replaces malloc, which the test "
           "interposes)\n");
    return 77;
}

#endif
