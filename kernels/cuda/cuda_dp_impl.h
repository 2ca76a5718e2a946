/* kernels/cuda/cuda_dp_impl.h — the plugin-internal side of NCCL data parallelism
 * (kernels/cuda/cuda_dp.c): what the backend (cuda_backend.c) calls while it prepares and
 * runs the plans of a dtl_cuda_dp (cuda_dp.h has the whole design).
 *
 * Contract:
 *  - A plan is the dp's when its options' output_ready is dtl_cu_dp_hook (ready_ctx: the
 *    dp); dtl_cu_dp_of says so. The hook itself is never called. The backend's prepare then
 *    attaches the plan as the PRODUCER (its graph has an output named like the dp's first
 *    tensor: GRAD) or the CONSUMER (an input named like one of them: UPDATE).
 *  - Producer: the backend gives, per output k of its graph (g->outs order), the device
 *    pointer that holds its final value (src), and for PARAM/STATE outputs the mirror's
 *    pointer it commits to (commit, else NULL), and the index of the last step that writes it
 *    (ready; nsteps - 1 when unsure). It calls dtl_cu_dp_after_step after enqueueing each step
 *    i (directly or while capturing a graph) and dtl_cu_dp_launched once the run's work is
 *    queued. All on the compute stream it gives at attach.
 *  - Consumer: dtl_cu_dp_fed says which inputs come from the buckets (bind_inputs skips
 *    them); dtl_cu_dp_feed, after the run's input copy and before its steps, copies them in.
 *  - Errors: false/NULL with err set, naming the CUDA or NCCL call.
 */
#ifndef DTL_CUDA_DP_IMPL_H
#define DTL_CUDA_DP_IMPL_H

#include <cuda_runtime.h>

#include "cuda_dp.h"

void dtl_cu_dp_hook(void *ctx, uint32_t k, const dtl_tensor *value);
dtl_cuda_dp *dtl_cu_dp_of(const dtl_plan_opts *o);

typedef struct dtl_cu_dp_plan dtl_cu_dp_plan;

/* *out is NULL when g is neither producer nor consumer (the plan runs as usual). */
bool dtl_cu_dp_attach(dtl_cuda_dp *dp, const dtl_graph *g, void *const *src, void *const *commit,
                      const uint32_t *ready, uint32_t nsteps, void *const *input_ptr,
                      cudaStream_t stream, dtl_cu_dp_plan **out, dtl_err *err);
bool dtl_cu_dp_is_producer(const dtl_cu_dp_plan *pp);
bool dtl_cu_dp_fed(const dtl_cu_dp_plan *pp, const char *input);
bool dtl_cu_dp_after_step(dtl_cu_dp_plan *pp, uint32_t i, dtl_err *err);
bool dtl_cu_dp_feed(dtl_cu_dp_plan *pp, dtl_err *err);
/* Just before the run's work is launched (a test's fault may be enqueued there). */
bool dtl_cu_dp_before_launch(dtl_cu_dp_plan *pp, dtl_err *err);
bool dtl_cu_dp_launched(dtl_cu_dp_plan *pp, dtl_err *err);
void dtl_cu_dp_plan_free(dtl_cu_dp_plan *pp);

/* The dtl_cuda_dp_api functions (the backend's table wraps create with its context). */
bool dtl_cu_dp_available(char *why, size_t len);
bool dtl_cu_dp_unique_id(unsigned char *id, dtl_err *err);
dtl_cuda_dp *dtl_cu_dp_create(const dtl_cuda_dp_spec *s, int device, dtl_err *err);
void dtl_cu_dp_plan_opts(dtl_cuda_dp *dp, dtl_plan_opts *o);
bool dtl_cu_dp_finish(dtl_cuda_dp *dp, double *loss, dtl_err *err);
double dtl_cu_dp_wait_seconds(const dtl_cuda_dp *dp);
void dtl_cu_dp_set_timeout(dtl_cuda_dp *dp, double seconds);
void dtl_cu_dp_destroy(dtl_cuda_dp *dp, bool abort);

#endif
