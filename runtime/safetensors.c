/* runtime/safetensors.c — the safetensors writer and its checking reader.
 *
 * Writing builds the header text in an arena (runtime/json.h's writer, which escapes names
 * and metadata), pads it with spaces to an 8-byte boundary and hands the length prefix, the
 * header and each tensor's bytes, as pieces, to dtl_fs_write_atomic: no copy of the data.
 *
 * Reading works in two phases so that a bad file costs little: first the length prefix and
 * the header (bounded by ST_MAX_HEADER), parsed and checked in full — each tensor on its
 * own, then names for duplicates (sorted; the sorted index also serves dtl_st_find), then
 * the layout (the tensors sorted by offset must tile [0, total) with no overlap and no gap),
 * then total against the file's size; only then is the data read, in one allocation, and
 * the tensors pointed into it. A tensor whose offset is not a multiple of its element size
 * (legal, if rare) gets an aligned copy. Everything but the data lives in the file's arena;
 * an allocation failure there longjmps back to dtl_st_read, which frees the partly built
 * file (fd and header included: they hang off it) and reports out of memory.
 */
#include "safetensors.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "fsutil.h"
#include "json.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "runtime/safetensors.c uses tensor data in place: little-endian hosts only"
#endif

#define ST_MAX_HEADER 100000000ull /* 100 MB: a larger header length means a wrong file */

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    [DTL_ST_F32] = {"F32", 4}, [DTL_ST_F64] = {"F64", 8},   [DTL_ST_F16] = {"F16", 2},
    [DTL_ST_BF16] = {"BF16", 2}, [DTL_ST_I32] = {"I32", 4}, [DTL_ST_I64] = {"I64", 8},
    [DTL_ST_U8] = {"U8", 1},   [DTL_ST_BOOL] = {"BOOL", 1},
};
static_assert(sizeof st_dtypes / sizeof st_dtypes[0] == DTL_ST_DTYPE_COUNT,
              "st_dtypes must have one row per dtl_st_dtype");

static const dtl_st_dtype st_from_dtl[] = {
    [DTL_DTYPE_F32] = DTL_ST_F32, [DTL_DTYPE_F64] = DTL_ST_F64,   [DTL_DTYPE_F16] = DTL_ST_F16,
    [DTL_DTYPE_BF16] = DTL_ST_BF16, [DTL_DTYPE_I32] = DTL_ST_I32, [DTL_DTYPE_I64] = DTL_ST_I64,
    [DTL_DTYPE_BOOL] = DTL_ST_BOOL,
};
static_assert(sizeof st_from_dtl / sizeof st_from_dtl[0] == DTL_DTYPE_COUNT,
              "st_from_dtl must have one row per dtl_dtype");

const char *dtl_st_dtype_name(dtl_st_dtype t)
{
    return (unsigned)t < DTL_ST_DTYPE_COUNT ? st_dtypes[t].name : "?";
}

size_t dtl_st_dtype_size(dtl_st_dtype t)
{
    return (unsigned)t < DTL_ST_DTYPE_COUNT ? st_dtypes[t].size : 0;
}

dtl_st_dtype dtl_st_dtype_from(dtl_dtype t)
{
    return (unsigned)t < DTL_DTYPE_COUNT ? st_from_dtl[t] : DTL_ST_DTYPE_COUNT;
}

bool dtl_st_dtype_to(dtl_st_dtype t, dtl_dtype *out)
{
    for (unsigned d = 0; d < DTL_DTYPE_COUNT; d++)
        if (st_from_dtl[d] == t) {
            *out = (dtl_dtype)d;
            return true;
        }
    return false;
}

/* ---- shared helpers ------------------------------------------------------------------------ */

/* s[0..n) for a message: at most 48 bytes (cut at a UTF-8 boundary, then "..."), control
 * bytes shown as '?'. */
