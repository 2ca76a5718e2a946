/* compiler/graph.h — the dataflow graph IR: what lowering produces, autodiff extends, the
 * passes rewrite, and every backend executes.
 *
 * Contract: a dtl_graph is a list of nodes in topological order (a node's inputs always have
 * smaller ids), each with a primitive op, its inputs, its dtype and its CONCRETE shape: the
 * batch dimension is bound when a graph is built, so every size is a number and memory can
 * be planned once. All nodes, names and constant data live in the graph's arena, released by
 * dtl_graph_free. Builders (dtl_g_*) infer the result's dtype and shape from their inputs and
 * attributes; a builder called with operands that do not fit (wrong ranks, shapes, dtypes) is
 * a bug in the caller — the front end has already reported every user error — and aborts
 * with file:line (dtl_graph_verify reports the same conditions as values, for tests and for
 * the verifier that runs between passes).
 *
 * Ops are few and primitive (DESIGN.md "Small primitive set"): composites such as softmax,
 * cross-entropy, mean, Adam's update are built from them by lowering and autodiff. Each op
 * has one row in the op table (graph.c), with its name, arity and kind; a static_assert keeps
 * the table and this enum in step, and every per-op table elsewhere (kernels, VJP rules) must
 * do the same with DTL_OP_COUNT.
 */
#ifndef DTL_GRAPH_H
#define DTL_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../runtime/arena.h"
#include "../runtime/dtype.h"

#define DTL_MAX_RANK 8

typedef uint32_t dtl_val;          /* a node id: index into graph->nodes */
#define DTL_VAL_NONE UINT32_MAX

typedef enum dtl_op {
    /* Leaves. */
    DTL_OP_CONST,        /* a constant: attr.cst */
    DTL_OP_INPUT,        /* fed at every run by name (x, y, the step number, lr): name */
    DTL_OP_PARAM,        /* a trainable parameter, persistent across runs: name, attr.init */
    DTL_OP_STATE,        /* persistent non-trainable state (optimizer moments): name, zero at start */
    DTL_OP_IOTA,         /* 0, 1, 2 … along attr.axis, broadcast over the other dims */
    DTL_OP_RNG_UNIFORM,  /* uniform [0, 1) of the node's shape: in[0] = the step number (i64
                            scalar); Philox stream attr.stream, key = the run's seed.
                            Bit for bit on every backend: element i is made from 32-bit word
                            (step * numel + i) mod 2^64 of that stream: f32 (w >> 8) * 2^-24,
                            f64 w * 2^-32 (kernels/ref/ref.h) */
    /* Elementwise, one input. */
    DTL_OP_NEG, DTL_OP_ABS, DTL_OP_EXP, DTL_OP_LOG, DTL_OP_SQRT, DTL_OP_TANH,
    DTL_OP_SIGMOID, DTL_OP_RELU, DTL_OP_SIN, DTL_OP_COS, DTL_OP_NOT,
    DTL_OP_CAST,         /* to the node's dtype */
    /* Elementwise, two inputs, numpy broadcasting. Comparisons give bool. */
    DTL_OP_ADD, DTL_OP_SUB, DTL_OP_MUL, DTL_OP_DIV, DTL_OP_POW, DTL_OP_MAX, DTL_OP_MIN,
    DTL_OP_LT, DTL_OP_LE, DTL_OP_GT, DTL_OP_GE, DTL_OP_EQ, DTL_OP_NE, DTL_OP_AND, DTL_OP_OR,
    /* Elementwise, three inputs: where(cond, a, b), broadcasting. */
    DTL_OP_WHERE,
    /* Reductions over attr.red.axes (bit i: reduce axis i), keepdims attr.red.keepdims. */
    DTL_OP_SUM, DTL_OP_REDUCE_MAX,
    DTL_OP_ARGMAX,       /* over the single axis attr.axis; result i64, that axis removed */
    /* Batched matrix product: [..., m, k] @ [..., k, n] -> [..., m, n]; both ranks >= 2,
     * batch dims broadcast. (1-D operands are reshaped by lowering.) Operands of one float
     * dtype; two bf16 operands give an f32 result (products exact, f32 accumulation: mixed
     * precision). attr.tf32 (f32 operands only): each operand element is first rounded to
     * TF32 (dtl_tf32_round), then the product is as in f32. */
    DTL_OP_MATMUL,
    /* Data movement. */
    DTL_OP_RESHAPE,      /* to the node's shape (same element count) */
    DTL_OP_TRANSPOSE,    /* attr.perm: output axis i is input axis perm[i] */
    DTL_OP_BROADCAST,    /* numpy-broadcast in[0] to the node's shape */
    DTL_OP_SLICE,        /* attr.slice: per axis start, step (>0 or <0), the node's shape
                            gives the count */
    DTL_OP_CONCAT,       /* along attr.axis; any number of inputs */
    DTL_OP_GATHER,       /* out[..., j, ...] = in0[..., in1[j...], ...] along attr.axis; in1
                            integer; out shape = in0's with that axis replaced by in1's shape */
    DTL_OP_SCATTER_ADD,  /* the adjoint of GATHER: zeros of the node's shape, then
                            out[..., in1[j], ...] += in0[..., j, ...] along attr.axis */
    /* Windowed ops over NCHW images, attr.win (kernels/ref/ref.h gives the loops). Output
     * size per spatial axis: (in + 2 pad - dil (k - 1) - 1) / stride + 1 (floor), >= 1. */
    DTL_OP_CONV2D,       /* in0 x [N, C, H, W], in1 w [O, C / groups, KH, KW] -> [N, O, OH, OW] */
    DTL_OP_CONV2D_BWD_X, /* in0 dy [N, O, OH, OW], in1 w -> dx, the node's shape [N, C, H, W]
                            (a transposed conv: the adjoint of conv2d in x) */
    DTL_OP_CONV2D_BWD_W, /* in0 x, in1 dy -> dw, the node's shape [O, C / groups, KH, KW] */
    DTL_OP_MAXPOOL2D,    /* in0 x [N, C, H, W] -> [N, C, OH, OW]; padding never wins */
    DTL_OP_MAXPOOL2D_BWD,/* in0 x, in1 dy -> dx (x's shape): each dy goes to its window's
                            first maximum */
    DTL_OP_AVGPOOL2D,    /* in0 x -> [N, C, OH, OW]; divisor kh * kw if attr.win.count_pad,
                            else the window's count of elements inside x */
    DTL_OP_AVGPOOL2D_BWD,/* in0 dy -> dx, the node's shape: each dy spread over its window */
    DTL_OP_COUNT
} dtl_op;

