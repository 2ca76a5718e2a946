/* compiler/optim.c — optimizer steps and learning-rate schedules as graph nodes.
 *
 * Design: everything is appended in three parts: the scalars shared by all params (t from the
 * "step" input, the scheduled learning rate, Adam's bias corrections, the clipping scale),
 * computed in f64 and cast once per param dtype; then, per param, the elementwise update in
 * the param's dtype, written in the same order of operations as PyTorch 1.13's single-tensor
 * code paths, so that a cross-check agrees to rounding; and the outputs. The configuration is
 * validated before the first node is appended. dtl_opt_lr_at mirrors the in-graph schedule
 * in C, in the same order of operations (tests compare the two).
 */
#include "optim.h"

#include <math.h>
#include <string.h>

#include "nnops.h"

#define CLIP_EPS 1e-6   /* torch.nn.utils.clip_grad_norm_ */
#define PI 3.14159265358979323846

void dtl_opt_defaults(dtl_opt_cfg *cfg, dtl_opt_kind kind)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = kind;
    cfg->lr = kind == DTL_OPT_SGD ? 0.01 : 1e-3;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->eps = 1e-8;
    cfg->weight_decay = kind == DTL_OPT_ADAMW ? 0.01 : 0;
    cfg->sched.kind = DTL_SCHED_CONSTANT;
    cfg->sched.gamma = 0.1;
    cfg->sched.step_size = 1;
    cfg->sched.total = 1;
}

static bool in_unit(double x)   /* [0, 1) */
{
    return x >= 0 && x < 1;
}

static bool finite_nonneg(double x)
{
    return isfinite(x) && x >= 0;
}

static bool check_cfg(const dtl_opt_cfg *c, dtl_err *err)
{
#define BAD(...) dtl_err_set(err, DTL_ERR_USAGE, "optimizer: " __VA_ARGS__)
    if ((unsigned)c->kind > DTL_OPT_ADAMW)
        return BAD("unknown kind %d", (int)c->kind);
    if (!finite_nonneg(c->lr))
        return BAD("lr = %g must be a finite number >= 0", c->lr);
    if (!finite_nonneg(c->weight_decay))
        return BAD("weight_decay = %g must be a finite number >= 0", c->weight_decay);
    if (!finite_nonneg(c->clip_norm))
        return BAD("clip_norm = %g must be a finite number >= 0 (0: off)", c->clip_norm);
    if (c->kind == DTL_OPT_SGD) {
        if (!finite_nonneg(c->momentum))
            return BAD("momentum = %g must be a finite number >= 0", c->momentum);
        if (!(c->dampening >= 0 && c->dampening <= 1))
            return BAD("dampening = %g must be in [0, 1]", c->dampening);
        if (c->nesterov && (c->momentum <= 0 || c->dampening != 0))
            return BAD("nesterov momentum requires momentum > 0 and dampening 0");
    } else {
        if (!in_unit(c->beta1) || !in_unit(c->beta2))
            return BAD("betas (%g, %g) must be in [0, 1)", c->beta1, c->beta2);
        if (!finite_nonneg(c->eps))
            return BAD("eps = %g must be a finite number >= 0", c->eps);
    }
    const dtl_sched *s = &c->sched;
    switch (s->kind) {
    case DTL_SCHED_CONSTANT:
        break;
    case DTL_SCHED_STEP:
        if (s->step_size < 1)
            return BAD("step schedule: step_size = %lld must be >= 1", (long long)s->step_size);
        if (!(isfinite(s->gamma) && s->gamma > 0))
            return BAD("step schedule: gamma = %g must be a finite number > 0", s->gamma);
        break;
    case DTL_SCHED_COSINE:
        if (s->total < 1 && !s->total_from_run)
            return BAD("cosine schedule: total = %lld must be >= 1", (long long)s->total);
        if (!finite_nonneg(s->floor))
            return BAD("cosine schedule: floor = %g must be a finite number >= 0", s->floor);
        break;
    default:
        return BAD("unknown schedule kind %d", (int)s->kind);
    }
    if (s->warmup < 0)
        return BAD("warmup = %lld must be >= 0", (long long)s->warmup);
    return true;
#undef BAD
}

/* lr of the schedule (without warmup) after e updates. */
static double sched_lr(const dtl_opt_cfg *c, double e)
{
    const dtl_sched *s = &c->sched;
    switch (s->kind) {
    case DTL_SCHED_STEP:
        return c->lr * pow(s->gamma, floor(e / (double)s->step_size));
    case DTL_SCHED_COSINE: {
        double tot = (double)s->total;
        double k = e < tot ? e : tot;
        return s->floor + (c->lr - s->floor) * ((1 + cos(k * (PI / tot))) * 0.5);
    }
    default:
        return c->lr;
    }
}

