/* tests/unit/test_cuda.c — the CUDA backend against the reference backend.
 *
 * Without a GPU (or in a build without CUDA) only the host side is checked: the memory plan
 * (kernels/cuda/cuda_plan.h: regions, alignment, no two live values sharing bytes), the
 * windowed ops' element functions (kernels/cuda/window_at.h, the kernels' bodies) against
 * the reference kernels, and the multi-tensor Adam matcher (cuda_adam.h) and element update
 * (adam_at.h) against the reference update; then the test exits 77 (skip) saying why. With a GPU: every primitive op, forward and (for the
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
#include "../../compiler/optim.h"
#include "../../compiler/passes/passes.h"
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
#include "../../kernels/cuda/adam_at.h"
#include "../../kernels/cuda/cuda_adam.h"
#include "../../kernels/cuda/window_at.h"
#include "../../kernels/ref/ref.h"
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

static bool mlp_load_opts(mlp *m, int64_t batch, dtl_precision prec, bool split);

static bool mlp_load(mlp *m, int64_t batch)
{
    return mlp_load_opts(m, batch, DTL_PREC_DEFAULT, false);
}

static bool mlp_load_prec(mlp *m, int64_t batch, dtl_precision prec)
{
    return mlp_load_opts(m, batch, prec, false);
}

/* split: the step as data parallel training lowers it, GRAD and UPDATE (compiler/lower.h). */
static bool mlp_load_opts(mlp *m, int64_t batch, dtl_precision prec, bool split)
{
    memset(m, 0, sizeof *m);
    dtl_ctx_init(&m->ctx);
    dtl_ctx_add_default_paths(&m->ctx);
    dtl_module *mod = dtl_check_path(&m->ctx, DTL_SRC_STDLIB_DIR "/../examples/mnist_mlp.dtl");
    if (!mod || dtl_diag_failed(&m->ctx.diags))
        return false;
    const dtl_train *t = dtl_lower_find_train(mod, NULL);
    dtl_lower_opts o = {.batch = batch, .precision = prec, .split_step = split};
    m->ok = t && dtl_lower_train(&m->ctx, t, &o, &m->low);
    return m->ok;
}

/* examples/FILE's train block lowered at batch (as mlp_load does the MLP's). */
static bool example_load(mlp *m, const char *file, int64_t batch)
{
    memset(m, 0, sizeof *m);
    dtl_ctx_init(&m->ctx);
    dtl_ctx_add_default_paths(&m->ctx);
    char path[512];
    snprintf(path, sizeof path, "%s/../examples/%s", DTL_SRC_STDLIB_DIR, file);
    dtl_module *mod = dtl_check_path(&m->ctx, path);
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

/* DTL_CUDA_TEST_EMU=1: the plugin is tests/cuda_emu's CPU emulation (tests/cuda_emu.sh):
 * the "generated" way runs the interpreter (its "NVRTC" would compile a module per case for
 * the CPU: tests/cuda_emu.sh runs generated kernels on whole models instead). */
static bool emulated(void)
{
    const char *e = getenv("DTL_CUDA_TEST_EMU");
    return e && *e && strcmp(e, "0") != 0;
}

/* Whether the plugin generates kernels (a build with NVRTC, on a GPU). */
static bool generates(void)
{
#ifdef HAVE_NVRTC
    return !emulated();
#else
    return false;
#endif
}

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
    if (rank)   /* (shape may be NULL for a scalar) */
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
    /* three ways of the backend: the fused kernel program with generated kernels (NVRTC;
     * strict: a kernel left on the interpreter is an error, but for dtypes the generator
     * leaves to it), the same program on the interpreter kernel, and one launch per node;
     * the generated plan's outputs are also compared with the interpreter's */
    static const char *const mode_name[] = {"generated", "interpreter", "per node"};
    bool lowp = false;
    for (uint32_t v = 0; v < t->g.nnodes; v++)
        lowp = lowp || t->g.nodes[v].dtype == DTL_DTYPE_BF16 ||
               t->g.nodes[v].dtype == DTL_DTYPE_F16;
    dtl_plan *pgen = NULL;
    dtl_store *sgen = NULL;
    for (int mode = 0; ok && mode < 3; mode++) {
        setenv("DTL_CUDA_FUSE", mode < 2 ? "1" : "0", 1);
        setenv("DTL_CUDA_CODEGEN", mode || !generates() ? "0" : lowp ? "1" : "strict", 1);
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
                    snprintf(w, sizeof w, "%s (%s, run %d)", what, mode_name[mode], rep + 1);
                    compare_tensor(w, t->g.outs[k].name, &a, &b, exact);
                }
                if (ok && mode == 1 && rep == 1 && pgen &&
                    (ok = dtl_plan_output(pgen, t->g.outs[k].name, &a, &err))) {
                    char w[200];
                    snprintf(w, sizeof w, "%s (generated vs interpreter)", what);
                    compare_tensor(w, t->g.outs[k].name, &a, &b, exact);
                }
            }
        }
        if (!ok)
            fprintf(stderr, "  (%s)\n", mode_name[mode]);
        if (mode == 0) {
            pgen = pc;
            sgen = s2;
            continue;
        }
        dtl_plan_free(pc);
        dtl_store_free(s2);
        if (mode == 1) {
            dtl_plan_free(pgen);
            dtl_store_free(sgen);
            pgen = NULL;
            sgen = NULL;
        }
    }
    dtl_plan_free(pgen);
    dtl_store_free(sgen);
    unsetenv("DTL_CUDA_FUSE");
    unsetenv("DTL_CUDA_CODEGEN");
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

/* Inputs in page-locked memory (dtl_cuda_host_alloc) of 64 KiB or more are copied by DMA
 * straight from the caller's buffer, the others through the plan's staging buffer, in one
 * run; either way the buffer may be refilled as soon as run returns (each is overwritten
 * before the outputs are read: on the emulated device a copy from page-locked memory reads
 * it when it runs, so a run that returned before its copy landed computes the new bytes).
 * The DMA bytes are counted in the plan's stats (none with DTL_CUDA_COPY_STREAM=0); a
 * pageable binding of the same input is not. A small input lies before x in the staging
 * layout and one after it, so x's slot is between two the host fills. Every run after the
 * first is through the captured graph. */
