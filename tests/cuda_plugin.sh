#!/bin/sh
# tests/cuda_plugin.sh — the CUDA backend is a plugin (kernels/cuda/cuda.h): dtlc links no CUDA
# library and loads libdtlcuda.so only when the cuda backend is asked for; when it cannot, it
# says why (no CUDA in this build; no plugin at $DTL_CUDA_PLUGIN; a shared object that is not
# the plugin; a plugin of another build), with exit status 2. Runs in every build; with a GPU
# the cases that train pass by training.
. "$(dirname "$0")/train_lib.sh"

toy_data "$T" 32 1 train.csv
toy_data "$T" 16 2 test.csv
toy_model "$T/net.dtl" 8 0
R="run --progress none"

# expect STATUS 'MESSAGE (grep -F)' dtlc-args...   (as in tests/train_errors.sh)
expect() {
    want=$1 msg=$2
    shift 2
    "$DTLC" "$@" > "$T/out" 2> "$T/err"
    got=$?
    if [ "$got" != "$want" ]; then
        echo "FAIL: 'dtlc $*' exited $got, expected $want; stderr:"
        sed 's/^/    /' "$T/err"
        fail=1
    elif [ -n "$msg" ] && ! grep -qF -- "$msg" "$T/err"; then
        echo "FAIL: 'dtlc $*': stderr lacks '$msg'; it says:"
        sed 's/^/    /' "$T/err"
        fail=1
    fi
}

# dtlc links no CUDA library (they cost every process ~200 MB and ~0.7 s).
if command -v ldd > /dev/null 2>&1; then
    libs=$(ldd "$DTLC" | grep -Ei 'libcuda|libcudart|libcublas|libnvidia|libnvrtc')
    if [ -n "$libs" ]; then
        echo "FAIL: $DTLC links CUDA libraries:"
        echo "$libs"
        fail=1
    fi
fi

# Nothing loads the plugin unless cuda is asked for (DTL_CUDA_VERBOSE names it when loaded).
export DTL_CUDA_VERBOSE=1
not_loaded() {
    if grep -q "dtl cuda" "$T/err"; then
        echo "FAIL: 'dtlc $*' loaded the CUDA plugin although cuda was not asked for:"
        sed 's/^/    /' "$T/err"
        fail=1
    fi
}
expect 0 "" check "$T/net.dtl"
not_loaded check
expect 0 "" $R "$T/net.dtl" --steps 1 --backend ref
not_loaded run --backend ref

sed '$ s/^}$/    device = cuda\n}/' "$T/net.dtl" > "$T/dev.dtl"
"$DTLC" $R "$T/net.dtl" --backend tpu 2> "$T/err"
if ! grep -q "this build has: cuda" "$T/err"; then
    # A build without CUDA: every way of asking says so.
    expect 2 "backend 'cuda': this build has no CUDA (./configure --with-cuda" \
        $R "$T/net.dtl" --backend cuda
    expect 2 "backend 'cuda': this build has no CUDA" $R "$T/net.dtl" --device gpu
    expect 0 "device = cuda is not acted on yet: this build has no CUDA" $R "$T/dev.dtl" --steps 1
    finish
fi

# A build with CUDA. The plugin next to dtlc is found and loaded; it trains, or says that
# there is no usable device.
plugin=$(dirname "$DTLC")/libdtlcuda.so
"$DTLC" $R "$T/net.dtl" --backend cuda --steps 2 > "$T/out" 2> "$T/err"
got=$?
if ! grep -qF "dtl cuda: plugin $plugin" "$T/err" ||
   { [ $got != 0 ] && ! grep -q "cuda: .*CUDA" "$T/err"; }; then
    echo "FAIL: --backend cuda exited $got:"
    sed 's/^/    /' "$T/err"
    fail=1
fi
"$DTLC" $R "$T/dev.dtl" --steps 1 > "$T/out" 2> "$T/err"
got=$?
if [ $got != 0 ] || ! grep -qF "dtl cuda: plugin $plugin" "$T/err" ||
   { ! grep -q "dtl cuda: plan of" "$T/err" &&
     ! grep -q "device = cuda is not acted on yet: .*CUDA" "$T/err"; }; then
    echo "FAIL: device = cuda in the train block exited $got:"
    sed 's/^/    /' "$T/err"
    fail=1
fi
unset DTL_CUDA_VERBOSE

# $DTL_CUDA_PLUGIN names the plugin; what cannot be used is refused before anything runs.
DTL_CUDA_PLUGIN=$T/none.so
export DTL_CUDA_PLUGIN
expect 2 "backend 'cuda': cannot load the CUDA plugin: $T/none.so: cannot open shared object file" \
    $R "$T/net.dtl" --backend cuda
expect 2 "(from DTL_CUDA_PLUGIN)" $R "$T/net.dtl" --device cuda
# (with device = cuda in the train block: a note, and the default backend trains)
expect 0 "device = cuda is not acted on yet: cannot load the CUDA plugin" $R "$T/dev.dtl" --steps 1
DTL_CUDA_PLUGIN=$T/net.dtl
expect 2 "backend 'cuda': cannot load the CUDA plugin: $T/net.dtl:" $R "$T/net.dtl" --backend cuda
# Shared objects made here (with the build's compiler): one that is not the plugin, and one
# whose entry refuses this dtl (another build's plugin).
CC=${DTL_CC:-cc}
printf 'int dtl_not_the_plugin(void) { return 0; }\n' > "$T/other.c"
cat > "$T/old.c" <<'EOF'
#include <stddef.h>
#include <stdio.h>
const void *dtl_cuda_plugin_v1(const char *abi, const void *host, char *why, size_t len);
const void *dtl_cuda_plugin_v1(const char *abi, const void *host, char *why, size_t len)
{
    (void)host;
    snprintf(why, len, "the plugin is \"dtl 0.0.1\", the program \"%s\"", abi);
    return NULL;
}
EOF
if $CC -shared -fPIC -o "$T/other.so" "$T/other.c" 2> "$T/cc.err" &&
   $CC -shared -fPIC -o "$T/old.so" "$T/old.c" 2>> "$T/cc.err"; then
    DTL_CUDA_PLUGIN=$T/other.so
    expect 2 "backend 'cuda': $T/other.so is not dtl's CUDA plugin (it has no dtl_cuda_plugin_v1)" \
        $R "$T/net.dtl" --backend cuda
    DTL_CUDA_PLUGIN=$T/old.so
    expect 2 "backend 'cuda': the CUDA plugin $T/old.so was built for another dtl: the plugin is \"dtl 0.0.1\", the program \"dtl " \
        $R "$T/net.dtl" --backend cuda
else
    echo "note: $CC cannot make a shared object here; the foreign-plugin cases are not run:"
    sed 's/^/    /' "$T/cc.err"
fi
unset DTL_CUDA_PLUGIN
finish
