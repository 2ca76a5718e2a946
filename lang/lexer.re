/* lang/lexer.re — the lexer of .dtl sources (re2c 3: `re2c -W -Werror -o lexer.c lexer.re`).
 *
 * Design. Two layers. The raw scanner (lex_raw, lex_string, lex_comment: re2c blocks) turns
 * bytes into tokens and NEWLINE markers. It runs in sentinel mode: the source text is always
 * followed by a NUL, no rule except "\x00" can match a NUL, and re2c:yyfill is off, so no rule
 * can run past the end. The "\x00" rule checks whether it stands at the true end (src->len):
 * a NUL inside the text is an error ("unexpected NUL byte") and lexing goes on after it.
 * The cooked layer (dtl_lex_next) keeps the bracket stack and applies the newline rule.
 *
 * THE NEWLINE RULE (like Python's and Go's). A newline ends a statement, and becomes a SEP
 * token, only when
 *   (a) the innermost open bracket is not '(' or '[' (newlines inside those are spaces),
 *   (b) the token before it can end a statement: an identifier, a literal, true/false, a
 *       type or dtype keyword, ')', ']' or '}', and
 *   (c) the next token does not continue the statement: it is not '{', '.', '->', '=', or a
 *       binary operator other than '-' (+ * / @ ** < <= > >= == != and or).
 * So a line that begins with `+ b` or `@ w` continues the line before, a line that begins
 * with '-', '(' or '[' starts a new statement, and the '{' of a block, or the `= expr` of a
 * fn, may stand on the line after its header. Several newlines (with blank and comment
 * lines between) make one SEP. ';' is a SEP too (dropped at the start of the file, after a
 * SEP and after '{'). A SEP is implied before every '}' that does not follow a SEP or '{'
 * (`model M { param w: f32 }`), and at the end of the file after a token that can end a
 * statement when no bracket is open.
 *
 * Brackets. The cooked layer keeps the stack of open ( [ { (at most DTL_AST_MAX_DEPTH; one
 * more is an error and the rest of the file is given up). A closer that does not match the
 * innermost opener is reported against that opener ("expected ']' to close '[' at 3:5,
 * found ')'", with a note at the opener); the brackets up to a matching one, or the
 * innermost one when none matches, count as closed. At the end of the file the innermost
 * unclosed bracket is reported, with a note pointing at a '}' indented unlike its '{' line
 * when there was one: that is usually where a '}' went missing.
 *
 * A keyword right after '.' is an identifier (`fashion.train`, `data.test`). A UTF-8 byte
 * order mark at the start of the file is skipped.
 *
 * Literals. INT: decimal digits, at most 9223372036854775807. FLOAT: digits with a '.' and
 * optional digits after it, or a '.' followed by digits, each with an optional exponent, or
 * digits with an exponent: 0.5 1. .5 1e-3 2.5E+10 (a float that overflows, like 1e999, is an
 * error; one that underflows becomes 0 or a subnormal). A letter or '_' right after a number
 * is an error. STRING: "…" on one line, with the escapes \n \t \r \0 \\ \" \' \xHH and
 * \u{H…} (1 to 6 hex digits, a Unicode scalar value, stored as UTF-8); the text must be
 * valid UTF-8. Comments run from '#' to the end of the line and must be valid UTF-8.
 * Literals keep their spelling (token text) so the printer can reproduce it.
 *
 * Errors: every lexical error is reported at its exact byte(s), and the token it belongs to
 * is marked bad (a comment's errors mark nothing). A byte that starts no token becomes an
 * ILLEGAL token (consecutive invalid UTF-8 bytes make one), so the parser drops the
 * statement. Diagnostics raised while reading a token wait in a small list and are reported
 * when that token is handed out, which keeps them in order with the parser's.
 */
#include "lexer.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parser.h"

enum { RAW_NEWLINE = -1 };
enum { LEX_MAX_PENDING = 16 };   /* diagnostics kept per token; more are dropped */

struct dtl_lex_pending {
    dtl_lex_pending *next;
    bool note;
    dtl_span span;
    const char *msg;
};

/* ---- positions and diagnostics ---- */

static dtl_span lex_span(const dtl_lexer *lx, const unsigned char *p, size_t len)
{
    dtl_span s;
    s.file = lx->src->id;
    s.line = lx->line;
    s.col = (uint32_t)(p - lx->line_start) + 1;
    s.off = (uint32_t)(p - (const unsigned char *)lx->src->text);
    s.len = (uint32_t)len;
    return s;
}

static void lex_diag(dtl_lexer *lx, bool note, dtl_span at, const char *fmt, va_list ap)
{
    if (!note && lx->npend >= LEX_MAX_PENDING)
        return;
    if (note && lx->npend > LEX_MAX_PENDING)
        return;
    dtl_lex_pending *p = dtl_arena_alloc(&lx->ctx->arena, sizeof *p);
    p->note = note;
    p->span = at;
    p->msg = dtl_arena_vprintf(&lx->ctx->arena, fmt, ap);
    if (lx->pend_last)
        lx->pend_last->next = p;
    else
        lx->pend_first = p;
    lx->pend_last = p;
    lx->npend++;
}

