/* compiler/llvm/llvm_rt.c — the run-time side of the LLVM backend: places of values, the
 * SINGLE-kernel shim and the constant block.
 *
 * A SINGLE kernel is rare and cheap in a training step (a transpose that did not fold into
 * a matmul, a gather, rng_uniform …), so the generated code does not compile it: it calls
 * dtl_llvm_rt_single with the kernel's ordinal, which points the prepared operand views at
 * the slots of this call and runs the reference kernel. The views (dtype, rank, shape) are
 * built once by dtl_llvm_rt_init; a call only stores data pointers, so it allocates
 * nothing. */
#include "llvm_rt.h"

#include <string.h>

#include "../../kernels/cpu/conv.h"

dtl_llvm_place dtl_llvm_where(const dtl_kprog *kp, const dtl_llvm_layout *L, dtl_val v)
{
    const dtl_loc *lc = &kp->loc[v];
    if (lc->kind == DTL_LOC_ALIAS) {
        v = lc->of;
        lc = &kp->loc[v];
    }
    dtl_op op = kp->g->nodes[v].op;
    switch (lc->kind) {
    case DTL_LOC_CONST: return (dtl_llvm_place){DTL_LLVM_SLOT_CONST, lc->offset};
    case DTL_LOC_ARENA: return (dtl_llvm_place){DTL_LLVM_SLOT_ARENA, lc->offset};
    case DTL_LOC_STORE:
        if (op != DTL_OP_PARAM && op != DTL_OP_STATE)
            v = lc->of;   /* written in place into its target's entry */
        break;
    default: break;
    }
    for (uint32_t s = DTL_LLVM_SLOT_FIRST_INPUT; s < L->nslots; s++)
        if (L->slot_node[s] == v)
            return (dtl_llvm_place){s, 0};
    return (dtl_llvm_place){UINT32_MAX, 0};   /* not stored (a bug in the caller) */
}

void dtl_llvm_rt_init(dtl_llvm_rt *rt, const dtl_kprog *kp, const dtl_llvm_layout *L,
                      uint64_t seed, dtl_arena *A)
{
    memset(rt, 0, sizeof *rt);
    rt->seed = seed;
    rt->nsingle = L->nsingle;
    rt->single = dtl_arena_array(A, L->nsingle + 1, sizeof *rt->single);
    uint32_t at = 0;
    for (uint32_t k = 0; k < kp->nk; k++) {
        const dtl_kernel *kn = &kp->k[k];
        if (kn->kind != DTL_K_SINGLE)
            continue;
        dtl_llvm_single *s = &rt->single[at++];
        const dtl_node *n = &kp->g->nodes[kn->root];
        s->id = kn->root;
        s->n = n;
        s->args = dtl_arena_array(A, n->nin + 1, sizeof *s->args);
        dtl_llvm_place *in = dtl_arena_array(A, n->nin + 1, sizeof *in);
        for (uint32_t i = 0; i < n->nin; i++) {
            const dtl_node *u = &kp->g->nodes[n->in[i]];
            s->args[i] = (dtl_ref_arg){NULL, u->dtype, u->rank, u->shape};
            in[i] = dtl_llvm_where(kp, L, n->in[i]);
        }
        s->in = in;
        s->out = dtl_llvm_where(kp, L, kn->root);
        uint64_t need = dtl_cpu_conv_scratch(n, s->args);
        rt->scratch_bytes = need > rt->scratch_bytes ? need : rt->scratch_bytes;
    }
    if (rt->scratch_bytes) {
        char *p = dtl_arena_alloc(A, rt->scratch_bytes + 64);
        rt->scratch = p + (64 - (uintptr_t)p % 64) % 64;
    }
    if (L->ready_at) {   /* a module with output-ready hooks */
        const dtl_graph *g = kp->g;
        rt->nouts = g->nouts;
        rt->ready_at = L->ready_at;
        rt->outview = dtl_arena_array(A, g->nouts + 1, sizeof *rt->outview);
        for (uint32_t k = 0; k < g->nouts; k++)
            dtl_output_view(g, k, NULL, &rt->outview[k]);
    }
}

void dtl_llvm_rt_ready(dtl_llvm_rt *rt, uint32_t k, void *const *slots)
{
    if (!rt->ready || k >= rt->nouts)
        return;
    dtl_tensor *t = &rt->outview[k];
    t->data = (char *)slots[rt->ready_at[k].slot] + rt->ready_at[k].offset;
    rt->ready(rt->ready_ctx, k, t);
}

bool dtl_llvm_rt_single(dtl_llvm_rt *rt, uint32_t i, void *const *slots)
{
    dtl_llvm_single *s = &rt->single[i];
    for (uint32_t j = 0; j < s->n->nin; j++)
        s->args[j].data = (const char *)slots[s->in[j].slot] + s->in[j].offset;
    dtl_err kerr;
    if (dtl_cpu_conv_handles(s->n) &&
        dtl_cpu_conv_scratch(s->n, s->args) <= rt->scratch_bytes) {
        dtl_cpu_conv(slots[DTL_LLVM_SLOT_POOL], s->n, s->args,
                     (char *)slots[s->out.slot] + s->out.offset, rt->scratch);
        return true;
    }
    if (dtl_ref_kernel(s->n, s->args, (char *)slots[s->out.slot] + s->out.offset, rt->seed,
                       &kerr))
        return true;
    rt->failed = i;
    return dtl_err_set(&rt->err, kerr.kind, "%%%u (%s%s%s): %s", s->id, dtl_op_name(s->n->op),
                       s->n->name ? " " : "", s->n->name ? s->n->name : "", kerr.msg);
}

bool dtl_llvm_consts_fill(const dtl_kprog *kp, void *block, uint64_t seed, dtl_err *err)
{
    const dtl_graph *g = kp->g;
    for (dtl_val v = 0; v < g->nnodes; v++)
        if (kp->loc[v].kind == DTL_LOC_CONST &&
            !dtl_ref_kernel(&g->nodes[v], NULL, (char *)block + kp->loc[v].offset, seed, err))
            return false;
    return true;
}
