/* tests/unit/comm_worker.c — one rank of a runtime/comm test; tests/comm.sh starts N of them
 * (DTL_RANK, DTL_WORLD_SIZE, DTL_COORDINATOR) and judges their exit statuses and messages.
 *
 *   comm_worker probe        exit 77 when this build has no libfabric, else 0
 *   comm_worker all          every collective against a serial reference, at many lengths, both
 *                            allreduce algorithms, f32 and f64, sum/mean/max; bitwise equality
 *                            of the results across ranks; broadcast from every root; all-gather
 *                            (also in place); reduce-scatter; barrier; send/recv order;
 *                            sub-communicators (split, nested split, color < 0); finalize
 *   comm_worker loop [N]     allreduce of N floats (default 1M) forever; prints "ready" to
 *                            stdout after the first; for the kill test
 *   comm_worker hash H       init with model hash H (hex; $COMM_TEST_HASH overrides), finalize
 *   comm_worker sigs A,B,..  init with these collective signatures ($COMM_TEST_SIGS overrides),
 *                            then finalize
 *   comm_worker sleep R S    rank R sleeps S seconds before an allreduce (a hung rank)
 *   comm_worker stuck R      rank R's second thread waits in a recv from rank 0 that never
 *                            comes and is stopped there (asleep in a signal handler, as a
 *                            thread stuck inside the provider would be); its main thread
 *                            waits for it; the others' allreduce times out
 *   comm_worker leave R      rank R frees the world without finalizing, mid-job
 *   comm_worker count        rank 0 allreduces 10 floats, the others 12 (disagreeing ranks)
 * COMM_TEST_TIMEOUT=S sets the timeout once the world is up (dtl_comm_set_timeout).
 * Exit: 0 all good; 1 a check failed or a comm error (printed as "rank R: error: …"); 77 skip.
 */
#include "../../runtime/comm/comm.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int failures;
static int me;
static dtl_comm *world;   /* aborted on the way out of an error, so shm leaves nothing behind */

#define EXPECT(cond, ...)                                                                     \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            if (failures++ < 20) {                                                            \
                fprintf(stderr, "rank %d: %s:%d: check failed: %s: ", me, __FILE__, __LINE__,  \
                        #cond);                                                               \
                fprintf(stderr, __VA_ARGS__);                                                 \
                fputc('\n', stderr);                                                          \
            }                                                                                 \
        }                                                                                     \
    } while (0)

static void die(const dtl_err *e)
{
    fprintf(stderr, "rank %d: error: %s\n", me, e->msg);
    dtl_comm_abort(world, e->msg);
    exit(1);
}

#define OK(call)                                                                              \
    do {                                                                                      \
        if (!(call))                                                                          \
            die(&err);                                                                        \
    } while (0)

/* Deterministic data: small integers (exact sums) or "random" values in [-1, 1). */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static double value(int kind, int rank, size_t i)
{
    uint64_t h = mix((uint64_t)rank * 0x9e3779b97f4a7c15ull + i + 1);
    if (kind == 0)
        return (double)((int)(h % 33) - 16);
    return (double)(h >> 11) * 0x1p-52 - 1.0;
}

static void fill(void *buf, dtl_dtype t, int kind, int rank, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double v = value(kind, rank, i);
        if (t == DTL_DTYPE_F32)
            ((float *)buf)[i] = (float)v;
        else
            ((double *)buf)[i] = v;
    }
}

static double get(const void *buf, dtl_dtype t, size_t i)
{
    return t == DTL_DTYPE_F32 ? ((const float *)buf)[i] : ((const double *)buf)[i];
}

static uint64_t fnv(const void *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
    return h;
}

/* Every rank's hash of buf must be the same: the results are bitwise identical. */
static void same_everywhere(dtl_comm *c, const void *buf, size_t bytes, const char *what)
{
    dtl_err err;
    int n = dtl_comm_size(c);
    uint64_t h = fnv(buf, bytes), *all = malloc((size_t)n * sizeof *all);
    OK(dtl_comm_allgather(c, &h, all, 1, DTL_DTYPE_I64, "same_everywhere", &err));
    for (int i = 0; i < n; i++)
        EXPECT(all[i] == h, "%s: rank %d's result differs from rank %d's", what, i,
               dtl_comm_rank(c));
    free(all);
}

