/* tests/unit/test_data.c — runtime/data.c: IDX (raw and gzip, every element type), .npy
 * (versions 1-3, every dtype, header variants), CSV (header, label by name or index, quotes,
 * CRLF); one test per kind of bad input, asserting on the message; the epoch order
 * (a permutation, reproducible, the documented Fisher-Yates); the sharding identity; the
 * prefetch loader against synchronous gathers, including stops mid-epoch; and, when it is
 * installed, Fashion-MNIST from /usr/share/datasets.
 *
 * Fixtures are written at run time into a fresh directory under $TMPDIR (removed at the end). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../../runtime/data.h"
#include "../../runtime/philox.h"
#include "unit.h"

/* Under AddressSanitizer a single allocation above 1 GiB aborts the test: the lying-header
 * cases below (60 GB declared by a 20-byte file) then prove that no loader sizes a buffer from
 * a header alone. (The largest honest allocation here is Fashion-MNIST's 188 MB.) */
#if defined(__SANITIZE_ADDRESS__)
#define DTL_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DTL_TEST_ASAN 1
#endif
#endif
#ifdef DTL_TEST_ASAN
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "max_allocation_size_mb=1024";
}
#endif

/* ---- fixtures ----------------------------------------------------------------------------- */

enum { MAX_FILES = 256 };

enum { MAX_STRINGS = 1024 };

static struct {
    char dir[256];
    char *files[MAX_FILES];   /* everything created, removed at the end (dirs last) */
    int nfiles;
    char *strings[MAX_STRINGS];   /* paths handed out, freed at the end */
    int nstrings;
} tmp;

/* dir/name, valid until the end of the test. */
static const char *tpath(const char *name)
{
    if (tmp.nstrings == MAX_STRINGS) {
        fprintf(stderr, "test_data: too many paths\n");
        exit(99);
    }
    size_t n = strlen(tmp.dir) + strlen(name) + 2;
    char *b = malloc(n);
    snprintf(b, n, "%s/%s", tmp.dir, name);
    return tmp.strings[tmp.nstrings++] = b;
}

static void remember(const char *path)
{
    for (int i = 0; i < tmp.nfiles; i++)
        if (strcmp(tmp.files[i], path) == 0)
            return;
    if (tmp.nfiles < MAX_FILES)
        tmp.files[tmp.nfiles++] = strdup(path);
}

/* Writes bytes to dir/name, gzip-compressed when gz; returns the path. */
static const char *put(const char *name, const void *bytes, size_t len, int gz)
{
    const char *path = tpath(name);
    remember(path);
    if (gz) {
        gzFile f = gzopen(path, "wb9");
        if (!f || (len && gzwrite(f, bytes, (unsigned)len) != (int)len) || gzclose(f) != Z_OK) {
            fprintf(stderr, "cannot write %s\n", path);
            exit(99);
        }
    } else {
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(bytes, 1, len, f) != len || fclose(f) != 0) {
            fprintf(stderr, "cannot write %s\n", path);
            exit(99);
        }
    }
    return path;
}

static const char *put_str(const char *name, const char *text)
{
    return put(name, text, strlen(text), 0);
}

static const char *mkdir_t(const char *name)
{
    const char *path = tpath(name);
    mkdir(path, 0700);
    remember(path);
    return path;
}

static void cleanup(void)
{
    for (int i = tmp.nfiles - 1; i >= 0; i--) {   /* files were created inside dirs made first */
        if (unlink(tmp.files[i]) != 0)
            rmdir(tmp.files[i]);
        free(tmp.files[i]);
    }
    for (int i = 0; i < tmp.nstrings; i++)
        free(tmp.strings[i]);
    rmdir(tmp.dir);
}

