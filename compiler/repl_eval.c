/* compiler/repl_eval.c — the session of `dtlc repl`: its source, checking, evaluation.
 *
 * The session is kept as SOURCE: the declarations typed or loaded so far (entries, each a
 * piece of the text it came from). Every input is checked by putting the session's source
 * and the new text together into one module and running the ordinary checker on it, with
 * lang/check.h's hooks adding the tensors computed at the prompt (by name and type) and the
 * tensor constructors. That is simple and always right: a redefinition replaces the entry
 * of that name, and if anything that depends on it stops checking, the input is refused and
 * the session stays as it was. Diagnostics are mapped back from the session's source to the
 * text they came from (the input line, or the loaded file, with its own line numbers).
 *
 * What an input does:
 *   expression       checked as `let __repl_expr = EXPR`; a tensor is lowered
 *                    (dtl_lower_expr), planned and run, and printed; a host value printed as
 *                    the checker folded it; anything else shows its type.
 *   let NAME = E     (or NAME = E) E is checked as an expression first, so `a = a * 2`
 *                    means the old `a`. A tensor becomes a VALUE of the session (host memory,
 *                    an INPUT of the graphs that use it); a host value becomes the entry
 *                    `let NAME = <its value>`; a model instance (`let d = nn.Dense(3, 2)`) or
 *                    anything else becomes an entry as written.
 *   declarations     (use, model, fn, dataset, train, several lets) entries, as in a file.
 *
 * Instances made at the prompt keep their params in the session's store under "d.w"; a
 * change of the declarations makes the store anew (params kept where name, dtype and shape
 * are unchanged, made with their initializers otherwise). A change is committed only when
 * the session it makes checks AND works: that store can be made and the newest train block
 * lowers (a tensor of the prompt in a param's initializer or a trained model passes the
 * checker, not lowering). A tensor assigned with a new type or under a new name is checked
 * with the session too (`x = ones(4)` when a fn needs x as f32[3]; `relu = ones(2)`), so no
 * input can leave a session where nothing checks. Compiled plans are cached by (expression
 * text, declarations' generation, a hash of every source the check read — the session's
 * and the modules `use` read from disk, which may have been edited —, values' shapes
 * generation, backend) and the cache is emptied whenever the declarations, the store or
 * the backend change.
 */
#include "repl_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lang/parse.h"
#include "../lang/print.h"
#include "../kernels/cuda/cuda.h"
#include "lower.h"
#include "repl_ctors.h"

#if defined(HAVE_LLVM) && defined(__has_include)
#if __has_include("llvm/llvm.h")
#include "llvm/llvm.h"
#define REPL_HAVE_LLVM 1
#endif
#endif

static const char EXPR_NAME[] = "__repl_expr";
static const char EXPR_LEAD[] = "let __repl_expr = ";

/* ---- small things ------------------------------------------------------------------------ */

static char *xstrndup(const char *s, size_t n)
{
    char *r = malloc(n + 1);
    if (r) {
        memcpy(r, s, n);
        r[n] = '\0';
    }
    return r;
}

static bool oom(repl *R)
{
    repl_error(R, "out of memory");
    return false;
}

repl_origin *repl_origin_new(repl *R, const char *name, const char *text, size_t len,
                             uint32_t line)
{
    repl_origin *o = calloc(1, sizeof *o);
    if (!o || !(o->name = strdup(name)) || !(o->text = xstrndup(text, len))) {
        if (o)
            free(o->name);
        free(o);
        oom(R);
        return NULL;
    }
    o->len = len;
    o->line = line;
    o->next = R->origins;
    R->origins = o;
    return o;
}

static bool is_ident_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_ident(int c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9');
}

/* Skips blanks, newlines and comments. */
static size_t skip_space(const char *t, size_t n, size_t i)
{
    while (i < n) {
        if (t[i] == '#') {
            while (i < n && t[i] != '\n')
                i++;
        } else if (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r') {
            i++;
        } else {
            break;
        }
    }
    return i;
}

repl_kind repl_classify(const char *t, size_t n, size_t *name_len)
{
    static const char *const decl_words[] = {"use", "model", "fn", "dataset", "train", "let"};
    size_t i = skip_space(t, n, 0), s = i;
    if (i < n && is_ident_start((unsigned char)t[i])) {
        while (i < n && is_ident((unsigned char)t[i]))
            i++;
        for (size_t k = 0; k < sizeof decl_words / sizeof decl_words[0]; k++)
            if (strlen(decl_words[k]) == i - s && memcmp(t + s, decl_words[k], i - s) == 0)
                return REPL_DECLS;
        size_t j = i;
        while (j < n && (t[j] == ' ' || t[j] == '\t'))
            j++;
        if (j < n && t[j] == '=' && (j + 1 >= n || t[j + 1] != '=')) {
            if (name_len)
                *name_len = i;   /* up to the name's end, from the text's start */
            return REPL_ASSIGN;
        }
    }
    return REPL_EXPR;
}

static const char *lead_of(repl_kind k)
{
    return k == REPL_EXPR ? EXPR_LEAD : k == REPL_ASSIGN ? "let " : "";
}

/* A context set up for the session. */
static void ctx_open(repl *R, dtl_ctx *ctx)
{
    dtl_ctx_init(ctx);
    for (size_t i = 0; i < R->o->nincludes; i++)
        dtl_ctx_add_path(ctx, R->o->includes[i]);
    for (size_t i = 0; i < R->ndirs; i++)
        dtl_ctx_add_path(ctx, R->dirs[i]);
    dtl_ctx_add_default_paths(ctx);
    ctx->warn_unused = false;
    /* Not dtlc's 50: `:load notes.txt` need not fill the screen. */
    ctx->diags.max_errors = REPL_MAX_ERRORS;
}

/* Where the last token of t ends: past trailing blanks, newlines and comments (a '#' in a
 * string is no comment). */
static size_t content_end(const char *t, size_t n)
{
    size_t end = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (ch == '#') {
            while (i + 1 < n && t[i + 1] != '\n')
                i++;
        } else if (ch == '"') {
            for (i++; i < n && t[i] != '"' && t[i] != '\n'; i++)
                if (t[i] == '\\' && i + 1 < n && t[i + 1] != '\n')
                    i++;
            end = i < n ? i + 1 : n;
        } else if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') {
            end = i + 1;
        }
    }
    return end;
}

bool repl_complete(repl *R, const char *text, size_t len, repl_kind kind)
{
    const char *lead = lead_of(kind);
    size_t ll = strlen(lead), n = content_end(text, len);
    char *buf = malloc(ll + len + 1);
    if (!buf)
        return true;
    memcpy(buf, lead, ll);
    memcpy(buf + ll, text, len);
    dtl_ctx ctx;
    ctx_open(R, &ctx);
    const dtl_source *src = dtl_src_add(&ctx.sources, "<repl>", buf, ll + len);
    free(buf);
    dtl_parse(&ctx, src);
    bool complete = true;
    for (const dtl_diag *d = ctx.diags.first; d; d = d->next)
        if (d->level == DTL_DIAG_ERROR) {
            /* The first error is at the very end: more text could mend it. */
            complete = d->span.off < ll + n;
            break;
        }
    dtl_ctx_free(&ctx);
    return complete;
}

