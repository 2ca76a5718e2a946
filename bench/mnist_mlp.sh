#!/usr/bin/env bash
# bench/mnist_mlp.sh — examples/mnist_mlp.dtl on dtl's backends against the PyTorch baseline
# (bench/mnist_mlp_torch.py: the same model, init family, loss, optimizer and batch), side by
# side in one run, on Fashion-MNIST. Prints each one's training seconds per epoch, samples/s
# and test accuracy, and the ratio of PyTorch's time to dtl's (> 1: dtl is faster).
#
#   bench/mnist_mlp.sh [EPOCHS]          (run by `make bench`; DTLC, DTL_PYTHON from the build)
#
# PyTorch runs with 1 thread (the reference backend is single-threaded) and with all cores.
# Skips PyTorch with a message when `import torch` fails (Debian: python3-torch).
set -euo pipefail
epochs=${1:-${DTL_BENCH_EPOCHS:-1}}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
dtlc=${DTLC:-$src/build/dtlc}
py=${DTL_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# mean of a field over the metrics lines of epochs 1..N
field() { "$py" -c 'import json,sys
rows=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(sum(r[sys.argv[2]] for r in rows)/len(rows))' "$1" "$2"; }
last() { "$py" -c 'import json,sys
rows=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(rows[-1][sys.argv[2]])' "$1" "$2"; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "date:    $(date -u +%Y-%m-%d)"
echo "epochs:  $epochs (Fashion-MNIST, 60000 train / 10000 test, batch 32, Adam lr 1e-3)"
printf '\n%-26s %12s %12s %10s\n' "system" "s/epoch" "samples/s" "test acc"

"$dtlc" run "$src/examples/mnist_mlp.dtl" --epochs "$epochs" --progress=none \
    --metrics "$tmp/dtl.jsonl" >/dev/null
dtl_s=$(field "$tmp/dtl.jsonl" seconds)
printf '%-26s %12.2f %12.0f %10.4f\n' "dtl ref backend" "$dtl_s" \
    "$(field "$tmp/dtl.jsonl" samples_per_s)" "$(last "$tmp/dtl.jsonl" test_accuracy)"

if ! "$py" -c 'import torch' 2>/dev/null; then
    echo "PyTorch: not available ($py cannot import torch); skipped"
    exit 0
fi
for threads in 1 "$(nproc)"; do
    "$py" "$here/mnist_mlp_torch.py" --epochs "$epochs" --threads "$threads" >"$tmp/torch$threads.jsonl"
    t=$(field "$tmp/torch$threads.jsonl" seconds)
    printf '%-26s %12.2f %12.0f %10.4f   ratio torch/dtl %.2f\n' "PyTorch $("$py" -c 'import torch;print(torch.__version__)') ($threads thr)" \
        "$t" "$(field "$tmp/torch$threads.jsonl" samples_per_s)" \
        "$(last "$tmp/torch$threads.jsonl" test_accuracy)" "$("$py" -c "print($t/$dtl_s)")"
done
