/* compiler/nnops.c — composites built from primitive ops.
 *
 * Design: each composite is a few builder calls written the way the formula in nnops.h reads.
 * Numerically stable forms are chosen so that both the value and the gradient (which autodiff
 * derives from the same nodes) stay finite: softmax and logsumexp subtract the max (the max's
 * own gradient contributions cancel, as the functions are shift invariant); softplus and
 * bce_with_logits use max(z, 0) + log(1 + exp(-|z|)), whose gradient at 0 comes out as 1/2
 * because max splits a tie evenly. There is no erf primitive, so gelu evaluates erf with
 * Abramowitz & Stegun 7.1.26 (within 1.5e-7, below f32 resolution near 1).
 */
#include "nnops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NN_BUG(...)                                                                     \
    do {                                                                                \
        fprintf(stderr, "%s:%d: nnops: ", __FILE__, __LINE__);                          \
        fprintf(stderr, __VA_ARGS__);                                                   \
        fputc('\n', stderr);                                                            \
        abort();                                                                        \
    } while (0)

static dtl_node node_copy(const dtl_graph *g, dtl_val v)
{
    return g->nodes[v];
}

static dtl_val sc(dtl_graph *g, dtl_val like, double v)
{
    return dtl_g_scalar(g, g->nodes[like].dtype, v);
}

static dtl_val bin(dtl_graph *g, dtl_op op, dtl_val a, dtl_val b)
{
    return dtl_g_binary(g, op, a, b);
}

static dtl_val un(dtl_graph *g, dtl_op op, dtl_val x)
{
    return dtl_g_unary(g, op, x);
}

static void need_float(const dtl_graph *g, dtl_val x, const char *what)
{
    if (!dtl_dtype_is_float(g->nodes[x].dtype))
        NN_BUG("%s: %%%u must be float, found %s", what, x, dtl_dtype_name(g->nodes[x].dtype));
}

static void need_axis(const dtl_graph *g, dtl_val x, uint32_t axis, const char *what)
{
    if (axis >= g->nodes[x].rank)
        NN_BUG("%s: axis %u out of range for rank %u", what, axis, g->nodes[x].rank);
}

static uint32_t all_axes(uint32_t rank)
{
    return rank >= 32 ? UINT32_MAX : (1u << rank) - 1u;
}

/* The shape of x without the axes in mask (or with them set to 1 when keepdims). */
static uint32_t reduced_shape(const dtl_node *x, uint32_t axes, bool keepdims, int64_t *shape)
{
    uint32_t r = 0;
    for (uint32_t i = 0; i < x->rank; i++) {
        if (!((axes >> i) & 1u))
            shape[r++] = x->shape[i];
        else if (keepdims)
            shape[r++] = 1;
    }
    return r;
}

dtl_val dtl_nn_mean(dtl_graph *g, dtl_val x, uint32_t axes, bool keepdims)
{
    need_float(g, x, "mean");
    dtl_node n = node_copy(g, x);
    axes &= all_axes(n.rank);
    if (axes == 0)
        return x;
    double count = 1;
    for (uint32_t i = 0; i < n.rank; i++)
        if ((axes >> i) & 1u)
            count *= (double)n.shape[i];
    dtl_val s = dtl_g_reduce(g, DTL_OP_SUM, x, axes, keepdims);
    return bin(g, DTL_OP_MUL, s, sc(g, x, count > 0 ? 1.0 / count : NAN));
}

dtl_val dtl_nn_reduce_min(dtl_graph *g, dtl_val x, uint32_t axes, bool keepdims)
{
    return un(g, DTL_OP_NEG, dtl_g_reduce(g, DTL_OP_REDUCE_MAX, un(g, DTL_OP_NEG, x), axes, keepdims));
}

/* sum(exp(x - m)) along axis with keepdims, and m (keepdims). */
static dtl_val sum_exp_shifted(dtl_graph *g, dtl_val x, uint32_t axis, dtl_val *shifted,
                               dtl_val *m)
{
    *m = dtl_g_reduce(g, DTL_OP_REDUCE_MAX, x, 1u << axis, true);
    *shifted = bin(g, DTL_OP_SUB, x, *m);
    return dtl_g_reduce(g, DTL_OP_SUM, un(g, DTL_OP_EXP, *shifted), 1u << axis, true);
}

