/* tests/unit/backend_testlib.c — the differential harness behind the backend tests (see the
 * header for the contract).
 *
 * Design: a case is one graph that many subcases share, so that a JIT backend compiles each
 * op's tests once. Every subcase records its label in the graph's arena; every input, param
 * and output remembers the subcase it belongs to, so a mismatch names it. The loss that
 * drives the gradients weights each output element by its own random number (W_k), so a
 * gradient that lands on the wrong element shows, and it is accumulated in f64 so that f32
 * and f64 subcases (and casts between them) can share one loss. Each backend gets its own
 * store with the reference's seed: the stores start equal (initializers are drawn by the
 * runtime, not the backend), and are compared after every run, which covers PARAM/STATE
 * updates and their commit.
 */
#include "backend_testlib.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../compiler/autodiff.h"
#include "../../compiler/passes/fuse.h"
#include "../../compiler/passes/passes.h"
#include "../../kernels/cuda/cuda.h"
#include "../../lang/check.h"
#include "../../lang/ctx.h"

/* The LLVM backend, when this build has it (compiler/llvm/llvm.h declares it; declared here
 * so that the tests need not see LLVM's headers). */
#ifdef HAVE_LLVM
extern const dtl_backend dtl_backend_llvm;
#define BT_HAVE_LLVM 1
#endif

#ifndef DTL_SRC_STDLIB_DIR
#define DTL_SRC_STDLIB_DIR "stdlib"
#endif

/* ---- backends ------------------------------------------------------------------------------ */

static const bt_backend all_backends[] = {
    {"ref-noreuse", &dtl_backend_ref, {.no_reuse = true}},
#ifdef BT_HAVE_LLVM
    {"llvm", &dtl_backend_llvm, {0}},
#endif
};
enum { NALL = sizeof all_backends / sizeof all_backends[0] };

static bool selected(const char *name)
{
    const char *env = getenv("DTL_TEST_BACKENDS");
    if (!env || !*env)
        return true;
    size_t n = strlen(name);
    for (const char *p = env; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return true;
        p += len + (e ? 1 : 0);
    }
    return false;
}

/* The CUDA backend (a plugin: kernels/cuda/cuda.h) joins when this machine has an NVIDIA
 * device and the plugin can use it; the device node is checked first, so that machines
 * without a GPU do not pay for loading the CUDA libraries. Probed once. */
static bool cuda_backend(bt_backend *out)
{
    static int probed;   /* 0: not yet, 1: yes, 2: no */
    static bt_backend cuda;
    if (!probed) {
        probed = 2;
        char why[256];
        dtl_err err = {0};
        const dtl_backend *be;
        if (access("/dev/nvidiactl", F_OK) == 0 && selected("cuda")) {
            if (dtl_cuda_available(why, sizeof why) && (be = dtl_cuda_backend(&err))) {
                cuda = (bt_backend){"cuda", be, {0}};
                probed = 1;
            } else {
                fprintf(stderr, "backend_testlib: cuda not tested: %s\n",
                        err.msg[0] ? err.msg : why);
            }
        }
    }
    if (probed == 1)
        *out = cuda;
    return probed == 1;
}

const bt_backend *bt_backends(size_t *n)
{
    /* Selection is recomputed on every call (it is cheap) into a per-call-stable array. */
    static bt_backend chosen[NALL + 1];
    size_t k = 0;
    for (size_t i = 0; i < NALL; i++)
        if (selected(all_backends[i].name))
            chosen[k++] = all_backends[i];
    if (cuda_backend(&chosen[k]))
        k++;
    *n = k;
    return chosen;
}

const char *bt_backend_names(void)
{
    static char buf[256];
    size_t n;
    const bt_backend *b = bt_backends(&n);
    buf[0] = 0;
    for (size_t i = 0; i < n; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i ? ", " : "", b[i].name);
    if (n == 0)
        snprintf(buf, sizeof buf, "(none: $DTL_TEST_BACKENDS selects nothing)");
    return buf;
}

/* ---- comparing ----------------------------------------------------------------------------- */

double bt_tol(dtl_dtype dt)
{
    switch (dt) {
    case DTL_DTYPE_F32: return BT_TOL_F32;
    case DTL_DTYPE_F64: return BT_TOL_F64;
    default: return 0;
    }
}

static double elem_f(const dtl_tensor *t, uint64_t i)
{
    switch (t->dtype) {
    case DTL_DTYPE_F32: return ((const float *)t->data)[i];
    case DTL_DTYPE_F64: return ((const double *)t->data)[i];
    default: return NAN;
    }
}

static int64_t elem_i(const dtl_tensor *t, uint64_t i)
{
    switch (t->dtype) {
    case DTL_DTYPE_I32: return ((const int32_t *)t->data)[i];
    case DTL_DTYPE_I64: return ((const int64_t *)t->data)[i];
    case DTL_DTYPE_BOOL: return ((const uint8_t *)t->data)[i] != 0;
    default: return 0;
    }
}

