/* compiler/llvm/llvm.c — the LLVM backend: host target machine, optimization, the ORC LLJIT,
 * and the dtl_backend functions.
 *
 * Design. prepare runs the whole compiler after the graph: the pass pipeline into a graph the
 * plan owns, fusion and the memory plan (dtl_fuse), the module (codegen.c), default<O2> for
 * this CPU (dtl_llvm_optimize says why not O3), then an LLJIT of its own per plan — no
 * process-wide JIT, so a plan's code, its LLVM context and everything ORC allocated go away
 * with LLVMOrcDisposeLLJIT at free. The
 * JIT's main dylib gets the runtime's functions as absolute symbols (addresses taken here,
 * so nothing depends on the executable exporting them) and a generator that resolves the
 * rest (memcpy, memset, libm calls LLVM introduces) in the process. A plan holds the
 * step's slot array: the arena, the constant block, the pool, the SINGLE-kernel table, then
 * inputs (rebound at every run) and store entries (fixed). run binds the inputs into their
 * slots and calls the step: nothing is allocated.
 *
 * LLVM's target initialization is process-wide and not thread-safe: it runs once under
 * pthread_once. */
#include "llvm.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <llvm/Config/llvm-config.h>   /* LLVM_VERSION_STRING (C preprocessor only) */

#include "../../kernels/cpu/gemm.h"
#include "../../runtime/pool.h"
#include "../passes/passes.h"
#include "llvm_rt.h"

enum { PLAN_ALIGN = 64 };

/* The optimization pipeline (dtl_llvm_optimize); part of the object cache's key. */
#define OPT_PIPELINE "default<O2>"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static bool init_ok;

static void init_llvm(void)
{
    init_ok = LLVMInitializeNativeTarget() == 0 && LLVMInitializeNativeAsmPrinter() == 0 &&
              LLVMInitializeNativeAsmParser() == 0;
}

static bool llvm_ready(dtl_err *err)
{
    pthread_once(&init_once, init_llvm);
    return init_ok || dtl_err_set(err, DTL_ERR_USAGE, "llvm: this LLVM has no native target");
}

/* Consumes e. */
static bool llvm_error(dtl_err *err, dtl_err_kind kind, const char *what, LLVMErrorRef e)
{
    char *msg = LLVMGetErrorMessage(e);
    dtl_err_set(err, kind, "llvm: %s: %s", what, msg);
    LLVMDisposeErrorMessage(msg);
    return false;
}

LLVMTargetMachineRef dtl_llvm_host_tm(bool jit, dtl_err *err)
{
    if (!llvm_ready(err))
        return NULL;
    char *triple = LLVMGetDefaultTargetTriple();
    char *msg = NULL;
    LLVMTargetRef t;
    LLVMTargetMachineRef tm = NULL;
    if (LLVMGetTargetFromTriple(triple, &t, &msg) != 0) {
        dtl_err_set(err, DTL_ERR_USAGE, "llvm: no target for %s: %s", triple, msg ? msg : "");
    } else {
        char *cpu = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
        tm = LLVMCreateTargetMachine(t, triple, cpu, features, LLVMCodeGenLevelDefault,
                                     jit ? LLVMRelocDefault : LLVMRelocPIC,
                                     jit ? LLVMCodeModelJITDefault : LLVMCodeModelDefault);
        if (!tm)
            dtl_err_set(err, DTL_ERR_USAGE, "llvm: cannot make a target machine for %s (%s)",
                        triple, cpu);
        LLVMDisposeMessage(cpu);
        LLVMDisposeMessage(features);
    }
    LLVMDisposeMessage(msg);
    LLVMDisposeMessage(triple);
    return tm;
}

/* default<O2> with the loop vectorizer (and its interleaving) and the SLP vectorizer, but
 * without loop unrolling: the kernels' loops have constant trip counts, and unrolling the
 * small ones fully (rows of 10 logits, 32 batch rows) made the mnist step's code 4x larger
 * and its compilation 3-4x slower (about 1 s instead of 0.25 s of CPU) for no measurable gain
 * at run time; O3 added compile time for the same code. Machine code: CodeGenLevelDefault. */
