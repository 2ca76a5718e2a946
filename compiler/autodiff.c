/* compiler/autodiff.c — reverse mode over the graph IR.
 *
 * Design: three sweeps over the nodes, which are already in topological order. Forward, mark
 * every value that depends on a param through differentiable edges (an edge is differentiable
 * when the consumer has a VJP rule and both ends are float). Backward from the loss, mark the
 * values the loss depends on along marked edges; the values marked both ways are the ones on a
 * path from a param to the loss, and only they get gradients. Then, from the loss down, each
 * such node with an accumulated gradient calls its op's VJP rule, which appends the nodes of
 * the contributions to its inputs; each contribution is summed down to its input's shape (the
 * adjoint of numpy broadcasting, done once here rather than in every rule) and added to the
 * input's running total. The rules are one table indexed by op, with every op listed (NULL:
 * not differentiable), so adding an op to graph.h fails the static_assert until it is
 * considered here. Rules follow PyTorch's derivative formulas where a choice exists (ties of
 * max/min split evenly, pow's exponent gradient is 0 where the base is 0).
 *
 * The graph's node array may move while nodes are appended, so rules copy the nodes they read
 * and never keep pointers into it across builder calls.
 */
#include "autodiff.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AD_BUG(...)                                                                     \
    do {                                                                                \
        fprintf(stderr, "%s:%d: autodiff: ", __FILE__, __LINE__);                       \
        fprintf(stderr, __VA_ARGS__);                                                   \
        fputc('\n', stderr);                                                            \
        abort();                                                                        \
    } while (0)

/* A rule reads node y (its inputs, attributes and the value itself) and gy, the gradient of
 * the loss with respect to y, and sets gin[i] to the contribution to input i for each i with
 * want[i] (gin[i] starts as DTL_VAL_NONE; leaving it so means "no contribution"). A
 * contribution may have the broadcast (output) shape: the caller sums it down. */
typedef void (*vjp_fn)(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin);

static dtl_node node_copy(const dtl_graph *g, dtl_val v)
{
    return g->nodes[v];
}

static dtl_val scalar_like(dtl_graph *g, dtl_val like, double v)
{
    return dtl_g_scalar(g, g->nodes[like].dtype, v);
}

static dtl_val mul(dtl_graph *g, dtl_val a, dtl_val b)
{
    return dtl_g_binary(g, DTL_OP_MUL, a, b);
}

/* The shape of x with the axes in mask set to 1 (a keepdims reduction's shape). */
static void keep_shape(const dtl_node *x, uint32_t axes, int64_t *shape)
{
    for (uint32_t i = 0; i < x->rank; i++)
        shape[i] = (axes >> i) & 1u ? 1 : x->shape[i];
}

/* v, the result of a reduction of x over axes, in its keepdims form. */
static dtl_val as_keepdims(dtl_graph *g, dtl_val v, const dtl_node *x, uint32_t axes,
                           bool keepdims)
{
    if (keepdims)
        return v;
    int64_t ks[DTL_MAX_RANK] = {0};
    keep_shape(x, axes, ks);
    return dtl_g_reshape(g, v, x->rank, ks);
}

static void swap_last_two(uint32_t rank, uint32_t *perm)
{
    for (uint32_t i = 0; i < rank; i++)
        perm[i] = i;
    perm[rank - 2] = rank - 1;
    perm[rank - 1] = rank - 2;
}

/* ---- the rules --------------------------------------------------------------------------- */

static void vjp_neg(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)y, (void)want;
    gin[0] = dtl_g_unary(g, DTL_OP_NEG, gy);
}

static void vjp_abs(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;
    dtl_val x = g->nodes[y].in[0], zero = scalar_like(g, x, 0);
    /* sign(x), with sign(0) = 0 as in PyTorch */
    dtl_val m1 = scalar_like(g, x, -1);   /* nodes in a fixed order (not argument order) */
    dtl_val neg = dtl_g_where(g, dtl_g_binary(g, DTL_OP_LT, x, zero), m1, zero);
    dtl_val p1 = scalar_like(g, x, 1);
    dtl_val sign = dtl_g_where(g, dtl_g_binary(g, DTL_OP_GT, x, zero), p1, neg);
    gin[0] = mul(g, gy, sign);
}

