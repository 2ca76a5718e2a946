/* tests/unit/test_graph.c — the graph IR: the builders' inferred dtypes and shapes
 * (broadcasting, batched matmul, reductions, slices, gather/scatter), builder misuse aborting
 * with file:line (in a child process), the verifier catching corrupted graphs, the printed
 * text format, and the DOT output. */
#define _POSIX_C_SOURCE 200809L
#include "../../compiler/graph.h"
#include "unit.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define F32 DTL_DTYPE_F32
#define F64 DTL_DTYPE_F64
#define I32 DTL_DTYPE_I32
#define I64 DTL_DTYPE_I64
#define BOOL DTL_DTYPE_BOOL

static const dtl_init ZEROS = {DTL_INIT_ZEROS, 0, 0, NULL};

/* Does node v have dtype dt and the given shape? Prints what it has otherwise. */
static bool has_type(const dtl_graph *g, dtl_val v, dtl_dtype dt, uint32_t rank,
                     const int64_t *shape)
{
    const dtl_node *n = dtl_g_node(g, v);
    bool ok = n->dtype == dt && n->rank == rank;
    for (uint32_t i = 0; ok && i < rank; i++)
        ok = n->shape[i] == shape[i];
    if (!ok) {
        fprintf(stderr, "  %%%u is %s rank %u [", v, dtl_dtype_name(n->dtype), n->rank);
        for (uint32_t i = 0; i < n->rank; i++)
            fprintf(stderr, "%s%lld", i ? ", " : "", (long long)n->shape[i]);
        fprintf(stderr, "]\n");
    }
    return ok;
}
#define TYPE(g, v, dt, ...)                                                                 \
    has_type(g, v, dt, sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t), (int64_t[]){__VA_ARGS__})
#define SCALAR(g, v, dt) has_type(g, v, dt, 0, NULL)

