/* compiler/repl_ctors.h — the tensor constructors of `dtlc repl`: zeros(2, 3), ones(4),
 * rand(2, 2), randn(3), arange(5), arange(0.0, 1.0, 0.25), eye(3).
 *
 * Contract: a table of extra builtins (lang/builtins.h rows, kind DTL_BUILTIN_OP, ids from
 * DTL_BI_COUNT on, so no switch over the language's own builtins ever meets one) and their
 * checker rule, for the hooks of lang/check.h; compiler/lower.c lowers them. Every size is a
 * constant known when checked, so the result type is concrete. The table is constant data.
 *
 *   zeros(d0, d1, …, dtype = f32)  ones(…)    every element 0 or 1; d0 may also be a list of
 *                                              ints, zeros([2, 3]) (up to rank 8)
 *   rand(d0, d1, …, dtype = f32)              uniform in [0, 1) (a float dtype)
 *   randn(d0, d1, …, dtype = f32)             standard normal, by Box-Muller (a float dtype)
 *   arange(start, stop = none, step = 1, dtype = none)
 *                                              numpy's: arange(n) is 0 … n-1; i64 when every
 *                                              argument is an int, else f32
 *   eye(n, m = none, dtype = f32)             the n×m (m = n) identity
 *
 * Random numbers come from the one generator (Philox): each rand/randn of a graph draws from
 * its own stream, the k-th one of the graph from dtl_rng_stream_id("repl", k), at the position
 * given by the graph's INPUT "repl.step" (an i64 scalar, which the REPL sets past every word
 * drawn before, so no draw repeats another) in an expression lowered for the prompt, or by
 * "step" in a train block's graphs. So a session replayed with the same seed gives the same
 * numbers.
 */
#ifndef DTL_REPL_CTORS_H
#define DTL_REPL_CTORS_H

#include <stddef.h>

#include "../lang/builtins.h"

typedef enum dtl_ctor_id {
    DTL_CTOR_ZEROS = DTL_BI_COUNT,
    DTL_CTOR_ONES,
    DTL_CTOR_RAND,
    DTL_CTOR_RANDN,
    DTL_CTOR_ARANGE,
    DTL_CTOR_EYE,
    DTL_CTOR_END
} dtl_ctor_id;

/* Parameters of the shape constructors (zeros ones rand randn): d0 … d4, then dtype. */
enum { DTL_CTOR_MAX_DIMS = 5, DTL_CTOR_DTYPE_PARAM = 5 };

/* The table (in dtl_ctor_id order). */
const dtl_builtin *dtl_ctor_table(size_t *n);
/* Is b one of them? Then its id. */
bool dtl_ctor_is(const dtl_builtin *b, dtl_ctor_id *id);
/* The checker rule (lang/check.h's dtl_check_hooks.rule; user is unused). */
dtl_type *dtl_ctor_rule(void *user, dtl_bcall *c);
/* arange's element count for these bounds (numpy: ceil((stop - start) / step), at least 0);
 * -1 when it is too large or step is 0. */
int64_t dtl_ctor_arange_len(double start, double stop, double step);

#endif
