/* kernels/cuda/cuda_dp.c — NCCL data parallelism in the CUDA plugin (cuda_dp.h, cuda_dp_impl.h).
 *
 * Design. A dtl_cuda_dp owns the NCCL communicator, a communication stream, one device
 * buffer holding every bucket (each 256-byte aligned, its tensors packed in order), two
 * event per bucket (ready: recorded on the compute stream once its last tensor is copied
 * in), a join event and a step-done event, pinned host words (the loss; one completion flag
 * per bucket) and the watchdog thread.
 *
 * Readiness. The backend tells, for each GRAD output, the last step that writes it. After
 * step i the producer copies the tensors finished at i into their bucket slots (device to
 * device, on the compute stream: gradients keep the plan's memory plan, the buckets are
 * contiguous for NCCL), and issues every bucket whose turn has come: bucket b goes once it
 * and all buckets before it are complete (NCCL needs every rank to issue the same
 * collectives in the same order; every rank has the same plan, but bucket order also keeps
 * the watchdog's "completes in order" simple). Issuing is: ready[b] recorded on the compute
 * stream, the communication stream waits for it, ncclAllReduce(ncclAvg) in place, the
 * loss (in its bucket) copied to the pinned word, and a device word holding 1 copied to the
 * bucket's pinned flag (the host reset it before the launch). A copy is an ordinary node of
 * a captured CUDA Graph, so the flags tell the host which buckets completed in a replayed
 * graph too (an event recorded inside a graph would not: until its node runs, it reads as
 * the previous record, complete). After the
 * last step the compute stream waits on the join event (the capture's fork and join; it
 * also orders the UPDATE plan after the allreduces) and copies the averaged forward-updated
 * states into the mirror. Everything is on streams, nothing waits on the host, so the
 * backend's graph capture takes the whole step, NCCL kernels included, and replays it.
 *
 * Waiting. finish polls the step-done event (recorded on the compute stream right after the
 * launch, outside any graph), checking the watchdog's verdict as it goes. The watchdog polls
 * (every 5 ms while a step is in flight, 50 ms otherwise) the flags in order and
 * ncclCommGetAsyncError, and decides with dtl_cu_watch_check (cuda_watch.h); on a
 * timeout or an NCCL error it records the message, aborts the communicator (which ends the
 * NCCL kernels, so the synchronize returns) and marks the dp failed. An arming generation
 * keeps a slow poll of one step from being taken for the next. Ten seconds after a failure
 * a process still alive is ended by the watchdog (message on stderr in the program's error
 * form, with its status: the spec's stuck_prefix and stuck_status): a GPU stuck in a
 * collective can keep a process from ever exiting. So an aborted dp is never freed (its
 * thread must outlive everything else): destroy(dp, true) aborts and returns.
 *
 * Start-up. The watchdog starts before ncclCommInitRank, which returns only once every rank
 * has joined and has no timeout: when it has not returned within the timeout (a rank died or
 * never got there), the watchdog ends the process the same way (there is no communicator
 * to abort yet).
 *
 * NCCL is loaded once per process (pthread_once, like the backend's context). */
#define _POSIX_C_SOURCE 200809L
#include "cuda_dp_impl.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuda_nccl.h"
#include "cuda_watch.h"

enum { DP_ALIGN = 256, DP_MSG = 1200 };

/* ---- NCCL, loaded once ---- */

static struct {
    bool ok;
    dtl_nccl n;
    char why[600];
} the_nccl;
static pthread_once_t the_nccl_once = PTHREAD_ONCE_INIT;

static void nccl_init(void)
{
    the_nccl.ok = dtl_nccl_load(&the_nccl.n, the_nccl.why, sizeof the_nccl.why);
}

static const dtl_nccl *nccl_get(dtl_err *err)
{
    pthread_once(&the_nccl_once, nccl_init);
    if (!the_nccl.ok) {
        dtl_err_set(err, DTL_ERR_USAGE, "cuda data parallel: %s", the_nccl.why);
        return NULL;
    }
    return &the_nccl.n;
}

bool dtl_cu_dp_available(char *why, size_t len)
{
    pthread_once(&the_nccl_once, nccl_init);
    if (why && len) {
        int v = the_nccl.n.version;
        if (the_nccl.ok)
            snprintf(why, len, "NCCL %d.%d.%d (%s)", v / 10000, v / 100 % 100, v % 100,
                     the_nccl.n.path);
        else
            snprintf(why, len, "%s", the_nccl.why);
    }
    return the_nccl.ok;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define DP_CU(call, what)                                                                    \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess)                                                               \
            return dtl_err_set(err, DTL_ERR_INTERNAL, "cuda data parallel: %s: %s", (what),  \
                               cudaGetErrorString(e_));                                      \
    } while (0)

