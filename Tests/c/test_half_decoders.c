/* test_half_decoders.c: the linear and FAVOR+ decoders and performer_softmax_merge on float16
 * and bfloat16 tensors (performer.h, "Half precision"). A half decoder is a float32 decoder
 * whose tokens are widened exactly and whose outputs are rounded once; its state is float32.
 * So every half step, prefill and merge must equal, bit for bit, the float32 call on the
 * widened inputs with its outputs rounded here (to nearest, ties to even), and every state
 * must be the float32 decoder's. Also: caller-owned float32 states, get/set_state in float32,
 * and the dtype errors (messages; nothing written, state unchanged). Prints "N passed, M failed". */
#define _GNU_SOURCE
#include "test_support.h"

#include "half_support.h"

/* Positions first ..< first + count of axis 2 of t (a view into t's data). */
static performer_tensor_t positions(const performer_tensor_t *t, int64_t first, int64_t count) {
    performer_tensor_t view = *t;
    size_t size = t->dtype == PERFORMER_FLOAT64 ? 8 : t->dtype == PERFORMER_FLOAT32 ? 4 : 2;
    view.data = (char *)t->data + (size_t)(first * t->strides[2]) * size;
    view.shape[2] = count;
    return view;
}

static const char *dtype_name(int dtype) { return dtype == PERFORMER_FLOAT16 ? "f16" : "bf16"; }

/* Whether the 2-byte elements of h all hold `bits`. */
static int holds(const performer_tensor_t *h, uint16_t bits) {
    FOR4(h) if (*half_at(h, i0, i1, i2, i3) != bits) return 0;
    return 1;
}

static void half_set(performer_tensor_t *h, uint16_t bits) { FOR4(h) *half_at(h, i0, i1, i2, i3) = bits; }

/* ---------------------------------------------------------------- linear decoder */

