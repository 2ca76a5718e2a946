#!/bin/sh
# bench/ddp_scaling.sh — data-parallel scaling of `dtlc run`: the wide MLP of bench/mlp_big.dtl
# (784-2048-2048-10, Adam, global batch 512, Fashion-MNIST) trained by one process and by
# `dtlc run -n 2` (each rank 256 rows a step, gradients allreduced), both with DTL_THREADS=1
# on the llvm backend, so that 2 ranks use the 2 cores that 1 rank with 1 thread leaves half
# idle. Prints each run's training samples/s (the runner's samples_per_s of the epoch, from
# --metrics) and the ratio 2 ranks / 1 rank (issue 5's target: >= 1.7 on a 2-core machine).
#
#   bench/ddp_scaling.sh [STEPS]     (make bench runs it; DTLC from the build)
#
# Each configuration runs ROUNDS times, alternately (1, 2, 1, 2 …), and the median counts.
# Environment: DTLC (default build/dtlc), DTL_DATA (default the source tree's data/),
# DTL_BENCH_STEPS (steps per run, default 20: --limit-train STEPS*512), DTL_BENCH_ROUNDS
# (default 3). The model gets `parallel = data` added in a temporary copy (bench/mlp_big.dtl
# itself is the single-process benchmark's).
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
dtlc=${DTLC:-$src/build/dtlc}
steps=${1:-${DTL_BENCH_STEPS:-20}}
rounds=${DTL_BENCH_ROUNDS:-3}
export DTL_DATA="${DTL_DATA:-$src/data}"
if [ ! -x "$dtlc" ]; then
    echo "$0: no dtlc at $dtlc (set DTLC)" >&2
    exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dtl-bench-ddp.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
sed '/^    evaluate  = /a\
    parallel  = data' "$here/mlp_big.dtl" > "$tmp/mlp_big_dp.dtl"
grep -q 'parallel  = data' "$tmp/mlp_big_dp.dtl" || { echo "$0: could not add parallel = data" >&2; exit 1; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC'); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "model:   bench/mlp_big.dtl + parallel = data; batch 512 (global), $steps steps a run, DTL_THREADS=1, llvm; $rounds rounds"

sps() {   # the samples_per_s of a metrics file's last line
    sed -n 's/.*"samples_per_s": *\([0-9.]*\).*/\1/p' "$1" | tail -n 1
}

# one N ROUND: a run with N ranks (1: no -n); its samples/s appended to $tmp/sps.N
one() {
    if [ "$1" = 1 ]; then
        ranks=
    else
        ranks="-n $1"
    fi
    # shellcheck disable=SC2086
    if ! DTL_THREADS=1 DTL_TIMEOUT=120 "$dtlc" run $ranks "$tmp/mlp_big_dp.dtl" --backend llvm \
         --epochs 1 --limit-train $((steps * 512)) --limit-test 512 --progress=none \
         --metrics "$tmp/m.$1.$2.jsonl" > "$tmp/out.$1.$2" 2> "$tmp/err.$1.$2"; then
        echo "run with $1 rank(s) failed:"
        sed 's/^/    /' "$tmp/err.$1.$2" "$tmp/out.$1.$2" | head -n 20
        return 1
    fi
    s=$(sps "$tmp/m.$1.$2.jsonl")
    echo "  round $2, $1 rank(s): $s samples/s"
    echo "$s" >> "$tmp/sps.$1"
}

r=1
while [ "$r" -le "$rounds" ]; do
    one 1 "$r" || exit 1
    one 2 "$r" || exit 1
    r=$((r + 1))
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

median() { sort -n "$1" | awk '{ a[NR] = $1 } END { print NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
m1=$(median "$tmp/sps.1")
m2=$(median "$tmp/sps.2")
awk -v a="$m1" -v b="$m2" 'BEGIN {
    printf "\n%-22s %12s\n", "ranks (1 thread each)", "samples/s"
    printf "%-22s %12.1f\n%-22s %12.1f\n", "1", a, "2 (dtlc run -n 2)", b
    printf "scaling 2 ranks / 1 rank: x%.2f (target >= 1.7)\n", b / a
}'
