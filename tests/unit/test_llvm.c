/* tests/unit/test_llvm.c — the LLVM backend's own tests: small graphs that reach each of its
 * code paths (elementwise loops, row and column reductions, matmul with an epilogue, SINGLE
 * kernels through the reference shim, the thread pool above its threshold, staging and
 * commits of outputs, integer and cast corner cases, empty tensors), run side by side with
 * the reference backend and compared; its errors; its object cache; --emit's IR and
 * assembly. The broad differential tests (every op, random graphs, the examples) are
 * test_backend_*.
 * Exits 77 (skip) in a build without LLVM. */
#include "../../compiler/graph.h"
#include "../../runtime/exec.h"
#include "unit.h"

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef HAVE_LLVM
int main(void)
{
    printf("SKIP: this build has no LLVM backend\n");
    return 77;
}
#else

#include "../../compiler/autodiff.h"
#include "../../compiler/llvm/llvm.h"
#include "../../compiler/nnops.h"
#include "../../compiler/passes/fuse.h"
#include "../../compiler/passes/passes.h"

#define F32 DTL_DTYPE_F32
#define F64 DTL_DTYPE_F64
#define I32 DTL_DTYPE_I32
#define I64 DTL_DTYPE_I64
#define BOOL DTL_DTYPE_BOOL

static int64_t numel(uint32_t rank, const int64_t *shape)
{
    int64_t k = 1;
    for (uint32_t i = 0; i < rank; i++)
        k *= shape[i];
    return k;
}

/* Whether got equals want: integers and bools exactly, floats within tol * (|want| +
 * the tensor's largest |want|); NaN matches NaN. Prints the first difference. */
static bool same(const char *what, const dtl_tensor *got, const dtl_tensor *want, double tol)
{
    if (got->dtype != want->dtype || got->rank != want->rank ||
        memcmp(got->shape, want->shape, got->rank * sizeof *got->shape) != 0) {
        fprintf(stderr, "%s: dtype or shape differs\n", what);
        return false;
    }
    int64_t n = numel(got->rank, got->shape);
    double scale = 0;
    for (int64_t i = 0; i < n; i++) {
        double w = want->dtype == F32 ? ((const float *)want->data)[i]
                   : want->dtype == F64 ? ((const double *)want->data)[i] : 0;
        if (isfinite(w) && fabs(w) > scale)
            scale = fabs(w);
    }
    for (int64_t i = 0; i < n; i++) {
        double g, w;
        switch (got->dtype) {
        case F32: g = ((const float *)got->data)[i]; w = ((const float *)want->data)[i]; break;
        case F64: g = ((const double *)got->data)[i]; w = ((const double *)want->data)[i]; break;
        case I32: g = ((const int32_t *)got->data)[i]; w = ((const int32_t *)want->data)[i]; break;
        case I64:
            if (((const int64_t *)got->data)[i] != ((const int64_t *)want->data)[i]) {
                fprintf(stderr, "%s: [%lld] differs\n", what, (long long)i);
                return false;
            }
            continue;
        default:
            g = ((const uint8_t *)got->data)[i] != 0;
            w = ((const uint8_t *)want->data)[i] != 0;
            break;
        }
        bool ok = isnan(w) ? isnan(g)
                  : isinf(w) ? g == w
                  : got->dtype == F32 || got->dtype == F64 ? fabs(g - w) <= tol * (fabs(w) + scale)
                  : g == w;
        if (!ok) {
            fprintf(stderr, "%s: [%lld] got %.9g, want %.9g\n", what, (long long)i, g, w);
            return false;
        }
    }
    return true;
}

/* Runs g `runs` times on ref and on llvm, each over its own store of the same seed, with
 * the same inputs (in[], nin), comparing every output and every store entry after each
 * run. */
