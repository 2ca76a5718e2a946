/* lang/types.c — dimensions as canonical polynomials, and types.
 *
 * A dimension is built by normalizing a list of raw terms: the atoms of each term are kept
 * sorted (multiplication merges two sorted lists), then the terms are sorted by monomial and
 * equal monomials merged, dropping zero coefficients. Equality is then structural. The
 * order of terms is: higher degree first, then by atoms; so a dimension prints as people
 * write it ("B*784", "in + 1"). Variables are ordered by where they were introduced, never
 * by address, so output is deterministic.
 *
 * All arithmetic checks for int64 overflow (__builtin_*_overflow, gcc and clang) and fails
 * with NULL, as it does when a polynomial would grow past DTL_DIM_MAX_TERMS terms or
 * DTL_DIM_MAX_ATOMS factors or quotients nest deeper than DTL_DIM_MAX_DEPTH: user programs
 * cannot make the checker slow or big by multiplying sums.
 */
#include "types.h"

#include <inttypes.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builtins.h"
#include "check.h"

/* ---- ordering ---- */

static int var_cmp(const dtl_dimvar *x, const dtl_dimvar *y)
{
    if (x == y)
        return 0;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    int c = strcmp(x->name, y->name);
    if (c)
        return c < 0 ? -1 : 1;
    return (uintptr_t)x < (uintptr_t)y ? -1 : 1;
}

static int atom_cmp(const dtl_dimatom *x, const dtl_dimatom *y)
{
    if (x == y)
        return 0;
    if (x->var && y->var)
        return var_cmp(x->var, y->var);
    if (x->var)
        return -1;
    if (y->var)
        return 1;
    int c = dtl_dim_cmp(x->num, y->num);
    return c ? c : dtl_dim_cmp(x->den, y->den);
}

/* Monomial order, ignoring coefficients: higher degree first, then atom by atom. */
static int mono_cmp(const dtl_dimterm *x, const dtl_dimterm *y)
{
    if (x->natoms != y->natoms)
        return x->natoms > y->natoms ? -1 : 1;
    for (uint32_t i = 0; i < x->natoms; i++) {
        int c = atom_cmp(x->atoms[i], y->atoms[i]);
        if (c)
            return c;
    }
    return 0;
}

int dtl_dim_cmp(const dtl_dim *x, const dtl_dim *y)
{
    if (x == y)
        return 0;
    uint32_t n = x->nterms < y->nterms ? x->nterms : y->nterms;
    for (uint32_t i = 0; i < n; i++) {
        int c = mono_cmp(&x->terms[i], &y->terms[i]);
        if (c)
            return c;
        if (x->terms[i].coef != y->terms[i].coef)
            return x->terms[i].coef < y->terms[i].coef ? -1 : 1;
    }
    if (x->nterms != y->nterms)
        return x->nterms < y->nterms ? -1 : 1;
    return 0;
}

bool dtl_dim_eq(const dtl_dim *x, const dtl_dim *y)
{
    return dtl_dim_cmp(x, y) == 0;
}

/* ---- building ---- */

static uint32_t atom_depth(const dtl_dimatom *at)
{
    if (at->var)
        return 0;
    uint32_t d = at->num->depth > at->den->depth ? at->num->depth : at->den->depth;
    return d + 1;
}

static int term_qsort_cmp(const void *a, const void *b)
{
    return mono_cmp(a, b);
}

/* Sorts and merges raw terms (each with sorted atoms) in place into a new dim. */
static const dtl_dim *dim_normalize(dtl_arena *a, dtl_dimterm *terms, size_t n)
{
    if (n > 1)
        qsort(terms, n, sizeof *terms, term_qsort_cmp);
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        if (out > 0 && mono_cmp(&terms[out - 1], &terms[i]) == 0) {
            if (__builtin_add_overflow(terms[out - 1].coef, terms[i].coef,
                                       &terms[out - 1].coef))
                return NULL;
        } else {
            if (out > 0 && terms[out - 1].coef == 0)
                out--;
            terms[out++] = terms[i];
        }
    }
    if (out > 0 && terms[out - 1].coef == 0)
        out--;
    if (out > DTL_DIM_MAX_TERMS)
        return NULL;
    dtl_dim *d = dtl_arena_alloc(a, sizeof *d);
    d->terms = terms;
    d->nterms = (uint32_t)out;
    for (size_t i = 0; i < out; i++)
        for (uint32_t j = 0; j < terms[i].natoms; j++) {
            uint32_t ad = atom_depth(terms[i].atoms[j]);
            if (ad > d->depth)
                d->depth = ad;
        }
    if (d->depth > DTL_DIM_MAX_DEPTH)
        return NULL;
    return d;
}

const dtl_dim *dtl_dim_const(dtl_arena *a, int64_t v)
{
    dtl_dim *d = dtl_arena_alloc(a, sizeof *d);
    if (v != 0) {
        dtl_dimterm *t = dtl_arena_alloc(a, sizeof *t);
        t->coef = v;
        d->terms = t;
        d->nterms = 1;
    }
    return d;
}

