/* tests/unit/test_cuda_gen.c — the CUDA source generator (kernels/cuda/cuda_gen.h), no GPU.
 *
 * For the step and eval graphs of the example MLP, the step graph of the character
 * transformer (softmax, layer norm, GELU, the causal mask, gather, AdamW), and small graphs built
 * here (softmax in f64, layer norm, GELU, where/masked_fill with iota, integer and bool
 * arithmetic, casts, reductions long and short, along the inner or an outer axis; bf16 casts,
 * a bf16 product), fused without and with ROW kernels, every ELEMWISE / REDUCE / MATMUL /
 * ROW kernel of the fused program must be generated (none refused), both with and without
 * vector loads, and each graph's module must compile with NVRTC for sm_90 (the device's
 * cubin) — a compile error fails the test and prints the log and the numbered source. Each
 * module is also compiled for the CPU (tests/unit/cuda_emu.h) and every kernel run there
 * against the reference backend (see "running the generated kernels on the CPU" below). One
 * small kernel's text is compared with a golden copy. NVRTC works
 * without a device; when this build has no NVRTC the generation checks still run and the
 * test exits 77 saying that nothing was compiled. DTL_CUDA_GEN_DUMP="mnist_mlp.dtl step" (a
 * graph's name as the messages give it) prints that graph's module (vector variant). */
#include "../../compiler/graph.h"
#include "../../compiler/lower.h"
#include "../../compiler/passes/fuse.h"
#include "../../compiler/passes/passes.h"
#include "../../kernels/cuda/cuda_gen.h"
#include "../../kernels/ref/ref.h"
#include "../../lang/check.h"
#include "../../lang/ctx.h"
#include "../../runtime/dtype.h"
#include "unit.h"

#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef HAVE_NVRTC
#include <nvrtc.h>
#endif

#define F32 DTL_DTYPE_F32
#define F64 DTL_DTYPE_F64
#define I32 DTL_DTYPE_I32
#define I64 DTL_DTYPE_I64
#define BOOL DTL_DTYPE_BOOL
#define BF16 DTL_DTYPE_BF16

static int nkernels, nmodules, ncompiled, nvec, strategies[6];
static double compile_s;

static void print_numbered(const char *s)
{
    int line = 1;
    fprintf(stderr, "%4d  ", line);
    for (; *s; s++) {
        fputc(*s, stderr);
        if (*s == '\n' && s[1])
            fprintf(stderr, "%4d  ", ++line);
    }
}

/* Compiles src for arch ("sm_90": a cubin; "compute_90": PTX); false with the log printed. */
static bool compile(const char *what, const char *src, const char *arch)
{
#ifdef HAVE_NVRTC
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    nvrtcProgram prog;
    nvrtcResult r = nvrtcCreateProgram(&prog, src, "dtl_gen.cu", 0, NULL, NULL);
    if (r != NVRTC_SUCCESS) {
        fprintf(stderr, "%s: nvrtcCreateProgram: %s\n", what, nvrtcGetErrorString(r));
        return false;
    }
    char opt[64];
    snprintf(opt, sizeof opt, "--gpu-architecture=%s", arch);
    const char *opts[] = {opt, "--std=c++17"};
    r = nvrtcCompileProgram(prog, 2, opts);
    size_t logn = 0;
    nvrtcGetProgramLogSize(prog, &logn);
    char *log = malloc(logn + 1);
    if (log && nvrtcGetProgramLog(prog, log) == NVRTC_SUCCESS)
        log[logn] = '\0';
    bool ok = r == NVRTC_SUCCESS;
    size_t bin = 0;
    if (ok)
        ok = (strncmp(arch, "sm_", 3) == 0 ? nvrtcGetCUBINSize(prog, &bin)
                                           : nvrtcGetPTXSize(prog, &bin)) == NVRTC_SUCCESS &&
             bin > 0;
    if (!ok) {
        fprintf(stderr, "%s: NVRTC (%s): %s\n%s\n--- the source:\n", what, arch,
                nvrtcGetErrorString(r), log ? log : "");
        print_numbered(src);
    } else if (log && strstr(log, "warning")) {
        fprintf(stderr, "%s: NVRTC warnings:\n%s\n", what, log);
    }
    free(log);
    nvrtcDestroyProgram(&prog);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    compile_s += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    ncompiled += ok;
    return ok;
#else
    (void)what, (void)src, (void)arch, (void)ncompiled, (void)compile_s, (void)print_numbered;
    return true;
#endif
}

/* Generates every fusable kernel of g's program (vec or not) into one module; checks that
 * none is refused; compiles the module. */
