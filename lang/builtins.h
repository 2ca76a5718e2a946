/* lang/builtins.h — the builtin functions of dtl: one table, with each one's parameters,
 * defaults, one-line documentation and shape rule.
 *
 * Contract: the table is constant data (no state). The checker (lang/check.c) binds a
 * call's arguments to the parameters (positional and named, defaults, unknown and missing
 * names) and then calls dtl_builtin_check, which checks each argument against its
 * parameter's kind and applies the builtin's rule: it returns the result type, or
 * DTL_TYPE_ERROR after reporting why. Where a builtin may be used (initializers only as a
 * param's initializer, optimizers only as a train block's optimizer, …) is the checker's
 * business, by dtl_builtin_kind. docs/language.md is written from this table.
 *
 * Names are unique within a kind but not across kinds: `constant` is both an initializer
 * (constant(v)) and a learning-rate schedule (constant()). dtl_builtin_lookup finds the
 * first row (the initializer); where a schedule is expected the checker asks
 * dtl_builtin_lookup_kind for the schedule of that name.
 */
#ifndef DTL_BUILTINS_H
#define DTL_BUILTINS_H

#include <stdbool.h>

#include "ast.h"
#include "types.h"

typedef enum dtl_builtin_kind {
    DTL_BUILTIN_CONST,       /* a named constant (`none`) */
    DTL_BUILTIN_OP,          /* a tensor function */
    DTL_BUILTIN_LOSS,        /* a loss: tensors to a scalar */
    DTL_BUILTIN_METRIC,      /* only as a train block's `evaluate` */
    DTL_BUILTIN_INIT,        /* only as a param's initializer */
    DTL_BUILTIN_OPTIMIZER,   /* only as a train block's `optimizer` */
    DTL_BUILTIN_DATASET,     /* only as `dataset NAME = …` */
    DTL_BUILTIN_PARALLEL,    /* only in a train block's `parallel` */
    DTL_BUILTIN_DEVICE,      /* only as a train block's `device` */
    DTL_BUILTIN_SCHEDULE,    /* only as a train block's `schedule` */
} dtl_builtin_kind;

/* What an argument must be. */
typedef enum dtl_bparam_kind {
    DTL_BP_TENSOR,           /* a tensor of a numeric dtype */
    DTL_BP_FLOAT_TENSOR,     /* a tensor of a float dtype */
    DTL_BP_INT_TENSOR,       /* a tensor of an integer dtype */
    DTL_BP_BOOL_TENSOR,      /* a bool tensor (a mask) */
    DTL_BP_OPERAND,          /* a tensor or a host number */
    DTL_BP_INT,              /* a host int, possibly symbolic (`hidden`) */
    DTL_BP_CONST_INT,        /* a host int known now (an axis, a count) */
    DTL_BP_CONST_INT_OR_NONE,
    DTL_BP_NUMBER,           /* a host int or float */
    DTL_BP_BOOL,             /* a host bool */
    DTL_BP_STR,              /* a string */
    DTL_BP_STR_OR_INT,       /* a string or a host int (a csv column) */
    DTL_BP_DTYPE,            /* a dtype: f32, i64, … */
    DTL_BP_SPLIT,            /* a dataset split: ds.train, ds.test */
    DTL_BP_SHAPE,            /* a list of host ints, one may be -1: [B, -1] */
    DTL_BP_PERM_OR_NONE,     /* a list of constant ints (a permutation), or none */
    DTL_BP_TENSORS,          /* a list of tensors: [a, b] */
    DTL_BP_STR_OR_NUMBER,    /* a string or a host number (csv's test: a file or a fraction) */
    DTL_BP_INT_PAIR,         /* a host int (both axes) or a pair [h, w] of host ints: stride */
    DTL_BP_INT_PAIR_OR_NONE, /* the same, or none (a pooling stride: the kernel) */
} dtl_bparam_kind;

typedef struct dtl_bparam {
    const char *name;
    dtl_bparam_kind kind;
    const char *deflt;       /* the default as source ("-1", "none", "1e-3"); NULL: required */
} dtl_bparam;

