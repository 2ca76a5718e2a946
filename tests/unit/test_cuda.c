/* tests/unit/test_cuda.c — the CUDA backend against the reference backend.
 *
 * Without a GPU (or in a build without CUDA) only the host-side memory plan is checked
 * (kernels/cuda/cuda_plan.h: regions, alignment, no two live values sharing bytes), then the
 * test exits 77 (skip) saying why. With a GPU: every primitive op, forward and (for the
 * differentiable ones) gradient through autodiff, on fresh random inputs (the seed is printed;
 * DTL_TEST_SEED=N repeats a run), for every dtype the reference backend supports, CUDA vs ref:
 * floats within 1e-5 relative (plus 1e-5 of the tensor's largest magnitude, for sums whose
 * order differs), f64 within 1e-12, integers, bools and rng_uniform bit for bit. The plan's
 * memory is poisoned first (DTL_CUDA_POISON: all bits set), so an element a kernel forgets to
 * write shows up as NaN or -1. Each plan runs twice, so the second, captured CUDA Graph is
 * compared too. Then the example MLP (examples/mnist_mlp.dtl, batch 32) trains for 40 steps
 * on random data on both backends: losses agree step by step and go down, and the store's
 * device mirror syncs back to the same parameters.
 * The backend is the plugin, libdtlcuda.so, loaded as dtlc loads it (kernels/cuda/cuda.h):
 * in a build with CUDA, a plugin that cannot be found or loaded is a failure, not a skip;
 * its ABI check is tested by calling its entry with another build's ABI string. */
#include "../../compiler/autodiff.h"
#include "../../compiler/graph.h"
#include "../../compiler/lower.h"
#include "../../lang/check.h"
#include "../../lang/ctx.h"
#include "../../runtime/exec.h"
#include "unit.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef HAVE_CUDA
#include <dlfcn.h>

#include "../../kernels/cuda/cuda.h"
#include "../../kernels/cuda/cuda_plan.h"
#include "../../kernels/cuda/cuda_plugin.h"
#endif

#define F32 DTL_DTYPE_F32
#define F64 DTL_DTYPE_F64
#define I32 DTL_DTYPE_I32
#define I64 DTL_DTYPE_I64
#define BOOL DTL_DTYPE_BOOL

#ifndef HAVE_CUDA
int main(void)
{
    (void)check_failures, (void)check_count;
    printf("SKIP: this build has no CUDA backend (./configure --with-cuda on a machine with "
           "the CUDA toolkit)\n");
    return 77;
}
#else

/* The backend under test: the plugin's (main loads it first). */
static const dtl_backend *cuda_be;

/* ---- the MLP example's graphs (planner test and training test) ---- */

typedef struct mlp {
    dtl_ctx ctx;
    dtl_lowered low;
    bool ok;
} mlp;

static bool mlp_load(mlp *m, int64_t batch)
{
    memset(m, 0, sizeof *m);
    dtl_ctx_init(&m->ctx);
    dtl_ctx_add_default_paths(&m->ctx);
    dtl_module *mod = dtl_check_path(&m->ctx, DTL_SRC_STDLIB_DIR "/../examples/mnist_mlp.dtl");
    if (!mod || dtl_diag_failed(&m->ctx.diags))
        return false;
    const dtl_train *t = dtl_lower_find_train(mod, NULL);
    dtl_lower_opts o = {.batch = batch};
    m->ok = t && dtl_lower_train(&m->ctx, t, &o, &m->low);
    return m->ok;
}

static void mlp_free(mlp *m)
{
    if (m->ok)
        dtl_lowered_free(&m->low);
    dtl_ctx_free(&m->ctx);
}

/* ---- random numbers (the test's own: splitmix64) ---- */

static uint64_t rng_state;

static uint64_t rnd_u64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rnd_uniform(double lo, double hi)
{
    return lo + (hi - lo) * ((double)(rnd_u64() >> 11) * (1.0 / 9007199254740992.0));
}

static int64_t numel_of(uint32_t rank, const int64_t *shape)
{
    int64_t k = 1;
    for (uint32_t i = 0; i < rank; i++)
        k *= shape[i];
    return k;
}

static void put(dtl_dtype dt, void *p, int64_t i, double v)
{
    switch (dt) {
    case F32: ((float *)p)[i] = (float)v; break;
    case F64: ((double *)p)[i] = v; break;
    case I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case I64: ((int64_t *)p)[i] = (int64_t)v; break;
    case BOOL: ((uint8_t *)p)[i] = v != 0; break;
    default: break;
    }
}

static double get(dtl_dtype dt, const void *p, int64_t i)
{
    switch (dt) {
    case F32: return ((const float *)p)[i];
    case F64: return ((const double *)p)[i];
    case I32: return ((const int32_t *)p)[i];
    case I64: return (double)((const int64_t *)p)[i];
    case BOOL: return ((const uint8_t *)p)[i];
    default: return 0;
    }
}

/* Random data of (dt, shape) in the graph's arena: floats uniform in [lo, hi), integers
 * uniform in [lo, hi] (whole numbers), bools half true. */
static void *rnd_data(dtl_graph *g, dtl_dtype dt, uint32_t rank, const int64_t *shape,
                      double lo, double hi)
{
    int64_t n = numel_of(rank, shape);
    void *p = dtl_arena_alloc(&g->arena, (size_t)(n ? n : 1) * dtl_dtype_size(dt));
    for (int64_t i = 0; i < n; i++) {
        double v = dt == BOOL ? (double)(rnd_u64() & 1)
                   : dtl_dtype_is_int(dt) ? floor(rnd_uniform(lo, hi + 1))
                                          : rnd_uniform(lo, hi);
        if (dt == I32)   /* keep the conversion defined */
            v = v < -2147483648.0 ? -2147483648.0 : v > 2147483647.0 ? 2147483647.0 : v;
        put(dt, p, i, v);
    }
    return p;
}

