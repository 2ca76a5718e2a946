/* compiler/launch.c — `dtlc run -n N`: forks the ranks, relays their output, reaps them.
 *
 * Design. The launcher is one thread and one poll loop. Before forking it blocks SIGINT,
 * SIGTERM, SIGHUP and SIGCHLD and reads them from a signalfd, so a signal is an event of the
 * loop like a child's output, never a handler racing with it; each child unblocks them again
 * before exec. Each child's stdout and stderr are pipes; the loop reads them (non-blocking)
 * into one buffer per stream and writes every complete line with one writev ("[r] ", the line,
 * "\n"), so the launcher is the only writer of its stdout and stderr and lines cannot mix.
 * Rank 0's stderr, when it draws a bar, also carries frames ("\r…\033[K"): the launcher keeps
 * the last one and draws it itself, clearing it before any other line and drawing it again
 * after, so the bar stays on the last line of the terminal.
 *
 * Children are reaped in two stages: waitid(WNOWAIT) sees that one has ended while its pid is
 * still taken (a zombie), the launcher removes the shm regions named after that pid, then
 * waitpid reaps it. Each pass of the loop checks every child this way (at most 256), so a
 * merged SIGCHLD never hides an exit.
 *
 * The coordinator's port: the launcher binds a socket to port 0 with SO_REUSEADDR and keeps
 * it, not listening, until the end. The kernel never hands out a port with a bound socket
 * (bind to 0, the ports of outgoing connections), and programs that bind without
 * SO_REUSEADDR are refused it, while rank 0's listening socket (SO_REUSEADDR too) may share
 * it with a socket that does not listen. So the port chosen is free and stays free for rank 0,
 * with no retry loop and no change to the rendezvous (runtime/comm/bootstrap.c).
 */
#define _GNU_SOURCE
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "launch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../runtime/comm/comm.h"
#include "../runtime/pool.h"
#include "../runtime/progress.h"

extern char **environ;

enum {
    LINE_MAX_BYTES = 65536,   /* a longer line is cut */
    EXIT_LAUNCH = 2,          /* the launch itself failed */
};
#define GRACE_MARGIN_S 5.0    /* after DTL_TIMEOUT, before SIGTERM */
#define KILL_AFTER_S 5.0      /* after SIGTERM, before SIGKILL */
#define INTERRUPT_KILL_AFTER_S 10.0   /* after an interrupt was passed on, before SIGKILL */
#define LINGER_S 1.0          /* pipes still open after every child is reaped (a grandchild) */

typedef struct stream {
    int fd;         /* the pipe's read end; -1 once closed */
    int to;         /* 1 or 2: where its lines go */
    bool bar;       /* rank 0's stderr drawing a bar: "\r…\033[K" frames */
    char *buf;
    size_t len;
} stream;

typedef struct child {
    pid_t pid;      /* 0: not started */
    bool reaped;
    int status;     /* wait status, once reaped */
    int stopped_by; /* the signal the launcher sent it after a failure or interrupt; 0: none */
    stream s[2];    /* stdout, stderr */
} child;

typedef struct launcher {
    const dtl_launch_opts *o;
    child *ch;
    int n;
    int sfd;              /* signalfd */
    bool broken[3];       /* writing to fd 1 / 2 failed: drop what would go there */
    bool epipe;           /* ... because nobody reads it any more (`dtlc run -n 2 | head`) */
    int out_errno;        /* why stdout failed */
    bool tty1;            /* stdout is a terminal (the bar must be lifted for its lines too) */
    char *bar;            /* rank 0's last frame, drawn by us; NULL: none shown */
    size_t barlen;
    int first_fail;       /* the rank that failed first; -1: none */
    double grace_s;       /* DTL_TIMEOUT + margin */
    double term_at;       /* when the survivors get SIGTERM; 0: not armed */
    double kill_at;       /* when what is left gets SIGKILL; 0: not armed */
    int interrupted;      /* the first SIGINT/SIGTERM/SIGHUP the launcher got; 0: none */
    int nsignals;
    double last_reap;     /* when the last child was reaped */
} launcher;

/* ---- output ---- */

/* Writes all of iov to fd (once broken, nothing). */
static void put_iov(launcher *L, int fd, struct iovec *iov, int n)
{
    if (L->broken[fd])
        return;
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {   /* a non-blocking stdout someone gave us */
                struct pollfd pf = {fd, POLLOUT, 0};
                poll(&pf, 1, 1000);
                continue;
            }
            if (fd == 1)
                L->out_errno = errno;
            L->broken[fd] = true;
            L->epipe |= errno == EPIPE;
            return;
        }
        size_t left = (size_t)w;
        while (n > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++, n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
}

