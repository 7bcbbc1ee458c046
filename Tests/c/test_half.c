/* test_half.c: float16 and bfloat16 tensors through the C ABI (performer.h, "Half precision").
 * The half path is "widen to float32, run the float32 kernels, round each output once", so a
 * half call must equal, bit for bit, the float32 call on the widened inputs with its results
 * rounded here (to nearest, ties to even). Also: the forward against a float64 reference
 * within one rounding, strided half views, the dtype errors (nothing written), and projections
 * to and from half matrices. The decoders and the merge: test_half_decoders.c.
 * Prints "N passed, M failed". */
#define _GNU_SOURCE
#include "test_support.h"

#include "half_support.h"

/* ---------------------------------------------------------------- tests */

static void test_codes(void) {
    CHECK(PERFORMER_FLOAT16 == 2 && PERFORMER_BFLOAT16 == 3, "appended dtype codes");
    /* The converters above against known bit patterns (they are the test's yardstick). */
    CHECK(f16_from_float(1.0f) == 0x3c00 && f16_from_float(65504.0f) == 0x7bff && f16_from_float(65520.0f) == 0x7c00,
          "f16 encoder");
    CHECK(f16_from_float(1.0f + 0x1p-11f) == 0x3c00 && f16_from_float(1.0f + 3 * 0x1p-11f) == 0x3c02, "f16 ties to even");
    CHECK(f16_from_float(0x1p-24f) == 0x0001 && f16_to_float(0x0001) == 0x1p-24f, "f16 subnormal");
    CHECK(bf16_from_float(1.0f + 0x1p-8f) == 0x3f80 && bf16_from_float(1.0f + 3 * 0x1p-8f) == 0x3f82, "bf16 ties to even");
}

/* Forward and backward in `dtype` equal the float32 calls on the widened inputs, rounded once;
 * the forward is within one rounding of the float64 reference. */
static void test_matches_rounded_float32(int dtype, int causal, int threads) {
    const int64_t B = 2, H = 4, Hk = 2, N = 37, L = 45, D = 16, M = 24;
    performer_set_num_threads(threads);
    performer_tensor_t q = half_new(dtype, B, H, N, D), k = half_new(dtype, B, Hk, L, D), v = half_new(dtype, B, Hk, L, M);
    performer_tensor_t dout = half_new(dtype, B, H, N, M), out = half_new(dtype, B, H, N, M);
    performer_tensor_t dq = half_new(dtype, B, H, N, D), dk = half_new(dtype, B, Hk, L, D), dv = half_new(dtype, B, Hk, L, M);
    performer_tensor_t lse = tensor_new(PERFORMER_FLOAT32, B, H, N, 1);
    half_fill(&q, 1); half_fill(&k, 2); half_fill(&v, 3); half_fill(&dout, 4);
    performer_softmax_options_t options;
    performer_softmax_options_init(&options);
    options.causal = causal;
    int64_t lengths[2] = {45, 30};
    options.kv_lengths = lengths;
    OK(performer_softmax_forward(&q, &k, &v, &out, &lse, &options), "half forward");
    OK(performer_softmax_backward(&q, &k, &v, &out, &lse, &dout, &dq, &dk, &dv, &options), "half backward");

    performer_tensor_t fq = widened(&q), fk = widened(&k), fv = widened(&v), fdout = widened(&dout);
    performer_tensor_t fout = tensor_new(PERFORMER_FLOAT32, B, H, N, M), flse = tensor_new(PERFORMER_FLOAT32, B, H, N, 1);
    OK(performer_softmax_forward(&fq, &fk, &fv, &fout, &flse, &options), "float32 forward");
    CHECK(equals_rounded(&out, &fout), "%s forward: out is the float32 out rounded once", dtype == PERFORMER_FLOAT16 ? "f16" : "bf16");
    CHECK(memcmp(lse.data, flse.data, sizeof(float) * (size_t)count_of(&lse)) == 0, "lse is the float32 lse");
    /* Within one rounding of the float64 reference (float32 sums add ~1e-6). */
    double u = dtype == PERFORMER_FLOAT16 ? 0x1p-11 : 0x1p-8, worst = 0;
    for (int64_t b = 0; b < B; b++) for (int64_t h = 0; h < H; h++) for (int64_t i = 0; i < N; i++) {
        double scores[45], top = -INFINITY, total = 0;
        for (int64_t j = 0; j < L; j++) {
            int seen = j < lengths[b] && (!causal || j <= i + (L - N));
            double s = 0;
            for (int64_t c = 0; c < D; c++) s += at(&fq, b, h, i, c) * at(&fk, b, h / 2, j, c);
            scores[j] = seen ? s / 4.0 : -INFINITY;
            if (scores[j] > top) top = scores[j];
        }
        for (int64_t j = 0; j < L; j++) total += exp(scores[j] - top);
        for (int64_t c = 0; c < M; c++) {
            double o = 0;
            for (int64_t j = 0; j < L; j++) o += exp(scores[j] - top) / total * at(&fv, b, h / 2, j, c);
            double got = half_to_float(dtype, *half_at(&out, b, h, i, c));
            double excess = fabs(got - o) - (u * fabs(o) + 1e-5);
            if (excess > worst) worst = excess;
        }
    }
    CHECK(worst <= 0, "forward within one rounding of the float64 reference (excess %g)", worst);

    performer_tensor_t fdq = tensor_new(PERFORMER_FLOAT32, B, H, N, D), fdk = tensor_new(PERFORMER_FLOAT32, B, Hk, L, D);
    performer_tensor_t fdv = tensor_new(PERFORMER_FLOAT32, B, Hk, L, M), fout_half = widened(&out);
    OK(performer_softmax_backward(&fq, &fk, &fv, &fout_half, &lse, &fdout, &fdq, &fdk, &fdv, &options), "float32 backward");
    CHECK(equals_rounded(&dq, &fdq) && equals_rounded(&dk, &fdk) && equals_rounded(&dv, &fdv),
          "backward: dq, dk, dv are the float32 gradients rounded once");
    performer_tensor_t all[] = {q, k, v, dout, out, dq, dk, dv, lse, fq, fk, fv, fdout, fout, flse, fdq, fdk, fdv, fout_half};
    all_free(all, (int)(sizeof all / sizeof all[0]));
    performer_set_num_threads(0);
}

