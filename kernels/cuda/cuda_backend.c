/* kernels/cuda/cuda_backend.c — the CUDA backend (cuda.h): context, store mirror, plans,
 * CUDA Graph capture.
 *
 * Design. prepare does everything that can be done once: the memory plan (cuda_plan.h) is
 * turned into one cudaMalloc'd block; every node's device pointer is then fixed (inputs have
 * slots in the block, params and states live in the store's device mirror, reshapes alias
 * their operand), so each computed node becomes one prebuilt "step" — a kernel launch of
 * kernels/cuda/ops.cu with its argument struct filled, a cuBLAS GEMM, or a device copy — and
 * the staging copies and parameter commits of exec.h's contract are steps too. run therefore
 * only copies the inputs in and enqueues the list; because nothing in the list changes from
 * run to run, it is captured once into a CUDA Graph (on the second run: the first one warms
 * cuBLAS up and reports any error with its node) and replayed with one cudaGraphLaunch.
 *
 * Inputs are copied into a pinned host buffer laid out like the device input region (two of
 * them, alternating, each reused only after the event recorded behind its copy has fired),
 * then moved with ONE asynchronous host-to-device copy on the plan's stream, ahead of the
 * graph. The step's outputs are read back only when asked for (output()).
 *
 * Matrix products: row-major C[m,n] = A[m,k] B[k,n] is column-major C^T = B^T A^T, so cuBLAS
 * gets (n, m, k) with B first and every matrix's row length as its leading dimension; batch
 * dims (broadcast: stride 0) become one strided-batched GEMM per run of mergeable batch
 * dims. No TF32 (CUBLAS_DEFAULT_MATH).
 *
 * This file is the plugin libdtlcuda.so (kernels/cuda/cuda_plugin.h): its one exported
 * function, at the end, checks the host's ABI and returns the backend's table. The store
 * belongs to the host: every store function is called through the host's table (st_* below;
 * the names of exec.c's store functions are poisoned after them, so the plugin's private
 * copy of exec.c can never be called on a store by mistake). */
#include "cuda_plugin.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cublas_v2.h>
#ifdef HAVE_CUBLASLT
#include <cublasLt.h>
#endif
#include <cuda_runtime.h>
#ifdef HAVE_NVRTC
#include <nvrtc.h>
#endif

#include "../ref/ref.h"
#include "../ref/ref_internal.h"
#include "../../compiler/passes/fuse.h"
#include "../../compiler/passes/passes.h"
#include "../../runtime/fsutil.h"
#include "cuda_dp_impl.h"
#include "cuda_gen.h"
#include "cuda_adam.h"
#include "cuda_plan.h"
#include "dnn.h"
#include "ops.h"

/* ---- the host (cuda_plugin.h) ---- */

/* Written once by the entry (dtl_cuda_plugin_v1), which the loader calls once, under its
 * pthread_once, before any other function of the plugin can run; read-only afterwards. */
static struct {
    const dtl_cuda_host *host;
    char abi[300];
    dtl_cuda_plugin table;
} the_plugin;

static dtl_store_entry *st_find(dtl_store *s, const char *name)
{
    return the_plugin.host->store_find(s, name);
}

static bool st_bind(dtl_store *s, const dtl_graph *g, dtl_err *err)
{
    return the_plugin.host->store_bind(s, g, err);
}

static uint64_t st_seed(const dtl_store *s)
{
    return the_plugin.host->store_seed(s);
}

static bool st_mirror_set(dtl_store *s, const dtl_store_mirror *m, dtl_err *err)
{
    return the_plugin.host->store_mirror_set(s, m, err);
}

static const dtl_store_mirror *st_mirror_get(const dtl_store *s)
{
    return the_plugin.host->store_mirror_get(s);
}

#pragma GCC poison dtl_store_new dtl_store_free dtl_store_seed dtl_store_count dtl_store_at
#pragma GCC poison dtl_store_find dtl_store_add dtl_store_bind dtl_store_mirror_set
#pragma GCC poison dtl_store_mirror_get dtl_store_sync

/* ---- the process's CUDA context (a lazily built, thread-safe singleton: see cuda.h) ---- */

typedef struct cu_ctx {
    bool ok;
    char why[400];
    int device;
    char name[320];
    cudaStream_t stream;
    cublasHandle_t blas;
    void *workspace;
} cu_ctx;

static cu_ctx the_ctx;
static pthread_once_t the_ctx_once = PTHREAD_ONCE_INIT;

enum { CU_WORKSPACE = 32 << 20 };

static void ctx_init(void)
{
    cu_ctx *c = &the_ctx;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(c->why, sizeof c->why, "no usable CUDA device: cudaGetDeviceCount: %s",
                 cudaGetErrorString(e));
        return;
    }
    if (n == 0) {
        snprintf(c->why, sizeof c->why, "no CUDA device (cudaGetDeviceCount found 0)");
        return;
    }
    const char *env = getenv("DTL_CUDA_DEVICE");
    c->device = env && *env ? atoi(env) : 0;
    /* One rank per GPU (cuda_dp.h): the launcher's local rank picks the device. */
    static const char *const local[] = {"DTL_LOCAL_RANK", "LOCAL_RANK",
                                        "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                        "SLURM_LOCALID"};
    for (size_t i = 0; !(env && *env) && i < sizeof local / sizeof local[0]; i++) {
        const char *lr = getenv(local[i]);
        if (lr && *lr && atoi(lr) >= 0) {
            c->device = atoi(lr) % n;
            break;
        }
    }
    if (c->device < 0 || c->device >= n) {
        snprintf(c->why, sizeof c->why, "DTL_CUDA_DEVICE=%s: this machine has %d device(s)",
                 env, n);
        return;
    }
    struct cudaDeviceProp prop;
    if ((e = cudaSetDevice(c->device)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, c->device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaMalloc(&c->workspace, CU_WORKSPACE)) != cudaSuccess) {
        snprintf(c->why, sizeof c->why, "CUDA device %d: %s", c->device, cudaGetErrorString(e));
        return;
    }
    snprintf(c->name, sizeof c->name, "%.256s (sm_%d%d)", prop.name, prop.major % 100,
             prop.minor % 100);
    cublasStatus_t b = cublasCreate(&c->blas);
    if (b == CUBLAS_STATUS_SUCCESS)
        b = cublasSetStream(c->blas, c->stream);
    if (b == CUBLAS_STATUS_SUCCESS)
        b = cublasSetWorkspace(c->blas, c->workspace, CU_WORKSPACE);
    if (b == CUBLAS_STATUS_SUCCESS)
        b = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH);   /* FP32 stays FP32: no TF32 */
    if (b == CUBLAS_STATUS_SUCCESS)
        b = cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST);
    if (b != CUBLAS_STATUS_SUCCESS) {
        snprintf(c->why, sizeof c->why, "cuBLAS: %s", cublasGetStatusString(b));
        return;
    }
    c->ok = true;
}

static cu_ctx *ctx_get(dtl_err *err)
{
    pthread_once(&the_ctx_once, ctx_init);
    if (!the_ctx.ok) {
        dtl_err_set(err, DTL_ERR_USAGE, "cuda: %s", the_ctx.why);
        return NULL;
    }
    return &the_ctx;
}

static bool cu_available(char *why, size_t len)
{
    pthread_once(&the_ctx_once, ctx_init);
    if (!the_ctx.ok && why && len)
        snprintf(why, len, "%s", the_ctx.why);
    else if (why && len)
        snprintf(why, len, "%s", the_ctx.name);
    return the_ctx.ok;
}

/* Page-locked host memory on this context's device (cuda.h: dtl_cuda_host_alloc). */
static void *cu_host_alloc(size_t bytes, char *why, size_t len)
{
    void *p = NULL;
    if (!cu_available(why, len))
        return NULL;
    cudaError_t e = cudaSetDevice(the_ctx.device);   /* (the caller's thread may be new) */
    if (e == cudaSuccess)
        e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        snprintf(why, len, "cudaHostAlloc: %s", cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cu_host_free(void *p)
{
    cudaFreeHost(p);
}

/* Whether the host memory at ptr is page-locked (a copy from it is DMA, and asynchronous). */
static bool host_pinned(const void *ptr)
{
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, ptr) != cudaSuccess) {
        cudaGetLastError();   /* (not sticky: clear it) */
        return false;
    }
    return a.type == cudaMemoryTypeHost;
}

#define CU_TRY(call, what)                                                                   \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess)                                                               \
            return dtl_err_set(err, DTL_ERR_INTERNAL, "cuda: %s: %s", (what),                \
                               cudaGetErrorString(e_));                                      \
    } while (0)

/* ---- the store's device mirror ---- */

typedef struct cu_ment {
    dtl_store_entry *e;
    void *dev;
    size_t bytes;
} cu_ment;

typedef struct cu_mirror {
    cu_ment *ents;
    size_t n, cap;
    void **blocks;
    size_t nblocks, capblocks;
} cu_mirror;

/* Waits for the set-up work of prepare and of a sync: cudaMemset and cudaMemcpy from
 * pageable memory run on the legacy stream and may return before they are done (a copy once
 * the bytes are staged), and the plans' streams are non-blocking, so nothing else orders them
 * before the first launch that reads the memory. */
static bool setup_done(dtl_err *err)
{
    CU_TRY(cudaStreamSynchronize(0), "setting up device memory");
    return true;
}

static void mirror_free(void *impl)
{
    cu_mirror *m = impl;
    if (!m)
        return;
    for (size_t i = 0; i < m->nblocks; i++)
        cudaFree(m->blocks[i]);
    free(m->blocks);
    free(m->ents);
    free(m);
}

static bool mirror_sync(void *impl, dtl_store *s, dtl_sync_dir dir, dtl_err *err)
{
    (void)s;
    cu_mirror *m = impl;
    cu_ctx *c = ctx_get(err);
    if (!c)
        return false;
    CU_TRY(cudaStreamSynchronize(c->stream), "waiting for the GPU before a store sync");
    for (size_t i = 0; i < m->n; i++) {
        cu_ment *me = &m->ents[i];
        if (!me->bytes)
            continue;
        if (dir == DTL_SYNC_TO_HOST)
            CU_TRY(cudaMemcpy(me->e->t.data, me->dev, me->bytes, cudaMemcpyDeviceToHost),
                   me->e->name);
        else
            CU_TRY(cudaMemcpy(me->dev, me->e->t.data, me->bytes, cudaMemcpyHostToDevice),
                   me->e->name);
    }
    return dir == DTL_SYNC_TO_HOST || setup_done(err);
}

static cu_ment *mirror_find(cu_mirror *m, const dtl_store_entry *e)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->ents[i].e == e)
            return &m->ents[i];
    return NULL;
}

/* The store's mirror (attached now if needed), holding every PARAM/STATE of g: new entries
 * get device memory (one allocation for all of them) and their host values. */
static cu_mirror *mirror_for(dtl_store *s, const dtl_graph *g, dtl_err *err)
{
    const dtl_store_mirror *sm = st_mirror_get(s);
    cu_mirror *m;
    if (sm && strcmp(sm->owner, "cuda") == 0) {
        m = sm->impl;
    } else {
        m = calloc(1, sizeof *m);
        if (!m) {
            dtl_err_set(err, DTL_ERR_NOMEM, "cuda: out of memory");
            return NULL;
        }
        dtl_store_mirror dm = {"cuda", m, mirror_sync, mirror_free};
        if (!st_mirror_set(s, &dm, err)) {
            free(m);
            return NULL;
        }
    }
    size_t need = 0, first = m->n;
    for (uint32_t v = 0; v < g->nnodes; v++) {
        const dtl_node *n = &g->nodes[v];
        if (n->op != DTL_OP_PARAM && n->op != DTL_OP_STATE)
            continue;
        dtl_store_entry *e = st_find(s, n->name);
        if (mirror_find(m, e))
            continue;
        if (m->n == m->cap) {
            size_t cap = m->cap ? 2 * m->cap : 16;
            cu_ment *ne = realloc(m->ents, cap * sizeof *ne);
            if (!ne) {
                dtl_err_set(err, DTL_ERR_NOMEM, "cuda: out of memory");
                return NULL;
            }
            m->ents = ne;
            m->cap = cap;
        }
        size_t bytes = (size_t)dtl_tensor_numel(&e->t) * dtl_dtype_size(e->t.dtype);
        m->ents[m->n++] = (cu_ment){e, NULL, bytes};
        need += (bytes + DTL_CU_ALIGN - 1) / DTL_CU_ALIGN * DTL_CU_ALIGN;
    }
    if (m->n == first)
        return m;
    if (m->nblocks == m->capblocks) {
        size_t cap = m->capblocks ? 2 * m->capblocks : 4;
        void **nb = realloc(m->blocks, cap * sizeof *nb);
        if (!nb) {
            m->n = first;
            dtl_err_set(err, DTL_ERR_NOMEM, "cuda: out of memory");
            return NULL;
        }
        m->blocks = nb;
        m->capblocks = cap;
    }
    void *block = NULL;
    cudaError_t e = cudaMalloc(&block, need ? need : 1);
    if (e != cudaSuccess) {
        m->n = first;
        dtl_err_set(err, DTL_ERR_NOMEM, "cuda: %zu bytes of device memory for the parameters "
                    "and optimizer state: %s", need, cudaGetErrorString(e));
        return NULL;
    }
    m->blocks[m->nblocks++] = block;
    size_t at = 0;
    for (size_t i = first; i < m->n; i++) {
        m->ents[i].dev = (char *)block + at;
        at += (m->ents[i].bytes + DTL_CU_ALIGN - 1) / DTL_CU_ALIGN * DTL_CU_ALIGN;
        if (m->ents[i].bytes &&
            (e = cudaMemcpy(m->ents[i].dev, m->ents[i].e->t.data, m->ents[i].bytes,
                            cudaMemcpyHostToDevice)) != cudaSuccess) {
            dtl_err_set(err, DTL_ERR_INTERNAL, "cuda: uploading %s: %s", m->ents[i].e->name,
                        cudaGetErrorString(e));
            return NULL;
        }
    }
    return m;
}

/* ---- steps: what a run enqueues ---- */

typedef enum cu_stepk {
    CU_EW, CU_RED, CU_ARGMAX, CU_COPY, CU_MEMCPY, CU_MEMCPY2D, CU_MEMSET, CU_GATHER,
    CU_SCATTER, CU_RNG, CU_GEMM, CU_FUSED, CU_WIN, CU_ADAM, CU_GEN, CU_LT
} cu_stepk;

typedef struct cu_step {
    cu_stepk kind;
    uint32_t node;        /* for messages; UINT32_MAX: not a node's (staging, commits) */
    const char *what;     /* for messages when node is UINT32_MAX */
    union {
        dtl_cu_ew ew;
        dtl_cu_red red;
        dtl_cu_copy copy;
        struct { dtl_cu_dt dt; const void *x; int64_t outer, dim, inner; int64_t *out; } am;
        struct { void *dst; const void *src; size_t bytes; } mc;
        struct { void *dst; size_t dpitch; const void *src; size_t spitch, width, height; } mc2;
        struct { void *dst; int val; size_t bytes; } ms;
        struct {
            dtl_cu_dt dt, idt;
            const void *x, *idx;
            int64_t outer, dim, inner, count;
            void *out;
            unsigned long long *status;
        } gs;
        struct { dtl_cu_dt dt; uint64_t seed, sid; const int64_t *step; int64_t n; void *out; } rng;
        struct {
            bool f64;
            uint8_t prec;   /* 0: as the dtype; 1: bf16 operands, f32 C; 2: tf32 */
            cublasOperation_t opa, opb;
            int m, n, k, batch, lda, ldb;
            const void *a, *b;
            void *c;
            long long sa, sb, sc;   /* element strides between batch matrices */
        } gemm;
        dtl_cu_fprog fp;
        struct { dtl_cu_wop op; dtl_cu_win g; const void *a, *b; void *out; } win;
        struct { const dtl_cu_adam_t *table; int n; int64_t nblocks; dtl_cu_adam_s s; } adam;
        struct {   /* a generated kernel (cuda_gen.h): args[0, nload) read, the rest written */
            cudaKernel_t fn;
            unsigned grid, block;
            uint32_t nargs, nload;
            void *args[DTL_CUGEN_MAX_ARGS];
        } gen;
        struct { uint32_t k; void *d; } lt;   /* a cuBLASLt matmul: p->ltk[k]; writes d */
    } u;
} cu_step;

