/* compiler/lower.c — from a checked train block to graphs.
 *
 * Design: lowering is an evaluator over the checked AST. Every expression evaluates to a
 * value (lv): a host value (int, float, bool, str, none, dtype), a tensor (a graph node),
 * or one of the things names denote (a model instance, a fn bound to an instance, a
 * module). Host values are computed on the spot, so everything the checker left symbolic
 * (constructor arguments, a fn's dims, B) is a number here; tensor operations append
 * nodes. Calls are inlined: a fn's body is evaluated in an environment (env) that binds its
 * parameters to the argument values and every dim variable in scope to a number (the
 * instance's constructor parameters, the fn's symbolic dims, its int parameters).
 *
 * The checker's annotations drive everything: a NAME or MEMBER's sym says what it denotes,
 * a CALL's dtl_call says what is called with which arguments in parameter order, and each
 * expression's type gives its dtype. After each tensor expression the node's shape is
 * compared with the checker's type evaluated in the environment; a difference means that a
 * size the checker could only see symbolically does not work out at these sizes (a slice
 * beyond its dim, say), and is reported there, so the graph builders (which abort on a
 * misfit) are only ever called with operands that fit. Operations that could still misfit
 * at concrete sizes (broadcasts, reshapes, indices, empty reductions, sizes that overflow)
 * are checked before the builder is called.
 *
 * Instances are built eagerly, depth first in declaration order: a PARAM node per param
 * (named by its dotted path) and an instance per submodel member, so every graph of one
 * train block declares the same params in the same order. Constant members and top-level
 * lets are evaluated on first use and cached per graph. In the eval and infer graphs calls
 * are memoized (same fn, instance and argument values: same result), so forward(x) in the
 * loss and in the accuracy count is one subgraph; in the step graph they are not, because
 * two calls of a fn with dropout must draw different masks.
 *
 * Mixed precision (`precision`, dtl_lower_precision) is applied here, at each f32 matrix
 * product (dtl_nn_matmul_prec): bf16 casts of both operands, or a tf32 product, in every
 * graph of the block; autodiff then makes the backward products alike.
 */
#include "lower.h"

#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lang/print.h"
#include "../runtime/philox.h"
#include "autodiff.h"
#include "nnops.h"
#include "repl_ctors.h"

/* Evaluation nests at most this deep (expressions inside inlined calls inside …), so no
 * input can exhaust the C stack; a graph grows to at most MAX_NODES nodes (inlining can
 * multiply a program's size); a tensor holds at most MAX_NUMEL elements. */
enum { MAX_DEPTH = 2000 };
#define MAX_NODES ((uint32_t)1 << 18)
#define MAX_NUMEL ((int64_t)1 << 48)

/* ---- values ------------------------------------------------------------------------------ */

typedef struct inst inst;
typedef struct lv lv;

typedef enum lv_kind {
    LV_INT, LV_FLOAT, LV_BOOL, LV_STR, LV_NONE, LV_DTYPE,
    LV_TENSOR,     /* u.t: a node */
    LV_LIST,       /* u.list: concat's argument */
    LV_INST,       /* u.in: a model instance */
    LV_FN,         /* u.fn: a fn, of an instance or (in NULL) top level */
    LV_MODULE,     /* a `use`d module: only its members are values */
    LV_OTHER,      /* a model, builtin, dataset …: only callable or a setting */
} lv_kind;

struct lv {
    lv_kind kind;
    union {
        int64_t i;
        double f;
        bool b;
        struct { const char *s; size_t n; } str;
        dtl_dtype dt;
        dtl_val t;
        struct { lv *items; size_t n; } list;
        inst *in;
        struct { dtl_fn *fn; inst *in; } fn;
    } u;
};

/* A model instance: its constructor values, its params' nodes, its submodels. */
struct inst {
    dtl_model *model;
    const char *path;          /* "" for the train's model, "fc1.", "enc.fc1." */
    lv *ctor;                  /* per constructor parameter */
    dtl_subst subst;           /* the constructor parameters' variables → their values */
    dtl_val *params;           /* per param */
    inst **subs;               /* per member: its instance, or NULL (a constant) */
    lv *mval;                  /* per member: a constant's value … */
    unsigned char *mstate;     /* … 0 not yet evaluated, 1 being evaluated, 2 done */
    inst **reps;               /* a stack made by repeat(n, …): its n instances, applied in */
    int64_t nreps;             /* order when called ("blocks.0.", …); else NULL and 0 */
};

/* Where an expression is evaluated. */
typedef struct env {
    inst *in;                  /* the instance whose body this is, or NULL */
    const dtl_module *mod;     /* for messages */
    dtl_subst subst;           /* every dim variable in scope → a constant */
    const dtl_sym **syms;      /* fn parameters and block lets → values */
    lv *vals;
    size_t n, cap;
} env;

typedef struct memo {
    const dtl_fn *fn;
    const inst *in;
    lv *args;
    size_t nargs;
    lv result;
} memo;

typedef struct low {
    dtl_ctx *ctx;
    dtl_diags *d;
    dtl_arena *ca;             /* the compilation's arena: messages, data strings */
    dtl_arena scratch;         /* everything else of this lowering */
    dtl_graph *g;
    dtl_lower_kind kind;
    dtl_dtype fdt;             /* what f32 becomes (the dtype policy) */
    int64_t batch;
    const dtl_train *t;
    const dtl_module *mod;     /* the train block's */
    unsigned depth;
    bool depth_reported;
    uint64_t ndropout;
    lv x, y;                   /* the batch's inputs */
    inst *root;
    dtl_val *params;           /* every PARAM node, in creation order … */
    const dtl_sym **param_syms;/* … and the declaration it comes from */
    uint32_t nparams, capparams;
    const dtl_sym **lets;      /* top-level lets evaluated so far */
    lv *letv;
    size_t nlets, caplets;
    memo *memos;
    size_t nmemos, capmemos;
    bool expr;                 /* dtl_lower_expr: a free-standing expression (t is NULL) */
    uint64_t nrandom;          /* rand/randn lowered so far: the next one's stream */
    int shard_rank, shard_world;   /* dtl_lower_opts: GRAD as rank r's share of the batch */
    dtl_precision prec;        /* of the matrix products (f32 ones only) */
} low;

static bool eval(low *l, env *e, const dtl_expr *x, lv *out);

/* A graph that trains: dropout draws masks, calls are not memoized (STEP and GRAD). */
static bool training_kind(const low *l)
{
    return l->kind == DTL_LOWER_STEP || l->kind == DTL_LOWER_GRAD;
}

/* ---- small helpers ----------------------------------------------------------------------- */

static bool fail(low *l, dtl_span at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(low *l, dtl_span at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = dtl_arena_vprintf(l->ca, fmt, ap);
    va_end(ap);
    dtl_diag_error(l->d, at, "%s", msg);
    return false;
}

static const dtl_expr *strip(const dtl_expr *e)
{
    while (e && e->kind == DTL_EXPR_PAREN)
        e = e->u.paren;
    return e;
}

static const char *ename(low *l, const dtl_expr *e, const char *fallback)
{
    return dtl_operand_name(l->ca, e, fallback);
}

static const dtl_node *nd(const low *l, dtl_val v)
{
    return &l->g->nodes[v];
}

static dtl_dtype mapdt(const low *l, dtl_dtype dt)
{
    return dt == DTL_DTYPE_F32 ? l->fdt : dt;
}

static const char *shape_str(low *l, dtl_dtype dt, uint32_t rank, const int64_t *shape)
{
    char *s = dtl_arena_printf(l->ca, "%s[", dtl_dtype_name(dt));
    for (uint32_t i = 0; i < rank; i++)
        s = dtl_arena_printf(l->ca, "%s%s%" PRId64, s, i ? ", " : "", shape[i]);
    return dtl_arena_printf(l->ca, "%s]", s);
}

static const char *node_str(low *l, dtl_val v)
{
    const dtl_node *n = nd(l, v);
    return shape_str(l, n->dtype, n->rank, n->shape);
}

static lv lv_int(int64_t v)
{
    lv r = {.kind = LV_INT};
    r.u.i = v;
    return r;
}

static lv lv_float(double v)
{
    lv r = {.kind = LV_FLOAT};
    r.u.f = v;
    return r;
}

static lv lv_bool(bool v)
{
    lv r = {.kind = LV_BOOL};
    r.u.b = v;
    return r;
}

static lv lv_tensor(dtl_val v)
{
    lv r = {.kind = LV_TENSOR};
    r.u.t = v;
    return r;
}

static bool is_number(const lv *v)
{
    return v->kind == LV_INT || v->kind == LV_FLOAT;
}

static double num(const lv *v)
{
    return v->kind == LV_INT ? (double)v->u.i : v->kind == LV_FLOAT ? v->u.f : (double)v->u.b;
}

/* A shape may be built: rank within the IR's limit, no negative size, element count within
 * MAX_NUMEL. Reports at `at` about `what`. */
static bool shape_ok(low *l, dtl_span at, const char *what, dtl_dtype dt, uint32_t rank,
                     const int64_t *shape)
{
    if (rank > DTL_MAX_RANK)
        return fail(l, at, "%s has rank %u; tensors of rank above %d are not supported", what,
                    rank, DTL_MAX_RANK);
    int64_t n = 1;
    for (uint32_t i = 0; i < rank; i++) {
        if (shape[i] < 0)
            return fail(l, at, "%s would have the negative size %" PRId64 " in dimension %u",
                        what, shape[i], i);
        if (n != 0 && shape[i] > MAX_NUMEL / n)
            return fail(l, at, "%s is too large: %s has more than 2^48 elements", what,
                        shape_str(l, dt, rank, shape));
        n *= shape[i];
    }
    return true;
}

/* The graph must stay within MAX_NODES; checked after each call is inlined. */
static bool graph_ok(low *l, dtl_span at)
{
    if (l->g->nnodes <= MAX_NODES)
        return true;
    return fail(l, at, "the graph is too large: more than %" PRIu32 " nodes after inlining "
                "this call", MAX_NODES);
}

/* ---- dims -------------------------------------------------------------------------------- */

/* The value of d with its variables bound by s (each to a constant). False when one is not
 * bound, on overflow, and for a quotient that is not whole when exact (else it is floored,
 * the slice-length rule). */
static bool dim_eval(const dtl_dim *d, const dtl_subst *s, bool exact, int64_t *out)
{
    int64_t sum = 0;
    for (uint32_t i = 0; i < d->nterms; i++) {
        const dtl_dimterm *t = &d->terms[i];
        int64_t p = t->coef;
        for (uint32_t j = 0; j < t->natoms; j++) {
            const dtl_dimatom *at = t->atoms[j];
            int64_t f;
            if (at->var) {
                const dtl_dim *b = s ? dtl_subst_get(s, at->var) : NULL;
                if (!b || !dtl_dim_is_const(b, &f))
                    return false;
            } else {
                int64_t nv, dv;
                if (!dim_eval(at->num, s, exact, &nv) || !dim_eval(at->den, s, exact, &dv) ||
                    dv == 0 || (nv == INT64_MIN && dv == -1))
                    return false;
                if (exact && nv % dv != 0)
                    return false;
                f = nv / dv;
                if ((nv % dv != 0) && ((nv < 0) != (dv < 0)))
                    f--;   /* floor */
            }
            if (__builtin_mul_overflow(p, f, &p))
                return false;
        }
        if (__builtin_add_overflow(sum, p, &sum))
            return false;
    }
    *out = sum;
    return true;
}

static void subst_copy(low *l, dtl_subst *to, const dtl_subst *from)
{
    memset(to, 0, sizeof *to);
    for (size_t i = 0; i < from->n; i++) {
        if (from->dims[i])
            dtl_subst_set(&l->scratch, to, from->vars[i], from->dims[i]);
        else if (from->vals[i])
            dtl_subst_set_val(&l->scratch, to, from->vars[i], from->vals[i]);
    }
}

static void subst_int(low *l, dtl_subst *s, const dtl_dimvar *v, int64_t val)
{
    dtl_subst_set(&l->scratch, s, v, dtl_dim_const(&l->scratch, val));
}

/* The concrete shape of a tensor type in env e (exact quotients). */
static bool type_shape(const dtl_type *t, const dtl_subst *s, bool exact, int64_t *shape)
{
    if (t->kind != DTL_TYPE_TENSOR || t->u.t.rank > DTL_MAX_RANK)
        return false;
    for (uint32_t i = 0; i < t->u.t.rank; i++)
        if (!dim_eval(t->u.t.dims[i], s, exact, &shape[i]))
            return false;
    return true;
}

/* ---- host values ------------------------------------------------------------------------- */

/* A constant the checker computed (a default, a train header's argument) as a value. */
static bool type_value(low *l, dtl_span at, const dtl_type *t, lv *out)
{
    memset(out, 0, sizeof *out);
    if (t) {
        switch (t->kind) {
        case DTL_TYPE_INT:
            if (t->u.ival && dtl_dim_is_const(t->u.ival, &out->u.i)) {
                out->kind = LV_INT;
                return true;
            }
            break;
        case DTL_TYPE_FLOAT:
            if (t->u.f.known) {
                *out = lv_float(t->u.f.v);
                return true;
            }
            break;
        case DTL_TYPE_BOOL:
            if (t->u.b.known) {
                *out = lv_bool(t->u.b.v);
                return true;
            }
            break;
        case DTL_TYPE_STR:
            if (t->u.s.bytes) {
                out->kind = LV_STR;
                out->u.str.s = t->u.s.bytes;
                out->u.str.n = t->u.s.len;
                return true;
            }
            break;
        case DTL_TYPE_NONE:
            out->kind = LV_NONE;
            return true;
        case DTL_TYPE_DTYPE:
            out->kind = LV_DTYPE;
            out->u.dt = t->u.dtype;
            return true;
        default:
            break;
        }
    }
    return fail(l, at, "internal error: lowering needs a constant here, found %s",
                t ? dtl_type_print(l->ca, t, l->mod) : "nothing");
}

/* The variable-carrying form of a host value, for substitutions. */
static dtl_type *value_type(low *l, const lv *v)
{
    switch (v->kind) {
    case LV_FLOAT:
        return dtl_type_float(&l->scratch, true, v->u.f);
    case LV_BOOL:
        return dtl_type_bool(&l->scratch, true, v->u.b);
    case LV_STR: {
        dtl_type *t = dtl_type_new(&l->scratch, DTL_TYPE_STR);
        t->u.s.bytes = v->u.str.s;
        t->u.s.len = v->u.str.n;
        return t;
    }
    default:
        return NULL;
    }
}

/* v converted for a declared host type (an int where a float is wanted). */
static lv coerce_host(const dtl_type *want, lv v)
{
    if (want && want->kind == DTL_TYPE_FLOAT && v.kind == LV_INT)
        return lv_float((double)v.u.i);
    return v;
}

/* A host number as a rank-0 constant of dtype dt. */
static dtl_val host_const(low *l, const lv *v, dtl_dtype dt)
{
    if (dtl_dtype_is_int(dt) && v->kind == LV_INT &&
        (v->u.i > (INT64_C(1) << 53) || v->u.i < -(INT64_C(1) << 53))) {
        /* Beyond a double's integers: give the exact value as data. */
        if (dt == DTL_DTYPE_I64)
            return dtl_g_const_data(l->g, dt, 0, NULL, &v->u.i);
        int32_t w = (int32_t)v->u.i;
        return dtl_g_const_data(l->g, dt, 0, NULL, &w);
    }
    return dtl_g_scalar(l->g, dt, num(v));
}

/* Converts v to a tensor for a declared tensor type (a host number given where a rank-0
 * tensor is expected). */
static void coerce_tensor(low *l, const dtl_type *want, lv *v)
{
    if (want && want->kind == DTL_TYPE_TENSOR && (is_number(v) || v->kind == LV_BOOL))
        *v = lv_tensor(host_const(l, v, mapdt(l, want->u.t.dtype)));
}


/* Folds a binary operator over two host values, as the checker does. */
static bool fold_binary(low *l, const dtl_expr *e, const lv *x, const lv *y, lv *out)
{
    dtl_binop op = e->u.binary.op;
    if (op == DTL_BINOP_AND || op == DTL_BINOP_OR) {
        if (x->kind != LV_BOOL || y->kind != LV_BOOL)
            goto bad;
        *out = lv_bool(op == DTL_BINOP_AND ? x->u.b && y->u.b : x->u.b || y->u.b);
        return true;
    }
    if (dtl_binop_is_cmp(op)) {
        if ((op == DTL_BINOP_EQ || op == DTL_BINOP_NE) && x->kind == y->kind &&
            (x->kind == LV_BOOL || x->kind == LV_STR)) {
            bool eq = x->kind == LV_BOOL ? x->u.b == y->u.b
                                         : x->u.str.n == y->u.str.n &&
                                               (x->u.str.n == 0 ||
                                                memcmp(x->u.str.s, y->u.str.s, x->u.str.n) == 0);
            *out = lv_bool(eq == (op == DTL_BINOP_EQ));
            return true;
        }
        if (!is_number(x) || !is_number(y))
            goto bad;
        if (x->kind == LV_INT && y->kind == LV_INT)
            *out = lv_bool(dtl_binop_cmp(op, x->u.i < y->u.i ? -1 : x->u.i > y->u.i, 0));
        else
            *out = lv_bool(dtl_binop_cmp(op, num(x), num(y)));
        return true;
    }
    if (!is_number(x) || !is_number(y))
        goto bad;
    if (x->kind == LV_INT && y->kind == LV_INT && op != DTL_BINOP_DIV) {
        int64_t a = x->u.i, b = y->u.i, r = 0;
        bool ok = true;
        switch (op) {
        case DTL_BINOP_ADD: ok = !__builtin_add_overflow(a, b, &r); break;
        case DTL_BINOP_SUB: ok = !__builtin_sub_overflow(a, b, &r); break;
        case DTL_BINOP_MUL: ok = !__builtin_mul_overflow(a, b, &r); break;
        case DTL_BINOP_POW:
            if (b < 0) {
                *out = lv_float(pow((double)a, (double)b));
                return true;
            }
            ok = dtl_int_pow(a, b, &r);
            break;
        default:
            goto bad;
        }
        if (!ok)
            return fail(l, e->span, "integer overflow: %s is out of range here",
                        ename(l, e, "this expression"));
        *out = lv_int(r);
        return true;
    }
    double a = num(x), b = num(y), r;
    switch (op) {
    case DTL_BINOP_ADD: r = a + b; break;
    case DTL_BINOP_SUB: r = a - b; break;
    case DTL_BINOP_MUL: r = a * b; break;
    case DTL_BINOP_DIV:
        if (b == 0)
            return fail(l, e->span, "division by zero: %s is 0 here",
                        ename(l, e->u.binary.rhs, "the divisor"));
        r = a / b;
        break;
    case DTL_BINOP_POW: r = pow(a, b); break;
    default: goto bad;
    }
    *out = lv_float(r);
    return true;
bad:
    return fail(l, e->span, "internal error: lowering cannot fold '%s' here",
                dtl_binop_text(op));
}

/* ---- environments ------------------------------------------------------------------------ */

static void bind(low *l, env *e, const dtl_sym *s, lv v)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 8;
        e->syms = dtl_arena_grow(&l->scratch, e->syms, e->n, cap, sizeof *e->syms);
        e->vals = dtl_arena_grow(&l->scratch, e->vals, e->n, cap, sizeof *e->vals);
        e->cap = cap;
    }
    e->syms[e->n] = s;
    e->vals[e->n++] = v;
}