/* A growable byte buffer. */
typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static void b_add(buf *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void b_be(buf *b, uint64_t v, int size)
{
    for (int i = size - 1; i >= 0; i--) {
        unsigned char c = (unsigned char)(v >> (8 * i));
        b_add(b, &c, 1);
    }
}

static void b_le(buf *b, uint64_t v, int size)
{
    for (int i = 0; i < size; i++) {
        unsigned char c = (unsigned char)(v >> (8 * i));
        b_add(b, &c, 1);
    }
}

static uint64_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static uint64_t f64_bits(double f)
{
    uint64_t u;
    memcpy(&u, &f, 8);
    return u;
}

/* An IDX header: type code, dims. */
static void idx_head(buf *b, int code, int ndim, const uint32_t *dims)
{
    unsigned char m[4] = {0, 0, (unsigned char)code, (unsigned char)ndim};
    b_add(b, m, 4);
    for (int i = 0; i < ndim; i++)
        b_be(b, dims[i], 4);
}

/* A .npy header with the given dict text, padded to 64 bytes as numpy does. */
static void npy_head(buf *b, int version, const char *dict)
{
    size_t pre = version == 1 ? 10 : 12, len = strlen(dict) + 1;
    size_t pad = (64 - (pre + len) % 64) % 64;
    b_add(b, "\x93NUMPY", 6);
    unsigned char v[2] = {(unsigned char)version, 0};
    b_add(b, v, 2);
    b_le(b, len + pad, version == 1 ? 2 : 4);
    b_add(b, dict, strlen(dict));
    for (size_t i = 0; i < pad; i++)
        b_add(b, " ", 1);
    b_add(b, "\n", 1);
}

static int has(const dtl_err *e, const char *sub)
{
    if (strstr(e->msg, sub))
        return 1;
    fprintf(stderr, "  message lacks '%s':\n    %s\n", sub, e->msg);
    return 0;
}

/* Loading fails with kind and every substring (up to 3); DTL_TEST_SHOW=1 prints the messages. */
#define FAILS(call, kind_, s1, s2, s3)                                                     \
    do {                                                                                   \
        dtl_err e_ = {0};                                                                  \
        dtl_data d_;                                                                       \
        int ok_ = (call);                                                                  \
        CHECK(!ok_);                                                                       \
        if (getenv("DTL_TEST_SHOW"))                                                       \
            printf("%s\n", e_.msg);                                                        \
        if (!ok_) {                                                                        \
            CHECK(e_.kind == (kind_));                                                     \
            CHECK(has(&e_, s1) && has(&e_, s2) && has(&e_, s3));                           \
            CHECK(d_.x == NULL && d_.y == NULL && d_.n == 0);                              \
        } else                                                                             \
            dtl_data_free(&d_);                                                            \
    } while (0)
#define ERR (&e_)
#define DP (&d_)

static dtl_data_opts opts(double scale)
{
    dtl_data_opts o = dtl_data_opts_default();
    o.scale = scale;
    return o;
}

/* ---- IDX ---------------------------------------------------------------------------------- */

static void test_idx_u8(void)
{
    /* 3 images of 2×3, u8, labels 2 0 1; raw and gzip; f32 and f64. */
    unsigned char px[18];
    for (int i = 0; i < 18; i++)
        px[i] = (unsigned char)(i * 15);
    px[17] = 255;
    buf im = {0}, lb = {0};
    idx_head(&im, 0x08, 3, (const uint32_t[]){3, 2, 3});
    b_add(&im, px, 18);
    idx_head(&lb, 0x08, 1, (const uint32_t[]){3});
    b_add(&lb, (const unsigned char[]){2, 0, 1}, 3);
    for (int gz = 0; gz < 2; gz++) {
        const char *ip = put(gz ? "u8-img.gz" : "u8-img", im.p, im.n, gz);
        const char *lp = put(gz ? "u8-lab.gz" : "u8-lab", lb.p, lb.n, gz);
        for (int f64 = 0; f64 < 2; f64++) {
            dtl_data d;
            dtl_err e = {0};
            dtl_data_opts o = opts(1.0 / 255);
            o.dtype = f64 ? DTL_DTYPE_F64 : DTL_DTYPE_F32;
            CHECK(dtl_data_load_idx(&d, ip, lp, &o, &e));
            if (e.kind)
                fprintf(stderr, "  %s\n", e.msg);
            CHECK(d.n == 3 && d.ndim == 2 && d.shape[0] == 2 && d.shape[1] == 3);
            CHECK(d.features == 6 && d.classes == 3 && d.dtype == o.dtype);
            CHECK(d.y && d.y[0] == 2 && d.y[1] == 0 && d.y[2] == 1);
            int same = 1;
            for (int i = 0; d.x && i < 18; i++)
                same &= f64 ? ((double *)d.x)[i] == px[i] * (1.0 / 255)
                            : ((float *)d.x)[i] == (float)(px[i] * (1.0 / 255));
            CHECK(d.x && same);
            CHECK(!f64 || ((double *)d.x)[17] == 1.0);
            /* Compact: the bytes are kept and gathered rows equal x's, bit for bit. */
            dtl_data c;
            o.compact = true;
            CHECK(dtl_data_load_idx(&c, ip, lp, &o, &e));
            CHECK(c.x == NULL && c.bytes && c.from_ints && c.n == 3 && c.features == 6);
            double got[18], want[18];
            int64_t rows[3] = {2, 0, 1}, yc[3], yx[3];
            dtl_data_gather(&c, rows, 3, got, yc);
            dtl_data_gather(&d, rows, 3, want, yx);
            CHECK(memcmp(got, want, 18 * dtl_dtype_size(o.dtype)) == 0);
            CHECK(yc[0] == 1 && yc[1] == 2 && yc[2] == 0 && memcmp(yc, yx, sizeof yc) == 0);
            dtl_data_free(&c);
            CHECK(c.bytes == NULL && c.n == 0);
            dtl_data_free(&d);
            CHECK(d.x == NULL && d.n == 0);
        }
    }
    free(im.p);
    free(lb.p);
}

static void test_idx_types(void)
{
    /* Each IDX element type, big-endian, 4 rows of 1 element; labels of each integer type. */
    static const double vals[4] = {-2, 0, 7, 100};
    static const struct {
        int code, size;
    } types[] = {{0x09, 1}, {0x0B, 2}, {0x0C, 4}, {0x0D, 4}, {0x0E, 8}};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        buf im = {0}, lb = {0};
        idx_head(&im, types[t].code, 2, (const uint32_t[]){4, 1});
        for (int i = 0; i < 4; i++) {
            uint64_t bits = types[t].code == 0x0D   ? f32_bits((float)vals[i])
                            : types[t].code == 0x0E ? f64_bits(vals[i])
                                                    : (uint64_t)(int64_t)vals[i];
            b_be(&im, bits, types[t].size);
        }
        int lcode = t < 3 ? types[t].code : 0x08, lsize = t < 3 ? types[t].size : 1;
        idx_head(&lb, lcode, 1, (const uint32_t[]){4});
        for (int i = 0; i < 4; i++)
            b_be(&lb, (uint64_t)(3 - i) * 40, lsize);   /* 120 80 40 0 */
        const char *ip = put("t-img.gz", im.p, im.n, 1), *lp = put("t-lab", lb.p, lb.n, 0);
        dtl_data d;
        dtl_err e = {0};
        dtl_data_opts o = opts(0.5);
        int ok = dtl_data_load_idx(&d, ip, lp, &o, &e);
        CHECK(ok);
        if (!ok) {
            fprintf(stderr, "  type 0x%02x: %s\n", types[t].code, e.msg);
            continue;
        }
        CHECK(d.n == 4 && d.ndim == 1 && d.shape[0] == 1 && d.features == 1);
        for (int i = 0; i < 4; i++) {
            CHECK(((float *)d.x)[i] == (float)(vals[i] * 0.5));
            CHECK(d.y[i] == (3 - i) * 40);
        }
        CHECK(d.classes == 121);
        dtl_data_free(&d);
        free(im.p);
        free(lb.p);
    }
}

static void test_idx_dir(void)
{
    /* A named dataset: train files plain, test files gzip'd; find_dir over several roots. */
    const char *root = mkdir_t("root");
    mkdir_t("root/tiny");
    const char *other = mkdir_t("other");
    buf im = {0}, lb = {0}, im2 = {0}, lb2 = {0};
    idx_head(&im, 0x08, 3, (const uint32_t[]){2, 2, 2});
    b_add(&im, (const unsigned char[]){1, 2, 3, 4, 5, 6, 7, 8}, 8);
    idx_head(&lb, 0x08, 1, (const uint32_t[]){2});
    b_add(&lb, (const unsigned char[]){4, 1}, 2);
    idx_head(&im2, 0x08, 3, (const uint32_t[]){1, 2, 2});
    b_add(&im2, (const unsigned char[]){9, 9, 9, 9}, 4);
    idx_head(&lb2, 0x08, 1, (const uint32_t[]){1});
    b_add(&lb2, (const unsigned char[]){3}, 1);
    put("root/tiny/train-images-idx3-ubyte", im.p, im.n, 0);
    put("root/tiny/train-labels-idx1-ubyte", lb.p, lb.n, 0);
    put("root/tiny/t10k-images-idx3-ubyte.gz", im2.p, im2.n, 1);
    put("root/tiny/t10k-labels-idx1-ubyte.gz", lb2.p, lb2.n, 1);

    char dir[512];
    dtl_err e = {0};
    const char *dirs[] = {NULL, "", other, root};
    CHECK(dtl_data_find_dir("tiny", dirs, 4, dir, sizeof dir, &e));
    CHECK_STR(dir, tpath("root/tiny"));
    char nodir[512];
    CHECK(!dtl_data_find_dir("nope", dirs, 4, nodir, sizeof nodir, &e));
    CHECK(e.kind == DTL_ERR_IO && has(&e, "dataset 'nope' not found") &&
          has(&e, tpath("other/nope")) && has(&e, tpath("root/nope")));
    CHECK(!dtl_data_find_dir("nope", dirs, 2, nodir, sizeof nodir, &e));
    CHECK(has(&e, "no data directory given"));
    char small[8];
    CHECK(!dtl_data_find_dir("tiny", dirs, 4, small, sizeof small, &e) &&
          has(&e, "path too long"));

    dtl_data d;
    dtl_data_opts o = opts(1);
    e = (dtl_err){0};
    CHECK(dtl_data_load_idx_dir(&d, dir, "train", &o, &e));
    if (e.kind)
        fprintf(stderr, "  %s\n", e.msg);
    CHECK(d.n == 2 && d.features == 4 && d.y[0] == 4 && d.classes == 5 &&
          ((float *)d.x)[7] == 8.0f);
    dtl_data_free(&d);
    CHECK(dtl_data_load_idx_dir(&d, dir, "test", &o, &e));
    CHECK(d.n == 1 && d.features == 4 && d.y[0] == 3 && ((float *)d.x)[0] == 9.0f);
    dtl_data_free(&d);
    FAILS(dtl_data_load_idx_dir(DP, dir, "valid", &o, ERR), DTL_ERR_USAGE, "unknown split 'valid'",
          "'train' or 'test'", "");
    FAILS(dtl_data_load_idx_dir(DP, tpath("other"), "train", &o, ERR), DTL_ERR_IO,
          "no file train-images-idx3-ubyte or train-images-idx3-ubyte.gz", tpath("other"), "");
    free(im.p);
    free(lb.p);
    free(im2.p);
    free(lb2.p);
}

