#!/bin/sh
# tests/launch.sh — `dtlc run -n N` (compiler/launch.c): the ranks it starts, their output,
# their exit, what it leaves behind.
#   usage errors (-n 0, -n 257, -n x, --infer, FILE '-', repl, -n under another launcher)
#   each rank's argv and environment; "[r] " before every line, stdout to stdout and stderr to
#   stderr, whole lines only (ranks writing lines in pieces at once), a last line without "\n"
#   exit statuses: all 0; one rank exits 3; one is killed; ranks that outlive a failure by
#   DTL_TIMEOUT + 5 s get SIGTERM, and SIGKILL 5 s later when they ignore it
#   a real data-parallel run (3 ranks, shm): kill -9 of rank 1 mid-epoch, SIGINT to the
#   launcher, SIGKILL of the launcher — every process gone, no shm region left, the
#   survivors' messages name the dead rank
#   -n 1 saves what a plain run saves; `mpirun -np 2 dtlc run` what `dtlc run -n 2` saves
#   rank 0's progress bar on a terminal (script(1)), redrawn with its prefix
# Every launcher runs in a session of its own (setsid), so "nothing left" is checked on the
# whole session. DTL_LAUNCH_CHILD (a test hook of launch.c) makes the ranks run sh instead.
. "$(dirname "$0")/train_lib.sh"

W=${DTL_BUILDDIR:-.}/tests/unit/comm_worker
fabric=1
if [ ! -x "$W" ] || ! "$W" probe > /dev/null 2>&1; then
    fabric=0
fi
for tool in setsid ps; do
    command -v "$tool" > /dev/null || { echo "SKIP: no $tool"; exit 77; }
done
pids_left=
cleanup_launch() {
    for p in $pids_left; do
        kill -KILL "$p" 2> /dev/null
    done
    rm -rf "$T"
}
trap cleanup_launch EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
bad() {
    echo "FAIL: $*"
    fail=1
}

# expect_usage WHAT REGEX ARGS…: dtlc exits 2 and says REGEX on stderr.
expect_usage() {
    what=$1 re=$2
    shift 2
    "$@" > "$T/u.out" 2> "$T/u.err" < /dev/null
    rc=$?
    if [ "$rc" != 2 ] || ! grep -Eq -- "$re" "$T/u.err"; then
        bad "$what: status $rc (want 2), stderr:"
        sed 's/^/    /' "$T/u.err"
    else
        echo "ok: $what: $(head -n 1 "$T/u.err")"
    fi
}

# launch NAME COMMAND…: starts COMMAND (dtlc, or env VAR=VALUE… dtlc) in a session of its
# own, in the background; its stdout and stderr in $T/NAME.out, $T/NAME.err. Sets lpid, lsid,
# started. (setsid, and env, exec in place: $! is the launcher's pid.)
launch() {
    name=$1
    shift
    setsid "$@" > "$T/$name.out" 2> "$T/$name.err" < /dev/null &
    lpid=$!
    pids_left="$pids_left $lpid"
    lsid=$lpid   # setsid execs in place: the launcher leads the session
    started=$(now)
}

# finished LIMIT: waits up to LIMIT s for the launcher; lrc = its status (124: still running,
# then killed). secs = how long it took.
finished() {
    limit=$1
    while kill -0 "$lpid" 2> /dev/null && [ "$(elapsed "$started" | cut -d. -f1)" -lt "$limit" ]; do
        if [ "$(awk '{ print $3 }' "/proc/$lpid/stat" 2> /dev/null)" = Z ]; then
            break
        fi
        sleep 0.1
    done
    secs=$(elapsed "$started")
    if kill -0 "$lpid" 2> /dev/null && [ "$(awk '{ print $3 }' "/proc/$lpid/stat" 2> /dev/null)" != Z ]; then
        kill -KILL "$lpid"
        wait "$lpid" 2> /dev/null
        lrc=124
        return
    fi
    wait "$lpid" 2> /dev/null
    lrc=$?
}

