/* tests/unit/ckpt_writer.c — a helper for the scripted checkpoint tests (not a test itself).
 *
 *   ckpt_writer loop PATH START [COUNT] [--unsafe]
 *       writes checkpoints of iterations START, START+1, … (COUNT of them, or until killed)
 *       to PATH, printing "done I" after each one is in place. A checkpoint is 27 MB whose
 *       every value encodes its iteration (see fill/verify). --unsafe overwrites PATH in
 *       place instead (to show that tests/checkpoint_kill.sh catches torn files).
 *   ckpt_writer verify PATH
 *       checks that PATH is one complete checkpoint of some iteration and prints it.
 *   ckpt_writer fixture PATH
 *       writes the fixed all-dtypes file that tests/safetensors_numpy.py checks.
 *   ckpt_writer dump PATH
 *       reads PATH with dtl and prints it as JSON lines: one {"name", "dtype", "shape",
 *       "hex"} per tensor, then one {"meta", "value"} per metadata entry, in file order.
 * Exit status: 0 done, 1 a check or a read failed (the reason on stderr), 2 usage. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../runtime/arena.h"
#include "../../runtime/json.h"
#include "../../runtime/safetensors.h"

enum { NA = 1024 * 4096, NB = 1024 * 1024, NC = 3 * 1024 * 1024 + 1 };

typedef struct ckpt {
    float *a;       /* F32 [1024, 4096]: (it * 7919 + j) mod 2^24, exact in a float */
    uint8_t *c;     /* U8 [NC] (odd: b lands unaligned in the file): it * 31 + j * 7 */
    int64_t *b;     /* I64 [NB]: it * 1000003 + j */
} ckpt;

static void fill(ckpt *k, long long it)
{
    for (size_t j = 0; j < NA; j++)
        k->a[j] = (float)(((uint64_t)it * 7919 + j) % 16777216);
    for (size_t j = 0; j < NC; j++)
        k->c[j] = (uint8_t)((uint64_t)it * 31 + j * 7);
    for (size_t j = 0; j < NB; j++)
        k->b[j] = it * 1000003 + (int64_t)j;
}

static bool copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0666); /* in place: not atomic */
    if (!in || out < 0)
        return false;
    char buf[1 << 16];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
        ok = write(out, buf, n) == (ssize_t)n;
    fclose(in);
    close(out);
    return ok;
}

static int cmd_loop(const char *path, long long start, long long count, bool unsafe)
{
    ckpt k = {malloc(NA * sizeof(float)), malloc(NC), malloc(NB * sizeof(int64_t))};
    if (!k.a || !k.b || !k.c) {
        fprintf(stderr, "ckpt_writer: out of memory\n");
        return 1;
    }
    char scratch[4096];
    snprintf(scratch, sizeof scratch, "%s.scratch", path);
    for (long long it = start; count < 0 || it < start + count; it++) {
        fill(&k, it);
        char itbuf[32];
        snprintf(itbuf, sizeof itbuf, "%lld", it);
        dtl_st_meta meta[2] = {{"format", "dtl-ckpt-test"}, {"iteration", itbuf}};
        dtl_st_tensor t[3] = {
            {.name = "a", .dtype = DTL_ST_F32, .rank = 2, .shape = {1024, 4096}, .data = k.a,
             .nbytes = NA * sizeof(float)},
            {.name = "c", .dtype = DTL_ST_U8, .rank = 1, .shape = {NC}, .data = k.c,
             .nbytes = NC},
            {.name = "b", .dtype = DTL_ST_I64, .rank = 1, .shape = {NB}, .data = k.b,
             .nbytes = NB * sizeof(int64_t)},
        };
        dtl_err err;
        if (!dtl_st_write(unsafe ? scratch : path, t, 3, meta, 2, &err)) {
            fprintf(stderr, "ckpt_writer: %s\n", err.msg);
            return 1;
        }
        if (unsafe && !copy_file(scratch, path)) {
            fprintf(stderr, "ckpt_writer: cannot copy %s to %s\n", scratch, path);
            return 1;
        }
        printf("done %lld\n", it);
        fflush(stdout);
    }
    free(k.a), free(k.b), free(k.c);
    return 0;
}

static int fail(const char *path, const char *what)
{
    fprintf(stderr, "%s: %s\n", path, what);
    return 1;
}

