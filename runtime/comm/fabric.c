/* runtime/comm/fabric.c — the transport: one libfabric reliable-datagram endpoint per process.
 *
 * Design. fi_getinfo is asked for FI_EP_RDM with tagged messages and directed receives
 * (FI_TAGGED | FI_MSG | FI_DIRECTED_RECV), manual progress, FI_THREAD_DOMAIN, and told what we
 * can cope with: the FI_CONTEXT/FI_CONTEXT2 modes (every operation carries a struct
 * fi_context2 as the first member of its record) and the memory-registration modes FI_MR_LOCAL,
 * FI_MR_ENDPOINT, FI_MR_PROV_KEY, FI_MR_ALLOCATED, FI_MR_VIRT_ADDR (we only ever register
 * buffers for local access, and only when the provider asks). No FI_HMEM: host memory only.
 * fi_getinfo lists one entry per interface (lo, eth0, IPv6 …) and duplicates: the tcp entry is
 * chosen explicitly — the interface named by DTL_FABRIC_IFACE, else the one whose address the
 * rendezvous socket uses (it reaches the other ranks by construction), else the first that is
 * not loopback when ranks span hosts.
 *
 * Operations live in records owned by the fabric (never on a caller's stack), because after a
 * failed wait a posted receive may still complete: the record then stays allocated until
 * comm_fab_close, which closes the endpoint first. Progress is manual: every wait reads the
 * completion queue, which is what moves data (rendezvous of large messages, tcp connection
 * set-up). Posting retries on -FI_EAGAIN (tcp;ofi_rxm returns it until a connection is up)
 * while reading the queue. A wake-up may bring no completion; only the records say what is
 * done. libfabric's shm provider moves a message above 4 KiB either by cross-memory attach
 * (process_vm_readv: one copy, by the receiver, through the kernel, which pins every page) or by
 * segments through its shared buffers (two memcpys, by both sides at once, in the cache): here the
 * second took about half the first's time from 64 KiB to 1 MiB and 70 % at 16 MiB (2 and 4 ranks),
 * close to Open MPI's vader, so comm_fab_open sets FI_SHM_DISABLE_CMA=1 unless the environment
 * already says (FI_SHM_DISABLE_CMA=0 brings cross-memory attach back); it also spares containers
 * the ptrace permission that process_vm_readv needs. A wait with nothing to do spins on the queue
 * (a peer's message usually comes within microseconds, and a sleep would add a timer and a wake-up
 * to every step) for 50 µs while the host has a CPU per rank, not at all when ranks oversubscribe
 * it (the rank that would send is likely waiting for this one's CPU: spinning even 20 µs made 4
 * ranks on 2 cores several times slower than yielding at once). Then it yields between polls — on
 * an idle CPU a yield returns at once, so this is still a spin there, but it gives way to a busy
 * one (a compute thread, dtl_ddp's own) — for 50 ms, then sleeps in growing steps (see
 * comm_fab_set_local_ranks). Every libfabric error is reported with fi_strerror (and the
 * provider's own words from fi_cq_strerror), the operation and the peer.
 */
#include "comm_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { OP_FREE, OP_PENDING, OP_DONE, OP_FAILED };

typedef struct fab_op {
    struct fi_context2 ctx;   /* first: the provider's scratch space (FI_CONTEXT, FI_CONTEXT2) */
    int state;
    bool send;
    int peer;
    size_t len;               /* bytes posted */
    size_t got;               /* bytes received */
    int fi_err;               /* positive FI_* errno of a failed completion */
    char detail[160];         /* the provider's explanation */
} fab_op;

struct comm_fab {
    struct fi_info *info;
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_av *av;
    struct fid_cq *cq;
    struct fid_ep *ep;
    fi_addr_t *addrs;
    int naddrs;
    bool need_mr, mr_endpoint, prov_key;
    uint64_t next_key;
    void *name;
    size_t namelen;
    double timeout_s;
    double spin_s;            /* see comm_fab_set_local_ranks */
    comm_boot *watch;
    fab_op **ops;             /* records, by request id */
    int nops, capops;
    int *free_ids;
    int nfree;
    bool broken;
    char why[400];            /* why it broke */
    char dummy;               /* a valid address for zero-length messages */
};

