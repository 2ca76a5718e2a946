/* kernels/ref/ref_reduce.c — sum, reduce_max, argmax and matmul.
 *
 * Reductions walk the output in order; for each output element they walk the reduced axes
 * of the input (a counter over those axes, the innermost one as a plain strided loop). f32
 * and f64 sums accumulate in double and round once at the end; integer sums wrap in 64
 * bits. Nothing is allocated.
 *
 * matmul is the textbook triple loop in i-k-j order: for each row i of the result, add
 * a[i][p] * (row p of b) for every p, so the innermost loop runs over contiguous rows of b
 * and c (vectorizable; restrict says they do not overlap). f32 accumulates in float. Batch
 * dims broadcast like elementwise operands, by strides counted in whole matrices. */
#include "ref_internal.h"

#include <stdlib.h>
#include <string.h>

/* The axes of x split into kept ones (in order: they index the output) and reduced ones. */
typedef struct red_split {
    uint32_t nk, nr;
    int64_t ksize[DTL_MAX_RANK], kstride[DTL_MAX_RANK];
    int64_t rsize[DTL_MAX_RANK], rstride[DTL_MAX_RANK];
} red_split;

static void red_split_init(red_split *s, uint32_t rank, const int64_t *shape, uint32_t axes)
{
    int64_t st[DTL_MAX_RANK];
    ref_strides(rank, shape, st);
    s->nk = s->nr = 0;
    for (uint32_t i = 0; i < rank; i++) {
        if ((axes >> i) & 1) {
            s->rsize[s->nr] = shape[i];
            s->rstride[s->nr++] = st[i];
        } else {
            s->ksize[s->nk] = shape[i];
            s->kstride[s->nk++] = st[i];
        }
    }
}

/* Offset in x of output element o (its kept-axes index, row-major). */
static int64_t kept_offset(const red_split *s, int64_t o)
{
    int64_t off = 0;
    for (uint32_t d = s->nk; d-- > 0;) {
        off += (o % s->ksize[d]) * s->kstride[d];
        o /= s->ksize[d];
    }
    return off;
}

/* Calls BODY(offset) for every element of the reduced sub-space starting at base. */
#define FOR_REDUCED(s, base, BODY)                                                          \
    do {                                                                                    \
        int64_t cnt_[DTL_MAX_RANK] = {0}, off_ = (base);                                    \
        uint32_t nr_ = (s)->nr;                                                             \
        int64_t in_n_ = nr_ ? (s)->rsize[nr_ - 1] : 1, in_s_ = nr_ ? (s)->rstride[nr_ - 1] : 0; \
        int64_t outer_ = 1;                                                                 \
        for (uint32_t d_ = 0; d_ + 1 < nr_; d_++)                                           \
            outer_ *= (s)->rsize[d_];                                                       \
        if (in_n_ == 0)                                                                     \
            outer_ = 0;                                                                     \
        for (int64_t o_ = 0; o_ < outer_; o_++) {                                           \
            for (int64_t j_ = 0; j_ < in_n_; j_++) {                                        \
                int64_t at = off_ + j_ * in_s_;                                             \
                BODY;                                                                       \
            }                                                                               \
            for (uint32_t d_ = nr_ ? nr_ - 1 : 0; d_-- > 0;) {                                     \
                cnt_[d_]++;                                                                 \
                off_ += (s)->rstride[d_];                                                   \
                if (cnt_[d_] < (s)->rsize[d_])                                              \
                    break;                                                                  \
                off_ -= (s)->rstride[d_] * (s)->rsize[d_];                                  \
                cnt_[d_] = 0;                                                               \
            }                                                                               \
        }                                                                                   \
    } while (0)

#define SUM_FLOAT(T)                                                                        \
    do {                                                                                    \
        const T *x = in[0].data;                                                            \
        T *y = out;                                                                         \
        for (int64_t o = 0; o < count; o++) {                                               \
            double acc = 0;                                                                 \
            FOR_REDUCED(&s, kept_offset(&s, o), acc += x[at]);                              \
            y[o] = (T)acc;                                                                  \
        }                                                                                   \
    } while (0)

