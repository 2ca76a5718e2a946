#!/bin/sh
# tests/aot_embed.sh — ahead-of-time compilation end to end: `dtlc compile -o model.o|.so`,
# the generated model.h, and examples/embed (built with its own Makefile) against the JIT
# and the reference backend.
#
# On the toy model of train_lib.sh (16 -> 16 -> 4, dropout 0.1, Adam, batch 16):
#  - init: a context created with seed 7 saves exactly the weights `dtlc run --seed 7` starts
#    from (bit for bit);
#  - train: from a checkpoint after 3 steps (`dtlc run --no-shuffle`), 2 steps through the
#    AOT API give the parameters and Adam's moments of `dtlc run --resume` (default backend and
#    ref) within 1e-5 relative;
#  - infer: 50 rows (3 full batches and a padded short one) give `dtlc run --infer`'s
#    outputs within 1e-5 (default backend and ref), the same classes, and model.so the same
#    text as model.o;
#  - a forward that mixes rows (x - mean over the batch) makes infer refuse a short batch;
#  - errors: weights of another shape are refused with a message naming the tensor; -o to
#    standard output and an unknown extension with --emit missing are usage errors;
#  - the C prefix comes from the output's name ("2-probe.x.o" -> _2_probe_infer).
# Skips when dtlc was built without LLVM (or without a C compiler or python3).
. "$(dirname "$0")/train_lib.sh"
PY=${DTL_PYTHON:-python3}
"$PY" -c 'import struct' 2>/dev/null || { echo "SKIP: no python3"; exit 77; }
CC=${DTL_CC:-cc}
SRC=${DTL_SRCDIR:-$(dirname "$0")/..}
RT=${DTL_BUILDDIR:-$(dirname "$DTLC")}
export CC

toy_data "$T" 160 31 train.csv
toy_data "$T" 50 32 test.csv
toy_model "$T/net.dtl" 16 0.1

# Is there an LLVM in this dtlc? (The output's name makes the C prefix: "_2_probe".)
if ! "$DTLC" compile "$T/net.dtl" -o "$T/2-probe.x.o" 2> "$T/err"; then
    if grep -q "built without LLVM" "$T/err"; then
        echo "SKIP: dtlc was built without LLVM"
        exit 77
    fi
    echo "FAIL: dtlc compile -o probe.o:"
    cat "$T/err"
    exit 1
fi
[ -s "$T/2-probe.x.o" ] && [ -s "$T/2-probe.x.h" ] || { echo "FAIL: no 2-probe.x.[oh]"; fail=1; }
grep -q "int _2_probe_infer(_2_probe_ctx \*m, const float \*x, int64_t rows, float \*y);" \
    "$T/2-probe.x.h" || { echo "FAIL: the header does not declare _2_probe_infer:"; cat "$T/2-probe.x.h"; fail=1; }