/* ---- running the generated kernels on the CPU ----
 * NVRTC proves the source compiles; this proves it computes what kernels/ref computes. The
 * graph is evaluated node by node with the reference kernels (leaves random: floats in
 * [0.1, 1), integers in [0, 4), bools 0/1); the module is compiled by the host's C++ compiler
 * with tests/unit/cuda_emu.h (CUDA's threads, barriers and shuffles as coroutines) and each
 * kernel is launched with its loaded arguments set to the reference values and its stored
 * ones to garbage, on at most 3 blocks (its loops are grid-stride: fewer blocks must give the
 * same result), and every stored value must equal the reference within float rounding
 * (sums are added in another order). Without a C++ compiler (DTL_EMU_CXX, else configure's
 * CXX) this part says so and is skipped; the rest of the test still runs. In a build with the
 * sanitizers the modules are compiled with them too (cuda_emu.h tells AddressSanitizer of
 * its threads' stacks), so a kernel's access out of its buffers is an error there. */

static const char *emu_cxx;   /* NULL: not looked for yet; "": none */
static int emu_kernels, emu_modules;

static bool emu_have_cxx(void)
{
    if (!emu_cxx) {
        const char *c = getenv("DTL_EMU_CXX");
        emu_cxx = c && *c ? c : DTL_EMU_CXX_DEFAULT;   /* (configure's, with its sanitizers) */
        char cmd[600];
        snprintf(cmd, sizeof cmd, "%s --version > /dev/null 2>&1", emu_cxx);
        if (system(cmd) != 0) {
            printf("no C++ compiler (%s): the generated kernels were not run on the CPU\n",
                   emu_cxx);
            emu_cxx = "";
        }
    }
    return *emu_cxx != 0;
}

static uint64_t emu_rng = 0x9e3779b97f4a7c15ull;
static double emu_uniform(void)
{
    emu_rng ^= emu_rng << 13, emu_rng ^= emu_rng >> 7, emu_rng ^= emu_rng << 17;
    return (double)(emu_rng >> 11) * 0x1p-53;
}

static size_t node_bytes(const dtl_node *n)
{
    return (size_t)dtl_node_numel(n) * dtl_dtype_size(n->dtype);
}

static void fill_random(const dtl_node *n, void *p)
{
    uint64_t m = dtl_node_numel(n);
    for (uint64_t i = 0; i < m; i++) {
        double u = emu_uniform();
        switch (n->dtype) {
        case F32: ((float *)p)[i] = (float)(0.1 + 0.9 * u); break;
        case F64: ((double *)p)[i] = 0.1 + 0.9 * u; break;
        case I32: ((int32_t *)p)[i] = (int32_t)(u * 4); break;
        case I64: ((int64_t *)p)[i] = (int64_t)(u * 4); break;
        case BF16: ((uint16_t *)p)[i] = dtl_bf16_from_f32((float)(0.1 + 0.9 * u)); break;
        default: ((uint8_t *)p)[i] = u < 0.5; break;
        }
    }
}

/* The value of every node of g (NULL on failure, said on stderr). */
static void **ref_values(const char *what, const dtl_graph *g)
{
    void **v = calloc(g->nnodes, sizeof *v);
    CHECK(v != NULL);
    for (uint32_t i = 0; v && i < g->nnodes; i++) {
        const dtl_node *n = dtl_g_node(g, i);
        v[i] = calloc(1, node_bytes(n) + 16);
        CHECK(v[i] != NULL);
        if (n->op == DTL_OP_INPUT || n->op == DTL_OP_PARAM || n->op == DTL_OP_STATE) {
            fill_random(n, v[i]);
            continue;
        }
        dtl_ref_arg in[8];
        int64_t shapes[8][DTL_MAX_RANK];
        CHECK(n->nin <= 8);
        for (uint32_t j = 0; j < n->nin && j < 8; j++) {
            const dtl_node *a = dtl_g_node(g, n->in[j]);
            CHECK(n->in[j] < i);   /* topological */
            memcpy(shapes[j], a->shape, sizeof shapes[j]);
            in[j] = (dtl_ref_arg){v[n->in[j]], a->dtype, a->rank, shapes[j]};
        }
        dtl_err err;
        if (!dtl_ref_kernel(n, in, v[i], 1, &err)) {
            fprintf(stderr, "%s: the reference cannot compute %%%u (%s): %s\n", what, i,
                    dtl_op_name(n->op), err.msg);
            CHECK(!"reference evaluation failed");
            for (uint32_t j = 0; j <= i; j++)
                free(v[j]);
            free(v);
            return NULL;
        }
    }
    return v;
}

static void free_values(const dtl_graph *g, void **v)
{
    for (uint32_t i = 0; v && i < g->nnodes; i++)
        free(v[i]);
    free(v);
}

