/* compiler/passes/simplify.c — algebraic simplification.
 *
 * Design: the input is walked in topological order; each node, its inputs mapped to the
 * output graph (so rewrites see rewritten operands and chains collapse in one sweep), is
 * matched against the rules below. A rule either replaces the node by a value already in
 * the output (which keeps its own role) or builds one new node in its place (with the
 * node's role and label); the operands it no longer reads are left for dce. A replacement
 * always has exactly the node's dtype and shape: "x + 0 -> x" fires only when x already has
 * the result's shape (a splat 0 of any shape that broadcasts to it, without widening it).
 * Constants count when they are splats (fold turns all-equal data into splats). Every
 * node, copied or built, goes through cse's hash-consing table (pass_hcons_add), so a
 * rewrite that yields a node already present (x - neg(y) next to an x + y) reuses it and
 * no duplicate is left for later passes. A node whose operands have become constants
 * through a rewrite (cast(where(c, 1, 1)) -> cast(1)) is folded here by fold's rules
 * (pass_fold_node), and so is a node a rule builds from constants, so the rules after it
 * see the constant. Expected linear time.
 *
 * The rules, and why each keeps the value (x, y any operands; 0, 1, -1, c splat constants):
 *   x + 0, 0 + x -> x      exact, except that x = -0.0 gives -0.0 where x + (+0.0) gives
 *                          +0.0 (equal as numbers; only 1/x or copysign could tell)
 *   x - 0 -> x             the same (x - (-0.0) of -0.0 is +0.0)
 *   x * 1, 1 * x -> x      exact (NaN stays NaN)
 *   x / 1 -> x             exact
 *   pow(x, 1) -> x         exact (C's pow(x, 1) is x for every x)
 *   x * -1, -1 * x -> -x   exact (negation flips the sign; a NaN's sign bit may differ)
 *   x / c -> x * (1/c)     c a power of two whose reciprocal is a normal float: exact
 *                          (both scale by the same power of two with one rounding)
 *   neg(neg x) -> x        exact
 *   x - neg(y) -> x + y,  x + neg(y) -> x - y,  neg(x) + y -> y - x
 *                          exact (IEEE subtraction is addition of the negation), but for
 *                          the sign bit of a NaN result
 *   abs(abs x), abs(neg x) -> abs x;  relu(relu x) -> relu x     exact
 *   where(c, a, a) -> a;  where(true, a, b) -> a;  where(false, a, b) -> b      exact
 *                          (a broadcast to the result's shape when c or b is wider)
 *   cast of x to x's dtype -> x         exact (the kernel copies bytes)
 *   reshape to x's shape -> x;  reshape(reshape x) -> reshape x     exact (row-major views)
 *   broadcast to x's shape -> x;  broadcast(broadcast x) -> broadcast x   exact
 *   transpose by the identity -> x;  transpose(transpose x) -> one transpose (or x)  exact
 *   sum or reduce_max over no axes, or only over axes of size 1 -> x (reshaped when
 *                          keepdims is off): reduce_max exact; sum exact except -0.0,
 *                          which a sum (accumulated from +0.0) turns into +0.0
 * Deliberately NOT rewritten, as they change values: x * 0 (NaN, inf, -0.0), x - x (NaN,
 * inf), x / x, x + x -> 2 * x is exact but is no simpler, and nothing touches RNG_UNIFORM.
 */
#include "passes_internal.h"

#include <math.h>
#include <string.h>

#include "../../runtime/arena.h"

typedef struct simp {
    dtl_graph *out;
    pass_hcons *h;        /* every node is built through it: no duplicates */
    const dtl_node *n;    /* the node of the input graph being rewritten */
    const dtl_val *in;    /* its inputs, mapped */
} simp;

static const dtl_node *nd(const simp *s, dtl_val v)
{
    return &s->out->nodes[v];
}

/* Whether v is a splat whose value equals want (0 matches -0.0 too). */
static bool splat_is(const simp *s, dtl_val v, double want)
{
    double x;
    return pass_splat_value(nd(s, v), &x) && x == want;
}

/* v, if it has exactly the node's dtype and shape; else DTL_VAL_NONE. */
static dtl_val if_same(const simp *s, dtl_val v)
{
    return pass_same_type(nd(s, v), s->n) ? v : DTL_VAL_NONE;
}

/* proto with inputs in, folded when they are constants, else built through the table. */
static dtl_val build(const simp *s, const dtl_node *proto, const dtl_val *in)
{
    dtl_val v = pass_fold_node(s->out, s->h, proto, in);
    return v != DTL_VAL_NONE ? v : pass_hcons_add(s->h, s->out, proto, in);
}

