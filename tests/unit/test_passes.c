/* tests/unit/test_passes.c — the graph passes (compiler/passes/passes.h).
 *
 * (1) Hand-built graphs: each rewrite fires where it should and not where it must not
 *     (x * 0, x - x, RNG draws of different streams, NaN, widening broadcasts, values a
 *     splat cannot hold, folds too large to materialize).
 * (2) Semantic equivalence: the step, eval and infer graphs of every example and of small
 *     programs covering the builtins run on the reference backend before and after each
 *     pass and the whole pipeline, with the same inputs and store seed, for two steps:
 *     every output bit for bit after fold, cse and dce, within 1e-6 relative after simplify.
 * (3) The MNIST MLP's step graph shrinks: fewer nodes, no duplicate splat constants, and
 *     the pipeline is a fixed point on its own result.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../compiler/lower.h"
#include "../../compiler/passes/passes.h"
#include "../../lang/check.h"
#include "../../runtime/exec.h"
#include "unit.h"

#ifndef DTL_SRC_STDLIB_DIR
#define DTL_SRC_STDLIB_DIR "stdlib"
#endif

/* ---- helpers ---- */

/* Runs pass `name` alone on in into out; the result must verify. */
static void run_pass(const char *name, const dtl_graph *in, dtl_graph *out)
{
    const dtl_pass *p = dtl_pass_find(name);
    CHECK(p != NULL);
    if (!p) {
        dtl_graph_init(out);
        return;
    }
    p->run(out, in);
    bool ok = dtl_graph_verify(out, stderr);
    CHECK(ok);
    if (!ok) {
        fprintf(stderr, "--- after %s:\n", name);
        dtl_graph_print(out, stderr);
    }
}

static const dtl_node *out_node(const dtl_graph *g, const char *name)
{
    for (uint32_t k = 0; k < g->nouts; k++)
        if (strcmp(g->outs[k].name, name) == 0)
            return &g->nodes[g->outs[k].val];
    return NULL;
}

static dtl_val out_val(const dtl_graph *g, const char *name)
{
    for (uint32_t k = 0; k < g->nouts; k++)
        if (strcmp(g->outs[k].name, name) == 0)
            return g->outs[k].val;
    return DTL_VAL_NONE;
}

static unsigned count_op(const dtl_graph *g, dtl_op op)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < g->nnodes; i++)
        n += g->nodes[i].op == op;
    return n;
}

/* n is a splat of v (compared as the node's dtype: an f32 fill is read as a float). */
static bool is_splat(const dtl_node *n, double v)
{
    if (!n || n->op != DTL_OP_CONST || n->attr.cst.data)
        return false;
    double f = n->attr.cst.fill;
    if (isnan(v))
        return isnan(f);
    return n->dtype == DTL_DTYPE_F32 ? (float)f == (float)v : f == v;
}

static unsigned equivalent_on(const char *what, const dtl_graph *a, const dtl_graph *b,
                              bool exact, double rel, const dtl_binding *fixed, size_t nfixed);

static const int64_t S2[] = {2}, S3[] = {3}, S23[] = {2, 3}, S32[] = {3, 2};

/* A graph with INPUTs x, y : f32[2, 3] and the builder's node as output "out". */
static void two_inputs(dtl_graph *g, dtl_val *x, dtl_val *y)
{
    dtl_graph_init(g);
    *x = dtl_g_input(g, "x", DTL_DTYPE_F32, 2, S23);
    *y = dtl_g_input(g, "y", DTL_DTYPE_F32, 2, S23);
}

/* ---- (1) hand-built graphs: fold ---- */