/* Whether got equals the reference value want of node n (reports the first difference). */
static bool same_values(const char *what, const dtl_node *n, dtl_val id, const void *got,
                        const void *want)
{
    uint64_t m = dtl_node_numel(n);
    for (uint64_t i = 0; i < m; i++) {
        double g, w, tol = 0;
        switch (n->dtype) {
        case F32: g = ((const float *)got)[i], w = ((const float *)want)[i], tol = 1e-5; break;
        case F64: g = ((const double *)got)[i], w = ((const double *)want)[i], tol = 1e-12; break;
        case I32: g = ((const int32_t *)got)[i], w = ((const int32_t *)want)[i]; break;
        case I64: g = (double)((const int64_t *)got)[i], w = (double)((const int64_t *)want)[i];
            break;
        case BF16:   /* bit for bit: one rounding, the reference's */
            g = ((const uint16_t *)got)[i], w = ((const uint16_t *)want)[i];
            break;
        default: g = ((const uint8_t *)got)[i], w = ((const uint8_t *)want)[i] != 0; break;
        }
        if (g == w || (g != g && w != w) || fabs(g - w) <= tol * (1 + fabs(w)))
            continue;
        fprintf(stderr, "%s: %%%u (%s) element %llu: %.9g, the reference %.9g\n", what, id,
                dtl_op_name(n->op), (unsigned long long)i, g, w);
        return false;
    }
    return true;
}

static const char *emu_ctype(dtl_dtype t)
{
    return t == F32 ? "float" : t == F64 ? "double" : t == I32 ? "int" : t == I64 ? "long long"
         : t == BF16 ? "dtl_bf16" : "dtl_u8";
}

typedef struct emu_kernel {
    uint32_t k;
    dtl_cugen_info info;
} emu_kernel;

