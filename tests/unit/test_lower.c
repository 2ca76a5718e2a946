/* tests/unit/test_lower.c — lowering (compiler/lower.h): the MNIST example's graphs, every
 * builtin's lowering checked by value on the reference backend, and the errors lowering
 * reports at concrete sizes. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../compiler/lower.h"
#include "../../lang/check.h"
#include "../../runtime/exec.h"
#include "unit.h"

#ifndef DTL_SRC_STDLIB_DIR
#define DTL_SRC_STDLIB_DIR "stdlib"
#endif

/* ---- helpers ---- */

typedef struct fx {
    dtl_ctx ctx;
    dtl_module *m;
} fx;

static void dump_diags(fx *f)
{
    dtl_diag_print(&f->ctx.diags, stderr, false);
}

/* Checks src (a whole file); false (diagnostics shown) if the checker complains. */
static bool fx_load(fx *f, const char *src)
{
    dtl_ctx_init(&f->ctx);
    dtl_ctx_add_default_paths(&f->ctx);
    const dtl_source *s = dtl_src_add(&f->ctx.sources, "test.dtl", src, strlen(src));
    f->m = dtl_check_source(&f->ctx, s);
    if (!f->m || dtl_diag_failed(&f->ctx.diags)) {
        fprintf(stderr, "--- checking failed for:\n%s\n", src);
        dump_diags(f);
        return false;
    }
    return true;
}

static void fx_free(fx *f)
{
    dtl_ctx_free(&f->ctx);
}

/* The diagnostics as text (for checking error messages). */
static char *diag_text(fx *f)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    dtl_diag_print(&f->ctx.diags, out, false);
    fclose(out);
    return buf;
}

static const dtl_node *find_named(const dtl_graph *g, dtl_op op, const char *name)
{
    for (uint32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == op && g->nodes[i].name && strcmp(g->nodes[i].name, name) == 0)
            return &g->nodes[i];
    return NULL;
}

static const dtl_output *find_out(const dtl_graph *g, const char *name)
{
    for (uint32_t i = 0; i < g->nouts; i++)
        if (strcmp(g->outs[i].name, name) == 0)
            return &g->outs[i];
    return NULL;
}

static bool shape_is(const dtl_node *n, dtl_dtype dt, uint32_t rank, const int64_t *shape)
{
    return n && n->dtype == dt && n->rank == rank &&
           (rank == 0 || memcmp(n->shape, shape, rank * sizeof *shape) == 0);
}

static unsigned count_op(const dtl_graph *g, dtl_op op)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < g->nnodes; i++)
        n += g->nodes[i].op == op;
    return n;
}

static unsigned count_outs(const dtl_graph *g, dtl_out_kind k)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < g->nouts; i++)
        n += g->outs[i].kind == k;
    return n;
}

static double elem(const dtl_tensor *t, uint64_t i)
{
    switch (t->dtype) {
    case DTL_DTYPE_F32: return ((const float *)t->data)[i];
    case DTL_DTYPE_F64: return ((const double *)t->data)[i];
    case DTL_DTYPE_I64: return (double)((const int64_t *)t->data)[i];
    case DTL_DTYPE_I32: return ((const int32_t *)t->data)[i];
    case DTL_DTYPE_BOOL: return ((const unsigned char *)t->data)[i] != 0;
    default: return NAN;
    }
}

/* The model part of a test program and the train block around it (named t). */
static char *program(const char *model, const char *loss)
{
    static const char *fmt =
        "dataset ds = idx(\"fashion-mnist\")\n"
        "%s\n"
        "train t = M() {\n"
        "    data = ds.train\n"
        "    batch = 2\n"
        "    loss = %s\n"
        "    optimizer = sgd(lr = 0.1)\n"
        "    evaluate = accuracy(ds.test)\n"
        "}\n";
    size_t n = strlen(fmt) + strlen(model) + strlen(loss) + 1;
    char *s = malloc(n);
    snprintf(s, n, fmt, model, loss);
    return s;
}

/* x of the tests: f32[2, 4] = [[0, 1, 2, 3], [4, 5, 6, 7]]. */
static const float X24[] = {0, 1, 2, 3, 4, 5, 6, 7};
static const int64_t Y2[] = {1, 3};

/* Lowers graph `kind` of program(model, loss) at batch 2, runs it on x (f32[2, 4]) and y,
 * and compares output `out` with want (shape wshape of rank wrank) within tol. */
static void check_run(int line, const char *model, const char *loss, dtl_lower_kind kind,
                      const char *out, uint32_t wrank, const int64_t *wshape, const double *want,
                      double tol)
{
    char *src = program(model, loss);
    fx f;
    bool ok = fx_load(&f, src);
    CHECK(ok);
    dtl_graph g;
    dtl_lower_opts o = {0};
    if (ok && !dtl_lower_graph(&f.ctx, dtl_lower_find_train(f.m, "t"), kind, &o, &g)) {
        fprintf(stderr, "line %d: lowering failed:\n", line);
        dump_diags(&f);
        ok = false;
        CHECK(ok);
    }
    if (ok) {
        CHECK(dtl_graph_verify(&g, stderr));
        dtl_err err = {0};
        dtl_store *st = dtl_store_new(1);
        dtl_plan *p = dtl_plan_new(&dtl_backend_ref, &g, st, NULL, &err);
        dtl_binding in[3] = {
            {"x", X24, DTL_DTYPE_F32, 2, {2, 4}},
            {"y", Y2, DTL_DTYPE_I64, 1, {2}},
            {"step", (const int64_t[]){1}, DTL_DTYPE_I64, 0, {0}},
        };
        dtl_tensor t;
        if (!p || !dtl_plan_run(p, in, 3, &err) || !dtl_plan_output(p, out, &t, &err)) {
            fprintf(stderr, "line %d: running failed: %s\n", line, err.msg);
            dtl_graph_print(&g, stderr);
            CHECK(!"run");
        } else {
            bool same = t.rank == wrank &&
                        (wrank == 0 || memcmp(t.shape, wshape, wrank * sizeof *wshape) == 0);
            uint64_t n = dtl_tensor_numel(&t);
            for (uint64_t i = 0; same && i < n; i++)
                same = fabs(elem(&t, i) - want[i]) <= tol * (1 + fabs(want[i]));
            if (!same) {
                fprintf(stderr, "line %d: %s: got rank %u [", line, model, t.rank);
                for (uint32_t i = 0; i < t.rank; i++)
                    fprintf(stderr, "%s%lld", i ? ", " : "", (long long)t.shape[i]);
                fprintf(stderr, "]:");
                for (uint64_t i = 0; i < n && i < 64; i++)
                    fprintf(stderr, " %g", elem(&t, i));
                fprintf(stderr, "\n");
            }
            CHECK(same);
        }
        dtl_plan_free(p);
        dtl_store_free(st);
        dtl_graph_free(&g);
    }
    fx_free(&f);
    free(src);
}