static void test_linear_decoder(int dtype, int map, int threads) {
    const int64_t B = 2, H = 4, Hk = 2, N = 13, D = 8, M = 12, P = 5;
    const char *name = dtype_name(dtype);
    performer_set_num_threads(threads);
    performer_tensor_t q = half_new(dtype, B, H, N, D), k = half_new(dtype, B, Hk, N, D), v = half_new(dtype, B, Hk, N, M);
    half_fill(&q, 31); half_fill(&k, 32); half_fill(&v, 33);
    performer_tensor_t fq = widened(&q), fk = widened(&k), fv = widened(&v);
    performer_tensor_t out = half_new(dtype, B, H, N, M), fout = tensor_new(PERFORMER_FLOAT32, B, H, N, M);
    performer_tensor_t s0 = tensor_new(PERFORMER_FLOAT32, B, H, D, M), z0 = tensor_new(PERFORMER_FLOAT32, B, H, D, 1);
    float_fill(&s0, 34, -0.5); float_fill(&z0, 35, 0.1);
    performer_linear_decoder_t half = 0, single = 0;
    OK(performer_linear_decoder_create(&half, (performer_dtype)dtype, B, H, Hk, D, M, (performer_feature_map)map, 1e-6),
       "half linear decoder");
    OK(performer_linear_decoder_create(&single, PERFORMER_FLOAT32, B, H, Hk, D, M, (performer_feature_map)map, 1e-6),
       "float32 linear decoder");
    /* A float32 state in, prefill P tokens, then step: the float32 decoder's calls, rounded. */
    OK(performer_linear_decoder_set_state(half, &s0, &z0), "half set_state (float32 state)");
    OK(performer_linear_decoder_set_state(single, &s0, &z0), "float32 set_state");
    performer_tensor_t hq = positions(&q, 0, P), hk = positions(&k, 0, P), hv = positions(&v, 0, P);
    performer_tensor_t ho = positions(&out, 0, P);
    performer_tensor_t sq = positions(&fq, 0, P), sk = positions(&fk, 0, P), sv = positions(&fv, 0, P);
    performer_tensor_t so = positions(&fout, 0, P);
    OK(performer_linear_decoder_prefill(half, &hq, &hk, &hv, &ho), "half prefill");
    OK(performer_linear_decoder_prefill(single, &sq, &sk, &sv, &so), "float32 prefill");
    for (int64_t t = P; t < N; t++) {
        hq = positions(&q, t, 1); hk = positions(&k, t, 1); hv = positions(&v, t, 1); ho = positions(&out, t, 1);
        sq = positions(&fq, t, 1); sk = positions(&fk, t, 1); sv = positions(&fv, t, 1); so = positions(&fout, t, 1);
        OK(performer_linear_decoder_step(half, &hq, &hk, &hv, &ho), "half step");
        OK(performer_linear_decoder_step(single, &sq, &sk, &sv, &so), "float32 step");
    }
    CHECK(equals_rounded(&out, &fout), "%s linear decoder map=%d threads=%d: prefill + steps = float32 rounded once",
          name, map, threads);
    performer_tensor_t s = tensor_new(PERFORMER_FLOAT32, B, H, D, M), z = tensor_new(PERFORMER_FLOAT32, B, H, D, 1);
    performer_tensor_t fs = tensor_new(PERFORMER_FLOAT32, B, H, D, M), fz = tensor_new(PERFORMER_FLOAT32, B, H, D, 1);
    OK(performer_linear_decoder_get_state(half, &s, &z), "half get_state (float32 state)");
    OK(performer_linear_decoder_get_state(single, &fs, &fz), "float32 get_state");
    CHECK(same_floats(&s, &fs) && same_floats(&z, &fz), "%s linear decoder: the float32 decoder's state", name);

    /* A caller-owned float32 state: the same outputs and final state as the decoder's own. */
    performer_linear_decoder_t caller = 0;
    OK(performer_linear_decoder_create(&caller, (performer_dtype)dtype, B, H, Hk, D, M, (performer_feature_map)map, 1e-6),
       "caller-state decoder");
    performer_tensor_t own = half_new(dtype, B, H, N, M), mine = half_new(dtype, B, H, N, M);
    performer_tensor_t cs = tensor_new(PERFORMER_FLOAT32, B, H, D, M), cz = tensor_new(PERFORMER_FLOAT32, B, H, D, 1);
    OK(performer_linear_decoder_reset(half), "reset");
    for (int64_t t = 0; t < N; t++) {
        hq = positions(&q, t, 1); hk = positions(&k, t, 1); hv = positions(&v, t, 1);
        ho = positions(&own, t, 1);
        performer_tensor_t mo = positions(&mine, t, 1);
        OK(performer_linear_decoder_step(half, &hq, &hk, &hv, &ho), "own-state step");
        OK(performer_linear_decoder_step_with_state(caller, &hq, &hk, &hv, &mo, &cs, &cz), "caller-state step");
    }
    OK(performer_linear_decoder_get_state(half, &s, &z), "get_state");
    CHECK(same_bits(&own, &mine) && same_floats(&cs, &s) && same_floats(&cz, &z),
          "%s linear decoder: a caller-owned state gives the own state's bits", name);
    OK(performer_linear_decoder_get_state(caller, &fs, &fz), "caller decoder's own state");
    int zero = 1;
    FOR4(&fs) zero &= at(&fs, i0, i1, i2, i3) == 0;
    CHECK(zero, "%s linear decoder: step_with_state leaves the decoder's own state alone", name);
    performer_linear_decoder_destroy(half);
    performer_linear_decoder_destroy(single);
    performer_linear_decoder_destroy(caller);
    performer_tensor_t all[] = {q, k, v, fq, fk, fv, out, fout, s0, z0, s, z, fs, fz, own, mine, cs, cz};
    all_free(all, (int)(sizeof all / sizeof all[0]));
    performer_set_num_threads(0);
}

