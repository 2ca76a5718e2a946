/* compiler/run_dist.c — data-parallel training: the world, the buckets, one step.
 *
 * Design. A step is two plans around one exchange (docs/distributed.md): the GRAD graph runs
 * on this rank's slice of the global batch, and the plan's output-ready hook hands each of
 * its outputs — "loss" first, then "grad.<param>" in the order backward finishes them — to
 * the bucket engine (runtime/comm/ddp.h) the moment it is final, so the buckets of the last
 * layers are averaged by the comm thread while the first layers' gradients are still being
 * computed. The ddp tensors are exactly the GRAD graph's outputs, in output order, so the
 * hook's output index is the tensor index; the loss rides in the first bucket, which makes
 * the global loss free (no collective of its own) and the same on every rank, so every rank
 * takes the same decisions (a diverged loss stops all of them alike). Then the UPDATE graph
 * runs on the averaged gradients (bound by name: its inputs are called like GRAD's outputs),
 * identical on every rank, so the params stay bitwise equal without being sent again.
 *
 * What every rank must agree on is checked once, at dtl_comm_init: a hash of the sources
 * (every file of the compilation), the params' names, dtypes and shapes and the options that
 * change results, and the ordered collectives of a step (the buckets' signatures, then the
 * evaluation's f64[3] sum). The timeout is raised for start-up — plans compile after the
 * rendezvous and the first collective waits for the slowest rank — and lowered again after
 * the first step. */
#include "run_dist.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lang/print.h"
#include "../lang/source.h"
#include "../runtime/comm/ddp.h"

struct dtl_dist {
    dtl_comm *c;
    dtl_ddp *ddp;
    double timeout;             /* DTL_TIMEOUT */
    size_t n;                   /* GRAD's outputs = ddp tensors */
    const dtl_graph *grad;
    size_t loss_k;              /* the loss's index */
    size_t nstate;              /* of them DTL_OUT_PARAM: states the forward pass updates */
    dtl_binding *bind;          /* n + 8 bindings for UPDATE */
    char grad_label[320];       /* "gradients @ m.dtl:25" */
    char eval_label[320];       /* "evaluation @ m.dtl:31" */
};

/* "m.dtl:25" for a setting of t (the train block's line when the setting is absent). */
static void where(dtl_ctx *ctx, const dtl_train *t, dtl_train_setting s, char *buf, size_t cap)
{
    const dtl_decl *d = t->settings[s] ? t->settings[s] : t->decl;
    const dtl_source *src = dtl_src_get(&ctx->sources, d->span.file);
    snprintf(buf, cap, "%s:%" PRIu32, src ? src->path : "?", d->span.line);
}

/* The variable the world size came from, for messages. */
static const char *size_var(const dtl_comm_env *env)
{
    const char *s = env->source;
    return strcmp(s, "DTL") == 0        ? "DTL_WORLD_SIZE"
           : strcmp(s, "torchrun") == 0 ? "WORLD_SIZE"
           : strcmp(s, "Open MPI") == 0 ? "OMPI_COMM_WORLD_SIZE"
           : strcmp(s, "PMI") == 0      ? "PMI_SIZE"
           : strcmp(s, "Slurm") == 0    ? "SLURM_NTASKS"
                                        : "the launcher";
}

