/* runtime/comm/bootstrap.c — rendezvous with rank 0 over TCP, then liveness on the same sockets.
 *
 * Design. Rank 0 listens on the coordinator's port on every interface (a host name that
 * resolves to 127.0.1.1, as Debian's /etc/hosts makes it, would otherwise shut out the other
 * hosts); the others connect, retrying until DTL_TIMEOUT since rank 0 may start last. The
 * start-up is three exchanges of length-prefixed frames, all through rank 0:
 *   HELO  rank → 0   rank, world size, pid, job id, host, host identity, provider request,
 *                    model hash, collective signatures. Rank 0 turns away processes of another
 *                    job (two jobs on one port), checks the rest (so it can name every rank
 *                    that differs) and decides the provider.
 *   PROV  0 → rank   the exact provider rank 0 opened, and whether ranks span hosts.
 *   NAME  rank → 0   the endpoint name (fi_getname); ADDR 0 → rank: every rank's name, host
 *                    and pid.
 * A FAIL frame (a message) may replace any of them: rank 0 sends it to every rank, a rank
 * sends it to rank 0, which passes it on. After start-up the sockets stay open as the
 * liveness channel: a watcher thread per process polls them (and a pipe that stops it). At
 * rank 0 a socket that closes before its rank said goodbye means that rank died; a FAIL
 * means it failed; either is recorded and sent to every other rank. At the other ranks the
 * socket to rank 0 closing means rank 0 died; a FAIL carries rank 0's news. Writes to a
 * socket take a mutex (the watcher and the caller's thread both send). TCP keepalive catches
 * a host that vanishes without closing anything. The failure record is write-once: a CAS
 * claims it, the message is written, then the state is published with release order, so the
 * hot path (comm_boot_failed) is one acquire load. Shutdown (BYE/ACK) runs on the caller's
 * thread after the watcher is joined.
 */
#include "comm_internal.h"

#include "../progress.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BOOT_MAGIC 0x44544c43u   /* "DTLC" */
#define BOOT_VERSION 2u
#define BOOT_MAX_FRAME (64u << 20)
/* How long the watcher waits for the rest of a frame it has seen the start of (frames are
 * small and sent whole). */
#define WATCH_FRAME_S 10.0

enum { F_HELO = 1, F_PROV, F_NAME, F_ADDR, F_FAIL, F_BYE, F_ACK };

/* ---- small utilities shared by runtime/comm ------------------------------------------------ */

double comm_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void comm_backoff(unsigned *idle)
{
    unsigned i = (*idle)++;
    if (i < 64)
        return;
    if (i < 2048) {
        sched_yield();
        return;
    }
    unsigned us = (i - 2048) / 16 + 10;
    struct timespec t = {0, (long)(us > 1000 ? 1000 : us) * 1000};
    nanosleep(&t, NULL);
}

const char *comm_bytes(char *buf, size_t cap, size_t bytes)
{
    dtl_progress_fmt_bytes((double)bytes, buf, cap);
    return buf;
}

/* ---- byte buffers ------------------------------------------------------------------------- */

typedef struct bbuf {
    uint8_t *p;
    size_t n, cap;
    bool oom;
} bbuf;

static void bb_put(bbuf *b, const void *d, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void bb_u32(bbuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    bb_put(b, x, 4);
}

static void bb_u64(bbuf *b, uint64_t v)
{
    bb_u32(b, (uint32_t)(v >> 32));
    bb_u32(b, (uint32_t)v);
}

static void bb_bytes(bbuf *b, const void *d, size_t n)
{
    bb_u32(b, (uint32_t)n);
    bb_put(b, d, n);
}

static void bb_str(bbuf *b, const char *s)
{
    bb_bytes(b, s, strlen(s));
}

typedef struct rd {
    const uint8_t *p;
    size_t n, off;
    bool bad;
} rd;

static uint32_t rd_u32(rd *r)
{
    if (r->bad || r->n - r->off < 4) {
        r->bad = true;
        return 0;
    }
    const uint8_t *x = r->p + r->off;
    r->off += 4;
    return (uint32_t)x[0] << 24 | (uint32_t)x[1] << 16 | (uint32_t)x[2] << 8 | x[3];
}

static uint64_t rd_u64(rd *r)
{
    uint64_t hi = rd_u32(r);
    return hi << 32 | rd_u32(r);
}

static const uint8_t *rd_bytes(rd *r, size_t *len)
{
    size_t n = rd_u32(r);
    if (r->bad || r->n - r->off < n) {
        r->bad = true;
        *len = 0;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    *len = n;
    return p;
}

/* A string into out (cap bytes, truncated, NUL-terminated). */
static void rd_str(rd *r, char *out, size_t cap)
{
    size_t n;
    const uint8_t *p = rd_bytes(r, &n);
    if (n >= cap)
        n = cap - 1;
    if (p)
        memcpy(out, p, n);
    out[p ? n : 0] = 0;
}

/* ---- the bootstrap state ------------------------------------------------------------------ */

typedef struct peer_info {
    char job[96];
    char host[64];
    char hostkey[128];
    char provider[64];
    int pid;
    bool seen;
    uint64_t hash;
    uint32_t nsigs;
    char **sigs;
} peer_info;

struct comm_boot {
    int rank, size;
    double timeout_s;
    int *fds;                 /* rank 0: fds[j] for j > 0; the others: fds[0] */
    peer_info *peers;         /* rank 0: everything HELO said; all ranks: host and pid after ADDR */
    bool multihost;
    void **names;
    size_t *namelens;
    struct sockaddr_storage local;
    socklen_t locallen;
    /* the watcher */
    pthread_t thread;
    bool watching;
    int wake[2];
    pthread_mutex_t wlock;
    atomic_int fstate;        /* 0 none, 1 being written, 2 published */
    char fmsg[400];
    bool *bye;                /* rank 0: rank j said goodbye */
    /* the collective in flight (comm_boot_doing), under dlock */
    pthread_mutex_t dlock;
    const void *doing;
    const char *doing_name;
    dtl_dtype doing_t;
    size_t doing_count;
    bool doing_has_label;
    char doing_label[160];
    char stuck_prefix[64];    /* the backstop's (dtl_comm_opts) */
    int stuck_status;
    atomic_bool *closed;      /* rank 0: rank j's socket is closed (read by both threads) */
};

static void set_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0)
        fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
}

