/* kernels/cuda/ops.cu — the CUDA backend's kernels: one generic kernel per family
 * (elementwise, cast, where, reduce, argmax, strided copy, gather, scatter_add, rng_uniform),
 * templated on the element type only; the op is a uniform switch inside the loop (every
 * thread of a launch takes the same branch, so it costs a few instructions, not divergence),
 * which keeps the number of instantiations — and nvcc's compile time — small.
 *
 * Indexing: every kernel walks its output in row-major order with a grid-stride loop and
 * finds each operand's element by decomposing the flat index over the loop's shape (the
 * backend first merges dims that are contiguous for every operand, so the common cases are
 * rank 1 or 2). Numerics follow kernels/ref/ref.h; this file is compiled without fast math
 * (the default: IEEE division and square root, correctly rounded expf/logf within the CUDA
 * math library's documented ulps). Matrix products are not here: cuBLAS does them
 * (kernels/cuda/cuda_backend.c). */
#include "ops.h"
#include "grid.cuh"

#include <stdint.h>

namespace {

using dtl_cu::blocks_for;
using dtl_cu::kThreads;

/* ---- math by type (float uses the f-suffixed functions, as ref's <tgmath.h> does) ---- */
__device__ inline float d_abs(float x) { return fabsf(x); }
__device__ inline double d_abs(double x) { return fabs(x); }
__device__ inline float d_exp(float x) { return expf(x); }
__device__ inline double d_exp(double x) { return exp(x); }
__device__ inline float d_log(float x) { return logf(x); }
__device__ inline double d_log(double x) { return log(x); }
__device__ inline float d_sqrt(float x) { return sqrtf(x); }
__device__ inline double d_sqrt(double x) { return sqrt(x); }
__device__ inline float d_tanh(float x) { return tanhf(x); }
__device__ inline double d_tanh(double x) { return tanh(x); }
__device__ inline float d_sin(float x) { return sinf(x); }
__device__ inline double d_sin(double x) { return sin(x); }
__device__ inline float d_cos(float x) { return cosf(x); }
__device__ inline double d_cos(double x) { return cos(x); }
__device__ inline float d_pow(float x, float y) { return powf(x, y); }
__device__ inline double d_pow(double x, double y) { return pow(x, y); }

template <typename T> struct unsigned_of;
template <> struct unsigned_of<int32_t> { typedef uint32_t type; };
template <> struct unsigned_of<int64_t> { typedef uint64_t type; };

/* Offsets of element i of the loop in each of NIN operands. */
template <int NIN>
__device__ inline void ew_offsets(const dtl_cu_ew &a, int64_t i, int64_t *off)
{
    for (int k = 0; k < NIN; k++)
        off[k] = 0;
    if (a.rank == 1) {
        for (int k = 0; k < NIN; k++)
            off[k] = i * a.st[k][0];
        return;
    }
    for (int d = a.rank - 1; d >= 0; d--) {
        int64_t s = a.shape[d], q = i / s, r = i - q * s;
        i = q;
        for (int k = 0; k < NIN; k++)
            off[k] += r * a.st[k][d];
    }
}

/* ---- unary ---- */
template <typename T>
__device__ inline T unary_float(dtl_cu_op op, T x)
{
    switch (op) {
    case DTL_CU_NEG: return -x;
    case DTL_CU_ABS: return d_abs(x);
    case DTL_CU_EXP: return d_exp(x);
    case DTL_CU_LOG: return d_log(x);
    case DTL_CU_SQRT: return d_sqrt(x);
    case DTL_CU_TANH: return d_tanh(x);
    case DTL_CU_SIN: return d_sin(x);
    case DTL_CU_COS: return d_cos(x);
    case DTL_CU_RELU: return x > 0 || x != x ? x : (T)0;
    case DTL_CU_SIGMOID: { /* never exp of a large positive number */
        T e = d_exp(-d_abs(x));
        return x >= 0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);
    }
    default: return x;
    }
}

template <typename T>
__device__ inline T unary_int(dtl_cu_op op, T x)
{
    typedef typename unsigned_of<T>::type U;
    switch (op) {
    case DTL_CU_NEG: return (T)(U)(0u - (U)x);
    case DTL_CU_ABS: return x < 0 ? (T)(U)(0u - (U)x) : x;
    case DTL_CU_RELU: return x > 0 ? x : (T)0;
    default: return x;
    }
}

template <typename T, bool IS_INT>
__global__ void k_unary(dtl_cu_ew a)
{
    const T *x = (const T *)a.in[0];
    T *y = (T *)a.out;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t off[1];
        ew_offsets<1>(a, i, off);
        if constexpr (IS_INT)
            y[i] = unary_int<T>(a.op, x[off[0]]);
        else
            y[i] = unary_float<T>(a.op, x[off[0]]);
    }
}

__global__ void k_not(dtl_cu_ew a)
{
    const uint8_t *x = (const uint8_t *)a.in[0];
    uint8_t *y = (uint8_t *)a.out;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t off[1];
        ew_offsets<1>(a, i, off);
        y[i] = x[off[0]] == 0;
    }
}