/* ---- values --------------------------------------------------------------------------------- */

repl_value *repl_value_find(repl *R, const char *name)
{
    for (size_t i = 0; i < R->nvalues; i++)
        if (strcmp(R->values[i].name, name) == 0)
            return &R->values[i];
    return NULL;
}

static void value_free(repl_value *v)
{
    free(v->name);
    free(v->data);
}

static void value_remove(repl *R, const char *name)
{
    for (size_t i = 0; i < R->nvalues; i++)
        if (strcmp(R->values[i].name, name) == 0) {
            value_free(&R->values[i]);
            memmove(&R->values[i], &R->values[i + 1],
                    (R->nvalues - i - 1) * sizeof *R->values);
            R->nvalues--;
            R->shape_gen++;
            return;
        }
}

/* Binds name to a copy of t. */
static bool value_set(repl *R, const char *name, const dtl_tensor *t)
{
    size_t nbytes = (size_t)dtl_tensor_numel(t) * dtl_dtype_size(t->dtype);
    void *data = malloc(nbytes ? nbytes : 1);
    if (!data)
        return oom(R);
    memcpy(data, t->data, nbytes);
    repl_value *v = repl_value_find(R, name);
    if (v) {
        if (v->dtype != t->dtype || v->rank != t->rank ||
            memcmp(v->shape, t->shape, t->rank * sizeof *t->shape) != 0)
            R->shape_gen++;
        free(v->data);
    } else {
        char *nm = strdup(name);
        if (!nm || R->nvalues == R->capvalues) {
            size_t cap = R->capvalues ? R->capvalues * 2 : 8;
            repl_value *nv = nm ? realloc(R->values, cap * sizeof *nv) : NULL;
            if (!nv) {
                free(nm);
                free(data);
                return oom(R);
            }
            R->values = nv;
            R->capvalues = cap;
        }
        v = &R->values[R->nvalues++];
        memset(v, 0, sizeof *v);
        v->name = nm;
        R->shape_gen++;
    }
    v->dtype = t->dtype;
    v->rank = t->rank;
    memset(v->shape, 0, sizeof v->shape);
    memcpy(v->shape, t->shape, t->rank * sizeof *t->shape);
    v->data = data;
    v->nbytes = nbytes;
    return true;
}

/* The hook: a value's type. */
static dtl_type *hook_global(void *user, dtl_arena *a, const char *name)
{
    repl_value *v = repl_value_find(user, name);
    if (!v)
        return NULL;
    const dtl_dim **dims = dtl_arena_array(a, v->rank ? v->rank : 1, sizeof *dims);
    for (uint32_t i = 0; i < v->rank; i++)
        dims[i] = dtl_dim_const(a, v->shape[i]);
    return dtl_type_tensor(a, v->dtype, v->rank, dims);
}

/* ---- checking the session ------------------------------------------------------------------- */

static bool skipped(const char *name, char *const *skip, size_t nskip)
{
    for (size_t i = 0; i < nskip; i++)
        if (strcmp(skip[i], name) == 0)
            return true;
    return false;
}

bool repl_check(repl *R, const repl_piece *extra, size_t nextra, char *const *skip,
                size_t nskip, repl_checked *c)
{
    memset(c, 0, sizeof *c);
    ctx_open(R, &c->ctx);
    size_t np = 0;
    for (size_t i = 0; i < R->nentries; i++)
        np += !skipped(R->entries[i].name, skip, nskip);
    np += nextra;
    c->pieces = calloc(np ? np : 1, sizeof *c->pieces);
    c->maps = calloc(np ? np : 1, sizeof *c->maps);
    if (!c->pieces || !c->maps)
        return oom(R);
    size_t k = 0;
    for (size_t i = 0; i < R->nentries; i++)
        if (!skipped(R->entries[i].name, skip, nskip))
            c->pieces[k++] = R->entries[i].piece;
    for (size_t i = 0; i < nextra; i++)
        c->pieces[k++] = extra[i];
    c->nmaps = np;
    size_t total = 1;
    for (size_t i = 0; i < np; i++)
        total += strlen(c->pieces[i].lead) + c->pieces[i].len + 1;
    char *text = malloc(total);
    if (!text)
        return oom(R);
    size_t at = 0;
    for (size_t i = 0; i < np; i++) {
        const repl_piece *p = &c->pieces[i];
        size_t ll = strlen(p->lead);
        memcpy(text + at, p->lead, ll);
        at += ll;
        c->maps[i].lead = ll;
        c->maps[i].soff = at;
        c->maps[i].piece = p;
        memcpy(text + at, p->origin->text + p->off, p->len);
        at += p->len;
        text[at++] = '\n';
    }
    text[at] = '\0';
    c->src = dtl_src_add(&c->ctx.sources, "<repl>", text, at);
    free(text);
    size_t nb;
    dtl_check_hooks hooks = {hook_global, dtl_ctor_table(&nb), 0, dtl_ctor_rule, true, R};
    hooks.nbuiltins = nb;
    c->m = dtl_check_source_hooks(&c->ctx, c->src, &hooks);
    c->ok = c->m && c->ctx.diags.nerrors == 0;
    return c->ok;
}

void repl_checked_free(repl_checked *c)
{
    if (!c)
        return;
    dtl_ctx_free(&c->ctx);
    free(c->maps);
    free(c->pieces);
    memset(c, 0, sizeof *c);
}

/* The map whose piece holds session offset off (NULL: none). */
static const repl_map *map_at(const repl_checked *c, uint32_t off)
{
    /* A piece owns its lead, its text and the newline after it. */
    for (size_t i = 0; i < c->nmaps; i++) {
        const repl_map *m = &c->maps[i];
        if (off + m->lead >= m->soff && off <= m->soff + m->piece->len)
            return m;
    }
    if (c->nmaps && off >= c->maps[c->nmaps - 1].soff)   /* the end of the source */
        return &c->maps[c->nmaps - 1];
    return NULL;
}

typedef struct display {
    dtl_srcmgr sm;
    repl_origin **origins;   /* per added source */
    size_t n;
    uint32_t base;           /* ids above base are origins */
} display;

static uint32_t display_id(display *D, dtl_arena *a, repl_origin *o)
{
    for (size_t i = 0; i < D->n; i++)
        if (D->origins[i] == o)
            return D->base + (uint32_t)i + 1;
    D->origins = dtl_arena_grow(a, D->origins, D->n, D->n + 1, sizeof *D->origins);
    D->origins[D->n++] = o;
    dtl_source *s = dtl_arena_alloc(a, sizeof *s);
    s->id = D->base + (uint32_t)D->n;
    s->path = o->name;
    s->text = o->shown ? o->shown : o->text;
    s->len = o->shown ? o->shown_len : o->len;
    D->sm.files = dtl_arena_grow(a, D->sm.files, D->sm.nfiles, D->sm.nfiles + 1,
                                 sizeof *D->sm.files);
    D->sm.files[D->sm.nfiles++] = s;
    D->sm.cap = D->sm.nfiles;
    return s->id;
}

