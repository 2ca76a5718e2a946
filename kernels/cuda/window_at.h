/* kernels/cuda/window_at.h — the windowed ops (conv2d, max/avg pooling and their backward
 * ops) one output element at a time: the bodies of the CUDA kernels of kernels/cuda/dnn.cu,
 * written once for the device and the host, so that the CPU checks them against the
 * reference backend (tests/unit/test_cuda.c) where there is no GPU.
 *
 * Contract: plain C11 and CUDA C++ (no dtl headers). dtl_cu_win is the geometry of one node,
 * seen from the forward op: x [n, c, h, w], the filter [o, cg, kh, kw] (conv) or the pooling
 * window kh x kw, y [n, o, oh, ow] (pooling: o == c, groups 1, dilation 1); f64 picks the
 * element type of every tensor (f32 otherwise). Each dtl_cu_w_*_at function returns element
 * i (row-major) of its op's result as a double, to be stored in the element type, and
 * computes it exactly as kernels/ref/ref_window.c does (ref.h's contract): the taps of the
 * window inside x summed in double in ref's order and rounded once; maxpool's window
 * maximum is its first NaN, else its first largest element (padding never wins);
 * maxpool2d_bwd adds, in the element type, every dy whose window's maximum is this element,
 * in ascending output order (ref's scatter order), so it equals ref bit for bit; avgpool
 * divides by kh * kw (count_pad) or by the number of taps inside x. conv2d_bwd_w is split
 * in nparts strided partial sums (part t sums positions t, t + nparts, … of the (n, oy, ox)
 * space) that the caller adds in double. Inputs are dense, row-major, never written.
 */
#ifndef DTL_CUDA_WINDOW_AT_H
#define DTL_CUDA_WINDOW_AT_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define DTL_CU_HD static __host__ __device__ inline
#else
#define DTL_CU_HD static inline
#endif

typedef struct dtl_cu_win {
    int64_t n, c, h, w;          /* x */
    int64_t o, oh, ow;           /* y */
    int64_t kh, kw;              /* the filter's or the pooling window's size */
    int64_t sh, sw, ph, pw, dh, dw;
    int64_t groups, cg, og;      /* channels per group: of x, of y */
    int count_pad;               /* avgpool */
    int f64;                     /* the element type: f64, else f32 */
} dtl_cu_win;

/* The windowed ops, as the kernels know them. */
typedef enum dtl_cu_wop {
    DTL_CU_W_CONV, DTL_CU_W_CONV_BWD_X, DTL_CU_W_CONV_BWD_W, DTL_CU_W_MAXPOOL,
    DTL_CU_W_MAXPOOL_BWD, DTL_CU_W_AVGPOOL, DTL_CU_W_AVGPOOL_BWD, DTL_CU_W_COUNT
} dtl_cu_wop;

/* The geometry from the node's attributes (kernel, stride, pad, dil: per axis h, w) and
 * the three shapes (xs, the filter's ws or NULL for pooling, ys: 4 dims each). */
DTL_CU_HD dtl_cu_win dtl_cu_win_make(const int32_t *kernel, const int32_t *stride,
                                     const int32_t *pad, const int32_t *dil, int32_t groups,
                                     int count_pad, const int64_t *xs, const int64_t *ws,
                                     const int64_t *ys, int f64)
{
    dtl_cu_win g;
    g.n = xs[0], g.c = xs[1], g.h = xs[2], g.w = xs[3];
    g.o = ys[1], g.oh = ys[2], g.ow = ys[3];
    g.kh = ws ? ws[2] : kernel[0];
    g.kw = ws ? ws[3] : kernel[1];
    g.sh = stride[0], g.sw = stride[1], g.ph = pad[0], g.pw = pad[1];
    g.dh = ws ? dil[0] : 1;
    g.dw = ws ? dil[1] : 1;
    g.groups = ws && groups > 0 ? groups : 1;
    g.cg = g.c / g.groups;
    g.og = g.o / g.groups;
    g.count_pad = count_pad;
    g.f64 = f64;
    return g;
}

