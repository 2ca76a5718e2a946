/* tests/unit/backend_testlib.h — shared helpers of the differential backend tests
 * (test_backend_ops, test_backend_random, test_backend_examples, test_noalloc): every fast
 * backend is run side by side with the reference backend (the oracle) on the same graph,
 * the same store seed and the same inputs, and every result is compared.
 *
 * Contract:
 *  - The backends under test: bt_backends() lists them — always "ref-noreuse" (the reference
 *    backend with opts.no_reuse, which tests the harness and the ref memory planner), plus
 *    "llvm" when the build has LLVM (HAVE_LLVM), plus "cuda" when the machine has an NVIDIA
 *    device the CUDA plugin can use (kernels/cuda/cuda.h). $DTL_TEST_BACKENDS (names
 *    separated by commas) keeps only the named ones. The reference is always dtl_backend_ref
 *    with default options.
 *  - The comparison rule (bt_match): integers and bools exactly (bools by truth: any non-zero
 *    byte is true); floats element by element with |got - want| <= tol * (|want| + scale),
 *    scale = the largest finite |want| of the whole tensor, tol = BT_TOL_F32 (1e-5) or
 *    BT_TOL_F64 (1e-12) times the caller's factor (0: bit-exact). The scale term makes the
 *    rule sensible near zero: an element that is small only because of cancellation (a sum,
 *    a matrix product) is held to the precision of the tensor's magnitude. A NaN must match a
 *    NaN, an infinity the same infinity.
 *  - A case (bt_case) is one graph holding many independent subcases (an op on some dtype and
 *    shapes), so that each backend compiles one graph for all of them. Operands made by
 *    bt_in are INPUTs with fresh Philox values at every run; a float operand of a
 *    differentiated subcase is x + p with p a zero PARAM, so the gradient w.r.t. that operand
 *    is the gradient w.r.t. p. bt_case_run adds loss = sum over the differentiated float
 *    outputs y_k of sum(W_k * y_k) (W_k random INPUTs, in f64), the gradients of every param
 *    (compiler/autodiff.h) as DTL_OUT_VALUE outputs, and runs the graph twice with different
 *    inputs on the reference and on every backend under test, comparing every output and
 *    every store entry after each run (the second run shows stale results). A failure is
 *    printed with the case, subcase, backend, run, output and element.
 *  - Known failures: a test's table of (backend, label substring, reason) rows whose
 *    mismatches are printed as "known failure" and not counted, so the suite stays green
 *    while a backend bug is open; bt_known_report names the rows that no longer fail.
 *  - Models: bt_model_load checks a .dtl file (or source text) and lowers its first train
 *    block (compiler/lower.h); bt_batch makes random batches for its graphs.
 * Memory: everything here is plain malloc/free owned by the returned objects; nothing is
 * global but read-only tables. Functions print their failures on stderr and return false.
 */
#ifndef DTL_BACKEND_TESTLIB_H
#define DTL_BACKEND_TESTLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../compiler/graph.h"
#include "../../compiler/lower.h"
#include "../../runtime/exec.h"
#include "../../runtime/philox.h"

#define BT_TOL_F32 1e-5
#define BT_TOL_F64 1e-12

/* ---- backends under test ------------------------------------------------------------------ */

typedef struct bt_backend {
    const char *name;
    const dtl_backend *be;
    dtl_plan_opts opts;
} bt_backend;

/* The backends under test (after $DTL_TEST_BACKENDS); *n gets their count. */
const bt_backend *bt_backends(size_t *n);
/* A one-line list of their names ("ref-noreuse, llvm"), for the test's banner. */
const char *bt_backend_names(void);

/* ---- comparing ----------------------------------------------------------------------------- */

/* The tolerance of dtype dt (0 for integers and bools). */
double bt_tol(dtl_dtype dt);
/* Compares got with want (the reference) by the rule above, tolerance bt_tol * factor.
 * On a mismatch prints "<what>: <details>" (the first bad element with its index, the worst
 * error) and returns false. */
bool bt_match(const char *what, const dtl_tensor *got, const dtl_tensor *want, double factor);
/* The same, but up to max_outliers elements may exceed the tolerance if each stays within
 * outlier_bound of want (an ill-conditioned step such as Adam's m / (sqrt(v) + eps) for a
 * gradient within rounding of zero; see test_backend_examples). A note names them. */
bool bt_match_outliers(const char *what, const dtl_tensor *got, const dtl_tensor *want,
                       double factor, uint64_t max_outliers, double outlier_bound);
/* Compares every entry of store `got` with the same entry of `want`. */
bool bt_match_stores(const char *what, dtl_store *got, dtl_store *want, double factor);

/* ---- random data --------------------------------------------------------------------------- */

typedef enum bt_dist_kind {
    BT_DIST_UNIFORM,   /* floats uniform in [lo, hi); integers uniform in [lo, hi] */
    BT_DIST_INT,       /* integer values in [lo, hi] in any dtype (ties, exact floats) */
    BT_DIST_FULL,      /* integers over the whole range of the dtype (wrapping arithmetic) */
    BT_DIST_SPECIAL,   /* as UNIFORM, and about one element in 6 a special value: floats
                          NaN, ±inf, ±0, ±1e30, 1, integers MIN, MAX, -1, 0 */
    BT_DIST_BOOL,      /* bool bytes 0, 1, 2 and 255 (any non-zero byte is true) */
} bt_dist_kind;

typedef struct bt_dist {
    bt_dist_kind kind;
    double lo, hi;
} bt_dist;

