/* runtime/json.h — a small JSON (RFC 8259) reader and writer, for file headers
 * (safetensors) and other small machine-written texts.
 *
 * Contract, reading: dtl_json_parse reads exactly one JSON value from text[0..len) (the text
 * need not be NUL-terminated; surrounding whitespace is allowed) into a tree allocated in the
 * caller's arena, which owns it. On malformed input it returns NULL and writes one line into
 * msg ("byte 17: expected ':' after an object key"). It never reads outside text[0..len),
 * limits nesting to DTL_JSON_MAX_DEPTH (so no input can exhaust the stack), requires strings
 * to be valid UTF-8, decodes every escape (\uXXXX with surrogate pairs included; lone
 * surrogates are errors) and keeps object members in file order, duplicates included.
 * Out of memory follows the arena's contract (its oom_jump).
 *
 * Contract, writing: a dtl_json_out is a growing, always NUL-terminated buffer in an arena;
 * dtl_json_out_string writes a quoted, escaped string. The caller assembles the structure.
 */
#ifndef DTL_JSON_H
#define DTL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"

enum { DTL_JSON_MAX_DEPTH = 64 };

typedef enum dtl_json_kind {
    DTL_JSON_NULL,
    DTL_JSON_BOOL,
    DTL_JSON_NUMBER,
    DTL_JSON_STRING,
    DTL_JSON_ARRAY,
    DTL_JSON_OBJECT,
} dtl_json_kind;

typedef struct dtl_json dtl_json;

typedef struct dtl_json_member {
    const char *key;   /* decoded, NUL-terminated; may contain NUL (from \u0000): see key_len */
    size_t key_len;
    dtl_json *value;
} dtl_json_member;

struct dtl_json {
    dtl_json_kind kind;
    bool boolean;              /* BOOL */
    const char *str;           /* STRING: decoded UTF-8; NUMBER: the literal as written */
    size_t str_len;            /* bytes of str, without the terminating NUL */
    size_t count;              /* ARRAY: elements; OBJECT: members */
    dtl_json **elems;          /* ARRAY */
    dtl_json_member *members;  /* OBJECT, in file order */
};

/* The value in text[0..len), or NULL with a message in msg[0..msg_size). */
dtl_json *dtl_json_parse(dtl_arena *a, const char *text, size_t len, char *msg,
                         size_t msg_size);

/* The first member of object obj named key (a C string), or NULL (also when obj is not an
 * object). */
const dtl_json *dtl_json_get(const dtl_json *obj, const char *key);

/* True when v is a number written as a plain non-negative integer (digits only: no sign,
 * fraction or exponent) that fits in a uint64_t; *out receives it. */
bool dtl_json_u64(const dtl_json *v, uint64_t *out);

/* True when s[0..n) is valid UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF). */
bool dtl_json_utf8_valid(const char *s, size_t n);

typedef struct dtl_json_out {
    dtl_arena *arena;
    char *buf;        /* NUL-terminated; moves as it grows */
    size_t len, cap;  /* cap excludes the byte for the NUL */
} dtl_json_out;

void dtl_json_out_init(dtl_json_out *o, dtl_arena *a);
void dtl_json_out_raw(dtl_json_out *o, const char *s, size_t n);
void dtl_json_out_cstr(dtl_json_out *o, const char *s);
/* s[0..n) as a JSON string: quotes, \" \\ and control characters escaped, other bytes
 * copied (the caller makes sure s is valid UTF-8: dtl_json_utf8_valid). */
void dtl_json_out_string(dtl_json_out *o, const char *s, size_t n);
void dtl_json_out_u64(dtl_json_out *o, uint64_t v);

#endif
