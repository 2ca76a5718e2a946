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

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "../ref/ref.h"
#include "../ref/ref_internal.h"
#include "../../compiler/passes/fuse.h"
#include "../../compiler/passes/passes.h"
#include "cuda_plan.h"
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
    bool dev_newer;      /* a run committed since the last sync to the host */
} cu_mirror;

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
    if (dir == DTL_SYNC_TO_HOST)
        m->dev_newer = false;
    return true;
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
    CU_SCATTER, CU_RNG, CU_GEMM, CU_FUSED
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
            cublasOperation_t opa, opb;
            int m, n, k, batch, lda, ldb;
            const void *a, *b;
            void *c;
            long long sa, sb, sc;   /* element strides between batch matrices */
        } gemm;
        dtl_cu_fprog fp;
    } u;
} cu_step;

typedef struct cu_plan {
    const dtl_graph *g;        /* the graph run: the caller's, or pg */
    dtl_graph pg;              /* fused path: the graph after the passes */
    bool have_pg;
    dtl_kprog *kp;             /* fused path: the kernel program (NULL: one launch a node) */
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
    void *pinned[2];           /* input staging, laid out like the device input region */
    cudaEvent_t consumed[2];
    bool have_event[2];
    int which;
    void **outhost;            /* per output: pinned host copy (LOSS, VALUE) */
    const void **outsrc;       /* per output: device source */
    bool *outfresh;            /* per output: outhost holds this run's value */
    unsigned long long *status_host;
    bool commits;
    bool use_graph, sync_each;
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    dtl_plan_stats stats;
} cu_plan;