static const lv *lookup(const env *e, const dtl_sym *s)
{
    for (size_t i = e->n; i-- > 0;)
        if (e->syms[i] == s)
            return &e->vals[i];
    return NULL;
}

static void env_init(low *l, env *e, inst *in, const dtl_module *mod)
{
    memset(e, 0, sizeof *e);
    e->in = in;
    e->mod = mod ? mod : l->mod;
    if (in)
        subst_copy(l, &e->subst, &in->subst);
}

/* ---- tensor literals --------------------------------------------------------------------- */

static void put_elem(void *buf, dtl_dtype dt, size_t i, const lv *v)
{
    switch (dt) {
    case DTL_DTYPE_F64: ((double *)buf)[i] = num(v); break;
    case DTL_DTYPE_F32: ((float *)buf)[i] = (float)num(v); break;
    case DTL_DTYPE_I64: ((int64_t *)buf)[i] = v->kind == LV_INT ? v->u.i : (int64_t)num(v); break;
    case DTL_DTYPE_I32:
        ((int32_t *)buf)[i] = (int32_t)(v->kind == LV_INT ? v->u.i : (int64_t)num(v));
        break;
    case DTL_DTYPE_BOOL: ((bool *)buf)[i] = num(v) != 0; break;
    default: break;   /* f16/bf16: refused by the dtype policy and never a literal's dtype */
    }
}

/* Evaluates the leaves of literal lit into buf (row-major, dtype dt, count elements) from
 * index *k on. */
static bool literal_fill(low *l, env *e, const dtl_expr *lit, dtl_dtype dt, void *buf,
                         size_t count, size_t *k)
{
    lit = strip(lit);
    if (lit->kind == DTL_EXPR_TENSOR) {
        for (size_t i = 0; i < lit->u.tensor.nelems; i++)
            if (!literal_fill(l, e, lit->u.tensor.elems[i], dt, buf, count, k))
                return false;
        return true;
    }
    lv v;
    if (!eval(l, e, lit, &v))
        return false;
    if (!is_number(&v) && v.kind != LV_BOOL)
        return fail(l, lit->span, "internal error: a tensor literal's element is not a number");
    if (*k >= count)
        return fail(l, lit->span, "internal error: a tensor literal is not rectangular");
    put_elem(buf, dt, (*k)++, &v);
    return true;
}

/* The data of tensor literal lit (whose checked type is a tensor) as dtype dt; its shape in
 * *rank, shape. The buffer is in the scratch arena. */
static void *literal_data(low *l, env *e, const dtl_expr *lit, dtl_dtype dt, uint32_t *rank,
                          int64_t *shape)
{
    const dtl_type *t = lit->type;
    if (!t || t->kind != DTL_TYPE_TENSOR) {
        fail(l, lit->span, "internal error: this literal has no tensor type");
        return NULL;
    }
    if (t->u.t.rank > DTL_MAX_RANK) {
        fail(l, lit->span, "this tensor literal has rank %u; tensors of rank above %d are not "
             "supported", t->u.t.rank, DTL_MAX_RANK);
        return NULL;
    }
    if (!type_shape(t, NULL, true, shape)) {
        fail(l, lit->span, "internal error: a literal's shape is not constant");
        return NULL;
    }
    *rank = t->u.t.rank;
    if (!shape_ok(l, lit->span, "this tensor literal", dt, *rank, shape))
        return NULL;
    size_t count = 1;
    for (uint32_t i = 0; i < *rank; i++)
        count *= (size_t)shape[i];
    void *buf = dtl_arena_array(&l->scratch, count ? count : 1, dtl_dtype_size(dt));
    size_t k = 0;
    if (!literal_fill(l, e, lit, dt, buf, count, &k))
        return NULL;
    if (k != count) {
        fail(l, lit->span, "internal error: a literal has %zu elements, its type %zu", k, count);
        return NULL;
    }
    return buf;
}

static bool eval_literal(low *l, env *e, const dtl_expr *x, lv *out)
{
    if (x->type && x->type->kind == DTL_TYPE_LIST) {
        size_t n = x->u.tensor.nelems;
        lv *items = dtl_arena_array(&l->scratch, n ? n : 1, sizeof *items);
        for (size_t i = 0; i < n; i++)
            if (!eval(l, e, x->u.tensor.elems[i], &items[i]))
                return false;
        out->kind = LV_LIST;
        out->u.list.items = items;
        out->u.list.n = n;
        return true;
    }
    dtl_dtype dt = mapdt(l, x->type ? x->type->u.t.dtype : DTL_DTYPE_F32);
    uint32_t rank;
    int64_t shape[DTL_MAX_RANK];
    void *data = literal_data(l, e, x, dt, &rank, shape);
    if (!data)
        return false;
    *out = lv_tensor(dtl_g_const_data(l->g, dt, rank, shape, data));
    return true;
}

/* ---- instances --------------------------------------------------------------------------- */

static bool new_inst(low *l, dtl_model *m, lv *ctor, const char *path, dtl_span at,
                     inst **out);
static bool new_stack(low *l, env *e, dtl_model *m, lv *ctor, const dtl_dim *rep,
                      const char *path, dtl_span at, inst **out);

/* The initializer of param p of instance in. */
static bool param_init(low *l, inst *in, const dtl_sym *p, dtl_dtype dt, uint32_t rank,
                       const int64_t *shape, dtl_init *init)
{
    memset(init, 0, sizeof *init);
    init->kind = DTL_INIT_ZEROS;
    const dtl_expr *v = p->decl->u.bind.value;
    if (!v)
        return true;   /* no initializer: zeros */
    env e;
    env_init(l, &e, in, p->module);
    const dtl_expr *s = strip(v);
    const dtl_sym *cs = s->kind == DTL_EXPR_CALL ? s->sym : NULL;
    if (cs && cs->kind == DTL_SYM_CALL && cs->u.call->kind == DTL_CALL_BUILTIN &&
        cs->u.call->builtin->kind == DTL_BUILTIN_INIT) {
        const dtl_call *c = cs->u.call;
        double a[2] = {0, 0};
        for (size_t i = 0; i < c->nargs && i < 2; i++) {
            lv av;
            if (c->args[i] ? !eval(l, &e, c->args[i], &av)
                           : !type_value(l, s->span, c->argtypes[i], &av))
                return false;
            if (!is_number(&av))
                return fail(l, c->args[i] ? c->args[i]->span : s->span,
                            "internal error: an initializer's argument is not a number");
            a[i] = num(&av);
        }
        init->a = a[0];
        init->b = a[1];
        switch (c->builtin->id) {
        case DTL_BI_ZEROS: init->kind = DTL_INIT_ZEROS; break;
        case DTL_BI_ONES: init->kind = DTL_INIT_ONES; break;
        case DTL_BI_CONSTANT: init->kind = DTL_INIT_CONSTANT; break;
        case DTL_BI_NORMAL:
            init->kind = DTL_INIT_NORMAL;
            if (!(a[1] > 0))
                return fail(l, s->span, "normal: 'std' must be > 0, found %s here",
                            dtl_double_print(l->ca, a[1]));
            break;
        case DTL_BI_UNIFORM:
            init->kind = DTL_INIT_UNIFORM;
            if (!(a[0] < a[1]))
                return fail(l, s->span, "uniform: 'low' must be less than 'high', found "
                            "low = %s, high = %s here", dtl_double_print(l->ca, a[0]),
                            dtl_double_print(l->ca, a[1]));
            break;
        case DTL_BI_GLOROT_UNIFORM:
        case DTL_BI_XAVIER_UNIFORM: init->kind = DTL_INIT_GLOROT_UNIFORM; break;
        case DTL_BI_GLOROT_NORMAL:
        case DTL_BI_XAVIER_NORMAL: init->kind = DTL_INIT_GLOROT_NORMAL; break;
        case DTL_BI_HE_UNIFORM:
        case DTL_BI_KAIMING_UNIFORM: init->kind = DTL_INIT_HE_UNIFORM; break;
        case DTL_BI_HE_NORMAL:
        case DTL_BI_KAIMING_NORMAL: init->kind = DTL_INIT_HE_NORMAL; break;
        default:
            return fail(l, s->span, "internal error: %s is not an initializer",
                        c->builtin->name);
        }
        if ((init->kind >= DTL_INIT_GLOROT_UNIFORM && init->kind <= DTL_INIT_HE_NORMAL) &&
            rank < 2)
            return fail(l, s->span, "%s() needs a param of rank 2 or more", c->builtin->name);
        return true;
    }
    if (v->type && v->type->kind == DTL_TYPE_TENSOR) {
        /* A tensor literal, possibly behind the name of a let or a constant member. */
        const dtl_expr *lit = s;
        env *le = &e;
        env other;
        for (int hops = 0; lit && lit->kind != DTL_EXPR_TENSOR && hops < 64; hops++) {
            const dtl_sym *ls = lit->kind == DTL_EXPR_NAME || lit->kind == DTL_EXPR_MEMBER
                                    ? lit->sym : NULL;
            if (ls && ls->kind == DTL_SYM_LET && !ls->fn && ls->decl) {
                env_init(l, &other, NULL, ls->module);
                le = &other;
                lit = strip(ls->decl->u.bind.value);
            } else if (ls && ls->kind == DTL_SYM_MEMBER && lit->kind == DTL_EXPR_NAME &&
                       ls->owner == in->model && ls->decl) {
                lit = strip(ls->decl->u.bind.value);
            } else {
                lit = NULL;
            }
        }
        if (!lit || lit->kind != DTL_EXPR_TENSOR)
            return fail(l, v->span, "param '%s': lowering supports an initializer call, a "
                        "number or a tensor literal as the initializer, not %s", p->name,
                        ename(l, v, "this expression"));
        uint32_t r;
        int64_t sh[DTL_MAX_RANK];
        void *data = literal_data(l, le, lit, dt, &r, sh);
        if (!data)
            return false;
        if (r != rank || memcmp(sh, shape, rank * sizeof *sh) != 0)
            return fail(l, v->span, "param '%s' is %s but its initializer is %s", p->name,
                        shape_str(l, dt, rank, shape), shape_str(l, dt, r, sh));
        init->kind = DTL_INIT_DATA;
        init->data = data;   /* copied by dtl_g_param */
        return true;
    }
    lv hv;
    if (!eval(l, &e, v, &hv))
        return false;
    if (!is_number(&hv))
        return fail(l, v->span, "internal error: param '%s' has no usable initializer",
                    p->name);
    init->kind = DTL_INIT_CONSTANT;
    init->a = num(&hv);
    return true;
}

static bool make_param(low *l, inst *in, const dtl_sym *p)
{
    const dtl_type *t = p->type;
    dtl_span at = p->span;
    const char *name = dtl_arena_printf(&l->scratch, "%s%s", in->path, p->name);
    int64_t shape[DTL_MAX_RANK];
    if (!t || t->kind != DTL_TYPE_TENSOR)
        return fail(l, at, "internal error: param '%s' has no tensor type", name);
    if (t->u.t.rank > DTL_MAX_RANK)
        return fail(l, at, "param '%s' has rank %u; tensors of rank above %d are not "
                    "supported", name, t->u.t.rank, DTL_MAX_RANK);
    if (!type_shape(t, &in->subst, true, shape))
        return fail(l, at, "the shape of param '%s' (%s) is not a whole number here", name,
                    dtl_type_print(l->ca, t, p->module));
    dtl_dtype dt = mapdt(l, t->u.t.dtype);
    bool state = p->decl && p->decl->u.bind.state;
    if (!dtl_dtype_is_float(dt))
        return fail(l, at, state ? "state '%s' is %s: states must have a float dtype"
                                 : "param '%s' is %s: params must have a float dtype, they are "
                                   "trained by gradients", name,
                    shape_str(l, dt, t->u.t.rank, shape));
    if (!shape_ok(l, at, dtl_arena_printf(l->ca, "param '%s'", name), dt, t->u.t.rank, shape))
        return false;
    dtl_init init;
    if (!param_init(l, in, p, dt, t->u.t.rank, shape, &init))
        return false;
    dtl_val v = dtl_g_param(l->g, name, dt, t->u.t.rank, shape, init);
    in->params[p->index] = v;
    if (state)
        return true;   /* a PARAM node, persistent like the others, but not trained */
    if (l->nparams == l->capparams) {
        uint32_t cap = l->capparams ? l->capparams * 2 : 16;
        l->params = dtl_arena_grow(&l->scratch, l->params, l->nparams, cap, sizeof *l->params);
        l->param_syms = dtl_arena_grow(&l->scratch, l->param_syms, l->nparams, cap,
                                       sizeof *l->param_syms);
        l->capparams = cap;
    }
    l->params[l->nparams] = v;
    l->param_syms[l->nparams++] = p;
    return true;
}

/* The arguments of a model instantiation (member `fc1 = Dense(784, hidden)`), evaluated in e
 * and converted to the constructor's parameter types. */
static bool ctor_args(low *l, env *e, const dtl_expr *call, const dtl_call *c, lv **out)
{
    const dtl_model *m = c->model;
    lv *args = dtl_arena_array(&l->scratch, m->nctor ? m->nctor : 1, sizeof *args);
    for (size_t i = 0; i < m->nctor; i++) {
        const dtl_expr *a = i < c->nargs ? c->args[i] : NULL;
        if (a ? !eval(l, e, a, &args[i])
              : !type_value(l, call->span, i < c->nargs ? c->argtypes[i] : m->defaults[i],
                            &args[i]))
            return false;
        args[i] = coerce_host(m->ctor[i]->type, args[i]);
    }
    *out = args;
    return true;
}

static bool new_inst(low *l, dtl_model *m, lv *ctor, const char *path, dtl_span at,
                     inst **out)
{
    if (l->depth >= MAX_DEPTH)
        return fail(l, at, "models nest too deeply to lower");
    l->depth++;
    inst *in = dtl_arena_alloc(&l->scratch, sizeof *in);
    in->model = m;
    in->path = path;
    in->ctor = ctor;
    for (size_t i = 0; i < m->nctor; i++) {
        const dtl_dimvar *v = m->ctor[i]->dimvar;
        if (!v)
            continue;
        dtl_type *vt = value_type(l, &ctor[i]);
        if (ctor[i].kind == LV_INT)
            subst_int(l, &in->subst, v, ctor[i].u.i);
        else if (vt)
            dtl_subst_set_val(&l->scratch, &in->subst, v, vt);
    }
    in->params = dtl_arena_array(&l->scratch, m->nparams ? m->nparams : 1, sizeof *in->params);
    in->subs = dtl_arena_array(&l->scratch, m->nmembers ? m->nmembers : 1, sizeof *in->subs);
    in->mval = dtl_arena_array(&l->scratch, m->nmembers ? m->nmembers : 1, sizeof *in->mval);
    in->mstate = dtl_arena_array(&l->scratch, m->nmembers ? m->nmembers : 1, 1);
    bool ok = true;
    for (size_t i = 0; i < m->decl->u.model.nitems && ok; i++) {
        const dtl_decl *it = m->decl->u.model.items[i];
        const dtl_sym *s = it->sym;
        if (!s || s->owner != m)
            continue;
        if (s->kind == DTL_SYM_PARAM) {
            ok = make_param(l, in, s);
        } else if (s->kind == DTL_SYM_MEMBER) {
            const dtl_expr *v = strip(it->u.bind.value);
            const dtl_sym *cs = v && v->kind == DTL_EXPR_CALL ? v->sym : NULL;
            if (!cs || cs->kind != DTL_SYM_CALL || cs->u.call->kind != DTL_CALL_NEW)
                continue;   /* a constant: evaluated when used */
            env e;
            env_init(l, &e, in, m->module);
            lv *args;
            const dtl_type *it_type = cs->u.call->inst;
            const char *mpath = dtl_arena_printf(&l->scratch, "%s%s.", path, s->name);
            if (it_type && it_type->u.m.rep)
                ok = ctor_args(l, &e, v, cs->u.call, &args) &&
                     new_stack(l, &e, cs->u.call->model, args, it_type->u.m.rep, mpath,
                               s->span, &in->subs[s->index]);
            else
                ok = ctor_args(l, &e, v, cs->u.call, &args) &&
                     new_inst(l, cs->u.call->model, args, mpath, s->span, &in->subs[s->index]);
            in->mstate[s->index] = 2;
            in->mval[s->index].kind = LV_INST;
            in->mval[s->index].u.in = in->subs[s->index];
        }
    }
    l->depth--;
    *out = in;
    return ok;
}

