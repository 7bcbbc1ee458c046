/* test_abi.c: attacks libperformer's C ABI. Every bad argument must give its status code and
 * a message naming the argument, and leave the outputs untouched; good arguments must give
 * the float64 reference's result; concurrent calls must equal serial ones bit for bit.
 * Prints "N passed, M failed" last and exits nonzero on any failure. */
#define _GNU_SOURCE
#include "test_support.h"

#include <pthread.h>

/* ---------------------------------------------------------------- tensors and buffers */

static performer_tensor_t contiguous(void *data, int dtype, int64_t s0, int64_t s1, int64_t s2, int64_t s3) {
    performer_tensor_t t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dtype;
    t.shape[0] = s0; t.shape[1] = s1; t.shape[2] = s2; t.shape[3] = s3;
    t.strides[3] = 1;
    t.strides[2] = s3;
    t.strides[1] = s2 * s3;
    t.strides[0] = s1 * s2 * s3;
    return t;
}

static void fill(performer_tensor_t *t, uint64_t seed) {
    int64_t n = count_of(t);
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == PERFORMER_FLOAT32) ((float *)t->data)[i] = (float)value_at(seed, i);
        else ((double *)t->data)[i] = value_at(seed, i);
    }
}

static void fill_sentinel(performer_tensor_t *t) {
    int64_t n = count_of(t);
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == PERFORMER_FLOAT32) ((float *)t->data)[i] = (float)SENTINEL;
        else ((double *)t->data)[i] = SENTINEL;
    }
}

static int is_sentinel(const performer_tensor_t *t) {
    int64_t n = count_of(t);
    for (int64_t i = 0; i < n; i++) {
        double x = t->dtype == PERFORMER_FLOAT32 ? ((float *)t->data)[i] : ((double *)t->data)[i];
        if (x != SENTINEL) return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- a float64 reference */

/* Forward and backward of ALGORITHMS.md §1, directly: P for one (b, h) is built in full. Results
 * are contiguous double arrays in the shapes of out, lse, dq, dk, dv (dq/dk/dv may be NULL). */
static void reference(const performer_tensor_t *q, const performer_tensor_t *k, const performer_tensor_t *v,
                      const performer_tensor_t *dout, const performer_softmax_options_t *o,
                      double *out, double *lse, double *dq, double *dk, double *dv) {
    int64_t B = q->shape[0], H = q->shape[1], N = q->shape[2], D = q->shape[3];
    int64_t Hk = k->shape[1], L = k->shape[2], M = v->shape[3];
    double s = o->has_scale ? o->scale : 1.0 / sqrt((double)D);
    double *p = calloc((size_t)(N * L), sizeof(double));
    double *dp = calloc((size_t)(N * L), sizeof(double));
    if (dk) memset(dk, 0, sizeof(double) * (size_t)(B * Hk * L * D));
    if (dv) memset(dv, 0, sizeof(double) * (size_t)(B * Hk * L * M));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            int64_t hk = h / (H / Hk);
            int64_t limit = o->kv_lengths ? o->kv_lengths[b] : L;
            int64_t start = o->kv_starts ? o->kv_starts[b] : 0;
            for (int64_t i = 0; i < N; i++) {
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < L; j++) {
                    int seen = j < limit && j >= start && (!o->causal || j <= i + (L - N));
                    double x = -INFINITY;
                    if (seen) {
                        x = 0;
                        for (int64_t d = 0; d < D; d++) x += at(q, b, h, i, d) * at(k, b, hk, j, d);
                        x *= s;
                    }
                    p[i * L + j] = x;
                    if (x > mx) mx = x;
                }
                for (int64_t j = 0; j < L; j++) {
                    p[i * L + j] = mx == -INFINITY ? 0 : exp(p[i * L + j] - mx);
                    sum += p[i * L + j];
                }
                for (int64_t j = 0; j < L; j++) if (sum > 0) p[i * L + j] /= sum;
                lse[(b * H + h) * N + i] = sum > 0 ? mx + log(sum) : -INFINITY;
                for (int64_t m = 0; m < M; m++) {
                    double acc = 0;
                    for (int64_t j = 0; j < L; j++) acc += p[i * L + j] * at(v, b, hk, j, m);
                    out[((b * H + h) * N + i) * M + m] = acc;
                }
            }
            if (!dq) continue;
            for (int64_t i = 0; i < N; i++) {
                double delta = 0;
                for (int64_t m = 0; m < M; m++) delta += at(dout, b, h, i, m) * out[((b * H + h) * N + i) * M + m];
                for (int64_t j = 0; j < L; j++) {
                    double x = 0;
                    for (int64_t m = 0; m < M; m++) x += at(dout, b, h, i, m) * at(v, b, hk, j, m);
                    dp[i * L + j] = p[i * L + j] * (x - delta); /* dS */
                }
            }
            for (int64_t i = 0; i < N; i++)
                for (int64_t d = 0; d < D; d++) {
                    double acc = 0;
                    for (int64_t j = 0; j < L; j++) acc += dp[i * L + j] * at(k, b, hk, j, d);
                    dq[((b * H + h) * N + i) * D + d] = s * acc;
                }
            for (int64_t j = 0; j < L; j++) {
                for (int64_t d = 0; d < D; d++) {
                    double acc = 0;
                    for (int64_t i = 0; i < N; i++) acc += dp[i * L + j] * at(q, b, h, i, d);
                    dk[((b * Hk + hk) * L + j) * D + d] += s * acc;
                }
                for (int64_t m = 0; m < M; m++) {
                    double acc = 0;
                    for (int64_t i = 0; i < N; i++) acc += p[i * L + j] * at(dout, b, h, i, m);
                    dv[((b * Hk + hk) * L + j) * M + m] += acc;
                }
            }
        }
    free(p);
    free(dp);
}

/* Largest |t - ref| over t's elements, ref contiguous in t's shape; inf/-inf must match exactly. */
static double max_error(const performer_tensor_t *t, const double *ref) {
    double worst = 0;
    int64_t i = 0;
    for (int64_t a = 0; a < t->shape[0]; a++)
        for (int64_t b = 0; b < t->shape[1]; b++)
            for (int64_t c = 0; c < t->shape[2]; c++)
                for (int64_t d = 0; d < t->shape[3]; d++, i++) {
                    double x = at(t, a, b, c, d);
                    double e = isinf(ref[i]) ? (x == ref[i] ? 0 : INFINITY) : fabs(x - ref[i]);
                    if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
                }
    return worst;
}

/* ---------------------------------------------------------------- a problem with all its tensors */

enum { B = 2, H = 4, HK = 2, N = 5, L = 7, D = 8, M = 6 };

