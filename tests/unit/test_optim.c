/* tests/unit/test_optim.c — optimizer updates built by compiler/optim.c, run for a few steps
 * by the executor (runtime/exec.h, reference backend), against values computed here.
 *
 * The expected values come from two places: a few literals worked out by hand (the first
 * steps of SGD, momentum, Nesterov and Adam, the schedules' learning rates), and a plain C
 * transcription of PyTorch 1.13's update formulas run side by side with the graph for three
 * steps of every optimizer, schedule and clipping configuration, in f64 (agreement to 1e-12)
 * and f32 (to 1e-5). Gradients are fed as inputs, so the optimizer is tested on its own; one
 * case differentiates a real loss with autodiff first.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../compiler/autodiff.h"
#include "../../compiler/graph.h"
#include "../../compiler/nnops.h"
#include "../../compiler/optim.h"
#include "../../runtime/exec.h"
#include "unit.h"

#define S(...) ((const int64_t[]){__VA_ARGS__})

static bool close_to(double got, double want, double tol)
{
    return fabs(got - want) <= tol * fmax(1.0, fabs(want));
}

#define CHECK_CLOSE(got, want, tol)                                                     \
    do {                                                                                \
        double g_ = (got), w_ = (want);                                                 \
        if (!close_to(g_, w_, (tol)))                                                   \
            fprintf(stderr, "%s:%d: got %.17g, want %.17g\n", __FILE__, __LINE__, g_, w_); \
        CHECK(close_to(g_, w_, (tol)));                                                 \
    } while (0)

static double get(const dtl_tensor *t, uint64_t i)
{
    return t->dtype == DTL_DTYPE_F32 ? ((const float *)t->data)[i] : ((const double *)t->data)[i];
}

/* ---- the reference: PyTorch 1.13's formulas, in double ------------------------------------ */

#define NW 6   /* w: [2, 3] */
#define NB 3   /* b: [3] */
#define NE (NW + NB)

typedef struct ref_state {
    double p[NE], m[NE], v[NE];
} ref_state;

static void ref_step(const dtl_opt_cfg *c, int64_t t, ref_state *s, const double *grad)
{
    double g[NE], lr = dtl_opt_lr_at(c, t);
    memcpy(g, grad, sizeof g);
    if (c->clip_norm > 0) {
        double sq = 0;
        for (int i = 0; i < NE; i++)
            sq += g[i] * g[i];
        double coef = fmin(1.0, c->clip_norm / (sqrt(sq) + 1e-6));
        for (int i = 0; i < NE; i++)
            g[i] *= coef;
    }
    for (int i = 0; i < NE; i++) {
        double d = g[i];
        if (c->kind == DTL_OPT_SGD) {
            d += c->weight_decay * s->p[i];
            if (c->momentum != 0) {
                s->m[i] = t == 1 ? d : c->momentum * s->m[i] + (1 - c->dampening) * d;
                d = c->nesterov ? d + c->momentum * s->m[i] : s->m[i];
            }
            s->p[i] -= lr * d;
        } else {
            if (c->kind == DTL_OPT_ADAMW)
                s->p[i] *= 1 - lr * c->weight_decay;
            else
                d += c->weight_decay * s->p[i];
            s->m[i] = c->beta1 * s->m[i] + (1 - c->beta1) * d;
            s->v[i] = c->beta2 * s->v[i] + (1 - c->beta2) * d * d;
            double bc1 = 1 - pow(c->beta1, (double)t), bc2 = 1 - pow(c->beta2, (double)t);
            double denom = sqrt(s->v[i]) / sqrt(bc2) + c->eps;
            s->p[i] -= lr / bc1 * s->m[i] / denom;
        }
    }
}

static const double w0[NW] = {0.5, -1.0, 0.25, 2.0, -0.75, 0.1};
static const double b0[NB] = {0.0, 0.3, -0.2};

static double grad_at(int64_t t, int i)
{
    return 0.8 * sin(1.3 * (double)t + 0.7 * i) + (i % 2 ? 0.3 : -0.1);
}

/* ---- running the graph -------------------------------------------------------------------- */

typedef struct ocase {
    dtl_graph g;
    dtl_store *store;
    dtl_plan *plan;
    dtl_dtype dt;
    dtl_val params[2], grads[2];
    dtl_opt_info info;
} ocase;

