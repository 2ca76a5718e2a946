/* compiler/passes/fuse_print.c — the kernel program printed (--emit=fused) and checked
 * (dtl_kprog_verify).
 *
 * Design. The verifier re-derives everything from the finished program and the graph alone
 * — which node is read by which kernel, in which order, where each value lives and for how
 * long — and never looks at the fuser's working tables, so that a mistake in the fuser is
 * not repeated here. Lifetimes are in kernel numbers: a stored value lives from its kernel
 * to the last kernel that reads it (through views too), or to the end when a graph output
 * needs it; two arena values whose bytes overlap must have disjoint lifetimes, except for
 * the contract's in-place case, which is checked in full.
 */
#include "fuse.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define NONE UINT32_MAX

static bool elem_op(dtl_op op)
{
    dtl_op_kind k = dtl_op_kind_of(op);
    return k == DTL_OPK_UNARY || k == DTL_OPK_BINARY || k == DTL_OPK_TERNARY ||
           op == DTL_OP_BROADCAST || op == DTL_OP_IOTA;
}

static bool computed_op(dtl_op op)
{
    return op != DTL_OP_INPUT && op != DTL_OP_PARAM && op != DTL_OP_STATE &&
           op != DTL_OP_CONST && op != DTL_OP_RESHAPE;
}

static bool same_shape(uint32_t ra, const int64_t *sa, uint32_t rb, const int64_t *sb)
{
    if (ra != rb)
        return false;
    for (uint32_t i = 0; i < ra; i++)
        if (sa[i] != sb[i])
            return false;
    return true;
}

static uint64_t node_bytes(const dtl_node *n)
{
    return dtl_node_numel(n) * dtl_dtype_size(n->dtype);
}

static bool swaps_last_two(const dtl_node *t)
{
    if (t->op != DTL_OP_TRANSPOSE || t->rank < 2)
        return false;
    for (uint32_t i = 0; i + 2 < t->rank; i++)
        if (t->attr.perm[i] != i)
            return false;
    return t->attr.perm[t->rank - 2] == t->rank - 1 && t->attr.perm[t->rank - 1] == t->rank - 2;
}

/* Whether n has the row shape of kernel k's loop: its shape with the last dim 1. */
static bool is_row_of(const dtl_node *n, const dtl_kernel *k)
{
    if (n->rank != k->rank || k->rank < 1 || n->shape[n->rank - 1] != 1)
        return false;
    for (uint32_t i = 0; i + 1 < k->rank; i++)
        if (n->shape[i] != k->shape[i])
            return false;
    return true;
}

/* What member v of kernel k reads from memory or registers (*nr values): a MATMUL root
 * reads its matmul_a and matmul_b (into buf), the others their operands. */
static const dtl_val *reads_of(const dtl_kprog *p, const dtl_kernel *k, dtl_val v,
                               dtl_val buf[2], uint32_t *nr)
{
    const dtl_node *n = &p->g->nodes[v];
    if (k->kind == DTL_K_MATMUL && v == k->root) {
        buf[0] = k->matmul_a;
        buf[1] = k->matmul_b;
        *nr = 2;
        return buf;
    }
    *nr = n->nin;
    return n->in;
}

/* ==== printing ============================================================================ */

static const char *const kind_names[] = {"elemwise", "reduce", "matmul", "single", "row"};

static void print_shape(FILE *out, uint32_t rank, const int64_t *shape)
{
    fputc('[', out);
    for (uint32_t i = 0; i < rank; i++)
        fprintf(out, "%s%" PRId64, i ? ", " : "", shape[i]);
    fputc(']', out);
}

