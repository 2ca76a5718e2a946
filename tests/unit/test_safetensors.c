/* tests/unit/test_safetensors.c — runtime/safetensors.c, json.c, fsutil.c: round trips of
 * every dtype with metadata, the exact bytes of small files (counted by hand), a table of
 * corrupted files each with its message, random corruption and every truncation (no crash,
 * always a message naming the file), out-of-memory paths (DTL_FAIL_ALLOC), writer argument
 * checks, and failing writes that must leave the previous file and no temporary behind. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../runtime/philox.h"
#include "../../runtime/safetensors.h"
#include "unit.h"

static char tmpdir[256];

/* tmpdir/name; each call gets its own buffer, valid to the end of the test. */
static const char *tpath(const char *name)
{
    static char buf[32][512];
    static int used;
    if (used == 32) {
        fprintf(stderr, "tpath: too many paths\n");
        exit(99);
    }
    snprintf(buf[used], sizeof buf[used], "%s/%s", tmpdir, name);
    return buf[used++];
}

/* Prints the message when it lacks the substring, so a failing case explains itself. */
static int has(const char *msg, const char *sub)
{
    if (strstr(msg, sub))
        return 1;
    fprintf(stderr, "  message: %s\n  lacks:   %s\n", msg, sub);
    return 0;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(99);
    }
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long k = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)k + 1);
    *n = fread(p, 1, (size_t)k, f);
    fclose(f);
    return p;
}

#define HLEN UINT64_MAX /* write_st: the header's own length */

/* An 8-byte length (len, or strlen(header) when len is HLEN), the header, dlen bytes 0xab. */
static void write_st(const char *path, const char *header, uint64_t len, size_t dlen)
{
    size_t hl = strlen(header);
    uint64_t L = len == HLEN ? hl : len;
    size_t n = 8 + hl + dlen;
    unsigned char *p = malloc(n);
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(L >> (8 * i));
    memcpy(p + 8, header, hl);
    memset(p + 8 + hl, 0xab, dlen);
    write_bytes(path, p, n);
    free(p);
}

/* Files in tmpdir whose name contains ".tmp-". */
static int count_temps(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp-"))
            n++;
    if (d)
        closedir(d);
    return n;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    if (d)
        closedir(d);
    return n;
}

/* ---- round trip ------------------------------------------------------------------------- */

typedef struct spec {
    const char *name;
    dtl_st_dtype dtype;
    uint32_t rank;
    int64_t shape[4];
} spec;

static size_t spec_bytes(const spec *s)
{
    size_t n = dtl_st_dtype_size(s->dtype);
    for (uint32_t d = 0; d < s->rank; d++)
        n *= (size_t)s->shape[d];
    return n;
}

