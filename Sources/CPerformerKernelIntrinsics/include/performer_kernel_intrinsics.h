// What the kernels need and Swift cannot express: software prefetch, streaming
// (non-temporal) stores, two-source vector shuffles. Inline, so each compiles into the calling
// kernel with its ISA.
#ifndef PERFORMER_KERNEL_INTRINSICS_H
#define PERFORMER_KERNEL_INTRINSICS_H

#include <stdint.h>

/// Asks for the cache line holding `address` in the outer caches (L2 and below): a read is
/// coming soon. A hint, never a fault, whatever the address.
static inline __attribute__((always_inline)) void pkernel_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 1);
}

/// Asks for the cache line holding `address` in L1 (and the outer caches): a read is coming
/// very soon. A hint, never a fault, whatever the address.
static inline __attribute__((always_inline)) void pkernel_prefetch_near(const void *address) {
    __builtin_prefetch(address, 0, 3);
}

/// Asks for the cache line holding `address` in L1, owned for writing (prefetchw on x86-64; a
/// NOP-like hint on CPUs without it): a store to it is coming soon, and would otherwise wait for
/// the line's read-for-ownership from memory. A hint, never a fault, whatever the address.
static inline __attribute__((always_inline)) void pkernel_prefetch_write(const void *address) {
#if defined(__x86_64__)
    __asm__ volatile("prefetchw (%0)" : : "r"(address));
#else
    __builtin_prefetch(address, 1, 3);
#endif
}

typedef float pkernel_float16 __attribute__((ext_vector_type(16)));

/// Stores 16 floats at `target` (64-byte aligned) around the caches: a line nobody reads soon.
/// Call pkernel_streaming_fence() before another thread may read it.
static inline __attribute__((always_inline)) void pkernel_stream_float16(float *target, pkernel_float16 value) {
    __builtin_nontemporal_store(value, (pkernel_float16 *)__builtin_assume_aligned(target, 64));
}

typedef float pkernel_float16_unaligned __attribute__((ext_vector_type(16), aligned(4)));

/// target[c * targetStride + r] = source[r * sourceStride + c] for r, c < 16 (strides in floats).
/// Four rounds of deinterleaving the 256 values as one sequence (each moves index bit 0 to bit
/// 7, so four swap the row and column nibbles): 64 two-source shuffles instead of 256 scalar
/// loads and stores.
static inline __attribute__((always_inline)) void pkernel_transpose_16x16(
    const float *source, intptr_t sourceStride, float *target, intptr_t targetStride) {
    pkernel_float16 v[16], w[16];
    for (int i = 0; i < 16; i++) v[i] = *(const pkernel_float16_unaligned *)(source + i * sourceStride);
    for (int round = 0; round < 4; round++) {
        for (int p = 0; p < 8; p++) {
            w[p] = __builtin_shufflevector(v[2 * p], v[2 * p + 1],
                                           0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            w[p + 8] = __builtin_shufflevector(v[2 * p], v[2 * p + 1],
                                               1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        }
        for (int i = 0; i < 16; i++) v[i] = w[i];
    }
    for (int i = 0; i < 16; i++) *(pkernel_float16_unaligned *)(target + i * targetStride) = v[i];
}

/// Orders this thread's streaming stores before its later stores (x86 sfence).
static inline __attribute__((always_inline)) void pkernel_streaming_fence(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_sfence();
#endif
}

#endif
