/* lang/diag.h — diagnostics: errors, warnings and notes with places.
 *
 * Contract: diagnostics are collected (never printed where they arise) in a dtl_diags, which
 * allocates from the compilation's arena. A note attaches to the error or warning reported
 * just before it. After max_errors errors further errors are counted but not kept, and one
 * "too many errors" line is printed at the end; stages should stop early once
 * dtl_diag_stop() says so.
 *
 * Printed form (dtl_diag_print), one diagnostic:
 *
 *     file:line:col: error: message
 *        12 |     fn forward(x: f32[B, 784]) -> f32[B, 10] = x @ w
 *           |                                                ^~~~~
 *     file:line:col: note: message
 *        …
 *
 * Messages are one line, start in lower case, and say what was expected and what was found.
 */
#ifndef DTL_DIAG_H
#define DTL_DIAG_H

#include <stdbool.h>
#include <stdio.h>

#include "source.h"

typedef enum dtl_diag_level {
    DTL_DIAG_ERROR,
    DTL_DIAG_WARNING,
    DTL_DIAG_NOTE
} dtl_diag_level;

typedef struct dtl_diag dtl_diag;
struct dtl_diag {
    dtl_diag_level level;
    dtl_span span;        /* span.file == 0: no place (printed as "dtlc: error: …") */
    const char *msg;
    dtl_diag *next;       /* next diagnostic, in report order (notes included) */
};

typedef struct dtl_diags {
    dtl_arena *arena;
    const dtl_srcmgr *sm;
    dtl_diag *first, *last;
    unsigned nerrors, nwarnings;
    unsigned max_errors;   /* 0: unlimited; default 50 */
    bool dropped_last;     /* the last error was not kept (its notes are dropped too) */
    bool werror;           /* warnings count as errors */
} dtl_diags;

void dtl_diag_init(dtl_diags *d, dtl_arena *arena, const dtl_srcmgr *sm);

void dtl_diag_error(dtl_diags *d, dtl_span at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dtl_diag_warning(dtl_diags *d, dtl_span at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dtl_diag_note(dtl_diags *d, dtl_span at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* True once max_errors errors have been reported: stages should stop. */
bool dtl_diag_stop(const dtl_diags *d);
/* True if any error was reported (or a warning, with werror). */
bool dtl_diag_failed(const dtl_diags *d);

/* Prints all diagnostics in report order; color: ANSI colors for a terminal. */
void dtl_diag_print(const dtl_diags *d, FILE *out, bool color);

/* The closest of candidates[0..n) to name by edit distance, or NULL if none is close
 * enough to suggest ("did you mean 'epochs'?"). */
const char *dtl_diag_suggest(const char *name, const char *const *candidates, size_t n);

#endif