/* A test graph: its inputs' bindings and the params to differentiate. */
typedef struct tg {
    dtl_graph g;
    dtl_binding in[8];
    size_t nin;
    dtl_val params[8];
    uint32_t nparams;
} tg;

static void tg_init(tg *t)
{
    memset(t, 0, sizeof *t);
    dtl_graph_init(&t->g);
}

static dtl_val tg_input(tg *t, dtl_dtype dt, uint32_t rank, const int64_t *shape, double lo,
                        double hi)
{
    char *name = dtl_arena_printf(&t->g.arena, "in%zu", t->nin);
    dtl_binding *b = &t->in[t->nin++];
    b->name = name;
    b->data = rnd_data(&t->g, dt, rank, shape, lo, hi);
    b->dtype = dt;
    b->rank = rank;
    memcpy(b->shape, shape, rank * sizeof *shape);
    return dtl_g_input(&t->g, name, dt, rank, shape);
}

/* A float param initialized with random data (a differentiable operand). */
static dtl_val tg_param(tg *t, dtl_dtype dt, uint32_t rank, const int64_t *shape, double lo,
                        double hi)
{
    char *name = dtl_arena_printf(&t->g.arena, "p%u", t->nparams);
    dtl_init init = {.kind = DTL_INIT_DATA, .data = rnd_data(&t->g, dt, rank, shape, lo, hi)};
    dtl_val v = dtl_g_param(&t->g, name, dt, rank, shape, init);
    t->params[t->nparams++] = v;
    return v;
}

/* ---- comparing ---- */

static bool close_enough(dtl_dtype dt, double a, double b, double scale)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b))
        return a == b;
    double rtol = dt == F64 ? 1e-12 : 1e-5;
    double m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return fabs(a - b) <= rtol * m + rtol * scale;
}

static int case_failures;

static void compare_tensor(const char *what, const char *out, const dtl_tensor *r,
                           const dtl_tensor *c, bool exact)
{
    CHECK(r->dtype == c->dtype && r->rank == c->rank);
    int64_t n = (int64_t)dtl_tensor_numel(r);
    bool is_float = dtl_dtype_is_float(r->dtype);
    double scale = 0;
    for (int64_t i = 0; i < n && is_float; i++) {
        double v = fabs(get(r->dtype, r->data, i));
        if (isfinite(v) && v > scale)
            scale = v;
    }
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = get(r->dtype, r->data, i), b = get(c->dtype, c->data, i);
        bool ok = is_float && !exact ? close_enough(r->dtype, a, b, scale)
                                     : (a == b || (isnan(a) && isnan(b)));
        if (!ok && bad++ < 3)
            fprintf(stderr, "  %s: output %s[%" PRId64 "]: ref %.9g, cuda %.9g\n", what, out, i,
                    a, b);
    }
    check_count++;
    if (bad) {
        check_failures++;
        case_failures++;
        fprintf(stderr, "FAIL %s: output %s: %d of %" PRId64 " elements differ\n", what, out, bad,
                n);
    }
}

/* Runs t's graph on ref and on cuda (twice: direct, then as a captured CUDA Graph) and
 * compares every output. */
static void run_case(const char *what, tg *t, bool exact)
{
    dtl_err err = {0};
    if (!dtl_graph_verify(&t->g, stderr)) {
        CHECK(!"test graph fails verification");
        fprintf(stderr, "  in case %s\n", what);
        return;
    }
    dtl_store *s1 = dtl_store_new(7);
    dtl_plan *pr = dtl_plan_new(&dtl_backend_ref, &t->g, s1, NULL, &err);
    bool ok = pr && dtl_plan_run(pr, t->in, t->nin, &err);
    /* both ways of the backend: the fused kernel program, and one launch per node */
    for (int fused = 1; ok && fused >= 0; fused--) {
        setenv("DTL_CUDA_FUSE", fused ? "1" : "0", 1);
        dtl_store *s2 = dtl_store_new(7);
        dtl_plan *pc = dtl_plan_new(cuda_be, &t->g, s2, NULL, &err);
        ok = pc != NULL;
        for (int rep = 0; ok && rep < 2; rep++) {
            ok = dtl_plan_run(pc, t->in, t->nin, &err);
            for (uint32_t k = 0; ok && k < t->g.nouts; k++) {
                dtl_tensor a, b;
                ok = dtl_plan_output(pr, t->g.outs[k].name, &a, &err) &&
                     dtl_plan_output(pc, t->g.outs[k].name, &b, &err);
                if (ok) {
                    char w[200];
                    snprintf(w, sizeof w, "%s (%s, run %d)", what, fused ? "fused" : "per node",
                             rep + 1);
                    compare_tensor(w, t->g.outs[k].name, &a, &b, exact);
                }
            }
        }
        if (!ok)
            fprintf(stderr, "  (%s)\n", fused ? "fused" : "per node");
        dtl_plan_free(pc);
        dtl_store_free(s2);
    }
    unsetenv("DTL_CUDA_FUSE");
    if (!ok) {
        fprintf(stderr, "FAIL %s: %s\n", what, err.msg);
        CHECK(!"a run failed");
        case_failures++;
    }
    dtl_plan_free(pr);
    dtl_store_free(s1);
    dtl_graph_free(&t->g);
}

