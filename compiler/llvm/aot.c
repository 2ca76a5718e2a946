/* compiler/llvm/aot.c — ahead-of-time compilation (see aot.h).
 *
 * Design. The code is the JIT's: each graph (infer, step) goes through the same passes and
 * fusion and the same module builder (llvm.h) with its own symbol prefix, and the two
 * modules are linked into one. What the JIT keeps in C structures at prepare time — the
 * slot map, where outputs are, the SINGLE kernels' operand views, the constant block, the
 * parameters' names, shapes and initializers — becomes constant data in the module: one
 * dtl_cmodel_desc (runtime/model.h) built here from LLVM constants. Every struct of the
 * descriptor has only 8-byte fields (i64, double, pointer), so an LLVM literal struct of the
 * same fields in the same order has the C layout (no padding anywhere); the pointer fields
 * are i8* here whatever they point to. The exported API is a handful of one-call wrappers
 * that pass the descriptor (create) or forward their arguments to runtime/model.c, so the
 * header stays small and the object exports nothing else but the descriptor.
 *
 * The object is emitted by the backend's TargetMachine for the host (dtl_llvm_host_tm: its
 * triple, CPU and features) with position-independent code: Debian links executables as PIE, and a .so
 * needs PIC anyway. A .so is the object linked by the system C compiler with libdtlrt.a
 * (compiled with -fPIC for this) and `-Wl,--exclude-libs,ALL`, so it depends on libc, libm
 * and libpthread only and exports only the model's API.
 *
 * Inference pads a short last chunk with zero rows (model.c), which is exact when no op of
 * the forward mixes rows; rows_coupled() proves that conservatively on the infer graph.
 */
#include "aot.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Linker.h>
#include <llvm-c/TargetMachine.h>

#include "../../runtime/fsutil.h"
#include "../../runtime/model.h"
#include "../passes/fuse.h"
#include "../passes/passes.h"
#include "llvm.h"
#include "llvm_rt.h"

_Static_assert((int)DTL_CMODEL_SLOT_ARENA == (int)DTL_LLVM_SLOT_ARENA &&
               (int)DTL_CMODEL_SLOT_CONST == (int)DTL_LLVM_SLOT_CONST &&
               (int)DTL_CMODEL_SLOT_POOL == (int)DTL_LLVM_SLOT_POOL &&
               (int)DTL_CMODEL_SLOT_RT == (int)DTL_LLVM_SLOT_RT &&
               (int)DTL_CMODEL_SLOT_FIRST_INPUT == (int)DTL_LLVM_SLOT_FIRST_INPUT,
               "runtime/model.h's slots are llvm.h's");
_Static_assert(sizeof(((dtl_node *)0)->attr) <= 8 * DTL_CMODEL_ATTR_WORDS, "attr words");

extern char **environ;

/* ---- names and paths ------------------------------------------------------------------ */

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

bool dtl_aot_kind_of(const char *output, dtl_aot_kind *kind)
{
    const char *b = base_name(output);
    if (ends_with(b, ".o"))
        *kind = DTL_AOT_OBJECT;
    else if (ends_with(b, ".so"))
        *kind = DTL_AOT_SHARED;
    else
        return false;
    return true;
}

char *dtl_aot_header_path(const char *output)
{
    size_t n = strlen(output);
    const char *b = base_name(output);
    if (ends_with(b, ".so"))
        n -= 3;
    else if (ends_with(b, ".o"))
        n -= 2;
    char *h = malloc(n + 3);
    if (h) {
        memcpy(h, output, n);
        memcpy(h + n, ".h", 3);
    }
    return h;
}

char *dtl_aot_name(const char *output)
{
    const char *b = base_name(output);
    const char *dot = strchr(b[0] == '.' ? b + 1 : b, '.');
    size_t n = dot ? (size_t)(dot - b) : strlen(b);
    char *s = malloc(n + 2);
    if (!s)
        return NULL;
    size_t k = 0;
    if (n == 0 || (b[0] >= '0' && b[0] <= '9'))
        s[k++] = '_';
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_';
        s[k++] = ok ? c : '_';
    }
    s[k] = '\0';
    return s;
}

const char *dtl_aot_rtlib(void)
{
    const char *env = getenv("DTL_LIBDTLRT");
    if (env && *env)
        return env;
#if defined(DTL_BUILD_RTLIB) && defined(DTL_INSTALLED_RTLIB)
    /* From the build tree when this program is the build tree's (dtlc at its top, test
     * programs in tests/unit/ below it): the installed dtlc never uses a build directory
     * that happens to still exist. Directories are compared by device and inode. */
    char dir[PATH_MAX];
    struct stat top, here;
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
    const char *lib = DTL_BUILD_RTLIB;
    size_t dl = strlen(lib) - strlen("/libdtlrt.a");
    char build[PATH_MAX];
    if (n > 0 && dl < sizeof build) {
        memcpy(build, lib, dl);
        build[dl] = '\0';
        dir[n] = '\0';
        bool ok = stat(build, &top) == 0;
        for (int up = 0; ok && up < 3; up++) {
            char *slash = strrchr(dir, '/');
            if (!slash || slash == dir)
                break;
            *slash = '\0';
            if (stat(dir, &here) == 0 && here.st_dev == top.st_dev && here.st_ino == top.st_ino)
                return DTL_BUILD_RTLIB;
        }
    }
    return DTL_INSTALLED_RTLIB;
#else
    return "libdtlrt.a";
#endif
}

/* ---- planning --------------------------------------------------------------------------- */

/* One graph compiled: the pass pipeline's graph, its kernel program, the module's layout. */
typedef struct aot_prog {
    const dtl_graph *src;       /* the lowered graph (NULL: none) */
    dtl_graph g;                /* after the passes */
    bool have_g;
    dtl_kprog *kp;
    dtl_llvm_layout L;
    char entry[300];            /* the entry's symbol */
} aot_prog;

