/* compiler/llvm/llvm.h — the LLVM backend: a graph's kernel program (compiler/passes/fuse.h)
 * compiled through the LLVM 14 C API into one native function, JIT-compiled with ORC LLJIT.
 *
 * Contract:
 *  - dtl_backend_llvm implements runtime/exec.h's dtl_backend exactly like dtl_backend_ref:
 *    prepare verifies the graph, binds the store, runs the pass pipeline (passes.h) and
 *    fusion with the memory plan (fuse.h), builds one LLVM module, optimizes it (the new pass
 *    manager's default<O2> without loop unrolling) for the host CPU (its name and features:
 *    AVX2, FMA, AVX-512 where present) and JIT-compiles it; it computes the constant block
 *    and allocates the arena (64-byte aligned) once. run binds the inputs (dtl_inputs_bind),
 *    calls the compiled step and returns; it allocates nothing. A plan prepared with an
 *    output-ready hook (exec.h) is compiled with a call after the kernel that finishes each
 *    output (dtl_llvm_build_module_hooks); without one its code is exactly as before.
 *    Numerics are kernels/ref/ref.h's (float math in the dtype, f32 sums accumulated in double,
 *    NaN-propagating max/relu, integer division by zero is 0, saturating casts); results
 *    agree with ref within float rounding (the order of sums: matrix products, row
 *    reductions), and bit for bit for integers, bools, casts and rng_uniform. Its stats fill
 *    passes_seconds and llvm_seconds (prepare's CPU time).
 *  - JIT: one LLJIT per plan (no process-wide state besides LLVM's own one-time target
 *    initialization, done under pthread_once). Its code is freed by the plan's free. The
 *    runtime functions the code calls (gemm, the thread pool, the SINGLE-kernel shim, libm)
 *    are given to the JIT as absolute symbols; anything else (memcpy/memset that LLVM
 *    introduces) is looked up in the process.
 *  - Object cache: the optimized object of a module is kept in $DTL_CACHE_DIR/llvm/ (default
 *    $XDG_CACHE_HOME/dtl, else ~/.cache/dtl; "off" disables it), keyed by a hash of the
 *    unoptimized module's text, whether it has output-ready hooks, the CPU, its features, the
 *    pipeline and LLVM's version; a
 *    cached object is loaded instead of compiling. Files are written whole (temporary and
 *    rename); one that fails to load is removed and compiled again; failing to write the
 *    cache is not an error.
 *  - dtl_llvm_build_module is separate from the JIT so the same module can be written to an
 *    object file (ahead-of-time compilation): it emits `int32_t <prefix>step(void *const
 *    *slots)` whose argument layout is below and is described by dtl_llvm_layout.
 *
 * The step's argument is the array of slots described in llvm_rt.h (arena, constant block,
 * pool, dtl_llvm_rt, inputs, store entries); dtl_llvm_layout says how many and where each
 * graph output is after a step. It returns 0, or 1 + i when the i-th SINGLE kernel failed
 * (an index out of range), with the message in the dtl_llvm_rt's err (llvm_rt.h). One call
 * is one run of the graph: it stages outputs that are bound leaves, runs every kernel, and
 * commits the PARAM/STATE outputs into their store slots after all kernels ran (exec.h's
 * commit rule). Inputs must not overlap the arena or the store (they are assumed not to
 * alias anything written). A step may not run concurrently with itself on the same slots.
 * The module only declares what it calls, plain C functions resolved by name: dtl_gemm_f32,
 * dtl_gemm_f64 (kernels/cpu/gemm.h), dtl_pool_run (runtime/pool.h), dtl_llvm_rt_single
 * (and dtl_llvm_rt_ready in a module with hooks; llvm_rt.h) — all in libdtlrt.a — and
 * libm's tanhf/tanh plus whatever libm and libc functions LLVM lowers its intrinsics to
 * (expf, logf, sinf, cosf, powf and their double versions; memcpy, memmove, memset): link
 * with -lm.
 * Errors: values (dtl_err); nothing here prints.
 */
#ifndef DTL_LLVM_H
#define DTL_LLVM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../../runtime/exec.h"
#include "../passes/fuse.h"
#include "llvm_rt.h"   /* the slots, dtl_llvm_place, dtl_llvm_layout */

/* The LLVM C API's handles, declared as llvm-c/Types.h and TargetMachine.h declare them (C11
 * allows the repetition), so that including this header needs no LLVM include path. */
typedef struct LLVMOpaqueContext *LLVMContextRef;
typedef struct LLVMOpaqueModule *LLVMModuleRef;
typedef struct LLVMOpaqueTargetMachine *LLVMTargetMachineRef;

extern const dtl_backend dtl_backend_llvm;

/* The host's TargetMachine (triple, CPU name and features of this machine, the default
 * code generation level; jit: the JIT's code model, else position-independent code for an
 * object or a shared library). The caller disposes of it. */
LLVMTargetMachineRef dtl_llvm_host_tm(bool jit, dtl_err *err);

/* The module for kp in context ctx: the step function `<prefix>step` (prefix may be "" but
 * not NULL) with the layout above, and its kernels as internal functions (named with the
 * prefix too; small kernels are written into the step itself). Its data layout
 * and triple are tm's. *layout is filled (allocated in kp->arena). Unoptimized: run
 * dtl_llvm_optimize before compiling. Fails (DTL_ERR_USAGE) on a dtype or op it has no code
 * for. */
LLVMModuleRef dtl_llvm_build_module(LLVMContextRef ctx, LLVMTargetMachineRef tm,
                                    const dtl_kprog *kp, const char *prefix,
                                    dtl_llvm_layout *layout, dtl_err *err);

/* The same with output-ready hooks when hooks is true (llvm_rt.h): after the kernel that
 * finishes each graph output, a call to dtl_llvm_rt_ready; layout->ready_at says where each
 * output is then. hooks false gives exactly dtl_llvm_build_module's module. */
LLVMModuleRef dtl_llvm_build_module_hooks(LLVMContextRef ctx, LLVMTargetMachineRef tm,
                                          const dtl_kprog *kp, const char *prefix, bool hooks,
                                          dtl_llvm_layout *layout, dtl_err *err);

/* The new pass manager's pipeline (default<O2>, no loop unrolling) for tm; verifies the
 * module first (a failure is DTL_ERR_INTERNAL: a bug in the code generator). */
bool dtl_llvm_optimize(LLVMModuleRef m, LLVMTargetMachineRef tm, dtl_err *err);

/* `dtlc compile --emit=llvm|asm`: g (a verified graph, e.g. the step graph) through the
 * passes, fusion and codegen, optimized, printed as LLVM IR (asm false) or as the host's
 * assembly (asm true) to out. */
bool dtl_llvm_emit(FILE *out, const dtl_graph *g, bool asm_, dtl_err *err);

#endif