/* Reversed rows and a zero (broadcast) head stride give the contiguous result's bits. */
static void test_strided_half_views(int dtype) {
    const int64_t N = 20, L = 26, D = 8, M = 12;
    performer_tensor_t q = half_new(dtype, 1, 2, N, D), k = half_new(dtype, 1, 1, L, D), v = half_new(dtype, 1, 1, L, M);
    performer_tensor_t out = half_new(dtype, 1, 2, N, M), out2 = half_new(dtype, 1, 2, N, M);
    half_fill(&q, 5); half_fill(&k, 6); half_fill(&v, 7);
    /* Broadcast q's head 0 to both heads: stride 0 over heads. */
    FOR4(&q) *half_at(&q, i0, 1, i2, i3) = *half_at(&q, i0, 0, i2, i3);
    OK(performer_softmax_forward(&q, &k, &v, &out, NULL, NULL), "contiguous");
    performer_tensor_t qb = q, kr = k;
    qb.strides[1] = 0;
    /* kk holds the keys in reverse; kr walks its rows backwards (stride -D): the same keys. */
    performer_tensor_t kk = half_new(dtype, 1, 1, L, D);
    kr.strides[2] = -D;
    FOR4(&k) *half_at(&kk, i0, i1, L - 1 - i2, i3) = *half_at(&k, i0, i1, i2, i3);
    kr.data = (uint16_t *)kk.data + (L - 1) * D;
    OK(performer_softmax_forward(&qb, &kr, &v, &out2, NULL, NULL), "broadcast q, reversed k");
    CHECK(same_bits(&out, &out2), "strided half views give the contiguous bits");
    performer_tensor_t all[] = {q, k, v, out, out2, kk};
    all_free(all, 6);
}

/* Linear attention (forward with denominators, backward) in `dtype`, states float32: the
 * float32 calls on the widened inputs, the half results rounded once, the float32 results
 * (S_N, z_N, denominators, dS0, dz0) bit for bit. */