static const char *opname[] = {"sum", "mean", "max"};

/* The serial reference of element i over n ranks, each rank's value as the dtype holds it. */
static double reference(dtl_dtype t, int kind, int n, size_t i, dtl_comm_op op, int *nan)
{
    double acc = 0;
    *nan = 0;
    for (int r = 0; r < n; r++) {
        double v = value(kind, r, i);
        if (t == DTL_DTYPE_F32)
            v = (float)v;
        if (op == DTL_COMM_MAX)
            acc = r == 0 || v > acc ? v : acc;
        else
            acc += v;
    }
    if (op == DTL_COMM_MEAN)
        acc = t == DTL_DTYPE_F32 ? (double)((float)acc / (float)n) : acc / n;
    return acc;
}

static void test_allreduce(dtl_comm *c, size_t count, dtl_dtype t, dtl_comm_op op,
                           dtl_comm_algo algo, int kind)
{
    dtl_err err;
    int n = dtl_comm_size(c), r = dtl_comm_rank(c);
    size_t es = dtl_dtype_size(t);
    void *buf = malloc(count * es + 1);
    fill(buf, t, kind, r, count);
    OK(dtl_comm_allreduce_algo(c, buf, count, t, op, algo, "test:allreduce", &err));
    int bad = 0;
    for (size_t i = 0; i < count; i++) {
        int nan;
        double want = reference(t, kind, n, i, op, &nan), got = get(buf, t, i);
        double tol = 0;
        if (kind == 1 && op != DTL_COMM_MAX)   /* rounding: n additions of partial sums <= n */
            tol = n * n * (t == DTL_DTYPE_F32 ? 1.2e-7 : 2.3e-16);
        if (!(fabs(got - want) <= tol) && bad++ < 3)
            EXPECT(0, "allreduce %s %s n=%zu algo=%d kind=%d: [%zu] = %.9g, want %.9g", opname[op],
                   dtl_dtype_name(t), count, (int)algo, kind, i, got, want);
    }
    char what[96];
    snprintf(what, sizeof what, "allreduce %s %s[%zu] algo %d", opname[op], dtl_dtype_name(t),
             count, (int)algo);
    same_everywhere(c, buf, count * es, what);
    free(buf);
}

static void test_max_special(dtl_comm *c)
{
    dtl_err err;
    int n = dtl_comm_size(c), r = dtl_comm_rank(c);
    for (int algo = DTL_COMM_ALGO_RING; algo <= DTL_COMM_ALGO_RD; algo++) {
        float x[4] = {r == n - 1 ? NAN : (float)r, 1.0f, r % 2 ? -0.0f : 0.0f, -(float)r};
        OK(dtl_comm_allreduce_algo(c, x, 4, DTL_DTYPE_F32, DTL_COMM_MAX, (dtl_comm_algo)algo,
                                   "test:max", &err));
        EXPECT(isnan(x[0]), "max with a NaN on rank %d gave %g", n - 1, x[0]);
        EXPECT(x[2] == 0 && !signbit(x[2]), "max(+0, -0) = %g (sign %d)", x[2], !!signbit(x[2]));
        EXPECT(x[3] == 0, "max of -r = %g", x[3]);
        same_everywhere(c, x, sizeof x, "max special values");
    }
}

static void test_broadcast(dtl_comm *c, size_t count)
{
    dtl_err err;
    int n = dtl_comm_size(c), r = dtl_comm_rank(c);
    double *buf = malloc(count * sizeof *buf + 1);
    for (int root = 0; root < n; root++) {
        fill(buf, DTL_DTYPE_F64, 1, r == root ? 1000 + root : r, count);
        OK(dtl_comm_broadcast(c, buf, count, DTL_DTYPE_F64, root, "test:broadcast", &err));
        for (size_t i = 0; i < count; i++)
            if (buf[i] != value(1, 1000 + root, i)) {
                EXPECT(0, "broadcast[%zu] from root %d: %g", i, root, buf[i]);
                break;
            }
    }
    free(buf);
}

