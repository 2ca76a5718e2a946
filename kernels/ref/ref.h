/* kernels/ref/ref.h — the reference backend's kernels: plain C, obviously right, the oracle
 * every other backend is tested against.
 *
 * Contract: a kernel computes one node's result from its operands. It sees only the node's
 * op, dtype, shape and attributes and its operands' pointers, dtypes and shapes — never the
 * graph (ggml's habit) — and writes the whole result, row-major and contiguous, into out
 * (dtl_node_numel(n) elements of n->dtype). Operands are row-major and contiguous; out never
 * overlaps them. Dtypes: f32, f64, i32, i64 and bool (one byte, 0 or 1; any non-zero byte
 * reads as true); f16 is not supported (dtl_ref_supports). bf16 is a storage type for mixed
 * precision (dtl_ref_supports_op): cast to and from it, matmul of two bf16 operands, const,
 * and the data movement ops that copy bytes (reshape, transpose, broadcast, slice, concat).
 *
 * Numerics (any backend must agree within float tolerance, or bit for bit where said):
 *  - f32 elementwise math is done in float (expf, logf, …); sum accumulates f32 in double
 *    and rounds once; matmul accumulates f32 in float (i-k-j order).
 *  - Mixed precision (runtime/dtype.h): cast to bf16 rounds to nearest even (from f64 and
 *    integers through f32), keeps NaN a quiet NaN and overflows to inf; bf16 to f32 is exact.
 *    matmul of bf16 operands is the f32 matmul of their exact f32 values (products exact,
 *    f32 accumulation, f32 result); a tf32 matmul is the f32 matmul of dtl_tf32_round of
 *    each operand element. Backends may accumulate in another order (tolerance).
 *  - max, min, reduce_max, relu propagate NaN; argmax picks the first maximum (the first
 *    NaN if any).
 *  - Integers wrap on overflow (two's complement); integer division truncates, x / 0 is 0.
 *  - cast float -> int truncates toward zero and saturates; NaN -> 0; x -> bool is x != 0.
 *  - rng_uniform, bit for bit: with r = Philox stream attr.stream keyed by the seed, element
 *    i of the node is built from 32-bit word number (step * numel + i) of r (mod 2^64):
 *    f32: (word >> 8) * 2^-24; f64: word * 2^-32. Both in [0, 1).
 *  - gather and scatter_add fail (return false, err set) on an index outside [0, dim).
 *  - Windowed ops (conv2d, pooling; float dtypes only; ref_window.c): each output element
 *    is one sum over its window's taps that lie inside the input (padding reads as absent),
 *    accumulated in double in (channel, ky, kx) order — for the backward ops, in the order
 *    of the forward op's (o, ky, kx) or (n, oy, ox) — and rounded once. maxpool's window
 *    value is its first maximum in row-major order (the first NaN if any), and
 *    maxpool2d_bwd routes each dy to that element (adding in output order, in the dtype).
 *    avgpool divides by kh * kw when count_pad, else by the number of taps inside.
 */
#ifndef DTL_REF_H
#define DTL_REF_H

#include <stdbool.h>
#include <stdint.h>

#include "../../compiler/graph.h"
#include "../../runtime/err.h"

typedef struct dtl_ref_arg {
    const void *data;
    dtl_dtype dtype;
    uint32_t rank;
    const int64_t *shape;
} dtl_ref_arg;

/* Whether the reference kernels handle dtype t in every op. */
bool dtl_ref_supports(dtl_dtype t);
/* Whether they compute op with result dtype out from operands of dtypes in[0..nin): the
 * dtypes of dtl_ref_supports everywhere, bf16 only in the ops listed above. */
bool dtl_ref_supports_op(dtl_op op, dtl_dtype out, uint32_t nin, const dtl_dtype *in);
/* The same for node v of g. */
bool dtl_ref_supports_node(const dtl_graph *g, dtl_val v);

/* Computes node n into out from its n->nin operands in[]; seed is the run's seed (for
 * rng_uniform). INPUT, PARAM and STATE have no kernel (the executor binds them). Returns
 * false with err set only on a data-dependent failure (an index out of range) or when asked
 * for something it has no kernel for. */
bool dtl_ref_kernel(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                    dtl_err *err);

/* Planes [p0, p1) (of N * C) of an avgpool2d or avgpool2d_bwd node: the same bits as the
 * whole kernel computes for them, so a caller may split the planes over threads. */
void dtl_ref_avgpool2d_planes(const dtl_node *n, const dtl_ref_arg *in, void *out, int64_t p0,
                              int64_t p1);

#endif