bool dtl_llvm_optimize(LLVMModuleRef m, LLVMTargetMachineRef tm, dtl_err *err)
{
    char *msg = NULL;
    if (LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
        dtl_err_set(err, DTL_ERR_INTERNAL, "llvm: the generated module is invalid: %.400s",
                    msg ? msg : "");
        LLVMDisposeMessage(msg);
        return false;
    }
    LLVMDisposeMessage(msg);
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(po, 1);
    LLVMPassBuilderOptionsSetSLPVectorization(po, 1);
    LLVMPassBuilderOptionsSetLoopUnrolling(po, 0);
    LLVMPassBuilderOptionsSetLoopInterleaving(po, 1);
    LLVMErrorRef e = LLVMRunPasses(m, OPT_PIPELINE, tm, po);
    LLVMDisposePassBuilderOptions(po);
    return !e || llvm_error(err, DTL_ERR_INTERNAL, "optimizing", e);
}

/* CPU time of the calling thread. */
static double cpu_seconds(void)
{
    struct timespec t;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) != 0)
        return 0;
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The passes and fusion: a graph the caller owns (*pg, initialized here) and its program. */
static dtl_kprog *compile_graph(const dtl_graph *g, const dtl_plan_opts *opts, dtl_graph *pg,
                                dtl_err *err)
{
    if (!dtl_passes_run(pg, g, NULL, err))
        return NULL;
    dtl_fuse_opts fo = {.no_reuse = opts && opts->no_reuse};
    return dtl_fuse(pg, &fo);
}

/* ---- the plan ----------------------------------------------------------------------------- */

typedef struct llvm_plan {
    const dtl_graph *g0;          /* the caller's graph */
    dtl_graph g;                  /* after the passes: what the code computes */
    bool have_g;
    dtl_kprog *kp;
    dtl_store *store;
    dtl_llvm_layout L;
    dtl_llvm_rt rt;
    LLVMOrcLLJITRef jit;
    int32_t (*step)(void *const *slots);
    void **slots;
    void *arena, *cblock;
    uint32_t *inputs;             /* INPUT node ids, in order */
    bool hooks;                   /* the plan has an output-ready hook (exec.h) */
    dtl_plan_stats stats;
} llvm_plan;

static void jit_drop(llvm_plan *p);

static void llvm_free(void *vp)
{
    llvm_plan *p = vp;
    if (!p)
        return;
    jit_drop(p);
    free(p->arena);
    free(p->cblock);
    dtl_kprog_free(p->kp);
    if (p->have_g)
        dtl_graph_free(&p->g);
    free(p);
}

static void *aligned_zeroed(uint64_t bytes)
{
    size_t n = (size_t)((bytes ? bytes : 1) + PLAN_ALIGN - 1) / PLAN_ALIGN * PLAN_ALIGN;
    void *q = aligned_alloc(PLAN_ALIGN, n);
    if (q)
        memset(q, 0, n);
    return q;
}

/* The functions generated code calls, by address. */
typedef struct rt_sym {
    const char *name;
    void *addr;
} rt_sym;

