/* tests/unit/test_fuse.c — fusion and the memory plan (compiler/passes/fuse.h).
 *
 * The plan is what the fast backends trust, so it is tested by running it: an interpreter
 * of the kernel program (below) executes every kernel member by member with the reference
 * kernels, using exactly the plan's memory — one arena at the plan's offsets, filled with
 * NaN bytes before each run so that a value read after it was overwritten shows; aliases;
 * in-place outs; updates written straight into (a copy of) the store; members that are not
 * stored kept in scratch buffers, as registers would be. Each out is stored as soon as its
 * member is computed, which is what a loop that stores as it goes does, so the in-place
 * rules are held to the strictest order. Its results must equal the reference backend's
 * (runtime/exec.h) bit for bit, on the same inputs and store seed, over several runs (so
 * optimizer state carries over), for the step, eval and infer graphs of every example (as
 * lowered and after the pass pipeline) and for random graphs, in every opts mode; and
 * dtl_kprog_verify must accept every plan — and reject broken ones. Then the shape of the
 * MLP's fused step is checked: few kernels, bias + relu in the first matmul's epilogue, the
 * Adam updates in place.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../compiler/autodiff.h"
#include "../../compiler/lower.h"
#include "../../compiler/nnops.h"
#include "../../compiler/passes/fuse.h"
#include "../../compiler/passes/passes.h"
#include "../../kernels/ref/ref.h"
#include "../../lang/check.h"
#include "../../runtime/exec.h"
#include "../../runtime/philox.h"
#include "unit.h"

#ifndef DTL_SRC_STDLIB_DIR
#define DTL_SRC_STDLIB_DIR "stdlib"
#endif

#define NONE UINT32_MAX
enum { RUNS = 3 };

enum { NMODES = 9 };
static const dtl_fuse_opts all_modes[NMODES] = {
    {false, false, false, false}, {true, false, false, false}, {false, true, false, false},
    {true, true, false, false},   {false, false, true, false}, {true, false, true, false},
    {false, true, true, false},   {true, true, true, false},
    {false, false, false, true},   /* without ROW kernels: reductions with prologues only */
};

static uint64_t node_bytes(const dtl_node *n)
{
    return dtl_node_numel(n) * dtl_dtype_size(n->dtype);
}

static void *xmalloc(size_t n)
{
    void *p = aligned_alloc(64, (n + 63) / 64 * 64 + 64);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(99);
    }
    return p;
}

/* ==== inputs ============================================================================== */

/* Values for every INPUT of g at run `run`: floats uniform in [-1, 1), integers in
 * [0, ilimit) — "step" is run + 1, "total_steps" 100. */
typedef struct inputs {
    dtl_binding *b;
    size_t n;
} inputs;

static void inputs_make(inputs *in, const dtl_graph *g, uint64_t seed, int run, int64_t ilimit)
{
    in->b = calloc(g->nnodes + 1, sizeof *in->b);
    in->n = 0;
    for (uint32_t v = 0; v < g->nnodes; v++) {
        const dtl_node *n = &g->nodes[v];
        if (n->op != DTL_OP_INPUT)
            continue;
        uint64_t cnt = dtl_node_numel(n);
        void *data = xmalloc(node_bytes(n));
        dtl_rng r;
        dtl_rng_init(&r, seed, dtl_rng_stream_id(n->name, (uint64_t)run));
        for (uint64_t i = 0; i < cnt; i++) {
            double u = dtl_rng_uniform_f64(&r);
            int64_t iv = (int64_t)(u * (double)ilimit);
            if (strcmp(n->name, "step") == 0)
                iv = run + 1;
            else if (strcmp(n->name, "total_steps") == 0)
                iv = 100;
            switch (n->dtype) {
            case DTL_DTYPE_F32: ((float *)data)[i] = (float)(2 * u - 1); break;
            case DTL_DTYPE_F64: ((double *)data)[i] = 2 * u - 1; break;
            case DTL_DTYPE_I32: ((int32_t *)data)[i] = (int32_t)iv; break;
            case DTL_DTYPE_I64: ((int64_t *)data)[i] = iv; break;
            case DTL_DTYPE_BOOL: ((uint8_t *)data)[i] = u < 0.5; break;
            default: break;
            }
        }
        dtl_binding *b = &in->b[in->n++];
        b->name = n->name;
        b->data = data;
        b->dtype = n->dtype;
        b->rank = n->rank;
        memcpy(b->shape, n->shape, sizeof b->shape);
    }
}

static void inputs_free(inputs *in)
{
    for (size_t i = 0; i < in->n; i++)
        free((void *)in->b[i].data);
    free(in->b);
}

static const void *input_data(const inputs *in, const char *name)
{
    for (size_t i = 0; i < in->n; i++)
        if (strcmp(in->b[i].name, name) == 0)
            return in->b[i].data;
    return NULL;
}

/* ==== the interpreter of a kernel program ================================================= */

typedef struct interp {
    const dtl_kprog *p;
    const dtl_graph *g;
    dtl_store *store;
    unsigned char *arena, *cblock;
    void **scratch;            /* per member: its value as registers would hold it */
    const inputs *in;
    bool per_element;          /* loops element by element (else member by member) */
} interp;

static void *ptr_of(interp *it, dtl_val v)
{
    const dtl_loc *l = &it->p->loc[v];
    switch (l->kind) {
    case DTL_LOC_INPUT:
        return (void *)input_data(it->in, it->g->nodes[v].name);
    case DTL_LOC_STORE: {
        dtl_store_entry *e = dtl_store_find(it->store, it->g->nodes[l->of].name);
        return e ? e->t.data : NULL;
    }
    case DTL_LOC_CONST:
        return it->cblock + l->offset;
    case DTL_LOC_ARENA:
        return it->arena + l->offset;
    case DTL_LOC_ALIAS:
        return ptr_of(it, l->of);
    default:
        return NULL;
    }
}

static bool interp_init(interp *it, const dtl_kprog *p, dtl_store *store)
{
    memset(it, 0, sizeof *it);
    it->p = p;
    it->g = p->g;
    it->store = store;
    it->arena = xmalloc(p->arena_bytes + 1);
    it->cblock = xmalloc(p->const_bytes + 1);
    it->scratch = calloc(p->g->nnodes + 1, sizeof *it->scratch);
    dtl_err err;
    for (uint32_t v = 0; v < p->g->nnodes; v++) {
        const dtl_node *n = &p->g->nodes[v];
        if (p->kernel_of[v] != NONE)
            it->scratch[v] = xmalloc(node_bytes(n) + 1);
        if (p->loc[v].kind == DTL_LOC_CONST &&
            !dtl_ref_kernel(n, NULL, it->cblock + p->loc[v].offset, dtl_store_seed(store), &err)) {
            fprintf(stderr, "interp: const %%%u: %s\n", v, err.msg);
            return false;
        }
    }
    return true;
}

static void interp_free(interp *it)
{
    for (uint32_t v = 0; v < it->g->nnodes; v++)
        free(it->scratch[v]);
    free(it->scratch);
    free(it->arena);
    free(it->cblock);
}

static bool is_out(const dtl_kernel *k, dtl_val v)
{
    for (uint32_t i = 0; i < k->nouts; i++)
        if (k->outs[i] == v)
            return true;
    return false;
}

/* Member v of kernel ki computed as a whole tensor from its operands (members of the kernel
 * from scratch, the rest from the plan's memory; a folded transpose materialized), and
 * stored at once when it is an out. */
static bool run_whole(interp *it, const dtl_kernel *k, uint32_t ki, dtl_val v, uint64_t seed)
{
    const dtl_kprog *p = it->p;
    const dtl_graph *g = it->g;
    const dtl_node *n = &g->nodes[v];
    dtl_ref_arg args[64];
    void *tmp[2] = {NULL, NULL};
    for (uint32_t j = 0; j < n->nin && j < 64; j++) {
        dtl_val r = n->in[j];
        const dtl_node *rn = &g->nodes[r];
        void *data;
        if (k->kind == DTL_K_MATMUL && v == k->root) {
            dtl_val src = j ? k->matmul_b : k->matmul_a;
            bool tr = j ? k->trans_b : k->trans_a;
            data = ptr_of(it, src);
            if (tr) {   /* materialize the folded transpose */
                const dtl_node *sn = &g->nodes[src];
                dtl_ref_arg a = {data, sn->dtype, sn->rank, sn->shape};
                tmp[j] = xmalloc(node_bytes(rn) + 1);
                dtl_err err;
                if (!dtl_ref_kernel(rn, &a, tmp[j], seed, &err))
                    return false;
                data = tmp[j];
            }
        } else if (p->kernel_of[r] == ki)
            data = it->scratch[r];
        else
            data = ptr_of(it, r);
        if (!data && node_bytes(rn)) {
            fprintf(stderr, "interp: k%u %%%u: operand %%%u has no memory\n", ki, v, r);
            return false;
        }
        args[j] = (dtl_ref_arg){data, rn->dtype, rn->rank, rn->shape};
    }
    dtl_err err;
    bool ok = dtl_ref_kernel(n, args, it->scratch[v], seed, &err);
    free(tmp[0]);
    free(tmp[1]);
    if (!ok) {
        fprintf(stderr, "interp: k%u %%%u: %s\n", ki, v, err.msg);
        return false;
    }
    if (is_out(k, v)) {
        void *dst = ptr_of(it, v);
        if (!dst && node_bytes(n)) {
            fprintf(stderr, "interp: out %%%u has no memory\n", v);
            return false;
        }
        if (node_bytes(n))
            memcpy(dst, it->scratch[v], node_bytes(n));
    }
    return true;
}