bool dtl_dist_check(dtl_ctx *ctx, const dtl_train *t, const dtl_comm_env *env, int64_t batch,
                    dtl_err *err)
{
    int n = env->size;
    char at[300];
    const dtl_type *par = t->parallel;
    if (!par || par->u.par.data == 0) {
        where(ctx, t, DTL_SET_PARALLEL, at, sizeof at);
        return dtl_err_set(err, DTL_ERR_USAGE, "this run has %d ranks (%s=%d), but the train "
                           "block at %s does not say `parallel = data`: add it to train data "
                           "parallel over the ranks, or run one process", n, size_var(env), n,
                           at);
    }
    where(ctx, t, DTL_SET_PARALLEL, at, sizeof at);
    const char *spec = dtl_print_expr(&ctx->arena, t->settings[DTL_SET_PARALLEL]->u.bind.value);
    if (par->u.par.tensor > 1 || par->u.par.stages > 1)
        return dtl_err_set(err, DTL_ERR_USAGE, "parallel = %s (%s): only data parallelism runs "
                           "on several ranks in this build (tensor and pipeline parallelism "
                           "are checked, not run yet); use `parallel = data`", spec, at);
    if (par->u.par.data > 0 && par->u.par.data != n)
        return dtl_err_set(err, DTL_ERR_USAGE, "parallel = %s (%s) asks for %" PRId64 " ranks, "
                           "but this run has %d (%s=%d); say `parallel = data` to use every "
                           "rank", spec, at, par->u.par.data, n, size_var(env), n);
    int64_t b = batch > 0 ? batch : t->batch;
    if (b % n != 0) {
        where(ctx, t, DTL_SET_BATCH, at, sizeof at);
        return dtl_err_set(err, DTL_ERR_USAGE, "batch %" PRId64 " (%s%s) does not divide by the "
                           "%d ranks: `batch` is the global batch, each rank takes batch/%d "
                           "rows; choose a multiple of %d", b, batch > 0 ? "--batch" : "at ",
                           batch > 0 ? "" : at, n, n, n);
    }
    return true;
}

/* FNV-1a 64. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

/* The sources and `what` (which carries the params' hash, compiler/run.c). */
static uint64_t model_hash(dtl_ctx *ctx, const char *what)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t i = 0; i < ctx->sources.nfiles; i++) {
        const dtl_source *s = ctx->sources.files[i];
        h = fnv(h, s->text, s->len);
        h = fnv(h, "\0", 1);
    }
    return fnv(h, what, strlen(what));
}

static void on_ready(void *ctx, uint32_t k, const dtl_tensor *value)
{
    dtl_dist *d = ctx;
    dtl_ddp_ready(d->ddp, k, value->data);
}

static void dist_free(dtl_dist *d)
{
    if (!d)
        return;
    dtl_ddp_free(d->ddp);
    free(d->bind);
    free(d);
}

