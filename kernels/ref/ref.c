/* kernels/ref/ref.c — the reference backend's per-op table (one row per dtl_op, kept in
 * step by a static_assert), the leaves' kernels (const, iota, rng_uniform) and the helpers
 * the kernels share: strides, broadcasting, the row walker and element conversions. */
#include "ref_internal.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "../../runtime/philox.h"

/* ---- shared helpers ---------------------------------------------------------------------- */

int64_t ref_numel(uint32_t rank, const int64_t *shape)
{
    int64_t k = 1;
    for (uint32_t i = 0; i < rank; i++)
        k *= shape[i];
    return k;
}

void ref_strides(uint32_t rank, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (uint32_t i = rank; i-- > 0;) {
        strides[i] = s;
        s *= shape[i];
    }
}

void ref_bcast_strides(uint32_t rank, const int64_t *shape, uint32_t orank,
                       const int64_t *oshape, int64_t *strides)
{
    int64_t own[DTL_MAX_RANK];
    ref_strides(rank, shape, own);
    for (uint32_t o = 0; o < orank; o++) {
        uint32_t back = orank - 1 - o;   /* position from the right */
        if (back >= rank) {
            strides[o] = 0;
            continue;
        }
        uint32_t i = rank - 1 - back;
        strides[o] = shape[i] == 1 && oshape[o] != 1 ? 0 : own[i];
    }
}

void ref_rows_init(ref_rows *it, uint32_t rank, const int64_t *shape, uint32_t nops,
                   const int64_t (*strides)[DTL_MAX_RANK], const int64_t *base)
{
    memset(it, 0, sizeof *it);
    assert(nops <= REF_MAX_OPS);
    it->nops = nops;
    it->nd = rank ? rank - 1 : 0;
    it->inner = rank ? shape[rank - 1] : 1;
    int64_t numel = ref_numel(rank, shape);
    it->rows = it->inner ? numel / it->inner : 0;
    for (uint32_t d = 0; d < it->nd; d++)
        it->shape[d] = shape[d];
    for (uint32_t k = 0; k < nops; k++) {
        for (uint32_t d = 0; d < it->nd; d++)
            it->stride[k][d] = strides[k][d];
        it->istride[k] = rank ? strides[k][rank - 1] : 0;
        it->off[k] = base ? base[k] : 0;
    }
}

void ref_rows_next(ref_rows *it)
{
    for (uint32_t d = it->nd; d-- > 0;) {
        it->idx[d]++;
        for (uint32_t k = 0; k < it->nops; k++)
            it->off[k] += it->stride[k][d];
        if (it->idx[d] < it->shape[d])
            return;
        for (uint32_t k = 0; k < it->nops; k++)
            it->off[k] -= it->stride[k][d] * it->shape[d];
        it->idx[d] = 0;
    }
}

int64_t ref_f2i64(double v)
{
    if (v != v)
        return 0;
    if (v >= 9223372036854775808.0)
        return INT64_MAX;
    if (v <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)v;
}

int32_t ref_f2i32(double v)
{
    if (v != v)
        return 0;
    if (v >= 2147483647.0)
        return INT32_MAX;
    if (v <= -2147483648.0)
        return INT32_MIN;
    return (int32_t)v;
}

void ref_store(dtl_dtype dt, void *p, int64_t i, double v)
{
    switch (dt) {
    case DTL_DTYPE_F32: ((float *)p)[i] = (float)v; break;
    case DTL_DTYPE_F64: ((double *)p)[i] = v; break;
    case DTL_DTYPE_BF16: ((uint16_t *)p)[i] = dtl_bf16_from_f32((float)v); break;
    case DTL_DTYPE_I32: ((int32_t *)p)[i] = ref_f2i32(v); break;
    case DTL_DTYPE_I64: ((int64_t *)p)[i] = ref_f2i64(v); break;
    case DTL_DTYPE_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    default: assert(!"unsupported dtype"); break;
    }
}

bool dtl_ref_supports(dtl_dtype t)
{
    return t == DTL_DTYPE_F32 || t == DTL_DTYPE_F64 || t == DTL_DTYPE_I32 ||
           t == DTL_DTYPE_I64 || t == DTL_DTYPE_BOOL;
}

/* bf16 is a storage type (mixed precision, docs/training.md): made and read by casts, read
 * by matmul, moved by the data movement ops that only copy bytes. */
