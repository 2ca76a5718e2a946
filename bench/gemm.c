/* bench/gemm.c — dtl_gemm_f32 against OpenBLAS's cblas_sgemm, side by side, in GFLOP/s.
 *
 *   bench/gemm [--threads 1,2] [--isa auto|portable|avx2] [--class mlp32,mlp512,square]
 *              [--min-ms N] [--clock wall|cpu]
 *
 * Shapes: the MNIST MLP's training step at batch 32 (mlp32), the 784-2048-2048-10 MLP at batch
 * 512 (mlp512) and at 256 (mlp256: one rank's half of it under `dtlc run -n 2`; not in the
 * default classes), and squares 128..1024 (square). For each thread count, every shape is timed
 * first with dtl (a pool of that many threads) and then with OpenBLAS
 * (openblas_set_num_threads), so the two never compete for the cores. A time is the best of
 * BATCHES batches of back-to-back calls, each lasting at least --min-ms (default 20) ms. The
 * last column is dtl's GFLOP/s over OpenBLAS's (> 1: dtl is faster). --clock cpu times the
 * 1-thread rows by the thread's CPU time instead of the wall clock (for a machine that other
 * processes keep busy: time spent descheduled is not counted; rows with more threads always
 * use the wall clock). The results of the two
 * libraries are compared too (a warning is printed if they disagree). Built by `make bench`
 * (OpenBLAS is optional: without it, only dtl's column is printed).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../kernels/cpu/gemm.h"

#ifdef DTL_BENCH_OPENBLAS
#include <cblas.h>
#endif

typedef struct shape {
    const char *cls, *name;
    int m, n, k;
    bool ta, tb;
} shape;

static const shape shapes[] = {
    {"mlp32", "x@w1", 32, 128, 784, false, false},
    {"mlp32", "h@w2", 32, 10, 128, false, false},
    {"mlp32", "g2@w2^T", 32, 128, 10, false, true},
    {"mlp32", "x^T@g1", 784, 128, 32, true, false},
    {"mlp32", "h^T@g2", 128, 10, 32, true, false},
    {"mlp512", "x@w1", 512, 2048, 784, false, false},
    {"mlp512", "h1@w2", 512, 2048, 2048, false, false},
    {"mlp512", "g2@w2^T", 512, 2048, 2048, false, true},
    {"mlp512", "h1^T@g2", 2048, 2048, 512, true, false},
    {"mlp512", "h2@w3", 512, 10, 2048, false, false},
    {"mlp256", "x@w1", 256, 2048, 784, false, false},
    {"mlp256", "h1@w2", 256, 2048, 2048, false, false},
    {"mlp256", "g2@w2^T", 256, 2048, 2048, false, true},
    {"mlp256", "h1^T@g2", 2048, 2048, 256, true, false},
    {"mlp256", "h2@w3", 256, 10, 2048, false, false},
    {"square", "128", 128, 128, 128, false, false},
    {"square", "256", 256, 256, 256, false, false},
    {"square", "512", 512, 512, 512, false, false},
    {"square", "1024", 1024, 1024, 1024, false, false},
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

static clockid_t clock_id = CLOCK_MONOTONIC;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(clock_id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct run {
    const shape *s;
    const float *a, *b;
    float *c;
    dtl_pool *pool;
    dtl_gemm_opts opts;
} run;

static void run_dtl(const run *r)
{
    const shape *s = r->s;
    dtl_gemm_f32_opts(&r->opts, r->pool, s->m, s->n, s->k, r->a, s->ta ? s->m : s->k, s->ta, r->b,
                      s->tb ? s->k : s->n, s->tb, r->c, s->n, NULL, NULL);
}

#ifdef DTL_BENCH_OPENBLAS
static void run_blas(const run *r)
{
    const shape *s = r->s;
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans,
                s->m, s->n, s->k, 1.0f, r->a, s->ta ? s->m : s->k, r->b, s->tb ? s->k : s->n, 0.0f,
                r->c, s->n);
}
#endif

/* Seconds per call: the best of BATCHES batches of at least min_s each (the best, because on a
 * shared machine the others are the ones another process disturbed). */
#define BATCHES 8
static double time_call(void (*fn)(const run *), const run *r, double min_s)
{
    fn(r);
    int reps = 1;
    for (;;) {
        double t0 = now_s();
        for (int i = 0; i < reps; i++)
            fn(r);
        double t = now_s() - t0;
        if (t >= min_s)
            break;
        reps = t <= 0 ? reps * 16 : (int)((double)reps * 1.3 * min_s / t) + 1;
    }
    double best = 1e30;
    for (int b = 0; b < BATCHES; b++) {
        double t0 = now_s();
        for (int i = 0; i < reps; i++)
            fn(r);
        double t = (now_s() - t0) / reps;
        if (t < best)
            best = t;
    }
    return best;
}

static bool in_list(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == 0))
            return true;
    return false;
}