/* A span of the session's source, mapped to where its text came from; *piece: its piece. */
static dtl_span remap(const repl_checked *c, display *D, dtl_arena *a, dtl_span sp,
                      const repl_piece **piece)
{
    *piece = NULL;
    if (!c->src || sp.file != c->src->id)
        return sp;
    const repl_map *m = map_at(c, sp.off);
    if (!m)
        return sp;
    const repl_piece *p = m->piece;
    *piece = p;
    size_t rel = sp.off >= m->soff ? sp.off - m->soff : 0;
    if (rel > p->len)
        rel = p->len;
    size_t off = p->off + rel;
    uint32_t line = p->origin->line, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (p->origin->text[i] == '\n')
            line++, col = 1;
        else
            col++;
    }
    dtl_span r = sp;
    r.file = display_id(D, a, p->origin);
    r.off = (uint32_t)off;
    r.line = line;
    r.col = col;
    size_t end = p->off + p->len;
    if (r.off + (size_t)r.len > end)
        r.len = (uint32_t)(end > r.off ? end - r.off : 0);
    return r;
}

/* A message's own places ("to close '{' at 2:9") are lines and columns of the session's
 * source too: they are rewritten to where that text came from. */
static const char *fix_places(const repl_checked *c, dtl_arena *a, const char *msg)
{
    const char *at = strstr(msg, " at ");
    if (!at)
        return msg;
    char *out = dtl_arena_strdup(a, "");
    const char *from = msg;
    for (; at; at = strstr(at + 1, " at ")) {
        unsigned line, col;
        int used = 0;
        if (sscanf(at, " at %u:%u%n", &line, &col, &used) != 2 || used == 0 || line == 0)
            continue;
        /* The session offset of line:col, then its origin's line:col. */
        const char *t = c->src->text;
        size_t off = 0;
        for (unsigned l = 1; l < line && off < c->src->len; off++)
            if (t[off] == '\n')
                l++;
        off += col - 1;
        if (off > c->src->len)
            continue;
        display D;
        memset(&D, 0, sizeof D);
        dtl_span sp = {c->src->id, line, col, (uint32_t)off, 0};
        const repl_piece *p;
        sp = remap(c, &D, a, sp, &p);
        if (!p)
            continue;
        out = dtl_arena_printf(a, "%s%.*s at %u:%u", out, (int)(at - from), from, sp.line,
                               sp.col);
        from = at + used;
    }
    return dtl_arena_printf(a, "%s%s", out, from);
}

static bool same_piece(const repl_piece *a, const repl_piece *b)
{
    return a && b && a->origin == b->origin && a->off == b->off && a->len == b->len;
}

/* Is piece a part of the text of piece b? */
static bool within(const repl_piece *a, const repl_piece *b)
{
    return a && b && a->origin == b->origin && a->off >= b->off &&
           a->off + a->len <= b->off + b->len;
}

void repl_report(repl *R, repl_checked *c, const repl_piece *focus)
{
    dtl_arena *a = &c->ctx.arena;
    display D;
    memset(&D, 0, sizeof D);
    D.sm = c->ctx.sources;
    D.sm.files = dtl_arena_array(a, D.sm.nfiles ? D.sm.nfiles : 1, sizeof *D.sm.files);
    memcpy(D.sm.files, c->ctx.sources.files, D.sm.nfiles * sizeof *D.sm.files);
    D.base = D.sm.nfiles;
    dtl_diags out;
    dtl_diag_init(&out, a, &D.sm);
    out.max_errors = 0;
    bool keep = false;
    for (const dtl_diag *g = c->ctx.diags.first; g; g = g->next) {
        const repl_piece *p;
        dtl_span sp = remap(c, &D, a, g->span, &p);
        if (g->level == DTL_DIAG_ERROR)
            keep = true;
        else if (g->level == DTL_DIAG_WARNING)
            keep = !focus || !p || within(p, focus);
        if (!keep)
            continue;
        const char *msg = c->src && g->span.file == c->src->id ? fix_places(c, a, g->msg)
                                                                : g->msg;
        if (g->level == DTL_DIAG_ERROR)
            dtl_diag_error(&out, sp, "%s", msg);
        else if (g->level == DTL_DIAG_WARNING)
            dtl_diag_warning(&out, sp, "%s", msg);
        else
            dtl_diag_note(&out, sp, "%s", msg);
    }
    fflush(R->out);
    dtl_diag_print(&out, R->err, R->color);
    unsigned n = c->ctx.diags.nerrors, max = c->ctx.diags.max_errors;
    if (max && n > max)
        fprintf(R->err, "dtlc: error: too many errors (%u); only the first %u are shown\n", n,
                max);
    else if (max && n == max)
        repl_note(R, "stopped at %u errors; there may be more", max);
    fflush(R->err);
    if (c->ctx.diags.nerrors)
        R->nerrors++;
}

dtl_expr *repl_expr_of(repl_checked *c)
{
    dtl_sym *s = c->m ? dtl_module_lookup(c->m, EXPR_NAME) : NULL;
    return s && s->decl ? s->decl->u.bind.value : NULL;
}

bool repl_check_expr(repl *R, repl_origin *o, size_t off, size_t len, repl_checked *c)
{
    repl_piece p = {EXPR_LEAD, o, off, len};
    if (!repl_check(R, &p, 1, NULL, 0, c)) {
        repl_report(R, c, &p);
        return false;
    }
    if (!repl_expr_of(c)) {
        repl_error(R, "internal error: the expression was lost");
        return false;
    }
    return true;
}

/* ---- backends, plans, the cache ---------------------------------------------------------- */

typedef struct backend_row {
    const char *name;
    const dtl_backend *be;   /* NULL: not in this build */
    const char *why;
} backend_row;

static const backend_row backend_rows[] = {
    {"ref", &dtl_backend_ref, NULL},
#ifdef REPL_HAVE_LLVM
    {"llvm", &dtl_backend_llvm, NULL},
#else
    {"llvm", NULL, "this build has no LLVM backend (configure --with-llvm)"},
#endif
    {"cuda", NULL, NULL},   /* a plugin: loaded when asked for (kernels/cuda/cuda.h) */
};

const char *repl_default_backend(void)
{
#ifdef REPL_HAVE_LLVM
    return "llvm";
#else
    return "ref";
#endif
}

bool repl_set_backend(repl *R, const char *name)
{
    for (size_t i = 0; i < sizeof backend_rows / sizeof backend_rows[0]; i++) {
        const backend_row *b = &backend_rows[i];
        if (strcmp(b->name, name) != 0)
            continue;
        const dtl_backend *be = b->be;
        if (strcmp(name, "cuda") == 0) {
            /* Refused now, rather than at the next evaluation, when no GPU can be used. */
            char why[256];
            dtl_err err = {DTL_ERR_NONE, ""};
            if (!dtl_cuda_available(why, sizeof why)) {
                repl_error(R, "backend 'cuda': %s", why);
                return false;
            }
            if (!(be = dtl_cuda_backend(&err))) {
                repl_error(R, "%s", err.msg);
                return false;
            }
        }
        if (!be) {
            repl_error(R, "backend '%s': %s", name, b->why);
            return false;
        }
        if (R->be != be) {
            repl_cache_flush(R);
            R->be = be;
            R->be_name = b->name;
            if (R->trainer.tr) {
                dtl_err err = {DTL_ERR_NONE, ""};
                if (!dtl_trainer_set_backend(R->trainer.tr, name, &err)) {
                    repl_note(R, "the training goes on on its backend: %s", err.msg);
                }
            }
        }
        return true;
    }
    repl_error(R, "unknown backend '%s'; expected ref, llvm or cuda", name);
    return false;
}