static void test_fold(void)
{
    dtl_graph g, f;
    dtl_val x, y;

    /* Chains of splats fold to splats of any size; shape-only ops keep the fill. */
    two_inputs(&g, &x, &y);
    dtl_val c2 = dtl_g_scalar(&g, DTL_DTYPE_F32, 2), c3 = dtl_g_scalar(&g, DTL_DTYPE_F32, 3);
    dtl_val five = dtl_g_binary(&g, DTL_OP_ADD, c2, c3);
    dtl_g_output(&g, DTL_OUT_VALUE, "five", five, DTL_VAL_NONE);
    dtl_val big = dtl_g_broadcast(&g, dtl_g_reshape(&g, c3, 1, (const int64_t[]){1}), 2,
                                  (const int64_t[]){300, 400});
    dtl_val nb = dtl_g_unary(&g, DTL_OP_NEG, big);
    dtl_g_output(&g, DTL_OUT_VALUE, "big", nb, DTL_VAL_NONE);
    dtl_val t = dtl_g_transpose(&g, nb, (const uint32_t[]){1, 0});
    dtl_g_output(&g, DTL_OUT_VALUE, "t", dtl_g_reduce(&g, DTL_OP_REDUCE_MAX, t, 1, false),
                 DTL_VAL_NONE);
    /* exp of a big splat: one element evaluated, the rest a splat. */
    dtl_val z = dtl_g_const(&g, DTL_DTYPE_F32, 2, (const int64_t[]){100, 100}, 0.5);
    dtl_g_output(&g, DTL_OUT_VALUE, "e", dtl_g_unary(&g, DTL_OP_EXP, z), DTL_VAL_NONE);
    /* Small data: evaluated by the reference kernel, bit for bit. */
    dtl_val d = dtl_g_const_data(&g, DTL_DTYPE_F32, 1, S3, (const float[]){0.5f, 1, -2});
    dtl_g_output(&g, DTL_OUT_VALUE, "ed", dtl_g_unary(&g, DTL_OP_EXP, d), DTL_VAL_NONE);
    /* sum of a splat accumulates in double and rounds once. */
    dtl_val tenth = dtl_g_const(&g, DTL_DTYPE_F32, 1, S3, 0.1);
    dtl_g_output(&g, DTL_OUT_VALUE, "s", dtl_g_reduce(&g, DTL_OP_SUM, tenth, 1, false),
                 DTL_VAL_NONE);
    /* NaN folds like any value (max propagates it). */
    dtl_val nan = dtl_g_unary(&g, DTL_OP_LOG, dtl_g_scalar(&g, DTL_DTYPE_F32, -1));
    dtl_g_output(&g, DTL_OUT_VALUE, "nan",
                 dtl_g_binary(&g, DTL_OP_MAX, nan, dtl_g_scalar(&g, DTL_DTYPE_F32, 1)),
                 DTL_VAL_NONE);
    /* Integer division by zero is 0 (ref.h). */
    dtl_g_output(&g, DTL_OUT_VALUE, "idiv",
                 dtl_g_binary(&g, DTL_OP_DIV, dtl_g_scalar(&g, DTL_DTYPE_I64, 7),
                              dtl_g_scalar(&g, DTL_DTYPE_I64, 0)),
                 DTL_VAL_NONE);
    /* An i64 beyond 2^53 cannot be a splat's double fill: it becomes data. */
    int64_t huge = ((int64_t)1 << 60) + 1;
    dtl_val hv = dtl_g_const_data(&g, DTL_DTYPE_I64, 0, NULL, &huge);
    dtl_g_output(&g, DTL_OUT_VALUE, "huge",
                 dtl_g_binary(&g, DTL_OP_ADD, hv, dtl_g_scalar(&g, DTL_DTYPE_I64, 1)),
                 DTL_VAL_NONE);
    /* A small matmul of constants. */
    dtl_val ma = dtl_g_const_data(&g, DTL_DTYPE_F32, 2, S23, (const float[]){1, 2, 3, 4, 5, 6});
    dtl_val mb = dtl_g_const_data(&g, DTL_DTYPE_F32, 2, S32, (const float[]){1, 0, 0, 1, 1, 1});
    dtl_g_output(&g, DTL_OUT_VALUE, "mm", dtl_g_matmul(&g, ma, mb), DTL_VAL_NONE);
    /* An f32 folded from an f64 prints as the float it is: 0.1, not 0.10000000149011612. */
    dtl_g_output(&g, DTL_OUT_VALUE, "tenth",
                 dtl_g_cast(&g, dtl_g_scalar(&g, DTL_DTYPE_F64, 0.1), DTL_DTYPE_F32),
                 DTL_VAL_NONE);
    /* Data whose elements are all equal becomes a splat. */
    dtl_val eqd = dtl_g_const_data(&g, DTL_DTYPE_F32, 1, S3, (const float[]){4, 4, 4});
    dtl_g_output(&g, DTL_OUT_VALUE, "eqd", eqd, DTL_VAL_NONE);
    /* Must not fold: a large non-splat result, a gather out of range, leaves, reads of
     * inputs, rng and iota. */
    float *ramp = malloc(5000 * sizeof *ramp);
    for (int i = 0; i < 5000; i++)
        ramp[i] = (float)i;
    dtl_val r = dtl_g_const_data(&g, DTL_DTYPE_F32, 1, (const int64_t[]){5000}, ramp);
    free(ramp);
    dtl_g_output(&g, DTL_OUT_VALUE, "bigexp", dtl_g_unary(&g, DTL_OP_EXP, r), DTL_VAL_NONE);
    dtl_val idx = dtl_g_const_data(&g, DTL_DTYPE_I64, 1, S2, (const int64_t[]){0, 5});
    dtl_g_output(&g, DTL_OUT_VALUE, "gather", dtl_g_gather(&g, d, idx, 0), DTL_VAL_NONE);
    dtl_val okidx = dtl_g_const_data(&g, DTL_DTYPE_I64, 1, S2, (const int64_t[]){2, 0});
    dtl_g_output(&g, DTL_OUT_VALUE, "gather_ok", dtl_g_gather(&g, d, okidx, 0), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "xc", dtl_g_binary(&g, DTL_OP_ADD, x, dtl_g_const(&g,
                 DTL_DTYPE_F32, 0, NULL, 1)), DTL_VAL_NONE);
    dtl_val step = dtl_g_input(&g, "step", DTL_DTYPE_I64, 0, NULL);
    dtl_val rng = dtl_g_rng_uniform(&g, step, DTL_DTYPE_F32, 1, S3, 9);
    dtl_g_output(&g, DTL_OUT_VALUE, "rng", rng, DTL_VAL_NONE);
    dtl_val io = dtl_g_iota(&g, DTL_DTYPE_I64, 1, S3, 0);
    dtl_g_output(&g, DTL_OUT_VALUE, "iota", dtl_g_cast(&g, io, DTL_DTYPE_F32), DTL_VAL_NONE);
    CHECK(dtl_graph_verify(&g, stderr));

    run_pass("fold", &g, &f);
    CHECK(is_splat(out_node(&f, "five"), 5));
    const dtl_node *bn = out_node(&f, "big");
    CHECK(is_splat(bn, -3) && bn->rank == 2 && bn->shape[0] == 300 && bn->shape[1] == 400);
    CHECK(is_splat(out_node(&f, "t"), -3) && out_node(&f, "t")->shape[0] == 300);
    CHECK(is_splat(out_node(&f, "e"), expf(0.5f)));
    const dtl_node *ed = out_node(&f, "ed");
    CHECK(ed && ed->op == DTL_OP_CONST && ed->attr.cst.data &&
          ((const float *)ed->attr.cst.data)[0] == expf(0.5f) &&
          ((const float *)ed->attr.cst.data)[1] == expf(1) &&
          ((const float *)ed->attr.cst.data)[2] == expf(-2));
    CHECK(is_splat(out_node(&f, "s"), (float)(3 * (double)0.1f)));
    CHECK(is_splat(out_node(&f, "nan"), NAN));
    CHECK(is_splat(out_node(&f, "idiv"), 0) && out_node(&f, "idiv")->dtype == DTL_DTYPE_I64);
    const dtl_node *hn = out_node(&f, "huge");
    CHECK(hn && hn->op == DTL_OP_CONST && hn->attr.cst.data &&
          *(const int64_t *)hn->attr.cst.data == huge + 1);
    const dtl_node *mm = out_node(&f, "mm");
    CHECK(mm && mm->op == DTL_OP_CONST && mm->attr.cst.data &&
          memcmp(mm->attr.cst.data, (const float[]){4, 5, 10, 11}, 4 * sizeof(float)) == 0);
    CHECK(is_splat(out_node(&f, "eqd"), 4));
    CHECK(out_node(&f, "tenth") && out_node(&f, "tenth")->attr.cst.fill == 0.1);
    CHECK(out_node(&f, "bigexp") && out_node(&f, "bigexp")->op == DTL_OP_EXP);
    CHECK(out_node(&f, "gather") && out_node(&f, "gather")->op == DTL_OP_GATHER);
    const dtl_node *go = out_node(&f, "gather_ok");
    CHECK(go && go->op == DTL_OP_CONST && go->attr.cst.data &&
          memcmp(go->attr.cst.data, (const float[]){-2, 0.5f}, 2 * sizeof(float)) == 0);
    CHECK(out_node(&f, "xc") && out_node(&f, "xc")->op == DTL_OP_ADD);
    CHECK(out_node(&f, "rng") && out_node(&f, "rng")->op == DTL_OP_RNG_UNIFORM);
    CHECK(out_node(&f, "iota") && out_node(&f, "iota")->op == DTL_OP_CAST);
    CHECK(count_op(&f, DTL_OP_IOTA) == 1);
    /* Roles and labels of folded nodes are the node's. */
    dtl_graph_free(&f);
    dtl_graph_free(&g);

    dtl_graph_init(&g);
    g.role = DTL_ROLE_BACKWARD;
    dtl_val k = dtl_g_binary(&g, DTL_OP_MUL, dtl_g_scalar(&g, DTL_DTYPE_F32, 1),
                             dtl_g_scalar(&g, DTL_DTYPE_F32, 0.25));
    g.nodes[k].name = "dk";
    dtl_g_output(&g, DTL_OUT_VALUE, "k", k, DTL_VAL_NONE);
    run_pass("fold", &g, &f);
    const dtl_node *kn = out_node(&f, "k");
    CHECK(is_splat(kn, 0.25) && kn->role == DTL_ROLE_BACKWARD && kn->name &&
          strcmp(kn->name, "dk") == 0);
    dtl_graph_free(&f);
    dtl_graph_free(&g);
}