/* ---- errors ------------------------------------------------------------------------------ */

static const char *who(const comm_fab *f, int peer, char *buf, size_t cap)
{
    if (f->watch)
        return comm_boot_who(f->watch, peer, buf, cap);
    snprintf(buf, cap, "rank %d", peer);
    return buf;
}

/* Marks the fabric broken (the first reason stays) and sets err. */
static bool fab_break(comm_fab *f, dtl_err *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool fab_break(comm_fab *f, dtl_err *err, const char *fmt, ...)
{
    if (!f->broken) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->why, sizeof f->why, fmt, ap);
        va_end(ap);
        f->broken = true;
    }
    return dtl_err_set(err, DTL_ERR_IO, "%s", f->why);
}

bool comm_fab_ok(comm_fab *f, dtl_err *err)
{
    if (f->broken)
        return dtl_err_set(err, DTL_ERR_IO, "%s", f->why);
    return true;
}

/* ---- opening ----------------------------------------------------------------------------- */

static bool same_ip(const struct sockaddr *a, const void *b, size_t blen)
{
    if (!b)
        return false;
    const struct sockaddr *sb = b;
    if (a->sa_family != sb->sa_family)
        return false;
    if (a->sa_family == AF_INET && blen >= sizeof(struct sockaddr_in))
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->sa_family == AF_INET6 && blen >= sizeof(struct sockaddr_in6))
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
    return false;
}

static bool is_loopback(const struct fi_info *i)
{
    if (i->domain_attr && i->domain_attr->name && strcmp(i->domain_attr->name, "lo") == 0)
        return true;
    const struct sockaddr *s = i->src_addr;
    if (!s)
        return false;
    if (s->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)s)->sin_addr.s_addr) >> 24) == 127;
    if (s->sa_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)s)->sin6_addr, &in6addr_loopback, 16) == 0;
    return false;
}

/* The entry to use among fi_getinfo's list (see the design paragraph). */
static struct fi_info *choose(struct fi_info *list, const comm_fab_args *a)
{
    bool ipish = false;
    for (struct fi_info *i = list; i; i = i->next)
        if (i->addr_format == FI_SOCKADDR_IN || i->addr_format == FI_SOCKADDR_IN6)
            ipish = true;
    if (!ipish)
        return list;
    if (a->iface && *a->iface) {
        for (struct fi_info *i = list; i; i = i->next)
            if (i->domain_attr->name && strcmp(i->domain_attr->name, a->iface) == 0 &&
                (i->addr_format == FI_SOCKADDR_IN || !a->prefer ||
                 a->prefer->sa_family == AF_INET6))
                return i;
        return NULL;
    }
    if (a->prefer)
        for (struct fi_info *i = list; i; i = i->next)
            if (same_ip(a->prefer, i->src_addr, i->src_addrlen) &&
                !(a->avoid_loopback && is_loopback(i)))
                return i;
    for (struct fi_info *i = list; i; i = i->next)
        if (i->addr_format == FI_SOCKADDR_IN && !(a->avoid_loopback && is_loopback(i)))
            return i;
    for (struct fi_info *i = list; i; i = i->next)
        if (!(a->avoid_loopback && is_loopback(i)))
            return i;
    return NULL;
}

