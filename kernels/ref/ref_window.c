/* kernels/ref/ref_window.c — the windowed ops: conv2d, max and average pooling, and their
 * backward ops, as plain loops over NCHW tensors.
 *
 * Every kernel is written in "gather" form: one output element at a time, summing over the
 * taps of its window in double and storing once, so no kernel needs scratch memory. The
 * backward ops invert the window relation: input row iy is tap ky of output row oy exactly
 * when iy + pad - ky * dil is a non-negative multiple of stride whose quotient oy is below
 * OH. Only maxpool2d_bwd scatters (each dy to its window's first maximum), after zeroing
 * its result. Float dtypes only (the graph's type rules guarantee it); the element type is
 * a macro argument so that f32 and f64 share the loops. */
#include "ref_internal.h"

#include <math.h>
#include <string.h>

/* The geometry every kernel needs, from the forward op's view: x [N, C, H, W], w [O, Cg,
 * KH, KW] (conv) or the pooling window, y [N, O, OH, OW]. */
typedef struct win {
    int64_t n, c, h, w;          /* x */
    int64_t o, oh, ow;           /* y (pooling: o == c) */
    int64_t kh, kw;
    int64_t sh, sw, ph, pw, dh, dw;
    int64_t groups, cg, og;      /* channels per group: of x, of y */
} win;

static win win_of(const dtl_win_attr *a, const int64_t *x, const int64_t *wt, const int64_t *y)
{
    win g = {.n = x[0], .c = x[1], .h = x[2], .w = x[3], .o = y[1], .oh = y[2], .ow = y[3],
             .sh = a->stride[0], .sw = a->stride[1], .ph = a->pad[0], .pw = a->pad[1],
             .dh = a->dil[0], .dw = a->dil[1], .groups = a->groups};
    g.kh = wt ? wt[2] : a->kernel[0];
    g.kw = wt ? wt[3] : a->kernel[1];
    g.cg = g.c / g.groups;
    g.og = g.o / g.groups;
    return g;
}

/* The output row oy whose tap k lands on input row i, or -1. */
static int64_t tap_src(int64_t i, int64_t k, int64_t pad, int64_t dil, int64_t stride,
                       int64_t out)
{
    int64_t t = i + pad - k * dil;
    if (t < 0 || t % stride)
        return -1;
    t /= stride;
    return t < out ? t : -1;
}

#define X_AT(p, g, n_, c_, y_, x_) (p)[(((n_) * (g).c + (c_)) * (g).h + (y_)) * (g).w + (x_)]
#define Y_AT(p, g, n_, o_, y_, x_) (p)[(((n_) * (g).o + (o_)) * (g).oh + (y_)) * (g).ow + (x_)]
#define W_AT(p, g, o_, c_, y_, x_) (p)[(((o_) * (g).cg + (c_)) * (g).kh + (y_)) * (g).kw + (x_)]

#define CONV_FWD(T)                                                                          \
    do {                                                                                     \
        const T *x = in[0].data, *wt = in[1].data;                                           \
        T *y = out;                                                                          \
        for (int64_t b = 0; b < g.n; b++)                                                    \
            for (int64_t o = 0; o < g.o; o++) {                                              \
                int64_t c0 = o / g.og * g.cg;                                                \
                for (int64_t oy = 0; oy < g.oh; oy++)                                        \
                    for (int64_t ox = 0; ox < g.ow; ox++) {                                  \
                        double acc = 0;                                                      \
                        for (int64_t c = 0; c < g.cg; c++)                                   \
                            for (int64_t ky = 0; ky < g.kh; ky++) {                          \
                                int64_t iy = oy * g.sh - g.ph + ky * g.dh;                   \
                                if (iy < 0 || iy >= g.h)                                     \
                                    continue;                                                \
                                for (int64_t kx = 0; kx < g.kw; kx++) {                      \
                                    int64_t ix = ox * g.sw - g.pw + kx * g.dw;               \
                                    if (ix >= 0 && ix < g.w)                                 \
                                        acc += (double)X_AT(x, g, b, c0 + c, iy, ix) *       \
                                               (double)W_AT(wt, g, o, c, ky, kx);            \
                                }                                                            \
                            }                                                                \
                        Y_AT(y, g, b, o, oy, ox) = (T)acc;                                   \
                    }                                                                        \
            }                                                                                \
    } while (0)

