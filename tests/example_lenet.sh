#!/bin/sh
# tests/example_lenet.sh — examples/lenet.dtl (conv2d, max pooling, dropout) runs a few
# steps on a small slice of Fashion-MNIST: the LLVM backend (im2col + GEMM convolutions)
# agrees with the reference backend on the metrics to float tolerance, and the same run
# twice prints the same numbers. The accuracy target (>= 90.5% in 10 epochs) is measured by
# running the example (README's examples table), not here. Skips (77) without the data
# (Debian's dataset-fashion-mnist, or $DTL_DATA/fashion-mnist).
. "$(dirname "$0")/train_lib.sh"
SRC=${DTL_SRCDIR:-$(dirname "$0")/..}
EX=$(cd "$SRC/examples" && pwd)
DATA=${DTL_DATA:-/usr/share/datasets}
if [ ! -d "$DATA/fashion-mnist" ]; then
    echo "SKIP: no $DATA/fashion-mnist (apt-get install dataset-fashion-mnist)"
    exit 77
fi
cd "$T" || exit 99
slice="--limit-train 96 --limit-test 64 --batch 16 --steps 4 --progress none"
for b in llvm ref; do
    # shellcheck disable=SC2086
    check "lenet on $b" "$DTLC" run "$EX/lenet.dtl" $slice --backend $b --metrics "$T/$b.jsonl" ||
        finish
done
# shellcheck disable=SC2086
check "lenet on llvm again" "$DTLC" run "$EX/lenet.dtl" $slice --metrics "$T/again.jsonl" || finish
untimed "$T/llvm.jsonl" > "$T/a"
untimed "$T/again.jsonl" > "$T/b"
same "lenet twice" "$T/a" "$T/b"
# llvm against ref: each metric within 1e-4 (relative); the accuracy exactly.
num() {   # num KEY FILE: the value of "KEY" in the last line of FILE
    tail -n 1 "$2" | sed -n "s/.*\"$1\": \([-0-9.e+]*\).*/\1/p"
}
for k in train_loss test_loss test_accuracy; do
    a=$(num $k "$T/llvm.jsonl")
    r=$(num $k "$T/ref.jsonl")
    if [ -z "$a" ] || [ -z "$r" ] ||
        ! awk -v a="$a" -v r="$r" 'BEGIN { d = a - r; if (d < 0) d = -d;
                                          m = r < 0 ? -r : r; exit !(d <= 1e-4 * m) }'; then
        echo "FAIL: $k on llvm ($a) and ref ($r) differ"
        fail=1
    fi
done
finish