static bool plan(aot_prog *p, const char *what, dtl_err *err)
{
    if (!dtl_passes_run(&p->g, p->src, NULL, err)) {
        dtl_graph_free(&p->g);
        return false;
    }
    p->have_g = true;
    char why[512];
    p->kp = dtl_fuse(&p->g, NULL);
    if (!dtl_kprog_verify(p->kp, why, sizeof why))
        return dtl_err_set(err, DTL_ERR_INTERNAL, "the %s program's plan is wrong: %s", what,
                           why);
    return true;
}

static void prog_free(aot_prog *p)
{
    dtl_kprog_free(p->kp);
    if (p->have_g)
        dtl_graph_free(&p->g);
}

/* ---- which rows an infer graph mixes ----------------------------------------------------- */

/* Per node: FREE (does not depend on x), ROWS (axis 0 is x's rows, and row r depends only
 * on row r of x), or MIXED. Conservative: anything not shown to be ROWS or FREE is MIXED. */
typedef enum rowdep { DEP_FREE, DEP_ROWS, DEP_MIXED } rowdep;

static rowdep dep_of_node(const dtl_graph *g, const rowdep *dep, dtl_val v, int64_t batch)
{
    const dtl_node *n = &g->nodes[v];
    bool all_free = true;
    for (uint32_t i = 0; i < n->nin; i++)
        all_free = all_free && dep[n->in[i]] == DEP_FREE;
    if (n->op == DTL_OP_INPUT)
        return strcmp(n->name, "x") == 0 && n->rank >= 1 && n->shape[0] == batch ? DEP_ROWS
                                                                               : DEP_MIXED;
    if (all_free)
        return DEP_FREE;
    /* Row-preserving operands: ROWS with axis 0 where the result's axis 0 is. */
    const dtl_node *a = &g->nodes[n->in[0]];
    rowdep da = dep[n->in[0]];
    bool out_rows = n->rank >= 1 && n->shape[0] == batch;
    switch (dtl_op_kind_of(n->op)) {
    case DTL_OPK_UNARY:
    case DTL_OPK_BINARY:
    case DTL_OPK_TERNARY:
        /* numpy broadcasting aligns trailing axes: a ROWS operand must have the result's
         * rank (its axis 0 is then the result's axis 0). */
        for (uint32_t i = 0; i < n->nin; i++) {
            const dtl_node *u = &g->nodes[n->in[i]];
            if (dep[n->in[i]] == DEP_MIXED ||
                (dep[n->in[i]] == DEP_ROWS && (u->rank != n->rank || !out_rows)))
                return DEP_MIXED;
        }
        return DEP_ROWS;
    case DTL_OPK_REDUCE:
        return da == DEP_ROWS && !(n->attr.red.axes & 1u) && out_rows ? DEP_ROWS : DEP_MIXED;
    case DTL_OPK_MATMUL: {
        rowdep db = dep[n->in[1]];
        if (da == DEP_ROWS && db == DEP_FREE && a->rank == 2 && out_rows)
            return DEP_ROWS;   /* [B, k] @ [k, n] */
        if (da != DEP_MIXED && db != DEP_MIXED && a->rank >= 3 &&
            g->nodes[n->in[1]].rank == a->rank && out_rows)
            return DEP_ROWS;   /* batched over axis 0 */
        return DEP_MIXED;
    }
    default: break;
    }
    switch (n->op) {
    case DTL_OP_ARGMAX:
        return da == DEP_ROWS && n->attr.axis != 0 && out_rows ? DEP_ROWS : DEP_MIXED;
    case DTL_OP_RESHAPE:
    case DTL_OP_BROADCAST:
        return da == DEP_ROWS && a->rank >= 1 && a->shape[0] == batch && out_rows &&
               (n->op == DTL_OP_RESHAPE || a->rank == n->rank) ? DEP_ROWS : DEP_MIXED;
    case DTL_OP_TRANSPOSE:
        return da == DEP_ROWS && n->attr.perm[0] == 0 ? DEP_ROWS : DEP_MIXED;
    case DTL_OP_SLICE:
        return da == DEP_ROWS && n->attr.slice.start[0] == 0 && n->attr.slice.step[0] == 1 &&
               out_rows ? DEP_ROWS : DEP_MIXED;
    case DTL_OP_CONCAT:
        if (n->attr.axis == 0 || !out_rows)
            return DEP_MIXED;
        for (uint32_t i = 0; i < n->nin; i++)
            if (dep[n->in[i]] == DEP_MIXED)
                return DEP_MIXED;
        return DEP_ROWS;
    case DTL_OP_CONV2D:   /* each image by itself, the weights shared */
        return da == DEP_ROWS && dep[n->in[1]] == DEP_FREE && out_rows ? DEP_ROWS : DEP_MIXED;
    case DTL_OP_MAXPOOL2D:
    case DTL_OP_AVGPOOL2D:
        return da == DEP_ROWS && out_rows ? DEP_ROWS : DEP_MIXED;
    case DTL_OP_GATHER: {
        rowdep di = dep[n->in[1]];
        if (da == DEP_ROWS && di == DEP_FREE && n->attr.axis != 0 && out_rows)
            return DEP_ROWS;   /* columns of each row */
        if (da == DEP_FREE && di == DEP_ROWS && n->attr.axis == 0 &&
            g->nodes[n->in[1]].rank >= 1 && out_rows)
            return DEP_ROWS;   /* a table looked up by each row's indices */
        return DEP_MIXED;
    }
    default:
        return DEP_MIXED;
    }
}

/* Whether the infer graph's output y might depend on other rows than its own. */
static bool rows_coupled(const dtl_graph *g, int64_t batch)
{
    rowdep *dep = calloc(g->nnodes + 1, sizeof *dep);
    if (!dep)
        return true;
    for (dtl_val v = 0; v < g->nnodes; v++)
        dep[v] = dep_of_node(g, dep, v, batch);
    bool mixed = false;
    for (uint32_t k = 0; k < g->nouts; k++)
        if (strcmp(g->outs[k].name, "y") == 0)
            mixed = dep[g->outs[k].val] == DEP_MIXED;
    free(dep);
    return mixed;
}

/* ---- LLVM constants ----------------------------------------------------------------------- */

