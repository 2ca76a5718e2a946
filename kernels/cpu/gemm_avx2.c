/* kernels/cpu/gemm_avx2.c — the AVX2 + FMA micro-kernels: 6x16 for f32, 6x8 for f64.
 *
 * Design: the tile lives in 12 ymm accumulators (two vectors per row), which leaves room for
 * the two vectors of the packed B row and one broadcast of A: 15 of the 16 registers, and 12
 * independent FMAs per k step, enough to keep both FMA pipes of a Zen or Skylake core busy
 * through the FMA latency. A is read in place through (rs, cs) strides with broadcasts, so it
 * needs no packing. Each row count 1..6 gets its own copy of the loop (the row count is a
 * constant in the always-inlined body), so a partial tile at the bottom edge of C costs only
 * its own rows; a partial tile at the right edge is computed whole (B's panel is zero-padded)
 * and only its nr valid columns are stored. Compiled for every x86 build through target
 * attributes; gemm.c calls these only after checking the CPU (cpuid).
 */
#include "gemm_internal.h"

#ifdef DTL_GEMM_HAVE_AVX2
#include <immintrin.h>

#define TGT __attribute__((target("avx2,fma")))
#define INL static inline __attribute__((always_inline)) TGT

/* ---- f32: 6 x 16 ------------------------------------------------------------------------- */

