#include "dtype.h"

#include <assert.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
    bool is_float, is_int;
} dtype_info[] = {
    [DTL_DTYPE_F32] = {"f32", 4, true, false},
    [DTL_DTYPE_F64] = {"f64", 8, true, false},
    [DTL_DTYPE_F16] = {"f16", 2, true, false},
    [DTL_DTYPE_BF16] = {"bf16", 2, true, false},
    [DTL_DTYPE_I32] = {"i32", 4, false, true},
    [DTL_DTYPE_I64] = {"i64", 8, false, true},
    [DTL_DTYPE_BOOL] = {"bool", 1, false, false},
};
static_assert(sizeof dtype_info / sizeof dtype_info[0] == DTL_DTYPE_COUNT,
              "dtype_info must have one row per dtype");

const char *dtl_dtype_name(dtl_dtype t)
{
    return t < DTL_DTYPE_COUNT ? dtype_info[t].name : "?";
}

size_t dtl_dtype_size(dtl_dtype t)
{
    return t < DTL_DTYPE_COUNT ? dtype_info[t].size : 0;
}

bool dtl_dtype_is_float(dtl_dtype t)
{
    return t < DTL_DTYPE_COUNT && dtype_info[t].is_float;
}

bool dtl_dtype_is_int(dtl_dtype t)
{
    return t < DTL_DTYPE_COUNT && dtype_info[t].is_int;
}

dtl_dtype dtl_dtype_parse(const char *s, size_t n)
{
    for (int t = 0; t < DTL_DTYPE_COUNT; t++)
        if (strlen(dtype_info[t].name) == n && memcmp(dtype_info[t].name, s, n) == 0)
            return (dtl_dtype)t;
    return DTL_DTYPE_COUNT;
}

static const char *const precision_names[DTL_PREC_COUNT] = {"default", "f32", "tf32", "bf16"};

const char *dtl_precision_name(dtl_precision p)
{
    return (unsigned)p < DTL_PREC_COUNT ? precision_names[p] : "?";
}

dtl_precision dtl_precision_parse(const char *s)
{
    for (int p = DTL_PREC_F32; p < DTL_PREC_COUNT; p++)
        if (strcmp(s, precision_names[p]) == 0)
            return (dtl_precision)p;
    return DTL_PREC_COUNT;
}
