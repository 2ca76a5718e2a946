/* compiler/nnops.h — graph-level composites: the language's builtins that are not one
 * primitive op, built from primitives so that autodiff differentiates them through the
 * generic VJP rules (and the passes may fuse them back).
 *
 * Contract: like the dtl_g_* builders — each appends nodes (role g->role) and returns the
 * result's id; operands that do not fit (wrong dtypes, ranks, shapes, axes out of range) are a
 * bug in the caller, who has already reported every user error, and abort with file:line.
 * Axes are normalized (0 <= axis < rank; the caller resolves -1). Constants take the dtype of
 * the float operand. Losses return a scalar (rank 0) of the logits' dtype.
 *
 *   function                        result                                      shape
 *   dtl_nn_mean(x, axes, keep)      sum(x, axes) * (1/n), n = the reduced count  reduced
 *   dtl_nn_reduce_min(x, axes, keep) -reduce_max(-x)                             reduced
 *   dtl_nn_logsumexp(x, axis, keep) m + log(sum(exp(x - m))), m = max(x, axis)   reduced
 *   dtl_nn_softmax(x, axis)         exp(x - m) / sum(exp(x - m))                 x
 *   dtl_nn_log_softmax(x, axis)     (x - m) - log(sum(exp(x - m)))               x
 *   dtl_nn_one_hot(labels, n, dt)   cast(iota(…, n) == labels[…, None], dt)      labels + [n]
 *   dtl_nn_cross_entropy(z, y)      mean(logsumexp(z, -1) - sum(z * one_hot(y))) scalar
 *   dtl_nn_mse(a, b)                mean((a - b)^2)                              scalar
 *   dtl_nn_bce_with_logits(z, t)    mean(max(z, 0) - z t + log(1 + exp(-|z|)))   scalar
 *   dtl_nn_accuracy_count(z, y, dt) sum(cast(argmax(z, -1) == y, dt))            scalar
 *   dtl_nn_softplus(x)              max(x, 0) + log(1 + exp(-|x|))               x
 *   dtl_nn_silu(x)                  x * sigmoid(x)                               x
 *   dtl_nn_gelu(x)                  x * 0.5 (1 + erf(x / sqrt 2)), erf by A&S 7.1.26
 *                                   (|error| <= 1.5e-7)                          x
 *   dtl_nn_dropout(x, p, step, s)   where(u >= p, x / (1 - p), 0), u = rng(step, s) x
 *   dtl_nn_matmul(a, b)             numpy matmul: 1-D operands promoted, then the
 *                                   added axis removed                           numpy's
 *   dtl_nn_step(g)                  the INPUT "step" (found, else made i64 [])   []
 *   dtl_nn_layer_norm(x, g, b, eps) (x - m) / sqrt(v + eps) * g + b, m and v the mean and
 *                                   (biased) variance over the last axis        x
 *   dtl_nn_batch_norm(x, g, b, m, v, eps)  the same with given m, v [C] along axis 1 x
 *   dtl_nn_batch_norm_train(x, g, b, eps, &m, &v)  with the batch's statistics over every
 *                                   axis but 1; *m the batch mean [C], *v the UNBIASED
 *                                   variance [C] (n / (n - 1) times), for running stats   x
 *   dtl_nn_causal_mask(g, n)        iota(col) <= iota(row): bool[n, n]           [n, n]
 *   dtl_nn_topk_count(z, y, k, dt)  rows whose label has fewer than k scores strictly
 *                                   above its own (ties count for the label)    scalar
 *
 * Primitive ops (relu, sigmoid, tanh, exp, log, sqrt, abs, sin, cos, sum, max, argmax,
 * reshape, transpose, concat, where, cast) are used directly through graph.h.
 */
#ifndef DTL_NNOPS_H
#define DTL_NNOPS_H

#include "graph.h"

dtl_val dtl_nn_mean(dtl_graph *g, dtl_val x, uint32_t axes, bool keepdims);
dtl_val dtl_nn_reduce_min(dtl_graph *g, dtl_val x, uint32_t axes, bool keepdims);
dtl_val dtl_nn_logsumexp(dtl_graph *g, dtl_val x, uint32_t axis, bool keepdims);
dtl_val dtl_nn_softmax(dtl_graph *g, dtl_val x, uint32_t axis);
dtl_val dtl_nn_log_softmax(dtl_graph *g, dtl_val x, uint32_t axis);
/* labels: an integer tensor; values outside [0, n) give an all-zero row. */
dtl_val dtl_nn_one_hot(dtl_graph *g, dtl_val labels, int64_t n, dtl_dtype dt);
/* logits [..., C] float, labels [...] integer (the class indices): the mean over all the
 * leading positions of -log_softmax(logits)[label] (PyTorch's cross_entropy, mean reduction).
 * A label outside [0, C) is not an error here: its row contributes logsumexp alone (the data
 * loader checks labels). */
dtl_val dtl_nn_cross_entropy(dtl_graph *g, dtl_val logits, dtl_val labels);
/* a and b of the same dtype and broadcast-compatible shapes; the mean over the broadcast. */
dtl_val dtl_nn_mse(dtl_graph *g, dtl_val a, dtl_val b);
dtl_val dtl_nn_bce_with_logits(dtl_graph *g, dtl_val logits, dtl_val targets);
/* How many rows have argmax(logits, last axis) == labels; dt: the result's dtype (f32, i64 …). */
dtl_val dtl_nn_accuracy_count(dtl_graph *g, dtl_val logits, dtl_val labels, dtl_dtype dt);
dtl_val dtl_nn_softplus(dtl_graph *g, dtl_val x);
dtl_val dtl_nn_silu(dtl_graph *g, dtl_val x);
dtl_val dtl_nn_gelu(dtl_graph *g, dtl_val x);
/* Inverted dropout with probability p in [0, 1]; step: an integer scalar (dtl_nn_step), stream:
 * the Philox stream of this dropout site (e.g. dtl_rng_stream_id("dropout:fc1", 0)). p == 0
 * returns x; p == 1 returns zeros. */
dtl_val dtl_nn_dropout(dtl_graph *g, dtl_val x, double p, dtl_val step, uint64_t stream);
dtl_val dtl_nn_matmul(dtl_graph *g, dtl_val a, dtl_val b);
/* The same under a train block's precision (docs/training.md), for f32 operands: BF16 casts
 * both to bf16 (the product accumulates and gives f32), TF32 makes a tf32 product; F32 and
 * DEFAULT are dtl_nn_matmul. */
dtl_val dtl_nn_matmul_prec(dtl_graph *g, dtl_val a, dtl_val b, dtl_precision prec);
/* The graph's INPUT named "step" (the number of the update being computed, 1 for the first;
 * the RNG and the optimizer read it): the existing one if any, else a new i64 scalar INPUT. */
dtl_val dtl_nn_step(dtl_graph *g);
dtl_val dtl_nn_layer_norm(dtl_graph *g, dtl_val x, dtl_val gamma, dtl_val beta, double eps);
dtl_val dtl_nn_batch_norm(dtl_graph *g, dtl_val x, dtl_val gamma, dtl_val beta, dtl_val mean,
                          dtl_val var, double eps);
dtl_val dtl_nn_batch_norm_train(dtl_graph *g, dtl_val x, dtl_val gamma, dtl_val beta, double eps,
                                dtl_val *mean, dtl_val *var);
dtl_val dtl_nn_causal_mask(dtl_graph *g, int64_t n);
dtl_val dtl_nn_topk_count(dtl_graph *g, dtl_val logits, dtl_val labels, int64_t k, dtl_dtype dt);

#endif