/* Builds params w [2, 3] and b [3] of dtype dt with gradients as inputs, and the optimizer. */
static bool ocase_init(ocase *c, const dtl_opt_cfg *cfg, dtl_dtype dt)
{
    memset(c, 0, sizeof *c);
    c->dt = dt;
    dtl_graph_init(&c->g);
    double wd[NW], bd[NB];   /* f64 storage; converted for f32 */
    float wf[NW], bf[NB];
    for (int i = 0; i < NW; i++)
        wd[i] = w0[i], wf[i] = (float)w0[i];
    for (int i = 0; i < NB; i++)
        bd[i] = b0[i], bf[i] = (float)b0[i];
    bool f32 = dt == DTL_DTYPE_F32;
    dtl_init iw = {DTL_INIT_DATA, 0, 0, f32 ? (const void *)wf : (const void *)wd};
    dtl_init ib = {DTL_INIT_DATA, 0, 0, f32 ? (const void *)bf : (const void *)bd};
    c->params[0] = dtl_g_param(&c->g, "w", dt, 2, S(2, 3), iw);
    c->params[1] = dtl_g_param(&c->g, "b", dt, 1, S(3), ib);
    c->grads[0] = dtl_g_input(&c->g, "grad.w", dt, 2, S(2, 3));
    c->grads[1] = dtl_g_input(&c->g, "grad.b", dt, 1, S(3));
    dtl_err err = {0};
    if (!dtl_opt_build(&c->g, cfg, c->params, c->grads, 2, &c->info, &err)) {
        fprintf(stderr, "dtl_opt_build: %s\n", err.msg);
        return false;
    }
    dtl_g_output(&c->g, DTL_OUT_VALUE, "lr", c->info.lr, DTL_VAL_NONE);
    if (c->info.grad_norm != DTL_VAL_NONE)
        dtl_g_output(&c->g, DTL_OUT_VALUE, "norm", c->info.grad_norm, DTL_VAL_NONE);
    c->store = dtl_store_new(7);
    c->plan = c->store ? dtl_plan_new(&dtl_backend_ref, &c->g, c->store, NULL, &err) : NULL;
    if (!c->plan) {
        fprintf(stderr, "dtl_plan_new: %s\n", err.msg);
        return false;
    }
    return true;
}

static void ocase_free(ocase *c)
{
    dtl_plan_free(c->plan);
    dtl_store_free(c->store);
    dtl_graph_free(&c->g);
}

/* One run with step t and gradients grad[NE] (w's then b's). */
static bool ocase_run(ocase *c, int64_t t, const double *grad)
{
    double gd[NE];
    float gf[NE];
    for (int i = 0; i < NE; i++)
        gd[i] = grad[i], gf[i] = (float)grad[i];
    bool f32 = c->dt == DTL_DTYPE_F32;
    const void *gw = f32 ? (const void *)gf : (const void *)gd;
    const void *gb = f32 ? (const void *)(gf + NW) : (const void *)(gd + NW);
    const dtl_node *step = &c->g.nodes[dtl_nn_step(&c->g)];
    double t64 = (double)t;
    dtl_binding in[3] = {
        {"grad.w", gw, c->dt, 2, {2, 3}},
        {"grad.b", gb, c->dt, 1, {3}},
        {"step", step->dtype == DTL_DTYPE_I64 ? (const void *)&t : (const void *)&t64,
         step->dtype, 0, {0}},
    };
    dtl_err err = {0};
    if (!dtl_plan_run(c->plan, in, 3, &err)) {
        fprintf(stderr, "dtl_plan_run: %s\n", err.msg);
        return false;
    }
    return true;
}

/* The store's value of name[i] as a double; NAN when absent. */
static double entry(ocase *c, const char *name, uint64_t i)
{
    dtl_store_entry *e = dtl_store_find(c->store, name);
    return e ? get(&e->t, i) : NAN;
}

static double output(ocase *c, const char *name)
{
    dtl_tensor t;
    dtl_err err = {0};
    if (!dtl_plan_output(c->plan, name, &t, &err)) {
        fprintf(stderr, "dtl_plan_output: %s\n", err.msg);
        return NAN;
    }
    return get(&t, 0);
}

