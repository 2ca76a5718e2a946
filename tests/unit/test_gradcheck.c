/* tests/unit/test_gradcheck.c — every VJP rule of compiler/autodiff.c, and the composites of
 * compiler/nnops.c, against central finite differences in f64.
 *
 * Each case builds an f64 graph over a few params with random values, reduces the op's result
 * to a scalar with random weights (loss = sum(W * op(…)), so that every output element has a
 * different weight and a wrong index in a VJP shows), differentiates it with dtl_ad_grad, and
 * compares each gradient element with (L(p + h) - L(p - h)) / 2h. Inputs keep away from kinks
 * and ties (relu at 0, max at equal values) so the function is smooth within h. The graphs are
 * run node by node on the reference kernels (kernels/ref), the executor's oracle.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../compiler/autodiff.h"
#include "../../compiler/graph.h"
#include "../../compiler/nnops.h"
#include "../../kernels/ref/ref.h"
#include "../../runtime/philox.h"
#include "unit.h"

#define MAXP 8
#define MAXB 16
#define FD_H 1e-5
#define RTOL 1e-6

typedef struct binding {
    dtl_val id;
    const void *data;
} binding;

/* ---- a node-by-node evaluator over the reference kernels ---------------------------------- */

static void free_vals(void **vals, uint32_t n)
{
    if (!vals)
        return;
    for (uint32_t v = 0; v < n; v++)
        free(vals[v]);
    free(vals);
}

/* Values of nodes 0 .. upto-1; leaves (INPUT PARAM STATE) from the bindings. NULL on a
 * kernel failure (reported). */
static void **eval_graph(const dtl_graph *g, uint32_t upto, const binding *b, uint32_t nb,
                         uint64_t seed)
{
    void **vals = calloc(upto, sizeof *vals);
    if (!vals)
        abort();
    for (uint32_t v = 0; v < upto; v++) {
        const dtl_node *n = &g->nodes[v];
        size_t bytes = (size_t)dtl_node_numel(n) * dtl_dtype_size(n->dtype);
        vals[v] = malloc(bytes ? bytes : 1);
        if (!vals[v])
            abort();
        if (n->op == DTL_OP_INPUT || n->op == DTL_OP_PARAM || n->op == DTL_OP_STATE) {
            uint32_t k = 0;
            while (k < nb && b[k].id != v)
                k++;
            if (k == nb) {
                fprintf(stderr, "eval: no value bound to %%%u \"%s\"\n", v, n->name);
                free_vals(vals, upto);
                return NULL;
            }
            memcpy(vals[v], b[k].data, bytes);
            continue;
        }
        dtl_ref_arg args[64];
        if (n->nin > 64)
            abort();
        for (uint32_t i = 0; i < n->nin; i++) {
            const dtl_node *x = &g->nodes[n->in[i]];
            args[i] = (dtl_ref_arg){vals[n->in[i]], x->dtype, x->rank, x->shape};
        }
        dtl_err err = {0};
        if (!dtl_ref_kernel(n, args, vals[v], seed, &err)) {
            fprintf(stderr, "eval: %%%u %s: %s\n", v, dtl_op_name(n->op), err.msg);
            free_vals(vals, upto);
            return NULL;
        }
    }
    return vals;
}

/* ---- a gradient-check case ---------------------------------------------------------------- */

typedef struct gcase {
    const char *label;
    dtl_graph g;
    dtl_rng rng;
    dtl_val params[MAXP];
    double *pdata[MAXP];
    uint32_t np;
    binding binds[MAXB];
    uint32_t nb;
    void *owned[MAXB];
    uint32_t nowned;
} gcase;

static void gc_init(gcase *c, const char *label)
{
    memset(c, 0, sizeof *c);
    c->label = label;
    dtl_graph_init(&c->g);
    dtl_rng_init(&c->rng, 1234, dtl_rng_stream_id(label, 0));
}

static void gc_free(gcase *c)
{
    for (uint32_t i = 0; i < c->nowned; i++)
        free(c->owned[i]);
    dtl_graph_free(&c->g);
}

static uint64_t numel(uint32_t rank, const int64_t *shape)
{
    uint64_t n = 1;
    for (uint32_t i = 0; i < rank; i++)
        n *= (uint64_t)shape[i];
    return n;
}

static void *gc_alloc(gcase *c, size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p || c->nowned == MAXB)
        abort();
    c->owned[c->nowned++] = p;
    return p;
}

static double *gc_random(gcase *c, uint64_t n, double lo, double hi)
{
    double *d = gc_alloc(c, n * sizeof *d);
    for (uint64_t i = 0; i < n; i++)
        d[i] = lo + (hi - lo) * dtl_rng_uniform_f64(&c->rng);
    return d;
}

static void gc_bind(gcase *c, dtl_val id, const void *data)
{
    if (c->nb == MAXB)
        abort();
    c->binds[c->nb++] = (binding){id, data};
}

/* A param of f64[shape] with values uniform in [lo, hi); if away > 0, values within `away` of
 * 0 are pushed out (for relu, abs). */
static dtl_val gc_param_away(gcase *c, uint32_t rank, const int64_t *shape, double lo, double hi,
                             double away)
{
    if (c->np == MAXP)
        abort();
    char name[16];
    snprintf(name, sizeof name, "p%u", c->np);
    dtl_init init = {DTL_INIT_ZEROS, 0, 0, NULL};
    dtl_val p = dtl_g_param(&c->g, name, DTL_DTYPE_F64, rank, shape, init);
    uint64_t n = numel(rank, shape);
    double *d = gc_random(c, n, lo, hi);
    for (uint64_t i = 0; i < n && away > 0; i++)
        if (fabs(d[i]) < away)
            d[i] = d[i] < 0 ? -away - 0.1 : away + 0.1;
    c->params[c->np] = p;
    c->pdata[c->np++] = d;
    gc_bind(c, p, d);
    return p;
}

static dtl_val gc_param(gcase *c, uint32_t rank, const int64_t *shape, double lo, double hi)
{
    return gc_param_away(c, rank, shape, lo, hi, 0);
}

/* sum(W * y) with random weights W of y's shape. */
static dtl_val gc_wsum(gcase *c, dtl_val y)
{
    const dtl_node *n = &c->g.nodes[y];
    uint32_t rank = n->rank;
    int64_t shape[DTL_MAX_RANK];
    memcpy(shape, n->shape, sizeof shape);
    double *w = gc_random(c, numel(rank, shape), -1.5, 1.5);
    dtl_val wv = dtl_g_const_data(&c->g, DTL_DTYPE_F64, rank, shape, w);
    dtl_val prod = dtl_g_binary(&c->g, DTL_OP_MUL, y, wv);
    return rank ? dtl_g_reduce(&c->g, DTL_OP_SUM, prod, (1u << rank) - 1u, false) : prod;
}

