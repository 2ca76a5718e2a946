/* runtime/model.c — contexts of models compiled ahead of time (see model.h).
 *
 * Design. Everything a context needs is known from the descriptor, so create does all the
 * allocation and all the checking: one 64-byte aligned block for the store (every tensor at
 * its offset), one arena sized for the larger of the two programs (they never run at the
 * same time on one context), a zero-padded batch of x for inference's last chunk, and per
 * program the slot array of its entry (compiler/llvm/llvm.h) and the dtl_llvm_rt through
 * which the entry runs its SINGLE kernels — rebuilt here from the descriptor's table, since
 * the graph itself is not in the object. Each program's inputs are matched by name, once,
 * to what the API provides (x, y, step, total_steps); a program with an input the API
 * cannot feed is refused at create, not at the first step. A run then only fills the input
 * slots, calls the entry and copies results out: no allocation.
 *
 * Loading follows `dtlc run --load` (compiler/run.c): every param must be in the file with
 * its dtype and shape; unlike --load it also restores the optimizer state when the file has
 * all of it, so a context can go on training from a `dtlc run --save` checkpoint.
 */
#include "model.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../compiler/graph.h"
#include "../compiler/llvm/llvm_rt.h"
#include "dtype.h"
#include "init.h"
#include "pool.h"
#include "safetensors.h"

_Static_assert(sizeof(((dtl_node *)0)->attr) <= 8 * DTL_CMODEL_ATTR_WORDS,
               "dtl_cmodel_single.attr holds a node's attributes");

enum { MODEL_ALIGN = 64 };

/* What feeds a program's input. */
typedef enum feed { FEED_X, FEED_Y, FEED_STEP, FEED_TOTAL } feed;

typedef struct prog_rt {
    const dtl_cmodel_prog *p;
    feed *feeds;                  /* per input */
    void **slots;                 /* the entry's slots */
    dtl_llvm_rt rt;               /* its SINGLE kernels */
    dtl_node *nodes;              /* rt.nsingle nodes (what the reference kernels read) */
    int64_t x_input, y_output;    /* infer: the input "x", the output "y" (-1: none) */
    int64_t loss_output;          /* step: the LOSS output (-1: none) */
} prog_rt;

struct dtl_cmodel {
    const dtl_cmodel_desc *d;
    uint64_t seed;
    void *store;                  /* store_bytes */
    void **tensors;               /* ntensors pointers into store */
    void *arena;
    void *xpad;                   /* one batch of x, for the last chunk of infer */
    prog_rt infer, step;
    int64_t step_no, total_steps;
    char msg[sizeof ((dtl_err *)0)->msg];
};

static size_t round_up(uint64_t n)
{
    return (size_t)((n + MODEL_ALIGN - 1) / MODEL_ALIGN * MODEL_ALIGN);
}

static void *aligned_zeroed(uint64_t bytes)
{
    size_t n = round_up(bytes ? bytes : 1);
    void *p = aligned_alloc(MODEL_ALIGN, n);
    if (p)
        memset(p, 0, n);
    return p;
}

static uint64_t numel(uint64_t rank, const int64_t *shape)
{
    uint64_t k = 1;
    for (uint64_t i = 0; i < rank; i++)
        k *= (uint64_t)shape[i];
    return k;
}

/* "f32[784, 128]" */
static const char *type_str(char *buf, size_t len, uint64_t dtype, uint64_t rank,
                            const int64_t *shape)
{
    int k = snprintf(buf, len, "%s[", dtype < DTL_DTYPE_COUNT ? dtl_dtype_name(dtype) : "?");
    for (uint64_t i = 0; i < rank && k > 0 && (size_t)k < len; i++)
        k += snprintf(buf + k, len - (size_t)k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k > 0 && (size_t)k < len)
        snprintf(buf + k, len - (size_t)k, "]");
    return buf;
}

const dtl_cmodel_desc *dtl_cmodel_desc_of(const dtl_cmodel *m)
{
    return m->d;
}

const char *dtl_cmodel_error(const dtl_cmodel *m)
{
    return m->msg;
}

void dtl_cmodel_set_total_steps(dtl_cmodel *m, int64_t total_steps)
{
    m->total_steps = total_steps;
}