/* Adds outputs: "y" = y; and when t has params, "loss" = sum(y * R) (R random) and the
 * gradient of the loss for each param, "g0", "g1", …. */
static void finish_case(tg *t, dtl_val y)
{
    dtl_graph *g = &t->g;
    dtl_g_output(g, DTL_OUT_VALUE, "y", y, DTL_VAL_NONE);
    if (!t->nparams)
        return;
    const dtl_node *yn = dtl_g_node(g, y);
    dtl_dtype dt = yn->dtype;
    uint32_t rank = yn->rank;
    int64_t shape[DTL_MAX_RANK];
    memcpy(shape, yn->shape, sizeof shape);
    dtl_val r = dtl_g_const_data(g, dt, rank, shape, rnd_data(g, dt, rank, shape, -1, 1));
    dtl_val loss = dtl_g_reduce(g, DTL_OP_SUM, dtl_g_binary(g, DTL_OP_MUL, y, r),
                                rank ? (1u << rank) - 1 : 0, false);
    dtl_val grads[8];
    dtl_err err;
    if (!dtl_ad_grad(g, loss, t->params, t->nparams, grads, NULL, &err)) {
        fprintf(stderr, "autodiff: %s\n", err.msg);
        CHECK(!"autodiff failed");
        return;
    }
    dtl_g_output(g, DTL_OUT_LOSS, "loss", loss, DTL_VAL_NONE);
    for (uint32_t i = 0; i < t->nparams; i++)
        dtl_g_output(g, DTL_OUT_VALUE, dtl_arena_printf(&g->arena, "g%u", i), grads[i],
                     DTL_VAL_NONE);
}

/* ---- the op cases ---- */

static const int64_t S345[] = {3, 4, 5}, S41[] = {4, 1}, S315[] = {3, 1, 5}, S45[] = {4, 5};

static void test_unary(void)
{
    static const dtl_op fops[] = {DTL_OP_NEG, DTL_OP_ABS, DTL_OP_EXP, DTL_OP_LOG, DTL_OP_SQRT,
                                  DTL_OP_TANH, DTL_OP_SIGMOID, DTL_OP_RELU, DTL_OP_SIN,
                                  DTL_OP_COS};
    dtl_dtype fts[] = {F32, F64};
    for (size_t d = 0; d < 2; d++)
        for (size_t i = 0; i < sizeof fops / sizeof fops[0]; i++) {
            tg t;
            tg_init(&t);
            bool pos = fops[i] == DTL_OP_LOG || fops[i] == DTL_OP_SQRT;
            dtl_val x = tg_param(&t, fts[d], 3, S345, pos ? 0.1 : -4, 4);
            finish_case(&t, dtl_g_unary(&t.g, fops[i], x));
            char w[80];
            snprintf(w, sizeof w, "%s %s", dtl_op_name(fops[i]), dtl_dtype_name(fts[d]));
            run_case(w, &t, false);
        }
    static const dtl_op iops[] = {DTL_OP_NEG, DTL_OP_ABS, DTL_OP_RELU};
    dtl_dtype its[] = {I32, I64};
    for (size_t d = 0; d < 2; d++)
        for (size_t i = 0; i < 3; i++) {
            tg t;
            tg_init(&t);
            dtl_val x = tg_input(&t, its[d], 3, S345, -1000, 1000);
            finish_case(&t, dtl_g_unary(&t.g, iops[i], x));
            char w[80];
            snprintf(w, sizeof w, "%s %s", dtl_op_name(iops[i]), dtl_dtype_name(its[d]));
            run_case(w, &t, true);
        }
    tg t;
    tg_init(&t);
    finish_case(&t, dtl_g_unary(&t.g, DTL_OP_NOT, tg_input(&t, BOOL, 3, S345, 0, 1)));
    run_case("not bool", &t, true);
}

static void test_cast(void)
{
    dtl_dtype all[] = {F32, F64, I32, I64, BOOL};
    for (size_t a = 0; a < 5; a++)
        for (size_t b = 0; b < 5; b++) {
            tg t;
            tg_init(&t);
            dtl_val x = tg_input(&t, all[a], 3, S345, -3e9, 3e9);   /* saturation too */
            finish_case(&t, dtl_g_cast(&t.g, x, all[b]));
            char w[80];
            snprintf(w, sizeof w, "cast %s -> %s", dtl_dtype_name(all[a]), dtl_dtype_name(all[b]));
            run_case(w, &t, true);
        }
    tg t;   /* small floats to integers: truncation toward zero */
    tg_init(&t);
    finish_case(&t, dtl_g_cast(&t.g, tg_input(&t, F32, 2, S45, -3, 3), I32));
    run_case("cast f32 -> i32 (small)", &t, true);
}