/* ---- binary ---- */
template <typename T>
__device__ inline bool compare(dtl_cu_op op, T x, T z)
{
    switch (op) {
    case DTL_CU_LT: return x < z;
    case DTL_CU_LE: return x <= z;
    case DTL_CU_GT: return x > z;
    case DTL_CU_GE: return x >= z;
    case DTL_CU_EQ: return x == z;
    default: return x != z;   /* NE */
    }
}

template <typename T>
__device__ inline T binary_float(dtl_cu_op op, T x, T z)
{
    switch (op) {
    case DTL_CU_ADD: return x + z;
    case DTL_CU_SUB: return x - z;
    case DTL_CU_MUL: return x * z;
    case DTL_CU_DIV: return x / z;
    case DTL_CU_POW: return d_pow(x, z);
    case DTL_CU_MAX: return x > z || x != x ? x : z;
    default: return x < z || x != x ? x : z;   /* MIN */
    }
}

template <typename T>
__device__ inline T binary_int(dtl_cu_op op, T x, T z)
{
    typedef typename unsigned_of<T>::type U;
    switch (op) {
    case DTL_CU_ADD: return (T)(U)((U)x + (U)z);
    case DTL_CU_SUB: return (T)(U)((U)x - (U)z);
    case DTL_CU_MUL: return (T)(U)((U)x * (U)z);
    case DTL_CU_DIV: return z == 0 ? (T)0 : z == -1 ? (T)(U)(0u - (U)x) : (T)(x / z);
    case DTL_CU_MAX: return x > z ? x : z;
    default: return x < z ? x : z;   /* MIN */
    }
}

template <typename T, bool IS_INT>
__global__ void k_binary(dtl_cu_ew a)
{
    const T *x = (const T *)a.in[0], *z = (const T *)a.in[1];
    bool cmp = a.op >= DTL_CU_LT && a.op <= DTL_CU_NE;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t off[2];
        ew_offsets<2>(a, i, off);
        T xv = x[off[0]], zv = z[off[1]];
        if (cmp)
            ((uint8_t *)a.out)[i] = compare<T>(a.op, xv, zv);
        else if constexpr (IS_INT)
            ((T *)a.out)[i] = binary_int<T>(a.op, xv, zv);
        else
            ((T *)a.out)[i] = binary_float<T>(a.op, xv, zv);
    }
}

/* bool operands are normalized to 0/1 first: 2 and 1 are both true and equal. */
__global__ void k_binary_bool(dtl_cu_ew a)
{
    const uint8_t *x = (const uint8_t *)a.in[0], *z = (const uint8_t *)a.in[1];
    uint8_t *y = (uint8_t *)a.out;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t off[2];
        ew_offsets<2>(a, i, off);
        bool p = x[off[0]] != 0, q = z[off[1]] != 0;
        switch (a.op) {
        case DTL_CU_AND: y[i] = p & q; break;
        case DTL_CU_OR: y[i] = p | q; break;
        case DTL_CU_EQ: y[i] = p == q; break;
        default: y[i] = p != q; break;   /* NE */
        }
    }
}

/* ---- cast: integers travel as int64 (exact), floats as double ---- */
__device__ inline int64_t f2i64(double v)
{
    if (v != v)
        return 0;
    if (v >= 9223372036854775808.0)
        return INT64_MAX;
    if (v <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)v;
}

__device__ inline int32_t f2i32(double v)
{
    if (v != v)
        return 0;
    if (v >= 2147483647.0)
        return INT32_MAX;
    if (v <= -2147483648.0)
        return INT32_MIN;
    return (int32_t)v;
}

template <typename TI> __device__ inline bool is_int_t() { return true; }
template <> __device__ inline bool is_int_t<float>() { return false; }
template <> __device__ inline bool is_int_t<double>() { return false; }

template <typename TI, typename TO>
__global__ void k_cast(dtl_cu_ew a, bool from_bool, bool to_bool)
{
    const TI *x = (const TI *)a.in[0];
    TO *y = (TO *)a.out;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t off[1];
        ew_offsets<1>(a, i, off);
        TI v = x[off[0]];
        bool is_int = is_int_t<TI>();
        int64_t iv = 0;
        double fv = 0;
        if (from_bool)
            iv = v != 0;
        else if (is_int)
            iv = (int64_t)v;
        else
            fv = (double)v;
        if (to_bool)
            y[i] = (TO)(is_int ? iv != 0 : fv != 0);
        else if constexpr (sizeof(TO) == 4 && !(TO)0.5)   /* int32 */
            y[i] = (TO)(is_int ? (int32_t)(uint32_t)(uint64_t)iv : f2i32(fv));
        else if constexpr (sizeof(TO) == 8 && !(TO)0.5)   /* int64 */
            y[i] = (TO)(is_int ? iv : f2i64(fv));
        else if constexpr (sizeof(TO) == 4)   /* float */
            y[i] = is_int ? (TO)iv : (TO)fv;
        else                                  /* double */
            y[i] = is_int ? (TO)iv : (TO)fv;
    }
}