/* Builds the descriptor's constants into one module. */
typedef struct aot_emit {
    LLVMContextRef c;
    LLVMModuleRef m;
    LLVMTypeRef i8p, i64, i32, f64, vd;
    uint32_t nglobals;
    const char *name;
    /* A record being built: its fields. */
    LLVMValueRef *f;
    uint32_t nf, capf;
    bool oom;
} aot_emit;

static LLVMValueRef c_i64(aot_emit *e, uint64_t v)
{
    return LLVMConstInt(e->i64, v, false);
}

/* A private constant global holding init (alignment align, 0: the type's), as an i8*. */
static LLVMValueRef c_global(aot_emit *e, LLVMValueRef init, unsigned align)
{
    char nm[64];
    snprintf(nm, sizeof nm, "dtl.aot.%u", e->nglobals++);
    LLVMValueRef g = LLVMAddGlobal(e->m, LLVMTypeOf(init), nm);
    LLVMSetInitializer(g, init);
    LLVMSetGlobalConstant(g, true);
    LLVMSetLinkage(g, LLVMPrivateLinkage);
    LLVMSetUnnamedAddress(g, LLVMGlobalUnnamedAddr);
    if (align)
        LLVMSetAlignment(g, align);
    return LLVMConstBitCast(g, e->i8p);
}

static LLVMValueRef c_bytes(aot_emit *e, const void *data, size_t n, unsigned align)
{
    if (!data)
        return LLVMConstPointerNull(e->i8p);
    return c_global(e, LLVMConstStringInContext(e->c, data, (unsigned)n, true), align);
}

static LLVMValueRef c_str(aot_emit *e, const char *s)
{
    if (!s)
        return LLVMConstPointerNull(e->i8p);
    return c_global(e, LLVMConstStringInContext(e->c, s, (unsigned)strlen(s), false), 1);
}

static void rec_add(aot_emit *e, LLVMValueRef v)
{
    if (e->nf == e->capf) {
        uint32_t cap = e->capf ? 2 * e->capf : 64;
        LLVMValueRef *f = realloc(e->f, cap * sizeof *f);
        if (!f) {
            e->oom = true;
            return;
        }
        e->f = f;
        e->capf = cap;
    }
    e->f[e->nf++] = v;
}

static void rec_i64(aot_emit *e, uint64_t v)
{
    rec_add(e, c_i64(e, v));
}

static void rec_ptr(aot_emit *e, LLVMValueRef p)
{
    rec_add(e, p);
}

static void rec_shape(aot_emit *e, uint32_t rank, const int64_t *shape)
{
    for (uint32_t i = 0; i < DTL_CMODEL_MAX_RANK; i++)
        rec_i64(e, i < rank ? (uint64_t)shape[i] : 0);
}

/* The fields added since `from`, as one literal struct; they are removed. */
static LLVMValueRef rec_end(aot_emit *e, uint32_t from)
{
    LLVMValueRef v = LLVMConstStructInContext(e->c, e->f + from, e->nf - from, false);
    e->nf = from;
    return v;
}

/* An array of n records (each already a struct value) as an i8* to its first element, or a
 * null pointer for none. */
static LLVMValueRef c_array(aot_emit *e, LLVMValueRef *items, uint32_t n, unsigned align)
{
    if (n == 0)
        return LLVMConstPointerNull(e->i8p);
    return c_global(e, LLVMConstArray(LLVMTypeOf(items[0]), items, n), align);
}

/* ---- the descriptor ------------------------------------------------------------------------ */

typedef struct aot_model {
    const dtl_lowered *L;
    aot_prog infer, step;
    /* The store: PARAM/STATE leaves of the step graph (then of the infer graph), by name. */
    const dtl_node **tensors;
    uint64_t *offsets;
    uint32_t ntensors;
    uint64_t store_bytes;
} aot_model;

static int64_t tensor_index(const aot_model *am, const char *name)
{
    for (uint32_t i = 0; i < am->ntensors; i++)
        if (strcmp(am->tensors[i]->name, name) == 0)
            return i;
    return -1;
}

static bool collect_tensors(aot_model *am, dtl_err *err)
{
    const dtl_graph *gs[2] = {am->step.kp ? &am->step.g : NULL,
                              am->infer.kp ? &am->infer.g : NULL};
    uint32_t cap = 0;
    for (int k = 0; k < 2; k++)
        cap += gs[k] ? gs[k]->nnodes : 0;
    am->tensors = calloc(cap + 1, sizeof *am->tensors);
    am->offsets = calloc(cap + 1, sizeof *am->offsets);
    if (!am->tensors || !am->offsets)
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
    for (int k = 0; k < 2; k++)
        for (dtl_val v = 0; gs[k] && v < gs[k]->nnodes; v++) {
            const dtl_node *n = &gs[k]->nodes[v];
            if (n->op != DTL_OP_PARAM && n->op != DTL_OP_STATE)
                continue;
            int64_t i = tensor_index(am, n->name);
            if (i >= 0) {
                const dtl_node *t = am->tensors[i];
                if (t->op != n->op || t->dtype != n->dtype || t->rank != n->rank ||
                    memcmp(t->shape, n->shape, n->rank * sizeof *n->shape) != 0)
                    return dtl_err_set(err, DTL_ERR_INTERNAL, "%s differs between the infer and "
                                       "the step graph", n->name);
                continue;
            }
            am->offsets[am->ntensors] = am->store_bytes;
            am->store_bytes += (dtl_node_numel(n) * dtl_dtype_size(n->dtype) + 63) / 64 * 64;
            am->tensors[am->ntensors++] = n;
        }
    return true;
}

/* The FNV-1a 64 hash of "name dtype[shape];" for each PARAM of g, as `dtlc run` writes it
 * into checkpoints (compiler/run.c). */
static void params_hash(const dtl_graph *g, char out[17])
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t i = 0; i < g->nnodes; i++) {
        const dtl_node *n = &g->nodes[i];
        if (n->op != DTL_OP_PARAM)
            continue;
        char buf[200];
        dtl_tensor_str(buf, sizeof buf, n->dtype, n->rank, n->shape);
        const char *parts[4] = {n->name, " ", buf, ";"};
        for (int p = 0; p < 4; p++)
            for (const unsigned char *s = (const unsigned char *)parts[p]; *s; s++)
                h = (h ^ *s) * 0x100000001b3ull;
    }
    snprintf(out, 17, "%016" PRIx64, h);
}

