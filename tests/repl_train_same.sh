#!/bin/sh
# tests/repl_train_same.sh — N steps of :train in `dtlc repl` are the first N steps of
# `dtlc run`: the checkpoints :save and `dtlc run --steps N --save` write are the same file,
# byte for byte (weights, optimizer state, position). And a REPL checkpoint resumes in
# `dtlc run`.
set -u
me=$(basename "$0")
script_dir=$(cd "$(dirname "$0")" && pwd)
srcdir=${DTL_SRCDIR:-$(cd "$script_dir/.." && pwd)}
if [ -z "${DTLC:-}" ]; then
    DTLC=$(ls -t "$srcdir"/build*/dtlc 2>/dev/null | head -n 1)
fi
case $DTLC in /*) ;; *) DTLC=$(pwd)/$DTLC ;; esac
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dtl-repl-train.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
cp "$srcdir/tests/repl/tiny.dtl" "$srcdir/tests/repl/blobs.csv" \
    "$srcdir/tests/repl/blobs_test.csv" "$tmp/"
cd "$tmp" || exit 2
export DTL_PATH="$srcdir/stdlib" NO_COLOR=1
fail() { echo "$me: FAIL: $*"; exit 1; }

# 8 steps: the tiny data has 6 steps an epoch, so an epoch's end is crossed.
printf ':load tiny.dtl\n:train 3\n:train 5\n:save repl.safetensors\n' |
    ${DTL_TEST_WRAPPER:-} "$DTLC" repl > repl.out 2>&1 || fail "dtlc repl: $(cat repl.out)"
${DTL_TEST_WRAPPER:-} "$DTLC" run tiny.dtl --steps 8 --save run.safetensors --progress none \
    > run.out 2>&1 || fail "dtlc run: $(cat run.out)"
cmp repl.safetensors run.safetensors ||
    fail "the REPL's checkpoint after 8 steps differs from dtlc run --steps 8's"
# The REPL's checkpoint goes on in dtlc run exactly as dtlc run's own does.
${DTL_TEST_WRAPPER:-} "$DTLC" run tiny.dtl --resume repl.safetensors --epochs 2 \
    --progress none > resumed.out 2>&1 || fail "resuming: $(cat resumed.out)"
${DTL_TEST_WRAPPER:-} "$DTLC" run tiny.dtl --epochs 2 --progress none > straight.out 2>&1 ||
    fail "dtlc run: $(cat straight.out)"
tail -n 1 resumed.out | sed 's/  seconds.*//' > a
tail -n 1 straight.out | sed 's/  seconds.*//' > b
cmp a b || fail "resumed: $(cat a); straight: $(cat b)"
echo "$me: PASS"