/* A cuBLASLt matmul with its epilogue (see lt_plan). */
typedef struct cu_ltk {
    bool ok;
#ifdef HAVE_CUBLASLT
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
    const void *a, *b;
    void *d;
#endif
} cu_ltk;

#ifdef HAVE_CUBLASLT
/* The process's cuBLASLt handle (made once, like the_ctx). */
static struct {
    pthread_once_t once;
    cublasLtHandle_t h;
    cublasStatus_t st;
} the_lt = {PTHREAD_ONCE_INIT, NULL, CUBLAS_STATUS_NOT_INITIALIZED};

static void lt_init(void)
{
    the_lt.st = cublasLtCreate(&the_lt.h);
}
#endif

typedef struct cu_plan {
    const dtl_graph *g;        /* the graph run: the caller's, or pg */
    dtl_graph pg;              /* fused path: the graph after the passes */
    bool have_pg;
    bool gen_only;     /* kernels that only generated code runs are allowed: ROW kernels,
                          and those beyond the interpreter's limits */
    bool gen_retry;    /* one of them got no code: prepare again without them */
    dtl_kprog *kp;             /* fused path: the kernel program (NULL: one launch a node) */
    uint32_t ngen;             /* fused path: kernels running generated code (cuda_gen.h) */
    uint32_t nlt;              /* fused path: matmuls with their epilogue in cuBLASLt */
    struct cu_ltk *ltk;        /* fused path: per kernel, its cuBLASLt call (when ok) */
    dtl_store *store;
    cu_ctx *ctx;
    cu_mirror *mirror;
    dtl_arena arena;
    dtl_cu_layout L;
    char *dev;                 /* the plan's one device block */
    void **ptr;                /* per node: its device pointer */
    cu_step *steps;
    uint32_t nsteps, capsteps;
    uint32_t *inputs, ninputs;
    const void **dma_src;      /* per input: its caller's page-locked buffer, this run */
    bool dma_pending;          /* copies from dma_src are enqueued: run waits for dma_done */
    cudaEvent_t dma_done;
    void *pinned[2];           /* input staging, laid out like the device input region */
    cudaEvent_t consumed[2];
    bool have_event[2];
    int which;
    /* The input copies' own stream (DTL_CUDA_COPY_STREAM=0: none, the compute stream copies):
     * host to devstage[which] there, then device to device on the compute stream. */
    cudaStream_t copy;
    bool have_copy;
    char *devstage;            /* 2 x the input region, on the device */
    cudaEvent_t copied[2];
    bool have_copied[2];
    void **outhost;            /* per output: pinned host copy (LOSS, VALUE) */
    const void **outsrc;       /* per output: device source */
    bool *outfresh;            /* per output: outhost holds this run's value */
    unsigned long long *status_host;
    bool use_graph, sync_each;
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    dtl_plan_stats stats;
    dtl_cu_dp_plan *dpp;       /* NCCL data parallel (cuda_dp_impl.h), or NULL */
    void (*ready)(void *ctx, uint32_t k, const dtl_tensor *value);   /* another hook */
    void *ready_ctx;
    const dtl_graph *og;       /* the caller's graph (its outputs are the plan's) */
    /* The multi-tensor Adam update (cuda_adam.h): the matched params' names, m's and v's,
     * its device table; their PARAM/STATE outputs are read from the mirror. */
    uint32_t nadam;
    const char **adam_names;   /* 3 per param: param, m, v */
    dtl_cu_adam_t *adam_dev;
} cu_plan;

static dtl_cu_dt cu_dt_of(dtl_dtype t)
{
    switch (t) {
    case DTL_DTYPE_F32: return DTL_CU_F32;
    case DTL_DTYPE_F64: return DTL_CU_F64;
    case DTL_DTYPE_I32: return DTL_CU_I32;
    case DTL_DTYPE_I64: return DTL_CU_I64;
    case DTL_DTYPE_BOOL: return DTL_CU_BOOL;
    case DTL_DTYPE_BF16: return DTL_CU_BF16;
    default: return DTL_CU_DT_COUNT;
    }
}

