# tests/cuda_emu/launch.sed — rewrites each kernel launch of kernels/cuda/*.cu,
#     name<template args><<<grid, block, shared, stream>>>(args
# as a call of tests/cuda_emu/device.h,
#     dtl_emu_go(grid, block, shared, stream, name<template args>, args
# for the host's C++ compiler. (A launch's `<<<…>>>(` is on one line; the Makefile checks
# that no `<<<` is left.)
s/\([A-Za-z_][A-Za-z_0-9]*\)\(<[^;]*>\)\{0,1\}<<<\(.*\)>>>(/dtl_emu_go(\3, \1\2, /
