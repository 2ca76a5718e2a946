/* kernels/cuda/cuda_gen.h — CUDA C source for the fused kernels of a kernel program
 * (compiler/passes/fuse.h), to be compiled at plan prepare time with NVRTC.
 *
 * Contract:
 *  - Host-only and pure: no CUDA call, no global state. Given a kernel program and one of its
 *    ELEMWISE, REDUCE, MATMUL or ROW kernels, dtl_cugen_kernel appends to a text buffer one
 *    `extern "C" __global__` function of that name computing the kernel's members in straight
 *    line code (values in registers, no per-op branch), and describes how to launch it.
 *    Every module starts with dtl_cugen_preamble() (helper functions; no #include), then any
 *    number of kernels.
 *  - The function's parameters are device pointers, one per entry of info->args[] in that
 *    order: args[i] is the node whose bytes the pointer addresses (the kernel's loaded inputs,
 *    a MATMUL's product, the stored members, a REDUCE's root). Splat constants are
 *    immediates, not parameters. Shapes and strides are compile-time constants.
 *  - Launch: info->block threads per block (256; a ROW kernel: its row rounded up to a warp,
 *    at most 256), info->grid blocks (at most 65535 * 16; every loop is grid-stride, so fewer
 *    blocks are correct too), no dynamic shared memory, any stream.
 *  - Numerics: those of kernels/ref/ref.h as the interpreter kernel (dtl_cu_fused in ops.cu)
 *    implements them: f32 math in float (no fast math), f32 sums accumulated in double,
 *    integer sums wrap (accumulated in 64 bits), max/min/relu/reduce_max propagate NaN,
 *    saturating float-to-int casts, bools read as "non-zero" and stored as 0/1, bf16 only
 *    in casts (loaded as its exact float; to bf16 rounded to nearest even, NaN quiet). Sums are
 *    combined in another order than the interpreter's (warp shuffles), so float sums agree
 *    within rounding.
 *  - opts->vec asks for 4-wide vector loads and stores in ELEMWISE and MATMUL-epilogue
 *    kernels whose operands are all contiguous or scalars; the caller promises that every
 *    pointer argument is 16-byte aligned. info->vec says whether the kernel uses them.
 *  - Pointers are __restrict__ unless one of the kernel's stored values may share bytes with
 *    one of its loaded inputs (in-place reuse and in-place parameter updates, from kp->loc).
 * Errors: DTL_CUGEN_UNSUPPORTED with the reason in why (an op, dtype or kernel kind this
 * generator does not handle; the caller then uses the interpreter); DTL_CUGEN_EMPTY for a
 * kernel with nothing to compute (a MATMUL without an epilogue). Out of memory aborts.
 */
#ifndef DTL_CUDA_GEN_H
#define DTL_CUDA_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../compiler/passes/fuse.h"

enum { DTL_CUGEN_MAX_ARGS = 64 };

typedef struct dtl_cugen_buf {
    char *s;        /* NUL-terminated */
    size_t len, cap;
} dtl_cugen_buf;

void dtl_cugen_buf_init(dtl_cugen_buf *b);
void dtl_cugen_buf_free(dtl_cugen_buf *b);
void dtl_cugen_printf(dtl_cugen_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

typedef enum dtl_cugen_status {
    DTL_CUGEN_OK, DTL_CUGEN_EMPTY, DTL_CUGEN_UNSUPPORTED
} dtl_cugen_status;

typedef enum dtl_cugen_strategy {
    DTL_CUGEN_FLAT,          /* one thread per element (vec: per 4 elements) */
    DTL_CUGEN_RED_THREAD,    /* reduce: one thread per output element */
    DTL_CUGEN_RED_WARP,      /* reduce: one warp per output element, shuffles */
    DTL_CUGEN_RED_BLOCK,     /* reduce: one block per output element, shuffles + shared */
    DTL_CUGEN_RED_COLUMN,    /* reduce over outer dims: a block per 32 consecutive outputs
                                (coalesced), its 8 warps splitting the reduced elements */
    DTL_CUGEN_ROW,           /* a ROW kernel: a block per row, its passes over the row, the
                                reductions combined across the block */
} dtl_cugen_strategy;

typedef struct dtl_cugen_opts {
    const char *name;        /* the function's name (a C identifier) */
    bool vec;                /* see the contract */
} dtl_cugen_opts;

typedef struct dtl_cugen_info {
    uint32_t nargs;
    dtl_val args[DTL_CUGEN_MAX_ARGS];
    unsigned block;
    unsigned grid;
    dtl_cugen_strategy strategy;
    bool vec;
    bool restrict_ptrs;
} dtl_cugen_info;

/* Helpers every module starts with. */
const char *dtl_cugen_preamble(void);

/* Appends kernel kp->k[ki]'s function to out (see the contract). On anything but
 * DTL_CUGEN_OK, out is left as it was. */
dtl_cugen_status dtl_cugen_kernel(dtl_cugen_buf *out, const dtl_kprog *kp, uint32_t ki,
                                  const dtl_cugen_opts *opts, dtl_cugen_info *info,
                                  char *why, size_t len);

/* 64-bit FNV-1a of n bytes, continuing from h (start with DTL_CUGEN_FNV_INIT): cache keys. */
#define DTL_CUGEN_FNV_INIT 0xcbf29ce484222325ull
uint64_t dtl_cugen_hash(uint64_t h, const void *p, size_t n);

#endif