/* The kernels' op for each elementwise/reduce dtl_op (others: DTL_CU_OP_COUNT). */
static dtl_cu_op cu_op_of(dtl_op op)
{
    static const struct { dtl_op op; dtl_cu_op cu; } map[] = {
        {DTL_OP_NEG, DTL_CU_NEG}, {DTL_OP_ABS, DTL_CU_ABS}, {DTL_OP_EXP, DTL_CU_EXP},
        {DTL_OP_LOG, DTL_CU_LOG}, {DTL_OP_SQRT, DTL_CU_SQRT}, {DTL_OP_TANH, DTL_CU_TANH},
        {DTL_OP_SIGMOID, DTL_CU_SIGMOID}, {DTL_OP_RELU, DTL_CU_RELU},
        {DTL_OP_SIN, DTL_CU_SIN}, {DTL_OP_COS, DTL_CU_COS}, {DTL_OP_NOT, DTL_CU_NOT},
        {DTL_OP_ADD, DTL_CU_ADD}, {DTL_OP_SUB, DTL_CU_SUB}, {DTL_OP_MUL, DTL_CU_MUL},
        {DTL_OP_DIV, DTL_CU_DIV}, {DTL_OP_POW, DTL_CU_POW}, {DTL_OP_MAX, DTL_CU_MAX},
        {DTL_OP_MIN, DTL_CU_MIN}, {DTL_OP_LT, DTL_CU_LT}, {DTL_OP_LE, DTL_CU_LE},
        {DTL_OP_GT, DTL_CU_GT}, {DTL_OP_GE, DTL_CU_GE}, {DTL_OP_EQ, DTL_CU_EQ},
        {DTL_OP_NE, DTL_CU_NE}, {DTL_OP_AND, DTL_CU_AND}, {DTL_OP_OR, DTL_CU_OR},
        {DTL_OP_CAST, DTL_CU_CAST}, {DTL_OP_WHERE, DTL_CU_WHERE}, {DTL_OP_SUM, DTL_CU_SUM},
        {DTL_OP_REDUCE_MAX, DTL_CU_REDUCE_MAX},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (map[i].op == op)
            return map[i].cu;
    return DTL_CU_OP_COUNT;
}

static cu_step *step_add(cu_plan *p, cu_stepk kind, uint32_t node, const char *what)
{
    if (p->nsteps == p->capsteps) {
        uint32_t cap = p->capsteps ? 2 * p->capsteps : 64;
        p->steps = dtl_arena_grow(&p->arena, p->steps, p->nsteps, cap, sizeof *p->steps);
        p->capsteps = cap;
    }
    cu_step *s = &p->steps[p->nsteps++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->node = node;
    s->what = what;
    return s;
}

/* Merges dims that are contiguous for every one of nops operands and drops dims of size 1;
 * returns the new rank (at least 1). */
static int collapse(int rank, int64_t *shape, int nops, int64_t (*st)[DTL_CU_MAX_RANK])
{
    int64_t ns[DTL_CU_MAX_RANK], nst[DTL_CU_FMAX_INS][DTL_CU_MAX_RANK];
    int r = 0;
    for (int d = 0; d < rank; d++) {
        if (shape[d] == 1)
            continue;
        bool merge = r > 0;
        for (int k = 0; k < nops && merge; k++)
            merge = nst[k][r - 1] == st[k][d] * shape[d];
        if (merge) {
            ns[r - 1] *= shape[d];
            for (int k = 0; k < nops; k++)
                nst[k][r - 1] = st[k][d];
        } else {
            ns[r] = shape[d];
            for (int k = 0; k < nops; k++)
                nst[k][r] = st[k][d];
            r++;
        }
    }
    if (r == 0) {
        ns[0] = 1;
        for (int k = 0; k < nops; k++)
            nst[k][0] = 0;
        r = 1;
    }
    for (int d = 0; d < r; d++) {
        shape[d] = ns[d];
        for (int k = 0; k < nops; k++)
            st[k][d] = nst[k][d];
    }
    return r;
}

static const dtl_node *N(const cu_plan *p, dtl_val v)
{
    return &p->g->nodes[v];
}

static void build_elementwise(cu_plan *p, uint32_t v)
{
    const dtl_node *n = N(p, v);
    cu_step *s = step_add(p, CU_EW, v, NULL);
    dtl_cu_ew *a = &s->u.ew;
    a->op = cu_op_of(n->op);
    a->nin = (int)n->nin;
    a->n = (int64_t)dtl_node_numel(n);
    a->rank = (int)n->rank;
    memcpy(a->shape, n->shape, n->rank * sizeof *n->shape);
    for (uint32_t k = 0; k < n->nin; k++) {
        const dtl_node *x = N(p, n->in[k]);
        ref_bcast_strides(x->rank, x->shape, n->rank, n->shape, a->st[k]);
        a->in[k] = p->ptr[n->in[k]];
    }
    /* the operands' dtype: where's values, a cast's source, else the first operand's */
    a->dt = cu_dt_of(N(p, n->in[n->op == DTL_OP_WHERE ? 1 : 0])->dtype);
    a->odt = cu_dt_of(n->dtype);
    a->out = p->ptr[v];
    a->rank = collapse(a->rank, a->shape, a->nin, a->st);
}

static void build_reduce(cu_plan *p, uint32_t v)
{
    const dtl_node *n = N(p, v), *x = N(p, n->in[0]);
    cu_step *s = step_add(p, CU_RED, v, NULL);
    dtl_cu_red *a = &s->u.red;
    a->op = cu_op_of(n->op);
    a->dt = cu_dt_of(x->dtype);
    a->in = p->ptr[n->in[0]];
    a->out = p->ptr[v];
    a->nout = (int64_t)dtl_node_numel(n);
    int64_t st[DTL_MAX_RANK];
    ref_strides(x->rank, x->shape, st);
    a->rcount = 1;
    for (uint32_t i = 0; i < x->rank; i++) {
        bool red = (n->attr.red.axes >> i) & 1;
        if (red)
            a->rcount *= x->shape[i];
        if (x->shape[i] == 1)
            continue;
        int64_t *size = red ? a->rsize : a->ksize, *stride = red ? a->rstride : a->kstride;
        int *cnt = red ? &a->nr : &a->nk;
        if (*cnt > 0 && stride[*cnt - 1] == st[i] * x->shape[i]) {
            size[*cnt - 1] *= x->shape[i];
            stride[*cnt - 1] = st[i];
        } else {
            size[*cnt] = x->shape[i];
            stride[*cnt] = st[i];
            (*cnt)++;
        }
    }
}

static void build_copy(cu_plan *p, uint32_t v, const int64_t *st, int64_t base)
{
    const dtl_node *n = N(p, v);
    cu_step *s = step_add(p, CU_COPY, v, NULL);
    dtl_cu_copy *a = &s->u.copy;
    a->esz = (int)dtl_dtype_size(n->dtype);
    a->n = (int64_t)dtl_node_numel(n);
    a->base = base;
    a->rank = (int)n->rank;
    memcpy(a->shape, n->shape, n->rank * sizeof *n->shape);
    memcpy(a->st, st, n->rank * sizeof *st);
    a->src = p->ptr[n->in[0]];
    a->out = p->ptr[v];
    int64_t tmp[3][DTL_CU_MAX_RANK];
    memcpy(tmp[0], a->st, sizeof a->st);
    a->rank = collapse(a->rank, a->shape, 1, tmp);
    memcpy(a->st, tmp[0], sizeof a->st);
}

static void build_memcpy(cu_plan *p, uint32_t v, const char *what, void *dst, const void *src,
                         size_t bytes)
{
    if (!bytes || dst == src)
        return;
    cu_step *s = step_add(p, CU_MEMCPY, v, what);
    s->u.mc.dst = dst;
    s->u.mc.src = src;
    s->u.mc.bytes = bytes;
}

/* C (node v's shape, at c) = op(A) @ op(B) of the stored operands av, bv: ta (tb) when the
 * stored A (B) is the logical one transposed in its last two axes. */
static void build_gemm(cu_plan *p, uint32_t v, dtl_val av, bool ta, dtl_val bv, bool tb, void *c)
{
    const dtl_node *n = N(p, v), *a = N(p, av), *b = N(p, bv);
    uint32_t rb = n->rank - 2;
    int64_t m = n->shape[rb], nn = n->shape[rb + 1];
    int64_t k = ta ? a->shape[a->rank - 2] : a->shape[a->rank - 1];
    size_t esz = dtl_dtype_size(n->dtype);
    size_t aesz = dtl_dtype_size(a->dtype), besz = dtl_dtype_size(b->dtype);   /* bf16: 2 */
    if (m == 0 || nn == 0)
        return;
    if (k == 0) {   /* an empty sum: zeros */
        cu_step *s = step_add(p, CU_MEMSET, v, NULL);
        s->u.ms.dst = c;
        s->u.ms.val = 0;
        s->u.ms.bytes = (size_t)dtl_node_numel(n) * esz;
        return;
    }
    /* Batch strides in matrices, broadcast to the output's batch shape, then merged. */
    int64_t st[DTL_CU_FMAX_INS][DTL_CU_MAX_RANK], shape[DTL_CU_MAX_RANK];
    ref_bcast_strides(a->rank - 2, a->shape, rb, n->shape, st[0]);
    ref_bcast_strides(b->rank - 2, b->shape, rb, n->shape, st[1]);
    ref_strides(rb, n->shape, st[2]);
    memcpy(shape, n->shape, rb * sizeof *shape);
    int r = rb ? collapse((int)rb, shape, 3, st) : 1;
    if (!rb) {
        shape[0] = 1;
        st[0][0] = st[1][0] = st[2][0] = 0;
    }
    /* The last merged batch dim is one strided-batched call; the others are enumerated. */
    int64_t outer = 1;
    for (int d = 0; d + 1 < r; d++)
        outer *= shape[d];
    for (int64_t o = 0; o < outer; o++) {
        int64_t rem = o, oa = 0, ob = 0, oc = 0;
        for (int d = r - 2; d >= 0; d--) {
            int64_t i = rem % shape[d];
            rem /= shape[d];
            oa += i * st[0][d];
            ob += i * st[1][d];
            oc += i * st[2][d];
        }
        cu_step *s = step_add(p, CU_GEMM, v, NULL);
        s->u.gemm.f64 = n->dtype == DTL_DTYPE_F64;
        s->u.gemm.prec = a->dtype == DTL_DTYPE_BF16 ? 1 : n->attr.tf32 ? 2 : 0;
        s->u.gemm.m = (int)m;
        s->u.gemm.n = (int)nn;
        s->u.gemm.k = (int)k;
        s->u.gemm.opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
        s->u.gemm.opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        s->u.gemm.lda = (int)(ta ? m : k);
        s->u.gemm.ldb = (int)(tb ? k : nn);
        s->u.gemm.batch = (int)shape[r - 1];
        s->u.gemm.a = (const char *)p->ptr[av] + (size_t)(oa * m * k) * aesz;
        s->u.gemm.b = (const char *)p->ptr[bv] + (size_t)(ob * k * nn) * besz;
        s->u.gemm.c = (char *)c + (size_t)(oc * m * nn) * esz;
        s->u.gemm.sa = (long long)(st[0][r - 1] * m * k);
        s->u.gemm.sb = (long long)(st[1][r - 1] * k * nn);
        s->u.gemm.sc = (long long)(st[2][r - 1] * m * nn);
    }
}

static void build_matmul(cu_plan *p, uint32_t v)
{
    const dtl_node *n = N(p, v);
    build_gemm(p, v, n->in[0], false, n->in[1], false, p->ptr[v]);
}

/* x viewed as [outer, dim, inner] around axis. */
static void around(const dtl_node *x, uint32_t axis, int64_t *outer, int64_t *dim,
                   int64_t *inner)
{
    *outer = ref_numel(axis, x->shape);
    *dim = x->shape[axis];
    *inner = ref_numel(x->rank - axis - 1, x->shape + axis + 1);
}

/* A windowed op (kernels/cuda/dnn.h; its geometry: cuda_plan.h). */
static void build_window(cu_plan *p, uint32_t v)
{
    const dtl_node *n = N(p, v);
    cu_step *s = step_add(p, CU_WIN, v, NULL);
    dtl_cu_win_of(p->g, v, &s->u.win.op, &s->u.win.g);
    s->u.win.a = p->ptr[n->in[0]];
    s->u.win.b = n->nin > 1 ? p->ptr[n->in[1]] : NULL;
    s->u.win.out = p->ptr[v];
}

static void build_node(cu_plan *p, uint32_t v)
{
    const dtl_node *n = N(p, v);
    if (dtl_node_numel(n) == 0 && n->op != DTL_OP_SCATTER_ADD)
        return;
    switch (n->op) {
    case DTL_OP_CAST:
        if (N(p, n->in[0])->dtype == n->dtype) {   /* ref: a plain copy */
            build_memcpy(p, v, NULL, p->ptr[v], p->ptr[n->in[0]],
                         (size_t)dtl_node_numel(n) * dtl_dtype_size(n->dtype));
            return;
        }
        build_elementwise(p, v);
        return;
    case DTL_OP_SUM:
    case DTL_OP_REDUCE_MAX: build_reduce(p, v); return;
    case DTL_OP_ARGMAX: {
        cu_step *s = step_add(p, CU_ARGMAX, v, NULL);
        const dtl_node *x = N(p, n->in[0]);
        s->u.am.dt = cu_dt_of(x->dtype);
        s->u.am.x = p->ptr[n->in[0]];
        around(x, n->attr.axis, &s->u.am.outer, &s->u.am.dim, &s->u.am.inner);
        s->u.am.out = p->ptr[v];
        return;
    }
    case DTL_OP_MATMUL: build_matmul(p, v); return;
    case DTL_OP_TRANSPOSE: {
        const dtl_node *x = N(p, n->in[0]);
        int64_t own[DTL_MAX_RANK], st[DTL_MAX_RANK];
        ref_strides(x->rank, x->shape, own);
        for (uint32_t i = 0; i < n->rank; i++)
            st[i] = own[n->attr.perm[i]];
        build_copy(p, v, st, 0);
        return;
    }
    case DTL_OP_BROADCAST: {
        const dtl_node *x = N(p, n->in[0]);
        int64_t st[DTL_MAX_RANK];
        ref_bcast_strides(x->rank, x->shape, n->rank, n->shape, st);
        build_copy(p, v, st, 0);
        return;
    }
    case DTL_OP_SLICE: {
        const dtl_node *x = N(p, n->in[0]);
        int64_t own[DTL_MAX_RANK], st[DTL_MAX_RANK], base = 0;
        ref_strides(x->rank, x->shape, own);
        for (uint32_t i = 0; i < n->rank; i++) {
            st[i] = own[i] * n->attr.slice.step[i];
            base += own[i] * n->attr.slice.start[i];
        }
        build_copy(p, v, st, base);
        return;
    }
    case DTL_OP_CONCAT: {
        int64_t outer, dim, inner;
        around(n, n->attr.axis, &outer, &dim, &inner);
        size_t esz = dtl_dtype_size(n->dtype), at = 0;
        for (uint32_t k = 0; k < n->nin; k++) {
            size_t width = (size_t)(N(p, n->in[k])->shape[n->attr.axis] * inner) * esz;
            if (width) {
                cu_step *s = step_add(p, CU_MEMCPY2D, v, NULL);
                s->u.mc2.dst = (char *)p->ptr[v] + at;
                s->u.mc2.dpitch = (size_t)(dim * inner) * esz;
                s->u.mc2.src = p->ptr[n->in[k]];
                s->u.mc2.spitch = width;
                s->u.mc2.width = width;
                s->u.mc2.height = (size_t)outer;
            }
            at += width;
        }
        return;
    }
    case DTL_OP_GATHER:
    case DTL_OP_SCATTER_ADD: {
        bool g = n->op == DTL_OP_GATHER;
        cu_step *s = step_add(p, g ? CU_GATHER : CU_SCATTER, v, NULL);
        const dtl_node *x = N(p, n->in[0]), *idx = N(p, n->in[1]);
        around(g ? x : n, n->attr.axis, &s->u.gs.outer, &s->u.gs.dim, &s->u.gs.inner);
        s->u.gs.dt = cu_dt_of(n->dtype);
        s->u.gs.idt = cu_dt_of(idx->dtype);
        s->u.gs.x = p->ptr[n->in[0]];
        s->u.gs.idx = p->ptr[n->in[1]];
        s->u.gs.count = (int64_t)dtl_node_numel(idx);
        s->u.gs.out = p->ptr[v];
        s->u.gs.status = (unsigned long long *)(p->dev + p->L.status_base) +
                         2 * p->L.status[v];
        return;
    }
    case DTL_OP_CONV2D:
    case DTL_OP_CONV2D_BWD_X:
    case DTL_OP_CONV2D_BWD_W:
    case DTL_OP_MAXPOOL2D:
    case DTL_OP_MAXPOOL2D_BWD:
    case DTL_OP_AVGPOOL2D:
    case DTL_OP_AVGPOOL2D_BWD: build_window(p, v); return;
    case DTL_OP_RNG_UNIFORM: {
        cu_step *s = step_add(p, CU_RNG, v, NULL);
        s->u.rng.dt = cu_dt_of(n->dtype);
        s->u.rng.seed = st_seed(p->store);
        s->u.rng.sid = n->attr.stream;
        s->u.rng.step = p->ptr[n->in[0]];
        s->u.rng.n = (int64_t)dtl_node_numel(n);
        s->u.rng.out = p->ptr[v];
        return;
    }
    default:
        build_elementwise(p, v);   /* unary, binary, where */
        return;
    }
}

/* ---- enqueueing ---- */

static bool step_fail(const cu_plan *p, const cu_step *s, const char *call, const char *msg,
                      dtl_err *err)
{
    if (s->node == UINT32_MAX)
        return dtl_err_set(err, DTL_ERR_INTERNAL, "cuda: %s: %s: %s", s->what, call, msg);
    const dtl_node *n = N(p, s->node);
    return dtl_err_set(err, DTL_ERR_INTERNAL, "cuda: %%%u (%s%s%s): %s: %s", s->node,
                       dtl_op_name(n->op), n->name ? " " : "", n->name ? n->name : "", call,
                       msg);
}

static bool enqueue_step(cu_plan *p, const cu_step *s, dtl_err *err)
{
    cudaStream_t st = p->ctx->stream;
    cudaError_t e = cudaSuccess;
    const char *call = "kernel launch";
    switch (s->kind) {
    case CU_EW: e = dtl_cu_elementwise(&s->u.ew, st); break;
    case CU_RED: e = dtl_cu_reduce(&s->u.red, st); break;
    case CU_ARGMAX:
        e = dtl_cu_argmax(s->u.am.dt, s->u.am.x, s->u.am.outer, s->u.am.dim, s->u.am.inner,
                          s->u.am.out, st);
        break;
    case CU_COPY: e = dtl_cu_strided_copy(&s->u.copy, st); break;
    case CU_MEMCPY:
        call = "cudaMemcpyAsync";
        e = cudaMemcpyAsync(s->u.mc.dst, s->u.mc.src, s->u.mc.bytes, cudaMemcpyDeviceToDevice,
                            st);
        break;
    case CU_MEMCPY2D:
        call = "cudaMemcpy2DAsync";
        e = cudaMemcpy2DAsync(s->u.mc2.dst, s->u.mc2.dpitch, s->u.mc2.src, s->u.mc2.spitch,
                              s->u.mc2.width, s->u.mc2.height, cudaMemcpyDeviceToDevice, st);
        break;
    case CU_MEMSET:
        call = "cudaMemsetAsync";
        e = cudaMemsetAsync(s->u.ms.dst, s->u.ms.val, s->u.ms.bytes, st);
        break;
    case CU_GATHER:
    case CU_SCATTER: {
        __typeof__(s->u.gs) const *g = &s->u.gs;
        e = s->kind == CU_GATHER
                ? dtl_cu_gather(g->dt, g->x, g->idx, g->idt, g->outer, g->dim, g->inner,
                                g->count, g->out, g->status, st)
                : dtl_cu_scatter_add(g->dt, g->x, g->idx, g->idt, g->outer, g->dim, g->inner,
                                     g->count, g->out, g->status, st);
        break;
    }
    case CU_FUSED: e = dtl_cu_fused(&s->u.fp, st); break;
    case CU_LT: {
#ifdef HAVE_CUBLASLT
        const cu_ltk *l = &p->ltk[s->u.lt.k];
        const float one = 1, zero = 0;
        cublasStatus_t b = cublasLtMatmul(the_lt.h, l->op, &one, l->b, l->la, l->a, l->lb, &zero,
                                          l->d, l->ld, l->d, l->ld, &l->algo,
                                          p->ctx->workspace, CU_WORKSPACE, st);
        if (b != CUBLAS_STATUS_SUCCESS)
            return step_fail(p, s, "cublasLtMatmul", cublasGetStatusString(b), err);
        e = cudaGetLastError();
#else
        e = cudaErrorNotSupported;
#endif
        break;
    }
    case CU_GEN: {
        void *pa[DTL_CUGEN_MAX_ARGS];
        for (uint32_t i = 0; i < s->u.gen.nargs; i++)
            pa[i] = (void *)&s->u.gen.args[i];
        dim3 grid = {s->u.gen.grid, 1, 1}, block = {s->u.gen.block, 1, 1};
        call = "generated kernel launch";
        e = cudaLaunchKernel((const void *)s->u.gen.fn, grid, block, pa, 0, st);
        break;
    }
    case CU_WIN:
        e = dtl_cu_window(s->u.win.op, &s->u.win.g, s->u.win.a, s->u.win.b, s->u.win.out, st);
        break;
    case CU_ADAM:
        e = dtl_cu_adam(s->u.adam.table, s->u.adam.n, s->u.adam.nblocks, &s->u.adam.s, st);
        break;
    case CU_RNG:
        e = dtl_cu_rng_uniform(s->u.rng.dt, s->u.rng.seed, s->u.rng.sid, s->u.rng.step,
                               s->u.rng.n, s->u.rng.out, st);
        break;
    case CU_GEMM: {
        /* row-major C = A B as column-major C^T = B^T A^T */
        const __typeof__(s->u.gemm) *g = &s->u.gemm;
        cublasStatus_t b;
        if (g->f64) {
            const double one = 1, zero = 0;
            b = cublasDgemmStridedBatched(p->ctx->blas, g->opb, g->opa, g->n, g->m, g->k, &one,
                                          g->b, g->ldb, g->sb, g->a, g->lda, g->sa, &zero,
                                          g->c, g->n, g->sc, g->batch);
        } else if (g->prec) {
            /* mixed precision (docs/cuda.md): bf16 operands with f32 accumulation and an
             * f32 C, or f32 operands on TF32 tensor cores; the math mode stays default */
            const float one = 1, zero = 0;
            cudaDataType_t ab = g->prec == 1 ? CUDA_R_16BF : CUDA_R_32F;
            cublasComputeType_t ct = g->prec == 1 ? CUBLAS_COMPUTE_32F
                                                  : CUBLAS_COMPUTE_32F_FAST_TF32;
            b = cublasGemmStridedBatchedEx(p->ctx->blas, g->opb, g->opa, g->n, g->m, g->k,
                                           &one, g->b, ab, g->ldb, g->sb, g->a, ab, g->lda,
                                           g->sa, &zero, g->c, CUDA_R_32F, g->n, g->sc,
                                           g->batch, ct, CUBLAS_GEMM_DEFAULT);
        } else {
            const float one = 1, zero = 0;
            b = cublasSgemmStridedBatched(p->ctx->blas, g->opb, g->opa, g->n, g->m, g->k, &one,
                                          g->b, g->ldb, g->sb, g->a, g->lda, g->sa, &zero,
                                          g->c, g->n, g->sc, g->batch);
        }
        if (b != CUBLAS_STATUS_SUCCESS)
            return step_fail(p, s, "cublas gemm", cublasGetStatusString(b), err);
        e = cudaGetLastError();
        break;
    }
    }
    if (e != cudaSuccess)
        return step_fail(p, s, call, cudaGetErrorString(e), err);
    if (p->sync_each && (e = cudaStreamSynchronize(st)) != cudaSuccess)
        return step_fail(p, s, "running it", cudaGetErrorString(e), err);
    return true;
}

static bool enqueue_all(cu_plan *p, dtl_err *err)
{
    for (uint32_t i = 0; i < p->nsteps; i++)
        if (!enqueue_step(p, &p->steps[i], err) || !dtl_cu_dp_after_step(p->dpp, i, err))
            return false;
    return true;
}

/* Whether step s writes into [lo, lo + bytes): the first byte each of its outputs is compared
 * (a step writes whole values, or a part of one, as concat does, never across two). A new
 * step kind must be added here (no default: -Wswitch says so): data parallel training starts
 * a gradient's allreduce after the last step that writes it. */
static bool step_writes(const cu_step *s, const char *lo, size_t bytes)
{
    const void *w[DTL_CU_FMAX_OUTS + 1];
    int n = 0;
    switch (s->kind) {
    case CU_EW: w[n++] = s->u.ew.out; break;
    case CU_RED: w[n++] = s->u.red.out; break;
    case CU_ARGMAX: w[n++] = s->u.am.out; break;
    case CU_COPY: w[n++] = s->u.copy.out; break;
    case CU_MEMCPY: w[n++] = s->u.mc.dst; break;
    case CU_MEMCPY2D: w[n++] = s->u.mc2.dst; break;
    case CU_MEMSET: w[n++] = s->u.ms.dst; break;
    case CU_GATHER:
    case CU_SCATTER: w[n++] = s->u.gs.out; break;
    case CU_RNG: w[n++] = s->u.rng.out; break;
    case CU_GEMM: w[n++] = s->u.gemm.c; break;
    case CU_FUSED:
        for (int i = 0; i < s->u.fp.nouts && i < DTL_CU_FMAX_OUTS; i++)
            w[n++] = s->u.fp.out[i];
        w[n++] = s->u.fp.red_out;
        break;
    case CU_WIN: w[n++] = s->u.win.out; break;
    case CU_ADAM: return true;   /* (params, m, v: never with data parallel; conservative) */
    case CU_LT: w[n++] = s->u.lt.d; break;
    case CU_GEN:
        for (uint32_t i = s->u.gen.nload; i < s->u.gen.nargs; i++)
            if ((const char *)s->u.gen.args[i] >= lo &&
                (const char *)s->u.gen.args[i] < lo + bytes)
                return true;
        break;
    }
    for (int i = 0; i < n; i++)
        if (w[i] && (const char *)w[i] >= lo && (const char *)w[i] < lo + bytes)
            return true;
    return false;
}

/* Attaches p to a data-parallel dp (cuda_dp_impl.h): per output, where its final value is,
 * the mirror copy it commits to, and the last step that writes it. */
static bool dp_attach(cu_plan *p, dtl_cuda_dp *dp, dtl_err *err)
{
    const dtl_graph *g = p->g;
    uint32_t no = g->nouts;
    void **src = dtl_arena_array(&p->arena, no + 1, sizeof *src);
    void **commit = dtl_arena_array(&p->arena, no + 1, sizeof *commit);
    uint32_t *ready = dtl_arena_array(&p->arena, no + 1, sizeof *ready);
    for (uint32_t k = 0; k < no; k++) {
        const dtl_output *o = &g->outs[k];
        const dtl_node *v = N(p, o->val);
        size_t bytes = (size_t)dtl_node_numel(v) * dtl_dtype_size(v->dtype);
        src[k] = (void *)p->outsrc[k];
        commit[k] = o->kind == DTL_OUT_PARAM || o->kind == DTL_OUT_STATE ? p->ptr[o->target]
                                                                         : NULL;
        ready[k] = p->nsteps ? p->nsteps - 1 : 0;
        for (uint32_t i = p->nsteps; bytes && i-- > 0;)
            if (step_writes(&p->steps[i], (const char *)p->outsrc[k], bytes)) {
                ready[k] = i;
                break;
            }
    }
    return dtl_cu_dp_attach(dp, g, src, commit, ready, p->nsteps, p->ptr, p->ctx->stream,
                            &p->dpp, err);
}

static bool env_off(const char *name)
{
    const char *s = getenv(name);
    return s && strcmp(s, "0") == 0;
}

static bool env_on(const char *name)
{
    const char *s = getenv(name);
    return s && *s && strcmp(s, "0") != 0;
}

/* ---- the fused path: a kernel program (compiler/passes/fuse.h) ---- */

static bool elementwise_member(dtl_op op)
{
    dtl_op_kind k = dtl_op_kind_of(op);
    return k == DTL_OPK_UNARY || k == DTL_OPK_BINARY || k == DTL_OPK_TERNARY ||
           op == DTL_OP_CAST || op == DTL_OP_BROADCAST || op == DTL_OP_IOTA;
}

/* Whether K's program reads v (a MATMUL's operands are the GEMM's, not the epilogue's). */
static bool read_in_kernel(const dtl_graph *g, const dtl_kernel *K, dtl_val v)
{
    if (K->kind == DTL_K_REDUCE && g->nodes[K->root].in[0] == v)
        return true;
    for (uint32_t j = 0; j < K->nmembers; j++) {
        const dtl_node *n = &g->nodes[K->members[j]];
        if (K->members[j] == K->root)
            continue;
        for (uint32_t i = 0; i < n->nin; i++)
            if (n->in[i] == v)
                return true;
    }
    return false;
}

/* Whether the interpreter kernels can run kernel K: few enough inputs, members and outputs,
 * every member's operand an input or an earlier member. */
static bool fused_kernel_ok(const dtl_kprog *kp, const dtl_kernel *K, int16_t *reg)
{
    const dtl_graph *g = kp->g;
    if (K->kind == DTL_K_SINGLE)
        return true;
    if (K->kind == DTL_K_ROW)   /* (generated code only) */
        return false;
    if (K->rank > DTL_CU_MAX_RANK)
        return false;
    int nins = K->kind == DTL_K_MATMUL, ncode = 0, nouts = 0;
    for (uint32_t j = 0; j < K->nins; j++)
        nins += read_in_kernel(g, K, K->ins[j]);
    if (nins > DTL_CU_FMAX_INS)
        return false;
    bool ok = true;
    for (uint32_t j = 0; j < K->nins; j++)
        reg[K->ins[j]] = 1;
    if (K->root != DTL_VAL_NONE)
        reg[K->root] = 1;
    for (uint32_t j = 0; j < K->nmembers && ok; j++) {
        dtl_val m = K->members[j];
        const dtl_node *n = &g->nodes[m];
        if (m == K->root)
            continue;
        ok = elementwise_member(n->op) && n->rank == K->rank && ++ncode <= DTL_CU_FMAX_CODE;
        for (uint32_t i = 0; i < n->nin && ok; i++)
            ok = reg[n->in[i]] != 0;
        reg[m] = 1;
    }
    if (ok && K->kind == DTL_K_REDUCE)
        ok = K->root != DTL_VAL_NONE && reg[g->nodes[K->root].in[0]] &&
             (g->nodes[K->root].op == DTL_OP_SUM || g->nodes[K->root].op == DTL_OP_REDUCE_MAX);
    for (uint32_t j = 0; j < K->nouts; j++)
        if (K->outs[j] != K->root)
            nouts++;
    for (uint32_t j = 0; j < K->nins; j++)
        reg[K->ins[j]] = 0;
    for (uint32_t j = 0; j < K->nmembers; j++)
        reg[K->members[j]] = 0;
    if (K->root != DTL_VAL_NONE)
        reg[K->root] = 0;
    return ok && nouts <= DTL_CU_FMAX_OUTS;
}

/* Whether the backend can run kernel program kp: every kernel on the interpreter, or, with
 * gen_only, some only as generated code (codegen_plan then insists on it for those). */
static bool fused_ok(const dtl_kprog *kp, dtl_arena *A, bool gen_only)
{
    const dtl_graph *g = kp->g;
    int16_t *reg = dtl_arena_array(A, g->nnodes + 1, sizeof *reg);
    for (uint32_t v = 0; v < g->nnodes; v++)
        if (kp->loc[v].kind == DTL_LOC_CONST && g->nodes[v].op != DTL_OP_CONST &&
            g->nodes[v].op != DTL_OP_IOTA)
            return false;
    for (uint32_t i = 0; i < kp->nk; i++)
        if (!gen_only && !fused_kernel_ok(kp, &kp->k[i], reg))
            return false;
    return true;
}

static bool cu_fusable(const dtl_graph *g, char *why, size_t len)
{
    dtl_graph pg;
    dtl_err err;
    bool ok = dtl_passes_run(&pg, g, NULL, &err);
    if (!ok) {
        snprintf(why, len, "the passes failed: %s", err.msg);
        dtl_graph_free(&pg);
        return false;
    }
    dtl_fuse_opts fo = {.no_rows = true};   /* as cu_prepare */
    dtl_kprog *kp = dtl_fuse(&pg, &fo);
    dtl_arena A;
    dtl_arena_init(&A);
    ok = kp && fused_ok(kp, &A, false);
    if (kp) {
        uint32_t k[8] = {0};
        for (uint32_t i = 0; i < kp->nk; i++)
            k[kp->k[i].kind]++;
        snprintf(why, len, "%u kernels (%u elementwise, %u reduce, %u matmul, %u single)%s",
                 kp->nk, k[DTL_K_ELEMWISE], k[DTL_K_REDUCE], k[DTL_K_MATMUL], k[DTL_K_SINGLE],
                 ok ? "" : ": too big for the interpreter kernels");
    }
    dtl_arena_free(&A);
    dtl_kprog_free(kp);
    dtl_graph_free(&pg);
    return ok;
}

/* The interpreter program of an ELEMWISE, REDUCE or MATMUL (epilogue) kernel. */
static void build_fused(cu_plan *p, const dtl_kernel *K, int16_t *reg)
{
    const dtl_graph *g = p->g;
    cu_step *s = step_add(p, CU_FUSED, K->root != DTL_VAL_NONE ? K->root : K->members[0], NULL);
    dtl_cu_fprog *f = &s->u.fp;
    f->rank = (int)K->rank;
    memcpy(f->shape, K->shape, K->rank * sizeof *K->shape);
    f->n = ref_numel(K->rank, K->shape);
    f->red_op = -1;
    for (uint32_t j = 0; j < K->nins; j++) {
        const dtl_node *x = &g->nodes[K->ins[j]];
        if (!read_in_kernel(g, K, K->ins[j]))
            continue;   /* never loaded: it may be smaller than the loop (a GEMM operand) */
        f->in[f->nins] = p->ptr[K->ins[j]];
        f->in_dt[f->nins] = (uint8_t)cu_dt_of(x->dtype);
        ref_bcast_strides(x->rank, x->shape, K->rank, K->shape, f->st[f->nins]);
        reg[K->ins[j]] = (int16_t)f->nins++;
    }
    if (K->kind == DTL_K_MATMUL) {   /* the product, as computed by the GEMM before */
        const dtl_node *r = &g->nodes[K->root];
        f->in[f->nins] = p->ptr[K->root];
        f->in_dt[f->nins] = (uint8_t)cu_dt_of(r->dtype);
        ref_strides(r->rank, r->shape, f->st[f->nins]);
        reg[K->root] = (int16_t)f->nins++;
    }
    for (uint32_t j = 0; j < K->nmembers; j++) {
        dtl_val m = K->members[j];
        if (m == K->root)
            continue;
        const dtl_node *n = &g->nodes[m];
        dtl_cu_instr *I = &f->code[f->ncode];
        I->op = (int16_t)(n->op == DTL_OP_BROADCAST ? DTL_CU_COPY
                          : n->op == DTL_OP_IOTA    ? DTL_CU_IOTA
                                                    : cu_op_of(n->op));
        I->odt = (uint8_t)cu_dt_of(n->dtype);
        I->dt = n->nin ? (uint8_t)cu_dt_of(g->nodes[n->in[n->op == DTL_OP_WHERE ? 1 : 0]].dtype)
                       : I->odt;
        int16_t *src[3] = {&I->a, &I->b, &I->c};
        for (uint32_t i = 0; i < n->nin && i < 3; i++)
            *src[i] = reg[n->in[i]];
        if (n->op == DTL_OP_IOTA) {
            I->div = ref_numel(K->rank - n->attr.axis - 1, K->shape + n->attr.axis + 1);
            I->mod = K->shape[n->attr.axis];
        }
        reg[m] = (int16_t)(f->nins + f->ncode++);
    }
    for (uint32_t j = 0; j < K->nouts; j++) {
        dtl_val o = K->outs[j];
        if (o == K->root)
            continue;   /* REDUCE: red_out; MATMUL: written by the GEMM */
        f->out[f->nouts] = p->ptr[o];
        f->out_reg[f->nouts] = reg[o];
        f->out_dt[f->nouts++] = (uint8_t)cu_dt_of(g->nodes[o].dtype);
    }
    if (K->kind == DTL_K_REDUCE) {
        const dtl_node *r = &g->nodes[K->root];
        f->red_op = cu_op_of(r->op);
        f->red_reg = reg[r->in[0]];
        f->red_dt = cu_dt_of(r->dtype);
        f->red_out = p->ptr[K->root];
        f->nout = (int64_t)dtl_node_numel(r);
        int64_t st[DTL_MAX_RANK];
        ref_strides(K->rank, K->shape, st);
        f->rcount = 1;
        for (uint32_t i = 0; i < K->rank; i++) {
            bool red = (r->attr.red.axes >> i) & 1;
            if (red)
                f->rcount *= K->shape[i];
            if (K->shape[i] == 1)
                continue;
            int64_t *size = red ? f->rsize : f->ksize, *stride = red ? f->rstride : f->kstride;
            int *cnt = red ? &f->nr : &f->nk;
            size[*cnt] = K->shape[i];
            stride[(*cnt)++] = st[i];
        }
    }
    f->rank = collapse(f->rank, f->shape, f->nins, f->st);
    for (uint32_t j = 0; j < K->nins; j++)
        reg[K->ins[j]] = 0;
    for (uint32_t j = 0; j < K->nmembers; j++)
        reg[K->members[j]] = 0;
    if (K->root != DTL_VAL_NONE)
        reg[K->root] = 0;
    /* nothing to do: a MATMUL without an epilogue */
    if (K->kind == DTL_K_MATMUL && f->nouts == 0)
        p->nsteps--;
}

/* ---- the fused path's generated kernels (cuda_gen.h, compiled with NVRTC) ----
 *
 * prepare writes one module per plan: every ELEMWISE / REDUCE kernel and MATMUL epilogue the
 * generator handles, compiled with NVRTC to a cubin for the device's sm_XY and loaded with
 * cudaLibraryLoadData; each kernel is then one cudaLaunchKernel step. Modules are cached by
 * their source text (with the arch and NVRTC's version): in the process, and on disk under
 * $XDG_CACHE_HOME/dtl (else ~/.cache/dtl; DTL_CUDA_CACHE=0: not on disk). A kernel the
 * generator refuses, or a module NVRTC or the driver rejects, keeps the interpreter
 * (DTL_CUDA_VERBOSE says why; DTL_CUDA_CODEGEN=strict makes it an error, =0 turns
 * generation off). */

typedef enum cu_genmode { CU_GEN_OFF, CU_GEN_ON, CU_GEN_STRICT } cu_genmode;

static cu_genmode codegen_mode(void)
{
    const char *s = getenv("DTL_CUDA_CODEGEN");
    if (s && strcmp(s, "0") == 0)
        return CU_GEN_OFF;
    if (s && strcmp(s, "strict") == 0)
        return CU_GEN_STRICT;
    return CU_GEN_ON;
}

typedef struct cu_genk {
    cudaKernel_t fn;          /* NULL: the interpreter */
    dtl_cugen_info info;
} cu_genk;

#ifdef HAVE_NVRTC
typedef struct cu_genmod {
    uint64_t hash;
    char *src;
    cudaLibrary_t lib;
    struct cu_genmod *next;
} cu_genmod;

/* The process's loaded modules (never unloaded: nor is the plugin). Like the_ctx, the one
 * other piece of process state; guarded by its mutex. */
static struct {
    pthread_mutex_t lock;
    cu_genmod *head;
} the_gen_cache = {PTHREAD_MUTEX_INITIALIZER, NULL};

/* The disk cache's file for hash h, its directory made; false: no disk cache. */
static bool gen_cache_path(char *buf, size_t len, const char *arch, uint64_t h)
{
    const char *off = getenv("DTL_CUDA_CACHE"), *x = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (off && strcmp(off, "0") == 0)
        return false;
    int n;
    if (x && *x)
        n = snprintf(buf, len, "%s/dtl", x);
    else if (home && *home)
        n = snprintf(buf, len, "%s/.cache/dtl", home);
    else
        return false;
    if (n < 0 || (size_t)n + 64 > len)
        return false;
    for (char *c = buf + 1; *c; c++) {   /* mkdir -p */
        if (*c != '/')
            continue;
        *c = '\0';
        mkdir(buf, 0777);
        *c = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return false;
    snprintf(buf + n, len - (size_t)n, "/cuda-%s-%016" PRIx64 ".cubin", arch, h);
    return true;
}

static const char gen_magic[] = "dtl cubin 1\n";

/* The cubin cached for src at path (malloc'd), or NULL. File: magic, the source's length
 * (8 bytes), the source, the cubin. */
static void *gen_cache_read(const char *path, const char *src, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t sl = strlen(src), ml = sizeof gen_magic - 1;
    char *all = NULL;
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size > (long)(ml + 8 + sl) && fseek(f, 0, SEEK_SET) == 0 &&
        (all = malloc((size_t)size)) && fread(all, 1, (size_t)size, f) == (size_t)size) {
        uint64_t got;
        memcpy(&got, all + ml, 8);
        if (memcmp(all, gen_magic, ml) == 0 && got == sl && memcmp(all + ml + 8, src, sl) == 0) {
            *n = (size_t)size - ml - 8 - sl;
            memmove(all, all + ml + 8 + sl, *n);
            fclose(f);
            return all;
        }
    }
    free(all);
    fclose(f);
    return NULL;
}

static void gen_cache_write(const char *path, const char *src, const void *bin, size_t n)
{
    uint64_t sl = strlen(src);
    dtl_fs_piece pc[] = {{gen_magic, sizeof gen_magic - 1}, {&sl, 8}, {src, sl}, {bin, n}};
    dtl_err e;
    dtl_fs_write_atomic(path, pc, 4, &e);   /* a cache: a failed write is no error */
}

/* NVRTC: src to a cubin for arch (malloc'd), or NULL with the reason (the log's start). */
static void *gen_nvrtc(const char *src, const char *arch, size_t *n, char *why, size_t len)
{
    nvrtcProgram prog;
    nvrtcResult r = nvrtcCreateProgram(&prog, src, "dtl_gen.cu", 0, NULL, NULL);
    if (r != NVRTC_SUCCESS) {
        snprintf(why, len, "nvrtcCreateProgram: %s", nvrtcGetErrorString(r));
        return NULL;
    }
    char opt[64];
    snprintf(opt, sizeof opt, "--gpu-architecture=%s", arch);
    const char *opts[] = {opt, "--std=c++17"};
    void *bin = NULL;
    r = nvrtcCompileProgram(prog, 2, opts);
    if (r != NVRTC_SUCCESS) {
        size_t ln = 0;
        char *log = nvrtcGetProgramLogSize(prog, &ln) == NVRTC_SUCCESS ? malloc(ln + 1) : NULL;
        if (log && nvrtcGetProgramLog(prog, log) == NVRTC_SUCCESS)
            log[ln] = '\0';
        snprintf(why, len, "NVRTC (%s): %s: %.300s", arch, nvrtcGetErrorString(r),
                 log ? log : "");
        free(log);
    } else if ((r = nvrtcGetCUBINSize(prog, n)) != NVRTC_SUCCESS || *n == 0 ||
               !(bin = malloc(*n)) || (r = nvrtcGetCUBIN(prog, bin)) != NVRTC_SUCCESS) {
        snprintf(why, len, "nvrtcGetCUBIN (%s): %s", arch, nvrtcGetErrorString(r));
        free(bin);
        bin = NULL;
    }
    nvrtcDestroyProgram(&prog);
    return bin;
}

/* The loaded module of src: from the process's cache, the disk cache, or NVRTC. */
static bool gen_library(const char *src, int dev, cudaLibrary_t *lib, const char **how,
                        char *why, size_t len)
{
    int maj = 0, min = 0, vmaj = 0, vmin = 0;
    if (cudaDeviceGetAttribute(&maj, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&min, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
        snprintf(why, len, "the device's compute capability is unknown");
        return false;
    }
    nvrtcVersion(&vmaj, &vmin);
    char arch[32], ver[32];
    snprintf(arch, sizeof arch, "sm_%d%d", maj, min);
    snprintf(ver, sizeof ver, "nvrtc %d.%d", vmaj, vmin);
    uint64_t h = dtl_cugen_hash(DTL_CUGEN_FNV_INIT, src, strlen(src));
    h = dtl_cugen_hash(h, arch, strlen(arch));
    h = dtl_cugen_hash(h, ver, strlen(ver));
    pthread_mutex_lock(&the_gen_cache.lock);
    for (cu_genmod *m = the_gen_cache.head; m; m = m->next)
        if (m->hash == h && strcmp(m->src, src) == 0) {
            *lib = m->lib;
            pthread_mutex_unlock(&the_gen_cache.lock);
            *how = "loaded before";
            return true;
        }
    pthread_mutex_unlock(&the_gen_cache.lock);
    char path[700];
    bool disk = gen_cache_path(path, sizeof path, arch, h);
    size_t n = 0;
    void *bin = disk ? gen_cache_read(path, src, &n) : NULL;
    *how = "from the disk cache";
    if (!bin) {
        *how = "compiled with NVRTC";
        if (!(bin = gen_nvrtc(src, arch, &n, why, len)))
            return false;
        if (disk)
            gen_cache_write(path, src, bin, n);
    }
    cudaError_t e = cudaLibraryLoadData(lib, bin, NULL, NULL, 0, NULL, NULL, 0);
    free(bin);
    if (e != cudaSuccess) {
        snprintf(why, len, "cudaLibraryLoadData (%s): %s", arch, cudaGetErrorString(e));
        return false;
    }
    cu_genmod *m = malloc(sizeof *m);
    char *copy = strdup(src);
    if (m && copy) {
        m->hash = h;
        m->src = copy;
        m->lib = *lib;
        pthread_mutex_lock(&the_gen_cache.lock);
        m->next = the_gen_cache.head;
        the_gen_cache.head = m;
        pthread_mutex_unlock(&the_gen_cache.lock);
    } else {
        free(m);
        free(copy);
    }
    return true;
}
#endif

/* Whether every pointer kernel K touches is 16-byte aligned (vector loads). */
static bool kernel_aligned(const cu_plan *p, const dtl_kernel *K)
{
    uintptr_t bits = 0;
    for (uint32_t j = 0; j < K->nins; j++)
        bits |= (uintptr_t)p->ptr[K->ins[j]];
    for (uint32_t j = 0; j < K->nouts; j++)
        bits |= (uintptr_t)p->ptr[K->outs[j]];
    if (K->root != DTL_VAL_NONE)
        bits |= (uintptr_t)p->ptr[K->root];
    return (bits & 15) == 0;
}

/* Fills gk[i] for every kernel of the program that runs generated code; false only for
 * DTL_CUDA_CODEGEN=strict when something could not be generated or loaded. */
static bool codegen_plan(cu_plan *p, cu_genk *gk, dtl_err *err)
{
    cu_genmode mode = codegen_mode();
    bool verbose = env_on("DTL_CUDA_VERBOSE");
    const dtl_kprog *kp = p->kp;
    if (mode == CU_GEN_OFF)
        return true;
#ifndef HAVE_NVRTC
    (void)kp, (void)gk;
    if (verbose)
        fprintf(stderr, "dtl cuda: no generated kernels: this build has no NVRTC\n");
    if (mode == CU_GEN_STRICT)
        return dtl_err_set(err, DTL_ERR_USAGE, "cuda: DTL_CUDA_CODEGEN=strict: this build "
                           "has no NVRTC");
    return true;
#else
    char why[512];
    dtl_cugen_buf b;
    dtl_cugen_buf_init(&b);
    dtl_cugen_printf(&b, "%s", dtl_cugen_preamble());
    uint32_t ngen = 0, nref = 0;
    bool ok = true;
    for (uint32_t i = 0; i < kp->nk && ok; i++) {
        const dtl_kernel *K = &kp->k[i];
        if (K->kind == DTL_K_SINGLE || (p->ltk && p->ltk[i].ok))
            continue;
        char name[32];
        snprintf(name, sizeof name, "dtl_k%u", i);
        dtl_cugen_opts o = {name, kernel_aligned(p, K)};
        switch (dtl_cugen_kernel(&b, kp, i, &o, &gk[i].info, why, sizeof why)) {
        case DTL_CUGEN_OK: gk[i].fn = (cudaKernel_t)(uintptr_t)1; ngen++; break;   /* (below) */
        case DTL_CUGEN_EMPTY: break;
        case DTL_CUGEN_UNSUPPORTED:
            nref++;
            if (verbose)
                fprintf(stderr, "dtl cuda: kernel %u keeps the interpreter: %s\n", i, why);
            if (mode == CU_GEN_STRICT)
                ok = dtl_err_set(err, DTL_ERR_USAGE, "cuda: DTL_CUDA_CODEGEN=strict: kernel "
                                 "%u: %s", i, why);
            break;
        }
    }
    cudaLibrary_t lib = NULL;
    const char *how = "";
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (ok && ngen && !gen_library(b.s, p->ctx->device, &lib, &how, why, sizeof why)) {
        if (verbose)
            fprintf(stderr, "dtl cuda: generated kernels fall back to the interpreter: %s\n",
                    why);
        if (mode == CU_GEN_STRICT)
            ok = dtl_err_set(err, DTL_ERR_USAGE, "cuda: DTL_CUDA_CODEGEN=strict: %s", why);
        lib = NULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    for (uint32_t i = 0; i < kp->nk; i++) {
        if (!gk[i].fn)
            continue;
        char name[32];
        snprintf(name, sizeof name, "dtl_k%u", i);
        cudaError_t e = lib ? cudaLibraryGetKernel(&gk[i].fn, lib, name) : cudaErrorInvalidValue;
        if (!lib || e != cudaSuccess) {
            gk[i].fn = NULL;
            ngen--;
            if (lib && ok && mode == CU_GEN_STRICT)
                ok = dtl_err_set(err, DTL_ERR_USAGE, "cuda: cudaLibraryGetKernel %s: %s",
                                 name, cudaGetErrorString(e));
        }
    }
    int16_t *reg = p->gen_only ? dtl_arena_array(&p->arena, kp->g->nnodes + 1, sizeof *reg)
                               : NULL;
    for (uint32_t i = 0; i < kp->nk && ok && reg; i++)
        if (!gk[i].fn && kp->k[i].kind != DTL_K_SINGLE && !(p->ltk && p->ltk[i].ok) &&
            !fused_kernel_ok(kp, &kp->k[i], reg)) {   /* (one only generated code runs) */
            if (verbose)
                fprintf(stderr, "dtl cuda: kernel %u has no generated code and the "
                        "interpreter cannot run it: the plan is prepared again without such "
                        "kernels\n", i);
            p->gen_retry = true;
            ok = dtl_err_set(err, DTL_ERR_USAGE, "cuda: kernel %u has no generated code", i);
        }
    p->ngen = ngen;
    if (verbose && ngen)
        fprintf(stderr, "dtl cuda: %u generated kernels (%u on the interpreter), %zu bytes of "
                "CUDA C, %s in %.0f ms\n", ngen, nref, b.len, how,
                1e3 * (double)(t1.tv_sec - t0.tv_sec) + 1e-6 * (double)(t1.tv_nsec - t0.tv_nsec));
    dtl_cugen_buf_free(&b);
    return ok;
#endif
}

/* A generated kernel's launch: its pointers fixed. */
static void build_gen(cu_plan *p, const dtl_kernel *K, const cu_genk *gk)
{
    const dtl_cugen_info *I = &gk->info;
    cu_step *s = step_add(p, CU_GEN, K->root != DTL_VAL_NONE ? K->root : K->members[0], NULL);
    s->u.gen.fn = gk->fn;
    s->u.gen.grid = I->grid;
    s->u.gen.block = I->block;
    s->u.gen.nargs = I->nargs;
    s->u.gen.nload = I->nargs;
    for (uint32_t i = 0; i < I->nargs; i++) {
        s->u.gen.args[i] = p->ptr[I->args[i]];
        bool stored = K->kind == DTL_K_REDUCE && I->args[i] == K->root;
        for (uint32_t j = 0; j < K->nouts && !stored; j++)
            stored = K->outs[j] == I->args[i] && K->outs[j] != K->root;
        if (stored && s->u.gen.nload == I->nargs)
            s->u.gen.nload = i;
    }
}

/* ---- matrix products with their bias (+ ReLU) epilogue in one cublasLtMatmul ----
 *
 * A MATMUL kernel of f32 (no TF32 rounding, no batch dims) whose epilogue is exactly
 * `product + bias` or `relu(product + bias)` — bias an [n] or [1, n] f32 value, only the
 * last member stored — is one cublasLtMatmul with the BIAS or RELU_BIAS epilogue
 * (CUBLAS_COMPUTE_32F: plain FP32, as the cuBLAS path). Any other kernel, or any Lt call
 * failing at prepare, keeps cuBLAS + the epilogue kernel (DTL_CUDA_LT=0: always). */

#ifdef HAVE_CUBLASLT
static void lt_free(cu_ltk *l)
{
    if (l->op)
        cublasLtMatmulDescDestroy(l->op);
    if (l->la)
        cublasLtMatrixLayoutDestroy(l->la);
    if (l->lb)
        cublasLtMatrixLayoutDestroy(l->lb);
    if (l->ld)
        cublasLtMatrixLayoutDestroy(l->ld);
    memset(l, 0, sizeof *l);
}

/* Whether K is product + bias (+ relu), only the last stored: its bias, relu, last. */
static bool lt_pattern(const cu_plan *p, const dtl_kernel *K, dtl_val *bias, bool *relu,
                       dtl_val *last)
{
    const dtl_graph *g = p->g;
    const dtl_node *r = &g->nodes[K->root];
    if (K->rank != 2 || r->dtype != DTL_DTYPE_F32 || r->attr.tf32 ||
        g->nodes[K->matmul_a].dtype != DTL_DTYPE_F32 ||
        g->nodes[K->matmul_b].dtype != DTL_DTYPE_F32)
        return false;
    dtl_val add = DTL_VAL_NONE, bc = DTL_VAL_NONE, rl = DTL_VAL_NONE;
    for (uint32_t j = 0; j < K->nmembers; j++) {
        dtl_val m = K->members[j];
        const dtl_node *n = &g->nodes[m];
        if (m == K->root)
            continue;
        if (n->op == DTL_OP_BROADCAST && bc == DTL_VAL_NONE && add == DTL_VAL_NONE)
            bc = m;
        else if (n->op == DTL_OP_ADD && add == DTL_VAL_NONE)
            add = m;
        else if (n->op == DTL_OP_RELU && add != DTL_VAL_NONE && rl == DTL_VAL_NONE &&
                 n->in[0] == add)
            rl = m;
        else
            return false;
    }
    if (add == DTL_VAL_NONE)
        return false;
    const dtl_node *an = &g->nodes[add];
    dtl_val other = an->in[0] == K->root ? an->in[1] : an->in[1] == K->root ? an->in[0]
                                                                              : DTL_VAL_NONE;
    if (other == DTL_VAL_NONE || other == K->root)
        return false;
    if (bc != DTL_VAL_NONE && other != bc)
        return false;
    dtl_val b = bc != DTL_VAL_NONE ? g->nodes[bc].in[0] : other;
    const dtl_node *bn = &g->nodes[b];
    if (p->kp->kernel_of[b] == (uint32_t)(K - p->kp->k) || bn->dtype != DTL_DTYPE_F32 ||
        !(bn->rank == 1 || (bn->rank == 2 && bn->shape[0] == 1)) ||
        bn->shape[bn->rank - 1] != K->shape[1])
        return false;
    *last = rl != DTL_VAL_NONE ? rl : add;
    uint32_t nout = 0;
    for (uint32_t j = 0; j < K->nouts; j++) {
        if (K->outs[j] != *last)
            return false;
        nout++;
    }
    *bias = b;
    *relu = rl != DTL_VAL_NONE;
    return nout == 1;
}

/* Prepares l for kernel K when it fits; false (why set, or empty: not the pattern). */
static bool lt_prepare(cu_plan *p, const dtl_kernel *K, cu_ltk *l, char *why, size_t len)
{
    dtl_val bias, last;
    bool relu;
    why[0] = '\0';
    if (!lt_pattern(p, K, &bias, &relu, &last))
        return false;
    const dtl_graph *g = p->g;
    const dtl_node *a = &g->nodes[K->matmul_a];
    int64_t m = K->shape[0], n = K->shape[1];
    int64_t k = K->trans_a ? a->shape[a->rank - 2] : a->shape[a->rank - 1];
    if (m == 0 || n == 0 || k == 0 || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
        return false;
    pthread_once(&the_lt.once, lt_init);
    if (the_lt.st != CUBLAS_STATUS_SUCCESS) {
        snprintf(why, len, "cublasLtCreate: %s", cublasGetStatusString(the_lt.st));
        return false;
    }
    const void *bp = p->ptr[bias];
    l->a = p->ptr[K->matmul_a];
    l->b = p->ptr[K->matmul_b];
    l->d = p->ptr[last];
    if (((uintptr_t)bp | (uintptr_t)l->a | (uintptr_t)l->b | (uintptr_t)l->d) & 15) {
        snprintf(why, len, "an operand is not 16-byte aligned");
        return false;
    }
    /* row-major D[m, n] = A B as column-major D^T = B^T A^T (as build_gemm) */
    cublasOperation_t opa = K->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opb = K->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtEpilogue_t epi = relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    uint64_t lda = (uint64_t)(K->trans_a ? m : k), ldb = (uint64_t)(K->trans_b ? k : n);
    size_t ws = CU_WORKSPACE;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    const char *call = "cublasLtMatmulDescCreate";
    cublasStatus_t st = cublasLtMatmulDescCreate(&l->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_TRANSA, &opb,
                                            sizeof opb);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_TRANSB, &opa,
                                            sizeof opa);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                            sizeof epi);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp,
                                            sizeof bp);
    if (st == CUBLAS_STATUS_SUCCESS && (call = "cublasLtMatrixLayoutCreate"))
        st = cublasLtMatrixLayoutCreate(&l->la, CUDA_R_32F, (uint64_t)(K->trans_b ? k : n),
                                        (uint64_t)(K->trans_b ? n : k), (int64_t)ldb);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&l->lb, CUDA_R_32F, (uint64_t)(K->trans_a ? m : k),
                                        (uint64_t)(K->trans_a ? k : m), (int64_t)lda);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&l->ld, CUDA_R_32F, (uint64_t)n, (uint64_t)m,
                                        (int64_t)n);
    if (st == CUBLAS_STATUS_SUCCESS && (call = "cublasLtMatmulPreferenceCreate"))
        st = cublasLtMatmulPreferenceCreate(&pref);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws, sizeof ws);
    if (st == CUBLAS_STATUS_SUCCESS && (call = "cublasLtMatmulAlgoGetHeuristic"))
        st = cublasLtMatmulAlgoGetHeuristic(the_lt.h, l->op, l->la, l->lb, l->ld, l->ld, pref,
                                            1, &res, &nres);
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || nres < 1) {
        snprintf(why, len, "%s: %s", call,
                 st != CUBLAS_STATUS_SUCCESS ? cublasGetStatusString(st) : "no algorithm");
        lt_free(l);
        return false;
    }
    l->algo = res.algo;
    l->ok = true;
    return true;
}
#endif