static double loss_at(gcase *c, dtl_val loss)
{
    void **vals = eval_graph(&c->g, loss + 1, c->binds, c->nb, 99);
    if (!vals)
        return NAN;
    double l = *(double *)vals[loss];
    free_vals(vals, loss + 1);
    return l;
}

/* Differentiates loss w.r.t. every param and compares with finite differences. Returns the
 * worst relative error (|a - n| / max(|a|, |n|, 1e-3)), or INFINITY on a failure. */
static double gc_check_grads(gcase *c, dtl_val loss, dtl_val *grads, bool *unreached)
{
    dtl_err err = {0};
    if (!dtl_ad_grad(&c->g, loss, c->params, c->np, grads, unreached, &err)) {
        fprintf(stderr, "%s: autodiff failed: %s\n", c->label, err.msg);
        return INFINITY;
    }
    if (!dtl_graph_verify(&c->g, stderr)) {
        fprintf(stderr, "%s: the graph does not verify after autodiff\n", c->label);
        return INFINITY;
    }
    void **vals = eval_graph(&c->g, c->g.nnodes, c->binds, c->nb, 99);
    if (!vals)
        return INFINITY;
    double worst = 0;
    for (uint32_t p = 0; p < c->np; p++) {
        const dtl_node *pn = &c->g.nodes[c->params[p]];
        const double *an = vals[grads[p]];
        uint64_t n = dtl_node_numel(pn);
        for (uint64_t i = 0; i < n; i++) {
            double keep = c->pdata[p][i];
            c->pdata[p][i] = keep + FD_H;
            double lp = loss_at(c, loss);
            c->pdata[p][i] = keep - FD_H;
            double lm = loss_at(c, loss);
            c->pdata[p][i] = keep;
            double num = (lp - lm) / (2 * FD_H);
            double scale = fmax(fmax(fabs(an[i]), fabs(num)), 1e-3);
            double e = fabs(an[i] - num) / scale;
            if (!(e <= worst)) {
                worst = isnan(e) ? INFINITY : e;
                if (e > RTOL)
                    fprintf(stderr, "%s: d/d%s[%llu]: autodiff %.12g, numeric %.12g\n",
                            c->label, pn->name, (unsigned long long)i, an[i], num);
            }
        }
    }
    free_vals(vals, c->g.nnodes);
    return worst;
}

/* The usual case: check, report, free. */
static void gc_finish(gcase *c, dtl_val loss)
{
    dtl_val grads[MAXP];
    double worst = gc_check_grads(c, loss, grads, NULL);
    if (!(worst <= RTOL))
        fprintf(stderr, "%s: worst relative error %g\n", c->label, worst);
    CHECK(worst <= RTOL);
    gc_free(c);
}

#define S(...) ((const int64_t[]){__VA_ARGS__})

/* ---- primitives ----------------------------------------------------------------------------- */

static void test_unary(void)
{
    static const struct {
        dtl_op op;
        const char *label;
        double lo, hi, away;
    } ops[] = {
        {DTL_OP_NEG, "neg", -2, 2, 0},    {DTL_OP_ABS, "abs", -2, 2, 0.05},
        {DTL_OP_EXP, "exp", -2, 2, 0},    {DTL_OP_LOG, "log", 0.2, 3, 0},
        {DTL_OP_SQRT, "sqrt", 0.2, 3, 0}, {DTL_OP_TANH, "tanh", -2, 2, 0},
        {DTL_OP_SIGMOID, "sigmoid", -3, 3, 0}, {DTL_OP_RELU, "relu", -2, 2, 0.05},
        {DTL_OP_SIN, "sin", -3, 3, 0},    {DTL_OP_COS, "cos", -3, 3, 0},
    };
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        gcase c;
        gc_init(&c, ops[k].label);
        dtl_val x = gc_param_away(&c, 2, S(3, 4), ops[k].lo, ops[k].hi, ops[k].away);
        gc_finish(&c, gc_wsum(&c, dtl_g_unary(&c.g, ops[k].op, x)));
    }
}

/* f64 -> f32 -> f64 is differentiable (the gradient is cast back); finite differences in
 * f32 are too coarse, so the gradient is compared with its exact value. */
static void test_cast_float(void)
{
    gcase c;
    gc_init(&c, "cast f64-f32-f64");
    dtl_val x = gc_param(&c, 1, S(5), -1, 1);
    dtl_val y = dtl_g_cast(&c.g, dtl_g_cast(&c.g, x, DTL_DTYPE_F32), DTL_DTYPE_F64);
    double *w = gc_random(&c, 5, -1, 1);
    dtl_val wv = dtl_g_const_data(&c.g, DTL_DTYPE_F64, 1, S(5), w);
    dtl_val loss = dtl_g_reduce(&c.g, DTL_OP_SUM, dtl_g_binary(&c.g, DTL_OP_MUL, y, wv), 1, false);
    dtl_val grad;
    dtl_err err = {0};
    CHECK(dtl_ad_grad(&c.g, loss, c.params, 1, &grad, NULL, &err));
    void **vals = eval_graph(&c.g, c.g.nnodes, c.binds, c.nb, 0);
    CHECK(vals != NULL);
    for (int i = 0; vals && i < 5; i++)
        CHECK(((double *)vals[grad])[i] == (double)(float)w[i]);
    free_vals(vals, c.g.nnodes);
    gc_free(&c);
}

static void test_binary(void)
{
    static const struct {
        dtl_op op;
        const char *label;
        double alo, ahi, blo, bhi;
    } ops[] = {
        {DTL_OP_ADD, "add", -2, 2, -2, 2},     {DTL_OP_SUB, "sub", -2, 2, -2, 2},
        {DTL_OP_MUL, "mul", -2, 2, -2, 2},     {DTL_OP_DIV, "div", -2, 2, 0.5, 2},
        {DTL_OP_POW, "pow", 0.3, 2, -1.5, 2.5}, {DTL_OP_MAX, "max", -2, 2, -2, 2},
        {DTL_OP_MIN, "min", -2, 2, -2, 2},
    };
    /* shape pairs: equal, trailing broadcast, both sides broadcast, scalar */
    static const struct {
        uint32_t ra, rb;
        int64_t a[3], b[3];
    } shapes[] = {
        {2, 2, {2, 3}, {2, 3}},
        {2, 1, {2, 3}, {3}},
        {3, 2, {2, 1, 4}, {3, 1}},
        {0, 2, {0}, {2, 3}},
    };
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            char label[64];
            snprintf(label, sizeof label, "%s #%zu", ops[k].label, s);
            gcase c;
            gc_init(&c, label);
            dtl_val a = gc_param(&c, shapes[s].ra, shapes[s].a, ops[k].alo, ops[k].ahi);
            dtl_val b = gc_param(&c, shapes[s].rb, shapes[s].b, ops[k].blo, ops[k].bhi);
            gc_finish(&c, gc_wsum(&c, dtl_g_binary(&c.g, ops[k].op, a, b)));
        }
    }
}