static void test_binary(void)
{
    static const dtl_op fops[] = {DTL_OP_ADD, DTL_OP_SUB, DTL_OP_MUL, DTL_OP_DIV, DTL_OP_POW,
                                  DTL_OP_MAX, DTL_OP_MIN};
    static const dtl_op cmps[] = {DTL_OP_LT, DTL_OP_LE, DTL_OP_GT, DTL_OP_GE, DTL_OP_EQ,
                                  DTL_OP_NE};
    dtl_dtype fts[] = {F32, F64};
    for (size_t d = 0; d < 2; d++) {
        for (size_t i = 0; i < sizeof fops / sizeof fops[0]; i++) {
            tg t;
            tg_init(&t);
            bool pw = fops[i] == DTL_OP_POW;
            dtl_val a = tg_param(&t, fts[d], 3, S315, pw ? 0.5 : -2, 2);
            dtl_val b = tg_param(&t, fts[d], 2, S41, pw ? -2 : 0.5, 2);
            finish_case(&t, dtl_g_binary(&t.g, fops[i], a, b));
            char w[80];
            snprintf(w, sizeof w, "%s %s (broadcast)", dtl_op_name(fops[i]),
                     dtl_dtype_name(fts[d]));
            run_case(w, &t, false);
        }
        for (size_t i = 0; i < 6; i++) {
            tg t;
            tg_init(&t);
            dtl_val a = tg_input(&t, fts[d], 3, S315, -2, 2);
            dtl_val b = tg_input(&t, fts[d], 2, S41, -2, 2);
            finish_case(&t, dtl_g_binary(&t.g, cmps[i], a, b));
            char w[80];
            snprintf(w, sizeof w, "%s %s", dtl_op_name(cmps[i]), dtl_dtype_name(fts[d]));
            run_case(w, &t, true);
        }
    }
    static const dtl_op iops[] = {DTL_OP_ADD, DTL_OP_SUB, DTL_OP_MUL, DTL_OP_DIV, DTL_OP_MAX,
                                  DTL_OP_MIN, DTL_OP_LT, DTL_OP_LE, DTL_OP_GT, DTL_OP_GE,
                                  DTL_OP_EQ, DTL_OP_NE};
    dtl_dtype its[] = {I32, I64};
    for (size_t d = 0; d < 2; d++)
        for (size_t i = 0; i < sizeof iops / sizeof iops[0]; i++) {
            tg t;
            tg_init(&t);
            /* small ranges: division by 0 and -1, equal values */
            dtl_val a = tg_input(&t, its[d], 3, S315, iops[i] == DTL_OP_MUL ? -2e9 : -5, 5);
            dtl_val b = tg_input(&t, its[d], 2, S41, -2, 2);
            finish_case(&t, dtl_g_binary(&t.g, iops[i], a, b));
            char w[80];
            snprintf(w, sizeof w, "%s %s", dtl_op_name(iops[i]), dtl_dtype_name(its[d]));
            run_case(w, &t, true);
        }
    static const dtl_op bops[] = {DTL_OP_AND, DTL_OP_OR, DTL_OP_EQ, DTL_OP_NE};
    for (size_t i = 0; i < 4; i++) {
        tg t;
        tg_init(&t);
        dtl_val a = tg_input(&t, BOOL, 3, S315, 0, 1), b = tg_input(&t, BOOL, 2, S41, 0, 1);
        finish_case(&t, dtl_g_binary(&t.g, bops[i], a, b));
        char w[80];
        snprintf(w, sizeof w, "%s bool", dtl_op_name(bops[i]));
        run_case(w, &t, true);
    }
    dtl_dtype wts[] = {F32, F64, I32, I64, BOOL};
    for (size_t d = 0; d < 5; d++) {   /* where(cond [3,4,1], a [4,5], b []) */
        tg t;
        tg_init(&t);
        dtl_val c = tg_input(&t, BOOL, 3, (const int64_t[]){3, 4, 1}, 0, 1);
        bool fl = dtl_dtype_is_float(wts[d]);
        dtl_val a = fl ? tg_param(&t, wts[d], 2, S45, -3, 3) : tg_input(&t, wts[d], 2, S45, -3, 3);
        dtl_val b = fl ? tg_param(&t, wts[d], 0, NULL, -3, 3) : tg_input(&t, wts[d], 0, NULL, -3, 3);
        finish_case(&t, dtl_g_where(&t.g, c, a, b));
        char w[80];
        snprintf(w, sizeof w, "where %s", dtl_dtype_name(wts[d]));
        run_case(w, &t, !fl);
    }
}

static void test_reduce(void)
{
    static const struct { uint32_t rank; int64_t shape[4]; uint32_t axes; bool keep; } rc[] = {
        {3, {3, 4, 5}, 1u << 0, false}, {3, {3, 4, 5}, 1u << 1, true},
        {3, {3, 4, 5}, (1u << 0) | (1u << 2), false}, {3, {3, 4, 5}, 7, false},
        {3, {3, 4, 5}, 7, true}, {2, {300, 7}, 1u << 0, false}, {2, {7, 300}, 1u << 1, true},
        {1, {1000}, 1, false}, {2, {1, 6}, 1, false}, {0, {0}, 0, false},
    };
    dtl_dtype dts[] = {F32, F64, I32, I64};
    dtl_op ops[] = {DTL_OP_SUM, DTL_OP_REDUCE_MAX};
    for (size_t c = 0; c < sizeof rc / sizeof rc[0]; c++)
        for (size_t d = 0; d < 4; d++)
            for (size_t o = 0; o < 2; o++) {
                tg t;
                tg_init(&t);
                bool fl = dtl_dtype_is_float(dts[d]);
                dtl_val x = fl ? tg_param(&t, dts[d], rc[c].rank, rc[c].shape, -3, 3)
                               : tg_input(&t, dts[d], rc[c].rank, rc[c].shape, -1e6, 1e6);
                finish_case(&t, dtl_g_reduce(&t.g, ops[o], x, rc[c].axes, rc[c].keep));
                char w[120];
                snprintf(w, sizeof w, "%s %s rank %u axes 0x%x%s", dtl_op_name(ops[o]),
                         dtl_dtype_name(dts[d]), rc[c].rank, rc[c].axes,
                         rc[c].keep ? " keepdims" : "");
                run_case(w, &t, !fl);
            }
    for (size_t d = 0; d < 4; d++)
        for (uint32_t axis = 0; axis < 3; axis++) {
            tg t;
            tg_init(&t);
            dtl_val x = tg_input(&t, dts[d], 3, (const int64_t[]){5, 6, 7}, -3, 3);
            finish_case(&t, dtl_g_argmax(&t.g, x, axis));
            char w[80];
            snprintf(w, sizeof w, "argmax %s axis %u", dtl_dtype_name(dts[d]), axis);
            run_case(w, &t, true);
        }
}

