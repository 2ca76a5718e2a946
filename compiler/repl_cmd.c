/* compiler/repl_cmd.c — the `:` commands of `dtlc repl`.
 *
 * One table: name, argument synopsis, one line of help, handler. A command's argument is the
 * rest of its line; an expression argument is checked in place (its diagnostics point into
 * the command line). Long computations (:train, :time) poll Ctrl-C between steps.
 */
#include "repl_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../runtime/safetensors.h"
#include "lower.h"

typedef void cmd_fn(repl *R, repl_origin *o, size_t off, size_t len);

typedef struct cmd {
    const char *name;
    const char *args;
    const char *help;
    cmd_fn *fn;
} cmd;

static cmd_fn cmd_help, cmd_quit, cmd_type, cmd_graph, cmd_load, cmd_reset, cmd_time,
    cmd_backend, cmd_train, cmd_eval, cmd_save, cmd_params;

static const cmd commands[] = {
    {":help", "[CMD]", "this list, or the line of command CMD", cmd_help},
    {":type", "EXPR", "the type (dtype and shape) of EXPR, without evaluating it", cmd_type},
    {":graph", "[EXPR] [> FILE.dot]", "the dataflow graph of EXPR (default: the train block's "
     "step), as text or as Graphviz DOT", cmd_graph},
    {":load", "FILE", "load the declarations of a .dtl file", cmd_load},
    {":reset", "", "forget everything: declarations, values, training", cmd_reset},
    {":time", "EXPR", "compile time of EXPR and its run time (median of repeated runs)",
     cmd_time},
    {":backend", "[ref|llvm]", "the backend that runs what follows", cmd_backend},
    {":train", "[N]", "N steps (default 1) of the newest train block, with the loss of each",
     cmd_train},
    {":eval", "", "the train block's evaluation on its test split", cmd_eval},
    {":save", "FILE", "save the trained weights (a checkpoint), or else the session's "
     "tensors, as safetensors", cmd_save},
    {":params", "", "the parameters: names, shapes, counts", cmd_params},
    {":quit", "", "leave (also :q, :exit, Ctrl-D)", cmd_quit},
};
enum { NCMDS = sizeof commands / sizeof commands[0] };

const char *const repl_command_names[] = {":help", ":type", ":graph", ":load", ":reset",
                                          ":time", ":backend", ":train", ":eval", ":save",
                                          ":params", ":quit", ":exit", NULL};

/* The argument without surrounding blanks: [*off, *off + *len). */
static void trim(const char *t, size_t *off, size_t *len)
{
    while (*len > 0 && (t[*off] == ' ' || t[*off] == '\t'))
        (*off)++, (*len)--;
    while (*len > 0 && (t[*off + *len - 1] == ' ' || t[*off + *len - 1] == '\t' ||
                        t[*off + *len - 1] == '\n' || t[*off + *len - 1] == '\r'))
        (*len)--;
}

