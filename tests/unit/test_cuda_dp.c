/* tests/unit/test_cuda_dp.c — NCCL data parallel's host side, without a GPU:
 *  - the watchdog's decisions (kernels/cuda/cuda_watch.h) on a fake clock: a bucket is stuck
 *    only after the timeout counted from the completion of the bucket before it;
 *  - who it names and the whole message (rank, collective, size, bucket, step, label);
 *  - dtl's NCCL declarations (kernels/cuda/cuda_nccl.h) against nccl.h, where the build has it;
 *  - in a build with CUDA: the plugin loads (no GPU needed) and offers the data-parallel table,
 *    and NCCL is found and loaded by it (this machine has libnccl.so.2 in the toolkit);
 *    dtl_dist_cuda_check agrees. Without CUDA: both say that this build has none.
 * The parts that need a GPU are in tests/cuda_dp.sh (skips here). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../../compiler/run_dist_cuda.h"
#include "../../kernels/cuda/cuda_dp.h"
#include "../../kernels/cuda/cuda_nccl.h"
#include "../../kernels/cuda/cuda_watch.h"
#include "unit.h"

#ifdef HAVE_NCCL_H
#include <nccl.h>
_Static_assert(DTL_NCCL_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "ncclUniqueId's size");
_Static_assert(sizeof(dtl_nccl_id) == sizeof(ncclUniqueId), "ncclUniqueId's size");
_Static_assert((int)DTL_NCCL_SUCCESS == (int)ncclSuccess, "ncclSuccess");
_Static_assert((int)DTL_NCCL_IN_PROGRESS == (int)ncclInProgress, "ncclInProgress");
_Static_assert((int)DTL_NCCL_OP_SUM == (int)ncclSum, "ncclSum");
_Static_assert((int)DTL_NCCL_OP_AVG == (int)ncclAvg, "ncclAvg");
_Static_assert((int)DTL_NCCL_FLOAT32 == (int)ncclFloat32, "ncclFloat32");
_Static_assert((int)DTL_NCCL_FLOAT64 == (int)ncclFloat64, "ncclFloat64");
_Static_assert(sizeof(ncclResult_t) == sizeof(dtl_nccl_result), "ncclResult_t is an int");
_Static_assert(sizeof(ncclDataType_t) == sizeof(int), "ncclDataType_t is an int");
_Static_assert(sizeof(ncclRedOp_t) == sizeof(int), "ncclRedOp_t is an int");
_Static_assert(sizeof(ncclComm_t) == sizeof(dtl_nccl_comm), "ncclComm_t is a pointer");
_Static_assert(sizeof(cudaStream_t) == sizeof(void *), "cudaStream_t is a pointer");
_Static_assert(NCCL_VERSION_CODE >= DTL_NCCL_MIN_VERSION, "the toolkit's NCCL has ncclAvg");

/* The functions' prototypes are the ones cuda_nccl.h's pointers copy, with NCCL's types
 * (whose sizes and values are checked above). __typeof__ evaluates nothing: no reference to
 * NCCL's symbols, so this links without libnccl. */
#define SAME_TYPE(f, t) _Static_assert(__builtin_types_compatible_p(__typeof__(f), t), #f)
SAME_TYPE(ncclGetVersion, ncclResult_t(int *));
SAME_TYPE(ncclGetUniqueId, ncclResult_t(ncclUniqueId *));
SAME_TYPE(ncclCommInitRank, ncclResult_t(ncclComm_t *, int, ncclUniqueId, int));
SAME_TYPE(ncclAllReduce, ncclResult_t(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t,
                                      ncclComm_t, cudaStream_t));
SAME_TYPE(ncclCommGetAsyncError, ncclResult_t(ncclComm_t, ncclResult_t *));
SAME_TYPE(ncclCommAbort, ncclResult_t(ncclComm_t));
SAME_TYPE(ncclCommDestroy, ncclResult_t(ncclComm_t));
SAME_TYPE(ncclGetErrorString, const char *(ncclResult_t));

static void check_types(void)
{
    printf("nccl.h: NCCL %d.%d.%d; dtl's declarations agree\n", NCCL_MAJOR, NCCL_MINOR,
           NCCL_PATCH);
}
#endif

static void test_check(void)
{
    double done[4] = {-1, -1, -1, -1};
    size_t b = 99;
    double w = -1;
    /* Nothing done yet: waiting until the timeout has passed since the launch. */
    CHECK(dtl_cu_watch_check(done, 3, 100.0, 30.0, 110.0, &b, &w) == DTL_CU_WATCH_WAIT);
    CHECK(dtl_cu_watch_check(done, 3, 100.0, 30.0, 130.0, &b, &w) == DTL_CU_WATCH_WAIT);
    CHECK(b == 99);
    CHECK(dtl_cu_watch_check(done, 3, 100.0, 30.0, 130.5, &b, &w) == DTL_CU_WATCH_STUCK);
    CHECK(b == 0 && w > 30.4 && w < 30.6);
    /* Bucket 0 done at 125: bucket 1's clock starts then, not at the launch. */
    done[0] = 125.0;
    b = 99;
    CHECK(dtl_cu_watch_check(done, 3, 100.0, 30.0, 140.0, &b, &w) == DTL_CU_WATCH_WAIT);
    CHECK(dtl_cu_watch_check(done, 3, 100.0, 30.0, 154.0, &b, &w) == DTL_CU_WATCH_WAIT);
    CHECK(dtl_cu_watch_check(done, 3, 100.0, 30.0, 156.0, &b, &w) == DTL_CU_WATCH_STUCK);
    CHECK(b == 1 && w > 30.9 && w < 31.1);
    /* Everything done: DONE at any time, even long after. */
    done[1] = 150.0;
    done[2] = 151.0;
    CHECK(dtl_cu_watch_check(done, 3, 100.0, 30.0, 1e6, &b, &w) == DTL_CU_WATCH_DONE);
    /* A completion seen before the launch (a stale time) does not start the clock early. */
    double stale[2] = {50.0, -1};
    CHECK(dtl_cu_watch_check(stale, 2, 100.0, 30.0, 120.0, &b, &w) == DTL_CU_WATCH_WAIT);
    CHECK(dtl_cu_watch_check(stale, 2, 100.0, 30.0, 131.0, &b, &w) == DTL_CU_WATCH_STUCK);
    CHECK(b == 1);
    /* No buckets: done; no timeout: never stuck. */
    CHECK(dtl_cu_watch_check(done, 0, 100.0, 30.0, 1e9, &b, &w) == DTL_CU_WATCH_DONE);
    double none[1] = {-1};
    CHECK(dtl_cu_watch_check(none, 1, 100.0, 0.0, 1e9, &b, &w) == DTL_CU_WATCH_WAIT);
}