__attribute__((format(printf, 3, 4)))
static void lex_error(dtl_lexer *lx, dtl_span at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lex_diag(lx, false, at, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 3, 4)))
static void lex_note(dtl_lexer *lx, dtl_span at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lex_diag(lx, true, at, fmt, ap);
    va_end(ap);
}

/* Takes the pending diagnostics (they belong to the token just read). */
static dtl_lex_pending *lex_take_pending(dtl_lexer *lx)
{
    dtl_lex_pending *p = lx->pend_first;
    lx->pend_first = lx->pend_last = NULL;
    lx->npend = 0;
    return p;
}

static void lex_flush(dtl_lexer *lx, dtl_lex_pending *p)
{
    for (; p; p = p->next) {
        if (p->note)
            dtl_diag_note(&lx->ctx->diags, p->span, "%s", p->msg);
        else
            dtl_diag_error(&lx->ctx->diags, p->span, "%s", p->msg);
    }
}

/* Text for a message: at most max bytes of s[0..n), cut at a character boundary, with "…"
 * when cut. */
static const char *lex_clip(dtl_arena *a, const char *s, size_t n, size_t max)
{
    if (n <= max)
        return dtl_arena_strndup(a, s, n);
    size_t k = max;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    return dtl_arena_printf(a, "%.*s…", (int)k, s);
}

/* Length of the valid UTF-8 sequence at s (bytes up to end), or 0; its code point in *cp. */
static size_t utf8_decode(const unsigned char *s, const unsigned char *end, uint32_t *cp)
{
    unsigned c = s[0];
    size_t k;
    uint32_t v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        k = 2, v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        k = 3, v = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4, v = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - s) < k)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min[k] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return k;
}

/* The arena copy of a spelling. (Interning them was tried: it saves little on real
 * programs and costs a lot of time on files with many distinct names.) */
static const char *lex_copy(dtl_lexer *lx, const unsigned char *s, size_t n)
{
    return dtl_arena_strndup(&lx->ctx->arena, (const char *)s, n);
}

/* ---- the string buffer ---- */

static void sbuf_put(dtl_lexer *lx, size_t *n, const void *bytes, size_t k)
{
    if (*n + k + 1 > lx->scap) {
        size_t cap = lx->scap ? lx->scap : 256;
        while (cap < *n + k + 1)
            cap *= 2;
        lx->sbuf = dtl_arena_grow(&lx->ctx->arena, lx->sbuf, *n, cap, 1);
        lx->scap = cap;
    }
    memcpy(lx->sbuf + *n, bytes, k);
    *n += k;
}

static void sbuf_put_cp(dtl_lexer *lx, size_t *n, uint32_t cp)
{
    unsigned char b[4];
    size_t k;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp, k = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3F)), k = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F)), k = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (unsigned char)(0x80 | (cp & 0x3F)), k = 4;
    }
    sbuf_put(lx, n, b, k);
}