/* A stack made by repeat(n, Model(…)): n instances named PATH0., PATH1., … (path ends with
 * '.'), built in order so their params are declared in order. */
static bool new_stack(low *l, env *e, dtl_model *m, lv *ctor, const dtl_dim *rep,
                      const char *path, dtl_span at, inst **out)
{
    int64_t n;
    if (!dim_eval(rep, &e->subst, true, &n))
        return fail(l, at, "internal error: the count of repeat(…) is not known here");
    if (n < 1 || n > 100000)
        return fail(l, at, "repeat: the count must be between 1 and 100000, it is %" PRId64
                    " here", n);
    inst *st = dtl_arena_alloc(&l->scratch, sizeof *st);
    st->model = m;
    st->path = path;
    st->ctor = ctor;
    st->nreps = n;
    st->reps = dtl_arena_array(&l->scratch, (size_t)n, sizeof *st->reps);
    for (int64_t i = 0; i < n; i++)
        if (!new_inst(l, m, ctor, dtl_arena_printf(&l->scratch, "%s%" PRId64 ".", path, i), at,
                      &st->reps[i]))
            return false;
    *out = st;
    return true;
}

/* ---- names ------------------------------------------------------------------------------- */

static bool member_value(low *l, inst *in, const dtl_sym *s, dtl_span at, lv *out)
{
    unsigned k = s->index;
    if (in->mstate[k] == 2) {
        *out = in->mval[k];
        return true;
    }
    if (in->mstate[k] == 1)
        return fail(l, at, "internal error: member '%s' is defined in terms of itself", s->name);
    in->mstate[k] = 1;
    env e;
    env_init(l, &e, in, s->module);
    lv v;
    bool ok = eval(l, &e, s->decl->u.bind.value, &v);
    if (ok) {
        v = coerce_host(s->type, v);
        coerce_tensor(l, s->type, &v);
        in->mval[k] = v;
        in->mstate[k] = 2;
        *out = v;
    } else {
        in->mstate[k] = 0;
    }
    return ok;
}

/* What sym, a member of instance in's model, is in that instance. */
static bool inst_sym(low *l, inst *in, const dtl_sym *s, dtl_span at, lv *out)
{
    if (!in || s->owner != in->model)
        return fail(l, at, "internal error: '%s' is not a name of this model instance",
                    s->name);
    memset(out, 0, sizeof *out);
    switch (s->kind) {
    case DTL_SYM_CTOR_PARAM:
        *out = in->ctor[s->index];
        return true;
    case DTL_SYM_PARAM:
        *out = lv_tensor(in->params[s->index]);
        return true;
    case DTL_SYM_MEMBER:
        return member_value(l, in, s, at, out);
    case DTL_SYM_FN:
        out->kind = LV_FN;
        out->u.fn.fn = s->u.fn;
        out->u.fn.in = in;
        return true;
    default:
        return fail(l, at, "internal error: '%s' is not a member of a model", s->name);
    }
}

static bool toplevel_let(low *l, const dtl_sym *s, dtl_span at, lv *out)
{
    for (size_t i = 0; i < l->nlets; i++)
        if (l->lets[i] == s) {
            *out = l->letv[i];
            return true;
        }
    lv v;
    if (!s->decl) {
        /* A value of a dtlc repl session (lang/check.h's hooks): an INPUT of that name. */
        int64_t shape[DTL_MAX_RANK];
        const dtl_type *t = s->type;
        if (!l->expr || !t || t->kind != DTL_TYPE_TENSOR || t->u.t.rank > DTL_MAX_RANK ||
            !type_shape(t, NULL, true, shape))
            return fail(l, at, "'%s' is a value computed at the prompt: only what is typed at "
                        "the prompt can use it", s->name);
        /* The checker gives every use its own symbol: one INPUT per name. */
        dtl_val in = DTL_VAL_NONE;
        for (uint32_t k = 0; k < l->g->nnodes && in == DTL_VAL_NONE; k++)
            if (l->g->nodes[k].op == DTL_OP_INPUT && strcmp(l->g->nodes[k].name, s->name) == 0)
                in = k;
        if (in == DTL_VAL_NONE)
            in = dtl_g_input(l->g, s->name, mapdt(l, t->u.t.dtype), t->u.t.rank, shape);
        v = lv_tensor(in);
    } else {
        env e;
        env_init(l, &e, NULL, s->module);
        const dtl_expr *val = strip(s->decl->u.bind.value);
        const dtl_sym *cs = val && val->kind == DTL_EXPR_CALL ? val->sym : NULL;
        if (cs && cs->kind == DTL_SYM_CALL && cs->u.call->kind == DTL_CALL_NEW) {
            /* let d = nn.Dense(3, 2) at the prompt: an instance whose params are "d.w" … */
            if (!l->expr)
                return fail(l, at, "let '%s' makes a model instance, which only expressions "
                            "typed at the prompt can use", s->name);
            lv *args;
            inst *in;
            if (!ctor_args(l, &e, val, cs->u.call, &args) ||
                !new_inst(l, cs->u.call->model, args,
                          dtl_arena_printf(&l->scratch, "%s.", s->name), s->span, &in))
                return false;
            v.kind = LV_INST;
            v.u.in = in;
        } else if (!eval(l, &e, s->decl->u.bind.value, &v)) {
            return false;
        }
    }
    v = coerce_host(s->type, v);
    coerce_tensor(l, s->type, &v);
    if (l->nlets == l->caplets) {
        size_t cap = l->caplets ? l->caplets * 2 : 8;
        l->lets = dtl_arena_grow(&l->scratch, l->lets, l->nlets, cap, sizeof *l->lets);
        l->letv = dtl_arena_grow(&l->scratch, l->letv, l->nlets, cap, sizeof *l->letv);
        l->caplets = cap;
    }
    l->lets[l->nlets] = s;
    l->letv[l->nlets++] = v;
    *out = v;
    return true;
}

static bool eval_sym(low *l, env *e, const dtl_sym *s, dtl_span at, lv *out)
{
    memset(out, 0, sizeof *out);
    if (!s)
        return fail(l, at, "internal error: a name was not resolved by the checker");
    switch (s->kind) {
    case DTL_SYM_MODULE:
        out->kind = LV_MODULE;
        return true;
    case DTL_SYM_FN:
        if (s->owner)
            return inst_sym(l, e->in, s, at, out);
        out->kind = LV_FN;
        out->u.fn.fn = s->u.fn;
        return true;
    case DTL_SYM_LET:
        if (s->fn) {
            const lv *v = lookup(e, s);
            if (!v)
                return fail(l, at, "internal error: let '%s' has no value here", s->name);
            *out = *v;
            return true;
        }
        return toplevel_let(l, s, at, out);
    case DTL_SYM_CTOR_PARAM:
    case DTL_SYM_PARAM:
    case DTL_SYM_MEMBER:
        return inst_sym(l, e->in, s, at, out);
    case DTL_SYM_FN_PARAM: {
        const lv *v = lookup(e, s);
        if (!v)
            return fail(l, at, "internal error: parameter '%s' has no value here", s->name);
        *out = *v;
        return true;
    }
    case DTL_SYM_DIM: {
        const dtl_dim *d = s->dimvar ? dtl_subst_get(&e->subst, s->dimvar) : NULL;
        if (!d || !dtl_dim_is_const(d, &out->u.i))
            return fail(l, at, "internal error: dimension '%s' is not bound here", s->name);
        out->kind = LV_INT;
        return true;
    }
    case DTL_SYM_BUILTIN:
        if (s->u.builtin->kind == DTL_BUILTIN_CONST) {
            out->kind = LV_NONE;
            return true;
        }
        out->kind = LV_OTHER;
        return true;
    case DTL_SYM_BATCH_X:
        *out = l->x;
        return true;
    case DTL_SYM_BATCH_Y:
        *out = l->y;
        return true;
    case DTL_SYM_MODEL:
    case DTL_SYM_DATASET:
    case DTL_SYM_TRAIN:
    case DTL_SYM_CALL:
        out->kind = LV_OTHER;
        return true;
    }
    return fail(l, at, "internal error: a name of an unknown kind");
}

static bool eval_member(low *l, env *e, const dtl_expr *x, lv *out)
{
    const dtl_expr *base = x->u.member.base;
    const dtl_sym *s = x->sym;
    if (base->type && base->type->kind == DTL_TYPE_MODULE) {
        /* A module's top-level name: evaluated as at that module's top level. */
        if (s && s->owner)
            return fail(l, x->span, "internal error: a module member with an owner");
        env me;
        env_init(l, &me, NULL, s ? s->module : NULL);
        return eval_sym(l, &me, s, x->span, out);
    }
    lv b;
    if (!eval(l, e, base, &b))
        return false;
    if (b.kind != LV_INST || !s)
        return fail(l, x->span, "internal error: lowering cannot take '%s' of this value",
                    x->u.member.field.text);
    return inst_sym(l, b.u.in, s, x->span, out);
}

/* ---- operators --------------------------------------------------------------------------- */

/* Can shapes a and b broadcast (numpy)? The result's shape in out. */
static bool bcast(const dtl_node *a, const dtl_node *b, uint32_t *r, int64_t *out)
{
    uint32_t rr = a->rank > b->rank ? a->rank : b->rank;
    for (uint32_t i = 0; i < rr; i++) {
        int64_t da = i < a->rank ? a->shape[a->rank - 1 - i] : 1;
        int64_t db = i < b->rank ? b->shape[b->rank - 1 - i] : 1;
        if (da != db && da != 1 && db != 1)
            return false;
        out[rr - 1 - i] = da == 1 ? db : da;
    }
    *r = rr;
    return true;
}

/* A tensor operand from a value that may be a host number, given the dtype it must take. */
static dtl_val operand(low *l, const lv *v, dtl_dtype dt)
{
    return v->kind == LV_TENSOR ? v->u.t : host_const(l, v, dt);
}

static dtl_op binop_op(dtl_binop op)
{
    switch (op) {
    case DTL_BINOP_ADD: return DTL_OP_ADD;
    case DTL_BINOP_SUB: return DTL_OP_SUB;
    case DTL_BINOP_MUL: return DTL_OP_MUL;
    case DTL_BINOP_DIV: return DTL_OP_DIV;
    case DTL_BINOP_POW: return DTL_OP_POW;
    case DTL_BINOP_LT: return DTL_OP_LT;
    case DTL_BINOP_LE: return DTL_OP_LE;
    case DTL_BINOP_GT: return DTL_OP_GT;
    case DTL_BINOP_GE: return DTL_OP_GE;
    case DTL_BINOP_EQ: return DTL_OP_EQ;
    case DTL_BINOP_NE: return DTL_OP_NE;
    case DTL_BINOP_AND: return DTL_OP_AND;
    case DTL_BINOP_OR: return DTL_OP_OR;
    default: return DTL_OP_COUNT;
    }
}

/* a (op) b, both tensors of one dtype, after checking that they broadcast. */
static bool tensor_binary(low *l, dtl_span at, dtl_op op, dtl_val a, dtl_val b, lv *out)
{
    uint32_t r;
    int64_t shape[DTL_MAX_RANK];
    const dtl_node *an = nd(l, a), *bn = nd(l, b);
    if (an->dtype != bn->dtype)
        return fail(l, at, "internal error: %s of %s and %s", dtl_op_name(op), node_str(l, a),
                    node_str(l, b));
    if (!bcast(an, bn, &r, shape))
        return fail(l, at, "cannot broadcast %s with %s here", node_str(l, a), node_str(l, b));
    if (op == DTL_OP_POW && !dtl_dtype_is_float(an->dtype))
        return fail(l, at, "'**' on %s is not supported by lowering yet; cast to a float "
                    "dtype first", dtl_dtype_name(an->dtype));
    if (!shape_ok(l, at, "the result", an->dtype, r, shape))
        return false;
    *out = lv_tensor(dtl_g_binary(l->g, op, a, b));
    return true;
}

static bool matmul(low *l, dtl_span at, const lv *a, const lv *b, lv *out)
{
    if (a->kind != LV_TENSOR || b->kind != LV_TENSOR)
        return fail(l, at, "internal error: matmul of a host value");
    const dtl_node *an = nd(l, a->u.t), *bn = nd(l, b->u.t);
    if (!dtl_dtype_is_float(an->dtype) || an->dtype != bn->dtype)
        return fail(l, at, "matmul of %s and %s is not supported by lowering yet (float "
                    "tensors only)", node_str(l, a->u.t), node_str(l, b->u.t));
    if (an->rank == 0 || bn->rank == 0)
        return fail(l, at, "internal error: matmul of a scalar");
    int64_t k1 = an->shape[an->rank - 1], k2 = bn->shape[bn->rank == 1 ? 0 : bn->rank - 2];
    if (k1 != k2)
        return fail(l, at, "matmul: inner dimensions differ here: %s @ %s",
                    node_str(l, a->u.t), node_str(l, b->u.t));
    /* The result: broadcast batch dims, then m and n. */
    dtl_node ab = *an, bb = *bn;
    ab.rank = an->rank >= 2 ? an->rank - 2 : 0;
    bb.rank = bn->rank >= 2 ? bn->rank - 2 : 0;
    uint32_t r;
    int64_t shape[DTL_MAX_RANK + 2];
    if (!bcast(&ab, &bb, &r, shape))
        return fail(l, at, "matmul: batch dimensions do not broadcast here: %s @ %s",
                    node_str(l, a->u.t), node_str(l, b->u.t));
    if (an->rank >= 2)
        shape[r++] = an->shape[an->rank - 2];
    if (bn->rank >= 2)
        shape[r++] = bn->shape[bn->rank - 1];
    if (!shape_ok(l, at, "the matrix product", an->dtype, r, shape))
        return false;
    *out = lv_tensor(dtl_nn_matmul_prec(l->g, a->u.t, b->u.t, l->prec));
    return true;
}

static bool eval_binary(low *l, env *e, const dtl_expr *x, lv *out)
{
    dtl_binop op = x->u.binary.op;
    lv a, b;
    if (!eval(l, e, x->u.binary.lhs, &a) || !eval(l, e, x->u.binary.rhs, &b))
        return false;
    if (op == DTL_BINOP_MATMUL)
        return matmul(l, x->span, &a, &b, out);
    if (a.kind != LV_TENSOR && b.kind != LV_TENSOR)
        return fold_binary(l, x, &a, &b, out);
    if ((a.kind != LV_TENSOR && !is_number(&a) && a.kind != LV_BOOL) ||
        (b.kind != LV_TENSOR && !is_number(&b) && b.kind != LV_BOOL))
        return fail(l, x->span, "internal error: '%s' of a value that is not a tensor",
                    dtl_binop_text(op));
    dtl_dtype dt = nd(l, a.kind == LV_TENSOR ? a.u.t : b.u.t)->dtype;
    /* b's constant (if any) is made before a's: a fixed node order, whatever the compiler's
     * order of evaluation of arguments (unspecified in C). */
    dtl_val vb = operand(l, &b, dt);
    dtl_val va = operand(l, &a, dt);
    return tensor_binary(l, x->span, binop_op(op), va, vb, out);
}

static bool eval_unary(low *l, env *e, const dtl_expr *x, lv *out)
{
    lv a;
    if (!eval(l, e, x->u.unary.operand, &a))
        return false;
    if (x->u.unary.op == DTL_UNOP_NOT) {
        if (a.kind == LV_BOOL) {
            *out = lv_bool(!a.u.b);
            return true;
        }
        if (a.kind == LV_TENSOR && nd(l, a.u.t)->dtype == DTL_DTYPE_BOOL) {
            *out = lv_tensor(dtl_g_unary(l->g, DTL_OP_NOT, a.u.t));
            return true;
        }
    } else {
        switch (a.kind) {
        case LV_INT:
            if (a.u.i == INT64_MIN)
                return fail(l, x->span, "integer overflow: %s is out of range here",
                            ename(l, x, "this expression"));
            *out = lv_int(-a.u.i);
            return true;
        case LV_FLOAT:
            *out = lv_float(-a.u.f);
            return true;
        case LV_TENSOR:
            if (nd(l, a.u.t)->dtype != DTL_DTYPE_BOOL) {
                *out = lv_tensor(dtl_g_unary(l->g, DTL_OP_NEG, a.u.t));
                return true;
            }
            break;
        default:
            break;
        }
    }
    return fail(l, x->span, "internal error: lowering cannot apply '%s' here",
                x->u.unary.op == DTL_UNOP_NOT ? "not" : "-");
}

/* ---- indexing ---------------------------------------------------------------------------- */

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static bool sub_int(low *l, env *e, const dtl_expr *x, int64_t *v)
{
    lv r;
    if (!eval(l, e, x, &r))
        return false;
    if (r.kind != LV_INT)
        return fail(l, x->span, "internal error: a subscript is not an int");
    *v = r.u.i;
    return true;
}

