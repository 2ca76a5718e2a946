/* kernels/cuda/ops.h — the CUDA kernels' launchers (kernels/cuda/ops.cu), callable from C.
 *
 * Contract: each dtl_cu_* function enqueues one kernel (or a short sequence) on `stream` and
 * returns the launch's cudaError_t (cudaSuccess, or the error cudaGetLastError reports right
 * after the launch); it never synchronizes, so it may be called while the stream is being
 * captured into a CUDA Graph. Pointers are device pointers; tensors are dense row-major, the
 * output contiguous and never overlapping an operand. Operands are read through strides in
 * elements (0 where broadcast), so broadcasting, transposition and slicing need no copies.
 * The numerics are those of kernels/ref/ref.h (f32 math in float with the IEEE-rounded
 * library functions — never fast math —, sums accumulated in double, NaN propagated by
 * max/min/relu/reduce_max, integer wrap-around, saturating float-to-int casts), so a result
 * equals the reference backend's within float rounding, bit for bit for integers, bools,
 * copies and rng_uniform.
 *
 * This header is plain C and C++ (no dtl headers): dtypes and ops travel as the small enums
 * below, which kernels/cuda/cuda_backend.c maps from dtl_dtype / dtl_op.
 */
#ifndef DTL_CUDA_OPS_H
#define DTL_CUDA_OPS_H

#include <stdint.h>

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { DTL_CU_MAX_RANK = 8 };

typedef enum dtl_cu_dt {
    DTL_CU_F32, DTL_CU_F64, DTL_CU_I32, DTL_CU_I64, DTL_CU_BOOL,
    DTL_CU_BF16,   /* storage only (mixed precision): cast, copies, fused loads and stores */
    DTL_CU_DT_COUNT
} dtl_cu_dt;

typedef enum dtl_cu_op {
    /* unary */
    DTL_CU_NEG, DTL_CU_ABS, DTL_CU_EXP, DTL_CU_LOG, DTL_CU_SQRT, DTL_CU_TANH, DTL_CU_SIGMOID,
    DTL_CU_RELU, DTL_CU_SIN, DTL_CU_COS, DTL_CU_NOT,
    /* binary */
    DTL_CU_ADD, DTL_CU_SUB, DTL_CU_MUL, DTL_CU_DIV, DTL_CU_POW, DTL_CU_MAX, DTL_CU_MIN,
    DTL_CU_LT, DTL_CU_LE, DTL_CU_GT, DTL_CU_GE, DTL_CU_EQ, DTL_CU_NE, DTL_CU_AND, DTL_CU_OR,
    /* the rest */
    DTL_CU_CAST, DTL_CU_WHERE, DTL_CU_SUM, DTL_CU_REDUCE_MAX,
    /* only in fused programs: the loop index along an axis; a register copy (broadcast) */
    DTL_CU_IOTA, DTL_CU_COPY,
    DTL_CU_OP_COUNT
} dtl_cu_op;

/* An elementwise loop over `shape` (rank dims, n elements): out[i] = op(in[k] at offset
 * sum_d idx_d * st[k][d]). Unary ops and cast: nin 1; binary: 2 (in the dtype `dt`; the
 * comparisons write bool); where: 3 (in[0] the bool condition, `dt` the values' dtype). cast
 * reads `dt` and writes `odt`. */
typedef struct dtl_cu_ew {
    dtl_cu_op op;
    dtl_cu_dt dt, odt;
    int rank, nin;
    int64_t n;
    int64_t shape[DTL_CU_MAX_RANK];
    int64_t st[3][DTL_CU_MAX_RANK];
    const void *in[3];
    void *out;
} dtl_cu_ew;
cudaError_t dtl_cu_elementwise(const dtl_cu_ew *a, cudaStream_t stream);

/* sum / reduce_max: output element o (nout of them, row-major over the kept axes, whose
 * sizes and input strides are ksize/kstride) combines the input elements at
 * kept_offset(o) + sum_d r_d * rstride[d] over the reduced sub-space (rcount elements). */
typedef struct dtl_cu_red {
    dtl_cu_op op;
    dtl_cu_dt dt;
    int nk, nr;
    int64_t nout, rcount;
    int64_t ksize[DTL_CU_MAX_RANK], kstride[DTL_CU_MAX_RANK];
    int64_t rsize[DTL_CU_MAX_RANK], rstride[DTL_CU_MAX_RANK];
    const void *in;
    void *out;
} dtl_cu_red;
cudaError_t dtl_cu_reduce(const dtl_cu_red *a, cudaStream_t stream);

/* argmax of x viewed as [outer, dim, inner] over dim: the first maximum (the first NaN). */
cudaError_t dtl_cu_argmax(dtl_cu_dt dt, const void *x, int64_t outer, int64_t dim,
                          int64_t inner, int64_t *out, cudaStream_t stream);

/* out (contiguous, rank/shape, elements of esz bytes: 1, 2, 4 or 8)[i...] =
 * src[base + sum_d i_d * st[d]] (transpose, broadcast, slice). */
