/* kernels/cuda/cuda_plan.c — the CUDA backend's memory plan (see cuda_plan.h).
 *
 * The same liveness scheme as the reference executor (runtime/exec.c), with two differences
 * that a CUDA Graph needs: inputs get fixed device slots instead of being read where the
 * caller's buffer happens to be, and reshapes are aliases (a kernel launch saved). Lifetimes
 * are counted on roots: a read of an alias is a read of the node whose bytes it shares. The
 * free list is a sorted array of live blocks (n is the number of nodes, small; the scan is
 * O(n^2) in the worst case, done once per plan). */
#include "cuda_plan.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../../runtime/blocks.h"
#include "../ref/ref.h"

static uint64_t align_up(uint64_t n)
{
    return (n + DTL_CU_ALIGN - 1) / DTL_CU_ALIGN * DTL_CU_ALIGN;
}

static uint64_t value_bytes(const dtl_node *n)
{
    return align_up(dtl_node_numel(n) * dtl_dtype_size(n->dtype));
}

static bool supported(dtl_dtype t)
{
    return t == DTL_DTYPE_F32 || t == DTL_DTYPE_F64 || t == DTL_DTYPE_I32 ||
           t == DTL_DTYPE_I64 || t == DTL_DTYPE_BOOL || t == DTL_DTYPE_BF16;
}

bool dtl_cu_layout_plan(dtl_cu_layout *L, const dtl_graph *g, bool reuse, dtl_arena *A,
                        dtl_err *err)
{
    uint32_t nn = g->nnodes, no = g->nouts;
    memset(L, 0, sizeof *L);
    L->nnodes = nn;
    L->nouts = no;
    L->loc = dtl_arena_array(A, nn + 1, sizeof *L->loc);
    L->off = dtl_arena_array(A, nn + 1, sizeof *L->off);
    L->root = dtl_arena_array(A, nn + 1, sizeof *L->root);
    L->def = dtl_arena_array(A, nn + 1, sizeof *L->def);
    L->last = dtl_arena_array(A, nn + 1, sizeof *L->last);
    L->stage_off = dtl_arena_array(A, no + 1, sizeof *L->stage_off);
    L->status = dtl_arena_array(A, nn + 1, sizeof *L->status);
    for (uint32_t v = 0; v < nn; v++) {
        const dtl_node *n = &g->nodes[v];
        if (!supported(n->dtype) || !dtl_ref_supports_node(g, v))   /* bf16: storage only */
            return dtl_err_set(err, DTL_ERR_USAGE, "cuda: %%%u (%s): dtype %s is not "
                               "supported", v, dtl_op_name(n->op), dtl_dtype_name(n->dtype));
        L->root[v] = n->op == DTL_OP_RESHAPE ? L->root[n->in[0]] : v;
        L->def[v] = v;
        L->last[v] = v;
        L->status[v] = UINT32_MAX;
        if (n->op == DTL_OP_GATHER || n->op == DTL_OP_SCATTER_ADD)
            L->status[v] = L->nstatus++;
    }
    for (uint32_t v = 0; v < nn; v++)
        for (uint32_t i = 0; i < g->nodes[v].nin; i++) {
            dtl_val r = L->root[g->nodes[v].in[i]];
            if (L->last[r] != UINT32_MAX)
                L->last[r] = v;
        }
    for (uint32_t k = 0; k < no; k++)
        L->last[L->root[g->outs[k].val]] = UINT32_MAX;

    /* Inputs and constants: fixed slots. */
    uint64_t in_bytes = 0, c_bytes = 0;
    for (uint32_t v = 0; v < nn; v++) {
        const dtl_node *n = &g->nodes[v];
        switch (n->op) {
        case DTL_OP_INPUT:
            L->loc[v] = DTL_CU_LOC_INPUT;
            L->off[v] = in_bytes;
            in_bytes += value_bytes(n);
            break;
        case DTL_OP_PARAM:
        case DTL_OP_STATE: L->loc[v] = DTL_CU_LOC_STORE; break;
        case DTL_OP_CONST:
        case DTL_OP_IOTA:
            L->loc[v] = DTL_CU_LOC_CONST;
            L->off[v] = c_bytes;
            c_bytes += value_bytes(n);
            break;
        case DTL_OP_RESHAPE: L->loc[v] = DTL_CU_LOC_ALIAS; break;
        default: L->loc[v] = DTL_CU_LOC_ARENA; break;
        }
    }

    /* The arena, by liveness. */
    dtl_blocks s;
    dtl_blocks_init(&s, nn + no, A);
    for (uint32_t v = 0; v < nn; v++) {
        const dtl_node *n = &g->nodes[v];
        if (L->loc[v] != DTL_CU_LOC_ARENA)
            continue;
        L->off[v] = dtl_blocks_take(&s, value_bytes(n));
        L->naive_bytes += value_bytes(n);
        if (!reuse)
            continue;
        for (uint32_t i = 0; i < n->nin; i++) {
            dtl_val u = L->root[n->in[i]];
            bool first = true;   /* an operand read twice (x * x, or x and its reshape) */
            for (uint32_t j = 0; j < i; j++)
                first = first && L->root[n->in[j]] != u;
            if (first && L->loc[u] == DTL_CU_LOC_ARENA && L->last[u] == v)
                dtl_blocks_release(&s, L->off[u], value_bytes(&g->nodes[u]));
        }
        if (L->last[v] == v)   /* read by nobody: free once computed */
            dtl_blocks_release(&s, L->off[v], value_bytes(n));
    }
    for (uint32_t k = 0; k < no; k++) {
        dtl_val r = L->root[g->outs[k].val];
        dtl_op op = g->nodes[r].op;
        L->stage_off[k] = UINT64_MAX;
        if (op == DTL_OP_INPUT || op == DTL_OP_PARAM || op == DTL_OP_STATE) {
            uint64_t b = value_bytes(&g->nodes[g->outs[k].val]);
            L->stage_off[k] = dtl_blocks_take(&s, b);
            L->naive_bytes += b;
        }
    }

    L->input_bytes = in_bytes;
    L->const_bytes = c_bytes;
    L->arena_bytes = s.top;
    L->input_base = 0;
    L->const_base = in_bytes;
    L->arena_base = L->const_base + c_bytes;
    L->status_base = L->arena_base + s.top;
    L->total = L->status_base + align_up((uint64_t)L->nstatus * 16);
    for (uint32_t v = 0; v < nn; v++) {
        if (L->loc[v] == DTL_CU_LOC_CONST)
            L->off[v] += L->const_base;
        else if (L->loc[v] == DTL_CU_LOC_ARENA)
            L->off[v] += L->arena_base;
    }
    for (uint32_t k = 0; k < no; k++)
        if (L->stage_off[k] != UINT64_MAX)
            L->stage_off[k] += L->arena_base;
    return true;
}

