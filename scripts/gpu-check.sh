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
# Stages: build; test_cuda; NCCL data parallel (tests/cuda_dp.sh); the REPL session
# tests/repl/cuda.in; the example trains 10 epochs, then 3 with --precision bf16
# (against the f32 run); benchmark (a) (the example's
# steps/s vs PyTorch eager and compiled); (b) MLP 4096-4096-4096-10 at batch 4096 in f32,
# tf32 and bf16 vs PyTorch (bench/gpu_train_dtl, bench/gpu_mlp_big.py); (c) one full epoch
# with data loading, dtlc run vs PyTorch with a DataLoader (bench/gpu_epoch.py); LeNet
# (examples/lenet.dtl, conv2d + pooling) one epoch; the character transformer 20 steps
# against ref (ROW kernels, the clipping kernel); memcheck. Every stage has a time limit
# (the whole script at most about 8 minutes, $DTL_GPU_BUDGET seconds: 480); a failing stage
# is reported and the next one runs. Without a GPU it stops after the build, saying so.
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
BUDGET=${DTL_GPU_BUDGET:-480}
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
    make -j"$JOBS" tests/unit/test_cuda tests/unit/st_compare bench/gpu_mlp_dtl \
        bench/gpu_train_dtl
    make bench/gpu_gemm || echo "bench/gpu_gemm not built (it needs cuBLASLt); going on"
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
# (160 s: each op case also prepares a generated-kernel plan, compiled with NVRTC)
(cd "$BUILD" && timeout "$(limit 160)" ./tests/unit/test_cuda) > "$OUT/test_cuda.log" 2>&1
rc=$?
sumline=$(grep -E 'checks, [0-9]+ failed' "$OUT/test_cuda.log" | tail -1)
case $rc in
0) row test_cuda ok "$sumline ($(($(date +%s) - t0)) s)";;
77) failed=1; row test_cuda SKIP "$(tail -1 "$OUT/test_cuda.log")";;
124) failed=1; row test_cuda FAIL "timed out";;
*) failed=1; row test_cuda FAIL "exit $rc: $sumline; see test_cuda.log"
   grep -E 'FAIL|failed' "$OUT/test_cuda.log" | head -15 | tee -a "$SUMMARY";;
esac

# ---- 2b. NCCL data parallel (tests/cuda_dp.sh): -n 1 through the whole data-parallel path
# equals the plain cuda run; the watchdog ends a step that never completes; -n 2 and a stalled
# rank with two GPUs. Its output goes to test_cuda.log after a separator line.
t0=$(date +%s)
echo "--- NCCL data parallel: tests/cuda_dp.sh ---" >> "$OUT/test_cuda.log"
(cd "$BUILD" && DTL_BUILDDIR=. timeout "$(limit 150)" sh "$SRC/tests/cuda_dp.sh") \
    >> "$OUT/test_cuda.log" 2>&1
rc=$?
case $rc in
0) n2=$(grep -q '^(-n 2' "$OUT/test_cuda.log" && echo "-n 2 not run: one GPU" || echo "-n 2 ok")
   row "nccl data parallel" ok "-n 1 == plain cuda run, watchdog ok, $n2 ($(($(date +%s) - t0)) s)";;
77) failed=1; row "nccl data parallel" SKIP "$(tail -1 "$OUT/test_cuda.log" | cut -c1-110)";;
124) failed=1; row "nccl data parallel" FAIL "timed out; see test_cuda.log";;
*) failed=1; row "nccl data parallel" FAIL "exit $rc; see test_cuda.log"
   grep -E '^FAIL' "$OUT/test_cuda.log" | head -8 | tee -a "$SUMMARY";;
esac

# ---- 2c. the REPL on the GPU: tests/repl/cuda.in (expressions on session tensors, training
# switched between ref and cuda; its output must be ref's). Output to test_cuda.log.
t0=$(date +%s)
echo "--- the REPL session tests/repl/cuda.in ---" >> "$OUT/test_cuda.log"
DTLC=$BUILD/dtlc DTL_TEST_TIMEOUT=$(limit 60) sh "$SRC/tests/repl.sh" "$SRC/tests/repl/cuda.in" \
    >> "$OUT/test_cuda.log" 2>&1
