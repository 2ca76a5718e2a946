/* tests/unit/test_backend_examples.c — every example (the .dtl files of examples/), a few tests/lang models
 * and four small "zoo" models written here (layer norm, gelu, silu, softplus, softmax,
 * dropout, concat, slicing, one_hot, min/max over axes, bce and mse losses; adam, adamw with a
 * cosine schedule, warmup and clipping, sgd with Nesterov momentum and weight decay and a
 * step schedule; zoo_norm: batch and layer norm, take, masks, stack, [B, T, C] cross-entropy,
 * top-k accuracy), trained for K = 3 steps on every backend under test and on the reference
 * backend (tests/unit/backend_testlib.h) from the same store seed with the same random
 * batches; after each step the loss, the learning rate and every parameter and optimizer
 * state are compared; then the eval graph (loss, correct count) and the infer graph (y) on a
 * fresh batch. Each model runs twice: as written (f32, tolerance 1e-5) and lowered with the
 * f64 policy (every f32 computed in f64, tolerance 1e-12).
 *
 * After each step's comparison the backend's store is set to the reference's (the exec.h
 * way: write the host entries, dtl_store_sync to the device), so every step is compared from
 * the same starting point and rounding differences do not compound over the steps; the eval
 * and infer graphs then run on identical parameters.
 *
 * Adam and AdamW: the update lr * m / (sqrt(v) + eps) is ill-conditioned where a gradient
 * element is within its own rounding error of zero (on the first step it is about lr * g /
 * (|g| + eps): a sign flip of a gradient of 1e-9 moves the parameter by 2 lr). Backends that
 * sum in a different order (blocked matrix products) do produce such elements on an MLP of
 * 100k weights, so for the params of Adam-family updates only, a few elements (at most
 * 1 + n / 10^4) may exceed the tolerance if each stays within 4 * lr of the reference; the
 * optimizer states m and v, the loss and everything else are held to the plain tolerance,
 * and the f64 runs, where no gradient is that close to zero, to 1e-12 with no exception.
 *
 *     tests/unit/test_backend_examples [NAME...]    only models whose name contains NAME
 */
#include <dirent.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_testlib.h"
#include "unit.h"

#define K_STEPS 3
#define STORE_SEED 1234

static const bt_known_failure known[] = {
    {NULL, NULL, NULL},
};

/* ---- the zoo -------------------------------------------------------------------------------- */

static const char zoo_block[] =
    "# zoo_block: residual block with layer norm and gelu, silu, softplus, a where mask,\n"
    "# concat, transpose, dropout, softmax; adamw, cosine schedule, warmup, clip.\n"
    "use nn\n"
    "model Block(n: int) {\n"
    "    norm = nn.LayerNorm(n)\n"
    "    param w: f32[n, n] = he_normal()\n"
    "    param b: f32[n] = zeros()\n"
    "    fn forward(x: f32[B, n]) -> f32[B, n] = x + gelu(norm(x) @ w + b)\n"
    "}\n"
    "model Zoo {\n"
    "    fc = nn.Dense(12, 8)\n"
    "    blk = Block(8)\n"
    "    param gate: f32[8] = uniform(-0.5, 0.5)\n"
    "    head = nn.Dense(16, 3)\n"
    "    fn forward(x: f32[B, 12]) -> f32[B, 3] {\n"
    "        let h = blk(silu(fc(x)))\n"
    "        let g = where(h > 0.0, h * sigmoid(gate), softplus(h))\n"
    "        let both = concat([g, transpose(transpose(h))], axis = 1)\n"
    "        return head(dropout(tanh(both), 0.1))\n"
    "    }\n"
    "}\n"
    "dataset ds = idx(\"fashion-mnist\")\n"
    "train Zoo {\n"
    "    data      = ds.train\n"
    "    batch     = 9\n"
    "    loss      = cross_entropy(forward(x), y) + 0.01 * mean(abs(softmax(forward(x), axis = 1)))\n"
    "    optimizer = adamw(lr = 0.01)\n"
    "    schedule  = cosine(floor = 1e-4)\n"
    "    warmup    = 2\n"
    "    clip      = 0.5\n"
    "    evaluate  = accuracy(ds.test)\n"
    "}\n";

