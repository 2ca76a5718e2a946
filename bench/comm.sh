#!/bin/sh
# bench/comm.sh — allreduce of runtime/comm against Open MPI's MPI_Allreduce on this host, at 2
# and 4 ranks, over shared memory and over tcp (loopback), in one compact table with ratios.
#
#   bench/comm.sh [BENCH_BIN]     (make bench-comm runs it with the built bench/comm_allreduce)
#
# For each world size and transport it runs the dtl benchmark and the MPI one (the same C
# program, bench/comm_allreduce.c, built by mpicc with -DDTL_BENCH_MPI) alternately, ROUNDS
# times each (dtl first in odd rounds, MPI first in even ones), so that a machine whose load
# drifts treats both alike. Each run reports, per size, the median of its samples; the table
# shows the median over the rounds: time per allreduce (f32 sum, in place), bus bandwidth
# (algbw × 2(n−1)/n), and the ratios dtl/MPI of time (lower is better for dtl) and of busbw
# (higher is better). Transports are pinned on both sides: dtl DTL_FABRIC_PROVIDER=shm against
# Open MPI's pml ob1 + btl self,vader (both copy large messages with one cross-memory-attach
# copy); dtl tcp;ofi_rxm on lo against btl self,tcp on lo. Both sides bind ranks alike:
# mpirun's default (rank i to core i while there are no more ranks than cores, else no
# binding), and dtl's ranks get the same through taskset. Besides the medians, "best x" is
# the ratio of the fastest samples of all rounds (MPI's time over dtl's: above 1 means dtl is
# faster), what each side does when the machine lets it run, the better guide on a loaded
# machine. The last lines check issue 5's targets: busbw >= 1.0× MPI's at
# >= 1 MiB, latency of the smallest size within 1.5× of MPI's.
#
# Environment: DTL_BENCH_RANKS (default "2 4"), DTL_BENCH_TRANSPORTS (default "shm tcp"),
# DTL_BENCH_ROUNDS (default 3), DTL_BENCH_MAX_MB (largest message, default 256),
# DTL_BENCH_MIN_KB (smallest, default 4), DTL_BENCH_SECONDS (time per size and run, default
# 0.5), DTL_BENCH_SAMPLES (per size and run, default 5), DTL_BENCH_RAW=1 (also print every
# run's own table).
set -u
bin=${1:-build/bench/comm_allreduce}
src=$(dirname "$0")/comm_allreduce.c
ranks=${DTL_BENCH_RANKS:-2 4}
transports=${DTL_BENCH_TRANSPORTS:-shm tcp}
rounds=${DTL_BENCH_ROUNDS:-3}
export DTL_BENCH_MAX_MB="${DTL_BENCH_MAX_MB:-256}" DTL_BENCH_MIN_KB="${DTL_BENCH_MIN_KB:-4}"
export DTL_BENCH_SECONDS="${DTL_BENCH_SECONDS:-0.5}" DTL_BENCH_SAMPLES="${DTL_BENCH_SAMPLES:-5}"
if [ ! -x "$bin" ]; then
    echo "$0: no benchmark program at $bin" >&2
    exit 1
