/* runtime/exec.h — running graphs: the parameter store, the backend interface, plans.
 *
 * Contract:
 *  - A dtl_store owns the persistent tensors of a model, keyed by name: every PARAM (created
 *    on first sight and filled by dtl_init_fill with the store's seed) and every STATE
 *    (created zero). The step graph, the eval graph and the infer graph of one model are
 *    planned against the same store and so share their parameters. Entries never move and
 *    are freed only by dtl_store_free. A store holds host memory.
 *  - A backend is a struct of function pointers (STYLE habit 8): prepare turns a verified
 *    graph into a plan (memory planned once, the store's entries created or checked), run
 *    executes it, output reads a named result, free releases the plan. Each backend keeps
 *    its own plan type behind `void *`; dtl_plan is the backend-neutral handle.
 *  - Inputs are bound by name at every run; each INPUT node of the graph must be bound
 *    exactly once, with exactly its dtype and shape (else a DTL_ERR_MISMATCH naming the
 *    input, expected vs found). Bindings the graph has no input for are ignored, so one
 *    list can serve the step and the eval graph. Input data is read during the run only.
 *  - A run computes every node, then commits: each PARAM/STATE output is copied into its
 *    store entry only after all nodes ran, so every node of the run saw the old values.
 *  - A run allocates nothing (the reference backend: one arena for all intermediates,
 *    planned by liveness at prepare; constants computed once at prepare).
 *  - Outputs (LOSS, VALUE) are read by name after a run as host views valid until the next
 *    run or dtl_plan_free; PARAM/STATE outputs read as the store's (committed) entry.
 *  - Output-ready hook (dtl_plan_opts.output_ready): each output reported once per run, as
 *    soon as it is final, before run returns (see dtl_plan_opts); every backend gets it, from
 *    dtl_plan_run after the run when the backend does not call it itself (calls_ready).
 *  - The graph and the store must outlive every plan made from them.
 *  - Device mirrors: a backend that keeps PARAM/STATE in device memory (cuda) attaches one
 *    dtl_store_mirror to the store at prepare; its plans then read and update the device
 *    copies, which are the current values. Code that reads the store's host entries between
 *    runs (checkpoints) calls dtl_store_sync(DTL_SYNC_TO_HOST) first; code that writes them
 *    (--load, --resume) calls dtl_store_sync(DTL_SYNC_TO_DEVICE) after. Without a mirror
 *    (ref, llvm) both are no-ops. PARAM/STATE outputs read through dtl_plan_output are
 *    brought to the host by the backend itself. A store whose plans change backend (the
 *    REPL's `:backend` while training) hands its values over with dtl_store_handover: the
 *    mirror is stale once another backend has run on the host entries, and the host entries
 *    are stale while the mirror's owner runs.
 * Errors: prepare, run and output return false/NULL with err set; nothing here prints.
 */
#ifndef DTL_EXEC_H
#define DTL_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../compiler/graph.h"
#include "err.h"

/* A view of a dense row-major tensor (not owning). */
typedef struct dtl_tensor {
    void *data;
    dtl_dtype dtype;
    uint32_t rank;
    int64_t shape[DTL_MAX_RANK];
} dtl_tensor;

uint64_t dtl_tensor_numel(const dtl_tensor *t);

/* ---- the store of parameters and states ---- */

typedef struct dtl_store dtl_store;

typedef struct dtl_store_entry {
    const char *name;
    bool is_state;       /* STATE (optimizer moments …); else PARAM */
    dtl_tensor t;        /* data: owned by the store, 64-byte aligned, never moves */
} dtl_store_entry;

dtl_store *dtl_store_new(uint64_t seed);
void dtl_store_free(dtl_store *s);
uint64_t dtl_store_seed(const dtl_store *s);
size_t dtl_store_count(const dtl_store *s);
dtl_store_entry *dtl_store_at(dtl_store *s, size_t i);          /* in creation order */
dtl_store_entry *dtl_store_find(dtl_store *s, const char *name);  /* NULL: none */
/* A new zeroed entry, or the existing one if it has the same kind, dtype and shape (else a
 * DTL_ERR_MISMATCH). *created (when not NULL) tells which. */
dtl_store_entry *dtl_store_add(dtl_store *s, const char *name, bool is_state, dtl_dtype dt,
                               uint32_t rank, const int64_t *shape, bool *created,
                               dtl_err *err);
/* The entries for every PARAM and STATE of g: new params initialized per their dtl_init,
 * new states zero, existing ones checked. (dtl_plan_new calls it.) */
bool dtl_store_bind(dtl_store *s, const dtl_graph *g, dtl_err *err);

/* A device copy of the store's entries (see the contract above). The store owns it once
 * attached: dtl_store_free calls free(impl) — every plan must be freed before the store. */
typedef enum dtl_sync_dir { DTL_SYNC_TO_HOST, DTL_SYNC_TO_DEVICE } dtl_sync_dir;
typedef struct dtl_store_mirror {
    const char *owner;   /* the backend's name */
    void *impl;
    bool (*sync)(void *impl, dtl_store *s, dtl_sync_dir dir, dtl_err *err);
    void (*free)(void *impl);
} dtl_store_mirror;
/* Attaches a copy of *m; a DTL_ERR_USAGE when a mirror of another owner is attached. */
bool dtl_store_mirror_set(dtl_store *s, const dtl_store_mirror *m, dtl_err *err);
const dtl_store_mirror *dtl_store_mirror_get(const dtl_store *s);   /* NULL: none */
/* TO_HOST: the host entries get the device values; TO_DEVICE: the other way (every entry).
 * True without a mirror. */
