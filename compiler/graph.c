/* compiler/graph.c — the dataflow graph IR: op table, builders, verifier, printers.
 *
 * Design: one function, node_check, holds every typing rule. Given a node whose op, inputs
 * and attributes are set (and, for the ops whose result is an argument — leaves, cast,
 * reshape, broadcast, slice, scatter_add — its dtype and shape too), it computes the dtype
 * and shape the node must have, or explains in one line why the node is ill-formed. The
 * builders fill a node, call node_check and abort with file:line on a problem (a caller's
 * bug); dtl_graph_verify calls the same function on every node and compares, so the
 * builders and the verifier cannot drift apart.
 *
 * Nodes and outputs are arrays that grow by doubling inside the graph's arena (the old copy
 * is abandoned); pointers to nodes are therefore valid only until the next builder call.
 */
#include "graph.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- the op table ------------------------------------------------------------------------ */

enum { ARITY_ANY = -1 };   /* CONCAT: one or more inputs */

static const struct {
    const char *name;
    int arity;
    dtl_op_kind kind;
} op_table[] = {
    [DTL_OP_CONST] = {"const", 0, DTL_OPK_LEAF},
    [DTL_OP_INPUT] = {"input", 0, DTL_OPK_LEAF},
    [DTL_OP_PARAM] = {"param", 0, DTL_OPK_LEAF},
    [DTL_OP_STATE] = {"state", 0, DTL_OPK_LEAF},
    [DTL_OP_IOTA] = {"iota", 0, DTL_OPK_LEAF},
    [DTL_OP_RNG_UNIFORM] = {"rng_uniform", 1, DTL_OPK_LEAF},
    [DTL_OP_NEG] = {"neg", 1, DTL_OPK_UNARY},
    [DTL_OP_ABS] = {"abs", 1, DTL_OPK_UNARY},
    [DTL_OP_EXP] = {"exp", 1, DTL_OPK_UNARY},
    [DTL_OP_LOG] = {"log", 1, DTL_OPK_UNARY},
    [DTL_OP_SQRT] = {"sqrt", 1, DTL_OPK_UNARY},
    [DTL_OP_TANH] = {"tanh", 1, DTL_OPK_UNARY},
    [DTL_OP_SIGMOID] = {"sigmoid", 1, DTL_OPK_UNARY},
    [DTL_OP_RELU] = {"relu", 1, DTL_OPK_UNARY},
    [DTL_OP_SIN] = {"sin", 1, DTL_OPK_UNARY},
    [DTL_OP_COS] = {"cos", 1, DTL_OPK_UNARY},
    [DTL_OP_NOT] = {"not", 1, DTL_OPK_UNARY},
    [DTL_OP_CAST] = {"cast", 1, DTL_OPK_UNARY},
    [DTL_OP_ADD] = {"add", 2, DTL_OPK_BINARY},
    [DTL_OP_SUB] = {"sub", 2, DTL_OPK_BINARY},
    [DTL_OP_MUL] = {"mul", 2, DTL_OPK_BINARY},
    [DTL_OP_DIV] = {"div", 2, DTL_OPK_BINARY},
    [DTL_OP_POW] = {"pow", 2, DTL_OPK_BINARY},
    [DTL_OP_MAX] = {"max", 2, DTL_OPK_BINARY},
    [DTL_OP_MIN] = {"min", 2, DTL_OPK_BINARY},
    [DTL_OP_LT] = {"lt", 2, DTL_OPK_BINARY},
    [DTL_OP_LE] = {"le", 2, DTL_OPK_BINARY},
    [DTL_OP_GT] = {"gt", 2, DTL_OPK_BINARY},
    [DTL_OP_GE] = {"ge", 2, DTL_OPK_BINARY},
    [DTL_OP_EQ] = {"eq", 2, DTL_OPK_BINARY},
    [DTL_OP_NE] = {"ne", 2, DTL_OPK_BINARY},
    [DTL_OP_AND] = {"and", 2, DTL_OPK_BINARY},
    [DTL_OP_OR] = {"or", 2, DTL_OPK_BINARY},
    [DTL_OP_WHERE] = {"where", 3, DTL_OPK_TERNARY},
    [DTL_OP_SUM] = {"sum", 1, DTL_OPK_REDUCE},
    [DTL_OP_REDUCE_MAX] = {"reduce_max", 1, DTL_OPK_REDUCE},
    [DTL_OP_ARGMAX] = {"argmax", 1, DTL_OPK_REDUCE},
    [DTL_OP_MATMUL] = {"matmul", 2, DTL_OPK_MATMUL},
    [DTL_OP_RESHAPE] = {"reshape", 1, DTL_OPK_MOVE},
    [DTL_OP_TRANSPOSE] = {"transpose", 1, DTL_OPK_MOVE},
    [DTL_OP_BROADCAST] = {"broadcast", 1, DTL_OPK_MOVE},
    [DTL_OP_SLICE] = {"slice", 1, DTL_OPK_MOVE},
    [DTL_OP_CONCAT] = {"concat", ARITY_ANY, DTL_OPK_MOVE},
    [DTL_OP_GATHER] = {"gather", 2, DTL_OPK_MOVE},
    [DTL_OP_SCATTER_ADD] = {"scatter_add", 2, DTL_OPK_MOVE},
    [DTL_OP_CONV2D] = {"conv2d", 2, DTL_OPK_WINDOW},
    [DTL_OP_CONV2D_BWD_X] = {"conv2d_bwd_x", 2, DTL_OPK_WINDOW},
    [DTL_OP_CONV2D_BWD_W] = {"conv2d_bwd_w", 2, DTL_OPK_WINDOW},
    [DTL_OP_MAXPOOL2D] = {"maxpool2d", 1, DTL_OPK_WINDOW},
    [DTL_OP_MAXPOOL2D_BWD] = {"maxpool2d_bwd", 2, DTL_OPK_WINDOW},
    [DTL_OP_AVGPOOL2D] = {"avgpool2d", 1, DTL_OPK_WINDOW},
    [DTL_OP_AVGPOOL2D_BWD] = {"avgpool2d_bwd", 1, DTL_OPK_WINDOW},
};
static_assert(sizeof op_table / sizeof op_table[0] == DTL_OP_COUNT,
              "op_table must have one row per dtl_op");

const char *dtl_op_name(dtl_op op)
{
    return (unsigned)op < DTL_OP_COUNT ? op_table[op].name : "?";
}

dtl_op_kind dtl_op_kind_of(dtl_op op)
{
    assert((unsigned)op < DTL_OP_COUNT);
    return op_table[op].kind;
}

uint64_t dtl_node_numel(const dtl_node *n)
{
    uint64_t k = 1;
    for (uint32_t i = 0; i < n->rank; i++)
        k *= (uint64_t)n->shape[i];
    return k;
}

/* ---- small helpers ----------------------------------------------------------------------- */

static _Noreturn void graph_abort(const char *file, int line, const char *func, const char *fmt,
                                  ...) __attribute__((format(printf, 4, 5)));