int64_t dtl_sched_run_total(const dtl_sched *s, int64_t run_updates)
{
    int64_t w = s->warmup > 0 ? s->warmup : 0;
    return run_updates - w > 1 ? run_updates - w : 1;
}

double dtl_opt_lr_at(const dtl_opt_cfg *cfg, int64_t t)
{
    int64_t w = cfg->sched.warmup;
    if (w > 0 && t <= w)
        return (double)t * (cfg->lr / (double)w);
    return sched_lr(cfg, (double)(t - 1 - (w > 0 ? w : 0)));
}

/* ---- graph building ----------------------------------------------------------------------- */

static dtl_val f64(dtl_graph *g, double v)
{
    return dtl_g_scalar(g, DTL_DTYPE_F64, v);
}

static dtl_val bin(dtl_graph *g, dtl_op op, dtl_val a, dtl_val b)
{
    return dtl_g_binary(g, op, a, b);
}

/* The graph's scalar INPUT named name (found, else made i64 []). */
static dtl_val scalar_input(dtl_graph *g, const char *name)
{
    for (uint32_t v = 0; v < g->nnodes; v++)
        if (g->nodes[v].op == DTL_OP_INPUT && g->nodes[v].name &&
            strcmp(g->nodes[v].name, name) == 0)
            return v;
    const int64_t none[1] = {0};
    return dtl_g_input(g, name, DTL_DTYPE_I64, 0, none);
}

/* A cosine's length: the constant total, or max(total_steps - warmup, 1) from the input. */
static dtl_val cosine_total(dtl_graph *g, const dtl_sched *s)
{
    if (!s->total_from_run)
        return f64(g, (double)s->total);
    dtl_val run = scalar_input(g, "total_steps");
    if (g->nodes[run].dtype != DTL_DTYPE_F64)
        run = dtl_g_cast(g, run, DTL_DTYPE_F64);
    double w = s->warmup > 0 ? (double)s->warmup : 0;
    if (w > 0)
        run = bin(g, DTL_OP_SUB, run, f64(g, w));
    return bin(g, DTL_OP_MAX, run, f64(g, 1));
}

/* The in-graph twin of sched_lr, with e = t - 1 - offset (t: the f64 scalar node). */
static dtl_val sched_lr_node(dtl_graph *g, const dtl_opt_cfg *c, dtl_val t, int64_t offset)
{
    const dtl_sched *s = &c->sched;
    if (s->kind == DTL_SCHED_CONSTANT)
        return f64(g, c->lr);
    dtl_val e = bin(g, DTL_OP_SUB, t, f64(g, 1 + (double)offset));
    if (s->kind == DTL_SCHED_STEP) {
        /* floor(e / k) by a cast to i64 (truncation), exact for e >= 0; e < 0 only in the
         * warmup's unselected branch. */
        dtl_val q = bin(g, DTL_OP_DIV, e, f64(g, (double)s->step_size));
        q = dtl_g_cast(g, dtl_g_cast(g, q, DTL_DTYPE_I64), DTL_DTYPE_F64);
        dtl_val decay = bin(g, DTL_OP_POW, f64(g, s->gamma), q);   /* before lr: fixed order */
        return bin(g, DTL_OP_MUL, f64(g, c->lr), decay);
    }
    /* cosine */
    dtl_val tot = cosine_total(g, s);
    dtl_val k = bin(g, DTL_OP_MIN, e, tot);
    dtl_val ang = bin(g, DTL_OP_MUL, k, !s->total_from_run ? f64(g, PI / (double)s->total)
                                                           : bin(g, DTL_OP_DIV, f64(g, PI), tot));
    /* One node per statement, in the order the goldens fix (C leaves argument order open). */
    dtl_val c05 = f64(g, 0.5);
    dtl_val cosa = dtl_g_unary(g, DTL_OP_COS, ang);
    dtl_val half = bin(g, DTL_OP_MUL, bin(g, DTL_OP_ADD, f64(g, 1), cosa), c05);
    dtl_val span = bin(g, DTL_OP_MUL, f64(g, c->lr - s->floor), half);
    return bin(g, DTL_OP_ADD, f64(g, s->floor), span);
}

