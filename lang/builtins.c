/* lang/builtins.c — the builtin table and each builtin's shape rule.
 *
 * The table below is the single source of truth about builtins: name, kind, parameters
 * (with the kind of value each accepts and its default, as source text) and a one-line doc.
 * dtl_builtin_check first checks every argument against its parameter's kind (one generic
 * loop, one message form: "softmax: 'axis' must be a constant int, found float"), then
 * runs the builtin's rule in one switch over the id. Rules report shape errors at the
 * argument they are about, and name operands by their source text.
 */
#include "builtins.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "print.h"

#define P(n, k, d) {n, DTL_BP_##k, d}
#define X_FLOAT P("x", FLOAT_TENSOR, NULL)

static const dtl_builtin builtin_table[] = {
    {"none", DTL_BI_NONE, DTL_BUILTIN_CONST, 0, {{0}},
     "no value: as a reduction's axis, reduce over all axes"},
    /* elementwise */
    {"relu", DTL_BI_RELU, DTL_BUILTIN_OP, 1, {X_FLOAT}, "max(x, 0), elementwise"},
    {"sigmoid", DTL_BI_SIGMOID, DTL_BUILTIN_OP, 1, {X_FLOAT}, "1 / (1 + exp(-x)), elementwise"},
    {"tanh", DTL_BI_TANH, DTL_BUILTIN_OP, 1, {X_FLOAT}, "hyperbolic tangent, elementwise"},
    {"exp", DTL_BI_EXP, DTL_BUILTIN_OP, 1, {X_FLOAT}, "e to the x, elementwise"},
    {"log", DTL_BI_LOG, DTL_BUILTIN_OP, 1, {X_FLOAT}, "natural logarithm, elementwise"},
    {"sqrt", DTL_BI_SQRT, DTL_BUILTIN_OP, 1, {X_FLOAT}, "square root, elementwise"},
    {"abs", DTL_BI_ABS, DTL_BUILTIN_OP, 1, {X_FLOAT}, "absolute value, elementwise"},
    {"gelu", DTL_BI_GELU, DTL_BUILTIN_OP, 1, {X_FLOAT},
     "x * Phi(x) (Gaussian error linear unit), elementwise"},
    {"silu", DTL_BI_SILU, DTL_BUILTIN_OP, 1, {X_FLOAT}, "x * sigmoid(x), elementwise"},
    {"softplus", DTL_BI_SOFTPLUS, DTL_BUILTIN_OP, 1, {X_FLOAT}, "log(1 + exp(x)), elementwise"},
    {"sin", DTL_BI_SIN, DTL_BUILTIN_OP, 1, {X_FLOAT}, "sine, elementwise"},
    {"cos", DTL_BI_COS, DTL_BUILTIN_OP, 1, {X_FLOAT}, "cosine, elementwise"},
    /* along an axis */
    {"softmax", DTL_BI_SOFTMAX, DTL_BUILTIN_OP, 2, {X_FLOAT, P("axis", CONST_INT, "-1")},
     "exp(x) / sum(exp(x)) along axis; same shape as x"},
    {"log_softmax", DTL_BI_LOG_SOFTMAX, DTL_BUILTIN_OP, 2, {X_FLOAT, P("axis", CONST_INT, "-1")},
     "log(softmax(x, axis)), computed stably; same shape as x"},
    {"sum", DTL_BI_SUM, DTL_BUILTIN_OP, 3,
     {P("x", TENSOR, NULL), P("axis", CONST_INT_OR_NONE, "none"), P("keepdims", BOOL, "false")},
     "sum over axis (all axes when none); keepdims keeps reduced axes as size 1"},
    {"mean", DTL_BI_MEAN, DTL_BUILTIN_OP, 3,
     {X_FLOAT, P("axis", CONST_INT_OR_NONE, "none"), P("keepdims", BOOL, "false")},
     "mean over axis (all axes when none); keepdims keeps reduced axes as size 1"},
    {"max", DTL_BI_MAX, DTL_BUILTIN_OP, 3,
     {P("x", TENSOR, NULL), P("axis", CONST_INT_OR_NONE, "none"), P("keepdims", BOOL, "false")},
     "maximum over axis (all axes when none)"},
    {"min", DTL_BI_MIN, DTL_BUILTIN_OP, 3,
     {P("x", TENSOR, NULL), P("axis", CONST_INT_OR_NONE, "none"), P("keepdims", BOOL, "false")},
     "minimum over axis (all axes when none)"},
    {"argmax", DTL_BI_ARGMAX, DTL_BUILTIN_OP, 2, {P("x", TENSOR, NULL), P("axis", CONST_INT, NULL)},
     "index of the maximum along axis, as i64; axis removed"},
    /* shape */
    {"reshape", DTL_BI_RESHAPE, DTL_BUILTIN_OP, 2, {P("x", TENSOR, NULL), P("shape", SHAPE, NULL)},
     "x with a new shape of the same element count; one entry may be -1 (inferred)"},
    {"transpose", DTL_BI_TRANSPOSE, DTL_BUILTIN_OP, 2,
     {P("x", TENSOR, NULL), P("perm", PERM_OR_NONE, "none")},
     "x with its axes permuted: output axis i is input axis perm[i]; no perm swaps a matrix"},
    {"concat", DTL_BI_CONCAT, DTL_BUILTIN_OP, 2, {P("xs", TENSORS, NULL), P("axis", CONST_INT, "0")},
     "the tensors of the list joined along axis; other dims must agree"},
    {"where", DTL_BI_WHERE, DTL_BUILTIN_OP, 3,
     {P("mask", BOOL_TENSOR, NULL), P("a", OPERAND, NULL), P("b", OPERAND, NULL)},
     "a where mask is true, else b (broadcast together)"},
    {"cast", DTL_BI_CAST, DTL_BUILTIN_OP, 2, {P("x", OPERAND, NULL), P("dtype", DTYPE, NULL)},
     "x converted to dtype; same shape"},
    {"one_hot", DTL_BI_ONE_HOT, DTL_BUILTIN_OP, 2, {P("labels", INT_TENSOR, NULL), P("n", INT, NULL)},
     "f32 one-hot rows of n classes: labels[…] to f32[…, n]"},
    {"dropout", DTL_BI_DROPOUT, DTL_BUILTIN_OP, 2, {X_FLOAT, P("p", NUMBER, "0.5")},
     "in training, zeroes each element with probability p and scales the rest by 1/(1-p)"},
    {"matmul", DTL_BI_MATMUL, DTL_BUILTIN_OP, 2, {P("a", TENSOR, NULL), P("b", TENSOR, NULL)},
     "matrix product, the same as a @ b (numpy rules: 1-D, 2-D, batched)"},
    /* losses */
    {"cross_entropy", DTL_BI_CROSS_ENTROPY, DTL_BUILTIN_LOSS, 2,
     {P("logits", FLOAT_TENSOR, NULL), P("labels", INT_TENSOR, NULL)},
     "mean softmax cross-entropy of logits[B, C] against class indices labels[B] (or "
     "[B, T, C] against [B, T]); a scalar"},
    {"mse", DTL_BI_MSE, DTL_BUILTIN_LOSS, 2, {P("a", FLOAT_TENSOR, NULL), P("b", FLOAT_TENSOR, NULL)},
     "mean squared error of two tensors of the same shape; a scalar"},
    {"bce_with_logits", DTL_BI_BCE_WITH_LOGITS, DTL_BUILTIN_LOSS, 2,
     {P("logits", FLOAT_TENSOR, NULL), P("targets", FLOAT_TENSOR, NULL)},
     "mean binary cross-entropy of sigmoid(logits) against targets in [0, 1]; a scalar"},
    /* metrics */
    {"accuracy", DTL_BI_ACCURACY, DTL_BUILTIN_METRIC, 2,
     {P("split", SPLIT, NULL), P("k", CONST_INT, "1")},
     "fraction of the split's examples whose label y is among the k highest scores of "
     "forward(x) (k = 1: the argmax; train's evaluate)"},
    /* initializers */
    {"zeros", DTL_BI_ZEROS, DTL_BUILTIN_INIT, 0, {{0}}, "all elements 0"},
    {"ones", DTL_BI_ONES, DTL_BUILTIN_INIT, 0, {{0}}, "all elements 1"},
    {"constant", DTL_BI_CONSTANT, DTL_BUILTIN_INIT, 1, {P("v", NUMBER, NULL)}, "all elements v"},
    {"normal", DTL_BI_NORMAL, DTL_BUILTIN_INIT, 2,
     {P("mean", NUMBER, "0.0"), P("std", NUMBER, "1.0")}, "samples of N(mean, std^2)"},
    {"uniform", DTL_BI_UNIFORM, DTL_BUILTIN_INIT, 2,
     {P("low", NUMBER, "-0.05"), P("high", NUMBER, "0.05")}, "samples of U(low, high)"},
    {"glorot_uniform", DTL_BI_GLOROT_UNIFORM, DTL_BUILTIN_INIT, 0, {{0}},
     "U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio); rank >= 2"},
    {"glorot_normal", DTL_BI_GLOROT_NORMAL, DTL_BUILTIN_INIT, 0, {{0}},
     "N(0, 2 / (fan_in + fan_out)); rank >= 2"},
    {"xavier_uniform", DTL_BI_XAVIER_UNIFORM, DTL_BUILTIN_INIT, 0, {{0}},
     "the same as glorot_uniform()"},
    {"xavier_normal", DTL_BI_XAVIER_NORMAL, DTL_BUILTIN_INIT, 0, {{0}},
     "the same as glorot_normal()"},
    {"he_uniform", DTL_BI_HE_UNIFORM, DTL_BUILTIN_INIT, 0, {{0}},
     "U(-a, a), a = sqrt(6 / fan_in) (He et al., for ReLU); rank >= 2"},
    {"he_normal", DTL_BI_HE_NORMAL, DTL_BUILTIN_INIT, 0, {{0}}, "N(0, 2 / fan_in); rank >= 2"},
    {"kaiming_uniform", DTL_BI_KAIMING_UNIFORM, DTL_BUILTIN_INIT, 0, {{0}},
     "the same as he_uniform()"},
    {"kaiming_normal", DTL_BI_KAIMING_NORMAL, DTL_BUILTIN_INIT, 0, {{0}},
     "the same as he_normal()"},
    /* optimizers */
    {"sgd", DTL_BI_SGD, DTL_BUILTIN_OPTIMIZER, 4,
     {P("lr", NUMBER, NULL), P("momentum", NUMBER, "0.0"), P("nesterov", BOOL, "false"),
      P("weight_decay", NUMBER, "0.0")},
     "stochastic gradient descent, optionally with (Nesterov) momentum and L2 weight decay"},
    {"adam", DTL_BI_ADAM, DTL_BUILTIN_OPTIMIZER, 5,
     {P("lr", NUMBER, "1e-3"), P("beta1", NUMBER, "0.9"), P("beta2", NUMBER, "0.999"),
      P("eps", NUMBER, "1e-8"), P("weight_decay", NUMBER, "0.0")},
     "Adam (Kingma & Ba); weight_decay adds an L2 term to the gradient"},
    {"adamw", DTL_BI_ADAMW, DTL_BUILTIN_OPTIMIZER, 5,
     {P("lr", NUMBER, "1e-3"), P("beta1", NUMBER, "0.9"), P("beta2", NUMBER, "0.999"),
      P("eps", NUMBER, "1e-8"), P("weight_decay", NUMBER, "0.01")},
     "Adam with decoupled weight decay (Loshchilov & Hutter)"},
    /* datasets */
    {"idx", DTL_BI_IDX, DTL_BUILTIN_DATASET, 2, {P("name", STR, NULL), P("scale", NUMBER, "1.0")},
     "an MNIST-family IDX dataset found under the data directory; features f32 times scale, "
     "labels i64"},
    {"npy", DTL_BI_NPY, DTL_BUILTIN_DATASET, 5,
     {P("x", STR, NULL), P("y", STR, NULL), P("test_x", STR, NULL), P("test_y", STR, NULL),
      P("scale", NUMBER, "1.0")},
     "NumPy .npy files: training features and labels, then test features and labels"},
    {"csv", DTL_BI_CSV, DTL_BUILTIN_DATASET, 8,
     {P("path", STR, NULL), P("label", STR_OR_INT, NULL), P("test", STR_OR_NUMBER, "\"\""),
      P("header", BOOL, "true"), P("scale", NUMBER, "1.0"), P("skip", CONST_INT, "0"),
      P("standardize", BOOL, "false"), P("regression", BOOL, "false")},
     "a CSV file; label names the label column (by header name or index); test: a second file "
     "or the fraction of rows held out; skip: lines before the header; standardize: features "
     "to mean 0, sd 1 (train statistics); regression: float targets, y is f32[B]"},
    /* parallelism */
    {"data", DTL_BI_DATA, DTL_BUILTIN_PARALLEL, 1, {P("n", CONST_INT_OR_NONE, "none")},
     "data parallelism over n ranks (all ranks when n is not given): replicas, gradients "
     "all-reduced"},
    {"tensor", DTL_BI_TENSOR, DTL_BUILTIN_PARALLEL, 1, {P("n", CONST_INT, NULL)},
     "tensor (model) parallelism over n ranks: params split as the shard annotations say"},
    {"pipeline", DTL_BI_PIPELINE, DTL_BUILTIN_PARALLEL, 2,
     {P("stages", CONST_INT, NULL), P("microbatches", CONST_INT, "1")},
     "pipeline parallelism: submodels in stages (stage annotations), batches in microbatches"},
    /* devices */
    {"cpu", DTL_BI_CPU, DTL_BUILTIN_DEVICE, 0, {{0}}, "run on the CPU"},
    {"cuda", DTL_BI_CUDA, DTL_BUILTIN_DEVICE, 1, {P("n", CONST_INT, "0")},
     "run on CUDA GPU number n"},
    /* learning-rate schedules (compiler/optim.h has the formulas) */
    {"constant", DTL_BI_SCHED_CONSTANT, DTL_BUILTIN_SCHEDULE, 0, {{0}},
     "the optimizer's lr at every update (the default schedule)"},
    {"step", DTL_BI_STEP, DTL_BUILTIN_SCHEDULE, 2,
     {P("every", CONST_INT, NULL), P("gamma", NUMBER, "0.1")},
     "lr times gamma every `every` updates (PyTorch's StepLR); every >= 1, gamma in (0, 1]"},
    {"cosine", DTL_BI_COSINE, DTL_BUILTIN_SCHEDULE, 2,
     {P("floor", NUMBER, "0.0"), P("steps", CONST_INT_OR_NONE, "none")},
     "lr down to floor along a half cosine over `steps` updates, then floor "
     "(CosineAnnealingLR); steps = none: the rest of the run after warmup"},
    /* tensor functions added with the issue 7 layers */
    {"take", DTL_BI_TAKE, DTL_BUILTIN_OP, 3,
     {P("x", TENSOR, NULL), P("indices", INT_TENSOR, NULL), P("axis", CONST_INT, "0")},
     "the slices of x at indices along axis (numpy.take): axis replaced by indices' dims"},
    {"stack", DTL_BI_STACK, DTL_BUILTIN_OP, 2, {P("xs", TENSORS, NULL), P("axis", CONST_INT, "0")},
     "the tensors of the list, all of one type, stacked along a new axis"},
    {"causal_mask", DTL_BI_CAUSAL_MASK, DTL_BUILTIN_OP, 1, {P("n", INT, NULL)},
     "bool[n, n], true where column <= row (what position row may attend to)"},
    {"masked_fill", DTL_BI_MASKED_FILL, DTL_BUILTIN_OP, 3,
     {P("x", TENSOR, NULL), P("mask", BOOL_TENSOR, NULL), P("value", NUMBER, NULL)},
     "x with value where mask (broadcast to x's shape) is true"},
    {"batch_norm", DTL_BI_BATCH_NORM, DTL_BUILTIN_OP, 7,
     {X_FLOAT, P("g", FLOAT_TENSOR, NULL), P("b", FLOAT_TENSOR, NULL),
      P("mean", FLOAT_TENSOR, NULL), P("var", FLOAT_TENSOR, NULL),
      P("momentum", NUMBER, "0.1"), P("eps", NUMBER, "1e-5")},
     "normalizes x over every axis but 1 (the channels): batch statistics in training, which "
     "update the states mean and var, running statistics at evaluation; then * g + b"},
    {"layer_norm", DTL_BI_LAYER_NORM, DTL_BUILTIN_OP, 4,
     {X_FLOAT, P("g", FLOAT_TENSOR, NULL), P("b", FLOAT_TENSOR, NULL), P("eps", NUMBER, "1e-5")},
     "normalizes x over its last axis to mean 0, variance 1, then * g + b"},
    {"split", DTL_BI_SPLIT, DTL_BUILTIN_OP, 3,
     {P("x", TENSOR, NULL), P("n", CONST_INT, NULL), P("axis", CONST_INT, "-1")},
     "x cut along axis into a list of n equal parts, indexed by constants: split(x, 3)[0]"},
    /* data sets added with issue 7 */
    {"text", DTL_BI_TEXT, DTL_BUILTIN_DATASET, 4,
     {P("path", STR, NULL), P("context", CONST_INT, "128"), P("separator", STR, "\"\""),
      P("test_every", CONST_INT, "0")},
     "next-byte windows over a text file or directory: x and y are i64[B, context] (y is x "
     "one byte later); documents cut at lines holding only separator; every test_every-th "
     "document is the test split"},
    /* convolution and pooling */
    {"conv2d", DTL_BI_CONV2D, DTL_BUILTIN_OP, 6,
     {X_FLOAT, P("w", FLOAT_TENSOR, NULL), P("stride", INT_PAIR, "1"),
      P("padding", INT_PAIR, "0"), P("dilation", INT_PAIR, "1"), P("groups", INT, "1")},
     "2-D convolution (cross-correlation, as in PyTorch) of x[N, C, H, W] with "
     "w[O, C / groups, KH, KW]: [N, O, OH, OW], OH = (H + 2 padding - dilation (KH - 1) - 1) "
     "/ stride + 1; zero padding on both sides; stride, padding, dilation: one int or [h, w]"},
    {"max_pool2d", DTL_BI_MAX_POOL2D, DTL_BUILTIN_OP, 4,
     {X_FLOAT, P("kernel", INT_PAIR, NULL), P("stride", INT_PAIR_OR_NONE, "none"),
      P("padding", INT_PAIR, "0")},
     "the maximum of each kernel window of x[N, C, H, W] (stride none: the kernel); "
     "padding (< kernel) never wins; the gradient goes to each window's first maximum"},
    {"avg_pool2d", DTL_BI_AVG_POOL2D, DTL_BUILTIN_OP, 5,
     {X_FLOAT, P("kernel", INT_PAIR, NULL), P("stride", INT_PAIR_OR_NONE, "none"),
      P("padding", INT_PAIR, "0"), P("count_pad", BOOL, "false")},
     "the mean of each kernel window of x[N, C, H, W] (stride none: the kernel); "
     "count_pad = false divides by the window's elements inside x, true by kh * kw"},
};

