/* compiler/llvm/codegen.c — a kernel program (fuse.h) to one LLVM module.
 *
 * Design. Every kernel becomes a loop nest over its shape. A big kernel (VEC_ELEMS elements
 * or more) is written as a pair of functions: an internal `inner` that takes one noalias
 * pointer per slot the kernel touches (the arena, the constant block, an input, a store
 * entry: distinct allocations, so the loop vectorizer needs no run-time overlap checks) plus
 * the range [begin, end) of its outer loop, and a `body(void *slots, int64_t begin, int64_t
 * end)` that loads those pointers from the slots and calls inner (always inlined). The step
 * calls body over the whole range, or hands it to dtl_pool_run from PAR_ELEMS elements on.
 * A small kernel is written straight into the step, its loops marked not to be vectorized.
 * Shapes and memory offsets are constants, so every stride in the generated code is one.
 *
 * A value in a loop is a "stream": an external operand read with numpy broadcasting (stride
 * 0 on broadcast axes), an output written contiguously, an iota's index, or a reduction's
 * result. Adjacent loop dimensions merge when every stream steps through them as one
 * (contiguous for all, or broadcast for all), so most elementwise kernels become one flat
 * loop. ELEMWISE kernels loop over rows (outer dims, decomposed once per row) and the
 * innermost dimension (a plain loop with constant strides: the loop vectorizer's case).
 * REDUCE kernels come in two shapes after merging: the innermost dimension reduced ("row":
 * one accumulator per output element, looping over the reduced dims; a float row of two
 * vectors or more is written as explicit vector code with a vector accumulator, since LLVM
 * may not reassociate it) or kept ("column": a chunk of COL_CHUNK outputs accumulated side
 * by side in a stack array, row after row of the reduced dims, which vectorizes without
 * reassociating anything — a bias gradient).
 * ROW kernels loop over rows (the pool's units); per row, each pass of dtl_row_passes is a
 * loop over the row in explicit vector code (the reductions' vector accumulators as in row
 * REDUCE), the row values between passes are scalars in registers, and a full member read in
 * a later pass is reloaded from its out, kept in a row buffer on the stack, or computed again.
 * f32 sums accumulate in double (ref.h). MATMUL calls dtl_gemm_f32/f64 per batch matrix with
 * a generated epilogue (ELEMWISE members applied to each finished block of C). SINGLE
 * kernels call the reference kernel through dtl_llvm_rt_single.
 *
 * Semantics of each op follow kernels/ref exactly: max/min/relu propagate NaN (an explicit
 * unordered compare), integer division guards its divisor (z == 0 gives 0, z == -1 gives
 * -x, both without executing a trapping sdiv), float-to-int casts use llvm.fptosi.sat
 * (saturating, NaN -> 0), bools are bytes 0/1 in memory and i1 in registers. No fast-math
 * flags are set anywhere. The one departure: f32 exp is a polynomial written inline
 * (exp_f32, within 2 ulp of libm's expf), because a libm call per element keeps softmax and
 * GELU loops from being vectorized. */
#include "llvm.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#include <llvm-c/Core.h>
#include <llvm-c/DebugInfo.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>

#include "llvm_rt.h"

enum {
    PAR_ELEMS = 1 << 15,    /* a loop with at least this many elements may run in parallel */
    GRAIN_ELEMS = 1 << 13,  /* the least elements a pool task takes */
    COL_CHUNK = 256,        /* column reductions: outputs accumulated side by side */
    VEC_ELEMS = 1024,       /* a kernel with fewer elements ... */
    VEC_INNER = 16,         /* ... or a shorter innermost loop is not vectorized */
    SPILL_BYTES = 64 << 10, /* ROW kernels: row buffers on the stack, at most */
    ALIGN = 64,
};

typedef enum st_kind { ST_LOAD, ST_STORE, ST_IOTA, ST_ACC } st_kind;

typedef struct stream {
    st_kind kind;
    dtl_val v;                  /* the value read or written; IOTA: the iota member */
    dtl_dtype dt;
    dtl_llvm_place at;
    uint32_t param;             /* the inner function's parameter holding at.slot */
    int64_t st[DTL_MAX_RANK];   /* element strides over the loop's dims */
} stream;

typedef struct nest {
    uint32_t rank;
    int64_t size[DTL_MAX_RANK];
    bool red[DTL_MAX_RANK];
    stream *s;
    uint32_t ns, cap;
    /* the inner function (arrays of ns + 1 entries, from nest_params) */
    uint32_t nparams;
    uint32_t *param_slot;       /* per parameter: its slot */
    LLVMValueRef *base;         /* per parameter: its pointer in the function being built */
    LLVMValueRef *off;          /* per stream: the current element's offset (i64) */
    LLVMValueRef *tmp1, *tmp2;  /* per stream: partial offsets while a nest is written */
} nest;

typedef struct cg {
    LLVMContextRef C;
    LLVMModuleRef M;
    LLVMBuilderRef B;
    const dtl_kprog *kp;
    const dtl_graph *g;
    dtl_llvm_layout *L;
    dtl_arena *A;
    dtl_err *err;
    bool failed;
    const char *prefix;
    char *cpu, *features;
    LLVMTypeRef tvoid, ti1, ti8, ti32, ti64, tf32, tf64, tp8, tpp8;
    LLVMTypeRef body_ty, epi_ty, pool_run_ty, gemm_ty[2], single_ty, libm1_ty[2];
    LLVMValueRef pool_run, gemm[2], single, ftanh[2];
    bool hooks;                 /* output-ready hooks: calls to dtl_llvm_rt_ready */
    LLVMTypeRef ready_ty;
    LLVMValueRef ready;
    LLVMValueRef *val;          /* per node: its value in the element being emitted */
    int32_t *ld, *stv;          /* per node: 1 + its load / store stream in the current nest */
    uint64_t top;               /* arena bytes used so far (the plan's, then ours) */
    uint32_t nsingle;
    uint32_t kidx;
    bool novec;                 /* loops of the current kernel: not worth vectorizing */
    unsigned w;                 /* lanes of the element code being emitted (1: scalar) */
    bool rowk;                  /* in a ROW kernel: a member of an earlier pass that is not
                                   stored is computed again where it is read */
    int32_t *iota_s;
    LLVMValueRef *spill;        /* ROW: per node, a row buffer (alloca) holding its value */
    LLVMValueRef row_j;         /* ROW: the index in the row of the current element */
    LLVMValueRef step, slots;   /* the step function and its argument */
    LLVMValueRef epi_ctx;       /* { i8**, i64 } in the step's entry block */
    LLVMTypeRef epi_ctx_ty;
} cg;

/* ---- small helpers ------------------------------------------------------------------------ */

static bool cg_fail(cg *c, dtl_err_kind kind, const char *fmt, const char *a, const char *b)
{
    if (!c->failed)
        dtl_err_set(c->err, kind, fmt, a, b);
    c->failed = true;
    return false;
}

static uint64_t round_up(uint64_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

static int64_t numel(uint32_t rank, const int64_t *shape)
{
    int64_t k = 1;
    for (uint32_t i = 0; i < rank; i++)
        k *= shape[i];
    return k;
}

static bool is_float(dtl_dtype t)
{
    return t == DTL_DTYPE_F32 || t == DTL_DTYPE_F64 || t == DTL_DTYPE_BF16;
}

static const dtl_node *node(const cg *c, dtl_val v)
{
    return &c->g->nodes[v];
}

/* The register type of a dtype. */
static LLVMTypeRef reg_ty(cg *c, dtl_dtype t)
{
    switch (t) {
    case DTL_DTYPE_F32: return c->tf32;
    case DTL_DTYPE_BF16: return c->tf32;   /* bf16: an f32 with its low 16 bits zero */
    case DTL_DTYPE_F64: return c->tf64;
    case DTL_DTYPE_I32: return c->ti32;
    case DTL_DTYPE_I64: return c->ti64;
    case DTL_DTYPE_BOOL: return c->ti1;
    default: return NULL;
    }
}

/* The memory type of a dtype (bool: a byte; bf16: its 16 bits). */
static LLVMTypeRef mem_ty(cg *c, dtl_dtype t)
{
    if (t == DTL_DTYPE_BF16)
        return LLVMInt16TypeInContext(c->C);
    return t == DTL_DTYPE_BOOL ? c->ti8 : reg_ty(c, t);
}

static LLVMValueRef ci64(cg *c, int64_t v)
{
    return LLVMConstInt(c->ti64, (unsigned long long)v, true);
}

/* t, or a vector of c->w of them. */
static LLVMTypeRef vty(cg *c, LLVMTypeRef t)
{
    return c->w > 1 ? LLVMVectorType(t, c->w) : t;
}

/* A scalar x as c->w lanes (constants stay constants). */
static LLVMValueRef splat(cg *c, LLVMValueRef x)
{
    if (c->w <= 1 || LLVMGetTypeKind(LLVMTypeOf(x)) == LLVMVectorTypeKind)
        return x;
    if (LLVMIsConstant(x)) {
        LLVMValueRef e[64];
        for (unsigned i = 0; i < c->w; i++)
            e[i] = x;
        return LLVMConstVector(e, c->w);
    }
    LLVMValueRef v = LLVMBuildInsertElement(c->B, LLVMGetUndef(vty(c, LLVMTypeOf(x))), x,
                                            LLVMConstInt(c->ti32, 0, 0), "");
    return LLVMBuildShuffleVector(c->B, v, LLVMGetUndef(LLVMTypeOf(v)),
                                  LLVMConstNull(LLVMVectorType(c->ti32, c->w)), "");
}

/* Constants of scalar type t with c->w lanes. */
static LLVMValueRef kreal(cg *c, LLVMTypeRef t, double v)
{
    return splat(c, LLVMConstReal(t, v));
}

static LLVMValueRef kint(cg *c, LLVMTypeRef t, long long v)
{
    return splat(c, LLVMConstInt(t, (unsigned long long)v, 1));
}

/* A constant of dtype t with value v, converted like ref_store (saturating, NaN -> 0). */
static LLVMValueRef cst(cg *c, dtl_dtype t, double v)
{
    switch (t) {
    case DTL_DTYPE_F32: return LLVMConstReal(c->tf32, (double)(float)v);
    case DTL_DTYPE_BF16:
        return LLVMConstReal(c->tf32, dtl_f32_from_bf16(dtl_bf16_from_f32((float)v)));
    case DTL_DTYPE_F64: return LLVMConstReal(c->tf64, v);
    case DTL_DTYPE_I32: {
        int32_t x = v != v ? 0 : v >= 2147483647.0 ? INT32_MAX
                               : v <= -2147483648.0 ? INT32_MIN : (int32_t)v;
        return LLVMConstInt(c->ti32, (unsigned long long)(int64_t)x, true);
    }
    case DTL_DTYPE_I64: {
        int64_t x = v != v ? 0 : v >= 9223372036854775808.0 ? INT64_MAX
                               : v <= -9223372036854775808.0 ? INT64_MIN : (int64_t)v;
        return LLVMConstInt(c->ti64, (unsigned long long)x, true);
    }
    case DTL_DTYPE_BOOL: return LLVMConstInt(c->ti1, v != 0, false);
    default: return NULL;
    }
}

/* Element 0 of a CONST's data as a constant. */
static LLVMValueRef cst_data0(cg *c, const dtl_node *n)
{
    const void *d = n->attr.cst.data;
    switch (n->dtype) {
    case DTL_DTYPE_F32: return LLVMConstReal(c->tf32, *(const float *)d);
    case DTL_DTYPE_BF16: return LLVMConstReal(c->tf32, dtl_f32_from_bf16(*(const uint16_t *)d));
    case DTL_DTYPE_F64: return LLVMConstReal(c->tf64, *(const double *)d);
    case DTL_DTYPE_I32:
        return LLVMConstInt(c->ti32, (unsigned long long)(int64_t) * (const int32_t *)d, true);
    case DTL_DTYPE_I64:
        return LLVMConstInt(c->ti64, (unsigned long long)*(const int64_t *)d, true);
    case DTL_DTYPE_BOOL: return LLVMConstInt(c->ti1, *(const uint8_t *)d != 0, false);
    default: return NULL;
    }
}

/* A CONST read as an immediate: splats, and single elements. NULL: read it from memory. */
static LLVMValueRef imm_of(cg *c, dtl_val v)
{
    const dtl_node *n = node(c, v);
    if (c->kp->loc[v].kind == DTL_LOC_ALIAS)
        n = node(c, c->kp->loc[v].of);
    if (n->op != DTL_OP_CONST)
        return NULL;
    if (!n->attr.cst.data)
        return cst(c, n->dtype, n->attr.cst.fill);
    if (dtl_node_numel(n) == 1)
        return cst_data0(c, n);
    return NULL;
}

static void add_fn_attr(cg *c, LLVMValueRef fn, const char *name)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                            LLVMCreateEnumAttribute(c->C, kind, 0));
}

static void add_param_attr(cg *c, LLVMValueRef fn, unsigned i, const char *name)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, i + 1, LLVMCreateEnumAttribute(c->C, kind, 0));
}

static LLVMValueRef new_fn(cg *c, const char *what, LLVMTypeRef ty, bool internal)
{
    char name[128];
    snprintf(name, sizeof name, "%s%s", c->prefix, what);
    LLVMValueRef fn = LLVMAddFunction(c->M, name, ty);
    if (internal)
        LLVMSetLinkage(fn, LLVMInternalLinkage);
    add_fn_attr(c, fn, "nounwind");
    LLVMAddTargetDependentFunctionAttr(fn, "target-cpu", c->cpu);
    LLVMAddTargetDependentFunctionAttr(fn, "target-features", c->features);
    LLVMPositionBuilderAtEnd(c->B, LLVMAppendBasicBlockInContext(c->C, fn, "entry"));
    return fn;
}

