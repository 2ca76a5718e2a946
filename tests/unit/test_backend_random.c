/* tests/unit/test_backend_random.c — randomized differential test: random small graphs on
 * every backend under test against the reference backend (tests/unit/backend_testlib.h).
 *
 * Each graph is grown from one seed (Philox): float operands (INPUTs, with a zero PARAM added
 * so that gradients are taken w.r.t. them) with random shapes (rank 0–4, dims 1–33, so
 * size-1 dims, broadcasting and sizes that are not multiples of a vector width are common),
 * then random steps until the graph has 5–60 nodes, each step adding an op or a small pattern: elementwise chains (the last
 * value is the preferred operand, so chains form and fusion has work), broadcasting binary
 * ops, where with masks, sum/max over random axes with and without keepdims, matmuls
 * (batched, with broadcast batch dims, with transposed operands, with a bias and relu after),
 * reshapes, transposes, broadcasts, slices (negative steps too), concats, casts, gathers and
 * scatter_adds, iota, constants, and dropout-like masks from rng_uniform. The values that
 * nothing consumes, and a few that something does, are the outputs; the loss is a random
 * weighting of them (backend_testlib), and the gradients w.r.t. every param are compared too.
 *
 * Values are kept in a moderate range (log, sqrt, div and pow get arguments bounded away
 * from their singularities; large values are squashed by tanh), and comparisons, argmax and
 * casts to integers only ever see values that every backend computes bit for bit (inputs,
 * constants, data movement, neg/abs/relu/max/min of those) — otherwise rounding alone could
 * flip a mask and the test would fail without a bug.
 *
 * The graphs of several seeds are packed into one plan (disjoint subgraphs of one graph), so
 * that a JIT backend pays its per-plan cost once per pack; failures name the seed.
 *
 *     tests/unit/test_backend_random              seeds 1..N (N = $DTL_TEST_RANDOM_GRAPHS or 300)
 *     tests/unit/test_backend_random SEED         that seed alone (reproduces a failure)
 *     tests/unit/test_backend_random SEED COUNT   seeds SEED..SEED+COUNT-1
 *     DTL_TEST_RANDOM_PACK=N                      seeds per plan (default 8)
 *     DTL_TEST_RANDOM_SECONDS=S                   start no new pack after S seconds of CPU time
 *                                                 (default 20; 0: no limit); the first 2 packs
 *                                                 always run
 *
 * The time limit only bounds the work (a JIT backend compiles every pack): it never fails
 * the test, and which seeds ran is printed, so a run is reproducible.
 *     DTL_TEST_RANDOM_PRINT=1                     also print each plan's graph
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../compiler/graph.h"
#include "backend_testlib.h"
#include "unit.h"

#define F32 DTL_DTYPE_F32
#define F64 DTL_DTYPE_F64
#define I32 DTL_DTYPE_I32
#define I64 DTL_DTYPE_I64
#define BOOL DTL_DTYPE_BOOL
#define MAXVALS 256
#define MAXNUMEL 2048

/* Open bugs of a backend, by seed (/work/notes/s4-llvm-bugs.md), e.g.
 *     {"llvm", "seed 81 (", "s4-llvm-bugs.md BUG 1: ..."},
 * (BUG 1, a stored matmul-epilogue member, failed seeds 81 96 109 112 114 124 155 156 219 221
 * 230 276 277 until it was fixed.) */
static const bt_known_failure known[] = {
    {NULL, NULL, NULL},
};

typedef struct val {
    dtl_val v;
    double scale;   /* a rough bound on |value| */
    bool exact;     /* computed bit for bit by every backend */
    bool used;      /* consumed by a later op */
} val;

typedef struct gen {
    bt_case *c;
    dtl_graph *g;
    dtl_rng r;
    dtl_dtype fdt;
    val vals[MAXVALS];
    uint32_t nvals;
    dtl_val step;   /* the i64 "step" input of rng_uniform, made on first use */
    unsigned rng_streams;
    unsigned ops[32];
} gen;

enum {
    K_UNARY, K_BINARY, K_WHERE, K_REDUCE, K_ARGMAX, K_MATMUL, K_RESHAPE, K_TRANSPOSE,
    K_BROADCAST, K_SLICE, K_CONCAT, K_CAST, K_GATHER, K_SCATTER, K_IOTA, K_RNG, K_CONST,
    K_COUNT
};
static const char *const kind_names[K_COUNT] = {
    "unary", "binary", "where", "reduce", "argmax", "matmul", "reshape", "transpose",
    "broadcast", "slice", "concat", "cast", "gather", "scatter_add", "iota", "rng", "const"};
static const unsigned kind_weight[K_COUNT] = {20, 20, 5, 9, 2, 9, 5, 5, 3, 5, 4, 3, 4, 2, 1, 2, 2};

/* ---- small helpers -------------------------------------------------------------------------- */

static uint32_t below(gen *G, uint32_t n)
{
    return (uint32_t)dtl_rng_below(&G->r, n);
}