static bool define_symbols(LLVMOrcLLJITRef jit, dtl_err *err)
{
    /* libm functions LLVM lowers intrinsics to (and may introduce in their place). */
    static float (*const f1[])(float) = {expf, logf, sinf, cosf, tanhf, exp2f, sqrtf, log2f,
                                         log10f};
    static double (*const d1[])(double) = {exp, log, sin, cos, tanh, exp2, sqrt, log2, log10};
    static const char *const n1[] = {"exp", "log", "sin", "cos", "tanh", "exp2", "sqrt", "log2",
                                     "log10"};
    enum { N1 = sizeof n1 / sizeof n1[0] };
    rt_sym syms[8 + 2 * N1];
    size_t n = 0;
    syms[n++] = (rt_sym){"dtl_pool_run", (void *)(uintptr_t)dtl_pool_run};
    syms[n++] = (rt_sym){"dtl_gemm_f32", (void *)(uintptr_t)dtl_gemm_f32};
    syms[n++] = (rt_sym){"dtl_gemm_f64", (void *)(uintptr_t)dtl_gemm_f64};
    syms[n++] = (rt_sym){"dtl_llvm_rt_single", (void *)(uintptr_t)dtl_llvm_rt_single};
    syms[n++] = (rt_sym){"dtl_llvm_rt_ready", (void *)(uintptr_t)dtl_llvm_rt_ready};
    syms[n++] = (rt_sym){"powf", (void *)(uintptr_t)powf};
    syms[n++] = (rt_sym){"pow", (void *)(uintptr_t)pow};
    char names[2 * N1][16];
    for (size_t i = 0; i < N1; i++) {
        snprintf(names[2 * i], sizeof names[0], "%sf", n1[i]);
        syms[n++] = (rt_sym){names[2 * i], (void *)(uintptr_t)f1[i]};
        syms[n++] = (rt_sym){n1[i], (void *)(uintptr_t)d1[i]};
    }
    LLVMJITCSymbolMapPair pairs[8 + 2 * N1];
    for (size_t i = 0; i < n; i++) {
        pairs[i].Name = LLVMOrcLLJITMangleAndIntern(jit, syms[i].name);
        pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)syms[i].addr;
        pairs[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported |
                                          LLVMJITSymbolGenericFlagsCallable;
        pairs[i].Sym.Flags.TargetFlags = 0;
    }
    LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(jit);
    LLVMErrorRef e = LLVMOrcJITDylibDefine(jd, LLVMOrcAbsoluteSymbols(pairs, n));
    if (e)
        return llvm_error(err, DTL_ERR_INTERNAL, "defining the runtime's symbols", e);
    LLVMOrcDefinitionGeneratorRef gen;
    e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
        &gen, LLVMOrcLLJITGetGlobalPrefix(jit), NULL, NULL);
    if (e)
        return llvm_error(err, DTL_ERR_INTERNAL, "searching the process", e);
    LLVMOrcJITDylibAddGenerator(jd, gen);
    return true;
}

/* ---- the object cache ---------------------------------------------------------------------
 * Optimizing and generating machine code is nearly all of prepare's time, and its result is a
 * function of the unoptimized module's text, the CPU (name and features) and this code. So
 * the object is kept in $DTL_CACHE_DIR (else $XDG_CACHE_HOME/dtl, else ~/.cache/dtl), under
 * llvm/<128-bit hash of all that>.o; DTL_CACHE_DIR=off disables it. Files are written to a
 * temporary and renamed, so a reader sees a whole object or none; one that fails to load is
 * removed and compiled again. Failing to write the cache is not an error. */

enum { CACHE_PATH = 4096 };
/* Change it with anything that changes the object of a given module besides the pipeline's
 * name: the pass builder's options, the target machine's settings. */
#define CACHE_VERSION "dtl-llvm-object-v1 unroll=0 codegen=default"

