/* compiler/repl.h — `dtlc repl`: the interactive session.
 *
 * Contract: dtl_repl_run reads input (a terminal: line editing, history, completion and
 * prompts; a pipe or a file: the same session without prompts or editing), evaluates it and
 * writes results to o->out and diagnostics to o->err, until end of input or :quit. It owns
 * everything it allocates and releases it on every path. The session is deterministic: the
 * same input and seed give the same output byte for byte (except :time's measurements).
 * Returns the exit status: 0, or 1 when input that was not a terminal had errors.
 *
 * What a session is (docs/repl.md): the declarations typed or loaded so far (use, model, fn,
 * dataset, train, lets of host values and model instances), kept as source and checked
 * again as one module at every input, plus the tensors computed at the prompt (`let a =
 * randn(3)`, `a = a * 2`), kept as values. A bare expression is evaluated and printed. An
 * input with errors changes nothing.
 */
#ifndef DTL_REPL_H
#define DTL_REPL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct dtl_repl_opts {
    const char *const *includes;   /* -I directories for `use` */
    size_t nincludes;
    const char *const *files;      /* loaded first, as by :load */
    size_t nfiles;
    bool color;                    /* color diagnostics (and prompts) */
    bool seed_set;
    uint64_t seed;                 /* the session's seed (random constructors, instances'
                                      initial params: 0 when not set), and training's as
                                      `dtlc run --seed` (else the train block's, else 0) */
    const char *data_dir;          /* as `dtlc run --data` */
    const char *backend;           /* NULL: llvm when this build has it, else ref */
    FILE *in, *out, *err;          /* NULL: stdin, stdout, stderr */
    int interactive;               /* -1: when `in` is a terminal; 0 or 1: forced */
} dtl_repl_opts;

void dtl_repl_opts_default(dtl_repl_opts *o);
int dtl_repl_run(const dtl_repl_opts *o);

#endif
