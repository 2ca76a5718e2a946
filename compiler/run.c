/* compiler/run.c — the training and inference driver behind `dtlc run`.
 *
 * One straight line (STYLE habit 7): lower the train block to its step, eval and infer graphs;
 * plan them on the chosen backend over one store of parameters; then train or infer.
 *
 * Training is a loop over epochs and, inside, over the batches the data loader
 * (runtime/data.h) prepares in a background thread. The run's position is four numbers: the
 * step counter (updates done; the graph's INPUT "step" is that plus one), the epoch in
 * progress, the steps done in it, and the running sum of its losses. They, the seed and the
 * store (params and optimizer moments) are the whole state of a run — the order of epoch e
 * is a pure function of (seed, e), dropout of (seed, step) — so a checkpoint holds them and a
 * resumed run skips the epoch's first steps in the same order and goes on bit for bit.
 * Checkpoints are written between steps, after the epoch's summary when at its end, so a
 * checkpoint at an epoch boundary records (next epoch, 0 steps).
 *
 * Evaluation runs the eval graph over the test split in file order; its last batch, when
 * short, runs through a second eval graph lowered for that many rows (graphs have concrete
 * shapes), and the loss is weighted by rows. Inference does the same with the infer graph.
 *
 * Checkpoints are safetensors files (runtime/safetensors.h): every store entry by its name
 * (params "fc1.w", optimizer state "fc1.w.m", "fc1.w.v") and string metadata (format, model,
 * a hash of the params' names, dtypes and shapes, position, seed, batch …). Loading compares
 * each tensor's dtype and shape with the model's and names the first that differs.
 */
#include "run.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/data.h"
#include "../runtime/exec.h"
#include "../runtime/fsutil.h"
#include "../runtime/philox.h"
#include "../runtime/progress.h"
#include "../runtime/safetensors.h"
#include "../lang/print.h"
#include "lower.h"
#include "run_dist.h"
#include "../kernels/cuda/cuda.h"
#ifdef HAVE_LLVM
#include "llvm/llvm.h"
#endif

#define CKPT_FORMAT "dtl.checkpoint.v1"

void dtl_run_opts_default(dtl_run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->limit_train = -1;
    o->limit_test = -1;
    o->max_steps = -1;
    o->progress = DTL_PROGRESS_AUTO;
}

/* ---- the run's state ---------------------------------------------------------------------- */

typedef struct runner {
    dtl_ctx *ctx;
    const dtl_train *t;
    const dtl_run_opts *o;
    dtl_err *err;
    FILE *out, *perr;
    dtl_lower_opts lo;
    dtl_lowered L;
    bool lowered;
    const dtl_backend *be;
    dtl_store *store;
    dtl_plan *step_plan, *eval_plan, *eval_tail, *infer_plan, *infer_tail;
    /* Data parallel (world > 1, compiler/run_dist.h): step_plan runs the GRAD graph and
     * dist the update; r->batch is this rank's share of the global batch. */
    int world, rank;
    bool dp;                   /* data parallel: world > 1, or cuda on one rank (NCCL) */
    dtl_comm_env env;
    dtl_dist *dist;
    bool dist_started;         /* a step ran: the world's timeout is DTL_TIMEOUT again */
    int64_t dist_steps;        /* --timings: steps, their wall time and the time their   */
    double dist_step_s, dist_wait_s;   /* finish waited for gradients after backward */
    dtl_graph eval_tail_g, infer_tail_g;
    bool have_eval_tail_g, have_infer_tail_g;
    dtl_data train, test;
    bool have_test;
    dtl_loader *ltrain, *ltest;
    dtl_progress prog;
    FILE *metrics;
    const char *model;         /* the model's name */
    char hash[17];             /* of the params' names, dtypes and shapes */
    uint64_t seed;
    int64_t epochs, batch, steps_per_epoch;
    int64_t total_steps;       /* epochs x steps_per_epoch: the step graph's "total_steps" */
    double last_lr;            /* the "lr" of the last update run here; NaN: none yet */
    /* The position (what a checkpoint records). */
    int64_t step, epoch, epoch_step;
    double loss_sum;           /* of this epoch's steps */
    /* What was saved last (to not write the same position twice). */
    int64_t saved_step;
    /* --resume: the checkpoint, kept open from reading its position to applying it. */
    dtl_st_file *ck;
    const char *ck_shuffle;
    int64_t ck_batch, ck_rows;
    /* --timings: seconds spent lowering and loading the data, wall clock. */
    double t_lower, t_data;
} runner;

/* With no --backend the LAST entry is used. cuda is not here: it is a plugin, loaded only when
 * asked for (--backend cuda, --device cuda or `device = cuda` in the train block), by
 * backend_named; it is never the default. */
static const dtl_backend *const backends[] = {
    &dtl_backend_ref,
#ifdef HAVE_LLVM
    &dtl_backend_llvm,   /* the default when LLVM is built in */
#endif
};

static dtl_run_status fail_usage(runner *r, const char *fmt, const char *a)
{
    dtl_err_set(r->err, DTL_ERR_USAGE, fmt, a);
    return DTL_RUN_USAGE;
}

/* The backend called name (NULL: the default). cuda is loaded now (kernels/cuda/cuda.h): when
 * it cannot be, NULL with the reason in err. NULL with err untouched: no such backend. */
static const dtl_backend *backend_named(const char *name, dtl_err *err)
{
    if (name && strcmp(name, "cuda") == 0) {
        const dtl_backend *be = dtl_cuda_backend(err);
        if (!be) {
            char why[sizeof err->msg];
            snprintf(why, sizeof why, "%s", err->msg);
            dtl_err_set(err, DTL_ERR_USAGE, "backend 'cuda': %s", why);
        }
        return be;
    }
    const dtl_backend *be = NULL;
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (!name || strcmp(name, backends[i]->name) == 0)
            be = backends[i];
    return be;
}

/* "unknown backend 'x'; this build has: cuda, ref, llvm" */
static dtl_run_status unknown_backend(runner *r, const char *name)
{
#ifdef HAVE_CUDA
    char list[120] = "cuda";
    size_t at = strlen(list);
#else
    char list[120] = "";
    size_t at = 0;
#endif
    for (size_t i = 0; i < sizeof backends / sizeof backends[0] && at < sizeof list; i++)
        at += (size_t)snprintf(list + at, sizeof list - at, "%s%s", at ? ", " : "",
                               backends[i]->name);
    dtl_err_set(r->err, DTL_ERR_USAGE, "unknown backend '%s'; this build has: %s", name, list);
    return DTL_RUN_USAGE;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* "f32[784, 128]" */
static void fmt_type(char *buf, size_t len, dtl_dtype dt, uint32_t rank, const int64_t *shape)
{
    int k = snprintf(buf, len, "%s[", dtl_dtype_name(dt));
    for (uint32_t i = 0; i < rank && k > 0 && (size_t)k < len; i++)
        k += snprintf(buf + k, len - (size_t)k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k > 0 && (size_t)k < len)
        snprintf(buf + k, len - (size_t)k, "]");
}

static const dtl_node *find_input(const dtl_graph *g, const char *name)
{
    for (uint32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == DTL_OP_INPUT && strcmp(g->nodes[i].name, name) == 0)
            return &g->nodes[i];
    return NULL;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

/* The params' hash: FNV-1a 64 over "name dtype[shape];" for each PARAM of the step graph,
 * in order. */
static void params_hash(const dtl_graph *g, char out[17])
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t i = 0; i < g->nnodes; i++) {
        const dtl_node *n = &g->nodes[i];
        if (n->op != DTL_OP_PARAM)
            continue;
        char ty[160];
        fmt_type(ty, sizeof ty, n->dtype, n->rank, n->shape);
        h = fnv1a(h, n->name, strlen(n->name));
        h = fnv1a(h, " ", 1);
        h = fnv1a(h, ty, strlen(ty));
        h = fnv1a(h, ";", 1);
    }
    snprintf(out, 17, "%016" PRIx64, h);
}

/* ---- checkpoints -------------------------------------------------------------------------- */

