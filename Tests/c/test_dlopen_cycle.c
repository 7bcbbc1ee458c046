/* test_dlopen_cycle.c: dlopen, compute with worker threads, dlclose, dlopen again, compute
 * again. libperformer is linked with -z nodelete (its pool threads live for the process), so
 * dlclose must leave it mapped and the second round must give the same result as the first.
 * Usage: test_dlopen_cycle path/to/libperformer.so. Prints "N passed, M failed" last. */
#include "performer.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static int passed, failed;
#define CHECK(cond, ...) \
    do { if (cond) passed++; else { failed++; fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); } } while (0)

enum { B = 2, H = 2, N = 64, L = 64, D = 16 };
static float q[B * H * N * D], k[B * H * L * D], v[B * H * L * D];

typedef performer_status (*forward_fn)(const performer_tensor_t *, const performer_tensor_t *,
                                       const performer_tensor_t *, performer_tensor_t *, performer_tensor_t *,
                                       const performer_softmax_options_t *);

static performer_tensor_t tensor(float *data, int64_t rows) {
    performer_tensor_t t = {data, PERFORMER_FLOAT32, 0, {B, H, rows, D}, {H * rows * D, rows * D, D, 1}};
    return t;
}

/* One round: load, use 2 threads, run a causal forward into `out`, unload. */
static int round_trip(const char *path, float *out, int round) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    CHECK(lib != NULL, "round %d: dlopen: %s", round, dlerror());
    if (!lib) return 0;
    forward_fn forward;
    performer_status (*set_threads)(int);
    *(void **)&forward = dlsym(lib, "performer_softmax_forward");
    *(void **)&set_threads = dlsym(lib, "performer_set_num_threads");
    CHECK(forward && set_threads, "round %d: dlsym", round);
    if (!forward || !set_threads) return 0;
    CHECK(set_threads(2) == PERFORMER_OK, "round %d: set_num_threads(2)", round);
    performer_tensor_t tq = tensor(q, N), tk = tensor(k, L), tv = tensor(v, L), tout = tensor(out, N);
    for (int repeat = 0; repeat < 4; repeat++)
        CHECK(forward(&tq, &tk, &tv, &tout, NULL, NULL) == PERFORMER_OK, "round %d: forward", round);
    CHECK(dlclose(lib) == 0, "round %d: dlclose: %s", round, dlerror());
    /* -z nodelete: still loaded after dlclose, so the pool's threads never run unmapped code. */
    void *still = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    CHECK(still != NULL, "round %d: the library was unloaded by dlclose (is it linked with -z nodelete?)", round);
    if (still) dlclose(still);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s path/to/libperformer.so\n", argv[0]); return 2; }
    for (int i = 0; i < B * H * N * D; i++) q[i] = (float)((i * 7919) % 101) / 101.0f - 0.5f;
    for (int i = 0; i < B * H * L * D; i++) k[i] = (float)((i * 104729) % 89) / 89.0f - 0.5f;
    for (int i = 0; i < B * H * L * D; i++) v[i] = (float)((i * 1299709) % 97) / 97.0f - 0.5f;
    static float first[B * H * N * D], later[B * H * N * D];
    if (round_trip(argv[1], first, 1)) {
        for (int round = 2; round <= 3; round++) {
            memset(later, 0, sizeof later);
            if (round_trip(argv[1], later, round))
                CHECK(memcmp(first, later, sizeof first) == 0, "round %d differs from round 1", round);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
