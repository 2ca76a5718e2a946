/* tests/unit/test_lower_split.c — the GRAD and UPDATE graphs of data-parallel training
 * (compiler/lower.h): their interface (output and input names, order, no batch in UPDATE),
 * and on the reference backend, with dropout, Adam, clipping and a cosine schedule over the
 * run (total_steps): three steps of GRAD then UPDATE compute what three STEPs compute, and so
 * do two GRAD shards (shard_world 2, half the batch each) whose gradients are averaged by
 * hand, as two ranks average them. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../compiler/lower.h"
#include "../../lang/check.h"
#include "../../runtime/exec.h"
#include "unit.h"

static const char *src =
    "model Dense(in: int, out: int) {\n"
    "    param w: f32[in, out] = glorot_uniform()\n"
    "    param b: f32[out]     = zeros()\n"
    "    fn forward(x: f32[B, in]) -> f32[B, out] = x @ w + b\n"
    "}\n"
    "model Net() {\n"
    "    fc1 = Dense(6, 5)\n"
    "    fc2 = Dense(5, 3)\n"
    "    fn forward(x: f32[B, 6]) -> f32[B, 3] = fc2(dropout(relu(fc1(x)), 0.4))\n"
    "}\n"
    "dataset d = csv(\"t.csv\", label = \"label\")\n"
    "train Net() {\n"
    "    data      = d.train\n"
    "    batch     = 8\n"
    "    loss      = cross_entropy(forward(x), y)\n"
    "    optimizer = adam(lr = 0.05)\n"
    "    schedule  = cosine()\n"
    "    warmup    = 1\n"
    "    clip      = 0.5\n"
    "}\n";

enum { B = 8, F = 6, STEPS = 3 };

static bool lower(dtl_ctx *ctx, const dtl_train *t, dtl_lower_kind k, int64_t batch, int rank,
                  int world, dtl_graph *g)
{
    dtl_lower_opts o = {.batch = batch, .shard_rank = rank, .shard_world = world};
    if (dtl_lower_graph(ctx, t, k, &o, g))
        return true;
    dtl_diag_print(&ctx->diags, stderr, false);
    return false;
}

static bool has_input(const dtl_graph *g, const char *name)
{
    for (uint32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == DTL_OP_INPUT && strcmp(g->nodes[i].name, name) == 0)
            return true;
    return false;
}

/* Largest relative difference between the entries of two stores (same names). */
static double store_diff(dtl_store *a, dtl_store *b)
{
    double worst = 0;
    for (size_t i = 0; i < dtl_store_count(a); i++) {
        const dtl_store_entry *ea = dtl_store_at(a, i), *eb = dtl_store_find(b, ea->name);
        if (!eb)
            return INFINITY;
        uint64_t n = dtl_tensor_numel(&ea->t);
        double d = 0, s = 0;
        for (uint64_t k = 0; k < n; k++) {
            double x = ((const float *)ea->t.data)[k], y = ((const float *)eb->t.data)[k];
            d = fabs(x - y) > d ? fabs(x - y) : d;
            s = fabs(y) > s ? fabs(y) : s;
        }
        double r = s > 0 ? d / s : d;
        worst = r > worst ? r : worst;
    }
    return worst;
}

static bool run(dtl_plan *p, const float *x, const int64_t *y, int64_t rows, int64_t *step,
                int64_t *total, dtl_err *err)
{
    dtl_binding in[4] = {{"x", x, DTL_DTYPE_F32, 2, {rows, F}},
                         {"y", y, DTL_DTYPE_I64, 1, {rows}},
                         {"step", step, DTL_DTYPE_I64, 0, {0}},
                         {"total_steps", total, DTL_DTYPE_I64, 0, {0}}};
    if (dtl_plan_run(p, in, 4, err))
        return true;
    fprintf(stderr, "run: %s\n", err->msg);
    return false;
}

/* UPDATE on gradients g[k] (those of GRAD's outputs k, by name). */
static bool update(dtl_plan *up, const dtl_graph *gg, float *const *g, int64_t *step,
                   int64_t *total, dtl_err *err)
{
    dtl_binding in[16];
    size_t n = 0;
    for (uint32_t k = 0; k < gg->nouts && n < 14; k++) {
        const dtl_node *v = &gg->nodes[gg->outs[k].val];
        if (gg->outs[k].kind == DTL_OUT_LOSS)
            continue;
        in[n] = (dtl_binding){gg->outs[k].name, g[k], v->dtype, v->rank, {0}};
        memcpy(in[n].shape, v->shape, sizeof in[n].shape);
        n++;
    }
    in[n++] = (dtl_binding){"step", step, DTL_DTYPE_I64, 0, {0}};
    in[n++] = (dtl_binding){"total_steps", total, DTL_DTYPE_I64, 0, {0}};
    if (dtl_plan_run(up, in, n, err))
        return true;
    fprintf(stderr, "update: %s\n", err->msg);
    return false;
}

/* Output k of plan p (graph g) copied into out[k] (allocated), scaled by w and added. */
static void accumulate(dtl_plan *p, const dtl_graph *g, float **out, float w)
{
    dtl_err err = {0};
    for (uint32_t k = 0; k < g->nouts; k++) {
        dtl_tensor t;
        CHECK(dtl_plan_output(p, g->outs[k].name, &t, &err));
        uint64_t n = dtl_tensor_numel(&t);
        if (!out[k])
            out[k] = calloc(n ? n : 1, sizeof(float));
        for (uint64_t i = 0; i < n; i++)
            out[k][i] += w * ((const float *)t.data)[i];
    }
}

