/* lang/print.h — the canonical source form of an AST (the --emit=ast output).
 *
 * Contract: printing never fails and never changes the tree. The output is .dtl source in
 * the canonical layout (4-space indents, one declaration or statement per line, a blank line
 * between top-level declarations, single spaces around binary operators and '=', none
 * inside brackets). Comments and the original layout are not kept. Parentheses are printed
 * exactly where the tree has DTL_EXPR_PAREN nodes and literals with their spelling, so for
 * any tree the parser built, parsing the output gives the same tree again and printing it
 * gives the same text: print(parse(print(parse(f)))) == print(parse(f)).
 * Strings returned by dtl_print_expr and dtl_print_texpr live in the given arena.
 */
#ifndef DTL_PRINT_H
#define DTL_PRINT_H

#include <stdio.h>

#include "ast.h"

void dtl_print_file(FILE *out, const dtl_file *f);
char *dtl_print_expr(dtl_arena *a, const dtl_expr *e);     /* e.g. "fc1.w" */
char *dtl_print_texpr(dtl_arena *a, const dtl_texpr *t);   /* e.g. "f32[B, 784]" */
/* One declaration (and its body), indented by indent levels, ending in a newline. */
void dtl_print_decl(FILE *out, const dtl_decl *d, int indent);

#endif