static LLVMValueRef desc_tensors(aot_emit *e, const aot_model *am)
{
    LLVMValueRef *items = calloc(am->ntensors + 1, sizeof *items);
    if (!items) {
        e->oom = true;
        return LLVMConstPointerNull(e->i8p);
    }
    for (uint32_t i = 0; i < am->ntensors; i++) {
        const dtl_node *n = am->tensors[i];
        uint64_t nbytes = dtl_node_numel(n) * dtl_dtype_size(n->dtype);
        bool param = n->op == DTL_OP_PARAM;
        uint32_t at = e->nf;
        rec_ptr(e, c_str(e, n->name));
        rec_i64(e, param ? DTL_CMODEL_PARAM : DTL_CMODEL_STATE);
        rec_i64(e, n->dtype);
        rec_i64(e, n->rank);
        rec_shape(e, n->rank, n->shape);
        rec_i64(e, am->offsets[i]);
        rec_i64(e, nbytes);
        rec_i64(e, param ? n->attr.init.kind : 0);
        rec_add(e, LLVMConstReal(e->f64, param ? n->attr.init.a : 0));
        rec_add(e, LLVMConstReal(e->f64, param ? n->attr.init.b : 0));
        rec_ptr(e, c_bytes(e, param && n->attr.init.kind == DTL_INIT_DATA ? n->attr.init.data
                                                                          : NULL,
                           (size_t)nbytes, 64));
        items[i] = rec_end(e, at);
    }
    LLVMValueRef v = c_array(e, items, am->ntensors, 8);
    free(items);
    return v;
}

/* The place of a value as an operand record's (slot, offset). */
static void rec_operand(aot_emit *e, const dtl_node *n, dtl_llvm_place pl)
{
    rec_i64(e, n->dtype);
    rec_i64(e, n->rank);
    rec_shape(e, n->rank, n->shape);
    rec_i64(e, pl.slot);
    rec_i64(e, pl.offset);
}

/* The constant block of p, computed now (it does not depend on the seed), as a global. */
static LLVMValueRef consts_global(aot_emit *e, const aot_prog *p, dtl_err *err, bool *ok)
{
    *ok = true;
    if (!p->kp || p->L.const_bytes == 0)
        return LLVMConstPointerNull(e->i8p);
    void *block = calloc(1, (size_t)p->L.const_bytes);
    if (!block) {
        *ok = false;
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for %" PRIu64 " bytes of constants",
                    p->L.const_bytes);
        return NULL;
    }
    if (!dtl_llvm_consts_fill(p->kp, block, 0, err)) {
        free(block);
        *ok = false;
        return NULL;
    }
    LLVMValueRef v = c_bytes(e, block, (size_t)p->L.const_bytes, 64);
    free(block);
    return v;
}

