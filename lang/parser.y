/* lang/parser.y — the grammar of .dtl (Lemon: `lemon -T<lempar.c> -d<dir> parser.y`).
 *
 * GRAMMAR SUMMARY (docs/language.md has the full description; SEP is a newline that ends a
 * statement, or a ';': see the newline rule in lexer.re, which also implies a SEP before
 * every '}' and at the end of the file, so the last statement of a block needs none):
 *
 *   file        := { item SEP }
 *   item        := use | model | fn | dataset | train | let
 *   use         := 'use' IDENT { '.' IDENT }
 *   model       := 'model' IDENT [ '(' [ fparams ] ')' ] '{' { model_item SEP } '}'
 *   model_item  := 'param' IDENT ':' type [ '=' expr ]          PARAM
 *                | 'state' IDENT ':' type '=' expr                PARAM (u.bind.state)
 *                | IDENT '=' expr                                MEMBER (submodel, constant)
 *                | let | fn
 *   fn          := 'fn' IDENT '(' [ fparams ] ')' [ '->' type ] ( '=' expr | block )
 *   block       := '{' { stmt SEP } '}'
 *   stmt        := let | 'return' expr | expr
 *   let         := 'let' IDENT [ ':' type ] '=' expr
 *   fparams     := fparam { ',' fparam } [ ',' ]
 *   fparam      := IDENT [ ':' type ] [ '=' expr ]
 *   dataset     := 'dataset' IDENT '=' expr
 *   train       := 'train' [ IDENT '=' ] expr '{' { setting SEP } '}'
 *   setting     := IDENT '=' expr                                SETTING
 *                | 'shard' expr 'along' expr                     SHARD
 *                | 'stage' expr ':' expr { ',' expr }            STAGE
 *   type        := 'int' | 'float' | 'str' | 'bool'              host values
 *                | dtype [ '[' [ expr { ',' expr } ] ']' ]       tensors (`f32` alone: rank 0)
 *   dtype       := 'f32' | 'f64' | 'f16' | 'bf16' | 'i32' | 'i64' | 'bool'
 *   expr        := expr 'or' expr | expr 'and' expr | 'not' expr
 *                | expr ('<' | '<=' | '>' | '>=' | '==' | '!=') expr   (non-associative)
 *                | expr ('+' | '-') expr | expr ('*' | '/' | '@') expr
 *                | '-' expr | expr '**' expr (right-associative, binds tighter than '-x')
 *                | postfix
 *   postfix     := primary | postfix '(' [ args ] ')' | postfix '[' subs ']'
 *                | postfix '.' IDENT
 *   primary     := INT | FLOAT | STRING | 'true' | 'false' | IDENT | dtype
 *                | '(' expr ')' | '[' [ expr { ',' expr } [ ',' ] ] ']'
 *   args        := arg { ',' arg } [ ',' ]        arg := expr | IDENT '=' expr
 *                  (a positional argument after a named one is an error)
 *   subs        := sub { ',' sub }                sub := expr | [expr] ':' [expr] [ ':' [expr] ]
 *
 * Precedence, lowest first: or; and; not; comparisons; + -; * / @; unary -; **; postfix.
 *
 * Design. Actions are one line and call constructors in lang/ast.c or the small helpers in
 * the %include section. Lists are left-recursive and built on scratch stacks, copied into
 * exact arrays when their node is made. Nodes live in the compilation's arena, so no
 * %destructor is needed: symbols popped by error recovery simply become garbage that the
 * arena frees with the rest.
 *
 * Errors and recovery. The lexer feeds the parser through the driver at the end of this
 * file (dtl_parse). %syntax_error reports "expected X, found Y", where X is computed by
 * running the LALR automaton on a copy of the state stack for every terminal (see
 * parser_accepts), then summarized ("an expression", "an operator", "a type"…). The driver
 * asks that question for each token before handing it to Lemon, because Lemon's default
 * reductions would otherwise narrow the stack before the error shows (after `fn f(a`, both
 * ')' and ',' are possible, not only ')'); it costs about as much as the parsing itself. Each
 * statement list has an `error` alternative, so Lemon pops to the innermost statement
 * list; the driver then skips tokens up to the SEP that ends the broken statement (at its
 * bracket level) or the '}' that closes its block, and then the lines indented deeper than
 * the statement (the body of a header that lost its '{'). "One error per statement": a
 * flag per block level (broken[]) is set by the first error in a statement (a syntax error,
 * a token the lexer reported, an error found by an action) and silences the others; the
 * statement is then dropped when its list would take it, which clears the flag. Deep
 * expressions are reported by depth (computed in the constructors); the parser stack is
 * bounded (%stack_size), and overflowing it reports the same error and gives up the file.
 */

%name dtl_lemon
%token_prefix DTL_TK_
%token_type { dtl_token }
%extra_context { dtl_parser *ps }
%start_symbol file
/* Kept expressions are at most DTL_AST_MAX_DEPTH deep, which needs well under 5000 entries
 * (a few per level); a deeper prefix or '**' chain overflows, and is reported. */
%stack_size 5000