#define INFER(model, rank, shape, ...)                                                    \
    check_run(__LINE__, model, "mean(cast(forward(x), f32))", DTL_LOWER_INFER, "y", rank, \
              (const int64_t[])shape, (const double[]){__VA_ARGS__}, 1e-6)
#define SHAPE(...) {__VA_ARGS__}

/* Lowering graph `kind` of program(model, loss) fails with a message containing want. */
static void check_error(int line, const char *model, const char *loss, dtl_lower_kind kind,
                        int64_t batch, const char *want)
{
    char *src = program(model, loss);
    fx f;
    bool ok = fx_load(&f, src);
    CHECK(ok);
    if (ok) {
        dtl_graph g;
        dtl_lower_opts o = {.batch = batch};
        bool lowered = dtl_lower_graph(&f.ctx, dtl_lower_find_train(f.m, "t"), kind, &o, &g);
        CHECK(!lowered);
        if (lowered)
            dtl_graph_free(&g);
        char *text = diag_text(&f);
        if (!text || !strstr(text, want)) {
            fprintf(stderr, "line %d: expected an error containing \"%s\", got:\n%s\n", line,
                    want, text ? text : "");
            CHECK(!"error message");
        }
        free(text);
    }
    fx_free(&f);
    free(src);
}

/* ---- the MNIST example ---- */

static void test_mnist(void)
{
    fx f;
    dtl_ctx_init(&f.ctx);
    dtl_ctx_add_default_paths(&f.ctx);
    f.m = dtl_check_path(&f.ctx, DTL_SRC_STDLIB_DIR "/../examples/mnist_mlp.dtl");
    CHECK(f.m && !dtl_diag_failed(&f.ctx.diags));
    if (!f.m || dtl_diag_failed(&f.ctx.diags)) {
        dump_diags(&f);
        fx_free(&f);
        return;
    }
    const dtl_train *t = dtl_lower_find_train(f.m, NULL);
    CHECK(t != NULL);
    dtl_lowered low;
    dtl_lower_opts o = {.batch = 4};
    bool ok = dtl_lower_train(&f.ctx, t, &o, &low);
    CHECK(ok);
    if (!ok) {
        dump_diags(&f);
        fx_free(&f);
        return;
    }
    const dtl_graph *g = &low.step;
    CHECK(dtl_graph_verify(g, stderr));
    CHECK(dtl_graph_verify(&low.eval, stderr));
    CHECK(dtl_graph_verify(&low.infer, stderr));

    const dtl_node *w1 = find_named(g, DTL_OP_PARAM, "fc1.w");
    const dtl_node *b1 = find_named(g, DTL_OP_PARAM, "fc1.b");
    const dtl_node *w2 = find_named(g, DTL_OP_PARAM, "fc2.w");
    const dtl_node *b2 = find_named(g, DTL_OP_PARAM, "fc2.b");
    CHECK(shape_is(w1, DTL_DTYPE_F32, 2, (const int64_t[]){784, 128}));
    CHECK(shape_is(b1, DTL_DTYPE_F32, 1, (const int64_t[]){128}));
    CHECK(shape_is(w2, DTL_DTYPE_F32, 2, (const int64_t[]){128, 10}));
    CHECK(shape_is(b2, DTL_DTYPE_F32, 1, (const int64_t[]){10}));
    CHECK(w1 && w1->attr.init.kind == DTL_INIT_GLOROT_UNIFORM);
    CHECK(b1 && b1->attr.init.kind == DTL_INIT_ZEROS);
    CHECK(w2 && w2->attr.init.kind == DTL_INIT_GLOROT_UNIFORM);
    CHECK(b2 && b2->attr.init.kind == DTL_INIT_ZEROS);
    CHECK(count_op(g, DTL_OP_PARAM) == 4);
    CHECK(low.nparams == 4);
    /* The params come first after the inputs, in declaration order. */
    CHECK(g->nnodes > 6 && g->nodes[2].name && strcmp(g->nodes[2].name, "fc1.w") == 0 &&
          strcmp(g->nodes[5].name, "fc2.b") == 0);
    CHECK(shape_is(find_named(g, DTL_OP_INPUT, "x"), DTL_DTYPE_F32, 2,
                   (const int64_t[]){4, 784}));
    CHECK(shape_is(find_named(g, DTL_OP_INPUT, "y"), DTL_DTYPE_I64, 1, (const int64_t[]){4}));

    const dtl_output *loss = find_out(g, "loss");
    CHECK(loss && loss->kind == DTL_OUT_LOSS);
    CHECK(loss && shape_is(&g->nodes[loss->val], DTL_DTYPE_F32, 0, NULL));
    CHECK(count_outs(g, DTL_OUT_LOSS) == 1);
    CHECK(count_outs(g, DTL_OUT_PARAM) == 4);
    CHECK(count_outs(g, DTL_OUT_STATE) == 8);
    CHECK(count_op(g, DTL_OP_STATE) == 8);
    const dtl_node *m1 = find_named(g, DTL_OP_STATE, "fc1.w.m");
    const dtl_node *v2 = find_named(g, DTL_OP_STATE, "fc2.b.v");
    CHECK(shape_is(m1, DTL_DTYPE_F32, 2, (const int64_t[]){784, 128}));
    CHECK(shape_is(v2, DTL_DTYPE_F32, 1, (const int64_t[]){10}));
    for (uint32_t i = 0; i < g->nouts; i++)
        if (g->outs[i].kind == DTL_OUT_PARAM)
            CHECK(g->nodes[g->outs[i].target].op == DTL_OP_PARAM &&
                  strcmp(g->nodes[g->outs[i].target].name, g->outs[i].name) == 0);
    /* Forward nodes, loss nodes, backward and update nodes are all there. */
    bool roles[DTL_ROLE_METRIC + 1] = {false};
    for (uint32_t i = 0; i < g->nnodes; i++)
        roles[g->nodes[i].role] = true;
    CHECK(roles[DTL_ROLE_FORWARD] && roles[DTL_ROLE_LOSS] && roles[DTL_ROLE_BACKWARD] &&
          roles[DTL_ROLE_UPDATE]);
    CHECK(count_op(g, DTL_OP_RNG_UNIFORM) == 0);

    /* eval: the same params, the loss and the correct count, no updates. */
    const dtl_graph *e = &low.eval;
    CHECK(count_op(e, DTL_OP_PARAM) == 4 && count_op(e, DTL_OP_STATE) == 0);
    for (uint32_t i = 0; i < 6; i++)
        CHECK(e->nodes[i].op == g->nodes[i].op && e->nodes[i].name && g->nodes[i].name &&
              strcmp(e->nodes[i].name, g->nodes[i].name) == 0 &&
              e->nodes[i].attr.init.kind == g->nodes[i].attr.init.kind);
    const dtl_output *correct = find_out(e, "correct");
    CHECK(correct && correct->kind == DTL_OUT_VALUE &&
          shape_is(&e->nodes[correct->val], DTL_DTYPE_I64, 0, NULL));
    CHECK(find_out(e, "loss") && find_out(e, "loss")->kind == DTL_OUT_LOSS);
    CHECK(count_outs(e, DTL_OUT_PARAM) == 0 && count_outs(e, DTL_OUT_STATE) == 0);
    /* forward(x) is computed once for the loss and the accuracy. */
    CHECK(count_op(e, DTL_OP_MATMUL) == 2);

    /* infer: x alone, y = forward(x). */
    const dtl_graph *in = &low.infer;
    CHECK(low.has_infer);
    CHECK(find_named(in, DTL_OP_INPUT, "y") == NULL);
    const dtl_output *y = find_out(in, "y");
    CHECK(y && y->kind == DTL_OUT_VALUE &&
          shape_is(&in->nodes[y->val], DTL_DTYPE_F32, 2, (const int64_t[]){4, 10}));
    CHECK(count_op(in, DTL_OP_PARAM) == 4 && in->nouts == 1);

    /* The settings. */
    CHECK(low.batch == 4 && low.epochs == 10 && low.seed == -1);
    CHECK(low.optim.kind == DTL_OPT_ADAM && low.optim.lr == 1e-3 && low.optim.beta1 == 0.9 &&
          low.optim.beta2 == 0.999 && low.optim.eps == 1e-8);
    CHECK(low.data.kind == DTL_LDATA_IDX && !low.data.test &&
          strcmp(low.data.name, "fashion-mnist") == 0 && low.data.scale == 1.0 / 255 &&
          strcmp(low.data.dataset, "fashion") == 0);
    CHECK(low.has_accuracy && low.eval_data.kind == DTL_LDATA_IDX && low.eval_data.test);
    dtl_lowered_free(&low);

    /* At the train block's own batch (32), and with the f64 policy. */
    dtl_lower_opts o64 = {.compute = DTL_DTYPE_F64};
    dtl_graph g64;
    CHECK(dtl_lower_graph(&f.ctx, t, DTL_LOWER_STEP, &o64, &g64));
    CHECK(shape_is(find_named(&g64, DTL_OP_INPUT, "x"), DTL_DTYPE_F64, 2,
                   (const int64_t[]){32, 784}));
    CHECK(shape_is(find_named(&g64, DTL_OP_PARAM, "fc2.w"), DTL_DTYPE_F64, 2,
                   (const int64_t[]){128, 10}));
    CHECK(shape_is(find_named(&g64, DTL_OP_STATE, "fc2.w.v"), DTL_DTYPE_F64, 2,
                   (const int64_t[]){128, 10}));
    CHECK(dtl_graph_verify(&g64, stderr));
    dtl_graph_free(&g64);
    fx_free(&f);
}

