/* tests/unit/test_ddp.c — runtime/comm/ddp.h in one process: the bucket plan (empty list,
 * one huge tensor, a huge tensor between small ones, mixed dtypes, exact fits, zero-sized
 * tensors, bad arguments), DTL_BUCKET_MB parsing, signatures and labels, and a world of one
 * rank (no comm thread): tensors announced in any order and copied at once, the averaged
 * result, misuse (announced twice, out of range, finish before all are in, begin twice) as
 * DTL_ERR_INTERNAL that sticks. Several ranks with the comm thread: tests/ddp_overlap.sh. */
#include "../../runtime/comm/ddp.h"

#include <stdlib.h>
#include <string.h>

#include "unit.h"

static dtl_ddp_tensor T(const char *name, dtl_dtype dt, size_t count)
{
    return (dtl_ddp_tensor){name, dt, count, false};
}

static bool plan(const dtl_ddp_tensor *t, size_t n, size_t bytes, dtl_ddp_bucket *b,
                 size_t *nb)
{
    dtl_err err;
    bool ok = dtl_ddp_plan(t, n, bytes, 1, b, nb, &err);
    if (!ok)
        fprintf(stderr, "plan failed: %s\n", err.msg);
    return ok;
}

/* Every tensor in exactly one bucket, in order, buckets of one dtype, counts add up. */
static bool plan_sound(const dtl_ddp_tensor *t, size_t n, size_t bytes, const dtl_ddp_bucket *b,
                       size_t nb)
{
    size_t next = 0;
    for (size_t k = 0; k < nb; k++) {
        if (b[k].first != next || b[k].n == 0)
            return false;
        size_t count = 0;
        for (size_t i = b[k].first; i < b[k].first + b[k].n; i++) {
            if (t[i].dtype != b[k].dtype)
                return false;
            count += t[i].count;
        }
        if (count != b[k].count)
            return false;
        if (b[k].n > 1 && count * dtl_dtype_size(b[k].dtype) > bytes)
            return false;
        next += b[k].n;
    }
    return next == n;
}

