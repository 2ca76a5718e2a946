/* runtime/data.c — datasets: IDX, .npy and CSV loaders, epoch order, sharded batches, and the
 * prefetch thread.
 *
 * Design. Every file is read through zlib's gz* functions, which pass a plain file through
 * untouched, so gzip support costs nothing per format. A format's header is parsed into an
 * element kind (u8 … f64, with a byte order) and a list of dims; the dims' product is checked
 * for overflow, and the data that must follow is read into a buffer that grows as bytes
 * arrive (never sized from the header alone), so a header that lies costs only the reading
 * of the file and ends in "truncated: expected E bytes, found F". The bytes are then decoded
 * element by element — assembling each value from its bytes in the file's order, which makes
 * the code independent of the host's byte order — into the dataset's f32/f64 features
 * (times scale) and int64 labels. CSV is read whole, split line by line in place, and
 * appended row by row (a regression target is parsed as a double into the label array and
 * converted at the end). Text sets (runtime/data_text.c) keep one byte string and make each
 * row's window in dtl_data_gather_at, from the epoch's offset the loader computes when the
 * epoch starts. The loader is one producer thread per epoch and a ring of batch
 * buffers guarded by one mutex and one condition variable; the consumer and producer only
 * ever exchange three counters (produced, taken, released), so stopping mid-epoch is a flag
 * and a join.
 */
#include "data.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "philox.h"

typedef unsigned long long ull;
typedef long long ll;

/* ---- element kinds ------------------------------------------------------------------------ */

typedef enum el_kind {
    EL_U8, EL_I8, EL_U16, EL_I16, EL_U32, EL_I32, EL_U64, EL_I64, EL_F32, EL_F64, EL_BOOL,
    EL_COUNT
} el_kind;

static const struct {
    unsigned size;
    bool is_int, is_signed;
    const char *name;
} el_info[] = {
    [EL_U8] = {1, true, false, "u8"},   [EL_I8] = {1, true, true, "i8"},
    [EL_U16] = {2, true, false, "u16"}, [EL_I16] = {2, true, true, "i16"},
    [EL_U32] = {4, true, false, "u32"}, [EL_I32] = {4, true, true, "i32"},
    [EL_U64] = {8, true, false, "u64"}, [EL_I64] = {8, true, true, "i64"},
    [EL_F32] = {4, false, false, "f32"}, [EL_F64] = {8, false, false, "f64"},
    [EL_BOOL] = {1, true, false, "bool"},
};
_Static_assert(sizeof el_info / sizeof el_info[0] == EL_COUNT, "one el_info row per kind");

/* The element's bits as an unsigned number; big: most significant byte first. */
static uint64_t el_bits(const unsigned char *p, unsigned size, bool big)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < size; i++)
        v |= (uint64_t)p[big ? size - 1 - i : i] << (8 * i);
    return v;
}

static int64_t el_sign_extend(uint64_t v, unsigned size)
{
    if (size == 8) {
        int64_t s;
        memcpy(&s, &v, sizeof s);
        return s;
    }
    uint64_t m = 1ull << (8 * size - 1);
    return (int64_t)(v ^ m) - (int64_t)m;
}

static double el_f64(const unsigned char *p, el_kind k, bool big)
{
    uint64_t v = el_bits(p, el_info[k].size, big);
    switch (k) {
    case EL_F32: {
        uint32_t u = (uint32_t)v;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    case EL_F64: {
        double f;
        memcpy(&f, &v, sizeof f);
        return f;
    }
    case EL_BOOL:
        return v != 0;
    default:
        return el_info[k].is_signed ? (double)el_sign_extend(v, el_info[k].size) : (double)v;
    }
}

/* Checked a·b for sizes read from files. */
static bool mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a)
        return false;
    *out = a * b;
    return true;
}

/* Bytes of an array of dims[0..ndim) elements of elsize bytes; false when absurd. */
static bool dims_bytes(const uint64_t *dims, int ndim, unsigned elsize, uint64_t *bytes)
{
    uint64_t b = elsize;
    for (int i = 0; i < ndim; i++)
        if (!mul_ok(b, dims[i], &b))
            return false;
    *bytes = b;
    return b <= INT64_MAX;
}

/* Text from a file for a message: at most 40 bytes, control bytes shown as '?'. */
static const char *show(const char *t, char *buf, size_t cap)
{
    size_t n = 0;
    for (; t[n] && n < 40 && n + 4 < cap; n++)
        buf[n] = (unsigned char)t[n] < 0x20 || t[n] == 0x7f ? '?' : t[n];
    if (t[n] && n + 4 < cap)
        buf[n++] = '.', buf[n++] = '.', buf[n++] = '.';
    buf[n] = '\0';
    return buf;
}

/* "(60000, 28, 28)" / "(5,)", as Python writes a shape. */
static const char *fmt_shape(char *buf, size_t cap, const uint64_t *dims, int n)
{
    size_t len = 0;
    buf[0] = '\0';
    len += (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%llu", i ? ", " : "", (ull)dims[i]);
    if (len < cap)
        snprintf(buf + len, cap - len, "%s)", n == 1 ? "," : "");
    return buf;
}

/* ---- reading files (plain or gzip) -------------------------------------------------------- */

enum { RD_CHUNK = 1 << 20 };

typedef struct rd {
    gzFile gz;
    const char *path;
    bool gzip;       /* compressed: sizes in messages are of the uncompressed data */
    uint64_t pos;    /* bytes (uncompressed) read so far */
} rd;

static bool rd_open(rd *r, const char *path, dtl_err *err)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return dtl_err_set(err, DTL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return dtl_err_set(err, DTL_ERR_IO, "%s: is a directory, not a file", path);
    }
    unsigned char magic[2];
    r->gzip = pread(fd, magic, 2, 0) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    r->gz = gzdopen(fd, "rb");
    if (!r->gz) {
        close(fd);
        return dtl_err_set(err, DTL_ERR_NOMEM, "%s: cannot open: out of memory", path);
    }
    gzbuffer(r->gz, 1 << 17);
    return true;
}

static void rd_close(rd *r)
{
    if (r->gz)
        gzclose(r->gz);
    r->gz = NULL;
}

/* Up to n bytes; fewer only at the end of the data (a gzip stream cut short counts as its
 * end: the caller reports the truncation with the counts). */
