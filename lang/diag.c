/* lang/diag.c — collecting and printing diagnostics.
 *
 * The printed source line is sanitized: control bytes and invalid UTF-8 show as '?', so a
 * diagnostic about a binary file cannot corrupt the terminal. The caret line is aligned by
 * bytes of the sanitized line (a multi-byte character takes its bytes' columns on the
 * caret line only when it is one display cell, which is the common case for identifiers and
 * operators: diagnostics point at ASCII tokens). */
#include "diag.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void dtl_diag_init(dtl_diags *d, dtl_arena *arena, const dtl_srcmgr *sm)
{
    memset(d, 0, sizeof *d);
    d->arena = arena;
    d->sm = sm;
    d->max_errors = 50;
}

static void diag_add(dtl_diags *d, dtl_diag_level level, dtl_span at, const char *fmt,
                     va_list ap)
{
    if (level == DTL_DIAG_ERROR) {
        d->nerrors++;
        d->dropped_last = d->max_errors && d->nerrors > d->max_errors;
    } else if (level == DTL_DIAG_WARNING) {
        d->nwarnings++;
        d->dropped_last = false;
    }
    if (d->dropped_last)
        return;
    dtl_diag *g = dtl_arena_alloc(d->arena, sizeof *g);
    g->level = level;
    g->span = at;
    g->msg = dtl_arena_vprintf(d->arena, fmt, ap);
    if (d->last)
        d->last->next = g;
    else
        d->first = g;
    d->last = g;
}

#define DIAG_FN(name, level)                                        \
    void name(dtl_diags *d, dtl_span at, const char *fmt, ...)      \
    {                                                               \
        va_list ap;                                                 \
        va_start(ap, fmt);                                          \
        diag_add(d, level, at, fmt, ap);                            \
        va_end(ap);                                                 \
    }
DIAG_FN(dtl_diag_error, DTL_DIAG_ERROR)
DIAG_FN(dtl_diag_warning, DTL_DIAG_WARNING)
DIAG_FN(dtl_diag_note, DTL_DIAG_NOTE)

bool dtl_diag_stop(const dtl_diags *d)
{
    return d->max_errors && d->nerrors >= d->max_errors;
}

bool dtl_diag_failed(const dtl_diags *d)
{
    return d->nerrors > 0 || (d->werror && d->nwarnings > 0);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t k;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    else if ((c & 0xE0) == 0xC0)
        k = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
        k = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
        k = 4, cp = c & 0x07;
    else
        return 0;
    if (k > n)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return k;
}

static void diag_print_line(const dtl_diag *g, const dtl_source *src, FILE *out, bool color)
{
    size_t start, len;
    dtl_src_line(src, g->span.off, &start, &len);
    if (start == 0 && len >= 3 && memcmp(src->text, "\xEF\xBB\xBF", 3) == 0)
        start += 3, len -= 3;   /* a byte order mark is no column */
    enum { MAX_SHOWN = 240 };
    /* Long lines: show a window around the caret. */
    size_t caret = g->span.off >= start ? g->span.off - start : 0;
    size_t from = 0;
    if (len > MAX_SHOWN && caret > MAX_SHOWN / 2)
        from = caret - MAX_SHOWN / 2;
    size_t to = len - from > MAX_SHOWN ? from + MAX_SHOWN : len;
    const unsigned char *line = (const unsigned char *)src->text + start;

    fprintf(out, "%5u | %s", g->span.line, from ? "..." : "");
    size_t i = from;
    size_t cols_before = 0, cols_under = 0; /* display columns before and under the span */
    size_t span_end = caret + (g->span.len ? g->span.len : 1);
    while (i < to) {
        size_t k = utf8_len(line + i, len - i);
        bool ok = k > 0 && (k > 1 || (line[i] >= 0x20 && line[i] != 0x7F) || line[i] == '\t');
        if (ok && line[i] == '\t')
            fputc(' ', out);
        else if (ok)
            fwrite(line + i, 1, k, out);
        else
            fputc('?', out), k = k ? k : 1;
        if (i < caret)
            cols_before++;
        else if (i < span_end)
            cols_under++;
        i += k;
    }
    fprintf(out, "%s\n", to < len ? "..." : "");
    fprintf(out, "      | %s", from ? "   " : "");
    for (size_t c = 0; c < cols_before; c++)
        fputc(' ', out);
    if (color)
        fputs("\033[1;32m", out);
    fputc('^', out);
    for (size_t c = 1; c < cols_under; c++)
        fputc('~', out);
    if (color)
        fputs("\033[0m", out);
    fputc('\n', out);
}

