/* compiler/passes/fold.c — constant folding.
 *
 * Design: the input is walked in topological order. A node whose operands are all CONST
 * (in the output graph, so folds chain) is evaluated at compile time by the reference
 * kernel for its op (dtl_ref_kernel), so the folded value is bit for bit what the oracle
 * would compute at run time; it becomes a CONST with the node's role and label:
 *  - a splat (attr.cst.fill) when every element has the same bytes and a double fill
 *    reproduces them exactly (not an i64 beyond 2^53, not a NaN payload a double loses);
 *  - else constant data, but only up to FOLD_MAX_DATA elements: a larger non-splat result
 *    is left unfolded (it would only cost memory, and a fast backend computes it anyway).
 * Two shortcuts keep large tensors out of the compiler:
 *  - every operand a splat and the op elementwise (unary, binary, where, cast): the kernel
 *    runs on one element (rank 0) and the result is a splat of the node's shape — the same
 *    bits, since each element of the full result is that same function of the same values;
 *  - every operand a splat and the op one that only moves or selects elements (reshape,
 *    broadcast, transpose, slice, reduce_max, and concat of equal splats): a splat of the
 *    new shape with the operand's fill; argmax of a splat is a splat of 0 (the first
 *    maximum, also for NaN).
 * Otherwise operands are materialized (at most FOLD_MAX_OPERAND elements each, a matmul at
 * most FOLD_MAX_WORK multiply-adds) and the kernel runs on them. A kernel that fails (a
 * gather index out of range) leaves the node unfolded, so the run reports it as before.
 * A CONST with data whose elements are all equal becomes a splat (same bits), and a splat's
 * fill is rewritten as the shortest number giving the same element (an f32 splat of
 * 0.09999999999999998 reads "0.1"; an i64 splat of 2.5 reads "2"): same bits again.
 * Never folded: the leaves INPUT, PARAM, STATE, RNG_UNIFORM, and IOTA, which is kept as
 * a node (fast backends compute it from the loop index; as data it would be memory reads),
 * so nodes that read an IOTA are not folded either. f16 and bf16 (no reference kernels)
 * are not folded. Cost: linear in nodes, plus the work of the folded kernels, bounded above.
 */
#include "passes_internal.h"

#include <stdlib.h>
#include <string.h>

#include "../../kernels/ref/ref.h"
#include "../../runtime/arena.h"

enum {
    FOLD_MAX_DATA = 4096,          /* elements of a folded non-splat constant */
    FOLD_MAX_OPERAND = 1 << 16,    /* elements of a materialized operand */
    FOLD_MAX_WORK = 1 << 20,       /* multiply-adds of a folded matmul */
};

/* A CONST like proto (role, label) of proto's dtype and shape: a splat of fill when data is
 * NULL, else data (numel elements). */
static dtl_val emit_const(dtl_graph *out, pass_hcons *h, const dtl_node *proto, double fill,
                          const void *data)
{
    dtl_node c;
    memset(&c, 0, sizeof c);
    c.op = DTL_OP_CONST;
    c.dtype = proto->dtype;
    c.role = proto->role;
    c.rank = proto->rank;
    memcpy(c.shape, proto->shape, sizeof c.shape);
    c.name = proto->name;
    c.attr.cst.fill = fill;
    c.attr.cst.data = data;
    return h ? pass_hcons_add(h, out, &c, NULL) : dtl_g_copy(out, &c, NULL);
}

/* The result of the kernel, count elements at data: as a splat if it is one, else as data
 * when small enough; DTL_VAL_NONE when neither. */
static dtl_val emit_result(dtl_graph *out, pass_hcons *h, const dtl_node *proto,
                           const void *data, uint64_t count)
{
    size_t esz = dtl_dtype_size(proto->dtype);
    const unsigned char *b = data;
    bool splat = true;
    for (uint64_t i = 1; splat && i < count; i++)
        splat = memcmp(b, b + i * esz, esz) == 0;
    double fill = 0;
    if (count == 0 || (splat && pass_fill_for(proto->dtype, b, &fill)))
        return emit_const(out, h, proto, fill, NULL);
    if (count > FOLD_MAX_DATA)
        return DTL_VAL_NONE;
    return emit_const(out, h, proto, 0, data);
}