/* ---- ops, by value ---- */

static void test_indexing(void)
{
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 2] = x[:, 1:3] }", 2, SHAPE(2, 2),
          1, 2, 5, 6);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[4] = x[-1, ::-1] }", 1, SHAPE(4),
          7, 6, 5, 4);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 2] = x[:, ::2] }", 2, SHAPE(2, 2),
          0, 2, 4, 6);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 2] = x[:, -1:0:-2] }", 2,
          SHAPE(2, 2), 3, 1, 7, 5);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32 = x[1, 2] }", 0, SHAPE(0), 6);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 0] = x[:, 3:1] }", 2, SHAPE(2, 0),
          0);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B - 1, 3] = x[::-1, :3][1:] }", 2,
          SHAPE(1, 3), 0, 1, 2);
    /* Bounds beyond the dims are clamped, as numpy does (a constant bound: the checker
     * knows the length). */
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 2] = x[:, 2:100] }", 2, SHAPE(2, 2),
          2, 3, 6, 7);
    /* Indices given by a constructor parameter and a fn's int parameter. */
    INFER("model M(i: int = -2) {\n"
          "    fn pick(x: f32[B, 4], j: int) -> f32[B] = x[:, j]\n"
          "    fn forward(x: f32[B, 4]) -> f32[B] = pick(x, i) + x[:, i + 1]\n"
          "}", 1, SHAPE(2), 2 + 3, 6 + 7);
}

static void test_shapes(void)
{
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B*4] = reshape(x, [-1]) }", 1,
          SHAPE(8), 0, 1, 2, 3, 4, 5, 6, 7);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 2, 2] = reshape(x, [B, 2, -1]) }",
          3, SHAPE(2, 2, 2), 0, 1, 2, 3, 4, 5, 6, 7);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[4, B] = transpose(x) }", 2,
          SHAPE(4, 2), 0, 4, 1, 5, 2, 6, 3, 7);
    INFER("model M() {\n"
          "    fn forward(x: f32[B, 4]) -> f32[2, B, 2] =\n"
          "        transpose(reshape(x, [B, 2, 2]), [2, 0, 1])\n"
          "}", 3, SHAPE(2, 2, 2), 0, 2, 4, 6, 1, 3, 5, 7);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 6] = concat([x, x[:, :2] * 2.0], "
          "axis = 1) }", 2, SHAPE(2, 6), 0, 1, 2, 3, 0, 2, 4, 5, 6, 7, 8, 10);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B*2, 4] = concat([x, -x]) }", 2,
          SHAPE(4, 4), 0, 1, 2, 3, 4, 5, 6, 7, -0., -1, -2, -3, -4, -5, -6, -7);
}

