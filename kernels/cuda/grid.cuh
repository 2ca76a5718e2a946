/* kernels/cuda/grid.cuh — the launch geometry the backend's kernel files share (ops.cu,
 * dnn.cu): blocks of kThreads threads, and how many blocks an n-element launch takes. The
 * kernels loop grid-stride, so the block count is capped (65535 * 16) and any n is covered;
 * an empty launch still gets one block (its threads find nothing to do). C++ only. */
#ifndef DTL_CUDA_GRID_CUH
#define DTL_CUDA_GRID_CUH

#include <stdint.h>

namespace dtl_cu {

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n)
{
    int64_t b = (n + kThreads - 1) / kThreads;
    if (b < 1)
        b = 1;
    if (b > 65535LL * 16)
        b = 65535LL * 16;
    return (unsigned)b;
}

}  // namespace dtl_cu

#endif
