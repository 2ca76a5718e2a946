/* compiler/repl.c — `dtlc repl`: the loop.
 *
 * Lines are read (repl_line.c) and joined into one input until it is complete: the text so
 * far is parsed on its own, and an input whose first syntax error is at its very end (an
 * open bracket or brace, a line ending in an operator or `=`, a fn header without its body)
 * goes on with the prompt "...> ". A blank line ends an incomplete input unless a bracket is
 * still open (then it is reported). When the input is not a terminal, the newline rule of
 * the language applies fully: a line that begins with `{`, `.`, `->`, `=` or a binary
 * operator other than `-` continues the statement before it, as in a file. A line that
 * starts with `:` is a command (compiler/repl_cmd.c); anything else goes to the session
 * (compiler/repl_eval.c), an expression or assignment followed by more after a top-level
 * ';' as several inputs in turn. Ctrl-C at the prompt drops the input; Ctrl-D (end of
 * input) ends the input being continued at "...>", else the session.
 */
#include "repl_internal.h"
#include "repl_ctors.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void dtl_repl_opts_default(dtl_repl_opts *o)
{
    memset(o, 0, sizeof *o);
    o->interactive = -1;
}

static void say(repl *R, const char *level, const char *color, const char *fmt, va_list ap)
{
    fflush(R->out);
    if (R->color)
        fprintf(R->err, "\033[1m%s%s:\033[0m\033[1m ", color, level);
    else
        fprintf(R->err, "%s: ", level);
    vfprintf(R->err, fmt, ap);
    fputs(R->color ? "\033[0m\n" : "\n", R->err);
    fflush(R->err);
}

void repl_error(repl *R, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(R, "error", "\033[1;31m", fmt, ap);
    va_end(ap);
    R->nerrors++;
}

void repl_note(repl *R, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(R, "note", "\033[1;36m", fmt, ap);
    va_end(ap);
}

/* ---- completion ------------------------------------------------------------------------------ */

typedef struct cands {
    char **v;
    size_t n, cap;
    const char *prefix;
    size_t plen;
} cands;

static void cand_add(cands *c, const char *s)
{
    if (!s || strncmp(s, c->prefix, c->plen) != 0 || strncmp(s, "__repl", 6) == 0)
        return;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->v[i], s) == 0)
            return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 32;
        char **nv = realloc(c->v, cap * sizeof *nv);
        if (!nv)
            return;
        c->v = nv;
        c->cap = cap;
    }
    char *d = strdup(s);
    if (d)
        c->v[c->n++] = d;
}

static void complete_files(cands *c, const char *word)
{
    const char *slash = strrchr(word, '/');
    char dir[4096];
    if (slash)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - word + 1), word);
    else
        dir[0] = '\0';
    const char *base = slash ? slash + 1 : word;
    DIR *d = opendir(dir[0] ? dir : ".");
    if (!d)
        return;
    c->prefix = word;
    c->plen = strlen(word);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.' && base[0] != '.')
            continue;
        char full[4352];
        snprintf(full, sizeof full, "%s%s", dir, e->d_name);
        char probe[4352];
        snprintf(probe, sizeof probe, "%s", full[0] ? full : ".");
        DIR *sub = opendir(probe);
        if (sub) {
            closedir(sub);
            strncat(full, "/", sizeof full - strlen(full) - 1);
        }
        cand_add(c, full);
    }
    closedir(d);
}

static void add_decl_names(cands *c, const dtl_module *m)
{
    for (size_t i = 0; m && m->file && i < m->file->ndecls; i++) {
        const dtl_decl *d = m->file->decls[i];
        if (d->kind != DTL_DECL_USE && d->kind != DTL_DECL_TRAIN)
            cand_add(c, d->name.text);
    }
}