/* Compiles module src (its kernels ks[0..nks)) for the CPU and runs them against v. */
static void emu_module(const char *what, const dtl_kprog *kp, void **v, const char *src,
                       const emu_kernel *ks, int nks)
{
    char dir[] = "/tmp/dtl-emu.XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    char cpp[64], so[64], log[64];
    snprintf(cpp, sizeof cpp, "%s/m.cpp", dir);
    snprintf(so, sizeof so, "%s/m.so", dir);
    snprintf(log, sizeof log, "%s/log", dir);
    FILE *f = fopen(cpp, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs(src, f);
    for (int i = 0; i < nks; i++) {   /* a typed call and a launcher for each kernel */
        fprintf(f, "extern \"C\" void emu_entry_%u(void **a)\n{\n    dtl_k%u(", ks[i].k, ks[i].k);
        for (uint32_t j = 0; j < ks[i].info.nargs; j++)
            fprintf(f, "%s(%s *)a[%u]", j ? ", " : "",
                    emu_ctype(dtl_g_node(kp->g, ks[i].info.args[j])->dtype), j);
        fprintf(f, ");\n}\nextern \"C\" int emu_run_%u(void **a, unsigned grid)\n{\n"
                   "    return dtl_emu_launch(emu_entry_%u, a, grid, %uu);\n}\n",
                ks[i].k, ks[i].k, ks[i].info.block);
    }
    fclose(f);
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "%s -std=c++17 -O1 -ffp-contract=off -fPIC -shared -w %s -include "
             "%s/../tests/unit/cuda_emu.h -o %s %s > %s 2>&1", emu_cxx, DTL_EMU_SAN_FLAGS,
             DTL_SRC_STDLIB_DIR, so, cpp, log);
    int rc = system(cmd);
    void *h = rc == 0 ? dlopen(so, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (!h) {
        fprintf(stderr, "%s: the module does not build for the CPU (%s); the compiler said:\n",
                what, rc == 0 ? dlerror() : "c++ failed");
        snprintf(cmd, sizeof cmd, "head -c 4000 %s >&2", log);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
        CHECK(!"the module does not build for the CPU");
    }
    for (int i = 0; h && i < nks; i++) {
        const dtl_kernel *K = &kp->k[ks[i].k];
        char sym[40], w[300];
        snprintf(sym, sizeof sym, "emu_run_%u", ks[i].k);
        snprintf(w, sizeof w, "%s, kernel dtl_k%u", what, ks[i].k);
        int (*run)(void **, unsigned) = (int (*)(void **, unsigned))dlsym(h, sym);
        CHECK(run != NULL);
        if (!run)
            continue;
        void *args[DTL_CUGEN_MAX_ARGS];
        bool stored[DTL_CUGEN_MAX_ARGS];
        for (uint32_t j = 0; j < ks[i].info.nargs; j++) {
            dtl_val a = ks[i].info.args[j];
            const dtl_node *n = dtl_g_node(kp->g, a);
            size_t bytes = node_bytes(n);
            stored[j] = kp->kernel_of[a] == ks[i].k &&
                        !(K->kind == DTL_K_MATMUL && a == K->root);
            args[j] = aligned_alloc(64, (bytes + 63) / 64 * 64);
            CHECK(args[j] != NULL);
            if (stored[j])
                memset(args[j], 0xff, bytes);   /* garbage: NaN, -1, true */
            else
                memcpy(args[j], v[a], bytes);
        }
        unsigned grid = ks[i].info.grid < 3 ? ks[i].info.grid : 3;
        bool ok = run(args, grid) == 0;
        if (!ok)
            fprintf(stderr, "%s: the launch failed\n", w);
        for (uint32_t j = 0; ok && j < ks[i].info.nargs; j++)
            if (stored[j]) {
                dtl_val a = ks[i].info.args[j];
                ok = same_values(w, dtl_g_node(kp->g, a), a, args[j], v[a]);
            }
        CHECK(ok);
        emu_kernels++;
        for (uint32_t j = 0; j < ks[i].info.nargs; j++)
            free(args[j]);
    }
    if (h) {
        dlclose(h);
        emu_modules++;
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* Generates every kernel of kp (graph `what`; fused with ROW kernels when rows), compiles
 * the module with NVRTC and, given the reference values vals, runs it on the CPU. */
static void gen_kprog(const char *what, const dtl_kprog *kp, void **vals, bool scalar_too,
                      bool rows)
{
    emu_kernel *ks = calloc(kp->nk ? kp->nk : 1, sizeof *ks);
    CHECK(ks != NULL);
    for (int vec = scalar_too ? 0 : 1; ks && vec < 2; vec++) {
        int nks = 0;
        dtl_cugen_buf b;
        dtl_cugen_buf_init(&b);
        dtl_cugen_printf(&b, "%s", dtl_cugen_preamble());
        int here = 0;
        for (uint32_t i = 0; i < kp->nk; i++) {
            if (kp->k[i].kind == DTL_K_SINGLE)
                continue;
            char name[32], why[200] = "";
            snprintf(name, sizeof name, "dtl_k%u", i);
            dtl_cugen_opts o = {name, vec != 0};
            dtl_cugen_info info;
            size_t before = b.len;
            dtl_cugen_status st = dtl_cugen_kernel(&b, kp, i, &o, &info, why, sizeof why);
            if (st == DTL_CUGEN_UNSUPPORTED) {
                fprintf(stderr, "%s: kernel %u refused: %s\n", what, i, why);
                CHECK(!"a kernel was refused");
                continue;
            }
            if (st == DTL_CUGEN_EMPTY) {
                CHECK(kp->k[i].kind == DTL_K_MATMUL && b.len == before);
                continue;
            }
            CHECK(b.len > before && strstr(b.s + before, name) != NULL);
            CHECK(info.nargs > 0 && info.grid >= 1 &&
                  (info.strategy == DTL_CUGEN_ROW ? info.block % 32 == 0 && info.block <= 256
                                                  : info.block == 256));
            ks[nks++] = (emu_kernel){i, info};
            here++;
            if (vec == (scalar_too ? 0 : 1) && (!rows || kp->k[i].kind == DTL_K_ROW)) {
                nkernels++;
                strategies[info.strategy]++;
            }
            nvec += info.vec;
        }
        char w[200];
        snprintf(w, sizeof w, "%s (%s%s, %d kernels)", what, vec ? "vector" : "scalar",
                 rows ? ", rows" : "", here);
        const char *dump = getenv("DTL_CUDA_GEN_DUMP");   /* (a graph's name: its source) */
        if (dump && strcmp(dump, what) == 0 && vec && rows == !!getenv("DTL_CUDA_GEN_ROWS"))
            fputs(b.s, stdout);
        CHECK(compile(w, b.s, "sm_90"));
        nmodules++;
        if (vals)
            emu_module(w, kp, vals, b.s, ks, nks);
        dtl_cugen_buf_free(&b);
    }
    free(ks);
}

static void gen_graph(const char *what, const dtl_graph *g0, bool scalar_too)
{
    dtl_graph pg;
    dtl_err err;
    if (!dtl_passes_run(&pg, g0, NULL, &err)) {
        fprintf(stderr, "%s: passes: %s\n", what, err.msg);
        CHECK(!"passes failed");
        return;
    }
    void **vals = emu_have_cxx() ? ref_values(what, &pg) : NULL;
    /* fused as the cuda backend fuses without generated code (no ROW kernels), then with ROW
     * kernels when there are any (softmax, layer norm …: one generated kernel per row) */
    for (int rows = 0; rows < 2; rows++) {
        dtl_fuse_opts fo = {.no_rows = !rows};
        dtl_kprog *kp = dtl_fuse(&pg, &fo);
        CHECK(kp != NULL);
        bool has_rows = false;
        for (uint32_t i = 0; kp && i < kp->nk; i++)
            has_rows = has_rows || kp->k[i].kind == DTL_K_ROW;
        if (kp && (!rows || has_rows))
            gen_kprog(what, kp, vals, scalar_too, rows);
        dtl_kprog_free(kp);
    }
    free_values(&pg, vals);
    dtl_graph_free(&pg);
}

/* ---- models from .dtl files ---- */

static void gen_example(const char *file, int64_t batch, bool scalar_too)
{
    dtl_ctx ctx;
    dtl_ctx_init(&ctx);
    dtl_ctx_add_default_paths(&ctx);
    char path[512];
    snprintf(path, sizeof path, "%s/../examples/%s", DTL_SRC_STDLIB_DIR, file);
    dtl_module *mod = dtl_check_path(&ctx, path);
    bool ok = mod && !dtl_diag_failed(&ctx.diags);
    const dtl_train *t = ok ? dtl_lower_find_train(mod, NULL) : NULL;
    dtl_lower_opts o = {.batch = batch};
    dtl_lowered low;
    ok = t && dtl_lower_train(&ctx, t, &o, &low);
    CHECK(ok);
    if (ok) {
        char w[200];
        snprintf(w, sizeof w, "%s step", file);
        gen_graph(w, &low.step, scalar_too);
        snprintf(w, sizeof w, "%s eval", file);
        if (scalar_too)   /* (the big one: its step has every kernel kind of its eval) */
            gen_graph(w, &low.eval, scalar_too);
        dtl_lowered_free(&low);
    } else {
        fprintf(stderr, "cannot lower %s\n", file);
    }
    dtl_ctx_free(&ctx);
}

/* ---- small graphs ---- */

static const int64_t S8x37[] = {8, 37}, S16x64[] = {16, 64}, S4x1000[] = {4, 1000},
                     S8x8[] = {8, 8}, S8192[] = {8192}, S64x300[] = {64, 300},
                     S16x2048[] = {16, 2048}, S6x5[] = {6, 5}, S2x3x5[] = {2, 3, 5},
                     S512x40[] = {512, 40}, S3x100x70[] = {3, 100, 70};

static void g_softmax_f64(dtl_graph *g)
{
    dtl_val x = dtl_g_input(g, "x", F64, 2, S8x37);
    dtl_val m = dtl_g_reduce(g, DTL_OP_REDUCE_MAX, x, 2, true);
    dtl_val e = dtl_g_unary(g, DTL_OP_EXP, dtl_g_binary(g, DTL_OP_SUB, x, m));
    dtl_val s = dtl_g_reduce(g, DTL_OP_SUM, e, 2, true);
    dtl_g_output(g, DTL_OUT_VALUE, "y", dtl_g_binary(g, DTL_OP_DIV, e, s), DTL_VAL_NONE);
    dtl_g_output(g, DTL_OUT_VALUE, "lse",
                 dtl_g_binary(g, DTL_OP_ADD, dtl_g_unary(g, DTL_OP_LOG, s), m), DTL_VAL_NONE);
}

static void g_layer_norm(dtl_graph *g)
{
    dtl_val x = dtl_g_input(g, "x", F32, 2, S16x64);
    int64_t s64[] = {64};
    dtl_val ga = dtl_g_param(g, "g", F32, 1, s64, (dtl_init){0}),
            be = dtl_g_param(g, "b", F32, 1, s64, (dtl_init){0});
    dtl_val n = dtl_g_scalar(g, F32, 64);
    dtl_val mean = dtl_g_binary(g, DTL_OP_DIV, dtl_g_reduce(g, DTL_OP_SUM, x, 2, true), n);
    dtl_val d = dtl_g_binary(g, DTL_OP_SUB, x, mean);
    dtl_val var = dtl_g_binary(g, DTL_OP_DIV,
                               dtl_g_reduce(g, DTL_OP_SUM, dtl_g_binary(g, DTL_OP_MUL, d, d),
                                            2, true), n);
    dtl_val r = dtl_g_unary(g, DTL_OP_SQRT,
                            dtl_g_binary(g, DTL_OP_ADD, var, dtl_g_scalar(g, F32, 1e-5)));
    dtl_val y = dtl_g_binary(g, DTL_OP_ADD,
                             dtl_g_binary(g, DTL_OP_MUL, dtl_g_binary(g, DTL_OP_DIV, d, r), ga),
                             be);
    dtl_g_output(g, DTL_OUT_VALUE, "y", y, DTL_VAL_NONE);
}

static void g_gelu(dtl_graph *g)
{
    dtl_val x = dtl_g_input(g, "x", F32, 2, S4x1000);
    dtl_val x3 = dtl_g_binary(g, DTL_OP_MUL, dtl_g_binary(g, DTL_OP_MUL, x, x), x);
    dtl_val in = dtl_g_binary(g, DTL_OP_MUL, dtl_g_scalar(g, F32, 0.7978845608028654),
                              dtl_g_binary(g, DTL_OP_ADD, x,
                                           dtl_g_binary(g, DTL_OP_MUL,
                                                        dtl_g_scalar(g, F32, 0.044715), x3)));
    dtl_val t = dtl_g_binary(g, DTL_OP_ADD, dtl_g_scalar(g, F32, 1),
                             dtl_g_unary(g, DTL_OP_TANH, in));
    dtl_val y = dtl_g_binary(g, DTL_OP_MUL, dtl_g_binary(g, DTL_OP_MUL,
                                                         dtl_g_scalar(g, F32, 0.5), x), t);
    dtl_g_output(g, DTL_OUT_VALUE, "y", y, DTL_VAL_NONE);
    dtl_g_output(g, DTL_OUT_VALUE, "s", dtl_g_unary(g, DTL_OP_SIGMOID, y), DTL_VAL_NONE);
}

/* the causal mask of attention: where(col > row, -1e9, x); bools, ints, casts */
static void g_masked(dtl_graph *g)
{
    dtl_val x = dtl_g_input(g, "x", F32, 2, S8x8);
    dtl_val row = dtl_g_iota(g, I64, 2, S8x8, 0), col = dtl_g_iota(g, I64, 2, S8x8, 1);
    dtl_val mask = dtl_g_binary(g, DTL_OP_GT, col, row);
    dtl_val y = dtl_g_where(g, mask, dtl_g_broadcast(g, dtl_g_scalar(g, F32, -1e9), 2, S8x8), x);
    dtl_g_output(g, DTL_OUT_VALUE, "y", y, DTL_VAL_NONE);
    dtl_val pos = dtl_g_binary(g, DTL_OP_GE, x, dtl_g_scalar(g, F32, 0));
    dtl_val b = dtl_g_binary(g, DTL_OP_OR, dtl_g_binary(g, DTL_OP_AND, pos, mask),
                             dtl_g_unary(g, DTL_OP_NOT, dtl_g_binary(g, DTL_OP_NE, pos, mask)));
    dtl_g_output(g, DTL_OUT_VALUE, "b", b, DTL_VAL_NONE);
    dtl_val xi = dtl_g_cast(g, dtl_g_binary(g, DTL_OP_MUL, x, dtl_g_scalar(g, F32, 100)), I32);
    dtl_val q = dtl_g_binary(g, DTL_OP_DIV, xi, dtl_g_cast(g, col, I32));
    dtl_val ia = dtl_g_binary(g, DTL_OP_SUB, dtl_g_unary(g, DTL_OP_ABS, q),
                              dtl_g_unary(g, DTL_OP_NEG, dtl_g_binary(g, DTL_OP_MAX, xi, q)));
    dtl_g_output(g, DTL_OUT_VALUE, "isum", dtl_g_reduce(g, DTL_OP_SUM, ia, 2, false),
                 DTL_VAL_NONE);
    dtl_val il = dtl_g_binary(g, DTL_OP_MIN, dtl_g_cast(g, ia, I64), dtl_g_cast(g, b, I64));
    dtl_g_output(g, DTL_OUT_VALUE, "imax", dtl_g_reduce(g, DTL_OP_REDUCE_MAX, il, 1, false),
                 DTL_VAL_NONE);
    dtl_g_output(g, DTL_OUT_VALUE, "f", dtl_g_cast(g, dtl_g_cast(g, il, F64), F32),
                 DTL_VAL_NONE);
}

/* long, medium and short reductions, inner and outer axes, pow/relu/min */
static void g_reductions(dtl_graph *g)
{
    dtl_val a = dtl_g_input(g, "a", F32, 1, S8192);
    dtl_g_output(g, DTL_OUT_VALUE, "block",
                 dtl_g_reduce(g, DTL_OP_SUM, dtl_g_unary(g, DTL_OP_RELU, a), 1, false),
                 DTL_VAL_NONE);
    dtl_val b = dtl_g_input(g, "b", F32, 2, S64x300);
    dtl_g_output(g, DTL_OUT_VALUE, "warp",
                 dtl_g_reduce(g, DTL_OP_REDUCE_MAX,
                              dtl_g_binary(g, DTL_OP_POW, b, dtl_g_scalar(g, F32, 2)), 2, false),
                 DTL_VAL_NONE);
    dtl_val c = dtl_g_input(g, "c", F32, 2, S16x2048);
    dtl_g_output(g, DTL_OUT_VALUE, "thread",
                 dtl_g_reduce(g, DTL_OP_SUM, dtl_g_unary(g, DTL_OP_SIN, c), 1, false),
                 DTL_VAL_NONE);
    dtl_val d = dtl_g_input(g, "d", F64, 2, S6x5);
    dtl_g_output(g, DTL_OUT_VALUE, "small",
                 dtl_g_reduce(g, DTL_OP_SUM,
                              dtl_g_binary(g, DTL_OP_MIN, dtl_g_unary(g, DTL_OP_COS, d),
                                           dtl_g_scalar(g, F64, 0.25)), 3, true),
                 DTL_VAL_NONE);
    dtl_val f = dtl_g_input(g, "f", F32, 2, S512x40);
    dtl_g_output(g, DTL_OUT_VALUE, "column",
                 dtl_g_reduce(g, DTL_OP_REDUCE_MAX, dtl_g_unary(g, DTL_OP_EXP, f), 1, false),
                 DTL_VAL_NONE);
    dtl_val h = dtl_g_input(g, "h", F32, 3, S3x100x70);
    dtl_g_output(g, DTL_OUT_VALUE, "column2",
                 dtl_g_reduce(g, DTL_OP_SUM, dtl_g_binary(g, DTL_OP_MUL, h, h), 3, true),
                 DTL_VAL_NONE);
    dtl_val e = dtl_g_input(g, "e", I32, 3, S2x3x5);
    dtl_g_output(g, DTL_OUT_VALUE, "mid",
                 dtl_g_reduce(g, DTL_OP_SUM, dtl_g_binary(g, DTL_OP_MUL, e, e), 2, false),
                 DTL_VAL_NONE);
}

/* bf16 as mixed precision uses it (storage: casts in and out, a product of bf16 operands),
 * with rounding ties, overflow to inf (from f64 through f32) and a NaN. */
static void g_bf16(dtl_graph *g)
{
    static const int64_t S37x16[] = {37, 16};
    dtl_val x = dtl_g_input(g, "x", F32, 2, S8x37);
    dtl_val xb = dtl_g_cast(g, dtl_g_binary(g, DTL_OP_MUL, x, dtl_g_scalar(g, F32, 3.1)), BF16);
    dtl_g_output(g, DTL_OUT_VALUE, "xb", xb, DTL_VAL_NONE);
    dtl_g_output(g, DTL_OUT_VALUE, "back",
                 dtl_g_binary(g, DTL_OP_MUL, dtl_g_cast(g, xb, F32), x), DTL_VAL_NONE);
    dtl_g_output(g, DTL_OUT_VALUE, "rows", dtl_g_reduce(g, DTL_OP_SUM, dtl_g_cast(g, xb, F64), 2,
                                                        false), DTL_VAL_NONE);
    dtl_g_output(g, DTL_OUT_VALUE, "to_int", dtl_g_cast(g, xb, I32), DTL_VAL_NONE);
    dtl_g_output(g, DTL_OUT_VALUE, "nan",
                 dtl_g_cast(g, dtl_g_unary(g, DTL_OP_LOG, dtl_g_binary(g, DTL_OP_SUB, x,
                                                                       dtl_g_scalar(g, F32, 0.55))),
                            BF16), DTL_VAL_NONE);
    dtl_val d = dtl_g_input(g, "d", F64, 2, S8x37);
    dtl_g_output(g, DTL_OUT_VALUE, "from_f64",
                 dtl_g_cast(g, dtl_g_binary(g, DTL_OP_MUL, d, dtl_g_scalar(g, F64, 1e39)), BF16),
                 DTL_VAL_NONE);
    dtl_val i = dtl_g_input(g, "i", I32, 2, S8x37);
    dtl_g_output(g, DTL_OUT_VALUE, "from_int",
                 dtl_g_cast(g, dtl_g_binary(g, DTL_OP_MUL, i, dtl_g_scalar(g, I32, 100003)), BF16),
                 DTL_VAL_NONE);
    /* 257 .. 260: 257 and 259 are ties (bf16 keeps 8 bits): to even, 256 and 260 */
    dtl_g_output(g, DTL_OUT_VALUE, "ties",
                 dtl_g_cast(g, dtl_g_binary(g, DTL_OP_ADD, i, dtl_g_scalar(g, I32, 257)), BF16),
                 DTL_VAL_NONE);
    dtl_val w = dtl_g_input(g, "w", F32, 2, S37x16);
    dtl_g_output(g, DTL_OUT_VALUE, "product",
                 dtl_g_unary(g, DTL_OP_RELU, dtl_g_matmul(g, xb, dtl_g_cast(g, w, BF16))),
                 DTL_VAL_NONE);
}

static void run_small(const char *what, void (*build)(dtl_graph *))
{
    dtl_graph g;
    dtl_graph_init(&g);
    build(&g);
    FILE *f = fopen("/dev/null", "w");
    bool ok = dtl_graph_verify(&g, f ? f : stderr);
    if (f)
        fclose(f);
    CHECK(ok);
    if (ok)
        gen_graph(what, &g, true);
    else
        dtl_graph_verify(&g, stderr);
    dtl_graph_free(&g);
}

/* ---- the golden text: relu(x + b), x [4, 8], b [8] ---- */

static const char golden[] =
    "static DTL_F void k0_body(const unsigned e, const float v0, const float v1, float &y0)\n"
    "{\n"
    "    (void)e;\n"
    "    const float v2 = v0 + v1;\n"
    "    const float v3 = dtl_relu(v2);\n"
    "    y0 = v3;\n"
    "}\n"
    "extern \"C\" __global__ void __launch_bounds__(256) k0(const float * __restrict__ p0, "
    "const float * __restrict__ p1, float * __restrict__ p2)\n"
    "{\n"
    "    const unsigned tid = (unsigned)blockIdx.x * 256u + threadIdx.x;\n"
    "    const unsigned stride = (unsigned)gridDim.x * 256u;\n"
    "    for (unsigned e = tid; e < 32u; e += stride) {\n"
    "        const unsigned i1 = e % 8u;\n"
    "        const float v0 = p0[e];\n"
    "        const float v1 = p1[i1];\n"
    "        float y0;\n"
    "        k0_body(e, v0, v1, y0);\n"
    "        p2[e] = y0;\n"
    "    }\n"
    "}\n\n";

static void test_golden(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    int64_t s48[] = {4, 8}, s8[] = {8};
    dtl_val x = dtl_g_input(&g, "x", F32, 2, s48);
    dtl_val b = dtl_g_param(&g, "b", F32, 1, s8, (dtl_init){0});
    dtl_g_output(&g, DTL_OUT_VALUE, "y",
                 dtl_g_unary(&g, DTL_OP_RELU, dtl_g_binary(&g, DTL_OP_ADD, x, b)), DTL_VAL_NONE);
    dtl_fuse_opts fo = {.no_rows = true};
    dtl_kprog *kp = dtl_fuse(&g, &fo);
    CHECK(kp && kp->nk == 1 && kp->k[0].kind == DTL_K_ELEMWISE);
    if (kp && kp->nk == 1) {
        dtl_cugen_buf buf;
        dtl_cugen_buf_init(&buf);
        dtl_cugen_opts o = {"k0", false};
        dtl_cugen_info info;
        char why[200];
        CHECK(dtl_cugen_kernel(&buf, kp, 0, &o, &info, why, sizeof why) == DTL_CUGEN_OK);
        CHECK_STR(buf.s, golden);
        CHECK(info.nargs == 3 && info.args[0] == x && info.args[1] == b && info.grid == 1 &&
              info.restrict_ptrs && !info.vec);
        dtl_cugen_buf_free(&buf);
    }
    dtl_kprog_free(kp);
    dtl_graph_free(&g);
}

int main(void)
{
    test_golden();
    run_small("softmax f64", g_softmax_f64);
    run_small("layer norm", g_layer_norm);
    run_small("gelu", g_gelu);
    run_small("masked fill", g_masked);
    run_small("reductions", g_reductions);
    run_small("bf16", g_bf16);
    gen_example("mnist_mlp.dtl", 32, true);
    gen_example("char_transformer.dtl", 2, false);   /* (big: the vector variant only) */
    printf("%d kernels generated (%d flat, %d thread-, %d warp-, %d block-per-output, %d "
           "column reductions; %d with vector loads), %d modules\n", nkernels,
           strategies[DTL_CUGEN_FLAT], strategies[DTL_CUGEN_RED_THREAD],
           strategies[DTL_CUGEN_RED_WARP], strategies[DTL_CUGEN_RED_BLOCK],
           strategies[DTL_CUGEN_RED_COLUMN], nvec, nmodules);
    printf("%d ROW kernels generated (one per row block)\n", strategies[DTL_CUGEN_ROW]);
    if (*emu_cxx)
        printf("%d kernels of %d modules run on the CPU (tests/unit/cuda_emu.h) agree with the "
               "reference\n", emu_kernels, emu_modules);
    CHECK(strategies[DTL_CUGEN_FLAT] && strategies[DTL_CUGEN_RED_THREAD] &&
          strategies[DTL_CUGEN_RED_WARP] && strategies[DTL_CUGEN_RED_BLOCK] &&
          strategies[DTL_CUGEN_RED_COLUMN] && strategies[DTL_CUGEN_ROW] && nvec);
#ifdef HAVE_NVRTC
    {
        int maj = 0, min = 0;
        nvrtcVersion(&maj, &min);
        /* PTX for the virtual arch too (what a newer GPU would JIT) */
        dtl_cugen_buf b;
        dtl_cugen_buf_init(&b);
        dtl_cugen_printf(&b, "%s", dtl_cugen_preamble());
        CHECK(compile("the preamble (compute_90 PTX)", b.s, "compute_90"));
        dtl_cugen_buf_free(&b);
        printf("NVRTC %d.%d: %d of %d modules compiled (sm_90 cubin), %.2f s in all\n", maj,
               min, ncompiled - 1, nmodules, compile_s);
    }
#else
    printf("%d checks, %d failed (generation only)\n", check_count, check_failures);
    if (check_failures)
        return 1;
    printf("SKIP: this build has no NVRTC: the generated source was not compiled\n");
    return 77;
#endif
    CHECK_DONE();
}