static void test_allgather(dtl_comm *c, size_t count, bool in_place)
{
    dtl_err err;
    int n = dtl_comm_size(c), r = dtl_comm_rank(c);
    float *recv = malloc((size_t)n * count * sizeof *recv + 1), *send = malloc(count * 4 + 1);
    float *mine = in_place ? recv + (size_t)r * count : send;
    fill(mine, DTL_DTYPE_F32, 1, r, count);
    OK(dtl_comm_allgather(c, mine, recv, count, DTL_DTYPE_F32, "test:allgather", &err));
    for (int q = 0; q < n; q++)
        for (size_t i = 0; i < count; i++)
            if (recv[(size_t)q * count + i] != (float)value(1, q, i)) {
                EXPECT(0, "allgather n=%zu block %d [%zu] = %g", count, q, i,
                       recv[(size_t)q * count + i]);
                q = n;
                break;
            }
    free(recv);
    free(send);
}

static void test_reduce_scatter(dtl_comm *c, size_t count, dtl_comm_op op)
{
    dtl_err err;
    int n = dtl_comm_size(c), r = dtl_comm_rank(c);
    double *send = malloc((size_t)n * count * sizeof *send + 1), *recv = malloc(count * 8 + 1);
    fill(send, DTL_DTYPE_F64, 0, r, (size_t)n * count);
    OK(dtl_comm_reduce_scatter(c, send, recv, count, DTL_DTYPE_F64, op, "test:reduce_scatter",
                               &err));
    for (size_t i = 0; i < count; i++) {
        int nan;
        double want = reference(DTL_DTYPE_F64, 0, n, (size_t)r * count + i, op, &nan);
        if (recv[i] != want) {
            EXPECT(0, "reduce_scatter %s n=%zu [%zu] = %g, want %g", opname[op], count, i, recv[i],
                   want);
            break;
        }
    }
    free(send);
    free(recv);
}

/* Rank 0 sends k messages (one large) to every other rank, which checks their order and
 * answers; non-overtaking per peer. */
static void test_p2p(dtl_comm *c)
{
    dtl_err err;
    int n = dtl_comm_size(c), r = dtl_comm_rank(c);
    size_t big = 600000;
    double *buf = malloc(big * sizeof *buf);
    if (r == 0) {
        for (int q = 1; q < n; q++)
            for (int k = 0; k < 3; k++) {
                size_t len = k == 1 ? big : 5;
                fill(buf, DTL_DTYPE_F64, 1, 100 * q + k, len);
                OK(dtl_comm_send(c, buf, len, DTL_DTYPE_F64, q, "test:send", &err));
            }
        for (int q = 1; q < n; q++) {
            OK(dtl_comm_recv(c, buf, 1, DTL_DTYPE_F64, q, "test:recv", &err));
            EXPECT(buf[0] == q * 10.0, "reply from %d: %g", q, buf[0]);
        }
    } else {
        for (int k = 0; k < 3; k++) {
            size_t len = k == 1 ? big : 5;
            OK(dtl_comm_recv(c, buf, len, DTL_DTYPE_F64, 0, "test:recv", &err));
            for (size_t i = 0; i < len; i++)
                if (buf[i] != value(1, 100 * r + k, i)) {
                    EXPECT(0, "message %d from rank 0 [%zu] = %g", k, i, buf[i]);
                    break;
                }
        }
        buf[0] = r * 10.0;
        OK(dtl_comm_send(c, buf, 1, DTL_DTYPE_F64, 0, "test:send", &err));
    }
    dtl_err e2;
    EXPECT(!dtl_comm_send(c, buf, 1, DTL_DTYPE_F64, r, NULL, &e2) && e2.kind == DTL_ERR_USAGE,
           "a send to oneself is a usage error");
    free(buf);
}