static bool eval_index(low *l, env *e, const dtl_expr *x, lv *out)
{
    lv b;
    if (!eval(l, e, x->u.index.base, &b))
        return false;
    if (b.kind == LV_LIST) {   /* split's result: one constant index */
        int64_t iv = 0, n = (int64_t)b.u.list.n;
        if (x->u.index.nsubs != 1 || x->u.index.subs[0].is_slice ||
            !sub_int(l, e, x->u.index.subs[0].value, &iv))
            return false;
        if (iv < -n || iv >= n)
            return fail(l, x->span, "index %" PRId64 " is out of range for a list of %" PRId64
                        " tensors", iv, n);
        *out = b.u.list.items[iv < 0 ? iv + n : iv];
        return true;
    }
    if (b.kind != LV_TENSOR)
        return fail(l, x->span, "internal error: indexing a value that is not a tensor");
    const dtl_node *bn = nd(l, b.u.t);
    uint32_t rank = bn->rank;
    if (x->u.index.nsubs > rank)
        return fail(l, x->span, "internal error: too many subscripts");
    int64_t start[DTL_MAX_RANK], stop[DTL_MAX_RANK], step[DTL_MAX_RANK], dims[DTL_MAX_RANK];
    int64_t keep[DTL_MAX_RANK];
    uint32_t nkeep = 0;
    bool sliced = false, dropped = false;
    memcpy(dims, bn->shape, rank * sizeof *dims);
    for (uint32_t i = 0; i < rank; i++) {
        int64_t n = dims[i];
        start[i] = 0, stop[i] = n, step[i] = 1;
        if (i >= x->u.index.nsubs) {
            keep[nkeep++] = n;
            continue;
        }
        const dtl_subscript *s = &x->u.index.subs[i];
        if (!s->is_slice) {
            int64_t iv = 0;
            if (!sub_int(l, e, s->value, &iv))
                return false;
            if (iv < -n || iv >= n)
                return fail(l, s->value->span, "index %" PRId64 " is out of range for "
                            "dimension %u of %s (size %" PRId64 ") here", iv, i,
                            ename(l, x->u.index.base, "the tensor"), n);
            start[i] = iv < 0 ? iv + n : iv;
            stop[i] = start[i] + 1;
            sliced = dropped = true;
            continue;
        }
        int64_t st = 1, a = 0, z = 0;
        if (s->step && !sub_int(l, e, s->step, &st))
            return false;
        if (st == 0)
            return fail(l, s->step->span, "a slice's step cannot be zero");
        if (s->start && !sub_int(l, e, s->start, &a))
            return false;
        if (s->stop && !sub_int(l, e, s->stop, &z))
            return false;
        /* numpy's normalization (as the checker computes lengths). */
        int64_t lo, hi, len;
        if (st > 0) {
            lo = !s->start ? 0 : a < 0 ? clamp64(a + n, 0, n) : clamp64(a, 0, n);
            hi = !s->stop ? n : z < 0 ? clamp64(z + n, 0, n) : clamp64(z, 0, n);
            len = hi > lo ? (hi - lo - 1) / st + 1 : 0;
        } else {
            lo = !s->start ? n - 1 : a < 0 ? clamp64(a + n, -1, n - 1) : clamp64(a, -1, n - 1);
            hi = !s->stop ? -1 : z < 0 ? clamp64(z + n, -1, n - 1) : clamp64(z, -1, n - 1);
            len = lo > hi ? (lo - hi - 1) / (st == INT64_MIN ? INT64_MAX : -st) + 1 : 0;
        }
        if (len == 0)
            lo = hi = 0, st = 1;
        start[i] = lo, stop[i] = hi, step[i] = st;
        sliced |= len != n;   /* a full slice with step -1 is a reversal: len == n */
        sliced |= st != 1;
        keep[nkeep++] = len;
    }
    dtl_val v = b.u.t;
    if (sliced)
        v = dtl_g_slice(l->g, v, start, stop, step);
    if (dropped)
        v = dtl_g_reshape(l->g, v, nkeep, keep);
    *out = lv_tensor(v);
    return true;
}

/* ---- builtins ---------------------------------------------------------------------------- */

/* An axis argument normalized against rank. */
static bool axis_of(low *l, dtl_span at, const lv *a, uint32_t rank, uint32_t *out)
{
    if (a->kind != LV_INT)
        return fail(l, at, "internal error: an axis is not an int");
    int64_t ax = a->u.i;
    if (ax < -(int64_t)rank || ax >= (int64_t)rank)
        return fail(l, at, "axis %" PRId64 " is out of range for rank %u", ax, rank);
    *out = (uint32_t)(ax < 0 ? ax + rank : ax);
    return true;
}

static uint32_t all_axes(uint32_t rank)
{
    return rank >= 32 ? UINT32_MAX : (1u << rank) - 1u;
}

/* The ints of a list literal (reshape's shape, transpose's perm). */
static bool int_list(low *l, env *e, const dtl_expr *lit, int64_t *v, size_t max, size_t *n)
{
    lit = strip(lit);
    if (!lit || lit->kind != DTL_EXPR_TENSOR)
        return fail(l, lit ? lit->span : (dtl_span){0}, "internal error: expected a list");
    if (lit->u.tensor.nelems > max)
        return fail(l, lit->span, "this shape has %zu dimensions; tensors of rank above %d "
                    "are not supported", lit->u.tensor.nelems, DTL_MAX_RANK);
    for (size_t i = 0; i < lit->u.tensor.nelems; i++)
        if (!sub_int(l, e, lit->u.tensor.elems[i], &v[i]))
            return false;
    *n = lit->u.tensor.nelems;
    return true;
}

static bool lower_reshape(low *l, env *e, const dtl_expr *x, const dtl_call *c, dtl_val v,
                          lv *out)
{
    int64_t shape[DTL_MAX_RANK];
    size_t n;
    if (!int_list(l, e, c->args[1], shape, DTL_MAX_RANK, &n))
        return false;
    const dtl_node *xn = nd(l, v);
    int64_t total = (int64_t)dtl_node_numel(xn), known = 1;
    size_t infer = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (shape[i] == -1 && infer == SIZE_MAX) {
            infer = i;
            continue;
        }
        if (shape[i] < 0)
            return fail(l, c->args[1]->span, "reshape: dimension %zu is %" PRId64 " here", i,
                        shape[i]);
        if (__builtin_mul_overflow(known, shape[i], &known) || known > MAX_NUMEL)
            return fail(l, c->args[1]->span, "reshape: the new shape is too large here");
    }
    if (infer != SIZE_MAX) {
        if (known == 0 || total % known != 0)
            return fail(l, c->args[1]->span, "reshape: %s has %" PRId64 " elements, not a "
                        "multiple of %" PRId64 " (the other new dimensions) here",
                        node_str(l, v), total, known);
        shape[infer] = total / known;
    } else if (known != total) {
        return fail(l, c->args[1]->span, "reshape: %s has %" PRId64 " elements, the new "
                    "shape %s has %" PRId64 " here", node_str(l, v), total,
                    shape_str(l, xn->dtype, (uint32_t)n, shape), known);
    }
    (void)x;
    *out = lv_tensor(dtl_g_reshape(l->g, v, (uint32_t)n, shape));
    return true;
}

static bool lower_transpose(low *l, env *e, const dtl_call *c, dtl_val v, lv *out)
{
    uint32_t rank = nd(l, v)->rank;
    uint32_t perm[DTL_MAX_RANK];
    const dtl_expr *pa = c->args[1] ? strip(c->args[1]) : NULL;
    if (!pa || (pa->type && pa->type->kind == DTL_TYPE_NONE)) {
        if (rank != 2)
            return fail(l, c->args[0]->span, "internal error: transpose without a perm of "
                        "rank %u", rank);
        perm[0] = 1, perm[1] = 0;
    } else {
        int64_t p[DTL_MAX_RANK];
        size_t n;
        if (!int_list(l, e, pa, p, DTL_MAX_RANK, &n))
            return false;
        bool seen[DTL_MAX_RANK] = {false};
        if (n != rank)
            return fail(l, pa->span, "internal error: a permutation of the wrong length");
        for (size_t i = 0; i < n; i++) {
            if (p[i] < 0 || p[i] >= (int64_t)rank || seen[p[i]])
                return fail(l, pa->span, "internal error: not a permutation");
            seen[p[i]] = true;
            perm[i] = (uint32_t)p[i];
        }
    }
    *out = lv_tensor(dtl_g_transpose(l->g, v, perm));
    return true;
}

static bool lower_concat(low *l, dtl_span at, const lv *list, const lv *axis, lv *out)
{
    if (list->kind != LV_LIST || list->u.list.n == 0)
        return fail(l, at, "internal error: concat of something other than a list");
    size_t n = list->u.list.n;
    if (n > UINT32_MAX / 2)
        return fail(l, at, "concat: too many tensors");
    dtl_val *xs = dtl_arena_array(&l->scratch, n, sizeof *xs);
    for (size_t i = 0; i < n; i++) {
        if (list->u.list.items[i].kind != LV_TENSOR)
            return fail(l, at, "internal error: concat of a host value");
        xs[i] = list->u.list.items[i].u.t;
    }
    const dtl_node *x0 = nd(l, xs[0]);
    uint32_t ax = 0;
    if (!axis_of(l, at, axis, x0->rank, &ax))
        return false;
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const dtl_node *xi = nd(l, xs[i]);
        bool ok = xi->dtype == x0->dtype && xi->rank == x0->rank;
        for (uint32_t k = 0; ok && k < x0->rank; k++)
            ok = k == ax || xi->shape[k] == x0->shape[k];
        if (!ok)
            return fail(l, at, "concat: element %zu is %s, element 0 is %s here", i,
                        node_str(l, xs[i]), node_str(l, xs[0]));
        if (__builtin_add_overflow(total, xi->shape[ax], &total) || total > MAX_NUMEL)
            return fail(l, at, "concat: the result is too large");
    }
    int64_t shape[DTL_MAX_RANK];
    memcpy(shape, x0->shape, sizeof shape);
    shape[ax] = total;
    if (!shape_ok(l, at, "the concatenation", x0->dtype, x0->rank, shape))
        return false;
    *out = lv_tensor(n == 1 ? xs[0] : dtl_g_concat(l->g, xs, (uint32_t)n, ax));
    return true;
}

static bool lower_where(low *l, dtl_span at, dtl_dtype rdt, const lv *m, const lv *a,
                        const lv *b, lv *out)
{
    if (m->kind != LV_TENSOR)
        return fail(l, at, "internal error: where's mask is not a tensor");
    dtl_val av = operand(l, a, rdt), bv = operand(l, b, rdt);
    uint32_t r1, r2;
    int64_t s1[DTL_MAX_RANK], s2[DTL_MAX_RANK];
    dtl_node t1 = {0};
    if (nd(l, av)->dtype != nd(l, bv)->dtype)
        return fail(l, at, "internal error: where of %s and %s", node_str(l, av),
                    node_str(l, bv));
    if (!bcast(nd(l, av), nd(l, bv), &r1, s1))
        return fail(l, at, "where: cannot broadcast %s with %s here", node_str(l, av),
                    node_str(l, bv));
    t1.rank = r1;
    memcpy(t1.shape, s1, sizeof s1);
    if (!bcast(nd(l, m->u.t), &t1, &r2, s2))
        return fail(l, at, "where: cannot broadcast the mask %s with the branches here",
                    node_str(l, m->u.t));
    if (!shape_ok(l, at, "the result of where", rdt, r2, s2))
        return false;
    *out = lv_tensor(dtl_g_where(l->g, m->u.t, av, bv));
    return true;
}

static bool lower_reduce(low *l, dtl_span at, dtl_builtin_id id, dtl_val v, const lv *axis,
                         const lv *keep, lv *out)
{
    const dtl_node *xn = nd(l, v);
    uint32_t axes;
    if (axis->kind == LV_NONE) {
        axes = all_axes(xn->rank);
    } else {
        uint32_t ax = 0;
        if (!axis_of(l, at, axis, xn->rank, &ax))
            return false;
        axes = 1u << ax;
    }
    bool kd = keep->kind == LV_BOOL && keep->u.b;
    if (xn->rank == 0) {
        *out = lv_tensor(v);
        return true;
    }
    if (id == DTL_BI_MAX || id == DTL_BI_MIN)
        for (uint32_t i = 0; i < xn->rank; i++)
            if ((axes >> i & 1) && xn->shape[i] == 0)
                return fail(l, at, "%s over the empty dimension %u of %s",
                            id == DTL_BI_MAX ? "max" : "min", i, node_str(l, v));
    switch (id) {
    case DTL_BI_SUM: v = dtl_g_reduce(l->g, DTL_OP_SUM, v, axes, kd); break;
    case DTL_BI_MEAN: v = dtl_nn_mean(l->g, v, axes, kd); break;
    case DTL_BI_MAX: v = dtl_g_reduce(l->g, DTL_OP_REDUCE_MAX, v, axes, kd); break;
    default: v = dtl_nn_reduce_min(l->g, v, axes, kd); break;
    }
    *out = lv_tensor(v);
    return true;
}

static bool need_tensor(low *l, dtl_span at, const lv *v)
{
    if (v->kind == LV_TENSOR)
        return true;
    return fail(l, at, "internal error: a builtin's argument is not a tensor");
}

/* ---- the prompt's tensor constructors (compiler/repl_ctors.h) ------------------------------ */

/* The INPUT that positions the random streams: "repl.step" in an expression of the prompt,
 * the train block's "step" otherwise. */
static dtl_val rng_step(low *l)
{
    if (!l->expr)
        return dtl_nn_step(l->g);
    for (uint32_t v = 0; v < l->g->nnodes; v++)
        if (l->g->nodes[v].op == DTL_OP_INPUT && strcmp(l->g->nodes[v].name, "repl.step") == 0)
            return v;
    return dtl_g_input(l->g, "repl.step", DTL_DTYPE_I64, 0, NULL);
}

static bool ctor_num(low *l, env *e, const dtl_expr *x, const dtl_call *c, unsigned i, lv *v)
{
    return c->args[i] ? eval(l, e, c->args[i], v) : type_value(l, x->span, c->argtypes[i], v);
}

static bool lower_ctor(low *l, env *e, const dtl_expr *x, const dtl_call *c, dtl_ctor_id id,
                       lv *out)
{
    dtl_graph *g = l->g;
    const dtl_type *t = x->type;
    int64_t shape[DTL_MAX_RANK];
    if (!t || t->kind != DTL_TYPE_TENSOR || t->u.t.rank > DTL_MAX_RANK ||
        !type_shape(t, NULL, true, shape))
        return fail(l, x->span, "internal error: a constructor without a constant shape");
    uint32_t rank = t->u.t.rank;
    dtl_dtype dt = mapdt(l, t->u.t.dtype);
    if (!shape_ok(l, x->span, "this tensor", dt, rank, shape))
        return false;
    dtl_val v;
    switch (id) {
    case DTL_CTOR_ZEROS:
    case DTL_CTOR_ONES:
        v = dtl_g_const(g, dt, rank, shape, id == DTL_CTOR_ONES);
        break;
    case DTL_CTOR_RAND:
        v = dtl_g_rng_uniform(g, rng_step(l), dt, rank, shape,
                              dtl_rng_stream_id("repl", l->nrandom++));
        break;
    case DTL_CTOR_RANDN: {
        /* Box-Muller: sqrt(-2 log(1 - u1)) cos(2 pi u2), u1 and u2 uniform in [0, 1). */
        dtl_val st = rng_step(l);
        dtl_val u1 = dtl_g_rng_uniform(g, st, dt, rank, shape,
                                       dtl_rng_stream_id("repl", l->nrandom++));
        dtl_val u2 = dtl_g_rng_uniform(g, st, dt, rank, shape,
                                       dtl_rng_stream_id("repl", l->nrandom++));
        dtl_val r = dtl_g_binary(g, DTL_OP_SUB, dtl_g_scalar(g, dt, 1), u1);
        dtl_val lg = dtl_g_unary(g, DTL_OP_LOG, r);   /* before the -2: a fixed node order */
        r = dtl_g_unary(g, DTL_OP_SQRT, dtl_g_binary(g, DTL_OP_MUL, dtl_g_scalar(g, dt, -2), lg));
        dtl_val a = dtl_g_unary(g, DTL_OP_COS, dtl_g_binary(g, DTL_OP_MUL, u2,
                                                          dtl_g_scalar(g, dt, 6.283185307179586)));
        v = dtl_g_binary(g, DTL_OP_MUL, r, a);
        break;
    }
    case DTL_CTOR_ARANGE: {
        lv a[3];
        for (unsigned i = 0; i < 3; i++)
            if (!ctor_num(l, e, x, c, i, &a[i]))
                return false;
        double start = num(&a[0]), step = num(&a[2]);
        if (a[1].kind == LV_NONE)
            start = 0;
        /* Integer results from fractional bounds are computed in f64, then converted. */
        dtl_dtype cdt = dtl_dtype_is_int(dt) && (start != floor(start) || step != floor(step))
                            ? DTL_DTYPE_F64 : dt;
        v = dtl_g_iota(g, cdt, 1, shape, 0);
        if (step != 1)
            v = dtl_g_binary(g, DTL_OP_MUL, v, dtl_g_scalar(g, cdt, step));
        if (start != 0)
            v = dtl_g_binary(g, DTL_OP_ADD, v, dtl_g_scalar(g, cdt, start));
        if (cdt != dt)
            v = dtl_g_cast(g, v, dt);
        break;
    }
    case DTL_CTOR_EYE: {
        dtl_val r = dtl_g_iota(g, DTL_DTYPE_I64, 2, shape, 0);
        dtl_val k = dtl_g_iota(g, DTL_DTYPE_I64, 2, shape, 1);
        v = dtl_g_binary(g, DTL_OP_EQ, r, k);
        if (dt != DTL_DTYPE_BOOL)
            v = dtl_g_cast(g, v, dt);
        break;
    }
    default:
        return fail(l, x->span, "internal error: %s() is not a constructor", c->builtin->name);
    }
    *out = lv_tensor(v);
    return true;
}

/* ---- the issue 7 layer ops: take, stack, causal_mask, masked_fill, batch_norm, layer_norm ---- */

/* Arguments from..to must be vectors [n] of x's dtype (the checker saw it symbolically). */
static bool vecs_fit(low *l, const dtl_expr *x, const dtl_call *c, const lv *a, unsigned from,
                     unsigned to, int64_t n)
{
    for (unsigned i = from; i <= to; i++) {
        dtl_span at = c->args[i] ? c->args[i]->span : x->span;
        if (!need_tensor(l, at, &a[i]))
            return false;
        const dtl_node *vn = nd(l, a[i].u.t);
        if (vn->rank != 1 || vn->shape[0] != n || vn->dtype != nd(l, a[0].u.t)->dtype)
            return fail(l, at, "%s: '%s' is %s, x is %s here", c->builtin->name,
                        c->builtin->params[i].name, node_str(l, a[i].u.t),
                        node_str(l, a[0].u.t));
    }
    return true;
}

