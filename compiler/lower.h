/* compiler/lower.h — lowering: from a checked train block to graphs (compiler/graph.h).
 *
 * Contract: lowering reads the checked module (lang/check.h) and never changes it. It binds
 * every size: the model is instantiated with its constructor arguments, every fn is inlined
 * with its symbolic dims bound (the train block's B to the batch size), every host value is
 * folded. Three graphs come out of one train block:
 *
 *   STEP   inputs "x" (the batch's features, f32[batch, …]) and "y" (i64[batch] labels, or
 *          as the data set types it: f32[batch] targets, i64[batch, context] text); the
 *          model's params as PARAM nodes named by dotted path ("fc1.w", "enc.fc1.w"), in
 *          declaration order, depth first, with their initializers; the loss (output
 *          DTL_OUT_LOSS "loss"); the gradients (compiler/autodiff.h) and the optimizer's
 *          update (compiler/optim.h: DTL_OUT_PARAM and DTL_OUT_STATE outputs, and "lr",
 *          DTL_OUT_VALUE, the f64 learning rate of this update), with the train block's schedule,
 *          warmup and clip. Dropout draws its mask from
 *          the INPUT "step" (i64 scalar, 1 for the first update), one Philox stream per
 *          dropout site, dtl_rng_stream_id("dropout", k) for the k-th in the graph. A
 *          `cosine` schedule without `steps` adds the INPUT "total_steps" (i64 scalar: the
 *          updates of the whole run, epochs x steps per epoch), which the runner binds.
 *   EVAL   the same inputs and params; outputs "loss" (DTL_OUT_LOSS: the loss expression's
 *          value on the batch as written — for the builtin losses the MEAN over the batch,
 *          so the runner weights each batch's value by its row count) and, when the train
 *          block says evaluate = accuracy(…), "correct" (DTL_OUT_VALUE, an i64 scalar: how
 *          many rows have argmax(forward(x), axis 1) == y). Dropout is the identity; nothing
 *          is updated.
 *   INFER  input "x" only; output "y" (DTL_OUT_VALUE) = the model's forward(x). Dropout is
 *          the identity.
 * and, for data-parallel training (docs/distributed.md), STEP cut in two where the gradients
 * are averaged over ranks:
 *   GRAD   STEP's inputs and params, dropout included; outputs "loss" (DTL_OUT_LOSS, the
 *          mean over this graph's batch) and one DTL_OUT_VALUE "grad.<param>" per param (its
 *          gradient; a zero constant for a param the loss does not reach), in reverse
 *          declaration order (the order the backward pass finishes them). No param is
 *          updated; states the forward pass updates (batch_norm's running statistics) keep
 *          their DTL_OUT_PARAM outputs, as in STEP.
 *   UPDATE inputs "grad.<param>" (each of its param's dtype and shape) and "step" (and
 *          "total_steps" when the schedule needs it), no x or y; the same params; STEP's
 *          optimizer, schedule and clip applied to those gradients: the same DTL_OUT_PARAM,
 *          DTL_OUT_STATE and "lr" outputs. GRAD then UPDATE on one batch computes what STEP
 *          computes.
 * The three graphs declare the same params, with the same names, shapes and initializers,
 * in the same order, so one set of weights serves all three.
 *
 * A model's `state`s (lang: `state running_mean: f32[n] = zeros()`) are PARAM nodes too,
 * among the params in declaration order, so the store, checkpoints and --load treat them as
 * weights; but they are not differentiated and the optimizer never sees them (nor do GRAD's
 * "grad.<param>" outputs). In STEP and GRAD, batch_norm normalizes with the batch's
 * statistics and adds one DTL_OUT_PARAM output per running statistic it is given, (1 - m) *
 * running + m * batch (a state updated twice in one graph chains the updates); in EVAL and
 * INFER it reads them.
 *
 * Errors are diagnostics in ctx->diags, with places where a place is to blame: sizes the
 * checker could only see symbolically and that do not work out at this batch size (a
 * reshape whose count is wrong, an index out of range, a dropout p out of [0, 1)), things
 * not lowered yet ("… is not supported by lowering yet"), a graph too large, out of memory.
 * On error the functions return false and leave no graph allocated. They never abort on
 * any checked input. They refuse (with an error) to lower when ctx holds errors already:
 * the checker's annotations are then incomplete. Limits: evaluation nests at most 2000
 * levels (expressions within inlined calls), a graph has at most 2^18 nodes before
 * differentiation, a tensor at most 2^48 elements and rank 8.
 *
 * Lifetimes: graphs own their memory (dtl_graph_free, or dtl_lowered_free for all three);
 * strings in dtl_lowered (data names and paths) point into ctx's arena and live as long as
 * ctx. The run-time settings (data, epochs, evaluate, seed, optimizer) are decoded into
 * dtl_lowered here, so the runner (compiler/run.c) needs nothing from the checker.
 */
