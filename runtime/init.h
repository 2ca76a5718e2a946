/* runtime/init.h — parameter initializers: fill a parameter's buffer per its dtl_init.
 *
 * Contract: deterministic and independent of everything but (seed, name, init, dtype,
 * shape): the random draws come from the Philox stream dtl_rng_stream_id("init:" name, 0)
 * keyed by seed, one element after the other in row-major order, so the same seed gives the
 * same weights bit for bit on every machine, and two parameters never share a stream.
 *  - uniform(a, b):      a + (b - a) * u, u = dtl_rng_uniform_f64 (two words per element)
 *  - normal(a, b):       a + b * dtl_rng_normal (Box-Muller, four words per element)
 *  - glorot_uniform:     uniform(-l, l), l = sqrt(6 / (fan_in + fan_out))
 *  - glorot_normal:      normal(0, sqrt(2 / (fan_in + fan_out)))  (not truncated)
 *  - he_uniform:         uniform(-l, l), l = sqrt(6 / fan_in)
 *  - he_normal:          normal(0, sqrt(2 / fan_in))
 * The value is computed in double and rounded once to the dtype.
 * Fans (dtl_init_fans): rank 0: 1 and 1; rank 1 [n]: n and n; rank 2 [in, out] (our Dense
 * stores w as [in, out]): shape[0] and shape[1]; rank > 2, the Keras convention for
 * [..., in, out] (a conv kernel [kh, kw, in, out]): with r = the product of all dims but
 * the last two, fan_in = shape[rank-2] * r and fan_out = shape[rank-1] * r.
 * Supported dtypes: f32 and f64 (the reference backend's floats). Returns false with err
 * set (naming the parameter) for an unsupported dtype or nonsensical arguments.
 */
#ifndef DTL_INIT_H
#define DTL_INIT_H

#include <stdbool.h>
#include <stdint.h>

#include "../compiler/graph.h"
#include "err.h"

void dtl_init_fans(uint32_t rank, const int64_t *shape, double *fan_in, double *fan_out);

/* Fills data (the product of shape elements of dtype dt, row-major). */
bool dtl_init_fill(const dtl_init *init, const char *name, dtl_dtype dt, uint32_t rank,
                   const int64_t *shape, uint64_t seed, void *data, dtl_err *err);

#endif