dtl_dist *dtl_dist_join(dtl_ctx *ctx, const dtl_train *t, const dtl_comm_env *env,
                        const dtl_graph *grad, const char *what, bool eval_sums, dtl_err *err)
{
    dtl_dist *d = calloc(1, sizeof *d);
    dtl_ddp_tensor *ts = calloc(grad->nouts + 1, sizeof *ts);
    dtl_ddp_bucket *bs = calloc(grad->nouts + 1, sizeof *bs);
    char (*sig)[400] = calloc(grad->nouts + 1, sizeof *sig);
    const char **sigs = calloc(grad->nouts + 1, sizeof *sigs);
    if (d)
        d->bind = calloc(grad->nouts + 8, sizeof *d->bind);
    if (!d || !d->bind || !ts || !bs || !sig || !sigs) {
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    d->grad = grad;
    d->n = grad->nouts;
    d->timeout = env->timeout_s;
    char at[300];
    where(ctx, t, DTL_SET_PARALLEL, at, sizeof at);
    snprintf(d->grad_label, sizeof d->grad_label, "gradients @ %s", at);
    where(ctx, t, DTL_SET_EVALUATE, at, sizeof at);
    snprintf(d->eval_label, sizeof d->eval_label, "evaluation @ %s", at);
    d->loss_k = SIZE_MAX;
    for (uint32_t k = 0; k < grad->nouts; k++) {
        const dtl_output *o = &grad->outs[k];
        const dtl_node *v = &grad->nodes[o->val];
        if (o->kind == DTL_OUT_LOSS)
            d->loss_k = k;
        d->nstate += o->kind == DTL_OUT_PARAM;
        ts[k].name = strncmp(o->name, "grad.", 5) == 0 ? o->name + 5 : o->name;
        ts[k].dtype = v->dtype;
        ts[k].count = 1;
        for (uint32_t i = 0; i < v->rank; i++)
            ts[k].count *= (size_t)v->shape[i];
        d->bind[k] = (dtl_binding){o->name, NULL, v->dtype, v->rank, {0}};
        memcpy(d->bind[k].shape, v->shape, sizeof d->bind[k].shape);
    }
    if (d->loss_k == SIZE_MAX) {
        dtl_err_set(err, DTL_ERR_INTERNAL, "the gradient graph has no loss output");
        goto fail;
    }
    size_t bytes, nb;
    if (!dtl_ddp_bucket_bytes(getenv("DTL_BUCKET_MB"), &bytes, err) ||
        !dtl_ddp_plan(ts, d->n, bytes, bs, &nb, err))
        goto fail;
    size_t ns = 0;
    for (size_t b = 0; b < nb; b++, ns++) {
        dtl_ddp_sig(sig[ns], sizeof sig[ns], &bs[b], d->grad_label);
        sigs[ns] = sig[ns];
    }
    if (eval_sums) {
        dtl_comm_sig(sig[ns], sizeof sig[ns], "allreduce", 3, DTL_DTYPE_F64, DTL_COMM_SUM,
                     d->eval_label);
        sigs[ns] = sig[ns];
        ns++;
    }
    dtl_comm_opts co = {model_hash(ctx, what), sigs, ns};
    if (!(d->c = dtl_comm_init(env, &co, err)))
        goto fail;
    dtl_comm_set_timeout(d->c, env->timeout_s > DTL_DIST_START_TIMEOUT ? env->timeout_s
                                                                       : DTL_DIST_START_TIMEOUT);
    if (!(d->ddp = dtl_ddp_new(d->c, ts, d->n, bytes, d->grad_label, err))) {
        dtl_comm_abort(d->c, err->msg);
        d->c = NULL;
        goto fail;
    }
    free(ts);
    free(bs);
    free(sig);
    free(sigs);
    return d;
fail:
    dist_free(d);
    free(ts);
    free(bs);
    free(sig);
    free(sigs);
    return NULL;
}

int dtl_dist_rank(const dtl_dist *d)
{
    return dtl_comm_rank(d->c);
}

int dtl_dist_size(const dtl_dist *d)
{
    return dtl_comm_size(d->c);
}

void dtl_dist_plan_opts(dtl_dist *d, dtl_plan_opts *o)
{
    memset(o, 0, sizeof *o);
    o->output_ready = on_ready;
    o->ready_ctx = d;
}

bool dtl_dist_broadcast(dtl_dist *d, dtl_store *s, dtl_err *err)
{
    if (!dtl_store_sync(s, DTL_SYNC_TO_HOST, err))
        return false;
    size_t total = 0, n = dtl_store_count(s);
    for (size_t i = 0; i < n; i++) {
        const dtl_store_entry *e = dtl_store_at(s, i);
        total += (size_t)dtl_tensor_numel(&e->t) * dtl_dtype_size(e->t.dtype);
    }
    unsigned char *buf = malloc(total ? total : 1);
    if (!buf)
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for the params' broadcast");
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const dtl_store_entry *e = dtl_store_at(s, i);
        size_t nb = (size_t)dtl_tensor_numel(&e->t) * dtl_dtype_size(e->t.dtype);
        memcpy(buf + at, e->t.data, nb);
        at += nb;
    }
    char label[340];
    snprintf(label, sizeof label, "params from rank 0 @ %s", d->grad_label + strlen("gradients @ "));
    /* (bytes: bool is the one-byte dtype; a broadcast only moves them) */
    bool ok = dtl_comm_broadcast(d->c, buf, total, DTL_DTYPE_BOOL, 0, label, err);
    for (size_t i = 0, off = 0; ok && i < n; i++) {
        dtl_store_entry *e = dtl_store_at(s, i);
        size_t nb = (size_t)dtl_tensor_numel(&e->t) * dtl_dtype_size(e->t.dtype);
        memcpy(e->t.data, buf + off, nb);
        off += nb;
    }
    free(buf);
    return ok && dtl_store_sync(s, DTL_SYNC_TO_DEVICE, err);
}