#ifndef DTL_LOWER_H
#define DTL_LOWER_H

#include <stdbool.h>
#include <stdint.h>

#include "../lang/check.h"
#include "../lang/ctx.h"
#include "graph.h"
#include "optim.h"

typedef enum dtl_lower_kind {
    DTL_LOWER_STEP,      /* forward + loss + backward + update */
    DTL_LOWER_EVAL,      /* forward + loss (+ correct count) */
    DTL_LOWER_INFER,     /* forward only */
    DTL_LOWER_GRAD,      /* forward + loss + backward: STEP's first half (data parallel) */
    DTL_LOWER_UPDATE,    /* the optimizer on given gradients: STEP's second half */
} dtl_lower_kind;

typedef struct dtl_lower_opts {
    int64_t batch;       /* the batch size B is bound to; 0: the train block's `batch` */
    /* The dtype policy: DTL_DTYPE_F32 (or 0, the default) keeps dtypes as written;
     * DTL_DTYPE_F64 computes every f32 of the program in f64 (params, x, literals, casts,
     * one_hot) — for gradient checks against finite differences. Others are refused. */
    dtl_dtype compute;
    /* dtl_lower_train: GRAD and UPDATE instead of STEP (its `step` is left empty), for data
     * parallel training, where the gradients are averaged over ranks between the two. */
    bool split_step;
    /* GRAD as rank shard_rank's share (batch rows) of a global batch of batch × shard_world
     * rows (when shard_world > 1): dropout along the batch takes its mask from the global
     * batch's, rows shard_rank × batch …, so the ranks together drop what one graph with the
     * global batch drops; a dropout on a tensor whose first axis is not the batch draws a
     * mask of this rank's own. */
    int shard_rank, shard_world;
    /* The precision of the f32 matrix products (docs/training.md "Mixed precision"):
     * DTL_PREC_DEFAULT (0) takes the train block's `precision` (f32 when it has none); else
     * this one (dtlc run --precision). With compute = f64 it changes nothing. */
    dtl_precision precision;
} dtl_lower_opts;

/* Where the examples come from: a dataset split, decoded from idx(…) / npy(…) / csv(…). */
typedef enum dtl_lower_data_kind {
    DTL_LDATA_IDX, DTL_LDATA_NPY, DTL_LDATA_CSV, DTL_LDATA_TEXT
} dtl_lower_data_kind;

