/* test_support.h: what the C ABI tests (test_abi.c, test_linear.c, test_favor.c) share: the
 * pass/fail counters and CHECK, rank-4 tensors (allocation, element access, deterministic
 * values, sentinels), error-status checks and a clock. Each test is one translation unit that
 * includes this header once, after defining _GNU_SOURCE. */
#ifndef PERFORMER_TEST_SUPPORT_H
#define PERFORMER_TEST_SUPPORT_H

#include "performer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int passed, failed;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (cond) {                                                          \
            passed++;                                                        \
        } else {                                                             \
            failed++;                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);             \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
        }                                                                    \
    } while (0)

/* The call succeeded (one check). */
#define OK(call, what) CHECK((call) == PERFORMER_OK, "%s: %s", what, performer_last_error())

/* ---------------------------------------------------------------- tensors */

/* What outputs hold before a call that must not write them. */
#define SENTINEL 12345.5

static inline size_t elem_size(int dtype) { return dtype == PERFORMER_FLOAT32 ? sizeof(float) : sizeof(double); }

/* A zeroed, contiguous s0 x s1 x s2 x s3 tensor (at least 64 bytes allocated; free its data). */
static inline performer_tensor_t tensor_new(int dtype, int64_t s0, int64_t s1, int64_t s2, int64_t s3) {
    performer_tensor_t t;
    memset(&t, 0, sizeof t);
    size_t bytes = elem_size(dtype) * (size_t)(s0 * s1 * s2 * s3);
    t.data = calloc(1, bytes < 64 ? 64 : bytes);
    t.dtype = dtype;
    t.shape[0] = s0; t.shape[1] = s1; t.shape[2] = s2; t.shape[3] = s3;
    t.strides[3] = 1; t.strides[2] = s3; t.strides[1] = s2 * s3; t.strides[0] = s1 * s2 * s3;
    return t;
}

static inline int64_t count_of(const performer_tensor_t *t) {
    return t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3];
}

static inline int64_t offset(const performer_tensor_t *t, int64_t a, int64_t b, int64_t c, int64_t d) {
    return a * t->strides[0] + b * t->strides[1] + c * t->strides[2] + d * t->strides[3];
}

/* Element (a, b, c, d) of t as double. */
static inline double at(const performer_tensor_t *t, int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t o = offset(t, a, b, c, d);
    return t->dtype == PERFORMER_FLOAT32 ? ((const float *)t->data)[o] : ((const double *)t->data)[o];
}

static inline void set_at(performer_tensor_t *t, int64_t a, int64_t b, int64_t c, int64_t d, double x) {
    int64_t o = offset(t, a, b, c, d);
    if (t->dtype == PERFORMER_FLOAT32) ((float *)t->data)[o] = (float)x;
    else ((double *)t->data)[o] = x;
}

/* Every index (i0, i1, i2, i3) of t, row-major. */
#define FOR4(t) \
    for (int64_t i0 = 0; i0 < (t)->shape[0]; i0++) for (int64_t i1 = 0; i1 < (t)->shape[1]; i1++) \
    for (int64_t i2 = 0; i2 < (t)->shape[2]; i2++) for (int64_t i3 = 0; i3 < (t)->shape[3]; i3++)

/* Deterministic values in [-1, 1). */
static inline double value_at(uint64_t seed, int64_t i) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + (uint64_t)i * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31; x *= 0x94D049BB133111EBull; x ^= x >> 29;
    return (double)(x >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
}

static inline void fill_value(performer_tensor_t *t, double x) { FOR4(t) set_at(t, i0, i1, i2, i3, x); }

static inline int is_value(const performer_tensor_t *t, double x) {
    FOR4(t) if (at(t, i0, i1, i2, i3) != x) return 0;
    return 1;
}

/* A contiguous double copy of t (row-major over its shape). */
static inline double *doubles_of(const performer_tensor_t *t) {
    double *r = malloc(sizeof(double) * (size_t)(count_of(t) > 0 ? count_of(t) : 1));
    int64_t i = 0;
    FOR4(t) r[i++] = at(t, i0, i1, i2, i3);
    return r;
}