/* An alloca in the entry block of the current function. */
static LLVMValueRef entry_alloca(cg *c, LLVMTypeRef ty, const char *name)
{
    LLVMBasicBlockRef cur = LLVMGetInsertBlock(c->B);
    LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(LLVMGetBasicBlockParent(cur));
    LLVMBuilderRef b = LLVMCreateBuilderInContext(c->C);
    LLVMValueRef first = LLVMGetFirstInstruction(entry);
    if (first)
        LLVMPositionBuilderBefore(b, first);
    else
        LLVMPositionBuilderAtEnd(b, entry);
    LLVMValueRef a = LLVMBuildAlloca(b, ty, name);
    LLVMDisposeBuilder(b);
    return a;
}

/* for (i = begin; i < end; i++) — counters live in allocas; mem2reg makes them phis. */
typedef struct lp {
    LLVMValueRef ctr, i;
    LLVMBasicBlockRef head, exit;
} lp;

static LLVMValueRef loop_open(cg *c, lp *l, LLVMValueRef begin, LLVMValueRef end)
{
    LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(c->B));
    l->ctr = entry_alloca(c, c->ti64, "i");
    LLVMBuildStore(c->B, begin, l->ctr);
    l->head = LLVMAppendBasicBlockInContext(c->C, fn, "head");
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->C, fn, "body");
    l->exit = LLVMAppendBasicBlockInContext(c->C, fn, "exit");
    LLVMBuildBr(c->B, l->head);
    LLVMPositionBuilderAtEnd(c->B, l->head);
    l->i = LLVMBuildLoad2(c->B, c->ti64, l->ctr, "i");
    LLVMBuildCondBr(c->B, LLVMBuildICmp(c->B, LLVMIntSLT, l->i, end, ""), body, l->exit);
    LLVMPositionBuilderAtEnd(c->B, body);
    return l->i;
}

/* Closes the loop; when c->novec, its latch gets loop metadata that keeps the vectorizer
 * away (vectorizing a loop of 10 elements makes three loops of it — vector body, remainder,
 * overlap checks — for nothing, and compile time grows with them). */
static void loop_close(cg *c, lp *l)
{
    LLVMBuildStore(c->B, LLVMBuildAdd(c->B, l->i, ci64(c, 1), ""), l->ctr);
    LLVMValueRef br = LLVMBuildBr(c->B, l->head);
    if (c->novec) {
        static const char key[] = "llvm.loop.vectorize.enable";
        LLVMMetadataRef kv[2] = {LLVMMDStringInContext2(c->C, key, sizeof key - 1),
                                 LLVMValueAsMetadata(LLVMConstInt(c->ti1, 0, 0))};
        LLVMMetadataRef tmp = LLVMTemporaryMDNode(c->C, NULL, 0);
        LLVMMetadataRef ops[2] = {tmp, LLVMMDNodeInContext2(c->C, kv, 2)};
        LLVMMetadataRef id = LLVMMDNodeInContext2(c->C, ops, 2);
        LLVMMetadataReplaceAllUsesWith(tmp, id);   /* the loop id refers to itself */
        LLVMSetMetadata(br, LLVMGetMDKindIDInContext(c->C, "llvm.loop", 9),
                        LLVMMetadataAsValue(c->C, id));
    }
    LLVMPositionBuilderAtEnd(c->B, l->exit);
}

static LLVMValueRef call(cg *c, LLVMTypeRef ty, LLVMValueRef fn, LLVMValueRef *args,
                         unsigned n)
{
    return LLVMBuildCall2(c->B, ty, fn, args, n, "");
}

/* An overloaded intrinsic (types: its overload types) applied to args. */
static LLVMValueRef intrinsic(cg *c, const char *name, LLVMTypeRef *types, unsigned ntypes,
                              LLVMValueRef *args, unsigned nargs)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(c->M, id, types, ntypes);
    LLVMTypeRef ty = LLVMIntrinsicGetType(c->C, id, types, ntypes);
    return call(c, ty, fn, args, nargs);
}

static LLVMValueRef intr1(cg *c, const char *name, LLVMValueRef x)
{
    LLVMTypeRef t = LLVMTypeOf(x);
    return intrinsic(c, name, &t, 1, &x, 1);
}

static LLVMValueRef intr2(cg *c, const char *name, LLVMValueRef x, LLVMValueRef y)
{
    LLVMTypeRef t = LLVMTypeOf(x);
    LLVMValueRef a[2] = {x, y};
    return intrinsic(c, name, &t, 1, a, 2);
}

/* x * k for a constant k, without the multiply when k is 0 or 1. */
static LLVMValueRef mul_k(cg *c, LLVMValueRef x, int64_t k)
{
    if (k == 0)
        return ci64(c, 0);
    if (k == 1)
        return x;
    return LLVMBuildMul(c->B, x, ci64(c, k), "");
}

static LLVMValueRef add_(cg *c, LLVMValueRef a, LLVMValueRef b)
{
    if (LLVMIsConstant(b) && LLVMConstIntGetSExtValue(b) == 0)
        return a;
    if (LLVMIsConstant(a) && LLVMConstIntGetSExtValue(a) == 0)
        return b;
    return LLVMBuildAdd(c->B, a, b, "");
}

/* ---- places and nests --------------------------------------------------------------------- */

static dtl_llvm_place where(cg *c, dtl_val v)
{
    return dtl_llvm_where(c->kp, c->L, v);
}

static uint64_t value_bytes(const dtl_node *n)
{
    return dtl_node_numel(n) * dtl_dtype_size(n->dtype);
}

static bool overlap(dtl_llvm_place a, uint64_t na, dtl_llvm_place b, uint64_t nb)
{
    return a.slot == b.slot && a.offset < b.offset + nb && b.offset < a.offset + na;
}

/* Row-major strides of (rank, shape) read as broadcast to (orank, oshape): ref's rule. */
static void bcast_strides(uint32_t rank, const int64_t *shape, uint32_t orank,
                          const int64_t *oshape, int64_t *st)
{
    int64_t own[DTL_MAX_RANK], s = 1;
    for (uint32_t i = rank; i-- > 0;) {
        own[i] = s;
        s *= shape[i];
    }
    for (uint32_t o = 0; o < orank; o++) {
        uint32_t back = orank - 1 - o;
        if (back >= rank) {
            st[o] = 0;
            continue;
        }
        uint32_t i = rank - 1 - back;
        st[o] = shape[i] == 1 && oshape[o] != 1 ? 0 : own[i];
    }
}

/* A new stream of n for value v; at: its place, or NULL for where v is stored. */
static stream *nest_add(cg *c, nest *n, st_kind kind, dtl_val v, const dtl_llvm_place *at)
{
    if (n->ns == n->cap) {
        uint32_t cap = n->cap ? n->cap * 2 : 16;
        n->s = dtl_arena_grow(c->A, n->s, n->ns, cap, sizeof *n->s);
        n->cap = cap;
    }
    stream *s = &n->s[n->ns++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->v = v;
    s->dt = node(c, v)->dtype;
    if (kind != ST_IOTA)
        s->at = at ? *at : where(c, v);
    if (kind != ST_IOTA && s->at.slot == UINT32_MAX) {   /* a plan without a place for v */
        char what[32];
        snprintf(what, sizeof what, "%%%u", v);
        cg_fail(c, DTL_ERR_INTERNAL, "llvm: internal: %s (%s) is not stored anywhere", what,
                dtl_op_name(node(c, v)->op));
        s->at = (dtl_llvm_place){DTL_LLVM_SLOT_ARENA, 0};
    }
    return s;
}

static void nest_init(nest *n, uint32_t rank, const int64_t *shape, uint32_t red_axes)
{
    memset(n, 0, sizeof *n);
    n->rank = rank;
    for (uint32_t d = 0; d < rank; d++) {
        n->size[d] = shape[d];
        n->red[d] = (red_axes >> d) & 1;
    }
}

/* Drops size-1 dims and merges a dim into the next when every stream steps through both as
 * one. A nest of rank 0 gets one dim of size 1. */
static void nest_collapse(nest *n)
{
    uint32_t r = 0;
    for (uint32_t d = 0; d < n->rank; d++) {
        if (n->size[d] == 1)
            continue;
        bool merge = r > 0 && n->red[r - 1] == n->red[d];
        for (uint32_t k = 0; merge && k < n->ns; k++)
            merge = n->s[k].st[r - 1] == n->s[k].st[d] * n->size[d];
        if (merge) {
            n->size[r - 1] *= n->size[d];
            for (uint32_t k = 0; k < n->ns; k++)
                n->s[k].st[r - 1] = n->s[k].st[d];
            continue;
        }
        n->size[r] = n->size[d];
        n->red[r] = n->red[d];
        for (uint32_t k = 0; k < n->ns; k++)
            n->s[k].st[r] = n->s[k].st[d];
        r++;
    }
    if (r == 0) {
        n->size[0] = 1;
        n->red[0] = false;
        for (uint32_t k = 0; k < n->ns; k++)
            n->s[k].st[0] = 0;
        r = 1;
    }
    n->rank = r;
}

/* Assigns every stream a parameter of the inner function; sizes the nest's arrays. Streams
 * share a parameter when they touch overlapping bytes of the same slot (transitively); other
 * streams of that slot (disjoint values in the arena) get parameters of their own, each the
 * same slot pointer, so that noalias tells the vectorizer what the memory plan knows: a
 * kernel storing ten values into the arena needs no run-time overlap checks (too many of
 * them and LLVM would not vectorize the loop at all). */
static void nest_params(cg *c, nest *n)
{
    size_t m = n->ns + 1;
    n->param_slot = dtl_arena_array(c->A, m, sizeof *n->param_slot);
    n->base = dtl_arena_array(c->A, m, sizeof *n->base);
    n->off = dtl_arena_array(c->A, m, sizeof *n->off);
    n->tmp1 = dtl_arena_array(c->A, m, sizeof *n->tmp1);
    n->tmp2 = dtl_arena_array(c->A, m, sizeof *n->tmp2);
    uint32_t *grp = dtl_arena_array(c->A, m, sizeof *grp);   /* union-find over streams */
    uint64_t *bytes = dtl_arena_array(c->A, m, sizeof *bytes);
    for (uint32_t k = 0; k < n->ns; k++) {
        grp[k] = k;
        bytes[k] = n->s[k].kind == ST_IOTA ? 0 : value_bytes(node(c, n->s[k].v));
    }
    for (uint32_t k = 0; k < n->ns; k++)
        for (uint32_t j = 0; j < k; j++) {
            if (n->s[k].kind == ST_IOTA || n->s[j].kind == ST_IOTA ||
                n->s[k].at.slot != n->s[j].at.slot)
                continue;
            bool same = overlap(n->s[k].at, bytes[k], n->s[j].at, bytes[j]) ||
                        n->s[k].at.offset == n->s[j].at.offset;
            if (!same)
                continue;
            uint32_t a = k, b = j;
            while (grp[a] != a)
                a = grp[a];
            while (grp[b] != b)
                b = grp[b];
            grp[a > b ? a : b] = a < b ? a : b;
        }
    uint32_t *root_param = dtl_arena_array(c->A, m, sizeof *root_param);
    n->nparams = 0;
    for (uint32_t k = 0; k < n->ns; k++) {
        if (n->s[k].kind == ST_IOTA)
            continue;
        uint32_t r = k;
        while (grp[r] != r)
            r = grp[r];
        if (r == k) {
            root_param[k] = n->nparams;
            n->param_slot[n->nparams++] = n->s[k].at.slot;
        }
        n->s[k].param = root_param[r];
    }
}

/* The inner function's type: one i8* per parameter, then nints i64. */
static LLVMTypeRef inner_ty(cg *c, const nest *n, unsigned nints)
{
    LLVMTypeRef *p = dtl_arena_array(c->A, n->nparams + nints + 1, sizeof *p);
    unsigned k = 0;
    for (uint32_t i = 0; i < n->nparams; i++)
        p[k++] = c->tp8;
    for (unsigned i = 0; i < nints; i++)
        p[k++] = c->ti64;
    return LLVMFunctionType(c->tvoid, p, k, false);
}

static LLVMValueRef inner_fn(cg *c, nest *n, const char *what, unsigned nints)
{
    char name[64];
    snprintf(name, sizeof name, "k%u_%s", c->kidx, what);
    LLVMValueRef fn = new_fn(c, name, inner_ty(c, n, nints), true);
    add_fn_attr(c, fn, "alwaysinline");
    for (uint32_t i = 0; i < n->nparams; i++) {
        add_param_attr(c, fn, i, "noalias");
        n->base[i] = LLVMGetParam(fn, i);
    }
    return fn;
}

/* Loads the slots' pointers from slots (an i8**) and calls inner with them and ints. */
static void call_inner(cg *c, const nest *n, LLVMValueRef inner, LLVMValueRef slots,
                       LLVMValueRef *ints, unsigned nints)
{
    LLVMValueRef *a = dtl_arena_array(c->A, n->nparams + nints + 1, sizeof *a);
    unsigned k = 0;
    for (uint32_t i = 0; i < n->nparams; i++) {
        LLVMValueRef idx = ci64(c, n->param_slot[i]);
        LLVMValueRef p = LLVMBuildInBoundsGEP2(c->B, c->tp8, slots, &idx, 1, "");
        a[k++] = LLVMBuildLoad2(c->B, c->tp8, p, "slot");
    }
    for (unsigned i = 0; i < nints; i++)
        a[k++] = ints[i];
    call(c, inner_ty(c, n, nints), inner, a, k);
}

/* body(void *slots, i64 begin, i64 end) calling inner(ptrs..., begin, end). */
static LLVMValueRef body_fn(cg *c, const nest *n, LLVMValueRef inner)
{
    char name[64];
    snprintf(name, sizeof name, "k%u_body", c->kidx);
    LLVMValueRef fn = new_fn(c, name, c->body_ty, true);
    LLVMValueRef slots = LLVMBuildBitCast(c->B, LLVMGetParam(fn, 0), c->tpp8, "");
    LLVMValueRef ints[2] = {LLVMGetParam(fn, 1), LLVMGetParam(fn, 2)};
    call_inner(c, n, inner, slots, ints, 2);
    LLVMBuildRetVoid(c->B);
    return fn;
}

/* In the step: body over [0, units), on the pool when worth it. */
static void run_body(cg *c, LLVMValueRef body, int64_t units, int64_t elems)
{
    LLVMValueRef slots8 = LLVMBuildBitCast(c->B, c->slots, c->tp8, "");
    LLVMValueRef direct[3] = {slots8, ci64(c, 0), ci64(c, units)};
    if (elems < PAR_ELEMS || units < 2) {
        call(c, c->body_ty, body, direct, 3);
        return;
    }
    int64_t per = elems / units, grain = per >= GRAIN_ELEMS ? 1 : (GRAIN_ELEMS + per - 1) / per;
    LLVMValueRef idx = ci64(c, DTL_LLVM_SLOT_POOL);
    LLVMValueRef pool = LLVMBuildLoad2(
        c->B, c->tp8, LLVMBuildInBoundsGEP2(c->B, c->tp8, c->slots, &idx, 1, ""), "pool");
    LLVMBasicBlockRef par = LLVMAppendBasicBlockInContext(c->C, c->step, "par");
    LLVMBasicBlockRef seq = LLVMAppendBasicBlockInContext(c->C, c->step, "seq");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->C, c->step, "done");
    LLVMBuildCondBr(c->B, LLVMBuildIsNull(c->B, pool, ""), seq, par);
    LLVMPositionBuilderAtEnd(c->B, par);
    LLVMValueRef a[5] = {pool, body, slots8, ci64(c, units), ci64(c, grain)};
    call(c, c->pool_run_ty, c->pool_run, a, 5);
    LLVMBuildBr(c->B, done);
    LLVMPositionBuilderAtEnd(c->B, seq);
    call(c, c->body_ty, body, direct, 3);
    LLVMBuildBr(c->B, done);
    LLVMPositionBuilderAtEnd(c->B, done);
}

