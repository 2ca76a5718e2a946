/* tests/unit/test_backend_ops.c — every op of compiler/graph.h on every backend under test
 * (tests/unit/backend_testlib.h) against the reference backend: every dtype the reference
 * supports for the op, forward values and gradients (compiler/autodiff.h, for float
 * operands), on fresh Philox inputs, run twice with different inputs (a stale result shows),
 * over shapes with broadcasting edge cases, size-1 dims, rank 0, sizes that are not multiples
 * of a vector width (1, 3, 7, 17, 33), transposed matmul operands, a few sizes large enough
 * for a backend's threaded paths, and special values (NaN, ±inf, ±0, integer extremes) in
 * forward-only subcases.
 *
 * The table `op_tests` has one row per op, indexed by the op, and a static_assert on its
 * length: a new op appended to dtl_op without a test here breaks the build, and a missing
 * row in the middle fails the test (no op is skipped silently).
 *
 * Tolerances: f32 1e-5 and f64 1e-12, element by element, relative to the element plus the
 * tensor's largest magnitude (backend_testlib.h); integers, bools, rng_uniform and matrix
 * products of small integers held exactly.
 *
 * By default each op runs the first rows of its shape lists (a JIT backend's compile time
 * grows with the kernel count, and `make check` runs this twice); DTL_TEST_FULL=1 or --full
 * runs every row.
 *
 *     tests/unit/test_backend_ops [--full] [OP...]   only the named ops ("add", "matmul")
 *     DTL_TEST_BACKENDS=llvm tests/unit/test_backend_ops
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../compiler/graph.h"
#include "../../compiler/nnops.h"
#include "backend_testlib.h"
#include "unit.h"

#define F32 DTL_DTYPE_F32
#define F64 DTL_DTYPE_F64
#define I32 DTL_DTYPE_I32
#define I64 DTL_DTYPE_I64
#define BOOL DTL_DTYPE_BOOL
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Mismatches that are open bugs of a backend (see /work/notes/s4-llvm-bugs.md). */
static const bt_known_failure known[] = {
    {NULL, NULL, NULL},
};

/* ---- shapes -------------------------------------------------------------------------------- */

typedef struct shp {
    uint32_t r;
    int64_t d[DTL_MAX_RANK];
} shp;

#define SH(...) ((shp){(uint32_t)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), {__VA_ARGS__}})
#define SCALAR ((shp){0, {0}})

/* The full set of shapes (DTL_TEST_FULL=1 or --full), else the first few of each list: a
 * JIT backend's compile time grows with the number of kernels, and `make check` runs this
 * twice. Lists put their most telling rows first. */
static bool full;

static size_t upto(size_t all, size_t by_default)
{
    return full || by_default > all ? all : by_default;
}

static const dtl_dtype FLOATS[] = {F32, F64};
static const dtl_dtype NUMERIC[] = {F32, F64, I32, I64};
static const dtl_dtype ALL[] = {F32, F64, I32, I64, BOOL};

/* "f32[3, 1]" in one of a few rotating buffers (labels take several at once). */
static const char *ty(dtl_dtype dt, shp s)
{
    static char bufs[8][96];
    static unsigned k;
    char *b = bufs[k++ % 8];
    return dtl_tensor_str(b, 96, dt, s.r, s.d);
}

static bool isf(dtl_dtype dt)
{
    return dt == F32 || dt == F64;
}

/* Values a generic operand of dtype dt takes. */
static bt_dist plain_dist(dtl_dtype dt)
{
    return dt == BOOL ? BT_BOOLS : isf(dt) ? BT_U(-2, 2) : BT_FULL;
}

static void run_case(bt_case *c)
{
    CHECK(bt_case_run(c));
}

/* ---- leaves -------------------------------------------------------------------------------- */

static void test_const(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 1);
    dtl_graph *g = bt_graph(c);
    static const shp shapes[] = {SCALAR, SH(7), SH(3, 17), SH(1)};
    dtl_rng r;
    dtl_rng_init(&r, 5, 6);
    for (size_t t = 0; t < NELEM(ALL); t++)
        for (size_t i = 0; i < upto(NELEM(shapes), 3); i++) {
            dtl_dtype dt = ALL[t];
            shp s = shapes[i];
            bt_sub(c, false, "splat %s", ty(dt, s));
            bt_out_exact(c, dtl_g_const(g, dt, s.r, s.d, dt == BOOL ? 1 : -2.5));
            bt_sub(c, false, "data %s", ty(dt, s));
            unsigned char buf[3 * 17 * 8];
            bt_fill(buf, dt, 3 * 17, plain_dist(dt), &r);
            dtl_val k = dtl_g_const_data(g, dt, s.r, s.d, buf);
            bt_out_exact(c, k);
            /* As an operand, with a scalar constant broadcast in (a splat immediate). */
            bt_sub(c, isf(dt), "input op data-const op scalar-const %s", ty(dt, s));
            dtl_val x = bt_in(c, dt, s.r, s.d, plain_dist(dt));
            dtl_op bop = dt == BOOL ? DTL_OP_AND : DTL_OP_ADD;
            dtl_val y = dtl_g_binary(g, bop, x, k);
            y = dtl_g_binary(g, dt == BOOL ? DTL_OP_OR : DTL_OP_MUL, y,
                             dtl_g_scalar(g, dt, dt == BOOL ? 0 : 3));
            bt_out(c, y);
        }
    run_case(c);
}

static void test_input(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 2);
    static const shp shapes[] = {SCALAR, SH(1), SH(17), SH(2, 3, 5)};
    for (size_t t = 0; t < NELEM(ALL); t++)
        for (size_t i = 0; i < NELEM(shapes); i++) {
            dtl_dtype dt = ALL[t];
            bt_sub(c, false, "identity %s", ty(dt, shapes[i]));
            dtl_val x = bt_in_plain(c, dt, shapes[i].r, shapes[i].d, plain_dist(dt));
            bt_out_exact(c, x);
            bt_out_exact(c, x);   /* the same value under a second name */
        }
    run_case(c);
}

static void test_param(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 3);
    dtl_graph *g = bt_graph(c);
    static const double data[6] = {1, -2, 3.5, 0, 1e-3, -7};
    const struct {
        dtl_init init;
        shp s;
    } ps[] = {
        {{DTL_INIT_NORMAL, 0, 1, NULL}, SH(3, 17)},
        {{DTL_INIT_UNIFORM, -1, 1, NULL}, SH(33)},
        {{DTL_INIT_GLOROT_UNIFORM, 0, 0, NULL}, SH(7, 5)},
        {{DTL_INIT_HE_NORMAL, 0, 0, NULL}, SH(2, 3, 4)},
        {{DTL_INIT_ONES, 0, 0, NULL}, SCALAR},
        {{DTL_INIT_CONSTANT, 2.5, 0, NULL}, SH(4)},
        {{DTL_INIT_DATA, 0, 0, NULL}, SH(2, 3)},
    };
    for (size_t t = 0; t < NELEM(FLOATS); t++) {
        dtl_dtype dt = FLOATS[t];
        float d32[6];
        for (int i = 0; i < 6; i++)
            d32[i] = (float)data[i];
        for (size_t i = 0; i < NELEM(ps); i++) {
            shp s = ps[i].s;
            dtl_init init = ps[i].init;
            if (init.kind == DTL_INIT_DATA)
                init.data = dt == F32 ? (const void *)d32 : (const void *)data;
            char name[32];
            snprintf(name, sizeof name, "q%zu.%s", i, dtl_dtype_name(dt));
            bt_sub(c, true, "param %s init %d, read, used and updated", ty(dt, s),
                   (int)init.kind);
            dtl_val p = dtl_g_param(g, name, dt, s.r, s.d, init);
            bt_out_exact(c, p);
            dtl_val x = bt_in(c, dt, s.r, s.d, BT_U(-1, 1));
            bt_out(c, dtl_g_binary(g, DTL_OP_MUL, p, x));
            /* The update: the second run must see it (stores are compared after each run). */
            dtl_val upd = dtl_g_binary(g, DTL_OP_SUB, p,
                                       dtl_g_binary(g, DTL_OP_MUL, x, dtl_g_scalar(g, dt, 0.5)));
            bt_out_kind(c, DTL_OUT_PARAM, upd, p);
        }
    }
    run_case(c);
}