typedef struct {
    int dtype;
    performer_tensor_t q, k, v, out, lse, dout, dq, dk, dv;
    performer_softmax_options_t options;
    int64_t lengths[B];
    performer_tensor_t pristine[5]; /* out, lse, dq, dk, dv as allocated, whatever a test changes */
} problem;

static void *alloc_zeroed(size_t bytes) { return calloc(1, bytes < 64 ? 64 : bytes); }

static void problem_init(problem *p, int dtype) {
    size_t e = dtype == PERFORMER_FLOAT32 ? sizeof(float) : sizeof(double);
    memset(p, 0, sizeof *p);
    p->dtype = dtype;
    p->q = contiguous(alloc_zeroed(e * B * H * N * D), dtype, B, H, N, D);
    p->k = contiguous(alloc_zeroed(e * B * HK * L * D), dtype, B, HK, L, D);
    p->v = contiguous(alloc_zeroed(e * B * HK * L * M), dtype, B, HK, L, M);
    p->out = contiguous(alloc_zeroed(e * B * H * N * M), dtype, B, H, N, M);
    p->lse = contiguous(alloc_zeroed(e * B * H * N), dtype, B, H, N, 1);
    p->dout = contiguous(alloc_zeroed(e * B * H * N * M), dtype, B, H, N, M);
    p->dq = contiguous(alloc_zeroed(e * B * H * N * D), dtype, B, H, N, D);
    p->dk = contiguous(alloc_zeroed(e * B * HK * L * D), dtype, B, HK, L, D);
    p->dv = contiguous(alloc_zeroed(e * B * HK * L * M), dtype, B, HK, L, M);
    fill(&p->q, 1); fill(&p->k, 2); fill(&p->v, 3); fill(&p->dout, 4);
    fill_sentinel(&p->out); fill_sentinel(&p->lse);
    fill_sentinel(&p->dq); fill_sentinel(&p->dk); fill_sentinel(&p->dv);
    performer_softmax_options_init(&p->options);
    p->pristine[0] = p->out; p->pristine[1] = p->lse;
    p->pristine[2] = p->dq; p->pristine[3] = p->dk; p->pristine[4] = p->dv;
}

static void problem_free(problem *p) {
    free(p->q.data); free(p->k.data); free(p->v.data); free(p->out.data); free(p->lse.data);
    free(p->dout.data); free(p->dq.data); free(p->dk.data); free(p->dv.data);
}

static int outputs_untouched(problem *p) {
    for (int i = 0; i < 5; i++)
        if (!is_sentinel(&p->pristine[i])) return 0;
    return 1;
}

/* The call failed with `want`, the message contains `needle`, and no output was written. */
static void expect_error(const char *what, performer_status got, performer_status want, const char *needle,
                         problem *p) {
    expect_status(what, got, want, needle);
    CHECK(outputs_untouched(p), "%s: an output was written on error", what);
}

static performer_status forward(problem *p) {
    return performer_softmax_forward(&p->q, &p->k, &p->v, &p->out, &p->lse, &p->options);
}

static performer_status backward(problem *p) {
    return performer_softmax_backward(&p->q, &p->k, &p->v, &p->out, &p->lse, &p->dout, &p->dq, &p->dk, &p->dv,
                                      &p->options);
}

/* ---------------------------------------------------------------- tests */

static void test_versions(void) {
    char text[64];
    snprintf(text, sizeof text, "%d.%d.%d", PERFORMER_VERSION_MAJOR, PERFORMER_VERSION_MINOR, PERFORMER_VERSION_PATCH);
    CHECK(performer_version() == PERFORMER_VERSION_NUMBER, "performer_version() = %d, header %d", performer_version(),
          PERFORMER_VERSION_NUMBER);
    CHECK(strcmp(performer_version_string(), text) == 0, "performer_version_string() = \"%s\", header \"%s\"",
          performer_version_string(), text);
    CHECK(performer_abi_version() == PERFORMER_ABI_VERSION, "performer_abi_version() = %d, header %d",
          performer_abi_version(), PERFORMER_ABI_VERSION);
}

static void test_status_strings(void) {
    static const char *const expected[] = {
        "ok", "null pointer", "invalid argument", "shape mismatch", "dtype mismatch or unsupported dtype",
        "size or stride overflow", "output aliases another tensor", "out of memory", "unsupported options version",
        "unsupported CPU feature",
    };
    for (int code = 0; code <= PERFORMER_ERROR_UNSUPPORTED_CPU; code++) {
        const char *text = performer_status_string((performer_status)code);
        CHECK(text != NULL && strcmp(text, expected[code]) == 0, "performer_status_string(%d) = \"%s\", want \"%s\"",
              code, text ? text : "(null)", expected[code]);
    }
    const int unknown[] = {10, 11, 1000, -1, 0x7fffffff};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *text = performer_status_string((performer_status)unknown[i]);
        CHECK(text != NULL && strcmp(text, "unknown status code") == 0, "performer_status_string(%d) = \"%s\"",
              unknown[i], text ? text : "(null)");
    }
}

static void test_threads(void) {
    int initial = performer_get_num_threads();
    CHECK(initial >= 1, "performer_get_num_threads() = %d", initial);
    const char *env = getenv("PERFORMER_NUM_THREADS");
    if (env && atoi(env) > 0) CHECK(initial == atoi(env), "default threads %d but PERFORMER_NUM_THREADS=%s", initial, env);
    CHECK(performer_set_num_threads(3) == PERFORMER_OK, "set_num_threads(3)");
    CHECK(performer_get_num_threads() == 3, "get_num_threads() = %d after set 3", performer_get_num_threads());
    CHECK(performer_set_num_threads(1024) == PERFORMER_OK, "set_num_threads(1024)");
    CHECK(performer_get_num_threads() == 1024, "get_num_threads() = %d after set 1024", performer_get_num_threads());
    const int bad[] = {-1, 1025, -2147483647 - 1, 2147483647};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        performer_status s = performer_set_num_threads(bad[i]);
        CHECK(s == PERFORMER_ERROR_INVALID_ARGUMENT && strstr(performer_last_error(), "num_threads") != NULL,
              "set_num_threads(%d) = %d \"%s\"", bad[i], (int)s, performer_last_error());
        CHECK(performer_get_num_threads() == 1024, "a rejected set_num_threads(%d) changed the count to %d", bad[i],
              performer_get_num_threads());
    }
    CHECK(performer_set_num_threads(0) == PERFORMER_OK, "set_num_threads(0)");
    CHECK(performer_get_num_threads() == initial, "set_num_threads(0) gave %d, default was %d",
          performer_get_num_threads(), initial);
}

