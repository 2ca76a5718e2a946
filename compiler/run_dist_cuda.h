/* compiler/run_dist_cuda.h — data-parallel training on GPUs: NCCL through the CUDA plugin
 * (kernels/cuda/cuda_dp.h), for compiler/run_dist.c (internal to `dtlc run`).
 *
 * Contract: with the cuda backend, compiler/run_dist.c keeps everything of the CPU path — the
 * bootstrap world (rendezvous, model hash, collective signatures, liveness, the params'
 * broadcast, the evaluation's sums) and the bucket plan of runtime/comm/ddp.h — but the
 * gradients are averaged on the GPUs by NCCL instead of by the ddp comm thread:
 *   - dtl_dist_cuda_check, before any rank waits for another (run.c, right after
 *     dtl_dist_check): the plugin loads and NCCL is there; false with a DTL_ERR_USAGE saying
 *     why (no CUDA in this build, no libnccl.so.2, too old).
 *   - dtl_dist_cuda_new, once the world is joined: rank 0 makes the ncclUniqueId, the
 *     world's broadcast sends it (the world's timeout and failure reports apply), every rank
 *     creates its NCCL communicator on its GPU with the buckets the ddp planned (same
 *     tensors, same DTL_BUCKET_MB, the ddp's labels). A communicator not made within
 *     o->init_timeout_s (a rank never joined) ends the process with a message in the form
 *     o->stuck_prefix and o->stuck_status give (NCCL cannot abort it before it exists).
 *   - dtl_dist_cuda_plan_opts for the GRAD and UPDATE plans; dtl_dist_cuda_step per step
 *     (GRAD, UPDATE, then the wait: the watchdog's deadline applies); *loss the global loss.
 *   - dtl_dist_cuda_free(x, abort): after the last step (abort false) or on any failure.
 * Errors: false/NULL with err set; a stuck or failed collective names the rank(s) waited for,
 * the bucket, its size and the .dtl line (kernels/cuda/cuda_watch.h).
 */
#ifndef DTL_RUN_DIST_CUDA_H
#define DTL_RUN_DIST_CUDA_H

#include <stdbool.h>
#include <stddef.h>

#include "../runtime/comm/comm.h"
#include "../runtime/comm/ddp.h"
#include "../runtime/err.h"
#include "../runtime/exec.h"
#include "graph.h"

typedef struct dtl_dist_cuda dtl_dist_cuda;

typedef struct dtl_dist_cuda_opts {
    double init_timeout_s;      /* ncclCommInitRank's (DTL_TIMEOUT) */
    double timeout_s;           /* the steps', until dtl_dist_cuda_set_timeout */
    const char *stuck_prefix;   /* a process the NCCL watchdog ends: its message's start */
    int stuck_status;           /* and exit status (as dtl_comm_opts') */
} dtl_dist_cuda_opts;

bool dtl_dist_cuda_check(dtl_err *err);
/* ddp: the world's bucket engine of the same tensors (its labels are reused; it is not used
 * for the steps). */
dtl_dist_cuda *dtl_dist_cuda_new(dtl_comm *c, const dtl_graph *grad, const dtl_ddp *ddp,
                                 const dtl_dist_cuda_opts *o, dtl_err *err);
void dtl_dist_cuda_plan_opts(dtl_dist_cuda *x, dtl_plan_opts *o);
bool dtl_dist_cuda_step(dtl_dist_cuda *x, dtl_plan *grad, dtl_plan *update,
                        const dtl_binding *in, size_t nin, double *loss, dtl_err *err);
void dtl_dist_cuda_set_timeout(dtl_dist_cuda *x, double seconds);
double dtl_dist_cuda_wait_seconds(const dtl_dist_cuda *x);
void dtl_dist_cuda_free(dtl_dist_cuda *x, bool abort);   /* NULL is fine */

#endif