static bool differential(const char *what, const dtl_graph *g, const dtl_binding *in,
                         size_t nin, int runs, double tol)
{
    dtl_err err;
    dtl_store *sr = dtl_store_new(7), *sl = dtl_store_new(7);
    dtl_plan *pr = dtl_plan_new(&dtl_backend_ref, g, sr, NULL, &err);
    if (!pr)
        fprintf(stderr, "%s: ref: %s\n", what, err.msg);
    dtl_plan *pl = pr ? dtl_plan_new(&dtl_backend_llvm, g, sl, NULL, &err) : NULL;
    if (pr && !pl)
        fprintf(stderr, "%s: llvm: %s\n", what, err.msg);
    bool ok = pr && pl;
    for (int r = 0; ok && r < runs; r++) {
        if (!dtl_plan_run(pr, in, nin, &err) || !dtl_plan_run(pl, in, nin, &err)) {
            fprintf(stderr, "%s: run: %s\n", what, err.msg);
            ok = false;
            break;
        }
        for (uint32_t k = 0; ok && k < g->nouts; k++) {
            dtl_tensor a, b;
            char name[200];
            snprintf(name, sizeof name, "%s: run %d: output %s", what, r + 1, g->outs[k].name);
            ok = dtl_plan_output(pl, g->outs[k].name, &a, &err) &&
                 dtl_plan_output(pr, g->outs[k].name, &b, &err) && same(name, &a, &b, tol);
        }
        for (size_t k = 0; ok && k < dtl_store_count(sr); k++) {
            dtl_store_entry *e = dtl_store_at(sr, k);
            char name[200];
            snprintf(name, sizeof name, "%s: run %d: store %s", what, r + 1, e->name);
            ok = same(name, &dtl_store_find(sl, e->name)->t, &e->t, tol);
        }
    }
    dtl_plan_free(pl);
    dtl_plan_free(pr);
    dtl_store_free(sl);
    dtl_store_free(sr);
    return ok;
}

static dtl_binding bind(const char *name, const void *data, dtl_dtype dt, uint32_t rank,
                        const int64_t *shape)
{
    dtl_binding b = {name, data, dt, rank, {0}};
    memcpy(b.shape, shape, rank * sizeof *shape);
    return b;
}

/* Uniform floats in [lo, hi), from a small LCG (deterministic). */
static void fill(float *x, int64_t n, float lo, float hi, uint32_t seed)
{
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = lo + (hi - lo) * (float)(seed >> 8) / 16777216.0f;
    }
}

/* A dense layer with relu, a loss, bias and weight updates: matmul epilogues, row and
 * column reductions, in-place and arena commits. */
static void test_layer(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    int64_t xs[2] = {9, 13}, ws[2] = {13, 7}, bs[1] = {7};
    dtl_init glorot = {DTL_INIT_GLOROT_UNIFORM, 0, 0, NULL};
    dtl_init zeros = {DTL_INIT_ZEROS, 0, 0, NULL};
    dtl_val x = dtl_g_input(&g, "x", F32, 2, xs);
    dtl_val w = dtl_g_param(&g, "w", F32, 2, ws, glorot);
    dtl_val b = dtl_g_param(&g, "b", F32, 1, bs, zeros);
    dtl_val h = dtl_g_unary(&g, DTL_OP_RELU, dtl_g_binary(&g, DTL_OP_ADD, dtl_g_matmul(&g, x, w), b));
    dtl_val loss = dtl_g_reduce(&g, DTL_OP_SUM, dtl_g_binary(&g, DTL_OP_MUL, h, h), 3, false);
    dtl_val colsum = dtl_g_reduce(&g, DTL_OP_SUM, h, 1, false);        /* [7] */
    dtl_val rowmax = dtl_g_reduce(&g, DTL_OP_REDUCE_MAX, h, 2, true);  /* [9, 1] */
    dtl_val lr = dtl_g_scalar(&g, F32, 0.01);
    dtl_val gw = dtl_g_matmul(&g, dtl_g_transpose(&g, x, (const uint32_t[]){1, 0}), h);
    dtl_g_output(&g, DTL_OUT_LOSS, "loss", loss, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "rowmax", rowmax, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_PARAM, "b", dtl_g_binary(&g, DTL_OP_SUB, b,
                                                      dtl_g_binary(&g, DTL_OP_MUL, colsum, lr)), b);
    dtl_g_output(&g, DTL_OUT_PARAM, "w", dtl_g_binary(&g, DTL_OP_SUB, w,
                                                      dtl_g_binary(&g, DTL_OP_MUL, gw, lr)), w);
    float xv[9 * 13];
    fill(xv, 9 * 13, -1, 1, 1);
    dtl_binding in = bind("x", xv, F32, 2, xs);
    CHECK(differential("layer", &g, &in, 1, 3, 1e-5));
    dtl_graph_free(&g);
}

