/* lang/print.c — canonical printing of the AST.
 *
 * One writer (pw) serves both outputs: a FILE, or a string growing in an arena. Printing an
 * expression never adds parentheses: the parser keeps the ones that were written
 * (DTL_EXPR_PAREN) and the printed tokens are the parsed tokens, so the layout changes but
 * the parse does not. Two token-gluing cases need care: a member of an integer literal is
 * printed `1 .x` (`1.x` would lex as the float `1.`), and a unary minus is printed right
 * before its operand (safe: no two-character operator starts with '-'), except that a
 * minus before a minus gets a space (`- -x`).
 * The recursion follows the expression depth, which the parser bounds by DTL_AST_MAX_DEPTH.
 *
 * Layout: `model M(a: int, b: int = 1) {`, members one per line indented by 4 spaces, `}`;
 * `fn f(x: f32[B, 784]) -> f32[B, 10] = expr` or a block with one statement per line;
 * calls `f(a, b = 1)`, indexing `x[:, 1:3]`, tensors `[1, 2]`; empty bodies `{}`. Top-level
 * declarations are separated by a blank line, except runs of `use`, `let` or `dataset`.
 */
#include "print.h"

#include <inttypes.h>
#include <string.h>

typedef struct pw {
    FILE *out;        /* or, when NULL: */
    dtl_strbuf str;
} pw;

static void put(pw *w, const char *s, size_t n)
{
    if (w->out)
        fwrite(s, 1, n, w->out);
    else
        dtl_strbuf_putn(&w->str, s, n);
}

static void puts_(pw *w, const char *s)
{
    put(w, s, strlen(s));
}

static void indent(pw *w, int n)
{
    for (int i = 0; i < n; i++)
        put(w, "    ", 4);
}

static void print_expr(pw *w, const dtl_expr *e);

/* A string literal built without a spelling: escape what the lexer would not take raw. */
static void print_string_bytes(pw *w, const char *s, size_t n)
{
    put(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        switch (c) {
        case '\n': puts_(w, "\\n"); break;
        case '\t': puts_(w, "\\t"); break;
        case '\r': puts_(w, "\\r"); break;
        case '\0': puts_(w, "\\0"); break;
        case '\\': puts_(w, "\\\\"); break;
        case '"': puts_(w, "\\\""); break;
        default:
            if (c < 0x20 || c == 0x7F || c >= 0x80) {
                snprintf(esc, sizeof esc, "\\x%02X", c);
                puts_(w, esc);
            } else {
                put(w, (const char *)&c, 1);
            }
        }
    }
    put(w, "\"", 1);
}

static void print_sub(pw *w, const dtl_subscript *s)
{
    if (!s->is_slice) {
        print_expr(w, s->value);
        return;
    }
    if (s->start)
        print_expr(w, s->start);
    put(w, ":", 1);
    if (s->stop)
        print_expr(w, s->stop);
    if (s->has_step || s->step) {
        put(w, ":", 1);
        if (s->step)
            print_expr(w, s->step);
    }
}

static void print_expr_list(pw *w, dtl_expr *const *es, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            put(w, ", ", 2);
        print_expr(w, es[i]);
    }
}