/* The states the forward pass updated (batch_norm's running statistics, which each rank
 * computed from its own rows) become their mean over the ranks, so that every rank keeps the
 * same values (and evaluates with them). */
static bool average_states(dtl_dist *d, dtl_store *s, dtl_err *err)
{
    bool mirror = dtl_store_mirror_get(s) != NULL;
    if (mirror && !dtl_store_sync(s, DTL_SYNC_TO_HOST, err))
        return false;
    for (size_t k = 0; k < d->n; k++) {
        const dtl_output *o = &d->grad->outs[k];
        dtl_store_entry *e = o->kind == DTL_OUT_PARAM ? dtl_store_find(s, o->name) : NULL;
        if (e)
            memcpy(e->t.data, dtl_ddp_grad(d->ddp, k),
                   (size_t)dtl_tensor_numel(&e->t) * dtl_dtype_size(e->t.dtype));
    }
    return !mirror || dtl_store_sync(s, DTL_SYNC_TO_DEVICE, err);
}

bool dtl_dist_step(dtl_dist *d, dtl_plan *grad, dtl_plan *update, dtl_store *store,
                   const dtl_binding *in, size_t nin, double *loss, dtl_err *err)
{
    if (!dtl_ddp_begin(d->ddp, err) || !dtl_plan_run(grad, in, nin, err) ||
        !dtl_ddp_finish(d->ddp, err))
        return false;
    if (d->nstate && !average_states(d, store, err))
        return false;
    size_t nb = d->n;
    for (size_t k = 0; k < d->n; k++)
        d->bind[k].data = dtl_ddp_grad(d->ddp, k);
    for (size_t i = 0; i < nin && i < 8; i++)   /* step, total_steps (x, y: ignored) */
        d->bind[nb++] = in[i];
    if (!dtl_plan_run(update, d->bind, nb, err))
        return false;
    const void *l = dtl_ddp_grad(d->ddp, d->loss_k);
    *loss = d->bind[d->loss_k].dtype == DTL_DTYPE_F64 ? *(const double *)l : *(const float *)l;
    return true;
}

void dtl_dist_started(dtl_dist *d)
{
    dtl_comm_set_timeout(d->c, d->timeout);
}

bool dtl_dist_sum(dtl_dist *d, double *v, size_t n, dtl_err *err)
{
    return dtl_comm_allreduce(d->c, v, n, DTL_DTYPE_F64, DTL_COMM_SUM, d->eval_label, err);
}

double dtl_dist_wait_seconds(const dtl_dist *d)
{
    return dtl_ddp_wait_seconds(d->ddp);
}

const char *dtl_dist_transport(const dtl_dist *d, char *buf, size_t cap)
{
    const char *p = dtl_comm_provider(d->c), *dom = dtl_comm_domain(d->c);
    if (strcmp(p, dom) == 0)
        snprintf(buf, cap, "%s", p);
    else
        snprintf(buf, cap, "%s on %s", p, dom);
    return buf;
}

bool dtl_dist_end(dtl_dist *d, dtl_err *err)
{
    dtl_ddp_free(d->ddp);
    d->ddp = NULL;
    bool ok = dtl_comm_finalize(d->c, err);
    if (ok)
        dtl_comm_free(d->c);
    else
        dtl_comm_abort(d->c, err->msg);
    dist_free(d);
    return ok;
}

void dtl_dist_abort(dtl_dist *d, const char *why)
{
    if (!d)
        return;
    /* The comm thread stops using the communicator first; the buckets outlive the transport,
     * which may still write into them until the abort has closed it. */
    dtl_ddp_stop(d->ddp);
    dtl_comm_abort(d->c, why);
    dtl_ddp_free(d->ddp);
    d->ddp = NULL;
    dist_free(d);
}