/* pow with a constant exponent (folded in the rule): x^2, x^3, x^0.5, x^1, x^0. */
static void test_pow_const(void)
{
    static const double ex[] = {2, 3, 0.5, 1, -1.5};
    for (size_t k = 0; k < sizeof ex / sizeof ex[0]; k++) {
        char label[32];
        snprintf(label, sizeof label, "pow const %g", ex[k]);
        gcase c;
        gc_init(&c, label);
        dtl_val x = gc_param(&c, 2, S(2, 3), 0.3, 2);
        dtl_val y = dtl_g_binary(&c.g, DTL_OP_POW, x, dtl_g_scalar(&c.g, DTL_DTYPE_F64, ex[k]));
        gc_finish(&c, gc_wsum(&c, y));
    }
    /* x^0 is constant: the gradient is a zero, and the param is reached (no warning) */
    gcase c;
    gc_init(&c, "pow const 0");
    dtl_val x = gc_param(&c, 1, S(3), 0.3, 2);
    dtl_val y = dtl_g_binary(&c.g, DTL_OP_POW, x, dtl_g_scalar(&c.g, DTL_DTYPE_F64, 0));
    dtl_val grad;
    bool unreached = true;
    CHECK(gc_check_grads(&c, gc_wsum(&c, y), &grad, &unreached) <= RTOL);
    CHECK(!unreached);
    gc_free(&c);
}

static void test_where(void)
{
    gcase c;
    gc_init(&c, "where");
    dtl_val a = gc_param(&c, 2, S(3, 4), -2, 2);
    dtl_val b = gc_param(&c, 1, S(4), -2, 2);
    dtl_val m = gc_param(&c, 2, S(3, 1), -1, 1);   /* the mask's source: no gradient flows */
    dtl_val cond = dtl_g_binary(&c.g, DTL_OP_GT, m, dtl_g_scalar(&c.g, DTL_DTYPE_F64, 0));
    gc_finish(&c, gc_wsum(&c, dtl_g_where(&c.g, cond, a, b)));
}

static void test_reduce(void)
{
    static const struct {
        uint32_t axes;
        bool keep;
    } cases[] = {{2, false}, {2, true}, {5, false}, {5, true}, {7, false}, {7, true}, {1, false}};
    for (int op = 0; op < 2; op++) {
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            char label[64];
            snprintf(label, sizeof label, "%s axes 0x%x keep %d", op ? "reduce_max" : "sum",
                     cases[k].axes, cases[k].keep);
            gcase c;
            gc_init(&c, label);
            dtl_val x = gc_param(&c, 3, S(2, 3, 4), -2, 2);   /* distinct: no ties */
            dtl_val y = dtl_g_reduce(&c.g, op ? DTL_OP_REDUCE_MAX : DTL_OP_SUM, x,
                                     cases[k].axes, cases[k].keep);
            gc_finish(&c, gc_wsum(&c, y));
        }
    }
}