static void test_matmul(void)
{
    static const struct { uint32_t ra; int64_t a[4]; uint32_t rb; int64_t b[4]; } mc[] = {
        {2, {5, 7}, 2, {7, 3}},
        {3, {2, 5, 7}, 2, {7, 3}},
        {2, {5, 7}, 3, {2, 7, 3}},
        {4, {2, 1, 5, 7}, 3, {3, 7, 4}},
        {2, {64, 300}, 2, {300, 50}},
        {2, {32, 784}, 2, {784, 128}},
        {2, {1, 1}, 2, {1, 1}},
    };
    dtl_dtype dts[] = {F32, F64};
    for (size_t c = 0; c < sizeof mc / sizeof mc[0]; c++)
        for (size_t d = 0; d < 2; d++) {
            tg t;
            tg_init(&t);
            dtl_val a = tg_param(&t, dts[d], mc[c].ra, mc[c].a, -1, 1);
            dtl_val b = tg_param(&t, dts[d], mc[c].rb, mc[c].b, -1, 1);
            finish_case(&t, dtl_g_matmul(&t.g, a, b));
            char w[80];
            snprintf(w, sizeof w, "matmul %s case %zu", dtl_dtype_name(dts[d]), c);
            run_case(w, &t, false);
        }
}

static void test_moves(void)
{
    dtl_dtype dts[] = {F32, F64, I32, I64, BOOL};
    for (size_t d = 0; d < 5; d++) {
        bool fl = dtl_dtype_is_float(dts[d]);
        char w[80];
        {   /* reshape (an alias) then transpose */
            tg t;
            tg_init(&t);
            dtl_val x = fl ? tg_param(&t, dts[d], 2, (const int64_t[]){12, 5}, -2, 2)
                           : tg_input(&t, dts[d], 2, (const int64_t[]){12, 5}, -9, 9);
            dtl_val r = dtl_g_reshape(&t.g, x, 3, S345);
            finish_case(&t, dtl_g_transpose(&t.g, r, (const uint32_t[]){2, 0, 1}));
            snprintf(w, sizeof w, "reshape+transpose %s", dtl_dtype_name(dts[d]));
            run_case(w, &t, !fl);
        }
        {   /* broadcast */
            tg t;
            tg_init(&t);
            dtl_val x = fl ? tg_param(&t, dts[d], 2, S41, -2, 2) : tg_input(&t, dts[d], 2, S41, -9, 9);
            finish_case(&t, dtl_g_broadcast(&t.g, x, 3, S345));
            snprintf(w, sizeof w, "broadcast %s", dtl_dtype_name(dts[d]));
            run_case(w, &t, !fl);
        }
        {   /* slice with steps, one negative */
            tg t;
            tg_init(&t);
            dtl_val x = fl ? tg_param(&t, dts[d], 3, (const int64_t[]){6, 7, 8}, -2, 2)
                           : tg_input(&t, dts[d], 3, (const int64_t[]){6, 7, 8}, -9, 9);
            finish_case(&t, dtl_g_slice(&t.g, x, (const int64_t[]){1, 6, 0},
                                        (const int64_t[]){6, 0, 8}, (const int64_t[]){2, -2, 3}));
            snprintf(w, sizeof w, "slice %s", dtl_dtype_name(dts[d]));
            run_case(w, &t, !fl);
        }
        for (uint32_t axis = 0; axis < 3; axis++) {   /* concat */
            tg t;
            tg_init(&t);
            int64_t s1[3] = {3, 4, 5}, s2[3] = {3, 4, 5};
            s2[axis] = 2;
            dtl_val xs[3];
            for (int k = 0; k < 3; k++)
                xs[k] = fl ? tg_param(&t, dts[d], 3, k == 1 ? s2 : s1, -2, 2)
                           : tg_input(&t, dts[d], 3, k == 1 ? s2 : s1, -9, 9);
            finish_case(&t, dtl_g_concat(&t.g, xs, 3, axis));
            snprintf(w, sizeof w, "concat %s axis %u", dtl_dtype_name(dts[d]), axis);
            run_case(w, &t, !fl);
        }
        dtl_dtype its[] = {I32, I64};
        for (int k = 0; k < 2; k++)
            for (uint32_t axis = 0; axis < 2; axis++) {   /* gather, repeated indices */
                tg t;
                tg_init(&t);
                const int64_t xs[2] = {6, 5};
                dtl_val x = fl ? tg_param(&t, dts[d], 2, xs, -2, 2) : tg_input(&t, dts[d], 2, xs, -9, 9);
                dtl_val idx = tg_input(&t, its[k], 2, (const int64_t[]){2, 4}, 0, xs[axis] - 1);
                finish_case(&t, dtl_g_gather(&t.g, x, idx, axis));
                snprintf(w, sizeof w, "gather %s idx %s axis %u", dtl_dtype_name(dts[d]),
                         dtl_dtype_name(its[k]), axis);
                run_case(w, &t, !fl);
            }
        if (dts[d] != BOOL) {   /* scatter_add */
            tg t;
            tg_init(&t);
            dtl_val u = fl ? tg_param(&t, dts[d], 2, (const int64_t[]){3, 9}, -2, 2)
                           : tg_input(&t, dts[d], 2, (const int64_t[]){3, 9}, -9, 9);
            dtl_val idx = tg_input(&t, I64, 1, (const int64_t[]){9}, 0, 5);
            finish_case(&t, dtl_g_scatter_add(&t.g, u, idx, 1, 2, (const int64_t[]){3, 6}));
            snprintf(w, sizeof w, "scatter_add %s", dtl_dtype_name(dts[d]));
            run_case(w, &t, !fl);
        }
    }
}

