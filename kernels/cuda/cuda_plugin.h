/* kernels/cuda/cuda_plugin.h — the interface between dtl (the loader, kernels/cuda/cuda_load.c)
 * and the CUDA backend's plugin, libdtlcuda.so (kernels/cuda/cuda_backend.c). Nothing but
 * those two files includes it; everyone else uses kernels/cuda/cuda.h.
 *
 * Contract:
 *  - The plugin exports exactly one symbol, DTL_CUDA_PLUGIN_ENTRY, a function of type
 *    dtl_cuda_plugin_entry_fn (its version script, kernels/cuda/plugin.map, hides the rest).
 *    The loader calls it once with the host's ABI string (dtl_cuda_abi) and the host's table
 *    (dtl_cuda_host); the plugin compares the string with its own first and, when they
 *    differ, returns NULL with both strings in why[0..len) and touches nothing else. The
 *    loader compares the returned table's abi too (a plugin too old to check).
 *  - The ABI string has the package version, DTL_CUDA_ABI_VERSION (bump it whenever this
 *    header changes) and the size of every struct that crosses the boundary, so a plugin of
 *    another build or another version of dtl is refused with a message, never run.
 *  - The store is the host's: a store made by dtl is only ever handled by dtl's own
 *    runtime/exec.c, which the plugin reaches through dtl_cuda_host (the device mirror it
 *    attaches, dtl_store_mirror, is then called back by that same exec.c: sync before a
 *    checkpoint, free with the store). The rest that the plugin needs — the graph IR, the
 *    passes and fusion, the reference kernels (constants), arena, dtype, err — it links as
 *    its own private copy (libdtlrt.a, compiled -fPIC, and the passes compiled again -fPIC):
 *    pure functions over the structs the ABI string covers, with no state of their own, so
 *    two copies in one process cannot disagree.
 *  - Both tables live for the whole process: the plugin is never unloaded (a store's mirror
 *    points into it, and CUDA's context is the plugin's).
 */
#ifndef DTL_CUDA_PLUGIN_H
#define DTL_CUDA_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "../../compiler/graph.h"
#include "../../runtime/err.h"
#include "../../runtime/exec.h"
#include "cuda_dp.h"

#define DTL_CUDA_ABI_VERSION 5   /* 2: dtl_backend.calls_ready, dtl_plan_opts.output_ready;
                                    3: dtl_cuda_plugin.dp (cuda_dp.h);
                                    4: dtl_cuda_dp_spec's init timeout and stuck form;
                                    5: host_alloc/host_free, input_dma_bytes */
#define DTL_CUDA_PLUGIN_ENTRY "dtl_cuda_plugin_v1"
#define DTL_CUDA_PLUGIN_FILE "libdtlcuda.so"

/* What the host gives the plugin: its store functions (runtime/exec.h). */
typedef struct dtl_cuda_host {
    dtl_store_entry *(*store_find)(dtl_store *s, const char *name);
    bool (*store_bind)(dtl_store *s, const dtl_graph *g, dtl_err *err);
    uint64_t (*store_seed)(const dtl_store *s);
    bool (*store_mirror_set)(dtl_store *s, const dtl_store_mirror *m, dtl_err *err);
    const dtl_store_mirror *(*store_mirror_get)(const dtl_store *s);
} dtl_cuda_host;

/* What the plugin gives back (see kernels/cuda/cuda.h for the functions' contracts). */
typedef struct dtl_cuda_plugin {
    const char *abi;     /* the plugin's dtl_cuda_abi string */
    const dtl_backend *backend;
    bool (*available)(char *why, size_t len);
    bool (*fusable)(const dtl_graph *g, char *why, size_t len);
    const dtl_cuda_dp_api *dp;   /* NCCL data parallel (kernels/cuda/cuda_dp.h) */
    void *(*host_alloc)(size_t bytes, char *why, size_t len);
    void (*host_free)(void *p);
} dtl_cuda_plugin;

typedef const dtl_cuda_plugin *dtl_cuda_plugin_entry_fn(const char *host_abi,
                                                        const dtl_cuda_host *host, char *why,
                                                        size_t len);

/* The ABI string of this build (see the contract). */
static inline void dtl_cuda_abi(char *buf, size_t len)
{
    snprintf(buf, len, "dtl %s, cuda abi %d, sizes: backend %zu graph %zu node %zu err %zu "
             "tensor %zu store_entry %zu mirror %zu binding %zu plan_opts %zu plan_stats %zu "
             "host %zu plugin %zu dp_api %zu dp_spec %zu", DTL_VERSION, DTL_CUDA_ABI_VERSION, sizeof(dtl_backend),
             sizeof(dtl_graph), sizeof(dtl_node), sizeof(dtl_err), sizeof(dtl_tensor),
             sizeof(dtl_store_entry), sizeof(dtl_store_mirror), sizeof(dtl_binding),
             sizeof(dtl_plan_opts), sizeof(dtl_plan_stats), sizeof(dtl_cuda_host),
             sizeof(dtl_cuda_plugin), sizeof(dtl_cuda_dp_api), sizeof(dtl_cuda_dp_spec));
}

#endif