/* A new node like the input node but with op and inputs replaced. */
static dtl_val rebuild(const simp *s, dtl_op op, uint32_t nin, const dtl_val *in)
{
    dtl_node proto = *s->n;
    proto.op = op;
    proto.nin = nin;
    return build(s, &proto, in);
}

static dtl_val rebuild1(const simp *s, dtl_op op, dtl_val a)
{
    return rebuild(s, op, 1, (dtl_val[]){a});
}

static dtl_val rebuild2(const simp *s, dtl_op op, dtl_val a, dtl_val b)
{
    return rebuild(s, op, 2, (dtl_val[]){a, b});
}

/* v broadcast to the node's shape (v itself when it has it already). */
static dtl_val widened(const simp *s, dtl_val v)
{
    return pass_same_type(nd(s, v), s->n) ? v : rebuild1(s, DTL_OP_BROADCAST, v);
}

/* A reshape of v to the node's shape (v itself when it already has it). */
static dtl_val reshaped(const simp *s, dtl_val v)
{
    if (pass_same_type(nd(s, v), s->n))
        return v;
    dtl_node proto = *s->n;
    proto.op = DTL_OP_RESHAPE;
    proto.nin = 1;
    memset(&proto.attr, 0, sizeof proto.attr);
    return build(s, &proto, &v);
}

/* x / c with c a splat power of two: x * (1/c), or DTL_VAL_NONE. */
static dtl_val div_by_pow2(const simp *s, dtl_val x, dtl_val c)
{
    const dtl_node *cn = nd(s, c);
    double v;
    if (!dtl_dtype_is_float(cn->dtype) || !pass_splat_value(cn, &v) || v == 0 || !isfinite(v))
        return DTL_VAL_NONE;
    int e;
    if (fabs(frexp(v, &e)) != 0.5)   /* |v| = 2^(e-1) exactly */
        return DTL_VAL_NONE;
    double r = 1.0 / v;
    bool normal = cn->dtype == DTL_DTYPE_F32 ? isnormal((float)v) && isnormal((float)r)
                                             : isnormal(v) && isnormal(r);
    if (!normal)
        return DTL_VAL_NONE;
    dtl_node k = *cn;
    k.role = s->n->role;
    k.name = NULL;
    k.attr.cst.fill = r;
    dtl_val kv = pass_hcons_add(s->h, s->out, &k, NULL);
    return rebuild2(s, DTL_OP_MUL, x, kv);
}

static bool identity_perm(const uint32_t *perm, uint32_t rank)
{
    for (uint32_t i = 0; i < rank; i++)
        if (perm[i] != i)
            return false;
    return true;
}

