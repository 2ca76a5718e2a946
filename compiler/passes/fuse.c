/* compiler/passes/fuse.c — fusion of a verified graph into kernels, and the static memory
 * plan (the contract is in fuse.h).
 *
 * Design. Fusion is a partition of the computed nodes into groups, grown by merging:
 * every computed node starts as a group of its own (its kind from its op), then the nodes
 * are visited in topological order and each tries to join the groups of its operands —
 * an elementwise node joins an ELEMWISE group of its shape or the epilogue of a MATMUL of
 * its shape; a SUM/REDUCE_MAX takes the ELEMWISE group that computes its operand as its
 * prologue; and (unless no_rows) a REDUCE over the last axis, the nodes that read its result
 * back along that axis, and further such reductions become one ROW kernel, run row by row in
 * passes (dtl_row_passes). A merge is kept only when it is legal, which is checked the same
 * way for every kind of merge, and is obviously enough right to trust:
 *   - registers: inside a group a member may read another member only directly (not
 *     through a RESHAPE view), only as an elementwise member (not a BROADCAST, not a
 *     MATMUL root, which read memory) or as a reduce root reading its operand, and a
 *     prologue member never reads its reduce root;
 *   - no cycle: no path of the group graph leaves the merged group and comes back to it
 *     (a depth-first search over the groups downstream; nodes after the one being visited
 *     are still alone in their groups and cannot lead back, so the search stops there).
 * The kernels are then the groups in a topological order of the group graph (Kahn's
 * algorithm, the group with the smallest first node first, which keeps the graph's own
 * order where it can — and puts e.g. the Adam bias corrections, scalars computed from the
 * step, before the weight-gradient matmul whose epilogue reads them).
 *
 * Memory: a stored value (a member another kernel or a graph output needs) is live from its
 * kernel to its last reader's kernel (a view's readers count for its base; graph outputs to
 * the end). Offsets are given kernel by kernel: first the kernel's outs (best fit among the
 * gaps between live blocks, else at the top), then the blocks of the values it read last
 * are released — so an output never overlaps what its kernel reads, except by the contract's
 * in-place rule, where an ELEMWISE/REDUCE out takes the block of an input that dies in the
 * kernel, has its byte size, is read only at the out's index and only by members that come
 * no later than the out (so a backend that stores each out as soon as it is computed still
 * reads the input first). Parameter and state updates are written straight into the store
 * when their kernel runs after every other reader of the old value (same member-order rule).
 * dtl_kprog_verify re-derives every fact from the finished program alone, not from the
 * fuser's tables, so it checks this code instead of repeating it.
 */
#include "fuse.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/blocks.h"

enum { FUSE_ALIGN = 64 };
#define NONE UINT32_MAX

static uint64_t round_up(uint64_t n)
{
    return (n + FUSE_ALIGN - 1) / FUSE_ALIGN * FUSE_ALIGN;
}

static uint64_t node_bytes(const dtl_node *n)
{
    return dtl_node_numel(n) * dtl_dtype_size(n->dtype);
}

static bool bound_leaf(dtl_op op)
{
    return op == DTL_OP_INPUT || op == DTL_OP_PARAM || op == DTL_OP_STATE;
}

/* Nodes that are not computed by a kernel: bound leaves, constants and views. */
static bool not_computed(dtl_op op)
{
    return bound_leaf(op) || op == DTL_OP_CONST || op == DTL_OP_RESHAPE;
}

/* Members of ELEMWISE loops (and prologues, epilogues). */
static bool elem_op(dtl_op op)
{
    dtl_op_kind k = dtl_op_kind_of(op);
    return k == DTL_OPK_UNARY || k == DTL_OPK_BINARY || k == DTL_OPK_TERNARY ||
           op == DTL_OP_BROADCAST || op == DTL_OP_IOTA;
}

static bool reduce_op(dtl_op op)
{
    return op == DTL_OP_SUM || op == DTL_OP_REDUCE_MAX;
}

/* A SUM/REDUCE_MAX over the last axis alone, keepdims, of a row of at least two elements
 * (of at least one row): what a ROW kernel reduces. */
static bool row_reduce(const dtl_graph *g, const dtl_node *n)
{
    if (!reduce_op(n->op) || !n->attr.red.keepdims || n->rank < 1 ||
        n->attr.red.axes != 1u << (n->rank - 1))
        return false;
    const dtl_node *x = &g->nodes[n->in[0]];
    return x->rank == n->rank && x->shape[x->rank - 1] >= 2 && dtl_node_numel(x) > 0;
}

/* Whether (rank, shape) is the row shape of the full shape (frank, full): the same with the
 * last dim 1. */
static bool is_row_shape(uint32_t rank, const int64_t *shape, uint32_t frank, const int64_t *full)
{
    if (rank != frank || rank < 1 || shape[rank - 1] != 1)
        return false;
    for (uint32_t i = 0; i + 1 < rank; i++)
        if (shape[i] != full[i])
            return false;
    return true;
}

