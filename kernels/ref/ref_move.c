/* kernels/ref/ref_move.c — data movement: reshape, transpose, broadcast, slice, concat,
 * gather, scatter_add.
 *
 * transpose, broadcast and slice are one routine, strided_copy: the output is contiguous
 * and each output dim reads the input with some stride (permuted strides for transpose, 0
 * for a broadcast dim, stride * step for a slice, from a base offset). Only the element size
 * matters to a copy, so these work for every dtype. concat copies whole blocks. gather and
 * scatter_add view the data as [outer, dim, inner] and the indices as a flat list; an index
 * outside [0, dim) is an error, never a wild read or write. */
#include "ref_internal.h"

#include <inttypes.h>
#include <string.h>

#define COPY_ROW(T)                                                                         \
    do {                                                                                    \
        const T *s = (const T *)src + it.off[0];                                            \
        T *d = (T *)dst + r * it.inner;                                                     \
        for (int64_t i = 0; i < it.inner; i++)                                              \
            d[i] = s[i * st];                                                               \
    } while (0)

/* dst (contiguous, rank/shape) [i...] = src[base + sum i_d * strides_d]. */
static void strided_copy(size_t esz, const void *src, int64_t base, uint32_t rank,
                         const int64_t *shape, const int64_t *strides, void *dst)
{
    int64_t st1[1][DTL_MAX_RANK];
    memcpy(st1[0], strides, rank * sizeof *strides);
    ref_rows it;
    ref_rows_init(&it, rank, shape, 1, (const int64_t(*)[DTL_MAX_RANK])st1, &base);
    for (int64_t r = 0; r < it.rows; r++, ref_rows_next(&it)) {
        int64_t st = it.istride[0];
        if (st == 1) {   /* a contiguous row (transposes that keep the last axis, slices) */
            memcpy((char *)dst + (size_t)(r * it.inner) * esz,
                   (const char *)src + (size_t)it.off[0] * esz, (size_t)it.inner * esz);
            continue;
        }
        switch (esz) {
        case 1: COPY_ROW(uint8_t); break;
        case 2: COPY_ROW(uint16_t); break;
        case 4: COPY_ROW(uint32_t); break;
        case 8: COPY_ROW(uint64_t); break;
        default: break;
        }
    }
}

bool ref_reshape(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                 dtl_err *err)
{
    (void)seed, (void)err;
    memcpy(out, in[0].data, dtl_node_numel(n) * dtl_dtype_size(n->dtype));
    return true;
}

bool ref_transpose(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                   dtl_err *err)
{
    (void)seed, (void)err;
    int64_t own[DTL_MAX_RANK], st[DTL_MAX_RANK];
    ref_strides(in[0].rank, in[0].shape, own);
    for (uint32_t i = 0; i < n->rank; i++)
        st[i] = own[n->attr.perm[i]];
    strided_copy(dtl_dtype_size(n->dtype), in[0].data, 0, n->rank, n->shape, st, out);
    return true;
}

bool ref_broadcast(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                   dtl_err *err)
{
    (void)seed, (void)err;
    int64_t st[DTL_MAX_RANK];
    ref_bcast_strides(in[0].rank, in[0].shape, n->rank, n->shape, st);
    strided_copy(dtl_dtype_size(n->dtype), in[0].data, 0, n->rank, n->shape, st, out);
    return true;
}

bool ref_slice(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
               dtl_err *err)
{
    (void)seed, (void)err;
    int64_t own[DTL_MAX_RANK], st[DTL_MAX_RANK], base = 0;
    ref_strides(in[0].rank, in[0].shape, own);
    for (uint32_t i = 0; i < n->rank; i++) {
        st[i] = own[i] * n->attr.slice.step[i];
        base += own[i] * n->attr.slice.start[i];
    }
    if (dtl_node_numel(n) == 0)
        return true;   /* start may then be one past the end */
    strided_copy(dtl_dtype_size(n->dtype), in[0].data, base, n->rank, n->shape, st, out);
    return true;
}