static void put(launcher *L, int fd, const char *s, size_t len)
{
    struct iovec v = {(void *)s, len};
    put_iov(L, fd, &v, 1);
}

static void bar_draw(launcher *L)
{
    if (!L->bar)
        return;
    struct iovec v[3] = {{(void *)"\r[0] ", 5}, {L->bar, L->barlen}, {(void *)"\033[K", 3}};
    put_iov(L, 2, v, 3);
}

static void bar_lift(launcher *L)
{
    if (L->bar)
        put(L, 2, "\r\033[K", 4);
}

/* Writes one whole line of rank r to fd, prefixed. */
static void emit_line(launcher *L, int r, int fd, const char *text, size_t len)
{
    char pre[16];
    int pn = snprintf(pre, sizeof pre, "[%d] ", r);
    bool lift = L->bar && (fd == 2 || L->tty1);
    if (lift)
        bar_lift(L);
    struct iovec v[3] = {{pre, (size_t)pn}, {(void *)text, len}, {(void *)"\n", 1}};
    put_iov(L, fd, v, 3);
    if (lift)
        bar_draw(L);
}

/* A frame of rank 0's bar: its text, or empty for "clear". */
static void bar_frame(launcher *L, const char *text, size_t len)
{
    if (len == 0) {
        bar_lift(L);
        free(L->bar);
        L->bar = NULL;
        return;
    }
    char *b = realloc(L->bar, len);
    if (!b)
        return;
    memcpy(b, text, len);
    L->bar = b;
    L->barlen = len;
    bar_draw(L);
}

/* Emits what is complete in s's buffer (everything, at end of file) and keeps the rest. */
static void drain(launcher *L, int r, stream *s, bool eof)
{
    size_t at = 0;
    while (at < s->len) {
        char *p = s->buf + at;
        size_t left = s->len - at, used = 0;
        if (s->bar && p[0] == '\r') {
            /* A frame ends at "\033[K", at the next '\r', or (a plain line after all) at '\n'. */
            for (size_t i = 1; i < left && !used; i++) {
                if (p[i] == '\n') {
                    emit_line(L, r, s->to, p + 1, i - 1);
                    used = i + 1;
                } else if (p[i] == '\r') {
                    bar_frame(L, p + 1, i - 1);
                    used = i;
                } else if (p[i] == '\033' && i + 2 < left && p[i + 1] == '[' && p[i + 2] == 'K') {
                    bar_frame(L, p + 1, i - 1);
                    used = i + 3;
                }
            }
        } else {
            for (size_t i = 0; i < left && !used; i++)
                if (p[i] == '\n' || (s->bar && p[i] == '\r')) {
                    emit_line(L, r, s->to, p, i);
                    used = i + (p[i] == '\n');
                }
        }
        if (!used) {
            if (!eof && left < LINE_MAX_BYTES)
                break;   /* wait for the rest of the line */
            size_t skip = s->bar && p[0] == '\r';
            if (left > skip)
                emit_line(L, r, s->to, p + skip, left - skip);
            used = left;
        }
        at += used;
    }
    memmove(s->buf, s->buf + at, s->len - at);
    s->len -= at;
}

/* Reads what the pipe has (a few reads: a chatty rank must not starve the others); at end
 * of file, emits the last partial line and closes it. */
static void pump(launcher *L, int r, stream *s)
{
    for (int reads = 0; reads < 16; reads++) {
        if (s->len == LINE_MAX_BYTES)
            drain(L, r, s, false);   /* cuts the over-long line */
        ssize_t got = read(s->fd, s->buf + s->len, LINE_MAX_BYTES - s->len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno == EAGAIN)
            return;
        if (got <= 0) {
            drain(L, r, s, true);
            close(s->fd);
            s->fd = -1;
            if (s->bar && L->bar)
                bar_frame(L, "", 0);   /* rank 0 is gone: so is its bar */
            return;
        }
        s->len += (size_t)got;
        drain(L, r, s, false);
    }
}