static void test_state(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 4);
    dtl_graph *g = bt_graph(c);
    static const shp shapes[] = {SCALAR, SH(7), SH(3, 17)};
    for (size_t t = 0; t < NELEM(NUMERIC); t++)
        for (size_t i = 0; i < NELEM(shapes); i++) {
            dtl_dtype dt = NUMERIC[t];
            shp s = shapes[i];
            char na[32], nb[32];
            snprintf(na, sizeof na, "a%zu.%s", i, dtl_dtype_name(dt));
            snprintf(nb, sizeof nb, "b%zu.%s", i, dtl_dtype_name(dt));
            bt_sub(c, false, "states %s: a' = b, b' = a + x (reads see pre-commit values)",
                   ty(dt, s));
            dtl_val a = dtl_g_state(g, na, dt, s.r, s.d);
            dtl_val b = dtl_g_state(g, nb, dt, s.r, s.d);
            dtl_val x = bt_in(c, dt, s.r, s.d, isf(dt) ? BT_U(-2, 2) : BT_I(-100, 100));
            bt_out_exact(c, a);
            bt_out_kind(c, DTL_OUT_STATE, b, a);
            bt_out_kind(c, DTL_OUT_STATE, dtl_g_binary(g, DTL_OP_ADD, a, x), b);
        }
    run_case(c);
}

static void test_iota(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 5);
    dtl_graph *g = bt_graph(c);
    static const struct {
        shp s;
        uint32_t axis;
    } cases[] = {{SH(7), 0},       {SH(3, 17), 1},   {SH(2, 3, 5), 1}, {SH(33, 1), 1},
                 {SH(300, 257), 0}, {SH(3, 17), 0},  {SH(2, 3, 5), 2}, {SH(1, 33), 1}};
    for (size_t t = 0; t < NELEM(NUMERIC); t++)
        for (size_t i = 0; i < upto(NELEM(cases), 5); i++) {
            dtl_dtype dt = NUMERIC[t];
            shp s = cases[i].s;
            bt_sub(c, isf(dt), "iota %s axis %u, alone and fused", ty(dt, s), cases[i].axis);
            dtl_val io = dtl_g_iota(g, dt, s.r, s.d, cases[i].axis);
            bt_out_exact(c, io);
            dtl_val x = bt_in(c, dt, s.r, s.d, isf(dt) ? BT_U(-2, 2) : BT_I(-100, 100));
            bt_out(c, dtl_g_binary(g, DTL_OP_MUL, x, io));
        }
    run_case(c);
}

static void test_rng(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 6);
    dtl_graph *g = bt_graph(c);
    static const shp shapes[] = {SCALAR, SH(3, 33), SH(64, 65), SH(1), SH(17)};
    static const uint64_t streams[] = {1, 2, 12345678901234ull};
    for (size_t t = 0; t < NELEM(FLOATS); t++)
        for (size_t i = 0; i < upto(NELEM(shapes), 3); i++)
            for (size_t k = 0; k < NELEM(streams); k++) {
                dtl_dtype dt = FLOATS[t];
                shp s = shapes[i];
                bt_sub(c, false, "rng_uniform %s stream %llu (bit for bit)", ty(dt, s),
                       (unsigned long long)streams[k]);
                dtl_val step = bt_in_plain(c, I64, 0, NULL, k == 2 ? BT_FULL : BT_I(1, 1000));
                dtl_val u = dtl_g_rng_uniform(g, step, dt, s.r, s.d, streams[k]);
                bt_out_exact(c, u);
                /* The dropout pattern: a mask from the draw, fused with its use. */
                bt_sub(c, true, "dropout-like mask %s stream %llu", ty(dt, s),
                       (unsigned long long)streams[k]);
                dtl_val x = bt_in(c, dt, s.r, s.d, BT_U(-2, 2));
                dtl_val keep = dtl_g_binary(g, DTL_OP_GE, u, dtl_g_scalar(g, dt, 0.25));
                bt_out(c, dtl_g_where(g, keep, dtl_g_binary(g, DTL_OP_MUL, x,
                                                           dtl_g_scalar(g, dt, 1 / 0.75)),
                                      dtl_g_scalar(g, dt, 0)));
            }
    run_case(c);
}

/* ---- elementwise --------------------------------------------------------------------------- */

static bt_dist unary_domain(dtl_op op)
{
    switch (op) {
    case DTL_OP_EXP: return BT_U(-5, 5);
    case DTL_OP_LOG:
    case DTL_OP_SQRT: return BT_U(0.05, 4);
    case DTL_OP_TANH: return BT_U(-4, 4);
    case DTL_OP_SIGMOID: return BT_U(-8, 8);
    case DTL_OP_SIN:
    case DTL_OP_COS: return BT_U(-7, 7);
    default: return BT_U(-3, 3);
    }
}

static bt_dist unary_special(dtl_op op)
{
    switch (op) {
    case DTL_OP_LOG:
    case DTL_OP_SQRT: return BT_SPECIAL(-1, 100);
    case DTL_OP_EXP:
    case DTL_OP_TANH:
    case DTL_OP_SIGMOID:
    case DTL_OP_SIN:
    case DTL_OP_COS: return BT_SPECIAL(-100, 100);
    default: return BT_SPECIAL(-3, 3);
    }
}

static const shp unary_shapes[] = {SCALAR, SH(17),    SH(3, 1, 5), SH(4, 33, 3),
                                   SH(1),  SH(7),     SH(33),      SH(2, 16)};
#define UNARY_DEFAULT 4

static void test_unary(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 10 + op);
    dtl_graph *g = bt_graph(c);
    bool int_too = op == DTL_OP_NEG || op == DTL_OP_ABS || op == DTL_OP_RELU;
    for (size_t t = 0; t < NELEM(FLOATS); t++) {
        dtl_dtype dt = FLOATS[t];
        for (size_t i = 0; i < upto(NELEM(unary_shapes), UNARY_DEFAULT); i++) {
            shp s = unary_shapes[i];
            bt_sub(c, true, "%s", ty(dt, s));
            bt_out(c, dtl_g_unary(g, op, bt_in(c, dt, s.r, s.d, unary_domain(op))));
        }
        bt_sub(c, false, "%s special values", ty(dt, SH(61)));
        bt_out(c, dtl_g_unary(g, op, bt_in_plain(c, dt, 1, SH(61).d, unary_special(op))));
        /* A chain of the op with itself and neighbours, to be fused. */
        bt_sub(c, true, "chain %s", ty(dt, SH(5, 17)));
        dtl_val x = bt_in(c, dt, 2, SH(5, 17).d, unary_domain(op));
        dtl_val y = dtl_g_unary(g, op, x);
        y = dtl_g_binary(g, DTL_OP_MUL, dtl_g_unary(g, DTL_OP_TANH, y), x);
        bt_out(c, dtl_g_unary(g, op, dtl_g_binary(g, DTL_OP_ADD, dtl_g_unary(g, DTL_OP_ABS, y),
                                                  dtl_g_scalar(g, dt, 0.5))));
    }
    if (dtl_op_kind_of(op) == DTL_OPK_UNARY && op != DTL_OP_NOT) {
        shp big = SH(300, 257);
        bt_sub(c, true, "large %s", ty(F32, big));
        bt_out(c, dtl_g_unary(g, op, bt_in(c, F32, big.r, big.d, unary_domain(op))));
    }
    if (int_too)
        for (dtl_dtype dt = I32; dt <= I64; dt = (dtl_dtype)(dt + 1))
            for (size_t i = 0; i < upto(NELEM(unary_shapes), UNARY_DEFAULT); i++) {
                shp s = unary_shapes[i];
                bt_sub(c, false, "%s", ty(dt, s));
                bt_out(c, dtl_g_unary(g, op, bt_in(c, dt, s.r, s.d,
                                                  i % 2 ? BT_FULL : BT_SPECIAL(-100, 100))));
            }
    run_case(c);
}

static void test_not(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 30);
    dtl_graph *g = bt_graph(c);
    for (size_t i = 0; i < NELEM(unary_shapes); i++) {
        shp s = unary_shapes[i];
        bt_sub(c, false, "%s", ty(BOOL, s));
        bt_out(c, dtl_g_unary(g, op, bt_in(c, BOOL, s.r, s.d, BT_BOOLS)));
    }
    bt_sub(c, false, "not(not(x)) and not(x < y)");
    dtl_val x = bt_in(c, BOOL, 1, SH(33).d, BT_BOOLS);
    bt_out(c, dtl_g_unary(g, op, dtl_g_unary(g, op, x)));
    dtl_val a = bt_in(c, F32, 2, SH(3, 1).d, BT_I(-2, 2)), b = bt_in(c, F32, 1, SH(7).d, BT_I(-2, 2));
    bt_out(c, dtl_g_unary(g, op, dtl_g_binary(g, DTL_OP_LT, a, b)));
    run_case(c);
}