/* batch_norm in the step graph: the batch's statistics, and the running ones (states a[3],
 * a[4]) updated as (1 - momentum) * running + momentum * batch, PyTorch's rule (the running
 * variance from the unbiased batch variance). A state updated already in this step (the
 * model applied twice) is updated again from its new value, as two calls of a PyTorch module
 * would. */
static bool lower_batch_norm_train(low *l, const dtl_expr *x, const dtl_call *c, const lv *a,
                                   double mom, double eps, lv *out)
{
    dtl_graph *g = l->g;
    dtl_val v = a[0].u.t;
    const dtl_node *xn = nd(l, v);
    if (dtl_node_numel(xn) / (uint64_t)xn->shape[1] < 2)
        return fail(l, x->span, "batch_norm: training needs more than one value per channel; x "
                    "is %s here", node_str(l, v));
    for (unsigned k = 3; k <= 4; k++)
        if (nd(l, a[k].u.t)->op != DTL_OP_PARAM)
            return fail(l, c->args[k] ? c->args[k]->span : x->span,
                        "internal error: batch_norm's '%s' is not a state",
                        c->builtin->params[k].name);
    if (a[3].u.t == a[4].u.t)
        return fail(l, x->span, "batch_norm: 'mean' and 'var' are the same state, %s",
                    nd(l, a[3].u.t)->name);
    dtl_val bm, bv;
    dtl_val y = dtl_nn_batch_norm_train(g, v, a[1].u.t, a[2].u.t, eps, &bm, &bv);
    dtl_role role = g->role;
    g->role = DTL_ROLE_UPDATE;
    for (unsigned k = 3; k <= 4; k++) {
        dtl_val target = a[k].u.t, run = target, stat = k == 3 ? bm : bv;
        uint32_t prev = UINT32_MAX;
        for (uint32_t o = 0; o < g->nouts; o++)
            if (g->outs[o].target == target)
                prev = o, run = g->outs[o].val;
        dtl_dtype dt = nd(l, run)->dtype;
        dtl_val nv = dtl_g_binary(g, DTL_OP_ADD,
                                  dtl_g_binary(g, DTL_OP_MUL, run, dtl_g_scalar(g, dt, 1 - mom)),
                                  dtl_g_binary(g, DTL_OP_MUL, stat, dtl_g_scalar(g, dt, mom)));
        if (prev != UINT32_MAX)
            g->outs[prev].val = nv;
        else
            dtl_g_output(g, DTL_OUT_PARAM, nd(l, target)->name, nv, target);
    }
    g->role = role;
    *out = lv_tensor(y);
    return true;
}

static bool lower_layer_op(low *l, const dtl_expr *x, const dtl_call *c, lv *a, lv *out)
{
    dtl_graph *g = l->g;
    dtl_span at = x->span;
    dtl_span at0 = c->args[0] ? c->args[0]->span : at;
    switch (c->builtin->id) {
    case DTL_BI_TAKE: {
        uint32_t ax;
        if (!need_tensor(l, at0, &a[0]) || !need_tensor(l, at, &a[1]) ||
            !axis_of(l, at, &a[2], nd(l, a[0].u.t)->rank, &ax))
            return false;
        const dtl_node *xn = nd(l, a[0].u.t), *in = nd(l, a[1].u.t);
        uint32_t r = xn->rank - 1 + in->rank;
        int64_t s[2 * DTL_MAX_RANK];
        uint32_t k = 0;
        for (uint32_t i = 0; i < ax; i++)
            s[k++] = xn->shape[i];
        for (uint32_t i = 0; i < in->rank; i++)
            s[k++] = in->shape[i];
        for (uint32_t i = ax + 1; i < xn->rank; i++)
            s[k++] = xn->shape[i];
        if (!shape_ok(l, at, "the result of take", xn->dtype, r, s))
            return false;
        if (xn->shape[ax] == 0 && dtl_node_numel(in) > 0)
            return fail(l, at, "take: %s has no entries along axis %u to take", node_str(l, a[0].u.t),
                        ax);
        *out = lv_tensor(dtl_g_gather(g, a[0].u.t, a[1].u.t, ax));
        return true;
    }
    case DTL_BI_STACK: {
        if (a[0].kind != LV_LIST || a[0].u.list.n == 0)
            return fail(l, at, "internal error: stack of something other than a list");
        size_t n = a[0].u.list.n;
        if (n > UINT32_MAX / 2)
            return fail(l, at, "stack: too many tensors");
        dtl_val *xs = dtl_arena_array(&l->scratch, n, sizeof *xs);
        for (size_t i = 0; i < n; i++)
            if (!need_tensor(l, at, &a[0].u.list.items[i]))
                return false;
        const dtl_node *x0 = nd(l, a[0].u.list.items[0].u.t);
        uint32_t ax;
        if (!axis_of(l, at, &a[1], x0->rank + 1, &ax))
            return false;
        int64_t s[DTL_MAX_RANK + 1];
        uint32_t r = x0->rank + 1;
        for (uint32_t i = 0, k = 0; i < r; i++)
            s[i] = i == ax ? 1 : x0->shape[k++];
        if (!shape_ok(l, at, "the stack", x0->dtype, r, s))
            return false;
        for (size_t i = 0; i < n; i++) {
            dtl_val xi = a[0].u.list.items[i].u.t;
            const dtl_node *xn = nd(l, xi);
            if (xn->dtype != x0->dtype || xn->rank != x0->rank ||
                memcmp(xn->shape, x0->shape, x0->rank * sizeof *xn->shape) != 0)
                return fail(l, at, "stack: element %zu is %s, element 0 is %s here", i,
                            node_str(l, xi), node_str(l, a[0].u.list.items[0].u.t));
            xs[i] = dtl_g_reshape(g, xi, r, s);
        }
        s[ax] = (int64_t)n;
        if (!shape_ok(l, at, "the stack", x0->dtype, r, s))
            return false;
        *out = lv_tensor(n == 1 ? xs[0] : dtl_g_concat(g, xs, (uint32_t)n, ax));
        return true;
    }
    case DTL_BI_CAUSAL_MASK: {
        if (a[0].kind != LV_INT || a[0].u.i < 1)
            return fail(l, at0, "causal_mask: 'n' must be at least 1, found %" PRId64 " here",
                        a[0].kind == LV_INT ? a[0].u.i : 0);
        int64_t s[2] = {a[0].u.i, a[0].u.i};
        if (!shape_ok(l, at, "the causal mask", DTL_DTYPE_BOOL, 2, s))
            return false;
        *out = lv_tensor(dtl_nn_causal_mask(g, a[0].u.i));
        return true;
    }
    case DTL_BI_MASKED_FILL: {
        if (!need_tensor(l, at0, &a[0]))
            return false;
        dtl_dtype dt = nd(l, a[0].u.t)->dtype;
        if (!lower_where(l, at, dt, &a[1], &a[2], &a[0], out))
            return false;
        const dtl_node *xn = nd(l, a[0].u.t), *yn = nd(l, out->u.t);
        if (yn->rank != xn->rank || memcmp(yn->shape, xn->shape, xn->rank * sizeof *xn->shape))
            return fail(l, at, "masked_fill: the mask %s does not broadcast to %s here",
                        node_str(l, a[1].u.t), node_str(l, a[0].u.t));
        return true;
    }
    case DTL_BI_BATCH_NORM: {
        if (!need_tensor(l, at0, &a[0]))
            return false;
        const dtl_node *xn = nd(l, a[0].u.t);
        if (xn->rank < 2 || !vecs_fit(l, x, c, a, 1, 4, xn->shape[1]))
            return false;
        double mom = num(&a[5]), eps = num(&a[6]);
        if (!is_number(&a[5]) || !(mom > 0 && mom <= 1))
            return fail(l, c->args[5] ? c->args[5]->span : at, "batch_norm: 'momentum' must be "
                        "in (0, 1], found %s here", dtl_double_print(l->ca, mom));
        if (!is_number(&a[6]) || !(eps > 0))
            return fail(l, c->args[6] ? c->args[6]->span : at, "batch_norm: 'eps' must be > 0, "
                        "found %s here", dtl_double_print(l->ca, eps));
        if (training_kind(l) && !l->expr)   /* GRAD too: each rank updates its own */
            return lower_batch_norm_train(l, x, c, a, mom, eps, out);
        *out = lv_tensor(dtl_nn_batch_norm(g, a[0].u.t, a[1].u.t, a[2].u.t, a[3].u.t, a[4].u.t,
                                           eps));
        return true;
    }
    case DTL_BI_LAYER_NORM: {
        if (!need_tensor(l, at0, &a[0]))
            return false;
        const dtl_node *xn = nd(l, a[0].u.t);
        if (xn->rank < 1 || !vecs_fit(l, x, c, a, 1, 2, xn->shape[xn->rank - 1]))
            return false;
        double eps = num(&a[3]);
        if (!is_number(&a[3]) || !(eps > 0))
            return fail(l, c->args[3] ? c->args[3]->span : at, "layer_norm: 'eps' must be > 0, "
                        "found %s here", dtl_double_print(l->ca, eps));
        *out = lv_tensor(dtl_nn_layer_norm(g, a[0].u.t, a[1].u.t, a[2].u.t, eps));
        return true;
    }
    case DTL_BI_SPLIT: {
        uint32_t ax;
        if (!need_tensor(l, at0, &a[0]) || !axis_of(l, at, &a[2], nd(l, a[0].u.t)->rank, &ax))
            return false;
        const dtl_node *xn = nd(l, a[0].u.t);
        int64_t n = a[1].kind == LV_INT ? a[1].u.i : 0;
        if (n < 1 || n > 4096 || xn->shape[ax] % n != 0)
            return fail(l, at, "split: %s does not split into %" PRId64 " equal parts along "
                        "axis %u here", node_str(l, a[0].u.t), n, ax);
        int64_t start[DTL_MAX_RANK] = {0}, stop[DTL_MAX_RANK], step[DTL_MAX_RANK];
        for (uint32_t i = 0; i < xn->rank; i++)
            stop[i] = xn->shape[i], step[i] = 1;
        int64_t part = xn->shape[ax] / n;
        lv *items = dtl_arena_array(&l->scratch, (size_t)n, sizeof *items);
        dtl_val xv = a[0].u.t;
        for (int64_t i = 0; i < n; i++) {
            start[ax] = i * part;
            stop[ax] = (i + 1) * part;
            items[i] = lv_tensor(n == 1 ? xv : dtl_g_slice(g, xv, start, stop, step));
        }
        out->kind = LV_LIST;
        out->u.list.items = items;
        out->u.list.n = (size_t)n;
        return true;
    }
    default:
        return fail(l, at, "internal error: %s is not a layer op", c->builtin->name);
    }
}

/* Parameter i of a window builtin (INT_PAIR): [h, w] from a literal or one int for both;
 * *none when it is none. */
static bool win_pair(low *l, env *e, const dtl_call *c, const lv *a, unsigned i, dtl_span at,
                     int64_t *v, bool *none)
{
    *none = false;
    if (c->args[i] && strip(c->args[i])->kind == DTL_EXPR_TENSOR) {
        size_t n;
        if (!int_list(l, e, c->args[i], v, 2, &n))
            return false;
        if (n == 2)
            return true;
    } else if (a[i].kind == LV_INT) {
        v[0] = v[1] = a[i].u.i;
        return true;
    } else if (a[i].kind == LV_NONE) {
        *none = true;
        return true;
    }
    return fail(l, at, "internal error: %s of %s() is not an int pair",
                c->builtin->params[i].name, c->builtin->name);
}

/* conv2d, max_pool2d, avg_pool2d: the checker has checked what it could with symbolic sizes;
 * here every size is a number, so everything is checked again. */
static bool lower_window(low *l, env *e, const dtl_expr *x, const dtl_call *c, const lv *a,
                         lv *out)
{
    const dtl_builtin *b = c->builtin;
    dtl_span at = x->span;
    bool conv = b->id == DTL_BI_CONV2D;
    if (a[0].kind != LV_TENSOR || (conv && a[1].kind != LV_TENSOR))
        return fail(l, at, "internal error: %s() of a non-tensor", b->name);
    const dtl_node *xn = nd(l, a[0].u.t), *wn = conv ? nd(l, a[1].u.t) : NULL;
    if (xn->rank != 4 || (wn && (wn->rank != 4 || wn->dtype != xn->dtype)))
        return fail(l, at, "internal error: %s() of %s", b->name, node_str(l, a[0].u.t));
    int64_t k[2] = {0, 0}, st[2], pad[2], dil[2] = {1, 1}, groups = 1;
    bool none;
    const unsigned ist = 2, ipad = 3;   /* stride, padding: the same places in all three */
    if (!conv && !win_pair(l, e, c, a, 1, at, k, &none))
        return false;
    if (!win_pair(l, e, c, a, ist, at, st, &none))
        return false;
    if (none)   /* a pooling stride none: the kernel */
        st[0] = k[0], st[1] = k[1];
    if (!win_pair(l, e, c, a, ipad, at, pad, &none))
        return false;
    if (conv) {
        if (!win_pair(l, e, c, a, 4, at, dil, &none))
            return false;
        if (a[5].kind != LV_INT)
            return fail(l, at, "internal error: conv2d's groups is not an int");
        groups = a[5].u.i;
        k[0] = wn->shape[2];
        k[1] = wn->shape[3];
    }
    for (int i = 0; i < 2; i++) {
        const char *ax = i ? "width" : "height";
        if (st[i] < 1 || st[i] > INT32_MAX || dil[i] < 1 || dil[i] > INT32_MAX)
            return fail(l, at, "%s: stride %" PRId64 " and dilation %" PRId64 " (%s) must be in "
                        "[1, 2^31) here", b->name, st[i], dil[i], ax);
        if (pad[i] < 0 || pad[i] > INT32_MAX || (!conv && pad[i] >= k[i]))
            return fail(l, at, "%s: padding %" PRId64 " (%s) must be >= 0%s here", b->name,
                        pad[i], ax, conv ? "" : " and less than the kernel");
        if (!conv && (k[i] < 1 || k[i] > INT32_MAX))
            return fail(l, at, "%s: kernel %" PRId64 " (%s) must be at least 1 here", b->name,
                        k[i], ax);
        if (dtl_win_out(xn->shape[2 + i], k[i], pad[i], dil[i], st[i]) < 1)
            return fail(l, at, "%s: the window (%" PRId64 ", dilation %" PRId64 ") does not fit "
                        "the input's %s %" PRId64 " padded by %" PRId64 " here", b->name, k[i],
                        dil[i], ax, xn->shape[2 + i], pad[i]);
    }
    if (conv && (groups < 1 || groups > INT32_MAX || xn->shape[1] % groups ||
                 wn->shape[0] % groups || wn->shape[1] * groups != xn->shape[1]))
        return fail(l, at, "conv2d: input has %" PRId64 " channels, weight %s expects %" PRId64
                    " per group x %" PRId64 " groups here", xn->shape[1], node_str(l, a[1].u.t),
                    wn->shape[1], groups);
    dtl_win_attr w = {{(int32_t)k[0], (int32_t)k[1]}, {(int32_t)st[0], (int32_t)st[1]},
                      {(int32_t)pad[0], (int32_t)pad[1]}, {(int32_t)dil[0], (int32_t)dil[1]},
                      (int32_t)groups, false};
    if (conv) {
        w.kernel[0] = w.kernel[1] = 0;
        *out = lv_tensor(dtl_g_conv2d(l->g, a[0].u.t, a[1].u.t, &w));
        return true;
    }
    if (b->id == DTL_BI_AVG_POOL2D)
        w.count_pad = a[4].kind == LV_BOOL && a[4].u.b;
    *out = lv_tensor(dtl_g_pool2d(l->g, b->id == DTL_BI_AVG_POOL2D ? DTL_OP_AVGPOOL2D
                                                                   : DTL_OP_MAXPOOL2D,
                                  a[0].u.t, &w));
    return true;
}