# session_empty WHAT: no process of the launcher's session may be left (waits up to 3 s for
# the last ones to go: children that got SIGTERM from the kernel when the launcher died).
session_empty() {
    i=0
    while [ "$i" -lt 30 ]; do
        left=$(ps -eo pid=,sid=,stat=,args= | awk -v s="$lsid" '$2 == s && $3 !~ /^Z/')
        [ -z "$left" ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    bad "$1: processes left in the launcher's session:"
    echo "$left" | sed 's/^/    /'
    for p in $(echo "$left" | awk '{ print $1 }'); do
        kill -KILL "$p" 2> /dev/null
    done
}

# no_shm WHAT PID…: none of the pids left a libfabric shm region (/dev/shm/PID:…).
no_shm() {
    what=$1
    shift
    for p in "$@"; do
        if ls /dev/shm/"$p":* > /dev/null 2>&1; then
            bad "$what: pid $p left its shm region: $(ls /dev/shm/"$p":*)"
            rm -f /dev/shm/"$p":*
        fi
    done
}

# rank_pids: "rank:pid" of the launcher's children (from their DTL_RANK).
rank_pids() {
    for c in $(ps -o pid= --ppid "$lpid"); do
        r=$(tr '\0' '\n' < "/proc/$c/environ" 2> /dev/null | sed -n 's/^DTL_RANK=//p')
        [ -n "$r" ] && echo "$r:$c"
    done
}

# wait_for FILE REGEX LIMIT: until FILE has a line matching REGEX (false after LIMIT s).
wait_for() {
    i=0
    while ! grep -Eq -- "$2" "$1" 2> /dev/null; do
        i=$((i + 1))
        [ "$i" -gt $(($3 * 10)) ] && return 1
        kill -0 "$lpid" 2> /dev/null || return 1
        sleep 0.1
    done
}

toy_data "$T" 240 7 train.csv
toy_data "$T" 48 11 test.csv
cat > "$T/par.dtl" <<'EOF'
# Data parallel, without the stdlib (written by tests/launch.sh).
model Net(hidden: int = 8) {
    param w1: f32[16, hidden] = glorot_uniform()
    param b1: f32[hidden]     = zeros()
    param w2: f32[hidden, 4]  = glorot_uniform()
    param b2: f32[4]          = zeros()
    fn forward(x: f32[B, 16]) -> f32[B, 4] = relu(x @ w1 + b1) @ w2 + b2
}

dataset toy = csv("train.csv", label = "label", test = "test.csv")

train Net() {
    data      = toy.train
    batch     = 24
    loss      = cross_entropy(forward(x), y)
    optimizer = adam(lr = 1e-2)
    epochs    = 2
    parallel  = data
    evaluate  = accuracy(toy.test)
}
EOF
M=$T/par.dtl

# ---- usage errors ----
expect_usage "-n 0" "-n expects a number of ranks from 1 to 256, found '0'" "$DTLC" run -n 0 "$M"
expect_usage "-n 257" "-n expects a number of ranks from 1 to 256, found '257'" "$DTLC" run -n257 "$M"
expect_usage "-n x" "-n expects a number of ranks" "$DTLC" run -n x "$M"
expect_usage "-n --infer" "-n and --infer do not go together" "$DTLC" run -n 2 --infer "$M"
expect_usage "-n -" "-n needs a FILE: its ranks cannot all read standard input" "$DTLC" run -n 2 -
expect_usage "repl -n" "unknown option '-n' for 'repl'" "$DTLC" repl -n 2
expect_usage "-n under a launcher" "this process is already rank 1 of 2 \(from Open MPI's variables\)" \
    env OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_LOCAL_SIZE=2 \
    "$DTLC" run -n 2 "$M"

# ---- argv, environment, prefixes, whole lines ----
fail0=$fail
# Each rank prints its argv and identity, then 300 lines to stdout and to stderr, each written
# in three pieces, all ranks at once; then a line without "\n". The launcher's own DTL_RANK and
# DTL_WORLD_SIZE (a world of 1) must not reach them.
child='
echo "argv: $*"
echo "id: $DTL_RANK $DTL_WORLD_SIZE $DTL_LOCAL_RANK $DTL_COORDINATOR $DTL_JOB_ID $DTL_THREADS"
i=0
while [ $i -lt 300 ]; do
    printf "piece-%s-" "$DTL_RANK"; printf "abc"; printf "def\n"
    printf "epiece-%s-" "$DTL_RANK" >&2; printf "abc" >&2; printf "def\n" >&2
    i=$((i + 1))
done
printf "tail %s" "$DTL_RANK"'
launch relay env DTL_RANK=0 DTL_WORLD_SIZE=1 DTL_LAUNCH_CHILD="$child" \
    "$DTLC" run -n 3 --steps 5 --seed=9 -- "$M"
finished 30
O=$T/relay.out E=$T/relay.err
[ "$lrc" = 0 ] || bad "relay: status $lrc"
for r in 0 1 2; do
    n=$(grep -c "^\[$r\] piece-$r-abcdef\$" "$O")
    [ "$n" = 300 ] || bad "relay: rank $r: $n whole stdout lines of 300"
    n=$(grep -c "^\[$r\] epiece-$r-abcdef\$" "$E")
    [ "$n" = 300 ] || bad "relay: rank $r: $n whole stderr lines of 300"
    grep -q "^\[$r\] tail $r\$" "$O" || bad "relay: rank $r: the last line (no newline) is missing"
    prog=none
    [ "$r" = 0 ] && prog=plain   # stderr is a file here
    grep -qx "\[$r\] argv: run --progress=$prog --color=never --steps 5 --seed=9 -- $M" "$O" ||
        bad "relay: rank $r's argv: $(grep "^\[$r\] argv" "$O")"
done
[ "$(grep -vc '^\[[0-2]\] ' "$O")" = 0 ] || bad "relay: stdout lines without a prefix"
[ "$(grep -vc '^\[[0-2]\] ' "$E")" = 0 ] || bad "relay: stderr lines without a prefix"
grep -q "^\[.\] piece" "$E" && bad "relay: stdout lines on stderr"
ids=$(sed -n 's/^\[\([0-2]\)\] id: //p' "$O" | sort)
port=$(echo "$ids" | awk 'NR == 1 { print $4 }')
case $port in 127.0.0.1:[0-9]*) ;; *) bad "relay: coordinator '$port'" ;; esac
th=$(($(nproc) / 3))   # the CPUs shared out
[ "$th" -lt 1 ] && th=1
want=$(printf '0 3 0 %s dtlc-%s %s\n1 3 1 %s dtlc-%s %s\n2 3 2 %s dtlc-%s %s' "$port" "$lpid" \
    "$th" "$port" "$lpid" "$th" "$port" "$lpid" "$th")