static_assert(sizeof builtin_table / sizeof builtin_table[0] == DTL_BI_COUNT,
              "builtin_table must have one row per dtl_builtin_id");

const dtl_builtin *dtl_builtin_table(size_t *n)
{
    *n = DTL_BI_COUNT;
    return builtin_table;
}

const dtl_builtin *dtl_builtin_lookup(const char *name)
{
    for (size_t i = 0; i < DTL_BI_COUNT; i++)
        if (strcmp(builtin_table[i].name, name) == 0)
            return &builtin_table[i];
    return NULL;
}

const dtl_builtin *dtl_builtin_lookup_kind(const char *name, dtl_builtin_kind kind)
{
    for (size_t i = 0; i < DTL_BI_COUNT; i++)
        if (builtin_table[i].kind == kind && strcmp(builtin_table[i].name, name) == 0)
            return &builtin_table[i];
    return NULL;
}

dtl_type *dtl_builtin_default(dtl_arena *a, const dtl_bparam *p)
{
    const char *d = p->deflt;
    if (!d)
        return NULL;
    if (strcmp(d, "none") == 0)
        return dtl_type_new(a, DTL_TYPE_NONE);
    if (strcmp(d, "true") == 0 || strcmp(d, "false") == 0)
        return dtl_type_bool(a, true, d[0] == 't');
    if (d[0] == '"') {
        dtl_type *t = dtl_type_new(a, DTL_TYPE_STR);
        t->u.s.bytes = dtl_arena_strndup(a, d + 1, strlen(d) - 2);
        t->u.s.len = strlen(d) - 2;
        return t;
    }
    if (strpbrk(d, ".e"))
        return dtl_type_float(a, true, strtod(d, NULL));
    return dtl_type_int(a, dtl_dim_const(a, strtoll(d, NULL, 10)));
}