static void test_kernel_isa(void) {
    const char *isa = performer_kernel_isa();
    int avx2 = 0, avx512 = 0;
#if defined(__x86_64__)
    __builtin_cpu_init();
    avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl");
#endif
    const char *best = avx512 ? "avx512" : avx2 ? "avx2" : "portable";
    const char *want = best;
    const char *forced = getenv("PERFORMER_ISA");
    if (forced && (strcmp(forced, "portable") == 0 || (strcmp(forced, "avx2") == 0 && avx2) ||
                   (strcmp(forced, "avx512") == 0 && avx512)))
        want = forced;
    CHECK(isa != NULL && strcmp(isa, want) == 0, "performer_kernel_isa() = \"%s\", want \"%s\" (PERFORMER_ISA=%s)",
          isa ? isa : "(null)", want, forced ? forced : "unset");
    printf("kernel isa: %s, threads: %d\n", isa ? isa : "(null)", performer_get_num_threads());
}

/* Forward and backward against the reference: masks, GQA, scale, both dtypes, strided views. */
static void test_results(int dtype, int causal, int with_lengths, int with_scale) {
    problem p;
    problem_init(&p, dtype);
    p.options.causal = causal;
    if (with_scale) { p.options.has_scale = 1; p.options.scale = 0.3; }
    if (with_lengths) { p.lengths[0] = 0; p.lengths[1] = 4; p.options.kv_lengths = p.lengths; }
    double out[B * H * N * M], lse[B * H * N], dq[B * H * N * D], dk[B * HK * L * D], dv[B * HK * L * M];
    reference(&p.q, &p.k, &p.v, &p.dout, &p.options, out, lse, dq, dk, dv);
    double tol = dtype == PERFORMER_FLOAT32 ? 2e-5 : 1e-12;
    char what[96];
    snprintf(what, sizeof what, "%s causal=%d lengths=%d scale=%d", dtype ? "float64" : "float32", causal,
             with_lengths, with_scale);
    performer_status s = forward(&p);
    CHECK(s == PERFORMER_OK, "%s forward: %s", what, performer_last_error());
    double e1 = max_error(&p.out, out), e2 = max_error(&p.lse, lse);
    CHECK(e1 <= tol && e2 <= tol, "%s forward: out error %g, lse error %g", what, e1, e2);
    s = backward(&p);
    CHECK(s == PERFORMER_OK, "%s backward: %s", what, performer_last_error());
    double e3 = max_error(&p.dq, dq), e4 = max_error(&p.dk, dk), e5 = max_error(&p.dv, dv);
    CHECK(e3 <= tol && e4 <= tol && e5 <= tol, "%s backward: dq %g dk %g dv %g", what, e3, e4, e5);

    /* q and out as strided views: a B x N x H x D buffer seen as B x H x N x D. */
    size_t e = dtype == PERFORMER_FLOAT32 ? sizeof(float) : sizeof(double);
    performer_tensor_t qs = contiguous(alloc_zeroed(e * B * N * H * D), dtype, B, H, N, D);
    performer_tensor_t os = contiguous(alloc_zeroed(e * B * N * H * M), dtype, B, H, N, M);
    qs.strides[1] = D; qs.strides[2] = H * D;
    os.strides[1] = M; os.strides[2] = H * M;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < N; i++)
                for (int64_t d = 0; d < D; d++) {
                    int64_t o = b * qs.strides[0] + h * qs.strides[1] + i * qs.strides[2] + d;
                    if (dtype == PERFORMER_FLOAT32) ((float *)qs.data)[o] = (float)at(&p.q, b, h, i, d);
                    else ((double *)qs.data)[o] = at(&p.q, b, h, i, d);
                }
    s = performer_softmax_forward(&qs, &p.k, &p.v, &os, NULL, &p.options);
    CHECK(s == PERFORMER_OK, "%s strided forward: %s", what, performer_last_error());
    double e6 = max_error(&os, out);
    CHECK(e6 <= tol, "%s strided forward: error %g", what, e6);
    free(qs.data);
    free(os.data);
    problem_free(&p);
}

/* kv_starts: honoured (vs the reference) forward and backward, causal and not; an old-size
 * struct (ending at kv_lengths) still works and its kv_starts field is never read; bad starts
 * give INVALID_ARGUMENT naming kv_starts[b] and write nothing. */
static void test_key_starts(int dtype) {
    double out[B * H * N * M], lse[B * H * N], dq[B * H * N * D], dk[B * HK * L * D], dv[B * HK * L * M];
    double tol = dtype == PERFORMER_FLOAT32 ? 2e-5 : 1e-12;
    int64_t starts[B] = {2, 7}, lengths[B] = {6, 7}; /* both-side padding; every key masked */
    for (int causal = 0; causal < 2; causal++) {
        problem p;
        problem_init(&p, dtype);
        p.options.causal = causal;
        p.options.kv_lengths = lengths;
        p.options.kv_starts = starts;
        reference(&p.q, &p.k, &p.v, &p.dout, &p.options, out, lse, dq, dk, dv);
        performer_status s = forward(&p);
        CHECK(s == PERFORMER_OK, "kv_starts causal=%d forward: %s", causal, performer_last_error());
        s = backward(&p);
        CHECK(s == PERFORMER_OK, "kv_starts causal=%d backward: %s", causal, performer_last_error());
        double e[5] = {max_error(&p.out, out), max_error(&p.lse, lse), max_error(&p.dq, dq), max_error(&p.dk, dk),
                       max_error(&p.dv, dv)};
        CHECK(e[0] <= tol && e[1] <= tol && e[2] <= tol && e[3] <= tol && e[4] <= tol,
              "kv_starts causal=%d dtype=%d: out %g lse %g dq %g dk %g dv %g", causal, dtype, e[0], e[1], e[2], e[3],
              e[4]);
        /* Keys 0, 1 of batch row 0 are padding: dk = dv = 0 exactly. */
        for (int64_t hk = 0; hk < HK; hk++)
            for (int64_t j = 0; j < 2; j++)
                CHECK(at(&p.dk, 0, hk, j, 0) == 0 && at(&p.dv, 0, hk, j, 0) == 0, "padded key %lld has a gradient",
                      (long long)j);
        problem_free(&p);
    }

    /* The struct before kv_starts: its size is accepted, and the bytes after it are not read
     * (a bogus pointer there would crash or change the result). */
    problem p;
    problem_init(&p, dtype);
    p.options.kv_lengths = lengths;
    reference(&p.q, &p.k, &p.v, &p.dout, &p.options, out, lse, dq, dk, dv);
    p.options.size = offsetof(performer_softmax_options_t, kv_starts);
    p.options.kv_starts = (const int64_t *)(uintptr_t)16; /* must never be dereferenced */
    performer_status s = forward(&p);
    CHECK(s == PERFORMER_OK, "old-size options forward: %s", performer_last_error());
    s = backward(&p);
    CHECK(s == PERFORMER_OK, "old-size options backward: %s", performer_last_error());
    double e1 = max_error(&p.out, out), e2 = max_error(&p.dk, dk);
    CHECK(e1 <= tol && e2 <= tol, "old-size options: out %g dk %g (as without starts)", e1, e2);
    problem_free(&p);

    problem_init(&p, dtype);
    const int64_t bad[][B] = {{-1, 0}, {0, L + 1}, {7, 0}, {INT64_MIN, 0}};
    const char *needles[] = {"kv_starts[0] = -1", "kv_starts[1] = 8 is not in 0...7",
                             "kv_starts[0] = 7 is past kv_lengths[0] = 6", "kv_starts[0] = -9223372036854775808"};
    for (int i = 0; i < 4; i++) {
        p.options.kv_lengths = lengths;
        p.options.kv_starts = bad[i];
        expect_error(needles[i], forward(&p), PERFORMER_ERROR_INVALID_ARGUMENT, needles[i], &p);
        expect_error(needles[i], backward(&p), PERFORMER_ERROR_INVALID_ARGUMENT, needles[i], &p);
    }
    /* A k of another batch size: the shapes fail before the B entries of kv_starts are read. */
    performer_tensor_t k3 = p.k;
    k3.shape[0] = 3;
    int64_t two[B] = {0, 0};
    p.options.kv_starts = two;
    expect_error("k batch 3", performer_softmax_forward(&p.q, &k3, &p.v, &p.out, &p.lse, &p.options),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "k.shape[0] = 3 but q.shape[0] = 2", &p);
    problem_free(&p);
}