/* A matmul whose root is not kept: gemm writes C where an epilogue output goes, and every
 * element reads C before that output is stored there (an epilogue member that does not read
 * the root, stored first, once overwrote C). */
static void test_epilogue_outs(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    int64_t as[2] = {5, 3}, ws[2] = {3, 17}, xs[2] = {1, 17};
    dtl_val a = dtl_g_input(&g, "a", F32, 2, as);
    dtl_val w = dtl_g_input(&g, "w", F32, 2, ws);
    dtl_val x0 = dtl_g_input(&g, "x0", F32, 2, xs);
    dtl_val x1 = dtl_g_input(&g, "x1", F32, 2, xs);
    dtl_val x = dtl_g_binary(&g, DTL_OP_ADD, x0, x1);
    dtl_val xb = dtl_g_broadcast(&g, x, 2, (const int64_t[]){5, 17});
    dtl_g_output(&g, DTL_OUT_VALUE, "x", xb, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "out", dtl_g_binary(&g, DTL_OP_ADD, dtl_g_matmul(&g, a, w), xb),
                 DTL_VAL_NONE);
    float av[15], wv[51], x0v[17], x1v[17];
    fill(av, 15, -1, 1, 5);
    fill(wv, 51, -1, 1, 6);
    fill(x0v, 17, -1, 1, 7);
    fill(x1v, 17, -1, 1, 8);
    dtl_binding in[4] = {bind("a", av, F32, 2, as), bind("w", wv, F32, 2, ws),
                         bind("x0", x0v, F32, 2, xs), bind("x1", x1v, F32, 2, xs)};
    CHECK(differential("epilogue outs", &g, in, 4, 2, 1e-5));
    dtl_graph_free(&g);
}

/* Outputs that are bound leaves read the values from before the run (staging), and a swap
 * of two parameters commits both old values. */
static void test_staging(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    int64_t s[1] = {5};
    dtl_init u = {DTL_INIT_UNIFORM, -1, 1, NULL};
    dtl_val a = dtl_g_param(&g, "a", F32, 1, s, u);
    dtl_val b = dtl_g_param(&g, "b", F32, 1, s, u);
    dtl_val x = dtl_g_input(&g, "x", F32, 1, s);
    dtl_g_output(&g, DTL_OUT_VALUE, "a0", a, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "x0", x, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_PARAM, "a", b, a);
    dtl_g_output(&g, DTL_OUT_PARAM, "b", a, b);
    float xv[5] = {1, 2, 3, 4, 5};
    dtl_binding in = bind("x", xv, F32, 1, s);
    CHECK(differential("staging", &g, &in, 1, 3, 0));

    /* By hand: after one run a0 is the old a, a the old b. */
    dtl_err err;
    dtl_store *st = dtl_store_new(3);
    dtl_plan *p = dtl_plan_new(&dtl_backend_llvm, &g, st, NULL, &err);
    CHECK(p != NULL);
    if (p) {
        float olda[5], oldb[5];
        memcpy(olda, dtl_store_find(st, "a")->t.data, sizeof olda);
        memcpy(oldb, dtl_store_find(st, "b")->t.data, sizeof oldb);
        CHECK(dtl_plan_run(p, &in, 1, &err));
        dtl_tensor a0, x0;
        CHECK(dtl_plan_output(p, "a0", &a0, &err) && memcmp(a0.data, olda, sizeof olda) == 0);
        CHECK(memcmp(dtl_store_find(st, "a")->t.data, oldb, sizeof oldb) == 0);
        CHECK(memcmp(dtl_store_find(st, "b")->t.data, olda, sizeof olda) == 0);
        CHECK(dtl_plan_output(p, "x0", &x0, &err) && memcmp(x0.data, xv, sizeof xv) == 0);
        CHECK(!dtl_plan_output(p, "x1", &x0, &err) && err.kind == DTL_ERR_USAGE &&
              strstr(err.msg, "no output named \"x1\""));
        dtl_plan_stats ps;
        dtl_plan_stats_get(p, &ps);
        CHECK(ps.runs == 1);
        /* four staged outputs of 5 floats, 64-byte blocks */
        CHECK(ps.arena_bytes >= 4 * 64 && ps.naive_bytes >= ps.arena_bytes);
        CHECK(ps.llvm_seconds > 0 && ps.passes_seconds >= 0);
    }
    dtl_plan_free(p);
    dtl_store_free(st);
    dtl_graph_free(&g);
}

