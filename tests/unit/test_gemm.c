/* tests/unit/test_gemm.c — kernels/cpu/gemm against a naive product accumulated in double:
 * many shapes (1..70 in each dimension, primes, the MNIST MLP's shapes, k across the cache
 * slices, n and m across the blocks), the four transpose combinations, strides larger than
 * needed (with the padding of C checked untouched), every ISA this CPU has, serial and on pools
 * of 2..4 threads (bit-identical to serial), k == 0 and empty products, the epilogue (each
 * element of C seen exactly once, with its final value), and no allocation per call (when
 * linked with -Wl,--wrap=malloc... and built with -DDTL_TEST_WRAP_MALLOC). */
#include "../../kernels/cpu/gemm.h"
#include "unit.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static double urand(void) /* in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
    return (double)(rng_state >> 11) * 0x1p-52 - 1.0;
}

/* ---- one product, checked ----------------------------------------------------------------- */

typedef struct problem {
    int64_t m, n, k, lda, ldb, ldc;
    bool ta, tb, f64;
    double *a, *b;       /* the operands, as stored (a: m*lda or k*lda values) */
    double *ref, *bound; /* exact-ish product and its error bound, m x n */
} problem;

/* The epilogue's record: how often each element was seen, and whether it was final then. */
typedef struct epi_log {
    const problem *pr;
    const void *c;
    int *seen;
    atomic_int bad_value, bad_block, calls;
} epi_log;

static double get_c(const problem *pr, const void *c, int64_t i, int64_t j)
{
    return pr->f64 ? ((const double *)c)[i * pr->ldc + j] : ((const float *)c)[i * pr->ldc + j];
}

static bool close_enough(const problem *pr, const void *c, int64_t i, int64_t j)
{
    double got = get_c(pr, c, i, j), want = pr->ref[i * pr->n + j];
    return fabs(got - want) <= pr->bound[i * pr->n + j];
}

static void epi_record(void *ctx, int64_t i0, int64_t i1, int64_t j0, int64_t j1)
{
    epi_log *log = ctx;
    const problem *pr = log->pr;
    log->calls++;
    if (!(0 <= i0 && i0 < i1 && i1 <= pr->m && 0 <= j0 && j0 < j1 && j1 <= pr->n &&
          i1 - i0 <= DTL_GEMM_MAX_BLOCK_ROWS)) {
        log->bad_block++;
        return;
    }
    for (int64_t i = i0; i < i1; i++)
        for (int64_t j = j0; j < j1; j++) {
            log->seen[i * pr->n + j]++;
            if (!close_enough(pr, log->c, i, j))
                log->bad_value++;
        }
}

static void problem_init(problem *pr, int64_t m, int64_t n, int64_t k, bool ta, bool tb, bool f64,
                         int64_t pad)
{
    *pr = (problem){.m = m, .n = n, .k = k, .ta = ta, .tb = tb, .f64 = f64};
    pr->lda = (ta ? m : k) + pad;
    pr->ldb = (tb ? k : n) + pad;
    pr->ldc = n + pad;
    int64_t na = (ta ? k : m) * pr->lda, nb = (tb ? n : k) * pr->ldb;
    pr->a = malloc((size_t)(na + 1) * sizeof(double));
    pr->b = malloc((size_t)(nb + 1) * sizeof(double));
    pr->ref = malloc((size_t)(m * n + 1) * sizeof(double));
    pr->bound = malloc((size_t)(m * n + 1) * sizeof(double));
    for (int64_t i = 0; i < na; i++)
        pr->a[i] = urand();
    for (int64_t i = 0; i < nb; i++)
        pr->b[i] = urand();
    if (!f64) { /* operands exactly representable in float */
        for (int64_t i = 0; i < na; i++)
            pr->a[i] = (float)pr->a[i];
        for (int64_t i = 0; i < nb; i++)
            pr->b[i] = (float)pr->b[i];
    }
    double eps = f64 ? DBL_EPSILON : FLT_EPSILON;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0, sa = 0;
            for (int64_t p = 0; p < k; p++) {
                double x = ta ? pr->a[p * pr->lda + i] : pr->a[i * pr->lda + p];
                double y = tb ? pr->b[j * pr->ldb + p] : pr->b[p * pr->ldb + j];
                s += x * y;
                sa += fabs(x * y);
            }
            pr->ref[i * n + j] = s;
            pr->bound[i * n + j] = 2.0 * (double)(k + 1) * eps * sa + 1e-300;
        }
}

static void problem_free(problem *pr)
{
    free(pr->a);
    free(pr->b);
    free(pr->ref);
    free(pr->bound);
}

#define C_SENTINEL 12345.0

