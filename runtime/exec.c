/* runtime/exec.c — the parameter store, the backend-neutral plan handle, and the reference
 * backend's executor.
 *
 * Design of the reference executor. prepare verifies the graph and decides where every
 * node's value lives:
 *   INPUT        the caller's buffer, bound at each run (validated, never copied);
 *   PARAM STATE  the store's entry (persistent, shared by all plans of the store);
 *   CONST IOTA   a constants block, computed once at prepare;
 *   the rest     an offset in one arena for all intermediates.
 * Arena offsets come from a liveness scan in topological order: a node's block is taken
 * (best fit among the gaps between live blocks, else at the top) before its inputs whose
 * last use it is are released, so a kernel's output never overlaps its operands; values
 * that are outputs stay live to the end. An output whose value is a bound leaf (an input, a
 * param, a state) gets a staging block too, copied at the end of the compute phase — so a
 * `value w0 = %w` or a swap `update a = %b, update b = %a` reads pre-commit values. A run
 * then binds the inputs, calls the kernel of every computed node, stages, and commits the
 * PARAM/STATE outputs into the store. Nothing is allocated after prepare.
 */
#include "exec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/ref/ref.h"
#include "blocks.h"
#include "init.h"

enum { EXEC_ALIGN = 64 };

uint64_t dtl_tensor_numel(const dtl_tensor *t)
{
    uint64_t k = 1;
    for (uint32_t i = 0; i < t->rank; i++)
        k *= (uint64_t)t->shape[i];
    return k;
}

static size_t round_up(size_t n)
{
    return (n + EXEC_ALIGN - 1) / EXEC_ALIGN * EXEC_ALIGN;
}


static bool same_type(dtl_dtype da, uint32_t ra, const int64_t *sa, dtl_dtype db, uint32_t rb,
                      const int64_t *sb)
{
    if (da != db || ra != rb)
        return false;
    for (uint32_t i = 0; i < ra; i++)
        if (sa[i] != sb[i])
            return false;
    return true;
}

/* ---- the store --------------------------------------------------------------------------- */

struct dtl_store {
    dtl_arena arena;     /* entries, names and data */
    uint64_t seed;
    dtl_store_entry **items;
    size_t len, cap;
    dtl_store_mirror mirror;   /* owner NULL: none */
};

dtl_store *dtl_store_new(uint64_t seed)
{
    dtl_store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    dtl_arena_init(&s->arena);
    s->seed = seed;
    return s;
}

void dtl_store_free(dtl_store *s)
{
    if (!s)
        return;
    if (s->mirror.owner && s->mirror.free)
        s->mirror.free(s->mirror.impl);
    dtl_arena_free(&s->arena);
    free(s);
}

bool dtl_store_mirror_set(dtl_store *s, const dtl_store_mirror *m, dtl_err *err)
{
    if (s->mirror.owner && strcmp(s->mirror.owner, m->owner) != 0)
        return dtl_err_set(err, DTL_ERR_USAGE, "store: its entries live on %s's device; "
                           "%s cannot share them", s->mirror.owner, m->owner);
    s->mirror = *m;
    return true;
}

const dtl_store_mirror *dtl_store_mirror_get(const dtl_store *s)
{
    return s->mirror.owner ? &s->mirror : NULL;
}

bool dtl_store_sync(dtl_store *s, dtl_sync_dir dir, dtl_err *err)
{
    return !s->mirror.owner || !s->mirror.sync || s->mirror.sync(s->mirror.impl, s, dir, err);
}

static bool owns(const dtl_store *s, const char *backend)
{
    return backend && s->mirror.owner && strcmp(s->mirror.owner, backend) == 0;
}

bool dtl_store_handover(dtl_store *s, const char *from, const char *to, dtl_err *err)
{
    if (owns(s, from) == owns(s, to))
        return true;   /* (the same side, or no mirror) */
    return dtl_store_sync(s, owns(s, from) ? DTL_SYNC_TO_HOST : DTL_SYNC_TO_DEVICE, err);
}

uint64_t dtl_store_seed(const dtl_store *s)
{
    return s->seed;
}

size_t dtl_store_count(const dtl_store *s)
{
    return s->len;
}

dtl_store_entry *dtl_store_at(dtl_store *s, size_t i)
{
    return i < s->len ? s->items[i] : NULL;
}