static void test_linear_matches_rounded_float32(int dtype, int causal, int threads) {
    const int64_t B = 2, H = 4, Hk = 2, N = 70, L = 70, D = 16, M = 8;
    performer_set_num_threads(threads);
    performer_tensor_t q = half_new(dtype, B, H, N, D), k = half_new(dtype, B, Hk, L, D), v = half_new(dtype, B, Hk, L, M);
    performer_tensor_t dout = half_new(dtype, B, H, N, M), out = half_new(dtype, B, H, N, M);
    performer_tensor_t dq = half_new(dtype, B, H, N, D), dk = half_new(dtype, B, Hk, L, D), dv = half_new(dtype, B, Hk, L, M);
    performer_tensor_t s0 = tensor_new(PERFORMER_FLOAT32, B, H, D, M), z0 = tensor_new(PERFORMER_FLOAT32, B, H, D, 1);
    performer_tensor_t dsn = tensor_new(PERFORMER_FLOAT32, B, H, D, M), dzn = tensor_new(PERFORMER_FLOAT32, B, H, D, 1);
    float_fill(&s0, 11, -0.5); float_fill(&z0, 12, 0.1); float_fill(&dsn, 13, -0.5); float_fill(&dzn, 14, -0.5);
    performer_tensor_t sn = tensor_new(PERFORMER_FLOAT32, B, H, D, M), zn = tensor_new(PERFORMER_FLOAT32, B, H, D, 1);
    performer_tensor_t ds0 = tensor_new(PERFORMER_FLOAT32, B, H, D, M), dz0 = tensor_new(PERFORMER_FLOAT32, B, H, D, 1);
    performer_tensor_t den = tensor_new(PERFORMER_FLOAT32, B, H, N, 1);
    half_fill(&q, 1); half_fill(&k, 2); half_fill(&v, 3); half_fill(&dout, 4);
    performer_linear_options_t options;
    performer_linear_options_init(&options);
    options.causal = causal;
    int64_t lengths[2] = {70, 41}, starts[2] = {0, 9};
    options.kv_lengths = lengths;
    options.kv_starts = starts;
    OK(performer_linear_forward_with_denominators(&q, &k, &v, &out, &s0, &z0, &sn, &zn, &den, &options), "half linear forward");
    OK(performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, &s0, &z0, &dsn, &dzn, &ds0, &dz0, &options),
       "half linear backward");

    performer_tensor_t fq = widened(&q), fk = widened(&k), fv = widened(&v), fdout = widened(&dout);
    performer_tensor_t fout = tensor_new(PERFORMER_FLOAT32, B, H, N, M), fden = tensor_new(PERFORMER_FLOAT32, B, H, N, 1);
    performer_tensor_t fsn = tensor_new(PERFORMER_FLOAT32, B, H, D, M), fzn = tensor_new(PERFORMER_FLOAT32, B, H, D, 1);
    performer_tensor_t fdq = tensor_new(PERFORMER_FLOAT32, B, H, N, D), fdk = tensor_new(PERFORMER_FLOAT32, B, Hk, L, D);
    performer_tensor_t fdv = tensor_new(PERFORMER_FLOAT32, B, Hk, L, M);
    performer_tensor_t fds0 = tensor_new(PERFORMER_FLOAT32, B, H, D, M), fdz0 = tensor_new(PERFORMER_FLOAT32, B, H, D, 1);
    OK(performer_linear_forward_with_denominators(&fq, &fk, &fv, &fout, &s0, &z0, &fsn, &fzn, &fden, &options),
       "float32 linear forward");
    OK(performer_linear_backward(&fq, &fk, &fv, &fdout, &fdq, &fdk, &fdv, &s0, &z0, &dsn, &dzn, &fds0, &fdz0, &options),
       "float32 linear backward");
    const char *name = dtype == PERFORMER_FLOAT16 ? "f16" : "bf16";
    CHECK(equals_rounded(&out, &fout), "%s linear causal=%d: out is the float32 out rounded once", name, causal);
    CHECK(same_floats(&sn, &fsn) && same_floats(&zn, &fzn) && same_floats(&den, &fden),
          "%s linear: S_N, z_N, denominators are the float32 call's", name);
    CHECK(equals_rounded(&dq, &fdq) && equals_rounded(&dk, &fdk) && equals_rounded(&dv, &fdv),
          "%s linear causal=%d: dq, dk, dv are the float32 gradients rounded once", name, causal);
    CHECK(same_floats(&ds0, &fds0) && same_floats(&dz0, &fdz0), "%s linear: dS0, dz0 are the float32 call's", name);
    performer_tensor_t all[] = {q, k, v, dout, out, dq, dk, dv, s0, z0, dsn, dzn, sn, zn, ds0, dz0, den,
                                fq, fk, fv, fdout, fout, fden, fsn, fzn, fdq, fdk, fdv, fds0, fdz0};
    all_free(all, (int)(sizeof all / sizeof all[0]));
    performer_set_num_threads(0);
}

