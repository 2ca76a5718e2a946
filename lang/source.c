#include "source.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

void dtl_src_init(dtl_srcmgr *sm, dtl_arena *arena)
{
    memset(sm, 0, sizeof *sm);
    sm->arena = arena;
}

/* Registers text that already lives in the arena with a NUL after it. */
static dtl_source *src_push(dtl_srcmgr *sm, const char *path, const char *text, size_t len)
{
    if (sm->nfiles == sm->cap) {
        uint32_t cap = sm->cap ? sm->cap * 2 : 8;
        sm->files = dtl_arena_grow(sm->arena, sm->files, sm->nfiles, cap, sizeof *sm->files);
        sm->cap = cap;
    }
    dtl_source *s = dtl_arena_alloc(sm->arena, sizeof *s);
    s->id = sm->nfiles + 1;
    s->path = dtl_arena_strdup(sm->arena, path);
    s->text = text;
    s->len = len;
    sm->files[sm->nfiles++] = s;
    return s;
}

dtl_source *dtl_src_add(dtl_srcmgr *sm, const char *path, const char *text, size_t len)
{
    return src_push(sm, path, dtl_arena_strndup(sm->arena, text, len), len);
}

dtl_source *dtl_src_read(dtl_srcmgr *sm, FILE *f, const char *name, char *why, size_t whylen)
{
    /* Read in chunks into the arena: works for pipes and files alike. A regular file's size
     * sizes the buffer up front, so no abandoned copies are left in the arena. */
    size_t cap = 64 * 1024, len = 0;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        (uint64_t)st.st_size < DTL_SOURCE_MAX_BYTES)
        cap = (size_t)st.st_size + 2;
    char *buf = dtl_arena_alloc(sm->arena, cap);
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= DTL_SOURCE_MAX_BYTES) {
                snprintf(why, whylen, "file is larger than %zu MiB", DTL_SOURCE_MAX_BYTES >> 20);
                return NULL;
            }
            buf = dtl_arena_grow(sm->arena, buf, len, cap * 2, 1);
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                snprintf(why, whylen, "%s", strerror(errno ? errno : EIO));
                return NULL;
            }
            break;
        }
    }
    buf[len] = '\0';
    return src_push(sm, name, buf, len);
}

dtl_source *dtl_src_load(dtl_srcmgr *sm, const char *path, char *why, size_t whylen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, whylen, "%s", strerror(errno));
        return NULL;
    }
    dtl_source *src = dtl_src_read(sm, f, path, why, whylen);
    fclose(f);
    return src;
}

dtl_source *dtl_src_get(const dtl_srcmgr *sm, uint32_t id)
{
    if (id == 0 || id > sm->nfiles)
        return NULL;
    return sm->files[id - 1];
}

void dtl_src_line(const dtl_source *s, uint32_t off, size_t *start, size_t *len)
{
    size_t o = off > s->len ? s->len : off;
    size_t b = o, e = o;
    while (b > 0 && s->text[b - 1] != '\n')
        b--;
    while (e < s->len && s->text[e] != '\n')
        e++;
    if (e > b && s->text[e - 1] == '\r')
        e--;
    *start = b;
    *len = e - b;
}

dtl_span dtl_span_join(dtl_span a, dtl_span b)
{
    if (a.file != b.file || b.off + b.len < a.off)
        return a;
    a.len = b.off + b.len - a.off;
    return a;
}
