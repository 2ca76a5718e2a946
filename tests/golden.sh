#!/bin/sh
# tests/golden.sh — run one golden test (a .dtl file holding its own expectations).
#
#   tests/golden.sh FILE.dtl               run it: exit 0 pass, 1 fail (a diff says why)
#   tests/golden.sh --update FILE.dtl...   rewrite each file's expectations from dtlc's actual
#                                          output, then run it again to make sure it passes
#
# The format (see also the README):
#   #! args: check FILE     dtlc's arguments, split at blanks; the word FILE (or a word ending
#                           in =FILE) becomes the file's base name. Default: "check FILE".
#   #! exit: 1              expected exit status. Default: 0.
#   #| line                 one expected line of stdout, in order ("#|" alone: an empty line)
#   #? line                 one expected line of stderr, in order
# No "#|" lines: stdout must be empty; no "#?" lines: stderr must be empty. Expectations go at
# the end of the file, so that they do not move the lines the diagnostics point at.
#
# dtlc runs in the file's directory with NO_COLOR=1, LC_ALL=C, DTL_PATH=<srcdir>/stdlib, stdin
# from /dev/null, under `timeout` (DTL_TEST_TIMEOUT seconds, default 120) when there is one.
# Which dtlc: $DTLC, else ./dtlc, else <srcdir>/dtlc, else the newest <srcdir>/build*/dtlc.
# $DTL_TEST_WRAPPER (e.g. "valgrind -q --error-exitcode=99") is put in front of dtlc.
set -u

me=$(basename "$0")
script_dir=$(cd "$(dirname "$0")" && pwd)
srcdir=${DTL_SRCDIR:-$(cd "$script_dir/.." && pwd)}

die() { printf '%s: %s\n' "$me" "$*" >&2; exit 2; }

find_dtlc() {
    if [ -n "${DTLC:-}" ]; then
        case $DTLC in /*) ;; *) DTLC=$(pwd)/$DTLC ;; esac
        [ -x "$DTLC" ] || die "DTLC=$DTLC is not an executable"
        return
    fi
    for c in "$(pwd)/dtlc" "$srcdir/dtlc"; do
        if [ -x "$c" ]; then DTLC=$c; return; fi
    done
    # The newest build directory's dtlc (ls -t sorts by modification time).
    c=$(ls -t "$srcdir"/build*/dtlc 2>/dev/null | head -n 1)
    [ -n "$c" ] && [ -x "$c" ] || die "no dtlc found: build it, or set DTLC=path/to/dtlc"
    DTLC=$c
    printf '%s: using %s\n' "$me" "$DTLC" >&2
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dtl-golden.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP

# run FILE: runs dtlc as FILE says; leaves $tmp/out, $tmp/err, $status, $expect_exit, $cmd.
run() {
    file=$1
    dir=$(cd "$(dirname "$file")" && pwd) || die "no directory for $file"
    base=$(basename "$file")
    if grep -q '^#! args:' "$file"; then
        args=$(sed -n 's/^#! args:[[:space:]]*//p' "$file" | head -n 1)
    else
        args="check FILE"
    fi
    expect_exit=$(sed -n 's/^#! exit:[[:space:]]*//p' "$file" | head -n 1 | tr -d '[:space:]')
    expect_exit=${expect_exit:-0}
    case $expect_exit in
        *[!0-9]*|'') die "$file: '#! exit:' wants a number, not '$expect_exit'" ;;
    esac

    # Split args at blanks (no globbing), substituting FILE.
    set -f
    n=0
    for tok in $args; do
        case $tok in
            FILE) tok=$base ;;
            *=FILE) tok=${tok%FILE}$base ;;
        esac
        n=$((n + 1))
        eval "arg_$n=\$tok"
    done
    set +f
    set --
    i=1
    while [ "$i" -le "$n" ]; do
        eval "set -- \"\$@\" \"\$arg_$i\""
        i=$((i + 1))
    done
    cmd="(cd $dir && dtlc $*)"

    to=
    if command -v timeout >/dev/null 2>&1; then
        to="timeout -k 5 ${DTL_TEST_TIMEOUT:-120}"
    fi
    # shellcheck disable=SC2086  # $to and $DTL_TEST_WRAPPER are word lists on purpose
    (
        cd "$dir" || exit 2
        unset DTL_FAIL_ALLOC
        NO_COLOR=1 LC_ALL=C DTL_PATH="$srcdir/stdlib" \
            $to ${DTL_TEST_WRAPPER:-} "$DTLC" "$@" </dev/null >"$tmp/out" 2>"$tmp/err"
    )
    status=$?
}