static bool bf16_op(dtl_op op)
{
    switch (op) {
    case DTL_OP_CONST:
    case DTL_OP_CAST:
    case DTL_OP_MATMUL:
    case DTL_OP_RESHAPE:
    case DTL_OP_TRANSPOSE:
    case DTL_OP_BROADCAST:
    case DTL_OP_SLICE:
    case DTL_OP_CONCAT:
        return true;
    default:
        return false;
    }
}

bool dtl_ref_supports_op(dtl_op op, dtl_dtype out, uint32_t nin, const dtl_dtype *in)
{
    bool bf16 = out == DTL_DTYPE_BF16;
    if (!dtl_ref_supports(out) && !bf16)
        return false;
    for (uint32_t i = 0; i < nin; i++) {
        if (in[i] == DTL_DTYPE_BF16)
            bf16 = true;
        else if (!dtl_ref_supports(in[i]))
            return false;
    }
    return !bf16 || bf16_op(op);
}

bool dtl_ref_supports_node(const dtl_graph *g, dtl_val v)
{
    const dtl_node *n = &g->nodes[v];
    dtl_dtype in[8];
    uint32_t k = 0;
    bool bf16_in = false;
    for (uint32_t i = 0; i < n->nin; i++) {
        dtl_dtype t = g->nodes[n->in[i]].dtype;
        if (t == DTL_DTYPE_BF16)
            bf16_in = true;
        else if (k < 8)
            in[k++] = t;
    }
    if (bf16_in && k < 8)
        in[k++] = DTL_DTYPE_BF16;
    return dtl_ref_supports_op(n->op, n->dtype, k, in);
}

/* ---- leaves ------------------------------------------------------------------------------ */

static bool ref_const(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                      dtl_err *err)
{
    (void)in, (void)seed, (void)err;
    int64_t count = (int64_t)dtl_node_numel(n);
    if (n->attr.cst.data) {
        memcpy(out, n->attr.cst.data, (size_t)count * dtl_dtype_size(n->dtype));
        return true;
    }
    if (count == 0)
        return true;
    ref_store(n->dtype, out, 0, n->attr.cst.fill);
    size_t esz = dtl_dtype_size(n->dtype);
    for (int64_t i = 1; i < count; i++)
        memcpy((char *)out + (size_t)i * esz, out, esz);
    return true;
}

/* Element (o, j, i) of the node viewed as [outer, dim(axis), inner] is j. */
static bool ref_iota(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                     dtl_err *err)
{
    (void)in, (void)seed, (void)err;
    uint32_t axis = n->attr.axis;
    int64_t outer = ref_numel(axis, n->shape), dim = n->shape[axis];
    int64_t inner = ref_numel(n->rank - axis - 1, n->shape + axis + 1);
    int64_t at = 0;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < dim; j++)
            for (int64_t i = 0; i < inner; i++)
                ref_store(n->dtype, out, at++, (double)j);
    return true;
}

static bool ref_rng_uniform(const dtl_node *n, const dtl_ref_arg *in, void *out,
                            uint64_t seed, dtl_err *err)
{
    (void)err;
    uint64_t step = (uint64_t)*(const int64_t *)in[0].data;
    uint64_t count = dtl_node_numel(n);
    dtl_rng r;
    dtl_rng_init(&r, seed, n->attr.stream);
    dtl_rng_seek(&r, step * count);
    if (n->dtype == DTL_DTYPE_F32) {
        float *y = out;
        for (uint64_t i = 0; i < count; i++)
            y[i] = (float)(dtl_rng_u32(&r) >> 8) * (1.0f / 16777216.0f);
    } else {
        double *y = out;
        for (uint64_t i = 0; i < count; i++)
            y[i] = (double)dtl_rng_u32(&r) * (1.0 / 4294967296.0);
    }
    return true;
}

/* ---- the table --------------------------------------------------------------------------- */

