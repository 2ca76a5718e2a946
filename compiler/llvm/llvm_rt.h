/* compiler/llvm/llvm_rt.h — what the LLVM backend's generated code needs at run time besides
 * gemm and the thread pool: the shim through which it runs SINGLE kernels (gather, scatter,
 * slice, concat, transpose, argmax, rng_uniform, integer matmul …) with the reference
 * kernels, and the constant block. Depends only on the runtime and kernels/ref, so that an
 * ahead-of-time compiled model can use it too.
 *
 * Contract:
 *  - The step's slots (see llvm.h for the step function and its contract):
 *      slot 0  DTL_LLVM_SLOT_ARENA  layout.arena_bytes of scratch, 64-byte aligned (contents
 *                                   need not survive between steps)
 *      slot 1  DTL_LLVM_SLOT_CONST  the constant block, layout.const_bytes, filled once with
 *                                   dtl_llvm_consts_fill
 *      slot 2  DTL_LLVM_SLOT_POOL   a dtl_pool * for big loops and gemm, or NULL (serial)
 *      slot 3  DTL_LLVM_SLOT_RT     the dtl_llvm_rt below
 *      then    one slot per INPUT node of the graph, in node order (read only)
 *      then    one slot per PARAM/STATE node, in node order: the store entry's data
 *  - A dtl_llvm_rt describes every SINGLE kernel of one compiled graph: its node, where each
 *    operand and the result live (slot + offset), the operand views. The
 *    generated step calls dtl_llvm_rt_single(rt, i, slots) for the i-th SINGLE kernel; it
 *    computes the node with dtl_ref_kernel (the oracle's semantics, exactly), allocating
 *    nothing. On failure (an index out of range) it returns false with rt->err set, naming
 *    the node, and rt->failed = i. At run time it reads, of single[i], only n's op, dtype,
 *    rank, shape, nin, attributes and name, and args/in/out (never n->in or the graph).
 *  - Output-ready hook (runtime/exec.h): a module built with hooks (dtl_llvm_build_module_hooks)
 *    calls dtl_llvm_rt_ready(rt, k, slots) once output k is final — after the kernel that
 *    computes it (a matmul's epilogue included), or after the staging for bound leaves and
 *    constants — and it calls rt->ready with a view of the value at layout.ready_at[k] (for
 *    PARAM/STATE outputs the new value, before the commit). rt->ready NULL: nothing.
 *  - The constant block holds the CONST nodes with loc CONST (at loc.offset) and nothing
 *    else; it does not depend on the seed.
 *  - The graph, the kernel program and the arena the rt was built in must outlive it; the
 *    rt holds no other resources.
 */
#ifndef DTL_LLVM_RT_H
#define DTL_LLVM_RT_H

#include <stdbool.h>
#include <stdint.h>

#include "../../kernels/ref/ref.h"
#include "../../runtime/arena.h"
#include "../../runtime/err.h"
#include "../../runtime/exec.h"
#include "../passes/fuse.h"

enum {
    DTL_LLVM_SLOT_ARENA,
    DTL_LLVM_SLOT_CONST,
    DTL_LLVM_SLOT_POOL,
    DTL_LLVM_SLOT_RT,
    DTL_LLVM_SLOT_FIRST_INPUT
};

/* Where a value is after a step: slot + byte offset. */
typedef struct dtl_llvm_place {
    uint32_t slot;
    uint64_t offset;
} dtl_llvm_place;

/* What dtl_llvm_build_module decided; lives in the kernel program's arena. */
typedef struct dtl_llvm_layout {
    uint32_t ninputs;           /* INPUT nodes: slots DTL_LLVM_SLOT_FIRST_INPUT .. */
    uint32_t nstore;            /* PARAM/STATE nodes: the next nstore slots */
    uint32_t nslots;            /* DTL_LLVM_SLOT_FIRST_INPUT + ninputs + nstore */
    const dtl_val *slot_node;   /* nslots entries: the leaf bound to a slot (else NONE) */
    uint64_t arena_bytes;       /* the plan's arena + staging of outputs + matmul scratch */
    uint64_t const_bytes;       /* the kernel program's constant block */
    const dtl_llvm_place *out;  /* per graph output (g->outs order): where its value is
                                   after a step (PARAM/STATE outputs: their target's slot) */
    uint32_t nsingle;           /* SINGLE kernels (dtl_llvm_rt needs one entry each) */
    /* A module built with output-ready hooks: per graph output, where its value is when the
     * step reports it (before the commit); NULL for a module without hooks. */
    const dtl_llvm_place *ready_at;
} dtl_llvm_layout;


typedef struct dtl_llvm_single {
    dtl_val id;                 /* the node */
    const dtl_node *n;
    dtl_ref_arg *args;          /* n->nin operand views; data set at each call */
    const dtl_llvm_place *in;   /* n->nin: where each operand is */
    dtl_llvm_place out;
} dtl_llvm_single;

typedef struct dtl_llvm_rt {
    uint64_t seed;              /* the store's: rng_uniform's key */
    uint32_t nsingle;
    dtl_llvm_single *single;
    uint32_t failed;            /* the SINGLE kernel that failed last */
    dtl_err err;
    /* Scratch for the conv kernels (kernels/cpu/conv.h), 64-byte aligned, sized by
     * dtl_llvm_rt_init for the largest; a conv SINGLE kernel that finds too little (NULL,
     * as an ahead-of-time model leaves it) runs the reference kernel instead. */
    void *scratch;
    uint64_t scratch_bytes;
    /* The output-ready hook (set by the backend after dtl_llvm_rt_init; NULL: none) and, for
     * a module with hooks, each output's view (data set at each call) and place. */
    void (*ready)(void *ctx, uint32_t k, const dtl_tensor *value);
    void *ready_ctx;
    uint32_t nouts;
    dtl_tensor *outview;
    const dtl_llvm_place *ready_at;
} dtl_llvm_rt;

/* Where value v of kp lives, per layout L (leaves: their slot; ALIAS resolved). */
dtl_llvm_place dtl_llvm_where(const dtl_kprog *kp, const dtl_llvm_layout *L, dtl_val v);

/* Fills rt for kp compiled with layout L (tables allocated in A). */
void dtl_llvm_rt_init(dtl_llvm_rt *rt, const dtl_kprog *kp, const dtl_llvm_layout *L,
                      uint64_t seed, dtl_arena *A);

/* Called by generated code. */
bool dtl_llvm_rt_single(dtl_llvm_rt *rt, uint32_t i, void *const *slots);

/* Called by generated code built with hooks: reports output k (see the contract). */
void dtl_llvm_rt_ready(dtl_llvm_rt *rt, uint32_t k, void *const *slots);

/* Computes every CONST of kp into block (L->const_bytes bytes). seed: unused by CONST nodes
 * (it is dtl_ref_kernel's argument). */
bool dtl_llvm_consts_fill(const dtl_kprog *kp, void *block, uint64_t seed, dtl_err *err);

#endif