static void test_pinned_inputs(void)
{
    enum { R = 64, C = 512, RUNS = 5 };   /* x: 128 KiB */
    dtl_graph g;
    dtl_graph_init(&g);
    dtl_val a = dtl_g_input(&g, "a", F32, 0, NULL);
    dtl_val x = dtl_g_input(&g, "x", F32, 2, (const int64_t[]){R, C});
    dtl_val y = dtl_g_input(&g, "y", F32, 1, (const int64_t[]){C});
    dtl_val xy = dtl_g_binary(&g, DTL_OP_ADD, dtl_g_binary(&g, DTL_OP_MUL, x, a), y);
    dtl_g_output(&g, DTL_OUT_VALUE, "out", xy, DTL_VAL_NONE);
    dtl_store *s = dtl_store_new(1);
    dtl_err err = {0};
    dtl_plan *p = dtl_plan_new(cuda_be, &g, s, NULL, &err);
    float *xp = dtl_cuda_host_alloc(R * C * sizeof *xp, &err);
    static float xq[R * C], yv[C];
    float av;
    const char *cs = getenv("DTL_CUDA_COPY_STREAM");
    bool copy_stream = !(cs && strcmp(cs, "0") == 0);
    CHECK(p && xp);
    for (int pinned = 1; p && xp && pinned >= 0; pinned--) {
        float *xv = pinned ? xp : xq;
        dtl_plan_stats st0;
        dtl_plan_stats_get(p, &st0);
        bool ok = true;
        for (int run = 0; run < RUNS && ok; run++) {
            for (int i = 0; i < R * C; i++)
                xv[i] = (float)(run * 7 + i % 1000);
            for (int i = 0; i < C; i++)
                yv[i] = (float)(run - i);
            av = (float)(2 + run);
            dtl_binding in[3] = {{"x", xv, F32, 2, {R, C}}, {"y", yv, F32, 1, {C}},
                                 {"a", &av, F32, 0, {0}}};
            dtl_tensor o;
            ok = dtl_plan_run(p, in, 3, &err);
            for (int i = 0; i < R * C; i++)   /* refilled at once */
                xv[i] = -1;
            for (int i = 0; i < C; i++)
                yv[i] = -1;
            av = -1;
            ok = ok && dtl_plan_output(p, "out", &o, &err);
            int bad = 0;
            for (int i = 0; ok && i < R * C; i++)
                bad += ((const float *)o.data)[i] != (float)(2 + run) * (float)(run * 7 + i % 1000) +
                                                        (float)(run - i % C);
            if (!ok || bad)
                fprintf(stderr, "pinned inputs (%s, run %d): %s%d wrong\n",
                        pinned ? "page-locked" : "pageable", run, ok ? "" : err.msg, bad);
            ok = ok && !bad;
        }
        CHECK(ok);
        dtl_plan_stats st;
        dtl_plan_stats_get(p, &st);
        CHECK(st.input_dma_bytes - st0.input_dma_bytes ==
              (pinned && copy_stream ? (uint64_t)RUNS * R * C * sizeof *xv : 0));
        printf("pinned inputs: %s x, %" PRIu64 " bytes by DMA over %d runs\n",
               pinned ? "page-locked" : "pageable", st.input_dma_bytes - st0.input_dma_bytes,
               RUNS);
    }
    dtl_cuda_host_free(xp);
    dtl_plan_free(p);
    dtl_store_free(s);
    dtl_graph_free(&g);
}

/* ---- the MLP trains, as on ref ---- */

/* A learnable random problem: rows of 784 uniform features, the label the argmax of the
 * first 10. */
static void argmax_batch(float *x, int64_t *y, int rows)
{
    for (int r = 0; r < rows; r++) {
        int best = 0;
        for (int j = 0; j < 784; j++) {
            x[r * 784 + j] = (float)rnd_uniform(0, 1);
            if (j < 10 && x[r * 784 + j] > x[r * 784 + best])
                best = j;
        }
        y[r] = best;
    }
}

