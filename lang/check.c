/* lang/check.c — the checker: names, types and shapes of a module and the modules it uses.
 *
 * THE LANGUAGE'S STATIC SEMANTICS (docs/language.md is written from this summary)
 *
 * Program structure. A file's items are `use`, `model`, `fn`, `dataset`, `train` and `let`.
 * Top-level names (models, fns, datasets, lets, imported modules) are visible everywhere in
 * the file, in any order; a duplicate is an error (with a note at the first). `use nn`
 * loads nn.dtl from the using file's directory, else from the search path (-I, $DTL_PATH,
 * the stdlib), and binds `nn`; `use a.b` loads a/b.dtl and binds `b`. A module is loaded
 * and checked once per compilation; an import cycle is an error.
 *
 * Models. `model Dense(in: int, out: int) { param …  member = …  fn … }`. Constructor
 * parameters have host types (int, float, bool, str) and optional constant defaults. In the
 * body, names resolve to the constructor parameters, params, members and fns of the model
 * (any order), then the module's top level, then builtins. A member is a submodel instance
 * (`fc1 = nn.Dense(784, hidden)`) or a constant; it may use constructor parameters and
 * earlier members. A param has a tensor type whose dims use constructor parameters and
 * constants, and an initializer: an initializer builtin or a constant of its type. Calling
 * a model type instantiates it (arguments checked against the constructor); calling an
 * instance calls its `forward`; `fc1.w`, `fc1.forward(x)`, `fc1.fc2.w` reach inside.
 * Models are instantiated only as members or in a train header; a model containing itself
 * (directly or not) is an error.
 *
 * Fns. Parameters need types; the return type may be omitted (it is then the body's) and,
 * when given, must equal the body's. A block body is `let`s in order (no use before the
 * definition, no redefinition), then an expression or `return e` as the value. Recursion,
 * direct or mutual, is an error (fns are inlined).
 *
 * Dims. A dim in a type is an int literal, a name, or + - * / of those. A name is an int
 * constructor parameter, an int parameter of the fn, or a top-level int let; any other name
 * in a fn's signature is a symbolic dim of that fn (like B): rigid in the body, bound anew
 * at each call by unifying parameter types with argument types. Dims are polynomials in
 * canonical form (lang/types.h), so `in*2 == 2*in` and `B*28*28 == B*784`.
 *
 * Values. Host values (int, float, bool, str) are compile-time constants and are folded;
 * `/` is true division (ints give a float); an int expression over constructor parameters
 * stays symbolic (`hidden * 2`). Tensor arithmetic broadcasts like numpy (align right;
 * equal dims, or one is the constant 1); tensor dtypes must match exactly; a host int or
 * float mixes with a float tensor (a host int also with an int tensor); `/` needs float
 * tensors (cast first). `@` follows numpy's matmul. `**` needs a scalar exponent. Comparisons give bool tensors (host bools for host
 * values); and/or/not take bools. An int index drops a dim, a slice keeps it (its length
 * computed numpy's way when known); a constant index out of range is an error. Tensor
 * literals are rectangular; ints give i64, any float f32, bools bool.
 *
 * Builtins. One table in lang/builtins.c, each with its parameters and rule. Initializers
 * only initialize params, optimizers only appear as `optimizer`, dataset builtins only as
 * `dataset NAME = …`, `accuracy` only as `evaluate`, data/tensor/pipeline only in
 * `parallel`, cpu/cuda only as `device`, constant/step/cosine only as `schedule` (where a
 * schedule is expected, `constant` is the schedule, elsewhere the initializer).
 *
 * Train blocks. `train MLP() { data = ds.train  batch = 32  loss = …  optimizer = …
 * epochs = 10  evaluate = accuracy(ds.test)  seed = 1  parallel = …  device = …
 * schedule = cosine()  warmup = 100  clip = 1.0
 * shard fc1.w along 1  stage 0: fc1 }`. The header instantiates the model: every
 * constructor argument must have a value. In settings, names resolve to x and y (the
 * batch), the model's members, params, fns and constructor parameters, the module's top
 * level, then builtins. x's type is inferred from its first use as an argument whose
 * parameter type fixes it (forward(x)), with the batch dim B; y is i64[B]; B itself is a
 * name there too (unless the model has a member B). Unknown settings, duplicates and
 * settings of the wrong kind are errors. batch (default 32) and epochs (default 1) are
 * positive ints, seed and warmup (default 0) non-negative ints, clip a number > 0, schedule
 * a schedule builtin (default constant()). data, loss and optimizer are required; loss must
 * be a float scalar. shard needs parallel with a tensor(n) factor and names a param, along
 * an axis within its rank that n divides (when known); stage needs pipeline(stages = s),
 * and every submodel with params must be in exactly one of the stages 0..s-1, each given
 * once.
 *
 * Warnings: unused fn parameters, constructor parameters and fn-local lets, params no fn of
 * their model uses, unused `use`; names starting with '_' are exempt.
 *
 * HOW IT WORKS
 *
 * Each module is checked in three passes: declare every top-level name (loading used
 * modules, which are checked completely first), check every declaration, then warn about
 * unused imports. Declarations are checked lazily and memoized (state 0 unchecked,
 * 1 in progress, 2 done): a reference to a later let, fn or model checks it on the spot,
 * and meeting a declaration in progress is how recursion and self-containment are found.
 * Models are checked once, generically, in terms of their constructor parameters; an
 * instance type carries the arguments and is applied by substitution where a member of
 * an instance is used. A fn call binds the callee's symbolic dims by unification.
 *
 * dtlc repl checks its session as one root module with hooks (check.h): names the root does
 * not declare may be the session's tensors (lookup, after the scopes, before the builtins),
 * its tensor constructors are extra builtins with their own rule, and a top-level let of the
 * root may hold any value (ALLOW_NEW: `let d = nn.Dense(3, 2)`).
 *
 * Errors never cascade: an expression with an error gets DTL_TYPE_ERROR and everything
 * that meets one stays silent. Recursion over expressions is bounded by the AST's depth
 * limit; nesting of lazily checked declarations and of modules is bounded too, so no input
 * can exhaust the stack.
 */
#include "check.h"

#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "parse.h"
#include "print.h"

/* ---- the checker's state ---- */

enum { ST_NEW = 0, ST_BUSY = 1, ST_DONE = 2 };

/* Which builtin kinds the next call may use (set just before checking a setting, a param
 * initializer, …; every call clears it for its arguments). */
enum {
    ALLOW_INIT = 1 << 0,
    ALLOW_OPT = 1 << 1,
    ALLOW_DATASET = 1 << 2,
    ALLOW_METRIC = 1 << 3,
    ALLOW_PARALLEL = 1 << 4,
    ALLOW_DEVICE = 1 << 5,
    ALLOW_NEW = 1 << 6,      /* model instantiation */
    ALLOW_SCHED = 1 << 7,
    ALLOW_REPEAT = 1 << 8,   /* repeat(n, Model(…)): only as a model's member */
};

/* Bounds on nesting that C recursion follows. */
/* MAX_EXPR_DEPTH bounds the expressions being checked at once, across lazily checked
 * definitions (each expression alone is at most DTL_AST_MAX_DEPTH deep). */
enum { MAX_LAZY_DEPTH = 200, MAX_EXPR_DEPTH = 2000, MAX_MODULE_DEPTH = 48, MAX_SUGGEST = 2000 };

struct dtl_scope {
    dtl_scope *parent;
    const dtl_scope *also;   /* consulted after this one, before parent (a train's model) */
    dtl_sym **slots;
    uint32_t cap, n;
    dtl_ptrvec order;        /* symbols in the order they were added */
};

typedef struct chk {
    dtl_ctx *ctx;
    dtl_arena *a;
    dtl_diags *d;
    dtl_type *err;
    uint32_t seq;
    unsigned lazy_depth;
    unsigned expr_depth;
    bool expr_depth_reported;
    dtl_ptrvec loading;      /* modules being loaded, outermost first */
    /* The context of the code being checked (saved and restored around lazy checks). */
    dtl_module *mod;
    dtl_scope *scope;
    dtl_model *model;        /* the model whose body this is (generic) */
    dtl_fn *fn;              /* the fn whose body this is */
    dtl_train *train;        /* the train block whose settings these are */
    dtl_type *inst;          /* train: the instance whose names are in scope */
    dtl_subst *inst_subst;   /* its substitution */
    dtl_decl **block;        /* the fn block being checked, for "used before definition" */
    size_t nblock, block_at;
    unsigned allow;
    bool allow_pending;      /* the next NAME may be a train's x whose shape is pending */
    const dtl_check_hooks *hooks;   /* dtlc repl's (check.h); NULL: none */
    dtl_module *root;        /* the module the hooks apply to */
} chk;

typedef struct saved {
    dtl_module *mod;
    dtl_scope *scope;
    dtl_model *model;
    dtl_fn *fn;
    dtl_train *train;
    dtl_type *inst;
    dtl_subst *inst_subst;
    dtl_decl **block;
    size_t nblock, block_at;
    unsigned allow;
    bool allow_pending;
} saved;

static saved ctx_save(chk *c)
{
    saved s = {c->mod, c->scope, c->model, c->fn, c->train, c->inst, c->inst_subst,
               c->block, c->nblock, c->block_at, c->allow, c->allow_pending};
    c->model = NULL;
    c->fn = NULL;
    c->train = NULL;
    c->inst = NULL;
    c->inst_subst = NULL;
    c->block = NULL;
    c->nblock = c->block_at = 0;
    c->allow = 0;
    c->allow_pending = false;
    return s;
}

static void ctx_restore(chk *c, saved s)
{
    c->mod = s.mod;
    c->scope = s.scope;
    c->model = s.model;
    c->fn = s.fn;
    c->train = s.train;
    c->inst = s.inst;
    c->inst_subst = s.inst_subst;
    c->block = s.block;
    c->nblock = s.nblock;
    c->block_at = s.block_at;
    c->allow = s.allow;
    c->allow_pending = s.allow_pending;
}

static dtl_type *check_expr(chk *c, dtl_expr *e);
static bool ensure_fn(chk *c, dtl_fn *f);
static bool ensure_model(chk *c, dtl_model *m);
static dtl_type *sym_base_type(chk *c, dtl_sym *s, dtl_span at);
static dtl_module *load_module(chk *c, const dtl_source *src, const char *fid);

/* ---- small helpers ---- */

static const char *tystr(chk *c, const dtl_type *t)
{
    return dtl_type_print(c->a, t, c->mod);
}

static const char *valstr(chk *c, const dtl_type *t)
{
    return dtl_value_print(c->a, t, c->mod);
}

static const char *ename(chk *c, const dtl_expr *e, const char *fallback)
{
    return dtl_operand_name(c->a, e, fallback);
}

static const dtl_expr *strip(const dtl_expr *e)
{
    while (e && e->kind == DTL_EXPR_PAREN)
        e = e->u.paren;
    return e;
}

static bool is_err(const dtl_type *t)
{
    return !t || t->kind == DTL_TYPE_ERROR;
}

static bool exempt(const char *name)
{
    return name[0] == '_';
}

static dtl_dimvar *dimvar_new(chk *c, const char *name, dtl_dimvar_kind kind, dtl_span at,
                              dtl_sym *sym)
{
    dtl_dimvar *v = dtl_arena_alloc(c->a, sizeof *v);
    v->name = name;
    v->kind = kind;
    v->file = at.file;
    v->off = at.off;
    v->seq = c->seq++;
    v->sym = sym;
    return v;
}

static dtl_sym *sym_new(chk *c, dtl_sym_kind kind, const char *name, dtl_span at)
{
    dtl_sym *s = dtl_arena_alloc(c->a, sizeof *s);
    s->kind = kind;
    s->name = name;
    s->span = at;
    s->module = c->mod;
    return s;
}

static const char *sym_kind_text(const dtl_sym *s)
{
    switch (s->kind) {
    case DTL_SYM_MODULE: return "module";
    case DTL_SYM_MODEL: return "model";
    case DTL_SYM_FN: return "fn";
    case DTL_SYM_DATASET: return "dataset";
    case DTL_SYM_LET: return "let";
    case DTL_SYM_TRAIN: return "train block";
    case DTL_SYM_CTOR_PARAM: return "constructor parameter";
    case DTL_SYM_PARAM: return "param";
    case DTL_SYM_MEMBER: return "member";
    case DTL_SYM_FN_PARAM: return "parameter";
    case DTL_SYM_DIM: return "dimension";
    case DTL_SYM_BUILTIN: return "builtin";
    case DTL_SYM_BATCH_X:
    case DTL_SYM_BATCH_Y: return "batch variable";
    case DTL_SYM_CALL: return "call";
    }
    return "name";
}

/* ---- scopes ---- */

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static dtl_scope *scope_new(chk *c, dtl_scope *parent)
{
    dtl_scope *s = dtl_arena_alloc(c->a, sizeof *s);
    s->parent = parent;
    return s;
}

dtl_sym *dtl_scope_lookup(const dtl_scope *s, const char *name)
{
    if (!s || !s->cap)
        return NULL;
    for (uint32_t i = hash_str(name) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->slots[i])
            return NULL;
        if (strcmp(s->slots[i]->name, name) == 0)
            return s->slots[i];
    }
}

static void scope_put(dtl_scope *s, dtl_sym *sym)
{
    uint32_t i = hash_str(sym->name) & (s->cap - 1);
    while (s->slots[i])
        i = (i + 1) & (s->cap - 1);
    s->slots[i] = sym;
}

/* Adds sym; returns the symbol already there under that name (sym is then not added). */
static dtl_sym *scope_add(chk *c, dtl_scope *s, dtl_sym *sym)
{
    dtl_sym *old = dtl_scope_lookup(s, sym->name);
    if (old)
        return old;
    if ((s->n + 1) * 2 > s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : 16;
        dtl_sym **old_slots = s->slots;
        uint32_t old_cap = s->cap;
        s->slots = dtl_arena_array(c->a, cap, sizeof *s->slots);
        s->cap = cap;
        for (uint32_t i = 0; i < old_cap; i++)
            if (old_slots[i])
                scope_put(s, old_slots[i]);
    }
    scope_put(s, sym);
    s->n++;
    dtl_ptrvec_push(c->a, &s->order, sym);
    return NULL;
}

/* Adds sym to s, reporting a duplicate. */
static bool declare(chk *c, dtl_scope *s, dtl_sym *sym, const char *what)
{
    dtl_sym *old = scope_add(c, s, sym);
    if (!old)
        return true;
    sym->used = true;   /* it is not in scope: no "never used" warning for it */
    dtl_diag_error(c->d, sym->span, "%s '%s' is already defined", what, sym->name);
    dtl_diag_note(c->d, old->span, "'%s' was first defined here", sym->name);
    return false;
}

dtl_sym *dtl_module_lookup(const dtl_module *m, const char *name)
{
    return m && m->scope ? dtl_scope_lookup(m->scope, name) : NULL;
}

dtl_sym *dtl_model_lookup(const dtl_model *m, const char *name)
{
    return m && m->scope ? dtl_scope_lookup(m->scope, name) : NULL;
}

dtl_fn *dtl_model_fn(const dtl_model *m, const char *name)
{
    dtl_sym *s = dtl_model_lookup(m, name);
    return s && s->kind == DTL_SYM_FN ? s->u.fn : NULL;
}

void dtl_check_inst_subst(dtl_arena *a, const dtl_type *inst, dtl_subst *out)
{
    memset(out, 0, sizeof *out);
    if (!inst || inst->kind != DTL_TYPE_INSTANCE)
        return;
    const dtl_model *m = inst->u.m.model;
    for (size_t i = 0; i < m->nctor; i++) {
        const dtl_type *v = inst->u.m.args[i];
        if (!v || !m->ctor[i]->dimvar)
            continue;
        if (v->kind == DTL_TYPE_INT) {
            if (v->u.ival)
                dtl_subst_set(a, out, m->ctor[i]->dimvar, v->u.ival);
        } else {
            dtl_subst_set_val(a, out, m->ctor[i]->dimvar, (dtl_type *)v);
        }
    }
}

static dtl_subst *inst_subst(chk *c, const dtl_type *inst)
{
    dtl_subst *s = dtl_arena_alloc(c->a, sizeof *s);
    dtl_check_inst_subst(c->a, inst, s);
    return s;
}

/* Can a symbol be a dimension (an int constructor or fn parameter, a dim, a let)? */
static bool dim_like(const dtl_sym *s)
{
    return s->dimvar ? s->kind != DTL_SYM_CTOR_PARAM || (s->type && s->type->kind == DTL_TYPE_INT)
                     : s->kind == DTL_SYM_LET;
}

/* Collects candidate names for did-you-mean from the scope chain (only those that can be
 * dims when dims is set). Inner scopes first, and in each the latest definitions first, so
 * that among equally close names the nearest wins (fc3 → fc2 rather than fc1). */
static void collect_names(chk *c, const dtl_scope *s, bool dims, dtl_ptrvec *out)
{
    for (; s && out->len < MAX_SUGGEST; s = s->parent)
        for (int k = 0; k < 2; k++) {
            const dtl_scope *t = k ? s->also : s;
            for (size_t i = t ? t->order.len : 0; i-- > 0 && out->len < MAX_SUGGEST;) {
                const dtl_sym *sym = t->order.items[i];
                if (!dims || dim_like(sym))
                    dtl_ptrvec_push(c->a, out, (void *)sym->name);
            }
        }
}

static const char *suggest_in(chk *c, const char *name, const dtl_scope *s, bool builtins)
{
    if (strlen(name) < 2)
        return NULL;   /* any one-letter name is one edit from any other: no help */
    dtl_ptrvec v = {0};
    collect_names(c, s, false, &v);
    if (builtins) {
        size_t n;
        const dtl_builtin *t = dtl_builtin_table(&n);
        for (size_t i = 0; i < n; i++)
            dtl_ptrvec_push(c->a, &v, (void *)t[i].name);
    }
    return dtl_diag_suggest(name, (const char *const *)v.items, v.len);
}

static const char *mean_suffix(chk *c, const char *near)
{
    return near ? dtl_arena_printf(c->a, "; did you mean '%s'?", near) : "";
}

/* The builtin symbols, made on demand (one per builtin per checker). */
static dtl_sym *builtin_sym(chk *c, const dtl_builtin *b)
{
    static const dtl_span nowhere;
    dtl_sym *s = sym_new(c, DTL_SYM_BUILTIN, b->name, nowhere);
    s->module = NULL;
    s->u.builtin = b;
    if (b->kind == DTL_BUILTIN_CONST) {
        s->type = dtl_type_new(c->a, DTL_TYPE_NONE);
    } else {
        s->type = dtl_type_new(c->a, DTL_TYPE_BUILTIN);
        s->type->u.builtin = b;
    }
    s->state = ST_DONE;
    return s;
}

/* Looks name up from the current scope outwards, then among builtins. */
static dtl_sym *lookup(chk *c, const char *name)
{
    for (const dtl_scope *s = c->scope; s; s = s->parent) {
        dtl_sym *sym = dtl_scope_lookup(s, name);
        if (!sym && s->also)
            sym = dtl_scope_lookup(s->also, name);
        if (sym)
            return sym;
    }
    const dtl_check_hooks *h = c->hooks && c->mod == c->root ? c->hooks : NULL;
    dtl_type *gt = h && h->global ? h->global(h->user, c->a, name) : NULL;
    if (gt) {
        static const dtl_span nowhere;
        dtl_sym *s = sym_new(c, DTL_SYM_LET, dtl_arena_strdup(c->a, name), nowhere);
        s->type = gt;
        s->state = ST_DONE;
        return s;
    }
    const dtl_builtin *b = dtl_builtin_lookup(name);
    for (size_t i = 0; !b && h && i < h->nbuiltins; i++)
        if (strcmp(h->builtins[i].name, name) == 0)
            b = &h->builtins[i];
    return b ? builtin_sym(c, b) : NULL;
}

/* An extra builtin of the hooks (or NULL): b itself, or the one named like b. */
static const dtl_builtin *hook_builtin(const chk *c, const dtl_builtin *b)
{
    const dtl_check_hooks *h = c->hooks && c->mod == c->root ? c->hooks : NULL;
    if (!h)
        return NULL;
    if (h->nbuiltins && b >= h->builtins && b < h->builtins + h->nbuiltins)
        return b;
    for (size_t i = 0; i < h->nbuiltins; i++)
        if (strcmp(h->builtins[i].name, b->name) == 0)
            return &h->builtins[i];
    return NULL;
}

/* ---- module loading ---- */

static const char *module_name_of(chk *c, const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 4 && strcmp(base + n - 4, ".dtl") == 0)
        n -= 4;
    return dtl_arena_strndup(c->a, base, n);
}

/* A file's identity ("device:inode"), so that one file reached by two paths is one module;
 * NULL when it cannot be stat'ed. */
