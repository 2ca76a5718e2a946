/* lang/check.h — the checker: modules, `use`, scopes, name resolution, type and shape
 * inference, train blocks, warnings, and the --emit=types listing.
 *
 * Contract: dtl_check_path / dtl_check_source parse a file, load (parse and check) every
 * module it uses, check it, and return its dtl_module. Problems are diagnostics in
 * ctx->diags; the result is NULL only when the file itself cannot be read (an error with no
 * place has then been reported). Modules are loaded once per ctx and shared (ctx->modules).
 * Everything is allocated in ctx->arena; an out-of-memory inside is reported as an error
 * ("out of memory") and the module returned is then partial.
 *
 * What the checker leaves for later stages (lowering):
 *  - every checked dtl_expr has ->type (DTL_TYPE_ERROR where an error was reported); host
 *    values carry their folded value (an int as a dtl_dim, possibly symbolic);
 *  - NAME and MEMBER exprs have ->sym, the symbol they denote; a CALL expr has ->sym of kind
 *    DTL_SYM_CALL, whose u.call says what is called and binds the arguments to parameters;
 *  - declarations have ->sym; models, fns and train blocks have their info structs below.
 * The types of a model's params, members and fns are generic: they mention the model's
 * constructor parameters (dtl_model.ctor[i]->dimvar). An instance type (DTL_TYPE_INSTANCE)
 * gives the arguments; dtl_check_inst_subst makes the substitution from one to the other.
 */
#ifndef DTL_CHECK_H
#define DTL_CHECK_H

#include <stdio.h>

#include "ast.h"
#include "builtins.h"
#include "ctx.h"
#include "types.h"

typedef struct dtl_sym dtl_sym;
typedef struct dtl_scope dtl_scope;
typedef struct dtl_model dtl_model;
typedef struct dtl_fn dtl_fn;
typedef struct dtl_train dtl_train;

typedef enum dtl_sym_kind {
    DTL_SYM_MODULE,      /* `use nn` binds nn: u.module */
    DTL_SYM_MODEL,       /* a model declaration: u.model */
    DTL_SYM_FN,          /* a fn, top level or of a model: u.fn */
    DTL_SYM_DATASET,     /* dataset NAME = …; type DATASET */
    DTL_SYM_LET,         /* a let, top level or in a fn block */
    DTL_SYM_TRAIN,       /* a train block: u.train */
    DTL_SYM_CTOR_PARAM,  /* a model's constructor parameter (owner, index, dimvar) */
    DTL_SYM_PARAM,       /* a model's `param` (owner, index) */
    DTL_SYM_MEMBER,      /* a model's member: a submodel instance or a constant (owner, index) */
    DTL_SYM_FN_PARAM,    /* a fn's parameter (fn, index; dimvar for an int one) */
    DTL_SYM_DIM,         /* a fn's symbolic dim (`B`), usable as an int value (dimvar) */
    DTL_SYM_BUILTIN,     /* u.builtin */
    DTL_SYM_BATCH_X,     /* a train block's x (the batch's features) */
    DTL_SYM_BATCH_Y,     /* a train block's y (the batch's labels) */
    DTL_SYM_CALL,        /* not a name: the annotation of a CALL expr, u.call */
} dtl_sym_kind;

typedef enum dtl_call_kind {
    DTL_CALL_BUILTIN,    /* a builtin: u.call.builtin */
    DTL_CALL_FN,         /* a fn (u.call.fn), of the instance u.call.inst when a method */
    DTL_CALL_NEW,        /* a model instantiated: u.call.model; the result is the instance */
    DTL_CALL_FORWARD,    /* an instance called: its forward (u.call.fn) on u.call.inst */
} dtl_call_kind;

typedef struct dtl_call {
    dtl_call_kind kind;
    const dtl_builtin *builtin;
    dtl_fn *fn;
    dtl_model *model;
    dtl_type *inst;            /* the instance the fn belongs to (FN of a model, FORWARD) */
    /* The arguments in parameter order (nargs = the callee's parameter count); NULL where
     * the default applies. argtypes: their types, or the defaults' (builtins, ctors). */
    dtl_expr **args;
    dtl_type **argtypes;
    size_t nargs;
    /* FN, FORWARD: the callee's variables as bound at this call: the instance's
     * constructor arguments, the fn's symbolic dims (B = 32) and int parameters. */
    dtl_subst subst;
} dtl_call;