/* The offset (in elements) of the element that operand shape (rank, shape) gives to loop
 * index idx (of rank lrank) under numpy broadcasting. */
static uint64_t bcast_index(uint32_t rank, const int64_t *shape, uint32_t lrank,
                            const int64_t *idx)
{
    uint64_t at = 0;
    for (uint32_t j = 0; j < rank; j++) {
        int64_t i = shape[j] == 1 ? 0 : idx[lrank - rank + j];
        at = at * (uint64_t)shape[j] + (uint64_t)i;
    }
    return at;
}

/* A ROW kernel row by row, and in each row pass by pass (dtl_row_passes): the row values of
 * the pass first, then every full member of the pass element by element along the row, then
 * the pass's reductions over the row; each out stored as soon as it is computed. A member
 * that read something of a later pass would read the NaN bytes its scratch was filled with. */
static bool run_row_kernel(interp *it, const dtl_kernel *k, uint32_t ki, uint64_t seed)
{
    const dtl_kprog *p = it->p;
    const dtl_graph *g = it->g;
    uint32_t *pass = calloc(k->nmembers + 1, sizeof *pass);
    uint32_t np = dtl_row_passes(p, k, pass);
    int64_t L = k->shape[k->rank - 1], rows = 1;
    for (uint32_t d = 0; d + 1 < k->rank; d++)
        rows *= k->shape[d];
    bool ok = true;
    dtl_ref_arg args[3];
    dtl_err err;
    for (int64_t r = 0; r < rows && ok; r++)
        for (uint32_t ps = 0; ps <= np && ok; ps++)
            for (int stage = 0; stage < 3 && ok; stage++) {   /* row values, full, reductions */
                if (ps == np && stage > 0)
                    break;
                for (int64_t j = 0; j < (stage == 1 ? L : 1) && ok; j++) {
                    int64_t idx[DTL_MAX_RANK], lin = r * L + j;
                    for (uint32_t d = k->rank; d-- > 0;) {
                        idx[d] = lin % k->shape[d];
                        lin /= k->shape[d];
                    }
                    for (uint32_t m = 0; m < k->nmembers && ok; m++) {
                        dtl_val v = k->members[m];
                        const dtl_node *n = &g->nodes[v];
                        bool red = n->op == DTL_OP_SUM || n->op == DTL_OP_REDUCE_MAX;
                        bool row = !red && n->shape[n->rank - 1] == 1;
                        if (pass[m] != ps || (stage == 0) != row || (stage == 2) != red)
                            continue;
                        size_t es = dtl_dtype_size(n->dtype);
                        int64_t at = row || red ? r : r * L + j;
                        char *dst = (char *)it->scratch[v] + (size_t)at * es;
                        dtl_node one = *n;
                        one.rank = 0;
                        if (red) {   /* the row's reduction */
                            dtl_val x = n->in[0];
                            const dtl_node *xn = &g->nodes[x];
                            size_t xs = dtl_dtype_size(xn->dtype);
                            char *data = p->kernel_of[x] == ki ? it->scratch[x] : ptr_of(it, x);
                            one.rank = 1;
                            one.shape[0] = 1;
                            one.attr.red.axes = 1;
                            args[0] = (dtl_ref_arg){data + (size_t)(r * L) * xs, xn->dtype, 1, &L};
                        } else
                            for (uint32_t a = 0; a < n->nin; a++) {
                                dtl_val u = n->in[a];
                                const dtl_node *un = &g->nodes[u];
                                size_t us = dtl_dtype_size(un->dtype);
                                char *data;
                                if (p->kernel_of[u] == ki) {
                                    bool urow = un->shape[un->rank - 1] == 1;
                                    data = (char *)it->scratch[u] + (size_t)(urow ? r : r * L + j) * us;
                                } else {
                                    data = ptr_of(it, u);
                                    if (!data)
                                        return false;
                                    data += bcast_index(un->rank, un->shape, k->rank, idx) * us;
                                }
                                args[a] = (dtl_ref_arg){data, un->dtype, 0, NULL};
                            }
                        if (!dtl_ref_kernel(&one, args, dst, seed, &err)) {
                            fprintf(stderr, "interp: k%u %%%u: %s\n", ki, v, err.msg);
                            ok = false;
                        }
                        if (ok && is_out(k, v))
                            memcpy((char *)ptr_of(it, v) + (size_t)at * es, dst, es);
                    }
                }
            }
    free(pass);
    return ok;
}

/* One kernel as a loop that computes every elementwise member at loop index i, in member
 * order, reading operands at their (broadcast) index i and storing each out at index i as
 * soon as it is computed — the strictest order a backend may use, so an in-place out that
 * clobbers an input still to be read (at this index or another) shows. A matmul's product
 * is computed first, a reduce's root last, as whole tensors. */
static bool run_kernel_per_element(interp *it, const dtl_kernel *k, uint32_t ki, uint64_t seed,
                                   bool (*run_whole)(interp *, const dtl_kernel *, uint32_t,
                                                     dtl_val, uint64_t))
{
    const dtl_kprog *p = it->p;
    const dtl_graph *g = it->g;
    uint32_t first = 0, end = k->nmembers;
    if (k->kind == DTL_K_MATMUL) {
        if (!run_whole(it, k, ki, k->root, seed))
            return false;
        first = 1;
    }
    if (k->kind == DTL_K_REDUCE)
        end = k->nmembers - 1;
    uint64_t numel = 1;
    for (uint32_t d = 0; d < k->rank; d++)
        numel *= (uint64_t)k->shape[d];
    for (uint32_t m = first; m < end; m++)   /* an iota is the loop index: made whole */
        if (g->nodes[k->members[m]].op == DTL_OP_IOTA) {
            dtl_err err;
            if (!dtl_ref_kernel(&g->nodes[k->members[m]], NULL, it->scratch[k->members[m]], seed,
                                &err))
                return false;
        }
    int64_t idx[DTL_MAX_RANK] = {0};
    dtl_ref_arg args[3];
    for (uint64_t i = 0; i < numel; i++) {
        for (uint32_t m = first; m < end; m++) {
            dtl_val v = k->members[m];
            const dtl_node *n = &g->nodes[v];
            size_t es = dtl_dtype_size(n->dtype);
            char *dst = (char *)it->scratch[v] + i * es;
            if (n->op != DTL_OP_IOTA) {
                dtl_node one = *n;   /* the same op on one element */
                one.rank = 0;
                for (uint32_t j = 0; j < n->nin; j++) {
                    dtl_val r = n->in[j];
                    const dtl_node *rn = &g->nodes[r];
                    size_t rs = dtl_dtype_size(rn->dtype);
                    char *data;
                    if (p->kernel_of[r] == ki)
                        data = (char *)it->scratch[r] + i * rs;
                    else {
                        data = ptr_of(it, r);
                        if (!data)
                            return false;
                        data += bcast_index(rn->rank, rn->shape, k->rank, idx) * rs;
                    }
                    args[j] = (dtl_ref_arg){data, rn->dtype, 0, NULL};
                }
                dtl_err err;
                if (!dtl_ref_kernel(&one, args, dst, seed, &err)) {
                    fprintf(stderr, "interp: k%u %%%u: %s\n", ki, v, err.msg);
                    return false;
                }
            }
            if (is_out(k, v))
                memcpy((char *)ptr_of(it, v) + i * es, dst, es);
        }
        for (uint32_t d = k->rank; d-- > 0;)   /* the next loop index, row-major */
            if (++idx[d] < k->shape[d])
                break;
            else
                idx[d] = 0;
    }
    if (k->kind == DTL_K_REDUCE)
        return run_whole(it, k, ki, k->root, seed);
    return true;
}

/* Runs every kernel; then copies LOSS/VALUE outputs into vals[] (malloc'd) and commits the
 * updates that were not written in place (all read before any is written). */
