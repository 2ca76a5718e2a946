/* lang/types.h — the checker's types and symbolic dimensions.
 *
 * Contract: every value here lives in the compilation's arena and is immutable once built;
 * operations return new values and never change their arguments. Nothing here reports
 * diagnostics: operations that can fail (overflow, an expression grown too large) return
 * NULL and the caller reports.
 *
 * Dimensions (dtl_dim) are kept canonical so that equal sizes compare equal however they
 * were written: a dimension is an integer polynomial over dimension variables (constructor
 * parameters like `in`, a fn's symbolic dims like `B`, a train block's batch), as a sorted
 * list of terms, each a coefficient times a sorted product of atoms. `in*2`, `2*in` and
 * `in + in` are the same value; `B*784` compares equal to `B*28*28`. A quotient that is
 * not exact (`(n + 1) / 3`) becomes an opaque atom compared structurally.
 *
 * Types (dtl_type) cover host values (int, float, bool, str — compile-time constants, with
 * their value when it is known; an int's value is a dtl_dim, so `hidden * 2` stays
 * symbolic), tensors (dtype and dims), and the things names can denote: modules, models,
 * model instances, fns, builtins, datasets and their splits, initializers, optimizers,
 * metrics, parallel specs, devices. DTL_TYPE_ERROR marks an expression whose type could not
 * be determined; an error about it has been reported already and nothing else should be.
 */
#ifndef DTL_TYPES_H
#define DTL_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../runtime/arena.h"
#include "../runtime/dtype.h"

struct dtl_module;
struct dtl_model;
struct dtl_fn;
struct dtl_sym;
struct dtl_builtin;

/* ---- Dimension variables and dimensions ---- */

typedef enum dtl_dimvar_kind {
    DTL_DIMVAR_CTOR,     /* an int constructor parameter of a model (`in`) */
    DTL_DIMVAR_FN,       /* a symbolic dim of a fn signature (`B`), bound per call */
    DTL_DIMVAR_FN_INT,   /* an int parameter of a fn, bound per call by its argument */
    DTL_DIMVAR_BATCH,    /* a train block's batch dim, bound to `batch` when run */
} dtl_dimvar_kind;

typedef struct dtl_dimvar {
    const char *name;
    dtl_dimvar_kind kind;
    /* Where the variable was introduced. (file, off, seq) orders variables deterministically
     * inside a term, whatever order they were created in. */
    uint32_t file, off, seq;
    struct dtl_sym *sym;   /* the parameter or dim symbol, when there is one */
} dtl_dimvar;

typedef struct dtl_dim dtl_dim;

/* A factor of a term: a variable, or an opaque quotient num / den. */
typedef struct dtl_dimatom {
    const dtl_dimvar *var;        /* NULL for a quotient */
    const dtl_dim *num, *den;
} dtl_dimatom;

typedef struct dtl_dimterm {
    int64_t coef;                 /* never 0 */
    const dtl_dimatom **atoms;    /* sorted; a repeated atom is a power */
    uint32_t natoms;              /* 0: the constant term */
} dtl_dimterm;

struct dtl_dim {
    const dtl_dimterm *terms;     /* sorted, distinct monomials; none: the value 0 */
    uint32_t nterms;
    uint32_t depth;               /* nesting of opaque quotients (0: none) */
};

/* Limits that keep dimension arithmetic small; beyond them operations fail (NULL). */
#define DTL_DIM_MAX_TERMS 64
#define DTL_DIM_MAX_ATOMS 32
#define DTL_DIM_MAX_DEPTH 16

const dtl_dim *dtl_dim_const(dtl_arena *a, int64_t v);
const dtl_dim *dtl_dim_var(dtl_arena *a, const dtl_dimvar *v);
/* Arithmetic; NULL on overflow or when the result would exceed the limits above. */
const dtl_dim *dtl_dim_add(dtl_arena *a, const dtl_dim *x, const dtl_dim *y);
const dtl_dim *dtl_dim_sub(dtl_arena *a, const dtl_dim *x, const dtl_dim *y);
const dtl_dim *dtl_dim_mul(dtl_arena *a, const dtl_dim *x, const dtl_dim *y);
const dtl_dim *dtl_dim_neg(dtl_arena *a, const dtl_dim *x);
/* x / y: exact when it can be (then *exact is true), else an opaque quotient — except for
 * two numbers, whose quotient is rounded down (floor; *exact false when inexact). NULL when
 * y is 0 or on overflow. exact may be NULL. */
