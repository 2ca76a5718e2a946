/* runtime/comm/ddp.h — data-parallel gradient averaging: buckets, reduced by a comm thread
 * while the backward pass still runs; sharded buckets for an optimizer update split over ranks.
 *
 * Contract:
 *  - The gradients of one step are a fixed list of tensors (f32 or f64, each a count of
 *    elements and a name), given in the order the backward pass produces them (the reverse of
 *    the params' declaration order is a good guess; any order is correct, only the overlap
 *    depends on it). dtl_ddp_plan cuts that list into buckets of consecutive tensors of one
 *    dtype and one kind (sharded or not, below), each at most bucket_bytes (a tensor larger
 *    than that is a bucket of its own); it is a pure function, so every rank computes the
 *    same buckets, and dtl_ddp_sig (dtl_ddp_gather_sig) gives the collective signatures of
 *    one step (for dtl_comm_opts, before dtl_comm_init).
 *  - dtl_ddp_new starts one comm thread that owns the communicator c between
 *    dtl_ddp_begin and dtl_ddp_finish of each step; outside those the caller may use c itself
 *    (metrics, broadcasts), never during. One step: dtl_ddp_begin; then dtl_ddp_ready(k, data)
 *    once for every tensor k, in any order, from the thread that called begin (typically from
 *    a backend's output-ready hook, runtime/exec.h): its elements are copied into the bucket's
 *    buffer at once (data may be reused by the caller as soon as ready returns); a bucket whose
 *    tensors are all in is allreduced (mean over c; sharded buckets: reduce-scattered, below)
 *    by the comm thread, in bucket order — as soon as it is full, or once finish is called
 *    when dtl_ddp_set_overlap(d, false); dtl_ddp_finish waits for every bucket and then
 *    dtl_ddp_grad(k) is the averaged tensor k (valid until the next dtl_ddp_begin).
 *  - Every rank averages the same buckets in the same order with the same labels, so the
 *    result is bitwise identical on every rank (runtime/comm/comm.h's reduction contract).
 *  - Sharded tensors (dtl_ddp_tensor.shard: a ZeRO-1 style update, docs/distributed.md). A
 *    bucket holds tensors that are all sharded or all not. A sharded bucket of `count`
 *    elements is padded to world × part elements (part = ceil(count / world)) and
 *    reduce-scattered (mean) instead of allreduced: rank r keeps the mean of elements
 *    [r·part, (r+1)·part) of the bucket only. For a tensor k of it, dtl_ddp_part gives the
 *    elements of k in that range, [lo, lo+n) (n may be 0), and dtl_ddp_grad(k) points at
 *    their means (n elements; for a tensor that is not sharded: all of it, lo 0). A rank
 *    that has updated its part of some values (params, optimizer moments) gives every rank
 *    the whole with dtl_ddp_gather: for each sharded bucket, in order, an all-gather of the
 *    ranks' parts — collective, called between finish and the next begin, on the caller's
 *    thread. A bucket of one tensor whose count divides by the world is gathered straight
 *    into the caller's tensor; other buckets through the bucket's buffer, then copied out.
 *  - Failure: a failed allreduce (a peer died, a timeout) is reported by dtl_ddp_finish with
 *    the comm layer's message (it names the dead rank, the bucket's size and label); the
 *    buckets after it are not started. A tensor announced twice, or finish before all are
 *    announced, is DTL_ERR_INTERNAL. After a failure only dtl_ddp_free is useful.
 *  - A world of size 1 starts no thread: dtl_ddp_ready copies, dtl_ddp_finish returns.
 *  - Bucket size: the caller reads DTL_BUCKET_MB (getenv) and hands the string to
 *    dtl_ddp_bucket_bytes, which parses it (or gives DTL_DDP_BUCKET_BYTES for NULL/""); the
 *    same bytes then go to dtl_ddp_plan/dtl_ddp_sig and dtl_ddp_new, so the signatures and
 *    the buckets agree. (Every rank must see the same value; the signature check at
 *    dtl_comm_init catches ranks that do not.)
 *  - Errors name the bucket: its label is the one given to dtl_ddp_new with the bucket's
 *    tensors inserted before " @ " ("gradients @ m.dtl:25" becomes "gradients of fc2.b, fc2.w
 *    @ m.dtl:25"; at most 6 names, then "and N more"), so a failed allreduce reads "rank 1:
 *    allreduce f32[1290] (5.2 kB) for gradients of fc2.b, fc2.w @ m.dtl:25: rank 0 … died".
 *  - dtl_ddp_free joins the comm thread: after a finish it is idle; without one (a step
 *    abandoned mid-way) the allreduce in flight, if any, completes or fails first (bounded by
 *    DTL_TIMEOUT) and no further bucket starts. Free the dtl_ddp before the communicator
 *    (dtl_comm_free, dtl_comm_abort).
 */
#ifndef DTL_COMM_DDP_H
#define DTL_COMM_DDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "comm.h"

#define DTL_DDP_BUCKET_BYTES ((size_t)4 << 20)   /* default; DTL_BUCKET_MB overrides */

typedef struct dtl_ddp_tensor {
    const char *name;      /* e.g. "fc1.w" (the param whose gradient it is) */
    dtl_dtype dtype;       /* f32 or f64 */
    size_t count;          /* elements */
    bool shard;            /* reduce-scattered: each rank keeps the mean of its part only */
} dtl_ddp_tensor;