static bool lower_builtin(low *l, env *e, const dtl_expr *x, const dtl_call *c, lv *out)
{
    const dtl_builtin *b = c->builtin;
    lv a[DTL_BUILTIN_MAX_PARAMS];
    memset(a, 0, sizeof a);
    dtl_ctor_id cid;
    if (dtl_ctor_is(b, &cid))
        return lower_ctor(l, e, x, c, cid, out);
    if (b->kind != DTL_BUILTIN_OP && b->kind != DTL_BUILTIN_LOSS)
        return fail(l, x->span, "internal error: %s() is not an op", b->name);
    for (unsigned i = 0; i < b->nparams && i < c->nargs; i++) {
        dtl_bparam_kind k = b->params[i].kind;
        if (k == DTL_BP_SHAPE || k == DTL_BP_PERM_OR_NONE)
            continue;   /* read as a list of ints by the rule */
        if ((k == DTL_BP_INT_PAIR || k == DTL_BP_INT_PAIR_OR_NONE) && c->args[i] &&
            strip(c->args[i])->kind == DTL_EXPR_TENSOR)
            continue;   /* [h, w]: read by lower_window */
        if (c->args[i] ? !eval(l, e, c->args[i], &a[i])
                       : !type_value(l, x->span, c->argtypes[i], &a[i]))
            return false;
    }
    dtl_span at = x->span;
    dtl_span at0 = c->args[0] ? c->args[0]->span : at;
    dtl_span at1 = c->nargs > 1 && c->args[1] ? c->args[1]->span : at;
    dtl_graph *g = l->g;
    dtl_val v = a[0].kind == LV_TENSOR ? a[0].u.t : DTL_VAL_NONE;
    switch (b->id) {
    case DTL_BI_RELU: case DTL_BI_SIGMOID: case DTL_BI_TANH: case DTL_BI_EXP:
    case DTL_BI_LOG: case DTL_BI_SQRT: case DTL_BI_ABS: case DTL_BI_SIN: case DTL_BI_COS: {
        static const dtl_op ops[] = {
            [DTL_BI_RELU] = DTL_OP_RELU, [DTL_BI_SIGMOID] = DTL_OP_SIGMOID,
            [DTL_BI_TANH] = DTL_OP_TANH, [DTL_BI_EXP] = DTL_OP_EXP, [DTL_BI_LOG] = DTL_OP_LOG,
            [DTL_BI_SQRT] = DTL_OP_SQRT, [DTL_BI_ABS] = DTL_OP_ABS, [DTL_BI_SIN] = DTL_OP_SIN,
            [DTL_BI_COS] = DTL_OP_COS,
        };
        if (!need_tensor(l, at0, &a[0]))
            return false;
        *out = lv_tensor(dtl_g_unary(g, ops[b->id], v));
        return true;
    }
    case DTL_BI_GELU:
    case DTL_BI_SILU:
    case DTL_BI_SOFTPLUS:
        if (!need_tensor(l, at0, &a[0]))
            return false;
        *out = lv_tensor(b->id == DTL_BI_GELU   ? dtl_nn_gelu(g, v)
                         : b->id == DTL_BI_SILU ? dtl_nn_silu(g, v)
                                                : dtl_nn_softplus(g, v));
        return true;
    case DTL_BI_SOFTMAX:
    case DTL_BI_LOG_SOFTMAX: {
        uint32_t ax = 0;
        if (!need_tensor(l, at0, &a[0]) || !axis_of(l, at1, &a[1], nd(l, v)->rank, &ax))
            return false;
        *out = lv_tensor(b->id == DTL_BI_SOFTMAX ? dtl_nn_softmax(g, v, ax)
                                                 : dtl_nn_log_softmax(g, v, ax));
        return true;
    }
    case DTL_BI_SUM: case DTL_BI_MEAN: case DTL_BI_MAX: case DTL_BI_MIN:
        if (!need_tensor(l, at0, &a[0]))
            return false;
        return lower_reduce(l, at, b->id, v, &a[1], &a[2], out);
    case DTL_BI_ARGMAX: {
        uint32_t ax = 0;
        if (!need_tensor(l, at0, &a[0]) || !axis_of(l, at1, &a[1], nd(l, v)->rank, &ax))
            return false;
        if (nd(l, v)->shape[ax] == 0)
            return fail(l, at, "argmax over the empty dimension %u of %s", ax, node_str(l, v));
        *out = lv_tensor(dtl_g_argmax(g, v, ax));
        return true;
    }
    case DTL_BI_RESHAPE:
        return need_tensor(l, at0, &a[0]) && lower_reshape(l, e, x, c, v, out);
    case DTL_BI_TRANSPOSE:
        return need_tensor(l, at0, &a[0]) && lower_transpose(l, e, c, v, out);
    case DTL_BI_CONCAT:
        return lower_concat(l, at, &a[0], &a[1], out);
    case DTL_BI_WHERE:
        if (!x->type || x->type->kind != DTL_TYPE_TENSOR)
            return fail(l, at, "internal error: where without a tensor type");
        return lower_where(l, at, mapdt(l, x->type->u.t.dtype), &a[0], &a[1], &a[2], out);
    case DTL_BI_CAST: {
        dtl_dtype to = mapdt(l, a[1].u.dt);
        if (a[0].kind != LV_TENSOR) {
            *out = lv_tensor(host_const(l, &a[0], to));
            return true;
        }
        *out = lv_tensor(nd(l, v)->dtype == to ? v : dtl_g_cast(g, v, to));
        return true;
    }
    case DTL_BI_ONE_HOT: {
        if (!need_tensor(l, at0, &a[0]))
            return false;
        if (a[1].kind != LV_INT || a[1].u.i < 1)
            return fail(l, at1, "one_hot: 'n' must be at least 1, found %" PRId64 " here",
                        a[1].kind == LV_INT ? a[1].u.i : 0);
        const dtl_node *ln = nd(l, v);
        int64_t shape[DTL_MAX_RANK + 1];
        memcpy(shape, ln->shape, ln->rank * sizeof *shape);
        shape[ln->rank] = a[1].u.i;
        dtl_dtype dt = mapdt(l, DTL_DTYPE_F32);
        if (!shape_ok(l, at, "the one-hot result", dt, ln->rank + 1, shape))
            return false;
        *out = lv_tensor(dtl_nn_one_hot(g, v, a[1].u.i, dt));
        return true;
    }
    case DTL_BI_DROPOUT: {
        if (!need_tensor(l, at0, &a[0]))
            return false;
        double p = num(&a[1]);
        if (!is_number(&a[1]) || !(p >= 0 && p < 1))
            return fail(l, at1, "dropout: 'p' must be in [0, 1), found %s here",
                        dtl_double_print(l->ca, p));
        if (!training_kind(l) || p == 0) {
            *out = a[0];
            return true;
        }
        uint64_t stream = dtl_rng_stream_id("dropout", l->ndropout++);
        const dtl_node *xn = nd(l, v);
        if (l->shard_world > 1 && xn->rank >= 1 && xn->shape[0] == l->batch) {
            /* Rank r of a data-parallel step: the mask of the global batch, rows r·batch …
             * of it, so that N ranks drop what one rank with the whole batch drops. */
            int64_t full[DTL_MAX_RANK], start[DTL_MAX_RANK] = {0}, stop[DTL_MAX_RANK],
                                                step[DTL_MAX_RANK];
            for (uint32_t i = 0; i < xn->rank; i++)
                full[i] = stop[i] = xn->shape[i], step[i] = 1;
            full[0] = l->batch * l->shard_world;
            start[0] = l->batch * l->shard_rank;
            stop[0] = start[0] + l->batch;
            dtl_val u = dtl_g_rng_uniform(g, dtl_nn_step(g), xn->dtype, xn->rank, full, stream);
            u = dtl_g_slice(g, u, start, stop, step);
            /* as dtl_nn_dropout: where(u >= p, x / (1 - p), 0) */
            dtl_val keep = dtl_g_binary(g, DTL_OP_GE, u, dtl_g_scalar(g, xn->dtype, p));
            dtl_val kept = dtl_g_binary(g, DTL_OP_MUL, v, dtl_g_scalar(g, xn->dtype, 1 / (1 - p)));
            *out = lv_tensor(dtl_g_where(g, keep, kept, dtl_g_scalar(g, xn->dtype, 0)));
            return true;
        }
        if (l->shard_world > 1)   /* not along the batch: at least a mask of its own */
            stream = dtl_rng_stream_id("dropout", (l->ndropout - 1) +
                                                  (((uint64_t)l->shard_rank + 1) << 32));
        *out = lv_tensor(dtl_nn_dropout(g, v, p, dtl_nn_step(g), stream));
        return true;
    }
    case DTL_BI_CONV2D:
    case DTL_BI_MAX_POOL2D:
    case DTL_BI_AVG_POOL2D:
        return lower_window(l, e, x, c, a, out);
    case DTL_BI_MATMUL:
        return matmul(l, at, &a[0], &a[1], out);
    case DTL_BI_CROSS_ENTROPY: {
        if (!need_tensor(l, at0, &a[0]) || !need_tensor(l, at1, &a[1]))
            return false;
        const dtl_node *zn = nd(l, v), *yn = nd(l, a[1].u.t);
        bool fits = zn->rank >= 2 && yn->rank == zn->rank - 1;
        for (uint32_t i = 0; fits && i < yn->rank; i++)
            fits = zn->shape[i] == yn->shape[i];
        if (!fits)
            return fail(l, at, "cross_entropy: logits %s and labels %s do not match here",
                        node_str(l, v), node_str(l, a[1].u.t));
        if (zn->shape[zn->rank - 1] == 0)
            return fail(l, at, "cross_entropy: logits %s have no classes", node_str(l, v));
        *out = lv_tensor(dtl_nn_cross_entropy(g, v, a[1].u.t));
        return true;
    }
    case DTL_BI_MSE:
    case DTL_BI_BCE_WITH_LOGITS: {
        if (!need_tensor(l, at0, &a[0]) || !need_tensor(l, at1, &a[1]))
            return false;
        const dtl_node *an = nd(l, v), *bn = nd(l, a[1].u.t);
        if (an->dtype != bn->dtype || an->rank != bn->rank ||
            memcmp(an->shape, bn->shape, an->rank * sizeof *an->shape) != 0)
            return fail(l, at, "%s: %s and %s differ here", b->name, node_str(l, v),
                        node_str(l, a[1].u.t));
        *out = lv_tensor(b->id == DTL_BI_MSE ? dtl_nn_mse(g, v, a[1].u.t)
                                             : dtl_nn_bce_with_logits(g, v, a[1].u.t));
        return true;
    }
    case DTL_BI_TAKE:
    case DTL_BI_STACK:
    case DTL_BI_CAUSAL_MASK:
    case DTL_BI_MASKED_FILL:
    case DTL_BI_BATCH_NORM:
    case DTL_BI_LAYER_NORM:
    case DTL_BI_SPLIT:
        return lower_layer_op(l, x, c, a, out);
    default:
        return fail(l, at, "%s() is not supported by lowering yet", b->name);
    }
}

/* ---- calls ------------------------------------------------------------------------------- */

static bool lv_same(const lv *a, const lv *b)
{
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case LV_INT: return a->u.i == b->u.i;
    case LV_FLOAT: return memcmp(&a->u.f, &b->u.f, sizeof a->u.f) == 0;
    case LV_BOOL: return a->u.b == b->u.b;
    case LV_STR:
        return a->u.str.n == b->u.str.n &&
               (a->u.str.n == 0 || memcmp(a->u.str.s, b->u.str.s, a->u.str.n) == 0);
    case LV_NONE: return true;
    case LV_DTYPE: return a->u.dt == b->u.dt;
    case LV_TENSOR: return a->u.t == b->u.t;
    case LV_INST: return a->u.in == b->u.in;
    case LV_FN: return a->u.fn.fn == b->u.fn.fn && a->u.fn.in == b->u.fn.in;
    default: return false;
    }
}

static const memo *memo_find(low *l, const dtl_fn *f, const inst *in, const lv *args, size_t n)
{
    for (size_t i = 0; i < l->nmemos; i++) {
        const memo *m = &l->memos[i];
        if (m->fn != f || m->in != in || m->nargs != n)
            continue;
        size_t k = 0;
        while (k < n && lv_same(&m->args[k], &args[k]))
            k++;
        if (k == n)
            return m;
    }
    return NULL;
}

static void memo_add(low *l, const dtl_fn *f, const inst *in, const lv *args, size_t n, lv r)
{
    if (l->nmemos == l->capmemos) {
        size_t cap = l->capmemos ? l->capmemos * 2 : 16;
        l->memos = dtl_arena_grow(&l->scratch, l->memos, l->nmemos, cap, sizeof *l->memos);
        l->capmemos = cap;
    }
    memo *m = &l->memos[l->nmemos++];
    m->fn = f;
    m->in = in;
    m->nargs = n;
    m->args = dtl_arena_array(&l->scratch, n ? n : 1, sizeof *m->args);
    memcpy(m->args, args, n * sizeof *args);
    m->result = r;
}

/* Is v an unbound symbolic dim of fn f in s? */
static bool fn_dim_unbound(const dtl_fn *f, const dtl_dimvar *v, const dtl_subst *s)
{
    return v && v->kind == DTL_DIMVAR_FN && v->sym && v->sym->fn == f && !dtl_subst_get(s, v);
}

/* Inlines fn f of instance in (NULL: top level) on args (in parameter order). c is the call
 * being lowered (NULL for a call lowering makes itself: forward(x) for accuracy and
 * inference); caller is the environment of the call. */
static bool inline_fn(low *l, env *caller, dtl_span at, dtl_fn *f, inst *in, const dtl_call *c,
                      lv *args, lv *out)
{
    if (!f->ret || !f->decl)
        return fail(l, at, "internal error: fn '%s' was not checked", f->name);
    if ((f->model != NULL) != (in != NULL) || (in && in->model != f->model))
        return fail(l, at, "internal error: fn '%s' called on the wrong instance", f->name);
    lv *memo_key = NULL;   /* the arguments as looked up (eval and infer graphs) */
    size_t np = f->nparams;
    for (size_t i = 0; i < np; i++)
        args[i] = coerce_host(f->params[i]->type, args[i]);
    if (!training_kind(l)) {
        const memo *m = memo_find(l, f, in, args, np);
        if (m) {
            *out = m->result;
            return true;
        }
        memo_key = dtl_arena_array(&l->scratch, np ? np : 1, sizeof *memo_key);
        memcpy(memo_key, args, np * sizeof *args);
    }
    env ce;
    env_init(l, &ce, in, f->module);
    /* Parameters: int ones bind their variable; host numbers given for rank-0 tensors
     * become constants. */
    for (size_t i = 0; i < np; i++) {
        const dtl_sym *p = f->params[i];
        lv v = args[i];
        if (p->type && p->type->kind == DTL_TYPE_TENSOR)
            coerce_tensor(l, p->type, &v);
        if (p->dimvar && v.kind == LV_INT)
            subst_int(l, &ce.subst, p->dimvar, v.u.i);
        bind(l, &ce, p, v);
        args[i] = v;
    }
    /* Symbolic dims: from the arguments' shapes where a dim is just the variable, then from
     * the checker's unification at this call evaluated in the caller's environment. */
    for (size_t i = 0; i < np; i++) {
        const dtl_type *pt = f->params[i]->type;
        if (!pt || pt->kind != DTL_TYPE_TENSOR || args[i].kind != LV_TENSOR)
            continue;
        const dtl_node *an = nd(l, args[i].u.t);
        for (uint32_t k = 0; k < pt->u.t.rank && k < an->rank; k++) {
            const dtl_dimvar *v = dtl_dim_as_var(pt->u.t.dims[k]);
            if (fn_dim_unbound(f, v, &ce.subst))
                subst_int(l, &ce.subst, v, an->shape[k]);
        }
    }
    for (size_t k = 0; k < f->ndims; k++) {
        const dtl_dimvar *v = f->dims[k]->dimvar;
        if (!fn_dim_unbound(f, v, &ce.subst))
            continue;
        const dtl_dim *d = c ? dtl_subst_get(&c->subst, v) : NULL;
        int64_t val;
        if (!d || !dim_eval(d, &caller->subst, true, &val))
            return fail(l, at, "cannot bind dimension '%s' of '%s' from its arguments here",
                        v->name, f->name);
        subst_int(l, &ce.subst, v, val);
    }
    /* The arguments as the fn's signature says, at these sizes. */
    for (size_t i = 0; i < np; i++) {
        const dtl_type *pt = f->params[i]->type;
        if (!pt || pt->kind != DTL_TYPE_TENSOR)
            continue;
        int64_t shape[DTL_MAX_RANK];
        if (args[i].kind != LV_TENSOR || !type_shape(pt, &ce.subst, true, shape))
            return fail(l, at, "internal error: argument '%s' of '%s' cannot be bound",
                        f->params[i]->name, f->name);
        const dtl_node *an = nd(l, args[i].u.t);
        if (an->rank != pt->u.t.rank || an->dtype != mapdt(l, pt->u.t.dtype) ||
            memcmp(an->shape, shape, an->rank * sizeof *shape) != 0)
            return fail(l, c && i < c->nargs && c->args[i] ? c->args[i]->span : at,
                        "argument '%s' of '%s' must be %s, which is %s here, found %s",
                        f->params[i]->name, f->name, dtl_type_print(l->ca, pt, f->module),
                        shape_str(l, mapdt(l, pt->u.t.dtype), pt->u.t.rank, shape),
                        node_str(l, args[i].u.t));
    }
    /* The body. */
    dtl_role role = l->g->role;
    l->g->role = DTL_ROLE_FORWARD;
    const dtl_decl *d = f->decl;
    lv r;
    bool ok = true, have = false;
    if (!d->u.fn.is_block) {
        ok = eval(l, &ce, d->u.fn.expr, &r);
        have = ok;
    } else {
        for (size_t i = 0; i < d->u.fn.nbody && ok && !have; i++) {
            const dtl_decl *st = d->u.fn.body[i];
            bool last = i + 1 == d->u.fn.nbody;
            switch (st->kind) {
            case DTL_DECL_LET: {
                lv v;
                ok = eval(l, &ce, st->u.bind.value, &v);
                if (ok && st->sym) {
                    v = coerce_host(st->sym->type, v);
                    coerce_tensor(l, st->sym->type, &v);
                    bind(l, &ce, st->sym, v);
                }
                break;
            }
            case DTL_DECL_RETURN:
                ok = have = eval(l, &ce, st->u.expr, &r);
                break;
            case DTL_DECL_EXPR:
                if (last)   /* earlier expressions' values are unused: nothing to compute */
                    ok = have = eval(l, &ce, st->u.expr, &r);
                break;
            default:
                ok = fail(l, st->span, "internal error: a %s in a fn body",
                          dtl_decl_kind_name(st->kind));
                break;
            }
        }
    }
    l->g->role = role;
    if (!ok)
        return false;
    if (!have)
        return fail(l, d->span, "internal error: fn '%s' has no value", f->name);
    r = coerce_host(f->ret, r);
    coerce_tensor(l, f->ret, &r);
    if (f->ret->kind == DTL_TYPE_TENSOR) {
        int64_t shape[DTL_MAX_RANK];
        const dtl_node *rn = r.kind == LV_TENSOR ? nd(l, r.u.t) : NULL;
        if (!rn || !type_shape(f->ret, &ce.subst, false, shape) ||
            rn->rank != f->ret->u.t.rank ||
            memcmp(rn->shape, shape, rn->rank * sizeof *shape) != 0)
            return fail(l, d->span, "'%s' returns %s, which is %s here, but its value is %s",
                        f->name, dtl_type_print(l->ca, f->ret, f->module),
                        shape_str(l, mapdt(l, f->ret->u.t.dtype), f->ret->u.t.rank, shape),
                        rn ? node_str(l, r.u.t) : "not a tensor");
    }
    if (memo_key)
        memo_add(l, f, in, memo_key, np, r);
    *out = r;
    return graph_ok(l, at);
}