static void test_round_trip(void)
{
    /* Two or three tensors of every dtype: scalars, empty ones, odd sizes that leave the
     * next tensor unaligned in the file (the reader must hand out aligned data anyway). */
    static const spec specs[] = {
        {"u8.odd", DTL_ST_U8, 1, {3}},
        {"f64.after_odd", DTL_ST_F64, 2, {2, 3}},
        {"f32.matrix", DTL_ST_F32, 2, {4, 5}},
        {"f32.scalar", DTL_ST_F32, 0, {0}},
        {"bool.mask", DTL_ST_BOOL, 3, {2, 1, 3}},
        {"f16.vec", DTL_ST_F16, 1, {7}},
        {"i64.after_f16", DTL_ST_I64, 1, {3}},
        {"bf16.vec", DTL_ST_BF16, 2, {3, 3}},
        {"i32.empty", DTL_ST_I32, 2, {0, 5}},
        {"i32.cube", DTL_ST_I32, 3, {2, 3, 4}},
        {"f64.scalar", DTL_ST_F64, 0, {0}},
        {"i64.empty", DTL_ST_I64, 1, {0}},
        {"u8.bytes", DTL_ST_U8, 2, {16, 2}},
        {"f16.scalar", DTL_ST_F16, 0, {0}},
        {"bool.one", DTL_ST_BOOL, 1, {1}},
        {"bf16.one", DTL_ST_BF16, 4, {1, 1, 1, 1}},
        {"layer.0/w \"quoted\" \\ é 日本", DTL_ST_F32, 1, {2}},
    };
    enum { N = sizeof specs / sizeof specs[0] };
    dtl_st_tensor t[N];
    unsigned char *bufs[N];
    dtl_rng r;
    dtl_rng_init(&r, 42, dtl_rng_stream_id("test_safetensors", 0));
    for (size_t i = 0; i < N; i++) {
        size_t nb = spec_bytes(&specs[i]);
        bufs[i] = malloc(nb + 1);
        for (size_t k = 0; k < nb; k++)
            bufs[i][k] = specs[i].dtype == DTL_ST_BOOL ? (unsigned char)(dtl_rng_u32(&r) & 1)
                                                       : (unsigned char)dtl_rng_u32(&r);
        t[i] = (dtl_st_tensor){.name = specs[i].name, .dtype = specs[i].dtype,
                               .rank = specs[i].rank, .data = bufs[i], .nbytes = nb};
        memcpy(t[i].shape, specs[i].shape, sizeof specs[i].shape);
    }
    int seen[DTL_ST_DTYPE_COUNT] = {0};
    for (size_t i = 0; i < N; i++)
        seen[specs[i].dtype]++;
    for (int d = 0; d < DTL_ST_DTYPE_COUNT; d++)
        CHECK(seen[d] >= 2);

    static const dtl_st_meta meta[] = {
        {"format", "pt"},
        {"iteration", "1234"},
        {"note", "quote \" backslash \\ newline \n tab \t ctrl \x01 é 日本 😀"},
        {"", "empty key"},
        {"empty value", ""},
    };
    enum { NM = sizeof meta / sizeof meta[0] };
    const char *path = tpath("round.safetensors");
    dtl_err err = {0};
    CHECK(dtl_st_write(path, t, N, meta, NM, &err));
    CHECK(count_temps(tmpdir) == 0);

    /* The layout, checked on the raw bytes: data starts 8-aligned, file size adds up. */
    size_t fsize;
    unsigned char *raw = read_bytes(path, &fsize);
    CHECK(raw != NULL);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)raw[i] << (8 * i);
    CHECK((8 + hlen) % 8 == 0);
    size_t total = 0;
    for (size_t i = 0; i < N; i++)
        total += t[i].nbytes;
    CHECK(fsize == 8 + hlen + total);
    CHECK(raw[8] == '{');
    free(raw);

    dtl_st_file *f = dtl_st_read(path, &err);
    CHECK(f != NULL);
    if (!f) {
        fprintf(stderr, "  %s\n", err.msg);
        return;
    }
    CHECK(dtl_st_count(f) == N);
    for (size_t i = 0; i < N && i < dtl_st_count(f); i++) {
        const dtl_st_tensor *g = dtl_st_get(f, i);
        CHECK_STR(g->name, t[i].name);
        CHECK(g->dtype == t[i].dtype);
        CHECK(g->rank == t[i].rank);
        CHECK(memcmp(g->shape, t[i].shape, t[i].rank * sizeof(int64_t)) == 0);
        CHECK(g->nbytes == t[i].nbytes);
        CHECK(g->data != NULL);
        CHECK(g->nbytes == 0 || memcmp(g->data, t[i].data, g->nbytes) == 0);
        CHECK((uintptr_t)g->data % dtl_st_dtype_size(g->dtype) == 0);
        CHECK(dtl_st_find(f, t[i].name) == g);
    }
    CHECK(dtl_st_get(f, N) == NULL);
    CHECK(dtl_st_find(f, "nope") == NULL);
    CHECK(dtl_st_find(f, "") == NULL);
    CHECK(dtl_st_meta_count(f) == NM);
    for (size_t i = 0; i < NM; i++) {
        CHECK_STR(dtl_st_meta_get(f, meta[i].key), meta[i].value);
        CHECK_STR(dtl_st_meta_at(f, i)->key, meta[i].key);
    }
    CHECK(dtl_st_meta_get(f, "absent") == NULL);
    CHECK(dtl_st_meta_at(f, NM) == NULL);
    dtl_st_close(f);
    dtl_st_close(NULL);

    /* Rewriting the same path replaces it (fewer tensors, no metadata) and leaves no
     * temporary behind. */
    CHECK(dtl_st_write(path, t + 2, 1, NULL, 0, &err));
    f = dtl_st_read(path, &err);
    CHECK(f && dtl_st_count(f) == 1 && dtl_st_meta_count(f) == 0);
    if (f)
        CHECK_STR(dtl_st_get(f, 0)->name, "f32.matrix");
    dtl_st_close(f);
    CHECK(count_temps(tmpdir) == 0);

    /* No tensors at all. */
    CHECK(dtl_st_write(path, NULL, 0, NULL, 0, &err));
    f = dtl_st_read(path, &err);
    CHECK(f && dtl_st_count(f) == 0 && dtl_st_find(f, "x") == NULL);
    dtl_st_close(f);

    for (size_t i = 0; i < N; i++)
        free(bufs[i]);
}

/* ---- exact bytes ---------------------------------------------------------------------- */

static void check_file_bytes(const char *path, const unsigned char *want, size_t n)
{
    size_t got_n;
    unsigned char *got = read_bytes(path, &got_n);
    CHECK(got != NULL && got_n == n);
    if (got && got_n == n) {
        CHECK(memcmp(got, want, n) == 0);
        for (size_t i = 0; i < n; i++)
            if (got[i] != want[i]) {
                fprintf(stderr, "  first difference at byte %zu: got 0x%02x, want 0x%02x\n", i,
                        got[i], want[i]);
                break;
            }
    }
    free(got);
}