static const char *st_show(char buf[64], const char *s, size_t n)
{
    size_t k = n;
    if (k > 48) {
        k = 48;
        while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
            k--;
    }
    for (size_t i = 0; i < k; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    strcpy(buf + k, k < n ? "..." : "");
    return buf;
}

static const char *st_shape_str(char buf[256], const int64_t *shape, uint32_t rank)
{
    size_t k = 0;
    buf[k++] = '[';
    for (uint32_t d = 0; d < rank; d++)
        k += (size_t)snprintf(buf + k, 256 - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    snprintf(buf + k, 256 - k, "]");
    return buf;
}

/* Bytes of a tensor: product(shape) * element size; false on overflow. Dims are >= 0. */
static bool st_nbytes(const int64_t *shape, uint32_t rank, dtl_st_dtype t, uint64_t *out)
{
    for (uint32_t d = 0; d < rank; d++)
        if (shape[d] == 0) {
            *out = 0;
            return true;
        }
    uint64_t n = dtl_st_dtype_size(t);
    for (uint32_t d = 0; d < rank; d++) {
        uint64_t dim = (uint64_t)shape[d];
        if (n > UINT64_MAX / dim)
            return false;
        n *= dim;
    }
    if (n > SIZE_MAX)
        return false;
    *out = n;
    return true;
}

static int st_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---- writer -------------------------------------------------------------------------------- */

static bool st_write(dtl_arena *a, const char *path, const dtl_st_tensor *t, size_t n,
                     const dtl_st_meta *meta, size_t nmeta, dtl_err *err)
{
    char nb[64], sb[256];
    if ((n && !t) || (nmeta && !meta))
        return dtl_err_set(err, DTL_ERR_USAGE, "%s: NULL tensor or metadata array", path);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = t[i].name;
        if (!name)
            return dtl_err_set(err, DTL_ERR_USAGE, "%s: tensor %zu has no name", path, i);
        size_t nl = strlen(name);
        const char *shown = st_show(nb, name, nl);
        if (!dtl_json_utf8_valid(name, nl))
            return dtl_err_set(err, DTL_ERR_USAGE, "%s: tensor name '%s' is not valid UTF-8",
                               path, shown);
        if (strcmp(name, "__metadata__") == 0)
            return dtl_err_set(err, DTL_ERR_USAGE,
                               "%s: \"__metadata__\" is reserved, not a tensor name", path);
        if ((unsigned)t[i].dtype >= DTL_ST_DTYPE_COUNT)
            return dtl_err_set(err, DTL_ERR_USAGE, "%s: tensor '%s': invalid dtype %d", path,
                               shown, (int)t[i].dtype);
        if (t[i].rank > DTL_ST_MAX_RANK)
            return dtl_err_set(err, DTL_ERR_USAGE, "%s: tensor '%s': rank %u is more than %d",
                               path, shown, (unsigned)t[i].rank, DTL_ST_MAX_RANK);
        for (uint32_t d = 0; d < t[i].rank; d++)
            if (t[i].shape[d] < 0)
                return dtl_err_set(err, DTL_ERR_USAGE, "%s: tensor '%s': negative dimension %lld",
                                   path, shown, (long long)t[i].shape[d]);
        st_shape_str(sb, t[i].shape, t[i].rank);
        uint64_t bytes;
        if (!st_nbytes(t[i].shape, t[i].rank, t[i].dtype, &bytes))
            return dtl_err_set(err, DTL_ERR_USAGE, "%s: tensor '%s': shape %s is too large",
                               path, shown, sb);
        if (bytes != t[i].nbytes)
            return dtl_err_set(err, DTL_ERR_USAGE,
                               "%s: tensor '%s': nbytes is %zu, but %s %s needs %llu", path,
                               shown, t[i].nbytes, dtl_st_dtype_name(t[i].dtype), sb,
                               (unsigned long long)bytes);
        if (bytes && !t[i].data)
            return dtl_err_set(err, DTL_ERR_USAGE, "%s: tensor '%s' has no data", path, shown);
        if (bytes > UINT64_MAX - total)
            return dtl_err_set(err, DTL_ERR_USAGE, "%s: too much data", path);
        total += bytes;
    }
    const char **names = dtl_arena_array(a, n, sizeof *names);
    for (size_t i = 0; i < n; i++)
        names[i] = t[i].name;
    qsort(names, n, sizeof *names, st_cmp_str);
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            return dtl_err_set(err, DTL_ERR_USAGE, "%s: two tensors are named '%s'", path,
                               st_show(nb, names[i], strlen(names[i])));
    const char **keys = dtl_arena_array(a, nmeta, sizeof *keys);
    for (size_t i = 0; i < nmeta; i++) {
        const char *k = meta[i].key, *v = meta[i].value;
        if (!k || !v)
            return dtl_err_set(err, DTL_ERR_USAGE, "%s: metadata entry %zu has no %s", path, i,
                               k ? "value" : "key");
        if (!dtl_json_utf8_valid(k, strlen(k)) || !dtl_json_utf8_valid(v, strlen(v)))
            return dtl_err_set(err, DTL_ERR_USAGE, "%s: metadata '%s' is not valid UTF-8",
                               path, st_show(nb, k, strlen(k)));
        keys[i] = k;
    }
    qsort(keys, nmeta, sizeof *keys, st_cmp_str);
    for (size_t i = 1; i < nmeta; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0)
            return dtl_err_set(err, DTL_ERR_USAGE, "%s: metadata key '%s' given twice", path,
                               st_show(nb, keys[i], strlen(keys[i])));

    dtl_json_out o;
    dtl_json_out_init(&o, a);
    dtl_json_out_cstr(&o, "{");
    if (nmeta) {
        dtl_json_out_cstr(&o, "\"__metadata__\":{");
        for (size_t i = 0; i < nmeta; i++) {
            if (i)
                dtl_json_out_cstr(&o, ",");
            dtl_json_out_string(&o, meta[i].key, strlen(meta[i].key));
            dtl_json_out_cstr(&o, ":");
            dtl_json_out_string(&o, meta[i].value, strlen(meta[i].value));
        }
        dtl_json_out_cstr(&o, "}");
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        if (i || nmeta)
            dtl_json_out_cstr(&o, ",");
        dtl_json_out_string(&o, t[i].name, strlen(t[i].name));
        dtl_json_out_cstr(&o, ":{\"dtype\":\"");
        dtl_json_out_cstr(&o, dtl_st_dtype_name(t[i].dtype));
        dtl_json_out_cstr(&o, "\",\"shape\":[");
        for (uint32_t d = 0; d < t[i].rank; d++) {
            if (d)
                dtl_json_out_cstr(&o, ",");
            dtl_json_out_u64(&o, (uint64_t)t[i].shape[d]);
        }
        dtl_json_out_cstr(&o, "],\"data_offsets\":[");
        dtl_json_out_u64(&o, offset);
        dtl_json_out_cstr(&o, ",");
        offset += t[i].nbytes;
        dtl_json_out_u64(&o, offset);
        dtl_json_out_cstr(&o, "]}");
    }
    dtl_json_out_cstr(&o, "}");
    while ((8 + o.len) % 8 != 0)
        dtl_json_out_cstr(&o, " ");
    if (o.len > ST_MAX_HEADER)
        return dtl_err_set(err, DTL_ERR_USAGE,
                           "%s: header would be %zu bytes, more than readers accept (100 MB)",
                           path, o.len);

    unsigned char *prefix = dtl_arena_alloc(a, 8);
    for (int i = 0; i < 8; i++)
        prefix[i] = (unsigned char)((uint64_t)o.len >> (8 * i));
    dtl_fs_piece *pieces = dtl_arena_array(a, n + 2, sizeof *pieces);
    size_t np = 0;
    pieces[np++] = (dtl_fs_piece){prefix, 8};
    pieces[np++] = (dtl_fs_piece){o.buf, o.len};
    for (size_t i = 0; i < n; i++)
        if (t[i].nbytes)
            pieces[np++] = (dtl_fs_piece){t[i].data, t[i].nbytes};
    return dtl_fs_write_atomic(path, pieces, np, err);
}

bool dtl_st_write(const char *path, const dtl_st_tensor *t, size_t n, const dtl_st_meta *meta,
                  size_t nmeta, dtl_err *err)
{
    /* On the heap, not in this frame: it changes between setjmp and a longjmp. (volatile:
     * the pointer itself does not change, but gcc's -Wclobbered cannot know that.) */
    dtl_arena *volatile a = malloc(sizeof *a);
    if (!a)
        return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", path);
    dtl_arena_init(a);
    jmp_buf jb;
    a->oom_jump = &jb;
    if (setjmp(jb)) {
        dtl_arena_free(a);
        free(a);
        return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory building the header", path);
    }
    bool ok = st_write(a, path, t, n, meta, nmeta, err);
    dtl_arena_free(a);
    free(a);
    return ok;
}

/* ---- reader -------------------------------------------------------------------------------- */

struct dtl_st_file {
    dtl_arena arena;                 /* tensors, names, metadata, aligned copies */
    int fd;                          /* open while reading, then -1 */
    char *header;                    /* the raw header while reading, then NULL */
    unsigned char *data;             /* the data buffer (malloc) */
    dtl_st_tensor *tensors;          /* file order */
    size_t ntensors;
    const dtl_st_tensor **by_name;   /* sorted by name */
    dtl_st_meta *meta;               /* file order */
    size_t nmeta;
};

typedef struct st_span {
    uint64_t begin, end;
    size_t i; /* index into tensors */
} st_span;

static void st_file_free(dtl_st_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    free(f->header);
    free(f->data);
    dtl_arena_free(&f->arena);
    free(f);
}

/* Reads up to n bytes; *got is how many were read (fewer only at end of file). */
static bool st_read_full(int fd, void *buf, size_t n, size_t *got)
{
    unsigned char *p = buf;
    *got = 0;
    while (*got < n) {
        size_t chunk = n - *got < ((size_t)1 << 30) ? n - *got : ((size_t)1 << 30);
        ssize_t k = read(fd, p + *got, chunk);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        if (k == 0)
            break;
        *got += (size_t)k;
    }
    return true;
}

static int st_cmp_span(const void *a, const void *b)
{
    const st_span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

static int st_cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const dtl_st_tensor *const *)a)->name,
                  (*(const dtl_st_tensor *const *)b)->name);
}

