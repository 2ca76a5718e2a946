/* compiler/run_dist_cuda.c — data-parallel steps on GPUs with NCCL (run_dist_cuda.h).
 *
 * Design. Everything that needs CUDA or NCCL is in the plugin (kernels/cuda/cuda_dp.c):
 * dtlc links neither (docs/cuda.md). This file is the host's half: it turns the GRAD graph's
 * outputs into the plugin's tensor list and the ddp's bucket plan (dtl_ddp_plan with the same
 * DTL_BUCKET_MB, so the buckets are exactly those whose signatures every rank compared at
 * dtl_comm_init, with the ddp's labels) and moves the ncclUniqueId from rank 0 to every rank
 * over the bootstrap world. A step is then: the GRAD plan (which issues the buckets'
 * allreduces on the GPU as backward finishes them), the UPDATE plan (which takes the averaged
 * gradients on the device; it is bound with this step's scalars only), and the plugin's
 * finish, which waits under the watchdog and gives the loss. */
#define _POSIX_C_SOURCE 200809L   /* nanosleep */
#include "run_dist_cuda.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../kernels/cuda/cuda_dp.h"

struct dtl_dist_cuda {
    const dtl_cuda_dp_api *api;
    dtl_cuda_dp *dp;
    int rank;
    unsigned long long steps;
};

static const dtl_cuda_dp_api *api_get(dtl_err *err)
{
    char why[600];
    const dtl_cuda_dp_api *api = dtl_cuda_dp_get(why, sizeof why);
    if (!api) {
        dtl_err_set(err, DTL_ERR_USAGE, "parallel = data on cuda needs NCCL: %s", why);
        return NULL;
    }
    if (!api->available(why, sizeof why)) {
        dtl_err_set(err, DTL_ERR_USAGE, "parallel = data on cuda needs NCCL, which this "
                    "machine lacks: %s", why);
        return NULL;
    }
    return api;
}

bool dtl_dist_cuda_check(dtl_err *err)
{
    return api_get(err) != NULL;
}

/* A test's fault: DTL_TEST_NCCL_STALL=R:S makes rank R stop before its step S (1-based; 0:
 * before ncclCommInitRank) for an hour, issuing no collective (tests/cuda_dp.sh: the others'
 * watchdog must name it). */
static void test_stall(int rank, unsigned long long step)
{
    const char *s = getenv("DTL_TEST_NCCL_STALL");
    int r;
    unsigned long long at;
    if (s && sscanf(s, "%d:%llu", &r, &at) == 2 && r == rank && at == step) {
        fprintf(stderr, "dtlc: rank %d: DTL_TEST_NCCL_STALL: stopping before %s %llu\n",
                rank, step ? "step" : "ncclCommInitRank, step", step);
        for (int i = 0; i < 3600; i++) {
            struct timespec ts = {1, 0};
            nanosleep(&ts, NULL);
        }
    }
}