static void test_cast(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 31);
    dtl_graph *g = bt_graph(c);
    static const shp shapes[] = {SH(17), SH(9, 13), SCALAR, SH(3, 1, 5)};
    for (size_t f = 0; f < NELEM(ALL); f++)
        for (size_t t = 0; t < NELEM(ALL); t++)
            for (size_t i = 0; i < upto(NELEM(shapes), 2); i++) {
                dtl_dtype from = ALL[f], to = ALL[t];
                shp s = shapes[i];
                bt_dist d;
                if (from == BOOL)
                    d = BT_BOOLS;
                else if (isf(from))
                    d = isf(to) ? BT_U(-3, 3) : i % 2 ? BT_SPECIAL(-5.5, 5.5) : BT_U(-1e3, 1e3);
                else
                    d = i % 2 ? BT_SPECIAL(-3, 3) : BT_FULL;
                bool grad = isf(from) && isf(to);
                bt_sub(c, grad, "%s to %s", ty(from, s), dtl_dtype_name(to));
                bt_out(c, dtl_g_cast(g, bt_in(c, from, s.r, s.d, d), to));
            }
    /* Wide floats to integers saturate; NaN is 0. */
    for (size_t f = 0; f < NELEM(FLOATS); f++)
        for (dtl_dtype to = I32; to <= I64; to = (dtl_dtype)(to + 1)) {
            bt_sub(c, false, "%s to %s, out of range", ty(FLOATS[f], SH(40)), dtl_dtype_name(to));
            bt_out(c, dtl_g_cast(g, bt_in(c, FLOATS[f], 1, SH(40).d, BT_SPECIAL(-1e19, 1e19)),
                                 to));
        }
    run_case(c);
}

/* Shape pairs for binary ops: broadcasting edge cases. */
static const struct {
    shp a, b;
} pairs[] = {
    {SCALAR, SCALAR},        {SH(17), SCALAR},        {SH(3, 1), SH(1, 7)},
    {SH(2, 3, 17), SH(17)},  {SH(5, 1, 3), SH(4, 1)}, {SH(33, 17), SH(33, 17)},
    {SCALAR, SH(7)},         {SH(1), SH(33)},         {SH(1, 1, 1), SH(16)},
    {SH(8, 16), SH(8, 1)},   {SH(1, 33), SH(33, 1)},  {SH(2, 1, 3, 1, 5), SH(1, 4, 1, 6, 1)},
};
#define PAIRS_DEFAULT 6

static bool binary_valid(dtl_op op, dtl_dtype dt)
{
    switch (op) {
    case DTL_OP_POW: return isf(dt);
    case DTL_OP_EQ:
    case DTL_OP_NE: return true;
    case DTL_OP_AND:
    case DTL_OP_OR: return dt == BOOL;
    default: return dt != BOOL;
    }
}

static bool is_cmp(dtl_op op)
{
    return op >= DTL_OP_LT && op <= DTL_OP_NE;
}

static void binary_dists(dtl_op op, dtl_dtype dt, bt_dist *da, bt_dist *db)
{
    *da = *db = plain_dist(dt);
    if (dt == BOOL)
        return;
    if (is_cmp(op)) {
        *da = *db = BT_I(-2, 2);   /* ties */
        return;
    }
    if (isf(dt)) {
        if (op == DTL_OP_DIV)
            *db = BT_U(0.5, 2);
        if (op == DTL_OP_POW) {
            *da = BT_U(0.2, 3);
            *db = BT_U(-2, 2);
        }
        return;
    }
    if (op == DTL_OP_DIV) {
        *da = BT_SPECIAL(-50, 50);
        *db = BT_SPECIAL(-5, 5);   /* x / 0, MIN / -1 */
    }
}

static void test_binary(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 40 + op);
    dtl_graph *g = bt_graph(c);
    for (size_t t = 0; t < NELEM(ALL); t++) {
        dtl_dtype dt = ALL[t];
        if (!binary_valid(op, dt))
            continue;
        bt_dist da, db;
        binary_dists(op, dt, &da, &db);
        bool grad = isf(dt) && !is_cmp(op);
        for (size_t i = 0; i < upto(NELEM(pairs), PAIRS_DEFAULT); i++) {
            shp a = pairs[i].a, b = pairs[i].b;
            bt_sub(c, grad, "%s, %s", ty(dt, a), ty(dt, b));
            dtl_val x = bt_in(c, dt, a.r, a.d, da), y = bt_in(c, dt, b.r, b.d, db);
            bt_out(c, dtl_g_binary(g, op, x, y));
        }
        if (isf(dt) || dtl_dtype_is_int(dt)) {
            /* Special values, every one against every one (forward). */
            shp a = SH(13, 1), b = SH(1, 13);
            bt_sub(c, false, "%s, %s special values", ty(dt, a), ty(dt, b));
            bt_dist d = isf(dt) ? BT_SPECIAL(-3, 3) : BT_SPECIAL(-100, 100);
            bt_out(c, dtl_g_binary(g, op, bt_in_plain(c, dt, a.r, a.d, d),
                                   bt_in_plain(c, dt, b.r, b.d, d)));
        }
        if (isf(dt) && (op == DTL_OP_MAX || op == DTL_OP_MIN)) {
            bt_sub(c, true, "%s ties", ty(dt, SH(6, 7)));
            bt_out(c, dtl_g_binary(g, op, bt_in(c, dt, 2, SH(6, 7).d, BT_I(-2, 2)),
                                   bt_in(c, dt, 2, SH(6, 7).d, BT_I(-2, 2))));
        }
        if (op == DTL_OP_POW) {
            /* Negative bases with integer exponents, zero bases (C's pow). */
            bt_sub(c, false, "%s ** %s integers", ty(dt, SH(7, 1)), ty(dt, SH(6)));
            bt_out(c, dtl_g_binary(g, op, bt_in_plain(c, dt, 2, SH(7, 1).d, BT_I(-3, 3)),
                                   bt_in_plain(c, dt, 1, SH(6).d, BT_I(-2, 3))));
            bt_sub(c, true, "%s ** scalar constants", ty(dt, SH(17)));
            dtl_val x = bt_in(c, dt, 1, SH(17).d, BT_U(0.2, 3));
            static const double e[] = {2, 0.5, -1, 3, 0};
            for (size_t k = 0; k < NELEM(e); k++)
                bt_out(c, dtl_g_binary(g, op, x, dtl_g_scalar(g, dt, e[k])));
        }
        if (dt == F32 && !is_cmp(op)) {
            shp a = SH(257, 300), b = SH(300);
            bt_sub(c, true, "large %s, %s", ty(dt, a), ty(dt, b));
            bt_out(c, dtl_g_binary(g, op, bt_in(c, dt, a.r, a.d, da), bt_in(c, dt, b.r, b.d, db)));
        }
    }
    run_case(c);
}

static void test_where(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 60);
    dtl_graph *g = bt_graph(c);
    static const struct {
        shp c, a, b;
    } tri[] = {
        {SCALAR, SCALAR, SCALAR},          {SH(3, 1), SH(1, 7), SCALAR},
        {SH(2, 1, 5), SH(4, 1), SH(1, 1, 5)}, {SH(33, 17), SH(33, 17), SH(33, 17)},
        {SH(1), SH(33, 3), SH(3)},         {SH(7), SH(7), SH(7)},
        {SH(17), SH(2, 17), SH(1)},        {SCALAR, SH(5, 3), SH(3)},
    };
    for (size_t t = 0; t < NELEM(ALL); t++)
        for (size_t i = 0; i < upto(NELEM(tri), 4); i++) {
            dtl_dtype dt = ALL[t];
            bt_sub(c, isf(dt), "where(%s, %s, %s)", ty(BOOL, tri[i].c), ty(dt, tri[i].a),
                   ty(dt, tri[i].b));
            dtl_val m = bt_in_plain(c, BOOL, tri[i].c.r, tri[i].c.d, BT_BOOLS);
            dtl_val a = bt_in(c, dt, tri[i].a.r, tri[i].a.d, plain_dist(dt));
            dtl_val b = bt_in(c, dt, tri[i].b.r, tri[i].b.d, plain_dist(dt));
            bt_out(c, dtl_g_where(g, m, a, b));
        }
    /* A computed mask (a comparison fused into the select). */
    bt_sub(c, true, "where(x > y, x, -y)");
    dtl_val x = bt_in(c, F32, 2, SH(9, 17).d, BT_U(-1, 1));
    dtl_val y = bt_in(c, F32, 1, SH(17).d, BT_U(-1, 1));
    bt_out(c, dtl_g_where(g, dtl_g_binary(g, DTL_OP_GT, x, y), x, dtl_g_unary(g, DTL_OP_NEG, y)));
    run_case(c);
}

/* ---- reductions ---------------------------------------------------------------------------- */

static const shp red_shapes[] = {SCALAR, SH(1), SH(33), SH(3, 7), SH(17, 1, 5), SH(1, 16, 1),
                                 SH(2, 3, 4, 5)};