ls "$T"/*.tmp* > /dev/null 2>&1 && { echo "FAIL: temporary files left"; fail=1; }

# The example, built by its Makefile in $T/b (model.o, model.so, model.h, embed, embed-so).
mkdir "$T/b"
check "make embed" make -s -C "$T/b" -f "$SRC/examples/embed/Makefile" DTLC="$DTLC" \
    MODEL="$T/net.dtl" LIBDIR="$RT" CC="$CC" CFLAGS="${DTL_CFLAGS:--O2} -Wall -Wextra -Werror" \
    LDFLAGS="${DTL_LDFLAGS:-}" || finish
E="$T/b/embed"

# Data as .npy: the training rows (x, y) and the test rows.
"$PY" - "$T" <<'PYEOF' || { echo "FAIL: could not write the .npy files"; exit 1; }
import struct, sys
t = sys.argv[1]
def save(name, code, descr, vals, shape):
    head = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    head += " " * ((64 - (10 + len(head) + 1) % 64) % 64) + "\n"
    with open(t + "/" + name, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode())
        f.write(struct.pack("<%d%s" % (len(vals), code), *vals))
for split, n in (("train", 160), ("test", 50)):
    rows = [line.strip().split(",") for line in open(t + "/%s.csv" % split)][1:]
    save(split + "_x.npy", "f", "<f4", [float(v) for r in rows for v in r[1:]], "(%d, 16)" % n)
    save(split + "_y.npy", "q", "<i8", [int(r[0]) for r in rows], "(%d,)" % n)
PYEOF

# compare A B RTOL: two safetensors files hold the same tensors (names, dtypes, shapes) with
# values within RTOL relative (0: bit for bit); tensors named in A only are an error.
compare() {
    "$PY" - "$1" "$2" "$3" <<'PYEOF'
import json, struct, sys
def load(p):
    b = open(p, "rb").read()
    (n,) = struct.unpack("<Q", b[:8])
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    out = {}
    for k, v in h.items():
        assert v["dtype"] == "F32", (p, k, v["dtype"])
        s, e = v["data_offsets"]
        raw = b[8 + n + s:8 + n + e]
        out[k] = (v["shape"], raw, struct.unpack("<%df" % (len(raw) // 4), raw))
    return out
a, b, rtol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
bad = sorted(set(a) ^ set(b))
if bad:
    sys.exit("tensors in one file only: %s" % bad)
worst = 0.0
for k in sorted(a):
    if a[k][0] != b[k][0]:
        sys.exit("%s: shape %s vs %s" % (k, a[k][0], b[k][0]))
    if rtol == 0:
        if a[k][1] != b[k][1]:
            sys.exit("%s: not bit for bit the same" % k)
        continue
    for i, (x, y) in enumerate(zip(a[k][2], b[k][2])):
        d = abs(x - y) / max(abs(y), 1e-3)
        worst = max(worst, d)
        if d > rtol:
            sys.exit("%s[%d]: %r vs %r (relative %.3g)" % (k, i, x, y, d))
print("%d tensors, worst relative difference %.3g" % (len(a), worst))
PYEOF
}

# init: the weights of seed 7, as dtlc run draws them.
check "embed init" "$E" init 7 "$T/i7.st" &&
    check "dtlc run --seed 7 --steps 0" "$DTLC" run "$T/net.dtl" --progress none --seed 7 \
        --steps 0 --save "$T/d7.st" &&
    { compare "$T/i7.st" "$T/d7.st" 0 > "$T/cmp" 2>&1 ||
        { echo "FAIL: initial weights differ: $(cat "$T/cmp")"; fail=1; }; }

# train: 3 steps by dtlc, then steps 4 and 5 by dtlc (resumed) and by the AOT API.
check "dtlc run 3 steps" "$DTLC" run "$T/net.dtl" --progress none --no-shuffle --steps 3 \
    --save "$T/w3.st" || finish
for be in default ref; do
    opt=""
    [ "$be" = ref ] && opt="--backend ref"
    # shellcheck disable=SC2086
    check "dtlc run --resume ($be)" "$DTLC" run "$T/net.dtl" --progress none --no-shuffle \
        --resume "$T/w3.st" --steps 5 --save "$T/w5-$be.st" $opt || continue
done
check "embed train" "$E" train "$T/w3.st" "$T/train_x.npy" "$T/train_y.npy" 4 2 "$T/a5.st" &&
    for be in default ref; do
        [ -f "$T/w5-$be.st" ] || continue
        if compare "$T/a5.st" "$T/w5-$be.st" 1e-5 > "$T/cmp" 2>&1; then
            echo "train, AOT vs dtlc run ($be): $(cat "$T/cmp")"
        else
            echo "FAIL: 2 AOT steps vs dtlc run ($be): $(cat "$T/cmp")"
            fail=1
        fi
    done

# infer: 50 rows with the trained weights, against dtlc run --infer.
check "embed infer" "$E" infer "$T/w5-default.st" "$T/test_x.npy" && cp "$T/out" "$T/embed.txt"
check "embed-so infer" "$T/b/embed-so" infer "$T/w5-default.st" "$T/test_x.npy" &&
    same "model.so vs model.o" "$T/embed.txt" "$T/out"
[ "$(wc -l < "$T/embed.txt")" = 50 ] || { echo "FAIL: embed infer printed:"; cat "$T/embed.txt"; fail=1; }
for be in default ref; do
    opt=""
    [ "$be" = ref ] && opt="--backend ref"
    # shellcheck disable=SC2086
    check "dtlc run --infer ($be)" "$DTLC" run "$T/net.dtl" --infer --load "$T/w5-default.st" \
        --input "$T/test_x.npy" --output "$T/y-$be.npy" $opt || continue
    "$PY" - "$T/embed.txt" "$T/y-$be.npy" <<'PYEOF' || { echo "FAIL: embed vs dtlc run --infer ($be)"; fail=1; }
import struct, sys
rows = [l.split() for l in open(sys.argv[1])]
blob = open(sys.argv[2], "rb").read()
(n,) = struct.unpack("<H", blob[8:10])
y = struct.unpack("<200f", blob[10 + n:])
for i, r in enumerate(rows):
    want = y[4 * i:4 * i + 4]
    got = [float(v) for v in r[1:]]
    if max(range(4), key=lambda k: want[k]) != int(r[0]):
        sys.exit("row %d: class %s, dtlc says %d" % (i, r[0], max(range(4), key=lambda k: want[k])))
    for g, w in zip(got, want):
        if abs(g - w) > 1e-5 * max(1.0, abs(w)):
            sys.exit("row %d: %r vs %r" % (i, got, list(want)))
PYEOF
done

# A forward that mixes the rows of a batch (x minus its mean over the batch): infer refuses
# to pad a short last batch, with a message.
sed 's/fc1(x)/fc1(x - mean(x, axis = 0, keepdims = true))/' "$T/net.dtl" > "$T/mix.dtl"
mkdir "$T/mix"
check "make embed (mixing rows)" make -s -C "$T/mix" -f "$SRC/examples/embed/Makefile" \
    DTLC="$DTLC" MODEL="$T/mix.dtl" LIBDIR="$RT" CC="$CC" CFLAGS="${DTL_CFLAGS:--O2}" \
    LDFLAGS="${DTL_LDFLAGS:-}" embed &&
    check "embed init (mixing rows)" "$T/mix/embed" init 1 "$T/mix.st" &&
    if "$T/mix/embed" infer "$T/mix.st" "$T/test_x.npy" > /dev/null 2> "$T/err"; then
        echo "FAIL: 50 rows were padded for a model that mixes rows"
        fail=1
    else
        grep -qF "model_infer: 50 rows: this model's forward mixes the rows of a batch, so rows must be a multiple of its batch, 16" \
            "$T/err" || { echo "FAIL: wrong message:"; cat "$T/err"; fail=1; }
    fi

# errors
check "dtlc run 0 steps, hidden 8" sh -c "sed 's/= 16)/= 8)/' '$T/net.dtl' > '$T/net8.dtl' &&
    '$DTLC' run '$T/net8.dtl' --progress none --steps 0 --save '$T/w8.st'" &&
    if "$E" infer "$T/w8.st" "$T/test_x.npy" > /dev/null 2> "$T/err"; then
        echo "FAIL: weights of another shape were taken"
        fail=1
    else
        grep -q "w8.st does not match this model: fc1.w is f32\[16, 8\] there, f32\[16, 16\] here" \
            "$T/err" || { echo "FAIL: wrong message:"; cat "$T/err"; fail=1; }
    fi
"$DTLC" compile "$T/net.dtl" --emit=so > /dev/null 2> "$T/err"
[ $? = 2 ] && grep -q -- "--emit=so needs -o FILE" "$T/err" ||
    { echo "FAIL: --emit=so without -o:"; cat "$T/err"; fail=1; }
"$DTLC" compile "$T/net.dtl" -o "$T/net.bin" > /dev/null 2> "$T/err"
[ $? = 2 ] && grep -q -- "--emit is required" "$T/err" ||
    { echo "FAIL: -o net.bin without --emit:"; cat "$T/err"; fail=1; }
finish
