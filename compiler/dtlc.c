/* compiler/dtlc.c — the dtlc program: option parsing and command dispatch.
 *
 * All the work is done by libdtl; this file only turns a command line into calls. Two
 * tables describe the interface: `options` (every option, its argument and help line) and
 * `commands` (name, synopsis, description, examples, the options it accepts, its handler).
 * Help text, "unknown option" suggestions and dispatch all read those tables, so a new
 * command (run, graph, repl) is one row in `commands` plus its handler.
 *
 * Each input file is compiled in a dtl_ctx of its own; diagnostics go to stderr after each
 * file, emitted output to stdout or to -o FILE (written to a temporary file in FILE's
 * directory and renamed, so a failure never leaves half a file behind).
 *
 * Exit status: 0 clean (warnings allowed), 1 diagnostics, 2 usage or I/O errors. With
 * several files the worst status wins.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lang/check.h"
#include "../lang/ctx.h"
#include "../lang/parse.h"
#include "../lang/print.h"
#include "../runtime/fsutil.h"
#include "../runtime/progress.h"
#include "graph.h"
#include "lower.h"
#include "passes/passes.h"
#include "passes/fuse.h"
#include "launch.h"
#include "repl.h"
#include "run.h"
#ifdef HAVE_LLVM
#include "llvm/aot.h"
#include "llvm/llvm.h"
#endif

#if defined(DTL_VERSION)
#define DTLC_VERSION DTL_VERSION
#elif defined(PACKAGE_VERSION)
#define DTLC_VERSION PACKAGE_VERSION
#else
#define DTLC_VERSION "(unknown version)"
#endif

enum { EXIT_CLEAN = 0, EXIT_DIAG = 1, EXIT_USAGE = 2 };

/* ---- Options ---- */

typedef enum dtlc_opt_id {
    OPT_INCLUDE, OPT_WERROR, OPT_NO_WARN_UNUSED, OPT_MAX_ERRORS, OPT_COLOR, OPT_EMIT,
    OPT_BATCH, OPT_OUTPUT,
    /* run */
    OPT_EPOCHS, OPT_DATA, OPT_SEED, OPT_BACKEND, OPT_DTYPE, OPT_METRICS, OPT_SAVE, OPT_RESUME,
    OPT_LOAD, OPT_CKPT_EVERY, OPT_STEPS, OPT_LIMIT_TRAIN, OPT_LIMIT_TEST, OPT_NO_SHUFFLE,
    OPT_PROGRESS, OPT_INFER, OPT_INPUT, OPT_OUTPUT_LONG, OPT_DEVICE, OPT_TIMINGS,
    OPT_RANKS,
    OPT_SAMPLE, OPT_PROMPT, OPT_TEMPERATURE, OPT_TRAIN, OPT_PRECISION,
    OPT_HELP, OPT_COUNT
} dtlc_opt_id;
_Static_assert(OPT_COUNT <= 64, "options are bits of a uint64_t");

#define OPT_BIT(id) ((uint64_t)1 << (id))

typedef struct dtlc_option {
    dtlc_opt_id id;
    const char *name;   /* "-I", "--werror": short names take "-IDIR" too, long "--x=V" */
    const char *arg;    /* metavariable when it takes a value, else NULL */
    const char *help;
} dtlc_option;

static const dtlc_option options[] = {
    {OPT_INCLUDE, "-I", "DIR", "search DIR for `use` modules, before $DTL_PATH and the stdlib"},
    {OPT_WERROR, "--werror", NULL, "treat warnings as errors (exit status 1)"},
    {OPT_NO_WARN_UNUSED, "--no-warn-unused", NULL, "no warnings for unused names"},
    {OPT_MAX_ERRORS, "--max-errors", "N", "show at most N errors (default 50; 0: all)"},
    {OPT_COLOR, "--color", "WHEN", "color diagnostics: auto (default), always, never"},
    {OPT_EMIT, "--emit", "STAGE", "what to emit: one of the stages listed above"},
    {OPT_BATCH, "--batch", "N", "bind the batch dimension B to N (default: the train block's)"},
    {OPT_OUTPUT, "-o", "FILE", "write the output to FILE (default: standard output)"},
    {OPT_EPOCHS, "--epochs", "N", "train for N epochs in all (default: the train block's)"},
    {OPT_DATA, "--data", "DIR", "find data sets under DIR (default: $DTL_DATA, then "
     "/usr/share/datasets)"},
    {OPT_SEED, "--seed", "N", "seed of the initial weights, shuffles and dropout (default: "
     "the train block's, else 0)"},
#if defined HAVE_LLVM && defined HAVE_CUDA
    {OPT_BACKEND, "--backend", "NAME", "run on backend NAME: llvm (default), ref, cuda"},
#elif defined HAVE_LLVM
    {OPT_BACKEND, "--backend", "NAME", "run on backend NAME: llvm (default), ref"},
#elif defined HAVE_CUDA
    {OPT_BACKEND, "--backend", "NAME", "run on backend NAME: ref (default), cuda"},
#else
    {OPT_BACKEND, "--backend", "NAME", "run on backend NAME: ref (default)"},
#endif
    {OPT_DTYPE, "--dtype", "TYPE", "compute in f32 (default: as written) or f64"},
    {OPT_METRICS, "--metrics", "FILE", "write one JSON object per epoch to FILE (JSON Lines; --resume "
     "appends)"},
    {OPT_SAVE, "--save", "FILE", "write a checkpoint (safetensors) to FILE at the end"},
    {OPT_RESUME, "--resume", "FILE", "continue the run saved in checkpoint FILE"},
    {OPT_LOAD, "--load", "FILE", "start from (or, with --infer, use) the weights in FILE"},
    {OPT_CKPT_EVERY, "--checkpoint-every", "N", "also save every N steps, or every N epochs "
     "as Ne (1e)"},
    {OPT_STEPS, "--steps", "N", "stop when N steps (updates) are done in all"},
    {OPT_LIMIT_TRAIN, "--limit-train", "N", "use only the first N training examples"},
    {OPT_LIMIT_TEST, "--limit-test", "N", "use only the first N test examples"},
    {OPT_NO_SHUFFLE, "--no-shuffle", NULL, "take the training examples in file order"},
    {OPT_PROGRESS, "--progress", "WHEN", "progress on stderr: auto (default), bar, plain, "
     "none"},
    {OPT_INFER, "--infer", NULL, "infer instead of training: --load W --input X --output Y"},
    {OPT_INPUT, "--input", "FILE", "--infer: the features, a .npy file"},
    {OPT_OUTPUT_LONG, "--output", "FILE", "--infer: where the outputs go, a .npy file"},
    {OPT_DEVICE, "--device", "DEV", "cpu (the default backend) or cuda (--backend cuda)"},
    {OPT_TIMINGS, "--timings", NULL, "say on stderr where the time before the first step went"},
    {OPT_RANKS, "-n", "N", "run N ranks on this host, data parallel (docs/distributed.md)"},
    {OPT_SAMPLE, "--sample", "N", "--infer: generate N bytes from a language model (text data)"},
    {OPT_PROMPT, "--prompt", "TEXT", "--sample: the text to continue (default: a newline)"},
    {OPT_TEMPERATURE, "--temperature", "T", "--sample: divide the logits by T (default 1; "
     "0: greedy)"},
    {OPT_TRAIN, "--train", "NAME", "the train block named NAME (default: the first)"},
    {OPT_PRECISION, "--precision", "P", "matrix products in f32, tf32 or bf16 (default: the "
     "train block's, else f32)"},
    {OPT_HELP, "--help", NULL, "show this help (also -h)"},
};
_Static_assert(sizeof options / sizeof options[0] == OPT_COUNT, "one row per option");