static bool eval_call(low *l, env *e, const dtl_expr *x, lv *out)
{
    const dtl_sym *s = x->sym;
    if (!s || s->kind != DTL_SYM_CALL || !s->u.call)
        return fail(l, x->span, "internal error: this call was not checked");
    const dtl_call *c = s->u.call;
    switch (c->kind) {
    case DTL_CALL_BUILTIN:
        return lower_builtin(l, e, x, c, out);
    case DTL_CALL_FN:
    case DTL_CALL_FORWARD: {
        lv callee;
        if (!eval(l, e, x->u.call.callee, &callee))
            return false;
        inst *in = callee.kind == LV_INST ? callee.u.in
                 : callee.kind == LV_FN   ? callee.u.fn.in
                                          : NULL;
        if (callee.kind != LV_INST && callee.kind != LV_FN)
            return fail(l, x->span, "internal error: calling something that is not a fn");
        dtl_fn *f = c->fn;
        size_t np = f->nparams;
        lv *args = dtl_arena_array(&l->scratch, np ? np : 1, sizeof *args);
        for (size_t i = 0; i < np; i++) {
            const dtl_expr *a = i < c->nargs ? c->args[i] : NULL;
            if (a ? !eval(l, e, a, &args[i])
                  : !type_value(l, x->span, f->defaults ? f->defaults[i] : NULL, &args[i]))
                return false;
        }
        if (in && in->reps) {   /* a stack: each instance's forward on the previous result */
            for (int64_t i = 0; i < in->nreps; i++) {
                lv *a = dtl_arena_array(&l->scratch, np, sizeof *a);
                memcpy(a, args, np * sizeof *a);
                if (!inline_fn(l, e, x->span, f, in->reps[i], c, a, out))
                    return false;
                args[0] = *out;
            }
            return true;
        }
        return inline_fn(l, e, x->span, f, in, c, args, out);
    }
    case DTL_CALL_NEW:
        break;
    }
    return fail(l, x->span, "internal error: a model is instantiated outside a member");
}

/* ---- expressions ------------------------------------------------------------------------- */

static bool eval_inner(low *l, env *e, const dtl_expr *x, lv *out)
{
    memset(out, 0, sizeof *out);
    switch (x->kind) {
    case DTL_EXPR_INT:
        *out = lv_int(x->u.ival);
        return true;
    case DTL_EXPR_FLOAT:
        *out = lv_float(x->u.fval);
        return true;
    case DTL_EXPR_STRING:
        out->kind = LV_STR;
        out->u.str.s = x->u.str.bytes ? x->u.str.bytes : "";
        out->u.str.n = x->u.str.len;
        return true;
    case DTL_EXPR_BOOL:
        *out = lv_bool(x->u.bval);
        return true;
    case DTL_EXPR_DTYPE:
        out->kind = LV_DTYPE;
        out->u.dt = x->u.dtype;
        return true;
    case DTL_EXPR_NAME:
        return eval_sym(l, e, x->sym, x->span, out);
    case DTL_EXPR_MEMBER:
        return eval_member(l, e, x, out);
    case DTL_EXPR_CALL:
        return eval_call(l, e, x, out);
    case DTL_EXPR_INDEX:
        return eval_index(l, e, x, out);
    case DTL_EXPR_UNARY:
        return eval_unary(l, e, x, out);
    case DTL_EXPR_BINARY:
        return eval_binary(l, e, x, out);
    case DTL_EXPR_TENSOR:
        return eval_literal(l, e, x, out);
    case DTL_EXPR_PAREN:
        return eval(l, e, x->u.paren, out);
    }
    return fail(l, x->span, "internal error: an expression of an unknown kind");
}

/* A tensor value must have the shape of its checked type at these sizes. */
static bool check_shape(low *l, env *e, const dtl_expr *x, lv *v)
{
    const dtl_type *t = x->type;
    if (!t || t->kind != DTL_TYPE_TENSOR)
        return true;
    coerce_tensor(l, t, v);
    if (v->kind != LV_TENSOR)
        return fail(l, x->span, "internal error: %s has a tensor type but no tensor value",
                    ename(l, x, "this expression"));
    const dtl_node *n = nd(l, v->u.t);
    int64_t shape[DTL_MAX_RANK];
    dtl_dtype dt = mapdt(l, t->u.t.dtype);
    if (!type_shape(t, &e->subst, false, shape))
        return fail(l, x->span, "internal error: the type of %s (%s) has sizes unknown here",
                    ename(l, x, "this expression"), dtl_type_print(l->ca, t, e->mod));
    if (n->dtype == dt && n->rank == t->u.t.rank &&
        memcmp(n->shape, shape, n->rank * sizeof *shape) == 0)
        return true;
    return fail(l, x->span, "%s is %s here, but its type %s is %s at these sizes",
                ename(l, x, "this expression"), node_str(l, v->u.t),
                dtl_type_print(l->ca, t, e->mod), shape_str(l, dt, t->u.t.rank, shape));
}

static bool eval(low *l, env *e, const dtl_expr *x, lv *out)
{
    if (l->depth >= MAX_DEPTH) {
        if (!l->depth_reported)
            fail(l, x->span, "expressions nest too deeply to lower, counting the fns they "
                 "call (more than %d levels)", MAX_DEPTH);
        l->depth_reported = true;
        return false;
    }
    l->depth++;
    bool ok = eval_inner(l, e, x, out) && check_shape(l, e, x, out);
    l->depth--;
    return ok;
}

/* ---- graphs ------------------------------------------------------------------------------ */

static const dtl_module *train_module(const dtl_train *t)
{
    if (t->sym && t->sym->module)
        return t->sym->module;
    if (t->x && t->x->module)
        return t->x->module;
    return NULL;
}

/* The root instance and the inputs; fills l->x (and l->y unless inference). */
static bool lower_inputs(low *l)
{
    const dtl_train *t = l->t;
    const dtl_type *it = t->inst;
    dtl_span at = t->decl->span;
    if (!it || it->kind != DTL_TYPE_INSTANCE || !t->x || !t->x->type)
        return fail(l, at, "internal error: the train block was not checked");
    dtl_model *m = it->u.m.model;
    lv *ctor = dtl_arena_array(&l->scratch, m->nctor ? m->nctor : 1, sizeof *ctor);
    for (size_t i = 0; i < m->nctor; i++)
        if (!type_value(l, at, it->u.m.args[i], &ctor[i]))
            return false;
    /* The inputs first, then the params. */
    dtl_subst s;
    memset(&s, 0, sizeof s);
    for (size_t i = 0; i < m->nctor; i++)
        if (m->ctor[i]->dimvar && ctor[i].kind == LV_INT)
            subst_int(l, &s, m->ctor[i]->dimvar, ctor[i].u.i);
    subst_int(l, &s, t->batch_var, l->batch);
    const dtl_type *xt = t->x->type;
    int64_t shape[DTL_MAX_RANK];
    if (xt->kind != DTL_TYPE_TENSOR || xt->u.t.rank > DTL_MAX_RANK ||
        !type_shape(xt, &s, true, shape))
        return fail(l, at, "the shape of x (%s) cannot be lowered",
                    dtl_type_print(l->ca, xt, l->mod));
    dtl_dtype xdt = mapdt(l, xt->u.t.dtype);
    if (!shape_ok(l, at, "x", xdt, xt->u.t.rank, shape))
        return false;
    if (l->kind != DTL_LOWER_UPDATE)   /* (which takes gradients, not a batch) */
        l->x = lv_tensor(dtl_g_input(l->g, "x", xdt, xt->u.t.rank, shape));
    if (l->kind != DTL_LOWER_INFER && l->kind != DTL_LOWER_UPDATE) {
        /* y: i64[B] class labels, f32[B] regression targets, i64[B, T] text (the checker's) */
        const dtl_type *yt = t->y ? t->y->type : NULL;
        int64_t yshape[DTL_MAX_RANK];
        if (!yt || yt->kind != DTL_TYPE_TENSOR || yt->u.t.rank > DTL_MAX_RANK ||
            !type_shape(yt, &s, true, yshape))
            return fail(l, at, "internal error: the type of y cannot be lowered");
        dtl_dtype ydt = yt->u.t.dtype == DTL_DTYPE_I64 ? DTL_DTYPE_I64 : mapdt(l, yt->u.t.dtype);
        l->y = lv_tensor(dtl_g_input(l->g, "y", ydt, yt->u.t.rank, yshape));
    }
    return new_inst(l, m, ctor, "", at, &l->root);
}

static void train_env(low *l, env *e)
{
    env_init(l, e, l->root, l->mod);
    subst_int(l, &e->subst, l->t->batch_var, l->batch);
}

/* The model's forward(x), for accuracy and inference. */
static bool lower_forward(low *l, env *e, lv *out)
{
    dtl_span at = l->t->decl->span;
    dtl_fn *f = dtl_model_fn(l->root->model, "forward");
    if (!f)
        return fail(l, at, "model %s has no fn 'forward' to apply to x", l->root->model->name);
    lv *args = dtl_arena_array(&l->scratch, f->nparams ? f->nparams : 1, sizeof *args);
    for (size_t i = 0; i < f->nparams; i++) {
        if (i == 0)
            args[i] = l->x;
        else if (!f->defaults || !f->defaults[i])
            return fail(l, at, "%s.forward takes %zu arguments; it must take x alone to be "
                        "applied to a batch", l->root->model->name, f->nparams);
        else if (!type_value(l, at, f->defaults[i], &args[i]))
            return false;
    }
    if (f->nparams == 0 || !f->params[0]->type || f->params[0]->type->kind != DTL_TYPE_TENSOR)
        return fail(l, at, "%s.forward must take x, a tensor, as its first argument",
                    l->root->model->name);
    return inline_fn(l, e, at, f, l->root, NULL, args, out);
}

static bool lower_loss(low *l, env *e, dtl_val *loss)
{
    const dtl_decl *ls = l->t->settings[DTL_SET_LOSS];
    if (!ls || !l->t->loss)
        return fail(l, l->t->decl->span, "internal error: the train block has no loss");
    l->g->role = DTL_ROLE_LOSS;
    lv v;
    bool ok = eval(l, e, ls->u.bind.value, &v);
    l->g->role = DTL_ROLE_FORWARD;
    if (!ok)
        return false;
    if (v.kind != LV_TENSOR || nd(l, v.u.t)->rank != 0 ||
        !dtl_dtype_is_float(nd(l, v.u.t)->dtype))
        return fail(l, ls->u.bind.value->span, "internal error: the loss is not a float scalar");
    *loss = v.u.t;
    return true;
}

static bool opt_config(low *l, dtl_opt_cfg *cfg);
static double cfg_num(const dtl_type *t, unsigned i);

/* UPDATE: an input "grad.<param>" per param, and the optimizer applied to them as STEP
 * applies it to the gradients it computes. */
static bool lower_update(low *l)
{
    dtl_graph *g = l->g;
    dtl_opt_cfg cfg;
    if (!opt_config(l, &cfg))
        return false;
    uint32_t n = l->nparams;
    dtl_val *grads = dtl_arena_array(&l->scratch, n ? n : 1, sizeof *grads);
    for (uint32_t i = 0; i < n; i++) {
        const dtl_node *p = nd(l, l->params[i]);
        grads[i] = dtl_g_input(g, dtl_arena_printf(&l->scratch, "grad.%s", p->name), p->dtype,
                               p->rank, p->shape);
    }
    dtl_opt_info info;
    dtl_err err = {0};
    if (!dtl_opt_build(g, &cfg, l->params, grads, n, &info, &err))
        return fail(l, l->t->settings[DTL_SET_OPTIMIZER]
                           ? l->t->settings[DTL_SET_OPTIMIZER]->u.bind.value->span
                           : l->t->decl->span,
                    "optimizer: %s", err.msg);
    if (info.lr != DTL_VAL_NONE)
        dtl_g_output(g, DTL_OUT_VALUE, "lr", info.lr, DTL_VAL_NONE);
    return true;
}

/* Builds the graph of l->kind into l->g. */
static bool verified(low *l, const char *what);

static bool lower_body(low *l)
{
    if (!lower_inputs(l))
        return false;
    env e;
    train_env(l, &e);
    dtl_graph *g = l->g;
    switch (l->kind) {
    case DTL_LOWER_INFER: {
        lv y;
        if (!lower_forward(l, &e, &y))
            return false;
        if (y.kind != LV_TENSOR)
            return fail(l, l->t->decl->span, "%s.forward does not return a tensor",
                        l->root->model->name);
        dtl_g_output(g, DTL_OUT_VALUE, "y", y.u.t, DTL_VAL_NONE);
        return true;
    }
    case DTL_LOWER_EVAL: {
        const dtl_type *ev = l->t->evaluate;
        if (ev && ev->u.cfg.builtin && ev->u.cfg.builtin->id == DTL_BI_ACCURACY) {
            lv z;
            if (!lower_forward(l, &e, &z))
                return false;
            const dtl_node *zn = z.kind == LV_TENSOR ? nd(l, z.u.t) : NULL;
            /* scores [batch, classes] for labels [batch]; [batch, T, classes] for [batch, T]
             * (text: every position counts) */
            const dtl_node *yn = nd(l, l->y.u.t);
            bool fits = zn && zn->rank == yn->rank + 1 && yn->dtype == DTL_DTYPE_I64 &&
                        zn->shape[zn->rank - 1] > 0;
            for (uint32_t i = 0; fits && i < yn->rank; i++)
                fits = zn->shape[i] == yn->shape[i];
            if (!fits || !dtl_dtype_is_float(zn->dtype)) {
                dtl_span at = l->t->settings[DTL_SET_EVALUATE]
                                  ? l->t->settings[DTL_SET_EVALUATE]->u.bind.value->span
                                  : l->t->decl->span;
                return fail(l, at, "accuracy needs forward(x) to be float scores of shape "
                            "[batch, classes]; it is %s", zn ? node_str(l, z.u.t)
                                                             : "not a tensor");
            }
            int64_t k = ev->u.cfg.builtin->nparams > 1 ? (int64_t)cfg_num(ev, 1) : 1;
            if (k > 1 && zn->rank != 2) {
                dtl_span at = l->t->settings[DTL_SET_EVALUATE]
                                  ? l->t->settings[DTL_SET_EVALUATE]->u.bind.value->span
                                  : l->t->decl->span;
                return fail(l, at, "accuracy with k > 1 needs scores of shape [batch, classes]; "
                            "they are %s", node_str(l, z.u.t));
            }
            g->role = DTL_ROLE_METRIC;
            dtl_val correct = k <= 1 ? dtl_nn_accuracy_count(g, z.u.t, l->y.u.t, DTL_DTYPE_I64)
                                     : dtl_nn_topk_count(g, z.u.t, l->y.u.t, k, DTL_DTYPE_I64);
            g->role = DTL_ROLE_FORWARD;
            dtl_g_output(g, DTL_OUT_VALUE, "correct", correct, DTL_VAL_NONE);
        }
        dtl_val loss;
        if (!lower_loss(l, &e, &loss))
            return false;
        dtl_g_output(g, DTL_OUT_LOSS, "loss", loss, DTL_VAL_NONE);
        return true;
    }
    case DTL_LOWER_UPDATE:
        return lower_update(l);
    case DTL_LOWER_STEP:
    case DTL_LOWER_GRAD:
        break;
    }
    dtl_val loss;
    if (!lower_loss(l, &e, &loss))
        return false;
    dtl_g_output(g, DTL_OUT_LOSS, "loss", loss, DTL_VAL_NONE);
    /* The verifier runs between the passes that build the step (debug builds). */
    if (!verified(l, "forward and loss"))
        return false;
    dtl_opt_cfg cfg;
    if (!opt_config(l, &cfg))
        return false;
    uint32_t n = l->nparams;
    dtl_val *grads = dtl_arena_array(&l->scratch, n ? n : 1, sizeof *grads);
    bool *unreached = dtl_arena_array(&l->scratch, n ? n : 1, sizeof *unreached);
    dtl_err err = {0};
    if (!dtl_ad_grad(g, loss, l->params, n, grads, unreached, &err))
        return fail(l, l->t->decl->span, "internal error: differentiation failed: %s",
                    err.msg);
    for (uint32_t i = 0; i < n; i++)
        if (unreached[i])
            dtl_diag_warning(l->d, l->param_syms[i]->span, "param '%s' does not affect the "
                             "loss: it gets no gradient and keeps its initial value",
                             nd(l, l->params[i])->name);
    if (!verified(l, "backward (after autodiff)"))
        return false;
    if (l->kind == DTL_LOWER_GRAD) {   /* in the order backward finishes them (a guess) */
        for (uint32_t i = n; i-- > 0;)
            dtl_g_output(g, DTL_OUT_VALUE,
                         dtl_arena_printf(&l->scratch, "grad.%s", nd(l, l->params[i])->name),
                         grads[i], DTL_VAL_NONE);
        return true;
    }
    dtl_opt_info info;
    if (!dtl_opt_build(g, &cfg, l->params, grads, n, &info, &err))
        return fail(l, l->t->settings[DTL_SET_OPTIMIZER]
                           ? l->t->settings[DTL_SET_OPTIMIZER]->u.bind.value->span
                           : l->t->decl->span,
                    "optimizer: %s", err.msg);
    if (info.lr != DTL_VAL_NONE)
        dtl_g_output(g, DTL_OUT_VALUE, "lr", info.lr, DTL_VAL_NONE);
    return true;
}

