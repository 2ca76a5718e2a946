#!/bin/sh
# tests/comm_failure.sh — runtime/comm when things go wrong: every rank must exit non-zero,
# soon, with a message that names the rank at fault and what the survivor was doing; no
# process may be left behind (comm_lib.sh kills and reaps everything it started).
#   kill -9 of one rank in the middle of a stream of 4 MB allreduces (shm and tcp), of rank 0
#   a model hash that differs, collective signature lists that differ, world sizes that differ
#   a rank that hangs (DTL_TIMEOUT=1), one that never returns to the transport (the watcher's
#   5 s backstop), a rank that leaves without finishing, ranks that
#   disagree about a collective's size, a provider that does not exist, two jobs on one port,
#   a coordinator that never comes, a rank that never comes
. "$(dirname "$0")/comm_lib.sh"

# expect LABEL N: every rank exited non-zero (and not hung); each stderr matches every
# following extended regex (RANKS=... limits which ranks are checked).
expect() {
    label=$1 n=$2
    shift 2
    ok=1
    [ "$hung" = 0 ] || { echo "FAIL: $label: hung (killed after ${secs} s)"; ok=0; }
    for i in ${RANKS:-$(seq 0 $((n - 1)))}; do
        eval "rc=\$rc_$i"
        if [ "$rc" = 0 ]; then
            echo "FAIL: $label: rank $i exited 0"
            ok=0
        fi
        for re in "$@"; do
            if ! grep -Eq -- "$re" "$T/$label.err$i"; then
                echo "FAIL: $label: rank $i's message does not match /$re/"
                ok=0
            fi
        done
    done
    if [ "$ok" = 1 ]; then
        echo "ok: $label (${secs} s): $(sed -n 1p "$T/$label.err$i" | cut -c1-160)"
    else
        show "$label"
        fail=1
    fi
}

# kill_one LABEL N VICTIM VARS…: N ranks allreduce 4 MB in a loop; once all are in it, the
# victim gets SIGKILL; the others must exit non-zero within 10 s naming it.
kill_one() {
    label=$1 n=$2 victim=$3
    shift 3
    start "$label" "$n" "$@" -- loop
    waited=0
    while [ "$(cat "$T/$label".out* 2> /dev/null | grep -c ready)" -lt "$n" ] && [ "$waited" -lt 600 ]; do
        sleep 0.05
        waited=$((waited + 1))
    done
    vpid=$(echo $pids | cut -d' ' -f$((victim + 1)))
    kill -KILL "$vpid"
    started=$(now)
    { wait "$vpid"; } 2> /dev/null   # reaped here: no "Killed" notice from the shell
    reap 10
    survivors=
    for i in $(seq 0 $((n - 1))); do
        [ "$i" = "$victim" ] || survivors="$survivors $i"
    done
    RANKS=$survivors expect "$label" "$n" "rank $victim \(host [^,]*, pid $vpid\) died" \
        "allreduce f32\[1048576\] \(4\.2 MB\) for loop\.dtl:7"
    # shellcheck disable=SC2086
    check_shm $(echo $pids | tr ' ' '\n' | grep -v "^$vpid\$")
    rm -f /dev/shm/"$vpid":*
}

kill_one kill-shm-4 4 2 DTL_FABRIC_PROVIDER=shm
kill_one kill-tcp-3 3 1 "DTL_FABRIC_PROVIDER=tcp;ofi_rxm"
kill_one kill-root-3 3 0 DTL_FABRIC_PROVIDER=shm

# Disagreements at start: every rank fails before any collective, with rank 0's verdict.
run hash 3 30 DTL_RANK_2_COMM_TEST_HASH=beef -- hash 1234
expect hash 3 "the model differs between ranks: rank 0 has model hash 0+1234; rank 2 differs \(rank 2 has 0+beef\)"
run sigs 3 30 "DTL_RANK_1_COMM_TEST_SIGS=allreduce:f32[10]:sum,allreduce:f32[12]:sum" \
    -- sigs "allreduce:f32[10]:sum,allreduce:f32[11]:sum"
expect sigs 3 "ranks would issue different collectives per step \(rank 1 differs from rank 0\)" \
    "the first difference is #2: rank 0 'allreduce:f32\[11\]:sum', rank 1 'allreduce:f32\[12\]:sum'"