/* FAVOR+ (every feature kind; causal with a float32 state, or not) and its feature map in
 * `dtype`: the float32 calls on the widened inputs, rounded once; float32 results bit for bit. */
static void test_favor_matches_rounded_float32(int dtype, int features, int causal) {
    const int64_t B = 1, H = 2, Hk = 1, N = 40, L = 40, D = 8, m = 8, M = 8;
    const int64_t C = features == PERFORMER_FAVOR_HYPERBOLIC || features == PERFORMER_FAVOR_TRIGONOMETRIC ? 2 * m : m;
    performer_favor_projection_t w = 0;
    OK(performer_favor_projection_create(&w, D, m, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 5), "projection");
    performer_favor_options_t options;
    performer_favor_options_init(&options);
    options.causal = causal;
    options.features = features;
    performer_tensor_t q = half_new(dtype, B, H, N, D), k = half_new(dtype, B, Hk, L, D), v = half_new(dtype, B, Hk, L, M);
    performer_tensor_t dout = half_new(dtype, B, H, N, M), out = half_new(dtype, B, H, N, M);
    performer_tensor_t dq = half_new(dtype, B, H, N, D), dk = half_new(dtype, B, Hk, L, D), dv = half_new(dtype, B, Hk, L, M);
    performer_tensor_t sn = tensor_new(PERFORMER_FLOAT32, B, H, C, M), zn = tensor_new(PERFORMER_FLOAT32, B, H, C, 1);
    performer_tensor_t cn = tensor_new(PERFORMER_FLOAT32, B, H, C, 1), dsn = tensor_new(PERFORMER_FLOAT32, B, H, C, M);
    performer_tensor_t dzn = tensor_new(PERFORMER_FLOAT32, B, H, C, 1);
    float_fill(&dsn, 21, -0.5); float_fill(&dzn, 22, -0.5);
    half_fill(&q, 5); half_fill(&k, 6); half_fill(&v, 7); half_fill(&dout, 8);
    performer_tensor_t *s = causal ? &sn : NULL, *z = causal ? &zn : NULL, *c = causal ? &cn : NULL;
    OK(performer_favor_forward(&q, &k, &v, w, &out, NULL, NULL, NULL, s, z, c, &options), "half favor forward");
    OK(performer_favor_backward(&q, &k, &v, &dout, w, &dq, &dk, &dv, NULL, NULL, NULL, causal ? &dsn : NULL,
                                causal ? &dzn : NULL, NULL, NULL, &options), "half favor backward");
    performer_tensor_t fq = widened(&q), fk = widened(&k), fv = widened(&v), fdout = widened(&dout);
    performer_tensor_t fout = tensor_new(PERFORMER_FLOAT32, B, H, N, M);
    performer_tensor_t fdq = tensor_new(PERFORMER_FLOAT32, B, H, N, D), fdk = tensor_new(PERFORMER_FLOAT32, B, Hk, L, D);
    performer_tensor_t fdv = tensor_new(PERFORMER_FLOAT32, B, Hk, L, M);
    performer_tensor_t fsn = tensor_new(PERFORMER_FLOAT32, B, H, C, M), fzn = tensor_new(PERFORMER_FLOAT32, B, H, C, 1);
    performer_tensor_t fcn = tensor_new(PERFORMER_FLOAT32, B, H, C, 1);
    OK(performer_favor_forward(&fq, &fk, &fv, w, &fout, NULL, NULL, NULL, causal ? &fsn : NULL, causal ? &fzn : NULL,
                               causal ? &fcn : NULL, &options), "float32 favor forward");
    OK(performer_favor_backward(&fq, &fk, &fv, &fdout, w, &fdq, &fdk, &fdv, NULL, NULL, NULL, causal ? &dsn : NULL,
                                causal ? &dzn : NULL, NULL, NULL, &options), "float32 favor backward");
    const char *name = dtype == PERFORMER_FLOAT16 ? "f16" : "bf16";
    CHECK(equals_rounded(&out, &fout), "%s favor features=%d causal=%d: out rounded once", name, features, causal);
    CHECK(equals_rounded(&dq, &fdq) && equals_rounded(&dk, &fdk) && equals_rounded(&dv, &fdv),
          "%s favor features=%d causal=%d: gradients rounded once", name, features, causal);
    CHECK(same_floats(&sn, &fsn) && same_floats(&zn, &fzn) && same_floats(&cn, &fcn),
          "%s favor features=%d: the float32 final state", name, features);
    /* The feature map and its backward. */
    performer_tensor_t phi = half_new(dtype, B, H, N, C), dphi = half_new(dtype, B, H, N, C), dx = half_new(dtype, B, H, N, D);
    performer_tensor_t fphi = tensor_new(PERFORMER_FLOAT32, B, H, N, C), fdx = tensor_new(PERFORMER_FLOAT32, B, H, N, D);
    half_fill(&dphi, 9);
    performer_tensor_t fdphi = widened(&dphi);
    OK(performer_favor_features(&q, w, &phi, &options), "half features");
    OK(performer_favor_features_backward(&q, w, &dphi, &dx, &options), "half features backward");
    OK(performer_favor_features(&fq, w, &fphi, &options), "float32 features");
    OK(performer_favor_features_backward(&fq, w, &fdphi, &fdx, &options), "float32 features backward");
    CHECK(equals_rounded(&phi, &fphi) && equals_rounded(&dx, &fdx), "%s features=%d: phi and dx rounded once", name, features);
    performer_tensor_t all[] = {q, k, v, dout, out, dq, dk, dv, sn, zn, cn, dsn, dzn, fq, fk, fv, fdout, fout, fdq, fdk, fdv,
                                fsn, fzn, fcn, phi, dphi, dx, fphi, fdx, fdphi};
    all_free(all, (int)(sizeof all / sizeof all[0]));
    performer_favor_projection_destroy(w);
}

