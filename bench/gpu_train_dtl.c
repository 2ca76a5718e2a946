/* bench/gpu_train_dtl.c — train steps per second of any .dtl train block on the CUDA backend
 * (the dtl side of bench/gpu_mlp_big.py; bench/gpu_mlp_dtl.c is the fixed small-MLP one).
 *
 *   bench/gpu_train_dtl --file F.dtl [--batch B] [--steps N] [--warmup W]
 *                       [--precision f32|tf32|bf16] [--backend cuda|ref] [--label L]
 *                       [--host pinned|pageable]
 *
 * The step graph of F's (first) train block is lowered at batch B (and --precision, which
 * overrides the block's own), then run N times after W warm-up steps on one fixed random
 * batch copied from host memory at every step: x uniform in [0, 1), y = row % 10 (every
 * other INPUT the step number, the total step count, or zeros). The batch lies in
 * page-locked memory (dtl_cuda_host_alloc; --host pageable: malloc), as PyTorch's side
 * pins its batch. The loss is read only at the end ("async", as PyTorch's loop that never
 * calls .item()). Prints one JSON object:
 * {"impl": "dtl cuda", "label": L, "precision": P, "host": H, "batch": B, "steps_per_s": …,
 * "samples_per_s": …, "ms_per_step": …, "loss": …, "device": …}. --backend ref runs the
 * same on the reference backend (a CPU check of this driver, not a benchmark). Exit 77
 * without a GPU, or when the backend refuses the precision (the message says which). */
#include "../compiler/lower.h"
#include "../kernels/cuda/cuda.h"
#include "../lang/check.h"
#include "../lang/ctx.h"
#include "../runtime/exec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Random or counting data for INPUT node n (see the header comment), page-locked if pinned. */
static void *fill_input(const dtl_node *n, int64_t *stepno, int64_t *total, bool pinned)
{
    if (n->rank == 0 && n->dtype == DTL_DTYPE_I64 && strcmp(n->name, "step") == 0)
        return stepno;
    if (n->rank == 0 && n->dtype == DTL_DTYPE_I64 && strcmp(n->name, "total_steps") == 0)
        return total;
    size_t count = dtl_node_numel(n), esz = dtl_dtype_size(n->dtype);
    size_t bytes = (count ? count : 1) * (esz ? esz : 1);
    dtl_err err = {0};
    unsigned char *p = pinned ? dtl_cuda_host_alloc(bytes, &err) : malloc(bytes);
    if (!p) {
        fprintf(stderr, "gpu_train_dtl: %s\n", pinned ? err.msg : "out of memory");
        return NULL;
    }
    memset(p, 0, bytes);
    uint64_t r = 88172645463325252ull;
    for (size_t i = 0; i < count; i++) {
        if (strcmp(n->name, "x") == 0 && n->dtype == DTL_DTYPE_F32) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            ((float *)p)[i] = (float)(r >> 40) / 16777216.0f;
        } else if (strcmp(n->name, "y") == 0 && n->dtype == DTL_DTYPE_I64) {
            ((int64_t *)p)[i] = (int64_t)(i % 10);
        } else if (strcmp(n->name, "y") == 0 && n->dtype == DTL_DTYPE_I32) {
            ((int32_t *)p)[i] = (int32_t)(i % 10);
        }
    }
    return p;
}

