/* tests/cuda_emu/cuda_emu.c — a CPU stand-in for the CUDA runtime, cuBLAS and the CUDA
 * plugin's kernel launchers (kernels/cuda/ops.h, dnn.h), linked into a second build of the
 * plugin (tests/cuda_emu/libdtlcuda_emu.so) so that the plugin's host code — plans, memory
 * layouts, fusion programs, input copies on the second stream, CUDA Graph capture and replay,
 * the store's device mirror — runs in `make check` on a machine without a GPU
 * (tests/cuda_emu.sh; docs/cuda.md "Tests").
 *
 * Contract:
 *  - Only what the plugin calls, with the semantics the real ones document. Device memory is host
 *    memory filled with all-ones bytes (NaN, -1) by cudaMalloc, so an element read before it
 *    is written shows. NVRTC, cuBLASLt (the bias / ReLU epilogues) and NCCL (one rank) are
 *    emulated too, below.
 *  - A capture takes the work of every stream that joins it (a wait for an event recorded in
 *    it), in the order the host issued it; a replay runs it on the launching stream.
 *  - Streams are queues run lazily: work runs only when something waits for it or asks
 *    about it (cudaStreamSynchronize, cudaEventSynchronize and cudaEventQuery, a wait of
 *    another stream that then runs, cudaDeviceSynchronize, cudaFree, a copy to pageable
 *    host memory). The legacy (NULL)
 *    stream's work — cudaMemset, cudaMemcpy to the device (the host bytes are taken at the
 *    call, as the real one stages them) — runs only when the legacy stream itself is waited
 *    for: the plugin's streams are non-blocking, so work on them never waits for it. This is
 *    the order the real runtime may choose, at its least convenient: code that forgets a
 *    wait computes with stale or poisoned memory here instead of by luck on a GPU.
 *  - Kernels compute what the reference backend computes (kernels/ref/ref.h), because they
 *    are the reference kernels: each launcher gathers its strided operands into contiguous
 *    tensors and calls dtl_ref_kernel on a node made for them (windowed ops and Adam: the
 *    element functions of window_at.h and adam_at.h, which are ref's). So a difference from
 *    the reference backend in a test on this plugin is a fault of the plugin's host code.
 *    The second build (DTL_EMU_DEVICE_CODE: libdtlcuda_emu_dev.so) has the GPU's own kernels
 *    instead, kernels/cuda/ops.cu and dnn.cu compiled for the CPU (tests/cuda_emu/device.h),
 *    whose launches come here (dtl_emu_kernel) to be queued like any work.
 *  - Matrix products (cuBLAS and cuBLASLt, column-major, with their documented semantics)
 *    accumulate in the element type in k order, as ref's matmul does; bf16 operands are their
 *    exact f32 values, TF32 ones dtl_tf32_round's (kernels/ref/ref.h's definitions).
 *  - Every entry point that touches the streams takes one recursive lock (host functions
 *    enqueued with cudaLaunchHostFunc run under it); the data-parallel watchdog's thread
 *    calls only cudaSetDevice and NCCL's status functions, which take none.
 * Errors: an unsupported call returns cudaErrorNotSupported (CUBLAS_STATUS_NOT_SUPPORTED),
 * and cudaGetErrorString says "not emulated"; a kernel the reference rejects (an index out
 * of range is the launchers' own business) aborts with a message.
 */
#define _GNU_SOURCE 1
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#ifdef HAVE_NVRTC
#include <dlfcn.h>
#include <nvrtc.h>
#include <unistd.h>
#endif

#include "../../kernels/cuda/dnn.h"
#include "../../kernels/cuda/ops.h"
#include "../../kernels/ref/ref.h"
#include "../../runtime/dtype.h"
#include "../../runtime/philox.h"

static pthread_mutex_t mu = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
#define LOCK() pthread_mutex_lock(&mu)
#define UNLOCK() pthread_mutex_unlock(&mu)

static _Noreturn void die(const char *what, const char *why)
{
    fprintf(stderr, "cuda_emu: %s: %s\n", what, why);
    abort();
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("malloc", "out of memory");
    return p;
}

/* ---- streams: queues of work, run when waited for ------------------------------------------ */

typedef struct emu_stream emu_stream;

typedef struct emu_op {
    void (*fn)(const void *arg);   /* NULL: a wait for stream `on` up to position `seq` */
    void *arg;
    size_t size;                   /* arg's bytes */
    bool owned;                    /* arg freed once run (a graph's are the graph's) */
    emu_stream *on;
    size_t seq;
} emu_op;

typedef struct emu_graph {
    emu_op *ops;
    size_t n, cap;
} emu_graph;

/* Positions are counted from the stream's creation: ops [done, end) wait in q, q[0] being
 * position base. */
struct emu_stream {
    emu_op *q;
    size_t base, done, end, cap;
    emu_graph *capture;   /* capturing into it */
};

static emu_stream legacy;
static emu_stream **streams;   /* the streams made (not the legacy one) */
static size_t nstreams, capstreams;

static emu_stream *S(cudaStream_t s)
{
    return s ? (emu_stream *)s : &legacy;
}

static void grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *n = realloc(*arr, c * elem);
    if (!n)
        die("cuda_emu", "out of memory");
    *arr = n;
    *cap = c;
}

static void push(emu_stream *s, emu_op o)
{
    if (s->done == s->end)   /* (everything ran: the queue starts at the end) */
        s->base = s->done;
    grow((void **)&s->q, &s->cap, s->end - s->base + 1, sizeof *s->q);
    s->q[s->end++ - s->base] = o;
}

/* Runs s's work up to (not including) position upto. */
static void run_until(emu_stream *s, size_t upto)
{
    while (s->done < upto && s->done < s->end) {
        emu_op o = s->q[s->done++ - s->base];
        if (!o.fn) {
            run_until(o.on, o.seq);
            continue;
        }
        o.fn(o.arg);
        if (o.owned)
            free(o.arg);
    }
}

static void run_all(void)
{
    for (size_t i = 0; i < nstreams; i++)
        run_until(streams[i], streams[i]->end);
    run_until(&legacy, legacy.end);
}

/* Enqueues fn on s with a copy of the size bytes at arg (or records it in s's capture). */
static void enqueue(cudaStream_t st, void (*fn)(const void *), const void *arg, size_t size)
{
    emu_stream *s = S(st);
    emu_op o = {fn, xmalloc(size), size, true, NULL, 0};
    memcpy(o.arg, arg, size);
    if (s->capture) {
        o.owned = false;
        grow((void **)&s->capture->ops, &s->capture->cap, s->capture->n + 1, sizeof o);
        s->capture->ops[s->capture->n++] = o;
    } else {
        push(s, o);
    }
}

/* enqueue under the lock, for the launchers: cudaSuccess. */
static cudaError_t submit(cudaStream_t s, void (*fn)(const void *), const void *arg,
                          size_t size)
{
    LOCK();
    enqueue(s, fn, arg, size);
    UNLOCK();
    return cudaSuccess;
}

/* ---- memory --------------------------------------------------------------------------------- */

/* Pinned host allocations: an asynchronous copy reads them when it runs (pageable memory is
 * read at the call, as the runtime stages it). */
typedef struct emu_block {
    const char *p;
    size_t n;
} emu_block;
static emu_block *pinned;
static size_t npinned, cappinned;

static bool is_pinned(const void *p)
{
    for (size_t i = 0; i < npinned; i++)
        if ((const char *)p >= pinned[i].p && (const char *)p < pinned[i].p + pinned[i].n)
            return true;
    return false;
}

static void *poisoned(size_t n)
{
    size_t r = (n + 255) / 256 * 256;
    void *p = aligned_alloc(256, r ? r : 256);
    if (p)
        memset(p, 0xff, r ? r : 256);
    return p;
}

cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = poisoned(n);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFree(void *p)
{
    LOCK();
    run_all();   /* (cudaFree waits for the device) */
    free(p);
    UNLOCK();
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t n, unsigned int flags)
{
    (void)flags;
    LOCK();
    *p = poisoned(n);
    if (*p) {
        grow((void **)&pinned, &cappinned, npinned + 1, sizeof *pinned);
        pinned[npinned++] = (emu_block){*p, n ? n : 1};
    }
    UNLOCK();
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFreeHost(void *p)
{
    LOCK();
    run_all();
    for (size_t i = 0; i < npinned; i++)
        if (pinned[i].p == p)
            pinned[i] = pinned[--npinned];
    free(p);
    UNLOCK();
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p)
{
    memset(a, 0, sizeof *a);
    LOCK();
    a->type = is_pinned(p) ? cudaMemoryTypeHost : cudaMemoryTypeUnregistered;
    UNLOCK();
    if (a->type == cudaMemoryTypeHost)
        a->hostPointer = (void *)p;
    return cudaSuccess;
}

typedef struct copy_arg {
    void *dst;
    const void *src;   /* NULL: the bytes follow this struct (taken at the call) */
    size_t n;
} copy_arg;

static void do_copy(const void *a)
{
    const copy_arg *c = a;
    memmove(c->dst, c->src ? c->src : (const void *)(c + 1), c->n);
}

/* A copy on s; from pageable host memory the bytes are taken now. */
static void copy_on(cudaStream_t s, void *dst, const void *src, size_t n, enum cudaMemcpyKind k)
{
    if (k != cudaMemcpyHostToDevice || is_pinned(src)) {
        copy_arg c = {dst, src, n};
        enqueue(s, do_copy, &c, sizeof c);
        return;
    }
    copy_arg *c = xmalloc(sizeof *c + n);
    *c = (copy_arg){dst, NULL, n};
    memcpy(c + 1, src, n);
    enqueue(s, do_copy, c, sizeof *c + n);
    free(c);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind k)
{
    LOCK();
    copy_on(NULL, dst, src, n, k);
    if (k == cudaMemcpyDeviceToHost)   /* returns once the bytes are on the host */
        run_until(&legacy, legacy.end);
    UNLOCK();
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind k,
                            cudaStream_t s)
{
    LOCK();
    copy_on(s, dst, src, n, k);
    /* into pageable memory the copy is synchronous: it returns once done */
    if (k == cudaMemcpyDeviceToHost && !is_pinned(dst) && !S(s)->capture)
        run_until(S(s), S(s)->end);
    UNLOCK();
    return cudaSuccess;
}

typedef struct copy2d_arg {
    void *dst;
    const void *src;
    size_t dpitch, spitch, width, height;
} copy2d_arg;

static void do_copy2d(const void *a)
{
    const copy2d_arg *c = a;
    for (size_t r = 0; r < c->height; r++)
        memmove((char *)c->dst + r * c->dpitch, (const char *)c->src + r * c->spitch, c->width);
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, enum cudaMemcpyKind k,
                              cudaStream_t s)
{
    if (k != cudaMemcpyDeviceToDevice)
        return cudaErrorNotSupported;
    LOCK();
    copy2d_arg c = {dst, src, dpitch, spitch, width, height};
    enqueue(s, do_copy2d, &c, sizeof c);
    UNLOCK();
    return cudaSuccess;
}

typedef struct set_arg {
    void *dst;
    int value;
    size_t n;
} set_arg;

static void do_set(const void *a)
{
    const set_arg *m = a;
    memset(m->dst, m->value, m->n);
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t n, cudaStream_t s)
{
    LOCK();
    set_arg m = {dst, value, n};
    enqueue(s, do_set, &m, sizeof m);
    UNLOCK();
    return cudaSuccess;
}

cudaError_t cudaMemset(void *dst, int value, size_t n)
{
    return cudaMemsetAsync(dst, value, n, NULL);   /* (asynchronous, on the legacy stream) */
}

/* ---- the device, errors ------------------------------------------------------------------------ */

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int d)
{
    return d == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d)
{
    if (d != 0)
        return cudaErrorInvalidDevice;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "dtl CPU emulation (tests/cuda_emu)");
    p->major = 9;
    p->minor = 0;
    p->totalGlobalMem = (size_t)1 << 34;
    p->multiProcessorCount = 1;
    p->maxThreadsPerBlock = 1024;
    p->warpSize = 32;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr attr, int d)
{
    if (d != 0)
        return cudaErrorInvalidDevice;
    *v = attr == cudaDevAttrComputeCapabilityMajor ? 9 : 0;   /* sm_90 */
    return cudaSuccess;
}

/* A launch CUDA would refuse (dtl_emu_kernel); every other call returns its own error. */
static cudaError_t last_error;

cudaError_t cudaGetLastError(void)
{
    LOCK();
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    UNLOCK();
    return e;
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorNotSupported: return "not emulated (tests/cuda_emu)";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "error (tests/cuda_emu)";
    }
}

cudaError_t cudaDeviceSynchronize(void)
{
    LOCK();
    run_all();
    UNLOCK();
    return cudaSuccess;
}

/* ---- streams and events ------------------------------------------------------------------------- */

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags)
{
    (void)flags;   /* (every stream behaves as non-blocking: the legacy one is never waited for) */
    LOCK();
    emu_stream *e = calloc(1, sizeof *e);
    if (e) {
        grow((void **)&streams, &capstreams, nstreams + 1, sizeof *streams);
        streams[nstreams++] = e;
    }
    UNLOCK();
    *s = (cudaStream_t)e;
    return e ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    LOCK();
    emu_stream *e = S(s);
    run_until(e, e->end);
    for (size_t i = 0; i < nstreams; i++)
        if (streams[i] == e)
            streams[i] = streams[--nstreams];
    free(e->q);
    free(e);
    UNLOCK();
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    LOCK();
    emu_stream *e = S(s);
    run_until(e, e->end);
    UNLOCK();
    return cudaSuccess;
}

typedef struct emu_event {
    emu_stream *s;   /* NULL: never recorded (complete), or recorded in a capture: */
    size_t seq;
    emu_graph *g;    /* the capture it was last recorded in (a fork point), or NULL */
} emu_event;

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ev, unsigned int flags)
{
    (void)flags;
    *ev = calloc(1, sizeof(emu_event));
    return *ev ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaEventDestroy(cudaEvent_t ev)
{
    free(ev);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t s)
{
    emu_event *e = (emu_event *)ev;
    LOCK();
    emu_stream *st = S(s);
    e->g = st->capture;
    e->s = st->capture ? NULL : st;
    e->seq = st->end;
    UNLOCK();
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t ev)
{
    emu_event *e = (emu_event *)ev;
    LOCK();
    if (e->s)
        run_until(e->s, e->seq);
    UNLOCK();
    return cudaSuccess;
}

static bool event_done(const emu_event *e)
{
    return !e->s || e->s->done >= e->seq;
}

/* (The device makes progress when asked: a query runs the work before the event.) */
cudaError_t cudaEventQuery(cudaEvent_t ev)
{
    return cudaEventSynchronize(ev);
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t ev, unsigned int flags)
{
    (void)flags;
    emu_event *e = (emu_event *)ev;
    LOCK();
    emu_stream *st = S(s);
    cudaError_t r = cudaSuccess;
    if (e->g) {   /* a fork inside a capture: st joins it (its work goes into the graph) */
        if (st->capture && st->capture != e->g)
            r = cudaErrorNotSupported;
        st->capture = e->g;
    } else if (st->capture) {
        r = cudaErrorNotSupported;   /* (a capture waiting for outside work) */
    } else if (!event_done(e)) {
        push(st, (emu_op){NULL, NULL, 0, false, e->s, e->seq});
    }
    UNLOCK();
    return r;
}

typedef struct host_arg {
    cudaHostFn_t fn;
    void *data;
} host_arg;

static void do_host(const void *a)
{
    const host_arg *h = a;
    h->fn(h->data);
}

cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void *data)
{
    LOCK();
    host_arg h = {fn, data};
    enqueue(s, do_host, &h, sizeof h);
    UNLOCK();
    return cudaSuccess;
}