static void test_matmul(void)
{
    static const struct {
        uint32_t ra, rb;
        int64_t a[4], b[4];
    } cases[] = {
        {2, 2, {3, 4}, {4, 5}},
        {3, 3, {2, 3, 4}, {2, 4, 5}},
        {2, 3, {3, 4}, {2, 4, 5}},          /* a broadcast over b's batch */
        {4, 3, {2, 1, 3, 4}, {3, 4, 2}},    /* both broadcast: batch [2, 3] */
        {3, 2, {2, 3, 4}, {4, 1}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char label[32];
        snprintf(label, sizeof label, "matmul #%zu", k);
        gcase c;
        gc_init(&c, label);
        dtl_val a = gc_param(&c, cases[k].ra, cases[k].a, -1, 1);
        dtl_val b = gc_param(&c, cases[k].rb, cases[k].b, -1, 1);
        gc_finish(&c, gc_wsum(&c, dtl_g_matmul(&c.g, a, b)));
    }
    /* x @ x: one value used by both operands */
    gcase c;
    gc_init(&c, "matmul x@x");
    dtl_val x = gc_param(&c, 2, S(3, 3), -1, 1);
    gc_finish(&c, gc_wsum(&c, dtl_g_matmul(&c.g, x, x)));
}

static void test_moves(void)
{
    gcase c;
    gc_init(&c, "transpose");
    dtl_val x = gc_param(&c, 3, S(2, 3, 4), -1, 1);
    gc_finish(&c, gc_wsum(&c, dtl_g_transpose(&c.g, x, (const uint32_t[]){2, 0, 1})));

    gc_init(&c, "reshape");
    x = gc_param(&c, 2, S(2, 6), -1, 1);
    gc_finish(&c, gc_wsum(&c, dtl_g_reshape(&c.g, x, 3, S(3, 2, 2))));

    gc_init(&c, "broadcast");
    x = gc_param(&c, 2, S(3, 1), -1, 1);
    gc_finish(&c, gc_wsum(&c, dtl_g_broadcast(&c.g, x, 3, S(2, 3, 4))));

    gc_init(&c, "slice steps");
    x = gc_param(&c, 3, S(5, 6, 3), -1, 1);
    /* [1:5:2, 5:0:-2, :] */
    dtl_val y = dtl_g_slice(&c.g, x, S(1, 5, 0), S(5, 0, 3), S(2, -2, 1));
    CHECK(c.g.nodes[y].shape[0] == 2 && c.g.nodes[y].shape[1] == 3);
    gc_finish(&c, gc_wsum(&c, y));

    gc_init(&c, "slice reversed");
    x = gc_param(&c, 1, S(5), -1, 1);
    gc_finish(&c, gc_wsum(&c, dtl_g_slice(&c.g, x, S(4), S(-1), S(-1))));

    gc_init(&c, "concat");
    dtl_val xs[3];
    xs[0] = gc_param(&c, 2, S(2, 1), -1, 1);
    xs[1] = gc_param(&c, 2, S(2, 3), -1, 1);
    xs[2] = gc_param(&c, 2, S(2, 2), -1, 1);
    gc_finish(&c, gc_wsum(&c, dtl_g_concat(&c.g, xs, 3, 1)));

    gc_init(&c, "concat repeated");
    x = gc_param(&c, 1, S(3), -1, 1);
    gc_finish(&c, gc_wsum(&c, dtl_g_concat(&c.g, (const dtl_val[]){x, x}, 2, 0)));
}

static void test_gather_scatter(void)
{
    static const int64_t idx0[] = {3, 0, 3, 1};   /* repeated: the adjoint must add */
    gcase c;
    gc_init(&c, "gather axis 0");
    dtl_val x = gc_param(&c, 2, S(4, 3), -1, 1);
    dtl_val iv = dtl_g_const_data(&c.g, DTL_DTYPE_I64, 2, S(2, 2), idx0);
    dtl_val y = dtl_g_gather(&c.g, x, iv, 0);
    CHECK(c.g.nodes[y].rank == 3);
    gc_finish(&c, gc_wsum(&c, y));

    static const int32_t idx1[] = {2, 2, 0};
    gc_init(&c, "gather axis 1");
    x = gc_param(&c, 3, S(2, 3, 2), -1, 1);
    iv = dtl_g_const_data(&c.g, DTL_DTYPE_I32, 1, S(3), idx1);
    gc_finish(&c, gc_wsum(&c, dtl_g_gather(&c.g, x, iv, 1)));

    gc_init(&c, "scatter_add");
    dtl_val u = gc_param(&c, 2, S(2, 4), -1, 1);
    iv = dtl_g_const_data(&c.g, DTL_DTYPE_I64, 1, S(4), idx0);
    gc_finish(&c, gc_wsum(&c, dtl_g_scatter_add(&c.g, u, iv, 1, 2, S(2, 5))));
}

/* conv2d and pooling (and the backward ops' own VJPs, for second order), with padding,
 * stride, dilation and groups edge cases. */
static void test_windows(void)
{
    static const struct {
        const char *label;
        int64_t x[4], w[4];
        dtl_win_attr a;
    } convs[] = {
        {"conv2d pad 1", {2, 3, 5, 5}, {4, 3, 3, 3}, {{0, 0}, {1, 1}, {1, 1}, {1, 1}, 1, false}},
        {"conv2d 1x1", {2, 3, 3, 4}, {2, 3, 1, 1}, {{0, 0}, {1, 1}, {0, 0}, {1, 1}, 1, false}},
        {"conv2d kernel > input, padded", {1, 2, 3, 2}, {2, 2, 5, 4},
         {{0, 0}, {1, 1}, {2, 2}, {1, 1}, 1, false}},
        {"conv2d stride > kernel", {2, 2, 7, 8}, {3, 2, 2, 2},
         {{0, 0}, {3, 3}, {0, 1}, {1, 1}, 1, false}},
        {"conv2d stride 2, dilation 2, groups 2", {1, 4, 7, 6}, {4, 2, 2, 3},
         {{0, 0}, {2, 1}, {1, 2}, {2, 1}, 2, false}},
        {"conv2d depthwise (groups = channels)", {2, 3, 4, 4}, {6, 1, 3, 3},
         {{0, 0}, {1, 1}, {1, 1}, {1, 1}, 3, false}},
    };
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) {
        const dtl_win_attr *a = &convs[i].a;
        gcase c;
        gc_init(&c, convs[i].label);
        dtl_val x = gc_param(&c, 4, convs[i].x, -1, 1), w = gc_param(&c, 4, convs[i].w, -1, 1);
        dtl_val y = dtl_g_conv2d(&c.g, x, w, a);
        int64_t ys[4];
        memcpy(ys, c.g.nodes[y].shape, sizeof ys);
        gc_finish(&c, gc_wsum(&c, y));

        char label[96];
        snprintf(label, sizeof label, "%s: conv2d_bwd_x", convs[i].label);
        gc_init(&c, label);
        dtl_val dy = gc_param(&c, 4, ys, -1, 1);
        w = gc_param(&c, 4, convs[i].w, -1, 1);
        gc_finish(&c, gc_wsum(&c, dtl_g_conv2d_bwd_x(&c.g, dy, w, a, convs[i].x)));

        snprintf(label, sizeof label, "%s: conv2d_bwd_w", convs[i].label);
        gc_init(&c, label);
        x = gc_param(&c, 4, convs[i].x, -1, 1);
        dy = gc_param(&c, 4, ys, -1, 1);
        gc_finish(&c, gc_wsum(&c, dtl_g_conv2d_bwd_w(&c.g, x, dy, a, convs[i].w)));
    }
    static const struct {
        const char *label;
        int64_t x[4];
        dtl_win_attr a;
    } pools[] = {
        {"pool 2x2 stride 2", {2, 2, 4, 6}, {{2, 2}, {2, 2}, {0, 0}, {1, 1}, 1, false}},
        {"pool 3x3 stride 2 pad 1", {1, 2, 5, 5}, {{3, 3}, {2, 2}, {1, 1}, {1, 1}, 1, false}},
        {"pool 3x3 stride 2 pad 1 count_pad", {1, 2, 5, 5},
         {{3, 3}, {2, 2}, {1, 1}, {1, 1}, 1, true}},
        {"pool stride > kernel", {2, 1, 7, 7}, {{2, 2}, {3, 3}, {0, 0}, {1, 1}, 1, false}},
        {"pool 3x2 stride [1, 2] pad [2, 1]", {1, 2, 4, 5},
         {{3, 2}, {1, 2}, {2, 1}, {1, 1}, 1, false}},
        {"pool global", {2, 3, 3, 4}, {{3, 4}, {1, 1}, {0, 0}, {1, 1}, 1, false}},
    };
    for (size_t i = 0; i < sizeof pools / sizeof pools[0]; i++) {
        for (int avg = 0; avg < 2; avg++) {
            dtl_win_attr a = pools[i].a;
            if (!avg && a.count_pad)
                continue;
            char label[96];
            snprintf(label, sizeof label, "%s %s", avg ? "avgpool2d" : "maxpool2d",
                     pools[i].label);
            gcase c;
            gc_init(&c, label);
            dtl_val x = gc_param(&c, 4, pools[i].x, -1, 1);
            dtl_val y = dtl_g_pool2d(&c.g, avg ? DTL_OP_AVGPOOL2D : DTL_OP_MAXPOOL2D, x, &a);
            int64_t ys[4];
            memcpy(ys, c.g.nodes[y].shape, sizeof ys);
            gc_finish(&c, gc_wsum(&c, y));
            if (avg) {
                snprintf(label, sizeof label, "avgpool2d_bwd %s", pools[i].label);
                gc_init(&c, label);
                dtl_val dy = gc_param(&c, 4, ys, -1, 1);
                gc_finish(&c, gc_wsum(&c, dtl_g_avgpool2d_bwd(&c.g, dy, &a, pools[i].x)));
            }
        }
    }
    /* Max pooling's ties: the whole gradient goes to the window's first maximum. */
    gcase c;
    gc_init(&c, "maxpool2d ties");
    static const double tie[] = {1, 1, 0, 2,   /* window (0,0): 1 at [0,0] and [0,1] */
                                 0, 1, 2, 0};  /* window (0,1): 2 at [0,3] and [1,2] */
    dtl_val x = dtl_g_param(&c.g, "x", DTL_DTYPE_F64, 4, S(1, 1, 2, 4),
                            (dtl_init){DTL_INIT_ZEROS, 0, 0, NULL});
    c.params[c.np] = x;
    c.pdata[c.np++] = (double *)tie;
    gc_bind(&c, x, tie);
    dtl_win_attr a = {{2, 2}, {2, 2}, {0, 0}, {1, 1}, 1, false};
    dtl_val y = dtl_g_pool2d(&c.g, DTL_OP_MAXPOOL2D, x, &a);
    dtl_val grads[1];
    dtl_err err = {0};
    CHECK(dtl_ad_grad(&c.g, dtl_g_reduce(&c.g, DTL_OP_SUM, y, 15, false), &x, 1, grads, NULL,
                      &err));
    void **vals = eval_graph(&c.g, c.g.nnodes, c.binds, c.nb, 99);
    CHECK(vals != NULL);
    if (vals) {
        static const double want[] = {1, 0, 0, 1, 0, 0, 0, 0};
        CHECK(memcmp(vals[grads[0]], want, sizeof want) == 0);
        free_vals(vals, c.g.nnodes);
    }
    gc_free(&c);
}

