/* runtime/dtype.h — the element types of tensors, and the precision policies of matrix
 * products.
 * Contract: a closed enum with a name and a byte size for each value; pure functions. bf16
 * is the top half of an IEEE f32 (1 sign, 8 exponent, 7 mantissa bits), stored as its 16
 * bits; dtl_bf16_from_f32 rounds to nearest, ties to even (subnormals included, overflow to
 * inf) and keeps a NaN a quiet NaN of the same sign; dtl_f32_from_bf16 is exact.
 * dtl_tf32_round rounds an f32 to TF32's 10 mantissa bits the same way, keeping the f32
 * format (what a TF32 matrix product reads). */
#ifndef DTL_DTYPE_H
#define DTL_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum dtl_dtype {
    DTL_DTYPE_F32,
    DTL_DTYPE_F64,
    DTL_DTYPE_F16,
    DTL_DTYPE_BF16,
    DTL_DTYPE_I32,
    DTL_DTYPE_I64,
    DTL_DTYPE_BOOL,
    DTL_DTYPE_COUNT
} dtl_dtype;

const char *dtl_dtype_name(dtl_dtype t);      /* "f32", … */
size_t dtl_dtype_size(dtl_dtype t);           /* bytes per element */
bool dtl_dtype_is_float(dtl_dtype t);
bool dtl_dtype_is_int(dtl_dtype t);
/* The dtype named by s[0..n), or DTL_DTYPE_COUNT when s names none. */
dtl_dtype dtl_dtype_parse(const char *s, size_t n);

/* The precision of a train block's matrix products (`precision = …`, docs/language.md):
 * DEFAULT is "as the train block says" (f32 when it says nothing). */
typedef enum dtl_precision {
    DTL_PREC_DEFAULT,
    DTL_PREC_F32,        /* f32 products, f32 accumulation */
    DTL_PREC_TF32,       /* f32 operands rounded to TF32, f32 accumulation */
    DTL_PREC_BF16,       /* bf16 operands, f32 accumulation, f32 master weights */
    DTL_PREC_COUNT
} dtl_precision;

const char *dtl_precision_name(dtl_precision p);   /* "default", "f32", "tf32", "bf16" */
/* The precision named by s ("f32", "tf32", "bf16"), or DTL_PREC_COUNT. */
dtl_precision dtl_precision_parse(const char *s);

static inline uint32_t dtl_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float dtl_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Rounds away the low `drop` bits of an f32's bit pattern: to nearest, ties to even; a NaN
 * is made quiet (its sign and top payload bits kept). Overflow carries into the exponent,
 * so the largest finite values round to inf as IEEE says. */
static inline uint32_t dtl_f32_round_bits(uint32_t u, unsigned drop)
{
    if ((u & 0x7fffffffu) > 0x7f800000u)         /* NaN: quiet */
        return (u | 0x00400000u) & ~((1u << drop) - 1u);
    uint32_t half = (1u << (drop - 1)) - 1, lsb = (u >> drop) & 1u;
    return (u + half + lsb) & ~((1u << drop) - 1u);
}

static inline uint16_t dtl_bf16_from_f32(float f)
{
    return (uint16_t)(dtl_f32_round_bits(dtl_f32_bits(f), 16) >> 16);
}

static inline float dtl_f32_from_bf16(uint16_t h)
{
    return dtl_f32_from_bits((uint32_t)h << 16);
}

static inline float dtl_tf32_round(float f)
{
    return dtl_f32_from_bits(dtl_f32_round_bits(dtl_f32_bits(f), 13));
}

#endif