const dtl_dim *dtl_dim_div(dtl_arena *a, const dtl_dim *x, const dtl_dim *y, bool *exact);

bool dtl_dim_is_const(const dtl_dim *d, int64_t *v);   /* v may be NULL */
int dtl_dim_cmp(const dtl_dim *x, const dtl_dim *y);   /* a total order */
bool dtl_dim_eq(const dtl_dim *x, const dtl_dim *y);
/* "B*784", "in + 1", "(n + 1) / 3". */
char *dtl_dim_print(dtl_arena *a, const dtl_dim *d);

/* Does d mention a variable for which pred(var, data) is true? Then *which is one. */
bool dtl_dim_find_var(const dtl_dim *d, bool (*pred)(const dtl_dimvar *, void *), void *data,
                      const dtl_dimvar **which);
/* If d is exactly one variable (coefficient 1, degree 1), that variable; else NULL. */
const dtl_dimvar *dtl_dim_as_var(const dtl_dim *d);

/* A substitution: variables to dimensions (int variables) or to host values (the variables
 * of float, bool and str constructor parameters, see dtl_type.var). */
struct dtl_type;
typedef struct dtl_subst {
    const dtl_dimvar **vars;
    const dtl_dim **dims;            /* int variables */
    struct dtl_type **vals;          /* other variables */
    size_t n, cap;
} dtl_subst;

void dtl_subst_set(dtl_arena *a, dtl_subst *s, const dtl_dimvar *v, const dtl_dim *d);
void dtl_subst_set_val(dtl_arena *a, dtl_subst *s, const dtl_dimvar *v, struct dtl_type *t);
const dtl_dim *dtl_subst_get(const dtl_subst *s, const dtl_dimvar *v);   /* NULL: unbound */
struct dtl_type *dtl_subst_get_val(const dtl_subst *s, const dtl_dimvar *v);
/* d with every bound variable replaced; NULL on overflow. s may be NULL (identity). */
const dtl_dim *dtl_dim_subst(dtl_arena *a, const dtl_dim *d, const dtl_subst *s);

/* ---- Types ---- */

typedef enum dtl_type_kind {
    DTL_TYPE_ERROR,      /* not determined; already reported */
    DTL_TYPE_INT,        /* host int: u.ival (NULL when unknown) */
    DTL_TYPE_FLOAT,      /* host float: u.f */
    DTL_TYPE_BOOL,       /* host bool: u.b */
    DTL_TYPE_STR,        /* string: u.s (bytes NULL when unknown) */
    DTL_TYPE_NONE,       /* `none` (a reduction's axis) */
    DTL_TYPE_TENSOR,     /* u.t; rank 0 is a scalar tensor */
    DTL_TYPE_DTYPE,      /* a dtype used as a value, cast(x, f64): u.dtype */
    DTL_TYPE_LIST,       /* [a, b] of tensors, concat's argument: u.list */
    DTL_TYPE_MODULE,     /* an imported module: u.module */
    DTL_TYPE_MODEL,      /* a model itself (calling it instantiates): u.m, args NULL */
    DTL_TYPE_INSTANCE,   /* an instance of a model: u.m, args per constructor param */
    DTL_TYPE_FN,         /* a fn, of a model instance or top level: u.fn */
    DTL_TYPE_BUILTIN,    /* a builtin function: u.builtin */
    DTL_TYPE_DATASET,    /* the value of idx(…), npy(…), csv(…): u.cfg */
    DTL_TYPE_SPLIT,      /* ds.train, ds.test: u.split */
    DTL_TYPE_INIT,       /* an initializer call: u.cfg */
    DTL_TYPE_OPTIMIZER,  /* an optimizer call: u.cfg */
    DTL_TYPE_METRIC,     /* accuracy(split): u.cfg */
    DTL_TYPE_PARALLEL,   /* a parallel spec: u.par */
    DTL_TYPE_DEVICE,     /* cpu, cuda(n): u.cfg */
    DTL_TYPE_SCHEDULE,   /* a learning-rate schedule, step(every = 2): u.cfg */
    DTL_TYPE_PENDING,    /* a train block's x before its shape is inferred */
} dtl_type_kind;