const char *dtl_bparam_kind_text(dtl_bparam_kind k)
{
    switch (k) {
    case DTL_BP_TENSOR: return "a tensor";
    case DTL_BP_FLOAT_TENSOR: return "a float tensor";
    case DTL_BP_INT_TENSOR: return "an integer tensor";
    case DTL_BP_BOOL_TENSOR: return "a bool tensor";
    case DTL_BP_OPERAND: return "a tensor or a number";
    case DTL_BP_INT: return "an int";
    case DTL_BP_CONST_INT: return "a constant int";
    case DTL_BP_CONST_INT_OR_NONE: return "a constant int or none";
    case DTL_BP_NUMBER: return "a number";
    case DTL_BP_BOOL: return "a bool";
    case DTL_BP_STR: return "a string";
    case DTL_BP_STR_OR_INT: return "a string or an int";
    case DTL_BP_DTYPE: return "a dtype";
    case DTL_BP_SPLIT: return "a dataset split (ds.train or ds.test)";
    case DTL_BP_SHAPE: return "a list of ints like [B, -1]";
    case DTL_BP_PERM_OR_NONE: return "a permutation like [1, 0], or none";
    case DTL_BP_TENSORS: return "a list of tensors like [a, b]";
    case DTL_BP_STR_OR_NUMBER: return "a string or a number";
    case DTL_BP_INT_PAIR: return "an int or a pair of ints like [2, 2]";
    case DTL_BP_INT_PAIR_OR_NONE: return "an int, a pair of ints like [2, 2], or none";
    }
    return "?";
}

const char *dtl_builtin_kind_name(dtl_builtin_kind k)
{
    switch (k) {
    case DTL_BUILTIN_CONST: return "constant";
    case DTL_BUILTIN_OP: return "op";
    case DTL_BUILTIN_LOSS: return "loss";
    case DTL_BUILTIN_METRIC: return "metric";
    case DTL_BUILTIN_INIT: return "initializer";
    case DTL_BUILTIN_OPTIMIZER: return "optimizer";
    case DTL_BUILTIN_DATASET: return "dataset";
    case DTL_BUILTIN_PARALLEL: return "parallelism";
    case DTL_BUILTIN_DEVICE: return "device";
    case DTL_BUILTIN_SCHEDULE: return "schedule";
    }
    return "?";
}

/* ---- helpers ---- */

const char *dtl_operand_name(dtl_arena *a, const dtl_expr *e, const char *fallback)
{
    if (!e)
        return fallback;
    char *s = dtl_print_expr(a, e);
    if (!s || strlen(s) > 40 || strchr(s, '\n'))
        return fallback;
    return s;
}

static const dtl_expr *strip(const dtl_expr *e)
{
    while (e && e->kind == DTL_EXPR_PAREN)
        e = e->u.paren;
    return e;
}

static dtl_type *err_type(dtl_bcall *c)
{
    return dtl_type_new(c->arena, DTL_TYPE_ERROR);
}

static const char *tyname(dtl_bcall *c, const dtl_type *t)
{
    return dtl_type_print(c->arena, t, c->from);
}

/* Where to report about parameter i: its argument, or the call. */
static dtl_span arg_at(dtl_bcall *c, unsigned i)
{
    return c->args[i] ? c->args[i]->span : c->at;
}

static const char *argname(dtl_bcall *c, unsigned i)
{
    return dtl_operand_name(c->arena, c->args[i], c->b->params[i].name);
}

static bool kind_ok(const dtl_bparam *p, const dtl_type *t, const dtl_expr *arg)
{
    const dtl_expr *e = strip(arg);
    switch (p->kind) {
    case DTL_BP_TENSOR:
        return t->kind == DTL_TYPE_TENSOR;
    case DTL_BP_FLOAT_TENSOR:
        return t->kind == DTL_TYPE_TENSOR && dtl_dtype_is_float(t->u.t.dtype);
    case DTL_BP_INT_TENSOR:
        return t->kind == DTL_TYPE_TENSOR && dtl_dtype_is_int(t->u.t.dtype);
    case DTL_BP_BOOL_TENSOR:
        return t->kind == DTL_TYPE_TENSOR && t->u.t.dtype == DTL_DTYPE_BOOL;
    case DTL_BP_OPERAND:
        return t->kind == DTL_TYPE_TENSOR || dtl_type_is_number(t);
    case DTL_BP_INT:
        return t->kind == DTL_TYPE_INT && t->u.ival;
    case DTL_BP_CONST_INT:
        return dtl_type_int_const(t, NULL);
    case DTL_BP_CONST_INT_OR_NONE:
        return dtl_type_int_const(t, NULL) || t->kind == DTL_TYPE_NONE;
    case DTL_BP_NUMBER:
        return dtl_type_is_number(t);
    case DTL_BP_BOOL:
        return t->kind == DTL_TYPE_BOOL;
    case DTL_BP_STR:
        return t->kind == DTL_TYPE_STR;
    case DTL_BP_STR_OR_INT:
        return t->kind == DTL_TYPE_STR || t->kind == DTL_TYPE_INT;
    case DTL_BP_STR_OR_NUMBER:
        return t->kind == DTL_TYPE_STR || dtl_type_is_number(t);
    case DTL_BP_INT_PAIR_OR_NONE:
        if (t->kind == DTL_TYPE_NONE)
            return true;
        /* fall through */
    case DTL_BP_INT_PAIR:
        if (t->kind == DTL_TYPE_INT)
            return t->u.ival != NULL;
        if (!e || e->kind != DTL_EXPR_TENSOR || e->u.tensor.nelems != 2)
            return false;
        for (size_t i = 0; i < 2; i++)
            if (!e->u.tensor.elems[i]->type || e->u.tensor.elems[i]->type->kind != DTL_TYPE_INT ||
                !e->u.tensor.elems[i]->type->u.ival)
                return false;
        return true;
    case DTL_BP_DTYPE:
        return t->kind == DTL_TYPE_DTYPE;
    case DTL_BP_SPLIT:
        return t->kind == DTL_TYPE_SPLIT;
    case DTL_BP_SHAPE:
        if (!e || e->kind != DTL_EXPR_TENSOR)
            return false;
        for (size_t i = 0; i < e->u.tensor.nelems; i++)
            if (!e->u.tensor.elems[i]->type ||
                e->u.tensor.elems[i]->type->kind != DTL_TYPE_INT)
                return false;
        return true;
    case DTL_BP_PERM_OR_NONE:
        if (t->kind == DTL_TYPE_NONE)
            return true;
        if (!e || e->kind != DTL_EXPR_TENSOR)
            return false;
        for (size_t i = 0; i < e->u.tensor.nelems; i++)
            if (!e->u.tensor.elems[i]->type ||
                !dtl_type_int_const(e->u.tensor.elems[i]->type, NULL))
                return false;
        return true;
    case DTL_BP_TENSORS:   /* a literal [a, b], or a list value (split's) */
        return t->kind == DTL_TYPE_LIST ||
               (e && e->kind == DTL_EXPR_TENSOR && e->u.tensor.nelems == 0);
    }
    return false;
}

static int64_t int_arg(dtl_bcall *c, unsigned i)
{
    int64_t v = 0;
    dtl_type_int_const(c->types[i], &v);
    return v;
}

/* Normalizes axis parameter i against rank, for the operand named `of` of type `ty`;
 * reports and returns false when out of range. */
static bool axis_check(dtl_bcall *c, unsigned i, const char *of, const char *ty, dtl_span of_at,
                       uint32_t rank, int64_t *out)
{
    int64_t ax = int_arg(c, i);
    if (ax < -(int64_t)rank || ax >= (int64_t)rank) {
        dtl_diag_error(c->diags, arg_at(c, i), "%s: axis %" PRId64 " is out of range for %s (%s)",
                       c->b->name, ax, of, ty);
        if (rank == 0)
            dtl_diag_note(c->diags, of_at, "it is a scalar: it has no axes");
        else
            dtl_diag_note(c->diags, arg_at(c, i), "a tensor of rank %u has axes %d..%u",
                          rank, -(int)rank, rank - 1);
        return false;
    }
    *out = ax < 0 ? ax + rank : ax;
    return true;
}

static bool axis_arg(dtl_bcall *c, unsigned i, unsigned xi, uint32_t rank, int64_t *out)
{
    return axis_check(c, i, argname(c, xi), tyname(c, c->types[xi]), arg_at(c, xi), rank, out);
}

/* Range checks on a number parameter; skipped when the value is not known yet. */
enum { GT0, GE0, IN01, NOT0, IN0_1 };
static bool range_arg(dtl_bcall *c, unsigned i, int how)
{
    double v;
    if (!dtl_type_num_const(c->types[i], &v))
        return true;
    bool ok = how == GT0 ? v > 0 : how == GE0 ? v >= 0 : how == IN01 ? v >= 0 && v < 1
              : how == IN0_1 ? v > 0 && v <= 1 : v != 0;
    if (!ok) {
        static const char *const want[] = {"> 0", ">= 0", "in [0, 1)", "non-zero", "in (0, 1]"};
        dtl_diag_error(c->diags, arg_at(c, i), "%s: '%s' must be %s, found %s", c->b->name,
                       c->b->params[i].name, want[how],
                       dtl_value_print(c->arena, c->types[i], c->from));
    }
    return ok;
}

static bool count_arg(dtl_bcall *c, unsigned i, int64_t min)
{
    int64_t v = int_arg(c, i);
    if (v < min) {
        dtl_diag_error(c->diags, arg_at(c, i), "%s: '%s' must be at least %" PRId64
                       ", found %" PRId64, c->b->name, c->b->params[i].name, min, v);
        return false;
    }
    return true;
}

static const dtl_dim **dims_copy(dtl_arena *a, const dtl_type *t, uint32_t extra)
{
    uint32_t n = t->u.t.rank + extra;
    const dtl_dim **d = dtl_arena_array(a, n ? n : 1, sizeof *d);
    memcpy(d, t->u.t.dims, t->u.t.rank * sizeof *d);
    return d;
}

static dtl_type *scalar(dtl_bcall *c, dtl_dtype dt)
{
    return dtl_type_tensor(c->arena, dt, 0, NULL);
}

static dtl_type *cfg(dtl_bcall *c, dtl_type_kind kind)
{
    dtl_type *t = dtl_type_new(c->arena, kind);
    t->u.cfg.builtin = c->b;
    t->u.cfg.args = dtl_arena_array(c->arena, c->b->nparams ? c->b->nparams : 1,
                                    sizeof(dtl_type *));
    memcpy(t->u.cfg.args, c->types, c->b->nparams * sizeof(dtl_type *));
    return t;
}

static char *shape_print(dtl_arena *a, const dtl_dim *const *dims, size_t n)
{
    char *s = dtl_arena_strdup(a, "[");
    for (size_t i = 0; i < n; i++)
        s = dtl_arena_printf(a, "%s%s%s", s, i ? ", " : "", dtl_dim_print(a, dims[i]));
    return dtl_arena_printf(a, "%s]", s);
}

