#include "err.h"

#include <stdarg.h>
#include <stdio.h>

bool dtl_err_set(dtl_err *err, dtl_err_kind kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err->kind = kind;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return false;
}
