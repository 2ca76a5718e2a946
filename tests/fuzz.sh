#!/bin/sh
# tests/fuzz.sh — a bounded libFuzzer run of the front end (tests/fuzz/fuzz_front.c).
#
# Needs clang with libFuzzer (Debian: clang, libclang-rt-14-dev); without it the test is
# skipped (exit 77) with the reason. Uses the harness `make` built (--enable-fuzz) when there
# is one, else compiles its own from the front end's sources (-g -O1
# -fsanitize=fuzzer,address,undefined) as <builddir>/tests/fuzz/fuzz_front-sh, rebuilt when a
# source is newer. The seed corpus is examples/, stdlib/ and tests/lang/, copied to a temporary
# directory. Passes iff libFuzzer finds no crash, leak, sanitizer report, timeout (10 s per
# input) or memory blow-up (2 GB) within DTL_FUZZ_SECONDS (default 60; 0: only run the seeds).
# A failing input is kept as <builddir>/tests/fuzz/crash-… (or leak-…, timeout-…, oom-…);
# reproduce with: <builddir>/tests/fuzz/fuzz_front-sh FILE
#
# Environment (make check sets these): DTL_SRCDIR, DTL_BUILDDIR, DTL_FUZZ_CC,
# DTL_FUZZ_SOURCES (relative names of every .c to link), DTL_FUZZ_PREBUILT.
set -u

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

srcdir=${DTL_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
builddir=${DTL_BUILDDIR:-$(pwd)}
seconds=${DTL_FUZZ_SECONDS:-60}
case $seconds in *[!0-9]*|'') fail "DTL_FUZZ_SECONDS must be a whole number, not '$seconds'" ;; esac

work=$builddir/tests/fuzz
mkdir -p "$work" || fail "cannot create $work"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dtl-fuzz.XXXXXX") || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP

flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all"

if [ -n "${DTL_FUZZ_PREBUILT:-}" ] && [ -x "$DTL_FUZZ_PREBUILT" ]; then
    bin=$DTL_FUZZ_PREBUILT
    echo "using the harness make built: $bin"
else
    cc=${DTL_FUZZ_CC:-}
    if [ -z "$cc" ]; then
        cc=$(command -v clang || command -v clang-14) || skip "no clang found (install clang and libclang-rt-14-dev)"
    fi
    printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$tmp/probe.c"
    if ! $cc $flags "$tmp/probe.c" -o "$tmp/probe" >"$tmp/probe.log" 2>&1; then
        cat "$tmp/probe.log"
        skip "$cc cannot link a libFuzzer program with $flags (Debian: libclang-rt-14-dev)"
    fi

    # Resolve each source: build dir first (generated lexer.c, parser.c), then source dir.
    [ -n "${DTL_FUZZ_SOURCES:-}" ] || fail "DTL_FUZZ_SOURCES is not set (run through make check)"
    srcs=
    for s in $DTL_FUZZ_SOURCES; do
        if [ -f "$builddir/$s" ]; then srcs="$srcs $builddir/$s"
        elif [ -f "$srcdir/$s" ]; then srcs="$srcs $srcdir/$s"
        else fail "source $s not found in $builddir or $srcdir"
        fi
    done

    bin=$work/fuzz_front-sh
    stale=yes
    if [ -x "$bin" ]; then
        stale=$(find $srcs "$srcdir/lang" "$srcdir/runtime" "$builddir/lang" -newer "$bin" \
                     \( -name '*.c' -o -name '*.h' \) 2>/dev/null | head -n 1)
    fi
    if [ -n "$stale" ]; then
        echo "building $bin with $cc"
        # shellcheck disable=SC2086
        if ! $cc -std=c11 -D_POSIX_C_SOURCE=200809L $flags \
                -I"$builddir/lang" -I"$srcdir/lang" -I"$srcdir" \
                -DDTL_SRC_STDLIB_DIR="\"$srcdir/stdlib\"" \
                $srcs -o "$bin.tmp" >"$tmp/build.log" 2>&1; then
            cat "$tmp/build.log"
            rm -f "$bin.tmp"
            fail "building the fuzz harness failed"
        fi
        cat "$tmp/build.log"
        mv -f "$bin.tmp" "$bin"
    fi
fi

# Seed corpus: every .dtl we have (names made unique).
corpus=$tmp/corpus
mkdir "$corpus"
n=0
for f in "$srcdir"/examples/*.dtl "$srcdir"/stdlib/*.dtl "$srcdir"/tests/lang/*.dtl; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    cp "$f" "$corpus/$n-$(basename "$f")"
done
echo "seed corpus: $n files"

dict=
[ -f "$srcdir/tests/fuzz/dtl.dict" ] && dict="-dict=$srcdir/tests/fuzz/dtl.dict"
if [ "$seconds" -eq 0 ]; then
    budget=-runs=0
else
    budget=-max_total_time=$seconds
fi

# Old artifacts would be mistaken for new ones.
rm -f "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* "$work"/slow-unit-*

# LeakSanitizer cannot run in some containers (ptrace restrictions): detect that, say so.
leaks=1
: >"$tmp/empty"
if ! "$bin" -detect_leaks=1 "$tmp/empty" >"$tmp/lsan.log" 2>&1; then
    if grep -q 'LeakSanitizer has encountered a fatal error\|LeakSanitizer does not work' "$tmp/lsan.log"; then
        echo "note: LeakSanitizer does not work here; fuzzing without leak detection"
        leaks=0
    else
        cat "$tmp/lsan.log"
        fail "the harness fails on an empty input"
    fi
fi

echo "fuzzing for ${seconds}s: $bin"
# libFuzzer's own default error exit code is 77, automake's SKIP: make every failure 1.
# shellcheck disable=SC2086
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_stack_use_after_return=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
"$bin" $budget -rss_limit_mb=2048 -timeout=10 -detect_leaks=$leaks \
    -error_exitcode=1 -timeout_exitcode=1 -print_final_stats=1 \
    -artifact_prefix="$work/" $dict "$corpus" </dev/null >"$tmp/fuzz.log" 2>&1
rc=$?
# The seeds' loading, the last progress lines and any report are at the end.
grep -v "^\"\|# Uses:\|Recommended dictionary\|End of recommended" "$tmp/fuzz.log" | tail -n 80
found=$(ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null)
if [ -n "$found" ]; then
    for a in $found; do
        echo "failing input $a ($(wc -c <"$a") bytes), as text:"
        od -c "$a" | head -n 40
    done
    fail "the fuzzer found a problem; reproduce with: $bin FILE"
fi
[ "$rc" -eq 0 ] || fail "the fuzzer exited $rc"
echo "PASS: no crash, leak or timeout in ${seconds}s"
