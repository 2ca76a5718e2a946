/* compiler/repl_internal.h — what the parts of `dtlc repl` share (compiler/repl*.c).
 *
 * Contract: one `repl` holds a whole session; every function takes it. Its parts:
 *   repl.c        the loop: reads lines, joins them into complete inputs, dispatches
 *   repl_line.c   line input: libedit (prompts, editing, history, completion) or plain stdio;
 *                 Ctrl-C (the one process-wide flag a signal handler may set)
 *   repl_eval.c   the session: its declarations as source, checked again as one module at
 *                 every input (lang/check.h's hooks add its values and constructors),
 *                 evaluation through lowering and a backend, the cache of compiled plans,
 *                 diagnostics mapped back to where the text was typed or loaded
 *   repl_cmd.c    the `:` commands
 *   repl_print.c  tensors printed the NumPy way; the loss sparkline
 * Errors are reported where they are found (diagnostics with places, or one "error:" line)
 * and a function that failed returns false; a failed input leaves the session as it was.
 */
#ifndef DTL_REPL_INTERNAL_H
#define DTL_REPL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../lang/check.h"
#include "../lang/ctx.h"
#include "../runtime/exec.h"
#include "graph.h"
#include "repl.h"
#include "run.h"

/* ---- text and where it came from ---- */

/* Text as typed at the prompt (one input) or read from a file (:load). Kept for the life of
 * the session (declarations point into it). */
typedef struct repl_origin {
    char *name;          /* "<repl>" or the file's path */
    char *text;          /* len bytes, NUL-terminated */
    size_t len;
    uint32_t line;       /* the line number of its first line */
    char *shown;         /* NULL, or what diagnostics show of it: the whole input line when
                            text is one statement of it (text with the others blanked) */
    size_t shown_len;
    struct repl_origin *next;
} repl_origin;

/* A piece of the session's source: lead + origin->text[off, off + len). lead is what the
 * REPL adds in front ("let " for `a = 1`, "let __repl_expr = " for a bare expression, or
 * spaces that keep the first line's columns). */
typedef struct repl_piece {
    const char *lead;    /* static or owned by the entry; never NULL */
    repl_origin *origin;
    size_t off, len;
} repl_piece;

/* A top-level declaration of the session, kept as source. */
typedef struct repl_entry {
    char *name;          /* what it binds; "" for an unnamed train block */
    dtl_decl_kind kind;
    repl_piece piece;
    char *lead;          /* owned lead of piece (or NULL) */
    uint64_t id;         /* increasing: which entries are older than a trainer */
    char *what;          /* how :load lists it: "model MLP", "train MLP()" */
} repl_entry;

/* A tensor computed at the prompt, bound to a name. */
typedef struct repl_value {
    char *name;
    dtl_dtype dtype;
    uint32_t rank;
    int64_t shape[DTL_MAX_RANK];
    void *data;          /* malloc'd; row-major */
    size_t nbytes;
} repl_value;

/* One compiled expression: its graph and plan, for reuse when the same text comes back
 * with the same declarations and the same value shapes. */
typedef struct repl_cached {
    char *key;           /* NULL: a free slot */
    dtl_graph g;
    dtl_plan *plan;
    uint64_t used;       /* for least-recently-used eviction */
} repl_cached;

enum { REPL_CACHE_SLOTS = 32, REPL_SPARK_WIDTH = 40, REPL_MAX_ERRORS = 10 };

/* The session's source, checked. */
typedef struct repl_map {
    size_t soff;         /* where the piece's text starts in the session source */
    size_t lead;         /* length of its lead, just before soff */
    const repl_piece *piece;
} repl_map;

typedef struct repl_checked {
    dtl_ctx ctx;
    const dtl_source *src;
    dtl_module *m;
    repl_map *maps;
    size_t nmaps;
    repl_piece *pieces;  /* copies of the pieces the session source was made of */
    bool ok;             /* checked without errors */
} repl_checked;

/* The session's view of a train block it trains (:train, :eval, :save). */
typedef struct repl_trainer {
    repl_checked chk;    /* the checked session it was made from (lives as long as tr) */
    bool have_chk;
    dtl_trainer *tr;
    char *name;          /* the train block's entry name ("" unnamed) */
    uint64_t newest;     /* the newest entry id when it was made */
    bool stale;          /* an entry it was made from was replaced since */
    uint64_t modules;    /* a hash of the modules it was checked with (`use`, on disk) */
    double *losses;      /* every step's loss, for the sparkline */
    size_t nlosses, caplosses;
} repl_trainer;

typedef struct repl {
    const dtl_repl_opts *o;
    FILE *in, *out, *err;
    bool interactive, color;
    repl_origin *origins;
    repl_entry *entries;
    size_t nentries, capentries;
    uint64_t next_id;
    repl_value *values;
    size_t nvalues, capvalues;
    char **dirs;         /* directories of loaded files: `use` looks there too */
    size_t ndirs;
    uint64_t decl_gen;   /* bumped when the declarations change */
    uint64_t shape_gen;  /* bumped when a value appears, goes, or changes its type */
    uint64_t stamp;      /* for the cache's LRU */
    dtl_store *store;    /* params of the instances made at the prompt */
    const dtl_backend *be;
    const char *be_name;
    repl_cached cache[REPL_CACHE_SLOTS];
    uint64_t rng_pos;    /* 32-bit words the random constructors drew so far, per stream
                            (repl_run sets "repl.step" past them) */
    uint32_t lines;      /* input lines read so far (the line of "<repl>" positions) */
    repl_trainer trainer;
    uint64_t nerrors;    /* inputs that failed (the exit status when not interactive) */
    bool quit;
    struct repl_line *line;   /* the line editor (NULL when none yet) */
} repl;

