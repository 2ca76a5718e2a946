/* compiler/passes/passes.c — the pass table, the straight-line pipeline and the helpers the
 * passes share.
 *
 * Design (QBE's habit, STYLE.md 7): the pipeline is the table dtl_passes[] run in order,
 * each pass reading the previous graph and building a fresh one; after each pass the new
 * graph is checked by dtl_graph_verify and by outputs_kept (same outputs, same named leaves
 * in the same order), and the previous intermediate graph is freed. A pass that breaks
 * either check is a bug in dtl, reported as DTL_ERR_INTERNAL naming the pass. Each pass
 * lives in its own file (fold.c, cse.c, simplify.c, dce.c), whose opening comment lists
 * what it does and why each rewrite keeps the values; docs/compiler.md says it for users.
 */
#include "passes_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../kernels/ref/ref.h"

const dtl_pass dtl_passes[] = {
    {"fold", "constant folding: nodes whose operands are all constants become constants",
     dtl_pass_fold},
    {"cse", "common subexpression elimination: identical nodes become one", dtl_pass_cse},
    {"simplify", "algebraic simplification: x+0, x*1, neg(neg x), no-op casts and views...",
     dtl_pass_simplify},
    {"dce", "dead code elimination: nodes no output needs are dropped", dtl_pass_dce},
};
const size_t dtl_npasses = sizeof dtl_passes / sizeof dtl_passes[0];

const dtl_pass *dtl_pass_find(const char *name)
{
    for (size_t i = 0; name && i < dtl_npasses; i++)
        if (strcmp(dtl_passes[i].name, name) == 0)
            return &dtl_passes[i];
    return NULL;
}

/* ---- shared helpers ---------------------------------------------------------------------- */

void pass_copy_outputs(dtl_graph *out, const dtl_graph *in, const dtl_val *map)
{
    for (uint32_t k = 0; k < in->nouts; k++) {
        const dtl_output *o = &in->outs[k];
        dtl_g_output(out, o->kind, o->name, map[o->val],
                     o->target == DTL_VAL_NONE ? DTL_VAL_NONE : map[o->target]);
    }
}

dtl_val pass_copy_mapped(dtl_graph *out, const dtl_node *old, const dtl_val *map)
{
    dtl_val stack[4] = {0};
    dtl_val *in = old->nin <= 4 ? stack : malloc(old->nin * sizeof *in);
    if (!in) {
        fputs("dtl: out of memory\n", stderr);
        exit(2);
    }
    for (uint32_t i = 0; i < old->nin; i++)
        in[i] = map[old->in[i]];
    dtl_val v = dtl_g_copy(out, old, in);
    if (in != stack)
        free(in);
    return v;
}

bool pass_splat_elem(const dtl_node *n, unsigned char elem[PASS_ELEM_MAX])
{
    if (!dtl_ref_supports(n->dtype))
        return false;
    dtl_node one;
    memset(&one, 0, sizeof one);
    one.op = DTL_OP_CONST;
    one.dtype = n->dtype;
    one.attr.cst.fill = n->attr.cst.fill;
    memset(elem, 0, PASS_ELEM_MAX);
    dtl_err err;
    return dtl_ref_kernel(&one, NULL, elem, 0, &err);
}

static double elem_double(dtl_dtype dt, const void *p)
{
    switch (dt) {
    case DTL_DTYPE_F32: { float f; memcpy(&f, p, sizeof f); return f; }
    case DTL_DTYPE_F64: { double d; memcpy(&d, p, sizeof d); return d; }
    case DTL_DTYPE_I32: { int32_t i; memcpy(&i, p, sizeof i); return i; }
    case DTL_DTYPE_I64: { int64_t i; memcpy(&i, p, sizeof i); return (double)i; }
    case DTL_DTYPE_BOOL: return *(const unsigned char *)p != 0;
    default: return NAN;
    }
}

/* Whether a splat of fill v of dtype dt has exactly the bytes at elem. */
static bool fill_gives(dtl_dtype dt, double v, const void *elem)
{
    dtl_node one;
    memset(&one, 0, sizeof one);
    one.op = DTL_OP_CONST;
    one.dtype = dt;
    one.attr.cst.fill = v;
    unsigned char back[PASS_ELEM_MAX];
    return pass_splat_elem(&one, back) && memcmp(back, elem, dtl_dtype_size(dt)) == 0;
}

bool pass_fill_for(dtl_dtype dt, const void *elem, double *fill)
{
    if (!dtl_ref_supports(dt))
        return false;
    double v = elem_double(dt, elem);
    if (!fill_gives(dt, v, elem))
        return false;
    *fill = v;
    /* An f32 reads best as the shortest decimal that gives the same float: 0.1, not
     * 0.10000000149011612 (the graph printer shows fills as doubles). */
    if (dt == DTL_DTYPE_F32 && isfinite(v))
        for (int prec = 1; prec <= 9; prec++) {
            char buf[40];
            snprintf(buf, sizeof buf, "%.*g", prec, v);
            double w = strtod(buf, NULL);
            if (fill_gives(dt, w, elem)) {
                *fill = w;
                break;
            }
        }
    return true;
}