bool dtl_cu_dp_unique_id(unsigned char *id, dtl_err *err)
{
    const dtl_nccl *n = nccl_get(err);
    if (!n)
        return false;
    dtl_nccl_id u;
    dtl_nccl_result r = n->get_unique_id(&u);
    if (r != DTL_NCCL_SUCCESS)
        return dtl_err_set(err, DTL_ERR_IO, "ncclGetUniqueId: %s", n->error_string(r));
    memcpy(id, u.internal, DTL_NCCL_ID_BYTES);
    return true;
}

/* ---- the dp ---- */

struct dtl_cuda_dp {
    const dtl_nccl *nc;
    dtl_nccl_comm comm;
    int rank, size, device;
    size_t nt, nb, loss;
    char **names;
    int *dtype;               /* per tensor, dtl_dtype */
    size_t *count, *bucket, *off, *bytes;   /* per tensor; off: bytes into buf */
    size_t *bfirst, *bn, *bcount, *boff;    /* per bucket */
    char **labels;
    char *buf;                /* device */
    void *loss_host;          /* pinned, 8 bytes */
    cudaStream_t comm_stream;
    cudaEvent_t *ready, join, stepdone;
    bool have_stream, have_join, have_stepdone;
    size_t nready;
    volatile uint32_t *flags; /* pinned, per bucket: 1 once its allreduce completed */
    uint32_t *one;            /* device: the word 1, copied into the flags */
    pthread_t watchdog;
    bool have_thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    bool initing;             /* in ncclCommInitRank (since armed_at) */
    bool armed, failed, quit, aborted;
    int refs;                 /* the host's, and one per attached plan (dp_release) */
    uint64_t gen, step;
    double armed_at, fail_at, timeout, init_timeout;
    double *done_at;
    char msg[DP_MSG];
    char stuck_prefix[64];    /* the spec's: how a message the watchdog prints begins */
    int stuck_status;         /* and the status it ends the process with */
    /* the caller's thread */
    double wait_s;
    uint64_t test_hang;       /* DTL_TEST_NCCL_HANG: the step whose launch a test blocks */
};

void dtl_cu_dp_hook(void *ctx, uint32_t k, const dtl_tensor *value)
{
    (void)ctx;
    (void)k;
    (void)value;
}

dtl_cuda_dp *dtl_cu_dp_of(const dtl_plan_opts *o)
{
    return o && o->output_ready == dtl_cu_dp_hook ? o->ready_ctx : NULL;
}

void dtl_cu_dp_plan_opts(dtl_cuda_dp *dp, dtl_plan_opts *o)
{
    memset(o, 0, sizeof *o);
    o->output_ready = dtl_cu_dp_hook;
    o->ready_ctx = dp;
}

/* Ends a process that cannot get out of NCCL by itself: msg and why, in the form of the
 * program's own error path (the spec's stuck_prefix and stuck_status). */
static _Noreturn void stuck_exit(const dtl_cuda_dp *dp, const char *msg, const char *why)
{
    fprintf(stderr, "%s%s (%s: ended by the NCCL watchdog)\n", dp->stuck_prefix, msg, why);
    fflush(stderr);
    _exit(dp->stuck_status);
}

/* Started (detached) by the first failure: a process still alive 10 s later is stuck (in a
 * CUDA call waiting for a GPU that an NCCL kernel holds, or in ncclCommAbort itself): it is
 * ended with the failure's message. The dp of a failed run is never freed, so msg stays. */
static void *reaper_main(void *vdp)
{
    const dtl_cuda_dp *dp = vdp;
    struct timespec ts = {10, 0};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    stuck_exit(dp, dp->msg, "the process did not stop within 10 s of it");
}

static void fail_locked(dtl_cuda_dp *dp, const char *msg)
{
    if (dp->failed)
        return;
    dp->failed = true;
    dp->fail_at = now_s();
    snprintf(dp->msg, sizeof dp->msg, "rank %d: %s", dp->rank, msg);
    pthread_cond_broadcast(&dp->cv);
    pthread_t t;
    pthread_attr_t a;
    if (pthread_attr_init(&a) == 0) {
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_create(&t, &a, reaper_main, dp);
        pthread_attr_destroy(&a);
    }
}

/* Aborts the communicator once (outside the lock: ncclCommAbort may take a while). */
static void abort_comm(dtl_cuda_dp *dp)
{
    pthread_mutex_lock(&dp->mu);
    bool todo = dp->comm && !dp->aborted;
    dp->aborted = true;
    pthread_mutex_unlock(&dp->mu);
    if (todo)
        dp->nc->comm_abort(dp->comm);
}