dtl_store_entry *dtl_store_find(dtl_store *s, const char *name)
{
    for (size_t i = 0; i < s->len; i++)
        if (strcmp(s->items[i]->name, name) == 0)
            return s->items[i];
    return NULL;
}

dtl_store_entry *dtl_store_add(dtl_store *s, const char *name, bool is_state, dtl_dtype dt,
                               uint32_t rank, const int64_t *shape, bool *created,
                               dtl_err *err)
{
    char b1[160], b2[160];
    if (rank > DTL_MAX_RANK || (unsigned)dt >= DTL_DTYPE_COUNT) {
        dtl_err_set(err, DTL_ERR_USAGE, "store: \"%s\": bad dtype or rank", name);
        return NULL;
    }
    dtl_store_entry *e = dtl_store_find(s, name);
    if (e) {
        if (e->is_state != is_state ||
            !same_type(e->t.dtype, e->t.rank, e->t.shape, dt, rank, shape)) {
            dtl_err_set(err, DTL_ERR_MISMATCH, "%s \"%s\": expected %s, the store holds %s %s",
                        is_state ? "state" : "param", name,
                        dtl_tensor_str(b1, sizeof b1, dt, rank, shape),
                        e->is_state ? "a state" : "a param",
                        dtl_tensor_str(b2, sizeof b2, e->t.dtype, e->t.rank, e->t.shape));
            return NULL;
        }
        if (created)
            *created = false;
        return e;
    }
    uint64_t count = 1;
    for (uint32_t i = 0; i < rank; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && count > UINT64_MAX / 16 / (uint64_t)shape[i])) {
            dtl_err_set(err, DTL_ERR_USAGE, "store: \"%s\": bad shape", name);
            return NULL;
        }
        count *= (uint64_t)shape[i];
    }
    if (s->len == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        s->items = dtl_arena_grow(&s->arena, s->items, s->len, cap, sizeof *s->items);
        s->cap = cap;
    }
    e = dtl_arena_alloc(&s->arena, sizeof *e);
    e->name = dtl_arena_strdup(&s->arena, name);
    e->is_state = is_state;
    e->t.dtype = dt;
    e->t.rank = rank;
    for (uint32_t i = 0; i < rank; i++)
        e->t.shape[i] = shape[i];
    size_t bytes = (size_t)count * dtl_dtype_size(dt);
    char *raw = dtl_arena_alloc(&s->arena, bytes + EXEC_ALIGN);   /* zeroed */
    e->t.data = raw + (EXEC_ALIGN - (uintptr_t)raw % EXEC_ALIGN) % EXEC_ALIGN;
    s->items[s->len++] = e;
    if (created)
        *created = true;
    return e;
}

bool dtl_store_bind(dtl_store *s, const dtl_graph *g, dtl_err *err)
{
    for (uint32_t id = 0; id < g->nnodes; id++) {
        const dtl_node *n = &g->nodes[id];
        if (n->op != DTL_OP_PARAM && n->op != DTL_OP_STATE)
            continue;
        bool created;
        dtl_store_entry *e = dtl_store_add(s, n->name, n->op == DTL_OP_STATE, n->dtype, n->rank,
                                           n->shape, &created, err);
        if (!e)
            return false;
        if (created && n->op == DTL_OP_PARAM &&
            !dtl_init_fill(&n->attr.init, n->name, n->dtype, n->rank, n->shape, s->seed,
                           e->t.data, err))
            return false;
    }
    return true;
}

/* ---- the backend-neutral handle ---------------------------------------------------------- */

struct dtl_plan {
    const dtl_backend *be;
    void *impl;
    const dtl_graph *g;
    void (*ready)(void *ctx, uint32_t k, const dtl_tensor *value);   /* opts->output_ready */
    void *ready_ctx;
};

dtl_plan *dtl_plan_new(const dtl_backend *be, const dtl_graph *g, dtl_store *store,
                       const dtl_plan_opts *opts, dtl_err *err)
{
    dtl_plan *p = calloc(1, sizeof *p);
    if (!p) {
        dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", be->name);
        return NULL;
    }
    p->be = be;
    p->g = g;
    dtl_plan_opts o;   /* a backend without calls_ready never sees the hook: run reports */
    if (opts && opts->output_ready && !be->calls_ready) {
        p->ready = opts->output_ready;
        p->ready_ctx = opts->ready_ctx;
        o = *opts;
        o.output_ready = NULL;
        o.ready_ctx = NULL;
        opts = &o;
    }
    p->impl = be->prepare(g, store, opts, err);
    if (!p->impl) {
        free(p);
        return NULL;
    }
    return p;
}