int main(void)
{
    dtl_ctx ctx;
    dtl_ctx_init(&ctx);
    const dtl_source *s = dtl_src_add(&ctx.sources, "split.dtl", src, strlen(src));
    dtl_module *m = dtl_check_source(&ctx, s);
    if (!m || dtl_diag_failed(&ctx.diags)) {
        dtl_diag_print(&ctx.diags, stderr, false);
        return 1;
    }
    const dtl_train *t = dtl_lower_find_train(m, NULL);
    dtl_graph step, grad, upd, half[2];
    CHECK(lower(&ctx, t, DTL_LOWER_STEP, B, 0, 1, &step));
    CHECK(lower(&ctx, t, DTL_LOWER_GRAD, B, 0, 1, &grad));
    CHECK(lower(&ctx, t, DTL_LOWER_UPDATE, B, 0, 1, &upd));
    CHECK(lower(&ctx, t, DTL_LOWER_GRAD, B / 2, 0, 2, &half[0]));
    CHECK(lower(&ctx, t, DTL_LOWER_GRAD, B / 2, 1, 2, &half[1]));
    if (check_failures)
        CHECK_DONE();

    /* The interface. */
    const char *want[] = {"loss", "grad.fc2.b", "grad.fc2.w", "grad.fc1.b", "grad.fc1.w"};
    CHECK(grad.nouts == 5);
    for (uint32_t k = 0; k < grad.nouts && k < 5; k++)
        CHECK_STR(grad.outs[k].name, want[k]);
    CHECK(grad.outs[0].kind == DTL_OUT_LOSS);
    CHECK(!has_input(&upd, "x") && !has_input(&upd, "y") && has_input(&upd, "grad.fc1.w") &&
          has_input(&upd, "step") && has_input(&upd, "total_steps"));
    for (uint32_t k = 0; k < upd.nouts; k++)
        CHECK(upd.outs[k].kind != DTL_OUT_LOSS);

    /* The same numbers. */
    dtl_err err = {0};
    dtl_store *s1 = dtl_store_new(7), *s2 = dtl_store_new(7), *s3 = dtl_store_new(7);
    dtl_plan *p_step = dtl_plan_new(&dtl_backend_ref, &step, s1, NULL, &err);
    dtl_plan *p_grad = dtl_plan_new(&dtl_backend_ref, &grad, s2, NULL, &err);
    dtl_plan *p_upd2 = dtl_plan_new(&dtl_backend_ref, &upd, s2, NULL, &err);
    dtl_plan *p_half0 = dtl_plan_new(&dtl_backend_ref, &half[0], s3, NULL, &err);
    dtl_plan *p_half1 = dtl_plan_new(&dtl_backend_ref, &half[1], s3, NULL, &err);
    dtl_plan *p_upd3 = dtl_plan_new(&dtl_backend_ref, &upd, s3, NULL, &err);
    CHECK(p_step && p_grad && p_upd2 && p_half0 && p_half1 && p_upd3);
    if (!p_step || !p_grad || !p_upd2 || !p_half0 || !p_half1 || !p_upd3) {
        fprintf(stderr, "plan: %s\n", err.msg);
        CHECK_DONE();
    }
    CHECK(store_diff(s1, s2) == 0 && store_diff(s1, s3) == 0);   /* the same initial values */
    float x[B * F];
    int64_t y[B], total = 10;
    for (int step_i = 1; step_i <= STEPS; step_i++) {
        for (int i = 0; i < B * F; i++)
            x[i] = (float)sin(0.7 * i + step_i);
        for (int i = 0; i < B; i++)
            y[i] = (i * 7 + step_i) % 3;
        int64_t sn = step_i;
        CHECK(run(p_step, x, y, B, &sn, &total, &err));
        float *g2[8] = {0}, *g3[8] = {0};
        CHECK(run(p_grad, x, y, B, &sn, &total, &err));
        accumulate(p_grad, &grad, g2, 1.0f);
        CHECK(update(p_upd2, &grad, g2, &sn, &total, &err));
        CHECK(run(p_half0, x, y, B / 2, &sn, &total, &err));
        accumulate(p_half0, &half[0], g3, 0.5f);
        CHECK(run(p_half1, x + B / 2 * F, y + B / 2, B / 2, &sn, &total, &err));
        accumulate(p_half1, &half[1], g3, 0.5f);
        CHECK(update(p_upd3, &half[0], g3, &sn, &total, &err));
        for (int k = 0; k < 8; k++) {
            free(g2[k]);
            free(g3[k]);
        }
    }
    double d2 = store_diff(s1, s2), d3 = store_diff(s1, s3);
    printf("GRAD + UPDATE vs STEP: %.3g; two shards vs STEP: %.3g\n", d2, d3);
    CHECK(d2 <= 1e-6);
    CHECK(d3 <= 1e-5);
    dtl_plan_free(p_step);
    dtl_plan_free(p_grad);
    dtl_plan_free(p_upd2);
    dtl_plan_free(p_half0);
    dtl_plan_free(p_half1);
    dtl_plan_free(p_upd3);
    dtl_store_free(s1);
    dtl_store_free(s2);
    dtl_store_free(s3);
    dtl_graph_free(&step);
    dtl_graph_free(&grad);
    dtl_graph_free(&upd);
    dtl_graph_free(&half[0]);
    dtl_graph_free(&half[1]);
    dtl_ctx_free(&ctx);
    CHECK_DONE();
}