/* ---- cse ---- */

static void test_cse(void)
{
    dtl_graph g, c;
    dtl_val x, y;
    two_inputs(&g, &x, &y);
    dtl_val a0 = dtl_g_scalar(&g, DTL_DTYPE_F32, 0), a1 = dtl_g_scalar(&g, DTL_DTYPE_F32, 0);
    dtl_val mz = dtl_g_scalar(&g, DTL_DTYPE_F32, -0.0);
    dtl_val d0 = dtl_g_scalar(&g, DTL_DTYPE_F64, 0);
    dtl_val v0 = dtl_g_const(&g, DTL_DTYPE_F32, 1, S2, 0);
    dtl_val p1 = dtl_g_scalar(&g, DTL_DTYPE_F32, 0.1);
    dtl_val p2 = dtl_g_scalar(&g, DTL_DTYPE_F32, (double)0.1f);   /* the same f32 */
    dtl_val da = dtl_g_const_data(&g, DTL_DTYPE_F32, 1, S2, (const float[]){1, 2});
    dtl_val db = dtl_g_const_data(&g, DTL_DTYPE_F32, 1, S2, (const float[]){1, 2});
    dtl_val dc = dtl_g_const_data(&g, DTL_DTYPE_F32, 1, S2, (const float[]){2, 1});
    dtl_val s1 = dtl_g_binary(&g, DTL_OP_ADD, x, y), s2 = dtl_g_binary(&g, DTL_OP_ADD, x, y);
    dtl_val s3 = dtl_g_binary(&g, DTL_OP_ADD, y, x);   /* float add: not swapped */
    dtl_val e1 = dtl_g_binary(&g, DTL_OP_EQ, x, y), e2 = dtl_g_binary(&g, DTL_OP_EQ, y, x);
    dtl_val xi = dtl_g_cast(&g, x, DTL_DTYPE_I32), yi = dtl_g_cast(&g, y, DTL_DTYPE_I32);
    dtl_val i1 = dtl_g_binary(&g, DTL_OP_ADD, xi, yi), i2 = dtl_g_binary(&g, DTL_OP_ADD, yi, xi);
    /* Whole subtrees collapse. */
    dtl_val t1 = dtl_g_unary(&g, DTL_OP_EXP, dtl_g_binary(&g, DTL_OP_MUL, s1, s1));
    dtl_val t2 = dtl_g_unary(&g, DTL_OP_EXP, dtl_g_binary(&g, DTL_OP_MUL, s2, s2));
    dtl_val r0 = dtl_g_reduce(&g, DTL_OP_SUM, x, 1, false);
    dtl_val r1 = dtl_g_reduce(&g, DTL_OP_SUM, x, 2, false);
    dtl_val r2 = dtl_g_reduce(&g, DTL_OP_SUM, x, 1, true);
    dtl_val step = dtl_g_input(&g, "step", DTL_DTYPE_I64, 0, NULL);
    dtl_val g1 = dtl_g_rng_uniform(&g, step, DTL_DTYPE_F32, 1, S3, 1);
    dtl_val g2 = dtl_g_rng_uniform(&g, step, DTL_DTYPE_F32, 1, S3, 2);
    dtl_val g3 = dtl_g_rng_uniform(&g, step, DTL_DTYPE_F32, 1, S3, 1);
    dtl_val n1 = dtl_g_scalar(&g, DTL_DTYPE_F32, NAN), n2 = dtl_g_scalar(&g, DTL_DTYPE_F32, NAN);
    dtl_val vals[] = {a0, a1, mz, d0, v0, p1, p2, da, db, dc, s1, s2, s3, e1, e2, i1, i2,
                      t1, t2, r0, r1, r2, g1, g2, g3, n1, n2};
    const char *names[] = {"a0", "a1", "mz", "d0", "v0", "p1", "p2", "da", "db", "dc",
                           "s1", "s2", "s3", "e1", "e2", "i1", "i2", "t1", "t2", "r0",
                           "r1", "r2", "g1", "g2", "g3", "n1", "n2"};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        dtl_g_output(&g, DTL_OUT_VALUE, names[i], vals[i], DTL_VAL_NONE);
    run_pass("cse", &g, &c);
#define SAME(a, b) (out_val(&c, a) == out_val(&c, b))
    CHECK(SAME("a0", "a1"));
    CHECK(!SAME("a0", "mz"));   /* -0.0 has other bytes */
    CHECK(!SAME("a0", "d0") && !SAME("a0", "v0"));
    CHECK(SAME("p1", "p2"));
    CHECK(SAME("da", "db") && !SAME("da", "dc"));
    CHECK(SAME("s1", "s2") && !SAME("s1", "s3"));
    CHECK(SAME("e1", "e2"));
    CHECK(SAME("i1", "i2"));
    CHECK(SAME("t1", "t2"));
    CHECK(!SAME("r0", "r1") && !SAME("r0", "r2"));
    CHECK(SAME("g1", "g3") && !SAME("g1", "g2"));
    CHECK(SAME("n1", "n2"));   /* the same NaN: the same bits */
#undef SAME
    /* Named leaves stay, one each, in order. */
    CHECK(count_op(&c, DTL_OP_INPUT) == 3 && strcmp(c.nodes[0].name, "x") == 0 &&
          strcmp(c.nodes[1].name, "y") == 0);
    dtl_graph_free(&c);
    dtl_graph_free(&g);
}