static void prog_free(prog_rt *r)
{
    free(r->feeds);
    free(r->slots);
    if (r->rt.single)
        for (uint32_t i = 0; i < r->rt.nsingle; i++) {
            free(r->rt.single[i].args);
            free((void *)r->rt.single[i].in);
        }
    free(r->rt.single);
    free(r->nodes);
}

void dtl_cmodel_free(dtl_cmodel *m)
{
    if (!m)
        return;
    free(m->store);
    free(m->tensors);
    free(m->arena);
    free(m->xpad);
    prog_free(&m->infer);
    prog_free(&m->step);
    free(m);
}

static bool place_ok(const dtl_cmodel_prog *p, uint64_t slot)
{
    return slot < DTL_CMODEL_SLOT_FIRST_INPUT + p->ninputs + p->nstore &&
           slot != DTL_CMODEL_SLOT_POOL && slot != DTL_CMODEL_SLOT_RT;
}

/* The dtl_llvm_rt of p: a node and operand views for each SINGLE kernel. */
static bool rt_setup(dtl_cmodel *m, prog_rt *r, dtl_err *err)
{
    const dtl_cmodel_prog *p = r->p;
    r->rt.seed = m->seed;
    r->rt.nsingle = (uint32_t)p->nsingle;
    r->rt.single = calloc(p->nsingle + 1, sizeof *r->rt.single);
    r->nodes = calloc(p->nsingle + 1, sizeof *r->nodes);
    if (!r->rt.single || !r->nodes)
        return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", m->d->name);
    for (uint64_t i = 0; i < p->nsingle; i++) {
        const dtl_cmodel_single *ds = &p->single[i];
        dtl_llvm_single *s = &r->rt.single[i];
        dtl_node *n = &r->nodes[i];
        if (ds->nin > UINT32_MAX || ds->out.rank > DTL_MAX_RANK || ds->op >= DTL_OP_COUNT ||
            ds->out.dtype >= DTL_DTYPE_COUNT || !place_ok(p, ds->out.slot))
            return dtl_err_set(err, DTL_ERR_FORMAT, "%s: corrupt descriptor: kernel %%%" PRIu64,
                               m->d->name, ds->id);
        n->op = (dtl_op)ds->op;
        n->dtype = (dtl_dtype)ds->out.dtype;
        n->rank = (uint32_t)ds->out.rank;
        memcpy(n->shape, ds->out.shape, sizeof n->shape);
        n->nin = (uint32_t)ds->nin;
        n->name = ds->name;
        memcpy(&n->attr, ds->attr, sizeof n->attr);
        s->id = (dtl_val)ds->id;
        s->n = n;
        s->args = calloc(ds->nin + 1, sizeof *s->args);
        dtl_llvm_place *in = calloc(ds->nin + 1, sizeof *in);
        s->in = in;
        if (!s->args || !in)
            return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", m->d->name);
        for (uint64_t j = 0; j < ds->nin; j++) {
            const dtl_cmodel_operand *o = &ds->in[j];
            if (o->rank > DTL_MAX_RANK || o->dtype >= DTL_DTYPE_COUNT || !place_ok(p, o->slot))
                return dtl_err_set(err, DTL_ERR_FORMAT, "%s: corrupt descriptor: kernel %%%"
                                   PRIu64, m->d->name, ds->id);
            s->args[j] = (dtl_ref_arg){NULL, (dtl_dtype)o->dtype, (uint32_t)o->rank, o->shape};
            in[j] = (dtl_llvm_place){(uint32_t)o->slot, o->offset};
        }
        s->out = (dtl_llvm_place){(uint32_t)ds->out.slot, ds->out.offset};
    }
    return true;
}

/* Matches p's inputs to the API's feeds, finds the outputs the API reads, and sets up the
 * slots (all but the inputs, which each run fills) and the SINGLE kernels. */