static void test_idx_errors(void)
{
    dtl_data_opts o = opts(1);
    buf lb = {0};
    idx_head(&lb, 0x08, 1, (const uint32_t[]){3});
    b_add(&lb, (const unsigned char[]){0, 1, 2}, 3);
    const char *lp = put("e-lab", lb.p, lb.n, 0);
    buf im = {0};
    idx_head(&im, 0x08, 2, (const uint32_t[]){3, 4});
    b_add(&im, "abcdefghijkl", 12);
    const char *ip = put("e-img", im.p, im.n, 0);

    FAILS(dtl_data_load_idx(DP, tpath("missing"), lp, &o, ERR), DTL_ERR_IO, tpath("missing"),
          "cannot open: No such file or directory", "");
    FAILS(dtl_data_load_idx(DP, tmp.dir, lp, &o, ERR), DTL_ERR_IO, "is a directory", "", "");
    FAILS(dtl_data_load_idx(DP, put("empty", "", 0, 0), lp, &o, ERR), DTL_ERR_FORMAT,
          "empty: empty file", "", "");
    /* truncated data, raw: the header says 4 + 4·2 + 12 = 24 bytes */
    FAILS(dtl_data_load_idx(DP, put("trunc", im.p, im.n - 4, 0), lp, &o, ERR), DTL_ERR_FORMAT,
          "trunc: truncated: expected 24 bytes, found 20", "", "");
    /* truncated gzip data (the uncompressed content is short) */
    FAILS(dtl_data_load_idx(DP, put("trunc.gz", im.p, im.n - 4, 1), lp, &o, ERR),
          DTL_ERR_FORMAT, "truncated: expected 24 bytes (uncompressed), found 20", "", "");
    /* a gzip stream cut short: make a big one and keep half of the compressed bytes */
    {
        buf big = {0};
        idx_head(&big, 0x08, 2, (const uint32_t[]){3, 40000});
        for (uint32_t i = 0; i < 120000; i++) {
            unsigned char c = (unsigned char)((i * 2654435761u) >> 24);
            b_add(&big, &c, 1);
        }
        const char *bp = put("cut.gz", big.p, big.n, 1);
        FILE *f = fopen(bp, "rb");
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        rewind(f);
        unsigned char *z = malloc((size_t)sz);
        CHECK(fread(z, 1, (size_t)sz, f) == (size_t)sz);
        fclose(f);
        FAILS(dtl_data_load_idx(DP, put("cut.gz", z, (size_t)sz / 2, 0), lp, &o, ERR),
              DTL_ERR_FORMAT, "cut.gz: truncated: expected 120012 bytes (uncompressed), found ",
              "", "");
        /* corrupt: flip bytes in the middle of the deflate stream */
        for (long i = sz / 2; i < sz / 2 + 16; i++)
            z[i] ^= 0x5a;
        dtl_data d;
        dtl_err e = {0};
        CHECK(!dtl_data_load_idx(&d, put("bad.gz", z, (size_t)sz, 0), lp, &o, &e));
        CHECK(e.kind == DTL_ERR_FORMAT && has(&e, "bad.gz: corrupt gzip data: ") &&
              !strstr(e.msg, "<fd:"));   /* zlib's own words follow, e.g. "invalid distance …" */
        free(z);
        free(big.p);
    }
    /* too long */
    {
        buf lng = {0};
        b_add(&lng, im.p, im.n);
        b_add(&lng, "x", 1);
        FAILS(dtl_data_load_idx(DP, put("long", lng.p, lng.n, 0), lp, &o, ERR), DTL_ERR_FORMAT,
              "long: longer than its header says: expected 24 bytes, found more", "", "");
        free(lng.p);
    }
    FAILS(dtl_data_load_idx(DP, put_str("magic", "\x01\x02\x03\x04rest"), lp, &o, ERR),
          DTL_ERR_FORMAT, "magic: not an IDX file: magic 0x01020304", "", "");
    FAILS(dtl_data_load_idx(DP, put("code", "\0\0\x0a\x01\0\0\0\x01x", 9, 0), lp, &o, ERR),
          DTL_ERR_FORMAT, "not an IDX file: magic 0x00000a01", "", "");
    FAILS(dtl_data_load_idx(DP, put("short", "\0\0\x08\x03\0\0\0\x01", 8, 0), lp, &o, ERR),
          DTL_ERR_FORMAT, "short: truncated header: expected at least 16 bytes, found 8", "", "");
    FAILS(dtl_data_load_idx(DP, put("nodims", "\0\0\x08\x00", 4, 0), lp, &o, ERR), DTL_ERR_FORMAT,
          "declares 0 dimensions", "", "");
    /* lying headers: an overflowing product, and 60 GB declared by a 20-byte file (no 60 GB
     * malloc: under ASan that would abort) */
    {
        buf h = {0};
        idx_head(&h, 0x0E, 4, (const uint32_t[]){0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 2});
        FAILS(dtl_data_load_idx(DP, put("huge", h.p, h.n, 0), lp, &o, ERR), DTL_ERR_FORMAT,
              "huge: IDX dimensions (4294967295, 4294967295, 4294967295, 2) are impossibly large",
              "", "");
        h.n = 0;
        idx_head(&h, 0x08, 3, (const uint32_t[]){3, 100000, 200000});
        b_add(&h, "1234", 4);
        FAILS(dtl_data_load_idx(DP, put("liar", h.p, h.n, 0), lp, &o, ERR), DTL_ERR_FORMAT,
              "liar: truncated: expected 60000000016 bytes, found 20", "", "");
        FAILS(dtl_data_load_idx(DP, put("liar.gz", h.p, h.n, 1), lp, &o, ERR), DTL_ERR_FORMAT,
              "truncated: expected 60000000016 bytes (uncompressed), found 20", "", "");
        h.n = 0;
        idx_head(&h, 0x08, 2, (const uint32_t[]){0, 5});
        FAILS(dtl_data_load_idx(DP, put("zero", h.p, h.n, 0), put("zero-l", "\0\0\x08\x01\0\0\0\0", 8, 0), &o, ERR),
              DTL_ERR_FORMAT, "zero: no rows", "", "");
        free(h.p);
    }
    /* count mismatch names both files and both counts */
    {
        buf l4 = {0};
        idx_head(&l4, 0x08, 1, (const uint32_t[]){4});
        b_add(&l4, "\0\0\0\0", 4);
        const char *l4p = put("lab4", l4.p, l4.n, 0);
        FAILS(dtl_data_load_idx(DP, ip, l4p, &o, ERR), DTL_ERR_MISMATCH, "e-img has 3 images",
              "lab4 has 4 labels", "");
        free(l4.p);
    }
    /* labels: 2-D, float, negative */
    FAILS(dtl_data_load_idx(DP, ip, ip, &o, ERR), DTL_ERR_FORMAT,
          "e-img: labels must be 1-D integers, found (3, 4) of u8", "", "");
    {
        buf fl = {0};
        idx_head(&fl, 0x0D, 1, (const uint32_t[]){3});
        b_add(&fl, "000011112222", 12);
        FAILS(dtl_data_load_idx(DP, ip, put("flab", fl.p, fl.n, 0), &o, ERR), DTL_ERR_FORMAT,
              "labels must be 1-D integers, found (3,) of f32", "", "");
        fl.n = 0;
        idx_head(&fl, 0x09, 1, (const uint32_t[]){3});
        b_add(&fl, "\x01\xff\x02", 3);
        FAILS(dtl_data_load_idx(DP, ip, put("neglab", fl.p, fl.n, 0), &o, ERR), DTL_ERR_FORMAT,
              "neglab: label -1 of row 1 is negative", "", "");
        free(fl.p);
    }
    o.dtype = DTL_DTYPE_I32;
    FAILS(dtl_data_load_idx(DP, ip, lp, &o, ERR), DTL_ERR_USAGE, "must be f32 or f64, not i32", "",
          "");
    free(im.p);
    free(lb.p);
}