static bool save_checkpoint(runner *r, const char *path)
{
    /* data parallel with a sharded update: every rank brings its part of the moments */
    if (r->dist && !dtl_dist_sync_state(r->dist, r->store, r->err))
        return false;
    if (r->rank != 0) {   /* data parallel: rank 0 writes, the others hold the same values */
        r->saved_step = r->step;
        return true;
    }
    /* a device backend's values (the host's when another backend ran last: REPL) */
    if (!dtl_store_handover(r->store, r->be->name, NULL, r->err))
        return false;
    size_t n = dtl_store_count(r->store);
    dtl_st_tensor *ts = calloc(n ? n : 1, sizeof *ts);
    if (!ts)
        return dtl_err_set(r->err, DTL_ERR_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) {
        const dtl_store_entry *e = dtl_store_at(r->store, i);
        ts[i].name = e->name;
        ts[i].dtype = dtl_st_dtype_from(e->t.dtype);
        ts[i].rank = e->t.rank;
        memcpy(ts[i].shape, e->t.shape, sizeof ts[i].shape);
        ts[i].data = e->t.data;
        ts[i].nbytes = (size_t)dtl_tensor_numel(&e->t) * dtl_dtype_size(e->t.dtype);
    }
    char step[24], epoch[24], estep[24], seed[24], batch[24], rows[24], lsum[48];
    snprintf(step, sizeof step, "%" PRId64, r->step);
    snprintf(epoch, sizeof epoch, "%" PRId64, r->epoch);
    snprintf(estep, sizeof estep, "%" PRId64, r->epoch_step);
    snprintf(seed, sizeof seed, "%" PRIu64, r->seed);
    snprintf(batch, sizeof batch, "%" PRId64, r->batch * r->world);   /* the global batch */
    snprintf(rows, sizeof rows, "%" PRId64, r->train.n);
    snprintf(lsum, sizeof lsum, "%a", r->loss_sum);
    const dtl_st_meta meta[] = {
        {"format", CKPT_FORMAT},
        {"source", base_name(r->o->file ? r->o->file : "")},
        {"model", r->model},
        {"params_hash", r->hash},
        {"dtype", r->o->f64 ? "f64" : "f32"},
        {"step", step},
        {"epoch", epoch},
        {"epoch_step", estep},
        {"epoch_loss_sum", lsum},
        {"seed", seed},
        {"rng", "philox4x32-10"},
        {"shuffle", r->o->no_shuffle ? "false" : "true"},
        {"batch", batch},
        {"train_rows", rows},
    };
    bool ok = dtl_st_write(path, ts, n, meta, sizeof meta / sizeof meta[0], r->err);
    free(ts);
    if (ok)
        r->saved_step = r->step;
    return ok;
}

/* A metadata integer, or false with a format error. */
static bool meta_i64(runner *r, const char *path, const dtl_st_file *f, const char *key,
                     int64_t *out)
{
    const char *s = dtl_st_meta_get(f, key);
    if (!s)
        return dtl_err_set(r->err, DTL_ERR_FORMAT, "%s: corrupt checkpoint: no '%s' in its "
                           "metadata", path, key);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < 0)
        return dtl_err_set(r->err, DTL_ERR_FORMAT, "%s: corrupt checkpoint: metadata '%s' is "
                           "'%.40s', not a number", path, key, s);
    *out = v;
    return true;
}

/* Copies the file's tensors into the store: every param, and with states every state too.
 * Any difference of names, dtypes or shapes is a DTL_ERR_MISMATCH naming the tensor. */
static bool apply_tensors(runner *r, const char *path, const dtl_st_file *f, bool states)
{
    const char *pre = "does not match this model";
    char here[160], there[160];
    size_t n = dtl_store_count(r->store);
    for (size_t i = 0; i < n; i++) {
        const dtl_store_entry *e = dtl_store_at(r->store, i);
        if (e->is_state && !states)
            continue;
        fmt_type(here, sizeof here, e->t.dtype, e->t.rank, e->t.shape);
        const dtl_st_tensor *t = dtl_st_find(f, e->name);
        if (!t)
            return dtl_err_set(r->err, DTL_ERR_MISMATCH, "checkpoint %s %s: it has no %s "
                               "(%s here)", path, pre, e->name, here);
        dtl_dtype dt;
        bool same = dtl_st_dtype_to(t->dtype, &dt) && dt == e->t.dtype && t->rank == e->t.rank;
        for (uint32_t k = 0; same && k < t->rank; k++)
            same = t->shape[k] == e->t.shape[k];
        if (!same) {
            if (dtl_st_dtype_to(t->dtype, &dt))
                fmt_type(there, sizeof there, dt, t->rank, t->shape);
            else
                snprintf(there, sizeof there, "%s", dtl_st_dtype_name(t->dtype));
            return dtl_err_set(r->err, DTL_ERR_MISMATCH, "checkpoint %s %s: %s is %s there, "
                               "%s here", path, pre, e->name, there, here);
        }
    }
    /* Tensors the model lacks. Without states, optimizer moments of known params may stay. */
    for (size_t i = 0; i < dtl_st_count(f); i++) {
        const dtl_st_tensor *t = dtl_st_get(f, i);
        if (dtl_store_find(r->store, t->name))
            continue;
        size_t len = strlen(t->name);
        if (!states && len > 2 && t->name[len - 2] == '.' &&
            (t->name[len - 1] == 'm' || t->name[len - 1] == 'v')) {
            char base[256];
            if (len - 2 < sizeof base) {
                memcpy(base, t->name, len - 2);
                base[len - 2] = '\0';
                if (dtl_store_find(r->store, base))
                    continue;
            }
        }
        return dtl_err_set(r->err, DTL_ERR_MISMATCH, "checkpoint %s %s: it has %s, which this "
                           "model lacks", path, pre, t->name);
    }
    for (size_t i = 0; i < n; i++) {
        dtl_store_entry *e = dtl_store_at(r->store, i);
        if (e->is_state && !states)
            continue;
        const dtl_st_tensor *t = dtl_st_find(f, e->name);
        if (t->nbytes)
            memcpy(e->t.data, t->data, t->nbytes);
    }
    return dtl_store_sync(r->store, DTL_SYNC_TO_DEVICE, r->err);   /* a device backend's copy */
}

/* --load: the weights (params only) of any safetensors file with the model's names. */
static bool load_weights(runner *r, const char *path)
{
    dtl_st_file *f = dtl_st_read(path, r->err);
    if (!f)
        return false;
    bool ok = apply_tensors(r, path, f, false);
    dtl_st_close(f);
    return ok;
}

/* --resume, first half (before the store exists, whose seed it sets): reads the checkpoint
 * and its position. */
static dtl_run_status resume_read(runner *r, const char *path)
{
    dtl_st_file *f = r->ck = dtl_st_read(path, r->err);
    if (!f)
        return DTL_RUN_FAILED;
    const char *fmt = dtl_st_meta_get(f, "format");
    int64_t seed;
    const char *lsum = dtl_st_meta_get(f, "epoch_loss_sum");
    r->ck_shuffle = dtl_st_meta_get(f, "shuffle");
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0) {
        dtl_err_set(r->err, DTL_ERR_FORMAT, "%s: not a dtl checkpoint (its metadata has no "
                    "format \"%s\"); to start from its weights, use --load", path, CKPT_FORMAT);
        return DTL_RUN_FAILED;
    }
    if (!meta_i64(r, path, f, "step", &r->step) || !meta_i64(r, path, f, "epoch", &r->epoch) ||
        !meta_i64(r, path, f, "epoch_step", &r->epoch_step) ||
        !meta_i64(r, path, f, "seed", &seed) || !meta_i64(r, path, f, "batch", &r->ck_batch) ||
        !meta_i64(r, path, f, "train_rows", &r->ck_rows))
        return DTL_RUN_FAILED;
    char *end = NULL;
    r->loss_sum = lsum ? strtod(lsum, &end) : 0;
    if (!lsum || !*lsum || *end || !r->ck_shuffle) {
        dtl_err_set(r->err, DTL_ERR_FORMAT, "%s: corrupt checkpoint: bad or missing '%s' in its "
                    "metadata", path, !lsum || !*lsum || *end ? "epoch_loss_sum" : "shuffle");
        return DTL_RUN_FAILED;
    }
    if (r->o->seed_set && r->o->seed != (uint64_t)seed) {
        dtl_err_set(r->err, DTL_ERR_USAGE, "--seed %" PRIu64 " differs from the seed of checkpoint "
                    "%s (%" PRId64 "); a resumed run keeps its seed", r->o->seed, path, seed);
        return DTL_RUN_USAGE;
    }
    r->seed = (uint64_t)seed;
    if (r->epoch_step == 0)
        r->loss_sum = 0;
    if (r->o->save && strcmp(r->o->save, path) == 0)
        r->saved_step = r->step;   /* --save holds this position already */
    return DTL_RUN_OK;
}

/* --resume, second half (the store and the training data are there): the position must fit
 * these batches; then the params and the optimizer state replace the store's. */
static dtl_run_status resume_apply(runner *r, const char *path)
{
    if (r->epoch_step > 0) {
        /* The position in the epoch means something only with the same batches. */
        const char *what = r->ck_batch != r->batch * r->world ? "batch size"
                           : r->ck_rows != r->train.n ? "number of training rows (--limit-train)"
                           : (strcmp(r->ck_shuffle, "false") == 0) != r->o->no_shuffle
                           ? "shuffling (--no-shuffle)" : NULL;
        if (what) {
            dtl_err_set(r->err, DTL_ERR_USAGE, "checkpoint %s was written in the middle of an "
                        "epoch; resuming it needs the same %s", path, what);
            return DTL_RUN_USAGE;
        }
        if (r->epoch_step >= r->steps_per_epoch) {
            dtl_err_set(r->err, DTL_ERR_FORMAT, "%s: corrupt checkpoint: epoch_step %" PRId64
                        " is past the epoch's %" PRId64 " steps", path, r->epoch_step,
                        r->steps_per_epoch);
            return DTL_RUN_FAILED;
        }
    }
    return apply_tensors(r, path, r->ck, true) ? DTL_RUN_OK : DTL_RUN_FAILED;
}

/* ---- data ----------------------------------------------------------------------------------- */

/* dir/name, unless name is absolute or dir is empty. */
static char *join(const char *dir, const char *name)
{
    size_t dl = strlen(dir), nl = strlen(name);
    char *s = malloc(dl + nl + 2);
    if (!s)
        return NULL;
    if (name[0] == '/' || dl == 0)
        memcpy(s, name, nl + 1);
    else {
        memcpy(s, dir, dl);
        s[dl] = '/';
        memcpy(s + dl + 1, name, nl + 1);
    }
    return s;
}