/* Splat operands only: the shortcuts above, or DTL_VAL_NONE. */
static dtl_val fold_splats(dtl_graph *out, pass_hcons *h, const dtl_node *n,
                           const dtl_val *ins)
{
    const dtl_node *x = &out->nodes[ins[0]];
    dtl_op_kind kind = dtl_op_kind_of(n->op);
    if (kind == DTL_OPK_UNARY || kind == DTL_OPK_BINARY || kind == DTL_OPK_TERNARY) {
        unsigned char elems[3][PASS_ELEM_MAX], res[PASS_ELEM_MAX];
        dtl_ref_arg args[3];
        static const int64_t no_shape[1] = {0};
        for (uint32_t i = 0; i < n->nin; i++) {
            const dtl_node *c = &out->nodes[ins[i]];
            if (!pass_splat_elem(c, elems[i]))
                return DTL_VAL_NONE;
            args[i] = (dtl_ref_arg){elems[i], c->dtype, 0, no_shape};
        }
        dtl_node one = *n;
        one.rank = 0;
        one.in = ins;   /* not read by the kernels; set for completeness */
        memset(res, 0, sizeof res);
        dtl_err err;
        if (!dtl_ref_kernel(&one, args, res, 0, &err))
            return DTL_VAL_NONE;
        double fill;
        if (pass_fill_for(n->dtype, res, &fill))
            return emit_const(out, h, n, fill, NULL);
        return DTL_VAL_NONE;   /* the general path may still make data of it */
    }
    switch (n->op) {
    case DTL_OP_RESHAPE:
    case DTL_OP_BROADCAST:
    case DTL_OP_TRANSPOSE:
    case DTL_OP_SLICE:
    case DTL_OP_REDUCE_MAX:
        return emit_const(out, h, n, x->attr.cst.fill, NULL);
    case DTL_OP_ARGMAX:
        return emit_const(out, h, n, 0, NULL);
    case DTL_OP_CONCAT: {
        unsigned char e0[PASS_ELEM_MAX], e[PASS_ELEM_MAX];
        if (!pass_splat_elem(x, e0))
            return DTL_VAL_NONE;
        for (uint32_t i = 1; i < n->nin; i++)
            if (!pass_splat_elem(&out->nodes[ins[i]], e) ||
                memcmp(e, e0, dtl_dtype_size(n->dtype)) != 0)
                return DTL_VAL_NONE;
        return emit_const(out, h, n, x->attr.cst.fill, NULL);
    }
    default:
        return DTL_VAL_NONE;
    }
}

/* Materializes the operands and runs the kernel, within the limits; or DTL_VAL_NONE. */
static dtl_val fold_general(dtl_graph *out, pass_hcons *h, const dtl_node *n,
                            const dtl_val *ins)
{
    uint64_t count = dtl_node_numel(n);
    if (count > FOLD_MAX_DATA)
        return DTL_VAL_NONE;
    if (n->op == DTL_OP_MATMUL) {
        const dtl_node *a = &out->nodes[ins[0]];
        if (count * (uint64_t)a->shape[a->rank - 1] > FOLD_MAX_WORK)
            return DTL_VAL_NONE;
    }
    for (uint32_t i = 0; i < n->nin; i++)
        if (dtl_node_numel(&out->nodes[ins[i]]) > FOLD_MAX_OPERAND)
            return DTL_VAL_NONE;
    dtl_ref_arg *args = calloc(n->nin, sizeof *args);
    void **bufs = calloc(n->nin, sizeof *bufs);
    void *res = malloc(count ? count * dtl_dtype_size(n->dtype) : 1);
    dtl_val v = DTL_VAL_NONE;
    bool ok = args && bufs && res;
    for (uint32_t i = 0; ok && i < n->nin; i++) {
        const dtl_node *c = &out->nodes[ins[i]];
        args[i] = (dtl_ref_arg){c->attr.cst.data, c->dtype, c->rank, c->shape};
        if (c->attr.cst.data)
            continue;
        uint64_t k = dtl_node_numel(c);
        bufs[i] = malloc(k ? k * dtl_dtype_size(c->dtype) : 1);
        dtl_err err;
        ok = bufs[i] && dtl_ref_kernel(c, NULL, bufs[i], 0, &err);
        args[i].data = bufs[i];
    }
    dtl_err err;
    if (ok && dtl_ref_kernel(n, args, res, 0, &err))
        v = emit_result(out, h, n, res, count);
    for (uint32_t i = 0; bufs && i < n->nin; i++)
        free(bufs[i]);
    free(bufs);
    free(args);
    free(res);
    return v;
}

