/* tests/cuda_emu/dev/cuda_runtime.h — the part of CUDA's runtime header that kernels/cuda/ops.cu
 * and dnn.cu use, for compiling them with the host's C++ compiler into the emulated plugin
 * that runs their device code on the CPU (tests/cuda_emu/device.h; libdtlcuda_emu_dev.so).
 * CUDA's own header cannot be used there: its vector types are tests/unit/cuda_emu.h's.
 * The values and types are CUDA's (driver_types.h): cuda_emu.c, which includes the real
 * header, checks the values it shares with this one. */
#ifndef DTL_EMU_DEV_CUDA_RUNTIME_H
#define DTL_EMU_DEV_CUDA_RUNTIME_H

#include <stddef.h>

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorInvalidConfiguration = 9,
} cudaError_t;

typedef struct CUstream_st *cudaStream_t;

extern "C" cudaError_t cudaGetLastError(void);
extern "C" cudaError_t cudaMemsetAsync(void *dst, int value, size_t n, cudaStream_t s);

#endif
