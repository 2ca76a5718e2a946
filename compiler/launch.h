/* compiler/launch.h — `dtlc run -n N`: N ranks of one job as processes of this host.
 *
 * Contract: dtl_launch forks N children before any libfabric call (the parent never opens a
 * transport) and each execs this program again (/proc/self/exe) as `ARGV0 run
 * --progress=MODE --color=WHEN ARGS…`, with DTL_RANK, DTL_WORLD_SIZE, DTL_LOCAL_RANK,
 * DTL_COORDINATOR=127.0.0.1:PORT and DTL_JOB_ID=dtlc-<launcher pid> added to its environment
 * (any such variables the launcher was given are replaced), and DTL_THREADS = the CPUs this
 * process may run on divided by N (at least 1) unless DTL_THREADS is set: the ranks share the
 * host's cores, as mpirun's binding does. The port is one the kernel gave
 * the launcher (bind to port 0); the launcher keeps that socket bound (SO_REUSEADDR, not
 * listening) until every child is gone, so no other program can take the port in the
 * meantime while rank 0, which binds it with SO_REUSEADDR too, can listen on it.
 *
 * Output: every line a child writes is written by the launcher, whole, as "[r] line" — the
 * child's stdout to stdout, its stderr to stderr — so lines of different ranks never mix.
 * Rank 0 draws the progress bar (the mode given, `auto` resolved against the launcher's
 * stderr: a bar on a terminal, else plain lines); the other ranks get --progress=none. The
 * launcher redraws rank 0's bar itself (as "[0] epoch …") and lifts it out of the way of
 * other ranks' lines. A line longer than 64 KiB is cut into several.
 *
 * Signals: SIGINT, SIGTERM and SIGHUP sent to the launcher are forwarded to every child
 * (except when the terminal sent them: the children, in the launcher's process group, have
 * them already); a second one makes it SIGKILL them. Children get PR_SET_PDEATHSIG (SIGTERM):
 * they die with the launcher, even when it is killed with SIGKILL. A SIGHUP ignored when
 * the launcher starts (nohup) stays ignored, by it and by the ranks.
 *
 * Failure: when a child exits non-zero or is killed, the others have DTL_TIMEOUT (default
 * 30 s) plus 5 s to exit by themselves (the comm layer fails them with a message naming the
 * dead rank); then they get SIGTERM, and SIGKILL 5 s later. The launcher removes the
 * libfabric shm regions (/dev/shm/<pid>:*) its dead children left behind (a process killed
 * with SIGKILL cannot), before it reaps them, so their pids cannot have been reused.
 * dtl_launch returns only when every child has been reaped.
 *
 * Returns the exit status for dtlc: 0 when every rank exited 0; else the status of the
 * first rank that failed, or 128 + N when it was killed by signal N (the launcher
 * interrupted by signal N: 128 + N too); 2 when the launch itself failed. What went wrong
 * is said on stderr ("dtlc: error: rank 2 was killed by signal 9 (Killed)").
 *
 * For tests only: with DTL_LAUNCH_CHILD set in the environment, each child runs
 * `/bin/sh -c "$DTL_LAUNCH_CHILD" ARGV0 run --progress=… ARGS…` instead of dtlc.
 */
#ifndef DTL_LAUNCH_H
#define DTL_LAUNCH_H

#include <stdbool.h>
#include <stddef.h>

#include "run.h"

/* The most ranks `dtlc run -n` starts: libfabric's shm provider serves at most 256. */
#define DTL_LAUNCH_MAX_RANKS 256

typedef struct dtl_launch_opts {
    int nranks;                   /* 1 .. DTL_LAUNCH_MAX_RANKS */
    const char *argv0;            /* the children's argv[0] */
    const char *const *args;      /* what follows `run` (without -n, --progress, --color) */
    size_t nargs;
    dtl_run_progress progress;    /* rank 0's; auto is resolved here */
    bool color;                   /* the launcher's own messages and the children's */
} dtl_launch_opts;

/* Runs the job; returns dtlc's exit status (see the contract). */
int dtl_launch(const dtl_launch_opts *o);

#endif