/* Lt steps for every kernel that fits (ltk[i].ok); a failure keeps cuBLAS, never an error. */
static void lt_plan(cu_plan *p, cu_ltk *ltk)
{
#ifdef HAVE_CUBLASLT
    if (env_off("DTL_CUDA_LT"))
        return;
    char why[300];
    for (uint32_t i = 0; i < p->kp->nk; i++) {
        if (p->kp->k[i].kind != DTL_K_MATMUL)
            continue;
        if (lt_prepare(p, &p->kp->k[i], &ltk[i], why, sizeof why))
            p->nlt++;
        else if (why[0] && env_on("DTL_CUDA_VERBOSE"))
            fprintf(stderr, "dtl cuda: kernel %u: cuBLAS + epilogue (not cuBLASLt): %s\n", i,
                    why);
    }
#else
    (void)p, (void)ltk;
#endif
}

/* Memory and steps from the kernel program: [inputs | constants | arena | matmul scratch |
 * staging | status]; the kprog's offsets are kept. */
static bool prepare_fused(cu_plan *p, dtl_err *err)
{
    const dtl_graph *g = p->g;
    const dtl_kprog *kp = p->kp;
    dtl_arena *A = &p->arena;
    dtl_cu_layout *L = &p->L;
    uint32_t nn = g->nnodes, no = g->nouts;
    memset(L, 0, sizeof *L);
    L->nnodes = nn;
    L->nouts = no;
    L->off = dtl_arena_array(A, nn + 1, sizeof *L->off);
    L->status = dtl_arena_array(A, nn + 1, sizeof *L->status);
    L->stage_off = dtl_arena_array(A, no + 1, sizeof *L->stage_off);
    uint64_t at = 0, scratch = 0;
    for (uint32_t v = 0; v < nn; v++) {
        const dtl_node *n = &g->nodes[v];
        L->status[v] = UINT32_MAX;
        if (n->op == DTL_OP_INPUT) {
            L->off[v] = at;
            at += (dtl_node_numel(n) * dtl_dtype_size(n->dtype) + DTL_CU_ALIGN - 1) /
                  DTL_CU_ALIGN * DTL_CU_ALIGN;
        }
        if ((n->op == DTL_OP_GATHER || n->op == DTL_OP_SCATTER_ADD) &&
            kp->kernel_of[v] != UINT32_MAX)
            L->status[v] = L->nstatus++;
    }
    for (uint32_t i = 0; i < kp->nk; i++) {
        const dtl_kernel *K = &kp->k[i];
        if ((K->kind == DTL_K_MATMUL || K->kind == DTL_K_REDUCE) &&
            kp->loc[K->root].kind == DTL_LOC_NONE) {
            const dtl_node *r = &g->nodes[K->root];
            uint64_t b = dtl_node_numel(r) * dtl_dtype_size(r->dtype);
            if (b > scratch)
                scratch = b;
        }
    }
    scratch = (scratch + DTL_CU_ALIGN - 1) / DTL_CU_ALIGN * DTL_CU_ALIGN;
    L->input_bytes = at;
    L->const_base = at;
    L->const_bytes = kp->const_bytes;
    L->arena_base = (L->const_base + kp->const_bytes + DTL_CU_ALIGN - 1) / DTL_CU_ALIGN *
                    DTL_CU_ALIGN;
    L->arena_bytes = kp->arena_bytes;
    uint64_t scratch_base = (L->arena_base + kp->arena_bytes + DTL_CU_ALIGN - 1) /
                            DTL_CU_ALIGN * DTL_CU_ALIGN;
    uint64_t stage = scratch_base + scratch;
    /* Outputs whose value is a leaf: staged before the first kernel (a leaf updated in
     * place later in the step still reads as its old value). */
    for (uint32_t k = 0; k < no; k++) {
        dtl_val r = g->outs[k].val;
        if (kp->loc[r].kind == DTL_LOC_ALIAS)
            r = kp->loc[r].of;
        dtl_op op = g->nodes[r].op;
        L->stage_off[k] = UINT64_MAX;
        if (op == DTL_OP_INPUT || op == DTL_OP_PARAM || op == DTL_OP_STATE) {
            const dtl_node *o = &g->nodes[g->outs[k].val];
            L->stage_off[k] = stage;
            stage += (dtl_node_numel(o) * dtl_dtype_size(o->dtype) + DTL_CU_ALIGN - 1) /
                     DTL_CU_ALIGN * DTL_CU_ALIGN;
        }
    }
    L->status_base = stage;
    L->total = stage + (uint64_t)L->nstatus * 16;
    p->stats.arena_bytes = kp->arena_bytes;
    p->stats.naive_bytes = kp->naive_bytes;
    p->stats.const_bytes = kp->const_bytes;

    cudaError_t e = cudaMalloc((void **)&p->dev, L->total ? L->total : 1);
    if (e != cudaSuccess)
        return dtl_err_set(err, DTL_ERR_NOMEM, "cuda: %" PRIu64 " bytes of device memory for "
                           "the plan: %s", L->total, cudaGetErrorString(e));
    CU_TRY(cudaMemset(p->dev, env_on("DTL_CUDA_POISON") ? 0xff : 0, L->total ? L->total : 1),
           "clearing the plan's memory");

    p->ptr = dtl_arena_array(A, nn + 1, sizeof *p->ptr);
    p->inputs = dtl_arena_array(A, nn + 1, sizeof *p->inputs);
    for (uint32_t v = 0; v < nn; v++) {
        const dtl_node *n = &g->nodes[v];
        dtl_loc lc = kp->loc[v];
        if (n->op == DTL_OP_INPUT) {
            p->ptr[v] = p->dev + L->off[v];
            p->inputs[p->ninputs++] = v;
            continue;
        }
        switch (lc.kind) {
        case DTL_LOC_STORE: {
            const char *name = n->op == DTL_OP_PARAM || n->op == DTL_OP_STATE
                                   ? n->name : g->nodes[lc.of].name;
            p->ptr[v] = mirror_find(p->mirror, st_find(p->store, name))->dev;
            break;
        }
        case DTL_LOC_CONST: p->ptr[v] = p->dev + L->const_base + lc.offset; break;
        case DTL_LOC_ARENA: p->ptr[v] = p->dev + L->arena_base + lc.offset; break;
        case DTL_LOC_ALIAS: p->ptr[v] = p->ptr[lc.of]; break;
        default: p->ptr[v] = NULL; break;
        }
    }
    for (uint32_t i = 0; i < kp->nk; i++) {   /* roots nobody stores: the scratch */
        const dtl_kernel *K = &kp->k[i];
        if ((K->kind == DTL_K_MATMUL || K->kind == DTL_K_REDUCE) && !p->ptr[K->root])
            p->ptr[K->root] = p->dev + scratch_base;
    }
    if (kp->const_bytes) {
        char *host = calloc(1, kp->const_bytes);
        if (!host)
            return dtl_err_set(err, DTL_ERR_NOMEM, "cuda: out of memory");
        for (uint32_t v = 0; v < nn; v++)
            if (kp->loc[v].kind == DTL_LOC_CONST &&
                !dtl_ref_kernel(&g->nodes[v], NULL, host + kp->loc[v].offset,
                                st_seed(p->store), err)) {
                free(host);
                return false;
            }
        e = cudaMemcpy(p->dev + L->const_base, host, kp->const_bytes, cudaMemcpyHostToDevice);
        free(host);
        CU_TRY(e, "uploading the constants");
    }

    /* The steps: staging, index-check reset, the kernels, commits. */
    p->outsrc = dtl_arena_array(A, no + 1, sizeof *p->outsrc);
    p->outhost = dtl_arena_array(A, no + 1, sizeof *p->outhost);
    p->outfresh = dtl_arena_array(A, no + 1, sizeof *p->outfresh);
    for (uint32_t k = 0; k < no; k++) {
        const dtl_node *o = &g->nodes[g->outs[k].val];
        p->outsrc[k] = p->ptr[g->outs[k].val];
        if (L->stage_off[k] != UINT64_MAX) {
            build_memcpy(p, UINT32_MAX, "staging an output", p->dev + L->stage_off[k],
                         p->outsrc[k], (size_t)dtl_node_numel(o) * dtl_dtype_size(o->dtype));
            p->outsrc[k] = p->dev + L->stage_off[k];
        }
    }
    if (L->nstatus) {
        cu_step *st = step_add(p, CU_MEMSET, UINT32_MAX, "resetting the index checks");
        st->u.ms.dst = p->dev + L->status_base;
        st->u.ms.val = 0xff;
        st->u.ms.bytes = (size_t)L->nstatus * 16;
        CU_TRY(cudaHostAlloc((void **)&p->status_host, (size_t)L->nstatus * 16,
                             cudaHostAllocDefault), "pinned memory for the index checks");
    }
    /* the status words' pointers of build_node: p->L.status_base and status[] */
    int16_t *reg = dtl_arena_array(A, nn + 1, sizeof *reg);
    cu_genk *gk = dtl_arena_array(A, kp->nk + 1, sizeof *gk);   /* zeroed: no generated code */
    p->ltk = dtl_arena_array(A, kp->nk + 1, sizeof *p->ltk);
    lt_plan(p, p->ltk);
    if (!codegen_plan(p, gk, err))
        return false;
    for (uint32_t i = 0; i < kp->nk; i++) {
        const dtl_kernel *K = &kp->k[i];
        switch (K->kind) {
        case DTL_K_SINGLE: build_node(p, K->root); break;
        case DTL_K_MATMUL:
            if (p->ltk[i].ok) {
                cu_step *s = step_add(p, CU_LT, K->root, NULL);
                s->u.lt.k = i;
#ifdef HAVE_CUBLASLT
                s->u.lt.d = p->ltk[i].d;
#endif
                break;
            }
            build_gemm(p, K->root, K->matmul_a, K->trans_a, K->matmul_b, K->trans_b,
                       p->ptr[K->root]);
            if (gk[i].fn)
                build_gen(p, K, &gk[i]);
            else
                build_fused(p, K, reg);
            break;
        default:
            if (gk[i].fn)
                build_gen(p, K, &gk[i]);
            else
                build_fused(p, K, reg);
            break;
        }
    }
    for (uint32_t k = 0; k < no; k++) {
        const dtl_output *o = &g->outs[k];
        const dtl_node *vn = &g->nodes[o->val];
        size_t bytes = (size_t)dtl_node_numel(vn) * dtl_dtype_size(vn->dtype);
        if (o->kind == DTL_OUT_PARAM || o->kind == DTL_OUT_STATE) {
            build_memcpy(p, UINT32_MAX, "committing an update", p->ptr[o->target],
                         p->outsrc[k], bytes);   /* nothing when updated in place */
        } else if (!dtl_cu_adam_internal(o->name)) {   /* (those are never read back) */
            CU_TRY(cudaHostAlloc(&p->outhost[k], bytes ? bytes : 1, cudaHostAllocDefault),
                   "pinned memory for an output");
        }
    }
    return true;
}