static bool prog_setup(dtl_cmodel *m, prog_rt *r, const dtl_cmodel_prog *p, bool infer,
                       dtl_err *err)
{
    const char *what = infer ? "infer" : "train step";
    r->p = p;
    r->x_input = r->y_output = r->loss_output = -1;
    if (!p->run)
        return true;
    r->feeds = calloc(p->ninputs + 1, sizeof *r->feeds);
    r->slots = calloc(DTL_CMODEL_SLOT_FIRST_INPUT + p->ninputs + p->nstore, sizeof *r->slots);
    if (!r->feeds || !r->slots)
        return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", m->d->name);
    if (!rt_setup(m, r, err))
        return false;
    r->slots[DTL_CMODEL_SLOT_ARENA] = m->arena;
    r->slots[DTL_CMODEL_SLOT_CONST] = (void *)p->consts;
    r->slots[DTL_CMODEL_SLOT_POOL] = dtl_pool_default();
    r->slots[DTL_CMODEL_SLOT_RT] = &r->rt;
    for (uint64_t i = 0; i < p->nstore; i++) {
        if (p->store_tensor[i] >= m->d->ntensors)
            return dtl_err_set(err, DTL_ERR_FORMAT, "%s: corrupt descriptor: store slot %"
                               PRIu64, m->d->name, i);
        r->slots[DTL_CMODEL_SLOT_FIRST_INPUT + p->ninputs + i] = m->tensors[p->store_tensor[i]];
    }
    for (uint64_t i = 0; i < p->ninputs; i++) {
        const dtl_cmodel_input *in = &p->inputs[i];
        bool scalar_i64 = in->rank == 0 && in->dtype == DTL_DTYPE_I64;
        if (strcmp(in->name, "x") == 0 && in->rank >= 1 && (uint64_t)in->shape[0] == m->d->batch)
            r->feeds[i] = FEED_X, r->x_input = (int64_t)i;
        else if (!infer && strcmp(in->name, "y") == 0 && in->rank == 1 &&
                 in->dtype == DTL_DTYPE_I64 && (uint64_t)in->shape[0] == m->d->batch)
            r->feeds[i] = FEED_Y;
        else if (!infer && strcmp(in->name, "step") == 0 && scalar_i64)
            r->feeds[i] = FEED_STEP;
        else if (!infer && strcmp(in->name, "total_steps") == 0 && scalar_i64)
            r->feeds[i] = FEED_TOTAL;
        else {
            char ty[160];
            return dtl_err_set(err, DTL_ERR_MISMATCH, "%s: the %s program has an input \"%s\" "
                               "(%s) that the C API cannot feed", m->d->name, what, in->name,
                               type_str(ty, sizeof ty, in->dtype, in->rank, in->shape));
        }
    }
    if (infer && r->x_input < 0)
        return dtl_err_set(err, DTL_ERR_MISMATCH, "%s: the infer program has no input x of "
                           "%" PRIu64 " rows", m->d->name, m->d->batch);
    for (uint64_t k = 0; k < p->noutputs; k++) {
        const dtl_cmodel_output *o = &p->outputs[k];
        uint64_t limit = o->at == DTL_CMODEL_AT_TENSOR ? m->d->ntensors
                         : o->at == DTL_CMODEL_AT_INPUT ? p->ninputs : UINT64_MAX;
        if (o->at > DTL_CMODEL_AT_INPUT || o->offset >= limit)
            return dtl_err_set(err, DTL_ERR_FORMAT, "%s: corrupt descriptor: output %s",
                               m->d->name, o->name);
        if (infer && strcmp(o->name, "y") == 0 && o->rank >= 1 &&
            (uint64_t)o->shape[0] == m->d->batch)
            r->y_output = (int64_t)k;
        if (!infer && o->kind == DTL_OUT_LOSS && o->rank == 0 &&
            (o->dtype == DTL_DTYPE_F32 || o->dtype == DTL_DTYPE_F64))
            r->loss_output = (int64_t)k;
    }
    if (infer && r->y_output < 0)
        return dtl_err_set(err, DTL_ERR_MISMATCH, "%s: the infer program has no output y of "
                           "%" PRIu64 " rows", m->d->name, m->d->batch);
    return true;
}

static bool check_desc(const dtl_cmodel_desc *d, dtl_err *err)
{
    if (!d)
        return dtl_err_set(err, DTL_ERR_USAGE, "no model descriptor");
    if (d->abi != DTL_CMODEL_ABI)
        return dtl_err_set(err, DTL_ERR_MISMATCH, "%s: compiled for model ABI %" PRIu64 ", this "
                           "libdtlrt has ABI %d: recompile it with this version's dtlc",
                           d->name ? d->name : "model", d->abi, DTL_CMODEL_ABI);
    if (d->batch == 0)
        return dtl_err_set(err, DTL_ERR_MISMATCH, "%s: batch 0", d->name);
    for (uint64_t i = 0; i < d->ntensors; i++) {
        const dtl_cmodel_tensor *t = &d->tensors[i];
        if (t->offset % MODEL_ALIGN || t->offset > d->store_bytes ||
            t->nbytes > d->store_bytes - t->offset || t->dtype >= DTL_DTYPE_COUNT ||
            t->rank > DTL_MAX_RANK ||
            t->nbytes != numel(t->rank, t->shape) * dtl_dtype_size(t->dtype))
            return dtl_err_set(err, DTL_ERR_FORMAT, "%s: corrupt descriptor: tensor %s",
                               d->name, t->name);
    }
    return true;
}