static bool interp_run(interp *it, const inputs *in, void **vals)
{
    const dtl_kprog *p = it->p;
    const dtl_graph *g = it->g;
    it->in = in;
    memset(it->arena, 0xff, p->arena_bytes);   /* NaN in every float */
    uint64_t seed = dtl_store_seed(it->store);
    for (uint32_t ki = 0; ki < p->nk; ki++) {
        const dtl_kernel *k = &p->k[ki];
        for (uint32_t i = 0; i < k->nmembers; i++)
            memset(it->scratch[k->members[i]], 0xff, node_bytes(&g->nodes[k->members[i]]));
        if (it->per_element && k->kind == DTL_K_ROW) {
            if (!run_row_kernel(it, k, ki, seed))
                return false;
            continue;
        }
        if (it->per_element && k->kind != DTL_K_SINGLE) {
            if (!run_kernel_per_element(it, k, ki, seed, run_whole))
                return false;
            continue;
        }
        for (uint32_t i = 0; i < k->nmembers; i++)
            if (!run_whole(it, k, ki, k->members[i], seed))
                return false;
    }
    /* Outputs, then the commit: every copy is read before any is written. */
    void **staged = calloc(g->nouts + 1, sizeof *staged);
    for (uint32_t oi = 0; oi < g->nouts; oi++) {
        const dtl_output *o = &g->outs[oi];
        const dtl_node *n = &g->nodes[o->val];
        staged[oi] = xmalloc(node_bytes(n) + 1);
        void *src = ptr_of(it, o->val);
        if (node_bytes(n))
            memcpy(staged[oi], src, node_bytes(n));
    }
    for (uint32_t oi = 0; oi < g->nouts; oi++) {
        const dtl_output *o = &g->outs[oi];
        const dtl_node *n = &g->nodes[o->val];
        if (o->kind == DTL_OUT_PARAM || o->kind == DTL_OUT_STATE) {
            bool inplace = p->loc[o->val].kind == DTL_LOC_STORE && p->loc[o->val].of == o->target;
            if (!inplace && node_bytes(n))
                memcpy(dtl_store_find(it->store, g->nodes[o->target].name)->t.data, staged[oi],
                       node_bytes(n));
            free(staged[oi]);
        } else
            vals[oi] = staged[oi];
    }
    free(staged);
    return true;
}

/* ==== running a graph both ways =========================================================== */

static bool same_bytes(const char *what, const void *a, const void *b, uint64_t n)
{
    if (n == 0 || memcmp(a, b, n) == 0)
        return true;
    fprintf(stderr, "  %s: differs\n", what);
    return false;
}

/* Runs g on the reference backend and through the kernel program of every opts mode (and
 * also checks dtl_kprog_verify), RUNS times each, and compares outputs and stores bit for
 * bit. ilimit: integer inputs are in [0, ilimit). */
static bool check_graph(const char *label, const dtl_graph *g, int64_t ilimit,
                        unsigned elem_modes)
{
    uint64_t seed = 1234;
    dtl_err err;
    dtl_store *rs = dtl_store_new(seed);
    dtl_plan *rp = dtl_plan_new(&dtl_backend_ref, g, rs, NULL, &err);
    if (!rp) {
        fprintf(stderr, "%s: ref: %s\n", label, err.msg);
        dtl_store_free(rs);
        return false;
    }
    /* The reference results of every run. */
    void *want[RUNS][64];
    void *want_store[RUNS][64];
    size_t nst = 0;
    bool ok = true;
    uint32_t no = g->nouts < 64 ? g->nouts : 64;
    for (int run = 0; run < RUNS; run++) {
        inputs in;
        inputs_make(&in, g, seed, run, ilimit);
        if (!dtl_plan_run(rp, in.b, in.n, &err)) {
            fprintf(stderr, "%s: ref run: %s\n", label, err.msg);
            ok = false;
        }
        for (uint32_t oi = 0; oi < no; oi++) {
            dtl_tensor t;
            const dtl_node *n = &g->nodes[g->outs[oi].val];
            want[run][oi] = xmalloc(node_bytes(n) + 1);
            if (ok && dtl_plan_output(rp, g->outs[oi].name, &t, &err) && node_bytes(n))
                memcpy(want[run][oi], t.data, node_bytes(n));
        }
        nst = dtl_store_count(rs) < 64 ? dtl_store_count(rs) : 64;
        for (size_t s = 0; s < nst; s++) {
            dtl_store_entry *e = dtl_store_at(rs, s);
            uint64_t b = dtl_tensor_numel(&e->t) * dtl_dtype_size(e->t.dtype);
            want_store[run][s] = xmalloc(b + 1);
            memcpy(want_store[run][s], e->t.data, b);
        }
        inputs_free(&in);
    }
    for (int mode = 0; mode < NMODES && ok; mode++) {
        dtl_kprog *p = dtl_fuse(g, &all_modes[mode]);
        char why[400];
        if (!dtl_kprog_verify(p, why, sizeof why)) {
            fprintf(stderr, "%s mode %d: verify: %s\n", label, mode, why);
            dtl_kprog_print(stderr, p);
            ok = false;
        }
        dtl_store *s = dtl_store_new(seed);
        if (!dtl_store_bind(s, g, &err)) {
            fprintf(stderr, "%s: bind: %s\n", label, err.msg);
            ok = false;
        }
        interp it = {0};
        if (ok && !interp_init(&it, p, s))
            ok = false;
        it.per_element = elem_modes >> mode & 1;
        for (int run = 0; run < RUNS && ok; run++) {
            inputs in;
            inputs_make(&in, g, seed, run, ilimit);
            void *got[64] = {NULL};
            if (!interp_run(&it, &in, got)) {
                fprintf(stderr, "%s mode %d run %d: the interpreter failed\n", label, mode, run);
                ok = false;
            }
            for (uint32_t oi = 0; oi < no && ok; oi++) {
                const dtl_output *o = &g->outs[oi];
                if (o->kind == DTL_OUT_PARAM || o->kind == DTL_OUT_STATE)
                    continue;
                char what[200];
                snprintf(what, sizeof what, "%s mode %d run %d output %s", label, mode, run,
                         o->name);
                ok = same_bytes(what, got[oi], want[run][oi], node_bytes(&g->nodes[o->val]));
            }
            for (size_t st = 0; st < nst && ok; st++) {
                dtl_store_entry *e = dtl_store_at(s, st), *we = dtl_store_at(rs, st);
                char what[200];
                snprintf(what, sizeof what, "%s mode %d run %d store %s", label, mode, run,
                         e->name);
                ok = strcmp(e->name, we->name) == 0 &&
                     same_bytes(what, e->t.data, want_store[run][st],
                                dtl_tensor_numel(&e->t) * dtl_dtype_size(e->t.dtype));
            }
            for (uint32_t oi = 0; oi < no; oi++)
                free(got[oi]);
            inputs_free(&in);
            if (!ok) {
                fprintf(stderr, "--- the program:\n");
                dtl_kprog_print(stderr, p);
            }
        }
        if (it.p == p)
            interp_free(&it);
        dtl_store_free(s);
        dtl_kprog_free(p);
    }
    for (int run = 0; run < RUNS; run++) {
        for (uint32_t oi = 0; oi < no; oi++)
            free(want[run][oi]);
        for (size_t st = 0; st < nst; st++)
            free(want_store[run][st]);
    }
    dtl_plan_free(rp);
    dtl_store_free(rs);
    return ok;
}

/* ==== models ============================================================================== */

typedef struct model {
    dtl_ctx ctx;
    dtl_lowered low;
} model;

static bool model_load(model *m, const char *path, int64_t batch)
{
    dtl_ctx_init(&m->ctx);
    dtl_ctx_add_default_paths(&m->ctx);
    dtl_module *mod = dtl_check_path(&m->ctx, path);
    const dtl_train *t = mod && !dtl_diag_failed(&m->ctx.diags) ? dtl_lower_find_train(mod, NULL)
                                                                 : NULL;
    dtl_lower_opts lo = {.batch = batch};
    if (!t || !dtl_lower_train(&m->ctx, t, &lo, &m->low)) {
        dtl_diag_print(&m->ctx.diags, stderr, false);
        dtl_ctx_free(&m->ctx);
        return false;
    }
    return true;
}

static void model_free(model *m)
{
    dtl_lowered_free(&m->low);
    dtl_ctx_free(&m->ctx);
}

static const char *const examples[] = {"mnist_mlp", "mnist_pipeline", "mnist_tensor_parallel"};