static void vjp_exp(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;
    gin[0] = mul(g, gy, y);
}

static void vjp_log(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;
    gin[0] = dtl_g_binary(g, DTL_OP_DIV, gy, g->nodes[y].in[0]);
}

static void vjp_sqrt(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;   /* gy / (2 sqrt(x)) */
    gin[0] = dtl_g_binary(g, DTL_OP_DIV, gy, mul(g, y, scalar_like(g, y, 2)));
}

static void vjp_tanh(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;   /* gy (1 - y^2) */
    dtl_val yy = mul(g, y, y);
    gin[0] = mul(g, gy, dtl_g_binary(g, DTL_OP_SUB, scalar_like(g, y, 1), yy));
}

static void vjp_sigmoid(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;   /* gy y (1 - y) */
    gin[0] = mul(g, gy, mul(g, y, dtl_g_binary(g, DTL_OP_SUB, scalar_like(g, y, 1), y)));
}

static void vjp_relu(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;   /* the gradient at 0 is 0, as in PyTorch */
    dtl_val x = g->nodes[y].in[0];
    dtl_val pos = dtl_g_binary(g, DTL_OP_GT, x, scalar_like(g, x, 0));
    gin[0] = dtl_g_where(g, pos, gy, scalar_like(g, gy, 0));
}

static void vjp_sin(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;
    gin[0] = mul(g, gy, dtl_g_unary(g, DTL_OP_COS, g->nodes[y].in[0]));
}

static void vjp_cos(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;
    gin[0] = dtl_g_unary(g, DTL_OP_NEG, mul(g, gy, dtl_g_unary(g, DTL_OP_SIN, g->nodes[y].in[0])));
}

/* Only float -> float casts are differentiable; the pruning never asks for the others. The
 * rounding of a cast is not differentiated (straight through): gy cast back to the input's
 * dtype, or gy itself when it has that dtype already (the f32 gradient of a bf16 value). */
static void vjp_cast(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;
    dtl_dtype to = g->nodes[g->nodes[y].in[0]].dtype;
    if (to == DTL_DTYPE_BF16)   /* gradients are never rounded to bf16 */
        to = DTL_DTYPE_F32;
    gin[0] = g->nodes[gy].dtype == to ? gy : dtl_g_cast(g, gy, to);
}

static void vjp_add(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)g, (void)y;
    if (want[0])
        gin[0] = gy;
    if (want[1])
        gin[1] = gy;
}

static void vjp_sub(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)y;
    if (want[0])
        gin[0] = gy;
    if (want[1])
        gin[1] = dtl_g_unary(g, DTL_OP_NEG, gy);
}

static void vjp_mul(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    dtl_val a = g->nodes[y].in[0], b = g->nodes[y].in[1];
    if (want[0])
        gin[0] = mul(g, gy, b);
    if (want[1])
        gin[1] = mul(g, gy, a);
}

static void vjp_div(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    dtl_val b = g->nodes[y].in[1];
    if (want[0])
        gin[0] = dtl_g_binary(g, DTL_OP_DIV, gy, b);
    if (want[1])   /* -gy a / b^2 = -gy y / b */
        gin[1] = dtl_g_unary(g, DTL_OP_NEG, dtl_g_binary(g, DTL_OP_DIV, mul(g, gy, y), b));
}

/* y = a^b. d/da = b a^(b-1), 0 where b == 0 (PyTorch's pow_backward); d/db = y log(a), 0 where
 * a == 0 and b >= 0 (PyTorch's pow_backward_exponent). A constant splat exponent (x ** 2) is
 * folded here, since it is by far the common case. */
