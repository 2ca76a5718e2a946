/* kernels/cpu/conv.c — conv2d and its two backward ops as im2col + GEMM.
 *
 * Design. For one sample and one group, im2col lays the input taps out as a matrix col
 * [K, P], K = Cg * KH * KW rows (channel, ky, kx) and P = OH * OW columns, zero where a tap
 * falls in the padding. Then, with W_g = the group's weights as [Og, K] and dY_g = the
 * group's slice of dy as [Og, P]:
 *     forward      Y_g  = W_g @ col                     (gemm, straight into y)
 *     input grad   dcol = W_g^T @ dY_g, then col2im adds dcol's taps into dx
 *     weight grad  dW_g += dY_g @ col^T, summed over the samples
 * A 1x1 kernel with stride 1 and no padding needs no im2col (col is x itself).
 * The batch is cut into T = min(N, DTL_CONV_TASKS) fixed ranges; each range is a pool task
 * with its own scratch (col, and for the weight gradient a GEMM result and a partial sum),
 * and its GEMMs run serially on its thread. The weight gradient's partial sums are added in
 * range order, so the bits depend on N, not on how many threads there are. With one range
 * the GEMMs get the pool instead. */
#include "conv.h"

#include <string.h>

#include "gemm.h"

typedef struct geom {
    int64_t n, c, h, w, o, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, groups, cg, og;
    int64_t K, P;            /* per group: rows and columns of col */
    bool direct;             /* 1x1, stride 1, no padding: col is x */
} geom;

static geom geom_of(const dtl_node *n, const dtl_ref_arg *in)
{
    const int64_t *x, *w, *y;
    switch (n->op) {
    case DTL_OP_CONV2D: x = in[0].shape; w = in[1].shape; y = n->shape; break;
    case DTL_OP_CONV2D_BWD_X: x = n->shape; w = in[1].shape; y = in[0].shape; break;
    default: x = in[0].shape; w = n->shape; y = in[1].shape; break;
    }
    const dtl_win_attr *a = &n->attr.win;
    geom g = {.n = x[0], .c = x[1], .h = x[2], .w = x[3], .o = y[1], .oh = y[2], .ow = y[3],
              .kh = w[2], .kw = w[3], .sh = a->stride[0], .sw = a->stride[1],
              .ph = a->pad[0], .pw = a->pad[1], .dh = a->dil[0], .dw = a->dil[1],
              .groups = a->groups};
    g.cg = g.c / g.groups;
    g.og = g.o / g.groups;
    g.K = g.cg * g.kh * g.kw;
    g.P = g.oh * g.ow;
    g.direct = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
    return g;
}

static int64_t tasks_of(const geom *g)
{
    return g->n < DTL_CONV_TASKS ? g->n : DTL_CONV_TASKS;
}

static uint64_t round64(uint64_t b)
{
    return (b + 63) & ~(uint64_t)63;
}

/* Per task: col [K, P]; weight grad: + tmp [Og, K] + partial [O, K]. In elements. */
static uint64_t task_elems(const dtl_node *n, const geom *g)
{
    uint64_t e = (uint64_t)(g->K * g->P);
    if (n->op == DTL_OP_CONV2D_BWD_W)
        e += (uint64_t)(g->og * g->K + g->o * g->K);
    return e;
}

static bool is_conv(const dtl_node *n)
{
    return n->op == DTL_OP_CONV2D || n->op == DTL_OP_CONV2D_BWD_X || n->op == DTL_OP_CONV2D_BWD_W;
}

bool dtl_cpu_conv_handles(const dtl_node *n)
{
    return (is_conv(n) || n->op == DTL_OP_MAXPOOL2D || n->op == DTL_OP_MAXPOOL2D_BWD ||
            n->op == DTL_OP_AVGPOOL2D || n->op == DTL_OP_AVGPOOL2D_BWD) &&
           (n->dtype == DTL_DTYPE_F32 || n->dtype == DTL_DTYPE_F64);
}

