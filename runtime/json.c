/* runtime/json.c — JSON by recursive descent over a byte range.
 *
 * The parser is a plain recursive descent with one cursor (jp.pos) that is checked against
 * the end before every byte it looks at; nesting depth is counted so that no input can run
 * the stack out. A string is scanned twice: once to find its closing quote (so its decoded
 * form, never longer than its raw form, gets one arena allocation of the right size), once
 * to decode escapes and check UTF-8. Arrays and objects grow by doubling in the arena (old
 * storage is abandoned, at most doubling the memory used). Numbers are validated against
 * the RFC grammar and kept as text: callers convert what they need (dtl_json_u64).
 * Every error is the first one found, with its byte offset.
 */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct jp {
    dtl_arena *a;
    const unsigned char *s;
    size_t n, pos;
    int depth;
    char *msg;
    size_t msg_size;
} jp;

static dtl_json *jp_fail(jp *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static dtl_json *jp_fail(jp *p, const char *fmt, ...)
{
    if (p->msg_size == 0)
        return NULL;
    int k = snprintf(p->msg, p->msg_size, "byte %zu: ", p->pos);
    if (k >= 0 && (size_t)k < p->msg_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->msg + k, p->msg_size - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

/* The byte at the cursor, described for a message. */
static const char *jp_found(const jp *p, char buf[16])
{
    if (p->pos >= p->n)
        return "the end of the text";
    unsigned c = p->s[p->pos];
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, 16, "'%c'", (char)c);
    else
        snprintf(buf, 16, "byte 0x%02x", c);
    return buf;
}

static void jp_skip_ws(jp *p)
{
    while (p->pos < p->n) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp, min;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

bool dtl_json_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq_len(u + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

static size_t utf8_put(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Four hex digits at s[pos..pos+4) into *out. */
static bool jp_hex4(const jp *p, size_t pos, uint32_t *out)
{
    if (p->n - pos < 4)
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < 4; i++) {
        unsigned c = p->s[pos + i];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return false;
        v = v << 4 | d;
    }
    *out = v;
    return true;
}

/* A string at the cursor (on its opening quote): decoded into the arena. */
static bool jp_string(jp *p, const char **out, size_t *out_len)
{
    size_t start = ++p->pos, end = start;
    while (end < p->n && p->s[end] != '"')
        end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->n) {
        p->pos = start - 1;
        jp_fail(p, "unterminated string");
        return false;
    }
    char *buf = dtl_arena_alloc(p->a, end - start + 1);
    size_t len = 0;
    while (p->pos < end) {
        unsigned c = p->s[p->pos];
        if (c < 0x20) {
            jp_fail(p, "control character 0x%02x in a string (write it as \\u%04x)", c, c);
            return false;
        }
        if (c >= 0x80) {
            size_t k = utf8_seq_len(p->s + p->pos, end - p->pos);
            if (k == 0) {
                jp_fail(p, "invalid UTF-8 in a string");
                return false;
            }
            memcpy(buf + len, p->s + p->pos, k);
            len += k, p->pos += k;
            continue;
        }
        if (c != '\\') {
            buf[len++] = (char)c;
            p->pos++;
            continue;
        }
        unsigned e = p->s[p->pos + 1]; /* within the string: the scan above stepped over it */
        const char *simple = strchr("\"\\/bfnrt", (int)e);
        if (e && simple) {
            static const char decoded[] = "\"\\/\b\f\n\r\t";
            buf[len++] = decoded[simple - "\"\\/bfnrt"];
            p->pos += 2;
            continue;
        }
        if (e != 'u') {
            p->pos++;
            jp_fail(p, "invalid escape '\\%c' in a string", e >= 0x20 && e < 0x7f ? (char)e : '?');
            return false;
        }
        uint32_t cp;
        if (!jp_hex4(p, p->pos + 2, &cp) || p->pos + 6 > end) {
            jp_fail(p, "\\u must be followed by four hex digits");
            return false;
        }
        size_t esc = 6;
        if (cp >= 0xdc00 && cp <= 0xdfff) {
            jp_fail(p, "lone low surrogate \\u%04x in a string", (unsigned)cp);
            return false;
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
            uint32_t lo;
            if (p->pos + 12 > end || p->s[p->pos + 6] != '\\' || p->s[p->pos + 7] != 'u' ||
                !jp_hex4(p, p->pos + 8, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                jp_fail(p, "high surrogate \\u%04x not followed by a low surrogate",
                        (unsigned)cp);
                return false;
            }
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            esc = 12;
        }
        len += utf8_put(buf + len, cp);
        p->pos += esc;
    }
    buf[len] = '\0';
    p->pos = end + 1;
    *out = buf;
    *out_len = len;
    return true;
}

static bool jp_digits(jp *p)
{
    size_t start = p->pos;
    while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
        p->pos++;
    return p->pos > start;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static dtl_json *jp_number(jp *p)
{
    size_t start = p->pos;
    if (p->s[p->pos] == '-')
        p->pos++;
    if (p->pos < p->n && p->s[p->pos] == '0') {
        p->pos++;
    } else if (!jp_digits(p)) {
        return jp_fail(p, "expected a digit in a number");
    }
    if (p->pos < p->n && p->s[p->pos] == '.') {
        p->pos++;
        if (!jp_digits(p))
            return jp_fail(p, "expected a digit after '.' in a number");
    }
    if (p->pos < p->n && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->n && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (!jp_digits(p))
            return jp_fail(p, "expected a digit in a number's exponent");
    }
    dtl_json *v = dtl_arena_alloc(p->a, sizeof *v);
    v->kind = DTL_JSON_NUMBER;
    v->str = dtl_arena_strndup(p->a, (const char *)p->s + start, p->pos - start);
    v->str_len = p->pos - start;
    return v;
}

static dtl_json *jp_value(jp *p);

static dtl_json *jp_array(jp *p)
{
    dtl_json *v = dtl_arena_alloc(p->a, sizeof *v);
    v->kind = DTL_JSON_ARRAY;
    size_t cap = 0;
    p->pos++;
    jp_skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == ']') {
        p->pos++;
        return v;
    }
    for (;;) {
        dtl_json *e = jp_value(p);
        if (!e)
            return NULL;
        if (v->count == cap) {
            size_t ncap = cap ? 2 * cap : 4;
            v->elems = dtl_arena_grow(p->a, v->elems, v->count, ncap, sizeof *v->elems);
            cap = ncap;
        }
        v->elems[v->count++] = e;
        jp_skip_ws(p);
        char buf[16];
        if (p->pos < p->n && p->s[p->pos] == ',') {
            p->pos++;
        } else if (p->pos < p->n && p->s[p->pos] == ']') {
            p->pos++;
            return v;
        } else {
            return jp_fail(p, "expected ',' or ']' in an array, found %s", jp_found(p, buf));
        }
    }
}

static dtl_json *jp_object(jp *p)
{
    dtl_json *v = dtl_arena_alloc(p->a, sizeof *v);
    v->kind = DTL_JSON_OBJECT;
    size_t cap = 0;
    p->pos++;
    jp_skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == '}') {
        p->pos++;
        return v;
    }
    for (;;) {
        char buf[16];
        jp_skip_ws(p);
        if (p->pos >= p->n || p->s[p->pos] != '"')
            return jp_fail(p, "expected a string (a member's name) in an object, found %s",
                           jp_found(p, buf));
        dtl_json_member m;
        if (!jp_string(p, &m.key, &m.key_len))
            return NULL;
        jp_skip_ws(p);
        if (p->pos >= p->n || p->s[p->pos] != ':')
            return jp_fail(p, "expected ':' after a member's name, found %s", jp_found(p, buf));
        p->pos++;
        m.value = jp_value(p);
        if (!m.value)
            return NULL;
        if (v->count == cap) {
            size_t ncap = cap ? 2 * cap : 4;
            v->members = dtl_arena_grow(p->a, v->members, v->count, ncap, sizeof *v->members);
            cap = ncap;
        }
        v->members[v->count++] = m;
        jp_skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') {
            p->pos++;
        } else if (p->pos < p->n && p->s[p->pos] == '}') {
            p->pos++;
            return v;
        } else {
            return jp_fail(p, "expected ',' or '}' in an object, found %s", jp_found(p, buf));
        }
    }
}

static dtl_json *jp_literal(jp *p, const char *word, dtl_json_kind kind, bool b)
{
    size_t k = strlen(word);
    if (p->n - p->pos < k || memcmp(p->s + p->pos, word, k) != 0)
        return jp_fail(p, "expected a value");
    p->pos += k;
    dtl_json *v = dtl_arena_alloc(p->a, sizeof *v);
    v->kind = kind;
    v->boolean = b;
    return v;
}

static dtl_json *jp_value(jp *p)
{
    char buf[16];
    jp_skip_ws(p);
    if (p->pos >= p->n)
        return jp_fail(p, "expected a value, found the end of the text");
    unsigned c = p->s[p->pos];
    if (c == '{' || c == '[') {
        if (p->depth >= DTL_JSON_MAX_DEPTH)
            return jp_fail(p, "nested deeper than %d arrays and objects", DTL_JSON_MAX_DEPTH);
        p->depth++;
        dtl_json *v = c == '{' ? jp_object(p) : jp_array(p);
        p->depth--;
        return v;
    }
    if (c == '"') {
        dtl_json *v = dtl_arena_alloc(p->a, sizeof *v);
        v->kind = DTL_JSON_STRING;
        return jp_string(p, &v->str, &v->str_len) ? v : NULL;
    }
    if (c == '-' || (c >= '0' && c <= '9'))
        return jp_number(p);
    if (c == 't')
        return jp_literal(p, "true", DTL_JSON_BOOL, true);
    if (c == 'f')
        return jp_literal(p, "false", DTL_JSON_BOOL, false);
    if (c == 'n')
        return jp_literal(p, "null", DTL_JSON_NULL, false);
    return jp_fail(p, "expected a value, found %s", jp_found(p, buf));
}

dtl_json *dtl_json_parse(dtl_arena *a, const char *text, size_t len, char *msg,
                         size_t msg_size)
{
    jp p = {.a = a, .s = (const unsigned char *)text, .n = len, .msg = msg,
            .msg_size = msg_size};
    if (msg_size)
        msg[0] = '\0';
    dtl_json *v = jp_value(&p);
    if (!v)
        return NULL;
    jp_skip_ws(&p);
    if (p.pos < p.n) {
        char buf[16];
        return jp_fail(&p, "unexpected %s after the JSON value", jp_found(&p, buf));
    }
    return v;
}

const dtl_json *dtl_json_get(const dtl_json *obj, const char *key)
{
    if (!obj || obj->kind != DTL_JSON_OBJECT)
        return NULL;
    size_t k = strlen(key);
    for (size_t i = 0; i < obj->count; i++)
        if (obj->members[i].key_len == k && memcmp(obj->members[i].key, key, k) == 0)
            return obj->members[i].value;
    return NULL;
}

bool dtl_json_u64(const dtl_json *v, uint64_t *out)
{
    if (!v || v->kind != DTL_JSON_NUMBER || v->str_len == 0)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < v->str_len; i++) {
        unsigned c = (unsigned char)v->str[i];
        if (c < '0' || c > '9')
            return false;
        if (x > (UINT64_MAX - (c - '0')) / 10)
            return false;
        x = x * 10 + (c - '0');
    }
    *out = x;
    return true;
}

/* ---- writer ------------------------------------------------------------------------------ */

void dtl_json_out_init(dtl_json_out *o, dtl_arena *a)
{
    o->arena = a;
    o->cap = 256;
    o->buf = dtl_arena_alloc(a, o->cap + 1);
    o->len = 0;
}

void dtl_json_out_raw(dtl_json_out *o, const char *s, size_t n)
{
    if (n > o->cap - o->len) {
        size_t ncap = o->cap;
        while (n > ncap - o->len)
            ncap = ncap > SIZE_MAX / 4 ? SIZE_MAX - 1 : 2 * ncap;
        o->buf = dtl_arena_grow(o->arena, o->buf, o->len, ncap + 1, 1);
        o->cap = ncap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

void dtl_json_out_cstr(dtl_json_out *o, const char *s)
{
    dtl_json_out_raw(o, s, strlen(s));
}

void dtl_json_out_string(dtl_json_out *o, const char *s, size_t n)
{
    dtl_json_out_raw(o, "\"", 1);
    size_t run = 0; /* bytes of s[i - run .. i) still to copy as they are */
    for (size_t i = 0; i < n; i++) {
        unsigned c = (unsigned char)s[i];
        const char *esc = NULL;
        char ubuf[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                snprintf(ubuf, sizeof ubuf, "\\u%04x", c);
                esc = ubuf;
            }
        }
        if (!esc) {
            run++;
            continue;
        }
        dtl_json_out_raw(o, s + i - run, run);
        run = 0;
        dtl_json_out_cstr(o, esc);
    }
    dtl_json_out_raw(o, s + n - run, run);
    dtl_json_out_raw(o, "\"", 1);
}

void dtl_json_out_u64(dtl_json_out *o, uint64_t v)
{
    char buf[24];
    int k = snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    dtl_json_out_raw(o, buf, (size_t)k);
}
