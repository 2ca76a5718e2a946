/* tests/unit/test_ready_hook.c — the output-ready hook of runtime/exec.h (dtl_plan_opts.
 * output_ready) on the reference and LLVM backends, and exec.c's fallback for a backend that
 * does not call it (calls_ready false: a wrapper of the reference backend, and cuda where a
 * GPU is):
 *  - every output is reported exactly once per run, before dtl_plan_run returns, with its
 *    final value (bit for bit what dtl_plan_output gives after the run; for PARAM/STATE
 *    outputs, the new value that the store holds after the commit);
 *  - ref and llvm report as they go: an output computed early (a matmul's epilogue: bias and
 *    relu, checked to be fused so) is reported before one computed last, though the graph
 *    lists the late one first; the fallback reports in output order;
 *  - bound leaves (staged), constants, in-place parameter updates are reported too;
 *  - real graphs: the data-parallel GRAD graph (outputs "grad.<param>") and the STEP graph
 *    (Adam: PARAM and STATE outputs, in-place updates) of an MLP, and a tied-weight model whose
 *    gradient is the sum of two matrix products (the add fused into a matmul epilogue);
 *  - llvm without a hook is unchanged: same results bit for bit as with one, and its object
 *    cache key differs from the hooked plan's (a fresh DTL_CACHE_DIR gets one object per
 *    kind, and preparing the plain plan again adds none).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../compiler/passes/fuse.h"
#include "../../compiler/passes/passes.h"
#include "backend_testlib.h"
#include "unit.h"

#ifdef HAVE_LLVM
extern const dtl_backend dtl_backend_llvm;
#endif

enum { MAXOUT = 64 };

/* What the hook saw during one run. */
typedef struct seen {
    const dtl_graph *g;
    uint32_t calls[MAXOUT];      /* per output: times reported */
    uint32_t order[4 * MAXOUT];  /* the outputs in the order reported */
    uint32_t n;
    void *copy[MAXOUT];          /* per output: its value as reported */
    size_t bytes[MAXOUT];
    bool bad_view;
} seen;

static void hook(void *ctx, uint32_t k, const dtl_tensor *v)
{
    seen *s = ctx;
    if (k >= s->g->nouts || k >= MAXOUT) {
        s->bad_view = true;
        return;
    }
    const dtl_node *n = &s->g->nodes[s->g->outs[k].val];
    size_t bytes = (size_t)dtl_tensor_numel(v) * dtl_dtype_size(v->dtype);
    if (v->dtype != n->dtype || v->rank != n->rank ||
        memcmp(v->shape, n->shape, n->rank * sizeof *n->shape) != 0 || (!v->data && bytes))
        s->bad_view = true;
    s->calls[k]++;
    if (s->n < 4 * MAXOUT)
        s->order[s->n++] = k;
    free(s->copy[k]);
    s->copy[k] = malloc(bytes + 1);
    memcpy(s->copy[k], v->data, bytes);
    s->bytes[k] = bytes;
}

static void seen_reset(seen *s, const dtl_graph *g)
{
    for (uint32_t k = 0; k < MAXOUT; k++)
        free(s->copy[k]);
    memset(s, 0, sizeof *s);
    s->g = g;
}

static int position(const seen *s, uint32_t k)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (s->order[i] == k)
            return (int)i;
    return -1;
}

/* After a run: each output once, its reported value equal to what the plan gives now. */
static bool check_run(const char *what, dtl_plan *p, const dtl_graph *g, const seen *s)
{
    bool ok = !s->bad_view && s->n == g->nouts;
    if (s->bad_view)
        fprintf(stderr, "%s: a view with the wrong dtype or shape\n", what);
    for (uint32_t k = 0; k < g->nouts; k++) {
        if (s->calls[k] != 1) {
            fprintf(stderr, "%s: output %s reported %u times\n", what, g->outs[k].name,
                    s->calls[k]);
            ok = false;
            continue;
        }
        dtl_tensor t;
        dtl_err err;
        if (!dtl_plan_output(p, g->outs[k].name, &t, &err)) {
            fprintf(stderr, "%s: %s\n", what, err.msg);
            ok = false;
            continue;
        }
        if (memcmp(t.data, s->copy[k], s->bytes[k]) != 0) {
            fprintf(stderr, "%s: output %s: the reported value is not the final one\n", what,
                    g->outs[k].name);
            ok = false;
        }
    }
    return ok;
}

/* ---- the fallback: the reference backend without calls_ready ----------------------------- */

static const dtl_backend *noready_backend(void)
{
    static dtl_backend be;
    be = dtl_backend_ref;
    be.name = "ref-noready";
    be.calls_ready = false;
    return &be;
}