static void test_messages(void)
{
    char buf[1200];
    CHECK_STR(dtl_cu_watch_suspects(buf, sizeof buf, 0, 2), "rank 1");
    CHECK_STR(dtl_cu_watch_suspects(buf, sizeof buf, 1, 2), "rank 0");
    CHECK_STR(dtl_cu_watch_suspects(buf, sizeof buf, 2, 4), "one of ranks 0, 1, 3");
    CHECK_STR(dtl_cu_watch_suspects(buf, sizeof buf, 0, 12),
              "one of ranks 1, 2, 3, 4, 5, 6, 7, 8 and 3 more");
    CHECK(strstr(dtl_cu_watch_suspects(buf, sizeof buf, 0, 1), "a world of one") != NULL);
    CHECK_STR(dtl_cu_watch_message(buf, sizeof buf, 0, 2, "f32", 1290, 4, 1, 3, 7,
                                   "gradients of fc2.b, fc2.w @ m.dtl:25", 30.04, 30),
              "NCCL allreduce f32[1290] (5.2 kB, bucket 2 of 3, step 7) for gradients of "
              "fc2.b, fc2.w @ m.dtl:25 has not completed after 30.0 s (DTL_TIMEOUT=30): "
              "waiting for rank 1, which stopped issuing collectives, hangs or died; the NCCL "
              "communicator is aborted");
    dtl_cu_watch_message(buf, sizeof buf, 3, 4, "f64", 3000000, 8, 0, 1, 1, NULL, 12.5, 12);
    CHECK(strstr(buf, "f64[3000000] (24.0 MB, bucket 1 of 1, step 1) for gradients has") != NULL);
    CHECK(strstr(buf, "waiting for one of ranks 0, 1, 2,") != NULL);
    CHECK(strstr(buf, "(DTL_TIMEOUT=12)") != NULL);
    dtl_cu_watch_message(buf, sizeof buf, 0, 1, "f32", 677, 4, 0, 1, 5, "gradients @ n.dtl:22",
                         2.01, 2);
    CHECK_STR(buf, "NCCL allreduce f32[677] (2.7 kB, bucket 1 of 1, step 5) for gradients @ "
                   "n.dtl:22 has not completed after 2.0 s (DTL_TIMEOUT=2): no other rank "
                   "takes part (a world of one): the GPU or NCCL itself hangs; the NCCL "
                   "communicator is aborted");
    /* A small buffer truncates, never overflows. */
    char small[16];
    dtl_cu_watch_message(small, sizeof small, 0, 2, "f32", 1, 4, 0, 1, 1, "x", 1, 1);
    CHECK(strlen(small) == sizeof small - 1);
}

static void test_plugin(void)
{
    char why[600] = "";
    const dtl_cuda_dp_api *api = dtl_cuda_dp_get(why, sizeof why);
    dtl_err err;
    memset(&err, 0, sizeof err);
    bool ok = dtl_dist_cuda_check(&err);
#ifdef HAVE_CUDA
    CHECK(api != NULL);
    if (!api) {
        fprintf(stderr, "the plugin did not load: %s\n", why);
        return;
    }
    CHECK(api->available && api->unique_id && api->create && api->plan_opts && api->finish &&
          api->wait_seconds && api->set_timeout && api->destroy);
    bool have = api->available(why, sizeof why);
    printf("NCCL: %s: %s\n", have ? "loaded" : "not loaded", why);
    CHECK(ok == have);
#ifdef HAVE_NCCL_H
    /* The toolkit here ships libnccl.so.2 next to nccl.h: the plugin must find and load it. */
    CHECK(have);
    CHECK(strncmp(why, "NCCL 2.", 7) == 0);
#endif
    if (!ok)
        CHECK(strstr(err.msg, "parallel = data on cuda needs NCCL") != NULL);
    /* The options mark a plan as the dp's by their hook (never called) and carry the dp. */
    dtl_plan_opts o;
    api->plan_opts((dtl_cuda_dp *)&o, &o);
    CHECK(o.output_ready != NULL && o.ready_ctx == (void *)&o && !o.no_reuse);
#else
    CHECK(api == NULL);
    CHECK(strstr(why, "this build has no CUDA") != NULL);
    CHECK(!ok && strstr(err.msg, "this build has no CUDA") != NULL);
#endif
}

int main(void)
{
    test_check();
    test_messages();
#ifdef HAVE_NCCL_H
    check_types();
#endif
    test_plugin();
    CHECK_DONE();
}
