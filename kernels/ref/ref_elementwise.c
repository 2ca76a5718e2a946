/* kernels/ref/ref_elementwise.c — unary ops, cast, binary ops and where.
 *
 * Unary ops and cast walk both tensors flat (same shape, contiguous). Binary ops and where
 * broadcast by strides: each operand gets one stride per output dim (0 where broadcast) and
 * the output is walked row by row (ref_rows); a row is one tight loop per (op, dtype),
 * written out by the macros below — a switch on the op outside the loop, never inside.
 * Float math goes through <tgmath.h>, so f32 uses expf, logf, … and f64 exp, log, ….
 * Integer arithmetic is done in the unsigned type, so overflow wraps instead of being
 * undefined. */
#include "ref_internal.h"

#include <string.h>
#include <tgmath.h>

/* ---- unary ------------------------------------------------------------------------------- */

#define UNARY_FLOAT(T)                                                                      \
    static void unary_##T(dtl_op op, const T *x, T *y, int64_t n)                           \
    {                                                                                       \
        switch (op) {                                                                       \
        case DTL_OP_NEG: for (int64_t i = 0; i < n; i++) y[i] = -x[i]; break;               \
        case DTL_OP_ABS: for (int64_t i = 0; i < n; i++) y[i] = fabs(x[i]); break;          \
        case DTL_OP_EXP: for (int64_t i = 0; i < n; i++) y[i] = exp(x[i]); break;           \
        case DTL_OP_LOG: for (int64_t i = 0; i < n; i++) y[i] = log(x[i]); break;           \
        case DTL_OP_SQRT: for (int64_t i = 0; i < n; i++) y[i] = sqrt(x[i]); break;         \
        case DTL_OP_TANH: for (int64_t i = 0; i < n; i++) y[i] = tanh(x[i]); break;         \
        case DTL_OP_SIN: for (int64_t i = 0; i < n; i++) y[i] = sin(x[i]); break;           \
        case DTL_OP_COS: for (int64_t i = 0; i < n; i++) y[i] = cos(x[i]); break;           \
        case DTL_OP_RELU:                                                                   \
            for (int64_t i = 0; i < n; i++)                                                 \
                y[i] = x[i] > 0 || x[i] != x[i] ? x[i] : (T)0;                              \
            break;                                                                          \
        case DTL_OP_SIGMOID: /* never exp of a large positive number */                     \
            for (int64_t i = 0; i < n; i++) {                                               \
                T e = exp(-fabs(x[i]));                                                     \
                y[i] = x[i] >= 0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);                      \
            }                                                                               \
            break;                                                                          \
        default: break;                                                                     \
        }                                                                                   \
    }

#define UNARY_INT(T, U)                                                                     \
    static void unary_##T(dtl_op op, const T *x, T *y, int64_t n)                           \
    {                                                                                       \
        switch (op) {                                                                       \
        case DTL_OP_NEG: for (int64_t i = 0; i < n; i++) y[i] = (T)(0u - (U)x[i]); break;   \
        case DTL_OP_ABS:                                                                    \
            for (int64_t i = 0; i < n; i++)                                                 \
                y[i] = x[i] < 0 ? (T)(0u - (U)x[i]) : x[i];                                 \
            break;                                                                          \
        case DTL_OP_RELU: for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0; break; \
        default: break;                                                                     \
        }                                                                                   \
    }

UNARY_FLOAT(float)
UNARY_FLOAT(double)
UNARY_INT(int32_t, uint32_t)
UNARY_INT(int64_t, uint64_t)

