#include "ctx.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void dtl_ctx_init(dtl_ctx *ctx)
{
    memset(ctx, 0, sizeof *ctx);
    dtl_arena_init(&ctx->arena);
    dtl_src_init(&ctx->sources, &ctx->arena);
    dtl_diag_init(&ctx->diags, &ctx->arena, &ctx->sources);
    ctx->warn_unused = true;
}

void dtl_ctx_free(dtl_ctx *ctx)
{
    dtl_arena_free(&ctx->arena);
    memset(ctx, 0, sizeof *ctx);
}

void dtl_ctx_add_path(dtl_ctx *ctx, const char *dir)
{
    ctx->stdlib_path = dtl_arena_grow(&ctx->arena, ctx->stdlib_path, ctx->nstdlib_path,
                                      ctx->nstdlib_path + 1, sizeof *ctx->stdlib_path);
    ctx->stdlib_path[ctx->nstdlib_path++] = dtl_arena_strdup(&ctx->arena, dir);
}

#if defined(DTL_SRC_STDLIB_DIR) || defined(DTL_STDLIB_DIR)
static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
#endif

void dtl_ctx_add_default_paths(dtl_ctx *ctx)
{
    const char *env = getenv("DTL_PATH");
    while (env && *env) {
        const char *colon = strchr(env, ':');
        size_t n = colon ? (size_t)(colon - env) : strlen(env);
        if (n)
            dtl_ctx_add_path(ctx, dtl_arena_strndup(&ctx->arena, env, n));
        env = colon ? colon + 1 : NULL;
    }
#ifdef DTL_SRC_STDLIB_DIR
    if (is_dir(DTL_SRC_STDLIB_DIR))
        dtl_ctx_add_path(ctx, DTL_SRC_STDLIB_DIR);
#endif
#ifdef DTL_STDLIB_DIR
    if (is_dir(DTL_STDLIB_DIR))
        dtl_ctx_add_path(ctx, DTL_STDLIB_DIR);
#endif
}