static void test_mlp_training(bool fused, bool codegen)
{
    setenv("DTL_CUDA_FUSE", fused ? "1" : "0", 1);
    /* strict: no kernel left out */
    setenv("DTL_CUDA_CODEGEN", codegen && generates() ? "strict" : "0", 1);
    printf("mlp training, %s:\n", !fused    ? "one launch per node"
                                  : codegen ? "fused kernel program, generated kernels"
                                            : "fused kernel program, interpreter kernels");
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
    enum { B = 32, STEPS = 40 };
    static float x[B * 784];
    int64_t y[B], total = STEPS;
    double first = 0, last = 0;
    /* the same batches every run, so that whether the loss falls does not depend on the
     * seed (on some, 40 steps of noisy batches did not show it) */
    uint64_t seed = rng_state;
    rng_state = 0x5eed;
    for (int64_t step = 1; ec && step <= STEPS; step++) {
        argmax_batch(x, y, B);
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
    rng_state = seed;
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
    unsetenv("DTL_CUDA_CODEGEN");
}

/* ---- the windowed ops: conv2d, pooling and their backward ops ---- */

/* x's shape; conv: o, kh, kw and the attributes; pooling: the attributes (kernel set). */
typedef struct win_case {
    int64_t x[4];
    int64_t o, kh, kw;
    dtl_win_attr a;
} win_case;

#define CONV_C(n, c, h, w, o, kh, kw, s0, s1, p0, p1, d0, d1, gr) \
    {{n, c, h, w}, o, kh, kw, {{0, 0}, {s0, s1}, {p0, p1}, {d0, d1}, gr, false}}
#define POOL_C(n, c, h, w, k0, k1, s0, s1, p0, p1, cp) \
    {{n, c, h, w}, 0, 0, 0, {{k0, k1}, {s0, s1}, {p0, p1}, {1, 1}, 1, cp}}

/* padding; 1x1; stride + dilation + groups; a kernel larger than the input; stride > kernel;
 * depthwise; LeNet-sized (long bwd_w sums: the block kernel); everything uneven */
static const win_case conv_cases[] = {
    CONV_C(2, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    CONV_C(2, 5, 4, 6, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1),
    CONV_C(2, 4, 9, 8, 6, 3, 2, 2, 1, 1, 0, 1, 2, 2),
    CONV_C(1, 3, 3, 3, 2, 5, 5, 1, 1, 2, 2, 1, 1, 1),
    CONV_C(2, 2, 9, 9, 3, 2, 2, 3, 3, 0, 0, 1, 1, 1),
    CONV_C(3, 4, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 4),
    CONV_C(6, 4, 14, 14, 8, 5, 5, 1, 1, 2, 2, 1, 1, 1),
    CONV_C(2, 6, 11, 7, 4, 3, 3, 2, 3, 2, 1, 2, 1, 2),
};

static const win_case pool_cases[] = {
    POOL_C(2, 3, 8, 8, 2, 2, 2, 2, 0, 0, false),
    POOL_C(2, 3, 7, 7, 3, 3, 2, 2, 1, 1, false),
    POOL_C(2, 3, 7, 7, 3, 3, 2, 2, 1, 1, true),
    POOL_C(1, 2, 9, 9, 2, 2, 3, 3, 0, 0, false),
    POOL_C(2, 2, 5, 4, 3, 2, 1, 2, 1, 0, false),
    POOL_C(3, 2, 5, 6, 5, 6, 1, 1, 0, 0, false),
    POOL_C(2, 1, 4, 4, 3, 3, 1, 1, 2, 2, true),
    POOL_C(4, 16, 28, 28, 2, 2, 2, 2, 0, 0, false),
};

static bool is_conv(dtl_op op)
{
    return op == DTL_OP_CONV2D || op == DTL_OP_CONV2D_BWD_X || op == DTL_OP_CONV2D_BWD_W;
}

/* The shapes of case c: x, the filter (conv), y. */
static void win_shapes(const win_case *c, int64_t *xs, int64_t *ws, int64_t *ys)
{
    bool conv = c->o > 0;
    int64_t kh = conv ? c->kh : c->a.kernel[0], kw = conv ? c->kw : c->a.kernel[1];
    memcpy(xs, c->x, 4 * sizeof *xs);
    ws[0] = c->o, ws[1] = conv ? c->x[1] / c->a.groups : 0, ws[2] = kh, ws[3] = kw;
    ys[0] = c->x[0], ys[1] = conv ? c->o : c->x[1];
    ys[2] = dtl_win_out(c->x[2], kh, c->a.pad[0], c->a.dil[0], c->a.stride[0]);
    ys[3] = dtl_win_out(c->x[3], kw, c->a.pad[1], c->a.dil[1], c->a.stride[1]);
}

/* Data of shape s for a windowed op's operand: kind 0 uniform in [-1, 1), 1 small integers
 * (ties for maxpool), 2 integers with NaN, ±inf and ±0 sprinkled in. */
static void *win_data(dtl_graph *g, dtl_dtype dt, const int64_t *s, int kind)
{
    void *p = rnd_data(g, dt, 4, s, kind ? -2 : -1, kind ? 2 : 1);
    int64_t n = numel_of(4, s);
    static const double special[] = {NAN, INFINITY, -INFINITY, 0.0, -0.0};
    for (int64_t i = 0; kind == 2 && i < n; i++)
        if (rnd_u64() % 7 == 0)
            put(dt, p, i, special[rnd_u64() % 5]);
    return p;
}

/* Node op of case c in a fresh graph g, its operands inputs "a" (and "b") with data. */
static dtl_val win_node(dtl_graph *g, dtl_op op, dtl_dtype dt, const win_case *c, int kind,
                        dtl_binding *in, size_t *nin)
{
    int64_t xs[4], ws[4], ys[4];
    win_shapes(c, xs, ws, ys);
    const int64_t *sa = xs, *sb = NULL;
    switch (op) {
    case DTL_OP_CONV2D: sb = ws; break;
    case DTL_OP_CONV2D_BWD_X: sa = ys, sb = ws; break;
    case DTL_OP_CONV2D_BWD_W: sb = ys; break;
    case DTL_OP_MAXPOOL2D_BWD: sb = ys; break;
    case DTL_OP_AVGPOOL2D_BWD: sa = ys; break;
    default: break;
    }
    const int64_t *sh[2] = {sa, sb};
    dtl_val v[2] = {DTL_VAL_NONE, DTL_VAL_NONE};
    *nin = 0;
    for (int k = 0; k < 2 && sh[k]; k++) {
        /* maxpool's x gets the ties and specials; dy and filters plain numbers */
        int kd = (op == DTL_OP_MAXPOOL2D || op == DTL_OP_MAXPOOL2D_BWD) && k == 0 ? kind : 0;
        dtl_binding *b = &in[(*nin)++];
        b->name = k ? "b" : "a";
        b->data = win_data(g, dt, sh[k], kd);
        b->dtype = dt;
        b->rank = 4;
        memcpy(b->shape, sh[k], 4 * sizeof *sh[k]);
        v[k] = dtl_g_input(g, b->name, dt, 4, sh[k]);
    }
    switch (op) {
    case DTL_OP_CONV2D: return dtl_g_conv2d(g, v[0], v[1], &c->a);
    case DTL_OP_CONV2D_BWD_X: return dtl_g_conv2d_bwd_x(g, v[0], v[1], &c->a, xs);
    case DTL_OP_CONV2D_BWD_W: return dtl_g_conv2d_bwd_w(g, v[0], v[1], &c->a, ws);
    case DTL_OP_MAXPOOL2D_BWD: return dtl_g_maxpool2d_bwd(g, v[0], v[1], &c->a);
    case DTL_OP_AVGPOOL2D_BWD: return dtl_g_avgpool2d_bwd(g, v[0], &c->a, xs);
    default: return dtl_g_pool2d(g, op, v[0], &c->a);
    }
}

static const dtl_op win_ops[] = {DTL_OP_CONV2D, DTL_OP_CONV2D_BWD_X, DTL_OP_CONV2D_BWD_W,
                                 DTL_OP_MAXPOOL2D, DTL_OP_MAXPOOL2D_BWD, DTL_OP_AVGPOOL2D,
                                 DTL_OP_AVGPOOL2D_BWD};

/* Without a GPU: the CUDA kernels' element functions (window_at.h), run on the CPU with the
 * geometry the backend gives them (dtl_cu_win_of), equal the reference kernels bit for bit
 * (conv2d_bwd_w split in 256 parts as its block kernel does: within rounding). */
static void test_window_host(void)
{
    int cases = 0, bad_cases = 0;
    for (size_t o = 0; o < sizeof win_ops / sizeof win_ops[0]; o++)
        for (int d = 0; d < 2; d++) {
            dtl_op op = win_ops[o];
            dtl_dtype dt = d ? F64 : F32;
            bool conv = is_conv(op), maxp = op == DTL_OP_MAXPOOL2D || op == DTL_OP_MAXPOOL2D_BWD;
            size_t nc = conv ? sizeof conv_cases / sizeof conv_cases[0]
                             : sizeof pool_cases / sizeof pool_cases[0];
            for (size_t ci = 0; ci < nc; ci++)
                for (int kind = 0; kind < (maxp ? 3 : 1); kind++) {
                    win_case c = conv ? conv_cases[ci] : pool_cases[ci];
                    if (op == DTL_OP_MAXPOOL2D || op == DTL_OP_MAXPOOL2D_BWD)
                        c.a.count_pad = false;
                    dtl_graph g;
                    dtl_graph_init(&g);
                    dtl_binding in[2];
                    size_t nin;
                    dtl_val v = win_node(&g, op, dt, &c, kind, in, &nin);
                    const dtl_node *n = dtl_g_node(&g, v);
                    dtl_ref_arg ra[2];
                    for (size_t k = 0; k < nin; k++)
                        ra[k] = (dtl_ref_arg){in[k].data, dt, 4, in[k].shape};
                    int64_t numel = (int64_t)dtl_node_numel(n);
                    void *ref = dtl_arena_alloc(&g.arena, (size_t)numel * 8);
                    dtl_err err;
                    dtl_cu_wop wop;
                    dtl_cu_win win;
                    bool ok = dtl_ref_kernel(n, ra, ref, 0, &err) &&
                              dtl_cu_win_of(&g, v, &wop, &win) &&
                              dtl_cu_win_numel(&win, wop) == numel;
                    CHECK(ok);
                    int bad = 0;
                    double scale = 0;
                    for (int64_t i = 0; ok && i < numel; i++)
                        if (isfinite(get(dt, ref, i)) && fabs(get(dt, ref, i)) > scale)
                            scale = fabs(get(dt, ref, i));
                    for (int64_t i = 0; ok && i < numel; i++) {
                        double r = get(dt, ref, i);
                        double cu = dtl_cu_w_at(&win, wop, in[0].data,
                                                nin > 1 ? in[1].data : NULL, i);
                        cu = d ? cu : (double)(float)cu;
                        bool same = cu == r || (isnan(cu) && isnan(r));
                        if (same && (r == 0 || isinf(r)))   /* the sign of 0 and of inf too */
                            same = signbit(cu) == signbit(r);
                        if (same && wop == DTL_CU_W_CONV_BWD_W) {
                            double sum = 0;
                            for (int t = 0; t < 256; t++)
                                sum += dtl_cu_w_conv_bwd_w_part(&win, in[0].data, in[1].data,
                                                                i, t, 256);
                            sum = d ? sum : (double)(float)sum;
                            same = close_enough(dt, r, sum, scale);
                        }
                        if (!same && bad++ < 3)
                            fprintf(stderr, "  %s %s case %zu kind %d: [%" PRId64 "] ref %.17g, "
                                    "window_at %.17g\n", dtl_op_name(op), dtl_dtype_name(dt),
                                    ci, kind, i, r, cu);
                    }
                    CHECK(bad == 0);
                    cases++;
                    bad_cases += bad != 0;
                    dtl_graph_free(&g);
                }
        }
    printf("windowed ops on the CPU through window_at.h: %d cases, %d differ from ref\n", cases,
           bad_cases);
}

/* With a GPU: every windowed op forward, and its gradient through autodiff (the backward
 * ops), against ref on every case; then each op directly (maxpool's with ties and
 * specials on every case). */
static void test_window(void)
{
    for (int d = 0; d < 2; d++) {
        dtl_dtype dt = d ? F64 : F32;
        for (size_t ci = 0; ci < sizeof conv_cases / sizeof conv_cases[0]; ci++) {
            const win_case *c = &conv_cases[ci];
            int64_t xs[4], ws[4], ys[4];
            win_shapes(c, xs, ws, ys);
            tg t;
            tg_init(&t);
            dtl_val x = tg_param(&t, dt, 4, xs, -1, 1), w = tg_param(&t, dt, 4, ws, -1, 1);
            finish_case(&t, dtl_g_conv2d(&t.g, x, w, &c->a));
            char what[160];
            snprintf(what, sizeof what, "conv2d %s case %zu (+ grads)", dtl_dtype_name(dt), ci);
            run_case(what, &t, false);
        }
        for (size_t ci = 0; ci < sizeof pool_cases / sizeof pool_cases[0]; ci++)
            for (int avg = 0; avg < 2; avg++) {
                win_case c = pool_cases[ci];
                c.a.count_pad = avg && c.a.count_pad;
                tg t;
                tg_init(&t);
                dtl_val x = tg_param(&t, dt, 4, c.x, -1, 1);
                if (!avg)   /* ties: whole numbers */
                    for (int64_t i = 0; i < numel_of(4, c.x); i++)
                        put(dt, (void *)t.g.nodes[x].attr.init.data, i,
                            floor(get(dt, t.g.nodes[x].attr.init.data, i) * 2.5));
                finish_case(&t, dtl_g_pool2d(&t.g, avg ? DTL_OP_AVGPOOL2D : DTL_OP_MAXPOOL2D,
                                             x, &c.a));
                char what[160];
                snprintf(what, sizeof what, "%s %s case %zu (+ grad)", avg ? "avgpool2d" : "maxpool2d",
                         dtl_dtype_name(dt), ci);
                run_case(what, &t, false);
            }
        /* directly: every op on one case; maxpool's on all, with ties and specials (NaN,
         * ±inf, ±0: a loss over them would be NaN, so the gradient cases cannot have them) */
        for (size_t o = 0; o < sizeof win_ops / sizeof win_ops[0]; o++) {
            dtl_op op = win_ops[o];
            bool conv = is_conv(op), maxp = op == DTL_OP_MAXPOOL2D || op == DTL_OP_MAXPOOL2D_BWD;
            size_t nc = !maxp ? 1 : sizeof pool_cases / sizeof pool_cases[0];
            for (size_t ci = 0; ci < nc; ci++)
                for (int kind = 0; kind < (maxp ? 3 : 1); kind++) {
                    win_case c = conv ? conv_cases[ci] : pool_cases[ci];
                    if (maxp)
                        c.a.count_pad = false;
                    tg t;
                    tg_init(&t);
                    dtl_val v = win_node(&t.g, op, dt, &c, kind, t.in, &t.nin);
                    finish_case(&t, v);
                    char what[160];
                    snprintf(what, sizeof what, "%s %s case %zu%s", dtl_op_name(op),
                             dtl_dtype_name(dt), ci, kind == 1 ? " ties" : kind == 2 ? " specials" : "");
                    run_case(what, &t, false);
                }
        }
    }
}

/* ---- the multi-tensor Adam update: the matcher and adam_at.h on the CPU ---- */

/* A graph of n f32 params of the given shapes, each with a gradient input "g<i>", and the
 * update of optimizer kind (compiler/optim.c); lr 1e-2 so that a few steps move a lot. */
static void adam_graph(dtl_graph *g, dtl_opt_kind kind, uint32_t n, const int64_t (*shapes)[2],
                       dtl_val *params, dtl_val *grads)
{
    dtl_graph_init(g);
    for (uint32_t i = 0; i < n; i++) {
        char *pn = dtl_arena_printf(&g->arena, "w%u", i), *gn = dtl_arena_printf(&g->arena, "g%u", i);
        dtl_init init = {.kind = DTL_INIT_DATA,
                         .data = rnd_data(g, F32, 2, shapes[i], -1, 1)};
        params[i] = dtl_g_param(g, pn, F32, 2, shapes[i], init);
        grads[i] = dtl_g_input(g, gn, F32, 2, shapes[i]);
    }
    dtl_g_input(g, "step", I64, 0, NULL);
    dtl_g_input(g, "total_steps", I64, 0, NULL);
    dtl_opt_cfg cfg;
    dtl_opt_defaults(&cfg, kind);
    cfg.lr = 1e-2;
    dtl_err err;
    CHECK(dtl_opt_build(g, &cfg, params, grads, n, NULL, &err));
}

/* What the backend does to a graph before fusing it (fuse_plan, adam_rewrite): the passes
 * (into pg), the matcher (*mt, in A; the count returned), and the graph without the matched
 * updates (into ng, whose outputs are dtl_cu_adam_outputs'). */
static uint32_t adam_rewritten(const dtl_graph *g, dtl_graph *pg, dtl_graph *ng,
                               dtl_cu_adam_match **mt, dtl_arena *A)
{
    dtl_err err;
    bool ok = dtl_passes_run(pg, g, NULL, &err);
    CHECK(ok);
    uint32_t n = ok ? dtl_cu_adam_find(pg, mt, A) : 0;
    dtl_graph tmp = *pg;
    tmp.outs = dtl_cu_adam_outputs(pg, *mt, n, &tmp.nouts, A);
    tmp.capouts = tmp.nouts;
    CHECK(ok && dtl_passes_run(ng, &tmp, NULL, &err) && ng->nouts == tmp.nouts);
    return n;
}

/* Without a GPU: the matcher finds every Adam/AdamW update (of the example MLP's step graph
 * after the passes, and of small graphs) and nothing for SGD; adam_at.h's element update,
 * fed the scalars the reference graph computes, gives the reference's p, m and v bit for
 * bit over a few steps. */
static void test_adam_host(void)
{
    mlp m;
    bool ok = mlp_load(&m, 32);
    CHECK(ok);
    if (ok) {
        dtl_graph pg, ng;
        dtl_arena A;
        dtl_arena_init(&A);
        dtl_cu_adam_match *mt;
        uint32_t n = adam_rewritten(&m.low.step, &pg, &ng, &mt, &A);
        printf("mlp step: %u Adam updates found (of 4 params)\n", n);
        CHECK(n == 4);
        for (uint32_t i = 0; i < n; i++)
            CHECK(mt[i].s[7] == DTL_VAL_NONE && pg.nodes[mt[i].param].op == DTL_OP_PARAM &&
                  pg.nodes[mt[i].m].op == DTL_OP_STATE && pg.nodes[mt[i].v].op == DTL_OP_STATE);
        CHECK(ng.nouts == pg.nouts - 3 * n + n + 7);
        /* what the backend fuses instead: the gradients and scalars as outputs, no updates
         * left, nothing reads m or v, and the interpreter can run all of it */
        uint32_t internal = 0, updates = 0, reads_state = 0;
        for (uint32_t k = 0; k < ng.nouts; k++) {
            internal += dtl_cu_adam_internal(ng.outs[k].name);
            CHECK(dtl_cu_adam_internal(ng.outs[k].name) || ng.outs[k].kind == DTL_OUT_LOSS ||
                  ng.outs[k].kind == DTL_OUT_VALUE);
            updates += ng.outs[k].kind == DTL_OUT_PARAM || ng.outs[k].kind == DTL_OUT_STATE;
        }
        for (uint32_t v = 0; v < ng.nnodes; v++)
            for (uint32_t i = 0; i < ng.nodes[v].nin; i++)
                reads_state += ng.nodes[ng.nodes[v].in[i]].op == DTL_OP_STATE;
        CHECK(internal == n + 7 && reads_state == 0 && updates == 0);
        char why[200];
        CHECK(dtl_cuda_fusable(&ng, why, sizeof why));
        printf("mlp step without its updates: %u nodes (%u before), fused: %s\n", ng.nnodes,
               pg.nnodes, why);
        dtl_graph_free(&ng);
        dtl_arena_free(&A);
        dtl_graph_free(&pg);
    }
    mlp_free(&m);
    /* Data parallel training's UPDATE graph (the step split at the gradients, which come in
     * averaged, as inputs named like GRAD's outputs): the same four updates are found, each
     * reading its gradient input, and the graph fused instead keeps those inputs (the NCCL
     * buckets feed them: cuda_dp_impl.h) as the launch's gradients. */
    ok = mlp_load_opts(&m, 32, DTL_PREC_DEFAULT, true);
    CHECK(ok && m.low.split);
    if (ok) {
        dtl_graph pg, ng;
        dtl_arena A;
        dtl_arena_init(&A);
        dtl_cu_adam_match *mt;
        uint32_t n = adam_rewritten(&m.low.update, &pg, &ng, &mt, &A);
        printf("mlp UPDATE graph (data parallel): %u Adam updates found (of 4 params)\n", n);
        CHECK(n == 4);
        for (uint32_t i = 0; i < n; i++) {
            const dtl_node *gr = &pg.nodes[mt[i].grad];
            bool named = false;
            for (uint32_t k = 0; k < m.low.grad.nouts; k++)
                named |= gr->name && strcmp(m.low.grad.outs[k].name, gr->name) == 0;
            CHECK(gr->op == DTL_OP_INPUT && named);
        }
        uint32_t gin = 0, updates = 0;
        for (uint32_t k = 0; k < ng.nouts; k++) {
            const dtl_node *v = &ng.nodes[ng.outs[k].val];
            gin += strncmp(ng.outs[k].name, "__adam.g.", 9) == 0 && v->op == DTL_OP_INPUT;
            updates += ng.outs[k].kind == DTL_OUT_PARAM || ng.outs[k].kind == DTL_OUT_STATE;
        }
        CHECK(gin == 4 && updates == 0);
        dtl_graph_free(&ng);
        dtl_graph_free(&pg);
        dtl_arena_free(&A);
    }
    mlp_free(&m);
    /* LeNet (conv2d, pooling, dropout): every kernel runs on the fused path, before and
     * after the rewrite, and all 8 params' updates are found */
    ok = example_load(&m, "lenet.dtl", 16);
    CHECK(ok);
    if (ok) {
        char why[200];
        CHECK(dtl_cuda_fusable(&m.low.step, why, sizeof why));
        printf("lenet step, fused: %s\n", why);
        dtl_graph pg, ng;
        dtl_arena A;
        dtl_arena_init(&A);
        dtl_cu_adam_match *mt;
        uint32_t n = adam_rewritten(&m.low.step, &pg, &ng, &mt, &A);
        CHECK(n == 8);
        CHECK(dtl_cuda_fusable(&ng, why, sizeof why));
        printf("lenet step: %u Adam updates found; without them, fused: %s\n", n, why);
        dtl_graph_free(&ng);
        dtl_graph_free(&pg);
        dtl_arena_free(&A);
    }
    mlp_free(&m);

    static const int64_t shapes[3][2] = {{5, 7}, {1, 3}, {40, 33}};
    dtl_opt_kind kinds[3] = {DTL_OPT_ADAM, DTL_OPT_ADAMW, DTL_OPT_SGD};
    for (int ki = 0; ki < 3; ki++) {
        dtl_graph g;
        dtl_val params[3], grads[3];
        adam_graph(&g, kinds[ki], 3, shapes, params, grads);
        dtl_arena A;
        dtl_arena_init(&A);
        dtl_cu_adam_match *mt;
        uint32_t n = dtl_cu_adam_find(&g, &mt, &A);
        const char *kn = ki == 0 ? "adam" : ki == 1 ? "adamw" : "sgd";
        printf("%s: %u updates matched\n", kn, n);
        CHECK(n == (ki == 2 ? 0u : 3u));
        if (n != 3) {
            dtl_arena_free(&A);
            dtl_graph_free(&g);
            continue;
        }
        CHECK((mt[0].s[7] != DTL_VAL_NONE) == (ki == 1));
        /* the scalars as outputs, read each step from ref */
        for (int s = 0; s < DTL_CU_ADAM_NSCALARS; s++)
            if (mt[0].s[s] != DTL_VAL_NONE)
                dtl_g_output(&g, DTL_OUT_VALUE, dtl_arena_printf(&g.arena, "s%d", s), mt[0].s[s],
                             DTL_VAL_NONE);
        dtl_err err = {0};
        dtl_store *st = dtl_store_new(5);
        dtl_plan *pr = dtl_plan_new(&dtl_backend_ref, &g, st, NULL, &err);
        CHECK(pr != NULL);
        float *hp[3], *hm[3], *hv[3];
        for (int i = 0; i < 3; i++) {
            int64_t cnt = shapes[i][0] * shapes[i][1];
            hp[i] = dtl_arena_array(&A, (size_t)cnt, sizeof(float));
            hm[i] = dtl_arena_array(&A, (size_t)cnt, sizeof(float));
            hv[i] = dtl_arena_array(&A, (size_t)cnt, sizeof(float));
            memcpy(hp[i], g.nodes[params[i]].attr.init.data, (size_t)cnt * sizeof(float));
        }
        int bad = 0;
        for (int64_t step = 1; pr && step <= 5; step++) {
            dtl_binding in[5];
            int64_t total = 5;
            for (int i = 0; i < 3; i++) {
                in[i] = (dtl_binding){g.nodes[grads[i]].name,
                                      rnd_data(&g, F32, 2, shapes[i], -1, 1), F32, 2,
                                      {shapes[i][0], shapes[i][1]}};
                if (step == 3)   /* zero gradients too (m, v decay; p moves on) */
                    memset((void *)in[i].data, 0, (size_t)(shapes[i][0] * shapes[i][1]) * 4);
            }
            in[3] = (dtl_binding){"step", &step, I64, 0, {0}};
            in[4] = (dtl_binding){"total_steps", &total, I64, 0, {0}};
            if (!dtl_plan_run(pr, in, 5, &err)) {
                fprintf(stderr, "adam ref: %s\n", err.msg);
                CHECK(!"ref run failed");
                break;
            }
            float sv[DTL_CU_ADAM_NSCALARS];
            for (int s = 0; s < DTL_CU_ADAM_NSCALARS; s++) {
                dtl_tensor t;
                sv[s] = 0;
                if (mt[0].s[s] != DTL_VAL_NONE &&
                    dtl_plan_output(pr, dtl_arena_printf(&A, "s%d", s), &t, &err))
                    sv[s] = *(const float *)t.data;
            }
            for (int i = 0; i < 3; i++) {
                dtl_cu_adam_t e = {hp[i], hm[i], hv[i], in[i].data,
                                   shapes[i][0] * shapes[i][1], 0};
                for (int64_t j = 0; j < e.n; j++)
                    dtl_cu_adam_at(&e, j, sv[0], sv[1], sv[2], sv[3], sv[4], sv[5], sv[6],
                                   mt[0].s[7] != DTL_VAL_NONE ? &sv[7] : NULL);
                const char *names[3] = {g.nodes[params[i]].name,
                                        g.nodes[mt[i].m].name, g.nodes[mt[i].v].name};
                float *mine[3] = {hp[i], hm[i], hv[i]};
                for (int w = 0; w < 3; w++) {
                    dtl_tensor t;
                    if (!dtl_plan_output(pr, names[w], &t, &err)) {
                        CHECK(!"no output");
                        continue;
                    }
                    if (memcmp(t.data, mine[w], (size_t)e.n * sizeof(float)) != 0 && bad++ < 3)
                        fprintf(stderr, "  %s step %" PRId64 ": %s differs from ref\n", kn,
                                step, names[w]);
                }
            }
        }
        CHECK(bad == 0);
        printf("%s: adam_at.h equals the reference update bit for bit over 5 steps: %s\n", kn,
               bad ? "NO" : "yes");
        dtl_plan_free(pr);
        dtl_store_free(st);
        dtl_arena_free(&A);
        dtl_graph_free(&g);
    }
    dtl_cu_adam_t tab[3] = {{.n = 10}, {.n = 1000000}, {.n = 0}};
    int64_t nb = dtl_cu_adam_blocks(tab, 3);
    CHECK(tab[0].block0 == 0 && tab[1].block0 == 1 && tab[2].block0 == 1 + DTL_CU_ADAM_MAX_BLOCKS &&
          nb == 2 + DTL_CU_ADAM_MAX_BLOCKS);
}

/* With a GPU: the multi-tensor Adam/AdamW launch (fused path, DTL_CUDA_ADAM on) and the
 * fused kernels without it (DTL_CUDA_ADAM=0) against ref over 5 steps: every param, m and v
 * (read back through the plan's outputs, i.e. from the device mirror), poisoned memory. */
static void test_adam_device(void)
{
    static const int64_t shapes[3][2] = {{5, 7}, {1, 3}, {300, 257}};
    for (int ki = 0; ki < 2; ki++)
        for (int on = 1; on >= 0; on--) {
            setenv("DTL_CUDA_ADAM", on ? "1" : "0", 1);
            dtl_graph g;
            dtl_val params[3], grads[3];
            adam_graph(&g, ki ? DTL_OPT_ADAMW : DTL_OPT_ADAM, 3, shapes, params, grads);
            dtl_err err = {0};
            dtl_store *sr = dtl_store_new(5), *sc = dtl_store_new(5);
            dtl_plan *pr = dtl_plan_new(&dtl_backend_ref, &g, sr, NULL, &err);
            dtl_plan *pc = pr ? dtl_plan_new(cuda_be, &g, sc, NULL, &err) : NULL;
            if (!pc) {
                fprintf(stderr, "adam: %s\n", err.msg);
                CHECK(!"adam plan failed");
            }
            for (int64_t step = 1; pc && step <= 5; step++) {
                dtl_binding in[5];
                int64_t total = 5;
                for (int i = 0; i < 3; i++)
                    in[i] = (dtl_binding){g.nodes[grads[i]].name,
                                          rnd_data(&g, F32, 2, shapes[i], -1, 1), F32, 2,
                                          {shapes[i][0], shapes[i][1]}};
                in[3] = (dtl_binding){"step", &step, I64, 0, {0}};
                in[4] = (dtl_binding){"total_steps", &total, I64, 0, {0}};
                bool ok = dtl_plan_run(pr, in, 5, &err) && dtl_plan_run(pc, in, 5, &err);
                CHECK(ok);
                for (uint32_t k = 0; ok && k < g.nouts; k++) {
                    dtl_tensor a, b;
                    if (!dtl_plan_output(pr, g.outs[k].name, &a, &err) ||
                        !dtl_plan_output(pc, g.outs[k].name, &b, &err)) {
                        fprintf(stderr, "adam: %s\n", err.msg);
                        CHECK(!"adam output failed");
                        break;
                    }
                    char w[120];
                    snprintf(w, sizeof w, "%s%s step %" PRId64, ki ? "adamw" : "adam",
                             on ? " (multi-tensor)" : " (fused kernels)", step);
                    compare_tensor(w, g.outs[k].name, &a, &b, false);
                }
            }
            dtl_plan_free(pc);
            dtl_plan_free(pr);
            dtl_store_free(sc);
            dtl_store_free(sr);
            dtl_graph_free(&g);
        }
    unsetenv("DTL_CUDA_ADAM");
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
    if (example_load(&m, "lenet.dtl", 8)) {   /* conv2d, pooling: one launch a node too */
        check_layout("lenet step", &m.low.step, true);
        check_layout("lenet eval", &m.low.eval, true);
    } else {
        CHECK(!"lenet does not lower");
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
    /* bf16 (mixed precision) is planned, 2 bytes an element, for casts and products; an
     * arithmetic op on it is refused as the reference refuses it */
    dtl_graph_init(&g);
    int64_t s8[] = {8, 8};
    dtl_val hb = dtl_g_cast(&g, dtl_g_input(&g, "x8", F32, 2, s8), DTL_DTYPE_BF16);
    dtl_val prod = dtl_g_matmul(&g, hb, hb);
    dtl_g_output(&g, DTL_OUT_VALUE, "y", prod, DTL_VAL_NONE);
    dtl_arena_init(&A);
    CHECK(dtl_cu_layout_plan(&L, &g, false, &A, &err));
    CHECK(L.loc[hb] == DTL_CU_LOC_ARENA && g.nodes[prod].dtype == F32);
    CHECK(L.naive_bytes >= 2 * DTL_CU_ALIGN);   /* hb: 128 bytes, prod: 256, each aligned */
    dtl_arena_free(&A);
    dtl_g_output(&g, DTL_OUT_VALUE, "e", dtl_g_unary(&g, DTL_OP_EXP, hb), DTL_VAL_NONE);
    dtl_arena_init(&A);
    CHECK(!dtl_cu_layout_plan(&L, &g, true, &A, &err) && strstr(err.msg, "bf16") != NULL);
    dtl_arena_free(&A);
    dtl_graph_free(&g);
}

/* Mixed precision (docs/cuda.md): the example MLP lowered with `precision` prec trains on
 * the GPU (cuBLAS bf16 operands with f32 accumulation, or TF32 tensor cores) and on the
 * reference backend lowered with ref_prec, 10 steps from the same weights on the same
 * random batches: each step's loss within 1e-2 (relative) and the weights at the end
 * within 1e-2 of the largest weight of their tensor. bf16 against bf16, tf32 against tf32
 * and tf32 against f32. The last two are held alike: the tensor cores' TF32 conversion is
 * not the reference's rounding to nearest even (on the H200, tf32 against tf32 as strictly
 * as bf16 failed: fc1.b off by 8.6e-5 where the bound was 7.3e-5, the moments by 2.6 % of
 * their largest), so the gradients differ by tf32's rounding, and Adam moves an element
 * by up to about lr (the example's 1e-3) a step whatever its gradient's size, so where a
 * gradient is near zero the two runs part by up to 2 lr a step: the params are held to
 * that, and the moments (whose relative differences are those of near-zero gradients) only
 * through the losses, within 3e-2 there (on the emulated device, over 40 seeds of random
 * batches, fused and per node, the largest difference was 6e-3, but one make check run
 * exceeded 1e-2; the batches are now the same every run). (Found on the emulated device,
 * tests/cuda_emu.sh: 0.0023 after 10 steps where the largest fc1.w is 0.088.) */
static void test_mixed_precision(dtl_precision prec, dtl_precision ref_prec)
{
    printf("mixed precision: cuda %s against ref %s\n", dtl_precision_name(prec),
           dtl_precision_name(ref_prec));
    mlp mc, mr;
    bool okc = mlp_load_prec(&mc, 32, prec), okr = mlp_load_prec(&mr, 32, ref_prec);
    bool ok = okc && okr;
    CHECK(ok);
    dtl_err err = {0};
    dtl_store *sr = dtl_store_new(5), *sc = dtl_store_new(5);
    dtl_plan *pr = ok ? dtl_plan_new(&dtl_backend_ref, &mr.low.step, sr, NULL, &err) : NULL;
    dtl_plan *pc = pr ? dtl_plan_new(cuda_be, &mc.low.step, sc, NULL, &err) : NULL;
    CHECK(pc != NULL);
    if (ok && !pc)
        fprintf(stderr, "mixed precision: %s\n", err.msg);
    enum { B = 32, STEPS = 10 };
    static float x[B * 784];
    int64_t y[B], total = STEPS;
    bool across = prec != ref_prec || prec == DTL_PREC_TF32;   /* (see above) */
    double loss_tol = across ? 3e-2 : 1e-2;
    uint64_t seed = rng_state;
    rng_state = 0x5eed;   /* the same batches every run (as test_mlp_training's) */
    for (int64_t step = 1; pc && step <= STEPS; step++) {
        argmax_batch(x, y, B);
        dtl_binding in[4] = {{"x", x, F32, 2, {B, 784}}, {"y", y, I64, 1, {B}},
                             {"step", &step, I64, 0, {0}}, {"total_steps", &total, I64, 0, {0}}};
        dtl_tensor lr, lc;
        if (!(dtl_plan_run(pr, in, 4, &err) && dtl_plan_run(pc, in, 4, &err) &&
              dtl_plan_output(pr, "loss", &lr, &err) && dtl_plan_output(pc, "loss", &lc, &err))) {
            fprintf(stderr, "mixed precision step %" PRId64 ": %s\n", step, err.msg);
            CHECK(!"mixed precision step failed");
            break;
        }
        double a = *(float *)lr.data, b = *(float *)lc.data;
        if (!(fabs(a - b) <= loss_tol * fabs(a))) {
            fprintf(stderr, "mixed precision %s/%s, step %" PRId64 ": loss ref %.7g cuda %.7g\n",
                    dtl_precision_name(prec), dtl_precision_name(ref_prec), step, a, b);
            CHECK(!"mixed precision: the losses differ");
        }
    }
    rng_state = seed;
    double slack = across ? 2 * 1e-3 * STEPS : 0;
    if (pc && dtl_store_sync(sc, DTL_SYNC_TO_HOST, &err)) {
        for (size_t i = 0; i < dtl_store_count(sr); i++) {
            dtl_store_entry *w = dtl_store_at(sr, i), *g = dtl_store_find(sc, w->name);
            CHECK(g && g->t.dtype == F32 && w->t.dtype == F32);   /* f32 master weights */
            size_t nl = strlen(w->name);
            bool moment = nl > 2 && (strcmp(w->name + nl - 2, ".m") == 0 ||
                                     strcmp(w->name + nl - 2, ".v") == 0);
            if (!g || g->t.dtype != F32 || (across && moment))
                continue;
            uint64_t n = dtl_tensor_numel(&w->t);
            double scale = 0, worst = 0;
            for (uint64_t k = 0; k < n; k++)
                scale = fmax(scale, fabs(((const float *)w->t.data)[k]));
            for (uint64_t k = 0; k < n; k++)
                worst = fmax(worst, fabs(((const float *)g->t.data)[k] -
                                         ((const float *)w->t.data)[k]));
            if (!(worst <= 1e-2 * scale + 1e-6 + slack)) {
                fprintf(stderr, "mixed precision %s/%s: %s off by %g (largest %g)\n",
                        dtl_precision_name(prec), dtl_precision_name(ref_prec), w->name, worst,
                        scale);
                CHECK(!"mixed precision: the weights differ");
            }
        }
    }
    dtl_plan_free(pc);
    dtl_plan_free(pr);
    dtl_store_free(sc);
    dtl_store_free(sr);
    mlp_free(&mc);
    mlp_free(&mr);
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
    {   /* the host-side tests draw random numbers too */
        const char *s = getenv("DTL_TEST_SEED");
        rng_state = s && *s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
        printf("random inputs: DTL_TEST_SEED=%" PRIu64 "\n", rng_state);
    }
    test_window_host();
    test_adam_host();
    char why[320];
    if (!dtl_cuda_available(why, sizeof why)) {
        printf("%d checks, %d failed (the host-side checks)\n", check_count, check_failures);
        if (check_failures)
            return 1;
        printf("SKIP: the device tests need a GPU: %s\n", why);
        return 77;
    }
    printf("device: %s\n", why);
    setenv("DTL_CUDA_POISON", "1", 1);
    test_unary();
    test_cast();
    test_binary();
    test_reduce();
    test_matmul();
    test_moves();
    test_leaves();
    test_window();
    test_adam_device();
    test_errors();
    test_pinned_inputs();
    unsetenv("DTL_CUDA_POISON");
    if (!getenv("DTL_CUDA_TEST_QUICK")) {   /* (under compute-sanitizer: the ops only) */
        test_mlp_training(true, true);
        test_mlp_training(true, false);
        test_mlp_training(false, false);
        for (int fused = 1; fused >= 0; fused--) {
            setenv("DTL_CUDA_FUSE", fused ? "1" : "0", 1);
            test_mixed_precision(DTL_PREC_BF16, DTL_PREC_BF16);
            test_mixed_precision(DTL_PREC_TF32, DTL_PREC_TF32);
            test_mixed_precision(DTL_PREC_TF32, DTL_PREC_F32);
        }
    }
    printf("op cases failed: %d\n", case_failures);
    CHECK_DONE();
}
#endif