/* ---- .npy --------------------------------------------------------------------------------- */

/* Writes 6 elements with the given descr (values 0, 1, 2, 3, 4, 5 or, signed, -3 … 2). */
static const char *npy_values(const char *name, int version, const char *descr, double *want)
{
    char size = descr[strlen(descr) - 1];
    int sz = size - '0', big = descr[0] == '>';
    char kind = descr[1];
    char dict[200];
    snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (3, 2), }",
             descr);
    buf b = {0};
    npy_head(&b, version, dict);
    for (int i = 0; i < 6; i++) {
        double v = kind == 'i' || kind == 'f' ? i - 3 : kind == 'b' ? i % 2 : i;
        if (kind == 'f')
            v += 0.25;
        want[i] = v;
        uint64_t bits = kind == 'f' ? (sz == 4 ? f32_bits((float)v) : f64_bits(v))
                                    : (uint64_t)(int64_t)v;
        if (big)
            b_be(&b, bits, sz);
        else
            b_le(&b, bits, sz);
    }
    const char *p = put(name, b.p, b.n, 0);
    free(b.p);
    return p;
}

/* n labels 0, 1, 2, 0, 1, … of the given descr. */
static const char *npy_labels(const char *name, const char *descr, int n)
{
    int sz = descr[strlen(descr) - 1] - '0';
    char dict[200];
    snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%d,), }",
             descr, n);
    buf b = {0};
    npy_head(&b, 1, dict);
    for (int i = 0; i < n; i++)
        b_le(&b, (uint64_t)(i % 3), sz);
    const char *p = put(name, b.p, b.n, 0);
    free(b.p);
    return p;
}

static void test_npy(void)
{
    static const char *descrs[] = {"<f4", "<f8", "|u1", "|i1", "<i2", "<i4", "<i8", "<u2",
                                   "<u4", "<u8", "|b1", ">f4", ">f8", ">i4", ">u2"};
    const char *yp = npy_labels("y.npy", "<i8", 3);
    for (int version = 1; version <= 3; version++)
        for (size_t t = 0; t < sizeof descrs / sizeof descrs[0]; t++) {
            double want[6];
            const char *xp = npy_values("x.npy", version, descrs[t], want);
            dtl_data d;
            dtl_err e = {0};
            dtl_data_opts o = opts(2.0);
            o.dtype = t % 2 ? DTL_DTYPE_F64 : DTL_DTYPE_F32;
            int ok = dtl_data_load_npy(&d, xp, yp, &o, &e);
            CHECK(ok);
            if (!ok) {
                fprintf(stderr, "  v%d %s: %s\n", version, descrs[t], e.msg);
                continue;
            }
            CHECK(d.n == 3 && d.ndim == 1 && d.shape[0] == 2 && d.features == 2);
            CHECK(d.y[0] == 0 && d.y[1] == 1 && d.y[2] == 2 && d.classes == 3);
            int same = 1;
            for (int i = 0; i < 6; i++)
                same &= o.dtype == DTL_DTYPE_F64 ? ((double *)d.x)[i] == want[i] * 2
                                                 : ((float *)d.x)[i] == (float)(want[i] * 2);
            CHECK(same);
            if (!same)
                fprintf(stderr, "  v%d %s: values differ\n", version, descrs[t]);
            dtl_data_free(&d);
        }

    /* Header dicts written other ways: key order, quotes, spaces, no trailing comma, 'L'. */
    static const char *dicts[] = {
        "{'shape': (3,), 'fortran_order': False, 'descr': '|u1'}",
        "{\"descr\":\"|u1\",\"fortran_order\":False,\"shape\":(3L,)}",
        "  { 'fortran_order' : False , 'descr' : '|u1' ,'shape':( 3 , ) , 'extra': [1, (2, 3), '}'], }  ",
    };
    for (size_t i = 0; i < sizeof dicts / sizeof dicts[0]; i++) {
        buf b = {0};
        npy_head(&b, 1, dicts[i]);
        b_add(&b, "\x05\x06\x07", 3);
        const char *xp = put("xd.npy", b.p, b.n, 0);
        free(b.p);
        for (int lab = 0; lab < 2; lab++) {   /* |u1 and <i4 labels */
            const char *lp = npy_labels("yd.npy", lab ? "<i4" : "|u1", 3);
            dtl_data d;
            dtl_err e = {0};
            dtl_data_opts o = opts(1);
            int ok = dtl_data_load_npy(&d, xp, lp, &o, &e);
            CHECK(ok);
            if (!ok) {
                fprintf(stderr, "  dict %zu: %s\n", i, e.msg);
                continue;
            }
            CHECK(d.n == 3 && d.ndim == 0 && d.features == 1);
            CHECK(((float *)d.x)[2] == 7.0f && d.y[2] == 2);
            dtl_data_free(&d);
        }
    }

    /* A gzip'd .npy works too. */
    {
        double want[6];
        const char *xp = npy_values("x.npy", 1, "<f4", want);
        FILE *f = fopen(xp, "rb");
        unsigned char raw[256];
        size_t n = fread(raw, 1, sizeof raw, f);
        fclose(f);
        const char *gp = put("xg.npy.gz", raw, n, 1);
        dtl_data d;
        dtl_err e = {0};
        dtl_data_opts o = opts(1);
        CHECK(dtl_data_load_npy(&d, gp, yp, &o, &e) && ((float *)d.x)[5] == 2.25f);
        dtl_data_free(&d);
        /* Features only (inference input): labels all 0, no classes. */
        CHECK(dtl_data_load_npy(&d, xp, NULL, &o, &e) && ((float *)d.x)[5] == 2.25f &&
              d.classes == 0 && d.y[0] == 0 && d.y[d.n - 1] == 0);
        dtl_data_free(&d);
    }
}

