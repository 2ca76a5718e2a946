#!/bin/sh
# tests/cuda_dp.sh — data parallel training on GPUs with NCCL (kernels/cuda/cuda_dp.c,
# compiler/run_dist_cuda.c; docs/cuda.md "Data parallel"). Needs a GPU: exits 77 with the
# reason without one (this is what it does in `make check` on a machine without a GPU, or in a
# build without CUDA); scripts/gpu-check.sh runs it on the GPU machine.
#
# A toy MLP (16 -> 32 -> dropout 0.3 -> 4, Adam) on 640 rows, batch 32, 2 epochs (40 steps),
# `parallel = data`. Checked:
#  1. `dtlc run -n 1 --backend cuda` (the data-parallel path at world size 1: GRAD and UPDATE
#     plans, NCCL allreduce of the buckets on a second stream, CUDA Graph replay) trains what
#     the plain cuda run trains (both with the one multi-tensor Adam launch, under data
#     parallelism the UPDATE plan's): the checkpoints agree within 1e-5 relative and the epoch
#     lines' losses and accuracies are equal; the same with one bucket per gradient
#     (DTL_BUCKET_MB tiny: several allreduces overlapping backward) and without graph capture
#     (DTL_CUDA_GRAPH=0);
#  2. the watchdog at world size 1: DTL_TEST_NCCL_HANG=5 holds step 5's launch on the GPU, so
#     its allreduces never complete; with DTL_TIMEOUT=2 the run fails within seconds, naming
#     the collective (bucket, size, step, the .dtl line) and saying the communicator was
#     aborted;
#  3. with two GPUs and a build with libfabric: -n 2 trains what one process trains (within
#     1e-4: the halves' sums round differently), and DTL_TEST_NCCL_STALL=1:5 (rank 1 stops
#     issuing collectives before step 5) makes rank 0 fail within DTL_TIMEOUT=3 naming rank 1;
#     DTL_TEST_NCCL_STALL=1:0 (rank 1 never calls ncclCommInitRank) ends rank 0 after
#     DTL_TIMEOUT=3 with dtlc's error form and status 2.
set -u
DTLC=${DTLC:-${DTL_BUILDDIR:-.}/dtlc}
CMP=${DTL_BUILDDIR:-.}/tests/unit/st_compare
if [ ! -x "$DTLC" ] || [ ! -x "$CMP" ]; then
    echo "$0: no dtlc or st_compare (set DTL_BUILDDIR)" >&2
    exit 99
fi
DTLC=$(cd "$(dirname "$DTLC")" && pwd)/$(basename "$DTLC")
CMP=$(cd "$(dirname "$CMP")" && pwd)/$(basename "$CMP")
here=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/dtl-cuda-dp.XXXXXX") || exit 99
trap 'rm -rf "$T"' EXIT
dir=$T   # (train_lib.sh, in a subshell for its toy_data, makes a T of its own)
(DTLC=$DTLC; . "$here/train_lib.sh"; toy_data "$dir" 640 7 train.csv; toy_data "$dir" 100 11 test.csv)
cd "$T" || exit 99
(. "$here/train_lib.sh"; ddp_model 2) > net.dtl
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }
# The epoch lines without their timings.
summary() { grep 'epoch ' "$1" | sed 's/  seconds.*//; s/^\[0\] //'; }

# 0. The plain cuda run (one process, no launcher: the ordinary path), or the reason to skip.
if ! timeout 120 "$DTLC" run net.dtl --backend cuda --progress=none --save plain.st \
        > plain.out 2>&1; then
    if grep -Eq 'no usable CUDA device|no CUDA device|this build has no CUDA|cannot load the CUDA plugin|no CUDA plugin' plain.out; then
        echo "$0: SKIP: no GPU here: $(grep -m1 error plain.out)"
        exit 77
    fi
    cat plain.out >&2
    bad "the plain cuda run failed"
    exit 1
fi
echo "plain cuda run:"; summary plain.out

