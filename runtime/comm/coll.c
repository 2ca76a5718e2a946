/* runtime/comm/coll.c — communicators and collectives over the fabric.
 *
 * Design. A world (what dtl_comm_init makes) owns the rendezvous (comm_boot), the endpoint
 * (comm_fab) and one scratch buffer; sub-communicators share them and hold only their rank
 * map (communicator rank → world rank) and an id. Every message's 64-bit tag says which
 * communicator (11 bits), which collective on it (a 20-bit counter every member advances in
 * step), which step of the algorithm (20 bits) and which segment of a message too large for
 * the provider (8 bits); point-to-point messages count per peer instead (40 bits). Receives
 * are directed (FI_DIRECTED_RECV), so a message can only ever match the one receive meant for
 * it, whatever order the provider delivers in. Sub-communicator ids are agreed at the split:
 * the maximum over the parent of each process's next free id, so no two communicators sharing
 * a process share an id.
 *
 * Algorithms (n ranks, r = own rank): allreduce is a ring — reduce-scatter then all-gather,
 * 2(n-1) steps each moving count/n elements, bandwidth-optimal — above DTL_COMM_SMALL_BYTES,
 * and recursive doubling below (latency-optimal: log2 steps; with p the largest power of two
 * <= n, the first 2(n-p) ranks pair up first so that any n works). In the ring each chunk is
 * reduced in one place and then copied, and recursive doubling combines pairs commutatively
 * (a+b on one side, b+a on the other), so every rank ends with the same bits. Broadcast is a
 * binomial tree, all-gather and reduce-scatter rings, barrier a dissemination (log2 rounds of
 * empty messages). Each step posts its receives, then its sends, then waits for all of them:
 * the wait drives progress, applies the deadline and watches for dead peers.
 *
 * Failures: the first error of a collective is wrapped with what the collective was ("rank
 * 1: allreduce f32[1000] (4.0 kB) for mnist.dtl:12: …") and, when this process met it itself
 * (not news of another rank), reported to every rank through the rendezvous channel.
 */
#include "comm_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG_P2P (1ull << 59)
#define COMM_MAX_ID 2047
#define MAX_SEGS 256
#define BATCH 1024
/* The ring's reduce-scatter steps move their chunk in pieces of this many bytes (more when
 * the chunk would need over MAX_SEGS of them; less when the provider's messages are smaller):
 * see ring_rs_step. */
#define RING_PIECE ((size_t)256 << 10)

typedef struct comm_world {
    comm_boot *boot;          /* NULL for a world of 1 */
    comm_fab *fab;
    int next_id;              /* the next free communicator id in this process */
    int refs;                 /* communicators alive: the world and its sub-communicators */
    bool closed;              /* the world was freed: transport and sockets are gone */
    bool finalized;
    void *scratch;
    size_t scratch_cap;
    void *scratch_desc, *scratch_mr;
} comm_world;

struct dtl_comm {
    comm_world *w;
    bool is_world;
    int rank, size;
    int *wr;                  /* world rank of each rank */
    uint32_t id;
    uint32_t seq;             /* collectives issued on this communicator */
    uint64_t *sent, *recvd;   /* point-to-point messages, per peer */
};

/* ---- small things ------------------------------------------------------------------------- */

int dtl_comm_rank(const dtl_comm *c)
{
    return c->rank;
}

int dtl_comm_size(const dtl_comm *c)
{
    return c->size;
}

int dtl_comm_world_rank(const dtl_comm *c, int r)
{
    return r >= 0 && r < c->size ? c->wr[r] : -1;
}

const char *dtl_comm_provider(const dtl_comm *c)
{
    return c->w->fab ? comm_fab_provider(c->w->fab) : "none";
}

const char *dtl_comm_domain(const dtl_comm *c)
{
    return c->w->fab ? comm_fab_domain(c->w->fab) : "none";
}

static int world_rank_self(const dtl_comm *c)
{
    return c->wr[c->rank];
}

void dtl_comm_set_timeout(dtl_comm *c, double seconds)
{
    if (!(seconds > 0) || c->w->closed)
        return;
    if (c->w->fab)
        comm_fab_set_timeout(c->w->fab, seconds);
    if (c->w->boot)
        comm_boot_set_timeout(c->w->boot, seconds);
}

bool dtl_comm_check(const dtl_comm *c, dtl_err *err)
{
    char m[400];
    if (c->w->closed)
        return dtl_err_set(err, DTL_ERR_USAGE, "rank %d: the world communicator was freed",
                           world_rank_self(c));
    if (c->w->boot && comm_boot_failed(c->w->boot, m, sizeof m))
        return dtl_err_set(err, DTL_ERR_IO, "rank %d: %s", world_rank_self(c), m);
    if (c->w->fab && !comm_fab_ok(c->w->fab, err))
        return false;
    return true;
}