static bool chance(gen *G, double p)
{
    return dtl_rng_uniform_f64(&G->r) < p;
}

typedef struct shp {
    uint32_t r;
    int64_t d[DTL_MAX_RANK];
} shp;

static shp shape_of(gen *G, dtl_val v)
{
    const dtl_node *n = dtl_g_node(G->g, v);
    shp s = {n->rank, {0}};
    memcpy(s.d, n->shape, sizeof s.d);
    return s;
}

static dtl_dtype dtype_of(gen *G, dtl_val v)
{
    return dtl_g_node(G->g, v)->dtype;
}

static int64_t numel(shp s)
{
    int64_t n = 1;
    for (uint32_t i = 0; i < s.r; i++)
        n *= s.d[i];
    return n;
}

static int64_t rand_dim(gen *G)
{
    static const int64_t common[] = {1, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33};
    return chance(G, 0.6) ? common[below(G, sizeof common / sizeof common[0])]
                          : 1 + (int64_t)below(G, 33);
}

/* Shrinks dims (largest first) until the element count is at most cap. */
static shp cap_shape(shp s, int64_t cap)
{
    while (numel(s) > cap) {
        uint32_t big = 0;
        for (uint32_t i = 1; i < s.r; i++)
            if (s.d[i] > s.d[big])
                big = i;
        s.d[big] = (s.d[big] + 1) / 2;
    }
    return s;
}

static shp rand_shape(gen *G)
{
    static const uint32_t ranks[] = {0, 1, 1, 2, 2, 2, 3, 3, 4};
    shp s = {ranks[below(G, sizeof ranks / sizeof ranks[0])], {0}};
    for (uint32_t i = 0; i < s.r; i++)
        s.d[i] = rand_dim(G);
    return cap_shape(s, MAXNUMEL);
}

static val *push(gen *G, dtl_val v, double scale, bool exact)
{
    if (G->nvals == MAXVALS)
        return &G->vals[G->nvals - 1];
    val *x = &G->vals[G->nvals++];
    *x = (val){v, scale, exact, false};
    return x;
}

static val *find(gen *G, dtl_val v)
{
    for (uint32_t i = G->nvals; i-- > 0;)
        if (G->vals[i].v == v)
            return &G->vals[i];
    return NULL;
}

static void mark_used(gen *G, dtl_val v)
{
    val *x = find(G, v);
    if (x)
        x->used = true;
}

/* A new float operand of shape s: an input (plus its param), or now and then a constant. */
static val *operand(gen *G, shp s)
{
    if (chance(G, 0.1)) {
        double *buf = malloc((size_t)(numel(s) ? numel(s) : 1) * sizeof *buf);
        float *b32 = malloc((size_t)(numel(s) ? numel(s) : 1) * sizeof *b32);
        if (!buf || !b32)
            abort();
        for (int64_t i = 0; i < numel(s); i++)
            b32[i] = (float)(buf[i] = -1 + 2 * dtl_rng_uniform_f64(&G->r));
        dtl_val k = G->fdt == F32 ? dtl_g_const_data(G->g, F32, s.r, s.d, b32)
                                  : dtl_g_const_data(G->g, F64, s.r, s.d, buf);
        free(buf);
        free(b32);
        return push(G, k, 1, true);
    }
    return push(G, bt_in(G->c, G->fdt, s.r, s.d, BT_U(-1, 1)), 1, true);
}

/* A float value to operate on: mostly the newest one (chains), else any. */
static val *pick(gen *G)
{
    for (int tries = 0; tries < 8; tries++) {
        val *x = chance(G, 0.5) ? &G->vals[G->nvals - 1] : &G->vals[below(G, G->nvals)];
        if (dtl_dtype_is_float(dtype_of(G, x->v)))
            return x;
    }
    return operand(G, rand_shape(G));
}

static bool broadcasts(shp a, shp b, shp *out)
{
    shp o = {a.r > b.r ? a.r : b.r, {0}};
    for (uint32_t i = 0; i < o.r; i++) {
        int64_t x = i < o.r - a.r ? 1 : a.d[i - (o.r - a.r)];
        int64_t y = i < o.r - b.r ? 1 : b.d[i - (o.r - b.r)];
        if (x != y && x != 1 && y != 1)
            return false;
        o.d[i] = x > y ? x : y;
    }
    if (out)
        *out = o;
    return true;
}

/* A shape that broadcasts with s: dims set to 1, leading dims dropped or added. */
static shp compatible_shape(gen *G, shp s)
{
    shp t = s;
    if (t.r > 0 && chance(G, 0.3)) {   /* drop leading dims */
        uint32_t drop = 1 + below(G, t.r);
        memmove(t.d, t.d + drop, (t.r - drop) * sizeof t.d[0]);
        t.r -= drop;
    }
    for (uint32_t i = 0; i < t.r; i++)
        if (chance(G, 0.3))
            t.d[i] = 1;
    if (t.r == s.r && t.r < 4 && chance(G, 0.1)) {   /* a new leading dim: the result grows */
        memmove(t.d + 1, t.d, t.r * sizeof t.d[0]);
        t.d[0] = 1 + below(G, 3);
        t.r++;
        if (numel(t) * 3 > MAXNUMEL)
            t.d[0] = 1;
    }
    return t;
}