static bool cache_dir(char *dir, size_t len)
{
    const char *env = getenv("DTL_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int k;
    if (env && strcmp(env, "off") == 0)
        return false;
    if (env && *env)
        k = snprintf(dir, len, "%s/llvm", env);
    else if (xdg && *xdg)
        k = snprintf(dir, len, "%s/dtl/llvm", xdg);
    else if (home && *home)
        k = snprintf(dir, len, "%s/.cache/dtl/llvm", home);
    else
        return false;
    return k > 0 && (size_t)k < len;
}

/* mkdir -p */
static bool make_dirs(char *dir)
{
    for (char *q = dir + 1;; q++) {
        if (*q != '/' && *q != '\0')
            continue;
        char c = *q;
        *q = '\0';
        bool ok = mkdir(dir, 0777) == 0 || errno == EEXIST;
        *q = c;
        if (!ok)
            return false;
        if (!c)
            return true;
    }
}

/* FNV-1a, two 64-bit lanes with different bases. */
static void hash_add(uint64_t h[2], const char *s)
{
    for (; *s; s++) {
        h[0] = (h[0] ^ (uint8_t)*s) * 0x100000001b3ULL;
        h[1] = (h[1] ^ (uint8_t)*s) * 0x100000001b3ULL;
    }
    h[0] = (h[0] ^ 0xff) * 0x100000001b3ULL;   /* a separator between the parts */
    h[1] = (h[1] ^ 0xfe) * 0x100000001b3ULL;
}

/* The cache file for module m on tm (built with output-ready hooks or not); false when
 * there is no cache. */
static bool cache_path(LLVMModuleRef m, LLVMTargetMachineRef tm, bool hooks, char *path,
                       size_t len)
{
    char dir[CACHE_PATH - 64];
    if (!cache_dir(dir, sizeof dir))
        return false;
    uint64_t h[2] = {0xcbf29ce484222325ULL, 0x84222325cbf29ce4ULL};
    char *cpu = LLVMGetTargetMachineCPU(tm), *features = LLVMGetTargetMachineFeatureString(tm);
    char *text = LLVMPrintModuleToString(m);
    hash_add(h, CACHE_VERSION " " OPT_PIPELINE " " LLVM_VERSION_STRING);
    if (hooks)   /* (the module's text differs too; without hooks the key is as it was) */
        hash_add(h, "output-ready hooks");
    hash_add(h, cpu);
    hash_add(h, features);
    hash_add(h, text);
    LLVMDisposeMessage(text);
    LLVMDisposeMessage(features);
    LLVMDisposeMessage(cpu);
    int k = snprintf(path, len, "%s/%016llx%016llx.o", dir, (unsigned long long)h[0],
                     (unsigned long long)h[1]);
    return k > 0 && (size_t)k < len;
}

static LLVMMemoryBufferRef cache_read(const char *path)
{
    LLVMMemoryBufferRef buf = NULL;
    char *msg = NULL;
    if (LLVMCreateMemoryBufferWithContentsOfFile(path, &buf, &msg) != 0)
        buf = NULL;
    LLVMDisposeMessage(msg);
    return buf;
}

static void cache_write(const char *path, LLVMMemoryBufferRef obj)
{
    char dir[CACHE_PATH], tmp[CACHE_PATH + 32];
    if ((size_t)snprintf(dir, sizeof dir, "%s", path) >= sizeof dir)
        return;
    char *slash = strrchr(dir, '/');
    if (!slash)
        return;
    *slash = '\0';
    if (!make_dirs(dir))
        return;
    snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", path);   /* unique: threads may race too */
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        return;
    }
    size_t n = LLVMGetBufferSize(obj);
    bool ok = fwrite(LLVMGetBufferStart(obj), 1, n, f) == n;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0)
        unlink(tmp);
}

/* ---- the JIT ------------------------------------------------------------------------------ */

/* A new LLJIT in p->jit for the object obj (consumed) and its step's address in p->step. */
static bool jit_load(llvm_plan *p, LLVMMemoryBufferRef obj, dtl_err *err)
{
    LLVMTargetMachineRef jtm = dtl_llvm_host_tm(true, err);
    if (!jtm) {
        LLVMDisposeMemoryBuffer(obj);
        return false;
    }
    LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(
        jb, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(jtm));
    LLVMErrorRef e = LLVMOrcCreateLLJIT(&p->jit, jb);
    if (e) {
        p->jit = NULL;
        LLVMDisposeMemoryBuffer(obj);
        return llvm_error(err, DTL_ERR_INTERNAL, "creating the JIT", e);
    }
    if (!define_symbols(p->jit, err)) {
        LLVMDisposeMemoryBuffer(obj);
        return false;
    }
    e = LLVMOrcLLJITAddObjectFile(p->jit, LLVMOrcLLJITGetMainJITDylib(p->jit), obj);
    if (e)
        return llvm_error(err, DTL_ERR_INTERNAL, "loading the object", e);
    LLVMOrcExecutorAddress addr = 0;
    e = LLVMOrcLLJITLookup(p->jit, &addr, "dtl_step");
    if (e)
        return llvm_error(err, DTL_ERR_INTERNAL, "linking", e);
    p->step = (int32_t(*)(void *const *))(uintptr_t)addr;
    return true;
}

static void jit_drop(llvm_plan *p)
{
    if (p->jit) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(p->jit);
        if (e)
            LLVMConsumeError(e);
    }
    p->jit = NULL;
    p->step = NULL;
}

/* Builds p->kp's module (which fills p->L), then loads its object from the cache or
 * optimizes and compiles it; sets p->jit and p->step. */
