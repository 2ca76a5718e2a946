/* tests/unit/test_arena.c — runtime/arena.c: alignment, zeroing, growth, large blocks,
 * overflow checks, strings, ptrvec, and the out-of-memory paths (oom_jump, exit(2), and
 * DTL_FAIL_ALLOC fault injection); and the memory plans' offset planner (runtime/blocks.c)
 * against a brute-force model of best fit. */
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../runtime/arena.h"
#include "../../runtime/blocks.h"
#include "unit.h"

static int aligned16(const void *p)
{
    return ((uintptr_t)p & 15) == 0;
}

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static void test_alloc_basics(void)
{
    dtl_arena a;
    dtl_arena_init(&a);
    CHECK(a.head == NULL && a.total == 0);

    /* Every size: aligned, zeroed, and not overlapping anything handed out before. */
    enum { N = 600 };
    unsigned char *ps[N];
    for (size_t i = 0; i < N; i++) {
        ps[i] = dtl_arena_alloc(&a, i + 1);
        CHECK(aligned16(ps[i]));
        CHECK(all_zero(ps[i], i + 1));
        memset(ps[i], (int)(i % 251) + 1, i + 1);
    }
    int intact = 1;
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j <= i; j++)
            if (ps[i][j] != (unsigned char)(i % 251 + 1))
                intact = 0;
    CHECK(intact);

    /* Zero bytes: a valid pointer, unique. */
    void *z1 = dtl_arena_alloc(&a, 0), *z2 = dtl_arena_alloc(&a, 0);
    CHECK(z1 && z2 && z1 != z2 && aligned16(z1) && aligned16(z2));

    /* Small allocations in one block are adjacent (16-byte rounding). */
    char *s1 = dtl_arena_alloc(&a, 1), *s2 = dtl_arena_alloc(&a, 17);
    char *s3 = dtl_arena_alloc(&a, 16);
    CHECK(s2 == s1 + 16 && s3 == s2 + 32);

    dtl_arena_free(&a);
    CHECK(a.head == NULL && a.total == 0);
    dtl_arena_free(&a); /* twice is harmless */
}

static void test_growth(void)
{
    dtl_arena a;
    dtl_arena_init(&a);
    /* 1 MB in 1000-byte pieces: blocks double from 64 KiB; contents survive. */
    enum { PIECES = 1000, SZ = 1000 };
    unsigned char **ps = malloc(PIECES * sizeof *ps);
    for (int i = 0; i < PIECES; i++) {
        ps[i] = dtl_arena_alloc(&a, SZ);
        memset(ps[i], i & 0xff, SZ);
    }
    int ok = 1;
    for (int i = 0; i < PIECES && ok; i++)
        for (int j = 0; j < SZ; j++)
            if (ps[i][j] != (unsigned char)(i & 0xff)) {
                ok = 0;
                break;
            }
    CHECK(ok);
    CHECK(a.total >= (size_t)PIECES * SZ);
    /* Geometric growth: 64K+128K+256K+512K+1M covers 1 MB, so few requests were made. */
    CHECK(a.requests >= 4 && a.requests <= 6);
    CHECK(a.total < (size_t)4 * PIECES * SZ);
    free(ps);
    dtl_arena_free(&a);
}

static void test_large(void)
{
    dtl_arena a;
    dtl_arena_init(&a);
    char *small = dtl_arena_alloc(&a, 16);
    dtl_arena_block *head = a.head;
    /* A large request gets a block of its own behind the current one... */
    size_t big = (size_t)10 << 20;
    unsigned char *p = dtl_arena_alloc(&a, big);
    CHECK(aligned16(p));
    CHECK(all_zero(p, big));
    p[0] = 1, p[big - 1] = 2;
    CHECK(a.head == head);
    CHECK(a.total >= big + 64 * 1024);
    /* ...so the current block's free space is still used. */
    char *next = dtl_arena_alloc(&a, 16);
    CHECK(next == small + 16);
    CHECK(p[0] == 1 && p[big - 1] == 2);
    dtl_arena_free(&a);
}