static void vjp_pow(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    dtl_val a = g->nodes[y].in[0], b = g->nodes[y].in[1];
    if (want[0]) {
        const dtl_node *bn = dtl_g_node(g, b);
        if (bn->op == DTL_OP_CONST && !bn->attr.cst.data) {
            double c = bn->attr.cst.fill;
            if (c != 0) {
                dtl_val d = c == 2 ? a : dtl_g_binary(g, DTL_OP_POW, a, scalar_like(g, a, c - 1));
                gin[0] = mul(g, gy, c == 1 ? scalar_like(g, a, 1) : mul(g, d, scalar_like(g, a, c)));
            }
        } else {
            dtl_val bm1 = dtl_g_binary(g, DTL_OP_SUB, b, scalar_like(g, b, 1));
            dtl_val d = mul(g, b, dtl_g_binary(g, DTL_OP_POW, a, bm1));
            dtl_val z = dtl_g_binary(g, DTL_OP_EQ, b, scalar_like(g, b, 0));
            dtl_val gd = mul(g, gy, d);
            gin[0] = dtl_g_where(g, z, scalar_like(g, gy, 0), gd);
        }
    }
    if (want[1]) {
        dtl_val a0 = dtl_g_binary(g, DTL_OP_EQ, a, scalar_like(g, a, 0));
        dtl_val bp = dtl_g_binary(g, DTL_OP_GE, b, scalar_like(g, b, 0));
        dtl_val z = dtl_g_binary(g, DTL_OP_AND, a0, bp);
        dtl_val d = mul(g, gy, mul(g, y, dtl_g_unary(g, DTL_OP_LOG, a)));
        gin[1] = dtl_g_where(g, z, scalar_like(g, gy, 0), d);
    }
}

/* max(a, b): the gradient goes to the larger operand, half to each at a tie (PyTorch). */
static void vjp_minmax(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    dtl_val a = g->nodes[y].in[0], b = g->nodes[y].in[1];
    dtl_op wins = g->nodes[y].op == DTL_OP_MAX ? DTL_OP_GT : DTL_OP_LT;
    dtl_val zero = scalar_like(g, gy, 0), half = scalar_like(g, gy, 0.5);
    dtl_val tie = dtl_g_where(g, dtl_g_binary(g, DTL_OP_EQ, a, b), half, zero);
    dtl_val one = scalar_like(g, gy, 1);
    dtl_val wa = dtl_g_where(g, dtl_g_binary(g, wins, a, b), one, tie);
    dtl_val ga = mul(g, gy, wa);
    if (want[0])
        gin[0] = ga;
    if (want[1])
        gin[1] = dtl_g_binary(g, DTL_OP_SUB, gy, ga);
}

static void vjp_where(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    dtl_val c = g->nodes[y].in[0], zero = scalar_like(g, gy, 0);
    if (want[1])
        gin[1] = dtl_g_where(g, c, gy, zero);
    if (want[2])
        gin[2] = dtl_g_where(g, c, zero, gy);
}

static void vjp_sum(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;
    dtl_node n = node_copy(g, y), x = node_copy(g, n.in[0]);
    dtl_val gk = as_keepdims(g, gy, &x, n.attr.red.axes, n.attr.red.keepdims);
    gin[0] = dtl_g_broadcast(g, gk, x.rank, x.shape);
}

/* The gradient goes to the maxima, split evenly among ties (PyTorch's amax). */
static void vjp_reduce_max(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;
    dtl_node n = node_copy(g, y), x = node_copy(g, n.in[0]);
    uint32_t axes = n.attr.red.axes;
    dtl_val yk = as_keepdims(g, y, &x, axes, n.attr.red.keepdims);
    dtl_val gk = as_keepdims(g, gy, &x, axes, n.attr.red.keepdims);
    dtl_val mask = dtl_g_cast(g, dtl_g_binary(g, DTL_OP_EQ, n.in[0], yk), x.dtype);
    dtl_val count = dtl_g_reduce(g, DTL_OP_SUM, mask, axes, true);
    gin[0] = mul(g, mask, dtl_g_binary(g, DTL_OP_DIV, gk, count));
}

/* Mixed precision (docs/training.md): the backward products are made as the forward one
 * was. With bf16 operands, gy (f32) is rounded to bf16 once and both products take bf16
 * operands and accumulate in f32; the gradients of the bf16 operands stay f32 (the cast's
 * rule passes them on unchanged). A tf32 product gives tf32 products. */
static dtl_val mm_like(dtl_graph *g, bool tf32, dtl_val a, dtl_val b)
{
    return tf32 ? dtl_g_matmul_tf32(g, a, b) : dtl_g_matmul(g, a, b);
}