static void cached_free(repl_cached *e)
{
    if (!e->key)
        return;
    dtl_plan_free(e->plan);
    dtl_graph_free(&e->g);
    free(e->key);
    memset(e, 0, sizeof *e);
}

void repl_cache_flush(repl *R)
{
    for (size_t i = 0; i < REPL_CACHE_SLOTS; i++)
        cached_free(&R->cache[i]);
}

/* Memory a graph's tensors take at most (every node on its own). */
static uint64_t graph_bytes(const dtl_graph *g)
{
    uint64_t b = 0;
    for (uint32_t i = 0; i < g->nnodes; i++) {
        uint64_t n = dtl_node_numel(&g->nodes[i]) * dtl_dtype_size(g->nodes[i].dtype);
        b = b + n < b ? UINT64_MAX : b + n;
    }
    return b;
}

static uint64_t memory_limit(void)
{
    const char *env = getenv("DTL_REPL_MAX_BYTES");
    if (env && *env) {
        char *end;
        unsigned long long v = strtoull(env, &end, 10);
        if (!*end && v > 0)
            return v;
    }
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || size <= 0)
        return (uint64_t)4 << 30;
    return (uint64_t)pages * (uint64_t)size / 2;
}

static const char *bytes_str(char *buf, size_t len, uint64_t b)
{
    if (b >= (uint64_t)1 << 30)
        snprintf(buf, len, "%.1f GiB", (double)b / (double)((uint64_t)1 << 30));
    else if (b >= (uint64_t)1 << 20)
        snprintf(buf, len, "%.1f MiB", (double)b / (double)((uint64_t)1 << 20));
    else
        snprintf(buf, len, "%" PRIu64 " bytes", b);
    return buf;
}

dtl_plan *repl_plan(repl *R, const dtl_graph *g)
{
    uint64_t need = graph_bytes(g), lim = memory_limit();
    if (need > lim) {
        char a[32], b[32];
        repl_error(R, "this needs up to %s of memory, more than the session allows (%s: half "
                   "of this machine's memory, or $DTL_REPL_MAX_BYTES)",
                   bytes_str(a, sizeof a, need), bytes_str(b, sizeof b, lim));
        return NULL;
    }
    dtl_err err = {DTL_ERR_NONE, ""};
    dtl_plan *p = dtl_plan_new(R->be, g, R->store, NULL, &err);
    if (!p)
        repl_error(R, "%s", err.msg);
    return p;
}

bool repl_lower(repl *R, repl_checked *c, dtl_expr *e, dtl_graph *g)
{
    dtl_lower_opts lo = {.batch = 0, .compute = DTL_DTYPE_F32};
    if (dtl_lower_expr(&c->ctx, c->m, e, &lo, g))
        return true;
    repl_report(R, c, NULL);
    R->nerrors++;
    return false;
}

bool repl_run(repl *R, dtl_plan *p, const dtl_graph *g, dtl_tensor *t, bool *has_value)
{
    size_t nin = 0;
    for (uint32_t i = 0; i < g->nnodes; i++)
        nin += g->nodes[i].op == DTL_OP_INPUT;
    dtl_binding *in = calloc(nin ? nin : 1, sizeof *in);
    if (!in)
        return oom(R);
    /* The random streams' position: RNG_UNIFORM element i of a node of n elements is word
     * step * n + i of its stream. step is the smallest with every node of the graph past
     * the words drawn so far (rng_pos), so no draw ever repeats an earlier one. */
    uint64_t ustep = 0, next = R->rng_pos;   /* (unsigned: wraps as the kernels do) */
    for (uint32_t i = 0; i < g->nnodes; i++) {
        const dtl_node *n = &g->nodes[i];
        uint64_t numel = dtl_node_numel(n);
        if (n->op != DTL_OP_RNG_UNIFORM || numel == 0)
            continue;
        uint64_t s = R->rng_pos / numel + (R->rng_pos % numel != 0);
        ustep = s > ustep ? s : ustep;
    }
    for (uint32_t i = 0; i < g->nnodes; i++) {
        const dtl_node *n = &g->nodes[i];
        uint64_t numel = dtl_node_numel(n);
        if (n->op == DTL_OP_RNG_UNIFORM && numel > 0 && (ustep + 1) * numel > next)
            next = (ustep + 1) * numel;
    }
    int64_t step = (int64_t)ustep;
    size_t k = 0;
    for (uint32_t i = 0; i < g->nnodes; i++) {
        const dtl_node *n = &g->nodes[i];
        if (n->op != DTL_OP_INPUT)
            continue;
        dtl_binding *b = &in[k++];
        b->name = n->name;
        if (strcmp(n->name, "repl.step") == 0) {
            b->data = &step;
            b->dtype = DTL_DTYPE_I64;
            b->rank = 0;
            continue;
        }
        repl_value *v = repl_value_find(R, n->name);
        if (!v) {
            free(in);
            repl_error(R, "'%s' has no value in this session", n->name);
            return false;
        }
        b->data = v->data;
        b->dtype = v->dtype;
        b->rank = v->rank;
        memcpy(b->shape, v->shape, sizeof b->shape);
    }
    dtl_err err = {DTL_ERR_NONE, ""};
    bool ok = dtl_plan_run(p, in, nin, &err);
    free(in);
    R->rng_pos = next;
    if (!ok) {
        repl_error(R, "%s", err.msg);
        return false;
    }
    *has_value = false;
    for (uint32_t i = 0; i < g->nouts; i++)
        if (strcmp(g->outs[i].name, "result") == 0)
            *has_value = true;
    if (*has_value && !dtl_plan_output(p, "result", t, &err)) {
        repl_error(R, "%s", err.msg);
        return false;
    }
    return true;
}

/* A hash (FNV-1a) of every source the check of c read: the session's and the modules that
 * `use` found on disk, which may have been edited since the last input. */
static uint64_t sources_hash(const repl_checked *c, bool modules_only)
{
    uint64_t h = 14695981039346656037u;
    for (uint32_t i = 0; i < c->ctx.sources.nfiles; i++) {
        const dtl_source *f = c->ctx.sources.files[i];
        if (modules_only && f == c->src)
            continue;
        for (size_t k = 0; f && k <= f->len; k++) {   /* (and the NUL after it) */
            h ^= k < f->len ? (unsigned char)f->text[k] : 0x100u;
            h *= 1099511628211u;
        }
    }
    return h;
}

/* Lowers and plans e, or finds it in the cache under key (text of the expression, the
 * sources it was checked with, the shapes of the session's tensors, the backend). */
