/* tests/unit/test_diag.c — lang/diag.c (and the parts of lang/source.c it relies on): the
 * printed form with its source line and caret, sanitizing of odd bytes, long lines, notes,
 * max_errors and "too many errors", werror, colors, and did-you-mean suggestions. */
#include <stdlib.h>
#include <string.h>

#include "../../lang/diag.h"
#include "../../lang/source.h"
#include "unit.h"

typedef struct fixture {
    dtl_arena arena;
    dtl_srcmgr sm;
    dtl_diags d;
} fixture;

static void fx_init(fixture *f)
{
    dtl_arena_init(&f->arena);
    dtl_src_init(&f->sm, &f->arena);
    dtl_diag_init(&f->d, &f->arena, &f->sm);
}

/* The span of the first occurrence of needle in src (line and column computed here). */
static dtl_span span_of(const dtl_source *src, const char *needle, size_t len)
{
    const char *p = strstr(src->text, needle);
    dtl_span sp = {0};
    if (!p)
        return sp;
    sp.file = src->id;
    sp.off = (uint32_t)(p - src->text);
    sp.len = (uint32_t)len;
    sp.line = 1;
    sp.col = 1;
    for (const char *q = src->text; q < p; q++) {
        if (*q == '\n')
            sp.line++, sp.col = 1;
        else
            sp.col++;
    }
    return sp;
}

/* Everything dtl_diag_print writes, as a malloc'ed string. */
static char *printed(const dtl_diags *d, bool color)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    if (!out)
        abort();
    dtl_diag_print(d, out, color);
    fclose(out);
    return buf;
}

static void test_error_with_caret(void)
{
    fixture f;
    fx_init(&f);
    const char *text = "model M {\n    fn f(x: f32[B]) -> f32[B] = x @ w\n}\n";
    dtl_source *src = dtl_src_add(&f.sm, "a.dtl", text, strlen(text));
    CHECK(src->id == 1);
    dtl_span at = span_of(src, "w\n", 1);
    CHECK(at.line == 2 && at.col == 37);
    dtl_diag_error(&f.d, at, "unknown name '%s'", "w");
    dtl_span x = span_of(src, "x @", 5);
    dtl_diag_note(&f.d, x, "in this %s", "product");
    CHECK(f.d.nerrors == 1 && f.d.nwarnings == 0);
    CHECK(dtl_diag_failed(&f.d));
    CHECK(!dtl_diag_stop(&f.d));
    char *s = printed(&f.d, false);
    CHECK_STR(s, "a.dtl:2:37: error: unknown name 'w'\n"
                 "    2 |     fn f(x: f32[B]) -> f32[B] = x @ w\n"
                 "      |                                     ^\n"
                 "a.dtl:2:33: note: in this product\n"
                 "    2 |     fn f(x: f32[B]) -> f32[B] = x @ w\n"
                 "      |                                 ^~~~~\n");
    free(s);
    dtl_arena_free(&f.arena);
}

static void test_no_place_and_warnings(void)
{
    fixture f;
    fx_init(&f);
    dtl_span none = {0};
    dtl_diag_warning(&f.d, none, "unused option '%s'", "-x");
    CHECK(f.d.nwarnings == 1 && f.d.nerrors == 0);
    CHECK(!dtl_diag_failed(&f.d));
    f.d.werror = true;
    CHECK(dtl_diag_failed(&f.d));
    dtl_diag_error(&f.d, none, "cannot open '%s': %s", "x.dtl", "No such file or directory");
    char *s = printed(&f.d, false);
    CHECK_STR(s, "dtlc: warning: unused option '-x'\n"
                 "dtlc: error: cannot open 'x.dtl': No such file or directory\n");
    free(s);
    /* An unknown file id prints like no place at all. */
    dtl_diags d2;
    dtl_diag_init(&d2, &f.arena, &f.sm);
    dtl_span bogus = {.file = 7, .line = 1, .col = 1};
    dtl_diag_error(&d2, bogus, "lost");
    s = printed(&d2, false);
    CHECK_STR(s, "dtlc: error: lost\n");
    free(s);
    dtl_arena_free(&f.arena);
}

