#!/bin/sh
# tests/comm_netns.sh — runtime/comm across "hosts": every rank in a network namespace of its
# own, the namespaces joined by veth pairs to a Linux bridge in one more namespace (a switch),
# addresses 10.77.0.<rank+1>/24, loopback up in each (so that there is a loopback to avoid).
# Ranks reach each other only over the veths, with tcp;ofi_rxm.
#   hosts-3  `comm_worker all` as 3 ranks that say they are on 3 hosts (DTL_HOST_ID): the
#            provider is chosen automatically (tcp;ofi_rxm: ranks span hosts) and every rank's
#            interface (dtl_comm_domain) is its veth, never lo; every collective is checked
#            against a serial reference
#   kill-3   3 ranks allreducing 4 MB in a loop over DTL_FABRIC_PROVIDER=tcp;ofi_rxm (no
#            DTL_HOST_ID: one host by its boot id, so the interface is the one the rendezvous
#            uses), rank 2 killed with SIGKILL: ranks 0 and 1 exit non-zero within 10 s naming
#            rank 2 and the collective
#   dtlc-2   (when dtlc trains data-parallel) `dtlc run` of a small `parallel = data` model as 2
#            ranks in 2 namespaces, identity from DTL_RANK/DTL_WORLD_SIZE/DTL_COORDINATOR=<veth
#            address>:port: the saved parameters equal one process's within 1e-5
# Needs root (CAP_NET_ADMIN) and iproute2's `ip`; otherwise skipped (exit 77) with the reason.
# Namespaces are named after this script's pid (concurrent runs never collide) and deleted on
# every way out (trap), with every process started here killed first.
. "$(dirname "$0")/comm_lib.sh"

skip() {
    echo "SKIP: $*"
    exit 77
}
command -v ip > /dev/null 2>&1 || skip "no 'ip' command (iproute2) to make network namespaces"
[ "$(id -u)" = 0 ] || skip "making network namespaces needs root (CAP_NET_ADMIN); running as uid $(id -u)"

pfx=dtl$$
made=
netns_cleanup() {
    cleanup   # comm_lib.sh's: kills what was started, removes $T
    for ns in $made; do
        ip netns del "$ns" 2> /dev/null
    done
}
trap netns_cleanup EXIT

# net N: namespaces ${pfx}s (the switch) and ${pfx}r0 .. r<N-1>; rank i's veth is v<i>.
net() {
    sw=${pfx}s
    ip netns add "$sw" 2> "$T/ip.err" || skip "cannot make a network namespace: $(cat "$T/ip.err")"
    made="$sw"
    ip -n "$sw" link add br0 type bridge && ip -n "$sw" link set br0 up ||
        skip "cannot make a bridge in a network namespace"
    i=0
    while [ "$i" -lt "$1" ]; do
        ns=${pfx}r$i
        ip netns add "$ns" || { echo "FAIL: ip netns add $ns"; exit 1; }
        made="$made $ns"
        ip link add "v$i" netns "$ns" type veth peer name "p$i" netns "$sw" 2> "$T/ip.err" ||
            skip "cannot make a veth pair between namespaces: $(cat "$T/ip.err")"
        ip -n "$sw" link set "p$i" master br0 up &&
            ip -n "$ns" addr add "10.77.0.$((i + 1))/24" dev "v$i" &&
            ip -n "$ns" link set "v$i" up && ip -n "$ns" link set lo up ||
            { echo "FAIL: configuring $ns"; exit 1; }
        i=$((i + 1))
    done
}

# start_ns NAME N [VAR=VALUE…] -- CMD…: like comm_lib.sh's start, rank i in namespace r<i>,
# coordinator 10.77.0.1 (rank 0's veth); CMD is the worker's arguments, or `dtlc …`.
start_ns() {
    name=$1 n=$2
    shift 2
    vars=
    while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
        vars="$vars $1"
        shift
    done
    [ "$#" -gt 0 ] && shift
    if [ "$1" = dtlc ]; then
        shift
        prog=$DTLC
    else
        prog=$W
    fi
    job=$((job + 1))
    pids=
    procs=
    i=0
    while [ "$i" -lt "$n" ]; do
        rvars=
        for v in $vars; do
            case $v in
                DTL_RANK_"$i"_*) rvars="$rvars ${v#DTL_RANK_"$i"_}" ;;
                DTL_RANK_[0-9]*_*) ;;
                *) rvars="$rvars $v" ;;
            esac
        done
        # `ip netns exec` and `env` exec in turn: the pid is the rank's own.
        # shellcheck disable=SC2086
        ip netns exec "${pfx}r$i" env DTL_RANK="$i" DTL_WORLD_SIZE="$n" \
            DTL_COORDINATOR="10.77.0.1:29500" DTL_JOB_ID="netns-$$-$job" $rvars \
            "$prog" "$@" > "$T/$name.out$i" 2> "$T/$name.err$i" &
        pids="$pids $!"
        procs="$procs $i:$!"
        all_pids="$all_pids $!"
        i=$((i + 1))
    done
    started=$(now)
}

net 3

# ---- hosts-3: every collective, automatic provider, the veth on every rank ------------------
start_ns hosts-3 3 DTL_TIMEOUT=60 DTL_RANK_0_DTL_HOST_ID=h0 DTL_RANK_1_DTL_HOST_ID=h1 \
    DTL_RANK_2_DTL_HOST_ID=h2 -- all
