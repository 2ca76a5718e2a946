#!/bin/sh
# tests/train_resume.sh — a resumed run is the uninterrupted run, bit for bit.
#
# The toy model has dropout (its mask depends on the seed and the step) and Adam (its state is
# in the checkpoint); the data has 200 rows, so an epoch is 12 steps of 16 and its order is a
# fresh shuffle each epoch. Checked, comparing whole checkpoint files (weights, optimizer
# moments and metadata) with cmp:
#  1. 4 epochs straight  ==  2 epochs, then --resume for 2 more (and the metrics files, less
#     their timings, are the same lines);
#  2. 4 epochs straight  ==  --steps 17 (stopped mid-epoch), then --resume to the end;
#  3. the same through the periodic checkpoints: --checkpoint-every 5 (steps) and 1e (epochs);
#  4. a resumed run that is already at its end changes nothing.
. "$(dirname "$0")/train_lib.sh"

toy_data "$T" 200 7 train.csv
toy_data "$T" 50 99 test.csv
toy_model "$T/net.dtl" 32 0.2
run() {
    what=$1
    shift
    check "$what" "$DTLC" run "$T/net.dtl" --progress none --seed 5 "$@"
}

# 1. Epoch boundary.
run straight --epochs 4 --save "$T/s4.st" --metrics "$T/ms.jsonl"
run "first half" --epochs 2 --save "$T/a2.st" --metrics "$T/ma.jsonl"
run "resumed half" --resume "$T/a2.st" --epochs 4 --save "$T/a4.st" --metrics "$T/ma.jsonl"
grep -q "resumed from .* at epoch 3, step 24" "$T/err" ||
    { echo "FAIL: the resumed run did not say where it resumed:"; cat "$T/err"; fail=1; }
same "resume at an epoch boundary" "$T/s4.st" "$T/a4.st"
untimed "$T/ms.jsonl" > "$T/ms.u"
untimed "$T/ma.jsonl" > "$T/ma.u"
same "metrics of the resumed run" "$T/ms.u" "$T/ma.u"
[ "$(wc -l < "$T/ms.u")" -eq 4 ] || { echo "FAIL: expected 4 metrics lines"; fail=1; }

# 2. Mid-epoch, from a --steps stop.
run "stop at step 17" --epochs 4 --steps 17 --save "$T/b.st"
grep -q '^epoch 2/4 (5 of 12 steps)' "$T/out" ||
    { echo "FAIL: no partial-epoch summary line:"; cat "$T/out"; fail=1; }
run "resume from step 17" --resume "$T/b.st" --epochs 4 --save "$T/b4.st"
same "resume in the middle of an epoch" "$T/s4.st" "$T/b4.st"

# 3. Periodic checkpoints: with --steps 20 the last one is written by the cadence itself
# (step 20, in the middle of epoch 2), then resumed with the cadence still on; and every epoch.
run "every 5 steps" --epochs 4 --steps 20 --checkpoint-every 5 --save "$T/c.st"
run "resume from the step checkpoint" --resume "$T/c.st" --epochs 4 --checkpoint-every 5 \
    --save "$T/c.st"
same "periodic step checkpoints" "$T/s4.st" "$T/c.st"
run "every epoch" --epochs 2 --checkpoint-every 1e --save "$T/e.st"
run "resume from the epoch checkpoint" --resume "$T/e.st" --epochs 4 --save "$T/e4.st"
same "periodic epoch checkpoints" "$T/s4.st" "$T/e4.st"

# 4. Nothing left to do.
cp "$T/s4.st" "$T/done.st"
run "resume at the end" --resume "$T/done.st" --epochs 4 --save "$T/done.st"
same "a finished run resumed" "$T/s4.st" "$T/done.st"
[ -s "$T/out" ] && { echo "FAIL: a finished run printed epochs:"; cat "$T/out"; fail=1; }
run "resume at the end, saved elsewhere" --resume "$T/done.st" --epochs 4 --save "$T/copy.st"
same "a finished run resumed and saved to another file" "$T/s4.st" "$T/copy.st"

# A different seed must give different weights (or the comparisons above prove nothing).
check "other seed" "$DTLC" run "$T/net.dtl" --progress none --seed 6 --epochs 4 --save "$T/o4.st"
cmp -s "$T/s4.st" "$T/o4.st" && { echo "FAIL: seeds 5 and 6 gave the same weights"; fail=1; }
finish