/* ---- where: a copy, so only the element size matters ---- */
template <typename T>
__global__ void k_where(dtl_cu_ew a)
{
    const uint8_t *c = (const uint8_t *)a.in[0];
    const T *x = (const T *)a.in[1], *z = (const T *)a.in[2];
    T *y = (T *)a.out;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t off[3];
        ew_offsets<3>(a, i, off);
        y[i] = c[off[0]] ? x[off[1]] : z[off[2]];
    }
}

template <typename TI>
cudaError_t launch_cast_to(const dtl_cu_ew *a, unsigned nb, cudaStream_t s)
{
    bool fb = a->dt == DTL_CU_BOOL, tb = a->odt == DTL_CU_BOOL;
    switch (a->odt) {
    case DTL_CU_F32: k_cast<TI, float><<<nb, kThreads, 0, s>>>(*a, fb, tb); break;
    case DTL_CU_F64: k_cast<TI, double><<<nb, kThreads, 0, s>>>(*a, fb, tb); break;
    case DTL_CU_I32: k_cast<TI, int32_t><<<nb, kThreads, 0, s>>>(*a, fb, tb); break;
    case DTL_CU_I64: k_cast<TI, int64_t><<<nb, kThreads, 0, s>>>(*a, fb, tb); break;
    case DTL_CU_BOOL: k_cast<TI, uint8_t><<<nb, kThreads, 0, s>>>(*a, fb, tb); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

cudaError_t launch_cast_bf16(const dtl_cu_ew *a, unsigned nb, cudaStream_t s);

} // namespace

extern "C" cudaError_t dtl_cu_elementwise(const dtl_cu_ew *a, cudaStream_t s)
{
    if (a->n == 0)
        return cudaSuccess;
    unsigned nb = blocks_for(a->n);
    if (a->op == DTL_CU_CAST && (a->dt == DTL_CU_BF16 || a->odt == DTL_CU_BF16))
        return launch_cast_bf16(a, nb, s);
    if (a->op == DTL_CU_CAST) {
        switch (a->dt) {
        case DTL_CU_F32: return launch_cast_to<float>(a, nb, s);
        case DTL_CU_F64: return launch_cast_to<double>(a, nb, s);
        case DTL_CU_I32: return launch_cast_to<int32_t>(a, nb, s);
        case DTL_CU_I64: return launch_cast_to<int64_t>(a, nb, s);
        case DTL_CU_BOOL: return launch_cast_to<uint8_t>(a, nb, s);
        default: return cudaErrorInvalidValue;
        }
    }
    if (a->op == DTL_CU_WHERE) {
        switch (a->dt) {
        case DTL_CU_F32:
        case DTL_CU_I32: k_where<uint32_t><<<nb, kThreads, 0, s>>>(*a); break;
        case DTL_CU_F64:
        case DTL_CU_I64: k_where<uint64_t><<<nb, kThreads, 0, s>>>(*a); break;
        case DTL_CU_BOOL: k_where<uint8_t><<<nb, kThreads, 0, s>>>(*a); break;
        default: return cudaErrorInvalidValue;
        }
        return cudaGetLastError();
    }
    if (a->op <= DTL_CU_NOT) {
        switch (a->dt) {
        case DTL_CU_F32: k_unary<float, false><<<nb, kThreads, 0, s>>>(*a); break;
        case DTL_CU_F64: k_unary<double, false><<<nb, kThreads, 0, s>>>(*a); break;
        case DTL_CU_I32: k_unary<int32_t, true><<<nb, kThreads, 0, s>>>(*a); break;
        case DTL_CU_I64: k_unary<int64_t, true><<<nb, kThreads, 0, s>>>(*a); break;
        case DTL_CU_BOOL: k_not<<<nb, kThreads, 0, s>>>(*a); break;
        default: return cudaErrorInvalidValue;
        }
        return cudaGetLastError();
    }
    if (a->op <= DTL_CU_OR) {
        switch (a->dt) {
        case DTL_CU_F32: k_binary<float, false><<<nb, kThreads, 0, s>>>(*a); break;
        case DTL_CU_F64: k_binary<double, false><<<nb, kThreads, 0, s>>>(*a); break;
        case DTL_CU_I32: k_binary<int32_t, true><<<nb, kThreads, 0, s>>>(*a); break;
        case DTL_CU_I64: k_binary<int64_t, true><<<nb, kThreads, 0, s>>>(*a); break;
        case DTL_CU_BOOL: k_binary_bool<<<nb, kThreads, 0, s>>>(*a); break;
        default: return cudaErrorInvalidValue;
        }
        return cudaGetLastError();
    }
    return cudaErrorInvalidValue;
}

/* ---- reductions ---------------------------------------------------------------------------- */
namespace {

/* The offset of the i-th element (row-major) of an n-dim loop of these sizes and strides. */
__device__ inline int64_t loop_offset(int64_t i, int n, const int64_t *size,
                                      const int64_t *stride)
{
    int64_t off = 0;
    for (int d = n - 1; d >= 0; d--) {
        int64_t q = i / size[d];
        off += (i - q * size[d]) * stride[d];
        i = q;
    }
    return off;
}

/* The accumulator: f32/f64 sums in double, integer sums in uint64 (wrapping), max in T with
 * NaN winning; `has` tells an empty partial from a real one. */
template <typename T, typename ACC, bool SUM>
struct Acc {
    ACC v;
    bool has;
    __device__ void init() { v = (ACC)0; has = false; }
    __device__ void add(T x)
    {
        if (SUM)
            v = (ACC)(v + (ACC)x);
        else if (!has || (T)x > (T)v || x != x)
            v = (ACC)x;
        has = true;
    }
    __device__ void merge(ACC w, bool whas)
    {
        if (!whas)
            return;
        if (SUM)
            v = (ACC)(v + w);
        else if (!has || (T)w > (T)v || w != w)
            v = w;
        has = true;
    }
};

/* A reduction's elements: output o of nout() combines at<T>(base(o), r) for r < rcount(),
 * stored at out(). A plain reduce reads them from its input; the fused program's
 * (FusedSrc, below) computes them. */
struct RedSrc {
    dtl_cu_red a;
    __host__ __device__ int64_t nout() const { return a.nout; }
    __host__ __device__ int64_t rcount() const { return a.rcount; }
    __device__ int64_t base(int64_t o) const { return loop_offset(o, a.nk, a.ksize, a.kstride); }
    template <typename T> __device__ T at(int64_t base, int64_t r) const
    {
        int64_t off = a.nr == 1 ? r * a.rstride[0] : loop_offset(r, a.nr, a.rsize, a.rstride);
        return ((const T *)a.in)[base + off];
    }
    __device__ void *out() const { return a.out; }
};

/* a thread per output: for short sums */
template <typename T, typename ACC, bool SUM, typename SRC>
__global__ void k_reduce_thread(SRC src)
{
    for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < src.nout();
         o += (int64_t)gridDim.x * blockDim.x) {
        int64_t base = src.base(o);
        Acc<T, ACC, SUM> acc;
        acc.init();
        for (int64_t r = 0; r < src.rcount(); r++)
            acc.add(src.template at<T>(base, r));
        ((T *)src.out())[o] = (T)acc.v;
    }
}

/* a block per output: strided partials, then a tree in shared memory */
template <typename T, typename ACC, bool SUM, typename SRC>
__global__ void k_reduce_block(SRC src)
{
    __shared__ ACC sv[kThreads];
    __shared__ bool sh[kThreads];
    for (int64_t o = blockIdx.x; o < src.nout(); o += gridDim.x) {
        int64_t base = src.base(o);
        Acc<T, ACC, SUM> acc;
        acc.init();
        for (int64_t r = threadIdx.x; r < src.rcount(); r += blockDim.x)
            acc.add(src.template at<T>(base, r));
        sv[threadIdx.x] = acc.v;
        sh[threadIdx.x] = acc.has;
        __syncthreads();
        for (int w = blockDim.x / 2; w > 0; w /= 2) {
            if ((int)threadIdx.x < w) {
                Acc<T, ACC, SUM> m;
                m.v = sv[threadIdx.x];
                m.has = sh[threadIdx.x];
                m.merge(sv[threadIdx.x + w], sh[threadIdx.x + w]);
                sv[threadIdx.x] = m.v;
                sh[threadIdx.x] = m.has;
            }
            __syncthreads();
        }
        if (threadIdx.x == 0)
            ((T *)src.out())[o] = (T)sv[0];
        __syncthreads();
    }
}

template <typename T, typename ACC, bool SUM, typename SRC>
cudaError_t launch_reduce(const SRC &src, cudaStream_t s)
{
    if (src.rcount() <= 64) {
        k_reduce_thread<T, ACC, SUM, SRC><<<blocks_for(src.nout()), kThreads, 0, s>>>(src);
    } else {
        int64_t nb = src.nout() < 65535LL * 16 ? src.nout() : 65535LL * 16;
        k_reduce_block<T, ACC, SUM, SRC><<<(unsigned)nb, kThreads, 0, s>>>(src);
    }
    return cudaGetLastError();
}

/* sum (sum) or reduce_max of elements of dtype dt */
template <typename SRC>
cudaError_t launch_reduce_dt(const SRC &src, int dt, bool sum, cudaStream_t s)
{
    if (src.nout() == 0)
        return cudaSuccess;
    switch (dt) {
    case DTL_CU_F32:
        return sum ? launch_reduce<float, double, true>(src, s)
                   : launch_reduce<float, float, false>(src, s);
    case DTL_CU_F64:
        return sum ? launch_reduce<double, double, true>(src, s)
                   : launch_reduce<double, double, false>(src, s);
    case DTL_CU_I32:
        return sum ? launch_reduce<int32_t, uint64_t, true>(src, s)
                   : launch_reduce<int32_t, int32_t, false>(src, s);
    case DTL_CU_I64:
        return sum ? launch_reduce<int64_t, uint64_t, true>(src, s)
                   : launch_reduce<int64_t, int64_t, false>(src, s);
    default: return cudaErrorInvalidValue;
    }
}

} // namespace

