# tests/comm_lib.sh — sourced by tests/comm_*.sh: runs N ranks of tests/unit/comm_worker as
# processes of this host and collects what they did, with a deadline and no process left.
#
#   start NAME N [VAR=VALUE…] -- ARGS…   starts ranks 0..N-1 of `comm_worker ARGS` with
#                                         DTL_RANK, DTL_WORLD_SIZE, DTL_COORDINATOR on a random
#                                         port of 127.0.0.1 and a DTL_JOB_ID of their own (so
#                                         tests running at once never join each other), plus
#                                         the VARs: DTL_RANK_<i>_<name>=v gives name=v to rank
#                                         i only; no blanks in VALUEs; SKIP="i j" leaves ranks
#                                         out. Output in $T/NAME.out<i> and $T/NAME.err<i>;
#                                         pids in $pids (rank order), "rank:pid" in $procs
#   reap LIMIT                            waits up to LIMIT seconds for all of them (killing
#                                         what is left with SIGKILL after that: hung=1), then
#                                         reaps: rc_<i> = rank i's exit status; secs = seconds
#                                         taken
#   run NAME N LIMIT [VAR=…] -- ARGS…     start, then reap; retried on another port when rank 0
#                                         could not listen (the port was taken)
#   check_shm PID…                        fails the test when libfabric's shm region of a pid
#                                         that exited is left in /dev/shm
#
# Sets: W (the worker), T (a temporary directory), fail. Everything started is killed at exit.

set -u
W=${DTL_BUILDDIR:-.}/tests/unit/comm_worker
if [ ! -x "$W" ]; then
    echo "$0: no comm_worker at $W (set DTL_BUILDDIR)" >&2
    exit 99
fi
"$W" probe > /dev/null
case $? in
    0) ;;
    77) echo "SKIP: this build has no libfabric"; exit 77 ;;
    *) echo "$0: comm_worker probe failed" >&2; exit 99 ;;
esac
T=$(mktemp -d "${TMPDIR:-/tmp}/dtl-comm.XXXXXX") || exit 99
all_pids=
job=0
cleanup() {
    for p in $all_pids; do
        kill -KILL "$p" 2> /dev/null
    done
    # A rank killed on purpose leaves its shm region behind (nothing can remove it then).
    for p in $all_pids; do
        rm -f /dev/shm/"$p":* 2> /dev/null
    done
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
fail=0

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# Whether pid $1 is still running (a zombie is not: it exited and waits to be reaped).
running() {
    [ -r "/proc/$1/stat" ] || return 1
    st=$(awk '{ print $3 }' "/proc/$1/stat" 2> /dev/null)
    [ -n "$st" ] && [ "$st" != Z ]
}

free_port() {
    od -An -N2 -tu2 /dev/urandom | awk '{ print 20000 + $1 % 40000 }'
}

start() {
    set -f   # VALUEs may hold brackets: no pathname expansion
    name=$1 n=$2
    shift 2
    vars=
    while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
        vars="$vars $1"
        shift
    done
    [ "$#" -gt 0 ] && shift
    port=$(free_port)
    job=$((job + 1))
    pids=
    procs=
    i=0
    while [ "$i" -lt "$n" ]; do
        case " ${SKIP:-} " in *" $i "*) i=$((i + 1)); continue ;; esac
        rvars=
        for v in $vars; do
            case $v in
                DTL_RANK_"$i"_*) rvars="$rvars ${v#DTL_RANK_"$i"_}" ;;
                DTL_RANK_[0-9]*_*) ;;
                *) rvars="$rvars $v" ;;
            esac
        done
        # shellcheck disable=SC2086
        env DTL_RANK="$i" DTL_WORLD_SIZE="$n" DTL_COORDINATOR="127.0.0.1:$port" \
            DTL_JOB_ID="comm-test-$$-$job" $rvars \
            "$W" "$@" > "$T/$name.out$i" 2> "$T/$name.err$i" &
        pids="$pids $!"
        procs="$procs $i:$!"
        all_pids="$all_pids $!"
        i=$((i + 1))
    done
    set +f
    started=$(now)
}

reap() {
    limit=$1
    hung=0
    while :; do
        alive=0
        for p in $pids; do
            running "$p" && alive=1
        done
        [ "$alive" = 0 ] && break
        if awk -v s="$started" -v t="$(now)" -v l="$limit" 'BEGIN { exit !(t - s > l) }'; then
            hung=1
            for p in $pids; do
                kill -KILL "$p" 2> /dev/null
            done
            break
        fi
        sleep 0.05
    done
    secs=$(elapsed "$started")
    for rp in $procs; do
        { wait "${rp#*:}"; } 2> /dev/null   # (no "Killed" notice from the shell)
        eval "rc_${rp%%:*}=\$?"
    done
}

run() {
    rname=$1 rn=$2 rlimit=$3
    shift 3
    for attempt in 1 2 3; do
        start "$rname" "$rn" "$@"
        reap "$rlimit"
        grep -q "it is in use" "$T/$rname.err0" 2> /dev/null || break
        echo "  (port taken, trying another)"
    done
}

check_shm() {
    for p in "$@"; do
        if ls /dev/shm/"$p":* > /dev/null 2>&1; then
            echo "FAIL: pid $p exited but left its shm region: $(ls /dev/shm/"$p":*)"
            fail=1
        fi
    done
}

# Prints the ranks' stderr, indented (for a failure's report).
show() {
    for rp in $procs; do
        i=${rp%%:*}
        sed "s/^/    [$i] /" "$T/$1.err$i" "$T/$1.out$i"
    done
}

finish() {
    # Nothing this test started may still run (reap waited for or killed every rank).
    for p in $all_pids; do
        if running "$p"; then
            echo "FAIL: process $p is still running: $(tr '\0' ' ' < "/proc/$p/cmdline" 2> /dev/null)"
            fail=1
        fi
    done
    if [ "$fail" = 0 ]; then
        echo "PASS"
        exit 0
    fi
    exit 1
}
