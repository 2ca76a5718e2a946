/* runtime/safetensors.h — weights and checkpoints in the safetensors format.
 *
 * The format: an 8-byte little-endian u64 N; N bytes of UTF-8 JSON, an object that maps each
 * tensor's name to {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]} (byte
 * offsets into the data buffer that follows the header) and may hold "__metadata__", an
 * object of strings; then the data buffer, little-endian, row-major. Every byte of the
 * buffer belongs to exactly one tensor.
 *
 * Writing: dtl_st_write puts "__metadata__" first (when there is any), then the tensors in
 * the order given, their data contiguous in that order, and pads the header with spaces so
 * that the data starts at a multiple of 8 bytes. The file is replaced atomically and durably
 * (runtime/fsutil.h): whenever the writing process dies, path holds the previous file or
 * the complete new one. Bad arguments (duplicate or invalid names, nbytes not matching
 * shape and dtype, rank above DTL_ST_MAX_RANK …) are DTL_ERR_USAGE and write nothing.
 *
 * Reading: dtl_st_read loads a whole file and checks all of it before returning: header
 * length, JSON, every field's presence and type, dtypes, shapes (no overflow), that each
 * tensor's bytes match its shape and dtype, that tensors neither overlap nor leave gaps and
 * cover the buffer exactly, unique names, and the file's length. Any fault is DTL_ERR_FORMAT
 * (DTL_ERR_IO for open/read failures) with a message that starts with the path and says what
 * is wrong: "ckpt.safetensors: truncated: header says 1234 bytes of data, file has 1000".
 * No input crashes it. Memory: the data's size, plus the parsed header (a few times the
 * header's size; up to ~50x for a pathological header of tiny JSON values; the header itself
 * is limited to 100 MB), plus aligned copies of unaligned tensors. Out of memory is
 * DTL_ERR_NOMEM.
 *
 * A dtl_st_file owns everything it hands out (tensors, names, shapes, data, metadata);
 * pointers stay valid until dtl_st_close. Tensors keep the file's order. Each tensor's data
 * is aligned to its element size (copied when the file's layout leaves it unaligned).
 * Little-endian hosts only (data is used in place).
 */
#ifndef DTL_SAFETENSORS_H
#define DTL_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "err.h"

/* The file's element types. Not dtl_dtype itself because safetensors also has U8 (raw bytes:
 * images, opaque state); dtl_st_dtype_from/_to convert. */
typedef enum dtl_st_dtype {
    DTL_ST_F32,
    DTL_ST_F64,
    DTL_ST_F16,
    DTL_ST_BF16,
    DTL_ST_I32,
    DTL_ST_I64,
    DTL_ST_U8,
    DTL_ST_BOOL,
    DTL_ST_DTYPE_COUNT
} dtl_st_dtype;

const char *dtl_st_dtype_name(dtl_st_dtype t); /* as in the file: "F32", "BF16", "U8" … */
size_t dtl_st_dtype_size(dtl_st_dtype t);      /* bytes per element; 0 when t is invalid */
dtl_st_dtype dtl_st_dtype_from(dtl_dtype t);   /* every dtl_dtype has one */
bool dtl_st_dtype_to(dtl_st_dtype t, dtl_dtype *out); /* false for U8 (no dtl_dtype) */

enum { DTL_ST_MAX_RANK = 8 };

typedef struct dtl_st_tensor {
    const char *name;             /* UTF-8, no NUL inside; not "__metadata__" */
    dtl_st_dtype dtype;
    uint32_t rank;                /* 0 for a scalar */
    int64_t shape[DTL_ST_MAX_RANK];
    const void *data;             /* may be NULL when nbytes == 0 */
    size_t nbytes;                /* product(shape) * dtl_st_dtype_size(dtype) */
} dtl_st_tensor;

typedef struct dtl_st_meta {
    const char *key, *value;      /* UTF-8, no NUL inside */
} dtl_st_meta;

/* Writes n tensors and nmeta metadata pairs to path (atomically, durably). */
bool dtl_st_write(const char *path, const dtl_st_tensor *t, size_t n, const dtl_st_meta *meta,
                  size_t nmeta, dtl_err *err);

typedef struct dtl_st_file dtl_st_file;

/* The file at path, checked; NULL with err filled when it cannot be read or is malformed. */
dtl_st_file *dtl_st_read(const char *path, dtl_err *err);
size_t dtl_st_count(const dtl_st_file *f);
const dtl_st_tensor *dtl_st_get(const dtl_st_file *f, size_t i); /* i < count, file order */
const dtl_st_tensor *dtl_st_find(const dtl_st_file *f, const char *name); /* NULL: absent */
size_t dtl_st_meta_count(const dtl_st_file *f);
const dtl_st_meta *dtl_st_meta_at(const dtl_st_file *f, size_t i); /* file order */
const char *dtl_st_meta_get(const dtl_st_file *f, const char *key);  /* NULL: absent */
void dtl_st_close(dtl_st_file *f); /* NULL is fine */

#endif