static void test_forward_errors(void) {
    problem p;
    problem_init(&p, PERFORMER_FLOAT32);
    performer_tensor_t saved;
    char what[64];

    expect_error("q NULL", performer_softmax_forward(NULL, &p.k, &p.v, &p.out, &p.lse, NULL),
                 PERFORMER_ERROR_NULL_POINTER, "q is NULL", &p);
    expect_error("k NULL", performer_softmax_forward(&p.q, NULL, &p.v, &p.out, &p.lse, NULL),
                 PERFORMER_ERROR_NULL_POINTER, "k is NULL", &p);
    expect_error("v NULL", performer_softmax_forward(&p.q, &p.k, NULL, &p.out, &p.lse, NULL),
                 PERFORMER_ERROR_NULL_POINTER, "v is NULL", &p);
    expect_error("out NULL", performer_softmax_forward(&p.q, &p.k, &p.v, NULL, &p.lse, NULL),
                 PERFORMER_ERROR_NULL_POINTER, "out is NULL", &p);

    performer_tensor_t *tensors[] = {&p.q, &p.k, &p.v, &p.out, &p.lse};
    const char *names[] = {"q", "k", "v", "out", "lse"};
    for (int i = 0; i < 5; i++) {
        char needle[64];
        saved = *tensors[i];
        tensors[i]->data = NULL;
        snprintf(what, sizeof what, "%s.data NULL", names[i]);
        snprintf(needle, sizeof needle, "%s.data is NULL", names[i]);
        expect_error(what, forward(&p), PERFORMER_ERROR_NULL_POINTER, needle, &p);
        *tensors[i] = saved;

        tensors[i]->dtype = 7;
        snprintf(what, sizeof what, "%s.dtype 7", names[i]);
        snprintf(needle, sizeof needle, "%s.dtype = 7 is not a performer_dtype", names[i]);
        expect_error(what, forward(&p), PERFORMER_ERROR_DTYPE_MISMATCH, needle, &p);
        tensors[i]->dtype = -1;
        snprintf(needle, sizeof needle, "%s.dtype = -1 is not a performer_dtype", names[i]);
        expect_error(what, forward(&p), PERFORMER_ERROR_DTYPE_MISMATCH, needle, &p);
        *tensors[i] = saved;

        tensors[i]->reserved = 1;
        snprintf(what, sizeof what, "%s.reserved 1", names[i]);
        snprintf(needle, sizeof needle, "%s.reserved = 1 but must be 0", names[i]);
        expect_error(what, forward(&p), PERFORMER_ERROR_INVALID_ARGUMENT, needle, &p);
        *tensors[i] = saved;

        tensors[i]->shape[2] = -3;
        snprintf(what, sizeof what, "%s.shape[2] negative", names[i]);
        snprintf(needle, sizeof needle, "%s.shape[2] = -3 is negative", names[i]);
        expect_error(what, forward(&p), PERFORMER_ERROR_SIZE_OVERFLOW, needle, &p);
        *tensors[i] = saved;

        tensors[i]->shape[0] = (int64_t)1 << 40;
        tensors[i]->shape[1] = (int64_t)1 << 40;
        snprintf(what, sizeof what, "%s.shape overflow", names[i]);
        snprintf(needle, sizeof needle, "%s.shape [1099511627776, 1099511627776", names[i]);
        expect_error(what, forward(&p), PERFORMER_ERROR_SIZE_OVERFLOW, needle, &p);
        *tensors[i] = saved;

        tensors[i]->strides[0] = INT64_MAX / 2;
        snprintf(what, sizeof what, "%s.strides[0] overflow", names[i]);
        snprintf(needle, sizeof needle, "%s ", names[i]);
        expect_error(what, forward(&p), PERFORMER_ERROR_SIZE_OVERFLOW, needle, &p);
        *tensors[i] = saved;

        tensors[i]->data = (char *)tensors[i]->data + 1;
        snprintf(what, sizeof what, "%s.data misaligned", names[i]);
        snprintf(needle, sizeof needle, "is not aligned to 4 bytes");
        expect_error(what, forward(&p), PERFORMER_ERROR_INVALID_ARGUMENT, needle, &p);
        *tensors[i] = saved;
    }

    /* A float64 tensor among float32 ones. */
    double *doubles = alloc_zeroed(sizeof(double) * B * HK * L * M);
    saved = p.v;
    p.v.data = doubles;
    p.v.dtype = PERFORMER_FLOAT64;
    expect_error("v float64", forward(&p), PERFORMER_ERROR_DTYPE_MISMATCH, "v.dtype = float64 but q.dtype = float32", &p);
    p.v = saved;
    saved = p.lse;
    p.lse.data = doubles;
    p.lse.dtype = PERFORMER_FLOAT64;
    expect_error("lse float64", forward(&p), PERFORMER_ERROR_DTYPE_MISMATCH, "lse.dtype = float64 but q.dtype = float32", &p);
    p.lse = saved;
    free(doubles);

    /* Shapes that disagree (buffers are large enough for every variant below). */
    saved = p.k; p.k.shape[3] = D - 1;
    expect_error("k head dim", forward(&p), PERFORMER_ERROR_SHAPE_MISMATCH, "k.shape[3] = 7 but q.shape[3] = 8", &p);
    p.k = saved;
    saved = p.k; p.k.shape[0] = 1;
    expect_error("k batch", forward(&p), PERFORMER_ERROR_SHAPE_MISMATCH, "k.shape[0] = 1 but q.shape[0] = 2", &p);
    p.k = saved;
    saved = p.v; p.v.shape[2] = L - 1;
    expect_error("v keys", forward(&p), PERFORMER_ERROR_SHAPE_MISMATCH, "v.shape[2] = 6 but k.shape[2] = 7", &p);
    p.v = saved;
    saved = p.out; p.out.shape[3] = M - 1;
    expect_error("out width", forward(&p), PERFORMER_ERROR_SHAPE_MISMATCH, "out.shape[3] = 5", &p);
    p.out = saved;
    saved = p.lse; p.lse.shape[2] = N - 1;
    expect_error("lse rows", forward(&p), PERFORMER_ERROR_SHAPE_MISMATCH, "lse.shape[2] = 4", &p);
    p.lse = saved;
    performer_tensor_t k3 = p.k, v3 = p.v;
    k3.shape[1] = 3; v3.shape[1] = 3;
    expect_error("H % Hk", performer_softmax_forward(&p.q, &k3, &v3, &p.out, &p.lse, NULL),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "q.shape[1] = 4 heads is not a multiple of k.shape[1] = 3", &p);
    performer_tensor_t q0 = p.q, k0 = p.k;
    q0.shape[3] = 0; k0.shape[3] = 0;
    expect_error("D = 0", performer_softmax_forward(&q0, &k0, &p.v, &p.out, &p.lse, NULL),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "q.shape[3] = 0", &p);

    /* Empty problems succeed and write nothing; empty tensors may have NULL data. */
    performer_tensor_t qe = p.q, oute = p.out, lsee = p.lse;
    qe.shape[2] = 0; oute.shape[2] = 0; lsee.shape[2] = 0;
    qe.data = NULL; oute.data = NULL;
    performer_status s = performer_softmax_forward(&qe, &p.k, &p.v, &oute, &lsee, NULL);
    CHECK(s == PERFORMER_OK, "N = 0 forward with NULL data: %d \"%s\"", (int)s, performer_last_error());
    CHECK(outputs_untouched(&p), "N = 0 forward wrote an output");

    /* Options. */
    size_t bad_sizes[] = {0, 8, sizeof(performer_softmax_options_t) - 4, sizeof(performer_softmax_options_t) + 8,
                          (size_t)-1};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        p.options.size = bad_sizes[i];
        snprintf(what, sizeof what, "options.size %zu", bad_sizes[i]);
        expect_error(what, forward(&p), PERFORMER_ERROR_UNSUPPORTED_VERSION, "options->size", &p);
    }
    performer_softmax_options_init(&p.options);
    const double bad_scales[] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        p.options.has_scale = 1;
        p.options.scale = bad_scales[i];
        snprintf(what, sizeof what, "scale %g", bad_scales[i]);
        expect_error(what, forward(&p), PERFORMER_ERROR_INVALID_ARGUMENT, "scale = ", &p);
    }
    p.options.has_scale = 0; /* scale is ignored then */
    p.options.scale = NAN;
    s = forward(&p);
    CHECK(s == PERFORMER_OK, "NaN scale with has_scale = 0 must be ignored: \"%s\"", performer_last_error());
    fill_sentinel(&p.out); fill_sentinel(&p.lse);
    performer_softmax_options_init(&p.options);
    const int64_t bad_lengths[][B] = {{3, L + 1}, {-1, 2}, {INT64_MIN, 0}, {INT64_MAX, 0}};
    const char *length_needles[] = {"kv_lengths[1] = 8", "kv_lengths[0] = -1", "kv_lengths[0] = -9223372036854775808",
                                    "kv_lengths[0] = 9223372036854775807"};
    for (int i = 0; i < 4; i++) {
        p.options.kv_lengths = bad_lengths[i];
        expect_error(length_needles[i], forward(&p), PERFORMER_ERROR_INVALID_ARGUMENT, length_needles[i], &p);
    }
    performer_softmax_options_init(&p.options);

    /* Outputs that alias inputs, each other, or themselves; inputs must stay unchanged too. */
    float q_copy[B * H * N * D];
    memcpy(q_copy, p.q.data, sizeof q_copy);
    performer_tensor_t alias = p.q;
    alias.shape[3] = M; /* out's shape over q's memory (q is larger) */
    alias.strides[2] = M; alias.strides[1] = N * M; alias.strides[0] = H * N * M;
    expect_error("out aliases q", performer_softmax_forward(&p.q, &p.k, &p.v, &alias, &p.lse, NULL),
                 PERFORMER_ERROR_ALIASING, "out overlaps input q", &p);
    CHECK(memcmp(q_copy, p.q.data, sizeof q_copy) == 0, "out aliases q: q was modified");
    performer_tensor_t lse_in_out = p.lse;
    lse_in_out.data = (float *)p.out.data + 3;
    expect_error("lse overlaps out", performer_softmax_forward(&p.q, &p.k, &p.v, &p.out, &lse_in_out, NULL), PERFORMER_ERROR_ALIASING, "overlaps output", &p);
    performer_tensor_t self = p.out;
    self.strides[3] = 0;
    expect_error("out zero stride", performer_softmax_forward(&p.q, &p.k, &p.v, &self, NULL, NULL),
                 PERFORMER_ERROR_ALIASING, "out.strides", &p);
    problem_free(&p);
}