/* The attributes a loop's code depends on (the rest: --emit=graph). */
static void print_attrs(FILE *out, const dtl_node *n)
{
    switch (n->op) {
    case DTL_OP_SUM:
    case DTL_OP_REDUCE_MAX: {
        fprintf(out, " axes=[");
        const char *sep = "";
        for (uint32_t i = 0; i < 32; i++)
            if (n->attr.red.axes >> i & 1) {
                fprintf(out, "%s%u", sep, i);
                sep = ", ";
            }
        fprintf(out, "]%s", n->attr.red.keepdims ? " keepdims" : "");
        break;
    }
    case DTL_OP_IOTA:
    case DTL_OP_ARGMAX:
    case DTL_OP_CONCAT:
    case DTL_OP_GATHER:
    case DTL_OP_SCATTER_ADD:
        fprintf(out, " axis=%u", n->attr.axis);
        break;
    case DTL_OP_TRANSPOSE:
        fprintf(out, " perm=[");
        for (uint32_t i = 0; i < n->rank; i++)
            fprintf(out, "%s%u", i ? ", " : "", n->attr.perm[i]);
        fputc(']', out);
        break;
    case DTL_OP_CONV2D: case DTL_OP_CONV2D_BWD_X: case DTL_OP_CONV2D_BWD_W:
    case DTL_OP_MAXPOOL2D: case DTL_OP_MAXPOOL2D_BWD: case DTL_OP_AVGPOOL2D:
    case DTL_OP_AVGPOOL2D_BWD: {
        const dtl_win_attr *w = &n->attr.win;
        if (w->kernel[0])
            fprintf(out, " kernel=[%d, %d]", w->kernel[0], w->kernel[1]);
        fprintf(out, " stride=[%d, %d] pad=[%d, %d]", w->stride[0], w->stride[1], w->pad[0],
                w->pad[1]);
        break;
    }
    default:
        break;
    }
}

static void print_loc(FILE *out, const dtl_kprog *p, dtl_val v)
{
    const dtl_loc *l = &p->loc[v];
    switch (l->kind) {
    case DTL_LOC_NONE:
        fprintf(out, "none");
        break;
    case DTL_LOC_INPUT:
        fprintf(out, "input");
        break;
    case DTL_LOC_STORE:
        fprintf(out, "store:%s", p->g->nodes[l->of].name);
        break;
    case DTL_LOC_CONST:
        fprintf(out, "const+%" PRIu64, l->offset);
        break;
    case DTL_LOC_ARENA:
        fprintf(out, "arena+%" PRIu64, l->offset);
        break;
    case DTL_LOC_ALIAS:
        fprintf(out, "=%%%u", l->of);
        break;
    }
}

static bool in_list(const dtl_val *xs, uint32_t n, dtl_val v)
{
    for (uint32_t i = 0; i < n; i++)
        if (xs[i] == v)
            return true;
    return false;
}

void dtl_kprog_print(FILE *out, const dtl_kprog *p)
{
    const dtl_graph *g = p->g;
    char buf[200];
    uint32_t nmem = 0;
    for (uint32_t ki = 0; ki < p->nk; ki++) {
        const dtl_kernel *k = &p->k[ki];
        nmem += k->nmembers;
        fprintf(out, "k%u %s ", ki, kind_names[k->kind]);
        print_shape(out, k->rank, k->shape);
        if (k->kind == DTL_K_MATMUL)
            fprintf(out, " a=%%%u%s b=%%%u%s", k->matmul_a, k->trans_a ? "^T" : "",
                    k->matmul_b, k->trans_b ? "^T" : "");
        uint32_t *pass = NULL;
        if (k->kind == DTL_K_ROW) {
            pass = calloc(k->nmembers + 1, sizeof *pass);
            if (pass)
                fprintf(out, " passes=%u", dtl_row_passes(p, k, pass));
        }
        fputc('\n', out);
        for (uint32_t i = 0; i < k->nmembers; i++) {
            dtl_val v = k->members[i];
            const dtl_node *n = &g->nodes[v];
            fprintf(out, "    %%%u = %s(", v, dtl_op_name(n->op));
            for (uint32_t j = 0; j < n->nin; j++)
                fprintf(out, "%s%%%u", j ? ", " : "", n->in[j]);
            fprintf(out, ") : %s", dtl_tensor_str(buf, sizeof buf, n->dtype, n->rank, n->shape));
            print_attrs(out, n);
            if (pass)
                fprintf(out, " pass=%u", pass[i]);
            if (in_list(k->outs, k->nouts, v)) {
                fprintf(out, " -> ");
                print_loc(out, p, v);
            }
            fputc('\n', out);
        }
        free(pass);
        fprintf(out, "    ins");
        for (uint32_t j = 0; j < k->nins; j++) {
            fprintf(out, " %%%u@", k->ins[j]);
            print_loc(out, p, k->ins[j]);
        }
        fputc('\n', out);
    }
    static const char *const okind[] = {"loss", "value", "update", "update"};
    for (uint32_t oi = 0; oi < g->nouts; oi++) {
        const dtl_output *o = &g->outs[oi];
        fprintf(out, "%s %s = %%%u@", okind[o->kind], o->name, o->val);
        print_loc(out, p, o->val);
        if (o->kind == DTL_OUT_PARAM || o->kind == DTL_OUT_STATE)
            fprintf(out, p->loc[o->val].kind == DTL_LOC_STORE && p->loc[o->val].of == o->target
                             ? " (in place)" : " (copied at commit)");
        fputc('\n', out);
    }
    fprintf(out, "%u kernels, %u members; arena %" PRIu64 " bytes (naive %" PRIu64
            "); constants %" PRIu64 " bytes\n", p->nk, nmem, p->arena_bytes, p->naive_bytes,
            p->const_bytes);
}

