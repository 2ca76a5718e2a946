#!/bin/sh
# tests/repl_tmux.sh — `dtlc repl` at a real terminal, driven through tmux (send-keys and
# capture-pane): multi-line input with the "...>" prompt, Ctrl-D there, history recall and
# editing (Up), non-ASCII input, a pasted file with tabs, a used module edited between
# inputs, Tab completion of names, members and commands, Ctrl-C at the prompt and in the
# middle of :train (the session goes on, its state intact), Ctrl-D, the history file and
# a second session recalling the first's inputs, and three Ctrl-Cs ending a long
# evaluation.
# Skipped (77) where tmux is missing (Debian: tmux) or dtlc was built without libedit.
set -u

me=$(basename "$0")
script_dir=$(cd "$(dirname "$0")" && pwd)
srcdir=${DTL_SRCDIR:-$(cd "$script_dir/.." && pwd)}

if ! command -v tmux >/dev/null 2>&1; then
    echo "$me: SKIP: tmux is not installed (Debian: apt-get install tmux)"
    exit 77
fi
if [ -z "${DTLC:-}" ]; then
    DTLC=$(ls -t "$srcdir"/build*/dtlc 2>/dev/null | head -n 1)
fi
case $DTLC in /*) ;; *) DTLC=$(pwd)/$DTLC ;; esac
[ -x "$DTLC" ] || { echo "$me: no dtlc (set DTLC)"; exit 2; }
if command -v ldd >/dev/null 2>&1 && ! ldd "$DTLC" | grep -q libedit; then
    echo "$me: SKIP: $DTLC was built without libedit (no line editing to test)"
    exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dtl-tmux.XXXXXX") || exit 2
sock="dtl-repl-test-$$"
T="tmux -L $sock -f /dev/null"
cleanup() {
    $T kill-server >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
cp "$srcdir/tests/repl/tiny.dtl" "$srcdir/tests/repl/blobs.csv" \
    "$srcdir/tests/repl/blobs_test.csv" "$tmp/"
# $tmp/state does not exist: the REPL makes it (and dtl/ in it)

fail() {
    echo "$me: FAIL: $*"
    echo "---- the terminal:"
    $T capture-pane -p -S -100 -t t 2>/dev/null | tail -n 40
    exit 1
}

# Waits (up to 15 s) until the terminal shows the fixed string $1.
wait_for() {
    i=0
    while [ $i -lt 150 ]; do
        if $T capture-pane -p -S -300 -t t 2>/dev/null | grep -qF -- "$1"; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    fail "the terminal never showed '$1'"
}

# How often the terminal shows $1.
count() {
    $T capture-pane -p -S -300 -t t 2>/dev/null | grep -cF -- "$1"
}

keys() { $T send-keys -t t "$@"; }

# The prompts shown so far; `enter KEYS…` types KEYS and Enter, then waits for the next
# prompt (so that nothing is typed ahead of a slow evaluation).
prompts() { $T capture-pane -p -S -2000 -t t 2>/dev/null | grep -c '^dtl>'; }
enter() {
    before=$(prompts)
    keys "$@" Enter
    i=0
    while [ "$(prompts)" -le "$before" ] && [ $i -lt 150 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    [ "$(prompts)" -gt "$before" ] || fail "no prompt after '$*'"
}

$T new-session -d -s t -x 110 -y 50 \
    "cd '$tmp' && env HOME='$tmp' XDG_STATE_HOME='$tmp/state' NO_COLOR=1 \
     DTL_PATH='$srcdir/stdlib' '$DTLC' repl; echo \"\$?\" > '$tmp/exit'; sleep 30" ||
    fail "tmux could not start"

wait_for "dtl>"

# Multi-line input: an open bracket continues on the next line.
keys 'let a = [1.0,' Enter
wait_for "...>"
enter '2.0]'
enter 'a * 10'
wait_for "[10.0, 20.0]"

# History: Up recalls the last input, which can be edited before it runs again.
keys Up
sleep 0.3
enter BSpace BSpace '3'
wait_for "[3.0, 6.0]"

# Ctrl-D at "...>" ends that input only (its error is shown); the session goes on.
keys 'let open = [1.0,' Enter
wait_for "...>"
keys C-d
wait_for "'[' opened here"
enter 'a * 100'
wait_for "[100.0, 200.0]"

# Characters beyond ASCII are typed and echoed whole (libedit in a UTF-8 locale).
enter '"héllo → wörld"'
[ "$(count '"héllo → wörld"')" -ge 2 ] || fail "non-ASCII input was mangled"

# A pasted file: tabs indent (no completion list), comments after an open brace do not end
# the input.
printf 'model Pasted {   # a comment\n\tparam w: f32[2] = ones()\n\tfn forward(x: f32[2]) -> f32[2] =\n\t\tx * w * 5\n}\nlet pasted = Pasted()\n' > "$tmp/paste.dtl"
$T load-buffer "$tmp/paste.dtl"
before=$(prompts)
$T paste-buffer -t t
i=0
while [ "$(prompts)" -lt $((before + 2)) ] && [ $i -lt 150 ]; do
    sleep 0.1
    i=$((i + 1))
done
enter 'pasted([1.0, 2.0])'
wait_for "[ 5.0, 10.0]"
[ "$(count 'bce_with_logits')" -eq 0 ] || fail "a pasted tab listed completions"

# A module used is read again at every input: an edit shows at once (no stale compiled plan).
printf 'fn scale(v: f32[N]) -> f32[N] = v * 7\n' > "$tmp/mymod.dtl"
enter 'use mymod'
enter 'mymod.scale([1.0, 2.0])'
wait_for "[ 7.0, 14.0]"
printf 'fn scale(v: f32[N]) -> f32[N] = v * 9\n' > "$tmp/mymod.dtl"
enter 'mymod.scale([1.0, 2.0])'
wait_for "[ 9.0, 18.0]"

# Completion: a name, a member of a layer, a command.
enter 'let longname_value = arange(3)'
keys 'longn' Tab
sleep 0.3
enter ' + 1'
wait_for "dtl> longname_value + 1"
wait_for "[1, 2, 3]"
enter 'use nn'
enter 'let layer = nn.Dense(2, 3)'
keys 'layer.fo' Tab
sleep 0.3
enter '(ones(1, 2))'
wait_for "dtl> layer.forward(ones(1, 2))"
wait_for "f32[1, 3]"
keys ':para' Tab
sleep 0.3
enter
wait_for "layer.w"

# Ctrl-C at the prompt drops what was typed; the session goes on.
keys 'this is not dtl' C-c
wait_for "^C"
enter '40 + 2'
wait_for "42"
[ "$(count 'unknown name')" -eq 0 ] || fail "the input dropped by Ctrl-C was evaluated"

# Ctrl-C in the middle of training stops it between steps; what was trained stays.
enter ':load tiny.dtl'
wait_for "loaded tiny.dtl"
keys ':train 100000000' Enter
wait_for "  loss "
keys C-c
wait_for "interrupted after step"
enter ':eval'
wait_for "test_accuracy"
enter 'a'
wait_for "[1.0, 2.0]"
enter 'history_marker = 7'

# Ctrl-D ends the session (status 0) and the history is in its file.
keys C-d
i=0
while [ ! -s "$tmp/exit" ] && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
done
[ -s "$tmp/exit" ] || fail "Ctrl-D did not end the session"
[ "$(cat "$tmp/exit")" = 0 ] || fail "dtlc repl exited with $(cat "$tmp/exit")"
hist="$tmp/state/dtl/history"
[ -f "$hist" ] || fail "no history file $hist"
grep -q 'longname_value' "$hist" || fail "the history file lacks an input: $(cat "$hist")"

# An evaluation cannot be stopped in the middle: a second Ctrl-C says so, a third quits
# (status 130) instead of waiting for it (here: minutes of matrix products on ref).
$T kill-session -t t
rm -f "$tmp/exit"
$T new-session -d -s t -x 110 -y 50 \
    "cd '$tmp' && env HOME='$tmp' XDG_STATE_HOME='$tmp/state' NO_COLOR=1 \
     DTL_PATH='$srcdir/stdlib' '$DTLC' repl --backend ref; echo \"\$?\" > '$tmp/exit'; sleep 30" ||
    fail "tmux could not start"
wait_for "dtl>"
# The history file of the session before: Up recalls its last input.
keys Up
wait_for "dtl> history_marker = 7"
keys C-u
enter 'big = randn(2500, 2500)'
keys 'sum(big @ big @ big @ big)' Enter
sleep 1   # (it runs for minutes: no hurry)
keys C-c
sleep 0.3
keys C-c
wait_for "Ctrl-C once more quits"
keys C-c
i=0
while [ ! -s "$tmp/exit" ] && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
done
[ -s "$tmp/exit" ] || fail "three Ctrl-Cs did not end the session"
[ "$(cat "$tmp/exit")" = 130 ] || fail "three Ctrl-Cs: exit status $(cat "$tmp/exit"), not 130"
echo "$me: PASS"
exit 0