/* "[2, 0, 5]": the multi-index of flat element i. */
static const char *index_str(char *buf, size_t len, const dtl_tensor *t, uint64_t i)
{
    uint64_t idx[DTL_MAX_RANK];
    for (uint32_t d = t->rank; d-- > 0;) {
        uint64_t s = (uint64_t)t->shape[d];
        idx[d] = s ? i % s : 0;
        i = s ? i / s : 0;
    }
    size_t o = (size_t)snprintf(buf, len, "[");
    for (uint32_t d = 0; d < t->rank && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, "%s%llu", d ? ", " : "", (unsigned long long)idx[d]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
    return buf;
}

bool bt_match(const char *what, const dtl_tensor *got, const dtl_tensor *want, double factor)
{
    return bt_match_outliers(what, got, want, factor, 0, 0);
}

bool bt_match_outliers(const char *what, const dtl_tensor *got, const dtl_tensor *want,
                       double factor, uint64_t max_outliers, double outlier_bound)
{
    char b1[160], b2[160];
    bool same = got->dtype == want->dtype && got->rank == want->rank;
    for (uint32_t d = 0; same && d < want->rank; d++)
        same = got->shape[d] == want->shape[d];
    if (!same) {
        fprintf(stderr, "%s: got %s, want %s\n", what,
                dtl_tensor_str(b1, sizeof b1, got->dtype, got->rank, got->shape),
                dtl_tensor_str(b2, sizeof b2, want->dtype, want->rank, want->shape));
        return false;
    }
    uint64_t n = dtl_tensor_numel(want);
    if (n && (!got->data || !want->data)) {
        fprintf(stderr, "%s: no data (got %p, want %p)\n", what, got->data, want->data);
        return false;
    }
    uint64_t bad = 0, first = 0, worst_at = 0, outliers = 0;
    double worst = 0, bound_first = 0, worst_outlier = 0;
    if (dtl_dtype_is_float(want->dtype)) {
        double tol = bt_tol(want->dtype) * factor, scale = 0;
        for (uint64_t i = 0; i < n; i++) {
            double b = fabs(elem_f(want, i));
            if (isfinite(b) && b > scale)
                scale = b;
        }
        for (uint64_t i = 0; i < n; i++) {
            double a = elem_f(got, i), b = elem_f(want, i);
            double bound = tol * (fabs(b) + scale);
            bool ok = isnan(b)   ? isnan(a)
                      : isinf(b) ? a == b
                                 : isfinite(a) && fabs(a - b) <= bound;
            if (ok)
                continue;
            double e = isfinite(a) && isfinite(b) ? fabs(a - b) : INFINITY;
            if (e <= outlier_bound && outliers < max_outliers) {
                outliers++;
                worst_outlier = e > worst_outlier ? e : worst_outlier;
                continue;
            }
            if (bad++ == 0) {
                first = i;
                bound_first = bound;
            }
            if (e > worst || bad == 1) {
                worst = e;
                worst_at = i;
            }
        }
        if (bad) {
            fprintf(stderr,
                    "%s: %llu of %llu elements differ; first %s: got %.9g, want %.9g "
                    "(|diff| %.3g > %.3g)",
                    what, (unsigned long long)bad, (unsigned long long)n,
                    index_str(b1, sizeof b1, want, first), elem_f(got, first),
                    elem_f(want, first), fabs(elem_f(got, first) - elem_f(want, first)),
                    bound_first);
            if (bad > 1)
                fprintf(stderr, "; worst %s: got %.9g, want %.9g",
                        index_str(b2, sizeof b2, want, worst_at), elem_f(got, worst_at),
                        elem_f(want, worst_at));
            fprintf(stderr, " [tol %g, scale %.3g]\n", tol, scale);
        }
        if (outliers)
            fprintf(stderr, "note: %s: %llu element(s) beyond the tolerance, off by up to %.3g "
                    "(allowed: %llu, each within %.3g)\n",
                    strncmp(what, "FAIL ", 5) == 0 ? what + 5 : what, (unsigned long long)outliers,
                    worst_outlier, (unsigned long long)max_outliers, outlier_bound);
    } else {
        for (uint64_t i = 0; i < n; i++)
            if (elem_i(got, i) != elem_i(want, i) && bad++ == 0)
                first = i;
        if (bad)
            fprintf(stderr, "%s: %llu of %llu elements differ; first %s: got %lld, want %lld\n",
                    what, (unsigned long long)bad, (unsigned long long)n,
                    index_str(b1, sizeof b1, want, first), (long long)elem_i(got, first),
                    (long long)elem_i(want, first));
    }
    return bad == 0;
}

bool bt_match_stores(const char *what, dtl_store *got, dtl_store *want, double factor)
{
    bool ok = true;
    char buf[512];
    if (dtl_store_count(got) != dtl_store_count(want)) {
        fprintf(stderr, "%s: the stores hold %zu and %zu entries\n", what, dtl_store_count(got),
                dtl_store_count(want));
        ok = false;
    }
    for (size_t i = 0; i < dtl_store_count(want); i++) {
        const dtl_store_entry *w = dtl_store_at(want, i);
        const dtl_store_entry *g = dtl_store_find(got, w->name);
        snprintf(buf, sizeof buf, "%s: store entry \"%s\"", what, w->name);
        if (!g) {
            fprintf(stderr, "%s: missing\n", buf);
            ok = false;
            continue;
        }
        ok &= bt_match(buf, &g->t, &w->t, factor);
    }
    return ok;
}

/* ---- random data --------------------------------------------------------------------------- */

static void put(dtl_dtype dt, void *p, uint64_t i, double v)
{
    switch (dt) {
    case DTL_DTYPE_F32: ((float *)p)[i] = (float)v; break;
    case DTL_DTYPE_F64: ((double *)p)[i] = v; break;
    case DTL_DTYPE_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case DTL_DTYPE_I64: ((int64_t *)p)[i] = (int64_t)v; break;
    case DTL_DTYPE_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    default: break;
    }
}

static double uniform_int(dtl_rng *r, double lo, double hi)
{
    return lo + (double)dtl_rng_below(r, (uint64_t)(hi - lo) + 1);
}

void bt_fill(void *data, dtl_dtype dt, uint64_t n, bt_dist d, dtl_rng *r)
{
    static const double fspecial[] = {NAN, INFINITY, -INFINITY, 0.0, -0.0, 1e30, -1e30, 1.0};
    bool fl = dtl_dtype_is_float(dt);
    for (uint64_t i = 0; i < n; i++) {
        if (dt == DTL_DTYPE_BOOL) {
            static const uint8_t bytes[4] = {0, 1, 2, 255};
            ((uint8_t *)data)[i] = d.kind == BT_DIST_BOOL ? bytes[dtl_rng_below(r, 4)]
                                                          : (uint8_t)dtl_rng_below(r, 2);
            continue;
        }
        switch (d.kind) {
        case BT_DIST_SPECIAL:
            if (dtl_rng_below(r, 6) == 0) {
                if (fl) {
                    put(dt, data, i, fspecial[dtl_rng_below(r, 8)]);
                } else if (dt == DTL_DTYPE_I32) {
                    static const int32_t s32[4] = {INT32_MIN, INT32_MAX, -1, 0};
                    ((int32_t *)data)[i] = s32[dtl_rng_below(r, 4)];
                } else {
                    static const int64_t s64[4] = {INT64_MIN, INT64_MAX, -1, 0};
                    ((int64_t *)data)[i] = s64[dtl_rng_below(r, 4)];
                }
                break;
            }
            /* fall through */
        case BT_DIST_UNIFORM:
            if (fl)
                put(dt, data, i, d.lo + (d.hi - d.lo) * dtl_rng_uniform_f64(r));
            else
                put(dt, data, i, uniform_int(r, d.lo, d.hi));
            break;
        case BT_DIST_INT:
            put(dt, data, i, uniform_int(r, d.lo, d.hi));
            break;
        case BT_DIST_FULL:
            if (dt == DTL_DTYPE_I32)
                ((int32_t *)data)[i] = (int32_t)dtl_rng_u32(r);
            else if (dt == DTL_DTYPE_I64)
                ((int64_t *)data)[i] =
                    (int64_t)(((uint64_t)dtl_rng_u32(r) << 32) | dtl_rng_u32(r));
            else
                put(dt, data, i, -100 + 200 * dtl_rng_uniform_f64(r));
            break;
        case BT_DIST_BOOL:
            put(dt, data, i, (double)dtl_rng_below(r, 2));
            break;
        }
    }
}

/* ---- counts and known failures ------------------------------------------------------------- */

static bt_counts counts;
static const bt_known_failure *known_table;
enum { MAX_KNOWN = 128 };
static unsigned known_seen[MAX_KNOWN], known_hit[MAX_KNOWN];

bt_counts bt_counts_get(void)
{
    return counts;
}

void bt_known_set(const bt_known_failure *table)
{
    known_table = table;
}

static int known_index(const char *backend, const char *label)
{
    for (int i = 0; i < MAX_KNOWN && known_table && known_table[i].backend; i++)
        if (strcmp(known_table[i].backend, backend) == 0 && strstr(label, known_table[i].label))
            return i;
    return -1;
}

const char *bt_fail_word(const char *backend, const char *label)
{
    return known_index(backend, label) >= 0 ? "known failure:" : "FAIL";
}

void bt_known_seen(const char *backend, const char *label)
{
    int i = known_index(backend, label);
    if (i >= 0)
        known_seen[i]++;
}

const char *bt_known(const char *backend, const char *label)
{
    int i = known_index(backend, label);
    if (i < 0)
        return NULL;
    known_hit[i]++;
    return known_table[i].reason;
}

void bt_known_report(void)
{
    for (int i = 0; i < MAX_KNOWN && known_table && known_table[i].backend; i++)
        if (known_seen[i] && !known_hit[i])
            printf("note: the known failure \"%s\" on %s (%s) did not happen: fixed? Then "
                   "remove it from the list.\n", known_table[i].label, known_table[i].backend,
                   known_table[i].reason);
}

/* ---- cases --------------------------------------------------------------------------------- */

typedef struct bt_input {
    dtl_val v;
    bt_dist d;
    const char *sub;   /* its subcase, and its number among the subcase's inputs: its data */
    uint32_t k;        /* stream, so a subcase's data does not depend on what precedes it */
} bt_input;

typedef struct bt_outrec {
    char name[64];
    dtl_val v;
    const char *sub;
    double factor;
    bool in_loss;
    bool is_loss;   /* the loss: compared within the error the outputs' tolerances allow */
} bt_outrec;

typedef struct bt_paramrec {
    dtl_val v;
    const char *sub;
} bt_paramrec;

struct bt_case {
    char label[160];
    uint64_t seed;
    dtl_graph g;
    const char *sub;
    bool sub_grad;
    unsigned nsubs;
    bt_input *ins;
    uint32_t nins, capins;
    bt_outrec *outs;
    uint32_t nouts, capouts;
    bt_paramrec *params;
    uint32_t nparams, capparams;
};

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "backend_testlib: out of memory\n");
        abort();
    }
    return q;
}