static void test_shapes(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    dtl_val a = dtl_g_input(&g, "a", F32, 3, (int64_t[]){2, 1, 3});
    dtl_val b = dtl_g_input(&g, "b", F32, 2, (int64_t[]){4, 1});
    dtl_val s = dtl_g_scalar(&g, F32, 2);
    CHECK(SCALAR(&g, s, F32));
    CHECK(TYPE(&g, dtl_g_binary(&g, DTL_OP_ADD, a, b), F32, 2, 4, 3));
    CHECK(TYPE(&g, dtl_g_binary(&g, DTL_OP_MUL, s, a), F32, 2, 1, 3));
    CHECK(TYPE(&g, dtl_g_binary(&g, DTL_OP_LT, b, a), BOOL, 2, 4, 3));
    CHECK(TYPE(&g, dtl_g_binary(&g, DTL_OP_EQ, s, s), BOOL));
    dtl_val c = dtl_g_binary(&g, DTL_OP_GT, a, s);
    CHECK(TYPE(&g, dtl_g_where(&g, c, b, s), F32, 2, 4, 3));
    CHECK(TYPE(&g, dtl_g_unary(&g, DTL_OP_NOT, c), BOOL, 2, 1, 3));
    CHECK(TYPE(&g, dtl_g_unary(&g, DTL_OP_EXP, a), F32, 2, 1, 3));
    CHECK(TYPE(&g, dtl_g_cast(&g, a, I64), I64, 2, 1, 3));

    /* matmul: plain, batched, batch broadcast. */
    dtl_val m1 = dtl_g_input(&g, "m1", F64, 2, (int64_t[]){32, 784});
    dtl_val w = dtl_g_param(&g, "w", F64, 2, (int64_t[]){784, 128}, ZEROS);
    CHECK(TYPE(&g, dtl_g_matmul(&g, m1, w), F64, 32, 128));
    dtl_val p = dtl_g_input(&g, "p", F64, 3, (int64_t[]){5, 2, 3});
    dtl_val q = dtl_g_input(&g, "q", F64, 2, (int64_t[]){3, 4});
    CHECK(TYPE(&g, dtl_g_matmul(&g, p, q), F64, 5, 2, 4));
    dtl_val r = dtl_g_input(&g, "r", F64, 4, (int64_t[]){2, 1, 3, 4});
    dtl_val t = dtl_g_input(&g, "t", F64, 3, (int64_t[]){5, 4, 6});
    CHECK(TYPE(&g, dtl_g_matmul(&g, r, t), F64, 2, 5, 3, 6));

    /* Reductions. */
    dtl_val x = dtl_g_input(&g, "x", F32, 3, (int64_t[]){2, 3, 4});
    CHECK(TYPE(&g, dtl_g_reduce(&g, DTL_OP_SUM, x, 1 | 4, false), F32, 3));
    CHECK(TYPE(&g, dtl_g_reduce(&g, DTL_OP_SUM, x, 1 | 4, true), F32, 1, 3, 1));
    CHECK(SCALAR(&g, dtl_g_reduce(&g, DTL_OP_REDUCE_MAX, x, 7, false), F32));
    CHECK(TYPE(&g, dtl_g_reduce(&g, DTL_OP_SUM, x, 0, false), F32, 2, 3, 4));
    CHECK(TYPE(&g, dtl_g_argmax(&g, x, 1), I64, 2, 4));

    /* Data movement. */
    CHECK(TYPE(&g, dtl_g_reshape(&g, x, 2, (int64_t[]){6, 4}), F32, 6, 4));
    CHECK(TYPE(&g, dtl_g_transpose(&g, x, (uint32_t[]){2, 0, 1}), F32, 4, 2, 3));
    CHECK(TYPE(&g, dtl_g_broadcast(&g, b, 3, (int64_t[]){7, 4, 5}), F32, 7, 4, 5));
    dtl_val v10 = dtl_g_input(&g, "v10", I32, 1, (int64_t[]){10});
    /* 9, 6, 3, 0 | 1, 4, 7 | 10:10 | 0:10:20 | 9::-1 (stop -1: the whole axis reversed). */
    CHECK(TYPE(&g, dtl_g_slice(&g, v10, (int64_t[]){9}, (int64_t[]){-1}, (int64_t[]){-3}), I32, 4));
    CHECK(TYPE(&g, dtl_g_slice(&g, v10, (int64_t[]){1}, (int64_t[]){8}, (int64_t[]){3}), I32, 3));
    CHECK(TYPE(&g, dtl_g_slice(&g, v10, (int64_t[]){10}, (int64_t[]){10}, (int64_t[]){1}), I32, 0));
    CHECK(TYPE(&g, dtl_g_slice(&g, v10, (int64_t[]){0}, (int64_t[]){10}, (int64_t[]){20}), I32, 1));
    CHECK(TYPE(&g, dtl_g_slice(&g, v10, (int64_t[]){9}, (int64_t[]){-1}, (int64_t[]){-1}), I32, 10));
    CHECK(TYPE(&g, dtl_g_slice(&g, v10, (int64_t[]){3}, (int64_t[]){5}, (int64_t[]){-1}), I32, 0));
    dtl_val y = dtl_g_input(&g, "y", F32, 3, (int64_t[]){2, 5, 4});
    CHECK(TYPE(&g, dtl_g_concat(&g, (dtl_val[]){x, y, x}, 3, 1), F32, 2, 11, 4));
    dtl_val idx = dtl_g_input(&g, "idx", I64, 2, (int64_t[]){7, 8});
    CHECK(TYPE(&g, dtl_g_gather(&g, x, idx, 1), F32, 2, 7, 8, 4));
    dtl_val idx1 = dtl_g_input(&g, "idx1", I32, 1, (int64_t[]){9});
    dtl_val upd = dtl_g_input(&g, "upd", F32, 3, (int64_t[]){2, 9, 4});
    CHECK(TYPE(&g, dtl_g_scatter_add(&g, upd, idx1, 1, 3, (int64_t[]){2, 3, 4}), F32, 2, 3, 4));

    /* Leaves. */
    dtl_val step = dtl_g_input(&g, "step", I64, 0, NULL);
    CHECK(TYPE(&g, dtl_g_rng_uniform(&g, step, F32, 2, (int64_t[]){3, 3}, 5), F32, 3, 3));
    CHECK(TYPE(&g, dtl_g_iota(&g, I64, 2, (int64_t[]){3, 5}, 1), I64, 3, 5));
    CHECK(TYPE(&g, dtl_g_const(&g, F64, 1, (int64_t[]){3}, 1.5), F64, 3));

    /* Roles follow g->role; the op table. */
    g.role = DTL_ROLE_BACKWARD;
    dtl_val back = dtl_g_unary(&g, DTL_OP_NEG, a);
    CHECK(dtl_g_node(&g, back)->role == DTL_ROLE_BACKWARD);
    CHECK_STR(dtl_op_name(DTL_OP_REDUCE_MAX), "reduce_max");
    CHECK_STR(dtl_op_name(DTL_OP_SCATTER_ADD), "scatter_add");
    CHECK(dtl_op_kind_of(DTL_OP_MATMUL) == DTL_OPK_MATMUL);
    CHECK(dtl_op_kind_of(DTL_OP_WHERE) == DTL_OPK_TERNARY);
    CHECK(dtl_op_kind_of(DTL_OP_CONCAT) == DTL_OPK_MOVE);
    CHECK(dtl_node_numel(dtl_g_node(&g, x)) == 24);
    CHECK(dtl_node_numel(dtl_g_node(&g, s)) == 1);
    CHECK(dtl_graph_verify(&g, stderr));
    dtl_graph_free(&g);
}