static void test_backward_errors(void) {
    problem p;
    problem_init(&p, PERFORMER_FLOAT64);
    performer_status s = forward(&p);
    CHECK(s == PERFORMER_OK, "float64 forward: %s", performer_last_error());
    /* From here on out and lse hold results; keep copies to prove they stay untouched. */
    double out_copy[B * H * N * M], lse_copy[B * H * N];
    memcpy(out_copy, p.out.data, sizeof out_copy);
    memcpy(lse_copy, p.lse.data, sizeof lse_copy);
    /* Only dq, dk and dv are outputs of the backward: check those for sentinels. */
    p.pristine[0] = p.dq; p.pristine[1] = p.dk;
    performer_tensor_t *args[] = {&p.q, &p.k, &p.v, &p.out, &p.lse, &p.dout, &p.dq, &p.dk, &p.dv};
    const char *names[] = {"q", "k", "v", "out", "lse", "dout", "dq", "dk", "dv"};
    char what[64], needle[64];
    for (int i = 0; i < 9; i++) {
        const performer_tensor_t *a[9];
        for (int j = 0; j < 9; j++) a[j] = j == i ? NULL : args[j];
        s = performer_softmax_backward(a[0], a[1], a[2], a[3], a[4], a[5], (performer_tensor_t *)a[6],
                                       (performer_tensor_t *)a[7], (performer_tensor_t *)a[8], NULL);
        snprintf(what, sizeof what, "backward %s NULL", names[i]);
        snprintf(needle, sizeof needle, "%s is NULL", names[i]);
        const char *message = performer_last_error();
        CHECK(s == PERFORMER_ERROR_NULL_POINTER && strstr(message, needle), "%s: %d \"%s\"", what, (int)s, message);
        CHECK(outputs_untouched(&p), "%s: an output was written", what);

        performer_tensor_t saved = *args[i];
        args[i]->dtype = PERFORMER_FLOAT32;
        s = backward(&p);
        snprintf(what, sizeof what, "backward %s float32", names[i]);
        snprintf(needle, sizeof needle, i == 0 ? "dtype = float64 but q.dtype = float32" : "%s.dtype = float32 but q.dtype = float64", names[i]);
        message = performer_last_error();
        CHECK(s == PERFORMER_ERROR_DTYPE_MISMATCH && strstr(message, needle), "%s: %d \"%s\"", what, (int)s, message);
        CHECK(outputs_untouched(&p), "%s: an output was written", what);
        *args[i] = saved;
    }
    struct { performer_tensor_t *t; int axis; int64_t value; const char *needle; } shapes[] = {
        {&p.out, 3, M - 1, "out.shape[3] = 5"},  {&p.lse, 3, 2, "lse.shape[3] = 2"},
        {&p.dout, 2, N - 1, "dout.shape[2] = 4"}, {&p.dq, 3, D - 1, "dq.shape[3] = 7"},
        {&p.dk, 1, 1, "dk.shape[1] = 1"},        {&p.dv, 2, L - 1, "dv.shape[2] = 6"},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        performer_tensor_t saved = *shapes[i].t;
        shapes[i].t->shape[shapes[i].axis] = shapes[i].value;
        s = backward(&p);
        const char *message = performer_last_error();
        CHECK(s == PERFORMER_ERROR_SHAPE_MISMATCH && strstr(message, shapes[i].needle), "backward %s: %d \"%s\"",
              shapes[i].needle, (int)s, message);
        *shapes[i].t = saved;
    }
    CHECK(outputs_untouched(&p), "backward shape errors wrote an output");

    /* dk over dv's memory; dq over dout's; dv over out's. */
    performer_tensor_t dk_alias = p.dk;
    dk_alias.data = p.dv.data;
    s = performer_softmax_backward(&p.q, &p.k, &p.v, &p.out, &p.lse, &p.dout, &p.dq, &dk_alias, &p.dv, NULL);
    CHECK(s == PERFORMER_ERROR_ALIASING && strstr(performer_last_error(), "dk"), "dk aliases dv: %d \"%s\"", (int)s,
          performer_last_error());
    /* dq over dout's memory. dout gets a buffer of its own, as large as dq's span, so that dout
     * is the only input dq can overlap whatever the heap layout (q's shape can be larger than
     * dout's: pointed at dout's own buffer, dq could also reach the next allocation). */
    size_t dout_bytes = elem_size(p.dout.dtype) * (size_t)count_of(&p.dout);
    size_t span_bytes = elem_size(p.dq.dtype) * (size_t)count_of(&p.dq);
    performer_tensor_t dout_roomy = p.dout;
    dout_roomy.data = calloc(1, span_bytes > dout_bytes ? span_bytes : dout_bytes);
    memcpy(dout_roomy.data, p.dout.data, dout_bytes);
    performer_tensor_t dq_alias = p.dq;
    dq_alias.data = dout_roomy.data;
    s = performer_softmax_backward(&p.q, &p.k, &p.v, &p.out, &p.lse, &dout_roomy, &dq_alias, &p.dk, &p.dv, NULL);
    CHECK(s == PERFORMER_ERROR_ALIASING && strstr(performer_last_error(), "dq overlaps input dout"),
          "dq aliases dout: %d \"%s\"", (int)s, performer_last_error());
    CHECK(memcmp(dout_roomy.data, p.dout.data, dout_bytes) == 0, "dq aliasing dout wrote into dout");
    free(dout_roomy.data);
    CHECK(memcmp(p.out.data, out_copy, sizeof out_copy) == 0 && memcmp(p.lse.data, lse_copy, sizeof lse_copy) == 0,
          "backward errors changed out or lse");
    CHECK(outputs_untouched(&p), "backward alias errors wrote an output");

    performer_softmax_options_t bad;
    performer_softmax_options_init(&bad);
    bad.size = 12;
    s = performer_softmax_backward(&p.q, &p.k, &p.v, &p.out, &p.lse, &p.dout, &p.dq, &p.dk, &p.dv, &bad);
    CHECK(s == PERFORMER_ERROR_UNSUPPORTED_VERSION && strstr(performer_last_error(), "options->size = 12"),
          "backward options size 12: %d \"%s\"", (int)s, performer_last_error());
    problem_free(&p);
}