typedef enum dtlc_color { COLOR_AUTO, COLOR_ALWAYS, COLOR_NEVER } dtlc_color;

/* What the command line said. */
typedef struct dtlc_opts {
    const char **includes;
    size_t nincludes;
    bool werror, no_warn_unused;
    bool max_errors_set;
    unsigned max_errors;
    bool color;             /* resolved: color the diagnostics */
    const char *emit;       /* compile: NULL when not given */
    int64_t batch;          /* compile, graph: 0 when not given */
    const char *output;     /* compile: NULL or "-" for stdout */
    const char **files;
    size_t nfiles;
    dtl_run_opts run;       /* run */
    int nranks;             /* run -n N; 0: not given */
    const char *argv0;
    const char **child_args;   /* run -n: the words after `run` but -n, --progress, --color */
    size_t nchild_args;
} dtlc_opts;

/* ---- Commands ---- */

typedef struct dtlc_command dtlc_command;
struct dtlc_command {
    const char *name;
    const char *synopsis;     /* after "dtlc NAME " */
    const char *summary;      /* one line for `dtlc --help` */
    const char *description;  /* paragraph(s) for `dtlc help NAME` */
    const char *examples;     /* lines, each "dtlc …" */
    uint64_t opts;            /* OPT_BIT()s accepted */
    int (*run)(const dtlc_command *cmd, dtlc_opts *o);
};

static int cmd_check(const dtlc_command *cmd, dtlc_opts *o);
static int cmd_compile(const dtlc_command *cmd, dtlc_opts *o);
static int cmd_graph(const dtlc_command *cmd, dtlc_opts *o);
static int cmd_run(const dtlc_command *cmd, dtlc_opts *o);
static int cmd_repl(const dtlc_command *cmd, dtlc_opts *o);
static int cmd_help(const dtlc_command *cmd, dtlc_opts *o);

#define DIAG_OPTS                                                                         \
    (OPT_BIT(OPT_INCLUDE) | OPT_BIT(OPT_WERROR) | OPT_BIT(OPT_NO_WARN_UNUSED) |           \
     OPT_BIT(OPT_MAX_ERRORS) | OPT_BIT(OPT_COLOR) | OPT_BIT(OPT_HELP))