/* Where a kernel's loop nest is written: big kernels (VEC_ELEMS elements and more) get an
 * inner function of their own (noalias pointers: the vectorizer needs no overlap checks)
 * and a body the pool can run; small ones are written straight into the step, with the
 * slots' pointers loaded there — fewer functions for LLVM to optimize, and nothing lost: their
 * loops are not vectorized anyway. */
typedef struct kfn {
    bool own;
    LLVMBasicBlockRef step_bb;
    LLVMValueRef inner;
} kfn;

/* Opens the nest's code; *begin, *end: the range of its outer loop ([0, units) inline). */
static void kfn_open(cg *c, nest *n, kfn *f, int64_t elems, int64_t units, LLVMValueRef *begin,
                     LLVMValueRef *end)
{
    f->own = elems >= VEC_ELEMS;
    f->step_bb = LLVMGetInsertBlock(c->B);
    if (f->own) {
        f->inner = inner_fn(c, n, "inner", 2);
        *begin = LLVMGetParam(f->inner, n->nparams);
        *end = LLVMGetParam(f->inner, n->nparams + 1);
        return;
    }
    for (uint32_t i = 0; i < n->nparams; i++) {
        LLVMValueRef idx = ci64(c, n->param_slot[i]);
        n->base[i] = LLVMBuildLoad2(
            c->B, c->tp8, LLVMBuildInBoundsGEP2(c->B, c->tp8, c->slots, &idx, 1, ""), "slot");
    }
    *begin = ci64(c, 0);
    *end = ci64(c, units);
}

/* Closes it: the inner function returns and the step runs its body over [0, units). */
static void kfn_close(cg *c, const nest *n, kfn *f, int64_t elems, int64_t units)
{
    if (!f->own)
        return;
    LLVMBuildRetVoid(c->B);
    LLVMValueRef body = body_fn(c, n, f->inner);
    LLVMPositionBuilderAtEnd(c->B, f->step_bb);
    run_body(c, body, units, elems);
}

/* Offsets of every stream at the multi-index given by idx over dims dims[0..nd) added to
 * from[] (NULL: 0). */
static void offsets_add(cg *c, nest *n, const uint32_t *dims, uint32_t nd, LLVMValueRef *idx,
                        LLVMValueRef *from, LLVMValueRef *to)
{
    for (uint32_t k = 0; k < n->ns; k++) {
        LLVMValueRef o = from ? from[k] : ci64(c, 0);
        for (uint32_t j = 0; j < nd; j++)
            o = add_(c, o, mul_k(c, idx[j], n->s[k].st[dims[j]]));
        to[k] = o;
    }
}

/* Splits the linear index x over dims[0..nd) (row-major) into idx[]. */
static void decompose(cg *c, const nest *n, const uint32_t *dims, uint32_t nd, LLVMValueRef x,
                      LLVMValueRef *idx)
{
    for (uint32_t j = nd; j-- > 0;) {
        int64_t sz = n->size[dims[j]];
        if (j == 0) {
            idx[j] = x;
            break;
        }
        idx[j] = LLVMBuildURem(c->B, x, ci64(c, sz), "");
        x = LLVMBuildUDiv(c->B, x, ci64(c, sz), "");
    }
}

/* ---- element code ------------------------------------------------------------------------- */

static LLVMValueRef elem_ptr(cg *c, nest *n, uint32_t k)
{
    stream *s = &n->s[k];
    LLVMValueRef o = ci64(c, (int64_t)s->at.offset);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(c->B, c->ti8, n->base[s->param], &o, 1, "");
    LLVMTypeRef mt = mem_ty(c, s->dt);
    p = LLVMBuildBitCast(c->B, p, LLVMPointerType(mt, 0), "");
    return LLVMBuildInBoundsGEP2(c->B, mt, p, &n->off[k], 1, "");
}

/* With c->w lanes, a stream steps by 1 or 0 along the vectorized dim (vec_ok): a stride-1
 * stream is one vector access at its offset, a stride-0 one a scalar splatted. */
static bool lane_wide(cg *c, const nest *n, uint32_t k)
{
    return c->w > 1 && n->s[k].st[n->rank - 1] == 1;
}

/* bf16 bits (i16, or a vector of them) to the f32 they stand for (exact). */
static LLVMValueRef bf16_widen(cg *c, LLVMValueRef h)
{
    bool vec = LLVMGetTypeKind(LLVMTypeOf(h)) == LLVMVectorTypeKind;
    unsigned w = vec ? LLVMGetVectorSize(LLVMTypeOf(h)) : 1;
    LLVMTypeRef i32 = vec ? LLVMVectorType(c->ti32, w) : c->ti32;
    LLVMTypeRef f32 = vec ? LLVMVectorType(c->tf32, w) : c->tf32;
    LLVMValueRef sh = LLVMConstInt(c->ti32, 16, 0);
    if (vec) {
        LLVMValueRef e[64];
        for (unsigned i = 0; i < w; i++)
            e[i] = sh;
        sh = LLVMConstVector(e, w);
    }
    return LLVMBuildBitCast(c->B, LLVMBuildShl(c->B, LLVMBuildZExt(c->B, h, i32, ""), sh, ""),
                            f32, "");
}

/* An f32 (c->w lanes) rounded to its top 32 - drop bits, as dtl_f32_round_bits: to nearest,
 * ties to even, NaN made quiet. drop 16: bf16; drop 13: tf32. */
static LLVMValueRef f32_round(cg *c, LLVMValueRef x, unsigned drop)
{
    LLVMTypeRef it = vty(c, c->ti32);
    LLVMValueRef u = LLVMBuildBitCast(c->B, x, it, "");
    LLVMValueRef lsb = LLVMBuildAnd(c->B, LLVMBuildLShr(c->B, u, kint(c, c->ti32, drop), ""),
                                    kint(c, c->ti32, 1), "");
    LLVMValueRef r = LLVMBuildAdd(c->B, LLVMBuildAdd(c->B, u, kint(c, c->ti32, (1ll << (drop - 1)) - 1), ""),
                                  lsb, "");
    LLVMValueRef mask = kint(c, c->ti32, (long long)(int32_t)~((1u << drop) - 1u));
    r = LLVMBuildAnd(c->B, r, mask, "");
    LLVMValueRef q = LLVMBuildAnd(c->B, LLVMBuildOr(c->B, u, kint(c, c->ti32, 0x00400000), ""),
                                  mask, "");
    LLVMValueRef nan = LLVMBuildFCmp(c->B, LLVMRealUNO, x, x, "");
    return LLVMBuildBitCast(c->B, LLVMBuildSelect(c->B, nan, q, r, ""), LLVMTypeOf(x), "");
}

static LLVMValueRef load_stream(cg *c, nest *n, uint32_t k)
{
    stream *s = &n->s[k];
    LLVMTypeRef mt = mem_ty(c, s->dt);
    LLVMValueRef p = elem_ptr(c, n, k), x;
    if (lane_wide(c, n, k)) {
        mt = LLVMVectorType(mt, c->w);
        x = LLVMBuildLoad2(c->B, mt, LLVMBuildBitCast(c->B, p, LLVMPointerType(mt, 0), ""), "");
    } else {
        x = LLVMBuildLoad2(c->B, mt, p, "");
    }
    LLVMSetAlignment(x, (unsigned)dtl_dtype_size(s->dt));
    if (s->dt == DTL_DTYPE_BOOL)
        x = LLVMBuildICmp(c->B, LLVMIntNE, x, LLVMConstNull(LLVMTypeOf(x)), "");
    if (s->dt == DTL_DTYPE_BF16)
        x = bf16_widen(c, x);
    return splat(c, x);
}

static void store_stream(cg *c, nest *n, uint32_t k, LLVMValueRef x)
{
    stream *s = &n->s[k];
    LLVMValueRef p = elem_ptr(c, n, k);
    if (s->dt == DTL_DTYPE_BOOL)
        x = LLVMBuildZExt(c->B, x, vty(c, c->ti8), "");
    if (s->dt == DTL_DTYPE_BF16)   /* rounded already (convert): keep the top half */
        x = LLVMBuildTrunc(c->B, LLVMBuildLShr(c->B, LLVMBuildBitCast(c->B, x, vty(c, c->ti32), ""),
                                               kint(c, c->ti32, 16), ""),
                           vty(c, LLVMInt16TypeInContext(c->C)), "");
    if (lane_wide(c, n, k))
        p = LLVMBuildBitCast(c->B, p, LLVMPointerType(LLVMTypeOf(x), 0), "");
    LLVMValueRef st = LLVMBuildStore(c->B, x, p);
    LLVMSetAlignment(st, (unsigned)dtl_dtype_size(s->dt));
}

static LLVMValueRef emit_op(cg *c, nest *n, dtl_val m, const int32_t *iota_stream);

/* ROW kernels: element c->row_j (c->w lanes) of u's row buffer: stores x, or loads (x NULL). */
static LLVMValueRef spill_access(cg *c, dtl_val u, LLVMValueRef x)
{
    dtl_dtype t = node(c, u)->dtype;
    LLVMTypeRef mt = mem_ty(c, t);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(c->B, mt, c->spill[u], &c->row_j, 1, "");
    LLVMTypeRef vt = c->w > 1 ? LLVMVectorType(mt, c->w) : mt;
    p = LLVMBuildBitCast(c->B, p, LLVMPointerType(vt, 0), "");
    if (x) {
        if (t == DTL_DTYPE_BOOL)
            x = LLVMBuildZExt(c->B, x, vt, "");
        LLVMSetAlignment(LLVMBuildStore(c->B, x, p), (unsigned)dtl_dtype_size(t));
        return x;
    }
    LLVMValueRef v = LLVMBuildLoad2(c->B, vt, p, "");
    LLVMSetAlignment(v, (unsigned)dtl_dtype_size(t));
    if (t == DTL_DTYPE_BOOL)
        v = LLVMBuildICmp(c->B, LLVMIntNE, v, LLVMConstNull(vt), "");
    return v;
}

/* The value of u in the current element: computed, an immediate, or loaded (in a ROW
 * kernel also: computed again). */
static LLVMValueRef operand(cg *c, nest *n, dtl_val u)
{
    if (c->val[u])
        return c->val[u];
    LLVMValueRef x = imm_of(c, u);
    if (x)
        x = splat(c, x);
    else if (c->ld[u])
        x = load_stream(c, n, (uint32_t)c->ld[u] - 1);
    else if (c->rowk && c->spill[u])
        x = spill_access(c, u, NULL);
    else if (c->rowk && c->kp->kernel_of[u] == c->kidx)
        x = emit_op(c, n, u, c->iota_s);
    if (!x) {
        char what[32];
        snprintf(what, sizeof what, "%%%u", u);
        cg_fail(c, DTL_ERR_INTERNAL, "llvm: internal: %s (%s) has no place in its kernel", what,
                dtl_op_name(node(c, u)->op));
        return LLVMGetUndef(vty(c, reg_ty(c, node(c, u)->dtype)));
    }
    c->val[u] = x;
    return x;
}

static LLVMValueRef fcmp_or_nan(cg *c, LLVMRealPredicate p, LLVMValueRef x, LLVMValueRef z)
{
    /* (x p z) || x != x */
    LLVMValueRef uno = LLVMBuildFCmp(c->B, LLVMRealUNO, x, x, "");   /* one instruction per */
    return LLVMBuildOr(c->B, LLVMBuildFCmp(c->B, p, x, z, ""), uno, "");   /* statement */
}

/* e^x for f32 in plain arithmetic, so that loops with exp vectorize (llvm.exp becomes a
 * libm call per element): x = n ln2 + r (|r| <= ln2 / 2, ln2 in two parts), e^r by Cephes'
 * polynomial (within 2 ulp of expf), times 2^n as two powers of two, so that results in the
 * subnormal range come out right. NaN stays NaN (n is computed from 0 then); x > 88.73 gives
 * inf and x < -103.98 gives 0, as expf does. */