bool ref_unary(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
               dtl_err *err)
{
    (void)seed, (void)err;
    int64_t count = (int64_t)dtl_node_numel(n);
    switch (n->dtype) {
    case DTL_DTYPE_F32: unary_float(n->op, in[0].data, out, count); break;
    case DTL_DTYPE_F64: unary_double(n->op, in[0].data, out, count); break;
    case DTL_DTYPE_I32: unary_int32_t(n->op, in[0].data, out, count); break;
    case DTL_DTYPE_I64: unary_int64_t(n->op, in[0].data, out, count); break;
    case DTL_DTYPE_BOOL: {   /* not */
        const uint8_t *x = in[0].data;
        uint8_t *y = out;
        for (int64_t i = 0; i < count; i++)
            y[i] = x[i] == 0;
        break;
    }
    default: break;
    }
    return true;
}

/* ---- cast -------------------------------------------------------------------------------- */

bool ref_cast(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
              dtl_err *err)
{
    (void)seed, (void)err;
    int64_t count = (int64_t)dtl_node_numel(n);
    dtl_dtype from = in[0].dtype, to = n->dtype;
    const void *x = in[0].data;
    if (from == to) {
        memcpy(out, x, (size_t)count * dtl_dtype_size(to));
        return true;
    }
    for (int64_t i = 0; i < count; i++) {
        /* Integers travel as int64 (exact), floats as double. */
        bool is_int = true;
        int64_t iv = 0;
        double fv = 0;
        switch (from) {
        case DTL_DTYPE_F32: fv = ((const float *)x)[i]; is_int = false; break;
        case DTL_DTYPE_F64: fv = ((const double *)x)[i]; is_int = false; break;
        case DTL_DTYPE_BF16:
            fv = dtl_f32_from_bf16(((const uint16_t *)x)[i]);
            is_int = false;
            break;
        case DTL_DTYPE_I32: iv = ((const int32_t *)x)[i]; break;
        case DTL_DTYPE_I64: iv = ((const int64_t *)x)[i]; break;
        case DTL_DTYPE_BOOL: iv = ((const uint8_t *)x)[i] != 0; break;
        default: break;
        }
        switch (to) {
        case DTL_DTYPE_F32: ((float *)out)[i] = is_int ? (float)iv : (float)fv; break;
        case DTL_DTYPE_F64: ((double *)out)[i] = is_int ? (double)iv : fv; break;
        case DTL_DTYPE_BF16:   /* through f32, as PyTorch does */
            ((uint16_t *)out)[i] = dtl_bf16_from_f32(is_int ? (float)iv : (float)fv);
            break;
        case DTL_DTYPE_I32:
            ((int32_t *)out)[i] = is_int ? (int32_t)(uint32_t)(uint64_t)iv : ref_f2i32(fv);
            break;
        case DTL_DTYPE_I64: ((int64_t *)out)[i] = is_int ? iv : ref_f2i64(fv); break;
        case DTL_DTYPE_BOOL: ((uint8_t *)out)[i] = is_int ? iv != 0 : fv != 0; break;
        default: break;
        }
    }
    return true;
}

/* ---- binary ------------------------------------------------------------------------------ */

/* One row: y[i] = EXPR with x = a[i * sa], z = b[i * sb]; the common unit-stride case gets
 * its own loop so that the compiler can vectorize it. */
#define ROW(TI, TY, EXPR)                                                                       \
    do {                                                                                    \
        if (sa == 1 && sb == 1)                                                             \
            for (int64_t i = 0; i < n; i++) {                                               \
                TI x = a[i], z = b[i];                                                       \
                y[i] = (TY)(EXPR);                                                          \
            }                                                                               \
        else                                                                                \
            for (int64_t i = 0; i < n; i++) {                                               \
                TI x = a[i * sa], z = b[i * sb];                                             \
                y[i] = (TY)(EXPR);                                                          \
            }                                                                               \
    } while (0)

/* Comparisons: the same for every dtype; the result is a bool byte. */
#define CMP_CASES(T)                                                                           \
    case DTL_OP_LT: { uint8_t *y = yv; ROW(T, uint8_t, x < z); break; }                        \
    case DTL_OP_LE: { uint8_t *y = yv; ROW(T, uint8_t, x <= z); break; }                       \
    case DTL_OP_GT: { uint8_t *y = yv; ROW(T, uint8_t, x > z); break; }                        \
    case DTL_OP_GE: { uint8_t *y = yv; ROW(T, uint8_t, x >= z); break; }                       \
    case DTL_OP_EQ: { uint8_t *y = yv; ROW(T, uint8_t, x == z); break; }                       \
    case DTL_OP_NE: { uint8_t *y = yv; ROW(T, uint8_t, x != z); break; }