typedef struct dtl_lower_data {
    dtl_lower_data_kind kind;
    const char *dataset;     /* the dataset's name in the source ("fashion") */
    const char *dir;         /* directory of the file that declares it ("" for the cwd),
                                for the relative paths of npy and csv */
    bool test;               /* the .test split (else .train) */
    double scale;            /* features are multiplied by it */
    const char *name;        /* IDX: the dataset to look up under --data / $DTL_DATA */
    const char *x, *y;       /* NPY: the split's features and labels (.npy paths) */
    const char *path;        /* CSV: the split's file ("" when a test split has none) */
    const char *label;       /* CSV: the label column by header name, or NULL … */
    int64_t label_index;     /* … by index from 0 */
    bool header;             /* CSV: the first line names the columns */
    double test_fraction;    /* CSV: > 0: the test split is this fraction of path's rows,
                                held out (runtime/data.h dtl_data_holdout) */
    int64_t skip;            /* CSV: lines skipped before the header */
    bool standardize;        /* CSV: features standardized with the train split's stats */
    bool regression;         /* CSV: float targets (y is f32[B]) */
    int64_t context;         /* TEXT (path: the file or directory): window length */
    const char *separator;   /* TEXT: the document separator line ("" none) */
    int64_t test_every;      /* TEXT: every test_every-th document is a test one (0: none) */
} dtl_lower_data;

/* A train block lowered: the three graphs and what the runner needs besides. */
typedef struct dtl_lowered {
    dtl_graph step, eval, infer;
    dtl_graph grad, update;  /* with opts->split_step (then step is empty); else empty */
    bool split;              /* opts->split_step was set */
    bool has_infer;          /* the model's forward takes x alone (else infer is empty) */
    bool has_accuracy;       /* eval has the "correct" output */
    int64_t batch;           /* as bound */
    int64_t epochs;
    int64_t seed;            /* the train block's seed, or -1 when not given */
    dtl_lower_data data;     /* the training split */
    dtl_lower_data eval_data;/* the split of evaluate = accuracy(split); valid if has_accuracy */
    dtl_opt_cfg optim;       /* the optimizer, as applied in the step graph
                                (sched.total_from_run: from the input "total_steps") */
    uint32_t nparams;        /* params, in the graphs' order */
    dtl_precision precision; /* of the matrix products, as lowered: F32, TF32 or BF16 */
} dtl_lowered;

/* The train block named name in m (NULL: the first one), or NULL if there is none. */
const dtl_train *dtl_lower_find_train(const dtl_module *m, const char *name);

/* The precision train block t is lowered with under opts (which may be NULL): F32, TF32
 * or BF16, never DEFAULT. */
dtl_precision dtl_lower_precision(const dtl_train *t, const dtl_lower_opts *opts);

/* Builds one graph of train block t into g (which this function initializes; on failure g
 * is left freed). The module of t must have been checked without errors. */
bool dtl_lower_graph(dtl_ctx *ctx, const dtl_train *t, dtl_lower_kind kind,
                     const dtl_lower_opts *opts, dtl_graph *g);

/* `dtlc repl`: expression e of module m (checked without errors, possibly with the hooks of
 * lang/check.h) into g (initialized here; freed on failure). A tensor value is the output
 * "result" (DTL_OUT_VALUE); other values (host numbers, instances) give no output, but the
 * params of every instance met are in g. Names the hooks bound to the session's tensors
 * become INPUTs of those names; `let d = nn.Dense(3, 2)` in m is an instance whose params are
 * "d.w", "d.b"; the tensor constructors (compiler/repl_ctors.h) take their random streams'
 * position from the INPUT "repl.step". Dropout is the identity. Only opts->compute is read
 * (opts may be NULL). Errors are diagnostics in ctx, as for the train graphs. */
bool dtl_lower_expr(dtl_ctx *ctx, const dtl_module *m, const dtl_expr *e,
                    const dtl_lower_opts *opts, dtl_graph *g);

/* All three graphs and the settings. On failure nothing is left allocated in out. */
bool dtl_lower_train(dtl_ctx *ctx, const dtl_train *t, const dtl_lower_opts *opts,
                     dtl_lowered *out);
void dtl_lowered_free(dtl_lowered *l);
/* The training graph with x, y and the params: step, or grad when split. */
const dtl_graph *dtl_lowered_train_graph(const dtl_lowered *l);

#endif