static void test_reduce(dtl_op op)
{
    for (size_t t = 0; t < NELEM(NUMERIC); t++) {
        dtl_dtype dt = NUMERIC[t];
        char label[64];
        snprintf(label, sizeof label, "%s %s", dtl_op_name(op), dtl_dtype_name(dt));
        bt_case *c = bt_case_new(label, 70 + op * 8 + t);
        dtl_graph *g = bt_graph(c);
        bt_dist d = isf(dt) ? BT_U(-2, 2) : op == DTL_OP_SUM ? BT_FULL : BT_SPECIAL(-100, 100);
        for (size_t i = 0; i < NELEM(red_shapes); i++) {
            shp s = red_shapes[i];
            for (uint32_t axes = 0; axes < (1u << s.r); axes++)
                for (int kd = 0; kd < 2; kd++) {
                    /* By default: every mask up to rank 2, both keepdims; at rank 3 and 4 a
                     * few masks, keepdims by the mask's parity. */
                    bool some = s.r <= 2 || (s.r == 3 && (axes == 1 || axes == 2 || axes == 5 ||
                                                           axes == 7)) ||
                                (s.r == 4 && (axes == 6 || axes == 9 || axes == 15));
                    if (s.r >= (full ? 4u : 3u) && kd != (int)(axes & 1))
                        continue;
                    if (!full && !some)
                        continue;
                    bt_sub(c, isf(dt), "%s axes 0x%x%s", ty(dt, s), axes, kd ? " keepdims" : "");
                    bt_out(c, dtl_g_reduce(g, op, bt_in(c, dt, s.r, s.d, d), axes, kd));
                }
        }
        if (isf(dt)) {
            shp s = SH(6, 7);
            for (uint32_t axes = 1; axes < 4; axes++) {
                bt_sub(c, false, "%s axes 0x%x special values", ty(dt, s), axes);
                bt_out(c, dtl_g_reduce(g, op, bt_in_plain(c, dt, s.r, s.d, BT_SPECIAL(-3, 3)),
                                       axes, false));
                bt_sub(c, true, "%s axes 0x%x ties", ty(dt, s), axes);
                bt_out(c, dtl_g_reduce(g, op, bt_in(c, dt, s.r, s.d, BT_I(-2, 2)), axes, true));
            }
            /* The reduction of a fused elementwise prologue. */
            bt_sub(c, true, "%s of exp(x) * y, axes 0x2", ty(dt, SH(9, 33)));
            dtl_val x = bt_in(c, dt, 2, SH(9, 33).d, BT_U(-1, 1));
            dtl_val y = bt_in(c, dt, 1, SH(33).d, BT_U(-1, 1));
            bt_out(c, dtl_g_reduce(g, op, dtl_g_binary(g, DTL_OP_MUL, dtl_g_unary(g, DTL_OP_EXP, x),
                                                      y),
                                   2, false));
        }
        if (dt == F32 || dt == I32) {
            shp s = SH(300, 257);
            for (uint32_t axes = 1; axes < 4; axes++) {
                bt_sub(c, isf(dt), "large %s axes 0x%x", ty(dt, s), axes);
                bt_out(c, dtl_g_reduce(g, op, bt_in(c, dt, s.r, s.d, d), axes, false));
            }
        }
        run_case(c);
    }
}

static void test_argmax(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 90);
    dtl_graph *g = bt_graph(c);
    static const shp shapes[] = {SH(33), SH(3, 7), SH(2, 3, 4, 5), SH(1), SH(17, 1, 5)};
    for (size_t t = 0; t < NELEM(NUMERIC); t++) {
        dtl_dtype dt = NUMERIC[t];
        if (dt == F32) {
            shp s = SH(300, 257);
            for (uint32_t ax = 0; ax < 2; ax++) {
                bt_sub(c, false, "large %s axis %u", ty(dt, s), ax);
                bt_out(c, dtl_g_argmax(g, bt_in(c, dt, s.r, s.d, BT_U(-1, 1)), ax));
            }
        }
        for (size_t i = 0; i < upto(NELEM(shapes), 3); i++)
            for (uint32_t ax = 0; ax < shapes[i].r; ax++) {
                shp s = shapes[i];
                bt_sub(c, false, "%s axis %u, ties", ty(dt, s), ax);
                bt_out(c, dtl_g_argmax(g, bt_in(c, dt, s.r, s.d, BT_I(-3, 3)), ax));
                if (isf(dt)) {
                    bt_sub(c, false, "%s axis %u, special values", ty(dt, s), ax);
                    bt_out(c, dtl_g_argmax(g, bt_in(c, dt, s.r, s.d, BT_SPECIAL(-3, 3)), ax));
                } else {
                    bt_sub(c, false, "%s axis %u, full range", ty(dt, s), ax);
                    bt_out(c, dtl_g_argmax(g, bt_in(c, dt, s.r, s.d, BT_FULL), ax));
                }
            }
    }
    run_case(c);
}

/* ---- matmul -------------------------------------------------------------------------------- */

static void test_matmul(dtl_op op)
{
    static const struct {
        shp a, b;
        bool ta, tb;   /* a, b are stored transposed (last two axes) and transposed back */
    } mm[] = {
        {SH(1, 1), SH(1, 1), 0, 0},          {SH(3, 17), SH(17, 7), 0, 0},
        {SH(33, 1), SH(1, 33), 0, 0},        {SH(33, 33), SH(33, 33), 0, 0},
        {SH(4, 7, 3), SH(4, 3, 17), 0, 0},   {SH(2, 1, 3, 5), SH(3, 5, 2), 0, 0},
        {SH(3, 4), SH(2, 4, 5), 0, 0},       {SH(17, 3), SH(7, 17), 1, 1},
        {SH(2, 17, 3), SH(2, 7, 17), 1, 1},  {SH(64, 129), SH(129, 70), 0, 0},
        {SH(129, 64), SH(129, 70), 1, 0},
        {SH(1, 7), SH(7, 1), 0, 0},          {SH(17, 33), SH(33, 3), 0, 0},
        {SH(7, 3), SH(3, 17), 0, 0},         {SH(16, 16), SH(16, 16), 0, 0},
        {SH(8, 32), SH(32, 8), 0, 0},        {SH(2, 3, 5), SH(5, 4), 0, 0},
        {SH(1, 5, 3), SH(6, 3, 7), 0, 0},    {SH(17, 3), SH(17, 7), 1, 0},
        {SH(3, 17), SH(7, 17), 0, 1},        {SH(5, 33, 1), SH(33, 9), 1, 0},
    };
    for (size_t t = 0; t < NELEM(FLOATS); t++) {
        dtl_dtype dt = FLOATS[t];
        char label[64];
        snprintf(label, sizeof label, "%s %s", dtl_op_name(op), dtl_dtype_name(dt));
        bt_case *c = bt_case_new(label, 100 + t);
        dtl_graph *g = bt_graph(c);
        for (size_t i = 0; i < upto(NELEM(mm), 11); i++)
            for (int ints = 0; ints < 2; ints++) {
                if (!full && ints && i % 2)
                    continue;
                shp a = mm[i].a, b = mm[i].b;
                /* Small integers: every product and partial sum is exact, so any order of
                 * accumulation gives the same bits. */
                bt_sub(c, !ints, "%s%s @ %s%s%s", ty(dt, a), mm[i].ta ? "^T" : "", ty(dt, b),
                       mm[i].tb ? "^T" : "", ints ? " small integers (exact)" : "");
                bt_dist d = ints ? BT_I(-4, 4) : BT_U(-1, 1);
                dtl_val x = bt_in(c, dt, a.r, a.d, d), y = bt_in(c, dt, b.r, b.d, d);
                uint32_t perm[DTL_MAX_RANK];
                if (mm[i].ta || mm[i].tb) {
                    for (uint32_t k = 0; k < DTL_MAX_RANK; k++)
                        perm[k] = k;
                }
                if (mm[i].ta) {
                    perm[a.r - 2] = a.r - 1, perm[a.r - 1] = a.r - 2;
                    x = dtl_g_transpose(g, x, perm);
                    perm[a.r - 2] = a.r - 2, perm[a.r - 1] = a.r - 1;
                }
                if (mm[i].tb) {
                    perm[b.r - 2] = b.r - 1, perm[b.r - 1] = b.r - 2;
                    y = dtl_g_transpose(g, y, perm);
                }
                dtl_val z = dtl_g_matmul(g, x, y);
                if (ints)
                    bt_out_exact(c, z);
                else
                    bt_out(c, z);
            }
        /* The dense-layer pattern: relu(x @ w + b), an epilogue to fuse. */
        bt_sub(c, true, "relu(x @ w + b) %s", ty(dt, SH(32, 17)));
        dtl_val x = bt_in(c, dt, 2, SH(32, 33).d, BT_U(-1, 1));
        dtl_val w = bt_in(c, dt, 2, SH(33, 17).d, BT_U(-1, 1));
        dtl_val b = bt_in(c, dt, 1, SH(17).d, BT_U(-1, 1));
        bt_out(c, dtl_g_unary(g, DTL_OP_RELU,
                              dtl_g_binary(g, DTL_OP_ADD, dtl_g_matmul(g, x, w), b)));
        run_case(c);
    }
}