static void tune_socket(int fd, double timeout_s)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
#ifdef TCP_KEEPIDLE
    int idle = 5, intvl = 2, cnt = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
#endif
    /* A peer that stops reading must not block a send forever. */
    struct timeval tv = {(time_t)timeout_s, (long)((timeout_s - (double)(time_t)timeout_s) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    set_cloexec(fd);
}

static bool send_all(int fd, const void *p, size_t n)
{
    const uint8_t *c = p;
    while (n) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        c += k;
        n -= (size_t)k;
    }
    return true;
}

/* One frame to fd, under the write lock. */
static bool send_frame(comm_boot *b, int fd, uint32_t type, const bbuf *pl)
{
    if (fd < 0)
        return false;
    bbuf h = {0};
    bb_u32(&h, type);
    bb_u32(&h, pl ? (uint32_t)pl->n : 0);
    if (pl && !pl->oom)
        bb_put(&h, pl->p, pl->n);
    bool ok = !h.oom && !(pl && pl->oom);
    pthread_mutex_lock(&b->wlock);
    ok = ok && send_all(fd, h.p, h.n);
    pthread_mutex_unlock(&b->wlock);
    free(h.p);
    return ok;
}

/* Reads exactly n bytes before deadline: 1 done, 0 EOF, -1 error or timeout (why says). */
static int recv_all(int fd, void *p, size_t n, double deadline, const char **why)
{
    uint8_t *c = p;
    while (n) {
        double left = deadline - comm_now();
        if (left <= 0) {
            *why = "timed out";
            return -1;
        }
        struct pollfd pf = {fd, POLLIN, 0};
        int r = poll(&pf, 1, left > 1e6 ? 1000000000 : (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            *why = strerror(errno);
            return -1;
        }
        if (r == 0)
            continue;
        ssize_t k = recv(fd, c, n, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (k == 0)
            return 0;
        if (k < 0) {
            *why = strerror(errno);
            return -1;
        }
        c += k;
        n -= (size_t)k;
    }
    return 1;
}

/* One frame: 1 (type and payload into *out, which the caller frees), 0 EOF, -1 error. */
static int recv_frame(int fd, double deadline, uint32_t *type, bbuf *out, const char **why)
{
    uint8_t h[8];
    int r = recv_all(fd, h, 8, deadline, why);
    if (r <= 0)
        return r;
    rd hr = {h, 8, 0, false};
    *type = rd_u32(&hr);
    uint32_t n = rd_u32(&hr);
    if (n > BOOT_MAX_FRAME) {
        *why = "a frame too large (not a dtl rank?)";
        return -1;
    }
    memset(out, 0, sizeof *out);
    out->p = malloc(n ? n : 1);
    if (!out->p) {
        *why = "out of memory";
        return -1;
    }
    out->n = out->cap = n;
    r = recv_all(fd, out->p, n, deadline, why);
    if (r <= 0) {
        free(out->p);
        out->p = NULL;
        return r < 0 ? -1 : 0;
    }
    return 1;
}

/* ---- failure record ----------------------------------------------------------------------- */

/* Claims the failure record; true when this call wrote it (the first failure). */
static bool record(comm_boot *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool record(comm_boot *b, const char *fmt, ...)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&b->fstate, &expect, 1))
        return false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->fmsg, sizeof b->fmsg, fmt, ap);
    va_end(ap);
    atomic_store_explicit(&b->fstate, 2, memory_order_release);
    return true;
}

bool comm_boot_failed(comm_boot *b, char *msg, size_t cap)
{
    int s = atomic_load_explicit(&b->fstate, memory_order_acquire);
    if (s == 0)
        return false;
    while (s != 2) {   /* being written by the other thread: a few instructions away */
        sched_yield();
        s = atomic_load_explicit(&b->fstate, memory_order_acquire);
    }
    snprintf(msg, cap, "%s", b->fmsg);
    return true;
}

static void fail_frame(bbuf *pl, const char *msg)
{
    memset(pl, 0, sizeof *pl);
    bb_str(pl, msg);
}

/* Rank 0: sends msg as a FAIL to every rank but `except` whose socket is open. */
static void fail_all(comm_boot *b, const char *msg, int except)
{
    bbuf pl;
    fail_frame(&pl, msg);
    for (int j = 1; j < b->size; j++)
        if (j != except && b->fds[j] >= 0 && !(b->closed && atomic_load(&b->closed[j])))
            send_frame(b, b->fds[j], F_FAIL, &pl);
    free(pl.p);
}

int comm_boot_local_ranks(const comm_boot *b)
{
    int n = 0;
    for (int i = 0; i < b->size; i++)
        n += strcmp(b->peers[i].host, b->peers[b->rank].host) == 0;
    return n;
}

const char *comm_boot_who(const comm_boot *b, int r, char *buf, size_t cap)
{
    if (b && b->peers && r >= 0 && r < b->size && b->peers[r].pid)
        snprintf(buf, cap, "rank %d (host %s, pid %d)", r, b->peers[r].host, b->peers[r].pid);
    else
        snprintf(buf, cap, "rank %d", r);
    return buf;
}

void comm_boot_report(comm_boot *b, const char *msg)
{
    if (!record(b, "%s", msg))
        return;
    if (b->rank == 0) {
        char w[96], m[512];
        snprintf(m, sizeof m, "%s failed: %s", comm_boot_who(b, 0, w, sizeof w), msg);
        fail_all(b, m, -1);
    } else if (b->fds[0] >= 0) {
        bbuf pl;
        fail_frame(&pl, msg);
        send_frame(b, b->fds[0], F_FAIL, &pl);
        free(pl.p);
    }
}

/* ---- start-up ----------------------------------------------------------------------------- */

static void self_identity(char *host, size_t hcap, char *key, size_t kcap)
{
    if (gethostname(host, hcap) != 0)
        snprintf(host, hcap, "unknown");
    host[hcap - 1] = 0;
    /* Same host = same kernel: the boot id tells network namespaces of one host apart from
     * hosts that happen to share a name. DTL_HOST_ID overrides (tests pretend to span hosts). */
    const char *over = getenv("DTL_HOST_ID");
    if (over && *over) {
        snprintf(key, kcap, "%s", over);
        return;
    }
    char boot[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(boot, sizeof boot, f))
            boot[0] = 0;
        fclose(f);
        boot[strcspn(boot, "\n")] = 0;
    }
    snprintf(key, kcap, "%s/%s", host, boot);
}