static void test_examples(void)
{
    for (size_t e = 0; e < sizeof examples / sizeof *examples; e++) {
        char path[512];
        snprintf(path, sizeof path, "%s/../examples/%s.dtl", DTL_SRC_STDLIB_DIR, examples[e]);
        model m;
        bool loaded = model_load(&m, path, 3);
        CHECK(loaded);
        if (!loaded)
            continue;
        const dtl_graph *gs[3] = {&m.low.step, &m.low.eval, m.low.has_infer ? &m.low.infer : NULL};
        static const char *const gname[3] = {"step", "eval", "infer"};
        for (int k = 0; k < 3; k++) {
            if (!gs[k])
                continue;
            char label[200];
            snprintf(label, sizeof label, "%s %s", examples[e], gname[k]);
            CHECK(check_graph(label, gs[k], 10, 0));
            dtl_graph opt;
            dtl_err err;
            bool passed = dtl_passes_run(&opt, gs[k], NULL, &err);
            CHECK(passed);
            if (passed) {
                snprintf(label, sizeof label, "%s %s (passes)", examples[e], gname[k]);
                /* The default plan of what the backends compile, also element by element. */
                CHECK(check_graph(label, &opt, 10, k == 0 ? 1 : 0));
            } else
                fprintf(stderr, "%s: passes: %s\n", label, err.msg);
            dtl_graph_free(&opt);
        }
        model_free(&m);
    }
}

/* ==== random graphs ======================================================================= */

/* A random graph over a few sizes, so that shapes meet often: elementwise chains with
 * broadcasting, reductions whose results are combined with their operands again (the
 * pattern that would make a cycle if fused carelessly), matrix products with transposed
 * operands and epilogues, views, data movement, and parameter and state updates of every
 * kind (reading the old value at the same index or elsewhere, read after the update, swaps,
 * through a view). */
typedef struct gen {
    dtl_graph *g;
    dtl_rng r;
    dtl_dtype dt;
    int64_t d[3];
    dtl_val pool[512];
    uint32_t np;
    dtl_val leaves[16];
    uint32_t nleaves;
    dtl_val step;
    int names;
} gen;

static uint32_t rnd(gen *G, uint32_t n)
{
    return (uint32_t)dtl_rng_below(&G->r, n);
}

static const dtl_node *gnode(gen *G, dtl_val v)
{
    return &G->g->nodes[v];
}

static void add(gen *G, dtl_val v)
{
    if (G->np < 512)
        G->pool[G->np++] = v;
}

/* A random value of the pool, the later ones likelier. */
static dtl_val pick(gen *G)
{
    uint32_t a = rnd(G, G->np), b = rnd(G, G->np);
    return G->pool[a > b ? a : b];
}

static void rand_shape(gen *G, uint32_t *rank, int64_t *shape)
{
    switch (rnd(G, 6)) {
    case 0: *rank = 0; break;
    case 1: *rank = 1; shape[0] = G->d[rnd(G, 3)]; break;
    case 2: case 3: *rank = 2; shape[0] = G->d[0]; shape[1] = G->d[1]; break;
    case 4: *rank = 2; shape[0] = G->d[1]; shape[1] = G->d[2]; break;
    default: *rank = 3; shape[0] = 2; shape[1] = G->d[0]; shape[2] = G->d[1]; break;
    }
}

static bool bcast(const dtl_node *a, const dtl_node *b)
{
    uint32_t rr = a->rank > b->rank ? a->rank : b->rank;
    for (uint32_t i = 0; i < rr; i++) {
        int64_t da = i < a->rank ? a->shape[a->rank - 1 - i] : 1;
        int64_t db = i < b->rank ? b->shape[b->rank - 1 - i] : 1;
        if (da != db && da != 1 && db != 1)
            return false;
    }
    return true;
}

/* A pool value that broadcasts with a (a itself if none turns up). */
static dtl_val partner(gen *G, dtl_val a)
{
    for (int t = 0; t < 12; t++) {
        dtl_val b = pick(G);
        if (gnode(G, b)->dtype == gnode(G, a)->dtype && bcast(gnode(G, a), gnode(G, b)))
            return b;
    }
    return rnd(G, 2) ? a : dtl_g_scalar(G->g, gnode(G, a)->dtype, 0.5);
}

static dtl_val leaf(gen *G, uint32_t rank, const int64_t *shape)
{
    char name[32];
    snprintf(name, sizeof name, "v%d", G->names++);
    dtl_val v;
    switch (rnd(G, 3)) {
    case 0:
        v = dtl_g_input(G->g, name, G->dt, rank, shape);
        break;
    case 1:
        v = dtl_g_param(G->g, name, G->dt, rank, shape,
                        (dtl_init){DTL_INIT_UNIFORM, -1, 1, NULL});
        break;
    default:
        v = dtl_g_state(G->g, name, G->dt, rank, shape);
        break;
    }
    if (gnode(G, v)->op != DTL_OP_INPUT && G->nleaves < 16)
        G->leaves[G->nleaves++] = v;
    return v;
}