static int cmd_verify(const char *path)
{
    dtl_err err;
    dtl_st_file *f = dtl_st_read(path, &err);
    if (!f) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int rc = 1;
    const char *fmt = dtl_st_meta_get(f, "format"), *its = dtl_st_meta_get(f, "iteration");
    const dtl_st_tensor *a = dtl_st_find(f, "a"), *b = dtl_st_find(f, "b"),
                        *c = dtl_st_find(f, "c");
    char *end;
    long long it = its ? strtoll(its, &end, 10) : 0;
    if (!fmt || strcmp(fmt, "dtl-ckpt-test") != 0 || !its || *end || dtl_st_count(f) != 3) {
        rc = fail(path, "not a ckpt_writer checkpoint");
    } else if (!a || a->dtype != DTL_ST_F32 || a->nbytes != NA * sizeof(float) || !b ||
               b->dtype != DTL_ST_I64 || b->nbytes != NB * sizeof(int64_t) || !c ||
               c->dtype != DTL_ST_U8 || c->nbytes != NC) {
        rc = fail(path, "tensors a, b, c missing or of the wrong dtype or size");
    } else {
        ckpt k = {malloc(NA * sizeof(float)), malloc(NC), malloc(NB * sizeof(int64_t))};
        if (!k.a || !k.b || !k.c)
            rc = fail(path, "out of memory");
        else {
            fill(&k, it);
            if (memcmp(a->data, k.a, a->nbytes) != 0)
                rc = fail(path, "tensor a does not match the iteration in the metadata");
            else if (memcmp(b->data, k.b, b->nbytes) != 0)
                rc = fail(path, "tensor b does not match the iteration in the metadata");
            else if (memcmp(c->data, k.c, c->nbytes) != 0)
                rc = fail(path, "tensor c does not match the iteration in the metadata");
            else {
                printf("%lld\n", it);
                rc = 0;
            }
        }
        free(k.a), free(k.b), free(k.c);
    }
    dtl_st_close(f);
    return rc;
}

/* The fixture: every dtype, a scalar, an empty tensor, a name and metadata that need
 * escaping. tests/safetensors_numpy.py recomputes the same values independently. */