dtl_cmodel *dtl_cmodel_create(const dtl_cmodel_desc *desc, uint64_t seed, dtl_err *err)
{
    if (!check_desc(desc, err))
        return NULL;
    dtl_cmodel *m = calloc(1, sizeof *m);
    if (!m) {
        dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", desc->name);
        return NULL;
    }
    m->d = desc;
    m->seed = seed;
    uint64_t arena = desc->infer.arena_bytes > desc->step.arena_bytes
                         ? desc->infer.arena_bytes : desc->step.arena_bytes;
    m->store = aligned_zeroed(desc->store_bytes);
    m->tensors = calloc(desc->ntensors + 1, sizeof *m->tensors);
    m->arena = aligned_zeroed(arena);
    if (!m->store || !m->tensors || !m->arena) {
        dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory for %" PRIu64 " bytes of parameters "
                    "and %" PRIu64 " of working memory", desc->name, desc->store_bytes, arena);
        dtl_cmodel_free(m);
        return NULL;
    }
    for (uint64_t i = 0; i < desc->ntensors; i++)
        m->tensors[i] = (char *)m->store + desc->tensors[i].offset;
    if (!prog_setup(m, &m->infer, &desc->infer, true, err) ||
        !prog_setup(m, &m->step, &desc->step, false, err)) {
        dtl_cmodel_free(m);
        return NULL;
    }
    uint64_t xbytes = 0;
    if (m->infer.x_input >= 0) {
        const dtl_cmodel_input *x = &desc->infer.inputs[m->infer.x_input];
        xbytes = numel(x->rank, x->shape) * dtl_dtype_size(x->dtype);
    }
    if (!(m->xpad = aligned_zeroed(xbytes))) {
        dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", desc->name);
        dtl_cmodel_free(m);
        return NULL;
    }
    for (uint64_t i = 0; i < desc->ntensors; i++) {
        const dtl_cmodel_tensor *t = &desc->tensors[i];
        if (t->kind != DTL_CMODEL_PARAM)
            continue;
        dtl_init init = {(dtl_init_kind)t->init_kind, t->init_a, t->init_b, t->init_data};
        if (!dtl_init_fill(&init, t->name, (dtl_dtype)t->dtype, (uint32_t)t->rank, t->shape,
                           seed, m->tensors[i], err)) {
            dtl_cmodel_free(m);
            return NULL;
        }
    }
    return m;
}

/* ---- parameters ------------------------------------------------------------------------- */

static int64_t find_index(const dtl_cmodel *m, const char *name)
{
    for (uint64_t i = 0; i < m->d->ntensors; i++)
        if (strcmp(m->d->tensors[i].name, name) == 0)
            return (int64_t)i;
    return -1;
}

const dtl_cmodel_tensor *dtl_cmodel_find(const dtl_cmodel *m, const char *name)
{
    int64_t i = name ? find_index(m, name) : -1;
    return i < 0 ? NULL : &m->d->tensors[i];
}

static bool sized_tensor(const dtl_cmodel *m, const char *name, const void *data, size_t nbytes,
                         int64_t *idx, dtl_err *err)
{
    if (!name)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s: no tensor name", m->d->name);
    *idx = find_index(m, name);
    if (*idx < 0)
        return dtl_err_set(err, DTL_ERR_MISMATCH, "%s has no parameter or state \"%s\"",
                           m->d->name, name);
    const dtl_cmodel_tensor *t = &m->d->tensors[*idx];
    char ty[160];
    if (nbytes != t->nbytes)
        return dtl_err_set(err, DTL_ERR_MISMATCH, "%s is %s (%" PRIu64 " bytes), not %zu bytes",
                           name, type_str(ty, sizeof ty, t->dtype, t->rank, t->shape),
                           t->nbytes, nbytes);
    if (!data && nbytes)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s: data is NULL", name);
    return true;
}