/* ---- the multi-tensor Adam update (cuda_adam.h, adam_at.h) ---- */

/* When p->pg's outputs hold Adam/AdamW updates of f32 params, replaces p->pg by the graph
 * without them (its outputs keep the gradients and scalars alive instead): prepare_adam
 * then adds the one launch that updates them all. Nothing changes when none is found. */
static void adam_rewrite(cu_plan *p)
{
    dtl_arena A;
    dtl_arena_init(&A);
    dtl_cu_adam_match *mt;
    uint32_t n = dtl_cu_adam_find(&p->pg, &mt, &A);
    if (n) {
        dtl_graph tmp = p->pg;   /* the same nodes, other outputs; only read */
        tmp.outs = dtl_cu_adam_outputs(&p->pg, mt, n, &tmp.nouts, &p->arena);
        tmp.capouts = tmp.nouts;
        dtl_graph ng;
        dtl_err e;
        if (dtl_passes_run(&ng, &tmp, NULL, &e)) {
            p->adam_names = dtl_arena_array(&p->arena, 3 * n, sizeof *p->adam_names);
            for (uint32_t i = 0; i < n; i++) {
                p->adam_names[3 * i] = dtl_arena_strdup(&p->arena, p->pg.nodes[mt[i].param].name);
                p->adam_names[3 * i + 1] = dtl_arena_strdup(&p->arena, p->pg.nodes[mt[i].m].name);
                p->adam_names[3 * i + 2] = dtl_arena_strdup(&p->arena, p->pg.nodes[mt[i].v].name);
            }
            p->nadam = n;
            dtl_graph_free(&p->pg);
            p->pg = ng;
        } else {
            dtl_graph_free(&ng);
        }
    }
    dtl_arena_free(&A);
}