static bool rd_read(rd *r, void *buf, size_t n, size_t *got, dtl_err *err)
{
    unsigned char *p = buf;
    size_t done = 0;
    while (done < n) {
        size_t want = n - done < (1u << 30) ? n - done : (1u << 30);
        int k = gzread(r->gz, p + done, (unsigned)want);
        if (k < 0) {
            int code;
            const char *msg = gzerror(r->gz, &code);
            if (code == Z_BUF_ERROR)
                break;
            if (code == Z_ERRNO)
                return dtl_err_set(err, DTL_ERR_IO, "%s: read error: %s", r->path,
                                   strerror(errno));
            if (code == Z_MEM_ERROR)
                return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", r->path);
            if (strncmp(msg, "<fd:", 4) == 0 && strstr(msg, ": "))   /* gzdopen's name */
                msg = strstr(msg, ": ") + 2;
            return dtl_err_set(err, DTL_ERR_FORMAT, "%s: corrupt gzip data: %s", r->path, msg);
        }
        if (k == 0)
            break;
        done += (size_t)k;
    }
    r->pos += done;
    *got = done;
    return true;
}

static const char *rd_unc(const rd *r)
{
    return r->gzip ? " (uncompressed)" : "";
}

/* Exactly n bytes of a header. */
static bool rd_header(rd *r, void *buf, size_t n, dtl_err *err)
{
    uint64_t before = r->pos;
    size_t got;
    if (!rd_read(r, buf, n, &got, err))
        return false;
    if (got == n)
        return true;
    if (r->pos == 0)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: empty file", r->path);
    return dtl_err_set(err, DTL_ERR_FORMAT,
                       "%s: truncated header: expected at least %llu bytes%s, found %llu",
                       r->path, (ull)(before + n), rd_unc(r), (ull)r->pos);
}

/* The n bytes that must end the file, in a new buffer (caller frees). The buffer grows with
 * what arrives: a header claiming terabytes of a small file allocates little. */
static unsigned char *rd_rest(rd *r, uint64_t n, dtl_err *err)
{
    uint64_t before = r->pos;
    if (n > SIZE_MAX / 2) {
        dtl_err_set(err, DTL_ERR_FORMAT, "%s: the header declares %llu bytes of data, too many",
                    r->path, (ull)n);
        return NULL;
    }
    size_t cap = n < RD_CHUNK ? (size_t)n : RD_CHUNK, got = 0;
    unsigned char *buf = malloc(cap ? cap : 1);
    if (!buf)
        goto oom;
    for (;;) {
        size_t k;
        if (!rd_read(r, buf + got, cap - got, &k, err)) {
            free(buf);
            return NULL;
        }
        got += k;
        if (got < cap || cap == n)
            break;
        cap = cap > n / 2 ? (size_t)n : cap * 2;
        unsigned char *nb = realloc(buf, cap);
        if (!nb)
            goto oom;
        buf = nb;
    }
    if (got < n) {
        dtl_err_set(err, DTL_ERR_FORMAT, "%s: truncated: expected %llu bytes%s, found %llu",
                    r->path, (ull)(before + n), rd_unc(r), (ull)(before + got));
        free(buf);
        return NULL;
    }
    unsigned char extra;
    size_t k;
    if (!rd_read(r, &extra, 1, &k, err)) {
        free(buf);
        return NULL;
    }
    if (k) {
        dtl_err_set(err, DTL_ERR_FORMAT,
                    "%s: longer than its header says: expected %llu bytes%s, found more",
                    r->path, (ull)(before + n), rd_unc(r));
        free(buf);
        return NULL;
    }
    return buf;
oom:
    free(buf);
    dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory reading %llu bytes", r->path, (ull)n);
    return NULL;
}

/* The whole (rest of the) file, NUL-terminated, in a new buffer; *len excludes the NUL. */
static char *rd_all(rd *r, size_t *len, dtl_err *err)
{
    size_t cap = RD_CHUNK, got = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) {
            dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", r->path);
            return NULL;
        }
        size_t k;
        if (!rd_read(r, buf + got, cap - got, &k, err)) {
            free(buf);
            return NULL;
        }
        got += k;
        if (got < cap)
            break;
        char *nb = cap < SIZE_MAX / 4 ? realloc(buf, cap * 2 + 1) : NULL;
        if (!nb)
            free(buf);
        buf = nb;
        cap *= 2;
    }
    buf[got] = '\0';
    *len = got;
    return buf;
}

/* ---- assembling a dataset ----------------------------------------------------------------- */

dtl_data_opts dtl_data_opts_default(void)
{
    return (dtl_data_opts){.dtype = DTL_DTYPE_F32, .scale = 1.0};
}

void dtl_data_free(dtl_data *d)
{
    free(d->x);
    free(d->bytes);
    free(d->y);
    free(d->yf);
    free(d->text);
    memset(d, 0, sizeof *d);
}

int64_t dtl_data_ylen(const dtl_data *d)
{
    return d->ylen > 1 ? d->ylen : 1;
}

dtl_dtype dtl_data_ydtype(const dtl_data *d)
{
    return d->yf ? d->dtype : DTL_DTYPE_I64;
}

static bool opts_ok(const dtl_data_opts *o, dtl_err *err)
{
    if (o->dtype != DTL_DTYPE_F32 && o->dtype != DTL_DTYPE_F64)
        return dtl_err_set(err, DTL_ERR_USAGE, "features must be f32 or f64, not %s",
                           dtl_dtype_name(o->dtype));
    return true;
}

/* Sets d's shape (row dims dims[1..ndim)) and allocates y, and x unless compact. */
static bool data_alloc(dtl_data *d, const char *path, const uint64_t *dims, int ndim,
                       dtl_dtype dt, bool compact, dtl_err *err)
{
    uint64_t n = dims[0], features = 1, bytes;
    if (ndim - 1 > DTL_DATA_MAX_DIMS)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: rows have %d dimensions, at most %d work",
                           path, ndim - 1, DTL_DATA_MAX_DIMS);
    for (int i = 1; i < ndim; i++)
        features *= dims[i];   /* no overflow: the caller checked the product of all dims */
    if (n == 0)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: no rows", path);
    if (features == 0)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: rows have no elements", path);
    if (!mul_ok(n, features, &bytes) || !mul_ok(bytes, dtl_dtype_size(dt), &bytes) ||
        bytes > SIZE_MAX || n > SIZE_MAX / sizeof(int64_t) || n > INT64_MAX)
        return dtl_err_set(err, DTL_ERR_NOMEM, "%s: too large for memory", path);
    d->x = compact ? NULL : malloc(bytes);
    d->y = calloc(n ? n : 1, sizeof(int64_t));
    if ((!compact && !d->x) || !d->y)
        return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory (%llu bytes)", path,
                           (ull)bytes);
    d->n = (int64_t)n;
    d->ndim = ndim - 1;
    for (int i = 1; i < ndim; i++)
        d->shape[i - 1] = (int64_t)dims[i];
    d->features = (int64_t)features;
    d->dtype = dt;
    return true;
}

/* Fills x from the file's elements src — or, when d is compact, takes the buffer of bytes
 * itself (*srcp becomes NULL). */