static LLVMValueRef exp_f32(cg *c, LLVMValueRef x)
{
    static const double p[6] = {1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1};
    LLVMBuilderRef B = c->B;
    LLVMTypeRef f = c->tf32, vi = vty(c, c->ti32), vf = vty(c, c->tf32);
    LLVMValueRef hi = kreal(c, f, 89.0), lo = kreal(c, f, -104.0);
    LLVMValueRef xc = LLVMBuildSelect(B, LLVMBuildFCmp(B, LLVMRealOGT, x, hi, ""), hi, x, "");
    xc = LLVMBuildSelect(B, LLVMBuildFCmp(B, LLVMRealOLT, xc, lo, ""), lo, xc, "");
    LLVMValueRef xs = LLVMBuildSelect(B, LLVMBuildFCmp(B, LLVMRealUNO, x, x, ""),
                                      kreal(c, f, 0), xc, "");
    LLVMValueRef nf = intr1(c, "llvm.rint",
                            LLVMBuildFMul(B, xs, kreal(c, f, 1.44269504088896341), ""));
    LLVMValueRef r = LLVMBuildFSub(B, xc, LLVMBuildFMul(B, nf, kreal(c, f, 0.693359375), ""), "");
    r = LLVMBuildFSub(B, r, LLVMBuildFMul(B, nf, kreal(c, f, -2.12194440e-4), ""), "");
    LLVMValueRef y = kreal(c, f, p[0]);
    for (int i = 1; i < 6; i++)
        y = LLVMBuildFAdd(B, LLVMBuildFMul(B, y, r, ""), kreal(c, f, p[i]), "");
    y = LLVMBuildFMul(B, y, LLVMBuildFMul(B, r, r, ""), "");
    y = LLVMBuildFAdd(B, LLVMBuildFAdd(B, y, r, ""), kreal(c, f, 1), "");
    LLVMValueRef n = LLVMBuildFPToSI(B, nf, vi, "");
    LLVMValueRef n1 = LLVMBuildAShr(B, n, kint(c, c->ti32, 1), "");
    LLVMValueRef n2 = LLVMBuildSub(B, n, n1, "");
    LLVMValueRef e1 = LLVMBuildShl(B, LLVMBuildAdd(B, n1, kint(c, c->ti32, 127), ""),
                                   kint(c, c->ti32, 23), "");
    LLVMValueRef e2 = LLVMBuildShl(B, LLVMBuildAdd(B, n2, kint(c, c->ti32, 127), ""),
                                   kint(c, c->ti32, 23), "");
    y = LLVMBuildFMul(B, y, LLVMBuildBitCast(B, e1, vf, ""), "");
    return LLVMBuildFMul(B, y, LLVMBuildBitCast(B, e2, vf, ""), "");
}

static LLVMValueRef exp_of(cg *c, LLVMValueRef x, dtl_dtype t)
{
    return t == DTL_DTYPE_F32 ? exp_f32(c, x) : intr1(c, "llvm.exp", x);
}

/* tanh through libm, lane by lane for vectors (no intrinsic exists). */
static LLVMValueRef libm_tanh(cg *c, LLVMValueRef x, dtl_dtype t)
{
    int f = t == DTL_DTYPE_F64;
    if (c->w <= 1)
        return call(c, c->libm1_ty[f], c->ftanh[f], &x, 1);
    LLVMValueRef y = LLVMGetUndef(LLVMTypeOf(x));
    for (unsigned i = 0; i < c->w; i++) {
        LLVMValueRef idx = LLVMConstInt(c->ti32, i, 0);
        LLVMValueRef e = LLVMBuildExtractElement(c->B, x, idx, "");
        y = LLVMBuildInsertElement(c->B, y, call(c, c->libm1_ty[f], c->ftanh[f], &e, 1), idx, "");
    }
    return y;
}

/* The conversion of x (register type of from) to dtype to, with ref's cast rules. */
static LLVMValueRef convert(cg *c, LLVMValueRef x, dtl_dtype from, dtl_dtype to)
{
    if (from == to)
        return x;
    if (to == DTL_DTYPE_BF16)   /* through f32 (ref.h), then rounded */
        return f32_round(c, convert(c, x, from, DTL_DTYPE_F32), 16);
    if (from == DTL_DTYPE_BF16)   /* its register is the exact f32 */
        return convert(c, x, DTL_DTYPE_F32, to);
    LLVMTypeRef tt = vty(c, reg_ty(c, to));
    if (to == DTL_DTYPE_BOOL) {
        if (is_float(from))
            return LLVMBuildFCmp(c->B, LLVMRealUNE, x, LLVMConstNull(LLVMTypeOf(x)), "");
        return LLVMBuildICmp(c->B, LLVMIntNE, x, LLVMConstNull(LLVMTypeOf(x)), "");
    }
    if (from == DTL_DTYPE_BOOL)
        return is_float(to) ? LLVMBuildUIToFP(c->B, x, tt, "") : LLVMBuildZExt(c->B, x, tt, "");
    if (is_float(from) && is_float(to))
        return to == DTL_DTYPE_F64 ? LLVMBuildFPExt(c->B, x, tt, "")
                                   : LLVMBuildFPTrunc(c->B, x, tt, "");
    if (is_float(from)) {
        LLVMTypeRef ty[2] = {tt, LLVMTypeOf(x)};
        return intrinsic(c, "llvm.fptosi.sat", ty, 2, &x, 1);
    }
    if (is_float(to))
        return LLVMBuildSIToFP(c->B, x, tt, "");
    return to == DTL_DTYPE_I64 ? LLVMBuildSExt(c->B, x, tt, "") : LLVMBuildTrunc(c->B, x, tt, "");
}

/* The value of member m (ELEMWISE-style) from its operands. */
static LLVMValueRef emit_op(cg *c, nest *n, dtl_val m, const int32_t *iota_stream)
{
    const dtl_node *nd = node(c, m);
    dtl_dtype t = nd->dtype;
    dtl_dtype it = nd->nin ? node(c, nd->in[0])->dtype : t;
    LLVMBuilderRef B = c->B;
    LLVMValueRef x = NULL, z = NULL, w = NULL;
    if (nd->op == DTL_OP_IOTA) {
        LLVMValueRef i = n->off[iota_stream[m] - 1];
        return convert(c, i, DTL_DTYPE_I64, t);
    }
    if (nd->nin > 0)
        x = operand(c, n, nd->in[0]);
    if (nd->nin > 1)
        z = operand(c, n, nd->in[1]);
    if (nd->nin > 2)
        w = operand(c, n, nd->in[2]);
    bool fl = is_float(it);
    LLVMTypeRef xt = reg_ty(c, it);
    switch (nd->op) {
    case DTL_OP_BROADCAST: return x;
    case DTL_OP_CAST: return convert(c, x, it, t);
    case DTL_OP_NEG:
        return fl ? LLVMBuildFNeg(B, x, "") : LLVMBuildSub(B, kint(c, xt, 0), x, "");
    case DTL_OP_ABS:
        if (fl)
            return intr1(c, "llvm.fabs", x);
        LLVMValueRef neg = LLVMBuildSub(B, kint(c, xt, 0), x, "");   /* a fixed order */
        return LLVMBuildSelect(B, LLVMBuildICmp(B, LLVMIntSLT, x, kint(c, xt, 0), ""), neg, x, "");
    case DTL_OP_EXP: return exp_of(c, x, it);
    case DTL_OP_LOG: return intr1(c, "llvm.log", x);
    case DTL_OP_SQRT: return intr1(c, "llvm.sqrt", x);
    case DTL_OP_SIN: return intr1(c, "llvm.sin", x);
    case DTL_OP_COS: return intr1(c, "llvm.cos", x);
    case DTL_OP_TANH: return libm_tanh(c, x, t);
    case DTL_OP_SIGMOID: {
        LLVMValueRef one = kreal(c, xt, 1);
        LLVMValueRef e = exp_of(c, LLVMBuildFNeg(B, intr1(c, "llvm.fabs", x), ""), it);
        LLVMValueRef d = LLVMBuildFAdd(B, one, e, "");
        LLVMValueRef lo = LLVMBuildFDiv(B, e, d, "");   /* one instruction per statement */
        LLVMValueRef hi = LLVMBuildFDiv(B, one, d, "");
        return LLVMBuildSelect(B, LLVMBuildFCmp(B, LLVMRealOGE, x, kreal(c, xt, 0), ""), hi, lo,
                               "");
    }
    case DTL_OP_RELU:
        if (fl)   /* x > 0 || x != x */
            return LLVMBuildSelect(B, LLVMBuildFCmp(B, LLVMRealUGT, x, kreal(c, xt, 0), ""),
                                   x, kreal(c, xt, 0), "");
        return LLVMBuildSelect(B, LLVMBuildICmp(B, LLVMIntSGT, x, kint(c, xt, 0), ""), x,
                               kint(c, xt, 0), "");
    case DTL_OP_NOT: return LLVMBuildXor(B, x, kint(c, c->ti1, 1), "");
    case DTL_OP_ADD: return fl ? LLVMBuildFAdd(B, x, z, "") : LLVMBuildAdd(B, x, z, "");
    case DTL_OP_SUB: return fl ? LLVMBuildFSub(B, x, z, "") : LLVMBuildSub(B, x, z, "");
    case DTL_OP_MUL: return fl ? LLVMBuildFMul(B, x, z, "") : LLVMBuildMul(B, x, z, "");
    case DTL_OP_DIV: {
        if (fl)
            return LLVMBuildFDiv(B, x, z, "");
        LLVMValueRef zero = kint(c, xt, 0), m1 = kint(c, xt, -1);
        LLVMValueRef is0 = LLVMBuildICmp(B, LLVMIntEQ, z, zero, "");
        LLVMValueRef ism1 = LLVMBuildICmp(B, LLVMIntEQ, z, m1, "");
        LLVMValueRef safe = LLVMBuildSelect(B, LLVMBuildOr(B, is0, ism1, ""),
                                            kint(c, xt, 1), z, "");
        LLVMValueRef q = LLVMBuildSDiv(B, x, safe, "");
        q = LLVMBuildSelect(B, ism1, LLVMBuildSub(B, zero, x, ""), q, "");
        return LLVMBuildSelect(B, is0, zero, q, "");
    }
    case DTL_OP_POW: return intr2(c, "llvm.pow", x, z);
    case DTL_OP_MAX:
        if (fl)
            return LLVMBuildSelect(B, fcmp_or_nan(c, LLVMRealOGT, x, z), x, z, "");
        return LLVMBuildSelect(B, LLVMBuildICmp(B, LLVMIntSGT, x, z, ""), x, z, "");
    case DTL_OP_MIN:
        if (fl)
            return LLVMBuildSelect(B, fcmp_or_nan(c, LLVMRealOLT, x, z), x, z, "");
        return LLVMBuildSelect(B, LLVMBuildICmp(B, LLVMIntSLT, x, z, ""), x, z, "");
    case DTL_OP_LT:
    case DTL_OP_LE:
    case DTL_OP_GT:
    case DTL_OP_GE:
    case DTL_OP_EQ:
    case DTL_OP_NE: {
        static const LLVMRealPredicate fp[] = {LLVMRealOLT, LLVMRealOLE, LLVMRealOGT,
                                               LLVMRealOGE, LLVMRealOEQ, LLVMRealUNE};
        static const LLVMIntPredicate ip[] = {LLVMIntSLT, LLVMIntSLE, LLVMIntSGT,
                                              LLVMIntSGE, LLVMIntEQ, LLVMIntNE};
        static const LLVMIntPredicate up[] = {LLVMIntULT, LLVMIntULE, LLVMIntUGT,
                                              LLVMIntUGE, LLVMIntEQ, LLVMIntNE};
        int o = (int)(nd->op - DTL_OP_LT);
        if (fl)
            return LLVMBuildFCmp(B, fp[o], x, z, "");
        return LLVMBuildICmp(B, it == DTL_DTYPE_BOOL ? up[o] : ip[o], x, z, "");
    }
    case DTL_OP_AND: return LLVMBuildAnd(B, x, z, "");
    case DTL_OP_OR: return LLVMBuildOr(B, x, z, "");
    case DTL_OP_WHERE: return LLVMBuildSelect(B, x, z, w, "");
    default:
        cg_fail(c, DTL_ERR_USAGE, "llvm: no elementwise code for %s%s", dtl_op_name(nd->op), "");
        return LLVMGetUndef(vty(c, reg_ty(c, t)));
    }
}

/* Emits members[from, to) of k for the current element (offsets in n->off), storing the
 * ones with a store stream. The per-element value cache is reset first; then `first` (when
 * not NONE) is loaded before anything is stored. */
static void emit_members(cg *c, nest *n, const dtl_kernel *k, uint32_t from, uint32_t to,
                         const int32_t *iota_stream, dtl_val first)
{
    for (uint32_t i = 0; i < k->nmembers; i++)
        c->val[k->members[i]] = NULL;
    for (uint32_t i = 0; i < k->nins; i++)
        c->val[k->ins[i]] = NULL;
    if (first != DTL_VAL_NONE)
        operand(c, n, first);
    for (uint32_t i = from; i < to; i++) {
        dtl_val m = k->members[i];
        LLVMValueRef v = emit_op(c, n, m, iota_stream);
        c->val[m] = v;
        if (c->stv[m])
            store_stream(c, n, (uint32_t)c->stv[m] - 1, v);
    }
}

/* Streams of a kernel's externals (bcast to shape), stored members, iotas. Members in
 * [from, to) are the ones computed per element. skip: a member never stored (a root). */