static void print_expr(pw *w, const dtl_expr *e)
{
    char num[64];
    if (!e) {
        puts_(w, "<missing>");
        return;
    }
    if (e->depth > DTL_AST_MAX_DEPTH + 1) {   /* never kept by the parser; stay bounded */
        puts_(w, "<too deep>");
        return;
    }
    switch (e->kind) {
    case DTL_EXPR_INT:
        if (e->text)
            puts_(w, e->text);
        else
            snprintf(num, sizeof num, "%" PRId64, e->u.ival), puts_(w, num);
        break;
    case DTL_EXPR_FLOAT:
        if (e->text) {
            puts_(w, e->text);
        } else {
            snprintf(num, sizeof num, "%.17g", e->u.fval);
            puts_(w, num);
            if (!strpbrk(num, ".eEn"))   /* keep it a float: 1 -> 1.0 */
                puts_(w, ".0");
        }
        break;
    case DTL_EXPR_STRING:
        if (e->text)
            puts_(w, e->text);
        else
            print_string_bytes(w, e->u.str.bytes, e->u.str.len);
        break;
    case DTL_EXPR_BOOL:
        puts_(w, e->u.bval ? "true" : "false");
        break;
    case DTL_EXPR_NAME:
        puts_(w, e->u.name.text);
        break;
    case DTL_EXPR_DTYPE:
        puts_(w, dtl_dtype_name(e->u.dtype));
        break;
    case DTL_EXPR_MEMBER:
        print_expr(w, e->u.member.base);
        if (e->u.member.base && e->u.member.base->kind == DTL_EXPR_INT)
            put(w, " ", 1);
        put(w, ".", 1);
        puts_(w, e->u.member.field.text);
        break;
    case DTL_EXPR_CALL:
        print_expr(w, e->u.call.callee);
        put(w, "(", 1);
        for (size_t i = 0; i < e->u.call.nargs; i++) {
            const dtl_arg *a = &e->u.call.args[i];
            if (i)
                put(w, ", ", 2);
            if (a->name.text) {
                puts_(w, a->name.text);
                put(w, " = ", 3);
            }
            print_expr(w, a->value);
        }
        put(w, ")", 1);
        break;
    case DTL_EXPR_INDEX:
        print_expr(w, e->u.index.base);
        put(w, "[", 1);
        for (size_t i = 0; i < e->u.index.nsubs; i++) {
            if (i)
                put(w, ", ", 2);
            print_sub(w, &e->u.index.subs[i]);
        }
        put(w, "]", 1);
        break;
    case DTL_EXPR_UNARY:
        puts_(w, e->u.unary.op == DTL_UNOP_NOT ? "not " : "-");
        if (e->u.unary.op == DTL_UNOP_NEG && e->u.unary.operand &&
            e->u.unary.operand->kind == DTL_EXPR_UNARY &&
            e->u.unary.operand->u.unary.op == DTL_UNOP_NEG)
            put(w, " ", 1);   /* `- -x`, which reads better than `--x` */
        print_expr(w, e->u.unary.operand);
        break;
    case DTL_EXPR_BINARY:
        print_expr(w, e->u.binary.lhs);
        put(w, " ", 1);
        puts_(w, dtl_binop_text(e->u.binary.op));
        put(w, " ", 1);
        print_expr(w, e->u.binary.rhs);
        break;
    case DTL_EXPR_TENSOR:
        put(w, "[", 1);
        print_expr_list(w, e->u.tensor.elems, e->u.tensor.nelems);
        put(w, "]", 1);
        break;
    case DTL_EXPR_PAREN:
        put(w, "(", 1);
        print_expr(w, e->u.paren);
        put(w, ")", 1);
        break;
    }
}

static void print_texpr(pw *w, const dtl_texpr *t)
{
    switch (t->kind) {
    case DTL_TEXPR_INT: puts_(w, "int"); break;
    case DTL_TEXPR_FLOAT: puts_(w, "float"); break;
    case DTL_TEXPR_BOOL: puts_(w, "bool"); break;
    case DTL_TEXPR_STR: puts_(w, "str"); break;
    case DTL_TEXPR_TENSOR:
        puts_(w, dtl_dtype_name(t->dtype));
        if (t->has_dims || t->ndims) {
            put(w, "[", 1);
            print_expr_list(w, t->dims, t->ndims);
            put(w, "]", 1);
        }
        break;
    }
}

static void print_fparams(pw *w, const dtl_fparam *ps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            put(w, ", ", 2);
        puts_(w, ps[i].name.text);
        if (ps[i].type) {
            put(w, ": ", 2);
            print_texpr(w, ps[i].type);
        }
        if (ps[i].deflt) {
            put(w, " = ", 3);
            print_expr(w, ps[i].deflt);
        }
    }
}

static void print_decl(pw *w, const dtl_decl *d, int ind);

/* " {", the declarations one per line one level deeper, "}" — or " {}" when empty. */
static void print_body(pw *w, dtl_decl *const *ds, size_t n, int ind)
{
    if (n == 0) {
        put(w, " {}", 3);
        return;
    }
    put(w, " {\n", 3);
    for (size_t i = 0; i < n; i++)
        print_decl(w, ds[i], ind + 1);
    indent(w, ind);
    put(w, "}", 1);
}