static repl_cached *compiled(repl *R, repl_checked *c, dtl_expr *e, const char *text)
{
    char *key = malloc(strlen(text) + 128);
    if (!key) {
        oom(R);
        return NULL;
    }
    sprintf(key, "%s\x01%" PRIu64 ":%016" PRIx64 ":%" PRIu64 ":%s", text, R->decl_gen,
            sources_hash(c, false), R->shape_gen, R->be_name);
    repl_cached *slot = NULL;
    /* $DTL_REPL_TRACE: say on stderr whether a plan is compiled or reused (for tests). */
    const char *trace = getenv("DTL_REPL_TRACE");
    bool tr = trace && *trace && strcmp(trace, "0") != 0;
    for (size_t i = 0; i < REPL_CACHE_SLOTS; i++)
        if (R->cache[i].key && strcmp(R->cache[i].key, key) == 0) {
            free(key);
            R->cache[i].used = ++R->stamp;
            if (tr) {
                fflush(R->out);
                fprintf(R->err, "trace: plan reused\n");
            }
            return &R->cache[i];
        }
    for (size_t i = 0; i < REPL_CACHE_SLOTS; i++) {   /* a free slot, else the oldest */
        repl_cached *e = &R->cache[i];
        if (!e->key) {
            slot = e;
            break;
        }
        if (!slot || e->used < slot->used)
            slot = e;
    }
    cached_free(slot);
    if (!repl_lower(R, c, e, &slot->g)) {
        free(key);
        return NULL;
    }
    if (!(slot->plan = repl_plan(R, &slot->g))) {
        dtl_graph_free(&slot->g);
        free(key);
        return NULL;
    }
    slot->key = key;
    slot->used = ++R->stamp;
    if (tr) {
        fflush(R->out);
        fprintf(R->err, "trace: plan compiled (%" PRIu32 " nodes)\n", slot->g.nnodes);
    }
    return slot;
}

/* Evaluates tensor expression e (typed as `text`); *t views its value. */
static bool eval_tensor(repl *R, repl_checked *c, dtl_expr *e, const char *text, dtl_tensor *t)
{
    repl_cached *k = compiled(R, c, e, text);
    if (!k)
        return false;
    bool has = false;
    if (!repl_run(R, k->plan, &k->g, t, &has))
        return false;
    if (!has) {
        repl_error(R, "internal error: the expression has no value");
        return false;
    }
    if (repl_interrupted()) {
        if (R->interactive)
            fputc('\n', R->out);   /* after the terminal's "^C" */
        repl_note(R, "interrupted: the result is dropped");
        return false;
    }
    return true;
}

/* ---- the store of the prompt's instances ----------------------------------------------------- */

/* The store the session needs once checked module c is its source: the params of c's
 * instance lets (`let d = nn.Dense(3, 2)`), kept from the session's store where name, dtype
 * and shape are unchanged, made anew with their initializers otherwise. NULL when one of
 * them cannot be lowered or made (reported): the input that made c is then refused. */
static dtl_store *store_build(repl *R, repl_checked *c)
{
    dtl_err serr = {DTL_ERR_NONE, ""};
    if (!dtl_store_sync(R->store, DTL_SYNC_TO_HOST, &serr)) {   /* (a cuda mirror) */
        repl_error(R, "%s", serr.msg);
        return NULL;
    }
    dtl_store *ns = dtl_store_new(dtl_store_seed(R->store));
    if (!ns) {
        oom(R);
        return NULL;
    }
    bool ok = true;
    const dtl_file *f = c->m ? c->m->file : NULL;
    for (size_t i = 0; f && i < f->ndecls && ok; i++) {
        const dtl_decl *d = f->decls[i];
        if (d->kind != DTL_DECL_LET || !d->name.text || strncmp(d->name.text, "__repl", 6) == 0)
            continue;
        dtl_sym *s = dtl_module_lookup(c->m, d->name.text);
        if (!s || !s->type || s->type->kind != DTL_TYPE_INSTANCE)
            continue;
        dtl_expr *ne = dtl_ast_expr(&c->ctx, DTL_EXPR_NAME, s->span);
        ne->u.name.text = s->name;
        ne->u.name.span = s->span;
        ne->sym = s;
        ne->type = s->type;
        dtl_graph g;
        if (!repl_lower(R, c, ne, &g)) {
            ok = false;
            break;
        }
        dtl_err err = {DTL_ERR_NONE, ""};
        for (uint32_t k = 0; k < g.nnodes && ok; k++) {
            const dtl_node *n = &g.nodes[k];
            if (n->op != DTL_OP_PARAM)
                continue;
            dtl_store_entry *old = dtl_store_find(R->store, n->name);
            bool same = old && old->t.dtype == n->dtype && old->t.rank == n->rank &&
                        memcmp(old->t.shape, n->shape, n->rank * sizeof *n->shape) == 0;
            if (!same || dtl_store_find(ns, n->name))
                continue;   /* dtl_store_bind makes it, with its initializer */
            dtl_store_entry *e = dtl_store_add(ns, n->name, false, n->dtype, n->rank, n->shape,
                                               NULL, &err);
            if (!e) {
                ok = false;
                repl_error(R, "%s", err.msg);
            } else {
                memcpy(e->t.data, old->t.data,
                       (size_t)dtl_tensor_numel(&e->t) * dtl_dtype_size(e->t.dtype));
            }
        }
        if (ok && !dtl_store_bind(ns, &g, &err)) {   /* the new ones get their init */
            repl_error(R, "%s", err.msg);
            ok = false;
        }
        dtl_graph_free(&g);
    }
    if (!ok) {
        dtl_store_free(ns);
        return NULL;
    }
    return ns;
}

/* Can the newest train block of c be lowered? (The checker passes some things lowering
 * refuses: a tensor computed at the prompt used in the model a train block trains.) */
static bool train_lowers(repl *R, repl_checked *c)
{
    if (!c->m || c->m->ntrains == 0)
        return true;
    const dtl_train *t = c->m->trains[c->m->ntrains - 1];
    dtl_lower_opts lo = {.batch = 0, .compute = DTL_DTYPE_F32};
    dtl_graph g;
    if (!dtl_lower_graph(&c->ctx, t, DTL_LOWER_STEP, &lo, &g)) {
        repl_report(R, c, NULL);
        R->nerrors++;
        return false;
    }
    dtl_graph_free(&g);
    return true;
}

/* Before new declarations are committed: does the session they make work beyond the
 * checker (its instances' params made, its train block lowered)? Then *ns is its store. */
static bool decls_usable(repl *R, repl_checked *c, dtl_store **ns)
{
    *ns = NULL;
    if (!train_lowers(R, c))
        return false;
    *ns = store_build(R, c);
    return *ns != NULL;
}

/* ---- entries ---------------------------------------------------------------------------------- */

static void entry_free(repl_entry *e)
{
    free(e->name);
    free(e->lead);
    free(e->what);
}