static void put_features(dtl_data *d, unsigned char **srcp, el_kind k, bool big, double scale)
{
    const unsigned char *src = *srcp;
    if (!d->x) {   /* compact: data_alloc left x out for a u8 file */
        d->from_ints = true;
        d->bytes = *srcp;
        d->scale = scale;
        *srcp = NULL;
        return;
    }
    size_t count = (size_t)d->n * (size_t)d->features, sz = el_info[k].size;
    d->from_ints = el_info[k].is_int;
    if (d->dtype == DTL_DTYPE_F32) {
        float *x = d->x;
        for (size_t i = 0; i < count; i++)
            x[i] = (float)(el_f64(src + i * sz, k, big) * scale);
    } else {
        double *x = d->x;
        for (size_t i = 0; i < count; i++)
            x[i] = el_f64(src + i * sz, k, big) * scale;
    }
}

/* Decodes d->n integer labels; each must be in [0, INT32_MAX]. */
static bool put_labels(dtl_data *d, const unsigned char *src, el_kind k, bool big,
                       const char *path, dtl_err *err)
{
    unsigned sz = el_info[k].size;
    int64_t max = -1;
    for (int64_t i = 0; i < d->n; i++) {
        uint64_t v = el_bits(src + (size_t)i * sz, sz, big);
        if (k == EL_BOOL)
            v = v != 0;
        if (el_info[k].is_signed && el_sign_extend(v, sz) < 0)
            return dtl_err_set(err, DTL_ERR_FORMAT, "%s: label %lld of row %lld is negative",
                               path, (ll)el_sign_extend(v, sz), (ll)i);
        if (v > INT32_MAX)
            return dtl_err_set(err, DTL_ERR_FORMAT,
                               "%s: label %llu of row %lld is too large (at most %d)", path,
                               (ull)v, (ll)i, INT32_MAX);
        d->y[i] = (int64_t)v;
        if (d->y[i] > max)
            max = d->y[i];
    }
    d->classes = max + 1;
    return true;
}

/* ---- IDX ---------------------------------------------------------------------------------- */

enum { IDX_MAX_DIMS = DTL_DATA_MAX_DIMS + 1 };

typedef struct idx_file {
    rd r;
    el_kind kind;
    int ndim;
    uint64_t dims[IDX_MAX_DIMS];
    uint64_t bytes;   /* of the data after the header */
} idx_file;

static bool idx_kind(unsigned code, el_kind *k)
{
    switch (code) {
    case 0x08: *k = EL_U8; return true;
    case 0x09: *k = EL_I8; return true;
    case 0x0B: *k = EL_I16; return true;
    case 0x0C: *k = EL_I32; return true;
    case 0x0D: *k = EL_F32; return true;
    case 0x0E: *k = EL_F64; return true;
    default: return false;
    }
}

static bool idx_open(idx_file *f, const char *path, dtl_err *err)
{
    unsigned char m[4], d[4 * IDX_MAX_DIMS];
    if (!rd_open(&f->r, path, err) || !rd_header(&f->r, m, 4, err))
        return false;
    unsigned magic = (unsigned)m[0] << 24 | (unsigned)m[1] << 16 | (unsigned)m[2] << 8 | m[3];
    if (m[0] || m[1] || !idx_kind(m[2], &f->kind))
        return dtl_err_set(err, DTL_ERR_FORMAT,
                           "%s: not an IDX file: magic 0x%08x",
                           path, magic);
    if (m[3] == 0)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: IDX header declares 0 dimensions", path);
    if (m[3] > IDX_MAX_DIMS)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: IDX header declares %u dimensions, at most %d work",
                           path, m[3], IDX_MAX_DIMS);
    f->ndim = m[3];
    if (!rd_header(&f->r, d, 4 * (size_t)f->ndim, err))
        return false;
    for (int i = 0; i < f->ndim; i++)
        f->dims[i] = el_bits(d + 4 * i, 4, true);
    if (!dims_bytes(f->dims, f->ndim, el_info[f->kind].size, &f->bytes)) {
        char s[160];
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: IDX dimensions %s are impossibly large",
                           path, fmt_shape(s, sizeof s, f->dims, f->ndim));
    }
    return true;
}

bool dtl_data_load_idx(dtl_data *d, const char *images_path, const char *labels_path,
                       const dtl_data_opts *o, dtl_err *err)
{
    memset(d, 0, sizeof *d);
    idx_file im = {0}, lb = {0};
    unsigned char *ibuf = NULL, *lbuf = NULL;
    bool ok = opts_ok(o, err) && idx_open(&im, images_path, err) &&
              idx_open(&lb, labels_path, err);
    if (ok && (lb.ndim != 1 || !el_info[lb.kind].is_int)) {
        char s[160];
        ok = dtl_err_set(err, DTL_ERR_FORMAT,
                         "%s: labels must be 1-D integers, found %s of %s", labels_path,
                         fmt_shape(s, sizeof s, lb.dims, lb.ndim), el_info[lb.kind].name);
    }
    if (ok && im.dims[0] != lb.dims[0])
        ok = dtl_err_set(err, DTL_ERR_MISMATCH, "%s has %llu images but %s has %llu labels",
                         images_path, (ull)im.dims[0], labels_path, (ull)lb.dims[0]);
    ok = ok && (lbuf = rd_rest(&lb.r, lb.bytes, err)) && (ibuf = rd_rest(&im.r, im.bytes, err)) &&
         data_alloc(d, images_path, im.dims, im.ndim, o->dtype, o->compact && im.kind == EL_U8,
                    err) &&
         put_labels(d, lbuf, lb.kind, true, labels_path, err);
    if (ok)
        put_features(d, &ibuf, im.kind, true, o->scale);
    else
        dtl_data_free(d);
    free(ibuf);
    free(lbuf);
    rd_close(&im.r);
    rd_close(&lb.r);
    return ok;
}

/* dir/base, or dir/base.gz when only that exists. */
static bool idx_path(const char *dir, const char *base, char *out, size_t cap, dtl_err *err)
{
    int k = snprintf(out, cap, "%s/%s", dir, base);
    if (k < 0 || (size_t)k + 3 >= cap)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s/%s: path too long", dir, base);
    if (access(out, F_OK) == 0)
        return true;
    strcat(out, ".gz");
    if (access(out, F_OK) == 0)
        return true;
    return dtl_err_set(err, DTL_ERR_IO, "%s: no file %s or %s.gz", dir, base, base);
}