comm_fab *comm_fab_open(const comm_fab_args *a, dtl_err *err)
{
    comm_fab *f = calloc(1, sizeof *f);
    struct fi_info *hints = fi_allocinfo(), *list = NULL;
    if (!f || !hints) {
        free(f);
        fi_freeinfo(hints);
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory opening the fabric");
        return NULL;
    }
    f->timeout_s = a->timeout_s;
    f->spin_s = 0;
    f->next_key = 1;
    hints->caps = FI_TAGGED | FI_MSG | FI_DIRECTED_RECV;
    hints->ep_attr->type = FI_EP_RDM;
    hints->mode = FI_CONTEXT | FI_CONTEXT2;
    hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_ENDPOINT | FI_MR_PROV_KEY |
                                  FI_MR_ALLOCATED | FI_MR_VIRT_ADDR;
    hints->domain_attr->threading = FI_THREAD_DOMAIN;
    hints->domain_attr->data_progress = FI_PROGRESS_MANUAL;
    hints->domain_attr->control_progress = FI_PROGRESS_MANUAL;
    if (a->provider && *a->provider) {
        hints->fabric_attr->prov_name = strdup(a->provider);
        if (!hints->fabric_attr->prov_name) {
            dtl_err_set(err, DTL_ERR_NOMEM, "out of memory opening the fabric");
            goto fail;
        }
    }
    /* shm: copy through its shared buffers, not cross-memory attach (see the design
     * paragraph), unless the user said otherwise. Before the first fi_getinfo, which is when
     * the providers read their variables; no thread of runtime/comm runs yet. */
    setenv("FI_SHM_DISABLE_CMA", "1", 0);
    const char *pname = a->provider && *a->provider ? a->provider : "(FI_PROVIDER's choice)";
    int rc = fi_getinfo(FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION), NULL, NULL, 0, hints,
                        &list);
    if (rc) {
        const char *fp = getenv("FI_PROVIDER");
        dtl_err_set(err, DTL_ERR_IO,
                    "fi_getinfo: no libfabric provider '%s' with reliable datagrams and tagged "
                    "messages: %s%s%s%s",
                    pname, fi_strerror(-rc), fp ? " (FI_PROVIDER=" : "", fp ? fp : "",
                    fp ? " restricts the choice)" : "");
        goto fail;
    }
    struct fi_info *pick = choose(list, a);
    if (!pick) {
        dtl_err_set(err, DTL_ERR_IO, "provider '%s' offers no interface %s%s", pname,
                    a->iface && *a->iface ? "named " : "that is not loopback",
                    a->iface && *a->iface ? a->iface : " (ranks span hosts)");
        goto fail;
    }
    f->info = fi_dupinfo(pick);
    fi_freeinfo(list);
    list = NULL;
    if (!f->info) {
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory opening the fabric");
        goto fail;
    }
    const char *prov = f->info->fabric_attr->prov_name;
    int mrm = f->info->domain_attr->mr_mode;
    f->need_mr = (mrm & FI_MR_LOCAL) != 0;
    const char *force = getenv("DTL_FABRIC_REGISTER");
    if (force && strcmp(force, "1") == 0)
        f->need_mr = true;
    f->mr_endpoint = (mrm & FI_MR_ENDPOINT) != 0;
    f->prov_key = (mrm & FI_MR_PROV_KEY) != 0;

