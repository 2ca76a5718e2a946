/* kernels/cpu/gemm_tmpl.h — the blocked GEMM driver, written once for both element types:
 * gemm.c includes it twice, with T (float, double), SFX(name) (name_f32, name_f64), NR (the
 * micro-kernel's width), KC, NC and MB (the cache blocking: a slice of k, a block of columns
 * and of rows) and KERN (the micro-kernel type). */

/* The copy of a block of A (copy_a): MB x KC, or KC x MB, rows padded to an odd number of
 * cache lines. */
#define LINE_ ((int)(64 / sizeof(T)))
enum {
    SFX(KCP) = ((KC + LINE_ - 1) / LINE_ * LINE_) | LINE_,
    SFX(MBP) = ((MB + LINE_ - 1) / LINE_ * LINE_) | LINE_,
    SFX(A_BUF) = MB * SFX(KCP) > KC * SFX(MBP) ? MB * SFX(KCP) : KC * SFX(MBP),
};
#undef LINE_
_Static_assert(MB % DTL_GEMM_MR == 0 && MB <= DTL_GEMM_MAX_BLOCK_ROWS, "row blocks of whole tiles");
_Static_assert(NC % NR == 0, "column blocks of whole panels");
_Static_assert((KC * NC + SFX(A_BUF)) * sizeof(T) + 8192 <= DTL_GEMM_STACK_BYTES, "stack budget");

/* The portable micro-kernel (contract in gemm_internal.h): plain C whose inner loop over the
 * NR columns the compiler vectorizes for the baseline ISA. */
static void SFX(kern_portable)(int64_t kc, const T *a, int64_t rs, int64_t cs, const T *bp, T *c,
                               int64_t ldc, int mr, int nr, bool first)
{
    T acc[DTL_GEMM_MR][NR];
    memset(acc, 0, sizeof acc);
    for (int64_t p = 0; p < kc; p++) {
        const T *ap = a + p * cs, *b = bp + p * NR;
        for (int r = 0; r < mr; r++) {
            T av = ap[r * rs];
            for (int j = 0; j < NR; j++)
                acc[r][j] += av * b[j];
        }
    }
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) {
            if (first)
                c[r * ldc + j] = acc[r][j];
            else
                c[r * ldc + j] += acc[r][j];
        }
}

typedef struct SFX(gemm_job) {
    int64_t m, n, k;
    const T *a, *b;
    T *c;
    int64_t lda, ldb, ldc;
    bool ta, tb;
    dtl_gemm_epilogue epi;
    void *ctx;
    KERN kern;
    int64_t mp, np; /* C in micro-tiles: ceil(m / MR) rows, ceil(n / NR) columns */
    int64_t gm, gn; /* the grid of per-thread blocks (gm x gn jobs) */
} SFX(gemm_job);

/* Packs op(B)[pc:pc+kc, jc:jc+nc] into panels of NR columns: panel q holds columns
 * jc + q*NR .. at bp + q*NR*kc, kc rows of NR values, zero beyond nc. */
static void SFX(pack_b)(const SFX(gemm_job) *g, T *bp, int64_t pc, int64_t kc, int64_t jc,
                        int64_t nc)
{
    for (int64_t jr = 0; jr < nc; jr += NR) {
        int64_t nr = nc - jr < NR ? nc - jr : NR;
        T *dst = bp + jr * kc;
        if (!g->tb) {
            const T *src = g->b + pc * g->ldb + jc + jr;
            if (nr == NR) {
                for (int64_t p = 0; p < kc; p++) /* a constant size: two or four vector moves */
                    memcpy(dst + p * NR, src + p * g->ldb, NR * sizeof(T));
            } else {
                memset(dst, 0, (size_t)kc * NR * sizeof(T));
                for (int64_t p = 0; p < kc; p++)
                    for (int64_t j = 0; j < nr; j++)
                        dst[p * NR + j] = src[p * g->ldb + j];
            }
        } else {
            for (int64_t j = 0; j < NR; j++) {
                if (j < nr) {
                    const T *src = g->b + (jc + jr + j) * g->ldb + pc;
                    for (int64_t p = 0; p < kc; p++)
                        dst[p * NR + j] = src[p];
                } else {
                    for (int64_t p = 0; p < kc; p++)
                        dst[p * NR + j] = 0;
                }
            }
        }
    }
}

