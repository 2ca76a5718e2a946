/* runtime/comm/ddp.c — gradient buckets averaged by a comm thread while backward still runs.
 *
 * Design. dtl_ddp_new plans the buckets (dtl_ddp_plan, a pure function of the tensor list),
 * gives every bucket a 64-byte aligned region of one buffer, with each of its tensors at a
 * fixed element offset, and — in a world of more than one rank — starts one comm thread.
 * Everything the two threads share lives under one mutex with one condition variable:
 *   in_step     set by begin, cleared by finish (the comm thread owns the communicator while
 *               it is set; finish returns only once the thread is idle, so the caller's next
 *               use of the communicator happens after the thread's last, through the mutex);
 *   missing[b]  tensors of bucket b not yet announced this step (ready decrements it after
 *               copying the tensor in, under the mutex: the copy happens before the thread's
 *               allreduce reads it);
 *   next        the bucket the thread does next (buckets go strictly in order, so every rank
 *               issues the same collectives in the same order);
 *   busy        the thread is inside an allreduce; stop: start no more buckets (a failure, a
 *               finish that came too early, free).
 * The thread sleeps on the condition variable until bucket `next` is complete, allreduces it
 * without the lock, and signals. finish waits until next == nb (or the thread stopped after a
 * failure), timing that wait (dtl_ddp_wait_seconds: communication the backward pass did not
 * hide). Misuse from the caller's thread (an index out of range, a tensor announced twice) is
 * remembered by ready, which returns void, and reported by finish as DTL_ERR_INTERNAL. A
 * world of one starts no thread: ready copies, finish checks that everything came (the mean
 * over one rank is the value itself).
 *
 * Sharded buckets (the ZeRO-1 update) have a region of world × part elements (the padding
 * stays zero: ready writes only its tensors' ranges) and, in a world of several, a region of
 * `part` elements in a second buffer, `shard`, that the reduce-scatter writes: this rank's
 * part of the mean. dtl_ddp_grad of a sharded tensor points there; dtl_ddp_gather then
 * all-gathers the ranks' updated parts, straight into the caller's tensor when the bucket is
 * one tensor of world × part elements, else through the bucket's region (the gradients in it
 * are spent by then) and copied out. The comm thread's CPU time (CLOCK_THREAD_CPUTIME_ID
 * around each collective) is summed per step for --timings. */
#include "ddp.h"
#include "comm_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { DDP_ALIGN = 64, DDP_LABEL = 400, DDP_LABEL_NAMES = 6 };

struct dtl_ddp {
    dtl_comm *c;
    int world, rank;
    size_t n, nb;
    dtl_ddp_tensor *t;         /* copied, names too */
    char *names;
    dtl_ddp_bucket *b;
    size_t *bucket_of;         /* per tensor */
    size_t *offset;            /* per tensor: byte offset in mem */
    size_t *boff;              /* per bucket: byte offset in mem */
    size_t *soff;              /* per bucket: byte offset in shard (sharded buckets) */
    char (*label)[DDP_LABEL];  /* per bucket: "gradients of fc2.b, fc2.w @ m.dtl:25" */
    unsigned char *mem;
    unsigned char *shard;      /* this rank's parts of the sharded buckets (world > 1) */
    bool threaded;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    bool *announced;           /* per tensor, this step */
    size_t *missing;           /* per bucket, this step */
    size_t next;
    bool in_step, busy, stop, quit;
    bool overlap;              /* buckets start as they fill (else once finish is called) */
    bool finishing;            /* finish was called this step */
    bool failed;               /* an allreduce failed: err holds the comm layer's message */
    dtl_err err;
    double comm_cpu;           /* the comm thread's CPU seconds in this step's collectives */
    /* the caller's thread only */
    bool misuse;               /* ready with a bad index or twice: reported by finish */
    char misuse_msg[300];
    bool broken;               /* a finish failed: only free is useful */
    dtl_err broken_err;
    double wait_s;
};