static void vjp_matmul(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    dtl_val a = g->nodes[y].in[0], b = g->nodes[y].in[1];
    bool tf32 = g->nodes[y].attr.tf32;
    if (g->nodes[a].dtype == DTL_DTYPE_BF16 && g->nodes[gy].dtype != DTL_DTYPE_BF16)
        gy = dtl_g_cast(g, gy, DTL_DTYPE_BF16);
    uint32_t perm[DTL_MAX_RANK];
    if (want[0]) {   /* gy @ b^T, summed over broadcast batch dims by the caller */
        swap_last_two(g->nodes[b].rank, perm);
        gin[0] = mm_like(g, tf32, gy, dtl_g_transpose(g, b, perm));
    }
    if (want[1]) {   /* a^T @ gy */
        swap_last_two(g->nodes[a].rank, perm);
        gin[1] = mm_like(g, tf32, dtl_g_transpose(g, a, perm), gy);
    }
}

static void vjp_reshape(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;
    dtl_node x = node_copy(g, g->nodes[y].in[0]);
    gin[0] = dtl_g_reshape(g, gy, x.rank, x.shape);
}

static void vjp_transpose(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;
    const dtl_node *n = dtl_g_node(g, y);
    uint32_t inv[DTL_MAX_RANK];
    for (uint32_t i = 0; i < n->rank; i++)
        inv[n->attr.perm[i]] = i;
    gin[0] = dtl_g_transpose(g, gy, inv);
}

static void vjp_broadcast(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)g, (void)y, (void)want;
    gin[0] = gy;   /* summed down to the input's shape by the caller */
}

/* The adjoint of a strided slice puts each element back where it came from: along every
 * sliced axis, a scatter_add with the source indices start + j*step (distinct, so nothing
 * is actually added). */
static void vjp_slice(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    (void)want;
    dtl_node n = node_copy(g, y), x = node_copy(g, n.in[0]);
    int64_t shape[DTL_MAX_RANK];
    memcpy(shape, n.shape, sizeof shape);
    dtl_val acc = gy;
    for (uint32_t a = 0; a < n.rank; a++) {
        int64_t start = n.attr.slice.start[a], step = n.attr.slice.step[a], cnt = n.shape[a];
        if (start == 0 && step == 1 && cnt == x.shape[a])
            continue;
        /* scratch from the graph's arena (its out-of-memory rule applies); the builder
         * copies it */
        int64_t *idx = dtl_arena_array(&g->arena, (size_t)cnt, sizeof *idx);
        for (int64_t j = 0; j < cnt; j++)
            idx[j] = start + j * step;
        dtl_val iv = dtl_g_const_data(g, DTL_DTYPE_I64, 1, &cnt, idx);
        shape[a] = x.shape[a];
        acc = dtl_g_scatter_add(g, acc, iv, a, n.rank, shape);
    }
    gin[0] = acc;
}

static void vjp_concat(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    dtl_node n = node_copy(g, y);
    uint32_t axis = n.attr.axis;
    int64_t start[DTL_MAX_RANK] = {0}, stop[DTL_MAX_RANK], step[DTL_MAX_RANK];
    for (uint32_t a = 0; a < n.rank; a++) {
        stop[a] = n.shape[a];
        step[a] = 1;
    }
    int64_t off = 0;
    for (uint32_t i = 0; i < n.nin; i++) {
        int64_t len = g->nodes[n.in[i]].shape[axis];
        if (want[i]) {
            start[axis] = off;
            stop[axis] = off + len;
            gin[i] = dtl_g_slice(g, gy, start, stop, step);
        }
        off += len;
    }
}

static void vjp_gather(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    if (!want[0])
        return;
    dtl_node n = node_copy(g, y), x = node_copy(g, n.in[0]);
    gin[0] = dtl_g_scatter_add(g, gy, n.in[1], n.attr.axis, x.rank, x.shape);
}

static void vjp_scatter_add(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    if (!want[0])
        return;
    dtl_node n = node_copy(g, y);
    gin[0] = dtl_g_gather(g, gy, n.in[1], n.attr.axis);
}

/* conv2d, conv2d_bwd_x and conv2d_bwd_w are the three partial derivatives of one trilinear
 * form T(x, w, dy) = sum dy * conv2d(x, w), so each one's VJP is made of the other two. */