/* The state of a half decoder is float32; its tokens are its dtype. Nothing written on error. */
static void test_linear_decoder_dtype_errors(int dtype) {
    const int64_t D = 8, M = 8;
    performer_linear_decoder_t decoder = 0;
    OK(performer_linear_decoder_create(&decoder, (performer_dtype)dtype, 1, 1, 1, D, M, PERFORMER_FEATURE_ELU_PLUS_ONE, 1e-6),
       "create");
    performer_tensor_t q = half_new(dtype, 1, 1, 1, D), k = half_new(dtype, 1, 1, 1, D), v = half_new(dtype, 1, 1, 1, M);
    performer_tensor_t out = half_new(dtype, 1, 1, 1, M), q32 = tensor_new(PERFORMER_FLOAT32, 1, 1, 1, D);
    half_fill(&q, 1); half_fill(&k, 2); half_fill(&v, 3);
    performer_tensor_t s16 = half_new(dtype, 1, 1, D, M), z16 = half_new(dtype, 1, 1, D, 1);
    performer_tensor_t s = tensor_new(PERFORMER_FLOAT32, 1, 1, D, M), z = tensor_new(PERFORMER_FLOAT32, 1, 1, D, 1);
    performer_tensor_t s64 = tensor_new(PERFORMER_FLOAT64, 1, 1, D, M), z64 = tensor_new(PERFORMER_FLOAT64, 1, 1, D, 1);
    OK(performer_linear_decoder_step(decoder, &q, &k, &v, &out), "a first step");
    performer_tensor_t before_s = tensor_new(PERFORMER_FLOAT32, 1, 1, D, M), before_z = tensor_new(PERFORMER_FLOAT32, 1, 1, D, 1);
    OK(performer_linear_decoder_get_state(decoder, &before_s, &before_z), "state before");
    half_set(&out, 0x1234);
    half_set(&s16, 0x1234);
    char want[160];
    snprintf(want, sizeof want, "S.dtype = %s but the decoder's state dtype is float32 (a %s decoder keeps its state in float32)",
             dtype == PERFORMER_FLOAT16 ? "float16" : "bfloat16", dtype == PERFORMER_FLOAT16 ? "float16" : "bfloat16");
    expect_status("half get_state", performer_linear_decoder_get_state(decoder, &s16, &z16), PERFORMER_ERROR_DTYPE_MISMATCH, want);
    expect_status("float64 set_state", performer_linear_decoder_set_state(decoder, &s64, &z64), PERFORMER_ERROR_DTYPE_MISMATCH,
                  "S.dtype = float64 but the decoder's state dtype is float32");
    expect_status("half caller state", performer_linear_decoder_step_with_state(decoder, &q, &k, &v, &out, &s, &z16),
                  PERFORMER_ERROR_DTYPE_MISMATCH, "z.dtype = ");
    snprintf(want, sizeof want, "q.dtype = float32 but the decoder's dtype is %s", dtype == PERFORMER_FLOAT16 ? "float16" : "bfloat16");
    expect_status("float32 token", performer_linear_decoder_step(decoder, &q32, &k, &v, &out), PERFORMER_ERROR_DTYPE_MISMATCH, want);
    expect_status("float32 prefill token", performer_linear_decoder_prefill(decoder, &q32, &k, &v, &out),
                  PERFORMER_ERROR_DTYPE_MISMATCH, want);
    expect_status("out over q", performer_linear_decoder_step(decoder, &q, &k, &v, &q), PERFORMER_ERROR_ALIASING, "overlaps");
    CHECK(holds(&out, 0x1234) && holds(&s16, 0x1234), "%s linear decoder: nothing written on a dtype error", dtype_name(dtype));
    OK(performer_linear_decoder_get_state(decoder, &s, &z), "state after");
    CHECK(same_floats(&s, &before_s) && same_floats(&z, &before_z), "%s linear decoder: state unchanged on error",
          dtype_name(dtype));
    performer_linear_decoder_destroy(decoder);
    performer_tensor_t all[] = {q, k, v, out, q32, s16, z16, s, z, s64, z64, before_s, before_z};
    all_free(all, (int)(sizeof all / sizeof all[0]));
}

/* ---------------------------------------------------------------- FAVOR+ decoder */

