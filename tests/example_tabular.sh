#!/bin/sh
# tests/example_tabular.sh — examples/linear_regression.dtl and examples/breast_cancer.dtl
# run (a few epochs), and the CSV features they use: float targets (regression = true), a
# preamble line (skip = 1), the held-out 20% (test = 0.2) and standardization.
#
# linear_regression (data shipped in examples/data) always runs, from another directory (its
# data path is relative to the .dtl file): the loss must get near the noise (< 0.05). The
# breast-cancer table comes from Debian's python3-sklearn: without it that part is skipped
# (exit 77 when nothing else ran). With it: both train blocks (logistic regression, the
# default, and --train mlp) reach >= 90% test accuracy in 3 epochs, the same run twice
# prints the same numbers, and a broken row is reported with file:line:column.
. "$(dirname "$0")/train_lib.sh"
SRC=${DTL_SRCDIR:-$(dirname "$0")/..}
EX=$(cd "$SRC/examples" && pwd)

cd "$T" || exit 99
check "linear_regression" "$DTLC" run "$EX/linear_regression.dtl" --progress none || finish
loss=$(tail -n 1 "$T/out" | sed -n 's/.*train_loss \([0-9.]*\).*/\1/p')
if [ -z "$loss" ] || ! awk -v l="$loss" 'BEGIN { exit !(l < 0.05) }'; then
    echo "FAIL: linear_regression did not fit: $(tail -n 1 "$T/out")"
    fail=1
fi

CSV=/usr/lib/python3/dist-packages/sklearn/datasets/data/breast_cancer.csv
if [ ! -r "$CSV" ]; then
    echo "SKIP (part): $CSV is missing (apt-get install python3-sklearn)"
    [ "$fail" = 0 ] && exit 77
    finish
fi
acc_of() {   # the test_accuracy of the last line of $T/out
    tail -n 1 "$T/out" | sed -n 's/.*test_accuracy \([0-9.]*\).*/\1/p'
}
for block in logreg mlp; do
    check "breast_cancer $block" "$DTLC" run "$EX/breast_cancer.dtl" --train $block \
        --epochs 3 --progress none || continue
    cp "$T/out" "$T/first"
    acc=$(acc_of)
    if [ -z "$acc" ] || ! awk -v a="$acc" 'BEGIN { exit !(a >= 0.9) }'; then
        echo "FAIL: breast_cancer $block: test accuracy $acc after 3 epochs"
        fail=1
    fi
    check "breast_cancer $block again" "$DTLC" run "$EX/breast_cancer.dtl" --train $block \
        --epochs 3 --progress none
    sed 's/  seconds.*//' "$T/first" > "$T/a"
    sed 's/  seconds.*//' "$T/out" > "$T/b"
    same "breast_cancer $block twice" "$T/a" "$T/b"
done

# A broken row: file:line:column and the cell.
sed '5s/^[^,]*,/17.5x,/' "$CSV" > "$T/broken.csv"
sed "s|$CSV|$T/broken.csv|" "$EX/breast_cancer.dtl" > "$T/broken.dtl"
if "$DTLC" run "$T/broken.dtl" --progress none > "$T/out" 2> "$T/err"; then
    echo "FAIL: a broken row was accepted"
    fail=1
elif ! grep -q "broken.csv:5:1: not a number: '17.5x'" "$T/err"; then
    echo "FAIL: the broken row's message:"
    cat "$T/err"
    fail=1
fi
finish
