/* runtime/init.c — parameter initializers (the contract, with every formula, is in init.h).
 * Each distribution reduces to "uniform(lo, hi)" or "normal(mean, std)" over the parameter's
 * own Philox stream. */
#include "init.h"

#include <math.h>
#include <string.h>

#include "philox.h"

void dtl_init_fans(uint32_t rank, const int64_t *shape, double *fan_in, double *fan_out)
{
    if (rank == 0) {
        *fan_in = *fan_out = 1;
    } else if (rank == 1) {
        *fan_in = *fan_out = (double)shape[0];
    } else {
        double r = 1;
        for (uint32_t i = 0; i + 2 < rank; i++)
            r *= (double)shape[i];
        *fan_in = (double)shape[rank - 2] * r;
        *fan_out = (double)shape[rank - 1] * r;
    }
}

static void put(dtl_dtype dt, void *data, uint64_t i, double v)
{
    if (dt == DTL_DTYPE_F32)
        ((float *)data)[i] = (float)v;
    else
        ((double *)data)[i] = v;
}

bool dtl_init_fill(const dtl_init *init, const char *name, dtl_dtype dt, uint32_t rank,
                   const int64_t *shape, uint64_t seed, void *data, dtl_err *err)
{
    if (dt != DTL_DTYPE_F32 && dt != DTL_DTYPE_F64)
        return dtl_err_set(err, DTL_ERR_USAGE, "param \"%s\": cannot initialize dtype %s",
                           name, dtl_dtype_name(dt));
    uint64_t count = 1;
    for (uint32_t i = 0; i < rank; i++) {
        if (shape[i] < 0)
            return dtl_err_set(err, DTL_ERR_USAGE, "param \"%s\": negative dimension", name);
        count *= (uint64_t)shape[i];
    }
    double fan_in, fan_out;
    dtl_init_fans(rank, shape, &fan_in, &fan_out);
    bool normal = false;
    double a = 0, b = 0;   /* uniform: [a, b); normal: mean a, std b */
    switch (init->kind) {
    case DTL_INIT_ZEROS:
    case DTL_INIT_ONES:
    case DTL_INIT_CONSTANT: {
        double v = init->kind == DTL_INIT_ZEROS ? 0 : init->kind == DTL_INIT_ONES ? 1 : init->a;
        for (uint64_t i = 0; i < count; i++)
            put(dt, data, i, v);
        return true;
    }
    case DTL_INIT_DATA:
        if (!init->data)
            return dtl_err_set(err, DTL_ERR_USAGE, "param \"%s\": init data missing", name);
        memcpy(data, init->data, count * dtl_dtype_size(dt));
        return true;
    case DTL_INIT_UNIFORM: a = init->a, b = init->b; break;
    case DTL_INIT_NORMAL: a = init->a, b = init->b, normal = true; break;
    case DTL_INIT_GLOROT_UNIFORM: b = sqrt(6 / (fan_in + fan_out)), a = -b; break;
    case DTL_INIT_GLOROT_NORMAL: b = sqrt(2 / (fan_in + fan_out)), normal = true; break;
    case DTL_INIT_HE_UNIFORM: b = sqrt(6 / fan_in), a = -b; break;
    case DTL_INIT_HE_NORMAL: b = sqrt(2 / fan_in), normal = true; break;
    default:
        return dtl_err_set(err, DTL_ERR_USAGE, "param \"%s\": unknown init kind %d", name,
                           (int)init->kind);
    }
    if (count == 0)
        return true;
    if (!isfinite(a) || !isfinite(b) || (normal ? b < 0 : b < a))
        return dtl_err_set(err, DTL_ERR_USAGE,
                           normal ? "param \"%s\": normal(%g, %g) needs a finite mean and std >= 0"
                                  : "param \"%s\": uniform(%g, %g) needs finite low <= high",
                           name, a, b);
    size_t plen = strlen(name);
    char sname[1024];
    if (plen + 6 > sizeof sname)
        return dtl_err_set(err, DTL_ERR_USAGE, "param \"%.40s...\": name too long", name);
    memcpy(sname, "init:", 5);
    memcpy(sname + 5, name, plen + 1);
    dtl_rng r;
    dtl_rng_init(&r, seed, dtl_rng_stream_id(sname, 0));
    for (uint64_t i = 0; i < count; i++)
        put(dt, data, i, normal ? a + b * dtl_rng_normal(&r) : a + (b - a) * dtl_rng_uniform_f64(&r));
    return true;
}