bool ref_conv2d(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                dtl_err *err)
{
    (void)seed, (void)err;
    win g = win_of(&n->attr.win, in[0].shape, in[1].shape, n->shape);
    if (n->dtype == DTL_DTYPE_F32)
        CONV_FWD(float);
    else
        CONV_FWD(double);
    return true;
}

/* dx[b, ci, iy, ix] = sum over o of ci's group, ky, kx of dy[b, o, oy, ox] w[o, c, ky, kx]
 * where tap (ky, kx) of output (oy, ox) reads (iy, ix). */
#define CONV_BWD_X(T)                                                                        \
    do {                                                                                     \
        const T *dy = in[0].data, *wt = in[1].data;                                          \
        T *dx = out;                                                                         \
        for (int64_t b = 0; b < g.n; b++)                                                    \
            for (int64_t ci = 0; ci < g.c; ci++) {                                           \
                int64_t grp = ci / g.cg, c = ci % g.cg;                                      \
                for (int64_t iy = 0; iy < g.h; iy++)                                         \
                    for (int64_t ix = 0; ix < g.w; ix++) {                                   \
                        double acc = 0;                                                      \
                        for (int64_t o = grp * g.og; o < (grp + 1) * g.og; o++)              \
                            for (int64_t ky = 0; ky < g.kh; ky++) {                          \
                                int64_t oy = tap_src(iy, ky, g.ph, g.dh, g.sh, g.oh);        \
                                if (oy < 0)                                                  \
                                    continue;                                                \
                                for (int64_t kx = 0; kx < g.kw; kx++) {                      \
                                    int64_t ox = tap_src(ix, kx, g.pw, g.dw, g.sw, g.ow);    \
                                    if (ox >= 0)                                             \
                                        acc += (double)Y_AT(dy, g, b, o, oy, ox) *           \
                                               (double)W_AT(wt, g, o, c, ky, kx);            \
                                }                                                            \
                            }                                                                \
                        X_AT(dx, g, b, ci, iy, ix) = (T)acc;                                 \
                    }                                                                        \
            }                                                                                \
    } while (0)

bool ref_conv2d_bwd_x(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                      dtl_err *err)
{
    (void)seed, (void)err;
    win g = win_of(&n->attr.win, n->shape, in[1].shape, in[0].shape);
    if (n->dtype == DTL_DTYPE_F32)
        CONV_BWD_X(float);
    else
        CONV_BWD_X(double);
    return true;
}

/* dw[o, c, ky, kx] = sum over b, oy, ox of dy[b, o, oy, ox] x[b, c0 + c, iy, ix]. */
#define CONV_BWD_W(T)                                                                        \
    do {                                                                                     \
        const T *x = in[0].data, *dy = in[1].data;                                           \
        T *dw = out;                                                                         \
        for (int64_t o = 0; o < g.o; o++) {                                                  \
            int64_t c0 = o / g.og * g.cg;                                                    \
            for (int64_t c = 0; c < g.cg; c++)                                               \
                for (int64_t ky = 0; ky < g.kh; ky++)                                        \
                    for (int64_t kx = 0; kx < g.kw; kx++) {                                  \
                        double acc = 0;                                                      \
                        for (int64_t b = 0; b < g.n; b++)                                    \
                            for (int64_t oy = 0; oy < g.oh; oy++) {                          \
                                int64_t iy = oy * g.sh - g.ph + ky * g.dh;                   \
                                if (iy < 0 || iy >= g.h)                                     \
                                    continue;                                                \
                                for (int64_t ox = 0; ox < g.ow; ox++) {                      \
                                    int64_t ix = ox * g.sw - g.pw + kx * g.dw;               \
                                    if (ix >= 0 && ix < g.w)                                 \
                                        acc += (double)Y_AT(dy, g, b, o, oy, ox) *           \
                                               (double)X_AT(x, g, b, c0 + c, iy, ix);        \
                                }                                                            \
                            }                                                                \
                        W_AT(dw, g, o, c, ky, kx) = (T)acc;                                  \
                    }                                                                        \
        }                                                                                    \
    } while (0)

