#!/bin/sh
# tests/train_kill.sh — kill -9 at any moment leaves a checkpoint to resume from, and the
# resumed run is still the uninterrupted one.
#
# A toy model made big (16 -> 100000 -> 4: 25 MB of weights and Adam moments, so a
# checkpoint takes a while to write) trains with --checkpoint-every 1, resuming from its own
# checkpoint, and is killed with SIGKILL, round after round: each round once its first new
# checkpoint is in place, after a further random delay (in a step, or in a write: the test
# says how many kills left a temporary file behind). After each kill, resuming from the
# checkpoint must work (`--resume CK --steps 0` loads it and stops), and its step may never
# go back. At the end a run straight to the same step, without checkpoints, must save the very
# same file: every interruption was invisible.
#
# Environment: DTL_KILL_ROUNDS (default 8), DTL_KILL_SEED (default: the time; printed, to
# replay a failure).
. "$(dirname "$0")/train_lib.sh"
rounds=${DTL_KILL_ROUNDS:-8}
seed=${DTL_KILL_SEED:-$(date +%s)}
echo "train_kill.sh: seed $seed, $rounds rounds"

toy_data "$T" 64 5 train.csv
toy_data "$T" 16 6 test.csv
toy_model "$T/big.dtl" 100000 0.1
ck=$T/ck.safetensors
run="$DTLC run $T/big.dtl --progress none --epochs 1000"
pid=
trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$T"' EXIT

# where: prints the step of the checkpoint, or fails the test.
where() {
    if ! $run --resume "$ck" --steps 0 > "$T/wout" 2> "$T/werr"; then
        echo "FAIL: $1: the checkpoint cannot be resumed:"
        sed 's/^/    /' "$T/werr"
        exit 1
    fi
    sed -n 's/.*resumed from .* at epoch [0-9]*, step \([0-9]*\)$/\1/p' "$T/werr"
}

check "the first checkpoint" $run --steps 1 --save "$ck" || finish
prev=$(where "after the first run")
[ "$prev" = 1 ] || { echo "FAIL: the first checkpoint is at step '$prev', not 1"; exit 1; }

r=1 midwrite=0
while [ "$r" -le "$rounds" ]; do
    $run --resume "$ck" --checkpoint-every 1 --save "$ck" > /dev/null 2> "$T/err$r" &
    pid=$!
    # Wait for the run's first new checkpoint (a rename gives the file a new inode), so every
    # round gets further, then kill it at a random moment of the steps and writes after it.
    ino=$(stat -c %i "$ck")
    waited=0
    while [ "$(stat -c %i "$ck")" = "$ino" ] && [ "$waited" -lt 400 ] && kill -0 "$pid" 2>/dev/null; do
        sleep 0.05
        waited=$((waited + 1))
    done
    delay=$(awk -v s="$seed" -v r="$r" 'BEGIN { srand(s * 100 + r); printf "%.3f", 0.6 * rand() }')
    sleep "$delay"
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pid=
    if grep -q error "$T/err$r"; then
        echo "FAIL: round $r: the run failed before it was killed:"
        sed 's/^/    /' "$T/err$r"
        exit 1
    fi
    now=$(where "round $r (killed after ${delay}s)")
    if [ -z "$now" ] || [ "$now" -lt "$prev" ]; then
        echo "FAIL: round $r: the checkpoint went from step $prev back to '$now'"
        fail=1
        break
    fi
    prev=$now
    # A temporary file left behind: this kill came in the middle of a write.
    for f in "$ck".tmp-*; do
        [ -e "$f" ] && midwrite=$((midwrite + 1)) && rm -f "$f"
    done
    r=$((r + 1))
done
echo "train_kill.sh: reached step $prev; $midwrite of $rounds kills came in the middle of a write"

check "a straight run to step $prev" $run --steps "$prev" --save "$T/straight.safetensors" &&
    same "killed and resumed $rounds times vs straight" "$T/straight.safetensors" "$ck"
finish
