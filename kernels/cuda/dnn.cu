/* kernels/cuda/dnn.cu — the windowed ops on the GPU (kernels/cuda/dnn.h): conv2d, max and
 * average pooling, forward and backward.
 *
 * Design. The reference backend defines these ops' numerics (sums in double rounded once,
 * maxpool's first-NaN-else-first-maximum rule, avgpool's count_pad divisor, maxpool2d_bwd's
 * sums in the element type in output order), which cuDNN does not offer (its f32
 * convolutions accumulate in f32, its pooling has other tie and padding rules). So each op
 * is a direct "gather" kernel: one thread per result element runs that element's function
 * of kernels/cuda/window_at.h — the same code the CPU runs in tests/unit/test_cuda.c against
 * kernels/ref — and stores it once; no scratch memory, no atomics, every element written.
 * conv2d_bwd_w's elements are few and long (a sum over batch x output positions), so it
 * gives each element a block whose threads take strided parts of the sum and add them in a
 * double tree in shared memory. The loops are the reference's, which makes them simple and
 * exact, not fast: fine for LeNet-sized networks (and the tests), slow for wide ones — a
 * tiled or implicit-GEMM kernel (or cuDNN where its numerics are acceptable) is the next
 * step (docs/cuda.md).
 *
 * The multi-tensor Adam/AdamW update is here too: one launch for every parameter the
 * backend found an Adam update for (kernels/cuda/cuda_adam.h), its table of {p, m, v, g, n}
 * in device memory, each entry its own range of blocks, each element updated by
 * adam_at.h's function (IEEE-rounded f32 operations in the reference graph's order, so bit
 * for bit the reference update). */
#include "dnn.h"
#include "grid.cuh"

namespace {

using dtl_cu::blocks_for;
using dtl_cu::kThreads;

__global__ void k_window(dtl_cu_win g, dtl_cu_wop op, const void *a, const void *b, void *out,
                         int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        double v = dtl_cu_w_at(&g, op, a, b, i);
        if (g.f64)
            ((double *)out)[i] = v;
        else
            ((float *)out)[i] = (float)v;
    }
}

__global__ void k_conv_bwd_w(dtl_cu_win g, const void *x, const void *dy, void *out, int64_t n)
{
    __shared__ double part[kThreads];
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        part[threadIdx.x] = dtl_cu_w_conv_bwd_w_part(&g, x, dy, i, threadIdx.x, blockDim.x);
        __syncthreads();
        for (int w = blockDim.x / 2; w > 0; w /= 2) {
            if ((int)threadIdx.x < w)
                part[threadIdx.x] += part[threadIdx.x + w];
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            if (g.f64)
                ((double *)out)[i] = part[0];
            else
                ((float *)out)[i] = (float)part[0];
        }
        __syncthreads();
    }
}

/* Block b works on the entry whose block range holds it (a binary search over block0). */
__global__ void k_adam(const dtl_cu_adam_t *tab, int n, dtl_cu_adam_s s)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (tab[mid].block0 <= (int64_t)blockIdx.x)
            lo = mid;
        else
            hi = mid - 1;
    }
    dtl_cu_adam_t e = tab[lo];
    int64_t nb = (lo + 1 < n ? tab[lo + 1].block0 : (int64_t)gridDim.x) - e.block0;
    float b1 = *s.b1, c1 = *s.c1, b2 = *s.b2, c2 = *s.c2, bc2s = *s.bc2s, eps = *s.eps,
          ss = *s.ss;
    for (int64_t i = ((int64_t)blockIdx.x - e.block0) * blockDim.x + threadIdx.x; i < e.n;
         i += nb * blockDim.x)
        dtl_cu_adam_at(&e, i, b1, c1, b2, c2, bc2s, eps, ss, s.decay);
}

} // namespace

extern "C" cudaError_t dtl_cu_adam(const dtl_cu_adam_t *table, int n, int64_t nblocks,
                                   const dtl_cu_adam_s *s, cudaStream_t stream)
{
    if (n <= 0 || nblocks <= 0)
        return cudaSuccess;
    k_adam<<<(unsigned)nblocks, DTL_CU_ADAM_THREADS, 0, stream>>>(table, n, *s);
    return cudaGetLastError();
}

extern "C" cudaError_t dtl_cu_window(dtl_cu_wop op, const dtl_cu_win *g, const void *a,
                                     const void *b, void *out, cudaStream_t s)
{
    if (op < 0 || op >= DTL_CU_W_COUNT)
        return cudaErrorInvalidValue;
    int64_t n = dtl_cu_win_numel(g, op);
    if (n <= 0)
        return cudaSuccess;
    /* a long bwd_w sum: a block per element; a short one: a thread per element */
    if (op == DTL_CU_W_CONV_BWD_W && g->n * g->oh * g->ow > 64) {
        int64_t nb = n < 65535LL * 16 ? n : 65535LL * 16;
        k_conv_bwd_w<<<(unsigned)nb, kThreads, 0, s>>>(*g, a, b, out, n);
    } else {
        k_window<<<blocks_for(n), kThreads, 0, s>>>(*g, op, a, b, out, n);
    }
    return cudaGetLastError();
}