/* ---- the checker ---- */

static bool fail(char *why, size_t len, const char *fmt, uint32_t a, uint32_t b)
{
    snprintf(why, len, fmt, a, b);
    return false;
}

static bool bytes_overlap(uint64_t a, uint64_t an, uint64_t b, uint64_t bn)
{
    return an && bn && a < b + bn && b < a + an;
}

bool dtl_cu_layout_check(const dtl_cu_layout *L, const dtl_graph *g, char *why, size_t len)
{
    uint32_t nn = g->nnodes;
    for (uint32_t v = 0; v < nn; v++) {
        const dtl_node *n = &g->nodes[v];
        uint64_t b = dtl_node_numel(n) * dtl_dtype_size(n->dtype);
        dtl_val r = L->root[v];
        if (g->nodes[r].op == DTL_OP_RESHAPE || (r != v && n->op != DTL_OP_RESHAPE))
            return fail(why, len, "%%%u: bad root %%%u", v, r);
        switch (L->loc[v]) {
        case DTL_CU_LOC_INPUT:
            if (L->off[v] + b > L->const_base)
                return fail(why, len, "%%%u: input slot outside its region%.0u", v, 0);
            break;
        case DTL_CU_LOC_CONST:
            if (L->off[v] < L->const_base || L->off[v] + b > L->arena_base)
                return fail(why, len, "%%%u: constant outside its region%.0u", v, 0);
            break;
        case DTL_CU_LOC_ARENA:
            if (L->off[v] < L->arena_base || L->off[v] + b > L->status_base)
                return fail(why, len, "%%%u: value outside the arena%.0u", v, 0);
            break;
        default: break;
        }
        if ((L->loc[v] == DTL_CU_LOC_INPUT || L->loc[v] == DTL_CU_LOC_CONST ||
             L->loc[v] == DTL_CU_LOC_ARENA) && L->off[v] % DTL_CU_ALIGN)
            return fail(why, len, "%%%u: offset not aligned%.0u", v, 0);
    }
    /* Arena values that share bytes must not be live at once: u (< v) dead before v. */
    for (uint32_t v = 0; v < nn; v++) {
        if (L->loc[v] != DTL_CU_LOC_ARENA)
            continue;
        const dtl_node *nv = &g->nodes[v];
        uint64_t bv = dtl_node_numel(nv) * dtl_dtype_size(nv->dtype);
        for (uint32_t u = 0; u < v; u++) {
            if (L->loc[u] != DTL_CU_LOC_ARENA)
                continue;
            const dtl_node *nu = &g->nodes[u];
            uint64_t bu = dtl_node_numel(nu) * dtl_dtype_size(nu->dtype);
            if (bytes_overlap(L->off[u], bu, L->off[v], bv) && L->last[u] >= v)
                return fail(why, len, "%%%u and %%%u share memory while both are live", u, v);
        }
        for (uint32_t i = 0; i < nv->nin; i++) {
            dtl_val r = L->root[nv->in[i]];
            const dtl_node *nr = &g->nodes[r];
            if (L->loc[r] == DTL_CU_LOC_ARENA && r != v &&
                bytes_overlap(L->off[r], dtl_node_numel(nr) * dtl_dtype_size(nr->dtype),
                              L->off[v], bv))
                return fail(why, len, "%%%u overlaps its operand %%%u", v, r);
        }
    }
    /* Staging blocks: disjoint from every value live at the end and from each other. */
    for (uint32_t k = 0; k < g->nouts; k++) {
        if (L->stage_off[k] == UINT64_MAX)
            continue;
        const dtl_node *o = &g->nodes[g->outs[k].val];
        uint64_t bk = dtl_node_numel(o) * dtl_dtype_size(o->dtype);
        for (uint32_t u = 0; u < nn; u++) {
            const dtl_node *nu = &g->nodes[u];
            if (L->loc[u] == DTL_CU_LOC_ARENA && L->last[u] == UINT32_MAX &&
                bytes_overlap(L->off[u], dtl_node_numel(nu) * dtl_dtype_size(nu->dtype),
                              L->stage_off[k], bk))
                return fail(why, len, "output %u's staging block overlaps %%%u", k, u);
        }
        for (uint32_t j = 0; j < k; j++) {
            if (L->stage_off[j] == UINT64_MAX)
                continue;
            const dtl_node *oj = &g->nodes[g->outs[j].val];
            if (bytes_overlap(L->stage_off[j], dtl_node_numel(oj) * dtl_dtype_size(oj->dtype),
                              L->stage_off[k], bk))
                return fail(why, len, "outputs %u and %u share a staging block", j, k);
        }
    }
    return true;
}