dtl_dist_cuda *dtl_dist_cuda_new(dtl_comm *c, const dtl_graph *grad, const dtl_ddp *ddp,
                                 const dtl_dist_cuda_opts *o, dtl_err *err)
{
    const dtl_cuda_dp_api *api = api_get(err);
    if (!api)
        return NULL;
    size_t n = grad->nouts;
    dtl_ddp_tensor *ts = calloc(n + 1, sizeof *ts);
    dtl_ddp_bucket *bs = calloc(n + 1, sizeof *bs);
    const char **names = calloc(n + 1, sizeof *names);
    int *dtypes = calloc(n + 1, sizeof *dtypes);
    size_t *counts = calloc(n + 1, sizeof *counts);
    size_t *first = calloc(n + 1, sizeof *first), *cnt = calloc(n + 1, sizeof *cnt);
    const char **labels = calloc(n + 1, sizeof *labels);
    dtl_dist_cuda *x = calloc(1, sizeof *x);
    dtl_cuda_dp_spec s;
    memset(&s, 0, sizeof s);
    s.loss = SIZE_MAX;
    if (!ts || !bs || !names || !dtypes || !counts || !first || !cnt || !labels || !x) {
        dtl_err_set(err, DTL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t k = 0; k < n; k++) {
        const dtl_output *o = &grad->outs[k];
        const dtl_node *v = &grad->nodes[o->val];
        ts[k].name = strncmp(o->name, "grad.", 5) == 0 ? o->name + 5 : o->name;
        ts[k].dtype = v->dtype;
        ts[k].count = 1;
        for (uint32_t i = 0; i < v->rank; i++)
            ts[k].count *= (size_t)v->shape[i];
        names[k] = o->name;
        dtypes[k] = (int)v->dtype;
        counts[k] = ts[k].count;
        if (o->kind == DTL_OUT_LOSS)
            s.loss = k;
    }
    size_t bytes, nb;
    if (!dtl_ddp_bucket_bytes(getenv("DTL_BUCKET_MB"), &bytes, err) ||
        !dtl_ddp_plan(ts, n, bytes, dtl_comm_size(c), bs, &nb, err))
        goto fail;
    for (size_t b = 0; b < nb; b++) {
        first[b] = bs[b].first;
        cnt[b] = bs[b].n;
        labels[b] = dtl_ddp_label(ddp, b);
        if (!labels[b]) {
            dtl_err_set(err, DTL_ERR_INTERNAL, "cuda data parallel: the ddp has fewer than "
                        "the %zu buckets planned", nb);
            goto fail;
        }
    }
    s.rank = dtl_comm_rank(c);
    s.size = dtl_comm_size(c);
    s.ntensors = n;
    s.names = names;
    s.dtypes = dtypes;
    s.counts = counts;
    s.nbuckets = nb;
    s.first = first;
    s.count = cnt;
    s.labels = labels;
    s.timeout_s = o->timeout_s;
    s.init_timeout_s = o->init_timeout_s;
    s.stuck_prefix = o->stuck_prefix;
    s.stuck_status = o->stuck_status;
    if (s.rank == 0 && !api->unique_id(s.id, err))
        goto fail;
    /* (one-byte elements: a broadcast only moves bytes) */
    if (s.size > 1 && !dtl_comm_broadcast(c, s.id, sizeof s.id, DTL_DTYPE_BOOL, 0,
                                          "the NCCL unique id", err))
        goto fail;
    x->api = api;
    x->rank = s.rank;
    test_stall(x->rank, 0);
    x->dp = api->create(&s, err);
fail:   /* (and done: the spec's arrays are the plugin's copies now) */
    free(ts);
    free(bs);
    free(names);
    free(dtypes);
    free(counts);
    free(first);
    free(cnt);
    free(labels);
    if (x && !x->dp) {
        free(x);
        x = NULL;
    }
    return x;
}

void dtl_dist_cuda_plan_opts(dtl_dist_cuda *x, dtl_plan_opts *o)
{
    x->api->plan_opts(x->dp, o);
}

bool dtl_dist_cuda_step(dtl_dist_cuda *x, dtl_plan *grad, dtl_plan *update,
                        const dtl_binding *in, size_t nin, double *loss, dtl_err *err)
{
    test_stall(x->rank, ++x->steps);
    return dtl_plan_run(grad, in, nin, err) && dtl_plan_run(update, in, nin, err) &&
           x->api->finish(x->dp, loss, err);
}

void dtl_dist_cuda_set_timeout(dtl_dist_cuda *x, double seconds)
{
    x->api->set_timeout(x->dp, seconds);
}

double dtl_dist_cuda_wait_seconds(const dtl_dist_cuda *x)
{
    return x->api->wait_seconds(x->dp);
}

void dtl_dist_cuda_free(dtl_dist_cuda *x, bool abort)
{
    if (!x)
        return;
    x->api->destroy(x->dp, abort);
    free(x);
}