static bool float_matmul(const dtl_node *n)
{
    return n->op == DTL_OP_MATMUL && (n->dtype == DTL_DTYPE_F32 || n->dtype == DTL_DTYPE_F64);
}

/* A TRANSPOSE that swaps the last two axes and keeps the others. */
static bool swaps_last_two(const dtl_node *t)
{
    if (t->op != DTL_OP_TRANSPOSE || t->rank < 2)
        return false;
    for (uint32_t i = 0; i + 2 < t->rank; i++)
        if (t->attr.perm[i] != i)
            return false;
    return t->attr.perm[t->rank - 2] == t->rank - 1 && t->attr.perm[t->rank - 1] == t->rank - 2;
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

/* The node whose bytes v's are (RESHAPE chains followed). */
static dtl_val view_base(const dtl_graph *g, dtl_val v)
{
    while (g->nodes[v].op == DTL_OP_RESHAPE)
        v = g->nodes[v].in[0];
    return v;
}

/* What a member reads (*nr values): its operands, except that a float MATMUL reads through
 * a TRANSPOSE of its last two axes (folded; buf gets the values as read, trans the flags). */
static const dtl_val *member_reads(const dtl_graph *g, dtl_val v, dtl_val buf[2],
                                   bool trans[2], uint32_t *nr)
{
    const dtl_node *n = &g->nodes[v];
    if (float_matmul(n)) {
        for (uint32_t i = 0; i < 2; i++) {
            const dtl_node *t = &g->nodes[n->in[i]];
            trans[i] = swaps_last_two(t);
            buf[i] = trans[i] ? t->in[0] : n->in[i];
        }
        *nr = 2;
        return buf;
    }
    trans[0] = trans[1] = false;
    *nr = n->nin;
    return n->in;
}

/* ==== the fuser's working state =========================================================== */

typedef struct fgroup {
    dtl_kkind kind;
    dtl_val root;                 /* REDUCE MATMUL SINGLE */
    uint32_t rank;
    int64_t shape[DTL_MAX_RANK];  /* the loop's shape */
    dtl_val *mem;                 /* members (sorted by id once fusion is over) */
    uint32_t nmem, cap;
    dtl_val *ext;                 /* nodes reading a member; entries that became members of
                                     this group are dropped lazily (ext_compact) */
    uint32_t next, ecap;
    bool dead;                    /* merged into another group */
    bool iota;                    /* computes an iota (never in a ROW kernel) */
} fgroup;

typedef struct fuser {
    const dtl_graph *g;
    dtl_arena *A;                 /* scratch, freed when dtl_fuse returns */
    uint32_t nn;
    bool *live;                   /* needed by an output */
    bool *comp;                   /* live and computed by a kernel */
    dtl_val *base;                /* view_base */
    dtl_val **rd;                 /* per computed node: the values it reads (member_reads) */
    uint32_t *nrd;
    bool (*trans)[2];
    dtl_val **cons;               /* per node: computed nodes reading it (via views too) */
    uint32_t *ncons;
    bool *is_out;                 /* per node: the base of a graph output's value */
    bool rows;                    /* ROW kernels allowed */
    fgroup *gr;
    uint32_t ngr;
    uint32_t *grp;                /* per computed node: its group */
    uint32_t *seen, stamp;        /* per group: DFS marks */
    uint32_t *stack;
} fuser;

/* Whether member n (of the merged kernel: kind, root) may read p, a member too, through
 * read r, in registers. */
static bool register_read_ok(const fuser *f, dtl_kkind kind, dtl_val root, dtl_val n, dtl_val r,
                             dtl_val p)
{
    if (r != p)                          /* a view of a member: it is in memory */
        return false;
    if (kind == DTL_K_ROW) {
        /* Full members (last dim L >= 2) read full members directly and row values (last
         * dim 1) by broadcasting; a broadcast reads a row value; a reduction its full operand;
         * a row value only row values. */
        const dtl_node *nn = &f->g->nodes[n], *pn = &f->g->nodes[p];
        bool n_row = nn->shape[nn->rank - 1] == 1, p_row = pn->shape[pn->rank - 1] == 1;
        if (nn->op == DTL_OP_BROADCAST)
            return p_row;
        if (reduce_op(nn->op))
            return !p_row;
        return !n_row || p_row;
    }
    if (n == root)                       /* a matmul reads its operands from memory */
        return kind == DTL_K_REDUCE;
    if (f->g->nodes[n].op == DTL_OP_BROADCAST)
        return false;
    return !(kind == DTL_K_REDUCE && p == root);
}

/* Whether the union of groups ga and gb as one kernel (kind, root) keeps the register
 * rules. Reads inside either group were checked when it was made and stay legal under the
 * merged kind, so only the reads between the two are checked, from the smaller side. */
static bool registers_ok(const fuser *f, dtl_kkind kind, dtl_val root, uint32_t ga, uint32_t gb)
{
    if (f->gr[ga].nmem > f->gr[gb].nmem) {
        uint32_t t = ga;
        ga = gb;
        gb = t;
    }
    const fgroup *S = &f->gr[ga];
    for (uint32_t i = 0; i < S->nmem; i++) {
        dtl_val n = S->mem[i];
        for (uint32_t j = 0; j < f->nrd[n]; j++) {   /* n reads the other side */
            dtl_val r = f->rd[n][j], p = f->base[r];
            if (f->comp[p] && f->grp[p] == gb && !register_read_ok(f, kind, root, n, r, p))
                return false;
        }
        for (uint32_t j = 0; j < f->ncons[n]; j++) {   /* the other side reads n */
            dtl_val c = f->cons[n][j];
            if (f->grp[c] != gb)
                continue;
            for (uint32_t t = 0; t < f->nrd[c]; t++)
                if (f->base[f->rd[c][t]] == n &&
                    !register_read_ok(f, kind, root, c, f->rd[c][t], n))
                    return false;
        }
    }
    return true;
}

/* Drops the entries of h's ext list that are members of h now. */
static void ext_compact(fuser *f, uint32_t h)
{
    fgroup *H = &f->gr[h];
    uint32_t k = 0;
    for (uint32_t i = 0; i < H->next; i++)
        if (f->grp[H->ext[i]] != h)
            H->ext[k++] = H->ext[i];
    H->next = k;
}

/* Pushes the groups that read group h (other than ga, gb) and were not seen yet; returns
 * true when h is read by ga or gb and h is not one of them (the way back). */
static bool push_readers(fuser *f, uint32_t h, uint32_t ga, uint32_t gb, dtl_val upto,
                         uint32_t *sp)
{
    ext_compact(f, h);
    const fgroup *H = &f->gr[h];
    bool start = h == ga || h == gb;
    for (uint32_t i = 0; i < H->next; i++) {
        dtl_val c = H->ext[i];
        uint32_t r = f->grp[c];
        if (c > upto || r == ga || r == gb) {
            if (!start && c <= upto)
                return true;
            continue;
        }
        if (f->seen[r] == f->stamp)
            continue;
        f->seen[r] = f->stamp;
        f->stack[(*sp)++] = r;
    }
    return false;
}

/* Whether merging groups ga and gb would make a cycle: a path that leaves them and comes
 * back. Nodes after `upto` are alone in their groups and lead only further on, so the
 * search stops there. */
static bool makes_cycle(fuser *f, uint32_t ga, uint32_t gb, dtl_val upto)
{
    uint32_t sp = 0;
    f->stamp++;
    push_readers(f, ga, ga, gb, upto, &sp);
    push_readers(f, gb, ga, gb, upto, &sp);
    while (sp)
        if (push_readers(f, f->stack[--sp], ga, gb, upto, &sp))
            return true;
    return false;
}

/* Appends n values to a growable list (doubling, so a long chain costs linear time). */
static void list_append(dtl_arena *A, dtl_val **xs, uint32_t *len, uint32_t *cap,
                        const dtl_val *add, uint32_t n)
{
    if (*len + n > *cap) {
        uint32_t c = *len + n > 2 * *cap ? *len + n : 2 * *cap;
        *xs = dtl_arena_grow(A, *xs, *len, c, sizeof **xs);
        *cap = c;
    }
    memcpy(*xs + *len, add, n * sizeof *add);
    *len += n;
}

/* A group that can be (or is) a ROW kernel over its shape: a ROW, or a REDUCE whose root
 * reduces the last axis of rows of two or more (row_reduce). */
static bool row_group(const fuser *f, const fgroup *G)
{
    return G->kind == DTL_K_ROW ||
           (G->kind == DTL_K_REDUCE && row_reduce(f->g, &f->g->nodes[G->root]));
}

/* Whether group h reads the root of R (then R cannot take h as its prologue; with rows, h
 * may still follow R in a ROW kernel). */
static bool reads_root(const fuser *f, const fgroup *R, uint32_t h)
{
    for (uint32_t i = 0; i < f->ncons[R->root]; i++)
        if (f->grp[f->cons[R->root][i]] == h)
            return true;
    return false;
}

/* Merges groups ga and gb when the result is a legal kernel; returns whether it did. The
 * larger group takes the smaller one's members. upto: the node being visited (the largest
 * member of either). */
static bool try_merge(fuser *f, uint32_t ga, uint32_t gb, dtl_val upto)
{
    if (ga == gb)
        return false;
    fgroup *A = &f->gr[ga], *B = &f->gr[gb];
    dtl_kkind kind;
    dtl_val root = DTL_VAL_NONE;
    const fgroup *shape_of;
    if (A->kind == DTL_K_ELEMWISE && B->kind == DTL_K_ELEMWISE) {
        kind = DTL_K_ELEMWISE;
        shape_of = A;
    } else if ((A->kind == DTL_K_MATMUL && B->kind == DTL_K_ELEMWISE) ||
               (A->kind == DTL_K_ELEMWISE && B->kind == DTL_K_MATMUL)) {
        kind = DTL_K_MATMUL;
        shape_of = A->kind == DTL_K_MATMUL ? A : B;
        root = shape_of->root;
    } else if (((A->kind == DTL_K_REDUCE && A->nmem == 1 && B->kind == DTL_K_ELEMWISE) ||
                (B->kind == DTL_K_REDUCE && B->nmem == 1 && A->kind == DTL_K_ELEMWISE)) &&
               !reads_root(f, A->kind == DTL_K_REDUCE ? A : B, A->kind == DTL_K_REDUCE ? gb : ga)) {
        kind = DTL_K_REDUCE;
        shape_of = A->kind == DTL_K_REDUCE ? A : B;
        root = shape_of->root;
    } else if (f->rows && (row_group(f, A) || row_group(f, B))) {
        kind = DTL_K_ROW;
        shape_of = row_group(f, A) ? A : B;
        const fgroup *O = shape_of == A ? B : A;
        bool fits = row_group(f, O) ? same_shape(O->rank, O->shape, shape_of->rank, shape_of->shape)
                    : O->kind == DTL_K_ELEMWISE &&
                          (same_shape(O->rank, O->shape, shape_of->rank, shape_of->shape) ||
                           is_row_shape(O->rank, O->shape, shape_of->rank, shape_of->shape));
        if (!fits || A->iota || B->iota)
            return false;
    } else
        return false;
    if (kind != DTL_K_ROW && !same_shape(A->rank, A->shape, B->rank, B->shape))
        return false;
    if (!registers_ok(f, kind, root, ga, gb) || makes_cycle(f, ga, gb, upto))
        return false;
    if (A->nmem < B->nmem) {
        fgroup *t = A;
        A = B;
        B = t;
        uint32_t tg = ga;
        ga = gb;
        gb = tg;
    }
    uint32_t rank = shape_of->rank;
    int64_t shape[DTL_MAX_RANK];
    memcpy(shape, shape_of->shape, sizeof shape);
    A->kind = kind;
    A->root = root;
    A->iota = A->iota || B->iota;
    A->rank = rank;
    memcpy(A->shape, shape, sizeof A->shape);
    list_append(f->A, &A->mem, &A->nmem, &A->cap, B->mem, B->nmem);
    list_append(f->A, &A->ext, &A->next, &A->ecap, B->ext, B->next);
    for (uint32_t t = 0; t < B->nmem; t++)
        f->grp[B->mem[t]] = ga;
    B->dead = true;
    B->nmem = B->next = 0;
    return true;
}

static int val_cmp(const void *a, const void *b)
{
    dtl_val x = *(const dtl_val *)a, y = *(const dtl_val *)b;
    return x < y ? -1 : x > y;
}

/* ==== building the program ================================================================ */

static void mark_live(fuser *f)
{
    const dtl_graph *g = f->g;
    for (uint32_t k = 0; k < g->nouts; k++) {
        f->live[g->outs[k].val] = true;
        f->is_out[view_base(g, g->outs[k].val)] = true;
    }
    dtl_val buf[2];
    bool tr[2];
    for (uint32_t v = f->nn; v-- > 0;) {
        const dtl_node *n = &g->nodes[v];
        f->base[v] = v;
        if (!f->live[v])
            continue;
        if (n->op == DTL_OP_RESHAPE) {
            f->live[n->in[0]] = true;
            continue;
        }
        if (not_computed(n->op))
            continue;
        f->comp[v] = true;
        const dtl_val *rd = member_reads(g, v, buf, tr, &f->nrd[v]);
        f->rd[v] = dtl_arena_array(f->A, f->nrd[v] + 1, sizeof(dtl_val));
        if (f->nrd[v])
            memcpy(f->rd[v], rd, f->nrd[v] * sizeof *rd);
        f->trans[v][0] = tr[0];
        f->trans[v][1] = tr[1];
        for (uint32_t i = 0; i < f->nrd[v]; i++)
            f->live[f->rd[v][i]] = true;
    }
    for (uint32_t v = 0; v < f->nn; v++)
        if (g->nodes[v].op == DTL_OP_RESHAPE)
            f->base[v] = f->base[g->nodes[v].in[0]];
    /* Consumers, through views. */
    for (uint32_t v = 0; v < f->nn; v++)
        if (f->comp[v])
            for (uint32_t i = 0; i < f->nrd[v]; i++)
                f->ncons[f->base[f->rd[v][i]]]++;
    for (uint32_t v = 0; v < f->nn; v++) {
        f->cons[v] = dtl_arena_array(f->A, f->ncons[v] + 1, sizeof(dtl_val));
        f->ncons[v] = 0;
    }
    for (uint32_t v = 0; v < f->nn; v++)
        if (f->comp[v])
            for (uint32_t i = 0; i < f->nrd[v]; i++) {
                dtl_val p = f->base[f->rd[v][i]];
                if (f->ncons[p] == 0 || f->cons[p][f->ncons[p] - 1] != v)
                    f->cons[p][f->ncons[p]++] = v;
            }
}

static void make_groups(fuser *f, bool fuse)
{
    const dtl_graph *g = f->g;
    for (uint32_t v = 0; v < f->nn; v++) {
        if (!f->comp[v])
            continue;
        const dtl_node *n = &g->nodes[v];
        fgroup *G = &f->gr[f->ngr];
        f->grp[v] = f->ngr++;
        G->mem = dtl_arena_array(f->A, 1, sizeof *G->mem);
        G->mem[0] = v;
        G->nmem = G->cap = 1;
        G->ext = dtl_arena_array(f->A, f->ncons[v] + 1, sizeof *G->ext);
        memcpy(G->ext, f->cons[v], f->ncons[v] * sizeof *G->ext);
        G->next = G->ecap = f->ncons[v];
        G->root = v;
        G->iota = n->op == DTL_OP_IOTA;
        G->rank = n->rank;
        memcpy(G->shape, n->shape, sizeof G->shape);
        if (elem_op(n->op)) {
            G->kind = DTL_K_ELEMWISE;
            G->root = DTL_VAL_NONE;
        } else if (reduce_op(n->op)) {
            const dtl_node *x = &g->nodes[n->in[0]];
            G->kind = DTL_K_REDUCE;
            G->rank = x->rank;
            memcpy(G->shape, x->shape, sizeof G->shape);
        } else if (float_matmul(n))
            G->kind = DTL_K_MATMUL;
        else
            G->kind = DTL_K_SINGLE;
    }
    for (uint32_t v = 0; v < f->nn && fuse; v++) {
        if (!f->comp[v])
            continue;
        const dtl_node *n = &g->nodes[v];
        if (reduce_op(n->op)) {
            dtl_val x = n->in[0];
            if (f->comp[x] && (f->gr[f->grp[x]].kind == DTL_K_ELEMWISE ||
                               (f->rows && row_reduce(g, n) && row_group(f, &f->gr[f->grp[x]]))))
                try_merge(f, f->grp[v], f->grp[x], v);
        } else if (elem_op(n->op)) {
            /* Into an operand's elementwise loop or matmul epilogue; with rows, also into
             * the row kernel of an operand (a broadcast only there: elsewhere it reads
             * memory). */
            for (uint32_t i = 0; i < n->nin; i++) {
                dtl_val x = n->in[i];
                if (!f->comp[x])
                    continue;
                const fgroup *X = &f->gr[f->grp[x]];
                bool ok = n->op != DTL_OP_BROADCAST &&
                          (X->kind == DTL_K_MATMUL || X->kind == DTL_K_ELEMWISE);
                if (ok || (f->rows && row_group(f, X)))
                    try_merge(f, f->grp[v], f->grp[x], v);
            }
        }
    }
    for (uint32_t h = 0; h < f->ngr; h++)
        qsort(f->gr[h].mem, f->gr[h].nmem, sizeof *f->gr[h].mem, val_cmp);
}

/* A binary heap of group numbers keyed by their first member. */
typedef struct gheap {
    uint32_t *a, n;
    const fgroup *gr;
} gheap;

static bool gheap_less(const gheap *h, uint32_t x, uint32_t y)
{
    return h->gr[x].mem[0] < h->gr[y].mem[0];
}

static void gheap_push(gheap *h, uint32_t x)
{
    uint32_t i = h->n++;
    h->a[i] = x;
    while (i > 0 && gheap_less(h, h->a[i], h->a[(i - 1) / 2])) {
        uint32_t p = (i - 1) / 2, t = h->a[p];
        h->a[p] = h->a[i];
        h->a[i] = t;
        i = p;
    }
}

static uint32_t gheap_pop(gheap *h)
{
    uint32_t top = h->a[0];
    h->a[0] = h->a[--h->n];
    for (uint32_t i = 0;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && gheap_less(h, h->a[l], h->a[m]))
            m = l;
        if (r < h->n && gheap_less(h, h->a[r], h->a[m]))
            m = r;
        if (m == i)
            break;
        uint32_t t = h->a[m];
        h->a[m] = h->a[i];
        h->a[i] = t;
        i = m;
    }
    return top;
}