static void print_decl(pw *w, const dtl_decl *d, int ind)
{
    indent(w, ind);
    switch (d->kind) {
    case DTL_DECL_USE:
        puts_(w, "use ");
        for (size_t i = 0; i < d->u.use.nparts; i++) {
            if (i)
                put(w, ".", 1);
            puts_(w, d->u.use.parts[i].text);
        }
        break;
    case DTL_DECL_MODEL:
        puts_(w, "model ");
        puts_(w, d->name.text);
        if (d->u.model.nparams) {
            put(w, "(", 1);
            print_fparams(w, d->u.model.params, d->u.model.nparams);
            put(w, ")", 1);
        }
        print_body(w, d->u.model.items, d->u.model.nitems, ind);
        break;
    case DTL_DECL_FN:
        puts_(w, "fn ");
        puts_(w, d->name.text);
        put(w, "(", 1);
        print_fparams(w, d->u.fn.params, d->u.fn.nparams);
        put(w, ")", 1);
        if (d->u.fn.ret) {
            put(w, " -> ", 4);
            print_texpr(w, d->u.fn.ret);
        }
        if (d->u.fn.is_block) {
            print_body(w, d->u.fn.body, d->u.fn.nbody, ind);
        } else {
            put(w, " = ", 3);
            print_expr(w, d->u.fn.expr);
        }
        break;
    case DTL_DECL_DATASET:
        puts_(w, "dataset ");
        puts_(w, d->name.text);
        put(w, " = ", 3);
        print_expr(w, d->u.bind.value);
        break;
    case DTL_DECL_TRAIN:
        puts_(w, "train ");
        if (d->name.text) {
            puts_(w, d->name.text);
            put(w, " = ", 3);
        }
        print_expr(w, d->u.train.model);
        print_body(w, d->u.train.items, d->u.train.nitems, ind);
        break;
    case DTL_DECL_LET:
    case DTL_DECL_PARAM:
        puts_(w, d->kind == DTL_DECL_LET ? "let " : d->u.bind.state ? "state " : "param ");
        puts_(w, d->name.text);
        if (d->u.bind.type) {
            put(w, ": ", 2);
            print_texpr(w, d->u.bind.type);
        }
        if (d->u.bind.value) {
            put(w, " = ", 3);
            print_expr(w, d->u.bind.value);
        }
        break;
    case DTL_DECL_MEMBER:
    case DTL_DECL_SETTING:
        puts_(w, d->name.text);
        put(w, " = ", 3);
        print_expr(w, d->u.bind.value);
        break;
    case DTL_DECL_SHARD:
        puts_(w, "shard ");
        print_expr(w, d->u.shard.path);
        puts_(w, " along ");
        print_expr(w, d->u.shard.axis);
        break;
    case DTL_DECL_STAGE:
        puts_(w, "stage ");
        print_expr(w, d->u.stage.index);
        put(w, ": ", 2);
        print_expr_list(w, d->u.stage.paths, d->u.stage.npaths);
        break;
    case DTL_DECL_RETURN:
        puts_(w, "return ");
        print_expr(w, d->u.expr);
        break;
    case DTL_DECL_EXPR:
        print_expr(w, d->u.expr);
        break;
    }
    put(w, "\n", 1);
}

/* Runs of these top-level declarations are not separated by blank lines. */
static bool groups(dtl_decl_kind k)
{
    return k == DTL_DECL_USE || k == DTL_DECL_LET || k == DTL_DECL_DATASET;
}

void dtl_print_file(FILE *out, const dtl_file *f)
{
    pw w = {.out = out};
    for (size_t i = 0; i < f->ndecls; i++) {
        if (i && !(groups(f->decls[i]->kind) && f->decls[i]->kind == f->decls[i - 1]->kind))
            put(&w, "\n", 1);
        print_decl(&w, f->decls[i], 0);
    }
}

void dtl_print_decl(FILE *out, const dtl_decl *d, int ind)
{
    pw w = {.out = out};
    print_decl(&w, d, ind);
}

char *dtl_print_expr(dtl_arena *a, const dtl_expr *e)
{
    pw w = {.str.a = a};
    print_expr(&w, e);
    return dtl_strbuf_str(&w.str);
}

char *dtl_print_texpr(dtl_arena *a, const dtl_texpr *t)
{
    pw w = {.str.a = a};
    print_texpr(&w, t);
    return dtl_strbuf_str(&w.str);
}