/* ---- repl.c ---- */
void repl_error(repl *R, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void repl_note(repl *R, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- repl_eval.c: the session ---- */

/* What an input holds. */
typedef enum repl_kind {
    REPL_DECLS,          /* use model fn dataset train let …, as in a file */
    REPL_ASSIGN,         /* NAME = expr: `let NAME = expr` */
    REPL_EXPR,           /* an expression to evaluate and print */
} repl_kind;

repl_origin *repl_origin_new(repl *R, const char *name, const char *text, size_t len,
                             uint32_t line);
repl_kind repl_classify(const char *text, size_t len, size_t *name_len);
/* Parses text alone (an input being typed) as kind: true when it is complete (it may still
 * have errors); false when it ends too early, as `let a = (1,` does. */
bool repl_complete(repl *R, const char *text, size_t len, repl_kind kind);
/* Checks the session with `extra` pieces added at the end and entries named in skip[0..n)
 * left out. Returns c->ok; c must be freed with repl_checked_free either way. */
bool repl_check(repl *R, const repl_piece *extra, size_t nextra, char *const *skip,
                size_t nskip, repl_checked *c);
void repl_checked_free(repl_checked *c);
/* Prints c's diagnostics where the text came from. Warnings only about `focus` (NULL: all). */
void repl_report(repl *R, repl_checked *c, const repl_piece *focus);
/* The expression an expression piece checked to (the value of `let __repl_expr = …`). */
dtl_expr *repl_expr_of(repl_checked *c);
/* Evaluates one input of the prompt (origin o, all of it). */
void repl_input(repl *R, repl_origin *o, repl_kind kind);
/* Checks `text` (as typed after a command, from origin o at off) as an expression. */
bool repl_check_expr(repl *R, repl_origin *o, size_t off, size_t len, repl_checked *c);
/* Lowers expression e of c into g (a tensor value is the output "result"). */
bool repl_lower(repl *R, repl_checked *c, dtl_expr *e, dtl_graph *g);
/* Plans g on the session's backend and store (checking its memory first). */
dtl_plan *repl_plan(repl *R, const dtl_graph *g);
/* Runs plan p of graph g with the session's values bound; *t: the output "result" when the
 * graph has one (valid until the next run). */
bool repl_run(repl *R, dtl_plan *p, const dtl_graph *g, dtl_tensor *t, bool *has_value);
/* :load */
bool repl_load(repl *R, const char *path);
void repl_reset(repl *R);
void repl_cache_flush(repl *R);
bool repl_set_backend(repl *R, const char *name);
/* llvm when this build has it, else ref. */
const char *repl_default_backend(void);
/* The session's names (entries and values), for completion; *n of them, in a malloc'd array
 * of pointers into the session (free the array only). */
const char **repl_names(repl *R, size_t *n);
/* The newest train block's entry, or NULL. */
const repl_entry *repl_train_entry(repl *R);
/* The trainer of the newest train block, made (or made again, when stale) on demand. */
repl_trainer *repl_trainer_get(repl *R);
void repl_trainer_drop(repl *R);
repl_value *repl_value_find(repl *R, const char *name);

/* ---- repl_cmd.c ---- */
/* Runs the command line (starting at ':'; origin o holds it). */
void repl_command(repl *R, repl_origin *o);
/* Command names for completion (NULL-terminated). */
extern const char *const repl_command_names[];

/* ---- repl_print.c ---- */
void repl_print_tensor(FILE *out, const dtl_tensor *t);
/* The sparkline of v[0..n) (at most width characters: the last ones) into buf. */
void repl_sparkline(char *buf, size_t len, const double *v, size_t n, size_t width);
/* "f32[2, 3]" */
const char *repl_type_str(char *buf, size_t len, dtl_dtype dt, uint32_t rank,
                          const int64_t *shape);

/* ---- repl_line.c ---- */
typedef struct repl_line repl_line;
typedef enum repl_read {
    REPL_READ_LINE,      /* a line (without its newline) */
    REPL_READ_EOF,       /* end of input (Ctrl-D) */
    REPL_READ_CANCEL,    /* Ctrl-C at the prompt: the input so far is dropped */
    REPL_READ_TOO_LONG,  /* a line of more than 16 MiB: the rest of the input is dropped */
} repl_read;

/* Completion: the candidates for the word that ends at `cursor` of `line` (which starts at
 * *start); a malloc'd array of malloc'd strings. */
typedef char **(*repl_complete_fn)(void *user, const char *line, size_t cursor, size_t *start,
                                   size_t *n);

repl_line *repl_line_new(FILE *in, FILE *out, bool interactive, const char *history,
                         repl_complete_fn complete, void *user);
/* The next line (malloc'd, in *line) after showing prompt (interactive only). */
repl_read repl_line_read(repl_line *le, const char *prompt, char **line);
/* Remembers an input (possibly several lines) in the history. */
void repl_line_remember(repl_line *le, const char *entry);
void repl_line_free(repl_line *le);
/* Ctrl-C: installs the handler (interactive sessions); reads and clears the flag. */
void repl_sigint_install(void);
void repl_sigint_restore(void);
bool repl_interrupted(void);
/* The history file: $XDG_STATE_HOME/dtl/history, else ~/.dtl_history (malloc'd; NULL: none). */
char *repl_history_path(void);

#endif