static const dtlc_command commands[] = {
    {"check", "[options] FILE...", "parse and check files, report diagnostics",
     "Parses and checks each FILE (names, types, shapes) and the modules it uses, and\n"
     "prints diagnostics to standard error. Each FILE is checked on its own; '-' reads\n"
     "standard input.\n",
     "dtlc check examples/mnist_mlp.dtl\n"
     "dtlc check --werror -I mylib model.dtl other.dtl\n",
     DIAG_OPTS, cmd_check},
    {"compile", "[options] FILE --emit=STAGE [-o OUT] | FILE -o MODEL.o|MODEL.so",
     "compile a file and emit a stage, or native code to embed",
     "Compiles FILE up to STAGE and writes that stage to standard output or OUT:\n"
     "  ast    the parsed file printed back as canonical source (parsing only)\n"
     "  types  every binding with its inferred type (parsing and checking)\n"
     "  graph  the first train block's training step as a dataflow graph: forward pass,\n"
     "         loss, gradients and optimizer update, one node per line (--batch N binds\n"
     "         the batch dimension)\n"
     "  fold, cse, simplify, dce\n"
     "         the graph after that pass of the pipeline (constant folding, common\n"
     "         subexpression elimination, algebraic simplification, dead code\n"
     "         elimination), each run after the ones before it; see docs/compiler.md\n"
     "  fused  the graph after every pass, fused into kernels (loops) with its memory\n"
     "         plan: where each stored value lives, arena offsets, updates in place\n"
     "  llvm   the fused step as LLVM IR, optimized for this CPU: what the llvm backend\n"
     "         JIT-compiles (one function per kernel loop, and the step)\n"
     "  asm    the same as this CPU's assembly\n"
     "  obj, so\n"
     "         native code of the model's inference and training step for this CPU, as\n"
     "         an object file or a shared library (-o OUT is needed; with no --emit, an\n"
     "         OUT ending in .o or .so picks it), and OUT's name with .h: the C API to\n"
     "         call it from C; see docs/aot.md\n"
     "Diagnostics go to standard error; nothing is written when there are errors.\n",
     "dtlc compile model.dtl --emit=ast\n"
     "dtlc compile model.dtl --emit=types -o model.types\n"
     "dtlc compile model.dtl --emit=graph --batch 2\n"
     "dtlc compile model.dtl -o model.so      # and model.h\n",
     DIAG_OPTS | OPT_BIT(OPT_EMIT) | OPT_BIT(OPT_BATCH) | OPT_BIT(OPT_OUTPUT) |
         OPT_BIT(OPT_PRECISION), cmd_compile},
    {"graph", "[options] FILE [-o OUT]", "write a train block's step graph as Graphviz DOT",
     "Compiles the first train block of FILE to its training step graph (forward pass,\n"
     "loss, gradients, optimizer update) and writes it as Graphviz DOT to standard output\n"
     "or OUT: forward, loss, backward, update and metric nodes in different colours,\n"
     "params and inputs as boxes.\n",
     "dtlc graph examples/mnist_mlp.dtl -o mlp.dot\n"
     "dtlc graph --batch 4 model.dtl | dot -Tsvg > step.svg\n",
     DIAG_OPTS | OPT_BIT(OPT_BATCH) | OPT_BIT(OPT_OUTPUT), cmd_graph},
    {"run", "[options] FILE", "train a model (or infer with it)",
     "Trains the first train block of FILE (on the LLVM backend, JIT-compiled for this CPU, when\n"
     "the build has it, else on the reference backend): one summary line per\n"
     "epoch on standard output (train_loss, test_loss, test_accuracy, seconds, samples/s),\n"
     "progress on standard error (a bar on a terminal, else a line every 10 seconds).\n"
     "The same seed gives the same weights and metrics bit for bit; a run resumed from a\n"
     "checkpoint (--resume) goes on exactly as if it had not stopped. With --infer, runs\n"
     "the model's forward on the rows of --input and writes its outputs to --output.\n"
     "With -n N, trains data parallel on N ranks of this host, each line they write\n"
     "prefixed with \"[rank] \" (see docs/distributed.md; mpirun and srun work too).\n"
     "Exit status: 0 done, 1 errors in the model or a bad data or checkpoint file, 2 usage\n"
     "or I/O error (-n: the first failed rank's, 128+N for a rank killed by signal N).\n"
     "See docs/training.md.\n",
     "dtlc run examples/mnist_mlp.dtl\n"
     "dtlc run -n 2 examples/mnist_mlp.dtl\n"
     "dtlc run examples/mnist_mlp.dtl --epochs 2 --save mlp.safetensors --metrics m.jsonl\n"
     "dtlc run examples/mnist_mlp.dtl --resume mlp.safetensors --epochs 4\n"
     "dtlc run examples/mnist_mlp.dtl --infer --load mlp.safetensors --input x.npy "
     "--output y.npy\n"
     "dtlc run examples/char_transformer.dtl --infer --load ct.safetensors --sample 300 "
     "--prompt \"Q:\"\n",
     DIAG_OPTS | OPT_BIT(OPT_BATCH) | OPT_BIT(OPT_EPOCHS) | OPT_BIT(OPT_DATA) |
         OPT_BIT(OPT_SEED) | OPT_BIT(OPT_BACKEND) | OPT_BIT(OPT_DTYPE) | OPT_BIT(OPT_METRICS) |
         OPT_BIT(OPT_SAVE) | OPT_BIT(OPT_RESUME) | OPT_BIT(OPT_LOAD) | OPT_BIT(OPT_CKPT_EVERY) |
         OPT_BIT(OPT_STEPS) | OPT_BIT(OPT_LIMIT_TRAIN) | OPT_BIT(OPT_LIMIT_TEST) |
         OPT_BIT(OPT_NO_SHUFFLE) | OPT_BIT(OPT_PROGRESS) | OPT_BIT(OPT_INFER) |
         OPT_BIT(OPT_INPUT) | OPT_BIT(OPT_OUTPUT_LONG) | OPT_BIT(OPT_DEVICE) |
         OPT_BIT(OPT_TIMINGS) | OPT_BIT(OPT_RANKS) | OPT_BIT(OPT_SAMPLE) |
         OPT_BIT(OPT_PROMPT) | OPT_BIT(OPT_TEMPERATURE) | OPT_BIT(OPT_TRAIN) |
         OPT_BIT(OPT_PRECISION),
     cmd_run},
    {"repl", "[options] [FILE...]", "interactive session: tensors, layers, training",
     "Loads each FILE (as :load does) and prompts for declarations (use, model, fn,\n"
     "dataset, train, let), expressions to evaluate and print, and commands (:help lists\n"
     "them: :type, :graph, :load, :train N, :eval, :params, :save …). At a terminal: line\n"
     "editing, history ($XDG_STATE_HOME/dtl/history or ~/.dtl_history), Tab completion;\n"
     "Ctrl-C cancels, Ctrl-D quits. From a pipe or a file it runs the same session without\n"
     "prompts, printing only results, and exits with 1 if an input had errors.\n"
     "See docs/repl.md.\n",
     "dtlc repl\n"
     "dtlc repl examples/mnist_mlp.dtl\n"
     "dtlc repl < session.dtl\n",
     OPT_BIT(OPT_INCLUDE) | OPT_BIT(OPT_COLOR) | OPT_BIT(OPT_HELP) | OPT_BIT(OPT_SEED) |
         OPT_BIT(OPT_DATA) | OPT_BIT(OPT_BACKEND),
     cmd_repl},
    {"help", "[COMMAND]", "show help for dtlc or for one command",
     "Without COMMAND, lists the commands; with one, shows its options and examples.\n",
     "dtlc help check\n", OPT_BIT(OPT_HELP), cmd_help},
};
enum { NCOMMANDS = sizeof commands / sizeof commands[0] };

/* The stages of --emit, in pipeline order: the messages and the suggestion read this list,
 * so a new stage is one entry here (plus its line in compile's help and its case in
 * compile_file). The graph passes are stages by the names of compiler/passes/passes.h. */
static const char *const emit_stages[] = {"ast", "types", "graph", "fold", "cse", "simplify",
                                          "dce", "fused", "llvm", "asm", "obj", "so"};
enum { NSTAGES = sizeof emit_stages / sizeof emit_stages[0] };

/* "'ast', 'types' or 'graph'" (with last_word "or") for the messages. */
static const char *stage_list(char *buf, size_t len, const char *last_word)
{
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < NSTAGES && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s'%s'",
                               i == 0 ? "" : i + 1 == NSTAGES ? last_word : ", ", emit_stages[i]);
    return buf;
}

/* ---- Messages ---- */