/* ---- a hand-made graph -------------------------------------------------------------------- */

enum { OUT_LATE, OUT_WCOPY, OUT_BNEW, OUT_EARLY, OUT_K, NOUT };

static void small_graph(dtl_graph *g)
{
    dtl_graph_init(g);
    int64_t xs[2] = {8, 16}, ws[2] = {16, 16}, bs[1] = {16};
    dtl_val x = dtl_g_input(g, "x", DTL_DTYPE_F32, 2, xs);
    dtl_val w = dtl_g_param(g, "w", DTL_DTYPE_F32, 2, ws,
                            (dtl_init){DTL_INIT_GLOROT_UNIFORM, 0, 0, NULL});
    dtl_val b = dtl_g_param(g, "b", DTL_DTYPE_F32, 1, bs,
                            (dtl_init){DTL_INIT_UNIFORM, -1, 1, NULL});
    dtl_val h = dtl_g_unary(g, DTL_OP_RELU,
                            dtl_g_binary(g, DTL_OP_ADD, dtl_g_matmul(g, x, w),
                                         dtl_g_broadcast(g, b, 2, xs)));
    dtl_val s = dtl_g_reduce(g, DTL_OP_SUM, dtl_g_binary(g, DTL_OP_MUL, h, h), 3, false);
    dtl_val late = dtl_g_binary(g, DTL_OP_MUL, s, dtl_g_scalar(g, DTL_DTYPE_F32, 2));
    dtl_val bnew = dtl_g_binary(g, DTL_OP_SUB, b,
                                dtl_g_broadcast(g, dtl_g_scalar(g, DTL_DTYPE_F32, 0.25), 1, bs));
    dtl_g_output(g, DTL_OUT_VALUE, "late", late, DTL_VAL_NONE);
    dtl_g_output(g, DTL_OUT_VALUE, "wcopy", w, DTL_VAL_NONE);
    dtl_g_output(g, DTL_OUT_PARAM, "b", bnew, b);
    dtl_g_output(g, DTL_OUT_VALUE, "early", h, DTL_VAL_NONE);
    dtl_g_output(g, DTL_OUT_VALUE, "k", dtl_g_scalar(g, DTL_DTYPE_F32, 7), DTL_VAL_NONE);
}

/* The premise: after the passes and fusion, "early" is a member (not the root) of a MATMUL
 * kernel — an epilogue — and "late" is computed by a later kernel. */
static void check_premise(const dtl_graph *g)
{
    dtl_graph pg;
    dtl_err err;
    CHECK(dtl_passes_run(&pg, g, NULL, &err));
    dtl_kprog *kp = dtl_fuse(&pg, NULL);
    dtl_val e = pg.outs[OUT_EARLY].val, l = pg.outs[OUT_LATE].val;
    uint32_t ke = kp->kernel_of[e], kl = kp->kernel_of[l];
    CHECK(ke != UINT32_MAX && kp->k[ke].kind == DTL_K_MATMUL && kp->k[ke].root != e);
    CHECK(kl != UINT32_MAX && kl > ke);
    dtl_kprog_free(kp);
    dtl_graph_free(&pg);
}

static void test_small(const dtl_backend *be, bool in_order)
{
    dtl_graph g;
    small_graph(&g);
    dtl_err err;
    CHECK(dtl_graph_check(&g, "test", &err));
    dtl_store *st = dtl_store_new(5);
    seen s = {0};
    seen_reset(&s, &g);
    dtl_plan_opts o = {.output_ready = hook, .ready_ctx = &s};
    dtl_plan *p = dtl_plan_new(be, &g, st, &o, &err);
    CHECK(p != NULL);
    if (!p) {
        fprintf(stderr, "%s: %s\n", be->name, err.msg);
        dtl_store_free(st);
        dtl_graph_free(&g);
        return;
    }
    float x[8 * 16];
    for (int i = 0; i < 8 * 16; i++)
        x[i] = (float)((i * 37) % 23) / 11.0f - 1.0f;
    dtl_binding in = {"x", x, DTL_DTYPE_F32, 2, {8, 16}};
    for (int run = 0; run < 3; run++) {
        float bold[16];
        CHECK(dtl_store_sync(st, DTL_SYNC_TO_HOST, &err));   /* (cuda: the device's) */
        memcpy(bold, dtl_store_find(st, "b")->t.data, sizeof bold);
        seen_reset(&s, &g);
        CHECK(dtl_plan_run(p, &in, 1, &err));
        char what[80];
        snprintf(what, sizeof what, "%s, run %d", be->name, run);
        CHECK(check_run(what, p, &g, &s));
        /* The PARAM output: the new value b - 0.25, now committed. */
        const float *bn = s.copy[OUT_BNEW];
        CHECK(bn && bn[3] == bold[3] - 0.25f);
        int pe = position(&s, OUT_EARLY), pl = position(&s, OUT_LATE);
        if (in_order) {
            for (uint32_t i = 0; i < s.n; i++)
                CHECK(s.order[i] == i);
        } else {
            CHECK(pe >= 0 && pl >= 0 && pe < pl);   /* as it goes, not in output order */
        }
        x[run] += 1;   /* another input next time */
    }
    dtl_plan_free(p);
    seen_reset(&s, &g);
    dtl_store_free(st);
    dtl_graph_free(&g);
}

