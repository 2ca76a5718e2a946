#!/bin/sh
# tests/train_batchnorm.sh — batch norm's running statistics: `state`s updated by training,
# saved in the checkpoint, used at evaluation and inference.
#
# A model nn.BatchNorm(16, momentum = 0.25) -> nn.Dense(16, 4) trains for 2 steps of 8 rows
# on 16 rows in file order. With python3 (struct only), from the checkpoint:
#  - bn.running_mean and bn.running_var are there, beside the params;
#  - they follow PyTorch's rule exactly: r = 0.75 r + 0.25 s per step, s the batch's mean
#    (and its UNBIASED variance), from r = 0 (mean) and 1 (var) — the optimizer did not
#    touch them;
#  - `dtlc run --infer --load` gives fc(bn(x)) with the running statistics: y = (x - rm) /
#    sqrt(rv + 1e-5) * g + b, then @ w + c, to 1e-4;
#  - the epoch's test_loss is the mean cross-entropy of those outputs (evaluation uses the
#    running statistics too, not the test batch's).
. "$(dirname "$0")/train_lib.sh"
PY=${DTL_PYTHON:-python3}
"$PY" -c 'import struct' 2>/dev/null || { echo "SKIP: no python3"; exit 77; }

toy_data "$T" 16 31 train.csv
toy_data "$T" 12 32 test.csv
cat > "$T/bn.dtl" <<'EOF'
use nn

model Net {
    bn = nn.BatchNorm(16, momentum = 0.25)
    fc = nn.Dense(16, 4)
    fn forward(x: f32[B, 16]) -> f32[B, 4] = fc(bn(x))
}

dataset toy = csv("train.csv", label = "label", test = "test.csv")

train Net {
    data      = toy.train
    batch     = 8
    loss      = cross_entropy(forward(x), y)
    optimizer = sgd(lr = 0.5)
    epochs    = 1
    evaluate  = accuracy(toy.test)
}
EOF
check "training" "$DTLC" run "$T/bn.dtl" --progress none --no-shuffle --save "$T/w.st" || finish
loss=$(sed -n 's/^epoch 1\/1 .*test_loss \([0-9.]*\).*/\1/p' "$T/out")
[ -n "$loss" ] || { echo "FAIL: no test_loss in:"; cat "$T/out"; exit 1; }

"$PY" - "$T" <<'PYEOF' || { echo "FAIL: could not write x.npy"; exit 1; }
import struct, sys
t = sys.argv[1]
rows = [line.strip().split(",") for line in open(t + "/test.csv")][1:]
x = [float(v) for r in rows for v in r[1:]]
head = "{'descr': '<f4', 'fortran_order': False, 'shape': (12, 16), }"
head += " " * ((64 - (10 + len(head) + 1) % 64) % 64) + "\n"
with open(t + "/x.npy", "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode())
    f.write(struct.pack("<%df" % len(x), *x))
PYEOF
check "infer" "$DTLC" run "$T/bn.dtl" --infer --load "$T/w.st" --input "$T/x.npy" \
    --output "$T/y.npy" || finish

"$PY" - "$T" "$loss" <<'PYEOF' || fail=1
import json, math, struct, sys
t, test_loss = sys.argv[1], float(sys.argv[2])

def csv(name):
    rows = [line.strip().split(",") for line in open(t + "/" + name)][1:]
    return [[float(v) for v in r[1:]] for r in rows], [int(r[0]) for r in rows]

blob = open(t + "/w.st", "rb").read()
(n,) = struct.unpack("<Q", blob[:8])
head = json.loads(blob[8:8 + n])
def tensor(name):
    assert name in head, "the checkpoint has no %s: %s" % (name, sorted(head))
    e = head[name]
    assert e["dtype"] == "F32", e
    a, b = e["data_offsets"]
    return list(struct.unpack("<%df" % ((b - a) // 4), blob[8 + n + a:8 + n + b]))
rm, rv = tensor("bn.running_mean"), tensor("bn.running_var")
g, b, w, c = tensor("bn.g"), tensor("bn.b"), tensor("fc.w"), tensor("fc.b")

# The running statistics after the two batches (file order), by PyTorch's rule.
x, _ = csv("train.csv")
em, ev = [0.0] * 16, [1.0] * 16
for batch in (x[:8], x[8:]):
    for j in range(16):
        col = [r[j] for r in batch]
        mu = sum(col) / 8
        var = sum((v - mu) ** 2 for v in col) / 7
        em[j] = 0.75 * em[j] + 0.25 * mu
        ev[j] = 0.75 * ev[j] + 0.25 * var
for j in range(16):
    if abs(rm[j] - em[j]) > 1e-5 or abs(rv[j] - ev[j]) > 1e-5:
        print("FAIL: feature %d: running mean %g var %g, want %g %g" % (j, rm[j], rv[j], em[j], ev[j]))
        sys.exit(1)

# Inference and evaluation use the running statistics.
xt, yt = csv("test.csv")
want, ce = [], 0.0
for r, label in zip(xt, yt):
    h = [(r[j] - rm[j]) / math.sqrt(rv[j] + 1e-5) * g[j] + b[j] for j in range(16)]
    z = [sum(h[j] * w[j * 4 + k] for j in range(16)) + c[k] for k in range(4)]
    want += z
    m = max(z)
    ce += m + math.log(sum(math.exp(v - m) for v in z)) - z[label]
out = open(t + "/y.npy", "rb").read()
(hn,) = struct.unpack("<H", out[8:10])
got = struct.unpack("<48f", out[10 + hn:])
for i, (p, q) in enumerate(zip(got, want)):
    if abs(p - q) > 1e-4 * max(1.0, abs(q)):
        print("FAIL: inferred y[%d] = %g, with the running statistics %g" % (i, p, q))
        sys.exit(1)
if abs(ce / len(yt) - test_loss) > 1e-3:
    print("FAIL: test_loss %g, with the running statistics %g" % (test_loss, ce / len(yt)))
    sys.exit(1)
PYEOF
finish
