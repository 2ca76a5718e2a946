/* tests/unit/cuda_emu.h — just enough of CUDA C++ to run the kernels of kernels/cuda/cuda_gen.c
 * on the CPU, for tests/unit/test_cuda_gen.c: the generated module is compiled by the host's
 * C++ compiler with this header included first, into a shared object the test loads.
 *
 * Contract (what a generated kernel may rely on, emulated faithfully enough to catch wrong
 * indexing, a missing or misplaced barrier, a wrong shuffle, a grid-stride loop that skips or
 * repeats work):
 *  - dtl_emu_launch(entry, args, grid, block) runs entry(args) once per CUDA thread of a
 *    grid x block launch (1-D), the blocks one after another, the threads of a block as
 *    coroutines in this OS thread (on x86-64 a switch of the callee-saved registers and the
 *    stack pointer, written here; elsewhere ucontext, whose swapcontext also makes a system
 *    call to save the signal mask). A thread runs until it finishes or waits: in
 *    __syncthreads (until every thread of the block that has not finished arrives) or in a
 *    warp shuffle (until the 32 lanes of its warp arrive). Threads are resumed in round-robin
 *    order, first to last, and last to first every other launch (so a missing barrier shows
 *    whichever thread's write it was meant to wait for); still, a kernel that would race on
 *    a GPU can pass here: this is not a race detector.
 *  - __shared__ arrays are function-scope statics: one per module, reused by each block in
 *    turn (the blocks never run at the same time).
 *  - Vector types are 16-byte (or 4-byte) aligned as on the GPU: a misaligned vector access
 *    may fault, as it would there.
 *  - Returns 0, or -1 when the threads of a block wait on each other for ever (a deadlock:
 *    a barrier some threads never reach), after writing which to stderr.
 * Built with -ffp-contract=off so float arithmetic is what kernels/ref computes.
 */