static char **complete(void *user, const char *line, size_t cursor, size_t *start, size_t *n)
{
    repl *R = user;
    cands c = {NULL, 0, 0, "", 0};
    *n = 0;
    size_t i = 0;
    while (i < cursor && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i < cursor && line[i] == ':') {
        const char *sp = memchr(line + i, ' ', cursor - i);
        if (!sp) {   /* a command's name */
            *start = i;
            c.prefix = line + i;
            c.plen = cursor - i;
            for (size_t k = 0; repl_command_names[k]; k++)
                cand_add(&c, repl_command_names[k]);
            *n = c.n;
            return c.v;
        }
        if ((strncmp(line + i, ":load ", 6) == 0 || strncmp(line + i, ":save ", 6) == 0)) {
            size_t ws = cursor;
            while (ws > 0 && line[ws - 1] != ' ')
                ws--;
            *start = ws;
            char word[4096];
            snprintf(word, sizeof word, "%.*s", (int)(cursor - ws), line + ws);
            complete_files(&c, word);
            *n = c.n;
            return c.v;
        }
    }
    /* The word before the cursor: a name, or a chain a.b.c. */
    size_t ws = cursor;
    while (ws > 0 && (line[ws - 1] == '_' || line[ws - 1] == '.' ||
                      (line[ws - 1] >= '0' && line[ws - 1] <= '9') ||
                      (line[ws - 1] >= 'a' && line[ws - 1] <= 'z') ||
                      (line[ws - 1] >= 'A' && line[ws - 1] <= 'Z')))
        ws--;
    const char *dot = NULL;
    for (size_t k = ws; k < cursor; k++)
        if (line[k] == '.')
            dot = line + k;
    if (dot) {
        /* Members of what the chain before the last '.' is. */
        size_t bs = ws, be = (size_t)(dot - line);
        *start = be + 1;
        c.prefix = dot + 1;
        c.plen = cursor - *start;
        if (be == bs)
            return NULL;
        repl_origin o = {(char *)"<repl>", (char *)line + bs, be - bs, 1, NULL, 0, NULL};
        repl_piece p = {"let __repl_expr = ", &o, 0, be - bs};
        repl_checked ck;
        if (repl_check(R, &p, 1, NULL, 0, &ck)) {
            const dtl_expr *e = repl_expr_of(&ck);
            const dtl_type *t = e ? e->type : NULL;
            if (t && t->kind == DTL_TYPE_MODULE) {
                add_decl_names(&c, t->u.module);
            } else if (t && t->kind == DTL_TYPE_INSTANCE) {
                const dtl_model *m = t->u.m.model;
                for (size_t k = 0; k < m->nparams; k++)
                    cand_add(&c, m->params[k]->name);
                for (size_t k = 0; k < m->nmembers; k++)
                    cand_add(&c, m->members[k]->name);
                for (size_t k = 0; k < m->nfns; k++)
                    cand_add(&c, m->fns[k]->name);
                for (size_t k = 0; k < m->nctor; k++)
                    cand_add(&c, m->ctor[k]->name);
            } else if (t && t->kind == DTL_TYPE_DATASET) {
                cand_add(&c, "train");
                cand_add(&c, "test");
            }
        }
        repl_checked_free(&ck);
        *n = c.n;
        return c.v;
    }
    *start = ws;
    c.prefix = line + ws;
    c.plen = cursor - ws;
    size_t nn;
    const char **names = repl_names(R, &nn);
    for (size_t k = 0; names && k < nn; k++)
        cand_add(&c, names[k]);
    free(names);
    size_t nb;
    const dtl_builtin *b = dtl_builtin_table(&nb);
    for (size_t k = 0; k < nb; k++)
        if (b[k].kind == DTL_BUILTIN_OP || b[k].kind == DTL_BUILTIN_LOSS ||
            b[k].kind == DTL_BUILTIN_CONST)
            cand_add(&c, b[k].name);
    b = dtl_ctor_table(&nb);
    for (size_t k = 0; k < nb; k++)
        cand_add(&c, b[k].name);
    static const char *const words[] = {"use", "model", "fn", "param", "let", "return",
                                        "dataset", "train", "true", "false", "not", "and",
                                        "or", "f32", "f64", "i32", "i64", "bool", NULL};
    for (size_t k = 0; words[k]; k++)
        cand_add(&c, words[k]);
    *n = c.n;
    return c.v;
}