/* "dtlc: error: …" on stderr, lifting the bar. */
static void say(launcher *L, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(launcher *L, const char *level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char line[1200];
    int n;
    if (L->o->color)
        n = snprintf(line, sizeof line, "\033[1mdtlc: %s%s:\033[0m\033[1m %s\033[0m\n",
                     strcmp(level, "error") == 0 ? "\033[1;31m" : "\033[1;36m", level, msg);
    else
        n = snprintf(line, sizeof line, "dtlc: %s: %s\n", level, msg);
    if (n < 0)
        return;
    bar_lift(L);
    put(L, 2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    bar_draw(L);
}

/* ---- children ---- */

static bool env_is_ours(const char *kv)
{
    static const char *const names[] = {"DTL_RANK=", "DTL_WORLD_SIZE=", "DTL_LOCAL_RANK=",
                                        "DTL_COORDINATOR=", "DTL_JOB_ID="};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strncmp(kv, names[i], strlen(names[i])) == 0)
            return true;
    return false;
}

/* The launcher's environment without our five variables. */
static char **base_env(size_t *n)
{
    size_t count = 0;
    for (char **e = environ; *e; e++)
        count++;
    char **env = calloc(count + 1, sizeof *env);
    if (!env)
        return NULL;
    *n = 0;
    for (char **e = environ; *e; e++)
        if (!env_is_ours(*e))
            env[(*n)++] = *e;
    return env;
}

/* In the child, between fork and exec: only calls that are safe after fork. */
static void child_exec(int r, int out[2], int errp[2], char **argv,
                       char **envp, const sigset_t *mask, pid_t parent, const char *exe)
{
    /* Die with the launcher; it may have died already, before the prctl. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(128 + SIGTERM);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0 && devnull != 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    if (dup2(out[1], 1) < 0 || dup2(errp[1], 2) < 0)
        _exit(127);
    /* dup2 onto itself keeps close-on-exec: clear it. */
    fcntl(1, F_SETFD, 0);
    fcntl(2, F_SETFD, 0);
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, mask, NULL);
    execve(exe, argv, envp);
    char msg[512];
    int n = snprintf(msg, sizeof msg, "dtlc: error: rank %d: cannot run %s: %s\n", r, exe,
                     strerror(errno));
    if (n > 0 && write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1) < 0)
        _exit(127);
    _exit(127);
}

/* Removes /dev/shm/<pid>:* — what libfabric's shm provider leaves of a process that could not
 * close its endpoint (killed by SIGKILL, crashed). */
static void remove_shm(pid_t pid)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    char pre[32];
    int pn = snprintf(pre, sizeof pre, "%ld:", (long)pid);
    uid_t me = geteuid();
    struct dirent *e;
    while ((e = readdir(d))) {
        struct stat st;
        if (strncmp(e->d_name, pre, (size_t)pn) != 0)
            continue;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(st.st_mode) && st.st_uid == me)
            unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

static bool failed(int status)
{
    return !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

/* "exited with status 1", "was killed by signal 9 (Killed)". */
static void describe(const child *c, char *buf, size_t cap)
{
    if (WIFEXITED(c->status))
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(c->status));
    else if (WIFSIGNALED(c->status)) {
        int sig = WTERMSIG(c->status);
        snprintf(buf, cap, "was killed by signal %d (%s)%s", sig, strsignal(sig),
                 c->stopped_by == sig ? " sent by dtlc" : "");
    } else
        snprintf(buf, cap, "ended with wait status %#x", (unsigned)c->status);
}

/* Reaps every child that has ended. */
static void reap(launcher *L)
{
    int fresh_sig = -1, fresh_exit = -1;
    for (int r = 0; r < L->n; r++) {
        child *c = &L->ch[r];
        if (c->pid <= 0 || c->reaped)
            continue;
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)c->pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0 ||
            si.si_pid != c->pid)
            continue;
        remove_shm(c->pid);   /* still a zombie: the pid is not anybody else's yet */
        int st;
        while (waitpid(c->pid, &st, 0) < 0 && errno == EINTR)
            ;
        c->reaped = true;
        c->status = st;
        L->last_reap = dtl_progress_now();
        if (failed(st) && !c->stopped_by) {
            if (WIFSIGNALED(st) && fresh_sig < 0)
                fresh_sig = r;
            else if (fresh_exit < 0)
                fresh_exit = r;
        }
    }
    /* Of ranks found dead in one pass, one killed by a signal is the likelier cause. */
    int first = fresh_sig >= 0 ? fresh_sig : fresh_exit;
    if (first >= 0 && L->first_fail < 0 && !L->interrupted) {
        L->first_fail = first;
        L->term_at = dtl_progress_now() + L->grace_s;
    }
}

