/* kernels/cpu/gemm.c — blocked, vectorized, threaded matrix products (contract in gemm.h).
 *
 * Design (after Goto's and BLIS's): C is computed in tiles of MR x NR (6 x 16 f32, 6 x 8 f64)
 * by a micro-kernel that keeps the tile in registers for a whole slice of k. B is packed, one
 * KC x NC slice at a time, into panels of NR columns (256 KiB on the stack, in L2). A is read
 * in place: the micro-kernel broadcasts its elements through (row, column) strides, which
 * serves A and A^T alike and costs no packing for the small products of a training step; only
 * a block of A bigger than L1 that many panels reuse is first copied into a contiguous buffer
 * with an odd row stride (copy_a: A^T's rows are a page apart, and a power-of-two lda maps the
 * rows onto a few cache sets). k is cut into nearly equal slices of at most KC, so the order of each element's sum
 * depends only on k — not on the blocking of m and n, nor on the threads. With a pool, C is
 * cut into a grid of gm x gn bands of whole micro-tiles (one per thread; the grid balances the
 * tiles and limits repacked B), each computed by gemm_block; the epilogue runs on blocks of
 * <= MB rows x NC columns right after their last k slice. The micro-kernel is picked per call
 * from cpuid (gemm_avx2.c) or is the portable one (gemm_tmpl.h).
 */
#include "gemm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_internal.h"

#define DTL_GEMM_ASSERT(cond)                                                                \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: dtl_gemm: invariant failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                                  \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

/* ---- ISA dispatch ------------------------------------------------------------------------- */

bool dtl_gemm_isa_supported(dtl_gemm_isa isa)
{
    switch (isa) {
    case DTL_GEMM_ISA_AUTO:
    case DTL_GEMM_ISA_PORTABLE:
        return true;
    case DTL_GEMM_ISA_AVX2:
#ifdef DTL_GEMM_HAVE_AVX2
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
        return false;
#endif
    default:
        return false;
    }
}

dtl_gemm_isa dtl_gemm_isa_best(void)
{
    return dtl_gemm_isa_supported(DTL_GEMM_ISA_AVX2) ? DTL_GEMM_ISA_AVX2 : DTL_GEMM_ISA_PORTABLE;
}

const char *dtl_gemm_isa_name(dtl_gemm_isa isa)
{
    static const char *const names[DTL_GEMM_ISA_COUNT] = {"auto", "portable", "avx2"};
    return (unsigned)isa < DTL_GEMM_ISA_COUNT ? names[isa] : NULL;
}

/* AUTO -> the best; an ISA this CPU lacks -> portable. */
static dtl_gemm_isa resolve_isa(dtl_gemm_isa isa)
{
    if (isa == DTL_GEMM_ISA_AUTO)
        return dtl_gemm_isa_best();
    return dtl_gemm_isa_supported(isa) ? isa : DTL_GEMM_ISA_PORTABLE;
}

/* ---- the thread grid ---------------------------------------------------------------------- */

/* Cuts C (mp x np micro-tiles of mr x nr) into gm x gn <= nt bands: the grid whose largest
 * band costs least, counting a band's multiply-adds per k plus the packing of its columns of B
 * (about PACK_COST multiply-adds per value: copies are slow next to 8- or 16-wide FMAs). */
#define PACK_COST 4
static void choose_grid(int64_t mp, int64_t np, int mr, int nr, int nt, int64_t *gm, int64_t *gn)
{
    int64_t best = -1;
    for (int64_t cn = 1; cn <= nt && cn <= np; cn++) {
        int64_t cm = nt / cn < mp ? nt / cn : mp;
        int64_t rows = (mp + cm - 1) / cm * mr, cols = (np + cn - 1) / cn * nr;
        int64_t cost = rows * cols + PACK_COST * cols;
        if (best < 0 || cost < best) {
            best = cost;
            *gm = cm;
            *gn = cn;
        }
    }
}

/* A block of A larger than L1 is copied before use (copy_a in gemm_tmpl.h) when at least
 * COPY_A_COLS columns of C reuse it. */
#define COPY_A_BYTES 32768
#define COPY_A_COLS 64

/* ---- the driver, once per element type ---------------------------------------------------- */

#define T float
#define SFX(name) name##_f32
#define NR DTL_GEMM_NR_F32
#define KC 256
#define NC 256
#define MB 96
#define KERN dtl_gemm_kern_f32
static const KERN kernels_f32[DTL_GEMM_ISA_COUNT];
#include "gemm_tmpl.h"
#undef T
#undef SFX
#undef NR
#undef KC
#undef NC
#undef MB
#undef KERN

#define T double
#define SFX(name) name##_f64
#define NR DTL_GEMM_NR_F64
#define KC 256
#define NC 128
#define MB 48
#define KERN dtl_gemm_kern_f64
static const KERN kernels_f64[DTL_GEMM_ISA_COUNT];
#include "gemm_tmpl.h"
#undef T
#undef SFX
#undef NR
#undef KC
#undef NC
#undef MB
#undef KERN

/* Indexed by the resolved ISA (never AUTO). */
static const dtl_gemm_kern_f32 kernels_f32[DTL_GEMM_ISA_COUNT] = {
    [DTL_GEMM_ISA_PORTABLE] = kern_portable_f32,
#ifdef DTL_GEMM_HAVE_AVX2
    [DTL_GEMM_ISA_AVX2] = dtl_gemm_kern_f32_avx2,
#endif
};
static const dtl_gemm_kern_f64 kernels_f64[DTL_GEMM_ISA_COUNT] = {
    [DTL_GEMM_ISA_PORTABLE] = kern_portable_f64,
#ifdef DTL_GEMM_HAVE_AVX2
    [DTL_GEMM_ISA_AVX2] = dtl_gemm_kern_f64_avx2,
#endif
};


/* ---- public entry points ------------------------------------------------------------------ */

void dtl_gemm_f32_opts(const dtl_gemm_opts *opts, dtl_pool *pool, int64_t m, int64_t n, int64_t k,
                       const float *a, int64_t lda, bool ta, const float *b, int64_t ldb, bool tb,
                       float *c, int64_t ldc, dtl_gemm_epilogue epi, void *ctx)
{
    gemm_f32(opts, pool, m, n, k, a, lda, ta, b, ldb, tb, c, ldc, epi, ctx);
}

void dtl_gemm_f64_opts(const dtl_gemm_opts *opts, dtl_pool *pool, int64_t m, int64_t n, int64_t k,
                       const double *a, int64_t lda, bool ta, const double *b, int64_t ldb,
                       bool tb, double *c, int64_t ldc, dtl_gemm_epilogue epi, void *ctx)
{
    gemm_f64(opts, pool, m, n, k, a, lda, ta, b, ldb, tb, c, ldc, epi, ctx);
}

void dtl_gemm_f32(dtl_pool *pool, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                  bool ta, const float *b, int64_t ldb, bool tb, float *c, int64_t ldc,
                  dtl_gemm_epilogue epi, void *ctx)
{
    gemm_f32(NULL, pool, m, n, k, a, lda, ta, b, ldb, tb, c, ldc, epi, ctx);
}

void dtl_gemm_f64(dtl_pool *pool, int64_t m, int64_t n, int64_t k, const double *a, int64_t lda,
                  bool ta, const double *b, int64_t ldb, bool tb, double *c, int64_t ldc,
                  dtl_gemm_epilogue epi, void *ctx)
{
    gemm_f64(NULL, pool, m, n, k, a, lda, ta, b, ldb, tb, c, ldc, epi, ctx);
}