static void test_elementwise(void)
{
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 4] = where(x > 2.5, x, 0.0) }", 2,
          SHAPE(2, 4), 0, 0, 0, 3, 4, 5, 6, 7);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 4] =\n"
          "    where(x > 2.5 and not (x >= 6), 1.0, -1.0) }", 2, SHAPE(2, 4),
          -1, -1, -1, 1, 1, 1, -1, -1);
    INFER("model M() { fn forward(x: f32[B, 4]) -> bool[B, 4] = x == 1 or x != x }", 2,
          SHAPE(2, 4), 0, 1, 0, 0, 0, 0, 0, 0);
    INFER("model M() { fn forward(x: f32[B, 4]) -> i64[B, 4] = cast(x, i64) * 2 - 1 }", 2,
          SHAPE(2, 4), -1, 1, 3, 5, 7, 9, 11, 13);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 4] = x ** 2 - 2 * x + 1 / 4 }", 2,
          SHAPE(2, 4), .25, -.75, .25, 3.25, 8.25, 15.25, 24.25, 35.25);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 4] = (x - 3) / 2 + -x }", 2,
          SHAPE(2, 4), -1.5, -2, -2.5, -3, -3.5, -4, -4.5, -5);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 4] = x + [1.0, 2, 3, 4] }", 2,
          SHAPE(2, 4), 1, 3, 5, 7, 5, 7, 9, 11);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 4] = x * [[1.0, -1, 1, -1]] }", 2,
          SHAPE(2, 4), 0, -1, 2, -3, 4, -5, 6, -7);
    /* Host arithmetic folded before it meets the tensor. */
    INFER("model M(k: int = 3, s: float = 0.5) {\n"
          "    fn forward(x: f32[B, 4]) -> f32[B, 4] = x * (k ** 2 / 2 * s)\n"
          "}", 2, SHAPE(2, 4), 0, 2.25, 4.5, 6.75, 9, 11.25, 13.5, 15.75);
    double want[8];
    for (int i = 0; i < 8; i++)
        want[i] = exp(X24[i] / 8.0) + log(1 + X24[i]) + sqrt(X24[i]) + fabs(X24[i] - 3) +
                  1 / (1 + exp(-(X24[i] - 3))) + tanh(X24[i] - 3) + sin(X24[i]) + cos(X24[i]) +
                  (X24[i] > 3 ? X24[i] - 3 : 0);
    check_run(__LINE__, "model M() { fn forward(x: f32[B, 4]) -> f32[B, 4] =\n"
              "    exp(x / 8) + log(1 + x) + sqrt(x) + abs(x - 3) + sigmoid(x - 3) + tanh(x - 3)\n"
              "    + sin(x) + cos(x) + relu(x - 3) }",
              "mean(forward(x))", DTL_LOWER_INFER, "y", 2, (const int64_t[]){2, 4}, want, 1e-5);
    for (int i = 0; i < 8; i++) {
        double v = X24[i] - 3;
        want[i] = v * 0.5 * (1 + erf(v / sqrt(2))) + v / (1 + exp(-v)) + log1p(exp(v));
    }
    check_run(__LINE__, "model M() { fn forward(x: f32[B, 4]) -> f32[B, 4] =\n"
              "    gelu(x - 3) + silu(x - 3) + softplus(x - 3) }",
              "mean(forward(x))", DTL_LOWER_INFER, "y", 2, (const int64_t[]){2, 4}, want, 1e-5);
}

static void test_reductions(void)
{
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B] = sum(x, axis = 1) }", 1, SHAPE(2),
          6, 22);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[1, 4] = mean(x, axis = 0, keepdims = "
          "true) }", 2, SHAPE(1, 4), 2, 3, 4, 5);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32 = max(x) - min(x) + mean(x) }", 0,
          SHAPE(0), 7 + 3.5);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B] = min(x, axis = -1) }", 1, SHAPE(2),
          0, 4);
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[1, 1] = sum(x, keepdims = true) }", 2,
          SHAPE(1, 1), 28);
    INFER("model M() { fn forward(x: f32[B, 4]) -> i64[B] = argmax(abs(x - 5), axis = 1) }",
          1, SHAPE(2), 0, 3);
    INFER("model M() { fn forward(x: f32[B, 4]) -> i64 = sum(cast(x, i64)) }", 0, SHAPE(0),
          28);
    double want[8];
    for (int r = 0; r < 2; r++) {
        double s = 0;
        for (int c = 0; c < 4; c++)
            s += exp(X24[r * 4 + c]);
        for (int c = 0; c < 4; c++)
            want[r * 4 + c] = exp(X24[r * 4 + c]) / s + (X24[r * 4 + c] - log(s));
    }
    check_run(__LINE__, "model M() { fn forward(x: f32[B, 4]) -> f32[B, 4] =\n"
              "    softmax(x) + log_softmax(x, axis = 1) }",
              "mean(forward(x))", DTL_LOWER_INFER, "y", 2, (const int64_t[]){2, 4}, want, 1e-5);
}

static void test_matmul(void)
{
    static const char *params =
        "    param v: f32[4] = [1.0, 0.0, -1.0, 2.0]\n"
        "    param w: f32[4, 2] = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]\n";
    char model[512];
    snprintf(model, sizeof model, "model M() {\n%s    fn forward(x: f32[B, 4]) -> f32[B] = "
             "x @ v\n}", params);
    INFER(model, 1, SHAPE(2), 4, 12);
    snprintf(model, sizeof model, "model M() {\n%s    fn forward(x: f32[B, 4]) -> f32[2] = "
             "v @ w + matmul(v, v)\n}", params);
    INFER(model, 1, SHAPE(2), 1 - 5 + 14 + 6, 2 - 6 + 16 + 6);
    snprintf(model, sizeof model, "model M() {\n%s    fn forward(x: f32[B, 4]) -> f32[B, 2] = "
             "x @ w\n}", params);
    INFER(model, 2, SHAPE(2, 2), 34, 40, 98, 120);
    /* Batched: [2, 1, 4] @ [4, 2]. */
    snprintf(model, sizeof model, "model M() {\n%s    fn forward(x: f32[B, 4]) -> f32[B, 1, 2] "
             "= reshape(x, [B, 1, 4]) @ w\n}", params);
    INFER(model, 3, SHAPE(2, 1, 2), 34, 40, 98, 120);
}

static void test_one_hot_literals_lets(void)
{
    INFER("model M() { fn forward(x: f32[B, 4]) -> f32[B, 5] = one_hot(cast(x[:, 0], i64), 5) }",
          2, SHAPE(2, 5), 1, 0, 0, 0, 0, 0, 0, 0, 0, 1);
    /* Top-level lets, a constant member, a block with lets, a fn of another model. */
    INFER("let scale = 2\n"
          "let shift = [[10.0, 20.0, 30.0, 40.0]]\n"
          "model Inner(k: int) {\n"
          "    param b: f32[k] = constant(0.5)\n"
          "    fn forward(x: f32[N, k]) -> f32[N, k] = x + b\n"
          "}\n"
          "model M() {\n"
          "    inner = Inner(4)\n"
          "    half = 0.5\n"
          "    fn forward(x: f32[B, 4]) -> f32[B, 4] {\n"
          "        let a = inner(x) * scale\n"
          "        let b = a - shift\n"
          "        return b * half\n"
          "    }\n"
          "}", 2, SHAPE(2, 4), -4.5, -8.5, -12.5, -16.5, -0.5, -4.5, -8.5, -12.5);
    /* A fn whose dims are bound by unification (2*N), with a default argument. */
    INFER("fn halves(x: f32[R, 2*N], k: int = 1) -> f32[R, N] = x[:, :N] + x[:, N:] * k\n"
          "model M() { fn forward(x: f32[B, 4]) -> f32[B, 2] = halves(x) + halves(x, k = 2) }",
          2, SHAPE(2, 2), 0 + 2 + 0 + 4, 1 + 3 + 1 + 6, 4 + 6 + 4 + 12, 5 + 7 + 5 + 14);
}