static comm_boot *boot_new(const dtl_comm_env *env, dtl_err *err)
{
    comm_boot *b = calloc(1, sizeof *b);
    if (!b)
        goto oom;
    b->rank = env->rank;
    b->size = env->size;
    b->timeout_s = env->timeout_s > 0 ? env->timeout_s : DTL_COMM_DEFAULT_TIMEOUT;
    b->wake[0] = b->wake[1] = -1;
    pthread_mutex_init(&b->wlock, NULL);
    pthread_mutex_init(&b->dlock, NULL);
    atomic_init(&b->fstate, 0);
    b->fds = malloc((size_t)b->size * sizeof *b->fds);
    b->peers = calloc((size_t)b->size, sizeof *b->peers);
    b->bye = calloc((size_t)b->size, sizeof *b->bye);
    b->closed = calloc((size_t)b->size, sizeof *b->closed);
    if (!b->fds || !b->peers || !b->bye || !b->closed) {
        comm_boot_free(b);
        goto oom;
    }
    for (int i = 0; i < b->size; i++)
        b->fds[i] = -1;
    return b;
oom:
    dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for the rendezvous");
    return NULL;
}

static int listen_on(int port, dtl_err *err)
{
    /* IPv6 with IPv4 mapped in, else IPv4: every interface. */
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    int one = 1, zero = 0;
    if (fd >= 0) {
        struct sockaddr_in6 a6;
        memset(&a6, 0, sizeof a6);
        a6.sin6_family = AF_INET6;
        a6.sin6_addr = in6addr_any;
        a6.sin6_port = htons((uint16_t)port);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(fd, (struct sockaddr *)&a6, sizeof a6) == 0)
            goto bound;
        if (errno == EADDRINUSE)
            goto in_use;
        close(fd);
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return dtl_err_set(err, DTL_ERR_IO, "socket: %s", strerror(errno)), -1;
    struct sockaddr_in a4;
    memset(&a4, 0, sizeof a4);
    a4.sin_family = AF_INET;
    a4.sin_addr.s_addr = htonl(INADDR_ANY);
    a4.sin_port = htons((uint16_t)port);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a4, sizeof a4) != 0) {
        if (errno == EADDRINUSE)
            goto in_use;
        dtl_err_set(err, DTL_ERR_IO, "rank 0 cannot listen on port %d: %s", port, strerror(errno));
        close(fd);
        return -1;
    }
bound:
    if (listen(fd, 128) != 0) {
        dtl_err_set(err, DTL_ERR_IO, "rank 0 cannot listen on port %d: %s", port, strerror(errno));
        close(fd);
        return -1;
    }
    set_cloexec(fd);
    return fd;
in_use:
    close(fd);
    dtl_err_set(err, DTL_ERR_IO,
                "rank 0 cannot listen on port %d: it is in use (another job? choose another "
                "port with DTL_COORDINATOR=host:port)", port);
    return -1;
}

static void free_sigs(peer_info *p)
{
    for (uint32_t i = 0; p->sigs && i < p->nsigs; i++)
        free(p->sigs[i]);
    free(p->sigs);
    p->sigs = NULL;
    p->nsigs = 0;
}

/* Parses a HELO payload into p; false when it is not one. */
static bool parse_helo(const bbuf *f, peer_info *p, int *rank, int *size)
{
    rd r = {f->p, f->n, 0, false};
    if (rd_u32(&r) != BOOT_MAGIC || rd_u32(&r) != BOOT_VERSION || r.bad)
        return false;
    *rank = (int)rd_u32(&r);
    *size = (int)rd_u32(&r);
    p->pid = (int)rd_u32(&r);
    rd_str(&r, p->job, sizeof p->job);
    rd_str(&r, p->host, sizeof p->host);
    rd_str(&r, p->hostkey, sizeof p->hostkey);
    rd_str(&r, p->provider, sizeof p->provider);
    p->hash = rd_u64(&r);
    uint32_t n = rd_u32(&r);
    if (r.bad || n > BOOT_MAX_FRAME / 4)
        return false;
    p->sigs = calloc(n ? n : 1, sizeof *p->sigs);
    if (!p->sigs)
        return false;
    p->nsigs = n;
    for (uint32_t i = 0; i < n; i++) {
        size_t len;
        const uint8_t *s = rd_bytes(&r, &len);
        if (r.bad || !(p->sigs[i] = malloc(len + 1))) {
            free_sigs(p);
            return false;
        }
        memcpy(p->sigs[i], s, len);
        p->sigs[i][len] = 0;
    }
    return !r.bad;
}

static void build_helo(bbuf *pl, const comm_boot *b, const peer_info *me)
{
    bb_u32(pl, BOOT_MAGIC);
    bb_u32(pl, BOOT_VERSION);
    bb_u32(pl, (uint32_t)b->rank);
    bb_u32(pl, (uint32_t)b->size);
    bb_u32(pl, (uint32_t)me->pid);
    bb_str(pl, me->job);
    bb_str(pl, me->host);
    bb_str(pl, me->hostkey);
    bb_str(pl, me->provider);
    bb_u64(pl, me->hash);
    bb_u32(pl, me->nsigs);
    for (uint32_t i = 0; i < me->nsigs; i++)
        bb_str(pl, me->sigs[i]);
}

/* Appends "2, 3, 5" (at most 8, then "and N more") of the ranks flagged in bad[]. */
static void list_ranks(char *out, size_t cap, const bool *bad, int n)
{
    size_t k = 0;
    int shown = 0, total = 0;
    out[0] = 0;
    for (int j = 0; j < n; j++) {
        if (!bad[j])
            continue;
        total++;
        if (shown < 8 && k < cap) {
            k += (size_t)snprintf(out + k, cap - k, "%s%d", shown ? ", " : "", j);
            shown++;
        }
    }
    if (total > shown && k < cap)
        snprintf(out + k, cap - k, " and %d more", total - shown);
}