/* The entries named in names[0..n) leave; the trainer goes stale if it was made from one. */
static void entries_remove(repl *R, char *const *names, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < R->nentries; i++) {
        repl_entry *e = &R->entries[i];
        if (skipped(e->name, names, n)) {
            if (R->trainer.tr && e->id <= R->trainer.newest)
                R->trainer.stale = true;
            entry_free(e);
        } else {
            R->entries[k++] = *e;
        }
    }
    R->nentries = k;
}

static bool entry_add(repl *R, const repl_entry *e)
{
    if (R->nentries == R->capentries) {
        size_t cap = R->capentries ? R->capentries * 2 : 16;
        repl_entry *ne = realloc(R->entries, cap * sizeof *ne);
        if (!ne)
            return oom(R);
        R->entries = ne;
        R->capentries = cap;
    }
    R->entries[R->nentries] = *e;
    R->entries[R->nentries].id = ++R->next_id;
    R->nentries++;
    return true;
}

/* The name a declaration binds ("" for an unnamed train block), malloc'd. */
static char *decl_name(const dtl_decl *d)
{
    if (d->kind == DTL_DECL_USE)
        return strdup(d->u.use.nparts ? d->u.use.parts[d->u.use.nparts - 1].text : "");
    return strdup(d->name.text ? d->name.text : "");
}

/* How :load lists a declaration: "model MLP", "train MLP()". */
static char *decl_what(dtl_arena *a, const dtl_decl *d)
{
    const char *s;
    switch (d->kind) {
    case DTL_DECL_USE: s = dtl_arena_printf(a, "use %s", d->u.use.nparts ?
                                            d->u.use.parts[d->u.use.nparts - 1].text : ""); break;
    case DTL_DECL_TRAIN:
        s = d->name.text ? dtl_arena_printf(a, "train %s", d->name.text)
                         : dtl_arena_printf(a, "train %s", dtl_print_expr(a, d->u.train.model));
        break;
    default:
        s = dtl_arena_printf(a, "%s %s", dtl_decl_kind_name(d->kind),
                             d->name.text ? d->name.text : "");
    }
    return strdup(s);
}

/* After the declarations changed: a new generation, and ns (from decls_usable) becomes the
 * session's store. */
static void decls_changed(repl *R, dtl_store *ns)
{
    R->decl_gen++;
    repl_cache_flush(R);   /* (its plans were made with the old store) */
    dtl_store_free(R->store);
    R->store = ns;
}

/* Commits a checked set of new entries: those of the same names leave, values of those
 * names too. */
static bool commit(repl *R, repl_entry *news, size_t n, char **names)
{
    entries_remove(R, names, n);
    for (size_t i = 0; i < n; i++)
        value_remove(R, names[i]);
    for (size_t i = 0; i < n; i++)
        if (!entry_add(R, &news[i])) {
            for (size_t k = i; k < n; k++)
                entry_free(&news[k]);
            return false;
        }
    return true;
}

/* ---- inputs -------------------------------------------------------------------------------- */

/* A host value known now (its value can be written out). */
static bool host_known(const dtl_type *t)
{
    switch (t->kind) {
    case DTL_TYPE_INT: return dtl_type_int_const(t, NULL);
    case DTL_TYPE_FLOAT: return t->u.f.known;
    case DTL_TYPE_BOOL: return t->u.b.known;
    case DTL_TYPE_STR: return t->u.s.bytes != NULL;
    default: return false;
    }
}

/* Prints a non-tensor value of type t. */
static void print_other(repl *R, repl_checked *c, const dtl_type *t)
{
    const char *s = dtl_type_is_host(t) ? dtl_value_print(&c->ctx.arena, t, c->m)
                                        : dtl_type_print(&c->ctx.arena, t, c->m);
    fprintf(R->out, "%s\n", s);
}

static void input_expr(repl *R, repl_origin *o)
{
    repl_checked c;
    if (repl_check_expr(R, o, 0, o->len, &c)) {
        dtl_expr *e = repl_expr_of(&c);
        const dtl_type *t = e->type;
        if (t && t->kind == DTL_TYPE_TENSOR) {
            dtl_tensor v;
            if (eval_tensor(R, &c, e, o->text, &v))
                repl_print_tensor(R->out, &v);
        } else if (t) {
            print_other(R, &c, t);
        }
    }
    repl_checked_free(&c);
}

/* `let NAME = E` alone, or `NAME = E`: name at [ns, ne) of o, E's piece from `after` on. */
static void input_let(repl *R, repl_origin *o, size_t ns, size_t ne, repl_kind kind)
{
    char *name = xstrndup(o->text + ns, ne - ns);
    if (!name) {
        oom(R);
        return;
    }
    /* E as an expression, NAME still meaning what it meant: `let __repl_expr` + the rest. */
    repl_piece p = {"let __repl_expr", o, ne, o->len - ne};
    repl_checked c;
    if (!repl_check(R, &p, 1, NULL, 0, &c)) {
        repl_report(R, &c, &p);
        goto out;
    }
    dtl_expr *e = repl_expr_of(&c);
    dtl_sym *s = dtl_module_lookup(c.m, EXPR_NAME);
    const dtl_type *t = s ? s->type : NULL;
    if (t && t->kind == DTL_TYPE_TENSOR && !(e->type && e->type->kind == DTL_TYPE_TENSOR)) {
        /* let a: f32 = 1: a host number given for a rank-0 tensor */
        repl_error(R, "give '%s' a tensor value (cast(1.0, f32)), or leave its type out", name);
        goto out;
    }
    if (!e || !t) {
        repl_error(R, "internal error: the value of '%s' was lost", name);
        goto out;
    }
    if (t->kind == DTL_TYPE_TENSOR) {
        dtl_tensor v;
        const char *text = o->text + ne;
        if (!eval_tensor(R, &c, e, text, &v))
            goto out;
        bool had_entry = false;
        for (size_t i = 0; i < R->nentries; i++)
            had_entry |= strcmp(R->entries[i].name, name) == 0;
        repl_value *old = repl_value_find(R, name);
        bool retyped = old && (old->dtype != v.dtype || old->rank != v.rank ||
                               memcmp(old->shape, v.shape, v.rank * sizeof *v.shape) != 0);
        if (!had_entry && old && !retyped) {
            value_set(R, name, &v);   /* (the same type: everything checks as before) */
            goto out;
        }
        /* The value replaces a declaration, changes its type, or is new (and might hide a
         * builtin: `relu = ones(2)`): what uses the name must still check, else it stays as
         * it was (the session must never stop checking). */
        repl_value saved;
        memset(&saved, 0, sizeof saved);
        char was[160] = "";
        if (old) {
            saved = *old;
            old->data = NULL;   /* (kept in saved) */
            repl_type_str(was, sizeof was, old->dtype, old->rank, old->shape);
        }
        if (!value_set(R, name, &v)) {
            if ((old = repl_value_find(R, name)) != NULL)
                *old = saved;
            goto out;
        }
        repl_checked c2;
        char *names[1] = {name};
        dtl_store *nst = NULL;
        bool ok = repl_check(R, NULL, 0, names, had_entry ? 1 : 0, &c2);
        if (!ok)
            repl_report(R, &c2, NULL);
        else if (had_entry)
            ok = decls_usable(R, &c2, &nst);
        if (!ok) {
            if (saved.name) {
                repl_value *cur = repl_value_find(R, name);
                free(cur->data);
                cur->data = saved.data;
                cur->dtype = saved.dtype;
                cur->rank = saved.rank;
                memcpy(cur->shape, saved.shape, sizeof cur->shape);
                cur->nbytes = saved.nbytes;
                R->shape_gen++;
                repl_note(R, "'%s' was not changed: what uses it (above) needs it to be %s",
                          name, was);
            } else {
                value_remove(R, name);
                if (had_entry)
                    repl_note(R, "'%s' was not changed: what uses it (above) needs it as "
                              "declared", name);
                else
                    repl_note(R, "'%s' was not set: what uses that name (above) needs it as "
                              "it is", name);
            }
        } else {
            free(saved.data);
            if (had_entry) {
                entries_remove(R, names, 1);
                decls_changed(R, nst);
            }
        }
        repl_checked_free(&c2);
        goto out;
    }
    /* A declaration: a host value by its value (so `n = n + 1` works), else as written. */
    repl_entry en;
    memset(&en, 0, sizeof en);
    en.kind = DTL_DECL_LET;
    if (!(en.name = strdup(name))) {
        oom(R);
        goto out;
    }
    if (host_known(t)) {
        const char *val = dtl_value_print(&c.ctx.arena, t, c.m);
        char *text = malloc(strlen(name) + strlen(val) + 8);
        if (text)
            sprintf(text, "let %s = %s", name, val);
        repl_origin *so = text ? repl_origin_new(R, o->name, text, strlen(text), o->line) : NULL;
        free(text);
        if (!so) {
            entry_free(&en);
            goto out;
        }
        en.piece = (repl_piece){"", so, 0, so->len};
    } else {
        en.piece = (repl_piece){kind == REPL_ASSIGN ? "let " : "", o, 0, o->len};
    }
    en.what = malloc(strlen(name) + 5);
    if (en.what)
        sprintf(en.what, "let %s", name);
    repl_checked c2;
    char *names[1] = {name};
    dtl_store *nst = NULL;
    if (!repl_check(R, &en.piece, 1, names, 1, &c2)) {
        repl_report(R, &c2, &en.piece);
        entry_free(&en);
    } else if (!decls_usable(R, &c2, &nst)) {
        entry_free(&en);
    } else if (commit(R, &en, 1, names)) {
        decls_changed(R, nst);
    } else {
        dtl_store_free(nst);
    }
    repl_checked_free(&c2);
out:
    repl_checked_free(&c);
    free(name);
}