static void test_options_init(void) {
    performer_softmax_options_t o;
    memset(&o, 0xAB, sizeof o);
    performer_softmax_options_init(&o);
    CHECK(o.size == sizeof o && o.causal == 0 && o.has_scale == 0 && o.kv_lengths == NULL && o.kv_starts == NULL,
          "performer_softmax_options_init defaults");
    performer_softmax_options_init(NULL); /* must simply return */
    CHECK(1, "performer_softmax_options_init(NULL) returned");
}

/* ---------------------------------------------------------------- threads */

enum { THREADS = 8, CB = 2, CH = 4, CN = 96, CL = 80, CD = 32, CM = 24 };

typedef struct {
    performer_tensor_t q, k, v, dout;
    performer_softmax_options_t options;
    float *out, *lse, *dq, *dk, *dv;
    performer_status status;
    char message[512];
    char error_before[512];
} concurrent_job;

static void run_job(concurrent_job *job) {
    performer_tensor_t out = contiguous(job->out, PERFORMER_FLOAT32, CB, CH, CN, CM);
    performer_tensor_t lse = contiguous(job->lse, PERFORMER_FLOAT32, CB, CH, CN, 1);
    performer_tensor_t dq = contiguous(job->dq, PERFORMER_FLOAT32, CB, CH, CN, CD);
    performer_tensor_t dk = contiguous(job->dk, PERFORMER_FLOAT32, CB, CH / 2, CL, CD);
    performer_tensor_t dv = contiguous(job->dv, PERFORMER_FLOAT32, CB, CH / 2, CL, CM);
    job->status = performer_softmax_forward(&job->q, &job->k, &job->v, &out, &lse, &job->options);
    if (job->status == PERFORMER_OK)
        job->status = performer_softmax_backward(&job->q, &job->k, &job->v, &out, &lse, &job->dout, &dq, &dk, &dv,
                                                 &job->options);
    snprintf(job->message, sizeof job->message, "%s", job->status ? performer_last_error() : "");
}