%include {
/* Tracing in the Lemon driver uses mutable globals: off unless asked for. */
#ifndef DTL_PARSER_TRACE
#define NDEBUG 1
#endif
#define dtl_lemon_ENGINEALWAYSONSTACK 1

#include <assert.h>
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>

#include "ast.h"
#include "lexer.h"
#include "parse.h"

/* Lists under construction (see "lists" below). */
typedef struct plist {
    uint32_t start, len;
} plist;

typedef union pslot {
    dtl_arg arg;
    dtl_fparam fparam;
    dtl_subscript sub;
    dtl_ident ident;
} pslot;

typedef struct pstack {
    void *data;
    size_t elsize;
    uint32_t top, cap;
} pstack;

/* Statement nesting: top level, model/train/fn body, fn body in a model. More levels only
 * happen in broken input; they share the last flag. */
enum { PARSER_LEVELS = 8 };

typedef struct dtl_parser {
    dtl_ctx *ctx;
    dtl_lexer lx;
    dtl_ptrvec items;             /* top-level declarations so far */
    pstack ptrs, slots;           /* lists under construction */
    bool broken[PARSER_LEVELS];   /* the current statement at this level had an error */
    bool had_error;               /* a syntax error in the current token */
    bool reported;                /* and the driver has already dealt with it */
    bool at_start;                /* the next token starts a statement */
    uint32_t stmt_indent;         /* indentation of the current statement's first line */
    uint32_t indent_line, indent; /* parser_indent's cache */
    bool abandon;                 /* the parser stack overflowed: give up the file */
    dtl_token tok;                /* the token being fed */
} dtl_parser;

struct yyParser;
static int parser_level(struct yyParser *p);
__attribute__((format(printf, 4, 5)))
static bool parser_error(dtl_parser *ps, struct yyParser *p, dtl_span at, const char *fmt, ...);

#define CTX (ps->ctx)
#define ARENA (&ps->ctx->arena)
#define CHK(e) expr_check(ps, yypParser, (e))

/* ---- lists ----
 * A list under construction is a range of one of two scratch stacks (pointers, or the
 * small structs args/fparams/subscripts/identifiers are made of); when its node is made,
 * the range is copied into an exact arena array and popped. Lists nest like the syntax, so
 * a list's range is always contiguous: appending to a list first drops whatever an
 * abandoned inner list (a syntax error) left above it. The scratch stacks are reused for
 * the whole file, so lists cost only their final arrays. */

static plist list_empty(const pstack *st)
{
    return (plist){st->top, 0};
}

static void *list_slot(dtl_parser *ps, pstack *st, plist *l)
{
    st->top = l->start + l->len;
    if (st->top == st->cap) {
        uint32_t cap = st->cap ? 2 * st->cap : 64;
        st->data = dtl_arena_grow(ARENA, st->data, st->top, cap, st->elsize);
        st->cap = cap;
    }
    l->len++;
    return (char *)st->data + (size_t)st->top++ * st->elsize;
}

/* Pops the list (a list's elements are the last ones pushed) and returns its first
 * element (NULL when empty), in the scratch stack (valid until the next push). */
static void *list_pop(pstack *st, plist l)
{
    if (l.start < st->top)
        st->top = l.start;
    return l.len ? (char *)st->data + (size_t)l.start * st->elsize : NULL;
}

/* The list's elements in an exact arena array (NULL when empty), popped. */
static void *list_take(dtl_parser *ps, pstack *st, plist l, size_t *n)
{
    const char *src = list_pop(st, l);
    *n = l.len;
    if (!l.len)
        return NULL;
    void *a = dtl_arena_array(ARENA, l.len, st->elsize);
    memcpy(a, src, (size_t)l.len * st->elsize);
    return a;
}

static plist ptrs_add(dtl_parser *ps, plist l, void *x)
{
    *(void **)list_slot(ps, &ps->ptrs, &l) = x;
    return l;
}

#define PTRS_EMPTY list_empty(&ps->ptrs)
#define SLOTS_EMPTY list_empty(&ps->slots)

static dtl_expr **list_exprs(dtl_parser *ps, plist l, size_t *n)
{
    return list_take(ps, &ps->ptrs, l, n);
}

static dtl_decl **list_decls(dtl_parser *ps, plist l, size_t *n)
{
    return list_take(ps, &ps->ptrs, l, n);
}

/* Struct lists take whole slots; this copies the members out. */
static void *list_structs(dtl_parser *ps, plist l, size_t *n, size_t size)
{
    const pslot *slots = list_pop(&ps->slots, l);
    *n = l.len;
    if (!l.len)
        return NULL;
    char *a = dtl_arena_array(ARENA, l.len, size);
    for (size_t i = 0; i < l.len; i++)
        memcpy(a + i * size, &slots[i], size);
    return a;
}

/* A statement for a statement list, unless it is broken (then it is dropped and the
 * level's flag cleared). */
static plist stmt_push(dtl_parser *ps, struct yyParser *p, plist l, dtl_decl *d)
{
    int level = parser_level(p);
    bool broken = ps->broken[level];
    for (int i = level; i < PARSER_LEVELS; i++)
        ps->broken[i] = false;
    if (d && !broken)
        l = ptrs_add(ps, l, d);
    return l;
}

static void top_push(dtl_parser *ps, struct yyParser *p, dtl_decl *d)
{
    int level = parser_level(p);
    bool broken = ps->broken[level];
    for (int i = level; i < PARSER_LEVELS; i++)
        ps->broken[i] = false;
    if (d && !broken)
        dtl_ptrvec_push(ARENA, &ps->items, d);
}

/* ---- expressions ---- */

static dtl_expr *expr_check(dtl_parser *ps, struct yyParser *p, dtl_expr *e)
{
    if (e->depth == DTL_AST_MAX_DEPTH + 1) {
        parser_error(ps, p, e->span, "expression is nested too deeply (more than %d levels)",
                     DTL_AST_MAX_DEPTH);
        /* A long chain `a + b + c …` nests too: each operator is a level. */
        if (e->kind == DTL_EXPR_BINARY)
            dtl_diag_note(&CTX->diags, e->u.binary.op_span,
                          "each operator of a chain like `a + b + c` is a level; split the "
                          "chain with let bindings (let s1 = a + b …)");
    }
    return e;
}

static dtl_expr *expr_lit(dtl_parser *ps, dtl_expr_kind kind, const dtl_token *t)
{
    dtl_expr *e = dtl_ast_expr(CTX, kind, t->span);
    e->text = t->text;
    switch (kind) {
    case DTL_EXPR_INT: e->u.ival = t->v.ival; break;
    case DTL_EXPR_FLOAT: e->u.fval = t->v.fval; break;
    case DTL_EXPR_STRING:
        e->u.str.bytes = t->v.str.bytes;
        e->u.str.len = t->v.str.len;
        break;
    case DTL_EXPR_NAME: e->u.name = (dtl_ident){t->text, t->span}; break;
    case DTL_EXPR_DTYPE: e->u.dtype = t->v.dtype; e->text = NULL; break;
    default: break;
    }
    return e;
}

static dtl_expr *expr_bool(dtl_parser *ps, const dtl_token *t, bool v)
{
    dtl_expr *e = dtl_ast_expr(CTX, DTL_EXPR_BOOL, t->span);
    e->u.bval = v;
    return e;
}

static dtl_expr *expr_bin(dtl_parser *ps, dtl_binop op, dtl_expr *l, dtl_expr *r,
                          const dtl_token *o)
{
    return dtl_ast_binary(CTX, op, l, r, o->span);
}

static dtl_expr *expr_cmp(dtl_parser *ps, struct yyParser *p, dtl_binop op, dtl_expr *l,
                          dtl_expr *r, const dtl_token *o)
{
    if (l->kind == DTL_EXPR_BINARY && l->u.binary.op >= DTL_BINOP_LT &&
        l->u.binary.op <= DTL_BINOP_NE)
        parser_error(ps, p, o->span,
                     "comparisons cannot be chained: found '%s' after '%s' (combine "
                     "comparisons with 'and', or add parentheses)",
                     dtl_binop_text(op), dtl_binop_text(l->u.binary.op));
    return dtl_ast_binary(CTX, op, l, r, o->span);
}

static dtl_expr *expr_member(dtl_parser *ps, dtl_expr *base, const dtl_token *name)
{
    dtl_expr *e = dtl_ast_expr(CTX, DTL_EXPR_MEMBER, dtl_span_join(base->span, name->span));
    e->u.member.base = base;
    e->u.member.field = (dtl_ident){name->text, name->span};
    dtl_ast_expr_depth(e);
    return e;
}

static dtl_expr *expr_call(dtl_parser *ps, dtl_expr *callee, plist args,
                           const dtl_token *close)
{
    dtl_expr *e = dtl_ast_expr(CTX, DTL_EXPR_CALL, dtl_span_join(callee->span, close->span));
    e->u.call.callee = callee;
    e->u.call.args = list_structs(ps, args, &e->u.call.nargs, sizeof(dtl_arg));
    dtl_ast_expr_depth(e);
    return e;
}

static dtl_expr *expr_index(dtl_parser *ps, dtl_expr *base, plist subs,
                            const dtl_token *close)
{
    dtl_expr *e = dtl_ast_expr(CTX, DTL_EXPR_INDEX, dtl_span_join(base->span, close->span));
    e->u.index.base = base;
    e->u.index.subs = list_structs(ps, subs, &e->u.index.nsubs, sizeof(dtl_subscript));
    dtl_ast_expr_depth(e);
    return e;
}

static dtl_expr *expr_tensor(dtl_parser *ps, const dtl_token *open, plist elems,
                             const dtl_token *close)
{
    dtl_expr *e = dtl_ast_expr(CTX, DTL_EXPR_TENSOR, dtl_span_join(open->span, close->span));
    e->u.tensor.elems = list_exprs(ps, elems, &e->u.tensor.nelems);
    dtl_ast_expr_depth(e);
    return e;
}

static dtl_expr *expr_paren(dtl_parser *ps, const dtl_token *open, dtl_expr *inner,
                            const dtl_token *close)
{
    dtl_expr *e = dtl_ast_expr(CTX, DTL_EXPR_PAREN, dtl_span_join(open->span, close->span));
    e->u.paren = inner;
    dtl_ast_expr_depth(e);
    return e;
}

static dtl_arg arg_of(const dtl_token *name, dtl_expr *value)
{
    dtl_arg a = {.value = value};
    if (name)
        a.name = (dtl_ident){name->text, name->span};
    return a;
}

static plist args_add(dtl_parser *ps, struct yyParser *p, plist l, dtl_arg a)
{
    if (l.len && !a.name.text) {
        const pslot *last = (const pslot *)ps->slots.data + l.start + l.len - 1;
        if (last->arg.name.text &&
            parser_error(ps, p, a.value->span, "positional argument after named argument"))
            dtl_diag_note(&CTX->diags, last->arg.name.span, "the named argument is here");
    }
    ((pslot *)list_slot(ps, &ps->slots, &l))->arg = a;
    return l;
}

static plist subs_add(dtl_parser *ps, plist l, dtl_subscript s)
{
    ((pslot *)list_slot(ps, &ps->slots, &l))->sub = s;
    return l;
}

static dtl_subscript sub_index(dtl_expr *e)
{
    return (dtl_subscript){.value = e, .span = e->span};
}

static dtl_subscript sub_slice(dtl_expr *start, const dtl_token *c1, dtl_expr *stop,
                               const dtl_token *c2, dtl_expr *step)
{
    dtl_span end = step ? step->span : c2 ? c2->span : stop ? stop->span : c1->span;
    return (dtl_subscript){
        .is_slice = true, .start = start, .stop = stop, .step = step, .has_step = c2 != NULL,
        .span = dtl_span_join(start ? start->span : c1->span, end),
    };
}

/* ---- types ---- */

static dtl_texpr *type_host(dtl_parser *ps, dtl_texpr_kind kind, const dtl_token *t)
{
    return dtl_ast_texpr(CTX, kind, t->span);
}

static dtl_texpr *type_tensor(dtl_parser *ps, const dtl_token *dt, plist dims,
                              const dtl_token *close)
{
    dtl_texpr *t = dtl_ast_texpr(CTX, DTL_TEXPR_TENSOR,
                                 close ? dtl_span_join(dt->span, close->span) : dt->span);
    t->dtype = dt->v.dtype;
    t->has_dims = close != NULL;
    t->dims = list_exprs(ps, dims, &t->ndims);
    return t;
}

/* ---- declarations ---- */

static dtl_ident ident_of(const dtl_token *t)
{
    return (dtl_ident){t->text, t->span};
}

static plist idents_add(dtl_parser *ps, plist l, const dtl_token *t)
{
    ((pslot *)list_slot(ps, &ps->slots, &l))->ident = ident_of(t);
    return l;
}

static dtl_fparam fparam_of(const dtl_token *name, dtl_texpr *type, dtl_expr *deflt)
{
    return (dtl_fparam){.name = ident_of(name), .type = type, .deflt = deflt};
}

static plist fparams_add(dtl_parser *ps, plist l, dtl_fparam f)
{
    ((pslot *)list_slot(ps, &ps->slots, &l))->fparam = f;
    return l;
}

static dtl_decl *decl_use(dtl_parser *ps, const dtl_token *kw, plist path)
{
    dtl_decl *d = dtl_ast_decl(CTX, DTL_DECL_USE, kw->span);
    d->u.use.parts = list_structs(ps, path, &d->u.use.nparts, sizeof(dtl_ident));
    d->name = d->u.use.parts[d->u.use.nparts - 1];
    d->span = dtl_span_join(kw->span, d->name.span);
    return d;
}

static dtl_decl *decl_bind(dtl_parser *ps, dtl_decl_kind kind, dtl_span start,
                           const dtl_token *name, dtl_texpr *type, dtl_expr *value)
{
    dtl_span end = value ? value->span : type ? type->span : name->span;
    dtl_decl *d = dtl_ast_decl(CTX, kind, dtl_span_join(start, end));
    d->name = ident_of(name);
    d->u.bind.type = type;
    d->u.bind.value = value;
    return d;
}

/* (Lists are taken newest first: the body, then the parameters before it.) */
static dtl_decl *decl_model(dtl_parser *ps, const dtl_token *kw, const dtl_token *name,
                            plist params, plist items, const dtl_token *close)
{
    dtl_decl *d = dtl_ast_decl(CTX, DTL_DECL_MODEL, dtl_span_join(kw->span, close->span));
    d->name = ident_of(name);
    d->u.model.items = list_decls(ps, items, &d->u.model.nitems);
    d->u.model.params = list_structs(ps, params, &d->u.model.nparams, sizeof(dtl_fparam));
    return d;
}

static dtl_decl *decl_fn(dtl_parser *ps, const dtl_token *kw, const dtl_token *name,
                         plist params, dtl_texpr *ret, dtl_expr *e, plist body,
                         const dtl_token *close)
{
    dtl_decl *d = dtl_ast_decl(CTX, DTL_DECL_FN,
                               dtl_span_join(kw->span, close ? close->span : e->span));
    d->name = ident_of(name);
    d->u.fn.body = list_decls(ps, body, &d->u.fn.nbody);
    d->u.fn.params = list_structs(ps, params, &d->u.fn.nparams, sizeof(dtl_fparam));
    d->u.fn.ret = ret;
    d->u.fn.is_block = close != NULL;
    d->u.fn.expr = e;
    return d;
}

static dtl_decl *decl_train(dtl_parser *ps, const dtl_token *kw, const dtl_token *name,
                            dtl_expr *model, plist items, const dtl_token *close)
{
    dtl_decl *d = dtl_ast_decl(CTX, DTL_DECL_TRAIN, dtl_span_join(kw->span, close->span));
    if (name)
        d->name = ident_of(name);
    d->u.train.model = model;
    d->u.train.items = list_decls(ps, items, &d->u.train.nitems);
    return d;
}

static dtl_decl *decl_shard(dtl_parser *ps, const dtl_token *kw, dtl_expr *path,
                            dtl_expr *axis)
{
    dtl_decl *d = dtl_ast_decl(CTX, DTL_DECL_SHARD, dtl_span_join(kw->span, axis->span));
    d->u.shard.path = path;
    d->u.shard.axis = axis;
    return d;
}

static dtl_decl *decl_stage(dtl_parser *ps, const dtl_token *kw, dtl_expr *index, plist paths)
{
    dtl_decl *d = dtl_ast_decl(CTX, DTL_DECL_STAGE, kw->span);
    d->u.stage.index = index;
    d->u.stage.paths = list_exprs(ps, paths, &d->u.stage.npaths);
    d->span = dtl_span_join(kw->span, d->u.stage.paths[d->u.stage.npaths - 1]->span);
    return d;
}

static dtl_decl *decl_expr(dtl_parser *ps, dtl_decl_kind kind, dtl_span start, dtl_expr *e)
{
    dtl_decl *d = dtl_ast_decl(CTX, kind, dtl_span_join(start, e->span));
    d->u.expr = e;
    return d;
}

static void parser_lemon_error(dtl_parser *ps, struct yyParser *p, int major,
                               const dtl_token *tok);
static void parser_stack_overflow(dtl_parser *ps);
}

