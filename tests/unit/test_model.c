/* tests/unit/test_model.c — the run-time side of ahead-of-time models (runtime/model.h),
 * driven by a descriptor written by hand with entries in C (aot.c's generated code is
 * tested end to end by tests/aot_embed.sh): create and initialization, chunked inference
 * with a padded last chunk, the train step's inputs, commits, staging and in-place updates,
 * set/get, save/load and their errors, and no allocation during runs (with
 * -DDTL_TEST_WRAP_MALLOC and the --wrap link flags). */
#include "../../compiler/graph.h"
#include "../../compiler/llvm/llvm_rt.h"
#include "../../runtime/init.h"
#include "../../runtime/model.h"
#include "../../runtime/safetensors.h"
#include "unit.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef DTL_TEST_WRAP_MALLOC
static long alloc_count;
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
void *__wrap_malloc(size_t n) { alloc_count++; return __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t m) { alloc_count++; return __real_calloc(n, m); }
void *__wrap_realloc(void *p, size_t n) { alloc_count++; return __real_realloc(p, n); }
void *__wrap_aligned_alloc(size_t a, size_t n) { alloc_count++; return __real_aligned_alloc(a, n); }
#endif

/* The model: batch 4, x f32[4, 3], w f32[3, 2] (literal init), b f32[2] (zeros), g f32[3, 2]
 * (glorot), states s1 s2 f32[2].
 * infer: slots x | w b. A SINGLE kernel (transpose w -> wt, arena 256) through the
 *   dtl_llvm_rt, then y = x @ wt^T + b (arena 64).
 * step: slots step x y (a different order from the API's on purpose) | w b s1 s2.
 *   loss = (sum(x) + sum(y)) * step (arena 0, f32); w -= 0.5; b += 1; s1, s2 swapped — the
 *   entry commits, as llvm.h's entries do; value "lr" (f64, const block). */
enum { B = 4, NI = 3, NO = 2 };
enum { T_W, T_B, T_G, T_S1, T_S2, NT };
enum { S0 = DTL_CMODEL_SLOT_FIRST_INPUT };

static const float w_init[NI * NO] = {1, 2, 3, 4, 5, 6};
/* 0.25 (the lr, as f64 bits), then an index for the failing gather: 7 (i64). */
static const int64_t consts[8] = {0x3fd0000000000000, 7};

static const dtl_cmodel_tensor tensors[NT] = {
    {"w", DTL_CMODEL_PARAM, DTL_DTYPE_F32, 2, {NI, NO}, 0, 24, DTL_INIT_DATA, 0, 0, w_init},
    {"b", DTL_CMODEL_PARAM, DTL_DTYPE_F32, 1, {NO}, 64, 8, DTL_INIT_ZEROS, 0, 0, NULL},
    {"g", DTL_CMODEL_PARAM, DTL_DTYPE_F32, 2, {NI, NO}, 128, 24, DTL_INIT_GLOROT_UNIFORM, 0, 0,
     NULL},
    {"s1", DTL_CMODEL_STATE, DTL_DTYPE_F32, 1, {NO}, 192, 8, 0, 0, 0, NULL},
    {"s2", DTL_CMODEL_STATE, DTL_DTYPE_F32, 1, {NO}, 256, 8, 0, 0, 0, NULL},
};

static int32_t infer_entry(void *const *slots)
{
    if (!dtl_llvm_rt_single(slots[DTL_CMODEL_SLOT_RT], 0, slots))
        return 1;
    const float *x = slots[S0], *wt = (const float *)((char *)slots[0] + 256), *b = slots[S0 + 2];
    float *y = (float *)((char *)slots[DTL_CMODEL_SLOT_ARENA] + 64);
    for (int r = 0; r < B; r++)
        for (int j = 0; j < NO; j++) {
            float s = b[j];
            for (int k = 0; k < NI; k++)
                s += x[r * NI + k] * wt[j * NI + k];
            y[r * NO + j] = s;
        }
    return 0;
}