static void *thread_main(void *arg) {
    concurrent_job *job = arg;
    /* The last error is per thread: a fresh thread sees "", whatever main did. */
    snprintf(job->error_before, sizeof job->error_before, "%s", performer_last_error());
    for (int round = 0; round < 3; round++) run_job(job);
    /* Then fail on purpose: this thread's message must not reach main's. */
    performer_softmax_forward(NULL, NULL, NULL, NULL, NULL, NULL);
    return NULL;
}

static float *floats(size_t n) { return calloc(n, sizeof(float)); }

static void job_init(concurrent_job *job, const performer_tensor_t *q, const performer_tensor_t *k,
                     const performer_tensor_t *v, const performer_tensor_t *dout, const int64_t *lengths) {
    memset(job, 0, sizeof *job);
    job->q = *q; job->k = *k; job->v = *v; job->dout = *dout;
    performer_softmax_options_init(&job->options);
    job->options.causal = 1;
    job->options.kv_lengths = lengths;
    job->out = floats(CB * CH * CN * CM); job->lse = floats(CB * CH * CN);
    job->dq = floats(CB * CH * CN * CD); job->dk = floats(CB * CH / 2 * CL * CD); job->dv = floats(CB * CH / 2 * CL * CM);
}

static int same_results(const concurrent_job *a, const concurrent_job *b) {
    return memcmp(a->out, b->out, sizeof(float) * CB * CH * CN * CM) == 0 &&
           memcmp(a->lse, b->lse, sizeof(float) * CB * CH * CN) == 0 &&
           memcmp(a->dq, b->dq, sizeof(float) * CB * CH * CN * CD) == 0 &&
           memcmp(a->dk, b->dk, sizeof(float) * CB * CH / 2 * CL * CD) == 0 &&
           memcmp(a->dv, b->dv, sizeof(float) * CB * CH / 2 * CL * CM) == 0;
}

static void job_free(concurrent_job *job) {
    free(job->out); free(job->lse); free(job->dq); free(job->dk); free(job->dv);
}

static void test_concurrency(void) {
    performer_tensor_t q = contiguous(floats(CB * CH * CN * CD), PERFORMER_FLOAT32, CB, CH, CN, CD);
    performer_tensor_t k = contiguous(floats(CB * CH / 2 * CL * CD), PERFORMER_FLOAT32, CB, CH / 2, CL, CD);
    performer_tensor_t v = contiguous(floats(CB * CH / 2 * CL * CM), PERFORMER_FLOAT32, CB, CH / 2, CL, CM);
    performer_tensor_t dout = contiguous(floats(CB * CH * CN * CM), PERFORMER_FLOAT32, CB, CH, CN, CM);
    fill(&q, 11); fill(&k, 12); fill(&v, 13); fill(&dout, 14);
    const int64_t lengths[CB] = {CL, CL - 17};

    concurrent_job serial;
    job_init(&serial, &q, &k, &v, &dout, lengths);
    run_job(&serial);
    CHECK(serial.status == PERFORMER_OK, "serial job: %s", serial.message);

    /* Main's own last error, set before the threads start; they must not change it. */
    performer_softmax_forward(&q, NULL, &v, NULL, NULL, NULL);
    char main_error[512];
    snprintf(main_error, sizeof main_error, "%s", performer_last_error());
    CHECK(strcmp(main_error, "k is NULL") == 0, "main's error \"%s\"", main_error);

    concurrent_job jobs[THREADS];
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++) job_init(&jobs[t], &q, &k, &v, &dout, lengths);
    for (int t = 0; t < THREADS; t++) CHECK(pthread_create(&threads[t], NULL, thread_main, &jobs[t]) == 0, "pthread_create");
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    for (int t = 0; t < THREADS; t++) {
        CHECK(jobs[t].status == PERFORMER_OK, "thread %d: %s", t, jobs[t].message);
        CHECK(same_results(&jobs[t], &serial), "thread %d: result differs from the serial call", t);
        CHECK(jobs[t].error_before[0] == '\0', "thread %d saw main's last error \"%s\"", t, jobs[t].error_before);
        job_free(&jobs[t]);
    }
    CHECK(strcmp(performer_last_error(), main_error) == 0, "main's last error became \"%s\"", performer_last_error());

    /* And the same with one library thread per call: the result must not depend on the count. */
    performer_set_num_threads(1);
    concurrent_job single;
    job_init(&single, &q, &k, &v, &dout, lengths);
    run_job(&single);
    CHECK(single.status == PERFORMER_OK && same_results(&single, &serial), "1 thread differs from %d threads",
          performer_get_num_threads());
    performer_set_num_threads(0);
    job_free(&single);
    job_free(&serial);
    free(q.data); free(k.data); free(v.data); free(dout.data);
}

/* ---------------------------------------------------------------- executor hook */

/* A host pool for the tests: how it runs the tasks is `mode`; it records every region. */
typedef struct {
    int mode;          /* 0: serially, last index first; 1: on two pthreads; 2: index 0 only (a faulty host) */
    int threads;       /* what num_threads reports */
    int regions;       /* parallel_for calls */
    int max_n;
    int bad_n;         /* n < 2 seen */
} test_host;

typedef struct {
    performer_task_fn task;
    void *task_context;
    int first, n;
} host_share;

static void *host_share_main(void *arg) {
    host_share *share = arg;
    for (int i = share->first; i < share->n; i += 2) share->task(share->task_context, i);
    return NULL;
}

static int host_num_threads(void *context) { return ((test_host *)context)->threads; }

