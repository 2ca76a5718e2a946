/* lang/lexer.h — the tokens of a .dtl source (generated from lang/lexer.re by re2c).
 *
 * Contract: a dtl_lexer reads one dtl_source (whose text is followed by a NUL) and hands out
 * tokens one at a time with dtl_lex_next, with the newline rule of lexer.re already applied:
 * newlines and ';' that end statements arrive as DTL_TK_SEP, every other newline is gone.
 * Token kinds are the DTL_TK_* codes of the Lemon-generated lang/parser.h; 0 is the end of
 * the file, returned again on every later call. Token text lives in the compilation's arena.
 *
 * Lexical errors are reported into ctx->diags when the token they belong to is handed out
 * (so diagnostics stay in source order even though the lexer looks one token ahead), unless
 * `quiet` is set then; such a token has `bad` set and the parser drops the statement
 * holding it. A character that
 * starts no token becomes DTL_TK_ILLEGAL, which no grammar rule accepts. The lexer keeps the
 * stack of open brackets and reports mismatched and unclosed ones. More than
 * DTL_AST_MAX_DEPTH open brackets is an error after which `abandoned` is set and only the
 * end of the file is returned. The lexer never fails otherwise; out of memory longjmps.
 */
#ifndef DTL_LEXER_H
#define DTL_LEXER_H

#include <stdbool.h>
#include <stdint.h>

#include "ast.h"
#include "ctx.h"

/* Why a DTL_TK_SEP was produced (for naming it in messages). */
typedef enum dtl_sep_kind {
    DTL_SEP_NEWLINE,   /* a newline that ends a statement; span: the newline */
    DTL_SEP_SEMI,      /* ';'; span: the ';' */
    DTL_SEP_BRACE,     /* implied before a '}'; span: the '}' */
    DTL_SEP_EOF,       /* implied at the end of the file; span: just after the last token */
} dtl_sep_kind;

typedef struct dtl_token {
    int kind;               /* DTL_TK_*; 0: end of file */
    dtl_span span;
    const char *text;       /* IDENT and literals: the spelling, NUL-terminated */
    union {
        int64_t ival;       /* INTLIT */
        double fval;        /* FLOATLIT */
        dtl_dtype dtype;    /* DTYPE (f32 … i64), and KW_BOOL (DTL_DTYPE_BOOL) */
        struct { const char *bytes; size_t len; } str;   /* STRING: decoded, NUL-terminated */
    } v;
    uint16_t depth;         /* open brackets around the token (for SEP: where it stands) */
    uint8_t sep;            /* SEP: a dtl_sep_kind */
    bool bad;               /* an error was reported for this token */
} dtl_token;

typedef struct dtl_lex_bracket {
    char ch;                /* '(' '[' '{' */
    uint32_t indent;        /* leading blanks of the opener's line */
    dtl_span span;
    bool reported;          /* an error already said it is unclosed */
} dtl_lex_bracket;

typedef struct dtl_lex_pending dtl_lex_pending;   /* a diagnostic waiting for its token */

typedef struct dtl_lexer {
    dtl_ctx *ctx;
    const dtl_source *src;
    const unsigned char *cur, *end, *line_start;
    uint32_t line;
    int prev;                       /* kind of the last token handed out; 0 at the start */
    dtl_span last_span;             /* span of the last token other than SEP and EOF */
    bool has_queued;                /* a token was read ahead of an implied SEP */
    dtl_token queued;
    dtl_lex_pending *pend_first, *pend_last;   /* diagnostics of the token being read */
    unsigned npend;
    dtl_lex_pending *qpend;         /* diagnostics of the queued token */
    dtl_lex_bracket stack[DTL_AST_MAX_DEPTH];
    unsigned depth;
    bool abandoned;                 /* brackets nested too deeply: only EOF from now on */
    bool quiet;                     /* drop diagnostics: the parser is skipping the rest of
                                       a statement that already has an error */
    bool eof_reported;
    /* The first '}' that began a line and was indented unlike its '{' line: when a '{' is
     * left open at the end, it is the likely place of the missing '}'. */
    bool has_suspect;
    dtl_span suspect_close, suspect_open;
    /* Scratch buffer for decoding string literals (arena; grows). */
    char *sbuf;
    size_t scap;
} dtl_lexer;

void dtl_lex_init(dtl_lexer *lx, dtl_ctx *ctx, const dtl_source *src);
/* The next token into *t; returns t->kind. */
int dtl_lex_next(dtl_lexer *lx, dtl_token *t);

/* Describes a token for "found …" in messages: "identifier 'x'", "integer 42", "'+'",
 * "keyword 'fn'", "newline", "end of file" (arena string). */
const char *dtl_lex_describe(dtl_arena *a, const dtl_token *t);
/* How a token kind is named in "expected …": "identifier", "')'", "'fn'", "newline". */
const char *dtl_lex_kind_name(int kind);

#endif
