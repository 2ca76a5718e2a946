/* tests/cuda_emu/device.h — kernels/cuda/ops.cu and dnn.cu on the CPU: included first when the
 * emulated plugin's second build (tests/cuda_emu/libdtlcuda_emu_dev.so) compiles them with the
 * host's C++ compiler, after tests/cuda_emu/launch.sed has turned each launch
 * `k<<<grid, block, shared, stream>>>(args)` into `dtl_emu_go(grid, block, shared, stream, k,
 * args)`. So the kernels that run are the GPU's own source, not the reference's (which the
 * first build, libdtlcuda_emu.so, runs instead): test_cuda on this build compares ops.cu's
 * and dnn.cu's device code with the reference backend.
 *
 * Contract:
 *  - dtl_emu_go converts the arguments to the kernel's parameter types and copies them at the
 *    call, as a launch does, and enqueues the launch on the stream (cuda_emu.c's queues, so it
 *    runs in stream order, lazily, and is captured into graphs like any work); when it runs,
 *    the kernel runs once per CUDA thread of the grid x block launch on tests/unit/cuda_emu.h's
 *    threads (every block, in order; each block's threads as coroutines that switch at
 *    barriers). A launch whose configuration CUDA would refuse (no threads, more than 1024 a
 *    block, dynamic shared memory, which these kernels never ask for) is not enqueued and
 *    sets the error cudaGetLastError returns next.
 *  - Atomics are plain read-modify-writes (the emulated threads take turns in one OS thread),
 *    so an atomic sum adds in thread order.
 *  - The math functions are the host's libm (the reference's), not CUDA's: this checks the
 *    kernels' logic — indexing, strides, barriers, block trees, accumulator types, rounding
 *    steps — not the device math library's last ulps.
 * In the sanitizer build these are compiled with the sanitizers too (tests/unit/cuda_emu.h
 * tells AddressSanitizer of its threads' stacks): a kernel's access outside its buffers is
 * an error. */
#ifndef DTL_EMU_DEVICE_H
#define DTL_EMU_DEVICE_H

#include <cuda_runtime.h>   /* tests/cuda_emu/dev's */

#include <type_traits>

#include "../unit/cuda_emu.h"

template <typename T> static inline T dtl_emu_atomic_add(T *p, T v)
{
    T old = *p;
    *p = (T)(old + v);
    return old;
}
static inline float atomicAdd(float *p, float v) { return dtl_emu_atomic_add(p, v); }
static inline double atomicAdd(double *p, double v) { return dtl_emu_atomic_add(p, v); }
static inline unsigned atomicAdd(unsigned *p, unsigned v) { return dtl_emu_atomic_add(p, v); }
static inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v)
{
    return dtl_emu_atomic_add(p, v);
}
static inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v)
{
    unsigned long long old = *p;
    if (v < old)
        *p = v;
    return old;
}

/* cuda_emu.c: enqueues fn on s with a copy of the size bytes at arg, after checking the launch
 * configuration (cudaErrorInvalidConfiguration, remembered for cudaGetLastError, when CUDA
 * would refuse it). */
extern "C" void dtl_emu_kernel(cudaStream_t s, unsigned grid, unsigned block, size_t shared,
                               void (*fn)(const void *), const void *arg, size_t size);

/* A launch: the kernel and its arguments, as values (a trivially copyable aggregate, so the
 * stream's queue and a captured graph may copy its bytes). */
template <typename... T> struct dtl_emu_pack {};
template <typename H, typename... T> struct dtl_emu_pack<H, T...> {
    H head;
    dtl_emu_pack<T...> tail;
};

/* an argument converted as a call converts it (implicitly: no cast) */
template <typename H> static H dtl_emu_as(H h) { return h; }

template <typename... None> static dtl_emu_pack<> dtl_emu_pack_of() { return {}; }
template <typename H, typename... T, typename A, typename... B>
static dtl_emu_pack<H, T...> dtl_emu_pack_of(A &&a, B &&...b)
{
    return {dtl_emu_as<H>(a), dtl_emu_pack_of<T...>(b...)};
}

template <typename K, typename... Done>
static void dtl_emu_apply(K k, const dtl_emu_pack<> &, Done... d)
{
    k(d...);
}
template <typename K, typename H, typename... T, typename... Done>
static void dtl_emu_apply(K k, const dtl_emu_pack<H, T...> &p, Done... d)
{
    dtl_emu_apply(k, p.tail, d..., p.head);
}

template <typename... P> struct dtl_emu_call {
    void (*kernel)(P...);
    unsigned grid, block;
    dtl_emu_pack<P...> args;
};

template <typename... P> static void dtl_emu_thread(void **args)
{
    const dtl_emu_call<P...> *c = (const dtl_emu_call<P...> *)args[0];
    dtl_emu_apply(c->kernel, c->args);
}

template <typename... P> static void dtl_emu_run(const void *p)
{
    const dtl_emu_call<P...> *c = (const dtl_emu_call<P...> *)p;
    void *args[1] = {(void *)c};
    if (dtl_emu_launch(dtl_emu_thread<P...>, args, c->grid, c->block) != 0) {   /* (said why) */
        fprintf(stderr, "cuda_emu: a kernel of kernels/cuda: its threads wait on each other "
                        "for ever\n");
        abort();
    }
}

template <typename... P, typename... A>
static void dtl_emu_go(unsigned grid, unsigned block, size_t shared, cudaStream_t s,
                       void (*kernel)(P...), A &&...a)
{
    static_assert(sizeof...(P) == sizeof...(A), "a launch passes every parameter");
    static_assert((std::is_trivially_copyable<P>::value && ...),
                  "kernel parameters are copied as bytes");
    dtl_emu_call<P...> c = {kernel, grid, block, dtl_emu_pack_of<P...>(a...)};
    dtl_emu_kernel(s, grid, block, shared, dtl_emu_run<P...>, &c, sizeof c);
}

#endif
