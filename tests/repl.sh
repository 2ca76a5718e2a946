#!/bin/sh
# tests/repl.sh — run one scripted session of `dtlc repl` and compare its output.
#
#   tests/repl.sh tests/repl/NAME.in              run it: exit 0 pass, 1 fail (a diff says why)
#   tests/repl.sh --update tests/repl/NAME.in...  rewrite NAME.out from the actual output
#
# NAME.in is fed to `dtlc repl` on standard input (not a terminal: no prompts, no editing).
# Standard output and standard error together, then a last line "[exit N]", must equal
# NAME.out. dtlc runs in a copy of tests/repl/ (so sessions may :load the files there and
# write files of their own) with NO_COLOR=1, LC_ALL=C, DTL_PATH=<srcdir>/stdlib, HOME set to
# that directory, and under `timeout` (DTL_TEST_TIMEOUT seconds, default 120). Lines of
# :time ("compile … run …") have their durations replaced by "T", which vary. A line
# "#! env: NAME=VALUE ..." in NAME.in sets environment variables for it; "#! needs: cuda"
# skips it (status 77) where `dtlc repl --backend cuda` cannot start (no GPU, no plugin).
# Which dtlc: $DTLC, else the newest <srcdir>/build*/dtlc. $DTL_TEST_WRAPPER goes in front.
set -u

me=$(basename "$0")
script_dir=$(cd "$(dirname "$0")" && pwd)
srcdir=${DTL_SRCDIR:-$(cd "$script_dir/.." && pwd)}

die() { printf '%s: %s\n' "$me" "$*" >&2; exit 2; }

if [ -z "${DTLC:-}" ]; then
    DTLC=$(ls -t "$srcdir"/build*/dtlc 2>/dev/null | head -n 1)
    [ -n "$DTLC" ] || die "no dtlc found: build it, or set DTLC=path/to/dtlc"
fi
case $DTLC in /*) ;; *) DTLC=$(pwd)/$DTLC ;; esac
[ -x "$DTLC" ] || die "DTLC=$DTLC is not an executable"

update=false
if [ "${1:-}" = "--update" ]; then
    update=true
    shift
fi
[ $# -ge 1 ] || die "usage: $me [--update] tests/repl/NAME.in..."

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dtl-repl.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP

to=""
if command -v timeout >/dev/null 2>&1; then
    to="timeout ${DTL_TEST_TIMEOUT:-120}"
fi

status=0
ran=0
for in in "$@"; do
    [ -f "$in" ] || die "no such file: $in"
    needs=$(sed -n 's/^#! needs:[[:space:]]*//p' "$in" | head -n 1)
    if [ "$needs" = cuda ]; then
        if ! why=$(env DTL_PATH="$srcdir/stdlib" $to ${DTL_TEST_WRAPPER:-} "$DTLC" repl \
                   --backend cuda < /dev/null 2>&1); then
            printf '%s: SKIP %s: %s\n' "$me" "$in" "$why"
            continue
        fi
    fi
    ran=$((ran + 1))
    dir=$(cd "$(dirname "$in")" && pwd)
    name=$(basename "$in" .in)
    expected="$dir/$name.out"
    work="$tmp/$name"
    mkdir -p "$work"
    cp -R "$dir"/. "$work"/
    chmod -R u+w "$work"
    env=$(sed -n 's/^#! env:[[:space:]]*//p' "$in" | head -n 1)
    (
        cd "$work" || exit 2
        # shellcheck disable=SC2086
        env NO_COLOR=1 LC_ALL=C DTL_PATH="$srcdir/stdlib" HOME="$work" XDG_STATE_HOME="" $env \
            $to ${DTL_TEST_WRAPPER:-} "$DTLC" repl < "$dir/$name.in" > "$tmp/$name.raw" 2>&1
        echo "[exit $?]" >> "$tmp/$name.raw"
    )
    sed -E '/^compile /s/[0-9.]+(e[-+]?[0-9]+)? (us|ms|s)\b/T/g' "$tmp/$name.raw" > "$tmp/$name.actual"
    if $update; then
        cp "$tmp/$name.actual" "$expected"
        printf '%s: wrote %s\n' "$me" "$expected"
        continue
    fi
    [ -f "$expected" ] || { printf '%s: %s: no %s (tests/repl.sh --update)\n' "$me" "$in" \
                            "$expected" >&2; status=1; continue; }
    if ! diff -u "$expected" "$tmp/$name.actual"; then
        printf '%s: FAIL %s (expected above with -, actual with +)\n' "$me" "$in" >&2
        status=1
    fi
done
[ $status -eq 0 ] && [ $ran -eq 0 ] && exit 77
exit $status