/* One program's dtl_cmodel_prog fields, appended to the record being built. */
static bool rec_prog(aot_emit *e, const aot_model *am, const aot_prog *p, dtl_err *err)
{
    if (!p->kp) {   /* pointers at the odd fields and the first */
        for (int i = 0; i < 12; i++)
            i == 0 || i % 2 ? rec_ptr(e, LLVMConstPointerNull(e->i8p)) : rec_i64(e, 0);
        return true;
    }
    bool cok;
    LLVMValueRef consts = consts_global(e, p, err, &cok);
    if (!cok)
        return false;
    const dtl_graph *g = p->kp->g;
    const dtl_llvm_layout *L = &p->L;
    LLVMValueRef fn = LLVMGetNamedFunction(e->m, p->entry);
    if (!fn)
        return dtl_err_set(err, DTL_ERR_INTERNAL, "the module has no entry %s", p->entry);
    uint32_t nitems = L->ninputs + L->nstore + g->nouts + L->nsingle + 1;
    LLVMValueRef *items = calloc(nitems, sizeof *items);
    uint64_t *store = calloc(L->nstore + 1, sizeof *store);
    if (!items || !store) {
        free(items);
        free(store);
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
    }
    bool ok = false;
    /* Inputs. */
    for (uint32_t i = 0; i < L->ninputs; i++) {
        const dtl_node *n = &g->nodes[L->slot_node[DTL_LLVM_SLOT_FIRST_INPUT + i]];
        uint32_t at = e->nf;
        rec_ptr(e, c_str(e, n->name));
        rec_i64(e, n->dtype);
        rec_i64(e, n->rank);
        rec_shape(e, n->rank, n->shape);
        items[i] = rec_end(e, at);
    }
    LLVMValueRef inputs = c_array(e, items, L->ninputs, 8);
    /* Store slots. */
    uint32_t first_store = DTL_LLVM_SLOT_FIRST_INPUT + L->ninputs;
    for (uint32_t i = 0; i < L->nstore; i++) {
        int64_t t = tensor_index(am, g->nodes[L->slot_node[first_store + i]].name);
        if (t < 0) {
            dtl_err_set(err, DTL_ERR_INTERNAL, "store slot %u has no tensor", i);
            goto out;
        }
        store[i] = (uint64_t)t;
    }
    LLVMValueRef store_v = L->nstore
        ? c_bytes(e, store, L->nstore * sizeof *store, 8) : LLVMConstPointerNull(e->i8p);
    /* Outputs. */
    for (uint32_t k = 0; k < g->nouts; k++) {
        const dtl_output *o = &g->outs[k];
        const dtl_node *n = &g->nodes[o->val];
        dtl_llvm_place pl = L->out[k];
        uint64_t at_kind, off = pl.offset;
        if (pl.slot == DTL_LLVM_SLOT_ARENA)
            at_kind = DTL_CMODEL_AT_ARENA;
        else if (pl.slot == DTL_LLVM_SLOT_CONST)
            at_kind = DTL_CMODEL_AT_CONST;
        else if (pl.slot >= DTL_LLVM_SLOT_FIRST_INPUT && pl.slot < first_store && pl.offset == 0)
            at_kind = DTL_CMODEL_AT_INPUT, off = pl.slot - DTL_LLVM_SLOT_FIRST_INPUT;
        else if (pl.slot >= first_store && pl.slot < L->nslots && pl.offset == 0)
            at_kind = DTL_CMODEL_AT_TENSOR, off = store[pl.slot - first_store];
        else {
            dtl_err_set(err, DTL_ERR_INTERNAL, "output %s is in slot %u at offset %" PRIu64,
                        o->name, pl.slot, pl.offset);
            goto out;
        }
        uint32_t at = e->nf;
        rec_ptr(e, c_str(e, o->name));
        rec_i64(e, o->kind);
        rec_i64(e, n->dtype);
        rec_i64(e, n->rank);
        rec_shape(e, n->rank, n->shape);
        rec_i64(e, dtl_node_numel(n) * dtl_dtype_size(n->dtype));
        rec_i64(e, at_kind);
        rec_i64(e, off);
        items[k] = rec_end(e, at);
    }
    LLVMValueRef outputs = c_array(e, items, g->nouts, 8);
    /* SINGLE kernels, in kernel order (the ordinals the entry passes to the shim). */
    uint32_t ns = 0;
    for (uint32_t k = 0; k < p->kp->nk; k++) {
        const dtl_kernel *kn = &p->kp->k[k];
        if (kn->kind != DTL_K_SINGLE)
            continue;
        const dtl_node *n = &g->nodes[kn->root];
        LLVMValueRef *ops = calloc(n->nin + 1, sizeof *ops);
        if (!ops) {
            dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (uint32_t i = 0; i < n->nin; i++) {
            uint32_t at = e->nf;
            rec_operand(e, &g->nodes[n->in[i]], dtl_llvm_where(p->kp, L, n->in[i]));
            ops[i] = rec_end(e, at);
        }
        LLVMValueRef in = c_array(e, ops, n->nin, 8);
        free(ops);
        uint64_t attr[DTL_CMODEL_ATTR_WORDS] = {0};
        memcpy(attr, &n->attr, sizeof n->attr);
        uint32_t at = e->nf;
        rec_i64(e, kn->root);
        rec_ptr(e, c_str(e, n->name));
        rec_i64(e, n->op);
        rec_i64(e, n->nin);
        rec_ptr(e, in);
        rec_operand(e, n, dtl_llvm_where(p->kp, L, kn->root));
        for (int w = 0; w < DTL_CMODEL_ATTR_WORDS; w++)
            rec_i64(e, attr[w]);
        items[ns++] = rec_end(e, at);
    }
    if (ns != L->nsingle) {
        dtl_err_set(err, DTL_ERR_INTERNAL, "%u SINGLE kernels, the layout says %u", ns,
                    L->nsingle);
        goto out;
    }
    LLVMValueRef single = c_array(e, items, ns, 8);
    rec_ptr(e, LLVMConstBitCast(fn, e->i8p));
    rec_i64(e, L->arena_bytes);
    rec_i64(e, L->const_bytes);
    rec_ptr(e, consts);
    rec_i64(e, L->ninputs);
    rec_ptr(e, inputs);
    rec_i64(e, L->nstore);
    rec_ptr(e, store_v);
    rec_i64(e, g->nouts);
    rec_ptr(e, outputs);
    rec_i64(e, ns);
    rec_ptr(e, single);
    ok = true;
out:
    free(items);
    free(store);
    return ok;
}


/* `<name>_desc`: the whole descriptor. */
static bool build_desc(aot_emit *e, const aot_model *am, const char *source, const char *model,
                       dtl_err *err)
{
    char hash[17];
    params_hash(am->step.kp ? &am->step.g : &am->infer.g, hash);
    uint32_t at = e->nf;
    rec_i64(e, DTL_CMODEL_ABI);
    rec_ptr(e, c_str(e, e->name));
    rec_ptr(e, c_str(e, model));
    rec_ptr(e, c_str(e, source ? base_name(source) : NULL));
    rec_ptr(e, c_str(e, hash));
    rec_i64(e, (uint64_t)am->L->batch);
    rec_i64(e, am->infer.kp ? rows_coupled(am->infer.src, am->L->batch) : 0);
    rec_i64(e, am->ntensors);
    rec_ptr(e, desc_tensors(e, am));
    rec_i64(e, am->store_bytes);
    if (!rec_prog(e, am, &am->infer, err) || !rec_prog(e, am, &am->step, err)) {
        e->nf = at;
        return false;
    }
    if (e->oom) {
        e->nf = at;
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
    }
    LLVMValueRef init = rec_end(e, at);
    char nm[300];
    snprintf(nm, sizeof nm, "%s_desc", e->name);
    LLVMValueRef g = LLVMAddGlobal(e->m, LLVMTypeOf(init), nm);
    LLVMSetInitializer(g, init);
    LLVMSetGlobalConstant(g, true);
    LLVMSetAlignment(g, 8);
    return true;
}

/* ---- the exported API ------------------------------------------------------------------------ */

/* `ret <name>_<suffix>(params…)` that returns callee(params…), or with pass_desc
 * callee(&desc, params…). Types: 'p' pointer, 'l' 64-bit integer, 'i' int, 'v' void (ret). */
static void wrapper(aot_emit *e, const char *suffix, const char *callee, char ret,
                    const char *params, bool pass_desc)
{
    LLVMTypeRef pt[8], ct[9];
    unsigned np = (unsigned)strlen(params), nc = 0;
    if (pass_desc)
        ct[nc++] = e->i8p;
    for (unsigned i = 0; i < np; i++)
        pt[i] = ct[nc++] = params[i] == 'p' ? e->i8p : params[i] == 'l' ? e->i64 : e->i32;
    LLVMTypeRef rt = ret == 'p' ? e->i8p : ret == 'i' ? e->i32 : ret == 'l' ? e->i64 : e->vd;
    LLVMTypeRef fty = LLVMFunctionType(rt, pt, np, false);
    LLVMTypeRef cty = LLVMFunctionType(rt, ct, nc, false);
    char nm[300];
    snprintf(nm, sizeof nm, "%s_%s", e->name, suffix);
    LLVMValueRef fn = LLVMAddFunction(e->m, nm, fty);
    LLVMValueRef cf = LLVMGetNamedFunction(e->m, callee);
    if (!cf)
        cf = LLVMAddFunction(e->m, callee, cty);
    LLVMBuilderRef b = LLVMCreateBuilderInContext(e->c);
    LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(e->c, fn, "entry"));
    LLVMValueRef args[9];
    unsigned na = 0;
    if (pass_desc) {
        snprintf(nm, sizeof nm, "%s_desc", e->name);
        args[na++] = LLVMConstBitCast(LLVMGetNamedGlobal(e->m, nm), e->i8p);
    }
    for (unsigned i = 0; i < np; i++)
        args[na++] = LLVMGetParam(fn, i);
    LLVMValueRef r = LLVMBuildCall2(b, cty, cf, args, na, "");
    if (ret == 'v')
        LLVMBuildRetVoid(b);
    else
        LLVMBuildRet(b, r);
    LLVMDisposeBuilder(b);
}

