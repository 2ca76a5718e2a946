# tests/train_lib.sh — sourced by tests/train_*.sh: finds dtlc, makes a temporary directory
# and writes the fixtures there: a small CSV data set and models that train on it in a blink.
#
#   toy_data DIR ROWS SEED FILE   a CSV with a header: label,f0..f15; 16 features uniform in
#                                  [0, 1) from a Park–Miller generator (exact in awk's doubles,
#                                  so every awk writes the same file); label = (f0 > .5) +
#                                  2 (f1 > .5), four classes a small MLP learns quickly
#   toy_model FILE HIDDEN DROPOUT  a model 16 -> HIDDEN -> 4 (with nn.Dropout(DROPOUT) after the
#                                  ReLU when DROPOUT is not 0), Adam lr 1e-2, batch 16, 2 epochs,
#                                  on train.csv / test.csv beside it
#   ddp_model EPOCHS               the data-parallel tests' model (parallel = data), to stdout
#
# Sets: DTLC (the program), T (the temporary directory, removed at exit), fail (0; tests set
# it to 1 and end with `finish`).

set -u
DTLC=${DTLC:-${DTL_BUILDDIR:-.}/dtlc}
if [ ! -x "$DTLC" ]; then
    echo "$0: no dtlc at $DTLC (set DTLC or DTL_BUILDDIR)" >&2
    exit 99
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/dtl-train.XXXXXX") || exit 99
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM HUP
fail=0

toy_data() {
    awk -v n="$2" -v seed="$3" 'BEGIN {
        x = seed
        printf "label"
        for (j = 0; j < 16; j++) printf ",f%d", j
        printf "\n"
        for (i = 0; i < n; i++) {
            line = ""
            for (j = 0; j < 16; j++) {
                x = (x * 16807) % 2147483647
                v[j] = x / 2147483647
                line = line sprintf(",%.6f", v[j])
            }
            print ((v[0] > 0.5) + 2 * (v[1] > 0.5)) line
        }
    }' > "$1/$4"
}

toy_model() {
    if [ "$3" = 0 ]; then
        fwd="fc2(relu(fc1(x)))"
        drop=""
    else
        fwd="fc2(drop(relu(fc1(x))))"
        drop="    drop = nn.Dropout($3)"
    fi
    cat > "$1" <<EOF
# A toy model for the training tests (written by tests/train_lib.sh).
use nn

model Net(hidden: int = $2) {
    fc1 = nn.Dense(16, hidden)
$drop
    fc2 = nn.Dense(hidden, 4)
    fn forward(x: f32[B, 16]) -> f32[B, 4] = $fwd
}

dataset toy = csv("train.csv", label = "label", test = "test.csv")

train Net() {
    data      = toy.train
    batch     = 16
    loss      = cross_entropy(forward(x), y)
    optimizer = adam(lr = 1e-2)
    epochs    = 2
    evaluate  = accuracy(toy.test)
}
EOF
}

# check WHAT COMMAND...: runs the command; a non-zero status is a failure named WHAT.
check() {
    what=$1
    shift
    if ! "$@" > "$T/out" 2> "$T/err"; then
        echo "FAIL: $what: '$*' failed:"
        sed 's/^/    /' "$T/err" | head -n 20
        fail=1
        return 1
    fi
    return 0
}

# same WHAT A B: the files are identical, byte for byte.
same() {
    if ! cmp -s "$2" "$3"; then
        echo "FAIL: $1: $2 and $3 differ"
        fail=1
    fi
}

# Metrics without the timings (seconds, samples_per_s: they differ from run to run).
untimed() {
    sed 's/, "seconds": [^,}]*//; s/, "samples_per_s": [^,}]*//' "$1"
}

finish() {
    if [ "$fail" = 0 ]; then
        echo "PASS: $(basename "$0")"
        exit 0
    fi
    exit 1
}

# ddp_model EPOCHS: the data-parallel tests' model (Dense layers, dropout, so that which rank
# takes which rows matters) over toy_data's train.csv and test.csv, to stdout. The tests'
# expected messages name its lines (net.dtl:21, :22, :25): keep them where they are.
ddp_model() {
    cat <<EOF
model Dense(in: int, out: int) {
    param w: f32[in, out] = glorot_uniform()
    param b: f32[out]     = zeros()
    fn forward(x: f32[B, in]) -> f32[B, out] = x @ w + b
}

model Net(hidden: int = 32) {
    fc1 = Dense(16, hidden)
    fc2 = Dense(hidden, 4)
    fn forward(x: f32[B, 16]) -> f32[B, 4] = fc2(dropout(relu(fc1(x)), 0.3))
}

dataset toy = csv("train.csv", label = "label", test = "test.csv")

train Net() {
    data      = toy.train
    batch     = 32
    loss      = cross_entropy(forward(x), y)
    optimizer = adam(lr = 1e-2)
    epochs    = $1
    evaluate  = accuracy(toy.test)
    parallel  = data
}
EOF
}