[ "$ids" = "$want" ] || { bad "relay: identities:"; echo "$ids"; echo "want:"; echo "$want"; }
[ "$fail" = "$fail0" ] && echo "ok: relay: 3 ranks x 600 lines whole and prefixed, argv and environment as expected ($secs s)"
launch bar env DTL_THREADS=5 DTL_LAUNCH_CHILD='echo "argv: $* threads $DTL_THREADS"' \
    "$DTLC" run -n 2 --progress=bar "$M"
finished 30
grep -qx "\[0\] argv: run --progress=bar --color=never $M threads 5" "$T/bar.out" &&
    grep -qx "\[1\] argv: run --progress=none --color=never $M threads 5" "$T/bar.out" ||
    bad "--progress=bar, DTL_THREADS=5: rank 0 draws the bar, the others nothing; DTL_THREADS kept: $(cat "$T/bar.out")"

# ---- exit statuses ----
launch exit3 env DTL_LAUNCH_CHILD='[ "$DTL_RANK" = 1 ] && exit 3; exit 0' "$DTLC" run -n 3 "$M"
finished 30
[ "$lrc" = 3 ] && grep -qx "dtlc: error: rank 1 exited with status 3" "$T/exit3.err" &&
    echo "ok: exit 3: $(cat "$T/exit3.err")" || bad "exit 3: status $lrc: $(cat "$T/exit3.err")"
