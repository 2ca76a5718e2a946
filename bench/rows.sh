#!/bin/sh
# bench/rows.sh — softmax and layer norm over the last axis, forward + backward (the gradient
# of sum(y * w) with respect to x, and gamma and beta), on dtl's LLVM backend with ROW kernels
# (compiler/passes/fuse.h), the same without them (DTL_FUSE_ROWS=0: one loop per reduction
# and per normalization, as before), and PyTorch (bench/rows_torch.py), side by side, with 1
# thread and with every core. Shapes: char_transformer's attention rows (16·4·128 rows of
# 128) and its layer norms (16·128 rows of 128), and rows of 1024 over 32 MiB tensors. Prints
# ms per forward + backward (fastest round), and the ratios torch / dtl and unfused / fused.
#
#   bench/rows.sh [BENCH_ROWS]        (run by `make bench-rows` with the built bench/rows)
#
# DTL_PYTHON: the Python with torch (default /usr/bin/python3; Debian: python3-torch);
# without it only dtl's columns are printed. DTL_BENCH_ROWS_MS: the least wall time of each
# measurement (default 300 ms).
set -eu
bin=${1:-build/bench/rows}
here=$(cd "$(dirname "$0")" && pwd)
py=${DTL_PYTHON:-/usr/bin/python3}
ms=${DTL_BENCH_ROWS_MS:-300}
cores=$(nproc)
threads=1
[ "$cores" -gt 1 ] && threads="1 $cores"
torch=yes
"$py" -c 'import torch' 2>/dev/null || torch=no
echo "machine: $cores cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "date:    $(date -u +%Y-%m-%d)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
[ "$torch" = yes ] || echo "(no PyTorch for $py: dtl's columns only)"
ms_of() { sed -n 's/.* ms=\([0-9.]*\).*/\1/p'; }
printf '%-10s %-11s %3s %10s %10s %10s %9s %9s\n' op shape thr "dtl ms" "unfused" "torch ms" \
    "torch/dtl" "unf/dtl"
for case in "softmax 8192 128" "layer_norm 2048 128" "softmax 8192 1024" "layer_norm 8192 1024"; do
    # shellcheck disable=SC2086
    set -- $case
    for t in $threads; do
        d=$(DTL_THREADS=$t "$bin" "$1" "$2" "$3" --min-ms "$ms" | ms_of)
        u=$(DTL_FUSE_ROWS=0 DTL_THREADS=$t "$bin" "$1" "$2" "$3" --min-ms "$ms" | ms_of)
        p=-
        [ "$torch" = yes ] &&
            p=$("$py" "$here/rows_torch.py" "$1" "$2" "$3" --threads "$t" --min-ms "$ms" | ms_of)
        r=$(awk -v a="$p" -v b="$d" 'BEGIN { if (a == "-") print "-"; else printf "%.2f", a / b }')
        q=$(awk -v a="$u" -v b="$d" 'BEGIN { printf "%.2f", a / b }')
        printf '%-10s %-11s %3s %10s %10s %10s %9s %9s\n' "$1" "${2}x$3" "$t" "$d" "$u" "$p" "$r" "$q"
    done
done
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
