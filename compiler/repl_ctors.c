/* compiler/repl_ctors.c — the tensor constructors of the prompt: their table and checker rule.
 *
 * The rows are ordinary lang/builtins.h builtins with ids past the language's own, so the
 * checker handles their calls (argument binding, named arguments, defaults) like any other
 * and calls dtl_ctor_rule for the type. The rule wants every size known now: the result is a
 * tensor of constant shape, which is what lowering (compiler/lower.c, lower_ctor) builds.
 */
#include "repl_ctors.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "graph.h"

#define D(name) {name, DTL_BP_INT, "none"}
#define DTYPE_NONE {"dtype", DTL_BP_DTYPE, "none"}

static const dtl_builtin ctor_table[] = {
    {"zeros", (dtl_builtin_id)DTL_CTOR_ZEROS, DTL_BUILTIN_OP, 6,
     {{"d0", DTL_BP_INT, NULL}, D("d1"), D("d2"), D("d3"), D("d4"), DTYPE_NONE},
     "a tensor of zeros: zeros(2, 3), zeros([2, 3]), zeros(4, dtype = i64)"},
    {"ones", (dtl_builtin_id)DTL_CTOR_ONES, DTL_BUILTIN_OP, 6,
     {{"d0", DTL_BP_INT, NULL}, D("d1"), D("d2"), D("d3"), D("d4"), DTYPE_NONE},
     "a tensor of ones: ones(2, 3)"},
    {"rand", (dtl_builtin_id)DTL_CTOR_RAND, DTL_BUILTIN_OP, 6,
     {{"d0", DTL_BP_INT, NULL}, D("d1"), D("d2"), D("d3"), D("d4"), DTYPE_NONE},
     "uniform random numbers in [0, 1): rand(2, 3)"},
    {"randn", (dtl_builtin_id)DTL_CTOR_RANDN, DTL_BUILTIN_OP, 6,
     {{"d0", DTL_BP_INT, NULL}, D("d1"), D("d2"), D("d3"), D("d4"), DTYPE_NONE},
     "standard normal random numbers: randn(2, 3)"},
    {"arange", (dtl_builtin_id)DTL_CTOR_ARANGE, DTL_BUILTIN_OP, 4,
     {{"start", DTL_BP_NUMBER, NULL}, {"stop", DTL_BP_NUMBER, "none"},
      {"step", DTL_BP_NUMBER, "1"}, DTYPE_NONE},
     "evenly spaced values in [start, stop): arange(5), arange(1, 2, 0.25)"},
    {"eye", (dtl_builtin_id)DTL_CTOR_EYE, DTL_BUILTIN_OP, 3,
     {{"n", DTL_BP_INT, NULL}, {"m", DTL_BP_INT, "none"}, DTYPE_NONE},
     "the identity matrix: eye(3), eye(2, 4)"},
};

_Static_assert(sizeof ctor_table / sizeof ctor_table[0] == DTL_CTOR_END - DTL_CTOR_ZEROS,
               "one row per dtl_ctor_id");

const dtl_builtin *dtl_ctor_table(size_t *n)
{
    *n = sizeof ctor_table / sizeof ctor_table[0];
    return ctor_table;
}

bool dtl_ctor_is(const dtl_builtin *b, dtl_ctor_id *id)
{
    size_t n = sizeof ctor_table / sizeof ctor_table[0];
    if (!b || b < ctor_table || b >= ctor_table + n)
        return false;
    if (id)
        *id = (dtl_ctor_id)b->id;
    return true;
}

int64_t dtl_ctor_arange_len(double start, double stop, double step)
{
    if (step == 0 || !isfinite(start) || !isfinite(stop) || !isfinite(step))
        return -1;
    double n = ceil((stop - start) / step);
    if (!(n > 0))
        return 0;
    if (n > (double)((int64_t)1 << 48))
        return -1;
    return (int64_t)n;
}

/* ---- the rule ---------------------------------------------------------------------------- */

static const dtl_expr *strip(const dtl_expr *e)
{
    while (e && e->kind == DTL_EXPR_PAREN)
        e = e->u.paren;
    return e;
}