/* ---- misuse aborts ------------------------------------------------------------------------ */

typedef void misuse_fn(dtl_graph *g);

/* Runs f in a child; expects it to abort with a message naming graph.c and containing want. */
static bool aborts_with(misuse_fn *f, const char *want)
{
    int fds[2];
    if (pipe(fds) != 0)
        return false;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        dtl_graph g;
        dtl_graph_init(&g);
        f(&g);
        _exit(0);   /* did not abort */
    }
    close(fds[1]);
    char buf[2048];
    size_t len = 0;
    ssize_t got;
    while (len < sizeof buf - 1 && (got = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)got;
    buf[len] = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    bool ok = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && strstr(buf, "graph.c:") &&
              strstr(buf, want);
    if (!ok)
        fprintf(stderr, "  expected an abort with \"%s\", got status %d and: %s\n", want, status,
                buf);
    return ok;
}

static void bad_matmul(dtl_graph *g)
{
    dtl_val a = dtl_g_input(g, "a", F32, 2, (int64_t[]){32, 784});
    dtl_val b = dtl_g_input(g, "b", F32, 2, (int64_t[]){128, 10});
    dtl_g_matmul(g, a, b);
}
static void bad_matmul_batch(dtl_graph *g)
{
    dtl_val a = dtl_g_input(g, "a", F32, 3, (int64_t[]){2, 3, 4});
    dtl_val b = dtl_g_input(g, "b", F32, 3, (int64_t[]){3, 4, 5});
    dtl_g_matmul(g, a, b);
}
static void bad_dtypes(dtl_graph *g)
{
    dtl_val a = dtl_g_input(g, "a", F32, 1, (int64_t[]){3});
    dtl_val b = dtl_g_input(g, "b", F64, 1, (int64_t[]){3});
    dtl_g_binary(g, DTL_OP_ADD, a, b);
}
static void bad_broadcast(dtl_graph *g)
{
    dtl_val a = dtl_g_input(g, "a", F32, 2, (int64_t[]){2, 3});
    dtl_val b = dtl_g_input(g, "b", F32, 1, (int64_t[]){2});
    dtl_g_binary(g, DTL_OP_MUL, a, b);
}
static void bad_reshape(dtl_graph *g)
{
    dtl_val a = dtl_g_input(g, "a", F32, 2, (int64_t[]){2, 3});
    dtl_g_reshape(g, a, 1, (int64_t[]){5});
}
static void bad_perm(dtl_graph *g)
{
    dtl_val a = dtl_g_input(g, "a", F32, 2, (int64_t[]){2, 3});
    dtl_g_transpose(g, a, (uint32_t[]){1, 1});
}
static void bad_slice(dtl_graph *g)
{
    dtl_val a = dtl_g_input(g, "a", F32, 1, (int64_t[]){4});
    dtl_g_slice(g, a, (int64_t[]){5}, (int64_t[]){6}, (int64_t[]){1});
}
static void bad_exp(dtl_graph *g)
{
    dtl_g_unary(g, DTL_OP_EXP, dtl_g_input(g, "a", I32, 1, (int64_t[]){4}));
}
static void bad_where(dtl_graph *g)
{
    dtl_val a = dtl_g_input(g, "a", F32, 1, (int64_t[]){4});
    dtl_g_where(g, a, a, a);
}
static void bad_gather(dtl_graph *g)
{
    dtl_val a = dtl_g_input(g, "a", F32, 1, (int64_t[]){4});
    dtl_g_gather(g, a, a, 0);
}
static void bad_input_id(dtl_graph *g)
{
    dtl_g_unary(g, DTL_OP_NEG, 7);
}
static void bad_update(dtl_graph *g)
{
    dtl_val w = dtl_g_param(g, "w", F32, 1, (int64_t[]){4}, ZEROS);
    dtl_val v = dtl_g_input(g, "v", F32, 1, (int64_t[]){5});
    dtl_g_output(g, DTL_OUT_PARAM, NULL, v, w);
}
static void bad_loss(dtl_graph *g)
{
    dtl_val v = dtl_g_input(g, "v", F32, 1, (int64_t[]){5});
    dtl_g_output(g, DTL_OUT_LOSS, NULL, v, DTL_VAL_NONE);
}
static void bad_concat(dtl_graph *g)
{
    dtl_val a = dtl_g_input(g, "a", F32, 2, (int64_t[]){2, 3});
    dtl_val b = dtl_g_input(g, "b", F32, 2, (int64_t[]){3, 3});
    dtl_g_concat(g, (dtl_val[]){a, b}, 2, 1);
}
static void bad_scatter(dtl_graph *g)
{
    dtl_val u = dtl_g_input(g, "u", F32, 2, (int64_t[]){5, 4});
    dtl_val i = dtl_g_input(g, "i", I64, 1, (int64_t[]){6});
    dtl_g_scatter_add(g, u, i, 0, 2, (int64_t[]){10, 4});
}