bool dtl_data_load_idx_dir(dtl_data *d, const char *dir, const char *split,
                           const dtl_data_opts *o, dtl_err *err)
{
    memset(d, 0, sizeof *d);
    const char *prefix = strcmp(split, "train") == 0 ? "train"
                         : strcmp(split, "test") == 0 ? "t10k" : NULL;
    if (!prefix)
        return dtl_err_set(err, DTL_ERR_USAGE, "unknown split '%s': expected 'train' or 'test'",
                           split);
    char ib[64], lb[64], ipath[4096], lpath[4096];
    snprintf(ib, sizeof ib, "%s-images-idx3-ubyte", prefix);
    snprintf(lb, sizeof lb, "%s-labels-idx1-ubyte", prefix);
    return idx_path(dir, ib, ipath, sizeof ipath, err) &&
           idx_path(dir, lb, lpath, sizeof lpath, err) &&
           dtl_data_load_idx(d, ipath, lpath, o, err);
}

/* ---- .npy --------------------------------------------------------------------------------- */

enum { NPY_MAX_DIMS = DTL_DATA_MAX_DIMS + 1, NPY_MAX_HEADER = 1 << 20 };

typedef struct npy_file {
    rd r;
    char descr[24];
    el_kind kind;
    bool big;
    int ndim;
    uint64_t dims[NPY_MAX_DIMS];
    uint64_t bytes;
} npy_file;

/* A cursor over the header's Python dict literal. */
typedef struct npy_parse {
    const char *p, *end, *path;
    dtl_err *err;
} npy_parse;

static bool np_bad(npy_parse *s, const char *what)
{
    char t[24];
    size_t n = 0;
    for (const char *q = s->p; q < s->end && *q != '\n' && n < 16; q++)   /* a snippet */
        t[n++] = *q;
    while (n && t[n - 1] == ' ')
        n--;
    t[n] = '\0';
    char shown[48];
    if (s->p < s->end)
        return dtl_err_set(s->err, DTL_ERR_FORMAT, "%s: malformed .npy header: %s at '%s'",
                           s->path, what, show(t, shown, sizeof shown));
    return dtl_err_set(s->err, DTL_ERR_FORMAT, "%s: malformed .npy header: %s at its end",
                       s->path, what);
}

static void np_ws(npy_parse *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* After spaces, is the next character c? (Not consumed.) */
static bool np_peek(npy_parse *s, char c)
{
    np_ws(s);
    return s->p < s->end && *s->p == c;
}

static bool np_eat(npy_parse *s, char c)
{
    np_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return true;
    }
    return false;
}

/* A quoted string into buf (cut to cap-1 bytes). */
static bool np_string(npy_parse *s, char *buf, size_t cap)
{
    np_ws(s);
    if (s->p == s->end || (*s->p != '\'' && *s->p != '"'))
        return np_bad(s, "expected a string");
    char q = *s->p++;
    size_t n = 0;
    while (s->p < s->end && *s->p != q) {
        if (n + 1 < cap)
            buf[n++] = *s->p;
        s->p++;
    }
    buf[n] = '\0';
    if (s->p == s->end)
        return np_bad(s, "unterminated string");
    s->p++;
    return true;
}

static bool np_word(npy_parse *s, const char *w)
{
    size_t n = strlen(w);
    np_ws(s);
    if ((size_t)(s->end - s->p) >= n && memcmp(s->p, w, n) == 0) {
        s->p += n;
        return true;
    }
    return false;
}

static bool np_shape(npy_parse *s, npy_file *f)
{
    if (!np_eat(s, '('))
        return np_bad(s, "expected a shape tuple");
    f->ndim = 0;
    while (!np_eat(s, ')')) {
        np_ws(s);
        if (s->p == s->end || *s->p < '0' || *s->p > '9')
            return np_bad(s, "expected a dimension");
        uint64_t v = 0;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
            if (!mul_ok(v, 10, &v) || v > UINT64_MAX - (uint64_t)(*s->p - '0'))
                return np_bad(s, "dimension too large");
            v += (uint64_t)(*s->p++ - '0');
        }
        if (s->p < s->end && *s->p == 'L')   /* Python 2 longs */
            s->p++;
        if (f->ndim == NPY_MAX_DIMS)
            return dtl_err_set(s->err, DTL_ERR_FORMAT,
                               "%s: shape has more than %d dimensions", s->path, NPY_MAX_DIMS);
        f->dims[f->ndim++] = v;
        if (!np_eat(s, ',') && !np_peek(s, ')'))
            return np_bad(s, "expected ',' or ')' in the shape");
    }
    return true;
}

/* Skips a value of a key we do not know. */
static bool np_skip(npy_parse *s)
{
    int depth = 0;
    np_ws(s);
    for (;;) {
        if (s->p == s->end)
            return np_bad(s, "unterminated value");
        char c = *s->p;
        if (c == '\'' || c == '"') {
            char junk[2];
            if (!np_string(s, junk, sizeof junk))
                return false;
            continue;
        }
        if (depth == 0 && (c == ',' || c == '}'))
            return true;
        if (c == '(' || c == '[' || c == '{')
            depth++;
        else if (c == ')' || c == ']' || c == '}') {
            if (depth == 0)
                return np_bad(s, "unbalanced brackets");
            depth--;
        }
        s->p++;
    }
}

static bool npy_dtype(npy_file *f, const char *path, dtl_err *err)
{
    static const struct {
        const char *code;
        el_kind kind;
    } codes[] = {
        {"f4", EL_F32}, {"f8", EL_F64}, {"i1", EL_I8},  {"i2", EL_I16}, {"i4", EL_I32},
        {"i8", EL_I64}, {"u1", EL_U8},  {"u2", EL_U16}, {"u4", EL_U32}, {"u8", EL_U64},
        {"b1", EL_BOOL},
    };
    const char *s = f->descr;
    if (s[0] == '<' || s[0] == '>' || s[0] == '|' || s[0] == '=') {
        const uint16_t one = 1;
        unsigned char first;
        memcpy(&first, &one, 1);
        f->big = s[0] == '>' || (s[0] == '=' && first == 0);
        for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
            if (strcmp(s + 1, codes[i].code) == 0) {
                f->kind = codes[i].kind;
                return true;
            }
    }
    return dtl_err_set(err, DTL_ERR_FORMAT,
                       "%s: unsupported dtype '%s' (supported: f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1)",
                       path, s);
}

