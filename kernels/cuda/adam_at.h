/* kernels/cuda/adam_at.h — the multi-tensor Adam/AdamW update: its table layout and one
 * element's update, written once for the device (kernels/cuda/dnn.cu) and the host (the CPU
 * test against the reference backend in tests/unit/test_cuda.c).
 *
 * Contract: plain C11 and CUDA C++ (no dtl headers). A table holds ntensors entries
 * dtl_cu_adam_t, each one parameter: p, m, v (f32, updated in place), its gradient g (f32,
 * read) and n elements, all dense and of one shape. The scalars are read on the device from
 * device memory (f32, one element each), so a captured CUDA Graph sees each step's values:
 * b1, c1 (1 - beta1), b2, c2 (1 - beta2), bc2s (sqrt(1 - beta2^t)), eps, ss (lr / (1 -
 * beta1^t)) and decay (AdamW's 1 - lr wd; NULL: plain Adam). dtl_cu_adam_at updates element
 * i exactly as compiler/optim.c's graph does, one IEEE-rounded f32 operation at a time in
 * its order (never contracted into FMAs: on the device each is an __f*_rn intrinsic):
 *     m' = m b1 + g c1;  v' = v b2 + (g c2) g;
 *     p' = p0 - (m' ss) / (sqrt(v') / bc2s + eps),  p0 = p (Adam) or p decay (AdamW)
 * so it equals the reference update bit for bit. Blocks: entry k owns blocks
 * [block0[k], block0[k + 1]) of the launch (dtl_cu_adam_blocks lays them out).
 */
#ifndef DTL_CUDA_ADAM_AT_H
#define DTL_CUDA_ADAM_AT_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define DTL_CU_AHD static __host__ __device__ inline
#else
#define DTL_CU_AHD static inline
#endif

typedef struct dtl_cu_adam_t {
    float *p, *m, *v;
    const float *g;
    int64_t n;
    int64_t block0;      /* the first block of the launch that works on this entry */
} dtl_cu_adam_t;

/* The shared scalars (device pointers to one f32 each; decay NULL for Adam). */
typedef struct dtl_cu_adam_s {
    const float *b1, *c1, *b2, *c2, *bc2s, *eps, *ss, *decay;
} dtl_cu_adam_s;

enum { DTL_CU_ADAM_THREADS = 256, DTL_CU_ADAM_MAX_BLOCKS = 1024 };

/* Gives each of the n entries its blocks (at most DTL_CU_ADAM_MAX_BLOCKS of
 * DTL_CU_ADAM_THREADS threads, at least one); returns the launch's number of blocks. */
DTL_CU_AHD int64_t dtl_cu_adam_blocks(dtl_cu_adam_t *t, int n)
{
    int64_t at = 0;
    for (int k = 0; k < n; k++) {
        int64_t b = (t[k].n + DTL_CU_ADAM_THREADS - 1) / DTL_CU_ADAM_THREADS;
        if (b > (int64_t)DTL_CU_ADAM_MAX_BLOCKS)
            b = DTL_CU_ADAM_MAX_BLOCKS;
        if (b < 1)
            b = 1;
        t[k].block0 = at;
        at += b;
    }
    return at;
}

#ifdef __CUDA_ARCH__
#define DTL_CU_FMUL(a, b) __fmul_rn(a, b)
#define DTL_CU_FADD(a, b) __fadd_rn(a, b)
#define DTL_CU_FSUB(a, b) __fsub_rn(a, b)
#define DTL_CU_FDIV(a, b) __fdiv_rn(a, b)
#define DTL_CU_FSQRT(a) __fsqrt_rn(a)
#else
#define DTL_CU_FMUL(a, b) ((float)((a) * (b)))
#define DTL_CU_FADD(a, b) ((float)((a) + (b)))
#define DTL_CU_FSUB(a, b) ((float)((a) - (b)))
#define DTL_CU_FDIV(a, b) ((float)((a) / (b)))
#define DTL_CU_FSQRT(a) sqrtf(a)
#endif

/* Element i of entry e, with the scalars' values. */
DTL_CU_AHD void dtl_cu_adam_at(const dtl_cu_adam_t *e, int64_t i, float b1, float c1, float b2,
                               float c2, float bc2s, float eps, float ss, const float *decay)
{
    float g = e->g[i];
    float nm = DTL_CU_FADD(DTL_CU_FMUL(e->m[i], b1), DTL_CU_FMUL(g, c1));
    float nv = DTL_CU_FADD(DTL_CU_FMUL(e->v[i], b2), DTL_CU_FMUL(DTL_CU_FMUL(g, c2), g));
    float denom = DTL_CU_FADD(DTL_CU_FDIV(DTL_CU_FSQRT(nv), bc2s), eps);
    float upd = DTL_CU_FDIV(DTL_CU_FMUL(nm, ss), denom);
    float p0 = decay ? DTL_CU_FMUL(e->p[i], *decay) : e->p[i];
    e->m[i] = nm;
    e->v[i] = nv;
    e->p[i] = DTL_CU_FSUB(p0, upd);
}

#endif
