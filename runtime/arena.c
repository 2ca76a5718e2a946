/* runtime/arena.c — region allocation: a list of blocks, bump allocation inside the newest,
 * a fresh block (at least double the last) when it is full. Large requests get a block of
 * their own so that a 50 MB source file does not waste a 100 MB block. */
#include "arena.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dtl_arena_block {
    dtl_arena_block *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

enum { ARENA_MIN_BLOCK = 64 * 1024, ARENA_ALIGN = 16 };

void dtl_arena_init(dtl_arena *a)
{
    memset(a, 0, sizeof *a);
    const char *f = getenv("DTL_FAIL_ALLOC");
    if (f && *f)
        a->fail_at = strtol(f, NULL, 10);
}

void dtl_arena_free(dtl_arena *a)
{
    dtl_arena_block *b = a->head;
    while (b) {
        dtl_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->total = 0;
}

static void arena_oom(dtl_arena *a)
{
    if (a->oom_jump)
        longjmp(*a->oom_jump, 1);
    fputs("dtl: out of memory\n", stderr);
    exit(2);
}

static dtl_arena_block *arena_new_block(dtl_arena *a, size_t need)
{
    size_t size = a->head ? a->head->size * 2 : ARENA_MIN_BLOCK;
    if (size > (size_t)64 << 20)
        size = (size_t)64 << 20;
    if (size < need)
        size = need;
    a->requests++;
    if (a->fail_at > 0 && a->requests == a->fail_at)
        arena_oom(a);
    if (size > SIZE_MAX - sizeof(dtl_arena_block))
        arena_oom(a);
    dtl_arena_block *b = malloc(sizeof *b + size);
    if (!b)
        arena_oom(a);
    b->size = size;
    b->used = 0;
    a->total += size;
    /* A block made for one large request goes behind the current one, so the current
     * block's free space is not abandoned. */
    if (a->head && need > ARENA_MIN_BLOCK && a->head->size - a->head->used >= ARENA_ALIGN) {
        b->next = a->head->next;
        a->head->next = b;
    } else {
        b->next = a->head;
        a->head = b;
    }
    return b;
}

void *dtl_arena_alloc(dtl_arena *a, size_t n)
{
    if (n > SIZE_MAX - ARENA_ALIGN)
        arena_oom(a);
    size_t rounded = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (rounded == 0)
        rounded = ARENA_ALIGN;
    dtl_arena_block *b = a->head;
    if (!b || b->size - b->used < rounded)
        b = arena_new_block(a, rounded);
    void *p = b->data + b->used;
    b->used += rounded;
    memset(p, 0, rounded);
    return p;
}

void *dtl_arena_array(dtl_arena *a, size_t n, size_t sz)
{
    if (sz && n > SIZE_MAX / sz)
        arena_oom(a);
    return dtl_arena_alloc(a, n * sz);
}

void *dtl_arena_grow(dtl_arena *a, const void *old, size_t old_n, size_t new_n, size_t sz)
{
    void *p = dtl_arena_array(a, new_n, sz);
    if (old && old_n)
        memcpy(p, old, (old_n < new_n ? old_n : new_n) * sz);
    return p;
}

char *dtl_arena_strndup(dtl_arena *a, const char *s, size_t n)
{
    char *p = dtl_arena_alloc(a, n + 1);
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *dtl_arena_strdup(dtl_arena *a, const char *s)
{
    return dtl_arena_strndup(a, s, strlen(s));
}

char *dtl_arena_vprintf(dtl_arena *a, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        n = 0;
    char *p = dtl_arena_alloc(a, (size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *dtl_arena_printf(dtl_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = dtl_arena_vprintf(a, fmt, ap);
    va_end(ap);
    return p;
}

void dtl_ptrvec_push(dtl_arena *a, dtl_ptrvec *v, void *item)
{
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        v->items = dtl_arena_grow(a, v->items, v->len, cap, sizeof *v->items);
        v->cap = cap;
    }
    v->items[v->len++] = item;
}

void dtl_strbuf_putn(dtl_strbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->s = dtl_arena_grow(b->a, b->s, b->len, cap, 1);
        b->cap = cap;
    }
    if (n)
        memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void dtl_strbuf_puts(dtl_strbuf *b, const char *s)
{
    dtl_strbuf_putn(b, s, strlen(s));
}

void dtl_strbuf_printf(dtl_strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = dtl_arena_vprintf(b->a, fmt, ap);
    va_end(ap);
    dtl_strbuf_puts(b, s);
}

char *dtl_strbuf_str(dtl_strbuf *b)
{
    return b->s ? b->s : dtl_arena_strdup(b->a, "");
}
