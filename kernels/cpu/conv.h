/* kernels/cpu/conv.h — fast CPU kernels for conv2d and its backward ops (im2col + the
 * blocked GEMM of kernels/cpu/gemm.h) and for max and average pooling, over the thread pool.
 * What the LLVM backend (and an ahead-of-time compiled model) runs for those SINGLE kernels.
 *
 * Contract:
 *  - dtl_cpu_conv_handles(n): whether dtl_cpu_conv computes node n (a float conv2d,
 *    conv2d_bwd_x, conv2d_bwd_w, maxpool2d, maxpool2d_bwd, avgpool2d or avgpool2d_bwd).
 *  - dtl_cpu_conv_scratch(n, in) is the scratch, in bytes, that dtl_cpu_conv needs for node n
 *    with operand views in (0 for the pooling ops and for nodes it does not handle).
 *  - dtl_cpu_conv(pool, n, in, out, scratch) computes n into out: the convolutions the same
 *    as the reference kernel (kernels/ref/ref.h) within float tolerance (sums are GEMM sums,
 *    in the dtype), max pooling bit for bit (the same first maximum, dy added in the same
 *    order), average pooling bit for bit (the reference kernel's own loops, a range of (n, c)
 *    planes per task); scratch holds at least dtl_cpu_conv_scratch bytes, 64-byte aligned, and is
 *    clobbered. The batch is split into min(N, DTL_CONV_TASKS) fixed ranges run as pool
 *    tasks (pool NULL: serially), each with its own part of the scratch, and partial weight
 *    gradients are added in range order: the result's bits do not depend on the pool's size.
 *    It allocates nothing and cannot fail.
 */
#ifndef DTL_CPU_CONV_H
#define DTL_CPU_CONV_H

#include <stdint.h>

#include "../../compiler/graph.h"
#include "../../runtime/pool.h"
#include "../ref/ref.h"

#define DTL_CONV_TASKS 16

bool dtl_cpu_conv_handles(const dtl_node *n);
uint64_t dtl_cpu_conv_scratch(const dtl_node *n, const dtl_ref_arg *in);
void dtl_cpu_conv(dtl_pool *pool, const dtl_node *n, const dtl_ref_arg *in, void *out,
                  void *scratch);

#endif