reap 240
ok=1
[ "$hung" = 0 ] || { echo "FAIL: hosts-3: hung (killed after ${secs} s)"; ok=0; }
for i in 0 1 2; do
    eval "rc=\$rc_$i"
    [ "$rc" = 0 ] || { echo "FAIL: hosts-3: rank $i exited $rc"; ok=0; }
    grep -q "provider tcp;ofi_rxm, domain v$i\$" "$T/hosts-3.out$i" ||
        { echo "FAIL: hosts-3: rank $i does not use tcp;ofi_rxm on its veth v$i"; ok=0; }
done
if [ "$ok" = 1 ]; then
    echo "ok: hosts-3 (${secs} s): $(cat "$T/hosts-3.out0" | head -n 1); ranks 1, 2: $(sed -n 's/.*\(domain v[0-9]*\)$/\1/p' "$T/hosts-3.out1" "$T/hosts-3.out2" | paste -sd, -)"
else
    show hosts-3
    fail=1
fi

# ---- kill-3: a rank killed mid-allreduce; the others name it --------------------------------
start_ns kill-3 3 "DTL_FABRIC_PROVIDER=tcp;ofi_rxm" DTL_TIMEOUT=30 -- loop
waited=0
while [ "$(cat "$T"/kill-3.out* 2> /dev/null | grep -c ready)" -lt 3 ] && [ "$waited" -lt 1200 ]; do
    sleep 0.05
    waited=$((waited + 1))
done
vpid=$(echo $pids | cut -d' ' -f3)
kill -KILL "$vpid"
started=$(now)
{ wait "$vpid"; } 2> /dev/null
reap 10
ok=1
[ "$hung" = 0 ] || { echo "FAIL: kill-3: hung (killed after ${secs} s)"; ok=0; }
for i in 0 1; do
    eval "rc=\$rc_$i"
    [ "$rc" != 0 ] || { echo "FAIL: kill-3: rank $i exited 0"; ok=0; }
    for re in "rank 2 \(host [^,]*, pid $vpid\) died" "allreduce f32\[1048576\] \(4\.2 MB\) for loop\.dtl:7"; do
        grep -Eq -- "$re" "$T/kill-3.err$i" || { echo "FAIL: kill-3: rank $i's message does not match /$re/"; ok=0; }
    done
done
if [ "$ok" = 1 ]; then
    echo "ok: kill-3 (${secs} s): $(sed -n 1p "$T/kill-3.err0" | cut -c1-160)"
else
    show kill-3
    fail=1
fi

# ---- dtlc-2: data-parallel training across 2 namespaces == one process ---------------------
DTLC=${DTLC:-${DTL_BUILDDIR:-.}/dtlc}
CMP=${DTL_BUILDDIR:-.}/tests/unit/st_compare
if [ -x "$DTLC" ] && [ -x "$CMP" ]; then
    DTLC=$(cd "$(dirname "$DTLC")" && pwd)/$(basename "$DTLC")
    CMP=$(cd "$(dirname "$CMP")" && pwd)/$(basename "$CMP")
    here=$(cd "$(dirname "$0")" && pwd)
    dir=$T   # (train_lib.sh makes a T of its own, in the subshell)
    (DTLC=$DTLC; . "$here/train_lib.sh"; toy_data "$dir" 640 7 train.csv
     toy_data "$dir" 100 11 test.csv; ddp_model 1 > "$dir/net.dtl")
    cd "$T" || exit 99
    if ! "$DTLC" run net.dtl --steps 20 --progress none --save one.st > one.out 2> one.err; then
        echo "FAIL: dtlc-2: one process: $(cat one.err)"
        fail=1
    else
        tx0=$(ip netns exec "${pfx}r1" cat /sys/class/net/v1/statistics/tx_bytes)
        # Ranks on two "hosts" (DTL_HOST_ID), so tcp;ofi_rxm is chosen and never lo; rank 1's
        # lo could not reach rank 0 anyway: only the veths join the namespaces.
        start_ns dtlc-2 2 DTL_TIMEOUT=60 DTL_RANK_0_DTL_HOST_ID=h0 DTL_RANK_1_DTL_HOST_ID=h1 -- \
            dtlc run net.dtl --steps 20 --progress none --save two.st
        reap 240
        tx1=$(ip netns exec "${pfx}r1" cat /sys/class/net/v1/statistics/tx_bytes)
        ok=1
        [ "$hung" = 0 ] || { echo "FAIL: dtlc-2: hung (killed after ${secs} s)"; ok=0; }
        for i in 0 1; do
            eval "rc=\$rc_$i"
            [ "$rc" = 0 ] || { echo "FAIL: dtlc-2: rank $i exited $rc"; ok=0; }
        done
        if [ "$ok" = 1 ] && ! "$CMP" one.st two.st 1e-5 step > cmp.out; then
            echo "FAIL: dtlc-2: 2 ranks in 2 namespaces differ from one process: $(cat cmp.out)"
            ok=0
        fi
        # 20 steps of 676 f32 gradients (54 kB) are allreduced: at least half of that must
        # have left rank 1 by its veth, whatever the algorithm.
        if [ "$ok" = 1 ] && [ $((tx1 - tx0)) -lt 27040 ]; then
            echo "FAIL: dtlc-2: rank 1's veth sent only $((tx1 - tx0)) bytes"
            ok=0
        fi
        if [ "$ok" = 1 ]; then
            echo "ok: dtlc-2 (${secs} s): same params as one process ($(cat cmp.out)); rank 1 sent $((tx1 - tx0)) bytes over v1"
        else
            show dtlc-2
            fail=1
        fi
    fi
else
    echo "(dtlc-2 not run: no dtlc or st_compare in the build)"
fi

finish
