/* kernels/cuda/cuda_plan.h — where every value of a graph lives on the device: the CUDA
 * backend's memory plan, host-only code (no CUDA calls), so it is tested without a GPU.
 *
 * Contract: dtl_cu_layout_plan gives every node of a verified graph a location in ONE device
 * block of `total` bytes (allocated once per plan), laid out as
 *     [ inputs | constants | arena | status words ]
 *   INPUT        a fixed slot in the inputs region (a run copies the bound data there, so a
 *                captured CUDA Graph always reads the same addresses);
 *   PARAM STATE  the store's device mirror (not in the block: loc STORE);
 *   CONST IOTA   the constants region, filled once at prepare;
 *   RESHAPE      an alias of its operand's root (same bytes, row-major): no copy;
 *   the rest     the arena, offsets by liveness in graph order (best fit among the gaps,
 *                else the top), a node's block taken before its operands' last uses are
 *                released, so a kernel's output never overlaps its operands; values read by
 *                a graph output live to the end; with reuse off every value has its own
 *                memory.
 * Outputs whose value is (an alias of) an INPUT, PARAM or STATE get a staging block in the
 * arena (copied at the end of the compute phase, before the commits, so a `value w0 = %w`
 * reads the pre-commit value). gather and scatter_add nodes get two status words each
 * (64-bit: the first bad index position, its value). Offsets are 256-byte aligned.
 * Everything lives in the caller's arena A. Returns false (with err) only on an unsupported
 * dtype (f16; bf16 is planned: 2 bytes an element, mixed precision).
 */
#ifndef DTL_CUDA_PLAN_H
#define DTL_CUDA_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "../../compiler/graph.h"
#include "../../runtime/err.h"
#include "window_at.h"

typedef enum dtl_cu_loc {
    DTL_CU_LOC_NONE,     /* not stored (a value nothing reads is still computed: arena) */
    DTL_CU_LOC_INPUT,
    DTL_CU_LOC_STORE,
    DTL_CU_LOC_CONST,
    DTL_CU_LOC_ARENA,
    DTL_CU_LOC_ALIAS,
} dtl_cu_loc;

typedef struct dtl_cu_layout {
    uint32_t nnodes, nouts;
    uint8_t *loc;          /* per node: a dtl_cu_loc */
    uint64_t *off;         /* per node: byte offset in the block (INPUT CONST ARENA) */
    dtl_val *root;         /* per node: itself, or for an ALIAS the node whose bytes it is */
    uint32_t *def;         /* per node: the node index where it is written (itself) */
    uint32_t *last;        /* per node (roots): the last node reading it; UINT32_MAX: an
                              output, live to the end */
    uint64_t *stage_off;   /* per output: its staging block's offset, or UINT64_MAX */
    uint32_t *status;      /* per node: index of its status pair, or UINT32_MAX */
    uint32_t nstatus;
    uint64_t input_base, const_base, arena_base, status_base, total;
    uint64_t arena_bytes;  /* after reuse */
    uint64_t naive_bytes;  /* every arena value its own block */
    uint64_t const_bytes, input_bytes;
} dtl_cu_layout;

enum { DTL_CU_ALIGN = 256 };

bool dtl_cu_layout_plan(dtl_cu_layout *L, const dtl_graph *g, bool reuse, dtl_arena *A,
                        dtl_err *err);

/* The geometry of windowed node v of g (conv2d, pooling and their backward ops) for the
 * kernels of kernels/cuda/dnn.cu: the op, and x, filter/window and y seen from the forward
 * op whatever v's own role (conv2d_bwd_x's result is x, its operands dy and w; …). Returns
 * false when v is not a windowed op of a float dtype (f32, f64). Host-only. */
bool dtl_cu_win_of(const dtl_graph *g, dtl_val v, dtl_cu_wop *op, dtl_cu_win *win);

/* Checks the plan against the contract: every stored value inside its region and aligned,
 * no two ARENA values whose lifetimes intersect share a byte, no output overlaps an operand
 * of its node. Returns false with a message in why[0..len). For tests. */
bool dtl_cu_layout_check(const dtl_cu_layout *L, const dtl_graph *g, char *why, size_t len);

#endif
