/* tests/unit/test_data_text.c — runtime/data_text.c and the text/target paths of data.c:
 * which files of a directory a text set reads, documents cut at separator lines and split
 * every N-th, the windows a batch gets (x, and y one byte later) at the epoch's offset, the
 * loader against synchronous gathers; CSV preambles (skip), float targets and their errors
 * with file:line:column; the held-out split of a table (disjoint, complete, in file order,
 * the same whatever the run's seed); feature statistics and standardization.
 *
 * Fixtures are written into a fresh directory under $TMPDIR and removed at the end. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../runtime/data.h"
#include "unit.h"

static char dir[256];
static char paths[32][300];
static int npaths;

/* Writes dir/name with text and remembers it for removal. */
static const char *put(const char *name, const char *text)
{
    char *p = paths[npaths++];
    snprintf(p, sizeof paths[0], "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(text, 1, strlen(text), f) != strlen(text) || fclose(f) != 0) {
        fprintf(stderr, "test_data_text: cannot write %s\n", p);
        exit(99);
    }
    return p;
}

static const char *path_of(const char *name)
{
    static char p[300];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static bool has(const dtl_err *e, const char *s)
{
    bool ok = strstr(e->msg, s) != NULL;
    if (!ok)
        fprintf(stderr, "message '%s' lacks '%s'\n", e->msg, s);
    return ok;
}

static void test_text_dir(void)
{
    char sub[300];
    snprintf(sub, sizeof sub, "%s/corpus", dir);
    mkdir(sub, 0755);
    /* b is read before c (name order); the .dat, the .u8 link, a dot file and a
     * subdirectory are not. */
    put("corpus/c", "c1\n%\nc2 line\nc2 more\n%\n");
    put("corpus/b", "b1\n%\n%\nb2\n%\nb3");      /* an empty document; no final newline */
    put("corpus/b.dat", "binary index");
    put("corpus/.hidden", "no");
    char link[300], sdir[300];
    snprintf(link, sizeof link, "%s/corpus/c.u8", dir);
    CHECK(symlink("c", link) == 0);
    snprintf(sdir, sizeof sdir, "%s/corpus/sub", dir);
    mkdir(sdir, 0755);

    dtl_err e = {0};
    dtl_data tr, te;
    /* documents: b1 b2 b3 c1 "c2 line\nc2 more" — every 2nd (b2, c1) is a test one */
    dtl_text_opts o = {2, "%", 2, false};
    CHECK(dtl_data_load_text(&tr, sub, &o, &e));
    CHECK(tr.text && tr.text_len == (int64_t)strlen("b1\n%\nb3\n%\nc2 line\nc2 more\n%\n"));
    CHECK(tr.text && memcmp(tr.text, "b1\n%\nb3\n%\nc2 line\nc2 more\n%\n",
                            (size_t)tr.text_len) == 0);
    CHECK(tr.dtype == DTL_DTYPE_I64 && tr.features == 2 && tr.ylen == 2 && tr.classes == 256);
    CHECK(tr.n == (tr.text_len - 1) / 2);
    CHECK(dtl_data_ylen(&tr) == 2 && dtl_data_ydtype(&tr) == DTL_DTYPE_I64);
    o.test = true;
    CHECK(dtl_data_load_text(&te, sub, &o, &e));
    CHECK(te.text_len == 10 && memcmp(te.text, "b2\n%\nc1\n%\n", 10) == 0);

    /* windows: row k at off + 2k; y is x one byte later */
    int64_t idx[2] = {3, 0}, x[4], y[4];
    dtl_data_gather_at(&tr, 1, idx, 2, x, y);
    const unsigned char *t = tr.text;
    CHECK(x[0] == t[7] && x[1] == t[8] && y[0] == t[8] && y[1] == t[9]);
    CHECK(x[2] == t[1] && x[3] == t[2] && y[2] == t[2] && y[3] == t[3]);

    /* the offset: 0 without shuffle, within the slack, a function of (seed, epoch) */
    int64_t slack = (tr.text_len - 1) - tr.n * 2;
    CHECK(dtl_data_text_offset(&tr, 5, 3, false) == 0);
    bool differ = false;
    for (uint64_t ep = 0; ep < 20; ep++) {
        int64_t off = dtl_data_text_offset(&tr, 5, ep, true);
        CHECK(off >= 0 && off <= slack);
        CHECK(off == dtl_data_text_offset(&tr, 5, ep, true));
        differ |= off != dtl_data_text_offset(&tr, 5, 0, true);
    }
    CHECK(slack == 0 || differ);

    /* the loader gives what gather_at gives at the epoch's offset and order */
    dtl_loader_opts lo = {3, 1, 0, 9, true, true, 2};
    dtl_loader *l = dtl_loader_new(&tr, &lo, &e);
    CHECK(l != NULL);
    for (uint64_t ep = 0; l && ep < 3; ep++) {
        int64_t perm[64], wx[6], wy[6];
        CHECK(tr.n <= 64);
        dtl_data_epoch_order(tr.n, 9, ep, true, perm);
        int64_t off = dtl_data_text_offset(&tr, 9, ep, true);
        CHECK(dtl_loader_start_epoch(l, ep, &e));
        int64_t s = 0;
        for (const dtl_batch *b; (b = dtl_loader_next(l)); dtl_loader_release(l, b), s++) {
            dtl_data_gather_at(&tr, off, perm + s * 3, b->rows, wx, wy);
            CHECK(b->rows == 3 && memcmp(b->x, wx, sizeof wx) == 0 &&
                  memcmp(b->y, wy, sizeof wy) == 0);
        }
        CHECK(s == tr.n / 3);
    }
    dtl_loader_free(l);
    dtl_data_free(&tr);
    dtl_data_free(&te);

    /* a single file, no separator: one document; errors */
    const char *one = put("one.txt", "hello world\n");
    dtl_text_opts o1 = {4, NULL, 0, false};
    CHECK(dtl_data_load_text(&tr, one, &o1, &e));
    CHECK(tr.text_len == 12 && tr.n == 2);
    dtl_data_free(&tr);
    o1.context = 12;
    CHECK(!dtl_data_load_text(&tr, one, &o1, &e) && has(&e, "fewer than one window"));
    o1.context = 4;
    o1.test = true;
    CHECK(!dtl_data_load_text(&tr, one, &o1, &e) && has(&e, "test_every"));
    o1.test = false;
    CHECK(!dtl_data_load_text(&tr, path_of("missing"), &o1, &e) && has(&e, "missing"));
    char nul[] = "ab\0cd\nxx";
    FILE *f = fopen(put("nul.txt", ""), "wb");
    CHECK(f && fwrite(nul, 1, sizeof nul - 1, f) == sizeof nul - 1);
    if (f)
        fclose(f);
    CHECK(!dtl_data_load_text(&tr, path_of("nul.txt"), &o1, &e) && has(&e, "NUL byte"));
    char empty[300];
    snprintf(empty, sizeof empty, "%s/emptydir", dir);
    mkdir(empty, 0755);
    CHECK(!dtl_data_load_text(&tr, empty, &o1, &e) && has(&e, "no plain-text files"));
    rmdir(empty);
    unlink(link);
    rmdir(sdir);
}

static void test_csv_targets(void)
{
    dtl_err e = {0};
    dtl_data d;
    dtl_data_opts o = dtl_data_opts_default();
    o.csv_header = false;
    o.csv_label_index = -1;
    o.csv_skip = 1;
    /* scikit-learn's preamble: 3 rows, 2 features, then class names */
    const char *p = put("sk.csv", "3,2,no,yes\n1,2,0\n3,4,1\n5,6,1\n");
    CHECK(dtl_data_load_csv(&d, p, &o, &e));
    CHECK(d.n == 3 && d.features == 2 && d.classes == 2 && d.y[2] == 1 && !d.yf);
    dtl_data_free(&d);
    o.csv_skip = 0;
    CHECK(!dtl_data_load_csv(&d, p, &o, &e) && has(&e, "sk.csv:1:5: not a number: 'no'"));

    o.csv_header = true;
    o.csv_label = "y";
    o.csv_regression = true;
    p = put("reg.csv", "a,y\n1,0.5\n2,-1.25e1\n");
    CHECK(dtl_data_load_csv(&d, p, &o, &e));
    CHECK(d.n == 2 && !d.y && d.yf && d.classes == 0 && dtl_data_ydtype(&d) == DTL_DTYPE_F32);
    CHECK(d.yf && ((float *)d.yf)[0] == 0.5f && ((float *)d.yf)[1] == -12.5f);
    int64_t idx[2] = {1, 0};
    float x[2], y[2];
    dtl_data_gather(&d, idx, 2, x, y);
    CHECK(x[0] == 2 && x[1] == 1 && y[0] == -12.5f && y[1] == 0.5f);
    dtl_data_free(&d);
    o.dtype = DTL_DTYPE_F64;
    CHECK(dtl_data_load_csv(&d, p, &o, &e));
    CHECK(d.yf && ((double *)d.yf)[1] == -12.5 && dtl_data_ydtype(&d) == DTL_DTYPE_F64);
    dtl_data_free(&d);
    p = put("regbad.csv", "a,y\n1,0.5\n2,abc\n");
    CHECK(!dtl_data_load_csv(&d, p, &o, &e) && has(&e, "regbad.csv:3:3: target is not a number"));
}

static void test_holdout_and_stats(void)
{
    dtl_err e = {0};
    dtl_data_opts o = dtl_data_opts_default();
    o.csv_header = false;
    o.csv_label_index = 0;
    char text[4096] = "";
    size_t len = 0;
    for (int i = 0; i < 50; i++)   /* label i % 3, features i and 2i */
        len += (size_t)snprintf(text + len, sizeof text - len, "%d,%d,%d\n", i % 3, i, 2 * i);
    const char *p = put("rows.csv", text);
    dtl_data tr, te;
    CHECK(dtl_data_load_csv(&tr, p, &o, &e) && dtl_data_holdout(&tr, 0.2, false, p, &e));
    CHECK(dtl_data_load_csv(&te, p, &o, &e) && dtl_data_holdout(&te, 0.2, true, p, &e));
    CHECK(tr.n == 40 && te.n == 10);
    bool seen[50] = {0}, ordered = true, labels = true;
    for (int64_t i = 0; i < tr.n + te.n; i++) {
        const dtl_data *d = i < tr.n ? &tr : &te;
        int64_t r = i < tr.n ? i : i - tr.n;
        int v = (int)((float *)d->x)[r * 2];
        CHECK(v >= 0 && v < 50 && !seen[v]);
        if (v >= 0 && v < 50)
            seen[v] = true;
        labels &= d->y[r] == v % 3 && ((float *)d->x)[r * 2 + 1] == 2.0f * (float)v;
        if (r > 0)
            ordered &= ((float *)d->x)[(r - 1) * 2] < (float)v;
    }
    CHECK(ordered && labels);
    /* the same split again (no seed involved) */
    dtl_data again;
    CHECK(dtl_data_load_csv(&again, p, &o, &e) && dtl_data_holdout(&again, 0.2, true, p, &e));
    CHECK(again.n == te.n && memcmp(again.x, te.x, (size_t)te.n * 2 * sizeof(float)) == 0);
    dtl_data_free(&again);
    CHECK(dtl_data_load_csv(&again, p, &o, &e));
    CHECK(!dtl_data_holdout(&again, 1.0, true, p, &e) && has(&e, "(0, 1)"));
    dtl_data_free(&again);

    /* statistics of the train part, applied to both */
    double mean[2], sd[2];
    CHECK(dtl_data_stats(&tr, mean, sd, &e));
    double m = 0, q = 0;
    for (int64_t i = 0; i < tr.n; i++)
        m += ((float *)tr.x)[i * 2];
    m /= (double)tr.n;
    for (int64_t i = 0; i < tr.n; i++)
        q += (((float *)tr.x)[i * 2] - m) * (((float *)tr.x)[i * 2] - m);
    CHECK(fabs(mean[0] - m) < 1e-9 && fabs(sd[0] - sqrt(q / (double)tr.n)) < 1e-9);
    CHECK(fabs(mean[1] - 2 * m) < 1e-9 && fabs(sd[1] - 2 * sd[0]) < 1e-9);
    float first_test = ((float *)te.x)[0];
    CHECK(dtl_data_standardize(&tr, mean, sd, &e) && dtl_data_standardize(&te, mean, sd, &e));
    double s0 = 0, s1 = 0;
    for (int64_t i = 0; i < tr.n; i++)
        s0 += ((float *)tr.x)[i * 2], s1 += ((float *)tr.x)[i * 2] * ((float *)tr.x)[i * 2];
    CHECK(fabs(s0 / (double)tr.n) < 1e-5 && fabs(s1 / (double)tr.n - 1) < 1e-4);
    CHECK(fabs(((float *)te.x)[0] - (first_test - mean[0]) / sd[0]) < 1e-5);
    dtl_data_free(&tr);
    dtl_data_free(&te);

    /* a constant feature gets sd 1 (no division by zero) */
    p = put("const.csv", "0,7,1\n1,7,2\n");
    CHECK(dtl_data_load_csv(&tr, p, &o, &e) && dtl_data_stats(&tr, mean, sd, &e));
    CHECK(mean[0] == 7 && sd[0] == 1 && sd[1] == 0.5);
    dtl_data_free(&tr);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/dtl_data_text.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 99;
    }
    test_text_dir();
    test_csv_targets();
    test_holdout_and_stats();
    for (int i = npaths - 1; i >= 0; i--)
        unlink(paths[i]);
    char sub[300];
    snprintf(sub, sizeof sub, "%s/corpus", dir);
    rmdir(sub);
    rmdir(dir);
    CHECK_DONE();
}