static const char zoo_reg[] =
    "# zoo_reg: casts to indices, one_hot, exp/abs/sqrt/log, max and min over axes, slices\n"
    "# with steps; mse; sgd with Nesterov momentum, weight decay and a step schedule.\n"
    "model Reg {\n"
    "    param w1: f32[6, 5] = glorot_normal()\n"
    "    param e: f32[4, 5] = normal(0.0, 0.1)\n"
    "    param s: f32[5] = ones()\n"
    "    fn forward(x: f32[B, 6]) -> f32[B, 2] {\n"
    "        let ids = cast(x[:, 0] * 4.0, i64)\n"
    "        let h = exp(-abs(x @ w1)) + one_hot(ids, 4) @ e\n"
    "        let m = max(h, axis = 1, keepdims = true) - min(h, axis = 0)\n"
    "        let r = sqrt(h * h + 1.0) * s / (1.0 + m)\n"
    "        return r[:, 1:5:2] - log(sum(exp(r), axis = 1, keepdims = true))\n"
    "    }\n"
    "}\n"
    "dataset ds = idx(\"fashion-mnist\")\n"
    "train Reg {\n"
    "    data      = ds.train\n"
    "    batch     = 7\n"
    "    loss      = mse(forward(x), one_hot(y, 2))\n"
    "    optimizer = sgd(lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 1e-4)\n"
    "    schedule  = step(every = 2, gamma = 0.5)\n"
    "}\n";

static const char zoo_bin[] =
    "# zoo_bin: the stdlib MLP at odd sizes (5 -> 17 -> 3, batch 33), power and\n"
    "# log_softmax; bce_with_logits; adam with weight decay.\n"
    "use nn\n"
    "model Bin {\n"
    "    enc = nn.MLP(5, 17, 3)\n"
    "    param t: f32[3] = constant(0.5)\n"
    "    fn forward(x: f32[B, 5]) -> f32[B, 3] = enc(x) * t - log_softmax(enc(x) ** 2, axis = 1)\n"
    "}\n"
    "dataset ds = idx(\"fashion-mnist\")\n"
    "train Bin {\n"
    "    data      = ds.train\n"
    "    batch     = 33\n"
    "    loss      = bce_with_logits(forward(x), one_hot(y, 3))\n"
    "    optimizer = adam(lr = 0.003, weight_decay = 0.01)\n"
    "    evaluate  = accuracy(ds.test)\n"
    "}\n";

static const char zoo_norm[] =
    "# zoo_norm: batch_norm over features and over NCHW channels (running statistics, the\n"
    "# model applied twice in the loss: updated twice), layer_norm over [B, T, n], take as an\n"
    "# embedding of i64[B, T] ids, causal_mask and masked_fill, stack, split, cross_entropy over\n"
    "# [B, T, C] logits, accuracy(k = 2); sgd with momentum.\n"
    "use nn\n"
    "model Norm {\n"
    "    param w: f32[12, 16] = glorot_uniform()   # no bias: batch_norm would cancel it\n"
    "    bn = nn.BatchNorm(16, momentum = 0.3)\n"
    "    bn2 = nn.BatchNorm2d(2)\n"
    "    emb = nn.Embedding(5, 4)\n"
    "    ln = nn.LayerNorm(4)\n"
    "    head = nn.Dense(16, 3)\n"
    "    fn forward(x: f32[B, 12]) -> f32[B, 3] {\n"
    "        let h = bn(x @ w)\n"
    "        let img = bn2(reshape(relu(h) + h * h, [B, 2, 2, 4]))\n"
    "        let ids = cast(sigmoid(x[:, 0:3]) * 4.99, i64)\n"
    "        let e = ln.seq(emb.seq(ids))\n"
    "        let scores = masked_fill(e @ transpose(e, [0, 2, 1]), not causal_mask(3), -1e9)\n"
    "        let mixed = reshape(softmax(scores, axis = -1) @ e, [B, 12])\n"
    "        let s = stack(split(concat([reshape(img, [B, 16]), relu(h)], axis = 1), 2), axis = 1)\n"
    "        let parts = split(mixed, 3)\n"
    "        return head(sum(s, axis = 1) + concat([mixed, parts[2] * parts[0]], axis = 1))\n"
    "    }\n"
    "}\n"
    "dataset ds = idx(\"fashion-mnist\")\n"
    "train Norm {\n"
    "    data      = ds.train\n"
    "    batch     = 6\n"
    "    loss      = cross_entropy(stack([forward(x), forward(x) * 0.5], axis = 1), stack([y, y], axis = 1))\n"
    "    optimizer = sgd(lr = 0.05, momentum = 0.9)\n"
    "    evaluate  = accuracy(ds.test, k = 2)\n"
    "}\n";