/* Copies the block of A that rows [ic, ie) of C need for the k slice [pc, pc+kc) into ap, as
 * it is laid out in A (rows of op(A) when !ta, rows of the stored A^T when ta) but contiguous,
 * with a row stride of an odd number of cache lines. Read in place, the block's rows lie lda
 * apart: with A^T, each step of k is a new line and a new page for MR values (1024 x 1024 A^T
 * runs about 25% slower without the copy), and a power-of-two lda maps the rows onto a few
 * cache sets. Sets *rs, *cs to read op(A)[ic + r, pc + p] as ap[r * rs + p * cs]. */
static const T *SFX(copy_a)(const SFX(gemm_job) *g, T *ap, int64_t ic, int64_t ie, int64_t pc,
                            int64_t kc, int64_t *rs, int64_t *cs)
{
    const int64_t line = 64 / sizeof(T);
    if (!g->ta) {
        const int64_t ld = ((kc + line - 1) / line * line) | line;
        for (int64_t i = ic; i < ie; i++)
            memcpy(ap + (i - ic) * ld, g->a + i * g->lda + pc, (size_t)kc * sizeof(T));
        *rs = ld;
        *cs = 1;
    } else {
        const int64_t ld = ((ie - ic + line - 1) / line * line) | line;
        for (int64_t p = 0; p < kc; p++)
            memcpy(ap + p * ld, g->a + (pc + p) * g->lda + ic, (size_t)(ie - ic) * sizeof(T));
        *rs = 1;
        *cs = ld;
    }
    return ap;
}

/* Computes C[i0:i1, j0:j1] completely (i0 a multiple of MR, j0 of NR) and runs the epilogue
 * on it in blocks of at most MB rows by NC columns.
 * Loops (outer to inner): NC columns of C; KC slices of k (B's slice packed once, in L2);
 * blocks of MB rows (their A in L2, copied when large and used by many panels; the epilogue's
 * unit); NR-column panels of B (in L1); MR-row tiles. */
static void SFX(gemm_block)(const SFX(gemm_job) *g, int64_t i0, int64_t i1, int64_t j0, int64_t j1)
{
    _Alignas(64) T bp[KC * NC];
    _Alignas(64) T ap[SFX(A_BUF)];
    const int64_t k = g->k;
    /* k in nk slices of nearly equal size (784 = 4 x 196, not 3 x 256 + 16). */
    const int64_t nk = (k + KC - 1) / KC;
    for (int64_t jc = j0; jc < j1; jc += NC) {
        const int64_t nc = j1 - jc < NC ? j1 - jc : NC;
        if (k == 0) {
            for (int64_t ic = i0; ic < i1; ic += MB) {
                const int64_t ie = i1 - ic < MB ? i1 : ic + MB;
                for (int64_t i = ic; i < ie; i++)
                    for (int64_t j = jc; j < jc + nc; j++)
                        g->c[i * g->ldc + j] = 0;
                if (g->epi)
                    g->epi(g->ctx, ic, ie, jc, jc + nc);
            }
            continue;
        }
        for (int64_t s = 0, pc = 0, kc; s < nk; s++, pc += kc) {
            kc = k / nk + (s < k % nk);
            SFX(pack_b)(g, bp, pc, kc, jc, nc);
            for (int64_t ic = i0; ic < i1; ic += MB) {
                const int64_t ie = i1 - ic < MB ? i1 : ic + MB;
                const T *a;
                int64_t rs, cs;
                if ((ie - ic) * kc * (int64_t)sizeof(T) > COPY_A_BYTES && nc >= COPY_A_COLS) {
                    a = SFX(copy_a)(g, ap, ic, ie, pc, kc, &rs, &cs);
                } else if (!g->ta) {
                    a = g->a + ic * g->lda + pc, rs = g->lda, cs = 1;
                } else {
                    a = g->a + pc * g->lda + ic, rs = 1, cs = g->lda;
                }
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    const int nr = (int)(nc - jr < NR ? nc - jr : NR);
                    for (int64_t ir = ic, mr; ir < ie; ir += mr) {
                        mr = ie - ir < DTL_GEMM_MR ? ie - ir : DTL_GEMM_MR;
                        if (ie - ir > DTL_GEMM_MR && ie - ir < 2 * DTL_GEMM_MR)
                            mr = (ie - ir + 1) / 2; /* 32 rows: 6 6 6 6 4 4, not 6 6 6 6 6 2 */
                        g->kern(kc, a + (ir - ic) * rs, rs, cs, bp + jr * kc,
                                g->c + ir * g->ldc + jc + jr, g->ldc, (int)mr, nr, s == 0);
                    }
                }
                if (s == nk - 1 && g->epi)
                    g->epi(g->ctx, ic, ie, jc, jc + nc);
            }
        }
    }
}