/* The scratch buffer of at least n bytes (grown, registered when the provider asks). */
static void *scratch(comm_world *w, size_t n, void **desc, dtl_err *err)
{
    if (n > w->scratch_cap) {
        comm_fab_mr_free(w->fab, w->scratch_mr);
        w->scratch_mr = w->scratch_desc = NULL;
        free(w->scratch);
        size_t cap = n < 4096 ? 4096 : n;
        w->scratch = malloc(cap);
        w->scratch_cap = w->scratch ? cap : 0;
        if (!w->scratch) {
            dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for %zu bytes of scratch", cap);
            return NULL;
        }
        if (w->fab && !comm_fab_mr(w->fab, w->scratch, cap, &w->scratch_desc, &w->scratch_mr,
                                   err)) {
            free(w->scratch);
            w->scratch = NULL;
            w->scratch_cap = 0;
            return NULL;
        }
    }
    *desc = w->scratch_desc;
    return w->scratch;
}

/* ---- reductions ----------------------------------------------------------------------------- */

/* NaN wins; +0 over -0, so that max(a, b) and max(b, a) have the same bits. */
static float max_f32(float a, float b)
{
    if (a != a)
        return a;
    if (b != b)
        return b;
    if (a == b)
        return signbit(a) ? b : a;
    return a > b ? a : b;
}

static double max_f64(double a, double b)
{
    if (a != a)
        return a;
    if (b != b)
        return b;
    if (a == b)
        return signbit(a) ? b : a;
    return a > b ? a : b;
}

/* The sum and mean loops run on GCC/Clang vector types (8 lanes: two SSE registers, or one
 * AVX register where the compiler may use it), which -O2 does not do by itself for loops of
 * unknown length; each lane computes exactly what the scalar loop would, so the bits are the
 * same. Loads and stores go through memcpy: any alignment. */
typedef float vf32 __attribute__((vector_size(32)));
typedef double vf64 __attribute__((vector_size(32)));

static void add_f32(float *restrict d, const float *restrict s, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        vf32 a0, a1, b0, b1;
        memcpy(&a0, d + i, sizeof a0);
        memcpy(&a1, d + i + 8, sizeof a1);
        memcpy(&b0, s + i, sizeof b0);
        memcpy(&b1, s + i + 8, sizeof b1);
        a0 += b0;
        a1 += b1;
        memcpy(d + i, &a0, sizeof a0);
        memcpy(d + i + 8, &a1, sizeof a1);
    }
    for (; i < n; i++)
        d[i] += s[i];
}

static void add_f64(double *restrict d, const double *restrict s, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        vf64 a0, a1, b0, b1;
        memcpy(&a0, d + i, sizeof a0);
        memcpy(&a1, d + i + 4, sizeof a1);
        memcpy(&b0, s + i, sizeof b0);
        memcpy(&b1, s + i + 4, sizeof b1);
        a0 += b0;
        a1 += b1;
        memcpy(d + i, &a0, sizeof a0);
        memcpy(d + i + 4, &a1, sizeof a1);
    }
    for (; i < n; i++)
        d[i] += s[i];
}

/* dst = dst op src, elementwise (dst and src do not overlap). */
static void reduce_into(void *restrict dst, const void *restrict src, size_t n, dtl_dtype t,
                        dtl_comm_op op)
{
    if (t == DTL_DTYPE_F32) {
        float *d = dst;
        const float *s = src;
        if (op == DTL_COMM_MAX)
            for (size_t i = 0; i < n; i++)
                d[i] = max_f32(d[i], s[i]);
        else
            add_f32(d, s, n);
    } else {
        double *d = dst;
        const double *s = src;
        if (op == DTL_COMM_MAX)
            for (size_t i = 0; i < n; i++)
                d[i] = max_f64(d[i], s[i]);
        else
            add_f64(d, s, n);
    }
}

static void scale_mean(void *buf, size_t n, dtl_dtype t, int size)
{
    size_t i = 0;
    if (t == DTL_DTYPE_F32) {
        float *d = buf, k = (float)size;
        vf32 kv = {k, k, k, k, k, k, k, k};
        for (; i + 8 <= n; i += 8) {
            vf32 a;
            memcpy(&a, d + i, sizeof a);
            a /= kv;
            memcpy(d + i, &a, sizeof a);
        }
        for (; i < n; i++)
            d[i] /= k;
    } else {
        double *d = buf, k = (double)size;
        vf64 kv = {k, k, k, k};
        for (; i + 4 <= n; i += 4) {
            vf64 a;
            memcpy(&a, d + i, sizeof a);
            a /= kv;
            memcpy(d + i, &a, sizeof a);
        }
        for (; i < n; i++)
            d[i] /= k;
    }
}

/* ---- one collective in progress ----------------------------------------------------------- */

typedef struct coll {
    dtl_comm *c;
    const char *name;
    size_t count;
    dtl_dtype t;
    const char *label;
    uint64_t base;            /* the tag without step and segment */
    bool p2p;
    dtl_err *err;
    void *mr[4];
    int nmr;
    int reqs[BATCH];
    int nreq;
} coll;

const char *comm_what(char *buf, size_t cap, const char *name, dtl_dtype t, size_t count,
                      const char *label)
{
    char b[32];
    snprintf(buf, cap, "%s %s[%zu] (%s)%s%s", name, dtl_dtype_name(t), count,
             comm_bytes(b, sizeof b, count * dtl_dtype_size(t)), label ? " for " : "",
             label ? label : "");
    return buf;
}

static const char *coll_what(const coll *o, char *buf, size_t cap)
{
    return comm_what(buf, cap, o->name, o->t, o->count, o->label);
}

/* Wraps the error now in o->err with what the collective was; reports a failure this process
 * met itself to the other ranks. Returns false. */