typedef struct dtl_cu_copy {
    int esz, rank;
    int64_t n, base;
    int64_t shape[DTL_CU_MAX_RANK], st[DTL_CU_MAX_RANK];
    const void *src;
    void *out;
} dtl_cu_copy;
cudaError_t dtl_cu_strided_copy(const dtl_cu_copy *a, cudaStream_t stream);

/* gather (x viewed as [outer, dim, inner], count indices of idx_dt i32/i64):
 *   out[o, j, i] = x[o, idx[j], i];
 * scatter_add (out viewed as [outer, dim, inner], zeroed first; upd as [outer, count, inner]):
 *   out[o, idx[j], i] += upd[o, j, i]   (atomicAdd: float sums in any order).
 * An index outside [0, dim) is never followed: gather writes 0 there, scatter skips it, and
 * status[0] (which the caller sets to UINT64_MAX before) gets the smallest such j, status[1]
 * its index value. */
cudaError_t dtl_cu_gather(dtl_cu_dt dt, const void *x, const void *idx, dtl_cu_dt idx_dt,
                          int64_t outer, int64_t dim, int64_t inner, int64_t count, void *out,
                          unsigned long long *status, cudaStream_t stream);
cudaError_t dtl_cu_scatter_add(dtl_cu_dt dt, const void *upd, const void *idx,
                               dtl_cu_dt idx_dt, int64_t outer, int64_t dim, int64_t inner,
                               int64_t count, void *out, unsigned long long *status,
                               cudaStream_t stream);

/* rng_uniform (kernels/ref/ref.h): element i from 32-bit word (*step * n + i) mod 2^64 of
 * Philox stream `stream` keyed by `seed`; f32 (w >> 8) * 2^-24, f64 w * 2^-32. The step is
 * read on the device (an i64 scalar), so a captured graph draws new numbers every replay. */
cudaError_t dtl_cu_rng_uniform(dtl_cu_dt dt, uint64_t seed, uint64_t stream_id,
                               const int64_t *step, int64_t n, void *out, cudaStream_t stream);

/* A fused program (kernels/cuda/cuda_backend.c builds it from a dtl_kernel of
 * compiler/passes/fuse.h): for each element e of a loop over `shape` (row-major flat index),
 * registers 0..nins-1 are loaded from the inputs (read with broadcast strides st[k] over the
 * loop's dims, dtype in_dt[k]), then instruction j computes register nins + j from earlier
 * registers (a, b, c; IOTA: (e / div) % mod, in odt), and the outputs (register out_reg[o],
 * dtype out_dt[o]) are stored at e. Elementwise: the loop is the whole program. Reduce
 * (red_op SUM or REDUCE_MAX): the loop's shape is the reduced operand's; output element o
 * of the nout combines register red_reg (dtype red_dt) over the elements
 * e = kept_offset(o) + reduced_offset(r) (contiguous strides of `shape`), stored at red_out. */
enum { DTL_CU_FMAX_INS = 16, DTL_CU_FMAX_CODE = 40, DTL_CU_FMAX_OUTS = 8 };
typedef struct dtl_cu_instr {
    int16_t op;           /* a dtl_cu_op */
    uint8_t dt, odt;      /* the operands' dtype (where: the values'), the result's */
    int16_t a, b, c;
    int64_t div, mod;
} dtl_cu_instr;
typedef struct dtl_cu_fprog {
    int rank, nins, ncode, nouts;
    int64_t n;
    int64_t shape[DTL_CU_MAX_RANK];
    const void *in[DTL_CU_FMAX_INS];
    uint8_t in_dt[DTL_CU_FMAX_INS];
    int64_t st[DTL_CU_FMAX_INS][DTL_CU_MAX_RANK];
    dtl_cu_instr code[DTL_CU_FMAX_CODE];
    void *out[DTL_CU_FMAX_OUTS];
    int16_t out_reg[DTL_CU_FMAX_OUTS];
    uint8_t out_dt[DTL_CU_FMAX_OUTS];
    /* reduce */
    int red_op;           /* DTL_CU_SUM, DTL_CU_REDUCE_MAX, or -1: elementwise */
    int red_reg, red_dt, nk, nr;
    int64_t nout, rcount;
    int64_t ksize[DTL_CU_MAX_RANK], kstride[DTL_CU_MAX_RANK];
    int64_t rsize[DTL_CU_MAX_RANK], rstride[DTL_CU_MAX_RANK];
    void *red_out;
} dtl_cu_fprog;
cudaError_t dtl_cu_fused(const dtl_cu_fprog *p, cudaStream_t stream);

/* The reference Philox 4x32-10 on the device, for tests: out[4 * b + w] = word w of block
 * ctr = (b + block0, stream) keyed by seed, for b < nblocks. */
cudaError_t dtl_cu_philox_blocks(uint64_t seed, uint64_t stream_id, uint64_t block0,
                                 int64_t nblocks, uint32_t *out, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