static const dtl_dim *dim_atom(dtl_arena *a, const dtl_dimatom *at)
{
    dtl_dimterm *t = dtl_arena_alloc(a, sizeof *t);
    const dtl_dimatom **atoms = dtl_arena_alloc(a, sizeof *atoms);
    atoms[0] = at;
    t->coef = 1;
    t->atoms = atoms;
    t->natoms = 1;
    dtl_dim *d = dtl_arena_alloc(a, sizeof *d);
    d->terms = t;
    d->nterms = 1;
    d->depth = atom_depth(at);
    return d;
}

const dtl_dim *dtl_dim_var(dtl_arena *a, const dtl_dimvar *v)
{
    dtl_dimatom *at = dtl_arena_alloc(a, sizeof *at);
    at->var = v;
    return dim_atom(a, at);
}

bool dtl_dim_is_const(const dtl_dim *d, int64_t *v)
{
    if (d->nterms == 0) {
        if (v)
            *v = 0;
        return true;
    }
    if (d->nterms == 1 && d->terms[0].natoms == 0) {
        if (v)
            *v = d->terms[0].coef;
        return true;
    }
    return false;
}

const dtl_dimvar *dtl_dim_as_var(const dtl_dim *d)
{
    if (d->nterms == 1 && d->terms[0].coef == 1 && d->terms[0].natoms == 1 &&
        d->terms[0].atoms[0]->var)
        return d->terms[0].atoms[0]->var;
    return NULL;
}

static const dtl_dim *dim_addsub(dtl_arena *a, const dtl_dim *x, const dtl_dim *y, bool sub)
{
    size_t n = (size_t)x->nterms + y->nterms;
    dtl_dimterm *t = dtl_arena_array(a, n ? n : 1, sizeof *t);
    if (x->nterms)
        memcpy(t, x->terms, x->nterms * sizeof *t);
    for (uint32_t i = 0; i < y->nterms; i++) {
        t[x->nterms + i] = y->terms[i];
        if (sub && __builtin_sub_overflow((int64_t)0, y->terms[i].coef,
                                          &t[x->nterms + i].coef))
            return NULL;
    }
    return dim_normalize(a, t, n);
}

const dtl_dim *dtl_dim_add(dtl_arena *a, const dtl_dim *x, const dtl_dim *y)
{
    return dim_addsub(a, x, y, false);
}

const dtl_dim *dtl_dim_sub(dtl_arena *a, const dtl_dim *x, const dtl_dim *y)
{
    return dim_addsub(a, x, y, true);
}

const dtl_dim *dtl_dim_neg(dtl_arena *a, const dtl_dim *x)
{
    return dim_addsub(a, dtl_dim_const(a, 0), x, true);
}

/* Merges two sorted atom lists. */
static bool atoms_merge(dtl_arena *a, const dtl_dimterm *x, const dtl_dimterm *y,
                        dtl_dimterm *out)
{
    uint32_t n = x->natoms + y->natoms;
    if (n > DTL_DIM_MAX_ATOMS)
        return false;
    const dtl_dimatom **m = dtl_arena_array(a, n ? n : 1, sizeof *m);
    uint32_t i = 0, j = 0, k = 0;
    while (i < x->natoms && j < y->natoms)
        m[k++] = atom_cmp(x->atoms[i], y->atoms[j]) <= 0 ? x->atoms[i++] : y->atoms[j++];
    while (i < x->natoms)
        m[k++] = x->atoms[i++];
    while (j < y->natoms)
        m[k++] = y->atoms[j++];
    out->atoms = m;
    out->natoms = n;
    return true;
}

const dtl_dim *dtl_dim_mul(dtl_arena *a, const dtl_dim *x, const dtl_dim *y)
{
    size_t n = (size_t)x->nterms * y->nterms;
    if (n > (size_t)DTL_DIM_MAX_TERMS * DTL_DIM_MAX_TERMS)
        return NULL;
    dtl_dimterm *t = dtl_arena_array(a, n ? n : 1, sizeof *t);
    size_t k = 0;
    for (uint32_t i = 0; i < x->nterms; i++)
        for (uint32_t j = 0; j < y->nterms; j++, k++) {
            if (__builtin_mul_overflow(x->terms[i].coef, y->terms[j].coef, &t[k].coef))
                return NULL;
            if (!atoms_merge(a, &x->terms[i], &y->terms[j], &t[k]))
                return NULL;
        }
    return dim_normalize(a, t, n);
}

/* Divides term x by the monomial m (coefficient c) into out, if it divides exactly. */
static bool term_div(dtl_arena *a, const dtl_dimterm *x, const dtl_dimterm *m, dtl_dimterm *out)
{
    if (m->coef == 0 || x->coef % m->coef != 0)
        return false;
    if (m->coef == -1 && x->coef == INT64_MIN)
        return false;
    if (m->natoms > x->natoms)
        return false;
    const dtl_dimatom **rest = dtl_arena_array(a, x->natoms ? x->natoms : 1, sizeof *rest);
    uint32_t i = 0, j = 0, k = 0;
    while (i < x->natoms) {
        int c = j < m->natoms ? atom_cmp(x->atoms[i], m->atoms[j]) : -1;
        if (j < m->natoms && c == 0) {
            i++, j++;
        } else if (j < m->natoms && c > 0) {
            return false;  /* m has an atom x lacks */
        } else {
            rest[k++] = x->atoms[i++];
        }
    }
    if (j < m->natoms)
        return false;
    out->coef = x->coef / m->coef;
    out->atoms = rest;
    out->natoms = k;
    return true;
}

