/* bench/gpu_mlp_dtl.c — the dtl side of the GPU benchmark (bench/gpu_mlp.py is PyTorch's):
 * train steps per second of examples/mnist_mlp.dtl (784-128-10, ReLU, Adam lr 1e-3) at
 * batch B on the CUDA backend, on one fixed random batch that is copied from host memory at
 * every step (as PyTorch's side copies it from pinned memory).
 *
 *   bench/gpu_mlp_dtl [--batch B] [--steps N] [--warmup W] [--sync-every K]
 *
 * DTL_CUDA_FUSE=0 measures the backend's one-launch-per-node mode instead of the fused kernel
 * program, DTL_CUDA_CODEGEN=0 the fused program on the interpreter kernel instead of the
 * generated (NVRTC) kernels; the "impl" field says which. Two figures: "async" reads the loss only at the end (the GPU runs ahead of the host, as a
 * PyTorch loop that never calls .item()); "loss every step" reads it after each step, as
 * `dtlc run` does. Prints one JSON object per figure. Exit 77 without a GPU. */
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

int main(int argc, char **argv)
{
    int64_t batch = 32, steps = 2000, warmup = 200;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--batch") == 0)
            batch = atoll(argv[i + 1]);
        else if (strcmp(argv[i], "--steps") == 0)
            steps = atoll(argv[i + 1]);
        else if (strcmp(argv[i], "--warmup") == 0)
            warmup = atoll(argv[i + 1]);
    }
    char why[400];
    if (!dtl_cuda_available(why, sizeof why)) {
        fprintf(stderr, "gpu_mlp_dtl: %s\n", why);
        return 77;
    }
    dtl_ctx ctx;
    dtl_ctx_init(&ctx);
    dtl_ctx_add_default_paths(&ctx);
    dtl_module *m = dtl_check_path(&ctx, DTL_SRC_STDLIB_DIR "/../examples/mnist_mlp.dtl");
    const dtl_train *t = m && !dtl_diag_failed(&ctx.diags) ? dtl_lower_find_train(m, NULL) : NULL;
    dtl_lowered low;
    dtl_lower_opts lo = {.batch = batch};
    if (!t || !dtl_lower_train(&ctx, t, &lo, &low)) {
        fprintf(stderr, "gpu_mlp_dtl: cannot lower examples/mnist_mlp.dtl\n");
        return 1;
    }
    dtl_err err = {0};
    dtl_store *s = dtl_store_new(0);
    const dtl_backend *cuda = dtl_cuda_backend(&err);   /* the plugin (kernels/cuda/cuda.h) */
    dtl_plan *p = cuda ? dtl_plan_new(cuda, &low.step, s, NULL, &err) : NULL;
    if (!p) {
        fprintf(stderr, "gpu_mlp_dtl: %s\n", err.msg);
        return 1;
    }
    float *x = malloc((size_t)batch * 784 * sizeof *x);
    int64_t *y = malloc((size_t)batch * sizeof *y);
    uint64_t r = 88172645463325252ull;
    for (int64_t i = 0; i < batch * 784; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        x[i] = (float)(r >> 40) / 16777216.0f;
    }
    for (int64_t i = 0; i < batch; i++)
        y[i] = (int64_t)(i % 10);
    int64_t stepno = 0, total = warmup + 2 * steps;
    dtl_binding in[4] = {{"x", x, DTL_DTYPE_F32, 2, {batch, 784}},
                         {"y", y, DTL_DTYPE_I64, 1, {batch}},
                         {"step", &stepno, DTL_DTYPE_I64, 0, {0}},
                         {"total_steps", &total, DTL_DTYPE_I64, 0, {0}}};
    dtl_tensor loss;
    for (int64_t k = 0; k < warmup; k++) {
        stepno++;
        if (!dtl_plan_run(p, in, 4, &err))
            goto fail;
    }
    if (!dtl_plan_output(p, "loss", &loss, &err))
        goto fail;
    for (int mode = 0; mode < 2; mode++) {
        double t0 = now();
        for (int64_t k = 0; k < steps; k++) {
            stepno++;
            if (!dtl_plan_run(p, in, 4, &err) ||
                (mode == 1 && !dtl_plan_output(p, "loss", &loss, &err)))
                goto fail;
        }
        if (!dtl_plan_output(p, "loss", &loss, &err))
            goto fail;
        double dt = now() - t0;
        const char *fz = getenv("DTL_CUDA_FUSE"), *cg = getenv("DTL_CUDA_CODEGEN");
        printf("{\"impl\": \"dtl cuda %s\", \"mode\": \"%s\", \"batch\": %" PRId64
               ", \"steps\": %" PRId64 ", \"seconds\": %.4f, \"steps_per_s\": %.1f, "
               "\"loss\": %.5f, \"device\": \"%s\"}\n",
               fz && strcmp(fz, "0") == 0   ? "per-node"
               : cg && strcmp(cg, "0") == 0 ? "fused interpreter"
                                            : "fused",
               mode ? "loss every step" : "async", batch, steps, dt, (double)steps / dt,
               (double)*(const float *)loss.data, why);
    }
    dtl_plan_free(p);
    dtl_store_free(s);
    dtl_lowered_free(&low);
    dtl_ctx_free(&ctx);
    free(x);
    free(y);
    return 0;
fail:
    fprintf(stderr, "gpu_mlp_dtl: %s\n", err.msg);
    return 1;
}