#define BINARY_FLOAT(T)                                                                     \
    static void binary_##T(dtl_op op, const T *a, int64_t sa, const T *b, int64_t sb,       \
                           void *yv, int64_t n)                                             \
    {                                                                                       \
        T *yt = yv;                                                                         \
        switch (op) {                                                                       \
        case DTL_OP_ADD: { T *y = yt; ROW(T, T, x + z); break; }                               \
        case DTL_OP_SUB: { T *y = yt; ROW(T, T, x - z); break; }                               \
        case DTL_OP_MUL: { T *y = yt; ROW(T, T, x * z); break; }                               \
        case DTL_OP_DIV: { T *y = yt; ROW(T, T, x / z); break; }                               \
        case DTL_OP_POW: { T *y = yt; ROW(T, T, pow(x, z)); break; }                           \
        case DTL_OP_MAX: { T *y = yt; ROW(T, T, x > z || x != x ? x : z); break; }             \
        case DTL_OP_MIN: { T *y = yt; ROW(T, T, x < z || x != x ? x : z); break; }             \
        CMP_CASES(T)                                                                         \
        default: break;                                                                     \
        }                                                                                   \
    }

#define BINARY_INT(T, U)                                                               \
    static void binary_##T(dtl_op op, const T *a, int64_t sa, const T *b, int64_t sb,       \
                           void *yv, int64_t n)                                             \
    {                                                                                       \
        T *yt = yv;                                                                         \
        switch (op) {                                                                       \
        case DTL_OP_ADD: { T *y = yt; ROW(T, T, (U)x + (U)z); break; }                         \
        case DTL_OP_SUB: { T *y = yt; ROW(T, T, (U)x - (U)z); break; }                         \
        case DTL_OP_MUL: { T *y = yt; ROW(T, T, (U)x * (U)z); break; }                         \
        case DTL_OP_DIV:                                                                    \
            { T *y = yt; ROW(T, T, z == 0 ? 0 : z == -1 ? (T)(0u - (U)x) : x / z); break; }    \
        case DTL_OP_MAX: { T *y = yt; ROW(T, T, x > z ? x : z); break; }                       \
        case DTL_OP_MIN: { T *y = yt; ROW(T, T, x < z ? x : z); break; }                       \
        CMP_CASES(T)                                                                         \
        default: break;                                                                     \
        }                                                                                   \
    }

BINARY_FLOAT(float)
BINARY_FLOAT(double)
BINARY_INT(int32_t, uint32_t)
BINARY_INT(int64_t, uint64_t)

/* bool: operands are normalized to 0/1 first, so 2 and 1 are both true and equal. */
static void binary_bool(dtl_op op, const uint8_t *a0, int64_t sa, const uint8_t *b0,
                        int64_t sb, void *yv, int64_t n)
{
    uint8_t *y = yv;
    const uint8_t *a = a0, *b = b0;
    switch (op) {
    case DTL_OP_AND: ROW(uint8_t, uint8_t, (x != 0) & (z != 0)); break;
    case DTL_OP_OR: ROW(uint8_t, uint8_t, (x != 0) | (z != 0)); break;
    case DTL_OP_EQ: ROW(uint8_t, uint8_t, (x != 0) == (z != 0)); break;
    case DTL_OP_NE: ROW(uint8_t, uint8_t, (x != 0) != (z != 0)); break;
    default: break;
    }
}