#define SUM_INT(T)                                                                          \
    do {                                                                                    \
        const T *x = in[0].data;                                                            \
        T *y = out;                                                                         \
        for (int64_t o = 0; o < count; o++) {                                               \
            uint64_t acc = 0;                                                               \
            FOR_REDUCED(&s, kept_offset(&s, o), acc += (uint64_t)x[at]);                    \
            y[o] = (T)acc;                                                                  \
        }                                                                                   \
    } while (0)

/* The first element starts the maximum (reduce_max never reduces an empty axis); NaN wins. */
#define MAX_OF(T)                                                                           \
    do {                                                                                    \
        const T *x = in[0].data;                                                            \
        T *y = out;                                                                         \
        for (int64_t o = 0; o < count; o++) {                                               \
            int64_t base = kept_offset(&s, o);                                              \
            T m = x[base];                                                                  \
            FOR_REDUCED(&s, base, if (x[at] > m || x[at] != x[at]) m = x[at]);              \
            y[o] = m;                                                                       \
        }                                                                                   \
    } while (0)

bool ref_reduce(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                dtl_err *err)
{
    (void)seed, (void)err;
    red_split s;
    red_split_init(&s, in[0].rank, in[0].shape, n->attr.red.axes);
    int64_t count = (int64_t)dtl_node_numel(n);
    bool sum = n->op == DTL_OP_SUM;
    switch (n->dtype) {
    case DTL_DTYPE_F32: if (sum) SUM_FLOAT(float); else MAX_OF(float); break;
    case DTL_DTYPE_F64: if (sum) SUM_FLOAT(double); else MAX_OF(double); break;
    case DTL_DTYPE_I32: if (sum) SUM_INT(int32_t); else MAX_OF(int32_t); break;
    case DTL_DTYPE_I64: if (sum) SUM_INT(int64_t); else MAX_OF(int64_t); break;
    default: break;
    }
    return true;
}

/* x viewed as [outer, dim, inner]; out[o, i] = the first j with the largest x[o, j, i]. */
#define ARGMAX_OF(T)                                                                        \
    do {                                                                                    \
        const T *x = in[0].data;                                                            \
        for (int64_t o = 0; o < outer; o++)                                                 \
            for (int64_t i = 0; i < inner; i++) {                                           \
                const T *p = x + o * dim * inner + i;                                       \
                T best = p[0];                                                              \
                int64_t at = 0;                                                             \
                for (int64_t j = 1; j < dim && best == best; j++)                           \
                    if (p[j * inner] > best || p[j * inner] != p[j * inner]) {              \
                        best = p[j * inner];                                                \
                        at = j;                                                             \
                    }                                                                       \
                y[o * inner + i] = at;                                                      \
            }                                                                               \
    } while (0)

bool ref_argmax(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                dtl_err *err)
{
    (void)seed, (void)err;
    uint32_t axis = n->attr.axis;
    int64_t outer = ref_numel(axis, in[0].shape), dim = in[0].shape[axis];
    int64_t inner = ref_numel(in[0].rank - axis - 1, in[0].shape + axis + 1);
    int64_t *y = out;
    switch (in[0].dtype) {
    case DTL_DTYPE_F32: ARGMAX_OF(float); break;
    case DTL_DTYPE_F64: ARGMAX_OF(double); break;
    case DTL_DTYPE_I32: ARGMAX_OF(int32_t); break;
    case DTL_DTYPE_I64: ARGMAX_OF(int64_t); break;
    default: break;
    }
    return true;
}

/* gcc (12) vectorizes only at -O3 or with -ftree-vectorize (its -O2 "very cheap" model
 * leaves loops that need a scalar epilogue alone): ask for it on this one function, which is
 * where a training step spends its time (3x faster). clang vectorizes at -O2 anyway. */
#if defined(__GNUC__) && !defined(__clang__)
#define REF_VECTORIZE __attribute__((optimize("tree-vectorize", "vect-cost-model=dynamic")))
#else
#define REF_VECTORIZE
#endif