static void test_sanitized_line(void)
{
    fixture f;
    fx_init(&f);
    /* A tab shows as one space; a control byte and invalid UTF-8 as '?'; valid UTF-8 as is;
     * a CR before the newline is not shown. */
    const char text[] = "\tx = \x01 \xff\xfe caf\xc3\xa9 + y\r\nnext\n";
    dtl_source *src = dtl_src_add(&f.sm, "b.dtl", text, sizeof text - 1);
    dtl_diag_error(&f.d, span_of(src, "y", 1), "bad");
    char *s = printed(&f.d, false);
    /* Columns before y: \t x sp = sp \x01 sp \xff \xfe sp c a f é sp + sp -> 17 (é is one). */
    CHECK_STR(s, "b.dtl:1:19: error: bad\n"
                 "    1 |  x = ? ?? caf\xc3\xa9 + y\n"
                 "      |                  ^\n");
    free(s);
    /* A NUL inside the text is a control byte too, and the line ends at the newline. */
    fixture g;
    fx_init(&g);
    const char t2[] = "a\0b c\n";
    dtl_source *s2 = dtl_src_add(&g.sm, "c.dtl", t2, sizeof t2 - 1);
    CHECK(s2->len == 6 && s2->text[6] == '\0');
    dtl_span at = {.file = s2->id, .line = 1, .col = 5, .off = 4, .len = 1};
    dtl_diag_error(&g.d, at, "after nul");
    s = printed(&g.d, false);
    CHECK_STR(s, "c.dtl:1:5: error: after nul\n"
                 "    1 | a?b c\n"
                 "      |     ^\n");
    free(s);
    dtl_arena_free(&f.arena);
    dtl_arena_free(&g.arena);
}

static void test_long_line_window(void)
{
    fixture f;
    fx_init(&f);
    char *text = malloc(1002);
    memset(text, 'a', 1000);
    text[900] = 'Z';
    text[1000] = '\n';
    text[1001] = '\0';
    dtl_source *src = dtl_src_add(&f.sm, "long.dtl", text, 1001);
    dtl_span at = {.file = src->id, .line = 1, .col = 901, .off = 900, .len = 1};
    dtl_diag_error(&f.d, at, "here");
    char *s = printed(&f.d, false);
    /* At most 240 bytes are shown, from 120 before the caret, with "..." for what is cut. */
    char want[1024];
    char shown[241];
    memcpy(shown, text + 780, 220);
    shown[220] = '\0';
    snprintf(want, sizeof want, "long.dtl:1:901: error: here\n    1 | ...%s\n      |    %*s^\n",
             shown, 120, "");
    CHECK_STR(s, want);
    free(s);

    /* Cut at both ends. */
    fixture g;
    fx_init(&g);
    memset(text, 'b', 1000);
    text[500] = 'Q';
    src = dtl_src_add(&g.sm, "long2.dtl", text, 1001);
    dtl_span at2 = {.file = src->id, .line = 1, .col = 501, .off = 500, .len = 3};
    dtl_diag_error(&g.d, at2, "middle");
    s = printed(&g.d, false);
    memcpy(shown, text + 380, 240);
    shown[240] = '\0';
    snprintf(want, sizeof want,
             "long2.dtl:1:501: error: middle\n    1 | ...%s...\n      |    %*s^~~\n", shown,
             120, "");
    CHECK_STR(s, want);
    free(s);
    free(text);
    dtl_arena_free(&f.arena);
    dtl_arena_free(&g.arena);
}

static void test_max_errors(void)
{
    fixture f;
    fx_init(&f);
    CHECK(f.d.max_errors == 50);
    f.d.max_errors = 3;
    const char *text = "e1\ne2\ne3\ne4\ne5\nw\n";
    dtl_source *src = dtl_src_add(&f.sm, "m.dtl", text, strlen(text));
    char name[3] = "e0";
    for (int i = 1; i <= 5; i++) {
        name[1] = (char)('0' + i);
        dtl_span at = span_of(src, name, 2);
        dtl_diag_error(&f.d, at, "error %d", i);
        dtl_diag_note(&f.d, at, "note %d", i);
        CHECK(dtl_diag_stop(&f.d) == (i >= 3));
    }
    CHECK(f.d.nerrors == 5);
    CHECK(f.d.dropped_last);
    /* A warning after the limit is still kept (only errors are limited). */
    dtl_diag_warning(&f.d, span_of(src, "w", 1), "a warning");
    CHECK(!f.d.dropped_last);
    CHECK(f.d.nwarnings == 1);
    int kept = 0, notes = 0;
    for (const dtl_diag *g = f.d.first; g; g = g->next) {
        kept++;
        notes += g->level == DTL_DIAG_NOTE;
    }
    CHECK(kept == 7 && notes == 3);
    char *s = printed(&f.d, false);
    CHECK(strstr(s, "error 3") != NULL && strstr(s, "note 3") != NULL);
    CHECK(strstr(s, "error 4") == NULL && strstr(s, "note 4") == NULL);
    CHECK(strstr(s, "error 5") == NULL && strstr(s, "note 5") == NULL);
    CHECK(strstr(s, "m.dtl:6:1: warning: a warning\n") != NULL);
    const char *tail = "dtlc: error: too many errors (5); only the first 3 are shown\n";
    size_t n = strlen(s), tn = strlen(tail);
    CHECK(n > tn && strcmp(s + n - tn, tail) == 0);
    free(s);

    /* max_errors 0: unlimited. */
    fixture g;
    fx_init(&g);
    g.d.max_errors = 0;
    dtl_span none = {0};
    for (int i = 0; i < 200; i++)
        dtl_diag_error(&g.d, none, "e%d", i);
    CHECK(!dtl_diag_stop(&g.d));
    int count = 0;
    for (const dtl_diag *d = g.d.first; d; d = d->next)
        count++;
    CHECK(count == 200);
    s = printed(&g.d, false);
    CHECK(strstr(s, "too many") == NULL);
    free(s);
    dtl_arena_free(&f.arena);
    dtl_arena_free(&g.arena);
}