static void test_losses_and_eval(void)
{
    /* Scores: x @ w with w picking columns; correct counts rows whose argmax is y. */
    static const char *model =
        "model M() {\n"
        "    param w: f32[4, 4] = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0],\n"
        "                          [0, 0, 0, 1.0]]\n"
        "    fn forward(x: f32[B, 4]) -> f32[B, 4] = x @ w * -1.0 + [0.0, 100.0, 0.0, 0.0]\n"
        "}";
    /* row 0: [0, 99, -2, -3] argmax 1 = y[0]; row 1: [-4, 95, -6, -7] argmax 1 != 3. */
    check_run(__LINE__, model, "cross_entropy(forward(x), y)", DTL_LOWER_EVAL, "correct", 0,
              NULL, (const double[]){1}, 0);
    double z[2][4] = {{0, 99, -2, -3}, {-4, 95, -6, -7}};
    double ce = 0;
    for (int r = 0; r < 2; r++) {
        double m = 99 - 4 * r, s = 0;
        for (int c = 0; c < 4; c++)
            s += exp(z[r][c] - m);
        ce += m + log(s) - z[r][Y2[r]];
    }
    check_run(__LINE__, model, "cross_entropy(forward(x), y)", DTL_LOWER_EVAL, "loss", 0,
              NULL, (const double[]){ce / 2}, 1e-5);
    /* mse against a one-hot target; bce_with_logits. */
    double mse = 0, bce = 0;
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 4; c++) {
            double t = c == Y2[r], v = X24[r * 4 + c] / 4;
            mse += (v - t) * (v - t);
            bce += fmax(v, 0) - v * t + log1p(exp(-fabs(v)));
        }
    check_run(__LINE__, "model M() { fn forward(x: f32[B, 4]) -> f32[B, 4] = x / 4 }",
              "mse(forward(x), one_hot(y, 4))", DTL_LOWER_EVAL, "loss", 0, NULL,
              (const double[]){mse / 8}, 1e-6);
    check_run(__LINE__, "model M() { fn forward(x: f32[B, 4]) -> f32[B, 4] = x / 4 }",
              "bce_with_logits(forward(x), one_hot(y, 4))",
              DTL_LOWER_EVAL, "loss", 0, NULL, (const double[]){bce / 8}, 1e-6);
}

static void test_dropout_and_structure(void)
{
    /* A nested model: dotted param names, depth first in declaration order; dropout
     * through a float constructor argument. */
    static const char *src =
        "use nn\n"
        "model Enc(n: int) {\n"
        "    fc1 = nn.Dense(n, 3)\n"
        "    drop = nn.Dropout(0.25)\n"
        "    param s: f32[3] = ones()\n"
        "    fn forward(x: f32[B, n]) -> f32[B, 3] = drop(fc1(x)) * s\n"
        "}\n"
        "model Net() {\n"
        "    enc = Enc(4)\n"
        "    head = nn.Dense(3, 2)\n"
        "    param unused: f32[2] = normal(std = 0.5)\n"
        "    fn forward(x: f32[B, 4]) -> f32[B, 2] = head(enc(x))\n"
        "}\n"
        "dataset ds = idx(\"fashion-mnist\")\n"
        "train Net() {\n"
        "    data = ds.train\n"
        "    batch = 3\n"
        "    loss = cross_entropy(forward(x), y)\n"
        "    optimizer = sgd(lr = 0.1, momentum = 0.9)\n"
        "    seed = 7\n"
        "}\n";
    fx f;
    if (!fx_load(&f, src)) {
        CHECK(!"load");
        fx_free(&f);
        return;
    }
    const dtl_train *t = dtl_lower_find_train(f.m, NULL);
    dtl_lowered low;
    bool ok = dtl_lower_train(&f.ctx, t, NULL, &low);
    CHECK(ok);
    if (ok) {
        static const char *const names[] = {"enc.fc1.w", "enc.fc1.b", "enc.s", "head.w",
                                            "head.b", "unused"};
        uint32_t k = 0;
        for (uint32_t i = 0; i < low.step.nnodes; i++)
            if (low.step.nodes[i].op == DTL_OP_PARAM) {
                CHECK(k < 6 && strcmp(low.step.nodes[i].name, names[k]) == 0);
                k++;
            }
        CHECK(k == 6 && low.nparams == 6);
        const dtl_node *u = find_named(&low.step, DTL_OP_PARAM, "unused");
        CHECK(u && u->attr.init.kind == DTL_INIT_NORMAL && u->attr.init.a == 0 &&
              u->attr.init.b == 0.5);
        CHECK(shape_is(find_named(&low.step, DTL_OP_PARAM, "enc.fc1.w"), DTL_DTYPE_F32, 2,
                       (const int64_t[]){4, 3}));
        CHECK(count_op(&low.step, DTL_OP_RNG_UNIFORM) == 1);
        CHECK(find_named(&low.step, DTL_OP_INPUT, "step") != NULL);
        CHECK(count_op(&low.eval, DTL_OP_RNG_UNIFORM) == 0);
        CHECK(count_op(&low.infer, DTL_OP_RNG_UNIFORM) == 0);
        CHECK(count_outs(&low.step, DTL_OUT_PARAM) == 6);
        CHECK(count_outs(&low.step, DTL_OUT_STATE) == 6);   /* momentum buffers */
        CHECK(!low.has_accuracy && find_out(&low.eval, "correct") == NULL);
        CHECK(low.seed == 7 && low.batch == 3 && low.epochs == 1);
        CHECK(low.optim.kind == DTL_OPT_SGD && low.optim.lr == 0.1 && low.optim.momentum == 0.9);
        /* The unused param gets a warning. */
        char *text = diag_text(&f);
        CHECK(text && strstr(text, "param 'unused' does not affect the loss"));
        free(text);
        dtl_lowered_free(&low);
    }
    fx_free(&f);
}

/* Batch norm's states: PARAM nodes in every graph, updated by STEP and GRAD (not by the
 * optimizer, no gradient, no momentum), read by EVAL and INFER; top-k accuracy. */
