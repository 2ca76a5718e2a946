/* tests/unit/unit.h — the smallest test harness: CHECK(cond) and CHECK_STR(a, b) report the
 * failing expression with file:line and count failures; CHECK_DONE() ends main() with exit
 * status 0 if every check passed, 1 otherwise (automake's PASS and FAIL). */
#ifndef DTL_TEST_UNIT_H
#define DTL_TEST_UNIT_H

#include <stdio.h>
#include <string.h>

static int check_failures, check_count;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        check_count++;                                                                  \
        if (!(cond)) {                                                                  \
            check_failures++;                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
        }                                                                               \
    } while (0)

#define CHECK_STR(got, want)                                                            \
    do {                                                                                \
        const char *check_g_ = (got), *check_w_ = (want);                               \
        check_count++;                                                                  \
        if (!check_g_ || !check_w_ ? check_g_ != check_w_ : strcmp(check_g_, check_w_) != 0) { \
            check_failures++;                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n--- want:\n%s\n--- got:\n%s\n---\n", \
                    __FILE__, __LINE__, #got, check_w_ ? check_w_ : "(null)",           \
                    check_g_ ? check_g_ : "(null)");                                    \
        }                                                                               \
    } while (0)

#define CHECK_DONE()                                                                    \
    do {                                                                                \
        printf("%d checks, %d failed\n", check_count, check_failures);                  \
        return check_failures ? 1 : 0;                                                  \
    } while (0)

#endif