rc=$?
case $rc in
0) row "repl :backend cuda" ok "tests/repl/cuda.in equals ref's session ($(($(date +%s) - t0)) s)";;
*) failed=1; row "repl :backend cuda" FAIL "exit $rc; see test_cuda.log (the diff)"
   grep -E '^[-+][^-+]' "$OUT/test_cuda.log" | head -8 | tee -a "$SUMMARY";;
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
    gen=$(grep -c 'fused kernel program, generated kernels' "$OUT/train.log")
    row "train 10 epochs (cuda)" ok "test accuracy $acc (>= 0.875), $sps samples/s in the last epoch, $(($(date +%s) - t0)) s; $gen plans with NVRTC kernels"
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

# ---- 3b. mixed precision: the example with --precision bf16 tracks the f32 run -----------------
# 3 epochs with bf16 matrix products (cuBLAS bf16 operands, f32 accumulation, f32 weights):
# epoch 3's test accuracy within 0.01 and train loss within 3% of the f32 run's epoch 3
# (train_metrics.jsonl of stage 3).
# (Its output goes to train.log after a separator line; its metrics to $WORK.)
t0=$(date +%s)
mkdir -p "$WORK"
echo "--- mixed precision: dtlc run --precision bf16 --epochs 3 ---" >> "$OUT/train.log"
timeout "$(limit 60)" "$BUILD/dtlc" run "$SRC/examples/mnist_mlp.dtl" --backend cuda \
    --data "$DATA" --epochs 3 --precision bf16 --progress none \
    --metrics "$WORK/train_bf16.jsonl" >> "$OUT/train.log" 2>&1
rc=$?
e3() {   # e3 KEY FILE: KEY of epoch 3
    sed -n "s/.*\"epoch\": 3,.*\"$1\": \([-0-9.e+]*\).*/\1/p" "$2" | head -1
}
bacc=$(e3 test_accuracy "$WORK/train_bf16.jsonl"); facc=$(e3 test_accuracy "$OUT/train_metrics.jsonl")
bl=$(e3 train_loss "$WORK/train_bf16.jsonl"); fl=$(e3 train_loss "$OUT/train_metrics.jsonl")
if [ $rc -eq 0 ] && [ -n "$bacc" ] && [ -n "$facc" ] && [ -n "$bl" ] && [ -n "$fl" ] &&
   awk "BEGIN { d = $bacc - $facc; l = ($bl - $fl) / $fl
                exit !(d <= 0.01 && d >= -0.01 && l <= 0.03 && l >= -0.03) }"; then
    row "train bf16 3 epochs" ok "test accuracy $bacc (f32: $facc), train loss $bl (f32: $fl), $(($(date +%s) - t0)) s"
else
    failed=1
    row "train bf16 3 epochs" FAIL "exit $rc, accuracy '${bacc:-none}' (f32 '${facc:-none}'), loss '${bl:-none}' (f32 '${fl:-none}'); see train.log"
    tail -3 "$OUT/train.log" | tee -a "$SUMMARY"
fi

# ---- 4. the benchmark: dtl cuda vs PyTorch eager vs torch.compile(reduce-overhead) --------------
PY=${DTL_PYTHON:-python3}
: > "$OUT/bench.jsonl"
t0=$(date +%s)
# fused with generated (NVRTC) kernels (the default), fused on the interpreter kernel, one
# launch per node
for cfg in "DTL_CUDA_FUSE=1" "DTL_CUDA_FUSE=1 DTL_CUDA_CODEGEN=0" "DTL_CUDA_FUSE=0"; do
    env $cfg timeout "$(limit 40)" "$BUILD/bench/gpu_mlp_dtl" --batch 32 --steps 3000 \
        --warmup 300 >> "$OUT/bench.jsonl" 2>> "$OUT/bench.log"
    rc=$?
    [ $rc -eq 0 ] || { failed=1; row "bench dtl ($cfg)" FAIL "exit $rc; see bench.log"; }
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

# ---- 4b. benchmark (b): MLP 4096-4096-4096-10, batch 4096, f32 / tf32 / bf16, vs PyTorch -------
# dtl: bench/gpu_train_dtl on bench/mlp4096.dtl (exit 77: this build's backend lacks the
# precision); PyTorch: bench/gpu_mlp_big.py, one process for the three. Both sides feed the
# batch (64 MB) from page-locked host memory; dtl once more with it in pageable memory (label
# "mlp4096-pageable": the plan's staging path). Results are appended to bench.jsonl (label
# "mlp4096"), messages to bench.log.
secs() { awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $1 }"; }
t0=$(date +%s)
for cfg in "f32 pinned" "tf32 pinned" "bf16 pinned" "bf16 pageable"; do
    set -- $cfg
    label=mlp4096; [ "$2" = pageable ] && label=mlp4096-pageable
    timeout "$(limit 45)" "$BUILD/bench/gpu_train_dtl" --file "$SRC/bench/mlp4096.dtl" \
        --label $label --precision $1 --host $2 --batch 4096 --steps 100 --warmup 10 \
        >> "$OUT/bench.jsonl" 2>> "$OUT/bench.log"
    rc=$?
    case $rc in
    0) ;;
    77) row "bench (b) dtl $1 $2" SKIP "$(tail -1 "$OUT/bench.log" | cut -c1-110)";;
    *) failed=1; row "bench (b) dtl $1 $2" FAIL "exit $rc; see bench.log";;
    esac