static bool jit_compile(llvm_plan *p, dtl_err *err)
{
    LLVMTargetMachineRef tm = dtl_llvm_host_tm(true, err);
    if (!tm)
        return false;
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef m = dtl_llvm_build_module_hooks(ctx, tm, p->kp, "dtl_", p->hooks, &p->L, err);
    char path[CACHE_PATH];
    bool cached = m && cache_path(m, tm, p->hooks, path, sizeof path);
    LLVMMemoryBufferRef obj = cached ? cache_read(path) : NULL;
    bool ok = m != NULL;
    if (obj) {
        dtl_err lerr;
        if (jit_load(p, obj, &lerr)) {
            LLVMDisposeModule(m);
            LLVMContextDispose(ctx);
            LLVMDisposeTargetMachine(tm);
            return true;
        }
        jit_drop(p);   /* a bad cache file: compile again and replace it */
        unlink(path);
    }
    obj = NULL;
    ok = ok && dtl_llvm_optimize(m, tm, err);
    if (ok) {
        char *msg = NULL;
        if (LLVMTargetMachineEmitToMemoryBuffer(tm, m, LLVMObjectFile, &msg, &obj)) {
            ok = dtl_err_set(err, DTL_ERR_INTERNAL, "llvm: generating code: %s",
                             msg ? msg : "");
            obj = NULL;
        }
        LLVMDisposeMessage(msg);
    }
    if (m)
        LLVMDisposeModule(m);
    LLVMContextDispose(ctx);
    LLVMDisposeTargetMachine(tm);
    if (!ok)
        return false;
    if (cached)
        cache_write(path, obj);
    return jit_load(p, obj, err);
}

static void *llvm_prepare(const dtl_graph *g, dtl_store *store, const dtl_plan_opts *opts,
                          dtl_err *err)
{
    if (!dtl_graph_check(g, "llvm", err) || !llvm_ready(err))
        return NULL;
    for (uint32_t id = 0; id < g->nnodes; id++)
        if (!dtl_ref_supports_node(g, id)) {
            dtl_err_set(err, DTL_ERR_USAGE, "llvm: %%%u (%s): dtype %s is not supported", id,
                        dtl_op_name(g->nodes[id].op), dtl_dtype_name(g->nodes[id].dtype));
            return NULL;
        }
    if (!dtl_store_bind(store, g, err))
        return NULL;
    llvm_plan *p = calloc(1, sizeof *p);
    if (!p) {
        dtl_err_set(err, DTL_ERR_NOMEM, "llvm: out of memory");
        return NULL;
    }
    p->g0 = g;
    p->store = store;
    p->hooks = opts && opts->output_ready;
    p->have_g = true;   /* initialized by the passes even when they fail */
    double t0 = cpu_seconds();
    if (!(p->kp = compile_graph(g, opts, &p->g, err))) {
        llvm_free(p);
        return NULL;
    }
    double t1 = cpu_seconds();
    if (!jit_compile(p, err)) {
        llvm_free(p);
        return NULL;
    }
    p->stats.passes_seconds = t1 - t0;
    p->stats.llvm_seconds = cpu_seconds() - t1;
    const dtl_kprog *kp = p->kp;
    dtl_arena *A = &p->kp->arena;
    p->arena = aligned_zeroed(p->L.arena_bytes);
    p->cblock = aligned_zeroed(p->L.const_bytes);
    if (!p->arena || !p->cblock) {
        dtl_err_set(err, DTL_ERR_NOMEM, "llvm: out of memory planning %llu bytes",
                    (unsigned long long)(p->L.arena_bytes + p->L.const_bytes));
        llvm_free(p);
        return NULL;
    }
    if (!dtl_llvm_consts_fill(kp, p->cblock, dtl_store_seed(store), err)) {
        llvm_free(p);
        return NULL;
    }
    dtl_llvm_rt_init(&p->rt, kp, &p->L, dtl_store_seed(store), A);
    if (p->hooks) {
        p->rt.ready = opts->output_ready;
        p->rt.ready_ctx = opts->ready_ctx;
    }
    p->slots = dtl_arena_array(A, p->L.nslots, sizeof *p->slots);
    p->slots[DTL_LLVM_SLOT_ARENA] = p->arena;
    p->slots[DTL_LLVM_SLOT_CONST] = p->cblock;
    p->slots[DTL_LLVM_SLOT_POOL] = dtl_pool_default();
    p->slots[DTL_LLVM_SLOT_RT] = &p->rt;
    p->inputs = dtl_arena_array(A, p->L.ninputs + 1, sizeof *p->inputs);
    for (uint32_t s = DTL_LLVM_SLOT_FIRST_INPUT; s < p->L.nslots; s++) {
        const dtl_node *n = &p->g.nodes[p->L.slot_node[s]];
        if (n->op == DTL_OP_INPUT)
            p->inputs[s - DTL_LLVM_SLOT_FIRST_INPUT] = p->L.slot_node[s];
        else
            p->slots[s] = dtl_store_find(store, n->name)->t.data;
    }
    /* The arena as allocated: the plan's, then staging and matmul scratch (codegen.c). */
    uint64_t extra = p->L.arena_bytes - (kp->arena_bytes + 63) / 64 * 64;
    p->stats.arena_bytes = (size_t)p->L.arena_bytes;
    p->stats.naive_bytes = (size_t)(kp->naive_bytes + extra);
    p->stats.const_bytes = (size_t)kp->const_bytes;
    return p;
}