static int32_t fail_entry(void *const *slots)
{
    return dtl_llvm_rt_single(slots[DTL_CMODEL_SLOT_RT], 1, slots) ? 0 : 2;
}

static int32_t step_entry(void *const *slots)
{
    const int64_t *step = slots[S0];
    const float *x = slots[S0 + 1];
    const int64_t *y = slots[S0 + 2];
    float *loss = slots[DTL_CMODEL_SLOT_ARENA];
    float *w = slots[S0 + 3], *b = slots[S0 + 4], *s1 = slots[S0 + 5], *s2 = slots[S0 + 6];
    double s = 0;
    for (int i = 0; i < B * NI; i++)
        s += x[i];
    for (int i = 0; i < B; i++)
        s += (double)y[i];
    *loss = (float)(s * (double)*step);
    for (int i = 0; i < NI * NO; i++)
        w[i] -= 0.5f;
    for (int j = 0; j < NO; j++) {
        b[j] += 1;
        float t = s1[j];
        s1[j] = s2[j];
        s2[j] = t;
    }
    return 0;
}

static const dtl_cmodel_input infer_in[] = {{"x", DTL_DTYPE_F32, 2, {B, NI}}};
static const uint64_t infer_store[] = {T_W, T_B};
static const dtl_cmodel_output infer_out[] = {
    {"y", DTL_OUT_VALUE, DTL_DTYPE_F32, 2, {B, NO}, B * NO * 4, DTL_CMODEL_AT_ARENA, 64}};
static const dtl_cmodel_operand transpose_in[] = {{DTL_DTYPE_F32, 2, {NI, NO}, S0 + 1, 0}};
static const dtl_cmodel_operand gather_in[] = {{DTL_DTYPE_F32, 2, {NI, NO}, S0 + 1, 0},
                                              {DTL_DTYPE_I64, 1, {1}, DTL_CMODEL_SLOT_CONST, 8}};
static const dtl_cmodel_single infer_single[] = {
    {11, "wt", DTL_OP_TRANSPOSE, 1, transpose_in, {DTL_DTYPE_F32, 2, {NO, NI},
     DTL_CMODEL_SLOT_ARENA, 256}, {1 | 0ull << 32}},
    {12, NULL, DTL_OP_GATHER, 2, gather_in, {DTL_DTYPE_F32, 2, {1, NO}, DTL_CMODEL_SLOT_ARENA, 0},
     {0}},
};
static const dtl_cmodel_input step_in[] = {
    {"step", DTL_DTYPE_I64, 0, {0}}, {"x", DTL_DTYPE_F32, 2, {B, NI}}, {"y", DTL_DTYPE_I64, 1, {B}}};
static const uint64_t step_store[] = {T_W, T_B, T_S1, T_S2};
static const dtl_cmodel_output step_out[] = {
    {"loss", DTL_OUT_LOSS, DTL_DTYPE_F32, 0, {0}, 4, DTL_CMODEL_AT_ARENA, 0},
    {"lr", DTL_OUT_VALUE, DTL_DTYPE_F64, 0, {0}, 8, DTL_CMODEL_AT_CONST, 0},
    {"w", DTL_OUT_PARAM, DTL_DTYPE_F32, 2, {NI, NO}, 24, DTL_CMODEL_AT_TENSOR, T_W},
    {"b", DTL_OUT_PARAM, DTL_DTYPE_F32, 1, {NO}, 8, DTL_CMODEL_AT_TENSOR, T_B},
    {"s1", DTL_OUT_STATE, DTL_DTYPE_F32, 1, {NO}, 8, DTL_CMODEL_AT_TENSOR, T_S1},
    {"s2", DTL_OUT_STATE, DTL_DTYPE_F32, 1, {NO}, 8, DTL_CMODEL_AT_TENSOR, T_S2},
};