/* A diagnostic with the notes that follow it, for sorting. */
typedef struct diag_group {
    const dtl_diag *first;
    size_t seq;
} diag_group;

static int diag_group_cmp(const void *pa, const void *pb)
{
    const diag_group *a = pa, *b = pb;
    const dtl_span *x = &a->first->span, *y = &b->first->span;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static void diag_print_one(const dtl_diags *d, const dtl_diag *g, FILE *out, bool color);

/* Errors and warnings are printed in source order (files in load order, places without a
 * file first), each followed by its notes, whatever order the stages found them in. */
void dtl_diag_print(const dtl_diags *d, FILE *out, bool color)
{
    size_t n = 0;
    for (const dtl_diag *g = d->first; g; g = g->next)
        n += g->level != DTL_DIAG_NOTE || g == d->first;
    diag_group *groups = n ? malloc(n * sizeof *groups) : NULL;
    if (n && !groups) {   /* no memory to sort: print in report order */
        for (const dtl_diag *g = d->first; g; g = g->next)
            diag_print_one(d, g, out, color);
    } else {
        size_t k = 0;
        for (const dtl_diag *g = d->first; g; g = g->next)
            if (g->level != DTL_DIAG_NOTE || g == d->first)
                groups[k] = (diag_group){g, k}, k++;
        if (n)
            qsort(groups, n, sizeof *groups, diag_group_cmp);
        for (size_t i = 0; i < n; i++) {
            const dtl_diag *g = groups[i].first;
            diag_print_one(d, g, out, color);
            for (g = g->next; g && g->level == DTL_DIAG_NOTE; g = g->next)
                diag_print_one(d, g, out, color);
        }
        free(groups);
    }
    if (d->max_errors && d->nerrors > d->max_errors)
        fprintf(out, "dtlc: error: too many errors (%u); only the first %u are shown\n",
                d->nerrors, d->max_errors);
}

static void diag_print_one(const dtl_diags *d, const dtl_diag *g, FILE *out, bool color)
{
    static const char *const names[] = {"error", "warning", "note"};
    static const char *const colors[] = {"\033[1;31m", "\033[1;35m", "\033[1;36m"};
    const dtl_source *src = dtl_src_get(d->sm, g->span.file);
    if (color)
        fputs("\033[1m", out);
    if (src)
        fprintf(out, "%s:%u:%u: ", src->path, g->span.line, g->span.col);
    else
        fputs("dtlc: ", out);
    if (color)
        fprintf(out, "%s%s:\033[0m\033[1m %s\033[0m\n", colors[g->level], names[g->level],
                g->msg);
    else
        fprintf(out, "%s: %s\n", names[g->level], g->msg);
    if (src)
        diag_print_line(g, src, out, color);
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return SIZE_MAX;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *dtl_diag_suggest(const char *name, const char *const *candidates, size_t n)
{
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    size_t limit = strlen(name) <= 3 ? 1 : strlen(name) <= 6 ? 2 : 3;
    for (size_t i = 0; i < n; i++) {
        if (!candidates[i] || strcmp(candidates[i], name) == 0)
            continue;
        size_t dist = edit_distance(name, candidates[i]);
        if (dist <= limit && dist < best_d) {
            best_d = dist;
            best = candidates[i];
        }
    }
    return best;
}
