// Small C helpers for PerformerCore: things Swift without Foundation cannot reach portably.
// Nothing here is exported from libperformer.so (the version script keeps performer_* only).
#ifndef PERFORMER_SUPPORT_H
#define PERFORMER_SUPPORT_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when the CPU and OS support AVX2 and FMA (x86-64-v3), else 0.
int psupport_cpu_has_avx2_fma(void);
/// 1 when the CPU and OS support AVX-512 F/CD/BW/DQ/VL (x86-64-v4), else 0.
int psupport_cpu_has_avx512(void);
/// CPUs this process may run on (sched_getaffinity), at least 1.
int psupport_available_cpus(void);

/// Atomic fetch-and-add on a shared counter (sequentially consistent).
int64_t psupport_atomic_fetch_add(int64_t *counter, int64_t value);
int64_t psupport_atomic_load(const int64_t *counter);
void psupport_atomic_store(int64_t *counter, int64_t value);
/// The host-executor slot's flag (1 while an executor is installed) and lock: statics that
/// exist from load time, so a call's first look at them needs no lazy initialization
/// (swift_once, whose synchronization ThreadSanitizer cannot see) on any thread.
int64_t *psupport_executor_installed(void);
void psupport_executor_lock(void);
void psupport_executor_unlock(void);
/// A spin-wait hint to the CPU (x86 PAUSE), for loops that poll an atomic.
void psupport_cpu_relax(void);
/// CLOCK_MONOTONIC in nanoseconds.
int64_t psupport_monotonic_ns(void);

/// 1 when malloc can allocate `bytes` now (the block is freed again), else 0. In C with a
/// volatile pointer: an optimizer may drop a malloc/free pair whose result is only compared
/// with NULL, and then assume the allocation succeeded.
int psupport_can_allocate(size_t bytes);

/// A lock for critical sections of a few loads and stores (the handle table): one atomic
/// exchange to take it, one store to give it back, where a pthread mutex costs about 50
/// instructions. A waiter spins briefly, then yields, so a holder that lost its CPU runs.
/// Inline, so that Swift compiles them into the caller.
static inline void psupport_spin_lock(int32_t *lock) {
    int spins = 0;
    while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE) != 0) {
        while (__atomic_load_n(lock, __ATOMIC_RELAXED) != 0) {
            if (++spins < 100) {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            } else {
                sched_yield();
            }
        }
    }
}

static inline void psupport_spin_unlock(int32_t *lock) { __atomic_store_n(lock, 0, __ATOMIC_RELEASE); }

/// Thread-local last-error text (copied, truncated to 511 bytes).
void psupport_set_last_error(const char *message);
const char *psupport_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