/* Runs the product into a fresh C (NaN inside, a sentinel in the padding) with the given ISA,
 * pool and threshold; checks values, padding and epilogue. Returns C (caller frees). */
static void *run_checked(const problem *pr, dtl_gemm_isa isa, dtl_pool *pool, int64_t par,
                         bool use_epi, const char *what)
{
    size_t es = pr->f64 ? sizeof(double) : sizeof(float);
    int64_t nc = pr->m * pr->ldc;
    void *c = malloc((size_t)(nc + 1) * es);
    void *a = malloc((size_t)((pr->ta ? pr->k : pr->m) * pr->lda + 1) * es);
    void *b = malloc((size_t)((pr->tb ? pr->n : pr->k) * pr->ldb + 1) * es);
    for (int64_t i = 0; i < (pr->ta ? pr->k : pr->m) * pr->lda; i++) {
        if (pr->f64)
            ((double *)a)[i] = pr->a[i];
        else
            ((float *)a)[i] = (float)pr->a[i];
    }
    for (int64_t i = 0; i < (pr->tb ? pr->n : pr->k) * pr->ldb; i++) {
        if (pr->f64)
            ((double *)b)[i] = pr->b[i];
        else
            ((float *)b)[i] = (float)pr->b[i];
    }
    for (int64_t i = 0; i < pr->m; i++)
        for (int64_t j = 0; j < pr->ldc; j++) {
            double v = j < pr->n ? NAN : C_SENTINEL;
            if (pr->f64)
                ((double *)c)[i * pr->ldc + j] = v;
            else
                ((float *)c)[i * pr->ldc + j] = (float)v;
        }
    epi_log log = {.pr = pr, .c = c, .seen = calloc((size_t)(pr->m * pr->n + 1), sizeof(int))};
    dtl_gemm_opts opts = {.isa = isa, .par_flops = par};
    if (pr->f64)
        dtl_gemm_f64_opts(&opts, pool, pr->m, pr->n, pr->k, a, pr->lda, pr->ta, b, pr->ldb, pr->tb,
                          c, pr->ldc, use_epi ? epi_record : NULL, &log);
    else
        dtl_gemm_f32_opts(&opts, pool, pr->m, pr->n, pr->k, a, pr->lda, pr->ta, b, pr->ldb, pr->tb,
                          c, pr->ldc, use_epi ? epi_record : NULL, &log);
    int64_t bad = 0, pad_bad = 0, seen_bad = 0;
    for (int64_t i = 0; i < pr->m; i++)
        for (int64_t j = 0; j < pr->ldc; j++) {
            if (j >= pr->n) {
                pad_bad += get_c(pr, c, i, j) != C_SENTINEL;
                continue;
            }
            if (!close_enough(pr, c, i, j)) {
                if (!bad)
                    fprintf(stderr, "  C[%lld,%lld] = %.17g, want %.17g (bound %.3g)\n",
                            (long long)i, (long long)j, get_c(pr, c, i, j), pr->ref[i * pr->n + j],
                            pr->bound[i * pr->n + j]);
                bad++;
            }
            if (use_epi)
                seen_bad += log.seen[i * pr->n + j] != 1;
        }
    bool ok = bad == 0 && pad_bad == 0 && seen_bad == 0 &&
              (!use_epi || (log.bad_value == 0 && log.bad_block == 0));
    if (!ok)
        fprintf(stderr,
                "%s: %s %s m=%lld n=%lld k=%lld ta=%d tb=%d lda=%lld ldb=%lld ldc=%lld threads=%d: "
                "%lld wrong, %lld padding overwritten, %lld seen != once by the epilogue, "
                "%d epilogue values not final, %d bad blocks\n",
                what, pr->f64 ? "f64" : "f32", dtl_gemm_isa_name(isa), (long long)pr->m,
                (long long)pr->n, (long long)pr->k, pr->ta, pr->tb, (long long)pr->lda,
                (long long)pr->ldb, (long long)pr->ldc, dtl_pool_size(pool), (long long)bad,
                (long long)pad_bad, (long long)seen_bad, (int)log.bad_value, (int)log.bad_block);
    CHECK(ok);
    free(log.seen);
    free(a);
    free(b);
    return c;
}

/* ---- the suites --------------------------------------------------------------------------- */

static const int64_t dims[] = {1, 2, 3, 5, 6, 7, 11, 13, 16, 17, 31, 47, 64, 70};
#define NDIMS ((int)(sizeof dims / sizeof dims[0]))
static const int64_t kdims[] = {1, 2, 7, 16, 37, 70};
#define NKDIMS ((int)(sizeof kdims / sizeof kdims[0]))