static void test_batch_norm_states(void)
{
    static const char *src =
        "use nn\n"
        "model Net() {\n"
        "    fc = nn.Dense(4, 3)\n"
        "    bn = nn.BatchNorm(3)\n"
        "    fn forward(x: f32[B, 4]) -> f32[B, 3] = bn(fc(x))\n"
        "}\n"
        "dataset ds = idx(\"fashion-mnist\")\n"
        "train Net() {\n"
        "    data = ds.train\n"
        "    batch = 5\n"
        "    loss = cross_entropy(forward(x), y)\n"
        "    optimizer = sgd(lr = 0.1, momentum = 0.9)\n"
        "    evaluate = accuracy(ds.test, k = 2)\n"
        "}\n";
    fx f;
    if (!fx_load(&f, src)) {
        CHECK(!"load");
        fx_free(&f);
        return;
    }
    const dtl_train *t = dtl_lower_find_train(f.m, NULL);
    for (int split = 0; split < 2; split++) {
        dtl_lower_opts lo = {0};
        lo.split_step = split;
        dtl_lowered low;
        bool ok = dtl_lower_train(&f.ctx, t, &lo, &low);
        CHECK(ok);
        if (!ok)
            continue;
        const dtl_graph *train = split ? &low.grad : &low.step;
        const dtl_graph *graphs[] = {train, &low.eval, &low.infer};
        for (int k = 0; k < 3; k++) {
            const dtl_node *rm = find_named(graphs[k], DTL_OP_PARAM, "bn.running_mean");
            const dtl_node *rv = find_named(graphs[k], DTL_OP_PARAM, "bn.running_var");
            CHECK(rm && rm->attr.init.kind == DTL_INIT_ZEROS);
            CHECK(rv && rv->attr.init.kind == DTL_INIT_ONES);
            CHECK((find_out(graphs[k], "bn.running_mean") != NULL) == (k == 0));
            CHECK((find_out(graphs[k], "bn.running_var") != NULL) == (k == 0));
        }
        CHECK(low.nparams == 6);   /* fc.w fc.b bn.g bn.b and the two states */
        /* Only the four trained params get momentum and an optimizer update. */
        CHECK(find_out(train, "bn.running_mean.m") == NULL);
        CHECK(find_out(train, "grad.bn.running_mean") == NULL);
        if (split) {
            CHECK(find_out(&low.grad, "grad.bn.g") != NULL);
            CHECK(count_outs(&low.update, DTL_OUT_PARAM) == 4);
            CHECK(count_outs(&low.update, DTL_OUT_STATE) == 4);
            CHECK(count_outs(&low.grad, DTL_OUT_PARAM) == 2);
        } else {
            CHECK(count_outs(&low.step, DTL_OUT_PARAM) == 6);
            CHECK(count_outs(&low.step, DTL_OUT_STATE) == 4);
        }
        /* accuracy(k = 2) counts in the eval graph. */
        CHECK(low.has_accuracy && find_out(&low.eval, "correct") != NULL);
        dtl_lowered_free(&low);
    }
    fx_free(&f);
}

/* A model whose forward does not take x: training lowers, inference is left out. */
static void test_forward_optional(void)
{
    static const char *src =
        "model M() {\n"
        "    param w: f32[3] = ones()\n"
        "    fn score(x: f32[B, 3]) -> f32[B, 3] = x * w\n"
        "    fn forward(ids: i64[N]) -> i64[N] = ids * 2\n"
        "}\n"
        "dataset ds = idx(\"fashion-mnist\")\n"
        "train M() {\n"
        "    data = ds.train\n"
        "    loss = mean(score(x))\n"
        "    optimizer = adam()\n"
        "}\n";
    fx f;
    if (!fx_load(&f, src)) {
        CHECK(!"load");
        fx_free(&f);
        return;
    }
    dtl_lowered low;
    bool ok = dtl_lower_train(&f.ctx, dtl_lower_find_train(f.m, NULL), NULL, &low);
    CHECK(ok);
    if (ok) {
        CHECK(!low.has_infer && low.infer.nnodes == 0);
        CHECK(!low.has_accuracy && find_out(&low.eval, "loss") != NULL);
        CHECK(low.batch == 32 && count_outs(&low.step, DTL_OUT_STATE) == 2);
        dtl_lowered_free(&low);
    }
    fx_free(&f);
}

/* The gradients of a lowered model, in f64: the step graph with sgd(lr = 1) moves each param
 * by minus its gradient; central differences of the eval graph's loss must agree. */
static void test_gradcheck_model(void)
{
    static const char *src =
        "use nn\n"
        "fn halves(x: f32[R, 2*N]) -> f32[R, N] = x[:, :N] + x[:, N:] * 2\n"
        "model M() {\n"
        "    ln = nn.LayerNorm(4)\n"
        "    fc = nn.Dense(4, 4)\n"
        "    param w2: f32[4, 2] = glorot_normal()\n"
        "    param v: f32[4] = normal()\n"
        "    fn forward(x: f32[B, 4]) -> f32[B, 4] {\n"
        "        let h = tanh(fc(ln(x)))\n"
        "        let a = concat([h[:, ::-1][:, :2], halves(h) @ transpose(w2)[:, :2]], axis = 1)\n"
        "        return softmax(a * v) + log_softmax(h, axis = 0) +\n"
        "            reshape(sum(h * h, axis = 1), [B, 1]) / 4\n"
        "    }\n"
        "}\n"
        "dataset ds = idx(\"fashion-mnist\")\n"
        "train M() {\n"
        "    data = ds.train\n"
        "    loss = cross_entropy(forward(x), y) + 0.1 * mse(x @ w2, one_hot(y, 2)) +\n"
        "        0.01 * sum(v ** 2)\n"
        "    optimizer = sgd(lr = 1.0)\n"
        "}\n";
    fx f;
    if (!fx_load(&f, src)) {
        CHECK(!"load");
        fx_free(&f);
        return;
    }
    dtl_lowered low;
    dtl_lower_opts o = {.batch = 2, .compute = DTL_DTYPE_F64};
    if (!dtl_lower_train(&f.ctx, dtl_lower_find_train(f.m, NULL), &o, &low)) {
        dump_diags(&f);
        CHECK(!"lower");
        fx_free(&f);
        return;
    }
    const double x[] = {0.1, -1.2, 0.7, 2.0, -0.4, 0.3, 1.1, -0.9};
    dtl_binding in[3] = {
        {"x", x, DTL_DTYPE_F64, 2, {2, 4}},
        {"y", Y2, DTL_DTYPE_I64, 1, {2}},
        {"step", (const int64_t[]){1}, DTL_DTYPE_I64, 0, {0}},
    };
    dtl_err err = {0};
    dtl_store *st = dtl_store_new(5);
    dtl_plan *ev = dtl_plan_new(&dtl_backend_ref, &low.eval, st, NULL, &err);
    dtl_plan *sp = ev ? dtl_plan_new(&dtl_backend_ref, &low.step, st, NULL, &err) : NULL;
    CHECK(sp != NULL);
    if (!sp)
        fprintf(stderr, "plan: %s\n", err.msg);
    /* The params' values before the step, and the loss at perturbed points. */
    enum { MAXP = 64 };
    double before[8][MAXP], fd[8][MAXP];
    size_t np = 0;
    for (size_t i = 0; sp && i < dtl_store_count(st) && np < 8; i++) {
        dtl_store_entry *en = dtl_store_at(st, i);
        if (en->is_state)
            continue;
        double *p = en->t.data;
        uint64_t n = dtl_tensor_numel(&en->t);
        for (uint64_t k = 0; k < n && k < MAXP; k++) {
            double keep = p[k], lp, lm;
            dtl_tensor t;
            const double eps = 1e-6;
            p[k] = keep + eps;
            bool ok = dtl_plan_run(ev, in, 3, &err) && dtl_plan_output(ev, "loss", &t, &err);
            lp = ok ? *(double *)t.data : NAN;
            p[k] = keep - eps;
            ok = ok && dtl_plan_run(ev, in, 3, &err) && dtl_plan_output(ev, "loss", &t, &err);
            lm = ok ? *(double *)t.data : NAN;
            p[k] = keep;
            before[np][k] = keep;
            fd[np][k] = (lp - lm) / (2 * eps);
        }
        np++;
    }
    CHECK(np == 6);   /* ln.g ln.b fc.w fc.b w2 v */
    bool ran = sp && dtl_plan_run(sp, in, 3, &err);
    CHECK(ran);
    size_t j = 0, checked = 0;
    double worst = 0;
    for (size_t i = 0; ran && i < dtl_store_count(st) && j < np; i++) {
        dtl_store_entry *en = dtl_store_at(st, i);
        if (en->is_state)
            continue;
        const double *p = en->t.data;
        uint64_t n = dtl_tensor_numel(&en->t);
        for (uint64_t k = 0; k < n && k < MAXP; k++) {
            double g = before[j][k] - p[k];   /* lr = 1 */
            double e = fabs(g - fd[j][k]) / (1e-4 + fabs(fd[j][k]));
            if (e > worst)
                worst = e;
            if (e > 1e-5)
                fprintf(stderr, "gradcheck: %s[%llu]: autodiff %.9g, differences %.9g\n",
                        en->name, (unsigned long long)k, g, fd[j][k]);
            checked++;
        }
        j++;
    }
    CHECK(checked == 40 && worst <= 1e-5);
    if (getenv("DTL_TEST_SHOW"))
        fprintf(stderr, "gradcheck: %zu elements, worst relative error %.3g\n", checked, worst);
    dtl_plan_free(sp);
    dtl_plan_free(ev);
    dtl_store_free(st);
    dtl_lowered_free(&low);
    fx_free(&f);
}