/* ---- the plan (pure) --------------------------------------------------------------------- */

bool dtl_ddp_plan(const dtl_ddp_tensor *t, size_t n, size_t bucket_bytes, int world,
                  dtl_ddp_bucket *out, size_t *nb, dtl_err *err)
{
    *nb = 0;
    if (bucket_bytes == 0)
        return dtl_err_set(err, DTL_ERR_USAGE, "ddp: the bucket size must be at least 1 byte");
    if (world < 1)
        return dtl_err_set(err, DTL_ERR_USAGE, "ddp: a world of %d ranks", world);
    for (size_t i = 0; i < n; i++)
        if (t[i].dtype != DTL_DTYPE_F32 && t[i].dtype != DTL_DTYPE_F64)
            return dtl_err_set(err, DTL_ERR_USAGE,
                               "ddp: gradient %zu (%s) is %s: only f32 and f64 are averaged", i,
                               t[i].name ? t[i].name : "?", dtl_dtype_name(t[i].dtype));
    size_t k = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        size_t tb = t[i].count * dtl_dtype_size(t[i].dtype);
        dtl_ddp_bucket *cur = k ? &out[k - 1] : NULL;
        /* A new bucket on another dtype or kind, or when this tensor would overflow the
         * current one (a tensor alone larger than bucket_bytes gets a bucket of its own). */
        if (!cur || cur->dtype != t[i].dtype || cur->shard != t[i].shard ||
            bytes + tb > bucket_bytes) {
            out[k++] = (dtl_ddp_bucket){i, 1, t[i].dtype, t[i].count, t[i].shard, 0};
            bytes = tb;
            continue;
        }
        cur->n++;
        cur->count += t[i].count;
        bytes += tb;
    }
    for (size_t j = 0; j < k; j++)
        out[j].part = out[j].shard ? (out[j].count + (size_t)world - 1) / (size_t)world
                                   : out[j].count;
    *nb = k;
    return true;
}

char *dtl_ddp_sig(char *buf, size_t cap, const dtl_ddp_bucket *b, const char *label)
{
    return b->shard ? dtl_comm_sig(buf, cap, "reduce_scatter", b->part, b->dtype, DTL_COMM_MEAN,
                                   label)
                    : dtl_comm_sig(buf, cap, "allreduce", b->count, b->dtype, DTL_COMM_MEAN,
                                   label);
}

char *dtl_ddp_gather_sig(char *buf, size_t cap, const dtl_ddp_bucket *b, const char *label)
{
    return dtl_comm_sig(buf, cap, "allgather", b->part, b->dtype, DTL_COMM_SUM, label);
}

bool dtl_ddp_bucket_bytes(const char *mb, size_t *out, dtl_err *err)
{
    if (!mb || !*mb) {
        *out = DTL_DDP_BUCKET_BYTES;
        return true;
    }
    char *end;
    double v = strtod(mb, &end);
    if (end == mb || *end || !(v > 0) || v > 1e6)
        return dtl_err_set(err, DTL_ERR_USAGE,
                           "DTL_BUCKET_MB='%s': expected a number of megabytes (MiB) in (0, 1e6]",
                           mb);
    double bytes = v * 1048576.0;
    *out = bytes < 1 ? 1 : (size_t)bytes;
    return true;
}

/* ---- the comm thread --------------------------------------------------------------------- */