static int alive(const launcher *L)
{
    int k = 0;
    for (int r = 0; r < L->n; r++)
        k += L->ch[r].pid > 0 && !L->ch[r].reaped;
    return k;
}

static void signal_all(launcher *L, int sig, bool mark)
{
    for (int r = 0; r < L->n; r++) {
        child *c = &L->ch[r];
        if (c->pid > 0 && !c->reaped) {
            kill(c->pid, sig);
            if (mark)
                c->stopped_by = sig;
        }
    }
}

/* "0, 1 and 3" of the ranks whose flag is set. */
static void rank_list(char *buf, size_t cap, const bool *on, int n)
{
    size_t at = 0;
    int total = 0, seen = 0;
    for (int r = 0; r < n; r++)
        total += on[r];
    buf[0] = '\0';
    for (int r = 0; r < n && at < cap; r++)
        if (on[r]) {
            seen++;
            at += (size_t)snprintf(buf + at, cap - at, "%s%d",
                                   seen == 1 ? "" : seen == total ? " and " : ", ", r);
        }
}

static void on_deadlines(launcher *L)
{
    double t = dtl_progress_now();
    if (L->term_at > 0 && t >= L->term_at) {
        L->term_at = 0;
        int k = alive(L);
        if (k > 0) {
            bool *on = calloc((size_t)L->n, sizeof *on);
            char list[512] = "";
            if (on) {
                for (int r = 0; r < L->n; r++)
                    on[r] = L->ch[r].pid > 0 && !L->ch[r].reaped;
                rank_list(list, sizeof list, on, L->n);
                free(on);
            }
            say(L, "note", "rank%s %s still running %.0f s after rank %d failed: sending "
                "SIGTERM", k > 1 ? "s" : "", list, L->grace_s, L->first_fail);
            signal_all(L, SIGTERM, true);
            L->kill_at = t + KILL_AFTER_S;
        }
    }
    if (L->kill_at > 0 && t >= L->kill_at) {
        L->kill_at = 0;
        signal_all(L, SIGKILL, true);
    }
}

static void on_signal(launcher *L, const struct signalfd_siginfo *si)
{
    int sig = (int)si->ssi_signo;
    if (sig == SIGCHLD)
        return;   /* reap() runs after every wake-up */
    L->nsignals++;
    if (L->nsignals == 1) {
        L->interrupted = sig;
        L->term_at = 0;
        /* The terminal signals the whole foreground process group, the children included:
         * they have it already. Anything else (kill) is passed on. */
        if (si->ssi_code != SI_KERNEL)
            signal_all(L, sig, true);
        L->kill_at = dtl_progress_now() + INTERRUPT_KILL_AFTER_S;
    } else {
        signal_all(L, SIGKILL, true);   /* asked twice: now */
        L->kill_at = 0;
    }
}

/* ---- the launch ---- */

