/* compiler/run.h — `dtlc run`: training and inference of a checked train block.
 *
 * Contract: dtl_run lowers the train block (compiler/lower.h) into its step, eval and infer
 * graphs, plans them on one backend over one parameter store (runtime/exec.h), and then
 * either trains (loads the data, runs the epochs, evaluates, writes the summary lines,
 * metrics, progress and checkpoints) or infers (reads X.npy, writes Y.npy; or, with
 * sample > 0, generates text from a byte-level language model and prints it on `out`). It owns nothing
 * after it returns: graphs, plans, store, data and files are released on every path.
 *
 * Output: one summary line per epoch on `out` (stdout); progress on `progress_out` (stderr):
 * a redrawn bar when that is a terminal, else a plain line every few seconds; notes ("resumed
 * from …", "saved …") on progress_out too.
 *
 * Determinism: everything random derives from the seed through Philox streams that depend
 * only on what they are for: the initial weights on (seed, param name), the order of epoch e
 * on (seed, e), dropout on (seed, step). A checkpoint records the step, the epoch, the
 * position in the epoch and the seed, so a run resumed from it, at an epoch boundary or in
 * the middle of an epoch, computes exactly (bit for bit) what the uninterrupted run computes.
 *
 * Errors: lowering problems are diagnostics in ctx->diags (returns DTL_RUN_DIAG); everything
 * else (options that do not fit, a missing data set, a corrupt or mismatched checkpoint, a
 * failed write) fills err and returns DTL_RUN_FAILED or DTL_RUN_USAGE. Nothing aborts on user
 * input. Checkpoints are written atomically (runtime/safetensors.h): a run killed at any
 * moment leaves the previous checkpoint or the new one, never a torn file.
 */
#ifndef DTL_RUN_H
#define DTL_RUN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../lang/check.h"
#include "../lang/ctx.h"
#include "../runtime/err.h"
#include "graph.h"

typedef enum dtl_run_progress {
    DTL_PROGRESS_AUTO,   /* a bar on a terminal, else plain lines */
    DTL_PROGRESS_BAR,
    DTL_PROGRESS_PLAIN,
    DTL_PROGRESS_NONE,
} dtl_run_progress;

typedef struct dtl_run_opts {
    const char *file;          /* the source file, for checkpoint metadata and messages */
    int64_t epochs;            /* 0: the train block's */
    int64_t batch;             /* 0: the train block's */
    const char *data_dir;      /* NULL: $DTL_DATA, then /usr/share/datasets */
    bool seed_set;
    uint64_t seed;             /* when seed_set; else the train block's, else 0 */
    const char *backend;       /* NULL or "ref" */
    const char *metrics;       /* JSON Lines file, or NULL */
    const char *save;          /* checkpoint written at the end (and every ckpt_every) */
    const char *resume;        /* checkpoint to continue from */
    const char *load;          /* weights to start from (training) or to infer with */
    int64_t ckpt_every;        /* 0: only at the end */
    bool ckpt_in_epochs;       /* ckpt_every counts epochs, else steps */
    int64_t limit_train;       /* -1: all rows */
    int64_t limit_test;        /* -1: all rows */
    int64_t max_steps;         /* -1: no limit; else stop when the step counter reaches it */
    bool no_shuffle;           /* epochs in file order */
    bool f64;                  /* compute in f64 (lowering's dtype policy) */
    dtl_precision precision;   /* --precision; DTL_PREC_DEFAULT: the train block's */
    dtl_run_progress progress;
    double progress_every;     /* seconds between plain progress lines; 0: 10 */
    bool timings;              /* --timings: where the time to the first step went (stderr) */
    double start_time;         /* dtl_progress_now() when dtlc started; 0: unknown */
    bool infer;
    const char *input;         /* --infer: X.npy */
    const char *output;        /* --infer: Y.npy */
    int64_t sample;            /* --infer --sample N: generate N bytes (0: read --input) */
    const char *prompt;        /* --sample: the text continued (NULL: "\n") */
    double temperature;        /* --sample: when temperature_set (else 1); 0: greedy */
    bool temperature_set;
    const char *train_name;    /* --train NAME (dtlc picks the block; NULL: the first) */
} dtl_run_opts;

void dtl_run_opts_default(dtl_run_opts *o);

typedef enum dtl_run_status {
    DTL_RUN_OK = 0,
    DTL_RUN_DIAG = 1,      /* diagnostics in ctx->diags */
    DTL_RUN_FAILED = 2,    /* err: data, checkpoint, numerical or write failure */
    DTL_RUN_USAGE = 3,     /* err: options that do not fit this model or each other */
} dtl_run_status;

/* Runs train block t of a module checked without errors. */
dtl_run_status dtl_run(dtl_ctx *ctx, const dtl_train *t, const dtl_run_opts *o, FILE *out,
                       FILE *progress_out, dtl_err *err);

/* ---- stepping a train block one update at a time (dtlc repl's :train, :eval, :save) ----
 * dtl_trainer_new does what dtl_run does before its first step: lowers t, loads the data
 * (the limits, data_dir, batch, seed, backend, f64 and no_shuffle of o are read; save, resume,
 * metrics, progress and infer are not), and plans the step and eval graphs over a new store.
 * Then each dtl_trainer_step is one update on the next batch, in dtl_run's order (epoch e's
 * order from (seed, e); an epoch rolls over to the next by itself), so N steps here compute
 * what `dtlc run --steps N` computes. ctx and t must outlive the trainer (a short last test
 * batch is lowered when first met). On failure: NULL with *st = DTL_RUN_DIAG (diagnostics in
 * ctx) or another status and err set. */
typedef struct dtl_trainer dtl_trainer;
struct dtl_store;

dtl_trainer *dtl_trainer_new(dtl_ctx *ctx, const dtl_train *t, const dtl_run_opts *o,
                             dtl_run_status *st, dtl_err *err);
/* One update; *loss is the batch's loss. A non-finite loss is an error (nothing changes). */
bool dtl_trainer_step(dtl_trainer *tr, double *loss, dtl_err *err);
/* The test split's loss and accuracy, as dtl_run reports them after an epoch; an error when
 * the train block has no `evaluate` (or its test split no file). */
bool dtl_trainer_eval(dtl_trainer *tr, double *loss, double *acc, dtl_err *err);
/* A checkpoint of the position, params and optimizer state (what `dtlc run --resume` reads). */
bool dtl_trainer_save(dtl_trainer *tr, const char *path, dtl_err *err);
/* Plans the graphs again on backend `name` ("ref" …), keeping the store and the position. */
bool dtl_trainer_set_backend(dtl_trainer *tr, const char *name, dtl_err *err);
int64_t dtl_trainer_step_count(const dtl_trainer *tr);   /* updates done */
int64_t dtl_trainer_epoch(const dtl_trainer *tr);        /* 0-based epoch in progress */
int64_t dtl_trainer_steps_per_epoch(const dtl_trainer *tr);
struct dtl_store *dtl_trainer_store(dtl_trainer *tr);
const dtl_graph *dtl_trainer_step_graph(const dtl_trainer *tr);
void dtl_trainer_free(dtl_trainer *tr);   /* NULL is fine */

#endif
