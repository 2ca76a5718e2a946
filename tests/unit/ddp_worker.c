/* tests/unit/ddp_worker.c — one rank of a runtime/comm/ddp.h test; tests/ddp_overlap.sh
 * starts N of them (DTL_RANK, DTL_WORLD_SIZE, DTL_COORDINATOR) with tests/comm_lib.sh.
 *
 *   ddp_worker avg STEPS     STEPS steps over a list of gradients shaped like an MLP's (f32
 *                            and one f64 tensor, one larger than a bucket, a zero-sized one):
 *                            each rank announces them in its own order with some work between
 *                            (so buckets go out while "backward" still runs); after each
 *                            finish every averaged tensor must equal the serial mean of all
 *                            ranks' data (within one rounding for integer-valued steps,
 *                            within 1e-6 for values in [-1, 1) on the others) and be bitwise identical on every rank (checked with
 *                            an all-gather of hashes: the caller's use of the communicator
 *                            between steps); the world is then finalized
 *   ddp_worker shard STEPS   the same with the f32 tensors sharded (ZeRO-1): each rank's part
 *                            (dtl_ddp_part, dtl_ddp_grad) must equal the serial mean of those
 *                            elements; then each rank "updates" its part (2 × mean + 1) and
 *                            dtl_ddp_gather gives every rank all of every tensor, which must
 *                            equal 2 × the serial mean + 1 everywhere (so the parts cover each
 *                            tensor exactly once), bitwise equal on every rank
 *   ddp_worker loop          steps forever; prints "ready" after the first; for the kill test
 * DTL_BUCKET_MB sets the bucket size (dtl_ddp_bucket_bytes); DTL_DDP_OVERLAP=0 makes the
 * buckets wait for finish (dtl_ddp_set_overlap). Collective signatures of one step
 * (dtl_ddp_sig, plus the hash all-gather) are checked at init.
 * Exit: 0 all good; 1 a check failed or an error (printed as "rank R: error: …").
 */
#include "../../runtime/comm/ddp.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LABEL "gradients @ ddp.dtl:9"

static int failures;
static int me;

#define EXPECT(cond, ...)                                                                     \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            if (failures++ < 20) {                                                            \
                fprintf(stderr, "rank %d: %s:%d: check failed: %s: ", me, __FILE__, __LINE__,  \
                        #cond);                                                               \
                fprintf(stderr, __VA_ARGS__);                                                 \
                fputc('\n', stderr);                                                          \
            }                                                                                 \
        }                                                                                     \
    } while (0)

/* The gradients, in the order "backward" produces them (the reverse of fc1, fc2, fc3). */
static dtl_ddp_tensor grads[] = {
    {"fc3.b", DTL_DTYPE_F32, 10, false},      {"fc3.w", DTL_DTYPE_F32, 2561, false},
    {"fc2.b", DTL_DTYPE_F32, 256, false},     {"fc2.w", DTL_DTYPE_F32, 65536, false},
    {"scale", DTL_DTYPE_F64, 17, false},      {"none", DTL_DTYPE_F32, 0, false},
    {"fc1.b", DTL_DTYPE_F32, 256, false},     {"fc1.w", DTL_DTYPE_F32, 200704, false},
};
enum { NG = sizeof grads / sizeof grads[0] };

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* Rank r's gradient k, element i, at step s: small integers on even steps (exact sums),
 * values in [-1, 1) on odd ones. */
static double value(int r, int s, size_t k, size_t i)
{
    uint64_t h = mix(((uint64_t)r << 48) ^ ((uint64_t)s << 40) ^ ((uint64_t)k << 32) ^ i);
    if (s % 2 == 0)
        return (double)((int)(h % 33) - 16);
    return (double)(h >> 11) * 0x1p-52 - 1.0;
}