static void test_exact_bytes(void)
{
    dtl_err err = {0};
    const char *path = tpath("exact.safetensors");

    /* One F32 [2] {1, 2} with metadata {"k": "v"}. The header, counted by hand:
     *   {"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}
     *   1 + 14 + 1 + 9 + 1 + 3 + 1 + 1 + 7+1+5 + 1 + 7+1+3 + 1 + 14+1+5 + 1 + 1 = 79 bytes;
     * 8 + 79 = 87, so one space makes the data start at 88: N = 80 = 0x50; file 96 bytes. */
    const char *json1 = "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
                        "\"data_offsets\":[0,8]}}";
    CHECK(strlen(json1) == 79);
    float v1[2] = {1.0f, 2.0f};
    dtl_st_tensor t1 = {.name = "a", .dtype = DTL_ST_F32, .rank = 1, .shape = {2},
                        .data = v1, .nbytes = 8};
    dtl_st_meta m1 = {"k", "v"};
    CHECK(dtl_st_write(path, &t1, 1, &m1, 1, &err));
    unsigned char want1[96] = {0x50, 0, 0, 0, 0, 0, 0, 0};
    memcpy(want1 + 8, json1, 79);
    want1[87] = ' ';
    static const unsigned char floats[8] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40};
    memcpy(want1 + 88, floats, 8);
    check_file_bytes(path, want1, sizeof want1);

    /* A name that needs escaping, U8 [3] {1, 2, 3}, no metadata:
     *   {"x\"y\n":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}
     *   1 + 8 + 1 + 1 + 7+1+4 + 1 + 7+1+3 + 1 + 14+1+5 + 1 + 1 = 58 bytes;
     * 8 + 58 = 66, six spaces reach 72: N = 64 = 0x40; file 8 + 64 + 3 = 75 bytes. */
    const char *json2 = "{\"x\\\"y\\n\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}";
    CHECK(strlen(json2) == 58);
    unsigned char v2[3] = {1, 2, 3};
    dtl_st_tensor t2 = {.name = "x\"y\n", .dtype = DTL_ST_U8, .rank = 1, .shape = {3},
                        .data = v2, .nbytes = 3};
    CHECK(dtl_st_write(path, &t2, 1, NULL, 0, &err));
    unsigned char want2[75] = {0x40, 0, 0, 0, 0, 0, 0, 0};
    memcpy(want2 + 8, json2, 58);
    memset(want2 + 66, ' ', 6);
    memcpy(want2 + 72, v2, 3);
    check_file_bytes(path, want2, sizeof want2);

    /* A scalar and an empty tensor: "shape":[] and equal offsets. */
    float s = 3.5f;
    dtl_st_tensor t3[2] = {
        {.name = "s", .dtype = DTL_ST_F32, .rank = 0, .data = &s, .nbytes = 4},
        {.name = "e", .dtype = DTL_ST_I64, .rank = 2, .shape = {0, 4}, .data = NULL, .nbytes = 0},
    };
    CHECK(dtl_st_write(path, t3, 2, NULL, 0, &err));
    size_t n;
    unsigned char *got = read_bytes(path, &n);
    const char *json3 = "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                        "\"e\":{\"dtype\":\"I64\",\"shape\":[0,4],\"data_offsets\":[4,4]}}";
    CHECK(got && n > 8 + strlen(json3) && memcmp(got + 8, json3, strlen(json3)) == 0);
    free(got);
}

/* ---- corrupted files ------------------------------------------------------------------- */

#define T_A "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"