/* State-only calls (linear and FAVOR+, every feature kind) on half keys and values: the state
 * is the float32 call's (bit for bit), dk and dv its gradients rounded once. */
static void test_state_only_matches_rounded_float32(int dtype) {
    const int64_t B = 1, Hk = 2, Hs = 4, L = 50, D = 8, M = 6;
    performer_tensor_t k = half_new(dtype, B, Hk, L, D), v = half_new(dtype, B, Hk, L, M);
    performer_tensor_t dk = half_new(dtype, B, Hk, L, D), dv = half_new(dtype, B, Hk, L, M);
    half_fill(&k, 31); half_fill(&v, 32);
    performer_tensor_t fk = widened(&k), fv = widened(&v);
    performer_tensor_t fdk = tensor_new(PERFORMER_FLOAT32, B, Hk, L, D), fdv = tensor_new(PERFORMER_FLOAT32, B, Hk, L, M);
    const char *name = dtype == PERFORMER_FLOAT16 ? "f16" : "bf16";
    {   /* linear */
        performer_tensor_t s = tensor_new(PERFORMER_FLOAT32, B, Hs, D, M), z = tensor_new(PERFORMER_FLOAT32, B, Hs, D, 1);
        performer_tensor_t fs = tensor_new(PERFORMER_FLOAT32, B, Hs, D, M), fz = tensor_new(PERFORMER_FLOAT32, B, Hs, D, 1);
        performer_tensor_t ds = tensor_new(PERFORMER_FLOAT32, B, Hs, D, M), dz = tensor_new(PERFORMER_FLOAT32, B, Hs, D, 1);
        float_fill(&ds, 33, -0.5); float_fill(&dz, 34, -0.5);
        OK(performer_linear_state(&k, &v, NULL, NULL, &s, &z, NULL), "half linear state");
        OK(performer_linear_state(&fk, &fv, NULL, NULL, &fs, &fz, NULL), "float32 linear state");
        CHECK(same_floats(&s, &fs) && same_floats(&z, &fz), "%s linear_state: the float32 state", name);
        OK(performer_linear_state_backward(&k, &v, &ds, &dz, &dk, &dv, NULL, NULL, NULL), "half linear state backward");
        OK(performer_linear_state_backward(&fk, &fv, &ds, &dz, &fdk, &fdv, NULL, NULL, NULL), "float32 linear state backward");
        CHECK(equals_rounded(&dk, &fdk) && equals_rounded(&dv, &fdv), "%s linear_state_backward: dk, dv rounded once", name);
        performer_tensor_t all[] = {s, z, fs, fz, ds, dz};
        all_free(all, 6);
    }
    performer_favor_projection_t w = 0;
    OK(performer_favor_projection_create(&w, D, 8, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 7), "projection");
    for (int features = PERFORMER_FAVOR_POSITIVE; features <= PERFORMER_FAVOR_RELU; features++) {
        const int64_t C = features == PERFORMER_FAVOR_HYPERBOLIC || features == PERFORMER_FAVOR_TRIGONOMETRIC ? 16 : 8;
        performer_favor_options_t options;
        performer_favor_options_init(&options);
        options.features = features;
        performer_tensor_t t[6], f[3];
        for (int i = 0; i < 3; i++) {
            t[i] = tensor_new(PERFORMER_FLOAT32, B, Hs, C, i == 0 ? M : 1);
            f[i] = tensor_new(PERFORMER_FLOAT32, B, Hs, C, i == 0 ? M : 1);
        }
        t[3] = tensor_new(PERFORMER_FLOAT32, B, Hs, C, M); t[4] = tensor_new(PERFORMER_FLOAT32, B, Hs, C, 1);
        float_fill(&t[3], 35, -0.5); float_fill(&t[4], 36, -0.5);
        OK(performer_favor_state(&k, &v, w, NULL, NULL, NULL, &t[0], &t[1], &t[2], &options), "half favor state");
        OK(performer_favor_state(&fk, &fv, w, NULL, NULL, NULL, &f[0], &f[1], &f[2], &options), "float32 favor state");
        CHECK(same_floats(&t[0], &f[0]) && same_floats(&t[1], &f[1]) && same_floats(&t[2], &f[2]),
              "%s favor_state features=%d: the float32 state", name, features);
        OK(performer_favor_state_backward(&k, &v, w, &t[3], &t[4], &dk, &dv, NULL, NULL, NULL, NULL, NULL, &options),
           "half favor state backward");
        OK(performer_favor_state_backward(&fk, &fv, w, &t[3], &t[4], &fdk, &fdv, NULL, NULL, NULL, NULL, NULL, &options),
           "float32 favor state backward");
        CHECK(equals_rounded(&dk, &fdk) && equals_rounded(&dv, &fdv), "%s favor_state_backward features=%d: rounded once",
              name, features);
        all_free(t, 5);
        all_free(f, 3);
    }
    performer_favor_projection_destroy(w);
    performer_tensor_t all[] = {k, v, dk, dv, fk, fv, fdk, fdv};
    all_free(all, 8);
}