static void test_split(dtl_comm *w)
{
    dtl_err err;
    int n = dtl_comm_size(w), r = dtl_comm_rank(w);
    dtl_comm *half, *none, *nested;
    /* Color by parity, reversed order (key = -rank). */
    OK(dtl_comm_split(w, r % 2, -r, &half, &err));
    EXPECT(half != NULL, "split gave no communicator");
    int hn = (n + 1 - r % 2) / 2;
    EXPECT(dtl_comm_size(half) == hn, "half size %d, want %d", dtl_comm_size(half), hn);
    /* Reversed: the highest world rank of my parity is rank 0. */
    int hi = (n - 1) - ((n - 1 - r % 2) % 2);
    EXPECT(dtl_comm_world_rank(half, 0) == hi, "half rank 0 is world %d, want %d",
           dtl_comm_world_rank(half, 0), hi);
    EXPECT(dtl_comm_world_rank(half, dtl_comm_rank(half)) == r, "own world rank");
    double s = r;
    OK(dtl_comm_allreduce(half, &s, 1, DTL_DTYPE_F64, DTL_COMM_SUM, "test:half", &err));
    double want = 0;
    for (int q = r % 2; q < n; q += 2)
        want += q;
    EXPECT(s == want, "sum over my parity %g, want %g", s, want);
    test_broadcast(half, 1000);
    if (dtl_comm_size(half) > 1)
        test_p2p(half);
    /* Interleave with the world: ids must keep their messages apart. */
    test_allreduce(w, 5000, DTL_DTYPE_F32, DTL_COMM_SUM, DTL_COMM_ALGO_AUTO, 0);
    /* A split of the split: everyone in one group, ordered by world rank. */
    OK(dtl_comm_split(half, 7, r, &nested, &err));
    EXPECT(nested && dtl_comm_size(nested) == hn, "nested size");
    test_allreduce(nested, 70000, DTL_DTYPE_F64, DTL_COMM_MAX, DTL_COMM_ALGO_RING, 1);
    test_allgather(nested, 9, false);
    /* Only ranks 0 and 1 take part; the others get NULL. */
    OK(dtl_comm_split(w, r < 2 ? 0 : -1, 0, &none, &err));
    EXPECT((none != NULL) == (r < 2), "color < 0 gives NULL");
    if (none) {
        test_allreduce(none, 33, DTL_DTYPE_F32, DTL_COMM_MEAN, DTL_COMM_ALGO_RD, 0);
        OK(dtl_comm_barrier(none, "test:none", &err));
    }
    OK(dtl_comm_barrier(w, "test:split", &err));
    dtl_comm_free(none);
    dtl_comm_free(nested);
    dtl_comm_free(half);
}

static dtl_comm *join(const dtl_comm_opts *opts)
{
    dtl_err err;
    dtl_comm_env env;
    OK(dtl_comm_env_from_environ(&env, &err));
    me = env.rank;
    dtl_comm *c = dtl_comm_init(&env, opts, &err);
    if (!c)
        die(&err);
    const char *t = getenv("COMM_TEST_TIMEOUT");   /* after start-up: dtl_comm_set_timeout */
    if (t)
        dtl_comm_set_timeout(c, atof(t));
    return world = c;
}

static int finish(dtl_comm *c)
{
    dtl_err err;
    if (!dtl_comm_finalize(c, &err))
        die(&err);
    dtl_comm_free(c);
    world = NULL;
    if (failures) {
        fprintf(stderr, "rank %d: %d checks failed\n", me, failures);
        return 1;
    }
    printf("rank %d: ok\n", me);
    return 0;
}