const dtl_dim *dtl_dim_div(dtl_arena *a, const dtl_dim *x, const dtl_dim *y, bool *exact)
{
    bool dummy;
    if (!exact)
        exact = &dummy;
    *exact = true;
    if (y->nterms == 0)
        return NULL;
    if (x->nterms == 0)
        return x;
    if (dtl_dim_eq(x, y))
        return dtl_dim_const(a, 1);
    int64_t xv, yv;
    if (dtl_dim_is_const(x, &xv) && dtl_dim_is_const(y, &yv) && !(xv == INT64_MIN && yv == -1)) {
        /* Two numbers: the floor of the quotient (a conv's output size), inexact if so. */
        int64_t q = xv / yv;
        if (xv % yv != 0) {
            *exact = false;
            q -= (xv < 0) != (yv < 0);
        }
        return dtl_dim_const(a, q);
    }
    if (y->nterms == 1) {
        dtl_dimterm *t = dtl_arena_array(a, x->nterms, sizeof *t);
        bool ok = true;
        for (uint32_t i = 0; i < x->nterms && ok; i++)
            ok = term_div(a, &x->terms[i], &y->terms[0], &t[i]);
        if (ok)
            return dim_normalize(a, t, x->nterms);
    } else if (mono_cmp(&x->terms[0], &y->terms[0]) == 0 &&
               x->terms[0].coef % y->terms[0].coef == 0 &&
               !(y->terms[0].coef == -1 && x->terms[0].coef == INT64_MIN)) {
        /* x == k * y for a constant k? */
        const dtl_dim *k = dtl_dim_const(a, x->terms[0].coef / y->terms[0].coef);
        const dtl_dim *ky = dtl_dim_mul(a, k, y);
        if (ky && dtl_dim_eq(ky, x))
            return k;
    }
    if (x->nterms == 1 && y->nterms == 1) {
        /* Two monomials: cancel their common factors first, so that (3*d*B*T) / (3*h*B*T)
         * is the quotient d / h (what reshape(…, [B, T, h, -1]) then leaves). */
        const dtl_dimterm *tx = &x->terms[0], *ty = &y->terms[0];
        uint64_t p = tx->coef < 0 ? 0 - (uint64_t)tx->coef : (uint64_t)tx->coef;
        uint64_t q = ty->coef < 0 ? 0 - (uint64_t)ty->coef : (uint64_t)ty->coef;
        while (q) {
            uint64_t t = p % q;
            p = q, q = t;
        }
        if (p > INT64_MAX)
            p = 1;
        uint32_t cap = tx->natoms < ty->natoms ? tx->natoms : ty->natoms;
        const dtl_dimatom **common = dtl_arena_array(a, cap ? cap : 1, sizeof *common);
        uint32_t i = 0, j = 0, nc = 0;
        while (i < tx->natoms && j < ty->natoms) {
            int c = atom_cmp(tx->atoms[i], ty->atoms[j]);
            if (c == 0)
                common[nc++] = tx->atoms[i], i++, j++;
            else if (c < 0)
                i++;
            else
                j++;
        }
        if (p > 1 || nc > 0) {
            dtl_dimterm cm = {p > 0 ? (int64_t)p : 1, common, nc};
            dtl_dimterm *rx = dtl_arena_alloc(a, sizeof *rx), *ry = dtl_arena_alloc(a, sizeof *ry);
            if (term_div(a, tx, &cm, rx) && term_div(a, ty, &cm, ry)) {
                const dtl_dim *nx = dim_normalize(a, rx, 1), *ny = dim_normalize(a, ry, 1);
                if (nx && ny)
                    return dtl_dim_div(a, nx, ny, exact);
            }
        }
    }
    *exact = false;
    dtl_dimatom *at = dtl_arena_alloc(a, sizeof *at);
    at->num = x;
    at->den = y;
    if (atom_depth(at) > DTL_DIM_MAX_DEPTH)
        return NULL;
    return dim_atom(a, at);
}

/* ---- variables and substitution ---- */

bool dtl_dim_find_var(const dtl_dim *d, bool (*pred)(const dtl_dimvar *, void *), void *data,
                      const dtl_dimvar **which)
{
    for (uint32_t i = 0; i < d->nterms; i++)
        for (uint32_t j = 0; j < d->terms[i].natoms; j++) {
            const dtl_dimatom *at = d->terms[i].atoms[j];
            if (at->var) {
                if (pred(at->var, data)) {
                    if (which)
                        *which = at->var;
                    return true;
                }
            } else if (dtl_dim_find_var(at->num, pred, data, which) ||
                       dtl_dim_find_var(at->den, pred, data, which)) {
                return true;
            }
        }
    return false;
}