static void nest_streams(cg *c, nest *n, const dtl_kernel *k, uint32_t rank,
                         const int64_t *shape, uint32_t from, uint32_t to, int32_t *iota_stream)
{
    for (uint32_t i = from; i < to; i++) {
        dtl_val m = k->members[i];
        const dtl_node *nd = node(c, m);
        for (uint32_t j = 0; j < nd->nin; j++) {
            dtl_val u = nd->in[j];
            if (c->kp->kernel_of[u] == c->kidx || c->ld[u] || imm_of(c, u))
                continue;
            const dtl_node *un = node(c, u);
            stream *s = nest_add(c, n, ST_LOAD, u, NULL);
            bcast_strides(un->rank, un->shape, rank, shape, s->st);
            c->ld[u] = (int32_t)n->ns;
        }
        if (nd->op == DTL_OP_IOTA) {
            stream *s = nest_add(c, n, ST_IOTA, m, NULL);
            for (uint32_t d = 0; d < rank; d++)
                s->st[d] = d == nd->attr.axis;
            iota_stream[m] = (int32_t)n->ns;
        }
    }
    for (uint32_t o = 0; o < k->nouts; o++) {
        dtl_val m = k->outs[o];
        bool in_range = false;
        for (uint32_t i = from; i < to; i++)
            in_range = in_range || k->members[i] == m;
        if (!in_range)
            continue;
        stream *s = nest_add(c, n, ST_STORE, m, NULL);
        bcast_strides(rank, shape, rank, shape, s->st);
        c->stv[m] = (int32_t)n->ns;
    }
}

static void nest_reset(cg *c, const nest *n, int32_t *iota_stream)
{
    for (uint32_t k = 0; k < n->ns; k++) {
        c->ld[n->s[k].v] = 0;
        c->stv[n->s[k].v] = 0;
        iota_stream[n->s[k].v] = 0;
        c->val[n->s[k].v] = NULL;
    }
}

/* ---- ELEMWISE ----------------------------------------------------------------------------- */

static void gen_elemwise(cg *c, const dtl_kernel *k, int32_t *iota_stream)
{
    if (numel(k->rank, k->shape) == 0)
        return;
    nest n;
    nest_init(&n, k->rank, k->shape, 0);
    nest_streams(c, &n, k, k->rank, k->shape, 0, k->nmembers, iota_stream);
    nest_collapse(&n);
    nest_params(c, &n);
    int64_t elems = numel(n.rank, n.size);
    int64_t units = n.rank == 1 ? n.size[0] : elems / n.size[n.rank - 1];
    c->novec = elems < VEC_ELEMS || n.size[n.rank - 1] < VEC_INNER;
    kfn f;
    LLVMValueRef begin, end;
    kfn_open(c, &n, &f, elems, units, &begin, &end);
    lp outer, in;
    LLVMValueRef r = loop_open(c, &outer, begin, end);
    if (n.rank == 1) {
        for (uint32_t s = 0; s < n.ns; s++)
            n.off[s] = mul_k(c, r, n.s[s].st[0]);
    } else {
        uint32_t dims[DTL_MAX_RANK];
        LLVMValueRef idx[DTL_MAX_RANK], *base = n.tmp1;
        for (uint32_t d = 0; d + 1 < n.rank; d++)
            dims[d] = d;
        decompose(c, &n, dims, n.rank - 1, r, idx);
        offsets_add(c, &n, dims, n.rank - 1, idx, NULL, base);
        LLVMValueRef j = loop_open(c, &in, ci64(c, 0), ci64(c, n.size[n.rank - 1]));
        uint32_t last = n.rank - 1;
        offsets_add(c, &n, &last, 1, &j, base, n.off);
    }
    emit_members(c, &n, k, 0, k->nmembers, iota_stream, DTL_VAL_NONE);
    if (n.rank > 1)
        loop_close(c, &in);
    loop_close(c, &outer);
    kfn_close(c, &n, &f, elems, units);
    nest_reset(c, &n, iota_stream);
}

/* ---- REDUCE ------------------------------------------------------------------------------- */

/* The accumulator's scalar type (with c->w lanes: vty of it). */
static LLVMTypeRef acc_ty(cg *c, const dtl_node *root)
{
    if (root->op == DTL_OP_SUM && is_float(root->dtype))
        return c->tf64;
    return reg_ty(c, root->dtype);
}

static LLVMValueRef acc_init(cg *c, const dtl_node *root)
{
    LLVMTypeRef t = acc_ty(c, root);
    if (root->op == DTL_OP_SUM)
        return is_float(root->dtype) ? kreal(c, t, 0) : kint(c, t, 0);
    switch (root->dtype) {
    case DTL_DTYPE_F32:
    case DTL_DTYPE_F64: return kreal(c, t, -INFINITY);
    case DTL_DTYPE_I32: return kint(c, t, INT32_MIN);
    default: return kint(c, t, INT64_MIN);
    }
}

static LLVMValueRef acc_add(cg *c, const dtl_node *root, LLVMValueRef acc, LLVMValueRef x)
{
    bool fl = is_float(root->dtype);
    if (root->op == DTL_OP_SUM) {
        if (!fl)
            return LLVMBuildAdd(c->B, acc, x, "");
        if (root->dtype == DTL_DTYPE_F32)
            x = LLVMBuildFPExt(c->B, x, vty(c, c->tf64), "");
        return LLVMBuildFAdd(c->B, acc, x, "");
    }
    LLVMValueRef gt = fl ? fcmp_or_nan(c, LLVMRealOGT, x, acc)
                         : LLVMBuildICmp(c->B, LLVMIntSGT, x, acc, "");
    return LLVMBuildSelect(c->B, gt, x, acc, "");
}

/* acc and b, two partial results (accumulator type, scalars), combined. */
static LLVMValueRef acc_merge(cg *c, const dtl_node *root, LLVMValueRef acc, LLVMValueRef b)
{
    bool fl = is_float(root->dtype);
    if (root->op == DTL_OP_SUM)
        return fl ? LLVMBuildFAdd(c->B, acc, b, "") : LLVMBuildAdd(c->B, acc, b, "");
    LLVMValueRef gt = fl ? fcmp_or_nan(c, LLVMRealOGT, b, acc)
                         : LLVMBuildICmp(c->B, LLVMIntSGT, b, acc, "");
    return LLVMBuildSelect(c->B, gt, b, acc, "");
}

/* Lanes for a row reduction's innermost loop written as explicit vector code (the loop
 * vectorizer leaves float reductions alone: it may not reassociate them): float sums and
 * maxes over at least two vectors per row, whose streams all step by 0 or 1 along that loop,
 * with no iota in the prologue. 0: scalar code. */
static unsigned row_lanes(const nest *n, const dtl_node *root)
{
    if (!is_float(root->dtype))
        return 0;
    unsigned w = root->dtype == DTL_DTYPE_F32 ? 8 : 4;
    uint32_t last = n->rank - 1;
    if (n->size[last] < 2 * (int64_t)w)
        return 0;
    for (uint32_t k = 0; k < n->ns; k++) {
        if (n->s[k].kind == ST_IOTA)
            return 0;
        if (n->s[k].kind != ST_ACC && n->s[k].st[last] != 0 && n->s[k].st[last] != 1)
            return 0;
    }
    return w;
}

static LLVMValueRef acc_result(cg *c, const dtl_node *root, LLVMValueRef acc)
{
    if (root->op == DTL_OP_SUM && root->dtype == DTL_DTYPE_F32)
        return LLVMBuildFPTrunc(c->B, acc, c->tf32, "");
    return acc;
}

static void gen_reduce(cg *c, const dtl_kernel *k, int32_t *iota_stream)
{
    const dtl_node *root = node(c, k->root);
    dtl_val x = root->in[0];
    const dtl_node *xn = node(c, x);
    uint32_t nprol = k->nmembers - 1;   /* the root is the last member */
    int64_t out_n = (int64_t)dtl_node_numel(root), in_n = numel(xn->rank, xn->shape);
    if (out_n == 0)
        return;
    nest n;
    nest_init(&n, xn->rank, xn->shape, root->attr.red.axes);
    nest_streams(c, &n, k, xn->rank, xn->shape, 0, nprol, iota_stream);
    if (nprol == 0 && !c->ld[x] && !imm_of(c, x)) {   /* the root reads an external */
        stream *s = nest_add(c, &n, ST_LOAD, x, NULL);
        bcast_strides(xn->rank, xn->shape, xn->rank, xn->shape, s->st);
        c->ld[x] = (int32_t)n.ns;
    }
    /* The result: kept dims row-major, reduced dims stride 0. */
    stream *acc_s = nest_add(c, &n, ST_ACC, k->root, NULL);
    uint32_t acc_k = n.ns - 1;
    {
        int64_t s = 1;
        for (uint32_t d = xn->rank; d-- > 0;) {
            acc_s->st[d] = n.red[d] ? 0 : s;
            s *= n.red[d] ? 1 : xn->shape[d];
        }
    }
    nest_collapse(&n);
    nest_params(c, &n);

    uint32_t kept[DTL_MAX_RANK], red[DTL_MAX_RANK], nk = 0, nr = 0;
    for (uint32_t d = 0; d < n.rank; d++) {
        if (n.red[d])
            red[nr++] = d;
        else
            kept[nk++] = d;
    }
    uint32_t last = n.rank - 1;
    bool row = n.red[last];
    c->novec = in_n < VEC_ELEMS || n.size[last] < VEC_INNER;
    LLVMTypeRef at = acc_ty(c, root);
    /* The parallel loop: over output elements (row), or over (outer kept index, chunk of
     * the last dim) pairs (column). */
    int64_t S = n.size[last], ch = S < COL_CHUNK ? S : COL_CHUNK;
    int64_t nch = ch > 0 ? (S + ch - 1) / ch : 0;
    int64_t units = 1;
    for (uint32_t j = 0; j + (row ? 0 : 1) < nk; j++)
        units *= n.size[kept[j]];
    if (!row)
        units *= nch;
    if (in_n == 0)
        units = 1;
    int64_t elems = in_n > out_n ? in_n : out_n;
    kfn f;
    LLVMValueRef begin, end;
    kfn_open(c, &n, &f, elems, units, &begin, &end);
    LLVMValueRef *base = n.tmp1, *base2 = n.tmp2, idx[DTL_MAX_RANK];
    if (in_n == 0) {
        /* Sums over an empty axis: zeros (reduce_max never reduces an empty axis). */
        lp l;
        LLVMValueRef o = loop_open(c, &l, ci64(c, 0), ci64(c, out_n));
        for (uint32_t s = 0; s < n.ns; s++)
            n.off[s] = o;
        store_stream(c, &n, acc_k, acc_result(c, root, acc_init(c, root)));
        loop_close(c, &l);
    } else if (row) {
        /* Per output: the innermost reduced dim in vectors of W lanes (an accumulator of W
         * lanes, folded into the scalar one at the end), then its remainder one by one. */
        unsigned W = row_lanes(&n, root);
        int64_t S = n.size[last], nv = W ? S / W : 0;
        LLVMValueRef acc = entry_alloca(c, at, "acc");
        LLVMValueRef accv = W ? entry_alloca(c, LLVMVectorType(at, W), "accv") : NULL;
        lp lo, lr, lj, lq;
        LLVMValueRef o = loop_open(c, &lo, begin, end);
        decompose(c, &n, kept, nk, o, idx);
        offsets_add(c, &n, kept, nk, idx, NULL, base);
        LLVMBuildStore(c->B, acc_init(c, root), acc);
        if (W) {
            c->w = W;
            LLVMBuildStore(c->B, acc_init(c, root), accv);
            c->w = 1;
        }
        int64_t rout = 1;
        for (uint32_t j = 0; j + 1 < nr; j++)
            rout *= n.size[red[j]];
        LLVMValueRef rr = loop_open(c, &lr, ci64(c, 0), ci64(c, rout));
        decompose(c, &n, red, nr - 1, rr, idx);
        offsets_add(c, &n, red, nr - 1, idx, base, base2);
        if (nv > 0) {
            bool nv_saved = c->novec;
            c->novec = true;   /* already vector code */
            LLVMValueRef q = loop_open(c, &lq, ci64(c, 0), ci64(c, nv));
            LLVMValueRef qw = LLVMBuildMul(c->B, q, ci64(c, W), "");
            offsets_add(c, &n, &last, 1, &qw, base2, n.off);
            c->w = W;
            emit_members(c, &n, k, 0, nprol, iota_stream, DTL_VAL_NONE);
            LLVMValueRef v = operand(c, &n, x);
            LLVMTypeRef vt = LLVMVectorType(at, W);
            LLVMBuildStore(c->B, acc_add(c, root, LLVMBuildLoad2(c->B, vt, accv, ""), v), accv);
            c->w = 1;
            loop_close(c, &lq);
            c->novec = nv_saved;
        }
        LLVMValueRef j = loop_open(c, &lj, ci64(c, nv * (int64_t)W), ci64(c, S));
        offsets_add(c, &n, &last, 1, &j, base2, n.off);
        emit_members(c, &n, k, 0, nprol, iota_stream, DTL_VAL_NONE);
        LLVMValueRef v = operand(c, &n, x);
        LLVMBuildStore(c->B, acc_add(c, root, LLVMBuildLoad2(c->B, at, acc, ""), v), acc);
        loop_close(c, &lj);
        loop_close(c, &lr);
        LLVMValueRef a = LLVMBuildLoad2(c->B, at, acc, "");
        if (nv > 0) {
            LLVMValueRef av = LLVMBuildLoad2(c->B, LLVMVectorType(at, W), accv, "");
            for (unsigned i = 0; i < W; i++)
                a = acc_merge(c, root, a,
                              LLVMBuildExtractElement(c->B, av, LLVMConstInt(c->ti32, i, 0), ""));
        }
        n.off[acc_k] = base[acc_k];
        store_stream(c, &n, acc_k, acc_result(c, root, a));
        loop_close(c, &lo);
    } else {
        LLVMValueRef acc = entry_alloca(c, LLVMArrayType(at, (unsigned)ch), "acc");
        lp lu, li, lr, lj, lo;
        LLVMValueRef u = loop_open(c, &lu, begin, end);
        LLVMValueRef o = LLVMBuildUDiv(c->B, u, ci64(c, nch), "");
        LLVMValueRef j0 = LLVMBuildMul(c->B, LLVMBuildURem(c->B, u, ci64(c, nch), ""),
                                       ci64(c, ch), "");
        LLVMValueRef left = LLVMBuildSub(c->B, ci64(c, S), j0, "");
        LLVMValueRef jn = LLVMBuildSelect(
            c->B, LLVMBuildICmp(c->B, LLVMIntSLT, left, ci64(c, ch), ""), left, ci64(c, ch), "");
        decompose(c, &n, kept, nk - 1, o, idx);
        offsets_add(c, &n, kept, nk - 1, idx, NULL, base);
        LLVMValueRef zero = ci64(c, 0);
        LLVMValueRef ji = loop_open(c, &li, zero, jn);
        LLVMValueRef gi[2] = {zero, ji};
        LLVMBuildStore(c->B, acc_init(c, root),
                       LLVMBuildInBoundsGEP2(c->B, LLVMArrayType(at, (unsigned)ch), acc, gi, 2, ""));
        loop_close(c, &li);
        int64_t rall = 1;
        for (uint32_t j = 0; j < nr; j++)
            rall *= n.size[red[j]];
        LLVMValueRef rr = loop_open(c, &lr, zero, ci64(c, rall));
        decompose(c, &n, red, nr, rr, idx);
        offsets_add(c, &n, red, nr, idx, base, base2);
        LLVMValueRef j = loop_open(c, &lj, zero, jn);
        LLVMValueRef jj = LLVMBuildAdd(c->B, j0, j, "");
        offsets_add(c, &n, &last, 1, &jj, base2, n.off);
        emit_members(c, &n, k, 0, nprol, iota_stream, DTL_VAL_NONE);
        LLVMValueRef v = operand(c, &n, x);
        LLVMValueRef gj[2] = {zero, j};
        LLVMValueRef pa = LLVMBuildInBoundsGEP2(c->B, LLVMArrayType(at, (unsigned)ch), acc, gj, 2, "");
        LLVMBuildStore(c->B, acc_add(c, root, LLVMBuildLoad2(c->B, at, pa, ""), v), pa);
        loop_close(c, &lj);
        loop_close(c, &lr);
        LLVMValueRef jo = loop_open(c, &lo, zero, jn);
        LLVMValueRef go[2] = {zero, jo};
        pa = LLVMBuildInBoundsGEP2(c->B, LLVMArrayType(at, (unsigned)ch), acc, go, 2, "");
        LLVMValueRef jjo = LLVMBuildAdd(c->B, j0, jo, "");
        n.off[acc_k] = add_(c, base[acc_k], mul_k(c, jjo, n.s[acc_k].st[last]));
        store_stream(c, &n, acc_k, acc_result(c, root, LLVMBuildLoad2(c->B, at, pa, "")));
        loop_close(c, &lo);
        loop_close(c, &lu);
    }
    kfn_close(c, &n, &f, elems, units);
    nest_reset(c, &n, iota_stream);
}