static const struct bad {
    const char *header;
    size_t data_len;
    const char *want;
} bad_files[] = {
    {"{", 0, "header is not valid JSON: byte 1: expected a string"},
    {"", 0, "header is not valid JSON: byte 0: expected a value, found the end of the text"},
    {"[]", 0, "header is not a JSON object"},
    {"\"str\"", 0, "header is not a JSON object"},
    {"{} x", 0, "header is not valid JSON: byte 3: unexpected 'x' after the JSON value"},
    {"{" T_A ",}", 4, "expected a string (a member's name) in an object, found '}'"},
    {"{\"a\" 1}", 0, "expected ':' after a member's name"},
    {"{\"a\":[1 2]}", 0, "expected ',' or ']' in an array"},
    {"{\"a\":tru}", 0, "expected a value"},
    {"{\"a\":-}", 0, "expected a digit in a number"},
    {"{\"a\":1.}", 0, "expected a digit after '.'"},
    {"{\"a\":1e}", 0, "expected a digit in a number's exponent"},
    {"{\"a", 0, "unterminated string"},
    {"{\"a\\q\":1}", 0, "invalid escape '\\q'"},
    {"{\"\\u12g4\":1}", 0, "\\u must be followed by four hex digits"},
    {"{\"\\ud800\":1}", 0, "high surrogate \\ud800 not followed by a low surrogate"},
    {"{\"\\ud800\\u0041\":1}", 0, "high surrogate \\ud800 not followed by a low surrogate"},
    {"{\"\\udc00\":1}", 0, "lone low surrogate \\udc00"},
    {"{\"\xff\":1}", 0, "invalid UTF-8"},
    {"{\"\xc0\xaf\":1}", 0, "invalid UTF-8"},     /* overlong '/' */
    {"{\"\xed\xa0\x80\":1}", 0, "invalid UTF-8"}, /* an encoded surrogate */
    {"{\"\xe6\x97\":1}", 0, "invalid UTF-8"},     /* cut short */
    {"{\"a\x01\":1}", 0, "control character 0x01 in a string"},
    {"{\"a\":5}", 0, "tensor 'a': entry is not a JSON object"},
    {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': missing \"dtype\""},
    {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'a': missing \"shape\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'a': missing \"data_offsets\""},
    {"{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     "tensor 'a': \"dtype\" is not a string"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4,
     "tensor 'a': \"shape\" is not an array"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
     "tensor 'a': \"shape\" element 0 is not a non-negative integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1.5],\"data_offsets\":[0,4]}}", 4,
     "tensor 'a': \"shape\" element 1 is not a non-negative integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1e0],\"data_offsets\":[0,4]}}", 4,
     "\"shape\" element 0 is not a non-negative integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616],\"data_offsets\":[0,4]}}", 4,
     "\"shape\" element 0 is not a non-negative integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[9223372036854775808],\"data_offsets\":[0,4]}}", 4,
     "\"shape\" element 0 is not a non-negative integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,4]}}", 4,
     "\"shape\" element 0 is not a non-negative integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
     "tensor 'a': \"data_offsets\" is not [begin, end]"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4,
     "tensor 'a': \"data_offsets\" is not [begin, end]"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4,
     "tensor 'a': \"data_offsets\" is not [begin, end]"},
    {"{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
     "tensor 'a': unknown dtype \"F8_E4M3\""},
    {"{\"a\":{\"dtype\":\"F32\\u0000\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     "tensor 'a': unknown dtype \"F32?\""},
    {"{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     "unknown dtype \"f32\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[0,4]}}", 4,
     "tensor 'a': shape [4294967296, 4294967296, 2] is too large (its byte count overflows)"},
    {"{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,4]}}", 4,
     "is too large (its byte count overflows)"},
    {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
     "tensor 'a': rank 9 is more than 8"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20,
     "tensor 'a': data_offsets [0, 20] hold 20 bytes, but F32 [2, 3] needs 24"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,0]}}", 0,
     "data_offsets [0, 0] hold 0 bytes, but F32 [] needs 4"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 4,
     "tensor 'a': data_offsets [8, 4] end before they begin"},
    {"{" T_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}", 10,
     "data of tensors 'a' [0, 4] and 'b' [2, 10] overlap"},
    {"{" T_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     "data of tensors 'a' [0, 4] and 'b' [0, 4] overlap"},
    {"{" T_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12,
     "bytes [4, 8) of the data belong to no tensor (the gap before tensor 'b')"},
    {"{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
     "bytes [0, 4) of the data belong to no tensor (the gap before tensor 'b')"},
    {"{" T_A "}", 8,
     "4 bytes after the last tensor's data belong to no tensor (header says 4 bytes of data, "
     "file has 8)"},
    {"{}", 3, "3 bytes after the last tensor's data belong to no tensor"},
    {"{" T_A "," T_A "}", 4, "tensor name 'a' appears twice"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]}}", 20,
     "truncated: header says 24 bytes of data, file has 20"},
    {"{" T_A ",\"b\":{\"dtype\":\"I64\",\"shape\":[154],\"data_offsets\":[4,1236]}}", 1000,
     "truncated: header says 1236 bytes of data, file has 1000"},
    {"{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
     "tensor name 'a?b' contains a NUL character"},
    {"{\"__metadata__\":{\"k\":1}}", 0, "metadata 'k' is not a string"},
    {"{\"__metadata__\":{\"k\":[\"v\"]}}", 0, "metadata 'k' is not a string"},
    {"{\"__metadata__\":[]}", 0, "\"__metadata__\" is not a JSON object"},
    {"{\"__metadata__\":\"x\"}", 0, "\"__metadata__\" is not a JSON object"},
    {"{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0, "metadata key 'k' appears twice"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "\"__metadata__\" appears twice"},
    {"{\"__metadata__\":{\"k\\u0000\":\"v\"}}", 0, "metadata key 'k?' contains a NUL"},
    {"{\"__metadata__\":{\"k\":\"v\\u0000\"}}", 0, "metadata 'k' contains a NUL character"},
    {"{\"\\u0001\\u007fname\\nthat is long, long, long, long, long, long, long, long\":5}", 0,
     "tensor '??name?that is long, long, long, long, long, lon...': entry is not"},
};