/* ---- matmul ---- */

static const char *mm_name(dtl_arena *a, const dtl_expr *e, bool left)
{
    return dtl_operand_name(a, e, left ? "the left operand" : "the right operand");
}

dtl_type *dtl_builtin_matmul(dtl_arena *a, dtl_diags *d, const dtl_module *from, dtl_span whole,
                             const dtl_expr *x, const dtl_type *tx, const dtl_expr *y,
                             const dtl_type *ty)
{
    dtl_type *err = dtl_type_new(a, DTL_TYPE_ERROR);
    if (tx->kind == DTL_TYPE_ERROR || ty->kind == DTL_TYPE_ERROR)
        return err;
    /* Names for messages, made only when one is reported. */
    const char *xn = NULL, *yn = NULL, *xs = NULL, *ys = NULL;
#define MM_NAMES()                                                                        \
    (xn = mm_name(a, x, true), yn = mm_name(a, y, false), xs = dtl_type_print(a, tx, from), \
     ys = dtl_type_print(a, ty, from))
    for (int side = 0; side < 2; side++) {
        const dtl_type *t = side ? ty : tx;
        dtl_span at = side ? (y ? y->span : whole) : (x ? x->span : whole);
        bool bad = t->kind != DTL_TYPE_TENSOR || t->u.t.dtype == DTL_DTYPE_BOOL ||
                   t->u.t.rank == 0;
        if (bad)
            MM_NAMES();
        const char *n = side ? yn : xn, *s = side ? ys : xs;
        if (t->kind != DTL_TYPE_TENSOR) {
            dtl_diag_error(d, at, "matmul: %s must be a tensor, found %s", n, s);
            return err;
        }
        if (t->u.t.dtype == DTL_DTYPE_BOOL) {
            dtl_diag_error(d, at, "matmul: %s is %s; matmul needs numeric tensors", n, s);
            return err;
        }
        if (t->u.t.rank == 0) {
            dtl_diag_error(d, at, "matmul: %s is a scalar (%s); use * to scale", n, s);
            return err;
        }
    }
    if (tx->u.t.dtype != ty->u.t.dtype) {
        MM_NAMES();
        dtl_diag_error(d, whole, "dtype mismatch: %s is %s, %s is %s", xn, xs, yn, ys);
        dtl_diag_note(d, y ? y->span : whole, "use cast(%s, %s)", yn,
                      dtl_dtype_name(tx->u.t.dtype));
        return err;
    }
    uint32_t xr = tx->u.t.rank, yr = ty->u.t.rank;
    const dtl_dim *kx = tx->u.t.dims[xr - 1];
    const dtl_dim *ky = ty->u.t.dims[yr == 1 ? 0 : yr - 2];
    if (!dtl_dim_eq(kx, ky)) {
        MM_NAMES();
        dtl_diag_error(d, whole, "matmul: inner dimensions differ: %s is %s, %s is %s", xn, xs,
                       yn, ys);
        dtl_diag_note(d, whole, "%s's last dimension is %s, %s's %s is %s", xn,
                      dtl_dim_print(a, kx), yn, yr == 1 ? "only dimension" : "first matrix dimension",
                      dtl_dim_print(a, ky));
        return err;
    }
    /* Batch dims: all but the last two (one for a vector). */
    uint32_t xb = xr >= 2 ? xr - 2 : 0, yb = yr >= 2 ? yr - 2 : 0;
    const dtl_dim **batch;
    if (dtl_broadcast(a, tx->u.t.dims, xb, ty->u.t.dims, yb, &batch) >= 0) {
        MM_NAMES();
        dtl_diag_error(d, whole, "matmul: batch dimensions do not broadcast: %s is %s, %s is %s",
                       xn, xs, yn, ys);
        return err;
    }
    uint32_t br = xb > yb ? xb : yb;
    uint32_t r = br + (xr >= 2) + (yr >= 2);
    const dtl_dim **dims = dtl_arena_array(a, r ? r : 1, sizeof *dims);
#undef MM_NAMES
    memcpy(dims, batch, br * sizeof *dims);
    uint32_t k = br;
    if (xr >= 2)
        dims[k++] = tx->u.t.dims[xr - 2];
    if (yr >= 2)
        dims[k++] = ty->u.t.dims[yr - 1];
    return dtl_type_tensor(a, tx->u.t.dtype, r, dims);
}

/* ---- the rules ---- */

static dtl_type *rule_reduce(dtl_bcall *c)
{
    const dtl_type *x = c->types[0];
    if (x->u.t.dtype == DTL_DTYPE_BOOL) {
        dtl_diag_error(c->diags, arg_at(c, 0), "%s: 'x' must be a numeric tensor, found %s",
                       c->b->name, tyname(c, x));
        return err_type(c);
    }
    if (!c->types[2]->u.b.known) {
        dtl_diag_error(c->diags, arg_at(c, 2), "%s: 'keepdims' must be a constant bool",
                       c->b->name);
        return err_type(c);
    }
    bool keep = c->types[2]->u.b.v;
    uint32_t r = x->u.t.rank;
    const dtl_dim **dims = dims_copy(c->arena, x, 0);
    const dtl_dim *one = dtl_dim_const(c->arena, 1);
    if (c->types[1]->kind == DTL_TYPE_NONE) {
        if (!keep)
            return scalar(c, x->u.t.dtype);
        for (uint32_t i = 0; i < r; i++)
            dims[i] = one;
        return dtl_type_tensor(c->arena, x->u.t.dtype, r, dims);
    }
    int64_t ax;
    if (!axis_arg(c, 1, 0, r, &ax))
        return err_type(c);
    if (keep) {
        dims[ax] = one;
        return dtl_type_tensor(c->arena, x->u.t.dtype, r, dims);
    }
    memmove(dims + ax, dims + ax + 1, (r - ax - 1) * sizeof *dims);
    return dtl_type_tensor(c->arena, x->u.t.dtype, r - 1, dims);
}

static dtl_type *rule_reshape(dtl_bcall *c)
{
    dtl_arena *a = c->arena;
    const dtl_type *x = c->types[0];
    const dtl_expr *lit = strip(c->args[1]);
    size_t n = lit->u.tensor.nelems;
    if (n > 64) {
        dtl_diag_error(c->diags, lit->span, "reshape: the new shape has %zu dimensions; at most 64 are supported", n);
        return err_type(c);
    }
    const dtl_dim **dims = dtl_arena_array(a, n ? n : 1, sizeof *dims);
    size_t infer = SIZE_MAX;
    const dtl_dim *known = dtl_dim_const(a, 1);
    for (size_t i = 0; i < n && known; i++) {
        const dtl_expr *e = lit->u.tensor.elems[i];
        int64_t v;
        if (!e->type->u.ival) {
            dtl_diag_error(c->diags, e->span, "reshape: the size of dimension %zu is not known", i);
            return err_type(c);
        }
        dims[i] = e->type->u.ival;
        if (dtl_dim_is_const(dims[i], &v) && v < 0) {
            if (v != -1) {
                dtl_diag_error(c->diags, e->span, "reshape: dimension %zu is %" PRId64
                               "; only -1 (inferred) may be negative", i, v);
                return err_type(c);
            }
            if (infer != SIZE_MAX) {
                dtl_diag_error(c->diags, e->span, "reshape: only one dimension can be -1");
                dtl_diag_note(c->diags, lit->u.tensor.elems[infer]->span, "the first -1 is here");
                return err_type(c);
            }
            infer = i;
            continue;
        }
        known = dtl_dim_mul(a, known, dims[i]);
    }
    const dtl_dim *total = dtl_dim_const(a, 1);
    for (uint32_t i = 0; i < x->u.t.rank && total; i++)
        total = dtl_dim_mul(a, total, x->u.t.dims[i]);
    if (!known || !total) {
        dtl_diag_error(c->diags, c->at, "reshape: the element counts are too large to compare");
        return err_type(c);
    }
    const char *xs = tyname(c, x);
    if (infer != SIZE_MAX) {
        int64_t kv, tv;
        if (dtl_dim_is_const(known, &kv) && kv == 0) {
            dtl_diag_error(c->diags, lit->span,
                           "reshape: cannot infer -1 when another dimension is 0");
            return err_type(c);
        }
        bool exact;
        const dtl_dim *q = dtl_dim_div(a, total, known, &exact);
        if (!q || (!exact && dtl_dim_is_const(total, &tv) && dtl_dim_is_const(known, &kv))) {
            dtl_diag_error(c->diags, lit->span, "reshape: %s has %s elements, not a multiple "
                           "of %s (the product of the other new dimensions)", xs,
                           dtl_dim_print(a, total), dtl_dim_print(a, known));
            return err_type(c);
        }
        dims[infer] = q;
    } else if (!dtl_dim_eq(total, known)) {
        dtl_diag_error(c->diags, lit->span,
                       "reshape: %s has %s elements, the new shape %s has %s", xs,
                       dtl_dim_print(a, total), shape_print(a, dims, n), dtl_dim_print(a, known));
        return err_type(c);
    }
    return dtl_type_tensor(a, x->u.t.dtype, (uint32_t)n, dims);
}

static dtl_type *rule_transpose(dtl_bcall *c)
{
    const dtl_type *x = c->types[0];
    uint32_t r = x->u.t.rank;
    const dtl_dim **dims = dims_copy(c->arena, x, 0);
    if (c->types[1]->kind == DTL_TYPE_NONE) {
        if (r != 2) {
            dtl_diag_error(c->diags, arg_at(c, 0),
                           "transpose: without a permutation x must have rank 2, found %s",
                           tyname(c, x));
            dtl_diag_note(c->diags, c->at, "give one, e.g. transpose(x, [1, 0%s])",
                          r > 2 ? ", 2" : "");
            return err_type(c);
        }
        const dtl_dim *t = dims[0];
        dims[0] = dims[1];
        dims[1] = t;
        return dtl_type_tensor(c->arena, x->u.t.dtype, 2, dims);
    }
    const dtl_expr *lit = strip(c->args[1]);
    if (lit->u.tensor.nelems != r) {
        dtl_diag_error(c->diags, lit->span,
                       "transpose: the permutation has %zu entries, x (%s) has rank %u",
                       lit->u.tensor.nelems, tyname(c, x), r);
        return err_type(c);
    }
    uint64_t seen = 0;
    for (uint32_t i = 0; i < r; i++) {
        int64_t p;
        dtl_type_int_const(lit->u.tensor.elems[i]->type, &p);
        if (p < 0 || p >= (int64_t)r || r > 64 || (seen >> p & 1)) {
            dtl_diag_error(c->diags, lit->span, "transpose: %s is not a permutation of 0..%u",
                           dtl_operand_name(c->arena, lit, "the list"), r - 1);
            return err_type(c);
        }
        seen |= (uint64_t)1 << p;
        dims[i] = x->u.t.dims[p];
    }
    return dtl_type_tensor(c->arena, x->u.t.dtype, r, dims);
}