typedef struct model_src {
    char name[64];
    char path[1024];
    const char *src;   /* NULL: read path */
} model_src;

/* ---- comparing one graph on every backend --------------------------------------------------- */

typedef struct side {
    const bt_backend *b;
    dtl_store *store;
    dtl_plan *step, *eval, *infer;
    bool dead;
} side;

static void side_free(side *s)
{
    dtl_plan_free(s->step);
    dtl_plan_free(s->eval);
    dtl_plan_free(s->infer);
    dtl_store_free(s->store);
}

/* Reports a failure of backend s; false unless it is a known one. */
static bool failure(const char *label, const side *s)
{
    bt_known_seen(s->b->name, label);
    const char *why = bt_known(s->b->name, label);
    if (why) {
        fprintf(stderr, "  (known failure on %s: %s)\n", s->b->name, why);
        return true;
    }
    return false;
}

/* How params updated by the optimizer are compared (see the top of the file). */
typedef struct param_rule {
    bool adam;
    double lr;   /* this step's learning rate */
} param_rule;

static bool match_param(const char *what, const dtl_tensor *got, const dtl_tensor *want,
                        double factor, const param_rule *pr)
{
    if (!pr || !pr->adam)
        return bt_match(what, got, want, factor);
    uint64_t n = dtl_tensor_numel(want);
    return bt_match_outliers(what, got, want, factor, 1 + n / 10000, 4 * pr->lr);
}

/* Compares every LOSS/VALUE/PARAM/STATE output of g between plan p (backend s) and ref. */
static bool compare_outputs(const char *label, const dtl_graph *g, dtl_plan *p, dtl_plan *ref,
                            const side *s, double factor, const param_rule *pr)
{
    bool ok = true;
    bt_known_seen(s->b->name, label);
    for (uint32_t i = 0; i < g->nouts; i++) {
        dtl_tensor got, want;
        dtl_err err = {0};
        char what[512];
        const char *name = g->outs[i].name;
        if (!dtl_plan_output(ref, name, &want, &err)) {
            fprintf(stderr, "%s: the reference has no output %s: %s\n", label, name, err.msg);
            return false;
        }
        snprintf(what, sizeof what, "%s %s on %s, output \"%s\"", bt_fail_word(s->b->name, label),
                 label, s->b->name, name);
        if (!dtl_plan_output(p, name, &got, &err)) {
            fprintf(stderr, "%s: %s\n", what, err.msg);
            ok &= failure(label, s);
            continue;
        }
        bool match = g->outs[i].kind == DTL_OUT_PARAM
                         ? match_param(what, &got, &want, factor, pr)
                         : bt_match(what, &got, &want, factor);
        if (!match)
            ok &= failure(label, s);
    }
    return ok;
}

/* Compares the stores entry by entry (params by the param rule). */
static bool compare_stores(const char *label, const side *s, dtl_store *ref, double factor,
                           const param_rule *pr)
{
    bool ok = true;
    char what[512];
    for (size_t i = 0; i < dtl_store_count(ref); i++) {
        const dtl_store_entry *w = dtl_store_at(ref, i);
        const dtl_store_entry *g = dtl_store_find(s->store, w->name);
        snprintf(what, sizeof what, "%s %s on %s: store entry \"%s\"",
                 bt_fail_word(s->b->name, label), label, s->b->name, w->name);
        if (!g) {
            fprintf(stderr, "%s: missing\n", what);
            ok &= failure(label, s);
            continue;
        }
        bool match = w->is_state ? bt_match(what, &g->t, &w->t, factor)
                                 : match_param(what, &g->t, &w->t, factor, pr);
        if (!match)
            ok &= failure(label, s);
    }
    return ok;
}

/* Sets every entry of s's store to the reference's (then syncs a device copy). */
static bool resync(side *s, dtl_store *ref)
{
    for (size_t i = 0; i < dtl_store_count(ref); i++) {
        const dtl_store_entry *w = dtl_store_at(ref, i);
        dtl_store_entry *g = dtl_store_find(s->store, w->name);
        if (!g)
            return false;
        memcpy(g->t.data, w->t.data, dtl_tensor_numel(&w->t) * dtl_dtype_size(w->t.dtype));
    }
    dtl_err err = {0};
    if (!dtl_store_sync(s->store, DTL_SYNC_TO_DEVICE, &err)) {
        fprintf(stderr, "%s: store sync: %s\n", s->b->name, err.msg);
        return false;
    }
    return true;
}

