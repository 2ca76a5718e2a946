/* bench/rows.c — softmax and layer norm, forward and backward, on the LLVM backend: the dtl
 * side of bench/rows.sh (bench/rows_torch.py is PyTorch's).
 *
 *   bench/rows OP ROWS COLS [--min-ms MS] [--print]      OP: softmax | layer_norm
 *
 * The graph: x a PARAM f32[ROWS, COLS] (layer norm: gamma and beta PARAMs f32[COLS] too),
 * y = softmax(x, -1) or layer_norm(x, gamma, beta, 1e-5), loss = sum(y * w) with w an INPUT
 * of y's shape (random, fixed), and the gradients of loss with respect to x (and gamma, beta)
 * as outputs — what PyTorch computes for (y * w).sum().backward(). The plan is run once to
 * warm up, then repeatedly for at least --min-ms (default 300) of wall time, in rounds of
 * runs; the fastest round's time per run is reported. Threads: DTL_THREADS (runtime/pool.h).
 * Prints one line: "dtl OP ROWSxCOLS ms=… GB/s=…", GB/s counting one read of x and w and one
 * write of dx (the least traffic a fused step needs), so the two sides are measured alike.
 * With DTL_FUSE_ROWS=0 (compiler/passes/fuse.h) the same runs without ROW kernels; --print
 * prints the kernel program (as `dtlc compile --emit=fused`) on stderr first. */
#include "../compiler/autodiff.h"
#include "../compiler/llvm/llvm.h"
#include "../compiler/nnops.h"
#include "../compiler/passes/fuse.h"
#include "../compiler/passes/passes.h"
#include "../runtime/exec.h"

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
    if (argc < 4 || (strcmp(argv[1], "softmax") != 0 && strcmp(argv[1], "layer_norm") != 0)) {
        fprintf(stderr, "usage: %s softmax|layer_norm ROWS COLS [--min-ms MS]\n", argv[0]);
        return 2;
    }
    bool ln = strcmp(argv[1], "layer_norm") == 0;
    int64_t rows = atoll(argv[2]), cols = atoll(argv[3]);
    double min_ms = 300;
    bool print = false;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--min-ms") == 0 && i + 1 < argc)
            min_ms = atof(argv[++i]);
        else if (strcmp(argv[i], "--print") == 0)
            print = true;
    }
    if (rows < 1 || cols < 1) {
        fprintf(stderr, "rows: ROWS and COLS must be positive\n");
        return 2;
    }
    dtl_graph g;
    dtl_graph_init(&g);
    int64_t shape[2] = {rows, cols};
    dtl_val x = dtl_g_param(&g, "x", DTL_DTYPE_F32, 2, shape,
                            (dtl_init){DTL_INIT_UNIFORM, -3, 3, NULL});
    dtl_val params[3] = {x, DTL_VAL_NONE, DTL_VAL_NONE}, grads[3];
    uint32_t np = 1;
    dtl_val y;
    if (ln) {
        params[1] = dtl_g_param(&g, "gamma", DTL_DTYPE_F32, 1, &cols,
                                (dtl_init){DTL_INIT_UNIFORM, 0.5, 1.5, NULL});
        params[2] = dtl_g_param(&g, "beta", DTL_DTYPE_F32, 1, &cols,
                                (dtl_init){DTL_INIT_UNIFORM, -1, 1, NULL});
        np = 3;
        y = dtl_nn_layer_norm(&g, x, params[1], params[2], 1e-5);
    } else
        y = dtl_nn_softmax(&g, x, 1);
    dtl_val w = dtl_g_input(&g, "w", DTL_DTYPE_F32, 2, shape);
    dtl_val loss = dtl_g_reduce(&g, DTL_OP_SUM, dtl_g_binary(&g, DTL_OP_MUL, y, w), 3, false);
    dtl_err err;
    if (!dtl_ad_grad(&g, loss, params, np, grads, NULL, &err)) {
        fprintf(stderr, "rows: %s\n", err.msg);
        return 1;
    }
    dtl_g_output(&g, DTL_OUT_LOSS, "loss", loss, DTL_VAL_NONE);
    static const char *const gname[3] = {"dx", "dgamma", "dbeta"};
    for (uint32_t i = 0; i < np; i++)
        dtl_g_output(&g, DTL_OUT_VALUE, gname[i], grads[i], DTL_VAL_NONE);

    if (print) {
        dtl_graph pg;
        if (!dtl_passes_run(&pg, &g, NULL, &err)) {
            fprintf(stderr, "rows: %s\n", err.msg);
            return 1;
        }
        dtl_kprog *kp = dtl_fuse(&pg, NULL);
        dtl_kprog_print(stderr, kp);
        dtl_kprog_free(kp);
        dtl_graph_free(&pg);
    }
    size_t n = (size_t)(rows * cols);
    float *wd = malloc(n * sizeof *wd);
    if (!wd)
        return 1;
    uint32_t r = 12345;
    for (size_t i = 0; i < n; i++) {
        r = r * 1664525u + 1013904223u;
        wd[i] = (float)(r >> 8) / 16777216.0f - 0.5f;
    }
    dtl_binding b = {"w", wd, DTL_DTYPE_F32, 2, {rows, cols}};
    dtl_store *store = dtl_store_new(7);
    dtl_plan *p = dtl_plan_new(&dtl_backend_llvm, &g, store, NULL, &err);
    if (!p || !dtl_plan_run(p, &b, 1, &err)) {
        fprintf(stderr, "rows: %s\n", err.msg);
        return 1;
    }
    double best = 1e30, start = now();
    int per = 1;
    while ((now() - start) * 1e3 < min_ms) {
        double t0 = now();
        for (int i = 0; i < per; i++)
            if (!dtl_plan_run(p, &b, 1, &err)) {
                fprintf(stderr, "rows: %s\n", err.msg);
                return 1;
            }
        double t = (now() - t0) / per;
        if (t < best)
            best = t;
        if ((now() - t0) < 0.02)
            per *= 2;
    }
    dtl_tensor lt;
    double lv = dtl_plan_output(p, "loss", &lt, &err) ? *(const float *)lt.data : 0;
    double bytes = 3.0 * (double)n * sizeof(float);
    printf("dtl %s %lldx%lld ms=%.4f GB/s=%.2f loss=%.6g\n", argv[1], (long long)rows,
           (long long)cols, best * 1e3, bytes / best * 1e-9, lv);
    dtl_plan_free(p);
    dtl_store_free(store);
    dtl_graph_free(&g);
    free(wd);
    return 0;
}