static bool coll_fail(coll *o)
{
    comm_world *w = o->c->w;
    char what[200], inner[512], m[400];
    coll_what(o, what, sizeof what);
    snprintf(inner, sizeof inner, "%s", o->err->msg);
    dtl_err_kind kind = o->err->kind;
    if (w->boot && !comm_boot_failed(w->boot, m, sizeof m)) {
        char rep[720];
        snprintf(rep, sizeof rep, "%s: %s", what, inner);
        comm_boot_report(w->boot, rep);
    }
    for (int i = 0; i < o->nmr; i++)
        comm_fab_mr_free(w->fab, o->mr[i]);
    o->nmr = 0;
    if (w->boot)
        comm_boot_done(w->boot, o);
    return dtl_err_set(o->err, kind, "rank %d: %s: %s", world_rank_self(o->c), what, inner);
}

static bool coll_begin(coll *o, dtl_comm *c, const char *name, size_t count, dtl_dtype t,
                       const char *label, dtl_err *err)
{
    memset(o, 0, sizeof *o);
    o->c = c;
    o->name = name;
    o->count = count;
    o->t = t;
    o->label = label;
    o->err = err;
    o->base = (uint64_t)c->id << 48 | (uint64_t)(c->seq & 0xfffff) << 28;
    c->seq++;
    if (!dtl_comm_check(c, err)) {
        /* Already failed: say what was being started, with the original news. */
        char inner[512], what[200];
        snprintf(inner, sizeof inner, "%s", err->msg);
        const char *m = inner;
        char pre[32];
        snprintf(pre, sizeof pre, "rank %d: ", world_rank_self(c));
        if (strncmp(m, pre, strlen(pre)) == 0)
            m += strlen(pre);
        return dtl_err_set(err, DTL_ERR_IO, "rank %d: %s: %s", world_rank_self(c),
                           coll_what(o, what, sizeof what), m);
    }
    if (c->w->boot)
        comm_boot_doing(c->w->boot, o, name, t, count, label);
    return true;
}

static bool coll_usage(coll *o, const char *fmt, const char *a)
{
    char what[200];
    if (o->c->w->boot)
        comm_boot_done(o->c->w->boot, o);
    return dtl_err_set(o->err, DTL_ERR_USAGE, "%s: %s%s", coll_what(o, what, sizeof what), fmt,
                       a ? a : "");
}

/* Registers a caller's buffer when the provider asks; its descriptor (or NULL). */
static bool coll_reg(coll *o, const void *buf, size_t bytes, void **desc)
{
    *desc = NULL;
    if (!o->c->w->fab)
        return true;
    void *mr;
    if (!comm_fab_mr(o->c->w->fab, buf, bytes, desc, &mr, o->err))
        return coll_fail(o);
    if (mr)
        o->mr[o->nmr++] = mr;
    return true;
}

static bool coll_end(coll *o)
{
    for (int i = 0; i < o->nmr; i++)
        comm_fab_mr_free(o->c->w->fab, o->mr[i]);
    o->nmr = 0;
    if (o->c->w->boot)
        comm_boot_done(o->c->w->boot, o);
    return true;
}

static bool coll_flush(coll *o)
{
    if (o->nreq == 0)
        return true;
    bool ok = comm_fab_waitall(o->c->w->fab, o->reqs, o->nreq, o->err);
    o->nreq = 0;
    return ok ? true : coll_fail(o);
}

/* Posts one message (as up to MAX_SEGS segments) of step `step` to or from communicator rank
 * peer. */
static bool coll_post(coll *o, bool send, int step, int peer, const void *buf, size_t bytes,
                      void *desc)
{
    comm_fab *f = o->c->w->fab;
    size_t max = comm_fab_max_msg(f);
    size_t nseg = bytes == 0 ? 1 : (bytes - 1) / max + 1;
    if (nseg > MAX_SEGS) {
        dtl_err_set(o->err, DTL_ERR_USAGE, "a message of %zu bytes needs more than %d segments of "
                    "the provider's %zu", bytes, MAX_SEGS, max);
        return coll_fail(o);
    }
    if (step < 0 || step > 0xfffff) {
        dtl_err_set(o->err, DTL_ERR_INTERNAL, "step %d out of range", step);
        return coll_fail(o);
    }
    int wpeer = o->c->wr[peer];
    for (size_t s = 0; s < nseg; s++) {
        if (o->nreq == BATCH && !coll_flush(o))
            return false;
        size_t off = s * max, len = bytes - off < max ? bytes - off : max;
        uint64_t tag = o->p2p ? o->base | s : o->base | (uint64_t)step << 8 | s;
        const char *p = (const char *)buf + (bytes ? off : 0);
        bool ok = send ? comm_fab_isend(f, wpeer, p, len, desc, tag, &o->reqs[o->nreq], o->err)
                       : comm_fab_irecv(f, wpeer, (void *)p, len, desc, tag, &o->reqs[o->nreq],
                                        o->err);
        if (!ok)
            return coll_fail(o);
        o->nreq++;
    }
    return true;
}

/* Posts piece k (bytes <= the provider's largest message) of a message of step `step`: one
 * provider message whose tag carries k where coll_post's carry the segment. Its request is
 * *req when req is not NULL, else it joins o->reqs (for coll_flush). */
