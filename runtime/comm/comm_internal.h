/* runtime/comm/comm_internal.h — what the parts of runtime/comm share (not installed).
 *
 *  bootstrap.c  comm_boot_*  TCP rendezvous with rank 0, the liveness watcher, shutdown
 *  fabric.c     comm_fab_*   the libfabric endpoint: posting tagged messages, progress, waits
 *               (fabric_none.c in a build without libfabric: every open fails)
 *  coll.c       dtl_comm_*   communicators and the collectives over comm_fab
 *
 * World ranks name peers everywhere below: a comm_fab's peer i is world rank i.
 */
#ifndef DTL_COMM_INTERNAL_H
#define DTL_COMM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "comm.h"

/* ---- time and waiting ----------------------------------------------------------------------- */
double comm_now(void);                 /* CLOCK_MONOTONIC seconds */
/* One step of a polling loop's back-off: spin, then yield, then sleep up to 1 ms (the machine
 * may run more ranks than cores). *idle counts empty polls; reset it to 0 on progress. */
void comm_backoff(unsigned *idle);
/* "4.0 MB" */
const char *comm_bytes(char *buf, size_t cap, size_t bytes);
/* What a collective is, for messages: "allreduce f32[200704] (802.8 kB) for gradients of fc1.w
 * @ m.dtl:9" (label NULL: no " for …"). */
const char *comm_what(char *buf, size_t cap, const char *name, dtl_dtype t, size_t count,
                      const char *label);

/* ---- bootstrap ------------------------------------------------------------------------------ */
typedef struct comm_boot comm_boot;

/* Phase 1: rank 0 accepts every other rank and checks what they sent (world size, hash,
 * signatures, provider request); the others connect and send it. On a mismatch every rank
 * fails with rank 0's message. */
comm_boot *comm_boot_hello(const dtl_comm_env *env, const dtl_comm_opts *opts, dtl_err *err);
/* Rank 0: whether ranks are on more than one host. */
bool comm_boot_multihost(const comm_boot *b);
/* The address this process's rendezvous socket uses (to pick the tcp interface that reaches
 * the others); false when there is none. */
bool comm_boot_local_addr(const comm_boot *b, struct sockaddr_storage *ss, socklen_t *len);
/* Phase 2. Rank 0 sends the exact provider it opened (prov) and whether the job spans hosts;
 * the others receive them into prov (cap bytes) and *multihost. */
bool comm_boot_provider(comm_boot *b, char *prov, size_t cap, bool *multihost, dtl_err *err);
/* Phase 3: every rank's endpoint name, gathered by rank 0 and sent to all. On success
 * names[i]/lens[i] (i < size) are rank i's, owned by b. */
bool comm_boot_names(comm_boot *b, const void *name, size_t len, const void *const **names,
                     const size_t **lens, dtl_err *err);
/* Starts the liveness watcher thread. */
bool comm_boot_watch(comm_boot *b, dtl_err *err);
/* Whether the world has failed; if so, its message into msg. One atomic load when not. */
bool comm_boot_failed(comm_boot *b, char *msg, size_t cap);
/* Records a failure met by this process (the first one wins) and, if it is the first, tells
 * every other rank (through rank 0). Safe from any thread. */
void comm_boot_report(comm_boot *b, const char *msg);
/* After comm_boot_names: how many ranks (this one included) have this rank's host name. */
int comm_boot_local_ranks(const comm_boot *b);
/* A readable name for world rank r: "rank 2 (host h, pid 123)". */
const char *comm_boot_who(const comm_boot *b, int r, char *buf, size_t cap);
void comm_boot_set_timeout(comm_boot *b, double seconds);
/* The collective this process has in flight, for the watcher's last-resort message (a thread
 * stuck inside the provider never reaches its own): doing records it by value (name must be a
 * string constant; label is copied), done forgets it if owner (an identity, never read) is still
 * the one recorded. Any thread. */
void comm_boot_doing(comm_boot *b, const void *owner, const char *name, dtl_dtype t,
                     size_t count, const char *label);
void comm_boot_done(comm_boot *b, const void *owner);
/* Orderly shutdown: stops the watcher, says goodbye and waits for everyone's. */
bool comm_boot_finish(comm_boot *b, dtl_err *err);
void comm_boot_free(comm_boot *b);

/* ---- fabric --------------------------------------------------------------------------------- */
typedef struct comm_fab comm_fab;

typedef struct comm_fab_args {
    const char *provider;    /* the exact prov_name; NULL: libfabric's choice (FI_PROVIDER) */
    const char *iface;       /* tcp: the domain (interface) to use; NULL/"": automatic */
    const struct sockaddr *prefer;  /* tcp: an address of the interface to prefer; or NULL */
    bool avoid_loopback;     /* tcp: never pick lo when prefer does not decide */
    double timeout_s;
} comm_fab_args;

comm_fab *comm_fab_open(const comm_fab_args *a, dtl_err *err);
const char *comm_fab_provider(const comm_fab *f);
const char *comm_fab_domain(const comm_fab *f);
/* The endpoint's name (fi_getname), valid until comm_fab_close. */
bool comm_fab_name(comm_fab *f, const void **name, size_t *len, dtl_err *err);
/* Inserts every rank's name (rank order) into the address vector; self is world rank `self`. */
bool comm_fab_insert(comm_fab *f, int n, int self, const void *const *names, const size_t *lens,
                     dtl_err *err);
/* The watcher a wait consults (may be NULL). */
void comm_fab_set_watch(comm_fab *f, comm_boot *b);
/* How a wait with nothing to do behaves: it polls the completion queue without pause for
 * DTL_COMM_SPIN_US microseconds (default 50 while this host runs no more ranks than it has
 * CPUs — local_ranks — and 0 when it runs more, so that oversubscribed ranks let each other
 * run), then yields the CPU between polls for 50 ms, then sleeps between polls (10 µs growing
 * to 1 ms). */
void comm_fab_set_local_ranks(comm_fab *f, int local_ranks);
/* Memory registration when the provider asks for it (FI_MR_LOCAL; DTL_FABRIC_REGISTER=1
 * forces it, for tests). *desc is NULL when not needed; *mr is released by comm_fab_mr_free. */
bool comm_fab_mr(comm_fab *f, const void *buf, size_t len, void **desc, void **mr, dtl_err *err);
void comm_fab_mr_free(comm_fab *f, void *mr);
size_t comm_fab_max_msg(const comm_fab *f);

/* Posts a tagged send or receive to/from world rank peer; *req identifies it for the wait.
 * Retries while the provider says FI_EAGAIN, reading the completion queue meanwhile. */
bool comm_fab_isend(comm_fab *f, int peer, const void *buf, size_t len, void *desc, uint64_t tag,
                    int *req, dtl_err *err);
bool comm_fab_irecv(comm_fab *f, int peer, void *buf, size_t len, void *desc, uint64_t tag,
                    int *req, dtl_err *err);
/* Waits for every req to complete (progress driven here), failing on a completion error, a
 * received size other than the posted one, the watcher's news, or timeout_s without any of
 * them completing. After a failure the fabric is broken: every later call fails at once. */
bool comm_fab_waitall(comm_fab *f, const int *reqs, int n, dtl_err *err);
void comm_fab_set_timeout(comm_fab *f, double seconds);
/* Whether the fabric broke earlier (its message into err). */
bool comm_fab_ok(comm_fab *f, dtl_err *err);
void comm_fab_close(comm_fab *f);

#endif
