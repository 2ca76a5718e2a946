/* bench/comm_allreduce.c — allreduce time and bandwidth of runtime/comm (or, built with
 * -DDTL_BENCH_MPI by bench/comm.sh through mpicc, of MPI_Allreduce: the same loop, for a
 * side-by-side table).
 *
 * One rank of the benchmark: started N times (bench/comm.sh sets DTL_RANK/DTL_WORLD_SIZE/
 * DTL_COORDINATOR, or mpirun does). For each size (f32 sum, in place, one buffer allocated
 * and filled once for all sizes, the same in both builds) it warms up (3 calls, then about a
 * tenth of the budget), then takes DTL_BENCH_SAMPLES (default 5) samples: a barrier, k calls,
 * the time of the slowest rank divided by k, with k chosen from the warm-up so that all samples
 * together take about DTL_BENCH_SECONDS (default 0.5; k is agreed by all ranks). It prints, on
 * rank 0, one line per size with the MEDIAN sample: bytes, microseconds per allreduce, the
 * algorithm bandwidth (bytes / time) and the bus bandwidth (algbw * 2(n-1)/n, what each link
 * carries in a ring: comparable across n), then the fastest and slowest sample in µs.
 * Sizes: 4 KiB up to DTL_BENCH_MAX_MB (default 256) MiB, times 16; DTL_BENCH_MIN_KB raises the
 * smallest.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef DTL_BENCH_MPI
#include <mpi.h>
#else
#include "../runtime/comm/comm.h"
#endif

#define MAX_SAMPLES 31

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#ifdef DTL_BENCH_MPI
typedef int ctx;
static int rank, size;
static void setup(ctx *c, int *argc, char ***argv)
{
    (void)c;
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
}
static void allreduce(ctx *c, float *buf, size_t n)
{
    (void)c;
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}
static double max_over_ranks(ctx *c, double x)
{
    (void)c;
    double m;
    MPI_Allreduce(&x, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return m;
}
static void barrier(ctx *c)
{
    (void)c;
    MPI_Barrier(MPI_COMM_WORLD);
}
static const char *name(ctx *c)
{
    (void)c;
    return "MPI_Allreduce";
}
static void teardown(ctx *c)
{
    (void)c;
    MPI_Finalize();
}
#else
typedef dtl_comm *ctx;
static int rank, size;
/* Prints the error, tells the other ranks and frees the world (so that shm leaves no region
 * in /dev/shm behind), exits. */
static void fail(ctx *c, const dtl_err *e)
{
    fprintf(stderr, "rank %d: %s\n", rank, e->msg);
    dtl_comm_abort(c ? *c : NULL, e->msg);
    exit(1);
}
static void setup(ctx *c, int *argc, char ***argv)
{
    (void)argc, (void)argv;
    dtl_err err;
    dtl_comm_env env;
    *c = NULL;
    if (!dtl_comm_env_from_environ(&env, &err) || !(*c = dtl_comm_init(&env, NULL, &err)))
        fail(c, &err);
    rank = dtl_comm_rank(*c);
    size = dtl_comm_size(*c);
}
static void allreduce(ctx *c, float *buf, size_t n)
{
    /* DTL_BENCH_ALGO=ring or rd forces an algorithm (default: dtl's choice). */
    const char *a = getenv("DTL_BENCH_ALGO");
    dtl_comm_algo algo = !a ? DTL_COMM_ALGO_AUTO
                         : strcmp(a, "ring") == 0 ? DTL_COMM_ALGO_RING
                         : strcmp(a, "rd") == 0   ? DTL_COMM_ALGO_RD
                                                  : DTL_COMM_ALGO_AUTO;
    dtl_err err;
    if (!dtl_comm_allreduce_algo(*c, buf, n, DTL_DTYPE_F32, DTL_COMM_SUM, algo, "bench", &err))
        fail(c, &err);
}
static double max_over_ranks(ctx *c, double x)
{
    dtl_err err;
    if (!dtl_comm_allreduce(*c, &x, 1, DTL_DTYPE_F64, DTL_COMM_MAX, "bench", &err))
        fail(c, &err);
    return x;
}
static void barrier(ctx *c)
{
    dtl_err err;
    if (!dtl_comm_barrier(*c, "bench", &err))
        fail(c, &err);
}
static char desc[128];
static const char *name(ctx *c)
{
    snprintf(desc, sizeof desc, "dtl_comm_allreduce (%s on %s)", dtl_comm_provider(*c),
             dtl_comm_domain(*c));
    return desc;
}
static void teardown(ctx *c)
{
    dtl_err err;
    if (!dtl_comm_finalize(*c, &err))
        fail(c, &err);
    dtl_comm_free(*c);
}
#endif

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double env_num(const char *k, double dflt)
{
    const char *s = getenv(k);
    return s && *s ? atof(s) : dflt;
}