#define GROW(arr, n, cap)                                                                   \
    do {                                                                                    \
        if ((n) == (cap)) {                                                                 \
            (cap) = (cap) ? 2 * (cap) : 16;                                                 \
            (arr) = xrealloc((arr), (cap) * sizeof *(arr));                                 \
        }                                                                                   \
    } while (0)

bt_case *bt_case_new(const char *label, uint64_t seed)
{
    bt_case *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    snprintf(c->label, sizeof c->label, "%s", label);
    c->seed = seed;
    dtl_graph_init(&c->g);
    c->sub = "";
    return c;
}

dtl_graph *bt_graph(bt_case *c)
{
    return &c->g;
}

const char *bt_case_label(const bt_case *c)
{
    return c->label;
}

void bt_sub(bt_case *c, bool grad, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    c->sub = dtl_arena_vprintf(&c->g.arena, fmt, ap);
    va_end(ap);
    c->sub_grad = grad;
    c->nsubs++;
}

dtl_val bt_in_plain(bt_case *c, dtl_dtype dt, uint32_t rank, const int64_t *shape, bt_dist d)
{
    char name[16];
    snprintf(name, sizeof name, "i%u", c->nins);
    dtl_val v = dtl_g_input(&c->g, name, dt, rank, shape);
    uint32_t k = 0;
    for (uint32_t i = c->nins; i-- > 0;)
        if (c->ins[i].sub == c->sub) {
            k = c->ins[i].k + 1;
            break;
        }
    GROW(c->ins, c->nins, c->capins);
    c->ins[c->nins++] = (bt_input){v, d, c->sub, k};
    return v;
}

