/* runtime/model.h — the run-time side of a model compiled ahead of time (`dtlc compile FILE
 * -o model.o|model.so`, compiler/llvm/aot.c): a context that owns the model's parameters and
 * memory, and runs the compiled infer and train-step programs on it.
 *
 * Contract:
 *  - The compiled object exports one constant dtl_cmodel_desc (`<name>_desc`): the model's
 *    persistent tensors (the PARAM and STATE leaves in the step graph's order, by name, with
 *    dtype, shape, initializer and byte offset in one store block) and two programs (infer,
 *    step). A program is an entry of compiler/llvm/llvm.h's form, `int32_t entry(void
 *    *const *slots)`, with its slot map (inputs, then store tensors), its arena size and
 *    constant block, where each output is when it returns, and a table of the kernels it
 *    runs through the reference kernels (SINGLE kernels: gather, slice …;
 *    compiler/llvm/llvm_rt.h). aot.c writes the descriptor, this file reads it; both sides
 *    use only 8-byte fields, so the C layout below is the LLVM struct layout aot.c builds
 *    (static_asserts pin the sizes). `abi` must equal DTL_CMODEL_ABI: a mismatch (an object
 *    compiled by another dtlc version) is refused at create with a message.
 *  - dtl_cmodel_create allocates everything once — the store block, one arena for both
 *    programs (their sizes' maximum; an entry keeps nothing in it between calls), a padded
 *    batch of x for inference's last chunk, the slot arrays and the SINGLE kernels' tables —
 *    and initializes the parameters with their initializers and the seed exactly as `dtlc
 *    run` does (runtime/init.h), states to zero. Nothing allocates after create: infer and
 *    train_step fill the input slots, call the entry and copy results out. The entries use
 *    the process's shared thread pool (runtime/pool.h: DTL_THREADS threads).
 *  - dtl_cmodel_infer runs the infer program over any number of rows in chunks of the
 *    compiled batch; a last, short chunk is copied into a zero-padded batch and only its
 *    rows are copied out. That is exact for models whose rows do not interact (no op of the
 *    forward mixes the rows of x); desc->rows_coupled says when the compiler could not
 *    prove it, and then rows must be a multiple of the batch.
 *  - dtl_cmodel_train_step runs one step on exactly `batch` rows, step = the update's number
 *    (1 for the first, as `dtlc run` counts); the entry commits the new parameters and
 *    optimizer state into the store after every kernel saw the old values (exec.h's rule).
 *  - Load reads a safetensors file (runtime/safetensors.h) and copies every PARAM it names
 *    (dtype and shape checked, errors name the tensor and both types); STATE tensors are
 *    copied when the file has them all (a `dtlc run --save` checkpoint, or dtl_cmodel_save),
 *    else left as they are. Tensors the model lacks are an error, except optimizer moments
 *    ("<param>.m", ".v") of known params, as `dtlc run --load` allows. A file whose
 *    metadata has a "seed" (`dtlc run` checkpoints, dtl_cmodel_save) gives the context that
 *    seed, the key of dropout's random numbers, so training goes on as the run would. Save
 *    writes every tensor in descriptor order, atomically, with the seed; `dtlc run --load`
 *    reads it back.
 *  - Errors are values (runtime/err.h): functions return false with err set; a context also
 *    keeps its last message for the C API in the generated header (dtl_cmodel_error).
 *  - A context is used by one thread at a time; several contexts may run concurrently.
 */
#ifndef DTL_CMODEL_H
#define DTL_CMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

enum { DTL_CMODEL_ABI = 1, DTL_CMODEL_MAX_RANK = 8 };

/* Where a program's output value lives when the entry returns. */
typedef enum dtl_cmodel_at {
    DTL_CMODEL_AT_ARENA,     /* the arena, at `offset` bytes */
    DTL_CMODEL_AT_CONST,     /* the program's constant block, at `offset` bytes */
    DTL_CMODEL_AT_TENSOR,    /* store tensor number `offset` */
    DTL_CMODEL_AT_INPUT,     /* the program's input number `offset` */
} dtl_cmodel_at;

enum { DTL_CMODEL_PARAM = 0, DTL_CMODEL_STATE = 1 };

