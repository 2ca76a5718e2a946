#!/bin/sh
# scripts/gpu-check.sh — build dtl with CUDA on a GPU machine, run the CUDA tests, train the
# example on the GPU, run the benchmark against PyTorch, and print a short table last.
#
#   scripts/gpu-check.sh            (from the repository root, or an unpacked tarball's)
#
# What it expects:
#   - dist/dtl-*.tar.gz (a `make dist` tarball: it ships the generated lexer and parser, so it
#     builds with only sh, make, cc and nvcc). Without one it tries ./autogen.sh in this tree,
#     which needs autotools, re2c and lemon.
#   - a CUDA toolkit at $CUDA_HOME (default /usr/local/cuda) with nvcc and cuBLAS.
#   - Fashion-MNIST's four .gz files under $DTL_GPU_DATA/fashion-mnist (default: data/, else
#     /usr/share/datasets) for the training stage.
#   - python3 with torch (CUDA) for PyTorch's side of the benchmark ($DTL_PYTHON to choose).
#   - $OUT: a directory for the logs (default: gpu-check-out/); at most 8 files are written.
# Every stage has a time limit (the whole script about 6 minutes); a failing stage is
# reported and the next one runs. Without a GPU it stops after the build, saying so.
# Exit status: 0 all stages passed, 1 some failed, 77 no GPU (build only).
set -u

ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
WORK=${DTL_GPU_WORK:-${TMPDIR:-/tmp}/dtl-gpu-check}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
PATH=$CUDA_HOME/bin:$PATH
export PATH
JOBS=$(nproc 2>/dev/null || echo 4)
START=$(date +%s)
BUDGET=${DTL_GPU_BUDGET:-370}
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
failed=0

log() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }
TABLE=$(mktemp)
row() { printf '%-26s %-6s %s\n' "$1" "$2" "$3" >> "$TABLE"; }
left() { echo $((BUDGET - ($(date +%s) - START))); }
# limit CAP: the stage's limit, CAP seconds or what is left of the budget (at least 10 s).
limit() { l=$(left); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 10 ] && l=10; echo "$l"; }

log "gpu-check: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname)"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 |
        sed 's/^/gpu: /' | tee -a "$SUMMARY"
fi
"$CUDA_HOME/bin/nvcc" --version 2>/dev/null | tail -1 | sed 's/^/nvcc: /' | tee -a "$SUMMARY"

# ---- 1. build -----------------------------------------------------------------------------
t0=$(date +%s)
BUILD=
rm -rf "$WORK" && mkdir -p "$WORK"
tarball=$(ls -t "$ROOT"/dist/dtl-*.tar.gz 2>/dev/null | head -1)
export WORK CUDA_HOME JOBS ROOT tarball
timeout "$(limit ${DTL_GPU_BUILD_LIMIT:-300})" sh -c '
    set -e
    if [ -n "$tarball" ]; then
        echo "building from $tarball"
        tar -xzf "$tarball" -C "$WORK"
        SRC=$(ls -d "$WORK"/dtl-*/ | head -1)
    else
        echo "no dist/dtl-*.tar.gz: trying ./autogen.sh in $ROOT (needs autotools, re2c, lemon)"
        (cd "$ROOT" && ./autogen.sh)
        SRC=$ROOT
    fi
    mkdir -p "$WORK/build" && cd "$WORK/build"
    "$SRC/configure" --with-cuda="$CUDA_HOME" --without-llvm
    make -j"$JOBS"
    make -j"$JOBS" tests/unit/test_cuda bench/gpu_mlp_dtl
' > "$OUT/build.log" 2>&1
brc=$?
if [ -n "$tarball" ]; then SRC=$(ls -d "$WORK"/dtl-*/ 2>/dev/null | head -1); else SRC=$ROOT; fi
SRC=${SRC%/}
if [ $brc -eq 0 ] && [ -x "$WORK/build/dtlc" ]; then
    BUILD=$WORK/build
    row build ok "$(($(date +%s) - t0)) s; $(grep -m1 '  CUDA ' "$OUT/build.log" | sed 's/^ *//')"