/* ---- CUDA Graphs: a capture records the stream's work; a launch enqueues it again ------------- */

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode)
{
    (void)mode;
    LOCK();
    emu_stream *e = S(s);
    cudaError_t r = cudaErrorNotSupported;
    if (e != &legacy && !e->capture && (e->capture = calloc(1, sizeof *e->capture)))
        r = cudaSuccess;
    UNLOCK();
    return r;
}

/* The graph is the work of every stream in the capture, in the order the host issued it (a
 * valid order: the host issues nothing before what it waits for). */
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    LOCK();
    emu_graph *c = S(s)->capture;
    for (size_t i = 0; c && i < nstreams; i++)
        if (streams[i]->capture == c)
            streams[i]->capture = NULL;
    *g = (cudaGraph_t)c;
    UNLOCK();
    return c ? cudaSuccess : cudaErrorNotSupported;
}

static void graph_free(emu_graph *g)
{
    run_all();   /* (its ops on the streams read its arguments) */
    for (size_t i = 0; i < g->n; i++)
        free(g->ops[i].arg);
    free(g->ops);
    free(g);
}

/* The exec has its own copy of the graph's work: either may be destroyed first. */
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags)
{
    (void)flags;
    LOCK();
    const emu_graph *src = (const emu_graph *)g;
    emu_graph *c = calloc(1, sizeof *c);
    if (c) {
        grow((void **)&c->ops, &c->cap, src->n + 1, sizeof *c->ops);
        for (size_t i = 0; i < src->n; i++) {
            c->ops[i] = src->ops[i];
            c->ops[i].arg = xmalloc(src->ops[i].size);
            memcpy(c->ops[i].arg, src->ops[i].arg, src->ops[i].size);
        }
        c->n = src->n;
    }
    UNLOCK();
    *x = (cudaGraphExec_t)c;
    return c ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaGraphUpload(cudaGraphExec_t x, cudaStream_t s)
{
    (void)x, (void)s;
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s)
{
    LOCK();
    const emu_graph *g = (const emu_graph *)x;
    emu_stream *e = S(s);
    for (size_t i = 0; i < g->n; i++)
        push(e, g->ops[i]);
    UNLOCK();
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    LOCK();
    graph_free((emu_graph *)g);
    UNLOCK();
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x)
{
    LOCK();
    graph_free((emu_graph *)x);
    UNLOCK();
    return cudaSuccess;
}

/* ---- cuBLAS: column-major strided batched products ----------------------------------------- */

typedef struct emu_blas {
    cudaStream_t stream;
    cublasPointerMode_t pointer_mode;
} emu_blas;

cublasStatus_t cublasCreate_v2(cublasHandle_t *h)
{
    *h = calloc(1, sizeof(emu_blas));
    return *h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s)
{
    ((emu_blas *)h)->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *w, size_t n)
{
    (void)h, (void)w, (void)n;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode)
{
    (void)h, (void)mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t h, cublasPointerMode_t mode)
{
    ((emu_blas *)h)->pointer_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t s)
{
    return s == CUBLAS_STATUS_SUCCESS ? "success" : s == CUBLAS_STATUS_NOT_SUPPORTED
                                                        ? "not emulated (tests/cuda_emu)"
                                                        : "error (tests/cuda_emu)";
}

/* Operand element types: f32, f64, bf16 (read as its f32 value), tf32 (f32 read rounded). */
enum { EL_F32, EL_F64, EL_BF16, EL_TF32 };

typedef struct gemm_arg {
    bool f64, ta, tb;
    int el;         /* the operands' EL_*: f64 only with f64 */
    int m, n, k, lda, ldb, ldc, batch;
    long long sa, sb, sc;
    const void *a, *b;
    void *c;
    const void *alpha, *beta;   /* device pointers (read when it runs); else the values: */
    double alpha_v, beta_v;
    const float *bias;          /* cuBLASLt: a bias per row of C (column-major), or NULL */
    bool relu;                  /* cuBLASLt: then max(x, 0) */
} gemm_arg;

static float operand(const void *p, int el, long long i)
{
    switch (el) {
    case EL_BF16: return dtl_f32_from_bf16(((const uint16_t *)p)[i]);
    case EL_TF32: return dtl_tf32_round(((const float *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

/* C[i + j ldc] = alpha sum_l op(A)[i, l] op(B)[l, j] (+ beta C), per batch, column-major. */
static void do_gemm(const void *p)
{
    const gemm_arg *g = p;
    for (int bt = 0; bt < g->batch; bt++)
        for (int j = 0; j < g->n; j++)
            for (int i = 0; i < g->m; i++) {
                long long ci = bt * g->sc + i + (long long)j * g->ldc;
                if (g->f64) {
                    const double *A = g->a, *B = g->b;
                    double *C = g->c, acc = 0;
                    double alpha = g->alpha ? *(const double *)g->alpha : g->alpha_v;
                    double beta = g->beta ? *(const double *)g->beta : g->beta_v;
                    for (int l = 0; l < g->k; l++) {
                        double prod = A[bt * g->sa + (g->ta ? l + (long long)i * g->lda
                                                            : i + (long long)l * g->lda)] *
                                      B[bt * g->sb + (g->tb ? j + (long long)l * g->ldb
                                                            : l + (long long)j * g->ldb)];
                        acc = acc + prod;
                    }
                    C[ci] = beta == 0 ? alpha * acc : alpha * acc + beta * C[ci];
                    continue;
                }
                float *C = g->c, acc = 0;
                float alpha = g->alpha ? *(const float *)g->alpha : (float)g->alpha_v;
                float beta = g->beta ? *(const float *)g->beta : (float)g->beta_v;
                for (int l = 0; l < g->k; l++) {
                    float prod = operand(g->a, g->el, bt * g->sa + (g->ta ? l + (long long)i * g->lda
                                                                       : i + (long long)l * g->lda)) *
                                 operand(g->b, g->el, bt * g->sb + (g->tb ? j + (long long)l * g->ldb
                                                                       : l + (long long)j * g->ldb));
                    acc = acc + prod;
                }
                float v = beta == 0 ? alpha * acc : alpha * acc + beta * C[ci];
                if (g->bias)
                    v = v + g->bias[i];
                if (g->relu)
                    v = v > 0 || v != v ? v : 0;
                C[ci] = v;
            }
}

static cublasStatus_t gemm(cublasHandle_t h, bool f64, cublasOperation_t ta, cublasOperation_t tb,
                           int m, int n, int k, const void *alpha, double alpha_v,
                           const void *a, int lda, long long sa, const void *b, int ldb,
                           long long sb, const void *beta, double beta_v, void *c, int ldc,
                           long long sc, int batch, int el)
{
    const emu_blas *e = (const emu_blas *)h;
    bool dev = e->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
    gemm_arg g = {f64, ta != CUBLAS_OP_N, tb != CUBLAS_OP_N, el, m, n, k, lda, ldb, ldc,
                  batch, sa, sb, sc, a, b, c, dev ? alpha : NULL, dev ? beta : NULL, alpha_v,
                  beta_v, NULL, false};
    LOCK();
    enqueue(e->stream, do_gemm, &g, sizeof g);
    UNLOCK();
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float *alpha, const float *a, int lda,
                                         long long sa, const float *b, int ldb, long long sb,
                                         const float *beta, float *c, int ldc, long long sc,
                                         int batch)
{
    bool dev = ((const emu_blas *)h)->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
    return gemm(h, false, ta, tb, m, n, k, alpha, dev ? 0 : *alpha, a, lda, sa, b, ldb, sb,
                beta, dev ? 0 : *beta, c, ldc, sc, batch, EL_F32);
}

cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const double *alpha, const double *a, int lda,
                                         long long sa, const double *b, int ldb, long long sb,
                                         const double *beta, double *c, int ldc, long long sc,
                                         int batch)
{
    bool dev = ((const emu_blas *)h)->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
    return gemm(h, true, ta, tb, m, n, k, alpha, dev ? 0 : *alpha, a, lda, sa, b, ldb, sb,
                beta, dev ? 0 : *beta, c, ldc, sc, batch, EL_F64);
}

/* The mixed-precision products: bf16 operands or f32 ones on TF32, f32 C and scalars. */
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta,
                                          cublasOperation_t tb, int m, int n, int k,
                                          const void *alpha, const void *a, cudaDataType at,
                                          int lda, long long sa, const void *b,
                                          cudaDataType bt, int ldb, long long sb,
                                          const void *beta, void *c, cudaDataType ct, int ldc,
                                          long long sc, int batch, cublasComputeType_t comp,
                                          cublasGemmAlgo_t algo)
{
    (void)algo;
    int el = at == CUDA_R_16BF ? EL_BF16 : comp == CUBLAS_COMPUTE_32F_FAST_TF32 ? EL_TF32
                                                                              : EL_F32;
    if (at != bt || ct != CUDA_R_32F || (at != CUDA_R_16BF && at != CUDA_R_32F) ||
        (comp != CUBLAS_COMPUTE_32F && comp != CUBLAS_COMPUTE_32F_FAST_TF32))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    bool dev = ((const emu_blas *)h)->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
    return gemm(h, false, ta, tb, m, n, k, alpha, dev ? 0 : *(const float *)alpha, a, lda, sa,
                b, ldb, sb, beta, dev ? 0 : *(const float *)beta, c, ldc, sc, batch, el);
}

/* ---- cuBLASLt: f32 products with the bias (+ ReLU) epilogue --------------------------------- */

typedef struct emu_lt_desc {
    cublasOperation_t ta, tb;
    cublasLtEpilogue_t epilogue;
    const float *bias;
} emu_lt_desc;

typedef struct emu_lt_layout {
    uint64_t rows, cols;
    int64_t ld;
} emu_lt_layout;

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h)
{
    static int handle;
    *h = (cublasLtHandle_t)&handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t comp,
                                        cudaDataType_t scale)
{
    if (comp != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    emu_lt_desc *e = calloc(1, sizeof *e);
    if (!e)
        return CUBLAS_STATUS_ALLOC_FAILED;
    e->epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    *d = (cublasLtMatmulDesc_t)e;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size)
{
    emu_lt_desc *e = (emu_lt_desc *)d;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
        if (size != sizeof(cublasOperation_t))
            return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(attr == CUBLASLT_MATMUL_DESC_TRANSA ? &e->ta : &e->tb, buf, size);
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
        if (size != sizeof e->epilogue)
            return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&e->epilogue, buf, size);
        return e->epilogue == CUBLASLT_EPILOGUE_DEFAULT || e->epilogue == CUBLASLT_EPILOGUE_BIAS ||
                       e->epilogue == CUBLASLT_EPILOGUE_RELU_BIAS
                   ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        if (size != sizeof e->bias)
            return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&e->bias, buf, size);
        return CUBLAS_STATUS_SUCCESS;
    default:
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d)
{
    free(d);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld)
{
    if (type != CUDA_R_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    emu_lt_layout *e = malloc(sizeof *e);
    if (!e)
        return CUBLAS_STATUS_ALLOC_FAILED;
    *e = (emu_lt_layout){rows, cols, ld};
    *l = (cublasLtMatrixLayout_t)e;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l)
{
    free(l);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p)
{
    static int pref;
    *p = (cublasLtMatmulPreference_t)&pref;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size)
{
    (void)p, (void)attr, (void)buf, (void)size;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p)
{
    (void)p;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dl,
                                              cublasLtMatmulPreference_t p, int want,
                                              cublasLtMatmulHeuristicResult_t res[], int *n)
{
    (void)h, (void)d, (void)a, (void)b, (void)c, (void)dl, (void)p;
    if (want < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    memset(&res[0], 0, sizeof res[0]);
    res[0].state = CUBLAS_STATUS_SUCCESS;
    *n = 1;
    return CUBLAS_STATUS_SUCCESS;
}

/* D = alpha op(A) op(B) + beta C, then the epilogue: + bias (one per row of D), ReLU. */
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha,
                              const void *a, cublasLtMatrixLayout_t al, const void *b,
                              cublasLtMatrixLayout_t bl, const void *beta, const void *c,
                              cublasLtMatrixLayout_t cl, void *dst, cublasLtMatrixLayout_t dl,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t wss,
                              cudaStream_t s)
{
    (void)h, (void)algo, (void)ws, (void)wss;
    const emu_lt_desc *e = (const emu_lt_desc *)d;
    const emu_lt_layout *A = (const emu_lt_layout *)al, *B = (const emu_lt_layout *)bl,
                        *C = (const emu_lt_layout *)cl, *D = (const emu_lt_layout *)dl;
    bool ta = e->ta != CUBLAS_OP_N, tb = e->tb != CUBLAS_OP_N;
    uint64_t k = ta ? A->rows : A->cols;
    if (c != dst || C->rows != D->rows || C->cols != D->cols || C->ld != D->ld ||
        (ta ? A->cols : A->rows) != D->rows || (tb ? B->cols : B->rows) != k ||
        (tb ? B->rows : B->cols) != D->cols ||
        (e->epilogue != CUBLASLT_EPILOGUE_DEFAULT && !e->bias))
        return CUBLAS_STATUS_INVALID_VALUE;
    gemm_arg g = {false, ta, tb, EL_F32, (int)D->rows, (int)D->cols, (int)k, (int)A->ld,
                  (int)B->ld, (int)D->ld, 1, 0, 0, 0, a, b, dst, NULL, NULL,
                  *(const float *)alpha, *(const float *)beta,
                  e->epilogue == CUBLASLT_EPILOGUE_DEFAULT ? NULL : e->bias,
                  e->epilogue == CUBLASLT_EPILOGUE_RELU_BIAS};
    LOCK();
    enqueue(s, do_gemm, &g, sizeof g);
    UNLOCK();
    return CUBLAS_STATUS_SUCCESS;
}

#ifdef DTL_EMU_DEVICE_CODE
/* ---- the kernels: kernels/cuda/ops.cu and dnn.cu's own, compiled for the CPU -----------------
 *
 * (tests/cuda_emu/device.h: their launches call this.) */

/* tests/cuda_emu/dev/cuda_runtime.h's values are these */
_Static_assert(cudaSuccess == 0 && cudaErrorInvalidValue == 1 &&
                   cudaErrorInvalidConfiguration == 9,
               "tests/cuda_emu/dev/cuda_runtime.h's error values are CUDA's");

void dtl_emu_kernel(cudaStream_t s, unsigned grid, unsigned block, size_t shared,
                    void (*fn)(const void *), const void *arg, size_t size);
void dtl_emu_kernel(cudaStream_t s, unsigned grid, unsigned block, size_t shared,
                    void (*fn)(const void *), const void *arg, size_t size)
{
    LOCK();
    if (grid == 0 || block == 0 || block > 1024 || shared != 0)
        last_error = cudaErrorInvalidConfiguration;
    else
        enqueue(s, fn, arg, size);
    UNLOCK();
}

#else
/* ---- the kernels: the reference's, on gathered operands ------------------------------------- */

static dtl_dtype dt_of(int cu)
{
    static const dtl_dtype map[] = {
        [DTL_CU_F32] = DTL_DTYPE_F32, [DTL_CU_F64] = DTL_DTYPE_F64,
        [DTL_CU_I32] = DTL_DTYPE_I32, [DTL_CU_I64] = DTL_DTYPE_I64,
        [DTL_CU_BOOL] = DTL_DTYPE_BOOL, [DTL_CU_BF16] = DTL_DTYPE_BF16,
    };
    if (cu < 0 || cu >= DTL_CU_DT_COUNT)
        die("a kernel", "unknown element type");
    return map[cu];
}

static dtl_op op_of(int cu)
{
    static const dtl_op map[] = {
        [DTL_CU_NEG] = DTL_OP_NEG, [DTL_CU_ABS] = DTL_OP_ABS, [DTL_CU_EXP] = DTL_OP_EXP,
        [DTL_CU_LOG] = DTL_OP_LOG, [DTL_CU_SQRT] = DTL_OP_SQRT, [DTL_CU_TANH] = DTL_OP_TANH,
        [DTL_CU_SIGMOID] = DTL_OP_SIGMOID, [DTL_CU_RELU] = DTL_OP_RELU,
        [DTL_CU_SIN] = DTL_OP_SIN, [DTL_CU_COS] = DTL_OP_COS, [DTL_CU_NOT] = DTL_OP_NOT,
        [DTL_CU_ADD] = DTL_OP_ADD, [DTL_CU_SUB] = DTL_OP_SUB, [DTL_CU_MUL] = DTL_OP_MUL,
        [DTL_CU_DIV] = DTL_OP_DIV, [DTL_CU_POW] = DTL_OP_POW, [DTL_CU_MAX] = DTL_OP_MAX,
        [DTL_CU_MIN] = DTL_OP_MIN, [DTL_CU_LT] = DTL_OP_LT, [DTL_CU_LE] = DTL_OP_LE,
        [DTL_CU_GT] = DTL_OP_GT, [DTL_CU_GE] = DTL_OP_GE, [DTL_CU_EQ] = DTL_OP_EQ,
        [DTL_CU_NE] = DTL_OP_NE, [DTL_CU_AND] = DTL_OP_AND, [DTL_CU_OR] = DTL_OP_OR,
        [DTL_CU_CAST] = DTL_OP_CAST, [DTL_CU_WHERE] = DTL_OP_WHERE, [DTL_CU_SUM] = DTL_OP_SUM,
        [DTL_CU_REDUCE_MAX] = DTL_OP_REDUCE_MAX,
    };
    if (cu < 0 || cu > DTL_CU_REDUCE_MAX)
        die("a kernel", "an op the reference has no kernel for");
    return map[cu];
}

/* Element i of a row-major loop over (rank, shape) read through strides st: its offset. */
static int64_t offset_of(int rank, const int64_t *shape, const int64_t *st, int64_t i)
{
    int64_t off = 0;
    for (int d = rank - 1; d >= 0; d--) {
        int64_t q = i / shape[d];
        off += (i - q * shape[d]) * st[d];
        i = q;
    }
    return off;
}

/* A contiguous copy (malloc'ed) of the n elements of a loop over (rank, shape) read from src
 * through strides st. */
static void *gathered(const void *src, dtl_dtype dt, int rank, const int64_t *shape,
                      const int64_t *st, int64_t n)
{
    size_t es = dtl_dtype_size(dt);
    char *out = xmalloc((size_t)n * es);
    for (int64_t i = 0; i < n; i++)
        memcpy(out + (size_t)i * es, (const char *)src + offset_of(rank, shape, st, i) * es, es);
    return out;
}

/* The reference kernel of op for a result of (dtype, rank, shape) from nin operands of that
 * shape (rank-2 [rows, cols] for the reductions' [outputs, reduced] operand). */
static void ref_run(dtl_op op, dtl_dtype dtype, uint32_t rank, const int64_t *shape,
                    uint32_t nin, const dtl_ref_arg *in, void *out, const dtl_node *attrs)
{
    static const dtl_val none[3];
    dtl_node n;
    memset(&n, 0, sizeof n);
    if (attrs)
        n.attr = attrs->attr;
    n.op = op;
    n.dtype = dtype;
    n.rank = rank;
    memcpy(n.shape, shape, rank * sizeof *shape);
    n.nin = nin;
    n.in = none;
    dtl_err err = {DTL_ERR_NONE, ""};
    if (!dtl_ref_kernel(&n, in, out, 0, &err))
        die(dtl_op_name(op), err.msg);
}

static void do_elementwise(const void *p)
{
    const dtl_cu_ew *e = p;
    if (e->n == 0)
        return;
    bool cmp = e->op >= DTL_CU_LT && e->op <= DTL_CU_NE;
    dtl_dtype dt = dt_of(e->dt);
    dtl_dtype out = e->op == DTL_CU_CAST ? dt_of(e->odt) : cmp ? DTL_DTYPE_BOOL : dt;
    void *buf[3] = {NULL, NULL, NULL};
    dtl_ref_arg in[3];
    for (int k = 0; k < e->nin; k++) {
        dtl_dtype kd = e->op == DTL_CU_WHERE && k == 0 ? DTL_DTYPE_BOOL : dt;
        buf[k] = gathered(e->in[k], kd, e->rank, e->shape, e->st[k], e->n);
        in[k] = (dtl_ref_arg){buf[k], kd, (uint32_t)e->rank, e->shape};
    }
    ref_run(op_of(e->op), out, (uint32_t)e->rank, e->shape, (uint32_t)e->nin, in, e->out, NULL);
    for (int k = 0; k < 3; k++)
        free(buf[k]);
}

cudaError_t dtl_cu_elementwise(const dtl_cu_ew *a, cudaStream_t s)
{
    return submit(s, do_elementwise, a, sizeof *a);
}

/* out[nout] = op over the [nout, rcount] elements of x (dtype dt) where element (o, r) is x's
 * at kept(o) + reduced(r). */
static void reduce_into(dtl_op op, dtl_dtype dt, const void *x, int nk, const int64_t *ksize,
                        const int64_t *kstride, int nr, const int64_t *rsize,
                        const int64_t *rstride, int64_t nout, int64_t rcount, void *out)
{
    size_t es = dtl_dtype_size(dt);
    char *buf = xmalloc((size_t)(nout * rcount) * es);
    for (int64_t o = 0; o < nout; o++) {
        int64_t base = offset_of(nk, ksize, kstride, o);
        for (int64_t r = 0; r < rcount; r++)
            memcpy(buf + (size_t)(o * rcount + r) * es,
                   (const char *)x + (base + offset_of(nr, rsize, rstride, r)) * es, es);
    }
    int64_t shape[2] = {nout, rcount};
    dtl_ref_arg in = {buf, dt, 2, shape};
    dtl_node attrs;
    memset(&attrs, 0, sizeof attrs);
    attrs.attr.red.axes = 1u << 1;
    ref_run(op, dt, 1, shape, 1, &in, out, &attrs);
    free(buf);
}

static void do_reduce(const void *p)
{
    const dtl_cu_red *r = p;
    if (r->nout > 0)
        reduce_into(op_of(r->op), dt_of(r->dt), r->in, r->nk, r->ksize, r->kstride, r->nr,
                    r->rsize, r->rstride, r->nout, r->rcount, r->out);
}

cudaError_t dtl_cu_reduce(const dtl_cu_red *a, cudaStream_t s)
{
    return submit(s, do_reduce, a, sizeof *a);
}

typedef struct argmax_arg {
    dtl_cu_dt dt;
    const void *x;
    int64_t outer, dim, inner;
    int64_t *out;
} argmax_arg;

static void do_argmax(const void *p)
{
    const argmax_arg *a = p;
    int64_t xs[3] = {a->outer, a->dim, a->inner}, ys[2] = {a->outer, a->inner};
    dtl_ref_arg in = {a->x, dt_of(a->dt), 3, xs};
    dtl_node attrs;
    memset(&attrs, 0, sizeof attrs);
    attrs.attr.axis = 1;
    if (a->outer * a->inner > 0)
        ref_run(DTL_OP_ARGMAX, DTL_DTYPE_I64, 2, ys, 1, &in, a->out, &attrs);
}

cudaError_t dtl_cu_argmax(dtl_cu_dt dt, const void *x, int64_t outer, int64_t dim,
                          int64_t inner, int64_t *out, cudaStream_t s)
{
    argmax_arg a = {dt, x, outer, dim, inner, out};
    return submit(s, do_argmax, &a, sizeof a);
}

static void do_strided(const void *p)
{
    const dtl_cu_copy *c = p;
    for (int64_t i = 0; i < c->n; i++)
        memcpy((char *)c->out + i * c->esz,
               (const char *)c->src + (c->base + offset_of(c->rank, c->shape, c->st, i)) * c->esz,
               (size_t)c->esz);
}

cudaError_t dtl_cu_strided_copy(const dtl_cu_copy *a, cudaStream_t s)
{
    return submit(s, do_strided, a, sizeof *a);
}

typedef struct index_arg {
    bool scatter;
    dtl_cu_dt dt, idt;
    const void *x, *idx;
    int64_t outer, dim, inner, count;
    void *out;
    unsigned long long *status;
} index_arg;

#define SCATTER_ADD(T, U)                                                                     \
    do {                                                                                      \
        T *y = g->out;                                                                        \
        const T *u = g->x;                                                                    \
        U sum = (U)y[xi] + (U)u[t];   /* (integers: unsigned, so they wrap) */                \
        y[xi] = (T)sum;                                                                       \
    } while (0)

static void do_index(const void *p)
{
    const index_arg *g = p;
    dtl_dtype dt = dt_of(g->dt);
    size_t es = dtl_dtype_size(dt);
    if (g->scatter)
        memset(g->out, 0, (size_t)(g->outer * g->dim * g->inner) * es);
    int64_t n = g->outer * g->count * g->inner;
    for (int64_t t = 0; t < n; t++) {
        int64_t i = t % g->inner, oj = t / g->inner, j = oj % g->count, o = oj / g->count;
        int64_t v = g->idt == DTL_CU_I32 ? ((const int32_t *)g->idx)[j]
                                         : ((const int64_t *)g->idx)[j];
        if (v < 0 || v >= g->dim) {
            if (g->status && (unsigned long long)j < g->status[0]) {
                g->status[0] = (unsigned long long)j;
                g->status[1] = (unsigned long long)v;
            }
            if (!g->scatter)
                memset((char *)g->out + t * es, 0, es);
            continue;
        }
        int64_t xi = (o * g->dim + v) * g->inner + i;
        if (!g->scatter) {
            memcpy((char *)g->out + t * es, (const char *)g->x + xi * es, es);
            continue;
        }
        switch (dt) {
        case DTL_DTYPE_F32: SCATTER_ADD(float, float); break;
        case DTL_DTYPE_F64: SCATTER_ADD(double, double); break;
        case DTL_DTYPE_I32: SCATTER_ADD(int32_t, uint32_t); break;
        case DTL_DTYPE_I64: SCATTER_ADD(int64_t, uint64_t); break;
        default: die("scatter_add", "element type");
        }
    }
}

cudaError_t dtl_cu_gather(dtl_cu_dt dt, const void *x, const void *idx, dtl_cu_dt idx_dt,
                          int64_t outer, int64_t dim, int64_t inner, int64_t count, void *out,
                          unsigned long long *status, cudaStream_t s)
{
    index_arg g = {false, dt, idx_dt, x, idx, outer, dim, inner, count, out, status};
    return submit(s, do_index, &g, sizeof g);
}

cudaError_t dtl_cu_scatter_add(dtl_cu_dt dt, const void *upd, const void *idx,
                               dtl_cu_dt idx_dt, int64_t outer, int64_t dim, int64_t inner,
                               int64_t count, void *out, unsigned long long *status,
                               cudaStream_t s)
{
    index_arg g = {true, dt, idx_dt, upd, idx, outer, dim, inner, count, out, status};
    return submit(s, do_index, &g, sizeof g);
}

typedef struct rng_arg {
    dtl_cu_dt dt;
    uint64_t seed, sid;
    const int64_t *step;   /* read when it runs (a replayed graph draws anew) */
    int64_t n;
    void *out;
} rng_arg;

static void do_rng(const void *p)
{
    const rng_arg *r = p;
    dtl_node n;
    memset(&n, 0, sizeof n);
    static const dtl_val one[1];
    n.op = DTL_OP_RNG_UNIFORM;
    n.dtype = dt_of(r->dt);
    n.rank = 1;
    n.shape[0] = r->n;
    n.nin = 1;
    n.in = one;
    n.attr.stream = r->sid;
    dtl_ref_arg step = {r->step, DTL_DTYPE_I64, 0, NULL};
    dtl_err err = {DTL_ERR_NONE, ""};
    if (r->n > 0 && !dtl_ref_kernel(&n, &step, r->out, r->seed, &err))
        die("rng_uniform", err.msg);
}

cudaError_t dtl_cu_rng_uniform(dtl_cu_dt dt, uint64_t seed, uint64_t stream_id,
                               const int64_t *step, int64_t n, void *out, cudaStream_t s)
{
    rng_arg r = {dt, seed, stream_id, step, n, out};
    return submit(s, do_rng, &r, sizeof r);
}

typedef struct philox_arg {
    uint64_t seed, sid, block0;
    int64_t nb;
    uint32_t *out;
} philox_arg;

static void do_philox(const void *p)
{
    const philox_arg *a = p;
    uint32_t key[2] = {(uint32_t)a->seed, (uint32_t)(a->seed >> 32)};
    for (int64_t b = 0; b < a->nb; b++) {
        uint64_t block = a->block0 + (uint64_t)b;
        uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)a->sid,
                           (uint32_t)(a->sid >> 32)};
        dtl_philox4x32(ctr, key, a->out + 4 * b);
    }
}

cudaError_t dtl_cu_philox_blocks(uint64_t seed, uint64_t stream_id, uint64_t block0,
                                 int64_t nblocks, uint32_t *out, cudaStream_t s)
{
    philox_arg a = {seed, stream_id, block0, nblocks, out};
    return submit(s, do_philox, &a, sizeof a);
}

typedef struct window_arg {
    dtl_cu_wop op;
    dtl_cu_win g;
    const void *a, *b;
    void *out;
} window_arg;

static void do_window(const void *p)
{
    const window_arg *w = p;
    int64_t n = dtl_cu_win_numel(&w->g, w->op);
    for (int64_t i = 0; i < n; i++) {
        double v = dtl_cu_w_at(&w->g, w->op, w->a, w->b, i);
        if (w->g.f64)
            ((double *)w->out)[i] = v;
        else
            ((float *)w->out)[i] = (float)v;
    }
}

cudaError_t dtl_cu_window(dtl_cu_wop op, const dtl_cu_win *g, const void *a, const void *b,
                          void *out, cudaStream_t s)
{
    if (op < 0 || op >= DTL_CU_W_COUNT)
        return cudaErrorInvalidValue;
    window_arg w = {op, *g, a, b, out};
    return submit(s, do_window, &w, sizeof w);
}

typedef struct adam_arg {
    const dtl_cu_adam_t *table;   /* device memory: read when it runs */
    int n;
    dtl_cu_adam_s s;
} adam_arg;

static void do_adam(const void *p)
{
    const adam_arg *a = p;
    const dtl_cu_adam_s *s = &a->s;
    for (int k = 0; k < a->n; k++)
        for (int64_t i = 0; i < a->table[k].n; i++)
            dtl_cu_adam_at(&a->table[k], i, *s->b1, *s->c1, *s->b2, *s->c2, *s->bc2s, *s->eps,
                           *s->ss, s->decay);
}

cudaError_t dtl_cu_adam(const dtl_cu_adam_t *table, int n, int64_t nblocks,
                        const dtl_cu_adam_s *s, cudaStream_t stream)
{
    if (n <= 0 || nblocks <= 0)
        return cudaSuccess;
    adam_arg a = {table, n, *s};
    return submit(stream, do_adam, &a, sizeof a);
}

/* ---- the fused interpreter program: one reference kernel per instruction, over the loop ------ */

static void do_fused(const void *arg)
{
    const dtl_cu_fprog *p = arg;
    int64_t n = p->n;
    if (n == 0)
        return;
    enum { NREG = DTL_CU_FMAX_INS + DTL_CU_FMAX_CODE };
    void *reg[NREG] = {NULL};
    dtl_dtype rdt[NREG];
    int64_t flat[1] = {n};
    for (int k = 0; k < p->nins; k++) {
        rdt[k] = dt_of(p->in_dt[k]);
        reg[k] = gathered(p->in[k], rdt[k], p->rank, p->shape, p->st[k], n);
    }
    for (int j = 0; j < p->ncode; j++) {
        const dtl_cu_instr *I = &p->code[j];
        int r = p->nins + j;
        rdt[r] = dt_of(I->odt);
        reg[r] = xmalloc((size_t)n * dtl_dtype_size(rdt[r]));
        if (I->op == DTL_CU_IOTA) {
            int64_t *v = xmalloc((size_t)n * sizeof *v);
            for (int64_t e = 0; e < n; e++)
                v[e] = e / I->div % I->mod;
            dtl_ref_arg index = {v, DTL_DTYPE_I64, 1, flat};   /* cast to the register's type */
            ref_run(DTL_OP_CAST, rdt[r], 1, flat, 1, &index, reg[r], NULL);
            free(v);
            continue;
        }
        if (I->op == DTL_CU_COPY) {
            memcpy(reg[r], reg[I->a], (size_t)n * dtl_dtype_size(rdt[r]));
            continue;
        }
        const int16_t src[3] = {I->a, I->b, I->c};
        uint32_t nin = I->op == DTL_CU_WHERE ? 3 : I->op <= DTL_CU_NOT || I->op == DTL_CU_CAST
                                                       ? 1 : 2;
        dtl_ref_arg in[3];
        for (uint32_t i = 0; i < nin; i++)
            in[i] = (dtl_ref_arg){reg[src[i]], rdt[src[i]], 1, flat};
        ref_run(op_of(I->op), rdt[r], 1, flat, nin, in, reg[r], NULL);
    }
    for (int o = 0; o < p->nouts; o++) {
        int r = p->out_reg[o];
        dtl_ref_arg in = {reg[r], rdt[r], 1, flat};
        ref_run(DTL_OP_CAST, dt_of(p->out_dt[o]), 1, flat, 1, &in, p->out[o], NULL);
    }
    if (p->red_op >= 0 && p->nout > 0)
        reduce_into(op_of(p->red_op), dt_of(p->red_dt), reg[p->red_reg], p->nk, p->ksize,
                    p->kstride, p->nr, p->rsize, p->rstride, p->nout, p->rcount, p->red_out);
    for (int k = 0; k < NREG; k++)
        free(reg[k]);
}

cudaError_t dtl_cu_fused(const dtl_cu_fprog *p, cudaStream_t s)
{
    return submit(s, do_fused, p, sizeof *p);
}

#endif /* DTL_EMU_DEVICE_CODE */

/* ---- generated kernels: "NVRTC" compiles them for the CPU --------------------------------------
 *
 * The module's CUDA C++ is compiled by the host's C++ compiler (DTL_EMU_CXX, else
 * configure's CXX) with tests/unit/cuda_emu.h (CUDA threads as coroutines: test_cuda_gen's
 * emulator) into a shared object, with a launcher for each kernel it defines; its bytes are
 * the "cubin", so the plugin's caches hold them like a real one. cudaLibraryLoadData writes
 * them to a file and dlopen()s it; cudaLaunchKernel enqueues the launcher with the
 * arguments' values (the kernels' parameters are device pointers: cuda_gen.h). At most 64
 * blocks run (the kernels' loops are grid-stride). In a build with the sanitizers the module is compiled with them too
 * (DTL_EMU_SAN_FLAGS; cuda_emu.h tells AddressSanitizer of its threads' stacks), so a
 * generated kernel's access outside its buffers is an error there. */
#ifdef HAVE_NVRTC


struct _nvrtcProgram {
    char *src, *log, *bin;
    size_t nlog, nbin;
};

const char *nvrtcGetErrorString(nvrtcResult r)
{
    return r == NVRTC_SUCCESS ? "NVRTC_SUCCESS" : r == NVRTC_ERROR_COMPILATION
                                                      ? "NVRTC_ERROR_COMPILATION (tests/cuda_emu)"
                                                      : "NVRTC error (tests/cuda_emu)";
}

nvrtcResult nvrtcVersion(int *major, int *minor)
{
    *major = 0;   /* (never a real NVRTC's: the plugin's disk cache keys on it) */
    *minor = 0;
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcCreateProgram(nvrtcProgram *prog, const char *src, const char *name,
                               int nheaders, const char *const *headers,
                               const char *const *include_names)
{
    (void)name, (void)nheaders, (void)headers, (void)include_names;
    struct _nvrtcProgram *p = calloc(1, sizeof *p);
    if (!p || !(p->src = strdup(src))) {
        free(p);
        return NVRTC_ERROR_OUT_OF_MEMORY;
    }
    *prog = p;
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcDestroyProgram(nvrtcProgram *prog)
{
    if (*prog) {
        free((*prog)->src);
        free((*prog)->log);
        free((*prog)->bin);
        free(*prog);
    }
    *prog = NULL;
    return NVRTC_SUCCESS;
}

/* The whole of file path (malloc'ed), its size in *n; NULL when unreadable. */
static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    char *b = NULL;
    long sz = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (sz >= 0 && fseek(f, 0, SEEK_SET) == 0 && (b = malloc((size_t)sz + 1)) &&
        fread(b, 1, (size_t)sz, f) == (size_t)sz) {
        b[sz] = '\0';
        *n = (size_t)sz;
    } else {
        free(b);
        b = NULL;
    }
    if (f)
        fclose(f);
    return b;
}

/* Writes the module (the source, then per kernel `extern "C" __global__ void … NAME(` in
 * it: emu_run_NAME, which launches it, and emu_nargs_NAME) to f. */
static void write_module(FILE *f, const char *src)
{
    fputs(src, f);
    fputs("\n#include <utility>\n"
          "template <class... P, size_t... I>\n"
          "static void emu_call(void (*f)(P...), void **a, std::index_sequence<I...>)\n"
          "{\n    f(static_cast<P>(a[I])...);\n}\n"
          "template <class... P> static void emu_call(void (*f)(P...), void **a)\n"
          "{\n    emu_call(f, a, std::index_sequence_for<P...>{});\n}\n"
          "template <class... P> static unsigned emu_count(void (*)(P...))\n"
          "{\n    return sizeof...(P);\n}\n", f);
    const char *key = "__global__ void";
    for (const char *at = strstr(src, key); at; at = strstr(at + 1, key)) {
        const char *paren = strchr(at, '(');
        if (!paren)
            break;
        const char *q = paren;
        if (strncmp(at + strlen(key), " __launch_bounds__", 18) == 0 &&
            !(paren = strchr(paren + 1, '(')))   /* (the bound's own parentheses first) */
            break;
        const char *e = paren;
        while (e > q && (e[-1] == '_' || (e[-1] >= '0' && e[-1] <= '9') ||
                         (e[-1] >= 'a' && e[-1] <= 'z') || (e[-1] >= 'A' && e[-1] <= 'Z')))
            e--;
        int len = (int)(paren - e);
        fprintf(f, "extern \"C\" void emu_entry_%.*s(void **a)\n{\n"
                   "    emu_call(%.*s, a);\n}\n", len, e, len, e);
        fprintf(f, "extern \"C\" int emu_run_%.*s(void **a, unsigned grid, unsigned block)\n"
                   "{\n    return dtl_emu_launch(emu_entry_%.*s, a, grid, block);\n}\n"
                   "extern \"C\" unsigned emu_nargs_%.*s(void)\n{\n"
                   "    return emu_count(%.*s);\n}\n", len, e, len, e, len, e, len, e);
    }
}

nvrtcResult nvrtcCompileProgram(nvrtcProgram p, int nopts, const char *const *opts)
{
    (void)nopts, (void)opts;
    char dir[] = "/tmp/dtl-cuda-emu.XXXXXX";
    if (!mkdtemp(dir))
        return NVRTC_ERROR_INTERNAL_ERROR;
    char cpp[64], so[64], log[64], cmd[1400];
    snprintf(cpp, sizeof cpp, "%s/m.cpp", dir);
    snprintf(so, sizeof so, "%s/m.so", dir);
    snprintf(log, sizeof log, "%s/log", dir);
    FILE *f = fopen(cpp, "w");
    if (!f)
        return NVRTC_ERROR_INTERNAL_ERROR;
    write_module(f, p->src);
    fclose(f);
    const char *cxx = getenv("DTL_EMU_CXX");
    snprintf(cmd, sizeof cmd, "%s -std=c++17 -O1 -ffp-contract=off -fPIC -shared -w %s -include "
             "%s -o %s %s > %s 2>&1", cxx && *cxx ? cxx : DTL_EMU_CXX_DEFAULT, DTL_EMU_SAN_FLAGS,
             DTL_EMU_HEADER, so, cpp, log);
    int rc = system(cmd);
    p->log = slurp(log, &p->nlog);
    if (rc == 0)
        p->bin = slurp(so, &p->nbin);
    unlink(cpp);
    unlink(so);
    unlink(log);
    rmdir(dir);
    return p->bin ? NVRTC_SUCCESS : NVRTC_ERROR_COMPILATION;
}

nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram p, size_t *n)
{
    *n = p->nlog + 1;
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcGetProgramLog(nvrtcProgram p, char *log)
{
    memcpy(log, p->log ? p->log : "", p->nlog);
    log[p->nlog] = '\0';
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcGetCUBINSize(nvrtcProgram p, size_t *n)
{
    *n = p->nbin;
    return p->bin ? NVRTC_SUCCESS : NVRTC_ERROR_INVALID_PROGRAM;
}

nvrtcResult nvrtcGetCUBIN(nvrtcProgram p, char *bin)
{
    if (!p->bin)
        return NVRTC_ERROR_INVALID_PROGRAM;
    memcpy(bin, p->bin, p->nbin);
    return NVRTC_SUCCESS;
}

/* A loaded module (the library) and one of its kernels. The plugin never unloads a module,
 * so neither does this. */
typedef struct emu_kernel {
    int (*run)(void **args, unsigned grid, unsigned block);
    unsigned nargs;
} emu_kernel;

/* The cubin's size is not passed: the ELF header says where the section headers end. */
static size_t elf_size(const unsigned char *b)
{
    uint64_t shoff;
    uint16_t shentsize, shnum;
    memcpy(&shoff, b + 0x28, 8);
    memcpy(&shentsize, b + 0x3a, 2);
    memcpy(&shnum, b + 0x3c, 2);
    return (size_t)shoff + (size_t)shentsize * shnum;
}

cudaError_t cudaLibraryLoadData(cudaLibrary_t *lib, const void *code,
                                enum cudaJitOption *jit, void **jitv, unsigned int njit,
                                enum cudaLibraryOption *lo, void **lov, unsigned int nlo)
{
    (void)jit, (void)jitv, (void)njit, (void)lo, (void)lov, (void)nlo;
    if (memcmp(code, "\x7f" "ELF", 4) != 0)
        return cudaErrorInvalidKernelImage;
    char path[] = "/tmp/dtl-cuda-emu-XXXXXX.so";
    int fd = mkstemps(path, 3);
    if (fd < 0)
        return cudaErrorUnknown;
    size_t n = elf_size(code);
    bool ok = write(fd, code, n) == (ssize_t)n;
    close(fd);
    void *h = ok ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
    unlink(path);
    *lib = (cudaLibrary_t)h;
    return h ? cudaSuccess : cudaErrorInvalidKernelImage;
}

cudaError_t cudaLibraryGetKernel(cudaKernel_t *kernel, cudaLibrary_t lib, const char *name)
{
    char run[160], nargs[160];
    snprintf(run, sizeof run, "emu_run_%s", name);
    snprintf(nargs, sizeof nargs, "emu_nargs_%s", name);
    void *r = dlsym((void *)lib, run), *c = dlsym((void *)lib, nargs);
    if (!r || !c)
        return cudaErrorSymbolNotFound;
    /* a kernel is its library's, which lives as long as the process: kept in a list here */
    static emu_kernel **kernels;
    static size_t nkernels, capkernels;
    emu_kernel *k = xmalloc(sizeof *k);
    LOCK();
    grow((void **)&kernels, &capkernels, nkernels + 1, sizeof *kernels);
    kernels[nkernels++] = k;
    UNLOCK();
    memcpy(&k->run, &r, sizeof r);
    unsigned (*count)(void);
    memcpy(&count, &c, sizeof c);
    k->nargs = count();
    *kernel = (cudaKernel_t)k;
    return cudaSuccess;
}

typedef struct launch_arg {
    const emu_kernel *k;
    unsigned grid, block;
    void *args[64];
} launch_arg;

static void do_launch(const void *p)
{
    const launch_arg *l = p;
    void *args[64];
    memcpy(args, l->args, sizeof args);
    if (l->k->run(args, l->grid < 64 ? l->grid : 64, l->block) != 0)
        die("a generated kernel", "its threads wait on each other for ever");
}

cudaError_t cudaLaunchKernel(const void *fn, dim3 grid, dim3 block, void **args, size_t shared,
                             cudaStream_t s)
{
    const emu_kernel *k = fn;
    if (shared || grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1 || k->nargs > 64)
        return cudaErrorNotSupported;
    launch_arg l = {k, grid.x, block.x, {NULL}};
    for (unsigned i = 0; i < k->nargs; i++)
        memcpy(&l.args[i], args[i], sizeof(void *));   /* (the values, at the launch) */
    return submit(s, do_launch, &l, sizeof l);
}

#else

cudaError_t cudaLaunchKernel(const void *fn, dim3 grid, dim3 block, void **args, size_t shared,
                             cudaStream_t s)
{
    (void)fn, (void)grid, (void)block, (void)args, (void)shared, (void)s;
    return cudaErrorNotSupported;
}

#endif

/* ---- NCCL, one rank ----------------------------------------------------------------------------
 *
 * The plugin dlopen()s NCCL (kernels/cuda/cuda_nccl.c): with DTL_NCCL_LIB naming this plugin,
 * it finds these (tests/cuda_emu/plugin.map exports them). A world of one rank: ncclAvg of
 * one contribution is the contribution (a copy when not in place), enqueued on the stream
 * like any work; more ranks are refused. */
typedef struct emu_comm {
    int aborted;
} emu_comm;

typedef struct nccl_id {
    char internal[128];
} nccl_id;

int ncclGetVersion(int *v);
int ncclGetVersion(int *v)
{
    *v = 22800;   /* 2.28.0 */
    return 0;
}

int ncclGetUniqueId(nccl_id *id);
int ncclGetUniqueId(nccl_id *id)
{
    memset(id, 0, sizeof *id);
    memcpy(id->internal, "tests/cuda_emu", 14);
    return 0;
}

int ncclCommInitRank(emu_comm **comm, int nranks, nccl_id id, int rank);
int ncclCommInitRank(emu_comm **comm, int nranks, nccl_id id, int rank)
{
    (void)id;
    if (nranks != 1 || rank != 0)
        return 5;   /* ncclInvalidUsage */
    *comm = calloc(1, sizeof **comm);
    return *comm ? 0 : 2;
}

int ncclAllReduce(const void *send, void *recv, size_t count, int dtype, int op, emu_comm *comm,
                  cudaStream_t s);
int ncclAllReduce(const void *send, void *recv, size_t count, int dtype, int op, emu_comm *comm,
                  cudaStream_t s)
{
    (void)op;
    if (comm->aborted)
        return 5;
    /* ncclInt8 Uint8 Int32 Uint32 Int64 Uint64 Float16 Float32 Float64 Bfloat16: 0 .. 9 */
    static const size_t size[10] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2};
    if (dtype < 0 || dtype > 9)
        return 4;   /* ncclInvalidArgument */
    size_t es = size[dtype];
    if (send != recv) {
        LOCK();
        copy_on(s, recv, send, count * es, cudaMemcpyDeviceToDevice);
        UNLOCK();
    }
    return 0;
}

int ncclCommGetAsyncError(emu_comm *comm, int *err);
int ncclCommGetAsyncError(emu_comm *comm, int *err)
{
    (void)comm;
    *err = 0;
    return 0;
}

int ncclCommAbort(emu_comm *comm);
int ncclCommAbort(emu_comm *comm)
{
    comm->aborted = 1;   /* (never freed: a failed run's communicator stays) */
    return 0;
}

int ncclCommDestroy(emu_comm *comm);
int ncclCommDestroy(emu_comm *comm)
{
    free(comm);
    return 0;
}

const char *ncclGetErrorString(int r);
const char *ncclGetErrorString(int r)
{
    return r == 0 ? "no error" : r == 5 ? "invalid usage (tests/cuda_emu: one rank only)"
                                        : "error (tests/cuda_emu)";
}
