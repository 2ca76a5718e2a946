/* kernels/ref/ref_internal.h — what the reference kernels' files share: the kernel
 * signature, each file's kernels, and strided iteration over a tensor's rows. */
#ifndef DTL_REF_INTERNAL_H
#define DTL_REF_INTERNAL_H

#include "ref.h"

#include <stddef.h>

typedef bool ref_kernel_fn(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                           dtl_err *err);

/* ref_elementwise.c */
ref_kernel_fn ref_unary, ref_cast, ref_binary, ref_where;
/* ref_reduce.c */
ref_kernel_fn ref_reduce, ref_argmax, ref_matmul;
/* ref_move.c */
ref_kernel_fn ref_reshape, ref_transpose, ref_broadcast, ref_slice, ref_concat, ref_gather,
    ref_scatter_add;
/* ref_window.c */
ref_kernel_fn ref_conv2d, ref_conv2d_bwd_x, ref_conv2d_bwd_w, ref_maxpool2d, ref_maxpool2d_bwd,
    ref_avgpool2d, ref_avgpool2d_bwd;

int64_t ref_numel(uint32_t rank, const int64_t *shape);
/* Row-major strides (in elements) of a contiguous tensor. */
void ref_strides(uint32_t rank, const int64_t *shape, int64_t *strides);
/* Strides of a contiguous (rank, shape) tensor read as if numpy-broadcast to (orank,
 * oshape): one per output dim, 0 where the input is broadcast or absent. */
void ref_bcast_strides(uint32_t rank, const int64_t *shape, uint32_t orank,
                       const int64_t *oshape, int64_t *strides);

/* Walks the rows (the last dim) of a row-major output of (rank, shape) while keeping, for up
 * to REF_MAX_OPS operands with arbitrary strides, the offset of the row's first element:
 *   for (int64_t r = 0; r < it.rows; r++, ref_rows_next(&it))
 *       row of it.inner elements: output at r * it.inner, operand k at it.off[k] stepping
 *       by it.istride[k]. */
enum { REF_MAX_OPS = 3 };
typedef struct ref_rows {
    uint32_t nd, nops;                  /* outer dims, operands */
    int64_t rows, inner;
    int64_t shape[DTL_MAX_RANK], idx[DTL_MAX_RANK];
    int64_t stride[REF_MAX_OPS][DTL_MAX_RANK];
    int64_t off[REF_MAX_OPS], istride[REF_MAX_OPS];
} ref_rows;

void ref_rows_init(ref_rows *it, uint32_t rank, const int64_t *shape, uint32_t nops,
                   const int64_t (*strides)[DTL_MAX_RANK], const int64_t *base);
void ref_rows_next(ref_rows *it);

/* Element conversions with the documented semantics (saturating, NaN -> 0). */
int64_t ref_f2i64(double v);
int32_t ref_f2i32(double v);
/* Stores v (a double, or an integer when is_int) as element i of dtype dt at p. */
void ref_store(dtl_dtype dt, void *p, int64_t i, double v);

#endif