static void test_misuse(void)
{
    CHECK(aborts_with(bad_matmul, "inner dimensions differ: f32[32, 784] @ f32[128, 10]"));
    CHECK(aborts_with(bad_matmul_batch, "batch dimensions do not broadcast"));
    CHECK(aborts_with(bad_dtypes, "add of different dtypes: f32[3] and f64[3]"));
    CHECK(aborts_with(bad_broadcast, "mul: shapes do not broadcast: f32[2, 3] and f32[2]"));
    CHECK(aborts_with(bad_reshape, "reshape changes the element count"));
    CHECK(aborts_with(bad_perm, "not a permutation"));
    CHECK(aborts_with(bad_slice, "not normalized"));
    CHECK(aborts_with(bad_exp, "exp of i32"));
    CHECK(aborts_with(bad_where, "the condition is f32[4], not bool"));
    CHECK(aborts_with(bad_gather, "indices are f32[4]"));
    CHECK(aborts_with(bad_input_id, "not a node"));
    CHECK(aborts_with(bad_update, "param \"w\" is f32[4], the new value %1 is f32[5]"));
    CHECK(aborts_with(bad_loss, "not a float scalar"));
    CHECK(aborts_with(bad_concat, "concat along 1"));
    CHECK(aborts_with(bad_scatter, "expected f32[6, 4]"));
}

/* ---- the verifier ------------------------------------------------------------------------ */

/* A small sound graph to corrupt. */
static void small_graph(dtl_graph *g)
{
    dtl_graph_init(g);
    dtl_val x = dtl_g_input(g, "x", F32, 2, (int64_t[]){4, 3});
    dtl_val w = dtl_g_param(g, "w", F32, 2, (int64_t[]){3, 2}, ZEROS);
    dtl_val h = dtl_g_matmul(g, x, w);
    dtl_val t = dtl_g_transpose(g, h, (uint32_t[]){1, 0});
    dtl_val l = dtl_g_reduce(g, DTL_OP_SUM, t, 3, false);
    dtl_g_output(g, DTL_OUT_LOSS, NULL, l, DTL_VAL_NONE);
    dtl_g_output(g, DTL_OUT_PARAM, NULL, w, w);
}