dtl_val dtl_nn_logsumexp(dtl_graph *g, dtl_val x, uint32_t axis, bool keepdims)
{
    need_float(g, x, "logsumexp");
    need_axis(g, x, axis, "logsumexp");
    dtl_val shifted, m;
    dtl_val s = sum_exp_shifted(g, x, axis, &shifted, &m);
    dtl_val lse = bin(g, DTL_OP_ADD, m, un(g, DTL_OP_LOG, s));
    if (keepdims)
        return lse;
    dtl_node n = node_copy(g, x);
    int64_t shape[DTL_MAX_RANK];
    uint32_t r = reduced_shape(&n, 1u << axis, false, shape);
    return dtl_g_reshape(g, lse, r, shape);
}

dtl_val dtl_nn_softmax(dtl_graph *g, dtl_val x, uint32_t axis)
{
    need_float(g, x, "softmax");
    need_axis(g, x, axis, "softmax");
    dtl_val m = dtl_g_reduce(g, DTL_OP_REDUCE_MAX, x, 1u << axis, true);
    dtl_val e = un(g, DTL_OP_EXP, bin(g, DTL_OP_SUB, x, m));
    return bin(g, DTL_OP_DIV, e, dtl_g_reduce(g, DTL_OP_SUM, e, 1u << axis, true));
}

dtl_val dtl_nn_log_softmax(dtl_graph *g, dtl_val x, uint32_t axis)
{
    need_float(g, x, "log_softmax");
    need_axis(g, x, axis, "log_softmax");
    dtl_val shifted, m;
    dtl_val s = sum_exp_shifted(g, x, axis, &shifted, &m);
    return bin(g, DTL_OP_SUB, shifted, un(g, DTL_OP_LOG, s));
}

dtl_val dtl_nn_one_hot(dtl_graph *g, dtl_val labels, int64_t n, dtl_dtype dt)
{
    dtl_node l = node_copy(g, labels);
    if (!dtl_dtype_is_int(l.dtype))
        NN_BUG("one_hot: labels %%%u must be integer, found %s", labels, dtl_dtype_name(l.dtype));
    if (l.rank + 1 > DTL_MAX_RANK || n < 1)
        NN_BUG("one_hot: rank %u, %lld classes", l.rank, (long long)n);
    int64_t shape[DTL_MAX_RANK];
    memcpy(shape, l.shape, l.rank * sizeof shape[0]);
    shape[l.rank] = 1;
    dtl_val col = dtl_g_reshape(g, labels, l.rank + 1, shape);
    shape[l.rank] = n;
    dtl_val classes = dtl_g_iota(g, l.dtype, l.rank + 1, shape, l.rank);
    return dtl_g_cast(g, bin(g, DTL_OP_EQ, classes, col), dt);
}

dtl_val dtl_nn_cross_entropy(dtl_graph *g, dtl_val logits, dtl_val labels)
{
    need_float(g, logits, "cross_entropy");
    dtl_node z = node_copy(g, logits), y = node_copy(g, labels);
    if (z.rank < 1 || y.rank != z.rank - 1 || !dtl_dtype_is_int(y.dtype))
        NN_BUG("cross_entropy: logits of rank %u need integer labels of rank %u", z.rank,
               z.rank ? z.rank - 1 : 0);
    for (uint32_t i = 0; i + 1 < z.rank; i++)
        if (y.shape[i] != z.shape[i])
            NN_BUG("cross_entropy: labels' axis %u is %lld, logits' %lld", i,
                   (long long)y.shape[i], (long long)z.shape[i]);
    uint32_t c = z.rank - 1;
    dtl_val lse = dtl_nn_logsumexp(g, logits, c, false);
    dtl_val hot = dtl_nn_one_hot(g, labels, z.shape[c], z.dtype);
    dtl_val picked = dtl_g_reduce(g, DTL_OP_SUM, bin(g, DTL_OP_MUL, logits, hot), 1u << c, false);
    return dtl_nn_mean(g, bin(g, DTL_OP_SUB, lse, picked), all_axes(c), false);
}

dtl_val dtl_nn_mse(dtl_graph *g, dtl_val a, dtl_val b)
{
    need_float(g, a, "mse");
    dtl_val d = bin(g, DTL_OP_SUB, a, b);
    return dtl_nn_mean(g, bin(g, DTL_OP_MUL, d, d), all_axes(g->nodes[d].rank), false);
}

