/* runtime/comm/fabric_none.c — the transport in a build without libfabric: opening it fails
 * with a message that says so; nothing else can be reached (there is never a comm_fab). A
 * world of one process needs no transport and works as in any build. */
#include "comm_internal.h"

#include <stdlib.h>

comm_fab *comm_fab_open(const comm_fab_args *a, dtl_err *err)
{
    (void)a;
    dtl_err_set(err, DTL_ERR_USAGE,
                "this dtl was built without libfabric: more than one rank needs it (Debian: "
                "apt-get install libfabric-dev, then configure again)");
    return NULL;
}

/* Unreachable without a comm_fab; they exist so that the rest of runtime/comm links. */
const char *comm_fab_provider(const comm_fab *f) { (void)f; return "none"; }
const char *comm_fab_domain(const comm_fab *f) { (void)f; return "none"; }
size_t comm_fab_max_msg(const comm_fab *f) { (void)f; return 0; }
void comm_fab_set_watch(comm_fab *f, comm_boot *b) { (void)f; (void)b; }
void comm_fab_set_local_ranks(comm_fab *f, int local_ranks) { (void)f; (void)local_ranks; }
void comm_fab_set_timeout(comm_fab *f, double seconds) { (void)f; (void)seconds; }
void comm_fab_mr_free(comm_fab *f, void *mr) { (void)f; (void)mr; }
void comm_fab_close(comm_fab *f) { (void)f; }

bool comm_fab_name(comm_fab *f, const void **name, size_t *len, dtl_err *err)
{
    (void)f, (void)name, (void)len;
    return dtl_err_set(err, DTL_ERR_INTERNAL, "no libfabric");
}

bool comm_fab_insert(comm_fab *f, int n, int self, const void *const *names, const size_t *lens,
                     dtl_err *err)
{
    (void)f, (void)n, (void)self, (void)names, (void)lens;
    return dtl_err_set(err, DTL_ERR_INTERNAL, "no libfabric");
}

bool comm_fab_mr(comm_fab *f, const void *buf, size_t len, void **desc, void **mr, dtl_err *err)
{
    (void)f, (void)buf, (void)len, (void)err;
    *desc = *mr = NULL;
    return true;
}

bool comm_fab_isend(comm_fab *f, int peer, const void *buf, size_t len, void *desc, uint64_t tag,
                    int *req, dtl_err *err)
{
    (void)f, (void)peer, (void)buf, (void)len, (void)desc, (void)tag, (void)req;
    return dtl_err_set(err, DTL_ERR_INTERNAL, "no libfabric");
}

bool comm_fab_irecv(comm_fab *f, int peer, void *buf, size_t len, void *desc, uint64_t tag,
                    int *req, dtl_err *err)
{
    (void)f, (void)peer, (void)buf, (void)len, (void)desc, (void)tag, (void)req;
    return dtl_err_set(err, DTL_ERR_INTERNAL, "no libfabric");
}

bool comm_fab_waitall(comm_fab *f, const int *reqs, int n, dtl_err *err)
{
    (void)f, (void)reqs, (void)n;
    return dtl_err_set(err, DTL_ERR_INTERNAL, "no libfabric");
}

bool comm_fab_ok(comm_fab *f, dtl_err *err)
{
    (void)f, (void)err;
    return true;
}
