/* runtime/arena.h — region allocation.
 *
 * Contract: an arena owns every block it hands out; all of them are released together by
 * dtl_arena_free and never one by one. Blocks grow geometrically, so there is no fixed pool
 * size to run out of. Allocations are zeroed and aligned to 16 bytes.
 *
 * Out of memory: if the arena has an oom_jump set, the failing allocation longjmps there
 * (the owner checks and reports at its stage boundary); without one the process prints
 * "dtl: out of memory" and exits with status 2. Code that allocates from an arena therefore
 * never checks for NULL.
 *
 * Fault injection (for tests of the out-of-memory paths): when the environment variable
 * DTL_FAIL_ALLOC is a number N, the N-th block request made by this arena fails.
 */
#ifndef DTL_ARENA_H
#define DTL_ARENA_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

typedef struct dtl_arena_block dtl_arena_block;

typedef struct dtl_arena {
    dtl_arena_block *head;   /* newest block first */
    size_t total;            /* bytes obtained from malloc, for statistics */
    jmp_buf *oom_jump;       /* where to go when malloc fails; NULL: exit(2) */
    long fail_at;            /* fault injection: fail the fail_at-th block request; 0: off */
    long requests;           /* block requests so far */
} dtl_arena;

void dtl_arena_init(dtl_arena *a);
void dtl_arena_free(dtl_arena *a);

/* n zeroed bytes, 16-aligned. n == 0 gives a valid unique pointer. */
void *dtl_arena_alloc(dtl_arena *a, size_t n);
/* n elements of size sz, with overflow checked. */
void *dtl_arena_array(dtl_arena *a, size_t n, size_t sz);
/* Copy of old (old_n elements) in a new array of new_n elements of size sz. */
void *dtl_arena_grow(dtl_arena *a, const void *old, size_t old_n, size_t new_n, size_t sz);
char *dtl_arena_strndup(dtl_arena *a, const char *s, size_t n);
char *dtl_arena_strdup(dtl_arena *a, const char *s);
char *dtl_arena_printf(dtl_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
char *dtl_arena_vprintf(dtl_arena *a, const char *fmt, va_list ap);

/* A growable array of pointers built in an arena (old storage is simply abandoned). */
typedef struct dtl_ptrvec {
    void **items;
    size_t len, cap;
} dtl_ptrvec;

void dtl_ptrvec_push(dtl_arena *a, dtl_ptrvec *v, void *item);

/* A string built piece by piece in an arena; s is NUL-terminated (NULL while empty). */
typedef struct dtl_strbuf {
    dtl_arena *a;
    char *s;
    size_t len, cap;
} dtl_strbuf;

void dtl_strbuf_putn(dtl_strbuf *b, const char *s, size_t n);
void dtl_strbuf_puts(dtl_strbuf *b, const char *s);
void dtl_strbuf_printf(dtl_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The string so far ("" when nothing was put); it stays valid with the arena. */
char *dtl_strbuf_str(dtl_strbuf *b);

#endif