static void test_plan(void)
{
    dtl_ddp_bucket b[16];
    size_t nb = 99;
    dtl_err err;

    /* Empty list: no bucket. */
    CHECK(plan(NULL, 0, 1024, b, &nb) && nb == 0);

    /* One huge tensor: a bucket of its own, larger than the bucket size. */
    dtl_ddp_tensor huge[] = {T("w", DTL_DTYPE_F32, 1000000)};
    CHECK(plan(huge, 1, 4096, b, &nb) && nb == 1);
    CHECK(b[0].first == 0 && b[0].n == 1 && b[0].count == 1000000);

    /* A huge tensor between small ones: small | huge | small small. */
    dtl_ddp_tensor mid[] = {T("a", DTL_DTYPE_F32, 10), T("big", DTL_DTYPE_F32, 5000),
                            T("c", DTL_DTYPE_F32, 10), T("d", DTL_DTYPE_F32, 10)};
    CHECK(plan(mid, 4, 1024, b, &nb) && nb == 3);
    CHECK(b[0].first == 0 && b[0].n == 1);
    CHECK(b[1].first == 1 && b[1].n == 1 && b[1].count == 5000);
    CHECK(b[2].first == 2 && b[2].n == 2 && b[2].count == 20);
    CHECK(plan_sound(mid, 4, 1024, b, nb));

    /* Mixed dtypes: a new bucket at every change, even when there is room. */
    dtl_ddp_tensor mix[] = {T("a", DTL_DTYPE_F32, 4), T("b", DTL_DTYPE_F64, 4),
                            T("c", DTL_DTYPE_F64, 4), T("d", DTL_DTYPE_F32, 4),
                            T("e", DTL_DTYPE_F32, 4)};
    CHECK(plan(mix, 5, 1 << 20, b, &nb) && nb == 3);
    CHECK(b[0].dtype == DTL_DTYPE_F32 && b[0].n == 1);
    CHECK(b[1].dtype == DTL_DTYPE_F64 && b[1].n == 2 && b[1].count == 8);
    CHECK(b[2].dtype == DTL_DTYPE_F32 && b[2].n == 2 && b[2].count == 8);
    CHECK(plan_sound(mix, 5, 1 << 20, b, nb));

    /* Exact fits: 64 + 64 f32 = 512 bytes fill a 512-byte bucket; c (512 B) fills the next;
     * d (4 B) does not fit after it; e (64 f64 = 512 B) starts a new dtype; f (8 B) then
     * does not fit either. */
    dtl_ddp_tensor fit[] = {T("a", DTL_DTYPE_F32, 64), T("b", DTL_DTYPE_F32, 64),
                            T("c", DTL_DTYPE_F32, 128), T("d", DTL_DTYPE_F32, 1),
                            T("e", DTL_DTYPE_F64, 64), T("f", DTL_DTYPE_F64, 1)};
    CHECK(plan(fit, 6, 512, b, &nb) && nb == 5);
    CHECK(b[0].first == 0 && b[0].n == 2 && b[0].count == 128);
    CHECK(b[1].first == 2 && b[1].n == 1 && b[1].count == 128);
    CHECK(b[2].first == 3 && b[2].n == 1 && b[2].dtype == DTL_DTYPE_F32);
    CHECK(b[3].first == 4 && b[3].n == 1 && b[3].count == 64 && b[3].dtype == DTL_DTYPE_F64);
    CHECK(b[4].first == 5 && b[4].n == 1);
    CHECK(plan_sound(fit, 6, 512, b, nb));
    /* One byte less room: b no longer fits with a. */
    CHECK(plan(fit, 2, 511, b, &nb) && nb == 2);

    /* Zero-sized tensors join the current bucket (even a full one) and are announced too. */
    dtl_ddp_tensor zero[] = {T("z0", DTL_DTYPE_F32, 0), T("a", DTL_DTYPE_F32, 128),
                             T("z1", DTL_DTYPE_F32, 0)};
    CHECK(plan(zero, 3, 512, b, &nb) && nb == 1 && b[0].n == 3 && b[0].count == 128);

    /* Bucket size of one byte: every tensor alone. */
    CHECK(plan(mid, 4, 1, b, &nb) && nb == 4);

    /* Errors: integer dtype, bucket size 0. */
    dtl_ddp_tensor bad[] = {T("a", DTL_DTYPE_F32, 4), T("steps", DTL_DTYPE_I64, 1)};
    CHECK(!dtl_ddp_plan(bad, 2, 1024, 1, b, &nb, &err) && err.kind == DTL_ERR_USAGE &&
          strstr(err.msg, "steps") && strstr(err.msg, "i64"));
    CHECK(!dtl_ddp_plan(mid, 4, 0, 1, b, &nb, &err) && err.kind == DTL_ERR_USAGE);

    /* Pure: the same list gives the same plan. */
    dtl_ddp_bucket b2[16];
    size_t nb2;
    CHECK(plan(mix, 5, 40, b, &nb) && plan(mix, 5, 40, b2, &nb2) && nb == nb2);
    for (size_t k = 0; k < nb && k < nb2; k++)
        CHECK(b[k].first == b2[k].first && b[k].n == b2[k].n && b[k].dtype == b2[k].dtype &&
              b[k].count == b2[k].count);
}

static void test_bucket_bytes(void)
{
    size_t v = 0;
    dtl_err err;
    CHECK(dtl_ddp_bucket_bytes(NULL, &v, &err) && v == DTL_DDP_BUCKET_BYTES);
    CHECK(dtl_ddp_bucket_bytes("", &v, &err) && v == DTL_DDP_BUCKET_BYTES);
    CHECK(dtl_ddp_bucket_bytes("25", &v, &err) && v == (size_t)25 << 20);
    CHECK(dtl_ddp_bucket_bytes("0.25", &v, &err) && v == (size_t)1 << 18);
    CHECK(!dtl_ddp_bucket_bytes("0", &v, &err) && strstr(err.msg, "DTL_BUCKET_MB='0'"));
    CHECK(!dtl_ddp_bucket_bytes("-1", &v, &err) && err.kind == DTL_ERR_USAGE);
    CHECK(!dtl_ddp_bucket_bytes("4MB", &v, &err) && strstr(err.msg, "DTL_BUCKET_MB"));
    CHECK(!dtl_ddp_bucket_bytes("nan", &v, &err));
}

