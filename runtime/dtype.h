/* runtime/dtype.h — the element types of tensors.
 * Contract: a closed enum with a name and a byte size for each value; pure functions. */
#ifndef DTL_DTYPE_H
#define DTL_DTYPE_H

#include <stdbool.h>
#include <stddef.h>

typedef enum dtl_dtype {
    DTL_DTYPE_F32,
    DTL_DTYPE_F64,
    DTL_DTYPE_F16,
    DTL_DTYPE_BF16,
    DTL_DTYPE_I32,
    DTL_DTYPE_I64,
    DTL_DTYPE_BOOL,
    DTL_DTYPE_COUNT
} dtl_dtype;

const char *dtl_dtype_name(dtl_dtype t);      /* "f32", … */
size_t dtl_dtype_size(dtl_dtype t);           /* bytes per element */
bool dtl_dtype_is_float(dtl_dtype t);
bool dtl_dtype_is_int(dtl_dtype t);
/* The dtype named by s[0..n), or DTL_DTYPE_COUNT when s names none. */
dtl_dtype dtl_dtype_parse(const char *s, size_t n);

#endif