/* A .npy whose header dict is `dict` (and 24 data bytes). */
static const char *npy_raw(const char *name, int version, const char *dict, size_t data)
{
    buf b = {0};
    npy_head(&b, version, dict);
    for (size_t i = 0; i < data; i++)
        b_add(&b, "\1", 1);
    const char *p = put(name, b.p, b.n, 0);
    free(b.p);
    return p;
}

static void test_npy_errors(void)
{
    dtl_data_opts o = opts(1);
    double want[6];
    const char *xp = npy_values("ex.npy", 1, "<f4", want);
    const char *yp = npy_labels("ey.npy", "<i8", 3);
#define D(descr, shape) "{'descr': '" descr "', 'fortran_order': False, 'shape': " shape ", }"
    FAILS(dtl_data_load_npy(DP, tpath("nox.npy"), yp, &o, ERR), DTL_ERR_IO, "nox.npy: cannot open",
          "No such file", "");
    FAILS(dtl_data_load_npy(DP, xp, tpath("noy.npy"), &o, ERR), DTL_ERR_IO, "noy.npy: cannot open",
          "", "");
    FAILS(dtl_data_load_npy(DP, put("m.npy", "\x93NUMPZ\x01\x00\x10\x00{}", 12, 0), yp, &o, ERR),
          DTL_ERR_FORMAT, "m.npy: not a .npy file: magic 93 4e 55 4d 50 5a", "", "");
    FAILS(dtl_data_load_npy(DP, put("v.npy", "\x93NUMPY\x04\x00\x10\x00", 10, 0), yp, &o, ERR),
          DTL_ERR_FORMAT, "unsupported .npy format version 4.0", "", "");
    FAILS(dtl_data_load_npy(DP, put("h.npy", "\x93NUMPY\x02\x00\xff\xff\xff\xff", 12, 0), yp, &o, ERR),
          DTL_ERR_FORMAT, "h.npy: .npy header of 4294967295 bytes is too large", "", "");
    FAILS(dtl_data_load_npy(DP, put("ht.npy", "\x93NUMPY\x01\x00\x40\x00{'descr'", 18, 0), yp, &o, ERR),
          DTL_ERR_FORMAT, "ht.npy: truncated header: expected at least 74 bytes, found 18", "", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("c8.npy", 1, D("<c8", "(3,)"), 24), yp, &o, ERR),
          DTL_ERR_FORMAT, "c8.npy: unsupported dtype '<c8'", "supported: f4 f8", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("f2.npy", 1, D("<f2", "(3,)"), 6), yp, &o, ERR),
          DTL_ERR_FORMAT, "unsupported dtype '<f2'", "", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("st.npy", 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,)}", 12), yp, &o, ERR),
          DTL_ERR_FORMAT, "st.npy: structured dtypes are not supported", "", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("fo.npy", 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 2)}", 24), yp, &o, ERR),
          DTL_ERR_FORMAT, "fo.npy: array is in Fortran order", "np.ascontiguousarray", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("mk.npy", 1, "{'descr': '<f4', 'shape': (3, 2)}", 24), yp, &o, ERR),
          DTL_ERR_FORMAT, "mk.npy: .npy header lacks 'fortran_order'", "", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("mf.npy", 1, "{'descr': '<f4' 'fortran_order': False}", 24), yp, &o, ERR),
          DTL_ERR_FORMAT, "mf.npy: malformed .npy header: expected ',' or '}' at ''fortran_order':'", "", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("ms.npy", 1, D("<f4", "(3, x)"), 24), yp, &o, ERR),
          DTL_ERR_FORMAT, "malformed .npy header: expected a dimension at 'x), }'", "", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("mb.npy", 1, "{'descr': '<f4', 'fortran_order': Maybe}", 24), yp, &o, ERR),
          DTL_ERR_FORMAT, "expected True or False at 'Maybe}'", "", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("ov.npy", 1, D("<f4", "(99999999999999999999,)"), 24), yp, &o, ERR),
          DTL_ERR_FORMAT, "dimension too large", "", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("big.npy", 1, D("<f8", "(4294967296, 4294967296)"), 24), yp, &o, ERR),
          DTL_ERR_FORMAT, "big.npy: shape (4294967296, 4294967296) is impossibly large", "", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("liar.npy", 1, D("<f8", "(3, 10000000000)"), 24), yp, &o, ERR),
          DTL_ERR_FORMAT, "liar.npy: truncated: expected 240000000128 bytes, found 152", "", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("sc.npy", 1, D("<f4", "()"), 4), yp, &o, ERR),
          DTL_ERR_FORMAT, "sc.npy: features need a row dimension, found shape ()", "", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("tr.npy", 1, D("<f4", "(3, 2)"), 23), yp, &o, ERR),
          DTL_ERR_FORMAT, "tr.npy: truncated: expected 152 bytes, found 151", "", "");
    FAILS(dtl_data_load_npy(DP, npy_raw("lg.npy", 1, D("<f4", "(3, 2)"), 25), yp, &o, ERR),
          DTL_ERR_FORMAT, "lg.npy: longer than its header says: expected 152 bytes, found more", "", "");
    /* labels */
    FAILS(dtl_data_load_npy(DP, xp, npy_raw("yf.npy", 1, D("<f4", "(3,)"), 12), &o, ERR),
          DTL_ERR_FORMAT, "yf.npy: labels must be integers, found dtype '<f4'", "", "");
    FAILS(dtl_data_load_npy(DP, xp, npy_raw("y2.npy", 1, D("<i4", "(3, 1)"), 12), &o, ERR),
          DTL_ERR_FORMAT, "y2.npy: labels must be 1-D, found shape (3, 1)", "", "");
    FAILS(dtl_data_load_npy(DP, xp, npy_labels("y4.npy", "<i8", 4), &o, ERR), DTL_ERR_MISMATCH,
          "ex.npy has 3 rows (3, 2)", "y4.npy has 4 labels (4,)", "");
    {
        buf b = {0};
        npy_head(&b, 1, D("<i4", "(3,)"));
        b_le(&b, 1, 4);
        b_le(&b, (uint64_t)-5, 4);
        b_le(&b, 1, 4);
        FAILS(dtl_data_load_npy(DP, xp, put("yn.npy", b.p, b.n, 0), &o, ERR), DTL_ERR_FORMAT,
              "yn.npy: label -5 of row 1 is negative", "", "");
        b.n = 0;
        npy_head(&b, 1, D("<u8", "(3,)"));
        b_le(&b, 1, 8);
        b_le(&b, 1, 8);
        b_le(&b, 1ull << 40, 8);
        FAILS(dtl_data_load_npy(DP, xp, put("yb.npy", b.p, b.n, 0), &o, ERR), DTL_ERR_FORMAT,
              "yb.npy: label 1099511627776 of row 2 is too large", "", "");
        free(b.p);
    }