static void test_overflow_jumps(void)
{
    dtl_arena a;
    dtl_arena_init(&a);
    jmp_buf jb;
    a.oom_jump = &jb;
    volatile int jumped = 0;
    if (setjmp(jb) == 0)
        dtl_arena_array(&a, SIZE_MAX / 2, 4);
    else
        jumped = 1;
    CHECK(jumped == 1);

    jumped = 0;
    if (setjmp(jb) == 0)
        dtl_arena_alloc(&a, SIZE_MAX - 3);
    else
        jumped = 1;
    CHECK(jumped == 1);

    jumped = 0;
    if (setjmp(jb) == 0)
        dtl_arena_alloc(&a, SIZE_MAX - 20); /* rounds to fit, but the block header would overflow */
    else
        jumped = 1;
    CHECK(jumped == 1);

    /* The arena still works after a failed request. */
    int *q = dtl_arena_array(&a, 10, sizeof *q);
    CHECK(q && all_zero((unsigned char *)q, 10 * sizeof *q));
    /* n * size that does not overflow, with size 0, is fine. */
    CHECK(dtl_arena_array(&a, SIZE_MAX, 0) != NULL);
    dtl_arena_free(&a);
}

static void test_grow(void)
{
    dtl_arena a;
    dtl_arena_init(&a);
    int *v = dtl_arena_array(&a, 4, sizeof *v);
    for (int i = 0; i < 4; i++)
        v[i] = i + 1;
    int *w = dtl_arena_grow(&a, v, 4, 8, sizeof *w);
    CHECK(w != v);
    CHECK(w[0] == 1 && w[1] == 2 && w[2] == 3 && w[3] == 4);
    CHECK(w[4] == 0 && w[5] == 0 && w[6] == 0 && w[7] == 0);
    int *s = dtl_arena_grow(&a, w, 8, 2, sizeof *s); /* shrinking copies what fits */
    CHECK(s[0] == 1 && s[1] == 2);
    int *e = dtl_arena_grow(&a, NULL, 0, 3, sizeof *e);
    CHECK(e[0] == 0 && e[1] == 0 && e[2] == 0);
    dtl_arena_free(&a);
}

static void test_strings(void)
{
    dtl_arena a;
    dtl_arena_init(&a);
    char *s = dtl_arena_strndup(&a, "hello, world", 5);
    CHECK_STR(s, "hello");
    char *e = dtl_arena_strndup(&a, "xyz", 0);
    CHECK(e && e[0] == '\0');
    char *nul = dtl_arena_strndup(&a, "a\0b", 3);
    CHECK(nul[0] == 'a' && nul[1] == '\0' && nul[2] == 'b' && nul[3] == '\0');
    const char *orig = "copied";
    char *d = dtl_arena_strdup(&a, orig);
    CHECK(d != orig);
    CHECK_STR(d, "copied");

    CHECK_STR(dtl_arena_printf(&a, "%s:%d:%u: %s", "a.dtl", 3, 14u, "error"),
              "a.dtl:3:14: error");
    CHECK_STR(dtl_arena_printf(&a, "%s", ""), "");
    CHECK_STR(dtl_arena_printf(&a, "%.3f|%5s|%-3d|", 1.5, "ab", 7), "1.500|   ab|7  |");
    /* Longer than a whole default block. */
    char *big = malloc(200001);
    memset(big, 'x', 200000);
    big[200000] = '\0';
    char *p = dtl_arena_printf(&a, "<%s>", big);
    CHECK(strlen(p) == 200002 && p[0] == '<' && p[200001] == '>' && p[100000] == 'x');
    free(big);
    dtl_arena_free(&a);
}

