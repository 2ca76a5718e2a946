/* compiler/passes/cse.c — common subexpression elimination by hash-consing.
 *
 * Design: the input is walked in topological order; each node, its inputs already mapped to
 * the output graph, is looked up in an open-addressing hash table of the output's nodes by
 * its key — op, dtype, shape, the attributes its op reads, its (mapped) inputs, and for a
 * constant its contents — and either maps to the node already there or is copied and
 * entered. Since inputs are mapped first, whole identical subtrees collapse in one sweep.
 * Expected linear time in nodes (plus the bytes of constant data, hashed once each).
 *
 * What counts as identical:
 *  - Constants: two splats whose element (as the reference kernel writes it, so fills 0.1
 *    and 0.10000000149011612 of an f32 are the same) has the same bytes, or two data
 *    constants with the same bytes; same dtype and shape. -0.0 and 0.0 differ (bytes).
 *  - Named leaves (INPUT, PARAM, STATE) never merge: each is its own binding.
 *  - RNG_UNIFORM: only exact duplicates (same step input, stream, dtype, shape): one draw
 *    (passes.h).
 *  - Operand order matters, except for the ops where swapping operands is exact for every
 *    value: eq and ne of any dtype, and add, mul, max, min, and, or of integers and bools.
 *    (Float add and mul are commutative too, but with two NaN operands IEEE leaves open
 *    which payload comes out, so they are matched in written order only.)
 * The first node of a group is kept, with its role and label. Values: bit for bit.
 * The table is also offered to other passes (pass_hcons_add): simplify builds every node
 * through it, so a rewrite that yields a node already present reuses that node.
 */
#include "passes_internal.h"

#include <string.h>

#include "../../runtime/arena.h"

static uint64_t mix(uint64_t h, uint64_t x)
{
    h ^= x + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 32);
}

static uint64_t mix_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t f = 0xcbf29ce484222325ull;   /* FNV-1a, then mixed in */
    for (size_t i = 0; i < n; i++)
        f = (f ^ b[i]) * 0x100000001b3ull;
    return mix(h, f);
}

/* Whether operands of n may be swapped without changing any bit of the result. */
static bool commutes(const dtl_graph *g, const dtl_node *n)
{
    if (n->nin != 2)
        return false;
    dtl_dtype t = g->nodes[n->in[0]].dtype;
    bool exact_type = dtl_dtype_is_int(t) || t == DTL_DTYPE_BOOL;
    switch (n->op) {
    case DTL_OP_EQ:
    case DTL_OP_NE: return true;
    case DTL_OP_ADD:
    case DTL_OP_MUL:
    case DTL_OP_MAX:
    case DTL_OP_MIN:
    case DTL_OP_AND:
    case DTL_OP_OR: return exact_type;
    default: return false;
    }
}

static size_t const_bytes(const dtl_node *n)
{
    return (size_t)dtl_node_numel(n) * dtl_dtype_size(n->dtype);
}

/* The attributes op reads, hashed; equal attributes hash equally. */
static uint64_t hash_attrs(uint64_t h, const dtl_node *n)
{
    switch (n->op) {
    case DTL_OP_CONST:
        if (n->attr.cst.data)
            return mix_bytes(mix(h, 1), n->attr.cst.data, const_bytes(n));
        else {
            unsigned char e[PASS_ELEM_MAX];
            if (pass_splat_elem(n, e))
                return mix_bytes(mix(h, 2), e, dtl_dtype_size(n->dtype));
            return mix_bytes(mix(h, 3), &n->attr.cst.fill, sizeof n->attr.cst.fill);
        }
    case DTL_OP_IOTA:
    case DTL_OP_ARGMAX:
    case DTL_OP_CONCAT:
    case DTL_OP_GATHER:
    case DTL_OP_SCATTER_ADD: return mix(h, n->attr.axis);
    case DTL_OP_SUM:
    case DTL_OP_REDUCE_MAX: return mix(mix(h, n->attr.red.axes), n->attr.red.keepdims);
    case DTL_OP_TRANSPOSE:
        for (uint32_t i = 0; i < n->rank; i++)
            h = mix(h, n->attr.perm[i]);
        return h;
    case DTL_OP_SLICE:
        for (uint32_t i = 0; i < n->rank; i++)
            h = mix(mix(h, (uint64_t)n->attr.slice.start[i]), (uint64_t)n->attr.slice.step[i]);
        return h;
    case DTL_OP_RNG_UNIFORM: return mix(h, n->attr.stream);
    case DTL_OP_MATMUL: return mix(h, n->attr.tf32);
    case DTL_OP_CONV2D: case DTL_OP_CONV2D_BWD_X: case DTL_OP_CONV2D_BWD_W:
    case DTL_OP_MAXPOOL2D: case DTL_OP_MAXPOOL2D_BWD: case DTL_OP_AVGPOOL2D:
    case DTL_OP_AVGPOOL2D_BWD: {
        const dtl_win_attr *w = &n->attr.win;
        for (int i = 0; i < 2; i++)
            h = mix(mix(mix(mix(h, (uint64_t)w->kernel[i]), (uint64_t)w->stride[i]),
                        (uint64_t)w->pad[i]), (uint64_t)w->dil[i]);
        return mix(mix(h, (uint64_t)w->groups), w->count_pad);
    }
    default: return h;
    }
}