/* The passes and fusion of g into p->pg and p->kp (with the one Adam launch when adam; with
 * ROW kernels and kernels beyond the interpreter's limits when p->gen_only: codegen_plan
 * sees to them); p->kp stays NULL when the kernel program does not fit the backend. */
static void fuse_plan(cu_plan *p, const dtl_graph *g, const dtl_plan_opts *opts, bool adam)
{
    dtl_err perr;
    if (!dtl_passes_run(&p->pg, g, NULL, &perr))
        return;
    if (adam)
        adam_rewrite(p);
    dtl_fuse_opts fo = {.no_reuse = opts && opts->no_reuse, .no_rows = !p->gen_only};
    p->kp = dtl_fuse(&p->pg, &fo);
    if (p->kp && fused_ok(p->kp, &p->arena, p->gen_only)) {
        p->g = &p->pg;
    } else {
        dtl_kprog_free(p->kp);
        p->kp = NULL;
    }
}

static void *adam_ptr(cu_plan *p, const char *name)
{
    int64_t k = -1;
    for (uint32_t j = 0; j < p->g->nouts && k < 0; j++)
        if (strcmp(p->g->outs[j].name, name) == 0)
            k = j;
    return k < 0 ? NULL : p->ptr[p->g->outs[k].val];
}

/* The launch after the last kernel: the table on the device, the scalars' pointers. */
static bool prepare_adam(cu_plan *p, dtl_err *err)
{
    if (!p->nadam)
        return true;
    dtl_cu_adam_t *t = dtl_arena_array(&p->arena, p->nadam, sizeof *t);
    for (uint32_t i = 0; i < p->nadam; i++) {
        char name[32];
        snprintf(name, sizeof name, "__adam.g.%u", i);
        cu_ment *me[3];
        for (int j = 0; j < 3; j++) {
            dtl_store_entry *e = st_find(p->store, p->adam_names[3 * i + j]);
            me[j] = e ? mirror_find(p->mirror, e) : NULL;
            if (!me[j])
                return dtl_err_set(err, DTL_ERR_INTERNAL, "cuda: the Adam update of %s: no "
                                   "device copy of %s", p->adam_names[3 * i],
                                   p->adam_names[3 * i + j]);
        }
        t[i].p = me[0]->dev;
        t[i].m = me[1]->dev;
        t[i].v = me[2]->dev;
        t[i].g = adam_ptr(p, name);
        t[i].n = (int64_t)(me[0]->bytes / sizeof(float));
        if (!t[i].g)
            return dtl_err_set(err, DTL_ERR_INTERNAL, "cuda: the Adam update of %s: no "
                               "gradient", p->adam_names[3 * i]);
    }
    const float **sp[DTL_CU_ADAM_NSCALARS];
    cu_step *s = step_add(p, CU_ADAM, UINT32_MAX, "the multi-tensor Adam update");
    dtl_cu_adam_s *sc = &s->u.adam.s;
    sp[0] = &sc->b1, sp[1] = &sc->c1, sp[2] = &sc->b2, sp[3] = &sc->c2, sp[4] = &sc->bc2s;
    sp[5] = &sc->eps, sp[6] = &sc->ss, sp[7] = &sc->decay;
    for (int j = 0; j < DTL_CU_ADAM_NSCALARS; j++) {
        char name[32];
        snprintf(name, sizeof name, "__adam.s.%s", dtl_cu_adam_scalar_names[j]);
        *sp[j] = adam_ptr(p, name);
        if (!*sp[j] && j != 7)
            return dtl_err_set(err, DTL_ERR_INTERNAL, "cuda: the Adam update: no %s", name);
    }
    s->u.adam.n = (int)p->nadam;
    s->u.adam.nblocks = dtl_cu_adam_blocks(t, (int)p->nadam);
    CU_TRY(cudaMalloc((void **)&p->adam_dev, p->nadam * sizeof *t), "the Adam table");
    CU_TRY(cudaMemcpy(p->adam_dev, t, p->nadam * sizeof *t, cudaMemcpyHostToDevice),
           "the Adam table");
    s->u.adam.table = p->adam_dev;
    return true;
}

