#!/bin/sh
# tests/example_char_transformer.sh — examples/char_transformer.dtl runs: a few training steps on a
# small slice of the fortunes corpus (its first 40 kB, every 10th fortune held out), the
# epoch line with a finite test loss, a checkpoint, and sampling from it with a prompt
# (--infer --sample). Quality is measured by running the example (README), not here.
. "$(dirname "$0")/train_lib.sh"
SRC=${DTL_SRCDIR:-$(dirname "$0")/..}
CORPUS=/usr/share/games/fortunes/fortunes
[ -f "$CORPUS" ] || { echo "SKIP: no $CORPUS (Debian package fortunes)"; exit 77; }

mkdir "$T/corpus" && head -c 40000 "$CORPUS" > "$T/corpus/slice" || exit 99
sed "s|\"/usr/share/games/fortunes\"|\"$T/corpus\"|" "$SRC/examples/char_transformer.dtl" \
    > "$T/ct.dtl" || exit 99
grep -q "$T/corpus" "$T/ct.dtl" || { echo "FAIL: the example's data path was not found"; exit 1; }

check "training" "$DTLC" run "$T/ct.dtl" --progress none --batch 4 --steps 3 \
    --limit-test 8 --save "$T/ct.st" || finish
line=$(grep '^epoch 1/' "$T/out")
echo "$line"
loss=$(echo "$line" | sed -n 's/.*test_loss \([0-9.]*\).*/\1/p')
[ -n "$loss" ] || { echo "FAIL: no test_loss in:"; cat "$T/out"; exit 1; }
# An untrained model over 256 bytes is near ln 256 = 5.55 nats; 3 steps cannot go far below.
awk -v l="$loss" 'BEGIN { exit !(l > 3 && l < 6.5) }' || { echo "FAIL: test_loss $loss"; exit 1; }

check "sampling" "$DTLC" run "$T/ct.dtl" --infer --load "$T/ct.st" --sample 40 \
    --prompt "Q:" --temperature 0.8 || finish
head -c 2 "$T/out" | grep -q '^Q:' || { echo "FAIL: the sample does not start with the prompt:"; cat "$T/out"; exit 1; }
n=$(wc -c < "$T/out")
[ "$n" -ge 42 ] || { echo "FAIL: $n bytes sampled (want the prompt and 40 more)"; cat "$T/out"; exit 1; }
finish