launch killed env DTL_LAUNCH_CHILD='[ "$DTL_RANK" = 2 ] && kill -KILL $$; exit 0' \
    "$DTLC" run -n 3 "$M"
finished 30
[ "$lrc" = 137 ] && grep -qx "dtlc: error: rank 2 was killed by signal 9 (Killed)" "$T/killed.err" &&
    echo "ok: killed: $(cat "$T/killed.err")" || bad "killed: status $lrc: $(cat "$T/killed.err")"
# Rank 0 fails; rank 1 sleeps (SIGTERM after DTL_TIMEOUT + 5 s), rank 2 ignores SIGTERM too
# (SIGKILL 5 s later).
launch stuck env DTL_TIMEOUT=1 DTL_LAUNCH_CHILD='case $DTL_RANK in 0) exit 1 ;;
    1) exec sleep 60 ;; *) trap "" TERM; exec sleep 60 ;; esac' "$DTLC" run -n 3 "$M"
finished 30
S=$T/stuck.err
if [ "$lrc" = 1 ] && grep -q "ranks 1 and 2 still running 6 s after rank 0 failed: sending SIGTERM" "$S" &&
    grep -qx "dtlc: error: rank 0 exited with status 1" "$S" &&
    grep -qx "dtlc: note: then rank 1 was killed by signal 15 (Terminated) sent by dtlc" "$S" &&
    grep -qx "dtlc: note: then rank 2 was killed by signal 9 (Killed) sent by dtlc" "$S" &&
    awk -v s="$secs" 'BEGIN { exit !(s >= 10.5 && s < 20) }'; then
    echo "ok: stuck ranks stopped after ${secs} s"
else
    bad "stuck ranks: status $lrc after $secs s:"
    sed 's/^/    /' "$S"
fi
session_empty "stuck"

if [ "$fabric" = 0 ]; then
    echo "note: this build has no libfabric: no data-parallel runs"
    finish
fi

# ---- a real data-parallel run: kill -9 of rank 1 mid-epoch ----
launch kill9 env DTL_TIMEOUT=10 "$DTLC" run -n 3 "$M" --epochs 100000
if wait_for "$T/kill9.out" '^\[0\] epoch 3/' 60; then
    rp=$(rank_pids)
    victim=$(echo "$rp" | sed -n 's/^1://p')
    all=$(echo "$rp" | sed 's/^[0-9]*://')
    kill -KILL "$victim"
    started=$(now)
    finished 30
    K=$T/kill9.err
    if [ "$lrc" = 137 ] && grep -qx "dtlc: error: rank 1 was killed by signal 9 (Killed)" "$K" &&
        grep -qx "dtlc: note: then ranks 0 and 2 exited with status [12]" "$K" &&
        grep -Eq "^\[0\] dtlc: error: .*rank 1 \(host [^,]*, pid $victim\) died" "$K" &&
        grep -Eq "^\[2\] dtlc: error: .*rank 1 \(host [^,]*, pid $victim\) died" "$K" &&
        awk -v s="$secs" 'BEGIN { exit !(s < 10) }'; then
        echo "ok: kill -9 of rank 1: all gone ${secs} s later: $(grep '^\[0\]' "$K" | cut -c1-150)"
    else
        bad "kill -9 of rank 1: status $lrc after $secs s:"
        sed 's/^/    /' "$K"
    fi
    session_empty "kill -9"
    # shellcheck disable=SC2086
    no_shm "kill -9" $all
else
    bad "kill -9: the run did not get to epoch 3:"
    sed 's/^/    /' "$T/kill9.err"
fi