/* Every m, n in dims with every k in kdims, every transpose combination, padded strides. */
static void test_shapes(dtl_gemm_isa isa, bool f64)
{
    for (int im = 0; im < NDIMS; im++)
        for (int in = 0; in < NDIMS; in++)
            for (int ik = 0; ik < NKDIMS; ik++) {
                int t = (im + in + ik) % 4; /* one transpose combination each, all four seen */
                problem pr;
                problem_init(&pr, dims[im], dims[in], kdims[ik], t & 1, t & 2, f64, (im + ik) % 3);
                free(run_checked(&pr, isa, NULL, 0, (in + ik) % 2 == 0, "shapes"));
                problem_free(&pr);
            }
}

/* Shapes across the blocking: several k slices (KC = 256), n across NC, m across the epilogue's
 * 96-row blocks; all four transpose combinations; serial and threaded give the same bits. */
static void test_blocking(dtl_gemm_isa isa, bool f64, dtl_pool **pools, int npools)
{
    static const int64_t shapes[][3] = {
        {32, 128, 784}, {32, 10, 128}, {32, 128, 10}, {784, 128, 32}, {128, 10, 32},
        {97, 200, 257}, {200, 129, 300}, {13, 67, 513}, {193, 33, 5}, {6, 16, 256},
        {7, 17, 1}, {1, 1, 600}, {100, 1, 40}, {1, 300, 40},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++) {
            problem pr;
            problem_init(&pr, shapes[s][0], shapes[s][1], shapes[s][2], t & 1, t & 2, f64,
                         (int64_t)(s % 2) * 5);
            void *serial = run_checked(&pr, isa, NULL, 0, true, "blocking");
            size_t bytes = (size_t)(pr.m * pr.ldc) * (f64 ? sizeof(double) : sizeof(float));
            for (int q = 0; q < npools; q++) {
                void *par = run_checked(&pr, isa, pools[q], -1, true, "blocking, threaded");
                CHECK(memcmp(serial, par, bytes) == 0);
                free(par);
            }
            free(serial);
            problem_free(&pr);
        }
}

static int empty_calls;
static void epi_count(void *ctx, int64_t i0, int64_t i1, int64_t j0, int64_t j1)
{
    (void)ctx, (void)i0, (void)i1, (void)j0, (void)j1;
    empty_calls++;
}

/* k == 0: C = 0 (epilogue on all of it); m == 0 or n == 0: nothing, not even the epilogue. */
static void test_degenerate(dtl_gemm_isa isa, dtl_pool *pool)
{
    for (int f = 0; f < 2; f++) {
        problem pr;
        problem_init(&pr, 9, 21, 0, false, false, f, 2);
        free(run_checked(&pr, isa, NULL, 0, true, "k=0"));
        free(run_checked(&pr, isa, pool, -1, true, "k=0, threaded"));
        problem_free(&pr);
    }
    float cf[4] = {1, 2, 3, 4}, af[4] = {1, 1, 1, 1};
    double cd[4] = {1, 2, 3, 4}, ad[4] = {1, 1, 1, 1};
    dtl_gemm_opts opts = {.isa = isa, .par_flops = -1};
    empty_calls = 0;
    dtl_gemm_f32_opts(&opts, pool, 0, 4, 1, af, 1, false, af, 4, false, cf, 4, epi_count, NULL);
    dtl_gemm_f32_opts(&opts, pool, 1, 0, 1, af, 1, false, af, 1, false, cf, 1, epi_count, NULL);
    dtl_gemm_f64_opts(&opts, pool, 0, 4, 1, ad, 1, false, ad, 4, false, cd, 4, epi_count, NULL);
    dtl_gemm_f64_opts(&opts, pool, 1, 0, 1, ad, 1, false, ad, 1, false, cd, 1, epi_count, NULL);
    CHECK(empty_calls == 0);
    CHECK(cf[0] == 1 && cf[3] == 4 && cd[0] == 1 && cd[3] == 4);
}

/* The public entry points with their defaults: the default pool and no pool agree bit for bit
 * on the MLP's shapes (and the threshold sends the big ones to the pool). */