/* ---- data movement ------------------------------------------------------------------------- */

static void test_reshape(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 110);
    dtl_graph *g = bt_graph(c);
    static const struct {
        shp from, to;
    } rs[] = {
        {SCALAR, SH(1, 1)},        {SH(2, 3, 4), SH(6, 4)},   {SH(33, 17), SH(17, 33)},
        {SH(1, 7, 1), SH(7)},      {SH(1), SCALAR},           {SH(2, 3, 4), SH(24)},
        {SH(7), SH(7, 1)},         {SH(4, 6), SH(2, 2, 3, 2)},
    };
    for (size_t t = 0; t < NELEM(ALL); t++)
        for (size_t i = 0; i < upto(NELEM(rs), 4); i++) {
            dtl_dtype dt = ALL[t];
            shp f = rs[i].from, to = rs[i].to;
            bt_sub(c, isf(dt), "%s to %s", ty(dt, f), ty(dt, to));
            bt_out(c, dtl_g_reshape(g, bt_in(c, dt, f.r, f.d, plain_dist(dt)), to.r, to.d));
            /* A view of a bound input, and a view of a view used by an op. */
            bt_sub(c, false, "%s to %s of an input", ty(dt, f), ty(dt, to));
            dtl_val x = bt_in_plain(c, dt, f.r, f.d, plain_dist(dt));
            dtl_val v = dtl_g_reshape(g, x, to.r, to.d);
            bt_out(c, v);
            bt_out(c, dtl_g_reshape(g, v, f.r, f.d));
        }
    bt_sub(c, true, "reshape between elementwise ops");
    dtl_val x = bt_in(c, F32, 2, SH(6, 4).d, BT_U(-1, 1));
    dtl_val y = dtl_g_reshape(g, dtl_g_unary(g, DTL_OP_EXP, x), 3, SH(2, 3, 4).d);
    bt_out(c, dtl_g_binary(g, DTL_OP_MUL, y, bt_in(c, F32, 1, SH(4).d, BT_U(-1, 1))));
    run_case(c);
}

static void test_transpose(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 111);
    dtl_graph *g = bt_graph(c);
    static const struct {
        shp s;
        uint32_t perm[DTL_MAX_RANK];
    } tr[] = {
        {SH(3, 17), {1, 0}},      {SH(2, 3, 5), {0, 2, 1}}, {SH(2, 3, 5), {1, 2, 0}},
        {SH(2, 3, 5), {2, 0, 1}}, {SH(4, 1, 3, 2), {3, 1, 0, 2}},
        {SH(2, 3, 4, 5, 2), {4, 2, 0, 3, 1}}, {SH(64, 65), {1, 0}},
        {SH(7), {0}},             {SH(1, 33), {1, 0}},      {SH(33, 33), {1, 0}},
        {SH(2, 3, 5), {0, 1, 2}}, {SH(2, 3, 5), {1, 0, 2}}, {SH(2, 3, 5), {2, 1, 0}},
    };
    for (size_t t = 0; t < NELEM(ALL); t++)
        for (size_t i = 0; i < upto(NELEM(tr), 7); i++) {
            dtl_dtype dt = ALL[t];
            shp s = tr[i].s;
            bt_sub(c, isf(dt), "%s perm [%u, %u, %u, %u, %u]", ty(dt, s), tr[i].perm[0],
                   tr[i].perm[1], tr[i].perm[2], tr[i].perm[3], tr[i].perm[4]);
            bt_out(c, dtl_g_transpose(g, bt_in(c, dt, s.r, s.d, plain_dist(dt)), tr[i].perm));
        }
    run_case(c);
}

static void test_broadcast(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 112);
    dtl_graph *g = bt_graph(c);
    static const struct {
        shp from, to;
    } bs[] = {
        {SCALAR, SH(3, 4)},     {SH(3, 1), SH(2, 3, 7)},  {SH(1, 5, 1), SH(4, 5, 6)},
        {SH(9, 1), SH(9, 33)},  {SH(1), SH(17)},          {SH(7), SH(7)},
        {SH(1), SH(1, 1, 1)},   {SH(33), SH(9, 33)},
    };
    for (size_t t = 0; t < NELEM(ALL); t++)
        for (size_t i = 0; i < upto(NELEM(bs), 4); i++) {
            dtl_dtype dt = ALL[t];
            shp f = bs[i].from, to = bs[i].to;
            bt_sub(c, isf(dt), "%s to %s", ty(dt, f), ty(dt, to));
            bt_out(c, dtl_g_broadcast(g, bt_in(c, dt, f.r, f.d, plain_dist(dt)), to.r, to.d));
        }
    run_case(c);
}

static void test_slice(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 113);
    dtl_graph *g = bt_graph(c);
    static const struct {
        shp s;
        int64_t start[3], stop[3], step[3];
    } sl[] = {
        {SH(33), {5}, {33}, {3}},
        {SH(33), {32}, {-1}, {-1}},
        {SH(7, 9), {1, 8}, {7, -1}, {2, -3}},
        {SH(3, 5, 17), {2, 1, 0}, {-1, 4, 17}, {-1, 2, 5}},
        {SH(17), {16}, {15}, {-1}},
        {SH(33), {0}, {33}, {1}},
        {SH(33), {30}, {2}, {-4}},
        {SH(1), {0}, {1}, {1}},
        {SH(7, 9), {0, 0}, {7, 9}, {7, 9}},
        {SH(3, 5, 17), {0, 4, 16}, {3, 5, 17}, {1, 1, 1}},
    };
    for (size_t t = 0; t < NELEM(ALL); t++)
        for (size_t i = 0; i < upto(NELEM(sl), 5); i++) {
            dtl_dtype dt = ALL[t];
            shp s = sl[i].s;
            bt_sub(c, isf(dt), "%s [%lld:%lld:%lld, %lld:%lld:%lld, ...]", ty(dt, s),
                   (long long)sl[i].start[0], (long long)sl[i].stop[0], (long long)sl[i].step[0],
                   (long long)sl[i].start[1], (long long)sl[i].stop[1], (long long)sl[i].step[1]);
            bt_out(c, dtl_g_slice(g, bt_in(c, dt, s.r, s.d, plain_dist(dt)), sl[i].start,
                                  sl[i].stop, sl[i].step));
        }
    run_case(c);
}

static void test_concat(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 114);
    dtl_graph *g = bt_graph(c);
    static const struct {
        uint32_t axis, n;
        shp s[4];
    } cc[] = {
        {0, 3, {SH(7), SH(1), SH(17)}},
        {1, 3, {SH(3, 1), SH(3, 7), SH(3, 2)}},
        {1, 4, {SH(2, 1, 3), SH(2, 5, 3), SH(2, 1, 3), SH(2, 33, 3)}},
        {2, 2, {SH(2, 3, 17), SH(2, 3, 16)}},
        {0, 2, {SH(1), SH(1)}},
        {0, 2, {SH(3, 5), SH(4, 5)}},
    };
    for (size_t t = 0; t < NELEM(ALL); t++) {
        dtl_dtype dt = ALL[t];
        for (size_t i = 0; i < upto(NELEM(cc), 4); i++) {
            bt_sub(c, isf(dt), "%u %s pieces along %u, first %s", cc[i].n, dtl_dtype_name(dt),
                   cc[i].axis, ty(dt, cc[i].s[0]));
            dtl_val xs[4];
            for (uint32_t k = 0; k < cc[i].n; k++)
                xs[k] = bt_in(c, dt, cc[i].s[k].r, cc[i].s[k].d, plain_dist(dt));
            bt_out(c, dtl_g_concat(g, xs, cc[i].n, cc[i].axis));
        }
        bt_sub(c, isf(dt), "the same %s value twice", ty(dt, SH(3, 5)));
        dtl_val x = bt_in(c, dt, 2, SH(3, 5).d, plain_dist(dt));
        bt_out(c, dtl_g_concat(g, (dtl_val[]){x, x}, 2, 1));
    }
    run_case(c);
}