extern "C" cudaError_t dtl_cu_reduce(const dtl_cu_red *a, cudaStream_t s)
{
    return launch_reduce_dt(RedSrc{*a}, a->dt, a->op == DTL_CU_SUM, s);
}

/* ---- argmax ---------------------------------------------------------------------------------- */
namespace {

template <typename T>
__global__ void k_argmax(const T *x, int64_t outer, int64_t dim, int64_t inner, int64_t *y)
{
    int64_t n = outer * inner;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n;
         t += (int64_t)gridDim.x * blockDim.x) {
        int64_t o = t / inner, i = t - o * inner;
        const T *p = x + o * dim * inner + i;
        T best = p[0];
        int64_t at = 0;
        for (int64_t j = 1; j < dim && best == best; j++)
            if (p[j * inner] > best || p[j * inner] != p[j * inner]) {
                best = p[j * inner];
                at = j;
            }
        y[t] = at;
    }
}

} // namespace

extern "C" cudaError_t dtl_cu_argmax(dtl_cu_dt dt, const void *x, int64_t outer, int64_t dim,
                                     int64_t inner, int64_t *out, cudaStream_t s)
{
    int64_t n = outer * inner;
    if (n == 0)
        return cudaSuccess;
    unsigned nb = blocks_for(n);
    switch (dt) {
    case DTL_CU_F32: k_argmax<float><<<nb, kThreads, 0, s>>>((const float *)x, outer, dim, inner, out); break;
    case DTL_CU_F64: k_argmax<double><<<nb, kThreads, 0, s>>>((const double *)x, outer, dim, inner, out); break;
    case DTL_CU_I32: k_argmax<int32_t><<<nb, kThreads, 0, s>>>((const int32_t *)x, outer, dim, inner, out); break;
    case DTL_CU_I64: k_argmax<int64_t><<<nb, kThreads, 0, s>>>((const int64_t *)x, outer, dim, inner, out); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

/* ---- strided copy ------------------------------------------------------------------------------ */
namespace {

template <typename T>
__global__ void k_copy(dtl_cu_copy a)
{
    const T *src = (const T *)a.src;
    T *y = (T *)a.out;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t off = a.base, j = i;
        for (int d = a.rank - 1; d >= 0; d--) {
            int64_t q = j / a.shape[d];
            off += (j - q * a.shape[d]) * a.st[d];
            j = q;
        }
        y[i] = src[off];
    }
}

} // namespace

extern "C" cudaError_t dtl_cu_strided_copy(const dtl_cu_copy *a, cudaStream_t s)
{
    if (a->n == 0)
        return cudaSuccess;
    unsigned nb = blocks_for(a->n);
    switch (a->esz) {
    case 1: k_copy<uint8_t><<<nb, kThreads, 0, s>>>(*a); break;
    case 2: k_copy<uint16_t><<<nb, kThreads, 0, s>>>(*a); break;
    case 4: k_copy<uint32_t><<<nb, kThreads, 0, s>>>(*a); break;
    case 8: k_copy<uint64_t><<<nb, kThreads, 0, s>>>(*a); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

/* ---- gather and scatter_add -------------------------------------------------------------------- */
namespace {

__device__ inline int64_t index_at(const void *idx, bool i32, int64_t j)
{
    return i32 ? (int64_t)((const int32_t *)idx)[j] : ((const int64_t *)idx)[j];
}

template <typename T>
__global__ void k_gather(const T *x, const void *idx, bool i32, int64_t outer, int64_t dim,
                         int64_t inner, int64_t count, T *y, unsigned long long *status)
{
    int64_t n = outer * count * inner;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n;
         t += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = t % inner, oj = t / inner, j = oj % count, o = oj / count;
        int64_t v = index_at(idx, i32, j);
        if (v < 0 || v >= dim) {
            atomicMin(status, (unsigned long long)j);
            y[t] = (T)0;
        } else {
            y[t] = x[(o * dim + v) * inner + i];
        }
    }
}

__device__ inline void atomic_add(float *p, float v) { atomicAdd(p, v); }
__device__ inline void atomic_add(double *p, double v) { atomicAdd(p, v); }
__device__ inline void atomic_add(int32_t *p, int32_t v)
{
    atomicAdd((unsigned int *)p, (unsigned int)v);   /* wraps */
}
__device__ inline void atomic_add(int64_t *p, int64_t v)
{
    atomicAdd((unsigned long long *)p, (unsigned long long)v);   /* wraps */
}

template <typename T>
__global__ void k_scatter(const T *u, const void *idx, bool i32, int64_t outer, int64_t dim,
                          int64_t inner, int64_t count, T *y, unsigned long long *status)
{
    int64_t n = outer * count * inner;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n;
         t += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = t % inner, oj = t / inner, j = oj % count, o = oj / count;
        int64_t v = index_at(idx, i32, j);
        if (v < 0 || v >= dim)
            atomicMin(status, (unsigned long long)j);
        else
            atomic_add(&y[(o * dim + v) * inner + i], u[t]);
    }
}

/* After a gather/scatter: the offending index's value, while the index tensor is alive. */
__global__ void k_index_fixup(const void *idx, bool i32, unsigned long long *status)
{
    if (status[0] != ~0ull)
        status[1] = (unsigned long long)index_at(idx, i32, (int64_t)status[0]);
}

} // namespace

extern "C" cudaError_t dtl_cu_gather(dtl_cu_dt dt, const void *x, const void *idx,
                                     dtl_cu_dt idx_dt, int64_t outer, int64_t dim,
                                     int64_t inner, int64_t count, void *out,
                                     unsigned long long *status, cudaStream_t s)
{
    int64_t n = outer * count * inner;
    bool i32 = idx_dt == DTL_CU_I32;
    if (n > 0) {
        unsigned nb = blocks_for(n);
        switch (dt) {
        case DTL_CU_F32:
        case DTL_CU_I32:
            k_gather<uint32_t><<<nb, kThreads, 0, s>>>((const uint32_t *)x, idx, i32, outer, dim, inner, count, (uint32_t *)out, status);
            break;
        case DTL_CU_F64:
        case DTL_CU_I64:
            k_gather<uint64_t><<<nb, kThreads, 0, s>>>((const uint64_t *)x, idx, i32, outer, dim, inner, count, (uint64_t *)out, status);
            break;
        case DTL_CU_BOOL:
            k_gather<uint8_t><<<nb, kThreads, 0, s>>>((const uint8_t *)x, idx, i32, outer, dim, inner, count, (uint8_t *)out, status);
            break;
        default: return cudaErrorInvalidValue;
        }
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            return e;
    }
    if (count > 0)
        k_index_fixup<<<1, 1, 0, s>>>(idx, i32, status);
    return cudaGetLastError();
}

extern "C" cudaError_t dtl_cu_scatter_add(dtl_cu_dt dt, const void *upd, const void *idx,
                                          dtl_cu_dt idx_dt, int64_t outer, int64_t dim,
                                          int64_t inner, int64_t count, void *out,
                                          unsigned long long *status, cudaStream_t s)
{
    size_t esz = dt == DTL_CU_F64 || dt == DTL_CU_I64 ? 8 : dt == DTL_CU_BOOL ? 1 : 4;
    int64_t total = outer * dim * inner;
    if (total > 0) {
        cudaError_t e = cudaMemsetAsync(out, 0, (size_t)total * esz, s);
        if (e != cudaSuccess)
            return e;
    }
    int64_t n = outer * count * inner;
    bool i32 = idx_dt == DTL_CU_I32;
    if (n > 0) {
        unsigned nb = blocks_for(n);
        switch (dt) {
        case DTL_CU_F32: k_scatter<float><<<nb, kThreads, 0, s>>>((const float *)upd, idx, i32, outer, dim, inner, count, (float *)out, status); break;
        case DTL_CU_F64: k_scatter<double><<<nb, kThreads, 0, s>>>((const double *)upd, idx, i32, outer, dim, inner, count, (double *)out, status); break;
        case DTL_CU_I32: k_scatter<int32_t><<<nb, kThreads, 0, s>>>((const int32_t *)upd, idx, i32, outer, dim, inner, count, (int32_t *)out, status); break;
        case DTL_CU_I64: k_scatter<int64_t><<<nb, kThreads, 0, s>>>((const int64_t *)upd, idx, i32, outer, dim, inner, count, (int64_t *)out, status); break;
        default: return cudaErrorInvalidValue;
        }
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            return e;
    }
    if (count > 0)
        k_index_fixup<<<1, 1, 0, s>>>(idx, i32, status);
    return cudaGetLastError();
}

/* ---- fused programs: an interpreter of dtl_cu_fprog, one element per thread ------------------ */
namespace {

union Reg {
    double d;
    float f;
    int64_t l;
    int32_t i;
    uint8_t b;
};

__device__ inline Reg load_reg(const void *p, int dt, int64_t off)
{
    Reg r;
    r.l = 0;
    switch (dt) {
    case DTL_CU_F32: r.f = ((const float *)p)[off]; break;
    case DTL_CU_F64: r.d = ((const double *)p)[off]; break;
    case DTL_CU_I32: r.i = ((const int32_t *)p)[off]; break;
    case DTL_CU_I64: r.l = ((const int64_t *)p)[off]; break;
    case DTL_CU_BF16: r.f = __uint_as_float((uint32_t)((const uint16_t *)p)[off] << 16); break;
    default: r.b = ((const uint8_t *)p)[off]; break;
    }
    return r;
}

__device__ inline void store_reg(void *p, int dt, int64_t off, Reg r)
{
    switch (dt) {
    case DTL_CU_F32: ((float *)p)[off] = r.f; break;
    case DTL_CU_F64: ((double *)p)[off] = r.d; break;
    case DTL_CU_I32: ((int32_t *)p)[off] = r.i; break;
    case DTL_CU_I64: ((int64_t *)p)[off] = r.l; break;
    case DTL_CU_BF16: ((uint16_t *)p)[off] = (uint16_t)(__float_as_uint(r.f) >> 16); break;
    default: ((uint8_t *)p)[off] = r.b; break;
    }
}

/* f rounded to bf16 (runtime/dtype.h dtl_f32_round_bits: to nearest, ties to even, NaN made
 * quiet, overflow to inf), kept as the f32 it stands for: a bf16 register. */
__device__ inline float bf16_round(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return __uint_as_float((u | 0x00400000u) & 0xffff0000u);
    return __uint_as_float((u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u);
}

/* cast with kernels/ref/ref.h's rules (as k_cast) */
__device__ inline Reg cast_reg(Reg x, int from, int to)
{
    bool is_int = true;
    int64_t iv = 0;
    double fv = 0;
    switch (from) {
    case DTL_CU_F32: fv = x.f; is_int = false; break;
    case DTL_CU_F64: fv = x.d; is_int = false; break;
    case DTL_CU_BF16: fv = x.f; is_int = false; break;
    case DTL_CU_I32: iv = x.i; break;
    case DTL_CU_I64: iv = x.l; break;
    default: iv = x.b != 0; break;
    }
    Reg y;
    y.l = 0;
    switch (to) {
    case DTL_CU_F32: y.f = is_int ? (float)iv : (float)fv; break;
    case DTL_CU_BF16: y.f = bf16_round(is_int ? (float)iv : (float)fv); break;   /* via f32 */
    case DTL_CU_F64: y.d = is_int ? (double)iv : fv; break;
    case DTL_CU_I32: y.i = is_int ? (int32_t)(uint32_t)(uint64_t)iv : f2i32(fv); break;
    case DTL_CU_I64: y.l = is_int ? iv : f2i64(fv); break;
    default: y.b = is_int ? iv != 0 : fv != 0; break;
    }
    return y;
}

__device__ inline Reg exec_instr(const dtl_cu_instr &I, const Reg *R, int64_t e)
{
    Reg y;
    y.l = 0;
    dtl_cu_op op = (dtl_cu_op)I.op;
    if (op == DTL_CU_IOTA) {
        int64_t v = (e / I.div) % I.mod;
        switch (I.odt) {
        case DTL_CU_F32: y.f = (float)v; break;
        case DTL_CU_F64: y.d = (double)v; break;
        case DTL_CU_I32: y.i = (int32_t)v; break;
        default: y.l = v; break;
        }
        return y;
    }
    Reg a = R[I.a];
    if (op == DTL_CU_COPY)
        return a;
    if (op == DTL_CU_CAST)
        return cast_reg(a, I.dt, I.odt);
    if (op == DTL_CU_WHERE)
        return a.b ? R[I.b] : R[I.c];
    if (op <= DTL_CU_NOT) {
        switch (I.dt) {
        case DTL_CU_F32: y.f = unary_float<float>(op, a.f); break;
        case DTL_CU_F64: y.d = unary_float<double>(op, a.d); break;
        case DTL_CU_I32: y.i = unary_int<int32_t>(op, a.i); break;
        case DTL_CU_I64: y.l = unary_int<int64_t>(op, a.l); break;
        default: y.b = a.b == 0; break;
        }
        return y;
    }
    Reg b = R[I.b];
    bool cmp = op >= DTL_CU_LT && op <= DTL_CU_NE;
    switch (I.dt) {
    case DTL_CU_F32:
        if (cmp) y.b = compare<float>(op, a.f, b.f); else y.f = binary_float<float>(op, a.f, b.f);
        break;
    case DTL_CU_F64:
        if (cmp) y.b = compare<double>(op, a.d, b.d); else y.d = binary_float<double>(op, a.d, b.d);
        break;
    case DTL_CU_I32:
        if (cmp) y.b = compare<int32_t>(op, a.i, b.i); else y.i = binary_int<int32_t>(op, a.i, b.i);
        break;
    case DTL_CU_I64:
        if (cmp) y.b = compare<int64_t>(op, a.l, b.l); else y.l = binary_int<int64_t>(op, a.l, b.l);
        break;
    default: {
        bool p = a.b != 0, q = b.b != 0;
        switch (op) {
        case DTL_CU_AND: y.b = p & q; break;
        case DTL_CU_OR: y.b = p | q; break;
        case DTL_CU_EQ: y.b = p == q; break;
        default: y.b = p != q; break;
        }
    }
    }
    return y;
}

enum { kRegs = DTL_CU_FMAX_INS + DTL_CU_FMAX_CODE };

__device__ inline void fp_eval(const dtl_cu_fprog &p, int64_t e, Reg *R)
{
    int64_t idx[DTL_CU_MAX_RANK];
    int64_t rem = e;
    for (int d = p.rank - 1; d >= 0; d--) {
        int64_t q = rem / p.shape[d];
        idx[d] = rem - q * p.shape[d];
        rem = q;
    }
    for (int k = 0; k < p.nins; k++) {
        int64_t off = 0;
        for (int d = 0; d < p.rank; d++)
            off += idx[d] * p.st[k][d];
        R[k] = load_reg(p.in[k], p.in_dt[k], off);
    }
    for (int j = 0; j < p.ncode; j++)
        R[p.nins + j] = exec_instr(p.code[j], R, e);
}

__device__ inline void fp_store(const dtl_cu_fprog &p, int64_t e, const Reg *R)
{
    for (int o = 0; o < p.nouts; o++)
        store_reg(p.out[o], p.out_dt[o], e, R[p.out_reg[o]]);
}

/* A cast to or from bf16 (kernels/ref/ref.h: through f32, rounded to nearest even), with
 * the fused interpreter's conversions. */
__global__ void k_cast_bf16(dtl_cu_ew a)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t off[1];
        ew_offsets<1>(a, i, off);
        store_reg(a.out, a.odt, i, cast_reg(load_reg(a.in[0], a.dt, off[0]), a.dt, a.odt));
    }
}

cudaError_t launch_cast_bf16(const dtl_cu_ew *a, unsigned nb, cudaStream_t s)
{
    k_cast_bf16<<<nb, kThreads, 0, s>>>(*a);
    return cudaGetLastError();
}

__global__ void k_fused_ew(dtl_cu_fprog p)
{
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < p.n;
         e += (int64_t)gridDim.x * blockDim.x) {
        Reg R[kRegs];
        fp_eval(p, e, R);
        fp_store(p, e, R);
    }
}

