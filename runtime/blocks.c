/* runtime/blocks.c — best-fit placement of live blocks (blocks.h). The live blocks are kept
 * sorted by offset, so the gaps are read off in one pass. */
#include "blocks.h"

#include <string.h>

void dtl_blocks_init(dtl_blocks *b, uint32_t cap, dtl_arena *A)
{
    b->off = dtl_arena_array(A, (size_t)cap + 1, sizeof *b->off);
    b->size = dtl_arena_array(A, (size_t)cap + 1, sizeof *b->size);
    b->n = 0;
    b->top = 0;
}

uint64_t dtl_blocks_take(dtl_blocks *b, uint64_t size)
{
    uint64_t end = 0, best = UINT64_MAX, best_gap = UINT64_MAX;
    uint32_t at = b->n;
    for (uint32_t i = 0; i < b->n; i++) {
        uint64_t gap = b->off[i] - end;
        if (gap >= size && gap < best_gap) {
            best = end;
            best_gap = gap;
            at = i;
        }
        end = b->off[i] + b->size[i];
    }
    if (best == UINT64_MAX) {
        best = end;
        at = b->n;
    }
    memmove(b->off + at + 1, b->off + at, (b->n - at) * sizeof *b->off);
    memmove(b->size + at + 1, b->size + at, (b->n - at) * sizeof *b->size);
    b->off[at] = best;
    b->size[at] = size;
    b->n++;
    if (best + size > b->top)
        b->top = best + size;
    return best;
}

void dtl_blocks_release(dtl_blocks *b, uint64_t off, uint64_t size)
{
    for (uint32_t i = 0; i < b->n; i++)
        if (b->off[i] == off && b->size[i] == size) {
            memmove(b->off + i, b->off + i + 1, (b->n - i - 1) * sizeof *b->off);
            memmove(b->size + i, b->size + i + 1, (b->n - i - 1) * sizeof *b->size);
            b->n--;
            return;
        }
}