static bool load_split(runner *r, const dtl_lower_data *ld, dtl_dtype dt, dtl_data *d)
{
    dtl_data_opts o = dtl_data_opts_default();
    o.dtype = dt;
    o.scale = ld->scale;
    o.compact = true;   /* batches come through dtl_data_gather: keep u8 images as bytes */
    switch (ld->kind) {
    case DTL_LDATA_IDX: {
        const char *dirs[2];
        size_t nd = 0;
        if (r->o->data_dir)
            dirs[nd++] = r->o->data_dir;
        else {
            dirs[nd++] = getenv("DTL_DATA");
            dirs[nd++] = "/usr/share/datasets";
        }
        char dir[4096];
        return dtl_data_find_dir(ld->name, dirs, nd, dir, sizeof dir, r->err) &&
               dtl_data_load_idx_dir(d, dir, ld->test ? "test" : "train", &o, r->err);
    }
    case DTL_LDATA_TEXT: {
        dtl_text_opts to = {ld->context, ld->separator, ld->test_every, ld->test};
        char *p = join(ld->dir, ld->path);
        bool ok = p ? dtl_data_load_text(d, p, &to, r->err)
                    : dtl_err_set(r->err, DTL_ERR_NOMEM, "out of memory");
        free(p);
        return ok;
    }
    case DTL_LDATA_NPY: {
        char *x = join(ld->dir, ld->x), *y = join(ld->dir, ld->y);
        bool ok = x && y ? dtl_data_load_npy(d, x, y, &o, r->err)
                         : dtl_err_set(r->err, DTL_ERR_NOMEM, "out of memory");
        free(x);
        free(y);
        return ok;
    }
    case DTL_LDATA_CSV: {
        o.csv_header = ld->header;
        o.csv_label = ld->label;
        o.csv_label_index = (int)ld->label_index;
        o.csv_skip = (int)ld->skip;
        o.csv_regression = ld->regression;
        char *p = join(ld->dir, ld->path);
        bool ok = p ? dtl_data_load_csv(d, p, &o, r->err)
                    : dtl_err_set(r->err, DTL_ERR_NOMEM, "out of memory");
        if (ok && ld->test_fraction > 0)   /* test = 0.2: the held-out rows of one file */
            ok = dtl_data_holdout(d, ld->test_fraction, ld->test, p, r->err);
        if (!ok)
            dtl_data_free(d);
        free(p);
        return ok;
    }
    }
    return dtl_err_set(r->err, DTL_ERR_USAGE, "unknown kind of data set");
}

/* Checks that d's rows fit the graph's input x (and labels its output, when known). */
static bool data_fits(runner *r, const dtl_data *d, const char *what, const dtl_graph *g)
{
    const dtl_node *x = find_input(g, "x");
    if (!x)
        return dtl_err_set(r->err, DTL_ERR_USAGE, "the graph has no input x");
    int64_t per = 1;
    for (uint32_t i = 1; i < x->rank; i++)
        per *= x->shape[i];
    if (x->rank < 1 || per != d->features) {
        char ty[160];   /* "f32[B, 784]": the batch dim is the run's choice, not the data's */
        fmt_type(ty, sizeof ty, x->dtype, x->rank, x->shape);
        char *open = strchr(ty, '['), *comma = strchr(ty, ',');
        if (open && x->rank > 1 && comma)
            memmove(open + 2, comma, strlen(comma) + 1), open[1] = 'B';
        else if (open && x->rank == 1)
            snprintf(open, sizeof ty - (size_t)(open - ty), "[B]");
        return dtl_err_set(r->err, DTL_ERR_MISMATCH, "%s: rows of %" PRId64 " values, but the "
                           "model's x is %s (%" PRId64 " values a row)", what, d->features, ty,
                           per);
    }
    const dtl_node *y = find_input(g, "y");
    int64_t yper = 1;
    for (uint32_t i = 1; y && i < y->rank; i++)
        yper *= y->shape[i];
    if (d->text && x->dtype != DTL_DTYPE_I64)
        return dtl_err_set(r->err, DTL_ERR_MISMATCH, "%s: text windows are byte ids, i64, but "
                           "the model's x is %s", what, dtl_dtype_name(x->dtype));
    if (y && (y->dtype != dtl_data_ydtype(d) || yper != dtl_data_ylen(d)))
        return dtl_err_set(r->err, DTL_ERR_MISMATCH, "%s: %" PRId64 " label(s) of %s a row, "
                           "but the graph's y takes %" PRId64 " of %s", what, dtl_data_ylen(d),
                           dtl_dtype_name(dtl_data_ydtype(d)), yper, dtl_dtype_name(y->dtype));
    if (r->L.has_infer && d->y) {
        const dtl_graph *ig = &r->L.infer;
        for (uint32_t i = 0; i < ig->nouts; i++) {
            const dtl_node *y = &ig->nodes[ig->outs[i].val];
            if (strcmp(ig->outs[i].name, "y") == 0 && y->rank == 2 && d->classes > y->shape[1])
                return dtl_err_set(r->err, DTL_ERR_MISMATCH, "%s: labels go up to %" PRId64
                                   ", but the model has %" PRId64 " outputs", what,
                                   d->classes - 1, y->shape[1]);
        }
    }
    return true;
}

static const char *split_name(const dtl_lower_data *ld, char *buf, size_t len)
{
    snprintf(buf, len, "%s.%s", ld->dataset ? ld->dataset : "data", ld->test ? "test" : "train");
    return buf;
}

/* ---- running graphs ------------------------------------------------------------------------- */

static double scalar_of(const dtl_tensor *t)
{
    switch (t->dtype) {
    case DTL_DTYPE_F32: return *(const float *)t->data;
    case DTL_DTYPE_F64: return *(const double *)t->data;
    case DTL_DTYPE_I64: return (double)*(const int64_t *)t->data;
    case DTL_DTYPE_I32: return *(const int32_t *)t->data;
    default: return NAN;
    }
}

/* The bindings of graph g (whose x is `rows` rows) for x, y, the step number (*stepno, which
 * must outlive the run) and the run's length (the inputs a graph does not have are ignored);
 * returns how many (x alone without y). */
static size_t batch_bindings(runner *r, const dtl_graph *g, const void *x, const int64_t *y,
                             int64_t rows, const int64_t *stepno, dtl_binding in[4])
{
    const dtl_node *xn = find_input(g, "x"), *yn = find_input(g, "y");
    dtl_binding b[4] = {{"x", x, xn->dtype, xn->rank, {0}},
                        {"y", y, yn ? yn->dtype : DTL_DTYPE_I64, yn ? yn->rank : 1, {rows}},
                        {"step", stepno, DTL_DTYPE_I64, 0, {0}},
                        {"total_steps", &r->total_steps, DTL_DTYPE_I64, 0, {0}}};
    memcpy(b[0].shape, xn->shape, sizeof b[0].shape);
    b[0].shape[0] = rows;
    if (yn) {   /* y: i64[B], f32[B] targets or i64[B, T] (text) */
        memcpy(b[1].shape, yn->shape, sizeof b[1].shape);
        b[1].shape[0] = rows;
    }
    memcpy(in, b, sizeof b);
    return y ? 4 : 1;
}

/* Runs plan p of graph g on a batch (see batch_bindings). */
static bool run_batch(runner *r, dtl_plan *p, const dtl_graph *g, const void *x, const int64_t *y,
                      int64_t rows, int64_t stepno)
{
    dtl_binding in[4];
    size_t n = batch_bindings(r, g, x, y, rows, &stepno, in);
    return dtl_plan_run(p, in, n, r->err);
}


static bool read_scalar(runner *r, dtl_plan *p, const char *name, double *v)
{
    dtl_tensor t;
    if (!dtl_plan_output(p, name, &t, r->err))
        return false;
    *v = scalar_of(&t);
    return true;
}

/* One update on a batch: *loss (the global batch's, in data parallel) and r->last_lr. */
static bool train_batch(runner *r, const dtl_batch *b, double *loss)
{
    int64_t stepno = r->step + 1;
    if (!r->dist)
        return run_batch(r, r->step_plan, &r->L.step, b->x, b->y, b->rows, stepno) &&
               read_scalar(r, r->step_plan, "loss", loss) &&
               read_scalar(r, r->step_plan, "lr", &r->last_lr);
    dtl_binding in[4];
    size_t n = batch_bindings(r, &r->L.grad, b->x, b->y, b->rows, &stepno, in);
    double t0 = dtl_progress_now();
    if (!dtl_dist_step(r->dist, r->step_plan, r->store, in, n, loss, &r->last_lr, r->err))
        return false;
    if (!r->dist_started)   /* compiling and the first step are behind: the usual timeout */
        dtl_dist_started(r->dist);
    else {   /* (the first step, which waits for the slowest rank's start, is not counted) */
        dtl_dist_step_done(r->dist);
        r->dist_steps++;
        r->dist_step_s += dtl_progress_now() - t0;
        r->dist_wait_s += dtl_dist_wait_seconds(r->dist);
    }
    r->dist_started = true;
    return true;
}