/* Loops above the pool's threshold (elementwise, row and column reductions, a max with a
 * NaN), in f32 and f64, broadcasting. */
static void test_big(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    int64_t xs[2] = {300, 203}, cs[1] = {203};
    dtl_val x = dtl_g_input(&g, "x", F32, 2, xs);
    dtl_val c = dtl_g_input(&g, "c", F32, 1, cs);
    dtl_val y = dtl_g_binary(&g, DTL_OP_ADD, dtl_g_unary(&g, DTL_OP_EXP, x),
                             dtl_g_binary(&g, DTL_OP_MUL, x, c));
    dtl_val d = dtl_g_cast(&g, y, F64);
    dtl_val t = dtl_g_unary(&g, DTL_OP_TANH, dtl_g_unary(&g, DTL_OP_SIGMOID, d));
    dtl_g_output(&g, DTL_OUT_VALUE, "y", y, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "rows", dtl_g_reduce(&g, DTL_OP_SUM, y, 2, false),
                 DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "cols", dtl_g_reduce(&g, DTL_OP_SUM, y, 1, true),
                 DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "colmax",
                 dtl_g_reduce(&g, DTL_OP_REDUCE_MAX, x, 1, false), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "rowmax",
                 dtl_g_reduce(&g, DTL_OP_REDUCE_MAX, d, 2, false), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "t", t, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "all", dtl_g_reduce(&g, DTL_OP_SUM, t, 3, false),
                 DTL_VAL_NONE);
    float *xv = malloc(300 * 203 * sizeof *xv), cv[203];
    fill(xv, 300 * 203, -3, 3, 2);
    fill(cv, 203, -1, 1, 3);
    xv[5 * 203 + 17] = NAN;     /* colmax[17] and rowmax[5] are NaN */
    dtl_binding in[2] = {bind("x", xv, F32, 2, xs), bind("c", cv, F32, 1, cs)};
    CHECK(differential("big", &g, in, 2, 2, 1e-5));
    free(xv);
    dtl_graph_free(&g);
}

/* Row kernels on the pool (300 rows of 203, f32, and in f64): softmax and layer norm, forward
 * and backward (the gradient of sum(y * w)), with a NaN in one row, -inf in another, a row
 * all -inf (NaN out), a +inf (NaN where inf - inf), huge values; each is one ROW kernel. */