static bool coll_post_piece(coll *o, bool send, int step, int k, int peer, const void *buf,
                            size_t bytes, void *desc, int *req)
{
    comm_fab *f = o->c->w->fab;
    if (!req) {
        if (o->nreq == BATCH && !coll_flush(o))
            return false;
        req = &o->reqs[o->nreq++];
    }
    uint64_t tag = o->base | (uint64_t)step << 8 | (uint64_t)k;
    int wpeer = o->c->wr[peer];
    bool ok = send ? comm_fab_isend(f, wpeer, buf, bytes, desc, tag, req, o->err)
                   : comm_fab_irecv(f, wpeer, (void *)buf, bytes, desc, tag, req, o->err);
    return ok ? true : coll_fail(o);
}

/* One step: receive from `from` (or -1) and send to `to` (or -1), then wait for both. */
static bool coll_xchg(coll *o, int step, int to, const void *sbuf, size_t sbytes, void *sdesc,
                      int from, void *rbuf, size_t rbytes, void *rdesc)
{
    if (from >= 0 && !coll_post(o, false, step, from, rbuf, rbytes, rdesc))
        return false;
    if (to >= 0 && !coll_post(o, true, step, to, sbuf, sbytes, sdesc))
        return false;
    return coll_flush(o);
}

/* Chunk i of count elements split over n: [off, off + len). */
static void chunk(size_t count, int n, int i, size_t *off, size_t *len)
{
    size_t q = count / (size_t)n, r = count % (size_t)n, u = (size_t)i;
    *off = u * q + (u < r ? u : r);
    *len = q + (u < r ? 1 : 0);
}

/* ---- allreduce ---------------------------------------------------------------------------- */

/* The piece size for a ring message of `bytes`: RING_PIECE, whole elements, at most MAX_SEGS
 * pieces, each at most the provider's largest message; 0 when that cannot be (then the step
 * goes whole, split by coll_post). */
static size_t ring_piece(const coll *o, size_t bytes)
{
    size_t es = dtl_dtype_size(o->t), max = comm_fab_max_msg(o->c->w->fab);
    size_t piece = RING_PIECE, least = (bytes + MAX_SEGS - 1) / MAX_SEGS;
    if (piece < least)
        piece = least;
    piece = (piece + es - 1) / es * es;
    return piece <= max ? piece : 0;
}

/* One reduce-scatter step of the ring: send sbytes from sbuf to `next`, receive rbytes from
 * `prev` into tmp and reduce them into dst. Pipelined: the message goes as pieces (the
 * receiver's pieces are the sender's: both cut the same chunk) and each piece is reduced as
 * soon as it is in, while it is still in the cache (shm's copy is done by the receiver as it
 * polls, piece by piece; tcp keeps receiving the next piece meanwhile). Receives run two
 * pieces ahead of the one awaited and sends as far: posted before waiting, so a provider that
 * holds back sends no receive matches yet (shm without cross-memory attach copies through
 * bounded buffers) always has somewhere to deliver, and no send waits on a receive that its
 * peer would post only after its own sends. own NULL: dst holds this rank's share already and
 * the pieces are reduced into it; else dst = own + the received, piece by piece (dst must
 * not overlap sbuf). */
static bool ring_rs_step(coll *o, int step, int next, const char *sbuf, size_t sbytes,
                         void *sdesc, int prev, char *tmp, void *tdesc, char *dst, size_t rbytes,
                         dtl_comm_op op, const char *own)
{
    size_t es = dtl_dtype_size(o->t), ps = ring_piece(o, sbytes), pr = ring_piece(o, rbytes);
    if (ps == 0 || pr == 0) {
        if (!coll_xchg(o, step, next, sbuf, sbytes, sdesc, prev, tmp, rbytes, tdesc))
            return false;
        if (own && rbytes)
            memcpy(dst, own, rbytes);
        reduce_into(dst, tmp, rbytes / es, o->t, op);
        return true;
    }
    size_t ns = sbytes ? (sbytes + ps - 1) / ps : 1, nr = rbytes ? (rbytes + pr - 1) / pr : 1;
    comm_fab *f = o->c->w->fab;
    int rq[3];                /* the receives of pieces k, k+1, k+2 at rq[k % 3] … */
    size_t posted_r = 0, posted_s = 0;
    for (size_t k = 0; k < nr; k++) {
        for (; posted_r < nr && posted_r <= k + 2; posted_r++) {
            size_t off = posted_r * pr, len = rbytes - off < pr ? rbytes - off : pr;
            if (!coll_post_piece(o, false, step, (int)posted_r, prev, tmp + (rbytes ? off : 0),
                                 len, tdesc, &rq[posted_r % 3]))
                return false;
        }
        for (; posted_s < ns && posted_s <= k + 2; posted_s++) {
            size_t off = posted_s * ps, len = sbytes - off < ps ? sbytes - off : ps;
            if (!coll_post_piece(o, true, step, (int)posted_s, next, sbuf + (sbytes ? off : 0),
                                 len, sdesc, NULL))
                return false;
        }
        if (!comm_fab_waitall(f, &rq[k % 3], 1, o->err))
            return coll_fail(o);
        size_t off = k * pr, len = rbytes - off < pr ? rbytes - off : pr;
        if (own && len)
            memcpy(dst + off, own + off, len);
        reduce_into(dst + off, tmp + off, len / es, o->t, op);
    }
    for (; posted_s < ns; posted_s++) {
        size_t off = posted_s * ps, len = sbytes - off < ps ? sbytes - off : ps;
        if (!coll_post_piece(o, true, step, (int)posted_s, next, sbuf + off, len, sdesc, NULL))
            return false;
    }
    return coll_flush(o);
}

