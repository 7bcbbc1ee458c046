/* The cost of one decoder call through the C ABI, handle lookup included: the linear and the
 * FAVOR+ decoder step and projection_get_dim (a call that is almost nothing but the lookup),
 * best of ROUNDS rounds of CALLS calls, in ns per call.
 *
 *   gcc -O2 -std=c11 -Iinclude benchmarks/c/decoder_step.c -L.build/release -lperformer \
 *       -Wl,-rpath,$PWD/.build/release -o /tmp/decoder_step && /tmp/decoder_step
 *
 * To compare two builds of the library, run the same binary with LD_LIBRARY_PATH pointing at
 * a directory holding the other libperformer.so, alternately; on a loaded machine
 * `perf stat -e instructions:u` counts what the times blur. An argument runs only the lines
 * whose label starts with it. */
#define _GNU_SOURCE
#include "performer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef ROUNDS
#define ROUNDS 7
#endif
#ifndef CALLS
#define CALLS 20000
#endif

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
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

static void die(const char *what) {
    fprintf(stderr, "%s: %s\n", what, performer_last_error());
    exit(1);
}

/* One token per head through a linear decoder (H heads, D = M = dim). */
static double linear_step(int64_t heads, int64_t dim) {
    performer_linear_decoder_t dec = NULL;
    if (performer_linear_decoder_create(&dec, PERFORMER_FLOAT32, 1, heads, heads, dim, dim,
                                        PERFORMER_FEATURE_ELU_PLUS_ONE, 1e-6) != PERFORMER_OK) die("create");
    float *buf = calloc((size_t)(4 * heads * dim), sizeof(float));
    for (int64_t i = 0; i < 4 * heads * dim; i++) buf[i] = 0.01f * (float)(i % 13);
    performer_tensor_t q = tensor(buf, 1, heads, 1, dim), k = tensor(buf + heads * dim, 1, heads, 1, dim);
    performer_tensor_t v = tensor(buf + 2 * heads * dim, 1, heads, 1, dim);
    performer_tensor_t out = tensor(buf + 3 * heads * dim, 1, heads, 1, dim);
    double best = 1e300;
    for (int r = 0; r < ROUNDS; r++) {
        performer_linear_decoder_reset(dec);
        double t0 = now_ns();
        for (int i = 0; i < CALLS; i++)
            if (performer_linear_decoder_step(dec, &q, &k, &v, &out) != PERFORMER_OK) die("step");
        double t = (now_ns() - t0) / CALLS;
        if (t < best) best = t;
    }
    performer_linear_decoder_destroy(dec);
    free(buf);
    return best;
}

/* One token per head through a FAVOR+ decoder (dim D, m = dim features, M = dim). */
static double favor_step(performer_favor_projection_t p, int64_t heads, int64_t dim) {
    performer_favor_decoder_t dec = NULL;
    if (performer_favor_decoder_create(&dec, p, PERFORMER_FLOAT32, 1, heads, dim, NULL) != PERFORMER_OK) die("create");
    float *buf = calloc((size_t)(4 * heads * dim), sizeof(float));
    for (int64_t i = 0; i < 4 * heads * dim; i++) buf[i] = 0.01f * (float)(i % 13);
    performer_tensor_t q = tensor(buf, 1, heads, 1, dim), k = tensor(buf + heads * dim, 1, heads, 1, dim);
    performer_tensor_t v = tensor(buf + 2 * heads * dim, 1, heads, 1, dim);
    performer_tensor_t out = tensor(buf + 3 * heads * dim, 1, heads, 1, dim);
    double best = 1e300;
    for (int r = 0; r < ROUNDS; r++) {
        performer_favor_decoder_reset(dec);
        double t0 = now_ns();
        for (int i = 0; i < CALLS; i++)
            if (performer_favor_decoder_step(dec, &q, &k, &v, &out) != PERFORMER_OK) die("favor step");
        double t = (now_ns() - t0) / CALLS;
        if (t < best) best = t;
    }
    performer_favor_decoder_destroy(dec);
    free(buf);
    return best;
}

static double get_dim(performer_favor_projection_t p) {
    double best = 1e300;
    int64_t dim = 0;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (int i = 0; i < CALLS; i++)
            if (performer_favor_projection_get_dim(p, &dim) != PERFORMER_OK) die("get_dim");
        double t = (now_ns() - t0) / CALLS;
        if (t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv) {
    /* Optional argument: run only the line whose label starts with it ("linear step H=1"). */
    const char *only = argc > 1 ? argv[1] : "";
#define RUN(label, expr) \
    if (strncmp(label, only, strlen(only)) == 0) printf("%-26s %8.1f ns\n", label ":", expr)
    performer_set_num_threads(1);
    performer_favor_projection_t p = NULL;
    if (performer_favor_projection_create(&p, 16, 16, PERFORMER_PROJECTION_IID, PERFORMER_NORMS_CHI, 1) != PERFORMER_OK)
        die("projection");
    RUN("linear step H=1 D=M=16", linear_step(1, 16));
    RUN("linear step H=8 D=M=64", linear_step(8, 64));
    RUN("favor step H=1 D=m=M=16", favor_step(p, 1, 16));
    RUN("projection_get_dim", get_dim(p));
    performer_favor_projection_destroy(p);
    return 0;
}