static ref_kernel_fn *const kernels[] = {
    [DTL_OP_CONST] = ref_const,
    [DTL_OP_INPUT] = NULL,
    [DTL_OP_PARAM] = NULL,
    [DTL_OP_STATE] = NULL,
    [DTL_OP_IOTA] = ref_iota,
    [DTL_OP_RNG_UNIFORM] = ref_rng_uniform,
    [DTL_OP_NEG] = ref_unary,
    [DTL_OP_ABS] = ref_unary,
    [DTL_OP_EXP] = ref_unary,
    [DTL_OP_LOG] = ref_unary,
    [DTL_OP_SQRT] = ref_unary,
    [DTL_OP_TANH] = ref_unary,
    [DTL_OP_SIGMOID] = ref_unary,
    [DTL_OP_RELU] = ref_unary,
    [DTL_OP_SIN] = ref_unary,
    [DTL_OP_COS] = ref_unary,
    [DTL_OP_NOT] = ref_unary,
    [DTL_OP_CAST] = ref_cast,
    [DTL_OP_ADD] = ref_binary,
    [DTL_OP_SUB] = ref_binary,
    [DTL_OP_MUL] = ref_binary,
    [DTL_OP_DIV] = ref_binary,
    [DTL_OP_POW] = ref_binary,
    [DTL_OP_MAX] = ref_binary,
    [DTL_OP_MIN] = ref_binary,
    [DTL_OP_LT] = ref_binary,
    [DTL_OP_LE] = ref_binary,
    [DTL_OP_GT] = ref_binary,
    [DTL_OP_GE] = ref_binary,
    [DTL_OP_EQ] = ref_binary,
    [DTL_OP_NE] = ref_binary,
    [DTL_OP_AND] = ref_binary,
    [DTL_OP_OR] = ref_binary,
    [DTL_OP_WHERE] = ref_where,
    [DTL_OP_SUM] = ref_reduce,
    [DTL_OP_REDUCE_MAX] = ref_reduce,
    [DTL_OP_ARGMAX] = ref_argmax,
    [DTL_OP_MATMUL] = ref_matmul,
    [DTL_OP_RESHAPE] = ref_reshape,
    [DTL_OP_TRANSPOSE] = ref_transpose,
    [DTL_OP_BROADCAST] = ref_broadcast,
    [DTL_OP_SLICE] = ref_slice,
    [DTL_OP_CONCAT] = ref_concat,
    [DTL_OP_GATHER] = ref_gather,
    [DTL_OP_SCATTER_ADD] = ref_scatter_add,
    [DTL_OP_CONV2D] = ref_conv2d,
    [DTL_OP_CONV2D_BWD_X] = ref_conv2d_bwd_x,
    [DTL_OP_CONV2D_BWD_W] = ref_conv2d_bwd_w,
    [DTL_OP_MAXPOOL2D] = ref_maxpool2d,
    [DTL_OP_MAXPOOL2D_BWD] = ref_maxpool2d_bwd,
    [DTL_OP_AVGPOOL2D] = ref_avgpool2d,
    [DTL_OP_AVGPOOL2D_BWD] = ref_avgpool2d_bwd,
};
static_assert(sizeof kernels / sizeof kernels[0] == DTL_OP_COUNT,
              "the reference backend needs one row per dtl_op");

bool dtl_ref_kernel(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                    dtl_err *err)
{
    if ((unsigned)n->op >= DTL_OP_COUNT || !kernels[n->op])
        return dtl_err_set(err, DTL_ERR_USAGE, "ref: no kernel for %s", dtl_op_name(n->op));
    if (!dtl_ref_supports(n->dtype) && n->dtype != DTL_DTYPE_BF16)
        return dtl_err_set(err, DTL_ERR_USAGE, "ref: %s of %s is not supported",
                           dtl_op_name(n->op), dtl_dtype_name(n->dtype));
    bool bf16 = n->dtype == DTL_DTYPE_BF16;
    for (uint32_t i = 0; i < n->nin; i++) {
        if (!dtl_ref_supports(in[i].dtype) && in[i].dtype != DTL_DTYPE_BF16)
            return dtl_err_set(err, DTL_ERR_USAGE, "ref: %s of %s is not supported",
                               dtl_op_name(n->op), dtl_dtype_name(in[i].dtype));
        bf16 = bf16 || in[i].dtype == DTL_DTYPE_BF16;
    }
    if (bf16 && !bf16_op(n->op))
        return dtl_err_set(err, DTL_ERR_USAGE, "ref: %s of bf16 is not supported (bf16 is "
                           "a storage type: cast, matmul and data movement only)",
                           dtl_op_name(n->op));
    return kernels[n->op](n, in, out, seed, err);
}