static int mode_all(void)
{
    dtl_comm *c = join(NULL);
    dtl_err err;
    int n = dtl_comm_size(c);
    if (me == 0)
        printf("world %d, provider %s, domain %s\n", n, dtl_comm_provider(c), dtl_comm_domain(c));
    else   /* (tests/comm_netns.sh checks every rank's interface) */
        printf("rank %d: provider %s, domain %s\n", me, dtl_comm_provider(c), dtl_comm_domain(c));
    /* 0, 1, a prime, not divisible by n, around the algorithms' switch, several MB. */
    size_t lens[] = {0, 1, 7, (size_t)n + 1, 1031, 16411};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
        for (int algo = DTL_COMM_ALGO_RING; algo <= DTL_COMM_ALGO_RD; algo++)
            for (int t = 0; t < 2; t++) {
                dtl_dtype dt = t ? DTL_DTYPE_F64 : DTL_DTYPE_F32;
                if (lens[li] > 10000 && t)
                    continue;
                for (int op = 0; op < 3; op++)
                    test_allreduce(c, lens[li], dt, (dtl_comm_op)op, (dtl_comm_algo)algo, 0);
                test_allreduce(c, lens[li], dt, DTL_COMM_SUM, (dtl_comm_algo)algo, 1);
            }
    test_allreduce(c, (1u << 20) + 3, DTL_DTYPE_F32, DTL_COMM_SUM, DTL_COMM_ALGO_AUTO, 1);
    test_allreduce(c, (1u << 20) + 3, DTL_DTYPE_F32, DTL_COMM_MEAN, DTL_COMM_ALGO_AUTO, 0);
    test_allreduce(c, 100000, DTL_DTYPE_F64, DTL_COMM_SUM, DTL_COMM_ALGO_AUTO, 1);
    test_allreduce(c, 3, DTL_DTYPE_F32, DTL_COMM_MEAN, DTL_COMM_ALGO_AUTO, 1);
    test_max_special(c);
    size_t blens[] = {0, 1, 1000, 300007};
    for (size_t i = 0; i < 4; i++)
        test_broadcast(c, blens[i]);
    size_t glens[] = {0, 1, 13, 100003};
    for (size_t i = 0; i < 4; i++) {
        test_allgather(c, glens[i], false);
        test_allgather(c, glens[i], true);
    }
    for (size_t i = 0; i < 4; i++)
        for (int op = 0; op < 3; op++)
            test_reduce_scatter(c, glens[i] / 2, (dtl_comm_op)op);
    for (int i = 0; i < 3; i++)
        OK(dtl_comm_barrier(c, "test:barrier", &err));
    if (n > 1)
        test_p2p(c);
    test_split(c);
    /* Usage errors leave the world usable. */
    int64_t k = 1;
    dtl_err e2;
    EXPECT(!dtl_comm_allreduce(c, &k, 1, DTL_DTYPE_I64, DTL_COMM_SUM, NULL, &e2) &&
               e2.kind == DTL_ERR_USAGE && strstr(e2.msg, "f32 or f64"),
           "allreduce of i64 is a usage error: %s", e2.msg);
    EXPECT(!dtl_comm_broadcast(c, &k, 1, DTL_DTYPE_I64, n, NULL, &e2) && e2.kind == DTL_ERR_USAGE,
           "broadcast from a root out of range is a usage error");
    EXPECT(dtl_comm_check(c, &e2), "the world is fine: %s", e2.msg);
    test_allreduce(c, 10, DTL_DTYPE_F32, DTL_COMM_SUM, DTL_COMM_ALGO_AUTO, 0);
    return finish(c);
}

static int mode_loop(size_t count)
{
    dtl_comm *c = join(NULL);
    dtl_err err;
    float *buf = calloc(count, sizeof *buf);
    for (long it = 0; dtl_comm_allreduce(c, buf, count, DTL_DTYPE_F32, DTL_COMM_SUM,
                                         "loop.dtl:7", &err); it++)
        if (it == 0) {
            printf("ready\n");
            fflush(stdout);
        }
    die(&err);
    return 1;
}

/* stuck: the signal handler that keeps a thread where it was for a minute. */
static void stall(int sig)
{
    (void)sig;
    struct timespec t = {60, 0};
    nanosleep(&t, NULL);
}