static void test_rows(void)
{
    for (int f64 = 0; f64 < 2; f64++) {
        dtl_graph g;
        dtl_graph_init(&g);
        int64_t xs[2] = {300, 203}, cs[1] = {203};
        dtl_dtype dt = f64 ? DTL_DTYPE_F64 : F32;
        dtl_val x = dtl_g_param(&g, "x", F32, 2, xs, (dtl_init){DTL_INIT_ZEROS, 0, 0, NULL});
        dtl_val xi = dtl_g_binary(&g, DTL_OP_ADD, dtl_g_input(&g, "xi", F32, 2, xs), x);
        dtl_val w = dtl_g_input(&g, "w", F32, 2, xs);
        if (f64) {
            xi = dtl_g_cast(&g, xi, dt);
            w = dtl_g_cast(&g, w, dt);
        }
        dtl_val ga = dtl_g_param(&g, "g", dt, 1, cs, (dtl_init){DTL_INIT_UNIFORM, 0.5, 1.5, NULL});
        dtl_val sm = dtl_nn_softmax(&g, xi, 1);
        dtl_val ln = dtl_nn_layer_norm(&g, xi, ga, ga, 1e-5);
        dtl_val l = dtl_g_binary(&g, DTL_OP_MUL, dtl_g_binary(&g, DTL_OP_ADD, sm, ln), w);
        l = dtl_g_reduce(&g, DTL_OP_SUM, l, 3, false);
        dtl_val ps[2] = {x, ga}, gs[2];
        dtl_err err;
        CHECK(dtl_ad_grad(&g, l, ps, 2, gs, NULL, &err));
        dtl_g_output(&g, DTL_OUT_VALUE, "softmax", sm, DTL_VAL_NONE);
        dtl_g_output(&g, DTL_OUT_VALUE, "layer_norm", ln, DTL_VAL_NONE);
        dtl_g_output(&g, DTL_OUT_VALUE, "dx", gs[0], DTL_VAL_NONE);
        dtl_g_output(&g, DTL_OUT_VALUE, "dg", gs[1], DTL_VAL_NONE);
        dtl_graph pg;
        CHECK(dtl_passes_run(&pg, &g, NULL, &err));
        dtl_kprog *kp = dtl_fuse(&pg, NULL);
        uint32_t rows = 0;
        for (uint32_t k = 0; k < kp->nk; k++)
            rows += kp->k[k].kind == DTL_K_ROW;
        CHECK(rows >= 1 && rows <= 2);   /* softmax and layer norm, forward and backward */
        dtl_kprog_free(kp);
        dtl_graph_free(&pg);
        float *xv = malloc(300 * 203 * sizeof *xv), *wv = malloc(300 * 203 * sizeof *wv);
        fill(xv, 300 * 203, -3, 3, 4);
        fill(wv, 300 * 203, -1, 1, 5);
        xv[5 * 203 + 17] = NAN;
        xv[7 * 203 + 3] = -INFINITY;
        for (int j = 0; j < 203; j++)
            xv[9 * 203 + j] = -INFINITY;
        xv[11 * 203 + 100] = INFINITY;
        for (int j = 0; j < 203; j++)
            xv[13 * 203 + j] *= 1e30f;
        dtl_binding in[2] = {bind("xi", xv, F32, 2, xs), bind("w", wv, F32, 2, xs)};
        CHECK(differential(f64 ? "rows f64" : "rows f32", &g, in, 2, 2, f64 ? 1e-12 : 1e-5));
        free(xv);
        free(wv);
        dtl_graph_free(&g);
    }
}

/* Casts to integers saturate and take NaN to 0; integer division by 0 is 0, by -1 negates
 * (wrapping); bools are 0/1; all bit for bit with ref. */