/* ---- ROW ---------------------------------------------------------------------------------- */

/* What gen_row knows of a ROW kernel's members (index i in k->members). */
typedef struct rowk {
    const dtl_kernel *k;
    uint32_t *pass;             /* dtl_row_passes */
    bool *row, *red;            /* a row value (not a reduction); a reduction */
    LLVMValueRef *rowv;         /* a row value's scalar in the current row, once computed */
    LLVMValueRef *acc, *accv;   /* a reduction's accumulators (allocas) */
} rowk;

/* The members of pass p at the current element (offsets in n->off, c->w lanes): full
 * members computed (and stored when outs), reductions accumulated. */
static void row_elem(cg *c, nest *n, const rowk *R, uint32_t p)
{
    const dtl_kernel *k = R->k;
    for (uint32_t i = 0; i < k->nins; i++)
        c->val[k->ins[i]] = NULL;
    for (uint32_t i = 0; i < k->nmembers; i++)
        c->val[k->members[i]] = R->rowv[i] ? splat(c, R->rowv[i]) : NULL;
    for (uint32_t i = 0; i < k->nmembers; i++) {
        dtl_val m = k->members[i];
        if (R->row[i] || R->pass[i] != p)
            continue;
        if (R->red[i]) {
            const dtl_node *root = node(c, m);
            LLVMValueRef x = operand(c, n, root->in[0]);
            LLVMValueRef a = c->w > 1 ? R->accv[i] : R->acc[i];
            LLVMTypeRef at = vty(c, acc_ty(c, root));
            LLVMBuildStore(c->B, acc_add(c, root, LLVMBuildLoad2(c->B, at, a, ""), x), a);
            continue;
        }
        LLVMValueRef v = emit_op(c, n, m, c->iota_s);
        c->val[m] = v;
        if (c->stv[m])
            store_stream(c, n, (uint32_t)c->stv[m] - 1, v);
        if (c->spill[m])
            spill_access(c, m, v);
    }
}

/* The row values computed before pass p's loop (p = passes: after the last), one scalar
 * each per row (offsets of the row's first element in n->off). */
static void row_stage(cg *c, nest *n, const rowk *R, uint32_t p)
{
    const dtl_kernel *k = R->k;
    for (uint32_t i = 0; i < k->nins; i++)
        c->val[k->ins[i]] = NULL;
    for (uint32_t i = 0; i < k->nmembers; i++)
        c->val[k->members[i]] = R->rowv[i];
    for (uint32_t i = 0; i < k->nmembers; i++) {
        dtl_val m = k->members[i];
        if (!R->row[i] || R->pass[i] != p)
            continue;
        LLVMValueRef v = emit_op(c, n, m, c->iota_s);
        c->val[m] = R->rowv[i] = v;
        if (c->stv[m])
            store_stream(c, n, (uint32_t)c->stv[m] - 1, v);
    }
}

/* A ROW kernel (fuse.h): parallel over rows; per row, its passes in order, each a loop over
 * the row (W lanes at a time, then the remainder) while the row stays in L1 — memory sees
 * the row read once and the outs written once. A reduction's scalar becomes a row value at
 * the end of its pass; a full member of an earlier pass is reloaded from where it was
 * stored, or computed again. */
static void gen_row(cg *c, const dtl_kernel *k, int32_t *iota_stream)
{
    uint32_t nm = k->nmembers, rank = k->rank;
    int64_t total = numel(rank, k->shape);
    if (total == 0)
        return;
    rowk R = {k, dtl_arena_array(c->A, nm + 1, sizeof(uint32_t)),
              dtl_arena_array(c->A, nm + 1, sizeof(bool)), dtl_arena_array(c->A, nm + 1, sizeof(bool)),
              dtl_arena_array(c->A, nm + 1, sizeof(LLVMValueRef)),
              dtl_arena_array(c->A, nm + 1, sizeof(LLVMValueRef)),
              dtl_arena_array(c->A, nm + 1, sizeof(LLVMValueRef))};
    uint32_t np = dtl_row_passes(c->kp, k, R.pass);
    bool f64 = false, ints = false;
    for (uint32_t i = 0; i < nm; i++) {
        const dtl_node *nd = node(c, k->members[i]);
        R.red[i] = nd->op == DTL_OP_SUM || nd->op == DTL_OP_REDUCE_MAX;
        R.row[i] = !R.red[i] && nd->shape[nd->rank - 1] == 1;
        f64 = f64 || (R.red[i] && nd->dtype == DTL_DTYPE_F64);
        ints = ints || (R.red[i] && !is_float(nd->dtype));
    }
    /* Streams: externals broadcast to the loop, outs at their own shape's index (a row
     * value: stride 0 along the row), and every full out also as a load, for later passes. */
    nest n;
    nest_init(&n, rank, k->shape, 1u << (rank - 1));
    for (uint32_t i = 0; i < nm; i++) {
        const dtl_node *nd = node(c, k->members[i]);
        for (uint32_t j = 0; j < nd->nin; j++) {
            dtl_val u = nd->in[j];
            if (c->kp->kernel_of[u] == c->kidx || c->ld[u] || imm_of(c, u))
                continue;
            const dtl_node *un = node(c, u);
            stream *s = nest_add(c, &n, ST_LOAD, u, NULL);
            bcast_strides(un->rank, un->shape, rank, k->shape, s->st);
            c->ld[u] = (int32_t)n.ns;
        }
    }
    for (uint32_t o = 0; o < k->nouts; o++) {
        dtl_val m = k->outs[o];
        const dtl_node *on = node(c, m);
        stream *s = nest_add(c, &n, ST_STORE, m, NULL);
        bcast_strides(on->rank, on->shape, rank, k->shape, s->st);
        c->stv[m] = (int32_t)n.ns;
        if (on->shape[on->rank - 1] != 1) {
            s = nest_add(c, &n, ST_LOAD, m, NULL);
            bcast_strides(on->rank, on->shape, rank, k->shape, s->st);
            c->ld[m] = (int32_t)n.ns;
        }
    }
    nest_collapse(&n);
    nest_params(c, &n);
    uint32_t last = n.rank - 1;
    int64_t L = n.size[last], rows = total / L;
    unsigned W = ints ? 0 : f64 ? 4 : 8;
    if (L < 2 * (int64_t)W)
        W = 0;
    for (uint32_t s = 0; s < n.ns && W; s++)
        if (n.s[s].st[last] != 0 && n.s[s].st[last] != 1)
            W = 0;
    int64_t nv = W ? L / W : 0;
    bool rowk_saved = c->rowk;
    c->rowk = true;
    c->iota_s = iota_stream;
    c->novec = true;   /* explicit vector code, and short remainders */
    kfn f;
    LLVMValueRef begin, end;
    kfn_open(c, &n, &f, total, rows, &begin, &end);
    for (uint32_t i = 0; i < nm; i++)
        if (R.red[i]) {
            LLVMTypeRef at = acc_ty(c, node(c, k->members[i]));
            R.acc[i] = entry_alloca(c, at, "acc");
            if (W)
                R.accv[i] = entry_alloca(c, LLVMVectorType(at, W), "accv");
        }
    /* Row buffers: a full member that is no out but is read in a later pass is kept in a
     * buffer of one row on the stack (up to SPILL_BYTES in all; beyond, computed again). */
    uint64_t spilled = 0;
    for (uint32_t i = 0; i < nm; i++) {
        dtl_val m = k->members[i];
        if (R.row[i] || R.red[i] || c->stv[m])
            continue;
        bool later = false;
        for (uint32_t j = i + 1; j < nm && !later; j++) {
            const dtl_node *nd = node(c, k->members[j]);
            for (uint32_t t = 0; t < nd->nin; t++)
                later = later || (nd->in[t] == m && R.pass[j] > R.pass[i]);
        }
        uint64_t bytes = (uint64_t)L * dtl_dtype_size(node(c, m)->dtype);
        if (!later || spilled + bytes > SPILL_BYTES)
            continue;
        spilled += bytes;
        c->spill[m] = entry_alloca(c, LLVMArrayType(mem_ty(c, node(c, m)->dtype), (unsigned)L),
                                   "row");
        LLVMSetAlignment(c->spill[m], ALIGN);
        c->spill[m] = LLVMBuildBitCast(c->B, c->spill[m],
                                       LLVMPointerType(mem_ty(c, node(c, m)->dtype), 0), "");
    }
    LLVMValueRef *base = n.tmp1, idx[DTL_MAX_RANK];
    uint32_t kept[DTL_MAX_RANK];
    for (uint32_t d = 0; d < last; d++)
        kept[d] = d;
    lp lo;
    LLVMValueRef o = loop_open(c, &lo, begin, end);
    if (last > 0) {
        decompose(c, &n, kept, last, o, idx);
        offsets_add(c, &n, kept, last, idx, NULL, base);
    } else {
        for (uint32_t s = 0; s < n.ns; s++)
            base[s] = ci64(c, 0);
    }
    for (uint32_t i = 0; i < nm; i++) {
        R.rowv[i] = NULL;
        if (!R.red[i])
            continue;
        const dtl_node *root = node(c, k->members[i]);
        LLVMBuildStore(c->B, acc_init(c, root), R.acc[i]);
        if (W) {
            c->w = W;
            LLVMBuildStore(c->B, acc_init(c, root), R.accv[i]);
            c->w = 1;
        }
    }
    for (uint32_t p = 0; p <= np; p++) {
        for (uint32_t s = 0; s < n.ns; s++)
            n.off[s] = base[s];
        row_stage(c, &n, &R, p);
        if (p == np)
            break;
        lp lq, lj;
        if (nv > 0) {
            LLVMValueRef q = loop_open(c, &lq, ci64(c, 0), ci64(c, nv));
            LLVMValueRef qw = LLVMBuildMul(c->B, q, ci64(c, W), "");
            offsets_add(c, &n, &last, 1, &qw, base, n.off);
            c->row_j = qw;
            c->w = W;
            row_elem(c, &n, &R, p);
            c->w = 1;
            loop_close(c, &lq);
        }
        if (nv * (int64_t)W < L) {
            LLVMValueRef j = loop_open(c, &lj, ci64(c, nv * (int64_t)W), ci64(c, L));
            offsets_add(c, &n, &last, 1, &j, base, n.off);
            c->row_j = j;
            row_elem(c, &n, &R, p);
            loop_close(c, &lj);
        }
        /* The reductions of this pass become row values. */
        for (uint32_t s = 0; s < n.ns; s++)
            n.off[s] = base[s];
        for (uint32_t i = 0; i < nm; i++) {
            if (!R.red[i] || R.pass[i] != p)
                continue;
            dtl_val m = k->members[i];
            const dtl_node *root = node(c, m);
            LLVMTypeRef at = acc_ty(c, root);
            LLVMValueRef a = LLVMBuildLoad2(c->B, at, R.acc[i], "");
            if (nv > 0) {
                LLVMValueRef av = LLVMBuildLoad2(c->B, LLVMVectorType(at, W), R.accv[i], "");
                for (unsigned l = 0; l < W; l++)
                    a = acc_merge(c, root, a,
                                  LLVMBuildExtractElement(c->B, av, LLVMConstInt(c->ti32, l, 0), ""));
            }
            R.rowv[i] = acc_result(c, root, a);
            if (c->stv[m])
                store_stream(c, &n, (uint32_t)c->stv[m] - 1, R.rowv[i]);
        }
    }
    loop_close(c, &lo);
    kfn_close(c, &n, &f, total, rows);
    for (uint32_t i = 0; i < nm; i++)
        c->val[k->members[i]] = c->spill[k->members[i]] = NULL;
    for (uint32_t i = 0; i < k->nins; i++)
        c->val[k->ins[i]] = NULL;
    nest_reset(c, &n, iota_stream);
    c->rowk = rowk_saved;
}