bool dtl_plan_run(dtl_plan *p, const dtl_binding *in, size_t nin, dtl_err *err)
{
    if (!p->be->run(p->impl, in, nin, err))
        return false;
    /* The hook for a backend that does not call it: every output, in order, after the run. */
    for (uint32_t k = 0; p->ready && k < p->g->nouts; k++) {
        dtl_tensor t;
        if (!p->be->output(p->impl, p->g->outs[k].name, &t, err))
            return false;
        p->ready(p->ready_ctx, k, &t);
    }
    return true;
}

bool dtl_plan_output(dtl_plan *p, const char *name, dtl_tensor *out, dtl_err *err)
{
    return p->be->output(p->impl, name, out, err);
}

void dtl_plan_stats_get(const dtl_plan *p, dtl_plan_stats *st)
{
    p->be->stats(p->impl, st);
}

void dtl_plan_free(dtl_plan *p)
{
    if (!p)
        return;
    p->be->free(p->impl);
    free(p);
}

/* ---- the reference backend --------------------------------------------------------------- */

typedef struct ref_copy {
    void *dst;
    const void *src;
    size_t bytes;
} ref_copy;

typedef struct ref_plan {
    const dtl_graph *g;
    dtl_store *store;
    dtl_arena arena;          /* the plan's own tables */
    void *mem;                /* intermediates (one allocation) */
    void *cmem;               /* constants (one allocation) */
    void **ptr;               /* per node: where its value is (INPUT: set by run) */
    dtl_ref_arg **args;       /* per node: its operands' views */
    bool *computed;           /* per node: run calls its kernel */
    uint32_t *inputs, ninputs;
    const void **input_data;  /* per input: this run's binding (dtl_inputs_bind) */
    ref_copy *stages, *commits;
    uint32_t nstages, ncommits;
    void **outptr;            /* per graph output: where to read it */
    /* The output-ready hook (exec.h): output k is reported after node ready_node[k] is
     * computed (UINT32_MAX: after the staging; a constant: before the first node), from
     * ready_ptr[k]; ready_head/ready_next list the outputs of each node in output order. */
    void (*ready)(void *ctx, uint32_t k, const dtl_tensor *value);
    void *ready_ctx;
    void **ready_ptr;
    uint32_t *ready_head, *ready_next;
    dtl_plan_stats stats;
} ref_plan;

static bool bound_leaf(dtl_op op)
{
    return op == DTL_OP_INPUT || op == DTL_OP_PARAM || op == DTL_OP_STATE;
}

static bool const_leaf(dtl_op op)
{
    return op == DTL_OP_CONST || op == DTL_OP_IOTA;
}

static size_t node_bytes(const dtl_node *n)
{
    return round_up((size_t)dtl_node_numel(n) * dtl_dtype_size(n->dtype));
}

static void *aligned_zeroed(size_t bytes)
{
    size_t n = round_up(bytes ? bytes : 1);
    void *p = aligned_alloc(EXEC_ALIGN, n);
    if (p)
        memset(p, 0, n);
    return p;
}

static void ref_free(void *vp)
{
    ref_plan *p = vp;
    if (!p)
        return;
    free(p->mem);
    free(p->cmem);
    dtl_arena_free(&p->arena);
    free(p);
}

bool dtl_graph_check(const dtl_graph *g, const char *who, dtl_err *err)
{
    /* The graph must be sound: kernels trust shapes. Quote the verifier's first problem. */
    char why[400] = "";
    FILE *f = fmemopen(why, sizeof why, "w");
    bool ok = dtl_graph_verify(g, f);
    if (f)
        fclose(f);
    if (!ok) {
        why[strcspn(why, "\n")] = '\0';
        return dtl_err_set(err, DTL_ERR_USAGE, "%s: the graph fails verification: %s", who, why);
    }
    return true;
}