static void test_ints(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    int64_t s[1] = {9};
    dtl_val f = dtl_g_input(&g, "f", F32, 1, s);
    dtl_val a = dtl_g_input(&g, "a", I32, 1, s);
    dtl_val b = dtl_g_input(&g, "b", I32, 1, s);
    dtl_g_output(&g, DTL_OUT_VALUE, "to_i32", dtl_g_cast(&g, f, I32), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "to_i64", dtl_g_cast(&g, f, I64), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "to_bool", dtl_g_cast(&g, f, BOOL), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "div", dtl_g_binary(&g, DTL_OP_DIV, a, b), DTL_VAL_NONE);
    dtl_val a64 = dtl_g_cast(&g, a, I64);
    dtl_g_output(&g, DTL_OUT_VALUE, "div64", dtl_g_binary(&g, DTL_OP_DIV, a64,
                                                           dtl_g_cast(&g, b, I64)), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "neg", dtl_g_unary(&g, DTL_OP_NEG, a), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "abs", dtl_g_unary(&g, DTL_OP_ABS, a), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "mul", dtl_g_binary(&g, DTL_OP_MUL, a, a), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "isum", dtl_g_reduce(&g, DTL_OP_SUM, a, 1, false),
                 DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "imax", dtl_g_reduce(&g, DTL_OP_REDUCE_MAX, a, 1, false),
                 DTL_VAL_NONE);
    dtl_val lt = dtl_g_binary(&g, DTL_OP_LT, a, b);
    dtl_g_output(&g, DTL_OUT_VALUE, "where", dtl_g_where(&g, lt, f, dtl_g_unary(&g, DTL_OP_NEG, f)),
                 DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "not", dtl_g_unary(&g, DTL_OP_NOT, lt), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "fmax", dtl_g_binary(&g, DTL_OP_MAX, f, dtl_g_scalar(&g, F32, 0)),
                 DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "relu", dtl_g_unary(&g, DTL_OP_RELU, f), DTL_VAL_NONE);
    float fv[9] = {NAN, INFINITY, -INFINITY, 3e9f, -3e9f, -2.7f, 2.7f, 0.0f, -0.0f};
    int32_t av[9] = {7, -7, INT32_MIN, INT32_MIN, 5, -5, INT32_MAX, 0, 100};
    int32_t bv[9] = {0, -1, -1, 0, 2, 2, -1, 3, -7};
    dtl_binding in[3] = {bind("f", fv, F32, 1, s), bind("a", av, I32, 1, s),
                         bind("b", bv, I32, 1, s)};
    CHECK(differential("ints", &g, in, 3, 1, 0));
    dtl_graph_free(&g);
}

/* Empty tensors: a sum over an empty axis is zeros; an empty elementwise loop runs no
 * element; a matmul with k = 0 is zeros. */
static void test_empty(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    int64_t xs[2] = {4, 0}, ws[2] = {0, 3};
    dtl_val x = dtl_g_input(&g, "x", F32, 2, xs);
    dtl_val w = dtl_g_input(&g, "w", F32, 2, ws);
    dtl_g_output(&g, DTL_OUT_VALUE, "s", dtl_g_reduce(&g, DTL_OP_SUM, x, 2, false), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "e", dtl_g_unary(&g, DTL_OP_EXP, x), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "m", dtl_g_matmul(&g, x, w), DTL_VAL_NONE);
    float dummy[1] = {0};
    dtl_binding in[2] = {bind("x", dummy, F32, 2, xs), bind("w", dummy, F32, 2, ws)};
    CHECK(differential("empty", &g, in, 2, 1, 0));
    dtl_graph_free(&g);
}

/* Errors: the same messages as ref for bindings; a gather index out of range fails the run
 * naming the node. */