/* The plan for a graph of this kind lowered with `rows` as its batch (the short last batch). */
static dtl_plan *tail_plan(runner *r, dtl_lower_kind kind, int64_t rows, dtl_graph *g,
                           bool *have)
{
    dtl_lower_opts lo = r->lo;
    lo.batch = rows;
    if (!dtl_lower_graph(r->ctx, r->t, kind, &lo, g)) {
        dtl_err_set(r->err, DTL_ERR_USAGE, "cannot lower the graph for a last batch of %" PRId64
                    " rows", rows);
        return NULL;
    }
    *have = true;
    return dtl_plan_new(r->be, g, r->store, NULL, r->err);
}

/* Evaluates on the test split: the loss averaged over rows and the accuracy. */
static bool evaluate(runner *r, double *loss, double *acc)
{
    double lsum = 0;
    int64_t correct = 0, rows = 0;
    if (!dtl_loader_start_epoch(r->ltest, 0, r->err))
        return false;
    for (const dtl_batch *b; (b = dtl_loader_next(r->ltest)); dtl_loader_release(r->ltest, b)) {
        if (b->rows == 0)
            continue;
        dtl_plan *p = r->eval_plan;
        const dtl_graph *g = &r->L.eval;
        if (b->rows != r->batch) {
            if (!r->eval_tail &&
                !(r->eval_tail = tail_plan(r, DTL_LOWER_EVAL, b->rows, &r->eval_tail_g,
                                           &r->have_eval_tail_g))) {
                dtl_loader_release(r->ltest, b);
                return false;
            }
            p = r->eval_tail;
            g = &r->eval_tail_g;
        }
        double l, c = 0;
        if (!run_batch(r, p, g, b->x, b->y, b->rows, r->step) || !read_scalar(r, p, "loss", &l) ||
            (r->L.has_accuracy && !read_scalar(r, p, "correct", &c))) {
            dtl_loader_release(r->ltest, b);
            return false;
        }
        lsum += l * (double)b->rows;
        correct += (int64_t)c;
        rows += b->rows;
    }
    if (r->dist) {   /* each rank evaluated its shard: the sums over all ranks */
        double v[3] = {lsum, (double)correct, (double)rows};
        if (!dtl_dist_sum(r->dist, v, 3, r->err))
            return false;
        lsum = v[0];
        correct = (int64_t)v[1];
        rows = (int64_t)v[2];
    }
    *loss = lsum / (double)rows;
    /* text: every position of a window is a prediction */
    *acc = (double)correct / ((double)rows * (double)dtl_data_ylen(&r->test));
    return true;
}

/* ---- output ----------------------------------------------------------------------------------- */

static void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.17g", v);
    else
        fputs("null", f);
}

typedef struct epoch_report {
    int64_t epoch;           /* 1-based */
    int64_t steps;           /* done in it */
    double train_loss, test_loss, test_acc;   /* NaN: none */
    double seconds, samples_per_s;
    double lr;               /* of the epoch's last update */
} epoch_report;

static bool report_epoch(runner *r, const epoch_report *e)
{
    if (r->rank != 0)   /* data parallel: rank 0 reports for all */
        return true;
    dtl_progress_clear(&r->prog);
    fprintf(r->out, "epoch %" PRId64 "/%" PRId64, e->epoch, r->epochs);
    if (e->steps != r->steps_per_epoch)
        fprintf(r->out, " (%" PRId64 " of %" PRId64 " steps)", e->steps, r->steps_per_epoch);
    fprintf(r->out, "  train_loss %.4f", e->train_loss);
    if (!isnan(e->test_loss))
        fprintf(r->out, "  test_loss %.4f  test_accuracy %.4f", e->test_loss, e->test_acc);
    fprintf(r->out, "  seconds %.1f  samples/s %.0f\n", e->seconds, e->samples_per_s);
    fflush(r->out);
    if (!r->metrics)
        return true;
    FILE *m = r->metrics;
    fprintf(m, "{\"epoch\": %" PRId64 ", \"step\": %" PRId64 ", \"epoch_steps\": %" PRId64
            ", \"train_loss\": ", e->epoch, r->step, e->steps);
    json_num(m, e->train_loss);
    fputs(", \"test_loss\": ", m);
    json_num(m, e->test_loss);
    fputs(", \"test_accuracy\": ", m);
    json_num(m, e->test_acc);
    fputs(", \"lr\": ", m);
    json_num(m, e->lr);
    fputs(", \"seconds\": ", m);
    fprintf(m, "%.3f", e->seconds);
    fputs(", \"samples_per_s\": ", m);
    fprintf(m, "%.1f}\n", e->samples_per_s);
    if (fflush(m) != 0 || ferror(m))
        return dtl_err_set(r->err, DTL_ERR_IO, "%s: cannot write: %s", r->o->metrics,
                           strerror(errno));
    return true;
}

/* ---- training ----------------------------------------------------------------------------- */

static bool stop_now(const runner *r)
{
    return r->o->max_steps >= 0 && r->step >= r->o->max_steps;
}

/* Saves to --save if the cadence says so (at_epoch_end: the epoch just ended). */
static bool maybe_checkpoint(runner *r, bool at_epoch_end)
{
    const dtl_run_opts *o = r->o;
    if (!o->save || o->ckpt_every <= 0 || r->saved_step == r->step)
        return true;
    bool due = o->ckpt_in_epochs ? at_epoch_end && r->epoch % o->ckpt_every == 0
                                 : r->step % o->ckpt_every == 0;
    return !due || save_checkpoint(r, o->save);
}

/* The lr of update r->step, the epoch's last: as the step graph gave it, or (a run resumed
 * and stopped before its first update) as dtl_opt_lr_at computes it, the same way. */
static double last_lr(const runner *r)
{
    if (!isnan(r->last_lr) || r->step < 1)
        return r->last_lr;
    dtl_opt_cfg c = r->L.optim;
    if (c.sched.kind == DTL_SCHED_COSINE && c.sched.total_from_run)
        c.sched.total = dtl_sched_run_total(&c.sched, r->total_steps);
    return dtl_opt_lr_at(&c, r->step);
}

/* --timings: one line on stderr, just before the first step, saying where the time since
 * dtlc started went. Plan preparation is split into the passes + fusion and LLVM (their CPU
 * time, from the plans' stats; 0 on backends without them); "other" is what is left (the
 * check before dtl_run, the store, the loaders' threads). */
static void print_timings(runner *r)
{
    dtl_plan_stats s, e;
    dtl_plan_stats_get(r->step_plan, &s);
    dtl_plan_stats_get(r->eval_plan, &e);
    double now = dtl_progress_now(), total = r->o->start_time > 0 ? now - r->o->start_time : 0;
    double passes = s.passes_seconds + e.passes_seconds, llvm = s.llvm_seconds + e.llvm_seconds;
    if (r->dist) {   /* data parallel: the step is two plans */
        dtl_plan_stats u;
        dtl_dist_update_stats(r->dist, &u);
        passes += u.passes_seconds;
        llvm += u.llvm_seconds;
    }
    double other = total - r->t_lower - r->t_data - passes - llvm;
    fprintf(r->perr, "dtlc: timings: first step after %.1f ms: lowering %.1f ms, passes and "
            "fusion %.1f ms, LLVM %.1f ms (step and eval plans, %s backend), data %.1f ms, "
            "other %.1f ms\n", total * 1e3, r->t_lower * 1e3, passes * 1e3, llvm * 1e3,
            r->be->name, r->t_data * 1e3, (other > 0 ? other : 0) * 1e3);
}