/* A second float operand that broadcasts with x (from the pool or new); exact_only: only
 * values every backend computes bit for bit. */
static val *partner(gen *G, val *x, bool exact_only)
{
    shp sx = shape_of(G, x->v);
    if (chance(G, 0.5))
        for (int tries = 0; tries < 6; tries++) {
            val *y = &G->vals[below(G, G->nvals)];
            shp o;
            if (dtl_dtype_is_float(dtype_of(G, y->v)) && (!exact_only || y->exact) &&
                broadcasts(sx, shape_of(G, y->v), &o) && numel(o) <= MAXNUMEL)
                return y;
        }
    return operand(G, compatible_shape(G, sx));
}

static dtl_val scalar(gen *G, double v)
{
    return dtl_g_scalar(G->g, G->fdt, v);
}

/* Squashes a value whose scale grew too large. */
static val *tame(gen *G, val *x)
{
    if (x->scale <= 20)
        return x;
    return push(G, dtl_g_unary(G->g, DTL_OP_TANH, x->v), 1, false);
}

/* ---- the steps ------------------------------------------------------------------------------ */

static void step_unary(gen *G)
{
    val *x = pick(G);
    dtl_graph *g = G->g;
    static const dtl_op ops[] = {DTL_OP_NEG,  DTL_OP_ABS,     DTL_OP_EXP,  DTL_OP_LOG,
                                 DTL_OP_SQRT, DTL_OP_TANH,    DTL_OP_SIGMOID, DTL_OP_RELU,
                                 DTL_OP_SIN,  DTL_OP_COS,     DTL_OP_RELU, DTL_OP_TANH};
    dtl_op op = ops[below(G, sizeof ops / sizeof ops[0])];
    mark_used(G, x->v);
    dtl_val v = x->v;
    double s = x->scale;
    bool exact = x->exact && (op == DTL_OP_NEG || op == DTL_OP_ABS || op == DTL_OP_RELU);
    switch (op) {
    case DTL_OP_EXP:
        if (s > 3) {
            v = dtl_g_unary(g, DTL_OP_TANH, v);
            s = 1;
        }
        v = dtl_g_unary(g, op, v);
        s = exp(s);
        break;
    case DTL_OP_LOG:   /* log(|x| + 0.5) */
        v = dtl_g_unary(g, op, dtl_g_binary(g, DTL_OP_ADD, dtl_g_unary(g, DTL_OP_ABS, v),
                                           scalar(G, 0.5)));
        s = fabs(log(s + 0.5)) + 1;
        break;
    case DTL_OP_SQRT:   /* sqrt(x * x + 0.25) */
        v = dtl_g_unary(g, op, dtl_g_binary(g, DTL_OP_ADD, dtl_g_binary(g, DTL_OP_MUL, v, v),
                                           scalar(G, 0.25)));
        s = s + 0.5;
        break;
    case DTL_OP_TANH:
    case DTL_OP_SIGMOID:
    case DTL_OP_SIN:
    case DTL_OP_COS:
        v = dtl_g_unary(g, op, v);
        s = 1;
        break;
    default:
        v = dtl_g_unary(g, op, v);
        break;
    }
    push(G, v, s, exact);
}

static void step_binary(gen *G)
{
    val *x = pick(G);
    val *y = partner(G, x, false);
    dtl_graph *g = G->g;
    static const dtl_op ops[] = {DTL_OP_ADD, DTL_OP_SUB, DTL_OP_MUL, DTL_OP_DIV,
                                 DTL_OP_POW, DTL_OP_MAX, DTL_OP_MIN, DTL_OP_ADD, DTL_OP_MUL};
    dtl_op op = ops[below(G, sizeof ops / sizeof ops[0])];
    mark_used(G, x->v);
    mark_used(G, y->v);
    dtl_val a = x->v, b = y->v, v;
    double s;
    bool swap = chance(G, 0.5);
    if (swap && op != DTL_OP_DIV && op != DTL_OP_POW) {
        dtl_val t = a;
        a = b;
        b = t;
    }
    switch (op) {
    case DTL_OP_DIV:   /* a / (sigmoid(b) + 0.5) */
        v = dtl_g_binary(g, op, a, dtl_g_binary(g, DTL_OP_ADD, dtl_g_unary(g, DTL_OP_SIGMOID, b),
                                                 scalar(G, 0.5)));
        s = 2 * x->scale;
        break;
    case DTL_OP_POW:   /* (|a| + 0.5) ** tanh(b) */
        v = dtl_g_binary(g, op,
                         dtl_g_binary(g, DTL_OP_ADD, dtl_g_unary(g, DTL_OP_ABS, a), scalar(G, 0.5)),
                         dtl_g_unary(g, DTL_OP_TANH, b));
        s = x->scale + 2;
        break;
    case DTL_OP_MUL:
        v = dtl_g_binary(g, op, a, b);
        s = x->scale * y->scale;
        break;
    case DTL_OP_MAX:
    case DTL_OP_MIN:
        v = dtl_g_binary(g, op, a, b);
        s = fmax(x->scale, y->scale);
        break;
    default:
        v = dtl_g_binary(g, op, a, b);
        s = x->scale + y->scale;
        break;
    }
    bool exact = x->exact && y->exact && (op == DTL_OP_MAX || op == DTL_OP_MIN);
    tame(G, push(G, v, s, exact));
}

