#!/bin/sh
# bench/ddp_scaling.sh — data-parallel scaling of `dtlc run`: the wide MLP of bench/mlp_big.dtl
# (784-2048-2048-10, Adam, global batch 512, Fashion-MNIST) trained by one process and by
# `dtlc run -n 2` (each rank 256 rows a step, gradients allreduced), both with DTL_THREADS=1
# on the llvm backend, so that 2 ranks use the 2 cores that 1 rank with 1 thread leaves half
# idle. Prints each run's training samples/s (the runner's samples_per_s of the epoch, from
# --metrics) and the ratio 2 ranks / 1 rank (issue 5's target: >= 1.7 on a 2-core machine).
# And the machine's ceiling for that ratio: two independent processes (no communication, no
# `parallel = data`) at batch 256 each, run at the same time — what 2 ranks would do if
# averaging the gradients cost nothing; their summed samples/s over one process's is the best
# ratio data parallelism can reach here, and 2 ranks / the pair how close it comes.
#
#   bench/ddp_scaling.sh [STEPS]     (make bench runs it; DTLC from the build)
#
# Each configuration runs ROUNDS times, alternately (1, 2, pair, 1, 2, pair …), and the median
# counts (single runs on this VM vary by ±15 %).
# Environment: DTLC (default build/dtlc), DTL_DATA (default the source tree's data/),
# DTL_BENCH_STEPS (steps per run, default 20: --limit-train STEPS*512), DTL_BENCH_ROUNDS
# (default 5). The model gets `parallel = data` added in a temporary copy (bench/mlp_big.dtl
# itself is the single-process benchmark's).
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
dtlc=${DTLC:-$src/build/dtlc}
steps=${1:-${DTL_BENCH_STEPS:-20}}
rounds=${DTL_BENCH_ROUNDS:-5}
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

# pair ROUND: two single processes at batch 256 at once; their summed samples/s to $tmp/sps.pair
pair() {
    for k in a b; do
        DTL_THREADS=1 "$dtlc" run "$here/mlp_big.dtl" --backend llvm --batch 256 --epochs 1 \
            --limit-train $((steps * 256)) --limit-test 512 --progress=none \
            --metrics "$tmp/m.pair$k.$1.jsonl" > "$tmp/out.pair$k.$1" 2> "$tmp/err.pair$k.$1" &
        eval "pid_$k=\$!"
    done
    # shellcheck disable=SC2154
    if ! wait "$pid_a" || ! wait "$pid_b"; then
        echo "the pair of single processes failed:"
        sed 's/^/    /' "$tmp/err.paira.$1" "$tmp/err.pairb.$1" | head -n 20
        return 1
    fi
    a=$(sps "$tmp/m.paira.$1.jsonl")
    b=$(sps "$tmp/m.pairb.$1.jsonl")
    s=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", a + b }')
    echo "  round $1, 2 independent processes at batch 256: $a + $b = $s samples/s"
    echo "$s" >> "$tmp/sps.pair"
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
    pair "$r" || exit 1
    r=$((r + 1))
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

median() { sort -n "$1" | awk '{ a[NR] = $1 } END { print NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
m1=$(median "$tmp/sps.1")
m2=$(median "$tmp/sps.2")
mp=$(median "$tmp/sps.pair")
awk -v a="$m1" -v b="$m2" -v p="$mp" 'BEGIN {
    printf "\n%-34s %12s\n", "ranks (1 thread each)", "samples/s"
    printf "%-34s %12.1f\n%-34s %12.1f\n", "1", a, "2 (dtlc run -n 2)", b
    printf "%-34s %12.1f\n", "2 independent at batch 256 (pair)", p
    printf "scaling 2 ranks / 1 rank: x%.2f (target >= 1.7)\n", b / a
    printf "ceiling here (pair / 1 rank): x%.2f; 2 ranks reach %.0f %% of the pair\n", p / a, 100 * b / p
}'