static unsigned hexval(unsigned char c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/*!re2c
    re2c:define:YYCTYPE = "unsigned char";
    re2c:define:YYCURSOR = cur;
    re2c:define:YYMARKER = mar;
    re2c:yyfill:enable = 0;

    hex    = [0-9a-fA-F];
    utf8mb = [\xC2-\xDF][\x80-\xBF]
           | "\xE0"[\xA0-\xBF][\x80-\xBF]
           | [\xE1-\xEC\xEE\xEF][\x80-\xBF][\x80-\xBF]
           | "\xED"[\x80-\x9F][\x80-\xBF]
           | "\xF0"[\x90-\xBF][\x80-\xBF][\x80-\xBF]
           | [\xF1-\xF3][\x80-\xBF][\x80-\xBF][\x80-\xBF]
           | "\xF4"[\x80-\x8F][\x80-\xBF][\x80-\xBF];
*/

/* ---- comments ---- */

/* Skips the rest of a comment (lx->cur is just after '#'), up to the newline or the end. */
static void lex_comment(dtl_lexer *lx)
{
    const unsigned char *cur = lx->cur, *mar, *tok;
    bool bad_utf8 = false;
    (void)mar;
    for (;;) {
        tok = cur;
        /*!re2c
            [^\n\x00\x80-\xFF]+ | utf8mb  { continue; }
            "\n"  { lx->cur = tok; return; }
            "\x00" {
                if (tok == lx->end) {
                    lx->cur = tok;
                    return;
                }
                lex_error(lx, lex_span(lx, tok, 1), "unexpected NUL byte");
                continue;
            }
            * {
                if (!bad_utf8)
                    lex_error(lx, lex_span(lx, tok, 1),
                              "invalid UTF-8 byte 0x%02X in comment", *tok);
                bad_utf8 = true;
                continue;
            }
        */
    }
}

/* ---- strings ---- */

/* Reads a string literal; lx->cur is just after the opening quote at open. */
static void lex_string(dtl_lexer *lx, dtl_token *t, const unsigned char *open)
{
    const unsigned char *cur = lx->cur, *mar, *tok;
    size_t n = 0;
    bool bad = false, bad_utf8 = false;
    const char *where = NULL;   /* set when the string is unterminated */
    for (;;) {
        tok = cur;
        /*!re2c
            ["]  { break; }
            [^"\\\n\r\x00\x80-\xFF]+ | utf8mb  { sbuf_put(lx, &n, tok, (size_t)(cur - tok)); continue; }
            "\\n"  { sbuf_put(lx, &n, "\n", 1); continue; }
            "\\t"  { sbuf_put(lx, &n, "\t", 1); continue; }
            "\\r"  { sbuf_put(lx, &n, "\r", 1); continue; }
            "\\0"  { sbuf_put(lx, &n, "\0", 1); continue; }
            "\\\\" { sbuf_put(lx, &n, "\\", 1); continue; }
            "\\\"" { sbuf_put(lx, &n, "\"", 1); continue; }
            "\\'"  { sbuf_put(lx, &n, "'", 1); continue; }
            "\\x" hex hex {
                unsigned char b = (unsigned char)(hexval(tok[2]) * 16 + hexval(tok[3]));
                sbuf_put(lx, &n, &b, 1);
                continue;
            }
            "\\x" {
                lex_error(lx, lex_span(lx, tok, 2),
                          "expected two hex digits after '\\x' in string");
                bad = true;
                continue;
            }
            "\\u{" hex+ "}" {
                size_t digits = (size_t)(cur - tok) - 4;
                uint32_t cp = 0;
                for (const unsigned char *h = tok + 3; h < cur - 1 && cp <= 0x10FFFF; h++)
                    cp = cp * 16 + hexval(*h);
                if (digits > 6 || cp > 0x10FFFF) {
                    lex_error(lx, lex_span(lx, tok, (size_t)(cur - tok)),
                              "unicode escape '%s' is out of range (the largest is \\u{10FFFF})",
                              lex_clip(&lx->ctx->arena, (const char *)tok,
                                       (size_t)(cur - tok), 16));
                    bad = true;
                } else if (cp >= 0xD800 && cp <= 0xDFFF) {
                    lex_error(lx, lex_span(lx, tok, (size_t)(cur - tok)),
                              "unicode escape '%.*s' is a surrogate, not a character",
                              (int)(cur - tok), (const char *)tok);
                    bad = true;
                } else {
                    sbuf_put_cp(lx, &n, cp);
                }
                continue;
            }
            "\\u" {
                lex_error(lx, lex_span(lx, tok, 2),
                          "expected '{', hex digits and '}' after '\\u' in string, as in \\u{e9}");
                bad = true;
                continue;
            }
            "\\" [\x21-\x7E] {
                lex_error(lx, lex_span(lx, tok, 2), "unknown escape sequence '\\%c' in string",
                          tok[1]);
                bad = true;
                continue;
            }
            "\\" {
                /* before a newline, the end, a blank or a non-ASCII character */
                if (*cur != '\n' && *cur != '\r' && *cur != '\0') {
                    lex_error(lx, lex_span(lx, tok, 1),
                              "unknown escape sequence in string: '\\' must be followed by "
                              "one of n t r 0 \\ \" ' x u");
                    bad = true;
                }
                continue;
            }
            [\n\r] { cur = tok; where = "line"; break; }
            "\x00" {
                if (tok == lx->end) {
                    cur = tok;
                    where = "file";
                    break;
                }
                lex_error(lx, lex_span(lx, tok, 1), "unexpected NUL byte in string");
                bad = true;
                continue;
            }
            * {
                if (!bad_utf8)
                    lex_error(lx, lex_span(lx, tok, 1), "invalid UTF-8 byte 0x%02X in string",
                              *tok);
                bad_utf8 = bad = true;
                continue;
            }
        */
    }
    (void)mar;
    if (where) {
        lex_error(lx, lex_span(lx, cur, cur < lx->end ? 1 : 0),
                  "unterminated string: expected '\"' before the end of the %s", where);
        lex_note(lx, lex_span(lx, open, 1), "the string starts here");
        bad = true;
    }
    lx->cur = cur;
    t->kind = DTL_TK_STRING;
    t->span = lex_span(lx, open, (size_t)(cur - open));
    t->text = dtl_arena_strndup(&lx->ctx->arena, (const char *)open, (size_t)(cur - open));
    t->v.str.bytes = dtl_arena_strndup(&lx->ctx->arena, lx->sbuf ? lx->sbuf : "", n);
    t->v.str.len = n;
    t->bad = bad;
}

/* ---- numbers ---- */

static void lex_int(dtl_lexer *lx, dtl_token *t, const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    bool over = false;
    for (size_t i = 0; i < n; i++) {
        unsigned d = p[i] - '0';
        if (v > ((uint64_t)INT64_MAX - d) / 10) {
            over = true;
            break;
        }
        v = v * 10 + d;
    }
    t->kind = DTL_TK_INTLIT;
    t->text = lex_copy(lx, p, n);
    if (over) {
        lex_error(lx, t->span, "integer literal '%s' is too large (the largest is %lld)",
                  lex_clip(&lx->ctx->arena, t->text, n, 40), (long long)INT64_MAX);
        t->bad = true;
        v = 0;
    }
    t->v.ival = (int64_t)v;
}