/* A half call's states must be float32; nothing is written when they are not. */
static void test_state_dtype_errors(int dtype) {
    performer_tensor_t q = half_new(dtype, 1, 1, 4, 8), k = half_new(dtype, 1, 1, 4, 8), v = half_new(dtype, 1, 1, 4, 8);
    performer_tensor_t out = half_new(dtype, 1, 1, 4, 8);
    performer_tensor_t s16 = half_new(dtype, 1, 1, 8, 8), z16 = half_new(dtype, 1, 1, 8, 1);
    performer_tensor_t s = tensor_new(PERFORMER_FLOAT32, 1, 1, 8, 8), z = tensor_new(PERFORMER_FLOAT32, 1, 1, 8, 1);
    performer_tensor_t s64 = tensor_new(PERFORMER_FLOAT64, 1, 1, 8, 8);
    performer_tensor_t den16 = half_new(dtype, 1, 1, 4, 1);
    half_fill(&q, 1); half_fill(&k, 2); half_fill(&v, 3);
    for (int i = 0; i < 32; i++) ((uint16_t *)out.data)[i] = 0x1234;
    expect_status("half S0", performer_linear_forward(&q, &k, &v, &out, &s16, &z16, NULL, NULL, NULL),
                  PERFORMER_ERROR_DTYPE_MISMATCH, "S0.dtype = ");
    expect_status("float64 S_N", performer_linear_forward(&q, &k, &v, &out, NULL, NULL, &s64, &z, NULL),
                  PERFORMER_ERROR_DTYPE_MISMATCH, "must be float32 when q.dtype = ");
    expect_status("half denominators", performer_linear_forward_with_denominators(&q, &k, &v, &out, NULL, NULL, NULL, NULL,
                                                                                   &den16, NULL),
                  PERFORMER_ERROR_DTYPE_MISMATCH, "denominators.dtype = ");
    int untouched = 1;
    for (int i = 0; i < 32; i++) untouched &= ((uint16_t *)out.data)[i] == 0x1234;
    CHECK(untouched, "nothing written on a linear state dtype error");
    performer_favor_projection_t w = 0;
    OK(performer_favor_projection_create(&w, 8, 8, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 5), "projection");
    performer_favor_options_t favor;
    performer_favor_options_init(&favor);
    favor.causal = 1;
    performer_tensor_t c16 = half_new(dtype, 1, 1, 8, 1);
    expect_status("half favor state", performer_favor_forward(&q, &k, &v, w, &out, NULL, NULL, NULL, &s16, &z16, &c16, &favor),
                  PERFORMER_ERROR_DTYPE_MISMATCH, "S_N.dtype = ");
    untouched = 1;
    for (int i = 0; i < 32; i++) untouched &= ((uint16_t *)out.data)[i] == 0x1234;
    CHECK(untouched, "nothing written on a FAVOR+ state dtype error");
    performer_favor_projection_destroy(w);
    performer_tensor_t all[] = {q, k, v, out, s16, z16, s, z, s64, den16, c16};
    all_free(all, (int)(sizeof all / sizeof all[0]));
}

