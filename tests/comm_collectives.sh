#!/bin/sh
# tests/comm_collectives.sh — every collective of runtime/comm against a serial reference
# (tests/unit/comm_worker.c `all`), with ranks as processes of this host: world sizes 1 to 5
# over libfabric's shm provider (3: chosen automatically), 2 and 5 over tcp;ofi_rxm
# (DTL_FABRIC_PROVIDER), 3 over tcp chosen by FI_PROVIDER on interface lo with memory
# registration forced (DTL_FABRIC_REGISTER=1), 3 "on two hosts" (DTL_HOST_ID) where tcp must
# be chosen automatically, and 3 started by Open MPI's mpirun where it is installed. Each run
# must end with every rank saying ok, within its deadline, leaving no shm region behind.
. "$(dirname "$0")/comm_lib.sh"

collectives() {
    cl=$1 cn=$2
    shift 2
    run "$cl" "$cn" 120 "$@" -- all
    collectives_judge "$cl" "$cn"
}

collectives_judge() {
    label=$1 n=$2
    ok=1
    [ "$hung" = 0 ] || { echo "FAIL: $label: hung (killed after ${secs} s)"; ok=0; }
    i=0
    while [ "$i" -lt "$n" ]; do
        eval "rc=\$rc_$i"
        [ "$rc" = 0 ] || ok=0
        grep -q "rank $i: ok" "$T/$label.out$i" || ok=0
        i=$((i + 1))
    done
    # shellcheck disable=SC2086
    check_shm $pids
    if [ "$ok" = 1 ]; then
        echo "ok: $label: $(head -n 1 "$T/$label.out0") (${secs} s)"
    else
        echo "FAIL: $label"
        show "$label"
        fail=1
    fi
}

for n in 1 2 4 5; do
    collectives "shm-$n" "$n" DTL_FABRIC_PROVIDER=shm
done
collectives auto-3 3    # on one host: shm, chosen automatically
collectives tcp-2 2 "DTL_FABRIC_PROVIDER=tcp;ofi_rxm"
collectives tcp-5 5 "DTL_FABRIC_PROVIDER=tcp;ofi_rxm"
collectives fi-tcp-register-3 3 FI_PROVIDER=tcp DTL_FABRIC_REGISTER=1 DTL_FABRIC_IFACE=lo
# Ranks that say they are on two hosts (DTL_HOST_ID): tcp is chosen, on an interface that is
# not loopback — where this machine has one.
run hosts-3 3 120 DTL_RANK_2_DTL_HOST_ID=elsewhere -- all
if grep -q "no interface that is not loopback" "$T"/hosts-3.err*; then
    echo "skip: hosts-3: this machine has no network interface but lo"
else
    collectives_judge hosts-3 3
    grep -q "provider tcp;ofi_rxm, domain " "$T/hosts-3.out0" && ! grep -q "domain lo" "$T/hosts-3.out0" ||
        { echo "FAIL: two hosts is not tcp off loopback"; fail=1; }
fi
# A real launcher: Open MPI's mpirun sets OMPI_COMM_WORLD_* (and the job id the port and the
# job's identity come from); the ranks need nothing else. Where mpirun is installed.
if command -v mpirun > /dev/null 2>&1; then
    t0=$(now)
    if timeout 120 mpirun --allow-run-as-root --oversubscribe -np 3 "$W" all \
        > "$T/mpirun.out" 2> "$T/mpirun.err" &&
        [ "$(grep -c "^rank [0-2]: ok" "$T/mpirun.out")" = 3 ]; then
        echo "ok: mpirun -np 3: $(grep world "$T/mpirun.out") ($(elapsed "$t0") s)"
    else
        echo "FAIL: mpirun -np 3"
        sed 's/^/    /' "$T/mpirun.out" "$T/mpirun.err"
        fail=1
    fi
else
    echo "skip: mpirun -np 3 (no mpirun; Debian: openmpi-bin)"
fi
# The provider actually used is the one asked for.
grep -q "provider shm" "$T/auto-3.out0" || { echo "FAIL: auto on one host is not shm"; fail=1; }
# (on one host, the interface the rendezvous used: loopback)
grep -q "provider tcp;ofi_rxm, domain lo" "$T/tcp-5.out0" || { echo "FAIL: tcp-5 is not tcp on lo"; fail=1; }
grep -q "provider tcp;ofi_rxm, domain lo" "$T/fi-tcp-register-3.out0" ||
    { echo "FAIL: FI_PROVIDER=tcp DTL_FABRIC_IFACE=lo"; fail=1; }
finish