static void say(bool color, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "dtlc: error: …" (or note) on stderr, like a diagnostic with no place. */
static void say(bool color, const char *level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (color)
        fprintf(stderr, "\033[1mdtlc: %s%s:\033[0m\033[1m ",
                strcmp(level, "error") == 0 ? "\033[1;31m" : "\033[1;36m", level);
    else
        fprintf(stderr, "dtlc: %s: ", level);
    vfprintf(stderr, fmt, ap);
    fputs(color ? "\033[0m\n" : "\n", stderr);
    va_end(ap);
}

static bool color_auto(void)
{
    const char *no = getenv("NO_COLOR"), *term = getenv("TERM");
    return isatty(STDERR_FILENO) && !(no && *no) && !(term && strcmp(term, "dumb") == 0);
}

static const dtlc_command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int unknown_command(bool color, const char *name)
{
    const char *names[NCOMMANDS];
    for (size_t i = 0; i < NCOMMANDS; i++)
        names[i] = commands[i].name;
    const char *near = dtl_diag_suggest(name, names, NCOMMANDS);
    if (near)
        say(color, "error", "unknown command '%s'; did you mean '%s'?", name, near);
    else
        say(color, "error", "unknown command '%s'", name);
    say(color, "note", "'dtlc --help' lists the commands");
    return EXIT_USAGE;
}

/* ---- Help ---- */

static void print_usage(FILE *out)
{
    fputs("usage: dtlc COMMAND [options] [FILE...]\n"
          "       dtlc --version | --help | help COMMAND\n", out);
}

static void print_main_help(void)
{
    print_usage(stdout);
    fputs("\ndtl compiles and trains deep-learning models written in .dtl files.\n"
          "\ncommands:\n", stdout);
    for (size_t i = 0; i < NCOMMANDS; i++)
        printf("  %-10s %s\n", commands[i].name, commands[i].summary);
    fputs("\nRun 'dtlc help COMMAND' or 'dtlc COMMAND --help' for a command's options.\n"
          "\nexit status: 0 success (warnings allowed), 1 errors in the input,\n"
          "             2 usage or I/O error\n"
          "\nenvironment:\n"
          "  DTL_PATH   colon-separated directories searched for `use` modules\n"
          "  NO_COLOR   when set and not empty, diagnostics are never colored\n", stdout);
}

static void print_command_help(const dtlc_command *c)
{
    printf("usage: dtlc %s %s\n", c->name, c->synopsis);
    if (c->description)
        printf("\n%s", c->description);
    if (c->opts & ~OPT_BIT(OPT_HELP)) {
        fputs("\noptions:\n", stdout);
        for (size_t i = 0; i < OPT_COUNT; i++) {
            const dtlc_option *op = &options[i];
            if (!(c->opts & OPT_BIT(op->id)))
                continue;
            char lhs[40];
            if (!op->arg)
                snprintf(lhs, sizeof lhs, "%s", op->name);
            else if (op->name[1] == '-')
                snprintf(lhs, sizeof lhs, "%s=%s", op->name, op->arg);
            else
                snprintf(lhs, sizeof lhs, "%s %s", op->name, op->arg);
            printf("  %-20s %s\n", lhs, op->help);
        }
    }
    if (c->examples) {
        fputs("\nexamples:\n", stdout);
        for (const char *s = c->examples; *s;) {
            const char *nl = strchr(s, '\n');
            size_t n = nl ? (size_t)(nl - s) : strlen(s);
            printf("  %.*s\n", (int)n, s);
            s += n + (nl != NULL);
        }
    }
}

/* ---- Option parsing ---- */

/* Parses a non-negative decimal number into *v. */
static bool parse_count(const char *s, unsigned *v)
{
    if (!*s)
        return false;
    unsigned long n = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        n = n * 10 + (unsigned)(*s - '0');
        if (n > 1000000000ul)
            return false;
    }
    *v = (unsigned)n;
    return true;
}

/* The numbers of `run`: --epochs --steps --limit-train --limit-test --checkpoint-every --seed. */
static bool apply_run_number(dtlc_opts *o, dtlc_opt_id id, const char *val)
{
    dtl_run_opts *r = &o->run;
    if (id == OPT_SEED) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(val, &end, 10);
        if (!*val || *end || errno || *val == '-') {
            say(o->color, "error", "--seed expects a number from 0 to 2^64-1, found '%s'", val);
            return false;
        }
        r->seed = v;
        r->seed_set = true;
        return true;
    }
    size_t len = strlen(val);
    bool epochs = id == OPT_CKPT_EVERY && len > 1 && val[len - 1] == 'e';
    char digits[32];
    unsigned n;
    snprintf(digits, sizeof digits, "%.*s", (int)(epochs ? len - 1 : len), val);
    bool zero_ok = id == OPT_STEPS;
    if (len >= sizeof digits || !parse_count(digits, &n) || (n == 0 && !zero_ok)) {
        const char *name = "--epochs";
        for (size_t i = 0; i < OPT_COUNT; i++)
            if (options[i].id == id)
                name = options[i].name;
        say(o->color, "error", "%s expects %s, found '%s'", name,
            id == OPT_CKPT_EVERY ? "a positive number of steps, or of epochs as Ne (1e)"
            : zero_ok ? "a number" : "a positive number", val);
        return false;
    }
    switch (id) {
    case OPT_EPOCHS: r->epochs = n; break;
    case OPT_STEPS: r->max_steps = n; break;
    case OPT_LIMIT_TRAIN: r->limit_train = n; break;
    case OPT_LIMIT_TEST: r->limit_test = n; break;
    default: r->ckpt_every = n; r->ckpt_in_epochs = epochs; break;
    }
    return true;
}

/* Applies one option with its value (NULL for flags). Returns false after a usage error. */
static bool apply_option(dtlc_opts *o, dtlc_opt_id id, const char *val, dtlc_color *color)
{
    switch (id) {
    case OPT_INCLUDE:
        o->includes[o->nincludes++] = val;
        return true;
    case OPT_WERROR:
        o->werror = true;
        return true;
    case OPT_NO_WARN_UNUSED:
        o->no_warn_unused = true;
        return true;
    case OPT_MAX_ERRORS:
        if (!parse_count(val, &o->max_errors)) {
            say(o->color, "error", "--max-errors expects a number (0 for no limit), found '%s'",
                val);
            return false;
        }
        o->max_errors_set = true;
        return true;
    case OPT_COLOR:
        if (strcmp(val, "auto") == 0)
            *color = COLOR_AUTO;
        else if (strcmp(val, "always") == 0)
            *color = COLOR_ALWAYS;
        else if (strcmp(val, "never") == 0)
            *color = COLOR_NEVER;
        else {
            say(o->color, "error", "--color expects auto, always or never, found '%s'", val);
            return false;
        }
        o->color = *color == COLOR_ALWAYS || (*color == COLOR_AUTO && color_auto());
        return true;
    case OPT_EMIT:
        o->emit = val;
        return true;
    case OPT_BATCH: {
        unsigned n;
        if (!parse_count(val, &n) || n == 0) {
            say(o->color, "error", "--batch expects a positive number, found '%s'", val);
            return false;
        }
        o->batch = n;
        return true;
    }
    case OPT_OUTPUT:
        o->output = val;
        return true;
    case OPT_EPOCHS:
    case OPT_STEPS:
    case OPT_LIMIT_TRAIN:
    case OPT_LIMIT_TEST:
    case OPT_CKPT_EVERY:
    case OPT_SEED:
        return apply_run_number(o, id, val);
    case OPT_DATA:
        o->run.data_dir = val;
        return true;
    case OPT_BACKEND:
        o->run.backend = val;
        return true;
    case OPT_DEVICE:   /* the device's backend; a --backend given too wins */
        if (strcmp(val, "cpu") != 0 && strcmp(val, "cuda") != 0 && strcmp(val, "gpu") != 0) {
            say(o->color, "error", "--device expects cpu or cuda, found '%s'", val);
            return false;
        }
        if (!o->run.backend && strcmp(val, "cpu") != 0)
            o->run.backend = "cuda";
        return true;
    case OPT_PRECISION: {
        dtl_precision p = dtl_precision_parse(val);
        if (p == DTL_PREC_COUNT) {
            say(o->color, "error", "--precision expects f32, tf32 or bf16, found '%s'", val);
            return false;
        }
        o->run.precision = p;
        return true;
    }
    case OPT_DTYPE:
        if (strcmp(val, "f32") != 0 && strcmp(val, "f64") != 0) {
            say(o->color, "error", "--dtype expects f32 or f64, found '%s'", val);
            return false;
        }
        o->run.f64 = strcmp(val, "f64") == 0;
        return true;
    case OPT_METRICS:
        o->run.metrics = val;
        return true;
    case OPT_SAVE:
        o->run.save = val;
        return true;
    case OPT_RESUME:
        o->run.resume = val;
        return true;
    case OPT_LOAD:
        o->run.load = val;
        return true;
    case OPT_NO_SHUFFLE:
        o->run.no_shuffle = true;
        return true;
    case OPT_RANKS: {
        unsigned n;
        if (!parse_count(val, &n) || n < 1 || n > DTL_LAUNCH_MAX_RANKS) {
            say(o->color, "error", "-n expects a number of ranks from 1 to %d, found '%s'",
                DTL_LAUNCH_MAX_RANKS, val);
            return false;
        }
        o->nranks = (int)n;
        return true;
    }
    case OPT_TIMINGS:
        o->run.timings = true;
        return true;
    case OPT_PROGRESS: {
        static const char *const when[] = {"auto", "bar", "plain", "none"};
        for (int i = 0; i < 4; i++)
            if (strcmp(val, when[i]) == 0) {
                o->run.progress = (dtl_run_progress)i;
                return true;
            }
        say(o->color, "error", "--progress expects auto, bar, plain or none, found '%s'", val);
        return false;
    }
    case OPT_INFER:
        o->run.infer = true;
        return true;
    case OPT_SAMPLE: {
        unsigned n;
        if (!parse_count(val, &n) || n < 1) {
            say(o->color, "error", "--sample expects a positive number of bytes, found '%s'",
                val);
            return false;
        }
        o->run.sample = n;
        return true;
    }
    case OPT_PROMPT:
        o->run.prompt = val;
        return true;
    case OPT_TEMPERATURE: {
        char *end;
        errno = 0;
        double t = strtod(val, &end);
        if (!*val || *end || errno || !(t >= 0) || t > 1e6) {
            say(o->color, "error", "--temperature expects a number >= 0, found '%s'", val);
            return false;
        }
        o->run.temperature = t;
        o->run.temperature_set = true;
        return true;
    }
    case OPT_TRAIN:
        o->run.train_name = val;
        return true;
    case OPT_INPUT:
        o->run.input = val;
        return true;
    case OPT_OUTPUT_LONG:
        o->run.output = val;
        return true;
    case OPT_HELP:
    case OPT_COUNT:
        break;
    }
    return true;
}