/* Where to report about element i of a TENSORS argument: the element in a literal, else
 * the whole argument (a list value such as split's). */
static dtl_span elem_at(dtl_bcall *c, size_t i)
{
    const dtl_expr *lit = strip(c->args[0]);
    if (lit && lit->kind == DTL_EXPR_TENSOR && i < lit->u.tensor.nelems)
        return lit->u.tensor.elems[i]->span;
    return arg_at(c, 0);
}

static dtl_type *rule_concat(dtl_bcall *c)
{
    const dtl_type *l = c->types[0];
    if (l->kind != DTL_TYPE_LIST || l->u.list.n == 0) {
        dtl_diag_error(c->diags, arg_at(c, 0), "concat: the list is empty");
        return err_type(c);
    }
    const dtl_type *t0 = l->u.list.elems[0];
    uint32_t r = t0->u.t.rank;
    if (r == 0) {
        dtl_diag_error(c->diags, elem_at(c, 0),
                       "concat: element 0 is a scalar (%s); concat needs rank 1 or more",
                       tyname(c, t0));
        return err_type(c);
    }
    int64_t ax;
    if (!axis_check(c, 1, "the elements", tyname(c, t0), elem_at(c, 0), r, &ax))
        return err_type(c);
    const dtl_dim **dims = dims_copy(c->arena, t0, 0);
    for (size_t i = 1; i < l->u.list.n; i++) {
        const dtl_type *t = l->u.list.elems[i];
        dtl_span at = elem_at(c, i);
        if (t->u.t.dtype != t0->u.t.dtype) {
            dtl_diag_error(c->diags, at, "concat: element %zu is %s, element 0 is %s: dtypes differ",
                           i, tyname(c, t), tyname(c, t0));
            return err_type(c);
        }
        if (t->u.t.rank != r) {
            dtl_diag_error(c->diags, at, "concat: element %zu is %s, element 0 is %s: ranks differ",
                           i, tyname(c, t), tyname(c, t0));
            return err_type(c);
        }
        for (uint32_t k = 0; k < r; k++) {
            if (k == ax) {
                dims[k] = dtl_dim_add(c->arena, dims[k], t->u.t.dims[k]);
                if (!dims[k]) {
                    dtl_diag_error(c->diags, at, "concat: the result's size overflows");
                    return err_type(c);
                }
            } else if (!dtl_dim_eq(t->u.t.dims[k], t0->u.t.dims[k])) {
                dtl_diag_error(c->diags, at, "concat: element %zu is %s, element 0 is %s: "
                               "dimension %u differs (only axis %" PRId64 " may)", i,
                               tyname(c, t), tyname(c, t0), k, ax);
                return err_type(c);
            }
        }
    }
    return dtl_type_tensor(c->arena, t0->u.t.dtype, r, dims);
}

static dtl_type *rule_where(dtl_bcall *c)
{
    const dtl_type *m = c->types[0], *x = c->types[1], *y = c->types[2];
    dtl_dtype dt;
    if (x->kind == DTL_TYPE_TENSOR && y->kind == DTL_TYPE_TENSOR) {
        if (x->u.t.dtype != y->u.t.dtype) {
            dtl_builtin_dtype_mismatch(c->arena, c->diags, c->from, c->at, c->args[1], x,
                                       c->args[2], y);
            return err_type(c);
        }
        dt = x->u.t.dtype;
    } else if (x->kind == DTL_TYPE_TENSOR || y->kind == DTL_TYPE_TENSOR) {
        const dtl_type *t = x->kind == DTL_TYPE_TENSOR ? x : y;
        const dtl_type *h = t == x ? y : x;
        unsigned hi = t == x ? 2 : 1;
        dt = t->u.t.dtype;
        if (dt == DTL_DTYPE_BOOL || (h->kind == DTL_TYPE_FLOAT && !dtl_dtype_is_float(dt))) {
            dtl_diag_error(c->diags, arg_at(c, hi), "where: %s is a %s, the other branch is %s",
                           argname(c, hi), tyname(c, h), tyname(c, t));
            return err_type(c);
        }
    } else {
        dt = x->kind == DTL_TYPE_FLOAT || y->kind == DTL_TYPE_FLOAT ? DTL_DTYPE_F32
                                                                     : DTL_DTYPE_I64;
    }
    const dtl_dim **d1, **d2;
    static const dtl_dim *const none[1] = {NULL};
    const dtl_dim *const *xd = x->kind == DTL_TYPE_TENSOR ? x->u.t.dims : none;
    const dtl_dim *const *yd = y->kind == DTL_TYPE_TENSOR ? y->u.t.dims : none;
    uint32_t xr = x->kind == DTL_TYPE_TENSOR ? x->u.t.rank : 0;
    uint32_t yr = y->kind == DTL_TYPE_TENSOR ? y->u.t.rank : 0;
    if (dtl_broadcast(c->arena, xd, xr, yd, yr, &d1) >= 0) {
        dtl_diag_error(c->diags, c->at, "where: cannot broadcast a (%s) with b (%s)",
                       tyname(c, x), tyname(c, y));
        return err_type(c);
    }
    uint32_t r1 = xr > yr ? xr : yr;
    if (dtl_broadcast(c->arena, m->u.t.dims, m->u.t.rank, d1, r1, &d2) >= 0) {
        dtl_diag_error(c->diags, arg_at(c, 0), "where: cannot broadcast the mask (%s) with the "
                       "branches, of shape %s", tyname(c, m), shape_print(c->arena, d1, r1));
        return err_type(c);
    }
    return dtl_type_tensor(c->arena, dt, m->u.t.rank > r1 ? m->u.t.rank : r1, d2);
}

static dtl_type *rule_same_shape_loss(dtl_bcall *c)
{
    const dtl_type *x = c->types[0], *y = c->types[1];
    if (!dtl_type_same(x, y)) {
        dtl_diag_error(c->diags, c->at, "%s: %s is %s, %s is %s: they must have the same "
                       "dtype and shape", c->b->name, argname(c, 0), tyname(c, x),
                       argname(c, 1), tyname(c, y));
        return err_type(c);
    }
    return scalar(c, x->u.t.dtype);
}

static dtl_type *rule_cross_entropy(dtl_bcall *c)
{
    /* logits [batch, …, classes], labels [batch, …]: the leading dims must agree. */
    const dtl_type *l = c->types[0], *y = c->types[1];
    if (l->u.t.rank < 2) {
        dtl_diag_error(c->diags, arg_at(c, 0), "cross_entropy: logits must be [batch, classes] "
                       "(or [batch, …, classes]), found %s", tyname(c, l));
        return err_type(c);
    }
    if (y->u.t.rank != l->u.t.rank - 1) {
        dtl_diag_error(c->diags, arg_at(c, 1), "cross_entropy: labels must be %s (a class "
                       "index per row of the logits, %s), found %s",
                       shape_print(c->arena, l->u.t.dims, l->u.t.rank - 1), tyname(c, l),
                       tyname(c, y));
        return err_type(c);
    }
    for (uint32_t i = 0; i + 1 < l->u.t.rank; i++)
        if (!dtl_dim_eq(l->u.t.dims[i], y->u.t.dims[i])) {
            if (l->u.t.rank == 2)
                dtl_diag_error(c->diags, c->at, "cross_entropy: %s has %s rows, %s has %s labels",
                               argname(c, 0), dtl_dim_print(c->arena, l->u.t.dims[0]),
                               argname(c, 1), dtl_dim_print(c->arena, y->u.t.dims[0]));
            else
                dtl_diag_error(c->diags, c->at, "cross_entropy: %s is %s, %s is %s: dimension "
                               "%u differs", argname(c, 0), tyname(c, l), argname(c, 1),
                               tyname(c, y), i);
            return err_type(c);
        }
    return scalar(c, l->u.t.dtype);
}

/* ---- convolution and pooling ---- */

/* Parameter i (an INT_PAIR) as two dims (h, w); false for none. */
static bool pair_dims(dtl_bcall *c, unsigned i, const dtl_dim **d)
{
    const dtl_type *t = c->types[i];
    if (t->kind == DTL_TYPE_NONE)
        return false;
    if (t->kind == DTL_TYPE_INT) {
        d[0] = d[1] = t->u.ival;
        return true;
    }
    const dtl_expr *lit = strip(c->args[i]);
    d[0] = lit->u.tensor.elems[0]->type->u.ival;
    d[1] = lit->u.tensor.elems[1]->type->u.ival;
    return true;
}

/* Reports a known value of pair parameter i below min; true when fine (or not known). */
static bool pair_min(dtl_bcall *c, unsigned i, const dtl_dim **d, int64_t min)
{
    for (int k = 0; k < 2; k++) {
        int64_t v;
        if (dtl_dim_is_const(d[k], &v) && v < min) {
            dtl_diag_error(c->diags, arg_at(c, i), "%s: '%s' must be at least %" PRId64
                           ", found %" PRId64 "%s", c->b->name, c->b->params[i].name, min, v,
                           d[0] == d[1] ? "" : k ? " (width)" : " (height)");
            return false;
        }
    }
    return true;
}

/* One spatial output size: (in + 2 pad - dil (k - 1) - 1) / stride + 1, symbolic where the
 * sizes are; reports (naming axis `which`) when it is known to be below 1. */
static const dtl_dim *win_dim(dtl_bcall *c, const char *which, const dtl_dim *in,
                              const dtl_dim *k, const dtl_dim *pad, const dtl_dim *dil,
                              const dtl_dim *stride)
{
    dtl_arena *a = c->arena;
    const dtl_dim *one = dtl_dim_const(a, 1), *two = dtl_dim_const(a, 2);
    const dtl_dim *span = dtl_dim_add(a, dtl_dim_mul(a, dil, dtl_dim_sub(a, k, one)), one);
    const dtl_dim *room = span ? dtl_dim_add(a, in, dtl_dim_mul(a, two, pad)) : NULL;
    const dtl_dim *num = room ? dtl_dim_sub(a, room, span) : NULL;
    int64_t nv, rv, sv;
    if (num && dtl_dim_is_const(num, &nv) && nv < 0) {
        dtl_dim_is_const(room, &rv);
        dtl_dim_is_const(span, &sv);
        dtl_diag_error(c->diags, c->at, "%s: a window spans %" PRId64 " %s, more than the "
                       "input's %s %s padded by %s on both sides (%" PRId64 ")", c->b->name, sv,
                       which[0] == 'h' ? "rows" : "columns", which, dtl_dim_print(a, in),
                       dtl_dim_print(a, pad), rv);
        return NULL;
    }
    const dtl_dim *q = num ? dtl_dim_div(a, num, stride, NULL) : NULL;
    const dtl_dim *out = q ? dtl_dim_add(a, q, one) : NULL;
    if (!out)
        dtl_diag_error(c->diags, c->at, "%s: the output's %s is too large to compute",
                       c->b->name, which);
    return out;
}