struct dtl_sym {
    dtl_sym_kind kind;
    const char *name;
    dtl_span span;             /* the defining name; file 0 for builtins */
    dtl_decl *decl;            /* MODEL FN DATASET LET TRAIN PARAM MEMBER: its declaration */
    dtl_fparam *fparam;        /* CTOR_PARAM FN_PARAM */
    dtl_type *type;            /* its type (host constants with their value); NULL if unknown */
    struct dtl_module *module; /* the module it belongs to (NULL for builtins) */
    dtl_model *owner;          /* CTOR_PARAM PARAM MEMBER, and FN of a model */
    dtl_fn *fn;                /* FN: itself; FN_PARAM DIM and a block's LET: the enclosing fn */
    dtl_dimvar *dimvar;        /* CTOR_PARAM (every one), int FN_PARAM, DIM */
    unsigned index;            /* CTOR_PARAM PARAM MEMBER FN_PARAM: position among its kind */
    union {
        struct dtl_module *module;
        dtl_model *model;
        dtl_fn *fn;
        dtl_train *train;
        const dtl_builtin *builtin;
        dtl_call *call;
    } u;
    /* checker bookkeeping */
    unsigned char state;       /* 0 unchecked, 1 in progress, 2 done */
    bool used;
};

struct dtl_model {
    const char *name;
    dtl_decl *decl;
    dtl_sym *sym;
    struct dtl_module *module;
    dtl_sym **ctor;      size_t nctor;      /* constructor parameters, in order */
    dtl_type **defaults;                    /* per ctor param: its default's value, or NULL */
    dtl_sym **params;    size_t nparams;    /* `param`s, in order */
    dtl_sym **members;   size_t nmembers;   /* members, in order */
    dtl_fn **fns;        size_t nfns;       /* fns, in order */
    dtl_scope *scope;    /* ctor params, params, members, fns */
    unsigned char state;
};

struct dtl_fn {
    const char *name;
    dtl_decl *decl;
    dtl_sym *sym;
    struct dtl_module *module;
    dtl_model *model;                       /* NULL at top level */
    dtl_sym **params;    size_t nparams;    /* FN_PARAM symbols, in order */
    dtl_type **defaults;                    /* per param: its default's value, or NULL */
    dtl_sym **dims;      size_t ndims;      /* DIM symbols: the signature's symbolic dims */
    dtl_type *ret;       /* the declared return type, or the body's; NULL after an error */
    dtl_scope *scope;    /* params and dims (a block's lets are in inner scopes) */
    unsigned char state, sig_state;
};

/* A shard or stage annotation of a train block, resolved. */
typedef struct dtl_shard {
    dtl_decl *decl;
    dtl_sym **path;  size_t npath;   /* members then the param: fc1, w */
    int64_t axis;                    /* normalized (>= 0) */
} dtl_shard;

typedef struct dtl_stage {
    dtl_decl *decl;
    int64_t index;
    dtl_sym ***paths;  size_t *npaths;  size_t n;   /* each path: the member chain */
} dtl_stage;

struct dtl_train {
    dtl_decl *decl;
    dtl_sym *sym;
    dtl_type *inst;            /* the model instance (all constructor args known) */
    dtl_sym *x, *y;            /* the batch: x's type is inferred, y is i64[B] */
    dtl_dimvar *batch_var;     /* B of x and y (also a name in the settings: reshape(y, [B, 1])) */
    dtl_scope *scope;
    /* Settings, as checked (NULL when absent or wrong). */
    dtl_type *data;            /* SPLIT */
    int64_t batch;             /* default 32 */
    dtl_type *loss;            /* a float scalar tensor */
    dtl_type *optimizer;       /* OPTIMIZER */
    int64_t epochs;            /* default 1 */
    dtl_type *evaluate;        /* METRIC or NULL */
    int64_t seed;              /* -1: not given */
    dtl_type *parallel;        /* PARALLEL or NULL */
    dtl_type *device;          /* DEVICE or NULL */
    dtl_type *schedule;        /* SCHEDULE or NULL (constant) */
    int64_t warmup;            /* updates of linear warmup; default 0 */
    double clip;               /* clip gradients to this global norm; 0: not given */
    const char *checkpoint;    /* `checkpoint = "FILE"`: where training saves by default and
                                  --infer loads from (dtlc run's --save / --load); NULL */
    dtl_precision precision;   /* `precision = f32 | tf32 | bf16`; DTL_PREC_DEFAULT: not given */
    dtl_decl *settings[16];    /* the setting declarations, by dtl_train_setting */
    dtl_shard *shards;   size_t nshards;
    dtl_stage *stages;   size_t nstages;
};