static void vjp_conv2d(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    dtl_node n = node_copy(g, y), x = node_copy(g, n.in[0]), w = node_copy(g, n.in[1]);
    if (want[0])
        gin[0] = dtl_g_conv2d_bwd_x(g, gy, n.in[1], &n.attr.win, x.shape);
    if (want[1])
        gin[1] = dtl_g_conv2d_bwd_w(g, n.in[0], gy, &n.attr.win, w.shape);
}

static void vjp_conv2d_bwd_x(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want,
                             dtl_val *gin)
{
    dtl_node n = node_copy(g, y), w = node_copy(g, n.in[1]);
    if (want[0])   /* dy */
        gin[0] = dtl_g_conv2d(g, gy, n.in[1], &n.attr.win);
    if (want[1])   /* w */
        gin[1] = dtl_g_conv2d_bwd_w(g, gy, n.in[0], &n.attr.win, w.shape);
}

static void vjp_conv2d_bwd_w(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want,
                             dtl_val *gin)
{
    dtl_node n = node_copy(g, y), x = node_copy(g, n.in[0]);
    if (want[0])   /* x */
        gin[0] = dtl_g_conv2d_bwd_x(g, n.in[1], gy, &n.attr.win, x.shape);
    if (want[1])   /* dy */
        gin[1] = dtl_g_conv2d(g, n.in[0], gy, &n.attr.win);
}

static void vjp_maxpool2d(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    if (!want[0])
        return;
    dtl_node n = node_copy(g, y);
    gin[0] = dtl_g_maxpool2d_bwd(g, n.in[0], gy, &n.attr.win);
}

static void vjp_avgpool2d(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want, dtl_val *gin)
{
    if (!want[0])
        return;
    dtl_node n = node_copy(g, y), x = node_copy(g, n.in[0]);
    gin[0] = dtl_g_avgpool2d_bwd(g, gy, &n.attr.win, x.shape);
}

/* avgpool2d_bwd is linear in dy: its adjoint is avgpool2d itself. */
static void vjp_avgpool2d_bwd(dtl_graph *g, dtl_val y, dtl_val gy, const bool *want,
                              dtl_val *gin)
{
    if (!want[0])
        return;
    dtl_node n = node_copy(g, y);
    gin[0] = dtl_g_pool2d(g, DTL_OP_AVGPOOL2D, gy, &n.attr.win);
}

/* Every op, in enum order; NULL: no gradient flows through it. */
static const struct {
    dtl_op op;
    vjp_fn vjp;
} ad_rules[] = {
    {DTL_OP_CONST, NULL},
    {DTL_OP_INPUT, NULL},
    {DTL_OP_PARAM, NULL},
    {DTL_OP_STATE, NULL},
    {DTL_OP_IOTA, NULL},
    {DTL_OP_RNG_UNIFORM, NULL},
    {DTL_OP_NEG, vjp_neg},
    {DTL_OP_ABS, vjp_abs},
    {DTL_OP_EXP, vjp_exp},
    {DTL_OP_LOG, vjp_log},
    {DTL_OP_SQRT, vjp_sqrt},
    {DTL_OP_TANH, vjp_tanh},
    {DTL_OP_SIGMOID, vjp_sigmoid},
    {DTL_OP_RELU, vjp_relu},
    {DTL_OP_SIN, vjp_sin},
    {DTL_OP_COS, vjp_cos},
    {DTL_OP_NOT, NULL},
    {DTL_OP_CAST, vjp_cast},
    {DTL_OP_ADD, vjp_add},
    {DTL_OP_SUB, vjp_sub},
    {DTL_OP_MUL, vjp_mul},
    {DTL_OP_DIV, vjp_div},
    {DTL_OP_POW, vjp_pow},
    {DTL_OP_MAX, vjp_minmax},
    {DTL_OP_MIN, vjp_minmax},
    {DTL_OP_LT, NULL},
    {DTL_OP_LE, NULL},
    {DTL_OP_GT, NULL},
    {DTL_OP_GE, NULL},
    {DTL_OP_EQ, NULL},
    {DTL_OP_NE, NULL},
    {DTL_OP_AND, NULL},
    {DTL_OP_OR, NULL},
    {DTL_OP_WHERE, vjp_where},
    {DTL_OP_SUM, vjp_sum},
    {DTL_OP_REDUCE_MAX, vjp_reduce_max},
    {DTL_OP_ARGMAX, NULL},
    {DTL_OP_MATMUL, vjp_matmul},
    {DTL_OP_RESHAPE, vjp_reshape},
    {DTL_OP_TRANSPOSE, vjp_transpose},
    {DTL_OP_BROADCAST, vjp_broadcast},
    {DTL_OP_SLICE, vjp_slice},
    {DTL_OP_CONCAT, vjp_concat},
    {DTL_OP_GATHER, vjp_gather},
    {DTL_OP_SCATTER_ADD, vjp_scatter_add},
    {DTL_OP_CONV2D, vjp_conv2d},
    {DTL_OP_CONV2D_BWD_X, vjp_conv2d_bwd_x},
    {DTL_OP_CONV2D_BWD_W, vjp_conv2d_bwd_w},
    {DTL_OP_MAXPOOL2D, vjp_maxpool2d},
    {DTL_OP_MAXPOOL2D_BWD, NULL},   /* second order through max pooling: not supported */
    {DTL_OP_AVGPOOL2D, vjp_avgpool2d},
    {DTL_OP_AVGPOOL2D_BWD, vjp_avgpool2d_bwd},
};
static_assert(sizeof ad_rules / sizeof ad_rules[0] == DTL_OP_COUNT,
              "ad_rules must list every dtl_op, in enum order");

