/* runtime/blocks.h — the offset planner of every memory plan (the reference executor's,
 * runtime/exec.c; the fused kernel program's, compiler/passes/fuse.c; the CUDA backend's,
 * kernels/cuda/cuda_plan.c): the live blocks of one address range, placed best fit.
 *
 * Contract:
 *  - dtl_blocks_init makes an empty set with room for cap live blocks at once (arrays in A);
 *    the caller never has more live at once (a plan has at most one block per value).
 *  - dtl_blocks_take places a block of size bytes and returns its offset: the smallest gap
 *    between live blocks (or before the first) that holds it, the lowest of equal gaps;
 *    else right after the highest live block. top is the largest end ever placed: the
 *    range the plan needs. Sizes are the caller's (already rounded to its alignment).
 *  - dtl_blocks_release frees the live block at off of size bytes (nothing when there is
 *    no such block), so later takes may reuse its bytes.
 * O(live blocks) per call: plans are made once per graph.
 */
#ifndef DTL_BLOCKS_H
#define DTL_BLOCKS_H

#include <stdint.h>

#include "arena.h"

typedef struct dtl_blocks {
    uint64_t *off, *size;   /* the live blocks, by offset */
    uint32_t n;
    uint64_t top;
} dtl_blocks;

void dtl_blocks_init(dtl_blocks *b, uint32_t cap, dtl_arena *A);
uint64_t dtl_blocks_take(dtl_blocks *b, uint64_t size);
void dtl_blocks_release(dtl_blocks *b, uint64_t off, uint64_t size);

#endif