/* ---- real graphs -------------------------------------------------------------------------- */

static const char mlp_src[] =
    "use nn\n"
    "model MLP {\n"
    "    fc1 = nn.Dense(20, 32)\n"
    "    fc2 = nn.Dense(32, 5)\n"
    "    fn forward(x: f32[B, 20]) -> f32[B, 5] = fc2(relu(fc1(x)))\n"
    "}\n"
    "dataset d = idx(\"none\")\n"
    "train MLP() {\n"
    "    data = d.train\n"
    "    batch = 8\n"
    "    loss = cross_entropy(forward(x), y)\n"
    "    optimizer = adam(lr = 1e-2)\n"
    "    epochs = 1\n"
    "    parallel = data\n"
    "}\n";

/* A weight used twice: its gradient is the sum of two matrix products. */
static const char tied_src[] =
    "model Tied {\n"
    "    param w: f32[12, 12] = glorot_uniform()\n"
    "    param v: f32[12, 4] = glorot_uniform()\n"
    "    fn forward(x: f32[B, 12]) -> f32[B, 4] = tanh(tanh(x @ w) @ w) @ v\n"
    "}\n"
    "dataset d = idx(\"none\")\n"
    "train Tied() {\n"
    "    data = d.train\n"
    "    batch = 8\n"
    "    loss = cross_entropy(forward(x), y)\n"
    "    optimizer = sgd(lr = 0.1)\n"
    "    epochs = 1\n"
    "    parallel = data\n"
    "}\n";

/* Does some "grad.*" output of g come out of a matmul epilogue (after passes and fusion)? */
static bool grad_in_epilogue(const dtl_graph *g)
{
    dtl_graph pg;
    dtl_err err;
    bool found = false;
    if (dtl_passes_run(&pg, g, NULL, &err)) {
        dtl_kprog *kp = dtl_fuse(&pg, NULL);
        for (uint32_t o = 0; o < pg.nouts; o++) {
            dtl_val v = pg.outs[o].val;
            uint32_t k = kp->kernel_of[v];
            if (strncmp(pg.outs[o].name, "grad.", 5) == 0 && k != UINT32_MAX &&
                kp->k[k].kind == DTL_K_MATMUL && kp->k[k].root != v)
                found = true;
        }
        dtl_kprog_free(kp);
    }
    dtl_graph_free(&pg);
    return found;
}

static void test_model(const char *name, const char *src, bool split, const dtl_backend *be)
{
    bt_model m;
    dtl_lower_opts lo = {0};
    lo.split_step = split;
    if (!bt_model_load(&m, name, src, &lo)) {
        CHECK(!"the model loads");
        return;
    }
    const dtl_graph *g = split ? &m.low.grad : &m.low.step;
    CHECK(g->nouts > 0 && g->nouts < MAXOUT);
    if (split && strcmp(name, "tied.dtl") == 0 && be == &dtl_backend_ref)
        CHECK(grad_in_epilogue(g));
    dtl_store *st = dtl_store_new(11);
    seen s = {0};
    seen_reset(&s, g);
    dtl_plan_opts o = {.output_ready = hook, .ready_ctx = &s};
    dtl_err err;
    dtl_plan *p = dtl_plan_new(be, g, st, &o, &err);
    CHECK(p != NULL);
    bt_batch b;
    if (p && bt_batch_init(&b, g, bt_classes(&m.low))) {
        for (int run = 0; run < 2; run++) {
            bt_batch_fill(&b, 3, (uint64_t)run, run);
            seen_reset(&s, g);
            CHECK(dtl_plan_run(p, b.in, b.nin, &err));
            char what[120];
            snprintf(what, sizeof what, "%s %s on %s, run %d", name, split ? "grad" : "step",
                     be->name, run);
            CHECK(check_run(what, p, g, &s));
        }
        bt_batch_free(&b);
    } else if (p) {
        CHECK(!"a batch for the graph");
    } else {
        fprintf(stderr, "%s: %s\n", name, err.msg);
    }
    dtl_plan_free(p);
    seen_reset(&s, g);
    dtl_store_free(st);
    bt_model_free(&m);
}

