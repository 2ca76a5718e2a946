/* kernels/cuda/cuda_adam.c — finding Adam/AdamW updates in a step graph (cuda_adam.h).
 *
 * A structural match, node for node, of what compiler/optim.c builds: anything that is not
 * exactly that shape is left to the fused kernels, so a change in optim.c can cost the
 * multi-tensor launch but never the numerics (the kernel's formula, adam_at.h, is this
 * shape evaluated in the same order). mul and add are matched with either operand order:
 * IEEE multiplication and addition commute exactly, so the passes may reorder them. */
#include "cuda_adam.h"

#include <stdio.h>
#include <string.h>

const char *const dtl_cu_adam_scalar_names[DTL_CU_ADAM_NSCALARS] = {
    "b1", "c1", "b2", "c2", "bc2s", "eps", "ss", "decay"};

typedef struct mctx {
    const dtl_graph *g;
    const dtl_node *p;    /* the param: every tensor has its shape */
} mctx;

static const dtl_node *nd(const mctx *c, dtl_val v)
{
    return &c->g->nodes[v];
}

static bool is_op(const mctx *c, dtl_val v, dtl_op op)
{
    return nd(c, v)->op == op && nd(c, v)->dtype == DTL_DTYPE_F32;
}

static bool tensor(const mctx *c, dtl_val v)
{
    const dtl_node *n = nd(c, v);
    return n->dtype == DTL_DTYPE_F32 && n->rank == c->p->rank &&
           memcmp(n->shape, c->p->shape, n->rank * sizeof *n->shape) == 0;
}

static bool scalar(const mctx *c, dtl_val v)
{
    return nd(c, v)->dtype == DTL_DTYPE_F32 && nd(c, v)->rank == 0;
}

/* v = op(tensor, scalar) with the operands in either order: *t, *s. */
static bool tensor_scalar(const mctx *c, dtl_val v, dtl_op op, dtl_val *t, dtl_val *s)
{
    if (!is_op(c, v, op) || !tensor(c, v))
        return false;
    const dtl_val *in = nd(c, v)->in;
    for (int k = 0; k < 2; k++)
        if (tensor(c, in[k]) && scalar(c, in[1 - k])) {
            *t = in[k];
            *s = in[1 - k];
            return true;
        }
    return false;
}

/* m' = add(mul(m, b1), mul(g, c1)) with m the STATE `state`; *gr the gradient. */
static bool match_m(const mctx *c, dtl_val nm, dtl_val state, dtl_val *gr, dtl_val *b1,
                    dtl_val *c1)
{
    if (!is_op(c, nm, DTL_OP_ADD) || !tensor(c, nm))
        return false;
    for (int k = 0; k < 2; k++) {
        dtl_val t1, t2;
        const dtl_val *in = nd(c, nm)->in;
        if (tensor_scalar(c, in[k], DTL_OP_MUL, &t1, b1) && t1 == state &&
            tensor_scalar(c, in[1 - k], DTL_OP_MUL, &t2, c1)) {
            *gr = t2;
            return true;
        }
    }
    return false;
}

/* v' = add(mul(v, b2), mul(mul(g, c2), g)). */
static bool match_v(const mctx *c, dtl_val nv, dtl_val state, dtl_val gr, dtl_val *b2,
                    dtl_val *c2)
{
    if (!is_op(c, nv, DTL_OP_ADD) || !tensor(c, nv))
        return false;
    for (int k = 0; k < 2; k++) {
        const dtl_val *in = nd(c, nv)->in;
        dtl_val t1, gc;
        if (!tensor_scalar(c, in[k], DTL_OP_MUL, &t1, b2) || t1 != state)
            continue;
        dtl_val sq = in[1 - k];
        if (!is_op(c, sq, DTL_OP_MUL) || !tensor(c, sq))
            continue;
        const dtl_val *q = nd(c, sq)->in;
        for (int j = 0; j < 2; j++)   /* mul(mul(g, c2), g), either way round */
            if (q[1 - j] == gr && tensor_scalar(c, q[j], DTL_OP_MUL, &gc, c2) && gc == gr)
                return true;
    }
    return false;
}

static int64_t state_output(const dtl_graph *g, dtl_val state)
{
    for (uint32_t k = 0; k < g->nouts; k++)
        if (g->outs[k].kind == DTL_OUT_STATE && g->outs[k].target == state)
            return k;
    return -1;
}