static bool npy_open(npy_file *f, const char *path, dtl_err *err)
{
    unsigned char m[12];
    if (!rd_open(&f->r, path, err) || !rd_header(&f->r, m, 10, err))
        return false;
    if (memcmp(m, "\x93NUMPY", 6) != 0)
        return dtl_err_set(err, DTL_ERR_FORMAT,
                           "%s: not a .npy file: magic %02x %02x %02x %02x %02x %02x", path, m[0],
                           m[1], m[2], m[3], m[4], m[5]);
    uint64_t hlen;
    if (m[6] == 1)
        hlen = el_bits(m + 8, 2, false);
    else if (m[6] == 2 || m[6] == 3) {
        if (!rd_header(&f->r, m + 10, 2, err))
            return false;
        hlen = el_bits(m + 8, 4, false);
    } else
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: unsupported .npy format version %u.%u",
                           path, m[6], m[7]);
    if (hlen > NPY_MAX_HEADER)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: .npy header of %llu bytes is too large",
                           path, (ull)hlen);
    char *h = malloc(hlen + 1);
    if (!h)
        return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", path);
    bool ok = rd_header(&f->r, h, hlen, err);
    h[hlen] = '\0';
    npy_parse s = {h, h + hlen, path, err};
    bool have_descr = false, have_order = false, have_shape = false, fortran = false;
    if (ok && !np_eat(&s, '{'))
        ok = np_bad(&s, "expected '{'");
    while (ok && !np_eat(&s, '}')) {
        char key[32];
        if (!np_string(&s, key, sizeof key))
            ok = false;
        else if (!np_eat(&s, ':'))
            ok = np_bad(&s, "expected ':'");
        else if (strcmp(key, "descr") == 0) {
            if (np_peek(&s, '['))
                ok = dtl_err_set(err, DTL_ERR_FORMAT,
                                 "%s: structured dtypes are not supported", path);
            else
                ok = have_descr = np_string(&s, f->descr, sizeof f->descr);
        } else if (strcmp(key, "fortran_order") == 0) {
            have_order = true;
            if (np_word(&s, "True"))
                fortran = true;
            else if (!np_word(&s, "False"))
                ok = np_bad(&s, "expected True or False");
        } else if (strcmp(key, "shape") == 0)
            ok = have_shape = np_shape(&s, f);
        else
            ok = np_skip(&s);
        if (ok && !np_eat(&s, ',') && !np_peek(&s, '}'))
            ok = np_bad(&s, "expected ',' or '}'");
    }
    np_ws(&s);
    if (ok && s.p != s.end)
        ok = np_bad(&s, "unexpected text after the dict");
    free(h);
    if (!ok)
        return false;
    if (!have_descr || !have_order || !have_shape)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: .npy header lacks '%s'", path,
                           !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    if (!npy_dtype(f, path, err))
        return false;
    if (fortran && f->ndim > 1)
        return dtl_err_set(err, DTL_ERR_FORMAT,
                           "%s: array is in Fortran order (fortran_order: True); save it in C "
                           "order, e.g. np.save(path, np.ascontiguousarray(a))",
                           path);
    if (!dims_bytes(f->dims, f->ndim, el_info[f->kind].size, &f->bytes)) {
        char sh[160];
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: shape %s is impossibly large", path,
                           fmt_shape(sh, sizeof sh, f->dims, f->ndim));
    }
    return true;
}

bool dtl_data_load_npy(dtl_data *d, const char *x_path, const char *y_path,
                       const dtl_data_opts *o, dtl_err *err)
{
    memset(d, 0, sizeof *d);
    npy_file xf = {0}, yf = {0};
    unsigned char *xbuf = NULL, *ybuf = NULL;
    char s1[160], s2[160];
    bool ok = opts_ok(o, err) && npy_open(&xf, x_path, err) &&
              (!y_path || npy_open(&yf, y_path, err));
    if (ok && xf.ndim == 0)
        ok = dtl_err_set(err, DTL_ERR_FORMAT, "%s: features need a row dimension, found shape ()",
                         x_path);
    if (ok && y_path && yf.ndim != 1)
        ok = dtl_err_set(err, DTL_ERR_FORMAT, "%s: labels must be 1-D, found shape %s", y_path,
                         fmt_shape(s1, sizeof s1, yf.dims, yf.ndim));
    if (ok && y_path && !el_info[yf.kind].is_int)
        ok = dtl_err_set(err, DTL_ERR_FORMAT, "%s: labels must be integers, found dtype '%s'",
                         y_path, yf.descr);
    if (ok && y_path && xf.dims[0] != yf.dims[0])
        ok = dtl_err_set(err, DTL_ERR_MISMATCH, "%s has %llu rows %s but %s has %llu labels %s",
                         x_path, (ull)xf.dims[0], fmt_shape(s1, sizeof s1, xf.dims, xf.ndim),
                         y_path, (ull)yf.dims[0], fmt_shape(s2, sizeof s2, yf.dims, yf.ndim));
    ok = ok && (!y_path || (ybuf = rd_rest(&yf.r, yf.bytes, err))) &&
         (xbuf = rd_rest(&xf.r, xf.bytes, err)) &&
         data_alloc(d, x_path, xf.dims, xf.ndim, o->dtype, o->compact && xf.kind == EL_U8, err) &&
         (!y_path || put_labels(d, ybuf, yf.kind, yf.big, y_path, err));
    if (ok)
        put_features(d, &xbuf, xf.kind, xf.big, o->scale);
    else
        dtl_data_free(d);
    free(xbuf);
    free(ybuf);
    rd_close(&xf.r);
    if (y_path)
        rd_close(&yf.r);
    return ok;
}

/* ---- CSV ---------------------------------------------------------------------------------- */

typedef struct csv_cell {
    char *text;    /* unquoted, trimmed, NUL-terminated, inside the file's buffer */
    size_t col;    /* 1-based byte column of the cell's start */
} csv_cell;

typedef struct csv_row {
    csv_cell *cells;
    size_t n, cap;
} csv_row;

static bool csv_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Splits line[0..len) into cells, in place; line[len] must be writable. On a quoting error
 * returns false with *why and *col set. */
