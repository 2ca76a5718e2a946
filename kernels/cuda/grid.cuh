/* kernels/cuda/grid.cuh — the launch geometry the backend's kernel files share (ops.cu,
 * dnn.cu): blocks of kThreads threads, and how many blocks an n-element launch takes
 * (grid.h's rule: capped, at least one). C++ only. */
#ifndef DTL_CUDA_GRID_CUH
#define DTL_CUDA_GRID_CUH

#include "grid.h"

namespace dtl_cu {

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n)
{
    return dtl_cu_blocks(n, kThreads);
}

}  // namespace dtl_cu

#endif
