#!/bin/sh
# tests/cuda_emu.sh — the CUDA plugin's host code on the CPU. tests/cuda_emu/libdtlcuda_emu.so
# is the plugin built on tests/cuda_emu/cuda_emu.c instead of the GPU: a stand-in for the CUDA
# runtime, cuBLAS and the kernels that computes what the reference backend computes and runs
# each stream's work only when something waits for it (so a forgotten wait shows as stale or
# poisoned memory), and whose "NVRTC" compiles the generated kernels for the CPU with the
# host's C++ compiler and tests/unit/cuda_emu.h (with the build's sanitizers; without a C++
# compiler the plans run without them, and the stages that need them say so), and
# whose cuBLAS, cuBLASLt and NCCL (one rank) are emulated. Needs a build with CUDA (77
# otherwise).
# Checked, with DTL_CUDA_PLUGIN set to it:
#  1. tests/unit/test_cuda (DTL_CUDA_TEST_EMU=1: the interpreter kernels): every op, forward
#     and gradient, every dtype, fused and one launch per node, each plan run twice (the
#     second a replayed CUDA Graph), poisoned memory, the multi-tensor Adam launch, the
#     example MLP's training and its mixed-precision (bf16, tf32) steps, against the
#     reference backend;
#  2. the REPL session tests/repl/cuda.in: expressions on session tensors, training switched
#     between ref and cuda and back, checkpoints saved on either;
#  3. `dtlc run --backend cuda` of a toy MLP with dropout, with generated kernels and on the
#     interpreter, trains what `--backend ref` trains (the same epoch lines, checkpoints
#     within 1e-6), and a run stopped at step 7 and resumed on cuda ends where the whole run
#     ends;
#  4. with generated kernels, the example character transformer (ROW kernels: softmax, layer
#     norm; the 51-input gradient clipping kernel) for a step: the plan is the fused program
#     with generated kernels and its losses are ref's;
#  5. tests/cuda_dp.sh with the emulator's one-rank NCCL (DTL_NCCL_LIB naming this plugin):
#     `dtlc run -n 1` through the whole data-parallel path (GRAD and UPDATE plans, buckets
#     and their allreduces on the communication stream, the fork and join in a captured
#     graph, the Adam launch on averaged gradients) equals the plain run; the watchdog ends a
#     step that never completes.
#  6. on the second build, tests/cuda_emu/libdtlcuda_emu_dev.so, whose kernels are the GPU's own
#     source (kernels/cuda/ops.cu and dnn.cu compiled for the CPU: tests/cuda_emu/device.h)
#     instead of the reference's: test_cuda again (every op, forward and gradient, conv2d and
#     pooling, the multi-tensor Adam, the MLP's training, against the reference backend), and
#     the toy run of 3 on the interpreter kernels trains what ref trains (epoch lines, checkpoint
#     within 1e-6).
. "$(dirname "$0")/train_lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
B=${DTL_BUILDDIR:-$(dirname "$DTLC")}
EMU=$B/tests/cuda_emu/libdtlcuda_emu.so
CMP=$B/tests/unit/st_compare
if [ ! -f "$EMU" ]; then
    echo "$0: SKIP: no $EMU (a build without CUDA)"
    exit 77
fi
DTL_CUDA_PLUGIN=$EMU
# (the emulated "cubins" are host shared objects: cached in this test's directory only)
XDG_CACHE_HOME=$T/cache
export DTL_CUDA_PLUGIN XDG_CACHE_HOME

# 1. test_cuda
if ! DTL_CUDA_TEST_EMU=1 "$B/tests/unit/test_cuda" > "$T/test_cuda.out" 2>&1; then
    grep -E 'FAIL|failed|DTL_TEST_SEED|: loss ref' "$T/test_cuda.out" | head -20
    echo "FAIL: tests/unit/test_cuda on the emulated plugin"
    fail=1
fi
echo "test_cuda: $(grep -E '^device:' "$T/test_cuda.out"); $(tail -n 1 "$T/test_cuda.out")"

# Are generated kernels emulated here?
toy_data "$T" 96 3 train.csv
toy_data "$T" 40 4 test.csv
toy_model "$T/net.dtl" 12 0.2
R="run $T/net.dtl --progress none"
DTL_CUDA_VERBOSE=1 "$DTLC" $R --backend cuda --steps 1 > "$T/probe" 2>&1
if grep -q 'fused kernel program, generated kernels' "$T/probe"; then
    gen=yes
else
    gen=no
    echo "(generated kernels are not emulated here: $(grep -m1 'generated kernels fall back\|no generated kernels' "$T/probe" | cut -c1-160))"
fi

# 2. the REPL session
if ! DTLC=$DTLC sh "$here/repl.sh" "$here/repl/cuda.in"; then
    echo "FAIL: the REPL session tests/repl/cuda.in on the emulated plugin"
    fail=1
fi