bool dtl_cmodel_set(dtl_cmodel *m, const char *name, const void *data, size_t nbytes,
                   dtl_err *err)
{
    int64_t i;
    if (!sized_tensor(m, name, data, nbytes, &i, err))
        return false;
    if (nbytes)
        memcpy(m->tensors[i], data, nbytes);
    return true;
}

bool dtl_cmodel_get(const dtl_cmodel *m, const char *name, void *data, size_t nbytes,
                   dtl_err *err)
{
    int64_t i;
    if (!sized_tensor(m, name, data, nbytes, &i, err))
        return false;
    if (nbytes)
        memcpy(data, m->tensors[i], nbytes);
    return true;
}

/* Whether t (a file's tensor) has the dtype and shape of tensor d. */
static bool same_type(const dtl_st_tensor *t, const dtl_cmodel_tensor *d)
{
    dtl_dtype dt;
    if (!dtl_st_dtype_to(t->dtype, &dt) || dt != d->dtype || t->rank != d->rank)
        return false;
    for (uint32_t k = 0; k < t->rank; k++)
        if (t->shape[k] != d->shape[k])
            return false;
    return true;
}

bool dtl_cmodel_load(dtl_cmodel *m, const char *path, dtl_err *err)
{
    if (!path)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s: no file to load", m->d->name);
    dtl_st_file *f = dtl_st_read(path, err);
    if (!f)
        return false;
    const dtl_cmodel_desc *d = m->d;
    const char *pre = "does not match this model";
    char here[160], there[160];
    bool ok = false;
    uint64_t nstates = 0, states_found = 0;
    const dtl_cmodel_tensor *missing_state = NULL;
    for (uint64_t i = 0; i < d->ntensors; i++) {
        const dtl_cmodel_tensor *e = &d->tensors[i];
        const dtl_st_tensor *t = dtl_st_find(f, e->name);
        type_str(here, sizeof here, e->dtype, e->rank, e->shape);
        if (e->kind == DTL_CMODEL_STATE) {
            nstates++;
            if (t)
                states_found++;
            else if (!missing_state)
                missing_state = e;
        }
        if (!t && e->kind == DTL_CMODEL_STATE)
            continue;
        if (!t) {
            dtl_err_set(err, DTL_ERR_MISMATCH, "%s %s: it has no %s (%s here)", path, pre,
                        e->name, here);
            goto out;
        }
        if (!same_type(t, e)) {
            dtl_dtype dt;
            if (dtl_st_dtype_to(t->dtype, &dt))
                type_str(there, sizeof there, dt, t->rank, t->shape);
            else
                snprintf(there, sizeof there, "%s", dtl_st_dtype_name(t->dtype));
            dtl_err_set(err, DTL_ERR_MISMATCH, "%s %s: %s is %s there, %s here", path, pre,
                        e->name, there, here);
            goto out;
        }
    }
    if (states_found && states_found < nstates) {
        dtl_err_set(err, DTL_ERR_MISMATCH, "%s %s: it has some of the optimizer state but not "
                    "%s", path, pre, missing_state->name);
        goto out;
    }
    for (size_t i = 0; i < dtl_st_count(f); i++) {
        const dtl_st_tensor *t = dtl_st_get(f, i);
        if (find_index(m, t->name) >= 0)
            continue;
        size_t len = strlen(t->name);
        if (len > 2 && t->name[len - 2] == '.' &&
            (t->name[len - 1] == 'm' || t->name[len - 1] == 'v')) {
            char base[256];
            if (len - 2 < sizeof base) {
                memcpy(base, t->name, len - 2);
                base[len - 2] = '\0';
                if (find_index(m, base) >= 0)
                    continue;
            }
        }
        dtl_err_set(err, DTL_ERR_MISMATCH, "%s %s: it has %s, which this model lacks", path, pre,
                    t->name);
        goto out;
    }
    for (uint64_t i = 0; i < d->ntensors; i++) {
        const dtl_st_tensor *t = dtl_st_find(f, d->tensors[i].name);
        if (t && t->nbytes)
            memcpy(m->tensors[i], t->data, t->nbytes);
    }
    /* A run's seed (dtlc checkpoints, dtl_cmodel_save) keys dropout from here on. */
    const char *seed = dtl_st_meta_get(f, "seed");
    char *end;
    unsigned long long sv = seed ? strtoull(seed, &end, 10) : 0;
    if (seed && *seed >= '0' && *seed <= '9' && !*end)
        m->seed = m->infer.rt.seed = m->step.rt.seed = sv;
    ok = true;
out:
    dtl_st_close(f);
    return ok;
}