static void test_gather(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 115);
    dtl_graph *g = bt_graph(c);
    static const struct {
        shp data, idx;
        uint32_t axis;
    } gs[] = {
        {SH(10, 7), SH(5), 0},   {SH(10, 7), SH(2, 3), 1}, {SH(4, 6, 5), SCALAR, 1},
        {SH(2, 9, 3), SH(3, 2), 2}, {SH(64, 33), SH(32), 0},
        {SH(33), SH(17), 0},     {SH(3, 1), SH(4), 1},
    };
    for (size_t t = 0; t < NELEM(ALL); t++)
        for (size_t i = 0; i < upto(NELEM(gs), 5); i++)
            for (dtl_dtype it = I32; it <= I64; it = (dtl_dtype)(it + 1)) {
                if (!full && (it == I64) != ((i + t) % 2 == 1))
                    continue;   /* by default one index dtype per row, alternating */
                dtl_dtype dt = ALL[t];
                shp d = gs[i].data, ix = gs[i].idx;
                bt_sub(c, isf(dt), "%s by %s along %u", ty(dt, d), ty(it, ix), gs[i].axis);
                dtl_val x = bt_in(c, dt, d.r, d.d, plain_dist(dt));
                dtl_val idx = bt_in_plain(c, it, ix.r, ix.d, BT_I(0, (double)(d.d[gs[i].axis] - 1)));
                bt_out(c, dtl_g_gather(g, x, idx, gs[i].axis));
            }
    run_case(c);
}

static void test_scatter_add(dtl_op op)
{
    bt_case *c = bt_case_new(dtl_op_name(op), 116);
    dtl_graph *g = bt_graph(c);
    static const struct {
        shp out, idx;
        uint32_t axis;
    } ss[] = {
        {SH(10, 7), SH(5), 0},   {SH(10, 7), SH(2, 3), 1}, {SH(4, 6, 5), SCALAR, 1},
        {SH(2, 9, 3), SH(3, 2), 2}, {SH(8, 33), SH(64), 0},
        {SH(33), SH(17), 0},     {SH(3, 1), SH(4), 1},
    };
    for (size_t t = 0; t < NELEM(NUMERIC); t++)
        for (size_t i = 0; i < upto(NELEM(ss), 5); i++)
            for (dtl_dtype it = I32; it <= I64; it = (dtl_dtype)(it + 1)) {
                if (!full && (it == I64) != ((i + t) % 2 == 1))
                    continue;   /* by default one index dtype per row, alternating */
                dtl_dtype dt = NUMERIC[t];
                shp o = ss[i].out, ix = ss[i].idx;
                uint32_t axis = ss[i].axis;
                shp u = {0, {0}};   /* updates: out's shape with axis replaced by idx's */
                for (uint32_t k = 0; k < axis; k++)
                    u.d[u.r++] = o.d[k];
                for (uint32_t k = 0; k < ix.r; k++)
                    u.d[u.r++] = ix.d[k];
                for (uint32_t k = axis + 1; k < o.r; k++)
                    u.d[u.r++] = o.d[k];
                bt_sub(c, isf(dt), "%s into %s by %s along %u", ty(dt, u), ty(dt, o), ty(it, ix),
                       axis);
                dtl_val x = bt_in(c, dt, u.r, u.d, isf(dt) ? BT_U(-2, 2) : BT_FULL);
                dtl_val idx = bt_in_plain(c, it, ix.r, ix.d, BT_I(0, (double)(o.d[axis] - 1)));
                bt_out(c, dtl_g_scatter_add(g, x, idx, axis, o.r, o.d));
            }
    run_case(c);
}

/* ---- the table ----------------------------------------------------------------------------- */

/* ---- composites over rows (ROW kernels of compiler/passes/fuse.h) ---------------------------- */

static const shp row_shapes[] = {SH(3, 17), SH(7), SH(4, 33), SH(5, 1), SH(2, 3, 64), SH(300, 257),
                                 SH(2, 2), SH(3, 9000)};

/* softmax, log_softmax, logsumexp and layer_norm over the last axis — each one ROW kernel on
 * llvm, forward and backward — on rows of length 1, 2, odd and vector-sized, a large threaded
 * one, rows of 9000 (more row buffers than llvm keeps on the stack: values computed again);
 * large values (softmax overflow without the max shift), -inf masks (causal_mask then where,
 * as attention does), special values forward, and integer rows (scalar row code). */
static void test_rows(void)
{
    for (size_t t = 0; t < NELEM(FLOATS); t++) {
        dtl_dtype dt = FLOATS[t];
        char label[64];
        snprintf(label, sizeof label, "rows %s", dtl_dtype_name(dt));
        bt_case *c = bt_case_new(label, 900 + t);
        dtl_graph *g = bt_graph(c);
        for (size_t i = 0; i < NELEM(row_shapes); i++) {
            shp s = row_shapes[i];
            uint32_t ax = s.r - 1;
            if (dt == F64 && s.d[ax] > 1000)   /* an f64 sum of 9000 in another order is */
                continue;                      /* off by more than 1e-12 (any kernel kind) */
            bt_sub(c, true, "softmax %s", ty(dt, s));
            bt_out(c, dtl_nn_softmax(g, bt_in(c, dt, s.r, s.d, BT_U(-3, 3)), ax));
            bt_sub(c, true, "log_softmax %s", ty(dt, s));
            bt_out(c, dtl_nn_log_softmax(g, bt_in(c, dt, s.r, s.d, BT_U(-3, 3)), ax));
            bt_sub(c, true, "logsumexp %s", ty(dt, s));
            bt_out(c, dtl_nn_logsumexp(g, bt_in(c, dt, s.r, s.d, BT_U(-3, 3)), ax, false));
            bt_sub(c, true, "layer_norm %s", ty(dt, s));
            bt_out(c, dtl_nn_layer_norm(g, bt_in(c, dt, s.r, s.d, BT_U(-3, 3)),
                                        bt_in(c, dt, 1, &s.d[ax], BT_U(0.5, 1.5)),
                                        bt_in(c, dt, 1, &s.d[ax], BT_U(-1, 1)), 1e-5));
        }
        shp s = SH(4, 33);
        bt_sub(c, true, "softmax of large values %s", ty(dt, s));
        bt_out(c, dtl_nn_softmax(g, bt_in(c, dt, s.r, s.d, BT_U(-3e3, 3e3)), 1));
        bt_sub(c, true, "layer_norm of offset values %s", ty(dt, s));
        dtl_val off = dtl_g_binary(g, DTL_OP_ADD, bt_in(c, dt, s.r, s.d, BT_U(-1, 1)),
                                   dtl_g_scalar(g, dt, 100.0));
        bt_out(c, dtl_nn_layer_norm(g, off, bt_in(c, dt, 1, &s.d[1], BT_U(0.5, 1.5)),
                                    bt_in(c, dt, 1, &s.d[1], BT_U(-1, 1)), 1e-5));
        for (int64_t T = 5; T <= 19; T += 14) {   /* causal masks: -inf above the diagonal */
            shp a = SH(2, T, T);
            bt_sub(c, true, "softmax of a causal -inf mask %s", ty(dt, a));
            dtl_val x = bt_in(c, dt, a.r, a.d, BT_U(-3, 3));
            dtl_val y = dtl_g_where(g, dtl_nn_causal_mask(g, T), x,
                                    dtl_g_scalar(g, dt, -INFINITY));
            bt_out(c, dtl_nn_softmax(g, y, 2));
        }
        bt_sub(c, false, "softmax and layer_norm of special values %s", ty(dt, s));
        dtl_val sp = bt_in_plain(c, dt, s.r, s.d, BT_SPECIAL(-3, 3));
        bt_out(c, dtl_nn_softmax(g, sp, 1));
        bt_out(c, dtl_nn_layer_norm(g, sp, bt_in_plain(c, dt, 1, &s.d[1], BT_U(0.5, 1.5)),
                                    bt_in_plain(c, dt, 1, &s.d[1], BT_U(-1, 1)), 1e-5));
        run_case(c);
    }
    bt_case *c = bt_case_new("rows i32", 910);
    dtl_graph *g = bt_graph(c);
    shp s = SH(5, 33);
    bt_sub(c, false, "x * sum(x) - max(x), rows of %s", ty(I32, s));
    dtl_val x = bt_in(c, I32, s.r, s.d, BT_I(-50, 50));
    dtl_val y = dtl_g_binary(g, DTL_OP_MUL, x, dtl_g_reduce(g, DTL_OP_SUM, x, 2, true));
    bt_out(c, dtl_g_binary(g, DTL_OP_SUB, y, dtl_g_reduce(g, DTL_OP_REDUCE_MAX, y, 2, true)));
    run_case(c);
}

typedef void (*op_test_fn)(dtl_op op);

/* ---- windowed ops: conv2d, pooling and their backward ops ---------------------------------- */

typedef struct conv_row {
    shp x;
    int64_t o, kh, kw;
    dtl_win_attr a;
} conv_row;

#define WIN(s0, s1, p0, p1, d0, d1, gr) \
    {{0, 0}, {s0, s1}, {p0, p1}, {d0, d1}, gr, false}