/* An output the Adam update replaced (a PARAM or STATE output of the caller's graph that
 * the run graph lacks): read from the mirror. Returns false when name is not one. */
static bool adam_output(cu_plan *p, const char *name, dtl_tensor *out, bool *ok, dtl_err *err)
{
    if (!p->nadam || p->og == p->g)
        return false;
    for (uint32_t j = 0; j < p->g->nouts; j++)
        if (strcmp(p->g->outs[j].name, name) == 0)
            return false;
    int64_t k = -1;
    for (uint32_t j = 0; j < p->og->nouts && k < 0; j++)
        if (strcmp(p->og->outs[j].name, name) == 0)
            k = j;
    if (k < 0)
        return false;
    const dtl_output *o = &p->og->outs[k];
    dtl_store_entry *e = st_find(p->store, p->og->nodes[o->target].name);
    cu_ment *me = e ? mirror_find(p->mirror, e) : NULL;
    *ok = false;
    if (!me) {
        dtl_err_set(err, DTL_ERR_INTERNAL, "cuda: output %s: no device copy", name);
        return true;
    }
    if (me->bytes) {
        cudaError_t ce = cudaMemcpyAsync(e->t.data, me->dev, me->bytes, cudaMemcpyDeviceToHost,
                                         p->ctx->stream);
        if (ce == cudaSuccess)
            ce = cudaStreamSynchronize(p->ctx->stream);
        if (ce != cudaSuccess) {
            dtl_err_set(err, DTL_ERR_INTERNAL, "cuda: reading an update: %s",
                        cudaGetErrorString(ce));
            return true;
        }
    }
    dtl_output_view(p->og, (uint32_t)k, e->t.data, out);
    *ok = true;
    return true;
}

/* ---- prepare ---- */

static void cu_free(void *vp)
{
    cu_plan *p = vp;
    if (!p)
        return;
    if (p->ctx)
        cudaStreamSynchronize(p->ctx->stream);
    if (p->adam_dev)
        cudaFree(p->adam_dev);
#ifdef HAVE_CUBLASLT
    for (uint32_t i = 0; p->ltk && i < p->kp->nk; i++)
        if (p->ltk[i].ok)
            lt_free(&p->ltk[i]);
#endif
    if (p->exec)
        cudaGraphExecDestroy(p->exec);
    if (p->graph)
        cudaGraphDestroy(p->graph);
    dtl_cu_dp_plan_free(p->dpp);   /* (after the graphs: ncclCommDestroy waits for them) */
    for (int i = 0; i < 2; i++) {
        if (p->pinned[i])
            cudaFreeHost(p->pinned[i]);
        if (p->have_event[i])
            cudaEventDestroy(p->consumed[i]);
        if (p->have_copied[i])
            cudaEventDestroy(p->copied[i]);
    }
    if (p->have_copy) {
        cudaStreamSynchronize(p->copy);
        cudaStreamDestroy(p->copy);
    }
    if (p->devstage)
        cudaFree(p->devstage);
    if (p->outhost)
        for (uint32_t k = 0; k < p->g->nouts; k++)
            if (p->outhost[k])
                cudaFreeHost(p->outhost[k]);
    if (p->status_host)
        cudaFreeHost(p->status_host);
    if (p->dev)
        cudaFree(p->dev);
    dtl_kprog_free(p->kp);
    if (p->have_pg)
        dtl_graph_free(&p->pg);
    dtl_arena_free(&p->arena);
    free(p);
}

static bool prepare_device(cu_plan *p, const dtl_plan_opts *opts, dtl_err *err)
{
    const dtl_graph *g = p->g;
    dtl_arena *A = &p->arena;
    if (!dtl_cu_layout_plan(&p->L, g, !(opts && opts->no_reuse), A, err))
        return false;
    cudaError_t e = cudaMalloc((void **)&p->dev, p->L.total ? p->L.total : 1);
    if (e != cudaSuccess)
        return dtl_err_set(err, DTL_ERR_NOMEM, "cuda: %" PRIu64 " bytes of device memory for "
                           "the plan: %s", p->L.total, cudaGetErrorString(e));
    /* Poisoned (all bits set: NaN, -1, true) for tests that catch unwritten elements. */
    CU_TRY(cudaMemset(p->dev, env_on("DTL_CUDA_POISON") ? 0xff : 0,
                      p->L.total ? p->L.total : 1), "clearing the plan's memory");
    p->stats.arena_bytes = p->L.arena_bytes;
    p->stats.naive_bytes = p->L.naive_bytes;
    p->stats.const_bytes = p->L.const_bytes;

    uint32_t nn = g->nnodes;
    p->ptr = dtl_arena_array(A, nn + 1, sizeof *p->ptr);
    p->inputs = dtl_arena_array(A, nn + 1, sizeof *p->inputs);
    for (uint32_t v = 0; v < nn; v++) {
        const dtl_node *n = &g->nodes[v];
        switch ((dtl_cu_loc)p->L.loc[v]) {
        case DTL_CU_LOC_STORE:
            p->ptr[v] = mirror_find(p->mirror, st_find(p->store, n->name))->dev;
            break;
        case DTL_CU_LOC_ALIAS: p->ptr[v] = p->ptr[p->L.root[v]]; break;
        default: p->ptr[v] = p->dev + p->L.off[v]; break;
        }
        if (n->op == DTL_OP_INPUT)
            p->inputs[p->ninputs++] = v;
    }

    /* Constants: computed by the reference kernels on the host, uploaded once. */
    if (p->L.const_bytes) {
        char *host = malloc(p->L.const_bytes);
        if (!host)
            return dtl_err_set(err, DTL_ERR_NOMEM, "cuda: out of memory");
        for (uint32_t v = 0; v < nn; v++)
            if (p->L.loc[v] == DTL_CU_LOC_CONST &&
                !dtl_ref_kernel(&g->nodes[v], NULL, host + (p->L.off[v] - p->L.const_base),
                                st_seed(p->store), err)) {
                free(host);
                return false;
            }
        e = cudaMemcpy(p->dev + p->L.const_base, host, p->L.const_bytes,
                       cudaMemcpyHostToDevice);
        free(host);
        CU_TRY(e, "uploading the constants");
    }

    /* The steps: status words reset, every computed node, staging, commits. */
    if (p->L.nstatus) {
        cu_step *s = step_add(p, CU_MEMSET, UINT32_MAX, "resetting the index checks");
        s->u.ms.dst = p->dev + p->L.status_base;
        s->u.ms.val = 0xff;
        s->u.ms.bytes = (size_t)p->L.nstatus * 16;
        CU_TRY(cudaHostAlloc((void **)&p->status_host, (size_t)p->L.nstatus * 16,
                             cudaHostAllocDefault), "pinned memory for the index checks");
    }
    for (uint32_t v = 0; v < nn; v++)
        if (p->L.loc[v] == DTL_CU_LOC_ARENA)
            build_node(p, v);
    uint32_t no = g->nouts;
    p->outsrc = dtl_arena_array(A, no + 1, sizeof *p->outsrc);
    p->outhost = dtl_arena_array(A, no + 1, sizeof *p->outhost);
    p->outfresh = dtl_arena_array(A, no + 1, sizeof *p->outfresh);
    for (uint32_t k = 0; k < no; k++) {
        const dtl_node *o = &g->nodes[g->outs[k].val];
        size_t bytes = (size_t)dtl_node_numel(o) * dtl_dtype_size(o->dtype);
        p->outsrc[k] = p->ptr[g->outs[k].val];
        if (p->L.stage_off[k] != UINT64_MAX) {
            build_memcpy(p, UINT32_MAX, "staging an output", p->dev + p->L.stage_off[k],
                         p->outsrc[k], bytes);
            p->outsrc[k] = p->dev + p->L.stage_off[k];
        }
    }
    for (uint32_t k = 0; k < no; k++) {
        const dtl_output *o = &g->outs[k];
        const dtl_node *vn = &g->nodes[o->val];
        size_t bytes = (size_t)dtl_node_numel(vn) * dtl_dtype_size(vn->dtype);
        if (o->kind == DTL_OUT_PARAM || o->kind == DTL_OUT_STATE) {
            void *dst = p->ptr[o->target];
            build_memcpy(p, UINT32_MAX, "committing an update", dst, p->outsrc[k], bytes);
        } else {
            CU_TRY(cudaHostAlloc(&p->outhost[k], bytes ? bytes : 1, cudaHostAllocDefault),
                   "pinned memory for an output");
        }
    }

    return true;
}

/* What both paths need for running: pinned input staging (two buffers), events, knobs. */
static bool prepare_io(cu_plan *p, dtl_err *err)
{
    p->dma_src = dtl_arena_array(&p->arena, p->ninputs + 1, sizeof *p->dma_src);
    for (int i = 0; i < 2; i++) {
        if (p->L.input_bytes)
            CU_TRY(cudaHostAlloc(&p->pinned[i], p->L.input_bytes, cudaHostAllocDefault),
                   "pinned memory for the inputs");
        CU_TRY(cudaEventCreateWithFlags(&p->consumed[i], cudaEventDisableTiming),
               "cudaEventCreate");
        p->have_event[i] = true;
    }
    p->use_graph = !env_off("DTL_CUDA_GRAPH");
    p->sync_each = env_on("DTL_CUDA_SYNC");
    if (p->L.input_bytes && !env_off("DTL_CUDA_COPY_STREAM")) {   /* the second stream */
        CU_TRY(cudaStreamCreateWithFlags(&p->copy, cudaStreamNonBlocking),
               "the input copies' stream");
        p->have_copy = true;
        CU_TRY(cudaMalloc((void **)&p->devstage, 2 * p->L.input_bytes),
               "device memory for the input copies");
        for (int i = 0; i < 2; i++) {
            CU_TRY(cudaEventCreateWithFlags(&p->copied[i], cudaEventDisableTiming),
                   "cudaEventCreate");
            p->have_copied[i] = true;
        }
    }
    return true;
}

static cu_plan *cu_build(const dtl_graph *g, dtl_store *store, const dtl_plan_opts *opts,
                         cu_ctx *c, bool gen_only, bool *retry, dtl_err *err);

static void *cu_prepare(const dtl_graph *g, dtl_store *store, const dtl_plan_opts *opts,
                        dtl_err *err)
{
    char why[400] = "";
    FILE *f = fmemopen(why, sizeof why, "w");
    bool ok = dtl_graph_verify(g, f);
    if (f)
        fclose(f);
    if (!ok) {
        why[strcspn(why, "\n")] = '\0';
        dtl_err_set(err, DTL_ERR_USAGE, "cuda: the graph fails verification: %s", why);
        return NULL;
    }
    for (dtl_val v = 0; v < g->nnodes; v++) {   /* windowed ops: f32 and f64 kernels */
        dtl_cu_wop wop;
        dtl_cu_win win;
        if (dtl_op_kind_of(g->nodes[v].op) == DTL_OPK_WINDOW && !dtl_cu_win_of(g, v, &wop, &win)) {
            dtl_err_set(err, DTL_ERR_USAGE, "cuda: %%%u (%s): no CUDA kernel for dtype %s", v,
                        dtl_op_name(g->nodes[v].op), dtl_dtype_name(g->nodes[v].dtype));
            return NULL;
        }
    }
    cu_ctx *c = ctx_get(err);
    if (!c || !st_bind(store, g, err))
        return NULL;
    /* Some kernels run only as generated code: ROW kernels (softmax, layer norm …: one
     * launch per row block) and those beyond the interpreter's limits (a gradient clipping
     * over every param). The plan has them when kernels are generated, and is prepared again
     * without them (no ROW kernels; a kernel program too big for the interpreter: one launch
     * a node) when one of them gets no code: a refusal, a module NVRTC or the driver
     * rejects. */
#ifdef HAVE_NVRTC
    bool gen_only = codegen_mode() != CU_GEN_OFF;
#else
    bool gen_only = false;
#endif
    bool retry = false;
    cu_plan *p = cu_build(g, store, opts, c, gen_only, &retry, err);
    if (!p && retry)
        p = cu_build(g, store, opts, c, false, &retry, err);
    if (p && !setup_done(err)) {
        cu_free(p);
        return NULL;
    }
    return p;
}

/* The plan of cu_prepare (with kernels only generated code runs when gen_only); *retry set
 * when it failed for want of such a kernel's code. */
