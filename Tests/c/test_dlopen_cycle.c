/* test_dlopen_cycle.c: dlopen, compute with worker threads, dlclose, dlopen again, compute
 * again. libperformer is linked with -z nodelete (its pool threads live for the process), so
 * dlclose must leave it mapped and every round must give the same result as the first.
 * 1000 rounds by default (argv[2] sets the count): the process's resident memory, open file
 * descriptors and threads after the last round must equal those after the 10th (RSS within
 * 1 MiB: allocator noise), i.e. cycles leak nothing. Prints the figures, then
 * "N passed, M failed" last. Usage: test_dlopen_cycle path/to/libperformer.so [rounds]. */
#include "performer.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Resident memory in KiB, open descriptors and threads of this process, from /proc. */
typedef struct { long rss_kib, fds, threads; } usage;
static usage measure(void) {
    usage u = {-1, 0, -1};
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) u.rss_kib = atol(line + 6);
        if (strncmp(line, "Threads:", 8) == 0) u.threads = atol(line + 8);
    }
    if (f) fclose(f);
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) u.fds += e->d_name[0] != '.';
    if (d) closedir(d);
    return u;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) { fprintf(stderr, "usage: %s path/to/libperformer.so [rounds]\n", argv[0]); return 2; }
    int rounds = argc == 3 ? atoi(argv[2]) : 1000;
    for (int i = 0; i < B * H * N * D; i++) q[i] = (float)((i * 7919) % 101) / 101.0f - 0.5f;
    for (int i = 0; i < B * H * L * D; i++) k[i] = (float)((i * 104729) % 89) / 89.0f - 0.5f;
    for (int i = 0; i < B * H * L * D; i++) v[i] = (float)((i * 1299709) % 97) / 97.0f - 0.5f;
    static float first[B * H * N * D], later[B * H * N * D];
    usage warm = {0, 0, 0}, end;
    int differing = 0, failing_before = failed;
    if (round_trip(argv[1], first, 1)) {
        for (int round = 2; round <= rounds; round++) {
            memset(later, 0, sizeof later);
            if (round_trip(argv[1], later, round)) differing += memcmp(first, later, sizeof first) != 0;
            if (failed > failing_before + 10) break; /* the first messages say enough */
            if (round == 10 || (round == rounds && rounds < 10)) warm = measure();
        }
    }
    CHECK(differing == 0, "%d rounds differ from round 1", differing);
    end = measure();
    if (rounds >= 10) {
        printf("after round 10: RSS %ld KiB, %ld fds, %ld threads; after round %d: RSS %ld KiB, %ld fds, %ld threads\n",
               warm.rss_kib, warm.fds, warm.threads, rounds, end.rss_kib, end.fds, end.threads);
        CHECK(end.fds == warm.fds, "open descriptors grew from %ld to %ld", warm.fds, end.fds);
        CHECK(end.threads == warm.threads, "threads grew from %ld to %ld", warm.threads, end.threads);
        CHECK(end.rss_kib - warm.rss_kib <= 1024, "RSS grew by %ld KiB", end.rss_kib - warm.rss_kib);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
