/* runtime/data.h — datasets in memory: loaders for IDX, NumPy .npy and CSV; the order of an
 * epoch; batches sharded over ranks; a background thread that prepares batches ahead.
 *
 * Contract:
 * - A dtl_data owns its two arrays (malloc'd); dtl_data_free releases them. A loader fills a
 *   dtl_data completely or not at all: on failure it returns false with err set and leaves
 *   *d empty (dtl_data_free on it is harmless), never a half-loaded set.
 * - Features are one contiguous row-major array of n × features elements, f32 or f64 as
 *   asked, already multiplied by opts.scale (computed in f64, then rounded once) — or, for
 *   u8 files loaded with opts.compact, the raw bytes, converted the same way by
 *   dtl_data_gather. Labels are
 *   int64 with 0 <= y <= INT32_MAX; classes = max label + 1 — or float targets (yf), or,
 *   for text, the next bytes of each window. A dataset has at least one row.
 * - Any file may be gzip-compressed: it is recognised by its contents, not its name.
 * - Errors name the file and the problem ("x.npy: truncated: expected 4128 bytes, found
 *   1000"). No input crashes a loader or makes it allocate much more than the bytes it has
 *   actually read: sizes declared by headers are checked for overflow and filled as the data
 *   arrives, so a lying header costs only the reading of the file.
 * - Order and batching are pure functions of their arguments (see the sharding contract at
 *   dtl_data_batch_rows); the background loader produces exactly what dtl_data_gather over
 *   that order produces.
 */
#ifndef DTL_DATA_H
#define DTL_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "err.h"

enum { DTL_DATA_MAX_DIMS = 8 };   /* of a row's raw shape (the row dimension not counted) */

typedef struct dtl_data {
    int64_t n;                        /* rows */
    int ndim;                         /* dims of one row as stored: 2 for 28×28 images */
    int64_t shape[DTL_DATA_MAX_DIMS]; /* that shape: {28, 28}; a CSV row is {features} */
    int64_t features;                 /* elements per row: the product of shape */
    dtl_dtype dtype;                  /* of x: DTL_DTYPE_F32 or DTL_DTYPE_F64 */
    void *x;                          /* n × features elements of dtype */
    int64_t *y;                       /* n labels */
    int64_t classes;                  /* max label + 1 */
    bool from_ints;                   /* the file held integer features (before scaling) */
    /* Compact storage (dtl_data_opts.compact, u8 files): x is NULL and bytes holds the
     * n × features raw bytes; element = (dtype)(byte * scale), made by dtl_data_gather and
     * equal to what x would hold. A quarter of the memory for image data sets. */
    unsigned char *bytes;
    double scale;
    /* Labels other than one class index per row (0/NULL for the loaders above):
     * - yf: float targets (dtl_data_opts.csv_regression), n values of `dtype`; y is then NULL
     *   and classes 0. The batch's y has the features' dtype.
     * - text (dtl_data_load_text): a byte string of text_len bytes; row k of an epoch is the
     *   window at byte off + k·context (off from dtl_data_text_offset): x its context bytes
     *   as i64 ids (dtype DTL_DTYPE_I64, features = context), y the context bytes that follow
     *   each (ylen = context). n = (text_len - 1) / context; y, x and bytes are NULL, classes
     *   is 256. The windows are views: nothing per row is stored. */
    void *yf;
    int64_t ylen;                     /* labels per row: 0 or 1 (one), context for text */
    unsigned char *text;
    int64_t text_len, context;
} dtl_data;

typedef struct dtl_data_opts {
    dtl_dtype dtype;          /* of the features: DTL_DTYPE_F32 or DTL_DTYPE_F64 */
    double scale;             /* features are multiplied by it: 1.0/255 for bytes to [0, 1] */
    bool compact;             /* IDX/npy files of u8 features: keep the bytes (see dtl_data) */
    /* CSV only. */
    bool csv_header;          /* the first non-empty line names the columns */
    const char *csv_label;    /* the label column by its name in the header; NULL: by index */
    int csv_label_index;      /* the label column by index from 0; -1 is the last column */
    int csv_skip;             /* lines skipped before the header or the first row */
    bool csv_regression;      /* the label column holds numbers: float targets in yf */
} dtl_data_opts;

/* f32, scale 1, CSV without a header and labels in the first column. */
dtl_data_opts dtl_data_opts_default(void);

void dtl_data_free(dtl_data *d);

/* An IDX pair (the MNIST format): images of any IDX element type and rank >= 1, labels of an
 * integer IDX type and rank 1, with the same count. */
bool dtl_data_load_idx(dtl_data *d, const char *images_path, const char *labels_path,
                       const dtl_data_opts *o, dtl_err *err);