static void test_bad_files(void)
{
    const char *path = tpath("bad.safetensors");
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
        const struct bad *b = &bad_files[i];
        write_st(path, b->header, HLEN, b->data_len);
        dtl_err err = {0};
        dtl_st_file *f = dtl_st_read(path, &err);
        CHECK(f == NULL);
        dtl_st_close(f);
        CHECK(err.kind == DTL_ERR_FORMAT);
        CHECK(starts_with(err.msg, path));
        if (!has(err.msg, b->want))
            fprintf(stderr, "  (bad_files[%zu])\n", i);
        check_count++;
        if (!strstr(err.msg, b->want))
            check_failures++;
    }

    /* Nesting deeper than the parser allows (inside metadata, where nesting is otherwise
     * legal JSON): an error, not a stack overflow. */
    char deep[4096] = "{\"__metadata__\":";
    for (int i = 0; i < 1000; i++)
        strcat(deep, "[");
    write_st(path, deep, HLEN, 0);
    dtl_err err = {0};
    CHECK(dtl_st_read(path, &err) == NULL);
    CHECK(has(err.msg, "nested deeper than 64 arrays and objects"));

    /* The length prefix and the file's size. */
    write_bytes(path, "", 0);
    CHECK(dtl_st_read(path, &err) == NULL);
    CHECK(starts_with(err.msg, path));
    CHECK(has(err.msg, "file is 0 bytes, shorter than the 8-byte header length"));
    write_bytes(path, "\x02\0\0\0\0", 5);
    CHECK(dtl_st_read(path, &err) == NULL);
    CHECK(has(err.msg, "file is 5 bytes, shorter than the 8-byte header length"));
    write_st(path, "{}", (uint64_t)1 << 40, 0);
    CHECK(dtl_st_read(path, &err) == NULL);
    CHECK(has(err.msg, "header length 1099511627776 is absurd (more than 100 MB)"));
    write_st(path, "{}", UINT64_MAX - 1, 0); /* also absurd; no overflow in the checks */
    CHECK(dtl_st_read(path, &err) == NULL);
    CHECK(has(err.msg, "header length 18446744073709551614 is absurd"));
    write_st(path, "{\"a\":1}", 1000, 35);
    CHECK(dtl_st_read(path, &err) == NULL);
    CHECK(err.kind == DTL_ERR_FORMAT);
    CHECK(has(err.msg, "truncated: header length 1000 is larger than the rest of the file "
                       "(42 bytes)"));

    /* Not files. */
    const char *missing = tpath("no-such-file.safetensors");
    CHECK(dtl_st_read(missing, &err) == NULL);
    CHECK(err.kind == DTL_ERR_IO);
    CHECK(starts_with(err.msg, missing));
    CHECK(has(err.msg, "cannot open: No such file or directory"));
    CHECK(dtl_st_read(tmpdir, &err) == NULL);
    CHECK(err.kind == DTL_ERR_IO && has(err.msg, "is a directory"));
    const char *fifo = tpath("a-fifo");
    if (mkfifo(fifo, 0600) == 0) { /* refused at once, not waiting for a writer */
        CHECK(dtl_st_read(fifo, &err) == NULL);
        CHECK(err.kind == DTL_ERR_FORMAT && has(err.msg, "not a regular file"));
        unlink(fifo);
    }
}