bool dtl_store_sync(dtl_store *s, dtl_sync_dir dir, dtl_err *err);
/* The current values go from the plans of backend `from` to those of backend `to` (names;
 * NULL: the host entries, read or written by the caller): to the host when from owns the
 * mirror, then to the device when to owns it. True when there is nothing to do. */
bool dtl_store_handover(dtl_store *s, const char *from, const char *to, dtl_err *err);

/* ---- backends and plans ---- */

typedef struct dtl_binding {
    const char *name;
    const void *data;
    dtl_dtype dtype;
    uint32_t rank;
    int64_t shape[DTL_MAX_RANK];
} dtl_binding;

typedef struct dtl_plan_opts {
    bool no_reuse;       /* give every intermediate its own memory (testing the planner) */
    /* The output-ready hook (NULL: none). Called during dtl_plan_run, on the calling thread,
     * once per output k of the graph (g->outs order) as soon as its value is final (no later
     * kernel of the run writes it), at the latest before run returns; value is a host view of
     * that value (for PARAM/STATE outputs: the new value, whether or not committed yet),
     * valid during the call only. A run that fails may have reported some outputs. A
     * backend with calls_ready calls it as it goes; for the others dtl_plan_run calls it
     * after the backend's run, for every output in order, through dtl_plan_output. Data
     * parallel training starts the allreduce of gradients from it while backward still runs
     * (runtime/comm/ddp.h). */
    void (*output_ready)(void *ctx, uint32_t k, const dtl_tensor *value);
    void *ready_ctx;
} dtl_plan_opts;

typedef struct dtl_plan_stats {
    size_t arena_bytes;  /* intermediates, after liveness-based reuse */
    size_t naive_bytes;  /* what they would take without reuse */
    size_t const_bytes;  /* constants, computed once */
    uint64_t runs;
    /* Compiling backends (llvm): prepare's time, in CPU seconds of the calling thread, in the
     * graph passes and fusion, and in LLVM (module, optimization, machine code, linking, or
     * loading a cached object); 0 for the others. */
    double passes_seconds, llvm_seconds;
    /* cuda: input bytes copied by DMA straight from the caller's page-locked buffers
     * (dtl_cuda_host_alloc), over all runs; the rest went through the plan's staging
     * buffer (a memcpy on the host first). 0 for the others. */
    uint64_t input_dma_bytes;
} dtl_plan_stats;

typedef struct dtl_backend {
    const char *name;
    void *(*prepare)(const dtl_graph *g, dtl_store *store, const dtl_plan_opts *opts,
                     dtl_err *err);
    bool (*run)(void *plan, const dtl_binding *in, size_t nin, dtl_err *err);
    bool (*output)(void *plan, const char *name, dtl_tensor *out, dtl_err *err);
    void (*stats)(const void *plan, dtl_plan_stats *st);
    void (*free)(void *plan);
    bool calls_ready;    /* its run calls dtl_plan_opts.output_ready itself (ref, llvm) */
} dtl_backend;

extern const dtl_backend dtl_backend_ref;   /* kernels/ref: the oracle */

typedef struct dtl_plan dtl_plan;

/* Verifies g (a graph that fails dtl_graph_verify is a DTL_ERR_USAGE, first problem
 * quoted), binds the store, and plans. opts may be NULL. */
dtl_plan *dtl_plan_new(const dtl_backend *be, const dtl_graph *g, dtl_store *store,
                       const dtl_plan_opts *opts, dtl_err *err);
bool dtl_plan_run(dtl_plan *p, const dtl_binding *in, size_t nin, dtl_err *err);
bool dtl_plan_output(dtl_plan *p, const char *name, dtl_tensor *out, dtl_err *err);
void dtl_plan_stats_get(const dtl_plan *p, dtl_plan_stats *st);
void dtl_plan_free(dtl_plan *p);   /* NULL is fine */

/* ---- for backends: the checks every prepare and run makes ---- */

/* dtl_graph_verify as an error value: a DTL_ERR_USAGE "<who>: the graph fails verification:
 * <first problem>". */
bool dtl_graph_check(const dtl_graph *g, const char *who, dtl_err *err);
/* Binds the INPUT nodes inputs[0..ninputs) of g by name from in[0..nin) with exec.h's rules
 * (each bound exactly once, exactly its dtype and shape, data not NULL unless empty;
 * bindings for other names are ignored): data[k] = the data of inputs[k]'s binding. */
bool dtl_inputs_bind(const dtl_graph *g, const uint32_t *inputs, uint32_t ninputs,
                     const dtl_binding *in, size_t nin, const void **data, dtl_err *err);
/* The index of g's output called name, or -1 with a DTL_ERR_USAGE naming the outputs g has. */
int64_t dtl_output_find(const dtl_graph *g, const char *name, dtl_err *err);
/* *out = a view of output k of g (its node's dtype and shape) whose elements are at data. */
void dtl_output_view(const dtl_graph *g, uint32_t k, void *data, dtl_tensor *out);

#endif