static void test_color(void)
{
    fixture f;
    fx_init(&f);
    const char *text = "let x = 1\n";
    dtl_source *src = dtl_src_add(&f.sm, "k.dtl", text, strlen(text));
    dtl_diag_error(&f.d, span_of(src, "x", 1), "oops");
    char *plain = printed(&f.d, false), *col = printed(&f.d, true);
    CHECK(strchr(plain, '\033') == NULL);
    CHECK(strstr(col, "\033[1;31merror:") != NULL);
    CHECK(strstr(col, "oops") != NULL && strstr(col, "\033[0m") != NULL);
    free(plain);
    free(col);
    dtl_arena_free(&f.arena);
}

static void test_suggest(void)
{
    const char *const names[] = {"epochs", "batch", NULL, "optimizer", "data", "evaluate"};
    size_t n = sizeof names / sizeof names[0];
    CHECK_STR(dtl_diag_suggest("epoch", names, n), "epochs");
    CHECK_STR(dtl_diag_suggest("optimiser", names, n), "optimizer");
    CHECK_STR(dtl_diag_suggest("evalute", names, n), "evaluate");
    CHECK_STR(dtl_diag_suggest("bach", names, n), "batch");
    CHECK(dtl_diag_suggest("xyz", names, n) == NULL);
    CHECK(dtl_diag_suggest("loss", names, n) == NULL);
    /* An exact match is never suggested (it is not a typo). */
    const char *const one[] = {"batch"};
    CHECK(dtl_diag_suggest("batch", one, 1) == NULL);
    /* Short names allow one edit only. */
    const char *const short_names[] = {"ab", "abcd"};
    CHECK_STR(dtl_diag_suggest("abc", short_names, 2), "ab");
    CHECK(dtl_diag_suggest("xy", short_names, 2) == NULL);
    /* The closest wins; on a tie, the first. */
    const char *const close[] = {"fc2", "fc1", "fc10"};
    CHECK_STR(dtl_diag_suggest("fc3", close, 3), "fc2");
    /* No candidates. */
    CHECK(dtl_diag_suggest("x", NULL, 0) == NULL);
    /* Very long names are not compared (bounded work). */
    char longname[100];
    memset(longname, 'q', 99);
    longname[99] = '\0';
    const char *const lc[] = {longname};
    char other[100];
    memcpy(other, longname, 100);
    other[0] = 'r';
    CHECK(dtl_diag_suggest(other, lc, 1) == NULL);
}

static void test_source_helpers(void)
{
    dtl_arena a;
    dtl_arena_init(&a);
    dtl_srcmgr sm;
    dtl_src_init(&sm, &a);
    const char *text = "one\ntwo\r\n\nlast";
    dtl_source *s = dtl_src_add(&sm, "s.dtl", text, strlen(text));
    CHECK(dtl_src_get(&sm, 0) == NULL);
    CHECK(dtl_src_get(&sm, 1) == s);
    CHECK(dtl_src_get(&sm, 2) == NULL);
    size_t start, len;
    dtl_src_line(s, 5, &start, &len);
    CHECK(start == 4 && len == 3); /* "two" without "\r" */
    dtl_src_line(s, 9, &start, &len);
    CHECK(start == 9 && len == 0);
    dtl_src_line(s, 12, &start, &len);
    CHECK(start == 10 && len == 4);
    dtl_src_line(s, 1000, &start, &len); /* clamped to the end */
    CHECK(start == 10 && len == 4);
    dtl_span p = {.file = 1, .line = 1, .col = 1, .off = 0, .len = 3};
    dtl_span q = {.file = 1, .line = 2, .col = 1, .off = 4, .len = 3};
    dtl_span j = dtl_span_join(p, q);
    CHECK(j.off == 0 && j.len == 7 && j.line == 1 && j.col == 1);
    dtl_span r = {.file = 2, .off = 4, .len = 3};
    CHECK(dtl_span_join(p, r).len == 3);
    dtl_arena_free(&a);
}

int main(void)
{
    test_error_with_caret();
    test_no_place_and_warnings();
    test_sanitized_line();
    test_long_line_window();
    test_max_errors();
    test_color();
    test_suggest();
    test_source_helpers();
    CHECK_DONE();
}