fi
cpus=$(nproc)
T=$(mktemp -d "${TMPDIR:-/tmp}/dtl-bench-comm.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '{ printf "%.0f GiB", $2 / 1048576; exit }' /proc/meminfo)"
echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC'); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "sizes:   ${DTL_BENCH_MIN_KB} KiB .. ${DTL_BENCH_MAX_MB} MiB; $rounds rounds × $DTL_BENCH_SAMPLES samples per size, ${DTL_BENCH_SECONDS} s per size and run"

mpi=
if command -v mpicc > /dev/null 2>&1 && command -v mpirun > /dev/null 2>&1; then
    if mpicc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -DDTL_BENCH_MPI "$src" -o "$T/mpi_allreduce" 2> "$T/mpicc.log"; then
        mpi=$T/mpi_allreduce
        echo "MPI:     $(mpirun --version 2>&1 | head -n 1)"
    else
        echo "(mpicc failed: no MPI column)"; cat "$T/mpicc.log"
    fi
else
    echo "(no mpicc/mpirun: install libopenmpi-dev openmpi-bin for the MPI columns)"
fi

# dtl_run N PROVIDER OUT: N ranks of the dtl benchmark; rank 0's table into OUT.
dtl_run() {
    port=$(od -An -N2 -tu2 /dev/urandom | awk '{ print 20000 + $1 % 40000 }')
    pids=
    i=0
    while [ "$i" -lt "$1" ]; do
        pin=
        if [ "$1" -le "$cpus" ] && command -v taskset > /dev/null 2>&1; then
            pin="taskset -c $i"   # as mpirun binds: rank i to core i while ranks <= cores
        fi
        # shellcheck disable=SC2086
        DTL_RANK=$i DTL_WORLD_SIZE=$1 DTL_COORDINATOR=127.0.0.1:$port DTL_FABRIC_PROVIDER=$2 \
            DTL_JOB_ID=bench$$ DTL_TIMEOUT=120 timeout 900 $pin "$bin" > "$T/rank$i" 2> "$T/rank$i.err" &
        pids="$pids $!"
        i=$((i + 1))
    done
    st=0
    for p in $pids; do wait "$p" || st=1; done
    cp "$T/rank0" "$3"
    [ "$st" = 0 ] || { echo "(dtl run failed: $1 ranks, $2)"; cat "$T"/rank*.err; }
}

# mpi_run N TRANSPORT OUT
mpi_run() {
    if [ "$2" = shm ]; then
        btl="self,vader"
        extra=
    else
        btl="self,tcp"
        extra="--mca btl_tcp_if_include lo"
    fi
    # shellcheck disable=SC2086
    timeout 900 mpirun --allow-run-as-root --oversubscribe -np "$1" \
        --mca pml ob1 --mca btl "$btl" $extra \
        -x DTL_BENCH_MAX_MB -x DTL_BENCH_MIN_KB -x DTL_BENCH_SECONDS -x DTL_BENCH_SAMPLES \
        "$mpi" > "$3" 2> "$3.err" || { echo "(mpirun failed: $1 ranks, $2)"; cat "$3.err"; }
}

for n in $ranks; do
    for tr in $transports; do
        case $tr in
            shm) prov=shm ;;
            tcp) prov="tcp;ofi_rxm" ;;
            *) echo "$0: unknown transport '$tr' (shm or tcp)" >&2; exit 1 ;;
        esac
        r=1
        while [ "$r" -le "$rounds" ]; do
            if [ $((r % 2)) = 1 ] || [ -z "$mpi" ]; then
                dtl_run "$n" "$prov" "$T/dtl.$n.$tr.$r"
                [ -n "$mpi" ] && mpi_run "$n" "$tr" "$T/mpi.$n.$tr.$r"
            else
                mpi_run "$n" "$tr" "$T/mpi.$n.$tr.$r"
                dtl_run "$n" "$prov" "$T/dtl.$n.$tr.$r"
            fi
            r=$((r + 1))
        done
        if [ "${DTL_BENCH_RAW:-0}" = 1 ]; then
            for f in "$T"/dtl."$n.$tr".* "$T"/mpi."$n.$tr".*; do
                [ -f "$f" ] && { echo "== $f"; cat "$f"; }
            done
        fi
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
dtl_domain=$(sed -n 's/^# dtl_comm_allreduce (\(.*\)),.*/\1/p' "$T"/dtl.* 2> /dev/null | sort -u | paste -sd';' -)
echo "dtl transports: ${dtl_domain:-?}"
echo