# ---- SIGINT to the launcher ----
launch int "$DTLC" run -n 3 "$M" --epochs 100000
if wait_for "$T/int.out" '^\[0\] epoch 2/' 60; then
    all=$(rank_pids | sed 's/^[0-9]*://')
    kill -INT "$lpid"
    started=$(now)
    finished 30
    if [ "$lrc" = 130 ] && grep -qx "dtlc: error: interrupted by signal 2 (Interrupt): stopped 3 ranks" "$T/int.err" &&
        awk -v s="$secs" 'BEGIN { exit !(s < 10) }'; then
        echo "ok: SIGINT: all gone ${secs} s later"
    else
        bad "SIGINT: status $lrc after $secs s:"
        sed 's/^/    /' "$T/int.err"
    fi
    session_empty "SIGINT"
    # shellcheck disable=SC2086
    no_shm "SIGINT" $all
else
    bad "SIGINT: the run did not get to epoch 2"
fi

# ---- the launcher killed: its ranks die with it (PR_SET_PDEATHSIG) ----
launch orphan "$DTLC" run -n 2 "$M" --epochs 100000
if wait_for "$T/orphan.out" '^\[0\] epoch 2/' 60; then
    all=$(rank_pids | sed 's/^[0-9]*://')
    fail0=$fail
    kill -KILL "$lpid"
    wait "$lpid" 2> /dev/null
    session_empty "launcher killed"
    # shellcheck disable=SC2086
    no_shm "launcher killed" $all
    [ "$fail" = "$fail0" ] && echo "ok: launcher killed: its ranks went too"
else
    bad "launcher killed: the run did not get to epoch 2"
fi

# ---- the same parameters: -n 1 and a plain run; mpirun -np 2 and -n 2 ----
fail0=$fail
check "plain run" "$DTLC" run "$M" --save "$T/plain.st" &&
    check "-n 1" "$DTLC" run -n 1 "$M" --save "$T/n1.st" && same "-n 1 vs a plain run" "$T/plain.st" "$T/n1.st"
check "-n 2" "$DTLC" run -n 2 "$M" --save "$T/n2.st"
grep -q "^\[0\] epoch 2/2 " "$T/out" || bad "-n 2: no epoch line from rank 0: $(cat "$T/out")"
grep -q "^\[1\]" "$T/out" && bad "-n 2: rank 1 wrote to stdout: $(cat "$T/out")"
[ "$fail" = "$fail0" ] && echo "ok: -n 1 saves what a plain run saves; -n 2 prints rank 0's lines only"
if command -v mpirun > /dev/null; then
    # Identity from OMPI_COMM_WORLD_* only (DTL_*, torchrun's and Slurm's variables cleared).
    fail0=$fail
    if check "mpirun -np 2" env -u DTL_RANK -u DTL_WORLD_SIZE -u DTL_COORDINATOR -u RANK \
        -u WORLD_SIZE -u SLURM_STEP_ID mpirun --allow-run-as-root --oversubscribe -np 2 \
        "$DTLC" run "$M" --save "$T/mpi.st"; then
        same "mpirun -np 2 vs -n 2" "$T/mpi.st" "$T/n2.st"
        [ "$fail" = "$fail0" ] && echo "ok: mpirun -np 2 saves what -n 2 saves"
    fi
else
    echo "note: no mpirun (Debian: openmpi-bin): the mpirun check is skipped"
fi

# ---- rank 0's bar on a terminal ----
if command -v script > /dev/null; then
    script -qec "$DTLC run -n 2 $M" /dev/null > "$T/tty.out" 2>&1 < /dev/null
    if grep -q "$(printf '\r')\[0\] epoch 1/2 \[" "$T/tty.out" &&
        ! grep -q "\[1\] epoch" "$T/tty.out" &&
        grep -q "\[0\] epoch 2/2  train_loss" "$T/tty.out"; then
        echo "ok: on a terminal rank 0 draws the bar, prefixed"
    else
        bad "terminal: no prefixed bar from rank 0:"
        sed -n l "$T/tty.out" | head -n 10
    fi
fi
finish