/* Files that are unusual but valid. */
static void test_good_files(void)
{
    const char *path = tpath("good.safetensors");
    dtl_err err = {0};

    /* Whitespace around the JSON, an unknown field, data out of header order, a U8 [3]
     * that leaves an F64 at offset 3 (handed out aligned), escapes and a surrogate pair. */
    const char *h = " \n{\"__metadata__\":{\"smile\":\"\\ud83d\\ude00\",\"esc\":\"\\\"\\\\\\/\\b\\f"
                    "\\n\\r\\t\\u00e9\"},"
                    "\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[3,11],\"x\":[{}]},"
                    "\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
                    "\"z\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[11,11]}}\t\r\n ";
    size_t hl = strlen(h);
    unsigned char file[512];
    for (int i = 0; i < 8; i++)
        file[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(file + 8, h, hl);
    unsigned char data[11] = {7, 8, 9};
    double dv = -2.75;
    memcpy(data + 3, &dv, 8);
    memcpy(file + 8 + hl, data, 11);
    write_bytes(path, file, 8 + hl + 11);
    dtl_st_file *f = dtl_st_read(path, &err);
    CHECK(f != NULL);
    if (!f) {
        fprintf(stderr, "  %s\n", err.msg);
        return;
    }
    CHECK(dtl_st_count(f) == 3);
    CHECK_STR(dtl_st_get(f, 0)->name, "d");
    CHECK_STR(dtl_st_get(f, 1)->name, "b");
    CHECK_STR(dtl_st_get(f, 2)->name, "z");
    const dtl_st_tensor *d = dtl_st_find(f, "d");
    CHECK(d && d->dtype == DTL_ST_F64 && d->rank == 1 && d->shape[0] == 1 && d->nbytes == 8);
    CHECK(d && (uintptr_t)d->data % 8 == 0 && *(const double *)d->data == -2.75);
    const dtl_st_tensor *b = dtl_st_find(f, "b");
    CHECK(b && b->dtype == DTL_ST_U8 && memcmp(b->data, "\7\10\11", 3) == 0);
    const dtl_st_tensor *z = dtl_st_find(f, "z");
    CHECK(z && z->dtype == DTL_ST_BOOL && z->nbytes == 0 && z->rank == 1 && z->shape[0] == 0);
    CHECK_STR(dtl_st_meta_get(f, "smile"), "\xf0\x9f\x98\x80");
    CHECK_STR(dtl_st_meta_get(f, "esc"), "\"\\/\b\f\n\r\t\xc3\xa9");
    dtl_st_close(f);

    /* An empty header object and no data; JSON literals elsewhere are fine to skip. */
    write_st(path, "{}", HLEN, 0);
    f = dtl_st_read(path, &err);
    CHECK(f && dtl_st_count(f) == 0 && dtl_st_meta_count(f) == 0);
    dtl_st_close(f);
}

/* Every truncation of a valid file fails with a message; random byte changes never crash. */
static void test_mangled(void)
{
    float v[6] = {1, 2, 3, 4, 5, 6};
    int64_t w[2] = {-1, 1};
    dtl_st_tensor t[2] = {
        {.name = "v", .dtype = DTL_ST_F32, .rank = 2, .shape = {2, 3}, .data = v, .nbytes = 24},
        {.name = "w", .dtype = DTL_ST_I64, .rank = 1, .shape = {2}, .data = w, .nbytes = 16},
    };
    dtl_st_meta m = {"step", "7"};
    const char *good = tpath("mangle-src.safetensors"), *path = tpath("mangled.safetensors");
    dtl_err err = {0};
    CHECK(dtl_st_write(good, t, 2, &m, 1, &err));
    size_t n;
    unsigned char *orig = read_bytes(good, &n);
    if (!orig)
        return;

    int all_fail = 1, named = 1;
    for (size_t k = 0; k < n; k++) {
        write_bytes(path, orig, k);
        dtl_st_file *f = dtl_st_read(path, &err);
        if (f)
            all_fail = 0;
        dtl_st_close(f);
        if (!f && (!starts_with(err.msg, path) || err.kind != DTL_ERR_FORMAT))
            named = 0;
    }
    CHECK(all_fail);
    CHECK(named);

    dtl_rng r;
    dtl_rng_init(&r, 7, dtl_rng_stream_id("mangle", 0));
    unsigned char *buf = malloc(n);
    int survived = 0, failed = 0;
    named = 1;
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, orig, n);
        int changes = 1 + (int)dtl_rng_below(&r, 4);
        for (int c = 0; c < changes; c++) {
            size_t pos = (size_t)dtl_rng_below(&r, n);
            static const char interesting[] = "{}[]\":,\\u0-9e \x80\xff\0";
            buf[pos] = dtl_rng_below(&r, 2) ? (unsigned char)dtl_rng_u32(&r)
                                            : (unsigned char)interesting[dtl_rng_below(
                                                  &r, sizeof interesting - 1)];
        }
        write_bytes(path, buf, n);
        dtl_st_file *f = dtl_st_read(path, &err);
        if (f) {
            survived++;
            for (size_t i = 0; i < dtl_st_count(f); i++) { /* touch everything it hands out */
                const dtl_st_tensor *g = dtl_st_get(f, i);
                volatile unsigned sum = (unsigned)strlen(g->name);
                for (size_t b = 0; b < g->nbytes; b++)
                    sum += ((const unsigned char *)g->data)[b];
                (void)sum;
            }
            dtl_st_close(f);
        } else {
            failed++;
            if (!starts_with(err.msg, path))
                named = 0;
        }
    }
    CHECK(named);
    CHECK(failed > 0 && survived > 0); /* data bytes can change freely */
    free(buf);
    free(orig);
}

/* DTL_FAIL_ALLOC=k makes the k-th arena block request fail: each k either still succeeds
 * or reports out of memory, and nothing leaks (ASan/valgrind). */