#define FAB_TRY(call, what)                                                                   \
    do {                                                                                      \
        int rc_ = (call);                                                                     \
        if (rc_) {                                                                            \
            dtl_err_set(err, DTL_ERR_IO, "%s (provider %s, domain %s): %s", what, prov,        \
                        f->info->domain_attr->name, fi_strerror(-rc_));                        \
            goto fail;                                                                        \
        }                                                                                     \
    } while (0)
    FAB_TRY(fi_fabric(f->info->fabric_attr, &f->fabric, NULL), "fi_fabric");
    FAB_TRY(fi_domain(f->fabric, f->info, &f->domain, NULL), "fi_domain");
    struct fi_cq_attr cqa = {0};
    cqa.format = FI_CQ_FORMAT_TAGGED;
    cqa.wait_obj = FI_WAIT_NONE;
    cqa.size = 4096;   /* more than a batch of posted operations (coll.c) */
    FAB_TRY(fi_cq_open(f->domain, &cqa, &f->cq, NULL), "fi_cq_open");
    struct fi_av_attr ava = {0};
    ava.type = FI_AV_TABLE;
    FAB_TRY(fi_av_open(f->domain, &ava, &f->av, NULL), "fi_av_open");
    FAB_TRY(fi_endpoint(f->domain, f->info, &f->ep, NULL), "fi_endpoint");
    FAB_TRY(fi_ep_bind(f->ep, &f->av->fid, 0), "fi_ep_bind (address vector)");
    FAB_TRY(fi_ep_bind(f->ep, &f->cq->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind (completion queue)");
    FAB_TRY(fi_enable(f->ep), "fi_enable");
    size_t len = 64;
    for (int tries = 0;; tries++) {
        void *nb = realloc(f->name, len + 1);
        if (!nb) {
            dtl_err_set(err, DTL_ERR_NOMEM, "out of memory opening the fabric");
            goto fail;
        }
        f->name = nb;
        size_t want = len;
        rc = fi_getname(&f->ep->fid, f->name, &want);
        if (rc == -FI_ETOOSMALL && tries < 4 && want > len) {
            len = want;
            continue;
        }
        FAB_TRY(rc, "fi_getname");
        f->namelen = want;
        ((char *)f->name)[want] = 0;
        break;
    }
#undef FAB_TRY
    fi_freeinfo(hints);
    return f;
fail:
    fi_freeinfo(list);
    fi_freeinfo(hints);
    comm_fab_close(f);
    return NULL;
}

const char *comm_fab_provider(const comm_fab *f)
{
    return f->info->fabric_attr->prov_name;
}

const char *comm_fab_domain(const comm_fab *f)
{
    return f->info->domain_attr->name ? f->info->domain_attr->name : "?";
}

size_t comm_fab_max_msg(const comm_fab *f)
{
    size_t m = f->info->ep_attr->max_msg_size;
    return m ? m : ((size_t)1 << 30);
}

bool comm_fab_name(comm_fab *f, const void **name, size_t *len, dtl_err *err)
{
    (void)err;
    *name = f->name;
    *len = f->namelen;
    return true;
}

bool comm_fab_insert(comm_fab *f, int n, int self, const void *const *names, const size_t *lens,
                     dtl_err *err)
{
    (void)self;
    (void)lens;
    f->addrs = malloc((size_t)n * sizeof *f->addrs);
    if (!f->addrs)
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for %d addresses", n);
    f->naddrs = n;
    /* One at a time: string-format names (shm) have no fixed stride. */
    for (int i = 0; i < n; i++) {
        int rc = fi_av_insert(f->av, names[i], 1, &f->addrs[i], 0, NULL);
        if (rc != 1)
            return dtl_err_set(err, DTL_ERR_IO,
                               "fi_av_insert of rank %d's address (provider %s): %s", i,
                               comm_fab_provider(f), rc < 0 ? fi_strerror(-rc) : "not inserted");
    }
    return true;
}

void comm_fab_set_timeout(comm_fab *f, double seconds)
{
    f->timeout_s = seconds;
}

void comm_fab_set_watch(comm_fab *f, comm_boot *b)
{
    f->watch = b;
}

void comm_fab_set_local_ranks(comm_fab *f, int local_ranks)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    f->spin_s = local_ranks > (cpus > 0 ? cpus : 1) ? 0 : 50e-6;
    const char *e = getenv("DTL_COMM_SPIN_US");
    if (e && *e) {
        char *end;
        double us = strtod(e, &end);
        if (*end == 0 && us >= 0 && us <= 1e7)
            f->spin_s = us * 1e-6;
    }
}

/* How long a wait yields the CPU between polls, after spinning, before it sleeps between
 * them: a yielding rank still sees its message at its next turn on the CPU, a sleeping one a
 * timer and a wake-up later (which on a loaded machine can be milliseconds per step). */
#define FAB_YIELD_S 0.05

/* The state of a wait's empty polls since its last progress (reset to {0} on progress). */
typedef struct fab_wait {
    unsigned polls;
    double since;             /* when the empty polls began */
    bool spun;                /* past the spin phase */
} fab_wait;

/* One empty poll of a wait (see comm_fab_set_local_ranks). While spinning, the clock is read
 * every 16th poll only (a clock read costs about as much as an empty poll); with no spin time,
 * the first empty poll yields. */