static dtl_run_status train(runner *r)
{
    const dtl_run_opts *o = r->o;
    if (o->timings && r->rank == 0)
        print_timings(r);
    int64_t target = r->epochs * r->steps_per_epoch;
    if (o->max_steps >= 0 && o->max_steps < target)
        target = o->max_steps;
    double t_run = dtl_progress_now(), t_train = 0;
    int64_t steps_run = 0;
    while (r->epoch < r->epochs && !stop_now(r)) {
        double t0 = dtl_progress_now(), t_steps = 0;
        int64_t samples = 0;
        if (!dtl_loader_start_epoch(r->ltrain, (uint64_t)r->epoch, r->err))
            return DTL_RUN_FAILED;
        for (int64_t k = 0; k < r->epoch_step; k++) {   /* resumed mid-epoch: skip ahead */
            const dtl_batch *b = dtl_loader_next(r->ltrain);
            if (!b)
                break;
            dtl_loader_release(r->ltrain, b);
        }
        double t_loop = dtl_progress_now(), t_before = t_train;
        for (const dtl_batch *b; !stop_now(r) && (b = dtl_loader_next(r->ltrain));) {
            double loss;
            int64_t rows = b->rows * r->world;   /* the global batch's */
            bool ok = train_batch(r, b, &loss);
            dtl_loader_release(r->ltrain, b);
            if (!ok)
                return DTL_RUN_FAILED;
            if (!isfinite(loss)) {
                dtl_progress_clear(&r->prog);
                dtl_err_set(r->err, DTL_ERR_FORMAT, "step %" PRId64 ": the loss is %s: training "
                            "diverged (a lower learning rate may help); nothing saved",
                            r->step + 1, isnan(loss) ? "NaN" : "infinite");
                return DTL_RUN_FAILED;
            }
            r->step++;
            r->epoch_step++;
            r->loss_sum += loss;
            samples += rows;
            double now = dtl_progress_now();
            t_steps = now - t_loop;   /* waits for the loader included */
            t_train = t_before + t_steps;
            steps_run++;
            dtl_progress_info pi = {
                r->epoch + 1, r->epochs, r->epoch_step, r->steps_per_epoch,
                r->loss_sum / (double)r->epoch_step, (double)samples / t_steps,
                t_train / (double)steps_run * (double)(target - r->step)};
            bool last = r->epoch_step == r->steps_per_epoch;
            dtl_progress_update(&r->prog, &pi, now, last && r->prog.mode == DTL_PROGRESS_MODE_BAR);
            if (r->epoch_step < r->steps_per_epoch && !maybe_checkpoint(r, false))
                return DTL_RUN_FAILED;
        }
        if (r->epoch_step == 0)
            break;   /* stopped before this epoch's first step */
        epoch_report e = {r->epoch + 1, r->epoch_step, r->loss_sum / (double)r->epoch_step,
                          NAN, NAN, 0, t_steps > 0 ? (double)samples / t_steps : 0,
                          last_lr(r)};
        if (r->have_test && !evaluate(r, &e.test_loss, &e.test_acc))
            return DTL_RUN_FAILED;
        e.seconds = dtl_progress_now() - t0;
        if (!report_epoch(r, &e))
            return DTL_RUN_FAILED;
        if (r->epoch_step < r->steps_per_epoch)
            break;   /* --steps stopped it mid-epoch */
        r->epoch++;
        r->epoch_step = 0;
        r->loss_sum = 0;
        if (!maybe_checkpoint(r, true))
            return DTL_RUN_FAILED;
    }
    dtl_progress_clear(&r->prog);
    (void)t_run;
    if (o->timings && r->rank == 0 && r->dist_steps > 0)
        fprintf(r->perr, "dtlc: timings: data parallel over %d ranks: %" PRId64 " steps (the "
                "first not counted), %.3f ms a step, of which %.3f ms (%.1f %%) waiting for the "
                "gradients' allreduce after backward\n", r->world, r->dist_steps,
                r->dist_step_s / (double)r->dist_steps * 1e3,
                r->dist_wait_s / (double)r->dist_steps * 1e3,
                r->dist_step_s > 0 ? 100 * r->dist_wait_s / r->dist_step_s : 0.0);
    if (o->timings && r->dist && r->dist_steps > 0) {   /* every rank: where its time went */
        char line[600];
        fprintf(r->perr, "dtlc: timings: %s\n", dtl_dist_timings(r->dist, line, sizeof line));
    }
    if (o->save && r->saved_step != r->step && !save_checkpoint(r, o->save))
        return DTL_RUN_FAILED;
    if (o->save && !o->ckpt_every && r->rank == 0)
        fprintf(r->perr, "dtlc: note: saved %s (step %" PRId64 ")\n", o->save, r->step);
    return DTL_RUN_OK;
}

/* ---- inference ------------------------------------------------------------------------------ */

/* Writes a C-order .npy of dtype dt (f32, f64, i64) and shape, atomically. */
static bool write_npy(const char *path, const void *data, dtl_dtype dt, uint32_t rank,
                     const int64_t *shape, dtl_err *err)
{
    const char *descr = dt == DTL_DTYPE_F32 ? "<f4" : dt == DTL_DTYPE_F64 ? "<f8"
                        : dt == DTL_DTYPE_I64 ? "<i8" : dt == DTL_DTYPE_I32 ? "<i4" : NULL;
    if (!descr)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s: cannot write %s as .npy", path,
                           dtl_dtype_name(dt));
    char head[512];
    int k = snprintf(head + 10, sizeof head - 10, "{'descr': '%s', 'fortran_order': False, "
                     "'shape': (", descr);
    uint64_t numel = 1;
    for (uint32_t i = 0; i < rank; i++) {
        k += snprintf(head + 10 + k, sizeof head - 10 - (size_t)k, "%" PRId64 "%s", shape[i],
                      rank == 1 ? "," : i + 1 < rank ? ", " : "");
        numel *= (uint64_t)shape[i];
    }
    k += snprintf(head + 10 + k, sizeof head - 10 - (size_t)k, "), }");
    size_t total = 10 + (size_t)k + 1;          /* + '\n' */
    size_t pad = (64 - total % 64) % 64;
    memset(head + 10 + k, ' ', pad);
    head[10 + k + pad] = '\n';
    size_t hlen = (size_t)k + pad + 1;
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (char)(hlen & 0xff);
    head[9] = (char)(hlen >> 8);
    dtl_fs_piece pieces[2] = {{head, 10 + hlen}, {data, numel * dtl_dtype_size(dt)}};
    return dtl_fs_write_atomic(path, pieces, 2, err);
}

static dtl_run_status infer(runner *r)
{
    const dtl_run_opts *o = r->o;
    const dtl_node *xn = find_input(&r->L.infer, "x");
    dtl_data d = {0};
    dtl_data_opts dopts = dtl_data_opts_default();
    dopts.dtype = xn->dtype;
    if (!dtl_data_load_npy(&d, o->input, NULL, &dopts, r->err))
        return DTL_RUN_FAILED;
    if (d.from_ints) {   /* raw pixels, say: the data set's scale would silently be missing */
        dtl_err_set(r->err, DTL_ERR_FORMAT, "%s holds integers: --infer takes the features as "
                    "the model sees them, float32 or float64 and already scaled as the data "
                    "set scales them (e.g. x / 255.0 for scale = 1/255)", o->input);
        dtl_data_free(&d);
        return DTL_RUN_FAILED;
    }
    dtl_run_status st = DTL_RUN_FAILED;
    void *ybuf = NULL;
    const dtl_graph *g = &r->L.infer;
    const dtl_output *yo = NULL;
    for (uint32_t i = 0; i < g->nouts; i++)
        if (strcmp(g->outs[i].name, "y") == 0)
            yo = &g->outs[i];
    if (!yo) {
        dtl_err_set(r->err, DTL_ERR_USAGE, "the infer graph has no output y");
        goto out;
    }
    if (!data_fits(r, &d, o->input, g))
        goto out;
    const dtl_node *yn = &g->nodes[yo->val];
    size_t esz = dtl_dtype_size(yn->dtype);
    uint64_t per = 1;
    for (uint32_t i = 1; i < yn->rank; i++)
        per *= (uint64_t)yn->shape[i];
    ybuf = malloc((size_t)((uint64_t)d.n * per * esz) + 1);
    if (!ybuf) {
        dtl_err_set(r->err, DTL_ERR_NOMEM, "out of memory for %" PRId64 " outputs", d.n);
        goto out;
    }
    size_t xrow = (size_t)d.features * dtl_dtype_size(d.dtype);
    for (int64_t at = 0; at < d.n; at += r->batch) {
        int64_t rows = d.n - at < r->batch ? d.n - at : r->batch;
        dtl_plan *p = r->infer_plan;
        const dtl_graph *pg = g;
        if (rows != r->batch) {
            if (!(r->infer_tail = tail_plan(r, DTL_LOWER_INFER, rows, &r->infer_tail_g,
                                            &r->have_infer_tail_g)))
                goto out;
            p = r->infer_tail;
            pg = &r->infer_tail_g;
        }
        dtl_tensor y;
        if (!run_batch(r, p, pg, (const char *)d.x + (size_t)at * xrow, NULL, rows, 0) ||
            !dtl_plan_output(p, "y", &y, r->err))
            goto out;
        memcpy((char *)ybuf + (size_t)at * per * esz, y.data, (size_t)rows * per * esz);
    }
    int64_t shape[DTL_MAX_RANK];
    memcpy(shape, yn->shape, sizeof shape);
    shape[0] = d.n;
    if (!write_npy(o->output, ybuf, yn->dtype, yn->rank, shape, r->err))
        goto out;
    st = DTL_RUN_OK;
out:
    free(ybuf);
    dtl_data_free(&d);
    return st;
}

/* ---- sampling from a language model ----------------------------------------------------------
 * --infer --sample N: the infer graph (lowered with batch 1) maps a window x: i64[1, T] of byte
 * ids to logits y: f32[1, T, V] (the next byte after each position) or f32[1, V] (after the
 * window). The window is the last T bytes of the prompt and what was generated so far; while
 * there are fewer than T, they fill the start of the window, the rest is zero bytes, and the
 * logits are read at the last real position — exact for a causal model, whose position i sees
 * positions <= i only. Byte k is drawn with probability softmax(logits / temperature)
 * (temperature 0: the likeliest byte) using the Philox stream ("sample", 0) keyed by the
 * seed, so the same seed gives the same text. */