static void test_leaves(void)
{
    dtl_dtype dts[] = {F32, F64, I32, I64};
    for (size_t d = 0; d < 4; d++) {
        tg t;
        tg_init(&t);
        dtl_val io = dtl_g_iota(&t.g, dts[d], 3, S345, 1);
        dtl_val c = dtl_g_const(&t.g, dts[d], 3, S345, 3);
        finish_case(&t, dtl_g_binary(&t.g, DTL_OP_ADD, io, c));
        char w[80];
        snprintf(w, sizeof w, "iota+const %s", dtl_dtype_name(dts[d]));
        run_case(w, &t, true);
    }
    for (int f = 0; f < 2; f++)
        for (int64_t stepv = 0; stepv < 3; stepv++) {   /* bit for bit, and as a graph input */
            tg t;
            tg_init(&t);
            dtl_val step = tg_input(&t, I64, 0, NULL, (double)stepv * 1000003, (double)stepv * 1000003);
            finish_case(&t, dtl_g_rng_uniform(&t.g, step, f ? F64 : F32, 2,
                                              (const int64_t[]){33, 17}, 12345 + (uint64_t)f));
            char w[80];
            snprintf(w, sizeof w, "rng_uniform %s step %" PRId64, f ? "f64" : "f32", stepv);
            run_case(w, &t, true);
        }
}

/* Errors are values: an index out of range, a badly shaped input. */
static void test_errors(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    dtl_val x = dtl_g_input(&g, "x", F32, 1, (const int64_t[]){4});
    dtl_val i = dtl_g_input(&g, "i", I64, 1, (const int64_t[]){3});
    dtl_g_output(&g, DTL_OUT_VALUE, "y", dtl_g_gather(&g, x, i, 0), DTL_VAL_NONE);
    dtl_store *s = dtl_store_new(1);
    dtl_err err = {0};
    dtl_plan *p = dtl_plan_new(cuda_be, &g, s, NULL, &err);
    CHECK(p != NULL);
    float xv[4] = {1, 2, 3, 4};
    int64_t iv[3] = {0, 7, 2};
    dtl_binding in[2] = {{"x", xv, F32, 1, {4}}, {"i", iv, I64, 1, {3}}};
    CHECK(p && !dtl_plan_run(p, in, 2, &err));
    CHECK(strstr(err.msg, "index 7 (element 1) out of range [0, 4)") != NULL);
    iv[1] = 3;
    CHECK(p && dtl_plan_run(p, in, 2, &err));
    in[1].shape[0] = 2;
    CHECK(p && !dtl_plan_run(p, in, 2, &err) && err.kind == DTL_ERR_MISMATCH);
    CHECK(strstr(err.msg, "input \"i\": expected i64[3], found i64[2]") != NULL);
    dtl_plan_free(p);
    dtl_store_free(s);
    dtl_graph_free(&g);
}

/* ---- the MLP trains, as on ref ---- */