static dtl_val lr_node(dtl_graph *g, const dtl_opt_cfg *c, dtl_val t)
{
    int64_t w = c->sched.warmup;
    if (w <= 0)
        return sched_lr_node(g, c, t, 0);
    dtl_val after = sched_lr_node(g, c, t, w);
    dtl_val warm = bin(g, DTL_OP_MUL, t, f64(g, c->lr / (double)w));
    return dtl_g_where(g, bin(g, DTL_OP_LE, t, f64(g, (double)w)), warm, after);
}

/* f64 scalars cast once per dtype. */
typedef struct scalar_cache {
    dtl_val v64;
    dtl_val by_dtype[DTL_DTYPE_COUNT];
} scalar_cache;

static void cache_init(scalar_cache *c, dtl_val v64)
{
    c->v64 = v64;
    for (int i = 0; i < DTL_DTYPE_COUNT; i++)
        c->by_dtype[i] = DTL_VAL_NONE;
}

static dtl_val cache_get(dtl_graph *g, scalar_cache *c, dtl_dtype dt)
{
    if (dt == DTL_DTYPE_F64)
        return c->v64;
    if (c->by_dtype[dt] == DTL_VAL_NONE)
        c->by_dtype[dt] = dtl_g_cast(g, c->v64, dt);
    return c->by_dtype[dt];
}

static dtl_val sc(dtl_graph *g, dtl_dtype dt, double v)
{
    return dtl_g_scalar(g, dt, v);
}

