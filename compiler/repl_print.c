/* compiler/repl_print.c — tensors printed for people, the NumPy way.
 *
 * A tensor prints as its type on one line, then its elements in nested brackets, one row of
 * the last axis per line (wrapped at 75 columns), blocks of higher axes separated by blank
 * lines; a scalar prints as "f32 2.5". Tensors of more than 1000 elements are summarized:
 * along each axis longer than 6, the first and last 3 entries, with "..." between. Every
 * element of one tensor has one format, chosen from the elements shown: integers and bools
 * as they are; floats with the fewest decimals (at most 4) that show every element as
 * precisely as 4 decimals would, or in scientific notation when the largest magnitude is
 * >= 1e8 or < 1e-4 (so small entries among larger ones show as 0.0000, as in PyTorch);
 * nan, inf and -inf as such. Formatting depends only on the values: output is deterministic.
 */
#include "repl_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { THRESHOLD = 1000, EDGE = 3, LINE_WIDTH = 75, PRECISION = 4 };

const char *repl_type_str(char *buf, size_t len, dtl_dtype dt, uint32_t rank,
                          const int64_t *shape)
{
    int k = snprintf(buf, len, "%s", dtl_dtype_name(dt));
    if (rank > 0)
        k += snprintf(buf + k, len > (size_t)k ? len - (size_t)k : 0, "[");
    for (uint32_t i = 0; i < rank && (size_t)k < len; i++)
        k += snprintf(buf + k, len - (size_t)k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (rank > 0 && (size_t)k < len)
        snprintf(buf + k, len - (size_t)k, "]");
    return buf;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp == 0) {
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Element i as a double (floats), or an integer. */
static double elem_f(const dtl_tensor *t, uint64_t i)
{
    switch (t->dtype) {
    case DTL_DTYPE_F32: return ((const float *)t->data)[i];
    case DTL_DTYPE_F64: return ((const double *)t->data)[i];
    case DTL_DTYPE_F16: return half_to_float(((const uint16_t *)t->data)[i]);
    case DTL_DTYPE_BF16: {
        uint32_t bits = (uint32_t)((const uint16_t *)t->data)[i] << 16;
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    default: return 0;
    }
}

static int64_t elem_i(const dtl_tensor *t, uint64_t i)
{
    switch (t->dtype) {
    case DTL_DTYPE_I32: return ((const int32_t *)t->data)[i];
    case DTL_DTYPE_I64: return ((const int64_t *)t->data)[i];
    case DTL_DTYPE_BOOL: return ((const unsigned char *)t->data)[i] != 0;
    default: return 0;
    }
}

/* How the elements are written. */
typedef struct fmt {
    bool is_float, is_bool, sci;
    int digits;          /* after the point (fixed) or in the mantissa (scientific) */
    int width;           /* every element is right-aligned to this */
} fmt;

typedef struct printer {
    FILE *out;
    const dtl_tensor *t;
    bool summarize;
    uint64_t stride[DTL_MAX_RANK];
    fmt f;
    int col;             /* the current output column */
} printer;

/* Is index k of an axis of size n shown? */
static bool shown(const printer *p, int64_t n, int64_t k)
{
    return !p->summarize || n <= 2 * EDGE || k < EDGE || k >= n - EDGE;
}

/* Calls fn(p, i, ctx) for every element shown, in order. */
static void each_shown(const printer *p, uint32_t axis, uint64_t base,
                       void (*fn)(const printer *, uint64_t, void *), void *ctx)
{
    const dtl_tensor *t = p->t;
    if (axis == t->rank) {
        fn(p, base, ctx);
        return;
    }
    int64_t n = t->shape[axis];
    for (int64_t k = 0; k < n; k++) {
        if (!shown(p, n, k)) {
            k = n - EDGE - 1;
            continue;
        }
        each_shown(p, axis + 1, base + (uint64_t)k * p->stride[axis], fn, ctx);
    }
}

typedef struct stats {
    double maxabs, minnz;   /* of the finite elements */
    bool any_finite;
} stats;

static void gather_stats(const printer *p, uint64_t i, void *ctx)
{
    stats *s = ctx;
    double v = elem_f(p->t, i);
    if (!isfinite(v))
        return;
    double a = fabs(v);
    if (!s->any_finite || a > s->maxabs)
        s->maxabs = a;
    if (a > 0 && (s->minnz == 0 || a < s->minnz))
        s->minnz = a;
    s->any_finite = true;
}

/* Writes element i with precision digits into buf. */
static int format_elem(const printer *p, const fmt *f, uint64_t i, char *buf, size_t len)
{
    if (f->is_bool)
        return snprintf(buf, len, "%s", elem_i(p->t, i) ? "true" : "false");
    if (!f->is_float)
        return snprintf(buf, len, "%" PRId64, elem_i(p->t, i));
    double v = elem_f(p->t, i);
    if (isnan(v))
        return snprintf(buf, len, "nan");
    if (isinf(v))
        return snprintf(buf, len, v < 0 ? "-inf" : "inf");
    if (v == 0)
        v = 0;   /* -0.0 prints as 0.0 */
    return snprintf(buf, len, f->sci ? "%.*e" : "%.*f", f->digits, v);
}

/* The decimals element i needs (trailing zeros of the PRECISION-digit form dropped). */
static void gather_digits(const printer *p, uint64_t i, void *ctx)
{
    int *need = ctx;
    fmt f = p->f;
    f.digits = PRECISION;
    char buf[64];
    format_elem(p, &f, i, buf, sizeof buf);
    char *dot = strchr(buf, '.');
    if (!dot)
        return;
    char *end = f.sci ? strchr(buf, 'e') : buf + strlen(buf);
    if (!end)
        return;
    while (end > dot + 1 && end[-1] == '0')
        end--;
    int d = (int)(end - dot - 1);
    if (d > *need)
        *need = d;
}

static void gather_width(const printer *p, uint64_t i, void *ctx)
{
    int *w = ctx;
    char buf[64];
    int n = format_elem(p, &p->f, i, buf, sizeof buf);
    if (n > *w)
        *w = n;
}

static void put(printer *p, const char *s)
{
    fputs(s, p->out);
    for (; *s; s++)
        p->col = *s == '\n' ? 0 : p->col + 1;
}

static void indent(printer *p, int n)
{
    for (int i = 0; i < n; i++)
        put(p, " ");
}

/* Writes an item of a row, wrapping before it when the line would be too long. */
static void row_item(printer *p, const char *s, bool first, bool last, int depth)
{
    int len = (int)strlen(s) + (last ? depth : 1);   /* its "," or the closing brackets */
    if (!first) {
        if (p->col + 1 + len > LINE_WIDTH) {
            put(p, "\n");
            indent(p, depth);
        } else {
            put(p, " ");
        }
    }
    put(p, s);
}

static void print_rec(printer *p, uint32_t axis, uint64_t base)
{
    const dtl_tensor *t = p->t;
    int64_t n = t->shape[axis];
    int depth = (int)axis + 1;   /* brackets open after this one's "[" */
    put(p, "[");
    if (axis + 1 == t->rank) {
        char buf[80], item[96];
        bool first = true;
        for (int64_t k = 0; k < n; k++) {
            bool last = k == n - 1;
            if (!shown(p, n, k)) {
                row_item(p, "...,", first, false, depth);
                first = false;
                k = n - EDGE - 1;
                continue;
            }
            format_elem(p, &p->f, base + (uint64_t)k * p->stride[axis], buf, sizeof buf);
            snprintf(item, sizeof item, "%*s%s", p->f.width, buf, last ? "" : ",");
            row_item(p, item, first, last, depth);
            first = false;
        }
    } else {
        for (int64_t k = 0; k < n; k++) {
            if (k > 0) {
                put(p, ",\n");
                for (uint32_t b = axis + 2; b < t->rank; b++)
                    put(p, "\n");
                indent(p, depth);
            }
            if (!shown(p, n, k)) {
                put(p, "...");
                k = n - EDGE - 1;
                continue;
            }
            print_rec(p, axis + 1, base + (uint64_t)k * p->stride[axis]);
        }
    }
    put(p, "]");
}

void repl_print_tensor(FILE *out, const dtl_tensor *t)
{
    char ty[160];
    printer p;
    memset(&p, 0, sizeof p);
    p.out = out;
    p.t = t;
    uint64_t numel = dtl_tensor_numel(t);
    p.summarize = numel > THRESHOLD;
    uint64_t s = 1;
    for (uint32_t i = t->rank; i-- > 0;) {
        p.stride[i] = s;
        s *= (uint64_t)t->shape[i];
    }
    p.f.is_float = dtl_dtype_is_float(t->dtype);
    p.f.is_bool = t->dtype == DTL_DTYPE_BOOL;
    if (p.f.is_float && numel > 0) {
        stats st = {0, 0, false};
        each_shown(&p, 0, 0, gather_stats, &st);
        p.f.sci = st.any_finite && (st.maxabs >= 1e8 || (st.maxabs > 0 && st.maxabs < 1e-4));
        int need = 1;
        each_shown(&p, 0, 0, gather_digits, &need);
        p.f.digits = need;
    }
    if (numel > 0)
        each_shown(&p, 0, 0, gather_width, &p.f.width);
    repl_type_str(ty, sizeof ty, t->dtype, t->rank, t->shape);
    if (t->rank == 0) {
        char buf[80];
        format_elem(&p, &p.f, 0, buf, sizeof buf);
        fprintf(out, "%s %s\n", ty, buf);
        return;
    }
    fprintf(out, "%s\n", ty);
    if (numel == 0) {
        for (uint32_t i = 0; i < t->rank; i++)
            fputc('[', out);
        for (uint32_t i = 0; i < t->rank; i++)
            fputc(']', out);
        fputc('\n', out);
        return;
    }
    print_rec(&p, 0, 0);
    put(&p, "\n");
}

void repl_sparkline(char *buf, size_t len, const double *v, size_t n, size_t width)
{
    static const char *const bars[] = {"\u2581", "\u2582", "\u2583", "\u2584",
                                       "\u2585", "\u2586", "\u2587", "\u2588"};
    size_t from = n > width ? n - width : 0;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = from; i < n; i++) {
        if (!isfinite(v[i]))
            continue;
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
    }
    size_t k = 0;
    if (len)
        buf[0] = '\0';
    for (size_t i = from; i < n; i++) {
        int level = 0;
        if (isfinite(v[i]) && hi > lo)
            level = (int)floor((v[i] - lo) / (hi - lo) * 7.0 + 0.5);
        else if (isfinite(v[i]))
            level = 3;
        level = level < 0 ? 0 : level > 7 ? 7 : level;
        size_t bl = strlen(bars[level]);
        if (k + bl + 1 > len)
            break;
        memcpy(buf + k, bars[level], bl);
        k += bl;
        buf[k] = '\0';
    }
}