typedef enum dtl_op_kind {
    DTL_OPK_LEAF, DTL_OPK_UNARY, DTL_OPK_BINARY, DTL_OPK_TERNARY, DTL_OPK_REDUCE,
    DTL_OPK_MATMUL, DTL_OPK_MOVE,
    DTL_OPK_WINDOW       /* conv2d, pooling and their backward ops */
} dtl_op_kind;

/* What a node is for; used to tell forward, backward and update apart (DOT colours,
 * profiles) and by passes. */
typedef enum dtl_role {
    DTL_ROLE_FORWARD, DTL_ROLE_LOSS, DTL_ROLE_BACKWARD, DTL_ROLE_UPDATE, DTL_ROLE_METRIC
} dtl_role;

/* How a PARAM starts (runtime/init.c draws it from Philox). */
typedef enum dtl_init_kind {
    DTL_INIT_ZEROS, DTL_INIT_ONES, DTL_INIT_CONSTANT,  /* a */
    DTL_INIT_NORMAL,                                   /* mean a, std b */
    DTL_INIT_UNIFORM,                                  /* low a, high b */
    DTL_INIT_GLOROT_UNIFORM, DTL_INIT_GLOROT_NORMAL,   /* fan in/out from the shape */
    DTL_INIT_HE_UNIFORM, DTL_INIT_HE_NORMAL,
    DTL_INIT_DATA,                                     /* attr.init.data: a literal */
} dtl_init_kind;

typedef struct dtl_init {
    dtl_init_kind kind;
    double a, b;
    const void *data;     /* DATA: the node's dtype and shape, row-major */
} dtl_init;

/* The attributes of the windowed ops (conv, pooling); per spatial axis (h, w). */
typedef struct dtl_win_attr {
    int32_t kernel[2];     /* pooling: the window; conv: 0 (the kernel is w's KH, KW) */
    int32_t stride[2];     /* >= 1 */
    int32_t pad[2];        /* >= 0, on both sides; pooling: < kernel */
    int32_t dil[2];        /* >= 1; pooling: 1 */
    int32_t groups;        /* conv: >= 1, divides C and O; pooling: 1 */
    bool count_pad;        /* avgpool: padding counts in the divisor */
} dtl_win_attr;