/* ---- simplify ---- */

static void test_simplify(void)
{
    dtl_graph g, s;
    dtl_val x, y;
    two_inputs(&g, &x, &y);
    dtl_val zero = dtl_g_scalar(&g, DTL_DTYPE_F32, 0), one = dtl_g_scalar(&g, DTL_DTYPE_F32, 1);
    dtl_val mone = dtl_g_scalar(&g, DTL_DTYPE_F32, -1);
    dtl_val zero3 = dtl_g_const(&g, DTL_DTYPE_F32, 1, S3, 0);
    dtl_val wide0 = dtl_g_const(&g, DTL_DTYPE_F32, 3, (const int64_t[]){4, 2, 3}, 0);
    struct { const char *name; dtl_val v; } o[] = {
        {"add0", dtl_g_binary(&g, DTL_OP_ADD, x, zero)},
        {"0add", dtl_g_binary(&g, DTL_OP_ADD, zero3, x)},
        {"sub0", dtl_g_binary(&g, DTL_OP_SUB, x, zero)},
        {"mul1", dtl_g_binary(&g, DTL_OP_MUL, x, one)},
        {"1mul", dtl_g_binary(&g, DTL_OP_MUL, one, x)},
        {"div1", dtl_g_binary(&g, DTL_OP_DIV, x, one)},
        {"pow1", dtl_g_binary(&g, DTL_OP_POW, x, one)},
        {"negneg", dtl_g_unary(&g, DTL_OP_NEG, dtl_g_unary(&g, DTL_OP_NEG, x))},
        {"where", dtl_g_where(&g, dtl_g_binary(&g, DTL_OP_GT, x, y), y, y)},
        {"cast", dtl_g_cast(&g, x, DTL_DTYPE_F32)},
        {"reshape", dtl_g_reshape(&g, x, 2, S23)},
        {"bcast", dtl_g_broadcast(&g, x, 2, S23)},
        {"tid", dtl_g_transpose(&g, x, (const uint32_t[]){0, 1})},
        {"tt", dtl_g_transpose(&g, dtl_g_transpose(&g, x, (const uint32_t[]){1, 0}),
                               (const uint32_t[]){1, 0})},
        /* A rewrite that leaves only constants is folded, and the rules after it see
         * the constant: x * cast(where(c, 1.0, 1.0), f32) is x. */
        {"castw", dtl_g_binary(&g, DTL_OP_MUL, x, dtl_g_cast(&g, dtl_g_where(&g,
                  dtl_g_binary(&g, DTL_OP_GT, x, y), dtl_g_scalar(&g, DTL_DTYPE_F64, 1),
                  dtl_g_scalar(&g, DTL_DTYPE_F64, 1)), DTL_DTYPE_F32))},
        {"sum1", dtl_g_reduce(&g, DTL_OP_SUM, dtl_g_reshape(&g, x, 3, (const int64_t[]){2, 1, 3}),
                              2, false)},
        /* These build something new (or find it: x + y is there already). */
        {"xy", dtl_g_binary(&g, DTL_OP_ADD, x, y)},
        {"subneg", dtl_g_binary(&g, DTL_OP_SUB, x, dtl_g_unary(&g, DTL_OP_NEG, y))},
        {"addneg", dtl_g_binary(&g, DTL_OP_ADD, x, dtl_g_unary(&g, DTL_OP_NEG, y))},
        {"muln1", dtl_g_binary(&g, DTL_OP_MUL, x, mone)},
        {"div4", dtl_g_binary(&g, DTL_OP_DIV, x, dtl_g_scalar(&g, DTL_DTYPE_F32, 4))},
        {"ydiv4", dtl_g_binary(&g, DTL_OP_DIV, y, dtl_g_scalar(&g, DTL_DTYPE_F32, 4))},
        {"rr", dtl_g_reshape(&g, dtl_g_reshape(&g, x, 1, (const int64_t[]){6}), 2, S32)},
        {"t3", dtl_g_transpose(&g, dtl_g_transpose(&g, dtl_g_reshape(&g, x, 3,
                               (const int64_t[]){1, 2, 3}), (const uint32_t[]){1, 2, 0}),
                               (const uint32_t[]){1, 2, 0})},
        /* And these must stay. */
        {"mul0", dtl_g_binary(&g, DTL_OP_MUL, x, zero)},
        {"xmx", dtl_g_binary(&g, DTL_OP_SUB, x, x)},
        {"wide", dtl_g_binary(&g, DTL_OP_ADD, x, wide0)},
        {"div3", dtl_g_binary(&g, DTL_OP_DIV, x, dtl_g_scalar(&g, DTL_DTYPE_F32, 3))},
        {"0sub", dtl_g_binary(&g, DTL_OP_SUB, zero, x)},
        {"sum2", dtl_g_reduce(&g, DTL_OP_SUM, x, 1, false)},
    };
    for (size_t i = 0; i < sizeof o / sizeof o[0]; i++)
        dtl_g_output(&g, DTL_OUT_VALUE, o[i].name, o[i].v, DTL_VAL_NONE);
    /* A rewritten node keeps its role. */
    g.role = DTL_ROLE_BACKWARD;
    dtl_val bw = dtl_g_binary(&g, DTL_OP_SUB, y, dtl_g_unary(&g, DTL_OP_NEG, x));
    dtl_g_output(&g, DTL_OUT_VALUE, "bw", bw, DTL_VAL_NONE);
    run_pass("simplify", &g, &s);

    const char *to_x[] = {"add0", "0add", "sub0", "mul1", "1mul", "div1", "pow1", "negneg",
                          "cast", "reshape", "bcast", "tid", "tt", "castw"};
    for (size_t i = 0; i < sizeof to_x / sizeof to_x[0]; i++)
        if (out_val(&s, to_x[i]) != x) {
            fprintf(stderr, "simplify: %s is not x\n", to_x[i]);
            CHECK(!"rewritten to x");
        }
    CHECK(out_val(&s, "where") == y);
    const dtl_node *n = out_node(&s, "sum1");
    CHECK(n && n->op == DTL_OP_RESHAPE && n->in[0] < s.nnodes &&
          s.nodes[n->in[0]].op == DTL_OP_RESHAPE);
    n = out_node(&s, "subneg");
    CHECK(n && n->op == DTL_OP_ADD && n->in[0] == x && n->in[1] == y);
    CHECK(out_val(&s, "subneg") == out_val(&s, "xy"));
    /* One 0.25 serves both divisions. */
    CHECK(out_node(&s, "ydiv4")->op == DTL_OP_MUL &&
          out_node(&s, "ydiv4")->in[1] == out_node(&s, "div4")->in[1]);
    n = out_node(&s, "addneg");
    CHECK(n && n->op == DTL_OP_SUB && n->in[0] == x && n->in[1] == y);
    n = out_node(&s, "muln1");
    CHECK(n && n->op == DTL_OP_NEG && n->in[0] == x);
    n = out_node(&s, "div4");
    CHECK(n && n->op == DTL_OP_MUL && n->in[0] == x && is_splat(&s.nodes[n->in[1]], 0.25));
    n = out_node(&s, "rr");
    CHECK(n && n->op == DTL_OP_RESHAPE && n->in[0] == x);
    n = out_node(&s, "t3");   /* (1,2,0) twice is (2,0,1) */
    CHECK(n && n->op == DTL_OP_TRANSPOSE && n->attr.perm[0] == 2 && n->attr.perm[1] == 0 &&
          n->attr.perm[2] == 1 && s.nodes[n->in[0]].op == DTL_OP_RESHAPE);
    CHECK(out_node(&s, "mul0")->op == DTL_OP_MUL);
    CHECK(out_node(&s, "xmx")->op == DTL_OP_SUB);
    CHECK(out_node(&s, "wide")->op == DTL_OP_ADD);
    CHECK(out_node(&s, "div3")->op == DTL_OP_DIV);
    CHECK(out_node(&s, "0sub")->op == DTL_OP_SUB);
    CHECK(out_node(&s, "sum2")->op == DTL_OP_SUM);
    n = out_node(&s, "bw");
    CHECK(n && n->op == DTL_OP_ADD && n->role == DTL_ROLE_BACKWARD);
    /* On NaN, infinities, -0.0 and huge values every output keeps its value exactly: the
     * same number, or NaN for NaN; only the sign of a zero or of a NaN may differ
     * (docs/compiler.md: x + 0 for x = -0.0, x - neg(y) and x * -1 for a NaN). */
    static const float xs[] = {NAN, INFINITY, -0.0f, 1, -INFINITY, 3e38f};
    static const float ys[] = {-0.0f, NAN, 2, -INFINITY, 0, -1};
    const dtl_binding special[] = {{"x", xs, DTL_DTYPE_F32, 2, {2, 3}},
                                   {"y", ys, DTL_DTYPE_F32, 2, {2, 3}}};
    CHECK(equivalent_on("simplify on special values", &g, &s, false, 0, special, 2) ==
          2 * g.nouts);
    dtl_graph_free(&s);
    dtl_graph_free(&g);

    /* where with a constant condition; integers. */
    dtl_graph_init(&g);
    x = dtl_g_input(&g, "x", DTL_DTYPE_I64, 1, S3);
    y = dtl_g_input(&g, "y", DTL_DTYPE_I64, 1, S3);
    dtl_val t = dtl_g_const(&g, DTL_DTYPE_BOOL, 1, S3, 1);
    dtl_val f0 = dtl_g_scalar(&g, DTL_DTYPE_BOOL, 0);
    dtl_g_output(&g, DTL_OUT_VALUE, "wt", dtl_g_where(&g, t, x, y), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "wf", dtl_g_where(&g, f0, x, y), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "i0", dtl_g_binary(&g, DTL_OP_ADD, x,
                 dtl_g_scalar(&g, DTL_DTYPE_I64, 0)), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "i2", dtl_g_binary(&g, DTL_OP_DIV, x,
                 dtl_g_scalar(&g, DTL_DTYPE_I64, 2)), DTL_VAL_NONE);
    run_pass("simplify", &g, &s);
    CHECK(out_val(&s, "wt") == x && out_val(&s, "wf") == y && out_val(&s, "i0") == x);
    CHECK(out_node(&s, "i2")->op == DTL_OP_DIV);   /* integer division is not x * 0.5 */
    dtl_graph_free(&s);
    dtl_graph_free(&g);
}