dtl_val bt_in(bt_case *c, dtl_dtype dt, uint32_t rank, const int64_t *shape, bt_dist d)
{
    dtl_val x = bt_in_plain(c, dt, rank, shape, d);
    if (!c->sub_grad || !dtl_dtype_is_float(dt))
        return x;
    char name[16];
    snprintf(name, sizeof name, "p%u", c->nparams);
    dtl_init zero = {DTL_INIT_ZEROS, 0, 0, NULL};
    dtl_val p = dtl_g_param(&c->g, name, dt, rank, shape, zero);
    GROW(c->params, c->nparams, c->capparams);
    c->params[c->nparams++] = (bt_paramrec){p, c->sub};
    return dtl_g_binary(&c->g, DTL_OP_ADD, x, p);
}

static void add_out(bt_case *c, dtl_out_kind kind, dtl_val v, dtl_val target, double factor,
                    bool in_loss, const char *name)
{
    GROW(c->outs, c->nouts, c->capouts);
    bt_outrec *o = &c->outs[c->nouts];
    if (name)
        snprintf(o->name, sizeof o->name, "%s", name);
    else
        snprintf(o->name, sizeof o->name, "o%u", c->nouts);
    o->v = v;
    o->sub = c->sub;
    o->factor = factor;
    o->in_loss = in_loss;
    o->is_loss = false;
    c->nouts++;
    dtl_g_output(&c->g, kind, dtl_arena_strdup(&c->g.arena, o->name), v, target);
}

