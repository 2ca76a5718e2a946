/* lang/source.h — source files and places in them.
 *
 * Contract: a dtl_srcmgr owns the text of every file loaded in one compilation (in the
 * compilation's arena). Each file gets a small integer id; a dtl_span names a byte range of
 * one file together with the 1-based line and column of its first byte, so a diagnostic never
 * has to re-scan the text. Columns count bytes, not characters; a tab counts as one column.
 * File text is always followed by a NUL (the lexer's sentinel), which may also occur inside
 * the text: the length, not the NUL, ends a file.
 */
#ifndef DTL_SOURCE_H
#define DTL_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../runtime/arena.h"

typedef struct dtl_span {
    uint32_t file;   /* id in the srcmgr; 0 means "no place" (command line, builtins) */
    uint32_t line;   /* 1-based */
    uint32_t col;    /* 1-based, bytes */
    uint32_t off;    /* byte offset of the first byte */
    uint32_t len;    /* bytes covered; may be 0 */
} dtl_span;

typedef struct dtl_source {
    uint32_t id;
    const char *path;   /* as given (used in diagnostics) */
    const char *text;   /* len bytes followed by a NUL */
    size_t len;
} dtl_source;

typedef struct dtl_srcmgr {
    dtl_arena *arena;
    dtl_source **files;   /* files[id - 1] */
    uint32_t nfiles, cap;
} dtl_srcmgr;

/* Largest source file accepted: larger ones are refused with an I/O-style error. */
#define DTL_SOURCE_MAX_BYTES ((size_t)1 << 30)

void dtl_src_init(dtl_srcmgr *sm, dtl_arena *arena);
/* Adds text (copied) under path. Never fails (the arena handles out-of-memory). */
dtl_source *dtl_src_add(dtl_srcmgr *sm, const char *path, const char *text, size_t len);
/* Reads a file. On failure returns NULL and writes a one-line reason (strerror or
 * "file too large") into why[0..whylen). */
dtl_source *dtl_src_load(dtl_srcmgr *sm, const char *path, char *why, size_t whylen);
/* The same from an open stream (standard input), registered under name; f is not closed. */
dtl_source *dtl_src_read(dtl_srcmgr *sm, FILE *f, const char *name, char *why, size_t whylen);
dtl_source *dtl_src_get(const dtl_srcmgr *sm, uint32_t id);   /* NULL for 0 or unknown */
/* The whole line holding byte offset off (without its newline): *start and *len. */
void dtl_src_line(const dtl_source *s, uint32_t off, size_t *start, size_t *len);

/* The span from the start of a to the end of b (same file; b after a). */
dtl_span dtl_span_join(dtl_span a, dtl_span b);

#endif