/* ---- dce and the pipeline ---- */

static void test_dce_and_pipeline(void)
{
    dtl_graph g, d;
    dtl_graph_init(&g);
    dtl_val x = dtl_g_input(&g, "x", DTL_DTYPE_F32, 1, S3);
    dtl_val dead = dtl_g_unary(&g, DTL_OP_EXP, x);
    dtl_val unused = dtl_g_input(&g, "unused", DTL_DTYPE_F32, 1, S3);
    dtl_val w = dtl_g_param(&g, "w", DTL_DTYPE_F32, 1, S3, (dtl_init){DTL_INIT_ONES, 0, 0, NULL});
    dtl_val st = dtl_g_state(&g, "m", DTL_DTYPE_F32, 1, S3);
    dtl_g_unary(&g, DTL_OP_NEG, dead);
    dtl_val upd = dtl_g_binary(&g, DTL_OP_SUB, w, x);
    dtl_g_output(&g, DTL_OUT_PARAM, NULL, upd, w);
    dtl_g_output(&g, DTL_OUT_VALUE, "st", st, DTL_VAL_NONE);
    (void)unused;
    run_pass("dce", &g, &d);
    CHECK(d.nnodes == 5);
    CHECK(count_op(&d, DTL_OP_EXP) == 0 && count_op(&d, DTL_OP_NEG) == 0);
    CHECK(d.nnodes == 5 && d.nodes[0].op == DTL_OP_INPUT &&
          strcmp(d.nodes[1].name, "unused") == 0 &&
          d.nodes[2].op == DTL_OP_PARAM && d.nodes[3].op == DTL_OP_STATE);
    CHECK(d.nouts == 2 && d.outs[0].kind == DTL_OUT_PARAM && d.outs[0].target == 2 &&
          strcmp(d.outs[0].name, "w") == 0);
    dtl_graph_free(&d);

    dtl_err err = {0};
    CHECK(!dtl_passes_run(&d, &g, "nope", &err) && err.kind == DTL_ERR_USAGE);
    dtl_graph_free(&d);
    CHECK(dtl_passes_run(&d, &g, "fold", &err));
    CHECK(d.nnodes == g.nnodes);   /* nothing to fold, dce not run */
    dtl_graph_free(&d);
    CHECK(dtl_passes_run(&d, &g, NULL, &err));
    CHECK(d.nnodes == 5);
    dtl_graph_free(&d);
    dtl_graph_free(&g);

    CHECK(dtl_npasses == 4 && strcmp(dtl_passes[0].name, "fold") == 0 &&
          strcmp(dtl_passes[1].name, "cse") == 0 && strcmp(dtl_passes[2].name, "simplify") == 0 &&
          strcmp(dtl_passes[3].name, "dce") == 0);
}

