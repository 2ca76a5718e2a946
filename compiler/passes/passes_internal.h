/* compiler/passes/passes_internal.h — what the pass files share (not for other modules).
 *
 * Contract: every pass walks the input graph once in topological order, keeps map[old id] =
 * the id in the output graph that now stands for that node, and finishes with
 * pass_copy_outputs. Scratch memory lives in a dtl_arena the pass frees before returning;
 * like the graph builders, running out of memory there exits (arena.h), so a pass has no
 * error to return. The helpers read constants with the reference kernels' conversions
 * (kernels/ref/ref.h), so what a pass concludes about a constant's value is what the oracle
 * would compute.
 */
#ifndef DTL_PASSES_INTERNAL_H
#define DTL_PASSES_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "passes.h"
#include "../../runtime/arena.h"

void dtl_pass_fold(dtl_graph *out, const dtl_graph *in);
void dtl_pass_cse(dtl_graph *out, const dtl_graph *in);
void dtl_pass_simplify(dtl_graph *out, const dtl_graph *in);
void dtl_pass_dce(dtl_graph *out, const dtl_graph *in);

/* Hash-consing (cse.c): a table of the nodes of an output graph by their key (op, dtype,
 * shape, attributes, inputs, constant contents; see cse.c for what counts as identical).
 * pass_hcons_add returns the node of out identical to proto with inputs in, or appends a
 * copy (dtl_g_copy) and enters it. Named leaves are always copied, never entered. The
 * table lives in scratch and grows as needed. */
typedef struct pass_hcons {
    dtl_arena *scratch;
    size_t cap, count;
    dtl_val *slot;        /* node ids, DTL_VAL_NONE where empty */
    uint64_t *hash;
} pass_hcons;

void pass_hcons_init(pass_hcons *h, dtl_arena *scratch, uint32_t expected);
dtl_val pass_hcons_add(pass_hcons *h, dtl_graph *out, const dtl_node *proto, const dtl_val *in);

/* Constant folding of one node (fold.c): n (of any graph) with inputs ins (ids of out);
 * when every input is a CONST and the rules of fold.c allow, the folded CONST (built through
 * h when not NULL), else DTL_VAL_NONE. */
dtl_val pass_fold_node(dtl_graph *out, pass_hcons *h, const dtl_node *n, const dtl_val *ins);

/* Largest element size of any dtype (f64, i64). */
enum { PASS_ELEM_MAX = 8 };

/* Every output of in, copied into out with its value and target mapped through map. */
void pass_copy_outputs(dtl_graph *out, const dtl_graph *in, const dtl_val *map);

/* Copies node old (of the input graph) into out with its inputs mapped through map. */
dtl_val pass_copy_mapped(dtl_graph *out, const dtl_node *old, const dtl_val *map);

static inline bool pass_named_leaf(dtl_op op)
{
    return op == DTL_OP_INPUT || op == DTL_OP_PARAM || op == DTL_OP_STATE;
}

static inline bool pass_is_splat(const dtl_node *n)
{
    return n->op == DTL_OP_CONST && !n->attr.cst.data;
}

static inline bool pass_same_type(const dtl_node *a, const dtl_node *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank)
        return false;
    for (uint32_t i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

/* The bytes of one element of splat constant n (as the reference kernel writes it) into
 * elem; false for dtypes the reference kernels do not handle (f16, bf16). */
bool pass_splat_elem(const dtl_node *n, unsigned char elem[PASS_ELEM_MAX]);

/* A fill that reproduces the element at elem exactly (same bytes) for dtype dt, or false
 * (an i64 beyond 2^53, a NaN whose payload a double cannot carry back, f16/bf16). */
bool pass_fill_for(dtl_dtype dt, const void *elem, double *fill);

/* Splat n's value as a double (its element converted as the reference kernels read it):
 * for testing against 0, 1, -1. False when n is not a splat of a supported dtype. */
bool pass_splat_value(const dtl_node *n, double *v);

#endif