static void build_api(aot_emit *e)
{
    wrapper(e, "create", "dtl_cmodel_api_create", 'p', "lpl", true);
    wrapper(e, "free", "dtl_cmodel_free", 'v', "p", false);
    wrapper(e, "error", "dtl_cmodel_error", 'p', "p", false);
    wrapper(e, "load", "dtl_cmodel_api_load", 'i', "pp", false);
    wrapper(e, "save", "dtl_cmodel_api_save", 'i', "pp", false);
    wrapper(e, "set_param", "dtl_cmodel_api_set", 'i', "pppl", false);
    wrapper(e, "get_param", "dtl_cmodel_api_get", 'i', "pppl", false);
    wrapper(e, "infer", "dtl_cmodel_api_infer", 'i', "pplp", false);
    wrapper(e, "train_step", "dtl_cmodel_api_train_step", 'i', "ppplp", false);
    wrapper(e, "set_total_steps", "dtl_cmodel_set_total_steps", 'v', "pl", false);
}

/* ---- the header -------------------------------------------------------------------------------- */

static const char *c_type(dtl_dtype t)
{
    switch (t) {
    case DTL_DTYPE_F32: return "float";
    case DTL_DTYPE_F64: return "double";
    case DTL_DTYPE_I32: return "int32_t";
    case DTL_DTYPE_I64: return "int64_t";
    case DTL_DTYPE_BOOL: return "uint8_t";
    default: return "uint16_t";   /* f16, bf16: their bits */
    }
}

static const dtl_node *find_input(const dtl_graph *g, const char *name)
{
    for (dtl_val v = 0; v < g->nnodes; v++)
        if (g->nodes[v].op == DTL_OP_INPUT && strcmp(g->nodes[v].name, name) == 0)
            return &g->nodes[v];
    return NULL;
}

static const dtl_node *find_output(const dtl_graph *g, const char *name)
{
    for (uint32_t k = 0; k < g->nouts; k++)
        if (strcmp(g->outs[k].name, name) == 0)
            return &g->nodes[g->outs[k].val];
    return NULL;
}

static int64_t per_row(const dtl_node *n)
{
    int64_t k = 1;
    for (uint32_t i = 1; i < n->rank; i++)
        k *= n->shape[i];
    return k;
}