typedef struct dtl_type dtl_type;
struct dtl_type {
    dtl_type_kind kind;
    /* FLOAT BOOL STR whose value is not known: the variable of the constructor parameter it
     * is (so instances substitute it), or NULL. */
    const dtl_dimvar *var;
    union {
        const dtl_dim *ival;
        struct { bool known; double v; } f;
        struct { bool known; bool v; } b;
        struct { const char *bytes; size_t len; } s;
        struct { dtl_dtype dtype; uint32_t rank; const dtl_dim **dims; } t;
        dtl_dtype dtype;
        struct { dtl_type **elems; size_t n; } list;
        struct dtl_module *module;
        /* INSTANCE: rep is NULL, or the count of a stack of identical instances made by
         * repeat(n, Model(…)) (each its own params; calling it applies them in order). */
        struct { struct dtl_model *model; dtl_type **args; const dtl_dim *rep; } m;
        struct { struct dtl_fn *fn; dtl_type *inst; } fn;   /* inst: INSTANCE or NULL */
        const struct dtl_builtin *builtin;
        /* The builtin called and its arguments in parameter order, defaults filled in. */
        struct { const struct dtl_builtin *builtin; dtl_type **args; } cfg;
        struct { struct dtl_sym *dataset; bool test; } split;
        /* Degrees of parallelism; 0: that kind is absent. data == -1: data parallel over
         * all ranks (`parallel = data`). */
        struct { int64_t data, tensor, stages, microbatches; } par;
    } u;
};

dtl_type *dtl_type_new(dtl_arena *a, dtl_type_kind kind);
dtl_type *dtl_type_int(dtl_arena *a, const dtl_dim *v);
dtl_type *dtl_type_float(dtl_arena *a, bool known, double v);
dtl_type *dtl_type_bool(dtl_arena *a, bool known, bool v);
dtl_type *dtl_type_tensor(dtl_arena *a, dtl_dtype dt, uint32_t rank, const dtl_dim **dims);

bool dtl_type_is_host(const dtl_type *t);        /* int float bool str */
bool dtl_type_is_number(const dtl_type *t);      /* host int or float */
bool dtl_type_is_value(const dtl_type *t);       /* host, none, tensor, dtype, list */
bool dtl_type_int_const(const dtl_type *t, int64_t *v);        /* a known host int */
bool dtl_type_num_const(const dtl_type *t, double *v);         /* a known host int/float */
/* Same type: kinds equal; tensors with equal dtype and dims; instances of the same model
 * with equal arguments. Host values compare by kind only. */
bool dtl_type_same(const dtl_type *x, const dtl_type *y);

/* Types as users read them: "f32[B, 784]", "f32" (rank 0), "int", "nn.Dense(784, hidden)".
 * Models of a module other than from are qualified with their module's name. */
char *dtl_type_print(dtl_arena *a, const dtl_type *t, const struct dtl_module *from);
/* A known host value as source: "784", "0.001", "true", "\"abc\""; else the type. */
char *dtl_value_print(dtl_arena *a, const dtl_type *t, const struct dtl_module *from);
/* The shortest decimal that reads back as v ("0.001", "1e-08", "2.0"). */
char *dtl_double_print(dtl_arena *a, double v);

/* t with every dim and int value substituted (tensor dims, int values, instance args);
 * NULL on overflow. */
dtl_type *dtl_type_subst(dtl_arena *a, dtl_type *t, const dtl_subst *s);

/* numpy broadcasting of x and y (rank xr, yr): the result's dims in *out (rank max(xr,yr)).
 * Returns -1 on success, else the index (in the result) of a dimension that does not
 * broadcast. */
int dtl_broadcast(dtl_arena *a, const dtl_dim *const *x, uint32_t xr, const dtl_dim *const *y,
                  uint32_t yr, const dtl_dim ***out);

#endif