/* The entry's slots (compiler/llvm/llvm.h: the same numbers, checked there by aot.c). */
enum {
    DTL_CMODEL_SLOT_ARENA, DTL_CMODEL_SLOT_CONST, DTL_CMODEL_SLOT_POOL, DTL_CMODEL_SLOT_RT,
    DTL_CMODEL_SLOT_FIRST_INPUT
};
/* The words of a graph node's attributes (dtl_node.attr, copied as bytes). */
enum { DTL_CMODEL_ATTR_WORDS = 16 };

/* A persistent tensor: a PARAM or a STATE. */
typedef struct dtl_cmodel_tensor {
    const char *name;          /* "fc1.w", "fc1.w.m" */
    uint64_t kind;             /* DTL_CMODEL_PARAM, DTL_CMODEL_STATE */
    uint64_t dtype;            /* dtl_dtype */
    uint64_t rank;
    int64_t shape[DTL_CMODEL_MAX_RANK];
    uint64_t offset;           /* in the store block; 64-byte aligned */
    uint64_t nbytes;
    uint64_t init_kind;        /* dtl_init_kind (PARAM) */
    double init_a, init_b;
    const void *init_data;     /* DTL_INIT_DATA: nbytes of data; else NULL */
} dtl_cmodel_tensor;

/* An input of a program: "x", "y", "step", "total_steps". */
typedef struct dtl_cmodel_input {
    const char *name;
    uint64_t dtype;
    uint64_t rank;
    int64_t shape[DTL_CMODEL_MAX_RANK];
} dtl_cmodel_input;

typedef struct dtl_cmodel_output {
    const char *name;          /* "y", "loss", "lr", "fc1.w" … */
    uint64_t kind;             /* dtl_out_kind (compiler/graph.h): LOSS VALUE PARAM STATE */
    uint64_t dtype;
    uint64_t rank;
    int64_t shape[DTL_CMODEL_MAX_RANK];
    uint64_t nbytes;
    uint64_t at;               /* dtl_cmodel_at */
    uint64_t offset;           /* see dtl_cmodel_at. PARAM/STATE outputs: AT_TENSOR of their
                                  target (the entry commits them itself) */
} dtl_cmodel_output;

/* An operand (or the result) of a SINGLE kernel: its view and where it is (slot, offset). */
typedef struct dtl_cmodel_operand {
    uint64_t dtype;
    uint64_t rank;
    int64_t shape[DTL_CMODEL_MAX_RANK];
    uint64_t slot, offset;
} dtl_cmodel_operand;

/* A kernel the entry runs through the reference kernels (compiler/llvm/llvm_rt.h): what
 * dtl_llvm_rt_single needs of the graph node. */
typedef struct dtl_cmodel_single {
    uint64_t id;               /* the node's number in the compiled graph (messages) */
    const char *name;          /* its label, or NULL */
    uint64_t op;               /* dtl_op */
    uint64_t nin;
    const dtl_cmodel_operand *in;
    dtl_cmodel_operand out;     /* the node's own dtype, shape and place */
    uint64_t attr[DTL_CMODEL_ATTR_WORDS];
} dtl_cmodel_single;

typedef struct dtl_cmodel_prog {
    int32_t (*run)(void *const *slots);   /* NULL: the model has no such program */
    uint64_t arena_bytes;
    uint64_t const_bytes;
    const void *consts;        /* its constant block, 64-byte aligned */
    uint64_t ninputs;          /* slots DTL_CMODEL_SLOT_FIRST_INPUT …, in this order */
    const dtl_cmodel_input *inputs;
    uint64_t nstore;           /* the next slots: store_tensor[i] is their tensor */
    const uint64_t *store_tensor;
    uint64_t noutputs;
    const dtl_cmodel_output *outputs;
    uint64_t nsingle;
    const dtl_cmodel_single *single;
} dtl_cmodel_prog;

typedef struct dtl_cmodel_desc {
    uint64_t abi;                  /* DTL_CMODEL_ABI */
    const char *name;              /* the C prefix of the generated API ("mnist_mlp") */
    const char *model;             /* the dtl model's name ("MLP") */
    const char *source;            /* the .dtl file's base name */
    const char *params_hash;       /* as in `dtlc run` checkpoints' metadata */
    uint64_t batch;                /* the rows of one run (x's first dimension) */
    uint64_t rows_coupled;         /* 1: infer may not pad a short last chunk */
    uint64_t ntensors;
    const dtl_cmodel_tensor *tensors;
    uint64_t store_bytes;
    dtl_cmodel_prog infer, step;
} dtl_cmodel_desc;