/* verify fails and its report contains want. */
static bool verify_says(const dtl_graph *g, const char *want)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    bool ok = dtl_graph_verify(g, f);
    fclose(f);
    bool good = !ok && strstr(buf, want);
    if (!good)
        fprintf(stderr, "  verify: expected \"%s\", got %s: %s\n", want, ok ? "ok" : "fail", buf);
    free(buf);
    return good;
}

static void test_verify(void)
{
    dtl_graph g;
    small_graph(&g);
    CHECK(dtl_graph_verify(&g, stderr));
    CHECK(dtl_graph_verify(&g, NULL));

    g.nodes[2].shape[1] = 3;   /* matmul's shape */
    CHECK(verify_says(&g, "%2 (matmul): is f32[4, 3], the rules give f32[4, 2]"));
    g.nodes[2].shape[1] = 2;
    g.nodes[2].dtype = F64;
    CHECK(verify_says(&g, "%2 (matmul)"));
    g.nodes[2].dtype = F32;
    dtl_val *in = (dtl_val *)g.nodes[2].in;
    in[1] = 3;   /* a forward reference */
    CHECK(verify_says(&g, "%2 (matmul): input 1 is %3, not an earlier node"));
    in[1] = 1;
    g.nodes[3].attr.perm[0] = 0;   /* perm [0, 0] */
    CHECK(verify_says(&g, "%3 (transpose): transpose: perm is not a permutation"));
    g.nodes[3].attr.perm[0] = 1;
    g.nodes[4].attr.red.axes = 8;   /* axis 3 of a rank-2 value */
    CHECK(verify_says(&g, "axes mask 0x8 out of range"));
    g.nodes[4].attr.red.axes = 3;
    g.nodes[4].nin = 2;
    CHECK(verify_says(&g, "%4 (sum): 2 inputs, expected 1"));
    g.nodes[4].nin = 1;
    g.nodes[4].op = DTL_OP_COUNT;
    CHECK(verify_says(&g, "%4: bad op"));
    g.nodes[4].op = DTL_OP_SUM;
    g.outs[1].target = 0;   /* the update's target is the input */
    CHECK(verify_says(&g, "target %0 is not a param"));
    g.outs[1].target = 1;
    g.outs[0].val = 2;   /* the loss is no scalar */
    CHECK(verify_says(&g, "not a float scalar"));
    g.outs[0].val = 4;
    g.outs[1].name = g.outs[0].name;
    CHECK(verify_says(&g, "two outputs named \"loss\""));
    g.outs[1].name = "w";
    g.nodes[0].name = NULL;
    CHECK(verify_says(&g, "%0 (input): input without a name"));
    g.nodes[0].name = "x";
    CHECK(dtl_graph_verify(&g, NULL));   /* repaired */
    dtl_graph_free(&g);

    /* Two param nodes with one name; slices running off the end; many problems capped. */
    dtl_graph_init(&g);
    dtl_g_param(&g, "p", F32, 1, (int64_t[]){2}, ZEROS);
    dtl_g_param(&g, "p", F32, 1, (int64_t[]){2}, ZEROS);
    CHECK(verify_says(&g, "%1 (param): the name \"p\" is already %0"));
    dtl_graph_free(&g);
    dtl_graph_init(&g);
    dtl_val v = dtl_g_input(&g, "v", F32, 1, (int64_t[]){10});
    dtl_val s = dtl_g_slice(&g, v, (int64_t[]){1}, (int64_t[]){10}, (int64_t[]){2});
    g.nodes[s].shape[0] = 6;   /* 1, 3, 5, 7, 9, 11: off the end */
    CHECK(verify_says(&g, "6 elements from 1 by 2 leave axis 0 of size 10"));
    g.nodes[s].shape[0] = 5;
    g.nodes[s].attr.slice.step[0] = 0;
    CHECK(verify_says(&g, "step 0"));
    dtl_graph_free(&g);
    dtl_graph_init(&g);
    v = dtl_g_input(&g, "v", F32, 1, (int64_t[]){10});
    for (int i = 0; i < 30; i++)
        dtl_g_unary(&g, DTL_OP_NEG, v);
    for (uint32_t i = 1; i <= 30; i++)
        g.nodes[i].shape[0] = 11;
    CHECK(verify_says(&g, "... and 10 more problems"));
    dtl_graph_free(&g);
}

