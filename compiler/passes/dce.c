/* compiler/passes/dce.c — dead code elimination.
 *
 * Design: one backward sweep marks what the outputs need (each output's value and target,
 * then, in reverse topological order, the inputs of every needed node); one forward sweep
 * copies the needed nodes and every named leaf (INPUT, PARAM, STATE), dead or not, in their
 * original order (passes.h: the store and the input bindings must fit every graph of the
 * pipeline). Linear in nodes and edges. Values are untouched: bit for bit.
 */
#include "passes_internal.h"

#include "../../runtime/arena.h"

void dtl_pass_dce(dtl_graph *out, const dtl_graph *in)
{
    dtl_graph_init(out);
    dtl_arena scratch;
    dtl_arena_init(&scratch);
    bool *live = dtl_arena_array(&scratch, in->nnodes + 1, sizeof *live);
    dtl_val *map = dtl_arena_array(&scratch, in->nnodes + 1, sizeof *map);
    for (uint32_t k = 0; k < in->nouts; k++) {
        live[in->outs[k].val] = true;
        if (in->outs[k].target != DTL_VAL_NONE)
            live[in->outs[k].target] = true;
    }
    for (uint32_t v = in->nnodes; v-- > 0;) {
        const dtl_node *n = &in->nodes[v];
        if (pass_named_leaf(n->op))
            live[v] = true;
        if (live[v])
            for (uint32_t i = 0; i < n->nin; i++)
                live[n->in[i]] = true;
    }
    for (uint32_t v = 0; v < in->nnodes; v++)
        map[v] = live[v] ? pass_copy_mapped(out, &in->nodes[v], map) : DTL_VAL_NONE;
    pass_copy_outputs(out, in, map);
    out->role = in->role;
    dtl_arena_free(&scratch);
}
