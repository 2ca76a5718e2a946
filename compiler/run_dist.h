/* compiler/run_dist.h — data-parallel training for `dtlc run` (internal to compiler/run.c).
 *
 * Contract: a dtl_dist is this process's part of a world of N > 1 ranks training one train
 * block with `parallel = data` (docs/distributed.md). compiler/run.c drives it:
 *   1. dtl_dist_check, before lowering: the train block asks for data parallelism over this
 *      many ranks and its global batch divides by N (the same answer on every rank, so every
 *      rank fails alike before any rank waits for another). run.c then lowers with the local
 *      batch batch/N and split_step (compiler/lower.h: the GRAD and UPDATE graphs).
 *   2. dtl_dist_join, once the data is loaded: joins the world (runtime/comm/comm.h) with a
 *      hash of everything that must agree (the sources, the params' names and shapes, the
 *      options that change results: `what`) and the collectives of a step (the gradient
 *      buckets of runtime/comm/ddp.h, then the evaluation's sums), so a rank that differs
 *      fails at start. Until dtl_dist_started the world's timeout is at least
 *      DTL_DIST_START_TIMEOUT: compiling the plans and the first step may take long on some
 *      ranks while the others wait.
 *   3. dtl_dist_plan_opts: the options for the GRAD plan (its output-ready hook hands each
 *      gradient to the buckets as soon as backward finishes it); dtl_dist_prepare: the
 *      update's plan (and the UPDATE graph's optimizer moments in the store).
 *   4. dtl_dist_broadcast: rank 0's store (params and optimizer state) to every rank.
 *   5. dtl_dist_step, per step: GRAD on the local batch, gradients and loss averaged over the
 *      ranks (mean), the optimizer on the averages. Every rank then holds the same params,
 *      *loss is the global batch's loss (the mean of the ranks' means, their batches being
 *      equal) and *lr the update's learning rate. On the host backends the update is
 *      sharded (ZeRO-1: each rank updates 1/N of every bucket of params and keeps only that
 *      part of the optimizer moments; the params are all-gathered after it; see
 *      run_dist.c); DTL_SHARD_UPDATE=0 runs the whole UPDATE graph on every rank instead.
 *      (batch_norm normalizes by this rank's rows, as PyTorch's DDP without SyncBatchNorm;
 *      its running statistics are averaged over the ranks after each step.)
 *      dtl_dist_step_done counts the step for dtl_dist_timings (the first is not counted).
 *   6. dtl_dist_sum: f64 sums over the ranks (evaluation metrics), outside a step;
 *      dtl_dist_sync_state, on every rank before a checkpoint is written: the optimizer
 *      moments of all ranks' parts into the store (collective).
 *   7. dtl_dist_end (success: the orderly goodbye) or dtl_dist_abort (any failure: every other
 *      rank fails at once with `why`, naming this rank); both free d.
 * Errors: false with err set; a collective's failure carries the comm layer's message (the
 * dead rank, the collective, its size and the .dtl line). Nothing here prints.
 */
#ifndef DTL_RUN_DIST_H
#define DTL_RUN_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../lang/check.h"
#include "../lang/ctx.h"
#include "../runtime/comm/comm.h"
#include "../runtime/err.h"
#include "../runtime/exec.h"
#include "graph.h"
#include "optim.h"

#define DTL_DIST_START_TIMEOUT 300.0   /* seconds, for start-up and the first step */

typedef struct dtl_dist dtl_dist;

/* Before lowering, on every rank: env->size > 1 ranks train t with global batch `batch` (0:
 * the train block's). false with err set (DTL_ERR_USAGE) when t has no `parallel = data`,
 * asks for tensor or pipeline parallelism, for data(n) with n != env->size, or when batch
 * does not divide by the ranks; the messages say how to fix it. */
bool dtl_dist_check(dtl_ctx *ctx, const dtl_train *t, const dtl_comm_env *env, int64_t batch,
                    dtl_err *err);

/* Joins the world. grad: the GRAD graph (its outputs are what is averaged); be: the backend
 * the plans run on; optim: the optimizer (dtl_lowered.optim); what: the options that change
 * results, as text (hashed with the sources and the params); eval_sums: the run evaluates
 * (dtl_dist_sum of 3 values at each epoch's end). grad, be and optim must outlive d. */
dtl_dist *dtl_dist_join(dtl_ctx *ctx, const dtl_train *t, const dtl_comm_env *env,
                        const dtl_graph *grad, const dtl_backend *be, const dtl_opt_cfg *optim,
                        const char *what, bool eval_sums, dtl_err *err);
int dtl_dist_rank(const dtl_dist *d);
int dtl_dist_size(const dtl_dist *d);
/* The options to plan grad with (the output-ready hook into the buckets). */
void dtl_dist_plan_opts(dtl_dist *d, dtl_plan_opts *o);
/* Binds store to update (the UPDATE graph: its moments) and plans the update d runs (owned
 * by d; update and store must outlive d). */
bool dtl_dist_prepare(dtl_dist *d, const dtl_graph *update, dtl_store *store, dtl_err *err);
/* Every entry of s (params and states, in the store's order) from rank 0 to all. */
bool dtl_dist_broadcast(dtl_dist *d, dtl_store *s, dtl_err *err);
/* One step: grad (planned with dtl_dist_plan_opts) on in[0..nin), then the update on the
 * averaged gradients (in's "step" and "total_steps" passed on). *loss: the global loss; *lr:
 * the update's learning rate. States the forward pass updates (batch_norm's running
 * statistics: GRAD's DTL_OUT_PARAM outputs) are averaged too and written back to store, so
 * every rank holds the same. */
bool dtl_dist_step(dtl_dist *d, dtl_plan *grad, dtl_store *store, const dtl_binding *in,
                   size_t nin, double *loss, double *lr, dtl_err *err);
/* Counts the last step in dtl_dist_timings' averages. */
void dtl_dist_step_done(dtl_dist *d);
/* "rank 0, per step: GRAD … ms, waiting for gradients … ms, sharded update … ms, gathering
 * params … ms (wall); CPU … ms in this thread, … ms in the comm thread", averaged over the
 * counted steps (--timings). Returns buf. */
const char *dtl_dist_timings(const dtl_dist *d, char *buf, size_t cap);
/* The update plan's stats (compile times). */
void dtl_dist_update_stats(const dtl_dist *d, dtl_plan_stats *st);
/* Collective, before a checkpoint: the store's optimizer moments get every rank's parts
 * (with the sharded update each rank keeps only its own up to date); a no-op otherwise. */
bool dtl_dist_sync_state(dtl_dist *d, dtl_store *s, dtl_err *err);
/* The first step is done: the world's timeout goes back to DTL_TIMEOUT. */
void dtl_dist_started(dtl_dist *d);
/* v[0..n) becomes its sum over the ranks (f64). */
bool dtl_dist_sum(dtl_dist *d, double *v, size_t n, dtl_err *err);
/* Seconds the last step waited for gradients after backward (communication not hidden). */
double dtl_dist_wait_seconds(const dtl_dist *d);
/* The provider and interface in use ("shm", "tcp;ofi_rxm on eth0"). */
const char *dtl_dist_transport(const dtl_dist *d, char *buf, size_t cap);
bool dtl_dist_end(dtl_dist *d, dtl_err *err);
void dtl_dist_abort(dtl_dist *d, const char *why);

#endif