/* max(z, 0) + log(1 + exp(-|z|)) */
static dtl_val softplus_stable(dtl_graph *g, dtl_val z)
{
    dtl_val e = un(g, DTL_OP_EXP, un(g, DTL_OP_NEG, un(g, DTL_OP_ABS, z)));
    dtl_val l = un(g, DTL_OP_LOG, bin(g, DTL_OP_ADD, sc(g, z, 1), e));
    return bin(g, DTL_OP_ADD, bin(g, DTL_OP_MAX, z, sc(g, z, 0)), l);
}

dtl_val dtl_nn_bce_with_logits(dtl_graph *g, dtl_val logits, dtl_val targets)
{
    need_float(g, logits, "bce_with_logits");
    dtl_val lt = bin(g, DTL_OP_MUL, logits, targets);   /* before softplus: a fixed node order */
    dtl_val v = bin(g, DTL_OP_SUB, softplus_stable(g, logits), lt);
    return dtl_nn_mean(g, v, all_axes(g->nodes[v].rank), false);
}

dtl_val dtl_nn_accuracy_count(dtl_graph *g, dtl_val logits, dtl_val labels, dtl_dtype dt)
{
    dtl_node z = node_copy(g, logits), y = node_copy(g, labels);
    if (z.rank < 1 || y.rank != z.rank - 1 || !dtl_dtype_is_int(y.dtype))
        NN_BUG("accuracy: logits of rank %u need integer labels of rank %u", z.rank,
               z.rank ? z.rank - 1 : 0);
    dtl_val am = dtl_g_argmax(g, logits, z.rank - 1);   /* i64 */
    dtl_val yl = y.dtype == DTL_DTYPE_I64 ? labels : dtl_g_cast(g, labels, DTL_DTYPE_I64);
    dtl_val hit = dtl_g_cast(g, bin(g, DTL_OP_EQ, am, yl), dt);
    return y.rank ? dtl_g_reduce(g, DTL_OP_SUM, hit, all_axes(y.rank), false) : hit;
}

dtl_val dtl_nn_softplus(dtl_graph *g, dtl_val x)
{
    need_float(g, x, "softplus");
    return softplus_stable(g, x);
}

dtl_val dtl_nn_silu(dtl_graph *g, dtl_val x)
{
    need_float(g, x, "silu");
    return bin(g, DTL_OP_MUL, x, un(g, DTL_OP_SIGMOID, x));
}

/* erf(t) for t >= 0 by Abramowitz & Stegun 7.1.26: 1 - poly(s) exp(-t^2), s = 1/(1 + p t). */
static dtl_val erf_nonneg(dtl_graph *g, dtl_val t)
{
    static const double a[5] = {0.254829592, -0.284496736, 1.421413741, -1.453152027,
                                1.061405429};
    /* One node per statement: argument order is unspecified in C, the graph's is not. */
    dtl_val pt = bin(g, DTL_OP_MUL, t, sc(g, t, 0.3275911));
    dtl_val den = bin(g, DTL_OP_ADD, sc(g, t, 1), pt);
    dtl_val s = bin(g, DTL_OP_DIV, sc(g, t, 1), den);
    dtl_val poly = sc(g, t, a[4]);   /* Horner: ((((a5 s + a4) s + a3) s + a2) s + a1) s */
    for (int i = 3; i >= 0; i--) {
        dtl_val ai = sc(g, t, a[i]);
        poly = bin(g, DTL_OP_ADD, bin(g, DTL_OP_MUL, poly, s), ai);
    }
    poly = bin(g, DTL_OP_MUL, poly, s);
    dtl_val e = un(g, DTL_OP_EXP, un(g, DTL_OP_NEG, bin(g, DTL_OP_MUL, t, t)));
    dtl_val pe = bin(g, DTL_OP_MUL, poly, e);
    return bin(g, DTL_OP_SUB, sc(g, t, 1), pe);
}

