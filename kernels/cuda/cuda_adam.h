/* kernels/cuda/cuda_adam.h — finding the optimizer update of a step graph for the CUDA
 * backend's multi-tensor Adam/AdamW kernel (kernels/cuda/adam_at.h, dnn.cu). Host-only (no
 * CUDA calls), so it is tested without a GPU.
 *
 * Contract: dtl_cu_adam_find looks at every DTL_OUT_PARAM output of g whose value is the
 * update compiler/optim.c builds for adam/adamw (see adam_at.h for the formula), node for
 * node — sub(p0, div(mul(m', ss), add(div(sqrt(v'), bc2s), eps))), m' = add(mul(m, b1),
 * mul(g, c1)), v' = add(mul(v, b2), mul(mul(g, c2), g)), p0 = p or mul(p, decay), with m', v'
 * the values of the STATE outputs of m and v, every tensor f32 of p's shape and every
 * scalar an f32 of rank 0 (mul and add match with their operands in either order: they
 * commute exactly) — and returns the matches (in A), one per such param whose scalars are
 * the first match's (the same nodes, or constants of the same value: one launch takes one
 * set); anything else (SGD, f64 or bf16
 * params, a graph the passes rewrote) is simply not matched.
 * dtl_cu_adam_outputs gives the output list of the graph the backend then fuses instead of g:
 * g's outputs without the matched PARAM and STATE ones, plus VALUE outputs "__adam.g.K"
 * (match K's gradient) and "__adam.s.b1" … "__adam.s.decay" (the scalars, decay only for
 * AdamW), which keep those values alive to the end of the step, so one kernel after the
 * last one updates every matched param, m and v in place from them.
 */
#ifndef DTL_CUDA_ADAM_H
#define DTL_CUDA_ADAM_H

#include <stdbool.h>
#include <stdint.h>

#include "../../compiler/graph.h"

enum { DTL_CU_ADAM_NSCALARS = 8 };

typedef struct dtl_cu_adam_match {
    dtl_val param, m, v, grad;
    /* b1 c1 b2 c2 bc2s eps ss decay (decay DTL_VAL_NONE: adam) — adam_at.h's order */
    dtl_val s[DTL_CU_ADAM_NSCALARS];
    uint32_t out_p, out_m, out_v;   /* g's outputs that the kernel replaces */
} dtl_cu_adam_match;

extern const char *const dtl_cu_adam_scalar_names[DTL_CU_ADAM_NSCALARS];

uint32_t dtl_cu_adam_find(const dtl_graph *g, dtl_cu_adam_match **out, dtl_arena *A);

/* The outputs (in A) of the graph to fuse instead of g (see the contract); *n their count. */
dtl_output *dtl_cu_adam_outputs(const dtl_graph *g, const dtl_cu_adam_match *mt, uint32_t nm,
                                uint32_t *n, dtl_arena *A);

/* Whether output name is one dtl_cu_adam_outputs added. */
bool dtl_cu_adam_internal(const char *name);

#endif