static void *watchdog_main(void *vdp)
{
    dtl_cuda_dp *dp = vdp;
    cudaSetDevice(dp->device);   /* (this thread's CUDA and NCCL calls: the rank's device) */
    pthread_mutex_lock(&dp->mu);
    while (!dp->quit) {
        if (dp->initing) {
            /* ncclCommInitRank returns once every rank has joined; it has no timeout and
             * cannot be aborted before it returns a communicator: the process is ended */
            double waited = now_s() - dp->armed_at;
            if (waited > dp->init_timeout) {
                char m[DP_MSG];
                snprintf(m, sizeof m, "rank %d: ncclCommInitRank (%d ranks, device %d) has not "
                         "completed after %.1f s (DTL_TIMEOUT=%g): a rank has not joined the "
                         "NCCL communicator", dp->rank, dp->size, dp->device, waited,
                         dp->init_timeout);
                stuck_exit(dp, m, "it cannot be aborted");
            }
        } else if (dp->failed) {
            /* nothing more to watch (the reaper ends a process that does not stop) */
        } else if (dp->armed) {
            uint64_t gen = dp->gen, step = dp->step;
            size_t first = 0;
            while (first < dp->nb && dp->done_at[first] >= 0)
                first++;
            pthread_mutex_unlock(&dp->mu);
            size_t upto = first;
            char why[400] = "";
            while (upto < dp->nb && dp->flags[upto] == 1)
                upto++;
            dtl_nccl_result ae = DTL_NCCL_SUCCESS;
            if (dp->nc->comm_get_async_error(dp->comm, &ae) == DTL_NCCL_SUCCESS &&
                ae != DTL_NCCL_SUCCESS && ae != DTL_NCCL_IN_PROGRESS)
                snprintf(why, sizeof why, "NCCL reports an error in step %llu: %s",
                         (unsigned long long)step, dp->nc->error_string(ae));
            double t = now_s();
            pthread_mutex_lock(&dp->mu);
            if (gen == dp->gen && dp->armed && !dp->failed) {
                for (size_t b = first; b < upto; b++)
                    dp->done_at[b] = t;
                size_t sb = 0;
                double waited = 0;
                dtl_cu_watch_state st = dtl_cu_watch_check(dp->done_at, dp->nb, dp->armed_at,
                                                           dp->timeout, t, &sb, &waited);
                if (st == DTL_CU_WATCH_DONE) {
                    dp->armed = false;
                    pthread_cond_broadcast(&dp->cv);
                } else if (why[0] || st == DTL_CU_WATCH_STUCK) {
                    char m[DP_MSG - 20];
                    if (!why[0]) {
                        int dt = dp->dtype[dp->bfirst[sb]];
                        dtl_cu_watch_message(m, sizeof m, dp->rank, dp->size,
                                             dtl_dtype_name((dtl_dtype)dt), dp->bcount[sb],
                                             dtl_dtype_size((dtl_dtype)dt), sb, dp->nb,
                                             dp->step, dp->labels[sb], waited, dp->timeout);
                    } else {
                        snprintf(m, sizeof m, "%s", why);
                    }
                    fail_locked(dp, m);
                    pthread_mutex_unlock(&dp->mu);
                    abort_comm(dp);
                    pthread_mutex_lock(&dp->mu);
                    continue;
                }
            }
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = (dp->armed && !dp->failed) || dp->initing ? 5000000L : 50000000L;
        ts.tv_nsec += ns;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&dp->cv, &dp->mu, &ts);
    }
    pthread_mutex_unlock(&dp->mu);
    return NULL;
}

static void dp_free_memory(dtl_cuda_dp *dp)
{
    for (size_t b = 0; b < dp->nb; b++) {
        if (b < dp->nready)
            cudaEventDestroy(dp->ready[b]);
    }
    if (dp->have_join)
        cudaEventDestroy(dp->join);
    if (dp->have_stepdone)
        cudaEventDestroy(dp->stepdone);
    if (dp->flags)
        cudaFreeHost((void *)dp->flags);
    if (dp->one)
        cudaFree(dp->one);
    if (dp->have_stream)
        cudaStreamDestroy(dp->comm_stream);
    if (dp->buf)
        cudaFree(dp->buf);
    if (dp->loss_host)
        cudaFreeHost(dp->loss_host);
    for (size_t k = 0; dp->names && k < dp->nt; k++)
        free(dp->names[k]);
    for (size_t b = 0; dp->labels && b < dp->nb; b++)
        free(dp->labels[b]);
    free(dp->names);
    free(dp->labels);
    free(dp->dtype);
    free(dp->count);
    free(dp->bucket);
    free(dp->off);
    free(dp->bytes);
    free(dp->bfirst);
    free(dp->bn);
    free(dp->bcount);
    free(dp->boff);
    free(dp->ready);
    free(dp->done_at);
    free(dp);
}

static char *dupstr(const char *s)
{
    size_t n = strlen(s ? s : "") + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s ? s : "", n);
    return d;
}