static void *comm_main(void *vd)
{
    dtl_ddp *d = vd;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->quit &&
               !(d->in_step && !d->stop && (d->overlap || d->finishing) && d->next < d->nb &&
                 d->missing[d->next] == 0))
            pthread_cond_wait(&d->cv, &d->mu);
        if (d->quit)
            break;
        size_t b = d->next;
        d->busy = true;
        pthread_mutex_unlock(&d->mu);
        dtl_err e;
        struct timespec c0, c1;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
        const dtl_ddp_bucket *bk = &d->b[b];
        bool ok = bk->shard ? dtl_comm_reduce_scatter(d->c, d->mem + d->boff[b],
                                                      d->shard + d->soff[b], bk->part, bk->dtype,
                                                      DTL_COMM_MEAN, d->label[b], &e)
                            : dtl_comm_allreduce(d->c, d->mem + d->boff[b], bk->count,
                                                 bk->dtype, DTL_COMM_MEAN, d->label[b], &e);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
        pthread_mutex_lock(&d->mu);
        d->comm_cpu += (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) * 1e-9;
        d->busy = false;
        if (ok) {
            d->next++;
        } else {
            d->failed = true;
            d->stop = true;
            d->err = e;
        }
        pthread_cond_broadcast(&d->cv);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* ---- the object -------------------------------------------------------------------------- */

static size_t align_up(size_t x)
{
    return (x + DDP_ALIGN - 1) / DDP_ALIGN * DDP_ALIGN;
}

/* "gradients of fc2.b, fc2.w @ m.dtl:25" from label "gradients @ m.dtl:25"; a label without
 * " @ " gets " (names)" appended; at most DDP_LABEL_NAMES names, then "and N more". */
static void bucket_label(char *out, size_t cap, const char *label, const dtl_ddp_tensor *t,
                         const dtl_ddp_bucket *b)
{
    char names[DDP_LABEL - 100];
    size_t at = 0;
    names[0] = '\0';
    for (size_t i = 0; i < b->n && at < sizeof names; i++) {
        if (i == DDP_LABEL_NAMES) {
            at += (size_t)snprintf(names + at, sizeof names - at, " and %zu more", b->n - i);
            break;
        }
        const char *nm = t[b->first + i].name;
        at += (size_t)snprintf(names + at, sizeof names - at, "%s%s", i ? ", " : "",
                               nm ? nm : "?");
    }
    const char *lab = label ? label : "gradients";
    const char *atp = strstr(lab, " @ ");
    if (atp)
        snprintf(out, cap, "%.*s of %s%s", (int)(atp - lab), lab, names, atp);
    else
        snprintf(out, cap, "%s (%s)", lab, names);
}