%syntax_error { parser_lemon_error(ps, yypParser, yymajor, &TOKEN); }
%stack_overflow { parser_stack_overflow(ps); }
/* Nothing to undo: finished declarations are already in ps->items. */
%parse_failure { (void)ps; }
/* No %destructor: every value is a node or token text in the arena, freed with it. This
 * no-op only keeps Lemon's yy_destructor free of unused-variable warnings. */
%token_destructor { (void)ps; (void)yypminor; }

/* SEP: statement separator (from the lexer's newline rule); ILLEGAL: a character that
 * starts no token (never accepted; the lexer has reported it). */
%token SEP ILLEGAL.

%left OR.
%left AND.
%right NOT.
/* Comparisons do not chain; the grammar takes them as left-associative and expr_cmp reports
 * `a < b < c`, with a better message than %nonassoc's syntax error would get. */
%left LT LE GT GE EQEQ NE.
%left PLUS MINUS.
%left STAR SLASH AT.
%right UMINUS.
%right POW.

/* ---- files and declarations ---- */

file ::= items.

items ::= .
items ::= items item(D) SEP.                           { top_push(ps, yypParser, D); }

%type item { dtl_decl * }
item(A) ::= error.                                     { A = NULL; }
item(A) ::= USE(K) path(P).                            { A = decl_use(ps, &K, P); }
item(A) ::= model(D).                                  { A = D; }
item(A) ::= fn(D).                                     { A = D; }
item(A) ::= DATASET(K) IDENT(N) EQ expr(E).            { A = decl_bind(ps, DTL_DECL_DATASET, K.span, &N, NULL, E); }
item(A) ::= train(D).                                  { A = D; }
item(A) ::= let(D).                                    { A = D; }

