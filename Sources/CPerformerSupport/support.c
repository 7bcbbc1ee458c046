#define _GNU_SOURCE
#include <time.h>
#include "performer_support.h"
#include <pthread.h>

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int psupport_cpu_has_avx2_fma(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int psupport_cpu_has_avx512(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return psupport_cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

int psupport_available_cpus(void) {
#if defined(__linux__)
    /* The CPUs this process may run on (taskset, cgroups' cpusets), not just the machine's. */
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int count = CPU_COUNT(&set);
        if (count > 0) return count;
    }
#else
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online > 0) return online > 4096 ? 4096 : (int)online;
#endif
    return 1;
}

int64_t psupport_atomic_fetch_add(int64_t *counter, int64_t value) {
    return __atomic_fetch_add(counter, value, __ATOMIC_SEQ_CST);
}

int64_t psupport_atomic_load(const int64_t *counter) {
    return __atomic_load_n(counter, __ATOMIC_SEQ_CST);
}

void psupport_atomic_store(int64_t *counter, int64_t value) {
    __atomic_store_n(counter, value, __ATOMIC_SEQ_CST);
}

static int64_t executor_installed;
static pthread_mutex_t executor_lock = PTHREAD_MUTEX_INITIALIZER;

int64_t *psupport_executor_installed(void) { return &executor_installed; }
void psupport_executor_lock(void) { pthread_mutex_lock(&executor_lock); }
void psupport_executor_unlock(void) { pthread_mutex_unlock(&executor_lock); }

void psupport_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

int64_t psupport_monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int psupport_can_allocate(size_t bytes) {
    void *volatile probe = malloc(bytes);
    int ok = probe != NULL;
    free(probe);
    return ok;
}

static _Thread_local char last_error[512];

void psupport_set_last_error(const char *message) {
    if (message == NULL) {
        last_error[0] = '\0';
        return;
    }
    size_t length = strlen(message);
    if (length >= sizeof(last_error)) length = sizeof(last_error) - 1;
    memcpy(last_error, message, length);
    last_error[length] = '\0';
}

const char *psupport_last_error(void) { return last_error; }