static void test_mlp_training(bool fused)
{
    setenv("DTL_CUDA_FUSE", fused ? "1" : "0", 1);
    printf("mlp training, %s:\n", fused ? "fused kernel program" : "one launch per node");
    mlp m;
    bool ok = mlp_load(&m, 32);
    CHECK(ok);
    if (!ok) {
        mlp_free(&m);
        return;
    }
    dtl_err err = {0};
    dtl_store *sr = dtl_store_new(3), *sc = dtl_store_new(3);
    dtl_plan *pr = dtl_plan_new(&dtl_backend_ref, &m.low.step, sr, NULL, &err);
    dtl_plan *pc = pr ? dtl_plan_new(cuda_be, &m.low.step, sc, NULL, &err) : NULL;
    dtl_plan *ec = pc ? dtl_plan_new(cuda_be, &m.low.eval, sc, NULL, &err) : NULL;
    CHECK(ec != NULL);
    if (!ec)
        fprintf(stderr, "mlp: %s\n", err.msg);
    /* A learnable random problem: the label is the argmax of 10 fixed features. */
    enum { B = 32, STEPS = 40 };
    static float x[B * 784];
    int64_t y[B], total = STEPS;
    double first = 0, last = 0;
    for (int64_t step = 1; ec && step <= STEPS; step++) {
        for (int r = 0; r < B; r++) {
            int best = 0;
            for (int j = 0; j < 784; j++) {
                x[r * 784 + j] = (float)rnd_uniform(0, 1);
                if (j < 10 && x[r * 784 + j] > x[r * 784 + best])
                    best = j;
            }
            y[r] = best;
        }
        dtl_binding in[4] = {{"x", x, F32, 2, {B, 784}}, {"y", y, I64, 1, {B}},
                             {"step", &step, I64, 0, {0}}, {"total_steps", &total, I64, 0, {0}}};
        dtl_tensor lr, lc;
        ok = dtl_plan_run(pr, in, 4, &err) && dtl_plan_run(pc, in, 4, &err) &&
             dtl_plan_output(pr, "loss", &lr, &err) && dtl_plan_output(pc, "loss", &lc, &err);
        if (!ok) {
            fprintf(stderr, "mlp step %" PRId64 ": %s\n", step, err.msg);
            CHECK(!"mlp step failed");
            break;
        }
        double a = *(float *)lr.data, b = *(float *)lc.data;
        if (fabs(a - b) > 1e-4 * fabs(a) + 1e-5) {
            fprintf(stderr, "mlp step %" PRId64 ": loss ref %.9g cuda %.9g\n", step, a, b);
            CHECK(!"the losses differ");
        }
        if (step <= 5)
            first += b / 5;
        if (step > STEPS - 5)
            last += b / 5;
    }
    printf("mlp: mean loss of the first 5 steps %.4f, of the last 5 %.4f\n", first, last);
    CHECK(last < first);
    /* The eval plan sees the trained params on the device. */
    if (ec) {
        dtl_binding in[2] = {{"x", x, F32, 2, {B, 784}}, {"y", y, I64, 1, {B}}};
        dtl_tensor l;
        CHECK(dtl_plan_run(ec, in, 2, &err) && dtl_plan_output(ec, "loss", &l, &err));
    }
    /* The mirror brings the device's params back: they equal ref's within rounding — but
     * for the rare element whose gradient is so close to 0 that rounding flips its sign:
     * Adam then moves it by 2 lr the other way, so allow 0.1% of them, by at most 2 lr a
     * step. */
    CHECK(dtl_store_sync(sc, DTL_SYNC_TO_HOST, &err));
    for (size_t i = 0; i < dtl_store_count(sr); i++) {
        dtl_store_entry *a = dtl_store_at(sr, i), *b = dtl_store_find(sc, a->name);
        CHECK(b != NULL);
        if (!b)
            continue;
        int64_t n = (int64_t)dtl_tensor_numel(&a->t), bad = 0;
        double worst = 0;
        for (int64_t k = 0; k < n; k++) {
            double u = get(F32, a->t.data, k), v = get(F32, b->t.data, k);
            if (!(fabs(u - v) <= 1e-3 * fabs(u) + 1e-5))
                bad++;
            if (!(fabs(u - v) <= worst))
                worst = fabs(u - v);
        }
        printf("mlp: %s: %" PRId64 " of %" PRId64 " elements beyond rounding, largest "
               "difference %.3g\n", a->name, bad, n, worst);
        CHECK(bad <= n / 1000 + (a->is_state ? n / 100 : 0));
        CHECK(a->is_state || worst <= 2e-3 * STEPS);
    }
    /* And a host write reaches the device. */
    dtl_store_entry *b2 = dtl_store_find(sc, "fc2.b");
    if (b2) {
        memset(b2->t.data, 0, 10 * sizeof(float));
        CHECK(dtl_store_sync(sc, DTL_SYNC_TO_DEVICE, &err));
        ((float *)b2->t.data)[0] = 42;
        CHECK(dtl_store_sync(sc, DTL_SYNC_TO_HOST, &err));
        CHECK(((float *)b2->t.data)[0] == 0);
    }
    dtl_plan_stats st;
    if (pc) {
        dtl_plan_stats_get(pc, &st);
        printf("mlp: cuda plan: arena %zu bytes (%zu without reuse), constants %zu, %" PRIu64
               " runs\n", st.arena_bytes, st.naive_bytes, st.const_bytes, st.runs);
    }
    dtl_plan_free(ec);
    dtl_plan_free(pc);
    dtl_plan_free(pr);
    dtl_store_free(sr);
    dtl_store_free(sc);
    mlp_free(&m);
    unsetenv("DTL_CUDA_FUSE");
}

/* ---- the memory plan, without a GPU ---- */

static void check_layout(const char *what, const dtl_graph *g, bool reuse)
{
    dtl_arena A;
    dtl_arena_init(&A);
    dtl_cu_layout L;
    dtl_err err;
    char why[200];
    bool ok = dtl_cu_layout_plan(&L, g, reuse, &A, &err);
    CHECK(ok);
    if (ok && !dtl_cu_layout_check(&L, g, why, sizeof why)) {
        fprintf(stderr, "%s: %s\n", what, why);
        CHECK(!"layout check failed");
    }
    if (ok) {
        CHECK(L.arena_bytes <= L.naive_bytes);
        for (uint32_t v = 0; v < g->nnodes; v++) {
            dtl_op op = g->nodes[v].op;
            CHECK((op == DTL_OP_RESHAPE) == (L.loc[v] == DTL_CU_LOC_ALIAS));
            CHECK((op == DTL_OP_INPUT) == (L.loc[v] == DTL_CU_LOC_INPUT));
            CHECK((op == DTL_OP_GATHER || op == DTL_OP_SCATTER_ADD) ==
                  (L.status[v] != UINT32_MAX));
        }
        printf("layout %s%s: total %" PRIu64 " bytes (arena %" PRIu64 ", %" PRIu64
               " without reuse)\n", what, reuse ? "" : " (no reuse)", L.total, L.arena_bytes,
               L.naive_bytes);
    }
    dtl_arena_free(&A);
}

