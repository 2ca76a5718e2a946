/* bench/gpu_gemm.c — one matrix product through cuBLAS's call forms, in f32, tf32 and bf16:
 * which form the CUDA backend should use for a product (kernels/cuda/cuda_backend.c).
 *
 *   bench/gpu_gemm [M N K]          (default 4096 4096 4096)
 *
 * Row-major C[M, N] = op(A) op(B), as the backend calls it (column-major C^T = B^T A^T), for
 * the three transpositions a training step has (NN forward, TN weight gradient, NT input
 * gradient) and three forms: "strided" cublas*StridedBatched(Ex) with batch 1 (the backend's
 * CU_GEMM step), "gemmex" cublasGemmEx, "lt" cublasLtMatmul with its first heuristic. The
 * operands are uniform in [-1, 1) (never zeros), bf16 made from them by rounding to nearest
 * even; each product's difference from the f32 strided result, ‖C − C32‖ / ‖C32‖, is printed
 * beside its rate (f32 ~1e-7, tf32 ~1e-4, bf16 ~1e-3). Timing: CUDA events around each of 20
 * calls after 5 warm-ups, the median. One line per case:
 * {"form": …, "precision": …, "op": …, "tflops": …, "rel_err": …}. Exit 77 without a GPU. */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                          \
    do {                                                                               \
        cudaError_t e_ = (x);                                                          \
        if (e_ != cudaSuccess) {                                                       \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x,                 \
                    cudaGetErrorString(e_));                                           \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)
#define CB(x)                                                                          \
    do {                                                                               \
        cublasStatus_t s_ = (x);                                                       \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                             \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x,                 \
                    cublasGetStatusString(s_));                                        \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

enum { WARMUP = 5, REPS = 20, WS = 32 << 20 };
enum prec { F32, TF32, BF16 };
enum form { STRIDED, GEMMEX, LT };
static const char *prec_name[] = {"f32", "tf32", "bf16"}, *form_name[] = {"strided", "gemmex", "lt"};

static int m, n, k;
static cublasHandle_t blas;
static cublasLtHandle_t lt;
static void *ws;

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* C = op(A) op(B), row-major, ta/tb: the stored A (B) is the logical one transposed. */
static void gemm(enum form f, enum prec p, bool ta, bool tb, const void *a, const void *b,
                 float *c, cudaStream_t st)
{
    const float one = 1, zero = 0;
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    int lda = ta ? m : k, ldb = tb ? k : n;
    cudaDataType_t ab = p == BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t ct = p == TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    if (f == STRIDED && p == F32) {
        CB(cublasSgemmStridedBatched(blas, opb, opa, n, m, k, &one, b, ldb, 0, a, lda, 0, &zero,
                                     c, n, 0, 1));
    } else if (f == STRIDED) {
        CB(cublasGemmStridedBatchedEx(blas, opb, opa, n, m, k, &one, b, ab, ldb, 0, a, ab, lda,
                                      0, &zero, c, CUDA_R_32F, n, 0, 1, ct,
                                      CUBLAS_GEMM_DEFAULT));
    } else if (f == GEMMEX) {
        CB(cublasGemmEx(blas, opb, opa, n, m, k, &one, b, ab, ldb, a, ab, lda, &zero, c,
                        CUDA_R_32F, n, ct, CUBLAS_GEMM_DEFAULT));
    } else {
        cublasLtMatmulDesc_t op;
        cublasLtMatrixLayout_t la, lb, lc;
        cublasLtMatmulPreference_t pref;
        cublasLtMatmulHeuristicResult_t res;
        int nres = 0;
        size_t wsb = WS;
        CB(cublasLtMatmulDescCreate(&op, ct, CUDA_R_32F));
        CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opb, sizeof opb));
        CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opa, sizeof opa));
        CB(cublasLtMatrixLayoutCreate(&la, ab, tb ? k : n, tb ? n : k, ldb));
        CB(cublasLtMatrixLayoutCreate(&lb, ab, ta ? m : k, ta ? k : m, lda));
        CB(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, n, m, n));
        CB(cublasLtMatmulPreferenceCreate(&pref));
        CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                &wsb, sizeof wsb));
        CB(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &res, &nres));
        if (nres < 1) {
            fprintf(stderr, "cublasLt: no algorithm\n");
            exit(1);
        }
        CB(cublasLtMatmul(lt, op, &one, b, la, a, lb, &zero, c, lc, c, lc, &res.algo, ws, WS,
                          st));
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(lc);
        cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(la);
        cublasLtMatmulDescDestroy(op);
    }
}

