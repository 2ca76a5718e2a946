#!/bin/sh
# tests/data_fortunes.sh — text(…) on Debian's fortunes corpus (/usr/share/games/fortunes,
# package `fortunes`; skipped, exit 77, without it), as examples/char_transformer.dtl reads
# it: every plain-text file (not *.dat, not the *.u8 links), fortunes separated by "%"
# lines, every 10th fortune held out. An independent reading of the files in Python gives
# the split's size in bytes; the steps of an epoch that dtlc reports must agree with it,
# for the training and (through --batch 1 with the test split as data) the test split. A
# bigram model then runs 3 steps and evaluates on 64 windows of the test split.
. "$(dirname "$0")/train_lib.sh"
F=/usr/share/games/fortunes
[ -d "$F" ] || { echo "SKIP: $F is missing (apt-get install fortunes)"; exit 77; }
PY=${DTL_PYTHON:-python3}
"$PY" -c 'import os' 2>/dev/null || { echo "SKIP: no python3"; exit 77; }

# The split sizes, read independently: bytes of the train and test streams.
read -r ntrain ntest <<EOF2
$("$PY" - "$F" <<'PYEOF'
import os, sys
d = sys.argv[1]
names = sorted(n for n in os.listdir(d) if not n.startswith(".") and not n.endswith(".dat")
               and not n.endswith(".u8") and os.path.isfile(os.path.join(d, n))
               and not os.path.islink(os.path.join(d, n)))
docs = []
for n in names:
    data = open(os.path.join(d, n), "rb").read()
    cur = b""
    for line in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
        if line.rstrip(b"\r") == b"%":
            if cur: docs.append(cur)
            cur = b""
        else:
            cur += line + b"\n"
    if cur: docs.append(cur)
size = [0, 0]
for i, doc in enumerate(docs):
    size[i % 10 == 9] += len(doc) + 2   # the document and "%\n"
print(size[0], size[1])
PYEOF
)
EOF2
[ -n "$ntest" ] || { echo "FAIL: could not read $F in Python"; exit 1; }

model() {   # model FILE SPLIT
    cat > "$1" <<EOF2
let T = 128
model Bigram {
    param w: f32[256, 256] = zeros()
    fn forward(x: i64[B, T]) -> f32[B, T, 256] = take(w, x)
}
dataset fortunes = text("$F", context = T, separator = "%", test_every = 10)
train Bigram {
    data      = fortunes.$2
    batch     = 32
    loss      = cross_entropy(reshape(forward(x), [B * T, 256]), reshape(y, [B * T]))
    optimizer = adam(lr = 0.1)
    evaluate  = accuracy(fortunes.test)
}
EOF2
}
model "$T/train.dtl" train
model "$T/test.dtl" test
steps() {   # steps FILE: "N" of the "(k of N steps)" of the first epoch line
    sed -n 's/^epoch 1\/1 (3 of \([0-9]*\) steps).*/\1/p' "$T/out"
}
check "training on the fortunes" "$DTLC" run "$T/train.dtl" --steps 3 --limit-test 64 \
    --progress none || finish
want=$(( (ntrain - 1) / 128 / 32 ))
[ "$(steps)" = "$want" ] || { echo "FAIL: train split: $(steps) steps an epoch, want $want (of $ntrain bytes)"; fail=1; }
grep -q "test_accuracy" "$T/out" || { echo "FAIL: no evaluation: $(cat "$T/out")"; fail=1; }
check "the test split as data" "$DTLC" run "$T/test.dtl" --steps 3 --limit-test 64 \
    --progress none || finish
want=$(( (ntest - 1) / 128 / 32 ))
[ "$(steps)" = "$want" ] || { echo "FAIL: test split: $(steps) steps an epoch, want $want (of $ntest bytes)"; fail=1; }
finish