static void gen_op(gen *G)
{
    dtl_graph *g = G->g;
    dtl_val a = pick(G);
    const dtl_node *an = gnode(G, a);
    uint32_t rank = an->rank;
    int64_t shape[DTL_MAX_RANK];
    memcpy(shape, an->shape, sizeof shape);
    switch (rnd(G, 20)) {
    case 0: case 1: case 2: {
        static const dtl_op ops[] = {DTL_OP_NEG, DTL_OP_ABS, DTL_OP_TANH, DTL_OP_SIGMOID,
                                     DTL_OP_RELU, DTL_OP_SIN, DTL_OP_COS};
        add(G, dtl_g_unary(g, ops[rnd(G, 7)], a));
        break;
    }
    case 3: case 4: case 5: case 6: {
        static const dtl_op ops[] = {DTL_OP_ADD, DTL_OP_SUB, DTL_OP_MUL, DTL_OP_MAX,
                                     DTL_OP_MIN};
        dtl_val b = partner(G, a);
        add(G, rnd(G, 2) ? dtl_g_binary(g, ops[rnd(G, 5)], a, b)
                         : dtl_g_binary(g, ops[rnd(G, 5)], b, a));
        break;
    }
    case 7: {   /* a mask and a choice */
        dtl_val b = partner(G, a);
        dtl_val c = dtl_g_binary(g, rnd(G, 2) ? DTL_OP_LT : DTL_OP_GE, a, b);
        add(G, dtl_g_where(g, c, a, b));
        break;
    }
    case 8: {   /* broadcast to a larger shape */
        int64_t out[DTL_MAX_RANK];
        uint32_t extra = rank < 3 ? rnd(G, 2) : 0, ro = rank + extra;
        for (uint32_t i = 0; i < extra; i++)
            out[i] = 2;
        for (uint32_t i = 0; i < rank; i++)
            out[extra + i] = shape[i] == 1 ? (int64_t)(1 + 2 * rnd(G, 2)) : shape[i];
        add(G, dtl_g_broadcast(g, a, ro, out));
        break;
    }
    case 9: case 10: {   /* a reduction, often combined with its operand again */
        if (rank == 0)
            break;
        uint32_t axes = 1 + rnd(G, (1u << rank) - 1);
        bool keep = rnd(G, 3) != 0;
        dtl_val s = dtl_g_reduce(g, rnd(G, 2) ? DTL_OP_SUM : DTL_OP_REDUCE_MAX, a, axes, keep);
        add(G, s);
        if (keep && rnd(G, 2))
            add(G, dtl_g_binary(g, DTL_OP_SUB, a, s));
        break;
    }
    case 11: case 12: {   /* a matrix product, operands maybe transposed */
        if (rank != 2)
            break;
        dtl_val x = a;
        if (rnd(G, 3) == 0)   /* x = transpose of something [k, m] */
            x = dtl_g_transpose(g, a, (const uint32_t[]){1, 0});
        int64_t k = gnode(G, x)->shape[1], n = G->d[rnd(G, 3)];
        dtl_val y = DTL_VAL_NONE;
        for (int t = 0; t < 10 && y == DTL_VAL_NONE; t++) {
            dtl_val c = pick(G);
            const dtl_node *cn = gnode(G, c);
            if (cn->rank == 2 && cn->dtype == G->dt && cn->shape[0] == k)
                y = c;
            else if (cn->rank == 2 && cn->dtype == G->dt && cn->shape[1] == k)
                y = dtl_g_transpose(g, c, (const uint32_t[]){1, 0});
        }
        if (y == DTL_VAL_NONE) {
            if (rnd(G, 2))
                y = leaf(G, 2, (const int64_t[]){k, n});
            else
                y = dtl_g_transpose(g, leaf(G, 2, (const int64_t[]){n, k}),
                                    (const uint32_t[]){1, 0});
        }
        add(G, dtl_g_matmul(g, x, y));
        if (rnd(G, 4) == 0)
            add(G, x);   /* the transposed operand is needed elsewhere too */
        break;
    }
    case 13: {   /* a view */
        int64_t n = (int64_t)dtl_node_numel(an);
        if (rnd(G, 2))
            add(G, dtl_g_reshape(g, a, 1, &n));
        else {
            int64_t s2[DTL_MAX_RANK + 1] = {1};
            memcpy(s2 + 1, shape, rank * sizeof *shape);
            if (rank < DTL_MAX_RANK)
                add(G, dtl_g_reshape(g, a, rank + 1, s2));
        }
        break;
    }
    case 14: {   /* a general transpose */
        if (rank < 2)
            break;
        uint32_t perm[DTL_MAX_RANK];
        for (uint32_t i = 0; i < rank; i++)
            perm[i] = i;
        for (uint32_t i = rank - 1; i > 0; i--) {
            uint32_t j = rnd(G, i + 1), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        add(G, dtl_g_transpose(g, a, perm));
        break;
    }
    case 15: {   /* slice, concat */
        if (rank == 0)
            break;
        int64_t start[DTL_MAX_RANK], stop[DTL_MAX_RANK], step[DTL_MAX_RANK];
        for (uint32_t i = 0; i < rank; i++) {
            bool rev = rnd(G, 3) == 0;
            start[i] = rev ? shape[i] - 1 : rnd(G, (uint32_t)shape[i]);
            stop[i] = rev ? -1 : shape[i];
            step[i] = rev ? -1 : 1 + (int64_t)rnd(G, 2);
        }
        dtl_val s = dtl_g_slice(g, a, start, stop, step);
        add(G, rnd(G, 2) ? s : dtl_g_concat(g, (const dtl_val[]){a, a}, 2, rnd(G, rank)));
        break;
    }
    case 16: {   /* gather / scatter_add with in-range indices */
        if (rank == 0 || shape[0] == 0)
            break;
        int64_t cnt = 1 + rnd(G, 4), idx[4];
        for (int64_t i = 0; i < cnt; i++)
            idx[i] = rnd(G, (uint32_t)shape[0]);
        dtl_val iv = dtl_g_const_data(g, DTL_DTYPE_I64, 1, &cnt, idx);
        dtl_val ga = dtl_g_gather(g, a, iv, 0);
        add(G, ga);
        if (rnd(G, 2))
            add(G, dtl_g_scatter_add(g, ga, iv, 0, rank, shape));
        break;
    }
    case 17: {   /* casts, argmax, iota */
        if (rank >= 1 && rnd(G, 2))
            add(G, dtl_g_cast(g, dtl_g_argmax(g, a, rnd(G, rank)), G->dt));
        else if (rnd(G, 2))
            add(G, dtl_g_cast(g, dtl_g_cast(g, a, DTL_DTYPE_I32), G->dt));
        else if (rank >= 1)
            add(G, dtl_g_iota(g, G->dt, rank, shape, rnd(G, rank)));
        break;
    }
    case 18: {   /* a fresh leaf, random numbers */
        uint32_t r2;
        int64_t s2[DTL_MAX_RANK];
        rand_shape(G, &r2, s2);
        if (rnd(G, 3) == 0)
            add(G, dtl_g_rng_uniform(g, G->step, G->dt, r2, s2, rnd(G, 4)));
        else
            add(G, leaf(G, r2, s2));
        break;
    }
    default: {   /* a splat constant */
        add(G, dtl_g_binary(g, DTL_OP_MUL, a, dtl_g_const(g, G->dt, rank, shape, 0.75)));
        break;
    }
    }
}

/* An update of leaf t: usually an Adam-like chain reading t at the same index, sometimes
 * something that does not read it, or reads it through a broadcast or a view. */
static dtl_val gen_update(gen *G, dtl_val t)
{
    dtl_graph *g = G->g;
    const dtl_node *tn = gnode(G, t);
    dtl_val f = DTL_VAL_NONE;
    for (int k = 0; k < 12 && f == DTL_VAL_NONE; k++) {
        dtl_val c = pick(G);
        const dtl_node *cn = gnode(G, c);
        uint32_t rr;
        if (cn->dtype != tn->dtype || !bcast(cn, tn))
            continue;
        rr = cn->rank > tn->rank ? cn->rank : tn->rank;
        bool fits = rr == tn->rank;
        for (uint32_t i = 0; i < cn->rank && fits; i++)
            fits = cn->shape[cn->rank - 1 - i] == 1 ||
                   cn->shape[cn->rank - 1 - i] == tn->shape[tn->rank - 1 - i];
        if (fits)
            f = c;
    }
    switch (rnd(G, 6)) {
    case 0:   /* does not read the target */
        if (f != DTL_VAL_NONE)
            return dtl_g_broadcast(g, dtl_g_unary(g, DTL_OP_TANH, f), tn->rank, tn->shape);
        return dtl_g_const(g, tn->dtype, tn->rank, tn->shape, 0.25);
    case 1: {  /* through a view of the target */
        int64_t n = (int64_t)dtl_node_numel(tn);
        dtl_val flat = dtl_g_reshape(g, t, 1, &n);
        dtl_val u = dtl_g_unary(g, DTL_OP_NEG, flat);
        return dtl_g_reshape(g, u, tn->rank, tn->shape);
    }
    default: {  /* t - 0.1 * f, with momentum-like terms */
        dtl_val m = dtl_g_binary(g, DTL_OP_MUL, t, dtl_g_scalar(g, tn->dtype, 0.9));
        if (f != DTL_VAL_NONE)
            m = dtl_g_binary(g, DTL_OP_SUB, m, dtl_g_binary(g, DTL_OP_MUL, f,
                                                            dtl_g_scalar(g, tn->dtype, 0.1)));
        return m;
    }
    }
}

static void gen_graph(dtl_graph *g, uint64_t seed)
{
    gen G0, *G = &G0;
    memset(G, 0, sizeof *G);
    G->g = g;
    dtl_rng_init(&G->r, seed, 7);
    static const int64_t sizes[] = {1, 2, 3, 4, 5, 7};
    for (int i = 0; i < 3; i++)
        G->d[i] = sizes[rnd(G, 6)];
    G->dt = rnd(G, 4) == 0 ? DTL_DTYPE_F64 : DTL_DTYPE_F32;
    G->step = dtl_g_input(g, "step", DTL_DTYPE_I64, 0, NULL);
    uint32_t nl = 2 + rnd(G, 3);
    for (uint32_t i = 0; i < nl; i++) {
        uint32_t r2;
        int64_t s2[DTL_MAX_RANK];
        rand_shape(G, &r2, s2);
        add(G, leaf(G, r2, s2));
    }
    uint32_t nops = 8 + rnd(G, 40);
    for (uint32_t i = 0; i < nops; i++)
        gen_op(G);
    /* Outputs: a few values, maybe a loss, and updates of most leaves. */
    uint32_t nv = 1 + rnd(G, 3);
    for (uint32_t i = 0; i < nv; i++) {
        char name[32];
        snprintf(name, sizeof name, "out%u", i);
        dtl_g_output(g, DTL_OUT_VALUE, dtl_arena_strdup(&g->arena, name), pick(G),
                     DTL_VAL_NONE);
    }
    if (rnd(G, 2)) {
        dtl_val a = pick(G);
        uint32_t axes = gnode(G, a)->rank ? (1u << gnode(G, a)->rank) - 1 : 0;
        dtl_val l = gnode(G, a)->rank ? dtl_g_reduce(g, DTL_OP_SUM, a, axes, false) : a;
        dtl_g_output(g, DTL_OUT_LOSS, "loss", l, DTL_VAL_NONE);
    }
    uint32_t nleaves = G->nleaves;
    dtl_val updates[16];
    for (uint32_t i = 0; i < nleaves; i++)
        updates[i] = rnd(G, 5) ? gen_update(G, G->leaves[i]) : DTL_VAL_NONE;
    /* A swap now and then: the update of one leaf is another leaf of its type. */
    if (nleaves >= 2 && rnd(G, 4) == 0) {
        const dtl_node *a = gnode(G, G->leaves[0]), *b = gnode(G, G->leaves[1]);
        if (a->dtype == b->dtype && a->rank == b->rank &&
            memcmp(a->shape, b->shape, a->rank * sizeof *a->shape) == 0) {
            updates[0] = G->leaves[1];
            updates[1] = G->leaves[0];
        }
    }
    /* Sometimes an old value is also an output, or read after the updates. */
    if (nleaves && rnd(G, 4) == 0)
        dtl_g_output(g, DTL_OUT_VALUE, "old", G->leaves[rnd(G, nleaves)], DTL_VAL_NONE);
    if (nleaves && rnd(G, 3) == 0) {
        dtl_val t = G->leaves[rnd(G, nleaves)];
        dtl_g_output(g, DTL_OUT_VALUE, "late", dtl_g_unary(g, DTL_OP_EXP, t), DTL_VAL_NONE);
    }
    /* ... or read in the update's own loop after the new value is computed. */
    for (uint32_t i = 0; i < nleaves; i++)
        if (updates[i] != DTL_VAL_NONE && updates[i] != G->leaves[i] && rnd(G, 6) == 0) {
            dtl_val t = G->leaves[i];
            dtl_g_output(g, DTL_OUT_VALUE, "mix", dtl_g_binary(g, DTL_OP_ADD, updates[i], t),
                         DTL_VAL_NONE);
            break;
        }
    for (uint32_t i = 0; i < nleaves; i++)
        if (updates[i] != DTL_VAL_NONE) {
            const dtl_node *t = gnode(G, G->leaves[i]);
            dtl_g_output(g, t->op == DTL_OP_PARAM ? DTL_OUT_PARAM : DTL_OUT_STATE, NULL,
                         updates[i], G->leaves[i]);
        }
}

/* What the random graphs exercised, so that a generator that stopped making the
 * interesting cases shows. */
typedef struct coverage {
    unsigned kernels, fused, prologues, epilogues, folded, inplace, store, blocked_store, rows;
} coverage;

static void cover(coverage *c, const dtl_graph *g)
{
    dtl_kprog *p = dtl_fuse(g, NULL);
    c->kernels += p->nk;
    for (uint32_t k = 0; k < p->nk; k++) {
        const dtl_kernel *kk = &p->k[k];
        c->fused += kk->nmembers > 1;
        c->prologues += kk->kind == DTL_K_REDUCE && kk->nmembers > 1;
        c->rows += kk->kind == DTL_K_ROW;
        c->epilogues += kk->kind == DTL_K_MATMUL && kk->nmembers > 1;
        c->folded += kk->kind == DTL_K_MATMUL && (kk->trans_a || kk->trans_b);
        for (uint32_t i = 0; i < kk->nouts; i++)
            for (uint32_t j = 0; j < kk->nins; j++)
                c->inplace += p->loc[kk->outs[i]].kind == DTL_LOC_ARENA &&
                              p->loc[kk->ins[j]].kind == DTL_LOC_ARENA &&
                              p->loc[kk->outs[i]].offset == p->loc[kk->ins[j]].offset;
    }
    for (uint32_t oi = 0; oi < g->nouts; oi++) {
        const dtl_output *o = &g->outs[oi];
        if (o->kind != DTL_OUT_PARAM && o->kind != DTL_OUT_STATE)
            continue;
        bool st = p->loc[o->val].kind == DTL_LOC_STORE && p->loc[o->val].of == o->target;
        c->store += st;
        c->blocked_store += !st && p->kernel_of[o->val] != NONE &&
                            p->k[p->kernel_of[o->val]].kind == DTL_K_ELEMWISE;
    }
    dtl_kprog_free(p);
}

static void test_random(int count)
{
    int failed = 0;
    coverage cov = {0};
    for (int i = 0; i < count; i++) {
        dtl_graph g;
        dtl_graph_init(&g);
        gen_graph(&g, (uint64_t)i);
        if (!dtl_graph_verify(&g, stderr)) {
            fprintf(stderr, "random graph %d is broken (a bug of the generator)\n", i);
            CHECK(false);
            dtl_graph_free(&g);
            continue;
        }
        char label[64];
        snprintf(label, sizeof label, "random graph %d", i);
        bool ok = check_graph(label, &g, 3, 0xff);
        cover(&cov, &g);
        if (!ok && failed++ < 3) {
            fprintf(stderr, "--- %s:\n", label);
            dtl_graph_print(&g, stderr);
        }
        CHECK(ok);
        dtl_graph_free(&g);
    }
    printf("%d random graphs: %u kernels, %u fused, %u reduce prologues, %u row kernels, "
           "%u matmul epilogues, %u folded transposes, %u in-place outs, %u updates in place, "
           "%u elemwise updates not in place\n", count, cov.kernels, cov.fused, cov.prologues,
           cov.rows, cov.epilogues, cov.folded, cov.inplace, cov.store, cov.blocked_store);
    if (count >= 100) {   /* the generator still makes every case */
        CHECK(cov.prologues > 10 && cov.epilogues > 10 && cov.folded > 10 && cov.rows > 10);
        CHECK(cov.inplace > 10 && cov.store > 10 && cov.blocked_store > 5);
    }
}

/* ==== hand-made graphs: fusion decisions that must (not) happen ========================== */

/* c = a + (a @ w) with a = exp(x): c may not join a's loop (the matmul in between reads a),
 * so it goes into the matmul's epilogue; and a softmax: exp(x - max) is the prologue of its
 * sum, the division that reads the sum is not. */
static void test_cycles(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    const int64_t s44[] = {4, 4};
    dtl_val x = dtl_g_input(&g, "x", DTL_DTYPE_F32, 2, s44);
    dtl_val w = dtl_g_param(&g, "w", DTL_DTYPE_F32, 2, s44, (dtl_init){DTL_INIT_UNIFORM, -1, 1, NULL});
    dtl_val a = dtl_g_unary(&g, DTL_OP_EXP, x);
    dtl_val b = dtl_g_matmul(&g, a, w);
    dtl_val c = dtl_g_binary(&g, DTL_OP_ADD, a, b);
    dtl_val mx = dtl_g_reduce(&g, DTL_OP_REDUCE_MAX, c, 2, true);
    dtl_val e = dtl_g_unary(&g, DTL_OP_EXP, dtl_g_binary(&g, DTL_OP_SUB, c, mx));
    dtl_val s = dtl_g_reduce(&g, DTL_OP_SUM, e, 2, true);
    dtl_val sm = dtl_g_binary(&g, DTL_OP_DIV, e, s);
    dtl_g_output(&g, DTL_OUT_VALUE, "y", sm, DTL_VAL_NONE);
    dtl_kprog *p = dtl_fuse(&g, NULL);
    char why[300];
    CHECK(dtl_kprog_verify(p, why, sizeof why));
    CHECK(p->kernel_of[a] != p->kernel_of[c]);
    CHECK(p->kernel_of[b] == p->kernel_of[c]);
    CHECK(p->k[p->kernel_of[b]].kind == DTL_K_MATMUL);
    /* the softmax: one ROW kernel (max | sub, exp, sum | div: three passes over each row) */
    CHECK(p->kernel_of[mx] == p->kernel_of[s] && p->kernel_of[sm] == p->kernel_of[s] &&
          p->k[p->kernel_of[s]].kind == DTL_K_ROW);
    CHECK(p->nk == 3);   /* exp | matmul+add | row */
    if (getenv("DTL_TEST_PRINT"))
        dtl_kprog_print(stderr, p);
    if (p->nk == 3) {
        uint32_t pass[8];
        CHECK(p->k[2].nmembers == 5 && dtl_row_passes(p, &p->k[2], pass) == 3);
        CHECK(pass[0] == 0 && pass[1] == 1 && pass[2] == 1 && pass[3] == 1 && pass[4] == 2);
        CHECK(p->k[2].nouts == 1 && p->k[2].outs[0] == sm);
    }
    dtl_kprog_free(p);
    p = dtl_fuse(&g, &(dtl_fuse_opts){.no_rows = true});
    CHECK(dtl_kprog_verify(p, why, sizeof why));
    CHECK(p->kernel_of[e] == p->kernel_of[s] && p->k[p->kernel_of[s]].kind == DTL_K_REDUCE);
    CHECK(p->kernel_of[sm] != p->kernel_of[s]);
    CHECK(p->nk == 5);   /* exp | matmul+add | max | sub,exp,sum | div */
    dtl_kprog_free(p);
    CHECK(check_graph("cycles", &g, 2, 0xff));
    dtl_graph_free(&g);
}

/* The kinds and passes of g's kernels: *nrow ROW kernels, the passes of the last one. */
static uint32_t row_kernels(const dtl_kprog *p, uint32_t *passes)
{
    uint32_t n = 0;
    for (uint32_t k = 0; k < p->nk; k++)
        if (p->k[k].kind == DTL_K_ROW) {
            uint32_t *pass = calloc(p->k[k].nmembers + 1, sizeof *pass);
            *passes = dtl_row_passes(p, &p->k[k], pass);
            free(pass);
            n++;
        }
    return n;
}

/* Layer norm, log-softmax and softmax over rows, forward and backward: one ROW kernel each
 * (layer norm forward: mean | variance | normalization, three passes, storing y alone); the
 * gradients of gamma and beta are column sums, kernels of their own. Rows of length 1 make
 * no ROW kernel; without rows (no_rows) layer norm is three kernels. Every program runs
 * bit-identical to ref, row by row and pass by pass. */
static void test_rows(void)
{
    const int64_t s6[] = {6, 10}, s10[] = {10}, s61[] = {6, 1};
    for (int grad = 0; grad < 2; grad++) {
        dtl_graph g;
        dtl_graph_init(&g);
        dtl_val x = dtl_g_param(&g, "x", DTL_DTYPE_F32, 2, s6,
                                (dtl_init){DTL_INIT_UNIFORM, -2, 2, NULL});
        dtl_val ga = dtl_g_param(&g, "g", DTL_DTYPE_F32, 1, s10,
                                 (dtl_init){DTL_INIT_UNIFORM, 0.5, 1.5, NULL});
        dtl_val be = dtl_g_param(&g, "b", DTL_DTYPE_F32, 1, s10,
                                 (dtl_init){DTL_INIT_UNIFORM, -1, 1, NULL});
        dtl_val y = dtl_nn_layer_norm(&g, x, ga, be, 1e-5);
        dtl_g_output(&g, DTL_OUT_VALUE, "y", y, DTL_VAL_NONE);
        if (grad) {
            dtl_val w = dtl_g_input(&g, "w", DTL_DTYPE_F32, 2, s6);
            dtl_val l = dtl_g_reduce(&g, DTL_OP_SUM, dtl_g_binary(&g, DTL_OP_MUL, y, w), 3, false);
            dtl_val ps[3] = {x, ga, be}, gs[3];
            dtl_err err;
            CHECK(dtl_ad_grad(&g, l, ps, 3, gs, NULL, &err));
            dtl_g_output(&g, DTL_OUT_VALUE, "dx", gs[0], DTL_VAL_NONE);
            dtl_g_output(&g, DTL_OUT_VALUE, "dg", gs[1], DTL_VAL_NONE);
        }
        dtl_kprog *p = dtl_fuse(&g, NULL);
        char why[300];
        CHECK(dtl_kprog_verify(p, why, sizeof why));
        uint32_t passes = 0, nrow = row_kernels(p, &passes);
        if (!grad) {
            CHECK(p->nk == 1 && nrow == 1 && passes == 3);
            CHECK(p->k[0].nouts == 1 && p->k[0].outs[0] == y);
        } else {   /* y, dx: one row kernel; dg: the column sum of the loss's y * w … */
            CHECK(nrow == 1 && passes == 5);
            CHECK(p->kernel_of[y] == p->kernel_of[g.outs[1].val]);
        }
        if (getenv("DTL_TEST_PRINT"))
            dtl_kprog_print(stderr, p);
        dtl_kprog_free(p);
        p = dtl_fuse(&g, &(dtl_fuse_opts){.no_rows = true});
        CHECK(dtl_kprog_verify(p, why, sizeof why) && row_kernels(p, &passes) == 0);
        CHECK(grad || p->nk == 3);
        dtl_kprog_free(p);
        CHECK(check_graph(grad ? "layer_norm grad" : "layer_norm", &g, 2, 0xff));
        dtl_graph_free(&g);
    }
    for (int len1 = 0; len1 < 2; len1++) {
        dtl_graph g;
        dtl_graph_init(&g);
        dtl_val x = dtl_g_param(&g, "x", DTL_DTYPE_F64, 2, len1 ? s61 : s6,
                                (dtl_init){DTL_INIT_UNIFORM, -2, 2, NULL});
        dtl_val y = dtl_nn_log_softmax(&g, x, 1);
        dtl_val z = dtl_nn_softmax(&g, x, 1);
        dtl_val l = dtl_g_reduce(&g, DTL_OP_SUM, dtl_g_binary(&g, DTL_OP_MUL, y, z), 3, false);
        dtl_val gx;
        dtl_err err;
        CHECK(dtl_ad_grad(&g, l, &x, 1, &gx, NULL, &err));
        dtl_g_output(&g, DTL_OUT_LOSS, "loss", l, DTL_VAL_NONE);
        dtl_g_output(&g, DTL_OUT_VALUE, "dx", gx, DTL_VAL_NONE);
        dtl_kprog *p = dtl_fuse(&g, NULL);
        char why[300];
        CHECK(dtl_kprog_verify(p, why, sizeof why));
        uint32_t passes = 0, nrow = row_kernels(p, &passes);
        if (len1)
            CHECK(nrow == 0);
        else   /* both share the max; y * z, the loss's operand, is the one other stored value */
            CHECK(nrow == 1 && p->kernel_of[y] == p->kernel_of[gx]);
        if (getenv("DTL_TEST_PRINT"))
            dtl_kprog_print(stderr, p);
        dtl_kprog_free(p);
        CHECK(check_graph(len1 ? "softmax rows of 1" : "softmax and log_softmax", &g, 2, 0xff));
        dtl_graph_free(&g);
    }
}

/* In place only where the input is read at the out's own index: x (f64[1, 4], 32 bytes)
 * dies in the loop that makes y (f32[2, 4], 32 bytes), but the loop reads x broadcast, so
 * y may not take its memory (the second row would read what the first wrote). */
static void test_inplace_broadcast(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    dtl_val a = dtl_g_input(&g, "a", DTL_DTYPE_F32, 2, (const int64_t[]){1, 4});
    dtl_val z = dtl_g_input(&g, "z", DTL_DTYPE_F64, 2, (const int64_t[]){2, 4});
    dtl_val x = dtl_g_cast(&g, dtl_g_unary(&g, DTL_OP_EXP, a), DTL_DTYPE_F64);
    dtl_val m = dtl_g_binary(&g, DTL_OP_MUL, x, z);
    dtl_val y = dtl_g_cast(&g, m, DTL_DTYPE_F32);
    dtl_val w = dtl_g_unary(&g, DTL_OP_NEG, dtl_g_cast(&g, z, DTL_DTYPE_F32));   /* same shape */
    dtl_val v = dtl_g_binary(&g, DTL_OP_ADD, y, w);
    dtl_g_output(&g, DTL_OUT_VALUE, "y", y, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "v", v, DTL_VAL_NONE);
    dtl_kprog *p = dtl_fuse(&g, NULL);
    char why[300];
    CHECK(dtl_kprog_verify(p, why, sizeof why));
    CHECK(p->kernel_of[x] != p->kernel_of[m] && p->kernel_of[m] == p->kernel_of[y]);
    CHECK(p->loc[x].kind == DTL_LOC_ARENA && p->loc[y].kind == DTL_LOC_ARENA &&
          p->loc[y].offset != p->loc[x].offset);
    /* ... and the verifier refuses the plan that would */
    uint64_t off = p->loc[y].offset;
    p->loc[y].offset = p->loc[x].offset;
    CHECK(!dtl_kprog_verify(p, why, sizeof why));
    p->loc[y].offset = off;
    dtl_kprog_free(p);
    CHECK(check_graph("inplace-broadcast", &g, 2, 0xff));
    dtl_graph_free(&g);
}

/* A view (a reshape, here to the same shape) of a loop's member is memory, not a register:
 * what reads the view may not join that loop. */
static void test_view_in_loop(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    const int64_t s23[] = {2, 3};
    dtl_val x = dtl_g_input(&g, "x", DTL_DTYPE_F32, 2, s23);
    dtl_val a = dtl_g_unary(&g, DTL_OP_EXP, x);
    dtl_val q = dtl_g_unary(&g, DTL_OP_NEG, a);
    dtl_val r = dtl_g_reshape(&g, a, 2, s23);
    dtl_val n = dtl_g_binary(&g, DTL_OP_ADD, q, r);
    dtl_g_output(&g, DTL_OUT_VALUE, "n", n, DTL_VAL_NONE);
    dtl_kprog *p = dtl_fuse(&g, NULL);
    char why[300];
    CHECK(dtl_kprog_verify(p, why, sizeof why));
    CHECK(p->kernel_of[a] == p->kernel_of[q] && p->kernel_of[n] != p->kernel_of[a]);
    CHECK(p->loc[r].kind == DTL_LOC_ALIAS && p->loc[r].of == a);
    dtl_kprog_free(p);
    CHECK(check_graph("view-in-loop", &g, 2, 0xff));
    dtl_graph_free(&g);
}

/* A single kernel with many operands (a concat of 12). */
static void test_wide_concat(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    dtl_val xs[12];
    for (int i = 0; i < 12; i++) {
        char name[16];
        snprintf(name, sizeof name, "x%d", i);
        xs[i] = dtl_g_unary(&g, DTL_OP_TANH,
                            dtl_g_input(&g, dtl_arena_strdup(&g.arena, name), DTL_DTYPE_F32, 1,
                                        (const int64_t[]){2}));
    }
    dtl_val c = dtl_g_concat(&g, xs, 12, 0);
    dtl_g_output(&g, DTL_OUT_VALUE, "c", dtl_g_unary(&g, DTL_OP_EXP, c), DTL_VAL_NONE);
    dtl_kprog *p = dtl_fuse(&g, NULL);
    char why[300];
    CHECK(dtl_kprog_verify(p, why, sizeof why));
    CHECK(p->k[p->kernel_of[c]].kind == DTL_K_SINGLE && p->k[p->kernel_of[c]].nins == 12);
    dtl_kprog_free(p);
    CHECK(check_graph("wide-concat", &g, 2, 0xff));
    dtl_graph_free(&g);
}

/* dtl_kprog_verify must catch broken plans (else the tests above prove little). */
static void test_verify_rejects(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    const int64_t s4[] = {4}, s44[] = {4, 4};
    dtl_val x = dtl_g_input(&g, "x", DTL_DTYPE_F32, 2, s44);
    dtl_val pp = dtl_g_param(&g, "p", DTL_DTYPE_F32, 1, s4, (dtl_init){DTL_INIT_UNIFORM, -1, 1, NULL});
    dtl_val h = dtl_g_unary(&g, DTL_OP_TANH, dtl_g_binary(&g, DTL_OP_ADD, x, pp));
    dtl_val r = dtl_g_reduce(&g, DTL_OP_SUM, h, 1, false);          /* [4] */
    dtl_val u = dtl_g_binary(&g, DTL_OP_SUB, pp, r);                  /* update of p */
    dtl_val t = dtl_g_transpose(&g, h, (const uint32_t[]){1, 0});
    dtl_val m = dtl_g_matmul(&g, t, h);
    dtl_val late = dtl_g_unary(&g, DTL_OP_EXP, pp);                  /* reads the old p */
    dtl_g_output(&g, DTL_OUT_VALUE, "m", m, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "late", late, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_PARAM, "p", u, pp);
    CHECK(check_graph("verify-rejects", &g, 2, 0xff));

    char why[300];
    dtl_kprog *p = dtl_fuse(&g, NULL);
    CHECK(dtl_kprog_verify(p, why, sizeof why));
    CHECK(p->loc[u].kind == DTL_LOC_ARENA);   /* exp(p) runs after the update's kernel */
    CHECK(p->k[p->kernel_of[m]].trans_a && p->kernel_of[t] == NONE);   /* folded */
    dtl_loc saved = p->loc[u];
    /* an update written in place while the old value is read later */
    p->loc[u] = (dtl_loc){DTL_LOC_STORE, 0, pp};
    CHECK(!dtl_kprog_verify(p, why, sizeof why));
    p->loc[u] = saved;
    /* two live values at one offset: h (read by the matmul) and u */
    uint64_t off = p->loc[u].offset;
    p->loc[u].offset = p->loc[h].offset;
    CHECK(!dtl_kprog_verify(p, why, sizeof why));
    p->loc[u].offset = off + 8;   /* misaligned */
    CHECK(!dtl_kprog_verify(p, why, sizeof why));
    p->loc[u].offset = off;
    CHECK(dtl_kprog_verify(p, why, sizeof why));
    /* a stored value dropped from its kernel's outs */
    dtl_kernel *kh = &p->k[p->kernel_of[h]];
    kh->nouts--;
    CHECK(!dtl_kprog_verify(p, why, sizeof why));
    kh->nouts++;
    /* kernels out of order */
    uint32_t ka = p->kernel_of[h], kb = p->kernel_of[m];
    dtl_kernel tmp = p->k[ka];
    p->k[ka] = p->k[kb];
    p->k[kb] = tmp;
    for (uint32_t i = 0; i < p->k[ka].nmembers; i++)
        p->kernel_of[p->k[ka].members[i]] = ka;
    for (uint32_t i = 0; i < p->k[kb].nmembers; i++)
        p->kernel_of[p->k[kb].members[i]] = kb;
    CHECK(!dtl_kprog_verify(p, why, sizeof why));
    dtl_kprog_free(p);

    /* the folded transpose and the operand read in registers by a matmul */
    p = dtl_fuse(&g, NULL);
    CHECK(dtl_kprog_verify(p, why, sizeof why));
    dtl_kernel *km = &p->k[p->kernel_of[m]];
    km->trans_a = false;
    CHECK(!dtl_kprog_verify(p, why, sizeof why));
    dtl_kprog_free(p);
    dtl_graph_free(&g);
}

/* ==== the MLP's step, as dtlc would compile it ============================================ */

static void test_mlp_structure(void)
{
    model m;
    char path[512];
    snprintf(path, sizeof path, "%s/../examples/mnist_mlp.dtl", DTL_SRC_STDLIB_DIR);
    bool loaded = model_load(&m, path, 32);
    CHECK(loaded);
    if (!loaded)
        return;
    dtl_graph g;
    dtl_err err;
    bool passed = dtl_passes_run(&g, &m.low.step, NULL, &err);
    CHECK(passed);
    if (!passed) {
        fprintf(stderr, "passes: %s\n", err.msg);
        model_free(&m);
        return;
    }
    dtl_kprog *p = dtl_fuse(&g, NULL);
    dtl_kprog *flat = dtl_fuse(&g, &(dtl_fuse_opts){true, true, true, false});
    char why[300];
    CHECK(dtl_kprog_verify(p, why, sizeof why));
    uint32_t ncomputed = 0;
    for (uint32_t k = 0; k < flat->nk; k++)
        ncomputed += flat->k[k].nmembers;
    printf("mnist_mlp step (batch 32, after the passes): %u nodes, %u computed, %u kernels; "
           "arena %" PRIu64 " bytes (naive %" PRIu64 "; unfused %" PRIu64 ")\n",
           g.nnodes, ncomputed, p->nk, p->arena_bytes, p->naive_bytes, flat->naive_bytes);
    if (getenv("DTL_TEST_SHOW"))   /* docs/compiler.md's table */
        for (int mode = 0; mode < NMODES; mode++) {
            const dtl_fuse_opts *o = &all_modes[mode];
            dtl_kprog *q = dtl_fuse(&g, o);
            printf("  fusion %-3s reuse %-3s in place %-3s rows %-3s: %3u kernels, arena %8" PRIu64
                   " bytes, naive %8" PRIu64 "\n", o->no_fusion ? "no" : "yes",
                   o->no_reuse ? "no" : "yes", o->no_inplace ? "no" : "yes",
                   o->no_rows || o->no_fusion ? "no" : "yes", q->nk, q->arena_bytes,
                   q->naive_bytes);
            dtl_kprog_free(q);
        }
    CHECK(p->nk * 4 < ncomputed);
    CHECK(p->nk <= 24);
    /* The loss's logsumexp and its whole backward: one ROW kernel of four passes. */
    uint32_t nrow = 0, passes = 0;
    for (uint32_t k = 0; k < p->nk; k++)
        if (p->k[k].kind == DTL_K_ROW) {
            uint32_t *pass = calloc(p->k[k].nmembers + 1, sizeof *pass);
            nrow++;
            passes = dtl_row_passes(p, &p->k[k], pass);
            free(pass);
        }
    CHECK(nrow == 1 && passes == 4);
    CHECK(p->arena_bytes < p->naive_bytes);
    CHECK(p->arena_bytes * 20 < flat->naive_bytes);

    /* The first matmul, x @ fc1.w, with bias + relu in its epilogue. */
    bool found = false;
    for (uint32_t k = 0; k < p->nk; k++) {
        const dtl_kernel *kk = &p->k[k];
        if (kk->kind != DTL_K_MATMUL || g.nodes[kk->matmul_a].op != DTL_OP_INPUT ||
            kk->trans_a || !g.nodes[kk->matmul_b].name ||
            strcmp(g.nodes[kk->matmul_b].name, "fc1.w") != 0)
            continue;
        found = true;
        bool add = false, relu = false;
        for (uint32_t i = 1; i < kk->nmembers; i++) {
            const dtl_node *n = &g.nodes[kk->members[i]];
            add = add || (n->op == DTL_OP_ADD && n->in[0] == kk->root);
            relu = relu || n->op == DTL_OP_RELU;
        }
        CHECK(add && relu);
    }
    CHECK(found);

    /* Every update in place; each weight's m, v and new value from one kernel. */
    for (uint32_t oi = 0; oi < g.nouts; oi++) {
        const dtl_output *o = &g.outs[oi];
        if (o->kind != DTL_OUT_PARAM && o->kind != DTL_OUT_STATE)
            continue;
        CHECK(p->loc[o->val].kind == DTL_LOC_STORE && p->loc[o->val].of == o->target);
        if (o->kind != DTL_OUT_PARAM)
            continue;
        char nm[128], nv[128];
        snprintf(nm, sizeof nm, "%s.m", o->name);
        snprintf(nv, sizeof nv, "%s.v", o->name);
        for (uint32_t oj = 0; oj < g.nouts; oj++)
            if (strcmp(g.outs[oj].name, nm) == 0 || strcmp(g.outs[oj].name, nv) == 0)
                CHECK(p->kernel_of[g.outs[oj].val] == p->kernel_of[o->val]);
    }
    dtl_kprog_free(flat);
    dtl_kprog_free(p);
    dtl_graph_free(&g);
    model_free(&m);
}

int main(int argc, char **argv)
{
    int nrandom = argc > 1 ? atoi(argv[1]) : 300;
    test_cycles();
    test_rows();
    test_inplace_broadcast();
    test_view_in_loop();
    test_wide_concat();
    test_verify_rejects();
    test_mlp_structure();
    test_examples();
    test_random(nrandom);
    CHECK_DONE();
}
