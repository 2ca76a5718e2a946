#!/bin/sh
# tests/train_infer.sh — `dtlc run --infer` agrees with the evaluation of training.
#
# Trains the toy model and saves it; writes the test rows as x.npy (float32, shape (50, 16)),
# infers y.npy, and checks with python3 (no numpy needed: struct) that y.npy is a C-order
# float32 (50, 4) array whose argmax per row gets exactly as many rows right as the
# test_accuracy of the last epoch says. Then: the result does not depend on the batch size
# (--batch 7 leaves a short last batch), a float64 x.npy gives the same outputs, and rows of
# the wrong width are refused with a message.
. "$(dirname "$0")/train_lib.sh"
PY=${DTL_PYTHON:-python3}
"$PY" -c 'import struct' 2>/dev/null || { echo "SKIP: no python3"; exit 77; }

toy_data "$T" 160 21 train.csv
toy_data "$T" 50 22 test.csv
toy_model "$T/net.dtl" 16 0.1
check "training" "$DTLC" run "$T/net.dtl" --progress none --epochs 3 --save "$T/w.st" || finish
acc=$(sed -n 's/^epoch 3\/3 .*test_accuracy \([0-9.]*\).*/\1/p' "$T/out")
[ -n "$acc" ] || { echo "FAIL: no test_accuracy in:"; cat "$T/out"; exit 1; }

# x.npy, x64.npy (the test rows) and wide.npy (17 values a row) from test.csv.
"$PY" - "$T" <<'PYEOF' || { echo "FAIL: could not write the .npy files"; exit 1; }
import struct, sys
t = sys.argv[1]
rows = [line.strip().split(",") for line in open(t + "/test.csv")][1:]
def save(name, code, descr, vals, shape):
    head = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    head += " " * ((64 - (10 + len(head) + 1) % 64) % 64) + "\n"
    with open(t + "/" + name, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode())
        f.write(struct.pack("<%d%s" % (len(vals), code), *vals))
x = [float(v) for r in rows for v in r[1:]]
save("x.npy", "f", "<f4", x, "(50, 16)")
save("x64.npy", "d", "<f8", x, "(50, 16)")
save("wide.npy", "f", "<f4", x[:17 * 40], "(40, 17)")
save("u8.npy", "B", "|u1", [int(abs(v)) % 256 for v in x], "(50, 16)")
with open(t + "/labels", "w") as f:
    f.write(" ".join(r[0] for r in rows))
PYEOF

check "infer" "$DTLC" run "$T/net.dtl" --infer --load "$T/w.st" --input "$T/x.npy" \
    --output "$T/y.npy" || finish
"$PY" - "$T" "$acc" <<'PYEOF' || fail=1
import struct, sys
t, acc = sys.argv[1], float(sys.argv[2])
blob = open(t + "/y.npy", "rb").read()
assert blob[:8] == b"\x93NUMPY\x01\x00", "y.npy: not a .npy file"
(n,) = struct.unpack("<H", blob[8:10])
head = blob[10:10 + n].decode()
assert (10 + n) % 64 == 0 and head.endswith("\n"), "y.npy: header not padded: %r" % head
want = "{'descr': '<f4', 'fortran_order': False, 'shape': (50, 4), }"
assert head.startswith(want), "y.npy: header %r, expected %r" % (head, want)
vals = struct.unpack("<200f", blob[10 + n:])
labels = [int(v) for v in open(t + "/labels").read().split()]
right = sum(1 for i in range(50)
            if max(range(4), key=lambda k: vals[4 * i + k]) == labels[i])
if abs(right / 50 - acc) > 1e-4:
    print("FAIL: inference gets %d of 50 right, evaluation said accuracy %s" % (right, acc))
    sys.exit(1)
PYEOF
check "infer with batch 7" "$DTLC" run "$T/net.dtl" --infer --load "$T/w.st" --batch 7 \
    --input "$T/x.npy" --output "$T/y7.npy" && same "--batch 7 vs 16" "$T/y.npy" "$T/y7.npy"
check "infer from float64" "$DTLC" run "$T/net.dtl" --infer --load "$T/w.st" \
    --input "$T/x64.npy" --output "$T/y64.npy" && same "float64 input" "$T/y.npy" "$T/y64.npy"

# --load in training takes the weights: 0 steps from them and saved, they infer the same.
check "--load, 0 steps" "$DTLC" run "$T/net.dtl" --progress none --load "$T/w.st" --steps 0 \
    --save "$T/l.st" &&
    check "infer with the reloaded weights" "$DTLC" run "$T/net.dtl" --infer --load "$T/l.st" \
        --input "$T/x.npy" --output "$T/yl.npy" && same "--load then --save" "$T/y.npy" "$T/yl.npy"

"$DTLC" run "$T/net.dtl" --infer --load "$T/w.st" --input "$T/wide.npy" --output "$T/yw.npy" \
    2> "$T/err"
st=$?
grep -qF "wide.npy: rows of 17 values, but the model's x is f32[B, 16] (16 values a row)" "$T/err" &&
    [ "$st" = 1 ] || { echo "FAIL: rows of the wrong width (status $st):"; cat "$T/err"; fail=1; }
[ -e "$T/yw.npy" ] && { echo "FAIL: a failed inference left an output"; fail=1; }
# Integer features (raw pixels, say) would miss the data set's scale: refused.
"$DTLC" run "$T/net.dtl" --infer --load "$T/w.st" --input "$T/u8.npy" --output "$T/yu.npy" \
    2> "$T/err"
st=$?
grep -qF "u8.npy holds integers: --infer takes the features as the model sees them" "$T/err" &&
    [ "$st" = 1 ] || { echo "FAIL: integer features (status $st):"; cat "$T/err"; fail=1; }
[ -e "$T/yu.npy" ] && { echo "FAIL: a refused inference left an output"; fail=1; }
"$DTLC" run "$T/net.dtl" --infer --load "$T/w.st" --input "$T/nothere.npy" --output "$T/yn.npy" \
    2> "$T/err"
st=$?
grep -qF "nothere.npy: cannot open" "$T/err" && [ "$st" = 2 ] ||
    { echo "FAIL: a missing input (status $st):"; cat "$T/err"; fail=1; }
finish