static bool match_one(const dtl_graph *g, uint32_t k, dtl_cu_adam_match *r)
{
    const dtl_output *o = &g->outs[k];
    if (o->kind != DTL_OUT_PARAM || g->nodes[o->target].dtype != DTL_DTYPE_F32)
        return false;
    mctx c = {g, &g->nodes[o->target]};
    dtl_val pv = o->target, np = o->val;
    memset(r, 0, sizeof *r);
    r->param = pv;
    r->out_p = k;
    r->s[7] = DTL_VAL_NONE;
    r->m = r->v = DTL_VAL_NONE;
    /* np = sub(p0, div(mul(m', ss), add(div(sqrt(v'), bc2s), eps))) */
    if (!is_op(&c, np, DTL_OP_SUB) || !tensor(&c, np))
        return false;
    dtl_val p0 = nd(&c, np)->in[0], upd = nd(&c, np)->in[1], t;
    if (p0 != pv && !(tensor_scalar(&c, p0, DTL_OP_MUL, &t, &r->s[7]) && t == pv))
        return false;
    if (!is_op(&c, upd, DTL_OP_DIV) || !tensor(&c, upd))
        return false;
    dtl_val num = nd(&c, upd)->in[0], den = nd(&c, upd)->in[1], nm, nv, q;
    if (!tensor_scalar(&c, num, DTL_OP_MUL, &nm, &r->s[6]) ||
        !tensor_scalar(&c, den, DTL_OP_ADD, &q, &r->s[5]) ||
        !is_op(&c, q, DTL_OP_DIV) || !tensor(&c, q) || !scalar(&c, nd(&c, q)->in[1]))
        return false;
    r->s[4] = nd(&c, q)->in[1];
    dtl_val sq = nd(&c, q)->in[0];
    if (!is_op(&c, sq, DTL_OP_SQRT) || !tensor(&c, sq))
        return false;
    nv = nd(&c, sq)->in[0];
    /* m' and v' are the new values of two STATEs of the param's shape */
    for (uint32_t j = 0; j < g->nouts; j++) {
        const dtl_output *s = &g->outs[j];
        if (s->kind != DTL_OUT_STATE || !tensor(&c, s->target))
            continue;
        if (s->val == nm)
            r->m = s->target, r->out_m = j;
        if (s->val == nv)
            r->v = s->target, r->out_v = j;
    }
    if (r->m == DTL_VAL_NONE || r->v == DTL_VAL_NONE || r->m == r->v ||
        state_output(g, r->m) != (int64_t)r->out_m || state_output(g, r->v) != (int64_t)r->out_v)
        return false;
    return match_m(&c, nm, r->m, &r->grad, &r->s[0], &r->s[1]) &&
           match_v(&c, nv, r->v, r->grad, &r->s[2], &r->s[3]) && r->grad != pv;
}

/* Whether scalars a and b (f32, rank 0) are the same value every step: one node, or two
 * constants of the same value (before CSE, optim.c makes beta1 … a constant per param). */
static bool same_scalar(const dtl_graph *g, dtl_val a, dtl_val b)
{
    if (a == b)
        return true;
    if (a == DTL_VAL_NONE || b == DTL_VAL_NONE)
        return false;
    const dtl_node *x = &g->nodes[a], *y = &g->nodes[b];
    if (x->op != DTL_OP_CONST || y->op != DTL_OP_CONST)
        return false;
    float u = x->attr.cst.data ? *(const float *)x->attr.cst.data : (float)x->attr.cst.fill;
    float v = y->attr.cst.data ? *(const float *)y->attr.cst.data : (float)y->attr.cst.fill;
    return memcmp(&u, &v, sizeof u) == 0;
}

uint32_t dtl_cu_adam_find(const dtl_graph *g, dtl_cu_adam_match **out, dtl_arena *A)
{
    dtl_cu_adam_match *mt = dtl_arena_array(A, g->nouts + 1, sizeof *mt);
    uint32_t n = 0;
    for (uint32_t k = 0; k < g->nouts; k++) {
        if (!match_one(g, k, &mt[n]))
            continue;
        bool same = true;   /* one launch, one set of scalars: the first's */
        for (int s = 0; s < DTL_CU_ADAM_NSCALARS && n > 0; s++)
            same = same && same_scalar(g, mt[n].s[s], mt[0].s[s]);
        n += same;
    }
    *out = mt;
    return n;
}

dtl_output *dtl_cu_adam_outputs(const dtl_graph *g, const dtl_cu_adam_match *mt, uint32_t nm,
                                uint32_t *n, dtl_arena *A)
{
    dtl_output *o = dtl_arena_array(A, g->nouts + nm + DTL_CU_ADAM_NSCALARS + 1, sizeof *o);
    bool *drop = dtl_arena_array(A, g->nouts + 1, sizeof *drop);
    for (uint32_t i = 0; i < nm; i++)
        drop[mt[i].out_p] = drop[mt[i].out_m] = drop[mt[i].out_v] = true;
    uint32_t k = 0;
    for (uint32_t j = 0; j < g->nouts; j++)
        if (!drop[j])
            o[k++] = g->outs[j];
    for (uint32_t i = 0; i < nm; i++)
        o[k++] = (dtl_output){DTL_OUT_VALUE, dtl_arena_printf(A, "__adam.g.%u", i), mt[i].grad,
                              DTL_VAL_NONE};
    for (int s = 0; nm && s < DTL_CU_ADAM_NSCALARS; s++)
        if (mt[0].s[s] != DTL_VAL_NONE)
            o[k++] = (dtl_output){DTL_OUT_VALUE,
                                  dtl_arena_printf(A, "__adam.s.%s", dtl_cu_adam_scalar_names[s]),
                                  mt[0].s[s], DTL_VAL_NONE};
    *n = k;
    return o;
}

bool dtl_cu_adam_internal(const char *name)
{
    return name && strncmp(name, "__adam.", 7) == 0;
}