static bool allreduce_ring(coll *o, char *buf, void *desc, dtl_comm_op op)
{
    dtl_comm *c = o->c;
    int n = c->size, r = c->rank, next = (r + 1) % n, prev = (r + n - 1) % n;
    size_t es = dtl_dtype_size(o->t), off, len, roff, rlen;
    chunk(o->count, n, 0, &off, &len);
    void *sdesc;
    char *tmp = scratch(c->w, (len ? len : 1) * es, &sdesc, o->err);
    if (!tmp)
        return coll_fail(o);
    for (int s = 0; s < n - 1; s++) {
        chunk(o->count, n, ((r - s) % n + n) % n, &off, &len);
        chunk(o->count, n, ((r - s - 1) % n + n) % n, &roff, &rlen);
        if (!ring_rs_step(o, s, next, buf + off * es, len * es, desc, prev, tmp, sdesc,
                          buf + roff * es, rlen * es, op, NULL))
            return false;
    }
    /* Rank r now holds chunk r+1 reduced over all ranks. */
    chunk(o->count, n, (r + 1) % n, &off, &len);
    if (op == DTL_COMM_MEAN)
        scale_mean(buf + off * es, len, o->t, n);
    for (int s = 0; s < n - 1; s++) {
        chunk(o->count, n, ((r + 1 - s) % n + n) % n, &off, &len);
        chunk(o->count, n, ((r - s) % n + n) % n, &roff, &rlen);
        if (!coll_xchg(o, n - 1 + s, next, buf + off * es, len * es, desc, prev, buf + roff * es,
                       rlen * es, desc))
            return false;
    }
    return true;
}

static bool allreduce_rd(coll *o, char *buf, void *desc, dtl_comm_op op)
{
    dtl_comm *c = o->c;
    int n = c->size, r = c->rank, p = 1;
    while (p * 2 <= n)
        p *= 2;
    int rem = n - p, step = 0;
    size_t bytes = o->count * dtl_dtype_size(o->t);
    void *sdesc;
    char *tmp = scratch(c->w, bytes ? bytes : 1, &sdesc, o->err);
    if (!tmp)
        return coll_fail(o);
    /* Fold the first 2*rem ranks in pairs: the even one hands its data to the odd one. */
    int nr;
    if (r < 2 * rem) {
        if (r % 2 == 0) {
            if (!coll_xchg(o, step, r + 1, buf, bytes, desc, -1, NULL, 0, NULL))
                return false;
            nr = -1;
        } else {
            if (!coll_xchg(o, step, -1, NULL, 0, NULL, r - 1, tmp, bytes, sdesc))
                return false;
            reduce_into(buf, tmp, o->count, o->t, op);
            nr = r / 2;
        }
    } else {
        nr = r - rem;
    }
    step++;
    for (int mask = 1; mask < p; mask <<= 1, step++) {
        if (nr < 0)
            continue;
        int pn = nr ^ mask, pr = pn < rem ? 2 * pn + 1 : pn + rem;
        if (!coll_xchg(o, step, pr, buf, bytes, desc, pr, tmp, bytes, sdesc))
            return false;
        reduce_into(buf, tmp, o->count, o->t, op);
    }
    if (op == DTL_COMM_MEAN && nr >= 0)
        scale_mean(buf, o->count, o->t, n);
    /* Hand the result back to the folded ranks. */
    if (r < 2 * rem) {
        if (r % 2 == 1)
            return coll_xchg(o, step, r - 1, buf, bytes, desc, -1, NULL, 0, NULL);
        return coll_xchg(o, step, -1, NULL, 0, NULL, r + 1, buf, bytes, desc);
    }
    return true;
}

static bool reducible(coll *o, dtl_comm_op op)
{
    if (o->t != DTL_DTYPE_F32 && o->t != DTL_DTYPE_F64)
        return coll_usage(o, "reductions take f32 or f64", NULL);
    if (op != DTL_COMM_SUM && op != DTL_COMM_MEAN && op != DTL_COMM_MAX)
        return coll_usage(o, "unknown reduction", NULL);
    return true;
}

bool dtl_comm_allreduce_algo(dtl_comm *c, void *buf, size_t count, dtl_dtype t, dtl_comm_op op,
                             dtl_comm_algo algo, const char *label, dtl_err *err)
{
    coll o;
    if (!coll_begin(&o, c, "allreduce", count, t, label, err) || !reducible(&o, op))
        return false;
    if (c->size == 1 || count == 0)
        return true;   /* the mean over one rank is the value itself */
    void *desc;
    if (!coll_reg(&o, buf, count * dtl_dtype_size(t), &desc))
        return false;
    if (algo == DTL_COMM_ALGO_AUTO)
        algo = count * dtl_dtype_size(t) <= DTL_COMM_SMALL_BYTES || count < (size_t)c->size
                   ? DTL_COMM_ALGO_RD
                   : DTL_COMM_ALGO_RING;
    bool ok = algo == DTL_COMM_ALGO_RING ? allreduce_ring(&o, buf, desc, op)
                                         : allreduce_rd(&o, buf, desc, op);
    return ok && coll_end(&o);
}