typedef struct dtl_node {
    dtl_op op;
    dtl_dtype dtype;
    dtl_role role;
    uint32_t rank;
    int64_t shape[DTL_MAX_RANK];
    uint32_t nin;
    const dtl_val *in;             /* nin inputs */
    const char *name;              /* INPUT PARAM STATE: the binding name ("fc1.w");
                                      others: an optional debugging label, or NULL */
    union {
        struct {                   /* CONST: either every element is `fill`, or `data` */
            double fill;
            const void *data;      /* NULL: splat of fill; else row-major, node dtype */
        } cst;
        dtl_init init;             /* PARAM */
        uint32_t axis;             /* IOTA ARGMAX CONCAT GATHER SCATTER_ADD */
        struct { uint32_t axes; bool keepdims; } red;   /* SUM REDUCE_MAX */
        uint32_t perm[DTL_MAX_RANK];                    /* TRANSPOSE */
        struct { int64_t start[DTL_MAX_RANK], step[DTL_MAX_RANK]; } slice;   /* SLICE */
        uint64_t stream;           /* RNG_UNIFORM */
        dtl_win_attr win;          /* CONV2D* MAXPOOL2D* AVGPOOL2D* */
        uint8_t tf32;              /* MATMUL: 1: operands rounded to TF32 first; else 0 */
    } attr;
} dtl_node;

/* What a graph computes, besides its nodes: named results. */
typedef enum dtl_out_kind {
    DTL_OUT_LOSS,        /* the training loss (f32/f64 scalar) */
    DTL_OUT_VALUE,       /* any named result: inference output, a metric's count */
    DTL_OUT_PARAM,       /* the new value of PARAM node `target` after this step */
    DTL_OUT_STATE,       /* the new value of STATE node `target` after this step */
} dtl_out_kind;

typedef struct dtl_output {
    dtl_out_kind kind;
    const char *name;
    dtl_val val;
    dtl_val target;      /* PARAM, STATE: the leaf to overwrite; else DTL_VAL_NONE */
} dtl_output;

typedef struct dtl_graph {
    dtl_arena arena;
    dtl_node *nodes;
    uint32_t nnodes, cap;
    dtl_output *outs;
    uint32_t nouts, capouts;
    dtl_role role;       /* the role given to nodes built from now on */
} dtl_graph;

void dtl_graph_init(dtl_graph *g);
void dtl_graph_free(dtl_graph *g);

const char *dtl_op_name(dtl_op op);      /* "matmul", "reduce_max", … */
dtl_op_kind dtl_op_kind_of(dtl_op op);
uint64_t dtl_node_numel(const dtl_node *n);
/* A windowed op's output size on one axis: (in + 2 pad - dil (k - 1) - 1) / stride + 1, or
 * -1 when the window does not fit even once (or an argument is out of range). */
int64_t dtl_win_out(int64_t in, int64_t k, int64_t pad, int64_t dil, int64_t stride);
/* "f32[32, 128]" into buf[0..len) (truncated to fit); returns buf. */
const char *dtl_tensor_str(char *buf, size_t len, dtl_dtype dt, uint32_t rank,
                         const int64_t *shape);

/* ---- Builders: each appends a node (role g->role) and returns its id. ---- */
dtl_val dtl_g_const(dtl_graph *g, dtl_dtype dt, uint32_t rank, const int64_t *shape,
                    double fill);
dtl_val dtl_g_const_data(dtl_graph *g, dtl_dtype dt, uint32_t rank, const int64_t *shape,
                         const void *data);   /* data copied */
dtl_val dtl_g_scalar(dtl_graph *g, dtl_dtype dt, double v);   /* rank-0 constant */
dtl_val dtl_g_input(dtl_graph *g, const char *name, dtl_dtype dt, uint32_t rank,
                    const int64_t *shape);
dtl_val dtl_g_param(dtl_graph *g, const char *name, dtl_dtype dt, uint32_t rank,
                    const int64_t *shape, dtl_init init);
dtl_val dtl_g_state(dtl_graph *g, const char *name, dtl_dtype dt, uint32_t rank,
                    const int64_t *shape);
dtl_val dtl_g_iota(dtl_graph *g, dtl_dtype dt, uint32_t rank, const int64_t *shape,
                   uint32_t axis);
dtl_val dtl_g_rng_uniform(dtl_graph *g, dtl_val step, dtl_dtype dt, uint32_t rank,
                          const int64_t *shape, uint64_t stream);