static bool run_one(const char *label, dtl_plan *p, const bt_batch *b, const side *s)
{
    dtl_err err = {0};
    if (dtl_plan_run(p, b->in, b->nin, &err))
        return true;
    fprintf(stderr, "%s %s on %s: run failed: %s\n", bt_fail_word(s->b->name, label), label,
            s->b->name, err.msg);
    return failure(label, s);
}

/* One model under one dtype policy. */
static void test_model(const model_src *m, dtl_dtype policy)
{
    const char *pol = policy == DTL_DTYPE_F64 ? "f64" : "f32";
    dtl_lower_opts lo = {.batch = 0, .compute = policy};
    bt_model md;
    if (!bt_model_load(&md, m->path, m->src, &lo)) {
        CHECK(!"the model loads and lowers");
        return;
    }
    dtl_lowered *low = &md.low;
    int64_t classes = bt_classes(low);
    printf("%s (%s): batch %lld, %u params, step graph %u nodes, %lld classes\n", m->name, pol,
           (long long)low->batch, low->nparams, low->step.nnodes, (long long)classes);
    double factor = 1;

    size_t nb;
    const bt_backend *bes = bt_backends(&nb);
    side *sides = calloc(nb + 1, sizeof *sides);
    if (!sides)
        abort();
    static const bt_backend ref = {"ref", &dtl_backend_ref, {0}};
    sides[0].b = &ref;
    for (size_t i = 0; i < nb; i++)
        sides[i + 1].b = &bes[i];
    char label[256];
    for (size_t i = 0; i <= nb; i++) {
        side *s = &sides[i];
        dtl_err err = {0};
        s->store = dtl_store_new(STORE_SEED);
        s->step = dtl_plan_new(s->b->be, &low->step, s->store, &s->b->opts, &err);
        if (s->step)
            s->eval = dtl_plan_new(s->b->be, &low->eval, s->store, &s->b->opts, &err);
        if (s->eval && low->has_infer)
            s->infer = dtl_plan_new(s->b->be, &low->infer, s->store, &s->b->opts, &err);
        if (!s->step || !s->eval || (low->has_infer && !s->infer)) {
            snprintf(label, sizeof label, "%s %s prepare", m->name, pol);
            fprintf(stderr, "%s %s on %s: %s\n", bt_fail_word(s->b->name, label), label,
                    s->b->name, err.msg);
            if (i == 0)
                CHECK(!"the reference plans the model");
            else
                CHECK(failure(label, s));
            s->dead = true;
        }
    }
    bt_batch batch;
    CHECK(bt_batch_init(&batch, &low->step, classes));

    for (int k = 0; !sides[0].dead && k < K_STEPS; k++) {
        bt_batch_fill(&batch, STORE_SEED, (uint64_t)k, k + 1);
        snprintf(label, sizeof label, "%s %s step %d", m->name, pol, k + 1);
        if (!run_one(label, sides[0].step, &batch, &sides[0])) {
            CHECK(!"the reference runs the step");
            break;
        }
        param_rule pr = {low->optim.kind == DTL_OPT_ADAM || low->optim.kind == DTL_OPT_ADAMW, 0};
        dtl_tensor lr;
        dtl_err lerr = {0};
        if (dtl_plan_output(sides[0].step, "lr", &lr, &lerr) && lr.dtype == DTL_DTYPE_F64)
            pr.lr = *(const double *)lr.data;
        else
            pr.adam = false;   /* no learning rate to bound the update by: no exception */
        for (size_t i = 1; i <= nb; i++) {
            side *s = &sides[i];
            if (s->dead)
                continue;
            if (!run_one(label, s->step, &batch, s)) {
                s->dead = true;
                CHECK(failure(label, s));
                continue;
            }
            CHECK(compare_outputs(label, &low->step, s->step, sides[0].step, s, factor, &pr));
            dtl_err err = {0};
            bool synced = dtl_store_sync(s->store, DTL_SYNC_TO_HOST, &err);
            CHECK(synced);
            if (synced)
                CHECK(compare_stores(label, s, sides[0].store, factor, &pr));
            CHECK(resync(s, sides[0].store));
        }
    }

    /* Evaluation and inference on a fresh batch, with the trained parameters. */
    bt_batch_fill(&batch, STORE_SEED, 100, K_STEPS + 1);
    const struct {
        const char *what;
        const dtl_graph *g;
        size_t off;
    } graphs[2] = {{"eval", &low->eval, offsetof(side, eval)},
                   {"infer", &low->infer, offsetof(side, infer)}};
    for (int gi = 0; gi < 2 && !sides[0].dead; gi++) {
        if (gi == 1 && !low->has_infer)
            continue;
        snprintf(label, sizeof label, "%s %s %s", m->name, pol, graphs[gi].what);
        dtl_plan *refp = *(dtl_plan **)((char *)&sides[0] + graphs[gi].off);
        if (!run_one(label, refp, &batch, &sides[0])) {
            CHECK(!"the reference runs eval/infer");
            break;
        }
        for (size_t i = 1; i <= nb; i++) {
            side *s = &sides[i];
            dtl_plan *p = *(dtl_plan **)((char *)s + graphs[gi].off);
            if (s->dead)
                continue;
            if (!run_one(label, p, &batch, s)) {
                CHECK(failure(label, s));
                continue;
            }
            CHECK(compare_outputs(label, graphs[gi].g, p, refp, s, factor, NULL));
        }
    }

    bt_batch_free(&batch);
    for (size_t i = 0; i <= nb; i++)
        side_free(&sides[i]);
    free(sides);
    bt_model_free(&md);
}