bool ref_concat(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                dtl_err *err)
{
    (void)seed, (void)err;
    uint32_t axis = n->attr.axis;
    size_t esz = dtl_dtype_size(n->dtype);
    int64_t outer = ref_numel(axis, n->shape);
    int64_t inner = ref_numel(n->rank - axis - 1, n->shape + axis + 1);
    char *d = out;
    for (int64_t o = 0; o < outer; o++)
        for (uint32_t k = 0; k < n->nin; k++) {
            size_t chunk = (size_t)(in[k].shape[axis] * inner) * esz;
            memcpy(d, (const char *)in[k].data + (size_t)o * chunk, chunk);
            d += chunk;
        }
    return true;
}

static int64_t index_at(const dtl_ref_arg *idx, int64_t j)
{
    return idx->dtype == DTL_DTYPE_I32 ? ((const int32_t *)idx->data)[j]
                                       : ((const int64_t *)idx->data)[j];
}

/* All indices in [0, dim)? */
static bool check_indices(const char *op, const dtl_ref_arg *idx, int64_t dim, uint32_t axis,
                          dtl_err *err)
{
    int64_t count = ref_numel(idx->rank, idx->shape);
    for (int64_t j = 0; j < count; j++) {
        int64_t v = index_at(idx, j);
        if (v < 0 || v >= dim)
            return dtl_err_set(err, DTL_ERR_MISMATCH,
                               "%s: index %" PRId64 " (element %" PRId64
                               ") out of range [0, %" PRId64 ") on axis %u",
                               op, v, j, dim, axis);
    }
    return true;
}

bool ref_gather(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                dtl_err *err)
{
    (void)seed;
    const dtl_ref_arg *x = &in[0], *idx = &in[1];
    uint32_t axis = n->attr.axis;
    int64_t outer = ref_numel(axis, x->shape), dim = x->shape[axis];
    int64_t inner = ref_numel(x->rank - axis - 1, x->shape + axis + 1);
    int64_t count = ref_numel(idx->rank, idx->shape);
    if (!check_indices("gather", idx, dim, axis, err))
        return false;
    size_t esz = dtl_dtype_size(n->dtype), row = (size_t)inner * esz;
    char *d = out;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < count; j++) {
            memcpy(d, (const char *)x->data + (size_t)((o * dim + index_at(idx, j)) * inner) * esz,
                   row);
            d += row;
        }
    return true;
}

#define SCATTER_OF(T, U)                                                                    \
    do {                                                                                    \
        const T *u = upd->data;                                                             \
        T *y = out;                                                                         \
        for (int64_t o = 0; o < outer; o++)                                                 \
            for (int64_t j = 0; j < count; j++) {                                           \
                T *dst = y + (o * dim + index_at(idx, j)) * inner;                          \
                const T *src = u + (o * count + j) * inner;                                 \
                for (int64_t i = 0; i < inner; i++)                                         \
                    dst[i] = (T)((U)dst[i] + (U)src[i]);                                    \
            }                                                                               \
    } while (0)

bool ref_scatter_add(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                     dtl_err *err)
{
    (void)seed;
    const dtl_ref_arg *upd = &in[0], *idx = &in[1];
    uint32_t axis = n->attr.axis;
    int64_t outer = ref_numel(axis, n->shape), dim = n->shape[axis];
    int64_t inner = ref_numel(n->rank - axis - 1, n->shape + axis + 1);
    int64_t count = ref_numel(idx->rank, idx->shape);
    if (!check_indices("scatter_add", idx, dim, axis, err))
        return false;
    memset(out, 0, dtl_node_numel(n) * dtl_dtype_size(n->dtype));
    switch (n->dtype) {
    case DTL_DTYPE_F32: SCATTER_OF(float, float); break;
    case DTL_DTYPE_F64: SCATTER_OF(double, double); break;
    case DTL_DTYPE_I32: SCATTER_OF(int32_t, uint32_t); break;
    case DTL_DTYPE_I64: SCATTER_OF(int64_t, uint64_t); break;
    default: break;
    }
    return true;
}