static vjp_fn rule_of(dtl_op op)
{
    if ((unsigned)op >= DTL_OP_COUNT)
        AD_BUG("op %d out of range", (int)op);
    if (ad_rules[op].op != op)
        AD_BUG("ad_rules out of enum order at %d (%s)", (int)op, dtl_op_name(op));
    return ad_rules[op].vjp;
}

bool dtl_ad_has_rule(dtl_op op)
{
    return rule_of(op) != NULL;
}

dtl_val dtl_ad_sum_to_shape(dtl_graph *g, dtl_val x, uint32_t rank, const int64_t *shape)
{
    dtl_node n = node_copy(g, x);
    if (n.rank < rank)
        AD_BUG("cannot sum rank %u down to rank %u", n.rank, rank);
    uint32_t lead = n.rank - rank, axes = 0;
    for (uint32_t i = 0; i < n.rank; i++) {
        if (i < lead) {
            axes |= 1u << i;
        } else if (shape[i - lead] != n.shape[i]) {
            if (shape[i - lead] != 1)
                AD_BUG("cannot sum axis %u of size %lld down to %lld", i,
                       (long long)n.shape[i], (long long)shape[i - lead]);
            axes |= 1u << i;
        }
    }
    if (axes == 0)
        return x;
    dtl_val s = dtl_g_reduce(g, DTL_OP_SUM, x, axes, true);
    return lead ? dtl_g_reshape(g, s, rank, shape) : s;
}