else
    failed=1
    row build FAIL "exit $brc after $(($(date +%s) - t0)) s; see build.log (last lines above)"
    tail -25 "$OUT/build.log" | tee -a "$SUMMARY"
fi
# dtlc links no CUDA library: the backend is the plugin libdtlcuda.so, loaded on demand.
if [ -n "$BUILD" ]; then
    ncu=$(ldd "$BUILD/dtlc" 2>/dev/null | grep -Eci 'libcu(da|dart|blas)')
    rss=
    [ -x /usr/bin/time ] && rss=$( { /usr/bin/time -f '%M' "$BUILD/dtlc" --help > /dev/null; } 2>&1 | tail -1)
    if [ "${ncu:-0}" = 0 ] && [ -f "$BUILD/libdtlcuda.so" ]; then
        row "dtlc without CUDA libs" ok "plugin $BUILD/libdtlcuda.so; dtlc --help peak RSS ${rss:-?} KB"
    else
        failed=1
        row "dtlc without CUDA libs" FAIL "$ncu CUDA libraries in ldd dtlc, or no $BUILD/libdtlcuda.so"
    fi
fi

# ---- is there a GPU? ------------------------------------------------------------------------
gpu=yes
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    gpu=no
fi
if [ "$gpu" = no ]; then
    log "no GPU here (nvidia-smi finds none): the build stage only."
    row gpu SKIP "no GPU: tests, training and benchmarks not run"
    { printf '\n%-26s %-6s %s\n' stage result detail; cat "$TABLE"; } | tee -a "$SUMMARY"
    rm -f "$TABLE"
    [ $failed -eq 0 ] && exit 77 || exit 1
fi
[ -n "$BUILD" ] || { printf '\n'; cat "$TABLE"; rm -f "$TABLE"; exit 1; }

# ---- 2. the CUDA unit tests -------------------------------------------------------------------
t0=$(date +%s)
(cd "$BUILD" && timeout "$(limit 100)" ./tests/unit/test_cuda) > "$OUT/test_cuda.log" 2>&1
rc=$?
sumline=$(grep -E 'checks, [0-9]+ failed' "$OUT/test_cuda.log" | tail -1)
case $rc in
0) row test_cuda ok "$sumline ($(($(date +%s) - t0)) s)";;
77) failed=1; row test_cuda SKIP "$(tail -1 "$OUT/test_cuda.log")";;
124) failed=1; row test_cuda FAIL "timed out";;
*) failed=1; row test_cuda FAIL "exit $rc: $sumline; see test_cuda.log"
   grep -E 'FAIL|failed' "$OUT/test_cuda.log" | head -15 | tee -a "$SUMMARY";;
esac

# ---- 3. the example trains on the GPU -----------------------------------------------------------
t0=$(date +%s)
DATA=${DTL_GPU_DATA:-}
if [ -z "$DATA" ]; then
    if [ -d "$ROOT/data/fashion-mnist" ]; then DATA=$ROOT/data; else DATA=/usr/share/datasets; fi
fi
train() {   # train LOG [ENV=VALUE]: 10 epochs of the example on the GPU
    env $2 DTL_CUDA_VERBOSE=1 timeout "$(limit 150)" "$BUILD/dtlc" run \
        "$SRC/examples/mnist_mlp.dtl" --backend cuda --data "$DATA" --epochs 10 \
        --progress none --metrics "$OUT/train_metrics.jsonl" > "$1" 2>&1
}
train "$OUT/train.log" DTL_CUDA_FUSE=1
rc=$?
acc=$(sed -n 's/.*test_accuracy \([0-9.]*\).*/\1/p' "$OUT/train.log" | tail -1)
sps=$(sed -n 's/.*samples\/s \([0-9]*\).*/\1/p' "$OUT/train.log" | tail -1)
if [ $rc -eq 0 ] && [ -n "$acc" ] && awk "BEGIN { exit !($acc >= 0.875) }"; then
    row "train 10 epochs (cuda)" ok "test accuracy $acc (>= 0.875), $sps samples/s in the last epoch, $(($(date +%s) - t0)) s"