static void lex_float(dtl_lexer *lx, dtl_token *t, const unsigned char *p, size_t n)
{
    t->kind = DTL_TK_FLOATLIT;
    t->text = lex_copy(lx, p, n);
    errno = 0;
    double v = strtod(t->text, NULL);
    if (errno == ERANGE && isinf(v)) {
        lex_error(lx, t->span,
                  "float literal '%s' is out of range (the largest is about 1.8e308)",
                  lex_clip(&lx->ctx->arena, t->text, n, 40));
        t->bad = true;
        v = 0;
    }
    t->v.fval = v;
}

/* ---- the raw scanner ---- */

static const char *char_hint(uint32_t c)
{
    switch (c) {
    case '!': return " (write 'not' for negation, '!=' for inequality)";
    case '&': return " (write 'and')";
    case '|': return " (write 'or')";
    case '\'': return " (strings are written in double quotes)";
    case 0x201C: case 0x201D: case 0x201E: case 0x2018: case 0x2019:
        return " (a typographic quote; strings are written in \"…\")";
    case 0x2212: return " (a minus sign; write '-')";
    case 0x00D7: return " (write '*')";
    case 0x00A0: return " (a no-break space)";
    default: return "";
    }
}

static void lex_illegal(dtl_lexer *lx, dtl_token *t, const unsigned char *tok,
                        const unsigned char **curp)
{
    const unsigned char *cur = *curp;
    uint32_t cp;
    size_t k = utf8_decode(tok, lx->end, &cp);
    if (k > 1) {
        cur = tok + k;
        lex_error(lx, lex_span(lx, tok, k), "unexpected character U+%04X%s", (unsigned)cp,
                  char_hint(cp));
    } else if (*tok >= 0x21 && *tok <= 0x7E) {
        lex_error(lx, lex_span(lx, tok, 1), "unexpected character '%c'%s", *tok,
                  char_hint(*tok));
    } else if (*tok < 0x80) {
        lex_error(lx, lex_span(lx, tok, 1), "unexpected control character 0x%02X", *tok);
    } else {
        /* a run of bytes that are not UTF-8 makes one error */
        while (cur < lx->end && *cur >= 0x80 && utf8_decode(cur, lx->end, &cp) == 0)
            cur++;
        lex_error(lx, lex_span(lx, tok, (size_t)(cur - tok)),
                  "unexpected byte 0x%02X (the text is not valid UTF-8)", *tok);
    }
    t->kind = DTL_TK_ILLEGAL;
    t->span = lex_span(lx, tok, (size_t)(cur - tok));
    t->bad = true;
    *curp = cur;
}

#define TOK(k)                                                  \
    do {                                                        \
        t->kind = DTL_TK_##k;                                   \
        t->span = lex_span(lx, tok, (size_t)(cur - tok));       \
        lx->cur = cur;                                          \
        return;                                                 \
    } while (0)

#define DTYPE_TOK(k, d)                                         \
    do {                                                        \
        t->v.dtype = DTL_DTYPE_##d;                             \
        TOK(k);                                                 \
    } while (0)