/* A TCP port nobody else can take while fd stays open (see the design paragraph). */
static int reserve_port(int *port, char *why, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, cap, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        snprintf(why, cap, "cannot reserve a port for rank 0: %s", strerror(errno));
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static int resolve_progress(dtl_run_progress p)
{
    if (p == DTL_PROGRESS_AUTO)
        return isatty(STDERR_FILENO) ? DTL_PROGRESS_BAR : DTL_PROGRESS_PLAIN;
    return (int)p;
}

/* The final verdict; returns the exit status. */
static int verdict(launcher *L)
{
    char what[200];
    if (L->interrupted) {
        int k = 0;
        for (int r = 0; r < L->n; r++)
            k += L->ch[r].pid > 0;
        if (L->interrupted == SIGPIPE)
            say(L, "error", "cannot write the ranks' output (%s): stopped %d rank%s",
                strerror(EPIPE), k, k == 1 ? "" : "s");
        else
            say(L, "error", "interrupted by signal %d (%s): stopped %d rank%s",
                L->interrupted, strsignal(L->interrupted), k, k == 1 ? "" : "s");
        return 128 + L->interrupted;
    }
    if (L->first_fail < 0) {
        for (int r = 0; r < L->n; r++)   /* a child the launcher killed counts too */
            if (L->ch[r].reaped && failed(L->ch[r].status)) {
                L->first_fail = r;
                break;
            }
    }
    if (L->first_fail < 0)
        return 0;
    const child *f = &L->ch[L->first_fail];
    describe(f, what, sizeof what);
    say(L, "error", "rank %d %s", L->first_fail, what);
    /* The others, grouped by what happened to them. */
    bool *on = calloc((size_t)L->n, sizeof *on), *done = calloc((size_t)L->n, sizeof *done);
    if (on && done) {
        done[L->first_fail] = true;
        for (int r = 0; r < L->n; r++) {
            if (done[r] || !L->ch[r].reaped || !failed(L->ch[r].status))
                continue;
            describe(&L->ch[r], what, sizeof what);
            int k = 0;
            memset(on, 0, (size_t)L->n * sizeof *on);
            for (int q = r; q < L->n; q++) {
                char other[200];
                if (done[q] || !L->ch[q].reaped || !failed(L->ch[q].status))
                    continue;
                describe(&L->ch[q], other, sizeof other);
                if (strcmp(other, what) == 0)
                    on[q] = done[q] = true, k++;
            }
            char list[512];
            rank_list(list, sizeof list, on, L->n);
            say(L, "note", "then rank%s %s %s", k > 1 ? "s" : "", list, what);
        }
    }
    free(on);
    free(done);
    return WIFEXITED(f->status) ? WEXITSTATUS(f->status)
           : WIFSIGNALED(f->status) ? 128 + WTERMSIG(f->status) : 1;
}

int dtl_launch(const dtl_launch_opts *o)
{
    launcher L;
    memset(&L, 0, sizeof L);
    L.o = o;
    L.n = o->nranks;
    L.sfd = -1;
    L.first_fail = -1;
    L.tty1 = isatty(STDOUT_FILENO);
    if (o->nranks < 1 || o->nranks > DTL_LAUNCH_MAX_RANKS) {
        say(&L, "error", "-n expects 1 to %d ranks, found %d", DTL_LAUNCH_MAX_RANKS,
            o->nranks);
        return EXIT_LAUNCH;
    }
    dtl_comm_env env;
    dtl_err err = {DTL_ERR_NONE, ""};
    L.grace_s = DTL_COMM_DEFAULT_TIMEOUT + GRACE_MARGIN_S;
    if (dtl_comm_env_from_environ(&env, &err)) {
        if (env.size > 1) {
            say(&L, "error", "-n %d: this process is already rank %d of %d (from %s's "
                "variables): start ranks either with -n or with a launcher, not both",
                o->nranks, env.rank, env.size, env.source);
            return EXIT_LAUNCH;
        }
        L.grace_s = env.timeout_s + GRACE_MARGIN_S;
    }

    int status = EXIT_LAUNCH;
    char why[256];
    int port = 0;
    int port_fd = reserve_port(&port, why, sizeof why);
    char **argvs = NULL, **envs = NULL;   /* per rank: argv, envp */
    char *strs = NULL;                    /* the per-rank environment strings */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    /* SIGHUP ignored on entry (nohup): a lone dtlc would run on, so the ranks do too (a
     * blocked signal is queued even when ignored: it must not be in the set). */
    struct sigaction hup;
    if (sigaction(SIGHUP, NULL, &hup) != 0 || hup.sa_handler != SIG_IGN)
        sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &old);
    struct sigaction ign, old_pipe, dfl, old_chld;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, &old_pipe);
    /* SIGCHLD inherited as SIG_IGN (or SA_NOCLDWAIT) would reap the children behind our back:
     * waitid would never see them end. */
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &dfl, &old_chld);
    if (port_fd < 0) {
        say(&L, "error", "%s", why);
        goto out;
    }
    L.sfd = signalfd(-1, &block, SFD_CLOEXEC | SFD_NONBLOCK);
    L.ch = calloc((size_t)L.n, sizeof *L.ch);
    const char *child_cmd = getenv("DTL_LAUNCH_CHILD");
    size_t head = child_cmd ? 7 : 4;   /* [sh -c CMD] argv0 run --progress --color */
    size_t argc = head + o->nargs + 1;
    argvs = calloc((size_t)L.n * argc, sizeof *argvs);
    size_t nenv = 0;
    char **base = base_env(&nenv);
    enum { NOURS = 6, ENVLEN = 160 };   /* DTL_RANK … DTL_JOB_ID, DTL_THREADS */
    size_t stride = nenv + NOURS + 1;
    envs = calloc((size_t)L.n * stride, sizeof *envs);
    strs = calloc((size_t)L.n * NOURS, ENVLEN);
    /* The ranks share this host's CPUs: each one's thread pool gets its part (as mpirun's
     * binding or torchrun's OMP_NUM_THREADS=1 do), unless DTL_THREADS says otherwise. */
    int threads = 0;
    if (!getenv("DTL_THREADS"))
        threads = dtl_pool_cpu_count() / L.n > 1 ? dtl_pool_cpu_count() / L.n : 1;
    if (L.sfd < 0 || !L.ch || !argvs || !base || !envs || !strs) {
        say(&L, "error", "cannot start the ranks: %s", L.sfd < 0 ? strerror(errno)
                                                               : "out of memory");
        free(base);
        goto out;
    }
    for (int r = 0; r < L.n; r++)
        for (int k = 0; k < 2; k++)
            L.ch[r].s[k].fd = -1;
    int p0 = resolve_progress(o->progress);
    static const char *const prog_arg[] = {"--progress=auto", "--progress=bar",
                                           "--progress=plain", "--progress=none"};
    pid_t self = getpid();
    for (int r = 0; r < L.n; r++) {
        char **av = argvs + (size_t)r * argc, **ev = envs + (size_t)r * stride;
        size_t k = 0;
        if (child_cmd) {
            av[k++] = (char *)"/bin/sh";
            av[k++] = (char *)"-c";
            av[k++] = (char *)child_cmd;
        }
        av[k++] = (char *)o->argv0;
        av[k++] = (char *)"run";
        av[k++] = (char *)prog_arg[r == 0 ? p0 : DTL_PROGRESS_NONE];
        av[k++] = (char *)(o->color ? "--color=always" : "--color=never");
        for (size_t i = 0; i < o->nargs; i++)
            av[k++] = (char *)o->args[i];
        av[k] = NULL;
        memcpy(ev, base, nenv * sizeof *ev);
        char *s = strs + (size_t)r * NOURS * ENVLEN;
        snprintf(s, ENVLEN, "DTL_RANK=%d", r);
        snprintf(s + ENVLEN, ENVLEN, "DTL_WORLD_SIZE=%d", L.n);
        snprintf(s + 2 * ENVLEN, ENVLEN, "DTL_LOCAL_RANK=%d", r);
        snprintf(s + 3 * ENVLEN, ENVLEN, "DTL_COORDINATOR=127.0.0.1:%d", port);
        snprintf(s + 4 * ENVLEN, ENVLEN, "DTL_JOB_ID=dtlc-%ld", (long)self);
        snprintf(s + 5 * ENVLEN, ENVLEN, "DTL_THREADS=%d", threads);
        size_t k2 = nenv;
        for (int j = 0; j < (threads > 0 ? 6 : 5); j++)
            ev[k2++] = s + (size_t)j * ENVLEN;
        ev[k2] = NULL;
    }
    free(base);
    const char *exe = child_cmd ? "/bin/sh" : "/proc/self/exe";

    /* Fork them all (nothing here has touched libfabric). */
    fflush(stdout);
    fflush(stderr);
    for (int r = 0; r < L.n; r++) {
        int out[2], errp[2];
        if (pipe2(out, O_CLOEXEC) != 0) {
            say(&L, "error", "cannot start rank %d: pipe: %s", r, strerror(errno));
            break;
        }
        if (pipe2(errp, O_CLOEXEC) != 0) {
            say(&L, "error", "cannot start rank %d: pipe: %s", r, strerror(errno));
            close(out[0]);
            close(out[1]);
            break;
        }
        pid_t pid = fork();
        if (pid == 0)
            child_exec(r, out, errp, argvs + (size_t)r * argc,
                       envs + (size_t)r * stride, &old, self, exe);
        close(out[1]);
        close(errp[1]);
        if (pid < 0) {
            say(&L, "error", "cannot start rank %d: fork: %s", r, strerror(errno));
            close(out[0]);
            close(errp[0]);
            break;
        }
        child *c = &L.ch[r];
        c->pid = pid;
        for (int k = 0; k < 2; k++) {
            stream *s = &c->s[k];
            s->fd = k == 0 ? out[0] : errp[0];
            fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
            s->to = k + 1;
            s->bar = r == 0 && k == 1 && p0 == DTL_PROGRESS_BAR;
            s->buf = malloc(LINE_MAX_BYTES);
            if (!s->buf) {   /* cannot relay: read and drop (the child must not block) */
                close(s->fd);
                s->fd = -1;
            }
        }
    }
    bool started_all = true;
    for (int r = 0; r < L.n; r++)
        started_all &= L.ch[r].pid > 0;
    if (!started_all) {   /* stop those that started: the world cannot form */
        signal_all(&L, SIGKILL, true);
        L.first_fail = -1;
    }

    /* The loop: output, signals, exits, deadlines. */
    struct pollfd *pf = calloc((size_t)L.n * 2 + 1, sizeof *pf);
    int *who = calloc((size_t)L.n * 2 + 1, sizeof *who);
    if (!pf || !who) {
        say(&L, "error", "out of memory: stopping the ranks");
        signal_all(&L, SIGKILL, true);
        started_all = false;
    }
    for (;;) {
        reap(&L);
        if (L.epipe && !L.interrupted) {   /* what a lone dtlc would die of: SIGPIPE */
            L.interrupted = SIGPIPE;
            L.nsignals = 1;
            L.term_at = 0;
            signal_all(&L, SIGTERM, true);
            L.kill_at = dtl_progress_now() + INTERRUPT_KILL_AFTER_S;
        }
        on_deadlines(&L);
        int live = alive(&L);
        if (!pf || !who) {   /* no relay: wait for the ones killed above */
            if (live == 0)
                break;
            usleep(10000);
            continue;
        }
        int nfds = 0;
        pf[nfds].fd = L.sfd;
        pf[nfds].events = POLLIN;
        who[nfds++] = -1;
        for (int r = 0; r < L.n; r++)
            for (int k = 0; k < 2; k++)
                if (L.ch[r].s[k].fd >= 0) {
                    pf[nfds].fd = L.ch[r].s[k].fd;
                    pf[nfds].events = POLLIN;
                    who[nfds++] = r * 2 + k;
                }
        if (live == 0 && (nfds == 1 || dtl_progress_now() - L.last_reap > LINGER_S))
            break;
        double wake = -1;
        double t = dtl_progress_now();
        if (L.term_at > 0)
            wake = L.term_at - t;
        if (L.kill_at > 0 && (wake < 0 || L.kill_at - t < wake))
            wake = L.kill_at - t;
        if (live == 0)
            wake = LINGER_S;
        int ms = wake < 0 ? 1000 : (int)(wake * 1000) + 1;
        if (ms > 1000)
            ms = 1000;   /* a missed SIGCHLD costs at most a second */
        int got = poll(pf, (nfds_t)nfds, ms);
        if (got < 0 && errno != EINTR) {
            /* Cannot watch the ranks any more: end them rather than leave them behind. */
            say(&L, "error", "poll: %s: stopping %d rank%s", strerror(errno), live,
                live == 1 ? "" : "s");
            signal_all(&L, SIGKILL, true);
            for (struct timespec d = {0, 10000000L}; alive(&L); nanosleep(&d, NULL))
                reap(&L);
            break;
        }
        for (int i = 0; got > 0 && i < nfds; i++) {
            if (!pf[i].revents)
                continue;
            if (who[i] < 0) {
                struct signalfd_siginfo si;
                while (read(L.sfd, &si, sizeof si) == (ssize_t)sizeof si)
                    on_signal(&L, &si);
            } else {
                int r = who[i] / 2, k = who[i] % 2;
                pump(&L, r, &L.ch[r].s[k]);
            }
        }
    }
    free(pf);
    free(who);
    bar_frame(&L, "", 0);
    for (int r = 0; r < L.n; r++)
        for (int k = 0; k < 2; k++) {
            stream *s = &L.ch[r].s[k];
            if (s->fd >= 0) {   /* a grandchild holds it: what we have is all we wait for */
                drain(&L, r, s, true);
                close(s->fd);
            }
            free(s->buf);
        }
    status = started_all ? verdict(&L) : EXIT_LAUNCH;
    if (L.broken[1] && status == 0) {
        say(&L, "error", "cannot write to standard output: %s", strerror(L.out_errno));
        status = EXIT_LAUNCH;
    }
out:
    if (port_fd >= 0)
        close(port_fd);
    if (L.sfd >= 0)
        close(L.sfd);
    free(L.ch);
    free(L.bar);
    free(argvs);
    free(envs);
    free(strs);
    sigaction(SIGPIPE, &old_pipe, NULL);
    sigaction(SIGCHLD, &old_chld, NULL);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return status;
}
