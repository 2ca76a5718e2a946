/* lang/ast.h — the abstract syntax tree of a .dtl file.
 *
 * Contract: every node lives in the compilation's arena (dtl_ctx.arena) and is released
 * with it; nodes own no heap memory. Lists are arena arrays (pointer + count). Every node
 * carries the span of the source it came from. Constructors (dtl_ast_*) never fail: out of
 * memory longjmps as described in runtime/arena.h. The parser builds the tree; the checker
 * (lang/check.h) only fills the annotation fields marked "checker"; nothing else mutates it.
 *
 * The tree keeps the source's structure (no desugaring), so that the printer
 * (lang/print.h) can print it back as source that parses to the same tree.
 */
#ifndef DTL_AST_H
#define DTL_AST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../runtime/dtype.h"
#include "ctx.h"

struct dtl_type;   /* lang/types.h */
struct dtl_sym;    /* lang/check.h */

/* An identifier and where it was written. text is NUL-terminated, in the arena. */
typedef struct dtl_ident {
    const char *text;
    dtl_span span;
} dtl_ident;

/* ---- Type expressions: `int`, `float`, `bool`, `str`, `f32`, `f32[B, in * 2]` ---- */

typedef enum dtl_texpr_kind {
    DTL_TEXPR_INT,     /* a host integer (constructor args, axes) */
    DTL_TEXPR_FLOAT,   /* a host float */
    DTL_TEXPR_BOOL,    /* a host bool (`bool` without brackets) */
    DTL_TEXPR_STR,     /* a string */
    DTL_TEXPR_TENSOR,  /* dtype with dims; `f32` without brackets is a rank-0 tensor */
} dtl_texpr_kind;

typedef struct dtl_expr dtl_expr;

typedef struct dtl_texpr {
    dtl_texpr_kind kind;
    dtl_span span;
    dtl_dtype dtype;        /* TENSOR */
    bool has_dims;          /* TENSOR: brackets were written (`f32[]` has them, rank 0) */
    dtl_expr **dims;        /* TENSOR: each an INT, NAME, or +,-,*,/ of those (checker says) */
    size_t ndims;
} dtl_texpr;

/* ---- Expressions ---- */

typedef enum dtl_expr_kind {
    DTL_EXPR_INT,      /* 42           u.ival */
    DTL_EXPR_FLOAT,    /* 1e-3, 0.5    u.fval (text keeps the spelling for printing) */
    DTL_EXPR_STRING,   /* "a\n"        u.str (decoded bytes, may hold NUL; text: spelling) */
    DTL_EXPR_BOOL,     /* true false   u.bval */
    DTL_EXPR_NAME,     /* x            u.name */
    DTL_EXPR_DTYPE,    /* f64 used as a value, e.g. cast(x, f64)   u.dtype */
    DTL_EXPR_MEMBER,   /* a.b          u.member */
    DTL_EXPR_CALL,     /* f(a, b = 1)  u.call */
    DTL_EXPR_INDEX,    /* x[0, 1:3, :] u.index */
    DTL_EXPR_UNARY,    /* -x, not m    u.unary */
    DTL_EXPR_BINARY,   /* a + b        u.binary */
    DTL_EXPR_TENSOR,   /* [1, 2, 3], [[1, 2], [3, 4]]   u.tensor */
    DTL_EXPR_PAREN,    /* (e)          u.paren — kept so printing round-trips exactly */
} dtl_expr_kind;

typedef enum dtl_unop {
    DTL_UNOP_NEG,      /* -x */
    DTL_UNOP_NOT,      /* not m */
} dtl_unop;

typedef enum dtl_binop {
    DTL_BINOP_ADD, DTL_BINOP_SUB, DTL_BINOP_MUL, DTL_BINOP_DIV, DTL_BINOP_MATMUL,
    DTL_BINOP_POW,                                              /* ** */
    DTL_BINOP_LT, DTL_BINOP_LE, DTL_BINOP_GT, DTL_BINOP_GE, DTL_BINOP_EQ, DTL_BINOP_NE,
    DTL_BINOP_AND, DTL_BINOP_OR,                                /* and, or (masks) */
    DTL_BINOP_COUNT
} dtl_binop;

/* Call argument: positional when name.text is NULL. */
typedef struct dtl_arg {
    dtl_ident name;
    dtl_expr *value;
} dtl_arg;

/* One subscript: an index (value), or a slice start:stop:step with any part omitted. */
typedef struct dtl_subscript {
    bool is_slice;
    dtl_expr *value;                 /* index */
    dtl_expr *start, *stop, *step;   /* slice parts, each may be NULL */
    bool has_step;                   /* the second ':' was written */
    dtl_span span;
} dtl_subscript;

/* Expressions nest at most this deep (the parser reports deeper ones and drops them), so
 * every recursive walk over a tree is bounded. */
#define DTL_AST_MAX_DEPTH 256