static char *file_id(chk *c, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return NULL;
    return dtl_arena_printf(c->a, "%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
}

static dtl_module *find_loaded(chk *c, const char *fid)
{
    for (unsigned i = 0; i < c->ctx->nmodules; i++)
        if (c->ctx->modules[i]->file_id && strcmp(c->ctx->modules[i]->file_id, fid) == 0)
            return c->ctx->modules[i];
    return NULL;
}

static void register_module(chk *c, dtl_module *m)
{
    dtl_ctx *ctx = c->ctx;
    if (ctx->nmodules == ctx->capmodules) {
        unsigned cap = ctx->capmodules ? ctx->capmodules * 2 : 8;
        ctx->modules = dtl_arena_grow(c->a, ctx->modules, ctx->nmodules, cap,
                                      sizeof *ctx->modules);
        ctx->capmodules = cap;
    }
    ctx->modules[ctx->nmodules++] = m;
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* A directory as the user would like to read it: relative to the current directory when it
 * is absolute (so "/src/dtl/stdlib/" reads "../../stdlib/" from /src/dtl/tests/lang). */
static const char *display_dir(chk *c, const char *dir)
{
    char cwd[4096];
    if (dir[0] != '/' || !getcwd(cwd, sizeof cwd) || cwd[0] != '/')
        return dir;
    /* Drop "." and resolve ".." components lexically: /a/b/../c/ is /a/c/. */
    size_t n = strlen(dir);
    char *norm = dtl_arena_alloc(c->a, n + 2);
    size_t len = 0;
    for (const char *p = dir; *p;) {
        while (*p == '/')
            p++;
        const char *q = p;
        while (*q && *q != '/')
            q++;
        size_t k = (size_t)(q - p);
        if (k == 0 || (k == 1 && p[0] == '.')) {
            /* nothing */
        } else if (k == 2 && p[0] == '.' && p[1] == '.') {
            while (len > 0 && norm[len - 1] != '/')
                len--;
            if (len > 0)
                len--;
        } else {
            norm[len++] = '/';
            memcpy(norm + len, p, k);
            len += k;
        }
        p = q;
    }
    norm[len++] = '/';
    norm[len] = '\0';
    dir = norm;
    size_t common = 0;   /* length of the common prefix, at a component boundary */
    for (size_t i = 0;; i++) {
        bool cend = cwd[i] == '\0', dend = dir[i] == '\0';
        if ((cend || cwd[i] == '/') && (dend || dir[i] == '/'))
            common = i;
        if (cend || dend || cwd[i] != dir[i])
            break;
    }
    size_t ups = 0;
    for (size_t i = common; cwd[i]; i++)
        if (cwd[i] == '/' && cwd[i + 1])
            ups++;
    if (cwd[common] == '\0' && common > 0)
        ups = 0;
    const char *rest = dir + common;
    while (*rest == '/')
        rest++;
    const char *up = "";
    for (size_t i = 0; i < ups; i++)
        up = dtl_arena_printf(c->a, "%s../", up);
    const char *r = dtl_arena_printf(c->a, "%s%s", up, rest);
    return *r ? r : "./";
}

/* `use a.b` from the current module: finds, loads and checks a/b.dtl. */
static dtl_module *use_module(chk *c, dtl_decl *d)
{
    const char *rel = "";
    for (size_t i = 0; i < d->u.use.nparts; i++)
        rel = dtl_arena_printf(c->a, "%s%s%s", rel, i ? "/" : "", d->u.use.parts[i].text);
    rel = dtl_arena_printf(c->a, "%s.dtl", rel);
    const char *dotted = "";
    for (size_t i = 0; i < d->u.use.nparts; i++)
        dotted = dtl_arena_printf(c->a, "%s%s%s", dotted, i ? "." : "", d->u.use.parts[i].text);

    /* The using file's directory first, then the search path. */
    const char *here = c->mod->path;
    const char *slash = strrchr(here, '/');
    const char *dir = slash ? dtl_arena_strndup(c->a, here, (size_t)(slash - here + 1)) : "";
    dtl_ptrvec tried = {0};
    const char *found = NULL;
    const char *cand = dtl_arena_printf(c->a, "%s%s", dir, rel);
    dtl_ptrvec_push(c->a, &tried, (void *)(*dir ? dir : "./"));
    if (is_file(cand))
        found = cand;
    for (unsigned i = 0; !found && i < c->ctx->nstdlib_path; i++) {
        const char *p = c->ctx->stdlib_path[i];
        size_t n = strlen(p);
        const char *sep = n && p[n - 1] == '/' ? "" : "/";
        cand = dtl_arena_printf(c->a, "%s%s%s", p, sep, rel);
        const char *shown = display_dir(c, dtl_arena_printf(c->a, "%s%s", p, sep));
        bool dup = false;
        for (size_t k = 0; k < tried.len && !dup; k++)
            dup = strcmp(tried.items[k], shown) == 0;
        if (!dup)
            dtl_ptrvec_push(c->a, &tried, (void *)shown);
        if (is_file(cand))
            found = cand;
    }
    if (!found) {
        dtl_diag_error(c->d, d->span, "cannot find module '%s'", dotted);
        const char *list = "";
        for (size_t i = 0; i < tried.len; i++)
            list = dtl_arena_printf(c->a, "%s%s%s", list, i ? ", " : "", (char *)tried.items[i]);
        dtl_diag_note(c->d, d->span, "looked for %s in: %s", rel, list);
        return NULL;
    }
    const char *fid = file_id(c, found);
    if (!fid)
        fid = found;
    dtl_module *m = find_loaded(c, fid);
    if (m && m->state == ST_BUSY) {
        const char *chain = "";
        bool on = false;
        for (size_t i = 0; i < c->loading.len; i++) {
            dtl_module *l = c->loading.items[i];
            on |= l == m;
            if (on)
                chain = dtl_arena_printf(c->a, "%s%s -> ", chain, l->path);
        }
        dtl_diag_error(c->d, d->span, "import cycle: %s%s", chain, m->path);
        return NULL;
    }
    if (m)
        return m;
    if (c->loading.len >= MAX_MODULE_DEPTH) {
        dtl_diag_error(c->d, d->span, "modules nest too deeply (more than %d uses in a chain)",
                       MAX_MODULE_DEPTH);
        return NULL;
    }
    char why[256];
    const dtl_source *src = dtl_src_load(&c->ctx->sources, found, why, sizeof why);
    if (!src) {
        dtl_diag_error(c->d, d->span, "cannot read module '%s' (%s): %s", dotted, found, why);
        return NULL;
    }
    return load_module(c, src, fid);
}

/* ---- types written in the source ---- */

/* How names in a type's dims resolve. */
typedef enum dim_mode {
    DIMS_SIG,      /* a fn's parameter: unknown names become the fn's symbolic dims */
    DIMS_RET,      /* a fn's return type: names must be bound by the parameters */
    DIMS_FIXED,    /* params and lets: only names already in scope */
} dim_mode;

static dtl_sym *new_fn_dim(chk *c, dtl_fn *f, dtl_ident name)
{
    dtl_sym *s = sym_new(c, DTL_SYM_DIM, name.text, name.span);
    s->fn = f;
    s->dimvar = dimvar_new(c, name.text, DTL_DIMVAR_FN, name.span, s);
    s->type = dtl_type_int(c->a, dtl_dim_var(c->a, s->dimvar));
    s->state = ST_DONE;
    s->index = (unsigned)f->ndims;
    scope_add(c, f->scope, s);
    f->dims = dtl_arena_grow(c->a, f->dims, f->ndims, f->ndims + 1, sizeof *f->dims);
    f->dims[f->ndims++] = s;
    return s;
}

static const dtl_dim *dim_expr(chk *c, dtl_expr *e, dim_mode mode, const char *what)
{
    const dtl_dim *r = NULL;
    switch (e->kind) {
    case DTL_EXPR_INT:
        r = dtl_dim_const(c->a, e->u.ival);
        break;
    case DTL_EXPR_PAREN:
        r = dim_expr(c, e->u.paren, mode, what);
        break;
    case DTL_EXPR_NAME: {
        const char *name = e->u.name.text;
        dtl_sym *s = lookup(c, name);
        bool usable = s && (s->kind == DTL_SYM_CTOR_PARAM || s->kind == DTL_SYM_DIM ||
                            s->kind == DTL_SYM_FN_PARAM || s->kind == DTL_SYM_LET);
        if (s && s->kind == DTL_SYM_FN_PARAM && s->fn != c->fn)
            usable = false;
        if (!usable && mode == DIMS_SIG && c->fn) {
            s = new_fn_dim(c, c->fn, e->u.name);
        } else if (!usable) {
            if (s && s->kind != DTL_SYM_BUILTIN) {
                dtl_diag_error(c->d, e->span, "'%s' is a %s, not an int: it cannot be a "
                               "dimension", name, sym_kind_text(s));
            } else if (mode == DIMS_RET) {
                dtl_diag_error(c->d, e->span, "dimension '%s' of the return type is not bound "
                               "by any parameter", name);
                dtl_diag_note(c->d, e->span, "use it in a parameter's type, e.g. x: f32[%s]",
                              name);
            } else {
                dtl_ptrvec v = {0};
                collect_names(c, c->scope, true, &v);
                const char *near = strlen(name) < 2 ? NULL :
                    dtl_diag_suggest(name, (const char *const *)v.items, v.len);
                dtl_diag_error(c->d, e->span, "unknown dimension '%s' in %s%s", name, what,
                               mean_suffix(c, near));
            }
            return NULL;
        }
        e->sym = s;
        if (s->kind == DTL_SYM_CTOR_PARAM || s->kind == DTL_SYM_FN_PARAM)
            s->used = true;
        dtl_type *t = sym_base_type(c, s, e->span);
        if (is_err(t))
            return NULL;
        if (t->kind != DTL_TYPE_INT) {
            dtl_diag_error(c->d, e->span, "'%s' is %s, not an int: it cannot be a dimension",
                           name, tystr(c, t));
            return NULL;
        }
        if (!t->u.ival) {
            dtl_diag_error(c->d, e->span, "the value of '%s' is not known here: it cannot be a "
                           "dimension", name);
            return NULL;
        }
        r = t->u.ival;
        break;
    }
    case DTL_EXPR_UNARY:
        if (e->u.unary.op == DTL_UNOP_NEG) {
            const dtl_dim *x = dim_expr(c, e->u.unary.operand, mode, what);
            if (!x)
                return NULL;
            r = dtl_dim_neg(c->a, x);
            break;
        }
        goto bad;
    case DTL_EXPR_BINARY: {
        dtl_binop op = e->u.binary.op;
        if (op != DTL_BINOP_ADD && op != DTL_BINOP_SUB && op != DTL_BINOP_MUL &&
            op != DTL_BINOP_DIV)
            goto bad;
        const dtl_dim *x = dim_expr(c, e->u.binary.lhs, mode, what);
        const dtl_dim *y = dim_expr(c, e->u.binary.rhs, mode, what);
        if (!x || !y)
            return NULL;
        if (op == DTL_BINOP_DIV) {
            int64_t xv, yv;
            if (dtl_dim_is_const(y, &yv) && yv == 0) {
                dtl_diag_error(c->d, e->span, "division by zero in a dimension");
                return NULL;
            }
            bool exact;
            r = dtl_dim_div(c->a, x, y, &exact);
            if (r && !exact && dtl_dim_is_const(x, &xv) && dtl_dim_is_const(y, &yv)) {
                dtl_diag_error(c->d, e->span, "dimension %" PRId64 " / %" PRId64
                               " is not a whole number", xv, yv);
                return NULL;
            }
        } else {
            r = op == DTL_BINOP_ADD ? dtl_dim_add(c->a, x, y)
              : op == DTL_BINOP_SUB ? dtl_dim_sub(c->a, x, y)
                                    : dtl_dim_mul(c->a, x, y);
        }
        break;
    }
    default:
    bad:
        dtl_diag_error(c->d, e->span, "a dimension must be an int, a name, or + - * / of those");
        return NULL;
    }
    if (!r) {
        dtl_diag_error(c->d, e->span, "this dimension is too large or too complex");
        return NULL;
    }
    e->type = dtl_type_int(c->a, r);
    return r;
}

/* The type a type expression denotes; NULL after an error (reported). */
static dtl_type *texpr_type(chk *c, dtl_texpr *t, dim_mode mode, const char *what)
{
    switch (t->kind) {
    case DTL_TEXPR_INT: return dtl_type_int(c->a, NULL);
    case DTL_TEXPR_FLOAT: return dtl_type_float(c->a, false, 0);
    case DTL_TEXPR_BOOL: return dtl_type_bool(c->a, false, false);
    case DTL_TEXPR_STR: return dtl_type_new(c->a, DTL_TYPE_STR);
    case DTL_TEXPR_TENSOR: break;
    }
    const dtl_dim **dims = dtl_arena_array(c->a, t->ndims ? t->ndims : 1, sizeof *dims);
    bool ok = true;
    for (size_t i = 0; i < t->ndims; i++) {
        dims[i] = dim_expr(c, t->dims[i], mode, what);
        int64_t v;
        if (!dims[i]) {
            ok = false;
        } else if (dtl_dim_is_const(dims[i], &v) && v < 0) {
            dtl_diag_error(c->d, t->dims[i]->span, "dimension %zu is negative (%" PRId64 ")",
                           i, v);
            ok = false;
        }
    }
    return ok ? dtl_type_tensor(c->a, t->dtype, (uint32_t)t->ndims, dims) : NULL;
}

/* Can a value of type `have` be given where `want` (a declared type) is expected? Host
 * ints convert to floats, host numbers to rank-0 float tensors. */
static bool assignable(const dtl_type *want, const dtl_type *have)
{
    if (want->kind == have->kind) {
        if (want->kind == DTL_TYPE_TENSOR)
            return dtl_type_same(want, have);
        return dtl_type_is_host(want);
    }
    if (want->kind == DTL_TYPE_FLOAT && have->kind == DTL_TYPE_INT)
        return true;
    if (want->kind == DTL_TYPE_TENSOR && want->u.t.rank == 0 && dtl_type_is_number(have))
        return dtl_dtype_is_float(want->u.t.dtype) || have->kind == DTL_TYPE_INT;
    return false;
}

/* A constant of a host type: the value of a default. */
static bool is_constant(const dtl_type *t)
{
    switch (t->kind) {
    case DTL_TYPE_INT: return t->u.ival && dtl_dim_is_const(t->u.ival, NULL);
    case DTL_TYPE_FLOAT: return t->u.f.known;
    case DTL_TYPE_BOOL: return t->u.b.known;
    case DTL_TYPE_STR: return t->u.s.bytes != NULL;
    default: return false;
    }
}

/* Converts a host int to a float when a float is wanted. */
static dtl_type *coerce(chk *c, const dtl_type *want, dtl_type *have)
{
    if (want->kind == DTL_TYPE_FLOAT && have->kind == DTL_TYPE_INT) {
        int64_t v;
        if (dtl_type_int_const(have, &v))
            return dtl_type_float(c->a, true, (double)v);
        return dtl_type_float(c->a, false, 0);
    }
    return have;
}

/* Checks a parameter's default: a constant of its type. Returns its (coerced) type. */
static dtl_type *check_default(chk *c, dtl_fparam *p, const dtl_type *want)
{
    dtl_type *t = check_expr(c, p->deflt);
    if (is_err(t) || !want)
        return NULL;
    if (!dtl_type_is_host(want)) {
        dtl_diag_error(c->d, p->deflt->span, "a default value needs a parameter of type int, "
                       "float, bool or str; '%s' is %s", p->name.text, tystr(c, want));
        return NULL;
    }
    if (!assignable(want, t) || !is_constant(t)) {
        dtl_diag_error(c->d, p->deflt->span, "the default of '%s' must be a constant %s, found %s",
                       p->name.text, tystr(c, want),
                       dtl_type_is_host(t) ? valstr(c, t) : tystr(c, t));
        return NULL;
    }
    return coerce(c, want, t);
}

/* ---- symbols' types ---- */

static dtl_type *check_toplevel_let(chk *c, dtl_sym *s);
static dtl_type *check_dataset(chk *c, dtl_sym *s);

static void cannot_infer_x(chk *c, dtl_sym *x, dtl_span at)
{
    dtl_diag_error(c->d, at, "cannot infer the shape of %s; pass it to the model's forward",
                   x->name);
    dtl_diag_note(c->d, at, "%s's shape is taken from the first parameter it is passed to, "
                  "e.g. forward(%s)", x->name, x->name);
    x->type = c->err;
}

/* A symbol's own type, checking its declaration first if need be. */
static dtl_type *sym_base_type(chk *c, dtl_sym *s, dtl_span at)
{
    switch (s->kind) {
    case DTL_SYM_LET:
        if (!s->fn && s->state != ST_DONE) {
            if (s->state == ST_BUSY) {
                dtl_diag_error(c->d, at, "'%s' is defined in terms of itself", s->name);
                dtl_diag_note(c->d, s->span, "'%s' is defined here", s->name);
                return c->err;
            }
            return check_toplevel_let(c, s);
        }
        break;
    case DTL_SYM_DATASET:
        if (s->state != ST_DONE) {
            if (s->state == ST_BUSY) {
                dtl_diag_error(c->d, at, "dataset '%s' is defined in terms of itself", s->name);
                return c->err;
            }
            return check_dataset(c, s);
        }
        break;
    case DTL_SYM_MEMBER:
        if (s->state != ST_DONE) {
            dtl_diag_error(c->d, at, "member '%s' is used before its definition", s->name);
            dtl_diag_note(c->d, s->span, "'%s' is defined here; a member may use only "
                          "members defined before it", s->name);
            return c->err;
        }
        break;
    case DTL_SYM_FN: {
        dtl_type *t = dtl_type_new(c->a, DTL_TYPE_FN);
        t->u.fn.fn = s->u.fn;
        return t;
    }
    case DTL_SYM_MODEL: {
        dtl_type *t = dtl_type_new(c->a, DTL_TYPE_MODEL);
        t->u.m.model = s->u.model;
        return t;
    }
    case DTL_SYM_MODULE: {
        if (!s->u.module)
            return c->err;
        dtl_type *t = dtl_type_new(c->a, DTL_TYPE_MODULE);
        t->u.module = s->u.module;
        return t;
    }
    default:
        break;
    }
    if (!s->type) {
        dtl_diag_error(c->d, at, "'%s' is used before its definition", s->name);
        dtl_diag_note(c->d, s->span, "'%s' is defined here", s->name);
        s->type = c->err;
    }
    return s->type;
}

/* A symbol's type as seen from here: members of the train block's instance are
 * substituted, fns carry their instance. */
static dtl_type *sym_value_type(chk *c, dtl_sym *s, dtl_span at)
{
    dtl_type *t = sym_base_type(c, s, at);
    if (is_err(t))
        return c->err;
    bool of_inst = c->inst && s->owner && s->owner == c->inst->u.m.model;
    if (t->kind == DTL_TYPE_FN && of_inst) {
        dtl_type *f = dtl_type_new(c->a, DTL_TYPE_FN);
        f->u.fn.fn = t->u.fn.fn;
        f->u.fn.inst = c->inst;
        return f;
    }
    if (of_inst) {
        t = dtl_type_subst(c->a, t, c->inst_subst);
        if (!t) {
            dtl_diag_error(c->d, at, "the sizes of '%s' overflow", s->name);
            return c->err;
        }
    }
    return t;
}

static void mark_used(chk *c, dtl_sym *s)
{
    switch (s->kind) {
    case DTL_SYM_PARAM:
        if (c->fn && c->fn->model == s->owner)
            s->used = true;
        break;
    default:
        s->used = true;
        break;
    }
}

/* Is name a let of the current block defined further down? */
static dtl_decl *later_let(chk *c, const char *name)
{
    for (size_t i = c->block_at; i < c->nblock; i++)
        if (c->block[i]->kind == DTL_DECL_LET && c->block[i]->name.text &&
            strcmp(c->block[i]->name.text, name) == 0)
            return c->block[i];
    return NULL;
}

static dtl_sym *resolve(chk *c, dtl_ident name)
{
    dtl_sym *s = lookup(c, name.text);
    if (s)
        return s;
    dtl_decl *later = later_let(c, name.text);
    if (later) {
        dtl_diag_error(c->d, name.span, "'%s' is used before its definition", name.text);
        dtl_diag_note(c->d, later->name.span, "'%s' is defined here", name.text);
        return NULL;
    }
    dtl_diag_error(c->d, name.span, "unknown name '%s'%s", name.text,
                   mean_suffix(c, suggest_in(c, name.text, c->scope, true)));
    return NULL;
}

/* ---- host value folding ---- */

static dtl_type *overflow(chk *c, dtl_span at)
{
    dtl_diag_error(c->d, at, "integer overflow in a constant expression");
    return c->err;
}


static dtl_type *bad_operands(chk *c, dtl_expr *e, const dtl_type *x, const dtl_type *y)
{
    dtl_diag_error(c->d, e->span, "'%s' cannot combine %s and %s",
                   dtl_binop_text(e->u.binary.op), tystr(c, x), tystr(c, y));
    return c->err;
}

/* Both operands are host values. */
static dtl_type *fold_binary(chk *c, dtl_expr *e, dtl_type *x, dtl_type *y)
{
    dtl_binop op = e->u.binary.op;
    dtl_arena *a = c->a;
    if (op == DTL_BINOP_AND || op == DTL_BINOP_OR) {
        if (x->kind != DTL_TYPE_BOOL || y->kind != DTL_TYPE_BOOL)
            return bad_operands(c, e, x, y);
        if (x->u.b.known && y->u.b.known)
            return dtl_type_bool(a, true, op == DTL_BINOP_AND ? x->u.b.v && y->u.b.v
                                                              : x->u.b.v || y->u.b.v);
        /* false and _, true or _ */
        if (x->u.b.known && x->u.b.v == (op == DTL_BINOP_OR))
            return dtl_type_bool(a, true, x->u.b.v);
        return dtl_type_bool(a, false, false);
    }
    if (dtl_binop_is_cmp(op)) {
        if ((op == DTL_BINOP_EQ || op == DTL_BINOP_NE) && x->kind == y->kind &&
            (x->kind == DTL_TYPE_BOOL || x->kind == DTL_TYPE_STR)) {
            bool known = x->kind == DTL_TYPE_BOOL ? x->u.b.known && y->u.b.known
                                                  : x->u.s.bytes && y->u.s.bytes;
            bool eq = x->kind == DTL_TYPE_BOOL
                          ? x->u.b.v == y->u.b.v
                          : x->u.s.len == y->u.s.len &&
                                (x->u.s.len == 0 || memcmp(x->u.s.bytes, y->u.s.bytes, x->u.s.len) == 0);
            return dtl_type_bool(a, known, eq == (op == DTL_BINOP_EQ));
        }
        if (!dtl_type_is_number(x) || !dtl_type_is_number(y))
            return bad_operands(c, e, x, y);
        double xv, yv;
        if (dtl_type_num_const(x, &xv) && dtl_type_num_const(y, &yv)) {
            int64_t xi, yi;
            if (dtl_type_int_const(x, &xi) && dtl_type_int_const(y, &yi))
                return dtl_type_bool(a, true, dtl_binop_cmp(op, xi < yi ? -1 : xi > yi, 0));
            return dtl_type_bool(a, true, dtl_binop_cmp(op, xv, yv));
        }
        if (x->kind == DTL_TYPE_INT && y->kind == DTL_TYPE_INT && x->u.ival && y->u.ival &&
            dtl_dim_eq(x->u.ival, y->u.ival))
            return dtl_type_bool(a, true, op == DTL_BINOP_EQ || op == DTL_BINOP_LE ||
                                              op == DTL_BINOP_GE);
        return dtl_type_bool(a, false, false);
    }
    if (!dtl_type_is_number(x) || !dtl_type_is_number(y))
        return bad_operands(c, e, x, y);
    if (x->kind == DTL_TYPE_INT && y->kind == DTL_TYPE_INT && op != DTL_BINOP_DIV) {
        if (!x->u.ival || !y->u.ival)
            return dtl_type_int(a, NULL);
        const dtl_dim *r = NULL;
        if (op == DTL_BINOP_POW) {
            int64_t ev, bv;
            if (!dtl_dim_is_const(y->u.ival, &ev) || ev < 0) {
                double bd;
                if (dtl_type_num_const(x, &bd) && dtl_dim_is_const(y->u.ival, &ev))
                    return dtl_type_float(a, true, pow(bd, (double)ev));
                return dtl_type_float(a, false, 0);
            }
            if (dtl_dim_is_const(x->u.ival, &bv)) {
                int64_t p;
                if (!dtl_int_pow(bv, ev, &p))
                    return overflow(c, e->span);
                return dtl_type_int(a, dtl_dim_const(a, p));
            }
            if (ev > 16)
                return dtl_type_int(a, NULL);
            r = dtl_dim_const(a, 1);
            for (int64_t i = 0; i < ev && r; i++)
                r = dtl_dim_mul(a, r, x->u.ival);
        } else {
            r = op == DTL_BINOP_ADD ? dtl_dim_add(a, x->u.ival, y->u.ival)
              : op == DTL_BINOP_SUB ? dtl_dim_sub(a, x->u.ival, y->u.ival)
                                    : dtl_dim_mul(a, x->u.ival, y->u.ival);
        }
        if (!r)
            return overflow(c, e->span);
        return dtl_type_int(a, r);
    }
    double xv, yv;
    bool xk = dtl_type_num_const(x, &xv), yk = dtl_type_num_const(y, &yv);
    bool known = xk && yk;
    if (op == DTL_BINOP_DIV && dtl_type_num_const(y, &yv) && yv == 0) {
        dtl_diag_error(c->d, e->span, "division by zero");
        return c->err;
    }
    if (!known)
        return dtl_type_float(a, false, 0);
    double r;
    switch (op) {
    case DTL_BINOP_ADD: r = xv + yv; break;
    case DTL_BINOP_SUB: r = xv - yv; break;
    case DTL_BINOP_MUL: r = xv * yv; break;
    case DTL_BINOP_DIV: r = xv / yv; break;
    default: r = pow(xv, yv); break;
    }
    return dtl_type_float(a, true, r);
}

/* ---- tensor operators ---- */

static const char *side_name(chk *c, const dtl_expr *e, bool left)
{
    return ename(c, e, left ? "the left operand" : "the right operand");
}

/* Can host value h combine with a tensor of dtype dt in arithmetic or a comparison? */
static bool host_mixes(const dtl_type *h, dtl_dtype dt)
{
    if (h->kind == DTL_TYPE_INT)
        return dt != DTL_DTYPE_BOOL;
    if (h->kind == DTL_TYPE_FLOAT)
        return dtl_dtype_is_float(dt);
    return false;
}

static dtl_type *tensor_binary(chk *c, dtl_expr *e, dtl_type *x, dtl_type *y)
{
    dtl_binop op = e->u.binary.op;
    dtl_expr *lhs = e->u.binary.lhs, *rhs = e->u.binary.rhs;
    const char *opt = dtl_binop_text(op);
    bool logic = op == DTL_BINOP_AND || op == DTL_BINOP_OR;

    if (op == DTL_BINOP_POW) {
        if (x->kind != DTL_TYPE_TENSOR) {
            dtl_diag_error(c->d, rhs->span, "the exponent of ** must be a scalar, found %s",
                           tystr(c, y));
            return c->err;
        }
        if (y->kind == DTL_TYPE_TENSOR && y->u.t.rank != 0) {
            dtl_diag_error(c->d, rhs->span, "the exponent of ** must be a scalar, found %s",
                           tystr(c, y));
            return c->err;
        }
    }
    /* One side a host value. */
    if (x->kind != DTL_TYPE_TENSOR || y->kind != DTL_TYPE_TENSOR) {
        dtl_type *t = x->kind == DTL_TYPE_TENSOR ? x : y;
        dtl_type *h = t == x ? y : x;
        dtl_expr *te = t == x ? lhs : rhs, *he = t == x ? rhs : lhs;
        dtl_dtype dt = t->u.t.dtype;
        if (logic) {
            if (dt != DTL_DTYPE_BOOL || h->kind != DTL_TYPE_BOOL)
                return bad_operands(c, e, x, y);
            return t;
        }
        if (!dtl_type_is_number(h) && h->kind != DTL_TYPE_BOOL)
            return bad_operands(c, e, x, y);
        if (dt == DTL_DTYPE_BOOL && !dtl_binop_is_cmp(op)) {
            dtl_diag_error(c->d, te->span, "'%s' needs numbers; %s is %s", opt,
                           ename(c, te, "this operand"), tystr(c, t));
            return c->err;
        }
        if (!host_mixes(h, dt) && !(dtl_binop_is_cmp(op) && h->kind == DTL_TYPE_BOOL &&
                                    dt == DTL_DTYPE_BOOL)) {
            dtl_diag_error(c->d, he->span, "cannot mix %s %s with %s (%s)",
                           h->kind == DTL_TYPE_FLOAT ? "a float" : "a host value",
                           valstr(c, h), ename(c, te, "a tensor"), tystr(c, t));
            if (h->kind == DTL_TYPE_FLOAT && dtl_dtype_is_int(dt))
                dtl_diag_note(c->d, te->span, "use cast(%s, f32)", ename(c, te, "it"));
            return c->err;
        }
        if (op == DTL_BINOP_DIV && dtl_dtype_is_int(dt)) {
            dtl_diag_error(c->d, e->span, "'/' on an integer tensor: %s is %s",
                           ename(c, te, "the tensor"), tystr(c, t));
            dtl_diag_note(c->d, te->span, "use cast(%s, f32) first", ename(c, te, "it"));
            return c->err;
        }
        if (dtl_binop_is_cmp(op))
            return dtl_type_tensor(c->a, DTL_DTYPE_BOOL, t->u.t.rank, t->u.t.dims);
        return t;
    }
    /* Two tensors. */
    if (x->u.t.dtype != y->u.t.dtype) {
        dtl_builtin_dtype_mismatch(c->a, c->d, c->mod, e->span, lhs, x, rhs, y);
        return c->err;
    }
    dtl_dtype dt = x->u.t.dtype;
    if (logic && dt != DTL_DTYPE_BOOL)
        return bad_operands(c, e, x, y);
    if (!logic && !dtl_binop_is_cmp(op) && dt == DTL_DTYPE_BOOL) {
        dtl_diag_error(c->d, e->span, "'%s' needs numbers; %s is %s", opt,
                       side_name(c, lhs, true), tystr(c, x));
        return c->err;
    }
    if (op == DTL_BINOP_DIV && dtl_dtype_is_int(dt)) {
        dtl_diag_error(c->d, e->span, "'/' on integer tensors: %s is %s",
                       side_name(c, lhs, true), tystr(c, x));
        dtl_diag_note(c->d, lhs->span, "use cast(%s, f32) first", side_name(c, lhs, true));
        return c->err;
    }
    const dtl_dim **dims;
    int bad = dtl_broadcast(c->a, x->u.t.dims, x->u.t.rank, y->u.t.dims, y->u.t.rank, &dims);
    if (bad >= 0) {
        uint32_t r = x->u.t.rank > y->u.t.rank ? x->u.t.rank : y->u.t.rank;
        const dtl_dim *xd = x->u.t.dims[bad - (r - x->u.t.rank)];
        const dtl_dim *yd = y->u.t.dims[bad - (r - y->u.t.rank)];
        dtl_diag_error(c->d, e->span, "cannot broadcast %s (%s) with %s (%s): dimension %d is "
                       "%s vs %s", side_name(c, lhs, true), tystr(c, x), side_name(c, rhs, false),
                       tystr(c, y), bad, dtl_dim_print(c->a, xd), dtl_dim_print(c->a, yd));
        return c->err;
    }
    uint32_t r = x->u.t.rank > y->u.t.rank ? x->u.t.rank : y->u.t.rank;
    return dtl_type_tensor(c->a, dtl_binop_is_cmp(op) ? DTL_DTYPE_BOOL : dt, r, dims);
}

/* parallel = data(2) * tensor(2) */
static dtl_type *parallel_product(chk *c, dtl_expr *e, dtl_type *x, dtl_type *y)
{
    dtl_type *t = dtl_type_new(c->a, DTL_TYPE_PARALLEL);
    t->u.par = x->u.par;
    const char *dup = NULL;
    if (y->u.par.data) {
        if (t->u.par.data)
            dup = "data";
        t->u.par.data = y->u.par.data;
    }
    if (y->u.par.tensor) {
        if (t->u.par.tensor)
            dup = "tensor";
        t->u.par.tensor = y->u.par.tensor;
    }
    if (y->u.par.stages) {
        if (t->u.par.stages)
            dup = "pipeline";
        t->u.par.stages = y->u.par.stages;
        t->u.par.microbatches = y->u.par.microbatches;
    }
    if (dup) {
        dtl_diag_error(c->d, e->span, "parallel: %s appears twice", dup);
        return c->err;
    }
    return t;
}

/* A bare builtin name where a parallel spec, device or schedule is expected: `data`, `cpu`,
 * `cosine`. */
static dtl_type *bare_builtin(chk *c, dtl_expr *e, dtl_type *t, unsigned allow);

static dtl_type *not_a_value(chk *c, const dtl_expr *e, const dtl_type *t)
{
    if (t->kind == DTL_TYPE_PENDING)
        return c->err;
    const char *what = tystr(c, t);
    if (t->kind == DTL_TYPE_FN || t->kind == DTL_TYPE_BUILTIN)
        dtl_diag_error(c->d, e->span, "%s is a function, not a value; call it", what);
    else
        dtl_diag_error(c->d, e->span, "expected a value, found %s", what);
    return c->err;
}

static dtl_type *check_binary(chk *c, dtl_expr *e)
{
    dtl_binop op = e->u.binary.op;
    unsigned allow = c->allow;
    c->allow = 0;
    if (op == DTL_BINOP_MUL && (allow & ALLOW_PARALLEL))
        c->allow = ALLOW_PARALLEL;
    dtl_type *x = check_expr(c, e->u.binary.lhs);
    if (op == DTL_BINOP_MUL && (allow & ALLOW_PARALLEL))
        c->allow = ALLOW_PARALLEL;
    dtl_type *y = check_expr(c, e->u.binary.rhs);
    c->allow = 0;
    if (is_err(x) || is_err(y))
        return c->err;
    if (op == DTL_BINOP_MUL && (allow & ALLOW_PARALLEL)) {
        x = bare_builtin(c, e->u.binary.lhs, x, ALLOW_PARALLEL);
        y = bare_builtin(c, e->u.binary.rhs, y, ALLOW_PARALLEL);
        if (is_err(x) || is_err(y))
            return c->err;
        if (x->kind == DTL_TYPE_PARALLEL && y->kind == DTL_TYPE_PARALLEL)
            return parallel_product(c, e, x, y);
        if (x->kind == DTL_TYPE_PARALLEL || y->kind == DTL_TYPE_PARALLEL) {
            dtl_diag_error(c->d, e->span, "parallel: '*' combines data, tensor(n) and "
                           "pipeline(…); found %s", tystr(c, x->kind == DTL_TYPE_PARALLEL ? y : x));
            return c->err;
        }
    }
    if (!dtl_type_is_value(x))
        return not_a_value(c, e->u.binary.lhs, x);
    if (!dtl_type_is_value(y))
        return not_a_value(c, e->u.binary.rhs, y);
    if (op == DTL_BINOP_MATMUL)
        return dtl_builtin_matmul(c->a, c->d, c->mod, e->span, e->u.binary.lhs, x,
                                  e->u.binary.rhs, y);
    if (x->kind == DTL_TYPE_LIST || y->kind == DTL_TYPE_LIST || x->kind == DTL_TYPE_NONE ||
        y->kind == DTL_TYPE_NONE || x->kind == DTL_TYPE_DTYPE || y->kind == DTL_TYPE_DTYPE)
        return bad_operands(c, e, x, y);
    if (x->kind != DTL_TYPE_TENSOR && y->kind != DTL_TYPE_TENSOR)
        return fold_binary(c, e, x, y);
    return tensor_binary(c, e, x, y);
}

static dtl_type *check_unary(chk *c, dtl_expr *e)
{
    c->allow = 0;
    dtl_type *x = check_expr(c, e->u.unary.operand);
    if (is_err(x))
        return c->err;
    if (!dtl_type_is_value(x))
        return not_a_value(c, e->u.unary.operand, x);
    if (e->u.unary.op == DTL_UNOP_NOT) {
        if (x->kind == DTL_TYPE_BOOL)
            return dtl_type_bool(c->a, x->u.b.known, !x->u.b.v);
        if (x->kind == DTL_TYPE_TENSOR && x->u.t.dtype == DTL_DTYPE_BOOL)
            return x;
        dtl_diag_error(c->d, e->span, "'not' needs a bool, found %s", tystr(c, x));
        return c->err;
    }
    switch (x->kind) {
    case DTL_TYPE_INT: {
        if (!x->u.ival)
            return x;
        const dtl_dim *r = dtl_dim_neg(c->a, x->u.ival);
        return r ? dtl_type_int(c->a, r) : overflow(c, e->span);
    }
    case DTL_TYPE_FLOAT:
        return dtl_type_float(c->a, x->u.f.known, -x->u.f.v);
    case DTL_TYPE_TENSOR:
        if (x->u.t.dtype != DTL_DTYPE_BOOL)
            return x;
        break;
    default:
        break;
    }
    dtl_diag_error(c->d, e->span, "unary '-' needs a number, found %s", tystr(c, x));
    return c->err;
}

/* ---- indexing ---- */

static bool sub_int(chk *c, dtl_expr *e, const dtl_dim **out, const char *what)
{
    dtl_type *t = check_expr(c, e);
    if (is_err(t))
        return false;
    if (t->kind != DTL_TYPE_INT || !t->u.ival) {
        dtl_diag_error(c->d, e->span, "%s must be an int, found %s", what, tystr(c, t));
        if (t->kind == DTL_TYPE_TENSOR)
            dtl_diag_note(c->d, e->span, "indexing by a tensor is not supported; use one_hot "
                          "or where");
        return false;
    }
    *out = t->u.ival;
    return true;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* The length of a slice of a dim of size d. */
static const dtl_dim *slice_len(chk *c, const dtl_dim *d, const dtl_dim *start,
                                const dtl_dim *stop, int64_t step)
{
    dtl_arena *a = c->a;
    int64_t n, s, e;
    bool cs = !start || dtl_dim_is_const(start, &s), ce = !stop || dtl_dim_is_const(stop, &e);
    if (dtl_dim_is_const(d, &n) && cs && ce) {
        int64_t len;
        if (step > 0) {
            s = !start ? 0 : s < 0 ? clamp64(s + n, 0, n) : clamp64(s, 0, n);
            e = !stop ? n : e < 0 ? clamp64(e + n, 0, n) : clamp64(e, 0, n);
            len = e > s ? (e - s + step - 1) / step : 0;
        } else {
            s = !start ? n - 1 : s < 0 ? clamp64(s + n, -1, n - 1) : clamp64(s, -1, n - 1);
            e = !stop ? -1 : e < 0 ? clamp64(e + n, -1, n - 1) : clamp64(e, -1, n - 1);
            len = s > e ? (s - e + (-step) - 1) / (-step) : 0;
        }
        return dtl_dim_const(a, len);
    }
    /* Symbolic: assume the bounds lie inside the dim, as they do in working programs. */
    const dtl_dim *lo, *hi;
    if (step > 0) {
        lo = !start ? dtl_dim_const(a, 0) : (cs && s < 0) ? dtl_dim_add(a, d, start) : start;
        hi = !stop ? d : (ce && e < 0) ? dtl_dim_add(a, d, stop) : stop;
    } else {
        hi = !start ? dtl_dim_sub(a, d, dtl_dim_const(a, 1))
                    : (cs && s < 0) ? dtl_dim_add(a, d, start) : start;
        lo = !stop ? dtl_dim_const(a, -1) : (ce && e < 0) ? dtl_dim_add(a, d, stop) : stop;
    }
    if (!lo || !hi)
        return NULL;
    const dtl_dim *span = dtl_dim_sub(a, hi, lo);
    int64_t k = step > 0 ? step : -step;
    if (span && k != 1)
        span = dtl_dim_div(a, dtl_dim_add(a, span, dtl_dim_const(a, k - 1)),
                           dtl_dim_const(a, k), NULL);
    int64_t v;
    if (span && dtl_dim_is_const(span, &v) && v < 0)
        span = dtl_dim_const(a, 0);
    return span;
}

static dtl_type *check_index(chk *c, dtl_expr *e)
{
    c->allow = 0;
    dtl_expr *base = e->u.index.base;
    dtl_type *t = check_expr(c, base);
    bool ok = !is_err(t);
    if (ok && t->kind == DTL_TYPE_LIST) {
        /* A list (split's result): one constant index picks an element. */
        dtl_subscript *s = &e->u.index.subs[0];
        int64_t iv, n = (int64_t)t->u.list.n;
        const dtl_dim *ix;
        if (e->u.index.nsubs != 1 || s->is_slice) {
            dtl_diag_error(c->d, e->span, "%s is a list of %zu tensors: it takes one index, "
                           "a constant int", ename(c, base, "this"), t->u.list.n);
            return c->err;
        }
        if (!sub_int(c, s->value, &ix, "an index"))
            return c->err;
        if (!dtl_dim_is_const(ix, &iv)) {
            dtl_diag_error(c->d, s->value->span, "the index of a list must be a constant int");
            return c->err;
        }
        if (iv < -n || iv >= n) {
            dtl_diag_error(c->d, s->value->span, "index %" PRId64 " is out of range for %s, a "
                           "list of %" PRId64 " tensors", iv, ename(c, base, "the list"), n);
            return c->err;
        }
        return t->u.list.elems[iv < 0 ? iv + n : iv];
    }
    if (ok && t->kind != DTL_TYPE_TENSOR) {
        dtl_diag_error(c->d, base->span, "%s cannot be indexed: it is %s",
                       ename(c, base, "this"), tystr(c, t));
        ok = false;
    }
    if (ok && e->u.index.nsubs > t->u.t.rank) {
        dtl_diag_error(c->d, e->u.index.subs[t->u.t.rank].span,
                       "too many subscripts: %s is %s (rank %u), %zu given",
                       ename(c, base, "the tensor"), tystr(c, t), t->u.t.rank,
                       e->u.index.nsubs);
        ok = false;
    }
    uint32_t rank = ok ? t->u.t.rank : 0;
    const dtl_dim **dims = dtl_arena_array(c->a, rank ? rank : 1, sizeof *dims);
    uint32_t nd = 0;
    for (size_t i = 0; i < e->u.index.nsubs; i++) {
        dtl_subscript *s = &e->u.index.subs[i];
        const dtl_dim *d = ok && i < rank ? t->u.t.dims[i] : NULL;
        if (!s->is_slice) {
            const dtl_dim *ix;
            if (!sub_int(c, s->value, &ix, "an index")) {
                ok = false;
                continue;
            }
            int64_t iv, n;
            if (d && dtl_dim_is_const(ix, &iv) && dtl_dim_is_const(d, &n) &&
                (iv < -n || iv >= n)) {
                dtl_diag_error(c->d, s->value->span, "index %" PRId64 " is out of range for "
                               "dimension %zu of %s (size %" PRId64 ")", iv, i,
                               ename(c, base, "the tensor"), n);
                ok = false;
            }
            continue;
        }
        const dtl_dim *start = NULL, *stop = NULL, *step = NULL;
        bool sok = !s->start || sub_int(c, s->start, &start, "a slice's start");
        sok = (!s->stop || sub_int(c, s->stop, &stop, "a slice's end")) && sok;
        sok = (!s->step || sub_int(c, s->step, &step, "a slice's step")) && sok;
        int64_t sv = 1;
        if (sok && step && !dtl_dim_is_const(step, &sv)) {
            dtl_diag_error(c->d, s->step->span, "a slice's step must be a constant");
            sok = false;
        } else if (sok && sv == 0) {
            dtl_diag_error(c->d, s->step->span, "a slice's step cannot be zero");
            sok = false;
        }
        if (!sok || !ok) {
            ok = false;
            continue;
        }
        dims[nd] = slice_len(c, d, start, stop, sv);
        if (!dims[nd]) {
            dtl_diag_error(c->d, s->span, "the slice's length is too large or too complex");
            ok = false;
            continue;
        }
        nd++;
    }
    if (!ok)
        return c->err;
    for (uint32_t i = (uint32_t)e->u.index.nsubs; i < rank; i++)
        dims[nd++] = t->u.t.dims[i];
    return dtl_type_tensor(c->a, t->u.t.dtype, nd, dims);
}

/* ---- tensor literals ---- */

static const char *shape_text(chk *c, const dtl_type *t)
{
    char *s = dtl_arena_strdup(c->a, "[");
    for (uint32_t i = 0; i < t->u.t.rank; i++)
        s = dtl_arena_printf(c->a, "%s%s%s", s, i ? ", " : "", dtl_dim_print(c->a, t->u.t.dims[i]));
    return dtl_arena_printf(c->a, "%s]", s);
}

static dtl_type *check_literal(chk *c, dtl_expr *e)
{
    c->allow = 0;
    size_t n = e->u.tensor.nelems;
    dtl_type **ts = dtl_arena_array(c->a, n ? n : 1, sizeof *ts);
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        ts[i] = check_expr(c, e->u.tensor.elems[i]);
        if (is_err(ts[i])) {
            ok = false;
        } else if (!dtl_type_is_value(ts[i]) || ts[i]->kind == DTL_TYPE_STR ||
                   ts[i]->kind == DTL_TYPE_NONE || ts[i]->kind == DTL_TYPE_DTYPE ||
                   ts[i]->kind == DTL_TYPE_LIST) {
            dtl_diag_error(c->d, e->u.tensor.elems[i]->span, "a tensor literal holds numbers, "
                           "bools or tensors; found %s", tystr(c, ts[i]));
            ok = false;
        }
    }
    if (!ok)
        return c->err;
    const dtl_dim **one = dtl_arena_array(c->a, 1, sizeof *one);
    one[0] = dtl_dim_const(c->a, (int64_t)n);
    if (n == 0)
        return dtl_type_tensor(c->a, DTL_DTYPE_F32, 1, one);
    /* Host scalars: a vector. */
    size_t nhost = 0, nbool = 0, nfloat = 0;
    for (size_t i = 0; i < n; i++) {
        nhost += dtl_type_is_host(ts[i]);
        nbool += ts[i]->kind == DTL_TYPE_BOOL;
        nfloat += ts[i]->kind == DTL_TYPE_FLOAT;
    }
    if (nhost == n) {
        if (nbool && nbool != n) {
            dtl_diag_error(c->d, e->span, "a tensor literal cannot mix bools and numbers");
            return c->err;
        }
        dtl_dtype dt = nbool ? DTL_DTYPE_BOOL : nfloat ? DTL_DTYPE_F32 : DTL_DTYPE_I64;
        return dtl_type_tensor(c->a, dt, 1, one);
    }
    if (nhost) {
        for (size_t i = 0; i < n; i++)
            if (dtl_type_is_host(ts[i])) {
                dtl_diag_error(c->d, e->u.tensor.elems[i]->span, "a tensor literal cannot mix "
                               "numbers and tensors: element %zu is %s, element %zu is %s", i,
                               tystr(c, ts[i]), i ? (size_t)0 : (size_t)1,
                               tystr(c, ts[i ? 0 : 1]));
                break;
            }
        return c->err;
    }
    /* Rows that are literals themselves: a tensor of one more dimension. */
    bool rows = true;
    for (size_t i = 0; i < n; i++)
        rows &= strip(e->u.tensor.elems[i])->kind == DTL_EXPR_TENSOR;
    if (!rows) {
        dtl_type *l = dtl_type_new(c->a, DTL_TYPE_LIST);
        l->u.list.elems = ts;
        l->u.list.n = n;
        return l;
    }
    const dtl_type *r0 = ts[0];
    dtl_dtype dt = r0->u.t.dtype;
    for (size_t i = 0; i < n; i++) {
        const dtl_type *ri = ts[i];
        bool same = ri->u.t.rank == r0->u.t.rank;
        for (uint32_t k = 0; same && k < ri->u.t.rank; k++)
            same = dtl_dim_eq(ri->u.t.dims[k], r0->u.t.dims[k]);
        if (!same) {
            dtl_diag_error(c->d, e->u.tensor.elems[i]->span, "ragged tensor literal: row %zu "
                           "has shape %s, row 0 has shape %s", i,
                           shape_text(c, ri), shape_text(c, r0));
            return c->err;
        }
        if ((ri->u.t.dtype == DTL_DTYPE_BOOL) != (dt == DTL_DTYPE_BOOL)) {
            dtl_diag_error(c->d, e->span, "a tensor literal cannot mix bools and numbers");
            return c->err;
        }
        if (ri->u.t.dtype == DTL_DTYPE_F32)
            dt = DTL_DTYPE_F32;
    }
    uint32_t rank = r0->u.t.rank + 1;
    const dtl_dim **dims = dtl_arena_array(c->a, rank, sizeof *dims);
    dims[0] = one[0];
    memcpy(dims + 1, r0->u.t.dims, r0->u.t.rank * sizeof *dims);
    return dtl_type_tensor(c->a, dt, rank, dims);
}

/* ---- member access ---- */

static const char *fn_title(chk *c, const dtl_fn *f)
{
    return f->model ? dtl_arena_printf(c->a, "%s.%s", f->model->name, f->name) : f->name;
}

static dtl_type *check_member(chk *c, dtl_expr *e)
{
    c->allow = 0;
    dtl_expr *base = e->u.member.base;
    dtl_ident field = e->u.member.field;
    dtl_type *t = check_expr(c, base);
    if (is_err(t))
        return c->err;
    switch (t->kind) {
    case DTL_TYPE_MODULE: {
        dtl_module *m = t->u.module;
        dtl_sym *s = dtl_module_lookup(m, field.text);
        if (!s) {
            dtl_diag_error(c->d, field.span, "module '%s' has no member '%s'%s", m->name,
                           field.text, mean_suffix(c, suggest_in(c, field.text, m->scope, false)));
            return c->err;
        }
        e->sym = s;
        return sym_value_type(c, s, field.span);
    }
    case DTL_TYPE_INSTANCE: {
        dtl_model *m = t->u.m.model;
        if (t->u.m.rep) {
            dtl_diag_error(c->d, field.span, "%s is a stack of %s instances of %s: call it "
                           "(%s(x) applies them in order); its members cannot be named",
                           ename(c, base, "this"), dtl_dim_print(c->a, t->u.m.rep), m->name,
                           ename(c, base, "it"));
            return c->err;
        }
        dtl_sym *s = dtl_model_lookup(m, field.text);
        if (!s) {
            dtl_diag_error(c->d, field.span, "model %s has no member '%s'%s", m->name, field.text,
                           mean_suffix(c, suggest_in(c, field.text, m->scope, false)));
            return c->err;
        }
        e->sym = s;
        dtl_type *st = sym_base_type(c, s, field.span);
        if (is_err(st))
            return c->err;
        if (st->kind == DTL_TYPE_FN) {
            dtl_type *f = dtl_type_new(c->a, DTL_TYPE_FN);
            f->u.fn.fn = st->u.fn.fn;
            f->u.fn.inst = t;
            return f;
        }
        dtl_type *r = dtl_type_subst(c->a, st, inst_subst(c, t));
        if (!r) {
            dtl_diag_error(c->d, e->span, "the sizes of '%s' overflow", field.text);
            return c->err;
        }
        return r;
    }
    case DTL_TYPE_DATASET: {
        bool train = strcmp(field.text, "train") == 0, test = strcmp(field.text, "test") == 0;
        dtl_sym *ds = strip(base)->sym;
        if ((!train && !test) || !ds) {
            static const char *const splits[] = {"train", "test"};
            const char *near = dtl_diag_suggest(field.text, splits, 2);
            dtl_diag_error(c->d, field.span, "dataset '%s' has no member '%s'%s",
                           ds ? ds->name : "?", field.text, mean_suffix(c, near));
            dtl_diag_note(c->d, field.span, "a dataset has two splits: .train and .test");
            return c->err;
        }
        dtl_type *r = dtl_type_new(c->a, DTL_TYPE_SPLIT);
        r->u.split.dataset = ds;
        r->u.split.test = test;
        return r;
    }
    case DTL_TYPE_PENDING:
        return c->err;
    default:
        dtl_diag_error(c->d, field.span, "%s has no member '%s'", tystr(c, t), field.text);
        return c->err;
    }
}

/* ---- calls ---- */

/* The initials of a snake_case name: "learning_rate" -> "lr". */
static const char *initials(chk *c, const char *s)
{
    char *r = dtl_arena_alloc(c->a, strlen(s) + 1);
    size_t n = 0;
    for (const char *p = s; *p; p++)
        if (*p != '_' && (p == s || p[-1] == '_'))
            r[n++] = *p;
    r[n] = '\0';
    return r;
}

/* Did-you-mean for a parameter name: by spelling, by common synonyms, or by initials
 * ("learning_rate" for lr, "wd" for weight_decay). */
static const char *suggest_param(chk *c, const char *name, const char *const *names, size_t n)
{
    const char *near = dtl_diag_suggest(name, names, n);
    if (near)
        return near;
    static const char *const alias[][2] = {
        {"rate", "lr"}, {"epsilon", "eps"}, {"decay", "weight_decay"}, {"l2", "weight_decay"},
        {"dim", "axis"}, {"keepdim", "keepdims"}, {"keep_dims", "keepdims"}, {"mu", "mean"},
        {"sigma", "std"}, {"stddev", "std"}, {"prob", "p"}, {"drop", "p"}, {"classes", "n"},
        {"num_classes", "n"}, {"begin", "low"}, {"end", "high"},
    };
    for (size_t a = 0; a < sizeof alias / sizeof alias[0]; a++)
        if (strcmp(alias[a][0], name) == 0)
            for (size_t i = 0; i < n; i++)
                if (strcmp(names[i], alias[a][1]) == 0)
                    return names[i];
    const char *ini = initials(c, name);
    for (size_t i = 0; i < n; i++)
        if ((strlen(names[i]) > 1 && strcmp(ini, names[i]) == 0 && strchr(name, '_')) ||
            (strchr(names[i], '_') && strcmp(initials(c, names[i]), name) == 0))
            return names[i];
    return NULL;
}

/* Binds a call's arguments to parameters names[0..np): out[i] is the argument for
 * parameter i or NULL. Reports problems and returns false. */
static bool bind_args(chk *c, dtl_expr *call, const char *who, size_t np,
                      const char *const *names, const bool *has_def, dtl_expr **out)
{
    size_t nargs = call->u.call.nargs;
    dtl_arg *args = call->u.call.args;
    bool ok = true, named = false;
    size_t pos = 0;
    for (size_t i = 0; i < nargs; i++) {
        if (!args[i].name.text) {
            if (named) {
                dtl_diag_error(c->d, args[i].value->span,
                               "a positional argument cannot follow a named one");
                ok = false;
                continue;
            }
            if (pos >= np) {
                dtl_diag_error(c->d, args[i].value->span, "%s takes %zu argument%s, %zu given",
                               who, np, np == 1 ? "" : "s", nargs);
                return false;
            }
            out[pos++] = args[i].value;
            continue;
        }
        named = true;
        size_t j = 0;
        while (j < np && strcmp(names[j], args[i].name.text) != 0)
            j++;
        if (j == np) {
            const char *near = suggest_param(c, args[i].name.text, names, np);
            dtl_diag_error(c->d, args[i].name.span, "%s has no parameter '%s'%s", who,
                           args[i].name.text, mean_suffix(c, near));
            ok = false;
            continue;
        }
        if (out[j]) {
            dtl_diag_error(c->d, args[i].name.span, "argument '%s' is given twice",
                           args[i].name.text);
            dtl_diag_note(c->d, out[j]->span, "it was first given here");
            ok = false;
            continue;
        }
        out[j] = args[i].value;
    }
    if (!ok)
        return false;
    const char *missing = NULL;
    size_t nmissing = 0;
    for (size_t j = 0; j < np; j++)
        if (!out[j] && !has_def[j]) {
            missing = missing ? dtl_arena_printf(c->a, "%s, '%s'", missing, names[j])
                              : dtl_arena_printf(c->a, "'%s'", names[j]);
            nmissing++;
        }
    if (missing) {
        dtl_diag_error(c->d, call->span, "%s is missing argument%s %s", who,
                       nmissing == 1 ? "" : "s", missing);
        return false;
    }
    return true;
}

static dtl_call *record_call(chk *c, dtl_expr *e, dtl_call_kind kind, size_t n, dtl_expr **args,
                             dtl_type **types)
{
    dtl_sym *s = sym_new(c, DTL_SYM_CALL, "call", e->span);
    dtl_call *call = dtl_arena_alloc(c->a, sizeof *call);
    call->kind = kind;
    call->args = args;
    call->argtypes = types;
    call->nargs = n;
    s->u.call = call;
    s->state = ST_DONE;
    e->sym = s;
    return call;
}

/* The train's x passed where its shape cannot be taken from. */
static bool pending_arg(chk *c, dtl_expr *arg)
{
    if (!arg || !arg->type || arg->type->kind != DTL_TYPE_PENDING)
        return false;
    dtl_sym *x = strip(arg)->sym;
    if (x)
        cannot_infer_x(c, x, arg->span);
    return true;
}

static const char *where_kind_may_go(const dtl_builtin *b, unsigned *need)
{
    switch (b->kind) {
    case DTL_BUILTIN_INIT:
        *need = ALLOW_INIT;
        return "is an initializer: it can only initialize a param, as in "
               "param w: f32[4, 4] = glorot_uniform()";
    case DTL_BUILTIN_OPTIMIZER:
        *need = ALLOW_OPT;
        return "is an optimizer: it can only be a train block's optimizer";
    case DTL_BUILTIN_DATASET:
        *need = ALLOW_DATASET;
        return "defines a dataset: it can only be used as dataset NAME = …";
    case DTL_BUILTIN_METRIC:
        *need = ALLOW_METRIC;
        return "is a metric: it can only be a train block's evaluate";
    case DTL_BUILTIN_PARALLEL:
        *need = ALLOW_PARALLEL;
        return "describes parallelism: it can only be in a train block's parallel setting";
    case DTL_BUILTIN_DEVICE:
        *need = ALLOW_DEVICE;
        return "names a device: it can only be a train block's device";
    case DTL_BUILTIN_SCHEDULE:
        *need = ALLOW_SCHED;
        return "is a learning-rate schedule: it can only be a train block's schedule";
    default:
        *need = 0;
        return NULL;
    }
}

/* Where a schedule is expected, a builtin named like a schedule is that schedule
 * (`constant` is an initializer elsewhere). */
static const dtl_builtin *sched_builtin(const dtl_builtin *b, unsigned allow)
{
    const dtl_builtin *s = NULL;
    if ((allow & ALLOW_SCHED) && b->kind != DTL_BUILTIN_SCHEDULE)
        s = dtl_builtin_lookup_kind(b->name, DTL_BUILTIN_SCHEDULE);
    return s ? s : b;
}

static dtl_type *call_builtin(chk *c, dtl_expr *e, const dtl_builtin *b, unsigned allow,
                              bool args_ok)
{
    b = sched_builtin(b, allow);
    unsigned need;
    const char *where = where_kind_may_go(b, &need);
    const dtl_builtin *hb = hook_builtin(c, b);
    if (hb && hb != b && where && !(allow & need)) {
        b = hb;   /* zeros(2, 3) at the prompt: the tensor constructor, not the initializer */
        where = where_kind_may_go(b, &need);
    }
    if (hb != b)
        hb = NULL;
    if (b->kind == DTL_BUILTIN_CONST) {
        dtl_diag_error(c->d, e->u.call.callee->span, "'%s' is a constant, not a function",
                       b->name);
        return c->err;
    }
    if (where && !(allow & need)) {
        dtl_diag_error(c->d, e->span, "%s() %s", b->name, where);
        return c->err;
    }
    const char *names[DTL_BUILTIN_MAX_PARAMS];
    bool has_def[DTL_BUILTIN_MAX_PARAMS];
    dtl_expr *bound[DTL_BUILTIN_MAX_PARAMS] = {0};
    for (unsigned i = 0; i < b->nparams; i++) {
        names[i] = b->params[i].name;
        has_def[i] = b->params[i].deflt != NULL;
    }
    const char *who = dtl_arena_printf(c->a, "%s()", b->name);
    if (!bind_args(c, e, who, b->nparams, names, has_def, bound) || !args_ok)
        return c->err;
    dtl_bcall bc;
    memset(&bc, 0, sizeof bc);
    bc.arena = c->a;
    bc.diags = c->d;
    bc.from = c->mod;
    bc.b = b;
    bc.call = e;
    bc.at = e->span;
    for (unsigned i = 0; i < b->nparams; i++) {
        if (pending_arg(c, bound[i]))
            return c->err;
        bc.args[i] = bound[i];
        bc.types[i] = bound[i] ? bound[i]->type : dtl_builtin_default(c->a, &b->params[i]);
    }
    size_t n = b->nparams;
    dtl_expr **args = dtl_arena_array(c->a, n ? n : 1, sizeof *args);
    dtl_type **types = dtl_arena_array(c->a, n ? n : 1, sizeof *types);
    memcpy(args, bound, n * sizeof *args);
    memcpy(types, bc.types, n * sizeof *types);
    record_call(c, e, DTL_CALL_BUILTIN, n, args, types)->builtin = b;
    if (hb)
        return c->hooks->rule(c->hooks->user, &bc);
    return dtl_builtin_check(&bc);
}

static dtl_type *bare_builtin(chk *c, dtl_expr *e, dtl_type *t, unsigned allow)
{
    if (t->kind != DTL_TYPE_BUILTIN)
        return t;
    const dtl_builtin *b = sched_builtin(t->u.builtin, allow);
    if (b->kind != DTL_BUILTIN_PARALLEL && b->kind != DTL_BUILTIN_DEVICE &&
        b->kind != DTL_BUILTIN_SCHEDULE)
        return t;
    dtl_bcall bc;
    memset(&bc, 0, sizeof bc);
    bc.arena = c->a;
    bc.diags = c->d;
    bc.from = c->mod;
    bc.b = b;
    bc.at = e->span;
    for (unsigned i = 0; i < b->nparams; i++) {
        bc.types[i] = dtl_builtin_default(c->a, &b->params[i]);
        if (!bc.types[i]) {
            dtl_diag_error(c->d, e->span, "%s needs an argument: %s(%s)", b->name, b->name,
                           b->params[i].name);
            return c->err;
        }
    }
    return dtl_builtin_check(&bc);
}

static const char *const *param_names(chk *c, dtl_sym **ps, size_t n, bool **has_def)
{
    const char **names = dtl_arena_array(c->a, n ? n : 1, sizeof *names);
    bool *hd = dtl_arena_array(c->a, n ? n : 1, sizeof *hd);
    for (size_t i = 0; i < n; i++) {
        names[i] = ps[i]->name;
        hd[i] = ps[i]->fparam && ps[i]->fparam->deflt;
    }
    *has_def = hd;
    return names;
}

static bool host_fits(const dtl_type *want, const dtl_type *have)
{
    return want->kind == have->kind ||
           (want->kind == DTL_TYPE_FLOAT && have->kind == DTL_TYPE_INT);
}

static dtl_type *call_new(chk *c, dtl_expr *e, dtl_model *m, unsigned allow, bool args_ok)
{
    if (!(allow & ALLOW_NEW)) {
        dtl_diag_error(c->d, e->span, "model %s can only be instantiated as a member of a "
                       "model (m = %s(…)) or in a train block's header", m->name, m->name);
        if (c->hooks && c->hooks->lets_any)   /* dtlc repl: a top-level let may hold one */
            dtl_diag_note(c->d, e->span, "at the prompt, `let d = %s(…)` makes one and "
                          "`d(x)` calls it", e->kind == DTL_EXPR_CALL ?
                          dtl_print_expr(c->a, e->u.call.callee) : m->name);
        return c->err;
    }
    if (!ensure_model(c, m)) {
        if (m->state == ST_BUSY) {
            dtl_diag_error(c->d, e->span, "model '%s' contains itself", m->name);
            dtl_diag_note(c->d, m->sym->span, "'%s' is defined here; a model cannot be its own "
                          "member, directly or through other models", m->name);
        }
        return c->err;
    }
    bool *has_def;
    const char *const *names = param_names(c, m->ctor, m->nctor, &has_def);
    dtl_expr **bound = dtl_arena_array(c->a, m->nctor ? m->nctor : 1, sizeof *bound);
    const char *who = dtl_arena_printf(c->a, "model %s", m->name);
    if (!bind_args(c, e, who, m->nctor, names, has_def, bound) || !args_ok)
        return c->err;
    dtl_type **args = dtl_arena_array(c->a, m->nctor ? m->nctor : 1, sizeof *args);
    bool ok = true;
    for (size_t i = 0; i < m->nctor; i++) {
        const dtl_type *want = m->ctor[i]->type;
        if (is_err(want)) {
            ok = false;
            continue;
        }
        if (!bound[i]) {
            args[i] = m->defaults[i];
            ok &= args[i] != NULL;
            continue;
        }
        if (pending_arg(c, bound[i]))
            return c->err;
        dtl_type *have = bound[i]->type;
        if (!host_fits(want, have)) {
            dtl_diag_error(c->d, bound[i]->span, "argument '%s' of model %s must be %s, found %s",
                           m->ctor[i]->name, m->name, tystr(c, want), tystr(c, have));
            ok = false;
            continue;
        }
        args[i] = coerce(c, want, have);
    }
    if (!ok)
        return c->err;
    dtl_type *t = dtl_type_new(c->a, DTL_TYPE_INSTANCE);
    t->u.m.model = m;
    t->u.m.args = args;
    dtl_call *call = record_call(c, e, DTL_CALL_NEW, m->nctor, bound, args);
    call->model = m;
    call->inst = t;
    return t;
}

/* Unification of a fn's parameter types with a call's argument types. */
typedef struct unify {
    chk *c;
    dtl_fn *f;
    dtl_subst *S;
    dtl_expr *callee;   /* the called expression (for notes on mismatches) */
    dtl_type *inst;     /* the instance whose fn is called, or NULL */
} unify;

static bool free_var(const dtl_dimvar *v, void *data)
{
    const unify *u = data;
    return (v->kind == DTL_DIMVAR_FN || v->kind == DTL_DIMVAR_FN_INT) && v->sym &&
           v->sym->fn == u->f && !dtl_subst_get(u->S, v);
}

static void arg_mismatch(chk *c, unify *u, dtl_sym *p, dtl_expr *arg, const dtl_type *pt,
                         const dtl_type *at, int dim)
{
    dtl_type *shown = dtl_type_subst(c->a, (dtl_type *)pt, u->S);
    if (!shown)
        shown = (dtl_type *)pt;
    const char *detail = "";
    if (dim >= 0)
        detail = dtl_arena_printf(c->a, ": dimension %d is %s, expected %s", dim,
                                  dtl_dim_print(c->a, at->u.t.dims[dim]),
                                  dtl_dim_print(c->a, shown->u.t.dims[dim]));
    dtl_diag_error(c->d, arg->span, "argument '%s' of '%s' must be %s, found %s%s", p->name,
                   fn_title(c, u->f), tystr(c, shown), tystr(c, at), detail);
    /* The expected type often comes from the sizes an instance was made with (a member
     * `fc1 = nn.Dense(785, hidden)`): point there, where the fix usually is. */
    const dtl_expr *who = u->callee ? strip(u->callee) : NULL;
    if (who && who->kind == DTL_EXPR_MEMBER && who->sym && who->sym->kind == DTL_SYM_FN)
        who = strip(who->u.member.base);
    const dtl_sym *m = who ? who->sym : NULL;
    if (u->inst && m && m->kind == DTL_SYM_MEMBER && m->decl && m->decl->u.bind.value)
        dtl_diag_note(c->d, m->decl->u.bind.value->span, "'%s' is %s, made here", m->name,
                      tystr(c, u->inst));
}

/* x, whose shape is pending, is passed as parameter p: its shape is p's, with the train's
 * batch dim first. */
static bool infer_x(chk *c, unify *u, dtl_sym *p, dtl_expr *arg)
{
    dtl_sym *x = strip(arg)->sym;
    dtl_type *pt = dtl_type_subst(c->a, p->type, u->S);
    if (!x || !c->train || !pt)
        return false;
    if (pt->kind != DTL_TYPE_TENSOR || pt->u.t.rank == 0) {
        dtl_diag_error(c->d, arg->span, "cannot infer the shape of %s from parameter '%s' of "
                       "'%s' (%s): it has no batch dimension", x->name, p->name,
                       fn_title(c, u->f), tystr(c, pt));
        x->type = c->err;
        return false;
    }
    const dtl_dim **dims = dtl_arena_array(c->a, pt->u.t.rank, sizeof *dims);
    dims[0] = dtl_dim_var(c->a, c->train->batch_var);
    for (uint32_t k = 1; k < pt->u.t.rank; k++) {
        const dtl_dimvar *v;
        dims[k] = pt->u.t.dims[k];
        if (dtl_dim_find_var(dims[k], free_var, u, &v)) {
            dtl_diag_error(c->d, arg->span, "cannot infer the shape of %s: dimension %u of "
                           "parameter '%s' of '%s' (%s) is %s, which nothing fixes", x->name,
                           k, p->name, fn_title(c, u->f), tystr(c, pt), v->name);
            x->type = c->err;
            return false;
        }
    }
    x->type = dtl_type_tensor(c->a, pt->u.t.dtype, pt->u.t.rank, dims);
    for (dtl_expr *a = arg; a; a = a->kind == DTL_EXPR_PAREN ? a->u.paren : NULL)
        a->type = x->type;
    return true;
}

static dtl_type *call_fn(chk *c, dtl_expr *e, dtl_fn *f, dtl_type *inst, dtl_call_kind kind,
                         bool args_ok)
{
    if (!ensure_fn(c, f)) {
        if (f->state == ST_BUSY) {
            dtl_diag_error(c->d, e->u.call.callee->span, "recursive call to '%s' is not "
                           "supported", fn_title(c, f));
            dtl_diag_note(c->d, f->sym->span, "'%s' is defined here; fns are inlined, so they "
                          "cannot call themselves, directly or through other fns",
                          fn_title(c, f));
        }
        return c->err;
    }
    bool *has_def;
    const char *const *names = param_names(c, f->params, f->nparams, &has_def);
    size_t np = f->nparams;
    dtl_expr **bound = dtl_arena_array(c->a, np ? np : 1, sizeof *bound);
    const char *who = dtl_arena_printf(c->a, "'%s'", fn_title(c, f));
    if (!bind_args(c, e, who, np, names, has_def, bound) || !args_ok)
        return c->err;

    dtl_subst *S = inst ? inst_subst(c, inst) : dtl_arena_alloc(c->a, sizeof *S);
    unify u = {c, f, S, e->u.call.callee, inst};
    dtl_type **types = dtl_arena_array(c->a, np ? np : 1, sizeof *types);
    bool ok = true;
    /* Host parameters first: they bind int parameters used as dims. */
    for (size_t i = 0; i < np; i++) {
        dtl_sym *p = f->params[i];
        if (is_err(p->type)) {
            ok = false;
            continue;
        }
        if (!bound[i]) {
            types[i] = f->defaults[i];
            if (!types[i])
                ok = false;
            else if (p->dimvar && types[i]->u.ival)
                dtl_subst_set(c->a, S, p->dimvar, types[i]->u.ival);
            continue;
        }
        types[i] = bound[i]->type;
        if (!dtl_type_is_host(p->type))
            continue;
        if (pending_arg(c, bound[i]))
            return c->err;
        if (!host_fits(p->type, types[i])) {
            arg_mismatch(c, &u, p, bound[i], p->type, types[i], -1);
            ok = false;
        } else if (p->dimvar && types[i]->u.ival) {
            dtl_subst_set(c->a, S, p->dimvar, types[i]->u.ival);
        }
    }
    if (!ok)
        return c->err;
    /* Tensor parameters: dtype and rank, then dims by unification. */
    typedef struct { size_t i; uint32_t k; } work_item;
    dtl_ptrvec work = {0};
    for (size_t i = 0; i < np; i++) {
        dtl_sym *p = f->params[i];
        if (!bound[i] || p->type->kind != DTL_TYPE_TENSOR)
            continue;
        if (types[i]->kind == DTL_TYPE_PENDING) {
            if (!infer_x(c, &u, p, bound[i]))
                return c->err;
            types[i] = bound[i]->type;
        }
        const dtl_type *pt = p->type, *at = types[i];
        if (dtl_type_is_number(at) && pt->u.t.rank == 0 && assignable(pt, at))
            continue;
        if (at->kind != DTL_TYPE_TENSOR || at->u.t.dtype != pt->u.t.dtype ||
            at->u.t.rank != pt->u.t.rank) {
            arg_mismatch(c, &u, p, bound[i], pt, at, -1);
            ok = false;
            continue;
        }
        for (uint32_t k = 0; k < pt->u.t.rank; k++) {
            work_item *t = dtl_arena_alloc(c->a, sizeof *t);
            t->i = i;
            t->k = k;
            dtl_ptrvec_push(c->a, &work, t);
        }
    }
    bool progress = true;
    while (ok && work.len && progress) {
        progress = false;
        size_t keep = 0;
        for (size_t w = 0; w < work.len && ok; w++) {
            work_item *t = work.items[w];
            dtl_sym *p = f->params[t->i];
            const dtl_dim *ad = types[t->i]->u.t.dims[t->k];
            const dtl_dim *pd = dtl_dim_subst(c->a, p->type->u.t.dims[t->k], S);
            const dtl_dimvar *v;
            if (!pd) {
                dtl_diag_error(c->d, bound[t->i]->span, "the sizes of argument '%s' overflow",
                               p->name);
                ok = false;
                break;
            }
            if (!dtl_dim_find_var(pd, free_var, &u, &v)) {
                if (!dtl_dim_eq(pd, ad)) {
                    arg_mismatch(c, &u, p, bound[t->i], p->type, types[t->i], (int)t->k);
                    ok = false;
                }
                progress = true;
                continue;
            }
            if (dtl_dim_as_var(pd) == v) {
                dtl_subst_set(c->a, S, v, ad);
                progress = true;
                continue;
            }
            /* pd = coef*v + rest, with v only there and rest free of unbound vars. */
            const dtl_dim *vd = dtl_dim_var(c->a, v);
            bool solved = false;
            for (uint32_t ti = 0; ti < pd->nterms; ti++) {
                const dtl_dimterm *term = &pd->terms[ti];
                if (term->natoms != 1 || term->atoms[0]->var != v)
                    continue;
                const dtl_dim *cv = dtl_dim_mul(c->a, dtl_dim_const(c->a, term->coef), vd);
                const dtl_dim *rest = cv ? dtl_dim_sub(c->a, pd, cv) : NULL;
                if (!rest || dtl_dim_find_var(rest, free_var, &u, NULL))
                    break;
                bool exact;
                const dtl_dim *num = dtl_dim_sub(c->a, ad, rest);
                const dtl_dim *val =
                    num ? dtl_dim_div(c->a, num, dtl_dim_const(c->a, term->coef), &exact) : NULL;
                if (!val || !exact) {
                    arg_mismatch(c, &u, p, bound[t->i], p->type, types[t->i], (int)t->k);
                    ok = false;
                } else {
                    dtl_subst_set(c->a, S, v, val);
                }
                solved = true;
                break;
            }
            if (solved) {
                progress = true;
                continue;
            }
            work.items[keep++] = t;
        }
        if (ok)
            work.len = keep;
    }
    if (ok && work.len) {
        work_item *t = work.items[0];
        const dtl_dimvar *v = NULL;
        dtl_dim_find_var(dtl_dim_subst(c->a, f->params[t->i]->type->u.t.dims[t->k], S),
                         free_var, &u, &v);
        dtl_diag_error(c->d, bound[t->i]->span, "cannot infer dimension '%s' of '%s' from "
                       "its arguments", v ? v->name : "?", fn_title(c, f));
        ok = false;
    }
    if (!ok)
        return c->err;
    dtl_type *r = dtl_type_subst(c->a, f->ret, S);
    if (!r) {
        dtl_diag_error(c->d, e->span, "the sizes of the result of '%s' overflow",
                       fn_title(c, f));
        return c->err;
    }
    dtl_call *call = record_call(c, e, kind, np, bound, types);
    call->fn = f;
    call->model = f->model;
    call->inst = inst;
    call->subst = *S;
    return r;
}

/* Is callee the name `repeat`, not shadowed by a declaration? */
static bool is_repeat(chk *c, const dtl_expr *callee)
{
    callee = strip(callee);
    return callee->kind == DTL_EXPR_NAME && strcmp(callee->u.name.text, "repeat") == 0 &&
           !lookup(c, "repeat");
}

/* repeat(n, Model(…)): a stack of n instances of Model, each with its own params (named
 * NAME.0.…, NAME.1.…), whose call applies them in order. Only a model's member may be one,
 * and Model's forward must map its first parameter's type to itself, so that the instances
 * chain. The call is recorded as the inner instantiation (DTL_CALL_NEW, its constructor
 * arguments) with an instance type whose rep is n. */
static dtl_type *check_repeat(chk *c, dtl_expr *e, unsigned allow)
{
    static const char *const names[] = {"n", "layer"};
    static const bool has_def[] = {false, false};
    dtl_expr *bound[2] = {NULL, NULL};
    if (!bind_args(c, e, "repeat", 2, names, has_def, bound))
        return c->err;
    if (!(allow & ALLOW_REPEAT)) {
        dtl_diag_error(c->d, e->span, "repeat(n, Model(…)) can only be a model's member, "
                       "like blocks = repeat(6, nn.TransformerBlock(64, 4))");
        return c->err;
    }
    c->allow = 0;
    dtl_type *nt = check_expr(c, bound[0]);
    c->allow = ALLOW_NEW;
    dtl_type *mt = check_expr(c, bound[1]);
    c->allow = 0;
    if (is_err(nt) || is_err(mt))
        return c->err;
    int64_t k;
    if (nt->kind != DTL_TYPE_INT || !nt->u.ival) {
        dtl_diag_error(c->d, bound[0]->span, "repeat: the count must be an int, found %s",
                       tystr(c, nt));
        return c->err;
    }
    if (dtl_dim_is_const(nt->u.ival, &k) && k < 1) {
        dtl_diag_error(c->d, bound[0]->span, "repeat: the count must be at least 1, found %"
                       PRId64, k);
        return c->err;
    }
    const dtl_expr *me = strip(bound[1]);
    if (mt->kind != DTL_TYPE_INSTANCE || mt->u.m.rep || me->kind != DTL_EXPR_CALL ||
        !me->sym || me->sym->kind != DTL_SYM_CALL || me->sym->u.call->kind != DTL_CALL_NEW) {
        dtl_diag_error(c->d, bound[1]->span, "repeat: the layer must be a model made here, "
                       "like nn.Dense(4, 4), found %s", tystr(c, mt));
        return c->err;
    }
    dtl_model *m = mt->u.m.model;
    dtl_fn *f = dtl_model_fn(m, "forward");
    if (!f) {
        dtl_diag_error(c->d, bound[1]->span, "repeat: model %s has no fn 'forward'", m->name);
        return c->err;
    }
    if (!ensure_fn(c, f) || !f->ret)
        return c->err;
    const dtl_type *pt = f->nparams ? f->params[0]->type : NULL;
    bool others_default = true;
    for (size_t i = 1; i < f->nparams; i++)
        others_default &= f->defaults[i] != NULL;
    if (!pt || pt->kind != DTL_TYPE_TENSOR || !dtl_type_same(pt, f->ret) || !others_default) {
        dtl_diag_error(c->d, bound[1]->span, "repeat: %s.forward must take a tensor and return "
                       "one of the same type, so that the layers chain; it returns %s",
                       m->name, tystr(c, f->ret));
        dtl_diag_note(c->d, f->sym->span, "%s.forward is defined here%s%s", m->name,
                      pt ? ", taking " : "", pt ? tystr(c, pt) : "");
        return c->err;
    }
    dtl_type *t = dtl_type_new(c->a, DTL_TYPE_INSTANCE);
    *t = *mt;
    t->u.m.rep = nt->u.ival;
    const dtl_call *ic = me->sym->u.call;
    dtl_call *call = record_call(c, e, DTL_CALL_NEW, ic->nargs, ic->args, ic->argtypes);
    call->model = m;
    call->inst = t;
    return t;
}

static dtl_type *check_call(chk *c, dtl_expr *e)
{
    unsigned allow = c->allow;
    c->allow = 0;
    dtl_expr *callee = e->u.call.callee;
    if (is_repeat(c, callee))
        return check_repeat(c, e, allow);
    dtl_type *ct = check_expr(c, callee);
    bool args_ok = true;
    for (size_t i = 0; i < e->u.call.nargs; i++) {
        dtl_expr *arg = e->u.call.args[i].value;
        c->allow = 0;
        c->allow_pending = strip(arg)->kind == DTL_EXPR_NAME;
        dtl_type *t = check_expr(c, arg);
        c->allow_pending = false;
        args_ok &= !is_err(t);
    }
    if (is_err(ct))
        return c->err;
    switch (ct->kind) {
    case DTL_TYPE_BUILTIN:
        return call_builtin(c, e, ct->u.builtin, allow, args_ok);
    case DTL_TYPE_MODEL:
        return call_new(c, e, ct->u.m.model, allow, args_ok);
    case DTL_TYPE_INSTANCE: {
        dtl_fn *f = dtl_model_fn(ct->u.m.model, "forward");
        if (!f) {
            dtl_diag_error(c->d, callee->span, "%s cannot be called: model %s has no fn "
                           "'forward'", ename(c, callee, "this"), ct->u.m.model->name);
            return c->err;
        }
        return call_fn(c, e, f, ct, DTL_CALL_FORWARD, args_ok);
    }
    case DTL_TYPE_FN:
        return call_fn(c, e, ct->u.fn.fn, ct->u.fn.inst, DTL_CALL_FN, args_ok);
    case DTL_TYPE_NONE:
        dtl_diag_error(c->d, callee->span, "'none' is a constant, not a function");
        return c->err;
    default:
        dtl_diag_error(c->d, callee->span, "%s cannot be called: it is %s",
                       ename(c, callee, "this"), tystr(c, ct));
        return c->err;
    }
}

/* ---- expressions ---- */

static dtl_type *check_name(chk *c, dtl_expr *e)
{
    bool pending_ok = c->allow_pending;
    c->allow_pending = false;
    dtl_sym *s = resolve(c, e->u.name);
    if (!s)
        return c->err;
    e->sym = s;
    mark_used(c, s);
    dtl_type *t = sym_value_type(c, s, e->span);
    if (t->kind == DTL_TYPE_PENDING && !pending_ok) {
        cannot_infer_x(c, s, e->span);
        return c->err;
    }
    return t;
}

static dtl_type *check_expr_inner(chk *c, dtl_expr *e)
{
    switch (e->kind) {
    case DTL_EXPR_INT:
        return dtl_type_int(c->a, dtl_dim_const(c->a, e->u.ival));
    case DTL_EXPR_FLOAT:
        return dtl_type_float(c->a, true, e->u.fval);
    case DTL_EXPR_STRING: {
        dtl_type *t = dtl_type_new(c->a, DTL_TYPE_STR);
        t->u.s.bytes = e->u.str.bytes ? e->u.str.bytes : "";
        t->u.s.len = e->u.str.len;
        return t;
    }
    case DTL_EXPR_BOOL:
        return dtl_type_bool(c->a, true, e->u.bval);
    case DTL_EXPR_DTYPE: {
        dtl_type *t = dtl_type_new(c->a, DTL_TYPE_DTYPE);
        t->u.dtype = e->u.dtype;
        return t;
    }
    case DTL_EXPR_NAME:
        return check_name(c, e);
    case DTL_EXPR_MEMBER:
        return check_member(c, e);
    case DTL_EXPR_CALL:
        return check_call(c, e);
    case DTL_EXPR_INDEX:
        return check_index(c, e);
    case DTL_EXPR_UNARY:
        return check_unary(c, e);
    case DTL_EXPR_BINARY:
        return check_binary(c, e);
    case DTL_EXPR_TENSOR:
        return check_literal(c, e);
    case DTL_EXPR_PAREN: {
        dtl_type *t = check_expr(c, e->u.paren);
        e->sym = e->u.paren->sym;
        return t;
    }
    }
    return c->err;
}

static dtl_type *check_expr(chk *c, dtl_expr *e)
{
    if (!e)
        return c->err;
    if (e->kind != DTL_EXPR_NAME && e->kind != DTL_EXPR_PAREN)
        c->allow_pending = false;
    if (e->kind != DTL_EXPR_CALL && e->kind != DTL_EXPR_PAREN && e->kind != DTL_EXPR_BINARY &&
        e->kind != DTL_EXPR_NAME && e->kind != DTL_EXPR_MEMBER)
        c->allow = 0;
    if (c->expr_depth >= MAX_EXPR_DEPTH) {
        if (!c->expr_depth_reported)
            dtl_diag_error(c->d, e->span, "expressions nest too deeply here, counting the "
                           "definitions they use");
        c->expr_depth_reported = true;
        e->type = c->err;
        return e->type;
    }
    c->expr_depth++;
    dtl_type *t = check_expr_inner(c, e);
    c->expr_depth--;
    e->type = t ? t : c->err;
    return e->type;
}

/* ---- fns ---- */

static bool is_result(const dtl_type *t)
{
    return dtl_type_is_host(t) || t->kind == DTL_TYPE_TENSOR;
}

static bool too_deep(chk *c, dtl_span at, const char *name)
{
    if (c->lazy_depth < MAX_LAZY_DEPTH && c->expr_depth < MAX_EXPR_DEPTH - DTL_AST_MAX_DEPTH)
        return false;
    dtl_diag_error(c->d, at, "definitions nest too deeply: checking '%s' needs too many "
                   "others checked first (at most %d, in a chain)", name, MAX_LAZY_DEPTH);
    return true;
}

static void warn(chk *c, dtl_span at, const char *fmt, const char *what, const char *name)
{
    if (c->ctx->warn_unused && !exempt(name))
        dtl_diag_warning(c->d, at, fmt, what, name);
}

/* A block: lets in order, then an expression or return. Returns the value's type and its
 * expression in *value. */
static dtl_type *check_block(chk *c, dtl_fn *f, dtl_decl *d, dtl_expr **value, unsigned errs)
{
    dtl_scope *bs = scope_new(c, f->scope);
    c->scope = bs;
    c->block = d->u.fn.body;
    c->nblock = d->u.fn.nbody;
    dtl_type *val = NULL;
    dtl_ptrvec lets = {0};
    bool returned = false;
    for (size_t i = 0; i < d->u.fn.nbody; i++) {
        dtl_decl *st = d->u.fn.body[i];
        c->block_at = i;
        if (returned) {
            dtl_diag_error(c->d, st->span, "unreachable code after return");
            val = c->err;
            break;
        }
        bool last = i + 1 == d->u.fn.nbody;
        switch (st->kind) {
        case DTL_DECL_LET: {
            dtl_type *t = check_expr(c, st->u.bind.value);
            c->block_at = i + 1;
            if (!is_err(t) && !is_result(t) && t->kind != DTL_TYPE_LIST) {
                dtl_diag_error(c->d, st->u.bind.value->span, "let '%s' must be a value, found %s",
                               st->name.text, tystr(c, t));
                t = c->err;
            }
            if (st->u.bind.type) {
                dtl_type *want = texpr_type(c, st->u.bind.type, DIMS_FIXED,
                                            dtl_arena_printf(c->a, "the type of '%s'",
                                                             st->name.text));
                if (!want) {
                    t = c->err;
                } else if (!is_err(t) && !assignable(want, t)) {
                    dtl_diag_error(c->d, st->u.bind.value->span, "let '%s' is declared %s but "
                                   "its value is %s", st->name.text, tystr(c, want), tystr(c, t));
                    t = want;
                } else if (!is_err(t)) {
                    t = dtl_type_is_host(want) ? coerce(c, want, t) : want;
                }
            }
            dtl_sym *s = sym_new(c, DTL_SYM_LET, st->name.text, st->name.span);
            s->decl = st;
            s->fn = f;
            s->type = t;
            s->state = ST_DONE;
            st->sym = s;
            dtl_sym *old = dtl_scope_lookup(f->scope, s->name);
            if (old) {
                dtl_diag_error(c->d, s->span, "'%s' is already defined", s->name);
                dtl_diag_note(c->d, old->span, "'%s' is a %s of '%s'", s->name,
                              sym_kind_text(old), fn_title(c, f));
            } else if (declare(c, bs, s, "let")) {
                dtl_ptrvec_push(c->a, &lets, s);
            }
            if (last) {
                dtl_diag_error(c->d, st->span, "fn '%s' must end with an expression or return, "
                               "not a let", f->name);
                val = c->err;
            }
            break;
        }
        case DTL_DECL_RETURN:
            val = check_expr(c, st->u.expr);
            *value = st->u.expr;
            returned = true;
            break;
        case DTL_DECL_EXPR:
            val = check_expr(c, st->u.expr);
            *value = st->u.expr;
            if (!last && !is_err(val))
                dtl_diag_warning(c->d, st->span, "the value of this expression is unused");
            break;
        default:
            dtl_diag_error(c->d, st->span, "a %s cannot appear in a fn body",
                           dtl_decl_kind_name(st->kind));
            val = c->err;
            break;
        }
    }
    if (d->u.fn.nbody == 0) {
        dtl_diag_error(c->d, d->span, "fn '%s' has an empty body; it must end with an "
                       "expression or return", f->name);
        val = c->err;
    }
    if (c->d->nerrors == errs)
        for (size_t i = 0; i < lets.len; i++) {
            dtl_sym *s = lets.items[i];
            if (!s->used)
                warn(c, s->span, "%s '%s' is never used", "let", s->name);
        }
    c->block = NULL;
    c->nblock = c->block_at = 0;
    return val ? val : c->err;
}

static void check_fn(chk *c, dtl_fn *f)
{
    dtl_decl *d = f->decl;
    unsigned errs = c->d->nerrors;
    f->scope = scope_new(c, f->model ? f->model->scope : f->module->scope);
    c->scope = f->scope;
    size_t np = d->u.fn.nparams;
    f->params = dtl_arena_array(c->a, np ? np : 1, sizeof *f->params);
    f->defaults = dtl_arena_array(c->a, np ? np : 1, sizeof *f->defaults);
    f->nparams = np;
    for (size_t i = 0; i < np; i++) {
        dtl_fparam *fp = &d->u.fn.params[i];
        dtl_sym *s = sym_new(c, DTL_SYM_FN_PARAM, fp->name.text, fp->name.span);
        s->fn = f;
        s->fparam = fp;
        s->index = (unsigned)i;
        s->state = ST_DONE;
        if (fp->type && fp->type->kind == DTL_TEXPR_INT) {
            /* Typed now: other parameters' dims may name it. */
            s->dimvar = dimvar_new(c, s->name, DTL_DIMVAR_FN_INT, s->span, s);
            s->type = dtl_type_int(c->a, dtl_dim_var(c->a, s->dimvar));
        }
        declare(c, f->scope, s, "parameter");
        f->params[i] = s;
    }
    for (size_t i = 0; i < np; i++) {
        dtl_fparam *fp = &d->u.fn.params[i];
        dtl_sym *s = f->params[i];
        if (!fp->type) {
            dtl_diag_error(c->d, fp->name.span, "parameter '%s' needs a type", s->name);
            dtl_diag_note(c->d, fp->name.span, "e.g. %s: f32[B, 784], or %s: int", s->name,
                          s->name);
            s->type = c->err;
            continue;
        }
        dtl_type *t = s->type;
        if (!t)
            t = texpr_type(c, fp->type, DIMS_SIG,
                           dtl_arena_printf(c->a, "the type of '%s'", s->name));
        s->type = t ? t : c->err;
    }
    for (size_t i = 0; i < np; i++) {
        dtl_fparam *fp = &d->u.fn.params[i];
        if (fp->deflt && !is_err(f->params[i]->type))
            f->defaults[i] = check_default(c, fp, f->params[i]->type);
    }
    dtl_type *declared = NULL;
    bool ret_ok = true;
    if (d->u.fn.ret) {
        declared = texpr_type(c, d->u.fn.ret, DIMS_RET, "the return type");
        ret_ok = declared != NULL;
    }
    dtl_expr *value = NULL;
    dtl_type *bt;
    if (d->u.fn.is_block) {
        bt = check_block(c, f, d, &value, errs);
    } else {
        value = d->u.fn.expr;
        bt = check_expr(c, value);
    }
    if (!is_err(bt) && !is_result(bt)) {
        dtl_diag_error(c->d, value ? value->span : d->span, "fn '%s' must return a value, "
                       "found %s", f->name, tystr(c, bt));
        bt = c->err;
    }
    if (declared) {
        if (!is_err(bt) && !assignable(declared, bt))
            dtl_diag_error(c->d, value ? value->span : d->span, "fn '%s' returns %s but its "
                           "body is %s", f->name, tystr(c, declared), tystr(c, bt));
        else if (!is_err(bt) && dtl_type_is_host(declared))
            declared = coerce(c, declared, bt);
        f->ret = declared;
    } else {
        f->ret = ret_ok && !is_err(bt) ? bt : NULL;
    }
    if (c->d->nerrors == errs)
        for (size_t i = 0; i < np; i++)
            if (!f->params[i]->used)
                warn(c, f->params[i]->span, "%s '%s' is never used", "parameter",
                     f->params[i]->name);
}

static bool ensure_fn(chk *c, dtl_fn *f)
{
    if (f->state == ST_DONE)
        return f->ret != NULL;
    if (f->state == ST_BUSY)
        return false;
    if (too_deep(c, f->sym->span, f->name)) {
        f->state = ST_DONE;
        return false;
    }
    c->lazy_depth++;
    f->state = ST_BUSY;
    saved sv = ctx_save(c);
    c->mod = f->module;
    c->model = f->model;
    c->fn = f;
    check_fn(c, f);
    ctx_restore(c, sv);
    f->state = ST_DONE;
    c->lazy_depth--;
    return f->ret != NULL;
}

/* ---- models ---- */

static void check_param_init(chk *c, dtl_sym *p)
{
    dtl_expr *v = p->decl->u.bind.value;
    c->allow = ALLOW_INIT;
    dtl_type *t = check_expr(c, v);
    c->allow = 0;
    if (is_err(t) || is_err(p->type))
        return;
    const dtl_type *pt = p->type;
    if (t->kind == DTL_TYPE_INIT) {
        dtl_builtin_init_fits(c->a, c->d, c->mod, t, pt, p->name, v->span);
        return;
    }
    if (t->kind == DTL_TYPE_TENSOR) {
        bool lit_int = strip(v)->kind == DTL_EXPR_TENSOR && t->u.t.dtype == DTL_DTYPE_I64 &&
                       dtl_dtype_is_float(pt->u.t.dtype);
        dtl_type shape = *t;
        if (lit_int)
            shape.u.t.dtype = pt->u.t.dtype;
        if (dtl_type_same(&shape, pt))
            return;
        dtl_diag_error(c->d, v->span, "param '%s' is %s but its initializer is %s", p->name,
                       tystr(c, pt), tystr(c, t));
        return;
    }
    if (dtl_type_is_number(t)) {
        if (assignable(pt, t))
            return;
        dtl_diag_error(c->d, v->span, "param '%s' is %s but its initializer is a single %s",
                       p->name, tystr(c, pt), tystr(c, t));
        dtl_diag_note(c->d, v->span, "to fill it, use constant(%s)", valstr(c, t));
        return;
    }
    dtl_diag_error(c->d, v->span, "param '%s' needs an initializer such as glorot_uniform(), "
                   "zeros() or a constant of its type; found %s", p->name, tystr(c, t));
}

static bool ensure_model(chk *c, dtl_model *m)
{
    if (m->state == ST_DONE)
        return true;
    if (m->state == ST_BUSY)
        return false;
    if (too_deep(c, m->sym->span, m->name))
        return false;
    c->lazy_depth++;
    m->state = ST_BUSY;
    saved sv = ctx_save(c);
    c->mod = m->module;
    c->model = m;
    unsigned errs = c->d->nerrors;
    for (size_t i = 0; i < m->nctor; i++) {
        dtl_fparam *fp = m->ctor[i]->fparam;
        if (!fp->type) {
            dtl_diag_error(c->d, fp->name.span, "parameter '%s' needs a type", fp->name.text);
            dtl_diag_note(c->d, fp->name.span, "e.g. %s: int", fp->name.text);
        } else if (fp->type->kind == DTL_TEXPR_TENSOR) {
            dtl_diag_error(c->d, fp->type->span, "constructor parameter '%s' must be int, "
                           "float, bool or str, found %s", fp->name.text,
                           dtl_print_texpr(c->a, fp->type));
            dtl_diag_note(c->d, fp->type->span, "tensors belong in params: param %s: %s",
                          fp->name.text, dtl_print_texpr(c->a, fp->type));
        }
    }
    c->scope = m->scope;
    for (size_t i = 0; i < m->nctor; i++) {
        dtl_fparam *fp = m->ctor[i]->fparam;
        if (fp->deflt && !is_err(m->ctor[i]->type))
            m->defaults[i] = check_default(c, fp, m->ctor[i]->type);
    }
    for (size_t i = 0; i < m->nparams; i++) {
        dtl_sym *p = m->params[i];
        dtl_decl *d = p->decl;
        dtl_type *t = NULL;
        if (d->u.bind.type) {
            t = texpr_type(c, d->u.bind.type, DIMS_FIXED,
                           dtl_arena_printf(c->a, "the type of param '%s'", p->name));
            if (t && t->kind != DTL_TYPE_TENSOR) {
                dtl_diag_error(c->d, d->u.bind.type->span, "param '%s' must be a tensor, like "
                               "f32[%s], found %s", p->name, "4, 4", tystr(c, t));
                t = NULL;
            }
        } else {
            dtl_diag_error(c->d, p->span, "param '%s' needs a type, like f32[4, 4]", p->name);
        }
        p->type = t ? t : c->err;
        p->state = ST_DONE;
    }
    for (size_t i = 0; i < m->nparams; i++)
        if (m->params[i]->decl->u.bind.value)
            check_param_init(c, m->params[i]);
    for (size_t i = 0; i < m->nmembers; i++) {
        dtl_sym *s = m->members[i];
        dtl_decl *d = s->decl;
        s->state = ST_BUSY;
        c->allow = ALLOW_NEW | ALLOW_REPEAT;
        dtl_type *t = check_expr(c, d->u.bind.value);
        c->allow = 0;
        if (!is_err(t) && !is_result(t) && t->kind != DTL_TYPE_INSTANCE) {
            dtl_diag_error(c->d, d->u.bind.value->span, "member '%s' must be a submodel (like "
                           "nn.Dense(4, 2)) or a constant, found %s", s->name, tystr(c, t));
            t = c->err;
        }
        if (!is_err(t) && d->u.bind.type) {
            dtl_type *want = texpr_type(c, d->u.bind.type, DIMS_FIXED,
                                        dtl_arena_printf(c->a, "the type of '%s'", s->name));
            if (want && !assignable(want, t)) {
                dtl_diag_error(c->d, d->u.bind.value->span, "'%s' is declared %s but its value "
                               "is %s", s->name, tystr(c, want), tystr(c, t));
            } else if (want && dtl_type_is_host(want)) {
                t = coerce(c, want, t);
            }
        }
        s->type = t;
        s->state = ST_DONE;
    }
    for (size_t i = 0; i < m->nfns; i++)
        ensure_fn(c, m->fns[i]);
    if (c->d->nerrors == errs) {
        for (size_t i = 0; i < m->nctor; i++)
            if (!m->ctor[i]->used)
                warn(c, m->ctor[i]->span, "%s '%s' is never used", "constructor parameter",
                     m->ctor[i]->name);
        for (size_t i = 0; i < m->nparams; i++)
            if (!m->params[i]->used)
                warn(c, m->params[i]->span, "%s '%s' is never used",
                     m->params[i]->decl->u.bind.state ? "state" : "param", m->params[i]->name);
    }
    ctx_restore(c, sv);
    m->state = ST_DONE;
    c->lazy_depth--;
    return true;
}

/* ---- top-level lets and datasets ---- */

static dtl_type *check_toplevel_let(chk *c, dtl_sym *s)
{
    if (too_deep(c, s->span, s->name)) {
        s->state = ST_DONE;
        s->type = c->err;
        return c->err;
    }
    c->lazy_depth++;
    s->state = ST_BUSY;
    saved sv = ctx_save(c);
    c->mod = s->module;
    c->scope = s->module->scope;
    dtl_decl *d = s->decl;
    bool any = c->hooks && c->hooks->lets_any && s->module == c->root;
    if (any)
        c->allow = ALLOW_NEW;   /* let d = nn.Dense(3, 2) */
    dtl_type *t = check_expr(c, d->u.bind.value);
    c->allow = 0;
    if (!is_err(t) && !is_result(t) && !any) {
        dtl_diag_error(c->d, d->u.bind.value->span, "let '%s' must be a value, found %s",
                       s->name, tystr(c, t));
        t = c->err;
    }
    if (d->u.bind.type) {
        dtl_type *want = texpr_type(c, d->u.bind.type, DIMS_FIXED,
                                    dtl_arena_printf(c->a, "the type of '%s'", s->name));
        if (!want) {
            t = c->err;
        } else if (!is_err(t) && !assignable(want, t)) {
            dtl_diag_error(c->d, d->u.bind.value->span, "let '%s' is declared %s but its value "
                           "is %s", s->name, tystr(c, want), tystr(c, t));
            t = want;
        } else if (!is_err(t)) {
            t = dtl_type_is_host(want) ? coerce(c, want, t) : want;
        }
    }
    s->type = t;
    s->state = ST_DONE;
    ctx_restore(c, sv);
    c->lazy_depth--;
    return t;
}

static dtl_type *check_dataset(chk *c, dtl_sym *s)
{
    s->state = ST_BUSY;
    saved sv = ctx_save(c);
    c->mod = s->module;
    c->scope = s->module->scope;
    dtl_expr *v = s->decl->u.bind.value;
    c->allow = ALLOW_DATASET;
    dtl_type *t = check_expr(c, v);
    c->allow = 0;
    if (!is_err(t) && t->kind != DTL_TYPE_DATASET) {
        dtl_diag_error(c->d, v->span, "dataset '%s' must be idx(…), npy(…), csv(…) or text(…), found %s",
                       s->name, tystr(c, t));
        t = c->err;
    }
    s->type = t;
    s->state = ST_DONE;
    ctx_restore(c, sv);
    return t;
}

/* ---- train blocks ---- */

static_assert(DTL_SET_COUNT <= sizeof ((dtl_train *)0)->settings /
                                 sizeof ((dtl_train *)0)->settings[0],
              "dtl_train.settings must have room for every setting");

static const char *const setting_names[DTL_SET_COUNT] = {
    "data", "batch", "loss", "optimizer", "epochs", "evaluate", "seed", "parallel", "device",
    "schedule", "warmup", "clip", "checkpoint", "precision",
};

static bool int_setting(chk *c, dtl_decl *it, int64_t min, int64_t *out)
{
    dtl_type *t = check_expr(c, it->u.bind.value);
    if (is_err(t))
        return false;
    int64_t v;
    if (!dtl_type_int_const(t, &v) || v < min) {
        dtl_diag_error(c->d, it->u.bind.value->span, "%s must be %s int, found %s",
                       it->name.text, min > 0 ? "a positive" : "a non-negative",
                       is_constant(t) ? valstr(c, t) : tystr(c, t));
        return false;
    }
    *out = v;
    return true;
}

/* A setting whose value must be of one kind (an optimizer, a metric, …), written as a call
 * or, when bare, as a builtin's plain name (`parallel = data`): *out gets it; anything else
 * is reported as "<must>, found <type>". */
static void kind_setting(chk *c, dtl_expr *v, unsigned allow, bool bare, dtl_type_kind want,
                         const char *must, dtl_type **out)
{
    c->allow = allow;
    dtl_type *ty = check_expr(c, v);
    if (!is_err(ty) && bare)
        ty = bare_builtin(c, v, ty, allow);
    if (is_err(ty))
        return;
    if (ty->kind != want) {
        dtl_diag_error(c->d, v->span, "%s, found %s", must, tystr(c, ty));
        return;
    }
    *out = ty;
}

static void check_setting(chk *c, dtl_train *t, int k, dtl_decl *it)
{
    dtl_expr *v = it->u.bind.value;
    dtl_type *ty;
    switch (k) {
    case DTL_SET_DATA:
        ty = check_expr(c, v);
        if (!is_err(ty) && ty->kind != DTL_TYPE_SPLIT)
            dtl_diag_error(c->d, v->span, "data must be a dataset split like ds.train, found %s",
                           tystr(c, ty));
        else if (!is_err(ty))
            t->data = ty;
        break;
    case DTL_SET_BATCH:
        int_setting(c, it, 1, &t->batch);
        break;
    case DTL_SET_EPOCHS:
        int_setting(c, it, 1, &t->epochs);
        break;
    case DTL_SET_SEED:
        int_setting(c, it, 0, &t->seed);
        break;
    case DTL_SET_LOSS:
        ty = check_expr(c, v);
        if (is_err(ty))
            break;
        if (ty->kind == DTL_TYPE_TENSOR && dtl_dtype_is_float(ty->u.t.dtype) && ty->u.t.rank == 0) {
            t->loss = ty;
        } else if (ty->kind == DTL_TYPE_TENSOR && dtl_dtype_is_float(ty->u.t.dtype)) {
            dtl_diag_error(c->d, v->span, "loss must be a scalar, found %s", tystr(c, ty));
            dtl_diag_note(c->d, v->span, "reduce it, e.g. mean(...)");
        } else {
            dtl_diag_error(c->d, v->span, "loss must be a float scalar, found %s", tystr(c, ty));
        }
        break;
    case DTL_SET_OPTIMIZER:
        kind_setting(c, v, ALLOW_OPT, false, DTL_TYPE_OPTIMIZER,
                     "optimizer must be an optimizer such as adam(lr = 1e-3)", &t->optimizer);
        break;
    case DTL_SET_EVALUATE:
        kind_setting(c, v, ALLOW_METRIC, false, DTL_TYPE_METRIC,
                     "evaluate must be a metric such as accuracy(ds.test)", &t->evaluate);
        break;
    case DTL_SET_PARALLEL:
        kind_setting(c, v, ALLOW_PARALLEL, true, DTL_TYPE_PARALLEL,
                     "parallel must be data, data(n), tensor(n), pipeline(stages = s, "
                     "microbatches = m) or a product of those", &t->parallel);
        break;
    case DTL_SET_DEVICE:
        kind_setting(c, v, ALLOW_DEVICE, true, DTL_TYPE_DEVICE,
                     "device must be cpu, cuda or cuda(n)", &t->device);
        break;
    case DTL_SET_SCHEDULE:
        kind_setting(c, v, ALLOW_SCHED, true, DTL_TYPE_SCHEDULE,
                     "schedule must be a learning-rate schedule: constant(), step(every = n, "
                     "gamma = g) or cosine(floor = f, steps = n)", &t->schedule);
        break;
    case DTL_SET_WARMUP:
        int_setting(c, it, 0, &t->warmup);
        break;
    case DTL_SET_CLIP: {
        ty = check_expr(c, v);
        double x;
        if (is_err(ty))
            break;
        if (!dtl_type_num_const(ty, &x) || !(x > 0) || !isfinite(x)) {
            dtl_diag_error(c->d, v->span, "clip must be a number > 0 (the largest global "
                           "gradient norm), found %s", is_constant(ty) ? valstr(c, ty)
                                                                       : tystr(c, ty));
            break;
        }
        t->clip = x;
        break;
    }
    case DTL_SET_CHECKPOINT:
        ty = check_expr(c, v);
        if (is_err(ty))
            break;
        if (ty->kind != DTL_TYPE_STR || !ty->u.s.bytes || !ty->u.s.len ||
            memchr(ty->u.s.bytes, 0, ty->u.s.len)) {
            dtl_diag_error(c->d, v->span, "checkpoint must be a file name such as "
                           "\"model.safetensors\", found %s",
                           is_constant(ty) ? valstr(c, ty) : tystr(c, ty));
            break;
        }
        t->checkpoint = dtl_arena_strndup(c->a, ty->u.s.bytes, ty->u.s.len);
        break;
    case DTL_SET_PRECISION: {
        /* read as written: f32 and bf16 are dtype keywords, tf32 a bare name */
        dtl_precision p = DTL_PREC_COUNT;
        if (v->kind == DTL_EXPR_DTYPE)
            p = dtl_precision_parse(dtl_dtype_name(v->u.dtype));
        else if (v->kind == DTL_EXPR_NAME)
            p = dtl_precision_parse(v->u.name.text);
        if (p == DTL_PREC_COUNT || p == DTL_PREC_DEFAULT) {
            dtl_diag_error(c->d, v->span, "precision must be f32, tf32 or bf16, found %s",
                           dtl_print_expr(c->a, v));
            dtl_diag_note(c->d, v->span, "bf16: bf16 matrix products with f32 accumulation "
                          "and f32 weights; tf32: TF32-rounded operands; f32: the default");
            break;
        }
        t->precision = p;
        break;
    }
    }
    c->allow = 0;
}

/* y's type, from the training split's data set: i64[B] (class labels), f32[B] for
 * csv(…, regression = true), i64[B, context] for text(…). */
static void set_batch_y(chk *c, dtl_train *t)
{
    const dtl_sym *ds = t->data ? t->data->u.split.dataset : NULL;
    const dtl_type *dt = ds ? ds->type : NULL;
    if (!dt || dt->kind != DTL_TYPE_DATASET || !dt->u.cfg.builtin)
        return;
    const dtl_dim **yd = dtl_arena_array(c->a, 2, sizeof *yd);
    yd[0] = dtl_dim_var(c->a, t->batch_var);
    int64_t context;
    const dtl_type *reg;
    switch (dt->u.cfg.builtin->id) {
    case DTL_BI_TEXT:
        if (dtl_type_int_const(dt->u.cfg.args[1], &context) && context >= 1) {
            yd[1] = dtl_dim_const(c->a, context);
            t->y->type = dtl_type_tensor(c->a, DTL_DTYPE_I64, 2, yd);
        }
        break;
    case DTL_BI_CSV:
        reg = dt->u.cfg.args[7];
        if (reg && reg->kind == DTL_TYPE_BOOL && reg->u.b.v)
            t->y->type = dtl_type_tensor(c->a, DTL_DTYPE_F32, 1, yd);
        break;
    default:
        break;
    }
}

/* A path `fc1.w` or `enc.fc1` in the train's model: the chain of symbols it names, and the
 * type of the last one (as of the instance). */
static dtl_sym **resolve_path(chk *c, dtl_train *t, dtl_expr *e, size_t *n, dtl_type **type)
{
    dtl_expr *parts[64];
    size_t np = 0;
    dtl_expr *p = (dtl_expr *)strip(e);
    while (p && p->kind == DTL_EXPR_MEMBER && np < 63) {
        parts[np++] = p;
        p = (dtl_expr *)strip(p->u.member.base);
    }
    if (!p || p->kind != DTL_EXPR_NAME) {
        dtl_diag_error(c->d, e->span, "expected a path to a member of the model, like fc1.w");
        return NULL;
    }
    parts[np++] = p;
    dtl_sym **chain = dtl_arena_array(c->a, np, sizeof *chain);
    dtl_type *cur = t->inst;
    for (size_t i = 0; i < np; i++) {
        dtl_expr *pe = parts[np - 1 - i];
        dtl_ident id = pe->kind == DTL_EXPR_NAME ? pe->u.name : pe->u.member.field;
        dtl_model *m = cur->u.m.model;
        if (cur->u.m.rep) {
            dtl_diag_error(c->d, id.span, "'%s' is inside a stack made by repeat(…), whose "
                           "parts cannot be named here", id.text);
            return NULL;
        }
        dtl_sym *s = dtl_model_lookup(m, id.text);
        if (!s) {
            dtl_diag_error(c->d, id.span, "model %s has no member '%s'%s", m->name, id.text,
                           mean_suffix(c, suggest_in(c, id.text, m->scope, false)));
            return NULL;
        }
        chain[i] = s;
        pe->sym = s;
        dtl_type *st = sym_base_type(c, s, id.span);
        if (is_err(st))
            return NULL;
        if (st->kind != DTL_TYPE_FN)
            st = dtl_type_subst(c->a, st, inst_subst(c, cur));
        if (!st)
            return NULL;
        pe->type = st;
        if (i + 1 < np && st->kind != DTL_TYPE_INSTANCE) {
            dtl_diag_error(c->d, id.span, "'%s' is a %s (%s), not a submodel", id.text,
                           sym_kind_text(s), tystr(c, st));
            return NULL;
        }
        cur = st;
    }
    *n = np;
    *type = cur;
    return chain;
}

static const char *path_text(chk *c, dtl_sym **chain, size_t n)
{
    const char *s = "";
    for (size_t i = 0; i < n; i++)
        s = dtl_arena_printf(c->a, "%s%s%s", s, i ? "." : "", chain[i]->name);
    return s;
}

static void check_shards(chk *c, dtl_train *t)
{
    dtl_decl *d = t->decl;
    bool reported_parallel = false;
    dtl_ptrvec shards = {0};
    for (size_t i = 0; i < d->u.train.nitems; i++) {
        dtl_decl *it = d->u.train.items[i];
        if (it->kind != DTL_DECL_SHARD)
            continue;
        size_t n;
        dtl_type *pt;
        dtl_sym **chain = resolve_path(c, t, it->u.shard.path, &n, &pt);
        dtl_type *at = check_expr(c, it->u.shard.axis);
        if (!chain || is_err(at))
            continue;
        const char *pname = path_text(c, chain, n);
        if (chain[n - 1]->kind != DTL_SYM_PARAM) {
            dtl_diag_error(c->d, it->u.shard.path->span, "shard: %s is a %s, not a param%s",
                           pname, sym_kind_text(chain[n - 1]),
                           pt->kind == DTL_TYPE_INSTANCE ? "; name one of its params" : "");
            continue;
        }
        int64_t ax;
        if (!dtl_type_int_const(at, &ax)) {
            dtl_diag_error(c->d, it->u.shard.axis->span, "shard: the axis must be a constant "
                           "int, found %s", tystr(c, at));
            continue;
        }
        uint32_t r = pt->u.t.rank;
        if (ax < -(int64_t)r || ax >= (int64_t)r) {
            dtl_diag_error(c->d, it->u.shard.axis->span, "shard: axis %" PRId64 " is out of "
                           "range for %s (%s)", ax, pname, tystr(c, pt));
            continue;
        }
        if (ax < 0)
            ax += r;
        const dtl_type *par = t->parallel;
        if (!par || !par->u.par.tensor) {
            if (!reported_parallel)
                dtl_diag_error(c->d, it->span, "shard needs parallel = … * tensor(n)%s",
                               par ? dtl_arena_printf(c->a, "; parallel is %s",
                                                      tystr(c, par) + strlen("parallel "))
                                   : "");
            reported_parallel = true;
            continue;
        }
        int64_t dv, tn = par->u.par.tensor;
        if (dtl_dim_is_const(pt->u.t.dims[ax], &dv) && dv % tn != 0) {
            dtl_diag_error(c->d, it->span, "shard: dimension %" PRId64 " of %s is %" PRId64
                           ", not divisible by tensor(%" PRId64 ")", ax, pname, dv, tn);
            continue;
        }
        for (size_t k = 0; k < shards.len; k++) {
            dtl_shard *o = shards.items[k];
            if (o->path[o->npath - 1] == chain[n - 1] && o->npath == n &&
                memcmp(o->path, chain, n * sizeof *chain) == 0) {
                dtl_diag_error(c->d, it->span, "%s is sharded twice", pname);
                dtl_diag_note(c->d, o->decl->span, "it is first sharded here");
                chain = NULL;
                break;
            }
        }
        if (!chain)
            continue;
        dtl_shard *sh = dtl_arena_alloc(c->a, sizeof *sh);
        sh->decl = it;
        sh->path = chain;
        sh->npath = n;
        sh->axis = ax;
        dtl_ptrvec_push(c->a, &shards, sh);
    }
    t->nshards = shards.len;
    t->shards = dtl_arena_array(c->a, shards.len ? shards.len : 1, sizeof *t->shards);
    for (size_t i = 0; i < shards.len; i++)
        t->shards[i] = *(dtl_shard *)shards.items[i];
}

/* Does a model hold params, itself or through its submodels? */
static bool has_params(const dtl_model *m, int depth)
{
    if (m->nparams)
        return true;
    if (depth > 64)
        return false;
    for (size_t i = 0; i < m->nmembers; i++) {
        const dtl_type *t = m->members[i]->type;
        if (t && t->kind == DTL_TYPE_INSTANCE && has_params(t->u.m.model, depth + 1))
            return true;
    }
    return false;
}

typedef struct stage_path {
    dtl_sym **chain;
    size_t n;
    int64_t stage;
    dtl_expr *expr;
} stage_path;

/* Is chain[0..n) (a submodel) covered by the stage paths: named, or inside a named one, or
 * every part of it with params covered? Appends uncovered paths to missing. */
static void stage_cover(chk *c, dtl_ptrvec *paths, dtl_sym **chain, size_t n, const dtl_model *m,
                        dtl_ptrvec *missing)
{
    bool below = false;
    for (size_t i = 0; i < paths->len; i++) {
        stage_path *p = paths->items[i];
        size_t k = p->n < n ? p->n : n;
        if (memcmp(p->chain, chain, k * sizeof *chain) != 0)
            continue;
        if (p->n <= n)
            return;  /* this submodel or one containing it */
        below = true;
    }
    if (!below || m->nparams || n >= 32) {
        dtl_ptrvec_push(c->a, missing, (void *)path_text(c, chain, n));
        return;
    }
    dtl_sym **sub = dtl_arena_array(c->a, n + 1, sizeof *sub);
    memcpy(sub, chain, n * sizeof *sub);
    for (size_t i = 0; i < m->nmembers; i++) {
        const dtl_type *t = m->members[i]->type;
        if (t && t->kind == DTL_TYPE_INSTANCE && has_params(t->u.m.model, 0)) {
            sub[n] = m->members[i];
            stage_cover(c, paths, sub, n + 1, t->u.m.model, missing);
        }
    }
}

static void check_stages(chk *c, dtl_train *t, dtl_span header)
{
    dtl_decl *d = t->decl;
    const dtl_type *par = t->parallel;
    int64_t ns = par ? par->u.par.stages : 0;
    bool any = false, reported = false;
    dtl_ptrvec paths = {0}, stages = {0};
    dtl_decl **by_index = ns > 0 && ns <= 4096 ? dtl_arena_array(c->a, (size_t)ns, sizeof *by_index)
                                              : NULL;
    for (size_t i = 0; i < d->u.train.nitems; i++) {
        dtl_decl *it = d->u.train.items[i];
        if (it->kind != DTL_DECL_STAGE)
            continue;
        any = true;
        dtl_type *it_t = check_expr(c, it->u.stage.index);
        int64_t idx = -1;
        bool ok = !is_err(it_t);
        if (ok && !dtl_type_int_const(it_t, &idx)) {
            dtl_diag_error(c->d, it->u.stage.index->span, "a stage number must be a constant "
                           "int, found %s", tystr(c, it_t));
            ok = false;
        }
        if (!ns || !by_index) {
            if (!reported)
                dtl_diag_error(c->d, it->span, "stage needs parallel = pipeline(stages = …)%s",
                               ns ? " with at most 4096 stages" : "");
            reported = true;
            ok = false;
        } else if (ok && (idx < 0 || idx >= ns)) {
            dtl_diag_error(c->d, it->u.stage.index->span, "stage %" PRId64 " is out of range: "
                           "the pipeline has %" PRId64 " stage%s (0..%" PRId64 ")", idx, ns,
                           ns == 1 ? "" : "s", ns - 1);
            ok = false;
        } else if (ok && by_index[idx]) {
            dtl_diag_error(c->d, it->u.stage.index->span, "stage %" PRId64 " is given twice", idx);
            dtl_diag_note(c->d, by_index[idx]->span, "it is first given here");
            ok = false;
        } else if (ok) {
            by_index[idx] = it;
        }
        dtl_stage *st = dtl_arena_alloc(c->a, sizeof *st);
        st->decl = it;
        st->index = idx;
        st->paths = dtl_arena_array(c->a, it->u.stage.npaths + 1, sizeof *st->paths);
        st->npaths = dtl_arena_array(c->a, it->u.stage.npaths + 1, sizeof *st->npaths);
        for (size_t k = 0; k < it->u.stage.npaths; k++) {
            dtl_expr *pe = it->u.stage.paths[k];
            size_t n;
            dtl_type *pt;
            dtl_sym **chain = resolve_path(c, t, pe, &n, &pt);
            if (!chain)
                continue;
            if (pt->kind != DTL_TYPE_INSTANCE) {
                dtl_diag_error(c->d, pe->span, "stage: %s is a %s, not a submodel",
                               path_text(c, chain, n), sym_kind_text(chain[n - 1]));
                continue;
            }
            if (idx < 0 || !by_index || idx >= ns)
                continue;   /* a bad stage number, reported: nothing to place */
            bool clash = false;
            for (size_t j = 0; j < paths.len && !clash; j++) {
                stage_path *o = paths.items[j];
                size_t m = o->n < n ? o->n : n;
                if (memcmp(o->chain, chain, m * sizeof *chain) != 0)
                    continue;
                clash = true;
                if (o->n == n)
                    dtl_diag_error(c->d, pe->span, "%s is in stage %" PRId64 " and stage %"
                                   PRId64, path_text(c, chain, n), o->stage, idx);
                else
                    dtl_diag_error(c->d, pe->span, "%s overlaps %s, which is in stage %" PRId64,
                                   path_text(c, chain, n), path_text(c, o->chain, o->n),
                                   o->stage);
                dtl_diag_note(c->d, o->expr->span, "%s is given here",
                              path_text(c, o->chain, o->n));
            }
            if (clash)
                continue;
            stage_path *sp = dtl_arena_alloc(c->a, sizeof *sp);
            sp->chain = chain;
            sp->n = n;
            sp->stage = idx;
            sp->expr = pe;
            dtl_ptrvec_push(c->a, &paths, sp);
            st->paths[st->n] = chain;
            st->npaths[st->n++] = n;
        }
        dtl_ptrvec_push(c->a, &stages, st);
    }
    t->nstages = stages.len;
    t->stages = dtl_arena_array(c->a, stages.len ? stages.len : 1, sizeof *t->stages);
    for (size_t i = 0; i < stages.len; i++)
        t->stages[i] = *(dtl_stage *)stages.items[i];
    if (!ns || !by_index)
        return;
    if (!any) {
        dtl_diag_error(c->d, header, "parallel = pipeline(stages = %" PRId64 ") needs stage "
                       "annotations, like stage 0: fc1", ns);
        return;
    }
    const char *gaps = NULL;
    for (int64_t i = 0; i < ns; i++)
        if (!by_index[i])
            gaps = gaps ? dtl_arena_printf(c->a, "%s, %" PRId64, gaps, i)
                        : dtl_arena_printf(c->a, "%" PRId64, i);
    if (gaps)
        dtl_diag_error(c->d, header, "pipeline stage%s %s %s no submodels",
                       strchr(gaps, ',') ? "s" : "", gaps, strchr(gaps, ',') ? "have" : "has");
    dtl_ptrvec missing = {0};
    const dtl_model *m = t->inst->u.m.model;
    for (size_t i = 0; i < m->nmembers; i++) {
        const dtl_type *mt = m->members[i]->type;
        if (mt && mt->kind == DTL_TYPE_INSTANCE && has_params(mt->u.m.model, 0))
            stage_cover(c, &paths, &m->members[i], 1, mt->u.m.model, &missing);
    }
    if (missing.len) {
        const char *list = "";
        for (size_t i = 0; i < missing.len; i++)
            list = dtl_arena_printf(c->a, "%s%s%s", list, i ? ", " : "", (char *)missing.items[i]);
        dtl_diag_error(c->d, header, "every submodel with params needs a stage; not in any: %s",
                       list);
    }
}

static void check_train(chk *c, dtl_decl *d)
{
    dtl_train *t = dtl_arena_alloc(c->a, sizeof *t);
    t->decl = d;
    t->batch = 32;
    t->epochs = 1;
    t->seed = -1;
    t->sym = d->sym;
    if (d->sym)
        d->sym->u.train = t;
    dtl_module *mod = c->mod;
    mod->trains = dtl_arena_grow(c->a, mod->trains, mod->ntrains, mod->ntrains + 1,
                                 sizeof *mod->trains);
    mod->trains[mod->ntrains++] = t;
    saved sv = ctx_save(c);
    c->scope = mod->scope;
    unsigned errs = c->d->nerrors;
    dtl_expr *me = d->u.train.model;
    dtl_span header = dtl_span_join(d->span, me->span);
    c->allow = ALLOW_NEW;
    dtl_type *inst = check_expr(c, me);
    c->allow = 0;
    if (!is_err(inst) && inst->kind == DTL_TYPE_MODEL) {
        dtl_expr *call = dtl_ast_expr(c->ctx, DTL_EXPR_CALL, me->span);
        call->u.call.callee = me;
        inst = call_new(c, call, inst->u.m.model, ALLOW_NEW, true);
    }
    if (!is_err(inst) && inst->kind != DTL_TYPE_INSTANCE) {
        dtl_diag_error(c->d, me->span, "train needs a model, like MLP(), found %s",
                       tystr(c, inst));
        inst = c->err;
    }
    if (is_err(inst)) {
        ctx_restore(c, sv);
        return;
    }
    t->inst = inst;
    t->scope = scope_new(c, mod->scope);
    t->scope->also = inst->u.m.model->scope;
    t->batch_var = dimvar_new(c, "B", DTL_DIMVAR_BATCH, d->span, NULL);
    t->x = sym_new(c, DTL_SYM_BATCH_X, "x", d->span);
    t->x->type = dtl_type_new(c->a, DTL_TYPE_PENDING);
    t->x->state = ST_DONE;
    t->y = sym_new(c, DTL_SYM_BATCH_Y, "y", d->span);
    const dtl_dim **yd = dtl_arena_array(c->a, 1, sizeof *yd);
    yd[0] = dtl_dim_var(c->a, t->batch_var);
    t->y->type = dtl_type_tensor(c->a, DTL_DTYPE_I64, 1, yd);
    t->y->state = ST_DONE;
    scope_add(c, t->scope, t->x);
    scope_add(c, t->scope, t->y);
    /* The batch dim is a name too (reshape(y, [B, 1])), unless the model has a B. */
    if (!dtl_model_lookup(inst->u.m.model, "B")) {
        dtl_sym *b = sym_new(c, DTL_SYM_DIM, "B", d->span);
        b->dimvar = t->batch_var;
        b->type = dtl_type_int(c->a, dtl_dim_var(c->a, t->batch_var));
        b->state = ST_DONE;
        t->batch_var->sym = b;
        scope_add(c, t->scope, b);
    }
    c->scope = t->scope;
    c->train = t;
    c->inst = inst;
    c->inst_subst = inst_subst(c, inst);

    for (size_t i = 0; i < d->u.train.nitems; i++) {
        dtl_decl *it = d->u.train.items[i];
        if (it->kind != DTL_DECL_SETTING)
            continue;
        int k = 0;
        while (k < DTL_SET_COUNT && strcmp(setting_names[k], it->name.text) != 0)
            k++;
        if (k == DTL_SET_COUNT) {
            const char *near = dtl_diag_suggest(it->name.text, setting_names, DTL_SET_COUNT);
            dtl_diag_error(c->d, it->name.span, "unknown train setting '%s'%s", it->name.text,
                           mean_suffix(c, near));
            continue;
        }
        if (t->settings[k]) {
            dtl_diag_error(c->d, it->name.span, "train setting '%s' is given twice",
                           it->name.text);
            dtl_diag_note(c->d, t->settings[k]->name.span, "it is first given here");
            continue;
        }
        t->settings[k] = it;
    }
    /* data first: y's type depends on the data set (text windows, regression targets). */
    if (t->settings[DTL_SET_DATA]) {
        check_setting(c, t, DTL_SET_DATA, t->settings[DTL_SET_DATA]);
        set_batch_y(c, t);
    }
    for (size_t i = 0; i < d->u.train.nitems && !dtl_diag_stop(c->d); i++) {
        dtl_decl *it = d->u.train.items[i];
        if (it->kind != DTL_DECL_SETTING)
            continue;
        for (int k = 0; k < DTL_SET_COUNT; k++)
            if (t->settings[k] == it && k != DTL_SET_DATA)
                check_setting(c, t, k, it);
    }
    static const int required[] = {DTL_SET_DATA, DTL_SET_LOSS, DTL_SET_OPTIMIZER};
    static const char *const examples[] = {"data = ds.train", "loss = cross_entropy(forward(x), y)",
                                           "optimizer = adam(lr = 1e-3)"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!t->settings[required[i]]) {
            dtl_diag_error(c->d, header, "missing train setting '%s'",
                           setting_names[required[i]]);
            dtl_diag_note(c->d, header, "e.g. %s", examples[i]);
        }
    if (t->x->type->kind == DTL_TYPE_PENDING && c->d->nerrors == errs) {
        dtl_diag_error(c->d, header, "cannot infer the shape of x; pass it to the model's "
                       "forward");
        dtl_diag_note(c->d, header, "x's shape is taken from the first parameter it is passed "
                      "to, e.g. loss = cross_entropy(forward(x), y)");
    }
    check_shards(c, t);
    check_stages(c, t, header);
    ctx_restore(c, sv);
}

/* ---- modules ---- */

static void declare_model(chk *c, dtl_decl *d, dtl_sym *s)
{
    dtl_model *m = dtl_arena_alloc(c->a, sizeof *m);
    m->name = d->name.text;
    m->decl = d;
    m->sym = s;
    m->module = c->mod;
    s->u.model = m;
    s->state = ST_DONE;
    m->scope = scope_new(c, c->mod->scope);
    size_t n = d->u.model.nparams;
    m->nctor = n;
    m->ctor = dtl_arena_array(c->a, n ? n : 1, sizeof *m->ctor);
    m->defaults = dtl_arena_array(c->a, n ? n : 1, sizeof *m->defaults);
    for (size_t i = 0; i < n; i++) {
        dtl_fparam *fp = &d->u.model.params[i];
        dtl_sym *p = sym_new(c, DTL_SYM_CTOR_PARAM, fp->name.text, fp->name.span);
        p->owner = m;
        p->fparam = fp;
        p->index = (unsigned)i;
        p->state = ST_DONE;
        p->dimvar = dimvar_new(c, p->name, DTL_DIMVAR_CTOR, p->span, p);
        if (!fp->type) {
            p->type = c->err;   /* reported by ensure_model */
            p->used = true;
        } else {
            switch (fp->type->kind) {
            case DTL_TEXPR_INT:
                p->type = dtl_type_int(c->a, dtl_dim_var(c->a, p->dimvar));
                break;
            case DTL_TEXPR_FLOAT:
                p->type = dtl_type_float(c->a, false, 0);
                break;
            case DTL_TEXPR_BOOL:
                p->type = dtl_type_bool(c->a, false, false);
                break;
            case DTL_TEXPR_STR:
                p->type = dtl_type_new(c->a, DTL_TYPE_STR);
                break;
            case DTL_TEXPR_TENSOR:
                p->type = c->err;   /* reported by ensure_model */
                p->used = true;
                break;
            }
            if (p->type->kind != DTL_TYPE_ERROR && p->type->kind != DTL_TYPE_INT)
                p->type->var = p->dimvar;
        }
        declare(c, m->scope, p, "parameter");
        m->ctor[i] = p;
    }
    dtl_ptrvec params = {0}, members = {0}, fns = {0};
    for (size_t i = 0; i < d->u.model.nitems; i++) {
        dtl_decl *it = d->u.model.items[i];
        dtl_sym *is;
        switch (it->kind) {
        case DTL_DECL_PARAM:
            is = sym_new(c, DTL_SYM_PARAM, it->name.text, it->name.span);
            is->index = (unsigned)params.len;
            dtl_ptrvec_push(c->a, &params, is);
            break;
        case DTL_DECL_MEMBER:
        case DTL_DECL_LET:
            is = sym_new(c, DTL_SYM_MEMBER, it->name.text, it->name.span);
            is->index = (unsigned)members.len;
            dtl_ptrvec_push(c->a, &members, is);
            break;
        case DTL_DECL_FN: {
            is = sym_new(c, DTL_SYM_FN, it->name.text, it->name.span);
            dtl_fn *f = dtl_arena_alloc(c->a, sizeof *f);
            f->name = it->name.text;
            f->decl = it;
            f->sym = is;
            f->module = c->mod;
            f->model = m;
            is->u.fn = f;
            is->fn = f;
            is->state = ST_DONE;
            dtl_ptrvec_push(c->a, &fns, f);
            break;
        }
        default:
            dtl_diag_error(c->d, it->span, "a %s cannot appear in a model",
                           dtl_decl_kind_name(it->kind));
            continue;
        }
        is->owner = m;
        is->decl = it;
        it->sym = is;
        declare(c, m->scope, is, sym_kind_text(is));
    }
    m->nparams = params.len;
    m->params = (dtl_sym **)params.items;
    m->nmembers = members.len;
    m->members = (dtl_sym **)members.items;
    m->nfns = fns.len;
    m->fns = (dtl_fn **)fns.items;
    dtl_module *mod = c->mod;
    mod->models = dtl_arena_grow(c->a, mod->models, mod->nmodels, mod->nmodels + 1,
                                 sizeof *mod->models);
    mod->models[mod->nmodels++] = m;
}

static void check_module(chk *c, dtl_module *m)
{
    saved sv = ctx_save(c);
    unsigned depth = c->lazy_depth;
    c->lazy_depth = 0;
    c->mod = m;
    m->scope = scope_new(c, NULL);
    c->scope = m->scope;
    dtl_file *file = m->file;
    dtl_ptrvec uses = {0}, fns = {0};
    /* 1: declare every top-level name (and load used modules). */
    for (size_t i = 0; i < file->ndecls && !dtl_diag_stop(c->d); i++) {
        dtl_decl *d = file->decls[i];
        dtl_sym *s = NULL;
        const char *what = dtl_decl_kind_name(d->kind);
        switch (d->kind) {
        case DTL_DECL_USE: {
            if (d->u.use.nparts == 0)
                continue;
            dtl_module *used = use_module(c, d);
            dtl_ident last = d->u.use.parts[d->u.use.nparts - 1];
            s = sym_new(c, DTL_SYM_MODULE, last.text, last.span);
            s->u.module = used;
            s->decl = d;
            s->state = ST_DONE;
            if (!used) {
                s->type = c->err;
                s->used = true;
            }
            what = "module";
            dtl_ptrvec_push(c->a, &uses, s);
            break;
        }
        case DTL_DECL_MODEL:
            s = sym_new(c, DTL_SYM_MODEL, d->name.text, d->name.span);
            declare_model(c, d, s);
            break;
        case DTL_DECL_FN: {
            s = sym_new(c, DTL_SYM_FN, d->name.text, d->name.span);
            dtl_fn *f = dtl_arena_alloc(c->a, sizeof *f);
            f->name = d->name.text;
            f->decl = d;
            f->sym = s;
            f->module = m;
            s->u.fn = f;
            s->fn = f;
            s->state = ST_DONE;
            dtl_ptrvec_push(c->a, &fns, f);
            break;
        }
        case DTL_DECL_DATASET:
            s = sym_new(c, DTL_SYM_DATASET, d->name.text, d->name.span);
            break;
        case DTL_DECL_LET:
            s = sym_new(c, DTL_SYM_LET, d->name.text, d->name.span);
            break;
        case DTL_DECL_TRAIN:
            if (d->name.text)
                s = sym_new(c, DTL_SYM_TRAIN, d->name.text, d->name.span);
            what = "train block";
            break;
        default:
            dtl_diag_error(c->d, d->span, "a %s cannot appear at the top level",
                           dtl_decl_kind_name(d->kind));
            break;
        }
        if (!s)
            continue;
        s->decl = d;
        d->sym = s;
        declare(c, m->scope, s, what);
    }
    m->nfns = fns.len;
    m->fns = (dtl_fn **)fns.items;
    /* 2: check every declaration (those used earlier are done already). */
    for (size_t i = 0; i < file->ndecls && !dtl_diag_stop(c->d); i++) {
        dtl_decl *d = file->decls[i];
        dtl_sym *s = d->sym;
        switch (d->kind) {
        case DTL_DECL_MODEL:
            if (s && s->u.model)
                ensure_model(c, s->u.model);
            break;
        case DTL_DECL_FN:
            if (s && s->u.fn)
                ensure_fn(c, s->u.fn);
            break;
        case DTL_DECL_LET:
        case DTL_DECL_DATASET:
            if (s)
                sym_base_type(c, s, s->span);
            break;
        case DTL_DECL_TRAIN:
            check_train(c, d);
            break;
        default:
            break;
        }
    }
    /* 3: unused imports. */
    for (size_t i = 0; i < uses.len; i++) {
        dtl_sym *s = uses.items[i];
        if (!s->used)
            warn(c, s->decl->span, "%s '%s' is never used", "module", s->name);
    }
    c->lazy_depth = depth;
    ctx_restore(c, sv);
}

static dtl_module *module_new(chk *c, const dtl_source *src, const char *fid)
{
    dtl_module *m = dtl_arena_alloc(c->a, sizeof *m);
    m->path = src->path;
    m->file_id = fid;
    m->src = src;
    m->name = module_name_of(c, src->path);
    register_module(c, m);
    return m;
}

static void module_run(chk *c, dtl_module *m)
{
    m->state = ST_BUSY;
    dtl_ptrvec_push(c->a, &c->loading, m);
    unsigned errors_before = c->ctx->diags.nerrors;
    m->file = dtl_parse(c->ctx, m->src);
    /* Statements with syntax errors were dropped, so what the checker would say about this
     * file now (unknown names the dropped statements defined, "never used" warnings) is
     * mostly noise: it is still checked, so that modules using it get their symbols, but
     * into a diagnostics sink. Syntax errors of modules it uses still reach the user (the
     * parser reports to ctx->diags); their other diagnostics wait for the next run. */
    dtl_diags *d = c->d, sink;
    if (c->ctx->diags.nerrors > errors_before) {
        dtl_diag_init(&sink, c->a, &c->ctx->sources);
        c->d = &sink;
    }
    if (m->file)
        check_module(c, m);
    c->d = d;
    c->loading.len--;
    m->state = ST_DONE;
}

static dtl_module *load_module(chk *c, const dtl_source *src, const char *fid)
{
    dtl_module *m = module_new(c, src, fid);
    module_run(c, m);
    return m;
}

dtl_module *dtl_check_source(dtl_ctx *ctx, const dtl_source *src)
{
    return dtl_check_source_hooks(ctx, src, NULL);
}

dtl_module *dtl_check_source_hooks(dtl_ctx *ctx, const dtl_source *src,
                                   const dtl_check_hooks *hooks)
{
    chk cs;
    memset(&cs, 0, sizeof cs);
    chk *c = &cs;
    c->ctx = ctx;
    c->hooks = hooks;
    c->a = &ctx->arena;
    c->d = &ctx->diags;
    jmp_buf jb;
    jmp_buf *prev = ctx->arena.oom_jump;
    dtl_module *volatile result = NULL;
    ctx->arena.oom_jump = &jb;
    if (setjmp(jb)) {
        ctx->arena.oom_jump = prev;
        static const dtl_span nowhere;
        dtl_diag_error(&ctx->diags, nowhere, "out of memory");
        return result;
    }
    c->err = dtl_type_new(c->a, DTL_TYPE_ERROR);
    const char *fid = strcmp(src->path, "-") ? file_id(c, src->path) : NULL;
    dtl_module *m = fid ? find_loaded(c, fid) : NULL;
    if (!m) {
        m = module_new(c, src, fid);
        result = m;
        c->root = m;
        module_run(c, m);
    }
    result = m;
    ctx->arena.oom_jump = prev;
    return m;
}

dtl_module *dtl_check_path(dtl_ctx *ctx, const char *path)
{
    char why[256];
    jmp_buf jb;
    jmp_buf *prev = ctx->arena.oom_jump;
    ctx->arena.oom_jump = &jb;
    if (setjmp(jb)) {
        ctx->arena.oom_jump = prev;
        static const dtl_span nowhere;
        dtl_diag_error(&ctx->diags, nowhere, "out of memory");
        return NULL;
    }
    const dtl_source *src = dtl_src_load(&ctx->sources, path, why, sizeof why);
    ctx->arena.oom_jump = prev;
    if (!src) {
        static const dtl_span nowhere;
        dtl_diag_error(&ctx->diags, nowhere, "cannot read '%s': %s", path, why);
        return NULL;
    }
    return dtl_check_source(ctx, src);
}

/* ---- --emit=types ---- */

typedef struct printer {
    FILE *out;
    dtl_arena *a;
    const dtl_module *m;
} printer;

static const char *p_type(printer *p, const dtl_type *t)
{
    return t ? dtl_type_print(p->a, t, p->m) : "<error>";
}

/* A configuration's type without its kind word: "adam(lr = 0.001)", "fashion.train". */
static const char *p_cfg(printer *p, const dtl_type *t)
{
    const char *s = p_type(p, t);
    const char *sp = strchr(s, ' ');
    return t && t->kind != DTL_TYPE_INSTANCE && sp ? sp + 1 : s;
}

/* "int = 784", "int = n*2 + 1" for a host value known (or symbolic), else the type. */
static const char *p_typed_value(printer *p, const dtl_type *t)
{
    if (t && (is_constant(t) || (t->kind == DTL_TYPE_INT && t->u.ival) ||
              (dtl_type_is_host(t) && t->var)))
        return dtl_arena_printf(p->a, "%s = %s", p_type(p, t), dtl_value_print(p->a, t, p->m));
    return p_type(p, t);
}

static void print_fn(printer *p, const dtl_fn *f, int indent)
{
    fprintf(p->out, "%*sfn %s(", indent, "", f->name);
    for (size_t i = 0; i < f->nparams; i++) {
        fprintf(p->out, "%s%s: %s", i ? ", " : "", f->params[i]->name,
                p_type(p, f->params[i]->type));
        if (f->defaults && f->defaults[i])
            fprintf(p->out, " = %s", dtl_value_print(p->a, f->defaults[i], p->m));
    }
    fprintf(p->out, ") -> %s\n", p_type(p, f->ret));
    const dtl_decl *d = f->decl;
    if (d->u.fn.is_block)
        for (size_t i = 0; i < d->u.fn.nbody; i++) {
            const dtl_decl *st = d->u.fn.body[i];
            if (st->kind == DTL_DECL_LET && st->sym)
                fprintf(p->out, "%*slet %s: %s\n", indent + 4, "", st->name.text,
                        p_typed_value(p, st->sym->type));
        }
}

static void print_model(printer *p, const dtl_model *m)
{
    fprintf(p->out, "model %s(", m->name);
    for (size_t i = 0; i < m->nctor; i++) {
        fprintf(p->out, "%s%s: %s", i ? ", " : "", m->ctor[i]->name, p_type(p, m->ctor[i]->type));
        if (m->defaults[i])
            fprintf(p->out, " = %s", dtl_value_print(p->a, m->defaults[i], p->m));
    }
    fputs(")\n", p->out);
    for (size_t i = 0; i < m->decl->u.model.nitems; i++) {
        const dtl_decl *it = m->decl->u.model.items[i];
        const dtl_sym *s = it->sym;
        if (!s)
            continue;
        switch (it->kind) {
        case DTL_DECL_PARAM:
            fprintf(p->out, "    %s %s: %s", it->u.bind.state ? "state" : "param", s->name,
                    p_type(p, s->type));
            if (it->u.bind.value)
                fprintf(p->out, " = %s", dtl_print_expr(p->a, it->u.bind.value));
            fputc('\n', p->out);
            break;
        case DTL_DECL_MEMBER:
        case DTL_DECL_LET:
            fprintf(p->out, "    %s: %s\n", s->name, p_typed_value(p, s->type));
            break;
        case DTL_DECL_FN:
            print_fn(p, s->u.fn, 4);
            break;
        default:
            break;
        }
    }
}

static void print_train(printer *p, const dtl_train *t)
{
    const dtl_decl *d = t->decl;
    if (d->name.text)
        fprintf(p->out, "train %s = %s\n", d->name.text, p_type(p, t->inst));
    else
        fprintf(p->out, "train %s\n", p_type(p, t->inst));
    if (!t->inst)
        return;
    fprintf(p->out, "    x: %s\n", p_type(p, t->x->type));
    fprintf(p->out, "    y: %s\n", p_type(p, t->y->type));
    if (t->data)
        fprintf(p->out, "    data: %s\n", p_cfg(p, t->data));
    fprintf(p->out, "    batch: %" PRId64 "\n", t->batch);
    if (t->loss)
        fprintf(p->out, "    loss: %s\n", p_type(p, t->loss));
    if (t->optimizer)
        fprintf(p->out, "    optimizer: %s\n", p_cfg(p, t->optimizer));
    fprintf(p->out, "    epochs: %" PRId64 "\n", t->epochs);
    if (t->evaluate)
        fprintf(p->out, "    evaluate: %s\n", p_cfg(p, t->evaluate));
    if (t->seed >= 0)
        fprintf(p->out, "    seed: %" PRId64 "\n", t->seed);
    if (t->parallel)
        fprintf(p->out, "    parallel: %s\n", p_cfg(p, t->parallel));
    if (t->device)
        fprintf(p->out, "    device: %s\n", p_cfg(p, t->device));
    if (t->schedule)
        fprintf(p->out, "    schedule: %s\n", p_cfg(p, t->schedule));
    if (t->warmup > 0)
        fprintf(p->out, "    warmup: %" PRId64 "\n", t->warmup);
    if (t->clip > 0)
        fprintf(p->out, "    clip: %s\n", dtl_double_print(p->a, t->clip));
    for (size_t i = 0; i < t->nshards; i++) {
        const dtl_shard *s = &t->shards[i];
        const char *path = "";
        for (size_t k = 0; k < s->npath; k++)
            path = dtl_arena_printf(p->a, "%s%s%s", path, k ? "." : "", s->path[k]->name);
        fprintf(p->out, "    shard %s along %" PRId64 "\n", path, s->axis);
    }
    for (size_t i = 0; i < t->nstages; i++) {
        const dtl_stage *st = &t->stages[i];
        fprintf(p->out, "    stage %" PRId64 ":", st->index);
        for (size_t j = 0; j < st->n; j++) {
            const char *path = "";
            for (size_t k = 0; k < st->npaths[j]; k++)
                path = dtl_arena_printf(p->a, "%s%s%s", path, k ? "." : "", st->paths[j][k]->name);
            fprintf(p->out, "%s %s", j ? "," : "", path);
        }
        fputc('\n', p->out);
    }
}

void dtl_check_print_types(FILE *out, const dtl_module *m)
{
    if (!m || !m->file)
        return;
    dtl_arena scratch;
    dtl_arena_init(&scratch);
    printer p = {out, &scratch, m};
    size_t ntrain = 0;
    for (size_t i = 0; i < m->file->ndecls; i++) {
        const dtl_decl *d = m->file->decls[i];
        const dtl_sym *s = d->sym;
        switch (d->kind) {
        case DTL_DECL_USE:
            fputs("use ", out);
            for (size_t k = 0; k < d->u.use.nparts; k++)
                fprintf(out, "%s%s", k ? "." : "", d->u.use.parts[k].text);
            fputc('\n', out);
            break;
        case DTL_DECL_MODEL:
            if (s && s->kind == DTL_SYM_MODEL)
                print_model(&p, s->u.model);
            break;
        case DTL_DECL_FN:
            if (s && s->kind == DTL_SYM_FN)
                print_fn(&p, s->u.fn, 0);
            break;
        case DTL_DECL_LET:
            if (s)
                fprintf(out, "let %s: %s\n", d->name.text, p_typed_value(&p, s->type));
            break;
        case DTL_DECL_DATASET:
            if (s)
                fprintf(out, "dataset %s = %s\n", d->name.text, p_cfg(&p, s->type));
            break;
        case DTL_DECL_TRAIN:
            if (ntrain < m->ntrains && m->trains[ntrain]->decl == d)
                print_train(&p, m->trains[ntrain++]);
            break;
        default:
            break;
        }
    }
    dtl_arena_free(&scratch);
}