static void test_out_of_memory(void)
{
    enum { N = 3000 };
    dtl_st_tensor *t = calloc(N, sizeof *t);
    char (*names)[48] = calloc(N, 48);
    float x = 1;
    for (int i = 0; i < N; i++) {
        snprintf(names[i], 48, "layer%d.weight_with_a_long_name", i);
        t[i] = (dtl_st_tensor){.name = names[i], .dtype = DTL_ST_F32, .rank = 1, .shape = {1},
                               .data = &x, .nbytes = 4};
    }
    const char *path = tpath("oom.safetensors"), *p2 = tpath("oom2.safetensors");
    dtl_err err = {0};
    CHECK(dtl_st_write(path, t, N, NULL, 0, &err));

    int read_nomem = 0, write_nomem = 0, read_ok = 0, write_ok = 0;
    for (int k = 1; k <= 40; k++) {
        char v[16];
        snprintf(v, sizeof v, "%d", k);
        setenv("DTL_FAIL_ALLOC", v, 1);
        dtl_st_file *f = dtl_st_read(path, &err);
        if (f) {
            read_ok++;
            CHECK(dtl_st_count(f) == N);
        } else {
            read_nomem++;
            CHECK(err.kind == DTL_ERR_NOMEM && has(err.msg, "out of memory"));
        }
        dtl_st_close(f);
        if (dtl_st_write(p2, t, N, NULL, 0, &err)) {
            write_ok++;
        } else {
            write_nomem++;
            CHECK(err.kind == DTL_ERR_NOMEM && access(p2, F_OK) != 0);
        }
        unlink(p2);
    }
    unsetenv("DTL_FAIL_ALLOC");
    CHECK(read_nomem >= 3 && read_ok > 0); /* several blocks, then enough */
    CHECK(write_nomem >= 2 && write_ok > 0);
    CHECK(count_temps(tmpdir) == 0);
    free(names);
    free(t);
}

