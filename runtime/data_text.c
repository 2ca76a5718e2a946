/* runtime/data_text.c — text data sets (next-byte windows) and the preparation of tables:
 * a held-out test part, feature statistics and standardization.
 *
 * Design. A text split is one byte string, built once: the files are read whole (through
 * zlib's gz* functions, so a .gz file works too), cut into documents at separator lines, and
 * the split's documents are appended to one growing buffer, each followed by its separator
 * line, so the string looks like the original files with the other split's documents taken
 * out. Nothing else is stored: a training row is a window of that string, made when a batch
 * is gathered (runtime/data.c), at a position that depends on the epoch's offset and the
 * row's index, so the 1.4 MB fortune corpus costs 1.4 MB, not a window per byte. The held-out
 * part of a table is a seeded shuffle of the row indices, cut and sorted back into file order,
 * and rows are moved in place; statistics are summed in f64 over the rows as they are.
 */
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "philox.h"

typedef long long ll;

/* ---- reading --------------------------------------------------------------------------- */

typedef struct buf {
    unsigned char *p;
    size_t len, cap;
} buf;

static bool buf_add(buf *b, const void *src, size_t n)
{
    if (n > SIZE_MAX - b->len - 1)
        return false;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q)
            return false;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return true;
}

/* The whole (possibly gzip-compressed) file into b (emptied first). */
static bool read_file(const char *path, buf *b, dtl_err *err)
{
    b->len = 0;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return dtl_err_set(err, DTL_ERR_IO, "%s: cannot open: %s", path,
                           errno ? strerror(errno) : "out of memory");
    unsigned char chunk[65536];
    for (;;) {
        int k = gzread(f, chunk, sizeof chunk);
        if (k < 0) {
            int code;
            const char *msg = gzerror(f, &code);
            bool r = dtl_err_set(err, code == Z_ERRNO ? DTL_ERR_IO : DTL_ERR_FORMAT,
                                 "%s: cannot read: %s", path,
                                 code == Z_ERRNO ? strerror(errno) : msg);
            gzclose(f);
            return r;
        }
        if (k == 0)
            break;
        if (!buf_add(b, chunk, (size_t)k)) {
            gzclose(f);
            return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", path);
        }
    }
    gzclose(f);
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* The plain-text files of directory dir, as full paths in name order. */
static bool list_dir(const char *dir, char ***out, size_t *nout, dtl_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return dtl_err_set(err, DTL_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    bool ok = true;
    for (struct dirent *e; ok && (e = readdir(d));) {
        if (e->d_name[0] == '.' || ends_with(e->d_name, ".dat") || ends_with(e->d_name, ".u8"))
            continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(len);
        if (!p) {
            ok = dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", dir);
            break;
        }
        snprintf(p, len, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode)) {   /* symlinks, subdirectories */
            free(p);
            continue;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            char **q = realloc(names, nc * sizeof *q);
            if (!q) {
                free(p);
                ok = dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", dir);
                break;
            }
            names = q;
            cap = nc;
        }
        names[n++] = p;
    }
    closedir(d);
    if (ok && n == 0)
        ok = dtl_err_set(err, DTL_ERR_FORMAT, "%s: no plain-text files (regular files not "
                         "named .*, *.dat or *.u8)", dir);
    if (!ok) {
        free_names(names, n);
        return false;
    }
    qsort(names, n, sizeof *names, cmp_names);
    *out = names;
    *nout = n;
    return true;
}

/* ---- documents --------------------------------------------------------------------------- */

typedef struct splitter {
    const dtl_text_opts *o;
    size_t seplen;
    int64_t doc;      /* documents met so far */
    buf out;
} splitter;

/* Appends document [p, p+n) to the output when it belongs to the split. */
static bool take_doc(splitter *s, const unsigned char *p, size_t n)
{
    if (n == 0)
        return true;   /* empty documents (two separators in a row) are not counted */
    int64_t i = s->doc++;
    bool is_test = s->o->test_every > 0 && i % s->o->test_every == s->o->test_every - 1;
    if (is_test != s->o->test)
        return true;
    if (!buf_add(&s->out, p, n))
        return false;
    if (!s->seplen)
        return true;
    if (p[n - 1] != '\n' && !buf_add(&s->out, "\n", 1))
        return false;
    return buf_add(&s->out, s->o->separator, s->seplen) && buf_add(&s->out, "\n", 1);
}

/* Cuts one file's text into documents. */
static bool split_file(splitter *s, const unsigned char *p, size_t len)
{
    if (!s->seplen)
        return take_doc(s, p, len);
    size_t start = 0;
    for (size_t at = 0; at < len;) {
        const unsigned char *nl = memchr(p + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - p) : len, le = end;
        if (le > at && p[le - 1] == '\r')
            le--;
        size_t next = nl ? end + 1 : len;
        if (le - at == s->seplen && memcmp(p + at, s->o->separator, s->seplen) == 0) {
            if (!take_doc(s, p + start, at - start))
                return false;
            start = next;
        }
        at = next;
    }
    return take_doc(s, p + start, len - start);
}

bool dtl_data_load_text(dtl_data *d, const char *path, const dtl_text_opts *o, dtl_err *err)
{
    memset(d, 0, sizeof *d);
    if (o->context < 1 || o->context > (1 << 24) || o->test_every < 0)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s: bad text options: context %lld (1 to "
                           "2^24), test_every %lld (>= 0)", path, (ll)o->context,
                           (ll)o->test_every);
    if (o->test && o->test_every == 0)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s: no test split: say which documents are "
                           "held out with test_every = N", path);
    const char *sep = o->separator ? o->separator : "";
    if (strchr(sep, '\n'))
        return dtl_err_set(err, DTL_ERR_USAGE, "%s: the separator is one line: it must not "
                           "contain a newline", path);
    struct stat st;
    if (stat(path, &st) != 0)
        return dtl_err_set(err, DTL_ERR_IO, "%s: %s", path, strerror(errno));
    char **files = NULL;
    size_t nfiles = 0;
    char *one = NULL;
    if (S_ISDIR(st.st_mode)) {
        if (!list_dir(path, &files, &nfiles, err))
            return false;
    } else {
        one = strdup(path);
        if (!one)
            return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
        files = &one;
        nfiles = 1;
    }
    splitter s = {o, strlen(sep), 0, {0}};
    buf file = {0};
    bool ok = true;
    for (size_t i = 0; ok && i < nfiles; i++) {
        ok = read_file(files[i], &file, err);
        if (ok && memchr(file.p, '\0', file.len))
            ok = dtl_err_set(err, DTL_ERR_FORMAT, "%s: NUL byte (not a text file?)", files[i]);
        if (ok && !split_file(&s, file.p, file.len))
            ok = dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", files[i]);
    }
    free(file.p);
    if (one)
        free(one);
    else
        free_names(files, nfiles);
    if (ok && s.out.len < (size_t)o->context + 1)
        ok = dtl_err_set(err, DTL_ERR_FORMAT, "%s: the %s split has %zu bytes, fewer than one "
                         "window of context %lld + 1", path, o->test ? "test" : "train",
                         s.out.len, (ll)o->context);
    if (!ok) {
        free(s.out.p);
        return false;
    }
    d->text = s.out.p;
    d->text_len = (int64_t)s.out.len;
    d->context = o->context;
    d->n = (d->text_len - 1) / o->context;
    d->ndim = 1;
    d->shape[0] = d->features = o->context;
    d->dtype = DTL_DTYPE_I64;
    d->ylen = o->context;
    d->classes = 256;
    d->from_ints = true;
    d->scale = 1.0;
    return true;
}