static void test_favor_decoder(int dtype, int features, int threads) {
    const int64_t B = 2, H = 3, N = 11, D = 8, m = 8, M = 6;
    const int64_t C = features == PERFORMER_FAVOR_HYPERBOLIC || features == PERFORMER_FAVOR_TRIGONOMETRIC ? 2 * m : m;
    const char *name = dtype_name(dtype);
    performer_set_num_threads(threads);
    performer_favor_projection_t w = 0;
    OK(performer_favor_projection_create(&w, D, m, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 9), "projection");
    performer_favor_options_t options;
    performer_favor_options_init(&options);
    options.features = features;
    if (features == PERFORMER_FAVOR_TRIGONOMETRIC) options.eps = 1e-3;
    performer_favor_decoder_t half = 0, single = 0;
    OK(performer_favor_decoder_create(&half, w, (performer_dtype)dtype, B, H, M, &options), "half FAVOR+ decoder");
    OK(performer_favor_decoder_create(&single, w, PERFORMER_FLOAT32, B, H, M, &options), "float32 FAVOR+ decoder");
    performer_tensor_t q = half_new(dtype, B, H, N, D), k = half_new(dtype, B, H, N, D), v = half_new(dtype, B, H, N, M);
    half_fill(&q, 41); half_fill(&k, 42); half_fill(&v, 43);
    performer_tensor_t fq = widened(&q), fk = widened(&k), fv = widened(&v);
    performer_tensor_t out = half_new(dtype, B, H, N, M), fout = tensor_new(PERFORMER_FLOAT32, B, H, N, M);
    for (int64_t t = 0; t < N; t++) {
        performer_tensor_t hq = positions(&q, t, 1), hk = positions(&k, t, 1), hv = positions(&v, t, 1);
        performer_tensor_t ho = positions(&out, t, 1);
        performer_tensor_t sq = positions(&fq, t, 1), sk = positions(&fk, t, 1), sv = positions(&fv, t, 1);
        performer_tensor_t so = positions(&fout, t, 1);
        OK(performer_favor_decoder_step(half, &hq, &hk, &hv, &ho), "half step");
        OK(performer_favor_decoder_step(single, &sq, &sk, &sv, &so), "float32 step");
    }
    CHECK(equals_rounded(&out, &fout), "%s FAVOR+ decoder features=%d threads=%d: steps = float32 rounded once", name,
          features, threads);
    performer_tensor_t s = tensor_new(PERFORMER_FLOAT32, B, H, C, M), z = tensor_new(PERFORMER_FLOAT32, B, H, C, 1);
    performer_tensor_t c = tensor_new(PERFORMER_FLOAT32, B, H, C, 1);
    performer_tensor_t fs = tensor_new(PERFORMER_FLOAT32, B, H, C, M), fz = tensor_new(PERFORMER_FLOAT32, B, H, C, 1);
    performer_tensor_t fc = tensor_new(PERFORMER_FLOAT32, B, H, C, 1);
    OK(performer_favor_decoder_get_state(half, &s, &z, &c), "half get_state (float32 triple)");
    OK(performer_favor_decoder_get_state(single, &fs, &fz, &fc), "float32 get_state");
    CHECK(same_floats(&s, &fs) && same_floats(&z, &fz) && same_floats(&c, &fc),
          "%s FAVOR+ decoder features=%d: the float32 decoder's state", name, features);
    /* set_state takes the float32 triple back: a fresh half decoder continues identically. */
    performer_favor_decoder_t resumed = 0;
    OK(performer_favor_decoder_create(&resumed, w, (performer_dtype)dtype, B, H, M, &options), "resumed decoder");
    OK(performer_favor_decoder_set_state(resumed, &s, &z, &c), "half set_state (float32 triple)");
    performer_tensor_t o1 = half_new(dtype, B, H, 1, M), o2 = half_new(dtype, B, H, 1, M);
    performer_tensor_t hq = positions(&q, 3, 1), hk = positions(&k, 4, 1), hv = positions(&v, 5, 1);
    OK(performer_favor_decoder_step(half, &hq, &hk, &hv, &o1), "step after get_state");
    OK(performer_favor_decoder_step(resumed, &hq, &hk, &hv, &o2), "step after set_state");
    CHECK(same_bits(&o1, &o2), "%s FAVOR+ decoder features=%d: get_state/set_state round trip", name, features);

    /* Dtype errors: float32 state, the decoder's dtype for tokens; nothing written. */
    performer_tensor_t s16 = half_new(dtype, B, H, C, M), z16 = half_new(dtype, B, H, C, 1), c16 = half_new(dtype, B, H, C, 1);
    half_set(&s16, 0x1234);
    half_set(&o1, 0x1234);
    expect_status("half FAVOR+ get_state", performer_favor_decoder_get_state(half, &s16, &z16, &c16),
                  PERFORMER_ERROR_DTYPE_MISMATCH, "S.dtype = ");
    expect_status("half FAVOR+ set_state", performer_favor_decoder_set_state(half, &s, &z, &c16),
                  PERFORMER_ERROR_DTYPE_MISMATCH, "but the decoder's state dtype is float32");
    performer_tensor_t f32q = positions(&fq, 0, 1);
    expect_status("float32 FAVOR+ token", performer_favor_decoder_step(half, &f32q, &hk, &hv, &o1),
                  PERFORMER_ERROR_DTYPE_MISMATCH, "q.dtype = float32 but the decoder's dtype is ");
    CHECK(holds(&s16, 0x1234) && holds(&o1, 0x1234), "%s FAVOR+ decoder: nothing written on a dtype error", name);
    OK(performer_favor_decoder_get_state(half, &fs, &fz, &fc), "state after the errors");
    /* resumed had the same history as half, without the refused calls. */
    OK(performer_favor_decoder_get_state(resumed, &s, &z, &c), "resumed state");
    CHECK(same_floats(&s, &fs) && same_floats(&z, &fz) && same_floats(&c, &fc),
          "%s FAVOR+ decoder: state unchanged by the refused calls", name);
    performer_favor_decoder_destroy(half);
    performer_favor_decoder_destroy(single);
    performer_favor_decoder_destroy(resumed);
    performer_favor_projection_destroy(w);
    performer_tensor_t all[] = {q, k, v, fq, fk, fv, out, fout, s, z, c, fs, fz, fc, o1, o2, s16, z16, c16};
    all_free(all, (int)(sizeof all / sizeof all[0]));
    performer_set_num_threads(0);
}

