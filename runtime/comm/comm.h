/* runtime/comm/comm.h — communication between ranks: identity, rendezvous, collectives.
 *
 * Contract:
 *  - Identity. dtl_comm_env_resolve reads a process's rank, world size and coordinator from an
 *    environment table (NULL-terminated "KEY=VALUE" strings, like environ), in this order of
 *    precedence: DTL_RANK/DTL_WORLD_SIZE/DTL_COORDINATOR; torchrun's RANK/WORLD_SIZE/LOCAL_RANK
 *    with MASTER_ADDR/MASTER_PORT; Open MPI's OMPI_COMM_WORLD_RANK/_SIZE/_LOCAL_RANK; PMI's
 *    PMI_RANK/PMI_SIZE; Slurm's SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID inside an srun step
 *    (SLURM_STEP_ID set). DTL_COORDINATOR=host:port overrides the coordinator of any source;
 *    without it: MASTER_ADDR:MASTER_PORT (torchrun), the first host of SLURM_STEP_NODELIST or
 *    SLURM_JOB_NODELIST (Slurm), 127.0.0.1 when the launcher says every rank is on this host
 *    (Open MPI, PMI); the port then is DTL_PORT, else one derived from the job id, else 29500.
 *    None of these set: one process (rank 0 of 1). It also reads DTL_TIMEOUT (seconds, default
 *    30), DTL_FABRIC_PROVIDER, FI_PROVIDER, DTL_FABRIC_IFACE and the job's id (DTL_JOB_ID, else
 *    TORCHELASTIC_RUN_ID, SLURM_JOB_ID.SLURM_STEP_ID, OMPI_MCA_ess_base_jobid, PMIX_NAMESPACE,
 *    PMI_JOBID). It is a pure function: it never reads the process's own environment
 *    (dtl_comm_env_from_environ does).
 *  - Rendezvous. dtl_comm_init connects the world: rank 0 listens on the coordinator's port
 *    (TCP, every interface), the others connect (retrying until DTL_TIMEOUT), and every rank
 *    sends its model hash and its ordered list of collective signatures (what it will issue per
 *    step). Rank 0 compares them: any difference — world size, hash, list, provider request,
 *    two processes claiming one rank — fails dtl_comm_init on every rank with one message
 *    naming the ranks that differ and how. A process of another job (its job id differs: two
 *    jobs on one port) is turned away with a message and does not disturb this one. Then the transport is opened (libfabric, FI_EP_RDM,
 *    tagged messages): provider `shm` when every rank is on one host (at most 256: shm's limit),
 *    `tcp;ofi_rxm` otherwise, or the one DTL_FABRIC_PROVIDER (else FI_PROVIDER) names (opening
 *    it sets FI_SHM_DISABLE_CMA=1 in the process's environment unless it is set: shm then
 *    copies through its shared buffers, faster here than cross-memory attach);
 *    endpoint names are exchanged through rank 0 and the init ends with a barrier over the
 *    transport. A world of size 1 opens nothing and needs no libfabric; its collectives are
 *    local copies.
 *  - Liveness. Each rank keeps its rendezvous socket to rank 0 open for the whole run and a
 *    thread per process watches it (it touches sockets only, never libfabric): a rank that
 *    dies (its socket closes, or TCP keepalive gives up) or fails an operation is announced by
 *    rank 0 to every other rank, and every operation in progress or started later fails with a
 *    message naming that rank. The first failure wins; the world is then unusable: every later
 *    operation fails at once with the same message, and the only calls left are
 *    dtl_comm_free (and dtl_comm_abort). After a failed operation its buffers may still be
 *    written by the transport until dtl_comm_free of the world returns. The one exception to
 *    "nothing here prints or exits": when the watcher learns of a failure and the world is
 *    not freed within 5 s (a thread stuck inside the provider — libfabric's shm can spin for
 *    ever on a lock a killed peer held), it writes the failure to stderr (stuck_prefix of
 *    dtl_comm_opts, then "rank r: …"), removes this process's shm regions and ends the
 *    process with _exit(stuck_status).
 *  - Deadlines. Every blocking wait (rendezvous, each step of a collective, shutdown) fails
 *    after DTL_TIMEOUT seconds without progress, naming the rank it was waiting for.
 *  - Collectives are blocking and are called by every rank of the communicator in the same
 *    order with the same count, dtype, op and root (the signature check at init is the way to
 *    catch a program that does not). Messages of one collective carry tags unique to
 *    (communicator, collective number, step), so a message can never match another
 *    collective's receive; a message of the wrong size is an error naming the sender.
 *    Reductions (f32, f64; sum, mean, max) give bitwise identical results on every rank (NaN
 *    payloads aside); max propagates NaN and prefers +0 over -0; mean is the sum divided by the
 *    communicator's size. The order of additions depends on the world size and the algorithm,
 *    so results equal a serial sum exactly only when no rounding happens (integer-valued data).
 *    count 0 is allowed. Broadcast, all-gather, send and recv move bytes of any dtype.
 *  - A label (the .dtl line a collective serves, e.g. "mnist.dtl:12"; may be NULL) only makes
 *    error messages better: "rank 1: allreduce f32[1000] (4.0 kB) for mnist.dtl:12: rank 2
 *    (host h, pid 123) died: its connection to rank 0 closed". (A transport error on a message
 *    from a peer waits up to 2 s for the liveness channel's news, which says "died".)
 *  - Threads. A world and all its sub-communicators are used by one thread at a time
 *    (libfabric's FI_THREAD_DOMAIN). The watcher thread is internal.
 *  - Sub-communicators (dtl_comm_split) share the world's transport and liveness. Freeing the
 *    world closes both: its sub-communicators must still be freed, and until then every
 *    operation on them fails (DTL_ERR_USAGE).
 *  - Shutdown. dtl_comm_finalize is collective over the world: every rank says goodbye to rank
 *    0 and waits for all to have done so, so no rank closes its transport while a peer may
 *    still need a message from it. dtl_comm_free of a world that was neither finalized nor
 *    failed tells the others it left (they fail with that message); dtl_comm_abort does the
 *    same with a reason.
 * Errors: functions return false/NULL with err set (runtime/err.h); DTL_ERR_USAGE for a bad
 * argument, DTL_ERR_MISMATCH for ranks that disagree, DTL_ERR_IO for transport, peer and
 * timeout failures. Nothing here prints or exits.
 */