bool dtl_comm_allreduce(dtl_comm *c, void *buf, size_t count, dtl_dtype t, dtl_comm_op op,
                        const char *label, dtl_err *err)
{
    return dtl_comm_allreduce_algo(c, buf, count, t, op, DTL_COMM_ALGO_AUTO, label, err);
}

/* ---- the others ----------------------------------------------------------------------------- */

bool dtl_comm_broadcast(dtl_comm *c, void *buf, size_t count, dtl_dtype t, int root,
                        const char *label, dtl_err *err)
{
    coll o;
    if (!coll_begin(&o, c, "broadcast", count, t, label, err))
        return false;
    if (root < 0 || root >= c->size) {
        char rs[32];
        snprintf(rs, sizeof rs, "%d", root);
        return coll_usage(&o, "no such root: ", rs);
    }
    if (c->size == 1 || count == 0)
        return true;
    size_t bytes = count * dtl_dtype_size(t);
    void *desc;
    if (!coll_reg(&o, buf, bytes, &desc))
        return false;
    int n = c->size, vr = (c->rank - root + n) % n, mask = 1, step = 0;
    /* Binomial tree over ranks relative to root: receive from the parent (vr - lowest bit)… */
    while (mask < n) {
        if (vr & mask) {
            if (!coll_xchg(&o, step, -1, NULL, 0, NULL, ((vr - mask) + root) % n, buf, bytes,
                           desc))
                return false;
            break;
        }
        mask <<= 1;
        step++;
    }
    /* …then send to the children vr + mask for every lower bit. */
    mask >>= 1;
    step--;
    for (; mask > 0; mask >>= 1, step--)
        if (vr + mask < n && !coll_post(&o, true, step, (vr + mask + root) % n, buf, bytes, desc))
            return false;
    return coll_flush(&o) && coll_end(&o);
}

bool dtl_comm_allgather(dtl_comm *c, const void *send, void *recv, size_t count, dtl_dtype t,
                        const char *label, dtl_err *err)
{
    coll o;
    if (!coll_begin(&o, c, "allgather", count, t, label, err))
        return false;
    size_t es = dtl_dtype_size(t), blk = count * es;
    int n = c->size, r = c->rank;
    char *rb = recv;
    if (rb + (size_t)r * blk != send)
        memmove(rb + (size_t)r * blk, send, blk);
    if (n == 1 || count == 0)
        return true;
    void *desc;
    if (!coll_reg(&o, recv, (size_t)n * blk, &desc))
        return false;
    for (int s = 0; s < n - 1; s++) {
        int sb = ((r - s) % n + n) % n, qb = ((r - s - 1) % n + n) % n;
        if (!coll_xchg(&o, s, (r + 1) % n, rb + (size_t)sb * blk, blk, desc, (r + n - 1) % n,
                       rb + (size_t)qb * blk, blk, desc))
            return false;
    }
    return coll_end(&o);
}

bool dtl_comm_reduce_scatter(dtl_comm *c, const void *send, void *recv, size_t count,
                             dtl_dtype t, dtl_comm_op op, const char *label, dtl_err *err)
{
    coll o;
    if (!coll_begin(&o, c, "reduce_scatter", count, t, label, err) || !reducible(&o, op))
        return false;
    size_t es = dtl_dtype_size(t), blk = count * es;
    int n = c->size, r = c->rank;
    const char *sb = send;
    if (n == 1 || count == 0) {
        memmove(recv, sb + (size_t)r * blk, blk);
        return true;
    }
    void *sdesc, *tdesc;
    if (!coll_reg(&o, send, (size_t)n * blk, &sdesc))
        return false;
    /* tmp, then (n > 2) two partial sums, alternately received into and sent from */
    char *tmp = scratch(c->w, (n > 2 ? 3 : 1) * blk, &tdesc, err);
    if (!tmp)
        return coll_fail(&o);
    /* Step s sends the partial sum of block r-s-1 (at s = 0: this rank's own share of it) and
     * receives that of block r-s-2, adding this rank's share (pipelined: ring_rs_step); after
     * n-1 steps it holds block r, in recv. */
    for (int s = 0; s < n - 1; s++) {
        int b_send = ((r - s - 1) % n + 2 * n) % n, b_recv = ((r - s - 2) % n + 2 * n) % n;
        const char *out = s == 0 ? sb + (size_t)b_send * blk
                                 : tmp + (size_t)(1 + (s - 1) % 2) * blk;
        char *dst = s == n - 2 ? (char *)recv : tmp + (size_t)(1 + s % 2) * blk;
        if (!ring_rs_step(&o, s, (r + 1) % n, out, blk, s == 0 ? sdesc : tdesc, (r + n - 1) % n,
                          tmp, tdesc, dst, blk, op, sb + (size_t)b_recv * blk))
            return false;
    }
    if (op == DTL_COMM_MEAN)
        scale_mean(recv, count, t, n);
    return coll_end(&o);
}

