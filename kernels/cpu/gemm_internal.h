/* kernels/cpu/gemm_internal.h — what gemm.c and the ISA-specific micro-kernels share.
 *
 * A micro-kernel computes one tile of C, mr <= DTL_GEMM_MR rows by nr <= NR columns:
 *   acc[r][j] = sum over p < kc of A(r, p) * bp[p * NR + j]
 * in that order of p, where A(r, p) = a[r * rs + p * cs] (A read in place: rs = lda, cs = 1
 * for a row-major A, rs = 1, cs = lda for a transposed one) and bp is a packed panel of B:
 * kc rows of NR values, 32-byte aligned, zero beyond column nr. Then C[r * ldc + j] = acc[r][j]
 * (first) or C[r * ldc + j] += acc[r][j] (not first), for r < mr and j < nr only.
 * NR is DTL_GEMM_NR_F32 for f32, DTL_GEMM_NR_F64 for f64, for every ISA (one packing layout).
 */
#ifndef DTL_GEMM_INTERNAL_H
#define DTL_GEMM_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#define DTL_GEMM_MR 6
#define DTL_GEMM_NR_F32 16
#define DTL_GEMM_NR_F64 8

typedef void (*dtl_gemm_kern_f32)(int64_t kc, const float *a, int64_t rs, int64_t cs,
                                  const float *bp, float *c, int64_t ldc, int mr, int nr,
                                  bool first);
typedef void (*dtl_gemm_kern_f64)(int64_t kc, const double *a, int64_t rs, int64_t cs,
                                  const double *bp, double *c, int64_t ldc, int mr, int nr,
                                  bool first);

#if defined(__x86_64__) || defined(__i386__)
#define DTL_GEMM_HAVE_AVX2 1
/* kernels/cpu/gemm_avx2.c: only to be called when the CPU has AVX2 and FMA. */
void dtl_gemm_kern_f32_avx2(int64_t kc, const float *a, int64_t rs, int64_t cs, const float *bp,
                            float *c, int64_t ldc, int mr, int nr, bool first);
void dtl_gemm_kern_f64_avx2(int64_t kc, const double *a, int64_t rs, int64_t cs,
                            const double *bp, double *c, int64_t ldc, int mr, int nr, bool first);
#endif

#endif
