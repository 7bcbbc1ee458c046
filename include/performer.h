/*
 * performer.h — the C interface of libperformer.
 *
 * libperformer computes attention on the CPU, forward and backward:
 *   - exact softmax attention (tiled online softmax; no N x L buffer),
 * in float32 and float64, on strided rank-4 tensors, with its own worker threads.
 * The exact functions are specified in docs/ALGORITHMS.md.
 *
 * Conventions
 *   - Every function that can fail returns a performer_status. On failure, no output has
 *     been written, and performer_last_error() says which argument was wrong and why.
 *   - Tensors are passed as performer_tensor_t descriptors: a data pointer, a dtype, and
 *     rank-4 shape and strides counted in elements (not bytes). Any strides work, so a
 *     B x N x H x D buffer can be passed as B x H x N x D without a copy.
 *   - Options are structs whose first field is their size; fill them with the matching
 *     *_options_init() function, then change the fields you need.
 *   - Every function may be called from many threads at once.
 */
#ifndef PERFORMER_H
#define PERFORMER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================================
 * Versions
 * ====================================================================================== */

#define PERFORMER_VERSION_MAJOR 0
#define PERFORMER_VERSION_MINOR 1
#define PERFORMER_VERSION_PATCH 0
/** MAJOR * 10000 + MINOR * 100 + PATCH, as performer_version() returns. */
#define PERFORMER_VERSION_NUMBER \
    (PERFORMER_VERSION_MAJOR * 10000 + PERFORMER_VERSION_MINOR * 100 + PERFORMER_VERSION_PATCH)
/** Incremented on every incompatible change of this header's types or functions. */
#define PERFORMER_ABI_VERSION 1

/** The library's version as MAJOR * 10000 + MINOR * 100 + PATCH (compare with
 *  PERFORMER_VERSION_NUMBER to detect a header/library mismatch). */
int performer_version(void);

/** The library's version as "MAJOR.MINOR.PATCH"; a static string. */
const char *performer_version_string(void);

/** The library's ABI version. A caller that loads the library with dlopen should check that
 *  it equals the PERFORMER_ABI_VERSION it was compiled with before calling anything else. */
int performer_abi_version(void);

/* ======================================================================================
 * Errors
 * ====================================================================================== */

/** Status codes. Values are stable; new codes are only appended. */
typedef enum performer_status {
    PERFORMER_OK = 0,
    PERFORMER_ERROR_NULL_POINTER = 1,        /* a required pointer was NULL */
    PERFORMER_ERROR_INVALID_ARGUMENT = 2,    /* an option or scalar is out of its domain */
    PERFORMER_ERROR_SHAPE_MISMATCH = 3,      /* tensor shapes disagree */
    PERFORMER_ERROR_DTYPE_MISMATCH = 4,      /* unsupported dtype, or dtypes that differ */
    PERFORMER_ERROR_SIZE_OVERFLOW = 5,       /* negative size, or sizes/strides overflow */
    PERFORMER_ERROR_ALIASING = 6,            /* an output overlaps an input, output or itself */
    PERFORMER_ERROR_OUT_OF_MEMORY = 7,       /* scratch memory could not be allocated */
    PERFORMER_ERROR_UNSUPPORTED_VERSION = 8, /* an options struct's size field is unknown */
    PERFORMER_ERROR_UNSUPPORTED_CPU = 9      /* the CPU lacks a requested instruction set */
} performer_status;

/** A short fixed description of a status code ("shape mismatch"); never NULL. */
const char *performer_status_string(performer_status status);

/** The message of the last failed call on this thread ("k.shape[3] = 48 but q.shape[3] = 64"),
 *  or "" when none failed yet. Valid until the next call on this thread. */
const char *performer_last_error(void);

/* ======================================================================================
 * Tensors
 * ====================================================================================== */

typedef enum performer_dtype {
    PERFORMER_FLOAT32 = 0,
    PERFORMER_FLOAT64 = 1
} performer_dtype;

/** A rank-4 strided view of caller-owned memory. Element (i0, i1, i2, i3) is at
 *  ((T *)data)[i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * strides[3]],
 *  where T is float (PERFORMER_FLOAT32) or double (PERFORMER_FLOAT64). Strides may be
 *  negative or zero for inputs; outputs must not map two indices to one element. */
typedef struct performer_tensor_t {
    void *data;
    int32_t dtype;        /* a performer_dtype */
    int32_t reserved;     /* must be 0 */
    int64_t shape[4];
    int64_t strides[4];   /* in elements */
} performer_tensor_t;

/* ======================================================================================
 * Threads
 * ====================================================================================== */

/** Bounds the worker threads later calls use (the calling thread included) to n, 1..1024;
 *  0 restores the default: PERFORMER_NUM_THREADS from the environment, else the CPUs this
 *  process may run on. */
performer_status performer_set_num_threads(int n);

/** The number of threads calls use now. */
int performer_get_num_threads(void);

/* ======================================================================================
 * Exact softmax attention
 *
 *   out = softmax(scale * q k^T + mask) v
 *   q: B x H x N x D, k: B x Hk x L x D, v: B x Hk x L x M, out: B x H x N x M,
 *   lse: B x H x N x 1 (the row log-sum-exp of the scaled, masked scores).
 *   Hk must divide H; query head h reads key head h / (H / Hk) (grouped-query attention).
 * ====================================================================================== */

typedef struct performer_softmax_options_t {
    size_t size;                /* sizeof(performer_softmax_options_t) */
    int causal;                 /* nonzero: query i sees key j iff j <= i + (L - N) */
    int has_scale;              /* nonzero: use `scale`; zero: 1 / sqrt(D) */
    double scale;               /* must be finite when has_scale is set */
    const int64_t *kv_lengths;  /* NULL, or B key lengths in 0..L: keys j >= kv_lengths[b] are masked */
} performer_softmax_options_t;

/** Fills *options with the defaults: not causal, scale 1/sqrt(D), no key lengths. */
void performer_softmax_options_init(performer_softmax_options_t *options);

/** Forward. `lse` may be NULL; `options` may be NULL (defaults). */
performer_status performer_softmax_forward(
    const performer_tensor_t *q, const performer_tensor_t *k, const performer_tensor_t *v,
    performer_tensor_t *out, performer_tensor_t *lse, const performer_softmax_options_t *options);

/** Backward: given the forward's out and lse and dout = dLoss/dout, writes dq, dk, dv. */
performer_status performer_softmax_backward(
    const performer_tensor_t *q, const performer_tensor_t *k, const performer_tensor_t *v,
    const performer_tensor_t *out, const performer_tensor_t *lse, const performer_tensor_t *dout,
    performer_tensor_t *dq, performer_tensor_t *dk, performer_tensor_t *dv,
    const performer_softmax_options_t *options);

#ifdef __cplusplus
}
#endif
#endif /* PERFORMER_H */