static bool dp_setup(dtl_cuda_dp *dp, const dtl_cuda_dp_spec *s, dtl_err *err)
{
    size_t nt = s->ntensors, nb = s->nbuckets;
    dp->names = calloc(nt + 1, sizeof *dp->names);
    dp->dtype = calloc(nt + 1, sizeof *dp->dtype);
    dp->count = calloc(nt + 1, sizeof *dp->count);
    dp->bucket = calloc(nt + 1, sizeof *dp->bucket);
    dp->off = calloc(nt + 1, sizeof *dp->off);
    dp->bytes = calloc(nt + 1, sizeof *dp->bytes);
    dp->labels = calloc(nb + 1, sizeof *dp->labels);
    dp->bfirst = calloc(nb + 1, sizeof *dp->bfirst);
    dp->bn = calloc(nb + 1, sizeof *dp->bn);
    dp->bcount = calloc(nb + 1, sizeof *dp->bcount);
    dp->boff = calloc(nb + 1, sizeof *dp->boff);
    dp->ready = calloc(nb + 1, sizeof *dp->ready);
    dp->done_at = calloc(nb + 1, sizeof *dp->done_at);
    if (!dp->names || !dp->dtype || !dp->count || !dp->bucket || !dp->off || !dp->bytes ||
        !dp->labels || !dp->bfirst || !dp->bn || !dp->bcount || !dp->boff || !dp->ready ||
        !dp->done_at)
        return dtl_err_set(err, DTL_ERR_NOMEM, "cuda data parallel: out of memory");
    dp->nt = nt;
    dp->nb = nb;
    dp->loss = s->loss;
    for (size_t k = 0; k < nt; k++) {
        dtl_dtype t = (dtl_dtype)s->dtypes[k];
        if (t != DTL_DTYPE_F32 && t != DTL_DTYPE_F64)
            return dtl_err_set(err, DTL_ERR_USAGE, "cuda data parallel: %s is %s: only f32 "
                               "and f64 are averaged", s->names[k], dtl_dtype_name(t));
        if (!(dp->names[k] = dupstr(s->names[k])))
            return dtl_err_set(err, DTL_ERR_NOMEM, "cuda data parallel: out of memory");
        dp->dtype[k] = (int)t;
        dp->count[k] = s->counts[k];
        dp->bytes[k] = s->counts[k] * dtl_dtype_size(t);
        dp->bucket[k] = SIZE_MAX;
    }
    size_t at = 0;
    for (size_t b = 0; b < nb; b++) {
        if (!(dp->labels[b] = dupstr(s->labels[b])))
            return dtl_err_set(err, DTL_ERR_NOMEM, "cuda data parallel: out of memory");
        dp->bfirst[b] = s->first[b];
        dp->bn[b] = s->count[b];
        if (s->count[b] == 0 || s->first[b] + s->count[b] > nt)
            return dtl_err_set(err, DTL_ERR_INTERNAL, "cuda data parallel: bucket %zu "
                               "(tensors %zu + %zu) is outside the %zu tensors", b,
                               s->first[b], s->count[b], nt);
        at = (at + DP_ALIGN - 1) / DP_ALIGN * DP_ALIGN;
        dp->boff[b] = at;
        for (size_t i = s->first[b]; i < s->first[b] + s->count[b]; i++) {
            if (dp->bucket[i] != SIZE_MAX || dp->dtype[i] != dp->dtype[s->first[b]])
                return dtl_err_set(err, DTL_ERR_INTERNAL, "cuda data parallel: tensor %zu "
                                   "(%s) is in two buckets or its bucket mixes dtypes", i,
                                   dp->names[i]);
            dp->bucket[i] = b;
            dp->off[i] = at;
            at += dp->bytes[i];
            dp->bcount[b] += dp->count[i];
        }
    }
    for (size_t k = 0; k < nt; k++)
        if (dp->bucket[k] == SIZE_MAX)
            return dtl_err_set(err, DTL_ERR_INTERNAL, "cuda data parallel: tensor %zu (%s) "
                               "is in no bucket", k, dp->names[k]);
    if (dp->loss >= nt)
        return dtl_err_set(err, DTL_ERR_INTERNAL, "cuda data parallel: no loss tensor");
    DP_CU(cudaMalloc((void **)&dp->buf, at ? at : 1), "device memory for the buckets");
    DP_CU(cudaMemset(dp->buf, 0, at ? at : 1), "clearing the buckets");
    DP_CU(cudaHostAlloc(&dp->loss_host, 8, cudaHostAllocDefault), "pinned memory for the loss");
    DP_CU(cudaStreamCreateWithFlags(&dp->comm_stream, cudaStreamNonBlocking),
          "the communication stream");
    dp->have_stream = true;
    for (; dp->nready < nb; dp->nready++)
        DP_CU(cudaEventCreateWithFlags(&dp->ready[dp->nready], cudaEventDisableTiming),
              "cudaEventCreate");
    DP_CU(cudaEventCreateWithFlags(&dp->join, cudaEventDisableTiming), "cudaEventCreate");
    dp->have_join = true;
    DP_CU(cudaEventCreateWithFlags(&dp->stepdone, cudaEventDisableTiming), "cudaEventCreate");
    dp->have_stepdone = true;
    void *flags;
    DP_CU(cudaHostAlloc(&flags, (nb + 1) * sizeof *dp->flags, cudaHostAllocDefault),
          "pinned memory for the buckets' flags");
    dp->flags = flags;
    for (size_t b = 0; b < nb; b++) {
        dp->flags[b] = 0;
        dp->done_at[b] = -1;
    }
    const uint32_t one = 1;
    DP_CU(cudaMalloc((void **)&dp->one, sizeof one), "device memory");
    DP_CU(cudaMemcpy(dp->one, &one, sizeof one, cudaMemcpyHostToDevice), "device memory");
    /* (the legacy stream's memset and copies, before the non-blocking streams read them) */
    DP_CU(cudaStreamSynchronize(0), "setting up device memory");
    return true;
}