static bool attrs_equal(const dtl_node *a, const dtl_node *b)
{
    switch (a->op) {
    case DTL_OP_CONST: {
        if (!a->attr.cst.data != !b->attr.cst.data)
            return false;
        if (a->attr.cst.data)
            return memcmp(a->attr.cst.data, b->attr.cst.data, const_bytes(a)) == 0;
        unsigned char ea[PASS_ELEM_MAX], eb[PASS_ELEM_MAX];
        if (pass_splat_elem(a, ea) && pass_splat_elem(b, eb))
            return memcmp(ea, eb, dtl_dtype_size(a->dtype)) == 0;
        return memcmp(&a->attr.cst.fill, &b->attr.cst.fill, sizeof a->attr.cst.fill) == 0;
    }
    case DTL_OP_IOTA:
    case DTL_OP_ARGMAX:
    case DTL_OP_CONCAT:
    case DTL_OP_GATHER:
    case DTL_OP_SCATTER_ADD: return a->attr.axis == b->attr.axis;
    case DTL_OP_SUM:
    case DTL_OP_REDUCE_MAX:
        return a->attr.red.axes == b->attr.red.axes &&
               a->attr.red.keepdims == b->attr.red.keepdims;
    case DTL_OP_TRANSPOSE:
        return memcmp(a->attr.perm, b->attr.perm, a->rank * sizeof a->attr.perm[0]) == 0;
    case DTL_OP_SLICE:
        return memcmp(a->attr.slice.start, b->attr.slice.start,
                      a->rank * sizeof a->attr.slice.start[0]) == 0 &&
               memcmp(a->attr.slice.step, b->attr.slice.step,
                      a->rank * sizeof a->attr.slice.step[0]) == 0;
    case DTL_OP_RNG_UNIFORM: return a->attr.stream == b->attr.stream;
    case DTL_OP_MATMUL: return a->attr.tf32 == b->attr.tf32;
    case DTL_OP_CONV2D: case DTL_OP_CONV2D_BWD_X: case DTL_OP_CONV2D_BWD_W:
    case DTL_OP_MAXPOOL2D: case DTL_OP_MAXPOOL2D_BWD: case DTL_OP_AVGPOOL2D:
    case DTL_OP_AVGPOOL2D_BWD: {
        const dtl_win_attr *x = &a->attr.win, *y = &b->attr.win;
        bool eq = x->groups == y->groups && x->count_pad == y->count_pad;
        for (int i = 0; i < 2; i++)
            eq = eq && x->kernel[i] == y->kernel[i] && x->stride[i] == y->stride[i] &&
                 x->pad[i] == y->pad[i] && x->dil[i] == y->dil[i];
        return eq;
    }
    default: return true;
    }
}

/* n: a node whose inputs are ids of g. */
static uint64_t node_hash(const dtl_graph *g, const dtl_node *n)
{
    uint64_t h = mix(mix(mix(0, n->op), n->dtype), n->rank);
    for (uint32_t i = 0; i < n->rank; i++)
        h = mix(h, (uint64_t)n->shape[i]);
    h = mix(h, n->nin);
    if (commutes(g, n)) {
        dtl_val a = n->in[0], b = n->in[1];
        h = mix(mix(h, a < b ? a : b), a < b ? b : a);
    } else {
        for (uint32_t i = 0; i < n->nin; i++)
            h = mix(h, n->in[i]);
    }
    return hash_attrs(h, n);
}

