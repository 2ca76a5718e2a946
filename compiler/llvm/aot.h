/* compiler/llvm/aot.h — ahead-of-time compilation: `dtlc compile FILE -o model.o|model.so`.
 *
 * Contract:
 *  - dtl_aot_compile takes a lowered train block (compiler/lower.h: its infer and step
 *    graphs, batch bound) and writes three things: the native code of both graphs through
 *    the LLVM backend's module builder (compiler/llvm/llvm.h) and an LLVM TargetMachine for
 *    this host (its CPU and features, position-independent code), as an ELF object (.o) or
 *    a shared library (.so, linked by running the system C compiler, `$CC` or `cc`, with
 *    `-shared` against libdtlrt.a); and a C header (next to the output, the same name with
 *    .h) declaring the model's API, `<name>_create`, `_load`, `_save`, `_set_param`,
 *    `_get_param`, `_infer`, `_train_step`, `_set_total_steps`, `_error`, `_free`, where
 *    <name> is the output's base name made a C identifier ("mnist_mlp.so" -> mnist_mlp).
 *  - The object defines those functions (small wrappers calling runtime/model.h with the
 *    model's descriptor), the descriptor `<name>_desc`, the constant block, and the two
 *    entries `<name>_dtl_infer_step` and `<name>_dtl_train_step` (hidden). It refers only
 *    to symbols of libdtlrt.a, libm and libc: a program links it with
 *    `cc main.c model.o -L$(libdir) -ldtlrt -lm -lpthread` (a .so already holds what it needs
 *    of libdtlrt: `cc main.c ./model.so -lm`).
 *  - Outputs are written to a temporary file beside each and renamed: a failure leaves no
 *    half-written file, and the header is written only after the code.
 * Errors: values (dtl_err), nothing printed: a graph the code generator cannot compile
 * (DTL_ERR_USAGE, its message), the C compiler failing (its status and the command line;
 * its own messages go to stderr), I/O.
 */
#ifndef DTL_AOT_H
#define DTL_AOT_H

#include <stdbool.h>
#include <stddef.h>

#include "../../runtime/err.h"
#include "../lower.h"

typedef enum dtl_aot_kind { DTL_AOT_OBJECT, DTL_AOT_SHARED } dtl_aot_kind;

typedef struct dtl_aot_opts {
    dtl_aot_kind kind;
    const char *output;      /* model.o, model.so */
    const char *source;      /* the .dtl file (its base name goes into the descriptor) */
    const char *model;       /* the dtl model's name ("MLP") */
    const char *cc;          /* the C compiler that links a .so; NULL: $CC, else "cc" */
    const char *rtlib;       /* the libdtlrt.a a .so is linked with; NULL: dtl_aot_rtlib() */
} dtl_aot_opts;

/* What an output's name asks for: ".o" an object, ".so" a shared library (false: neither). */
bool dtl_aot_kind_of(const char *output, dtl_aot_kind *kind);

/* The header's path for output (malloc'd): its name with ".o"/".so" replaced by ".h" (else
 * ".h" appended). NULL when out of memory. */
char *dtl_aot_header_path(const char *output);

/* The C prefix for output (malloc'd): its base name without extension, every character
 * that cannot be in a C identifier replaced by '_', '_' prepended to a leading digit. */
char *dtl_aot_name(const char *output);

/* The libdtlrt.a to link a .so with: $DTL_LIBDTLRT when set; the build tree's when this
 * program runs from the build tree; else the installed one ($(libdir)/libdtlrt.a). */
const char *dtl_aot_rtlib(void);

bool dtl_aot_compile(const dtl_lowered *L, const dtl_aot_opts *o, dtl_err *err);

#endif