static void test_errors(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    int64_t ts[2] = {4, 3}, is[1] = {2};
    dtl_val t = dtl_g_input(&g, "t", F32, 2, ts);
    dtl_val idx = dtl_g_input(&g, "idx", I64, 1, is);
    dtl_g_output(&g, DTL_OUT_VALUE, "rows", dtl_g_gather(&g, t, idx, 0), DTL_VAL_NONE);
    float tv[12] = {0};
    int64_t good[2] = {3, 0}, bad[2] = {1, 4};
    dtl_err e1, e2;
    dtl_store *st = dtl_store_new(1);
    dtl_plan *pl = dtl_plan_new(&dtl_backend_llvm, &g, st, NULL, &e1);
    dtl_plan *pr = dtl_plan_new(&dtl_backend_ref, &g, st, NULL, &e2);
    CHECK(pl && pr);
    if (pl && pr) {
        dtl_binding in[2] = {bind("t", tv, F32, 2, ts), bind("idx", good, I64, 1, is)};
        CHECK(!dtl_plan_run(pl, in, 1, &e1) && !dtl_plan_run(pr, in, 1, &e2));
        CHECK(e1.kind == DTL_ERR_MISMATCH);
        CHECK_STR(e1.msg, e2.msg);
        in[1].shape[0] = 3;
        CHECK(!dtl_plan_run(pl, in, 2, &e1) && !dtl_plan_run(pr, in, 2, &e2));
        CHECK_STR(e1.msg, e2.msg);
        in[1].shape[0] = 2;
        CHECK(dtl_plan_run(pl, in, 2, &e1));
        in[1].data = bad;
        CHECK(!dtl_plan_run(pl, in, 2, &e1) && !dtl_plan_run(pr, in, 2, &e2));
        CHECK(strstr(e1.msg, "gather") != NULL);
        CHECK_STR(e1.msg, e2.msg);
        in[1].data = good;
        CHECK(dtl_plan_run(pl, in, 2, &e1));   /* a failed run leaves the plan usable */
        dtl_tensor r;
        CHECK(!dtl_plan_output(pl, "nope", &r, &e1) && strstr(e1.msg, "rows") != NULL);
    }
    dtl_plan_free(pl);
    dtl_plan_free(pr);
    dtl_store_free(st);
    dtl_graph_free(&g);
}

/* --emit=llvm and --emit=asm: the step function, optimized for this CPU. */
static void test_emit(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    int64_t s[1] = {4096};
    dtl_val x = dtl_g_input(&g, "x", F32, 1, s);
    dtl_g_output(&g, DTL_OUT_VALUE, "y",
                 dtl_g_binary(&g, DTL_OP_MUL, x, dtl_g_scalar(&g, F32, 3)), DTL_VAL_NONE);
    for (int as = 0; as < 2; as++) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        dtl_err err;
        bool ok = dtl_llvm_emit(f, &g, as, &err);
        fclose(f);
        CHECK(ok);
        if (!as) {
            CHECK(buf && strstr(buf, "define i32 @dtl_step(") != NULL);
            CHECK(buf && strstr(buf, "fmul <") != NULL);   /* vectorized */
        } else {
            CHECK(buf && strstr(buf, "dtl_step:") != NULL);
        }
        free(buf);
    }
    dtl_graph_free(&g);

    /* A row sum: explicit vector code, f32 accumulated in double lanes. */
    dtl_graph_init(&g);
    int64_t rs[2] = {64, 256};
    dtl_val r = dtl_g_input(&g, "r", F32, 2, rs);
    dtl_g_output(&g, DTL_OUT_VALUE, "s", dtl_g_reduce(&g, DTL_OP_SUM, r, 2, false), DTL_VAL_NONE);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    dtl_err err;
    CHECK(dtl_llvm_emit(f, &g, false, &err));
    fclose(f);
    CHECK(buf && strstr(buf, "fadd <8 x double>") != NULL);
    free(buf);
    dtl_graph_free(&g);
}

/* One fused kernel reading 150 distinct store entries (one inner-function parameter each). */
static void test_many_slots(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    int64_t s[1] = {2048};
    dtl_init u = {DTL_INIT_UNIFORM, -1, 1, NULL};
    dtl_val acc = DTL_VAL_NONE;
    for (int i = 0; i < 150; i++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", i);
        dtl_val p = dtl_g_param(&g, name, F32, 1, s, u);
        acc = acc == DTL_VAL_NONE ? p : dtl_g_binary(&g, DTL_OP_ADD, acc, p);
    }
    dtl_g_output(&g, DTL_OUT_VALUE, "sum", acc, DTL_VAL_NONE);
    CHECK(differential("many slots", &g, NULL, 0, 1, 1e-6));
    dtl_graph_free(&g);
}