static int st_cmp_meta_key(const void *a, const void *b)
{
    return strcmp((*(const dtl_st_meta *const *)a)->key, (*(const dtl_st_meta *const *)b)->key);
}

/* One header entry, name -> {dtype, shape, data_offsets}, into *t and *span. */
static bool st_tensor(const char *path, const dtl_json_member *m, dtl_st_tensor *t,
                      st_span *span, dtl_err *err)
{
    char nb[64], vb[64], sb[256];
    const char *nm = st_show(nb, m->key, m->key_len);
    if (strlen(m->key) != m->key_len)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: tensor name '%s' contains a NUL character",
                           path, nm);
    t->name = m->key;
    const dtl_json *v = m->value;
    if (v->kind != DTL_JSON_OBJECT)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object",
                           path, nm);

    const dtl_json *dt = dtl_json_get(v, "dtype");
    if (!dt)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: tensor '%s': missing \"dtype\"", path, nm);
    if (dt->kind != DTL_JSON_STRING)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: tensor '%s': \"dtype\" is not a string",
                           path, nm);
    t->dtype = DTL_ST_DTYPE_COUNT;
    for (unsigned d = 0; d < DTL_ST_DTYPE_COUNT; d++)
        if (strlen(st_dtypes[d].name) == dt->str_len &&
            memcmp(st_dtypes[d].name, dt->str, dt->str_len) == 0)
            t->dtype = (dtl_st_dtype)d;
    if (t->dtype == DTL_ST_DTYPE_COUNT)
        return dtl_err_set(err, DTL_ERR_FORMAT,
                           "%s: tensor '%s': unknown dtype \"%s\" (known: F32 F64 F16 BF16 I32 "
                           "I64 U8 BOOL)",
                           path, nm, st_show(vb, dt->str, dt->str_len));

    const dtl_json *sh = dtl_json_get(v, "shape");
    if (!sh)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: tensor '%s': missing \"shape\"", path, nm);
    if (sh->kind != DTL_JSON_ARRAY)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: tensor '%s': \"shape\" is not an array",
                           path, nm);
    if (sh->count > DTL_ST_MAX_RANK)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: tensor '%s': rank %zu is more than %d",
                           path, nm, sh->count, DTL_ST_MAX_RANK);
    t->rank = (uint32_t)sh->count;
    for (size_t d = 0; d < sh->count; d++) {
        uint64_t dim;
        if (!dtl_json_u64(sh->elems[d], &dim) || dim > INT64_MAX)
            return dtl_err_set(err, DTL_ERR_FORMAT,
                               "%s: tensor '%s': \"shape\" element %zu is not a non-negative "
                               "integer (below 2^63)",
                               path, nm, d);
        t->shape[d] = (int64_t)dim;
    }

    const dtl_json *off = dtl_json_get(v, "data_offsets");
    if (!off)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: tensor '%s': missing \"data_offsets\"", path,
                           nm);
    if (off->kind != DTL_JSON_ARRAY || off->count != 2 ||
        !dtl_json_u64(off->elems[0], &span->begin) || !dtl_json_u64(off->elems[1], &span->end))
        return dtl_err_set(err, DTL_ERR_FORMAT,
                           "%s: tensor '%s': \"data_offsets\" is not [begin, end] (two "
                           "non-negative integers)",
                           path, nm);
    if (span->end < span->begin)
        return dtl_err_set(err, DTL_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
                           path, nm, (unsigned long long)span->begin,
                           (unsigned long long)span->end);
    st_shape_str(sb, t->shape, t->rank);
    uint64_t bytes;
    if (!st_nbytes(t->shape, t->rank, t->dtype, &bytes))
        return dtl_err_set(err, DTL_ERR_FORMAT,
                           "%s: tensor '%s': shape %s is too large (its byte count overflows)",
                           path, nm, sb);
    if (span->end - span->begin != bytes)
        return dtl_err_set(err, DTL_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, but %s %s "
                           "needs %llu",
                           path, nm, (unsigned long long)span->begin,
                           (unsigned long long)span->end,
                           (unsigned long long)(span->end - span->begin),
                           st_dtypes[t->dtype].name, sb, (unsigned long long)bytes);
    t->nbytes = (size_t)bytes;
    return true;
}