_Static_assert(sizeof(dtl_cmodel_tensor) == 8 * 18, "8-byte fields only (aot.c builds it)");
_Static_assert(sizeof(dtl_cmodel_input) == 8 * 11, "8-byte fields only (aot.c builds it)");
_Static_assert(sizeof(dtl_cmodel_output) == 8 * 15, "8-byte fields only (aot.c builds it)");
_Static_assert(sizeof(dtl_cmodel_operand) == 8 * 12, "8-byte fields only (aot.c builds it)");
_Static_assert(sizeof(dtl_cmodel_single) == 8 * (5 + 12 + DTL_CMODEL_ATTR_WORDS),
               "8-byte fields only (aot.c builds it)");
_Static_assert(sizeof(dtl_cmodel_prog) == 8 * 12, "8-byte fields only (aot.c builds it)");
_Static_assert(sizeof(dtl_cmodel_desc) == 8 * 34, "8-byte fields only (aot.c builds it)");

typedef struct dtl_cmodel dtl_cmodel;

/* A context for desc: parameters initialized from seed, states zero. NULL with err set. */
dtl_cmodel *dtl_cmodel_create(const dtl_cmodel_desc *desc, uint64_t seed, dtl_err *err);
void dtl_cmodel_free(dtl_cmodel *m);   /* NULL is fine */
const dtl_cmodel_desc *dtl_cmodel_desc_of(const dtl_cmodel *m);

/* The last error of m's functions ("" when none yet). */
const char *dtl_cmodel_error(const dtl_cmodel *m);

bool dtl_cmodel_load(dtl_cmodel *m, const char *path, dtl_err *err);
bool dtl_cmodel_save(dtl_cmodel *m, const char *path, dtl_err *err);

/* The tensor called name (a param or a state), or NULL. */
const dtl_cmodel_tensor *dtl_cmodel_find(const dtl_cmodel *m, const char *name);
/* Copies nbytes (which must be the tensor's size) into / out of the tensor called name. */
bool dtl_cmodel_set(dtl_cmodel *m, const char *name, const void *data, size_t nbytes,
                   dtl_err *err);
bool dtl_cmodel_get(const dtl_cmodel *m, const char *name, void *data, size_t nbytes,
                   dtl_err *err);

/* y = forward(x) for rows rows (x: rows × the row's features, y: rows × the output's). */
bool dtl_cmodel_infer(dtl_cmodel *m, const void *x, int64_t rows, void *y, dtl_err *err);

/* One training step on exactly desc->batch rows; *loss (when not NULL) gets the loss. */
bool dtl_cmodel_train_step(dtl_cmodel *m, const void *x, const int64_t *y, int64_t step,
                          double *loss, dtl_err *err);

/* The "total_steps" input of a step whose cosine schedule has no `steps` (default 0 means
 * unset: such a step is refused until it is set). */
void dtl_cmodel_set_total_steps(dtl_cmodel *m, int64_t total_steps);

/* The wrappers the generated object exports call these: the same functions, with errors
 * kept in the context (and returned as 0 / -1) instead of a dtl_err. */
dtl_cmodel *dtl_cmodel_api_create(const dtl_cmodel_desc *desc, uint64_t seed, char *errbuf,
                                size_t errlen);
int dtl_cmodel_api_load(dtl_cmodel *m, const char *path);
int dtl_cmodel_api_save(dtl_cmodel *m, const char *path);
int dtl_cmodel_api_set(dtl_cmodel *m, const char *name, const void *data, size_t nbytes);
int dtl_cmodel_api_get(dtl_cmodel *m, const char *name, void *data, size_t nbytes);
int dtl_cmodel_api_infer(dtl_cmodel *m, const void *x, int64_t rows, void *y);
int dtl_cmodel_api_train_step(dtl_cmodel *m, const void *x, const int64_t *y, int64_t step,
                             double *loss);

#endif
