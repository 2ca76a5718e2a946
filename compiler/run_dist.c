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
 * On the host backends (ref, llvm) the update is sharded instead, ZeRO-1 style (unless
 * DTL_SHARD_UPDATE=0): the gradients' buckets are reduce-scattered, so rank r holds the mean of
 * its part — 1/N of every bucket, a contiguous element range of each gradient in it
 * (runtime/comm/ddp.h) — and runs the optimizer on that part only. The sharded update graph
 * is built here from the optimizer configuration (compiler/optim.h, dtl_opt_build): one
 * param "<p>" and one input "grad.<p>" per gradient part, 1-D, of the part's length, planned
 * against a store of its own (`ustore`: this rank's parts of the params and of their
 * optimizer moments). Every optimizer of optim.h is elementwise except clipping by the
 * global norm, which needs the sum of squares of all gradients: it is summed over the parts
 * here, allreduced (one f64), and the parts are scaled before the update, as optim.c
 * computes it. Then the updated parts are all-gathered into the full params of the run's
 * store, which the GRAD and eval plans read. The moments live in ustore only (the full
 * store's copies are stale) until a checkpoint: dtl_dist_sync_state gathers them first, so a
 * checkpoint holds the whole optimizer state and resumes at any world size;
 * dtl_dist_broadcast, which starts every run (and a resume) from rank 0's full store, cuts
 * the parts out of it. Half the optimizer's work and moment memory per rank with 2 ranks, and
 * the same bytes on the wire as the allreduce (a reduce-scatter and an all-gather).
 *
 * What every rank must agree on is checked once, at dtl_comm_init: a hash of the sources
 * (every file of the compilation), the params' names, dtypes and shapes and the options that
 * change results, and the ordered collectives of a step (the buckets' signatures, then the
 * evaluation's f64[3] sum). The timeout is raised for start-up — plans compile after the
 * rendezvous and the first collective waits for the slowest rank — and lowered again after
 * the first step. */
#include "run_dist.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../lang/print.h"
#include "../lang/source.h"
#include "../runtime/comm/ddp.h"
#include "run_dist_cuda.h"

enum { SFX_MAX = 8 };

struct dtl_dist {
    dtl_comm *c;
    dtl_ddp *ddp;
    dtl_dist_cuda *cu;          /* the cuda backend: NCCL averages instead (run_dist_cuda.h) */
    const dtl_backend *be;
    double timeout;             /* DTL_TIMEOUT */
    size_t n;                   /* GRAD's outputs = ddp tensors */
    const dtl_graph *grad;
    size_t loss_k;              /* the loss's index */
    size_t nstate;              /* of them DTL_OUT_PARAM: states the forward pass updates */
    dtl_binding *gb;            /* n: each tensor's binding as GRAD outputs it */
    dtl_binding *bind;          /* n + 8 bindings for the update */
    bool shard;                 /* the update is sharded (see the design) */
    double clip;                /* shard: clip by the global norm here (> 0) */
    bool *is_grad;              /* per tensor: a "grad.<p>" output (sharded when shard) */
    dtl_opt_cfg optim;
    dtl_graph ugraph;           /* shard: the update of this rank's parts */
    bool have_ugraph;
    dtl_store *ustore;          /* shard: its params and moments */
    dtl_plan *uplan;            /* the update: the sharded one, or UPDATE on the averages */
    char sfx[SFX_MAX][32];      /* shard: the moments' suffixes ("m", "v") */
    size_t nsfx;
    void **full;                /* n: scratch for dtl_ddp_gather */
    const void **part;
    /* --timings: sums over the steps counted (dtl_dist_step_done) */
    int64_t steps;
    double t_grad, t_wait, t_update, t_gather;   /* wall seconds */
    double c_grad, c_update, c_gather, c_comm;    /* CPU seconds: this thread's, comm thread */
    double last[8];             /* the last step's, until counted */
    char grad_label[320];       /* "gradients @ m.dtl:25" */
    char params_label[320];     /* "params @ m.dtl:25" */
    char state_label[320];      /* "optimizer state @ m.dtl:25" */
    char norm_label[320];       /* "gradient norm @ m.dtl:25" */
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
    dtl_plan_free(d->uplan);
    dtl_store_free(d->ustore);
    if (d->have_ugraph)
        dtl_graph_free(&d->ugraph);
    free(d->bind);
    free(d->gb);
    free(d->is_grad);
    free(d->full);
    free(d->part);
    free(d);
}

/* The sharded update needs a host backend (the parts are cut and gathered in host memory)
 * and DTL_SHARD_UPDATE unset or not "0". */
static bool want_shard(const dtl_backend *be)
{
    const char *e = getenv("DTL_SHARD_UPDATE");
    if (e && strcmp(e, "0") == 0)
        return false;
    return strcmp(be->name, "llvm") == 0 || strcmp(be->name, "ref") == 0;
}

dtl_dist *dtl_dist_join(dtl_ctx *ctx, const dtl_train *t, const dtl_comm_env *env,
                        const dtl_graph *grad, const dtl_backend *be, const dtl_opt_cfg *optim,
                        const char *what, bool eval_sums, dtl_err *err)
{
    dtl_dist *d = calloc(1, sizeof *d);
    size_t cap = 2 * (size_t)grad->nouts + 3;   /* signatures: reductions, gathers, 2 more */
    dtl_ddp_tensor *ts = calloc(grad->nouts + 1, sizeof *ts);
    dtl_ddp_bucket *bs = calloc(grad->nouts + 1, sizeof *bs);
    char (*sig)[400] = calloc(cap, sizeof *sig);
    const char **sigs = calloc(cap, sizeof *sigs);
    if (d) {
        d->bind = calloc(grad->nouts + 8, sizeof *d->bind);
        d->gb = calloc(grad->nouts + 1, sizeof *d->gb);
        d->is_grad = calloc(grad->nouts + 1, sizeof *d->is_grad);
        d->full = calloc(grad->nouts + 1, sizeof *d->full);
        d->part = calloc(grad->nouts + 1, sizeof *d->part);
    }
    if (!d || !d->bind || !d->gb || !d->is_grad || !d->full || !d->part || !ts || !bs || !sig ||
        !sigs) {
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    d->grad = grad;
    d->be = be;
    d->optim = *optim;
    d->n = grad->nouts;
    d->timeout = env->timeout_s;
    d->shard = want_shard(be);
    d->clip = d->shard ? optim->clip_norm : 0;
    char at[300];
    where(ctx, t, DTL_SET_PARALLEL, at, sizeof at);
    snprintf(d->grad_label, sizeof d->grad_label, "gradients @ %s", at);
    snprintf(d->params_label, sizeof d->params_label, "params @ %s", at);
    snprintf(d->state_label, sizeof d->state_label, "optimizer state @ %s", at);
    snprintf(d->norm_label, sizeof d->norm_label, "gradient norm @ %s", at);
    where(ctx, t, DTL_SET_EVALUATE, at, sizeof at);
    snprintf(d->eval_label, sizeof d->eval_label, "evaluation @ %s", at);
    d->loss_k = SIZE_MAX;
    for (uint32_t k = 0; k < grad->nouts; k++) {
        const dtl_output *o = &grad->outs[k];
        const dtl_node *v = &grad->nodes[o->val];
        if (o->kind == DTL_OUT_LOSS)
            d->loss_k = k;
        d->nstate += o->kind == DTL_OUT_PARAM;
        d->is_grad[k] = o->kind == DTL_OUT_VALUE && strncmp(o->name, "grad.", 5) == 0;
        ts[k].name = d->is_grad[k] ? o->name + 5 : o->name;
        ts[k].shard = d->shard && d->is_grad[k];
        ts[k].dtype = v->dtype;
        ts[k].count = 1;
        for (uint32_t i = 0; i < v->rank; i++)
            ts[k].count *= (size_t)v->shape[i];
        d->gb[k] = (dtl_binding){o->name, NULL, v->dtype, v->rank, {0}};
        memcpy(d->gb[k].shape, v->shape, sizeof d->gb[k].shape);
    }
    if (d->loss_k == SIZE_MAX) {
        dtl_err_set(err, DTL_ERR_INTERNAL, "the gradient graph has no loss output");
        goto fail;
    }
    size_t bytes, nb;
    if (!dtl_ddp_bucket_bytes(getenv("DTL_BUCKET_MB"), &bytes, err) ||
        !dtl_ddp_plan(ts, d->n, bytes, env->size, bs, &nb, err))
        goto fail;
    size_t ns = 0;
    for (size_t b = 0; b < nb; b++, ns++) {
        dtl_ddp_sig(sig[ns], sizeof sig[ns], &bs[b], d->grad_label);
        sigs[ns] = sig[ns];
    }
    if (d->clip > 0) {
        dtl_comm_sig(sig[ns], sizeof sig[ns], "allreduce", 1, DTL_DTYPE_F64, DTL_COMM_SUM,
                     d->norm_label);
        sigs[ns] = sig[ns];
        ns++;
    }
    for (size_t b = 0; b < nb; b++)
        if (bs[b].shard) {
            dtl_ddp_gather_sig(sig[ns], sizeof sig[ns], &bs[b], d->params_label);
            sigs[ns] = sig[ns];
            ns++;
        }
    if (eval_sums) {
        dtl_comm_sig(sig[ns], sizeof sig[ns], "allreduce", 3, DTL_DTYPE_F64, DTL_COMM_SUM,
                     d->eval_label);
        sigs[ns] = sig[ns];
        ns++;
    }
    /* a rank the watcher has to end says what dtlc's own error path says, with its status
     * (a failed collective is an I/O error: exit status 2) */
    dtl_comm_opts co = {model_hash(ctx, what), sigs, ns, "dtlc: error: ", 2};
    if (strcmp(be->name, "cuda") == 0 && !dtl_dist_cuda_check(err))   /* before any wait */
        goto fail;
    if (!(d->c = dtl_comm_init(env, &co, err)))
        goto fail;
    dtl_dist_cuda_opts cuo = {env->timeout_s, env->timeout_s > DTL_DIST_START_TIMEOUT
                                                  ? env->timeout_s : DTL_DIST_START_TIMEOUT,
                              co.stuck_prefix, co.stuck_status};
    dtl_comm_set_timeout(d->c, env->timeout_s > DTL_DIST_START_TIMEOUT ? env->timeout_s
                                                                       : DTL_DIST_START_TIMEOUT);
    if (!(d->ddp = dtl_ddp_new(d->c, ts, d->n, bytes, d->grad_label, err)) ||
        (strcmp(be->name, "cuda") == 0 &&
         !(d->cu = dtl_dist_cuda_new(d->c, grad, d->ddp, &cuo, err)))) {
        dtl_comm_abort(d->c, err->msg);
        d->c = NULL;
        goto fail;
    }
    const char *ov = getenv("DTL_DDP_OVERLAP");
    dtl_ddp_set_overlap(d->ddp, !(ov && strcmp(ov, "0") == 0));
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
    if (d->cu) {
        dtl_dist_cuda_plan_opts(d->cu, o);
        return;
    }
    memset(o, 0, sizeof *o);
    o->output_ready = on_ready;
    o->ready_ctx = d;
}

/* ---- the sharded update ------------------------------------------------------------------ */

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The full store's entry of tensor k's param ("fc1.w"), or of its moment ("fc1.w.m" for
 * suffix "m"; sfx NULL: the param). */
static dtl_store_entry *entry_of(dtl_dist *d, dtl_store *s, size_t k, const char *sfx)
{
    char name[300];
    snprintf(name, sizeof name, "%s%s%s", d->grad->outs[k].name + 5, sfx ? "." : "",
             sfx ? sfx : "");
    return dtl_store_find(s, name);
}

/* ustore's parts from the full store s (after the broadcast from rank 0). */
static bool scatter_parts(dtl_dist *d, dtl_store *s, dtl_err *err)
{
    if (!d->shard || !d->ustore)
        return true;
    for (size_t k = 0; k < d->n; k++) {
        size_t lo, n;
        dtl_ddp_part(d->ddp, k, &lo, &n);
        if (!d->is_grad[k] || n == 0)
            continue;
        for (size_t j = 0; j <= d->nsfx; j++) {
            const char *sfx = j ? d->sfx[j - 1] : NULL;
            dtl_store_entry *f = entry_of(d, s, k, sfx), *u = entry_of(d, d->ustore, k, sfx);
            if (!f || !u)
                return dtl_err_set(err, DTL_ERR_INTERNAL, "data parallel: no %s%s%s for the "
                                   "sharded update", d->grad->outs[k].name + 5, sfx ? "." : "",
                                   sfx ? sfx : "");
            size_t es = dtl_dtype_size(f->t.dtype);
            memcpy(u->t.data, (unsigned char *)f->t.data + lo * es, n * es);
        }
    }
    return true;
}

/* The sharded update's graph: per gradient part of this rank, a 1-D param named like the
 * param and an input "grad.<param>", the optimizer (without clipping: dtl_dist_step clips
 * by the global norm) and the "lr" output. */
static bool build_ugraph(dtl_dist *d, dtl_err *err)
{
    dtl_graph *g = &d->ugraph;
    dtl_graph_init(g);
    d->have_ugraph = true;
    dtl_val *params = calloc(d->n + 1, sizeof *params), *grads = calloc(d->n + 1, sizeof *grads);
    if (!params || !grads) {
        free(params);
        free(grads);
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
    }
    uint32_t np = 0;
    for (size_t k = 0; k < d->n; k++) {
        size_t lo, n;
        dtl_ddp_part(d->ddp, k, &lo, &n);
        if (!d->is_grad[k] || n == 0)
            continue;
        const dtl_output *o = &d->grad->outs[k];
        int64_t len = (int64_t)n;
        dtl_dtype dt = d->grad->nodes[o->val].dtype;
        dtl_init zero = {DTL_INIT_ZEROS, 0, 0, NULL};
        params[np] = dtl_g_param(g, o->name + 5, dt, 1, &len, zero);
        grads[np] = dtl_g_input(g, o->name, dt, 1, &len);
        np++;
    }
    dtl_opt_cfg cfg = d->optim;
    cfg.clip_norm = 0;
    dtl_opt_info info;
    bool ok = dtl_opt_build(g, &cfg, params, grads, np, &info, err);
    free(params);
    free(grads);
    if (!ok)
        return false;
    if (info.lr != DTL_VAL_NONE)
        dtl_g_output(g, DTL_OUT_VALUE, "lr", info.lr, DTL_VAL_NONE);
    /* The moments' suffixes, from the state outputs ("fc1.w.m": "m"). */
    for (uint32_t i = 0; i < g->nouts; i++) {
        const dtl_output *o = &g->outs[i];
        if (o->kind != DTL_OUT_STATE)
            continue;
        const char *dot = strrchr(o->name, '.');
        bool seen = !dot;
        for (size_t j = 0; !seen && j < d->nsfx; j++)
            seen = strcmp(d->sfx[j], dot + 1) == 0;
        if (seen)
            continue;
        if (d->nsfx == SFX_MAX || strlen(dot + 1) >= sizeof d->sfx[0])
            return dtl_err_set(err, DTL_ERR_INTERNAL, "data parallel: optimizer state '%s' "
                               "is not one the sharded update knows", o->name);
        snprintf(d->sfx[d->nsfx++], sizeof d->sfx[0], "%s", dot + 1);
    }
    return true;
}

bool dtl_dist_prepare(dtl_dist *d, const dtl_graph *update, dtl_store *store, dtl_err *err)
{
    /* The full store gets the optimizer's moments (what checkpoints hold) in any case. */
    if (!dtl_store_bind(store, update, err))
        return false;
    dtl_plan_opts uo;
    if (d->cu)   /* the UPDATE plan takes the averaged gradients on the GPU */
        dtl_dist_cuda_plan_opts(d->cu, &uo);
    if (!d->shard)
        return (d->uplan = dtl_plan_new(d->be, update, store, d->cu ? &uo : NULL, err)) != NULL;
    if (!build_ugraph(d, err))
        return false;
    if (!(d->ustore = dtl_store_new(dtl_store_seed(store))))
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
    return (d->uplan = dtl_plan_new(d->be, &d->ugraph, d->ustore, NULL, err)) != NULL &&
           scatter_parts(d, store, err);
}

/* Gathers every rank's parts of the params (sfx NULL) or of one moment into the full store. */
static bool gather(dtl_dist *d, dtl_store *s, const char *sfx, dtl_err *err)
{
    for (size_t k = 0; k < d->n; k++) {
        d->full[k] = NULL;
        d->part[k] = NULL;
        if (!d->is_grad[k])
            continue;
        dtl_store_entry *f = entry_of(d, s, k, sfx), *u = entry_of(d, d->ustore, k, sfx);
        size_t lo, n;
        dtl_ddp_part(d->ddp, k, &lo, &n);
        if (!f || (n && !u))
            return dtl_err_set(err, DTL_ERR_INTERNAL, "data parallel: no %s%s%s to gather",
                               d->grad->outs[k].name + 5, sfx ? "." : "", sfx ? sfx : "");
        d->full[k] = f->t.data;
        d->part[k] = u ? u->t.data : NULL;
    }
    char what[400];
    if (sfx)
        snprintf(what, sizeof what, "optimizer state .%s%s", sfx,
                 d->state_label + strlen("optimizer state"));
    return dtl_ddp_gather(d->ddp, d->full, d->part, sfx ? what : d->params_label, err);
}

bool dtl_dist_sync_state(dtl_dist *d, dtl_store *s, dtl_err *err)
{
    for (size_t j = 0; d->shard && j < d->nsfx; j++)
        if (!gather(d, s, d->sfx[j], err))
            return false;
    return true;
}

/* Clipping by the global norm over the parts (optim.c's formula: the norm of all gradients,
 * scale min(1, clip / (norm + 1e-6))). */
static bool clip_parts(dtl_dist *d, dtl_err *err)
{
    double ss = 0;
    for (size_t k = 0; k < d->n; k++) {
        size_t lo, n;
        dtl_ddp_part(d->ddp, k, &lo, &n);
        if (!d->is_grad[k])
            continue;
        const void *g = dtl_ddp_grad(d->ddp, k);
        if (d->gb[k].dtype == DTL_DTYPE_F64)
            for (size_t i = 0; i < n; i++)
                ss += ((const double *)g)[i] * ((const double *)g)[i];
        else
            for (size_t i = 0; i < n; i++)
                ss += (double)((const float *)g)[i] * ((const float *)g)[i];
    }
    if (!dtl_comm_allreduce(d->c, &ss, 1, DTL_DTYPE_F64, DTL_COMM_SUM, d->norm_label, err))
        return false;
    double coef = d->clip / (sqrt(ss) + 1e-6);
    if (!(coef < 1))
        return true;
    for (size_t k = 0; k < d->n; k++) {
        size_t lo, n;
        dtl_ddp_part(d->ddp, k, &lo, &n);
        if (!d->is_grad[k])
            continue;
        void *g = dtl_ddp_grad(d->ddp, k);
        if (d->gb[k].dtype == DTL_DTYPE_F64)
            for (size_t i = 0; i < n; i++)
                ((double *)g)[i] *= coef;
        else
            for (size_t i = 0; i < n; i++)
                ((float *)g)[i] *= (float)coef;
    }
    return true;
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
    return ok && scatter_parts(d, s, err) && dtl_store_sync(s, DTL_SYNC_TO_DEVICE, err);
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

bool dtl_dist_step(dtl_dist *d, dtl_plan *grad, dtl_store *store, const dtl_binding *in,
                   size_t nin, double *loss, double *lr, dtl_err *err)
{
    double w0 = wall_now(), c0 = cpu_now();
    if (d->cu) {   /* NCCL on the GPUs: GRAD, UPDATE, then the wait (run_dist_cuda.h) */
        dtl_tensor lt;
        if (!dtl_dist_cuda_step(d->cu, grad, d->uplan, in, nin, loss, err) ||
            !dtl_plan_output(d->uplan, "lr", &lt, err))
            return false;
        *lr = lt.dtype == DTL_DTYPE_F64 ? *(const double *)lt.data : *(const float *)lt.data;
        memset(d->last, 0, sizeof d->last);
        d->last[1] = dtl_dist_cuda_wait_seconds(d->cu);
        d->last[0] = wall_now() - w0 - d->last[1];
        d->last[4] = cpu_now() - c0;
        return true;
    }
    if (!dtl_ddp_begin(d->ddp, err) || !dtl_plan_run(grad, in, nin, err))
        return false;
    double w1 = wall_now(), c1 = cpu_now();
    if (!dtl_ddp_finish(d->ddp, err))
        return false;
    double w2 = wall_now(), c2 = cpu_now();
    if (d->nstate && !average_states(d, store, err))
        return false;
    if (d->clip > 0 && !clip_parts(d, err))
        return false;
    size_t nb = 0;
    for (size_t k = 0; k < d->n; k++) {
        size_t lo, n;
        dtl_ddp_part(d->ddp, k, &lo, &n);
        if (d->shard && (!d->is_grad[k] || n == 0))
            continue;   /* (the sharded update takes this rank's parts of the gradients) */
        d->bind[nb] = d->gb[k];
        d->bind[nb].data = dtl_ddp_grad(d->ddp, k);
        if (d->shard) {
            d->bind[nb].rank = 1;
            d->bind[nb].shape[0] = (int64_t)n;
        }
        nb++;
    }
    for (size_t i = 0; i < nin && i < 8; i++)   /* step, total_steps (x, y: ignored) */
        d->bind[nb++] = in[i];
    if (!dtl_plan_run(d->uplan, d->bind, nb, err))
        return false;
    double w3 = wall_now(), c3 = cpu_now();
    if (d->shard && !gather(d, store, NULL, err))
        return false;
    dtl_tensor lt;
    if (!dtl_plan_output(d->uplan, "lr", &lt, err))
        return false;
    *lr = lt.dtype == DTL_DTYPE_F64 ? *(const double *)lt.data : *(const float *)lt.data;
    const void *l = dtl_ddp_grad(d->ddp, d->loss_k);
    *loss = d->gb[d->loss_k].dtype == DTL_DTYPE_F64 ? *(const double *)l : *(const float *)l;
    double w4 = wall_now();
    d->last[0] = w1 - w0;
    d->last[1] = w2 - w1;
    d->last[2] = w3 - w2;
    d->last[3] = w4 - w3;
    d->last[4] = c1 - c0;
    d->last[5] = c3 - c2;
    d->last[6] = cpu_now() - c3;
    d->last[7] = dtl_ddp_comm_cpu_seconds(d->ddp);
    return true;
}

void dtl_dist_step_done(dtl_dist *d)
{
    d->steps++;
    d->t_grad += d->last[0];
    d->t_wait += d->last[1];
    d->t_update += d->last[2];
    d->t_gather += d->last[3];
    d->c_grad += d->last[4];
    d->c_update += d->last[5];
    d->c_gather += d->last[6];
    d->c_comm += d->last[7];
}

const char *dtl_dist_timings(const dtl_dist *d, char *buf, size_t cap)
{
    double n = d->steps > 0 ? (double)d->steps : 1;
    snprintf(buf, cap, "rank %d, per step: GRAD %.1f ms, waiting for gradients %.1f ms, "
             "%s update %.1f ms, gathering params %.1f ms (wall); CPU: GRAD %.1f ms, update "
             "%.1f ms, gathering %.1f ms, comm thread %.1f ms", dtl_comm_rank(d->c),
             d->t_grad / n * 1e3, d->t_wait / n * 1e3, d->shard ? "sharded" : "whole",
             d->t_update / n * 1e3, d->t_gather / n * 1e3, d->c_grad / n * 1e3,
             d->c_update / n * 1e3, d->c_gather / n * 1e3, d->c_comm / n * 1e3);
    return buf;
}

void dtl_dist_update_stats(const dtl_dist *d, dtl_plan_stats *st)
{
    memset(st, 0, sizeof *st);
    if (d->uplan)
        dtl_plan_stats_get(d->uplan, st);
}

void dtl_dist_started(dtl_dist *d)
{
    dtl_comm_set_timeout(d->c, d->timeout);
    if (d->cu)
        dtl_dist_cuda_set_timeout(d->cu, d->timeout);
}

bool dtl_dist_sum(dtl_dist *d, double *v, size_t n, dtl_err *err)
{
    return dtl_comm_allreduce(d->c, v, n, DTL_DTYPE_F64, DTL_COMM_SUM, d->eval_label, err);
}

double dtl_dist_wait_seconds(const dtl_dist *d)
{
    if (d->cu)
        return dtl_dist_cuda_wait_seconds(d->cu);
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
    dtl_dist_cuda_free(d->cu, false);
    d->cu = NULL;
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
    dtl_dist_cuda_free(d->cu, true);   /* (NCCL aborted; see run_dist_cuda.h) */
    d->cu = NULL;
    dtl_comm_abort(d->c, why);
    dtl_ddp_free(d->ddp);
    d->ddp = NULL;
    dist_free(d);
}
