/* runtime/err.h — errors as values for the runtime (libdtlrt).
 *
 * Contract: a runtime function that can fail takes a dtl_err *err as its last argument and
 * returns false (or NULL) on failure after filling it with one line that names the thing
 * and the problem: "train-images-idx3-ubyte.gz: truncated: expected 47040016 bytes, found
 * 1000". err may not be NULL. On success err is left untouched. The runtime never prints
 * and never exits on user input; the caller (dtlc, or an embedding program) reports.
 */
#ifndef DTL_ERR_H
#define DTL_ERR_H

#include <stdbool.h>

typedef enum dtl_err_kind {
    DTL_ERR_NONE,
    DTL_ERR_IO,        /* a file could not be opened, read or written (errno-based) */
    DTL_ERR_FORMAT,    /* the contents are malformed: magic, truncation, a bad cell … */
    DTL_ERR_MISMATCH,  /* well-formed but not what was asked for: names, shapes, counts */
    DTL_ERR_NOMEM,
    DTL_ERR_USAGE,     /* a wrong argument from the caller */
    DTL_ERR_INTERNAL,  /* a bug in dtl itself (a pass broke the graph): not the user's fault */
} dtl_err_kind;

typedef struct dtl_err {
    dtl_err_kind kind;
    char msg[512];
} dtl_err;

/* Fills err (printf-style) and returns false, so `return dtl_err_set(err, …);` reads well. */
bool dtl_err_set(dtl_err *err, dtl_err_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