static void write_header(FILE *f, const char *name, const aot_model *am, const char *source,
                         const char *model, const dtl_aot_opts *o)
{
    char up[300], ty[200];
    size_t n = strlen(name);
    for (size_t i = 0; i <= n && i < sizeof up; i++)
        up[i] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 'a' + 'A' : name[i]);
    up[sizeof up - 1] = '\0';
    const dtl_graph *sg = am->step.kp ? &am->step.g : NULL;
    const dtl_graph *ig = am->infer.kp ? &am->infer.g : NULL;
    const dtl_node *x = find_input(sg ? sg : ig, "x");
    const dtl_node *yv = ig ? find_output(ig, "y") : NULL;
    const dtl_node *lab = sg ? find_input(sg, "y") : NULL;
    const char *xt = x ? c_type(x->dtype) : "float", *yt = yv ? c_type(yv->dtype) : "float";
    const char *lt = lab ? c_type(lab->dtype) : "int64_t";
    fprintf(f, "/* %s.h — the model %s of %s, compiled ahead of time by dtlc.\n", name,
            model ? model : "?", source ? base_name(source) : "?");
    fprintf(f, " * Generated by `dtlc compile`: do not edit.\n *\n");
    if (o->kind == DTL_AOT_OBJECT)
        fprintf(f, " * Link: cc main.c %s -L<libdir> -ldtlrt -lm -lpthread\n",
                base_name(o->output));
    else
        fprintf(f, " * Link: cc main.c ./%s -lm   (it holds what it needs of libdtlrt)\n",
                base_name(o->output));
    fprintf(f, " * The code is for this machine's CPU and its features (like -march=native).\n"
               " *\n"
               " * Functions that can fail return 0 on success and -1 on failure, and\n"
               " * %s_error(m) says why. One context is used by one thread at a time;\n"
               " * the model's loops share the process's thread pool (DTL_THREADS).\n"
               " *\n", name);
    fprintf(f, " * Batch: %" PRId64 " rows.\n", am->L->batch);
    if (x)
        fprintf(f, " * x: %s (%" PRId64 " values a row)\n",
                dtl_tensor_str(ty, sizeof ty, x->dtype, x->rank, x->shape), per_row(x));
    if (yv)
        fprintf(f, " * y = forward(x): %s (%" PRId64 " values a row)\n",
                dtl_tensor_str(ty, sizeof ty, yv->dtype, yv->rank, yv->shape), per_row(yv));
    fprintf(f, " * Parameters and optimizer state (for %s_set_param / _get_param):\n", name);
    for (uint32_t i = 0; i < am->ntensors; i++) {
        const dtl_node *t = am->tensors[i];
        fprintf(f, " *   %-6s %-24s %s\n", t->op == DTL_OP_PARAM ? "param" : "state", t->name,
                dtl_tensor_str(ty, sizeof ty, t->dtype, t->rank, t->shape));
    }
    fprintf(f, " */\n#ifndef %s_H\n#define %s_H\n\n#include <stddef.h>\n#include <stdint.h>\n\n"
               "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n", up, up);
    fprintf(f, "#define %s_BATCH %" PRId64 "   /* rows of a training step */\n", up,
            am->L->batch);
    if (x)
        fprintf(f, "#define %s_IN %" PRId64 "   /* values in a row of x */\n", up, per_row(x));
    if (yv)
        fprintf(f, "#define %s_OUT %" PRId64 "   /* values in a row of y */\n", up, per_row(yv));
    /* The declarations, with "@" standing for the name. */
    static const char *const decls =
        "\n/* A context: the model's parameters, optimizer state and working memory. */\n"
        "typedef struct dtl_cmodel @_ctx;\n\n"
        "/* A new context: parameters initialized from seed as `dtlc run --seed SEED` does,\n"
        " * optimizer state zero. NULL on failure, with the reason in errbuf (may be NULL). */\n"
        "@_ctx *@_create(uint64_t seed, char *errbuf, size_t errlen);\n"
        "void @_free(@_ctx *m);\n"
        "/* The last failure's message. */\n"
        "const char *@_error(const @_ctx *m);\n\n"
        "/* Weights from a safetensors file (`dtlc run --save`, or @_save): every\n"
        " * parameter, and the optimizer state when the file has it. */\n"
        "int @_load(@_ctx *m, const char *path);\n"
        "/* Every parameter and optimizer state into a safetensors file (atomically). */\n"
        "int @_save(@_ctx *m, const char *path);\n"
        "/* Copies a tensor (by the name above) in or out; nbytes must be its size. */\n"
        "int @_set_param(@_ctx *m, const char *name, const void *data, size_t nbytes);\n"
        "int @_get_param(@_ctx *m, const char *name, void *data, size_t nbytes);\n\n";
    for (const char *s = decls; *s; s++)
        if (*s == '@')
            fputs(name, f);
        else
            fputc(*s, f);
    if (yv)
        fprintf(f,
                "/* y = forward(x) for any number of rows: x is rows x %s_IN, y rows x %s_OUT. */\n"
                "int %s_infer(%s_ctx *m, const %s *x, int64_t rows, %s *y);\n",
                up, up, name, name, xt, yt);
    else
        fprintf(f, "/* (This model has no forward(x): %s_infer always fails.) */\n"
                   "int %s_infer(%s_ctx *m, const void *x, int64_t rows, void *y);\n",
                name, name, name);
    fprintf(f,
            "/* One training step (forward, loss, gradients, optimizer update) on %s_BATCH\n"
            " * rows: x, y their labels; step counts the updates from 1, as `dtlc run` does\n"
            " * (Adam's bias correction and schedules read it). loss may be NULL. */\n"
            "int %s_train_step(%s_ctx *m, const %s *x, const %s *y, int64_t step,\n"
            "%*sdouble *loss);\n"
            "/* The run's total number of steps, for a cosine schedule without `steps`. */\n"
            "void %s_set_total_steps(%s_ctx *m, int64_t total_steps);\n\n",
            up, name, name, xt, lt, (int)(n + strlen("int _train_step(")), "", name, name);
    fprintf(f, "#ifdef __cplusplus\n}\n#endif\n\n#endif\n");
}

/* ---- emitting ---------------------------------------------------------------------------------- */

/* Runs argv (argv[0] looked up in PATH) and waits; false with err set unless it exits 0. */
static bool run_tool(char **argv, dtl_err *err)
{
    pid_t pid;
    int st = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
    if (st != 0)
        return dtl_err_set(err, DTL_ERR_IO, "cannot run %s: %s", argv[0], strerror(st));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return dtl_err_set(err, DTL_ERR_IO, "waiting for %s: %s", argv[0], strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return true;
    char line[400];
    size_t k = 0;
    for (char **a = argv; *a && k < sizeof line - 1; a++)
        k += (size_t)snprintf(line + k, sizeof line - k, "%s%s", a == argv ? "" : " ", *a);
    if (WIFEXITED(status))
        return dtl_err_set(err, DTL_ERR_IO, "linking failed (exit status %d): %s",
                           WEXITSTATUS(status), line);
    return dtl_err_set(err, DTL_ERR_IO, "linking failed (signal %d): %s", WTERMSIG(status),
                       line);
}

/* cc -shared -o so obj rtlib -lm -lpthread -Wl,--exclude-libs,ALL -Wl,-soname,NAME.so, where
 * cc is o->cc, $CC or "cc" (split at blanks: CC="ccache gcc" works). The soname is the
 * output's base name, so a program linked with ./NAME.so finds it by its rpath. */
static bool link_shared(const dtl_aot_opts *o, const char *obj, const char *so, dtl_err *err)
{
    const char *rtlib = o->rtlib ? o->rtlib : dtl_aot_rtlib();
    if (access(rtlib, R_OK) != 0)
        return dtl_err_set(err, DTL_ERR_IO, "cannot link %s: no runtime library %s (`make "
                           "install` puts libdtlrt.a there; DTL_LIBDTLRT=FILE names another)",
                           o->output, rtlib);
    const char *cc = o->cc ? o->cc : getenv("CC");
    if (!cc || !*cc)
        cc = "cc";
    char *words = strdup(cc);
    char *argv[64];
    int n = 0;
    if (!words)
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
    for (char *w = strtok(words, " \t"); w && n < 48; w = strtok(NULL, " \t"))
        argv[n++] = w;
    if (n == 0)
        argv[n++] = "cc";
    char soname[300];
    snprintf(soname, sizeof soname, "-Wl,-soname,%s", base_name(o->output));
    const char *rest[] = {"-shared", "-o", so, obj, rtlib,
                          "-lm", "-lpthread", "-Wl,--exclude-libs,ALL", soname};
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
        argv[n++] = (char *)rest[i];
    argv[n] = NULL;
    bool ok = run_tool(argv, err);
    free(words);
    return ok;
}

/* Writes the object (and the .so) to o->output through temporary files. */
static bool emit_output(LLVMTargetMachineRef tm, LLVMModuleRef mod, const dtl_aot_opts *o,
                        dtl_err *err)
{
    size_t n = strlen(o->output);
    char *tmp = malloc(n + 32), *tso = malloc(n + 32);
    if (!tmp || !tso) {
        free(tmp);
        free(tso);
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
    }
    snprintf(tmp, n + 32, "%s.tmpXXXXXX", o->output);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        free(tso);
        return dtl_err_set(err, DTL_ERR_IO, "cannot write %s: %s", o->output, strerror(e));
    }
    close(fd);
    snprintf(tso, n + 32, "%s.so", tmp);
    bool ok = false;
    char *msg = NULL;
    if (LLVMTargetMachineEmitToFile(tm, mod, tmp, LLVMObjectFile, &msg)) {
        dtl_err_set(err, DTL_ERR_IO, "cannot write %s: %s", o->output, msg ? msg : "?");
        goto out;
    }
    if (o->kind == DTL_AOT_OBJECT) {
        mode_t mask = umask(0);   /* mkstemp makes 0600; give the file the usual mode */
        umask(mask);
        chmod(tmp, 0666 & ~mask);
        if (rename(tmp, o->output) != 0) {
            dtl_err_set(err, DTL_ERR_IO, "cannot write %s: %s", o->output, strerror(errno));
            goto out;
        }
    } else {
        if (!link_shared(o, tmp, tso, err))
            goto out;
        if (rename(tso, o->output) != 0) {
            dtl_err_set(err, DTL_ERR_IO, "cannot write %s: %s", o->output, strerror(errno));
            goto out;
        }
    }
    ok = true;
out:
    LLVMDisposeMessage(msg);
    unlink(tmp);
    unlink(tso);
    free(tmp);
    free(tso);
    return ok;
}