template <typename T> __device__ inline T reg_get(Reg r);
template <> __device__ inline float reg_get<float>(Reg r) { return r.f; }
template <> __device__ inline double reg_get<double>(Reg r) { return r.d; }
template <> __device__ inline int32_t reg_get<int32_t>(Reg r) { return r.i; }
template <> __device__ inline int64_t reg_get<int64_t>(Reg r) { return r.l; }

/* A fused reduction's elements: the program run at each element of the reduced loop (its
 * outputs stored there), the reduced register taken. */
struct FusedSrc {
    dtl_cu_fprog p;
    __host__ __device__ int64_t nout() const { return p.nout; }
    __host__ __device__ int64_t rcount() const { return p.rcount; }
    __device__ int64_t base(int64_t o) const { return loop_offset(o, p.nk, p.ksize, p.kstride); }
    template <typename T> __device__ T at(int64_t base, int64_t r) const
    {
        int64_t e = base + loop_offset(r, p.nr, p.rsize, p.rstride);
        Reg R[kRegs];
        fp_eval(p, e, R);
        fp_store(p, e, R);
        return reg_get<T>(R[p.red_reg]);
    }
    __device__ void *out() const { return p.red_out; }
};

} // namespace

extern "C" cudaError_t dtl_cu_fused(const dtl_cu_fprog *p, cudaStream_t s)
{
    if (p->red_op >= 0)
        return launch_reduce_dt(FusedSrc{*p}, p->red_dt, p->red_op == DTL_CU_SUM, s);
    if (p->n == 0)
        return cudaSuccess;
    k_fused_ew<<<blocks_for(p->n), kThreads, 0, s>>>(*p);
    return cudaGetLastError();
}

