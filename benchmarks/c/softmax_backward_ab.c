/* A/B time of performer_softmax_backward (float32) in two builds of the library, loaded into
 * one process with dlopen and called alternately, so that the load of a shared machine hits
 * both alike. Prints, per shape, the best and the median of ROUNDS calls of each build (ms) and
 * the ratio new/old of the medians.
 *
 *   gcc -O2 -std=c11 -Iinclude benchmarks/c/softmax_backward_ab.c -ldl -o /tmp/softmax_ab
 *   /tmp/softmax_ab OLD/libperformer.so NEW/libperformer.so [N ...]
 *
 * Both libraries export the same symbols; RTLD_LOCAL | RTLD_DEEPBIND keeps each one's calls
 * inside itself. */
#define _GNU_SOURCE
#include "performer.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef ROUNDS
#define ROUNDS 9
#endif

typedef performer_status (*forward_fn)(const performer_tensor_t *, const performer_tensor_t *,
                                       const performer_tensor_t *, performer_tensor_t *, performer_tensor_t *,
                                       const performer_softmax_options_t *);
typedef performer_status (*backward_fn)(const performer_tensor_t *, const performer_tensor_t *,
                                        const performer_tensor_t *, const performer_tensor_t *,
                                        const performer_tensor_t *, const performer_tensor_t *, performer_tensor_t *,
                                        performer_tensor_t *, performer_tensor_t *, const performer_softmax_options_t *);

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static performer_tensor_t tensor(float *data, int64_t b, int64_t h, int64_t n, int64_t d) {
    performer_tensor_t t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = PERFORMER_FLOAT32;
    t.shape[0] = b; t.shape[1] = h; t.shape[2] = n; t.shape[3] = d;
    t.strides[3] = 1; t.strides[2] = d; t.strides[1] = n * d; t.strides[0] = h * n * d;
    return t;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s OLD.so NEW.so [N ...]\n", argv[0]);
        return 2;
    }
    void *lib[2];
    forward_fn forward[2];
    backward_fn backward[2];
    for (int x = 0; x < 2; x++) {
        lib[x] = dlopen(argv[1 + x], RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
        if (!lib[x]) { fprintf(stderr, "%s\n", dlerror()); return 1; }
        forward[x] = (forward_fn)dlsym(lib[x], "performer_softmax_forward");
        backward[x] = (backward_fn)dlsym(lib[x], "performer_softmax_backward");
    }
    int64_t sizes[16] = {1024, 4096};
    int count = 2;
    if (argc > 3) {
        count = 0;
        for (int a = 3; a < argc && count < 16; a++) sizes[count++] = atoll(argv[a]);
    }
    const int64_t b = 1, h = 4, d = 64;
    for (int s = 0; s < count; s++) {
        for (int causal = 0; causal < 2; causal++) {
            int64_t n = sizes[s];
            size_t e = (size_t)(b * h * n * d);
            float *buf = malloc(sizeof(float) * (9 * e + (size_t)(b * h * n)));
            for (size_t i = 0; i < 9 * e; i++) buf[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
            performer_tensor_t q = tensor(buf, b, h, n, d), k = tensor(buf + e, b, h, n, d), v = tensor(buf + 2 * e, b, h, n, d);
            performer_tensor_t out = tensor(buf + 3 * e, b, h, n, d), dout = tensor(buf + 4 * e, b, h, n, d);
            performer_tensor_t dq = tensor(buf + 5 * e, b, h, n, d), dk = tensor(buf + 6 * e, b, h, n, d);
            performer_tensor_t dv = tensor(buf + 7 * e, b, h, n, d), lse = tensor(buf + 9 * e, b, h, n, 1);
            performer_softmax_options_t options;
            memset(&options, 0, sizeof options);
            options.size = sizeof options;
            options.causal = causal;
            if (forward[0](&q, &k, &v, &out, &lse, &options) != PERFORMER_OK) { fprintf(stderr, "forward failed\n"); return 1; }
            double times[2][ROUNDS];
            for (int r = 0; r < ROUNDS; r++) {
                for (int x = 0; x < 2; x++) {
                    double t0 = now_ms();
                    if (backward[x](&q, &k, &v, &out, &lse, &dout, &dq, &dk, &dv, &options) != PERFORMER_OK) {
                        fprintf(stderr, "backward failed\n");
                        return 1;
                    }
                    times[x][r] = now_ms() - t0;
                }
            }
            qsort(times[0], ROUNDS, sizeof(double), compare);
            qsort(times[1], ROUNDS, sizeof(double), compare);
            printf("N=%5lld causal=%d  old best %8.2f median %8.2f  new best %8.2f median %8.2f  new/old %.3f (best %.3f)\n",
                   (long long)n, causal, times[0][0], times[0][ROUNDS / 2], times[1][0], times[1][ROUNDS / 2],
                   times[1][ROUNDS / 2] / times[0][ROUNDS / 2], times[1][0] / times[0][0]);
            free(buf);
        }
    }
    return 0;
}