static void test_errors(int dtype) {
    performer_tensor_t q = half_new(dtype, 1, 1, 4, 8), k = half_new(dtype, 1, 1, 5, 8), v = half_new(dtype, 1, 1, 5, 8);
    performer_tensor_t out = half_new(dtype, 1, 1, 4, 8), lse16 = half_new(dtype, 1, 1, 4, 1);
    performer_tensor_t k32 = tensor_new(PERFORMER_FLOAT32, 1, 1, 5, 8), badk = half_new(dtype, 1, 1, 5, 6);
    half_fill(&q, 8); half_fill(&k, 9); half_fill(&v, 10);
    for (int i = 0; i < 32; i++) ((uint16_t *)out.data)[i] = 0x1234;
    expect_status("lse in the half type", performer_softmax_forward(&q, &k, &v, &out, &lse16, NULL),
                  PERFORMER_ERROR_DTYPE_MISMATCH, "lse.dtype = ");
    expect_status("k float32", performer_softmax_forward(&q, &k32, &v, &out, NULL, NULL), PERFORMER_ERROR_DTYPE_MISMATCH,
                  "k.dtype = float32 but q.dtype = ");
    expect_status("head dims", performer_softmax_forward(&q, &badk, &v, &out, NULL, NULL), PERFORMER_ERROR_SHAPE_MISMATCH,
                  "k.shape[3] = 6 but q.shape[3] = 8 (head dim)");
    expect_status("out over q", performer_softmax_forward(&q, &k, &v, &q, NULL, NULL), PERFORMER_ERROR_ALIASING, "overlaps");
    int untouched = 1;
    for (int i = 0; i < 32; i++) untouched &= ((uint16_t *)out.data)[i] == 0x1234;
    CHECK(untouched, "nothing written on error");
    performer_tensor_t odd = q;
    odd.data = (char *)q.data + 1;
    expect_status("misaligned half data", performer_softmax_forward(&odd, &k, &v, &out, NULL, NULL),
                  PERFORMER_ERROR_INVALID_ARGUMENT, "is not aligned to 2 bytes");
    performer_tensor_t s16 = half_new(dtype, 1, 1, 8, 8), z16 = half_new(dtype, 1, 1, 8, 1);
    expect_status("half linear state", performer_linear_state(&k, &v, NULL, NULL, &s16, &z16, NULL),
                  PERFORMER_ERROR_DTYPE_MISMATCH, "S_out.dtype = ");
    free(s16.data); free(z16.data);
    performer_tensor_t unknown = q;
    unknown.dtype = 4;
    expect_status("dtype 4", performer_softmax_forward(&unknown, &k, &v, &out, NULL, NULL), PERFORMER_ERROR_DTYPE_MISMATCH,
                  "2 = float16, 3 = bfloat16");
    performer_tensor_t all[] = {q, k, v, out, lse16, k32, badk};
    all_free(all, 7);
}