static void step_where(gen *G)
{
    val *x = pick(G);
    shp sx = shape_of(G, x->v);
    /* The mask compares two exact values; its shape broadcasts with x. */
    val *a = partner(G, x, true);
    val *b = partner(G, a, true);
    static const dtl_op cmps[] = {DTL_OP_LT, DTL_OP_LE, DTL_OP_GT, DTL_OP_GE, DTL_OP_EQ,
                                  DTL_OP_NE};
    dtl_val m = dtl_g_binary(G->g, cmps[below(G, 6)], a->v, b->v);
    if (chance(G, 0.3))
        m = dtl_g_unary(G->g, DTL_OP_NOT, m);
    if (chance(G, 0.2))
        m = dtl_g_binary(G->g, chance(G, 0.5) ? DTL_OP_AND : DTL_OP_OR, m,
                         dtl_g_binary(G->g, DTL_OP_GT, a->v, scalar(G, 0)));
    shp sm = shape_of(G, m), so;
    if (!broadcasts(sm, sx, &so) || numel(so) > MAXNUMEL) {
        m = dtl_g_binary(G->g, DTL_OP_GT, x->v, x->v);   /* all false, still a where */
    }
    val *y = chance(G, 0.5) ? partner(G, x, false) : NULL;
    dtl_val other = y ? y->v : scalar(G, chance(G, 0.5) ? 0 : -1);
    if (y && !broadcasts(shape_of(G, m), shape_of(G, y->v), &so))
        other = scalar(G, 0);
    shp s1;
    if (!broadcasts(shape_of(G, m), sx, &s1) || !broadcasts(s1, shape_of(G, other), &so) ||
        numel(so) > MAXNUMEL)
        return;
    mark_used(G, x->v);
    if (y)
        mark_used(G, y->v);
    push(G, dtl_g_where(G->g, m, x->v, other), x->scale + (y ? y->scale : 1),
         x->exact && (!y || y->exact));
}

static void step_reduce(gen *G)
{
    val *x = pick(G);
    shp s = shape_of(G, x->v);
    uint32_t axes = s.r ? below(G, 1u << s.r) : 0;
    if (s.r && axes == 0 && chance(G, 0.7))
        axes = 1u << below(G, s.r);
    bool keep = chance(G, 0.5);
    mark_used(G, x->v);
    if (chance(G, 0.6)) {   /* a mean: sum times 1/count */
        int64_t cnt = 1;
        for (uint32_t i = 0; i < s.r; i++)
            if ((axes >> i) & 1)
                cnt *= s.d[i];
        dtl_val v = dtl_g_reduce(G->g, DTL_OP_SUM, x->v, axes, keep);
        push(G, dtl_g_binary(G->g, DTL_OP_MUL, v, scalar(G, 1.0 / (double)cnt)), x->scale, false);
    } else {
        push(G, dtl_g_reduce(G->g, DTL_OP_REDUCE_MAX, x->v, axes, keep), x->scale, x->exact);
    }
}

static void step_argmax(gen *G)
{
    /* Over an exact value with ties possible (a small-integer input half of the time). */
    shp s = rand_shape(G);
    if (s.r == 0)
        s = (shp){1, {1 + (int64_t)below(G, 33)}};
    dtl_val x = chance(G, 0.5) ? bt_in(G->c, G->fdt, s.r, s.d, BT_I(-3, 3))
                               : operand(G, s)->v;
    uint32_t ax = below(G, s.r);
    dtl_val am = dtl_g_argmax(G->g, x, ax);
    bt_out(G->c, am);
    /* Used on: the index as a float, scaled. */
    dtl_val f = dtl_g_binary(G->g, DTL_OP_MUL, dtl_g_cast(G->g, am, G->fdt), scalar(G, 0.1));
    push(G, f, (double)s.d[ax] * 0.1, true);
}