static cu_plan *cu_build(const dtl_graph *g, dtl_store *store, const dtl_plan_opts *opts,
                         cu_ctx *c, bool gen_only, bool *retry, dtl_err *err)
{
    bool ok;
    cu_plan *p = calloc(1, sizeof *p);
    if (!p) {
        dtl_err_set(err, DTL_ERR_NOMEM, "cuda: out of memory");
        return NULL;
    }
    p->g = g;
    p->og = g;
    p->store = store;
    p->ctx = c;
    p->gen_only = gen_only;
    dtl_arena_init(&p->arena);
    /* The fused path: the passes, then the kernel program, when the interpreter kernels
     * can run all of it; else (or with DTL_CUDA_FUSE=0) one launch per node. */
    if (!env_off("DTL_CUDA_FUSE")) {
        p->have_pg = true;
        /* (data parallel: the UPDATE plan's updates read the averaged gradients, inputs
         * that the buckets feed; GRAD has none to find) */
        fuse_plan(p, g, opts, !env_off("DTL_CUDA_ADAM"));
        if (!p->kp && p->nadam) {   /* (more stored values, say): without the Adam launch */
            p->nadam = 0;
            dtl_graph_free(&p->pg);
            fuse_plan(p, g, opts, false);
        }
    }
    /* (the caller's graph has every PARAM and STATE, the run graph maybe not m and v) */
    ok = (p->mirror = mirror_for(p->store, p->og, err)) != NULL &&
              (p->kp ? prepare_fused(p, err) && prepare_adam(p, err)
                     : prepare_device(p, opts, err)) &&
              prepare_io(p, err);
    dtl_cuda_dp *dp = dtl_cu_dp_of(opts);
    if (ok && dp) {
        ok = dp_attach(p, dp, err);
    } else if (opts && opts->output_ready) {   /* calls_ready: run reports the outputs */
        p->ready = opts->output_ready;
        p->ready_ctx = opts->ready_ctx;
    }
    if (!ok) {
        *retry = p->gen_retry;
        cu_free(p);
        return NULL;
    }
    if (env_on("DTL_CUDA_VERBOSE"))
        fprintf(stderr, "dtl cuda: plan of %u nodes: %s, %u launches a step, %" PRIu64
                " bytes of device memory\n", g->nnodes,
                !p->kp      ? "one launch a node"
                : p->ngen   ? "fused kernel program, generated kernels"
                            : "fused kernel program, interpreter kernels",
                p->nsteps, p->L.total);
    if (env_on("DTL_CUDA_VERBOSE") && p->nlt)
        fprintf(stderr, "dtl cuda: %u matrix products with their bias (+ ReLU) epilogue in "
                "cuBLASLt\n", p->nlt);
    if (env_on("DTL_CUDA_VERBOSE") && p->nadam)
        fprintf(stderr, "dtl cuda: one multi-tensor Adam launch updates %u params\n", p->nadam);
    return p;
}

/* ---- run ---- */

static bool same_type(const dtl_node *n, const dtl_binding *b)
{
    if (n->dtype != b->dtype || n->rank != b->rank)
        return false;
    for (uint32_t i = 0; i < n->rank; i++)
        if (n->shape[i] != b->shape[i])
            return false;
    return true;
}

/* Inputs from the caller's page-locked memory of at least this many bytes are copied by DMA
 * straight from it (below it the host's memcpy into the staging buffer costs less than one
 * more copy call). */
enum { CU_DMA_MIN = 64 << 10 };

static bool bind_inputs(cu_plan *p, const dtl_binding *in, size_t nin, dtl_err *err)
{
    char b1[160], b2[160];
    for (size_t j = 0; j < nin; j++)
        if (!in[j].name)
            return dtl_err_set(err, DTL_ERR_USAGE, "binding %zu has no name", j);
    if (p->have_event[p->which])   /* the buffer's previous copy is done */
        CU_TRY(cudaEventSynchronize(p->consumed[p->which]), "waiting for an input copy");
    char *pin = p->pinned[p->which];
    char *stage = p->have_copy ? p->devstage + (size_t)p->which * p->L.input_bytes : NULL;
    /* [lo, hi): the part of the staging buffer the host filled, sent in one copy when no
     * input goes by DMA; else each filled slot is sent alone (a span would resend the DMA
     * inputs' stale slots between them), and each DMA input straight from its caller's
     * buffer (disjoint slots: any order). */
    uint64_t lo = UINT64_MAX, hi = 0;
    bool dma = false;
    for (uint32_t k = 0; k < p->ninputs; k++) {
        uint32_t v = p->inputs[k];
        const dtl_node *n = N(p, v);
        const dtl_binding *b = NULL;
        if (dtl_cu_dp_fed(p->dpp, n->name))   /* an averaged gradient: copied on the device */
            continue;
        for (size_t j = 0; j < nin; j++)
            if (strcmp(in[j].name, n->name) == 0) {
                if (b)
                    return dtl_err_set(err, DTL_ERR_USAGE, "input \"%s\" is bound twice",
                                       n->name);
                b = &in[j];
            }
        if (!b)
            return dtl_err_set(err, DTL_ERR_MISMATCH, "input \"%s\" (%s) is not bound", n->name,
                               dtl_tensor_str(b1, sizeof b1, n->dtype, n->rank, n->shape));
        if (b->rank > DTL_MAX_RANK || !same_type(n, b))
            return dtl_err_set(err, DTL_ERR_MISMATCH, "input \"%s\": expected %s, found %s",
                               n->name, dtl_tensor_str(b1, sizeof b1, n->dtype, n->rank, n->shape),
                               b->rank > DTL_MAX_RANK
                                   ? "a tensor of rank > 8"
                                   : dtl_tensor_str(b2, sizeof b2, b->dtype, b->rank, b->shape));
        size_t bytes = (size_t)dtl_node_numel(n) * dtl_dtype_size(n->dtype);
        if (!b->data && bytes > 0)
            return dtl_err_set(err, DTL_ERR_USAGE, "input \"%s\": data is NULL", n->name);
        uint64_t at = p->L.off[v] - p->L.input_base;
        p->dma_src[k] = stage && bytes >= CU_DMA_MIN && host_pinned(b->data) ? b->data : NULL;
        if (p->dma_src[k]) {
            dma = true;
            continue;
        }
        if (bytes) {
            memcpy(pin + at, b->data, bytes);
            lo = at < lo ? at : lo;
            hi = at + bytes > hi ? at + bytes : hi;
        }
    }
    if (p->L.input_bytes && p->have_copy) {
        /* Host to device on the copy stream, into this buffer's device stage: it overlaps
         * whatever the compute stream still runs (the previous step); then the compute
         * stream waits for it and moves the stage into the input region (device bandwidth).
         * consumed[which] (after that move) frees both the pinned buffer and the stage. */
        if (!dma && lo < hi)
            CU_TRY(cudaMemcpyAsync(stage + lo, pin + lo, hi - lo, cudaMemcpyHostToDevice,
                                   p->copy), "copying the inputs");
        for (uint32_t k = 0; dma && k < p->ninputs; k++) {
            uint32_t v = p->inputs[k];
            size_t bytes = (size_t)dtl_node_numel(N(p, v)) * dtl_dtype_size(N(p, v)->dtype);
            uint64_t at = p->L.off[v] - p->L.input_base;
            if (p->dma_src[k]) {
                CU_TRY(cudaMemcpyAsync(stage + at, p->dma_src[k], bytes, cudaMemcpyHostToDevice,
                                       p->copy), "copying an input from its page-locked buffer");
                p->stats.input_dma_bytes += bytes;
            } else if (bytes && !dtl_cu_dp_fed(p->dpp, N(p, v)->name)) {
                CU_TRY(cudaMemcpyAsync(stage + at, pin + at, bytes, cudaMemcpyHostToDevice,
                                       p->copy), "copying an input");
            }
        }
        CU_TRY(cudaEventRecord(p->copied[p->which], p->copy), "cudaEventRecord");
        p->dma_pending = dma;
        p->dma_done = p->copied[p->which];
        CU_TRY(cudaStreamWaitEvent(p->ctx->stream, p->copied[p->which], 0),
               "cudaStreamWaitEvent");
        CU_TRY(cudaMemcpyAsync(p->dev + p->L.input_base, stage, p->L.input_bytes,
                               cudaMemcpyDeviceToDevice, p->ctx->stream),
               "moving the inputs into place");
        CU_TRY(cudaEventRecord(p->consumed[p->which], p->ctx->stream), "cudaEventRecord");
    } else if (p->L.input_bytes) {
        CU_TRY(cudaMemcpyAsync(p->dev + p->L.input_base, pin, p->L.input_bytes,
                               cudaMemcpyHostToDevice, p->ctx->stream), "copying the inputs");
        CU_TRY(cudaEventRecord(p->consumed[p->which], p->ctx->stream), "cudaEventRecord");
    }
    p->which ^= 1;
    return true;
}

static bool capture(cu_plan *p, dtl_err *err)
{
    cudaStream_t st = p->ctx->stream;
    CU_TRY(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal),
           "cudaStreamBeginCapture");
    bool ok = enqueue_all(p, err);
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(st, &graph);
    if (!ok) {
        if (graph)
            cudaGraphDestroy(graph);
        return false;
    }
    CU_TRY(e, "cudaStreamEndCapture");
    p->graph = graph;
    CU_TRY(cudaGraphInstantiate(&p->exec, graph, 0), "cudaGraphInstantiate");
    CU_TRY(cudaGraphUpload(p->exec, st), "cudaGraphUpload");
    return true;
}

static bool check_status(cu_plan *p, dtl_err *err)
{
    CU_TRY(cudaMemcpyAsync(p->status_host, p->dev + p->L.status_base,
                           (size_t)p->L.nstatus * 16, cudaMemcpyDeviceToHost, p->ctx->stream),
           "reading the index checks");
    CU_TRY(cudaStreamSynchronize(p->ctx->stream), "running the step");
    for (uint32_t v = 0; v < p->g->nnodes; v++) {
        uint32_t k = p->L.status[v];
        if (k == UINT32_MAX || p->status_host[2 * k] == ~0ull)
            continue;
        const dtl_node *n = N(p, v);
        int64_t dim = n->op == DTL_OP_GATHER ? N(p, n->in[0])->shape[n->attr.axis]
                                             : n->shape[n->attr.axis];
        return dtl_err_set(err, DTL_ERR_MISMATCH, "%%%u (%s%s%s): %s: index %" PRId64
                           " (element %" PRIu64 ") out of range [0, %" PRId64 ") on axis %u",
                           v, dtl_op_name(n->op), n->name ? " " : "", n->name ? n->name : "",
                           dtl_op_name(n->op), (int64_t)p->status_host[2 * k + 1],
                           (uint64_t)p->status_host[2 * k], dim, n->attr.axis);
    }
    return true;
}

static bool cu_output(void *vp, const char *name, dtl_tensor *out, dtl_err *err);

static bool run_step(cu_plan *p, const dtl_binding *in, size_t nin, dtl_err *err)
{
    if (!bind_inputs(p, in, nin, err) || !dtl_cu_dp_feed(p->dpp, err) ||
        !dtl_cu_dp_before_launch(p->dpp, err))
        return false;
    if (p->nsteps == 0) {
        /* nothing to compute: the outputs are inputs, params or constants */
    } else if (p->exec) {
        CU_TRY(cudaGraphLaunch(p->exec, p->ctx->stream), "cudaGraphLaunch");
        if (!dtl_cu_dp_launched(p->dpp, err))
            return false;
    } else if (p->use_graph && p->stats.runs >= 1) {
        if (!capture(p, err))
            return false;
        CU_TRY(cudaGraphLaunch(p->exec, p->ctx->stream), "cudaGraphLaunch");
        if (!dtl_cu_dp_launched(p->dpp, err))
            return false;
    } else {
        if (!enqueue_all(p, err))
            return false;
        if (!dtl_cu_dp_launched(p->dpp, err))
            return false;
        /* The warm-up: report a fault here, not steps later (a data-parallel step is waited
         * for by its dp's finish, under the watchdog: its collectives may wait for peers). */
        if (p->stats.runs == 0 && !p->dpp)
            CU_TRY(cudaStreamSynchronize(p->ctx->stream), "the first run of the step");
    }
    memset(p->outfresh, 0, p->g->nouts * sizeof *p->outfresh);
    p->stats.runs++;
    if (p->L.nstatus && !check_status(p, err))
        return false;
    for (uint32_t k = 0; p->ready && k < p->og->nouts; k++) {   /* (calls_ready) */
        dtl_tensor t;
        if (!cu_output(p, p->og->outs[k].name, &t, err))
            return false;
        p->ready(p->ready_ctx, k, &t);
    }
    return true;
}

static bool cu_run(void *vp, const dtl_binding *in, size_t nin, dtl_err *err)
{
    cu_plan *p = vp;
    bool ok = run_step(p, in, nin, err);
    /* The caller may refill its page-locked buffers once run returns, error or not: the
     * copies bind_inputs enqueued from them must have landed (they overlapped the previous
     * step and this one's launch). After a failure anywhere, all of the copy stream's. */
    if (!ok && p->have_copy) {
        cudaStreamSynchronize(p->copy);
        p->dma_pending = false;
    }
    if (p->dma_pending) {
        p->dma_pending = false;
        cudaError_t e = cudaEventSynchronize(p->dma_done);
        if (ok && e != cudaSuccess)
            ok = dtl_err_set(err, DTL_ERR_INTERNAL, "cuda: waiting for an input copy: %s",
                             cudaGetErrorString(e));
    }
    return ok;
}

static bool cu_output(void *vp, const char *name, dtl_tensor *out, dtl_err *err)
{
    cu_plan *p = vp;
    const dtl_graph *g = p->g;
    bool aok;
    if (adam_output(p, name, out, &aok, err))
        return aok;
    int64_t k = dtl_output_find(g, name, err);
    if (k < 0)
        return false;
    const dtl_output *o = &g->outs[k];
    const dtl_node *v = N(p, o->val);
    size_t bytes = (size_t)dtl_node_numel(v) * dtl_dtype_size(v->dtype);
    void *host;
    if (o->kind == DTL_OUT_PARAM || o->kind == DTL_OUT_STATE) {
        dtl_store_entry *e = st_find(p->store, N(p, o->target)->name);
        host = e->t.data;
        if (!p->outfresh[k] && bytes) {
            CU_TRY(cudaMemcpyAsync(host, p->ptr[o->target], bytes, cudaMemcpyDeviceToHost,
                                   p->ctx->stream), "reading an update");
            CU_TRY(cudaStreamSynchronize(p->ctx->stream), "running the step");
        }
    } else {
        host = p->outhost[k];
        if (!p->outfresh[k] && bytes) {
            CU_TRY(cudaMemcpyAsync(host, p->outsrc[k], bytes, cudaMemcpyDeviceToHost,
                                   p->ctx->stream), "reading an output");
            CU_TRY(cudaStreamSynchronize(p->ctx->stream), "running the step");
        }
    }
    p->outfresh[k] = true;
    dtl_output_view(g, (uint32_t)k, host, out);
    return true;
}

static void cu_stats(const void *vp, dtl_plan_stats *st)
{
    *st = ((const cu_plan *)vp)->stats;
}

/* NCCL data parallel (cuda_dp.h): cuda_dp.c's functions, create on this context's device. */
static dtl_cuda_dp *dp_create(const dtl_cuda_dp_spec *s, dtl_err *err)
{
    cu_ctx *c = ctx_get(err);
    return c ? dtl_cu_dp_create(s, c->device, err) : NULL;
}

static const dtl_cuda_dp_api cuda_dp_api = {
    dtl_cu_dp_available, dtl_cu_dp_unique_id, dp_create, dtl_cu_dp_plan_opts,
    dtl_cu_dp_finish, dtl_cu_dp_wait_seconds, dtl_cu_dp_set_timeout, dtl_cu_dp_destroy,
};

static const dtl_backend cuda_backend = {
    .name = "cuda",
    .prepare = cu_prepare,
    .run = cu_run,
    .output = cu_output,
    .stats = cu_stats,
    .free = cu_free,
    .calls_ready = true,   /* run reports the outputs after the run, or marks a dp plan */
};

/* ---- the plugin's entry: its one exported symbol (cuda_plugin.h, plugin.map) ---- */

const dtl_cuda_plugin *dtl_cuda_plugin_v1(const char *host_abi, const dtl_cuda_host *host,
                                          char *why, size_t len);

const dtl_cuda_plugin *dtl_cuda_plugin_v1(const char *host_abi, const dtl_cuda_host *host,
                                          char *why, size_t len)
{
    dtl_cuda_abi(the_plugin.abi, sizeof the_plugin.abi);
    if (!host_abi || strcmp(host_abi, the_plugin.abi) != 0) {
        snprintf(why, len, "the plugin is \"%s\", the program \"%s\"", the_plugin.abi,
                 host_abi ? host_abi : "?");
        return NULL;
    }
    the_plugin.host = host;
    the_plugin.table = (dtl_cuda_plugin){the_plugin.abi, &cuda_backend, cu_available,
                                         cu_fusable, &cuda_dp_api, cu_host_alloc,
                                         cu_host_free};
    return &the_plugin.table;
}