static void fab_backoff(const comm_fab *f, fab_wait *w)
{
    unsigned i = w->polls++;
    if (!w->spun && f->spin_s <= 0) {
        w->since = comm_now();
        w->spun = true;
    }
    if (!w->spun) {
        if (i < 16 || (i & 15) != 0)
            return;
        double t = comm_now();
        if (i == 16) {
            w->since = t;
            return;
        }
        if (t - w->since < f->spin_s)
            return;
        w->spun = true;
    }
    double waited = comm_now() - w->since - f->spin_s;
    if (waited < FAB_YIELD_S) {
        sched_yield();
        return;
    }
    double us = 10 + (waited - FAB_YIELD_S) * 1e6 / 16;
    struct timespec ts = {0, (long)(us > 1000 ? 1000 : us) * 1000};
    nanosleep(&ts, NULL);
}

/* ---- memory registration ------------------------------------------------------------------ */

bool comm_fab_mr(comm_fab *f, const void *buf, size_t len, void **desc, void **mr, dtl_err *err)
{
    *desc = NULL;
    *mr = NULL;
    if (!f->need_mr || len == 0)
        return true;
    struct fid_mr *m = NULL;
    uint64_t key = f->prov_key ? 0 : f->next_key++;
    int rc = fi_mr_reg(f->domain, buf, len, FI_SEND | FI_RECV, 0, key, 0, &m, NULL);
    if (rc == 0 && f->mr_endpoint) {
        rc = fi_mr_bind(m, &f->ep->fid, 0);
        if (rc == 0)
            rc = fi_mr_enable(m);
    }
    if (rc) {
        if (m)
            fi_close(&m->fid);
        char b[32];
        return dtl_err_set(err, DTL_ERR_IO, "fi_mr_reg of %s (provider %s): %s",
                           comm_bytes(b, sizeof b, len), comm_fab_provider(f), fi_strerror(-rc));
    }
    *desc = fi_mr_desc(m);
    *mr = m;
    return true;
}

void comm_fab_mr_free(comm_fab *f, void *mr)
{
    (void)f;
    if (mr)
        fi_close(&((struct fid_mr *)mr)->fid);
}

/* ---- operations and progress -------------------------------------------------------------- */

static fab_op *op_new(comm_fab *f, int *id)
{
    if (f->nfree == 0) {
        if (f->nops == f->capops) {
            int cap = f->capops ? 2 * f->capops : 16;
            fab_op **o = realloc(f->ops, (size_t)cap * sizeof *o);
            if (!o)
                return NULL;
            f->ops = o;
            int *fr = realloc(f->free_ids, (size_t)cap * sizeof *fr);
            if (!fr)
                return NULL;
            f->free_ids = fr;
            f->capops = cap;
        }
        fab_op *op = calloc(1, sizeof *op);
        if (!op)
            return NULL;
        f->ops[f->nops] = op;
        f->free_ids[f->nfree++] = f->nops++;
    }
    *id = f->free_ids[--f->nfree];
    fab_op *op = f->ops[*id];
    memset(op, 0, sizeof *op);
    return op;
}

static void op_release(comm_fab *f, int id)
{
    f->ops[id]->state = OP_FREE;
    f->free_ids[f->nfree++] = id;
}

/* Reads the completion queue once: the number of completions (>= 0), or -1 when the queue
 * itself failed (the fabric is then broken). */