static bool st_metadata(dtl_st_file *f, const char *path, const dtl_json *m, dtl_err *err)
{
    char nb[64];
    if (m->kind != DTL_JSON_OBJECT)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: \"__metadata__\" is not a JSON object",
                           path);
    f->meta = dtl_arena_array(&f->arena, m->count, sizeof *f->meta);
    f->nmeta = m->count;
    const dtl_st_meta **sorted = dtl_arena_array(&f->arena, m->count, sizeof *sorted);
    for (size_t i = 0; i < m->count; i++) {
        const dtl_json_member *e = &m->members[i];
        const char *k = st_show(nb, e->key, e->key_len);
        if (strlen(e->key) != e->key_len)
            return dtl_err_set(err, DTL_ERR_FORMAT,
                               "%s: metadata key '%s' contains a NUL character", path, k);
        if (e->value->kind != DTL_JSON_STRING)
            return dtl_err_set(err, DTL_ERR_FORMAT, "%s: metadata '%s' is not a string", path,
                               k);
        if (strlen(e->value->str) != e->value->str_len)
            return dtl_err_set(err, DTL_ERR_FORMAT,
                               "%s: metadata '%s' contains a NUL character", path, k);
        f->meta[i] = (dtl_st_meta){e->key, e->value->str};
        sorted[i] = &f->meta[i];
    }
    qsort(sorted, m->count, sizeof *sorted, st_cmp_meta_key);
    for (size_t i = 1; i < m->count; i++)
        if (strcmp(sorted[i - 1]->key, sorted[i]->key) == 0)
            return dtl_err_set(err, DTL_ERR_FORMAT, "%s: metadata key '%s' appears twice", path,
                               st_show(nb, sorted[i]->key, strlen(sorted[i]->key)));
    return true;
}