bool dtl_comm_barrier(dtl_comm *c, const char *label, dtl_err *err)
{
    coll o;
    if (!coll_begin(&o, c, "barrier", 0, DTL_DTYPE_F32, label, err))
        return false;
    int n = c->size, r = c->rank;
    for (int k = 0, d = 1; d < n; k++, d <<= 1)
        if (!coll_xchg(&o, k, (r + d) % n, NULL, 0, NULL, (r - d + n) % n, NULL, 0, NULL))
            return false;
    return true;
}

static bool p2p(dtl_comm *c, bool send, void *buf, size_t count, dtl_dtype t, int peer,
                const char *label, dtl_err *err)
{
    coll o;
    if (!coll_begin(&o, c, send ? "send" : "recv", count, t, label, err))
        return false;
    if (peer < 0 || peer >= c->size || peer == c->rank) {
        char rs[32];
        snprintf(rs, sizeof rs, "%d", peer);
        return coll_usage(&o, peer == c->rank ? "a rank cannot message itself: peer " :
                                                "no such peer: ", rs);
    }
    c->seq--;   /* point to point does not advance the collective counter */
    uint64_t *k = send ? &c->sent[peer] : &c->recvd[peer];
    o.p2p = true;
    o.base = TAG_P2P | (uint64_t)c->id << 48 | (*k & 0xffffffffffull) << 8;
    (*k)++;
    size_t bytes = count * dtl_dtype_size(t);
    void *desc;
    if (!coll_reg(&o, buf, bytes, &desc))
        return false;
    if (!coll_post(&o, send, 0, peer, buf, bytes, desc) || !coll_flush(&o))
        return false;
    return coll_end(&o);
}

bool dtl_comm_send(dtl_comm *c, const void *buf, size_t count, dtl_dtype t, int peer,
                   const char *label, dtl_err *err)
{
    return p2p(c, true, (void *)buf, count, t, peer, label, err);
}

bool dtl_comm_recv(dtl_comm *c, void *buf, size_t count, dtl_dtype t, int peer,
                   const char *label, dtl_err *err)
{
    return p2p(c, false, buf, count, t, peer, label, err);
}

/* ---- communicators ------------------------------------------------------------------------ */

static dtl_comm *comm_new(comm_world *w, int rank, int size, dtl_err *err)
{
    dtl_comm *c = calloc(1, sizeof *c);
    if (c) {
        c->w = w;
        c->rank = rank;
        c->size = size;
        c->wr = calloc((size_t)size, sizeof *c->wr);
        c->sent = calloc((size_t)size, sizeof *c->sent);
        c->recvd = calloc((size_t)size, sizeof *c->recvd);
        if (c->wr && c->sent && c->recvd)
            return c;
        free(c->wr);
        free(c->sent);
        free(c->recvd);
        free(c);
    }
    dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for a communicator");
    return NULL;
}

typedef struct member {
    int64_t key;
    int rank;
} member;

static int member_cmp(const void *a, const void *b)
{
    const member *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->rank - y->rank;
}

bool dtl_comm_split(dtl_comm *c, int color, int key, dtl_comm **out, dtl_err *err)
{
    *out = NULL;
    int n = c->size;
    int64_t mine[3] = {color < 0 ? -1 : color, key, c->w->next_id};
    int64_t *all = malloc((size_t)n * sizeof mine);
    member *m = malloc((size_t)n * sizeof *m);
    if (!all || !m) {
        free(all);
        free(m);
        return dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for a split");
    }
    bool ok = dtl_comm_allgather(c, mine, all, 3, DTL_DTYPE_I64, "dtl_comm_split", err);
    int64_t id = 0;
    int k = 0, me = -1;
    for (int i = 0; ok && i < n; i++) {
        if (all[3 * i + 2] > id)
            id = all[3 * i + 2];
        if (color >= 0 && all[3 * i] == color) {
            if (i == c->rank)
                me = k;
            m[k++] = (member){all[3 * i + 1], i};
        }
    }
    if (ok && id > COMM_MAX_ID)
        ok = dtl_err_set(err, DTL_ERR_USAGE, "rank %d: dtl_comm_split: more than %d communicators",
                         world_rank_self(c), COMM_MAX_ID);
    if (ok) {
        c->w->next_id = (int)id + 1;
        if (color >= 0) {
            qsort(m, (size_t)k, sizeof *m, member_cmp);
            for (int i = 0; i < k; i++)
                if (m[i].rank == c->rank)
                    me = i;
            dtl_comm *s = comm_new(c->w, me, k, err);
            if (!s) {
                ok = false;
            } else {
                for (int i = 0; i < k; i++)
                    s->wr[i] = c->wr[m[i].rank];
                s->id = (uint32_t)id;
                c->w->refs++;
                *out = s;
            }
        }
    }
    free(all);
    free(m);
    return ok;
}