int main(int argc, char **argv)
{
    m = n = k = 4096;
    if (argc == 4) {
        m = atoi(argv[1]), n = atoi(argv[2]), k = atoi(argv[3]);
    } else if (argc != 1) {
        fprintf(stderr, "usage: %s [M N K]\n", argv[0]);
        return 2;
    }
    if (m <= 0 || n <= 0 || k <= 0) {
        fprintf(stderr, "%s: M, N and K must be positive\n", argv[0]);
        return 2;
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    size_t big = (size_t)(m > n ? m : n) * (size_t)(k > n ? k : n);
    size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
    float *h = malloc(big * sizeof *h), *hc = malloc(nc * sizeof *hc), *h32 = malloc(nc * sizeof *h32);
    uint16_t *hb = malloc(big * sizeof *hb);
    if (!h || !hc || !h32 || !hb)
        return 1;
    void *a32, *b32, *a16, *b16;
    float *c;
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    CK(cudaMalloc(&a32, na * 4));
    CK(cudaMalloc(&b32, nb * 4));
    CK(cudaMalloc(&a16, na * 2));
    CK(cudaMalloc(&b16, nb * 2));
    CK(cudaMalloc((void **)&c, nc * 4));
    CK(cudaMalloc(&ws, WS));
    uint64_t r = 0x9e3779b97f4a7c15ull;
    void *dst32[] = {a32, b32}, *dst16[] = {a16, b16};
    size_t cnt[] = {na, nb};
    for (int t = 0; t < 2; t++) {
        for (size_t i = 0; i < cnt[t]; i++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            h[i] = (float)(r >> 40) / 8388608.0f - 1.0f;
            hb[i] = to_bf16(h[i]);
        }
        CK(cudaMemcpy(dst32[t], h, cnt[t] * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dst16[t], hb, cnt[t] * 2, cudaMemcpyHostToDevice));
    }
    CB(cublasCreate(&blas));
    CB(cublasSetStream(blas, st));
    CB(cublasSetWorkspace(blas, ws, WS));
    CB(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH));   /* as the backend */
    CB(cublasLtCreate(&lt));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    static const char *opname[] = {"NN", "TN", "NT"};
    const bool tas[] = {false, true, false}, tbs[] = {false, false, true};
    double flop = 2.0 * m * n * k;
    for (int o = 0; o < 3; o++) {
        for (int p = F32; p <= BF16; p++) {
            for (int f = STRIDED; f <= LT; f++) {
                const void *a = p == BF16 ? a16 : a32, *b = p == BF16 ? b16 : b32;
                float ms[REPS];
                CK(cudaMemsetAsync(c, 0xff, nc * 4, st));   /* NaN: an unwritten C shows */
                for (int i = 0; i < WARMUP; i++)
                    gemm(f, p, tas[o], tbs[o], a, b, c, st);
                for (int i = 0; i < REPS; i++) {
                    CK(cudaEventRecord(e0, st));
                    gemm(f, p, tas[o], tbs[o], a, b, c, st);
                    CK(cudaEventRecord(e1, st));
                    CK(cudaEventSynchronize(e1));
                    CK(cudaEventElapsedTime(&ms[i], e0, e1));
                }
                CK(cudaGetLastError());
                qsort(ms, REPS, sizeof *ms, cmp_float);
                CK(cudaMemcpy(hc, c, nc * 4, cudaMemcpyDeviceToHost));
                if (p == F32 && f == STRIDED)
                    memcpy(h32, hc, nc * 4);
                double num = 0, den = 0;
                for (size_t i = 0; i < nc; i++) {
                    double d = (double)hc[i] - h32[i];
                    num += d * d;
                    den += (double)h32[i] * h32[i];
                }
                double rel = den > 0 ? sqrt(num / den) : NAN;
                printf("{\"form\": \"%s\", \"precision\": \"%s\", \"op\": \"%s\", \"m\": %d, "
                       "\"n\": %d, \"k\": %d, \"ms\": %.4f, \"tflops\": %.1f, \"rel_err\": %.3g}\n",
                       form_name[f], prec_name[p], opname[o], m, n, k, ms[REPS / 2],
                       flop / (ms[REPS / 2] * 1e-3) / 1e12, rel);
            }
        }
    }
    cublasLtDestroy(lt);
    cublasDestroy(blas);
    free(h), free(hc), free(h32), free(hb);
    return 0;
}