static dtl_cmodel_desc make_desc(void)
{
    dtl_cmodel_desc d = {
        DTL_CMODEL_ABI, "tiny", "Tiny", "tiny.dtl", "0123456789abcdef", B, 0, NT, tensors, 320,
        {infer_entry, 320, sizeof consts, consts, 1, infer_in, 2, infer_store, 1, infer_out, 2,
         infer_single},
        {step_entry, 128, sizeof consts, consts, 3, step_in, 4, step_store, 6, step_out, 0, NULL},
    };
    return d;
}

static void test_create(void)
{
    dtl_err err;
    dtl_cmodel_desc d = make_desc();
    d.abi = 99;
    CHECK(!dtl_cmodel_create(&d, 1, &err));
    CHECK(strstr(err.msg, "ABI 99") && strstr(err.msg, "recompile"));
    d = make_desc();
    dtl_cmodel *m = dtl_cmodel_create(&d, 7, &err);
    CHECK(m != NULL);
    if (!m)
        return;
    float w[6], b[2], g[6], want[6];
    CHECK(dtl_cmodel_get(m, "w", w, sizeof w, &err) && memcmp(w, w_init, sizeof w) == 0);
    CHECK(dtl_cmodel_get(m, "b", b, sizeof b, &err) && b[0] == 0 && b[1] == 0);
    /* The same numbers as `dtlc run` with seed 7 (runtime/init.h). */
    dtl_init gi = {DTL_INIT_GLOROT_UNIFORM, 0, 0, NULL};
    int64_t gs[2] = {NI, NO};
    CHECK(dtl_init_fill(&gi, "g", DTL_DTYPE_F32, 2, gs, 7, want, &err));
    CHECK(dtl_cmodel_get(m, "g", g, sizeof g, &err) && memcmp(g, want, sizeof g) == 0);
    CHECK(g[0] != 0);
    CHECK(!dtl_cmodel_get(m, "w", w, 8, &err));
    CHECK_STR(err.msg, "w is f32[3, 2] (24 bytes), not 8 bytes");
    CHECK(!dtl_cmodel_set(m, "fc9", w, 24, &err));
    CHECK_STR(err.msg, "tiny has no parameter or state \"fc9\"");
    CHECK(dtl_cmodel_find(m, "s2") == &tensors[T_S2] && !dtl_cmodel_find(m, "nope"));

    /* An input the API cannot feed is refused at create. */
    dtl_cmodel_input odd[] = {{"step", DTL_DTYPE_I64, 0, {0}}, {"mask", DTL_DTYPE_F32, 1, {B}}};
    d.step.inputs = odd;
    d.step.ninputs = 2;
    CHECK(!dtl_cmodel_create(&d, 7, &err));
    CHECK_STR(err.msg, "tiny: the train step program has an input \"mask\" (f32[4]) that the "
              "C API cannot feed");
    dtl_cmodel_free(m);
}

static void test_infer_and_step(void)
{
    dtl_err err;
    dtl_cmodel_desc d = make_desc();
    dtl_cmodel *m = dtl_cmodel_create(&d, 1, &err);
    CHECK(m != NULL);
    if (!m)
        return;
    float b1[2] = {0.5f, -1};
    CHECK(dtl_cmodel_set(m, "b", b1, sizeof b1, &err));
    enum { R = 10 };
    float x[R * NI], y[R * NO + 1];
    for (int i = 0; i < R * NI; i++)
        x[i] = (float)(i % 7) - 2.5f;
    y[R * NO] = 12345;   /* past the rows: never written */
#ifdef DTL_TEST_WRAP_MALLOC
    long before = alloc_count;
#endif
    CHECK(dtl_cmodel_infer(m, x, R, y, &err));
    bool same = true;
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NO; j++) {
            float s = b1[j];
            for (int k = 0; k < NI; k++)
                s += x[r * NI + k] * w_init[k * NO + j];
            same = same && y[r * NO + j] == s;
        }
    CHECK(same);
    CHECK(y[R * NO] == 12345);
    CHECK(dtl_cmodel_infer(m, NULL, 0, NULL, &err));
    CHECK(!dtl_cmodel_infer(m, x, -1, y, &err));

    float s1[2] = {1, 2}, s2[2] = {3, 4};
    CHECK(dtl_cmodel_set(m, "s1", s1, sizeof s1, &err) && dtl_cmodel_set(m, "s2", s2, sizeof s2, &err));
    int64_t lab[B] = {1, 0, 2, 1};
    double loss = 0;