void bt_out(bt_case *c, dtl_val v)
{
    add_out(c, DTL_OUT_VALUE, v, DTL_VAL_NONE, 1.0,
            c->sub_grad && dtl_dtype_is_float(dtl_g_node(&c->g, v)->dtype), NULL);
}

void bt_out_exact(bt_case *c, dtl_val v)
{
    add_out(c, DTL_OUT_VALUE, v, DTL_VAL_NONE, 0.0,
            c->sub_grad && dtl_dtype_is_float(dtl_g_node(&c->g, v)->dtype), NULL);
}

void bt_out_kind(bt_case *c, dtl_out_kind kind, dtl_val v, dtl_val target)
{
    /* PARAM/STATE outputs are named after their target, as lowering does. */
    const char *name = target != DTL_VAL_NONE ? dtl_g_node(&c->g, target)->name : NULL;
    add_out(c, kind, v, target, 1.0, false, name);
}

void bt_case_free(bt_case *c)
{
    if (!c)
        return;
    dtl_graph_free(&c->g);
    free(c->ins);
    free(c->outs);
    free(c->params);
    free(c);
}

/* Appends the loss over the differentiated outputs and the gradients of every param. */
static bool add_gradients(bt_case *c)
{
    dtl_graph *g = &c->g;
    dtl_val loss = DTL_VAL_NONE;
    uint32_t nouts = c->nouts;
    const char *keep = c->sub;
    bool keep_grad = c->sub_grad;
    c->sub = "loss";
    c->sub_grad = false;
    for (uint32_t k = 0; k < nouts; k++) {
        if (!c->outs[k].in_loss)
            continue;
        const dtl_node *y = dtl_g_node(g, c->outs[k].v);
        c->sub = c->outs[k].sub;   /* W_k's data belongs to y_k's subcase */
        uint32_t rank = y->rank;
        int64_t shape[DTL_MAX_RANK];
        memcpy(shape, y->shape, sizeof shape);
        dtl_dtype dt = y->dtype;
        dtl_val w = bt_in_plain(c, dt, rank, shape, BT_U(-1, 1));
        dtl_val t = dtl_g_binary(g, DTL_OP_MUL, c->outs[k].v, w);
        if (rank)
            t = dtl_g_reduce(g, DTL_OP_SUM, t, (1u << rank) - 1u, false);
        if (dt != DTL_DTYPE_F64)
            t = dtl_g_cast(g, t, DTL_DTYPE_F64);
        loss = loss == DTL_VAL_NONE ? t : dtl_g_binary(g, DTL_OP_ADD, loss, t);
    }
    bool ok = true;
    c->sub = "loss";
    if (loss != DTL_VAL_NONE && c->nparams) {
        add_out(c, DTL_OUT_LOSS, loss, DTL_VAL_NONE, 1.0, false, "loss");
        c->outs[c->nouts - 1].is_loss = true;
        dtl_val *ps = xrealloc(NULL, c->nparams * sizeof *ps);
        dtl_val *gs = xrealloc(NULL, c->nparams * sizeof *gs);
        for (uint32_t i = 0; i < c->nparams; i++)
            ps[i] = c->params[i].v;
        dtl_err err = {0};
        if (!dtl_ad_grad(g, loss, ps, c->nparams, gs, NULL, &err)) {
            fprintf(stderr, "%s: autodiff failed: %s\n", c->label, err.msg);
            ok = false;
        } else {
            for (uint32_t i = 0; i < c->nparams; i++) {
                char name[16];
                snprintf(name, sizeof name, "g%u", i);
                c->sub = dtl_arena_printf(&g->arena, "%s: d loss / d %s", c->params[i].sub,
                                          dtl_g_node(g, ps[i])->name);
                add_out(c, DTL_OUT_VALUE, gs[i], DTL_VAL_NONE, 1.0, false, name);
            }
        }
        free(ps);
        free(gs);
    }
    c->sub = keep;
    c->sub_grad = keep_grad;
    return ok;
}

/* The loss sums W_k * y_k over the differentiated outputs (|W| <= 1): the error the outputs'
 * own tolerances allow adds up to sum_k tol_k * numel_k * 2 max|y_k| (cancellation in the sum
 * can make that far more than a tolerance relative to the loss itself). */
static double loss_bound(bt_case *c, dtl_plan *ref)
{
    double bound = 0;
    for (uint32_t k = 0; k < c->nouts; k++) {
        if (!c->outs[k].in_loss)
            continue;
        dtl_tensor t;
        dtl_err err = {0};
        if (!dtl_plan_output(ref, c->outs[k].name, &t, &err))
            return INFINITY;
        double mx = 0;
        uint64_t n = dtl_tensor_numel(&t);
        for (uint64_t i = 0; i < n; i++) {
            double v = fabs(elem_f(&t, i));
            if (!isfinite(v))
                return INFINITY;   /* then only NaN/inf equality is checked */
            mx = v > mx ? v : mx;
        }
        bound += bt_tol(t.dtype) * (double)n * 2 * mx;
    }
    return bound;
}

