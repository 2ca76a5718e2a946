#!/bin/sh
# tests/train_repro.sh — the same seed gives the same run; another seed another run.
#
# Two runs of the toy model (dropout, shuffled epochs) with --seed 11 must write the same
# metrics lines (less their timings), print the same summary lines (likewise) and save the
# same checkpoint, byte for byte; a run with --seed 12 must differ in its metrics. The seed
# written in the train block (`seed = 11`) is the same as --seed 11, and --seed overrides it.
. "$(dirname "$0")/train_lib.sh"

toy_data "$T" 160 3 train.csv
toy_data "$T" 40 4 test.csv
toy_model "$T/net.dtl" 24 0.3
sed 's/^    epochs    = 2$/    epochs    = 2\n    seed      = 11/' "$T/net.dtl" > "$T/seeded.dtl"
grep -q 'seed      = 11' "$T/seeded.dtl" || { echo "FAIL: could not write seeded.dtl"; exit 99; }

summary() { sed 's/  seconds .*//' "$T/out" > "$1"; }

for i in 1 2; do
    check "run $i" "$DTLC" run "$T/net.dtl" --progress none --seed 11 --epochs 3 \
        --metrics "$T/m$i.jsonl" --save "$T/w$i.st" && summary "$T/out$i"
    untimed "$T/m$i.jsonl" > "$T/m$i.u"
done
same "metrics of two runs with one seed" "$T/m1.u" "$T/m2.u"
same "summary lines of two runs with one seed" "$T/out1" "$T/out2"
same "weights of two runs with one seed" "$T/w1.st" "$T/w2.st"
[ "$(wc -l < "$T/m1.u")" -eq 3 ] || { echo "FAIL: expected 3 metrics lines:"; cat "$T/m1.u"; fail=1; }

check "seed 12" "$DTLC" run "$T/net.dtl" --progress none --seed 12 --epochs 3 \
    --metrics "$T/m3.jsonl"
untimed "$T/m3.jsonl" > "$T/m3.u"
cmp -s "$T/m1.u" "$T/m3.u" && { echo "FAIL: seeds 11 and 12 gave the same metrics"; fail=1; }

check "seed in the train block" "$DTLC" run "$T/seeded.dtl" --progress none --epochs 3 \
    --metrics "$T/m4.jsonl"
untimed "$T/m4.jsonl" > "$T/m4.u"
same "seed = 11 in the train block vs --seed 11" "$T/m1.u" "$T/m4.u"
check "--seed over the train block" "$DTLC" run "$T/seeded.dtl" --progress none --epochs 3 \
    --seed 12 --metrics "$T/m5.jsonl"
untimed "$T/m5.jsonl" > "$T/m5.u"
same "--seed 12 overriding seed = 11" "$T/m3.u" "$T/m5.u"

# Every metrics line is one JSON object with the documented keys.
for k in epoch train_loss test_loss test_accuracy seconds samples_per_s; do
    n=$(grep -c "^{.*\"$k\": [-0-9.e]*[,}]" "$T/m1.jsonl")
    [ "$n" -eq 3 ] || { echo "FAIL: key $k is not in every metrics line:"; cat "$T/m1.jsonl"; fail=1; }
done
finish
