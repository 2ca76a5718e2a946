/* kernels/cuda/cuda_nccl.c — dlopen()s NCCL and resolves the functions of cuda_nccl.h.
 *
 * Design. RTLD_NOW | RTLD_LOCAL, like the plugin itself: a library missing one of the
 * symbols is refused at once, naming it, and NCCL's symbols never interpose on anyone's.
 * The version is asked first (ncclGetVersion exists in every 2.x), so an NCCL too old for
 * ncclAvg is refused with its version rather than failing in the first allreduce. */
#include "cuda_nccl.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* dlsym into a function pointer (POSIX guarantees the conversion works; ISO C does not say,
 * hence the memcpy). */
static bool sym(void *lib, const char *name, void *fnp, char *why, size_t len,
                const char *path)
{
    void *p = dlsym(lib, name);
    if (!p) {
        snprintf(why, len, "%s has no %s: not an NCCL 2 library", path, name);
        return false;
    }
    memcpy(fnp, &p, sizeof p);
    return true;
}

bool dtl_nccl_load(dtl_nccl *n, char *why, size_t len)
{
    memset(n, 0, sizeof *n);
    const char *env = getenv("DTL_NCCL_LIB");
    const char *cands[2] = {"libnccl.so.2", "libnccl.so"};
    int ncand = 2;
    if (env && *env) {
        cands[0] = env;
        ncand = 1;
    }
    const char *err = "";
    for (int i = 0; i < ncand && !n->lib; i++) {
        n->lib = dlopen(cands[i], RTLD_NOW | RTLD_LOCAL);
        if (n->lib)
            snprintf(n->path, sizeof n->path, "%s", cands[i]);
        else if (i == 0)
            err = dlerror();
    }
    if (!n->lib) {
        snprintf(why, len, "cannot load NCCL: %s%s", err,
                 env && *env ? " (from DTL_NCCL_LIB)" : "; set DTL_NCCL_LIB to libnccl.so.2's path");
        return false;
    }
    const char *p = n->path;
    if (!sym(n->lib, "ncclGetVersion", &n->get_version, why, len, p) ||
        !sym(n->lib, "ncclGetUniqueId", &n->get_unique_id, why, len, p) ||
        !sym(n->lib, "ncclCommInitRank", &n->comm_init_rank, why, len, p) ||
        !sym(n->lib, "ncclAllReduce", &n->all_reduce, why, len, p) ||
        !sym(n->lib, "ncclCommGetAsyncError", &n->comm_get_async_error, why, len, p) ||
        !sym(n->lib, "ncclCommAbort", &n->comm_abort, why, len, p) ||
        !sym(n->lib, "ncclCommDestroy", &n->comm_destroy, why, len, p) ||
        !sym(n->lib, "ncclGetErrorString", &n->error_string, why, len, p))
        goto fail;
    if (n->get_version(&n->version) != DTL_NCCL_SUCCESS) {
        snprintf(why, len, "%s: ncclGetVersion failed", p);
        goto fail;
    }
    if (n->version < DTL_NCCL_MIN_VERSION) {
        int v = n->version;   /* before 2.9: 1000 * major + 100 * minor + patch */
        snprintf(why, len, "%s is NCCL %d.%d.%d: data parallel needs 2.10 or later (ncclAvg)",
                 p, v < 10000 ? v / 1000 : v / 10000, v < 10000 ? v / 100 % 10 : v / 100 % 100,
                 v % 100);
        goto fail;
    }
    return true;
fail:
    dlclose(n->lib);
    n->lib = NULL;
    return false;
}
