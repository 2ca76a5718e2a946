/* lang/ast.c — AST constructors and names.
 *
 * Every node comes zeroed from the compilation's arena, so optional parts start out NULL or
 * 0 and the annotation fields start empty. Expression nodes carry their depth (1 for a
 * leaf); dtl_ast_binary and dtl_ast_unary compute it, and dtl_ast_expr_depth recomputes it
 * for nodes whose children are filled in after dtl_ast_expr (calls, indexing, members,
 * tensors, parentheses). The parser compares depth against DTL_AST_MAX_DEPTH, which is what
 * bounds the recursion of every later walk.
 */
#include "ast.h"

#include <stdlib.h>

static uint32_t depth_max(uint32_t a, const dtl_expr *e)
{
    return e && e->depth > a ? e->depth : a;
}

dtl_expr *dtl_ast_expr(dtl_ctx *ctx, dtl_expr_kind kind, dtl_span span)
{
    dtl_expr *e = dtl_arena_alloc(&ctx->arena, sizeof *e);
    e->kind = kind;
    e->span = span;
    e->depth = 1;
    return e;
}

dtl_expr *dtl_ast_binary(dtl_ctx *ctx, dtl_binop op, dtl_expr *lhs, dtl_expr *rhs,
                         dtl_span op_span)
{
    dtl_expr *e = dtl_ast_expr(ctx, DTL_EXPR_BINARY, dtl_span_join(lhs->span, rhs->span));
    e->u.binary.op = op;
    e->u.binary.lhs = lhs;
    e->u.binary.rhs = rhs;
    e->u.binary.op_span = op_span;
    e->depth = 1 + depth_max(lhs->depth, rhs);
    return e;
}

dtl_expr *dtl_ast_unary(dtl_ctx *ctx, dtl_unop op, dtl_expr *operand, dtl_span op_span)
{
    dtl_expr *e = dtl_ast_expr(ctx, DTL_EXPR_UNARY, dtl_span_join(op_span, operand->span));
    e->u.unary.op = op;
    e->u.unary.operand = operand;
    e->depth = 1 + operand->depth;
    return e;
}

uint32_t dtl_ast_expr_depth(dtl_expr *e)
{
    uint32_t d = 0;
    switch (e->kind) {
    case DTL_EXPR_MEMBER:
        d = depth_max(d, e->u.member.base);
        break;
    case DTL_EXPR_CALL:
        d = depth_max(d, e->u.call.callee);
        for (size_t i = 0; i < e->u.call.nargs; i++)
            d = depth_max(d, e->u.call.args[i].value);
        break;
    case DTL_EXPR_INDEX:
        d = depth_max(d, e->u.index.base);
        for (size_t i = 0; i < e->u.index.nsubs; i++) {
            const dtl_subscript *s = &e->u.index.subs[i];
            d = depth_max(d, s->value);
            d = depth_max(d, s->start);
            d = depth_max(d, s->stop);
            d = depth_max(d, s->step);
        }
        break;
    case DTL_EXPR_UNARY:
        d = depth_max(d, e->u.unary.operand);
        break;
    case DTL_EXPR_BINARY:
        d = depth_max(depth_max(d, e->u.binary.lhs), e->u.binary.rhs);
        break;
    case DTL_EXPR_TENSOR:
        for (size_t i = 0; i < e->u.tensor.nelems; i++)
            d = depth_max(d, e->u.tensor.elems[i]);
        break;
    case DTL_EXPR_PAREN:
        d = depth_max(d, e->u.paren);
        break;
    default:
        break;
    }
    e->depth = d + 1;
    return e->depth;
}

dtl_texpr *dtl_ast_texpr(dtl_ctx *ctx, dtl_texpr_kind kind, dtl_span span)
{
    dtl_texpr *t = dtl_arena_alloc(&ctx->arena, sizeof *t);
    t->kind = kind;
    t->span = span;
    return t;
}

dtl_decl *dtl_ast_decl(dtl_ctx *ctx, dtl_decl_kind kind, dtl_span span)
{
    dtl_decl *d = dtl_arena_alloc(&ctx->arena, sizeof *d);
    d->kind = kind;
    d->span = span;
    return d;
}

const char *dtl_binop_text(dtl_binop op)
{
    static const char *const names[DTL_BINOP_COUNT] = {
        [DTL_BINOP_ADD] = "+",  [DTL_BINOP_SUB] = "-",  [DTL_BINOP_MUL] = "*",
        [DTL_BINOP_DIV] = "/",  [DTL_BINOP_MATMUL] = "@", [DTL_BINOP_POW] = "**",
        [DTL_BINOP_LT] = "<",   [DTL_BINOP_LE] = "<=",  [DTL_BINOP_GT] = ">",
        [DTL_BINOP_GE] = ">=",  [DTL_BINOP_EQ] = "==",  [DTL_BINOP_NE] = "!=",
        [DTL_BINOP_AND] = "and", [DTL_BINOP_OR] = "or",
    };
    return (unsigned)op < DTL_BINOP_COUNT ? names[op] : "?";
}

const char *dtl_decl_kind_name(dtl_decl_kind k)
{
    switch (k) {
    case DTL_DECL_USE: return "use";
    case DTL_DECL_MODEL: return "model";
    case DTL_DECL_FN: return "fn";
    case DTL_DECL_DATASET: return "dataset";
    case DTL_DECL_TRAIN: return "train";
    case DTL_DECL_LET: return "let";
    case DTL_DECL_PARAM: return "param";
    case DTL_DECL_MEMBER: return "member";
    case DTL_DECL_SETTING: return "setting";
    case DTL_DECL_SHARD: return "shard";
    case DTL_DECL_STAGE: return "stage";
    case DTL_DECL_RETURN: return "return";
    case DTL_DECL_EXPR: return "expression";
    }
    return "declaration";
}

bool dtl_binop_is_cmp(dtl_binop op)
{
    return op >= DTL_BINOP_LT && op <= DTL_BINOP_NE;
}

bool dtl_binop_cmp(dtl_binop op, double x, double y)
{
    switch (op) {
    case DTL_BINOP_LT: return x < y;
    case DTL_BINOP_LE: return x <= y;
    case DTL_BINOP_GT: return x > y;
    case DTL_BINOP_GE: return x >= y;
    case DTL_BINOP_EQ: return x == y;
    default: return x != y;
    }
}

bool dtl_int_pow(int64_t b, int64_t e, int64_t *out)
{
    int64_t r = 1;
    while (e > 0) {
        if ((e & 1) && __builtin_mul_overflow(r, b, &r))
            return false;
        e >>= 1;
        if (e && __builtin_mul_overflow(b, b, &b))
            return false;
    }
    *out = r;
    return true;
}