/* A value used several times, through several ops, and a param used twice. */
static void test_fanout(void)
{
    gcase c;
    gc_init(&c, "fanout");
    dtl_val x = gc_param(&c, 2, S(2, 3), 0.2, 2);
    dtl_val a = dtl_g_binary(&c.g, DTL_OP_MUL, x, x);
    dtl_val b = dtl_g_unary(&c.g, DTL_OP_EXP, x);
    dtl_val d = dtl_g_binary(&c.g, DTL_OP_DIV, a, dtl_g_unary(&c.g, DTL_OP_LOG, b));
    dtl_val e = dtl_g_binary(&c.g, DTL_OP_ADD, d, dtl_g_binary(&c.g, DTL_OP_SUB, b, a));
    gc_finish(&c, gc_wsum(&c, e));
}

/* ---- composites ----------------------------------------------------------------------------- */

static void test_composites(void)
{
    gcase c;
    for (uint32_t axis = 0; axis < 2; axis++) {
        gc_init(&c, axis ? "softmax 1" : "softmax 0");
        dtl_val x = gc_param(&c, 2, S(3, 4), -2, 2);
        gc_finish(&c, gc_wsum(&c, dtl_nn_softmax(&c.g, x, axis)));

        gc_init(&c, axis ? "log_softmax 1" : "log_softmax 0");
        x = gc_param(&c, 2, S(3, 4), -2, 2);
        gc_finish(&c, gc_wsum(&c, dtl_nn_log_softmax(&c.g, x, axis)));

        gc_init(&c, axis ? "logsumexp keep" : "logsumexp");
        x = gc_param(&c, 3, S(2, 3, 4), -2, 2);
        gc_finish(&c, gc_wsum(&c, dtl_nn_logsumexp(&c.g, x, 2, axis)));
    }

    gc_init(&c, "mean");
    dtl_val x = gc_param(&c, 3, S(2, 3, 4), -2, 2);
    gc_finish(&c, gc_wsum(&c, dtl_nn_mean(&c.g, x, 5, false)));

    gc_init(&c, "reduce_min");
    x = gc_param(&c, 2, S(3, 4), -2, 2);
    gc_finish(&c, gc_wsum(&c, dtl_nn_reduce_min(&c.g, x, 2, true)));

    static const int64_t labels[] = {2, 0, 3, 3, 1};
    gc_init(&c, "cross_entropy");
    x = gc_param(&c, 2, S(5, 4), -3, 3);
    dtl_val y = dtl_g_const_data(&c.g, DTL_DTYPE_I64, 1, S(5), labels);
    gc_finish(&c, dtl_nn_cross_entropy(&c.g, x, y));

    gc_init(&c, "cross_entropy large logits");
    x = gc_param(&c, 2, S(5, 4), 200, 260);   /* exp would overflow without the shift */
    y = dtl_g_const_data(&c.g, DTL_DTYPE_I64, 1, S(5), labels);
    gc_finish(&c, dtl_nn_cross_entropy(&c.g, x, y));

    gc_init(&c, "mse");
    x = gc_param(&c, 2, S(3, 4), -2, 2);
    dtl_val t = gc_param(&c, 1, S(4), -2, 2);   /* broadcast target */
    gc_finish(&c, dtl_nn_mse(&c.g, x, t));

    gc_init(&c, "bce_with_logits");
    x = gc_param_away(&c, 2, S(3, 4), -30, 30, 0.01);   /* |z| large: the stable form */
    t = gc_param(&c, 2, S(3, 4), 0, 1);
    gc_finish(&c, dtl_nn_bce_with_logits(&c.g, x, t));

    gc_init(&c, "softplus");
    x = gc_param_away(&c, 1, S(6), -5, 5, 0.01);
    gc_finish(&c, gc_wsum(&c, dtl_nn_softplus(&c.g, x)));

    gc_init(&c, "silu");
    x = gc_param(&c, 1, S(6), -5, 5);
    gc_finish(&c, gc_wsum(&c, dtl_nn_silu(&c.g, x)));

    gc_init(&c, "gelu");
    x = gc_param_away(&c, 1, S(8), -4, 4, 0.01);
    gc_finish(&c, gc_wsum(&c, dtl_nn_gelu(&c.g, x)));

    gc_init(&c, "matmul vector-matrix");
    x = gc_param(&c, 1, S(3), -1, 1);
    dtl_val w = gc_param(&c, 3, S(2, 3, 4), -1, 1);
    y = dtl_nn_matmul(&c.g, x, w);
    CHECK(c.g.nodes[y].rank == 2 && c.g.nodes[y].shape[0] == 2 && c.g.nodes[y].shape[1] == 4);
    gc_finish(&c, gc_wsum(&c, y));

    gc_init(&c, "matmul matrix-vector");
    w = gc_param(&c, 2, S(2, 3), -1, 1);
    x = gc_param(&c, 1, S(3), -1, 1);
    gc_finish(&c, gc_wsum(&c, dtl_nn_matmul(&c.g, w, x)));

    /* dropout: a fixed step gives a fixed mask; the gradient is mask / (1 - p) */
    static const int64_t step = 7;
    gc_init(&c, "dropout");
    x = gc_param(&c, 2, S(4, 5), -1, 1);
    dtl_val sv = dtl_nn_step(&c.g);
    gc_bind(&c, sv, &step);
    gc_finish(&c, gc_wsum(&c, dtl_nn_dropout(&c.g, x, 0.3, sv, 42)));
}