static void step_matmul(gen *G)
{
    val *x = pick(G);
    shp sx = shape_of(G, x->v);
    dtl_val a = x->v;
    if (sx.r < 2) {   /* make it a matrix: [1, n] or [n, 1] */
        int64_t n = numel(sx);
        shp t = chance(G, 0.5) ? (shp){2, {1, n}} : (shp){2, {n, 1}};
        a = dtl_g_reshape(G->g, a, 2, t.d);
        sx = t;
    }
    if (chance(G, 0.15)) {   /* a transposed left operand instead: a new [.., k, m] */
        shp st = sx;
        st.d[st.r - 1] = sx.d[sx.r - 2];
        st.d[st.r - 2] = sx.d[sx.r - 1];
        uint32_t perm[DTL_MAX_RANK];
        for (uint32_t i = 0; i < st.r; i++)
            perm[i] = i;
        perm[st.r - 2] = st.r - 1;
        perm[st.r - 1] = st.r - 2;
        val *o = operand(G, st);
        o->used = true;
        a = dtl_g_transpose(G->g, o->v, perm);
    }
    int64_t k = sx.d[sx.r - 1], n = rand_dim(G);
    /* b: [k, n], or with batch dims that broadcast with a's. */
    shp sb = {2, {k, n}};
    if (sx.r > 2 && chance(G, 0.5)) {
        uint32_t nb = sx.r - 2;
        sb.r = nb + 2;
        for (uint32_t i = 0; i < nb; i++)
            sb.d[i] = chance(G, 0.3) ? 1 : sx.d[i];
        sb.d[nb] = k;
        sb.d[nb + 1] = n;
    } else if (sx.r == 2 && chance(G, 0.2)) {   /* b has the batch dims: [bb, k, n] */
        sb = (shp){3, {1 + (int64_t)below(G, 3), k, n}};
    }
    sb = cap_shape(sb, MAXNUMEL);
    sb.d[sb.r - 2] = k;   /* never shrink k */
    dtl_val b;
    if (chance(G, 0.3)) {   /* stored transposed */
        shp st = sb;
        st.d[st.r - 1] = k;
        st.d[st.r - 2] = sb.d[sb.r - 1];
        uint32_t perm[DTL_MAX_RANK];
        for (uint32_t i = 0; i < st.r; i++)
            perm[i] = i;
        perm[st.r - 2] = st.r - 1;
        perm[st.r - 1] = st.r - 2;
        val *o = operand(G, st);
        o->used = true;
        b = dtl_g_transpose(G->g, o->v, perm);
    } else {
        val *o = operand(G, sb);
        o->used = true;
        b = o->v;
    }
    mark_used(G, x->v);
    /* Check the result size before committing to it. */
    shp so;
    shp ba = sx, bb = sb;
    ba.r -= 2;
    bb.r -= 2;
    if (!broadcasts(ba, bb, &so) || numel(so) * sx.d[sx.r - 2] * n > MAXNUMEL * 2) {
        push(G, a, x->scale, x->exact);
        return;
    }
    dtl_val m = dtl_g_matmul(G->g, a, b);
    m = dtl_g_binary(G->g, DTL_OP_MUL, m, scalar(G, 1 / sqrt((double)k)));
    double s = x->scale;
    if (chance(G, 0.4)) {   /* a dense layer's epilogue: + bias, relu */
        shp sm = shape_of(G, m);
        val *bias = operand(G, (shp){1, {sm.d[sm.r - 1]}});
        bias->used = true;
        m = dtl_g_binary(G->g, DTL_OP_ADD, m, bias->v);
        if (chance(G, 0.6))
            m = dtl_g_unary(G->g, DTL_OP_RELU, m);
        s += 1;
    }
    tame(G, push(G, m, s, false));
}

static void step_reshape(gen *G)
{
    val *x = pick(G);
    shp s = shape_of(G, x->v), t = s;
    int64_t n = numel(s);
    switch (below(G, 4)) {
    case 0:   /* flatten */
        t = (shp){1, {n}};
        break;
    case 1:   /* merge two adjacent dims */
        if (s.r >= 2) {
            uint32_t i = below(G, s.r - 1);
            t.d[i] = s.d[i] * s.d[i + 1];
            memmove(t.d + i + 1, t.d + i + 2, (s.r - i - 2) * sizeof t.d[0]);
            t.r--;
        }
        break;
    case 2:   /* split a dim by a divisor */
        if (s.r >= 1 && s.r < 5) {
            uint32_t i = below(G, s.r);
            int64_t d = s.d[i], f = 1;
            for (int64_t q = 2; q < d; q++)
                if (d % q == 0 && chance(G, 0.5)) {
                    f = q;
                    break;
                }
            memmove(t.d + i + 1, t.d + i, (s.r - i) * sizeof t.d[0]);
            t.d[i] = f;
            t.d[i + 1] = d / f;
            t.r++;
        }
        break;
    default:   /* insert a 1, or drop one */
        if (s.r < 5 && chance(G, 0.5)) {
            uint32_t i = below(G, s.r + 1);
            memmove(t.d + i + 1, t.d + i, (s.r - i) * sizeof t.d[0]);
            t.d[i] = 1;
            t.r++;
        } else {
            t.r = 0;
            for (uint32_t i = 0; i < s.r; i++)
                if (s.d[i] != 1)
                    t.d[t.r++] = s.d[i];
        }
        break;
    }
    mark_used(G, x->v);
    push(G, dtl_g_reshape(G->g, x->v, t.r, t.d), x->scale, x->exact);
}