%type path { plist }
path(A) ::= IDENT(N).                                  { A = idents_add(ps, SLOTS_EMPTY, &N); }
path(A) ::= path(B) DOT IDENT(N).                      { A = idents_add(ps, B, &N); }

%type model { dtl_decl * }
model(A) ::= MODEL(K) IDENT(N) LBRACE mitems(L) RBRACE(R).                          { A = decl_model(ps, &K, &N, SLOTS_EMPTY, L, &R); }
model(A) ::= MODEL(K) IDENT(N) LPAREN fparams(P) RPAREN LBRACE mitems(L) RBRACE(R). { A = decl_model(ps, &K, &N, P, L, &R); }

%type mitems { plist }
mitems(A) ::= .                                        { A = PTRS_EMPTY; }
mitems(A) ::= mitems(B) mitem(D) SEP.                  { A = stmt_push(ps, yypParser, B, D); }

%type mitem { dtl_decl * }
mitem(A) ::= error.                                    { A = NULL; }
mitem(A) ::= PARAM(K) IDENT(N) COLON type(T).          { A = decl_bind(ps, DTL_DECL_PARAM, K.span, &N, T, NULL); }
mitem(A) ::= PARAM(K) IDENT(N) COLON type(T) EQ expr(E). { A = decl_bind(ps, DTL_DECL_PARAM, K.span, &N, T, E); }
mitem(A) ::= STATE(K) IDENT(N) COLON type(T) EQ expr(E). { A = decl_bind(ps, DTL_DECL_PARAM, K.span, &N, T, E); if (A) A->u.bind.state = true; }
mitem(A) ::= IDENT(N) EQ expr(E).                      { A = decl_bind(ps, DTL_DECL_MEMBER, N.span, &N, NULL, E); }
mitem(A) ::= let(D).                                   { A = D; }
mitem(A) ::= fn(D).                                    { A = D; }

%type fparams { plist }
fparams(A) ::= .                                       { A = SLOTS_EMPTY; }
fparams(A) ::= fplist(L).                              { A = L; }
fparams(A) ::= fplist(L) COMMA.                        { A = L; }

%type fplist { plist }
fplist(A) ::= fparam(F).                               { A = fparams_add(ps, SLOTS_EMPTY, F); }
fplist(A) ::= fplist(L) COMMA fparam(F).               { A = fparams_add(ps, L, F); }

%type fparam { dtl_fparam }
fparam(A) ::= IDENT(N).                                { A = fparam_of(&N, NULL, NULL); }
fparam(A) ::= IDENT(N) COLON type(T).                  { A = fparam_of(&N, T, NULL); }
fparam(A) ::= IDENT(N) EQ expr(E).                     { A = fparam_of(&N, NULL, E); }
fparam(A) ::= IDENT(N) COLON type(T) EQ expr(E).       { A = fparam_of(&N, T, E); }

