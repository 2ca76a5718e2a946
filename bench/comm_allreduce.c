/* bench/comm_allreduce.c — allreduce bandwidth of runtime/comm (or, built with -DDTL_BENCH_MPI
 * by bench/comm.sh through mpicc, of MPI_Allreduce: the same loop, for a side-by-side table).
 *
 * One rank of the benchmark: started N times (bench/comm.sh sets DTL_RANK/DTL_WORLD_SIZE/
 * DTL_COORDINATOR, or mpirun does). For each size (f32 sum, in place) it warms up, then runs
 * as many iterations as fit in about DTL_BENCH_SECONDS (default 0.3), and prints on rank 0 the
 * time per allreduce (the slowest rank's), the algorithm bandwidth (bytes / time) and the bus
 * bandwidth (algbw * 2(n-1)/n, what each link carries in a ring: comparable across n).
 * Sizes: 4 KB up to DTL_BENCH_MAX_MB (default 64) MB, times 16.
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
static void fail(const dtl_err *e)
{
    fprintf(stderr, "rank %d: %s\n", rank, e->msg);
    exit(1);
}
static void setup(ctx *c, int *argc, char ***argv)
{
    (void)argc, (void)argv;
    dtl_err err;
    dtl_comm_env env;
    if (!dtl_comm_env_from_environ(&env, &err) || !(*c = dtl_comm_init(&env, NULL, &err)))
        fail(&err);
    rank = dtl_comm_rank(*c);
    size = dtl_comm_size(*c);
}
static void allreduce(ctx *c, float *buf, size_t n)
{
    dtl_err err;
    if (!dtl_comm_allreduce(*c, buf, n, DTL_DTYPE_F32, DTL_COMM_SUM, "bench", &err))
        fail(&err);
}
static double max_over_ranks(ctx *c, double x)
{
    dtl_err err;
    if (!dtl_comm_allreduce(*c, &x, 1, DTL_DTYPE_F64, DTL_COMM_MAX, "bench", &err))
        fail(&err);
    return x;
}
static void barrier(ctx *c)
{
    dtl_err err;
    if (!dtl_comm_barrier(*c, "bench", &err))
        fail(&err);
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
        fail(&err);
    dtl_comm_free(*c);
}
#endif

int main(int argc, char **argv)
{
    ctx c;
    setup(&c, &argc, &argv);
    const char *s = getenv("DTL_BENCH_SECONDS"), *m = getenv("DTL_BENCH_MAX_MB");
    double budget = s ? atof(s) : 0.3;
    size_t max = (size_t)(m ? atof(m) : 64) << 20;
    float *buf = calloc(max / 4 + 1, sizeof *buf);
    if (!buf)
        return 1;
    if (rank == 0)
        printf("# %s, %d ranks\n# %10s %12s %12s %12s\n", name(&c), size, "bytes", "us",
               "algbw GB/s", "busbw GB/s");
    for (size_t bytes = 4096; bytes <= max; bytes *= 16) {
        size_t n = bytes / 4;
        for (int i = 0; i < 3; i++)
            allreduce(&c, buf, n);
        /* Iterations: as many as the first one says fit in the budget (the same on all). */
        barrier(&c);
        double t0 = now();
        allreduce(&c, buf, n);
        double one = max_over_ranks(&c, now() - t0);
        int iters = one > 0 ? (int)(budget / one) : 1000;
        iters = iters < 3 ? 3 : iters > 2000 ? 2000 : iters;
        barrier(&c);
        t0 = now();
        for (int i = 0; i < iters; i++)
            allreduce(&c, buf, n);
        double t = max_over_ranks(&c, now() - t0) / iters;
        double algbw = (double)bytes / t / 1e9;
        if (rank == 0)
            printf("  %10zu %12.1f %12.3f %12.3f\n", bytes, t * 1e6, algbw,
                   algbw * 2.0 * (size - 1) / size);
    }
    free(buf);
    teardown(&c);
    return 0;
}