/* The files in dir (the object cache's), the first one's name in first. */
static int count_files(const char *dir, char *first, size_t len)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') {
            if (n++ == 0 && first)
                snprintf(first, len, "%s/%s", dir, e->d_name);
        }
    closedir(d);
    return n;
}

/* Runs y = x * 3 + 1 over 4096 elements on a fresh plan; true if y is right. */
static bool plan_and_run(const dtl_graph *g)
{
    static float xv[4096];
    int64_t s[1] = {4096};
    for (int i = 0; i < 4096; i++)
        xv[i] = (float)i;
    dtl_err err;
    dtl_store *st = dtl_store_new(1);
    dtl_plan *p = dtl_plan_new(&dtl_backend_llvm, g, st, NULL, &err);
    dtl_binding in = bind("x", xv, F32, 1, s);
    dtl_tensor y;
    bool ok = p && dtl_plan_run(p, &in, 1, &err) && dtl_plan_output(p, "y", &y, &err);
    for (int i = 0; ok && i < 4096; i++)
        ok = ((const float *)y.data)[i] == (float)i * 3 + 1;
    if (!ok)
        fprintf(stderr, "plan_and_run: %s\n", p ? "wrong result" : err.msg);
    dtl_plan_free(p);
    dtl_store_free(st);
    return ok;
}

/* The object cache: a miss writes one object, a hit reads it (no new file), a broken file is
 * compiled again and replaced, DTL_CACHE_DIR=off writes nothing. */
static void test_cache(void)
{
    char dir[] = "/tmp/dtl-test-llvm-XXXXXX", sub[64], file[400];
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    snprintf(sub, sizeof sub, "%s/llvm", dir);
    const char *old = getenv("DTL_CACHE_DIR");
    char *saved = old ? strdup(old) : NULL;
    setenv("DTL_CACHE_DIR", dir, 1);
    dtl_graph g;
    dtl_graph_init(&g);
    int64_t s[1] = {4096};
    dtl_val x = dtl_g_input(&g, "x", F32, 1, s);
    dtl_g_output(&g, DTL_OUT_VALUE, "y",
                 dtl_g_binary(&g, DTL_OP_ADD, dtl_g_binary(&g, DTL_OP_MUL, x, dtl_g_scalar(&g, F32, 3)),
                              dtl_g_scalar(&g, F32, 1)), DTL_VAL_NONE);
    CHECK(count_files(sub, NULL, 0) == 0);
    CHECK(plan_and_run(&g));
    CHECK(count_files(sub, file, sizeof file) == 1);
    CHECK(plan_and_run(&g));   /* from the cache */
    CHECK(count_files(sub, NULL, 0) == 1);
    FILE *f = fopen(file, "wb");
    CHECK(f != NULL);
    if (f) {
        fputs("not an object file", f);
        fclose(f);
    }
    CHECK(plan_and_run(&g));   /* compiled again */
    f = fopen(file, "rb");
    char magic[4] = {0};
    CHECK(f && fread(magic, 1, 4, f) == 4 && memcmp(magic, "\177ELF", 4) == 0);
    if (f)
        fclose(f);
    unlink(file);
    setenv("DTL_CACHE_DIR", "off", 1);
    CHECK(plan_and_run(&g));
    CHECK(count_files(sub, NULL, 0) == 0);
    rmdir(sub);
    CHECK(rmdir(dir) == 0);
    if (saved)
        setenv("DTL_CACHE_DIR", saved, 1);
    else
        unsetenv("DTL_CACHE_DIR");
    free(saved);
    dtl_graph_free(&g);
}

int main(void)
{
    test_cache();
    test_layer();
    test_epilogue_outs();
    test_staging();
    test_big();
    test_rows();
    test_ints();
    test_empty();
    test_errors();
    test_emit();
    test_many_slots();
    CHECK_DONE();
}

#endif
