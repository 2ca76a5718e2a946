#!/bin/sh
# autogen.sh — make ./configure from configure.ac and Makefile.am (needs autoconf, automake,
# pkg-config's pkg.m4). Then build out of tree:  mkdir build && cd build && ../configure && make
set -e
cd "$(dirname "$0")"
autoreconf -fi "$@"