/* ---- the loop ---------------------------------------------------------------------------------- */

typedef struct text {
    char *s;
    size_t n, cap;
} text;

static bool text_add(text *t, const char *s, size_t n)
{
    if (t->n + n + 2 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (t->n + n + 2 > cap)
            cap *= 2;
        char *ns = realloc(t->s, cap);
        if (!ns)
            return false;
        t->s = ns;
        t->cap = cap;
    }
    memcpy(t->s + t->n, s, n);
    t->n += n;
    t->s[t->n] = '\0';
    return true;
}

/* Only blanks and comments? */
static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '#') {
            while (i < n && s[i] != '\n')
                i++;
        } else if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') {
            return false;
        }
    }
    return true;
}

/* Is a bracket of s still open (strings and comments skipped)? */
static bool bracket_open(const char *s, size_t n)
{
    long depth = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '#') {
            while (i < n && s[i] != '\n')
                i++;
        } else if (ch == '"') {
            for (i++; i < n && s[i] != '"' && s[i] != '\n'; i++)
                if (s[i] == '\\')
                    i++;
        } else if (ch == '(' || ch == '[' || ch == '{') {
            depth++;
        } else if (ch == ')' || ch == ']' || ch == '}') {
            depth--;
        }
    }
    return depth > 0;
}

/* Does a line that begins this way continue the statement before it (the newline rule)? */
static bool continues(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '{' || *s == '=' || *s == '+' || *s == '*' || *s == '/' || *s == '@' ||
        *s == '<' || *s == '>')
        return true;
    if (s[0] == '!' && s[1] == '=')
        return true;
    if (s[0] == '-' && s[1] == '>')
        return true;
    if (s[0] == '.' && !(s[1] >= '0' && s[1] <= '9'))
        return true;
    if ((strncmp(s, "and", 3) == 0 || strncmp(s, "or", 2) == 0)) {
        const char *e = s + (s[0] == 'a' ? 3 : 2);
        return !((*e >= 'a' && *e <= 'z') || (*e >= 'A' && *e <= 'Z') ||
                 (*e >= '0' && *e <= '9') || *e == '_');
    }
    return false;
}

/* Lines read ahead (not interactive) and not used yet. */
typedef struct queue {
    char **v;
    size_t n, cap;
} queue;

static void queue_push_front(queue *q, char *line)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 8;
        char **nv = realloc(q->v, cap * sizeof *nv);
        if (!nv) {
            free(line);
            return;
        }
        q->v = nv;
        q->cap = cap;
    }
    memmove(q->v + 1, q->v, q->n * sizeof *q->v);
    q->v[0] = line;
    q->n++;
}

static repl_read next_line(repl *R, queue *q, const char *prompt, char **line)
{
    if (q->n) {
        *line = q->v[0];
        memmove(q->v, q->v + 1, --q->n * sizeof *q->v);
        return REPL_READ_LINE;
    }
    return repl_line_read(R->line, prompt, line);
}

/* Not interactive: the lines that follow continue this input when the first one that is not
 * blank begins with a continuing token; they are appended to t (true), or put back. */
static bool read_ahead(repl *R, queue *q, text *t)
{
    char *held[64];
    size_t nh = 0;
    bool go = false;
    for (;;) {
        char *l;
        repl_read st = nh == 64 ? REPL_READ_EOF : next_line(R, q, NULL, &l);
        if (st == REPL_READ_TOO_LONG) {
            repl_error(R, "an input line of more than 16 MiB: the rest of the input is ignored");
            R->quit = true;
        }
        if (st != REPL_READ_LINE)
            break;
        held[nh++] = l;
        if (!blank(l, strlen(l))) {
            go = continues(l);
            break;
        }
    }
    if (go) {
        for (size_t i = 0; i < nh; i++) {
            text_add(t, held[i], strlen(held[i]));
            text_add(t, "\n", 1);
            R->lines++;
            free(held[i]);
        }
        return true;
    }
    while (nh > 0)
        queue_push_front(q, held[--nh]);
    return false;
}