/* ---------------------------------------------------------------- softmax merge */

static void test_merge(int dtype) {
    const int64_t B = 2, H = 3, N = 7, M = 10;
    const char *name = dtype_name(dtype);
    performer_tensor_t a = half_new(dtype, B, H, N, M), b = half_new(dtype, B, H, N, M), out = half_new(dtype, B, H, N, M);
    half_fill(&a, 51); half_fill(&b, 52);
    performer_tensor_t la = tensor_new(PERFORMER_FLOAT32, B, H, N, 1), lb = tensor_new(PERFORMER_FLOAT32, B, H, N, 1);
    performer_tensor_t lse = tensor_new(PERFORMER_FLOAT32, B, H, N, 1), flse = tensor_new(PERFORMER_FLOAT32, B, H, N, 1);
    float_fill(&la, 53, -1); float_fill(&lb, 54, -1.5);
    set_at(&la, 0, 0, 2, 0, -INFINITY);                          /* A saw no key in this row */
    set_at(&la, 1, 2, 3, 0, -INFINITY); set_at(&lb, 1, 2, 3, 0, -INFINITY);  /* neither */
    performer_tensor_t fa = widened(&a), fb = widened(&b), fout = tensor_new(PERFORMER_FLOAT32, B, H, N, M);
    OK(performer_softmax_merge(&a, &la, &b, &lb, &out, &lse), "half merge");
    OK(performer_softmax_merge(&fa, &la, &fb, &lb, &fout, &flse), "float32 merge");
    CHECK(equals_rounded(&out, &fout), "%s merge: out is the float32 merge rounded once", name);
    CHECK(same_floats(&lse, &flse), "%s merge: lse (float32) is the float32 merge's", name);
    CHECK(*half_at(&out, 1, 2, 3, 0) == 0 && at(&lse, 1, 2, 3, 0) == -INFINITY, "%s merge: a row without keys is 0", name);
    /* In place over A. */
    OK(performer_softmax_merge(&a, &la, &b, &lb, &a, &la), "half merge in place");
    CHECK(same_bits(&a, &out) && same_floats(&la, &lse), "%s merge in place", name);

    /* The lse is float32, out_b and out out_a's dtype; nothing written on error. */
    performer_tensor_t l16 = half_new(dtype, B, H, N, 1);
    half_set(&out, 0x1234);
    char want[160];
    snprintf(want, sizeof want, "lse_b.dtype = %s but must be float32 when out_a.dtype = %s",
             dtype == PERFORMER_FLOAT16 ? "float16" : "bfloat16", dtype == PERFORMER_FLOAT16 ? "float16" : "bfloat16");
    expect_status("half lse", performer_softmax_merge(&a, &lse, &b, &l16, &out, &flse), PERFORMER_ERROR_DTYPE_MISMATCH, want);
    expect_status("float32 out_b", performer_softmax_merge(&a, &lse, &fb, &lb, &out, &flse), PERFORMER_ERROR_DTYPE_MISMATCH,
                  "out_b.dtype = float32 but out_a.dtype = ");
    set_at(&lb, 0, 0, 0, 0, NAN);
    expect_status("NaN lse", performer_softmax_merge(&a, &lse, &b, &lb, &out, &flse), PERFORMER_ERROR_INVALID_ARGUMENT,
                  "lse_b[0, 0, 0] = nan");
    CHECK(holds(&out, 0x1234), "%s merge: nothing written on error", name);
    performer_tensor_t all[] = {a, b, out, la, lb, lse, flse, fa, fb, fout, l16};
    all_free(all, (int)(sizeof all / sizeof all[0]));
}

int main(void) {
    for (int dtype = PERFORMER_FLOAT16; dtype <= PERFORMER_BFLOAT16; dtype++) {
        for (int map = PERFORMER_FEATURE_ELU_PLUS_ONE; map <= PERFORMER_FEATURE_IDENTITY; map++) {
            test_linear_decoder(dtype, map, 1);
        }
        test_linear_decoder(dtype, PERFORMER_FEATURE_ELU_PLUS_ONE, 3);
        test_linear_decoder_dtype_errors(dtype);
        for (int features = PERFORMER_FAVOR_POSITIVE; features <= PERFORMER_FAVOR_RELU; features++) {
            test_favor_decoder(dtype, features, 1);
        }
        test_favor_decoder(dtype, PERFORMER_FAVOR_POSITIVE, 3);
        test_merge(dtype);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