#ifndef DTL_CUDA_EMU_H
#define DTL_CUDA_EMU_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__ __restrict
#define __shared__ static

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(16) longlong2 { long long x, y; };
struct alignas(4) uchar4 { unsigned char x, y, z, w; };
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
static inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
static inline double2 make_double2(double x, double y) { return {x, y}; }
static inline longlong2 make_longlong2(long long x, long long y) { return {x, y}; }
static inline uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z,
                                 unsigned char w)
{
    return {x, y, z, w};
}
static inline float __int_as_float(int v) { float f; memcpy(&f, &v, sizeof f); return f; }
static inline int __float_as_int(float f) { int v; memcpy(&v, &f, sizeof v); return v; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, sizeof f); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, sizeof u); return u; }
static inline double __longlong_as_double(long long v)
{
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

struct dtl_emu_dim3 { unsigned x, y, z; };

enum { DTL_EMU_MAX_BLOCK = 1024, DTL_EMU_STACK = 64 * 1024 };

/* ---- coroutines: dtl_emu_switch(&save, to) saves this one's context in save and resumes
 * to's; dtl_emu_init(c, stack, bytes, fn) makes a context that starts fn (which must not
 * return: it switches away at its end). */
#if defined(__x86_64__) && !defined(DTL_EMU_UCONTEXT)
/* (a local symbol: each object that includes this has its own) */
typedef struct { void *sp; } dtl_emu_ctx;
extern "C" void dtl_emu_swap(void **save, void *to);
__asm__(".text\n"
        ".p2align 4\n"
        "dtl_emu_swap:\n"   /* rdi: where to save rsp, rsi: the rsp to resume */
        "    pushq %rbp\n    pushq %rbx\n    pushq %r12\n"
        "    pushq %r13\n    pushq %r14\n    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n    popq %r14\n    popq %r13\n"
        "    popq %r12\n    popq %rbx\n    popq %rbp\n"
        "    ret\n");
static inline void dtl_emu_switch(dtl_emu_ctx *save, dtl_emu_ctx *to)
{
    dtl_emu_swap(&save->sp, to->sp);
}
static void dtl_emu_init(dtl_emu_ctx *c, char *stack, size_t bytes, void (*fn)(void))
{
    /* the top: fn's return slot (0: it never returns) and the address dtl_emu_swap returns
     * to, under six zeroed registers; fn starts with rsp + 8 a multiple of 16, as after a
     * call */
    uintptr_t top = ((uintptr_t)(stack + bytes)) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = NULL;
    *--sp = (void *)fn;
    for (int i = 0; i < 6; i++)
        *--sp = NULL;
    c->sp = sp;
}
#else
typedef ucontext_t dtl_emu_ctx;
static inline void dtl_emu_switch(dtl_emu_ctx *save, dtl_emu_ctx *to)
{
    swapcontext(save, to);
}
static void dtl_emu_init(dtl_emu_ctx *c, char *stack, size_t bytes, void (*fn)(void))
{
    getcontext(c);
    c->uc_stack.ss_sp = stack;
    c->uc_stack.ss_size = bytes;
    c->uc_link = NULL;
    makecontext(c, fn, 0);
}
#endif

/* ---- AddressSanitizer is told of every switch of stacks (its fiber interface), so kernels
 * compiled with it run instrumented on their threads' stacks. */
#if defined(__SANITIZE_ADDRESS__)
#define DTL_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DTL_EMU_ASAN 1
#endif
#endif
#ifdef DTL_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

/* Before a switch to the stack [bottom, bottom + size): save keeps this stack's state (NULL:
 * it is left for good). */
static inline void dtl_emu_leaving(void **save, const void *bottom, size_t size)
{
#ifdef DTL_EMU_ASAN
    __sanitizer_start_switch_fiber(save, bottom, size);
#else
    (void)save, (void)bottom, (void)size;
#endif
}

/* Back on a stack (save: what dtl_emu_leaving kept, NULL on a new one); the stack left
 * behind in *bottom, *size when they are not NULL. */
static inline void dtl_emu_arrived(void *save, const void **bottom, size_t *size)
{
#ifdef DTL_EMU_ASAN
    __sanitizer_finish_switch_fiber(save, bottom, size);
#else
    (void)save, (void)bottom, (void)size;
#endif
}

struct dtl_emu_thread {
    dtl_emu_ctx ctx;
    dtl_emu_dim3 idx;
    bool done;
    unsigned char slot[8];   /* a shuffle's value */
};

/* One state per module (every function here is static). */
static struct {
    dtl_emu_ctx sched;
    dtl_emu_thread *t;
    unsigned n, cur, live;
    unsigned block_arrived, block_gen;
    unsigned warp_arrived[DTL_EMU_MAX_BLOCK / 32], warp_gen[DTL_EMU_MAX_BLOCK / 32],
        warp_live[DTL_EMU_MAX_BLOCK / 32];
    unsigned long long progress;   /* releases and finished threads */
    void (*entry)(void **);
    void **args;
    const void *sched_bottom;   /* the scheduler's stack (for AddressSanitizer) */
    size_t sched_size;
    dtl_emu_dim3 block_idx, block_dim, grid_dim;
    /* the threads' stacks, kept from launch to launch (up to 1024 x 64 KiB, untouched but
     * for their tops), freed when the module is unloaded */
    char *stacks;
    unsigned nstacks;
} dtl_emu;

__attribute__((destructor)) static void dtl_emu_unload(void)
{
    free(dtl_emu.stacks);
}

#define threadIdx (dtl_emu.t[dtl_emu.cur].idx)
#define blockIdx (dtl_emu.block_idx)
#define blockDim (dtl_emu.block_dim)
#define gridDim (dtl_emu.grid_dim)

static void dtl_emu_yield(void)
{
    void *save = NULL;
    dtl_emu_leaving(&save, dtl_emu.sched_bottom, dtl_emu.sched_size);
    dtl_emu_switch(&dtl_emu.t[dtl_emu.cur].ctx, &dtl_emu.sched);
    dtl_emu_arrived(save, NULL, NULL);
}

static void __syncthreads(void)
{
    unsigned gen = dtl_emu.block_gen;
    if (++dtl_emu.block_arrived == dtl_emu.live) {
        dtl_emu.block_arrived = 0;
        dtl_emu.block_gen++;
        dtl_emu.progress++;
        return;
    }
    while (dtl_emu.block_gen == gen)
        dtl_emu_yield();
}

static void dtl_emu_warp_barrier(void)
{
    unsigned w = dtl_emu.cur / 32, gen = dtl_emu.warp_gen[w];
    if (++dtl_emu.warp_arrived[w] == dtl_emu.warp_live[w]) {
        dtl_emu.warp_arrived[w] = 0;
        dtl_emu.warp_gen[w]++;
        dtl_emu.progress++;
        return;
    }
    while (dtl_emu.warp_gen[w] == gen)
        dtl_emu_yield();
}

template <typename T> static T __shfl_down_sync(unsigned mask, T v, unsigned d)
{
    (void)mask;
    static_assert(sizeof(T) <= 8, "a shuffle moves at most 8 bytes");
    unsigned me = dtl_emu.cur, lane = me % 32;
    memcpy(dtl_emu.t[me].slot, &v, sizeof v);
    dtl_emu_warp_barrier();
    T r;
    memcpy(&r, dtl_emu.t[lane + d < 32 && me + d < dtl_emu.n ? me + d : me].slot, sizeof r);
    dtl_emu_warp_barrier();
    return r;
}

static void dtl_emu_thread_main(void)
{
    dtl_emu_arrived(NULL, &dtl_emu.sched_bottom, &dtl_emu.sched_size);
    dtl_emu.entry(dtl_emu.args);
    unsigned me = dtl_emu.cur, w = me / 32;
    dtl_emu.t[me].done = true;
    dtl_emu.live--;
    dtl_emu.warp_live[w]--;
    dtl_emu.progress++;
    /* the ones left at a barrier no longer wait for this thread */
    if (dtl_emu.block_arrived && dtl_emu.block_arrived == dtl_emu.live) {
        dtl_emu.block_arrived = 0;
        dtl_emu.block_gen++;
    }
    if (dtl_emu.warp_arrived[w] && dtl_emu.warp_arrived[w] == dtl_emu.warp_live[w]) {
        dtl_emu.warp_arrived[w] = 0;
        dtl_emu.warp_gen[w]++;
    }
    /* for good: a finished thread is never resumed */
    dtl_emu_leaving(NULL, dtl_emu.sched_bottom, dtl_emu.sched_size);
    dtl_emu_switch(&dtl_emu.t[me].ctx, &dtl_emu.sched);
    abort();
}

static int dtl_emu_launch(void (*entry)(void **), void **args, unsigned grid, unsigned block)
{
    if (block == 0 || block > DTL_EMU_MAX_BLOCK || grid == 0)
        return -1;
    if (dtl_emu.nstacks < block) {
        free(dtl_emu.stacks);
        dtl_emu.stacks = (char *)malloc((size_t)block * DTL_EMU_STACK);
        dtl_emu.nstacks = dtl_emu.stacks ? block : 0;
    }
    char *stacks = dtl_emu.stacks;
    dtl_emu_thread *t = (dtl_emu_thread *)calloc(block, sizeof *t);
    if (!t || !stacks) {
        free(t);
        return -1;
    }
    dtl_emu.t = t;
    dtl_emu.n = block;
    dtl_emu.entry = entry;
    dtl_emu.args = args;
    dtl_emu.block_dim = {block, 1, 1};
    dtl_emu.grid_dim = {grid, 1, 1};
    /* every other launch resumes the threads last to first */
    static unsigned launches;
    bool backward = launches++ & 1;
    int rc = 0;
    for (unsigned b = 0; b < grid && rc == 0; b++) {
        dtl_emu.block_idx = {b, 0, 0};
        dtl_emu.live = block;
        dtl_emu.block_arrived = 0;
        for (unsigned w = 0; w < (block + 31) / 32; w++) {
            dtl_emu.warp_arrived[w] = 0;
            dtl_emu.warp_live[w] = block - w * 32 < 32 ? block - w * 32 : 32;
        }
        for (unsigned i = 0; i < block; i++) {
            t[i].idx = {i, 0, 0};
            t[i].done = false;
            dtl_emu_init(&t[i].ctx, stacks + (size_t)i * DTL_EMU_STACK, DTL_EMU_STACK,
                         dtl_emu_thread_main);
        }
        while (dtl_emu.live > 0) {
            unsigned long long before = dtl_emu.progress;
            for (unsigned k = 0; k < block; k++) {
                unsigned i = backward ? block - 1 - k : k;
                if (t[i].done)
                    continue;
                dtl_emu.cur = i;
                void *save = NULL;
                dtl_emu_leaving(&save, stacks + (size_t)i * DTL_EMU_STACK, DTL_EMU_STACK);
                dtl_emu_switch(&dtl_emu.sched, &t[i].ctx);
                dtl_emu_arrived(save, NULL, NULL);
            }
            /* a whole round in which nobody was released or finished: nobody ever will be */
            if (dtl_emu.live > 0 && dtl_emu.progress == before) {
                fprintf(stderr, "cuda_emu: block %u: %u of %u threads wait on each other for "
                        "ever (a barrier the others never reach)\n", b, dtl_emu.live, block);
                /* their stacks, abandoned mid-call, are not reused */
                free(dtl_emu.stacks);
                dtl_emu.stacks = NULL;
                dtl_emu.nstacks = 0;
                rc = -1;
                break;
            }
        }
    }
    free(t);
    return rc;
}

#endif