/* One statement of an input: [from, end) of s, as an origin whose text is s[0, end) with
 * [0, from) blanked (newlines kept), so that diagnostics keep their lines and columns. */
static bool submit_part(repl *R, const char *s, size_t n, size_t from, size_t end,
                        uint32_t first)
{
    if (blank(s + from, end - from))
        return true;
    char *t = malloc(end + 1);
    if (!t) {
        repl_error(R, "out of memory");
        return false;
    }
    for (size_t i = 0; i < from; i++)
        t[i] = s[i] == '\n' ? '\n' : ' ';
    memcpy(t + from, s + from, end - from);
    t[end] = '\0';
    repl_origin *o = repl_origin_new(R, "<repl>", t, end, first);
    free(t);
    if (!o)
        return false;
    if (from > 0 || end < n) {   /* diagnostics show the whole input */
        o->shown = strndup(s, n);
        o->shown_len = o->shown ? n : 0;
    }
    uint64_t before = R->nerrors;
    repl_input(R, o, repl_classify(o->text, o->len, NULL));
    return R->nerrors == before;
}

/* Runs a complete input. An expression or assignment followed by others after ';'
 * (`a = 1; b = 2`, `x; y`) is several inputs, run in turn until one fails; an input that
 * begins with a declaration is one module, as in a file. */
static void submit(repl *R, const char *s, size_t n, uint32_t first)
{
    size_t from = 0;
    if (repl_classify(s, n, NULL) != REPL_DECLS) {
        long depth = 0;
        for (size_t i = 0; i < n; i++) {
            char ch = s[i];
            if (ch == '#') {
                while (i + 1 < n && s[i + 1] != '\n')
                    i++;
            } else if (ch == '"') {
                for (i++; i < n && s[i] != '"' && s[i] != '\n'; i++)
                    if (s[i] == '\\' && i + 1 < n)
                        i++;
            } else if (ch == '(' || ch == '[' || ch == '{') {
                depth++;
            } else if (ch == ')' || ch == ']' || ch == '}') {
                depth--;
            } else if (ch == ';' && depth <= 0) {
                if (!submit_part(R, s, n, from, i, first))
                    return;
                from = i + 1;
            }
        }
    }
    submit_part(R, s, n, from, n, first);
}