dtl_val dtl_g_unary(dtl_graph *g, dtl_op op, dtl_val x);
dtl_val dtl_g_cast(dtl_graph *g, dtl_val x, dtl_dtype to);
dtl_val dtl_g_binary(dtl_graph *g, dtl_op op, dtl_val a, dtl_val b);
dtl_val dtl_g_where(dtl_graph *g, dtl_val cond, dtl_val a, dtl_val b);
dtl_val dtl_g_reduce(dtl_graph *g, dtl_op op, dtl_val x, uint32_t axes, bool keepdims);
dtl_val dtl_g_argmax(dtl_graph *g, dtl_val x, uint32_t axis);
dtl_val dtl_g_matmul(dtl_graph *g, dtl_val a, dtl_val b);
/* A matmul of f32 operands with attr.tf32 set. */
dtl_val dtl_g_matmul_tf32(dtl_graph *g, dtl_val a, dtl_val b);
dtl_val dtl_g_reshape(dtl_graph *g, dtl_val x, uint32_t rank, const int64_t *shape);
dtl_val dtl_g_transpose(dtl_graph *g, dtl_val x, const uint32_t *perm);
dtl_val dtl_g_broadcast(dtl_graph *g, dtl_val x, uint32_t rank, const int64_t *shape);
/* x[start:stop:step] on every axis (stop exclusive; numpy semantics, already normalized:
 * 0 <= start, and the count per axis is computed here). */
dtl_val dtl_g_slice(dtl_graph *g, dtl_val x, const int64_t *start, const int64_t *stop,
                    const int64_t *step);
dtl_val dtl_g_concat(dtl_graph *g, const dtl_val *xs, uint32_t n, uint32_t axis);
dtl_val dtl_g_gather(dtl_graph *g, dtl_val x, dtl_val idx, uint32_t axis);
dtl_val dtl_g_scatter_add(dtl_graph *g, dtl_val upd, dtl_val idx, uint32_t axis,
                          uint32_t rank, const int64_t *shape);
/* Windowed ops: win gives stride, pad, dil, groups (conv) or kernel, stride, pad,
 * count_pad (pooling). The backward builders take the shape of their result. */
dtl_val dtl_g_conv2d(dtl_graph *g, dtl_val x, dtl_val w, const dtl_win_attr *win);
dtl_val dtl_g_conv2d_bwd_x(dtl_graph *g, dtl_val dy, dtl_val w, const dtl_win_attr *win,
                           const int64_t *xshape);
dtl_val dtl_g_conv2d_bwd_w(dtl_graph *g, dtl_val x, dtl_val dy, const dtl_win_attr *win,
                           const int64_t *wshape);
dtl_val dtl_g_pool2d(dtl_graph *g, dtl_op op, dtl_val x, const dtl_win_attr *win);
dtl_val dtl_g_maxpool2d_bwd(dtl_graph *g, dtl_val x, dtl_val dy, const dtl_win_attr *win);
dtl_val dtl_g_avgpool2d_bwd(dtl_graph *g, dtl_val dy, const dtl_win_attr *win,
                            const int64_t *xshape);

void dtl_g_output(dtl_graph *g, dtl_out_kind kind, const char *name, dtl_val val,
                  dtl_val target);

/* For passes: appends a copy of proto (a node of any graph) with its inputs replaced by
 * in[0..proto->nin) (ids of g). Op, role, label or name, dtype, shape and attributes are
 * proto's; constant data and init data are copied into g. Aborts (a caller's bug) if the
 * node does not check or its dtype and shape differ from proto's. */
dtl_val dtl_g_copy(dtl_graph *g, const dtl_node *proto, const dtl_val *in);

static inline const dtl_node *dtl_g_node(const dtl_graph *g, dtl_val v)
{
    return &g->nodes[v];
}

/* Checks every invariant (topological order, arity, dtypes and shapes as the builders
 * would infer them, attributes in range, outputs' targets are leaves of the right kind with
 * the same dtype and shape). Returns true if sound; else writes one line per problem
 * (at most 20) to why (when not NULL) and returns false. */
bool dtl_graph_verify(const dtl_graph *g, FILE *why);

/* `dtlc compile --emit=graph`: one line per node, then the outputs, e.g.
 *   %0 = param "fc1.w" : f32[784, 128] init glorot_uniform
 *   %12 = matmul(%3, %7) : f32[32, 128]  # backward
 *   %13 = sum(%12) : f32[128] axes=[0]  # backward "db"
 *   loss = %40
 *   update fc1.w = %55
 * Attributes follow the type; a comment gives the role (when not forward) and the label. */
void dtl_graph_print(const dtl_graph *g, FILE *out);
/* Graphviz DOT; forward, loss, backward, update and metric nodes in different colours;
 * params and inputs as boxes. */
void dtl_graph_dot(const dtl_graph *g, FILE *out);

#endif