static bool emit_header(const char *path, const char *name, const aot_model *am,
                        const dtl_aot_opts *o, dtl_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
    write_header(f, name, am, o->source, o->model, o);
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        free(buf);
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
    }
    dtl_fs_piece piece = {buf, len};
    bool ok = dtl_fs_write_atomic(path, &piece, 1, err);
    free(buf);
    return ok;
}

/* Builds prog p's module in c (prefix "<name>_dtl_<what>_"), or NULL with err set. */
static LLVMModuleRef prog_module(LLVMContextRef c, LLVMTargetMachineRef tm, aot_prog *p,
                                 const char *name, const char *what, dtl_err *err)
{
    char prefix[280];
    snprintf(prefix, sizeof prefix, "%s_dtl_%s_", name, what);
    snprintf(p->entry, sizeof p->entry, "%sstep", prefix);
    return dtl_llvm_build_module(c, tm, p->kp, prefix, &p->L, err);
}

bool dtl_aot_compile(const dtl_lowered *L, const dtl_aot_opts *o, dtl_err *err)
{
    aot_model am;
    memset(&am, 0, sizeof am);
    am.L = L;
    am.step.src = &L->step;
    am.infer.src = L->has_infer ? &L->infer : NULL;
    char *name = dtl_aot_name(o->output), *header = dtl_aot_header_path(o->output);
    LLVMTargetMachineRef tm = NULL;
    LLVMContextRef c = NULL;
    LLVMModuleRef mod = NULL, ms = NULL;
    aot_emit e;
    memset(&e, 0, sizeof e);
    bool ok = false;
    if (!name || !header) {
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (strlen(name) > 200) {
        dtl_err_set(err, DTL_ERR_USAGE, "%s: the name is too long for C symbols", o->output);
        goto out;
    }
    if ((am.infer.src && !plan(&am.infer, "infer", err)) || !plan(&am.step, "step", err) ||
        !collect_tensors(&am, err) || !(tm = dtl_llvm_host_tm(false, err)))
        goto out;
    c = LLVMContextCreate();
    if (am.infer.kp && !(mod = prog_module(c, tm, &am.infer, name, "infer", err)))
        goto out;
    if (!(ms = prog_module(c, tm, &am.step, name, "train", err)))
        goto out;
    if (!mod)
        mod = ms, ms = NULL;
    else {
        LLVMModuleRef src = ms;
        ms = NULL;   /* LLVMLinkModules2 takes it, also on failure */
        if (LLVMLinkModules2(mod, src)) {
            dtl_err_set(err, DTL_ERR_INTERNAL, "cannot link the infer and the step modules");
            goto out;
        }
    }
    /* The entries are reached through the descriptor only. */
    aot_prog *progs[2] = {&am.infer, &am.step};
    for (int i = 0; i < 2; i++) {
        LLVMValueRef fn = progs[i]->kp ? LLVMGetNamedFunction(mod, progs[i]->entry) : NULL;
        if (fn)
            LLVMSetVisibility(fn, LLVMHiddenVisibility);
    }
    e.c = c;
    e.m = mod;
    e.name = name;
    e.i8p = LLVMPointerType(LLVMInt8TypeInContext(c), 0);
    e.i64 = LLVMInt64TypeInContext(c);
    e.i32 = LLVMInt32TypeInContext(c);
    e.f64 = LLVMDoubleTypeInContext(c);
    e.vd = LLVMVoidTypeInContext(c);
    if (!build_desc(&e, &am, o->source, o->model, err))
        goto out;
    build_api(&e);
    if (e.oom) {
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (!dtl_llvm_optimize(mod, tm, err) || !emit_output(tm, mod, o, err) ||
        !emit_header(header, name, &am, o, err))
        goto out;
    ok = true;
out:
    free(e.f);
    if (ms)
        LLVMDisposeModule(ms);
    if (mod)
        LLVMDisposeModule(mod);
    if (c)
        LLVMContextDispose(c);
    if (tm)
        LLVMDisposeTargetMachine(tm);
    free(am.tensors);
    free(am.offsets);
    prog_free(&am.infer);
    prog_free(&am.step);
    free(name);
    free(header);
    return ok;
}