/* ---- settings ---------------------------------------------------------------------------- */

static double cfg_num(const dtl_type *t, unsigned i)
{
    double v = 0;
    dtl_type_num_const(t->u.cfg.args[i], &v);
    return v;
}

/* The train block's schedule, warmup and clip into cfg (whose optimizer part is set). A cosine
 * without `steps` gets total_from_run: its length is the run's, an input of the step graph
 * ("total_steps", compiler/optim.h) that the runner binds once the data is loaded, so the
 * graphs stay independent of the data (and --emit=graph needs none). */
static bool sched_config(low *l, dtl_opt_cfg *cfg)
{
    const dtl_type *s = l->t->schedule;
    cfg->sched.warmup = l->t->warmup;
    cfg->clip_norm = l->t->clip;
    if (!s)
        return true;
    if (s->kind != DTL_TYPE_SCHEDULE || !s->u.cfg.builtin)
        return fail(l, l->t->decl->span, "internal error: the schedule was not checked");
    switch (s->u.cfg.builtin->id) {
    case DTL_BI_SCHED_CONSTANT:
        cfg->sched.kind = DTL_SCHED_CONSTANT;
        return true;
    case DTL_BI_STEP:
        cfg->sched.kind = DTL_SCHED_STEP;
        dtl_type_int_const(s->u.cfg.args[0], &cfg->sched.step_size);
        cfg->sched.gamma = cfg_num(s, 1);
        return true;
    case DTL_BI_COSINE:
        cfg->sched.kind = DTL_SCHED_COSINE;
        cfg->sched.floor = cfg_num(s, 0);
        cfg->sched.total_from_run = s->u.cfg.args[1]->kind == DTL_TYPE_NONE;
        if (!cfg->sched.total_from_run)
            dtl_type_int_const(s->u.cfg.args[1], &cfg->sched.total);
        return true;
    default:
        return fail(l, l->t->decl->span, "schedule %s() is not supported by lowering yet",
                    s->u.cfg.builtin->name);
    }
}

static bool opt_config(low *l, dtl_opt_cfg *cfg)
{
    const dtl_type *o = l->t->optimizer;
    if (!o || o->kind != DTL_TYPE_OPTIMIZER || !o->u.cfg.builtin)
        return fail(l, l->t->decl->span, "internal error: the train block has no optimizer");
    switch (o->u.cfg.builtin->id) {
    case DTL_BI_SGD:
        dtl_opt_defaults(cfg, DTL_OPT_SGD);
        cfg->lr = cfg_num(o, 0);
        cfg->momentum = cfg_num(o, 1);
        cfg->nesterov = o->u.cfg.args[2]->kind == DTL_TYPE_BOOL && o->u.cfg.args[2]->u.b.v;
        cfg->weight_decay = cfg_num(o, 3);
        break;
    case DTL_BI_ADAM:
    case DTL_BI_ADAMW:
        dtl_opt_defaults(cfg, o->u.cfg.builtin->id == DTL_BI_ADAM ? DTL_OPT_ADAM : DTL_OPT_ADAMW);
        cfg->lr = cfg_num(o, 0);
        cfg->beta1 = cfg_num(o, 1);
        cfg->beta2 = cfg_num(o, 2);
        cfg->eps = cfg_num(o, 3);
        cfg->weight_decay = cfg_num(o, 4);
        break;
    default:
        return fail(l, l->t->decl->span, "optimizer %s() is not supported by lowering yet",
                    o->u.cfg.builtin->name);
    }
    return sched_config(l, cfg);
}

static const char *cfg_str(low *l, const dtl_type *t, unsigned i)
{
    const dtl_type *a = t->u.cfg.args[i];
    if (!a || a->kind != DTL_TYPE_STR || !a->u.s.bytes)
        return NULL;
    return dtl_arena_strndup(l->ca, a->u.s.bytes, a->u.s.len);
}

/* Decodes a dataset split (ds.train, ds.test) into d. */
static bool data_spec(low *l, const dtl_type *split, dtl_lower_data *d)
{
    memset(d, 0, sizeof *d);
    const dtl_sym *ds = split && split->kind == DTL_TYPE_SPLIT ? split->u.split.dataset : NULL;
    const dtl_type *t = ds ? ds->type : NULL;
    if (!t || t->kind != DTL_TYPE_DATASET || !t->u.cfg.builtin)
        return fail(l, l->t->decl->span, "internal error: a data split was not checked");
    d->dataset = ds->name;
    d->test = split->u.split.test;
    const char *path = ds->module ? ds->module->path : "";
    const char *slash = path ? strrchr(path, '/') : NULL;
    d->dir = slash ? dtl_arena_strndup(l->ca, path, (size_t)(slash - path + 1)) : "";
    d->label_index = -1;
    switch (t->u.cfg.builtin->id) {
    case DTL_BI_IDX:
        d->kind = DTL_LDATA_IDX;
        d->name = cfg_str(l, t, 0);
        d->scale = cfg_num(t, 1);
        break;
    case DTL_BI_NPY:
        d->kind = DTL_LDATA_NPY;
        d->x = cfg_str(l, t, d->test ? 2 : 0);
        d->y = cfg_str(l, t, d->test ? 3 : 1);
        d->scale = cfg_num(t, 4);
        break;
    case DTL_BI_CSV: {
        d->kind = DTL_LDATA_CSV;
        d->path = cfg_str(l, t, d->test ? 2 : 0);
        const dtl_type *lab = t->u.cfg.args[1];
        if (lab && lab->kind == DTL_TYPE_STR)
            d->label = cfg_str(l, t, 1);
        else
            dtl_type_int_const(lab, &d->label_index);
        d->header = t->u.cfg.args[3]->kind == DTL_TYPE_BOOL && t->u.cfg.args[3]->u.b.v;
        d->scale = cfg_num(t, 4);
        if (t->u.cfg.args[2]->kind != DTL_TYPE_STR) {   /* test = 0.2: held out of path */
            d->test_fraction = cfg_num(t, 2);
            d->path = cfg_str(l, t, 0);
        }
        dtl_type_int_const(t->u.cfg.args[5], &d->skip);
        d->standardize = t->u.cfg.args[6]->kind == DTL_TYPE_BOOL && t->u.cfg.args[6]->u.b.v;
        d->regression = t->u.cfg.args[7]->kind == DTL_TYPE_BOOL && t->u.cfg.args[7]->u.b.v;
        break;
    }
    case DTL_BI_TEXT:
        d->kind = DTL_LDATA_TEXT;
        d->path = cfg_str(l, t, 0);
        dtl_type_int_const(t->u.cfg.args[1], &d->context);
        d->separator = cfg_str(l, t, 2);
        dtl_type_int_const(t->u.cfg.args[3], &d->test_every);
        d->scale = 1.0;
        break;
    default:
        return fail(l, l->t->decl->span, "dataset %s() is not supported by lowering yet",
                    t->u.cfg.builtin->name);
    }
    return true;
}

/* ---- entry points ------------------------------------------------------------------------ */

/* Can the model's forward be applied to x alone (a tensor of x's dtype and rank first, the
 * other parameters with defaults)? */
static bool forward_fits(const dtl_train *t)
{
    const dtl_fn *f = dtl_model_fn(t->inst->u.m.model, "forward");
    const dtl_type *xt = t->x ? t->x->type : NULL;
    if (!f || f->nparams == 0 || !xt || xt->kind != DTL_TYPE_TENSOR)
        return false;
    const dtl_type *pt = f->params[0]->type;
    if (!pt || pt->kind != DTL_TYPE_TENSOR || pt->u.t.dtype != xt->u.t.dtype ||
        pt->u.t.rank != xt->u.t.rank)
        return false;
    for (size_t i = 1; i < f->nparams; i++)
        if (!f->defaults || !f->defaults[i])
            return false;
    return true;
}

const dtl_train *dtl_lower_find_train(const dtl_module *m, const char *name)
{
    if (!m)
        return NULL;
    for (size_t i = 0; i < m->ntrains; i++) {
        const dtl_train *t = m->trains[i];
        if (!name || (t->decl && t->decl->name.text && strcmp(t->decl->name.text, name) == 0))
            return t;
    }
    return NULL;
}

/* Writes why a graph does not verify as an error. */
static bool verified(low *l, const char *what)
{
#ifdef NDEBUG
    (void)l, (void)what;
    return true;
#else
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    bool ok = dtl_graph_verify(l->g, f);
    if (f)
        fclose(f);
    if (!ok) {
        static const dtl_span nowhere;
        fail(l, nowhere, "internal error: the lowered %s graph does not verify: %s", what,
             buf ? buf : "");
    }
    free(buf);
    return ok;
#endif
}

dtl_precision dtl_lower_precision(const dtl_train *t, const dtl_lower_opts *opts)
{
    dtl_precision p = opts && opts->precision > DTL_PREC_DEFAULT &&
                              opts->precision < DTL_PREC_COUNT
                          ? opts->precision
                          : t ? t->precision : DTL_PREC_DEFAULT;
    return p > DTL_PREC_DEFAULT && p < DTL_PREC_COUNT ? p : DTL_PREC_F32;
}

/* The state of one lowering run, on the heap so that it survives a longjmp intact. */
static low *low_new(dtl_ctx *ctx, const dtl_train *t, dtl_lower_kind kind,
                    const dtl_lower_opts *o, dtl_graph *g)
{
    low *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->ctx = ctx;
    l->d = &ctx->diags;
    l->ca = &ctx->arena;
    dtl_arena_init(&l->scratch);
    l->g = g;
    l->kind = kind;
    l->fdt = o && o->compute == DTL_DTYPE_F64 ? DTL_DTYPE_F64 : DTL_DTYPE_F32;
    l->batch = o && o->batch > 0 ? o->batch : t->batch;
    if (o && o->shard_world > 1 && kind == DTL_LOWER_GRAD) {
        l->shard_world = o->shard_world;
        l->shard_rank = o->shard_rank;
    }
    l->t = t;
    l->mod = train_module(t);
    l->prec = dtl_lower_precision(t, o);
    return l;
}

static void low_free(low *l)
{
    if (!l)
        return;
    dtl_arena_free(&l->scratch);
    free(l);
}

static const char *const kind_names[] = {"step", "eval", "infer", "grad", "update"};

/* Lowers one graph; with the out-of-memory jump already installed by the caller. */
static bool lower_one(low *l)
{
    static const dtl_span nowhere;
    if (l->batch < 1)
        return fail(l, nowhere, "the batch size must be at least 1, found %" PRId64, l->batch);
    return lower_body(l) && verified(l, kind_names[l->kind]);
}

static bool opts_ok(dtl_ctx *ctx, const dtl_train *t, const dtl_lower_opts *o)
{
    static const dtl_span nowhere;
    if (o && o->compute != DTL_DTYPE_F32 && o->compute != DTL_DTYPE_F64) {
        dtl_diag_error(&ctx->diags, nowhere, "lowering: the compute dtype must be f32 or f64, "
                       "found %s", dtl_dtype_name(o->compute));
        return false;
    }
    if (ctx->diags.nerrors > 0) {
        dtl_diag_error(&ctx->diags, nowhere, "not lowering: the program has errors");
        return false;
    }
    if (!t || !t->inst || t->inst->kind != DTL_TYPE_INSTANCE || !t->loss || !t->optimizer ||
        !t->data) {
        dtl_diag_error(&ctx->diags, t && t->decl ? t->decl->span : nowhere,
                       "this train block was not checked without errors: nothing to lower");
        return false;
    }
    return true;
}

bool dtl_lower_graph(dtl_ctx *ctx, const dtl_train *t, dtl_lower_kind kind,
                     const dtl_lower_opts *opts, dtl_graph *g)
{
    dtl_graph_init(g);
    if (!opts_ok(ctx, t, opts)) {
        dtl_graph_free(g);
        return false;
    }
    low *l = low_new(ctx, t, kind, opts, g);
    jmp_buf jb;
    jmp_buf *prev = ctx->arena.oom_jump;
    if (!l || setjmp(jb)) {
        ctx->arena.oom_jump = prev;
        static const dtl_span nowhere;
        dtl_diag_error(&ctx->diags, nowhere, "out of memory");
        low_free(l);
        dtl_graph_free(g);
        return false;
    }
    ctx->arena.oom_jump = &jb;
    l->scratch.oom_jump = &jb;
    g->arena.oom_jump = &jb;
    bool ok = lower_one(l);
    ctx->arena.oom_jump = prev;
    g->arena.oom_jump = NULL;
    low_free(l);
    if (!ok)
        dtl_graph_free(g);
    return ok;
}

bool dtl_lower_train(dtl_ctx *ctx, const dtl_train *t, const dtl_lower_opts *opts,
                     dtl_lowered *out)
{
    memset(out, 0, sizeof *out);
    if (!opts_ok(ctx, t, opts))
        return false;
    out->split = opts && opts->split_step;
    if (out->split ? !dtl_lower_graph(ctx, t, DTL_LOWER_GRAD, opts, &out->grad) ||
                     !dtl_lower_graph(ctx, t, DTL_LOWER_UPDATE, opts, &out->update)
                   : !dtl_lower_graph(ctx, t, DTL_LOWER_STEP, opts, &out->step)) {
        dtl_lowered_free(out);
        return false;
    }
    if (!dtl_lower_graph(ctx, t, DTL_LOWER_EVAL, opts, &out->eval)) {
        dtl_lowered_free(out);
        return false;
    }
    out->has_infer = forward_fits(t);
    if (out->has_infer && !dtl_lower_graph(ctx, t, DTL_LOWER_INFER, opts, &out->infer)) {
        dtl_lowered_free(out);
        return false;
    }
    /* The settings, decoded with a lowering state of their own (no graph is touched). */
    low *l = low_new(ctx, t, DTL_LOWER_STEP, opts, &out->step);
    jmp_buf jb;
    jmp_buf *prev = ctx->arena.oom_jump;
    volatile bool ok = false;
    if (l && !setjmp(jb)) {
        ctx->arena.oom_jump = &jb;
        l->scratch.oom_jump = &jb;
        out->batch = l->batch;
        out->epochs = t->epochs;
        out->seed = t->seed;
        out->precision = dtl_lower_precision(t, opts);
        ok = opt_config(l, &out->optim) && data_spec(l, t->data, &out->data);
        out->has_accuracy = t->evaluate && t->evaluate->u.cfg.builtin &&
                            t->evaluate->u.cfg.builtin->id == DTL_BI_ACCURACY;
        if (ok && out->has_accuracy)
            ok = data_spec(l, t->evaluate->u.cfg.args[0], &out->eval_data);
        const dtl_graph *tg = dtl_lowered_train_graph(out);
        for (uint32_t i = 0; i < tg->nnodes; i++)
            out->nparams += tg->nodes[i].op == DTL_OP_PARAM;
    } else {
        static const dtl_span nowhere;
        dtl_diag_error(&ctx->diags, nowhere, "out of memory");
    }
    ctx->arena.oom_jump = prev;
    low_free(l);
    if (!ok) {
        dtl_lowered_free(out);
        return false;
    }
    return true;
}

/* A free-standing expression (dtlc repl): evaluated like a train block's setting, with the
 * prompt's values as inputs and its instances' params as params. */
bool dtl_lower_expr(dtl_ctx *ctx, const dtl_module *m, const dtl_expr *e,
                    const dtl_lower_opts *opts, dtl_graph *g)
{
    static const dtl_span nowhere;
    dtl_graph_init(g);
    if (opts && opts->compute != DTL_DTYPE_F32 && opts->compute != DTL_DTYPE_F64 &&
        opts->compute != 0) {
        dtl_diag_error(&ctx->diags, nowhere, "lowering: the compute dtype must be f32 or f64, "
                       "found %s", dtl_dtype_name(opts->compute));
        dtl_graph_free(g);
        return false;
    }
    if (ctx->diags.nerrors > 0 || !m || !e) {
        dtl_diag_error(&ctx->diags, nowhere, "not lowering: the program has errors");
        dtl_graph_free(g);
        return false;
    }
    low *l = calloc(1, sizeof *l);
    jmp_buf jb;
    jmp_buf *prev = ctx->arena.oom_jump;
    if (!l || setjmp(jb)) {
        ctx->arena.oom_jump = prev;
        dtl_diag_error(&ctx->diags, nowhere, "out of memory");
        low_free(l);
        dtl_graph_free(g);
        return false;
    }
    l->ctx = ctx;
    l->d = &ctx->diags;
    l->ca = &ctx->arena;
    dtl_arena_init(&l->scratch);
    l->g = g;
    l->kind = DTL_LOWER_INFER;   /* dropout is the identity; calls are memoized */
    l->fdt = opts && opts->compute == DTL_DTYPE_F64 ? DTL_DTYPE_F64 : DTL_DTYPE_F32;
    l->batch = 1;
    l->mod = m;
    l->expr = true;
    ctx->arena.oom_jump = &jb;
    l->scratch.oom_jump = &jb;
    g->arena.oom_jump = &jb;
    env en;
    env_init(l, &en, NULL, m);
    lv v;
    bool ok = eval(l, &en, e, &v);
    if (ok && v.kind == LV_TENSOR)
        dtl_g_output(g, DTL_OUT_VALUE, "result", v.u.t, DTL_VAL_NONE);
    ok = ok && graph_ok(l, e->span) && verified(l, "expression");
    ctx->arena.oom_jump = prev;
    g->arena.oom_jump = NULL;
    low_free(l);
    if (!ok)
        dtl_graph_free(g);
    return ok;
}

void dtl_lowered_free(dtl_lowered *l)
{
    dtl_graph_free(&l->step);
    dtl_graph_free(&l->eval);
    dtl_graph_free(&l->infer);
    dtl_graph_free(&l->grad);
    dtl_graph_free(&l->update);
    memset(l, 0, sizeof *l);
}

const dtl_graph *dtl_lowered_train_graph(const dtl_lowered *l)
{
    return l->split ? &l->grad : &l->step;
}
