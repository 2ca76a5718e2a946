#!/bin/sh
# tests/train_ddp.sh — `dtlc run` data parallel (parallel = data over N ranks): N ranks with
# a global batch of 32 compute what one rank with batch 32 computes.
#
# The ranks are processes of this host, started by `dtlc run -n N`, or, where a test needs one
# rank to differ, with DTL_RANK/DTL_WORLD_SIZE/DTL_COORDINATOR (comm_lib.sh: a random port, a
# deadline, nothing left behind). A toy MLP (16 -> 32 -> dropout 0.3 -> 4,
# Adam) on 640 rows: 20 steps an epoch, 50 steps in all (so an epoch boundary is crossed).
# Checked, comparing the checkpoints of rank 0 with tests/unit/st_compare (every param and
# Adam moment within 1e-5 relative, and the position):
#  1. -n 2 and -n 4 == one process, on the llvm backend and on ref; the summary lines of
#     rank 0 equal one process's (the global loss and accuracy), the other ranks print none;
#     (the update is sharded, ZeRO-1: each rank updates its part of the params and keeps
#     its part of the moments, gathered for the checkpoint); the same with
#     DTL_SHARD_UPDATE=0 (every rank runs the whole update); and SGD with momentum, clipping
#     by the global norm (a norm summed over the ranks' parts) and a cosine schedule with
#     warmup, at -n 2 and at -n 3 with batch 30 (parts of uneven length);
#  2. a checkpoint written at step 25 by 2 ranks, resumed by 1 and by 4 ranks, == 50 steps
#     of one process;
#  3. errors, every rank non-zero with the message: a batch that does not divide by the
#     ranks, no `parallel = data`, data(4) on 2 ranks, ranks that differ (--seed on one, or
#     DTL_BUCKET_MB, or DTL_SHARD_UPDATE: caught at start), and a rank killed with SIGKILL
#     mid-epoch (the others name it and the collective within seconds).
. "$(dirname "$0")/comm_lib.sh"

DTLC=${DTLC:-${DTL_BUILDDIR:-.}/dtlc}
CMP=${DTL_BUILDDIR:-.}/tests/unit/st_compare
if [ ! -x "$DTLC" ] || [ ! -x "$CMP" ]; then
    echo "$0: no dtlc or st_compare (set DTL_BUILDDIR)" >&2
    exit 99
fi
here=$(cd "$(dirname "$0")" && pwd)
dir=$T   # (train_lib.sh, in a subshell for its toy_data, makes a T of its own)
(DTLC=$DTLC; . "$here/train_lib.sh"; toy_data "$dir" 640 7 train.csv; toy_data "$dir" 100 11 test.csv)
W=$DTLC   # comm_lib's start runs "$W" ARGS in every rank
cd "$T" || exit 99
# Self-contained (no stdlib), so that this test depends on the runner only.
(. "$here/train_lib.sh"; ddp_model 3) > net.dtl
sed 's/^    parallel  = data$//' net.dtl > nopar.dtl
sed 's/^    optimizer = adam(lr = 1e-2)$/    optimizer = sgd(lr = 0.05, momentum = 0.9)\
    clip      = 0.5\
    schedule  = cosine(floor = 0.001)\
    warmup    = 5/' net.dtl > clip.dtl
grep -q 'clip      = 0.5' clip.dtl || { echo "FAIL: could not make clip.dtl"; exit 1; }
sed 's/^    parallel  = data$/    parallel  = data(4)/' net.dtl > data4.dtl

# same LABEL A B: the checkpoints agree (params and moments within 1e-5, same position).
same() {
    if ! "$CMP" "$2" "$3" 1e-5 step epoch epoch_step batch > cmp.out; then
        echo "FAIL: $1: $(cat cmp.out)"
        fail=1
    fi
}