static char *arg_str(repl_origin *o, size_t off, size_t len)
{
    return strndup(o->text + off, len);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *dur(char *buf, size_t len, double s)
{
    if (s >= 1)
        snprintf(buf, len, "%.3g s", s);
    else if (s >= 1e-3)
        snprintf(buf, len, "%.3g ms", s * 1e3);
    else
        snprintf(buf, len, "%.3g us", s * 1e6);
    return buf;
}

void repl_command(repl *R, repl_origin *o)
{
    size_t i = 0;
    while (i < o->len && (o->text[i] == ' ' || o->text[i] == '\t'))
        i++;
    size_t s = i;
    while (i < o->len && o->text[i] != ' ' && o->text[i] != '\t' && o->text[i] != '\n')
        i++;
    char name[32];
    snprintf(name, sizeof name, "%.*s", (int)(i - s < 31 ? i - s : 31), o->text + s);
    size_t off = i, len = o->len - i;
    trim(o->text, &off, &len);
    const cmd *c = NULL;
    if (strcmp(name, ":q") == 0 || strcmp(name, ":exit") == 0)
        c = &commands[NCMDS - 1];
    for (size_t k = 0; !c && k < NCMDS; k++)
        if (strcmp(commands[k].name, name) == 0)
            c = &commands[k];
    /* A prefix that names one command only: :par, :back. */
    size_t nl = strlen(name), hits = 0;
    for (size_t k = 0; !c && nl > 1 && k < NCMDS; k++)
        if (strncmp(commands[k].name, name, nl) == 0)
            hits++;
    for (size_t k = 0; !c && hits == 1 && k < NCMDS; k++)
        if (strncmp(commands[k].name, name, nl) == 0)
            c = &commands[k];
    if (!c) {
        const char *names[NCMDS];
        for (size_t k = 0; k < NCMDS; k++)
            names[k] = commands[k].name;
        const char *near = dtl_diag_suggest(name, names, NCMDS);
        if (hits > 1)
            repl_error(R, "'%s' could be several commands; :help lists them", name);
        else if (near)
            repl_error(R, "unknown command '%s'; did you mean '%s'?", name, near);
        else
            repl_error(R, "unknown command '%s'; :help lists the commands", name);
        return;
    }
    if (len && c->args[0] == '\0') {
        /* `:reset all`, `:quit now`: rather refuse than guess */
        repl_error(R, "%s takes no argument, found '%.*s'", c->name, (int)len, o->text + off);
        return;
    }
    c->fn(R, o, off, len);
    fflush(R->out);
}

/* ---- the commands ---------------------------------------------------------------------------- */

/* What a non-tensor is, for messages: "the int 3", "builtin relu", "model nn.Dense". */
static const char *what_is(repl_checked *c, const dtl_type *t)
{
    dtl_arena *a = &c->ctx.arena;
    if (!t)
        return "no value";
    const char *ty = dtl_type_print(a, t, c->m);
    if (!dtl_type_is_host(t))
        return ty;
    const char *v = dtl_value_print(a, t, c->m);
    return strcmp(v, ty) == 0 ? ty : dtl_arena_printf(a, "the %s %s", ty, v);
}

static void cmd_help(repl *R, repl_origin *o, size_t off, size_t len)
{
    /* :help CMD (with or without its ':', a prefix too): that command's line only */
    const char *want = len ? o->text + off : NULL;
    size_t wl = len;
    if (want && *want == ':')
        want++, wl--;
    bool any = false;
    for (size_t k = 0; want && k < NCMDS; k++)
        any |= wl > 0 && strncmp(commands[k].name + 1, want, wl) == 0;
    if (want && !any) {
        repl_error(R, "no command '%.*s'; :help lists them", (int)len, o->text + off);
        return;
    }
    if (!want)
        fputs("Type declarations (use, model, fn, dataset, train, let) as in a .dtl file, or "
              "an\nexpression to evaluate it. `let a = randn(3, 4)` (or `a = ...`) keeps a "
              "tensor.\nConstructors: zeros ones rand randn (sizes or a list), arange, eye.\n"
              "Commands:\n", R->out);
    for (size_t k = 0; k < NCMDS; k++) {
        if (want && strncmp(commands[k].name + 1, want, wl) != 0)
            continue;
        char lhs[48];
        snprintf(lhs, sizeof lhs, "%s %s", commands[k].name, commands[k].args);
        fprintf(R->out, "  %-26s", lhs);
        /* The help, wrapped at 80 columns under itself. */
        const char *h = commands[k].help;
        for (bool first = true; *h; first = false) {
            size_t n = strlen(h), cut = n;
            if (n > 51)
                for (cut = 51; cut > 0 && h[cut] != ' '; cut--)
                    ;
            if (cut == 0)
                cut = n;
            fprintf(R->out, "%*s%.*s\n", first ? 1 : 29, "", (int)cut, h);
            h += cut;
            while (*h == ' ')
                h++;
        }
    }
    if (!want)
        fputs("Tab completes names, members (fc1.) and commands; Ctrl-C cancels the input or "
              "a\ncomputation; Ctrl-D quits. More in docs/repl.md.\n", R->out);
}

static void cmd_quit(repl *R, repl_origin *o, size_t off, size_t len)
{
    (void)o, (void)off, (void)len;
    R->quit = true;
}

static bool need_arg(repl *R, size_t len, const char *what, const char *cmd)
{
    if (len)
        return true;
    repl_error(R, "%s needs %s", cmd, what);
    return false;
}

static void cmd_type(repl *R, repl_origin *o, size_t off, size_t len)
{
    if (!need_arg(R, len, "an expression: :type EXPR", ":type"))
        return;
    repl_checked c;
    if (repl_check_expr(R, o, off, len, &c)) {
        const dtl_expr *e = repl_expr_of(&c);
        dtl_arena *a = &c.ctx.arena;
        const dtl_type *t = e ? e->type : NULL;
        fputs(t ? dtl_type_print(a, t, c.m) : "?", R->out);
        if (t && t->kind == DTL_TYPE_FN && t->u.fn.fn && t->u.fn.fn->ret) {
            /* Its signature, with the instance's sizes: fn nn.Dense.forward(x: f32[B, 784]) */
            const dtl_fn *f = t->u.fn.fn;
            dtl_subst s;
            memset(&s, 0, sizeof s);
            if (t->u.fn.inst)
                dtl_check_inst_subst(a, t->u.fn.inst, &s);
            fputc('(', R->out);
            for (size_t i = 0; i < f->nparams; i++) {
                dtl_type *pt = f->params[i]->type;
                dtl_type *st = pt ? dtl_type_subst(a, pt, &s) : NULL;
                fprintf(R->out, "%s%s: %s", i ? ", " : "", f->params[i]->name,
                        st ? dtl_type_print(a, st, c.m) : pt ? dtl_type_print(a, pt, c.m) : "?");
            }
            dtl_type *rt = dtl_type_subst(a, f->ret, &s);
            fprintf(R->out, ") -> %s", dtl_type_print(a, rt ? rt : f->ret, c.m));
        }
        fputc('\n', R->out);
    }
    repl_checked_free(&c);
}

/* The train block's step graph, lowered from the session as it is now. */
static bool step_graph(repl *R, dtl_graph *g)
{
    const repl_entry *e = repl_train_entry(R);
    if (!e) {
        repl_error(R, "no train block yet, and no expression given: :graph EXPR");
        return false;
    }
    repl_checked c;
    bool ok = repl_check(R, NULL, 0, NULL, 0, &c);
    const dtl_train *t = NULL;
    for (size_t i = 0; ok && i < c.m->ntrains; i++)
        if (c.m->trains[i]->decl && c.m->trains[i]->decl->name.text
                ? strcmp(c.m->trains[i]->decl->name.text, e->name) == 0
                : e->name[0] == '\0')
            t = c.m->trains[i];
    if (!ok || !t) {
        repl_report(R, &c, NULL);
        repl_checked_free(&c);
        return false;
    }
    dtl_lower_opts lo = {.batch = 0, .compute = DTL_DTYPE_F32};
    ok = dtl_lower_graph(&c.ctx, t, DTL_LOWER_STEP, &lo, g);
    if (!ok)
        repl_report(R, &c, NULL);
    repl_checked_free(&c);
    return ok;
}

static void cmd_graph(repl *R, repl_origin *o, size_t off, size_t len)
{
    /* A trailing "> FILE.dot": DOT into that file. */
    char *file = NULL;
    const char *gt = NULL;
    for (size_t k = off; k < off + len; k++)
        if (o->text[k] == '>')
            gt = o->text + k;
    if (gt) {
        size_t fo = (size_t)(gt - o->text) + 1, fl = off + len - fo;
        trim(o->text, &fo, &fl);
        bool word = fl > 0 && !memchr(o->text + fo, ' ', fl);
        bool dotfile = word && fl > 3 && (strncmp(o->text + fo + fl - 4, ".dot", 4) == 0 ||
                                          strncmp(o->text + fo + fl - 3, ".gv", 3) == 0);
        if (dotfile) {
            file = arg_str(o, fo, fl);
            len = (size_t)(gt - o->text) - off;
            trim(o->text, &off, &len);
        }
    }
    dtl_graph g;
    bool ok;
    if (len) {
        repl_checked c;
        ok = repl_check_expr(R, o, off, len, &c);
        const dtl_expr *e = ok ? repl_expr_of(&c) : NULL;
        if (ok && (!e->type || e->type->kind != DTL_TYPE_TENSOR)) {
            /* A number is folded by the checker; a fn, a model or a module is no value. */
            repl_error(R, ":graph shows how a tensor is computed; this is %s",
                       what_is(&c, e->type));
            ok = false;
        } else if (ok) {
            ok = repl_lower(R, &c, repl_expr_of(&c), &g);
        } else if (gt && !file) {
            repl_note(R, "to write the graph into a file, end the command with > NAME.dot "
                      "(or .gv)");
        }
        repl_checked_free(&c);
    } else {
        ok = step_graph(R, &g);
    }
    if (ok) {
        if (file) {
            FILE *f = fopen(file, "w");
            if (!f) {
                repl_error(R, "cannot write '%s': %s", file, strerror(errno));
            } else {
                dtl_graph_dot(&g, f);
                if (fclose(f) != 0)
                    repl_error(R, "cannot write '%s': %s", file, strerror(errno));
                else
                    fprintf(R->out, "wrote %s (%" PRIu32 " node%s)\n", file, g.nnodes,
                            g.nnodes == 1 ? "" : "s");
            }
        } else {
            dtl_graph_print(&g, R->out);
        }
        dtl_graph_free(&g);
    }
    free(file);
}

static void cmd_load(repl *R, repl_origin *o, size_t off, size_t len)
{
    if (!need_arg(R, len, "a file: :load FILE", ":load"))
        return;
    char *path = arg_str(o, off, len);
    if (path)
        repl_load(R, path);
    free(path);
}

static void cmd_reset(repl *R, repl_origin *o, size_t off, size_t len)
{
    (void)o, (void)off, (void)len;
    repl_reset(R);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void cmd_time(repl *R, repl_origin *o, size_t off, size_t len)
{
    if (!need_arg(R, len, "an expression: :time EXPR", ":time"))
        return;
    repl_checked c;
    dtl_graph g;
    dtl_plan *p = NULL;
    bool have_g = false;
    if (!repl_check_expr(R, o, off, len, &c))
        goto out;
    dtl_expr *e = repl_expr_of(&c);
    if (!e->type || e->type->kind != DTL_TYPE_TENSOR) {
        repl_error(R, ":time measures tensor expressions; this is %s", what_is(&c, e->type));
        goto out;
    }
    double t0 = now();
    if (!(have_g = repl_lower(R, &c, e, &g)))
        goto out;
    double t1 = now();
    if (!(p = repl_plan(R, &g)))
        goto out;
    double t2 = now();
    enum { MAX_RUNS = 1000 };
    double *runs = malloc(MAX_RUNS * sizeof *runs);
    size_t n = 0;
    double start = now();
    while (runs && n < MAX_RUNS && (n < 3 || now() - start < 0.5)) {
        double a = now();
        dtl_tensor t;
        bool has;
        if (!repl_run(R, p, &g, &t, &has))
            break;
        runs[n++] = now() - a;
        if (repl_interrupted()) {
            if (R->interactive)
                fputc('\n', R->out);   /* after the terminal's "^C" */
            repl_note(R, "interrupted after %zu run%s", n, n == 1 ? "" : "s");
            break;
        }
    }
    if (n) {
        qsort(runs, n, sizeof *runs, cmp_double);
        char a[32], b[32], d[32], r[32];
        fprintf(R->out, "compile %s (lower %s, plan %s)  run %s (median of %zu)  backend %s\n",
                dur(a, sizeof a, t2 - t0), dur(b, sizeof b, t1 - t0),
                dur(d, sizeof d, t2 - t1), dur(r, sizeof r, runs[n / 2]), n, R->be_name);
    }
    free(runs);
out:
    dtl_plan_free(p);
    if (have_g)
        dtl_graph_free(&g);
    repl_checked_free(&c);
}

static void cmd_backend(repl *R, repl_origin *o, size_t off, size_t len)
{
    if (!len) {
        fprintf(R->out, "%s\n", R->be_name);
        return;
    }
    char *name = arg_str(o, off, len);
    if (name)
        repl_set_backend(R, name);
    free(name);
}

static bool parse_count(const char *s, size_t n, int64_t *v)
{
    if (n == 0 || n > 9)
        return false;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        x = x * 10 + (s[i] - '0');
    }
    *v = x;
    return x > 0;
}

static void cmd_train(repl *R, repl_origin *o, size_t off, size_t len)
{
    int64_t steps = 1;
    if (len && !parse_count(o->text + off, len, &steps)) {
        repl_error(R, ":train wants a number of steps from 1 to 999999999, found '%.*s'",
                   (int)len, o->text + off);
        return;
    }
    repl_trainer *T = repl_trainer_get(R);
    if (!T)
        return;
    repl_interrupted();
    for (int64_t k = 0; k < steps; k++) {
        double loss;
        dtl_err err = {DTL_ERR_NONE, ""};
        int64_t epoch = dtl_trainer_epoch(T->tr);
        if (!dtl_trainer_step(T->tr, &loss, &err)) {
            repl_error(R, "%s", err.msg);
            return;
        }
        if (T->nlosses == T->caplosses) {
            size_t cap = T->caplosses ? T->caplosses * 2 : 64;
            double *nv = realloc(T->losses, cap * sizeof *nv);
            if (nv) {
                T->losses = nv;
                T->caplosses = cap;
            }
        }
        if (T->nlosses < T->caplosses)
            T->losses[T->nlosses++] = loss;
        char spark[REPL_SPARK_WIDTH * 4 + 1];
        repl_sparkline(spark, sizeof spark, T->losses, T->nlosses, REPL_SPARK_WIDTH);
        fprintf(R->out, "step %" PRId64 "  loss %.4f  %s", dtl_trainer_step_count(T->tr), loss,
                spark);
        if (dtl_trainer_epoch(T->tr) != epoch)
            fprintf(R->out, "  (epoch %" PRId64 " done)", epoch + 1);
        fputc('\n', R->out);
        fflush(R->out);
        if (repl_interrupted()) {
            if (R->interactive)
                fputc('\n', R->out);   /* after the terminal's "^C" */
            repl_note(R, "interrupted after step %" PRId64, dtl_trainer_step_count(T->tr));
            return;
        }
    }
}

static void cmd_eval(repl *R, repl_origin *o, size_t off, size_t len)
{
    (void)o, (void)off, (void)len;
    repl_trainer *T = repl_trainer_get(R);
    if (!T)
        return;
    double loss, acc;
    dtl_err err = {DTL_ERR_NONE, ""};
    if (!dtl_trainer_eval(T->tr, &loss, &acc, &err)) {
        repl_error(R, "%s", err.msg);
        return;
    }
    fprintf(R->out, "test_loss %.4f  test_accuracy %.4f  (after %" PRId64 " steps)\n", loss, acc,
            dtl_trainer_step_count(T->tr));
}

static void cmd_save(repl *R, repl_origin *o, size_t off, size_t len)
{
    if (!need_arg(R, len, "a file: :save FILE.safetensors", ":save"))
        return;
    char *path = arg_str(o, off, len);
    if (!path)
        return;
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        repl_error(R, "'%s' is a directory: :save wants a file name (%s/NAME.safetensors)",
                   path, path);
        free(path);
        return;
    }
    dtl_err err = {DTL_ERR_NONE, ""};
    if (R->trainer.tr) {
        if (dtl_trainer_save(R->trainer.tr, path, &err))
            fprintf(R->out, "saved %s (a checkpoint at step %" PRId64 ")\n", path,
                    dtl_trainer_step_count(R->trainer.tr));
        else
            repl_error(R, "%s", err.msg);
        free(path);
        return;
    }
    /* The session's tensors and its instances' params. */
    if (!dtl_store_sync(R->store, DTL_SYNC_TO_HOST, &err)) {   /* (a cuda mirror) */
        repl_error(R, "%s", err.msg);
        free(path);
        return;
    }
    size_t np = dtl_store_count(R->store), n = R->nvalues + np;
    dtl_st_tensor *ts = calloc(n ? n : 1, sizeof *ts);
    if (!ts) {
        repl_error(R, "out of memory");
        free(path);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < np; i++) {
        const dtl_store_entry *e = dtl_store_at(R->store, i);
        ts[k] = (dtl_st_tensor){e->name, dtl_st_dtype_from(e->t.dtype), e->t.rank, {0},
                                e->t.data, (size_t)dtl_tensor_numel(&e->t) *
                                               dtl_dtype_size(e->t.dtype)};
        memcpy(ts[k].shape, e->t.shape, e->t.rank * sizeof *e->t.shape);
        k++;
    }
    for (size_t i = 0; i < R->nvalues; i++) {
        const repl_value *v = &R->values[i];
        ts[k] = (dtl_st_tensor){v->name, dtl_st_dtype_from(v->dtype), v->rank, {0}, v->data,
                                v->nbytes};
        memcpy(ts[k].shape, v->shape, v->rank * sizeof *v->shape);
        k++;
    }
    const dtl_st_meta meta[] = {{"format", "dtl.repl.v1"}};
    if (n == 0)
        repl_error(R, "nothing to save: no tensors in this session and no training yet");
    else if (dtl_st_write(path, ts, n, meta, 1, &err))
        fprintf(R->out, "saved %s (%zu tensors)\n", path, n);
    else
        repl_error(R, "%s", err.msg);
    free(ts);
    free(path);
}