/* Most telling first: padding, the 1x1 direct path, strides/dilation/groups together, a
 * kernel larger than the input (padding makes room), stride > kernel, depthwise, a batch
 * over DTL_CONV_TASKS (several pool tasks), a LeNet-sized layer. */
static const conv_row conv_rows[] = {
    {SH(2, 3, 7, 7), 4, 3, 3, WIN(1, 1, 1, 1, 1, 1, 1)},
    {SH(2, 5, 4, 6), 3, 1, 1, WIN(1, 1, 0, 0, 1, 1, 1)},
    {SH(2, 4, 9, 8), 6, 3, 2, WIN(2, 1, 1, 0, 1, 2, 2)},
    {SH(1, 3, 3, 3), 2, 5, 5, WIN(1, 1, 2, 2, 1, 1, 1)},
    {SH(2, 2, 9, 9), 3, 2, 2, WIN(3, 3, 0, 0, 1, 1, 1)},
    {SH(3, 4, 5, 5), 4, 3, 3, WIN(1, 1, 1, 1, 1, 1, 4)},
    {SH(17, 2, 12, 12), 8, 5, 5, WIN(1, 1, 2, 2, 1, 1, 1)},
    {SH(20, 16, 14, 14), 32, 5, 5, WIN(1, 1, 2, 2, 1, 1, 1)},
    {SH(2, 6, 11, 7), 4, 3, 3, WIN(2, 3, 2, 1, 2, 1, 2)},
};

static shp conv_wshape(const conv_row *r)
{
    return SH(r->o, r->x.d[1] / r->a.groups, r->kh, r->kw);
}

static shp conv_yshape(const conv_row *r)
{
    return SH(r->x.d[0], r->o,
              dtl_win_out(r->x.d[2], r->kh, r->a.pad[0], r->a.dil[0], r->a.stride[0]),
              dtl_win_out(r->x.d[3], r->kw, r->a.pad[1], r->a.dil[1], r->a.stride[1]));
}

static void test_conv(dtl_op op)
{
    for (size_t t = 0; t < NELEM(FLOATS); t++) {
        dtl_dtype dt = FLOATS[t];
        char label[64];
        snprintf(label, sizeof label, "%s %s", dtl_op_name(op), dtl_dtype_name(dt));
        bt_case *c = bt_case_new(label, 130 + t);
        dtl_graph *g = bt_graph(c);
        for (size_t i = 0; i < upto(NELEM(conv_rows), 8); i++) {
            const conv_row *r = &conv_rows[i];
            shp x = r->x, w = conv_wshape(r), y = conv_yshape(r);
            bt_sub(c, true, "%s x %s stride [%d, %d] pad [%d, %d] dil [%d, %d] groups %d",
                   ty(dt, x), ty(dt, w), r->a.stride[0], r->a.stride[1], r->a.pad[0],
                   r->a.pad[1], r->a.dil[0], r->a.dil[1], r->a.groups);
            switch (op) {
            case DTL_OP_CONV2D:
                bt_out(c, dtl_g_conv2d(g, bt_in(c, dt, x.r, x.d, BT_U(-1, 1)),
                                       bt_in(c, dt, w.r, w.d, BT_U(-1, 1)), &r->a));
                break;
            case DTL_OP_CONV2D_BWD_X:
                bt_out(c, dtl_g_conv2d_bwd_x(g, bt_in(c, dt, y.r, y.d, BT_U(-1, 1)),
                                             bt_in(c, dt, w.r, w.d, BT_U(-1, 1)), &r->a, x.d));
                break;
            default:
                bt_out(c, dtl_g_conv2d_bwd_w(g, bt_in(c, dt, x.r, x.d, BT_U(-1, 1)),
                                             bt_in(c, dt, y.r, y.d, BT_U(-1, 1)), &r->a, w.d));
                break;
            }
        }
        run_case(c);
    }
}

typedef struct pool_row {
    shp x;
    dtl_win_attr a;
} pool_row;

#define PWIN(k0, k1, s0, s1, p0, p1, cp) \
    {{k0, k1}, {s0, s1}, {p0, p1}, {1, 1}, 1, cp}

static const pool_row pool_rows[] = {
    {SH(2, 3, 8, 8), PWIN(2, 2, 2, 2, 0, 0, false)},
    {SH(2, 3, 7, 7), PWIN(3, 3, 2, 2, 1, 1, false)},
    {SH(2, 3, 7, 7), PWIN(3, 3, 2, 2, 1, 1, true)},
    {SH(1, 2, 9, 9), PWIN(2, 2, 3, 3, 0, 0, false)},
    {SH(2, 2, 5, 4), PWIN(3, 2, 1, 2, 1, 0, false)},
    {SH(3, 2, 5, 6), PWIN(5, 6, 1, 1, 0, 0, false)},
    {SH(2, 1, 4, 4), PWIN(3, 3, 1, 1, 2, 2, false)},
    {SH(32, 16, 28, 28), PWIN(2, 2, 2, 2, 0, 0, false)},
};

static shp pool_yshape(const pool_row *r)
{
    return SH(r->x.d[0], r->x.d[1],
              dtl_win_out(r->x.d[2], r->a.kernel[0], r->a.pad[0], 1, r->a.stride[0]),
              dtl_win_out(r->x.d[3], r->a.kernel[1], r->a.pad[1], 1, r->a.stride[1]));
}

static void test_pool(dtl_op op)
{
    bool avg = op == DTL_OP_AVGPOOL2D || op == DTL_OP_AVGPOOL2D_BWD;
    for (size_t t = 0; t < NELEM(FLOATS); t++) {
        dtl_dtype dt = FLOATS[t];
        char label[64];
        snprintf(label, sizeof label, "%s %s", dtl_op_name(op), dtl_dtype_name(dt));
        bt_case *c = bt_case_new(label, 140 + t);
        dtl_graph *g = bt_graph(c);
        for (size_t i = 0; i < upto(NELEM(pool_rows), 8); i++) {
            pool_row r = pool_rows[i];
            if (!avg)
                r.a.count_pad = false;
            shp x = r.x, y = pool_yshape(&r);
            for (int ties = 0; ties < (avg ? 1 : 2); ties++) {
                bt_sub(c, true, "%s kernel [%d, %d] stride [%d, %d] pad [%d, %d]%s%s",
                       ty(dt, x), r.a.kernel[0], r.a.kernel[1], r.a.stride[0], r.a.stride[1],
                       r.a.pad[0], r.a.pad[1], r.a.count_pad ? " count_pad" : "",
                       ties ? " ties" : "");
                bt_dist d = ties ? BT_I(-2, 2) : BT_U(-1, 1);
                switch (op) {
                case DTL_OP_MAXPOOL2D:
                case DTL_OP_AVGPOOL2D:
                    bt_out(c, dtl_g_pool2d(g, op, bt_in(c, dt, x.r, x.d, d), &r.a));
                    break;
                case DTL_OP_MAXPOOL2D_BWD:
                    bt_out(c, dtl_g_maxpool2d_bwd(g, bt_in(c, dt, x.r, x.d, d),
                                                  bt_in(c, dt, y.r, y.d, BT_U(-1, 1)), &r.a));
                    break;
                default:
                    bt_out(c, dtl_g_avgpool2d_bwd(g, bt_in(c, dt, y.r, y.d, d), &r.a, x.d));
                    break;
                }
            }
            if (op == DTL_OP_MAXPOOL2D && i < 3) {   /* NaN wins, ±inf, ±0 */
                bt_sub(c, false, "%s kernel [%d, %d] special values", ty(dt, x), r.a.kernel[0],
                       r.a.kernel[1]);
                bt_out(c, dtl_g_pool2d(g, op, bt_in(c, dt, x.r, x.d, BT_SPECIAL(-3, 3)), &r.a));
            }
        }
        run_case(c);
    }
}

