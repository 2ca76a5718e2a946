#!/bin/sh
# tests/train_text.sh — text(…) data sets and `dtlc run --infer --sample`.
#
# A small corpus (documents separated by "%" lines, written here) trains a bigram model,
# take(w, x): i64[B, T] -> f32[B, T, 256], for a few dozen steps: the loss must fall well
# below log(256) = 5.55 and the evaluation (every 3rd document) reports a per-character
# accuracy; two ranks (`dtlc run -n 2`, parallel = data) compute the same epochs as one.
# Then sampling: the same seed gives the same text, another seed another text, temperature 0
# the likeliest bytes, and the option errors. No installed data is needed.
. "$(dirname "$0")/train_lib.sh"

awk 'BEGIN { for (i = 0; i < 300; i++) { print "abcabc the cat " i % 7; print "%" } }' \
    > "$T/corpus.txt"
cat > "$T/bigram.dtl" <<'EOF2'
let T = 16
model Bigram {
    param w: f32[256, 256] = zeros()
    fn forward(x: i64[B, T]) -> f32[B, T, 256] = take(w, x)
}
dataset corpus = text("corpus.txt", context = T, separator = "%", test_every = 3)
train Bigram {
    data      = corpus.train
    batch     = 16
    loss      = cross_entropy(reshape(forward(x), [B * T, 256]), reshape(y, [B * T]))
    optimizer = adam(lr = 0.1)
    epochs    = 2
    evaluate  = accuracy(corpus.test)
}
EOF2
check "training" "$DTLC" run "$T/bigram.dtl" --progress none --save "$T/w.st" || finish
last=$(tail -n 1 "$T/out")
loss=$(echo "$last" | sed -n 's/.*test_loss \([0-9.]*\).*/\1/p')
acc=$(echo "$last" | sed -n 's/.*test_accuracy \([0-9.]*\).*/\1/p')
if [ -z "$loss" ] || ! awk -v l="$loss" -v a="$acc" 'BEGIN { exit !(l < 1.5 && a > 0.4) }'; then
    echo "FAIL: the bigram did not learn the corpus: $last"
    fail=1
fi

# Sharded over 2 ranks (parallel = data): the same windows, so the same numbers as one rank.
sed 's/^    evaluate  = accuracy(corpus.test)$/&\n    parallel  = data/' "$T/bigram.dtl" > "$T/ddp.dtl"
check "one rank" "$DTLC" run "$T/ddp.dtl" --progress none && sed 's/  seconds.*//' "$T/out" > "$T/r1"
check "two ranks" "$DTLC" run -n 2 "$T/ddp.dtl" --progress none &&
    sed -n 's/^\[0\] \(epoch.*\)  seconds.*/\1/p' "$T/out" > "$T/r2"
grep -q "parallel  = data" "$T/ddp.dtl" && [ -s "$T/r1" ] ||
    { echo "FAIL: the data-parallel run compared nothing"; fail=1; }
same "one rank and two ranks" "$T/r1" "$T/r2"

sample() {   # sample NAME ARGS...: the text sampled into $T/NAME
    name=$1
    shift
    check "sampling ($*)" "$DTLC" run "$T/bigram.dtl" --infer --load "$T/w.st" "$@" &&
        cp "$T/out" "$T/$name"
}
sample s1 --sample 80 --prompt "abc" --seed 1
sample s1b --sample 80 --prompt "abc" --seed 1
sample s2 --sample 80 --prompt "abc" --seed 2
sample g --sample 12 --prompt "the c" --temperature 0
same "the same seed" "$T/s1" "$T/s1b"
if cmp -s "$T/s1" "$T/s2"; then
    echo "FAIL: seeds 1 and 2 sampled the same text"
    fail=1
fi
case $(head -c 3 "$T/s1") in abc) ;; *) echo "FAIL: the sample does not start with the prompt"; fail=1 ;; esac
[ "$(wc -c < "$T/s1")" -ge 83 ] || { echo "FAIL: the sample is short: $(cat "$T/s1")"; fail=1; }
# greedy: after 'c' the corpus has 'a' most often ("abcabc"), after 'a' always 'b'
[ "$(head -c 8 "$T/g")" = "the cabc" ] || { echo "FAIL: greedy sampling: '$(cat "$T/g")'"; fail=1; }

# Errors: --sample without --infer, with --input, a model of floats.
expect_error() {   # expect_error WHAT TEXT ARGS...
    what=$1 text=$2
    shift 2
    if "$DTLC" run "$@" > "$T/out" 2> "$T/err"; then
        echo "FAIL: $what: succeeded"
        fail=1
    elif ! grep -q -- "$text" "$T/err"; then
        echo "FAIL: $what: no '$text' in:"
        cat "$T/err"
        fail=1
    fi
}
expect_error "--sample without --infer" "--sample is for --infer" "$T/bigram.dtl" --sample 5
expect_error "--sample with --input" "takes no --input" "$T/bigram.dtl" --infer \
    --load "$T/w.st" --sample 5 --input x.npy
expect_error "--prompt without --sample" "--prompt needs --sample" "$T/bigram.dtl" --infer \
    --load "$T/w.st" --prompt x --input x.npy --output y.npy
sed 's/accuracy(corpus.test)/accuracy(corpus.test, k = 5)/' "$T/bigram.dtl" > "$T/topk.dtl"
expect_error "top-k accuracy of text" "accuracy with k > 1 needs scores of shape" "$T/topk.dtl" \
    --steps 1
toy_data "$T" 40 3 train.csv
toy_data "$T" 20 4 test.csv
toy_model "$T/net.dtl" 8 0
check "toy training" "$DTLC" run "$T/net.dtl" --progress none --epochs 1 --save "$T/n.st"
expect_error "--sample on a table model" "needs a model of byte windows" "$T/net.dtl" --infer \
    --load "$T/n.st" --sample 5
finish