/* c[m, n] = a[m, k] @ b[k, n], all contiguous. */
#define MATMUL_OF(T)                                                                        \
    REF_VECTORIZE static void matmul_##T(const T *restrict a, const T *restrict b, T *restrict c,         \
                           int64_t m, int64_t k, int64_t n)                                 \
    {                                                                                       \
        for (int64_t i = 0; i < m; i++) {                                                   \
            T *restrict ci = c + i * n;                                                     \
            for (int64_t j = 0; j < n; j++)                                                 \
                ci[j] = 0;                                                                  \
            for (int64_t p = 0; p < k; p++) {                                               \
                T aip = a[i * k + p];                                                       \
                const T *restrict bp = b + p * n;                                           \
                for (int64_t j = 0; j < n; j++)                                             \
                    ci[j] += aip * bp[j];                                                   \
            }                                                                               \
        }                                                                                   \
    }

MATMUL_OF(float)
MATMUL_OF(double)

/* A mixed-precision operand as the f32 values the product reads (ref.h): bf16 widened
 * exactly, or f32 rounded to TF32. NULL when out of memory. */
static float *mm_operand(const dtl_ref_arg *x, bool tf32)
{
    int64_t count = ref_numel(x->rank, x->shape);
    float *f = malloc(count ? (size_t)count * sizeof *f : 1);
    if (!f)
        return NULL;
    for (int64_t i = 0; i < count; i++)
        f[i] = tf32 ? dtl_tf32_round(((const float *)x->data)[i])
                    : dtl_f32_from_bf16(((const uint16_t *)x->data)[i]);
    return f;
}

bool ref_matmul(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                dtl_err *err)
{
    (void)seed;
    if (in[0].dtype == DTL_DTYPE_BF16 || n->attr.tf32) {
        float *fa = mm_operand(&in[0], n->attr.tf32), *fb = mm_operand(&in[1], n->attr.tf32);
        bool ok = fa && fb;
        if (ok) {
            dtl_ref_arg f[2] = {in[0], in[1]};
            f[0].data = fa, f[0].dtype = DTL_DTYPE_F32;
            f[1].data = fb, f[1].dtype = DTL_DTYPE_F32;
            dtl_node plain = *n;
            plain.attr.tf32 = 0;
            ok = ref_matmul(&plain, f, out, seed, err);
        } else {
            dtl_err_set(err, DTL_ERR_NOMEM, "ref: matmul: out of memory");
        }
        free(fa), free(fb);
        return ok;
    }
    const dtl_ref_arg *a = &in[0], *b = &in[1];
    uint32_t rb = n->rank - 2;
    int64_t m = n->shape[rb], nn = n->shape[rb + 1], k = a->shape[a->rank - 1];
    /* Batch strides in matrices, broadcast to the output's batch shape. */
    int64_t sa[DTL_MAX_RANK], sb[DTL_MAX_RANK], idx[DTL_MAX_RANK] = {0};
    ref_bcast_strides(a->rank - 2, a->shape, rb, n->shape, sa);
    ref_bcast_strides(b->rank - 2, b->shape, rb, n->shape, sb);
    int64_t batches = ref_numel(rb, n->shape), oa = 0, ob = 0;
    for (int64_t t = 0; t < batches; t++) {
        if (n->dtype == DTL_DTYPE_F32)
            matmul_float((const float *)a->data + oa * m * k, (const float *)b->data + ob * k * nn,
                         (float *)out + t * m * nn, m, k, nn);
        else
            matmul_double((const double *)a->data + oa * m * k,
                          (const double *)b->data + ob * k * nn, (double *)out + t * m * nn, m,
                          k, nn);
        for (uint32_t d = rb; d-- > 0;) {   /* next batch index */
            idx[d]++;
            oa += sa[d];
            ob += sb[d];
            if (idx[d] < n->shape[d])
                break;
            oa -= sa[d] * n->shape[d];
            ob -= sb[d] * n->shape[d];
            idx[d] = 0;
        }
    }
    return true;
}