static dtl_run_status sample(runner *r)
{
    const dtl_run_opts *o = r->o;
    const dtl_graph *g = &r->L.infer;
    const dtl_node *xn = find_input(g, "x");
    const dtl_output *yo = NULL;
    for (uint32_t i = 0; i < g->nouts; i++)
        if (strcmp(g->outs[i].name, "y") == 0)
            yo = &g->outs[i];
    const dtl_node *yn = yo ? &g->nodes[yo->val] : NULL;
    if (xn->dtype != DTL_DTYPE_I64 || xn->rank != 2 || xn->shape[0] != 1 || !yn ||
        !dtl_dtype_is_float(yn->dtype) || !(yn->rank == 2 || (yn->rank == 3 &&
                                                                yn->shape[1] == xn->shape[1]))) {
        char xs[160], ys[160] = "none";
        fmt_type(xs, sizeof xs, xn->dtype, xn->rank, xn->shape);
        if (yn)
            fmt_type(ys, sizeof ys, yn->dtype, yn->rank, yn->shape);
        dtl_err_set(r->err, DTL_ERR_USAGE, "--sample needs a model of byte windows, forward(x: "
                    "i64[B, T]) -> f32[B, T, V] (or f32[B, V]), as for a text(…) data set; "
                    "this model's x is %s and forward(x) is %s (at batch 1)", xs, ys);
        return DTL_RUN_USAGE;
    }
    int64_t T = xn->shape[1], V = yn->shape[yn->rank - 1];
    if (V < 2 || V > 256) {
        dtl_err_set(r->err, DTL_ERR_USAGE, "--sample: the model scores %" PRId64 " classes; "
                    "byte ids need 2 to 256", V);
        return DTL_RUN_USAGE;
    }
    const char *prompt = o->prompt && o->prompt[0] ? o->prompt : "\n";
    size_t plen = strlen(prompt), cap = plen + (size_t)o->sample;
    unsigned char *text = malloc(cap + 1);
    int64_t *x = calloc((size_t)T, sizeof *x);
    double *p = malloc((size_t)V * sizeof *p);
    dtl_run_status st = DTL_RUN_FAILED;
    if (!text || !x || !p) {
        dtl_err_set(r->err, DTL_ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(text, prompt, plen);
    size_t len = plen;
    double temp = o->temperature_set ? o->temperature : 1.0;
    dtl_rng rng;
    dtl_rng_init(&rng, r->seed, dtl_rng_stream_id("sample", 0));
    for (int64_t i = 0; i < o->sample; i++) {
        int64_t w = (int64_t)len < T ? (int64_t)len : T;
        for (int64_t j = 0; j < T; j++) {
            x[j] = j < w ? text[len - (size_t)w + (size_t)j] : 0;
            if (x[j] >= V) {
                dtl_err_set(r->err, DTL_ERR_USAGE, "--sample: byte %" PRId64 " of the text is "
                            "beyond the model's %" PRId64 " classes", x[j], V);
                st = DTL_RUN_USAGE;
                goto out;
            }
        }
        dtl_tensor y;
        if (!run_batch(r, r->infer_plan, g, x, NULL, 1, 0) ||
            !dtl_plan_output(r->infer_plan, "y", &y, r->err))
            goto out;
        size_t at = yn->rank == 3 ? (size_t)(w - 1) * (size_t)V : 0;
        double mx = -INFINITY;
        int64_t best = 0;
        for (int64_t k = 0; k < V; k++) {
            p[k] = y.dtype == DTL_DTYPE_F32 ? ((const float *)y.data)[at + (size_t)k]
                                            : ((const double *)y.data)[at + (size_t)k];
            if (p[k] > mx)
                mx = p[k], best = k;
        }
        if (!isfinite(mx)) {
            dtl_err_set(r->err, DTL_ERR_FORMAT, "--sample: the model's logits are not finite");
            goto out;
        }
        int64_t pick = best;
        if (temp > 0) {
            double sum = 0;
            for (int64_t k = 0; k < V; k++)
                sum += p[k] = exp((p[k] - mx) / temp);
            double u = dtl_rng_uniform_f64(&rng) * sum;
            for (pick = 0; pick < V - 1 && (u -= p[pick]) >= 0; pick++)
                ;
        }
        text[len++] = (unsigned char)pick;
    }
    /* The prompt the user gave, then the sample (without the default prompt, a newline). */
    size_t from = o->prompt && o->prompt[0] ? 0 : plen;
    fwrite(text + from, 1, len - from, r->out);
    if (len > from && text[len - 1] != '\n')
        fputc('\n', r->out);
    if (fflush(r->out) != 0 || ferror(r->out)) {
        dtl_err_set(r->err, DTL_ERR_IO, "cannot write the sample: %s", strerror(errno));
        goto out;
    }
    st = DTL_RUN_OK;
out:
    free(text);
    free(x);
    free(p);
    return st;
}

/* ---- setup ------------------------------------------------------------------------------------ */

static dtl_run_status check_opts(runner *r)
{
    const dtl_run_opts *o = r->o;
    if (o->infer) {
        if (!o->load)
            return fail_usage(r, "%s", "--infer needs --load W.safetensors: the weights to "
                              "infer with");
        if (o->sample && (o->input || o->output))
            return fail_usage(r, "--sample writes text to standard output: it takes no %s",
                              o->input ? "--input" : "--output");
        if (!o->sample && (o->prompt || o->temperature_set))
            return fail_usage(r, "%s needs --sample N (how many bytes to generate)",
                              o->prompt ? "--prompt" : "--temperature");
        if (!o->sample && (!o->input || !o->output))
            return fail_usage(r, "--infer needs %s", !o->input ? "--input X.npy (the features)"
                                                              : "--output Y.npy (where the "
                                                                "model's outputs go)");
        if (o->resume || o->save || o->metrics || o->ckpt_every)
            return fail_usage(r, "%s is for training, not with --infer",
                              o->resume ? "--resume" : o->save ? "--save" : o->metrics
                              ? "--metrics" : "--checkpoint-every");
        return DTL_RUN_OK;
    }
    if (o->input || o->output || o->sample || o->prompt || o->temperature_set)
        return fail_usage(r, "%s is for --infer", o->input ? "--input" : o->output ? "--output"
                          : o->sample ? "--sample" : o->prompt ? "--prompt" : "--temperature");
    if (o->resume && o->load)
        return fail_usage(r, "%s", "--resume and --load both give the starting weights: "
                          "choose one");
    if (o->ckpt_every && !o->save)
        return fail_usage(r, "%s", "--checkpoint-every needs --save FILE.safetensors: where "
                          "to write the checkpoints");
    if (o->save) {   /* find out now, not after hours of training, that it can't be saved */
        const char *slash = strrchr(o->save, '/');
        char *dir = slash ? strndup(o->save, (size_t)(slash - o->save) + 1) : strdup(".");
        bool ok = dir && access(dir, W_OK | X_OK) == 0;
        int e = errno;
        if (!ok) {
            dtl_err_set(r->err, DTL_ERR_IO, "--save %s: cannot write in %s: %s", o->save,
                        dir ? dir : "its directory", strerror(e));
            free(dir);
            return DTL_RUN_USAGE;
        }
        free(dir);
    }
    return DTL_RUN_OK;
}

static void cleanup(runner *r)
{
    dtl_loader_free(r->ltrain);
    dtl_loader_free(r->ltest);
    dtl_plan_free(r->step_plan);
    dtl_plan_free(r->eval_plan);
    dtl_plan_free(r->eval_tail);
    dtl_plan_free(r->infer_plan);
    dtl_plan_free(r->infer_tail);
    dtl_dist_abort(r->dist, r->err->msg[0] ? r->err->msg : "it stopped");   /* NULL: nothing */
    r->dist = NULL;
    if (r->have_eval_tail_g)
        dtl_graph_free(&r->eval_tail_g);
    if (r->have_infer_tail_g)
        dtl_graph_free(&r->infer_tail_g);
    dtl_store_free(r->store);
    dtl_data_free(&r->train);
    dtl_data_free(&r->test);
    if (r->lowered)
        dtl_lowered_free(&r->L);
    if (r->metrics)
        fclose(r->metrics);
    dtl_st_close(r->ck);
}

/* csv(…, standardize = true): every feature to mean 0 and sd 1 with the statistics of the
 * training rows (as limited by --limit-train), applied to both splits. */
static bool standardize(runner *r)
{
    size_t nf = (size_t)r->train.features;
    double *mean = malloc(2 * nf * sizeof *mean);
    if (!mean)
        return dtl_err_set(r->err, DTL_ERR_NOMEM, "out of memory");
    bool ok = dtl_data_stats(&r->train, mean, mean + nf, r->err) &&
              dtl_data_standardize(&r->train, mean, mean + nf, r->err) &&
              (!r->have_test || dtl_data_standardize(&r->test, mean, mean + nf, r->err));
    free(mean);
    return ok;
}

/* Data, loaders and plans for training. */
static dtl_run_status setup_training(runner *r)
{
    const dtl_run_opts *o = r->o;
    char name[200];
    const dtl_graph *tg = dtl_lowered_train_graph(&r->L);
    dtl_dtype dt = find_input(tg, "x")->dtype;
    double t0 = dtl_progress_now();
    if (!load_split(r, &r->L.data, dt, &r->train))
        return DTL_RUN_FAILED;
    if (o->limit_train > 0 && o->limit_train < r->train.n)
        r->train.n = o->limit_train;
    if (!data_fits(r, &r->train, split_name(&r->L.data, name, sizeof name), tg))
        return DTL_RUN_FAILED;
    const dtl_lower_data *ed = &r->L.eval_data;
    r->have_test = r->L.has_accuracy &&
                   (ed->kind == DTL_LDATA_CSV ? ed->path[0] || ed->test_fraction > 0
                    : ed->kind == DTL_LDATA_TEXT ? ed->test_every > 0 : true);
    if (r->have_test) {
        if (!load_split(r, &r->L.eval_data, dt, &r->test))
            return DTL_RUN_FAILED;
        if (o->limit_test > 0 && o->limit_test < r->test.n)
            r->test.n = o->limit_test;
        if (!data_fits(r, &r->test, split_name(&r->L.eval_data, name, sizeof name), &r->L.eval))
            return DTL_RUN_FAILED;
    }
    if (r->L.data.kind == DTL_LDATA_CSV && r->L.data.standardize && !standardize(r))
        return DTL_RUN_FAILED;
    r->t_data = dtl_progress_now() - t0;
    dtl_loader_opts lo = {r->batch, r->world, r->rank, r->seed, !o->no_shuffle, true, 2};
    if (!(r->ltrain = dtl_loader_new(&r->train, &lo, r->err))) {
        dtl_err_set(r->err, DTL_ERR_MISMATCH, "%s has %" PRId64 " rows, fewer than one batch of "
                    "%" PRId64, split_name(&r->L.data, name, sizeof name), r->train.n,
                    r->batch * r->world);
        return DTL_RUN_USAGE;
    }
    r->steps_per_epoch = dtl_loader_steps(r->ltrain);
    r->total_steps = r->epochs * r->steps_per_epoch;
    if (r->have_test) {
        dtl_loader_opts te = {r->batch, r->world, r->rank, r->seed, false, false, 2};
        if (!(r->ltest = dtl_loader_new(&r->test, &te, r->err)))
            return DTL_RUN_FAILED;
    }
    if (r->dp) {   /* data parallel: join the world, then plan the two halves */
        char what[600];
        snprintf(what, sizeof what, "batch %" PRId64 " seed %" PRIu64 " f64 %d shuffle %d "
                 "rows %" PRId64 " %" PRId64 " epochs %" PRId64 " steps %" PRId64 " backend %s "
                 "resume %" PRId64 " %" PRId64 " %" PRId64 " params %s precision %s",
                 r->batch * r->world, r->seed,
                 o->f64, !o->no_shuffle, r->train.n, r->have_test ? r->test.n : -1, r->epochs,
                 o->max_steps, r->be->name, r->step, r->epoch, r->epoch_step, r->hash,
                 dtl_precision_name(r->L.precision));
        if (!(r->dist = dtl_dist_join(r->ctx, r->t, &r->env, &r->L.grad, r->be, &r->L.optim,
                                      what, r->have_test, r->err)))
            return DTL_RUN_FAILED;
        dtl_plan_opts po;
        dtl_dist_plan_opts(r->dist, &po);
        if (!(r->step_plan = dtl_plan_new(r->be, &r->L.grad, r->store, &po, r->err)) ||
            !dtl_dist_prepare(r->dist, &r->L.update, r->store, r->err))
            return DTL_RUN_FAILED;
    } else if (!(r->step_plan = dtl_plan_new(r->be, &r->L.step, r->store, NULL, r->err))) {
        return DTL_RUN_FAILED;
    }
    if (!(r->eval_plan = dtl_plan_new(r->be, &r->L.eval, r->store, NULL, r->err)))
        return DTL_RUN_FAILED;
    return DTL_RUN_OK;
}

dtl_run_status dtl_run(dtl_ctx *ctx, const dtl_train *t, const dtl_run_opts *o, FILE *out,
                       FILE *progress_out, dtl_err *err)
{
    /* `checkpoint = "FILE"` in the train block: training saves there and --infer loads from
     * there unless --save / --load say otherwise. */
    dtl_run_opts with_ckpt;
    if (t->checkpoint && (o->infer ? !o->load : !o->save)) {
        with_ckpt = *o;
        *(o->infer ? &with_ckpt.load : &with_ckpt.save) = t->checkpoint;
        o = &with_ckpt;
    }
    runner r;
    memset(&r, 0, sizeof r);
    r.ctx = ctx;
    r.t = t;
    r.o = o;
    r.err = err;
    r.out = out;
    r.perr = progress_out;
    r.saved_step = -1;
    r.last_lr = NAN;
    dtl_run_status st = check_opts(&r);
    if (st != DTL_RUN_OK)
        return st;
    r.be = NULL;
    /* `device = cuda` in the train block picks the cuda backend unless one is named. */
    const char *want = o->backend, *dev_why = o->backend ? "--backend was given" : NULL;
    char dev_buf[320];
    bool dev_cuda = t->device && strcmp(t->device->u.cfg.builtin->name, "cuda") == 0;
    if (!want && dev_cuda) {   /* (loads the CUDA plugin: only when asked for) */
        if (dtl_cuda_available(dev_buf, sizeof dev_buf))
            want = "cuda";
        else
            dev_why = dev_buf;
    }
    if (!(r.be = backend_named(want, err)))
        return want && strcmp(want, "cuda") == 0 ? DTL_RUN_USAGE : unknown_backend(&r, want);

    /* The world this process is part of (runtime/comm/comm.h): more than one rank trains data
     * parallel, each on batch/N rows (compiler/run_dist.h). */
    r.world = 1;
    if (!dtl_comm_env_from_environ(&r.env, err))
        return DTL_RUN_USAGE;
    /* The cuda backend under a launcher (`dtlc run -n 1`) with `parallel = data` takes the
     * data-parallel path at world size 1 too: NCCL, checkable on one GPU (docs/cuda.md). */
    r.dp = r.env.size > 1 ||
           (!o->infer && strcmp(r.be->name, "cuda") == 0 && strcmp(r.env.source, "none") != 0 &&
            t->parallel && t->parallel->u.par.data != 0);
    if (r.dp) {
        if (o->infer) {
            dtl_err_set(err, DTL_ERR_USAGE, "--infer runs in one process, but this run has %d "
                        "ranks: start it without a launcher", r.env.size);
            return DTL_RUN_USAGE;
        }
        if (!dtl_dist_check(ctx, t, &r.env, o->batch, err))
            return DTL_RUN_USAGE;
        r.world = r.env.size;
        r.rank = r.env.rank;
    }
    r.lo.batch = (o->batch > 0 ? o->batch : t->batch) / r.world;
    if (o->infer && o->sample)
        r.lo.batch = 1;   /* one window at a time */
    r.lo.compute = o->f64 ? DTL_DTYPE_F64 : DTL_DTYPE_F32;
    r.lo.precision = o->precision;
    r.lo.split_step = r.dp;
    r.lo.shard_rank = r.rank;
    r.lo.shard_world = r.world;
    double t_lower = dtl_progress_now();
    if (!dtl_lower_train(ctx, t, &r.lo, &r.L))
        return DTL_RUN_DIAG;
    r.t_lower = dtl_progress_now() - t_lower;
    r.lowered = true;
    r.batch = r.L.batch;
    r.epochs = o->epochs > 0 ? o->epochs : r.L.epochs;
    r.seed = o->seed_set ? o->seed : r.L.seed >= 0 ? (uint64_t)r.L.seed : 0;
    r.model = t->inst->u.m.model->name;
    params_hash(dtl_lowered_train_graph(&r.L), r.hash);
    if (o->resume && (st = resume_read(&r, o->resume)) != DTL_RUN_OK)
        goto out;
    r.store = dtl_store_new(r.seed);
    if (!r.store) {
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
        st = DTL_RUN_FAILED;
        goto out;
    }

    if (o->infer) {
        if (!r.L.has_infer) {
            st = fail_usage(&r, "%s", "the model has no forward(x) to infer with");
            goto out;
        }
        st = DTL_RUN_FAILED;
        if (!(r.infer_plan = dtl_plan_new(r.be, &r.L.infer, r.store, NULL, err)) ||
            !load_weights(&r, o->load))
            goto out;
        st = o->sample ? sample(&r) : infer(&r);
        goto out;
    }

    if ((st = setup_training(&r)) != DTL_RUN_OK)
        goto out;
    if (o->resume) {
        if ((st = resume_apply(&r, o->resume)) != DTL_RUN_OK)
            goto out;
        if (r.rank == 0)
            fprintf(progress_out, "dtlc: note: resumed from %s at epoch %" PRId64 ", step %"
                    PRId64 "\n", o->resume, r.epoch + 1, r.step);
        if (r.epoch >= r.epochs && r.rank == 0)
            fprintf(progress_out, "dtlc: note: nothing to train: %s has done %" PRId64
                    " epochs and --epochs asks for %" PRId64 " in all\n", o->resume, r.epoch,
                    r.epochs);
    }
    /* Checked, but not acted on yet: say so rather than let the user believe it. (`parallel
     * = data` over all ranks is what one process does anyway; over several ranks it is acted
     * on, and tensor or pipeline parallelism over several is refused by dtl_dist_check.) */
    const dtl_type *par = t->parallel, *dev = t->device;
    const char *par_s = par ? dtl_print_expr(&ctx->arena,
                                             t->settings[DTL_SET_PARALLEL]->u.bind.value) : "";
    if (par && r.world == 1 && (par->u.par.tensor > 1 || par->u.par.stages > 1))
        fprintf(progress_out, "dtlc: note: parallel = %s is not acted on yet: this build trains "
                "in one process\n", par_s);
    else if (par && r.world == 1 && par->u.par.data > 1)
        fprintf(progress_out, "dtlc: note: parallel = %s asks for %" PRId64 " ranks; this run "
                "has one (start them with `dtlc run -n %" PRId64 "`, mpirun or srun)\n", par_s,
                par->u.par.data, par->u.par.data);
    if (dev && r.rank == 0 && strcmp(dev->u.cfg.builtin->name, "cpu") != 0 && strcmp(r.be->name, "cuda") != 0)
        fprintf(progress_out, "dtlc: note: device = %s is not acted on yet: %s; this run trains "
                "on the CPU (backend %s)\n", dtl_print_expr(&ctx->arena,
                                           t->settings[DTL_SET_DEVICE]->u.bind.value),
                dev_why ? dev_why : "only cuda is", r.be->name);
    st = DTL_RUN_FAILED;
    if (o->load && !load_weights(&r, o->load))
        goto out;
    if (r.dist && !dtl_dist_broadcast(r.dist, r.store, err))   /* every rank starts as rank 0 */
        goto out;
    if (r.dist && r.rank == 0) {
        char tr[200];
        fprintf(progress_out, "dtlc: note: data parallel over %d ranks (%s): each takes %" PRId64
                " rows of the global batch of %" PRId64 "\n", r.world,
                dtl_dist_transport(r.dist, tr, sizeof tr), r.batch, r.batch * r.world);
    }
    if (o->metrics && r.rank == 0 && !(r.metrics = fopen(o->metrics, o->resume ? "a" : "w"))) {
        dtl_err_set(err, DTL_ERR_IO, "%s: cannot open: %s", o->metrics, strerror(errno));
        goto out;
    }
    dtl_progress_mode pm = o->progress == DTL_PROGRESS_BAR    ? DTL_PROGRESS_MODE_BAR
                           : o->progress == DTL_PROGRESS_PLAIN ? DTL_PROGRESS_MODE_PLAIN
                           : o->progress == DTL_PROGRESS_NONE  ? DTL_PROGRESS_MODE_NONE
                           : isatty(fileno(progress_out))      ? DTL_PROGRESS_MODE_BAR
                                                               : DTL_PROGRESS_MODE_PLAIN;
    if (r.rank != 0)   /* data parallel: rank 0 shows the progress of all */
        pm = DTL_PROGRESS_MODE_NONE;
    dtl_progress_init(&r.prog, progress_out, pm, o->progress_every);
    st = train(&r);
    if (st == DTL_RUN_OK && r.dist) {   /* the goodbye (a failure aborts, in cleanup) */
        dtl_dist *d = r.dist;
        r.dist = NULL;
        if (!dtl_dist_end(d, err))
            st = DTL_RUN_FAILED;
    }
out:
    cleanup(&r);
    return st;
}

/* ---- stepping a train block (dtlc repl) ------------------------------------------------------ */

struct dtl_trainer {
    runner r;
    dtl_run_opts opts;       /* r.o points here */
    bool in_epoch;           /* the loader has started epoch r.epoch */
};

dtl_trainer *dtl_trainer_new(dtl_ctx *ctx, const dtl_train *t, const dtl_run_opts *o,
                             dtl_run_status *st, dtl_err *err)
{
    dtl_trainer *tr = calloc(1, sizeof *tr);
    *st = DTL_RUN_FAILED;
    if (!tr) {
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    tr->opts = *o;
    tr->opts.save = tr->opts.resume = tr->opts.metrics = NULL;
    tr->opts.infer = false;
    tr->opts.ckpt_every = 0;
    runner *r = &tr->r;
    r->world = 1;
    r->ctx = ctx;
    r->t = t;
    r->o = &tr->opts;
    r->err = err;
    r->saved_step = -1;
    r->last_lr = NAN;
    if (!(r->be = backend_named(o->backend, err))) {
        *st = o->backend && strcmp(o->backend, "cuda") == 0 ? DTL_RUN_USAGE
                                                            : unknown_backend(r, o->backend);
        free(tr);
        return NULL;
    }
    r->lo.batch = o->batch;
    r->lo.compute = o->f64 ? DTL_DTYPE_F64 : DTL_DTYPE_F32;
    r->lo.precision = o->precision;
    if (!dtl_lower_train(ctx, t, &r->lo, &r->L)) {
        *st = DTL_RUN_DIAG;
        free(tr);
        return NULL;
    }
    r->lowered = true;
    r->batch = r->L.batch;
    r->epochs = o->epochs > 0 ? o->epochs : r->L.epochs;
    r->seed = o->seed_set ? o->seed : r->L.seed >= 0 ? (uint64_t)r->L.seed : 0;
    r->model = t->inst->u.m.model->name;
    params_hash(&r->L.step, r->hash);
    if (!(r->store = dtl_store_new(r->seed))) {
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
        cleanup(r);
        free(tr);
        return NULL;
    }
    if ((*st = setup_training(r)) != DTL_RUN_OK ||
        (o->load && !load_weights(r, o->load) && (*st = DTL_RUN_FAILED))) {
        cleanup(r);
        free(tr);
        return NULL;
    }
    return tr;
}

bool dtl_trainer_step(dtl_trainer *tr, double *loss, dtl_err *err)
{
    runner *r = &tr->r;
    r->err = err;
    const dtl_batch *b = NULL;
    for (int tries = 0; tries < 2 && !b; tries++) {
        if (!tr->in_epoch) {
            if (!dtl_loader_start_epoch(r->ltrain, (uint64_t)r->epoch, err))
                return false;
            tr->in_epoch = true;
        }
        if (!(b = dtl_loader_next(r->ltrain))) {   /* the epoch is over: the next one */
            tr->in_epoch = false;
            r->epoch++;
            r->epoch_step = 0;
            r->loss_sum = 0;
        }
    }
    if (!b)
        return dtl_err_set(err, DTL_ERR_USAGE, "the training data gives no batch");
    double l = NAN, lr = NAN;
    bool ok = run_batch(r, r->step_plan, &r->L.step, b->x, b->y, b->rows, r->step + 1) &&
              read_scalar(r, r->step_plan, "loss", &l) &&
              read_scalar(r, r->step_plan, "lr", &lr);
    dtl_loader_release(r->ltrain, b);
    if (!ok)
        return false;
    if (!isfinite(l))
        return dtl_err_set(err, DTL_ERR_FORMAT, "step %" PRId64 ": the loss is %s: training "
                           "diverged (a lower learning rate may help)", r->step + 1,
                           isnan(l) ? "NaN" : "infinite");
    r->last_lr = lr;
    r->step++;
    r->epoch_step++;
    r->loss_sum += l;
    if (r->epoch_step == r->steps_per_epoch) {   /* as dtl_run records an epoch's end */
        tr->in_epoch = false;
        r->epoch++;
        r->epoch_step = 0;
        r->loss_sum = 0;
    }
    *loss = l;
    return true;
}

bool dtl_trainer_eval(dtl_trainer *tr, double *loss, double *acc, dtl_err *err)
{
    runner *r = &tr->r;
    r->err = err;
    if (!r->have_test)
        return dtl_err_set(err, DTL_ERR_USAGE, "the train block has no test split to evaluate "
                           "on (evaluate = accuracy(ds.test))");
    return evaluate(r, loss, acc);
}

bool dtl_trainer_save(dtl_trainer *tr, const char *path, dtl_err *err)
{
    tr->r.err = err;
    return save_checkpoint(&tr->r, path);
}

bool dtl_trainer_set_backend(dtl_trainer *tr, const char *name, dtl_err *err)
{
    runner *r = &tr->r;
    r->err = err;
    const dtl_backend *be = backend_named(name, err);
    if (!be && strcmp(name, "cuda") != 0)
        dtl_err_set(err, DTL_ERR_USAGE, "unknown backend '%s'", name);
    if (!be)
        return false;
    /* the current values from where the old backend keeps them to where the new one does
     * (a failure below leaves the old backend's plans, its values still current) */
    if (!dtl_store_handover(r->store, r->be->name, be->name, err))
        return false;
    dtl_plan *sp = dtl_plan_new(be, &r->L.step, r->store, NULL, err);
    dtl_plan *ep = sp ? dtl_plan_new(be, &r->L.eval, r->store, NULL, err) : NULL;
    if (!ep) {
        dtl_plan_free(sp);
        return false;
    }
    dtl_plan_free(r->step_plan);
    dtl_plan_free(r->eval_plan);
    dtl_plan_free(r->eval_tail);
    r->eval_tail = NULL;
    if (r->have_eval_tail_g)
        dtl_graph_free(&r->eval_tail_g);
    r->have_eval_tail_g = false;
    r->step_plan = sp;
    r->eval_plan = ep;
    r->be = be;
    return true;
}

int64_t dtl_trainer_step_count(const dtl_trainer *tr)
{
    return tr->r.step;
}

int64_t dtl_trainer_epoch(const dtl_trainer *tr)
{
    return tr->r.epoch;
}

int64_t dtl_trainer_steps_per_epoch(const dtl_trainer *tr)
{
    return tr->r.steps_per_epoch;
}

dtl_store *dtl_trainer_store(dtl_trainer *tr)
{
    return tr->r.store;
}

const dtl_graph *dtl_trainer_step_graph(const dtl_trainer *tr)
{
    return &tr->r.L.step;
}

void dtl_trainer_free(dtl_trainer *tr)
{
    if (!tr)
        return;
    cleanup(&tr->r);
    free(tr);
}
