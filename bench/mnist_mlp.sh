#!/usr/bin/env bash
# bench/mnist_mlp.sh — examples/mnist_mlp.dtl on dtl's backends against the PyTorch baseline
# (bench/mnist_mlp_torch.py: the same model, init family, loss, optimizer and batch), side by
# side in one run, on Fashion-MNIST. Prints, for each, the training seconds per epoch,
# samples/s, test accuracy and the peak resident memory of the whole run (data loading
# included), then the ratios the LLVM backend is judged by: its samples/s over PyTorch's
# (target >= 10) and PyTorch's peak memory over its (target >= 3), both at 2 threads.
# Then (b) the wide MLP 784-2048-2048-10 at batch 512 (bench/mlp_big.dtl, 20 steps) on
# llvm against PyTorch, both with 2 threads, and (c) the time from `dtlc run` to the first
# step of the example (--timings), with an empty compiled-object cache and a warm one.
#
#   bench/mnist_mlp.sh [EPOCHS]          (run by `make bench`; DTLC, DTL_PYTHON from the build)
#
# dtl's llvm backend runs with DTL_THREADS=1 and 2, the reference backend (single-threaded)
# once, PyTorch with 1 and 2 threads. A backend this dtlc lacks, or a missing PyTorch
# (Debian: python3-torch), is skipped with a message. Peak memory comes from GNU time
# (Debian: time) when it is installed.
set -euo pipefail
epochs=${1:-${DTL_BENCH_EPOCHS:-1}}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
dtlc=${DTLC:-$src/build/dtlc}
py=${DTL_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# mean of a field over the metrics lines of epochs 1..N; the last line's value
field() { "$py" -c 'import json,sys
rows=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(sum(r[sys.argv[2]] for r in rows)/len(rows))' "$1" "$2"; }
last() { "$py" -c 'import json,sys
rows=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(rows[-1][sys.argv[2]])' "$1" "$2"; }

# timed NAME CMD...: runs CMD, its peak RSS (MB) into $tmp/NAME.rss ("-" without GNU time)
timed() {
    local name=$1
    shift
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -f '%M' -o "$tmp/$name.rss" "$@"
        echo $(( $(tail -n1 "$tmp/$name.rss") / 1024 )) >"$tmp/$name.rss"
    else
        "$@"
        echo - >"$tmp/$name.rss"
    fi
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "date:    $(date -u +%Y-%m-%d)"
echo "epochs:  $epochs (Fashion-MNIST, 60000 train / 10000 test, batch 32, Adam lr 1e-3)"
printf '\n%-28s %10s %12s %10s %10s\n' "system" "s/epoch" "samples/s" "test acc" "peak MB"

row() {   # row NAME LABEL
    printf '%-28s %10.3f %12.0f %10.4f %10s\n' "$2" "$(field "$tmp/$1.jsonl" seconds)" \
        "$(field "$tmp/$1.jsonl" samples_per_s)" "$(last "$tmp/$1.jsonl" test_accuracy)" \
        "$(cat "$tmp/$1.rss")"
}

dtl_run() {   # dtl_run NAME BACKEND THREADS [FILE [OPTIONS...]]
    local name=$1 be=$2 thr=$3 file=${4:-$src/examples/mnist_mlp.dtl}
    shift 4 2>/dev/null || shift $#
    if ! DTL_THREADS=$thr timed "$name" "$dtlc" run "$file" --epochs "$epochs" \
            --backend "$be" --progress=none --metrics "$tmp/$name.jsonl" "$@" >/dev/null \
            2>"$tmp/$name.err"; then
        echo "dtl $be backend: skipped ($(head -n1 "$tmp/$name.err"))"
        return 1
    fi
    row "$name" "dtl $be ($thr thr)"
}

have_llvm=0
dtl_run llvm1 llvm 1 && dtl_run llvm2 llvm 2 && have_llvm=1
dtl_run ref ref 1 || true

if ! "$py" -c 'import torch' 2>/dev/null; then
    echo "PyTorch: not available ($py cannot import torch); skipped"
    exit 0
fi
tv=$("$py" -c 'import torch;print(torch.__version__)')
for threads in 1 2; do
    timed "torch$threads" "$py" "$here/mnist_mlp_torch.py" --epochs "$epochs" \
        --threads "$threads" >"$tmp/torch$threads.jsonl"
    row "torch$threads" "PyTorch $tv ($threads thr)"
done

ratio() { "$py" -c "print('%.2f' % ($1))"; }
echo
if [[ $have_llvm = 1 ]]; then
    echo "llvm vs PyTorch, 1 thread:  samples/s x$(ratio "$(field "$tmp/llvm1.jsonl" samples_per_s)/$(field "$tmp/torch1.jsonl" samples_per_s)")"
    echo "llvm vs PyTorch, 2 threads: samples/s x$(ratio "$(field "$tmp/llvm2.jsonl" samples_per_s)/$(field "$tmp/torch2.jsonl" samples_per_s)") (target >= 10)"
    if [[ $(cat "$tmp/llvm2.rss") != - ]]; then
        echo "peak memory, PyTorch / llvm (2 threads): x$(ratio "$(cat "$tmp/torch2.rss")/$(cat "$tmp/llvm2.rss")") (target >= 3)"
    fi
fi
if [[ -f $tmp/ref.jsonl ]]; then
    echo "ref vs PyTorch, 1 thread:   samples/s x$(ratio "$(field "$tmp/ref.jsonl" samples_per_s)/$(field "$tmp/torch1.jsonl" samples_per_s)")"
fi
[[ $have_llvm = 1 ]] || exit 0

echo
echo "(b) MLP 784-2048-2048-10, batch 512, 20 steps (--limit-train 10240), 2 threads"
printf '%-28s %10s %12s %10s %10s\n' "system" "s/epoch" "samples/s" "test acc" "peak MB"
epochs=1
dtl_run big llvm 2 "$here/mlp_big.dtl" --limit-train 10240 --limit-test 1024
timed bigtorch "$py" "$here/mnist_mlp_torch.py" --epochs 1 --threads 2 --hidden 2048,2048 \
    --batch 512 --limit-train 10240 --limit-test 1024 >"$tmp/bigtorch.jsonl"
row bigtorch "PyTorch $tv (2 thr)"
echo "llvm vs PyTorch: samples/s x$(ratio "$(field "$tmp/big.jsonl" samples_per_s)/$(field "$tmp/bigtorch.jsonl" samples_per_s)") (target >= 1.0)"

echo
echo "(c) dtlc run examples/mnist_mlp.dtl: from start to the first step (--timings)"
mkdir -p "$tmp/cache"
for cache in empty warm; do
    DTL_CACHE_DIR=$tmp/cache "$dtlc" run "$src/examples/mnist_mlp.dtl" --steps 1 --timings \
        --progress=none 2>&1 >/dev/null | sed -n "s/^dtlc: timings: /  $cache cache: /p"
done