static bool st_read(dtl_st_file *f, const char *path, dtl_err *err)
{
    char nb[64], nb2[64];
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is then refused below);
     * reads of regular files ignore the flag. */
    f->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f->fd < 0)
        return dtl_err_set(err, DTL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(f->fd, &sb) != 0)
        return dtl_err_set(err, DTL_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return dtl_err_set(err, DTL_ERR_IO, "%s: is a directory", path);
    if (!S_ISREG(sb.st_mode))
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: not a regular file", path);
    uint64_t fsize = (uint64_t)sb.st_size;
    if (fsize < 8)
        return dtl_err_set(err, DTL_ERR_FORMAT,
                           "%s: file is %llu bytes, shorter than the 8-byte header length: "
                           "not a safetensors file",
                           path, (unsigned long long)fsize);

    unsigned char lenb[8];
    size_t got;
    if (!st_read_full(f->fd, lenb, 8, &got))
        return dtl_err_set(err, DTL_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    if (got < 8)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: truncated while being read", path);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)lenb[i] << (8 * i);
    if (hlen > ST_MAX_HEADER)
        return dtl_err_set(err, DTL_ERR_FORMAT,
                           "%s: header length %llu is absurd (more than 100 MB): not a "
                           "safetensors file",
                           path, (unsigned long long)hlen);
    if (hlen > fsize - 8)
        return dtl_err_set(err, DTL_ERR_FORMAT,
                           "%s: truncated: header length %llu is larger than the rest of the "
                           "file (%llu bytes)",
                           path, (unsigned long long)hlen, (unsigned long long)(fsize - 8));
    f->header = malloc((size_t)hlen + 1);
    if (!f->header)
        return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory for the header", path);
    if (!st_read_full(f->fd, f->header, (size_t)hlen, &got))
        return dtl_err_set(err, DTL_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    if (got < hlen)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: truncated while being read", path);

    char jmsg[200];
    dtl_json *root = dtl_json_parse(&f->arena, f->header, (size_t)hlen, jmsg, sizeof jmsg);
    if (!root)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: header is not valid JSON: %s", path, jmsg);
    if (root->kind != DTL_JSON_OBJECT)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: header is not a JSON object", path);

    const dtl_json *meta = NULL;
    size_t nt = 0;
    for (size_t i = 0; i < root->count; i++) {
        const dtl_json_member *m = &root->members[i];
        if (m->key_len == 12 && memcmp(m->key, "__metadata__", 12) == 0) {
            if (meta)
                return dtl_err_set(err, DTL_ERR_FORMAT, "%s: \"__metadata__\" appears twice",
                                   path);
            meta = m->value;
        } else {
            nt++;
        }
    }
    f->tensors = dtl_arena_array(&f->arena, nt, sizeof *f->tensors);
    st_span *spans = dtl_arena_array(&f->arena, nt, sizeof *spans);
    for (size_t i = 0, k = 0; i < root->count; i++) {
        const dtl_json_member *m = &root->members[i];
        if (m->value == meta)
            continue;
        if (!st_tensor(path, m, &f->tensors[k], &spans[k], err))
            return false;
        spans[k].i = k;
        k++;
    }
    f->ntensors = nt;
    if (meta && !st_metadata(f, path, meta, err))
        return false;

    f->by_name = dtl_arena_array(&f->arena, nt, sizeof *f->by_name);
    for (size_t i = 0; i < nt; i++)
        f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, nt, sizeof *f->by_name, st_cmp_tensor_name);
    for (size_t i = 1; i < nt; i++)
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0)
            return dtl_err_set(err, DTL_ERR_FORMAT, "%s: tensor name '%s' appears twice", path,
                               st_show(nb, f->by_name[i]->name, strlen(f->by_name[i]->name)));

    qsort(spans, nt, sizeof *spans, st_cmp_span);
    uint64_t pos = 0;
    for (size_t j = 0; j < nt; j++) {
        const dtl_st_tensor *t = &f->tensors[spans[j].i];
        if (spans[j].begin < pos) {
            const dtl_st_tensor *p = &f->tensors[spans[j - 1].i];
            return dtl_err_set(err, DTL_ERR_FORMAT,
                               "%s: data of tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] "
                               "overlap",
                               path, st_show(nb, p->name, strlen(p->name)),
                               (unsigned long long)spans[j - 1].begin, (unsigned long long)pos,
                               st_show(nb2, t->name, strlen(t->name)),
                               (unsigned long long)spans[j].begin,
                               (unsigned long long)spans[j].end);
        }
        if (spans[j].begin > pos)
            return dtl_err_set(err, DTL_ERR_FORMAT,
                               "%s: bytes [%llu, %llu) of the data belong to no tensor (the "
                               "gap before tensor '%s')",
                               path, (unsigned long long)pos, (unsigned long long)spans[j].begin,
                               st_show(nb, t->name, strlen(t->name)));
        pos = spans[j].end;
    }
    uint64_t dsize = fsize - 8 - hlen;
    if (pos > dsize)
        return dtl_err_set(err, DTL_ERR_FORMAT,
                           "%s: truncated: header says %llu bytes of data, file has %llu", path,
                           (unsigned long long)pos, (unsigned long long)dsize);
    if (pos < dsize)
        return dtl_err_set(err, DTL_ERR_FORMAT,
                           "%s: %llu bytes after the last tensor's data belong to no tensor "
                           "(header says %llu bytes of data, file has %llu)",
                           path, (unsigned long long)(dsize - pos), (unsigned long long)pos,
                           (unsigned long long)dsize);

    f->data = malloc(dsize ? (size_t)dsize : 1);
    if (!f->data)
        return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory for %llu bytes of data", path,
                           (unsigned long long)dsize);
    if (!st_read_full(f->fd, f->data, (size_t)dsize, &got))
        return dtl_err_set(err, DTL_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    if (got < dsize)
        return dtl_err_set(err, DTL_ERR_FORMAT, "%s: truncated while being read", path);
    close(f->fd);
    f->fd = -1;
    free(f->header);
    f->header = NULL;

    for (size_t j = 0; j < nt; j++) {
        dtl_st_tensor *t = &f->tensors[spans[j].i];
        unsigned char *p = t->nbytes ? f->data + spans[j].begin : f->data; /* aligned */
        if (t->nbytes && spans[j].begin % st_dtypes[t->dtype].size != 0) {
            unsigned char *copy = dtl_arena_alloc(&f->arena, t->nbytes);
            memcpy(copy, p, t->nbytes);
            p = copy;
        }
        t->data = p;
    }
    return true;
}