dtl_val dtl_nn_gelu(dtl_graph *g, dtl_val x)
{
    need_float(g, x, "gelu");
    /* erf is odd: erf(t) = E(|t|) for t >= 0, -E(|t|) below, with |t| written as a where
     * so that E is evaluated once (on a value >= 0, where its formula is meant to be used)
     * and the gradient at 0 comes from the t >= 0 side. */
    dtl_val t = bin(g, DTL_OP_MUL, x, sc(g, x, 1 / sqrt(2.0)));
    dtl_val zero = sc(g, x, 0);
    dtl_val pos = bin(g, DTL_OP_GE, t, zero);
    dtl_val ta = dtl_g_where(g, pos, t, un(g, DTL_OP_NEG, t));
    dtl_val e = erf_nonneg(g, ta);
    dtl_val erf = dtl_g_where(g, pos, e, un(g, DTL_OP_NEG, e));
    dtl_val onep = bin(g, DTL_OP_ADD, sc(g, x, 1), erf);
    dtl_val phi = bin(g, DTL_OP_MUL, sc(g, x, 0.5), onep);
    return bin(g, DTL_OP_MUL, x, phi);
}

dtl_val dtl_nn_dropout(dtl_graph *g, dtl_val x, double p, dtl_val step, uint64_t stream)
{
    need_float(g, x, "dropout");
    if (!(p >= 0 && p <= 1))
        NN_BUG("dropout: p = %g is not in [0, 1]", p);
    if (p == 0)
        return x;
    dtl_node n = node_copy(g, x);
    if (p == 1)
        return dtl_g_const(g, n.dtype, n.rank, n.shape, 0);
    dtl_val u = dtl_g_rng_uniform(g, step, n.dtype, n.rank, n.shape, stream);
    dtl_val keep = bin(g, DTL_OP_GE, u, sc(g, x, p));
    dtl_val zero = sc(g, x, 0);
    dtl_val kept = bin(g, DTL_OP_MUL, x, sc(g, x, 1 / (1 - p)));
    return dtl_g_where(g, keep, kept, zero);
}

dtl_val dtl_nn_matmul(dtl_graph *g, dtl_val a, dtl_val b)
{
    return dtl_nn_matmul_prec(g, a, b, DTL_PREC_F32);
}

/* The product's node under precision prec (f32 operands only; others as they are). */
static dtl_val mm_prec(dtl_graph *g, dtl_val a, dtl_val b, dtl_precision prec)
{
    bool f32 = g->nodes[a].dtype == DTL_DTYPE_F32;
    return f32 && prec == DTL_PREC_TF32 ? dtl_g_matmul_tf32(g, a, b) : dtl_g_matmul(g, a, b);
}

dtl_val dtl_nn_matmul_prec(dtl_graph *g, dtl_val a, dtl_val b, dtl_precision prec)
{
    if (prec == DTL_PREC_BF16 && g->nodes[a].dtype == DTL_DTYPE_F32) {
        a = dtl_g_cast(g, a, DTL_DTYPE_BF16);   /* a first: a fixed node order */
        b = dtl_g_cast(g, b, DTL_DTYPE_BF16);
    }
    dtl_node an = node_copy(g, a), bn = node_copy(g, b);
    if (an.rank == 0 || bn.rank == 0)
        NN_BUG("matmul: operands must have rank >= 1");
    int64_t s[DTL_MAX_RANK];
    bool va = an.rank == 1, vb = bn.rank == 1;
    if (va) {
        s[0] = 1, s[1] = an.shape[0];
        a = dtl_g_reshape(g, a, 2, s);
    }
    if (vb) {
        s[0] = bn.shape[0], s[1] = 1;
        b = dtl_g_reshape(g, b, 2, s);
    }
    if (an.rank >= 3 && bn.rank == 2) {
        /* [..., m, k] @ [k, n] is one product [(…) * m, k] @ [k, n]: one big GEMM instead
         * of one per batch matrix, and b's gradient is one product too (not a batch of
         * products summed). */
        int64_t rows = 1;
        for (uint32_t i = 0; i + 1 < an.rank; i++)
            rows *= an.shape[i];
        s[0] = rows, s[1] = an.shape[an.rank - 1];
        dtl_val y2 = mm_prec(g, dtl_g_reshape(g, a, 2, s), b, prec);
        memcpy(s, an.shape, (an.rank - 1) * sizeof *s);
        s[an.rank - 1] = bn.shape[1];
        return dtl_g_reshape(g, y2, an.rank, s);
    }
    dtl_val y = mm_prec(g, a, b, prec);
    if (!va && !vb)
        return y;
    dtl_node yn = node_copy(g, y);   /* drop the added axes: -2 for a, -1 for b */
    uint32_t r = 0;
    for (uint32_t i = 0; i < yn.rank; i++)
        if (!(va && i == yn.rank - 2) && !(vb && i == yn.rank - 1))
            s[r++] = yn.shape[i];
    return dtl_g_reshape(g, y, r, s);
}