int main(int argc, char **argv)
{
    ctx c;
    setup(&c, &argc, &argv);
    double budget = env_num("DTL_BENCH_SECONDS", 0.5);
    int samples = (int)env_num("DTL_BENCH_SAMPLES", 5);
    samples = samples < 1 ? 1 : samples > MAX_SAMPLES ? MAX_SAMPLES : samples;
    size_t max = (size_t)(env_num("DTL_BENCH_MAX_MB", 256) * 1048576.0);
    size_t min = (size_t)(env_num("DTL_BENCH_MIN_KB", 4) * 1024.0);
    float *buf = malloc(max / 4 * sizeof *buf + sizeof *buf);
    if (!buf)
        return 1;
    /* Small values whose sums stay normal for thousands of calls (no denormals, no inf). */
    for (size_t i = 0; i < max / 4; i++)
        buf[i] = (float)(i % 7) * 1e-6f;
    if (rank == 0)
        printf("# %s, %d ranks, median of %d samples\n# %10s %12s %12s %12s %12s %12s\n",
               name(&c), size, samples, "bytes", "us", "algbw GB/s", "busbw GB/s", "min us",
               "max us");
    for (size_t bytes = min; bytes <= max; bytes *= 16) {
        size_t n = bytes / 4;
        /* Warm-up (connections, page faults): 3 calls, then as many more as take about a
         * tenth of the budget; every count is agreed by all ranks (they must issue the same
         * calls), from the slowest rank's time. */
        double one = 0;
        for (int i = 0; i < 3; i++) {
            double t0 = now();
            allreduce(&c, buf, n);
            one = now() - t0;
        }
        one = max_over_ranks(&c, one);
        int w = one > 0 ? (int)(budget / 10 / one) : 100;
        w = w > 1000 ? 1000 : w;
        double t0 = now();
        for (int i = 0; i < w; i++)
            allreduce(&c, buf, n);
        if (w > 0)
            one = max_over_ranks(&c, (now() - t0) / w);
        /* Calls per sample, so that all samples take about the budget. */
        int k = one > 0 ? (int)(budget / samples / one) : 1000;
        k = k < 1 ? 1 : k > 5000 ? 5000 : k;
        double t[MAX_SAMPLES];
        for (int s = 0; s < samples; s++) {
            barrier(&c);
            double t0 = now();
            for (int i = 0; i < k; i++)
                allreduce(&c, buf, n);
            t[s] = max_over_ranks(&c, now() - t0) / k;
        }
        qsort(t, (size_t)samples, sizeof *t, cmp_double);
        double med = samples % 2 ? t[samples / 2] : 0.5 * (t[samples / 2 - 1] + t[samples / 2]);
        double algbw = (double)bytes / med / 1e9;
        if (rank == 0) {
            printf("  %10zu %12.1f %12.3f %12.3f %12.1f %12.1f\n", bytes, med * 1e6, algbw,
                   algbw * 2.0 * (size - 1) / size, t[0] * 1e6, t[samples - 1] * 1e6);
            fflush(stdout);
        }
    }
    free(buf);
    teardown(&c);
    return 0;
}
