/* kernels/cuda/cuda_watch.h — the NCCL watchdog's decisions (kernels/cuda/cuda_dp.c): pure
 * functions of times and counts, no CUDA, so the host's tests check them with a fake clock.
 *
 * Contract:
 *  - A data-parallel step issues its buckets' allreduces in bucket order on one stream, so
 *    they complete in that order. The watchdog launches nothing: it notes when it first saw
 *    each bucket's completion event fire (done_at[b] in seconds of any monotonic clock, < 0
 *    while not yet) after the step was launched (armed_at).
 *  - dtl_cu_watch_check: DONE when every bucket completed; else STUCK when the first bucket
 *    not done has waited more than timeout seconds — counted from the completion of the
 *    bucket before it (that is when it could have started at the latest, the backward pass
 *    permitting), or from armed_at for the first — with *bucket and *waited set; else WAIT.
 *    nb == 0 is DONE. timeout <= 0 never decides STUCK.
 *  - NCCL cannot say which rank is missing from a collective; dtl_cu_watch_suspects names
 *    the others: "rank 1" in a world of two, "one of ranks 0, 2, 3" (up to 8, then "and N
 *    more") in a larger one. In a world of one the message says that no other rank takes
 *    part (the GPU or NCCL itself hangs).
 *  - dtl_cu_watch_message: the whole message of a stuck collective, for stderr and the error
 *    value: "NCCL allreduce f32[1290] (5.2 kB, bucket 2 of 3, step 7) for gradients of fc2.b,
 *    fc2.w @ m.dtl:25 has not completed after 30.0 s (DTL_TIMEOUT=30): waiting for rank 1,
 *    which stopped issuing collectives, hangs or died; the NCCL communicator is aborted".
 */
#ifndef DTL_CUDA_WATCH_H
#define DTL_CUDA_WATCH_H

#include <stddef.h>
#include <stdint.h>

typedef enum dtl_cu_watch_state {
    DTL_CU_WATCH_DONE,
    DTL_CU_WATCH_WAIT,
    DTL_CU_WATCH_STUCK,
} dtl_cu_watch_state;

dtl_cu_watch_state dtl_cu_watch_check(const double *done_at, size_t nb, double armed_at,
                                      double timeout, double now, size_t *bucket,
                                      double *waited);

/* Who may be missing, seen from `rank` of `size` (see the contract). Returns buf. */
char *dtl_cu_watch_suspects(char *buf, size_t cap, int rank, int size);

/* dtype: "f32"/"f64"; count elements of esize bytes; bucket is 0-based (printed 1-based);
 * step is 1-based. Returns buf. */
char *dtl_cu_watch_message(char *buf, size_t cap, int rank, int size, const char *dtype,
                           size_t count, size_t esize, size_t bucket, size_t nb,
                           uint64_t step, const char *label, double waited, double timeout);

#endif