bool pass_splat_value(const dtl_node *n, double *v)
{
    unsigned char e[PASS_ELEM_MAX];
    if (!pass_is_splat(n) || !pass_splat_elem(n, e))
        return false;
    *v = elem_double(n->dtype, e);
    return true;
}

/* ---- the pipeline ------------------------------------------------------------------------ */

/* Does g still have in's outputs (kinds, names, dtypes, shapes, targets by name) and its
 * named leaves (op, name, dtype, shape) in the same order? One line in why if not. */
static bool outputs_kept(const dtl_graph *in, const dtl_graph *g, char *why, size_t wlen)
{
    if (g->nouts != in->nouts)
        return snprintf(why, wlen, "%u outputs, the input graph has %u", g->nouts, in->nouts),
               false;
    for (uint32_t k = 0; k < in->nouts; k++) {
        const dtl_output *a = &in->outs[k], *b = &g->outs[k];
        bool same = a->kind == b->kind && strcmp(a->name, b->name) == 0 &&
                    pass_same_type(&in->nodes[a->val], &g->nodes[b->val]) &&
                    (a->target == DTL_VAL_NONE) == (b->target == DTL_VAL_NONE);
        if (same && a->target != DTL_VAL_NONE)
            same = strcmp(in->nodes[a->target].name, g->nodes[b->target].name) == 0;
        if (!same)
            return snprintf(why, wlen, "output \"%s\" changed", a->name), false;
    }
    uint32_t j = 0;
    for (uint32_t i = 0; i < in->nnodes; i++) {
        const dtl_node *a = &in->nodes[i];
        if (!pass_named_leaf(a->op))
            continue;
        while (j < g->nnodes && !pass_named_leaf(g->nodes[j].op))
            j++;
        if (j == g->nnodes)
            return snprintf(why, wlen, "%s \"%s\" was dropped", dtl_op_name(a->op), a->name),
                   false;
        const dtl_node *b = &g->nodes[j++];
        if (a->op != b->op || strcmp(a->name, b->name) != 0 || !pass_same_type(a, b))
            return snprintf(why, wlen, "%s \"%s\" changed or moved", dtl_op_name(a->op),
                            a->name),
                   false;
    }
    for (; j < g->nnodes; j++)
        if (pass_named_leaf(g->nodes[j].op))
            return snprintf(why, wlen, "%s \"%s\" is new", dtl_op_name(g->nodes[j].op),
                            g->nodes[j].name),
                   false;
    return true;
}

/* The verifier's first line for g, or "" when g is sound. */
static bool verified(const dtl_graph *g, char *why, size_t wlen)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    bool ok = dtl_graph_verify(g, f);
    if (f)
        fclose(f);
    if (!ok) {
        const char *msg = buf ? buf : "(no message)";
        size_t n = strcspn(msg, "\n");
        snprintf(why, wlen, "%.*s", (int)n, msg);
    }
    free(buf);
    return ok;
}

bool dtl_passes_run(dtl_graph *out, const dtl_graph *in, const char *stop_after,
                    dtl_err *err)
{
    dtl_graph_init(out);
    size_t last = dtl_npasses - 1;
    if (stop_after) {
        const dtl_pass *p = dtl_pass_find(stop_after);
        if (!p)
            return dtl_err_set(err, DTL_ERR_USAGE, "no pass named '%s'", stop_after);
        last = (size_t)(p - dtl_passes);
    }
    /* Two graphs take turns; the last pass writes straight into out. */
    dtl_graph tmp[2];
    const dtl_graph *src = in;
    int have = -1;   /* which tmp[] src is, or -1 for in */
    for (size_t i = 0; i <= last; i++) {
        dtl_graph *dst = i == last ? out : &tmp[have == 0 ? 1 : 0];
        if (i == last)
            dtl_graph_free(out);   /* the pass initializes it */
        dtl_passes[i].run(dst, src);
        char why[400];
        bool ok = verified(dst, why, sizeof why) && outputs_kept(in, dst, why, sizeof why);
        if (have >= 0)
            dtl_graph_free(&tmp[have]);
        if (!ok) {
            if (dst != out) {
                dtl_graph_free(dst);
                dtl_graph_init(out);
            }
            return dtl_err_set(err, DTL_ERR_INTERNAL,
                               "internal error: the %s pass broke the graph: %s",
                               dtl_passes[i].name, why);
        }
        src = dst;
        have = dst == out ? -1 : (int)(dst - tmp);
    }
    return true;
}