uint64_t dtl_cpu_conv_scratch(const dtl_node *n, const dtl_ref_arg *in)
{
    if (!dtl_cpu_conv_handles(n) || !is_conv(n))
        return 0;
    geom g = geom_of(n, in);
    return (uint64_t)tasks_of(&g) * round64(task_elems(n, &g) * dtl_dtype_size(n->dtype)) + 64;
}

/* The element type's GEMM. */
static void gemm_T(bool f64, dtl_pool *pool, int64_t m, int64_t n, int64_t k, const void *a,
                   int64_t lda, bool ta, const void *b, int64_t ldb, bool tb, void *c,
                   int64_t ldc)
{
    if (f64)
        dtl_gemm_f64(pool, m, n, k, a, lda, ta, b, ldb, tb, c, ldc, NULL, NULL);
    else
        dtl_gemm_f32(pool, m, n, k, a, lda, ta, b, ldb, tb, c, ldc, NULL, NULL);
}

/* The outputs ox of a row whose tap (at x0 + ox * stride) lies inside [0, w): [*lo, *hi). */
static void inside(int64_t x0, int64_t stride, int64_t w, int64_t ow, int64_t *lo, int64_t *hi)
{
    int64_t a = x0 < 0 ? (-x0 + stride - 1) / stride : 0;
    int64_t b = w - 1 - x0 < 0 ? 0 : (w - 1 - x0) / stride + 1;
    *lo = a < ow ? a : ow;
    *hi = b < ow ? b : ow;
    if (*hi < *lo)
        *hi = *lo;
}

/* im2col of channels [c0, c0 + cg) of one sample's planes x (C planes of H x W) into col;
 * col2im, its adjoint, adds col into those planes. The range of a row that reads inside x
 * is found once per row, so the inner loops have no bounds checks (a plain copy or add for
 * stride 1). */
#define COL_FNS(T)                                                                           \
    static void im2col_##T(const geom *g, const T *x, T *col)                                \
    {                                                                                        \
        for (int64_t c = 0; c < g->cg; c++)                                                  \
            for (int64_t ky = 0; ky < g->kh; ky++)                                           \
                for (int64_t kx = 0; kx < g->kw; kx++) {                                     \
                    const T *xp = x + c * g->h * g->w;                                       \
                    T *r = col + ((c * g->kh + ky) * g->kw + kx) * g->P;                     \
                    int64_t x0 = kx * g->dw - g->pw, lo, hi;                                 \
                    inside(x0, g->sw, g->w, g->ow, &lo, &hi);                                \
                    for (int64_t oy = 0; oy < g->oh; oy++, r += g->ow) {                     \
                        int64_t iy = oy * g->sh - g->ph + ky * g->dh;                        \
                        if (iy < 0 || iy >= g->h) {                                          \
                            memset(r, 0, (size_t)g->ow * sizeof(T));                         \
                            continue;                                                        \
                        }                                                                    \
                        const T *xr = xp + iy * g->w;                                        \
                        for (int64_t ox = 0; ox < lo; ox++)                                  \
                            r[ox] = 0;                                                       \
                        if (g->sw == 1)                                                      \
                            memcpy(r + lo, xr + x0 + lo, (size_t)(hi - lo) * sizeof(T));     \
                        else                                                                 \
                            for (int64_t ox = lo; ox < hi; ox++)                             \
                                r[ox] = xr[x0 + ox * g->sw];                                 \
                        for (int64_t ox = hi; ox < g->ow; ox++)                              \
                            r[ox] = 0;                                                       \
                    }                                                                        \
                }                                                                            \
    }                                                                                        \
    static void col2im_##T(const geom *g, const T *col, T *x)                                \
    {                                                                                        \
        for (int64_t c = 0; c < g->cg; c++)                                                  \
            for (int64_t ky = 0; ky < g->kh; ky++)                                           \
                for (int64_t kx = 0; kx < g->kw; kx++) {                                     \
                    T *xp = x + c * g->h * g->w;                                             \
                    const T *r = col + ((c * g->kh + ky) * g->kw + kx) * g->P;               \
                    int64_t x0 = kx * g->dw - g->pw, lo, hi;                                 \
                    inside(x0, g->sw, g->w, g->ow, &lo, &hi);                                \
                    for (int64_t oy = 0; oy < g->oh; oy++, r += g->ow) {                     \
                        int64_t iy = oy * g->sh - g->ph + ky * g->dh;                        \
                        if (iy < 0 || iy >= g->h)                                            \
                            continue;                                                        \
                        T *xr = xp + iy * g->w;                                              \
                        if (g->sw == 1)                                                      \
                            for (int64_t ox = lo; ox < hi; ox++)                             \
                                xr[x0 + ox] += r[ox];                                        \
                        else                                                                 \
                            for (int64_t ox = lo; ox < hi; ox++)                             \
                                xr[x0 + ox * g->sw] += r[ox];                                \
                    }                                                                        \
                }                                                                            \
    }