/* One line of :params. */
static int64_t param_line(repl *R, const char *name, dtl_dtype dt, uint32_t rank,
                          const int64_t *shape, int w)
{
    char ty[160];
    int64_t n = 1;
    for (uint32_t i = 0; i < rank; i++)
        n *= shape[i];
    fprintf(R->out, "  %-*s  %-16s %10" PRId64 "\n", w, name,
            repl_type_str(ty, sizeof ty, dt, rank, shape), n);
    return n;
}

static void cmd_params(repl *R, repl_origin *o, size_t off, size_t len)
{
    (void)o, (void)off, (void)len;
    bool any = false;
    const repl_entry *te = repl_train_entry(R);
    if (te) {
        dtl_graph g;
        const dtl_graph *sg = NULL;
        bool have = false;
        bool current = R->trainer.tr && !R->trainer.stale &&
                       strcmp(R->trainer.name, te->name) == 0;
        if (current)
            sg = dtl_trainer_step_graph(R->trainer.tr);
        else if ((have = step_graph(R, &g)))
            sg = &g;
        if (sg) {
            int w = 5;
            for (uint32_t i = 0; i < sg->nnodes; i++)
                if (sg->nodes[i].op == DTL_OP_PARAM && (int)strlen(sg->nodes[i].name) > w)
                    w = (int)strlen(sg->nodes[i].name);
            fprintf(R->out, "%s%s\n", te->what,
                    current ? "" : R->trainer.tr ? " (changed: :train starts it again)"
                                                 : " (not trained yet)");
            int64_t total = 0;
            for (uint32_t i = 0; i < sg->nnodes; i++) {
                const dtl_node *nd = &sg->nodes[i];
                if (nd->op == DTL_OP_PARAM)
                    total += param_line(R, nd->name, nd->dtype, nd->rank, nd->shape, w);
            }
            fprintf(R->out, "  %-*s  %-16s %10" PRId64 "\n", w, "total", "", total);
            any = true;
        }
        if (have)
            dtl_graph_free(&g);
    }
    size_t np = dtl_store_count(R->store);
    if (np) {
        int w = 5;
        for (size_t i = 0; i < np; i++)
            if ((int)strlen(dtl_store_at(R->store, i)->name) > w)
                w = (int)strlen(dtl_store_at(R->store, i)->name);
        fputs("layers made at the prompt\n", R->out);
        int64_t total = 0;
        for (size_t i = 0; i < np; i++) {
            const dtl_store_entry *e = dtl_store_at(R->store, i);
            total += param_line(R, e->name, e->t.dtype, e->t.rank, e->t.shape, w);
        }
        fprintf(R->out, "  %-*s  %-16s %10" PRId64 "\n", w, "total", "", total);
        any = true;
    }
    if (!any)
        fputs("no parameters yet (no train block, no layer made at the prompt)\n", R->out);
}
