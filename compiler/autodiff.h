/* compiler/autodiff.h — reverse-mode differentiation over the graph IR.
 *
 * Contract: dtl_ad_grad appends backward nodes (role DTL_ROLE_BACKWARD) to g that compute
 * d loss / d params[i] for each i and writes their ids to grads[i]; each gradient has its
 * param's dtype and shape. The loss must be a float scalar (rank 0). Existing nodes are not
 * changed; the graph's role is restored on return. Only nodes on a differentiable path from
 * one of the params to the loss get backward nodes (pruning); integer and bool values, and
 * ops without a VJP rule (comparisons, argmax, iota, not/and/or, rng, casts to or from an
 * integer type), carry no gradient. A value used several times gets the sum of its uses'
 * contributions. A param the loss does not depend on (through differentiable ops) gets a
 * zero constant as its gradient, so an optimizer still works, and unreached[i] is set to
 * true (when unreached is not NULL) so the caller can warn; else it is set to false.
 *
 * Errors: a loss that is not a float scalar or an id out of range, a params[i] that is not
 * a PARAM node: returns false with err filled (DTL_ERR_USAGE), the graph untouched. Out of
 * memory for the scratch arrays: DTL_ERR_NOMEM. (Graph allocation follows the arena's rule.)
 */
#ifndef DTL_AUTODIFF_H
#define DTL_AUTODIFF_H

#include <stdbool.h>

#include "../runtime/err.h"
#include "graph.h"

bool dtl_ad_grad(dtl_graph *g, dtl_val loss, const dtl_val *params, uint32_t nparams,
                 dtl_val *grads, bool *unreached, dtl_err *err);

/* True when op has a VJP rule (it may still give no gradient to some inputs, e.g. the
 * condition of WHERE or the indices of GATHER). */
bool dtl_ad_has_rule(dtl_op op);

/* Sums x (of a broadcast result's shape) down to the given shape, as numpy broadcasting's
 * adjoint: leading axes that shape lacks are summed away, axes where shape has 1 and x does
 * not are summed with keepdims, then the result is reshaped to shape. Returns x itself when
 * nothing needs summing. Used by the VJP rules; exposed for nnops and tests. */
dtl_val dtl_ad_sum_to_shape(dtl_graph *g, dtl_val x, uint32_t rank, const int64_t *shape);

#endif