static void test_defaults(void)
{
    static const int64_t shapes[][5] = {
        /* m, n, k, ta, tb: x@w1, h@w2, g2@w2^T, x^T@g1, h^T@g2, and a square */
        {32, 128, 784, 0, 0}, {32, 10, 128, 0, 0}, {32, 128, 10, 0, 1},
        {784, 128, 32, 1, 0}, {128, 10, 32, 1, 0}, {256, 256, 256, 0, 0},
    };
    dtl_pool *pool = dtl_pool_default();
    CHECK(pool != NULL && dtl_pool_default() == pool);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        problem pr;
        problem_init(&pr, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], shapes[s][4],
                     false, 0);
        float *a = malloc((size_t)(pr.m * pr.k) * sizeof(float));
        float *b = malloc((size_t)(pr.k * pr.n) * sizeof(float));
        float *c1 = malloc((size_t)(pr.m * pr.n) * sizeof(float));
        float *c2 = malloc((size_t)(pr.m * pr.n) * sizeof(float));
        for (int64_t i = 0; i < pr.m * pr.k; i++)
            a[i] = (float)pr.a[i];
        for (int64_t i = 0; i < pr.k * pr.n; i++)
            b[i] = (float)pr.b[i];
        dtl_gemm_f32(NULL, pr.m, pr.n, pr.k, a, pr.lda, pr.ta, b, pr.ldb, pr.tb, c1, pr.ldc, NULL,
                     NULL);
        dtl_gemm_f32(pool, pr.m, pr.n, pr.k, a, pr.lda, pr.ta, b, pr.ldb, pr.tb, c2, pr.ldc, NULL,
                     NULL);
        int64_t bad = 0;
        for (int64_t i = 0; i < pr.m; i++)
            for (int64_t j = 0; j < pr.n; j++)
                bad += !close_enough(&pr, c1, i, j);
        CHECK(bad == 0);
        CHECK(memcmp(c1, c2, (size_t)(pr.m * pr.n) * sizeof(float)) == 0);
#ifdef DTL_TEST_WRAP_MALLOC
        long before = alloc_count;
        for (int r = 0; r < 5; r++)
            dtl_gemm_f32(pool, pr.m, pr.n, pr.k, a, pr.lda, pr.ta, b, pr.ldb, pr.tb, c2, pr.ldc,
                         NULL, NULL);
        CHECK(alloc_count == before);
#endif
        free(a);
        free(b);
        free(c1);
        free(c2);
        problem_free(&pr);
    }
#ifndef DTL_TEST_WRAP_MALLOC
    printf("test_gemm: allocation counting not built in (needs -DDTL_TEST_WRAP_MALLOC)\n");
#endif
}

static void test_isa_api(void)
{
    CHECK(dtl_gemm_isa_supported(DTL_GEMM_ISA_AUTO));
    CHECK(dtl_gemm_isa_supported(DTL_GEMM_ISA_PORTABLE));
    CHECK(!dtl_gemm_isa_supported(DTL_GEMM_ISA_COUNT));
    CHECK(dtl_gemm_isa_best() != DTL_GEMM_ISA_AUTO);
    CHECK(dtl_gemm_isa_supported(dtl_gemm_isa_best()));
    CHECK_STR(dtl_gemm_isa_name(DTL_GEMM_ISA_PORTABLE), "portable");
    CHECK_STR(dtl_gemm_isa_name(DTL_GEMM_ISA_AVX2), "avx2");
    CHECK(dtl_gemm_isa_name(DTL_GEMM_ISA_COUNT) == NULL);
    /* An ISA the CPU lacks runs the portable code: still right. */
    for (int isa = DTL_GEMM_ISA_PORTABLE; isa < DTL_GEMM_ISA_COUNT; isa++)
        if (!dtl_gemm_isa_supported((dtl_gemm_isa)isa)) {
            problem pr;
            problem_init(&pr, 13, 29, 31, false, true, false, 1);
            free(run_checked(&pr, (dtl_gemm_isa)isa, NULL, 0, true, "unsupported isa"));
            problem_free(&pr);
        }
}

int main(void)
{
    dtl_err err;
    dtl_pool *pools[3];
    for (int i = 0; i < 3; i++) {
        pools[i] = dtl_pool_new(i + 2, &err);
        CHECK(pools[i] != NULL);
    }
    test_isa_api();
    for (int isa = DTL_GEMM_ISA_PORTABLE; isa < DTL_GEMM_ISA_COUNT; isa++) {
        if (!dtl_gemm_isa_supported((dtl_gemm_isa)isa)) {
            printf("test_gemm: this CPU lacks %s: its kernels are not tested here\n",
                   dtl_gemm_isa_name((dtl_gemm_isa)isa));
            continue;
        }
        printf("test_gemm: %s\n", dtl_gemm_isa_name((dtl_gemm_isa)isa));
        for (int f64 = 0; f64 < 2; f64++) {
            test_shapes((dtl_gemm_isa)isa, f64);
            test_blocking((dtl_gemm_isa)isa, f64, pools, 3);
        }
        test_degenerate((dtl_gemm_isa)isa, pools[0]);
    }
    test_defaults();
    for (int i = 0; i < 3; i++)
        dtl_pool_free(pools[i]);
    CHECK_DONE();
}