# 3. dtlc run: cuda trains what ref trains; a resumed cuda run is the whole run
epochs() { grep 'epoch ' "$1" | sed 's/  seconds.*//'; }
# like_ref WHAT OUT CHECKPOINT: a run trained what the ref run trained (the same epoch lines,
# the checkpoint within 1e-6)
like_ref() {
    if [ -z "$(epochs "$T/ref.out")" ] || [ "$(epochs "$T/ref.out")" != "$(epochs "$2")" ]; then
        echo "FAIL: $1: the epoch lines differ from ref's (or there are none):"
        epochs "$T/ref.out"
        epochs "$2"
        fail=1
    fi
    if ! "$CMP" "$T/ref.st" "$3" 1e-6 step epoch > "$T/cmp" 2>&1; then
        cat "$T/cmp"
        echo "FAIL: $1: the checkpoint differs from ref's"
        fail=1
    fi
}
check "ref run" "$DTLC" $R --backend ref --save "$T/ref.st" && cp "$T/out" "$T/ref.out"
for codegen in 1 0; do
    [ $codegen = 1 ] && [ $gen = no ] && continue
    c="cuda run (DTL_CUDA_CODEGEN=$codegen)"
    export DTL_CUDA_CODEGEN=$codegen
    check "$c" "$DTLC" $R --backend cuda --save "$T/cuda.st" && cp "$T/out" "$T/cuda.out"
    like_ref "$c" "$T/cuda.out" "$T/cuda.st"
    check "$c, stopped at step 7" "$DTLC" $R --backend cuda --steps 7 --save "$T/half.st"
    check "$c, resumed" "$DTLC" $R --backend cuda --resume "$T/half.st" --save "$T/rest.st"
    same "$c: resumed" "$T/cuda.st" "$T/rest.st"
    echo "$c: $(epochs "$T/cuda.out" | tail -n 1)"
done
unset DTL_CUDA_CODEGEN

# 4. the character transformer with generated kernels
if [ $gen = yes ]; then
    mkdir -p "$T/ct/corpus"
    cat "$here"/../docs/*.md | sed 's/^$/%/' > "$T/ct/corpus/docs.txt"
    sed "s|\"/usr/share/games/fortunes\"|\"$T/ct/corpus\"|" "$here/../examples/char_transformer.dtl" \
        > "$T/ct/ct.dtl"
    ct() { (cd "$T/ct" && DTL_CUDA_VERBOSE=1 "$DTLC" run ct.dtl --backend "$1" --batch 1 --steps 1 \
            --limit-test 1 --seed 3 --progress none --save "ct-$1.st" > "out-$1" 2>&1); }
    if ! ct ref || ! ct cuda; then
        tail -n 5 "$T/ct/out-ref" "$T/ct/out-cuda"
        echo "FAIL: the character transformer did not run"
        fail=1
    elif ! grep -q 'plan of [0-9]* nodes: fused kernel program, generated kernels' "$T/ct/out-cuda"
    then
        grep 'dtl cuda' "$T/ct/out-cuda" | head -n 8
        echo "FAIL: the character transformer's step is not a fused program of generated kernels"
        fail=1
    elif [ "$(epochs "$T/ct/out-ref")" != "$(epochs "$T/ct/out-cuda")" ]; then
        epochs "$T/ct/out-ref"
        epochs "$T/ct/out-cuda"
        echo "FAIL: the character transformer's losses on cuda are not ref's"
        fail=1
    else
        echo "character transformer: $(epochs "$T/ct/out-cuda")"
    fi
fi

# 5. NCCL data parallelism, one rank
if ! DTL_NCCL_LIB=$EMU DTL_BUILDDIR=$B sh "$here/cuda_dp.sh" > "$T/dp.out" 2>&1; then
    cat "$T/dp.out"
    echo "FAIL: tests/cuda_dp.sh on the emulated plugin"
    fail=1
fi
grep -E '^dp1' "$T/dp.out" | sed 's/^/cuda_dp.sh: /'

# 6. the GPU's kernels themselves, on the CPU
DEV=$B/tests/cuda_emu/libdtlcuda_emu_dev.so
if [ ! -f "$DEV" ]; then
    echo "(no $DEV: a build without a C++17 compiler; kernels/cuda/*.cu's device code not run)"
else
    if ! DTL_CUDA_PLUGIN=$DEV DTL_CUDA_TEST_EMU=1 "$B/tests/unit/test_cuda" \
            > "$T/test_cuda_dev.out" 2>&1; then
        grep -E 'FAIL|failed|DTL_TEST_SEED|: loss ref' "$T/test_cuda_dev.out" | head -20
        echo "FAIL: tests/unit/test_cuda on the GPU's kernels (libdtlcuda_emu_dev.so)"
        fail=1
    fi
    echo "test_cuda on the GPU's kernels: $(tail -n 1 "$T/test_cuda_dev.out")"
    c="cuda run on the GPU's kernels"
    check "$c" env DTL_CUDA_PLUGIN="$DEV" DTL_CUDA_CODEGEN=0 "$DTLC" $R --backend cuda \
        --save "$T/dev.st"
    like_ref "$c" "$T/out" "$T/dev.st"
fi
finish