static void test_ptrvec(void)
{
    dtl_arena a;
    dtl_arena_init(&a);
    dtl_ptrvec v = {0};
    static int items[1000];
    for (int i = 0; i < 1000; i++)
        dtl_ptrvec_push(&a, &v, &items[i]);
    CHECK(v.len == 1000);
    CHECK(v.cap >= 1000 && v.cap < 2048);
    int ordered = 1;
    for (int i = 0; i < 1000; i++)
        if (v.items[i] != &items[i])
            ordered = 0;
    CHECK(ordered);
    dtl_ptrvec_push(&a, &v, NULL);
    CHECK(v.len == 1001 && v.items[1000] == NULL);
    dtl_arena_free(&a);
}

static void test_fault_injection(void)
{
    /* The second block request fails and longjmps. */
    setenv("DTL_FAIL_ALLOC", "2", 1);
    dtl_arena a;
    dtl_arena_init(&a);
    unsetenv("DTL_FAIL_ALLOC");
    CHECK(a.fail_at == 2);
    jmp_buf jb;
    a.oom_jump = &jb;
    volatile int jumped = 0;
    char *volatile first = NULL;
    if (setjmp(jb) == 0) {
        first = dtl_arena_alloc(&a, 100);         /* request 1: the first block */
        dtl_arena_alloc(&a, 1000);                /* fits: no request */
        dtl_arena_alloc(&a, 1 << 20);             /* request 2: fails */
        CHECK(!"the injected failure did not happen");
    } else {
        jumped = 1;
    }
    CHECK(jumped == 1);
    CHECK(a.requests == 2);
    CHECK(first != NULL);
    /* Only the fail_at-th request fails: the next ones succeed. */
    CHECK(dtl_arena_alloc(&a, 1 << 20) != NULL);
    CHECK(a.requests == 3);
    dtl_arena_free(&a);

    /* Unset or zero: no injection. */
    setenv("DTL_FAIL_ALLOC", "0", 1);
    dtl_arena_init(&a);
    unsetenv("DTL_FAIL_ALLOC");
    CHECK(a.fail_at == 0);
    dtl_arena_free(&a);
}

/* Without an oom_jump, out of memory prints "dtl: out of memory" and exits with status 2. */
static void test_oom_exit(void)
{
    int fds[2];
    if (pipe(fds) != 0) {
        CHECK(!"pipe");
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        CHECK(!"fork");
        return;
    }
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        setenv("DTL_FAIL_ALLOC", "1", 1);
        dtl_arena a;
        dtl_arena_init(&a);
        dtl_arena_alloc(&a, 1);
        _exit(0); /* not reached */
    }
    close(fds[1]);
    char buf[128] = {0};
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    close(fds[0]);
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    CHECK_STR(buf, "dtl: out of memory\n");
}

static void test_strbuf(void)
{
    dtl_arena a;
    dtl_arena_init(&a);
    dtl_strbuf b = {.a = &a};
    CHECK_STR(dtl_strbuf_str(&b), "");
    dtl_strbuf_puts(&b, "f32[");
    dtl_strbuf_printf(&b, "%d, %s", 784, "B");
    dtl_strbuf_putn(&b, "]xyz", 1);
    CHECK_STR(dtl_strbuf_str(&b), "f32[784, B]");
    CHECK(b.len == 11);
    for (int i = 0; i < 1000; i++)   /* grows past several doublings */
        dtl_strbuf_puts(&b, "0123456789");
    CHECK(b.len == 10011 && b.s[10011] == '\0' && b.s[10010] == '9');
    dtl_arena_free(&a);
}

/* ---- runtime/blocks.c ---- */

/* A hand-made case: the smallest gap that holds the block wins, the lowest of equal gaps,
 * else the top; releasing an unknown block changes nothing. */