static void fill(void *buf, dtl_dtype t, int r, int s, size_t k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double v = value(r, s, k, i);
        if (t == DTL_DTYPE_F32)
            ((float *)buf)[i] = (float)v;
        else
            ((double *)buf)[i] = v;
    }
}

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* Some work between two announcements, like a layer of backward. */
static void work(int usec)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    volatile double x = 1;
    do {
        for (int i = 0; i < 1000; i++)
            x = x * 1.0000001 + 1e-9;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000000 + (t.tv_nsec - t0.tv_nsec) / 1000 < usec);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    bool loop = strcmp(mode, "loop") == 0, shard = strcmp(mode, "shard") == 0;
    int steps = loop ? -1 : argc > 2 ? atoi(argv[2]) : 6;
    if (!loop && !shard && strcmp(mode, "avg") != 0) {
        fprintf(stderr, "usage: ddp_worker avg STEPS | shard STEPS | loop\n");
        return 2;
    }
    for (size_t k = 0; k < NG; k++)
        grads[k].shard = shard && grads[k].dtype == DTL_DTYPE_F32;
    dtl_err err = {DTL_ERR_NONE, ""};
    dtl_comm_env env;
    if (!dtl_comm_env_from_environ(&env, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    me = env.rank;
    int n = env.size;
    size_t bucket;
    if (!dtl_ddp_bucket_bytes(getenv("DTL_BUCKET_MB"), &bucket, &err)) {
        fprintf(stderr, "rank %d: error: %s\n", me, err.msg);
        return 1;
    }
    /* The signatures of one step: the buckets, then the hash all-gather. */
    dtl_ddp_bucket b[NG];
    size_t nb;
    if (!dtl_ddp_plan(grads, NG, bucket, n, b, &nb, &err)) {
        fprintf(stderr, "rank %d: error: %s\n", me, err.msg);
        return 1;
    }
    char sigbuf[2 * NG + 1][160];
    const char *sigs[2 * NG + 1];
    size_t ns = 0;
    for (size_t k = 0; k < nb; k++, ns++)
        sigs[ns] = dtl_ddp_sig(sigbuf[ns], sizeof sigbuf[ns], &b[k], LABEL);
    for (size_t k = 0; k < nb; k++)
        if (b[k].shard) {
            sigs[ns] = dtl_ddp_gather_sig(sigbuf[ns], sizeof sigbuf[ns], &b[k], "params");
            ns++;
        }
    sigs[ns] = dtl_comm_sig(sigbuf[ns], sizeof sigbuf[ns], "allgather", 1, DTL_DTYPE_F64,
                            DTL_COMM_SUM, "hashes");
    ns++;
    dtl_comm_opts opts = {0x5eed, sigs, ns, NULL, 0};
    dtl_comm *c = dtl_comm_init(&env, &opts, &err);
    if (!c) {
        fprintf(stderr, "rank %d: error: %s\n", me, err.msg);
        return 1;
    }
    dtl_ddp *d = dtl_ddp_new(c, grads, NG, bucket, LABEL, &err);
    if (!d) {
        fprintf(stderr, "rank %d: error: %s\n", me, err.msg);
        dtl_comm_abort(c, err.msg);
        return 1;
    }
    const char *ov = getenv("DTL_DDP_OVERLAP");
    dtl_ddp_set_overlap(d, !(ov && strcmp(ov, "0") == 0));
    /* The caller's buffer, reused for every tensor (ready copies). */
    double *src = malloc(200704 * sizeof(double));
    double *hashes = calloc((size_t)n, sizeof *hashes);
    void *full[NG];
    const void *part[NG];
    for (size_t k = 0; k < NG; k++)
        full[k] = malloc(grads[k].count * sizeof(double) + 1);
    if (!src || !hashes)
        return 1;
    double waited = 0;
    const char *where = "";   /* the call that failed */
    for (int s = 0; loop || s < steps; s++) {
        where = "dtl_ddp_begin";
        if (!dtl_ddp_begin(d, &err))
            break;
        /* Each rank its own order: rank r starts at tensor (r + s) % NG, then every third. */
        size_t order[NG];
        bool used[NG] = {false};
        size_t at = (size_t)(me + s) % NG;
        for (size_t j = 0; j < NG; j++) {
            while (used[at])
                at = (at + 1) % NG;
            order[j] = at;
            used[at] = true;
            at = (at + 3) % NG;
        }
        if (s % 3 == 0)   /* and sometimes backward's own order */
            for (size_t j = 0; j < NG; j++)
                order[j] = j;
        for (size_t j = 0; j < NG; j++) {
            size_t k = order[j];
            fill(src, grads[k].dtype, me, s, k, grads[k].count);
            dtl_ddp_ready(d, k, src);
            memset(src, 0xa5, grads[k].count * sizeof(double));   /* reuse at once */
            work(200 + 100 * me);
        }
        where = "dtl_ddp_finish";
        if (!dtl_ddp_finish(d, &err))
            break;
        waited += dtl_ddp_wait_seconds(d);
        if (loop) {   /* only the buckets: a dead peer is seen by finish */
            if (s == 0) {
                printf("ready\n");
                fflush(stdout);
            }
            continue;
        }
        /* The serial mean, and a hash of every result for the all-gather. */
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t k = 0; k < NG; k++) {
            const void *g = dtl_ddp_grad(d, k);
            size_t lo, cnt;
            dtl_ddp_part(d, k, &lo, &cnt);
            EXPECT(grads[k].shard || (lo == 0 && cnt == grads[k].count),
                   "%s is not sharded, but its part is [%zu, +%zu)", grads[k].name, lo, cnt);
            EXPECT(lo + cnt <= grads[k].count, "%s: part [%zu, +%zu) out of range",
                   grads[k].name, lo, cnt);
            int bad = 0;
            for (size_t i = lo; i < lo + cnt; i++) {
                double sum = 0;
                for (int r = 0; r < n; r++)
                    sum += grads[k].dtype == DTL_DTYPE_F32 ? (double)(float)value(r, s, k, i)
                                                           : value(r, s, k, i);
                double want = sum / n;
                double got = grads[k].dtype == DTL_DTYPE_F32 ? ((const float *)g)[i - lo]
                                                             : ((const double *)g)[i - lo];
                /* Integer data: the sum is exact, the mean one rounding of it. Values in
                 * [-1, 1): the rounding of a few additions, absolute (they may cancel). */
                double tol = s % 2 == 0 ? (grads[k].dtype == DTL_DTYPE_F32 ? 0x1p-24 : 0)
                                          * fabs(want)
                                        : 1e-6;
                if (!(fabs(got - want) <= tol) && bad++ < 3)
                    EXPECT(false, "step %d, %s[%zu]: %.9g, the serial mean is %.9g", s,
                           grads[k].name, i, got, want);
            }
            if (!grads[k].shard)
                h = fnv(g, grads[k].count * dtl_dtype_size(grads[k].dtype), h);
        }
        if (shard) {   /* "update" the parts, in place, and gather them */
            for (size_t k = 0; k < NG; k++) {
                size_t lo, cnt;
                dtl_ddp_part(d, k, &lo, &cnt);
                float *g = dtl_ddp_grad(d, k);
                for (size_t i = 0; grads[k].shard && i < cnt; i++)
                    g[i] = 2 * g[i] + 1;
                part[k] = g;
                memset(full[k], 0xff, grads[k].count * dtl_dtype_size(grads[k].dtype));
            }
            where = "dtl_ddp_gather";
            if (!dtl_ddp_gather(d, full, part, "params @ ddp.dtl:9", &err))
                break;
            for (size_t k = 0; k < NG; k++) {
                if (!grads[k].shard)
                    continue;
                int bad = 0;
                for (size_t i = 0; i < grads[k].count; i++) {
                    double sum = 0;
                    for (int r = 0; r < n; r++)
                        sum += (double)(float)value(r, s, k, i);
                    double want = 2 * (sum / n) + 1, got = ((const float *)full[k])[i];
                    double tol = s % 2 == 0 ? 0x1p-22 * fabs(want) : 1e-5;
                    if (!(fabs(got - want) <= tol) && bad++ < 3)
                        EXPECT(false, "step %d, gathered %s[%zu]: %.9g, want %.9g", s,
                               grads[k].name, i, got, want);
                }
                h = fnv(full[k], grads[k].count * sizeof(float), h);
            }
        }
        /* The caller may use c between finish and the next begin. */
        double mine;
        memcpy(&mine, &h, sizeof h);
        where = "dtl_comm_allgather";
        if (!dtl_comm_allgather(c, &mine, hashes, 1, DTL_DTYPE_F64, "hashes", &err))
            break;
        for (int r = 0; r < n; r++)
            EXPECT(memcmp(&hashes[r], &mine, sizeof mine) == 0,
                   "step %d: rank %d's averaged gradients differ from rank %d's", s, r, me);
    }
    free(src);
    free(hashes);
    for (size_t k = 0; k < NG; k++)
        free(full[k]);
    bool ok = failures == 0 && err.kind == DTL_ERR_NONE;
    if (ok) {
        printf("rank %d: %d steps, %zu buckets, finish waited %.3f s in all\n", me, steps, nb,
               waited);
        dtl_ddp_free(d);
        d = NULL;
        where = "dtl_comm_finalize";
        ok = dtl_comm_finalize(c, &err);
    }
    if (!ok) {
        if (err.kind != DTL_ERR_NONE)
            fprintf(stderr, "rank %d: error: %s: %s\n", me, where, err.msg);
        dtl_ddp_free(d);
        dtl_comm_abort(c, err.kind != DTL_ERR_NONE ? err.msg : "a check failed");
        return 1;
    }
    dtl_comm_free(c);
    return 0;
}