static void unknown_option(const dtlc_command *c, bool color, const char *arg)
{
    const char *names[OPT_COUNT];
    size_t n = 0;
    for (size_t i = 0; i < OPT_COUNT; i++)
        if (c->opts & OPT_BIT(options[i].id))
            names[n++] = options[i].name;
    size_t len = strcspn(arg, "=");
    char spelled[64];
    snprintf(spelled, sizeof spelled, "%.*s", (int)(len < 63 ? len : 63), arg);
    const char *near = dtl_diag_suggest(spelled, names, n);
    if (near)
        say(color, "error", "unknown option '%s' for '%s'; did you mean '%s'?", spelled,
            c->name, near);
    else
        say(color, "error", "unknown option '%s' for '%s'", spelled, c->name);
}

/* Parses argv (the words after the command). Returns -1 to go on, or an exit status (help
 * was printed, or a usage error was reported). */
static int parse_args(const dtlc_command *c, int argc, char **argv, dtlc_opts *o)
{
    dtlc_color color = COLOR_AUTO;
    o->color = color_auto();
    /* --help anywhere before "--" wins over everything else on the line. */
    for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_command_help(c);
            return EXIT_CLEAN;
        }
    o->includes = calloc((size_t)argc + 1, sizeof *o->includes);
    o->files = calloc((size_t)argc + 1, sizeof *o->files);
    o->child_args = calloc((size_t)argc + 1, sizeof *o->child_args);
    if (!o->includes || !o->files || !o->child_args) {
        say(o->color, "error", "out of memory");
        return EXIT_USAGE;
    }
    bool only_files = false;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (only_files || arg[0] != '-' || arg[1] == '\0') {
            o->files[o->nfiles++] = arg;
            o->child_args[o->nchild_args++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_files = true;
            o->child_args[o->nchild_args++] = arg;
            continue;
        }
        const dtlc_option *op = NULL;
        const char *val = NULL;
        for (size_t k = 0; k < OPT_COUNT && !op; k++) {
            const dtlc_option *cand = &options[k];
            size_t n = strlen(cand->name);
            if (!(c->opts & OPT_BIT(cand->id)) || strncmp(arg, cand->name, n) != 0)
                continue;
            if (arg[n] == '\0')
                op = cand;
            else if (cand->name[1] == '-' && arg[n] == '=')
                op = cand, val = arg + n + 1;   /* --name=value */
            else if (cand->arg && cand->name[1] != '-')
                op = cand, val = arg + n;       /* -Ivalue */
        }
        if (!op) {
            unknown_option(c, o->color, arg);
            say(o->color, "note", "'dtlc %s --help' lists its options", c->name);
            return EXIT_USAGE;
        }
        if (op->arg && !val) {
            if (i + 1 >= argc) {
                say(o->color, "error", "option '%s' needs a value (%s)", op->name, op->arg);
                return EXIT_USAGE;
            }
            val = argv[++i];
        } else if (!op->arg && val) {
            say(o->color, "error", "option '%s' takes no value", op->name);
            return EXIT_USAGE;
        }
        /* run -n passes the rest on to its ranks (it sets their progress and color). */
        if (op->id != OPT_RANKS && op->id != OPT_PROGRESS && op->id != OPT_COLOR) {
            o->child_args[o->nchild_args++] = arg;
            if (op->arg && val == argv[i])
                o->child_args[o->nchild_args++] = val;
        }
        if (!apply_option(o, op->id, val, &color))
            return EXIT_USAGE;
    }
    return -1;
}

/* ---- Running the front end ---- */

/* Reads all of standard input into ctx's sources under the name "<stdin>". */
static dtl_source *load_stdin(dtl_ctx *ctx, char *why, size_t whylen)
{
    return dtl_src_read(&ctx->sources, stdin, "<stdin>", why, whylen);
}

/* A fresh context set up from the options. */
static void ctx_open(dtl_ctx *ctx, const dtlc_opts *o)
{
    dtl_ctx_init(ctx);
    for (size_t i = 0; i < o->nincludes; i++)
        dtl_ctx_add_path(ctx, o->includes[i]);
    dtl_ctx_add_default_paths(ctx);
    ctx->warn_unused = !o->no_warn_unused;
    ctx->diags.werror = o->werror;
    if (o->max_errors_set)
        ctx->diags.max_errors = o->max_errors;
}

