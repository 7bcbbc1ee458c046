// Software prefetch for the kernels (Swift has no prefetch instruction of its own). Inline, so
// it compiles into the calling kernel: a hint, never a fault, whatever the address.
#ifndef PERFORMER_PREFETCH_H
#define PERFORMER_PREFETCH_H

/// Asks for the cache line holding `address` in every cache level (a read is coming soon).
static inline __attribute__((always_inline)) void pkernel_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 1);
}

#endif