COL_FNS(float)
COL_FNS(double)

typedef struct job {
    const dtl_node *n;
    geom g;
    bool f64;
    size_t esz;
    const char *in0, *in1;
    char *out;
    char *scratch;
    uint64_t task_bytes;
    int64_t ntasks;
    dtl_pool *gemm_pool;     /* the pool when there is one task, else NULL */
} job;

static void im2col(const job *j, const char *x, char *col)
{
    if (j->f64)
        im2col_double(&j->g, (const double *)x, (double *)col);
    else
        im2col_float(&j->g, (const float *)x, (float *)col);
}

static void col2im(const job *j, const char *col, char *x)
{
    if (j->f64)
        col2im_double(&j->g, (const double *)col, (double *)x);
    else
        col2im_float(&j->g, (const float *)col, (float *)x);
}

static void add_to(const job *j, char *dst, const char *src, int64_t count)
{
    if (j->f64)
        for (int64_t i = 0; i < count; i++)
            ((double *)dst)[i] += ((const double *)src)[i];
    else
        for (int64_t i = 0; i < count; i++)
            ((float *)dst)[i] += ((const float *)src)[i];
}

static void run_task(void *ctx, int64_t t0, int64_t t1)
{
    const job *j = ctx;
    const geom *g = &j->g;
    size_t es = j->esz;
    int64_t xs = g->c * g->h * g->w, ys = g->o * g->P;   /* elements per sample */
    int64_t wg = g->og * g->K;                           /* weights per group */
    for (int64_t t = t0; t < t1; t++) {
        char *col = j->scratch + (uint64_t)t * j->task_bytes;
        char *tmp = col + (size_t)(g->K * g->P) * es, *part = tmp + (size_t)wg * es;
        int64_t b0 = t * g->n / j->ntasks, b1 = (t + 1) * g->n / j->ntasks;
        if (j->n->op == DTL_OP_CONV2D_BWD_W)
            memset(part, 0, (size_t)(g->o * g->K) * es);
        for (int64_t b = b0; b < b1; b++)
            for (int64_t gr = 0; gr < g->groups; gr++) {
                switch (j->n->op) {
                case DTL_OP_CONV2D: {   /* in0 x, in1 w */
                    const char *x = j->in0 + (size_t)(b * xs + gr * g->cg * g->h * g->w) * es;
                    const char *src = x;
                    if (!g->direct) {
                        im2col(j, x, col);
                        src = col;
                    }
                    gemm_T(j->f64, j->gemm_pool, g->og, g->P, g->K,
                           j->in1 + (size_t)(gr * wg) * es, g->K, false, src, g->P, false,
                           j->out + (size_t)(b * ys + gr * g->og * g->P) * es, g->P);
                    break;
                }
                case DTL_OP_CONV2D_BWD_X: {   /* in0 dy, in1 w */
                    char *dx = j->out + (size_t)(b * xs + gr * g->cg * g->h * g->w) * es;
                    const char *dy = j->in0 + (size_t)(b * ys + gr * g->og * g->P) * es;
                    const char *w = j->in1 + (size_t)(gr * wg) * es;
                    if (g->direct) {
                        gemm_T(j->f64, j->gemm_pool, g->K, g->P, g->og, w, g->K, true, dy,
                               g->P, false, dx, g->P);
                        break;
                    }
                    gemm_T(j->f64, j->gemm_pool, g->K, g->P, g->og, w, g->K, true, dy, g->P,
                           false, col, g->P);
                    memset(dx, 0, (size_t)(g->cg * g->h * g->w) * es);
                    col2im(j, col, dx);
                    break;
                }
                default: {   /* CONV2D_BWD_W: in0 x, in1 dy */
                    const char *x = j->in0 + (size_t)(b * xs + gr * g->cg * g->h * g->w) * es;
                    const char *dy = j->in1 + (size_t)(b * ys + gr * g->og * g->P) * es;
                    const char *src = x;
                    if (!g->direct) {
                        im2col(j, x, col);
                        src = col;
                    }
                    gemm_T(j->f64, j->gemm_pool, g->og, g->K, g->P, dy, g->P, false, src,
                           g->P, true, tmp, g->K);
                    add_to(j, part + (size_t)(gr * wg) * es, tmp, wg);
                    break;
                }
                }
            }
    }
}

