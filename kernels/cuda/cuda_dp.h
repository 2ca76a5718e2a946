/* kernels/cuda/cuda_dp.h — NCCL data parallelism on the CUDA backend: what dtl (compiler/
 * run_dist_cuda.c) asks of the plugin (kernels/cuda/cuda_dp.c). No CUDA header here.
 *
 * Contract:
 *  - dtl_cuda_dp_get (kernels/cuda/cuda_load.c) loads the plugin and returns its table, or
 *    NULL with the reason (no CUDA in this build, no plugin). available() then says whether
 *    NCCL can be loaded (kernels/cuda/cuda_nccl.h: dlopen of libnccl.so.2) and is recent
 *    enough, with its version, without touching a GPU: a run checks it on every rank before
 *    any rank waits for another.
 *  - One rank per GPU: the plugin's context uses $DTL_CUDA_DEVICE, else the local rank (the
 *    launcher's DTL_LOCAL_RANK, LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID or
 *    SLURM_LOCALID) modulo the number of devices, else device 0.
 *  - unique_id (rank 0 only) makes the ncclUniqueId; the caller sends it to every rank
 *    (dtl_comm_broadcast over the bootstrap world) and every rank calls create with it, its
 *    rank and size (collective: ncclCommInitRank returns once all ranks are in; when it has
 *    not within init_timeout_s, the watchdog ends the process: see below), the GRAD
 *    graph's outputs (names, in output order: the ddp tensors, runtime/comm/ddp.h) and the
 *    buckets the host planned with dtl_ddp_plan (first tensor, count of tensors, label each).
 *  - plan_opts gives the options that mark a plan as this dp's: prepare a GRAD plan (outputs
 *    named like the tensors) and an UPDATE plan (inputs named like them) with them. The GRAD
 *    plan then, per run, copies each output into its bucket's device buffer right after the
 *    kernel that finishes it, and issues each bucket's ncclAllReduce (ncclAvg) on the dp's
 *    communication stream as soon as its last tensor is in (an event recorded on the compute
 *    stream, waited on by the communication stream), in bucket order; then joins the
 *    communication stream back (so a CUDA Graph captures the whole step, NCCL included, and
 *    every later run replays it) and writes the averaged forward-updated states (GRAD's PARAM
 *    outputs) into the store's device mirror. The UPDATE plan takes those inputs from the
 *    buckets (device to device: its bindings for them are ignored and may be absent).
 *  - finish, after both plans ran (they return without waiting), waits for the step's
 *    allreduces and gives the averaged loss. A watchdog thread polls the buckets' completion
 *    events and ncclCommGetAsyncError; when a bucket has not completed within the timeout
 *    (kernels/cuda/cuda_watch.h) or NCCL reports an error, it aborts the communicator
 *    (ncclCommAbort) and finish fails with a message naming the collective (size, bucket,
 *    step, label) and the rank(s) waited for. The process must then stop: destroy with
 *    abort = true (if it is still alive 10 s after the failure, the watchdog prints the
 *    message after stuck_prefix and ends it with _exit(stuck_status): a GPU hung in NCCL may
 *    never let it exit; so the user sees the program's usual error form).
 *  - set_timeout: seconds (the caller raises it for the first step, as for the CPU path).
 *  - destroy(dp, false) after the last step: ncclCommDestroy; destroy(dp, true) on any
 *    failure: ncclCommAbort, and the dp's memory is left to the process's exit (the watchdog
 *    keeps running until then, see above).
 * Errors: false/NULL with err set; NCCL's and CUDA's messages are quoted.
 */
#ifndef DTL_CUDA_DP_H
#define DTL_CUDA_DP_H

#include <stdbool.h>
#include <stddef.h>

#include "../../runtime/err.h"
#include "../../runtime/exec.h"

#define DTL_CUDA_DP_ID_BYTES 128

typedef struct dtl_cuda_dp dtl_cuda_dp;

typedef struct dtl_cuda_dp_spec {
    int rank, size;
    unsigned char id[DTL_CUDA_DP_ID_BYTES];
    size_t ntensors;
    const char *const *names;    /* GRAD's output names, in output order ("loss", "grad.w") */
    const int *dtypes;           /* their dtl_dtype (f32 or f64) */
    const size_t *counts;        /* their elements */
    size_t loss;                 /* the loss's index among them */
    size_t nbuckets;
    const size_t *first, *count; /* per bucket: its first tensor, its number of tensors */
    const char *const *labels;   /* per bucket: dtl_ddp_label's */
    double timeout_s;            /* the steps' (set_timeout changes it) */
    double init_timeout_s;       /* ncclCommInitRank's */
    const char *stuck_prefix;    /* a process the watchdog ends: its message's start (NULL: */
    int stuck_status;            /* "error: ", status 1), and its exit status */
} dtl_cuda_dp_spec;

typedef struct dtl_cuda_dp_api {
    bool (*available)(char *why, size_t len);
    bool (*unique_id)(unsigned char *id, dtl_err *err);
    dtl_cuda_dp *(*create)(const dtl_cuda_dp_spec *spec, dtl_err *err);
    void (*plan_opts)(dtl_cuda_dp *dp, dtl_plan_opts *o);
    bool (*finish)(dtl_cuda_dp *dp, double *loss, dtl_err *err);
    double (*wait_seconds)(const dtl_cuda_dp *dp);   /* the last finish's wait */
    void (*set_timeout)(dtl_cuda_dp *dp, double seconds);
    void (*destroy)(dtl_cuda_dp *dp, bool abort);    /* NULL is fine */
} dtl_cuda_dp_api;

/* The plugin's table (loading the plugin), or NULL with the reason in why[0..len). */
const dtl_cuda_dp_api *dtl_cuda_dp_get(char *why, size_t len);

#endif