/* ---- MATMUL ------------------------------------------------------------------------------- */

static LLVMValueRef slot_ptr(cg *c, dtl_llvm_place p);

/* Mixed precision on the CPU is emulated (docs/training.md): a bf16 operand is widened to
 * f32, an f32 operand of a tf32 product rounded to TF32, into scratch at the top of the
 * arena, and the f32 gemm reads that. Returns the scratch's place. */
static dtl_llvm_place mm_operand_f32(cg *c, dtl_val v, bool tf32)
{
    const dtl_node *x = node(c, v);
    int64_t count = numel(x->rank, x->shape);
    dtl_llvm_place dst = {DTL_LLVM_SLOT_ARENA, c->top};
    c->top = round_up(c->top + (uint64_t)count * sizeof(float));
    LLVMTypeRef st = mem_ty(c, x->dtype);
    LLVMValueRef src = LLVMBuildBitCast(c->B, slot_ptr(c, where(c, v)), LLVMPointerType(st, 0), "");
    LLVMValueRef dp = LLVMBuildBitCast(c->B, slot_ptr(c, dst), LLVMPointerType(c->tf32, 0), "");
    unsigned w = c->w;
    bool novec = c->novec;
    c->w = 1;
    c->novec = count < VEC_ELEMS;
    lp l;
    LLVMValueRef i = loop_open(c, &l, ci64(c, 0), ci64(c, count));
    LLVMValueRef e = LLVMBuildLoad2(c->B, st, LLVMBuildInBoundsGEP2(c->B, st, src, &i, 1, ""), "");
    e = tf32 ? f32_round(c, e, 13) : bf16_widen(c, e);
    LLVMBuildStore(c->B, e, LLVMBuildInBoundsGEP2(c->B, c->tf32, dp, &i, 1, ""));
    loop_close(c, &l);
    c->w = w;
    c->novec = novec;
    return dst;
}

static void gen_matmul(cg *c, const dtl_kernel *k, int32_t *iota_stream)
{
    const dtl_node *root = node(c, k->root);
    const dtl_node *an = node(c, k->matmul_a), *bn = node(c, k->matmul_b);
    uint32_t R = root->rank, rb = R - 2;
    int64_t m = root->shape[rb], nn = root->shape[rb + 1];
    int64_t kk = k->trans_a ? an->shape[an->rank - 2] : an->shape[an->rank - 1];
    if (m == 0 || nn == 0 || numel(R, root->shape) == 0)
        return;
    int f64 = root->dtype == DTL_DTYPE_F64;
    size_t esz = dtl_dtype_size(root->dtype);
    uint64_t cbytes = value_bytes(root);

    /* Where gemm writes C: the root's own place when it is kept; else an epilogue output
     * that no operand of this kernel lives in (the epilogue reads C[i][j] before writing
     * there); else scratch at the top of the arena. */
    dtl_llvm_place cp = {UINT32_MAX, 0};
    bool root_out = false;
    for (uint32_t o = 0; o < k->nouts; o++)
        root_out = root_out || k->outs[o] == k->root;
    if (root_out) {
        cp = where(c, k->root);
    } else {
        for (uint32_t o = 0; o < k->nouts && cp.slot == UINT32_MAX; o++) {
            const dtl_node *on = node(c, k->outs[o]);
            if (on->dtype != root->dtype)
                continue;
            dtl_llvm_place p = where(c, k->outs[o]);
            bool clash = false;
            for (uint32_t i = 0; i < k->nins; i++)
                clash = clash || overlap(p, cbytes, where(c, k->ins[i]),
                                         value_bytes(node(c, k->ins[i])));
            if (!clash)
                cp = p;
        }
        if (cp.slot == UINT32_MAX) {
            cp = (dtl_llvm_place){DTL_LLVM_SLOT_ARENA, c->top};
            c->top = round_up(c->top + cbytes);
        }
    }

    /* The epilogue: members after the root, over the root's shape, per block of C. */
    LLVMValueRef epi = NULL;
    nest n;
    if (k->nmembers > 1) {
        LLVMBasicBlockRef step_bb = LLVMGetInsertBlock(c->B);
        nest_init(&n, R, root->shape, 0);
        c->novec = numel(R, root->shape) < VEC_ELEMS || nn < VEC_INNER;
        uint32_t ri = 0;
        while (k->members[ri] != k->root)
            ri++;
        nest_streams(c, &n, k, R, root->shape, ri + 1, k->nmembers, iota_stream);
        stream *s = nest_add(c, &n, ST_LOAD, k->root, &cp);   /* C, as gemm left it */
        bcast_strides(R, root->shape, R, root->shape, s->st);
        c->ld[k->root] = (int32_t)n.ns;
        nest_params(c, &n);
        LLVMValueRef inner = inner_fn(c, &n, "epi_inner", 5);
        LLVMValueRef t = LLVMGetParam(inner, n.nparams);
        LLVMValueRef i0 = LLVMGetParam(inner, n.nparams + 1), i1 = LLVMGetParam(inner, n.nparams + 2);
        LLVMValueRef j0 = LLVMGetParam(inner, n.nparams + 3), j1 = LLVMGetParam(inner, n.nparams + 4);
        uint32_t dims[DTL_MAX_RANK];
        LLVMValueRef idx[DTL_MAX_RANK], *base = n.tmp1, *base2 = n.tmp2;
        for (uint32_t d = 0; d < rb; d++)
            dims[d] = d;
        decompose(c, &n, dims, rb, t, idx);
        offsets_add(c, &n, dims, rb, idx, NULL, base);
        lp li, lj;
        uint32_t di = rb, dj = rb + 1;
        LLVMValueRef i = loop_open(c, &li, i0, i1);
        offsets_add(c, &n, &di, 1, &i, base, base2);
        LLVMValueRef j = loop_open(c, &lj, j0, j1);
        offsets_add(c, &n, &dj, 1, &j, base2, n.off);
        /* C may live where an epilogue output goes (gen_matmul's choice of cp): read it
         * before any member of this element is stored. */
        emit_members(c, &n, k, ri + 1, k->nmembers, iota_stream, k->root);
        loop_close(c, &lj);
        loop_close(c, &li);
        LLVMBuildRetVoid(c->B);
        char name[64];
        snprintf(name, sizeof name, "k%u_epi", c->kidx);
        epi = new_fn(c, name, c->epi_ty, true);
        LLVMValueRef ctx = LLVMBuildBitCast(c->B, LLVMGetParam(epi, 0),
                                            LLVMPointerType(c->epi_ctx_ty, 0), "");
        LLVMValueRef slots = LLVMBuildLoad2(c->B, c->tpp8,
                                            LLVMBuildStructGEP2(c->B, c->epi_ctx_ty, ctx, 0, ""), "");
        LLVMValueRef ints[5] = {
            LLVMBuildLoad2(c->B, c->ti64, LLVMBuildStructGEP2(c->B, c->epi_ctx_ty, ctx, 1, ""), ""),
            LLVMGetParam(epi, 1), LLVMGetParam(epi, 2), LLVMGetParam(epi, 3), LLVMGetParam(epi, 4)};
        call_inner(c, &n, inner, slots, ints, 5);
        LLVMBuildRetVoid(c->B);
        LLVMPositionBuilderAtEnd(c->B, step_bb);
    }

    /* In the step: one gemm per batch matrix. */
    int64_t sa[DTL_MAX_RANK], sb[DTL_MAX_RANK], batches = numel(rb, root->shape);
    bcast_strides(an->rank - 2, an->shape, rb, root->shape, sa);
    bcast_strides(bn->rank - 2, bn->shape, rb, root->shape, sb);
    dtl_llvm_place pa = where(c, k->matmul_a), pb = where(c, k->matmul_b);
    if (an->dtype == DTL_DTYPE_BF16 || root->attr.tf32) {
        pa = mm_operand_f32(c, k->matmul_a, root->attr.tf32);
        pb = mm_operand_f32(c, k->matmul_b, root->attr.tf32);
    }
    LLVMValueRef sidx[4] = {ci64(c, pa.slot), ci64(c, pb.slot), ci64(c, cp.slot),
                            ci64(c, DTL_LLVM_SLOT_POOL)};
    LLVMValueRef ptr[4];
    for (int q = 0; q < 4; q++)
        ptr[q] = LLVMBuildLoad2(c->B, c->tp8,
                                LLVMBuildInBoundsGEP2(c->B, c->tp8, c->slots, &sidx[q], 1, ""), "");
    lp lt;
    c->novec = true;
    LLVMValueRef t = batches > 1 ? loop_open(c, &lt, ci64(c, 0), ci64(c, batches)) : ci64(c, 0);
    LLVMValueRef oa = ci64(c, 0), ob = ci64(c, 0);
    if (batches > 1) {
        nest bn_;
        nest_init(&bn_, rb, root->shape, 0);
        uint32_t dims[DTL_MAX_RANK] = {0};
        LLVMValueRef idx[DTL_MAX_RANK];
        for (uint32_t d = 0; d < rb; d++)
            dims[d] = d;
        decompose(c, &bn_, dims, rb, t, idx);
        for (uint32_t d = 0; d < rb; d++) {
            oa = add_(c, oa, mul_k(c, idx[d], sa[d] * m * kk));
            ob = add_(c, ob, mul_k(c, idx[d], sb[d] * kk * nn));
        }
    }
    LLVMTypeRef et = reg_ty(c, root->dtype), ep = LLVMPointerType(et, 0);
    LLVMValueRef a_off = LLVMBuildAdd(c->B, ci64(c, (int64_t)pa.offset),
                                      LLVMBuildMul(c->B, oa, ci64(c, (int64_t)esz), ""), "");
    LLVMValueRef b_off = LLVMBuildAdd(c->B, ci64(c, (int64_t)pb.offset),
                                      LLVMBuildMul(c->B, ob, ci64(c, (int64_t)esz), ""), "");
    LLVMValueRef c_off = LLVMBuildAdd(c->B, ci64(c, (int64_t)cp.offset),
                                      LLVMBuildMul(c->B, t, ci64(c, m * nn * (int64_t)esz), ""), "");
    LLVMValueRef A = LLVMBuildBitCast(c->B, LLVMBuildGEP2(c->B, c->ti8, ptr[0], &a_off, 1, ""), ep, "");
    LLVMValueRef Bm = LLVMBuildBitCast(c->B, LLVMBuildGEP2(c->B, c->ti8, ptr[1], &b_off, 1, ""), ep, "");
    LLVMValueRef Cm = LLVMBuildBitCast(c->B, LLVMBuildGEP2(c->B, c->ti8, ptr[2], &c_off, 1, ""), ep, "");
    LLVMValueRef ctx = LLVMConstPointerNull(c->tp8);
    LLVMValueRef epi_fn = LLVMConstPointerNull(LLVMPointerType(c->epi_ty, 0));
    if (epi) {
        LLVMBuildStore(c->B, t, LLVMBuildStructGEP2(c->B, c->epi_ctx_ty, c->epi_ctx, 1, ""));
        ctx = LLVMBuildBitCast(c->B, c->epi_ctx, c->tp8, "");
        epi_fn = epi;
    }
    int64_t lda = k->trans_a ? m : kk, ldb = k->trans_b ? kk : nn;
    LLVMValueRef args[14] = {ptr[3], ci64(c, m), ci64(c, nn), ci64(c, kk),
                             A, ci64(c, lda), LLVMConstInt(c->ti32, k->trans_a, 0),
                             Bm, ci64(c, ldb), LLVMConstInt(c->ti32, k->trans_b, 0),
                             Cm, ci64(c, nn), epi_fn, ctx};
    call(c, c->gemm_ty[f64], c->gemm[f64], args, 14);
    if (batches > 1)
        loop_close(c, &lt);
    if (epi)
        nest_reset(c, &n, iota_stream);
}

/* ---- SINGLE ------------------------------------------------------------------------------- */

static void gen_single(cg *c, const dtl_kernel *k)
{
    (void)k;
    LLVMValueRef idx = ci64(c, DTL_LLVM_SLOT_RT);
    LLVMValueRef rt = LLVMBuildLoad2(
        c->B, c->tp8, LLVMBuildInBoundsGEP2(c->B, c->tp8, c->slots, &idx, 1, ""), "rt");
    LLVMValueRef a[3] = {rt, LLVMConstInt(c->ti32, c->nsingle, 0), c->slots};
    LLVMValueRef ok = call(c, c->single_ty, c->single, a, 3);
    LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(c->C, c->step, "fail");
    LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(c->C, c->step, "next");
    LLVMBuildCondBr(c->B, LLVMBuildICmp(c->B, LLVMIntEQ, ok, LLVMConstInt(c->ti8, 0, 0), ""),
                    fail, next);
    LLVMPositionBuilderAtEnd(c->B, fail);
    LLVMBuildRet(c->B, LLVMConstInt(c->ti32, c->nsingle + 1, 0));
    LLVMPositionBuilderAtEnd(c->B, next);
    c->nsingle++;
}