/* The groups in a topological order: order[0..count), returned count. */
static uint32_t order_groups(fuser *f, uint32_t *order)
{
    uint32_t *indeg = dtl_arena_array(f->A, f->ngr + 1, sizeof *indeg);
    for (uint32_t h = 0; h < f->ngr; h++)
        for (uint32_t i = 0; i < f->gr[h].nmem; i++) {
            dtl_val m = f->gr[h].mem[i];
            for (uint32_t j = 0; j < f->ncons[m]; j++)
                if (f->grp[f->cons[m][j]] != h)
                    indeg[f->grp[f->cons[m][j]]]++;
        }
    gheap hp = {dtl_arena_array(f->A, f->ngr + 1, sizeof(uint32_t)), 0, f->gr};
    for (uint32_t h = 0; h < f->ngr; h++)
        if (!f->gr[h].dead && indeg[h] == 0)
            gheap_push(&hp, h);
    uint32_t count = 0;
    while (hp.n) {
        uint32_t h = gheap_pop(&hp);
        order[count++] = h;
        for (uint32_t i = 0; i < f->gr[h].nmem; i++) {
            dtl_val m = f->gr[h].mem[i];
            for (uint32_t j = 0; j < f->ncons[m]; j++) {
                uint32_t c = f->grp[f->cons[m][j]];
                if (c != h && --indeg[c] == 0)
                    gheap_push(&hp, c);
            }
        }
    }
    return count;
}