static bool same_shape(const dtl_node *a, const dtl_node *b)
{
    if (a->rank != b->rank)
        return false;
    for (uint32_t i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

/* Does the edge from input i of node n carry gradient? */
static bool edge_differentiable(const dtl_graph *g, const dtl_node *n, uint32_t i)
{
    return rule_of(n->op) && dtl_dtype_is_float(n->dtype) &&
           dtl_dtype_is_float(g->nodes[n->in[i]].dtype);
}

bool dtl_ad_grad(dtl_graph *g, dtl_val loss, const dtl_val *params, uint32_t nparams,
                 dtl_val *grads, bool *unreached, dtl_err *err)
{
    if (loss >= g->nnodes)
        return dtl_err_set(err, DTL_ERR_USAGE, "autodiff: loss %%%u is not a node of the graph",
                           loss);
    const dtl_node *ln = dtl_g_node(g, loss);
    if (ln->rank != 0 || !dtl_dtype_is_float(ln->dtype))
        return dtl_err_set(err, DTL_ERR_USAGE,
                           "autodiff: loss %%%u must be a float scalar, found %s of rank %u",
                           loss, dtl_dtype_name(ln->dtype), ln->rank);
    for (uint32_t p = 0; p < nparams; p++)
        if (params[p] >= g->nnodes || g->nodes[params[p]].op != DTL_OP_PARAM)
            return dtl_err_set(err, DTL_ERR_USAGE, "autodiff: params[%u] (%%%u) is not a param",
                               p, params[p]);

    uint32_t n = g->nnodes, maxin = 1;
    for (uint32_t v = 0; v < n; v++)
        if (g->nodes[v].nin > maxin)
            maxin = g->nodes[v].nin;
    unsigned char *fwd = calloc(n, 1), *need = calloc(n, 1);
    dtl_val *acc = malloc((size_t)n * sizeof *acc);
    dtl_val *gin = malloc((size_t)maxin * sizeof *gin);
    bool *want = malloc((size_t)maxin * sizeof *want);
    if (!fwd || !need || !acc || !gin || !want) {
        free(fwd), free(need), free(acc), free(gin), free(want);
        return dtl_err_set(err, DTL_ERR_NOMEM, "autodiff: out of memory for %u nodes", n);
    }

    /* Forward: depends on a param. */
    for (uint32_t p = 0; p < nparams; p++)
        fwd[params[p]] = 1;
    for (uint32_t v = 0; v <= loss; v++) {
        const dtl_node *nd = &g->nodes[v];
        for (uint32_t i = 0; i < nd->nin && !fwd[v]; i++)
            if (fwd[nd->in[i]] && edge_differentiable(g, nd, i))
                fwd[v] = 1;
    }
    /* Backward: the loss depends on it, along edges that carry gradient. */
    need[loss] = fwd[loss];
    for (uint32_t v = loss + 1; v-- > 0;) {
        const dtl_node *nd = &g->nodes[v];
        if (!need[v])
            continue;
        for (uint32_t i = 0; i < nd->nin; i++)
            if (fwd[nd->in[i]] && edge_differentiable(g, nd, i))
                need[nd->in[i]] = 1;
    }

    dtl_role saved_role = g->role;
    g->role = DTL_ROLE_BACKWARD;
    for (uint32_t v = 0; v < n; v++)
        acc[v] = DTL_VAL_NONE;
    if (need[loss])
        acc[loss] = dtl_g_scalar(g, ln->dtype, 1);   /* ln is stale from here on */

    for (uint32_t v = loss + 1; v-- > 0;) {
        if (!need[v] || acc[v] == DTL_VAL_NONE)
            continue;
        dtl_node nd = node_copy(g, v);
        vjp_fn rule = rule_of(nd.op);
        if (!rule)
            continue;   /* a param (a leaf) */
        for (uint32_t i = 0; i < nd.nin; i++) {
            gin[i] = DTL_VAL_NONE;
            want[i] = need[nd.in[i]] && edge_differentiable(g, &nd, i);
        }
        rule(g, v, acc[v], want, gin);
        for (uint32_t i = 0; i < nd.nin; i++) {
            if (!want[i] || gin[i] == DTL_VAL_NONE)
                continue;
            dtl_val u = nd.in[i];
            dtl_node un = node_copy(g, u);
            dtl_val c = dtl_ad_sum_to_shape(g, gin[i], un.rank, un.shape);
            const dtl_node *cn = dtl_g_node(g, c);
            /* the gradient of a bf16 value is f32 (vjp_matmul) */
            bool dt_ok = cn->dtype == un.dtype ||
                         (un.dtype == DTL_DTYPE_BF16 && cn->dtype == DTL_DTYPE_F32);
            if (!dt_ok || !same_shape(cn, &un))
                AD_BUG("the %s rule gave input %u of %%%u a contribution %%%u of the wrong "
                       "type", dtl_op_name(nd.op), i, v, c);
            acc[u] = acc[u] == DTL_VAL_NONE ? c : dtl_g_binary(g, DTL_OP_ADD, acc[u], c);
        }
    }

    for (uint32_t p = 0; p < nparams; p++) {
        dtl_val pv = params[p];
        if (unreached)
            unreached[p] = !need[pv];
        if (acc[pv] != DTL_VAL_NONE) {
            grads[p] = acc[pv];
        } else {   /* unreached, or every contribution was zero (x ** 0) */
            dtl_node pn = node_copy(g, pv);
            grads[p] = dtl_g_const(g, pn.dtype, pn.rank, pn.shape, 0);
            acc[pv] = grads[p];   /* one zero per param, even when listed twice */
        }
    }
    g->role = saved_role;
    free(fwd), free(need), free(acc), free(gin), free(want);
    return true;
}