static bool rank4(dtl_bcall *c, unsigned i, const char *layout)
{
    const dtl_type *t = c->types[i];
    if (t->u.t.rank == 4)
        return true;
    dtl_diag_error(c->diags, arg_at(c, i), "%s: %s must be %s (rank 4), found %s", c->b->name,
                   argname(c, i), layout, tyname(c, t));
    if (i == 0 && t->u.t.rank == 2)
        dtl_diag_note(c->diags, arg_at(c, i), "images stored as rows can be reshaped, e.g. "
                      "reshape(x, [B, 1, 28, 28])");
    return false;
}

static dtl_type *rule_conv2d(dtl_bcall *c)
{
    dtl_arena *a = c->arena;
    const dtl_type *x = c->types[0], *w = c->types[1];
    if (!rank4(c, 0, "[N, C, H, W]") || !rank4(c, 1, "[O, C / groups, KH, KW]"))
        return err_type(c);
    if (x->u.t.dtype != w->u.t.dtype) {
        dtl_builtin_dtype_mismatch(a, c->diags, c->from, c->at, c->args[0], x, c->args[1], w);
        return err_type(c);
    }
    const dtl_dim *st[2], *pad[2], *dil[2];
    pair_dims(c, 2, st);
    pair_dims(c, 3, pad);
    pair_dims(c, 4, dil);
    const dtl_dim *grp = c->types[5]->u.ival, *grp2[2] = {grp, grp};
    if (!pair_min(c, 2, st, 1) || !pair_min(c, 3, pad, 0) || !pair_min(c, 4, dil, 1) ||
        !pair_min(c, 5, grp2, 1))
        return err_type(c);
    const dtl_dim *cx = x->u.t.dims[1], *cw = w->u.t.dims[1], *o = w->u.t.dims[0];
    int64_t g = 0, vx, vo;
    bool gk = dtl_dim_is_const(grp, &g);
    if (gk && g > 1 && dtl_dim_is_const(cx, &vx) && vx % g) {
        dtl_diag_error(c->diags, arg_at(c, 5), "conv2d: groups = %" PRId64 " does not divide "
                       "the input's %" PRId64 " channels", g, vx);
        return err_type(c);
    }
    if (gk && g > 1 && dtl_dim_is_const(o, &vo) && vo % g) {
        dtl_diag_error(c->diags, arg_at(c, 5), "conv2d: groups = %" PRId64 " does not divide "
                       "the %" PRId64 " output channels of %s (%s)", g, vo, argname(c, 1),
                       tyname(c, w));
        return err_type(c);
    }
    const dtl_dim *per = gk && g == 1 ? cx : dtl_dim_div(a, cx, grp, NULL);
    const dtl_dim *prod = dtl_dim_mul(a, cw, grp);
    if (!(per && dtl_dim_eq(per, cw)) && !(prod && dtl_dim_eq(prod, cx))) {
        if (gk && g == 1)
            dtl_diag_error(c->diags, c->at, "conv2d: input has %s channels, weight expects %s",
                           dtl_dim_print(a, cx), dtl_dim_print(a, cw));
        else
            dtl_diag_error(c->diags, c->at, "conv2d: input has %s channels, weight expects %s "
                           "per group x %s groups", dtl_dim_print(a, cx), dtl_dim_print(a, cw),
                           dtl_dim_print(a, grp));
        dtl_diag_note(c->diags, arg_at(c, 0), "%s is %s (channels are axis 1)", argname(c, 0),
                      tyname(c, x));
        dtl_diag_note(c->diags, arg_at(c, 1), "%s is %s ([out, in / groups, kh, kw])",
                      argname(c, 1), tyname(c, w));
        return err_type(c);
    }
    const dtl_dim **dims = dtl_arena_array(a, 4, sizeof *dims);
    dims[0] = x->u.t.dims[0];
    dims[1] = o;
    dims[2] = win_dim(c, "height", x->u.t.dims[2], w->u.t.dims[2], pad[0], dil[0], st[0]);
    dims[3] = dims[2] ? win_dim(c, "width", x->u.t.dims[3], w->u.t.dims[3], pad[1], dil[1],
                                st[1]) : NULL;
    if (!dims[3])
        return err_type(c);
    return dtl_type_tensor(a, x->u.t.dtype, 4, dims);
}

static dtl_type *rule_pool2d(dtl_bcall *c)
{
    dtl_arena *a = c->arena;
    const dtl_type *x = c->types[0];
    if (!rank4(c, 0, "[N, C, H, W]"))
        return err_type(c);
    const dtl_dim *k[2], *st[2], *pad[2];
    pair_dims(c, 1, k);
    if (!pair_dims(c, 2, st))
        st[0] = k[0], st[1] = k[1];
    pair_dims(c, 3, pad);
    if (!pair_min(c, 1, k, 1) || !pair_min(c, 2, st, 1) || !pair_min(c, 3, pad, 0))
        return err_type(c);
    for (int i = 0; i < 2; i++) {
        int64_t kv, pv;
        if (dtl_dim_is_const(k[i], &kv) && dtl_dim_is_const(pad[i], &pv) && pv >= kv) {
            dtl_diag_error(c->diags, arg_at(c, 3), "%s: padding %" PRId64 " must be less than "
                           "the kernel (%" PRId64 ")%s, so that every window holds an element "
                           "of x", c->b->name, pv, kv,
                           k[0] == k[1] && pad[0] == pad[1] ? "" : i ? " in width" : " in height");
            return err_type(c);
        }
    }
    const dtl_dim *one = dtl_dim_const(a, 1);
    const dtl_dim **dims = dtl_arena_array(a, 4, sizeof *dims);
    dims[0] = x->u.t.dims[0];
    dims[1] = x->u.t.dims[1];
    dims[2] = win_dim(c, "height", x->u.t.dims[2], k[0], pad[0], one, st[0]);
    dims[3] = dims[2] ? win_dim(c, "width", x->u.t.dims[3], k[1], pad[1], one, st[1]) : NULL;
    if (!dims[3])
        return err_type(c);
    return dtl_type_tensor(a, x->u.t.dtype, 4, dims);
}

static dtl_type *rule_parallel(dtl_bcall *c)
{
    dtl_type *t = dtl_type_new(c->arena, DTL_TYPE_PARALLEL);
    switch (c->b->id) {
    case DTL_BI_DATA:
        if (c->types[0]->kind == DTL_TYPE_NONE) {
            t->u.par.data = -1;
        } else {
            if (!count_arg(c, 0, 1))
                return err_type(c);
            t->u.par.data = int_arg(c, 0);
        }
        break;
    case DTL_BI_TENSOR:
        if (!count_arg(c, 0, 1))
            return err_type(c);
        t->u.par.tensor = int_arg(c, 0);
        break;
    default:
        if (!count_arg(c, 0, 1) || !count_arg(c, 1, 1))
            return err_type(c);
        t->u.par.stages = int_arg(c, 0);
        t->u.par.microbatches = int_arg(c, 1);
        break;
    }
    return t;
}

/* ---- the issue 7 layer ops ---- */

static dtl_type *rule_take(dtl_bcall *c)
{
    const dtl_type *x = c->types[0], *ix = c->types[1];
    if (x->u.t.rank == 0) {
        dtl_diag_error(c->diags, arg_at(c, 0), "take: 'x' must have rank 1 or more, found %s",
                       tyname(c, x));
        return err_type(c);
    }
    int64_t ax;
    if (!axis_arg(c, 2, 0, x->u.t.rank, &ax))
        return err_type(c);
    uint32_t r = x->u.t.rank - 1 + ix->u.t.rank;
    const dtl_dim **dims = dtl_arena_array(c->arena, r ? r : 1, sizeof *dims);
    uint32_t k = 0;
    for (uint32_t i = 0; i < (uint32_t)ax; i++)
        dims[k++] = x->u.t.dims[i];
    for (uint32_t i = 0; i < ix->u.t.rank; i++)
        dims[k++] = ix->u.t.dims[i];
    for (uint32_t i = (uint32_t)ax + 1; i < x->u.t.rank; i++)
        dims[k++] = x->u.t.dims[i];
    return dtl_type_tensor(c->arena, x->u.t.dtype, r, dims);
}

static dtl_type *rule_stack(dtl_bcall *c)
{
    const dtl_type *l = c->types[0];
    if (l->kind != DTL_TYPE_LIST || l->u.list.n == 0) {
        dtl_diag_error(c->diags, arg_at(c, 0), "stack: the list is empty");
        return err_type(c);
    }
    const dtl_type *t0 = l->u.list.elems[0];
    for (size_t i = 1; i < l->u.list.n; i++)
        if (!dtl_type_same(l->u.list.elems[i], t0)) {
            dtl_diag_error(c->diags, elem_at(c, i), "stack: element %zu is %s, "
                           "element 0 is %s: they must have the same dtype and shape", i,
                           tyname(c, l->u.list.elems[i]), tyname(c, t0));
            return err_type(c);
        }
    uint32_t r = t0->u.t.rank;
    int64_t ax;
    if (!axis_check(c, 1, "the result", "rank one more than the elements'", elem_at(c, 0),
                    r + 1, &ax))
        return err_type(c);
    const dtl_dim **dims = dims_copy(c->arena, t0, 1);
    memmove(dims + ax + 1, dims + ax, (r - (uint32_t)ax) * sizeof *dims);
    dims[ax] = dtl_dim_const(c->arena, (int64_t)l->u.list.n);
    return dtl_type_tensor(c->arena, t0->u.t.dtype, r + 1, dims);
}

static dtl_type *rule_causal_mask(dtl_bcall *c)
{
    int64_t n;
    if (dtl_dim_is_const(c->types[0]->u.ival, &n) && n < 1) {
        dtl_diag_error(c->diags, arg_at(c, 0), "causal_mask: 'n' must be at least 1, found %"
                       PRId64, n);
        return err_type(c);
    }
    const dtl_dim **dims = dtl_arena_array(c->arena, 2, sizeof *dims);
    dims[0] = dims[1] = c->types[0]->u.ival;
    return dtl_type_tensor(c->arena, DTL_DTYPE_BOOL, 2, dims);
}