/* A split of a named IDX dataset held in directory dir (as found by dtl_data_find_dir):
 * split "train" reads train-images-idx3-ubyte and train-labels-idx1-ubyte, "test" reads the
 * t10k-… pair; each file name may also carry ".gz" (the plain one is taken when both exist). */
bool dtl_data_load_idx_dir(dtl_data *d, const char *dir, const char *split,
                           const dtl_data_opts *o, dtl_err *err);

/* NumPy .npy (format versions 1, 2 and 3; C order): features from x_path, shape (n, …), of
 * dtype f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 or b1, either byte order; labels from y_path, shape
 * (n,), of an integer dtype (or b1). Any other header key is ignored. y_path may be NULL
 * (features only, for inference): the labels are then all 0 and classes is 0. */
bool dtl_data_load_npy(dtl_data *d, const char *x_path, const char *y_path,
                       const dtl_data_opts *o, dtl_err *err);

/* CSV: comma-separated, one row per line, every row with the same number of cells; the label
 * column (o->csv_label or o->csv_label_index) holds integers, all others numbers (strtod, so
 * the decimal point is the C locale's). Empty lines are skipped, \r\n is accepted, spaces
 * around a cell are ignored, a cell may be quoted ("a ""b"", c") but not span lines. Errors
 * say file:line:column, the cell text and the column. */
bool dtl_data_load_csv(dtl_data *d, const char *path, const dtl_data_opts *o, dtl_err *err);

/* Labels per row: d->ylen, at least 1. The dtype of a batch's y: DTL_DTYPE_I64, or d->dtype
 * for float targets. */
int64_t dtl_data_ylen(const dtl_data *d);
dtl_dtype dtl_data_ydtype(const dtl_data *d);

/* ---- text and table preparation (runtime/data_text.c) ------------------------------------ */

typedef struct dtl_text_opts {
    int64_t context;          /* window length, >= 1 */
    const char *separator;    /* documents are separated by lines holding only this; NULL or
                                 "": each file is one document */
    int64_t test_every;       /* 0: every document; else document i (from 0, in reading order)
                                 is a test document iff i % test_every == test_every - 1 */
    bool test;                /* keep the test documents (else the others) */
} dtl_text_opts;

/* A text data set from path: a file, or a directory whose plain-text files are read in name
 * order (regular files only — symlinks are skipped — whose names do not start with '.' and do
 * not end in .dat or .u8: the fortune(6) layout). Documents are cut at separator lines (the
 * separator line itself is not part of a document; empty documents are dropped), the split's
 * documents are kept and joined, each followed by the separator line ("%\n") when there is a
 * separator. Errors name the file; a split with fewer than context + 1 bytes is an error. */
bool dtl_data_load_text(dtl_data *d, const char *path, const dtl_text_opts *o, dtl_err *err);

/* The window offset of epoch `epoch`: 0 without shuffle; else uniform in
 * [0, (text_len - 1) - n·context] from the Philox stream dtl_rng_stream_id("window", epoch)
 * with key seed. 0 for data that is not text. */
int64_t dtl_data_text_offset(const dtl_data *d, uint64_t seed, uint64_t epoch, bool shuffle);

/* Splits d's rows into a train and a test part, in place: a seeded shuffle of the rows (the
 * stream dtl_rng_stream_id("split", 0), key 0 — the same split whatever the run's seed) and
 * the last round(n·test_fraction) rows, at least 1, become the test part (kept when test,
 * else the others), in file order. test_fraction in (0, 1); both parts must have a row. */
bool dtl_data_holdout(dtl_data *d, double test_fraction, bool test, const char *what,
                      dtl_err *err);

/* Feature statistics of d (per feature: mean and standard deviation, population, computed in
 * f64): mean and sd hold d->features values each. A feature with sd 0 gets sd 1. */
bool dtl_data_stats(const dtl_data *d, double *mean, double *sd, dtl_err *err);
/* x = (x - mean) / sd for every row of d (not text; compact data is expanded first). */
bool dtl_data_standardize(dtl_data *d, const double *mean, const double *sd, dtl_err *err);

/* The first of dirs[i]/name that is a directory, written to out. NULL or empty entries of
 * dirs are skipped (an unset $DTL_DATA, say). When none is, err lists every place tried. */
bool dtl_data_find_dir(const char *name, const char *const *dirs, size_t ndirs, char *out,
                       size_t outlen, dtl_err *err);

/* ---- order and batches ------------------------------------------------------------------- */