dtl_cuda_dp *dtl_cu_dp_create(const dtl_cuda_dp_spec *s, int device, dtl_err *err)
{
    const dtl_nccl *n = nccl_get(err);
    if (!n)
        return NULL;
    dtl_cuda_dp *dp = calloc(1, sizeof *dp);
    if (!dp) {
        dtl_err_set(err, DTL_ERR_NOMEM, "cuda data parallel: out of memory");
        return NULL;
    }
    dp->nc = n;
    dp->rank = s->rank;
    dp->size = s->size;
    dp->device = device;
    dp->timeout = s->timeout_s;
    const char *hang = getenv("DTL_TEST_NCCL_HANG");
    dp->test_hang = hang && *hang ? strtoull(hang, NULL, 10) : 0;
    cudaError_t ce = cudaSetDevice(device);
    if (ce != cudaSuccess) {
        dtl_err_set(err, DTL_ERR_INTERNAL, "cuda data parallel: cudaSetDevice(%d): %s", device,
                    cudaGetErrorString(ce));
        dp_free_memory(dp);
        return NULL;
    }
    if (!dp_setup(dp, s, err)) {
        dp_free_memory(dp);
        return NULL;
    }
    snprintf(dp->stuck_prefix, sizeof dp->stuck_prefix, "%s",
             s->stuck_prefix ? s->stuck_prefix : "error: ");
    dp->stuck_status = s->stuck_prefix ? s->stuck_status : 1;
    pthread_mutex_init(&dp->mu, NULL);
    pthread_cond_init(&dp->cv, NULL);
    dp->refs = 1;
    dp->initing = true;   /* (the watchdog watches ncclCommInitRank too) */
    dp->init_timeout = s->init_timeout_s > 0 ? s->init_timeout_s : s->timeout_s;
    dp->armed_at = now_s();
    int e = pthread_create(&dp->watchdog, NULL, watchdog_main, dp);
    if (e != 0) {
        dtl_err_set(err, DTL_ERR_INTERNAL, "cuda data parallel: the watchdog thread: %s",
                    strerror(e));
        pthread_cond_destroy(&dp->cv);
        pthread_mutex_destroy(&dp->mu);
        dp_free_memory(dp);
        return NULL;
    }
    dp->have_thread = true;
    dtl_nccl_id id;
    memcpy(id.internal, s->id, DTL_NCCL_ID_BYTES);
    dtl_nccl_result r = n->comm_init_rank(&dp->comm, s->size, id, s->rank);
    pthread_mutex_lock(&dp->mu);
    dp->initing = false;
    if (r != DTL_NCCL_SUCCESS)
        dp->quit = true;
    pthread_cond_broadcast(&dp->cv);
    pthread_mutex_unlock(&dp->mu);
    if (r != DTL_NCCL_SUCCESS) {
        dtl_err_set(err, DTL_ERR_IO, "rank %d: ncclCommInitRank (%d ranks, device %d): %s",
                    s->rank, s->size, device, n->error_string(r));
        pthread_join(dp->watchdog, NULL);
        pthread_cond_destroy(&dp->cv);
        pthread_mutex_destroy(&dp->mu);
        dp->comm = NULL;
        dp_free_memory(dp);
        return NULL;
    }
    const char *v = getenv("DTL_CUDA_VERBOSE");
    if (v && *v && strcmp(v, "0") != 0)
        fprintf(stderr, "dtl cuda: rank %d of %d: NCCL %d.%d.%d on device %d, %zu bucket%s, "
                "timeout %g s\n", dp->rank, dp->size, n->version / 10000, n->version / 100 % 100,
                n->version % 100, device, dp->nb, dp->nb == 1 ? "" : "s", dp->timeout);
    return dp;
}

void dtl_cu_dp_set_timeout(dtl_cuda_dp *dp, double seconds)
{
    pthread_mutex_lock(&dp->mu);
    dp->timeout = seconds;
    pthread_mutex_unlock(&dp->mu);
}

double dtl_cu_dp_wait_seconds(const dtl_cuda_dp *dp)
{
    return dp->wait_s;
}

/* Drops one reference (the host's, or an attached plan's). The last one tears down — only
 * then, because ncclCommDestroy waits until every CUDA Graph that captured the communicator's
 * collectives is destroyed, and the plans' graphs go with the plans. A failed dp is never
 * freed (see the design). */
