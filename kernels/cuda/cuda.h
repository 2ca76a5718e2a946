/* kernels/cuda/cuda.h — the CUDA backend: the dtl_backend interface (runtime/exec.h) on one
 * NVIDIA GPU; see docs/cuda.md. The plugin is built only when configure finds CUDA
 * (HAVE_CUDA); without it, the functions below exist and say that this build has no CUDA.
 *
 * Loading. The backend is a plugin, libdtlcuda.so, that links cudart and cuBLAS; dtl itself
 * (dtlc, libdtl.a) links no CUDA library — they cost every process ~200 MB and ~0.7 s at
 * start — and dlopen()s the plugin only when the cuda backend is asked for, through the
 * functions below (kernels/cuda/cuda_load.c; the plugin's side is kernels/cuda/cuda_plugin.h).
 * The plugin is looked for, first found wins:
 *    1. $DTL_CUDA_PLUGIN (a path; when set, nothing else is tried);
 *    2. libdtlcuda.so next to the running program (readlink /proc/self/exe): dtlc in its
 *       build directory;
 *    3. the build directory's libdtlcuda.so, when the running program lies under the build
 *       directory (tests/unit/test_cuda, bench/gpu_mlp_dtl);
 *    4. the installed one, $(pkglibdir)/libdtlcuda.so.
 * It is loaded once per process (a lazily initialized, thread-safe singleton: there is one
 * CUDA context per process anyway) and never unloaded. A plugin built for another dtl (its
 * ABI string differs: cuda_plugin.h) is refused with both strings in the message.
 *
 * Contract of the backend (on top of exec.h's):
 *  - prepare plans the graph once (kernels/cuda/cuda_plan.h: ONE device block per plan for
 *    input slots, constants, intermediates and status words), attaches a device mirror of
 *    the store (runtime/exec.h, dtl_store_mirror: every PARAM and STATE lives on the device
 *    from then on; the host entries are brought up to date by dtl_store_sync), computes the
 *    constants, and builds the list of launches with every pointer fixed.
 *  - run copies the bound inputs into their device slots (through pinned host buffers) and
 *    replays the step: the first run launches the list directly (warm-up: cuBLAS picks its
 *    kernels, every launch checked with its node named in the error), the second captures it
 *    into a CUDA Graph, and every later run launches that graph: one launch per step. A run
 *    returns once the work is queued (it does not wait for the GPU), except that a plan with
 *    gather/scatter_add waits to check its indices (an index out of range is an error, as on
 *    ref). DTL_CUDA_GRAPH=0 in the environment keeps launching the list (no graph).
 *  - output waits for the GPU and copies the one result asked for to the host (LOSS/VALUE
 *    into a pinned buffer of the plan; PARAM/STATE into the store's host entry).
 *  - Numerics: kernels/ref/ref.h's, f32 matrix products by cuBLAS in plain FP32 (no TF32:
 *    CUBLAS_DEFAULT_MATH; the order of the sums differs from ref's, so results agree within
 *    float rounding, not bit for bit). rng_uniform is bit for bit.
 *  - The process has one CUDA context for dtl: device 0 (or $DTL_CUDA_DEVICE), one stream,
 *    one cuBLAS handle with its workspace — a lazily created, thread-safe singleton (cuBLAS
 *    handles are expensive and meant to be one per thread and device). Plans use that one
 *    stream: they must not run concurrently from several threads.
 * Errors: every CUDA and cuBLAS call is checked; a failure is a dtl_err naming the call, the
 * node (%id, op and label) and CUDA's message. Nothing aborts.
 */
#ifndef DTL_CUDA_H
#define DTL_CUDA_H

#include <stdbool.h>
#include <stddef.h>

#include "../../runtime/exec.h"

/* The CUDA backend, the plugin loaded on the first call: NULL with a DTL_ERR_USAGE in err
 * saying why when this build has no CUDA, or the plugin cannot be found or loaded or was
 * built for another dtl. Touches no GPU: with no usable device it is returned all the same,
 * and preparing a plan fails with the reason (dtl_cuda_available tells beforehand). */
const dtl_backend *dtl_cuda_backend(dtl_err *err);

/* Whether a CUDA device can be used: false with the reason in why[0..len) (no CUDA in this
 * build, no plugin, no driver, no device, …); true with the device's name. Loads the plugin
 * and initializes the context. */
bool dtl_cuda_available(char *why, size_t len);

/* Whether prepare would run g as a fused kernel program (compiler/passes/fuse.h) rather than
 * one launch per node; what the program has (or why not) in why[0..len). Needs the plugin
 * (false, saying so, without it) but no GPU. */
bool dtl_cuda_fusable(const dtl_graph *g, char *why, size_t len);

/* Page-locked ("pinned") host memory of at least bytes, for inputs: a plan copies an input
 * of 64 KiB or more that lies in such memory by DMA straight from it, overlapping the
 * previous step, where pageable memory is first copied by the host into the plan's own
 * staging buffer (dtl_plan_stats.input_dma_bytes counts the first kind; with
 * DTL_CUDA_COPY_STREAM=0 every input takes the second way). run still returns
 * only once the caller's bytes are read, so the buffer may be refilled at once. NULL with a
 * DTL_ERR_USAGE (no CUDA build, no plugin) or DTL_ERR_NOMEM (CUDA refused: no device, no
 * memory; the message says which) in err. Free with dtl_cuda_host_free (NULL is fine), never
 * free(). */
void *dtl_cuda_host_alloc(size_t bytes, dtl_err *err);
void dtl_cuda_host_free(void *p);

/* The path of the plugin loaded, NULL before a successful dtl_cuda_backend. */
const char *dtl_cuda_plugin_path(void);

#endif