/* ---- normalization, masks, sequence losses (issue 7) ------------------------------------------ */

static void test_norm(void)
{
    gcase c;
    gc_init(&c, "layer_norm rank 2");
    dtl_val x = gc_param(&c, 2, S(3, 5), -2, 2);
    dtl_val ga = gc_param(&c, 1, S(5), 0.5, 1.5);
    dtl_val be = gc_param(&c, 1, S(5), -1, 1);
    gc_finish(&c, gc_wsum(&c, dtl_nn_layer_norm(&c.g, x, ga, be, 1e-5)));

    gc_init(&c, "layer_norm rank 3");
    x = gc_param(&c, 3, S(2, 3, 4), -2, 2);
    ga = gc_param(&c, 1, S(4), 0.5, 1.5);
    be = gc_param(&c, 1, S(4), -1, 1);
    gc_finish(&c, gc_wsum(&c, dtl_nn_layer_norm(&c.g, x, ga, be, 0.1)));

    /* Training batch norm: through the batch statistics; rank 2 (features) and rank 4
     * (NCHW channels). */
    static const int64_t shapes[2][4] = {{6, 3, 0, 0}, {2, 3, 2, 2}};
    for (int k = 0; k < 2; k++) {
        uint32_t r = k ? 4 : 2;
        gc_init(&c, k ? "batch_norm train NCHW" : "batch_norm train");
        x = gc_param(&c, r, shapes[k], -2, 2);
        ga = gc_param(&c, 1, S(3), 0.5, 1.5);
        be = gc_param(&c, 1, S(3), -1, 1);
        dtl_val m, v;
        dtl_val y = dtl_nn_batch_norm_train(&c.g, x, ga, be, 1e-5, &m, &v);
        CHECK(c.g.nodes[m].rank == 1 && c.g.nodes[m].shape[0] == 3);
        CHECK(c.g.nodes[v].rank == 1 && c.g.nodes[v].shape[0] == 3);
        /* The statistics: the mean and the unbiased variance of each channel. */
        void **vals = eval_graph(&c.g, c.g.nnodes, c.binds, c.nb, 99);
        CHECK(vals != NULL);
        if (vals) {
            const double *xd = c.pdata[0];
            int64_t n = shapes[k][0] * (r == 4 ? shapes[k][2] * shapes[k][3] : 1);
            int64_t hw = r == 4 ? shapes[k][2] * shapes[k][3] : 1;
            for (int64_t ch = 0; ch < 3; ch++) {
                double s = 0, s2 = 0;
                for (int64_t b = 0; b < shapes[k][0]; b++)
                    for (int64_t p = 0; p < hw; p++)
                        s += xd[(b * 3 + ch) * hw + p];
                double mu = s / (double)n;
                for (int64_t b = 0; b < shapes[k][0]; b++)
                    for (int64_t p = 0; p < hw; p++) {
                        double d = xd[(b * 3 + ch) * hw + p] - mu;
                        s2 += d * d;
                    }
                CHECK(fabs(((double *)vals[m])[ch] - mu) < 1e-12);
                CHECK(fabs(((double *)vals[v])[ch] - s2 / (double)(n - 1)) < 1e-12);
            }
            free_vals(vals, c.g.nnodes);
        }
        gc_finish(&c, gc_wsum(&c, y));
    }

    gc_init(&c, "batch_norm eval");
    x = gc_param(&c, 4, S(2, 3, 2, 1), -2, 2);
    ga = gc_param(&c, 1, S(3), 0.5, 1.5);
    be = gc_param(&c, 1, S(3), -1, 1);
    dtl_val rm = gc_param(&c, 1, S(3), -1, 1);
    dtl_val rv = gc_param(&c, 1, S(3), 0.5, 2);
    gc_finish(&c, gc_wsum(&c, dtl_nn_batch_norm(&c.g, x, ga, be, rm, rv, 1e-5)));

    /* Causal self-attention weights: softmax over the masked scores. */
    gc_init(&c, "causal softmax");
    x = gc_param(&c, 3, S(2, 4, 4), -2, 2);
    dtl_val mask = dtl_nn_causal_mask(&c.g, 4);
    dtl_val fill = dtl_g_scalar(&c.g, DTL_DTYPE_F64, -1e9);
    gc_finish(&c, gc_wsum(&c, dtl_nn_softmax(&c.g, dtl_g_where(&c.g, mask, x, fill), 2)));

    static const int64_t labels[2][3] = {{2, 0, 3}, {3, 1, 1}};
    gc_init(&c, "cross_entropy [B, T, C]");
    x = gc_param(&c, 3, S(2, 3, 4), -3, 3);
    dtl_val y = dtl_g_const_data(&c.g, DTL_DTYPE_I64, 2, S(2, 3), labels);
    gc_finish(&c, dtl_nn_cross_entropy(&c.g, x, y));

    /* An embedding lookup of [B, T] ids, rows repeated. */
    gc_init(&c, "take [B, T] ids");
    x = gc_param(&c, 2, S(4, 3), -1, 1);
    y = dtl_g_const_data(&c.g, DTL_DTYPE_I64, 2, S(2, 3), labels);
    gc_finish(&c, gc_wsum(&c, dtl_g_gather(&c.g, x, y, 0)));
}

/* The values of the mask and of the top-k count (no gradients: integer results). */
static void test_masks_topk(void)
{
    gcase c;
    gc_init(&c, "causal_mask and topk");
    dtl_val mask = dtl_nn_causal_mask(&c.g, 3);
    static const double z[3][4] = {{0.1, 0.5, 0.2, 0.9}, {3, 1, 2, 0}, {1, 1, 1, 1}};
    static const int64_t lab[3] = {1, 2, 3};
    dtl_val zv = dtl_g_const_data(&c.g, DTL_DTYPE_F64, 2, S(3, 4), z);
    dtl_val yv = dtl_g_const_data(&c.g, DTL_DTYPE_I64, 1, S(3), lab);
    dtl_val k1 = dtl_nn_topk_count(&c.g, zv, yv, 1, DTL_DTYPE_I64);
    dtl_val k2 = dtl_nn_topk_count(&c.g, zv, yv, 2, DTL_DTYPE_I64);
    dtl_val k3 = dtl_nn_topk_count(&c.g, zv, yv, 3, DTL_DTYPE_I64);
    void **vals = eval_graph(&c.g, c.g.nnodes, NULL, 0, 1);
    CHECK(vals != NULL);
    if (vals) {
        const unsigned char *m = vals[mask];
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                CHECK(m[i * 3 + j] == (j <= i));
        /* row 0: label 1 (0.5) is 2nd; row 1: label 2 (2) is 2nd; row 2: a tie, counts */
        CHECK(*(int64_t *)vals[k1] == 1);
        CHECK(*(int64_t *)vals[k2] == 3);
        CHECK(*(int64_t *)vals[k3] == 3);
        free_vals(vals, c.g.nnodes);
    }
    gc_free(&c);
}