bool ref_conv2d_bwd_w(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                      dtl_err *err)
{
    (void)seed, (void)err;
    win g = win_of(&n->attr.win, in[0].shape, n->shape, in[1].shape);
    if (n->dtype == DTL_DTYPE_F32)
        CONV_BWD_W(float);
    else
        CONV_BWD_W(double);
    return true;
}

/* ---- pooling ----------------------------------------------------------------------------- */

/* The offset (within its channel plane) of the first maximum of window (oy, ox) of plane p:
 * the first NaN if any, else the first element equal to the maximum. Padding is skipped; a
 * window always holds an element of x (pad < kernel). */
#define ARGMAX_OF(T)                                                                         \
    static int64_t argmax_##T(const win *g, const T *p, int64_t oy, int64_t ox)              \
    {                                                                                        \
        int64_t best = -1;                                                                   \
        for (int64_t ky = 0; ky < g->kh; ky++) {                                             \
            int64_t iy = oy * g->sh - g->ph + ky;                                            \
            if (iy < 0 || iy >= g->h)                                                        \
                continue;                                                                    \
            for (int64_t kx = 0; kx < g->kw; kx++) {                                         \
                int64_t ix = ox * g->sw - g->pw + kx, at = iy * g->w + ix;                   \
                if (ix < 0 || ix >= g->w)                                                    \
                    continue;                                                                \
                if (best < 0 || (!isnan(p[best]) && (isnan(p[at]) || p[at] > p[best])))      \
                    best = at;                                                               \
            }                                                                                \
        }                                                                                    \
        return best;                                                                         \
    }
ARGMAX_OF(float)
ARGMAX_OF(double)

bool ref_maxpool2d(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                   dtl_err *err)
{
    (void)seed, (void)err;
    win g = win_of(&n->attr.win, in[0].shape, NULL, n->shape);
    int64_t planes = g.n * g.c, hw = g.h * g.w, ohw = g.oh * g.ow;
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oy = 0; oy < g.oh; oy++)
            for (int64_t ox = 0; ox < g.ow; ox++) {
                int64_t o = p * ohw + oy * g.ow + ox;
                if (n->dtype == DTL_DTYPE_F32) {
                    const float *x = (const float *)in[0].data + p * hw;
                    ((float *)out)[o] = x[argmax_float(&g, x, oy, ox)];
                } else {
                    const double *x = (const double *)in[0].data + p * hw;
                    ((double *)out)[o] = x[argmax_double(&g, x, oy, ox)];
                }
            }
    return true;
}

bool ref_maxpool2d_bwd(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                       dtl_err *err)
{
    (void)seed, (void)err;
    win g = win_of(&n->attr.win, in[0].shape, NULL, in[1].shape);
    int64_t planes = g.n * g.c, hw = g.h * g.w, ohw = g.oh * g.ow;
    memset(out, 0, (size_t)(planes * hw) * dtl_dtype_size(n->dtype));
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oy = 0; oy < g.oh; oy++)
            for (int64_t ox = 0; ox < g.ow; ox++) {
                int64_t o = p * ohw + oy * g.ow + ox;
                if (n->dtype == DTL_DTYPE_F32) {
                    const float *x = (const float *)in[0].data + p * hw;
                    ((float *)out)[p * hw + argmax_float(&g, x, oy, ox)] +=
                        ((const float *)in[1].data)[o];
                } else {
                    const double *x = (const double *)in[0].data + p * hw;
                    ((double *)out)[p * hw + argmax_double(&g, x, oy, ox)] +=
                        ((const double *)in[1].data)[o];
                }
            }
    return true;
}