/* Rank 0: compares what every rank sent with its own; false with err set on a difference. */
static bool check_peers(comm_boot *b, dtl_err *err)
{
    peer_info *p = b->peers;
    char list[128];
    bool *bad = calloc((size_t)b->size, sizeof *bad);
    if (!bad)
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory checking the ranks");
    bool ok = true;
    int first = -1;
    for (int j = 1; j < b->size; j++)
        if (strcmp(p[j].provider, p[0].provider) != 0 && first < 0)
            first = j;
    if (first > 0) {
        ok = dtl_err_set(err, DTL_ERR_MISMATCH,
                         "ranks ask for different libfabric providers: rank 0 '%s', rank %d '%s' "
                         "(DTL_FABRIC_PROVIDER or FI_PROVIDER differ)",
                         *p[0].provider ? p[0].provider : "automatic", first,
                         *p[first].provider ? p[first].provider : "automatic");
        goto out;
    }
    int nbad = 0;
    for (int j = 1; j < b->size; j++)
        if (p[j].hash != p[0].hash)
            bad[j] = true, nbad++, first = first < 0 ? j : first;
    if (nbad) {
        list_ranks(list, sizeof list, bad, b->size);
        ok = dtl_err_set(err, DTL_ERR_MISMATCH,
                         "the model differs between ranks: rank 0 has model hash %016llx; rank%s "
                         "%s differ%s (rank %d has %016llx): a different .dtl file, options or "
                         "shapes", (unsigned long long)p[0].hash, nbad > 1 ? "s" : "", list,
                         nbad > 1 ? "" : "s", first, (unsigned long long)p[first].hash);
        goto out;
    }
    first = -1;
    uint32_t at = 0;
    for (int j = 1; j < b->size; j++) {
        uint32_t n = p[j].nsigs < p[0].nsigs ? p[j].nsigs : p[0].nsigs, i = 0;
        while (i < n && strcmp(p[j].sigs[i], p[0].sigs[i]) == 0)
            i++;
        if (i < n || p[j].nsigs != p[0].nsigs) {
            bad[j] = true;
            nbad++;
            if (first < 0)
                first = j, at = i;
        }
    }
    if (nbad) {
        list_ranks(list, sizeof list, bad, b->size);
        const char *a = at < p[0].nsigs ? p[0].sigs[at] : "(none: the list ends)";
        const char *z = at < p[first].nsigs ? p[first].sigs[at] : "(none: the list ends)";
        ok = dtl_err_set(err, DTL_ERR_MISMATCH,
                         "ranks would issue different collectives per step (rank%s %s "
                         "differ%s from "
                         "rank 0): rank 0 issues %u, rank %d issues %u; the first difference is "
                         "#%u: rank 0 '%.100s', rank %d '%.100s'",
                         nbad > 1 ? "s" : "", list, nbad > 1 ? "" : "s", p[0].nsigs, first,
                         p[first].nsigs, at + 1, a, first, z);
        goto out;
    }
    for (int j = 1; j < b->size; j++)
        if (strcmp(p[j].hostkey, p[0].hostkey) != 0)
            b->multihost = true;
out:
    free(bad);
    return ok;
}

/* Rank 0: accepts and reads HELO from every other rank. */
static bool hello_root(comm_boot *b, const dtl_comm_env *env, dtl_err *err)
{
    int lfd = listen_on(env->port, err);
    if (lfd < 0)
        return false;
    double deadline = comm_now() + b->timeout_s;
    int have = 1;
    int strangers = 0;
    bool ok = true;
    while (have < b->size) {
        double left = deadline - comm_now();
        if (left <= 0) {
            bool *miss = calloc((size_t)b->size, sizeof *miss);
            char list[128] = "?";
            if (miss) {
                for (int j = 1; j < b->size; j++)
                    miss[j] = b->fds[j] < 0;
                list_ranks(list, sizeof list, miss, b->size);
                free(miss);
            }
            ok = dtl_err_set(err, DTL_ERR_IO,
                             "timed out after %g s (DTL_TIMEOUT) waiting for rank%s %s of %d to "
                             "connect to port %d%s",
                             b->timeout_s, b->size - have > 1 ? "s" : "", list, b->size, env->port,
                             strangers ? " (other programs connected; is the port shared?)" : "");
            break;
        }
        struct pollfd pf = {lfd, POLLIN, 0};
        int r = poll(&pf, 1, (int)(left * 1000) + 1);
        if (r <= 0)
            continue;
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        tune_socket(fd, b->timeout_s);
        uint32_t type;
        bbuf f;
        const char *why = "closed";
        peer_info p;
        memset(&p, 0, sizeof p);
        int rank = -1, size = -1;
        double hd = comm_now() + 5 < deadline ? comm_now() + 5 : deadline;
        if (recv_frame(fd, hd, &type, &f, &why) != 1) {
            close(fd);
            strangers++;
            continue;
        }
        bool good = type == F_HELO && parse_helo(&f, &p, &rank, &size);
        free(f.p);
        if (!good) {
            close(fd);
            strangers++;
            continue;
        }
        char w[96];
        snprintf(w, sizeof w, "rank %d (host %s, pid %d)", rank, p.host, p.pid);
        if (strcmp(p.job, b->peers[0].job) != 0) {
            /* Another job on this port: turn it away, leave this one alone. */
            char m[400];
            snprintf(m, sizeof m, "%s of job '%s' reached rank 0 of another job ('%s') on port "
                     "%d: two jobs share the coordinator's port", w, p.job, b->peers[0].job,
                     env->port);
            bbuf pl;
            fail_frame(&pl, m);
            send_frame(b, fd, F_FAIL, &pl);
            free(pl.p);
            free_sigs(&p);
            close(fd);
            strangers++;
            continue;
        }
        if (size != b->size) {
            ok = dtl_err_set(err, DTL_ERR_MISMATCH,
                             "%s says the world has %d ranks, rank 0 says %d (DTL_WORLD_SIZE or "
                             "the launcher's count differ)", w, size, b->size);
        } else if (rank <= 0 || rank >= b->size || b->fds[rank] >= 0) {
            char o[96];
            ok = dtl_err_set(err, DTL_ERR_MISMATCH, "two processes claim rank %d: %s and %s",
                             rank, rank == 0 ? "rank 0" : comm_boot_who(b, rank, o, sizeof o), w);
        }
        if (!ok) {
            bbuf pl;
            fail_frame(&pl, err->msg);
            send_frame(b, fd, F_FAIL, &pl);
            free(pl.p);
            free_sigs(&p);
            close(fd);
            break;
        }
        b->fds[rank] = fd;
        b->peers[rank] = p;
        b->peers[rank].seen = true;
        have++;
    }
    close(lfd);
    if (ok)
        ok = check_peers(b, err);
    if (!ok) {
        fail_all(b, err->msg, -1);
        return false;
    }
    /* The address the others reach rank 0 by: one seen by a rank of another host if any. */
    for (int j = 1; j < b->size; j++) {
        bool other = strcmp(b->peers[j].hostkey, b->peers[0].hostkey) != 0;
        if (j == 1 || other) {
            b->locallen = sizeof b->local;
            if (getsockname(b->fds[j], (struct sockaddr *)&b->local, &b->locallen) != 0)
                b->locallen = 0;
            if (other)
                break;
        }
    }
    return true;
}