/* A whole 2-layer MLP: cross_entropy(relu(x @ w1 + b1) @ w2 + b2, y). */
static void test_mlp(void)
{
    static const int64_t labels[] = {1, 0, 2, 2, 1, 0};
    gcase c;
    gc_init(&c, "mlp");
    dtl_val x = dtl_g_input(&c.g, "x", DTL_DTYPE_F64, 2, S(6, 5));
    gc_bind(&c, x, gc_random(&c, 30, -1, 1));
    dtl_val y = dtl_g_input(&c.g, "y", DTL_DTYPE_I64, 1, S(6));
    gc_bind(&c, y, labels);
    dtl_val w1 = gc_param(&c, 2, S(5, 7), -0.8, 0.8);
    dtl_val b1 = gc_param(&c, 1, S(7), -0.3, 0.3);
    dtl_val w2 = gc_param(&c, 2, S(7, 3), -0.8, 0.8);
    dtl_val b2 = gc_param(&c, 1, S(3), -0.3, 0.3);
    dtl_val h = dtl_g_unary(&c.g, DTL_OP_RELU,
                            dtl_g_binary(&c.g, DTL_OP_ADD, dtl_g_matmul(&c.g, x, w1), b1));
    dtl_val z = dtl_g_binary(&c.g, DTL_OP_ADD, dtl_g_matmul(&c.g, h, w2), b2);
    dtl_val loss = dtl_nn_cross_entropy(&c.g, z, y);
    c.g.nodes[loss].role = DTL_ROLE_LOSS;
    /* no pre-activation within h of the relu's kink */
    void **vals = eval_graph(&c.g, h + 1, c.binds, c.nb, 0);
    CHECK(vals != NULL);
    for (int i = 0; vals && i < 42; i++)
        CHECK(fabs(((double *)vals[h - 1])[i]) > 1e-3);
    free_vals(vals, h + 1);
    gc_finish(&c, loss);
}

/* ---- pruning, unreached params, errors ------------------------------------------------------ */

static uint32_t count_role(const dtl_graph *g, dtl_role r)
{
    uint32_t n = 0;
    for (uint32_t v = 0; v < g->nnodes; v++)
        n += g->nodes[v].role == r;
    return n;
}

static void test_prune(void)
{
    /* The same loss with and without an extra term that depends on no param: the same
     * number of backward nodes (nothing is built for the extra term). */
    uint32_t counts[2];
    for (int extra = 0; extra < 2; extra++) {
        dtl_graph g;
        dtl_graph_init(&g);
        dtl_init init = {DTL_INIT_ZEROS, 0, 0, NULL};
        dtl_val p = dtl_g_param(&g, "p", DTL_DTYPE_F64, 1, S(3), init);
        dtl_val loss = dtl_g_reduce(&g, DTL_OP_SUM, dtl_g_unary(&g, DTL_OP_TANH, p), 1, false);
        if (extra) {
            dtl_val x = dtl_g_input(&g, "x", DTL_DTYPE_F64, 1, S(3));
            dtl_val e = dtl_g_reduce(&g, DTL_OP_SUM, dtl_g_unary(&g, DTL_OP_EXP, x), 1, false);
            loss = dtl_g_binary(&g, DTL_OP_ADD, loss, e);
        }
        uint32_t before = g.nnodes;
        dtl_val grad;
        bool unreached = true;
        dtl_err err = {0};
        CHECK(dtl_ad_grad(&g, loss, &p, 1, &grad, &unreached, &err));
        CHECK(!unreached);
        CHECK(count_role(&g, DTL_ROLE_BACKWARD) == g.nnodes - before);
        CHECK(g.role == DTL_ROLE_FORWARD);
        counts[extra] = g.nnodes - before;
        /* no backward node reads the input's branch */
        for (uint32_t v = before; extra && v < g.nnodes; v++)
            for (uint32_t i = 0; i < g.nodes[v].nin; i++)
                CHECK(g.nodes[v].in[i] < before - 4 || g.nodes[v].in[i] >= before);
        dtl_graph_free(&g);
    }
    CHECK(counts[0] == counts[1]);
}

static void test_unreached(void)
{
    gcase c;
    gc_init(&c, "unreached");
    dtl_val p = gc_param(&c, 1, S(3), -2, 2);   /* only through argmax and an integer cast */
    dtl_val q = gc_param(&c, 1, S(3), -2, 2);
    dtl_val r = gc_param(&c, 2, S(2, 2), -2, 2);   /* not used at all */
    (void)r;
    dtl_val am = dtl_g_cast(&c.g, dtl_g_argmax(&c.g, p, 0), DTL_DTYPE_F64);
    dtl_val ip = dtl_g_cast(&c.g, dtl_g_cast(&c.g, p, DTL_DTYPE_I64), DTL_DTYPE_F64);
    dtl_val s = dtl_g_binary(&c.g, DTL_OP_ADD, gc_wsum(&c, ip), am);
    dtl_val loss = dtl_g_binary(&c.g, DTL_OP_ADD, s, gc_wsum(&c, dtl_g_binary(&c.g, DTL_OP_MUL, q, q)));
    dtl_val grads[3];
    bool unreached[3] = {false, true, false};
    double worst = gc_check_grads(&c, loss, grads, unreached);
    /* p's finite differences see the integer cast's steps only if p crosses an integer within
     * h; its gradient is zero either way */
    CHECK(worst <= RTOL);
    CHECK(unreached[0] && !unreached[1] && unreached[2]);
    CHECK(c.g.nodes[grads[0]].op == DTL_OP_CONST && c.g.nodes[grads[0]].attr.cst.fill == 0);
    CHECK(c.g.nodes[grads[2]].rank == 2 && c.g.nodes[grads[2]].shape[1] == 2);
    gc_free(&c);

    /* the loss is a param itself */
    dtl_graph g;
    dtl_graph_init(&g);
    dtl_init init = {DTL_INIT_ZEROS, 0, 0, NULL};
    dtl_val w = dtl_g_param(&g, "w", DTL_DTYPE_F32, 0, NULL, init);
    dtl_val grad;
    bool un = true;
    dtl_err err = {0};
    CHECK(dtl_ad_grad(&g, w, &w, 1, &grad, &un, &err));
    CHECK(!un && g.nodes[grad].op == DTL_OP_CONST && g.nodes[grad].attr.cst.fill == 1);
    CHECK(g.nodes[grad].dtype == DTL_DTYPE_F32);
    dtl_graph_free(&g);
}