static void host_parallel_for(void *context, int n, performer_task_fn task, void *task_context) {
    test_host *host = context;
    host->regions++;
    if (n > host->max_n) host->max_n = n;
    if (n < 2) host->bad_n++;
    if (host->mode == 0) {
        for (int i = n - 1; i >= 0; i--) task(task_context, i);
    } else if (host->mode == 1) {
        host_share shares[2] = {{task, task_context, 0, n}, {task, task_context, 1, n}};
        pthread_t other;
        int started = pthread_create(&other, NULL, host_share_main, &shares[1]) == 0;
        host_share_main(&shares[0]);
        if (started) pthread_join(other, NULL);
        else host_share_main(&shares[1]);
    } else {
        task(task_context, 0);
    }
}

/* performer_set_executor: the count follows num_threads unless one was set; every way of running
 * the tasks (serial in any order, concurrent, even a host that drops tasks) gives the results of
 * the library's own pool bit for bit; bad structs are refused and change nothing. */
static void test_executor(void) {
    const char *env = getenv("PERFORMER_NUM_THREADS");
    int env_set = env && atoi(env) > 0;
    int initial = performer_get_num_threads();
    performer_tensor_t q = contiguous(floats(CB * CH * CN * CD), PERFORMER_FLOAT32, CB, CH, CN, CD);
    performer_tensor_t k = contiguous(floats(CB * CH / 2 * CL * CD), PERFORMER_FLOAT32, CB, CH / 2, CL, CD);
    performer_tensor_t v = contiguous(floats(CB * CH / 2 * CL * CM), PERFORMER_FLOAT32, CB, CH / 2, CL, CM);
    performer_tensor_t dout = contiguous(floats(CB * CH * CN * CM), PERFORMER_FLOAT32, CB, CH, CN, CM);
    fill(&q, 21); fill(&k, 22); fill(&v, 23); fill(&dout, 24);
    const int64_t lengths[CB] = {CL - 5, CL};
    concurrent_job own;
    job_init(&own, &q, &k, &v, &dout, lengths);
    run_job(&own);
    CHECK(own.status == PERFORMER_OK, "job on the library's pool: %s", own.message);

    for (int mode = 0; mode < 3; mode++) {
        test_host host = {mode, 3, 0, 0, 0};
        performer_executor_t executor = {sizeof executor, &host, host_num_threads, host_parallel_for};
        CHECK(performer_set_executor(&executor) == PERFORMER_OK, "set_executor: %s", performer_last_error());
        if (!env_set) CHECK(performer_get_num_threads() == 3, "threads %d with an executor of 3", performer_get_num_threads());
        concurrent_job job;
        job_init(&job, &q, &k, &v, &dout, lengths);
        run_job(&job);
        CHECK(job.status == PERFORMER_OK && same_results(&job, &own), "mode %d: results differ from the own pool", mode);
        CHECK(env_set || host.regions > 0, "mode %d: the executor was never called", mode);
        CHECK(host.bad_n == 0 && host.max_n <= 3, "mode %d: regions of n < 2 (%d) or n > 3 (max %d)", mode,
              host.bad_n, host.max_n);
        job_free(&job);
    }

    /* A chosen count wins over the executor's; 0 gives the executor its say back. */
    test_host host = {0, 5, 0, 0, 0};
    performer_executor_t executor = {sizeof executor, &host, host_num_threads, host_parallel_for};
    CHECK(performer_set_executor(&executor) == PERFORMER_OK, "set_executor: %s", performer_last_error());
    CHECK(performer_set_num_threads(2) == PERFORMER_OK && performer_get_num_threads() == 2,
          "set_num_threads(2) with an executor: %d", performer_get_num_threads());
    CHECK(performer_set_num_threads(0) == PERFORMER_OK && performer_get_num_threads() == (env_set ? initial : 5),
          "set_num_threads(0) with an executor of 5: %d", performer_get_num_threads());
    host.threads = 100000; /* capped */
    CHECK(env_set || performer_get_num_threads() == 1024, "an executor of 100000 threads gives %d",
          performer_get_num_threads());
    host.threads = -3; /* at least 1 */
    CHECK(env_set || performer_get_num_threads() == 1, "an executor of -3 threads gives %d", performer_get_num_threads());
    host.threads = 5;
    /* executor->num_threads may be NULL: the library's default count. */
    performer_executor_t no_count = {sizeof no_count, &host, NULL, host_parallel_for};
    CHECK(performer_set_executor(&no_count) == PERFORMER_OK && performer_get_num_threads() == initial,
          "an executor without num_threads: %d threads, default %d", performer_get_num_threads(), initial);
    CHECK(performer_set_executor(&executor) == PERFORMER_OK, "set_executor again");

    /* Refused: nothing changes (still 5 threads). */
    performer_executor_t bad = executor;
    bad.size = sizeof bad + 8;
    performer_status s = performer_set_executor(&bad);
    CHECK(s == PERFORMER_ERROR_UNSUPPORTED_VERSION && strstr(performer_last_error(), "executor->size") != NULL,
          "bad size: %d \"%s\"", (int)s, performer_last_error());
    bad = executor;
    bad.parallel_for = NULL;
    s = performer_set_executor(&bad);
    CHECK(s == PERFORMER_ERROR_NULL_POINTER && strstr(performer_last_error(), "executor->parallel_for") != NULL,
          "NULL parallel_for: %d \"%s\"", (int)s, performer_last_error());
    CHECK(env_set || performer_get_num_threads() == 5, "a refused executor changed the count to %d",
          performer_get_num_threads());

    /* NULL: back to the library's own threads and count. */
    CHECK(performer_set_executor(NULL) == PERFORMER_OK, "set_executor(NULL)");
    CHECK(performer_get_num_threads() == initial, "threads %d after removing the executor, default %d",
          performer_get_num_threads(), initial);
    int regions = host.regions;
    concurrent_job after;
    job_init(&after, &q, &k, &v, &dout, lengths);
    run_job(&after);
    CHECK(after.status == PERFORMER_OK && same_results(&after, &own) && host.regions == regions,
          "after set_executor(NULL): results differ or the old executor was called");
    job_free(&after);
    job_free(&own);
    free(q.data); free(k.data); free(v.data); free(dout.data);
}

int main(void) {
    test_versions();
    test_status_strings();
    test_kernel_isa();
    test_threads();
    test_options_init();
    for (int dtype = 0; dtype < 2; dtype++)
        for (int causal = 0; causal < 2; causal++)
            for (int lengths = 0; lengths < 2; lengths++) test_results(dtype, causal, lengths, causal ^ lengths);
    test_key_starts(PERFORMER_FLOAT32);
    test_key_starts(PERFORMER_FLOAT64);
    test_forward_errors();
    test_backward_errors();
    test_concurrency();
    test_executor();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