/* ---- (2) semantic equivalence on the reference backend ---- */

typedef struct rng64 {
    uint64_t s;
} rng64;

static uint64_t next(rng64 *r)
{
    r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
    return r->s >> 11;
}

/* Bindings for every INPUT of g: floats uniform in [-1, 1), "y" labels in [0, 2), "step"
 * and "total_steps" as given; the data is allocated into bufs[] (freed by the caller). */
static size_t bind_inputs(const dtl_graph *g, uint64_t seed, int64_t step, dtl_binding *b,
                          void **bufs, size_t max)
{
    rng64 r = {seed};
    size_t n = 0;
    for (uint32_t v = 0; v < g->nnodes && n < max; v++) {
        const dtl_node *in = &g->nodes[v];
        if (in->op != DTL_OP_INPUT)
            continue;
        uint64_t k = dtl_node_numel(in);
        void *data = calloc(k ? k : 1, 8);
        for (uint64_t i = 0; i < k; i++) {
            double u = (double)(next(&r) % 2000000) / 1000000.0 - 1.0;
            switch (in->dtype) {
            case DTL_DTYPE_F32: ((float *)data)[i] = (float)u; break;
            case DTL_DTYPE_F64: ((double *)data)[i] = u; break;
            case DTL_DTYPE_I64:
                if (strcmp(in->name, "step") == 0)
                    ((int64_t *)data)[i] = step;
                else if (strcmp(in->name, "total_steps") == 0)
                    ((int64_t *)data)[i] = 10;
                else
                    ((int64_t *)data)[i] = (int64_t)(next(&r) % 2);
                break;
            case DTL_DTYPE_I32: ((int32_t *)data)[i] = (int32_t)(next(&r) % 2); break;
            default: break;
            }
        }
        b[n] = (dtl_binding){in->name, data, in->dtype, in->rank, {0}};
        memcpy(b[n].shape, in->shape, sizeof b[n].shape);
        bufs[n++] = data;
    }
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

/* a and b agree: bit for bit (exact), or within rel (floats, where equal numbers and two
 * NaNs agree whatever their signs; integers always bit for bit). */
static bool tensors_agree(const dtl_tensor *a, const dtl_tensor *b, bool exact, double rel,
                          char *why, size_t wlen)
{
    uint64_t n = dtl_tensor_numel(a);
    if (a->dtype != b->dtype || a->rank != b->rank || n != dtl_tensor_numel(b))
        return snprintf(why, wlen, "different types"), false;
    if (exact || !dtl_dtype_is_float(a->dtype)) {
        size_t bytes = (size_t)n * dtl_dtype_size(a->dtype);
        if (memcmp(a->data, b->data, bytes) == 0)
            return true;
        for (uint64_t i = 0; i < n; i++)
            if (memcmp((const char *)a->data + i * dtl_dtype_size(a->dtype),
                       (const char *)b->data + i * dtl_dtype_size(a->dtype),
                       dtl_dtype_size(a->dtype)) != 0)
                return snprintf(why, wlen, "element %llu: %.9g vs %.9g (bits differ)",
                                (unsigned long long)i, elem(a, i), elem(b, i)),
                       false;
    }
    for (uint64_t i = 0; i < n; i++) {
        double x = elem(a, i), y = elem(b, i);
        if ((isnan(x) && isnan(y)) || x == y)   /* x == y: infinities, and -0.0 == 0.0 */
            continue;
        if (!(fabs(x - y) <= rel * fmax(fabs(x), fabs(y))))
            return snprintf(why, wlen, "element %llu: %.9g vs %.9g", (unsigned long long)i, x,
                            y),
                   false;
    }
    return true;
}

/* Runs a and b (two versions of one graph) on stores with one seed for two steps with the
 * same inputs (fixed[0..nfixed) when given, else random) and compares every output after
 * each step. Returns the outputs compared. */
static unsigned equivalent_on(const char *what, const dtl_graph *a, const dtl_graph *b,
                              bool exact, double rel, const dtl_binding *fixed, size_t nfixed)
{
    enum { MAXIN = 8 };
    dtl_err err = {0};
    dtl_store *sa = dtl_store_new(7), *sb = dtl_store_new(7);
    dtl_plan *pa = dtl_plan_new(&dtl_backend_ref, a, sa, NULL, &err);
    dtl_plan *pb = pa ? dtl_plan_new(&dtl_backend_ref, b, sb, NULL, &err) : NULL;
    unsigned compared = 0;
    bool ok = pa && pb;
    if (!ok)
        fprintf(stderr, "%s: prepare failed: %s\n", what, err.msg);
    for (int64_t step = 1; ok && step <= 2; step++) {
        dtl_binding bind[MAXIN];
        void *bufs[MAXIN];
        size_t nb = fixed ? 0 : bind_inputs(a, 1000 + (uint64_t)step, step, bind, bufs, MAXIN);
        if (fixed)
            memcpy(bind, fixed, (nb = nfixed) * sizeof *bind);
        ok = dtl_plan_run(pa, bind, nb, &err) && dtl_plan_run(pb, bind, nb, &err);
        if (!ok)
            fprintf(stderr, "%s: run failed: %s\n", what, err.msg);
        for (uint32_t k = 0; ok && k < a->nouts; k++) {
            dtl_tensor ta, tb;
            const char *name = a->outs[k].name;
            ok = dtl_plan_output(pa, name, &ta, &err) && dtl_plan_output(pb, name, &tb, &err);
            char why[200];
            if (!ok)
                fprintf(stderr, "%s: output %s: %s\n", what, name, err.msg);
            else if (!tensors_agree(&ta, &tb, exact, rel, why, sizeof why)) {
                fprintf(stderr, "%s: step %lld: output %s differs: %s\n", what,
                        (long long)step, name, why);
                CHECK(!"outputs agree");
            } else
                compared++;
        }
        for (size_t i = 0; !fixed && i < nb; i++)
            free(bufs[i]);
    }
    CHECK(ok);
    dtl_plan_free(pa);
    dtl_plan_free(pb);
    dtl_store_free(sa);
    dtl_store_free(sb);
    return compared;
}

static unsigned equivalent(const char *what, const dtl_graph *a, const dtl_graph *b, bool exact)
{
    return equivalent_on(what, a, b, exact, 1e-6, NULL, 0);
}

/* Every pass alone, fold + cse, and the whole pipeline, against g. */
static void check_graph(const char *prog, const char *which, const dtl_graph *g)
{
    char what[200];
    for (size_t i = 0; i < dtl_npasses; i++) {
        dtl_graph p;
        run_pass(dtl_passes[i].name, g, &p);
        bool exact = strcmp(dtl_passes[i].name, "simplify") != 0;
        snprintf(what, sizeof what, "%s %s: %s alone", prog, which, dtl_passes[i].name);
        CHECK(equivalent(what, g, &p, exact) == 2 * g->nouts);
        dtl_graph_free(&p);
    }
    const char *stops[] = {"cse", NULL};
    for (size_t i = 0; i < 2; i++) {
        dtl_graph p;
        dtl_err err = {0};
        bool ok = dtl_passes_run(&p, g, stops[i], &err);
        CHECK(ok);
        if (!ok)
            fprintf(stderr, "%s %s: %s\n", prog, which, err.msg);
        snprintf(what, sizeof what, "%s %s: pipeline to %s", prog, which,
                 stops[i] ? stops[i] : "the end");
        if (ok)
            CHECK(equivalent(what, g, &p, stops[i] != NULL) == 2 * g->nouts);
        CHECK(p.nnodes <= g->nnodes);
        dtl_graph_free(&p);
    }
}

/* Lowers the first train block of (path or src) at batch 4 and checks its three graphs. */
static void check_program(const char *label, const char *path, const char *src)
{
    dtl_ctx ctx;
    dtl_ctx_init(&ctx);
    dtl_ctx_add_default_paths(&ctx);
    dtl_module *m = path ? dtl_check_path(&ctx, path)
                         : dtl_check_source(&ctx, dtl_src_add(&ctx.sources, "test.dtl", src,
                                                              strlen(src)));
    bool ok = m && !dtl_diag_failed(&ctx.diags);
    const dtl_train *t = ok ? dtl_lower_find_train(m, NULL) : NULL;
    dtl_lowered low;
    dtl_lower_opts o = {.batch = 4};
    ok = t && dtl_lower_train(&ctx, t, &o, &low);
    CHECK(ok);
    if (!ok) {
        fprintf(stderr, "--- %s: checking or lowering failed\n", label);
        dtl_diag_print(&ctx.diags, stderr, false);
        dtl_ctx_free(&ctx);
        return;
    }
    check_graph(label, "step", &low.step);
    check_graph(label, "eval", &low.eval);
    if (low.has_infer)
        check_graph(label, "infer", &low.infer);
    dtl_lowered_free(&low);
    dtl_ctx_free(&ctx);
}

static const char *const programs[] = {
    /* dropout (rng), mse, one_hot, a schedule with warmup and clipping, adamw */
    "use nn\n"
    "dataset ds = idx(\"fashion-mnist\")\n"
    "model M() {\n"
    "    fc1 = nn.Dense(6, 5)\n"
    "    ln = nn.LayerNorm(5)\n"
    "    fc2 = nn.Dense(5, 3)\n"
    "    fn forward(x: f32[B, 6]) -> f32[B, 3] = fc2(dropout(tanh(ln(fc1(x))), 0.25))\n"
    "}\n"
    "train M() {\n"
    "    data = ds.train\n    batch = 4\n"
    "    loss = mse(forward(x), one_hot(y, 3))\n"
    "    optimizer = adamw(lr = 0.01)\n"
    "    schedule = cosine()\n    warmup = 1\n    clip = 1.0\n"
    "    evaluate = accuracy(ds.test)\n"
    "}\n",
    /* slices, concat, where, softmax, gelu, sigmoid, max, a data literal, sgd momentum */
    "dataset ds = idx(\"fashion-mnist\")\n"
    "model M() {\n"
    "    param w: f32[4, 2] = glorot_uniform()\n"
    "    param s: f32[2] = ones()\n"
    "    fn forward(x: f32[B, 4]) -> f32[B, 2] {\n"
    "        let h = concat([x[:, :2] * 2.0, x[:, 2:] / 4], axis = 1) + [1.0, 0, -1, 0.5]\n"
    "        let g = where(h > 0.0, gelu(h), sigmoid(h) - 1)\n"
    "        return softmax(g @ w * s, axis = 1) + max(g, axis = 1, keepdims = true) * 0\n"
    "    }\n"
    "}\n"
    "train M() {\n"
    "    data = ds.train\n    batch = 4\n"
    "    loss = cross_entropy(forward(x), y)\n"
    "    optimizer = sgd(lr = 0.1, momentum = 0.9)\n"
    "    evaluate = accuracy(ds.test)\n"
    "}\n",
    /* an embedding (one_hot @ w), bce_with_logits, log_softmax, silu, softplus */
    "use nn\n"
    "dataset ds = idx(\"fashion-mnist\")\n"
    "model M() {\n"
    "    emb = nn.Embedding(3, 4)\n"
    "    fn forward(x: f32[B, 4]) -> f32[B, 4] =\n"
    "        log_softmax(silu(x) + softplus(x) + emb(cast(x[:, 0] > 0.0, i64)), axis = 1)\n"
    "}\n"
    "train M() {\n"
    "    data = ds.train\n    batch = 4\n"
    "    loss = bce_with_logits(forward(x), x * 0.5 + 0.5)\n"
    "    optimizer = adam(lr = 0.001)\n"
    "}\n",
};

static void test_equivalence(void)
{
    static const char *const examples[] = {"mnist_mlp", "mnist_pipeline",
                                           "mnist_tensor_parallel"};
    for (size_t i = 0; i < sizeof examples / sizeof examples[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/../examples/%s.dtl", DTL_SRC_STDLIB_DIR, examples[i]);
        check_program(examples[i], path, NULL);
    }
    for (size_t i = 0; i < sizeof programs / sizeof programs[0]; i++) {
        char label[32];
        snprintf(label, sizeof label, "program %zu", i);
        check_program(label, NULL, programs[i]);
    }
}

/* ---- (3) the MLP's step graph shrinks ---- */

static void test_mlp_shrinks(void)
{
    dtl_ctx ctx;
    dtl_ctx_init(&ctx);
    dtl_ctx_add_default_paths(&ctx);
    dtl_module *m = dtl_check_path(&ctx, DTL_SRC_STDLIB_DIR "/../examples/mnist_mlp.dtl");
    const dtl_train *t = m && !dtl_diag_failed(&ctx.diags) ? dtl_lower_find_train(m, NULL) : NULL;
    dtl_graph g, p, q;
    dtl_lower_opts o = {0};
    bool ok = t && dtl_lower_graph(&ctx, t, DTL_LOWER_STEP, &o, &g);
    CHECK(ok);
    if (!ok) {
        dtl_ctx_free(&ctx);
        return;
    }
    dtl_err err = {0};
    CHECK(dtl_passes_run(&p, &g, NULL, &err));
    if (getenv("DTL_TEST_SHOW"))
        printf("mnist_mlp step graph: %u nodes, %u after the passes\n", g.nnodes, p.nnodes);
    CHECK(p.nnodes < g.nnodes);
    CHECK(p.nnodes * 100 <= g.nnodes * 90);   /* at least a tenth smaller */
    /* No two splat constants of one value, dtype and shape survive (fills as written may
     * differ while the element is the same: compare elements). */
    unsigned splats = 0, dup = 0;
    for (uint32_t i = 0; i < p.nnodes; i++) {
        const dtl_node *a = &p.nodes[i];
        if (a->op != DTL_OP_CONST || a->attr.cst.data)
            continue;
        splats++;
        for (uint32_t j = 0; j < i; j++) {
            const dtl_node *b = &p.nodes[j];
            bool same = b->op == DTL_OP_CONST && !b->attr.cst.data && b->dtype == a->dtype &&
                        b->rank == a->rank &&
                        memcmp(b->shape, a->shape, a->rank * sizeof a->shape[0]) == 0 &&
                        (a->dtype == DTL_DTYPE_F32
                             ? (float)a->attr.cst.fill == (float)b->attr.cst.fill
                             : a->attr.cst.fill == b->attr.cst.fill);
            dup += same;
        }
    }
    CHECK(splats > 0 && dup == 0);
    /* Every node is needed by some output (dce) and no mul by one, add of zero is left. */
    CHECK(count_op(&p, DTL_OP_MATMUL) == count_op(&g, DTL_OP_MATMUL));
    /* A fixed point: the pipeline on its own result changes nothing. */
    CHECK(dtl_passes_run(&q, &p, NULL, &err));
    CHECK(q.nnodes == p.nnodes);
    dtl_graph_free(&q);
    dtl_graph_free(&p);
    dtl_graph_free(&g);
    dtl_ctx_free(&ctx);
}

/* ---- a large graph: the pipeline stays linear (timed only when DTL_TEST_SHOW is set) ---- */

static void test_large(void)
{
    dtl_graph g, p;
    dtl_graph_init(&g);
    dtl_val x = dtl_g_input(&g, "x", DTL_DTYPE_F32, 1, (const int64_t[]){16});
    dtl_val acc = x;
    for (int i = 0; i < 2000; i++) {
        /* Each round: 5 nodes, 2 of them duplicates of earlier rounds' constants, one a
         * fold, one a simplification. */
        dtl_val c = dtl_g_scalar(&g, DTL_DTYPE_F32, 0.5);
        dtl_val one = dtl_g_binary(&g, DTL_OP_MUL, c, dtl_g_scalar(&g, DTL_DTYPE_F32, 2));
        acc = dtl_g_binary(&g, DTL_OP_MUL, dtl_g_binary(&g, DTL_OP_ADD, acc, c), one);
    }
    dtl_g_output(&g, DTL_OUT_VALUE, "out", acc, DTL_VAL_NONE);
    dtl_err err = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool ok = dtl_passes_run(&p, &g, NULL, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(ok);
    if (getenv("DTL_TEST_SHOW"))
        printf("pipeline on %u nodes: %.2f ms, %u nodes left\n", g.nnodes,
               (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
               p.nnodes);
    /* Left: x, the constant 0.5, and one add per round. */
    CHECK(p.nnodes == 2 + 2000);
    CHECK(count_op(&p, DTL_OP_MUL) == 0 && count_op(&p, DTL_OP_CONST) == 1);
    dtl_graph_free(&p);
    dtl_graph_free(&g);
}

int main(void)
{
    test_fold();
    test_cse();
    test_simplify();
    test_dce_and_pipeline();
    test_equivalence();
    test_mlp_shrinks();
    test_large();
    CHECK_DONE();
}
