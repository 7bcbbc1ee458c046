/* half_support.h: what the float16/bfloat16 C tests (test_half.c, test_half_decoders.c) share:
 * half <-> float conversions written here in C (round to nearest even: the yardstick), half
 * tensors, their float32 widening and "equals the float32 result rounded once" checks.
 * Include after test_support.h. */
#ifndef PERFORMER_HALF_SUPPORT_H
#define PERFORMER_HALF_SUPPORT_H

#include <stdint.h>

/* ---------------------------------------------------------------- half <-> float, in C */

static inline float bits_to_float(uint32_t x) { float f; memcpy(&f, &x, sizeof f); return f; }
static inline uint32_t float_to_bits(float f) { uint32_t x; memcpy(&x, &f, sizeof x); return x; }

static inline float f16_to_float(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float r = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 0x400), e - 25);
    return (h & 0x8000) ? -r : r;
}

/* Round to nearest even. */
static inline uint16_t f16_from_float(float f) {
    uint32_t x = float_to_bits(f), ax = x & 0x7fffffffu;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    if (ax > 0x7f800000u) return sign | 0x7e00;                     /* NaN */
    if (ax >= 0x477ff000u) return sign | 0x7c00;                    /* >= 65520: infinity */
    if (ax < 0x38800000u) {                                         /* below 2^-14: subnormal */
        return sign | (uint16_t)nearbyintf(bits_to_float(ax) * 16777216.0f);  /* units of 2^-24 */
    }
    return sign | (uint16_t)((ax + 0xfffu + ((ax >> 13) & 1) - 0x38000000u) >> 13);
}

static inline float bf16_to_float(uint16_t h) { return bits_to_float((uint32_t)h << 16); }

static inline uint16_t bf16_from_float(float f) {
    uint32_t x = float_to_bits(f);
    if (isnan(f)) return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

static inline float half_to_float(int dtype, uint16_t h) { return dtype == PERFORMER_FLOAT16 ? f16_to_float(h) : bf16_to_float(h); }
static inline uint16_t half_from_float(int dtype, float f) { return dtype == PERFORMER_FLOAT16 ? f16_from_float(f) : bf16_from_float(f); }

/* ---------------------------------------------------------------- half tensors */

static inline performer_tensor_t half_new(int dtype, int64_t s0, int64_t s1, int64_t s2, int64_t s3) {
    performer_tensor_t t;
    memset(&t, 0, sizeof t);
    size_t bytes = 2 * (size_t)(s0 * s1 * s2 * s3);
    t.data = calloc(1, bytes < 64 ? 64 : bytes);
    t.dtype = dtype;
    t.shape[0] = s0; t.shape[1] = s1; t.shape[2] = s2; t.shape[3] = s3;
    t.strides[3] = 1; t.strides[2] = s3; t.strides[1] = s2 * s3; t.strides[0] = s1 * s2 * s3;
    return t;
}

static inline uint16_t *half_at(const performer_tensor_t *t, int64_t a, int64_t b, int64_t c, int64_t d) {
    return (uint16_t *)t->data + offset(t, a, b, c, d);
}

/* Random values rounded to the half type. */
static inline void half_fill(performer_tensor_t *t, uint64_t seed) {
    int64_t i = 0;
    FOR4(t) *half_at(t, i0, i1, i2, i3) = half_from_float(t->dtype, (float)(2 * value_at(seed, i++)));
}

/* A float32 tensor holding the half tensor's values (exact). */
static inline performer_tensor_t widened(const performer_tensor_t *h) {
    performer_tensor_t t = tensor_new(PERFORMER_FLOAT32, h->shape[0], h->shape[1], h->shape[2], h->shape[3]);
    FOR4(h) set_at(&t, i0, i1, i2, i3, half_to_float(h->dtype, *half_at(h, i0, i1, i2, i3)));
    return t;
}

/* Whether half tensor h holds exactly float32 tensor f rounded to h's type. */
static inline int equals_rounded(const performer_tensor_t *h, const performer_tensor_t *f) {
    FOR4(h) {
        if (*half_at(h, i0, i1, i2, i3) != half_from_float(h->dtype, (float)at(f, i0, i1, i2, i3))) return 0;
    }
    return 1;
}

static inline int same_bits(const performer_tensor_t *a, const performer_tensor_t *b) {
    FOR4(a) if (*half_at(a, i0, i1, i2, i3) != *half_at(b, i0, i1, i2, i3)) return 0;
    return 1;
}

static inline void all_free(performer_tensor_t *ts, int count) { for (int i = 0; i < count; i++) free(ts[i].data); }

/* Whether two float32 tensors of one contiguous shape hold the same bits. */
static inline int same_floats(const performer_tensor_t *a, const performer_tensor_t *b) {
    return memcmp(a->data, b->data, sizeof(float) * (size_t)count_of(a)) == 0;
}

/* lo + |a random value| in every element of a float32 tensor. */
static inline void float_fill(performer_tensor_t *t, uint64_t seed, double lo) {
    int64_t i = 0;
    FOR4(t) set_at(t, i0, i1, i2, i3, lo + fabs(value_at(seed, i++)));
}

#endif