static void run_loop(repl *R)
{
    text t = {NULL, 0, 0};
    queue q = {NULL, 0, 0};
    uint32_t first = 0;
    /* Colors between \1 markers: libedit counts no columns for them (repl_line.c). */
    const char *ps1 = R->color ? "\1\033[1;32m\1dtl>\1\033[0m\1 " : "dtl> ";
    const char *ps2 = R->color ? "\1\033[1;32m\1...>\1\033[0m\1 " : "...> ";
    while (!R->quit) {
        char *line = NULL;
        repl_read st = next_line(R, &q, t.n ? ps2 : ps1, &line);
        if (st == REPL_READ_CANCEL) {
            t.n = 0;
            continue;
        }
        if (st == REPL_READ_TOO_LONG) {
            repl_error(R, "an input line of more than 16 MiB: the rest of the input is ignored");
            break;
        }
        if (st == REPL_READ_EOF) {
            /* The end of a script, or Ctrl-D at the prompt: an unfinished input is taken
             * as it is (to see its error). At "...>" Ctrl-D only ends that input: the
             * session goes on (a second Ctrl-D, at "dtl>", quits). */
            bool pending = t.n && !blank(t.s, t.n);
            if (pending) {
                if (R->interactive) {
                    char *h = strndup(t.s, t.s[t.n - 1] == '\n' ? t.n - 1 : t.n);
                    repl_line_remember(R->line, h);
                    free(h);
                }
                submit(R, t.s, t.n, first);
                fflush(R->out);
                repl_interrupted();
            }
            t.n = 0;
            if (pending && R->interactive)
                continue;
            break;
        }
        if (!t.n)
            first = R->lines + 1;
        R->lines++;
        for (const char *nl = strchr(line, '\n'); nl; nl = strchr(nl + 1, '\n'))
            R->lines++;   /* a multi-line input recalled from the history */
        bool line_blank = blank(line, strlen(line));
        if (!text_add(&t, line, strlen(line)) || !text_add(&t, "\n", 1)) {
            free(line);
            repl_error(R, "out of memory");
            t.n = 0;
            continue;
        }
        free(line);
        if (blank(t.s, t.n)) {
            t.n = 0;
            continue;
        }
        size_t s = 0;
        while (s < t.n && (t.s[s] == ' ' || t.s[s] == '\t'))
            s++;
        if (t.s[s] == ':') {
            if (R->interactive) {
                t.s[t.n - 1] = '\0';   /* without its newline */
                repl_line_remember(R->line, t.s);
                t.s[t.n - 1] = '\n';
            }
            repl_origin *o = repl_origin_new(R, "<repl>", t.s, t.n, first);
            t.n = 0;
            if (o)
                repl_command(R, o);
            repl_interrupted();   /* a Ctrl-C the command did not look at is spent */
            continue;
        }
        repl_kind kind = repl_classify(t.s, t.n, NULL);
        bool done;
        for (;;) {
            done = repl_complete(R, t.s, t.n, kind) ||
                   (line_blank && !bracket_open(t.s, t.n));
            if (!done || R->interactive || !read_ahead(R, &q, &t))
                break;
        }
        if (!done)
            continue;
        if (R->interactive) {
            char *h = strndup(t.s, t.n && t.s[t.n - 1] == '\n' ? t.n - 1 : t.n);
            repl_line_remember(R->line, h);
            free(h);
        }
        submit(R, t.s, t.n, first);
        t.n = 0;
        fflush(R->out);
        repl_interrupted();   /* a Ctrl-C during the evaluation is spent */
    }
    for (size_t i = 0; i < q.n; i++)
        free(q.v[i]);
    free(q.v);
    free(t.s);
}

int dtl_repl_run(const dtl_repl_opts *o)
{
    repl R;
    memset(&R, 0, sizeof R);
    R.o = o;
    R.in = o->in ? o->in : stdin;
    R.out = o->out ? o->out : stdout;
    R.err = o->err ? o->err : stderr;
    R.interactive = o->interactive < 0 ? isatty(fileno(R.in)) != 0 : o->interactive != 0;
    R.color = o->color;
    R.store = dtl_store_new(o->seed_set ? o->seed : 0);
    if (!R.store) {
        fprintf(R.err, "dtlc: error: out of memory\n");
        return 2;
    }
    if (!repl_set_backend(&R, o->backend ? o->backend : repl_default_backend())) {
        dtl_store_free(R.store);
        return 2;
    }
    char *hist = R.interactive ? repl_history_path() : NULL;
    R.line = repl_line_new(R.in, R.out, R.interactive, hist, complete, &R);
    free(hist);
    if (!R.line) {
        dtl_store_free(R.store);
        fprintf(R.err, "dtlc: error: out of memory\n");
        return 2;
    }
    if (R.interactive) {
        repl_sigint_install();
        fprintf(R.out, "dtl %s  (backend %s)  :help for help, Ctrl-D to quit\n",
#ifdef DTL_VERSION
                DTL_VERSION,
#else
                "",
#endif
                R.be_name);
    }
    for (size_t i = 0; i < o->nfiles && !R.quit; i++)
        repl_load(&R, o->files[i]);
    run_loop(&R);
    if (R.interactive)
        repl_sigint_restore();
    repl_reset(&R);
    repl_line_free(R.line);
    dtl_store_free(R.store);
    free(R.entries);
    free(R.values);
    for (size_t i = 0; i < R.ndirs; i++)
        free(R.dirs[i]);
    free(R.dirs);
    fflush(R.out);
    return !R.interactive && R.nerrors ? 1 : 0;
}