#ifndef DTL_COMM_H
#define DTL_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../dtype.h"
#include "../err.h"

#define DTL_COMM_MAX_WORLD 65536
#define DTL_COMM_DEFAULT_PORT 29500
#define DTL_COMM_DEFAULT_TIMEOUT 30.0

/* Where a process stands in its job, as the environment says. */
typedef struct dtl_comm_env {
    int rank;              /* 0 <= rank < size */
    int size;              /* >= 1 */
    int local_rank;        /* rank among the ranks of this host; -1 when unknown */
    char host[256];        /* the coordinator (rank 0's host); "" when size == 1 */
    int port;              /* its port; 0 when size == 1 */
    const char *source;    /* "DTL", "torchrun", "Open MPI", "PMI", "Slurm" or "none" */
    double timeout_s;      /* DTL_TIMEOUT, default 30 */
    char provider[64];     /* DTL_FABRIC_PROVIDER or FI_PROVIDER; "" = automatic */
    bool provider_is_fi;   /* provider came from FI_PROVIDER (libfabric filters by it itself) */
    char iface[64];        /* DTL_FABRIC_IFACE: the network interface for tcp; "" = automatic */
    char job[96];          /* the job's id (DTL_JOB_ID, else the launcher's); "" when unknown */
} dtl_comm_env;

/* Resolves envp (see the contract); false with err set (DTL_ERR_USAGE) on a malformed or
 * incomplete setting, naming the variable. */
bool dtl_comm_env_resolve(const char *const *envp, dtl_comm_env *out, dtl_err *err);
/* The same over this process's environment. */
bool dtl_comm_env_from_environ(dtl_comm_env *out, dtl_err *err);
/* The first host of a Slurm node list in its compressed form ("node[01-04,7],other" gives
 * "node01"); false with err set when the list is malformed or the host does not fit. */
bool dtl_comm_nodelist_first(const char *list, char *out, size_t cap, dtl_err *err);
/* "host:port", "[v6addr]:port"; false with err set (naming `what`) when malformed. */
bool dtl_comm_parse_hostport(const char *s, const char *what, char *host, size_t cap,
                             int *port, dtl_err *err);

typedef struct dtl_comm dtl_comm;

typedef enum dtl_comm_op {
    DTL_COMM_SUM,
    DTL_COMM_MEAN,
    DTL_COMM_MAX,
} dtl_comm_op;

typedef enum dtl_comm_algo {
    DTL_COMM_ALGO_AUTO,   /* recursive doubling up to DTL_COMM_SMALL_BYTES, ring above */
    DTL_COMM_ALGO_RING,   /* ring reduce-scatter + all-gather: bandwidth-optimal */
    DTL_COMM_ALGO_RD,     /* recursive doubling (any size: the extra ranks fold in) */
} dtl_comm_algo;
#define DTL_COMM_SMALL_BYTES 65536