static void test_sig(void)
{
    char buf[200];
    dtl_ddp_bucket b = {0, 2, DTL_DTYPE_F32, 1290, false, 1290};
    CHECK_STR(dtl_ddp_sig(buf, sizeof buf, &b, "gradients @ m.dtl:25"),
              "allreduce f32[1290] mean @ gradients @ m.dtl:25");
    b.dtype = DTL_DTYPE_F64;
    CHECK_STR(dtl_ddp_sig(buf, sizeof buf, &b, NULL), "allreduce f64[1290] mean");
    /* A sharded bucket: a reduce-scatter and an all-gather of its part. */
    b = (dtl_ddp_bucket){0, 2, DTL_DTYPE_F32, 1291, true, 431};
    CHECK_STR(dtl_ddp_sig(buf, sizeof buf, &b, "gradients @ m.dtl:25"),
              "reduce_scatter f32[431] mean @ gradients @ m.dtl:25");
    CHECK(strstr(dtl_ddp_gather_sig(buf, sizeof buf, &b, "params @ m.dtl:25"),
                 "allgather f32[431]") == buf &&
          strstr(buf, "params @ m.dtl:25"));
}

/* Sharded tensors: buckets of one kind (sharded or not), the part is ceil(count / world). */
static void test_plan_shard(void)
{
    dtl_ddp_tensor t[] = {T("loss", DTL_DTYPE_F32, 1), T("fc2.b", DTL_DTYPE_F32, 10),
                          T("fc2.w", DTL_DTYPE_F32, 1280), T("bn.mean", DTL_DTYPE_F32, 10),
                          T("fc1.b", DTL_DTYPE_F32, 7), T("fc1.w", DTL_DTYPE_F32, 2000)};
    t[1].shard = t[2].shard = t[4].shard = t[5].shard = true;
    dtl_ddp_bucket b[8];
    size_t nb;
    dtl_err err;
    CHECK(dtl_ddp_plan(t, 6, 1 << 20, 3, b, &nb, &err) && nb == 4);
    CHECK(b[0].first == 0 && b[0].n == 1 && !b[0].shard && b[0].part == 1);
    CHECK(b[1].first == 1 && b[1].n == 2 && b[1].shard && b[1].count == 1290 &&
          b[1].part == 430);
    CHECK(b[2].first == 3 && !b[2].shard && b[2].part == 10);
    CHECK(b[3].first == 4 && b[3].n == 2 && b[3].shard && b[3].count == 2007 &&
          b[3].part == 669);
    CHECK(dtl_ddp_plan(t, 6, 1 << 20, 4, b, &nb, &err) && b[3].part == 502);
    CHECK(!dtl_ddp_plan(t, 6, 1 << 20, 0, b, &nb, &err) && err.kind == DTL_ERR_USAGE);
}

static dtl_comm *world_of_one(void)
{
    dtl_comm_env env;
    dtl_err err;
    const char *envp[] = {NULL};
    if (!dtl_comm_env_resolve(envp, &env, &err)) {
        fprintf(stderr, "env: %s\n", err.msg);
        return NULL;
    }
    dtl_comm *c = dtl_comm_init(&env, NULL, &err);
    if (!c)
        fprintf(stderr, "init: %s\n", err.msg);
    return c;
}