static bool same_type(const dtl_node *a, const dtl_node *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank)
        return false;
    for (uint32_t i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

static bool name_taken(const dtl_graph *g, const char *name)
{
    for (uint32_t v = 0; v < g->nnodes; v++) {
        const dtl_node *n = &g->nodes[v];
        if ((n->op == DTL_OP_INPUT || n->op == DTL_OP_PARAM || n->op == DTL_OP_STATE) &&
            n->name && strcmp(n->name, name) == 0)
            return true;
    }
    for (uint32_t k = 0; k < g->nouts; k++)
        if (strcmp(g->outs[k].name, name) == 0)
            return true;
    return false;
}

static bool check_params(const dtl_graph *g, const dtl_opt_cfg *c, const dtl_val *params,
                         const dtl_val *grads, uint32_t n, dtl_err *err)
{
    char name[512];
    for (uint32_t i = 0; i < n; i++) {
        if (params[i] >= g->nnodes || g->nodes[params[i]].op != DTL_OP_PARAM ||
            !dtl_dtype_is_float(g->nodes[params[i]].dtype))
            return dtl_err_set(err, DTL_ERR_USAGE, "optimizer: params[%u] (%%%u) is not a "
                               "float param", i, params[i]);
        const dtl_node *p = &g->nodes[params[i]];
        if (grads[i] >= g->nnodes || !same_type(p, &g->nodes[grads[i]]))
            return dtl_err_set(err, DTL_ERR_USAGE, "optimizer: the gradient %%%u of \"%s\" is "
                               "not of the param's dtype and shape", grads[i], p->name);
        for (uint32_t j = 0; j < i; j++)
            if (params[j] == params[i])
                return dtl_err_set(err, DTL_ERR_USAGE, "optimizer: \"%s\" listed twice",
                                   p->name);
        for (uint32_t k = 0; k < g->nouts; k++)
            if (g->outs[k].target == params[i] || strcmp(g->outs[k].name, p->name) == 0)
                return dtl_err_set(err, DTL_ERR_USAGE, "optimizer: \"%s\" has an update "
                                   "already", p->name);
        bool has_m = c->kind != DTL_OPT_SGD || c->momentum != 0;
        bool has_v = c->kind != DTL_OPT_SGD;
        for (int k = 0; k < 2; k++) {
            if (!(k == 0 ? has_m : has_v))
                continue;
            snprintf(name, sizeof name, "%s.%c", p->name, k == 0 ? 'm' : 'v');
            if (name_taken(g, name))
                return dtl_err_set(err, DTL_ERR_USAGE, "optimizer: the state \"%s\" exists "
                                   "already", name);
        }
    }
    return true;
}

/* An existing input "step" (or "total_steps") must be a number (any int or float dtype) of
 * rank 0. */
static bool check_step(const dtl_graph *g, const char *name, dtl_err *err)
{
    for (uint32_t v = 0; v < g->nnodes; v++) {
        const dtl_node *n = &g->nodes[v];
        if (n->op != DTL_OP_INPUT || !n->name || strcmp(n->name, name) != 0)
            continue;
        if (n->rank != 0 || n->dtype == DTL_DTYPE_BOOL)
            return dtl_err_set(err, DTL_ERR_USAGE, "optimizer: the input \"%s\" is %s of "
                               "rank %u, not a scalar number", name, dtl_dtype_name(n->dtype),
                               n->rank);
    }
    return true;
}

static dtl_val new_state(dtl_graph *g, const dtl_node *p, const char *suffix)
{
    char *name = dtl_arena_printf(&g->arena, "%s.%s", p->name, suffix);
    return dtl_g_state(g, name, p->dtype, p->rank, p->shape);
}

bool dtl_opt_build(dtl_graph *g, const dtl_opt_cfg *cfg, const dtl_val *params,
                   const dtl_val *grads, uint32_t n, dtl_opt_info *info, dtl_err *err)
{
    if (!check_cfg(cfg, err) || !check_params(g, cfg, params, grads, n, err) ||
        !check_step(g, "step", err) || !check_step(g, "total_steps", err))
        return false;
    dtl_role saved_role = g->role;
    g->role = DTL_ROLE_UPDATE;

    /* Shared scalars, f64. */
    dtl_val step = dtl_nn_step(g);
    dtl_val t = g->nodes[step].dtype == DTL_DTYPE_F64 ? step : dtl_g_cast(g, step, DTL_DTYPE_F64);
    dtl_val lr64 = lr_node(g, cfg, t);
    scalar_cache lr, scale, step_size, bc2_sqrt, decay, mom_c;
    cache_init(&lr, lr64);
    cache_init(&scale, DTL_VAL_NONE);   /* each set below when the configuration uses it */
    cache_init(&step_size, DTL_VAL_NONE);
    cache_init(&bc2_sqrt, DTL_VAL_NONE);
    cache_init(&decay, DTL_VAL_NONE);
    cache_init(&mom_c, DTL_VAL_NONE);
    dtl_val norm = DTL_VAL_NONE;
    if (cfg->clip_norm > 0) {
        dtl_val sumsq = DTL_VAL_NONE;
        for (uint32_t i = 0; i < n; i++) {
            const dtl_node *gn = &g->nodes[grads[i]];
            uint32_t rank = gn->rank;
            dtl_val sq = bin(g, DTL_OP_MUL, grads[i], grads[i]);
            dtl_val s = rank ? dtl_g_reduce(g, DTL_OP_SUM, sq, (1u << rank) - 1u, false) : sq;
            if (g->nodes[s].dtype != DTL_DTYPE_F64)
                s = dtl_g_cast(g, s, DTL_DTYPE_F64);
            sumsq = sumsq == DTL_VAL_NONE ? s : bin(g, DTL_OP_ADD, sumsq, s);
        }
        norm = dtl_g_unary(g, DTL_OP_SQRT, sumsq == DTL_VAL_NONE ? f64(g, 0) : sumsq);
        /* Graph nodes are made one per statement here and below, in a fixed order: C leaves
         * the order of evaluation of a call's arguments unspecified (gcc and clang differ). */
        dtl_val den = bin(g, DTL_OP_ADD, norm, f64(g, CLIP_EPS));
        dtl_val coef = bin(g, DTL_OP_DIV, f64(g, cfg->clip_norm), den);
        cache_init(&scale, bin(g, DTL_OP_MIN, coef, f64(g, 1)));
    }
    if (cfg->kind != DTL_OPT_SGD) {
        /* step_size = lr / (1 - b1^t); bias_correction2_sqrt = sqrt(1 - b2^t) */
        dtl_val p1 = bin(g, DTL_OP_POW, f64(g, cfg->beta1), t);
        dtl_val bc1 = bin(g, DTL_OP_SUB, f64(g, 1), p1);
        dtl_val p2 = bin(g, DTL_OP_POW, f64(g, cfg->beta2), t);
        dtl_val bc2 = bin(g, DTL_OP_SUB, f64(g, 1), p2);
        cache_init(&step_size, bin(g, DTL_OP_DIV, lr64, bc1));
        cache_init(&bc2_sqrt, dtl_g_unary(g, DTL_OP_SQRT, bc2));
    }
    if (cfg->kind == DTL_OPT_ADAMW && cfg->weight_decay != 0) {   /* 1 - lr wd */
        dtl_val lrwd = bin(g, DTL_OP_MUL, lr64, f64(g, cfg->weight_decay));
        cache_init(&decay, bin(g, DTL_OP_SUB, f64(g, 1), lrwd));
    }
    if (cfg->kind == DTL_OPT_SGD && cfg->momentum != 0) {
        /* PyTorch starts the buffer as a copy of the first gradient: the new gradient's
         * coefficient is 1 at t = 1 and 1 - dampening after (the buffer is 0 before). */
        dtl_val first = bin(g, DTL_OP_LE, t, f64(g, 1));
        dtl_val damp = f64(g, 1 - cfg->dampening);
        cache_init(&mom_c, dtl_g_where(g, first, f64(g, 1), damp));
    }

    for (uint32_t i = 0; i < n; i++) {
        dtl_node p = g->nodes[params[i]];
        dtl_dtype dt = p.dtype;
        dtl_val pv = params[i], gr = grads[i];
        if (cfg->clip_norm > 0)
            gr = bin(g, DTL_OP_MUL, gr, cache_get(g, &scale, dt));
        if (cfg->weight_decay != 0 && cfg->kind != DTL_OPT_ADAMW)   /* grad.add(param, alpha=wd) */
            gr = bin(g, DTL_OP_ADD, gr, bin(g, DTL_OP_MUL, pv, sc(g, dt, cfg->weight_decay)));
        dtl_val np, m = DTL_VAL_NONE, nm = DTL_VAL_NONE, v = DTL_VAL_NONE, nv = DTL_VAL_NONE;
        if (cfg->kind == DTL_OPT_SGD) {
            dtl_val d = gr;
            if (cfg->momentum != 0) {
                /* buf.mul_(momentum).add_(d_p, alpha=1 - dampening) */
                m = new_state(g, &p, "m");
                dtl_val gm = bin(g, DTL_OP_MUL, gr, cache_get(g, &mom_c, dt));
                nm = bin(g, DTL_OP_ADD, bin(g, DTL_OP_MUL, m, sc(g, dt, cfg->momentum)), gm);
                d = cfg->nesterov ? bin(g, DTL_OP_ADD, gr, bin(g, DTL_OP_MUL, nm, sc(g, dt, cfg->momentum)))
                                  : nm;
            }
            /* param.add_(d_p, alpha=-lr) */
            np = bin(g, DTL_OP_SUB, pv, bin(g, DTL_OP_MUL, d, cache_get(g, &lr, dt)));
        } else {
            dtl_val p0 = pv;
            if (cfg->kind == DTL_OPT_ADAMW && cfg->weight_decay != 0)
                /* param.mul_(1 - lr * weight_decay) */
                p0 = bin(g, DTL_OP_MUL, pv, cache_get(g, &decay, dt));
            m = new_state(g, &p, "m");
            v = new_state(g, &p, "v");
            /* exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1) */
            dtl_val g1 = bin(g, DTL_OP_MUL, gr, sc(g, dt, 1 - cfg->beta1));
            nm = bin(g, DTL_OP_ADD, bin(g, DTL_OP_MUL, m, sc(g, dt, cfg->beta1)), g1);
            /* exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2) */
            dtl_val g2 = bin(g, DTL_OP_MUL, bin(g, DTL_OP_MUL, gr, sc(g, dt, 1 - cfg->beta2)), gr);
            nv = bin(g, DTL_OP_ADD, bin(g, DTL_OP_MUL, v, sc(g, dt, cfg->beta2)), g2);
            /* denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
             * param.addcdiv_(exp_avg, denom, value=-step_size) */
            dtl_val eps = sc(g, dt, cfg->eps);
            dtl_val bc2s = cache_get(g, &bc2_sqrt, dt);
            dtl_val denom = bin(g, DTL_OP_ADD, bin(g, DTL_OP_DIV, dtl_g_unary(g, DTL_OP_SQRT, nv), bc2s),
                                eps);
            dtl_val upd = bin(g, DTL_OP_DIV, bin(g, DTL_OP_MUL, nm, cache_get(g, &step_size, dt)), denom);
            np = bin(g, DTL_OP_SUB, p0, upd);
        }
        dtl_g_output(g, DTL_OUT_PARAM, p.name, np, pv);
        if (m != DTL_VAL_NONE)
            dtl_g_output(g, DTL_OUT_STATE, g->nodes[m].name, nm, m);
        if (v != DTL_VAL_NONE)
            dtl_g_output(g, DTL_OUT_STATE, g->nodes[v].name, nv, v);
    }
    if (info) {
        info->lr = lr64;
        info->grad_norm = norm;
    }
    g->role = saved_role;
    return true;
}
