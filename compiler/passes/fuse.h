/* compiler/passes/fuse.h — fusion and static memory planning: a verified graph becomes a
 * "kernel program", the list of loops a fast backend (llvm, cuda) compiles and runs.
 *
 * Contract:
 *  - dtl_fuse partitions the nodes of g into kernels, listed in an execution order that
 *    respects every dependency. Every node that needs computing belongs to exactly one
 *    kernel; leaves that are bound rather than computed (INPUT, PARAM, STATE) and views
 *    (RESHAPE: same bytes, row-major) belong to none. A CONST belongs to none either: its
 *    value is computed once at prepare time (loc CONST) — or, when it is a splat
 *    (attr.cst.data == NULL) read by a fused kernel, codegen may use attr.cst.fill as an
 *    immediate.
 *  - Kernel kinds:
 *      ELEMWISE  a loop over `shape` (the shape of every member node). Members: nodes of
 *                op kind UNARY, BINARY, TERNARY (cast included) and BROADCAST, and IOTA
 *                (its value is the loop index along attr.axis). A member's operand is either
 *                an earlier member (same shape, computed in registers: never stored unless it
 *                is also an output) or an external value (ins[]) read with numpy broadcasting
 *                to the member's shape. A BROADCAST member's operand is always external.
 *      REDUCE    `root` is one SUM or REDUCE_MAX. Members: the prologue (ELEMWISE-style
 *                members of the root operand's shape, computed per element of the loop over
 *                that shape) followed by the root. `shape` is the root operand's shape.
 *      MATMUL    `root` is one MATMUL computing C = op(A) @ op(B). A and B are the external
 *                values matmul_a / matmul_b, read transposed in their last two axes when
 *                trans_a / trans_b (a TRANSPOSE of perm [..., n-1, n-2] feeding the matmul
 *                is folded this way and is then not a member when nothing else needs it).
 *                Members after the root: an epilogue of ELEMWISE-style members of the root's
 *                shape applied to each element of C before it is stored (bias + relu).
 *                `shape` is the root's shape.
 *      ROW       rows of a tensor, each taken whole: `shape` is the full shape [..., L]
 *                (rank >= 1; rows = numel / L), `root` is DTL_VAL_NONE. Members are "full"
 *                (of `shape`: ELEMWISE-style members, BROADCAST included) or "row values" (of
 *                the row shape [..., 1]: SUM/REDUCE_MAX over the last axis alone, keepdims,
 *                of a full value, and ELEMWISE-style members of that shape). A full member
 *                reads a row value with numpy broadcasting (the row's one value); a row value
 *                never reads a full member except as a reduction's operand. Per row, the
 *                members run in passes over the row: a reduction accumulates in the pass of
 *                its operand and its value is available from the next pass on; a member
 *                runs in the pass of its latest operand (pass 0 when it reads none). A
 *                backend may recompute a full member of an earlier pass in a later one, or
 *                reload it when it is an out. No out of a ROW kernel takes an input's
 *                memory (no in-place reuse), so its ins stay intact for every pass.
 *                Softmax, log-softmax, layer norm, logsumexp and their backward graphs
 *                become one ROW kernel each.
 *      SINGLE    one node of any other op (gather, scatter_add, concat, slice, transpose,
 *                argmax, rng_uniform, matmul of integers …), computed by itself with the
 *                semantics of kernels/ref/ref.h. `shape` is its shape.
 *  - outs[] lists the members whose value is needed after the kernel (read by a later kernel,
 *    a graph output, or a view); each has loc ARENA, STORE (written in place, see below) or
 *    ALIAS. Members not in outs[] are never stored.
 *  - ins[] lists the distinct external values a kernel reads (in first-use order); each has a
 *    loc other than NONE.
 *  - Memory plan: every node gets a dtl_loc. Intermediates share one arena of arena_bytes
 *    bytes, offsets 64-byte aligned, assigned by liveness in execution order: two values
 *    overlap in memory only if their lifetimes (first write .. last read, in kernel order) do
 *    not. "In place" reuse: an ELEMWISE/REDUCE kernel's output may take the memory of one of
 *    its inputs whose last reader is that kernel, when both have the same byte size and the
 *    input is read at the same index it is written (same shape, no broadcast); never in a
 *    ROW kernel.
 *  - Parameter updates in place: a DTL_OUT_PARAM/DTL_OUT_STATE output whose value is computed
 *    by an ELEMWISE kernel or a MATMUL epilogue that runs after every other reader of the
 *    target leaf, and reads the target (if at all) at the index it writes, gets loc STORE
 *    (its kernel writes straight into the store entry of `target`); then no copy is
 *    needed at commit. Otherwise the value lives in the arena and the backend copies it into
 *    the store after the last kernel (exec.h's commit rule: every node sees old values).
 *  - A kernel program borrows g (which must outlive it); everything else lives in p->arena.
 * Errors: none for a verified graph (dtl_fuse aborts on a graph that fails dtl_graph_verify).
 */