static void *ref_prepare(const dtl_graph *g, dtl_store *store, const dtl_plan_opts *opts,
                         dtl_err *err)
{
    if (!dtl_graph_check(g, "ref", err))
        return NULL;
    for (uint32_t id = 0; id < g->nnodes; id++)
        if (!dtl_ref_supports_node(g, id)) {
            dtl_err_set(err, DTL_ERR_USAGE, "ref: %%%u (%s): dtype %s is not supported", id,
                        dtl_op_name(g->nodes[id].op), dtl_dtype_name(g->nodes[id].dtype));
            return NULL;
        }
    if (!dtl_store_bind(store, g, err))
        return NULL;

    ref_plan *p = calloc(1, sizeof *p);
    if (!p) {
        dtl_err_set(err, DTL_ERR_NOMEM, "ref: out of memory");
        return NULL;
    }
    p->g = g;
    p->store = store;
    dtl_arena_init(&p->arena);
    dtl_arena *A = &p->arena;
    uint32_t nn = g->nnodes, no = g->nouts;
    p->ptr = dtl_arena_array(A, nn + 1, sizeof *p->ptr);
    p->args = dtl_arena_array(A, nn + 1, sizeof *p->args);
    p->computed = dtl_arena_array(A, nn + 1, sizeof *p->computed);
    p->inputs = dtl_arena_array(A, nn + 1, sizeof *p->inputs);
    p->input_data = dtl_arena_array(A, nn + 1, sizeof *p->input_data);
    p->stages = dtl_arena_array(A, no + 1, sizeof *p->stages);
    p->commits = dtl_arena_array(A, no + 1, sizeof *p->commits);
    p->outptr = dtl_arena_array(A, no + 1, sizeof *p->outptr);
    p->ready_ptr = dtl_arena_array(A, no + 1, sizeof *p->ready_ptr);
    p->ready_head = dtl_arena_array(A, nn + 2, sizeof *p->ready_head);
    p->ready_next = dtl_arena_array(A, no + 1, sizeof *p->ready_next);
    if (opts && opts->output_ready) {
        p->ready = opts->output_ready;
        p->ready_ctx = opts->ready_ctx;
    }

    /* Liveness: the last node reading each value; outputs live to the end. */
    uint32_t *last = dtl_arena_array(A, nn + 1, sizeof *last);
    for (uint32_t v = 0; v < nn; v++) {
        last[v] = v;
        for (uint32_t i = 0; i < g->nodes[v].nin; i++)
            last[g->nodes[v].in[i]] = v;
    }
    for (uint32_t k = 0; k < no; k++)
        last[g->outs[k].val] = UINT32_MAX;
    bool *staged = dtl_arena_array(A, no + 1, sizeof *staged);
    for (uint32_t k = 0; k < no; k++)
        staged[k] = bound_leaf(g->nodes[g->outs[k].val].op);

    /* Offsets of intermediates (and staging slots), constants' offsets. */
    size_t *off = dtl_arena_array(A, nn + no + 1, sizeof *off);
    dtl_blocks pl;
    dtl_blocks_init(&pl, nn + no, A);
    size_t cbytes = 0;
    bool reuse = !(opts && opts->no_reuse);
    for (uint32_t v = 0; v < nn; v++) {
        const dtl_node *n = &g->nodes[v];
        if (const_leaf(n->op)) {
            off[v] = cbytes;
            cbytes += node_bytes(n);
            continue;
        }
        if (bound_leaf(n->op))
            continue;
        p->computed[v] = true;
        off[v] = (size_t)dtl_blocks_take(&pl, node_bytes(n));
        p->stats.naive_bytes += node_bytes(n);
        if (!reuse)
            continue;
        for (uint32_t i = 0; i < n->nin; i++) {
            uint32_t u = n->in[i];
            bool first = true;   /* an input used twice (x * x) is released once */
            for (uint32_t j = 0; j < i; j++)
                first = first && n->in[j] != u;
            if (first && p->computed[u] && last[u] == v)
                dtl_blocks_release(&pl, off[u], node_bytes(&g->nodes[u]));
        }
        if (last[v] == v)   /* read by nobody: free once computed */
            dtl_blocks_release(&pl, off[v], node_bytes(n));
    }
    for (uint32_t k = 0; k < no; k++)
        if (staged[k]) {
            off[nn + k] = (size_t)dtl_blocks_take(&pl, node_bytes(&g->nodes[g->outs[k].val]));
            p->stats.naive_bytes += node_bytes(&g->nodes[g->outs[k].val]);
        }
    p->stats.arena_bytes = pl.top;
    p->stats.const_bytes = cbytes;
    p->mem = aligned_zeroed(pl.top);
    p->cmem = aligned_zeroed(cbytes);
    if (!p->mem || !p->cmem) {
        dtl_err_set(err, DTL_ERR_NOMEM, "ref: out of memory planning %zu bytes",
                    pl.top + cbytes);
        ref_free(p);
        return NULL;
    }

    /* Pointers, operand views, constants. */
    for (uint32_t v = 0; v < nn; v++) {
        const dtl_node *n = &g->nodes[v];
        if (n->op == DTL_OP_INPUT)
            p->inputs[p->ninputs++] = v;
        else if (n->op == DTL_OP_PARAM || n->op == DTL_OP_STATE)
            p->ptr[v] = dtl_store_find(store, n->name)->t.data;
        else if (const_leaf(n->op))
            p->ptr[v] = (char *)p->cmem + off[v];
        else
            p->ptr[v] = (char *)p->mem + off[v];
        p->args[v] = dtl_arena_array(A, n->nin + 1, sizeof **p->args);
        for (uint32_t i = 0; i < n->nin; i++) {
            const dtl_node *u = &g->nodes[n->in[i]];
            p->args[v][i] = (dtl_ref_arg){p->ptr[n->in[i]], u->dtype, u->rank, u->shape};
        }
        if (const_leaf(n->op) && !dtl_ref_kernel(n, NULL, p->ptr[v], store->seed, err)) {
            ref_free(p);
            return NULL;
        }
    }
    for (uint32_t k = 0; k < no; k++) {
        const dtl_output *o = &g->outs[k];
        const dtl_node *v = &g->nodes[o->val];
        size_t bytes = (size_t)dtl_node_numel(v) * dtl_dtype_size(v->dtype);
        void *src = p->ptr[o->val];
        if (staged[k]) {
            void *slot = (char *)p->mem + off[nn + k];
            /* An INPUT's pointer is known only at run time: stages read ptr[] then. */
            p->stages[p->nstages++] = (ref_copy){slot, &p->ptr[o->val], bytes};
            src = slot;
        }
        p->outptr[k] = src;
        p->ready_ptr[k] = src;   /* PARAM/STATE: the new value, before the commit */
        if (o->kind == DTL_OUT_PARAM || o->kind == DTL_OUT_STATE) {
            dtl_store_entry *e = dtl_store_find(store, g->nodes[o->target].name);
            p->commits[p->ncommits++] = (ref_copy){e->t.data, src, bytes};
            p->outptr[k] = e->t.data;
        }
    }
    /* Per node, the outputs it finishes (index nn: staged outputs and constants, reported
     * after the staging). */
    for (uint32_t v = 0; v <= nn; v++)
        p->ready_head[v] = UINT32_MAX;
    for (uint32_t k = no; k-- > 0;) {
        uint32_t v = g->outs[k].val;
        uint32_t at = staged[k] || !p->computed[v] ? nn : v;
        p->ready_next[k] = p->ready_head[at];
        p->ready_head[at] = k;
    }
    return p;
}