# ok LABEL N: every rank exited 0 in time.
ok() {
    good=1
    [ "$hung" = 0 ] || { echo "FAIL: $1: hung"; good=0; }
    for i in $(seq 0 $(($2 - 1))); do
        eval "rc=\$rc_$i"
        [ "$rc" = 0 ] || { echo "FAIL: $1: rank $i exited $rc"; good=0; }
    done
    [ "$good" = 1 ] || { show "$1"; fail=1; }
}

# bad LABEL N ERE: every rank exited non-zero in time, with a message matching ERE.
bad() {
    good=1
    [ "$hung" = 0 ] || { echo "FAIL: $1: hung"; good=0; }
    for i in $(seq 0 $(($2 - 1))); do
        eval "rc=\$rc_$i"
        [ "$rc" != 0 ] || { echo "FAIL: $1: rank $i exited 0"; good=0; }
        grep -Eq -- "$3" "$1.err$i" || { echo "FAIL: $1: rank $i does not say /$3/"; good=0; }
    done
    [ "$good" = 1 ] || { show "$1"; fail=1; }
}

for be in llvm ref; do
    if ! "$DTLC" run net.dtl --backend $be --steps 50 --progress none --save one_$be.st \
         > one_$be.out 2> one_$be.err; then
        case $be in ref) ;; *) if grep -q "unknown backend" one_$be.err; then continue; fi ;; esac
        echo "FAIL: one process ($be): $(cat one_$be.err)"
        fail=1
        continue
    fi
    for n in 2 4; do
        [ $be = ref ] && [ $n = 4 ] && continue   # (ref is the slow one: 2 ranks suffice)
        if ! DTL_TIMEOUT=20 "$DTLC" run -n $n net.dtl --backend $be --steps 50 \
             --save n$n$be.st > eq.out 2> eq.err; then
            echo "FAIL: -n $n $be: $(cat eq.err)"
            fail=1
            continue
        fi
        same "-n $n $be vs one process" one_$be.st n$n$be.st
        sed 's/  seconds .*//' one_$be.out > one.sum
        sed -n 's/^\[0\] //p' eq.out | sed 's/  seconds .*//' > eq.sum
        if ! cmp -s one.sum eq.sum; then
            echo "FAIL: -n $n $be: rank 0's summary differs from one process's"
            diff one.sum eq.sum | sed 's/^/    /'
            fail=1
        fi
        if grep -v '^\[0\] ' eq.out eq.err; then
            echo "FAIL: -n $n $be: ranks other than 0 printed (above)"
            fail=1
        fi
    done
done

# The whole update on every rank (DTL_SHARD_UPDATE=0), and SGD + clipping + schedule sharded.
if DTL_TIMEOUT=20 DTL_SHARD_UPDATE=0 "$DTLC" run -n 2 net.dtl --steps 50 --save n2whole.st \
     > whole.out 2> whole.err; then
    same "-n 2 DTL_SHARD_UPDATE=0 vs one process" one_llvm.st n2whole.st
else
    echo "FAIL: -n 2 DTL_SHARD_UPDATE=0: $(cat whole.err)"
    fail=1
fi
for nb in "2 32" "3 30"; do
    set -- $nb
    if ! "$DTLC" run clip.dtl --batch "$2" --steps 40 --progress none --save clip1_$1.st \
         > clip1.out 2> clip1.err ||
       ! DTL_TIMEOUT=20 "$DTLC" run -n "$1" clip.dtl --batch "$2" --steps 40 \
         --save clipn_$1.st > clipn.out 2> clipn.err; then
        echo "FAIL: clip -n $1: $(cat clip1.err clipn.err)"
        fail=1
        continue
    fi
    same "SGD, clip, cosine: -n $1 vs one process (batch $2)" clip1_$1.st clipn_$1.st
done

# Resume at another world size.
DTL_TIMEOUT=20 "$DTLC" run -n 2 net.dtl --steps 25 --save half.st > half.out 2> half.err ||
    { echo "FAIL: -n 2 --steps 25: $(cat half.err)"; fail=1; }