dtl_val dtl_nn_step(dtl_graph *g)
{
    for (uint32_t v = 0; v < g->nnodes; v++)
        if (g->nodes[v].op == DTL_OP_INPUT && g->nodes[v].name &&
            strcmp(g->nodes[v].name, "step") == 0)
            return v;
    const int64_t none[1] = {0};
    return dtl_g_input(g, "step", DTL_DTYPE_I64, 0, none);
}

/* ---- normalization (issue 7) ---------------------------------------------------------------- */

/* v, a vector [C], reshaped to broadcast along axis `axis` of a rank-`rank` tensor. */
static dtl_val along(dtl_graph *g, dtl_val v, uint32_t rank, uint32_t axis)
{
    int64_t s[DTL_MAX_RANK];
    for (uint32_t i = 0; i < rank; i++)
        s[i] = i == axis ? g->nodes[v].shape[0] : 1;
    return dtl_g_reshape(g, v, rank, s);
}

static void need_vec(const dtl_graph *g, dtl_val v, dtl_val x, uint32_t axis, const char *what)
{
    const dtl_node *n = &g->nodes[v], *xn = &g->nodes[x];
    if (n->rank != 1 || n->dtype != xn->dtype || n->shape[0] != xn->shape[axis])
        NN_BUG("%s: %%%u must be a vector of %lld, of x's dtype", what, v,
               (long long)xn->shape[axis]);
}

/* c / sqrt(v + eps) * gamma + beta, c = x - mean (x's shape), v of keepdims shape, gamma and
 * beta [C] along axis. v is broadcast to c's shape first, so that + eps and sqrt join the
 * loop over x rather than make one of their own over the statistics (compiler/passes/fuse.c
 * groups elementwise nodes by shape). */
static dtl_val normalize(dtl_graph *g, dtl_val c, dtl_val v, dtl_val gamma, dtl_val beta,
                         uint32_t axis, double eps)
{
    dtl_node cn = node_copy(g, c);
    uint32_t r = cn.rank;
    v = dtl_g_broadcast(g, v, r, cn.shape);
    dtl_val s = un(g, DTL_OP_SQRT, bin(g, DTL_OP_ADD, v, sc(g, c, eps)));
    dtl_val y = bin(g, DTL_OP_DIV, c, s);
    y = bin(g, DTL_OP_MUL, y, along(g, gamma, r, axis));
    return bin(g, DTL_OP_ADD, y, along(g, beta, r, axis));
}

dtl_val dtl_nn_layer_norm(dtl_graph *g, dtl_val x, dtl_val gamma, dtl_val beta, double eps)
{
    need_float(g, x, "layer_norm");
    uint32_t r = g->nodes[x].rank;
    if (r < 1)
        NN_BUG("layer_norm: x must have rank 1 or more");
    need_vec(g, gamma, x, r - 1, "layer_norm");
    need_vec(g, beta, x, r - 1, "layer_norm");
    uint32_t ax = 1u << (r - 1);
    dtl_node xn = node_copy(g, x);
    /* Shaped for fusion: the 1/n scaling inside each reduction (its prologue), and the
     * variance broadcast before + eps and sqrt, so that no loop runs over the per-row
     * statistics alone: three loops in all, two reductions and the normalization. */
    dtl_val inv = sc(g, x, xn.shape[r - 1] ? 1.0 / (double)xn.shape[r - 1] : 0.0);
    dtl_val m = dtl_g_reduce(g, DTL_OP_SUM, bin(g, DTL_OP_MUL, x, inv), ax, true);
    dtl_val c = bin(g, DTL_OP_SUB, x, m);
    dtl_val v = dtl_g_reduce(g, DTL_OP_SUM, bin(g, DTL_OP_MUL, bin(g, DTL_OP_MUL, c, c), inv),
                             ax, true);
    return normalize(g, c, v, gamma, beta, r - 1, eps);
}

