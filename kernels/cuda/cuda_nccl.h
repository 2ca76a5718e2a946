/* kernels/cuda/cuda_nccl.h — NCCL, loaded at run time: the few functions data parallel
 * training needs (kernels/cuda/cuda_dp.c), declared here with dtl's own names.
 *
 * Contract:
 *  - The CUDA plugin does not link NCCL: dtl_nccl_load dlopen()s libnccl.so.2 (the SONAME
 *    every NCCL 2 ships; $DTL_NCCL_LIB when set, nothing else tried then) on first use, so the
 *    plugin builds and loads where NCCL or its header is missing (the GPU machine has
 *    libnccl.so.2 in /lib/x86_64-linux-gnu, its header unverified), and data parallel training
 *    is the only thing that needs it. A plain name is looked for by the dynamic loader (the
 *    plugin's runpath, which has the toolkit's lib directory, then the system's).
 *  - The declarations below copy NCCL 2's ABI, which is stable across 2.x: ncclResult_t,
 *    ncclDataType_t and ncclRedOp_t are C enums (int), ncclUniqueId is 128 bytes passed by
 *    value, ncclComm_t and cudaStream_t are pointers. tests/unit/test_cuda_dp.c checks every
 *    constant and the id's size against nccl.h where the build has it (HAVE_NCCL_H).
 *  - ncclAvg (the mean) needs NCCL >= 2.10: older is refused with its version.
 *  - No CUDA header here (the host-side test includes this file).
 * Errors: dtl_nccl_load returns false with the reason (dlerror's, a missing symbol, too old)
 * in why; every call's result is the library's (dtl_nccl.error_string explains it).
 */
#ifndef DTL_CUDA_NCCL_H
#define DTL_CUDA_NCCL_H

#include <stdbool.h>
#include <stddef.h>

enum {
    DTL_NCCL_ID_BYTES = 128,
    DTL_NCCL_SUCCESS = 0,         /* ncclSuccess */
    DTL_NCCL_IN_PROGRESS = 7,     /* ncclInProgress */
    DTL_NCCL_OP_SUM = 0,          /* ncclSum */
    DTL_NCCL_OP_AVG = 4,          /* ncclAvg (2.10 and later) */
    DTL_NCCL_FLOAT32 = 7,         /* ncclFloat32 */
    DTL_NCCL_FLOAT64 = 8,         /* ncclFloat64 */
    DTL_NCCL_MIN_VERSION = 21000, /* 2.10.0, as ncclGetVersion reports it */
};

typedef int dtl_nccl_result;
typedef struct dtl_nccl_comm_opaque *dtl_nccl_comm;
typedef struct dtl_nccl_id {
    char internal[DTL_NCCL_ID_BYTES];
} dtl_nccl_id;

typedef struct dtl_nccl {
    void *lib;
    int version;            /* 22803 for 2.28.3 */
    char path[256];         /* what was dlopen()ed */
    dtl_nccl_result (*get_version)(int *version);
    dtl_nccl_result (*get_unique_id)(dtl_nccl_id *id);
    dtl_nccl_result (*comm_init_rank)(dtl_nccl_comm *comm, int nranks, dtl_nccl_id id, int rank);
    dtl_nccl_result (*all_reduce)(const void *send, void *recv, size_t count, int dtype, int op,
                                  dtl_nccl_comm comm, void *stream);
    dtl_nccl_result (*comm_get_async_error)(dtl_nccl_comm comm, dtl_nccl_result *err);
    dtl_nccl_result (*comm_abort)(dtl_nccl_comm comm);
    dtl_nccl_result (*comm_destroy)(dtl_nccl_comm comm);
    const char *(*error_string)(dtl_nccl_result r);
} dtl_nccl;

/* Loads NCCL into n once (call it under the caller's pthread_once or lock). */
bool dtl_nccl_load(dtl_nccl *n, char *why, size_t len);

#endif