bool ref_binary(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                dtl_err *err)
{
    (void)seed, (void)err;
    int64_t st[2][DTL_MAX_RANK];
    ref_bcast_strides(in[0].rank, in[0].shape, n->rank, n->shape, st[0]);
    ref_bcast_strides(in[1].rank, in[1].shape, n->rank, n->shape, st[1]);
    ref_rows it;
    bool same = in[0].rank == n->rank && in[1].rank == n->rank &&
                ref_numel(in[0].rank, in[0].shape) == (int64_t)dtl_node_numel(n) &&
                ref_numel(in[1].rank, in[1].shape) == (int64_t)dtl_node_numel(n);
    if (same) {   /* no broadcasting: one flat row */
        int64_t flat = (int64_t)dtl_node_numel(n), one[2][DTL_MAX_RANK] = {{1}, {1}};
        ref_rows_init(&it, 1, &flat, 2, (const int64_t(*)[DTL_MAX_RANK])one, NULL);
    } else {
        ref_rows_init(&it, n->rank, n->shape, 2, (const int64_t(*)[DTL_MAX_RANK])st, NULL);
    }
    size_t osz = dtl_dtype_size(n->dtype);
    for (int64_t r = 0; r < it.rows; r++, ref_rows_next(&it)) {
        void *y = (char *)out + (size_t)(r * it.inner) * osz;
        int64_t sa = it.istride[0], sb = it.istride[1], m = it.inner;
        switch (in[0].dtype) {
        case DTL_DTYPE_F32:
            binary_float(n->op, (const float *)in[0].data + it.off[0], sa,
                         (const float *)in[1].data + it.off[1], sb, y, m);
            break;
        case DTL_DTYPE_F64:
            binary_double(n->op, (const double *)in[0].data + it.off[0], sa,
                          (const double *)in[1].data + it.off[1], sb, y, m);
            break;
        case DTL_DTYPE_I32:
            binary_int32_t(n->op, (const int32_t *)in[0].data + it.off[0], sa,
                           (const int32_t *)in[1].data + it.off[1], sb, y, m);
            break;
        case DTL_DTYPE_I64:
            binary_int64_t(n->op, (const int64_t *)in[0].data + it.off[0], sa,
                           (const int64_t *)in[1].data + it.off[1], sb, y, m);
            break;
        case DTL_DTYPE_BOOL:
            binary_bool(n->op, (const uint8_t *)in[0].data + it.off[0], sa,
                        (const uint8_t *)in[1].data + it.off[1], sb, y, m);
            break;
        default: break;
        }
    }
    return true;
}

/* ---- where ------------------------------------------------------------------------------- */

#define WHERE_ROW(T)                                                                        \
    do {                                                                                    \
        const T *a = (const T *)in[1].data + it.off[1], *b = (const T *)in[2].data + it.off[2]; \
        T *y = (T *)out + r * it.inner;                                                     \
        for (int64_t i = 0; i < it.inner; i++)                                              \
            y[i] = c[i * sc] ? a[i * sa] : b[i * sb];                                       \
    } while (0)

bool ref_where(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
               dtl_err *err)
{
    (void)seed, (void)err;
    int64_t st[3][DTL_MAX_RANK];
    for (int k = 0; k < 3; k++)
        ref_bcast_strides(in[k].rank, in[k].shape, n->rank, n->shape, st[k]);
    ref_rows it;
    ref_rows_init(&it, n->rank, n->shape, 3, (const int64_t(*)[DTL_MAX_RANK])st, NULL);
    for (int64_t r = 0; r < it.rows; r++, ref_rows_next(&it)) {
        const uint8_t *c = (const uint8_t *)in[0].data + it.off[0];
        int64_t sc = it.istride[0], sa = it.istride[1], sb = it.istride[2];
        switch (dtl_dtype_size(n->dtype)) {   /* a copy: only the element size matters */
        case 1: WHERE_ROW(uint8_t); break;
        case 2: WHERE_ROW(uint16_t); break;
        case 4: WHERE_ROW(uint32_t); break;
        case 8: WHERE_ROW(uint64_t); break;
        default: break;
        }
    }
    return true;
}