/* Connects to the coordinator, retrying until the deadline. */
static int connect_root(const comm_boot *b, const dtl_comm_env *env, dtl_err *err)
{
    char port[16];
    snprintf(port, sizeof port, "%d", env->port);
    double deadline = comm_now() + b->timeout_s;
    const char *last = "no address";
    unsigned nap = 10;
    for (;;) {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int gr = getaddrinfo(env->host, port, &hints, &res);
        if (gr != 0) {
            last = gai_strerror(gr);
        } else {
            for (struct addrinfo *a = res; a; a = a->ai_next) {
                int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
                if (fd < 0) {
                    last = strerror(errno);
                    continue;
                }
                int fl = fcntl(fd, F_GETFL);
                fcntl(fd, F_SETFL, fl | O_NONBLOCK);
                int c = connect(fd, a->ai_addr, a->ai_addrlen);
                if (c != 0 && errno == EINPROGRESS) {
                    double left = deadline - comm_now();
                    struct pollfd pf = {fd, POLLOUT, 0};
                    int wait_ms = left > 2 ? 2000 : (int)(left * 1000) + 1;
                    if (poll(&pf, 1, wait_ms) == 1) {
                        int e = 0;
                        socklen_t el = sizeof e;
                        getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
                        c = e ? -1 : 0;
                        errno = e;
                    } else {
                        c = -1;
                        errno = ETIMEDOUT;
                    }
                }
                if (c == 0) {
                    fcntl(fd, F_SETFL, fl);
                    freeaddrinfo(res);
                    return fd;
                }
                last = strerror(errno);
                close(fd);
            }
            freeaddrinfo(res);
        }
        if (comm_now() + nap / 1000.0 > deadline)
            break;
        struct timespec t = {0, (long)nap * 1000000L};
        nanosleep(&t, NULL);
        nap = nap < 250 ? nap * 2 : 250;
    }
    dtl_err_set(err, DTL_ERR_IO,
                "rank %d could not reach the coordinator %s:%d within %g s (DTL_TIMEOUT): %s "
                "(is rank 0 running? the coordinator comes from %s)",
                b->rank, env->host, env->port, b->timeout_s, last,
                strcmp(env->source, "torchrun") == 0 ? "DTL_COORDINATOR or MASTER_ADDR/MASTER_PORT"
                : strcmp(env->source, "Slurm") == 0  ? "DTL_COORDINATOR or the Slurm node list"
                                                     : "DTL_COORDINATOR");
    return -1;
}

comm_boot *comm_boot_hello(const dtl_comm_env *env, const dtl_comm_opts *opts, dtl_err *err)
{
    comm_boot *b = boot_new(env, err);
    if (!b)
        return NULL;
    peer_info *me = &b->peers[b->rank];
    snprintf(me->job, sizeof me->job, "%s", env->job);
    self_identity(me->host, sizeof me->host, me->hostkey, sizeof me->hostkey);
    snprintf(me->provider, sizeof me->provider, "%s", env->provider);
    me->pid = (int)getpid();
    me->hash = opts ? opts->model_hash : 0;
    me->seen = true;
    snprintf(b->stuck_prefix, sizeof b->stuck_prefix, "%s",
             opts && opts->stuck_prefix ? opts->stuck_prefix : "error: ");
    b->stuck_status = opts && opts->stuck_status ? opts->stuck_status : 1;
    if (opts && opts->nsigs) {
        me->sigs = calloc(opts->nsigs, sizeof *me->sigs);
        if (!me->sigs)
            goto oom;
        me->nsigs = (uint32_t)opts->nsigs;
        for (size_t i = 0; i < opts->nsigs; i++)
            if (!(me->sigs[i] = strdup(opts->sigs[i] ? opts->sigs[i] : "")))
                goto oom;
    }
    if (b->rank == 0) {
        if (!hello_root(b, env, err))
            goto fail;
    } else {
        int fd = connect_root(b, env, err);
        if (fd < 0)
            goto fail;
        tune_socket(fd, b->timeout_s);
        b->fds[0] = fd;
        b->locallen = sizeof b->local;
        if (getsockname(fd, (struct sockaddr *)&b->local, &b->locallen) != 0)
            b->locallen = 0;
        bbuf pl = {0};
        build_helo(&pl, b, me);
        bool sent = send_frame(b, fd, F_HELO, &pl);
        free(pl.p);
        if (!sent) {
            dtl_err_set(err, DTL_ERR_IO, "rank %d: the coordinator %s:%d closed the connection",
                        b->rank, env->host, env->port);
            goto fail;
        }
    }
    return b;
oom:
    dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for the rendezvous");
fail:
    comm_boot_free(b);
    return NULL;
}

bool comm_boot_multihost(const comm_boot *b)
{
    return b->multihost;
}

bool comm_boot_local_addr(const comm_boot *b, struct sockaddr_storage *ss, socklen_t *len)
{
    if (!b->locallen)
        return false;
    *ss = b->local;
    *len = b->locallen;
    /* Rank 0's dual-stack socket sees IPv4 peers as ::ffff:a.b.c.d: give the IPv4 address
     * (the interfaces are listed by it). */
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&b->local;
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (b->local.ss_family == AF_INET6 && memcmp(a6->sin6_addr.s6_addr, v4mapped, 12) == 0) {
        struct sockaddr_in a4;
        memset(&a4, 0, sizeof a4);
        a4.sin_family = AF_INET;
        memcpy(&a4.sin_addr, a6->sin6_addr.s6_addr + 12, 4);
        memset(ss, 0, sizeof *ss);
        memcpy(ss, &a4, sizeof a4);
        *len = sizeof a4;
    }
    return true;
}