/* Declarations, as in a file: all of origin o. */
static bool input_decls(repl *R, repl_origin *o, bool listing)
{
    /* Their names first, to leave out the entries they replace. */
    dtl_ctx pc;
    ctx_open(R, &pc);
    const dtl_source *src = dtl_src_add(&pc.sources, "<repl>", o->text, o->len);
    dtl_file *f = dtl_parse(&pc, src);
    size_t n = f->ndecls;
    bool ok = true;
    if (pc.diags.nerrors) {
        /* Report the syntax errors through a check (which stops at them). */
        dtl_ctx_free(&pc);
        repl_piece p = {"", o, 0, o->len};
        repl_checked c;
        repl_check(R, &p, 1, NULL, 0, &c);
        repl_report(R, &c, &p);
        repl_checked_free(&c);
        return false;
    }
    repl_entry *news = calloc(n ? n : 1, sizeof *news);
    char **names = calloc(n ? n : 1, sizeof *names);
    if (!news || !names) {
        free(news);
        free(names);
        dtl_ctx_free(&pc);
        return oom(R);
    }
    for (size_t i = 0; i < n && ok; i++) {
        const dtl_decl *d = f->decls[i];
        repl_entry *e = &news[i];
        e->kind = d->kind;
        e->name = decl_name(d);
        e->what = decl_what(&pc.arena, d);
        /* Spaces keep the first line's columns. */
        size_t col = d->span.col > 0 ? d->span.col - 1 : 0;
        e->lead = malloc(col + 1);
        ok = e->name && e->what && e->lead;
        if (ok) {
            memset(e->lead, ' ', col);
            e->lead[col] = '\0';
            e->piece = (repl_piece){e->lead, o, d->span.off, d->span.len};
            names[i] = e->name;
        }
        /* Two declarations of one name in the input: the checker reports it. */
    }
    dtl_ctx_free(&pc);
    repl_checked c;
    repl_piece *pieces = calloc(n ? n : 1, sizeof *pieces);
    if (!ok || !pieces) {
        ok = oom(R);
    } else {
        for (size_t i = 0; i < n; i++)
            pieces[i] = news[i].piece;
        repl_piece whole = {"", o, 0, o->len};
        dtl_store *nst = NULL;
        if (!repl_check(R, pieces, n, names, n, &c)) {
            repl_report(R, &c, &whole);
            ok = false;
        } else if (!decls_usable(R, &c, &nst)) {
            ok = false;
        } else {
            repl_report(R, &c, &whole);   /* warnings about it */
            size_t first = R->nentries;
            ok = commit(R, news, n, names);   /* the entries own news' strings now */
            if (!ok)
                dtl_store_free(nst);
            if (ok) {
                first = R->nentries - n;
                decls_changed(R, nst);
                if (listing) {
                    fprintf(R->out, "loaded %s", o->name);
                    for (size_t i = first; i < R->nentries; i++)
                        fprintf(R->out, "%s %s", i == first ? ":" : ",", R->entries[i].what);
                    fputc('\n', R->out);
                }
            }
            n = 0;
        }
        repl_checked_free(&c);
    }
    for (size_t i = 0; i < n; i++)
        entry_free(&news[i]);
    free(news);
    free(names);
    free(pieces);
    return ok;
}

void repl_input(repl *R, repl_origin *o, repl_kind kind)
{
    if (kind == REPL_EXPR) {
        input_expr(R, o);
        return;
    }
    size_t ns = 0, ne = 0;
    if (kind == REPL_ASSIGN) {
        repl_classify(o->text, o->len, &ne);
        ns = skip_space(o->text, o->len, 0);
        input_let(R, o, ns, ne, kind);
        return;
    }
    /* One `let NAME [: T] = E` alone computes E now; anything else is declarations. */
    dtl_ctx pc;
    ctx_open(R, &pc);
    const dtl_source *src = dtl_src_add(&pc.sources, "<repl>", o->text, o->len);
    dtl_file *f = dtl_parse(&pc, src);
    bool single_let = !pc.diags.nerrors && f->ndecls == 1 && f->decls[0]->kind == DTL_DECL_LET;
    if (single_let) {
        const dtl_decl *d = f->decls[0];
        ns = d->name.span.off;
        ne = ns + d->name.span.len;
    }
    dtl_ctx_free(&pc);
    if (single_let)
        input_let(R, o, ns, ne, kind);
    else
        input_decls(R, o, false);
}