static const op_test_fn op_tests[] = {
    [DTL_OP_CONST] = test_const,
    [DTL_OP_INPUT] = test_input,
    [DTL_OP_PARAM] = test_param,
    [DTL_OP_STATE] = test_state,
    [DTL_OP_IOTA] = test_iota,
    [DTL_OP_RNG_UNIFORM] = test_rng,
    [DTL_OP_NEG] = test_unary,
    [DTL_OP_ABS] = test_unary,
    [DTL_OP_EXP] = test_unary,
    [DTL_OP_LOG] = test_unary,
    [DTL_OP_SQRT] = test_unary,
    [DTL_OP_TANH] = test_unary,
    [DTL_OP_SIGMOID] = test_unary,
    [DTL_OP_RELU] = test_unary,
    [DTL_OP_SIN] = test_unary,
    [DTL_OP_COS] = test_unary,
    [DTL_OP_NOT] = test_not,
    [DTL_OP_CAST] = test_cast,
    [DTL_OP_ADD] = test_binary,
    [DTL_OP_SUB] = test_binary,
    [DTL_OP_MUL] = test_binary,
    [DTL_OP_DIV] = test_binary,
    [DTL_OP_POW] = test_binary,
    [DTL_OP_MAX] = test_binary,
    [DTL_OP_MIN] = test_binary,
    [DTL_OP_LT] = test_binary,
    [DTL_OP_LE] = test_binary,
    [DTL_OP_GT] = test_binary,
    [DTL_OP_GE] = test_binary,
    [DTL_OP_EQ] = test_binary,
    [DTL_OP_NE] = test_binary,
    [DTL_OP_AND] = test_binary,
    [DTL_OP_OR] = test_binary,
    [DTL_OP_WHERE] = test_where,
    [DTL_OP_SUM] = test_reduce,
    [DTL_OP_REDUCE_MAX] = test_reduce,
    [DTL_OP_ARGMAX] = test_argmax,
    [DTL_OP_MATMUL] = test_matmul,
    [DTL_OP_RESHAPE] = test_reshape,
    [DTL_OP_TRANSPOSE] = test_transpose,
    [DTL_OP_BROADCAST] = test_broadcast,
    [DTL_OP_SLICE] = test_slice,
    [DTL_OP_CONCAT] = test_concat,
    [DTL_OP_GATHER] = test_gather,
    [DTL_OP_SCATTER_ADD] = test_scatter_add,
    [DTL_OP_CONV2D] = test_conv,
    [DTL_OP_CONV2D_BWD_X] = test_conv,
    [DTL_OP_CONV2D_BWD_W] = test_conv,
    [DTL_OP_MAXPOOL2D] = test_pool,
    [DTL_OP_MAXPOOL2D_BWD] = test_pool,
    [DTL_OP_AVGPOOL2D] = test_pool,
    [DTL_OP_AVGPOOL2D_BWD] = test_pool,
};
static_assert(NELEM(op_tests) == DTL_OP_COUNT,
              "every op needs a row in op_tests (tests/unit/test_backend_ops.c)");

/* ---- the harness itself -------------------------------------------------------------------- */

/* The comparison rule on hand-made tensors. */
static void test_match_rule(void)
{
    float want[4] = {1, -2, 0, 1000}, got[4];
    dtl_tensor w = {want, F32, 1, {4}}, gt = {got, F32, 1, {4}};
    memcpy(got, want, sizeof got);
    CHECK(bt_match("equal", &gt, &w, 1));
    got[2] = 1e-3f;   /* near zero: held to 1e-5 of the tensor's scale (1000): passes */
    CHECK(bt_match("near zero within scale", &gt, &w, 1));
    got[2] = 0.05f;
    fprintf(stderr, "(an expected mismatch follows)\n");
    CHECK(!bt_match("near zero beyond scale", &gt, &w, 1));
    got[2] = 0;
    got[1] = -2.0001f;
    CHECK(bt_match("within tolerance", &gt, &w, 1));
    fprintf(stderr, "(expected mismatches follow)\n");
    CHECK(!bt_match("exact asked", &gt, &w, 0));
    got[1] = NAN;
    CHECK(!bt_match("NaN for a number", &gt, &w, 1));
    want[1] = NAN;
    CHECK(bt_match("NaN for NaN", &gt, &w, 1));
    got[3] = INFINITY;
    CHECK(!bt_match("inf for a number", &gt, &w, 1));
    dtl_tensor other = {got, F32, 2, {2, 2}};
    CHECK(!bt_match("shape", &other, &w, 1));
    uint8_t b1[3] = {0, 1, 2}, b2[3] = {0, 255, 1};
    dtl_tensor tb1 = {b1, BOOL, 1, {3}}, tb2 = {b2, BOOL, 1, {3}};
    CHECK(bt_match("bools by truth", &tb1, &tb2, 1));
    int32_t i1[2] = {5, 7}, i2[2] = {5, 8};
    dtl_tensor ti1 = {i1, I32, 1, {2}}, ti2 = {i2, I32, 1, {2}};
    CHECK(!bt_match("ints exactly", &ti1, &ti2, 1));
}

/* Deliberately broken backends, wrapping the reference: the harness must catch each. */
typedef struct broken_plan {
    void *ref;
    int mode;   /* 0: stale (runs only once); 1: perturbs the first float output element */
    unsigned runs;
} broken_plan;

static void *broken_prepare(const dtl_graph *g, dtl_store *s, const dtl_plan_opts *o, dtl_err *e,
                            int mode)
{
    broken_plan *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->mode = mode;
    p->ref = dtl_backend_ref.prepare(g, s, o, e);
    if (!p->ref) {
        free(p);
        return NULL;
    }
    return p;
}

static void *stale_prepare(const dtl_graph *g, dtl_store *s, const dtl_plan_opts *o, dtl_err *e)
{
    return broken_prepare(g, s, o, e, 0);
}

static void *perturb_prepare(const dtl_graph *g, dtl_store *s, const dtl_plan_opts *o,
                             dtl_err *e)
{
    return broken_prepare(g, s, o, e, 1);
}

static bool broken_run(void *vp, const dtl_binding *in, size_t nin, dtl_err *err)
{
    broken_plan *p = vp;
    if (p->mode == 0 && p->runs++ > 0)
        return true;
    return dtl_backend_ref.run(p->ref, in, nin, err);
}

static bool broken_output(void *vp, const char *name, dtl_tensor *out, dtl_err *err)
{
    broken_plan *p = vp;
    if (!dtl_backend_ref.output(p->ref, name, out, err))
        return false;
    if (p->mode == 1 && out->dtype == F32 && dtl_tensor_numel(out) > 0)
        ((float *)out->data)[0] *= 1.001f;   /* 1e-3 relative: beyond the tolerance */
    return true;
}

static void broken_stats(const void *vp, dtl_plan_stats *st)
{
    dtl_backend_ref.stats(((const broken_plan *)vp)->ref, st);
}

static void broken_free(void *vp)
{
    broken_plan *p = vp;
    if (p)
        dtl_backend_ref.free(p->ref);
    free(p);
}

static void test_harness_catches(void)
{
    static const dtl_backend stale = {"stale", stale_prepare, broken_run, broken_output,
                                      broken_stats, broken_free, false};
    static const dtl_backend perturb = {"perturb", perturb_prepare, broken_run, broken_output,
                                        broken_stats, broken_free, false};
    const bt_backend bad[2] = {{"stale", &stale, {0}}, {"perturb", &perturb, {0}}};
    for (int k = 0; k < 2; k++) {
        bt_case *c = bt_case_new("harness self-test", 999);
        bt_sub(c, true, "exp of %s on a broken backend (%s)", ty(F32, SH(3, 5)), bad[k].name);
        bt_out(c, dtl_g_unary(bt_graph(c), DTL_OP_EXP, bt_in(c, F32, 2, SH(3, 5).d, BT_U(-1, 1))));
        fprintf(stderr, "(expected failures of the harness self-test on '%s' follow)\n",
                bad[k].name);
        CHECK(!bt_case_run_on(c, &bad[k], 1));
    }
}

int main(int argc, char **argv)
{
    bt_known_set(known);
    const char *env = getenv("DTL_TEST_FULL");
    full = env && *env && strcmp(env, "0") != 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--full") == 0)
            full = true;
    printf("backends under test: %s (against ref); %s set of shapes\n", bt_backend_names(),
           full ? "the full" : "the default (DTL_TEST_FULL=1: all)");
    test_match_rule();
    bt_counts before = bt_counts_get();
    test_harness_catches();
    bt_counts after = bt_counts_get();
    for (unsigned op = 0; op < DTL_OP_COUNT; op++) {
        CHECK(op_tests[op] != NULL);
        if (!op_tests[op]) {
            fprintf(stderr, "op %s has no test in op_tests\n", dtl_op_name((dtl_op)op));
            continue;
        }
        bool wanted = true, named = false;
        for (int i = 1; i < argc; i++)
            if (strcmp(argv[i], "--full") != 0) {
                wanted = named ? wanted : false;
                named = true;
                wanted |= strcmp(argv[i], dtl_op_name((dtl_op)op)) == 0;
            }
        if (wanted)
            op_tests[op]((dtl_op)op);
    }
    bool rows = true, named = false;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--full") != 0) {
            rows = named ? rows : false;
            named = true;
            rows |= strcmp(argv[i], "rows") == 0;
        }
    if (rows)
        test_rows();
    bt_counts n = bt_counts_get();
    printf("%u cases, %u subcases, %u outputs compared, %u failures, %u known failures\n",
           n.cases - (after.cases - before.cases), n.subcases - (after.subcases - before.subcases),
           n.compared - (after.compared - before.compared), n.failed - (after.failed - before.failed),
           n.known);
    bt_known_report();
    CHECK_DONE();
}