static size_t subst_find(const dtl_subst *s, const dtl_dimvar *v)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->vars[i] == v)
            return i;
    return SIZE_MAX;
}

static size_t subst_slot(dtl_arena *a, dtl_subst *s, const dtl_dimvar *v)
{
    size_t i = subst_find(s, v);
    if (i != SIZE_MAX)
        return i;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        s->vars = dtl_arena_grow(a, s->vars, s->n, cap, sizeof *s->vars);
        s->dims = dtl_arena_grow(a, s->dims, s->n, cap, sizeof *s->dims);
        s->vals = dtl_arena_grow(a, s->vals, s->n, cap, sizeof *s->vals);
        s->cap = cap;
    }
    s->vars[s->n] = v;
    s->dims[s->n] = NULL;
    s->vals[s->n] = NULL;
    return s->n++;
}

void dtl_subst_set(dtl_arena *a, dtl_subst *s, const dtl_dimvar *v, const dtl_dim *d)
{
    size_t i = subst_slot(a, s, v);
    s->dims[i] = d;
}

void dtl_subst_set_val(dtl_arena *a, dtl_subst *s, const dtl_dimvar *v, dtl_type *t)
{
    size_t i = subst_slot(a, s, v);
    s->vals[i] = t;
}

const dtl_dim *dtl_subst_get(const dtl_subst *s, const dtl_dimvar *v)
{
    size_t i = s ? subst_find(s, v) : SIZE_MAX;
    return i == SIZE_MAX ? NULL : s->dims[i];
}

dtl_type *dtl_subst_get_val(const dtl_subst *s, const dtl_dimvar *v)
{
    size_t i = s ? subst_find(s, v) : SIZE_MAX;
    return i == SIZE_MAX ? NULL : s->vals[i];
}

static bool var_bound(const dtl_dimvar *v, void *data)
{
    return dtl_subst_get(data, v) != NULL;
}

const dtl_dim *dtl_dim_subst(dtl_arena *a, const dtl_dim *d, const dtl_subst *s)
{
    if (!s || s->n == 0 || !dtl_dim_find_var(d, var_bound, (void *)s, NULL))
        return d;
    const dtl_dim *sum = dtl_dim_const(a, 0);
    for (uint32_t i = 0; i < d->nterms && sum; i++) {
        const dtl_dim *p = dtl_dim_const(a, d->terms[i].coef);
        for (uint32_t j = 0; j < d->terms[i].natoms && p; j++) {
            const dtl_dimatom *at = d->terms[i].atoms[j];
            const dtl_dim *f;
            if (at->var) {
                f = dtl_subst_get(s, at->var);
                if (!f)
                    f = dtl_dim_var(a, at->var);
            } else {
                const dtl_dim *num = dtl_dim_subst(a, at->num, s);
                const dtl_dim *den = num ? dtl_dim_subst(a, at->den, s) : NULL;
                f = den ? dtl_dim_div(a, num, den, NULL) : NULL;
            }
            p = f ? dtl_dim_mul(a, p, f) : NULL;
        }
        sum = p ? dtl_dim_add(a, sum, p) : NULL;
    }
    return sum;
}

/* ---- printing ---- */

static void dim_put(dtl_strbuf *b, const dtl_dim *d);

/* A dim as an operand of '/' or '*': bare when a single atom or a constant. */
static void dim_put_operand(dtl_strbuf *b, const dtl_dim *d)
{
    int64_t v;
    bool bare = (dtl_dim_is_const(d, &v) && v >= 0) ||
                (d->nterms == 1 && d->terms[0].coef == 1 && d->terms[0].natoms == 1 &&
                 d->terms[0].atoms[0]->var);
    if (!bare)
        dtl_strbuf_puts(b, "(");
    dim_put(b, d);
    if (!bare)
        dtl_strbuf_puts(b, ")");
}

static void term_put(dtl_strbuf *b, const dtl_dimterm *t, uint64_t mag)
{
    if (t->natoms == 0) {
        dtl_strbuf_printf(b, "%" PRIu64, mag);
        return;
    }
    bool alone = t->natoms == 1 && mag == 1;
    for (uint32_t i = 0; i < t->natoms; i++) {
        const dtl_dimatom *at = t->atoms[i];
        if (i)
            dtl_strbuf_puts(b, "*");
        if (at->var) {
            dtl_strbuf_puts(b, at->var->name);
        } else {
            if (!alone)
                dtl_strbuf_puts(b, "(");
            dim_put_operand(b, at->num);
            dtl_strbuf_puts(b, " / ");
            dim_put_operand(b, at->den);
            if (!alone)
                dtl_strbuf_puts(b, ")");
        }
    }
    if (mag != 1)
        dtl_strbuf_printf(b, "*%" PRIu64, mag);
}