/* Out of memory inside lowering (its own arenas fail at their n-th block) is an error, not a
 * crash, and leaves nothing allocated. */
static void test_out_of_memory(void)
{
    fx f;
    char *src = program("model M() { fn forward(x: f32[B, 4]) -> f32[B, 4] = x * 2 }",
                        "mean(forward(x))");
    bool loaded = fx_load(&f, src);
    free(src);
    if (!loaded) {
        CHECK(!"load");
        fx_free(&f);
        return;
    }
    const dtl_train *t = dtl_lower_find_train(f.m, "t");
    unsigned failed = 0;
    for (int n = 1; n <= 3; n++) {
        char v[8];
        snprintf(v, sizeof v, "%d", n);
        setenv("DTL_FAIL_ALLOC", v, 1);   /* read by arenas made from now on */
        dtl_graph g;
        bool ok = dtl_lower_graph(&f.ctx, t, DTL_LOWER_STEP, NULL, &g);
        unsetenv("DTL_FAIL_ALLOC");
        if (ok)
            dtl_graph_free(&g);
        else
            failed++;
        CHECK(ok == (f.ctx.diags.nerrors == 0));
        f.ctx.diags.nerrors = 0;   /* let the next try lower */
    }
    CHECK(failed >= 1);
    char *text = diag_text(&f);
    CHECK(text && strstr(text, "dtlc: error: out of memory"));
    free(text);
    fx_free(&f);
}

/* ---- errors at concrete sizes ---- */

static void test_errors(void)
{
    check_error(__LINE__, "model M() { fn forward(x: f32[B, 4]) = reshape(x, [5, -1]) }",
                "mean(forward(x))", DTL_LOWER_STEP, 3,
                "reshape: f32[3, 4] has 12 elements, not a multiple of 5 (the other new "
                "dimensions) here");
    check_error(__LINE__, "model M(i: int = 7) { fn forward(x: f32[B, 4]) -> f32[B] = "
                "x[:, i] }", "mean(forward(x))", DTL_LOWER_INFER, 0,
                "test.dtl:2:65: error: index 7 is out of range for dimension 1 of x (size 4) "
                "here");
    check_error(__LINE__, "model M(p: float = 1.5) { fn forward(x: f32[B, 4]) -> f32[B, 4] = "
                "dropout(x, p) }", "mean(forward(x))", DTL_LOWER_STEP, 0,
                "dropout: 'p' must be in [0, 1), found 1.5 here");
    check_error(__LINE__, "model M() {\n    param k: i64[4] = zeros()\n"
                "    fn forward(x: f32[B, 4]) -> f32[B, 4] = x * cast(k, f32) }",
                "mean(forward(x))", DTL_LOWER_STEP, 0,
                "param 'k' is i64[4]: params must have a float dtype");
    check_error(__LINE__, "model M(n: int = 5) { fn forward(x: f32[B, 4]) -> f32[B, n] = "
                "x[:, 0:n] }", "mean(forward(x))", DTL_LOWER_INFER, 0,
                "x[:, 0:n] is f32[2, 4] here, but its type f32[B, n] is f32[2, 5] at these "
                "sizes");
    check_error(__LINE__, "model M(s: float = -1.0) {\n    param w: f32[4] = normal(std = s)\n"
                "    fn forward(x: f32[B, 4]) -> f32[B, 4] = x * w }",
                "mean(forward(x))", DTL_LOWER_INFER, 0, "normal: 'std' must be > 0, found -1");
    check_error(__LINE__, "model M() { fn forward(x: f32[B, 4]) -> i64[B, 4] = "
                "cast(x, i64) @ cast(transpose(x) @ x, i64) }", "mean(cast(forward(x), f32))",
                DTL_LOWER_INFER, 0, "matmul of i64[2, 4] and i64[4, 4] is not supported");
    check_error(__LINE__, "model M() { fn forward(x: f32[B, 4]) -> f32[B, 4] = x }",
                "mean(forward(x))", DTL_LOWER_STEP, (int64_t)1 << 50, "x is too large");

    /* No train block; a train block that was not checked cleanly. */
    fx f;
    if (fx_load(&f, "let a = 1\n"))
        CHECK(dtl_lower_find_train(f.m, NULL) == NULL);
    fx_free(&f);
}

/* ---- schedules and clipping ---- */

