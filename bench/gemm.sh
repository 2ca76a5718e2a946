#!/bin/sh
# bench/gemm.sh — dtl's GEMM (kernels/cpu/gemm.c) against OpenBLAS's cblas_sgemm, side by side
# in one run, with 1 thread and with every core: the MNIST MLP's shapes at batch 32, the
# 784-2048-2048-10 MLP's at batch 512, and squares 128..1024, in GFLOP/s, and their ratio.
#
#   bench/gemm.sh [BENCH_GEMM [ARGS...]]     (run by `make bench` with the built bench/gemm)
#
# ARGS go to bench/gemm (--threads, --isa, --class, --min-ms, --clock; see bench/gemm.c);
# DTL_BENCH_GEMM_ARGS adds more (`make bench DTL_BENCH_GEMM_ARGS='--clock cpu'`). Without
# OpenBLAS at configure time (Debian: libopenblas-dev), only dtl's column is printed.
set -eu
bin=${1:-build/bench/gemm}
[ $# -gt 0 ] && shift
cores=$(nproc)
threads=1
[ "$cores" -gt 1 ] && threads="1,$cores"
echo "machine: $cores cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "date:    $(date -u +%Y-%m-%d)"
# shellcheck disable=SC2086
set -- ${DTL_BENCH_GEMM_ARGS:-} "$@"
echo "command: $bin --threads $threads $*"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
exec "$bin" --threads "$threads" "$@"
