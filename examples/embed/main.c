/* examples/embed/main.c — a C program that embeds a model compiled ahead of time.
 *
 * `dtlc compile model.dtl -o model.o` wrote model.o and model.h; this program includes
 * model.h and links model.o with libdtlrt (see the Makefile beside it, and docs/aot.md):
 *
 *   embed infer W.safetensors X.npy
 *       loads the weights (e.g. written by `dtlc run model.dtl --save W.safetensors`), runs
 *       the model's forward on every row of X (float32, rows x MODEL_IN) and prints one line
 *       per row: the predicted class (the largest output), then the outputs.
 *   embed train W.safetensors X.npy Y.npy STEP N OUT.safetensors
 *       loads W (parameters and, when there, Adam's state), runs N training steps numbered
 *       STEP, STEP+1 … on the batches of X and Y (int64 labels) that an epoch in file order
 *       gives them (`dtlc run --no-shuffle`: step s takes rows (s-1)*MODEL_BATCH …), prints
 *       each loss and saves everything to OUT.
 *   embed init SEED OUT.safetensors
 *       saves the initial weights drawn from SEED (the same as `dtlc run --seed SEED`).
 *
 * The program does not know the model: the sizes come from model.h (MODEL_BATCH, MODEL_IN,
 * MODEL_OUT). Reading .npy is the only code here that is not a call into the model.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

/* Reads a C-order .npy file of `descr` ("<f4", "<i8") whose rows have `per_row` values;
 * returns the data (malloc'd) and its row count, or NULL after printing why. */
static void *read_npy(const char *path, const char *descr, long per_row, size_t esize,
                      long *rows)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    unsigned char pre[12];
    char head[4096];
    void *data = NULL;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0)
        goto bad;
    size_t hlen = pre[8] | (size_t)pre[9] << 8;
    if (pre[6] != 1) {   /* version 2 and 3: a 4-byte header length */
        if (fread(pre + 10, 1, 2, f) != 2)
            goto bad;
        hlen = pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    }
    if (hlen >= sizeof head || fread(head, 1, hlen, f) != hlen)
        goto bad;
    head[hlen] = '\0';
    char want[32];
    snprintf(want, sizeof want, "'descr': '%s'", descr);
    const char *shape = strstr(head, "'shape': (");
    if (!strstr(head, want) || !strstr(head, "'fortran_order': False") || !shape) {
        fprintf(stderr, "%s: expected a C-order %s array: %s\n", path, descr, head);
        fclose(f);
        return NULL;
    }
    long dims[8], nd = 0, count = 1;
    for (const char *s = shape + 10; *s && *s != ')' && nd < 8;) {
        char *end;
        dims[nd] = strtol(s, &end, 10);
        if (end == s)
            break;
        count *= dims[nd++];
        s = end;
        while (*s == ',' || *s == ' ')
            s++;
    }
    if (nd == 0 || count / dims[0] != per_row) {
        fprintf(stderr, "%s: rows of %ld values expected\n", path, per_row);
        fclose(f);
        return NULL;
    }
    data = malloc((size_t)count * esize + 1);
    if (!data || fread(data, esize, (size_t)count, f) != (size_t)count)
        goto bad;
    fclose(f);
    *rows = dims[0];
    return data;
bad:
    fprintf(stderr, "%s: not a .npy file this program reads\n", path);
    free(data);
    fclose(f);
    return NULL;
}

static int usage(void)
{
    fprintf(stderr, "usage: embed infer W.safetensors X.npy\n"
                    "       embed train W.safetensors X.npy Y.npy STEP N OUT.safetensors\n"
                    "       embed init SEED OUT.safetensors\n");
    return 2;
}

static int infer(model_ctx *m, const char *xpath)
{
    long rows;
    float *x = read_npy(xpath, "<f4", MODEL_IN, sizeof *x, &rows);
    float *y = x ? malloc((size_t)rows * MODEL_OUT * sizeof *y + 1) : NULL;
    if (!y || model_infer(m, x, rows, y) != 0) {
        if (y)
            fprintf(stderr, "embed: %s\n", model_error(m));
        free(x);
        free(y);
        return 1;
    }
    for (long r = 0; r < rows; r++) {
        const float *o = y + r * MODEL_OUT;
        int best = 0;
        for (int k = 1; k < MODEL_OUT; k++)
            if (o[k] > o[best])
                best = k;
        printf("%d", best);
        for (int k = 0; k < MODEL_OUT; k++)
            printf(" %.9g", o[k]);
        printf("\n");
    }
    free(x);
    free(y);
    return 0;
}

static int train(model_ctx *m, char **argv)
{
    long rows, nlab;
    int64_t step = strtoll(argv[5], NULL, 10), n = strtoll(argv[6], NULL, 10);
    float *x = read_npy(argv[3], "<f4", MODEL_IN, sizeof *x, &rows);
    int64_t *y = read_npy(argv[4], "<i8", 1, sizeof *y, &nlab);
    int st = 1;
    if (!x || !y)
        goto out;
    if (nlab != rows || step < 1 || (step - 1 + n) * MODEL_BATCH > rows) {
        fprintf(stderr, "embed: %ld rows and %ld labels do not hold steps %" PRId64 "..%" PRId64
                " of %d rows\n", rows, nlab, step, step + n - 1, MODEL_BATCH);
        goto out;
    }
    for (int64_t s = step; s < step + n; s++) {
        double loss;
        size_t at = (size_t)(s - 1) * MODEL_BATCH;
        if (model_train_step(m, x + at * MODEL_IN, y + at, s, &loss) != 0) {
            fprintf(stderr, "embed: step %" PRId64 ": %s\n", s, model_error(m));
            goto out;
        }
        printf("step %" PRId64 " loss %.9g\n", s, loss);
    }
    if (model_save(m, argv[7]) != 0) {
        fprintf(stderr, "embed: %s\n", model_error(m));
        goto out;
    }
    st = 0;
out:
    free(x);
    free(y);
    return st;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *cmd = argv[1];
    int init = strcmp(cmd, "init") == 0;
    if (!(strcmp(cmd, "infer") == 0 && argc == 4) && !(strcmp(cmd, "train") == 0 && argc == 8) &&
        !(init && argc == 4))
        return usage();
    char why[512];
    model_ctx *m = model_create(init ? strtoull(argv[2], NULL, 10) : 0, why, sizeof why);
    if (!m) {
        fprintf(stderr, "embed: %s\n", why);
        return 1;
    }
    int st;
    if (init)
        st = model_save(m, argv[3]) == 0 ? 0 : (fprintf(stderr, "embed: %s\n", model_error(m)), 1);
    else if (model_load(m, argv[2]) != 0) {
        fprintf(stderr, "embed: %s\n", model_error(m));
        st = 1;
    } else
        st = cmd[1] == 'n' ? infer(m, argv[3]) : train(m, argv);
    model_free(m);
    return st;
}