/* Lowers a train block of a scaled linear model (w: f32[4], ones; loss 1000 mean(x * w): a
 * large gradient) with the given extra settings, runs `steps` updates with the INPUT
 * "total_steps" = total, and checks each update's "lr" output against want[t - 1] (within
 * 1e-12) and against dtl_opt_lr_at (exactly: the same operations in the same order).
 * dw_norm (when not NULL): the norm of the first update's change of w. */
static void check_schedule(int line, const char *settings, int64_t total, int steps,
                           const double *want, double *dw_norm)
{
    char src[1024];
    snprintf(src, sizeof src,
             "model M {\n"
             "    param w: f32[4] = ones()\n"
             "    fn forward(x: f32[B, 4]) -> f32[B, 4] = x * w\n"
             "}\n"
             "dataset ds = idx(\"fashion-mnist\")\n"
             "train M() {\n"
             "    data = ds.train\n"
             "    batch = 2\n"
             "    loss = 1000.0 * mean(forward(x))\n"
             "    optimizer = sgd(lr = 0.1)\n"
             "%s"
             "}\n", settings);
    fx f;
    dtl_lowered low;
    dtl_lower_opts o = {0};
    if (!fx_load(&f, src) || !dtl_lower_train(&f.ctx, dtl_lower_find_train(f.m, NULL), &o, &low)) {
        fprintf(stderr, "line %d: lowering failed\n", line);
        dump_diags(&f);
        CHECK(!"lower");
        fx_free(&f);
        return;
    }
    dtl_opt_cfg cfg = low.optim;
    if (cfg.sched.kind == DTL_SCHED_COSINE && cfg.sched.total_from_run) {
        CHECK(find_named(&low.step, DTL_OP_INPUT, "total_steps") != NULL);
        cfg.sched.total = dtl_sched_run_total(&cfg.sched, total);
    } else {
        CHECK(find_named(&low.step, DTL_OP_INPUT, "total_steps") == NULL);
    }
    dtl_err err = {0};
    dtl_store *st = dtl_store_new(1);
    dtl_plan *sp = dtl_plan_new(&dtl_backend_ref, &low.step, st, NULL, &err);
    CHECK(sp != NULL);
    dtl_store_entry *w = st ? dtl_store_find(st, "w") : NULL;
    float before[4] = {0};
    if (w)
        memcpy(before, w->t.data, sizeof before);
    for (int64_t t = 1; sp && t <= steps; t++) {
        dtl_binding in[4] = {
            {"x", X24, DTL_DTYPE_F32, 2, {2, 4}},
            {"y", Y2, DTL_DTYPE_I64, 1, {2}},
            {"step", &t, DTL_DTYPE_I64, 0, {0}},
            {"total_steps", &total, DTL_DTYPE_I64, 0, {0}},
        };
        dtl_tensor lr;
        if (!dtl_plan_run(sp, in, 4, &err) || !dtl_plan_output(sp, "lr", &lr, &err)) {
            fprintf(stderr, "line %d: running failed: %s\n", line, err.msg);
            CHECK(!"run");
            break;
        }
        double got = elem(&lr, 0), c = dtl_opt_lr_at(&cfg, t);
        if (fabs(got - want[t - 1]) > 1e-12 || got != c)
            fprintf(stderr, "line %d: update %lld: lr %.17g, want %.17g, dtl_opt_lr_at %.17g\n",
                    line, (long long)t, got, want[t - 1], c);
        CHECK(fabs(got - want[t - 1]) <= 1e-12);
        CHECK(got == c);
        if (t == 1 && dw_norm && w) {
            double s = 0;
            for (int k = 0; k < 4; k++) {
                double d = (double)before[k] - ((const float *)w->t.data)[k];
                s += d * d;
            }
            *dw_norm = sqrt(s);
        }
    }
    dtl_plan_free(sp);
    dtl_store_free(st);
    dtl_lowered_free(&low);
    fx_free(&f);
}

static void test_schedules(void)
{
    const double pi = 3.14159265358979323846;
    /* The default: constant. */
    check_schedule(__LINE__, "", 10, 3, (const double[]){0.1, 0.1, 0.1}, NULL);
    check_schedule(__LINE__, "    schedule = constant()\n    warmup = 4\n", 10, 6,
                   (const double[]){0.025, 0.05, 0.075, 0.1, 0.1, 0.1}, NULL);
    /* step(2, 0.5) after one update of warmup: e = t - 2. */
    check_schedule(__LINE__, "    schedule = step(every = 2, gamma = 0.5)\n    warmup = 1\n",
                   10, 6, (const double[]){0.1, 0.1, 0.1, 0.05, 0.05, 0.025}, NULL);
    /* cosine over 2 updates, then held at the floor. */
    check_schedule(__LINE__, "    schedule = cosine(steps = 2)\n", 10, 4,
                   (const double[]){0.1, 0.05, 0, 0}, NULL);
    /* cosine over the run (total_steps 6) less 2 updates of warmup: over 4 updates. */
    double c1 = 0.01 + 0.09 * (1 + cos(pi / 4)) / 2, c3 = 0.01 + 0.09 * (1 + cos(3 * pi / 4)) / 2;
    check_schedule(__LINE__, "    schedule = cosine(floor = 0.01)\n    warmup = 2\n", 6, 8,
                   (const double[]){0.05, 0.1, 0.1, c1, 0.055, c3, 0.01, 0.01}, NULL);
    /* The same graph in a longer run: the total is an input, not a constant. */
    double d1 = 0.01 + 0.09 * (1 + cos(pi / 8)) / 2;
    check_schedule(__LINE__, "    schedule = cosine(floor = 0.01)\n    warmup = 2\n", 10, 4,
                   (const double[]){0.05, 0.1, 0.1, d1}, NULL);
    /* clip: the gradient is 1000 [4, 6, 8, 10] / 8 (norm ~1837), so plain SGD moves w by
     * ~184; clipped to norm 0.5, by lr 0.5 = 0.05. */
    double free_norm = 0, clipped = 0;
    check_schedule(__LINE__, "", 1, 1, (const double[]){0.1}, &free_norm);
    check_schedule(__LINE__, "    clip = 0.5\n", 1, 1, (const double[]){0.1}, &clipped);
    double g = 1000.0 / 8 * sqrt(16 + 36 + 64 + 100);
    CHECK(fabs(free_norm - 0.1 * g) <= 1e-5 * 0.1 * g);
    CHECK(clipped <= 0.05 * (1 + 1e-5) && clipped >= 0.05 * (1 - 1e-5));
}

int main(void)
{
    test_mnist();
    test_indexing();
    test_shapes();
    test_elementwise();
    test_reductions();
    test_matmul();
    test_one_hot_literals_lets();
    test_losses_and_eval();
    test_dropout_and_structure();
    test_batch_norm_states();
    test_forward_optional();
    test_gradcheck_model();
    test_out_of_memory();
    test_errors();
    test_schedules();
    CHECK_DONE();
}