/* A data CONST whose elements are all equal, as a splat; a splat with its fill written as
 * the element it gives (f32 0.09999999999999998 is the float 0.1: fill 0.1); else a copy. */
static dtl_val fold_const(dtl_graph *out, const dtl_node *n)
{
    unsigned char e[PASS_ELEM_MAX];
    double fill;
    if (!n->attr.cst.data && pass_splat_elem(n, e) && pass_fill_for(n->dtype, e, &fill) &&
        memcmp(&fill, &n->attr.cst.fill, sizeof fill) != 0)
        return emit_const(out, NULL, n, fill, NULL);
    if (n->attr.cst.data && dtl_ref_supports(n->dtype)) {
        size_t esz = dtl_dtype_size(n->dtype);
        uint64_t count = dtl_node_numel(n);
        const unsigned char *b = n->attr.cst.data;
        bool splat = count > 0;
        for (uint64_t i = 1; splat && i < count; i++)
            splat = memcmp(b, b + i * esz, esz) == 0;
        double fill;
        if (splat && pass_fill_for(n->dtype, b, &fill))
            return emit_const(out, NULL, n, fill, NULL);
    }
    return dtl_g_copy(out, n, NULL);
}

static bool foldable_op(dtl_op op)
{
    switch (op) {
    case DTL_OP_CONST:
    case DTL_OP_INPUT:
    case DTL_OP_PARAM:
    case DTL_OP_STATE:
    case DTL_OP_IOTA:
    case DTL_OP_RNG_UNIFORM: return false;
    default: return true;
    }
}

dtl_val pass_fold_node(dtl_graph *out, pass_hcons *h, const dtl_node *n, const dtl_val *ins)
{
    if (!foldable_op(n->op) || !dtl_ref_supports(n->dtype))
        return DTL_VAL_NONE;
    bool all_splat = true;
    for (uint32_t i = 0; i < n->nin; i++) {
        const dtl_node *c = &out->nodes[ins[i]];
        if (c->op != DTL_OP_CONST || !dtl_ref_supports(c->dtype))
            return DTL_VAL_NONE;
        all_splat = all_splat && !c->attr.cst.data;
    }
    dtl_val r = all_splat ? fold_splats(out, h, n, ins) : DTL_VAL_NONE;
    return r != DTL_VAL_NONE ? r : fold_general(out, h, n, ins);
}

void dtl_pass_fold(dtl_graph *out, const dtl_graph *in)
{
    dtl_graph_init(out);
    dtl_arena scratch;
    dtl_arena_init(&scratch);
    dtl_val *map = dtl_arena_array(&scratch, in->nnodes + 1, sizeof *map);
    uint32_t maxin = 1;
    for (uint32_t v = 0; v < in->nnodes; v++)
        if (in->nodes[v].nin > maxin)
            maxin = in->nodes[v].nin;
    dtl_val *ins = dtl_arena_array(&scratch, maxin, sizeof *ins);

    for (uint32_t v = 0; v < in->nnodes; v++) {
        const dtl_node *n = &in->nodes[v];
        if (n->op == DTL_OP_CONST) {
            map[v] = fold_const(out, n);
            continue;
        }
        for (uint32_t i = 0; i < n->nin; i++)
            ins[i] = map[n->in[i]];
        dtl_val r = pass_fold_node(out, NULL, n, ins);
        map[v] = r != DTL_VAL_NONE ? r : dtl_g_copy(out, n, ins);
    }
    pass_copy_outputs(out, in, map);
    out->role = in->role;
    dtl_arena_free(&scratch);
}