static dtl_type *rule_masked_fill(dtl_bcall *c)
{
    const dtl_type *x = c->types[0], *m = c->types[1], *v = c->types[2];
    if (v->kind == DTL_TYPE_FLOAT && !dtl_dtype_is_float(x->u.t.dtype)) {
        dtl_diag_error(c->diags, arg_at(c, 2), "masked_fill: 'value' is a float, %s is %s",
                       argname(c, 0), tyname(c, x));
        return err_type(c);
    }
    const dtl_dim **d;
    uint32_t r = m->u.t.rank > x->u.t.rank ? m->u.t.rank : x->u.t.rank;
    bool ok = dtl_broadcast(c->arena, m->u.t.dims, m->u.t.rank, x->u.t.dims, x->u.t.rank, &d) < 0 &&
              r == x->u.t.rank;
    for (uint32_t i = 0; ok && i < r; i++)
        ok = dtl_dim_eq(d[i], x->u.t.dims[i]);
    if (!ok) {
        dtl_diag_error(c->diags, arg_at(c, 1), "masked_fill: the mask (%s) does not broadcast "
                       "to the shape of %s (%s)", tyname(c, m), argname(c, 0), tyname(c, x));
        return err_type(c);
    }
    return c->types[0];
}

/* Is argument i the name of a `state` of a model? Reports why not. */
static bool state_arg(dtl_bcall *c, unsigned i)
{
    const dtl_expr *e = strip(c->args[i]);
    const dtl_sym *s = e && (e->kind == DTL_EXPR_NAME || e->kind == DTL_EXPR_MEMBER) ? e->sym
                                                                                   : NULL;
    if (s && s->kind == DTL_SYM_PARAM && s->decl && s->decl->u.bind.state)
        return true;
    dtl_diag_error(c->diags, arg_at(c, i), "%s: '%s' must name a `state` of the model, which "
                   "training updates, found %s", c->b->name, c->b->params[i].name,
                   s && s->kind == DTL_SYM_PARAM ? dtl_arena_printf(c->arena, "param %s", s->name)
                                                 : argname(c, i));
    dtl_diag_note(c->diags, arg_at(c, i), "running statistics are declared in the model as "
                  "states, like: state running_%s: %s = %s", c->b->params[i].name,
                  tyname(c, c->types[i]), i == 4 ? "ones()" : "zeros()");
    return false;
}

/* Arguments from..to (inclusive) must be vectors [n] of x's dtype, n = dim `which` of x. */
static bool vec_args(dtl_bcall *c, unsigned from, unsigned to, uint32_t which, const char *what)
{
    const dtl_type *x = c->types[0];
    for (unsigned i = from; i <= to; i++) {
        const dtl_type *t = c->types[i];
        if (t->u.t.dtype != x->u.t.dtype || t->u.t.rank != 1 ||
            !dtl_dim_eq(t->u.t.dims[0], x->u.t.dims[which])) {
            dtl_diag_error(c->diags, arg_at(c, i), "%s: '%s' must be %s[%s] (%s is %s: one "
                           "entry per %s), found %s", c->b->name, c->b->params[i].name,
                           dtl_dtype_name(x->u.t.dtype),
                           dtl_dim_print(c->arena, x->u.t.dims[which]), argname(c, 0),
                           tyname(c, x), what, tyname(c, t));
            return false;
        }
    }
    return true;
}

static dtl_type *rule_batch_norm(dtl_bcall *c)
{
    const dtl_type *x = c->types[0];
    if (x->u.t.rank < 2) {
        dtl_diag_error(c->diags, arg_at(c, 0), "batch_norm: 'x' must be [batch, channels, …], "
                       "found %s", tyname(c, x));
        return err_type(c);
    }
    if (!vec_args(c, 1, 4, 1, "channel, its axis 1"))
        return err_type(c);
    bool ok = state_arg(c, 3);
    ok = state_arg(c, 4) && ok;
    ok = range_arg(c, 5, IN0_1) && ok;
    ok = range_arg(c, 6, GT0) && ok;
    return ok ? c->types[0] : err_type(c);
}

static dtl_type *rule_layer_norm(dtl_bcall *c)
{
    const dtl_type *x = c->types[0];
    if (x->u.t.rank < 1) {
        dtl_diag_error(c->diags, arg_at(c, 0), "layer_norm: 'x' must have rank 1 or more, found "
                       "%s", tyname(c, x));
        return err_type(c);
    }
    if (!vec_args(c, 1, 2, x->u.t.rank - 1, "feature, its last axis") || !range_arg(c, 3, GT0))
        return err_type(c);
    return c->types[0];
}

static dtl_type *rule_split(dtl_bcall *c)
{
    const dtl_type *x = c->types[0];
    if (x->u.t.rank == 0) {
        dtl_diag_error(c->diags, arg_at(c, 0), "split: 'x' must have rank 1 or more, found %s",
                       tyname(c, x));
        return err_type(c);
    }
    int64_t ax;
    if (!count_arg(c, 1, 1) || !axis_arg(c, 2, 0, x->u.t.rank, &ax))
        return err_type(c);
    int64_t n = int_arg(c, 1);
    if (n > 4096) {
        dtl_diag_error(c->diags, arg_at(c, 1), "split: at most 4096 parts, found %" PRId64, n);
        return err_type(c);
    }
    bool exact = false;
    const dtl_dim *part = dtl_dim_div(c->arena, x->u.t.dims[ax], dtl_dim_const(c->arena, n),
                                      &exact);
    if (!part || !exact) {
        dtl_diag_error(c->diags, arg_at(c, 1), "split: dimension %" PRId64 " of %s (%s) is not "
                       "a multiple of %" PRId64, ax, argname(c, 0), tyname(c, x), n);
        return err_type(c);
    }
    const dtl_dim **dims = dims_copy(c->arena, x, 0);
    dims[ax] = part;
    dtl_type *t = dtl_type_tensor(c->arena, x->u.t.dtype, x->u.t.rank, dims);
    dtl_type **elems = dtl_arena_array(c->arena, (size_t)n, sizeof *elems);
    for (int64_t i = 0; i < n; i++)
        elems[i] = t;
    dtl_type *l = dtl_type_new(c->arena, DTL_TYPE_LIST);
    l->u.list.elems = elems;
    l->u.list.n = (size_t)n;
    return l;
}