#ifdef DTL_TEST_WRAP_MALLOC
    long mid = alloc_count;
#endif
    CHECK(dtl_cmodel_train_step(m, x, lab, 3, &loss, &err));
    double sx = 0;
    for (int i = 0; i < B * NI; i++)
        sx += x[i];
    CHECK(loss == (double)(float)((sx + 4) * 3));
    float w[6], b[2];
    CHECK(dtl_cmodel_get(m, "w", w, sizeof w, &err) && w[0] == 0.5f && w[5] == 5.5f);
    CHECK(dtl_cmodel_get(m, "b", b, sizeof b, &err) && b[0] == 1.5f && b[1] == 0);
    CHECK(dtl_cmodel_get(m, "s1", s1, sizeof s1, &err) && s1[0] == 3 && s1[1] == 4);
    CHECK(dtl_cmodel_get(m, "s2", s2, sizeof s2, &err) && s2[0] == 1 && s2[1] == 2);
    CHECK(dtl_cmodel_train_step(m, x, lab, 4, NULL, &err));
#ifdef DTL_TEST_WRAP_MALLOC
    CHECK(alloc_count == before);   /* runs allocate nothing */
    CHECK(mid == before);
#endif
    CHECK(!dtl_cmodel_train_step(m, x, lab, 0, &loss, &err));
    CHECK_STR(err.msg, "tiny_train_step: step 0: the first update is step 1");
    dtl_cmodel_free(m);

    /* An entry that fails: its message reaches the caller; the API keeps it. */
    d.infer.run = fail_entry;
    m = dtl_cmodel_api_create(&d, 1, NULL, 0);
    CHECK(m != NULL);
    if (!m)
        return;
    CHECK(dtl_cmodel_api_infer(m, x, 4, y) == -1);
    CHECK(strstr(dtl_cmodel_error(m), "tiny: %12 (gather): ") &&
          strstr(dtl_cmodel_error(m), "out of range"));
    CHECK(dtl_cmodel_api_set(m, "w", w, 3) == -1);
    CHECK_STR(dtl_cmodel_error(m), "w is f32[3, 2] (24 bytes), not 3 bytes");
    dtl_cmodel_free(m);

    /* A forward that mixes rows: no padding. */
    d = make_desc();
    d.rows_coupled = 1;
    m = dtl_cmodel_create(&d, 1, &err);
    CHECK(m && !dtl_cmodel_infer(m, x, 6, y, &err) && strstr(err.msg, "multiple of its batch, 4"));
    CHECK(m && dtl_cmodel_infer(m, x, 8, y, &err));
    dtl_cmodel_free(m);
    char buf[200] = "";
    d.abi = 0;
    CHECK(!dtl_cmodel_api_create(&d, 1, buf, sizeof buf) && strstr(buf, "ABI 0"));
}