/* Loads FILE ('-': standard input) or reports why not. */
static const dtl_source *load(dtl_ctx *ctx, const dtlc_opts *o, const char *file)
{
    char why[256] = "";
    dtl_source *src = strcmp(file, "-") == 0 ? load_stdin(ctx, why, sizeof why)
                                             : dtl_src_load(&ctx->sources, file, why, sizeof why);
    if (!src)
        say(o->color, "error", "cannot read '%s': %s", file, why);
    return src;
}

/* Prints ctx's diagnostics; returns the exit status they call for. */
static int report(dtl_ctx *ctx, const dtlc_opts *o)
{
    dtl_diag_print(&ctx->diags, stderr, o->color);
    /* Stages stop at the limit, so often nothing past it is even counted: say so. (Past
     * it, dtl_diag_print has said "too many errors" itself.) */
    if (ctx->diags.max_errors && ctx->diags.nerrors == ctx->diags.max_errors)
        say(o->color, "note", "stopped at the limit of %u error%s; there may be more "
            "(--max-errors)", ctx->diags.max_errors, ctx->diags.max_errors == 1 ? "" : "s");
    if (ctx->diags.werror && ctx->diags.nerrors == 0 && ctx->diags.nwarnings > 0)
        say(o->color, "error", "%u warning%s treated as error%s (--werror)",
            ctx->diags.nwarnings, ctx->diags.nwarnings == 1 ? "" : "s",
            ctx->diags.nwarnings == 1 ? "" : "s");
    return dtl_diag_failed(&ctx->diags) ? EXIT_DIAG : EXIT_CLEAN;
}

static int cmd_check(const dtlc_command *cmd, dtlc_opts *o)
{
    if (o->nfiles == 0) {
        say(o->color, "error", "'%s' needs at least one FILE", cmd->name);
        say(o->color, "note", "usage: dtlc %s %s", cmd->name, cmd->synopsis);
        return EXIT_USAGE;
    }
    int status = EXIT_CLEAN;
    bool stdin_used = false;
    for (size_t i = 0; i < o->nfiles; i++) {
        if (strcmp(o->files[i], "-") == 0) {
            if (stdin_used) {
                say(o->color, "error", "'-' (standard input) can be given only once");
                status = EXIT_USAGE;
                continue;
            }
            stdin_used = true;
        }
        dtl_ctx ctx;
        ctx_open(&ctx, o);
        const dtl_source *src = load(&ctx, o, o->files[i]);
        int st = EXIT_USAGE;
        if (src) {
            dtl_check_source(&ctx, src);
            st = report(&ctx, o);
        }
        if (st > status)
            status = st;
        dtl_ctx_free(&ctx);
    }
    return status;
}

/* The stage's output, to out. */
typedef struct dtlc_emit {
    const char *stage;
    const dtl_file *file;      /* ast */
    const dtl_module *module;  /* types */
    const dtl_graph *graph;    /* graph */
    bool dot;                  /* graph: as Graphviz DOT */
    const dtl_kprog *kprog;    /* fused */
    const char *text;          /* llvm, asm: the text to write */
    size_t textlen;
} dtlc_emit;

static void emit_to(FILE *out, const dtlc_emit *e)
{
    if (e->text)
        fwrite(e->text, 1, e->textlen, out);
    else if (e->kprog)
        dtl_kprog_print(out, e->kprog);
    else if (e->graph && e->dot)
        dtl_graph_dot(e->graph, out);
    else if (e->graph)
        dtl_graph_print(e->graph, out);
    else if (e->file)
        dtl_print_file(out, e->file);
    else
        dtl_check_print_types(out, e->module);
}

/* Writes the output to o->output through a temporary file and a rename, or to stdout. */
static int write_output(const dtlc_opts *o, const dtlc_emit *e)
{
    if (!o->output || strcmp(o->output, "-") == 0) {
        emit_to(stdout, e);
        if (fflush(stdout) != 0 || ferror(stdout)) {
            say(o->color, "error", "cannot write to standard output: %s", strerror(errno));
            return EXIT_USAGE;
        }
        return EXIT_CLEAN;
    }
    if (dtl_fs_is_special(o->output)) {   /* -o /dev/null: write it, never rename over it */
        FILE *f = fopen(o->output, "w");
        if (f)
            emit_to(f, e);
        int err = !f ? errno : ferror(f) ? (errno ? errno : EIO) : 0;
        if (f && fclose(f) != 0 && !err)
            err = errno;
        if (err)
            say(o->color, "error", "cannot write '%s': %s", o->output, strerror(err));
        return err ? EXIT_USAGE : EXIT_CLEAN;
    }
    size_t n = strlen(o->output);
    char *tmp = malloc(n + sizeof ".tmpXXXXXX");
    if (!tmp) {
        say(o->color, "error", "out of memory");
        return EXIT_USAGE;
    }
    memcpy(tmp, o->output, n);
    memcpy(tmp + n, ".tmpXXXXXX", sizeof ".tmpXXXXXX");
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        say(o->color, "error", "cannot write '%s': %s", o->output, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        free(tmp);
        return EXIT_USAGE;
    }
    mode_t mask = umask(0);   /* mkstemp makes 0600; give the file the usual mode */
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    emit_to(f, e);
    int err = ferror(f) ? (errno ? errno : EIO) : 0;
    if (fclose(f) != 0 && !err)
        err = errno;
    if (!err && rename(tmp, o->output) != 0)
        err = errno;
    if (err) {
        say(o->color, "error", "cannot write '%s': %s", o->output, strerror(err));
        unlink(tmp);
    }
    free(tmp);
    return err ? EXIT_USAGE : EXIT_CLEAN;
}

/* Lowers the first train block of m to its step graph g (initialized here; freed on
 * failure). Problems are diagnostics in ctx. */
static bool lower_step(dtl_ctx *ctx, const dtlc_opts *o, const char *file, const dtl_module *m,
                       dtl_graph *g)
{
    const dtl_train *t = dtl_lower_find_train(m, NULL);
    if (!t) {
        static const dtl_span nowhere;
        dtl_diag_error(&ctx->diags, nowhere, "%s has no train block: there is no graph to "
                       "emit", file);
        return false;
    }
    dtl_lower_opts lo = {.batch = o->batch, .compute = DTL_DTYPE_F32,
                         .precision = o->run.precision};
    return dtl_lower_graph(ctx, t, DTL_LOWER_STEP, &lo, g);
}