#define BT_U(lo, hi) ((bt_dist){BT_DIST_UNIFORM, (lo), (hi)})
#define BT_I(lo, hi) ((bt_dist){BT_DIST_INT, (lo), (hi)})
#define BT_FULL ((bt_dist){BT_DIST_FULL, 0, 0})
#define BT_SPECIAL(lo, hi) ((bt_dist){BT_DIST_SPECIAL, (lo), (hi)})
#define BT_BOOLS ((bt_dist){BT_DIST_BOOL, 0, 1})

/* Fills n elements of dtype dt from r. */
void bt_fill(void *data, dtl_dtype dt, uint64_t n, bt_dist d, dtl_rng *r);

/* ---- cases --------------------------------------------------------------------------------- */

typedef struct bt_case bt_case;

/* A new case (one graph) called label. The data of an input derives from seed, the run,
 * the label of its subcase and its number among that subcase's inputs (so a subcase gets the
 * same data whatever other subcases share its case). */
bt_case *bt_case_new(const char *label, uint64_t seed);
dtl_graph *bt_graph(bt_case *c);
const char *bt_case_label(const bt_case *c);
/* Starts a subcase: what follows belongs to it (its label names failures). With grad, its
 * float operands get params and its float outputs join the loss. */
void bt_sub(bt_case *c, bool grad, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* An operand of dtype dt and the given shape, random per d at every run (see above). */
dtl_val bt_in(bt_case *c, dtl_dtype dt, uint32_t rank, const int64_t *shape, bt_dist d);
/* The same, but always a plain INPUT (indices, masks, the step number): never a param. */
dtl_val bt_in_plain(bt_case *c, dtl_dtype dt, uint32_t rank, const int64_t *shape,
                    bt_dist d);
/* A result to compare (DTL_OUT_VALUE). bt_out_exact: compared bit for bit. */
void bt_out(bt_case *c, dtl_val v);
void bt_out_exact(bt_case *c, dtl_val v);
/* An output of another kind (PARAM/STATE updates: target is the leaf). */
void bt_out_kind(bt_case *c, dtl_out_kind kind, dtl_val v, dtl_val target);
/* Differentiates, verifies, runs and compares as described above; frees c. Returns true
 * when every backend matched (known failures aside). $DTL_TEST_VERBOSE=1 prints each case's
 * size and how long each backend took to prepare it (diagnostics only, never checked);
 * $DTL_TEST_PRINT=1 prints each case's graph (dtl_graph_print) with its loss and gradients,
 * =2 also the graph after the passes and its kernel program (what fast backends compile). */
bool bt_case_run(bt_case *c);
/* The same against the given backends (the harness's own tests use broken ones). */
bool bt_case_run_on(bt_case *c, const bt_backend *bes, size_t nb);
/* Frees c without running it. */
void bt_case_free(bt_case *c);

/* Number of subcases and backend comparisons made so far by this process, and the
 * backend-runs that failed (for the tests' summaries). */
typedef struct bt_counts {
    unsigned cases, subcases, compared, failed, known;
} bt_counts;
bt_counts bt_counts_get(void);

/* ---- known failures ------------------------------------------------------------------------ */

typedef struct bt_known_failure {
    const char *backend;   /* "llvm" */
    const char *label;     /* a substring of the failure's label "<case>: <subcase>": "seed 81 (" */
    const char *reason;    /* "s4-llvm-bugs.md BUG 1: ..." */
} bt_known_failure;

/* Installs the table of known failures (ended by a row with a NULL backend); tests set it at
 * the start of main. */
void bt_known_set(const bt_known_failure *table);
/* Notes that (backend, label) was compared (for bt_known_report). */
void bt_known_seen(const char *backend, const char *label);
/* The reason if a failure of (backend, label) is a known one (and counts it), else NULL. */
const char *bt_known(const char *backend, const char *label);
/* "FAIL", or "known failure:" when (backend, label) is a known failure (counts nothing). */
const char *bt_fail_word(const char *backend, const char *label);
/* Prints the known failures that were compared and did not fail (fixed: remove them). */
void bt_known_report(void);

/* ---- models -------------------------------------------------------------------------------- */

typedef struct bt_model {
    dtl_ctx ctx;
    dtl_lowered low;
    bool lowered;
} bt_model;

/* Checks path (or, when src is not NULL, the source text src called path) and lowers its
 * first train block with opts into m. False (diagnostics printed) on failure; m is then
 * freed. */
bool bt_model_load(bt_model *m, const char *path, const char *src, const dtl_lower_opts *opts);
void bt_model_free(bt_model *m);

/* A batch of inputs for a lowered graph: "x" (random uniform [0, 1) of x's dtype and shape;
 * ids in [0, classes) when x is of an integer dtype), "y" of the graph's dtype and shape
 * (integer labels in [0, classes), float targets in [0, 1)), "step" and "total_steps". */
typedef struct bt_batch {
    void *x;
    void *y;
    int64_t step, total_steps;
    int64_t classes;
    dtl_binding in[4];
    size_t nin;
} bt_batch;

/* Allocates a batch fitting g's inputs (false if g has no input "x"). */
bool bt_batch_init(bt_batch *b, const dtl_graph *g, int64_t classes);
/* New random values (stream from seed and k) and step number step. */
void bt_batch_fill(bt_batch *b, uint64_t seed, uint64_t k, int64_t step);
void bt_batch_free(bt_batch *b);
/* The class count of a lowered model: the last dim of the infer output "y" (2 if none). */
int64_t bt_classes(const dtl_lowered *low);

/* The source tree's directory (from DTL_SRC_STDLIB_DIR), for examples/ and tests/lang/. */
const char *bt_srcdir(void);

#endif