/* A rank other than 0 waits for rank 0's frame of type want (a FAIL instead is the error). */
static bool await_root(comm_boot *b, uint32_t want, bbuf *f, double deadline, const char *phase,
                       dtl_err *err)
{
    uint32_t type;
    const char *why = "closed";
    int r = recv_frame(b->fds[0], deadline, &type, f, &why);
    if (r == 0 || r < 0)
        return dtl_err_set(err, DTL_ERR_IO,
                           "rank %d: during start-up (%s) the connection to rank 0 %s", b->rank,
                           phase, r == 0 ? "closed (rank 0 exited)" : why);
    if (type == F_FAIL) {
        rd rr = {f->p, f->n, 0, false};
        char m[400];
        rd_str(&rr, m, sizeof m);
        free(f->p);
        f->p = NULL;
        record(b, "%s", m);
        return dtl_err_set(err, DTL_ERR_MISMATCH, "%s", m);
    }
    if (type != want) {
        free(f->p);
        f->p = NULL;
        return dtl_err_set(err, DTL_ERR_IO, "rank %d: unexpected message %u from rank 0 during "
                           "start-up (%s)", b->rank, type, phase);
    }
    return true;
}

bool comm_boot_provider(comm_boot *b, char *prov, size_t cap, bool *multihost, dtl_err *err)
{
    if (b->rank == 0) {
        bbuf pl = {0};
        bb_str(&pl, prov);
        bb_u32(&pl, b->multihost);
        for (int j = 1; j < b->size; j++)
            if (!send_frame(b, b->fds[j], F_PROV, &pl)) {
                char w[96], m[256];
                snprintf(m, sizeof m, "%s died during start-up: its connection closed",
                         comm_boot_who(b, j, w, sizeof w));
                free(pl.p);
                fail_all(b, m, j);
                return dtl_err_set(err, DTL_ERR_IO, "%s", m);
            }
        free(pl.p);
        *multihost = b->multihost;
        return true;
    }
    bbuf f = {0};
    /* Rank 0 may wait DTL_TIMEOUT for the last rank to connect before it answers. */
    if (!await_root(b, F_PROV, &f, comm_now() + b->timeout_s + 10, "choosing the provider", err))
        return false;
    rd r = {f.p, f.n, 0, false};
    rd_str(&r, prov, cap);
    *multihost = b->multihost = rd_u32(&r) != 0;
    bool bad = r.bad;
    free(f.p);
    if (bad)
        return dtl_err_set(err, DTL_ERR_IO, "rank %d: a malformed message from rank 0", b->rank);
    return true;
}

static bool keep_name(comm_boot *b, int i, const void *p, size_t n)
{
    b->names[i] = malloc(n + 1);
    if (!b->names[i])
        return false;
    memcpy(b->names[i], p, n);
    ((char *)b->names[i])[n] = 0;
    b->namelens[i] = n;
    return true;
}

bool comm_boot_names(comm_boot *b, const void *name, size_t len, const void *const **names,
                     const size_t **lens, dtl_err *err)
{
    b->names = calloc((size_t)b->size, sizeof *b->names);
    b->namelens = calloc((size_t)b->size, sizeof *b->namelens);
    if (!b->names || !b->namelens)
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for endpoint names");
    /* Every rank is connected by now: what is left is local work on each (opening the
     * transport, which may load providers), so allow a margin over DTL_TIMEOUT. */
    double deadline = comm_now() + b->timeout_s + 10;
    if (b->rank != 0) {
        bbuf pl = {0};
        bb_bytes(&pl, name, len);
        bool sent = send_frame(b, b->fds[0], F_NAME, &pl);
        free(pl.p);
        if (!sent)
            return dtl_err_set(err, DTL_ERR_IO, "rank %d: rank 0 closed the connection during "
                               "start-up", b->rank);
        bbuf f = {0};
        if (!await_root(b, F_ADDR, &f, deadline + 10, "exchanging endpoint names", err))
            return false;
        rd r = {f.p, f.n, 0, false};
        for (int i = 0; i < b->size && !r.bad; i++) {
            rd_str(&r, b->peers[i].host, sizeof b->peers[i].host);
            b->peers[i].pid = (int)rd_u32(&r);
            size_t n;
            const uint8_t *p = rd_bytes(&r, &n);
            if (!r.bad && !keep_name(b, i, p, n)) {
                free(f.p);
                return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for endpoint names");
            }
        }
        free(f.p);
        if (r.bad)
            return dtl_err_set(err, DTL_ERR_IO, "rank %d: a malformed message from rank 0",
                               b->rank);
    } else {
        if (!keep_name(b, 0, name, len))
            return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for endpoint names");
        for (int j = 1; j < b->size; j++) {
            uint32_t type;
            bbuf f;
            const char *why = "closed";
            char w[96], m[512];
            int r = recv_frame(b->fds[j], deadline, &type, &f, &why);
            comm_boot_who(b, j, w, sizeof w);
            if (r != 1) {
                if (r == 0)
                    snprintf(m, sizeof m, "%s died during start-up (its connection closed)", w);
                else if (strcmp(why, "timed out") == 0)
                    snprintf(m, sizeof m, "%s did not open its transport within %g s (DTL_TIMEOUT "
                             "+ 10 s) during start-up", w, b->timeout_s + 10);
                else
                    snprintf(m, sizeof m, "%s failed during start-up: %s", w, why);
                record(b, "%s", m);
                fail_all(b, m, j);
                return dtl_err_set(err, DTL_ERR_IO, "%s", m);
            }
            rd rr = {f.p, f.n, 0, false};
            if (type == F_FAIL) {
                char why2[400];
                rd_str(&rr, why2, sizeof why2);
                snprintf(m, sizeof m, "%s failed: %s", w, why2);
                free(f.p);
                record(b, "%s", m);
                fail_all(b, m, j);
                return dtl_err_set(err, DTL_ERR_IO, "%s", m);
            }
            size_t n = 0;
            const uint8_t *p = type == F_NAME ? rd_bytes(&rr, &n) : NULL;
            bool ok = p && !rr.bad && keep_name(b, j, p, n);
            free(f.p);
            if (!ok) {
                snprintf(m, sizeof m, "%s sent a malformed endpoint name", w);
                fail_all(b, m, -1);
                return dtl_err_set(err, DTL_ERR_IO, "%s", m);
            }
        }
        bbuf pl = {0};
        for (int i = 0; i < b->size; i++) {
            bb_str(&pl, b->peers[i].host);
            bb_u32(&pl, (uint32_t)b->peers[i].pid);
            bb_bytes(&pl, b->names[i], b->namelens[i]);
        }
        for (int j = 1; j < b->size; j++)
            if (!send_frame(b, b->fds[j], F_ADDR, &pl)) {
                char w[96], m[256];
                snprintf(m, sizeof m, "%s died during start-up: its connection closed",
                         comm_boot_who(b, j, w, sizeof w));
                free(pl.p);
                fail_all(b, m, j);
                return dtl_err_set(err, DTL_ERR_IO, "%s", m);
            }
        free(pl.p);
    }
    *names = (const void *const *)b->names;
    *lens = b->namelens;
    return true;
}