/* Compiles o->files[0] up to e->stage and writes it out. */
static int compile_file(const dtlc_opts *o, dtlc_emit *e)
{
    dtl_ctx ctx;
    ctx_open(&ctx, o);
    int status = EXIT_USAGE;
    dtl_graph g, pg;   /* lowered; after the passes */
    bool have_graph = false, have_passed = false;
    const dtl_pass *pass = dtl_pass_find(e->stage);
    bool fused = strcmp(e->stage, "fused") == 0;
    dtl_kprog *kprog = NULL;
    bool native = strcmp(e->stage, "llvm") == 0 || strcmp(e->stage, "asm") == 0;
    char *text = NULL;
    bool graph_stage = strcmp(e->stage, "graph") == 0 || pass || fused || native;
    const dtl_source *src = load(&ctx, o, o->files[0]);
    if (src) {
        if (strcmp(e->stage, "ast") == 0)
            e->file = dtl_parse(&ctx, src);
        else
            e->module = dtl_check_source(&ctx, src);
        if (graph_stage && e->module && !dtl_diag_failed(&ctx.diags)) {
            have_graph = lower_step(&ctx, o, o->files[0], e->module, &g);
            e->graph = have_graph ? &g : NULL;
        }
        status = report(&ctx, o);
        if (status == EXIT_CLEAN && have_graph && (pass || fused)) {
            dtl_err err = {DTL_ERR_NONE, ""};
            have_passed = true;   /* pg is initialized even on failure */
            if (dtl_passes_run(&pg, &g, pass ? pass->name : NULL, &err)) {
                e->graph = &pg;
                if (fused)   /* after every pass: what the llvm and cuda backends compile */
                    e->kprog = kprog = dtl_fuse(&pg, NULL);
            } else {
                say(o->color, "error", "%s", err.msg);
                e->graph = NULL;
                status = EXIT_DIAG;
            }
        }
        if (status == EXIT_CLEAN && have_graph && native) {
            /* The passes, fusion and LLVM (compiler/llvm/llvm.h), into a string first: a
             * failure writes nothing. */
#ifdef HAVE_LLVM
            dtl_err err = {DTL_ERR_NONE, ""};
            size_t len = 0;
            FILE *f = open_memstream(&text, &len);
            bool ok = f && dtl_llvm_emit(f, &g, strcmp(e->stage, "asm") == 0, &err);
            if (f)
                fclose(f);
            if (!f)
                dtl_err_set(&err, DTL_ERR_NOMEM, "out of memory");
            e->text = ok ? text : NULL;
            e->textlen = len;
            if (!ok) {
                say(o->color, "error", "%s", err.msg);
                e->graph = NULL;
                status = err.kind == DTL_ERR_NOMEM ? EXIT_USAGE : EXIT_DIAG;
            }
#else
            say(o->color, "error", "this dtlc was built without LLVM: --emit=%s needs it "
                "(configure --with-llvm)", e->stage);
            status = EXIT_USAGE;
#endif
        }
        bool ready = graph_stage ? e->graph != NULL : e->file || e->module;
        if (status == EXIT_CLEAN && ready)
            status = write_output(o, e);
    }
    free(text);
    dtl_kprog_free(kprog);
    if (have_passed)
        dtl_graph_free(&pg);
    if (have_graph)
        dtl_graph_free(&g);
    dtl_ctx_free(&ctx);
    return status;
}

/* Commands that take exactly one FILE say so when given none or several. */
static bool one_file(const dtlc_command *cmd, const dtlc_opts *o)
{
    if (o->nfiles == 1)
        return true;
    if (o->nfiles == 0)
        say(o->color, "error", "'%s' needs a FILE", cmd->name);
    else
        say(o->color, "error", "'%s' takes one FILE, found %zu", cmd->name, o->nfiles);
    say(o->color, "note", "usage: dtlc %s %s", cmd->name, cmd->synopsis);
    return false;
}

/* Ahead of time (--emit=obj|so, or -o FILE.o|FILE.so): the first train block's infer and
 * step graphs to native code and a header (compiler/llvm/aot.h). */
/* The prologue of commands that act on o->files[0]'s train block: loads and checks the file
 * in ctx (opened by the caller), reports the diagnostics and returns the status they make;
 * *t is the train block (NULL if none: an error saying there is nothing to `what`). With
 * EXIT_CLEAN and a train block the reported warnings are forgotten, so that only what
 * lowering finds is left. */
static int load_train(dtl_ctx *ctx, const dtlc_opts *o, const char *what, const dtl_train **t)
{
    *t = NULL;
    const dtl_source *src = load(ctx, o, o->files[0]);
    if (!src)
        return EXIT_USAGE;
    const dtl_module *m = dtl_check_source(ctx, src);
    const char *name = o->run.train_name;
    if (m && !dtl_diag_failed(&ctx->diags) && !(*t = dtl_lower_find_train(m, name))) {
        static const dtl_span nowhere;
        if (name) {   /* --train NAME: say which there are */
            char have[400] = "";
            size_t len = 0;
            for (size_t i = 0; i < m->ntrains && len < sizeof have; i++) {
                const dtl_decl *d = m->trains[i]->decl;
                const char *tn = d && d->name.text ? d->name.text : "(unnamed)";
                len += (size_t)snprintf(have + len, sizeof have - len, "%s%s", i ? ", " : "",
                                        tn);
            }
            dtl_diag_error(&ctx->diags, nowhere, "%s has no train block named '%s'%s%s",
                           o->files[0], name, m->ntrains ? "; it has: " : "", have);
        } else {
            dtl_diag_error(&ctx->diags, nowhere, "%s has no train block: nothing to %s",
                           o->files[0], what);
        }
    }
    int status = report(ctx, o);
    if (status == EXIT_CLEAN && *t) {
        ctx->diags.first = ctx->diags.last = NULL;   /* the warnings are out */
        ctx->diags.nwarnings = 0;
    }
    return status;
}

static int compile_aot(const dtlc_opts *o, bool shared)
{
    if (!o->output || strcmp(o->output, "-") == 0) {
        say(o->color, "error", "--emit=%s needs -o FILE: native code is not written to "
            "standard output", shared ? "so" : "obj");
        return EXIT_USAGE;
    }
#ifndef HAVE_LLVM
    say(o->color, "error", "this dtlc was built without LLVM: ahead-of-time compilation "
        "needs it (configure --with-llvm)");
    return EXIT_USAGE;
#else
    dtl_ctx ctx;
    ctx_open(&ctx, o);
    const dtl_train *t;
    int status = load_train(&ctx, o, "compile", &t);
    dtl_lowered L;
    dtl_lower_opts lo = {.batch = o->batch, .compute = DTL_DTYPE_F32,
                         .precision = o->run.precision};
    if (status == EXIT_CLEAN && t) {
        if (!dtl_lower_train(&ctx, t, &lo, &L))
            status = (report(&ctx, o), EXIT_DIAG);
        else {
            dtl_aot_opts ao = {shared ? DTL_AOT_SHARED : DTL_AOT_OBJECT, o->output,
                               o->files[0], t->inst->u.m.model->name, NULL, NULL};
            dtl_err err = {DTL_ERR_NONE, ""};
            if (!dtl_aot_compile(&L, &ao, &err)) {
                say(o->color, "error", "%s", err.msg);
                status = err.kind == DTL_ERR_IO || err.kind == DTL_ERR_NOMEM ? EXIT_USAGE
                                                                           : EXIT_DIAG;
            }
            dtl_lowered_free(&L);
        }
    }
    dtl_ctx_free(&ctx);
    return status;
#endif
}