static void *stuck_recv(void *arg)
{
    static float y[1000];
    dtl_err e;
    dtl_comm_recv(arg, y, 1000, DTL_DTYPE_F32, 0, "stuck.dtl:7", &e);
    return NULL;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "";
    dtl_err err;
    if (strcmp(mode, "probe") == 0) {
#ifdef HAVE_LIBFABRIC
        return 0;
#else
        puts("this build has no libfabric");
        return 77;
#endif
    }
    if (strcmp(mode, "all") == 0)
        return mode_all();
    if (strcmp(mode, "loop") == 0)
        return mode_loop(argc > 2 ? (size_t)atol(argv[2]) : (size_t)1 << 20);
    if (strcmp(mode, "hash") == 0 && argc > 2) {
        const char *h = getenv("COMM_TEST_HASH");   /* per-rank override (tests/comm_lib.sh) */
        dtl_comm_opts o = {strtoull(h ? h : argv[2], NULL, 16), NULL, 0, NULL, 0};
        return finish(join(&o));
    }
    if (strcmp(mode, "sigs") == 0 && argc > 2) {
        const char *sigs[16];
        size_t n = 0;
        const char *l = getenv("COMM_TEST_SIGS");
        char *list = strdup(l ? l : argv[2]);
        for (char *s = strtok(list, ","); s && n < 16; s = strtok(NULL, ","))
            sigs[n++] = s;
        dtl_comm_opts o = {42, sigs, n, NULL, 0};
        int rc = finish(join(&o));
        free(list);
        return rc;
    }
    if (strcmp(mode, "sleep") == 0 && argc > 3) {
        dtl_comm *c = join(NULL);
        float x[1000] = {0};
        OK(dtl_comm_allreduce(c, x, 1000, DTL_DTYPE_F32, DTL_COMM_SUM, "warmup", &err));
        if (me == atoi(argv[2])) {
            struct timespec t = {0, (long)(atof(argv[3]) * 1e9)};
            while (t.tv_nsec >= 1000000000L)
                t.tv_sec++, t.tv_nsec -= 1000000000L;
            nanosleep(&t, NULL);
        }
        OK(dtl_comm_allreduce(c, x, 1000, DTL_DTYPE_F32, DTL_COMM_SUM, "sleepy.dtl:3", &err));
        return finish(c);
    }
    if (strcmp(mode, "stuck") == 0 && argc > 2) {
        dtl_comm *c = join(NULL);
        float x[1000] = {0};
        OK(dtl_comm_allreduce(c, x, 1000, DTL_DTYPE_F32, DTL_COMM_SUM, "warmup", &err));
        if (me == atoi(argv[2])) {
            signal(SIGUSR1, stall);
            pthread_t t;
            if (pthread_create(&t, NULL, stuck_recv, c) != 0)
                return 1;
            struct timespec d = {0, 200000000L};
            nanosleep(&d, NULL);
            pthread_kill(t, SIGUSR1);
            pthread_join(t, NULL);
            return 1;
        }
        OK(dtl_comm_allreduce(c, x, 1000, DTL_DTYPE_F32, DTL_COMM_SUM, "sleepy.dtl:3", &err));
        return finish(c);
    }
    if (strcmp(mode, "leave") == 0 && argc > 2) {
        dtl_comm *c = join(NULL);
        OK(dtl_comm_barrier(c, NULL, &err));
        if (me == atoi(argv[2])) {
            dtl_comm_free(c);
            world = NULL;
            return 0;
        }
        float x[100000] = {0};
        OK(dtl_comm_allreduce(c, x, 100000, DTL_DTYPE_F32, DTL_COMM_SUM, "left.dtl:9", &err));
        return finish(c);
    }
    if (strcmp(mode, "count") == 0) {
        dtl_comm *c = join(NULL);
        float x[12] = {0};
        OK(dtl_comm_allreduce(c, x, me == 0 ? 10 : 12, DTL_DTYPE_F32, DTL_COMM_SUM, "count.dtl:1",
                              &err));
        return finish(c);
    }
    fprintf(stderr, "usage: comm_worker probe|all|loop [N]|hash H|sigs A,B|sleep R S|leave R|"
                    "count\n");
    return 2;
}