bool dtl_cu_win_of(const dtl_graph *g, dtl_val v, dtl_cu_wop *op, dtl_cu_win *win)
{
    const dtl_node *n = &g->nodes[v];
    if (dtl_op_kind_of(n->op) != DTL_OPK_WINDOW ||
        (n->dtype != DTL_DTYPE_F32 && n->dtype != DTL_DTYPE_F64))
        return false;
    const dtl_node *a = &g->nodes[n->in[0]], *b = n->nin > 1 ? &g->nodes[n->in[1]] : NULL;
    const int64_t *xs = a->shape, *ws = NULL, *ys = n->shape;
    switch (n->op) {
    case DTL_OP_CONV2D: *op = DTL_CU_W_CONV; ws = b->shape; break;
    case DTL_OP_CONV2D_BWD_X:   /* dy, w -> dx */
        *op = DTL_CU_W_CONV_BWD_X;
        xs = n->shape, ws = b->shape, ys = a->shape;
        break;
    case DTL_OP_CONV2D_BWD_W:   /* x, dy -> dw */
        *op = DTL_CU_W_CONV_BWD_W;
        ws = n->shape, ys = b->shape;
        break;
    case DTL_OP_MAXPOOL2D: *op = DTL_CU_W_MAXPOOL; break;
    case DTL_OP_MAXPOOL2D_BWD: *op = DTL_CU_W_MAXPOOL_BWD; ys = b->shape; break;   /* x, dy */
    case DTL_OP_AVGPOOL2D: *op = DTL_CU_W_AVGPOOL; break;
    case DTL_OP_AVGPOOL2D_BWD: *op = DTL_CU_W_AVGPOOL_BWD; xs = n->shape, ys = a->shape; break;
    default: return false;
    }
    const dtl_win_attr *w = &n->attr.win;
    *win = dtl_cu_win_make(w->kernel, w->stride, w->pad, w->dil, w->groups, w->count_pad, xs,
                           ws, ys, n->dtype == DTL_DTYPE_F64);
    return true;
}