/* ---- max pooling: planes (n, c) in parallel; within a plane the reference's order ---- */

typedef struct pjob {
    const dtl_node *n;
    const dtl_ref_arg *in;   /* average pooling: the reference kernel's planes */
    int64_t h, w, oh, ow, kh, kw, sh, sw, ph, pw;
    const char *x, *dy;
    char *out;
} pjob;

/* The first maximum of window (oy, ox) of plane x (the first NaN if any), as an offset;
 * written with selects rather than branches (the comparisons are unpredictable). */
#define POOL_FNS(T)                                                                          \
    static int64_t first_max_##T(const pjob *j, const T *x, int64_t oy, int64_t ox)          \
    {                                                                                        \
        int64_t y0 = oy * j->sh - j->ph, x0 = ox * j->sw - j->pw;                            \
        int64_t y1 = y0 + j->kh < j->h ? y0 + j->kh : j->h;                                  \
        int64_t x1 = x0 + j->kw < j->w ? x0 + j->kw : j->w;                                  \
        y0 = y0 > 0 ? y0 : 0;                                                                \
        x0 = x0 > 0 ? x0 : 0;                                                                \
        int64_t best = y0 * j->w + x0, nan = -1;                                             \
        T m = x[best];                                                                       \
        for (int64_t iy = y0; iy < y1; iy++)                                                 \
            for (int64_t ix = x0; ix < x1; ix++) {                                           \
                int64_t at = iy * j->w + ix;                                                 \
                T v = x[at];                                                                 \
                bool gt = v > m;                                                             \
                best = gt ? at : best;                                                       \
                m = gt ? v : m;                                                              \
                nan = v != v && nan < 0 ? at : nan;                                          \
            }                                                                                \
        return nan >= 0 ? nan : best;                                                        \
    }                                                                                        \
    static void pool_planes_##T(const pjob *j, int64_t p0, int64_t p1)                       \
    {                                                                                        \
        int64_t hw = j->h * j->w, ohw = j->oh * j->ow;                                       \
        bool bwd = j->n->op == DTL_OP_MAXPOOL2D_BWD;                                         \
        for (int64_t p = p0; p < p1; p++) {                                                  \
            const T *x = (const T *)j->x + p * hw;                                           \
            if (bwd) {                                                                       \
                T *dx = (T *)j->out + p * hw;                                                \
                const T *dy = (const T *)j->dy + p * ohw;                                    \
                memset(dx, 0, (size_t)hw * sizeof(T));                                       \
                for (int64_t oy = 0; oy < j->oh; oy++)                                       \
                    for (int64_t ox = 0; ox < j->ow; ox++)                                   \
                        dx[first_max_##T(j, x, oy, ox)] += dy[oy * j->ow + ox];              \
            } else {                                                                         \
                T *y = (T *)j->out + p * ohw;                                                \
                for (int64_t oy = 0; oy < j->oh; oy++)                                       \
                    for (int64_t ox = 0; ox < j->ow; ox++)                                   \
                        y[oy * j->ow + ox] = x[first_max_##T(j, x, oy, ox)];                 \
            }                                                                                \
        }                                                                                    \
    }
POOL_FNS(float)
POOL_FNS(double)

static void pool_task(void *ctx, int64_t p0, int64_t p1)
{
    const pjob *j = ctx;
    if (j->n->op == DTL_OP_AVGPOOL2D || j->n->op == DTL_OP_AVGPOOL2D_BWD)
        dtl_ref_avgpool2d_planes(j->n, j->in, j->out, p0, p1);
    else if (j->n->dtype == DTL_DTYPE_F64)
        pool_planes_double(j, p0, p1);
    else
        pool_planes_float(j, p0, p1);
}

/* Pooling, forward or backward, a task per range of (n, c) planes. */
static void pooling(dtl_pool *pool, const dtl_node *n, const dtl_ref_arg *in, void *out)
{
    bool fwd = n->op == DTL_OP_MAXPOOL2D || n->op == DTL_OP_AVGPOOL2D;
    bool avg_bwd = n->op == DTL_OP_AVGPOOL2D_BWD;
    const int64_t *x = avg_bwd ? n->shape : in[0].shape;
    const int64_t *y = fwd ? n->shape : avg_bwd ? in[0].shape : in[1].shape;
    const dtl_win_attr *a = &n->attr.win;
    pjob j = {.n = n, .in = in, .h = x[2], .w = x[3], .oh = y[2], .ow = y[3], .kh = a->kernel[0],
              .kw = a->kernel[1], .sh = a->stride[0], .sw = a->stride[1], .ph = a->pad[0],
              .pw = a->pad[1], .x = in[0].data, .dy = n->nin > 1 ? in[1].data : NULL,
              .out = out};
    int64_t planes = x[0] * x[1], per = x[2] * x[3] + y[2] * y[3];
    dtl_pool_run(pool, pool_task, &j, planes, per >= 4096 ? 1 : 4096 / (per ? per : 1));
}

void dtl_cpu_conv(dtl_pool *pool, const dtl_node *n, const dtl_ref_arg *in, void *out,
                  void *scratch)
{
    if (!is_conv(n)) {
        pooling(pool, n, in, out);
        return;
    }
    job j = {.n = n, .g = geom_of(n, in), .f64 = n->dtype == DTL_DTYPE_F64,
             .esz = dtl_dtype_size(n->dtype), .in0 = in[0].data, .in1 = in[1].data,
             .out = out, .scratch = scratch};
    j.ntasks = tasks_of(&j.g);
    j.task_bytes = round64(task_elems(n, &j.g) * j.esz);
    int64_t wsize = j.g.o * j.g.K;
    if (j.ntasks == 0) {   /* an empty batch */
        if (n->op == DTL_OP_CONV2D_BWD_W)
            memset(out, 0, (size_t)wsize * j.esz);
        return;
    }
    if (j.ntasks == 1) {
        j.gemm_pool = pool;
        run_task(&j, 0, 1);
    } else {
        dtl_pool_run(pool, run_task, &j, j.ntasks, 1);
    }
    if (n->op != DTL_OP_CONV2D_BWD_W)
        return;
    size_t part_off = (size_t)(j.g.K * j.g.P + j.g.og * j.g.K) * j.esz;
    memcpy(out, j.scratch + part_off, (size_t)wsize * j.esz);
    for (int64_t t = 1; t < j.ntasks; t++)
        add_to(&j, out, j.scratch + (uint64_t)t * j.task_bytes + part_off, wsize);
}