/* ---- the module --------------------------------------------------------------------------- */

static void declare_runtime(cg *c)
{
    LLVMTypeRef bp[3] = {c->tp8, c->ti64, c->ti64};
    c->body_ty = LLVMFunctionType(c->tvoid, bp, 3, false);
    LLVMTypeRef ep[5] = {c->tp8, c->ti64, c->ti64, c->ti64, c->ti64};
    c->epi_ty = LLVMFunctionType(c->tvoid, ep, 5, false);
    LLVMTypeRef pr[5] = {c->tp8, LLVMPointerType(c->body_ty, 0), c->tp8, c->ti64, c->ti64};
    c->pool_run_ty = LLVMFunctionType(c->tvoid, pr, 5, false);
    c->pool_run = LLVMAddFunction(c->M, "dtl_pool_run", c->pool_run_ty);
    for (int f = 0; f < 2; f++) {
        LLVMTypeRef et = LLVMPointerType(f ? c->tf64 : c->tf32, 0);
        LLVMTypeRef gp[14] = {c->tp8, c->ti64, c->ti64, c->ti64, et, c->ti64, c->ti32,
                              et, c->ti64, c->ti32, et, c->ti64,
                              LLVMPointerType(c->epi_ty, 0), c->tp8};
        c->gemm_ty[f] = LLVMFunctionType(c->tvoid, gp, 14, false);
        c->gemm[f] = LLVMAddFunction(c->M, f ? "dtl_gemm_f64" : "dtl_gemm_f32", c->gemm_ty[f]);
        LLVMTypeRef ft = f ? c->tf64 : c->tf32;
        c->libm1_ty[f] = LLVMFunctionType(ft, &ft, 1, false);
        c->ftanh[f] = LLVMAddFunction(c->M, f ? "tanh" : "tanhf", c->libm1_ty[f]);
        add_fn_attr(c, c->ftanh[f], "nounwind");
        add_fn_attr(c, c->ftanh[f], "readnone");
        add_fn_attr(c, c->ftanh[f], "willreturn");
    }
    LLVMTypeRef sp[3] = {c->tp8, c->ti32, c->tpp8};
    c->single_ty = LLVMFunctionType(c->ti8, sp, 3, false);
    c->single = LLVMAddFunction(c->M, "dtl_llvm_rt_single", c->single_ty);
    LLVMTypeRef ct[2] = {c->tpp8, c->ti64};
    c->epi_ctx_ty = LLVMStructTypeInContext(c->C, ct, 2, false);
    if (c->hooks) {   /* declared only when used: a module without hooks is unchanged */
        LLVMTypeRef rp[3] = {c->tp8, c->ti32, c->tpp8};
        c->ready_ty = LLVMFunctionType(c->tvoid, rp, 3, false);
        c->ready = LLVMAddFunction(c->M, "dtl_llvm_rt_ready", c->ready_ty);
    }
}

/* The output-ready hook for output o (llvm_rt.h): dtl_llvm_rt_ready(rt, o, slots). */
static void gen_ready(cg *c, uint32_t o)
{
    LLVMValueRef idx = ci64(c, DTL_LLVM_SLOT_RT);
    LLVMValueRef rt = LLVMBuildLoad2(
        c->B, c->tp8, LLVMBuildInBoundsGEP2(c->B, c->tp8, c->slots, &idx, 1, ""), "rt");
    LLVMValueRef a[3] = {rt, LLVMConstInt(c->ti32, o, 0), c->slots};
    call(c, c->ready_ty, c->ready, a, 3);
}

/* Slots and the staging of outputs that are bound leaves (their value is read before any
 * kernel writes a store entry, like ref's staging). */
static void plan_layout(cg *c)
{
    const dtl_graph *g = c->g;
    dtl_llvm_layout *L = c->L;
    L->ninputs = L->nstore = 0;
    for (dtl_val v = 0; v < g->nnodes; v++) {
        dtl_op op = g->nodes[v].op;
        L->ninputs += op == DTL_OP_INPUT;
        L->nstore += op == DTL_OP_PARAM || op == DTL_OP_STATE;
    }
    L->nslots = DTL_LLVM_SLOT_FIRST_INPUT + L->ninputs + L->nstore;
    dtl_val *sn = dtl_arena_array(c->A, L->nslots, sizeof *sn);
    for (uint32_t s = 0; s < L->nslots; s++)
        sn[s] = DTL_VAL_NONE;
    uint32_t si = DTL_LLVM_SLOT_FIRST_INPUT, ss = si + L->ninputs;
    for (dtl_val v = 0; v < g->nnodes; v++) {
        dtl_op op = g->nodes[v].op;
        if (op == DTL_OP_INPUT)
            sn[si++] = v;
        else if (op == DTL_OP_PARAM || op == DTL_OP_STATE)
            sn[ss++] = v;
    }
    L->slot_node = sn;
    L->const_bytes = c->kp->const_bytes;
    c->top = round_up(c->kp->arena_bytes);
}

static LLVMValueRef slot_ptr(cg *c, dtl_llvm_place p)
{
    LLVMValueRef idx = ci64(c, p.slot), off = ci64(c, (int64_t)p.offset);
    LLVMValueRef base = LLVMBuildLoad2(
        c->B, c->tp8, LLVMBuildInBoundsGEP2(c->B, c->tp8, c->slots, &idx, 1, ""), "");
    return LLVMBuildInBoundsGEP2(c->B, c->ti8, base, &off, 1, "");
}

static bool bound_leaf(dtl_op op)
{
    return op == DTL_OP_INPUT || op == DTL_OP_PARAM || op == DTL_OP_STATE;
}

LLVMModuleRef dtl_llvm_build_module(LLVMContextRef ctx, LLVMTargetMachineRef tm,
                                    const dtl_kprog *kp, const char *prefix,
                                    dtl_llvm_layout *layout, dtl_err *err)
{
    return dtl_llvm_build_module_hooks(ctx, tm, kp, prefix, false, layout, err);
}

LLVMModuleRef dtl_llvm_build_module_hooks(LLVMContextRef ctx, LLVMTargetMachineRef tm,
                                          const dtl_kprog *kp, const char *prefix, bool hooks,
                                          dtl_llvm_layout *layout, dtl_err *err)
{
    cg cc, *c = &cc;
    memset(c, 0, sizeof *c);
    c->hooks = hooks;
    c->C = ctx;
    c->kp = kp;
    c->g = kp->g;
    c->L = layout;
    c->A = (dtl_arena *)&kp->arena;
    c->err = err;
    c->prefix = prefix;
    memset(layout, 0, sizeof *layout);
    const dtl_graph *g = kp->g;
    for (dtl_val v = 0; v < g->nnodes; v++) {
        const dtl_node *n = &g->nodes[v];
        if (n->dtype != DTL_DTYPE_F32 && n->dtype != DTL_DTYPE_F64 && n->dtype != DTL_DTYPE_I32 &&
            n->dtype != DTL_DTYPE_I64 && n->dtype != DTL_DTYPE_BOOL && n->dtype != DTL_DTYPE_BF16) {
            char what[64];
            snprintf(what, sizeof what, "%%%u (%s)", v, dtl_op_name(n->op));
            dtl_err_set(err, DTL_ERR_USAGE, "llvm: %s: dtype %s is not supported", what,
                        dtl_dtype_name(n->dtype));
            return NULL;
        }
    }
    c->M = LLVMModuleCreateWithNameInContext("dtl", ctx);
    c->B = LLVMCreateBuilderInContext(ctx);
    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(c->M, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(c->M, dl);
    LLVMDisposeTargetData(dl);
    c->cpu = LLVMGetTargetMachineCPU(tm);
    c->features = LLVMGetTargetMachineFeatureString(tm);
    c->tvoid = LLVMVoidTypeInContext(ctx);
    c->ti1 = LLVMInt1TypeInContext(ctx);
    c->ti8 = LLVMInt8TypeInContext(ctx);
    c->ti32 = LLVMInt32TypeInContext(ctx);
    c->ti64 = LLVMInt64TypeInContext(ctx);
    c->tf32 = LLVMFloatTypeInContext(ctx);
    c->tf64 = LLVMDoubleTypeInContext(ctx);
    c->tp8 = LLVMPointerType(c->ti8, 0);
    c->tpp8 = LLVMPointerType(c->tp8, 0);
    c->val = dtl_arena_array(c->A, g->nnodes + 1, sizeof *c->val);
    c->ld = dtl_arena_array(c->A, g->nnodes + 1, sizeof *c->ld);
    c->stv = dtl_arena_array(c->A, g->nnodes + 1, sizeof *c->stv);
    c->spill = dtl_arena_array(c->A, g->nnodes + 1, sizeof *c->spill);
    int32_t *iota_stream = dtl_arena_array(c->A, g->nnodes + 1, sizeof *iota_stream);
    declare_runtime(c);
    plan_layout(c);

    /* Outputs: staged bound leaves get a block at the top of the arena. */
    dtl_llvm_place *outp = dtl_arena_array(c->A, g->nouts + 1, sizeof *outp);
    dtl_llvm_place *stage = dtl_arena_array(c->A, g->nouts + 1, sizeof *stage);
    bool *staged = dtl_arena_array(c->A, g->nouts + 1, sizeof *staged);
    for (uint32_t o = 0; o < g->nouts; o++) {
        dtl_val v = g->outs[o].val;
        dtl_val r = kp->loc[v].kind == DTL_LOC_ALIAS ? kp->loc[v].of : v;
        staged[o] = bound_leaf(g->nodes[r].op);
        if (staged[o]) {
            stage[o] = (dtl_llvm_place){DTL_LLVM_SLOT_ARENA, c->top};
            c->top = round_up(c->top + value_bytes(&g->nodes[v]));
        }
    }

    LLVMTypeRef sp = c->tpp8;
    c->step = new_fn(c, "step", LLVMFunctionType(c->ti32, &sp, 1, false), false);
    c->slots = LLVMGetParam(c->step, 0);
    LLVMSetValueName2(c->slots, "slots", 5);
    c->epi_ctx = LLVMBuildAlloca(c->B, c->epi_ctx_ty, "epi_ctx");
    LLVMBuildStore(c->B, c->slots, LLVMBuildStructGEP2(c->B, c->epi_ctx_ty, c->epi_ctx, 0, ""));
    for (uint32_t o = 0; o < g->nouts; o++)
        if (staged[o]) {   /* source address first: one instruction order for every compiler */
            LLVMValueRef from = slot_ptr(c, where(c, g->outs[o].val));
            LLVMBuildMemCpy(c->B, slot_ptr(c, stage[o]), 1, from, 1,
                            ci64(c, (int64_t)value_bytes(&g->nodes[g->outs[o].val])));
        }
    /* Output-ready hooks: each output after the kernel that computes it (ready_k), bound
     * leaves (staged) and constants right after the staging (UINT32_MAX). */
    uint32_t *ready_k = NULL;
    if (c->hooks) {
        dtl_llvm_place *ready_at = dtl_arena_array(c->A, g->nouts + 1, sizeof *ready_at);
        ready_k = dtl_arena_array(c->A, g->nouts + 1, sizeof *ready_k);
        for (uint32_t o = 0; o < g->nouts; o++) {
            dtl_val v = g->outs[o].val;
            dtl_val r = kp->loc[v].kind == DTL_LOC_ALIAS ? kp->loc[v].of : v;
            ready_at[o] = staged[o] ? stage[o] : where(c, v);
            ready_k[o] = staged[o] ? UINT32_MAX : kp->kernel_of[r];
        }
        layout->ready_at = ready_at;
        for (uint32_t o = 0; o < g->nouts; o++)
            if (ready_k[o] == UINT32_MAX)
                gen_ready(c, o);
    }
    for (uint32_t i = 0; i < kp->nk && !c->failed; i++) {
        const dtl_kernel *k = &kp->k[i];
        c->kidx = i;
        switch (k->kind) {
        case DTL_K_ELEMWISE: gen_elemwise(c, k, iota_stream); break;
        case DTL_K_REDUCE: gen_reduce(c, k, iota_stream); break;
        case DTL_K_MATMUL: gen_matmul(c, k, iota_stream); break;
        case DTL_K_SINGLE: gen_single(c, k); break;
        case DTL_K_ROW: gen_row(c, k, iota_stream); break;
        }
        for (uint32_t o = 0; ready_k && o < g->nouts && !c->failed; o++)
            if (ready_k[o] == i)
                gen_ready(c, o);
    }
    /* Commits, after every kernel ran. */
    for (uint32_t o = 0; o < g->nouts && !c->failed; o++) {
        const dtl_output *out = &g->outs[o];
        dtl_llvm_place src = staged[o] ? stage[o] : where(c, out->val);
        outp[o] = src;
        if (out->kind != DTL_OUT_PARAM && out->kind != DTL_OUT_STATE)
            continue;
        dtl_llvm_place dst = where(c, out->target);
        outp[o] = dst;
        if (dst.slot == src.slot && dst.offset == src.offset)
            continue;
        LLVMValueRef from = slot_ptr(c, src);   /* before dst: a fixed instruction order */
        LLVMBuildMemMove(c->B, slot_ptr(c, dst), 1, from, 1,
                         ci64(c, (int64_t)value_bytes(&g->nodes[out->val])));
    }
    LLVMBuildRet(c->B, LLVMConstInt(c->ti32, 0, 0));
    layout->out = outp;
    layout->nsingle = c->nsingle;
    layout->arena_bytes = c->top;
    LLVMDisposeBuilder(c->B);
    LLVMDisposeMessage(c->cpu);
    LLVMDisposeMessage(c->features);
    if (c->failed) {
        LLVMDisposeModule(c->M);
        return NULL;
    }
    return c->M;
}