static void test_layout(void)
{
    mlp m;
    bool ok = mlp_load(&m, 32);
    CHECK(ok);
    if (ok) {
        check_layout("mlp step", &m.low.step, true);
        check_layout("mlp step", &m.low.step, false);
        check_layout("mlp eval", &m.low.eval, true);
        char why[200];
        bool fs = dtl_cuda_fusable(&m.low.step, why, sizeof why);
        printf("mlp step, fused: %s\n", why);
        CHECK(fs);
        fs = dtl_cuda_fusable(&m.low.eval, why, sizeof why);
        printf("mlp eval, fused: %s\n", why);
        CHECK(fs);
        dtl_arena A;
        dtl_arena_init(&A);
        dtl_cu_layout L;
        dtl_err err;
        if (dtl_cu_layout_plan(&L, &m.low.step, true, &A, &err))
            CHECK(L.arena_bytes < L.naive_bytes);   /* reuse pays on a real step */
        dtl_arena_free(&A);
    }
    mlp_free(&m);
    /* Outputs that are leaves are staged; a gather has status words; f16 is refused. */
    dtl_graph g;
    dtl_graph_init(&g);
    dtl_val x = dtl_g_input(&g, "x", F32, 1, (const int64_t[]){4});
    dtl_val i = dtl_g_input(&g, "i", I64, 1, (const int64_t[]){3});
    dtl_val w = dtl_g_param(&g, "w", F32, 1, (const int64_t[]){4},
                            (dtl_init){.kind = DTL_INIT_ZEROS});
    dtl_val r = dtl_g_reshape(&g, w, 2, (const int64_t[]){2, 2});
    dtl_g_output(&g, DTL_OUT_VALUE, "g", dtl_g_gather(&g, x, i, 0), DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "w0", r, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_PARAM, "w", dtl_g_binary(&g, DTL_OP_ADD, w, x), w);
    check_layout("small", &g, true);
    dtl_arena A;
    dtl_arena_init(&A);
    dtl_cu_layout L;
    dtl_err err;
    if (dtl_cu_layout_plan(&L, &g, true, &A, &err)) {
        CHECK(L.stage_off[0] == UINT64_MAX && L.stage_off[1] != UINT64_MAX);
        CHECK(L.nstatus == 1 && L.root[r] == w);
    }
    dtl_arena_free(&A);
    dtl_graph_free(&g);
    dtl_graph_init(&g);
    dtl_g_output(&g, DTL_OUT_VALUE, "h", dtl_g_input(&g, "h", DTL_DTYPE_F16, 1,
                                                     (const int64_t[]){2}), DTL_VAL_NONE);
    dtl_arena_init(&A);
    CHECK(!dtl_cu_layout_plan(&L, &g, true, &A, &err) && strstr(err.msg, "f16") != NULL);
    dtl_arena_free(&A);
    dtl_graph_free(&g);
}

/* The plugin refuses a program of another build: its entry, called with an ABI string that
 * differs, returns NULL and names both strings. */
static void test_plugin_abi(void)
{
    const char *path = dtl_cuda_plugin_path();
    void *h = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD) : NULL;
    void *sym = h ? dlsym(h, DTL_CUDA_PLUGIN_ENTRY) : NULL;
    CHECK(sym != NULL);
    if (!sym)
        return;
    dtl_cuda_plugin_entry_fn *entry;
    memcpy(&entry, &sym, sizeof entry);
    char abi[300], other[300], why[700] = "";
    dtl_cuda_abi(abi, sizeof abi);
    snprintf(other, sizeof other, "%s", abi);
    other[strlen(other) - 1] ^= 1;   /* the last size differs */
    CHECK(entry(other, NULL, why, sizeof why) == NULL);
    CHECK(strstr(why, other) != NULL && strstr(why, abi) != NULL);
    printf("another build's program: %s\n", why);
    /* it exports nothing else: its private copies of dtl stay private */
    CHECK(dlsym(h, "dtl_store_new") == NULL && dlsym(h, "dtl_passes_run") == NULL);
    dlclose(h);   /* (only the NOLOAD reference: the loader's stays) */
}

int main(void)
{
    dtl_err lerr = {0};
    cuda_be = dtl_cuda_backend(&lerr);
    if (!cuda_be) {
        printf("FAIL: this build has CUDA but its plugin does not load: %s\n", lerr.msg);
        return 1;
    }
    printf("plugin: %s\n", dtl_cuda_plugin_path());
    test_plugin_abi();
    test_layout();
    char why[320];
    if (!dtl_cuda_available(why, sizeof why)) {
        printf("%d checks, %d failed (the memory plan)\n", check_count, check_failures);
        if (check_failures)
            return 1;
        printf("SKIP: the device tests need a GPU: %s\n", why);
        return 77;
    }
    printf("device: %s\n", why);
    setenv("DTL_CUDA_POISON", "1", 1);
    const char *s = getenv("DTL_TEST_SEED");
    rng_state = s && *s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
    printf("random inputs: DTL_TEST_SEED=%" PRIu64 "\n", rng_state);
    test_unary();
    test_cast();
    test_binary();
    test_reduce();
    test_matmul();
    test_moves();
    test_leaves();
    test_errors();
    unsetenv("DTL_CUDA_POISON");
    if (!getenv("DTL_CUDA_TEST_QUICK")) {   /* (under compute-sanitizer: the ops only) */
        test_mlp_training(true);
        test_mlp_training(false);
    }
    printf("op cases failed: %d\n", case_failures);
    CHECK_DONE();
}
#endif