/* The replacement for s->n, or DTL_VAL_NONE to copy it as it is. */
static dtl_val simplify_node(const simp *s)
{
    const dtl_node *n = s->n;
    const dtl_val *in = s->in;
    dtl_val a = n->nin > 0 ? in[0] : DTL_VAL_NONE, b = n->nin > 1 ? in[1] : DTL_VAL_NONE;
    const dtl_node *an = a != DTL_VAL_NONE ? nd(s, a) : NULL;
    const dtl_node *bn = b != DTL_VAL_NONE ? nd(s, b) : NULL;
    dtl_val r = DTL_VAL_NONE;
    switch (n->op) {
    case DTL_OP_ADD:
        if (splat_is(s, b, 0) && (r = if_same(s, a)) != DTL_VAL_NONE)
            return r;
        if (splat_is(s, a, 0) && (r = if_same(s, b)) != DTL_VAL_NONE)
            return r;
        if (bn->op == DTL_OP_NEG)
            return rebuild2(s, DTL_OP_SUB, a, bn->in[0]);
        if (an->op == DTL_OP_NEG)
            return rebuild2(s, DTL_OP_SUB, b, an->in[0]);
        return DTL_VAL_NONE;
    case DTL_OP_SUB:
        if (splat_is(s, b, 0) && (r = if_same(s, a)) != DTL_VAL_NONE)
            return r;
        if (bn->op == DTL_OP_NEG)
            return rebuild2(s, DTL_OP_ADD, a, bn->in[0]);
        return DTL_VAL_NONE;
    case DTL_OP_MUL:
        if (splat_is(s, b, 1) && (r = if_same(s, a)) != DTL_VAL_NONE)
            return r;
        if (splat_is(s, a, 1) && (r = if_same(s, b)) != DTL_VAL_NONE)
            return r;
        if (splat_is(s, b, -1) && pass_same_type(an, n))
            return rebuild1(s, DTL_OP_NEG, a);
        if (splat_is(s, a, -1) && pass_same_type(bn, n))
            return rebuild1(s, DTL_OP_NEG, b);
        return DTL_VAL_NONE;
    case DTL_OP_DIV:
        if (splat_is(s, b, 1) && (r = if_same(s, a)) != DTL_VAL_NONE)
            return r;
        return div_by_pow2(s, a, b);
    case DTL_OP_POW:
        if (splat_is(s, b, 1))
            return if_same(s, a);
        return DTL_VAL_NONE;
    case DTL_OP_NEG:
        if (an->op == DTL_OP_NEG)
            return an->in[0];
        return DTL_VAL_NONE;
    case DTL_OP_ABS:
        if (an->op == DTL_OP_ABS)
            return a;
        if (an->op == DTL_OP_NEG)
            return rebuild1(s, DTL_OP_ABS, an->in[0]);
        return DTL_VAL_NONE;
    case DTL_OP_RELU:
        return an->op == DTL_OP_RELU ? a : DTL_VAL_NONE;
    case DTL_OP_WHERE: {
        dtl_val c = in[1], d = in[2];
        if (c == d)
            return widened(s, c);
        double t;
        if (pass_splat_value(an, &t))
            return widened(s, t != 0 ? c : d);
        return DTL_VAL_NONE;
    }
    case DTL_OP_CAST:
        return an->dtype == n->dtype ? a : DTL_VAL_NONE;
    case DTL_OP_RESHAPE:
        if (pass_same_type(an, n))
            return a;
        if (an->op == DTL_OP_RESHAPE)
            return reshaped(s, an->in[0]);
        return DTL_VAL_NONE;
    case DTL_OP_BROADCAST:
        if (pass_same_type(an, n))
            return a;
        if (an->op == DTL_OP_BROADCAST)
            return pass_same_type(nd(s, an->in[0]), n) ? an->in[0]
                                                       : rebuild1(s, DTL_OP_BROADCAST, an->in[0]);
        return DTL_VAL_NONE;
    case DTL_OP_TRANSPOSE: {
        if (identity_perm(n->attr.perm, n->rank))
            return a;
        if (an->op != DTL_OP_TRANSPOSE)
            return DTL_VAL_NONE;
        /* Output axis i is a's axis perm[i], which is x's axis inner[perm[i]]. */
        dtl_node proto = *n;
        for (uint32_t i = 0; i < n->rank; i++)
            proto.attr.perm[i] = an->attr.perm[n->attr.perm[i]];
        if (identity_perm(proto.attr.perm, n->rank))
            return an->in[0];
        return build(s, &proto, &an->in[0]);
    }
    case DTL_OP_SUM:
    case DTL_OP_REDUCE_MAX:
        for (uint32_t i = 0; i < an->rank; i++)
            if ((n->attr.red.axes >> i) & 1 && an->shape[i] != 1)
                return DTL_VAL_NONE;
        return reshaped(s, a);
    default:
        return DTL_VAL_NONE;
    }
}

void dtl_pass_simplify(dtl_graph *out, const dtl_graph *in)
{
    dtl_graph_init(out);
    dtl_arena scratch;
    dtl_arena_init(&scratch);
    dtl_val *map = dtl_arena_array(&scratch, in->nnodes + 1, sizeof *map);
    uint32_t maxin = 1;
    for (uint32_t v = 0; v < in->nnodes; v++)
        if (in->nodes[v].nin > maxin)
            maxin = in->nodes[v].nin;
    dtl_val *ins = dtl_arena_array(&scratch, maxin, sizeof *ins);
    pass_hcons h;
    pass_hcons_init(&h, &scratch, in->nnodes);

    for (uint32_t v = 0; v < in->nnodes; v++) {
        const dtl_node *n = &in->nodes[v];
        for (uint32_t i = 0; i < n->nin; i++)
            ins[i] = map[n->in[i]];
        simp s = {out, &h, n, ins};
        dtl_val r = simplify_node(&s);
        if (r == DTL_VAL_NONE)
            r = pass_fold_node(out, &h, n, ins);
        map[v] = r != DTL_VAL_NONE ? r : pass_hcons_add(&h, out, n, ins);
    }
    pass_copy_outputs(out, in, map);
    out->role = in->role;
    dtl_arena_free(&scratch);
}