/* perm[0..n) = the order of rows in epoch `epoch`: the identity without shuffle; with it, a
 * Fisher-Yates shuffle of the identity (for i = n-1 down to 1: swap perm[i] and perm[j],
 * j = dtl_rng_below(rng, i+1)) drawn from the stream dtl_rng_stream_id("shuffle", epoch) with
 * key `seed`. Stable across versions: resumed runs and tests depend on it. */
void dtl_data_epoch_order(int64_t n, uint64_t seed, uint64_t epoch, bool shuffle,
                          int64_t *perm);

/* Steps in an epoch of n rows on `world` ranks that take `batch` rows each per step:
 * with drop_last (training), floor(n / (batch·world)), every batch full; without (evaluation),
 * ceil(n / (batch·world)), the last one cut short. 0 when batch or world is not positive. */
int64_t dtl_data_steps(int64_t n, int64_t batch, int world, bool drop_last);

/* Sharding contract. Step s of an epoch is the global batch perm[s·world·batch ..
 * (s+1)·world·batch), cut at n; rank r takes its r-th slice of `batch` rows, that is
 * perm[(s·world + r)·batch .. + batch). Concatenated in rank order the slices are exactly
 * step s of one rank with batch world·batch: N ranks see what one rank with N× the batch
 * sees, the same rows in the same order. In the last evaluation step a rank's slice may be
 * short or empty, but every rank takes the same number of steps.
 * Returns the rows of rank r's slice (0..batch) and sets *start to its offset in perm. */
int64_t dtl_data_batch_rows(int64_t n, int64_t batch, int world, int rank, int64_t step,
                            int64_t *start);

/* Copies rows idx[0..count) into x_out (count × features elements of d->dtype, converted
 * from the bytes when d is compact) and their labels into y_out (count × ylen elements of
 * dtl_data_ydtype(d)). Every idx[i] must be in [0, d->n). Text windows start at byte
 * off + idx[i]·context (dtl_data_gather: off 0). */
void dtl_data_gather(const dtl_data *d, const int64_t *idx, int64_t count, void *x_out,
                     void *y_out);
void dtl_data_gather_at(const dtl_data *d, int64_t off, const int64_t *idx, int64_t count,
                        void *x_out, void *y_out);

/* ---- background loader -------------------------------------------------------------------
 * One producer thread per epoch fills a ring of `slots` batches in step order while the
 * consumer trains on earlier ones. Use from one consumer thread:
 *
 *     dtl_loader *l = dtl_loader_new(&data, &opts, &err);
 *     for (epoch …) {
 *         if (!dtl_loader_start_epoch(l, epoch, &err)) …;
 *         for (const dtl_batch *b; (b = dtl_loader_next(l)); dtl_loader_release(l, b))
 *             step(b->x, b->y, b->rows);
 *     }
 *     dtl_loader_free(l);
 *
 * A batch stays valid until it is released; batches are released in the order received.
 * dtl_loader_start_epoch and dtl_loader_free may be called at any point of an epoch: they
 * stop the producer (and invalidate batches not yet released). The loader reads the data
 * but does not own it: the data must outlive the loader. */

typedef struct dtl_loader_opts {
    int64_t batch;       /* rows per rank per step, > 0 */
    int world, rank;     /* number of ranks and this one's index: 1, 0 alone */
    uint64_t seed;       /* of the shuffle */
    bool shuffle;
    bool drop_last;      /* true for training; false for evaluation (see dtl_data_steps) */
    int slots;           /* batches prepared ahead, 1..8; 0 means 2 */
} dtl_loader_opts;

typedef struct dtl_batch {
    int64_t step;        /* its index in the epoch */
    int64_t rows;        /* rows of this rank: batch, or fewer (even 0) in a last eval step */
    void *x;             /* rows × features elements of the data's dtype */
    void *y;             /* rows × ylen labels of dtl_data_ydtype (int64 class indices) */
} dtl_batch;

typedef struct dtl_loader dtl_loader;

/* Checks the options (and that a drop_last epoch has at least one step) and allocates the
 * ring; starts no thread yet. */
dtl_loader *dtl_loader_new(const dtl_data *d, const dtl_loader_opts *o, dtl_err *err);
int64_t dtl_loader_steps(const dtl_loader *l);
/* Computes the epoch's order (and a text set's window offset) and starts producing its
 * batches. */
bool dtl_loader_start_epoch(dtl_loader *l, uint64_t epoch, dtl_err *err);
/* The next batch of the epoch (waiting for it if need be), or NULL after the last one. */
const dtl_batch *dtl_loader_next(dtl_loader *l);
void dtl_loader_release(dtl_loader *l, const dtl_batch *b);
void dtl_loader_free(dtl_loader *l);

#endif