/* ---- the watcher -------------------------------------------------------------------------- */

/* The last resort of "no hang". A failure the watcher learns of reaches the program through its
 * next wait, and the program then frees the world (stop_watch wakes this thread). A thread stuck
 * inside the provider never gets there: libfabric's shm can spin for ever on a lock in the
 * shared memory of a peer that was killed while holding it (seen once in ~20 kill tests under
 * ASan). So when the world is not freed within STUCK_S of the failure, the watcher ends the
 * process itself: the failure's message on stderr, this process's shm regions removed (the
 * provider names them /dev/shm/<pid>:…, and _exit skips its fi_close), exit status and the
 * message's prefix as dtl_comm_opts said. */
#define STUCK_S 5.0

static void remove_own_shm(void)
{
    char pre[32];
    int n = snprintf(pre, sizeof pre, "%ld:", (long)getpid());
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, pre, (size_t)n) == 0)
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
}

static void backstop(comm_boot *b)
{
    struct pollfd pf = {b->wake[0], POLLIN, 0};
    for (double until = comm_now() + STUCK_S, left; (left = until - comm_now()) > 0;) {
        int r = poll(&pf, 1, (int)(left * 1000) + 1);
        if (r > 0 || (r < 0 && errno != EINTR))
            return;   /* the world is being freed */
    }
    char m[512], what[256] = "";
    if (!comm_boot_failed(b, m, sizeof m))
        snprintf(m, sizeof m, "the world failed");
    pthread_mutex_lock(&b->dlock);
    if (b->doing) {
        comm_what(what, sizeof what - 2, b->doing_name, b->doing_t, b->doing_count,
                  b->doing_has_label ? b->doing_label : NULL);
        strcat(what, ": ");
    }
    pthread_mutex_unlock(&b->dlock);
    dprintf(2, "%srank %d: %s%s (and this process did not get out of the transport within "
            "%g s: exiting)\n", b->stuck_prefix, b->rank, what, m, STUCK_S);
    remove_own_shm();
    _exit(b->stuck_status);
}

static void *watch_root(comm_boot *b)
{
    struct pollfd *pf = malloc((size_t)b->size * sizeof *pf);
    int *idx = malloc((size_t)b->size * sizeof *idx);
    if (!pf || !idx) {
        free(pf);
        free(idx);
        return NULL;
    }
    for (;;) {
        int n = 0;
        pf[n++] = (struct pollfd){b->wake[0], POLLIN, 0};
        for (int j = 1; j < b->size; j++)
            if (b->fds[j] >= 0 && !atomic_load(&b->closed[j]) && !b->bye[j]) {
                idx[n] = j;
                pf[n++] = (struct pollfd){b->fds[j], POLLIN, 0};
            }
        int r = poll(pf, (nfds_t)n, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || pf[0].revents)
            break;
        for (int k = 1; k < n; k++) {
            if (!pf[k].revents)
                continue;
            int j = idx[k];
            uint32_t type;
            bbuf f;
            const char *why = "closed";
            char w[96], m[512];
            comm_boot_who(b, j, w, sizeof w);
            int got = recv_frame(b->fds[j], comm_now() + WATCH_FRAME_S, &type, &f, &why);
            if (got != 1) {
                atomic_store(&b->closed[j], true);
                if (got == 0)
                    snprintf(m, sizeof m, "%s died: its connection to rank 0 closed", w);
                else
                    snprintf(m, sizeof m, "%s is unreachable: its connection to rank 0 failed: %s",
                             w, why);
                if (record(b, "%s", m)) {
                    fail_all(b, m, j);
                    backstop(b);
                    goto out;
                }
                continue;
            }
            if (type == F_FAIL) {
                rd rr = {f.p, f.n, 0, false};
                char why2[400];
                rd_str(&rr, why2, sizeof why2);
                snprintf(m, sizeof m, "%s failed: %s", w, why2);
                if (record(b, "%s", m)) {
                    fail_all(b, m, j);
                    free(f.p);
                    backstop(b);
                    goto out;
                }
            } else if (type == F_BYE) {
                b->bye[j] = true;
            }
            free(f.p);
        }
    }
out:
    free(pf);
    free(idx);
    return NULL;
}

static void *watch_rank(comm_boot *b)
{
    for (;;) {
        struct pollfd pf[2] = {{b->wake[0], POLLIN, 0}, {b->fds[0], POLLIN, 0}};
        int r = poll(pf, 2, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || pf[0].revents)
            break;
        uint32_t type;
        bbuf f;
        const char *why = "closed";
        char w[96];
        comm_boot_who(b, 0, w, sizeof w);
        int got = recv_frame(b->fds[0], comm_now() + WATCH_FRAME_S, &type, &f, &why);
        if (got != 1) {
            bool first = got == 0
                ? record(b, "%s died: the connection to it closed", w)
                : record(b, "%s is unreachable: the connection to it failed: %s", w, why);
            if (first)
                backstop(b);
            break;
        }
        if (type == F_FAIL) {
            rd rr = {f.p, f.n, 0, false};
            char m[400];
            rd_str(&rr, m, sizeof m);
            bool first = record(b, "%s", m);
            free(f.p);
            if (first)
                backstop(b);
            break;
        }
        free(f.p);
    }
    return NULL;
}

static void *watch_main(void *arg)
{
    comm_boot *b = arg;
    return b->rank == 0 ? watch_root(b) : watch_rank(b);
}

bool comm_boot_watch(comm_boot *b, dtl_err *err)
{
    if (pipe(b->wake) != 0)
        return dtl_err_set(err, DTL_ERR_IO, "pipe: %s", strerror(errno));
    set_cloexec(b->wake[0]);
    set_cloexec(b->wake[1]);
    int rc = pthread_create(&b->thread, NULL, watch_main, b);
    if (rc != 0)
        return dtl_err_set(err, DTL_ERR_IO, "cannot start the liveness thread: %s", strerror(rc));
    b->watching = true;
    return true;
}