static void test_errors(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    dtl_init init = {DTL_INIT_ZEROS, 0, 0, NULL};
    dtl_val p = dtl_g_param(&g, "p", DTL_DTYPE_F32, 1, S(3), init);
    dtl_val x = dtl_g_input(&g, "x", DTL_DTYPE_F32, 0, NULL);
    dtl_val i = dtl_g_input(&g, "i", DTL_DTYPE_I64, 0, NULL);
    dtl_val grad;
    uint32_t before = g.nnodes;
    dtl_err err = {0};
    CHECK(!dtl_ad_grad(&g, p, &p, 1, &grad, NULL, &err));   /* not a scalar */
    CHECK(err.kind == DTL_ERR_USAGE && strstr(err.msg, "float scalar"));
    CHECK(!dtl_ad_grad(&g, i, &p, 1, &grad, NULL, &err));   /* not float */
    CHECK(!dtl_ad_grad(&g, 999, &p, 1, &grad, NULL, &err));
    CHECK(!dtl_ad_grad(&g, x, &x, 1, &grad, NULL, &err));   /* not a param */
    CHECK(err.kind == DTL_ERR_USAGE && strstr(err.msg, "not a param"));
    CHECK(g.nnodes == before);
    for (int op = 0; op < DTL_OP_COUNT; op++)   /* the table is in enum order */
        (void)dtl_ad_has_rule((dtl_op)op);
    CHECK(!dtl_ad_has_rule(DTL_OP_ARGMAX) && !dtl_ad_has_rule(DTL_OP_EQ));
    CHECK(dtl_ad_has_rule(DTL_OP_MATMUL) && dtl_ad_has_rule(DTL_OP_SCATTER_ADD));
    dtl_graph_free(&g);
}

/* Where finite differences cannot look (kinks and ties), the gradients PyTorch gives: a tie
 * of max splits evenly, relu and abs have 0 at 0, pow's exponent gradient is 0 at base 0, and
 * the stable softplus has 1/2 at 0. */
static void test_ties(void)
{
    static const double xv[4] = {1, 1, 0, -1};
    static const struct {
        const char *label;
        double want[4];
    } cases[] = {
        {"reduce_max tie", {0.5, 0.5, 0, 0}},
        {"max(x, 1) tie", {0.5, 0.5, 0, 0}},
        {"relu at 0", {1, 1, 0, 0}},
        {"abs at 0", {1, 1, 0, -1}},
        {"d/db 0^b", {0, 0, 0, 0}},
        {"softplus at 0", {0.7310585786300049, 0.7310585786300049, 0.5, 0.2689414213699951}},
        {"reduce_min tie", {0, 0, 0, 1}},
    };
    for (int k = 0; k < 7; k++) {
        dtl_graph g;
        dtl_graph_init(&g);
        dtl_init init = {DTL_INIT_DATA, 0, 0, xv};
        dtl_val x = dtl_g_param(&g, "x", DTL_DTYPE_F64, 1, S(4), init);
        dtl_val one = dtl_g_scalar(&g, DTL_DTYPE_F64, 1), zero = dtl_g_scalar(&g, DTL_DTYPE_F64, 0);
        dtl_val y;
        switch (k) {
        case 0: y = dtl_g_reduce(&g, DTL_OP_REDUCE_MAX, x, 1, false); break;
        case 1: y = dtl_g_binary(&g, DTL_OP_MAX, x, one); break;
        case 2: y = dtl_g_unary(&g, DTL_OP_RELU, x); break;
        case 3: y = dtl_g_unary(&g, DTL_OP_ABS, x); break;
        case 4: y = dtl_g_binary(&g, DTL_OP_POW, zero, x); break;   /* 0^x, x >= 0 at [0..2] */
        case 5: y = dtl_nn_softplus(&g, x); break;
        default: y = dtl_nn_reduce_min(&g, x, 1, false); break;
        }
        if (g.nodes[y].rank)
            y = dtl_g_reduce(&g, DTL_OP_SUM, y, 1, false);
        dtl_val grad;
        dtl_err err = {0};
        CHECK(dtl_ad_grad(&g, y, &x, 1, &grad, NULL, &err));
        binding b = {x, xv};
        void **vals = eval_graph(&g, g.nnodes, &b, 1, 0);
        CHECK(vals != NULL);
        for (int i = 0; vals && i < 4; i++) {
            double got = ((double *)vals[grad])[i], want = cases[k].want[i];
            if (k == 4 && i == 3)   /* 0^-1 = inf: PyTorch's mask is for b >= 0 only */
                continue;
            if (!(fabs(got - want) <= 1e-15))
                fprintf(stderr, "%s: [%d] = %.17g, want %.17g\n", cases[k].label, i, got, want);
            CHECK(fabs(got - want) <= 1e-15);
        }
        free_vals(vals, g.nnodes);
        dtl_graph_free(&g);
    }
}

/* sum_to_shape: broadcasting's adjoint on its own. */
static void test_sum_to_shape(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    dtl_val x = dtl_g_input(&g, "x", DTL_DTYPE_F32, 3, S(2, 3, 4));
    CHECK(dtl_ad_sum_to_shape(&g, x, 3, S(2, 3, 4)) == x);
    dtl_val a = dtl_ad_sum_to_shape(&g, x, 2, S(3, 1));
    CHECK(g.nodes[a].rank == 2 && g.nodes[a].shape[0] == 3 && g.nodes[a].shape[1] == 1);
    dtl_val b = dtl_ad_sum_to_shape(&g, x, 0, NULL);
    CHECK(g.nodes[b].rank == 0);
    dtl_graph_free(&g);
}

int main(void)
{
    test_unary();
    test_cast_float();
    test_binary();
    test_pow_const();
    test_where();
    test_reduce();
    test_matmul();
    test_moves();
    test_gather_scatter();
    test_windows();
    test_fanout();
    test_composites();
    test_norm();
    test_masks_topk();
    test_mlp();
    test_prune();
    test_unreached();
    test_errors();
    test_sum_to_shape();
    test_ties();
    CHECK_DONE();
}
