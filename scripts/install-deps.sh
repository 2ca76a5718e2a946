#!/bin/sh
# scripts/install-deps.sh — install what building and testing dtl needs on Debian 12 (bookworm).
# Idempotent: installs only the packages that are missing (and does nothing, offline too, when
# none is). Runs apt-get as root, through sudo when not root. Used by the README's quick start
# and by .ci/run.
set -eu

# The data of the examples: dataset-fashion-mnist (mnist_mlp, lenet), fortunes
# (char_transformer: /usr/share/games/fortunes), python3-sklearn (breast_cancer: its
# breast_cancer.csv). Tests that need them skip without them.
packages="
build-essential autoconf automake pkg-config
re2c lemon
zlib1g-dev libedit-dev llvm-dev libfabric-dev
clang libclang-rt-14-dev valgrind tmux
libopenblas-dev
python3 python3-numpy
dataset-fashion-mnist
fortunes python3-sklearn
"

missing=
for p in $packages; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case $st in
        *" installed") ;;
        *) missing="$missing $p" ;;
    esac
done
if [ -z "$missing" ]; then
    echo "install-deps: all $(echo $packages | wc -w) packages are installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=
elif command -v sudo >/dev/null 2>&1; then
    sudo=sudo
else
    echo "install-deps: need root (or sudo) to install:$missing" >&2
    exit 1
fi
echo "install-deps: installing:$missing"
$sudo apt-get update
# shellcheck disable=SC2086
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing </dev/null
