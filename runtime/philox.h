/* runtime/philox.h — the one random number generator: Philox 4x32-10 (Salmon et al., SC'11).
 *
 * Contract: counter-based and stateless at heart: dtl_philox4x32 maps (counter, key) to four
 * 32-bit words, a pure function. dtl_rng wraps it as a stream: the key is the user's seed,
 * counter words 2..3 name the stream (what the numbers are for: a parameter's init, the
 * shuffle of epoch e, dropout of step s …), words 0..1 count blocks within the stream. So
 * the same seed and stream give the same numbers bit for bit on every machine, in any order
 * of streams, and a stream can jump to any position (dtl_rng_seek) — which is what makes
 * N ranks reproduce one rank and a resumed run continue exactly.
 * A dtl_rng is a plain value: copy it to save it; its fields are its checkpointable state.
 */
#ifndef DTL_PHILOX_H
#define DTL_PHILOX_H

#include <stdint.h>

void dtl_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

typedef struct dtl_rng {
    uint32_t key[2];     /* the seed */
    uint64_t stream;     /* counter words 2..3 */
    uint64_t block;      /* counter words 0..1: the next block to compute */
    uint32_t buf[4];     /* the current block's words */
    unsigned used;       /* words of buf already handed out (4: empty) */
} dtl_rng;

void dtl_rng_init(dtl_rng *r, uint64_t seed, uint64_t stream);
/* Positions the stream at 32-bit word number `word` (as if that many words were drawn). */
void dtl_rng_seek(dtl_rng *r, uint64_t word);
uint32_t dtl_rng_u32(dtl_rng *r);
/* Uniform in [0, 1) with 24 random bits (exactly representable as a float). */
float dtl_rng_uniform_f32(dtl_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double dtl_rng_uniform_f64(dtl_rng *r);
/* Standard normal (Box-Muller over two f64 uniforms; the first never 0). */
double dtl_rng_normal(dtl_rng *r);
/* Uniform integer in [0, n), n > 0, without modulo bias (rejection). */
uint64_t dtl_rng_below(dtl_rng *r, uint64_t n);

/* A stream id from a name and a number (e.g. "init:fc1.w", 0 or "shuffle", epoch): FNV-1a of
 * the name mixed with n. Stable across versions: checkpoints and tests depend on it. */
uint64_t dtl_rng_stream_id(const char *name, uint64_t n);

#endif
