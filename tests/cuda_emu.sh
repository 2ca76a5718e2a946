#!/bin/sh
# tests/cuda_emu.sh — the CUDA plugin's host code on the CPU. tests/cuda_emu/libdtlcuda_emu.so
# is the plugin built on tests/cuda_emu/cuda_emu.c instead of the GPU: a stand-in for the CUDA
# runtime, cuBLAS and the kernels that computes what the reference backend computes and runs
# each stream's work only when something waits for it (so a forgotten wait shows as stale or
# poisoned memory). No NVRTC, cuBLASLt, NCCL or bf16/tf32 products in it. Needs a build with
# CUDA (77 otherwise). Checked, with DTL_CUDA_PLUGIN set to it:
#  1. tests/unit/test_cuda (DTL_CUDA_TEST_EMU=1): every op, forward and gradient, every dtype,
#     fused and one launch per node, each plan run twice (the second a replayed CUDA Graph),
#     poisoned memory, the multi-tensor Adam launch and the example MLP's training, against
#     the reference backend;
#  2. the REPL session tests/repl/cuda.in: expressions on session tensors, training switched
#     between ref and cuda and back, checkpoints saved on either;
#  3. `dtlc run --backend cuda` of a toy MLP with dropout trains what `--backend ref` trains
#     (the same epoch lines, checkpoints within 1e-6), and a run stopped at step 7 and
#     resumed on cuda ends where the whole run ends.
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
export DTL_CUDA_PLUGIN

# 1. test_cuda
if ! DTL_CUDA_TEST_EMU=1 "$B/tests/unit/test_cuda" > "$T/test_cuda.out" 2>&1; then
    grep -E 'FAIL|failed' "$T/test_cuda.out" | head -20
    echo "FAIL: tests/unit/test_cuda on the emulated plugin"
    fail=1
fi
echo "test_cuda: $(grep -E '^device:' "$T/test_cuda.out"); $(tail -n 1 "$T/test_cuda.out")"

# 2. the REPL session
if ! DTLC=$DTLC sh "$here/repl.sh" "$here/repl/cuda.in"; then
    echo "FAIL: the REPL session tests/repl/cuda.in on the emulated plugin"
    fail=1
fi

# 3. dtlc run: cuda trains what ref trains; a resumed cuda run is the whole run
toy_data "$T" 96 3 train.csv
toy_data "$T" 40 4 test.csv
toy_model "$T/net.dtl" 12 0.2
R="run $T/net.dtl --progress none"
epochs() { grep 'epoch ' "$1" | sed 's/  seconds.*//'; }
check "ref run" "$DTLC" $R --backend ref --save "$T/ref.st" && cp "$T/out" "$T/ref.out"
check "cuda run" "$DTLC" $R --backend cuda --save "$T/cuda.st" && cp "$T/out" "$T/cuda.out"
if [ -z "$(epochs "$T/ref.out")" ] || [ "$(epochs "$T/ref.out")" != "$(epochs "$T/cuda.out")" ]
then
    echo "FAIL: the cuda run's epoch lines differ from ref's (or there are none):"
    epochs "$T/ref.out"
    epochs "$T/cuda.out"
    fail=1
fi
if ! "$CMP" "$T/ref.st" "$T/cuda.st" 1e-6 step epoch > "$T/cmp" 2>&1; then
    cat "$T/cmp"
    echo "FAIL: the cuda run's checkpoint differs from ref's"
    fail=1
fi
check "cuda run, stopped at step 7" "$DTLC" $R --backend cuda --steps 7 --save "$T/half.st"
check "cuda run, resumed" "$DTLC" $R --backend cuda --resume "$T/half.st" --save "$T/rest.st"
same "a resumed cuda run" "$T/cuda.st" "$T/rest.st"
echo "dtlc run: $(epochs "$T/cuda.out" | tail -n 1)"
finish