/* One raw token into *t: a token, a ';' (as SEP), RAW_NEWLINE, or 0 at the end. */
static void lex_raw(dtl_lexer *lx, dtl_token *t)
{
    const unsigned char *cur, *mar, *tok;
    (void)mar;
    memset(t, 0, sizeof *t);
    if (lx->abandoned) {
        lx->cur = lx->end;
        t->span = lex_span(lx, lx->end, 0);
        return;
    }
again:
    tok = cur = lx->cur;
    /*!re2c
        dec = [0-9]+;
        exp = [eE] [+-]? [0-9]+;
        flt = dec "." [0-9]* exp? | "." [0-9]+ exp? | dec exp;
        ident = [a-zA-Z_][a-zA-Z_0-9]*;

        [ \t\r]+  { lx->cur = cur; goto again; }
        "\n" {
            t->kind = RAW_NEWLINE;
            t->span = lex_span(lx, tok, 1);
            lx->cur = cur;
            lx->line++;
            lx->line_start = cur;
            return;
        }
        "#"  { lx->cur = cur; lex_comment(lx); goto again; }
        "\x00" {
            if (tok == lx->end) {
                t->kind = 0;
                t->span = lex_span(lx, tok, 0);
                lx->cur = tok;
                return;
            }
            lex_error(lx, lex_span(lx, tok, 1), "unexpected NUL byte");
            t->kind = DTL_TK_ILLEGAL;
            t->bad = true;
            t->span = lex_span(lx, tok, 1);
            lx->cur = cur;
            return;
        }

        "use"     { TOK(USE); }
        "model"   { TOK(MODEL); }
        "fn"      { TOK(FN); }
        "param"   { TOK(PARAM); }
        "state"   { TOK(STATE); }
        "let"     { TOK(LET); }
        "return"  { TOK(RETURN); }
        "dataset" { TOK(DATASET); }
        "train"   { TOK(TRAIN); }
        "shard"   { TOK(SHARD); }
        "along"   { TOK(ALONG); }
        "stage"   { TOK(STAGE); }
        "true"    { TOK(TRUE); }
        "false"   { TOK(FALSE); }
        "not"     { TOK(NOT); }
        "and"     { TOK(AND); }
        "or"      { TOK(OR); }
        "int"     { TOK(KW_INT); }
        "float"   { TOK(KW_FLOAT); }
        "str"     { TOK(KW_STR); }
        "bool"    { DTYPE_TOK(KW_BOOL, BOOL); }
        "f32"     { DTYPE_TOK(DTYPE, F32); }
        "f64"     { DTYPE_TOK(DTYPE, F64); }
        "f16"     { DTYPE_TOK(DTYPE, F16); }
        "bf16"    { DTYPE_TOK(DTYPE, BF16); }
        "i32"     { DTYPE_TOK(DTYPE, I32); }
        "i64"     { DTYPE_TOK(DTYPE, I64); }

        ident {
            t->kind = DTL_TK_IDENT;
            t->span = lex_span(lx, tok, (size_t)(cur - tok));
            t->text = lex_copy(lx, tok, (size_t)(cur - tok));
            lx->cur = cur;
            return;
        }

        flt {
            t->span = lex_span(lx, tok, (size_t)(cur - tok));
            lex_float(lx, t, tok, (size_t)(cur - tok));
            lx->cur = cur;
            return;
        }
        dec {
            t->span = lex_span(lx, tok, (size_t)(cur - tok));
            lex_int(lx, t, tok, (size_t)(cur - tok));
            lx->cur = cur;
            return;
        }
        (dec | dec "." [0-9]* | "." [0-9]+) [eE] [+-]? {
            t->span = lex_span(lx, tok, (size_t)(cur - tok));
            lex_error(lx, t->span, "malformed number '%s': expected digits after the exponent",
                      lex_clip(&lx->ctx->arena, (const char *)tok, (size_t)(cur - tok), 40));
            t->kind = DTL_TK_FLOATLIT;
            t->text = dtl_arena_strndup(&lx->ctx->arena, (const char *)tok, (size_t)(cur - tok));
            t->bad = true;
            lx->cur = cur;
            return;
        }
        (dec | flt) [a-zA-Z_] [a-zA-Z_0-9]* {
            const unsigned char *s = tok;   /* where the suffix starts */
            while (s < cur && ((*s >= '0' && *s <= '9') || *s == '.' || *s == 'e' || *s == 'E'
                               || *s == '+' || *s == '-'))
                s++;
            /* an exponent letter directly followed by more letters belongs to the suffix */
            while (s > tok && (s[-1] == 'e' || s[-1] == 'E'))
                s--;
            t->span = lex_span(lx, tok, (size_t)(cur - tok));
            lex_error(lx, t->span, "invalid suffix '%s' on number '%s'",
                      lex_clip(&lx->ctx->arena, (const char *)s, (size_t)(cur - s), 24),
                      lex_clip(&lx->ctx->arena, (const char *)tok, (size_t)(s - tok), 24));
            t->kind = DTL_TK_INTLIT;
            t->text = dtl_arena_strndup(&lx->ctx->arena, (const char *)tok, (size_t)(cur - tok));
            t->bad = true;
            lx->cur = cur;
            return;
        }

        ["] {
            lx->cur = cur;
            lex_string(lx, t, tok);
            return;
        }

        "("  { TOK(LPAREN); }
        ")"  { TOK(RPAREN); }
        "["  { TOK(LBRACKET); }
        "]"  { TOK(RBRACKET); }
        "{"  { TOK(LBRACE); }
        "}"  { TOK(RBRACE); }
        ","  { TOK(COMMA); }
        ":"  { TOK(COLON); }
        ";"  { t->sep = DTL_SEP_SEMI; TOK(SEP); }
        "."  { TOK(DOT); }
        "="  { TOK(EQ); }
        "->" { TOK(ARROW); }
        "+"  { TOK(PLUS); }
        "-"  { TOK(MINUS); }
        "*"  { TOK(STAR); }
        "/"  { TOK(SLASH); }
        "@"  { TOK(AT); }
        "**" { TOK(POW); }
        "<"  { TOK(LT); }
        "<=" { TOK(LE); }
        ">"  { TOK(GT); }
        ">=" { TOK(GE); }
        "==" { TOK(EQEQ); }
        "!=" { TOK(NE); }

        * {
            lex_illegal(lx, t, tok, &cur);
            lx->cur = cur;
            return;
        }
    */
}

#undef TOK
#undef DTYPE_TOK

/* ---- the cooked layer: brackets and the newline rule ---- */

static bool is_keyword(int k)
{
    switch (k) {
    case DTL_TK_USE: case DTL_TK_MODEL: case DTL_TK_FN: case DTL_TK_PARAM: case DTL_TK_LET:
    case DTL_TK_STATE:
    case DTL_TK_RETURN: case DTL_TK_DATASET: case DTL_TK_TRAIN: case DTL_TK_SHARD:
    case DTL_TK_ALONG: case DTL_TK_STAGE: case DTL_TK_TRUE: case DTL_TK_FALSE:
    case DTL_TK_NOT: case DTL_TK_AND: case DTL_TK_OR: case DTL_TK_KW_INT:
    case DTL_TK_KW_FLOAT: case DTL_TK_KW_STR: case DTL_TK_KW_BOOL: case DTL_TK_DTYPE:
        return true;
    default:
        return false;
    }
}

