#!/bin/sh
# tests/precision.sh — mixed precision end to end (docs/training.md "Mixed precision"):
# examples/mnist_mlp.dtl trains on a slice of Fashion-MNIST (3000 rows, 2 epochs, LLVM
# backend) with --precision f32, bf16 and tf32. bf16 and tf32 must track the f32 run: the
# last epoch's train and test loss within 3% of f32's (measured: 0.1 to 1.1%; rounding
# anything at all moves a short run's trajectory about that much), and the test accuracy
# within 0.03; bf16 must NOT be bit-identical to f32 (the rounding took place).
# `precision = bf16` written in the train block gives the same numbers as --precision bf16,
# and --precision f32 on that file gives f32's. The checkpoint of a bf16 run holds f32
# weights (dtype F32: master weights). The reference backend agrees with LLVM on a short
# bf16 run (loss within 1%). Bad values are refused with a message: --precision fp8 (usage,
# exit 2) and `precision = fp8` in the file (a diagnostic with its place, exit 1). Skips (77)
# without the data (Debian's dataset-fashion-mnist, or $DTL_DATA/fashion-mnist).
. "$(dirname "$0")/train_lib.sh"
SRC=${DTL_SRCDIR:-$(dirname "$0")/..}
EX=$(cd "$SRC/examples" && pwd)
DATA=${DTL_DATA:-/usr/share/datasets}
if [ ! -d "$DATA/fashion-mnist" ]; then
    echo "SKIP: no $DATA/fashion-mnist (apt-get install dataset-fashion-mnist)"
    exit 77
fi
case $DTLC in /*) ;; *) DTLC=$(pwd)/$DTLC ;; esac
cd "$T" || exit 99
slice="--limit-train 3000 --limit-test 1000 --epochs 2 --progress none"
for p in f32 bf16 tf32; do
    # shellcheck disable=SC2086
    check "mlp --precision $p" "$DTLC" run "$EX/mnist_mlp.dtl" $slice --precision $p \
        --metrics "$T/$p.jsonl" --save "$T/$p.safetensors" || finish
done
num() {   # num KEY FILE: the value of "KEY" in the last line of FILE
    tail -n 1 "$2" | sed -n "s/.*\"$1\": \([-0-9.e+]*\).*/\1/p"
}
near() {   # near WHAT A B REL: |A - B| <= REL * |B|
    if ! awk -v a="$2" -v b="$3" -v r="$4" 'BEGIN {
            d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b
            exit !(a != "" && b != "" && d <= r * m) }'; then
        echo "FAIL: $1: $2 is not within $4 (relative) of $3"
        fail=1
    fi
}
for p in bf16 tf32; do
    tol=0.03   # any perturbation moves a 2-epoch run by about 1% (tf32 too)
    near "$p train_loss" "$(num train_loss $p.jsonl)" "$(num train_loss f32.jsonl)" $tol
    near "$p test_loss" "$(num test_loss $p.jsonl)" "$(num test_loss f32.jsonl)" $tol
    awk -v a="$(num test_accuracy $p.jsonl)" -v b="$(num test_accuracy f32.jsonl)" \
        'BEGIN { d = a - b; exit !(d <= 0.03 && d >= -0.03) }' ||
        { echo "FAIL: $p test_accuracy $(num test_accuracy $p.jsonl) vs f32's" \
               "$(num test_accuracy f32.jsonl)"; fail=1; }
done
untimed f32.jsonl > a
untimed bf16.jsonl > b
if cmp -s a b; then
    echo "FAIL: the bf16 run computed exactly what the f32 run did"
    fail=1
fi
echo "f32:  $(untimed f32.jsonl | tail -n 1)"
echo "bf16: $(untimed bf16.jsonl | tail -n 1)"
echo "tf32: $(untimed tf32.jsonl | tail -n 1)"

# The checkpoint holds f32 master weights (and no bf16 tensor).
if ! head -c 1000 bf16.safetensors | grep -q '"fc1.w":{"dtype":"F32"' ||
   head -c 1000 bf16.safetensors | grep -q BF16; then
    echo "FAIL: the bf16 run's checkpoint is not f32:"
    head -c 400 bf16.safetensors
    fail=1
fi

# The setting in the file, and the option overriding it.
sed 's/^    epochs .*/&\n    precision = bf16/' "$EX/mnist_mlp.dtl" > mlp_bf16.dtl
grep -q 'precision = bf16' mlp_bf16.dtl || { echo "FAIL: could not write mlp_bf16.dtl"; exit 1; }
# shellcheck disable=SC2086
check "precision = bf16 in the file" "$DTLC" run mlp_bf16.dtl $slice --data "$DATA" \
    --metrics file.jsonl || finish
untimed file.jsonl > c
same "precision = bf16 against --precision bf16" b c
# shellcheck disable=SC2086
check "--precision f32 over the file's bf16" "$DTLC" run mlp_bf16.dtl $slice --data "$DATA" \
    --precision f32 --metrics over.jsonl || finish
untimed over.jsonl > c
same "--precision f32 against f32" a c

# The reference backend against LLVM, bf16, a short run.
short="--limit-train 640 --limit-test 200 --epochs 1 --progress none --precision bf16"
for b in llvm ref; do
    # shellcheck disable=SC2086
    check "bf16 on $b" "$DTLC" run "$EX/mnist_mlp.dtl" $short --backend $b \
        --metrics "$b.jsonl" || finish
done
near "bf16 train_loss, ref vs llvm" "$(num train_loss ref.jsonl)" "$(num train_loss llvm.jsonl)" 0.01
near "bf16 test_loss, ref vs llvm" "$(num test_loss ref.jsonl)" "$(num test_loss llvm.jsonl)" 0.01

# Refusals.
if "$DTLC" run "$EX/mnist_mlp.dtl" --precision fp8 > out 2> err; then
    echo "FAIL: --precision fp8 was accepted"
    fail=1
elif [ $? != 2 ] || ! grep -q "expects f32, tf32 or bf16, found 'fp8'" err; then
    echo "FAIL: --precision fp8: wrong status or message:"
    cat err
    fail=1
fi
sed 's/^    epochs .*/&\n    precision = fp8/' "$EX/mnist_mlp.dtl" > mlp_fp8.dtl
if "$DTLC" run mlp_fp8.dtl > out 2> err; then
    echo "FAIL: precision = fp8 was accepted"
    fail=1
elif ! grep -q "mlp_fp8.dtl:[0-9]*:17: error: precision must be f32, tf32 or bf16, found fp8" err; then
    echo "FAIL: precision = fp8: no diagnostic with its place:"
    cat err
    fail=1
fi
finish