typedef struct dtl_ddp_bucket {
    size_t first, n;       /* tensors first .. first+n-1 of the list */
    dtl_dtype dtype;
    size_t count;          /* elements, all its tensors together */
    bool shard;            /* reduce-scattered (its tensors are sharded), else allreduced */
    size_t part;           /* shard: elements per rank, ceil(count / world); else count */
} dtl_ddp_bucket;

/* Cuts t[0..n) into buckets (see the contract) for a world of `world` ranks into
 * out[0..*nb); out has room for n. false with err set for a dtype other than f32/f64,
 * bucket_bytes 0 or world < 1. */
bool dtl_ddp_plan(const dtl_ddp_tensor *t, size_t n, size_t bucket_bytes, int world,
                  dtl_ddp_bucket *out, size_t *nb, dtl_err *err);

/* The signature of bucket b's reduction for dtl_comm_opts.sigs (dtl_comm_sig of "allreduce"
 * with its count, or "reduce_scatter" with its part; its dtype, mean, and label). Returns
 * buf. */
char *dtl_ddp_sig(char *buf, size_t cap, const dtl_ddp_bucket *b, const char *label);
/* The signature of a sharded bucket b's all-gather in dtl_ddp_gather. Returns buf. */
char *dtl_ddp_gather_sig(char *buf, size_t cap, const dtl_ddp_bucket *b, const char *label);

typedef struct dtl_ddp dtl_ddp;

/* label: what the buckets serve, for error messages (e.g. "gradients @ mnist.dtl:25").
 * t is copied. */
dtl_ddp *dtl_ddp_new(dtl_comm *c, const dtl_ddp_tensor *t, size_t n, size_t bucket_bytes,
                     const char *label, dtl_err *err);
bool dtl_ddp_begin(dtl_ddp *d, dtl_err *err);
/* Tensor k's local gradient (t[k].count elements of t[k].dtype). */
void dtl_ddp_ready(dtl_ddp *d, size_t k, const void *data);
/* Waits for every bucket; false with err set when an allreduce failed. */
bool dtl_ddp_finish(dtl_ddp *d, dtl_err *err);
/* The averaged tensor k after a successful finish: its elements [lo, lo+n) of dtl_ddp_part
 * (all of it unless sharded). The caller may change them (clipping) until the next begin. */
void *dtl_ddp_grad(const dtl_ddp *d, size_t k);
/* Tensor k's part on this rank: elements [*lo, *lo + *n) (n may be 0); the whole tensor
 * when it is not sharded or the world has one rank. */
void dtl_ddp_part(const dtl_ddp *d, size_t k, size_t *lo, size_t *n);
/* Collective over the sharded buckets (see the contract), between finish and the next begin:
 * full[k] (t[k].count elements) gets every rank's part of tensor k, this rank's from part[k]
 * (its dtl_ddp_part's n elements; may be full[k] + lo). full and part are indexed by tensor
 * and read for sharded tensors only. what: what is gathered, for labels ("params @
 * m.dtl:25": "params of fc1.w @ m.dtl:25"). false with err set (the comm layer's message)
 * when an all-gather failed; d is then broken, as after a failed finish. */
bool dtl_ddp_gather(dtl_ddp *d, void *const *full, const void *const *part, const char *what,
                    dtl_err *err);
/* true (the default): a bucket is reduced as soon as its tensors are in, while the caller
 * computes on; false: the buckets wait for finish, and are reduced while it waits — for hosts
 * whose CPUs the ranks' computing already fills, where the comm thread would only take turns
 * with it (DTL_DDP_OVERLAP, compiler/run_dist.c). Between steps only. */
void dtl_ddp_set_overlap(dtl_ddp *d, bool overlap);
/* CPU seconds the comm thread spent in the last step's collectives (its spinning included). */
double dtl_ddp_comm_cpu_seconds(const dtl_ddp *d);
/* The bucket size for DTL_BUCKET_MB's value mb (megabytes of 2^20 bytes, may be
 * fractional: "0.25"); NULL or "" gives DTL_DDP_BUCKET_BYTES. false with err set
 * (DTL_ERR_USAGE, naming DTL_BUCKET_MB) when malformed or not in (0, 1e6]. */
bool dtl_ddp_bucket_bytes(const char *mb, size_t *out, dtl_err *err);
/* Bucket b's label as it appears in error messages (see the contract); NULL when b >= the
 * number of buckets. */
const char *dtl_ddp_label(const dtl_ddp *d, size_t b);
/* Seconds the last step's finish waited for buckets (communication not hidden by compute). */
double dtl_ddp_wait_seconds(const dtl_ddp *d);
/* Joins the comm thread (an allreduce in progress ends first: it fails at once in a failed
 * world). The buckets stay allocated: after a failure the transport may still write into them
 * until the communicator is freed, so a failing caller stops, frees the communicator, and only
 * then frees d. NULL is fine; a second call does nothing. */
void dtl_ddp_stop(dtl_ddp *d);
void dtl_ddp_free(dtl_ddp *d);   /* NULL is fine; joins the thread (dtl_ddp_stop) */

#endif