/* ==== verification ======================================================================== */

typedef struct vctx {
    char *buf;
    size_t len;
} vctx;

static bool fail(vctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(vctx *c, const char *fmt, ...)
{
    if (c->len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->buf, c->len, fmt, ap);
        va_end(ap);
    }
    return false;
}

/* The node whose bytes v's are, by the plan's aliases (NONE if the chain is broken). */
static dtl_val resolve(const dtl_kprog *p, dtl_val v)
{
    if (p->loc[v].kind != DTL_LOC_ALIAS)
        return v;
    return p->loc[v].of < p->g->nnodes ? p->loc[v].of : NONE;
}

static dtl_val graph_base(const dtl_graph *g, dtl_val v)
{
    while (g->nodes[v].op == DTL_OP_RESHAPE)
        v = g->nodes[v].in[0];
    return v;
}

/* Whether every member of k reading x does so directly, at the loop index, as an
 * elementwise member (not a broadcast, not a root) at a position <= by. */
static bool read_in_step(const dtl_kprog *p, const dtl_kernel *k, dtl_val x, uint32_t by)
{
    const dtl_graph *g = p->g;
    dtl_val buf[2];
    for (uint32_t i = 0; i < k->nmembers; i++) {
        dtl_val n = k->members[i];
        const dtl_node *nd = &g->nodes[n];
        uint32_t nr;
        const dtl_val *rd = reads_of(p, k, n, buf, &nr);
        for (uint32_t j = 0; j < nr; j++) {
            if (graph_base(g, rd[j]) != x)
                continue;
            if (rd[j] != x || i > by || !elem_op(nd->op) || nd->op == DTL_OP_BROADCAST ||
                n == k->root ||
                !same_shape(g->nodes[x].rank, g->nodes[x].shape, k->rank, k->shape))
                return false;
        }
    }
    return true;
}