static int fab_poll(comm_fab *f, dtl_err *err)
{
    struct fi_cq_tagged_entry e[16];
    ssize_t n = fi_cq_read(f->cq, e, 16);
    if (n > 0) {
        for (ssize_t i = 0; i < n; i++) {
            fab_op *op = e[i].op_context;
            if (!op)
                continue;
            op->got = e[i].len;
            op->state = OP_DONE;
        }
        return (int)n;
    }
    if (n == -FI_EAGAIN)
        return 0;
    if (n == -FI_EAVAIL) {
        struct fi_cq_err_entry ee;
        memset(&ee, 0, sizeof ee);
        ssize_t m = fi_cq_readerr(f->cq, &ee, 0);
        if (m == -FI_EAGAIN)
            return 0;
        if (m < 0) {
            fab_break(f, err, "fi_cq_readerr (provider %s): %s", comm_fab_provider(f),
                      fi_strerror((int)-m));
            return -1;
        }
        fab_op *op = ee.op_context;
        char pe[128] = "";
        if (ee.prov_errno) {
            const char *s = fi_cq_strerror(f->cq, ee.prov_errno, ee.err_data, pe, sizeof pe);
            if (s && s != pe)
                snprintf(pe, sizeof pe, "%s", s);
            if (strcmp(pe, fi_strerror(ee.err < 0 ? -ee.err : ee.err)) == 0)
                pe[0] = 0;   /* says nothing more */
        }
        if (!op) {
            fab_break(f, err, "completion error without an operation (provider %s): %s%s%s",
                      comm_fab_provider(f), fi_strerror(ee.err), *pe ? ": " : "", pe);
            return -1;
        }
        op->fi_err = ee.err < 0 ? -ee.err : ee.err ? ee.err : FI_EOTHER;
        snprintf(op->detail, sizeof op->detail, "%s", pe);
        op->state = OP_FAILED;
        return 1;
    }
    fab_break(f, err, "fi_cq_read (provider %s): %s", comm_fab_provider(f), fi_strerror((int)-n));
    return -1;
}

/* The watcher's news, as a failure of this fabric. */
static bool fab_watch_failed(comm_fab *f, dtl_err *err)
{
    char m[400];
    if (f->watch && comm_boot_failed(f->watch, m, sizeof m)) {
        fab_break(f, err, "%s", m);
        return true;
    }
    return false;
}

static bool fab_post(comm_fab *f, bool send, int peer, void *buf, size_t len, void *desc,
                     uint64_t tag, int *req, dtl_err *err)
{
    if (f->broken)
        return comm_fab_ok(f, err);
    if (peer < 0 || peer >= f->naddrs)
        return dtl_err_set(err, DTL_ERR_INTERNAL, "comm: peer %d out of range", peer);
    fab_op *op = op_new(f, req);
    if (!op)
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for a fabric operation");
    op->state = OP_PENDING;
    op->send = send;
    op->peer = peer;
    op->len = len;
    if (!buf)
        buf = &f->dummy;
    double deadline = comm_now() + f->timeout_s;
    fab_wait idle = {0};
    for (;;) {
        ssize_t rc = send ? fi_tsend(f->ep, buf, len, desc, f->addrs[peer], tag, &op->ctx)
                          : fi_trecv(f->ep, buf, len, desc, f->addrs[peer], tag, 0, &op->ctx);
        if (rc == 0)
            return true;
        char w[96];
        if (rc != -FI_EAGAIN) {
            op_release(f, *req);
            return fab_break(f, err, "%s %s %s: %s", send ? "fi_tsend to" : "fi_trecv from",
                             who(f, peer, w, sizeof w), comm_fab_provider(f),
                             fi_strerror((int)-rc));
        }
        /* Not yet (a connection being set up, a full queue): make progress, then retry. */
        int got = fab_poll(f, err);
        if (got < 0 || fab_watch_failed(f, err)) {
            op_release(f, *req);
            return false;
        }
        if (got > 0) {
            idle = (fab_wait){0};
            continue;
        }
        fab_backoff(f, &idle);
        if ((idle.polls & 63) == 0 && comm_now() > deadline) {
            op_release(f, *req);
            return fab_break(f, err, "%s %s: the provider refused for %g s (FI_EAGAIN)",
                             send ? "sending to" : "receiving from", who(f, peer, w, sizeof w),
                             f->timeout_s);
        }
    }
}

bool comm_fab_isend(comm_fab *f, int peer, const void *buf, size_t len, void *desc, uint64_t tag,
                    int *req, dtl_err *err)
{
    return fab_post(f, true, peer, (void *)buf, len, desc, tag, req, err);
}

bool comm_fab_irecv(comm_fab *f, int peer, void *buf, size_t len, void *desc, uint64_t tag,
                    int *req, dtl_err *err)
{
    return fab_post(f, false, peer, buf, len, desc, tag, req, err);
}