static bool node_equal(const dtl_graph *g, const dtl_node *a, const dtl_node *b)
{
    if (a->op != b->op || !pass_same_type(a, b) || a->nin != b->nin)
        return false;
    bool same_in = a->nin == 0 || memcmp(a->in, b->in, a->nin * sizeof *a->in) == 0;
    if (!same_in && commutes(g, a))
        same_in = a->in[0] == b->in[1] && a->in[1] == b->in[0];
    return same_in && attrs_equal(a, b);
}

void pass_hcons_init(pass_hcons *h, dtl_arena *scratch, uint32_t expected)
{
    size_t cap = 16;
    while (cap < 2 * (size_t)expected)
        cap *= 2;
    h->scratch = scratch;
    h->cap = cap;
    h->count = 0;
    h->slot = dtl_arena_array(scratch, cap, sizeof *h->slot);
    h->hash = dtl_arena_array(scratch, cap, sizeof *h->hash);
    for (size_t i = 0; i < cap; i++)
        h->slot[i] = DTL_VAL_NONE;
}

/* Doubles the table (when it is half full), re-entering every node. */
static void hcons_grow(pass_hcons *h)
{
    size_t old_cap = h->cap;
    dtl_val *old_slot = h->slot;
    uint64_t *old_hash = h->hash;
    h->cap *= 2;
    h->slot = dtl_arena_array(h->scratch, h->cap, sizeof *h->slot);
    h->hash = dtl_arena_array(h->scratch, h->cap, sizeof *h->hash);
    for (size_t i = 0; i < h->cap; i++)
        h->slot[i] = DTL_VAL_NONE;
    for (size_t i = 0; i < old_cap; i++) {
        if (old_slot[i] == DTL_VAL_NONE)
            continue;
        size_t at = (size_t)old_hash[i] & (h->cap - 1);
        while (h->slot[at] != DTL_VAL_NONE)
            at = (at + 1) & (h->cap - 1);
        h->slot[at] = old_slot[i];
        h->hash[at] = old_hash[i];
    }
}

dtl_val pass_hcons_add(pass_hcons *h, dtl_graph *out, const dtl_node *proto, const dtl_val *in)
{
    if (pass_named_leaf(proto->op))
        return dtl_g_copy(out, proto, in);
    dtl_node cand = *proto;
    cand.in = in;
    uint64_t hv = node_hash(out, &cand);
    size_t at = (size_t)hv & (h->cap - 1);
    for (; h->slot[at] != DTL_VAL_NONE; at = (at + 1) & (h->cap - 1))
        if (h->hash[at] == hv && node_equal(out, &cand, &out->nodes[h->slot[at]]))
            return h->slot[at];
    dtl_val v = dtl_g_copy(out, proto, in);
    h->slot[at] = v;
    h->hash[at] = hv;
    if (++h->count * 2 > h->cap)
        hcons_grow(h);
    return v;
}

void dtl_pass_cse(dtl_graph *out, const dtl_graph *in)
{
    dtl_graph_init(out);
    dtl_arena scratch;
    dtl_arena_init(&scratch);
    dtl_val *map = dtl_arena_array(&scratch, in->nnodes + 1, sizeof *map);
    pass_hcons h;
    pass_hcons_init(&h, &scratch, in->nnodes);
    uint32_t maxin = 1;
    for (uint32_t v = 0; v < in->nnodes; v++)
        if (in->nodes[v].nin > maxin)
            maxin = in->nodes[v].nin;
    dtl_val *ins = dtl_arena_array(&scratch, maxin, sizeof *ins);
    for (uint32_t v = 0; v < in->nnodes; v++) {
        const dtl_node *old = &in->nodes[v];
        for (uint32_t i = 0; i < old->nin; i++)
            ins[i] = map[old->in[i]];
        map[v] = pass_hcons_add(&h, out, old, ins);
    }
    pass_copy_outputs(out, in, map);
    out->role = in->role;
    dtl_arena_free(&scratch);
}
