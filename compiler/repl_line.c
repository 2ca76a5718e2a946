/* compiler/repl_line.c — reading the lines of `dtlc repl`.
 *
 * At a terminal, with libedit: emacs-style editing, the prompt, history (kept in a file and
 * saved after every input, so a killed session loses nothing), Tab completion through the
 * session's callback (the common prefix of the candidates is inserted; a second Tab lists
 * them; at the start of a line Tab indents, so a pasted file's tabs stay indentation). Without libedit, or when the input is not a terminal, lines are read with stdio:
 * prompts are still shown at a terminal, nothing is edited or remembered.
 *
 * Ctrl-C is a SIGINT whose handler counts it: the one mutable process-wide variable here,
 * because a signal handler can reach nothing else (a sig_atomic_t, only counted up there,
 * read and cleared by repl_interrupted). The handler is installed without SA_RESTART, so a
 * read waiting at the prompt returns EINTR: the line being typed is dropped. During a
 * computation the count is polled between steps (compiler/repl_cmd.c, :train and :time) and
 * after an evaluation, whose result is then dropped. One evaluation cannot be stopped in
 * the middle, so Ctrl-Cs that pile up while it runs say so (the second) and end the process
 * (the third, exit status 130: the way out of an evaluation that would take hours; the
 * history is already saved). Only write(2) and _exit(2) are called in the handler.
 */
#include "repl_internal.h"

#include <errno.h>
#include <langinfo.h>
#include <locale.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef HAVE_LIBEDIT
#include <histedit.h>
#endif

static volatile sig_atomic_t sigint_seen;

static void on_sigint(int sig)
{
    (void)sig;
    static const char again[] = "\n(Ctrl-C: the evaluation running now stops only when it "
                                "is done; Ctrl-C once more quits dtlc)\n";
    static const char quit[] = "\ndtlc: Ctrl-C three times: quitting\n";
    int n = sigint_seen + 1;
    sigint_seen = n;
    if (n == 2) {
        if (write(STDERR_FILENO, again, sizeof again - 1) < 0) {
            /* nothing to do */
        }
    } else if (n >= 3) {
        if (write(STDERR_FILENO, quit, sizeof quit - 1) < 0) {
            /* nothing to do */
        }
        _exit(130);
    }
}

void repl_sigint_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;   /* no SA_RESTART: a read at the prompt returns EINTR */
    sigaction(SIGINT, &sa, NULL);
}

void repl_sigint_restore(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

bool repl_interrupted(void)
{
    bool seen = sigint_seen != 0;
    sigint_seen = 0;
    return seen;
}

char *repl_history_path(void)
{
    const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    char *path = NULL;
    if (state && state[0] == '/') {
        size_t n = strlen(state);
        path = malloc(n + sizeof "/dtl/history");
        if (!path)
            return NULL;
        memcpy(path, state, n);
        mkdir(state, 0700);   /* (both may exist already) */
        memcpy(path + n, "/dtl", sizeof "/dtl");
        mkdir(path, 0700);
        memcpy(path + n, "/dtl/history", sizeof "/dtl/history");
        return path;
    }
    if (!home || !*home)
        return NULL;
    size_t n = strlen(home);
    path = malloc(n + sizeof "/.dtl_history");
    if (path) {
        memcpy(path, home, n);
        memcpy(path + n, "/.dtl_history", sizeof "/.dtl_history");
    }
    return path;
}

struct repl_line {
    FILE *in, *out;
    bool interactive;
    char *history;
    repl_complete_fn complete;
    void *user;
    const char *prompt;
#ifdef HAVE_LIBEDIT
    EditLine *el;
    History *hist;
#endif
};

/* ---- plain stdio ---------------------------------------------------------------------------- */

enum { MAX_LINE = 16 << 20 };   /* bytes of one input line */

static repl_read plain_read(repl_line *le, const char *prompt, char **line)
{
    if (le->interactive && prompt) {
        for (const char *c = prompt; *c; c++)
            if (*c != '\1')   /* libedit's markers around colors */
                fputc(*c, le->out);
        fflush(le->out);
    }
    size_t cap = 256, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return REPL_READ_EOF;
    for (;;) {
        errno = 0;
        int c = getc(le->in);
        if (c == EOF) {
            if (ferror(le->in) && errno == EINTR && repl_interrupted()) {
                clearerr(le->in);
                free(buf);
                if (le->interactive)
                    fputs("^C\n", le->out);
                return REPL_READ_CANCEL;
            }
            if (ferror(le->in) && errno == EINTR) {
                clearerr(le->in);
                continue;
            }
            if (n == 0) {
                free(buf);
                if (le->interactive)
                    clearerr(le->in);   /* Ctrl-D at a terminal: the next read waits again */
                return REPL_READ_EOF;
            }
            break;
        }
        if (c == '\n')
            break;
        if (n >= MAX_LINE) {   /* /dev/zero, say: stop rather than exhaust memory */
            free(buf);
            return REPL_READ_TOO_LONG;
        }
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return REPL_READ_EOF;
            }
            buf = nb;
            cap *= 2;
        }
        buf[n++] = (char)c;
    }
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    *line = buf;
    return REPL_READ_LINE;
}

