#!/bin/sh
# tests/cli_special_out.sh — an output path that is not a regular file (a FIFO here, /dev/null
# in real use) is written, never replaced: `dtlc compile -o` and `dtlc run --save` used to
# rename a temporary file over it, which turned /dev/null into a regular file.
. "$(dirname "$0")/train_lib.sh"

toy_data "$T" 64 21 train.csv
toy_data "$T" 16 22 test.csv
toy_model "$T/net.dtl" 8 0
mkfifo "$T/pipe" || { echo "SKIP: mkfifo failed"; exit 77; }

# through_pipe WHAT CMD...: runs CMD (which writes to $T/pipe) while cat drains the FIFO into
# $T/got; the FIFO must still be a FIFO afterwards and something must have come through it.
through_pipe() {
    what=$1
    shift
    cat "$T/pipe" > "$T/got" &
    reader=$!
    check "$what" "$@"
    wait "$reader"
    if [ ! -p "$T/pipe" ]; then
        echo "FAIL: $what: $T/pipe is no longer a FIFO"
        fail=1
        rm -f "$T/pipe"
        mkfifo "$T/pipe"
    elif [ ! -s "$T/got" ]; then
        echo "FAIL: $what: nothing was written through the FIFO"
        fail=1
    fi
}

through_pipe "compile -o FIFO" "$DTLC" compile "$T/net.dtl" --emit=ast -o "$T/pipe"
grep -q "model Net" "$T/got" || { echo "FAIL: compile -o FIFO: not the source"; fail=1; }
through_pipe "run --save FIFO" "$DTLC" run "$T/net.dtl" --progress none --epochs 1 \
    --save "$T/pipe"
finish