#ifndef DTL_FUSE_H
#define DTL_FUSE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../graph.h"

typedef enum dtl_kkind {
    DTL_K_ELEMWISE, DTL_K_REDUCE, DTL_K_MATMUL, DTL_K_SINGLE, DTL_K_ROW
} dtl_kkind;

typedef enum dtl_loc_kind {
    DTL_LOC_NONE,     /* never stored: lives in registers inside its kernel */
    DTL_LOC_INPUT,    /* bound at run time (INPUT nodes) */
    DTL_LOC_STORE,    /* a store entry: PARAM/STATE leaves, and in-place updates (target) */
    DTL_LOC_CONST,    /* the constant block, computed once at prepare: offset */
    DTL_LOC_ARENA,    /* the step arena: offset */
    DTL_LOC_ALIAS,    /* the same bytes as node `of` (RESHAPE) */
} dtl_loc_kind;

typedef struct dtl_loc {
    dtl_loc_kind kind;
    uint64_t offset;      /* CONST, ARENA: byte offset, 64-byte aligned */
    dtl_val of;           /* ALIAS: the node whose bytes these are (never itself an ALIAS);
                             STORE of a computed node: the PARAM/STATE leaf it overwrites */
} dtl_loc;

typedef struct dtl_kernel {
    dtl_kkind kind;
    uint32_t rank;
    int64_t shape[DTL_MAX_RANK];  /* the loop's shape (see the kinds above) */
    uint32_t nmembers;
    const dtl_val *members;       /* in dependency order */
    uint32_t nouts;
    const dtl_val *outs;
    uint32_t nins;
    const dtl_val *ins;
    dtl_val root;                 /* REDUCE, MATMUL, SINGLE: the main node; else DTL_VAL_NONE
                                     (ELEMWISE, ROW) */
    dtl_val matmul_a, matmul_b;   /* MATMUL: the operands as stored */
    bool trans_a, trans_b;
} dtl_kernel;

typedef struct dtl_kprog {
    const dtl_graph *g;
    dtl_arena arena;
    dtl_kernel *k;                /* nk kernels in execution order */
    uint32_t nk;
    dtl_loc *loc;                 /* g->nnodes entries */
    uint32_t *kernel_of;          /* g->nnodes entries: the kernel a node is a member of, or
                                     UINT32_MAX */
    uint64_t arena_bytes;         /* the step arena */
    uint64_t naive_bytes;         /* what the stored intermediates would take without reuse */
    uint64_t const_bytes;         /* the constant block */
} dtl_kprog;

typedef struct dtl_fuse_opts {
    bool no_fusion;      /* every computed node its own kernel (a test of codegen) */
    bool no_reuse;       /* every stored intermediate its own memory (a test of the planner) */
    bool no_inplace;     /* no in-place reuse, no in-place parameter updates */
    bool no_rows;        /* no ROW kernels (a backend without row code: cuda); also when
                            the environment has DTL_FUSE_ROWS=0 (before/after comparisons) */
} dtl_fuse_opts;

/* Fuses and plans g (verified). opts may be NULL (everything on). */
dtl_kprog *dtl_fuse(const dtl_graph *g, const dtl_fuse_opts *opts);
void dtl_kprog_free(dtl_kprog *p);   /* NULL is fine */

/* The passes of ROW kernel k over each row (fuse.h's ROW rules): pass[i] for member i —
 * for a reduction the pass in which it accumulates (its value is available from pass[i] + 1
 * on), for a full member the pass that computes it, for a row value the pass before whose
 * loop it is computed (the number of passes: after the last one). Returns the number of
 * passes (>= 1). */
uint32_t dtl_row_passes(const dtl_kprog *p, const dtl_kernel *k, uint32_t *pass);

/* --emit=fused: one block per kernel (kind, shape, members with their ops, ins, outs with
 * their locations), then the plan's totals. Deterministic. */
void dtl_kprog_print(FILE *out, const dtl_kprog *p);

/* Checks the contract above (partition, order, locations, no overlap of live values);
 * returns false with a message in buf on the first problem. For tests and debug builds. */
bool dtl_kprog_verify(const dtl_kprog *p, char *buf, size_t len);

#endif
