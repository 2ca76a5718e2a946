/* runtime/philox.c — Philox 4x32 with 10 rounds. Each round multiplies words 0 and 2 by the
 * two round constants, swaps the halves and xors in the key, which is bumped by the Weyl
 * constants after every round. Checked against the published known-answer vectors in
 * tests/unit/test_philox.c. */
#include "philox.h"

#include <math.h>

enum {
    PHILOX_M0 = 0xD2511F53u,
    PHILOX_M1 = 0xCD9E8D57u,
    PHILOX_W0 = 0x9E3779B9u,
    PHILOX_W1 = 0xBB67AE85u,
};

void dtl_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

void dtl_rng_init(dtl_rng *r, uint64_t seed, uint64_t stream)
{
    r->key[0] = (uint32_t)seed;
    r->key[1] = (uint32_t)(seed >> 32);
    r->stream = stream;
    r->block = 0;
    r->used = 4;
}

static void rng_fill(dtl_rng *r)
{
    uint32_t ctr[4] = {(uint32_t)r->block, (uint32_t)(r->block >> 32), (uint32_t)r->stream,
                       (uint32_t)(r->stream >> 32)};
    dtl_philox4x32(ctr, r->key, r->buf);
    r->block++;
    r->used = 0;
}

void dtl_rng_seek(dtl_rng *r, uint64_t word)
{
    r->block = word / 4;
    r->used = 4;
    if (word % 4) {
        rng_fill(r);
        r->used = (unsigned)(word % 4);
    }
}

uint32_t dtl_rng_u32(dtl_rng *r)
{
    if (r->used >= 4)
        rng_fill(r);
    return r->buf[r->used++];
}

float dtl_rng_uniform_f32(dtl_rng *r)
{
    return (float)(dtl_rng_u32(r) >> 8) * (1.0f / 16777216.0f);
}

double dtl_rng_uniform_f64(dtl_rng *r)
{
    uint64_t hi = dtl_rng_u32(r) >> 5, lo = dtl_rng_u32(r) >> 6;   /* 27 + 26 bits */
    return (double)((hi << 26) | lo) * (1.0 / 9007199254740992.0);
}

double dtl_rng_normal(dtl_rng *r)
{
    double u1 = 1.0 - dtl_rng_uniform_f64(r);   /* (0, 1]: log is finite */
    double u2 = dtl_rng_uniform_f64(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

uint64_t dtl_rng_below(dtl_rng *r, uint64_t n)
{
    if (n <= 1)
        return 0;
    if (n <= UINT32_MAX) {
        uint32_t limit = (uint32_t)(UINT32_MAX - (UINT32_MAX % n));  /* reject the tail */
        for (;;) {
            uint32_t x = dtl_rng_u32(r);
            if (x < limit)
                return x % n;
        }
    }
    for (;;) {
        uint64_t x = ((uint64_t)dtl_rng_u32(r) << 32) | dtl_rng_u32(r);
        uint64_t limit = UINT64_MAX - (UINT64_MAX % n);
        if (x < limit)
            return x % n;
    }
}

uint64_t dtl_rng_stream_id(const char *name, uint64_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    for (int i = 0; i < 8; i++) {
        h ^= (n >> (8 * i)) & 0xFF;
        h *= 0x100000001b3ull;
    }
    return h;
}