bool repl_load(repl *R, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        repl_error(R, "cannot read '%s': %s", path, strerror(errno));
        return false;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = cap > DTL_SOURCE_MAX_BYTES ? NULL : realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                repl_error(R, "cannot read '%s': %s", path, cap > DTL_SOURCE_MAX_BYTES ?
                           "file too large" : "out of memory");
                return false;
            }
            buf = nb;
        }
        size_t k = fread(buf + len, 1, cap - len, f);
        len += k;
        if (k == 0)
            break;
    }
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (rerr) {
        free(buf);
        repl_error(R, "cannot read '%s': %s", path, strerror(rerr));
        return false;
    }
    /* `use` in the file looks next to it too. */
    const char *slash = strrchr(path, '/');
    char *dir = slash ? xstrndup(path, (size_t)(slash - path)) : NULL;
    bool known = !dir;
    for (size_t i = 0; dir && i < R->ndirs; i++)
        known |= strcmp(R->dirs[i], dir) == 0;
    if (!known) {
        char **nd = realloc(R->dirs, (R->ndirs + 1) * sizeof *nd);
        if (nd) {
            R->dirs = nd;
            R->dirs[R->ndirs++] = dir;
            dir = NULL;
        }
    }
    free(dir);
    repl_origin *o = repl_origin_new(R, path, buf ? buf : "", len, 1);
    free(buf);
    return o && input_decls(R, o, true);
}

void repl_trainer_drop(repl *R)
{
    repl_trainer *T = &R->trainer;
    dtl_trainer_free(T->tr);
    if (T->have_chk)
        repl_checked_free(&T->chk);
    free(T->name);
    free(T->losses);
    memset(T, 0, sizeof *T);
}

void repl_reset(repl *R)
{
    repl_trainer_drop(R);
    repl_cache_flush(R);
    for (size_t i = 0; i < R->nentries; i++)
        entry_free(&R->entries[i]);
    R->nentries = 0;
    for (size_t i = 0; i < R->nvalues; i++)
        value_free(&R->values[i]);
    R->nvalues = 0;
    while (R->origins) {
        repl_origin *o = R->origins;
        R->origins = o->next;
        free(o->name);
        free(o->text);
        free(o->shown);
        free(o);
    }
    uint64_t seed = R->store ? dtl_store_seed(R->store) : 0;
    dtl_store_free(R->store);
    R->store = dtl_store_new(seed);
    R->decl_gen++;
    R->shape_gen++;
    R->rng_pos = 0;
}

const char **repl_names(repl *R, size_t *n)
{
    const char **v = calloc(R->nentries + R->nvalues + 1, sizeof *v);
    *n = 0;
    if (!v)
        return NULL;
    for (size_t i = 0; i < R->nentries; i++)
        if (R->entries[i].name[0])
            v[(*n)++] = R->entries[i].name;
    for (size_t i = 0; i < R->nvalues; i++)
        v[(*n)++] = R->values[i].name;
    return v;
}

const repl_entry *repl_train_entry(repl *R)
{
    for (size_t i = R->nentries; i-- > 0;)
        if (R->entries[i].kind == DTL_DECL_TRAIN)
            return &R->entries[i];
    return NULL;
}

/* The checked train block of entry e in c. */
static const dtl_train *find_train(repl_checked *c, const repl_entry *e)
{
    for (size_t i = 0; c->m && i < c->m->ntrains; i++) {
        const dtl_train *t = c->m->trains[i];
        const repl_map *m = t->decl ? map_at(c, t->decl->span.off) : NULL;
        if (m && same_piece(m->piece, &e->piece))
            return t;
    }
    return NULL;
}

repl_trainer *repl_trainer_get(repl *R)
{
    repl_trainer *T = &R->trainer;
    const repl_entry *e = repl_train_entry(R);
    if (!e) {
        repl_error(R, "no train block yet: :load a file that has one, or type one");
        return NULL;
    }
    if (T->tr && !T->stale && strcmp(T->name, e->name) == 0) {
        /* A module it uses (read by `use`) edited on disk since: stale too. */
        repl_checked now;
        bool same = !repl_check(R, NULL, 0, NULL, 0, &now) ||
                    sources_hash(&now, true) == T->modules;
        repl_checked_free(&now);
        if (same)
            return T;
        T->stale = true;
    }
    if (T->tr)
        repl_note(R, "the train block or what it uses changed: training starts again");
    repl_trainer_drop(R);
    if (!repl_check(R, NULL, 0, NULL, 0, &T->chk)) {
        repl_report(R, &T->chk, NULL);
        repl_checked_free(&T->chk);
        return NULL;
    }
    T->have_chk = true;
    const dtl_train *t = find_train(&T->chk, e);
    if (!t) {
        repl_error(R, "internal error: the train block was lost");
        repl_trainer_drop(R);
        return NULL;
    }
    dtl_run_opts ro;
    dtl_run_opts_default(&ro);
    ro.file = e->piece.origin->name;   /* the checkpoint's "source": as dtlc run's */
    ro.data_dir = R->o->data_dir;
    ro.seed_set = R->o->seed_set;
    ro.seed = R->o->seed;
    ro.backend = R->be_name;
    ro.progress = DTL_PROGRESS_NONE;
    dtl_err err = {DTL_ERR_NONE, ""};
    dtl_run_status st;
    /* Data paths of npy and csv datasets are relative to the file that declares them: the
     * data is loaded (by dtl_trainer_new, on this thread, before any loader thread starts)
     * from that file's directory. */
    const repl_piece *dp = NULL;
    const dtl_sym *ds = t->data && t->data->kind == DTL_TYPE_SPLIT ? t->data->u.split.dataset
                                                                   : NULL;
    const repl_map *dm = ds && ds->decl ? map_at(&T->chk, ds->decl->span.off) : NULL;
    const dtl_builtin *db = ds && ds->type && ds->type->kind == DTL_TYPE_DATASET
                                ? ds->type->u.cfg.builtin : NULL;
    bool files = db && (db->id == DTL_BI_NPY || db->id == DTL_BI_CSV);   /* not idx's dirs */
    dp = dm && files ? dm->piece : NULL;
    char cwd[4096];
    bool moved = false;
    const char *slash = dp ? strrchr(dp->origin->name, '/') : NULL;
    if (slash && dp->origin->name[0] != '<' && getcwd(cwd, sizeof cwd)) {
        char *dir = xstrndup(dp->origin->name, (size_t)(slash - dp->origin->name) + 1);
        moved = dir && chdir(dir) == 0;
        free(dir);
    }
    T->tr = dtl_trainer_new(&T->chk.ctx, t, &ro, &st, &err);
    if (moved && chdir(cwd) != 0)
        repl_error(R, "cannot go back to %s: %s", cwd, strerror(errno));
    if (!T->tr) {
        if (st == DTL_RUN_DIAG)
            repl_report(R, &T->chk, NULL);
        else
            repl_error(R, "%s", err.msg);
        repl_trainer_drop(R);
        return NULL;
    }
    T->name = strdup(e->name);
    T->newest = R->next_id;
    T->modules = sources_hash(&T->chk, true);
    if (!T->name) {
        repl_trainer_drop(R);
        oom(R);
        return NULL;
    }
    return T;
}