static void stop_watch(comm_boot *b)
{
    if (!b->watching)
        return;
    char c = 1;
    while (write(b->wake[1], &c, 1) < 0 && errno == EINTR)
        ;
    pthread_join(b->thread, NULL);
    b->watching = false;
}

void comm_boot_doing(comm_boot *b, const void *owner, const char *name, dtl_dtype t,
                     size_t count, const char *label)
{
    pthread_mutex_lock(&b->dlock);
    b->doing = owner;
    b->doing_name = name;
    b->doing_t = t;
    b->doing_count = count;
    b->doing_has_label = label != NULL;
    if (label)
        snprintf(b->doing_label, sizeof b->doing_label, "%s", label);
    pthread_mutex_unlock(&b->dlock);
}

void comm_boot_done(comm_boot *b, const void *owner)
{
    pthread_mutex_lock(&b->dlock);
    if (b->doing == owner)
        b->doing = NULL;
    pthread_mutex_unlock(&b->dlock);
}

void comm_boot_set_timeout(comm_boot *b, double seconds)
{
    b->timeout_s = seconds;   /* the watcher never reads it (WATCH_FRAME_S) */
}

/* ---- shutdown ----------------------------------------------------------------------------- */

bool comm_boot_finish(comm_boot *b, dtl_err *err)
{
    char m[512];
    stop_watch(b);
    if (comm_boot_failed(b, m, sizeof m))
        return dtl_err_set(err, DTL_ERR_IO, "%s", m);
    double deadline = comm_now() + b->timeout_s;
    if (b->rank != 0) {
        if (!send_frame(b, b->fds[0], F_BYE, NULL)) {
            char w[96];
            record(b, "%s died: the connection to it closed", comm_boot_who(b, 0, w, sizeof w));
            comm_boot_failed(b, m, sizeof m);
            return dtl_err_set(err, DTL_ERR_IO, "%s", m);
        }
        for (;;) {
            uint32_t type;
            bbuf f;
            const char *why = "closed";
            char w[96];
            int r = recv_frame(b->fds[0], deadline, &type, &f, &why);
            if (r != 1) {
                if (r == 0)
                    record(b, "%s died: the connection to it closed",
                           comm_boot_who(b, 0, w, sizeof w));
                else if (strcmp(why, "timed out") == 0)
                    record(b, "timed out after %g s (DTL_TIMEOUT) at shutdown waiting for the "
                           "other ranks to finish", b->timeout_s);
                else
                    record(b, "the connection to rank 0 failed at shutdown: %s", why);
                comm_boot_failed(b, m, sizeof m);
                return dtl_err_set(err, DTL_ERR_IO, "%s", m);
            }
            if (type == F_FAIL) {
                rd rr = {f.p, f.n, 0, false};
                rd_str(&rr, m, sizeof m);
                free(f.p);
                record(b, "%s", m);
                return dtl_err_set(err, DTL_ERR_IO, "%s", m);
            }
            free(f.p);
            if (type == F_ACK)
                return true;
        }
    }
    struct pollfd *pf = malloc((size_t)b->size * sizeof *pf);
    int *idx = malloc((size_t)b->size * sizeof *idx);
    if (!pf || !idx) {
        free(pf);
        free(idx);
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory at shutdown");
    }
    bool ok = true;
    for (;;) {
        int n = 0;
        for (int j = 1; j < b->size; j++)
            if (!b->bye[j]) {
                idx[n] = j;
                pf[n++] = (struct pollfd){b->fds[j], POLLIN, 0};
            }
        if (n == 0)
            break;
        double left = deadline - comm_now();
        if (left <= 0) {
            char w[96];
            snprintf(m, sizeof m, "timed out after %g s (DTL_TIMEOUT) at shutdown waiting for %s%s "
                     "to finish", b->timeout_s, comm_boot_who(b, idx[0], w, sizeof w),
                     n > 1 ? " and others" : "");
            ok = false;
            break;
        }
        int r = poll(pf, (nfds_t)n, (int)(left * 1000) + 1);
        if (r < 0 && errno != EINTR) {
            snprintf(m, sizeof m, "poll at shutdown: %s", strerror(errno));
            ok = false;
            break;
        }
        for (int k = 0; k < n && ok && r > 0; k++) {
            if (!pf[k].revents)
                continue;
            int j = idx[k];
            uint32_t type;
            bbuf f;
            const char *why = "closed";
            char w[96];
            comm_boot_who(b, j, w, sizeof w);
            int got = recv_frame(b->fds[j], comm_now() + b->timeout_s, &type, &f, &why);
            if (got != 1) {
                atomic_store(&b->closed[j], true);
                if (got == 0)
                    snprintf(m, sizeof m, "%s died: its connection to rank 0 closed", w);
                else
                    snprintf(m, sizeof m, "%s is unreachable at shutdown: %s", w, why);
                ok = false;
                break;
            }
            if (type == F_FAIL) {
                rd rr = {f.p, f.n, 0, false};
                char why2[400];
                rd_str(&rr, why2, sizeof why2);
                snprintf(m, sizeof m, "%s failed: %s", w, why2);
                ok = false;
            } else if (type == F_BYE) {
                b->bye[j] = true;
                deadline = comm_now() + b->timeout_s;
            }
            free(f.p);
        }
        if (!ok)
            break;
    }
    free(pf);
    free(idx);
    if (!ok) {
        if (record(b, "%s", m))
            fail_all(b, m, -1);
        comm_boot_failed(b, m, sizeof m);
        return dtl_err_set(err, DTL_ERR_IO, "%s", m);
    }
    for (int j = 1; j < b->size; j++)
        send_frame(b, b->fds[j], F_ACK, NULL);
    return true;
}

void comm_boot_free(comm_boot *b)
{
    if (!b)
        return;
    stop_watch(b);
    for (int i = 0; b->fds && i < b->size; i++)
        if (b->fds[i] >= 0)
            close(b->fds[i]);
    if (b->wake[0] >= 0)
        close(b->wake[0]);
    if (b->wake[1] >= 0)
        close(b->wake[1]);
    for (int i = 0; b->peers && i < b->size; i++)
        free_sigs(&b->peers[i]);
    for (int i = 0; b->names && i < b->size; i++)
        free(b->names[i]);
    free(b->names);
    free(b->namelens);
    free(b->peers);
    free(b->fds);
    free(b->bye);
    free(b->closed);
    pthread_mutex_destroy(&b->wlock);
    pthread_mutex_destroy(&b->dlock);
    free(b);
}