typedef struct side {
    const bt_backend *b;
    dtl_store *store;
    dtl_plan *plan;
    unsigned failed, known;
    bool dead;   /* its plan failed: skip it */
} side;

/* Records a failure of backend s on label; prints the context line. */
static void fail_on(bt_case *c, side *s, const char *sub, unsigned run, const char *msg)
{
    char full[400];
    snprintf(full, sizeof full, "%s: %s", c->label, sub);
    const char *why = bt_known(s->b->name, full);
    if (why) {
        s->known++;
        fprintf(stderr, "  (known failure on %s: %s)\n", s->b->name, why);
        return;
    }
    s->failed++;
    if (msg)
        fprintf(stderr, "%s %s on %s, run %u: %s\n", bt_fail_word(s->b->name, full), full,
                s->b->name, run + 1, msg);
}

bool bt_case_run(bt_case *c)
{
    size_t nb;
    const bt_backend *bes = bt_backends(&nb);
    return bt_case_run_on(c, bes, nb);
}

bool bt_case_run_on(bt_case *c, const bt_backend *bes, size_t nb)
{
    counts.cases++;
    counts.subcases += c->nsubs;
    bool ok = add_gradients(c);
    if (ok && !dtl_graph_verify(&c->g, stderr)) {
        fprintf(stderr, "%s: the test graph does not verify\n", c->label);
        ok = false;
    }
    if (!ok) {
        counts.failed++;
        bt_case_free(c);
        return false;
    }
    const char *print = getenv("DTL_TEST_PRINT");
    if (print && *print) {
        printf("--- case %s, with its loss and gradients:\n", c->label);
        dtl_graph_print(&c->g, stdout);
        dtl_graph opt;
        dtl_err perr = {0};
        if (strcmp(print, "2") == 0 && dtl_passes_run(&opt, &c->g, NULL, &perr)) {
            printf("--- after the passes (compiler/passes/passes.h):\n");
            dtl_graph_print(&opt, stdout);
            dtl_kprog *kp = dtl_fuse(&opt, NULL);
            printf("--- the kernel program (compiler/passes/fuse.h):\n");
            dtl_kprog_print(stdout, kp);
            dtl_kprog_free(kp);
        }
        if (strcmp(print, "2") == 0)
            dtl_graph_free(&opt);
    }

    /* The inputs of both runs. */
    void **data = xrealloc(NULL, 2 * (size_t)c->nins * sizeof *data);
    dtl_binding *bind = xrealloc(NULL, 2 * (size_t)c->nins * sizeof *bind);
    for (unsigned run = 0; run < 2; run++)
        for (uint32_t i = 0; i < c->nins; i++) {
            const dtl_node *n = dtl_g_node(&c->g, c->ins[i].v);
            uint64_t numel = dtl_node_numel(n);
            void *p = xrealloc(NULL, numel * dtl_dtype_size(n->dtype));
            dtl_rng r;
            dtl_rng_init(&r, c->seed * 2 + run, dtl_rng_stream_id(c->ins[i].sub, c->ins[i].k));
            bt_fill(p, n->dtype, numel, c->ins[i].d, &r);
            data[run * c->nins + i] = p;
            dtl_binding *b = &bind[run * c->nins + i];
            b->name = n->name;
            b->data = p;
            b->dtype = n->dtype;
            b->rank = n->rank;
            memcpy(b->shape, n->shape, sizeof b->shape);
        }

    side *sides = calloc(nb + 1, sizeof *sides);
    if (!sides)
        abort();
    static const bt_backend ref = {"ref", &dtl_backend_ref, {0}};
    sides[0].b = &ref;
    for (size_t i = 0; i < nb; i++)
        sides[i + 1].b = &bes[i];
    char msg[700];
    bool verbose = getenv("DTL_TEST_VERBOSE") && *getenv("DTL_TEST_VERBOSE");
    if (verbose)
        fprintf(stderr, "%s: %u subcases, %u nodes, %u outputs; prepare", c->label, c->nsubs,
                c->g.nnodes, c->nouts);
    for (size_t i = 0; i <= nb; i++) {
        dtl_err err = {0};
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        sides[i].store = dtl_store_new(c->seed);
        sides[i].plan = dtl_plan_new(sides[i].b->be, &c->g, sides[i].store, &sides[i].b->opts,
                                     &err);
        if (!sides[i].plan) {
            sides[i].dead = true;
            if (i == 0) {
                fprintf(stderr, "%s: the reference cannot plan the case: %s\n", c->label,
                        err.msg);
                ok = false;
            } else {
                snprintf(msg, sizeof msg, "prepare failed: %s", err.msg);
                fail_on(c, &sides[i], "(prepare)", 0, msg);
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (verbose)
            fprintf(stderr, " %s %.0f ms", sides[i].b->name,
                    (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    }
    if (verbose)
        fprintf(stderr, "\n");

    char what[600];
    for (unsigned run = 0; ok && run < 2; run++) {
        dtl_err err = {0};
        if (!dtl_plan_run(sides[0].plan, bind + run * c->nins, c->nins, &err)) {
            fprintf(stderr, "%s: the reference fails run %u: %s\n", c->label, run + 1, err.msg);
            ok = false;
            break;
        }
        for (size_t i = 1; i <= nb; i++) {
            side *s = &sides[i];
            if (s->dead)
                continue;
            if (!dtl_plan_run(s->plan, bind + run * c->nins, c->nins, &err)) {
                snprintf(msg, sizeof msg, "run failed: %s", err.msg);
                fail_on(c, s, "(run)", run, msg);
                s->dead = true;
                continue;
            }
            for (uint32_t k = 0; k < c->nouts; k++) {
                const bt_outrec *o = &c->outs[k];
                dtl_tensor want, got;
                counts.compared++;
                char full[400];
                snprintf(full, sizeof full, "%s: %s", c->label, o->sub);
                bt_known_seen(s->b->name, full);
                if (!dtl_plan_output(sides[0].plan, o->name, &want, &err)) {
                    fprintf(stderr, "%s: the reference has no output %s: %s\n", c->label,
                            o->name, err.msg);
                    ok = false;
                    continue;
                }
                if (!dtl_plan_output(s->plan, o->name, &got, &err)) {
                    snprintf(msg, sizeof msg, "output %s: %s", o->name, err.msg);
                    fail_on(c, s, o->sub, run, msg);
                    continue;
                }
                snprintf(what, sizeof what, "%s %s: %s on %s, run %u, output %s",
                         bt_fail_word(s->b->name, full), c->label, o->sub, s->b->name, run + 1,
                         o->name);
                if (o->is_loss) {
                    double a = elem_f(&got, 0), b = elem_f(&want, 0);
                    double bound = loss_bound(c, sides[0].plan);
                    bool same = got.dtype == want.dtype && got.rank == 0 && want.rank == 0;
                    bool close = isnan(b) ? isnan(a) : isinf(b) ? a == b
                                 : isinf(bound) || fabs(a - b) <= bound;
                    if (!same || !close) {
                        fprintf(stderr, "%s: got %.17g, want %.17g (|diff| %.3g > %.3g, the "
                                "error the outputs' tolerances allow)\n", what, a, b,
                                fabs(a - b), bound);
                        fail_on(c, s, o->sub, run, NULL);
                    }
                } else if (!bt_match(what, &got, &want, o->factor)) {
                    fail_on(c, s, o->sub, run, NULL);
                }
            }
            snprintf(what, sizeof what, "%s %s on %s, run %u",
                     bt_fail_word(s->b->name, c->label), c->label, s->b->name, run + 1);
            if (!dtl_store_sync(s->store, DTL_SYNC_TO_HOST, &err) ||
                !dtl_store_sync(sides[0].store, DTL_SYNC_TO_HOST, &err)) {
                snprintf(msg, sizeof msg, "store sync: %s", err.msg);
                fail_on(c, s, "(store)", run, msg);
            } else if (!bt_match_stores(what, s->store, sides[0].store, 1.0))
                fail_on(c, s, "(store)", run, NULL);
        }
    }

    for (size_t i = 0; i <= nb; i++) {
        if (i > 0) {
            counts.failed += sides[i].failed;
            counts.known += sides[i].known;
            if (sides[i].failed)
                ok = false;
        }
        dtl_plan_free(sides[i].plan);
        dtl_store_free(sides[i].store);
    }
    free(sides);
    for (uint32_t i = 0; i < 2 * c->nins; i++)
        free(data[i]);
    free(data);
    free(bind);
    bt_case_free(c);
    return ok;
}

/* ---- models -------------------------------------------------------------------------------- */

bool bt_model_load(bt_model *m, const char *path, const char *src, const dtl_lower_opts *opts)
{
    memset(m, 0, sizeof *m);
    dtl_ctx_init(&m->ctx);
    dtl_ctx_add_default_paths(&m->ctx);
    dtl_module *mod;
    if (src) {
        const dtl_source *s = dtl_src_add(&m->ctx.sources, path, src, strlen(src));
        mod = dtl_check_source(&m->ctx, s);
    } else {
        mod = dtl_check_path(&m->ctx, path);
    }
    const dtl_train *t = mod && !dtl_diag_failed(&m->ctx.diags) ? dtl_lower_find_train(mod, NULL)
                                                                 : NULL;
    if (t && dtl_lower_train(&m->ctx, t, opts, &m->low)) {
        m->lowered = true;
        return true;
    }
    fprintf(stderr, "%s: cannot %s\n", path, t ? "lower the train block" : "check it (or it has no train block)");
    dtl_diag_print(&m->ctx.diags, stderr, false);
    dtl_ctx_free(&m->ctx);
    memset(m, 0, sizeof *m);
    return false;
}

void bt_model_free(bt_model *m)
{
    if (m->lowered)
        dtl_lowered_free(&m->low);
    dtl_ctx_free(&m->ctx);
    memset(m, 0, sizeof *m);
}

static const dtl_node *find_input(const dtl_graph *g, const char *name)
{
    for (uint32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == DTL_OP_INPUT && strcmp(g->nodes[i].name, name) == 0)
            return &g->nodes[i];
    return NULL;
}

bool bt_batch_init(bt_batch *b, const dtl_graph *g, int64_t classes)
{
    memset(b, 0, sizeof *b);
    const dtl_node *x = find_input(g, "x");
    if (!x)
        return false;
    const dtl_node *y = find_input(g, "y");
    int64_t rows = x->rank ? x->shape[0] : 1;
    if (y && (y->rank < 1 || y->shape[0] != rows)) {
        fprintf(stderr, "bt_batch_init: the input y has not %lld rows\n", (long long)rows);
        return false;
    }
    b->x = xrealloc(NULL, dtl_node_numel(x) * dtl_dtype_size(x->dtype));
    /* y: i64[rows] labels, f32[rows] targets, i64[rows, T] text (whatever the graph takes) */
    b->y = xrealloc(NULL, y ? dtl_node_numel(y) * dtl_dtype_size(y->dtype) : 8);
    b->in[0] = (dtl_binding){"x", b->x, x->dtype, x->rank, {0}};
    memcpy(b->in[0].shape, x->shape, sizeof b->in[0].shape);
    b->in[1] = (dtl_binding){"y", b->y, DTL_DTYPE_I64, 1, {rows}};
    if (y) {
        b->in[1].dtype = y->dtype;
        b->in[1].rank = y->rank;
        memcpy(b->in[1].shape, y->shape, sizeof b->in[1].shape);
    }
    b->in[2] = (dtl_binding){"step", &b->step, DTL_DTYPE_I64, 0, {0}};
    b->in[3] = (dtl_binding){"total_steps", &b->total_steps, DTL_DTYPE_I64, 0, {0}};
    b->nin = 4;
    b->total_steps = 100;
    b->classes = classes > 0 ? classes : 2;
    return true;
}

void bt_batch_fill(bt_batch *b, uint64_t seed, uint64_t k, int64_t step)
{
    dtl_rng r;
    dtl_tensor xt = {b->x, b->in[0].dtype, b->in[0].rank, {0}};
    memcpy(xt.shape, b->in[0].shape, sizeof xt.shape);
    dtl_rng_init(&r, seed, dtl_rng_stream_id("bt_batch.x", k));
    if (dtl_dtype_is_int(xt.dtype))   /* ids (text windows): in [0, classes) */
        bt_fill(b->x, xt.dtype, dtl_tensor_numel(&xt), BT_I(0, (double)(b->classes - 1)), &r);
    else
        bt_fill(b->x, xt.dtype, dtl_tensor_numel(&xt), BT_U(0, 1), &r);
    dtl_tensor yt = {b->y, b->in[1].dtype, b->in[1].rank, {0}};
    memcpy(yt.shape, b->in[1].shape, sizeof yt.shape);
    dtl_rng_init(&r, seed, dtl_rng_stream_id("bt_batch.y", k));
    if (dtl_dtype_is_int(yt.dtype))
        bt_fill(b->y, yt.dtype, dtl_tensor_numel(&yt), BT_I(0, (double)(b->classes - 1)), &r);
    else
        bt_fill(b->y, yt.dtype, dtl_tensor_numel(&yt), BT_U(0, 1), &r);
    b->step = step;
}

void bt_batch_free(bt_batch *b)
{
    free(b->x);
    free(b->y);
    memset(b, 0, sizeof *b);
}

int64_t bt_classes(const dtl_lowered *low)
{
    if (!low->has_infer)
        return 2;
    const dtl_graph *g = &low->infer;
    for (uint32_t i = 0; i < g->nouts; i++)
        if (strcmp(g->outs[i].name, "y") == 0) {
            const dtl_node *n = dtl_g_node(g, g->outs[i].val);
            return n->rank ? n->shape[n->rank - 1] : 2;
        }
    return 2;
}

const char *bt_srcdir(void)
{
    return DTL_SRC_STDLIB_DIR "/..";
}
