/* compiler/passes/passes.h — the graph-to-graph passes and their straight-line pipeline.
 *
 * Contract:
 *  - A pass reads a verified graph and builds a NEW graph (`out`, initialized by the pass)
 *    that computes the same outputs (same kinds, names, dtypes, shapes, targets) with the
 *    same values: bit for bit for integer and bool results and for every pass but
 *    "simplify", whose algebraic rewrites may change float rounding (each rewrite is listed
 *    in passes.c with the reason it is exact or within 1 ulp). The input graph is untouched.
 *  - Leaves that carry a name (INPUT, PARAM, STATE) are kept even when dead, in their
 *    original order, so a store and the input bindings fit every graph of the pipeline.
 *  - RNG_UNIFORM nodes are never merged or removed by CSE (two draws with one stream are
 *    still one value, so CSE may merge exact duplicates: same stream, shape, dtype, step).
 *  - The pipeline runs, in this order: fold (constant folding), cse, simplify, dce. After
 *    each pass the result is verified (dtl_graph_verify); a failure is a compiler bug,
 *    reported as DTL_ERR_INTERNAL naming the pass and the verifier's message.
 *  - `dtlc compile FILE --emit=NAME` prints the graph after pass NAME (then stops); "graph"
 *    is the lowered graph before any pass.
 */
#ifndef DTL_PASSES_H
#define DTL_PASSES_H

#include <stdbool.h>
#include <stddef.h>

#include "../graph.h"
#include "../../runtime/err.h"

typedef struct dtl_pass {
    const char *name;            /* "fold", "cse", "simplify", "dce" */
    const char *what;            /* one line, for --help */
    void (*run)(dtl_graph *out, const dtl_graph *in);
} dtl_pass;

extern const dtl_pass dtl_passes[];
extern const size_t dtl_npasses;

/* The pass called name, or NULL. */
const dtl_pass *dtl_pass_find(const char *name);

/* Runs the pipeline on in into *out (initialized here; the caller frees it with
 * dtl_graph_free, also on failure). stop_after: NULL for every pass, or a pass name. */
bool dtl_passes_run(dtl_graph *out, const dtl_graph *in, const char *stop_after,
                    dtl_err *err);

#endif