dtl_ddp *dtl_ddp_new(dtl_comm *c, const dtl_ddp_tensor *t, size_t n, size_t bucket_bytes,
                     const char *label, dtl_err *err)
{
    dtl_ddp *d = calloc(1, sizeof *d);
    size_t namebytes = 0;
    for (size_t i = 0; i < n; i++)
        namebytes += strlen(t[i].name ? t[i].name : "?") + 1;
    if (d) {
        d->c = c;
        d->world = dtl_comm_size(c);
        d->rank = dtl_comm_rank(c);
        d->n = n;
        d->t = calloc(n + 1, sizeof *d->t);
        d->names = malloc(namebytes + 1);
        d->b = calloc(n + 1, sizeof *d->b);
        d->bucket_of = calloc(n + 1, sizeof *d->bucket_of);
        d->offset = calloc(n + 1, sizeof *d->offset);
        d->boff = calloc(n + 1, sizeof *d->boff);
        d->soff = calloc(n + 1, sizeof *d->soff);
        d->label = calloc(n + 1, sizeof *d->label);
        d->announced = calloc(n + 1, sizeof *d->announced);
        d->missing = calloc(n + 1, sizeof *d->missing);
    }
    if (!d || !d->t || !d->names || !d->b || !d->bucket_of || !d->offset || !d->boff ||
        !d->soff || !d->label || !d->announced || !d->missing) {
        dtl_ddp_free(d);
        dtl_err_set(err, DTL_ERR_NOMEM, "ddp: out of memory for %zu gradients", n);
        return NULL;
    }
    char *nm = d->names;
    for (size_t i = 0; i < n; i++) {
        d->t[i] = t[i];
        size_t len = strlen(t[i].name ? t[i].name : "?") + 1;
        memcpy(nm, t[i].name ? t[i].name : "?", len);
        d->t[i].name = nm;
        nm += len;
    }
    if (!dtl_ddp_plan(d->t, n, bucket_bytes, d->world, d->b, &d->nb, err)) {
        dtl_ddp_free(d);
        return NULL;
    }
    size_t total = 0, stotal = 0;
    for (size_t k = 0; k < d->nb; k++) {
        const dtl_ddp_bucket *b = &d->b[k];
        d->boff[k] = total;
        size_t at = total, es = dtl_dtype_size(b->dtype);
        for (size_t i = b->first; i < b->first + b->n; i++) {
            d->bucket_of[i] = k;
            d->offset[i] = at;
            at += d->t[i].count * es;
        }
        if (b->shard) {   /* padded to world × part; its part of the mean in shard */
            at = total + b->part * (size_t)d->world * es;
            d->soff[k] = stotal;
            stotal = align_up(stotal + b->part * es);
        }
        total = align_up(at);
        bucket_label(d->label[k], sizeof d->label[k], label, d->t, b);
    }
    d->mem = aligned_alloc(DDP_ALIGN, align_up(total ? total : 1));
    if (d->mem && d->world > 1 && !(d->shard = aligned_alloc(DDP_ALIGN, stotal ? stotal : 64))) {
        free(d->mem);
        d->mem = NULL;
    }
    if (!d->mem) {
        dtl_ddp_free(d);
        dtl_err_set(err, DTL_ERR_NOMEM, "ddp: out of memory for %zu bytes of gradients", total);
        return NULL;
    }
    memset(d->mem, 0, align_up(total ? total : 1));
    if (d->shard)
        memset(d->shard, 0, stotal ? stotal : 64);
    d->next = d->nb;   /* no step yet */
    d->overlap = true;
    if (pthread_mutex_init(&d->mu, NULL) != 0) {
        free(d->mem);
        d->mem = NULL;
        dtl_ddp_free(d);   /* (mem freed: free skips the mutex, see below) */
        dtl_err_set(err, DTL_ERR_NOMEM, "ddp: cannot create a mutex");
        return NULL;
    }
    if (pthread_cond_init(&d->cv, NULL) != 0) {
        pthread_mutex_destroy(&d->mu);
        free(d->mem);
        d->mem = NULL;
        dtl_ddp_free(d);
        dtl_err_set(err, DTL_ERR_NOMEM, "ddp: cannot create a condition variable");
        return NULL;
    }
    if (dtl_comm_size(c) > 1) {
        int rc = pthread_create(&d->thread, NULL, comm_main, d);
        if (rc != 0) {
            dtl_ddp_free(d);
            dtl_err_set(err, DTL_ERR_NOMEM, "ddp: cannot start the comm thread: %s",
                        strerror(rc));
            return NULL;
        }
        d->threaded = true;
    }
    return d;
}

bool dtl_ddp_begin(dtl_ddp *d, dtl_err *err)
{
    if (d->broken) {
        *err = d->broken_err;
        return false;
    }
    pthread_mutex_lock(&d->mu);
    bool busy = d->in_step;
    if (!busy) {
        for (size_t i = 0; i < d->n; i++)
            d->announced[i] = false;
        for (size_t k = 0; k < d->nb; k++)
            d->missing[k] = d->b[k].n;
        d->next = 0;
        d->stop = false;
        d->finishing = false;
        d->comm_cpu = 0;
        d->in_step = true;
        pthread_cond_broadcast(&d->cv);
    }
    pthread_mutex_unlock(&d->mu);
    if (busy)
        return dtl_err_set(err, DTL_ERR_INTERNAL,
                           "ddp: dtl_ddp_begin while a step is in progress (no finish)");
    d->misuse = false;
    d->wait_s = 0;
    return true;
}

