/* tests/unit/test_philox.c — Philox 4x32-10 against the published known-answer vectors,
 * and the stream properties the runtime relies on (seek, reproducibility, ranges). */
#include "../../runtime/philox.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int failures;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                        \
        }                                                                      \
    } while (0)

static void test_kat(void)
{
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        dtl_philox4x32(kat[i].ctr, kat[i].key, out);
        CHECK(memcmp(out, kat[i].out, sizeof out) == 0);
    }
}

static void test_stream(void)
{
    dtl_rng a, b;
    dtl_rng_init(&a, 42, dtl_rng_stream_id("init:fc1.w", 0));
    dtl_rng_init(&b, 42, dtl_rng_stream_id("init:fc1.w", 0));
    uint32_t first[11];
    for (int i = 0; i < 11; i++) {
        first[i] = dtl_rng_u32(&a);
        CHECK(first[i] == dtl_rng_u32(&b));
    }
    for (uint64_t w = 0; w < 11; w++) {
        dtl_rng_seek(&b, w);
        CHECK(dtl_rng_u32(&b) == first[w]);
    }
    dtl_rng c;
    dtl_rng_init(&c, 43, dtl_rng_stream_id("init:fc1.w", 0));
    CHECK(dtl_rng_u32(&c) != first[0]);
    CHECK(dtl_rng_stream_id("shuffle", 1) != dtl_rng_stream_id("shuffle", 2));

    double sum = 0, sumsq = 0;
    int n = 200000, below_bad = 0;
    for (int i = 0; i < n; i++) {
        float u = dtl_rng_uniform_f32(&a);
        CHECK(u >= 0.0f && u < 1.0f);
        double z = dtl_rng_normal(&a);
        CHECK(isfinite(z));
        sum += z;
        sumsq += z * z;
        if (dtl_rng_below(&a, 10) >= 10)
            below_bad++;
    }
    CHECK(below_bad == 0);
    CHECK(fabs(sum / n) < 0.01);
    CHECK(fabs(sumsq / n - 1.0) < 0.02);
}

int main(void)
{
    test_kat();
    test_stream();
    if (failures)
        fprintf(stderr, "test_philox: %d check(s) failed\n", failures);
    return failures ? 1 : 0;
}