static dtl_span at(const dtl_bcall *c, unsigned i)
{
    return c->args[i] ? c->args[i]->span : c->at;
}

static dtl_type *bad(dtl_bcall *c, unsigned i, const char *what)
{
    const dtl_type *t = c->types[i];
    dtl_diag_error(c->diags, at(c, i), "%s(): '%s' must be %s, found %s", c->b->name,
                   c->b->params[i].name, what,
                   t ? dtl_value_print(c->arena, t, c->from) : "nothing");
    return dtl_type_new(c->arena, DTL_TYPE_ERROR);
}

/* A size: a constant int >= 0. */
static bool size_arg(dtl_bcall *c, unsigned i, const dtl_type *t, dtl_span where, int64_t *v)
{
    if (!dtl_type_int_const(t, v)) {
        dtl_diag_error(c->diags, where, "%s(): a size must be a constant int, found %s",
                       c->b->name, dtl_value_print(c->arena, t, c->from));
        return false;
    }
    if (*v < 0) {
        dtl_diag_error(c->diags, where, "%s(): a size must be >= 0, found %" PRId64,
                       c->b->name, *v);
        return false;
    }
    (void)i;
    return true;
}

/* The dtype argument (param i): none gives dflt. */
static bool dtype_arg(dtl_bcall *c, unsigned i, dtl_dtype dflt, bool float_only, dtl_dtype *dt)
{
    const dtl_type *t = c->types[i];
    if (!t || t->kind == DTL_TYPE_NONE) {
        *dt = dflt;
        return true;
    }
    if (t->kind != DTL_TYPE_DTYPE) {
        bad(c, i, "a dtype (f32, f64, i32, i64, bool)");
        return false;
    }
    *dt = t->u.dtype;
    bool ok = float_only ? *dt == DTL_DTYPE_F32 || *dt == DTL_DTYPE_F64
                         : *dt != DTL_DTYPE_F16 && *dt != DTL_DTYPE_BF16;
    if (!ok) {
        dtl_diag_error(c->diags, at(c, i), "%s(): dtype %s is not supported here; use %s",
                       c->b->name, dtl_dtype_name(*dt),
                       float_only ? "f32 or f64" : "f32, f64, i32, i64 or bool");
        return false;
    }
    return true;
}

static dtl_type *result(dtl_bcall *c, dtl_dtype dt, uint32_t rank, const int64_t *shape)
{
    const dtl_dim **dims = dtl_arena_array(c->arena, rank ? rank : 1, sizeof *dims);
    for (uint32_t i = 0; i < rank; i++)
        dims[i] = dtl_dim_const(c->arena, shape[i]);
    return dtl_type_tensor(c->arena, dt, rank, dims);
}

static dtl_type *shape_ctor(dtl_bcall *c, dtl_ctor_id id)
{
    dtl_type *err = dtl_type_new(c->arena, DTL_TYPE_ERROR);
    int64_t shape[DTL_MAX_RANK];
    uint32_t rank = 0;
    const dtl_expr *list = strip(c->args[0]);
    if (list && list->kind == DTL_EXPR_TENSOR) {
        for (unsigned i = 1; i < DTL_CTOR_MAX_DIMS; i++)
            if (c->args[i]) {
                dtl_diag_error(c->diags, c->args[i]->span, "%s(): give the shape as a list or "
                               "as sizes, not both", c->b->name);
                return err;
            }
        if (list->u.tensor.nelems > DTL_MAX_RANK) {
            dtl_diag_error(c->diags, list->span, "%s(): a shape of %zu dimensions; tensors of "
                           "rank above %d are not supported", c->b->name,
                           list->u.tensor.nelems, DTL_MAX_RANK);
            return err;
        }
        for (size_t k = 0; k < list->u.tensor.nelems; k++) {
            const dtl_expr *el = list->u.tensor.elems[k];
            if (!el->type || !size_arg(c, 0, el->type, el->span, &shape[rank]))
                return err;
            rank++;
        }
    } else {
        for (unsigned i = 0; i < DTL_CTOR_MAX_DIMS; i++) {
            const dtl_type *t = c->types[i];
            if (!t || t->kind == DTL_TYPE_NONE)
                continue;
            if (!size_arg(c, i, t, at(c, i), &shape[rank]))
                return err;
            rank++;
        }
    }
    const dtl_type *six = c->types[DTL_CTOR_DTYPE_PARAM];
    if (six && six->kind == DTL_TYPE_INT) {
        /* zeros(1, 2, 3, 4, 5, 6): the sixth size landed on dtype */
        dtl_diag_error(c->diags, at(c, DTL_CTOR_DTYPE_PARAM), "%s(): at most %d sizes as "
                       "arguments; give more as a list: %s([d0, d1, …])", c->b->name,
                       DTL_CTOR_MAX_DIMS, c->b->name);
        return err;
    }
    bool random = id == DTL_CTOR_RAND || id == DTL_CTOR_RANDN;
    dtl_dtype dt;
    if (!dtype_arg(c, DTL_CTOR_DTYPE_PARAM, DTL_DTYPE_F32, random, &dt))
        return err;
    return result(c, dt, rank, shape);
}