%type fn { dtl_decl * }
fn(A) ::= FN(K) IDENT(N) LPAREN fparams(P) RPAREN ret(T) EQ expr(E).                 { A = decl_fn(ps, &K, &N, P, T, E, PTRS_EMPTY, NULL); }
fn(A) ::= FN(K) IDENT(N) LPAREN fparams(P) RPAREN ret(T) LBRACE stmts(L) RBRACE(R).  { A = decl_fn(ps, &K, &N, P, T, NULL, L, &R); }

%type ret { dtl_texpr * }
ret(A) ::= .                                           { A = NULL; }
ret(A) ::= ARROW type(T).                              { A = T; }

%type stmts { plist }
stmts(A) ::= .                                         { A = PTRS_EMPTY; }
stmts(A) ::= stmts(B) stmt(D) SEP.                     { A = stmt_push(ps, yypParser, B, D); }

%type stmt { dtl_decl * }
stmt(A) ::= error.                                     { A = NULL; }
stmt(A) ::= let(D).                                    { A = D; }
stmt(A) ::= RETURN(K) expr(E).                         { A = decl_expr(ps, DTL_DECL_RETURN, K.span, E); }
stmt(A) ::= expr(E).                                   { A = decl_expr(ps, DTL_DECL_EXPR, E->span, E); }

%type let { dtl_decl * }
let(A) ::= LET(K) IDENT(N) EQ expr(E).                 { A = decl_bind(ps, DTL_DECL_LET, K.span, &N, NULL, E); }
let(A) ::= LET(K) IDENT(N) COLON type(T) EQ expr(E).   { A = decl_bind(ps, DTL_DECL_LET, K.span, &N, T, E); }

%type train { dtl_decl * }
train(A) ::= TRAIN(K) expr(M) LBRACE settings(L) RBRACE(R).             { A = decl_train(ps, &K, NULL, M, L, &R); }
train(A) ::= TRAIN(K) IDENT(N) EQ expr(M) LBRACE settings(L) RBRACE(R). { A = decl_train(ps, &K, &N, M, L, &R); }

%type settings { plist }
settings(A) ::= .                                      { A = PTRS_EMPTY; }
settings(A) ::= settings(B) setting(D) SEP.            { A = stmt_push(ps, yypParser, B, D); }

%type setting { dtl_decl * }
setting(A) ::= error.                                  { A = NULL; }
setting(A) ::= IDENT(N) EQ expr(E).                    { A = decl_bind(ps, DTL_DECL_SETTING, N.span, &N, NULL, E); }
setting(A) ::= SHARD(K) expr(P) ALONG expr(X).         { A = decl_shard(ps, &K, P, X); }
setting(A) ::= STAGE(K) expr(I) COLON elist(L).        { A = decl_stage(ps, &K, I, L); }

/* ---- types ---- */

%type type { dtl_texpr * }
type(A) ::= KW_INT(K).                                 { A = type_host(ps, DTL_TEXPR_INT, &K); }
type(A) ::= KW_FLOAT(K).                               { A = type_host(ps, DTL_TEXPR_FLOAT, &K); }
type(A) ::= KW_STR(K).                                 { A = type_host(ps, DTL_TEXPR_STR, &K); }
type(A) ::= KW_BOOL(K).                                { A = type_host(ps, DTL_TEXPR_BOOL, &K); }
type(A) ::= DTYPE(K).                                  { A = type_tensor(ps, &K, PTRS_EMPTY, NULL); }
type(A) ::= DTYPE(K) LBRACKET dims(L) RBRACKET(R).     { A = type_tensor(ps, &K, L, &R); }
type(A) ::= KW_BOOL(K) LBRACKET dims(L) RBRACKET(R).   { A = type_tensor(ps, &K, L, &R); }

%type dims { plist }
dims(A) ::= .                                          { A = PTRS_EMPTY; }
dims(A) ::= elist(L).                                  { A = L; }

%type elist { plist }
elist(A) ::= expr(E).                                  { A = ptrs_add(ps, PTRS_EMPTY, E); }
elist(A) ::= elist(L) COMMA expr(E).                   { A = ptrs_add(ps, L, E); }

/* ---- expressions ---- */

%type expr { dtl_expr * }
expr(A) ::= postfix(E).                                { A = E; }
expr(A) ::= expr(L) OR(O) expr(R).                     { A = CHK(expr_bin(ps, DTL_BINOP_OR, L, R, &O)); }
expr(A) ::= expr(L) AND(O) expr(R).                    { A = CHK(expr_bin(ps, DTL_BINOP_AND, L, R, &O)); }
expr(A) ::= NOT(O) expr(E).                            { A = CHK(dtl_ast_unary(CTX, DTL_UNOP_NOT, E, O.span)); }
expr(A) ::= expr(L) LT(O) expr(R).                     { A = CHK(expr_cmp(ps, yypParser, DTL_BINOP_LT, L, R, &O)); }
expr(A) ::= expr(L) LE(O) expr(R).                     { A = CHK(expr_cmp(ps, yypParser, DTL_BINOP_LE, L, R, &O)); }
expr(A) ::= expr(L) GT(O) expr(R).                     { A = CHK(expr_cmp(ps, yypParser, DTL_BINOP_GT, L, R, &O)); }
expr(A) ::= expr(L) GE(O) expr(R).                     { A = CHK(expr_cmp(ps, yypParser, DTL_BINOP_GE, L, R, &O)); }
expr(A) ::= expr(L) EQEQ(O) expr(R).                   { A = CHK(expr_cmp(ps, yypParser, DTL_BINOP_EQ, L, R, &O)); }
expr(A) ::= expr(L) NE(O) expr(R).                     { A = CHK(expr_cmp(ps, yypParser, DTL_BINOP_NE, L, R, &O)); }
expr(A) ::= expr(L) PLUS(O) expr(R).                   { A = CHK(expr_bin(ps, DTL_BINOP_ADD, L, R, &O)); }
expr(A) ::= expr(L) MINUS(O) expr(R).                  { A = CHK(expr_bin(ps, DTL_BINOP_SUB, L, R, &O)); }
expr(A) ::= expr(L) STAR(O) expr(R).                   { A = CHK(expr_bin(ps, DTL_BINOP_MUL, L, R, &O)); }
expr(A) ::= expr(L) SLASH(O) expr(R).                  { A = CHK(expr_bin(ps, DTL_BINOP_DIV, L, R, &O)); }
expr(A) ::= expr(L) AT(O) expr(R).                     { A = CHK(expr_bin(ps, DTL_BINOP_MATMUL, L, R, &O)); }
expr(A) ::= MINUS(O) expr(E). [UMINUS]                 { A = CHK(dtl_ast_unary(CTX, DTL_UNOP_NEG, E, O.span)); }
expr(A) ::= expr(L) POW(O) expr(R).                    { A = CHK(expr_bin(ps, DTL_BINOP_POW, L, R, &O)); }

