/* kernels/cuda/grid.h — how many blocks a launch of `threads` threads takes, for the host C
 * that plans launches (cuda_gen.c) and the kernel files alike (through grid.cuh). Every
 * kernel loops grid-stride, so the count is capped (DTL_CU_MAX_BLOCKS) and any size is
 * covered; an empty launch still gets one block (its threads find nothing to do). */
#ifndef DTL_CUDA_GRID_H
#define DTL_CUDA_GRID_H

#include <stdint.h>

#define DTL_CU_MAX_BLOCKS (65535LL * 16)

static inline unsigned dtl_cu_blocks(int64_t threads, unsigned block)
{
    int64_t nb = (threads + block - 1) / block;
    if (nb < 1)
        nb = 1;
    if (nb > DTL_CU_MAX_BLOCKS)
        nb = DTL_CU_MAX_BLOCKS;
    return (unsigned)nb;
}

#endif