/* A projection to and from a half W: get_matrix rounds the float32 W (the one the kernels use)
 * once; create_from_matrix widens a half W exactly. */
static void test_projection_half(int dtype) {
    const int64_t m = 6, D = 8;
    const char *name = dtype == PERFORMER_FLOAT16 ? "f16" : "bf16";
    performer_favor_projection_t p = 0, q = 0;
    OK(performer_favor_projection_create(&p, D, m, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 7), "projection");
    performer_tensor_t f = tensor_new(PERFORMER_FLOAT32, 1, 1, m, D), h = half_new(dtype, 1, 1, m, D);
    OK(performer_favor_projection_get_matrix(p, &f), "float32 W");
    OK(performer_favor_projection_get_matrix(p, &h), "half W");
    CHECK(equals_rounded(&h, &f), "%s get_matrix: the float32 W rounded once", name);
    OK(performer_favor_projection_create_from_matrix(&q, &h), "projection from a half W");
    performer_tensor_t back = tensor_new(PERFORMER_FLOAT32, 1, 1, m, D), wide = widened(&h);
    OK(performer_favor_projection_get_matrix(q, &back), "its float32 W");
    CHECK(same_floats(&back, &wide), "%s create_from_matrix: the half W widened exactly", name);
    performer_tensor_t bad = half_new(dtype, 1, 1, m, D + 1);
    expect_status("half out of another shape", performer_favor_projection_get_matrix(p, &bad), PERFORMER_ERROR_SHAPE_MISMATCH,
                  "out.shape[3] = 9 but the projection's dim = 8");
    performer_favor_projection_destroy(p);
    performer_favor_projection_destroy(q);
    performer_tensor_t all[] = {f, h, back, wide, bad};
    all_free(all, 5);
}

int main(void) {
    test_codes();
    for (int dtype = PERFORMER_FLOAT16; dtype <= PERFORMER_BFLOAT16; dtype++) {
        for (int causal = 0; causal < 2; causal++) {
            test_matches_rounded_float32(dtype, causal, 1);
            test_matches_rounded_float32(dtype, causal, 3);
        }
        test_strided_half_views(dtype);
        test_errors(dtype);
        for (int causal = 0; causal < 2; causal++) {
            test_linear_matches_rounded_float32(dtype, causal, 1);
            test_linear_matches_rounded_float32(dtype, causal, 3);
            for (int features = PERFORMER_FAVOR_POSITIVE; features <= PERFORMER_FAVOR_RELU; features++) {
                test_favor_matches_rounded_float32(dtype, features, causal);
            }
        }
        test_state_dtype_errors(dtype);
        test_state_only_matches_rounded_float32(dtype);
        test_projection_half(dtype);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
