/* tests/unit/st_compare.c — compares two safetensors checkpoints (tests/train_ddp.sh).
 *
 * Usage: st_compare A B TOL [KEY…]
 * Every tensor of A must be in B with the same dtype (f32/f64) and shape, and agree within TOL
 * relative: max |a - b| / max |b| per tensor (0 when both are all zeros). Each metadata KEY
 * (e.g. step, epoch) must have the same value in both. Prints the worst tensor and its
 * difference. Exit 0 when all agree, 1 when not, 99 on a usage or read error.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/safetensors.h"

static double at(const dtl_st_tensor *t, size_t i)
{
    return t->dtype == DTL_ST_F64 ? ((const double *)t->data)[i] : ((const float *)t->data)[i];
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: st_compare A B TOL [KEY…]\n");
        return 99;
    }
    double tol = strtod(argv[3], NULL);
    dtl_err err = {0};
    dtl_st_file *a = dtl_st_read(argv[1], &err);
    dtl_st_file *b = a ? dtl_st_read(argv[2], &err) : NULL;
    if (!a || !b) {
        fprintf(stderr, "st_compare: %s\n", err.msg);
        dtl_st_close(a);
        return 99;
    }
    int rc = 0;
    double worst = 0;
    const char *worst_name = "(none)";
    for (size_t k = 0; k < dtl_st_count(a); k++) {
        const dtl_st_tensor *ta = dtl_st_get(a, k), *tb = dtl_st_find(b, ta->name);
        bool same = tb && ta->dtype == tb->dtype && ta->rank == tb->rank &&
                    ta->nbytes == tb->nbytes &&
                    (ta->dtype == DTL_ST_F32 || ta->dtype == DTL_ST_F64);
        for (uint32_t i = 0; same && i < ta->rank; i++)
            same = ta->shape[i] == tb->shape[i];
        if (!same) {
            printf("%s: missing from %s, or of another dtype or shape\n", ta->name, argv[2]);
            rc = 1;
            continue;
        }
        size_t n = ta->nbytes / dtl_st_dtype_size(ta->dtype);
        double diff = 0, scale = 0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs(at(ta, i) - at(tb, i));
            diff = d > diff || isnan(d) ? d : diff;
            scale = fabs(at(tb, i)) > scale ? fabs(at(tb, i)) : scale;
        }
        double rel = scale > 0 ? diff / scale : diff;
        if (!(rel <= worst))
            worst = rel, worst_name = ta->name;
        if (!(rel <= tol))
            rc = 1;
    }
    if (dtl_st_count(a) != dtl_st_count(b)) {
        printf("%s has %zu tensors, %s %zu\n", argv[1], dtl_st_count(a), argv[2], dtl_st_count(b));
        rc = 1;
    }
    for (int i = 4; i < argc; i++) {
        const char *va = dtl_st_meta_get(a, argv[i]), *vb = dtl_st_meta_get(b, argv[i]);
        if (!va || !vb || strcmp(va, vb) != 0) {
            printf("metadata %s: %s vs %s\n", argv[i], va ? va : "(none)", vb ? vb : "(none)");
            rc = 1;
        }
    }
    printf("max relative difference %.3g (%s)%s\n", worst, worst_name, rc ? ": DIFFERENT" : "");
    dtl_st_close(a);
    dtl_st_close(b);
    return rc;
}