dtl_val dtl_nn_batch_norm(dtl_graph *g, dtl_val x, dtl_val gamma, dtl_val beta, dtl_val mean,
                          dtl_val var, double eps)
{
    need_float(g, x, "batch_norm");
    uint32_t r = g->nodes[x].rank;
    if (r < 2)
        NN_BUG("batch_norm: x must have rank 2 or more");
    need_vec(g, gamma, x, 1, "batch_norm");
    need_vec(g, beta, x, 1, "batch_norm");
    need_vec(g, mean, x, 1, "batch_norm");
    need_vec(g, var, x, 1, "batch_norm");
    dtl_val c = bin(g, DTL_OP_SUB, x, along(g, mean, r, 1));
    return normalize(g, c, along(g, var, r, 1), gamma, beta, 1, eps);
}

dtl_val dtl_nn_batch_norm_train(dtl_graph *g, dtl_val x, dtl_val gamma, dtl_val beta, double eps,
                                dtl_val *mean, dtl_val *var)
{
    need_float(g, x, "batch_norm");
    dtl_node xn = node_copy(g, x);
    if (xn.rank < 2)
        NN_BUG("batch_norm: x must have rank 2 or more");
    need_vec(g, gamma, x, 1, "batch_norm");
    need_vec(g, beta, x, 1, "batch_norm");
    uint32_t axes = all_axes(xn.rank) & ~2u;
    int64_t n = xn.shape[1] ? (int64_t)(dtl_node_numel(&xn) / (uint64_t)xn.shape[1]) : 0;
    /* As layer_norm: 1/n inside the reductions; normalize() broadcasts the variance. */
    dtl_val inv = sc(g, x, n ? 1.0 / (double)n : 0.0);
    dtl_val m = dtl_g_reduce(g, DTL_OP_SUM, bin(g, DTL_OP_MUL, x, inv), axes, true);
    dtl_val c = bin(g, DTL_OP_SUB, x, m);
    dtl_val v = dtl_g_reduce(g, DTL_OP_SUM, bin(g, DTL_OP_MUL, bin(g, DTL_OP_MUL, c, c), inv),
                             axes, true);
    dtl_val y = normalize(g, c, v, gamma, beta, 1, eps);
    int64_t cs[1] = {xn.shape[1]};
    if (mean)
        *mean = dtl_g_reshape(g, m, 1, cs);
    if (var)
        *var = dtl_g_reshape(g, bin(g, DTL_OP_MUL, v, sc(g, x, n > 1 ? (double)n / (double)(n - 1)
                                                                    : 1.0)), 1, cs);
    return y;
}

dtl_val dtl_nn_causal_mask(dtl_graph *g, int64_t n)
{
    const int64_t s[2] = {n, n};
    dtl_val row = dtl_g_iota(g, DTL_DTYPE_I64, 2, s, 0);
    dtl_val col = dtl_g_iota(g, DTL_DTYPE_I64, 2, s, 1);
    return bin(g, DTL_OP_LE, col, row);
}

dtl_val dtl_nn_topk_count(dtl_graph *g, dtl_val logits, dtl_val labels, int64_t k, dtl_dtype dt)
{
    need_float(g, logits, "topk_count");
    dtl_node z = node_copy(g, logits);
    if (z.rank != 2 || g->nodes[labels].rank != 1 || g->nodes[labels].shape[0] != z.shape[0])
        NN_BUG("topk_count: logits [B, C] and labels [B] needed");
    /* The label's score; the row counts when fewer than k scores are strictly above it. */
    dtl_val hot = dtl_nn_one_hot(g, labels, z.shape[1], z.dtype);
    dtl_val picked = dtl_g_reduce(g, DTL_OP_SUM, bin(g, DTL_OP_MUL, logits, hot), 2u, true);
    dtl_val above = dtl_g_cast(g, bin(g, DTL_OP_GT, logits, picked), DTL_DTYPE_I64);
    dtl_val rank = dtl_g_reduce(g, DTL_OP_SUM, above, 2u, false);
    dtl_val hit = bin(g, DTL_OP_LT, rank, dtl_g_scalar(g, DTL_DTYPE_I64, (double)k));
    return dtl_g_reduce(g, DTL_OP_SUM, dtl_g_cast(g, hit, dt), 1u, false);
}