static int cmd_compile(const dtlc_command *cmd, dtlc_opts *o)
{
    if (!one_file(cmd, o))
        return EXIT_USAGE;
    /* Native code: --emit=obj|so, or no --emit and -o FILE.o|FILE.so. */
    bool obj = o->emit && strcmp(o->emit, "obj") == 0, so = o->emit && strcmp(o->emit, "so") == 0;
    if (!o->emit && o->output) {
        size_t n = strlen(o->output);
        obj = n > 2 && strcmp(o->output + n - 2, ".o") == 0;
        so = n > 3 && strcmp(o->output + n - 3, ".so") == 0;
    }
    if (obj || so)
        return compile_aot(o, so);
    if (!o->emit) {
        char list[200];
        say(o->color, "error", "--emit is required: this build can emit %s",
            stage_list(list, sizeof list, " and "));
        return EXIT_USAGE;
    }
    dtlc_emit e = {NULL, NULL, NULL, NULL, false, NULL, NULL, 0};
    for (size_t i = 0; i < NSTAGES; i++)
        if (strcmp(o->emit, emit_stages[i]) == 0)
            e.stage = emit_stages[i];
    if (!e.stage) {
        const char *near = dtl_diag_suggest(o->emit, emit_stages, NSTAGES);
        char list[200];
        say(o->color, "error", "unknown stage '%s' for --emit; expected %s%s%s%s", o->emit,
            stage_list(list, sizeof list, " or "), near ? " (did you mean '" : "",
            near ? near : "", near ? "'?)" : "");
        return EXIT_USAGE;
    }
    return compile_file(o, &e);
}

static int cmd_graph(const dtlc_command *cmd, dtlc_opts *o)
{
    if (!one_file(cmd, o))
        return EXIT_USAGE;
    dtlc_emit e = {"graph", NULL, NULL, NULL, true, NULL, NULL, 0};
    return compile_file(o, &e);
}

static int cmd_run(const dtlc_command *cmd, dtlc_opts *o)
{
    if (!one_file(cmd, o))
        return EXIT_USAGE;
    if (o->nranks > 0 && (o->run.infer || strcmp(o->files[0], "-") == 0)) {
        say(o->color, "error", "%s", o->run.infer ? "-n and --infer do not go together: "
            "inference runs in one process" : "-n needs a FILE: its ranks cannot all read "
            "standard input");
        return EXIT_USAGE;
    }
    dtl_ctx ctx;
    ctx_open(&ctx, o);
    const dtl_train *t;
    int status = load_train(&ctx, o, "run", &t);
    if (status == EXIT_CLEAN && t && o->nranks > 0) {
        /* -n N: the file is checked once here; the ranks (compiler/launch.h) do the rest. */
        dtl_ctx_free(&ctx);
        dtl_launch_opts lo = {o->nranks, o->argv0, o->child_args, o->nchild_args,
                              o->run.progress, o->color};
        return dtl_launch(&lo);
    }
    if (status == EXIT_CLEAN && t) {
        dtl_err err = {DTL_ERR_NONE, ""};
        o->run.file = o->files[0];
        o->run.batch = o->batch;
        fflush(stdout);
        dtl_run_status st = dtl_run(&ctx, t, &o->run, stdout, stderr, &err);
        if (st == DTL_RUN_DIAG)
            status = (report(&ctx, o), EXIT_DIAG);
        else if (st != DTL_RUN_OK) {
            say(o->color, "error", "%s", err.msg);
            status = st == DTL_RUN_USAGE || err.kind == DTL_ERR_IO ? EXIT_USAGE : EXIT_DIAG;
        }
    }
    dtl_ctx_free(&ctx);
    return status;
}

static int cmd_repl(const dtlc_command *cmd, dtlc_opts *o)
{
    (void)cmd;
    dtl_repl_opts ro;
    dtl_repl_opts_default(&ro);
    ro.includes = o->includes;
    ro.nincludes = o->nincludes;
    ro.files = o->files;
    ro.nfiles = o->nfiles;
    ro.color = o->color;
    ro.seed_set = o->run.seed_set;
    ro.seed = o->run.seed;
    ro.data_dir = o->run.data_dir;
    ro.backend = o->run.backend;
    return dtl_repl_run(&ro);
}

static int cmd_help(const dtlc_command *cmd, dtlc_opts *o)
{
    if (o->nfiles > 1) {
        say(o->color, "error", "'%s' takes one COMMAND, found %zu", cmd->name, o->nfiles);
        return EXIT_USAGE;
    }
    if (o->nfiles == 0) {
        print_main_help();
        return EXIT_CLEAN;
    }
    const dtlc_command *c = find_command(o->files[0]);
    if (!c)
        return unknown_command(o->color, o->files[0]);
    print_command_help(c);
    return EXIT_CLEAN;
}

/* ---- main ---- */

/* Flushes stdout, turning a failed write (a full disk, a closed pipe) into exit status 2. */
static int finish(bool color, int status)
{
    if ((fflush(stdout) != 0 || ferror(stdout)) && status == EXIT_CLEAN) {
        say(color, "error", "cannot write to standard output: %s", strerror(errno));
        status = EXIT_USAGE;
    }
    return status;
}

int main(int argc, char **argv)
{
    double start = dtl_progress_now();   /* for run --timings */
    bool color = color_auto();
    if (argc < 2) {
        print_usage(stderr);
        say(color, "note", "'dtlc --help' lists the commands");
        return EXIT_USAGE;
    }
    const char *first = argv[1];
    if (strcmp(first, "--help") == 0 || strcmp(first, "-h") == 0) {
        print_main_help();
        return finish(color, EXIT_CLEAN);
    }
    if (strcmp(first, "--version") == 0) {
        printf("dtlc %s\n", DTLC_VERSION);
        return finish(color, EXIT_CLEAN);
    }
    if (first[0] == '-') {
        say(color, "error", "expected a command before '%s'", first);
        say(color, "note", "usage: dtlc COMMAND [options] [FILE...]; 'dtlc --help' lists "
                           "the commands");
        return EXIT_USAGE;
    }
    const dtlc_command *cmd = find_command(first);
    if (!cmd)
        return unknown_command(color, first);

    dtlc_opts o;
    memset(&o, 0, sizeof o);
    dtl_run_opts_default(&o.run);
    o.run.start_time = start;
    o.argv0 = argv[0];
    int status = parse_args(cmd, argc - 2, argv + 2, &o);
    if (status < 0)
        status = cmd->run(cmd, &o);
    free(o.includes);
    free(o.files);
    free(o.child_args);
    return finish(o.color, status);
}