bool dtl_kprog_verify(const dtl_kprog *p, char *buf, size_t len)
{
    vctx C = {buf, len}, *c = &C;
    const dtl_graph *g = p->g;
    uint32_t nn = g->nnodes, nk = p->nk;
    if (len)
        buf[0] = '\0';
    bool ok = false;
    uint32_t *count = calloc(nn + 1, sizeof *count);
    uint32_t *defk = calloc(nn + 1, sizeof *defk);
    uint32_t *lastk = calloc(nn + 1, sizeof *lastk);
    bool *isout = calloc(nn + 1, sizeof *isout);
    dtl_val *arena_vals = calloc(nn + 1, sizeof *arena_vals);
    dtl_val *const_vals = calloc(nn + 1, sizeof *const_vals);
    uint32_t *posv = calloc(nn + 1, sizeof *posv);       /* a member's place in its kernel */
    bool *outflag = calloc(nn + 1, sizeof *outflag);     /* in its kernel's outs */
    uint32_t *instamp = calloc(nn + 1, sizeof *instamp); /* ki + 1: in k's ins … */
    uint32_t *inidx = calloc(nn + 1, sizeof *inidx);     /* … at this index */
    if (!count || !defk || !lastk || !isout || !arena_vals || !const_vals || !posv ||
        !outflag || !instamp || !inidx) {
        fail(c, "out of memory");
        goto done;
    }
    dtl_val rbuf[2];

    /* Partition and kernel shapes. */
    for (uint32_t ki = 0; ki < nk; ki++) {
        const dtl_kernel *k = &p->k[ki];
        if (k->nmembers == 0) {
            fail(c, "k%u has no members", ki);
            goto done;
        }
        for (uint32_t i = 0; i < k->nmembers; i++) {
            dtl_val v = k->members[i];
            if (v >= nn) {
                fail(c, "k%u: member %u is not a node", ki, v);
                goto done;
            }
            if (!computed_op(g->nodes[v].op)) {
                fail(c, "k%u: %%%u (%s) is not computed by kernels", ki, v,
                     dtl_op_name(g->nodes[v].op));
                goto done;
            }
            posv[v] = i;
            if (count[v]++ || p->kernel_of[v] != ki) {
                fail(c, "%%%u: kernel_of says k%u, found in k%u (or twice)", v,
                     p->kernel_of[v], ki);
                goto done;
            }
        }
        const dtl_node *r = k->root < nn ? &g->nodes[k->root] : NULL;
        uint32_t first_elem = 0, end_elem = k->nmembers;
        switch (k->kind) {
        case DTL_K_ELEMWISE:
            if (k->root != DTL_VAL_NONE) {
                fail(c, "k%u: an elemwise kernel has a root", ki);
                goto done;
            }
            break;
        case DTL_K_REDUCE:
            if (!r || (r->op != DTL_OP_SUM && r->op != DTL_OP_REDUCE_MAX) ||
                k->members[k->nmembers - 1] != k->root ||
                !same_shape(k->rank, k->shape, g->nodes[r->in[0]].rank,
                            g->nodes[r->in[0]].shape)) {
                fail(c, "k%u: bad reduce kernel (root last, loop of its operand's shape)", ki);
                goto done;
            }
            end_elem = k->nmembers - 1;
            break;
        case DTL_K_MATMUL:
            if (!r || r->op != DTL_OP_MATMUL || k->members[0] != k->root ||
                !same_shape(k->rank, k->shape, r->rank, r->shape)) {
                fail(c, "k%u: bad matmul kernel (root first, loop of its shape)", ki);
                goto done;
            }
            for (int s = 0; s < 2; s++) {
                dtl_val in = r->in[s], want = s ? k->matmul_b : k->matmul_a;
                bool tr = s ? k->trans_b : k->trans_a;
                bool good = tr ? swaps_last_two(&g->nodes[in]) && g->nodes[in].in[0] == want
                               : in == want;
                if (!good) {
                    fail(c, "k%u: operand %c of %%%u is not %%%u%s", ki, s ? 'b' : 'a',
                         k->root, want, tr ? " transposed" : "");
                    goto done;
                }
            }
            first_elem = 1;
            break;
        case DTL_K_ROW: {
            if (k->root != DTL_VAL_NONE || k->rank < 1 || k->shape[k->rank - 1] < 2) {
                fail(c, "k%u: a row kernel has no root and rows of two or more", ki);
                goto done;
            }
            for (uint32_t i = 0; i < k->nmembers; i++) {
                const dtl_node *n = &g->nodes[k->members[i]];
                bool full = same_shape(n->rank, n->shape, k->rank, k->shape);
                bool row = is_row_of(n, k);
                const dtl_node *x = n->nin ? &g->nodes[n->in[0]] : n;
                bool good = (elem_op(n->op) && n->op != DTL_OP_IOTA && (full || row)) ||
                            ((n->op == DTL_OP_SUM || n->op == DTL_OP_REDUCE_MAX) && row &&
                             n->attr.red.keepdims && n->attr.red.axes == 1u << (n->rank - 1) &&
                             same_shape(x->rank, x->shape, k->rank, k->shape));
                if (!good) {
                    fail(c, "k%u: %%%u (%s) cannot be a member of this row kernel", ki,
                         k->members[i], dtl_op_name(n->op));
                    goto done;
                }
            }
            end_elem = 0;
            break;
        }
        case DTL_K_SINGLE:
            if (k->nmembers != 1 || k->members[0] != k->root || !r ||
                !same_shape(k->rank, k->shape, r->rank, r->shape)) {
                fail(c, "k%u: a single kernel is one node, its root", ki);
                goto done;
            }
            end_elem = 0;
            break;
        default:
            fail(c, "k%u: bad kind %d", ki, (int)k->kind);
            goto done;
        }
        for (uint32_t i = first_elem; i < end_elem; i++) {
            const dtl_node *n = &g->nodes[k->members[i]];
            if (!elem_op(n->op) || !same_shape(n->rank, n->shape, k->rank, k->shape)) {
                fail(c, "k%u: %%%u (%s) cannot be an elementwise member of this loop", ki,
                     k->members[i], dtl_op_name(n->op));
                goto done;
            }
        }
    }
    for (uint32_t v = 0; v < nn; v++)
        if (p->kernel_of[v] != NONE && !count[v]) {
            fail(c, "%%%u: kernel_of says k%u but it is not a member", v, p->kernel_of[v]);
            goto done;
        }

    for (uint32_t ki = 0; ki < nk; ki++)
        for (uint32_t j = 0; j < p->k[ki].nouts; j++) {
            dtl_val o = p->k[ki].outs[j];
            if (o >= nn || p->kernel_of[o] != ki || outflag[o]) {
                fail(c, "k%u: out %u is not a member (or twice)", ki, o);
                goto done;
            }
            outflag[o] = true;
        }

    /* Locations of what no kernel computes. */
    for (uint32_t v = 0; v < nn; v++) {
        const dtl_node *n = &g->nodes[v];
        const dtl_loc *l = &p->loc[v];
        bool good = true;
        if (n->op == DTL_OP_INPUT)
            good = l->kind == DTL_LOC_INPUT;
        else if (n->op == DTL_OP_PARAM || n->op == DTL_OP_STATE)
            good = l->kind == DTL_LOC_STORE && l->of == v;
        else if (n->op == DTL_OP_CONST)
            good = l->kind == DTL_LOC_CONST || l->kind == DTL_LOC_NONE;
        else if (n->op == DTL_OP_RESHAPE)
            good = l->kind == DTL_LOC_NONE ||
                   (l->kind == DTL_LOC_ALIAS && l->of == graph_base(g, v) &&
                    p->loc[l->of].kind != DTL_LOC_NONE && p->loc[l->of].kind != DTL_LOC_ALIAS);
        else if (p->kernel_of[v] == NONE)
            good = l->kind == DTL_LOC_NONE;
        else {
            bool out = outflag[v];
            good = out ? l->kind == DTL_LOC_ARENA || l->kind == DTL_LOC_STORE
                       : l->kind == DTL_LOC_NONE;
        }
        if (!good) {
            fail(c, "%%%u (%s): wrong location kind %d", v, dtl_op_name(n->op), (int)l->kind);
            goto done;
        }
        if ((l->kind == DTL_LOC_CONST || l->kind == DTL_LOC_ARENA) && l->offset % 64) {
            fail(c, "%%%u: offset %" PRIu64 " is not 64-byte aligned", v, l->offset);
            goto done;
        }
        uint64_t top = l->kind == DTL_LOC_CONST ? p->const_bytes : p->arena_bytes;
        if ((l->kind == DTL_LOC_CONST || l->kind == DTL_LOC_ARENA) &&
            (l->offset > top || node_bytes(n) > top - l->offset)) {
            fail(c, "%%%u: [%" PRIu64 ", +%" PRIu64 ") is outside its block of %" PRIu64
                 " bytes", v, l->offset, node_bytes(n), top);
            goto done;
        }
    }

    /* Graph outputs: available at the end. */
    for (uint32_t oi = 0; oi < g->nouts; oi++) {
        dtl_val v = g->outs[oi].val, b = resolve(p, v);
        if (b == NONE || p->loc[v].kind == DTL_LOC_NONE || p->loc[b].kind == DTL_LOC_NONE) {
            fail(c, "output \"%s\" (%%%u) is not stored", g->outs[oi].name, v);
            goto done;
        }
        isout[b] = true;
    }

    /* Reads: every member's operand is in its kernel before it, or was stored before. */
    for (uint32_t v = 0; v < nn; v++)
        defk[v] = p->kernel_of[v], lastk[v] = isout[v] ? nk : p->kernel_of[v];
    for (uint32_t ki = 0; ki < nk; ki++) {
        const dtl_kernel *k = &p->k[ki];
        for (uint32_t j = 0; j < k->nins; j++) {
            if (k->ins[j] >= nn || p->loc[k->ins[j]].kind == DTL_LOC_NONE) {
                fail(c, "k%u: in %%%u has no location", ki, k->ins[j]);
                goto done;
            }
            if (instamp[k->ins[j]] == ki + 1) {
                fail(c, "k%u: %%%u is twice in ins", ki, k->ins[j]);
                goto done;
            }
            instamp[k->ins[j]] = ki + 1;
            inidx[k->ins[j]] = j;
        }
        bool *used = calloc(k->nins + 1, sizeof *used);
        if (!used) {
            fail(c, "out of memory");
            goto done;
        }
        for (uint32_t i = 0; i < k->nmembers; i++) {
            dtl_val n = k->members[i];
            const dtl_node *nd = &g->nodes[n];
            uint32_t nr;
        const dtl_val *rd = reads_of(p, k, n, rbuf, &nr);
            for (uint32_t j = 0; j < nr; j++) {
                dtl_val r = rd[j];
                if (p->kernel_of[r] == ki) {
                    uint32_t at = posv[r];
                    bool reg_ok = at < i && (n == k->root ? k->kind == DTL_K_REDUCE
                                                          : nd->op != DTL_OP_BROADCAST) &&
                                  !(k->kind == DTL_K_REDUCE && r == k->root);
                    if (k->kind == DTL_K_ROW) {   /* fuse.h: full and row values */
                        bool nrow = is_row_of(nd, k), rrow = is_row_of(&g->nodes[r], k);
                        bool red = nd->op == DTL_OP_SUM || nd->op == DTL_OP_REDUCE_MAX;
                        reg_ok = at < i && (nd->op == DTL_OP_BROADCAST ? rrow
                                            : red                      ? !rrow
                                                                       : !nrow || rrow);
                    }
                    if (!reg_ok) {
                        fail(c, "k%u: %%%u reads member %%%u in registers illegally", ki, n, r);
                        free(used);
                        goto done;
                    }
                    continue;
                }
                uint32_t at = instamp[r] == ki + 1 ? inidx[r] : NONE;
                if (at == NONE) {
                    fail(c, "k%u: %%%u reads %%%u, which is not in ins", ki, n, r);
                    free(used);
                    goto done;
                }
                used[at] = true;
                dtl_val b = resolve(p, r);
                if (b == NONE || p->loc[b].kind == DTL_LOC_NONE) {
                    fail(c, "k%u: %%%u reads %%%u, which is not stored", ki, n, r);
                    free(used);
                    goto done;
                }
                if (p->kernel_of[b] != NONE) {
                    if (p->kernel_of[b] >= ki || !outflag[b]) {
                        fail(c, "k%u: %%%u reads %%%u, which k%u does not store before", ki, n,
                             b, p->kernel_of[b]);
                        free(used);
                        goto done;
                    }
                    if (ki > lastk[b] || lastk[b] == NONE)
                        lastk[b] = ki;
                }
            }
        }
        for (uint32_t j = 0; j < k->nins; j++)
            if (!used[j]) {
                fail(c, "k%u: in %%%u is not read", ki, k->ins[j]);
                free(used);
                goto done;
            }
        free(used);
    }
    /* Every out is needed after its kernel. */
    for (uint32_t ki = 0; ki < nk; ki++)
        for (uint32_t j = 0; j < p->k[ki].nouts; j++)
            if (lastk[p->k[ki].outs[j]] == ki) {
                fail(c, "k%u: out %%%u is read by nobody after it", ki, p->k[ki].outs[j]);
                goto done;
            }

    /* Constants do not overlap. */
    uint32_t nc = 0, na = 0;
    for (uint32_t v = 0; v < nn; v++) {
        if (p->loc[v].kind == DTL_LOC_CONST && node_bytes(&g->nodes[v]))
            const_vals[nc++] = v;
        if (p->loc[v].kind == DTL_LOC_ARENA && node_bytes(&g->nodes[v]))
            arena_vals[na++] = v;
    }
    for (uint32_t i = 0; i < nc; i++)
        for (uint32_t j = i + 1; j < nc; j++) {
            const dtl_loc *a = &p->loc[const_vals[i]], *b = &p->loc[const_vals[j]];
            if (a->offset < b->offset + node_bytes(&g->nodes[const_vals[j]]) &&
                b->offset < a->offset + node_bytes(&g->nodes[const_vals[i]])) {
                fail(c, "constants %%%u and %%%u overlap", const_vals[i], const_vals[j]);
                goto done;
            }
        }

    /* Arena values overlap only when their lifetimes do not, or in place. */
    uint64_t naive = 0;
    for (uint32_t i = 0; i < na; i++)
        naive += node_bytes(&g->nodes[arena_vals[i]]);
    if (naive > p->naive_bytes || p->arena_bytes > p->naive_bytes) {
        fail(c, "naive_bytes %" PRIu64 " is less than the arena or its values", p->naive_bytes);
        goto done;
    }
    for (uint32_t i = 0; i < na; i++)
        for (uint32_t j = 0; j < na; j++) {
            dtl_val a = arena_vals[i], b = arena_vals[j];
            if (a == b || defk[a] > defk[b] || (defk[a] == defk[b] && a > b))
                continue;   /* each pair once, a defined first */
            uint64_t sa = node_bytes(&g->nodes[a]), sb = node_bytes(&g->nodes[b]);
            uint64_t oa = p->loc[a].offset, ob = p->loc[b].offset;
            if (!(oa < ob + sb && ob < oa + sa))
                continue;
            if (lastk[a] < defk[b])
                continue;
            /* In place: a dies in b's kernel, which reads it in step before writing b. */
            const dtl_kernel *k = &p->k[defk[b]];
            if (lastk[a] == defk[b] && oa == ob && sa == sb &&
                (k->kind == DTL_K_ELEMWISE || k->kind == DTL_K_REDUCE) && b != k->root &&
                in_list(k->ins, k->nins, a) && read_in_step(p, k, a, posv[b]))
                continue;
            fail(c, "%%%u (k%u..k%u) and %%%u (k%u..k%u) overlap in the arena", a, defk[a],
                 lastk[a], b, defk[b], lastk[b]);
            goto done;
        }

    /* Updates written into the store. */
    for (uint32_t v = 0; v < nn; v++) {
        const dtl_loc *l = &p->loc[v];
        if (l->kind != DTL_LOC_STORE || !computed_op(g->nodes[v].op))
            continue;
        dtl_val t = l->of;
        bool found = false;
        for (uint32_t oi = 0; oi < g->nouts; oi++)
            found = found || ((g->outs[oi].kind == DTL_OUT_PARAM ||
                               g->outs[oi].kind == DTL_OUT_STATE) &&
                              g->outs[oi].val == v && g->outs[oi].target == t);
        if (!found || t >= nn) {
            fail(c, "%%%u is written into the store of %%%u, which it does not update", v, t);
            goto done;
        }
        for (uint32_t w = 0; w < v; w++)
            if (w != v && p->loc[w].kind == DTL_LOC_STORE && p->loc[w].of == t &&
                computed_op(g->nodes[w].op)) {
                fail(c, "%%%u and %%%u are both written into the store of %%%u", w, v, t);
                goto done;
            }
        uint32_t ki = p->kernel_of[v];
        const dtl_kernel *k = &p->k[ki];
        if (!(k->kind == DTL_K_ELEMWISE || (k->kind == DTL_K_MATMUL && v != k->root))) {
            fail(c, "%%%u is written in place by a %s kernel", v, kind_names[k->kind]);
            goto done;
        }
        if (isout[t]) {
            fail(c, "%%%u is written in place, but the old %%%u is an output", v, t);
            goto done;
        }
        if (!read_in_step(p, k, t, posv[v])) {
            fail(c, "k%u writes %%%u in place but reads it elsewhere or later", ki, t);
            goto done;
        }
        for (uint32_t kj = ki + 1; kj < nk; kj++) {
            const dtl_kernel *kk = &p->k[kj];
            for (uint32_t i = 0; i < kk->nins; i++)
                if (resolve(p, kk->ins[i]) == t) {
                    fail(c, "k%u reads the old %%%u after k%u wrote it in place", kj, t, ki);
                    goto done;
                }
        }
    }
    ok = true;
done:
    free(count);
    free(defk);
    free(lastk);
    free(isout);
    free(arena_vals);
    free(const_vals);
    free(posv);
    free(outflag);
    free(instamp);
    free(inidx);
    return ok;
}