static bool csv_split(char *line, size_t len, csv_row *row, const char **why, size_t *col,
                      bool *oom)
{
    char *p = line, *end = line + len;
    row->n = 0;
    for (;;) {
        while (p < end && csv_blank(*p))
            p++;
        csv_cell c = {p, (size_t)(p - line) + 1};
        char *w;
        if (p < end && *p == '"') {
            w = p++;
            for (;;) {
                if (p == end) {
                    *why = "unterminated quote";
                    *col = c.col;
                    return false;
                }
                if (*p == '"') {
                    if (p + 1 < end && p[1] == '"') {
                        *w++ = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                *w++ = *p++;
            }
            while (p < end && csv_blank(*p))
                p++;
            if (p < end && *p != ',') {
                *why = "text after a closing quote";
                *col = (size_t)(p - line) + 1;
                return false;
            }
        } else {
            while (p < end && *p != ',')
                p++;
            w = p;
            while (w > c.text && csv_blank(w[-1]))
                w--;
        }
        if (row->n == row->cap) {
            size_t cap = row->cap ? row->cap * 2 : 16;
            csv_cell *nc = realloc(row->cells, cap * sizeof *nc);
            if (!nc) {
                *oom = true;
                return false;
            }
            row->cells = nc;
            row->cap = cap;
        }
        row->cells[row->n++] = c;
        bool last = p == end;
        *w = '\0';   /* w <= p: over the separator just passed, or line[len] */
        if (last)
            return true;
        p++;
    }
}

typedef struct csv_state {
    const char *path;
    const csv_row *head;   /* the header's cells, or NULL */
    dtl_err *err;
} csv_state;

/* " (column 3 'petal_width')" or " (column 3)". */
static const char *csv_colname(const csv_state *s, size_t c, char *buf, size_t cap)
{
    char t[48];
    if (s->head)
        snprintf(buf, cap, " (column %zu '%s')", c + 1, show(s->head->cells[c].text, t, sizeof t));
    else
        snprintf(buf, cap, " (column %zu)", c + 1);
    return buf;
}

static bool csv_cell_err(const csv_state *s, size_t line, const csv_cell *cell, size_t c,
                         const char *what)
{
    char t[48], cn[80];
    if (!*cell->text)
        return dtl_err_set(s->err, DTL_ERR_FORMAT, "%s:%zu:%zu: empty cell%s", s->path, line,
                           cell->col, csv_colname(s, c, cn, sizeof cn));
    return dtl_err_set(s->err, DTL_ERR_FORMAT, "%s:%zu:%zu: %s: '%s'%s", s->path, line,
                       cell->col, what, show(cell->text, t, sizeof t),
                       csv_colname(s, c, cn, sizeof cn));
}

/* The label column for rows of ncols cells. */
static bool csv_label_col(const csv_state *s, const dtl_data_opts *o, size_t ncols,
                          size_t line, size_t *label, dtl_err *err)
{
    if (o->csv_label) {
        size_t found = SIZE_MAX;
        for (size_t c = 0; c < ncols; c++) {
            if (strcmp(s->head->cells[c].text, o->csv_label) != 0)
                continue;
            if (found != SIZE_MAX)
                return dtl_err_set(err, DTL_ERR_MISMATCH,
                                   "%s:%zu: columns %zu and %zu are both named '%s'", s->path,
                                   line, found + 1, c + 1, o->csv_label);
            found = c;
        }
        if (found == SIZE_MAX) {
            char names[300], t[48];
            size_t len = 0;
            names[0] = '\0';
            for (size_t c = 0; c < ncols && len < sizeof names; c++)
                len += (size_t)snprintf(names + len, sizeof names - len, "%s'%s'", c ? ", " : "",
                                        show(s->head->cells[c].text, t, sizeof t));
            return dtl_err_set(err, DTL_ERR_MISMATCH, "%s:%zu: no column named '%s'; the header has %s",
                               s->path, line, o->csv_label, names);
        }
        *label = found;
        return true;
    }
    ll i = o->csv_label_index;
    if (i < 0)
        i += (ll)ncols;
    if (i < 0 || (size_t)i >= ncols)
        return dtl_err_set(err, DTL_ERR_USAGE,
                           "%s: label column %d is out of range: rows have %zu columns", s->path,
                           o->csv_label_index, ncols);
    *label = (size_t)i;
    return true;
}

bool dtl_data_load_csv(dtl_data *d, const char *path, const dtl_data_opts *o, dtl_err *err)
{
    memset(d, 0, sizeof *d);
    if (!opts_ok(o, err))
        return false;
    if (o->csv_label && !o->csv_header)
        return dtl_err_set(err, DTL_ERR_USAGE,
                           "%s: a label column named '%s' needs a header row", path, o->csv_label);
    rd r;
    size_t len;
    char *buf = NULL;
    if (!rd_open(&r, path, err))
        return false;
    buf = rd_all(&r, &len, err);
    rd_close(&r);
    if (!buf)
        return false;

    csv_row row = {0}, head = {0};
    csv_state s = {path, NULL, err};
    size_t elsize = dtl_dtype_size(o->dtype), ncols = 0, label = 0, ncols_line = 0;
    size_t nrows = 0, cap_rows = 0, lineno = 0;
    unsigned char *x = NULL;
    int64_t *y = NULL;
    bool ok = true, oom = false;
    char *p = buf, *end = buf + len;
    if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)   /* a UTF-8 byte order mark */
        p += 3;
    for (; ok && p < end; p++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end, *line = p;
        lineno++;
        p = le;   /* the loop's p++ steps over the '\n' */
        if (o->csv_skip > 0 && lineno <= (size_t)o->csv_skip)
            continue;   /* skip = N: a preamble such as scikit-learn's "569,30,malignant,…" */
        if (le > line && le[-1] == '\r')
            le--;
        char *q = line;
        while (q < le && csv_blank(*q))
            q++;
        if (q == le)
            continue;   /* empty line */
        char *nul = memchr(line, '\0', (size_t)(le - line));
        if (nul) {
            ok = dtl_err_set(err, DTL_ERR_FORMAT, "%s:%zu:%zu: NUL byte (not a text file?)", path,
                             lineno, (size_t)(nul - line) + 1);
            break;
        }
        const char *why;
        size_t col;
        if (!csv_split(line, (size_t)(le - line), &row, &why, &col, &oom)) {
            ok = oom ? dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", path)
                     : dtl_err_set(err, DTL_ERR_FORMAT, "%s:%zu:%zu: %s", path, lineno, col, why);
            break;
        }
        if (ncols == 0) {   /* the first non-empty line: the header or the first row */
            ncols = row.n;
            ncols_line = lineno;
            if (ncols < 2) {
                ok = dtl_err_set(err, DTL_ERR_FORMAT,
                                 "%s:%zu: found 1 column; rows need a label and features", path,
                                 lineno);
                break;
            }
            if (o->csv_header) {
                csv_row t = head;
                head = row;
                row = t;
                s.head = &head;
            }
            if (!csv_label_col(&s, o, ncols, lineno, &label, err)) {
                ok = false;
                break;
            }
            if (o->csv_header)
                continue;
        }
        if (row.n != ncols) {
            ok = dtl_err_set(err, DTL_ERR_FORMAT, "%s:%zu: expected %zu cells (as in line %zu), found %zu",
                             path, lineno, ncols, ncols_line, row.n);
            break;
        }
        if (nrows == cap_rows) {
            size_t cap = cap_rows ? cap_rows * 2 : 256;
            void *nx = NULL, *ny = NULL;
            if (cap <= SIZE_MAX / 8 / ncols) {
                nx = realloc(x, cap * (ncols - 1) * elsize);
                if (nx)
                    x = nx;
                ny = realloc(y, cap * sizeof *y);
                if (ny)
                    y = ny;
            }
            if (!nx || !ny) {
                ok = dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory at line %zu", path, lineno);
                break;
            }
            cap_rows = cap;
        }
        size_t f = nrows * (ncols - 1);
        for (size_t c = 0; ok && c < ncols; c++) {
            const csv_cell *cell = &row.cells[c];
            char *e;
            errno = 0;
            if (c == label && o->csv_regression) {
                double v = strtod(cell->text, &e);
                if (!*cell->text || *e)
                    ok = csv_cell_err(&s, lineno, cell, c, "target is not a number");
                else
                    memcpy(&y[nrows], &v, sizeof v);   /* y holds doubles until the end */
                continue;
            }
            if (c == label) {
                ll v = strtoll(cell->text, &e, 10);
                if (!*cell->text || *e)
                    ok = csv_cell_err(&s, lineno, cell, c, "label is not an integer");
                else if (v < 0)
                    ok = csv_cell_err(&s, lineno, cell, c, "label is negative");
                else if (errno == ERANGE || v > INT32_MAX)
                    ok = csv_cell_err(&s, lineno, cell, c, "label is larger than 2147483647");
                else
                    y[nrows] = v;
                continue;
            }
            double v = strtod(cell->text, &e);
            if (!*cell->text || *e)
                ok = csv_cell_err(&s, lineno, cell, c, "not a number");
            else if (o->dtype == DTL_DTYPE_F32)
                ((float *)x)[f++] = (float)(v * o->scale);
            else
                ((double *)x)[f++] = v * o->scale;
        }
        if (ok)
            nrows++;
    }
    if (ok && nrows == 0)
        ok = dtl_err_set(err, DTL_ERR_FORMAT, "%s: no data rows", path);
    if (ok) {
        d->n = (int64_t)nrows;
        d->ndim = 1;
        d->shape[0] = d->features = (int64_t)(ncols - 1);
        d->dtype = o->dtype;
        d->x = x;
        d->y = y;
        d->classes = 0;
        if (o->csv_regression) {   /* the targets, in the features' dtype */
            d->y = NULL;
            d->yf = y;
            for (size_t i = 0; i < nrows; i++) {
                double v;
                memcpy(&v, &y[i], sizeof v);
                if (o->dtype == DTL_DTYPE_F32)
                    ((float *)d->yf)[i] = (float)v;
                else
                    ((double *)d->yf)[i] = v;
            }
        }
        for (size_t i = 0; d->y && i < nrows; i++)
            if (y[i] + 1 > d->classes)
                d->classes = y[i] + 1;
    } else {
        free(x);
        free(y);
    }
    free(row.cells);
    free(head.cells);
    free(buf);
    return ok;
}

/* ---- finding a dataset -------------------------------------------------------------------- */

bool dtl_data_find_dir(const char *name, const char *const *dirs, size_t ndirs, char *out,
                       size_t outlen, dtl_err *err)
{
    char tried[400];
    size_t tl = 0;
    tried[0] = '\0';
    for (size_t i = 0; i < ndirs; i++) {
        const char *dir = dirs[i];
        if (!dir || !*dir)
            continue;
        size_t dl = strlen(dir);
        int k = snprintf(out, outlen, "%s%s%s", dir, dir[dl - 1] == '/' ? "" : "/", name);
        if (k < 0 || (size_t)k >= outlen)
            return dtl_err_set(err, DTL_ERR_USAGE, "%s/%s: path too long", dir, name);
        struct stat st;
        if (stat(out, &st) == 0 && S_ISDIR(st.st_mode))
            return true;
        if (tl < sizeof tried)
            tl += (size_t)snprintf(tried + tl, sizeof tried - tl, "%s%s", tl ? ", " : "", out);
    }
    if (outlen)
        out[0] = '\0';
    if (!tl)
        return dtl_err_set(err, DTL_ERR_IO, "dataset '%s' not found: no data directory given",
                           name);
    return dtl_err_set(err, DTL_ERR_IO, "dataset '%s' not found; looked in %s", name, tried);
}

/* ---- order and batches -------------------------------------------------------------------- */

void dtl_data_epoch_order(int64_t n, uint64_t seed, uint64_t epoch, bool shuffle,
                          int64_t *perm)
{
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    if (!shuffle)
        return;
    dtl_rng r;
    dtl_rng_init(&r, seed, dtl_rng_stream_id("shuffle", epoch));
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)dtl_rng_below(&r, (uint64_t)i + 1);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

int64_t dtl_data_steps(int64_t n, int64_t batch, int world, bool drop_last)
{
    if (n <= 0 || batch <= 0 || world <= 0 || batch > INT64_MAX / world)
        return 0;
    int64_t g = batch * world;
    return drop_last ? n / g : n / g + (n % g != 0);
}

int64_t dtl_data_batch_rows(int64_t n, int64_t batch, int world, int rank, int64_t step,
                            int64_t *start)
{
    int64_t s = (step * world + rank) * batch;
    *start = s;
    if (s >= n)
        return 0;
    return n - s < batch ? n - s : batch;
}

/* One row of a compact data set, converted as put_features would have. */
static void bytes_to_row(const dtl_data *d, const unsigned char *src, void *out)
{
    if (d->dtype == DTL_DTYPE_F32) {
        float *x = out;
        for (int64_t j = 0; j < d->features; j++)
            x[j] = (float)(src[j] * d->scale);
    } else {
        double *x = out;
        for (int64_t j = 0; j < d->features; j++)
            x[j] = src[j] * d->scale;
    }
}

void dtl_data_gather(const dtl_data *d, const int64_t *idx, int64_t count, void *x_out,
                     void *y_out)
{
    dtl_data_gather_at(d, 0, idx, count, x_out, y_out);
}

void dtl_data_gather_at(const dtl_data *d, int64_t off, const int64_t *idx, int64_t count,
                        void *x_out, void *y_out)
{
    size_t row = (size_t)d->features * dtl_dtype_size(d->dtype);
    for (int64_t i = 0; i < count; i++) {
        if (idx[i] < 0 || idx[i] >= d->n) {
            fprintf(stderr, "%s:%d: dtl_data_gather: row %lld out of range [0, %lld)\n",
                    __FILE__, __LINE__, (ll)idx[i], (ll)d->n);
            abort();
        }
        if (d->text && (off < 0 || off + d->n * d->context + 1 > d->text_len)) {
            fprintf(stderr, "%s:%d: dtl_data_gather_at: window offset %lld out of range\n",
                    __FILE__, __LINE__, (ll)off);
            abort();
        }
        if (d->text) {   /* a window: context ids, then the context bytes after each */
            const unsigned char *w = d->text + off + idx[i] * d->context;
            int64_t *x = (int64_t *)x_out + i * d->context, *y = (int64_t *)y_out + i * d->context;
            for (int64_t j = 0; j < d->context; j++) {
                x[j] = w[j];
                y[j] = w[j + 1];
            }
            continue;
        }
        if (d->bytes)
            bytes_to_row(d, d->bytes + (size_t)idx[i] * (size_t)d->features,
                         (char *)x_out + (size_t)i * row);
        else
            memcpy((char *)x_out + (size_t)i * row, (const char *)d->x + (size_t)idx[i] * row,
                   row);
        if (d->yf && d->dtype == DTL_DTYPE_F32)
            ((float *)y_out)[i] = ((const float *)d->yf)[idx[i]];
        else if (d->yf)
            ((double *)y_out)[i] = ((const double *)d->yf)[idx[i]];
        else
            ((int64_t *)y_out)[i] = d->y[idx[i]];
    }
}

/* ---- background loader -------------------------------------------------------------------- */

enum { LOADER_MAX_SLOTS = 8 };

struct dtl_loader {
    const dtl_data *data;
    dtl_loader_opts o;
    int64_t steps;
    int64_t *perm;
    int64_t off;         /* of a text set's windows in this epoch */
    dtl_batch slot[LOADER_MAX_SLOTS];
    pthread_t thread;
    bool running;        /* a producer thread exists (perhaps finished) and must be joined */
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* signalled whenever a counter or stop changes */
    /* Guarded by mu. Batch s lives in slot[s % slots]; produced - released <= slots. */
    int64_t produced, taken, released;
    bool stop;
};

static void *loader_main(void *arg)
{
    dtl_loader *l = arg;
    for (int64_t s = 0; s < l->steps; s++) {
        pthread_mutex_lock(&l->mu);
        while (!l->stop && s - l->released >= l->o.slots)
            pthread_cond_wait(&l->cv, &l->mu);
        bool stop = l->stop;
        pthread_mutex_unlock(&l->mu);
        if (stop)
            break;
        /* The slot is free: the consumer has released batch s - slots. */
        dtl_batch *b = &l->slot[s % l->o.slots];
        int64_t start;
        b->step = s;
        b->rows = dtl_data_batch_rows(l->data->n, l->o.batch, l->o.world, l->o.rank, s, &start);
        dtl_data_gather_at(l->data, l->off, l->perm + start, b->rows, b->x, b->y);
        pthread_mutex_lock(&l->mu);
        l->produced = s + 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
    }
    return NULL;
}

static void loader_stop(dtl_loader *l)
{
    if (!l->running)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    l->running = false;
}

dtl_loader *dtl_loader_new(const dtl_data *d, const dtl_loader_opts *o, dtl_err *err)
{
    if (o->batch <= 0 || o->world <= 0 || o->rank < 0 || o->rank >= o->world ||
        o->slots < 0 || o->slots > LOADER_MAX_SLOTS) {
        dtl_err_set(err, DTL_ERR_USAGE,
                    "bad loader options: batch %lld, rank %d of %d, %d slots (need batch > 0, "
                    "0 <= rank < world, 0..%d slots)",
                    (ll)o->batch, o->rank, o->world, o->slots, LOADER_MAX_SLOTS);
        return NULL;
    }
    int64_t steps = dtl_data_steps(d->n, o->batch, o->world, o->drop_last);
    if (steps == 0) {
        dtl_err_set(err, DTL_ERR_MISMATCH,
                    "the dataset has %lld rows, fewer than one batch of %lld rows per rank on "
                    "%d ranks",
                    (ll)d->n, (ll)o->batch, o->world);
        return NULL;
    }
    dtl_loader *l = calloc(1, sizeof *l);
    if (!l) {
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for the data loader");
        return NULL;
    }
    if (pthread_mutex_init(&l->mu, NULL) != 0) {
        free(l);
        dtl_err_set(err, DTL_ERR_NOMEM, "cannot create the data loader's mutex");
        return NULL;
    }
    if (pthread_cond_init(&l->cv, NULL) != 0) {
        pthread_mutex_destroy(&l->mu);
        free(l);
        dtl_err_set(err, DTL_ERR_NOMEM, "cannot create the data loader's condition variable");
        return NULL;
    }
    l->data = d;
    l->o = *o;
    if (!l->o.slots)
        l->o.slots = 2;
    l->steps = steps;
    uint64_t xbytes, ybytes;
    bool ok = mul_ok((uint64_t)o->batch, (uint64_t)d->features, &xbytes) &&
              mul_ok(xbytes, dtl_dtype_size(d->dtype), &xbytes) && xbytes <= SIZE_MAX &&
              mul_ok((uint64_t)o->batch, (uint64_t)dtl_data_ylen(d), &ybytes) &&
              mul_ok(ybytes, dtl_dtype_size(dtl_data_ydtype(d)), &ybytes) &&
              ybytes <= SIZE_MAX &&
              (l->perm = malloc((size_t)d->n * sizeof *l->perm)) != NULL;
    for (int i = 0; ok && i < l->o.slots; i++)
        ok = (l->slot[i].x = malloc((size_t)xbytes)) != NULL &&
             (l->slot[i].y = malloc((size_t)ybytes)) != NULL;
    if (!ok) {
        dtl_loader_free(l);
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for the data loader's batches");
        return NULL;
    }
    return l;
}

int64_t dtl_loader_steps(const dtl_loader *l)
{
    return l->steps;
}

bool dtl_loader_start_epoch(dtl_loader *l, uint64_t epoch, dtl_err *err)
{
    loader_stop(l);
    dtl_data_epoch_order(l->data->n, l->o.seed, epoch, l->o.shuffle, l->perm);
    l->off = dtl_data_text_offset(l->data, l->o.seed, epoch, l->o.shuffle);
    l->produced = l->taken = l->released = 0;
    l->stop = false;
    int rc = pthread_create(&l->thread, NULL, loader_main, l);
    if (rc != 0)
        return dtl_err_set(err, DTL_ERR_NOMEM, "cannot start the data loader's thread: %s",
                           strerror(rc));
    l->running = true;
    return true;
}

const dtl_batch *dtl_loader_next(dtl_loader *l)
{
    if (!l->running || l->taken == l->steps)
        return NULL;
    pthread_mutex_lock(&l->mu);
    while (l->produced <= l->taken)
        pthread_cond_wait(&l->cv, &l->mu);
    const dtl_batch *b = &l->slot[l->taken % l->o.slots];
    l->taken++;
    pthread_mutex_unlock(&l->mu);
    return b;
}

void dtl_loader_release(dtl_loader *l, const dtl_batch *b)
{
    pthread_mutex_lock(&l->mu);
    if (l->released >= l->taken || b != &l->slot[l->released % l->o.slots]) {
        fprintf(stderr, "%s:%d: dtl_loader_release: batch released out of order\n", __FILE__,
                __LINE__);
        abort();
    }
    l->released++;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void dtl_loader_free(dtl_loader *l)
{
    if (!l)
        return;
    loader_stop(l);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    for (int i = 0; i < LOADER_MAX_SLOTS; i++) {
        free(l->slot[i].x);
        free(l->slot[i].y);
    }
    free(l->perm);
    free(l);
}