dtl_st_file *dtl_st_read(const char *path, dtl_err *err)
{
    dtl_st_file *volatile f = calloc(1, sizeof *f); /* volatile: see dtl_st_write */
    if (!f) {
        dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    f->fd = -1;
    dtl_arena_init(&f->arena);
    jmp_buf jb;
    f->arena.oom_jump = &jb;
    if (setjmp(jb)) {
        st_file_free(f);
        dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    if (!st_read(f, path, err)) {
        st_file_free(f);
        return NULL;
    }
    f->arena.oom_jump = NULL; /* jb dies with this frame; f allocates nothing more */
    return f;
}

size_t dtl_st_count(const dtl_st_file *f)
{
    return f->ntensors;
}

const dtl_st_tensor *dtl_st_get(const dtl_st_file *f, size_t i)
{
    return i < f->ntensors ? &f->tensors[i] : NULL;
}

static int st_cmp_find(const void *key, const void *elem)
{
    return strcmp(key, (*(const dtl_st_tensor *const *)elem)->name);
}

const dtl_st_tensor *dtl_st_find(const dtl_st_file *f, const char *name)
{
    if (f->ntensors == 0)
        return NULL;
    const dtl_st_tensor *const *hit =
        bsearch(name, f->by_name, f->ntensors, sizeof *f->by_name, st_cmp_find);
    return hit ? *hit : NULL;
}

size_t dtl_st_meta_count(const dtl_st_file *f)
{
    return f->nmeta;
}

const dtl_st_meta *dtl_st_meta_at(const dtl_st_file *f, size_t i)
{
    return i < f->nmeta ? &f->meta[i] : NULL;
}

const char *dtl_st_meta_get(const dtl_st_file *f, const char *key)
{
    for (size_t i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    return NULL;
}

void dtl_st_close(dtl_st_file *f)
{
    if (f)
        st_file_free(f);
}
