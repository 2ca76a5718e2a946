#!/bin/sh
# tests/train_errors.sh — `dtlc run` says clearly what is wrong, with the right exit status.
#
# Each case runs dtlc and checks its exit status (0 done, 1 errors in the model, data or a
# checkpoint, 2 usage or I/O) and that stderr has the expected message: a missing data set
# names every place searched; corrupt, foreign and mismatched checkpoints are named with what
# is wrong; options that do not fit are refused before anything runs.
. "$(dirname "$0")/train_lib.sh"

toy_data "$T" 64 1 train.csv
toy_data "$T" 20 2 test.csv
toy_model "$T/net.dtl" 8 0
toy_model "$T/wide.dtl" 12 0

# expect STATUS 'MESSAGE (grep -F)' dtlc-args...
expect() {
    want=$1 msg=$2
    shift 2
    "$DTLC" "$@" > "$T/out" 2> "$T/err"
    got=$?
    if [ "$got" != "$want" ]; then
        echo "FAIL: 'dtlc $*' exited $got, expected $want; stderr:"
        sed 's/^/    /' "$T/err"
        fail=1
    elif [ -n "$msg" ] && ! grep -qF -- "$msg" "$T/err"; then
        echo "FAIL: 'dtlc $*': stderr lacks '$msg'; it says:"
        sed 's/^/    /' "$T/err"
        fail=1
    fi
}
R="run --progress none"

# Data.
sed 's/csv("train.csv", label = "label", test = "test.csv")/idx("no-such-set", scale = 1\/255)/' \
    "$T/net.dtl" > "$T/idx.dtl"
expect 2 "dataset 'no-such-set' not found; looked in $T/nowhere/no-such-set" \
    $R "$T/idx.dtl" --data "$T/nowhere"
DTL_DATA="$T/nodata" expect 2 "looked in $T/nodata/no-such-set, /usr/share/datasets/no-such-set" \
    $R "$T/idx.dtl"
rm "$T/test.csv"
expect 2 "test.csv" $R "$T/net.dtl"
toy_data "$T" 20 2 test.csv
expect 2 "toy.train has 10 rows, fewer than one batch of 16" $R "$T/net.dtl" --limit-train 10

# A run that diverges stops and says so (and saves nothing).
sed 's/adam(lr = 1e-2)/sgd(lr = 1e30)/' "$T/net.dtl" > "$T/diverge.dtl"
expect 1 "training diverged (a lower learning rate may help); nothing saved" \
    $R "$T/diverge.dtl" --save "$T/diverged.st"
[ -e "$T/diverged.st" ] && { echo "FAIL: a diverged run saved a checkpoint"; fail=1; }

# Checkpoints: a good one to spoil.
check "a checkpoint to spoil" "$DTLC" $R "$T/net.dtl" --steps 3 --save "$T/good.st" || finish
head -c 300 "$T/good.st" > "$T/trunc.st"
expect 1 "trunc.st: truncated" $R "$T/net.dtl" --resume "$T/trunc.st"
printf 'not a safetensors file at all' > "$T/junk.st"
expect 1 "junk.st:" $R "$T/net.dtl" --resume "$T/junk.st"
expect 2 "missing.st" $R "$T/net.dtl" --resume "$T/missing.st"
expect 1 "checkpoint $T/good.st does not match this model: fc1.w is f32[16, 8] there, f32[16, 12] here" \
    $R "$T/wide.dtl" --resume "$T/good.st"
expect 1 "does not match this model: fc1.w is f32[16, 8] there, f32[16, 12] here" \
    $R "$T/wide.dtl" --infer --load "$T/good.st" --input "$T/x.npy" --output "$T/y.npy"
expect 1 "does not match this model: fc1.w is f32[16, 8] there, f64[16, 8] here" \
    $R "$T/net.dtl" --resume "$T/good.st" --dtype f64
# A weights file of another writer (no dtl metadata) is for --load, not --resume.
sed 's/"format":"dtl.checkpoint.v1"/"format":"someone.else.v1xx"/' "$T/good.st" > "$T/other.st"
expect 1 "other.st: not a dtl checkpoint" $R "$T/net.dtl" --resume "$T/other.st"
expect 0 "" $R "$T/net.dtl" --load "$T/other.st" --steps 1
sed 's/"epoch_step":"3"/"epoch_step":"x"/' "$T/good.st" > "$T/meta.st"
expect 1 "meta.st: corrupt checkpoint: metadata 'epoch_step' is 'x', not a number" \
    $R "$T/net.dtl" --resume "$T/meta.st"
