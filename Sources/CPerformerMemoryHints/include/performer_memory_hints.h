// Memory hints for the kernels, which Swift cannot express: software prefetch and streaming
// (non-temporal) stores. Inline, so each compiles into the calling kernel with its ISA.
#ifndef PERFORMER_MEMORY_HINTS_H
#define PERFORMER_MEMORY_HINTS_H

#include <stdint.h>

/// Asks for the cache line holding `address` in the outer caches (L2 and below): a read is
/// coming soon. A hint, never a fault, whatever the address.
static inline __attribute__((always_inline)) void pkernel_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 1);
}

typedef float pkernel_float16 __attribute__((ext_vector_type(16)));

/// Stores 16 floats at `target` (64-byte aligned) around the caches: a line nobody reads soon.
/// Call pkernel_streaming_fence() before another thread may read it.
static inline __attribute__((always_inline)) void pkernel_stream_float16(float *target, pkernel_float16 value) {
    __builtin_nontemporal_store(value, (pkernel_float16 *)__builtin_assume_aligned(target, 64));
}

/// Orders this thread's streaming stores before its later stores (x86 sfence).
static inline __attribute__((always_inline)) void pkernel_streaming_fence(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_sfence();
#endif
}

#endif