int64_t dtl_data_text_offset(const dtl_data *d, uint64_t seed, uint64_t epoch, bool shuffle)
{
    if (!d->text || !shuffle)
        return 0;
    int64_t slack = (d->text_len - 1) - d->n * d->context;
    dtl_rng r;
    dtl_rng_init(&r, seed, dtl_rng_stream_id("window", epoch));
    return (int64_t)dtl_rng_below(&r, (uint64_t)slack + 1);
}

/* ---- tables: held-out rows, statistics, standardization -------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

bool dtl_data_holdout(dtl_data *d, double test_fraction, bool test, const char *what,
                      dtl_err *err)
{
    if (d->text)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s: a text set is split by documents", what);
    if (!(test_fraction > 0 && test_fraction < 1))
        return dtl_err_set(err, DTL_ERR_USAGE, "%s: the test fraction must be in (0, 1), "
                           "found %g", what, test_fraction);
    int64_t n = d->n, nt = (int64_t)llround((double)n * test_fraction);
    if (nt < 1)
        nt = 1;
    if (nt >= n)
        return dtl_err_set(err, DTL_ERR_MISMATCH, "%s: %lld rows are too few to hold out "
                           "%g of them for testing", what, (ll)n, test_fraction);
    int64_t *perm = malloc((size_t)n * sizeof *perm);
    if (!perm)
        return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", what);
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    dtl_rng r;
    dtl_rng_init(&r, 0, dtl_rng_stream_id("split", 0));
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)dtl_rng_below(&r, (uint64_t)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int64_t *keep = test ? perm + (n - nt) : perm, nk = test ? nt : n - nt;
    qsort(keep, (size_t)nk, sizeof *keep, cmp_i64);
    /* Rows move down in place: keep[i] >= i, in increasing order. */
    size_t xrow = d->bytes ? (size_t)d->features
                           : (size_t)d->features * dtl_dtype_size(d->dtype);
    unsigned char *x = d->bytes ? d->bytes : d->x;
    size_t yel = d->yf ? dtl_dtype_size(d->dtype) : sizeof(int64_t);
    unsigned char *y = d->yf ? d->yf : (unsigned char *)d->y;
    for (int64_t i = 0; i < nk; i++) {
        if (keep[i] == i)
            continue;
        memmove(x + (size_t)i * xrow, x + (size_t)keep[i] * xrow, xrow);
        if (y)
            memmove(y + (size_t)i * yel, y + (size_t)keep[i] * yel, yel);
    }
    free(perm);
    d->n = nk;
    if (d->y) {
        d->classes = 0;
        for (int64_t i = 0; i < nk; i++)
            if (d->y[i] + 1 > d->classes)
                d->classes = d->y[i] + 1;
    }
    return true;
}