/* A completed or failed op: false with the fabric broken when it failed or has a wrong size.
 * A transfer that failed (a connection reset, a peer gone) most often means the peer died:
 * the liveness channel then says so within moments, and its news, which names the rank and
 * how it ended, is the better message — so wait a little for it. */
static bool op_check(comm_fab *f, fab_op *op, dtl_err *err)
{
    char w[96];
    if (op->state == OP_FAILED) {
        if (op->fi_err == FI_ETRUNC)
            return fab_break(f, err,
                             "%s sent more than the %zu bytes expected: the ranks disagree "
                             "about this operation (its count, dtype or order)",
                             who(f, op->peer, w, sizeof w), op->len);
        char m[400];
        double until = comm_now() + (f->timeout_s < 2 ? f->timeout_s : 2);
        while (f->watch && !comm_boot_failed(f->watch, m, sizeof m) && comm_now() < until) {
            struct timespec t = {0, 2000000};
            nanosleep(&t, NULL);
        }
        if (f->watch && comm_boot_failed(f->watch, m, sizeof m))
            return fab_break(f, err, "%s (then %s %s failed: %s)", m,
                             op->send ? "a send to" : "a receive from",
                             who(f, op->peer, w, sizeof w), fi_strerror(op->fi_err));
        return fab_break(f, err, "%s %s: %s%s%s", op->send ? "send to" : "receive from",
                         who(f, op->peer, w, sizeof w), fi_strerror(op->fi_err),
                         *op->detail ? " — " : "", op->detail);
    }
    if (!op->send && op->got != op->len)
        return fab_break(f, err,
                         "%s sent %zu bytes where %zu were expected: the ranks disagree about "
                         "this operation (its count, dtype or order)",
                         who(f, op->peer, w, sizeof w), op->got, op->len);
    return true;
}

bool comm_fab_waitall(comm_fab *f, const int *reqs, int n, dtl_err *err)
{
    if (f->broken)
        return comm_fab_ok(f, err);
    double deadline = comm_now() + f->timeout_s;
    fab_wait idle = {0};
    for (;;) {
        int got = fab_poll(f, err);
        if (got < 0)
            return false;
        int pending = 0, first = -1;
        for (int i = 0; i < n; i++) {
            fab_op *op = f->ops[reqs[i]];
            if (op->state == OP_PENDING) {
                if (first < 0)
                    first = i;
                pending++;
            } else if (op->state == OP_FAILED || (op->state == OP_DONE && !op->send &&
                                                  op->got != op->len)) {
                return op_check(f, op, err);
            }
        }
        if (pending == 0) {
            for (int i = 0; i < n; i++)
                op_release(f, reqs[i]);
            return true;
        }
        if (fab_watch_failed(f, err))
            return false;
        if (got > 0) {
            idle = (fab_wait){0};
            deadline = comm_now() + f->timeout_s;
            continue;
        }
        fab_backoff(f, &idle);
        if ((idle.polls & 63) == 0 && comm_now() > deadline) {
            fab_op *op = f->ops[reqs[first]];
            char w[96];
            return fab_break(f, err, "timed out after %g s (DTL_TIMEOUT) %s %s%s",
                             f->timeout_s,
                             op->send ? "waiting for a send to complete to" :
                                        "waiting for a message from",
                             who(f, op->peer, w, sizeof w),
                             pending > 1 ? " (and more)" : "");
        }
    }
}

void comm_fab_close(comm_fab *f)
{
    if (!f)
        return;
    /* The endpoint first: after it no operation can touch a buffer or a record. */
    if (f->ep)
        fi_close(&f->ep->fid);
    if (f->av)
        fi_close(&f->av->fid);
    if (f->cq)
        fi_close(&f->cq->fid);
    if (f->domain)
        fi_close(&f->domain->fid);
    if (f->fabric)
        fi_close(&f->fabric->fid);
    fi_freeinfo(f->info);
    for (int i = 0; i < f->nops; i++)
        free(f->ops[i]);
    free(f->ops);
    free(f->free_ids);
    free(f->addrs);
    free(f->name);
    free(f);
}