static dtl_type *arange(dtl_bcall *c)
{
    dtl_type *err = dtl_type_new(c->arena, DTL_TYPE_ERROR);
    double v[3];
    bool ints = true;
    for (unsigned i = 0; i < 3; i++) {
        const dtl_type *t = c->types[i];
        if (i == 1 && t && t->kind == DTL_TYPE_NONE)
            continue;
        if (!t || !dtl_type_num_const(t, &v[i]))
            return bad(c, i, "a constant number");
        ints &= t->kind == DTL_TYPE_INT;
    }
    double start = v[0], stop = v[1], step = v[2];
    if (c->types[1] && c->types[1]->kind == DTL_TYPE_NONE)
        stop = start, start = 0;
    if (step == 0) {
        dtl_diag_error(c->diags, at(c, 2), "arange(): 'step' must not be 0");
        return err;
    }
    int64_t n = dtl_ctor_arange_len(start, stop, step);
    if (n < 0) {
        dtl_diag_error(c->diags, c->at, "arange(): too many elements");
        return err;
    }
    dtl_dtype dt;
    if (!dtype_arg(c, 3, ints ? DTL_DTYPE_I64 : DTL_DTYPE_F32, false, &dt))
        return err;
    if (dt == DTL_DTYPE_BOOL) {
        dtl_diag_error(c->diags, at(c, 3), "arange(): dtype bool is not supported here");
        return err;
    }
    return result(c, dt, 1, &n);
}

static dtl_type *eye(dtl_bcall *c)
{
    dtl_type *err = dtl_type_new(c->arena, DTL_TYPE_ERROR);
    int64_t shape[2];
    if (!size_arg(c, 0, c->types[0], at(c, 0), &shape[0]))
        return err;
    shape[1] = shape[0];
    if (c->types[1] && c->types[1]->kind != DTL_TYPE_NONE &&
        !size_arg(c, 1, c->types[1], at(c, 1), &shape[1]))
        return err;
    dtl_dtype dt;
    if (!dtype_arg(c, 2, DTL_DTYPE_F32, false, &dt))
        return err;
    return result(c, dt, 2, shape);
}

dtl_type *dtl_ctor_rule(void *user, dtl_bcall *c)
{
    (void)user;
    dtl_ctor_id id;
    for (unsigned i = 0; i < c->b->nparams; i++)
        if (c->types[i] && c->types[i]->kind == DTL_TYPE_ERROR)
            return dtl_type_new(c->arena, DTL_TYPE_ERROR);
    if (!dtl_ctor_is(c->b, &id)) {
        dtl_diag_error(c->diags, c->at, "internal error: %s() is not a tensor constructor",
                       c->b->name);
        return dtl_type_new(c->arena, DTL_TYPE_ERROR);
    }
    switch (id) {
    case DTL_CTOR_ARANGE:
        return arange(c);
    case DTL_CTOR_EYE:
        return eye(c);
    default:
        return shape_ctor(c, id);
    }
}