/* ---- llvm: unchanged without a hook -------------------------------------------------------- */

#ifdef HAVE_LLVM
static int count_objects(const char *dir)
{
    char sub[600];
    snprintf(sub, sizeof sub, "%s/llvm", dir);
    DIR *d = opendir(sub);
    int n = 0;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strlen(e->d_name) > 2 && strcmp(e->d_name + strlen(e->d_name) - 2, ".o") == 0;
    closedir(d);
    return n;
}

static void rm_objects(const char *dir)
{
    char sub[600], f[900];
    snprintf(sub, sizeof sub, "%s/llvm", dir);
    DIR *d = opendir(sub);
    if (d) {
        for (struct dirent *e; (e = readdir(d));)
            if (e->d_name[0] != '.') {
                snprintf(f, sizeof f, "%s/%s", sub, e->d_name);
                unlink(f);
            }
        closedir(d);
    }
    rmdir(sub);
    rmdir(dir);
}

static void test_llvm_unchanged(void)
{
    char dir[] = "/tmp/dtl-hook-cache.XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    setenv("DTL_CACHE_DIR", dir, 1);
    dtl_graph g;
    small_graph(&g);
    dtl_store *s1 = dtl_store_new(9), *s2 = dtl_store_new(9);
    seen s = {0};
    seen_reset(&s, &g);
    dtl_plan_opts with = {.output_ready = hook, .ready_ctx = &s};
    dtl_err err;
    dtl_plan *plain = dtl_plan_new(&dtl_backend_llvm, &g, s1, NULL, &err);
    CHECK(plain && count_objects(dir) == 1);
    dtl_plan *hooked = dtl_plan_new(&dtl_backend_llvm, &g, s2, &with, &err);
    CHECK(hooked && count_objects(dir) == 2);
    dtl_plan *again = dtl_plan_new(&dtl_backend_llvm, &g, s1, NULL, &err);
    CHECK(again && count_objects(dir) == 2);
    dtl_plan_free(again);
    float x[8 * 16];
    for (int i = 0; i < 8 * 16; i++)
        x[i] = (float)((i * 13) % 17) / 7.0f - 1.0f;
    dtl_binding in = {"x", x, DTL_DTYPE_F32, 2, {8, 16}};
    for (int run = 0; plain && hooked && run < 2; run++) {
        CHECK(dtl_plan_run(plain, &in, 1, &err) && dtl_plan_run(hooked, &in, 1, &err));
        for (uint32_t k = 0; k < g.nouts; k++) {
            dtl_tensor a, b;
            CHECK(dtl_plan_output(plain, g.outs[k].name, &a, &err) &&
                  dtl_plan_output(hooked, g.outs[k].name, &b, &err) &&
                  memcmp(a.data, b.data,
                         (size_t)dtl_tensor_numel(&a) * dtl_dtype_size(a.dtype)) == 0);
        }
    }
    CHECK(s.n == 2 * g.nouts);
    dtl_plan_free(plain);
    dtl_plan_free(hooked);
    seen_reset(&s, &g);
    dtl_store_free(s1);
    dtl_store_free(s2);
    dtl_graph_free(&g);
    rm_objects(dir);
}
#endif

int main(void)
{
    dtl_graph g;
    small_graph(&g);
    check_premise(&g);
    dtl_graph_free(&g);

    const dtl_backend *bes[3] = {&dtl_backend_ref, noready_backend(), NULL};
#ifdef HAVE_LLVM
    bes[2] = &dtl_backend_llvm;
#endif
    for (int i = 0; i < 3 && bes[i]; i++) {
        test_small(bes[i], i == 1);   /* ref and llvm report as they go */
        test_model("mlp.dtl", mlp_src, true, bes[i]);
        test_model("mlp.dtl", mlp_src, false, bes[i]);
        test_model("tied.dtl", tied_src, true, bes[i]);
    }
    /* cuda (calls_ready false: dtl_plan_run reports after the run), where a GPU is. */
    size_t nbt;
    const bt_backend *bt = bt_backends(&nbt);
    for (size_t i = 0; i < nbt; i++)
        if (strcmp(bt[i].name, "cuda") == 0) {
            test_small(bt[i].be, true);
            test_model("mlp.dtl", mlp_src, true, bt[i].be);
            test_model("mlp.dtl", mlp_src, false, bt[i].be);
        }
#ifdef HAVE_LLVM
    test_llvm_unchanged();
#else
    printf("(this build has no LLVM: the llvm backend's hooks are not tested)\n");
#endif
    CHECK_DONE();
}