/* Job q of the gm x gn grid: a band of whole micro-tiles of C. */
static void SFX(gemm_jobs)(void *ctx, int64_t begin, int64_t end)
{
    const SFX(gemm_job) *g = ctx;
    for (int64_t q = begin; q < end; q++) {
        int64_t qi = q / g->gn, qj = q % g->gn;
        int64_t i0 = qi * g->mp / g->gm * DTL_GEMM_MR, i1 = (qi + 1) * g->mp / g->gm * DTL_GEMM_MR;
        int64_t j0 = qj * g->np / g->gn * NR, j1 = (qj + 1) * g->np / g->gn * NR;
        if (i1 > g->m)
            i1 = g->m;
        if (j1 > g->n)
            j1 = g->n;
        if (i0 < i1 && j0 < j1)
            SFX(gemm_block)(g, i0, i1, j0, j1);
    }
}

static void SFX(gemm)(const dtl_gemm_opts *opts, dtl_pool *pool, int64_t m, int64_t n, int64_t k,
                      const T *a, int64_t lda, bool ta, const T *b, int64_t ldb, bool tb, T *c,
                      int64_t ldc, dtl_gemm_epilogue epi, void *ctx)
{
    DTL_GEMM_ASSERT(m >= 0 && n >= 0 && k >= 0);
    if (m == 0 || n == 0)
        return;
    DTL_GEMM_ASSERT(c && ldc >= n);
    DTL_GEMM_ASSERT(k == 0 || (a && b && lda >= (ta ? m : k) && ldb >= (tb ? k : n)));
    dtl_gemm_isa isa = resolve_isa(opts ? opts->isa : DTL_GEMM_ISA_AUTO);
    SFX(gemm_job) g = {
        .m = m, .n = n, .k = k, .a = a, .b = b, .c = c, .lda = lda, .ldb = ldb, .ldc = ldc,
        .ta = ta, .tb = tb, .epi = epi, .ctx = ctx, .kern = SFX(kernels)[isa],
        .mp = (m + DTL_GEMM_MR - 1) / DTL_GEMM_MR, .np = (n + NR - 1) / NR, .gm = 1, .gn = 1,
    };
    int64_t par = opts && opts->par_flops ? opts->par_flops : DTL_GEMM_PAR_FLOPS;
    int nt = dtl_pool_size(pool);
    double flops = 2.0 * (double)m * (double)n * (double)(k ? k : 1);
    if (nt > 1 && (par < 0 || flops >= (double)par) && g.mp * g.np > 1) {
        choose_grid(g.mp, g.np, DTL_GEMM_MR, NR, nt, &g.gm, &g.gn);
        dtl_pool_run(pool, SFX(gemm_jobs), &g, g.gm * g.gn, 1);
    } else {
        SFX(gemm_block)(&g, 0, m, 0, n);
    }
}