#undef D
}

/* ---- CSV ---------------------------------------------------------------------------------- */

static void test_csv(void)
{
    dtl_data d;
    dtl_err e = {0};
    dtl_data_opts o = opts(1);

    /* header, label by name in the middle, CRLF, empty lines, spaces, quotes, a BOM */
    const char *p = put_str("a.csv", "\xEF\xBB\xBF" "a, label ,\"b, c\"\r\n"
                                     "\r\n"
                                     "0.5, 2, -1e3\r\n"
                                     "  \n"
                                     "\"1.25\",0,\"7\"\r\n"
                                     "-2.25,\"1\",0x10");
    o.csv_header = true;
    o.csv_label = "label";
    CHECK(dtl_data_load_csv(&d, p, &o, &e));
    if (e.kind)
        fprintf(stderr, "  %s\n", e.msg);
    CHECK(d.n == 3 && d.ndim == 1 && d.shape[0] == 2 && d.features == 2 && d.classes == 3);
    if (d.n == 3) {
        float *x = d.x;
        CHECK(x[0] == 0.5f && x[1] == -1000.0f && x[2] == 1.25f && x[3] == 7.0f &&
              x[4] == -2.25f && x[5] == 16.0f);
        CHECK(d.y[0] == 2 && d.y[1] == 0 && d.y[2] == 1);
    }
    dtl_data_free(&d);
    /* the same by index (1) and as f64 with a scale */
    o.csv_label = NULL;
    o.csv_label_index = 1;
    o.dtype = DTL_DTYPE_F64;
    o.scale = 0.5;
    CHECK(dtl_data_load_csv(&d, p, &o, &e));
    CHECK(d.n == 3 && ((double *)d.x)[1] == -500.0 && d.y[0] == 2);
    dtl_data_free(&d);

    /* no header, label last (-1), no final newline; gzip'd */
    const char *text = "1,2,3\n4,5,6\n";
    p = put("b.csv.gz", text, strlen(text), 1);
    o = opts(1);
    o.csv_label_index = -1;
    CHECK(dtl_data_load_csv(&d, p, &o, &e));
    CHECK(d.n == 2 && d.features == 2 && d.y[0] == 3 && d.y[1] == 6 && d.classes == 7 &&
          ((float *)d.x)[3] == 5.0f);
    dtl_data_free(&d);
    /* label first by default */
    o = opts(1);
    CHECK(dtl_data_load_csv(&d, p, &o, &e));
    CHECK(d.n == 2 && d.y[0] == 1 && d.y[1] == 4 && ((float *)d.x)[0] == 2.0f);
    dtl_data_free(&d);
}

static void test_csv_errors(void)
{
    dtl_data_opts o = opts(1);
    o.csv_header = true;
    o.csv_label = "y";
    FAILS(dtl_data_load_csv(DP, tpath("no.csv"), &o, ERR), DTL_ERR_IO, "no.csv: cannot open: No such file",
          "", "");
    FAILS(dtl_data_load_csv(DP, put_str("n.csv", "y,w,h\n1,2,3\n1,abc,3\n"), &o, ERR), DTL_ERR_FORMAT,
          "n.csv:3:3: not a number: 'abc' (column 2 'w')", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("n2.csv", "y,w,h\n1,2,3\n\n1,  2.5.1 ,3\n"), &o, ERR),
          DTL_ERR_FORMAT, "n2.csv:4:5: not a number: '2.5.1' (column 2 'w')", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("r.csv", "y,w,h\n1,2,3\n1,2\n"), &o, ERR), DTL_ERR_FORMAT,
          "r.csv:3: expected 3 cells (as in line 1), found 2", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("r2.csv", "y,w,h\n1,2,3,4\n"), &o, ERR), DTL_ERR_FORMAT,
          "r2.csv:2: expected 3 cells (as in line 1), found 4", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("ec.csv", "y,w,h\n1,,3\n"), &o, ERR), DTL_ERR_FORMAT,
          "ec.csv:2:3: empty cell (column 2 'w')", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("li.csv", "w,y,h\n1,2.5,3\n"), &o, ERR), DTL_ERR_FORMAT,
          "li.csv:2:3: label is not an integer: '2.5' (column 2 'y')", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("ln.csv", "w,y,h\n1,-2,3\n"), &o, ERR), DTL_ERR_FORMAT,
          "ln.csv:2:3: label is negative: '-2'", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("lb.csv", "w,y,h\n1,99999999999999999999,3\n"), &o, ERR),
          DTL_ERR_FORMAT, "lb.csv:2:3: label is larger than 2147483647: '99999999999999999999'", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("q.csv", "y,w,h\n1,\"2,3\n"), &o, ERR), DTL_ERR_FORMAT,
          "q.csv:2:3: unterminated quote", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("q2.csv", "y,w,h\n1,\"2\"x,3\n"), &o, ERR), DTL_ERR_FORMAT,
          "q2.csv:2:6: text after a closing quote", "", "");
    FAILS(dtl_data_load_csv(DP, put("nul.csv", "y,w\n1,2\0\n", 9, 0), &o, ERR), DTL_ERR_FORMAT,
          "nul.csv:2:4: NUL byte", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("nn.csv", "a,b,c\n1,2,3\n"), &o, ERR), DTL_ERR_MISMATCH,
          "nn.csv:1: no column named 'y'; the header has 'a', 'b', 'c'", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("dn.csv", "y,b,y\n1,2,3\n"), &o, ERR), DTL_ERR_MISMATCH,
          "dn.csv:1: columns 1 and 3 are both named 'y'", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("h.csv", "\n\ny,b\n\n"), &o, ERR), DTL_ERR_FORMAT,
          "h.csv: no data rows", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("e.csv", ""), &o, ERR), DTL_ERR_FORMAT, "e.csv: no data rows",
          "", "");
    FAILS(dtl_data_load_csv(DP, put_str("one.csv", "y\n1\n"), &o, ERR), DTL_ERR_FORMAT,
          "one.csv:1: found 1 column; rows need a label and features", "", "");
    o.csv_header = false;
    FAILS(dtl_data_load_csv(DP, tpath("n.csv"), &o, ERR), DTL_ERR_USAGE,
          "a label column named 'y' needs a header row", "", "");
    o.csv_label = NULL;
    o.csv_label_index = 3;
    FAILS(dtl_data_load_csv(DP, put_str("ix.csv", "1,2,3\n"), &o, ERR), DTL_ERR_USAGE,
          "ix.csv: label column 3 is out of range: rows have 3 columns", "", "");
    o.csv_label_index = -4;
    FAILS(dtl_data_load_csv(DP, tpath("ix.csv"), &o, ERR), DTL_ERR_USAGE, "label column -4", "", "");
    o.csv_label_index = 0;
    FAILS(dtl_data_load_csv(DP, put_str("nh.csv", "y,w\n1,2\n"), &o, ERR), DTL_ERR_FORMAT,
          "nh.csv:1:1: label is not an integer: 'y' (column 1)", "", "");
    FAILS(dtl_data_load_csv(DP, put_str("ctl.csv", "1,a\tb\x01" "c\n"), &o, ERR), DTL_ERR_FORMAT,
          "ctl.csv:1:3: not a number: 'a?b?c' (column 2)", "", "");
}