done
timeout "$(limit 90)" "$PY" "$SRC/bench/gpu_mlp_big.py" --precision f32,tf32,bf16 \
    --batch 4096 --steps 100 --warmup 10 >> "$OUT/bench.jsonl" 2>> "$OUT/bench.log"
rc=$?
[ $rc -eq 0 ] || { failed=1; row "bench (b) torch" FAIL "exit $rc; see bench.log"; }
big_rows=$("$PY" - "$OUT/bench.jsonl" <<'EOF' 2>/dev/null
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
rows = [r for r in rows if r.get("label") == "mlp4096"]
for prec in ("f32", "tf32", "bf16"):
    d = [r for r in rows if r["precision"] == prec and r["impl"].startswith("dtl")]
    t = [r for r in rows if r["precision"] == prec and r["impl"].startswith("torch")]
    if not d and not t:
        continue
    ds = d[0]["samples_per_s"] if d else None
    ts = t[0]["samples_per_s"] if t else None
    txt = f"dtl {ds:.0f}" if ds else "dtl -"
    txt += f", torch {ts:.0f} samples/s" if ts else ", torch -"
    if ds and ts:
        txt += f"; dtl/torch {ds / ts:.2f}x (target >= 0.95)"
    print(f"bench (b) mlp4096 {prec}|{txt}")
pg = [json.loads(l) for l in open(sys.argv[1])
      if l.strip().startswith("{") and '"mlp4096-pageable"' in l]
tb = [r for r in rows if r["precision"] == "bf16" and r["impl"].startswith("torch")]
for r in pg:
    txt = f"dtl {r['samples_per_s']:.0f} samples/s from pageable memory"
    if tb:
        txt += f"; /torch bf16 (pinned) {r['samples_per_s'] / tb[0]['samples_per_s']:.2f}x"
    print(f"bench (b) mlp4096 {r['precision']} pageable|{txt}")
EOF
)
echo "$big_rows" | while IFS='|' read -r name detail; do
    [ -n "$name" ] && row "$name" "-" "$detail"
done
echo "bench (b): $(($(date +%s) - t0)) s" >> "$SUMMARY"

# ---- 4c. benchmark (c): one full Fashion-MNIST epoch, data loading included, vs PyTorch -------
# Both timed by the shell from process start to exit (dtlc: reading the .gz files, one epoch
# at batch 32, the test accuracy; PyTorch: bench/gpu_epoch.py with a DataLoader, the same).
# dtlc's output goes to train.log after a separator line.
t1=$(date +%s.%N)
echo "--- benchmark (c): dtlc run --epochs 1 ---" >> "$OUT/train.log"
log1=$(timeout "$(limit 60)" "$BUILD/dtlc" run "$SRC/examples/mnist_mlp.dtl" --backend cuda \
    --data "$DATA" --epochs 1 --progress none 2>&1)
rc=$?
dsec=$(secs "$t1")
echo "$log1" >> "$OUT/train.log"
dacc=$(echo "$log1" | sed -n 's/.*test_accuracy \([0-9.]*\).*/\1/p' | tail -1)
t1=$(date +%s.%N)
ep=$(timeout "$(limit 90)" "$PY" "$SRC/bench/gpu_epoch.py" --data "$DATA" --epochs 1 \
    2>> "$OUT/bench.log")
trc=$?
tsec=$(secs "$t1")
[ -n "$ep" ] && echo "$ep" >> "$OUT/bench.jsonl"
tin=$(echo "$ep" | sed -n 's/.*"total_seconds": \([0-9.]*\).*/\1/p')
tacc=$(echo "$ep" | sed -n 's/.*"test_accuracy": \([0-9.]*\).*/\1/p')
if [ $rc -eq 0 ]; then
    row "bench (c) epoch dtl" "-" "${dsec} s wall (process), test accuracy ${dacc:-?}"
else
    failed=1; row "bench (c) epoch dtl" FAIL "exit $rc after ${dsec} s; see train.log"