static void dp_release(dtl_cuda_dp *dp)
{
    pthread_mutex_lock(&dp->mu);
    bool last = --dp->refs == 0 && !dp->failed;
    if (last)
        dp->quit = true;
    pthread_cond_broadcast(&dp->cv);
    pthread_mutex_unlock(&dp->mu);
    if (!last)
        return;
    pthread_join(dp->watchdog, NULL);
    dp->nc->comm_destroy(dp->comm);
    pthread_cond_destroy(&dp->cv);
    pthread_mutex_destroy(&dp->mu);
    dp_free_memory(dp);
}

void dtl_cu_dp_destroy(dtl_cuda_dp *dp, bool abort)
{
    if (!dp)
        return;
    pthread_mutex_lock(&dp->mu);
    bool failed = dp->failed;
    if (abort && !failed)
        fail_locked(dp, "the run stopped (another error); the NCCL communicator is aborted");
    pthread_mutex_unlock(&dp->mu);
    if (abort || failed) {
        abort_comm(dp);
        return;
    }
    cudaStreamSynchronize(dp->comm_stream);
    dp_release(dp);
}

bool dtl_cu_dp_finish(dtl_cuda_dp *dp, double *loss, dtl_err *err)
{
    double t0 = now_s();
    pthread_mutex_lock(&dp->mu);
    bool armed = dp->step > 0, failed = dp->failed;
    pthread_mutex_unlock(&dp->mu);
    if (!failed && !armed)
        return dtl_err_set(err, DTL_ERR_INTERNAL, "cuda data parallel: finish without a "
                           "launched step (the GRAD plan was not prepared with the dp's "
                           "options?)");
    /* Polled, not cudaEventSynchronize: a failure the watchdog found ends the wait even when
     * the GPU never gets there. */
    cudaError_t e = cudaSuccess;
    for (unsigned spins = 0; !failed; spins++) {
        e = cudaEventQuery(dp->stepdone);
        if (e != cudaErrorNotReady)
            break;
        e = cudaSuccess;
        if (spins % 64 == 63) {
            pthread_mutex_lock(&dp->mu);
            failed = dp->failed;
            pthread_mutex_unlock(&dp->mu);
        }
        if (spins < 20000) {   /* about the first millisecond: as cudaStreamSynchronize spins */
            sched_yield();
        } else {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
    }
    pthread_mutex_lock(&dp->mu);
    dp->armed = false;
    dp->gen++;
    failed = dp->failed;
    if (!failed && e != cudaSuccess) {
        char m[300];
        snprintf(m, sizeof m, "data-parallel step %llu failed on the GPU: %s (DTL_CUDA_SYNC=1 "
                 "names the kernel)", (unsigned long long)dp->step, cudaGetErrorString(e));
        fail_locked(dp, m);
        failed = true;
    }
    char msg[DP_MSG];
    snprintf(msg, sizeof msg, "%s", dp->msg);
    pthread_mutex_unlock(&dp->mu);
    dp->wait_s = now_s() - t0;
    if (failed) {
        abort_comm(dp);
        return dtl_err_set(err, DTL_ERR_IO, "%s", msg);
    }
    *loss = dp->dtype[dp->loss] == DTL_DTYPE_F64 ? *(const double *)dp->loss_host
                                                  : *(const float *)dp->loss_host;
    return true;
}

/* ---- plans ---- */

struct dtl_cu_dp_plan {
    dtl_cuda_dp *dp;
    bool producer;
    cudaStream_t stream;
    uint32_t nsteps;
    /* producer: per tensor */
    const void **src;
    uint32_t *ready;          /* the step after which tensor k is final */
    void **commit;            /* the mirror's copy of a forward-updated state, or NULL */
    uint32_t *issue;          /* per bucket: the step after which it is issued */
    /* consumer: per tensor */
    void **dst;               /* the input slot, NULL when the graph has no such input */
};

static int64_t find_name(const dtl_cuda_dp *dp, const char *name)
{
    for (size_t k = 0; name && k < dp->nt; k++)
        if (strcmp(dp->names[k], name) == 0)
            return (int64_t)k;
    return -1;
}

bool dtl_cu_dp_attach(dtl_cuda_dp *dp, const dtl_graph *g, void *const *src, void *const *commit,
                      const uint32_t *ready, uint32_t nsteps, void *const *input_ptr,
                      cudaStream_t stream, dtl_cu_dp_plan **out, dtl_err *err)
{
    *out = NULL;
    bool producer = false, consumer = false;
    for (uint32_t k = 0; k < g->nouts; k++)
        producer |= find_name(dp, g->outs[k].name) >= 0;
    for (uint32_t v = 0; !producer && v < g->nnodes; v++)
        consumer |= g->nodes[v].op == DTL_OP_INPUT && find_name(dp, g->nodes[v].name) >= 0;
    if (!producer && !consumer)
        return true;
    dtl_cu_dp_plan *pp = calloc(1, sizeof *pp);
    if (pp) {
        pp->src = calloc(dp->nt + 1, sizeof *pp->src);
        pp->ready = calloc(dp->nt + 1, sizeof *pp->ready);
        pp->commit = calloc(dp->nt + 1, sizeof *pp->commit);
        pp->dst = calloc(dp->nt + 1, sizeof *pp->dst);
        pp->issue = calloc(dp->nb + 1, sizeof *pp->issue);
    }
    if (!pp || !pp->src || !pp->ready || !pp->commit || !pp->dst || !pp->issue) {
        dtl_cu_dp_plan_free(pp);
        dtl_err_set(err, DTL_ERR_NOMEM, "cuda data parallel: out of memory");
        return false;
    }
    pp->dp = dp;
    pp->producer = producer;
    pp->stream = stream;
    pp->nsteps = nsteps;
    if (producer) {
        if (nsteps == 0 || g->nouts != dp->nt) {
            dtl_cu_dp_plan_free(pp);
            dtl_err_set(err, DTL_ERR_INTERNAL, "cuda data parallel: a GRAD plan with %u outputs "
                        "for %zu tensors, or no steps", g->nouts, dp->nt);
            return false;
        }
        for (uint32_t k = 0; k < g->nouts; k++) {
            const dtl_node *n = &g->nodes[g->outs[k].val];
            size_t bytes = (size_t)dtl_node_numel(n) * dtl_dtype_size(n->dtype);
            if (strcmp(g->outs[k].name, dp->names[k]) != 0 || bytes != dp->bytes[k] ||
                (int)n->dtype != dp->dtype[k]) {
                dtl_cu_dp_plan_free(pp);
                dtl_err_set(err, DTL_ERR_INTERNAL, "cuda data parallel: GRAD output %u (%s) "
                            "is not tensor %u (%s) of the buckets", k, g->outs[k].name, k,
                            dp->names[k]);
                return false;
            }
            pp->src[k] = src[k];
            pp->commit[k] = commit[k];
            pp->ready[k] = ready[k] < nsteps ? ready[k] : nsteps - 1;
        }
        uint32_t at = 0;
        for (size_t b = 0; b < dp->nb; b++) {
            for (size_t i = dp->bfirst[b]; i < dp->bfirst[b] + dp->bn[b]; i++)
                if (pp->ready[i] > at)
                    at = pp->ready[i];
            pp->issue[b] = at;
        }
    } else {
        for (uint32_t v = 0; v < g->nnodes; v++) {
            int64_t k = g->nodes[v].op == DTL_OP_INPUT ? find_name(dp, g->nodes[v].name) : -1;
            if (k < 0)
                continue;
            const dtl_node *n = &g->nodes[v];
            if ((size_t)dtl_node_numel(n) * dtl_dtype_size(n->dtype) != dp->bytes[k] ||
                (int)n->dtype != dp->dtype[k]) {
                dtl_cu_dp_plan_free(pp);
                dtl_err_set(err, DTL_ERR_INTERNAL, "cuda data parallel: input %s of the "
                            "UPDATE plan does not match its gradient", n->name);
                return false;
            }
            pp->dst[k] = input_ptr[v];
        }
    }
    pthread_mutex_lock(&dp->mu);
    dp->refs++;
    pthread_mutex_unlock(&dp->mu);
    *out = pp;
    return true;
}

bool dtl_cu_dp_is_producer(const dtl_cu_dp_plan *pp)
{
    return pp && pp->producer;
}

bool dtl_cu_dp_fed(const dtl_cu_dp_plan *pp, const char *input)
{
    if (!pp || pp->producer)
        return false;
    int64_t k = find_name(pp->dp, input);
    return k >= 0 && pp->dst[k];
}

bool dtl_cu_dp_after_step(dtl_cu_dp_plan *pp, uint32_t i, dtl_err *err)
{
    if (!pp || !pp->producer)
        return true;
    dtl_cuda_dp *dp = pp->dp;
    for (size_t k = 0; k < dp->nt; k++)
        if (pp->ready[k] == i && dp->bytes[k])
            DP_CU(cudaMemcpyAsync(dp->buf + dp->off[k], pp->src[k], dp->bytes[k],
                                  cudaMemcpyDeviceToDevice, pp->stream),
                  "copying a gradient into its bucket");
    for (size_t b = 0; b < dp->nb; b++) {
        if (pp->issue[b] != i)
            continue;
        DP_CU(cudaEventRecord(dp->ready[b], pp->stream), "cudaEventRecord");
        DP_CU(cudaStreamWaitEvent(dp->comm_stream, dp->ready[b], 0), "cudaStreamWaitEvent");
        int dt = dp->dtype[dp->bfirst[b]] == DTL_DTYPE_F64 ? DTL_NCCL_FLOAT64 : DTL_NCCL_FLOAT32;
        void *at = dp->buf + dp->boff[b];
        dtl_nccl_result r = dp->nc->all_reduce(at, at, dp->bcount[b], dt, DTL_NCCL_OP_AVG,
                                               dp->comm, dp->comm_stream);
        if (r != DTL_NCCL_SUCCESS && r != DTL_NCCL_IN_PROGRESS)
            return dtl_err_set(err, DTL_ERR_IO, "rank %d: ncclAllReduce %s[%zu] for %s: %s",
                               dp->rank, dtl_dtype_name((dtl_dtype)dp->dtype[dp->bfirst[b]]),
                               dp->bcount[b], dp->labels[b], dp->nc->error_string(r));
        if (dp->bucket[dp->loss] == b)
            DP_CU(cudaMemcpyAsync(dp->loss_host, dp->buf + dp->off[dp->loss],
                                  dp->bytes[dp->loss], cudaMemcpyDeviceToHost, dp->comm_stream),
                  "reading the loss");
        DP_CU(cudaMemcpyAsync((void *)&dp->flags[b], dp->one, sizeof *dp->one,
                              cudaMemcpyDeviceToHost, dp->comm_stream),
              "flagging a bucket's completion");
    }
    if (i + 1 == pp->nsteps) {   /* the join, then the averaged states into the mirror */
        DP_CU(cudaEventRecord(dp->join, dp->comm_stream), "cudaEventRecord");
        DP_CU(cudaStreamWaitEvent(pp->stream, dp->join, 0), "cudaStreamWaitEvent");
        for (size_t k = 0; k < dp->nt; k++)
            if (pp->commit[k] && dp->bytes[k])
                DP_CU(cudaMemcpyAsync(pp->commit[k], dp->buf + dp->off[k], dp->bytes[k],
                                      cudaMemcpyDeviceToDevice, pp->stream),
                      "committing an averaged state");
    }
    return true;
}

bool dtl_cu_dp_feed(dtl_cu_dp_plan *pp, dtl_err *err)
{
    if (!pp || pp->producer)
        return true;
    dtl_cuda_dp *dp = pp->dp;
    for (size_t k = 0; k < dp->nt; k++)
        if (pp->dst[k] && dp->bytes[k])
            DP_CU(cudaMemcpyAsync(pp->dst[k], dp->buf + dp->off[k], dp->bytes[k],
                                  cudaMemcpyDeviceToDevice, pp->stream),
                  "feeding an averaged gradient to the update");
    return true;
}

/* A test's fault (DTL_TEST_NCCL_HANG=S): the compute stream stops before step S's work, in
 * a host function that returns only once the watchdog has given up (or after an hour), so
 * the step's buckets never complete: tests/cuda_dp.sh checks the watchdog's message on one
 * GPU. It is enqueued before the launch, so it is never part of a captured graph. */
static void CUDART_CB test_hang_fn(void *vdp)
{
    dtl_cuda_dp *dp = vdp;
    double t0 = now_s();
    for (;;) {
        pthread_mutex_lock(&dp->mu);
        bool stop = dp->failed || dp->quit;
        pthread_mutex_unlock(&dp->mu);
        if (stop || now_s() - t0 > 3600)
            return;
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
}

bool dtl_cu_dp_before_launch(dtl_cu_dp_plan *pp, dtl_err *err)
{
    if (!pp || !pp->producer)
        return true;
    dtl_cuda_dp *dp = pp->dp;
    /* The previous step is over (finish waited for it): nothing writes the flags now. */
    for (size_t b = 0; b < dp->nb; b++)
        dp->flags[b] = 0;
    pthread_mutex_lock(&dp->mu);
    uint64_t next = dp->step + 1;
    pthread_mutex_unlock(&dp->mu);
    if (dp->test_hang && next == dp->test_hang) {
        fprintf(stderr, "dtl cuda: rank %d: DTL_TEST_NCCL_HANG: step %llu does not start\n",
                dp->rank, (unsigned long long)next);
        DP_CU(cudaLaunchHostFunc(pp->stream, test_hang_fn, dp), "cudaLaunchHostFunc");
    }
    return true;
}

bool dtl_cu_dp_launched(dtl_cu_dp_plan *pp, dtl_err *err)
{
    if (!pp || !pp->producer)
        return true;
    dtl_cuda_dp *dp = pp->dp;
    DP_CU(cudaEventRecord(dp->stepdone, pp->stream), "cudaEventRecord");
    pthread_mutex_lock(&dp->mu);
    dp->gen++;
    dp->step++;
    dp->armed = true;
    dp->armed_at = now_s();
    for (size_t b = 0; b < dp->nb; b++)
        dp->done_at[b] = -1;
    pthread_cond_broadcast(&dp->cv);
    pthread_mutex_unlock(&dp->mu);
    return true;
}

void dtl_cu_dp_plan_free(dtl_cu_dp_plan *pp)
{
    if (!pp)
        return;
    dp_release(pp->dp);
    free(pp->src);
    free(pp->ready);
    free(pp->commit);
    free(pp->dst);
    free(pp->issue);
    free(pp);
}