struct dtl_expr {
    dtl_expr_kind kind;
    dtl_span span;
    uint32_t depth;             /* 1 for a leaf; 1 + the deepest child otherwise */
    const char *text;           /* spelling, for literals (INT, FLOAT, STRING) */
    union {
        int64_t ival;
        double fval;
        struct { const char *bytes; size_t len; } str;
        bool bval;
        dtl_ident name;
        dtl_dtype dtype;
        struct { dtl_expr *base; dtl_ident field; } member;
        struct { dtl_expr *callee; dtl_arg *args; size_t nargs; } call;
        struct { dtl_expr *base; dtl_subscript *subs; size_t nsubs; } index;
        struct { dtl_unop op; dtl_expr *operand; } unary;
        struct { dtl_binop op; dtl_span op_span; dtl_expr *lhs, *rhs; } binary;
        struct { dtl_expr **elems; size_t nelems; } tensor;
        dtl_expr *paren;
    } u;
    /* checker */
    struct dtl_type *type;      /* inferred type; NULL before checking or after an error */
    struct dtl_sym *sym;        /* NAME, MEMBER: what the name resolved to */
};

/* ---- Declarations and statements ---- */

typedef enum dtl_decl_kind {
    DTL_DECL_USE,       /* use nn | use a.b                       u.use */
    DTL_DECL_MODEL,     /* model NAME(params) { items }           u.model */
    DTL_DECL_FN,        /* fn NAME(params) -> T = e | { body }    u.fn */
    DTL_DECL_DATASET,   /* dataset NAME = expr                    u.bind (type NULL) */
    DTL_DECL_TRAIN,     /* train [NAME =] Model(args) { items }   u.train */
    DTL_DECL_LET,       /* let NAME [: T] = expr  (top level, or in a fn block)  u.bind */
    DTL_DECL_PARAM,     /* param NAME : T [= init]   (model body)   u.bind */
    DTL_DECL_MEMBER,    /* NAME = expr   (model body: a submodel or a constant)  u.bind */
    DTL_DECL_SETTING,   /* NAME = expr   (train body)               u.bind */
    DTL_DECL_SHARD,     /* shard path along axis   (train body)     u.shard */
    DTL_DECL_STAGE,     /* stage N: path, path     (train body)     u.stage */
    DTL_DECL_RETURN,    /* return expr  (fn block)                  u.expr */
    DTL_DECL_EXPR,      /* expr         (fn block; the last one is the block's value) u.expr */
} dtl_decl_kind;

/* A parameter of a model constructor or a function: NAME [: T] [= default]. */
typedef struct dtl_fparam {
    dtl_ident name;
    dtl_texpr *type;      /* NULL when not written */
    dtl_expr *deflt;      /* NULL when not written */
} dtl_fparam;

typedef struct dtl_decl dtl_decl;
struct dtl_decl {
    dtl_decl_kind kind;
    dtl_span span;        /* the whole declaration */
    dtl_ident name;       /* MODEL FN DATASET LET PARAM MEMBER SETTING; TRAIN if named */
    union {
        struct { dtl_ident *parts; size_t nparts; } use;
        struct {
            dtl_fparam *params; size_t nparams;
            dtl_decl **items; size_t nitems;        /* PARAM MEMBER FN LET */
        } model;
        struct {
            dtl_fparam *params; size_t nparams;
            dtl_texpr *ret;                         /* NULL when not written */
            bool is_block;
            dtl_expr *expr;                         /* `= expr` form */
            dtl_decl **body; size_t nbody;          /* block form: LET RETURN EXPR */
        } fn;
        struct {
            dtl_texpr *type; dtl_expr *value;   /* value NULL: param w/o init */
            bool state;                         /* PARAM: declared with `state` (not trained) */
        } bind;
        struct {
            dtl_expr *model;                        /* NAME or CALL of a model */
            dtl_decl **items; size_t nitems;        /* SETTING SHARD STAGE */
        } train;
        struct { dtl_expr *path; dtl_expr *axis; } shard;
        struct { dtl_expr *index; dtl_expr **paths; size_t npaths; } stage;
        dtl_expr *expr;
    } u;
    /* checker */
    struct dtl_sym *sym;  /* the symbol this declaration defines, if any */
};

typedef struct dtl_file {
    const dtl_source *src;
    dtl_decl **decls;
    size_t ndecls;
} dtl_file;

/* ---- Constructors (lang/ast.c). Spans are given by the parser. ---- */

dtl_expr *dtl_ast_expr(dtl_ctx *ctx, dtl_expr_kind kind, dtl_span span);
dtl_expr *dtl_ast_binary(dtl_ctx *ctx, dtl_binop op, dtl_expr *lhs, dtl_expr *rhs,
                         dtl_span op_span);
dtl_expr *dtl_ast_unary(dtl_ctx *ctx, dtl_unop op, dtl_expr *operand, dtl_span op_span);
/* Sets e->depth from its children's depths (for nodes filled in after dtl_ast_expr) and
 * returns it. */
uint32_t dtl_ast_expr_depth(dtl_expr *e);
dtl_texpr *dtl_ast_texpr(dtl_ctx *ctx, dtl_texpr_kind kind, dtl_span span);
dtl_decl *dtl_ast_decl(dtl_ctx *ctx, dtl_decl_kind kind, dtl_span span);

/* Names for printing and messages. */
const char *dtl_binop_text(dtl_binop op);     /* "+", "@", "and", … */
bool dtl_binop_is_cmp(dtl_binop op);          /* < <= > >= == != */
bool dtl_binop_cmp(dtl_binop op, double x, double y);   /* a comparison on numbers */
/* b ** e for e >= 0; false on overflow. */
bool dtl_int_pow(int64_t b, int64_t e, int64_t *out);
const char *dtl_decl_kind_name(dtl_decl_kind k);   /* "model", "fn", … */

#endif