%type postfix { dtl_expr * }
postfix(A) ::= primary(E).                             { A = E; }
postfix(A) ::= postfix(F) LPAREN args(L) RPAREN(R).    { A = CHK(expr_call(ps, F, L, &R)); }
postfix(A) ::= postfix(B) LBRACKET subs(L) RBRACKET(R). { A = CHK(expr_index(ps, B, L, &R)); }
postfix(A) ::= postfix(B) DOT IDENT(N).                { A = CHK(expr_member(ps, B, &N)); }

%type args { plist }
args(A) ::= .                                          { A = SLOTS_EMPTY; }
args(A) ::= alist(L).                                  { A = L; }
args(A) ::= alist(L) COMMA.                            { A = L; }

%type alist { plist }
alist(A) ::= arg(G).                                   { A = args_add(ps, yypParser, SLOTS_EMPTY, G); }
alist(A) ::= alist(L) COMMA arg(G).                    { A = args_add(ps, yypParser, L, G); }

%type arg { dtl_arg }
arg(A) ::= expr(E).                                    { A = arg_of(NULL, E); }
arg(A) ::= IDENT(N) EQ expr(E).                        { A = arg_of(&N, E); }

%type subs { plist }
subs(A) ::= sub(S).                                    { A = subs_add(ps, SLOTS_EMPTY, S); }
subs(A) ::= subs(L) COMMA sub(S).                      { A = subs_add(ps, L, S); }

%type sub { dtl_subscript }
sub(A) ::= expr(E).                                    { A = sub_index(E); }
sub(A) ::= oexpr(S) COLON(C) oexpr(E).                 { A = sub_slice(S, &C, E, NULL, NULL); }
sub(A) ::= oexpr(S) COLON(C) oexpr(E) COLON(D) oexpr(T). { A = sub_slice(S, &C, E, &D, T); }

%type oexpr { dtl_expr * }
oexpr(A) ::= .                                         { A = NULL; }
oexpr(A) ::= expr(E).                                  { A = E; }

%type primary { dtl_expr * }
primary(A) ::= INTLIT(T).                              { A = expr_lit(ps, DTL_EXPR_INT, &T); }
primary(A) ::= FLOATLIT(T).                            { A = expr_lit(ps, DTL_EXPR_FLOAT, &T); }
primary(A) ::= STRING(T).                              { A = expr_lit(ps, DTL_EXPR_STRING, &T); }
primary(A) ::= TRUE(T).                                { A = expr_bool(ps, &T, true); }
primary(A) ::= FALSE(T).                               { A = expr_bool(ps, &T, false); }
primary(A) ::= IDENT(T).                               { A = expr_lit(ps, DTL_EXPR_NAME, &T); }
primary(A) ::= DTYPE(T).                               { A = expr_lit(ps, DTL_EXPR_DTYPE, &T); }
primary(A) ::= KW_BOOL(T).                             { A = expr_lit(ps, DTL_EXPR_DTYPE, &T); }
primary(A) ::= LPAREN(L) expr(E) RPAREN(R).            { A = CHK(expr_paren(ps, &L, E, &R)); }
primary(A) ::= LBRACKET(L) RBRACKET(R).                { A = expr_tensor(ps, &L, PTRS_EMPTY, &R); }
primary(A) ::= LBRACKET(L) elist(E) RBRACKET(R).       { A = CHK(expr_tensor(ps, &L, E, &R)); }
primary(A) ::= LBRACKET(L) elist(E) COMMA RBRACKET(R). { A = CHK(expr_tensor(ps, &L, E, &R)); }