static void dim_put(dtl_strbuf *b, const dtl_dim *d)
{
    if (d->nterms == 0) {
        dtl_strbuf_puts(b, "0");
        return;
    }
    for (uint32_t i = 0; i < d->nterms; i++) {
        int64_t c = d->terms[i].coef;
        uint64_t mag = c < 0 ? (uint64_t)0 - (uint64_t)c : (uint64_t)c;
        if (i == 0)
            dtl_strbuf_puts(b, c < 0 ? "-" : "");
        else
            dtl_strbuf_puts(b, c < 0 ? " - " : " + ");
        term_put(b, &d->terms[i], mag);
    }
}

char *dtl_dim_print(dtl_arena *a, const dtl_dim *d)
{
    dtl_strbuf b = {a, NULL, 0, 0};
    dim_put(&b, d);
    return dtl_strbuf_str(&b);
}

char *dtl_double_print(dtl_arena *a, double v)
{
    if (isnan(v))
        return dtl_arena_strdup(a, "nan");
    if (isinf(v))
        return dtl_arena_strdup(a, v < 0 ? "-inf" : "inf");
    char buf[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (!strpbrk(buf, ".e"))
        strcat(buf, ".0");
    return dtl_arena_strdup(a, buf);
}

/* ---- types ---- */

dtl_type *dtl_type_new(dtl_arena *a, dtl_type_kind kind)
{
    dtl_type *t = dtl_arena_alloc(a, sizeof *t);
    t->kind = kind;
    return t;
}

dtl_type *dtl_type_int(dtl_arena *a, const dtl_dim *v)
{
    dtl_type *t = dtl_type_new(a, DTL_TYPE_INT);
    t->u.ival = v;
    return t;
}

dtl_type *dtl_type_float(dtl_arena *a, bool known, double v)
{
    dtl_type *t = dtl_type_new(a, DTL_TYPE_FLOAT);
    t->u.f.known = known;
    t->u.f.v = known ? v : 0;
    return t;
}

dtl_type *dtl_type_bool(dtl_arena *a, bool known, bool v)
{
    dtl_type *t = dtl_type_new(a, DTL_TYPE_BOOL);
    t->u.b.known = known;
    t->u.b.v = known && v;
    return t;
}

dtl_type *dtl_type_tensor(dtl_arena *a, dtl_dtype dt, uint32_t rank, const dtl_dim **dims)
{
    dtl_type *t = dtl_type_new(a, DTL_TYPE_TENSOR);
    t->u.t.dtype = dt;
    t->u.t.rank = rank;
    t->u.t.dims = dims;
    return t;
}

bool dtl_type_is_host(const dtl_type *t)
{
    return t->kind == DTL_TYPE_INT || t->kind == DTL_TYPE_FLOAT || t->kind == DTL_TYPE_BOOL ||
           t->kind == DTL_TYPE_STR;
}

bool dtl_type_is_number(const dtl_type *t)
{
    return t->kind == DTL_TYPE_INT || t->kind == DTL_TYPE_FLOAT;
}

bool dtl_type_is_value(const dtl_type *t)
{
    return dtl_type_is_host(t) || t->kind == DTL_TYPE_NONE || t->kind == DTL_TYPE_TENSOR ||
           t->kind == DTL_TYPE_DTYPE || t->kind == DTL_TYPE_LIST;
}

bool dtl_type_int_const(const dtl_type *t, int64_t *v)
{
    return t->kind == DTL_TYPE_INT && t->u.ival && dtl_dim_is_const(t->u.ival, v);
}

bool dtl_type_num_const(const dtl_type *t, double *v)
{
    int64_t i;
    if (dtl_type_int_const(t, &i)) {
        *v = (double)i;
        return true;
    }
    if (t->kind == DTL_TYPE_FLOAT && t->u.f.known) {
        *v = t->u.f.v;
        return true;
    }
    return false;
}

static bool host_value_eq(const dtl_type *x, const dtl_type *y)
{
    if (x->kind != y->kind)
        return false;
    switch (x->kind) {
    case DTL_TYPE_INT:
        return x->u.ival && y->u.ival ? dtl_dim_eq(x->u.ival, y->u.ival)
                                      : !x->u.ival && !y->u.ival;
    case DTL_TYPE_FLOAT:
        return x->u.f.known == y->u.f.known && x->var == y->var &&
               (!x->u.f.known || x->u.f.v == y->u.f.v ||
                (isnan(x->u.f.v) && isnan(y->u.f.v)));
    case DTL_TYPE_BOOL:
        return x->u.b.known == y->u.b.known && x->var == y->var && x->u.b.v == y->u.b.v;
    case DTL_TYPE_STR:
        if (!x->u.s.bytes || !y->u.s.bytes)
            return !x->u.s.bytes && !y->u.s.bytes && x->var == y->var;
        return x->u.s.len == y->u.s.len && memcmp(x->u.s.bytes, y->u.s.bytes, x->u.s.len) == 0;
    default:
        return dtl_type_same(x, y);
    }
}

bool dtl_type_same(const dtl_type *x, const dtl_type *y)
{
    if (x == y)
        return true;
    if (x->kind != y->kind)
        return false;
    switch (x->kind) {
    case DTL_TYPE_TENSOR:
        if (x->u.t.dtype != y->u.t.dtype || x->u.t.rank != y->u.t.rank)
            return false;
        for (uint32_t i = 0; i < x->u.t.rank; i++)
            if (!dtl_dim_eq(x->u.t.dims[i], y->u.t.dims[i]))
                return false;
        return true;
    case DTL_TYPE_DTYPE:
        return x->u.dtype == y->u.dtype;
    case DTL_TYPE_LIST:
        if (x->u.list.n != y->u.list.n)
            return false;
        for (size_t i = 0; i < x->u.list.n; i++)
            if (!dtl_type_same(x->u.list.elems[i], y->u.list.elems[i]))
                return false;
        return true;
    case DTL_TYPE_MODULE:
        return x->u.module == y->u.module;
    case DTL_TYPE_MODEL:
        return x->u.m.model == y->u.m.model;
    case DTL_TYPE_INSTANCE:
        if (x->u.m.model != y->u.m.model || !x->u.m.rep != !y->u.m.rep ||
            (x->u.m.rep && !dtl_dim_eq(x->u.m.rep, y->u.m.rep)))
            return false;
        for (size_t i = 0; i < x->u.m.model->nctor; i++)
            if (!host_value_eq(x->u.m.args[i], y->u.m.args[i]))
                return false;
        return true;
    case DTL_TYPE_FN:
        return x->u.fn.fn == y->u.fn.fn;
    case DTL_TYPE_BUILTIN:
        return x->u.builtin == y->u.builtin;
    case DTL_TYPE_SPLIT:
        return x->u.split.dataset == y->u.split.dataset && x->u.split.test == y->u.split.test;
    default:
        return true;
    }
}

static void type_put(dtl_strbuf *b, const dtl_type *t, const dtl_module *from);

/* "fashion.train", or "lib.fashion.train" for a dataset of another module. */
static void split_put(dtl_strbuf *b, const dtl_type *t, const dtl_module *from)
{
    const dtl_sym *ds = t->u.split.dataset;
    if (from && ds->module && ds->module != from && ds->module->name)
        dtl_strbuf_printf(b, "%s.", ds->module->name);
    dtl_strbuf_printf(b, "%s.%s", ds->name, t->u.split.test ? "test" : "train");
}

static void value_put(dtl_strbuf *b, const dtl_type *t, const dtl_module *from)
{
    switch (t->kind) {
    case DTL_TYPE_INT:
        if (t->u.ival) {
            dim_put(b, t->u.ival);
            return;
        }
        break;
    case DTL_TYPE_FLOAT:
        if (t->u.f.known) {
            dtl_strbuf_puts(b, dtl_double_print(b->a, t->u.f.v));
            return;
        }
        if (t->var) {
            dtl_strbuf_puts(b, t->var->name);
            return;
        }
        break;
    case DTL_TYPE_BOOL:
        if (t->u.b.known) {
            dtl_strbuf_puts(b, t->u.b.v ? "true" : "false");
            return;
        }
        if (t->var) {
            dtl_strbuf_puts(b, t->var->name);
            return;
        }
        break;
    case DTL_TYPE_STR:
        if (t->u.s.bytes) {
            dtl_strbuf_puts(b, "\"");
            for (size_t i = 0; i < t->u.s.len; i++) {
                unsigned char c = (unsigned char)t->u.s.bytes[i];
                if (c == '"' || c == '\\')
                    dtl_strbuf_printf(b, "\\%c", c);
                else if (c == '\n')
                    dtl_strbuf_puts(b, "\\n");
                else if (c == '\t')
                    dtl_strbuf_puts(b, "\\t");
                else if (c < 0x20 || c == 0x7f)
                    dtl_strbuf_printf(b, "\\x%02x", c);
                else
                    dtl_strbuf_putn(b, (const char *)&c, 1);
            }
            dtl_strbuf_puts(b, "\"");
            return;
        }
        if (t->var) {
            dtl_strbuf_puts(b, t->var->name);
            return;
        }
        break;
    case DTL_TYPE_NONE:
        dtl_strbuf_puts(b, "none");
        return;
    case DTL_TYPE_DTYPE:
        dtl_strbuf_puts(b, dtl_dtype_name(t->u.dtype));
        return;
    case DTL_TYPE_SPLIT:
        split_put(b, t, from);
        return;
    default:
        break;
    }
    type_put(b, t, from);
}

static void model_name_put(dtl_strbuf *b, const dtl_model *m, const dtl_module *from)
{
    if (from && m->module && m->module != from && m->module->name)
        dtl_strbuf_printf(b, "%s.", m->module->name);
    dtl_strbuf_puts(b, m->name);
}

/* A builtin call with all its arguments: required ones positional, the others named. */
static void cfg_put(dtl_strbuf *b, const dtl_type *t, const dtl_module *from)
{
    const dtl_builtin *bi = t->u.cfg.builtin;
    dtl_strbuf_puts(b, bi->name);
    if (bi->nparams == 0 && bi->kind == DTL_BUILTIN_DEVICE)
        return;
    dtl_strbuf_puts(b, "(");
    for (unsigned i = 0; i < bi->nparams; i++) {
        const dtl_type *v = t->u.cfg.args[i];
        dtl_strbuf_puts(b, i ? ", " : "");
        if (bi->params[i].deflt)
            dtl_strbuf_printf(b, "%s = ", bi->params[i].name);
        if (v)
            value_put(b, v, from);
        else
            dtl_strbuf_puts(b, "?");
    }
    dtl_strbuf_puts(b, ")");
}

static void type_put(dtl_strbuf *b, const dtl_type *t, const dtl_module *from)
{
    switch (t->kind) {
    case DTL_TYPE_ERROR:
        dtl_strbuf_puts(b, "<error>");
        break;
    case DTL_TYPE_INT:
        dtl_strbuf_puts(b, "int");
        break;
    case DTL_TYPE_FLOAT:
        dtl_strbuf_puts(b, "float");
        break;
    case DTL_TYPE_BOOL:
        dtl_strbuf_puts(b, "bool");
        break;
    case DTL_TYPE_STR:
        dtl_strbuf_puts(b, "str");
        break;
    case DTL_TYPE_NONE:
        dtl_strbuf_puts(b, "none");
        break;
    case DTL_TYPE_TENSOR:
        dtl_strbuf_puts(b, dtl_dtype_name(t->u.t.dtype));
        if (t->u.t.rank) {
            dtl_strbuf_puts(b, "[");
            for (uint32_t i = 0; i < t->u.t.rank; i++) {
                if (i)
                    dtl_strbuf_puts(b, ", ");
                dim_put(b, t->u.t.dims[i]);
            }
            dtl_strbuf_puts(b, "]");
        }
        break;
    case DTL_TYPE_DTYPE:
        dtl_strbuf_printf(b, "dtype %s", dtl_dtype_name(t->u.dtype));
        break;
    case DTL_TYPE_LIST:
        dtl_strbuf_puts(b, "[");
        for (size_t i = 0; i < t->u.list.n; i++) {
            if (i)
                dtl_strbuf_puts(b, ", ");
            type_put(b, t->u.list.elems[i], from);
        }
        dtl_strbuf_puts(b, "]");
        break;
    case DTL_TYPE_MODULE:
        dtl_strbuf_printf(b, "module %s", t->u.module->name);
        break;
    case DTL_TYPE_MODEL:
        dtl_strbuf_puts(b, "model ");
        model_name_put(b, t->u.m.model, from);
        break;
    case DTL_TYPE_INSTANCE:
        if (t->u.m.rep) {
            dtl_strbuf_puts(b, "repeat(");
            dim_put(b, t->u.m.rep);
            dtl_strbuf_puts(b, ", ");
        }
        model_name_put(b, t->u.m.model, from);
        dtl_strbuf_puts(b, "(");
        for (size_t i = 0; i < t->u.m.model->nctor; i++) {
            if (i)
                dtl_strbuf_puts(b, ", ");
            value_put(b, t->u.m.args[i], from);
        }
        dtl_strbuf_puts(b, t->u.m.rep ? "))" : ")");
        break;
    case DTL_TYPE_FN:
        dtl_strbuf_puts(b, "fn ");
        if (t->u.fn.fn->model) {
            model_name_put(b, t->u.fn.fn->model, from);
            dtl_strbuf_puts(b, ".");
        }
        dtl_strbuf_puts(b, t->u.fn.fn->name);
        break;
    case DTL_TYPE_BUILTIN:
        dtl_strbuf_printf(b, "builtin %s", t->u.builtin->name);
        break;
    case DTL_TYPE_DATASET:
        dtl_strbuf_puts(b, "dataset ");
        cfg_put(b, t, from);
        break;
    case DTL_TYPE_SPLIT:
        dtl_strbuf_puts(b, "split ");
        split_put(b, t, from);
        break;
    case DTL_TYPE_INIT:
        dtl_strbuf_puts(b, "initializer ");
        cfg_put(b, t, from);
        break;
    case DTL_TYPE_OPTIMIZER:
        dtl_strbuf_puts(b, "optimizer ");
        cfg_put(b, t, from);
        break;
    case DTL_TYPE_METRIC:
        dtl_strbuf_puts(b, "metric ");
        cfg_put(b, t, from);
        break;
    case DTL_TYPE_DEVICE:
        dtl_strbuf_puts(b, "device ");
        cfg_put(b, t, from);
        break;
    case DTL_TYPE_SCHEDULE:
        dtl_strbuf_puts(b, "schedule ");
        cfg_put(b, t, from);
        break;
    case DTL_TYPE_PARALLEL: {
        bool first = true;
        dtl_strbuf_puts(b, "parallel ");
        if (t->u.par.data) {
            if (t->u.par.data < 0)
                dtl_strbuf_puts(b, "data");
            else
                dtl_strbuf_printf(b, "data(%" PRId64 ")", t->u.par.data);
            first = false;
        }
        if (t->u.par.tensor) {
            dtl_strbuf_printf(b, "%stensor(%" PRId64 ")", first ? "" : " * ", t->u.par.tensor);
            first = false;
        }
        if (t->u.par.stages)
            dtl_strbuf_printf(b, "%spipeline(stages = %" PRId64 ", microbatches = %" PRId64 ")",
                      first ? "" : " * ", t->u.par.stages, t->u.par.microbatches);
        break;
    }
    case DTL_TYPE_PENDING:
        dtl_strbuf_puts(b, "<not yet inferred>");
        break;
    }
}

char *dtl_type_print(dtl_arena *a, const dtl_type *t, const dtl_module *from)
{
    dtl_strbuf b = {a, NULL, 0, 0};
    type_put(&b, t, from);
    return dtl_strbuf_str(&b);
}

char *dtl_value_print(dtl_arena *a, const dtl_type *t, const dtl_module *from)
{
    dtl_strbuf b = {a, NULL, 0, 0};
    value_put(&b, t, from);
    return dtl_strbuf_str(&b);
}

dtl_type *dtl_type_subst(dtl_arena *a, dtl_type *t, const dtl_subst *s)
{
    if (!s || s->n == 0)
        return t;
    switch (t->kind) {
    case DTL_TYPE_INT: {
        if (!t->u.ival)
            return t;
        const dtl_dim *v = dtl_dim_subst(a, t->u.ival, s);
        if (!v)
            return NULL;
        return v == t->u.ival ? t : dtl_type_int(a, v);
    }
    case DTL_TYPE_FLOAT:
    case DTL_TYPE_BOOL:
    case DTL_TYPE_STR: {
        dtl_type *v = t->var ? dtl_subst_get_val(s, t->var) : NULL;
        return v ? v : t;
    }
    case DTL_TYPE_TENSOR: {
        const dtl_dim **dims = dtl_arena_array(a, t->u.t.rank ? t->u.t.rank : 1, sizeof *dims);
        bool changed = false;
        for (uint32_t i = 0; i < t->u.t.rank; i++) {
            dims[i] = dtl_dim_subst(a, t->u.t.dims[i], s);
            if (!dims[i])
                return NULL;
            changed |= dims[i] != t->u.t.dims[i];
        }
        return changed ? dtl_type_tensor(a, t->u.t.dtype, t->u.t.rank, dims) : t;
    }
    case DTL_TYPE_LIST: {
        dtl_type *r = dtl_type_new(a, DTL_TYPE_LIST);
        r->u.list.n = t->u.list.n;
        r->u.list.elems = dtl_arena_array(a, t->u.list.n ? t->u.list.n : 1, sizeof(dtl_type *));
        for (size_t i = 0; i < t->u.list.n; i++)
            if (!(r->u.list.elems[i] = dtl_type_subst(a, t->u.list.elems[i], s)))
                return NULL;
        return r;
    }
    case DTL_TYPE_INSTANCE: {
        size_t n = t->u.m.model->nctor;
        dtl_type *r = dtl_type_new(a, DTL_TYPE_INSTANCE);
        r->u.m.model = t->u.m.model;
        if (t->u.m.rep && !(r->u.m.rep = dtl_dim_subst(a, t->u.m.rep, s)))
            return NULL;
        r->u.m.args = dtl_arena_array(a, n ? n : 1, sizeof(dtl_type *));
        for (size_t i = 0; i < n; i++)
            if (!(r->u.m.args[i] = dtl_type_subst(a, t->u.m.args[i], s)))
                return NULL;
        return r;
    }
    case DTL_TYPE_FN: {
        if (!t->u.fn.inst)
            return t;
        dtl_type *inst = dtl_type_subst(a, t->u.fn.inst, s);
        if (!inst)
            return NULL;
        dtl_type *r = dtl_type_new(a, DTL_TYPE_FN);
        r->u.fn.fn = t->u.fn.fn;
        r->u.fn.inst = inst;
        return r;
    }
    default:
        return t;
    }
}

int dtl_broadcast(dtl_arena *a, const dtl_dim *const *x, uint32_t xr, const dtl_dim *const *y,
                  uint32_t yr, const dtl_dim ***out)
{
    uint32_t r = xr > yr ? xr : yr;
    const dtl_dim **o = dtl_arena_array(a, r ? r : 1, sizeof *o);
    for (uint32_t i = 0; i < r; i++) {
        const dtl_dim *xd = i + xr >= r ? x[i + xr - r] : NULL;
        const dtl_dim *yd = i + yr >= r ? y[i + yr - r] : NULL;
        int64_t v;
        if (!xd)
            o[i] = yd;
        else if (!yd)
            o[i] = xd;
        else if (dtl_dim_eq(xd, yd))
            o[i] = xd;
        else if (dtl_dim_is_const(xd, &v) && v == 1)
            o[i] = yd;
        else if (dtl_dim_is_const(yd, &v) && v == 1)
            o[i] = xd;
        else
            return (int)i;
    }
    *out = o;
    return -1;
}