fi
if [ $trc -eq 0 ]; then
    row "bench (c) epoch torch" "-" "${tsec} s wall (process; ${tin:-?} s after import torch), test accuracy ${tacc:-?}; dtl/torch time $(awk "BEGIN { printf \"%.2f\", $dsec / $tsec }")x"
else
    failed=1; row "bench (c) epoch torch" FAIL "exit $trc after ${tsec} s; see bench.log"
fi

# ---- 4d. LeNet (conv2d + max pooling) trains one epoch on the GPU ----------------------------
t1=$(date +%s.%N)
echo "--- LeNet: dtlc run examples/lenet.dtl --epochs 1 ---" >> "$OUT/train.log"
log1=$(DTL_CUDA_VERBOSE=1 timeout "$(limit 90)" "$BUILD/dtlc" run "$SRC/examples/lenet.dtl" \
    --backend cuda --data "$DATA" --epochs 1 --progress none 2>&1)
rc=$?
lsec=$(secs "$t1")
echo "$log1" >> "$OUT/train.log"
lacc=$(echo "$log1" | sed -n 's/.*test_accuracy \([0-9.]*\).*/\1/p' | tail -1)
lsps=$(echo "$log1" | sed -n 's/.*samples\/s \([0-9]*\).*/\1/p' | tail -1)
if [ $rc -eq 0 ] && [ -n "$lacc" ] && awk "BEGIN { exit !($lacc >= 0.80) }"; then
    row "lenet 1 epoch (cuda)" ok "test accuracy $lacc (>= 0.80), ${lsps:-?} samples/s, ${lsec} s"
else
    failed=1
    row "lenet 1 epoch (cuda)" FAIL "exit $rc, accuracy '${lacc:-none}' after ${lsec} s; see train.log"
    tail -3 "$OUT/train.log" | tee -a "$SUMMARY"
fi

# ---- 4e. the character transformer (ROW kernels, the clipping kernel) on cuda against ref ----
# 20 steps on a corpus made of docs/ (blank lines as record separators), same seed: the two
# backends' train and test losses must agree within 2 % (f32 sums in other orders), and the
# cuda plan must be the fused program with generated kernels. The CPU side is the reference
# backend (this build is --without-llvm: the GPU machine has no LLVM; 37 s on the 2-core dev VM).
CT=$WORK/ct
rm -rf "$CT" && mkdir -p "$CT/corpus"
cat "$SRC"/docs/*.md | sed 's/^$/%/' > "$CT/corpus/docs.txt"
sed "s|\"/usr/share/games/fortunes\"|\"$CT/corpus\"|" "$SRC/examples/char_transformer.dtl" > "$CT/ct.dtl"
t1=$(date +%s.%N)
echo "--- char transformer: 20 steps, cuda then ref ---" >> "$OUT/train.log"
ctl() { (cd "$CT" && DTL_CUDA_VERBOSE=1 timeout "$(limit 60)" "$BUILD/dtlc" run ct.dtl --backend "$1" \
    --batch 16 --steps 20 --limit-test 64 --seed 3 --progress none --save "ct-$1.st" 2>&1); }
logc=$(ctl cuda); rcc=$?
logl=$(ctl ref); rcl=$?
csec=$(secs "$t1")
printf '%s\n%s\n' "$logc" "$logl" >> "$OUT/train.log"
ctloss() { echo "$1" | sed -n "s/.*$2 \([0-9.]*\).*/\1/p" | tail -1; }
ctc=$(ctloss "$logc" train_loss) ctt=$(ctloss "$logc" test_loss)
lc=$(ctloss "$logl" train_loss) lt=$(ctloss "$logl" test_loss)
if [ $rcc -eq 0 ] && [ $rcl -eq 0 ] && [ -n "$ctc" ] && [ -n "$lc" ] &&
    echo "$logc" | grep -q "fused kernel program, generated kernels" &&
    awk "BEGIN { d1 = $ctc - $lc; d2 = $ctt - $lt; if (d1 < 0) d1 = -d1; if (d2 < 0) d2 = -d2;
                 exit !(d1 <= 0.02 * $lc && d2 <= 0.02 * $lt) }"; then
    row "char transformer (cuda)" ok "train/test loss $ctc/$ctt vs ref $lc/$lt after 20 steps, ${csec} s"
else
    failed=1
    row "char transformer (cuda)" FAIL "exit $rcc/$rcl, loss '${ctc:-none}'/'${ctt:-none}' vs ref '${lc:-none}'/'${lt:-none}'; see train.log"
    echo "$logc" | grep "dtl cuda" | tail -5 | tee -a "$SUMMARY"
fi

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
