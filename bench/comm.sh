#!/bin/sh
# bench/comm.sh — allreduce bandwidth of runtime/comm at 2 and 4 ranks of this host, over shm
# and over tcp (loopback), side by side with Open MPI's MPI_Allreduce on the same transports
# (pml ob1 with btl vader, then btl tcp on lo) when mpicc and mpirun are installed (Debian:
# libopenmpi-dev openmpi-bin). Each table: bytes, microseconds per allreduce (f32 sum, in
# place), algorithm and bus bandwidth in GB/s (bench/comm_allreduce.c).
#
#   bench/comm.sh [BENCH_BIN]     (make bench runs it with the built bench/comm_allreduce)
#
# Environment: DTL_BENCH_MAX_MB (largest message, default 64), DTL_BENCH_SECONDS (time per
# size, default 0.3), DTL_BENCH_RANKS (default "2 4").
set -u
bin=${1:-build/bench/comm_allreduce}
src=$(dirname "$0")/comm_allreduce.c
ranks=${DTL_BENCH_RANKS:-2 4}
T=$(mktemp -d "${TMPDIR:-/tmp}/dtl-bench-comm.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "date:    $(date -u +%Y-%m-%d)"

mpi=
if command -v mpicc > /dev/null 2>&1 && command -v mpirun > /dev/null 2>&1; then
    if mpicc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -DDTL_BENCH_MPI "$src" -o "$T/mpi_allreduce" 2> "$T/mpicc.log"; then
        mpi=$T/mpi_allreduce
    else
        echo "(mpicc failed: no MPI column)"; cat "$T/mpicc.log"
    fi
else
    echo "(no mpicc/mpirun: install libopenmpi-dev openmpi-bin for the MPI column)"
fi

dtl_run() {   # N PROVIDER
    port=$(od -An -N2 -tu2 /dev/urandom | awk '{ print 20000 + $1 % 40000 }')
    pids=
    i=0
    while [ "$i" -lt "$1" ]; do
        DTL_RANK=$i DTL_WORLD_SIZE=$1 DTL_COORDINATOR=127.0.0.1:$port DTL_FABRIC_PROVIDER=$2 \
            "$bin" > "$T/out$i" &
        pids="$pids $!"
        i=$((i + 1))
    done
    for p in $pids; do wait "$p"; done
    cat "$T/out0"
}

for n in $ranks; do
    for prov in shm "tcp;ofi_rxm"; do
        echo
        dtl_run "$n" "$prov"
        if [ -n "$mpi" ]; then
            if [ "$prov" = shm ]; then
                btl="--mca btl self,vader"
            else
                btl="--mca btl self,tcp --mca btl_tcp_if_include lo"
            fi
            # shellcheck disable=SC2086
            mpirun --allow-run-as-root --oversubscribe -np "$n" --mca pml ob1 $btl \
                -x DTL_BENCH_MAX_MB="${DTL_BENCH_MAX_MB:-64}" -x DTL_BENCH_SECONDS="${DTL_BENCH_SECONDS:-0.3}" "$mpi" 2>&1 | sed "s/# MPI_Allreduce/# MPI_Allreduce (Open MPI, $(echo $btl | sed 's/--mca //g'))/"
        fi
    done
done