static double feat(const dtl_data *d, int64_t i, int64_t j)
{
    size_t k = (size_t)i * (size_t)d->features + (size_t)j;
    if (d->bytes)
        return d->bytes[k] * d->scale;
    return d->dtype == DTL_DTYPE_F32 ? ((const float *)d->x)[k] : ((const double *)d->x)[k];
}

bool dtl_data_stats(const dtl_data *d, double *mean, double *sd, dtl_err *err)
{
    if (d->text || d->n < 1)
        return dtl_err_set(err, DTL_ERR_USAGE, "feature statistics need a table of rows");
    for (int64_t j = 0; j < d->features; j++) {
        double s = 0, q = 0;
        for (int64_t i = 0; i < d->n; i++)
            s += feat(d, i, j);
        double m = s / (double)d->n;
        for (int64_t i = 0; i < d->n; i++) {
            double e = feat(d, i, j) - m;
            q += e * e;
        }
        double v = sqrt(q / (double)d->n);
        mean[j] = m;
        sd[j] = v > 0 && isfinite(v) ? v : 1.0;
    }
    return true;
}

bool dtl_data_standardize(dtl_data *d, const double *mean, const double *sd, dtl_err *err)
{
    if (d->text)
        return dtl_err_set(err, DTL_ERR_USAGE, "a text set has no features to standardize");
    size_t count = (size_t)d->n * (size_t)d->features;
    if (d->bytes) {   /* compact bytes: expand to the dtype first */
        void *x = malloc(count * dtl_dtype_size(d->dtype) + 1);
        if (!x)
            return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory to standardize");
        for (size_t k = 0; k < count; k++) {
            double v = d->bytes[k] * d->scale;
            if (d->dtype == DTL_DTYPE_F32)
                ((float *)x)[k] = (float)v;
            else
                ((double *)x)[k] = v;
        }
        free(d->bytes);
        d->bytes = NULL;
        d->x = x;
    }
    for (size_t k = 0; k < count; k++) {
        size_t j = k % (size_t)d->features;
        if (d->dtype == DTL_DTYPE_F32) {
            float *x = d->x;
            x[k] = (float)(((double)x[k] - mean[j]) / sd[j]);
        } else {
            double *x = d->x;
            x[k] = (x[k] - mean[j]) / sd[j];
        }
    }
    return true;
}