/* Opens the transport (see dtl_comm_init). */
static bool open_fabric(comm_world *w, const dtl_comm_env *env, dtl_err *err)
{
    comm_boot *b = w->boot;
    char prov[64] = "";
    bool multihost = comm_boot_multihost(b);
    struct sockaddr_storage ss;
    socklen_t sl;
    bool have = comm_boot_local_addr(b, &ss, &sl);
    comm_fab_args a = {NULL, env->iface, have ? (struct sockaddr *)&ss : NULL, false,
                       env->timeout_s};
    if (env->rank == 0) {
        bool fallback = false;
        if (env->provider[0]) {
            a.provider = env->provider_is_fi ? NULL : env->provider;
        } else {
            bool local = !multihost && env->size <= 256;   /* shm serves 256 peers */
            a.provider = local ? "shm" : "tcp;ofi_rxm";
            fallback = local;
        }
        a.avoid_loopback = multihost;
        w->fab = comm_fab_open(&a, err);
        if (!w->fab && fallback) {
            a.provider = "tcp;ofi_rxm";
            w->fab = comm_fab_open(&a, err);
        }
        if (!w->fab) {
            char m[600];
            snprintf(m, sizeof m, "could not open the transport: %s", err->msg);
            comm_boot_report(b, m);
            return dtl_err_set(err, DTL_ERR_IO, "rank 0: %s", m);
        }
        snprintf(prov, sizeof prov, "%s", comm_fab_provider(w->fab));
        if (!comm_boot_provider(b, prov, sizeof prov, &multihost, err))
            return false;
    } else {
        if (!comm_boot_provider(b, prov, sizeof prov, &multihost, err))
            return false;
        a.provider = prov;
        a.avoid_loopback = multihost;
        w->fab = comm_fab_open(&a, err);
        if (!w->fab) {
            char m[600];
            snprintf(m, sizeof m, "could not open the transport: %s", err->msg);
            comm_boot_report(b, m);
            return dtl_err_set(err, DTL_ERR_IO, "rank %d: %s", env->rank, m);
        }
    }
    const void *name;
    size_t len;
    const void *const *names;
    const size_t *lens;
    if (!comm_fab_name(w->fab, &name, &len, err) ||
        !comm_boot_names(b, name, len, &names, &lens, err))
        return false;
    if (!comm_fab_insert(w->fab, env->size, env->rank, names, lens, err)) {
        comm_boot_report(b, err->msg);
        return false;
    }
    comm_fab_set_watch(w->fab, b);
    comm_fab_set_local_ranks(w->fab, comm_boot_local_ranks(b));
    return comm_boot_watch(b, err);
}

dtl_comm *dtl_comm_init(const dtl_comm_env *env, const dtl_comm_opts *opts, dtl_err *err)
{
    if (env->size < 1 || env->size > DTL_COMM_MAX_WORLD || env->rank < 0 ||
        env->rank >= env->size) {
        dtl_err_set(err, DTL_ERR_USAGE, "dtl_comm_init: rank %d of a world of %d", env->rank,
                    env->size);
        return NULL;
    }
    comm_world *w = calloc(1, sizeof *w);
    if (!w) {
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory for a communicator");
        return NULL;
    }
    w->next_id = 1;
    w->refs = 1;
    dtl_comm *c = comm_new(w, env->rank, env->size, err);
    if (!c) {
        free(w);
        return NULL;
    }
    c->is_world = true;
    for (int i = 0; i < env->size; i++)
        c->wr[i] = i;
    if (env->size == 1)
        return c;
    w->boot = comm_boot_hello(env, opts, err);
    if (!w->boot || !open_fabric(w, env, err) || !dtl_comm_barrier(c, "dtl_comm_init", err)) {
        w->finalized = true;   /* nothing to tell: the others know (or will time out) */
        dtl_comm_free(c);
        return NULL;
    }
    return c;
}

bool dtl_comm_finalize(dtl_comm *c, dtl_err *err)
{
    if (!c->is_world)
        return dtl_err_set(err, DTL_ERR_USAGE, "dtl_comm_finalize takes the world, not a "
                           "sub-communicator");
    if (c->w->finalized || !c->w->boot) {
        c->w->finalized = true;
        return true;
    }
    if (!dtl_comm_check(c, err))
        return false;
    if (!comm_boot_finish(c->w->boot, err)) {
        char m[512];
        snprintf(m, sizeof m, "%s", err->msg);
        return dtl_err_set(err, DTL_ERR_IO, "rank %d: shutdown: %s", c->rank, m);
    }
    c->w->finalized = true;
    return true;
}

static void comm_release(dtl_comm *c)
{
    free(c->wr);
    free(c->sent);
    free(c->recvd);
    free(c);
}

void dtl_comm_free(dtl_comm *c)
{
    if (!c)
        return;
    comm_world *w = c->w;
    if (c->is_world && !w->closed) {
        if (w->boot && !w->finalized)
            comm_boot_report(w->boot, "it left without finishing (dtl_comm_free before "
                                      "dtl_comm_finalize)");
        if (w->fab) {
            comm_fab_mr_free(w->fab, w->scratch_mr);
            comm_fab_close(w->fab);   /* the endpoint first: no transfer touches memory after */
        }
        comm_boot_free(w->boot);
        w->fab = NULL;
        w->boot = NULL;
        w->scratch_mr = w->scratch_desc = NULL;
        w->closed = true;
    }
    comm_release(c);
    if (--w->refs == 0) {
        free(w->scratch);
        free(w);
    }
}

void dtl_comm_abort(dtl_comm *c, const char *reason)
{
    if (!c)
        return;
    if (c->w->boot && !c->w->finalized)
        comm_boot_report(c->w->boot, reason && *reason ? reason : "it aborted");
    c->w->finalized = true;
    dtl_comm_free(c);
}