%code {
/* ---- the driver ---- */

/* Block level of the parser: how many '{' are open on its stack. */
static int parser_level(yyParser *p)
{
    int n = 0;
    for (const yyStackEntry *e = p->yystack + 1; e <= p->yytos; e++)
        n += e->major == DTL_TK_LBRACE;
    return n < PARSER_LEVELS ? n : PARSER_LEVELS - 1;
}

/* Reports an error of the current statement unless it already has one. */
static bool parser_error(dtl_parser *ps, yyParser *p, dtl_span at, const char *fmt, ...)
{
    int level = parser_level(p);
    if (ps->broken[level])
        return false;
    ps->broken[level] = true;
    va_list ap;
    va_start(ap, fmt);
    char *msg = dtl_arena_vprintf(ARENA, fmt, ap);
    va_end(ap);
    dtl_diag_error(&CTX->diags, at, "%s", msg);
    return true;
}

/* Would the parser shift terminal tok (after whatever reductions it causes)? Runs the
 * automaton on the real stack without changing it: states pushed by the simulation go to a
 * small overlay above the part of the real stack still in use. */
static bool parser_accepts(const yyParser *p, YYCODETYPE tok)
{
    enum { OVERLAY = 64 };
    YYACTIONTYPE over[OVERLAY];
    int nover = 0;
    const yyStackEntry *base = p->yytos;
    YYACTIONTYPE state = p->yytos->stateno;
    for (int guard = 0; guard < 10000; guard++) {
        YYACTIONTYPE act = yy_find_shift_action(tok, state);
        if (act >= YY_MIN_REDUCE) {
            unsigned rule = act - YY_MIN_REDUCE;
            int pop = -yyRuleInfoNRhs[rule];
            while (pop > 0 && nover > 0)
                nover--, pop--;
            base -= pop;
            if (base < p->yystack)
                return false;
            YYACTIONTYPE below = nover ? over[nover - 1] : base->stateno;
            if (nover == OVERLAY)
                return true;   /* cannot happen with this grammar; err on the side of yes */
            state = over[nover++] = yy_find_reduce_action(below, yyRuleInfoLhs[rule]);
        } else if (act <= YY_MAX_SHIFTREDUCE) {
            return true;
        } else {
            return act == YY_ACCEPT_ACTION && tok == 0;
        }
    }
    return false;
}

/* "X", "X or Y", "X, Y or Z". */
static const char *join_or(dtl_parser *ps, const char *const *parts, int n)
{
    if (n == 0)
        return "something else";
    const char *s = parts[0];
    for (int i = 1; i < n; i++)
        s = dtl_arena_printf(ARENA, "%s%s%s", s, i == n - 1 ? " or " : ", ", parts[i]);
    return s;
}

/* What the parser could take instead of the current token, summarized. */
static const char *parser_expected(dtl_parser *ps, const yyParser *p)
{
    bool ok[YYNTOKEN];
    for (int t = 0; t < YYNTOKEN; t++)
        ok[t] = t != DTL_TK_ILLEGAL && parser_accepts(p, (YYCODETYPE)t);

    const char *parts[YYNTOKEN + 8];
    int n = 0;
#define OK(k) ok[DTL_TK_##k]
#define CLEAR(k) ok[DTL_TK_##k] = false
    if (OK(USE) && OK(MODEL) && OK(FN) && OK(DATASET) && OK(TRAIN) && OK(LET)) {
        parts[n++] = "a declaration ('use', 'model', 'fn', 'dataset', 'train' or 'let')";
        CLEAR(USE), CLEAR(MODEL), CLEAR(FN), CLEAR(DATASET), CLEAR(TRAIN), CLEAR(LET);
        ok[0] = false;
    }
    if (OK(PARAM) && OK(FN) && OK(LET) && OK(IDENT)) {
        parts[n++] = "a model member ('param', 'state', 'fn', 'let' or NAME = value)";
        CLEAR(PARAM), CLEAR(STATE), CLEAR(FN), CLEAR(LET), CLEAR(IDENT);
    }
    if (OK(SHARD) && OK(STAGE) && OK(IDENT)) {
        parts[n++] = "a setting (NAME = value, 'shard' or 'stage')";
        CLEAR(SHARD), CLEAR(STAGE), CLEAR(IDENT);
    }
    bool expr = OK(IDENT) && OK(INTLIT) && OK(FLOATLIT) && OK(STRING) && OK(LPAREN) &&
                OK(LBRACKET) && OK(MINUS) && OK(NOT);
    if (expr && OK(LET) && OK(RETURN)) {
        parts[n++] = "a statement ('let', 'return' or an expression)";
        CLEAR(LET), CLEAR(RETURN);
    } else if (expr) {
        parts[n++] = "an expression";
    }
    if (expr) {
        CLEAR(IDENT), CLEAR(INTLIT), CLEAR(FLOATLIT), CLEAR(STRING), CLEAR(TRUE), CLEAR(FALSE);
        CLEAR(LPAREN), CLEAR(LBRACKET), CLEAR(MINUS), CLEAR(NOT), CLEAR(DTYPE), CLEAR(KW_BOOL);
    }
    if (OK(KW_INT) && OK(KW_FLOAT) && OK(KW_STR) && OK(KW_BOOL) && OK(DTYPE)) {
        parts[n++] = "a type";
        CLEAR(KW_INT), CLEAR(KW_FLOAT), CLEAR(KW_STR), CLEAR(KW_BOOL), CLEAR(DTYPE);
    }
    bool oper = OK(PLUS) && OK(MINUS) && OK(STAR) && OK(SLASH) && OK(AT) && OK(POW) &&
                OK(AND) && OK(OR);
    /* specific tokens, closers and separators first */
    static const int order[] = {
        DTL_TK_RPAREN, DTL_TK_RBRACKET, DTL_TK_RBRACE, DTL_TK_COMMA, DTL_TK_COLON,
        DTL_TK_EQ, DTL_TK_ARROW, DTL_TK_LBRACE, DTL_TK_ALONG, DTL_TK_IDENT,
    };
    bool listed[YYNTOKEN] = {false};
    const char *specific[YYNTOKEN];
    int ns = 0;
    if (oper) {
        CLEAR(PLUS), CLEAR(MINUS), CLEAR(STAR), CLEAR(SLASH), CLEAR(AT), CLEAR(POW);
        CLEAR(AND), CLEAR(OR), CLEAR(LT), CLEAR(LE), CLEAR(GT), CLEAR(GE), CLEAR(EQEQ);
        CLEAR(NE), CLEAR(LPAREN), CLEAR(LBRACKET), CLEAR(DOT);
    }
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (ok[order[i]])
            specific[ns++] = dtl_lex_kind_name(order[i]), listed[order[i]] = true;
    for (int t = 1; t < YYNTOKEN; t++)
        if (ok[t] && !listed[t] && t != DTL_TK_SEP)
            specific[ns++] = dtl_lex_kind_name(t);
    for (int i = 0; i < ns; i++)
        parts[n++] = specific[i];
    if (oper)
        parts[n++] = "an operator";
    if (OK(SEP))
        parts[n++] = "newline";
    if (ok[0] && n == 0)
        parts[n++] = "end of file";
#undef OK
#undef CLEAR
    if (n > 6) {
        parts[5] = "something else";
        n = 6;
    }
    return join_or(ps, parts, n);
}

/* Only blanks stand before span on its line. */
static bool starts_line(const dtl_lexer *lx, dtl_span span)
{
    const char *text = lx->src->text;
    for (uint32_t o = span.off; o > 0 && text[o - 1] != '\n'; o--)
        if (text[o - 1] != ' ' && text[o - 1] != '\t' && text[o - 1] != '\r')
            return false;
    return true;
}

/* Reports a syntax error at tok, the stack being as it was before tok arrived. */
static void parser_syntax_error(dtl_parser *ps, yyParser *p, int major, const dtl_token *tok)
{
    int level = parser_level(p);
    if (ps->broken[level])
        return;
    ps->broken[level] = true;
    if (major == DTL_TK_ILLEGAL || tok->bad)
        return;   /* the lexer has said why */
    const char *found = dtl_lex_describe(ARENA, tok);
    /* A declaration keyword (or anything) starting a line inside an unclosed '(' or '['
     * of an earlier line: most likely that bracket was never closed. */
    const dtl_lexer *lx = &ps->lx;
    const dtl_lex_bracket *b = lx->depth ? &lx->stack[lx->depth - 1] : NULL;
    if (b && b->ch != '{' && b->span.line < tok->span.line && major != 0 &&
        starts_line(lx, tok->span) &&
        parser_accepts(p, b->ch == '(' ? DTL_TK_RPAREN : DTL_TK_RBRACKET)) {
        dtl_diag_error(&CTX->diags, tok->span, "expected '%c' to close '%c' at %u:%u, found %s",
                       b->ch == '(' ? ')' : ']', b->ch, b->span.line, b->span.col, found);
        dtl_diag_note(&CTX->diags, b->span, "'%c' opened here", b->ch);
        ps->lx.stack[lx->depth - 1].reported = true;
        return;
    }
    dtl_diag_error(&CTX->diags, tok->span, "expected %s, found %s", parser_expected(ps, p),
                   found);
    /* A top-level declaration starting a line inside a block: the block's '}' is missing. */
    bool toplevel_kw = major == DTL_TK_MODEL || major == DTL_TK_DATASET ||
                       major == DTL_TK_TRAIN || major == DTL_TK_USE;
    if (b && b->ch == '{' && toplevel_kw && starts_line(lx, tok->span))
        dtl_diag_note(&CTX->diags, b->span,
                      "the '{' here is still open; is its '}' missing before line %u?",
                      tok->span.line);
}

/* Lemon found the error (after the driver did, normally) and starts recovering. */
static void parser_lemon_error(dtl_parser *ps, yyParser *p, int major, const dtl_token *tok)
{
    ps->had_error = true;
    if (!ps->reported)
        parser_syntax_error(ps, p, major, tok);
}

static void parser_stack_overflow(dtl_parser *ps)
{
    dtl_diag_error(&CTX->diags, ps->tok.span,
                   "expression is nested too deeply (more than %d levels)", DTL_AST_MAX_DEPTH);
    ps->abandon = true;
}

/* Lemon leaves the reduction that a shift makes certain (a "shift-reduce") for its next
 * call. Do it now, so that a finished statement is taken or dropped (and its level's flag
 * cleared) before the next token is checked. These reductions do not look at the
 * lookahead; Lemon would do the same first thing on its next call. */
static void parser_settle(dtl_parser *ps, yyParser *p)
{
    while (p->yytos->stateno >= YY_MIN_REDUCE && p->yytos->stateno <= YY_MAX_REDUCE) {
        unsigned rule = p->yytos->stateno - YY_MIN_REDUCE;
        if (yyRuleInfoNRhs[rule] == 0)
            break;   /* would push: leave it to Lemon, which checks the stack's room */
        yy_reduce(p, rule, YYNOCODE, ps->tok, ps);
    }
}

/* Leading blanks of the line of span (cached for the last line asked about). */
static uint32_t parser_indent(dtl_parser *ps, dtl_span span)
{
    if (span.line != ps->indent_line) {
        const char *text = ps->lx.src->text;
        uint32_t o = span.off;
        while (o > 0 && text[o - 1] != '\n')
            o--;
        uint32_t n = 0;
        while (o + n < ps->lx.src->len && (text[o + n] == ' ' || text[o + n] == '\t'))
            n++;
        ps->indent_line = span.line;
        ps->indent = n;
    }
    return ps->indent;
}

/* Hands one token to Lemon (the driver's checks first). False: stop parsing. */
static bool parser_feed(dtl_parser *ps, yyParser *p, int kind, const dtl_token *t)
{
    if (ps->at_start)
        ps->stmt_indent = parser_indent(ps, t->span);
    if (t->bad)
        ps->broken[parser_level(p)] = true;
    ps->tok = *t;
    ps->had_error = false;
    ps->reported = !parser_accepts(p, (YYCODETYPE)kind);
    if (ps->reported)
        parser_syntax_error(ps, p, kind, t);
    dtl_lemon(p, kind, *t);
    p->yyerrcnt = -1;   /* our broken[] flags decide what is reported, not Lemon */
    if (kind == 0 || ps->abandon || dtl_diag_stop(&ps->ctx->diags))
        return false;
    parser_settle(ps, p);
    ps->at_start = kind == DTL_TK_SEP || kind == DTL_TK_LBRACE;
    return true;
}

/* After a syntax error: skips the rest of the broken statement. Lemon has popped to the
 * innermost statement list; the statement ends at the SEP at that list's level, or at the
 * '}' that closes the list's block (left in *t for the caller). When it ended at a SEP,
 * the lines after it that are indented deeper than the statement's first line go too, with
 * a stray '}' at its indentation: they are the body of a header that lost its '{'
 * (`model M(n: int)` on a line of its own). Returns false to stop parsing. */
static bool parser_skip(dtl_parser *ps, yyParser *p, int *kind, dtl_token *t)
{
    uint32_t indent = ps->stmt_indent;
    int level = parser_level(p);
    bool ok = true;
    ps->lx.quiet = true;   /* one error per statement: the lexer's too */
    if (*kind != DTL_TK_SEP) {
        for (;;) {
            *kind = dtl_lex_next(&ps->lx, t);
            if (*kind == 0 || (*kind == DTL_TK_RBRACE && t->depth < level))
                goto out;
            if (*kind == DTL_TK_SEP && t->depth <= level)
                break;
        }
        if (!(ok = parser_feed(ps, p, *kind, t)))
            goto out;
    }
    unsigned depth = t->depth;   /* where the SEP that ended the statement stands */
    for (;;) {
        *kind = dtl_lex_next(&ps->lx, t);
        if (*kind == 0)
            break;
        if (*kind == DTL_TK_RBRACE) {
            if (t->depth < depth)
                break;
            continue;
        }
        if (*kind == DTL_TK_SEP || t->depth > depth)
            continue;
        uint32_t ind = parser_indent(ps, t->span);
        if (ind > indent)
            continue;
        if (*kind == DTL_TK_ILLEGAL && ind == indent && ps->lx.src->text[t->span.off] == '}' &&
            starts_line(&ps->lx, t->span))
            continue;
        break;
    }
out:
    ps->lx.quiet = false;
    return ok;
}

static void parse_run(dtl_ctx *ctx, const dtl_source *src, dtl_file *f)
{
    dtl_parser *ps = dtl_arena_alloc(&ctx->arena, sizeof *ps);
    ps->ctx = ctx;
    ps->ptrs.elsize = sizeof(void *);
    ps->slots.elsize = sizeof(pslot);
    ps->at_start = true;
    dtl_lex_init(&ps->lx, ctx, src);
    yyParser *p = dtl_arena_alloc(&ctx->arena, sizeof *p);
    dtl_lemonInit(p, ps);

    dtl_token t;
    int kind = dtl_lex_next(&ps->lx, &t);
    while (!dtl_diag_stop(&ctx->diags) && parser_feed(ps, p, kind, &t)) {
        if (ps->had_error) {
            if (!parser_skip(ps, p, &kind, &t))
                break;
        } else {
            kind = dtl_lex_next(&ps->lx, &t);
        }
    }
    f->ndecls = ps->items.len;
    f->decls = dtl_arena_array(&ctx->arena, f->ndecls, sizeof *f->decls);
    for (size_t i = 0; i < f->ndecls; i++)
        f->decls[i] = ps->items.items[i];
}

dtl_file *dtl_parse(dtl_ctx *ctx, const dtl_source *src)
{
    dtl_file *f = dtl_arena_alloc(&ctx->arena, sizeof *f);
    f->src = src;
    jmp_buf *saved = ctx->arena.oom_jump;
    jmp_buf jb;
    if (setjmp(jb)) {
        ctx->arena.oom_jump = saved;
        f->decls = NULL;
        f->ndecls = 0;
        dtl_diag_error(&ctx->diags, (dtl_span){0}, "out of memory");
        return f;
    }
    ctx->arena.oom_jump = &jb;
    parse_run(ctx, src, f);
    ctx->arena.oom_jump = saved;
    return f;
}
}