static bool llvm_run(void *vp, const dtl_binding *in, size_t nin, dtl_err *err)
{
    llvm_plan *p = vp;
    if (!dtl_inputs_bind(&p->g, p->inputs, p->L.ninputs, in, nin,
                         (const void **)(p->slots + DTL_LLVM_SLOT_FIRST_INPUT), err))
        return false;
    if (p->step(p->slots) != 0)
        return dtl_err_set(err, p->rt.err.kind, "%s", p->rt.err.msg);
    p->stats.runs++;
    return true;
}

static bool llvm_output(void *vp, const char *name, dtl_tensor *out, dtl_err *err)
{
    llvm_plan *p = vp;
    int64_t k = dtl_output_find(&p->g, name, err);
    if (k < 0)
        return false;
    dtl_output_view(&p->g, (uint32_t)k,
                    (char *)p->slots[p->L.out[k].slot] + p->L.out[k].offset, out);
    return true;
}

static void llvm_stats(const void *vp, dtl_plan_stats *st)
{
    *st = ((const llvm_plan *)vp)->stats;
}

const dtl_backend dtl_backend_llvm = {
    .name = "llvm",
    .prepare = llvm_prepare,
    .run = llvm_run,
    .output = llvm_output,
    .stats = llvm_stats,
    .free = llvm_free,
    .calls_ready = true,
};

/* ---- --emit=llvm|asm ---------------------------------------------------------------------- */

bool dtl_llvm_emit(FILE *out, const dtl_graph *g, bool asm_, dtl_err *err)
{
    if (!dtl_graph_check(g, "llvm", err))
        return false;
    dtl_graph pg;
    dtl_kprog *kp = compile_graph(g, NULL, &pg, err);
    LLVMTargetMachineRef tm = kp ? dtl_llvm_host_tm(false, err) : NULL;
    LLVMContextRef ctx = LLVMContextCreate();
    dtl_llvm_layout L;
    LLVMModuleRef m = tm ? dtl_llvm_build_module(ctx, tm, kp, "dtl_", &L, err) : NULL;
    bool ok = m && dtl_llvm_optimize(m, tm, err);
    if (ok && !asm_) {
        char *s = LLVMPrintModuleToString(m);
        fputs(s, out);
        LLVMDisposeMessage(s);
    } else if (ok) {
        char *msg = NULL;
        LLVMMemoryBufferRef buf = NULL;
        if (LLVMTargetMachineEmitToMemoryBuffer(tm, m, LLVMAssemblyFile, &msg, &buf)) {
            ok = dtl_err_set(err, DTL_ERR_INTERNAL, "llvm: emitting assembly: %s",
                             msg ? msg : "");
        } else {
            fwrite(LLVMGetBufferStart(buf), 1, LLVMGetBufferSize(buf), out);
            LLVMDisposeMemoryBuffer(buf);
        }
        LLVMDisposeMessage(msg);
    }
    if (m)
        LLVMDisposeModule(m);
    LLVMContextDispose(ctx);
    if (tm)
        LLVMDisposeTargetMachine(tm);
    dtl_kprog_free(kp);
    dtl_graph_free(&pg);
    return ok;
}