bool dtl_inputs_bind(const dtl_graph *g, const uint32_t *inputs, uint32_t ninputs,
                     const dtl_binding *in, size_t nin, const void **data, dtl_err *err)
{
    char b1[160], b2[160];
    for (size_t j = 0; j < nin; j++)
        if (!in[j].name)
            return dtl_err_set(err, DTL_ERR_USAGE, "binding %zu has no name", j);
    for (uint32_t k = 0; k < ninputs; k++) {
        const dtl_node *n = &g->nodes[inputs[k]];
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
        if (b->rank > DTL_MAX_RANK ||
            !same_type(n->dtype, n->rank, n->shape, b->dtype, b->rank, b->shape))
            return dtl_err_set(err, DTL_ERR_MISMATCH, "input \"%s\": expected %s, found %s",
                               n->name, dtl_tensor_str(b1, sizeof b1, n->dtype, n->rank, n->shape),
                               b->rank > DTL_MAX_RANK
                                   ? "a tensor of rank > 8"
                                   : dtl_tensor_str(b2, sizeof b2, b->dtype, b->rank, b->shape));
        if (!b->data && dtl_node_numel(n) > 0)
            return dtl_err_set(err, DTL_ERR_USAGE, "input \"%s\": data is NULL", n->name);
        data[k] = b->data;
    }
    return true;
}