/* ---- order and batches -------------------------------------------------------------------- */

static int is_perm(const int64_t *p, int64_t n)
{
    unsigned char *seen = calloc((size_t)n + 1, 1);
    int ok = 1;
    for (int64_t i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]])
            ok = 0;
        else
            seen[p[i]] = 1;
    }
    free(seen);
    return ok;
}

static void test_order(void)
{
    enum { N = 1000 };
    static int64_t a[N], b[N], c[N];
    dtl_data_epoch_order(N, 42, 0, false, a);
    int ident = 1;
    for (int i = 0; i < N; i++)
        ident &= a[i] == i;
    CHECK(ident);

    dtl_data_epoch_order(N, 42, 3, true, a);
    dtl_data_epoch_order(N, 42, 3, true, b);
    CHECK(is_perm(a, N) && memcmp(a, b, sizeof a) == 0);
    dtl_data_epoch_order(N, 42, 4, true, c);
    CHECK(is_perm(c, N) && memcmp(a, c, sizeof a) != 0);
    dtl_data_epoch_order(N, 43, 3, true, c);
    CHECK(is_perm(c, N) && memcmp(a, c, sizeof a) != 0);
    int moved = 0;
    for (int i = 0; i < N; i++)
        moved += a[i] != i;
    CHECK(moved > N * 9 / 10);

    /* The documented algorithm, written out from the RNG. */
    dtl_rng r;
    dtl_rng_init(&r, 42, dtl_rng_stream_id("shuffle", 3));
    for (int i = 0; i < N; i++)
        b[i] = i;
    for (int i = N - 1; i > 0; i--) {
        int64_t j = (int64_t)dtl_rng_below(&r, (uint64_t)i + 1), t = b[i];
        b[i] = b[j];
        b[j] = t;
    }
    CHECK(memcmp(a, b, sizeof a) == 0);

    /* Pinned: checkpoints and resumed runs depend on these staying the same. */
    int64_t small[10];
    dtl_data_epoch_order(10, 42, 0, true, small);
    static const int64_t pinned[10] = {5, 6, 0, 9, 8, 3, 7, 4, 1, 2};
    CHECK(memcmp(small, pinned, sizeof small) == 0);
    if (memcmp(small, pinned, sizeof small) != 0) {
        fprintf(stderr, "  order(10, seed 42, epoch 0):");
        for (int i = 0; i < 10; i++)
            fprintf(stderr, " %lld", (long long)small[i]);
        fprintf(stderr, "\n");
    }

    dtl_data_epoch_order(0, 1, 1, true, a);   /* nothing to do, nothing touched */
    dtl_data_epoch_order(1, 1, 1, true, a);
    CHECK(a[0] == 0);

    CHECK(dtl_data_steps(100, 8, 3, true) == 4 && dtl_data_steps(100, 8, 3, false) == 5);
    CHECK(dtl_data_steps(96, 8, 3, true) == 4 && dtl_data_steps(96, 8, 3, false) == 4);
    CHECK(dtl_data_steps(10, 32, 1, true) == 0 && dtl_data_steps(10, 32, 1, false) == 1);
    CHECK(dtl_data_steps(10, 0, 1, false) == 0 && dtl_data_steps(10, 1, 0, false) == 0);
}

static void test_sharding(void)
{
    /* World w with batch bs sees, step by step, exactly what world 1 with batch w·bs sees. */
    enum { N = 103 };
    for (int world = 1; world <= 5; world++)
        for (int64_t bs = 1; bs <= 7; bs++)
            for (int drop = 0; drop < 2; drop++) {
                int64_t steps = dtl_data_steps(N, bs, world, drop);
                CHECK(steps == dtl_data_steps(N, bs * world, 1, drop));
                int same = 1, seen[N] = {0};
                for (int64_t s = 0; s < steps; s++) {
                    int64_t one_start, one = dtl_data_batch_rows(N, bs * world, 1, 0, s, &one_start);
                    int64_t at = one_start, total = 0;
                    for (int r = 0; r < world; r++) {
                        int64_t start, rows = dtl_data_batch_rows(N, bs, world, r, s, &start);
                        same &= rows >= 0 && rows <= bs && (!drop || rows == bs);
                        same &= rows == 0 || start == at;   /* contiguous, in rank order */
                        for (int64_t i = 0; i < rows; i++)
                            seen[start + i]++;
                        at += rows;
                        total += rows;
                    }
                    same &= total == one;
                }
                CHECK(same);
                int covered = 1;   /* every position once; with drop_last, all but the tail */
                int64_t used = drop ? steps * bs * world : N;
                for (int64_t i = 0; i < N; i++)
                    covered &= seen[i] == (i < used);
                CHECK(covered);
            }
}

/* ---- background loader -------------------------------------------------------------------- */

static dtl_data synth(int64_t n, int64_t f, dtl_dtype dt)
{
    dtl_data d = {.n = n, .ndim = 1, .features = f, .dtype = dt, .classes = 10};
    d.shape[0] = f;
    d.x = malloc((size_t)(n * f) * dtl_dtype_size(dt));
    d.y = malloc((size_t)n * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) {
        d.y[i] = i % 10;
        for (int64_t j = 0; j < f; j++) {
            if (dt == DTL_DTYPE_F32)
                ((float *)d.x)[i * f + j] = (float)(i * 1000 + j);
            else
                ((double *)d.x)[i * f + j] = (double)(i * 1000 + j) + 0.5;
        }
    }
    return d;
}

/* Runs an epoch through the loader and compares every batch with a synchronous gather. */
static int epoch_matches(dtl_loader *l, const dtl_data *d, const dtl_loader_opts *o,
                         uint64_t epoch)
{
    dtl_err e = {0};
    if (!dtl_loader_start_epoch(l, epoch, &e)) {
        fprintf(stderr, "  %s\n", e.msg);
        return 0;
    }
    int64_t *perm = malloc((size_t)d->n * sizeof *perm);
    dtl_data_epoch_order(d->n, o->seed, epoch, o->shuffle, perm);
    size_t row = (size_t)d->features * dtl_dtype_size(d->dtype);
    void *x = malloc((size_t)o->batch * row);
    int64_t *y = malloc((size_t)o->batch * sizeof *y);
    int ok = 1;
    int64_t s = 0;
    for (const dtl_batch *b; (b = dtl_loader_next(l)); dtl_loader_release(l, b), s++) {
        int64_t start, rows = dtl_data_batch_rows(d->n, o->batch, o->world, o->rank, s, &start);
        dtl_data_gather(d, perm + (rows ? start : 0), rows, x, y);
        ok &= b->step == s && b->rows == rows;
        ok &= rows == 0 || (memcmp(b->x, x, (size_t)rows * row) == 0 &&
                            memcmp(b->y, y, (size_t)rows * sizeof *y) == 0);
    }
    ok &= s == dtl_loader_steps(l);
    ok &= dtl_loader_next(l) == NULL;   /* stays at the end */
    free(perm);
    free(x);
    free(y);
    return ok;
}