else
    failed=1
    row "train 10 epochs (cuda)" FAIL "exit $rc, accuracy '${acc:-none}'; see train.log"
    tail -5 "$OUT/train.log" | tee -a "$SUMMARY"
    # the same with one launch per node, to tell a fusion bug from the rest
    t0=$(date +%s)
    echo "--- again with DTL_CUDA_FUSE=0 ---" >> "$OUT/train.log"
    train "$OUT/train_nofuse.log" DTL_CUDA_FUSE=0
    rc=$?
    cat "$OUT/train_nofuse.log" >> "$OUT/train.log"; rm -f "$OUT/train_nofuse.log"
    acc=$(sed -n 's/.*test_accuracy \([0-9.]*\).*/\1/p' "$OUT/train.log" | tail -1)
    row "train (DTL_CUDA_FUSE=0)" "$([ $rc -eq 0 ] && echo ran || echo FAIL)" "exit $rc, accuracy '${acc:-none}', $(($(date +%s) - t0)) s"
fi

# ---- 4. the benchmark: dtl cuda vs PyTorch eager vs torch.compile(reduce-overhead) --------------
PY=${DTL_PYTHON:-python3}
: > "$OUT/bench.jsonl"
t0=$(date +%s)
for fz in 1 0; do
    DTL_CUDA_FUSE=$fz timeout "$(limit 40)" "$BUILD/bench/gpu_mlp_dtl" --batch 32 --steps 3000 \
        --warmup 300 >> "$OUT/bench.jsonl" 2>> "$OUT/bench.log"
    rc=$?
    [ $rc -eq 0 ] || { failed=1; row "bench dtl (fuse=$fz)" FAIL "exit $rc; see bench.log"; }
done
for mode in eager compile; do
    cap=60; [ $mode = compile ] && cap=150
    timeout "$(limit $cap)" "$PY" "$SRC/bench/gpu_mlp.py" --mode $mode --steps 3000 \
        --warmup 300 >> "$OUT/bench.jsonl" 2>> "$OUT/bench.log"
    rc=$?
    [ $rc -eq 0 ] || { failed=1; row "bench torch $mode" FAIL "exit $rc; see bench.log"; }
done
bench_rows=$("$PY" - "$OUT/bench.jsonl" <<'EOF' 2>/dev/null
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
base = {r["impl"]: r["steps_per_s"] for r in rows if r["mode"] == "async"}
dtl = base.get("dtl cuda fused")
for r in rows:
    ratio = ""
    if dtl and not r["impl"].startswith("dtl"):
        ratio = f"  (dtl fused async: {dtl / r['steps_per_s']:.2f}x this)"
    print(f"bench {r['impl']} [{r['mode']}]|{r['steps_per_s']:.0f} steps/s{ratio}")
EOF
)
echo "$bench_rows" | while IFS='|' read -r name detail; do
    [ -n "$name" ] && row "$name" "-" "$detail"
done
echo "bench: $(($(date +%s) - t0)) s" >> "$SUMMARY"

# ---- 5. compute-sanitizer memcheck on the CUDA tests (bounded) ---------------------------------
SAN=$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")
if [ -x "$SAN" ] && [ "$(left)" -gt 30 ]; then
    t0=$(date +%s)
    (cd "$BUILD" && DTL_CUDA_TEST_QUICK=1 timeout "$(limit 90)" "$SAN" --tool memcheck \
        --error-exitcode 99 ./tests/unit/test_cuda) > "$OUT/memcheck.log" 2>&1
    rc=$?
    errs=$(grep -m1 'ERROR SUMMARY' "$OUT/memcheck.log")
    case $rc in
    0) row memcheck ok "${errs:-no errors} ($(($(date +%s) - t0)) s)";;
    124) row memcheck PART "timed out after $(($(date +%s) - t0)) s; ${errs:-no error reported before}";;
    *) failed=1; row memcheck FAIL "exit $rc: ${errs}; see memcheck.log";;
    esac
else
    row memcheck SKIP "no compute-sanitizer, or no time left"
fi

log "total: $(($(date +%s) - START)) s"
{ printf '\n%-26s %-6s %s\n' stage result detail; cat "$TABLE"; } | tee -a "$SUMMARY"
rm -f "$TABLE"
exit $failed