bool dtl_cmodel_save(dtl_cmodel *m, const char *path, dtl_err *err)
{
    if (!path)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s: no file to save to", m->d->name);
    const dtl_cmodel_desc *d = m->d;
    dtl_st_tensor *ts = calloc(d->ntensors ? d->ntensors : 1, sizeof *ts);
    if (!ts)
        return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", path);
    for (uint64_t i = 0; i < d->ntensors; i++) {
        const dtl_cmodel_tensor *e = &d->tensors[i];
        ts[i].name = e->name;
        ts[i].dtype = dtl_st_dtype_from((dtl_dtype)e->dtype);
        ts[i].rank = (uint32_t)e->rank;
        memcpy(ts[i].shape, e->shape, sizeof ts[i].shape);
        ts[i].data = m->tensors[i];
        ts[i].nbytes = (size_t)e->nbytes;
    }
    char seed[24];
    snprintf(seed, sizeof seed, "%" PRIu64, m->seed);
    const dtl_st_meta meta[] = {
        {"format", "dtl.weights.v1"},
        {"writer", "dtl ahead-of-time model"},
        {"source", d->source ? d->source : ""},
        {"model", d->model ? d->model : ""},
        {"params_hash", d->params_hash ? d->params_hash : ""},
        {"seed", seed},
    };
    bool ok = dtl_st_write(path, ts, (size_t)d->ntensors, meta, sizeof meta / sizeof meta[0],
                           err);
    free(ts);
    return ok;
}

/* ---- running ------------------------------------------------------------------------------ */

/* Where output o of prog r is after the entry returned. */
static const void *out_src(const dtl_cmodel *m, const prog_rt *r, const dtl_cmodel_output *o)
{
    switch ((dtl_cmodel_at)o->at) {
    case DTL_CMODEL_AT_ARENA: return (const char *)m->arena + o->offset;
    case DTL_CMODEL_AT_CONST: return (const char *)r->p->consts + o->offset;
    case DTL_CMODEL_AT_TENSOR: return m->tensors[o->offset];
    case DTL_CMODEL_AT_INPUT: return r->slots[DTL_CMODEL_SLOT_FIRST_INPUT + o->offset];
    }
    return NULL;
}

static bool call(dtl_cmodel *m, prog_rt *r, dtl_err *err)
{
    int32_t st = r->p->run(r->slots);
    if (st == 0)
        return true;
    if (r->rt.err.msg[0])
        return dtl_err_set(err, r->rt.err.kind, "%s: %s", m->d->name, r->rt.err.msg);
    return dtl_err_set(err, DTL_ERR_USAGE, "%s: the compiled program failed (status %d)",
                       m->d->name, (int)st);
}

bool dtl_cmodel_infer(dtl_cmodel *m, const void *x, int64_t rows, void *y, dtl_err *err)
{
    prog_rt *r = &m->infer;
    const dtl_cmodel_desc *d = m->d;
    if (!r->p->run)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s has no infer program (its model's "
                           "forward does not take x alone)", d->name);
    if (rows < 0 || ((!x || !y) && rows > 0))
        return dtl_err_set(err, DTL_ERR_USAGE, "%s_infer: %s", d->name,
                           rows < 0 ? "rows < 0" : "x or y is NULL");
    int64_t batch = (int64_t)d->batch;
    if (d->rows_coupled && rows % batch != 0)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s_infer: %" PRId64 " rows: this model's "
                           "forward mixes the rows of a batch, so rows must be a multiple of "
                           "its batch, %" PRId64, d->name, rows, batch);
    const dtl_cmodel_input *xi = &r->p->inputs[r->x_input];
    const dtl_cmodel_output *yo = &r->p->outputs[r->y_output];
    size_t xrow = (size_t)(numel(xi->rank, xi->shape) / d->batch * dtl_dtype_size(xi->dtype));
    size_t yrow = (size_t)(yo->nbytes / d->batch);
    void **xslot = &r->slots[DTL_CMODEL_SLOT_FIRST_INPUT + r->x_input];
    for (int64_t at = 0; at < rows; at += batch) {
        int64_t n = rows - at < batch ? rows - at : batch;
        const char *xs = (const char *)x + (size_t)at * xrow;
        if (n < batch) {
            memcpy(m->xpad, xs, (size_t)n * xrow);
            memset((char *)m->xpad + (size_t)n * xrow, 0, (size_t)(batch - n) * xrow);
            xs = m->xpad;
        }
        *xslot = (void *)xs;   /* inputs are read only */
        if (!call(m, r, err))
            return false;
        memcpy((char *)y + (size_t)at * yrow, out_src(m, r, yo), (size_t)n * yrow);
    }
    return true;
}