# 1. -n 1: NCCL at world size 1, the whole data-parallel path.
dp1() {   # NAME [VAR=VALUE...]
    name=$1; shift
    if ! env "$@" DTL_CUDA_VERBOSE=1 timeout 180 "$DTLC" run -n 1 net.dtl --backend cuda \
            --progress=none --save "$name.st" > "$name.out" 2>&1; then
        cat "$name.out" >&2
        bad "$name: dtlc run -n 1 --backend cuda failed"
        return
    fi
    grep -q 'dtl cuda: rank 0 of 1: NCCL [0-9.]* on device 0' "$name.out" ||
        bad "$name: no NCCL communicator was made (DTL_CUDA_VERBOSE says: $(grep 'dtl cuda' "$name.out" | head -3))"
    grep -q 'dtl cuda: one multi-tensor Adam launch updates' "$name.out" ||
        bad "$name: the UPDATE plan has no multi-tensor Adam launch"
    if [ "$(summary "$name.out")" != "$(summary plain.out)" ]; then
        bad "$name: the epoch lines differ from the plain run's:"
        summary "$name.out" >&2
    fi
    if ! "$CMP" plain.st "$name.st" 1e-5 step epoch epoch_step > "$name.cmp" 2>&1; then
        cat "$name.cmp" >&2
        bad "$name: its checkpoint differs from the plain run's"
    fi
    echo "$name: $(grep -m1 'NCCL' "$name.out" | sed 's/^\[0\] //'); $(tail -1 "$name.cmp")"
}
dp1 dp1
dp1 dp1_buckets DTL_BUCKET_MB=0.0001
dp1 dp1_nograph DTL_CUDA_GRAPH=0

# 2. The watchdog on one GPU: step 5 never starts on the device.
t0=$(date +%s)
if DTL_TEST_NCCL_HANG=5 DTL_TIMEOUT=2 timeout 120 "$DTLC" run -n 1 net.dtl --backend cuda \
        --progress=none > hang.out 2>&1; then
    bad "the hung run succeeded"
fi
t1=$(date +%s)
cat hang.out | grep -v 'epoch ' | head -5
grep -q 'NCCL allreduce f32\[[0-9]*\] ([^)]*bucket 1 of [0-9]*, step 5) for gradients of .* @ net.dtl:[0-9]* has not completed after [0-9.]* s (DTL_TIMEOUT=2)' hang.out ||
    bad "the watchdog's message is missing or wrong"
grep -q 'the NCCL communicator is aborted' hang.out || bad "no word of ncclCommAbort"
[ $((t1 - t0)) -le 60 ] || bad "the hung run took $((t1 - t0)) s to fail (DTL_TIMEOUT=2)"

# 3. Two GPUs: -n 2, and a rank that stops issuing collectives.
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
if [ "${ngpu:-0}" -ge 2 ]; then
    if ! timeout 180 "$DTLC" run -n 2 net.dtl --backend cuda --progress=none --save dp2.st \
            > dp2.out 2>&1; then
        if grep -q 'libfabric' dp2.out; then
            echo "(-n 2: skipped, this build has no libfabric: $(grep -m1 error dp2.out))"
            ngpu=0
        else
            cat dp2.out >&2
            bad "dtlc run -n 2 --backend cuda failed"
        fi
    elif ! "$CMP" plain.st dp2.st 1e-4 step epoch epoch_step > dp2.cmp 2>&1; then
        cat dp2.cmp >&2
        bad "-n 2: the checkpoint differs from one process's"
    else
        echo "-n 2: $(tail -1 dp2.cmp)"
    fi
fi
if [ "${ngpu:-0}" -ge 2 ]; then
    t0=$(date +%s)
    if DTL_TEST_NCCL_STALL=1:5 DTL_TIMEOUT=3 timeout 120 "$DTLC" run -n 2 net.dtl \
            --backend cuda --progress=none > stall.out 2>&1; then
        bad "the stalled run succeeded"
    fi
    t1=$(date +%s)
    grep -v 'epoch ' stall.out | head -6
    grep -q '\[0\].*rank 0: NCCL allreduce .*step 5.* (DTL_TIMEOUT=3): waiting for rank 1' stall.out ||
        bad "rank 0 did not name rank 1 and the collective"
    [ $((t1 - t0)) -le 60 ] || bad "the stalled run took $((t1 - t0)) s to fail"
    # rank 1 never calls ncclCommInitRank: rank 0's watchdog ends it after DTL_TIMEOUT, in
    # dtlc's error form and status (NCCL cannot abort a communicator it has not made)
    t0=$(date +%s)
    DTL_TEST_NCCL_STALL=1:0 DTL_TIMEOUT=3 timeout 120 "$DTLC" run -n 2 net.dtl \
        --backend cuda --progress=none > istall.out 2>&1
    rc=$?
    t1=$(date +%s)
    grep -v 'epoch ' istall.out | head -6
    [ $rc -eq 2 ] || bad "the run with a rank missing at ncclCommInitRank exited $rc, not 2"
    grep -q '\[0\] dtlc: error: rank 0: ncclCommInitRank (2 ranks, device [0-9]*) has not completed after [0-9.]* s (DTL_TIMEOUT=3): a rank has not joined' istall.out ||
        bad "rank 0 did not say that ncclCommInitRank did not complete"
    [ $((t1 - t0)) -le 60 ] || bad "the run with a rank missing at start took $((t1 - t0)) s to fail"
else
    echo "(-n 2 and the stalled rank: need two GPUs; this machine has ${ngpu:-0})"
fi
exit $fail