static void test_one_rank(dtl_comm *c)
{
    dtl_ddp_tensor t[] = {T("fc2.b", DTL_DTYPE_F32, 10), T("fc2.w", DTL_DTYPE_F32, 1280),
                          T("fc1.b", DTL_DTYPE_F64, 3), T("fc1.w", DTL_DTYPE_F32, 7)};
    enum { N = 4 };
    dtl_err err;
    dtl_ddp *d = dtl_ddp_new(c, t, N, 64, "gradients @ m.dtl:25", &err);
    CHECK(d != NULL);
    if (!d)
        return;
    /* Labels: the bucket's tensors before " @ ". */
    CHECK_STR(dtl_ddp_label(d, 0), "gradients of fc2.b @ m.dtl:25");
    CHECK_STR(dtl_ddp_label(d, 1), "gradients of fc2.w @ m.dtl:25");
    CHECK(dtl_ddp_label(d, 4) == NULL);

    float b2[10], w2[1280], w1[7];
    double b1[3];
    for (int step = 0; step < 3; step++) {
        for (int i = 0; i < 10; i++)
            b2[i] = (float)(i + step);
        for (int i = 0; i < 1280; i++)
            w2[i] = (float)i * 0.5f - (float)step;
        for (int i = 0; i < 3; i++)
            b1[i] = 1.0 / (i + 1) + step;
        for (int i = 0; i < 7; i++)
            w1[i] = (float)-i;
        CHECK(dtl_ddp_begin(d, &err));
        /* Any order; the caller's buffers may change as soon as ready returns. */
        dtl_ddp_ready(d, 3, w1);
        dtl_ddp_ready(d, 1, w2);
        dtl_ddp_ready(d, 2, b1);
        dtl_ddp_ready(d, 0, b2);
        w2[5] = 12345.0f;
        b2[0] = -1;
        CHECK(dtl_ddp_finish(d, &err));
        const float *g2 = dtl_ddp_grad(d, 1), *g0 = dtl_ddp_grad(d, 0);
        const double *g1 = dtl_ddp_grad(d, 2);
        CHECK(g2[5] == 2.5f - (float)step && g2[1279] == 639.5f - (float)step);
        CHECK(g0[0] == (float)step && g0[9] == (float)(9 + step));
        CHECK(g1[2] == 1.0 / 3 + step);
        CHECK(((const float *)dtl_ddp_grad(d, 3))[6] == -6.0f);
        CHECK(dtl_ddp_wait_seconds(d) >= 0 && dtl_ddp_wait_seconds(d) < 1);
    }
    CHECK(dtl_ddp_grad(d, 4) == NULL);
    dtl_ddp_free(d);

    /* Finish before all are in: an internal error naming the first missing one, and it
     * sticks (begin and finish fail with it). */
    d = dtl_ddp_new(c, t, N, 64, "gradients @ m.dtl:25", &err);
    CHECK(d && dtl_ddp_begin(d, &err));
    dtl_ddp_ready(d, 0, b2);
    dtl_ddp_ready(d, 2, b1);
    CHECK(!dtl_ddp_finish(d, &err) && err.kind == DTL_ERR_INTERNAL &&
          strstr(err.msg, "2 of 4 missing") && strstr(err.msg, "gradient 1 (fc2.w)"));
    CHECK(!dtl_ddp_begin(d, &err) && err.kind == DTL_ERR_INTERNAL &&
          strstr(err.msg, "missing"));
    dtl_ddp_free(d);

    /* Announced twice; an index out of range; begin twice; finish without begin. */
    d = dtl_ddp_new(c, t, N, 64, NULL, &err);
    CHECK(d && dtl_ddp_begin(d, &err));
    for (size_t k = 0; k < N; k++)
        dtl_ddp_ready(d, k, k == 2 ? (const void *)b1 : k == 1 ? (const void *)w2 : b2);
    dtl_ddp_ready(d, 1, w2);
    CHECK(!dtl_ddp_finish(d, &err) && err.kind == DTL_ERR_INTERNAL &&
          strstr(err.msg, "gradient 1 (fc2.w) announced twice"));
    dtl_ddp_free(d);
    d = dtl_ddp_new(c, t, N, 64, NULL, &err);
    CHECK(d && dtl_ddp_begin(d, &err));
    CHECK_STR(dtl_ddp_label(d, 0), "gradients (fc2.b)");
    dtl_ddp_ready(d, 9, b2);
    CHECK(!dtl_ddp_finish(d, &err) && strstr(err.msg, "gradient 9 announced, but there are only 4"));
    dtl_ddp_free(d);
    d = dtl_ddp_new(c, t, N, 64, NULL, &err);
    CHECK(d && !dtl_ddp_finish(d, &err) && err.kind == DTL_ERR_INTERNAL);
    dtl_ddp_free(d);
    d = dtl_ddp_new(c, t, N, 64, NULL, &err);
    CHECK(d && dtl_ddp_begin(d, &err) && !dtl_ddp_begin(d, &err) &&
          err.kind == DTL_ERR_INTERNAL);
    dtl_ddp_free(d);

    /* No tensors at all: a step is begin + finish. */
    d = dtl_ddp_new(c, NULL, 0, 64, "g", &err);
    CHECK(d && dtl_ddp_begin(d, &err) && dtl_ddp_finish(d, &err));
    dtl_ddp_free(d);

    /* Bad arguments at new. */
    dtl_ddp_tensor bad[] = {T("n", DTL_DTYPE_I32, 1)};
    CHECK(!dtl_ddp_new(c, bad, 1, 64, NULL, &err) && err.kind == DTL_ERR_USAGE);
    dtl_ddp_free(NULL);
}

