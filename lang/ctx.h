/* lang/ctx.h — one compilation: its arena, its source files, its diagnostics, its options.
 *
 * Contract: everything a compilation allocates (sources, tokens' text, AST, types) lives in
 * ctx->arena and is released by dtl_ctx_free. No stage keeps global state: each takes the
 * context. Each stage's public entry point installs ctx->arena.oom_jump with setjmp, so an
 * out-of-memory inside it becomes a reported error and a failed return, not a crash.
 */
#ifndef DTL_CTX_H
#define DTL_CTX_H

#include <stdbool.h>

#include "../runtime/arena.h"
#include "diag.h"
#include "source.h"

typedef struct dtl_module dtl_module;   /* lang/check.h: a parsed and checked file */

typedef struct dtl_ctx {
    dtl_arena arena;
    dtl_srcmgr sources;
    dtl_diags diags;
    /* Directories searched for `use NAME` (NAME.dtl), in order, after the directory of the
     * file that says `use`: $DTL_PATH entries, then the source tree's stdlib/ (when built in
     * tree), then the installed stdlib directory. */
    const char **stdlib_path;
    unsigned nstdlib_path;
    /* Modules loaded so far (by `use` or as roots), for sharing and cycle detection. */
    dtl_module **modules;
    unsigned nmodules, capmodules;
    bool warn_unused;       /* warnings for unused params/bindings (default on) */
} dtl_ctx;

void dtl_ctx_init(dtl_ctx *ctx);
void dtl_ctx_free(dtl_ctx *ctx);
/* Appends a directory to the `use` search path (copied). */
void dtl_ctx_add_path(dtl_ctx *ctx, const char *dir);
/* Adds $DTL_PATH (colon-separated) and the default stdlib directories. */
void dtl_ctx_add_default_paths(dtl_ctx *ctx);

#endif