typedef enum dtl_builtin_id {
    DTL_BI_NONE,
    DTL_BI_RELU, DTL_BI_SIGMOID, DTL_BI_TANH, DTL_BI_EXP, DTL_BI_LOG, DTL_BI_SQRT, DTL_BI_ABS,
    DTL_BI_GELU, DTL_BI_SILU, DTL_BI_SOFTPLUS, DTL_BI_SIN, DTL_BI_COS,
    DTL_BI_SOFTMAX, DTL_BI_LOG_SOFTMAX,
    DTL_BI_SUM, DTL_BI_MEAN, DTL_BI_MAX, DTL_BI_MIN, DTL_BI_ARGMAX,
    DTL_BI_RESHAPE, DTL_BI_TRANSPOSE, DTL_BI_CONCAT, DTL_BI_WHERE, DTL_BI_CAST, DTL_BI_ONE_HOT,
    DTL_BI_DROPOUT, DTL_BI_MATMUL,
    DTL_BI_CROSS_ENTROPY, DTL_BI_MSE, DTL_BI_BCE_WITH_LOGITS,
    DTL_BI_ACCURACY,
    DTL_BI_ZEROS, DTL_BI_ONES, DTL_BI_CONSTANT, DTL_BI_NORMAL, DTL_BI_UNIFORM,
    DTL_BI_GLOROT_UNIFORM, DTL_BI_GLOROT_NORMAL, DTL_BI_XAVIER_UNIFORM, DTL_BI_XAVIER_NORMAL,
    DTL_BI_HE_UNIFORM, DTL_BI_HE_NORMAL, DTL_BI_KAIMING_UNIFORM, DTL_BI_KAIMING_NORMAL,
    DTL_BI_SGD, DTL_BI_ADAM, DTL_BI_ADAMW,
    DTL_BI_IDX, DTL_BI_NPY, DTL_BI_CSV,
    DTL_BI_DATA, DTL_BI_TENSOR, DTL_BI_PIPELINE,
    DTL_BI_CPU, DTL_BI_CUDA,
    DTL_BI_SCHED_CONSTANT, DTL_BI_STEP, DTL_BI_COSINE,
    /* tensor functions added with the issue 7 layers (H-norm) */
    DTL_BI_TAKE, DTL_BI_STACK, DTL_BI_CAUSAL_MASK, DTL_BI_MASKED_FILL, DTL_BI_BATCH_NORM,
    DTL_BI_LAYER_NORM, DTL_BI_SPLIT,
    /* data sets added with issue 7 (H-data) */
    DTL_BI_TEXT,
    /* convolution and pooling (issue 7, H-conv) */
    DTL_BI_CONV2D, DTL_BI_MAX_POOL2D, DTL_BI_AVG_POOL2D,
    DTL_BI_COUNT
} dtl_builtin_id;

#define DTL_BUILTIN_MAX_PARAMS 8

typedef struct dtl_builtin {
    const char *name;
    dtl_builtin_id id;
    dtl_builtin_kind kind;
    unsigned nparams;
    dtl_bparam params[DTL_BUILTIN_MAX_PARAMS];
    const char *doc;         /* one line: what it computes and returns */
} dtl_builtin;

/* The table (in dtl_builtin_id order) and its length. */
const dtl_builtin *dtl_builtin_table(size_t *n);
const dtl_builtin *dtl_builtin_lookup(const char *name);   /* NULL if none */
/* The builtin of that name and kind, or NULL. */
const dtl_builtin *dtl_builtin_lookup_kind(const char *name, dtl_builtin_kind kind);
/* The default of p as a host value (NONE for "none"); NULL if p is required. */
dtl_type *dtl_builtin_default(dtl_arena *a, const dtl_bparam *p);
/* "a float tensor", "a constant int", … (for messages and docs). */
const char *dtl_bparam_kind_text(dtl_bparam_kind k);
/* "op", "loss", "initializer", … */
const char *dtl_builtin_kind_name(dtl_builtin_kind k);

/* A call being checked, its arguments bound to parameters by the checker. */
typedef struct dtl_bcall {
    dtl_arena *arena;
    dtl_diags *diags;
    const struct dtl_module *from;         /* for printing types */
    const dtl_builtin *b;
    const dtl_expr *call;                  /* the call; NULL for a bare name (`data`, `cpu`) */
    dtl_span at;                           /* where to report about the call as a whole */
    const dtl_expr *args[DTL_BUILTIN_MAX_PARAMS];   /* NULL: not given (the default) */
    dtl_type *types[DTL_BUILTIN_MAX_PARAMS];        /* the argument's type or the default's */
} dtl_bcall;

/* Checks the arguments and applies the rule: the result type, or DTL_TYPE_ERROR (reported).
 * An argument whose type is DTL_TYPE_ERROR makes the result an error silently. */
dtl_type *dtl_builtin_check(dtl_bcall *c);

/* Does the initializer init (a DTL_TYPE_INIT) suit a param of type param? Reports why not
 * at `at` (naming the param pname) and returns false. */
bool dtl_builtin_init_fits(dtl_arena *a, dtl_diags *d, const struct dtl_module *from,
                           const dtl_type *init, const dtl_type *param, const char *pname,
                           dtl_span at);

/* The matmul rule, for `a @ b` and matmul(a, b): numpy semantics (1-D and 2-D operands,
 * batched with broadcast batch dims). whole is the span to blame. */
dtl_type *dtl_builtin_matmul(dtl_arena *a, dtl_diags *d, const struct dtl_module *from,
                             dtl_span whole, const dtl_expr *x, const dtl_type *tx,
                             const dtl_expr *y, const dtl_type *ty);

/* Reports "dtype mismatch: x is f32[B, 784], y is f64[B, 784]" at `at`, with a note
 * suggesting cast(y, f32). */
void dtl_builtin_dtype_mismatch(dtl_arena *a, dtl_diags *d, const struct dtl_module *from,
                                dtl_span at, const dtl_expr *x, const dtl_type *tx,
                                const dtl_expr *y, const dtl_type *ty);

/* How messages name an operand: its source ("fc1.w", "fc1(x)"), or `fallback` when that
 * is too long to read in one line. */
const char *dtl_operand_name(dtl_arena *a, const dtl_expr *e, const char *fallback);

#endif