# The table: per (ranks, transport, size), medians over rounds of each side's median time.
for n in $ranks; do
    for tr in $transports; do
        for side in dtl mpi; do
            for f in "$T/$side.$n.$tr".*; do
                [ -f "$f" ] || continue
                awk -v side="$side" -v n="$n" -v tr="$tr" '!/^#/ && NF >= 5 { print n, tr, side, $1, $2, $5 }' "$f"
            done
        done
    done
done | awk -v order="$ranks" '
function median(key,    m, i, j, t, a) {
    m = cnt[key]
    for (i = 1; i <= m; i++) a[i] = val[key, i]
    for (i = 2; i <= m; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
function human(b) {
    if (b >= 1048576) return sprintf("%d MiB", b / 1048576)
    return sprintf("%d KiB", b / 1024)
}
{
    key = $1 SUBSEP $2 SUBSEP $3 SUBSEP $4
    cnt[key]++; val[key, cnt[key]] = $5
    if (!(key in best) || $6 < best[key]) best[key] = $6
    row = $1 SUBSEP $2 SUBSEP $4
    if (!(row in seen)) { seen[row] = 1; rows[++nrows] = row }
}
END {
    printf "%-5s %-9s %8s %11s %11s %7s %10s %10s %7s %7s\n", "ranks", "transport", "size", \
        "dtl us", "MPI us", "time x", "dtl busbw", "MPI busbw", "busbw x", "best x"
    bw_ok = bw_all = lat_ok = lat_all = bwb_ok = latb_ok = 0
    for (i = 1; i <= nrows; i++) {
        split(rows[i], p, SUBSEP)
        n = p[1]; tr = p[2]; b = p[3]
        kd = n SUBSEP tr SUBSEP "dtl" SUBSEP b; km = n SUBSEP tr SUBSEP "mpi" SUBSEP b
        d = (kd in cnt) ? median(kd) : 0; m = (km in cnt) ? median(km) : 0
        f = 2.0 * (n - 1) / n
        dbw = d > 0 ? b / d / 1e3 * f : 0; mbw = m > 0 ? b / m / 1e3 * f : 0
        if (m > 0 && d > 0) {
            bx = best[kd] > 0 ? best[km] / best[kd] : 0
            printf "%-5s %-9s %8s %11.1f %11.1f %7.2f %10.3f %10.3f %7.2f %7.2f\n", n, tr, human(b), d, m, \
                d / m, dbw, mbw, dbw / mbw, bx
            if (b >= 1048576) {
                bw_all++
                if (dbw / mbw >= 1.0) bw_ok++; else bw_miss = bw_miss " " n "/" tr "/" human(b)
                if (bx >= 1.0) bwb_ok++; else bwb_miss = bwb_miss " " n "/" tr "/" human(b)
            }
            if (!((n SUBSEP tr) in small)) {
                small[n SUBSEP tr] = 1; lat_all++
                if (d / m <= 1.5) lat_ok++; else lat_miss = lat_miss " " n "/" tr "/" human(b)
                if (bx >= 1 / 1.5) latb_ok++; else latb_miss = latb_miss " " n "/" tr "/" human(b)
            }
        } else {
            printf "%-5s %-9s %8s %11.1f %11s %7s %10.3f %10s %7s\n", n, tr, human(b), d, "-", "-", dbw, "-", "-"
        }
    }
    if (bw_all) {
        printf "\ntarget busbw >= 1.0x MPI at >= 1 MiB: medians %d of %d hold%s\n", bw_ok, bw_all, \
            bw_miss ? " (missed:" bw_miss ")" : ""
        printf "                                      best    %d of %d hold%s\n", bwb_ok, bw_all, \
            bwb_miss ? " (missed:" bwb_miss ")" : ""
        printf "target latency of the smallest size <= 1.5x MPI: medians %d of %d hold%s\n", lat_ok, lat_all, \
            lat_miss ? " (missed:" lat_miss ")" : ""
        printf "                                                 best    %d of %d hold%s\n", latb_ok, lat_all, \
            latb_miss ? " (missed:" latb_miss ")" : ""
    }
}'