/* ---- libedit -------------------------------------------------------------------------------- */

#ifdef HAVE_LIBEDIT
enum { HISTORY_SIZE = 1000 };   /* inputs kept, in the session and in the file */

static char *le_prompt(EditLine *el)
{
    repl_line *le = NULL;
    el_get(el, EL_CLIENTDATA, &le);
    return (char *)(le && le->prompt ? le->prompt : "");
}

static size_t common_prefix(char **v, size_t n)
{
    if (n == 0)
        return 0;
    size_t k = strlen(v[0]);
    for (size_t i = 1; i < n; i++) {
        size_t j = 0;
        while (j < k && v[i][j] == v[0][j])
            j++;
        k = j;
    }
    return k;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static unsigned char le_complete(EditLine *el, int ch)
{
    (void)ch;
    repl_line *le = NULL;
    el_get(el, EL_CLIENTDATA, &le);
    const LineInfo *li = el_line(el);
    if (!le || !le->complete || !li)
        return CC_ERROR;
    size_t cursor = (size_t)(li->cursor - li->buffer);
    bool indent = true;   /* only blanks before the cursor: Tab indents (a pasted file's tabs) */
    for (size_t i = 0; i < cursor && indent; i++)
        indent = li->buffer[i] == ' ' || li->buffer[i] == '\t';
    if (indent) {
        el_insertstr(el, "    ");
        return CC_REFRESH;
    }
    char *line = malloc(cursor + 1);
    if (!line)
        return CC_ERROR;
    memcpy(line, li->buffer, cursor);
    line[cursor] = '\0';
    size_t start = cursor, n = 0;
    char **cands = le->complete(le->user, line, cursor, &start, &n);
    unsigned char rc = CC_REFRESH;
    if (!cands || n == 0) {
        rc = CC_REFRESH_BEEP;
    } else {
        size_t typed = cursor - start;
        size_t k = common_prefix(cands, n);
        if (k > typed) {
            char *ins = strndup(cands[0] + typed, k - typed);
            if (ins) {
                el_insertstr(el, ins);
                free(ins);
            }
        } else if (n > 1) {
            /* Nothing more in common: list them (sorted, in columns). */
            qsort(cands, n, sizeof *cands, cmp_str);
            size_t w = 0;
            for (size_t i = 0; i < n; i++)
                w = strlen(cands[i]) > w ? strlen(cands[i]) : w;
            size_t cols = 78 / (w + 2);
            cols = cols ? cols : 1;
            fputc('\n', le->out);
            for (size_t i = 0; i < n; i++)
                fprintf(le->out, "%-*s%s", (int)(w + 2), cands[i],
                        (i + 1) % cols == 0 || i + 1 == n ? "\n" : "");
            rc = CC_REDISPLAY;
        } else {
            rc = CC_REFRESH;
        }
    }
    for (size_t i = 0; cands && i < n; i++)
        free(cands[i]);
    free(cands);
    free(line);
    return rc;
}

static bool le_open(repl_line *le)
{
    /* libedit reads the terminal as multibyte characters of LC_CTYPE: in the "C" locale of
     * a program that never set one it drops every non-ASCII byte ("é", "→" in a pasted
     * comment). The source is UTF-8: the user's locale, else C.UTF-8 (LC_CTYPE only, so
     * numbers still print with a '.'). */
    setlocale(LC_CTYPE, "");
    if (strcmp(nl_langinfo(CODESET), "UTF-8") != 0)
        setlocale(LC_CTYPE, "C.UTF-8");
    le->el = el_init("dtl", le->in, le->out, stderr);
    if (!le->el)
        return false;
    el_set(le->el, EL_CLIENTDATA, le);
    el_set(le->el, EL_EDITOR, "emacs");
    /* Bytes between two \1 in the prompt take no columns (colors). */
    el_set(le->el, EL_PROMPT_ESC, le_prompt, '\1');
    el_set(le->el, EL_SIGNAL, 0);
    /* The wide form: the narrow one copies the strings and never frees them (libedit). */
    el_wset(le->el, EL_ADDFN, L"dtl-complete", L"complete a name or command", le_complete);
    el_set(le->el, EL_BIND, "^I", "dtl-complete", NULL);
    le->hist = history_init();
    if (le->hist) {
        HistEvent ev;
        history(le->hist, &ev, H_SETSIZE, HISTORY_SIZE);
        history(le->hist, &ev, H_SETUNIQUE, 1);
        if (le->history)
            history(le->hist, &ev, H_LOAD, le->history);
        el_set(le->el, EL_HIST, history, le->hist);
    }
    el_source(le->el, NULL);   /* the user's ~/.editrc, as every libedit program */
    return true;
}

static repl_read le_read(repl_line *le, const char *prompt, char **line)
{
    le->prompt = prompt;
    int n = 0;
    errno = 0;
    const char *s = el_gets(le->el, &n);
    if (!s) {
        if (n < 0 && errno == EINTR) {
            repl_interrupted();   /* the flag: consumed here */
            fputs("^C\n", le->out);
            fflush(le->out);
            return REPL_READ_CANCEL;
        }
        if (n == 0)
            fputc('\n', le->out);
        return REPL_READ_EOF;
    }
    size_t len = strlen(s);
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
        len--;
    *line = strndup(s, len);
    return *line ? REPL_READ_LINE : REPL_READ_EOF;
}
#endif

/* ---- the interface ---------------------------------------------------------------------------- */

repl_line *repl_line_new(FILE *in, FILE *out, bool interactive, const char *history,
                         repl_complete_fn complete, void *user)
{
    repl_line *le = calloc(1, sizeof *le);
    if (!le)
        return NULL;
    le->in = in;
    le->out = out;
    le->interactive = interactive;
    le->complete = complete;
    le->user = user;
    le->history = history ? strdup(history) : NULL;
#ifdef HAVE_LIBEDIT
    if (interactive && !le_open(le)) {
        if (le->el)
            el_end(le->el);
        le->el = NULL;
    }
#endif
    return le;
}

repl_read repl_line_read(repl_line *le, const char *prompt, char **line)
{
    *line = NULL;
#ifdef HAVE_LIBEDIT
    if (le->el)
        return le_read(le, prompt, line);
#endif
    return plain_read(le, prompt, line);
}

void repl_line_remember(repl_line *le, const char *entry)
{
#ifdef HAVE_LIBEDIT
    if (le->el && le->hist && entry && *entry) {
        HistEvent ev;
        history(le->hist, &ev, H_ENTER, entry);
        /* The file gets the entry added to what it holds NOW, not this session's list: two
         * sessions at once both keep their inputs (saving the list would drop the other's). */
        History *fh = le->history ? history_init() : NULL;
        if (fh) {
            history(fh, &ev, H_SETSIZE, HISTORY_SIZE);
            history(fh, &ev, H_SETUNIQUE, 1);
            history(fh, &ev, H_LOAD, le->history);   /* (none yet: an empty list) */
            history(fh, &ev, H_ENTER, entry);
            history(fh, &ev, H_SAVE, le->history);
            history_end(fh);
        }
    }
#else
    (void)le, (void)entry;
#endif
}

void repl_line_free(repl_line *le)
{
    if (!le)
        return;
#ifdef HAVE_LIBEDIT
    if (le->el)
        el_end(le->el);
    if (le->hist)
        history_end(le->hist);
#endif
    free(le->history);
    free(le);
}