typedef enum dtl_train_setting {
    DTL_SET_DATA, DTL_SET_BATCH, DTL_SET_LOSS, DTL_SET_OPTIMIZER, DTL_SET_EPOCHS,
    DTL_SET_EVALUATE, DTL_SET_SEED, DTL_SET_PARALLEL, DTL_SET_DEVICE, DTL_SET_SCHEDULE,
    DTL_SET_WARMUP, DTL_SET_CLIP, DTL_SET_CHECKPOINT, DTL_SET_PRECISION,
    DTL_SET_COUNT
} dtl_train_setting;

struct dtl_module {
    const char *name;          /* "nn" for …/nn.dtl */
    const char *path;          /* as loaded, for messages */
    const char *file_id;       /* "device:inode", to share modules; NULL for stdin */
    const dtl_source *src;
    dtl_file *file;
    dtl_scope *scope;          /* the top-level names */
    dtl_model **models;  size_t nmodels;
    dtl_fn **fns;        size_t nfns;      /* top-level fns */
    dtl_train **trains;  size_t ntrains;
    unsigned char state;
};

dtl_module *dtl_check_path(dtl_ctx *ctx, const char *path);
dtl_module *dtl_check_source(dtl_ctx *ctx, const dtl_source *src);

/* Hooks for `dtlc repl`, which checks its whole session again at every input as one module
 * (the root). They apply to the root module only, never to the modules it uses:
 *  - global: the type of a name the root does not declare (a tensor the session computed
 *    already), looked up after the root's own names and before the builtins; the symbol is a
 *    DTL_SYM_LET with no declaration (lowering makes it an INPUT of that name). NULL: none.
 *  - builtins[0..nbuiltins): more builtins (the prompt's tensor constructors), looked up
 *    after the builtin table; a table builtin that may not be used where it is called
 *    (zeros() outside a param's initializer) gives way to an extra one of the same name.
 *    `rule` checks a call of one of them, as dtl_builtin_check does for the table's.
 *  - lets_any: a top-level `let` may hold any value, not just a host value or a tensor: a
 *    model instance (`let d = nn.Dense(3, 2)` instantiates the model), a fn, a module …
 * user is passed back to the callbacks. */
typedef struct dtl_check_hooks {
    dtl_type *(*global)(void *user, dtl_arena *a, const char *name);
    const dtl_builtin *builtins;
    size_t nbuiltins;
    dtl_type *(*rule)(void *user, dtl_bcall *call);
    bool lets_any;
    void *user;
} dtl_check_hooks;

/* dtl_check_source with hooks (NULL: none). */
dtl_module *dtl_check_source_hooks(dtl_ctx *ctx, const dtl_source *src,
                                   const dtl_check_hooks *hooks);
void dtl_check_print_types(FILE *out, const dtl_module *m);

/* The name's symbol in scope s itself (not its parents), or NULL. */
dtl_sym *dtl_scope_lookup(const dtl_scope *s, const char *name);
/* The symbol a module's top level binds to name, or NULL. */
dtl_sym *dtl_module_lookup(const dtl_module *m, const char *name);
/* The member, param, ctor param or fn of a model named name, or NULL. */
dtl_sym *dtl_model_lookup(const dtl_model *m, const char *name);
/* The substitution from a model's constructor parameters to inst's arguments. */
void dtl_check_inst_subst(dtl_arena *a, const dtl_type *inst, dtl_subst *out);
/* "forward" → the model's fn of that name, or NULL. */
dtl_fn *dtl_model_fn(const dtl_model *m, const char *name);

#endif