/* ---- printing ---------------------------------------------------------------------------- */

static char *print_to_string(const dtl_graph *g, bool dot)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (dot)
        dtl_graph_dot(g, f);
    else
        dtl_graph_print(g, f);
    fclose(f);
    return buf;
}

static void test_print(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    dtl_val x = dtl_g_input(&g, "x", F32, 2, (int64_t[]){32, 784});
    dtl_val y = dtl_g_input(&g, "y", I64, 1, (int64_t[]){32});
    dtl_val w = dtl_g_param(&g, "fc1.w", F32, 2, (int64_t[]){784, 128},
                            (dtl_init){DTL_INIT_GLOROT_UNIFORM, 0, 0, NULL});
    dtl_val b = dtl_g_param(&g, "fc1.b", F32, 1, (int64_t[]){128},
                            (dtl_init){DTL_INIT_NORMAL, 0, 0.01, NULL});
    dtl_val h = dtl_g_binary(&g, DTL_OP_ADD, dtl_g_matmul(&g, x, w), b);
    dtl_val r = dtl_g_unary(&g, DTL_OP_RELU, h);
    g.nodes[r].name = "hidden";
    dtl_val m = dtl_g_reduce(&g, DTL_OP_REDUCE_MAX, r, 2, true);
    dtl_val am = dtl_g_argmax(&g, r, 1);
    g.role = DTL_ROLE_METRIC;
    dtl_val hits = dtl_g_reduce(&g, DTL_OP_SUM,
                                dtl_g_cast(&g, dtl_g_binary(&g, DTL_OP_EQ, am, y), I64), 1, false);
    g.role = DTL_ROLE_LOSS;
    dtl_val loss = dtl_g_reduce(&g, DTL_OP_SUM, m, 3, false);
    g.role = DTL_ROLE_BACKWARD;
    dtl_val sl = dtl_g_slice(&g, r, (int64_t[]){31, 0}, (int64_t[]){-1, 128},
                             (int64_t[]){-2, 64});
    dtl_val tr = dtl_g_transpose(&g, sl, (uint32_t[]){1, 0});
    dtl_val k = dtl_g_const_data(&g, F32, 1, (int64_t[]){3}, (float[]){0.5f, -1, 1e-3f});
    g.role = DTL_ROLE_UPDATE;
    dtl_val st = dtl_g_state(&g, "adam.m.fc1.b", F32, 1, (int64_t[]){128});
    dtl_val step = dtl_g_input(&g, "step", I64, 0, NULL);
    dtl_val rn = dtl_g_rng_uniform(&g, step, F32, 1, (int64_t[]){128}, 0x1234);
    dtl_val nb = dtl_g_binary(&g, DTL_OP_SUB, b, dtl_g_binary(&g, DTL_OP_MUL, st, rn));
    dtl_g_output(&g, DTL_OUT_LOSS, NULL, loss, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_VALUE, "hits", hits, DTL_VAL_NONE);
    dtl_g_output(&g, DTL_OUT_PARAM, NULL, nb, b);
    dtl_g_output(&g, DTL_OUT_STATE, NULL, rn, st);
    (void)tr, (void)k;
    CHECK(dtl_graph_verify(&g, stderr));
    char *text = print_to_string(&g, false);
    CHECK_STR(text,
              "%0 = input \"x\" : f32[32, 784]\n"
              "%1 = input \"y\" : i64[32]\n"
              "%2 = param \"fc1.w\" : f32[784, 128] init glorot_uniform\n"
              "%3 = param \"fc1.b\" : f32[128] init normal(0, 0.01)\n"
              "%4 = matmul(%0, %2) : f32[32, 128]\n"
              "%5 = add(%4, %3) : f32[32, 128]\n"
              "%6 = relu(%5) : f32[32, 128]  # \"hidden\"\n"
              "%7 = reduce_max(%6) : f32[32, 1] axes=[1] keepdims\n"
              "%8 = argmax(%6) : i64[32] axis=1\n"
              "%9 = eq(%8, %1) : bool[32]  # metric\n"
              "%10 = cast(%9) : i64[32]  # metric\n"
              "%11 = sum(%10) : i64[] axes=[0]  # metric\n"
              "%12 = sum(%7) : f32[] axes=[0, 1]  # loss\n"
              "%13 = slice(%6) : f32[16, 2] start=[31, 0] step=[-2, 64]  # backward\n"
              "%14 = transpose(%13) : f32[2, 16] perm=[1, 0]  # backward\n"
              "%15 = const [0.5, -1, 0.001] : f32[3]  # backward\n"
              "%16 = state \"adam.m.fc1.b\" : f32[128]  # update\n"
              "%17 = input \"step\" : i64[]  # update\n"
              "%18 = rng_uniform(%17) : f32[128] stream=0x0000000000001234  # update\n"
              "%19 = mul(%16, %18) : f32[128]  # update\n"
              "%20 = sub(%3, %19) : f32[128]  # update\n"
              "loss = %12\n"
              "value hits = %11\n"
              "update fc1.b = %20\n"
              "update adam.m.fc1.b = %18\n");
    free(text);

    /* DOT: produced, balanced, every node declared, quotes and backslashes escaped. */
    dtl_val odd = dtl_g_input(&g, "we\"ird\\name\n", F32, 0, NULL);
    dtl_g_output(&g, DTL_OUT_VALUE, "out \"q\"", odd, DTL_VAL_NONE);
    char *dot = print_to_string(&g, true);
    CHECK(strncmp(dot, "digraph dtl {\n", 14) == 0);
    CHECK(strstr(dot, "we\\\"ird\\\\name?") != NULL);
    CHECK(strstr(dot, "value out \\\"q\\\"") != NULL);
    CHECK(strstr(dot, "n2 [label=\"%2 param\\nfc1.w\\nf32[784, 128]\", shape=box") != NULL);
    CHECK(strstr(dot, "n2 -> n4 [label=\"1\"];") != NULL);
    CHECK(strstr(dot, "n20 -> n3 [style=dashed") != NULL);   /* the update edge */
    CHECK(strstr(dot, "#f6d1d1") != NULL);   /* backward colour used */
    int depth = 0, min_depth = 0, quotes_odd_lines = 0;
    for (const char *p = dot; *p; p++) {
        if (*p == '{')
            depth++;
        if (*p == '}')
            depth--;
        if (depth < min_depth)
            min_depth = depth;
    }
    /* Quotes balanced on every line (escaped ones don't count). */
    for (const char *line = dot; *line;) {
        int q = 0;
        const char *p = line;
        for (; *p && *p != '\n'; p++) {
            if (*p == '\\' && p[1])
                p++;
            else if (*p == '"')
                q++;
        }
        quotes_odd_lines += q % 2;
        line = *p ? p + 1 : p;
    }
    CHECK(depth == 0 && min_depth == 0);
    CHECK(quotes_odd_lines == 0);
    size_t len = strlen(dot);
    CHECK(len > 2 && strcmp(dot + len - 2, "}\n") == 0);
    free(dot);
    dtl_graph_free(&g);

    /* An empty graph prints nothing and still makes a valid DOT. */
    dtl_graph_init(&g);
    text = print_to_string(&g, false);
    CHECK_STR(text, "");
    free(text);
    dot = print_to_string(&g, true);
    CHECK(strstr(dot, "digraph dtl {") && strstr(dot, "}\n"));
    free(dot);
    dtl_graph_free(&g);
}