/* What every rank must agree on at start. */
typedef struct dtl_comm_opts {
    uint64_t model_hash;
    const char *const *sigs;   /* the collectives of one step, in order (dtl_comm_sig) */
    size_t nsigs;
    /* The watcher's last resort (see Failures) writes stuck_prefix, then the failure as the
     * program's own error path would ("rank r: allreduce …: rank 1 … died: …"), and exits
     * with stuck_status; so the user sees one form however a rank ended. NULL: "error: ";
     * 0: status 1. This process only: not compared between ranks. */
    const char *stuck_prefix;
    int stuck_status;
} dtl_comm_opts;

/* Formats one collective signature: "allreduce f32[1000] mean @ mnist.dtl:12" (label NULL:
 * no "@ …"; op is ignored for collectives that do not reduce). Returns buf. */
char *dtl_comm_sig(char *buf, size_t cap, const char *coll, size_t count, dtl_dtype t,
                   dtl_comm_op op, const char *label);

/* Joins the world env describes (opts NULL: hash 0, no signatures). */
dtl_comm *dtl_comm_init(const dtl_comm_env *env, const dtl_comm_opts *opts, dtl_err *err);
/* Orderly shutdown of the world (collective; see the contract). The world is still freed
 * with dtl_comm_free. Calling it on a sub-communicator is a usage error. */
bool dtl_comm_finalize(dtl_comm *c, dtl_err *err);
/* Frees a communicator (a world: closes the transport and the sockets). NULL is fine. Call it
 * (or dtl_comm_abort) before the process exits, on error paths too: libfabric's shm provider
 * leaves its 16 MB region in /dev/shm when a process exits with its endpoint open. */
void dtl_comm_free(dtl_comm *c);
/* Tells every rank that this one gives up (reason, e.g. the error it met), then frees the
 * world c belongs to (c must be the world). */
void dtl_comm_abort(dtl_comm *c, const char *reason);

int dtl_comm_rank(const dtl_comm *c);
int dtl_comm_size(const dtl_comm *c);
/* The world rank of rank r of c. */
int dtl_comm_world_rank(const dtl_comm *c, int r);
/* The libfabric provider in use ("shm", "tcp;ofi_rxm", …), or "none" for a world of 1. */
const char *dtl_comm_provider(const dtl_comm *c);
/* Its domain: the network interface for tcp ("eth0", "lo"), "shm" for shm; "none" for 1. */
const char *dtl_comm_domain(const dtl_comm *c);
/* Changes DTL_TIMEOUT for c's world from now on (seconds > 0): e.g. a long one for the first
 * step, which may wait for ranks still compiling, then a shorter one. */
void dtl_comm_set_timeout(dtl_comm *c, double seconds);
/* false with err set when the world has failed (a peer died, an operation failed). Costs an
 * atomic load: a training loop may call it between steps. */
bool dtl_comm_check(const dtl_comm *c, dtl_err *err);

/* In place: buf (count elements of t, f32 or f64) becomes the reduction over all ranks. */
bool dtl_comm_allreduce(dtl_comm *c, void *buf, size_t count, dtl_dtype t, dtl_comm_op op,
                        const char *label, dtl_err *err);
bool dtl_comm_allreduce_algo(dtl_comm *c, void *buf, size_t count, dtl_dtype t,
                             dtl_comm_op op, dtl_comm_algo algo, const char *label,
                             dtl_err *err);
/* buf (count elements) of rank root is copied into buf on every rank. */
bool dtl_comm_broadcast(dtl_comm *c, void *buf, size_t count, dtl_dtype t, int root,
                        const char *label, dtl_err *err);
/* recv (size * count elements) gets rank i's send (count elements) at block i. send may be
 * recv's own block; otherwise they must not overlap. */
bool dtl_comm_allgather(dtl_comm *c, const void *send, void *recv, size_t count, dtl_dtype t,
                        const char *label, dtl_err *err);
/* recv (count elements) gets block `rank` of the reduction of every rank's send (size *
 * count elements). send and recv must not overlap. */
bool dtl_comm_reduce_scatter(dtl_comm *c, const void *send, void *recv, size_t count,
                             dtl_dtype t, dtl_comm_op op, const char *label, dtl_err *err);
bool dtl_comm_barrier(dtl_comm *c, const char *label, dtl_err *err);
/* Point to point, blocking; the k-th send from a to b matches the k-th recv on b from a
 * (per communicator). Sizes must agree. peer == own rank is a usage error. */
bool dtl_comm_send(dtl_comm *c, const void *buf, size_t count, dtl_dtype t, int peer,
                   const char *label, dtl_err *err);
bool dtl_comm_recv(dtl_comm *c, void *buf, size_t count, dtl_dtype t, int peer,
                   const char *label, dtl_err *err);
/* Collective over c: the ranks passing the same color >= 0 form a new communicator, ordered
 * by key then by rank in c; *out is NULL for color < 0. */
bool dtl_comm_split(dtl_comm *c, int color, int key, dtl_comm **out, dtl_err *err);

#endif