/* (b): the token can end a statement. */
static bool can_end(int k)
{
    switch (k) {
    case DTL_TK_IDENT: case DTL_TK_INTLIT: case DTL_TK_FLOATLIT: case DTL_TK_STRING:
    case DTL_TK_TRUE: case DTL_TK_FALSE: case DTL_TK_DTYPE: case DTL_TK_KW_BOOL:
    case DTL_TK_KW_INT: case DTL_TK_KW_FLOAT: case DTL_TK_KW_STR: case DTL_TK_RPAREN:
    case DTL_TK_RBRACKET: case DTL_TK_RBRACE: case DTL_TK_ILLEGAL:
        return true;
    default:
        return false;
    }
}

/* (c): a token at the start of a line that continues the line before. */
static bool continues(int k)
{
    switch (k) {
    case DTL_TK_LBRACE: case DTL_TK_DOT: case DTL_TK_ARROW: case DTL_TK_EQ: case DTL_TK_PLUS:
    case DTL_TK_STAR: case DTL_TK_SLASH: case DTL_TK_AT: case DTL_TK_POW: case DTL_TK_LT:
    case DTL_TK_LE: case DTL_TK_GT: case DTL_TK_GE: case DTL_TK_EQEQ: case DTL_TK_NE:
    case DTL_TK_AND: case DTL_TK_OR:
        return true;
    default:
        return false;
    }
}

static char closer_of(char open)
{
    return open == '(' ? ')' : open == '[' ? ']' : '}';
}

/* Leading blanks of the line starting at p. */
static uint32_t indent_at(const dtl_lexer *lx, const unsigned char *p)
{
    uint32_t n = 0;
    while (p + n < lx->end && (p[n] == ' ' || p[n] == '\t'))
        n++;
    return n;
}

/* The token at span s is the first one on its line. */
static bool first_on_line(const dtl_lexer *lx, dtl_span s)
{
    return s.line == lx->line && indent_at(lx, lx->line_start) == s.col - 1;
}

/* Bracket bookkeeping for raw token r. Returns true when r is a '}' that closed an opener
 * after a mismatch (the SEP implied before it carries the error). */
static bool lex_bracket(dtl_lexer *lx, dtl_token *r)
{
    char open, want;
    switch (r->kind) {
    case DTL_TK_LPAREN: open = '('; break;
    case DTL_TK_LBRACKET: open = '['; break;
    case DTL_TK_LBRACE: open = '{'; break;
    case DTL_TK_RPAREN: want = '('; goto close;
    case DTL_TK_RBRACKET: want = '['; goto close;
    case DTL_TK_RBRACE: want = '{'; goto close;
    case 0:
        if (lx->depth && !lx->eof_reported && !lx->stack[lx->depth - 1].reported) {
            const dtl_lex_bracket *b = &lx->stack[lx->depth - 1];
            lx->eof_reported = true;
            lex_error(lx, r->span, "expected '%c' to close '%c' at %u:%u, found end of file",
                      closer_of(b->ch), b->ch, b->span.line, b->span.col);
            lex_note(lx, b->span, "'%c' opened here", b->ch);
            if (b->ch == '{' && lx->has_suspect)
                lex_note(lx, lx->suspect_close,
                         "this '}' closes the '{' at %u:%u but is indented differently; "
                         "is a '}' missing before it?",
                         lx->suspect_open.line, lx->suspect_open.col);
            r->bad = true;
        }
        r->depth = (uint16_t)lx->depth;
        return false;
    default:
        r->depth = (uint16_t)lx->depth;
        return false;
    }
    /* an opener */
    if (lx->depth == DTL_AST_MAX_DEPTH) {
        lex_error(lx, r->span, "brackets nested too deeply (more than %d levels)",
                  DTL_AST_MAX_DEPTH);
        lx->abandoned = true;
        lx->cur = lx->end;
        r->kind = 0;
        r->bad = true;
        r->depth = (uint16_t)lx->depth;
        return false;
    }
    dtl_lex_bracket *b = &lx->stack[lx->depth++];
    b->ch = open;
    b->span = r->span;
    b->indent = indent_at(lx, lx->line_start);
    b->reported = false;
    r->depth = (uint16_t)lx->depth;
    return false;

close:;
    char shut = closer_of(want);
    int j = (int)lx->depth - 1;
    while (j >= 0 && lx->stack[j].ch != want)
        j--;
    if (j >= 0 && j == (int)lx->depth - 1) {
        /* the innermost opener: the normal case */
        const dtl_lex_bracket *open_b = &lx->stack[j];
        if (want == '{' && !lx->has_suspect && first_on_line(lx, r->span) &&
            r->span.col - 1 != open_b->indent) {
            lx->has_suspect = true;
            lx->suspect_close = r->span;
            lx->suspect_open = open_b->span;
        }
        lx->depth--;
        r->depth = (uint16_t)lx->depth;
        return false;
    }
    const dtl_lex_bracket *top = lx->depth ? &lx->stack[lx->depth - 1] : NULL;
    if (j < 0 && (!top || top->ch == '{')) {
        lex_error(lx, r->span, "unexpected '%c': there is no open '%c' to close", shut, want);
        r->kind = DTL_TK_ILLEGAL;
        r->bad = true;
        r->depth = (uint16_t)lx->depth;
        return false;
    }
    lex_error(lx, r->span, "expected '%c' to close '%c' at %u:%u, found '%c'",
              closer_of(top->ch), top->ch, top->span.line, top->span.col, shut);
    lex_note(lx, top->span, "'%c' opened here", top->ch);
    /* close through the matching opener, or (none) take the closer for a mistyped one */
    lx->depth = j >= 0 ? (unsigned)j : lx->depth - 1;
    if (want == '{' && j >= 0) {
        /* keep the '}': it closes its block; the SEP before it carries the error */
        r->depth = (uint16_t)lx->depth;
        return true;
    }
    r->kind = DTL_TK_ILLEGAL;
    r->bad = true;
    r->depth = (uint16_t)lx->depth;
    return false;
}