static bool ref_bind_inputs(ref_plan *p, const dtl_binding *in, size_t nin, dtl_err *err)
{
    if (!dtl_inputs_bind(p->g, p->inputs, p->ninputs, in, nin, p->input_data, err))
        return false;
    for (uint32_t k = 0; k < p->ninputs; k++)   /* read only: kernels never write operands */
        p->ptr[p->inputs[k]] = (void *)p->input_data[k];
    return true;
}

/* Reports the outputs of one list (ready_head/ready_next) to the hook. */
static void ref_ready(const ref_plan *p, uint32_t k)
{
    for (; k != UINT32_MAX; k = p->ready_next[k]) {
        dtl_tensor t;
        dtl_output_view(p->g, k, p->ready_ptr[k], &t);
        p->ready(p->ready_ctx, k, &t);
    }
}

static bool ref_run(void *vp, const dtl_binding *in, size_t nin, dtl_err *err)
{
    ref_plan *p = vp;
    const dtl_graph *g = p->g;
    if (!ref_bind_inputs(p, in, nin, err))
        return false;
    uint64_t seed = p->store->seed;
    for (uint32_t v = 0; v < g->nnodes; v++) {
        if (!p->computed[v])
            continue;
        const dtl_node *n = &g->nodes[v];
        dtl_ref_arg *args = p->args[v];
        for (uint32_t i = 0; i < n->nin; i++)   /* inputs move from run to run */
            args[i].data = p->ptr[n->in[i]];
        dtl_err kerr;
        if (!dtl_ref_kernel(n, args, p->ptr[v], seed, &kerr))
            return dtl_err_set(err, kerr.kind, "%%%u (%s%s%s): %s", v, dtl_op_name(n->op),
                               n->name ? " " : "", n->name ? n->name : "", kerr.msg);
        if (p->ready)
            ref_ready(p, p->ready_head[v]);
    }
    for (uint32_t k = 0; k < p->nstages; k++)
        memcpy(p->stages[k].dst, *(void *const *)p->stages[k].src, p->stages[k].bytes);
    if (p->ready)   /* staged outputs and constants: final once staged */
        ref_ready(p, p->ready_head[g->nnodes]);
    for (uint32_t k = 0; k < p->ncommits; k++)
        memmove(p->commits[k].dst, p->commits[k].src, p->commits[k].bytes);
    p->stats.runs++;
    return true;
}

int64_t dtl_output_find(const dtl_graph *g, const char *name, dtl_err *err)
{
    for (uint32_t k = 0; k < g->nouts; k++)
        if (strcmp(g->outs[k].name, name) == 0)
            return k;
    char names[300] = "";
    size_t at = 0;
    for (uint32_t k = 0; k < g->nouts && at < sizeof names; k++)
        at += (size_t)snprintf(names + at, sizeof names - at, "%s%s", k ? ", " : "",
                               g->outs[k].name);
    dtl_err_set(err, DTL_ERR_USAGE, "no output named \"%s\" (the graph's outputs: %s)", name,
                g->nouts ? names : "none");
    return -1;
}

void dtl_output_view(const dtl_graph *g, uint32_t k, void *data, dtl_tensor *out)
{
    const dtl_node *v = &g->nodes[g->outs[k].val];
    out->data = data;
    out->dtype = v->dtype;
    out->rank = v->rank;
    memset(out->shape, 0, sizeof out->shape);
    memcpy(out->shape, v->shape, v->rank * sizeof *v->shape);
}

static bool ref_output(void *vp, const char *name, dtl_tensor *out, dtl_err *err)
{
    ref_plan *p = vp;
    int64_t k = dtl_output_find(p->g, name, err);
    if (k < 0)
        return false;
    dtl_output_view(p->g, (uint32_t)k, p->outptr[k], out);
    return true;
}

static void ref_stats(const void *vp, dtl_plan_stats *st)
{
    *st = ((const ref_plan *)vp)->stats;
}

const dtl_backend dtl_backend_ref = {
    .name = "ref",
    .prepare = ref_prepare,
    .run = ref_run,
    .output = ref_output,
    .stats = ref_stats,
    .free = ref_free,
    .calls_ready = true,
};