static _Noreturn void graph_abort(const char *file, int line, const char *func, const char *fmt,
                                  ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: %s: internal error: ", file, line, func);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}
#define G_ABORT(...) graph_abort(__FILE__, __LINE__, __func__, __VA_ARGS__)

const char *dtl_tensor_str(char *buf, size_t len, dtl_dtype dt, uint32_t rank,
                         const int64_t *shape)
{
    size_t at = (size_t)snprintf(buf, len, "%s[", dtl_dtype_name(dt));
    for (uint32_t i = 0; i < rank && i < DTL_MAX_RANK && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
    return buf;
}

#define TYPE_LEN 160
#define NODE_TYPE(buf, n) dtl_tensor_str(buf, sizeof buf, (n)->dtype, (n)->rank, (n)->shape)

static bool is_numeric(dtl_dtype t)
{
    return dtl_dtype_is_float(t) || dtl_dtype_is_int(t);
}

static bool shape_eq(uint32_t ra, const int64_t *a, uint32_t rb, const int64_t *b)
{
    if (ra != rb)
        return false;
    for (uint32_t i = 0; i < ra; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

/* Numpy broadcasting of (ra, a) and (rb, b) into (*r, out); false if incompatible. */
static bool broadcast_shapes(uint32_t ra, const int64_t *a, uint32_t rb, const int64_t *b,
                             uint32_t *r, int64_t *out)
{
    uint32_t rr = ra > rb ? ra : rb;
    for (uint32_t i = 0; i < rr; i++) {   /* i counts from the right */
        int64_t da = i < ra ? a[ra - 1 - i] : 1, db = i < rb ? b[rb - 1 - i] : 1;
        if (da != db && da != 1 && db != 1)
            return false;
        out[rr - 1 - i] = da == 1 ? db : da;
    }
    *r = rr;
    return true;
}

/* Can (ri, in) be numpy-broadcast to exactly (ro, out)? */
static bool broadcastable_to(uint32_t ri, const int64_t *in, uint32_t ro, const int64_t *out)
{
    if (ri > ro)
        return false;
    for (uint32_t i = 0; i < ri; i++) {
        int64_t di = in[ri - 1 - i], dout = out[ro - 1 - i];
        if (di != dout && di != 1)
            return false;
    }
    return true;
}

/* ---- the typing rules ------------------------------------------------------------------- */

typedef struct node_type {
    dtl_dtype dtype;
    uint32_t rank;
    int64_t shape[DTL_MAX_RANK];
} node_type;

/* ---- windowed ops (conv, pooling) -------------------------------------------------------- */

int64_t dtl_win_out(int64_t in, int64_t k, int64_t pad, int64_t dil, int64_t stride)
{
    if (in < 0 || k < 1 || pad < 0 || dil < 1 || stride < 1 || in > INT32_MAX ||
        k > INT32_MAX || pad > INT32_MAX || dil > INT32_MAX)
        return -1;
    int64_t span = dil * (k - 1) + 1, room = in + 2 * pad;
    return room < span ? -1 : (room - span) / stride + 1;
}

/* The forward op's view: x [N, C, H, W], the kernel (KH, KW), the result [N, O, OH, OW].
 * For each windowed op, which operand or the node itself plays each part is fixed; this
 * checks the attributes and that the parts agree, and sets the result's type. */
static bool win_check(const dtl_graph *g, const dtl_node *n, node_type *t, char *why,
                      size_t wlen)
{
#define BAD(...) (snprintf(why, wlen, __VA_ARGS__), false)
    char b1[TYPE_LEN], b2[TYPE_LEN];
    const dtl_node *in0 = &g->nodes[n->in[0]];
    const dtl_node *in1 = n->nin > 1 ? &g->nodes[n->in[1]] : NULL;
    const dtl_win_attr *a = &n->attr.win;
    const char *name = dtl_op_name(n->op);
    bool conv = n->op == DTL_OP_CONV2D || n->op == DTL_OP_CONV2D_BWD_X ||
                n->op == DTL_OP_CONV2D_BWD_W;
    for (int i = 0; i < 2; i++) {
        if (a->stride[i] < 1 || a->pad[i] < 0 || a->dil[i] < 1)
            return BAD("%s: stride %d, pad %d, dilation %d on axis %d", name, a->stride[i],
                       a->pad[i], a->dil[i], i);
        if (!conv && (a->kernel[i] < 1 || a->pad[i] >= a->kernel[i] || a->dil[i] != 1))
            return BAD("%s: kernel %d, pad %d, dilation %d on axis %d (pad < kernel, "
                       "dilation 1 needed)", name, a->kernel[i], a->pad[i], a->dil[i], i);
    }
    if (a->groups < 1 || (!conv && a->groups != 1))
        return BAD("%s: groups %d", name, a->groups);
    /* x, w, y: the forward op's input, weight (conv) and output types. */
    const dtl_node *x, *w = NULL, *y = NULL;
    switch (n->op) {
    case DTL_OP_CONV2D: x = in0; w = in1; break;
    case DTL_OP_CONV2D_BWD_X: x = n; y = in0; w = in1; break;
    case DTL_OP_CONV2D_BWD_W: x = in0; y = in1; w = n; break;
    case DTL_OP_MAXPOOL2D:
    case DTL_OP_AVGPOOL2D: x = in0; break;
    case DTL_OP_MAXPOOL2D_BWD: x = in0; y = in1; break;
    default: x = n; y = in0; break;   /* AVGPOOL2D_BWD */
    }
    const dtl_node *ops[3] = {x, w, y};
    for (int i = 0; i < 3; i++)
        if (ops[i] && ops[i] != n && !dtl_dtype_is_float(ops[i]->dtype))
            return BAD("%s of %s (a float dtype needed)", name, NODE_TYPE(b1, ops[i]));
    if (x->rank != 4 || (w && w->rank != 4) || (y && y->rank != 4))
        return BAD("%s: operands must be [N, C, H, W]%s: %s%s%s", name,
                   conv ? " and [O, C / groups, KH, KW]" : "", NODE_TYPE(b1, in0),
                   in1 ? " and " : "", in1 ? NODE_TYPE(b2, in1) : "");
    dtl_dtype dt = in0->dtype;
    if (in1 && in1->dtype != dt)
        return BAD("%s of %s and %s (same dtype needed)", name, NODE_TYPE(b1, in0),
                   NODE_TYPE(b2, in1));
    int64_t k[2] = {a->kernel[0], a->kernel[1]};
    int64_t out[4] = {x->shape[0], x->shape[1], 0, 0};
    if (conv) {
        k[0] = w->shape[2];
        k[1] = w->shape[3];
        if (x->shape[1] % a->groups || w->shape[0] % a->groups ||
            w->shape[1] * a->groups != x->shape[1])
            return BAD("%s: x has %" PRId64 " channels, w is %s, groups %d", name,
                       x->shape[1], NODE_TYPE(b1, w), a->groups);
        out[1] = w->shape[0];
    }
    for (int i = 0; i < 2; i++) {
        out[2 + i] = dtl_win_out(x->shape[2 + i], k[i], a->pad[i], a->dil[i], a->stride[i]);
        if (out[2 + i] < 1)
            return BAD("%s: a window of %" PRId64 " (dilation %d) does not fit axis %d of "
                       "%s padded by %d", name, k[i], a->dil[i], 2 + i, NODE_TYPE(b1, x),
                       a->pad[i]);
    }
    if (y && !shape_eq(4, y->shape, 4, out))
        return BAD("%s: dy is %s, the forward result would be %s", name, NODE_TYPE(b1, y),
                   dtl_tensor_str(b2, sizeof b2, dt, 4, out));
    t->dtype = dt;
    t->rank = 4;
    if (n->op == DTL_OP_CONV2D || n->op == DTL_OP_MAXPOOL2D || n->op == DTL_OP_AVGPOOL2D)
        memcpy(t->shape, out, sizeof out);
    else if (n->op == DTL_OP_MAXPOOL2D_BWD)
        memcpy(t->shape, x->shape, sizeof out);
    /* else: the node gives its shape (dx or dw), checked above through x or w */
    return true;
#undef BAD
}

/* Sets *t to what node n (number id of g, inputs already in g) must be; returns false with a
 * one-line reason in why otherwise. Inputs must be valid ids smaller than id (checked by the
 * callers first). */
static bool node_check(const dtl_graph *g, uint32_t id, const dtl_node *n, node_type *t,
                       char *why, size_t wlen)
{
#define BAD(...) (snprintf(why, wlen, __VA_ARGS__), false)
    char b1[TYPE_LEN], b2[TYPE_LEN];
    const dtl_node *x = n->nin > 0 ? &g->nodes[n->in[0]] : NULL;
    const dtl_node *y = n->nin > 1 ? &g->nodes[n->in[1]] : NULL;
    (void)id;
    if ((unsigned)n->dtype >= DTL_DTYPE_COUNT)
        return BAD("bad dtype %d", (int)n->dtype);
    if (n->rank > DTL_MAX_RANK)
        return BAD("rank %u exceeds %d", n->rank, DTL_MAX_RANK);
    if ((unsigned)n->role > DTL_ROLE_METRIC)
        return BAD("bad role %d", (int)n->role);
    for (uint32_t i = 0; i < n->nin; i++) {   /* a malformed input poisons what reads it */
        const dtl_node *in = &g->nodes[n->in[i]];
        if (in->rank > DTL_MAX_RANK || (unsigned)in->dtype >= DTL_DTYPE_COUNT)
            return BAD("input %u (%%%u) is malformed", i, n->in[i]);
    }
    /* By default the result is what the node says (leaves and the shape-given ops). */
    t->dtype = n->dtype;
    t->rank = n->rank;
    memcpy(t->shape, n->shape, sizeof t->shape);
    for (uint32_t i = 0; i < n->rank; i++)
        if (n->shape[i] < 0)
            return BAD("negative dimension %" PRId64 " in %s", n->shape[i], NODE_TYPE(b1, n));

    switch (n->op) {
    case DTL_OP_CONST:
        return true;
    case DTL_OP_INPUT:
    case DTL_OP_STATE:
        if (!n->name || !*n->name)
            return BAD("%s without a name", dtl_op_name(n->op));
        return true;
    case DTL_OP_PARAM:
        if (!n->name || !*n->name)
            return BAD("param without a name");
        if (!dtl_dtype_is_float(n->dtype))
            return BAD("param \"%s\" has non-float dtype %s", n->name,
                       dtl_dtype_name(n->dtype));
        if ((unsigned)n->attr.init.kind > DTL_INIT_DATA)
            return BAD("param \"%s\": bad init kind %d", n->name, (int)n->attr.init.kind);
        if (n->attr.init.kind == DTL_INIT_DATA && !n->attr.init.data)
            return BAD("param \"%s\": init data is NULL", n->name);
        return true;
    case DTL_OP_IOTA:
        if (!is_numeric(n->dtype))
            return BAD("iota of dtype %s", dtl_dtype_name(n->dtype));
        if (n->attr.axis >= n->rank)
            return BAD("iota axis %u out of range for rank %u", n->attr.axis, n->rank);
        return true;
    case DTL_OP_RNG_UNIFORM:
        if (!dtl_dtype_is_float(n->dtype))
            return BAD("rng_uniform of dtype %s", dtl_dtype_name(n->dtype));
        if (x->dtype != DTL_DTYPE_I64 || x->rank != 0)
            return BAD("rng_uniform: the step must be an i64 scalar, found %s",
                       NODE_TYPE(b1, x));
        return true;

    case DTL_OP_NEG:
    case DTL_OP_ABS:
    case DTL_OP_RELU:
    case DTL_OP_EXP:
    case DTL_OP_LOG:
    case DTL_OP_SQRT:
    case DTL_OP_TANH:
    case DTL_OP_SIGMOID:
    case DTL_OP_SIN:
    case DTL_OP_COS:
    case DTL_OP_NOT: {
        bool ok;
        if (n->op == DTL_OP_NOT)
            ok = x->dtype == DTL_DTYPE_BOOL;
        else if (n->op == DTL_OP_NEG || n->op == DTL_OP_ABS || n->op == DTL_OP_RELU)
            ok = is_numeric(x->dtype);
        else
            ok = dtl_dtype_is_float(x->dtype);
        if (!ok)
            return BAD("%s of %s", dtl_op_name(n->op), dtl_dtype_name(x->dtype));
        t->dtype = x->dtype;
        t->rank = x->rank;
        memcpy(t->shape, x->shape, sizeof t->shape);
        return true;
    }
    case DTL_OP_CAST:
        t->rank = x->rank;   /* dtype: the node's own */
        memcpy(t->shape, x->shape, sizeof t->shape);
        return true;

    case DTL_OP_ADD:
    case DTL_OP_SUB:
    case DTL_OP_MUL:
    case DTL_OP_DIV:
    case DTL_OP_POW:
    case DTL_OP_MAX:
    case DTL_OP_MIN:
    case DTL_OP_LT:
    case DTL_OP_LE:
    case DTL_OP_GT:
    case DTL_OP_GE:
    case DTL_OP_EQ:
    case DTL_OP_NE:
    case DTL_OP_AND:
    case DTL_OP_OR: {
        if (x->dtype != y->dtype)
            return BAD("%s of different dtypes: %s and %s", dtl_op_name(n->op),
                       NODE_TYPE(b1, x), NODE_TYPE(b2, y));
        bool ok;
        switch (n->op) {
        case DTL_OP_POW: ok = dtl_dtype_is_float(x->dtype); break;
        case DTL_OP_EQ:
        case DTL_OP_NE: ok = true; break;
        case DTL_OP_AND:
        case DTL_OP_OR: ok = x->dtype == DTL_DTYPE_BOOL; break;
        default: ok = is_numeric(x->dtype); break;
        }
        if (!ok)
            return BAD("%s of %s", dtl_op_name(n->op), dtl_dtype_name(x->dtype));
        if (!broadcast_shapes(x->rank, x->shape, y->rank, y->shape, &t->rank, t->shape))
            return BAD("%s: shapes do not broadcast: %s and %s", dtl_op_name(n->op),
                       NODE_TYPE(b1, x), NODE_TYPE(b2, y));
        bool cmp = n->op >= DTL_OP_LT && n->op <= DTL_OP_NE;
        t->dtype = cmp ? DTL_DTYPE_BOOL : x->dtype;
        return true;
    }
    case DTL_OP_WHERE: {
        const dtl_node *z = &g->nodes[n->in[2]];
        if (x->dtype != DTL_DTYPE_BOOL)
            return BAD("where: the condition is %s, not bool", NODE_TYPE(b1, x));
        if (y->dtype != z->dtype)
            return BAD("where of different dtypes: %s and %s", NODE_TYPE(b1, y),
                       NODE_TYPE(b2, z));
        int64_t s1[DTL_MAX_RANK];
        uint32_t r1;
        if (!broadcast_shapes(x->rank, x->shape, y->rank, y->shape, &r1, s1) ||
            !broadcast_shapes(r1, s1, z->rank, z->shape, &t->rank, t->shape))
            return BAD("where: shapes do not broadcast: %s, %s and %s", NODE_TYPE(b1, x),
                       NODE_TYPE(b2, y), dtl_tensor_str((char[TYPE_LEN]){0}, TYPE_LEN, z->dtype,
                                                  z->rank, z->shape));
        t->dtype = y->dtype;
        return true;
    }

    case DTL_OP_SUM:
    case DTL_OP_REDUCE_MAX: {
        if (!is_numeric(x->dtype))
            return BAD("%s of %s", dtl_op_name(n->op), dtl_dtype_name(x->dtype));
        uint32_t axes = n->attr.red.axes;
        if (x->rank < 32 && (axes >> x->rank) != 0)
            return BAD("%s: axes mask 0x%x out of range for rank %u", dtl_op_name(n->op), axes,
                       x->rank);
        t->dtype = x->dtype;
        t->rank = 0;
        for (uint32_t i = 0; i < x->rank; i++) {
            bool red = (axes >> i) & 1;
            if (red && n->op == DTL_OP_REDUCE_MAX && x->shape[i] == 0)
                return BAD("reduce_max over the empty axis %u of %s", i, NODE_TYPE(b1, x));
            if (!red)
                t->shape[t->rank++] = x->shape[i];
            else if (n->attr.red.keepdims)
                t->shape[t->rank++] = 1;
        }
        return true;
    }
    case DTL_OP_ARGMAX:
        if (!is_numeric(x->dtype))
            return BAD("argmax of %s", dtl_dtype_name(x->dtype));
        if (n->attr.axis >= x->rank)
            return BAD("argmax: axis %u out of range for %s", n->attr.axis, NODE_TYPE(b1, x));
        if (x->shape[n->attr.axis] == 0)
            return BAD("argmax over the empty axis %u of %s", n->attr.axis, NODE_TYPE(b1, x));
        t->dtype = DTL_DTYPE_I64;
        t->rank = 0;
        for (uint32_t i = 0; i < x->rank; i++)
            if (i != n->attr.axis)
                t->shape[t->rank++] = x->shape[i];
        return true;

    case DTL_OP_MATMUL: {
        if (x->dtype != y->dtype || !dtl_dtype_is_float(x->dtype))
            return BAD("matmul of %s and %s (same float dtype needed)", NODE_TYPE(b1, x),
                       NODE_TYPE(b2, y));
        if (x->rank < 2 || y->rank < 2)
            return BAD("matmul operands need rank >= 2: %s @ %s", NODE_TYPE(b1, x),
                       NODE_TYPE(b2, y));
        if (x->shape[x->rank - 1] != y->shape[y->rank - 2])
            return BAD("matmul: inner dimensions differ: %s @ %s", NODE_TYPE(b1, x),
                       NODE_TYPE(b2, y));
        uint32_t rb;
        if (!broadcast_shapes(x->rank - 2, x->shape, y->rank - 2, y->shape, &rb, t->shape))
            return BAD("matmul: batch dimensions do not broadcast: %s @ %s", NODE_TYPE(b1, x),
                       NODE_TYPE(b2, y));
        if (n->attr.tf32 > 1)
            return BAD("matmul: tf32 is %u, not 0 or 1", (unsigned)n->attr.tf32);
        if (n->attr.tf32 && x->dtype != DTL_DTYPE_F32)
            return BAD("matmul: tf32 needs f32 operands, found %s @ %s", NODE_TYPE(b1, x),
                       NODE_TYPE(b2, y));
        /* bf16 @ bf16 accumulates (and gives) f32: mixed precision */
        t->dtype = x->dtype == DTL_DTYPE_BF16 ? DTL_DTYPE_F32 : x->dtype;
        t->rank = rb + 2;
        t->shape[rb] = x->shape[x->rank - 2];
        t->shape[rb + 1] = y->shape[y->rank - 1];
        return true;
    }

    case DTL_OP_RESHAPE:
        t->dtype = x->dtype;
        if (dtl_node_numel(x) != dtl_node_numel(n))
            return BAD("reshape changes the element count: %s to %s", NODE_TYPE(b1, x),
                       NODE_TYPE(b2, n));
        return true;
    case DTL_OP_TRANSPOSE: {
        bool seen[DTL_MAX_RANK] = {false};
        t->dtype = x->dtype;
        t->rank = x->rank;
        for (uint32_t i = 0; i < x->rank; i++) {
            uint32_t p = n->attr.perm[i];
            if (p >= x->rank || seen[p])
                return BAD("transpose: perm is not a permutation of 0..%u", x->rank - 1);
            seen[p] = true;
            t->shape[i] = x->shape[p];
        }
        return true;
    }
    case DTL_OP_BROADCAST:
        t->dtype = x->dtype;
        if (!broadcastable_to(x->rank, x->shape, n->rank, n->shape))
            return BAD("cannot broadcast %s to %s", NODE_TYPE(b1, x), NODE_TYPE(b2, n));
        return true;
    case DTL_OP_SLICE:
        t->dtype = x->dtype;
        if (n->rank != x->rank)
            return BAD("slice changes the rank: %s to %s", NODE_TYPE(b1, x), NODE_TYPE(b2, n));
        for (uint32_t i = 0; i < x->rank; i++) {
            int64_t start = n->attr.slice.start[i], step = n->attr.slice.step[i];
            int64_t cnt = n->shape[i], dim = x->shape[i];
            if (step == 0)
                return BAD("slice: step 0 on axis %u", i);
            if (start < 0 || start > dim)
                return BAD("slice: start %" PRId64 " out of range [0, %" PRId64 "] on axis %u",
                           start, dim, i);
            if (cnt > 0) {
                /* The last index, start + (cnt - 1) * step, must lie in [0, dim). Computed
                 * so that it cannot overflow: cnt - 1 <= (room) / |step|. */
                int64_t room = step > 0 ? dim - 1 - start : start;
                int64_t astep = step > 0 ? step : (step == INT64_MIN ? INT64_MAX : -step);
                if (start >= dim || room < 0 || cnt - 1 > room / astep)
                    return BAD("slice: %" PRId64 " elements from %" PRId64 " by %" PRId64
                               " leave axis %u of size %" PRId64,
                               cnt, start, step, i, dim);
            }
        }
        return true;
    case DTL_OP_CONCAT: {
        uint32_t axis = n->attr.axis;
        if (axis >= x->rank)
            return BAD("concat: axis %u out of range for %s", axis, NODE_TYPE(b1, x));
        t->dtype = x->dtype;
        t->rank = x->rank;
        memcpy(t->shape, x->shape, sizeof t->shape);
        t->shape[axis] = 0;
        for (uint32_t k = 0; k < n->nin; k++) {
            const dtl_node *c = &g->nodes[n->in[k]];
            bool ok = c->dtype == x->dtype && c->rank == x->rank;
            for (uint32_t i = 0; ok && i < x->rank; i++)
                ok = i == axis || c->shape[i] == x->shape[i];
            if (!ok)
                return BAD("concat along %u of %s and %s", axis, NODE_TYPE(b1, x),
                           NODE_TYPE(b2, c));
            if (c->shape[axis] > INT64_MAX - t->shape[axis])
                return BAD("concat: size overflows");
            t->shape[axis] += c->shape[axis];
        }
        return true;
    }
    case DTL_OP_GATHER:
    case DTL_OP_SCATTER_ADD: {
        /* data is in0 of gather (the source) or the node itself (scatter_add's result). */
        const dtl_node *data = n->op == DTL_OP_GATHER ? x : n;
        uint32_t axis = n->attr.axis;
        if (y->dtype != DTL_DTYPE_I32 && y->dtype != DTL_DTYPE_I64)
            return BAD("%s: indices are %s, not i32 or i64", dtl_op_name(n->op),
                       NODE_TYPE(b1, y));
        if (axis >= data->rank)
            return BAD("%s: axis %u out of range for %s", dtl_op_name(n->op), axis,
                       NODE_TYPE(b1, data));
        if (data->rank - 1 + y->rank > DTL_MAX_RANK)
            return BAD("%s: result rank exceeds %d", dtl_op_name(n->op), DTL_MAX_RANK);
        node_type g_out = {0};   /* the gathered shape: data's, axis replaced by idx's shape */
        g_out.rank = 0;
        for (uint32_t i = 0; i < axis; i++)
            g_out.shape[g_out.rank++] = data->shape[i];
        for (uint32_t i = 0; i < y->rank; i++)
            g_out.shape[g_out.rank++] = y->shape[i];
        for (uint32_t i = axis + 1; i < data->rank; i++)
            g_out.shape[g_out.rank++] = data->shape[i];
        if (n->op == DTL_OP_GATHER) {
            t->dtype = x->dtype;
            t->rank = g_out.rank;
            memcpy(t->shape, g_out.shape, sizeof t->shape);
            return true;
        }
        if (!is_numeric(x->dtype))
            return BAD("scatter_add of %s", dtl_dtype_name(x->dtype));
        t->dtype = x->dtype;
        if (!shape_eq(x->rank, x->shape, g_out.rank, g_out.shape))
            return BAD("scatter_add: updates are %s, expected %s for indices %s into %s",
                       NODE_TYPE(b1, x),
                       dtl_tensor_str((char[TYPE_LEN]){0}, TYPE_LEN, x->dtype, g_out.rank,
                                g_out.shape),
                       NODE_TYPE(b2, y),
                       dtl_tensor_str((char[TYPE_LEN]){0}, TYPE_LEN, n->dtype, n->rank, n->shape));
        return true;
    }
    case DTL_OP_CONV2D:
    case DTL_OP_CONV2D_BWD_X:
    case DTL_OP_CONV2D_BWD_W:
    case DTL_OP_MAXPOOL2D:
    case DTL_OP_MAXPOOL2D_BWD:
    case DTL_OP_AVGPOOL2D:
    case DTL_OP_AVGPOOL2D_BWD:
        return win_check(g, n, t, why, wlen);
    case DTL_OP_COUNT:
        break;
    }
    return BAD("bad op %d", (int)n->op);
#undef BAD
}

/* ---- graph lifetime and node creation ---------------------------------------------------- */

void dtl_graph_init(dtl_graph *g)
{
    memset(g, 0, sizeof *g);
    dtl_arena_init(&g->arena);
    g->role = DTL_ROLE_FORWARD;
}

void dtl_graph_free(dtl_graph *g)
{
    dtl_arena_free(&g->arena);
    memset(g, 0, sizeof *g);
}

/* A fresh node (not yet appended) with op, inputs (copied) and g->role. */
static dtl_node node_make(dtl_graph *g, const char *func, dtl_op op, uint32_t nin,
                          const dtl_val *in)
{
    dtl_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.role = g->role;
    n.nin = nin;
    int arity = op_table[op].arity;
    if (arity == ARITY_ANY ? nin < 1 : nin != (uint32_t)arity)
        graph_abort(__FILE__, __LINE__, func, "%s takes %d inputs, given %u", dtl_op_name(op),
                    arity, nin);
    for (uint32_t i = 0; i < nin; i++)
        if (in[i] >= g->nnodes)
            graph_abort(__FILE__, __LINE__, func, "%s: input %u is %%%u, not a node",
                        dtl_op_name(op), i, in[i]);
    if (nin) {
        dtl_val *copy = dtl_arena_array(&g->arena, nin, sizeof *copy);
        memcpy(copy, in, nin * sizeof *copy);
        n.in = copy;
    }
    return n;
}

static void set_shape(dtl_node *n, const char *func, uint32_t rank, const int64_t *shape)
{
    if (rank > DTL_MAX_RANK)
        graph_abort(__FILE__, __LINE__, func, "rank %u exceeds %d", rank, DTL_MAX_RANK);
    n->rank = rank;
    for (uint32_t i = 0; i < rank; i++)
        n->shape[i] = shape[i];
}

/* Checks n by the rules, sets its dtype and shape, and appends it. */
static dtl_val node_add(dtl_graph *g, const char *func, dtl_node *n)
{
    node_type t;
    char why[512];
    if (!node_check(g, g->nnodes, n, &t, why, sizeof why))
        graph_abort(__FILE__, __LINE__, func, "%s", why);
    n->dtype = t.dtype;
    n->rank = t.rank;
    memcpy(n->shape, t.shape, sizeof n->shape);
    for (uint32_t i = t.rank; i < DTL_MAX_RANK; i++)   /* canonical: passes may memcmp nodes */
        n->shape[i] = 0;
    if (g->nnodes == UINT32_MAX - 1)
        graph_abort(__FILE__, __LINE__, func, "too many nodes");
    if (g->nnodes == g->cap) {
        uint32_t cap = g->cap ? g->cap * 2 : 64;
        g->nodes = dtl_arena_grow(&g->arena, g->nodes, g->nnodes, cap, sizeof *g->nodes);
        g->cap = cap;
    }
    g->nodes[g->nnodes] = *n;
    return g->nnodes++;
}

static void *copy_data(dtl_graph *g, dtl_dtype dt, uint32_t rank, const int64_t *shape,
                       const void *data)
{
    size_t count = 1;
    for (uint32_t i = 0; i < rank; i++)
        count *= (size_t)shape[i];
    void *p = dtl_arena_array(&g->arena, count ? count : 1, dtl_dtype_size(dt));
    memcpy(p, data, count * dtl_dtype_size(dt));
    return p;
}

/* ---- builders ---------------------------------------------------------------------------- */

dtl_val dtl_g_const(dtl_graph *g, dtl_dtype dt, uint32_t rank, const int64_t *shape,
                    double fill)
{
    dtl_node n = node_make(g, __func__, DTL_OP_CONST, 0, NULL);
    n.dtype = dt;
    set_shape(&n, __func__, rank, shape);
    n.attr.cst.fill = fill;
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_const_data(dtl_graph *g, dtl_dtype dt, uint32_t rank, const int64_t *shape,
                         const void *data)
{
    dtl_node n = node_make(g, __func__, DTL_OP_CONST, 0, NULL);
    n.dtype = dt;
    set_shape(&n, __func__, rank, shape);
    if (!data)
        G_ABORT("data is NULL");
    node_type t;
    char why[512];
    if (!node_check(g, g->nnodes, &n, &t, why, sizeof why))   /* shape sane before copying */
        G_ABORT("%s", why);
    n.attr.cst.data = copy_data(g, dt, rank, shape, data);
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_scalar(dtl_graph *g, dtl_dtype dt, double v)
{
    return dtl_g_const(g, dt, 0, NULL, v);
}

static dtl_val named_leaf(dtl_graph *g, const char *func, dtl_op op, const char *name,
                          dtl_dtype dt, uint32_t rank, const int64_t *shape)
{
    dtl_node n = node_make(g, func, op, 0, NULL);
    n.dtype = dt;
    set_shape(&n, func, rank, shape);
    if (!name)
        graph_abort(__FILE__, __LINE__, func, "%s without a name", dtl_op_name(op));
    n.name = dtl_arena_strdup(&g->arena, name);
    return node_add(g, func, &n);
}

dtl_val dtl_g_input(dtl_graph *g, const char *name, dtl_dtype dt, uint32_t rank,
                    const int64_t *shape)
{
    return named_leaf(g, __func__, DTL_OP_INPUT, name, dt, rank, shape);
}

dtl_val dtl_g_param(dtl_graph *g, const char *name, dtl_dtype dt, uint32_t rank,
                    const int64_t *shape, dtl_init init)
{
    dtl_node n = node_make(g, __func__, DTL_OP_PARAM, 0, NULL);
    n.dtype = dt;
    set_shape(&n, __func__, rank, shape);
    if (!name)
        G_ABORT("param without a name");
    n.name = dtl_arena_strdup(&g->arena, name);
    n.attr.init = init;
    node_type t;
    char why[512];
    if (!node_check(g, g->nnodes, &n, &t, why, sizeof why))
        G_ABORT("%s", why);
    if (init.kind == DTL_INIT_DATA)
        n.attr.init.data = copy_data(g, dt, rank, shape, init.data);
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_state(dtl_graph *g, const char *name, dtl_dtype dt, uint32_t rank,
                    const int64_t *shape)
{
    return named_leaf(g, __func__, DTL_OP_STATE, name, dt, rank, shape);
}

dtl_val dtl_g_iota(dtl_graph *g, dtl_dtype dt, uint32_t rank, const int64_t *shape,
                   uint32_t axis)
{
    dtl_node n = node_make(g, __func__, DTL_OP_IOTA, 0, NULL);
    n.dtype = dt;
    set_shape(&n, __func__, rank, shape);
    n.attr.axis = axis;
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_rng_uniform(dtl_graph *g, dtl_val step, dtl_dtype dt, uint32_t rank,
                          const int64_t *shape, uint64_t stream)
{
    dtl_node n = node_make(g, __func__, DTL_OP_RNG_UNIFORM, 1, &step);
    n.dtype = dt;
    set_shape(&n, __func__, rank, shape);
    n.attr.stream = stream;
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_unary(dtl_graph *g, dtl_op op, dtl_val x)
{
    if ((unsigned)op >= DTL_OP_COUNT || op_table[op].kind != DTL_OPK_UNARY || op == DTL_OP_CAST)
        G_ABORT("%s is not a unary op (cast: dtl_g_cast)", dtl_op_name(op));
    dtl_node n = node_make(g, __func__, op, 1, &x);
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_cast(dtl_graph *g, dtl_val x, dtl_dtype to)
{
    dtl_node n = node_make(g, __func__, DTL_OP_CAST, 1, &x);
    n.dtype = to;
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_binary(dtl_graph *g, dtl_op op, dtl_val a, dtl_val b)
{
    if ((unsigned)op >= DTL_OP_COUNT || op_table[op].kind != DTL_OPK_BINARY)
        G_ABORT("%s is not a binary op", dtl_op_name(op));
    dtl_node n = node_make(g, __func__, op, 2, (dtl_val[]){a, b});
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_where(dtl_graph *g, dtl_val cond, dtl_val a, dtl_val b)
{
    dtl_node n = node_make(g, __func__, DTL_OP_WHERE, 3, (dtl_val[]){cond, a, b});
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_reduce(dtl_graph *g, dtl_op op, dtl_val x, uint32_t axes, bool keepdims)
{
    if (op != DTL_OP_SUM && op != DTL_OP_REDUCE_MAX)
        G_ABORT("%s is not sum or reduce_max", dtl_op_name(op));
    dtl_node n = node_make(g, __func__, op, 1, &x);
    n.attr.red.axes = axes;
    n.attr.red.keepdims = keepdims;
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_argmax(dtl_graph *g, dtl_val x, uint32_t axis)
{
    dtl_node n = node_make(g, __func__, DTL_OP_ARGMAX, 1, &x);
    n.attr.axis = axis;
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_matmul(dtl_graph *g, dtl_val a, dtl_val b)
{
    dtl_node n = node_make(g, __func__, DTL_OP_MATMUL, 2, (dtl_val[]){a, b});
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_matmul_tf32(dtl_graph *g, dtl_val a, dtl_val b)
{
    dtl_node n = node_make(g, __func__, DTL_OP_MATMUL, 2, (dtl_val[]){a, b});
    n.attr.tf32 = 1;
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_reshape(dtl_graph *g, dtl_val x, uint32_t rank, const int64_t *shape)
{
    dtl_node n = node_make(g, __func__, DTL_OP_RESHAPE, 1, &x);
    set_shape(&n, __func__, rank, shape);
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_transpose(dtl_graph *g, dtl_val x, const uint32_t *perm)
{
    dtl_node n = node_make(g, __func__, DTL_OP_TRANSPOSE, 1, &x);
    uint32_t rank = g->nodes[x].rank;
    for (uint32_t i = 0; i < rank; i++)
        n.attr.perm[i] = perm[i];
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_broadcast(dtl_graph *g, dtl_val x, uint32_t rank, const int64_t *shape)
{
    dtl_node n = node_make(g, __func__, DTL_OP_BROADCAST, 1, &x);
    set_shape(&n, __func__, rank, shape);
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_slice(dtl_graph *g, dtl_val x, const int64_t *start, const int64_t *stop,
                    const int64_t *step)
{
    dtl_node n = node_make(g, __func__, DTL_OP_SLICE, 1, &x);
    const dtl_node *xn = &g->nodes[x];
    n.rank = xn->rank;
    for (uint32_t i = 0; i < xn->rank; i++) {
        int64_t s = step[i], lo = start[i], hi = stop[i], dim = xn->shape[i];
        if (s == 0)
            G_ABORT("slice: step 0 on axis %u", i);
        if (lo < 0 || lo > dim || hi < -1 || hi > dim)
            G_ABORT("slice: start %" PRId64 " / stop %" PRId64 " not normalized for axis %u "
                    "of size %" PRId64, lo, hi, i, dim);
        /* numpy: ceil((stop - start) / step), at least 0. Operands are in [-1, dim]. */
        int64_t cnt = s > 0 ? (hi > lo ? (hi - lo - 1) / s + 1 : 0)
                            : (lo > hi ? (lo - hi - 1) / (s == INT64_MIN ? INT64_MAX : -s) + 1 : 0);
        n.shape[i] = cnt;
        n.attr.slice.start[i] = lo;
        n.attr.slice.step[i] = s;
    }
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_concat(dtl_graph *g, const dtl_val *xs, uint32_t n_in, uint32_t axis)
{
    dtl_node n = node_make(g, __func__, DTL_OP_CONCAT, n_in, xs);
    n.attr.axis = axis;
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_gather(dtl_graph *g, dtl_val x, dtl_val idx, uint32_t axis)
{
    dtl_node n = node_make(g, __func__, DTL_OP_GATHER, 2, (dtl_val[]){x, idx});
    n.attr.axis = axis;
    return node_add(g, __func__, &n);
}

dtl_val dtl_g_scatter_add(dtl_graph *g, dtl_val upd, dtl_val idx, uint32_t axis,
                          uint32_t rank, const int64_t *shape)
{
    dtl_node n = node_make(g, __func__, DTL_OP_SCATTER_ADD, 2, (dtl_val[]){upd, idx});
    n.dtype = g->nodes[upd].dtype;
    set_shape(&n, __func__, rank, shape);
    n.attr.axis = axis;
    return node_add(g, __func__, &n);
}

static dtl_val win_node(dtl_graph *g, const char *func, dtl_op op, uint32_t nin,
                        const dtl_val *in, const dtl_win_attr *win, const int64_t *shape)
{
    dtl_node n = node_make(g, func, op, nin, in);
    n.attr.win = *win;
    if (shape) {
        n.dtype = g->nodes[in[0]].dtype;
        set_shape(&n, func, 4, shape);
    }
    return node_add(g, func, &n);
}

dtl_val dtl_g_conv2d(dtl_graph *g, dtl_val x, dtl_val w, const dtl_win_attr *win)
{
    return win_node(g, __func__, DTL_OP_CONV2D, 2, (dtl_val[]){x, w}, win, NULL);
}

dtl_val dtl_g_conv2d_bwd_x(dtl_graph *g, dtl_val dy, dtl_val w, const dtl_win_attr *win,
                           const int64_t *xshape)
{
    return win_node(g, __func__, DTL_OP_CONV2D_BWD_X, 2, (dtl_val[]){dy, w}, win, xshape);
}

dtl_val dtl_g_conv2d_bwd_w(dtl_graph *g, dtl_val x, dtl_val dy, const dtl_win_attr *win,
                           const int64_t *wshape)
{
    return win_node(g, __func__, DTL_OP_CONV2D_BWD_W, 2, (dtl_val[]){x, dy}, win, wshape);
}

dtl_val dtl_g_pool2d(dtl_graph *g, dtl_op op, dtl_val x, const dtl_win_attr *win)
{
    if (op != DTL_OP_MAXPOOL2D && op != DTL_OP_AVGPOOL2D)
        G_ABORT("%s is not a pooling op", dtl_op_name(op));
    return win_node(g, __func__, op, 1, &x, win, NULL);
}

dtl_val dtl_g_maxpool2d_bwd(dtl_graph *g, dtl_val x, dtl_val dy, const dtl_win_attr *win)
{
    return win_node(g, __func__, DTL_OP_MAXPOOL2D_BWD, 2, (dtl_val[]){x, dy}, win, NULL);
}

dtl_val dtl_g_avgpool2d_bwd(dtl_graph *g, dtl_val dy, const dtl_win_attr *win,
                            const int64_t *xshape)
{
    return win_node(g, __func__, DTL_OP_AVGPOOL2D_BWD, 1, &dy, win, xshape);
}

dtl_val dtl_g_copy(dtl_graph *g, const dtl_node *proto, const dtl_val *in)
{
    if ((unsigned)proto->op >= DTL_OP_COUNT)
        G_ABORT("bad op %d", (int)proto->op);
    dtl_node n = node_make(g, __func__, proto->op, proto->nin, in);
    n.role = proto->role;
    n.dtype = proto->dtype;
    set_shape(&n, __func__, proto->rank, proto->shape);
    n.attr = proto->attr;
    if (proto->name)
        n.name = dtl_arena_strdup(&g->arena, proto->name);
    node_type t;
    char why[512];
    if (!node_check(g, g->nnodes, &n, &t, why, sizeof why))   /* shape sane before copying */
        G_ABORT("%s", why);
    if (t.dtype != proto->dtype || !shape_eq(t.rank, t.shape, proto->rank, proto->shape)) {
        char b1[TYPE_LEN], b2[TYPE_LEN];
        G_ABORT("a copy of %s %s would be %s", dtl_op_name(proto->op), NODE_TYPE(b1, proto),
                dtl_tensor_str(b2, sizeof b2, t.dtype, t.rank, t.shape));
    }
    if (n.op == DTL_OP_CONST && proto->attr.cst.data)
        n.attr.cst.data = copy_data(g, n.dtype, n.rank, n.shape, proto->attr.cst.data);
    if (n.op == DTL_OP_PARAM && proto->attr.init.kind == DTL_INIT_DATA)
        n.attr.init.data = copy_data(g, n.dtype, n.rank, n.shape, proto->attr.init.data);
    return node_add(g, __func__, &n);
}

/* ---- outputs ----------------------------------------------------------------------------- */

/* Checks output o against the graph and the outputs before it (index k). */
static bool output_check(const dtl_graph *g, uint32_t k, const dtl_output *o, char *why,
                         size_t wlen)
{
#define BAD(...) (snprintf(why, wlen, __VA_ARGS__), false)
    char b1[TYPE_LEN], b2[TYPE_LEN];
    if ((unsigned)o->kind > DTL_OUT_STATE)
        return BAD("output %u: bad kind %d", k, (int)o->kind);
    if (!o->name || !*o->name)
        return BAD("output %u has no name", k);
    if (o->val >= g->nnodes)
        return BAD("output \"%s\": %%%u is not a node", o->name, o->val);
    const dtl_node *v = &g->nodes[o->val];
    for (uint32_t j = 0; j < k; j++) {
        if (strcmp(g->outs[j].name, o->name) == 0)
            return BAD("two outputs named \"%s\"", o->name);
        if (o->kind == DTL_OUT_LOSS && g->outs[j].kind == DTL_OUT_LOSS)
            return BAD("two loss outputs (\"%s\" and \"%s\")", g->outs[j].name, o->name);
        if (o->target != DTL_VAL_NONE && g->outs[j].target == o->target)
            return BAD("two updates of %%%u (\"%s\" and \"%s\")", o->target, g->outs[j].name,
                       o->name);
    }
    switch (o->kind) {
    case DTL_OUT_LOSS:
        if (!dtl_dtype_is_float(v->dtype) || v->rank != 0)
            return BAD("loss \"%s\" is %s, not a float scalar", o->name, NODE_TYPE(b1, v));
        /* fall through */
    case DTL_OUT_VALUE:
        if (o->target != DTL_VAL_NONE)
            return BAD("output \"%s\" has a target but is not an update", o->name);
        return true;
    case DTL_OUT_PARAM:
    case DTL_OUT_STATE: {
        dtl_op want = o->kind == DTL_OUT_PARAM ? DTL_OP_PARAM : DTL_OP_STATE;
        if (o->target >= g->nnodes || g->nodes[o->target].op != want)
            return BAD("update \"%s\": target %%%u is not a %s", o->name, o->target,
                       dtl_op_name(want));
        const dtl_node *t = &g->nodes[o->target];
        if (t->dtype != v->dtype || !shape_eq(t->rank, t->shape, v->rank, v->shape))
            return BAD("update \"%s\": %s \"%s\" is %s, the new value %%%u is %s", o->name,
                       dtl_op_name(want), t->name, NODE_TYPE(b1, t), o->val, NODE_TYPE(b2, v));
        return true;
    }
    }
    return BAD("output %u: bad kind", k);
#undef BAD
}

void dtl_g_output(dtl_graph *g, dtl_out_kind kind, const char *name, dtl_val val,
                  dtl_val target)
{
    dtl_output o = {kind, NULL, val, target};
    if (!name && kind == DTL_OUT_LOSS)
        name = "loss";
    if (!name && (kind == DTL_OUT_PARAM || kind == DTL_OUT_STATE) && target < g->nnodes)
        name = g->nodes[target].name;
    if (!name)
        G_ABORT("output without a name");
    o.name = dtl_arena_strdup(&g->arena, name);
    char why[512];
    if (!output_check(g, g->nouts, &o, why, sizeof why))
        G_ABORT("%s", why);
    if (g->nouts == g->capouts) {
        uint32_t cap = g->capouts ? g->capouts * 2 : 16;
        g->outs = dtl_arena_grow(&g->arena, g->outs, g->nouts, cap, sizeof *g->outs);
        g->capouts = cap;
    }
    g->outs[g->nouts++] = o;
}

/* ---- verifier ---------------------------------------------------------------------------- */

bool dtl_graph_verify(const dtl_graph *g, FILE *why)
{
    enum { MAX_PROBLEMS = 20 };
    int problems = 0;
    char msg[600];
#define PROBLEM(...)                                                                        \
    do {                                                                                    \
        if (why && problems < MAX_PROBLEMS) {                                               \
            snprintf(msg, sizeof msg, __VA_ARGS__);                                         \
            fprintf(why, "%s\n", msg);                                                      \
        }                                                                                   \
        problems++;                                                                         \
    } while (0)

    for (uint32_t id = 0; id < g->nnodes; id++) {
        const dtl_node *n = &g->nodes[id];
        if ((unsigned)n->op >= DTL_OP_COUNT) {
            PROBLEM("%%%u: bad op %d", id, (int)n->op);
            continue;
        }
        int arity = op_table[n->op].arity;
        if (arity == ARITY_ANY ? n->nin < 1 : n->nin != (uint32_t)arity) {
            PROBLEM("%%%u (%s): %u inputs, expected %d", id, dtl_op_name(n->op), n->nin, arity);
            continue;
        }
        if (n->nin && !n->in) {
            PROBLEM("%%%u (%s): inputs missing", id, dtl_op_name(n->op));
            continue;
        }
        bool order_ok = true;
        for (uint32_t i = 0; i < n->nin; i++)
            if (n->in[i] >= id) {
                PROBLEM("%%%u (%s): input %u is %%%u, not an earlier node", id,
                        dtl_op_name(n->op), i, n->in[i]);
                order_ok = false;
            }
        if (!order_ok)
            continue;
        if (n->rank > DTL_MAX_RANK) {
            PROBLEM("%%%u (%s): rank %u exceeds %d", id, dtl_op_name(n->op), n->rank,
                    DTL_MAX_RANK);
            continue;
        }
        node_type t;
        char reason[512];
        if (!node_check(g, id, n, &t, reason, sizeof reason)) {
            PROBLEM("%%%u (%s): %s", id, dtl_op_name(n->op), reason);
            continue;
        }
        if (t.dtype != n->dtype || !shape_eq(t.rank, t.shape, n->rank, n->shape)) {
            char b1[TYPE_LEN], b2[TYPE_LEN];
            PROBLEM("%%%u (%s): is %s, the rules give %s", id, dtl_op_name(n->op),
                    NODE_TYPE(b1, n), dtl_tensor_str(b2, sizeof b2, t.dtype, t.rank, t.shape));
        }
        /* Named leaves: one node per input name, one per param/state name. */
        if (n->op == DTL_OP_INPUT || n->op == DTL_OP_PARAM || n->op == DTL_OP_STATE)
            for (uint32_t j = 0; j < id; j++) {
                const dtl_node *m = &g->nodes[j];
                bool same_space = n->op == DTL_OP_INPUT ? m->op == DTL_OP_INPUT
                                                        : m->op == DTL_OP_PARAM || m->op == DTL_OP_STATE;
                if (same_space && m->name && strcmp(m->name, n->name) == 0)
                    PROBLEM("%%%u (%s): the name \"%s\" is already %%%u", id,
                            dtl_op_name(n->op), n->name, j);
            }
    }
    for (uint32_t k = 0; k < g->nouts; k++) {
        char reason[512];
        if (!output_check(g, k, &g->outs[k], reason, sizeof reason))
            PROBLEM("%s", reason);
    }
    if (why && problems > MAX_PROBLEMS)
        fprintf(why, "... and %d more problems\n", problems - MAX_PROBLEMS);
    return problems == 0;
#undef PROBLEM
}

/* ---- printing ---------------------------------------------------------------------------- */

/* The shortest %g form that reads back as v (as a float when f32: 1e-3f prints 0.001). */
static const char *fmt_num_as(char *buf, size_t len, double v, bool f32)
{
    if (isnan(v))
        return snprintf(buf, len, "nan"), buf;
    if (isinf(v))
        return snprintf(buf, len, v < 0 ? "-inf" : "inf"), buf;
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        double back = strtod(buf, NULL);
        if (f32 ? (float)back == (float)v : back == v)
            break;
    }
    return buf;
}

static const char *fmt_num(char *buf, size_t len, double v)
{
    return fmt_num_as(buf, len, v, false);
}

static double elem_as_double(dtl_dtype dt, const void *data, size_t i)
{
    switch (dt) {
    case DTL_DTYPE_F32: return ((const float *)data)[i];
    case DTL_DTYPE_F64: return ((const double *)data)[i];
    case DTL_DTYPE_I32: return ((const int32_t *)data)[i];
    case DTL_DTYPE_I64: return (double)((const int64_t *)data)[i];
    case DTL_DTYPE_BOOL: return ((const unsigned char *)data)[i] != 0;
    default: return NAN;   /* f16, bf16: not shown */
    }
}

/* "[1, 2, 3]", at most 16 values then "... (N values)". */
static void print_data(FILE *out, dtl_dtype dt, uint64_t count, const void *data)
{
    enum { SHOWN = 16 };
    char num[40];
    fputc('[', out);
    for (uint64_t i = 0; i < count && i < SHOWN; i++) {
        if (dt == DTL_DTYPE_I64)
            fprintf(out, "%s%" PRId64, i ? ", " : "", ((const int64_t *)data)[i]);
        else
            fprintf(out, "%s%s", i ? ", " : "",
                    fmt_num_as(num, sizeof num, elem_as_double(dt, data, (size_t)i),
                               dt == DTL_DTYPE_F32));
    }
    if (count > SHOWN)
        fprintf(out, ", ... (%" PRIu64 " values)", count);
    fputc(']', out);
}

/* A string as a C-style quoted literal. */
static void print_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static const char *role_name(dtl_role r)
{
    static const char *const names[] = {"forward", "loss", "backward", "update", "metric"};
    return (unsigned)r <= DTL_ROLE_METRIC ? names[r] : "?";
}

static const char *init_name(dtl_init_kind k)
{
    static const char *const names[] = {"zeros",          "ones",           "constant",
                                        "normal",         "uniform",        "glorot_uniform",
                                        "glorot_normal",  "he_uniform",     "he_normal",
                                        "data"};
    static_assert(sizeof names / sizeof names[0] == DTL_INIT_DATA + 1, "one name per init");
    return (unsigned)k <= DTL_INIT_DATA ? names[k] : "?";
}

static void print_axes_list(FILE *out, const char *label, uint32_t n, const int64_t *v)
{
    fprintf(out, " %s=[", label);
    for (uint32_t i = 0; i < n; i++)
        fprintf(out, "%s%" PRId64, i ? ", " : "", v[i]);
    fputc(']', out);
}

static void print_node(const dtl_graph *g, uint32_t id, FILE *out)
{
    const dtl_node *n = &g->nodes[id];
    char b[TYPE_LEN], num[40], num2[40];
    uint32_t rank = n->rank < DTL_MAX_RANK ? n->rank : DTL_MAX_RANK;   /* even if malformed */
    fprintf(out, "%%%u = %s", id, dtl_op_name(n->op));
    bool named_leaf = n->op == DTL_OP_INPUT || n->op == DTL_OP_PARAM || n->op == DTL_OP_STATE;
    if (named_leaf) {
        fputc(' ', out);
        print_quoted(out, n->name ? n->name : "");
    }
    if (n->op == DTL_OP_CONST) {
        fputc(' ', out);
        if (n->attr.cst.data)
            print_data(out, n->dtype, dtl_node_numel(n), n->attr.cst.data);
        else
            fputs(fmt_num(num, sizeof num, n->attr.cst.fill), out);
    }
    if (n->nin && n->in) {
        fputc('(', out);
        for (uint32_t i = 0; i < n->nin; i++)
            fprintf(out, "%s%%%u", i ? ", " : "", n->in[i]);
        fputc(')', out);
    }
    fprintf(out, " : %s", NODE_TYPE(b, n));

    switch (n->op) {
    case DTL_OP_PARAM: {
        const dtl_init *in = &n->attr.init;
        fprintf(out, " init %s", init_name(in->kind));
        if (in->kind == DTL_INIT_CONSTANT)
            fprintf(out, "(%s)", fmt_num(num, sizeof num, in->a));
        else if (in->kind == DTL_INIT_NORMAL || in->kind == DTL_INIT_UNIFORM)
            fprintf(out, "(%s, %s)", fmt_num(num, sizeof num, in->a),
                    fmt_num(num2, sizeof num2, in->b));
        else if (in->kind == DTL_INIT_DATA && in->data) {
            fputc(' ', out);
            print_data(out, n->dtype, dtl_node_numel(n), in->data);
        }
        break;
    }
    case DTL_OP_IOTA:
    case DTL_OP_ARGMAX:
    case DTL_OP_CONCAT:
    case DTL_OP_GATHER:
    case DTL_OP_SCATTER_ADD:
        fprintf(out, " axis=%u", n->attr.axis);
        break;
    case DTL_OP_RNG_UNIFORM:
        fprintf(out, " stream=0x%016" PRIx64, n->attr.stream);
        break;
    case DTL_OP_MATMUL:
        if (n->attr.tf32)
            fputs(" tf32", out);
        break;
    case DTL_OP_SUM:
    case DTL_OP_REDUCE_MAX: {
        int64_t axes[32];
        uint32_t na = 0;
        for (uint32_t i = 0; i < 32; i++)
            if ((n->attr.red.axes >> i) & 1)
                axes[na++] = i;
        print_axes_list(out, "axes", na, axes);
        if (n->attr.red.keepdims)
            fputs(" keepdims", out);
        break;
    }
    case DTL_OP_TRANSPOSE: {
        int64_t perm[DTL_MAX_RANK];
        for (uint32_t i = 0; i < rank; i++)
            perm[i] = n->attr.perm[i];
        print_axes_list(out, "perm", rank, perm);
        break;
    }
    case DTL_OP_SLICE:
        print_axes_list(out, "start", rank, n->attr.slice.start);
        print_axes_list(out, "step", rank, n->attr.slice.step);
        break;
    case DTL_OP_CONV2D: case DTL_OP_CONV2D_BWD_X: case DTL_OP_CONV2D_BWD_W:
    case DTL_OP_MAXPOOL2D: case DTL_OP_MAXPOOL2D_BWD: case DTL_OP_AVGPOOL2D:
    case DTL_OP_AVGPOOL2D_BWD: {
        const dtl_win_attr *w = &n->attr.win;
        if (w->kernel[0])
            fprintf(out, " kernel=[%d, %d]", w->kernel[0], w->kernel[1]);
        fprintf(out, " stride=[%d, %d] pad=[%d, %d]", w->stride[0], w->stride[1], w->pad[0],
                w->pad[1]);
        if (w->dil[0] != 1 || w->dil[1] != 1)
            fprintf(out, " dilation=[%d, %d]", w->dil[0], w->dil[1]);
        if (w->groups != 1)
            fprintf(out, " groups=%d", w->groups);
        if (w->count_pad)
            fputs(" count_pad", out);
        break;
    }
    default:
        break;
    }
    bool label = n->name && !named_leaf;
    if (n->role != DTL_ROLE_FORWARD || label) {
        fputs("  #", out);
        if (n->role != DTL_ROLE_FORWARD)
            fprintf(out, " %s", role_name(n->role));
        if (label) {
            fputc(' ', out);
            print_quoted(out, n->name);
        }
    }
    fputc('\n', out);
}

void dtl_graph_print(const dtl_graph *g, FILE *out)
{
    for (uint32_t id = 0; id < g->nnodes; id++)
        print_node(g, id, out);
    for (uint32_t k = 0; k < g->nouts; k++) {
        const dtl_output *o = &g->outs[k];
        switch (o->kind) {
        case DTL_OUT_LOSS:
            if (o->name && strcmp(o->name, "loss") != 0)
                fprintf(out, "loss %s = %%%u\n", o->name, o->val);
            else
                fprintf(out, "loss = %%%u\n", o->val);
            break;
        case DTL_OUT_VALUE:
            fprintf(out, "value %s = %%%u\n", o->name ? o->name : "?", o->val);
            break;
        case DTL_OUT_PARAM:
        case DTL_OUT_STATE: {
            const char *t = o->target < g->nnodes && g->nodes[o->target].name
                                ? g->nodes[o->target].name
                                : "?";
            fprintf(out, "update %s = %%%u\n", t, o->val);
            break;
        }
        }
    }
}

/* ---- Graphviz ---------------------------------------------------------------------------- */

/* s inside a DOT double-quoted string: quotes and backslashes escaped, control bytes as '?'. */
static void dot_escaped(FILE *out, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fputc('?', out);
        else
            fputc(*p, out);
    }
}

static const char *const role_colour[] = {"#dbe9f6", "#fbe3b4", "#f6d1d1", "#d5f0d0",
                                          "#e6daf2"};

void dtl_graph_dot(const dtl_graph *g, FILE *out)
{
    char b[TYPE_LEN];
    fputs("digraph dtl {\n"
          "  rankdir=TB;\n"
          "  node [shape=ellipse, style=filled, fontname=\"Helvetica\", fontsize=10];\n"
          "  edge [fontname=\"Helvetica\", fontsize=8];\n",
          out);
    /* The legend: one swatch per role. */
    fputs("  subgraph cluster_legend {\n    label=\"roles\"; fontname=\"Helvetica\";\n", out);
    for (int r = 0; r <= DTL_ROLE_METRIC; r++)
        fprintf(out, "    legend_%s [label=\"%s\", shape=note, fillcolor=\"%s\"];\n",
                role_name((dtl_role)r), role_name((dtl_role)r), role_colour[r]);
    fputs("  }\n", out);

    for (uint32_t id = 0; id < g->nnodes; id++) {
        const dtl_node *n = &g->nodes[id];
        bool boxed = n->op == DTL_OP_INPUT || n->op == DTL_OP_PARAM || n->op == DTL_OP_STATE;
        fprintf(out, "  n%u [label=\"%%%u %s", id, id, dtl_op_name(n->op));
        if (n->name) {
            fputs("\\n", out);
            dot_escaped(out, n->name);
        }
        fprintf(out, "\\n%s\", shape=%s, fillcolor=\"%s\"];\n", NODE_TYPE(b, n),
                boxed ? "box" : n->op == DTL_OP_CONST ? "plaintext" : "ellipse",
                (unsigned)n->role <= DTL_ROLE_METRIC ? role_colour[n->role] : "white");
        for (uint32_t i = 0; n->in && i < n->nin; i++) {
            if (n->in[i] >= id)
                continue;   /* malformed: never emit an edge to a node that is not declared */
            if (n->nin > 1)
                fprintf(out, "  n%u -> n%u [label=\"%u\"];\n", n->in[i], id, i);
            else
                fprintf(out, "  n%u -> n%u;\n", n->in[i], id);
        }
    }
    for (uint32_t k = 0; k < g->nouts; k++) {
        const dtl_output *o = &g->outs[k];
        if (o->val >= g->nnodes)
            continue;
        if ((o->kind == DTL_OUT_PARAM || o->kind == DTL_OUT_STATE) && o->target < g->nnodes) {
            fprintf(out, "  n%u -> n%u [style=dashed, color=\"#2e7d32\", constraint=false, "
                         "label=\"update\"];\n",
                    o->val, o->target);
            continue;
        }
        fprintf(out, "  out%u [label=\"%s ", k, o->kind == DTL_OUT_LOSS ? "loss" : "value");
        dot_escaped(out, o->name ? o->name : "?");
        fprintf(out, "\", shape=doubleoctagon, fillcolor=\"%s\"];\n  n%u -> out%u;\n",
                o->kind == DTL_OUT_LOSS ? role_colour[DTL_ROLE_LOSS] : "white", o->val, k);
    }
    fputs("}\n", out);
}