void dtl_ddp_ready(dtl_ddp *d, size_t k, const void *data)
{
    if (k >= d->n) {
        if (!d->misuse)
            snprintf(d->misuse_msg, sizeof d->misuse_msg,
                     "ddp: gradient %zu announced, but there are only %zu", k, d->n);
        d->misuse = true;
        return;
    }
    pthread_mutex_lock(&d->mu);
    bool bad = !d->in_step || d->announced[k];
    if (!bad)
        d->announced[k] = true;
    pthread_mutex_unlock(&d->mu);
    if (bad) {
        if (!d->misuse)
            snprintf(d->misuse_msg, sizeof d->misuse_msg, "ddp: gradient %zu (%s) %s", k,
                     d->t[k].name,
                     d->in_step ? "announced twice in one step" : "announced outside a step");
        d->misuse = true;
        return;
    }
    /* Bucket k's region is not touched by the thread until its last tensor is in. */
    size_t bytes = d->t[k].count * dtl_dtype_size(d->t[k].dtype);
    if (bytes)   /* (data may be NULL for an empty tensor) */
        memcpy(d->mem + d->offset[k], data, bytes);
    pthread_mutex_lock(&d->mu);
    size_t b = d->bucket_of[k];
    if (--d->missing[b] == 0 && b == d->next)
        pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

bool dtl_ddp_finish(dtl_ddp *d, dtl_err *err)
{
    if (d->broken) {
        *err = d->broken_err;
        return false;
    }
    double t0 = comm_now();
    pthread_mutex_lock(&d->mu);
    if (!d->in_step) {
        pthread_mutex_unlock(&d->mu);
        return dtl_err_set(err, DTL_ERR_INTERNAL, "ddp: dtl_ddp_finish without dtl_ddp_begin");
    }
    /* Everything announced? (Else no bucket after the first incomplete one may start.) */
    size_t miss = d->n, nmiss = 0;
    for (size_t i = 0; i < d->n; i++)
        if (!d->announced[i]) {
            if (miss == d->n)
                miss = i;
            nmiss++;
        }
    if (nmiss || d->misuse)
        d->stop = true;
    d->finishing = true;
    pthread_cond_broadcast(&d->cv);
    while (d->threaded && (d->busy || (!d->stop && d->next < d->nb)))
        pthread_cond_wait(&d->cv, &d->mu);
    d->in_step = false;
    bool failed = d->failed;
    dtl_err ferr = d->err;
    pthread_mutex_unlock(&d->mu);
    d->wait_s = comm_now() - t0;
    bool ok = true;
    if (d->misuse)
        ok = dtl_err_set(err, DTL_ERR_INTERNAL, "%s", d->misuse_msg);
    else if (nmiss)
        ok = dtl_err_set(err, DTL_ERR_INTERNAL,
                         "ddp: dtl_ddp_finish before every gradient was announced: %zu of %zu "
                         "missing, the first gradient %zu (%s)",
                         nmiss, d->n, miss, d->t[miss].name);
    else if (failed) {
        *err = ferr;
        ok = false;
    }
    if (!ok) {
        d->broken = true;
        d->broken_err = *err;
    }
    return ok;
}

void dtl_ddp_part(const dtl_ddp *d, size_t k, size_t *lo, size_t *n)
{
    *lo = 0;
    *n = k < d->n ? d->t[k].count : 0;
    if (k >= d->n || !d->t[k].shard || d->world == 1)
        return;
    /* The tensor's elements in its bucket, [at, at + count), cut by this rank's range. */
    const dtl_ddp_bucket *b = &d->b[d->bucket_of[k]];
    size_t es = dtl_dtype_size(b->dtype), at = (d->offset[k] - d->boff[d->bucket_of[k]]) / es;
    size_t from = (size_t)d->rank * b->part, to = from + b->part, end = at + d->t[k].count;
    size_t s = at > from ? at : from, e = end < to ? end : to;
    *lo = s < e ? s - at : 0;
    *n = s < e ? e - s : 0;
}

void *dtl_ddp_grad(const dtl_ddp *d, size_t k)
{
    if (k >= d->n)
        return NULL;
    if (!d->t[k].shard || d->world == 1)
        return d->mem + d->offset[k];
    size_t bk = d->bucket_of[k], lo, n;
    dtl_ddp_part(d, k, &lo, &n);
    size_t es = dtl_dtype_size(d->t[k].dtype), at = (d->offset[k] - d->boff[bk]) / es;
    size_t from = (size_t)d->rank * d->b[bk].part;
    /* (n == 0: a pointer into the part that is never read) */
    return d->shard + d->soff[bk] + (n ? at + lo - from : 0) * es;
}

bool dtl_ddp_gather(dtl_ddp *d, void *const *full, const void *const *part, const char *what,
                    dtl_err *err)
{
    if (d->broken) {
        *err = d->broken_err;
        return false;
    }
    if (d->in_step)
        return dtl_err_set(err, DTL_ERR_INTERNAL, "ddp: dtl_ddp_gather during a step");
    for (size_t bk = 0; bk < d->nb; bk++) {
        const dtl_ddp_bucket *b = &d->b[bk];
        if (!b->shard || b->count == 0)   /* (nothing to gather: every rank skips it) */
            continue;
        size_t es = dtl_dtype_size(b->dtype);
        /* One tensor of exactly world × part elements: gathered in place in full. */
        bool direct = b->n == 1 && b->count == b->part * (size_t)d->world;
        for (size_t k = b->first; k < b->first + b->n; k++) {   /* this rank's parts in */
            size_t lo, n;
            dtl_ddp_part(d, k, &lo, &n);
            unsigned char *to = direct ? (unsigned char *)full[k] + lo * es
                                       : d->mem + d->offset[k] + lo * es;
            if (n && to != part[k])
                memmove(to, part[k], n * es);
        }
        char label[DDP_LABEL];
        bucket_label(label, sizeof label, what, d->t, b);
        unsigned char *buf = direct ? full[b->first] : d->mem + d->boff[bk];
        if (d->world > 1 &&
            !dtl_comm_allgather(d->c, buf + (size_t)d->rank * b->part * es, buf, b->part,
                                b->dtype, label, err)) {
            d->broken = true;
            d->broken_err = *err;
            return false;
        }
        if (!direct)
            for (size_t k = b->first; k < b->first + b->n; k++)
                if (d->t[k].count)
                    memcpy(full[k], d->mem + d->offset[k], d->t[k].count * es);
    }
    return true;
}

void dtl_ddp_set_overlap(dtl_ddp *d, bool overlap)
{
    pthread_mutex_lock(&d->mu);
    d->overlap = overlap;
    pthread_mutex_unlock(&d->mu);
}

double dtl_ddp_comm_cpu_seconds(const dtl_ddp *d)
{
    return d->comm_cpu;
}

double dtl_ddp_wait_seconds(const dtl_ddp *d)
{
    return d->wait_s;
}

const char *dtl_ddp_label(const dtl_ddp *d, size_t b)
{
    return b < d->nb ? d->label[b] : NULL;
}

void dtl_ddp_stop(dtl_ddp *d)
{
    if (!d || !d->threaded)
        return;
    pthread_mutex_lock(&d->mu);
    d->quit = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->thread, NULL);
    d->threaded = false;
}

void dtl_ddp_free(dtl_ddp *d)
{
    if (!d)
        return;
    dtl_ddp_stop(d);
    if (d->mem) {   /* the mutex and condition variable exist once mem does */
        pthread_cond_destroy(&d->cv);
        pthread_mutex_destroy(&d->mu);
    }
    free(d->mem);
    free(d->shard);
    free(d->t);
    free(d->names);
    free(d->b);
    free(d->bucket_of);
    free(d->offset);
    free(d->boff);
    free(d->soff);
    free(d->label);
    free(d->announced);
    free(d->missing);
    free(d);
}