bool dtl_cmodel_train_step(dtl_cmodel *m, const void *x, const int64_t *y, int64_t step,
                          double *loss, dtl_err *err)
{
    prog_rt *r = &m->step;
    const dtl_cmodel_desc *d = m->d;
    if (!r->p->run)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s has no train step program", d->name);
    if (!x || !y)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s_train_step: %s is NULL", d->name,
                           !x ? "x" : "y");
    if (step < 1)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s_train_step: step %" PRId64 ": the first "
                           "update is step 1", d->name, step);
    m->step_no = step;
    for (uint64_t i = 0; i < r->p->ninputs; i++) {
        void **slot = &r->slots[DTL_CMODEL_SLOT_FIRST_INPUT + i];
        switch (r->feeds[i]) {
        case FEED_X: *slot = (void *)x; break;
        case FEED_Y: *slot = (void *)y; break;
        case FEED_STEP: *slot = &m->step_no; break;
        case FEED_TOTAL:
            if (m->total_steps <= 0)
                return dtl_err_set(err, DTL_ERR_USAGE, "%s_train_step: the learning rate "
                                   "schedule needs the run's total number of steps: set it "
                                   "first (%s_set_total_steps)", d->name, d->name);
            *slot = &m->total_steps;
            break;
        }
    }
    if (!call(m, r, err))
        return false;
    if (loss && r->loss_output >= 0) {
        const dtl_cmodel_output *o = &r->p->outputs[r->loss_output];
        const void *s = out_src(m, r, o);
        *loss = o->dtype == DTL_DTYPE_F32 ? (double)*(const float *)s : *(const double *)s;
    }
    return true;
}

/* ---- the API of the generated header ------------------------------------------------------ */

static int keep(dtl_cmodel *m, bool ok, const dtl_err *err)
{
    if (ok)
        return 0;
    snprintf(m->msg, sizeof m->msg, "%s", err->msg);
    return -1;
}

dtl_cmodel *dtl_cmodel_api_create(const dtl_cmodel_desc *desc, uint64_t seed, char *errbuf,
                                size_t errlen)
{
    dtl_err err = {DTL_ERR_NONE, ""};
    dtl_cmodel *m = dtl_cmodel_create(desc, seed, &err);
    if (!m && errbuf && errlen)
        snprintf(errbuf, errlen, "%s", err.msg);
    return m;
}

int dtl_cmodel_api_load(dtl_cmodel *m, const char *path)
{
    dtl_err err;
    return keep(m, dtl_cmodel_load(m, path, &err), &err);
}

int dtl_cmodel_api_save(dtl_cmodel *m, const char *path)
{
    dtl_err err;
    return keep(m, dtl_cmodel_save(m, path, &err), &err);
}

int dtl_cmodel_api_set(dtl_cmodel *m, const char *name, const void *data, size_t nbytes)
{
    dtl_err err;
    return keep(m, dtl_cmodel_set(m, name, data, nbytes, &err), &err);
}

int dtl_cmodel_api_get(dtl_cmodel *m, const char *name, void *data, size_t nbytes)
{
    dtl_err err;
    return keep(m, dtl_cmodel_get(m, name, data, nbytes, &err), &err);
}

int dtl_cmodel_api_infer(dtl_cmodel *m, const void *x, int64_t rows, void *y)
{
    dtl_err err;
    return keep(m, dtl_cmodel_infer(m, x, rows, y, &err), &err);
}

int dtl_cmodel_api_train_step(dtl_cmodel *m, const void *x, const int64_t *y, int64_t step,
                             double *loss)
{
    dtl_err err;
    return keep(m, dtl_cmodel_train_step(m, x, y, step, loss, &err), &err);
}