/* The number of elements of op's result. */
DTL_CU_HD int64_t dtl_cu_win_numel(const dtl_cu_win *g, dtl_cu_wop op)
{
    switch (op) {
    case DTL_CU_W_CONV:
    case DTL_CU_W_MAXPOOL:
    case DTL_CU_W_AVGPOOL: return g->n * g->o * g->oh * g->ow;
    case DTL_CU_W_CONV_BWD_W: return g->o * g->cg * g->kh * g->kw;
    default: return g->n * g->c * g->h * g->w;
    }
}

DTL_CU_HD double dtl_cu_w_ld(const void *p, int64_t i, int f64)
{
    return f64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

/* The output row whose tap k lands on input row i, or -1 (ref_window.c's tap_src). */
DTL_CU_HD int64_t dtl_cu_w_tap_src(int64_t i, int64_t k, int64_t pad, int64_t dil,
                                   int64_t stride, int64_t out)
{
    int64_t t = i + pad - k * dil;
    if (t < 0)
        return -1;
    if (stride != 1) {   /* (the common stride 1 skips the 64-bit division) */
        if (t % stride)
            return -1;
        t /= stride;
    }
    return t < out ? t : -1;
}

#define DTL_CU_X_AT(g, b, c_, y_, x_) ((((b) * (g)->c + (c_)) * (g)->h + (y_)) * (g)->w + (x_))
#define DTL_CU_Y_AT(g, b, o_, y_, x_) ((((b) * (g)->o + (o_)) * (g)->oh + (y_)) * (g)->ow + (x_))
#define DTL_CU_W_AT(g, o_, c_, y_, x_) ((((o_) * (g)->cg + (c_)) * (g)->kh + (y_)) * (g)->kw + (x_))

/* conv2d: y[b, o, oy, ox] = sum over c < cg, ky, kx of x[b, c0 + c, iy, ix] w[o, c, ky, kx]. */
DTL_CU_HD double dtl_cu_w_conv_at(const dtl_cu_win *g, const void *x, const void *wt, int64_t i)
{
    int64_t ox = i % g->ow, oy = i / g->ow % g->oh, o = i / (g->ow * g->oh) % g->o;
    int64_t b = i / (g->ow * g->oh * g->o), c0 = o / g->og * g->cg;
    double acc = 0;
    for (int64_t c = 0; c < g->cg; c++)
        for (int64_t ky = 0; ky < g->kh; ky++) {
            int64_t iy = oy * g->sh - g->ph + ky * g->dh;
            if (iy < 0 || iy >= g->h)
                continue;
            for (int64_t kx = 0; kx < g->kw; kx++) {
                int64_t ix = ox * g->sw - g->pw + kx * g->dw;
                if (ix >= 0 && ix < g->w)
                    acc += dtl_cu_w_ld(x, DTL_CU_X_AT(g, b, c0 + c, iy, ix), g->f64) *
                           dtl_cu_w_ld(wt, DTL_CU_W_AT(g, o, c, ky, kx), g->f64);
            }
        }
    return acc;
}

/* conv2d_bwd_x: dx[b, ci, iy, ix] = sum over o of ci's group, ky, kx of dy[b, o, oy, ox]
 * w[o, ci % cg, ky, kx] where tap (ky, kx) of output (oy, ox) reads (iy, ix). */
DTL_CU_HD double dtl_cu_w_conv_bwd_x_at(const dtl_cu_win *g, const void *dy, const void *wt,
                                        int64_t i)
{
    int64_t ix = i % g->w, iy = i / g->w % g->h, ci = i / (g->w * g->h) % g->c;
    int64_t b = i / (g->w * g->h * g->c), grp = ci / g->cg, c = ci % g->cg;
    double acc = 0;
    for (int64_t o = grp * g->og; o < (grp + 1) * g->og; o++)
        for (int64_t ky = 0; ky < g->kh; ky++) {
            int64_t oy = dtl_cu_w_tap_src(iy, ky, g->ph, g->dh, g->sh, g->oh);
            if (oy < 0)
                continue;
            for (int64_t kx = 0; kx < g->kw; kx++) {
                int64_t ox = dtl_cu_w_tap_src(ix, kx, g->pw, g->dw, g->sw, g->ow);
                if (ox >= 0)
                    acc += dtl_cu_w_ld(dy, DTL_CU_Y_AT(g, b, o, oy, ox), g->f64) *
                           dtl_cu_w_ld(wt, DTL_CU_W_AT(g, o, c, ky, kx), g->f64);
            }
        }
    return acc;
}

/* conv2d_bwd_w, part t of nparts: the sum over positions q = t, t + nparts, … < n oh ow
 * ((b, oy, ox) row-major) of dy[b, o, oy, ox] x[b, c0 + c, iy, ix]. */
DTL_CU_HD double dtl_cu_w_conv_bwd_w_part(const dtl_cu_win *g, const void *x, const void *dy,
                                          int64_t i, int64_t t, int64_t nparts)
{
    int64_t kx = i % g->kw, ky = i / g->kw % g->kh, c = i / (g->kw * g->kh) % g->cg;
    int64_t o = i / (g->kw * g->kh * g->cg), c0 = o / g->og * g->cg;
    int64_t npos = g->n * g->oh * g->ow;
    /* q as (b, oy, ox), advanced by nparts in mixed radix (no division in the loop) */
    int64_t ox = t % g->ow, oy = t / g->ow % g->oh, b = t / (g->ow * g->oh);
    int64_t sx = nparts % g->ow, sy = nparts / g->ow % g->oh, sb = nparts / (g->ow * g->oh);
    double acc = 0;
    for (int64_t q = t; q < npos; q += nparts) {
        int64_t iy = oy * g->sh - g->ph + ky * g->dh, ix = ox * g->sw - g->pw + kx * g->dw;
        if (iy >= 0 && iy < g->h && ix >= 0 && ix < g->w)
            acc += dtl_cu_w_ld(dy, DTL_CU_Y_AT(g, b, o, oy, ox), g->f64) *
                   dtl_cu_w_ld(x, DTL_CU_X_AT(g, b, c0 + c, iy, ix), g->f64);
        ox += sx, oy += sy, b += sb;
        if (ox >= g->ow)
            ox -= g->ow, oy++;
        if (oy >= g->oh)
            oy -= g->oh, b++;
    }
    return acc;
}

/* The offset in plane p (of x, h w elements) of window (oy, ox)'s maximum: its first NaN,
 * else its first largest element; padding is skipped (a window always holds an element of
 * x: pad < kernel). */
DTL_CU_HD int64_t dtl_cu_w_argmax(const dtl_cu_win *g, const void *x, int64_t p, int64_t oy,
                                  int64_t ox)
{
    int64_t best = -1, base = p * g->h * g->w;
    double bv = 0;
    for (int64_t ky = 0; ky < g->kh; ky++) {
        int64_t iy = oy * g->sh - g->ph + ky;
        if (iy < 0 || iy >= g->h)
            continue;
        for (int64_t kx = 0; kx < g->kw; kx++) {
            int64_t ix = ox * g->sw - g->pw + kx, at = iy * g->w + ix;
            if (ix < 0 || ix >= g->w)
                continue;
            double v = dtl_cu_w_ld(x, base + at, g->f64);
            if (best < 0 || (!isnan(bv) && (isnan(v) || v > bv))) {
                best = at;
                bv = v;
            }
        }
    }
    return best;
}

DTL_CU_HD double dtl_cu_w_maxpool_at(const dtl_cu_win *g, const void *x, int64_t i)
{
    int64_t ox = i % g->ow, oy = i / g->ow % g->oh, p = i / (g->ow * g->oh);
    return dtl_cu_w_ld(x, p * g->h * g->w + dtl_cu_w_argmax(g, x, p, oy, ox), g->f64);
}

/* maxpool2d_bwd: dx[p, iy, ix] = the sum, in the element type and ascending output order,
 * of dy[p, oy, ox] over the windows (oy, ox) whose maximum is (iy, ix). A larger ky (kx)
 * is a smaller oy (ox), so the taps run backwards. */
DTL_CU_HD double dtl_cu_w_maxpool_bwd_at(const dtl_cu_win *g, const void *x, const void *dy,
                                         int64_t i)
{
    int64_t ix = i % g->w, iy = i / g->w % g->h, p = i / (g->w * g->h), at = iy * g->w + ix;
    double accd = 0;
    float accf = 0;
    for (int64_t ky = g->kh - 1; ky >= 0; ky--) {
        int64_t oy = dtl_cu_w_tap_src(iy, ky, g->ph, 1, g->sh, g->oh);
        if (oy < 0)
            continue;
        for (int64_t kx = g->kw - 1; kx >= 0; kx--) {
            int64_t ox = dtl_cu_w_tap_src(ix, kx, g->pw, 1, g->sw, g->ow);
            if (ox < 0 || dtl_cu_w_argmax(g, x, p, oy, ox) != at)
                continue;
            int64_t o = (p * g->oh + oy) * g->ow + ox;
            if (g->f64)
                accd += ((const double *)dy)[o];
            else
                accf += ((const float *)dy)[o];
        }
    }
    return g->f64 ? accd : (double)accf;
}

/* avgpool's divisor for window (oy, ox). */
DTL_CU_HD double dtl_cu_w_avg_div(const dtl_cu_win *g, int64_t oy, int64_t ox)
{
    if (g->count_pad)
        return (double)(g->kh * g->kw);
    int64_t y0 = oy * g->sh - g->ph, x0 = ox * g->sw - g->pw;
    int64_t y1 = y0 + g->kh < g->h ? y0 + g->kh : g->h;
    int64_t x1 = x0 + g->kw < g->w ? x0 + g->kw : g->w;
    y0 = y0 > 0 ? y0 : 0;
    x0 = x0 > 0 ? x0 : 0;
    return (double)((y1 - y0) * (x1 - x0));
}

DTL_CU_HD double dtl_cu_w_avgpool_at(const dtl_cu_win *g, const void *x, int64_t i)
{
    int64_t ox = i % g->ow, oy = i / g->ow % g->oh, p = i / (g->ow * g->oh);
    double acc = 0;
    for (int64_t ky = 0; ky < g->kh; ky++) {
        int64_t iy = oy * g->sh - g->ph + ky;
        if (iy < 0 || iy >= g->h)
            continue;
        for (int64_t kx = 0; kx < g->kw; kx++) {
            int64_t ix = ox * g->sw - g->pw + kx;
            if (ix >= 0 && ix < g->w)
                acc += dtl_cu_w_ld(x, (p * g->h + iy) * g->w + ix, g->f64);
        }
    }
    return acc / dtl_cu_w_avg_div(g, oy, ox);
}

DTL_CU_HD double dtl_cu_w_avgpool_bwd_at(const dtl_cu_win *g, const void *dy, int64_t i)
{
    int64_t ix = i % g->w, iy = i / g->w % g->h, p = i / (g->w * g->h);
    double acc = 0;
    for (int64_t ky = 0; ky < g->kh; ky++) {
        int64_t oy = dtl_cu_w_tap_src(iy, ky, g->ph, 1, g->sh, g->oh);
        if (oy < 0)
            continue;
        for (int64_t kx = 0; kx < g->kw; kx++) {
            int64_t ox = dtl_cu_w_tap_src(ix, kx, g->pw, 1, g->sw, g->ow);
            if (ox >= 0)
                acc += dtl_cu_w_ld(dy, (p * g->oh + oy) * g->ow + ox, g->f64) /
                       dtl_cu_w_avg_div(g, oy, ox);
        }
    }
    return acc;
}

/* Element i of op's result (conv2d_bwd_w: the whole sum, one part), a: the op's first
 * operand, b: its second (or NULL). */
DTL_CU_HD double dtl_cu_w_at(const dtl_cu_win *g, dtl_cu_wop op, const void *a, const void *b,
                             int64_t i)
{
    switch (op) {
    case DTL_CU_W_CONV: return dtl_cu_w_conv_at(g, a, b, i);
    case DTL_CU_W_CONV_BWD_X: return dtl_cu_w_conv_bwd_x_at(g, a, b, i);
    case DTL_CU_W_CONV_BWD_W: return dtl_cu_w_conv_bwd_w_part(g, a, b, i, 0, 1);
    case DTL_CU_W_MAXPOOL: return dtl_cu_w_maxpool_at(g, a, i);
    case DTL_CU_W_MAXPOOL_BWD: return dtl_cu_w_maxpool_bwd_at(g, a, b, i);
    case DTL_CU_W_AVGPOOL: return dtl_cu_w_avgpool_at(g, a, i);
    case DTL_CU_W_AVGPOOL_BWD: return dtl_cu_w_avgpool_bwd_at(g, a, i);
    default: return 0;
    }
}

#endif