dtl_type *dtl_builtin_check(dtl_bcall *c)
{
    const dtl_builtin *b = c->b;
    for (unsigned i = 0; i < b->nparams; i++) {
        const dtl_type *t = c->types[i];
        if (!t || t->kind == DTL_TYPE_ERROR)
            return err_type(c);
    }
    for (unsigned i = 0; i < b->nparams; i++) {
        const dtl_type *t = c->types[i];
        if (kind_ok(&b->params[i], t, c->args[i]))
            continue;
        const dtl_expr *e = strip(c->args[i]);
        if (b->params[i].kind == DTL_BP_SHAPE && e && e->kind == DTL_EXPR_TENSOR) {
            for (size_t k = 0; k < e->u.tensor.nelems; k++) {
                const dtl_type *et = e->u.tensor.elems[k]->type;
                if (et && et->kind == DTL_TYPE_ERROR)
                    return err_type(c);
                if (et && et->kind != DTL_TYPE_INT) {
                    dtl_diag_error(c->diags, e->u.tensor.elems[k]->span,
                                   "%s: the entries of '%s' must be ints, found %s", b->name,
                                   b->params[i].name, tyname(c, et));
                    return err_type(c);
                }
            }
        }
        if (b->params[i].kind == DTL_BP_CONST_INT && t->kind == DTL_TYPE_INT) {
            dtl_diag_error(c->diags, arg_at(c, i), "%s: '%s' must be a constant int, found %s, "
                           "which is not known until the model is instantiated", b->name,
                           b->params[i].name, dtl_value_print(c->arena, t, c->from));
            return err_type(c);
        }
        if (t->kind == DTL_TYPE_PENDING)
            return err_type(c);
        dtl_diag_error(c->diags, arg_at(c, i), "%s: '%s' must be %s, found %s", b->name,
                       b->params[i].name, dtl_bparam_kind_text(b->params[i].kind),
                       tyname(c, t));
        if (b->params[i].kind == DTL_BP_FLOAT_TENSOR && t->kind == DTL_TYPE_TENSOR)
            dtl_diag_note(c->diags, arg_at(c, i), "convert it with cast(%s, f32)",
                          argname(c, i));
        return err_type(c);
    }

    const dtl_type *x = b->nparams ? c->types[0] : NULL;
    switch (b->id) {
    case DTL_BI_NONE:
        return dtl_type_new(c->arena, DTL_TYPE_NONE);
    case DTL_BI_RELU: case DTL_BI_SIGMOID: case DTL_BI_TANH: case DTL_BI_EXP: case DTL_BI_LOG:
    case DTL_BI_SQRT: case DTL_BI_ABS: case DTL_BI_GELU: case DTL_BI_SILU: case DTL_BI_SOFTPLUS:
    case DTL_BI_SIN: case DTL_BI_COS:
        return c->types[0];
    case DTL_BI_SOFTMAX:
    case DTL_BI_LOG_SOFTMAX: {
        int64_t ax;
        if (!axis_arg(c, 1, 0, x->u.t.rank, &ax))
            return err_type(c);
        return c->types[0];
    }
    case DTL_BI_SUM: case DTL_BI_MEAN: case DTL_BI_MAX: case DTL_BI_MIN:
        return rule_reduce(c);
    case DTL_BI_ARGMAX: {
        int64_t ax;
        if (x->u.t.dtype == DTL_DTYPE_BOOL) {
            dtl_diag_error(c->diags, arg_at(c, 0), "argmax: 'x' must be a numeric tensor, "
                           "found %s", tyname(c, x));
            return err_type(c);
        }
        if (!axis_arg(c, 1, 0, x->u.t.rank, &ax))
            return err_type(c);
        const dtl_dim **dims = dims_copy(c->arena, x, 0);
        memmove(dims + ax, dims + ax + 1, (x->u.t.rank - ax - 1) * sizeof *dims);
        return dtl_type_tensor(c->arena, DTL_DTYPE_I64, x->u.t.rank - 1, dims);
    }
    case DTL_BI_RESHAPE:
        return rule_reshape(c);
    case DTL_BI_TRANSPOSE:
        return rule_transpose(c);
    case DTL_BI_CONCAT:
        return rule_concat(c);
    case DTL_BI_WHERE:
        return rule_where(c);
    case DTL_BI_CAST:
        if (x->kind == DTL_TYPE_TENSOR)
            return dtl_type_tensor(c->arena, c->types[1]->u.dtype, x->u.t.rank,
                                   dims_copy(c->arena, x, 0));
        return scalar(c, c->types[1]->u.dtype);
    case DTL_BI_ONE_HOT: {
        int64_t n;
        if (dtl_dim_is_const(c->types[1]->u.ival, &n) && n <= 0) {
            dtl_diag_error(c->diags, arg_at(c, 1), "one_hot: 'n' must be at least 1, found %"
                           PRId64, n);
            return err_type(c);
        }
        const dtl_dim **dims = dims_copy(c->arena, x, 1);
        dims[x->u.t.rank] = c->types[1]->u.ival;
        return dtl_type_tensor(c->arena, DTL_DTYPE_F32, x->u.t.rank + 1, dims);
    }
    case DTL_BI_DROPOUT:
        return range_arg(c, 1, IN01) ? c->types[0] : err_type(c);
    case DTL_BI_MATMUL:
        return dtl_builtin_matmul(c->arena, c->diags, c->from, c->at, c->args[0], c->types[0],
                                  c->args[1], c->types[1]);
    case DTL_BI_CROSS_ENTROPY:
        return rule_cross_entropy(c);
    case DTL_BI_MSE:
    case DTL_BI_BCE_WITH_LOGITS:
        return rule_same_shape_loss(c);
    case DTL_BI_ACCURACY:
        return count_arg(c, 1, 1) ? cfg(c, DTL_TYPE_METRIC) : err_type(c);
    case DTL_BI_TAKE:
        return rule_take(c);
    case DTL_BI_STACK:
        return rule_stack(c);
    case DTL_BI_CAUSAL_MASK:
        return rule_causal_mask(c);
    case DTL_BI_MASKED_FILL:
        return rule_masked_fill(c);
    case DTL_BI_BATCH_NORM:
        return rule_batch_norm(c);
    case DTL_BI_LAYER_NORM:
        return rule_layer_norm(c);
    case DTL_BI_SPLIT:
        return rule_split(c);
    case DTL_BI_NORMAL:
        return range_arg(c, 1, GT0) ? cfg(c, DTL_TYPE_INIT) : err_type(c);
    case DTL_BI_UNIFORM: {
        double lo, hi;
        if (dtl_type_num_const(c->types[0], &lo) && dtl_type_num_const(c->types[1], &hi) &&
            !(lo < hi)) {
            dtl_diag_error(c->diags, c->at, "uniform: 'low' must be less than 'high', found "
                           "low = %s, high = %s", dtl_double_print(c->arena, lo),
                           dtl_double_print(c->arena, hi));
            return err_type(c);
        }
        return cfg(c, DTL_TYPE_INIT);
    }
    case DTL_BI_ZEROS: case DTL_BI_ONES: case DTL_BI_CONSTANT:
    case DTL_BI_GLOROT_UNIFORM: case DTL_BI_GLOROT_NORMAL: case DTL_BI_XAVIER_UNIFORM:
    case DTL_BI_XAVIER_NORMAL: case DTL_BI_HE_UNIFORM: case DTL_BI_HE_NORMAL:
    case DTL_BI_KAIMING_UNIFORM: case DTL_BI_KAIMING_NORMAL:
        return cfg(c, DTL_TYPE_INIT);
    case DTL_BI_SGD: {
        bool ok = range_arg(c, 0, GT0);
        ok = range_arg(c, 1, GE0) && ok;
        ok = range_arg(c, 3, GE0) && ok;
        double m;
        if (ok && c->types[2]->u.b.known && c->types[2]->u.b.v &&
            dtl_type_num_const(c->types[1], &m) && m == 0) {
            dtl_diag_error(c->diags, arg_at(c, 2), "sgd: nesterov needs momentum > 0");
            ok = false;
        }
        return ok ? cfg(c, DTL_TYPE_OPTIMIZER) : err_type(c);
    }
    case DTL_BI_ADAM:
    case DTL_BI_ADAMW: {
        bool ok = range_arg(c, 0, GT0);
        ok = range_arg(c, 1, IN01) && ok;
        ok = range_arg(c, 2, IN01) && ok;
        ok = range_arg(c, 3, GT0) && ok;
        ok = range_arg(c, 4, GE0) && ok;
        return ok ? cfg(c, DTL_TYPE_OPTIMIZER) : err_type(c);
    }
    case DTL_BI_IDX:
    case DTL_BI_NPY:
    case DTL_BI_CSV:
    case DTL_BI_TEXT: {
        /* scale: idx's second parameter, npy's and csv's fifth; text has none */
        bool ok = b->id == DTL_BI_TEXT || range_arg(c, b->id == DTL_BI_IDX ? 1 : 4, GT0);
        for (unsigned i = 0; i < b->nparams; i++) {
            const dtl_type *t = c->types[i];
            if (t->kind == DTL_TYPE_STR && t->u.s.bytes && t->u.s.len == 0 && c->args[i] &&
                !((b->id == DTL_BI_CSV || b->id == DTL_BI_TEXT) && i == 2)) {
                dtl_diag_error(c->diags, arg_at(c, i), "%s: '%s' must not be empty", b->name,
                               b->params[i].name);
                ok = false;
            }
            if (t->kind == DTL_TYPE_STR && t->u.s.bytes && memchr(t->u.s.bytes, 0, t->u.s.len)) {
                dtl_diag_error(c->diags, arg_at(c, i), "%s: '%s' must not contain a NUL byte",
                               b->name, b->params[i].name);
                ok = false;
            }
        }
        int64_t col;
        if (b->id == DTL_BI_CSV && dtl_type_int_const(c->types[1], &col) && col < -1) {
            dtl_diag_error(c->diags, arg_at(c, 1), "csv: 'label' column index must be >= 0 "
                           "(or -1: the last column), found %" PRId64, col);
            ok = false;
        }
        double frac;
        if (b->id == DTL_BI_CSV && c->types[2]->kind != DTL_TYPE_STR &&
            dtl_type_num_const(c->types[2], &frac) && !(frac > 0 && frac < 1)) {
            dtl_diag_error(c->diags, arg_at(c, 2), "csv: 'test' is a file or the fraction of "
                           "rows held out, in (0, 1); found %s",
                           dtl_value_print(c->arena, c->types[2], c->from));
            ok = false;
        }
        if (b->id == DTL_BI_CSV)
            ok = count_arg(c, 5, 0) && ok;
        if (b->id == DTL_BI_TEXT) {
            ok = count_arg(c, 1, 1) && ok;
            ok = count_arg(c, 3, 0) && ok;
            const dtl_type *sep = c->types[2];
            if (sep->kind == DTL_TYPE_STR && sep->u.s.bytes &&
                memchr(sep->u.s.bytes, '\n', sep->u.s.len)) {
                dtl_diag_error(c->diags, arg_at(c, 2), "text: 'separator' is one line; it must "
                               "not contain a newline");
                ok = false;
            }
        }
        return ok ? cfg(c, DTL_TYPE_DATASET) : err_type(c);
    }
    case DTL_BI_DATA:
    case DTL_BI_TENSOR:
    case DTL_BI_PIPELINE:
        return rule_parallel(c);
    case DTL_BI_CPU:
        return cfg(c, DTL_TYPE_DEVICE);
    case DTL_BI_CUDA:
        return count_arg(c, 0, 0) ? cfg(c, DTL_TYPE_DEVICE) : err_type(c);
    case DTL_BI_SCHED_CONSTANT:
        return cfg(c, DTL_TYPE_SCHEDULE);
    case DTL_BI_STEP: {
        bool ok = count_arg(c, 0, 1);
        ok = range_arg(c, 1, IN0_1) && ok;
        return ok ? cfg(c, DTL_TYPE_SCHEDULE) : err_type(c);
    }
    case DTL_BI_COSINE: {
        bool ok = range_arg(c, 0, GE0);
        if (c->types[1]->kind != DTL_TYPE_NONE)
            ok = count_arg(c, 1, 1) && ok;
        return ok ? cfg(c, DTL_TYPE_SCHEDULE) : err_type(c);
    }
    case DTL_BI_CONV2D:
        return rule_conv2d(c);
    case DTL_BI_MAX_POOL2D:
    case DTL_BI_AVG_POOL2D:
        return rule_pool2d(c);
    case DTL_BI_COUNT:
        break;
    }
    return err_type(c);
}

void dtl_builtin_dtype_mismatch(dtl_arena *a, dtl_diags *d, const dtl_module *from,
                                dtl_span at, const dtl_expr *x, const dtl_type *tx,
                                const dtl_expr *y, const dtl_type *ty)
{
    const char *xn = dtl_operand_name(a, x, "the left operand");
    const char *yn = dtl_operand_name(a, y, "the right operand");
    dtl_diag_error(d, at, "dtype mismatch: %s is %s, %s is %s", xn,
                   dtl_type_print(a, tx, from), yn, dtl_type_print(a, ty, from));
    dtl_diag_note(d, y ? y->span : at, "use cast(%s, %s)", yn, dtl_dtype_name(tx->u.t.dtype));
}

bool dtl_builtin_init_fits(dtl_arena *a, dtl_diags *d, const dtl_module *from,
                           const dtl_type *init, const dtl_type *param, const char *pname,
                           dtl_span at)
{
    const dtl_builtin *b = init->u.cfg.builtin;
    const char *ps = dtl_type_print(a, param, from);
    if (param->kind != DTL_TYPE_TENSOR)
        return false;
    dtl_dtype dt = param->u.t.dtype;
    switch (b->id) {
    case DTL_BI_ZEROS:
    case DTL_BI_ONES:
        return true;
    case DTL_BI_CONSTANT: {
        const dtl_type *v = init->u.cfg.args[0];
        if (v->kind == DTL_TYPE_FLOAT && !dtl_dtype_is_float(dt)) {
            dtl_diag_error(d, at, "constant: '%s' is %s, so its value must be an int, found %s",
                           pname, ps, dtl_value_print(a, v, from));
            return false;
        }
        return true;
    }
    default:
        break;
    }
    if (!dtl_dtype_is_float(dt)) {
        dtl_diag_error(d, at, "%s() draws random floats; '%s' is %s", b->name, pname, ps);
        return false;
    }
    if (b->id != DTL_BI_NORMAL && b->id != DTL_BI_UNIFORM && param->u.t.rank < 2) {
        dtl_diag_error(d, at, "%s() needs a param of rank 2 or more (it uses fan-in and "
                       "fan-out); '%s' is %s", b->name, pname, ps);
        dtl_diag_note(d, at, "use zeros(), normal() or uniform() for a vector");
        return false;
    }
    return true;
}
