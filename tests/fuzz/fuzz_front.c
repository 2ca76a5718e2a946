/* tests/fuzz/fuzz_front.c — libFuzzer harness for the front end (lexer, parser, printer,
 * checker, diagnostics).
 *
 * Each input is a .dtl file named "fuzz.dtl", checked in a fresh context with the source
 * tree's stdlib on the `use` path; the diagnostics are printed into memory. Besides "no crash,
 * no leak, no sanitizer report, no hang" (libFuzzer and the sanitizers watch those), the
 * harness checks properties every input must have, and aborts (a crash for libFuzzer) when
 * one fails:
 *   - dtl_check_source returns a module unless it reported an error;
 *   - every diagnostic's place is inside its file, and its line and column agree with its
 *     byte offset (source.h: 1-based, columns count bytes);
 *   - errors reported means something was printed;
 *   - printing is a fixed point: when the input parses without errors, its printed form
 *     parses without errors too and prints the same again (DTL_FUZZ_ROUNDTRIP=0 turns this
 *     off while the printer is being worked on).
 *
 * Build: see tests/fuzz.sh (or configure --enable-fuzz). Run one input: fuzz_front FILE.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ctx.h"
#include "parse.h"
#include "print.h"

#ifndef DTL_SRC_STDLIB_DIR
#error "DTL_SRC_STDLIB_DIR (the source tree's stdlib/) must be defined"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Set once before the first input, read-only afterwards. */
static bool roundtrip = true;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *e = getenv("DTL_FUZZ_ROUNDTRIP");
    roundtrip = !(e && strcmp(e, "0") == 0);
    return 0;
}

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_front: property violated: %s\n%s%s", what, detail ? detail : "",
            detail && *detail && detail[strlen(detail) - 1] != '\n' ? "\n" : "");
    abort();
}

/* A diagnostic's span must lie in its file, with line and column matching its offset. */
static void check_spans(const dtl_ctx *ctx)
{
    for (const dtl_diag *g = ctx->diags.first; g; g = g->next) {
        if (g->span.file == 0)
            continue;
        const dtl_source *s = dtl_src_get(&ctx->sources, g->span.file);
        char buf[256];
        if (!s) {
            snprintf(buf, sizeof buf, "file id %u, message: %s", g->span.file, g->msg);
            fail("a diagnostic names an unknown file", buf);
        }
        if (g->span.off > s->len || g->span.len > s->len - g->span.off + 1) {
            snprintf(buf, sizeof buf, "%s: off %u len %u, file has %zu bytes; message: %s",
                     s->path, g->span.off, g->span.len, s->len, g->msg);
            fail("a diagnostic's span lies outside its file", buf);
        }
        uint32_t line = 1, col = 1, from = 0;
        if (s->len >= 3 && memcmp(s->text, "\xEF\xBB\xBF", 3) == 0 && g->span.off >= 3)
            from = 3;   /* a leading byte order mark takes no column */
        for (uint32_t i = from; i < g->span.off; i++) {
            if (s->text[i] == '\n')
                line++, col = 1;
            else
                col++;
        }
        if (line != g->span.line || col != g->span.col) {
            snprintf(buf, sizeof buf,
                     "%s: offset %u is line %u col %u, the span says line %u col %u; message: %s",
                     s->path, g->span.off, line, col, g->span.line, g->span.col, g->msg);
            fail("a diagnostic's line:col disagrees with its offset", buf);
        }
    }
}

/* Parses text alone (no checking) and prints it; NULL if it had errors. *diags gets the
 * printed diagnostics either way. Both strings are malloc'ed. */
static char *parse_print(const char *text, size_t len, char **diags)
{
    dtl_ctx ctx;
    dtl_ctx_init(&ctx);
    dtl_source *src = dtl_src_add(&ctx.sources, "fuzz.dtl", text, len);
    dtl_file *f = dtl_parse(&ctx, src);
    check_spans(&ctx);

    char *dbuf = NULL, *pbuf = NULL;
    size_t dlen = 0, plen = 0;
    FILE *dout = open_memstream(&dbuf, &dlen);
    if (!dout)
        abort();
    dtl_diag_print(&ctx.diags, dout, false);
    fclose(dout);
    *diags = dbuf;

    if (!f || dtl_diag_failed(&ctx.diags)) {
        dtl_ctx_free(&ctx);
        return NULL;
    }
    FILE *pout = open_memstream(&pbuf, &plen);
    if (!pout)
        abort();
    dtl_print_file(pout, f);
    fclose(pout);
    dtl_ctx_free(&ctx);
    return pbuf;
}

static void check_roundtrip(const uint8_t *data, size_t size)
{
    char *d1 = NULL, *d2 = NULL;
    char *p1 = parse_print((const char *)data, size, &d1);
    if (p1) {
        char *p2 = parse_print(p1, strlen(p1), &d2);
        if (!p2) {
            size_t n = strlen(p1) + strlen(d2) + 64;
            char *msg = malloc(n);
            snprintf(msg, n, "printed:\n%s\nits diagnostics:\n%s", p1, d2);
            fail("the printed form of a valid file does not parse", msg);
        }
        if (strcmp(p1, p2) != 0) {
            size_t n = strlen(p1) + strlen(p2) + 64;
            char *msg = malloc(n);
            snprintf(msg, n, "first print:\n%s\nsecond print:\n%s", p1, p2);
            fail("printing is not a fixed point", msg);
        }
        free(p2);
    }
    free(p1);
    free(d1);
    free(d2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dtl_ctx ctx;
    dtl_ctx_init(&ctx);
    dtl_ctx_add_path(&ctx, DTL_SRC_STDLIB_DIR);
    dtl_source *src = dtl_src_add(&ctx.sources, "fuzz.dtl", (const char *)data, size);
    dtl_module *m = dtl_check_source(&ctx, src);
    if (!m && !dtl_diag_failed(&ctx.diags))
        fail("dtl_check_source returned NULL without reporting an error", NULL);
    check_spans(&ctx);

    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    if (!out)
        abort();
    dtl_diag_print(&ctx.diags, out, false);
    dtl_diag_print(&ctx.diags, out, true);
    fclose(out);
    if (ctx.diags.nerrors > 0 && len == 0)
        fail("errors were reported but nothing was printed", NULL);
    free(buf);
    dtl_ctx_free(&ctx);

    if (roundtrip)
        check_roundtrip(data, size);
    return 0;
}