expected() { # expected FILE PREFIX: the expectation lines with their prefix removed
    sed -n "s/^$2 \{0,1\}//p" "$1"
}

check() {
    file=$1
    run "$file"
    expected "$file" '#|' >"$tmp/want_out"
    expected "$file" '#?' >"$tmp/want_err"
    rc_=0
    if [ "$status" -ne "$expect_exit" ]; then
        if [ "$status" -eq 124 ] && [ -n "${to:-}" ]; then
            echo "FAIL: $cmd did not finish within ${DTL_TEST_TIMEOUT:-120} s"
        elif [ "$status" -gt 128 ]; then
            echo "FAIL: $cmd was killed by signal $((status - 128)) (expected exit $expect_exit)"
        else
            echo "FAIL: $cmd exited $status, expected $expect_exit"
        fi
        rc_=1
    fi
    if ! cmp -s "$tmp/want_out" "$tmp/out"; then
        echo "FAIL: stdout of $cmd differs (- expected, + actual):"
        diff -u --label expected --label actual "$tmp/want_out" "$tmp/out" | sed 1,2d
        rc_=1
    fi
    if ! cmp -s "$tmp/want_err" "$tmp/err"; then
        echo "FAIL: stderr of $cmd differs (- expected, + actual):"
        diff -u --label expected --label actual "$tmp/want_err" "$tmp/err" | sed 1,2d
        rc_=1
    fi
    [ "$rc_" -eq 0 ] && echo "PASS: $cmd"
    return "$rc_"
}

# as_lines PREFIX FILE: FILE's lines, each with PREFIX and a space in front ("#|" for empty).
as_lines() {
    [ -s "$2" ] || return 0
    sed -e "s/^/$1 /" -e "s/^$1 \$/$1/" "$2"
    # A last line without its newline still becomes a whole expectation line.
    [ -z "$(tail -c 1 "$2")" ] || echo
}

update() {
    file=$1
    [ -w "$file" ] || die "$file: not writable"
    run "$file"
    new=$tmp/new
    # Keep everything but the old expectations; set an existing '#! exit:' in place.
    sed -e '/^#|/d' -e '/^#?/d' -e "s/^#! exit:.*/#! exit: $status/" "$file" >"$new"
    [ -z "$(tail -c 1 "$new")" ] || echo >>"$new"
    if [ "$status" -ne 0 ] && ! grep -q '^#! exit:' "$new"; then
        echo "#! exit: $status" >>"$new"
    fi
    as_lines '#|' "$tmp/out" >>"$new"
    as_lines '#?' "$tmp/err" >>"$new"
    cat "$new" >"$file"
    for s in out err; do
        if [ -s "$tmp/$s" ] && [ -n "$(tail -c 1 "$tmp/$s")" ]; then
            printf '%s: warning: %s: std%s does not end with a newline\n' "$me" "$file" "$s" >&2
        fi
    done
    echo "updated $file (exit $status, $(wc -l <"$tmp/out") stdout lines, $(wc -l <"$tmp/err") stderr lines); read the expectations before committing them"
    if ! check "$file" >"$tmp/recheck"; then
        cat "$tmp/recheck"
        printf '%s: %s still fails after --update (were expectations in the middle of the file?)\n' \
            "$me" "$file" >&2
        return 1
    fi
}

[ $# -ge 1 ] || die "usage: $me FILE.dtl | $me --update FILE.dtl..."
if [ "$1" = --update ]; then
    shift
    [ $# -ge 1 ] || die "usage: $me --update FILE.dtl..."
    find_dtlc
    rc=0
    for f in "$@"; do
        [ -f "$f" ] || die "$f: no such file"
        update "$f" || rc=1
    done
    exit "$rc"
fi
[ $# -eq 1 ] || die "usage: $me FILE.dtl"
[ -f "$1" ] || die "$1: no such file"
find_dtlc
check "$1"