/* ---- Philox 4x32-10 (runtime/philox.c, the same rounds) and rng_uniform ------------------------ */
namespace {

__device__ inline void philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                  uint32_t k0, uint32_t k1, uint32_t out[4])
{
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

template <typename T>
__global__ void k_rng(uint64_t seed, uint64_t sid, const int64_t *step, int64_t n, T *y)
{
    uint64_t first = (uint64_t)*step * (uint64_t)n;   /* mod 2^64 */
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t w = first + (uint64_t)i, block = w >> 2;
        uint32_t out[4];
        philox4x32((uint32_t)block, (uint32_t)(block >> 32), (uint32_t)sid,
                   (uint32_t)(sid >> 32), (uint32_t)seed, (uint32_t)(seed >> 32), out);
        uint32_t word = out[w & 3];
        if (sizeof(T) == 4)
            y[i] = (T)((float)(word >> 8) * (1.0f / 16777216.0f));
        else
            y[i] = (T)((double)word * (1.0 / 4294967296.0));
    }
}

__global__ void k_philox_blocks(uint64_t seed, uint64_t sid, uint64_t block0, int64_t nb,
                                uint32_t *y)
{
    for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nb;
         b += (int64_t)gridDim.x * blockDim.x) {
        uint64_t block = block0 + (uint64_t)b;
        philox4x32((uint32_t)block, (uint32_t)(block >> 32), (uint32_t)sid,
                   (uint32_t)(sid >> 32), (uint32_t)seed, (uint32_t)(seed >> 32), y + 4 * b);
    }
}

} // namespace

extern "C" cudaError_t dtl_cu_rng_uniform(dtl_cu_dt dt, uint64_t seed, uint64_t stream_id,
                                          const int64_t *step, int64_t n, void *out,
                                          cudaStream_t s)
{
    if (n == 0)
        return cudaSuccess;
    unsigned nb = blocks_for(n);
    if (dt == DTL_CU_F32)
        k_rng<float><<<nb, kThreads, 0, s>>>(seed, stream_id, step, n, (float *)out);
    else if (dt == DTL_CU_F64)
        k_rng<double><<<nb, kThreads, 0, s>>>(seed, stream_id, step, n, (double *)out);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}

extern "C" cudaError_t dtl_cu_philox_blocks(uint64_t seed, uint64_t stream_id, uint64_t block0,
                                            int64_t nblocks, uint32_t *out, cudaStream_t s)
{
    if (nblocks == 0)
        return cudaSuccess;
    k_philox_blocks<<<blocks_for(nblocks), kThreads, 0, s>>>(seed, stream_id, block0, nblocks,
                                                             out);
    return cudaGetLastError();
}