run worldsize 2 30 DTL_RANK_1_DTL_WORLD_SIZE=3 -- hash 1
RANKS=0 expect worldsize 2 "rank 1 \(host [^,]*, pid [0-9]*\) says the world has 3 ranks, rank 0 says 2"

# A rank that hangs: the others time out (1 s, set once the world is up), the first to notice
# tells everyone, and the sleeper finds out when it wakes up.
run sleep 3 30 COMM_TEST_TIMEOUT=1 -- sleep 1 3
expect sleep 3 "allreduce f32\[1000\] \(4\.0 kB\) for sleepy\.dtl:3" "timed out after 1 s"

# A rank that does not come back to the transport (here: a thread asleep in a signal handler
# inside a recv, as a thread stuck inside the provider would be): its watcher ends it 5 s after
# the news, with the message and the collective the thread was in.
run stuck 3 15 COMM_TEST_TIMEOUT=1 -- stuck 1
RANKS=1 expect stuck 3 "^error: rank 1: recv f32\[1000\] \(4\.0 kB\) for stuck\.dtl:7: .*timed out after 1 s" \
    "did not get out of the transport within 5 s: exiting"

# A rank that frees the world without finalizing, in the middle of the job.
run leave 3 30 -- leave 1
RANKS="0 2" expect leave 3 "rank 1 \(host [^,]*, pid [0-9]*\) failed: it left without finishing"

# Ranks that disagree about a collective's size: an error naming the sender, not a hang.
run count 2 30 -- count
expect count 2 "allreduce f32\[1[02]\]" "rank [01] \(host [^,]*, pid [0-9]*\) sent .*the ranks disagree"
grep -q "rank 1 (host [^,]*, pid [0-9]*) sent more than the 40 bytes expected" "$T/count.err0" ||
    { echo "FAIL: count: rank 0 does not say what it received"; show count; fail=1; }

# A transport that cannot be opened: rank 0 fails and says so to everyone.
run noprov 2 30 DTL_FABRIC_PROVIDER=nosuch -- hash 1
expect noprov 2 "could not open the transport: fi_getinfo: no libfabric provider 'nosuch'"
RANKS=1 expect noprov 2 "rank 0 \(host [^,]*, pid [0-9]*\) failed"

# Two jobs on one port: a rank of job B that reaches job A's rank 0 is turned away with a
# message; job A, whose rank 1 comes later, is not disturbed.
port=$(free_port)
DTL_RANK=0 DTL_WORLD_SIZE=2 DTL_COORDINATOR=127.0.0.1:$port DTL_JOB_ID=A "$W" hash 1 \
    > "$T/jobA.out0" 2> "$T/jobA.err0" &
a0=$!
DTL_RANK=1 DTL_WORLD_SIZE=2 DTL_COORDINATOR=127.0.0.1:$port DTL_JOB_ID=B "$W" hash 1 \
    > "$T/jobB.out1" 2> "$T/jobB.err1" &
b1=$!
all_pids="$all_pids $a0 $b1"
pids=$b1 procs=1:$b1 started=$(now)
reap 30
if [ "$rc_1" = 0 ] || ! grep -q "rank 1 (host [^,]*, pid $b1) of job 'B' reached rank 0 of another job ('A') on port $port" "$T/jobB.err1"; then
    echo "FAIL: jobs: job B's rank was not turned away"; show jobB; fail=1
fi
DTL_RANK=1 DTL_WORLD_SIZE=2 DTL_COORDINATOR=127.0.0.1:$port DTL_JOB_ID=A "$W" hash 1 \
    > "$T/jobA.out1" 2> "$T/jobA.err1" &
a1=$!
all_pids="$all_pids $a1"
pids="$a0 $a1" procs="0:$a0 1:$a1" started=$(now)
reap 30
if [ "$rc_0" = 0 ] && [ "$rc_1" = 0 ]; then
    echo "ok: jobs: job B turned away, job A unharmed"
else
    echo "FAIL: jobs: job A failed"; show jobA; fail=1
fi

# Nobody listening, and someone missing.
SKIP=0 start nocoord 2 DTL_TIMEOUT=1 -- hash 1
reap 30
RANKS=1 expect nocoord 2 "rank 1 could not reach the coordinator 127\.0\.0\.1:[0-9]* within 1 s"
SKIP=2 start missing 3 DTL_TIMEOUT=1 -- hash 1
reap 30
RANKS="0 1" expect missing 3 "timed out after 1 s \(DTL_TIMEOUT\) waiting for rank 2 of 3 to connect"
finish