/* max |t - ref| / max(max |ref|, smallest_scale); NaN or Inf in t gives INFINITY. */
static inline double max_relative_error(const performer_tensor_t *t, const double *ref, double smallest_scale) {
    double worst = 0, scale = smallest_scale;
    int64_t i = 0;
    FOR4(t) {
        double e = fabs(at(t, i0, i1, i2, i3) - ref[i]);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
        i++;
    }
    return worst / scale;
}

/* A view of position `i` of a rank-4 tensor (axis 2 of length 1). */
static inline performer_tensor_t position(const performer_tensor_t *t, int64_t i) {
    performer_tensor_t x = *t;
    x.shape[2] = 1;
    x.data = (char *)t->data + (size_t)(i * t->strides[2]) * elem_size(t->dtype);
    return x;
}

/* Batch row b of a rank-4 tensor (axis 0 of length 1), positions [from, to) of axis 2. */
static inline performer_tensor_t batch_rows(const performer_tensor_t *t, int64_t b, int64_t from, int64_t to) {
    performer_tensor_t x = *t;
    x.shape[0] = 1;
    x.shape[2] = to - from;
    x.data = (char *)t->data + (size_t)(b * t->strides[0] + from * t->strides[2]) * elem_size(t->dtype);
    return x;
}

/* max |a[b, h, from + i, x] - one[0, h, i, x]| over one's elements (one: a single batch row). */
static inline double batch_rows_difference(const performer_tensor_t *a, int64_t b, int64_t from,
                                           const performer_tensor_t *one) {
    double worst = 0;
    for (int64_t h = 0; h < one->shape[1]; h++)
        for (int64_t i = 0; i < one->shape[2]; i++)
            for (int64_t x = 0; x < one->shape[3]; x++) {
                double e = fabs(at(a, b, h, from + i, x) - at(one, 0, h, i, x));
                if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
            }
    return worst;
}

/* Whether every key row j outside [starts[b], ends[b]) of a (B x Hk x L x X) gradient is 0. */
static inline int padded_rows_zero(const performer_tensor_t *g, const int64_t *starts, const int64_t *ends) {
    for (int64_t b = 0; b < g->shape[0]; b++)
        for (int64_t h = 0; h < g->shape[1]; h++)
            for (int64_t j = 0; j < g->shape[2]; j++)
                for (int64_t x = 0; x < g->shape[3]; x++)
                    if ((j < starts[b] || j >= ends[b]) && at(g, b, h, j, x) != 0) return 0;
    return 1;
}

/* ---------------------------------------------------------------- errors */

/* The call failed with `want` and the message contains `needle` (two checks). */
static inline void expect_status(const char *what, performer_status got, performer_status want, const char *needle) {
    const char *message = performer_last_error();
    CHECK(got == want, "%s: status %d (%s), want %d (%s); message \"%s\"", what, (int)got,
          performer_status_string(got), (int)want, performer_status_string(want), message);
    CHECK(strstr(message, needle) != NULL, "%s: message \"%s\" does not contain \"%s\"", what, message, needle);
}

/* ---------------------------------------------------------------- speed (printed, not asserted) */

static inline double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* `best` = the best of `rounds` timings of `calls` evaluations of `call`, in microseconds per
 * call; each call's status is ORed into `status`. */
#define BEST_US_PER_CALL(best, rounds, calls, status, call)                  \
    do {                                                                     \
        (best) = INFINITY;                                                   \
        for (int round_ = 0; round_ < (rounds); round_++) {                  \
            double t0_ = seconds();                                          \
            for (int call_ = 0; call_ < (calls); call_++) (status) |= (call); \
            double us_ = (seconds() - t0_) / (calls) * 1e6;                  \
            if (us_ < (best)) (best) = us_;                                  \
        }                                                                    \
    } while (0)

#endif /* PERFORMER_TEST_SUPPORT_H */