static void test_loader(void)
{
    for (int f64 = 0; f64 < 2; f64++) {
        dtl_data d = synth(103, 5, f64 ? DTL_DTYPE_F64 : DTL_DTYPE_F32);
        for (int slots = 0; slots <= 3; slots++)
            for (int world = 1; world <= 3; world += 2)
                for (int drop = 0; drop < 2; drop++) {
                    dtl_loader_opts o = {.batch = 4, .world = world, .rank = world - 1,
                                         .seed = 7, .shuffle = true, .drop_last = drop,
                                         .slots = slots};
                    dtl_err e = {0};
                    dtl_loader *l = dtl_loader_new(&d, &o, &e);
                    CHECK(l);
                    if (!l)
                        continue;
                    CHECK(dtl_loader_steps(l) == dtl_data_steps(103, 4, world, drop));
                    CHECK(dtl_loader_next(l) == NULL);   /* no epoch started */
                    for (uint64_t epoch = 0; epoch < 3; epoch++)
                        CHECK(epoch_matches(l, &d, &o, epoch));
                    dtl_loader_free(l);
                }

        /* Evaluation on 4 ranks with batch 40: one step; rank 3's slice is empty, rank 2's
         * is rows 80..102. */
        dtl_loader_opts o = {.batch = 40, .world = 4, .rank = 3, .drop_last = false};
        dtl_err e = {0};
        dtl_loader *l = dtl_loader_new(&d, &o, &e);
        CHECK(l && dtl_loader_steps(l) == 1 && epoch_matches(l, &d, &o, 0));
        dtl_loader_free(l);
        o.rank = 2;
        l = dtl_loader_new(&d, &o, &e);
        CHECK(l && dtl_loader_start_epoch(l, 0, &e));
        const dtl_batch *b = dtl_loader_next(l);
        const int64_t *by = b ? b->y : NULL;
        CHECK(b && b->rows == 23 && by[0] == 80 % 10 && by[22] == 102 % 10);
        CHECK(b && (f64 ? ((double *)b->x)[5] == 81000.5 : ((float *)b->x)[5] == 81000.0f));
        dtl_loader_free(l);   /* while holding a batch */

        /* Stopping mid-epoch, with the ring full or a batch held; restarting an epoch. */
        o = (dtl_loader_opts){.batch = 2, .world = 1, .seed = 1, .shuffle = true, .drop_last = true,
                              .slots = 2};
        for (int k = 0; k < 4; k++) {
            l = dtl_loader_new(&d, &o, &e);
            CHECK(l && dtl_loader_start_epoch(l, 0, &e));
            for (int i = 0; i < k; i++) {
                b = dtl_loader_next(l);
                CHECK(b && b->step == i);
                if (i < k - 1)
                    dtl_loader_release(l, b);
            }
            if (k == 3) {   /* the next epoch, abandoning this one */
                CHECK(epoch_matches(l, &d, &o, 1));
                CHECK(epoch_matches(l, &d, &o, 1));
            }
            dtl_loader_free(l);
        }
        dtl_loader_free(NULL);

        /* Bad options. */
        o = (dtl_loader_opts){.batch = 0, .world = 1};
        CHECK(!dtl_loader_new(&d, &o, &e) && e.kind == DTL_ERR_USAGE && has(&e, "batch 0"));
        o = (dtl_loader_opts){.batch = 1, .world = 2, .rank = 2};
        CHECK(!dtl_loader_new(&d, &o, &e) && has(&e, "rank 2 of 2"));
        o = (dtl_loader_opts){.batch = 1, .world = 1, .slots = 9};
        CHECK(!dtl_loader_new(&d, &o, &e) && has(&e, "9 slots"));
        o = (dtl_loader_opts){.batch = 60, .world = 2, .drop_last = true};
        CHECK(!dtl_loader_new(&d, &o, &e) && e.kind == DTL_ERR_MISMATCH &&
              has(&e, "the dataset has 103 rows, fewer than one batch of 60 rows per rank on 2 ranks"));
        dtl_data_free(&d);
    }
}

/* ---- Fashion-MNIST, when installed -------------------------------------------------------- */

static void test_fashion(void)
{
    const char *dirs[] = {getenv("DTL_DATA"), "/usr/share/datasets"};
    char dir[1024];
    dtl_err e = {0};
    if (getenv("DTL_TEST_NO_FASHION") ||
        !dtl_data_find_dir("fashion-mnist", dirs, 2, dir, sizeof dir, &e)) {
        printf("test_data: Fashion-MNIST part skipped (%s)\n",
               e.kind ? e.msg : "DTL_TEST_NO_FASHION is set");
        return;
    }
    dtl_data d;
    dtl_data_opts o = opts(1.0 / 255);
    static const struct {
        const char *split;
        int64_t n, first_label;
    } splits[] = {{"train", 60000, 9}, {"test", 10000, 9}};
    for (int s = 0; s < 2; s++) {
        int ok = dtl_data_load_idx_dir(&d, dir, splits[s].split, &o, &e);
        CHECK(ok);
        if (!ok) {
            fprintf(stderr, "  %s\n", e.msg);
            continue;
        }
        CHECK(d.n == splits[s].n && d.features == 784 && d.ndim == 2 && d.shape[0] == 28 &&
              d.shape[1] == 28 && d.classes == 10);
        int64_t count[10] = {0};
        int labels_ok = 1, range_ok = 1;
        for (int64_t i = 0; i < d.n; i++) {
            labels_ok &= d.y[i] >= 0 && d.y[i] <= 9;
            if (d.y[i] >= 0 && d.y[i] <= 9)
                count[d.y[i]]++;
        }
        const float *x = d.x;
        for (int64_t i = 0; i < d.n * 784; i++)
            range_ok &= x[i] >= 0.0f && x[i] <= 1.0f;
        CHECK(labels_ok && range_ok);
        for (int c = 0; c < 10; c++)   /* balanced: 6000 / 1000 of each class */
            CHECK(count[c] == splits[s].n / 10);
        CHECK(d.y[0] == splits[s].first_label);   /* 9: "ankle boot" */
        printf("test_data: Fashion-MNIST %s: %lld rows, first label %lld\n", splits[s].split,
               (long long)d.n, (long long)d.y[0]);
        dtl_data_free(&d);
    }
}

int main(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmp.dir, sizeof tmp.dir, "%s/dtl-test-data-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmp.dir)) {
        perror("mkdtemp");
        return 99;
    }
    test_idx_u8();
    test_idx_types();
    test_idx_dir();
    test_idx_errors();
    test_npy();
    test_npy_errors();
    test_csv();
    test_csv_errors();
    test_order();
    test_sharding();
    test_loader();
    test_fashion();
    cleanup();
    CHECK_DONE();
}