static int cmd_fixture(const char *path)
{
    float f32[6];
    double f64[5];
    uint16_t f16[4], bf16[3];
    int32_t i32[4];
    int64_t i64[3];
    uint8_t u8[5], bl[6];
    for (int i = 0; i < 6; i++)
        f32[i] = (float)i * 0.5f - 1.25f;
    for (int i = 0; i < 5; i++)
        f64[i] = i / 3.0;
    for (int i = 0; i < 4; i++)
        f16[i] = (uint16_t)(0x3c00 + i); /* 1 + i/1024 */
    for (int i = 0; i < 3; i++)
        bf16[i] = (uint16_t)(0x3f80 + i); /* 1 + i/128 */
    for (int i = 0; i < 4; i++)
        i32[i] = i * 7 - 10;
    for (int i = 0; i < 3; i++)
        i64[i] = (int64_t)(i - 1) * 5000000000LL;
    for (int i = 0; i < 5; i++)
        u8[i] = (uint8_t)(i * 61 + 3);
    for (int i = 0; i < 6; i++)
        bl[i] = i % 3 == 0;
    float scalar = 42.5f;
    double weird = 2.5;
    dtl_st_tensor t[] = {
        {.name = "f32", .dtype = DTL_ST_F32, .rank = 2, .shape = {2, 3}, .data = f32,
         .nbytes = sizeof f32},
        {.name = "u8", .dtype = DTL_ST_U8, .rank = 1, .shape = {5}, .data = u8,
         .nbytes = sizeof u8},
        {.name = "f64", .dtype = DTL_ST_F64, .rank = 1, .shape = {5}, .data = f64,
         .nbytes = sizeof f64},
        {.name = "f16", .dtype = DTL_ST_F16, .rank = 1, .shape = {4}, .data = f16,
         .nbytes = sizeof f16},
        {.name = "bf16", .dtype = DTL_ST_BF16, .rank = 1, .shape = {3}, .data = bf16,
         .nbytes = sizeof bf16},
        {.name = "i32", .dtype = DTL_ST_I32, .rank = 2, .shape = {2, 2}, .data = i32,
         .nbytes = sizeof i32},
        {.name = "i64", .dtype = DTL_ST_I64, .rank = 1, .shape = {3}, .data = i64,
         .nbytes = sizeof i64},
        {.name = "bool", .dtype = DTL_ST_BOOL, .rank = 2, .shape = {2, 3}, .data = bl,
         .nbytes = sizeof bl},
        {.name = "scalar", .dtype = DTL_ST_F32, .rank = 0, .data = &scalar, .nbytes = 4},
        {.name = "empty", .dtype = DTL_ST_F32, .rank = 2, .shape = {0, 3}, .nbytes = 0},
        {.name = "weird \"name\" \\ \xc3\xa9 \xf0\x9f\x98\x80", .dtype = DTL_ST_F64, .rank = 1,
         .shape = {1}, .data = &weird, .nbytes = 8},
    };
    dtl_st_meta meta[] = {
        {"format", "pt"},
        {"iteration", "7"},
        {"note", "line1\nline2\ttab \"q\" \\ \xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80"},
        {"ctrl", "\x01\x1f"},
        {"pad", "x"}, /* makes the unpadded header 802 bytes: padding is needed */
    };
    dtl_err err;
    if (!dtl_st_write(path, t, sizeof t / sizeof t[0], meta, sizeof meta / sizeof meta[0],
                      &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    return 0;
}

static int cmd_dump(const char *path)
{
    dtl_err err;
    dtl_st_file *f = dtl_st_read(path, &err);
    if (!f) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    dtl_arena a;
    dtl_arena_init(&a);
    for (size_t i = 0; i < dtl_st_count(f); i++) {
        const dtl_st_tensor *t = dtl_st_get(f, i);
        dtl_json_out o;
        dtl_json_out_init(&o, &a);
        dtl_json_out_cstr(&o, "{\"name\":");
        dtl_json_out_string(&o, t->name, strlen(t->name));
        dtl_json_out_cstr(&o, ",\"dtype\":");
        dtl_json_out_string(&o, dtl_st_dtype_name(t->dtype), strlen(dtl_st_dtype_name(t->dtype)));
        dtl_json_out_cstr(&o, ",\"shape\":[");
        for (uint32_t d = 0; d < t->rank; d++) {
            if (d)
                dtl_json_out_cstr(&o, ",");
            dtl_json_out_u64(&o, (uint64_t)t->shape[d]);
        }
        dtl_json_out_cstr(&o, "],\"hex\":\"");
        for (size_t k = 0; k < t->nbytes; k++) {
            char h[3];
            snprintf(h, sizeof h, "%02x", ((const unsigned char *)t->data)[k]);
            dtl_json_out_raw(&o, h, 2);
        }
        dtl_json_out_cstr(&o, "\"}\n");
        fputs(o.buf, stdout);
    }
    for (size_t i = 0; i < dtl_st_meta_count(f); i++) {
        const dtl_st_meta *m = dtl_st_meta_at(f, i);
        dtl_json_out o;
        dtl_json_out_init(&o, &a);
        dtl_json_out_cstr(&o, "{\"meta\":");
        dtl_json_out_string(&o, m->key, strlen(m->key));
        dtl_json_out_cstr(&o, ",\"value\":");
        dtl_json_out_string(&o, m->value, strlen(m->value));
        dtl_json_out_cstr(&o, "}\n");
        fputs(o.buf, stdout);
    }
    dtl_arena_free(&a);
    dtl_st_close(f);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "loop") == 0) {
        bool unsafe = strcmp(argv[argc - 1], "--unsafe") == 0;
        int nargs = argc - unsafe;
        long long count = nargs >= 5 ? strtoll(argv[4], NULL, 10) : -1;
        return cmd_loop(argv[2], strtoll(argv[3], NULL, 10), count, unsafe);
    }
    if (argc == 3 && strcmp(argv[1], "verify") == 0)
        return cmd_verify(argv[2]);
    if (argc == 3 && strcmp(argv[1], "fixture") == 0)
        return cmd_fixture(argv[2]);
    if (argc == 3 && strcmp(argv[1], "dump") == 0)
        return cmd_dump(argv[2]);
    fprintf(stderr, "usage: ckpt_writer loop PATH START [COUNT] [--unsafe] | verify PATH | "
                    "fixture PATH | dump PATH\n");
    return 2;
}