cp half.st half4.st
"$DTLC" run net.dtl --resume half.st --steps 50 --save half.st --progress none > resume1.out \
    2> resume1.err ||
    { echo "FAIL: resume at -n 1: $(cat resume1.err)"; fail=1; }
same "saved at -n 2, resumed at -n 1" one_llvm.st half.st
DTL_TIMEOUT=20 "$DTLC" run -n 4 net.dtl --resume half4.st --steps 50 --save half4.st \
    > resume4.out 2> resume4.err || { echo "FAIL: resume at -n 4: $(cat resume4.err)"; fail=1; }
same "saved at -n 2, resumed at -n 4" one_llvm.st half4.st

# Errors.
run div 3 60 -- run net.dtl
bad div 3 'batch 32 \(at net.dtl:17\) does not divide by the 3 ranks'
run nopar 2 60 -- run nopar.dtl
bad nopar 2 'this run has 2 ranks \(DTL_WORLD_SIZE=2\), but the train block at nopar.dtl:15 does not say `parallel = data`'
run data4 2 60 -- run data4.dtl
bad data4 2 'parallel = data\(4\) \(data4.dtl:22\) asks for 4 ranks, but this run has 2'
run buckets 2 60 DTL_TIMEOUT=20 DTL_RANK_1_DTL_BUCKET_MB=0.0001 -- run net.dtl
bad buckets 2 'ranks would issue different collectives per step'
run shardmix 2 60 DTL_TIMEOUT=20 DTL_RANK_1_DTL_SHARD_UPDATE=0 -- run net.dtl
bad shardmix 2 'ranks would issue different collectives per step'
# One rank with another seed (comm_lib gives every rank the same ARGS: started by hand).
port=$(free_port)
env DTL_RANK=0 DTL_WORLD_SIZE=2 DTL_COORDINATOR=127.0.0.1:$port DTL_TIMEOUT=20 \
    "$DTLC" run net.dtl > seed.out0 2> seed.err0 &
p0=$!
env DTL_RANK=1 DTL_WORLD_SIZE=2 DTL_COORDINATOR=127.0.0.1:$port DTL_TIMEOUT=20 \
    "$DTLC" run net.dtl --seed 3 > seed.out1 2> seed.err1 &
p1=$!
all_pids="$all_pids $p0 $p1"
pids="$p0 $p1" procs="0:$p0 1:$p1" started=$(now)
reap 60
bad seed 2 'the model differs between ranks'

# A rank killed mid-epoch: the others stop within seconds, naming it and the collective (the
# gradients' allreduce, or the evaluation's sums when it dies at an epoch's end).
start kill 3 DTL_TIMEOUT=10 -- run net.dtl --batch 33 --epochs 1000000
for k in $(seq 600); do   # until rank 0 reports an epoch (start-up is behind), 60 s at most
    [ -s kill.out0 ] && break
    sleep 0.1
done
victim=$(echo $pids | awk '{ print $2 }')
kill -KILL "$victim"
reap 20
RANKS_OK=1
for i in 0 2; do
    eval "rc=\$rc_$i"
    if [ "$rc" = 0 ] || ! grep -Eq "rank 1 \(host [^,]*, pid $victim\) died" kill.err$i ||
       ! grep -Eq "(allreduce|reduce_scatter|allgather) (f32\[[0-9]+\] \(.*\) for (gradients|params) of .* @ net.dtl:22|f64\[3\] \(24 B\) for evaluation @ net.dtl:21)" kill.err$i; then
        echo "FAIL: kill: rank $i (exit $rc) does not name the dead rank and the collective"
        RANKS_OK=0
    fi
done
[ "$hung" = 0 ] || { echo "FAIL: kill: the survivors hung"; RANKS_OK=0; }
[ "$RANKS_OK" = 1 ] || { show kill; fail=1; }
echo "  (after the kill, the survivors took ${secs} s in all)"
check_shm $(echo $pids | awk '{ print $1, $3 }')

finish