/* Sharded tensors in a world of one: the part is the whole tensor; gather copies the parts
 * into the full tensors (straight for a bucket of one tensor, through the bucket's region
 * for several). */
static void test_one_rank_shard(dtl_comm *c)
{
    dtl_ddp_tensor t[] = {T("loss", DTL_DTYPE_F32, 1), T("b", DTL_DTYPE_F32, 5),
                          T("w", DTL_DTYPE_F32, 12), T("big", DTL_DTYPE_F64, 40)};
    t[1].shard = t[2].shard = t[3].shard = true;
    dtl_err err;
    dtl_ddp *d = dtl_ddp_new(c, t, 4, 100, "gradients @ m.dtl:25", &err);
    CHECK(d != NULL);
    if (!d)
        return;
    float loss = 2.5f, bv[5], wv[12];
    double big[40];
    for (int i = 0; i < 5; i++)
        bv[i] = (float)i;
    for (int i = 0; i < 12; i++)
        wv[i] = (float)(10 + i);
    for (int i = 0; i < 40; i++)
        big[i] = -i;
    CHECK(dtl_ddp_begin(d, &err));
    dtl_ddp_ready(d, 3, big);
    dtl_ddp_ready(d, 2, wv);
    dtl_ddp_ready(d, 1, bv);
    dtl_ddp_ready(d, 0, &loss);
    CHECK(dtl_ddp_finish(d, &err));
    size_t lo, n;
    for (size_t k = 0; k < 4; k++) {
        dtl_ddp_part(d, k, &lo, &n);
        CHECK(lo == 0 && n == t[k].count);
    }
    CHECK(*(const float *)dtl_ddp_grad(d, 0) == 2.5f);
    float *g = dtl_ddp_grad(d, 2);
    CHECK(g[11] == 21.0f);
    for (int i = 0; i < 12; i++)
        g[i] *= 2;   /* "the update", in place */
    float fb[5] = {0}, fw[12] = {0};
    double fbig[40] = {0};
    void *full[4] = {NULL, fb, fw, fbig};
    const void *part[4] = {NULL, dtl_ddp_grad(d, 1), g, big};
    CHECK(dtl_ddp_gather(d, full, part, "params @ m.dtl:25", &err));
    CHECK(fb[4] == 4.0f && fw[0] == 20.0f && fw[11] == 42.0f && fbig[39] == -39.0);
    /* Not during a step. */
    CHECK(dtl_ddp_begin(d, &err));
    CHECK(!dtl_ddp_gather(d, full, part, "params", &err) && err.kind == DTL_ERR_INTERNAL);
    dtl_ddp_free(d);
}

/* Many names: at most 6 in a label, then "and N more". */
static void test_long_label(dtl_comm *c)
{
    char names[10][8];
    dtl_ddp_tensor t[10];
    for (int i = 0; i < 10; i++) {
        snprintf(names[i], sizeof names[i], "p%d", i);
        t[i] = T(names[i], DTL_DTYPE_F32, 1);
    }
    dtl_err err;
    dtl_ddp *d = dtl_ddp_new(c, t, 10, 1 << 20, "gradients @ x.dtl:3", &err);
    CHECK(d != NULL);
    if (d)
        CHECK_STR(dtl_ddp_label(d, 0), "gradients of p0, p1, p2, p3, p4, p5 and 4 more @ x.dtl:3");
    dtl_ddp_free(d);
}

int main(void)
{
    test_plan();
    test_bucket_bytes();
    test_sig();
    test_plan_shard();
    dtl_comm *c = world_of_one();
    CHECK(c != NULL && dtl_comm_size(c) == 1);
    if (c) {
        test_one_rank(c);
        test_one_rank_shard(c);
        test_long_label(c);
        dtl_err err;
        CHECK(dtl_comm_finalize(c, &err));
        dtl_comm_free(c);
    }
    CHECK_DONE();
}
