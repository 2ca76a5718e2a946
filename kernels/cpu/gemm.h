/* kernels/cpu/gemm.h — matrix products on the CPU: C = op(A) @ op(B), f32 and f64, blocked,
 * vectorized and threaded; what JIT-compiled and ahead-of-time-compiled models call.
 *
 * Contract:
 *  - dtl_gemm_f32/f64 overwrite C[m,n] (row-major, row stride ldc >= n) with op(A) @ op(B):
 *    op(A) is A[m,k] (row stride lda >= k) or, when ta, A^T with A stored [k,m] (lda >= m);
 *    likewise op(B) is B[k,n] (ldb >= n) or, when tb, B^T with B stored [n,k] (ldb >= k).
 *    C must not overlap A or B. k == 0 sets C to zeros; m == 0 or n == 0 does nothing.
 *  - f32 accumulates in f32 (FMA where the ISA has it), f64 in f64. The order of the sums
 *    depends on the ISA and the blocking, not on the thread count: the same call gives the
 *    same bits with any pool. Relative error against an exact product is about k * epsilon
 *    times sum |a||b|.
 *  - epi, when not NULL, is called once for every block of C (rows [i0,i1), columns [j0,j1))
 *    after the block's full sum is stored, by the thread that computed it, while the block is
 *    in cache: the blocks partition C, so every element is seen exactly once, with its final
 *    value. The epilogue may read and rewrite its block (bias + relu, an optimizer update);
 *    it must not touch other parts of C. Its blocks are at most DTL_GEMM_MAX_BLOCK_ROWS rows.
 *  - pool: the work is split over the pool's threads when the product is large enough to
 *    gain from it (DTL_GEMM_PAR_FLOPS multiply-adds x 2); NULL runs on the caller's thread.
 *  - Nothing is allocated: packing buffers live on the calling thread's stack (up to
 *    DTL_GEMM_STACK_BYTES, 384 KiB: call it from a thread with a normal Linux stack of a few
 *    MiB, not a 256 KiB one; pool workers have at least 1 MiB).
 *  - ISA: chosen at run time (cpuid): AVX2+FMA where the CPU has it (6x16 f32 / 6x8 f64
 *    micro-kernels), else portable C that the compiler vectorizes. dtl_gemm_*_opts can force
 *    one (tests, benchmarks); an ISA the CPU lacks falls back to the portable code.
 * Errors: none (arguments are the caller's invariants; bad ones abort with file:line).
 */
#ifndef DTL_GEMM_H
#define DTL_GEMM_H

#include <stdbool.h>
#include <stdint.h>

#include "../../runtime/pool.h"

#define DTL_GEMM_PAR_FLOPS (1 << 19)
#define DTL_GEMM_MAX_BLOCK_ROWS 96
#define DTL_GEMM_STACK_BYTES (384 * 1024)

typedef void (*dtl_gemm_epilogue)(void *ctx, int64_t i0, int64_t i1, int64_t j0, int64_t j1);

void dtl_gemm_f32(dtl_pool *pool, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                  bool ta, const float *b, int64_t ldb, bool tb, float *c, int64_t ldc,
                  dtl_gemm_epilogue epi, void *ctx);
void dtl_gemm_f64(dtl_pool *pool, int64_t m, int64_t n, int64_t k, const double *a, int64_t lda,
                  bool ta, const double *b, int64_t ldb, bool tb, double *c, int64_t ldc,
                  dtl_gemm_epilogue epi, void *ctx);

typedef enum dtl_gemm_isa {
    DTL_GEMM_ISA_AUTO,     /* the best the CPU has */
    DTL_GEMM_ISA_PORTABLE, /* plain C */
    DTL_GEMM_ISA_AVX2,     /* x86-64 AVX2 + FMA */
    DTL_GEMM_ISA_COUNT
} dtl_gemm_isa;

/* Whether this CPU (and this build) can run isa; AUTO and PORTABLE always can. */
bool dtl_gemm_isa_supported(dtl_gemm_isa isa);
/* What AUTO means on this CPU. */
dtl_gemm_isa dtl_gemm_isa_best(void);
/* "auto", "portable", "avx2"; NULL for a value out of range. */
const char *dtl_gemm_isa_name(dtl_gemm_isa isa);

typedef struct dtl_gemm_opts {
    dtl_gemm_isa isa;
    /* Multiply-adds x 2 from which the pool is used; 0: DTL_GEMM_PAR_FLOPS; < 0: always. */
    int64_t par_flops;
} dtl_gemm_opts;

/* As dtl_gemm_f32/f64 with explicit options (opts NULL: the defaults). */
void dtl_gemm_f32_opts(const dtl_gemm_opts *opts, dtl_pool *pool, int64_t m, int64_t n, int64_t k,
                       const float *a, int64_t lda, bool ta, const float *b, int64_t ldb, bool tb,
                       float *c, int64_t ldc, dtl_gemm_epilogue epi, void *ctx);
void dtl_gemm_f64_opts(const dtl_gemm_opts *opts, dtl_pool *pool, int64_t m, int64_t n, int64_t k,
                       const double *a, int64_t lda, bool ta, const double *b, int64_t ldb,
                       bool tb, double *c, int64_t ldc, dtl_gemm_epilogue epi, void *ctx);

#endif