/* avgpool's divisor for window (oy, ox). */
static double avg_div(const win *g, bool count_pad, int64_t oy, int64_t ox)
{
    if (count_pad)
        return (double)(g->kh * g->kw);
    int64_t y0 = oy * g->sh - g->ph, x0 = ox * g->sw - g->pw;
    int64_t y1 = y0 + g->kh < g->h ? y0 + g->kh : g->h, x1 = x0 + g->kw < g->w ? x0 + g->kw : g->w;
    y0 = y0 > 0 ? y0 : 0;
    x0 = x0 > 0 ? x0 : 0;
    return (double)((y1 - y0) * (x1 - x0));
}

#define AVG_FWD(T)                                                                           \
    do {                                                                                     \
        const T *x = in[0].data;                                                             \
        T *y = out;                                                                          \
        for (int64_t p = p0; p < p1; p++)                                                    \
            for (int64_t oy = 0; oy < g.oh; oy++)                                            \
                for (int64_t ox = 0; ox < g.ow; ox++) {                                      \
                    double acc = 0;                                                          \
                    for (int64_t ky = 0; ky < g.kh; ky++) {                                  \
                        int64_t iy = oy * g.sh - g.ph + ky;                                  \
                        if (iy < 0 || iy >= g.h)                                             \
                            continue;                                                        \
                        for (int64_t kx = 0; kx < g.kw; kx++) {                              \
                            int64_t ix = ox * g.sw - g.pw + kx;                              \
                            if (ix >= 0 && ix < g.w)                                         \
                                acc += (double)x[(p * g.h + iy) * g.w + ix];                 \
                        }                                                                    \
                    }                                                                        \
                    y[(p * g.oh + oy) * g.ow + ox] = (T)(acc / avg_div(&g, cp, oy, ox));     \
                }                                                                            \
    } while (0)

#define AVG_BWD(T)                                                                           \
    do {                                                                                     \
        const T *dy = in[0].data;                                                            \
        T *dx = out;                                                                         \
        for (int64_t p = p0; p < p1; p++)                                                    \
            for (int64_t iy = 0; iy < g.h; iy++)                                             \
                for (int64_t ix = 0; ix < g.w; ix++) {                                       \
                    double acc = 0;                                                          \
                    for (int64_t ky = 0; ky < g.kh; ky++) {                                  \
                        int64_t oy = tap_src(iy, ky, g.ph, 1, g.sh, g.oh);                   \
                        if (oy < 0)                                                          \
                            continue;                                                        \
                        for (int64_t kx = 0; kx < g.kw; kx++) {                              \
                            int64_t ox = tap_src(ix, kx, g.pw, 1, g.sw, g.ow);               \
                            if (ox >= 0)                                                     \
                                acc += (double)dy[(p * g.oh + oy) * g.ow + ox] /             \
                                       avg_div(&g, cp, oy, ox);                              \
                        }                                                                    \
                    }                                                                        \
                    dx[(p * g.h + iy) * g.w + ix] = (T)acc;                                  \
                }                                                                            \
    } while (0)

void dtl_ref_avgpool2d_planes(const dtl_node *n, const dtl_ref_arg *in, void *out, int64_t p0,
                              int64_t p1)
{
    bool cp = n->attr.win.count_pad;
    if (n->op == DTL_OP_AVGPOOL2D) {
        win g = win_of(&n->attr.win, in[0].shape, NULL, n->shape);
        if (n->dtype == DTL_DTYPE_F32)
            AVG_FWD(float);
        else
            AVG_FWD(double);
    } else {
        win g = win_of(&n->attr.win, n->shape, NULL, in[0].shape);
        if (n->dtype == DTL_DTYPE_F32)
            AVG_BWD(float);
        else
            AVG_BWD(double);
    }
}

bool ref_avgpool2d(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                   dtl_err *err)
{
    (void)seed, (void)err;
    dtl_ref_avgpool2d_planes(n, in, out, 0, n->shape[0] * n->shape[1]);
    return true;
}

bool ref_avgpool2d_bwd(const dtl_node *n, const dtl_ref_arg *in, void *out, uint64_t seed,
                       dtl_err *err)
{
    (void)seed, (void)err;
    dtl_ref_avgpool2d_planes(n, in, out, 0, n->shape[0] * n->shape[1]);
    return true;
}
