#!/bin/sh
# tests/roundtrip.sh — the printer's fixed point: for every examples/*.dtl, stdlib/*.dtl and
# tests/lang/emit_ast_*.dtl F,
#     dtlc compile F --emit=ast > a.dtl      (must succeed)
#     dtlc compile a.dtl --emit=ast > b.dtl  (must succeed)
#     a.dtl and b.dtl must be identical.
# Every file is tried; the test fails, with a diff per mismatch, if any one does.
# Environment: DTLC (default ./dtlc), DTL_SRCDIR (default: this script's ..), DTL_TEST_WRAPPER.
set -u

srcdir=${DTL_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
DTLC=${DTLC:-$(pwd)/dtlc}
[ -x "$DTLC" ] || { echo "roundtrip.sh: no dtlc at $DTLC (set DTLC)" >&2; exit 99; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dtl-roundtrip.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP

to=
command -v timeout >/dev/null 2>&1 && to="timeout -k 5 ${DTL_TEST_TIMEOUT:-120}"

emit() { # emit IN OUT ERR
    # shellcheck disable=SC2086
    NO_COLOR=1 LC_ALL=C DTL_PATH="$srcdir/stdlib" \
        $to ${DTL_TEST_WRAPPER:-} "$DTLC" compile "$1" --emit=ast </dev/null >"$2" 2>"$3"
}

pass=0 fail=0 n=0
for f in "$srcdir"/examples/*.dtl "$srcdir"/stdlib/*.dtl "$srcdir"/tests/lang/emit_ast_*.dtl; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    name=${f#"$srcdir"/}
    a=$tmp/$n.a.dtl b=$tmp/$n.b.dtl
    emit "$f" "$a" "$tmp/err"; st=$?
    if [ "$st" -ne 0 ]; then
        echo "FAIL: $name: dtlc compile --emit=ast exited $st:"
        sed 's/^/    /' "$tmp/err"
        fail=$((fail + 1))
        continue
    fi
    emit "$a" "$b" "$tmp/err"; st=$?
    if [ "$st" -ne 0 ]; then
        echo "FAIL: $name: dtlc could not parse its own --emit=ast output (exit $st):"
        sed 's/^/    /' "$tmp/err"
        echo "  the printed source was:"
        sed 's/^/    /' "$a"
        fail=$((fail + 1))
        continue
    fi
    if ! cmp -s "$a" "$b"; then
        echo "FAIL: $name: printing is not a fixed point (- first print, + second print):"
        diff -u --label first --label second "$a" "$b" | sed 1,2d
        fail=$((fail + 1))
        continue
    fi
    pass=$((pass + 1))
    echo "PASS: $name"
done

echo "$pass of $n files round-trip"
if [ "$n" -eq 0 ]; then
    echo "no files to round-trip"
    exit 77
fi
[ "$fail" -eq 0 ]