static dtl_cu_dt cu_dt_of(dtl_dtype t)
{
    switch (t) {
    case DTL_DTYPE_F32: return DTL_CU_F32;
    case DTL_DTYPE_F64: return DTL_CU_F64;
    case DTL_DTYPE_I32: return DTL_CU_I32;
    case DTL_DTYPE_I64: return DTL_CU_I64;
    case DTL_DTYPE_BOOL: return DTL_CU_BOOL;
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
        s->u.gemm.m = (int)m;
        s->u.gemm.n = (int)nn;
        s->u.gemm.k = (int)k;
        s->u.gemm.opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
        s->u.gemm.opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        s->u.gemm.lda = (int)(ta ? m : k);
        s->u.gemm.ldb = (int)(tb ? k : nn);
        s->u.gemm.batch = (int)shape[r - 1];
        s->u.gemm.a = (const char *)p->ptr[av] + (size_t)(oa * m * k) * esz;
        s->u.gemm.b = (const char *)p->ptr[bv] + (size_t)(ob * k * nn) * esz;
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
        if (!enqueue_step(p, &p->steps[i], err))
            return false;
    return true;
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

static bool fused_ok(const dtl_kprog *kp, dtl_arena *A)
{
    const dtl_graph *g = kp->g;
    int16_t *reg = dtl_arena_array(A, g->nnodes + 1, sizeof *reg);
    for (uint32_t v = 0; v < g->nnodes; v++)
        if (kp->loc[v].kind == DTL_LOC_CONST && g->nodes[v].op != DTL_OP_CONST &&
            g->nodes[v].op != DTL_OP_IOTA)
            return false;
    for (uint32_t i = 0; i < kp->nk; i++)
        if (!fused_kernel_ok(kp, &kp->k[i], reg))
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
    dtl_kprog *kp = dtl_fuse(&pg, NULL);
    dtl_arena A;
    dtl_arena_init(&A);
    ok = kp && fused_ok(kp, &A);
    if (kp) {
        uint32_t k[4] = {0};
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
    for (uint32_t i = 0; i < kp->nk; i++) {
        const dtl_kernel *K = &kp->k[i];
        switch (K->kind) {
        case DTL_K_SINGLE: build_node(p, K->root); break;
        case DTL_K_MATMUL:
            build_gemm(p, K->root, K->matmul_a, K->trans_a, K->matmul_b, K->trans_b,
                       p->ptr[K->root]);
            build_fused(p, K, reg);
            break;
        default: build_fused(p, K, reg); break;
        }
    }
    for (uint32_t k = 0; k < no; k++) {
        const dtl_output *o = &g->outs[k];
        const dtl_node *vn = &g->nodes[o->val];
        size_t bytes = (size_t)dtl_node_numel(vn) * dtl_dtype_size(vn->dtype);
        if (o->kind == DTL_OUT_PARAM || o->kind == DTL_OUT_STATE) {
            build_memcpy(p, UINT32_MAX, "committing an update", p->ptr[o->target],
                         p->outsrc[k], bytes);   /* nothing when updated in place */
            p->commits = true;
        } else {
            CU_TRY(cudaHostAlloc(&p->outhost[k], bytes ? bytes : 1, cudaHostAllocDefault),
                   "pinned memory for an output");
        }
    }
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
    if (p->exec)
        cudaGraphExecDestroy(p->exec);
    if (p->graph)
        cudaGraphDestroy(p->graph);
    for (int i = 0; i < 2; i++) {
        if (p->pinned[i])
            cudaFreeHost(p->pinned[i]);
        if (p->have_event[i])
            cudaEventDestroy(p->consumed[i]);
    }
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
            p->commits = true;
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
    return true;
}

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
    for (dtl_val v = 0; v < g->nnodes; v++)   /* ops without CUDA kernels yet */
        if (dtl_op_kind_of(g->nodes[v].op) == DTL_OPK_WINDOW) {
            dtl_err_set(err, DTL_ERR_USAGE, "cuda: %%%u (%s): convolution and pooling have no "
                        "CUDA kernels yet; use --backend llvm", v, dtl_op_name(g->nodes[v].op));
            return NULL;
        }
    cu_ctx *c = ctx_get(err);
    if (!c || !st_bind(store, g, err))
        return NULL;
    cu_plan *p = calloc(1, sizeof *p);
    if (!p) {
        dtl_err_set(err, DTL_ERR_NOMEM, "cuda: out of memory");
        return NULL;
    }
    p->g = g;
    p->store = store;
    p->ctx = c;
    dtl_arena_init(&p->arena);
    /* The fused path: the passes, then the kernel program, when the interpreter kernels
     * can run all of it; else (or with DTL_CUDA_FUSE=0) one launch per node. */
    if (!env_off("DTL_CUDA_FUSE")) {
        dtl_err perr;
        p->have_pg = true;
        if (dtl_passes_run(&p->pg, g, NULL, &perr)) {
            dtl_fuse_opts fo = {false, opts && opts->no_reuse, false};
            p->kp = dtl_fuse(&p->pg, &fo);
            if (p->kp && fused_ok(p->kp, &p->arena)) {
                p->g = &p->pg;
            } else {
                dtl_kprog_free(p->kp);
                p->kp = NULL;
            }
        }
    }
    ok = (p->mirror = mirror_for(p->store, p->g, err)) != NULL &&
              (p->kp ? prepare_fused(p, err) : prepare_device(p, opts, err)) &&
              prepare_io(p, err);
    if (!ok) {
        cu_free(p);
        return NULL;
    }
    if (env_on("DTL_CUDA_VERBOSE"))
        fprintf(stderr, "dtl cuda: plan of %u nodes: %s, %u launches a step, %" PRIu64
                " bytes of device memory\n", g->nnodes,
                p->kp ? "fused kernel program" : "one launch a node", p->nsteps, p->L.total);
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

static bool bind_inputs(cu_plan *p, const dtl_binding *in, size_t nin, dtl_err *err)
{
    char b1[160], b2[160];
    for (size_t j = 0; j < nin; j++)
        if (!in[j].name)
            return dtl_err_set(err, DTL_ERR_USAGE, "binding %zu has no name", j);
    if (p->have_event[p->which])   /* the buffer's previous copy is done */
        CU_TRY(cudaEventSynchronize(p->consumed[p->which]), "waiting for an input copy");
    char *pin = p->pinned[p->which];
    for (uint32_t k = 0; k < p->ninputs; k++) {
        uint32_t v = p->inputs[k];
        const dtl_node *n = N(p, v);
        const dtl_binding *b = NULL;
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
        if (bytes)
            memcpy(pin + (p->L.off[v] - p->L.input_base), b->data, bytes);
    }
    if (p->L.input_bytes) {
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

static bool cu_run(void *vp, const dtl_binding *in, size_t nin, dtl_err *err)
{
    cu_plan *p = vp;
    if (!bind_inputs(p, in, nin, err))
        return false;
    if (p->nsteps == 0) {
        /* nothing to compute: the outputs are inputs, params or constants */
    } else if (p->exec) {
        CU_TRY(cudaGraphLaunch(p->exec, p->ctx->stream), "cudaGraphLaunch");
    } else if (p->use_graph && p->stats.runs >= 1) {
        if (!capture(p, err))
            return false;
        CU_TRY(cudaGraphLaunch(p->exec, p->ctx->stream), "cudaGraphLaunch");
    } else {
        if (!enqueue_all(p, err))
            return false;
        if (p->stats.runs == 0)   /* the warm-up: report a fault here, not steps later */
            CU_TRY(cudaStreamSynchronize(p->ctx->stream), "the first run of the step");
    }
    if (p->commits)
        p->mirror->dev_newer = true;
    memset(p->outfresh, 0, p->g->nouts * sizeof *p->outfresh);
    p->stats.runs++;
    return !p->L.nstatus || check_status(p, err);
}

static bool cu_output(void *vp, const char *name, dtl_tensor *out, dtl_err *err)
{
    cu_plan *p = vp;
    const dtl_graph *g = p->g;
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

static const dtl_backend cuda_backend = {
    .name = "cuda",
    .prepare = cu_prepare,
    .run = cu_run,
    .output = cu_output,
    .stats = cu_stats,
    .free = cu_free,
    .calls_ready = false,   /* dtl_plan_run reports the outputs after the run (exec.h) */
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
                                         cu_fusable};
    return &the_plugin.table;
}