expect 2 "--seed 9 differs from the seed of checkpoint" $R "$T/net.dtl" --resume "$T/good.st" --seed 9
expect 2 "written in the middle of an epoch; resuming it needs the same batch size" \
    $R "$T/net.dtl" --resume "$T/good.st" --batch 8

# Options.
expect 2 "--infer needs --load W.safetensors" $R "$T/net.dtl" --infer
expect 2 "--infer needs --input X.npy" $R "$T/net.dtl" --infer --load "$T/good.st"
expect 2 "--infer needs --output Y.npy" $R "$T/net.dtl" --infer --load "$T/good.st" --input "$T/x.npy"
expect 2 "--save is for training, not with --infer" $R "$T/net.dtl" --infer --load "$T/good.st" \
    --input "$T/x.npy" --output "$T/y.npy" --save "$T/s.st"
expect 2 "--input is for --infer" $R "$T/net.dtl" --input "$T/x.npy"
expect 2 "--epochs expects a positive number, found '0'" $R "$T/net.dtl" --epochs 0
expect 2 "--steps expects a number, found '-1'" $R "$T/net.dtl" --steps -1
expect 2 "--checkpoint-every expects a positive number of steps, or of epochs as Ne (1e), found '2x'" \
    $R "$T/net.dtl" --checkpoint-every 2x --save "$T/s.st"
expect 2 "--checkpoint-every needs --save" $R "$T/net.dtl" --checkpoint-every 2
expect 2 "--resume and --load both give the starting weights" $R "$T/net.dtl" \
    --resume "$T/good.st" --load "$T/good.st"
expect 2 "--dtype expects f32 or f64, found 'f16'" $R "$T/net.dtl" --dtype f16
expect 2 "--progress expects auto, bar, plain or none, found 'loud'" run "$T/net.dtl" --progress loud
expect 2 "unknown backend 'tpu'; this build has: " $R "$T/net.dtl" --backend tpu
expect 2 "--seed expects a number from 0 to 2^64-1, found 'x'" $R "$T/net.dtl" --seed x
expect 2 "unknown option '--epoch' for 'run'; did you mean '--epochs'?" $R "$T/net.dtl" --epoch 3
expect 2 "option '--save' needs a value" $R "$T/net.dtl" --save
expect 2 "'run' needs a FILE" $R
expect 2 "'run' takes one FILE, found 2" $R "$T/net.dtl" "$T/wide.dtl"
printf 'use nn\nmodel M() { fc = nn.Dense(2, 2) }\n' > "$T/notrain.dtl"
expect 1 "has no train block: nothing to run" $R "$T/notrain.dtl"
printf 'train Nothing() {}\n' > "$T/bad.dtl"
expect 1 "bad.dtl:1:" $R "$T/bad.dtl"
# A metrics file that cannot be written is named.
expect 2 "$T/nodir/m.jsonl: cannot open" $R "$T/net.dtl" --metrics "$T/nodir/m.jsonl"
# A checkpoint that could not be saved is found out before training, not after it.
expect 2 "--save $T/nodir/w.st: cannot write in $T/nodir/" $R "$T/net.dtl" --save "$T/nodir/w.st"
[ -s "$T/out" ] && { echo "FAIL: trained although --save cannot be written"; fail=1; }
# Settings that are checked but not acted on yet are named, not silently dropped.
sed '$ s/^}$/    parallel = data(2) * tensor(2)\n    device = cuda(0)\n}/' "$T/net.dtl" > "$T/par.dtl"
expect 0 "parallel = data(2) * tensor(2) is not acted on yet" $R "$T/par.dtl" --steps 1
# (on a machine with a usable GPU the setting is acted on: the cuda backend trains)
if ! nvidia-smi -L >/dev/null 2>&1; then
    expect 0 "device = cuda(0) is not acted on yet" $R "$T/par.dtl" --steps 1
fi
finish