/* ---- the list of models ---------------------------------------------------------------------- */

static int by_name(const void *a, const void *b)
{
    return strcmp(((const model_src *)a)->name, ((const model_src *)b)->name);
}

static size_t list_models(model_src *out, size_t cap)
{
    size_t n = 0;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/examples", bt_srcdir());
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) && n < cap) {
            size_t len = strlen(e->d_name);
            if (len < 5 || strcmp(e->d_name + len - 4, ".dtl") != 0)
                continue;
            snprintf(out[n].name, sizeof out[n].name, "%.*s", (int)(len - 4), e->d_name);
            snprintf(out[n].path, sizeof out[n].path, "%s/%s", dir, e->d_name);
            out[n].src = NULL;
            n++;
        }
        closedir(d);
    }
    qsort(out, n, sizeof *out, by_name);
    static const char *const lang[] = {"graph_mlp_ce", "graph_dense_mse", "graph_dropout",
                                       "graph_schedule"};
    for (size_t i = 0; i < sizeof lang / sizeof lang[0] && n < cap; i++, n++) {
        snprintf(out[n].name, sizeof out[n].name, "%s", lang[i]);
        snprintf(out[n].path, sizeof out[n].path, "%s/tests/lang/%s.dtl", bt_srcdir(), lang[i]);
        out[n].src = NULL;
    }
    const struct {
        const char *name, *src;
    } zoo[] = {{"zoo_block", zoo_block}, {"zoo_reg", zoo_reg}, {"zoo_bin", zoo_bin},
               {"zoo_norm", zoo_norm}};
    for (size_t i = 0; i < sizeof zoo / sizeof zoo[0] && n < cap; i++, n++) {
        snprintf(out[n].name, sizeof out[n].name, "%s", zoo[i].name);
        snprintf(out[n].path, sizeof out[n].path, "%s.dtl", zoo[i].name);
        out[n].src = zoo[i].src;
    }
    return n;
}

int main(int argc, char **argv)
{
    bt_known_set(known);
    printf("backends under test: %s (against ref)\n", bt_backend_names());
    model_src models[64];
    size_t n = list_models(models, 64);
    size_t nex = 0;
    for (size_t i = 0; i < n; i++)
        nex += strstr(models[i].path, "/examples/") != NULL;
    CHECK(nex >= 3);   /* the examples were found */
    for (size_t i = 0; i < n; i++) {
        bool wanted = argc < 2;
        for (int a = 1; a < argc; a++)
            wanted |= strstr(models[i].name, argv[a]) != NULL;
        if (!wanted)
            continue;
        test_model(&models[i], DTL_DTYPE_F32);
        test_model(&models[i], DTL_DTYPE_F64);
    }
    bt_known_report();
    CHECK_DONE();
}