int main(int argc, char **argv)
{
    int64_t batch = 4096, steps = 50, warmup = 5;
    const char *file = NULL, *prec = NULL, *backend = "cuda", *label = NULL, *host = "pinned";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--batch") == 0)
            batch = atoll(argv[i + 1]);
        else if (strcmp(argv[i], "--steps") == 0)
            steps = atoll(argv[i + 1]);
        else if (strcmp(argv[i], "--warmup") == 0)
            warmup = atoll(argv[i + 1]);
        else if (strcmp(argv[i], "--file") == 0)
            file = argv[i + 1];
        else if (strcmp(argv[i], "--precision") == 0)
            prec = argv[i + 1];
        else if (strcmp(argv[i], "--backend") == 0)
            backend = argv[i + 1];
        else if (strcmp(argv[i], "--label") == 0)
            label = argv[i + 1];
        else if (strcmp(argv[i], "--host") == 0)
            host = argv[i + 1];
        else {
            fprintf(stderr, "gpu_train_dtl: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!file || batch < 1 || steps < 1 || warmup < 0 ||
        (strcmp(host, "pinned") != 0 && strcmp(host, "pageable") != 0)) {
        fprintf(stderr, "usage: gpu_train_dtl --file F.dtl [--batch B] [--steps N] "
                "[--warmup W] [--precision f32|tf32|bf16] [--backend cuda|ref] [--label L] "
                "[--host pinned|pageable]\n");
        return 2;
    }
    dtl_precision pr = DTL_PREC_DEFAULT;
    if (prec && (pr = dtl_precision_parse(prec)) == DTL_PREC_COUNT) {
        fprintf(stderr, "gpu_train_dtl: --precision expects f32, tf32 or bf16\n");
        return 2;
    }
    char why[400] = "the reference backend (CPU)";
    const dtl_backend *be = &dtl_backend_ref;
    dtl_err err = {0};
    if (strcmp(backend, "cuda") == 0) {
        if (!dtl_cuda_available(why, sizeof why)) {
            fprintf(stderr, "gpu_train_dtl: %s\n", why);
            return 77;
        }
        if (!(be = dtl_cuda_backend(&err))) {
            fprintf(stderr, "gpu_train_dtl: %s\n", err.msg);
            return 1;
        }
    } else if (strcmp(backend, "ref") != 0) {
        fprintf(stderr, "gpu_train_dtl: --backend expects cuda or ref\n");
        return 2;
    }
    bool pinned = be != &dtl_backend_ref && strcmp(host, "pinned") == 0;
    if (!pinned)
        host = "pageable";
    dtl_ctx ctx;
    dtl_ctx_init(&ctx);
    dtl_ctx_add_default_paths(&ctx);
    dtl_module *m = dtl_check_path(&ctx, file);
    const dtl_train *t = m && !dtl_diag_failed(&ctx.diags) ? dtl_lower_find_train(m, NULL) : NULL;
    dtl_lowered low;
    dtl_lower_opts lo = {.batch = batch, .precision = pr};
    if (!t || !dtl_lower_train(&ctx, t, &lo, &low)) {
        dtl_diag_print(&ctx.diags, stderr, false);
        fprintf(stderr, "gpu_train_dtl: cannot lower %s\n", file);
        return 1;
    }
    dtl_store *s = dtl_store_new(0);
    dtl_plan *p = dtl_plan_new(be, &low.step, s, NULL, &err);
    if (!p) {
        fprintf(stderr, "gpu_train_dtl: %s (precision %s)\n", err.msg,
                dtl_precision_name(low.precision));
        /* a precision this build's backend does not have: a skip, not a failure */
        return pr > DTL_PREC_F32 ? 77 : 1;
    }
    int64_t stepno = 0, total = warmup + steps;
    dtl_binding in[16];
    size_t nin = 0;
    for (uint32_t v = 0; v < low.step.nnodes && nin < 16; v++) {
        const dtl_node *n = &low.step.nodes[v];
        if (n->op != DTL_OP_INPUT)
            continue;
        dtl_binding *b = &in[nin++];
        b->name = n->name;
        if (!(b->data = fill_input(n, &stepno, &total, pinned))) {
            nin--;
            goto fail_quiet;
        }
        b->dtype = n->dtype;
        b->rank = n->rank;
        memcpy(b->shape, n->shape, n->rank * sizeof *n->shape);
    }
    dtl_tensor loss;
    for (int64_t k = 0; k < warmup; k++) {
        stepno++;
        if (!dtl_plan_run(p, in, nin, &err))
            goto fail;
    }
    if (warmup && !dtl_plan_output(p, "loss", &loss, &err))   /* waits for the GPU */
        goto fail;
    double t0 = now();
    for (int64_t k = 0; k < steps; k++) {
        stepno++;
        if (!dtl_plan_run(p, in, nin, &err))
            goto fail;
    }
    if (!dtl_plan_output(p, "loss", &loss, &err))
        goto fail;
    double dt = now() - t0;
    double lv = loss.dtype == DTL_DTYPE_F64 ? *(const double *)loss.data
                                            : (double)*(const float *)loss.data;
    printf("{\"impl\": \"dtl %s\", \"mode\": \"async\", \"label\": \"%s\", "
           "\"precision\": \"%s\", \"host\": \"%s\", \"batch\": %" PRId64 ", \"steps\": %" PRId64
           ", \"seconds\": %.4f, \"steps_per_s\": %.2f, "
           "\"samples_per_s\": %.0f, \"ms_per_step\": %.3f, \"loss\": %.5f, \"device\": \"%s\"}\n",
           backend, label ? label : file, dtl_precision_name(low.precision), host, batch, steps, dt,
           (double)steps / dt, (double)(steps * batch) / dt, 1e3 * dt / (double)steps, lv, why);
    int rc = 0;
    goto done;
fail:
    fprintf(stderr, "gpu_train_dtl: %s\n", err.msg);
fail_quiet:
    rc = 1;
done:
    for (size_t k = 0; k < nin; k++)
        if (in[k].data != &stepno && in[k].data != &total) {
            if (pinned)
                dtl_cuda_host_free((void *)in[k].data);
            else
                free((void *)in[k].data);
        }
    dtl_plan_free(p);
    dtl_store_free(s);
    dtl_lowered_free(&low);
    dtl_ctx_free(&ctx);
    return rc;
}