/* Many nodes: the arrays grow and earlier ids stay valid. */
static void test_growth(void)
{
    dtl_graph g;
    dtl_graph_init(&g);
    dtl_val v = dtl_g_input(&g, "v", F64, 1, (int64_t[]){3});
    for (int i = 0; i < 5000; i++)
        v = dtl_g_binary(&g, DTL_OP_ADD, v, dtl_g_scalar(&g, F64, i));
    CHECK(g.nnodes == 10001);
    CHECK(TYPE(&g, v, F64, 3));
    for (int i = 0; i < 40; i++) {
        char name[16];
        snprintf(name, sizeof name, "o%d", i);
        dtl_g_output(&g, DTL_OUT_VALUE, name, v, DTL_VAL_NONE);
    }
    CHECK(g.nouts == 40 && strcmp(g.outs[39].name, "o39") == 0);
    CHECK(dtl_graph_verify(&g, stderr));
    dtl_graph_free(&g);
}


/* Random corruption of every field a pass could get wrong (not nin and the pointers, which
 * the contract fixes): the verifier must say no without crashing, and the printers must
 * cope with whatever it accepts. Run under ASan/UBSan. */
static void test_corruption(void)
{
    uint64_t state = 0x9e3779b97f4a7c15ull;
    int accepted = 0;
    for (int iter = 0; iter < 3000; iter++) {
        dtl_graph g;
        small_graph(&g);
        dtl_val extra = dtl_g_slice(&g, 2, (int64_t[]){0, 1}, (int64_t[]){4, 2}, (int64_t[]){2, 1});
        dtl_g_concat(&g, (dtl_val[]){extra, extra}, 2, 0);
        dtl_g_gather(&g, 1, dtl_g_input(&g, "i", I32, 1, (int64_t[]){2}), 0);
        for (int k = 0; k < 1 + iter % 3; k++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t r = state >> 11;
            dtl_node *n = &g.nodes[r % g.nnodes];
            int64_t val = (int64_t)((r >> 8) % 12) - 2;
            switch ((r >> 4) % 10) {
            case 0: n->op = (dtl_op)((r >> 8) % (DTL_OP_COUNT + 2)); break;
            case 1: n->dtype = (dtl_dtype)((r >> 8) % (DTL_DTYPE_COUNT + 1)); break;
            case 2: n->rank = (uint32_t)((r >> 8) % 11); break;
            case 3: n->shape[(r >> 8) % DTL_MAX_RANK] = val; break;
            case 4: n->role = (dtl_role)((r >> 8) % 6); break;
            case 5: n->attr.axis = (uint32_t)((r >> 8) % 4); break;
            case 6: n->attr.perm[(r >> 8) % 3] = (uint32_t)((r >> 12) % 4); break;
            case 7:
                if (n->nin)
                    ((dtl_val *)n->in)[(r >> 8) % n->nin] = (dtl_val)((r >> 12) % (g.nnodes + 2));
                break;
            case 8: n->attr.slice.step[(r >> 8) % 2] = val; break;
            default: g.outs[(r >> 8) % g.nouts].val = (dtl_val)((r >> 12) % (g.nnodes + 1)); break;
            }
        }
        /* An op turned into const/param would carry a garbage data pointer: not a case. */
        for (uint32_t i = 0; i < g.nnodes; i++) {
            if ((g.nodes[i].op == DTL_OP_CONST && i != 0) || g.nodes[i].op == DTL_OP_PARAM)
                g.nodes[i].attr.cst.data = NULL, g.nodes[i].attr.init.kind = DTL_INIT_ZEROS;
            unsigned char kb;   /* a bool holding 3 is undefined behaviour, not a case either */
            memcpy(&kb, &g.nodes[i].attr.red.keepdims, 1);
            kb &= 1;
            memcpy(&g.nodes[i].attr.red.keepdims, &kb, 1);
        }
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        bool ok = dtl_graph_verify(&g, f);
        if (ok) {
            accepted++;
            dtl_graph_print(&g, f);
            dtl_graph_dot(&g, f);
        }
        fclose(f);
        CHECK(ok || len > 0);   /* a refusal always says why */
        free(buf);
        dtl_graph_free(&g);
    }
    CHECK(accepted > 0 && accepted < 3000);
}

int main(void)
{
    test_shapes();
    test_misuse();
    test_verify();
    test_print();
    test_growth();
    test_corruption();
    CHECK_DONE();
}