static void test_blocks_cases(void)
{
    dtl_arena A;
    dtl_arena_init(&A);
    dtl_blocks b;
    dtl_blocks_init(&b, 8, &A);
    CHECK(dtl_blocks_take(&b, 64) == 0);
    CHECK(dtl_blocks_take(&b, 128) == 64);
    CHECK(dtl_blocks_take(&b, 64) == 192);
    CHECK(dtl_blocks_take(&b, 256) == 256);
    CHECK(dtl_blocks_take(&b, 64) == 512 && b.top == 576);
    dtl_blocks_release(&b, 64, 128);    /* gap [64, 192) */
    dtl_blocks_release(&b, 256, 256);   /* gap [256, 512) */
    dtl_blocks_release(&b, 0, 32);      /* no such block */
    CHECK(b.n == 3);
    CHECK(dtl_blocks_take(&b, 100) == 64);    /* the smaller gap that fits */
    CHECK(dtl_blocks_take(&b, 200) == 256);   /* only the larger one fits */
    CHECK(dtl_blocks_take(&b, 64) == 576 && b.top == 640);   /* gaps of 28 and 56: the top */
    CHECK(dtl_blocks_take(&b, 56) == 456);    /* an exact fit */
    CHECK(dtl_blocks_take(&b, 16) == 164 && b.top == 640);
    dtl_arena_free(&A);
}

/* Random takes and releases against a model that tries every offset: the offset chosen is
 * always the start of a smallest fitting gap (lowest first), no two live blocks overlap, and
 * top is the highest end so far. */
static void test_blocks_random(void)
{
    enum { N = 48, ROUNDS = 4000 };
    dtl_arena A;
    dtl_arena_init(&A);
    dtl_blocks b;
    dtl_blocks_init(&b, N, &A);
    uint64_t off[N], size[N], top = 0, rng = 12345;
    bool live[N] = {false};
    int bad = 0;
    for (int r = 0; r < ROUNDS && !bad; r++) {
        rng = rng * 6364136223846793005u + 1442695040888963407u;
        int i = (int)(rng >> 33) % N;
        if (live[i]) {
            dtl_blocks_release(&b, off[i], size[i]);
            live[i] = false;
            continue;
        }
        uint64_t sz = ((rng >> 13) % 16 + 1) * 16;
        /* the model: every live block's end (and 0) is a candidate start */
        uint64_t want = UINT64_MAX, want_gap = UINT64_MAX;
        for (int c = -1; c < N; c++) {
            if (c >= 0 && !live[c])
                continue;
            uint64_t start = c < 0 ? 0 : off[c] + size[c], next = UINT64_MAX;
            bool inside = false;
            for (int j = 0; j < N; j++)
                if (live[j]) {
                    if (off[j] >= start && off[j] < next)
                        next = off[j];
                    inside |= off[j] < start && off[j] + size[j] > start;
                }
            if (inside)
                continue;
            uint64_t gap = next - start;   /* UINT64_MAX - start past the last: the top */
            if (next == UINT64_MAX)
                gap = UINT64_MAX;
            if (gap >= sz && (gap < want_gap || (gap == want_gap && start < want))) {
                want = start;
                want_gap = gap;
            }
        }
        off[i] = dtl_blocks_take(&b, sz);
        size[i] = sz;
        live[i] = true;
        if (off[i] + sz > top)
            top = off[i] + sz;
        bad |= off[i] != want || b.top != top;
        for (int j = 0; j < N; j++)
            bad |= j != i && live[j] && off[j] < off[i] + sz && off[i] < off[j] + size[j];
    }
    CHECK(!bad);
    dtl_arena_free(&A);
}

int main(void)
{
    unsetenv("DTL_FAIL_ALLOC");
    test_alloc_basics();
    test_growth();
    test_large();
    test_overflow_jumps();
    test_grow();
    test_strings();
    test_ptrvec();
    test_strbuf();
    test_fault_injection();
    test_oom_exit();
    test_blocks_cases();
    test_blocks_random();
    CHECK_DONE();
}