INL void tile_f32(const int MR, int64_t kc, const float *a, int64_t rs, int64_t cs,
                  const float *bp, float *c, int64_t ldc, int nr, bool first)
{
    for (int r = 0; r < MR; r++) { /* C is needed after the loop: fetch it meanwhile */
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + 15), _MM_HINT_T0);
    }
    __m256 z = _mm256_setzero_ps();
    __m256 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z;
    __m256 c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;
    const int64_t o1 = rs, o2 = 2 * rs, o3 = 3 * rs, o4 = 4 * rs, o5 = 5 * rs;
    for (int64_t p = 0; p < kc; p++) {
        const float *ap = a + p * cs;
        __m256 b0 = _mm256_load_ps(bp + 16 * p), b1 = _mm256_load_ps(bp + 16 * p + 8), t;
#define ROW(r, off)                                                                          \
    if (MR > r) {                                                                            \
        t = _mm256_broadcast_ss(ap + (off));                                                 \
        c##r##0 = _mm256_fmadd_ps(t, b0, c##r##0);                                           \
        c##r##1 = _mm256_fmadd_ps(t, b1, c##r##1);                                           \
    }
        ROW(0, 0) ROW(1, o1) ROW(2, o2) ROW(3, o3) ROW(4, o4) ROW(5, o5)
#undef ROW
    }
    if (nr == 16) {
#define STORE(r)                                                                             \
    if (MR > r) {                                                                            \
        float *cr = c + r * ldc;                                                             \
        if (first) {                                                                         \
            _mm256_storeu_ps(cr, c##r##0);                                                   \
            _mm256_storeu_ps(cr + 8, c##r##1);                                               \
        } else {                                                                             \
            _mm256_storeu_ps(cr, _mm256_add_ps(_mm256_loadu_ps(cr), c##r##0));               \
            _mm256_storeu_ps(cr + 8, _mm256_add_ps(_mm256_loadu_ps(cr + 8), c##r##1));       \
        }                                                                                    \
    }
        STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5)
#undef STORE
        return;
    }
    _Alignas(32) float t[6][16];
#define SPILL(r)                                                                             \
    if (MR > r) {                                                                            \
        _mm256_store_ps(t[r], c##r##0);                                                      \
        _mm256_store_ps(t[r] + 8, c##r##1);                                                  \
    }
    SPILL(0) SPILL(1) SPILL(2) SPILL(3) SPILL(4) SPILL(5)
#undef SPILL
    if (first) {
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < nr; j++)
                c[r * ldc + j] = t[r][j];
    } else {
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < nr; j++)
                c[r * ldc + j] += t[r][j];
    }
}

TGT void dtl_gemm_kern_f32_avx2(int64_t kc, const float *a, int64_t rs, int64_t cs,
                                const float *bp, float *c, int64_t ldc, int mr, int nr,
                                bool first)
{
    switch (mr) {
    case 6: tile_f32(6, kc, a, rs, cs, bp, c, ldc, nr, first); break;
    case 5: tile_f32(5, kc, a, rs, cs, bp, c, ldc, nr, first); break;
    case 4: tile_f32(4, kc, a, rs, cs, bp, c, ldc, nr, first); break;
    case 3: tile_f32(3, kc, a, rs, cs, bp, c, ldc, nr, first); break;
    case 2: tile_f32(2, kc, a, rs, cs, bp, c, ldc, nr, first); break;
    default: tile_f32(1, kc, a, rs, cs, bp, c, ldc, nr, first); break;
    }
}

/* ---- f64: 6 x 8 -------------------------------------------------------------------------- */

INL void tile_f64(const int MR, int64_t kc, const double *a, int64_t rs, int64_t cs,
                  const double *bp, double *c, int64_t ldc, int nr, bool first)
{
    for (int r = 0; r < MR; r++) {
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + 7), _MM_HINT_T0);
    }
    __m256d z = _mm256_setzero_pd();
    __m256d c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z;
    __m256d c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;
    const int64_t o1 = rs, o2 = 2 * rs, o3 = 3 * rs, o4 = 4 * rs, o5 = 5 * rs;
    for (int64_t p = 0; p < kc; p++) {
        const double *ap = a + p * cs;
        __m256d b0 = _mm256_load_pd(bp + 8 * p), b1 = _mm256_load_pd(bp + 8 * p + 4), t;
#define ROW(r, off)                                                                          \
    if (MR > r) {                                                                            \
        t = _mm256_broadcast_sd(ap + (off));                                                 \
        c##r##0 = _mm256_fmadd_pd(t, b0, c##r##0);                                           \
        c##r##1 = _mm256_fmadd_pd(t, b1, c##r##1);                                           \
    }
        ROW(0, 0) ROW(1, o1) ROW(2, o2) ROW(3, o3) ROW(4, o4) ROW(5, o5)
#undef ROW
    }
    if (nr == 8) {
#define STORE(r)                                                                             \
    if (MR > r) {                                                                            \
        double *cr = c + r * ldc;                                                            \
        if (first) {                                                                         \
            _mm256_storeu_pd(cr, c##r##0);                                                   \
            _mm256_storeu_pd(cr + 4, c##r##1);                                               \
        } else {                                                                             \
            _mm256_storeu_pd(cr, _mm256_add_pd(_mm256_loadu_pd(cr), c##r##0));               \
            _mm256_storeu_pd(cr + 4, _mm256_add_pd(_mm256_loadu_pd(cr + 4), c##r##1));       \
        }                                                                                    \
    }
        STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5)
#undef STORE
        return;
    }
    _Alignas(32) double t[6][8];
#define SPILL(r)                                                                             \
    if (MR > r) {                                                                            \
        _mm256_store_pd(t[r], c##r##0);                                                      \
        _mm256_store_pd(t[r] + 4, c##r##1);                                                  \
    }
    SPILL(0) SPILL(1) SPILL(2) SPILL(3) SPILL(4) SPILL(5)
#undef SPILL
    if (first) {
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < nr; j++)
                c[r * ldc + j] = t[r][j];
    } else {
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < nr; j++)
                c[r * ldc + j] += t[r][j];
    }
}

TGT void dtl_gemm_kern_f64_avx2(int64_t kc, const double *a, int64_t rs, int64_t cs,
                                const double *bp, double *c, int64_t ldc, int mr, int nr,
                                bool first)
{
    switch (mr) {
    case 6: tile_f64(6, kc, a, rs, cs, bp, c, ldc, nr, first); break;
    case 5: tile_f64(5, kc, a, rs, cs, bp, c, ldc, nr, first); break;
    case 4: tile_f64(4, kc, a, rs, cs, bp, c, ldc, nr, first); break;
    case 3: tile_f64(3, kc, a, rs, cs, bp, c, ldc, nr, first); break;
    case 2: tile_f64(2, kc, a, rs, cs, bp, c, ldc, nr, first); break;
    default: tile_f64(1, kc, a, rs, cs, bp, c, ldc, nr, first); break;
    }
}

#else
/* Not x86: nothing here (ISO C wants at least one declaration in a translation unit). */
typedef int dtl_gemm_avx2_unused;
#endif
