#!/bin/sh
# tests/train_schedule.sh — learning-rate schedules, warmup and clip, end to end through
# `dtlc run`: the "lr" of each epoch's metrics line (its last update's) against values
# computed here from compiler/optim.h's formulas, and bitwise resume of a cosine run.
#
# 160 rows in batches of 16: 10 updates an epoch, so epoch k ends with update 10 k.
#  1. no schedule: lr 0.01 throughout;
#  2. step(every = 10, gamma = 0.5): 0.01, 0.005, 0.0025 (e = 9, 19, 29);
#  3. constant() with warmup = 25: 10/25, 20/25 of lr, then lr;
#  4. cosine(floor = 0.001) and warmup = 5 over the whole run: 3 epochs anneal over
#     30 - 5 = 25 updates, 2 epochs (--epochs 2) over 15: the length comes from the run;
#  5. cosine(steps = 12): e = 9, then held at the floor 0;
#  6. a cosine run stopped by --steps and resumed equals the straight run, byte for byte;
#  7. with SGD, clip = 1e-6 freezes training (train_loss stays at its first epoch's value
#     within 1e-4) where the unclipped run learns.
. "$(dirname "$0")/train_lib.sh"

toy_data "$T" 160 3 train.csv
toy_data "$T" 40 4 test.csv
toy_model "$T/base.dtl" 16 0

# variant NAME SETTINGS...: net.dtl with the settings added after the optimizer.
variant() {
    name=$1
    shift
    awk -v extra="$*" '{ print } /^    optimizer = / { n = split(extra, s, ";");
        for (i = 1; i <= n; i++) print "    " s[i] }' "$T/base.dtl" > "$T/$name.dtl"
}

# lrs FILE: the "lr" values of a metrics file, one a line.
lrs() {
    sed -n 's/.*"lr": \([^,}]*\).*/\1/p' "$1"
}

# expect WHAT FILE V1 V2 …: the metrics' lr values are these (relative error 1e-12).
expect() {
    what=$1
    file=$2
    shift 2
    lrs "$file" > "$T/got"
    if ! printf '%s\n' "$@" | paste "$T/got" - | awk -v n=$# '
        { k++; if ($1 == "" || $2 == "") bad = 1
          d = $1 - $2; if (d < 0) d = -d; m = $2 < 0 ? -$2 : $2
          if (d > 1e-12 * m + 1e-300) bad = 1 }
        END { exit bad || k != n }'; then
        echo "FAIL: $what: lr per epoch:"; paste "$T/got" - <<EOT
$(printf '%s\n' "$@")
EOT
        fail=1
    fi
}

run() {
    what=$1
    shift
    check "$what" "$DTLC" run "$@" --progress none --seed 3
}

pi=3.14159265358979323846
cosv() {   # cosv FLOOR LR E TOTAL: the cosine schedule's lr after e updates
    awk -v f="$1" -v lr="$2" -v e="$3" -v n="$4" -v pi="$pi" \
        'BEGIN { if (e > n) e = n; printf "%.17g\n", f + (lr - f) * ((1 + cos(e * (pi / n))) * 0.5) }'
}

variant plain ""
run "no schedule" "$T/plain.dtl" --epochs 3 --metrics "$T/plain.jsonl"
expect "no schedule" "$T/plain.jsonl" 0.01 0.01 0.01

variant step "schedule = step(every = 10, gamma = 0.5)"
run "step" "$T/step.dtl" --epochs 3 --metrics "$T/step.jsonl"
expect "step(every = 10, gamma = 0.5)" "$T/step.jsonl" 0.01 0.005 0.0025

variant warm "schedule = constant();warmup = 25"
run "warmup" "$T/warm.dtl" --epochs 3 --metrics "$T/warm.jsonl"
expect "constant() with warmup = 25" "$T/warm.jsonl" 0.004 0.008 0.01

variant cos "schedule = cosine(floor = 0.001);warmup = 5"
run "cosine over the run" "$T/cos.dtl" --epochs 3 --metrics "$T/cos3.jsonl" --save "$T/c3.st"
expect "cosine over 3 epochs" "$T/cos3.jsonl" "$(cosv 0.001 0.01 4 25)" \
    "$(cosv 0.001 0.01 14 25)" "$(cosv 0.001 0.01 24 25)"
run "cosine, 2 epochs" "$T/cos.dtl" --epochs 2 --metrics "$T/cos2.jsonl"
expect "cosine over 2 epochs" "$T/cos2.jsonl" "$(cosv 0.001 0.01 4 15)" "$(cosv 0.001 0.01 14 15)"

variant cos12 "schedule = cosine(steps = 12)"
run "cosine(steps = 12)" "$T/cos12.dtl" --epochs 3 --metrics "$T/cos12.jsonl"
expect "cosine(steps = 12)" "$T/cos12.jsonl" "$(cosv 0 0.01 9 12)" 0 0

# 6. Resume: the schedule depends only on the step counter (and the run's length).
run "cosine, stopped at 15" "$T/cos.dtl" --epochs 3 --steps 15 --save "$T/c15.st" \
    --metrics "$T/cosr.jsonl"
run "cosine, resumed" "$T/cos.dtl" --epochs 3 --resume "$T/c15.st" --save "$T/c3r.st" \
    --metrics "$T/cosr.jsonl"
same "a resumed cosine run" "$T/c3.st" "$T/c3r.st"
# its lines: epoch 1, epoch 2 stopped at update 15 (e = 9), then epochs 2 and 3 in full
expect "cosine, resumed" "$T/cosr.jsonl" "$(cosv 0.001 0.01 4 25)" "$(cosv 0.001 0.01 9 25)" \
    "$(cosv 0.001 0.01 14 25)" "$(cosv 0.001 0.01 24 25)"

# 7. clip (with SGD: Adam's steps do not scale with the gradient): a tiny norm keeps the
# weights (nearly) where they start; without it the model learns.
sed 's/adam(lr = 1e-2)/sgd(lr = 0.5)/' "$T/base.dtl" > "$T/sgd.dtl"
awk '{ print } /^    optimizer = / { print "    clip = 1e-6" }' "$T/sgd.dtl" > "$T/clip.dtl"
run "sgd" "$T/sgd.dtl" --epochs 3 --metrics "$T/sgd.jsonl"
run "clip" "$T/clip.dtl" --epochs 3 --metrics "$T/clip.jsonl"
loss() { sed -n 's/.*"train_loss": \([^,}]*\).*/\1/p' "$1" | tr '\n' ' '; }
loss "$T/clip.jsonl" | awk '{ d = $3 - $1; if (d < 0) d = -d; exit !(NF == 3 && d < 1e-4) }' ||
    { echo "FAIL: clip = 1e-6 should keep the loss: $(loss "$T/clip.jsonl")"; fail=1; }
loss "$T/sgd.jsonl" | awk '{ exit !(NF == 3 && $3 < $1 - 0.05) }' ||
    { echo "FAIL: the unclipped run should learn: $(loss "$T/sgd.jsonl")"; fail=1; }
finish