/* Runs cfg for `steps` steps in dtype dt and compares everything with the reference. */
static void run_vs_ref(const char *label, const dtl_opt_cfg *cfg, dtl_dtype dt, int steps)
{
    double tol = dt == DTL_DTYPE_F32 ? 1e-5 : 1e-12;
    ocase c;
    bool ok = ocase_init(&c, cfg, dt);
    CHECK(ok);
    if (!ok) {
        fprintf(stderr, "%s: setup failed\n", label);
        ocase_free(&c);
        return;
    }
    ref_state s;
    memset(&s, 0, sizeof s);
    memcpy(s.p, w0, sizeof w0);
    memcpy(s.p + NW, b0, sizeof b0);
    bool has_m = cfg->kind != DTL_OPT_SGD || cfg->momentum != 0;
    bool has_v = cfg->kind != DTL_OPT_SGD;
    int before = check_failures;
    for (int64_t t = 1; t <= steps; t++) {
        double grad[NE];
        for (int i = 0; i < NE; i++)
            grad[i] = grad_at(t, i);
        CHECK(ocase_run(&c, t, grad));
        ref_step(cfg, t, &s, grad);
        CHECK_CLOSE(output(&c, "lr"), dtl_opt_lr_at(cfg, t), 1e-15);
        for (int i = 0; i < NE; i++) {
            bool isw = i < NW;
            int k = isw ? i : i - NW;
            CHECK_CLOSE(entry(&c, isw ? "w" : "b", k), s.p[i], tol);
            if (has_m)
                CHECK_CLOSE(entry(&c, isw ? "w.m" : "b.m", k), s.m[i], tol);
            if (has_v)
                CHECK_CLOSE(entry(&c, isw ? "w.v" : "b.v", k), s.v[i], tol);
        }
    }
    CHECK(has_m == (dtl_store_find(c.store, "w.m") != NULL));
    CHECK(has_v == (dtl_store_find(c.store, "b.v") != NULL));
    if (check_failures != before)
        fprintf(stderr, "%s (%s): differs from the reference\n", label, dtl_dtype_name(dt));
    ocase_free(&c);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_vs_reference(void)
{
    dtl_opt_cfg c;
    for (int d = 0; d < 2; d++) {
        dtl_dtype dt = d ? DTL_DTYPE_F32 : DTL_DTYPE_F64;

        dtl_opt_defaults(&c, DTL_OPT_SGD);
        c.lr = 0.1;
        run_vs_ref("sgd", &c, dt, 3);
        c.weight_decay = 0.05;
        run_vs_ref("sgd l2", &c, dt, 3);
        c.momentum = 0.9;
        run_vs_ref("sgd momentum", &c, dt, 3);
        c.dampening = 0.3;
        run_vs_ref("sgd momentum dampening", &c, dt, 3);
        c.dampening = 0;
        c.nesterov = true;
        run_vs_ref("sgd nesterov", &c, dt, 3);

        dtl_opt_defaults(&c, DTL_OPT_ADAM);
        c.lr = 0.01;
        run_vs_ref("adam", &c, dt, 3);
        c.weight_decay = 0.1;
        c.beta1 = 0.8;
        c.beta2 = 0.95;
        c.eps = 1e-6;
        run_vs_ref("adam l2 betas", &c, dt, 3);

        dtl_opt_defaults(&c, DTL_OPT_ADAMW);
        c.lr = 0.01;
        run_vs_ref("adamw", &c, dt, 3);
        c.weight_decay = 0.5;
        run_vs_ref("adamw wd 0.5", &c, dt, 3);
        c.weight_decay = 0;
        run_vs_ref("adamw wd 0", &c, dt, 3);

        /* schedules (over 5 steps) */
        dtl_opt_defaults(&c, DTL_OPT_SGD);
        c.lr = 0.2;
        c.sched.kind = DTL_SCHED_STEP;
        c.sched.step_size = 2;
        c.sched.gamma = 0.5;
        run_vs_ref("sgd step decay", &c, dt, 5);
        c.sched.warmup = 2;
        run_vs_ref("sgd warmup + step decay", &c, dt, 5);
        dtl_opt_defaults(&c, DTL_OPT_ADAM);
        c.lr = 0.05;
        c.sched.kind = DTL_SCHED_COSINE;
        c.sched.total = 3;
        c.sched.floor = 0.001;
        run_vs_ref("adam cosine", &c, dt, 5);
        c.sched.warmup = 1;
        run_vs_ref("adam warmup + cosine", &c, dt, 5);
        dtl_opt_defaults(&c, DTL_OPT_SGD);
        c.sched.warmup = 3;
        run_vs_ref("sgd warmup + constant", &c, dt, 5);

        /* clipping: the gradients' norm is about 1.9; 0.5 clips, 100 does not */
        dtl_opt_defaults(&c, DTL_OPT_SGD);
        c.lr = 0.1;
        c.clip_norm = 0.5;
        run_vs_ref("sgd clip 0.5", &c, dt, 3);
        c.clip_norm = 100;
        run_vs_ref("sgd clip 100", &c, dt, 3);
        dtl_opt_defaults(&c, DTL_OPT_ADAMW);
        c.clip_norm = 0.5;
        c.weight_decay = 0.1;
        run_vs_ref("adamw clip", &c, dt, 3);
    }
}

/* First steps worked out by hand: one param p = 1 with gradient 0.5 at every step. */
static double one_param(const dtl_opt_cfg *cfg, int steps, double *m_out)
{
    dtl_graph g;
    dtl_graph_init(&g);
    static const double one = 1.0, half = 0.5;
    dtl_init init = {DTL_INIT_DATA, 0, 0, &one};
    dtl_val p = dtl_g_param(&g, "p", DTL_DTYPE_F64, 0, NULL, init);
    dtl_val gr = dtl_g_scalar(&g, DTL_DTYPE_F64, half);
    dtl_err err = {0};
    double r = NAN;
    dtl_store *st = dtl_store_new(1);
    dtl_plan *plan = NULL;
    if (!dtl_opt_build(&g, cfg, &p, &gr, 1, NULL, &err) ||
        !(plan = dtl_plan_new(&dtl_backend_ref, &g, st, NULL, &err))) {
        fprintf(stderr, "one_param: %s\n", err.msg);
        goto out;
    }
    for (int64_t t = 1; t <= steps; t++) {
        dtl_binding b = {"step", &t, DTL_DTYPE_I64, 0, {0}};
        if (!dtl_plan_run(plan, &b, 1, &err)) {
            fprintf(stderr, "one_param: %s\n", err.msg);
            goto out;
        }
    }
    r = ((double *)dtl_store_find(st, "p")->t.data)[0];
    if (m_out) {
        dtl_store_entry *e = dtl_store_find(st, "p.m");
        *m_out = e ? ((double *)e->t.data)[0] : NAN;
    }
out:
    dtl_plan_free(plan);
    dtl_store_free(st);
    dtl_graph_free(&g);
    return r;
}

static void test_by_hand(void)
{
    dtl_opt_cfg c;
    double m;
    dtl_opt_defaults(&c, DTL_OPT_SGD);
    c.lr = 0.1;
    CHECK_CLOSE(one_param(&c, 1, NULL), 0.95, 1e-15);
    CHECK_CLOSE(one_param(&c, 2, NULL), 0.90, 1e-15);
    c.momentum = 0.9;   /* buf: 0.5, 0.95; p: 0.95, 0.855 */
    CHECK_CLOSE(one_param(&c, 1, &m), 0.95, 1e-15);
    CHECK_CLOSE(m, 0.5, 1e-15);
    CHECK_CLOSE(one_param(&c, 2, &m), 0.855, 1e-15);
    CHECK_CLOSE(m, 0.95, 1e-15);
    c.dampening = 0.5;   /* buf: 0.5 (t = 1 ignores dampening), 0.45 + 0.25 = 0.7 */
    CHECK_CLOSE(one_param(&c, 2, &m), 1 - 0.05 - 0.07, 1e-15);
    CHECK_CLOSE(m, 0.7, 1e-15);
    c.dampening = 0;
    c.nesterov = true;   /* d = 0.5 + 0.9 * 0.5 = 0.95; then 0.5 + 0.9 * 0.95 = 1.355 */
    CHECK_CLOSE(one_param(&c, 1, NULL), 0.905, 1e-15);
    CHECK_CLOSE(one_param(&c, 2, NULL), 0.905 - 0.1355, 1e-15);
    c.nesterov = false;
    c.weight_decay = 0.1;   /* d = 0.5 + 0.1: p = 1 - 0.06 */
    c.momentum = 0;
    CHECK_CLOSE(one_param(&c, 1, NULL), 0.94, 1e-15);

    /* Adam's first step moves by lr g / (|g| + eps): bias correction undoes the moments' start
     * at zero; with a constant gradient, every step moves by the same amount */
    dtl_opt_defaults(&c, DTL_OPT_ADAM);
    c.lr = 0.01;
    double step1 = 0.01 * 0.5 / (0.5 + 1e-8);
    CHECK_CLOSE(one_param(&c, 1, &m), 1 - step1, 1e-15);
    CHECK_CLOSE(m, 0.05, 1e-15);
    CHECK_CLOSE(one_param(&c, 3, NULL), 1 - 3 * step1, 1e-14);
    /* AdamW: p (1 - lr wd) first */
    dtl_opt_defaults(&c, DTL_OPT_ADAMW);
    c.lr = 0.01;
    c.weight_decay = 0.5;
    CHECK_CLOSE(one_param(&c, 1, NULL), 1 * (1 - 0.005) - step1, 1e-15);
}

static void test_schedules(void)
{
    dtl_opt_cfg c;
    dtl_opt_defaults(&c, DTL_OPT_SGD);
    c.lr = 1;
    CHECK(dtl_opt_lr_at(&c, 1) == 1 && dtl_opt_lr_at(&c, 1000) == 1);
    c.sched.kind = DTL_SCHED_STEP;
    c.sched.step_size = 2;
    c.sched.gamma = 0.5;
    static const double step_lr[] = {1, 1, 0.5, 0.5, 0.25, 0.25, 0.125};
    for (int t = 1; t <= 7; t++)
        CHECK_CLOSE(dtl_opt_lr_at(&c, t), step_lr[t - 1], 1e-15);
    c.sched.warmup = 2;   /* 0.5, 1, then the step schedule from its start */
    static const double warm_lr[] = {0.5, 1, 1, 1, 0.5, 0.5, 0.25};
    for (int t = 1; t <= 7; t++)
        CHECK_CLOSE(dtl_opt_lr_at(&c, t), warm_lr[t - 1], 1e-15);

    c.sched.kind = DTL_SCHED_COSINE;
    c.sched.warmup = 0;
    c.sched.total = 4;
    c.sched.floor = 0;
    static const double cos_lr[] = {1, 0.85355339059327373, 0.5, 0.14644660940672627, 0, 0};
    for (int t = 1; t <= 6; t++)
        CHECK_CLOSE(dtl_opt_lr_at(&c, t), cos_lr[t - 1], 1e-15);
    c.sched.floor = 0.1;   /* 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55 at e = 2 */
    CHECK_CLOSE(dtl_opt_lr_at(&c, 3), 0.55, 1e-15);
    CHECK_CLOSE(dtl_opt_lr_at(&c, 100), 0.1, 1e-15);
}

/* Clipping by hand: gradients (3, 4) and (12): norm 13. */
static void test_clip(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    static const double p0[2] = {0, 0}, q0[1] = {0};
    static const double ga[2] = {3, 4}, gb[1] = {12};
    dtl_val ps[2] = {
        dtl_g_param(&g, "a", DTL_DTYPE_F64, 1, S(2), (dtl_init){DTL_INIT_DATA, 0, 0, p0}),
        dtl_g_param(&g, "b", DTL_DTYPE_F64, 1, S(1), (dtl_init){DTL_INIT_DATA, 0, 0, q0}),
    };
    dtl_val gs[2] = {dtl_g_const_data(&g, DTL_DTYPE_F64, 1, S(2), ga),
                     dtl_g_const_data(&g, DTL_DTYPE_F64, 1, S(1), gb)};
    dtl_opt_cfg c;
    dtl_opt_defaults(&c, DTL_OPT_SGD);
    c.lr = 1;
    c.clip_norm = 1.3;
    dtl_opt_info info;
    dtl_err err = {0};
    CHECK(dtl_opt_build(&g, &c, ps, gs, 2, &info, &err));
    CHECK(info.grad_norm != DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "norm", info.grad_norm, DTL_VAL_NONE);
    CHECK(dtl_graph_verify(&g, stderr));
    dtl_store *st = dtl_store_new(1);
    dtl_plan *plan = dtl_plan_new(&dtl_backend_ref, &g, st, NULL, &err);
    CHECK(plan != NULL);
    int64_t t = 1;
    dtl_binding b = {"step", &t, DTL_DTYPE_I64, 0, {0}};
    if (plan && dtl_plan_run(plan, &b, 1, &err)) {
        double coef = 1.3 / (13 + 1e-6);
        dtl_tensor n;
        CHECK(dtl_plan_output(plan, "norm", &n, &err) && ((double *)n.data)[0] == 13);
        const double *a = dtl_store_find(st, "a")->t.data, *q = dtl_store_find(st, "b")->t.data;
        CHECK_CLOSE(a[0], -3 * coef, 1e-15);
        CHECK_CLOSE(a[1], -4 * coef, 1e-15);
        CHECK_CLOSE(q[0], -12 * coef, 1e-15);
    } else {
        CHECK(!"clip run");
    }
    dtl_plan_free(plan);
    dtl_store_free(st);
    dtl_graph_free(&g);
}

/* The graph side: roles, outputs, state names, the "step" input, errors. */
static void test_graph_shape(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    dtl_init z = {DTL_INIT_ZEROS, 0, 0, NULL};
    dtl_val p[2] = {dtl_g_param(&g, "fc1.w", DTL_DTYPE_F32, 2, S(4, 3), z),
                    dtl_g_param(&g, "fc1.b", DTL_DTYPE_F64, 1, S(3), z)};
    dtl_val gr[2] = {dtl_g_input(&g, "g1", DTL_DTYPE_F32, 2, S(4, 3)),
                     dtl_g_input(&g, "g2", DTL_DTYPE_F64, 1, S(3))};
    dtl_val step = dtl_g_input(&g, "step", DTL_DTYPE_F64, 0, NULL);   /* reused, f64 */
    dtl_opt_cfg c;
    dtl_err err = {0};
    uint32_t before = g.nnodes;

    /* bad configurations leave the graph alone */
    dtl_opt_defaults(&c, DTL_OPT_ADAM);
    c.beta1 = 1;
    CHECK(!dtl_opt_build(&g, &c, p, gr, 2, NULL, &err) && err.kind == DTL_ERR_USAGE);
    CHECK(strstr(err.msg, "betas") != NULL);
    dtl_opt_defaults(&c, DTL_OPT_SGD);
    c.nesterov = true;
    CHECK(!dtl_opt_build(&g, &c, p, gr, 2, NULL, &err) && strstr(err.msg, "nesterov"));
    dtl_opt_defaults(&c, DTL_OPT_SGD);
    c.lr = -1;
    CHECK(!dtl_opt_build(&g, &c, p, gr, 2, NULL, &err) && strstr(err.msg, "lr"));
    dtl_opt_defaults(&c, DTL_OPT_SGD);
    c.sched.kind = DTL_SCHED_STEP;
    c.sched.step_size = 0;
    CHECK(!dtl_opt_build(&g, &c, p, gr, 2, NULL, &err) && strstr(err.msg, "step_size"));
    dtl_opt_defaults(&c, DTL_OPT_SGD);
    c.sched.kind = DTL_SCHED_COSINE;
    c.sched.total = 0;
    CHECK(!dtl_opt_build(&g, &c, p, gr, 2, NULL, &err) && strstr(err.msg, "total"));
    dtl_opt_defaults(&c, DTL_OPT_SGD);
    dtl_val swapped[2] = {gr[1], gr[0]};
    CHECK(!dtl_opt_build(&g, &c, p, swapped, 2, NULL, &err) && strstr(err.msg, "fc1.w"));
    CHECK(!dtl_opt_build(&g, &c, gr, gr, 2, NULL, &err) && strstr(err.msg, "not a float param"));
    dtl_graph g2;   /* a "step" that is not a scalar */
    dtl_graph_init(&g2);
    dtl_val p2 = dtl_g_param(&g2, "p", DTL_DTYPE_F32, 0, NULL, z);
    dtl_g_input(&g2, "step", DTL_DTYPE_I64, 1, S(2));
    CHECK(!dtl_opt_build(&g2, &c, &p2, &p2, 1, NULL, &err) && strstr(err.msg, "\"step\""));
    dtl_graph_free(&g2);
    CHECK(g.nnodes == before && g.nouts == 0);

    dtl_opt_defaults(&c, DTL_OPT_ADAMW);
    dtl_opt_info info;
    CHECK(dtl_opt_build(&g, &c, p, gr, 2, &info, &err));
    CHECK(dtl_graph_verify(&g, stderr));
    CHECK(g.role == DTL_ROLE_FORWARD);
    for (uint32_t v = before; v < g.nnodes; v++)
        CHECK(g.nodes[v].role == DTL_ROLE_UPDATE);
    for (uint32_t v = 0; v < g.nnodes; v++)   /* one "step" input: the f64 one */
        if (g.nodes[v].op == DTL_OP_INPUT && strcmp(g.nodes[v].name, "step") == 0)
            CHECK(v == step);
    static const struct {
        dtl_out_kind kind;
        const char *name;
    } want[] = {
        {DTL_OUT_PARAM, "fc1.w"}, {DTL_OUT_STATE, "fc1.w.m"}, {DTL_OUT_STATE, "fc1.w.v"},
        {DTL_OUT_PARAM, "fc1.b"}, {DTL_OUT_STATE, "fc1.b.m"}, {DTL_OUT_STATE, "fc1.b.v"},
    };
    CHECK(g.nouts == 6);
    for (uint32_t k = 0; k < g.nouts && k < 6; k++) {
        CHECK(g.outs[k].kind == want[k].kind);
        CHECK_STR(g.outs[k].name, want[k].name);
        const dtl_node *t = &g.nodes[g.outs[k].target];
        CHECK_STR(t->name, want[k].name);
        CHECK(t->dtype == (k < 3 ? DTL_DTYPE_F32 : DTL_DTYPE_F64));
    }
    CHECK(g.nodes[info.lr].dtype == DTL_DTYPE_F64 && g.nodes[info.lr].rank == 0);
    CHECK(info.grad_norm == DTL_VAL_NONE);
    /* a second optimizer over the same params would update them twice */
    uint32_t n2 = g.nnodes;
    CHECK(!dtl_opt_build(&g, &c, p, gr, 2, NULL, &err) && strstr(err.msg, "update already"));
    /* a state name in use */
    dtl_val q = dtl_g_param(&g, "q", DTL_DTYPE_F32, 0, NULL, z);
    dtl_val qs = dtl_g_state(&g, "q.v", DTL_DTYPE_F32, 0, NULL);
    (void)qs;
    n2 = g.nnodes;
    CHECK(!dtl_opt_build(&g, &c, &q, &q, 1, NULL, &err) && strstr(err.msg, "\"q.v\" exists"));
    CHECK(g.nnodes == n2);
    dtl_graph_free(&g);
}

/* Autodiff and the optimizer together: loss = sum(w^2) / 2 has gradient w, so SGD with lr
 * 0.1 multiplies w by 0.9 at every step; and the loss is read as an output. */
static void test_with_autodiff(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    static const float w0f[4] = {1, -2, 0.5f, 4};
    dtl_val w = dtl_g_param(&g, "w", DTL_DTYPE_F32, 1, S(4), (dtl_init){DTL_INIT_DATA, 0, 0, w0f});
    g.role = DTL_ROLE_LOSS;
    dtl_val sq = dtl_g_binary(&g, DTL_OP_MUL, w, w);
    dtl_val loss = dtl_g_binary(&g, DTL_OP_MUL, dtl_g_reduce(&g, DTL_OP_SUM, sq, 1, false),
                                dtl_g_scalar(&g, DTL_DTYPE_F32, 0.5));
    g.role = DTL_ROLE_FORWARD;
    dtl_g_output(&g, DTL_OUT_LOSS, "loss", loss, DTL_VAL_NONE);
    dtl_val grad;
    bool unreached;
    dtl_err err = {0};
    CHECK(dtl_ad_grad(&g, loss, &w, 1, &grad, &unreached, &err) && !unreached);
    dtl_opt_cfg c;
    dtl_opt_defaults(&c, DTL_OPT_SGD);
    c.lr = 0.1;
    CHECK(dtl_opt_build(&g, &c, &w, &grad, 1, NULL, &err));
    dtl_store *st = dtl_store_new(1);
    dtl_plan *plan = dtl_plan_new(&dtl_backend_ref, &g, st, NULL, &err);
    CHECK(plan != NULL);
    double want_loss = 0.5 * (1 + 4 + 0.25 + 16);
    for (int64_t t = 1; plan && t <= 3; t++) {
        dtl_binding b = {"step", &t, DTL_DTYPE_I64, 0, {0}};
        CHECK(dtl_plan_run(plan, &b, 1, &err));
        dtl_tensor lt;
        CHECK(dtl_plan_output(plan, "loss", &lt, &err));
        CHECK_CLOSE(((float *)lt.data)[0], want_loss, 1e-6);   /* before this step's update */
        want_loss *= 0.81;
        const float *wv = dtl_store_find(st, "w")->t.data;
        for (int i = 0; i < 4; i++)
            CHECK_CLOSE(wv[i], w0f[i] * pow(0.9, (double)t), 1e-6);
    }
    dtl_plan_free(plan);
    dtl_store_free(st);
    dtl_graph_free(&g);
}

/* The whole step graph of a 2-layer MLP (forward, cross-entropy, autodiff, AdamW with warmup
 * and clipping) plans and runs on the reference backend, and fits one fixed batch: the loss
 * falls by more than half in 40 steps, the training accuracy count rises to the batch. */
static void test_mlp_fits(void)
{
    enum { B = 16, D = 8, H = 16, C = 3 };
    float x[B * D];
    int64_t y[B];
    for (int i = 0; i < B; i++) {   /* a class rule the model can learn: the largest of 3 sums */
        double s[C] = {0, 0, 0};
        for (int j = 0; j < D; j++) {
            x[i * D + j] = (float)sin(0.37 * (i * D + j) + 0.5 * i);
            s[j % C] += x[i * D + j];
        }
        y[i] = s[0] >= s[1] && s[0] >= s[2] ? 0 : s[1] >= s[2] ? 1 : 2;
    }
    dtl_graph g;
    dtl_graph_init(&g);
    dtl_init glorot = {DTL_INIT_GLOROT_UNIFORM, 0, 0, NULL}, zeros = {DTL_INIT_ZEROS, 0, 0, NULL};
    dtl_val xv = dtl_g_input(&g, "x", DTL_DTYPE_F32, 2, S(B, D));
    dtl_val yv = dtl_g_input(&g, "y", DTL_DTYPE_I64, 1, S(B));
    dtl_val ps[4] = {
        dtl_g_param(&g, "fc1.w", DTL_DTYPE_F32, 2, S(D, H), glorot),
        dtl_g_param(&g, "fc1.b", DTL_DTYPE_F32, 1, S(H), zeros),
        dtl_g_param(&g, "fc2.w", DTL_DTYPE_F32, 2, S(H, C), glorot),
        dtl_g_param(&g, "fc2.b", DTL_DTYPE_F32, 1, S(C), zeros),
    };
    dtl_val h = dtl_g_unary(&g, DTL_OP_RELU, dtl_g_binary(&g, DTL_OP_ADD, dtl_g_matmul(&g, xv, ps[0]), ps[1]));
    dtl_val z = dtl_g_binary(&g, DTL_OP_ADD, dtl_g_matmul(&g, h, ps[2]), ps[3]);
    g.role = DTL_ROLE_LOSS;
    dtl_val loss = dtl_nn_cross_entropy(&g, z, yv);
    g.role = DTL_ROLE_METRIC;
    dtl_val hits = dtl_nn_accuracy_count(&g, z, yv, DTL_DTYPE_I64);
    g.role = DTL_ROLE_FORWARD;
    dtl_g_output(&g, DTL_OUT_LOSS, "loss", loss, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "hits", hits, DTL_VAL_NONE);
    dtl_val grads[4];
    bool unreached[4];
    dtl_err err = {0};
    CHECK(dtl_ad_grad(&g, loss, ps, 4, grads, unreached, &err));
    CHECK(!unreached[0] && !unreached[1] && !unreached[2] && !unreached[3]);
    dtl_opt_cfg c;
    dtl_opt_defaults(&c, DTL_OPT_ADAMW);
    c.lr = 0.02;
    c.sched.warmup = 5;
    c.clip_norm = 5;
    CHECK(dtl_opt_build(&g, &c, ps, grads, 4, NULL, &err));
    dtl_store *st = dtl_store_new(3);
    dtl_plan *plan = dtl_plan_new(&dtl_backend_ref, &g, st, NULL, &err);
    if (!plan)
        fprintf(stderr, "mlp: %s\n", err.msg);
    CHECK(plan != NULL);
    double first = NAN, last = NAN;
    int64_t hit = -1;
    for (int64_t t = 1; plan && t <= 40; t++) {
        dtl_binding in[3] = {
            {"x", x, DTL_DTYPE_F32, 2, {B, D}},
            {"y", y, DTL_DTYPE_I64, 1, {B}},
            {"step", &t, DTL_DTYPE_I64, 0, {0}},
        };
        dtl_tensor lt, ht;
        if (!dtl_plan_run(plan, in, 3, &err) || !dtl_plan_output(plan, "loss", &lt, &err) ||
            !dtl_plan_output(plan, "hits", &ht, &err)) {
            fprintf(stderr, "mlp: %s\n", err.msg);
            CHECK(!"mlp run");
            break;
        }
        last = ((float *)lt.data)[0];
        hit = ((int64_t *)ht.data)[0];
        if (t == 1)
            first = last;
    }
    if (!(last < 0.5 * first) || hit < B - 1)
        fprintf(stderr, "mlp: loss %g -> %g, %lld of %d right\n", first, last, (long long)hit, B);
    CHECK(first > 0.5 && last < 0.5 * first);
    CHECK(hit >= B - 1);
    dtl_plan_free(plan);
    dtl_store_free(st);
    dtl_graph_free(&g);
}

int main(void)
{
    test_mlp_fits();
    test_schedules();
    test_by_hand();
    test_vs_reference();
    test_clip();
    test_graph_shape();
    test_with_autodiff();
    CHECK_DONE();
}