static void test_save_load(void)
{
    dtl_err err;
    dtl_cmodel_desc d = make_desc();
    dtl_cmodel *m = dtl_cmodel_create(&d, 1, &err), *m2 = dtl_cmodel_create(&d, 2, &err);
    CHECK(m && m2);
    if (!m || !m2)
        return;
    char path[] = "/tmp/dtl-test-model-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    float s1[2] = {7, 8};
    CHECK(dtl_cmodel_set(m, "s1", s1, sizeof s1, &err));
    CHECK(dtl_cmodel_save(m, path, &err));
    CHECK(dtl_cmodel_load(m2, path, &err));
    float a[6], b[6];
    CHECK(dtl_cmodel_get(m, "g", a, sizeof a, &err) && dtl_cmodel_get(m2, "g", b, sizeof b, &err));
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(dtl_cmodel_get(m2, "s1", a, 8, &err) && a[0] == 7 && a[1] == 8);
    dtl_st_file *f = dtl_st_read(path, &err);
    CHECK(f && dtl_st_count(f) == NT && strcmp(dtl_st_get(f, 0)->name, "w") == 0);
    CHECK(f && strcmp(dtl_st_meta_get(f, "model"), "Tiny") == 0);
    CHECK(f && strcmp(dtl_st_meta_get(f, "seed"), "1") == 0);
    dtl_st_close(f);
    /* m2 (seed 2) took the file's seed, 1. */
    CHECK(dtl_cmodel_save(m2, path, &err));
    f = dtl_st_read(path, &err);
    CHECK(f && strcmp(dtl_st_meta_get(f, "seed"), "1") == 0);
    dtl_st_close(f);

    /* Params only (like a file of weights): states stay; moments of known params pass. */
    float w[6] = {0}, bb[2] = {9, 9}, g[6] = {0}, wm[6] = {0};
    dtl_st_tensor ts[4] = {
        {"w", DTL_ST_F32, 2, {3, 2}, w, 24}, {"b", DTL_ST_F32, 1, {2}, bb, 8},
        {"g", DTL_ST_F32, 2, {3, 2}, g, 24}, {"w.m", DTL_ST_F32, 2, {3, 2}, wm, 24}};
    CHECK(dtl_st_write(path, ts, 4, NULL, 0, &err));
    CHECK(dtl_cmodel_load(m2, path, &err));
    CHECK(dtl_cmodel_get(m2, "b", a, 8, &err) && a[0] == 9);
    CHECK(dtl_cmodel_get(m2, "s1", a, 8, &err) && a[0] == 7);

    ts[1].shape[0] = 1, ts[1].nbytes = 4;
    CHECK(dtl_st_write(path, ts, 4, NULL, 0, &err));
    CHECK(!dtl_cmodel_load(m2, path, &err));
    char want[400];
    snprintf(want, sizeof want, "%s does not match this model: b is f32[1] there, f32[2] here",
             path);
    CHECK_STR(err.msg, want);
    CHECK(dtl_st_write(path, ts, 1, NULL, 0, &err));
    CHECK(!dtl_cmodel_load(m2, path, &err));
    snprintf(want, sizeof want, "%s does not match this model: it has no b (f32[2] here)", path);
    CHECK_STR(err.msg, want);
    ts[1].shape[0] = 2, ts[1].nbytes = 8;
    ts[3].name = "extra";
    CHECK(dtl_st_write(path, ts, 4, NULL, 0, &err));
    CHECK(!dtl_cmodel_load(m2, path, &err) && strstr(err.msg, "it has extra, which this model lacks"));
    dtl_st_tensor st[6] = {ts[0], ts[1], ts[2], {"s1", DTL_ST_F32, 1, {2}, bb, 8}};
    CHECK(dtl_st_write(path, st, 4, NULL, 0, &err));
    CHECK(!dtl_cmodel_load(m2, path, &err) && strstr(err.msg, "some of the optimizer state but not s2"));
    CHECK(!dtl_cmodel_load(m2, "/nonexistent/w.safetensors", &err));
    CHECK(dtl_cmodel_api_load(m2, "/nonexistent/w.safetensors") == -1 &&
          strstr(dtl_cmodel_error(m2), "/nonexistent/w.safetensors"));
    unlink(path);
    dtl_cmodel_free(m);
    dtl_cmodel_free(m2);
}

int main(void)
{
    test_create();
    test_infer_and_step();
    test_save_load();
    CHECK_DONE();
}