int main(int argc, char **argv)
{
    const char *threads = "1,2", *classes = "mlp32,mlp512,square", *isa_name = "auto";
    double min_s = 0.02;
    bool cpu_clock = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = argv[++i];
        else if (!strcmp(argv[i], "--class") && i + 1 < argc)
            classes = argv[++i];
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc)
            isa_name = argv[++i];
        else if (!strcmp(argv[i], "--min-ms") && i + 1 < argc)
            min_s = atof(argv[++i]) / 1000;
        else if (!strcmp(argv[i], "--clock") && i + 1 < argc &&
                 (!strcmp(argv[i + 1], "cpu") || !strcmp(argv[i + 1], "wall")))
            cpu_clock = !strcmp(argv[++i], "cpu");
        else {
            fprintf(stderr, "usage: %s [--threads 1,2] [--isa auto|portable|avx2] "
                            "[--class mlp32,mlp512,square] [--min-ms N] [--clock wall|cpu]\n", argv[0]);
            return 2;
        }
    }
    dtl_gemm_opts opts = {.isa = DTL_GEMM_ISA_COUNT};
    for (int i = 0; i < DTL_GEMM_ISA_COUNT; i++)
        if (!strcmp(isa_name, dtl_gemm_isa_name((dtl_gemm_isa)i)))
            opts.isa = (dtl_gemm_isa)i;
    if (opts.isa == DTL_GEMM_ISA_COUNT) {
        fprintf(stderr, "%s: unknown ISA '%s'\n", argv[0], isa_name);
        return 2;
    }
    dtl_gemm_isa used = opts.isa == DTL_GEMM_ISA_AUTO ? dtl_gemm_isa_best() : opts.isa;
    if (!dtl_gemm_isa_supported(used)) {
        fprintf(stderr, "%s: this CPU cannot run %s\n", argv[0], isa_name);
        return 2;
    }

    size_t most = 0;
    for (int i = 0; i < NSHAPES; i++) {
        size_t e[3] = {(size_t)shapes[i].m * (size_t)shapes[i].k,
                       (size_t)shapes[i].k * (size_t)shapes[i].n,
                       (size_t)shapes[i].m * (size_t)shapes[i].n};
        for (int j = 0; j < 3; j++)
            most = e[j] > most ? e[j] : most;
    }
    float *a = malloc(most * sizeof *a), *b = malloc(most * sizeof *b);
    float *c1 = malloc(most * sizeof *c1), *c2 = malloc(most * sizeof *c2);
    if (!a || !b || !c1 || !c2) {
        fprintf(stderr, "%s: out of memory\n", argv[0]);
        return 1;
    }
    unsigned long long x = 88172645463325252ull;
    for (size_t i = 0; i < most; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        a[i] = (float)((double)(x >> 40) / (double)(1ull << 24) - 0.5);
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b[i] = (float)((double)(x >> 40) / (double)(1ull << 24) - 0.5);
    }

#ifdef DTL_BENCH_OPENBLAS
    const char *blas = "OpenBLAS";
    printf("OpenBLAS: %s\n", openblas_get_config());
#else
    const char *blas = "(no OpenBLAS)";
#endif
    printf("dtl kernel: %s; best of %d batches of >= %.0f ms; clock: %s\n",
           dtl_gemm_isa_name(used), BATCHES, min_s * 1000,
           cpu_clock ? "the thread's CPU time with 1 thread, wall with more" : "wall");
    printf("%-7s %-9s %5s %5s %5s %2s %3s %10s %10s %8s\n", "class", "shape", "m", "n", "k", "op",
           "thr", "dtl GF/s", blas[0] == '(' ? "-" : "BLAS GF/s", "dtl/BLAS");

    for (const char *t = threads; *t;) {
        int nt = atoi(t);
        t += strcspn(t, ",");
        t += *t == ',';
        if (nt < 1)
            continue;
        clock_id = cpu_clock && nt == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
        dtl_err err;
        dtl_pool *pool = dtl_pool_new(nt, &err);
        if (!pool) {
            fprintf(stderr, "%s: %s\n", argv[0], err.msg);
            return 1;
        }
        double gf_dtl[NSHAPES] = {0}, gf_blas[NSHAPES] = {0};
        for (int i = 0; i < NSHAPES; i++) {
            if (!in_list(classes, shapes[i].cls))
                continue;
            run r = {.s = &shapes[i], .a = a, .b = b, .c = c1, .pool = pool, .opts = opts};
            double flops = 2.0 * shapes[i].m * shapes[i].n * shapes[i].k;
            gf_dtl[i] = flops / time_call(run_dtl, &r, min_s) * 1e-9;
        }
        dtl_pool_free(pool);
#ifdef DTL_BENCH_OPENBLAS
        openblas_set_num_threads(nt);
        for (int i = 0; i < NSHAPES; i++) {
            if (!in_list(classes, shapes[i].cls))
                continue;
            run r = {.s = &shapes[i], .a = a, .b = b, .c = c2};
            double flops = 2.0 * shapes[i].m * shapes[i].n * shapes[i].k;
            gf_blas[i] = flops / time_call(run_blas, &r, min_s) * 1e-9;
            /* Both results, compared: relative to the largest magnitude. */
            run d = r;
            d.c = c1;
            d.pool = NULL;
            d.opts = opts;
            run_dtl(&d);
            double diff = 0, mag = 0;
            for (long j = 0; j < (long)shapes[i].m * shapes[i].n; j++) {
                diff = fmax(diff, fabs((double)c1[j] - (double)c2[j]));
                mag = fmax(mag, fabs((double)c2[j]));
            }
            if (diff > 1e-4 * mag)
                printf("warning: %s %s: dtl and OpenBLAS differ by %g (largest |c| %g)\n",
                       shapes[i].cls, shapes[i].name, diff, mag);
        }
#endif
        for (int i = 0; i < NSHAPES; i++) {
            if (!gf_dtl[i])
                continue;
            const shape *s = &shapes[i];
            printf("%-7s %-9s %5d %5d %5d %c%c %3d %10.1f", s->cls, s->name, s->m, s->n, s->k,
                   s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', nt, gf_dtl[i]);
            if (gf_blas[i])
                printf(" %10.1f %8.2f\n", gf_blas[i], gf_dtl[i] / gf_blas[i]);
            else
                printf(" %10s %8s\n", "-", "-");
        }
    }
    free(a);
    free(b);
    free(c1);
    free(c2);
    return 0;
}