void dtl_lex_init(dtl_lexer *lx, dtl_ctx *ctx, const dtl_source *src)
{
    memset(lx, 0, sizeof *lx);
    lx->ctx = ctx;
    lx->src = src;
    lx->cur = (const unsigned char *)src->text;
    lx->end = lx->cur + src->len;
    lx->line_start = lx->cur;
    lx->line = 1;
    if (src->len >= 3 && memcmp(src->text, "\xEF\xBB\xBF", 3) == 0)
        lx->line_start = lx->cur += 3;   /* a UTF-8 byte order mark: no column of its own */
    lx->last_span.file = src->id;
    lx->last_span.line = 1;
    lx->last_span.col = 1;
}

static int lex_hand_out(dtl_lexer *lx, dtl_token *t, dtl_lex_pending *diags)
{
    /* The end of file is reported even while a broken statement is skipped: an unclosed
     * bracket there is usually the cause of that statement's error (a missing '}'). */
    if (!lx->quiet || t->kind == 0)
        lex_flush(lx, diags);
    lx->prev = t->kind;
    if (t->kind != DTL_TK_SEP && t->kind != 0)
        lx->last_span = t->span;
    return t->kind;
}

/* Where an implied SEP at the end of the file, or the end itself, points: just after the
 * last token. */
static dtl_span end_span(const dtl_lexer *lx)
{
    dtl_span s = lx->last_span;
    s.col += s.len;
    s.off += s.len;
    s.len = 0;
    return s;
}

int dtl_lex_next(dtl_lexer *lx, dtl_token *t)
{
    if (lx->has_queued) {
        lx->has_queued = false;
        *t = lx->queued;
        dtl_lex_pending *d = lx->qpend;
        lx->qpend = NULL;
        return lex_hand_out(lx, t, d);
    }
    for (;;) {
        dtl_token r;
        bool newline = false;
        dtl_span nl = {0};
        for (;;) {
            lex_raw(lx, &r);
            if (r.kind != RAW_NEWLINE)
                break;
            if (!newline)
                nl = r.span;
            newline = true;
        }
        if (r.kind == 0)
            r.span = end_span(lx);
        if (lx->prev == DTL_TK_DOT && is_keyword(r.kind)) {
            r.kind = DTL_TK_IDENT;
            r.text = lex_copy(lx, (const unsigned char *)lx->src->text + r.span.off,
                                r.span.len);
        }
        unsigned depth_before = lx->depth;
        bool in_parens = lx->depth && lx->stack[lx->depth - 1].ch != '{';
        bool brace_mismatch = lex_bracket(lx, &r);

        if (r.kind == DTL_TK_SEP) {   /* ';' */
            r.depth = (uint16_t)depth_before;
            if (lx->prev == 0 || lx->prev == DTL_TK_SEP || lx->prev == DTL_TK_LBRACE) {
                dtl_lex_pending *d = lex_take_pending(lx);
                if (!lx->quiet)
                    lex_flush(lx, d);
                continue;
            }
            *t = r;
            return lex_hand_out(lx, t, lex_take_pending(lx));
        }

        dtl_token sep;
        memset(&sep, 0, sizeof sep);
        sep.kind = DTL_TK_SEP;
        sep.depth = (uint16_t)depth_before;
        bool implied = false;
        if (newline && can_end(lx->prev) && !in_parens && !continues(r.kind)) {
            implied = true;
            sep.sep = DTL_SEP_NEWLINE;
            sep.span = nl;
        } else if (r.kind == DTL_TK_RBRACE && lx->prev != 0 && lx->prev != DTL_TK_SEP &&
                   lx->prev != DTL_TK_LBRACE) {
            implied = true;
            sep.sep = DTL_SEP_BRACE;
            sep.span = r.span;
            sep.depth = (uint16_t)(r.depth + 1);
        } else if (r.kind == 0 && can_end(lx->prev) && lx->depth == 0 && !lx->abandoned) {
            implied = true;
            sep.sep = DTL_SEP_EOF;
            sep.span = r.span;
        }
        if (brace_mismatch) {
            /* the '}' error goes with the SEP before it (or the '}' when there is none) */
            if (implied && sep.sep == DTL_SEP_BRACE)
                sep.bad = true;
            else
                r.bad = true;
        }
        if (!implied) {
            *t = r;
            return lex_hand_out(lx, t, lex_take_pending(lx));
        }
        lx->queued = r;
        lx->has_queued = true;
        dtl_lex_pending *d = lex_take_pending(lx);
        if (sep.bad) {
            *t = sep;
            return lex_hand_out(lx, t, d);
        }
        lx->qpend = d;
        *t = sep;
        return lex_hand_out(lx, t, NULL);
    }
}