/* Bad writer arguments: DTL_ERR_USAGE, and no file written. */
static void test_write_usage(void)
{
    const char *path = tpath("usage.safetensors");
    float v[4] = {0};
    dtl_st_tensor ok = {.name = "a", .dtype = DTL_ST_F32, .rank = 1, .shape = {4}, .data = v,
                        .nbytes = 16};
    struct {
        dtl_st_tensor t[2];
        size_t n;
        dtl_st_meta m[2];
        size_t nm;
        const char *want;
    } cases[] = {
        {{ok, ok}, 2, {{0}}, 0, "two tensors are named 'a'"},
        {{{.name = NULL}}, 1, {{0}}, 0, "tensor 0 has no name"},
        {{{.name = "__metadata__", .dtype = DTL_ST_U8}}, 1, {{0}}, 0, "is reserved"},
        {{{.name = "bad\xff", .dtype = DTL_ST_U8}}, 1, {{0}}, 0, "is not valid UTF-8"},
        {{{.name = "a", .dtype = (dtl_st_dtype)99}}, 1, {{0}}, 0, "invalid dtype 99"},
        {{{.name = "a", .dtype = DTL_ST_F32, .rank = 9}}, 1, {{0}}, 0, "rank 9 is more than 8"},
        {{{.name = "a", .dtype = DTL_ST_F32, .rank = 1, .shape = {-2}}}, 1, {{0}}, 0,
         "negative dimension -2"},
        {{{.name = "a", .dtype = DTL_ST_F32, .rank = 2, .shape = {2, 3}, .data = v,
           .nbytes = 16}},
         1, {{0}}, 0, "tensor 'a': nbytes is 16, but F32 [2, 3] needs 24"},
        {{{.name = "a", .dtype = DTL_ST_F32, .rank = 1, .shape = {4}, .nbytes = 16}}, 1, {{0}}, 0,
         "tensor 'a' has no data"},
        {{{.name = "a", .dtype = DTL_ST_F64, .rank = 3,
           .shape = {INT64_MAX, INT64_MAX, 2}, .data = v, .nbytes = 8}},
         1, {{0}}, 0, "is too large"},
        {{ok}, 1, {{"k", "v"}, {"k", "w"}}, 2, "metadata key 'k' given twice"},
        {{ok}, 1, {{"k", NULL}}, 1, "metadata entry 0 has no value"},
        {{ok}, 1, {{"k", "\xc3"}}, 1, "metadata 'k' is not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dtl_err err = {0};
        CHECK(!dtl_st_write(path, cases[i].t, cases[i].n, cases[i].m, cases[i].nm, &err));
        CHECK(err.kind == DTL_ERR_USAGE);
        CHECK(starts_with(err.msg, path));
        if (!has(err.msg, cases[i].want))
            fprintf(stderr, "  (usage case %zu)\n", i);
        check_count++;
        if (!strstr(err.msg, cases[i].want))
            check_failures++;
        CHECK(access(path, F_OK) != 0);
    }
    CHECK(count_temps(tmpdir) == 0);
}

/* Writes that fail in the file system: the previous file stays, no temporary is left. */
static void test_write_failures(void)
{
    dtl_err err = {0};
    float v[2] = {1, 2};
    dtl_st_tensor t = {.name = "a", .dtype = DTL_ST_F32, .rank = 1, .shape = {2}, .data = v,
                       .nbytes = 8};

    /* A missing directory. */
    int before = count_entries(tmpdir);
    const char *missing = tpath("no-dir/sub/x.safetensors");
    CHECK(!dtl_st_write(missing, &t, 1, NULL, 0, &err));
    CHECK(err.kind == DTL_ERR_IO);
    CHECK(starts_with(err.msg, missing));
    CHECK(has(err.msg, "cannot create temporary file"));
    CHECK(has(err.msg, "No such file or directory"));
    CHECK(count_entries(tmpdir) == before);
    CHECK(access(tpath("no-dir"), F_OK) != 0);

    /* The target is a directory: the rename fails, the temporary goes, the directory stays. */
    const char *dir = tpath("a-directory");
    CHECK(mkdir(dir, 0777) == 0);
    before = count_entries(tmpdir);
    CHECK(!dtl_st_write(dir, &t, 1, NULL, 0, &err));
    CHECK(err.kind == DTL_ERR_IO && starts_with(err.msg, dir));
    CHECK(has(err.msg, "cannot rename over it the temporary file"));
    CHECK(has(err.msg, "Is a directory"));
    CHECK(count_entries(tmpdir) == before && count_temps(tmpdir) == 0);
    struct stat sb;
    CHECK(stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode));
    rmdir(dir);

    /* A trailing slash is not a file name. */
    CHECK(!dtl_st_write(tpath("x/"), &t, 1, NULL, 0, &err));
    CHECK(err.kind == DTL_ERR_USAGE);

    /* The disk "fills up" mid-write (RLIMIT_FSIZE, with SIGXFSZ ignored so that write fails
     * with EFBIG): the old checkpoint is still there, whole, and no temporary is left. */
    const char *path = tpath("full.safetensors");
    CHECK(dtl_st_write(path, &t, 1, NULL, 0, &err));
    size_t big_n = (size_t)1 << 20;
    unsigned char *big = calloc(big_n, 1);
    dtl_st_tensor tb = {.name = "big", .dtype = DTL_ST_U8, .rank = 1,
                        .shape = {(int64_t)big_n}, .data = big, .nbytes = big_n};
    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    struct rlimit lim = old;
    lim.rlim_cur = 64 * 1024;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        bool wrote = dtl_st_write(path, &tb, 1, NULL, 0, &err);
        setrlimit(RLIMIT_FSIZE, &old);
        CHECK(!wrote);
        CHECK(err.kind == DTL_ERR_IO && starts_with(err.msg, path));
        CHECK(has(err.msg, "cannot write temporary file"));
        CHECK(has(err.msg, strerror(EFBIG)));
        CHECK(count_temps(tmpdir) == 0);
        dtl_st_file *f = dtl_st_read(path, &err);
        CHECK(f && dtl_st_count(f) == 1 && dtl_st_find(f, "a") &&
              memcmp(dtl_st_find(f, "a")->data, v, 8) == 0);
        dtl_st_close(f);
    } else {
        fprintf(stderr, "note: setrlimit(RLIMIT_FSIZE) failed; skipping the full-disk case\n");
    }
    signal(SIGXFSZ, prev);
    free(big);
}

static void test_dtypes(void)
{
    for (int d = 0; d < DTL_DTYPE_COUNT; d++) {
        dtl_st_dtype s = dtl_st_dtype_from((dtl_dtype)d);
        dtl_dtype back;
        CHECK(s < DTL_ST_DTYPE_COUNT);
        CHECK(dtl_st_dtype_to(s, &back) && back == (dtl_dtype)d);
        CHECK(dtl_st_dtype_size(s) == dtl_dtype_size((dtl_dtype)d));
    }
    dtl_dtype back;
    CHECK(!dtl_st_dtype_to(DTL_ST_U8, &back));
    CHECK_STR(dtl_st_dtype_name(DTL_ST_BF16), "BF16");
    CHECK_STR(dtl_st_dtype_name(DTL_ST_U8), "U8");
    CHECK(dtl_st_dtype_size(DTL_ST_U8) == 1 && dtl_st_dtype_size(DTL_ST_DTYPE_COUNT) == 0);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/dtl-st-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 99;
    }
    test_dtypes();
    test_round_trip();
    test_exact_bytes();
    test_bad_files();
    test_good_files();
    test_mangled();
    test_out_of_memory();
    test_write_usage();
    test_write_failures();

    /* Clean up (only the files this test makes). */
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            char p[600];
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
    if (d)
        closedir(d);
    rmdir(tmpdir);
    CHECK_DONE();
}
