/* kernels/cuda/cuda_watch.c — the NCCL watchdog's decisions (cuda_watch.h). Plain C, no
 * CUDA: compiled into the plugin and into tests/unit/test_cuda_dp. */
#include "cuda_watch.h"

#include <stdio.h>

#include "../../runtime/progress.h"

dtl_cu_watch_state dtl_cu_watch_check(const double *done_at, size_t nb, double armed_at,
                                      double timeout, double now, size_t *bucket,
                                      double *waited)
{
    size_t b = 0;
    while (b < nb && done_at[b] >= 0)
        b++;
    if (b == nb)
        return DTL_CU_WATCH_DONE;
    double since = armed_at;
    if (b > 0 && done_at[b - 1] > since)
        since = done_at[b - 1];
    if (timeout > 0 && now - since > timeout) {
        *bucket = b;
        *waited = now - since;
        return DTL_CU_WATCH_STUCK;
    }
    return DTL_CU_WATCH_WAIT;
}

char *dtl_cu_watch_suspects(char *buf, size_t cap, int rank, int size)
{
    enum { MAX_NAMED = 8 };
    if (size <= 1) {
        snprintf(buf, cap, "no other rank (a world of one: the GPU or NCCL itself hangs)");
        return buf;
    }
    if (size == 2) {
        snprintf(buf, cap, "rank %d", 1 - rank);
        return buf;
    }
    size_t at = (size_t)snprintf(buf, cap, "one of ranks");
    int named = 0;
    for (int r = 0; r < size && at < cap; r++) {
        if (r == rank)
            continue;
        if (named == MAX_NAMED) {
            at += (size_t)snprintf(buf + at, cap - at, " and %d more", size - 1 - named);
            break;
        }
        at += (size_t)snprintf(buf + at, cap - at, "%s %d", named ? "," : "", r);
        named++;
    }
    return buf;
}

char *dtl_cu_watch_message(char *buf, size_t cap, int rank, int size, const char *dtype,
                           size_t count, size_t esize, size_t bucket, size_t nb,
                           uint64_t step, const char *label, double waited, double timeout)
{
    char bytes[32], who[200], why[300];
    dtl_progress_fmt_bytes((double)count * (double)esize, bytes, sizeof bytes);
    dtl_cu_watch_suspects(who, sizeof who, rank, size);
    if (size <= 1)
        snprintf(why, sizeof why, "no other rank takes part (a world of one): the GPU or NCCL "
                 "itself hangs");
    else
        snprintf(why, sizeof why, "waiting for %s, which stopped issuing collectives, hangs or "
                 "died", who);
    snprintf(buf, cap, "NCCL allreduce %s[%zu] (%s, bucket %zu of %zu, step %llu) for %s has "
             "not completed after %.1f s (DTL_TIMEOUT=%g): %s; the NCCL communicator is "
             "aborted", dtype, count, bytes, bucket + 1, nb, (unsigned long long)step,
             label && *label ? label : "gradients", waited, timeout, why);
    return buf;
}