static void step_transpose(gen *G)
{
    val *x = pick(G);
    shp s = shape_of(G, x->v);
    if (s.r < 2)
        return;
    uint32_t perm[DTL_MAX_RANK];
    for (uint32_t i = 0; i < s.r; i++)
        perm[i] = i;
    for (uint32_t i = s.r - 1; i > 0; i--) {
        uint32_t j = below(G, i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    mark_used(G, x->v);
    push(G, dtl_g_transpose(G->g, x->v, perm), x->scale, x->exact);
}

static void step_broadcast(gen *G)
{
    val *x = pick(G);
    shp s = shape_of(G, x->v), t = s;
    for (uint32_t i = 0; i < t.r; i++)
        if (t.d[i] == 1 && chance(G, 0.5))
            t.d[i] = 1 + below(G, 5);
    if (t.r < 4 && chance(G, 0.5)) {
        memmove(t.d + 1, t.d, t.r * sizeof t.d[0]);
        t.d[0] = 1 + below(G, 4);
        t.r++;
    }
    if (numel(t) > MAXNUMEL)
        return;
    mark_used(G, x->v);
    push(G, dtl_g_broadcast(G->g, x->v, t.r, t.d), x->scale, x->exact);
}

static void step_slice(gen *G)
{
    val *x = pick(G);
    shp s = shape_of(G, x->v);
    int64_t start[DTL_MAX_RANK], stop[DTL_MAX_RANK], step[DTL_MAX_RANK];
    for (uint32_t i = 0; i < s.r; i++) {
        static const int64_t steps[] = {1, 1, 1, 2, 3, -1, -2};
        int64_t d = s.d[i], st = steps[below(G, 7)];
        int64_t a = (int64_t)below(G, (uint32_t)d);   /* the first index taken */
        int64_t room = st > 0 ? (d - 1 - a) / st : a / -st;   /* more elements after it */
        int64_t cnt = 1 + (int64_t)below(G, (uint32_t)room + 1);
        start[i] = a;
        step[i] = st;
        stop[i] = a + cnt * st;
        if (stop[i] < -1)
            stop[i] = -1;
        if (stop[i] > d)
            stop[i] = d;
    }
    mark_used(G, x->v);
    push(G, dtl_g_slice(G->g, x->v, start, stop, step), x->scale, x->exact);
}

static void step_concat(gen *G)
{
    val *x = pick(G);
    shp s = shape_of(G, x->v);
    if (s.r == 0)
        return;
    uint32_t axis = below(G, s.r);
    dtl_val xs[3] = {x->v};
    uint32_t n = 2 + below(G, 2);
    int64_t total = numel(s);
    double scale = x->scale;
    bool exact = x->exact;
    for (uint32_t k = 1; k < n; k++) {
        if (chance(G, 0.3)) {
            xs[k] = x->v;   /* the same value twice */
            total += numel(s);
            continue;
        }
        shp t = s;
        t.d[axis] = 1 + below(G, 9);
        val *o = operand(G, t);
        o->used = true;
        xs[k] = o->v;
        total += numel(t);
        exact = exact && o->exact;
    }
    if (total > MAXNUMEL)
        return;
    mark_used(G, x->v);
    push(G, dtl_g_concat(G->g, xs, n, axis), scale + 1, exact);
}

static void step_cast(gen *G)
{
    if (chance(G, 0.6)) {   /* to the other float dtype and back */
        val *x = pick(G);
        dtl_dtype other = G->fdt == F32 ? F64 : F32;
        mark_used(G, x->v);
        dtl_val v = dtl_g_cast(G->g, dtl_g_cast(G->g, x->v, other), G->fdt);
        push(G, v, x->scale, x->exact);
        return;
    }
    /* An exact value scaled, truncated to an integer, and back. */
    val *x = NULL;
    for (int tries = 0; tries < 8 && !x; tries++) {
        val *y = &G->vals[below(G, G->nvals)];
        if (y->exact && dtl_dtype_is_float(dtype_of(G, y->v)))
            x = y;
    }
    if (!x)
        x = operand(G, rand_shape(G));
    dtl_dtype it = chance(G, 0.5) ? I32 : I64;
    dtl_val i = dtl_g_cast(G->g, x->v, it);
    dtl_val back = dtl_g_cast(G->g, dtl_g_binary(G->g, DTL_OP_ADD, i, dtl_g_scalar(G->g, it, 1)),
                              G->fdt);
    bt_out(G->c, i);
    mark_used(G, x->v);
    push(G, back, x->scale + 1, true);
}

static void step_gather(gen *G)
{
    val *x = pick(G);
    shp s = shape_of(G, x->v);
    if (s.r == 0)
        return;
    uint32_t axis = below(G, s.r);
    shp is = {below(G, 3), {0}};
    for (uint32_t i = 0; i < is.r; i++)
        is.d[i] = 1 + below(G, 7);
    if (s.r - 1 + is.r > 5 || numel(s) / s.d[axis] * numel(is) > MAXNUMEL)
        return;
    dtl_dtype it = chance(G, 0.5) ? I32 : I64;
    dtl_val idx = bt_in_plain(G->c, it, is.r, is.d, BT_I(0, (double)(s.d[axis] - 1)));
    mark_used(G, x->v);
    push(G, dtl_g_gather(G->g, x->v, idx, axis), x->scale, x->exact);
}

static void step_scatter(gen *G)
{
    val *x = pick(G);
    shp s = shape_of(G, x->v);
    if (s.r == 0)
        return;
    uint32_t axis = below(G, s.r);
    shp o = s;
    o.d[axis] = 1 + below(G, 17);
    if (numel(o) > MAXNUMEL)
        return;
    dtl_dtype it = chance(G, 0.5) ? I32 : I64;
    dtl_val idx = bt_in_plain(G->c, it, 1, (int64_t[]){s.d[axis]}, BT_I(0, (double)(o.d[axis] - 1)));
    mark_used(G, x->v);
    push(G, dtl_g_scatter_add(G->g, x->v, idx, axis, o.r, o.d), x->scale * (double)s.d[axis],
         false);
}

static void step_iota(gen *G)
{
    val *x = pick(G);
    shp s = shape_of(G, x->v);
    if (s.r == 0)
        return;
    dtl_val io = dtl_g_iota(G->g, G->fdt, s.r, s.d, below(G, s.r));
    mark_used(G, x->v);
    dtl_val v = dtl_g_binary(G->g, DTL_OP_ADD, x->v,
                             dtl_g_binary(G->g, DTL_OP_MUL, io, scalar(G, 0.05)));
    push(G, v, x->scale + 2, false);
}

static void step_rng(gen *G)
{
    val *x = pick(G);
    shp s = shape_of(G, x->v);
    if (G->step == DTL_VAL_NONE)
        G->step = bt_in_plain(G->c, I64, 0, NULL, BT_I(1, 100000));
    double p = 0.1 + 0.1 * below(G, 6);
    dtl_val u = dtl_g_rng_uniform(G->g, G->step, G->fdt, s.r, s.d, 7 + G->rng_streams++);
    dtl_val keep = dtl_g_binary(G->g, DTL_OP_GE, u, scalar(G, p));
    dtl_val v = dtl_g_where(G->g, keep, dtl_g_binary(G->g, DTL_OP_MUL, x->v, scalar(G, 1 / (1 - p))),
                            scalar(G, 0));
    mark_used(G, x->v);
    push(G, v, x->scale / (1 - p), false);
}

static void step_const(gen *G)
{
    val *x = pick(G);
    shp s = shape_of(G, x->v);
    dtl_val k;
    if (chance(G, 0.5)) {
        k = scalar(G, -1 + 2 * dtl_rng_uniform_f64(&G->r));
    } else {
        shp t = compatible_shape(G, s);
        shp o;
        if (!broadcasts(s, t, &o) || numel(o) > MAXNUMEL)
            t = s;
        k = dtl_g_const(G->g, G->fdt, t.r, t.d, 0.5 + dtl_rng_uniform_f64(&G->r));
    }
    mark_used(G, x->v);
    dtl_op op = chance(G, 0.5) ? DTL_OP_ADD : DTL_OP_MUL;
    push(G, dtl_g_binary(G->g, op, x->v, k), x->scale * 1.5 + 1, false);
}

static void (*const steps[K_COUNT])(gen *) = {
    step_unary,   step_binary,    step_where,  step_reduce, step_argmax,  step_matmul,
    step_reshape, step_transpose, step_broadcast, step_slice, step_concat, step_cast,
    step_gather,  step_scatter,   step_iota,   step_rng,    step_const};

/* ---- one graph ------------------------------------------------------------------------------ */

static unsigned kind_pick(gen *G)
{
    unsigned total = 0;
    for (unsigned k = 0; k < K_COUNT; k++)
        total += kind_weight[k];
    unsigned x = below(G, total);
    for (unsigned k = 0; k < K_COUNT; k++) {
        if (x < kind_weight[k])
            return k;
        x -= kind_weight[k];
    }
    return 0;
}

typedef struct stats {
    unsigned graphs, failed;
    uint64_t nodes, min_nodes, max_nodes;
    unsigned kinds[K_COUNT];
} stats;

/* Adds the graph of one seed to case c (a case packs several seeds: one plan per pack, so
 * a JIT backend compiles once for all of them; the seeds' subgraphs are disjoint). */
static void one_graph(bt_case *c, uint64_t seed, stats *st)
{
    gen G;
    memset(&G, 0, sizeof G);
    G.c = c;
    G.g = bt_graph(c);
    G.step = DTL_VAL_NONE;
    uint32_t base = G.g->nnodes;
    dtl_rng_init(&G.r, seed, dtl_rng_stream_id("test_backend_random", 0));
    G.fdt = chance(&G, 0.25) ? F64 : F32;
    bt_sub(c, true, "seed %llu (%s)", (unsigned long long)seed, dtl_dtype_name(G.fdt));
    unsigned nin = 1 + below(&G, 3);
    for (unsigned i = 0; i < nin; i++)
        operand(&G, rand_shape(&G));
    /* Steps until the graph has about `target` nodes (5..60; a step adds 1..8). */
    uint32_t target = 5 + below(&G, 56);
    for (unsigned i = 0; i < 64 && G.g->nnodes - base < target; i++) {
        unsigned k = kind_pick(&G);
        st->kinds[k]++;
        steps[k](&G);
    }
    /* Outputs: every float value nothing consumed, and a few that something did. */
    unsigned nout = 0;
    for (uint32_t i = 0; i < G.nvals; i++) {
        val *x = &G.vals[i];
        const dtl_node *n = dtl_g_node(G.g, x->v);
        bool leaf = n->op == DTL_OP_INPUT || n->op == DTL_OP_CONST || n->op == DTL_OP_PARAM;
        if ((!x->used && !leaf) || (x->used && !leaf && chance(&G, 0.15)) ||
            (i + 1 == G.nvals && nout == 0)) {
            bt_out(c, x->v);
            nout++;
        }
    }
    uint32_t nodes = G.g->nnodes - base;
    st->graphs++;
    st->nodes += nodes;
    if (!st->min_nodes || nodes < st->min_nodes)
        st->min_nodes = nodes;
    if (nodes > st->max_nodes)
        st->max_nodes = nodes;
}

int main(int argc, char **argv)
{
    bt_known_set(known);
    uint64_t first = 1, count = 300;
    const char *env = getenv("DTL_TEST_RANDOM_GRAPHS");
    if (env && *env)
        count = strtoull(env, NULL, 10);
    if (argc > 1)
        first = strtoull(argv[1], NULL, 10), count = 1;
    if (argc > 2)
        count = strtoull(argv[2], NULL, 10);
    bool print = getenv("DTL_TEST_RANDOM_PRINT") && *getenv("DTL_TEST_RANDOM_PRINT");
    printf("backends under test: %s (against ref); graphs %llu..%llu\n", bt_backend_names(),
           (unsigned long long)first, (unsigned long long)(first + count - 1));
    stats st;
    memset(&st, 0, sizeof st);
    uint64_t pack = 8;
    env = getenv("DTL_TEST_RANDOM_PACK");
    if (env && *env && strtoull(env, NULL, 10) > 0)
        pack = strtoull(env, NULL, 10);
    if (argc > 1 && argc < 3)
        pack = 1;
    double budget = 20;
    env = getenv("DTL_TEST_RANDOM_SECONDS");
    if (env && *env)
        budget = strtod(env, NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    uint64_t packs = 0;
    for (uint64_t s = first; s < first + count; s += pack, packs++) {
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
        double spent = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        if (packs >= 2 && budget > 0 && spent > budget) {
            printf("stopped after %.0f CPU seconds (DTL_TEST_RANDOM_SECONDS=%g): seeds %llu..%llu not run\n",
                   spent, budget, (unsigned long long)s,
                   (unsigned long long)(first + count - 1));
            break;
        }
        uint64_t last = s + pack - 1 < first + count - 1 ? s + pack - 1 : first + count - 1;
        char label[64];
        snprintf(label, sizeof label, "random graphs %llu..%llu", (unsigned long long)s,
                 (unsigned long long)last);
        bt_case *c = bt_case_new(label, 1);
        for (uint64_t k = s; k <= last; k++)
            one_graph(c, k, &st);
        if (print)
            dtl_graph_print(bt_graph(c), stdout);
        bool ok = bt_case_run(c);
        if (!ok) {
            st.failed++;
            fprintf(stderr, "%s failed; rerun a failing seed alone with: "
                    "tests/unit/test_backend_random SEED  (DTL_TEST_RANDOM_PRINT=1 prints the "
                    "graph)\n", label);
        }
        CHECK(ok);
    }
    bt_counts n = bt_counts_get();
    printf("%u graphs of %llu..%llu forward nodes (mean %.1f), packed %llu per plan, %u outputs "
           "compared, %u packs failed, %u known failures\nsteps:",
           st.graphs, (unsigned long long)st.min_nodes, (unsigned long long)st.max_nodes,
           st.graphs ? (double)st.nodes / st.graphs : 0.0, (unsigned long long)pack, n.compared,
           st.failed, n.known);
    for (unsigned k = 0; k < K_COUNT; k++)
        printf(" %s %u", kind_names[k], st.kinds[k]);
    printf("\n");
    bt_known_report();
    CHECK_DONE();
}
