/* kernels/cuda/dnn.h — the CUDA kernels of the windowed ops (kernels/cuda/dnn.cu): conv2d,
 * max and average pooling and their backward ops, callable from C.
 *
 * Contract (as kernels/cuda/ops.h): dtl_cu_window enqueues op's kernel on `stream` and
 * returns the launch's cudaError_t; it never synchronizes (a CUDA Graph may capture it).
 * Pointers are device pointers to dense row-major tensors of g's element type; `out` never
 * overlaps an operand and every element of it is written. a and b are the graph node's
 * operands in order (conv2d: x, w; conv2d_bwd_x: dy, w; conv2d_bwd_w: x, dy; maxpool2d: x;
 * maxpool2d_bwd: x, dy; avgpool2d and avgpool2d_bwd: their one operand, b NULL). Each result
 * element is computed by kernels/cuda/window_at.h's function, i.e. as the reference backend
 * computes it (sums in double, ref's tie rules), except conv2d_bwd_w, whose long sums are
 * split over a block's threads and added in double in another order. No workspace.
 * dtl_cu_adam (below) is the multi-tensor optimizer update. */
#ifndef DTL_CUDA_DNN_H
#define DTL_CUDA_DNN_H

#include <cuda_runtime.h>

#include "adam_at.h"
#include "window_at.h"

#ifdef __cplusplus
extern "C" {
#endif

cudaError_t dtl_cu_window(dtl_cu_wop op, const dtl_cu_win *g, const void *a, const void *b,
                          void *out, cudaStream_t stream);

/* The multi-tensor Adam/AdamW update (adam_at.h): entries table[0..n) (a device copy, laid
 * out by dtl_cu_adam_blocks, which returned nblocks), scalars s (device pointers). One
 * launch. */
cudaError_t dtl_cu_adam(const dtl_cu_adam_t *table, int n, int64_t nblocks,
                        const dtl_cu_adam_s *s, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