/* ---- names ---- */

const char *dtl_lex_kind_name(int kind)
{
    switch (kind) {
    case 0: return "end of file";
    case DTL_TK_SEP: return "newline";
    case DTL_TK_ILLEGAL: return "a valid character";
    case DTL_TK_IDENT: return "identifier";
    case DTL_TK_INTLIT: return "integer";
    case DTL_TK_FLOATLIT: return "float";
    case DTL_TK_STRING: return "string";
    case DTL_TK_TRUE: return "'true'";
    case DTL_TK_FALSE: return "'false'";
    case DTL_TK_DTYPE: return "a dtype";
    case DTL_TK_KW_BOOL: return "'bool'";
    case DTL_TK_KW_INT: return "'int'";
    case DTL_TK_KW_FLOAT: return "'float'";
    case DTL_TK_KW_STR: return "'str'";
    case DTL_TK_USE: return "'use'";
    case DTL_TK_MODEL: return "'model'";
    case DTL_TK_FN: return "'fn'";
    case DTL_TK_PARAM: return "'param'";
    case DTL_TK_STATE: return "'state'";
    case DTL_TK_LET: return "'let'";
    case DTL_TK_RETURN: return "'return'";
    case DTL_TK_DATASET: return "'dataset'";
    case DTL_TK_TRAIN: return "'train'";
    case DTL_TK_SHARD: return "'shard'";
    case DTL_TK_ALONG: return "'along'";
    case DTL_TK_STAGE: return "'stage'";
    case DTL_TK_NOT: return "'not'";
    case DTL_TK_AND: return "'and'";
    case DTL_TK_OR: return "'or'";
    case DTL_TK_LPAREN: return "'('";
    case DTL_TK_RPAREN: return "')'";
    case DTL_TK_LBRACKET: return "'['";
    case DTL_TK_RBRACKET: return "']'";
    case DTL_TK_LBRACE: return "'{'";
    case DTL_TK_RBRACE: return "'}'";
    case DTL_TK_COMMA: return "','";
    case DTL_TK_COLON: return "':'";
    case DTL_TK_DOT: return "'.'";
    case DTL_TK_EQ: return "'='";
    case DTL_TK_ARROW: return "'->'";
    case DTL_TK_PLUS: return "'+'";
    case DTL_TK_MINUS: return "'-'";
    case DTL_TK_STAR: return "'*'";
    case DTL_TK_SLASH: return "'/'";
    case DTL_TK_AT: return "'@'";
    case DTL_TK_POW: return "'**'";
    case DTL_TK_LT: return "'<'";
    case DTL_TK_LE: return "'<='";
    case DTL_TK_GT: return "'>'";
    case DTL_TK_GE: return "'>='";
    case DTL_TK_EQEQ: return "'=='";
    case DTL_TK_NE: return "'!='";
    default: return "a token";
    }
}

const char *dtl_lex_describe(dtl_arena *a, const dtl_token *t)
{
    switch (t->kind) {
    case 0:
        return "end of file";
    case DTL_TK_SEP:
        switch (t->sep) {
        case DTL_SEP_SEMI: return "';'";
        case DTL_SEP_BRACE: return "'}'";
        case DTL_SEP_EOF: return "end of file";
        default: return "newline";
        }
    case DTL_TK_IDENT:
        return dtl_arena_printf(a, "identifier '%s'",
                                lex_clip(a, t->text, strlen(t->text), 32));
    case DTL_TK_INTLIT:
        return dtl_arena_printf(a, "integer %s", lex_clip(a, t->text, strlen(t->text), 32));
    case DTL_TK_FLOATLIT:
        return dtl_arena_printf(a, "float %s", lex_clip(a, t->text, strlen(t->text), 32));
    case DTL_TK_STRING: {
        size_t n = strlen(t->text);
        if (n <= 26)
            return dtl_arena_printf(a, "string %s", t->text);
        return dtl_arena_printf(a, "string %s\"", lex_clip(a, t->text, n, 24));
    }
    case DTL_TK_ILLEGAL:
        return "an unexpected character";
    default:
        if (is_keyword(t->kind))
            return dtl_arena_printf(a, "keyword %s",
                                    t->kind == DTL_TK_DTYPE
                                        ? dtl_arena_printf(a, "'%s'", dtl_dtype_name(t->v.dtype))
                                        : dtl_lex_kind_name(t->kind));
        return dtl_lex_kind_name(t->kind);
    }
}