/* Whether every member of kernel ki that reads x (a value read as it is stored, through no
 * view) reads it directly, at the loop index, and comes no later than position `by` (pos:
 * every member's position in its kernel). */
static bool read_in_step(const fuser *f, const dtl_kprog *p, uint32_t ki, dtl_val x,
                         uint32_t by, const uint32_t *pos)
{
    const dtl_graph *g = f->g;
    const dtl_kernel *k = &p->k[ki];
    if (!same_shape(g->nodes[x].rank, g->nodes[x].shape, k->rank, k->shape))
        return false;
    for (uint32_t i = 0; i < f->ncons[x]; i++) {
        dtl_val c = f->cons[x][i];
        const dtl_node *cn = &g->nodes[c];
        if (p->kernel_of[c] != ki)
            continue;
        for (uint32_t j = 0; j < f->nrd[c]; j++)
            if (f->base[f->rd[c][j]] == x &&
                (f->rd[c][j] != x || pos[c] > by || !elem_op(cn->op) ||
                 cn->op == DTL_OP_BROADCAST || c == k->root))
                return false;
    }
    return true;
}

dtl_kprog *dtl_fuse(const dtl_graph *g, const dtl_fuse_opts *opts)
{
    if (!dtl_graph_verify(g, stderr)) {
        fprintf(stderr, "%s:%d: dtl_fuse: the graph fails verification\n", __FILE__, __LINE__);
        abort();
    }
    dtl_fuse_opts none = {false, false, false, false};
    const dtl_fuse_opts *o = opts ? opts : &none;
    dtl_kprog *p = calloc(1, sizeof *p);
    if (!p) {
        fprintf(stderr, "dtl: out of memory\n");
        exit(2);
    }
    p->g = g;
    dtl_arena_init(&p->arena);
    dtl_arena scratch;
    dtl_arena_init(&scratch);

    uint32_t nn = g->nnodes;
    const char *rows_env = getenv("DTL_FUSE_ROWS");   /* "0": as no_rows (benchmarks) */
    bool rows = !o->no_rows && !(rows_env && strcmp(rows_env, "0") == 0);
    fuser F = {.g = g, .A = &scratch, .nn = nn, .rows = rows};
    fuser *f = &F;
    dtl_arena *S = &scratch;
    f->live = dtl_arena_array(S, nn + 1, sizeof *f->live);
    f->comp = dtl_arena_array(S, nn + 1, sizeof *f->comp);
    f->base = dtl_arena_array(S, nn + 1, sizeof *f->base);
    f->rd = dtl_arena_array(S, nn + 1, sizeof *f->rd);
    f->nrd = dtl_arena_array(S, nn + 1, sizeof *f->nrd);
    f->trans = dtl_arena_array(S, nn + 1, sizeof *f->trans);
    f->cons = dtl_arena_array(S, nn + 1, sizeof *f->cons);
    f->ncons = dtl_arena_array(S, nn + 1, sizeof *f->ncons);
    f->is_out = dtl_arena_array(S, nn + 1, sizeof *f->is_out);
    f->gr = dtl_arena_array(S, nn + 1, sizeof *f->gr);
    f->grp = dtl_arena_array(S, nn + 1, sizeof *f->grp);
    f->seen = dtl_arena_array(S, nn + 1, sizeof *f->seen);
    f->stack = dtl_arena_array(S, nn + 1, sizeof *f->stack);
    for (uint32_t v = 0; v < nn; v++)
        f->grp[v] = NONE;

    mark_live(f);
    make_groups(f, !o->no_fusion);
    uint32_t *order = dtl_arena_array(S, f->ngr + 1, sizeof *order);
    uint32_t nk = order_groups(f, order), ngroups = 0;
    for (uint32_t h = 0; h < f->ngr; h++)
        ngroups += !f->gr[h].dead;
    if (nk != ngroups) {   /* a merge made a cycle: a bug here, never the graph's fault */
        fprintf(stderr, "%s:%d: dtl_fuse: %u of %u kernels cannot be ordered\n", __FILE__,
                __LINE__, ngroups - nk, ngroups);
        abort();
    }

    /* The kernels. */
    dtl_arena *A = &p->arena;
    p->nk = nk;
    p->k = dtl_arena_array(A, nk + 1, sizeof *p->k);
    p->loc = dtl_arena_array(A, nn + 1, sizeof *p->loc);
    p->kernel_of = dtl_arena_array(A, nn + 1, sizeof *p->kernel_of);
    for (uint32_t v = 0; v < nn; v++)
        p->kernel_of[v] = NONE;
    for (uint32_t ki = 0; ki < nk; ki++)
        for (uint32_t i = 0; i < f->gr[order[ki]].nmem; i++)
            p->kernel_of[f->gr[order[ki]].mem[i]] = ki;
    uint32_t *pos = dtl_arena_array(S, nn + 1, sizeof *pos);      /* in its kernel */
    uint32_t *in_mark = dtl_arena_array(S, nn + 1, sizeof *in_mark);  /* ki + 1: in k's ins */
    for (uint32_t ki = 0; ki < nk; ki++) {
        const fgroup *G = &f->gr[order[ki]];
        dtl_kernel *k = &p->k[ki];
        k->kind = G->kind;
        k->rank = G->rank;
        memcpy(k->shape, G->shape, sizeof k->shape);
        k->root = G->root;
        k->matmul_a = k->matmul_b = DTL_VAL_NONE;
        dtl_val *mem = dtl_arena_array(A, G->nmem, sizeof *mem);
        uint32_t nm = 0;
        if (G->kind == DTL_K_MATMUL)
            mem[nm++] = G->root;
        for (uint32_t i = 0; i < G->nmem; i++)
            if (G->kind != DTL_K_MATMUL || G->mem[i] != G->root)
                mem[nm++] = G->mem[i];
        k->members = mem;
        k->nmembers = nm;
        for (uint32_t i = 0; i < nm; i++)
            pos[mem[i]] = i;
        if (G->kind == DTL_K_MATMUL) {
            k->matmul_a = f->rd[G->root][0];
            k->matmul_b = f->rd[G->root][1];
            k->trans_a = f->trans[G->root][0];
            k->trans_b = f->trans[G->root][1];
        }
        /* outs: members needed by another kernel or by a graph output */
        dtl_val *outs = dtl_arena_array(A, nm, sizeof *outs);
        uint32_t no = 0;
        for (uint32_t i = 0; i < nm; i++) {
            dtl_val m = mem[i];
            bool need = f->is_out[m];
            for (uint32_t j = 0; j < f->ncons[m] && !need; j++)
                need = p->kernel_of[f->cons[m][j]] != ki;
            if (need)
                outs[no++] = m;
        }
        k->outs = outs;
        k->nouts = no;
        /* ins: what members read from memory */
        uint32_t cap = 0;
        for (uint32_t i = 0; i < nm; i++)
            cap += f->nrd[mem[i]];
        dtl_val *ins = dtl_arena_array(A, cap + 1, sizeof *ins);
        uint32_t ni = 0;
        for (uint32_t i = 0; i < nm; i++) {
            dtl_val m = mem[i];
            for (uint32_t j = 0; j < f->nrd[m]; j++) {
                dtl_val r = f->rd[m][j];
                bool reg = r == f->base[r] && f->comp[r] && p->kernel_of[r] == ki;
                if (!reg && in_mark[r] != ki + 1) {
                    in_mark[r] = ki + 1;
                    ins[ni++] = r;
                }
            }
        }
        k->ins = ins;
        k->nins = ni;
    }

    /* Locations of what no kernel computes. */
    uint64_t cbytes = 0;
    for (uint32_t v = 0; v < nn; v++) {
        const dtl_node *n = &g->nodes[v];
        dtl_loc *l = &p->loc[v];
        l->of = DTL_VAL_NONE;
        if (n->op == DTL_OP_INPUT)
            l->kind = DTL_LOC_INPUT;
        else if (n->op == DTL_OP_PARAM || n->op == DTL_OP_STATE) {
            l->kind = DTL_LOC_STORE;
            l->of = v;
        } else if (n->op == DTL_OP_CONST && f->live[v]) {
            l->kind = DTL_LOC_CONST;
            l->offset = cbytes;
            cbytes += round_up(node_bytes(n));
        } else if (n->op == DTL_OP_RESHAPE && f->live[v]) {
            l->kind = DTL_LOC_ALIAS;
            l->of = f->base[v];
        }
    }
    p->const_bytes = cbytes;

    /* Lifetimes of stored values, in kernel numbers (nk: to the end). */
    uint32_t *last = dtl_arena_array(S, nn + 1, sizeof *last);
    bool *stored = dtl_arena_array(S, nn + 1, sizeof *stored);
    for (uint32_t ki = 0; ki < nk; ki++)
        for (uint32_t i = 0; i < p->k[ki].nouts; i++) {
            dtl_val m = p->k[ki].outs[i];
            stored[m] = true;
            last[m] = f->is_out[m] ? nk : ki;
            for (uint32_t j = 0; j < f->ncons[m]; j++)
                if (p->kernel_of[f->cons[m][j]] > last[m])
                    last[m] = p->kernel_of[f->cons[m][j]];
        }

    /* Parameter and state updates in place. */
    for (uint32_t oi = 0; oi < g->nouts && !o->no_inplace; oi++) {
        const dtl_output *out = &g->outs[oi];
        dtl_val v = out->val, t = out->target;
        if (out->kind != DTL_OUT_PARAM && out->kind != DTL_OUT_STATE)
            continue;
        if (!f->comp[v] || p->loc[v].kind == DTL_LOC_STORE || f->is_out[t])
            continue;
        uint32_t ki = p->kernel_of[v];
        const dtl_kernel *k = &p->k[ki];
        if (!(k->kind == DTL_K_ELEMWISE || (k->kind == DTL_K_MATMUL && v != k->root)))
            continue;
        bool ok = read_in_step(f, p, ki, t, pos[v], pos);
        for (uint32_t j = 0; j < f->ncons[t] && ok; j++)
            ok = p->kernel_of[f->cons[t][j]] <= ki;
        if (ok) {
            p->loc[v].kind = DTL_LOC_STORE;
            p->loc[v].of = t;
        }
    }

    /* Arena offsets, kernel by kernel. */
    dtl_blocks pl;
    dtl_blocks_init(&pl, nn, S);
    bool *donated = dtl_arena_array(S, nn + 1, sizeof *donated);
    bool reuse = !o->no_reuse;
    for (uint32_t ki = 0; ki < nk; ki++) {
        const dtl_kernel *k = &p->k[ki];
        for (uint32_t i = 0; i < k->nouts; i++) {
            dtl_val m = k->outs[i];
            dtl_loc *l = &p->loc[m];
            if (l->kind == DTL_LOC_STORE)
                continue;
            const dtl_node *mn = &g->nodes[m];
            l->kind = DTL_LOC_ARENA;
            p->naive_bytes += round_up(node_bytes(mn));
            bool placed = false;
            bool can = reuse && !o->no_inplace && m != k->root &&
                       (k->kind == DTL_K_ELEMWISE || k->kind == DTL_K_REDUCE);
            for (uint32_t j = 0; j < k->nins && can && !placed; j++) {
                dtl_val x = k->ins[j];
                if (x != f->base[x] || !stored[x] || donated[x] || last[x] != ki ||
                    p->loc[x].kind != DTL_LOC_ARENA ||
                    node_bytes(&g->nodes[x]) != node_bytes(mn) ||
                    !read_in_step(f, p, ki, x, pos[m], pos))
                    continue;
                donated[x] = true;
                l->offset = p->loc[x].offset;
                placed = true;
            }
            if (!placed)
                l->offset = dtl_blocks_take(&pl, round_up(node_bytes(mn)));
        }
        if (!reuse)
            continue;
        for (uint32_t j = 0; j < k->nins; j++) {
            dtl_val x = f->base[k->ins[j]];
            bool first = true;
            for (uint32_t t = 0; t < j; t++)
                first = first && f->base[k->ins[t]] != x;
            if (first && stored[x] && last[x] == ki && !donated[x] &&
                p->loc[x].kind == DTL_LOC_ARENA)
                dtl_blocks_release(&pl, p->loc[x].offset, round_up(node_bytes(&g->nodes[x])));
        }
    }
    p->arena_bytes = pl.top;
    dtl_arena_free(&scratch);
    return p;
}

uint32_t dtl_row_passes(const dtl_kprog *p, const dtl_kernel *k, uint32_t *pass)
{
    const dtl_graph *g = p->g;
    uint32_t np = 1;
    for (uint32_t i = 0; i < k->nmembers; i++) {
        const dtl_node *n = &g->nodes[k->members[i]];
        uint32_t at = 0;
        for (uint32_t j = 0; j < n->nin; j++) {
            dtl_val u = n->in[j];
            if (p->kernel_of[u] != p->kernel_of[k->members[i]])
                continue;
            uint32_t lo = 0, hi = i;   /* members are in increasing order: u before i */
            while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                if (k->members[mid] < u)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            uint32_t ui = lo;
            uint32_t avail = pass[ui] + (reduce_op(g->nodes[u].op) ? 1u : 0u);
            if (avail > at)
                at = avail;
        }
        pass[i] = at;
        bool row = n->shape[n->rank - 1] == 1 && !reduce_op(n->op);
        if (!row && at + 1 > np)
            np = at + 1;
    }
    return np;
}

void dtl_kprog_free(dtl_kprog *p)
{
    if (!p)
        return;
    dtl_arena_free(&p->arena);
    free(p);
}

