/* test_favor.c: libperformer's FAVOR+ C ABI (performer.h section 7).
 *   - projections: the same W for a seed across handles, iid W equal to an independent C
 *     implementation of docs/FAVOR.md's generator, orthogonal rows within a block, fixed
 *     norms, the first rows independent of m, redraw (changes W, advances draw, reproducible),
 *     from-matrix round trips (float32/float64, strided), getters, concurrent redraw + reads;
 *   - feature maps of every kind against a float64 reference written here (strided views,
 *     custom scale and relu offset), and their backward against central finite differences;
 *   - the decoder: steps against a float64 causal reference (phi(q_i).phi(k_j) summed over
 *     j <= i), the scaled state against the mathematical one, get/set/reset, pieces, a redraw
 *     after creation does not change it, norm-30 inputs stay finite and exact;
 *   - attention (performer_favor_forward / _backward): every kind, causal and not, key lengths,
 *     GQA, strided views, against a float64 reference with materialized features; the
 *     backward against central finite differences (float64) and the float64 call (float32);
 *     causal pieces with the carried state (forward, final state in place, backward through
 *     dS0 -> dS_N) = one call; the forward's state continued by decoder steps; norm-30 inputs;
 *   - state only (performer_favor_state / _backward): = the causal forward's final state (GQA,
 *     Hs = H and Hk, key lengths), in-place pieces, backward = the causal backward's state part;
 *   - a bidirectional call against a memory state (favor_state of earlier keys) = one call over
 *     the memory's keys and the call's (reference, key lengths, L = 0, final state, in place),
 *     its gradients = the one call's (dS0/dz0 through favor_state_backward), dS0 by central
 *     differences;
 *   - bad input everywhere (m = 0, D mismatch, unknown kind/norms/features, NULL handles,
 *     options size, bad states, aliasing); outputs and state untouched on error.
 * Prints "N passed, M failed" last and exits nonzero on any failure. */
#define _GNU_SOURCE
#include "test_support.h"

#include <pthread.h>

/* ---------------------------------------------------------------- tensors */

/* A B x H x N x X view of a freshly allocated B x N x H x X buffer (heads and positions swapped). */
static performer_tensor_t tensor_transposed(int dtype, int64_t b, int64_t h, int64_t n, int64_t x) {
    performer_tensor_t t = tensor_new(dtype, b, n, h, x);
    t.shape[1] = h; t.shape[2] = n;
    t.strides[1] = x; t.strides[2] = h * x; t.strides[0] = n * h * x;
    return t;
}

static void fill(performer_tensor_t *t, uint64_t seed, double amplitude) {
    int64_t i = 0;
    FOR4(t) set_at(t, i0, i1, i2, i3, amplitude * value_at(seed, i++));
}

/* max |t - ref| / max(max |ref|, 1e-300); NaN or Inf in t gives INFINITY. */
static double rel_error(const performer_tensor_t *t, const double *ref) { return max_relative_error(t, ref, 1e-300); }

/* ---------------------------------------------------------------- docs/FAVOR.md's generator, written again */

static const uint64_t GAMMA = 0x9E3779B97F4A7C15ull;

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t stream_key(uint64_t seed, uint64_t draw, uint64_t purpose) {
    return mix64(mix64(mix64(seed + GAMMA) ^ (draw * 0xD1B54A32D192ED03ull)) ^ (purpose * 0xABC98388FB8FAC03ull));
}

static double normal_at(uint64_t key, uint64_t i) {
    uint64_t p = i / 2;
    double u1 = (double)((mix64(key + (2 * p + 1) * GAMMA) >> 11) + 1) * 0x1p-53;
    double u2 = (double)(mix64(key + (2 * p + 2) * GAMMA) >> 11) * 0x1p-53;
    double r = sqrt(-2.0 * log(u1)), theta = (2.0 * M_PI) * u2;
    return i % 2 == 0 ? r * cos(theta) : r * sin(theta);
}

/* ---------------------------------------------------------------- projections */

/* W of a projection in float64, m x D row-major (caller frees). */
static double *matrix_of(performer_favor_projection_t p, int64_t m, int64_t d) {
    performer_tensor_t w = tensor_new(PERFORMER_FLOAT64, 1, 1, m, d);
    OK(performer_favor_projection_get_matrix(p, &w), "get_matrix");
    return (double *)w.data;
}

static performer_favor_projection_t make(int64_t d, int64_t m, int kind, int norms, uint64_t seed) {
    performer_favor_projection_t p = NULL;
    performer_status s = performer_favor_projection_create(&p, d, m, (performer_favor_projection_kind)kind,
                                                           (performer_favor_norms)norms, seed);
    CHECK(s == PERFORMER_OK && p != NULL, "create(d=%lld, m=%lld, kind=%d, norms=%d): %s", (long long)d, (long long)m,
          kind, norms, performer_last_error());
    return p;
}

static void projections(void) {
    enum { d = 5, m = 12 };
    for (int kind = 0; kind < 2; kind++) {
        for (int norms = 0; norms < 2; norms++) {
            performer_favor_projection_t a = make(d, m, kind, norms, 42), b = make(d, m, kind, norms, 42);
            performer_favor_projection_t c = make(d, m, kind, norms, 43), wide = make(d, m + 7, kind, norms, 42);
            if (!a || !b || !c || !wide) return;
            double *wa = matrix_of(a, m, d), *wb = matrix_of(b, m, d), *wc = matrix_of(c, m, d);
            double *ww = matrix_of(wide, m + 7, d);
            CHECK(memcmp(wa, wb, sizeof(double) * m * d) == 0, "kind %d norms %d: same seed, different W", kind, norms);
            CHECK(memcmp(wa, wc, sizeof(double) * m * d) != 0, "kind %d norms %d: seeds 42 and 43 give the same W", kind, norms);
            CHECK(memcmp(wa, ww, sizeof(double) * m * d) == 0, "kind %d norms %d: the first rows depend on m", kind, norms);

            int64_t gd = 0, gm = 0;
            uint64_t seed = 0, draw = 9;
            performer_favor_projection_kind gk = (performer_favor_projection_kind)7;
            performer_favor_norms gn = (performer_favor_norms)7;
            OK(performer_favor_projection_get_dim(a, &gd), "get_dim");
            OK(performer_favor_projection_get_num_features(a, &gm), "get_num_features");
            OK(performer_favor_projection_get_seed(a, &seed), "get_seed");
            OK(performer_favor_projection_get_draw(a, &draw), "get_draw");
            OK(performer_favor_projection_get_kind(a, &gk), "get_kind");
            OK(performer_favor_projection_get_norms(a, &gn), "get_norms");
            CHECK(gd == d && gm == m && seed == 42 && draw == 0 && (int)gk == kind && (int)gn == norms,
                  "getters: dim %lld m %lld seed %llu draw %llu kind %d norms %d", (long long)gd, (long long)gm,
                  (unsigned long long)seed, (unsigned long long)draw, (int)gk, (int)gn);

            /* Row norms and orthogonality. */
            for (int i = 0; i < m; i++) {
                double norm = 0;
                for (int j = 0; j < d; j++) norm += wa[i * d + j] * wa[i * d + j];
                if (norms == PERFORMER_NORMS_FIXED)
                    CHECK(fabs(sqrt(norm) - sqrt((double)d)) < 1e-12, "fixed norms: row %d has norm %g", i, sqrt(norm));
                if (kind != PERFORMER_PROJECTION_ORTHOGONAL) continue;
                for (int i2 = i + 1; i2 < m && i2 / d == i / d; i2++) {
                    double dot = 0, norm2 = 0;
                    for (int j = 0; j < d; j++) { dot += wa[i * d + j] * wa[i2 * d + j]; norm2 += wa[i2 * d + j] * wa[i2 * d + j]; }
                    CHECK(fabs(dot) <= 1e-12 * sqrt(norm * norm2), "orthogonal: rows %d, %d have cosine %g", i, i2,
                          dot / sqrt(norm * norm2));
                }
            }
            /* iid: the entries are the generator's normals, row-major (fixed: rescaled rows). */
            if (kind == PERFORMER_PROJECTION_IID) {
                uint64_t key = stream_key(42, 0, 0);
                double worst = 0;
                for (int i = 0; i < m; i++) {
                    double row[d], norm = 0;
                    for (int j = 0; j < d; j++) { row[j] = normal_at(key, (uint64_t)(i * d + j)); norm += row[j] * row[j]; }
                    double factor = norms == PERFORMER_NORMS_FIXED ? sqrt((double)d) / sqrt(norm) : 1.0;
                    for (int j = 0; j < d; j++) {
                        double e = fabs(wa[i * d + j] - row[j] * factor) / fabs(row[j] * factor);
                        if (!(e <= worst)) worst = e;
                    }
                }
                CHECK(worst < 1e-13, "iid norms %d: W differs from the generator by %g relative", norms, worst);
            }

            /* redraw: a new W, draw 1; the same on another handle; a fresh handle is still draw 0. */
            OK(performer_favor_projection_redraw(a), "redraw");
            OK(performer_favor_projection_get_draw(a, &draw), "get_draw");
            CHECK(draw == 1, "draw after redraw = %llu", (unsigned long long)draw);
            double *wr = matrix_of(a, m, d);
            CHECK(memcmp(wa, wr, sizeof(double) * m * d) != 0, "redraw did not change W");
            OK(performer_favor_projection_redraw(b), "redraw b");
            double *wrb = matrix_of(b, m, d);
            CHECK(memcmp(wr, wrb, sizeof(double) * m * d) == 0, "two handles redrawn once differ");
            if (kind == PERFORMER_PROJECTION_IID && norms == PERFORMER_NORMS_CHI) {
                uint64_t key = stream_key(42, 1, 0);
                CHECK(fabs(wr[3] - normal_at(key, 3)) <= 1e-13 * fabs(wr[3]), "redrawn iid W is not draw 1 of the generator");
            }
            free(wa); free(wb); free(wc); free(ww); free(wr); free(wrb);
            performer_favor_projection_destroy(a); performer_favor_projection_destroy(b);
            performer_favor_projection_destroy(c); performer_favor_projection_destroy(wide);
        }
    }
    /* The defaults are the zero codes. */
    CHECK(PERFORMER_PROJECTION_ORTHOGONAL == 0 && PERFORMER_NORMS_CHI == 0 && PERFORMER_FAVOR_POSITIVE == 0,
          "default enum codes are not 0");
}

static void from_matrix(void) {
    enum { d = 3, m = 4 };
    for (int dtype = 0; dtype < 2; dtype++) {
        /* W given through a transposed (column-major) view. */
        performer_tensor_t storage = tensor_new(dtype, 1, 1, d, m), w = storage;
        w.shape[2] = m; w.shape[3] = d; w.strides[2] = 1; w.strides[3] = m;
        fill(&w, 7, 2.0);
        double *given = doubles_of(&w);
        performer_favor_projection_t p = NULL;
        OK(performer_favor_projection_create_from_matrix(&p, &w), "create_from_matrix");
        if (p == NULL) return;
        double *back = matrix_of(p, m, d);
        CHECK(memcmp(given, back, sizeof(double) * m * d) == 0, "from_matrix (%s) round trip is not exact",
              dtype ? "float64" : "float32");
        /* float32 copy of W: rounded once. */
        performer_tensor_t w32 = tensor_new(PERFORMER_FLOAT32, 1, 1, m, d);
        OK(performer_favor_projection_get_matrix(p, &w32), "get_matrix float32");
        int same = 1;
        for (int i = 0; i < m * d; i++) same &= ((float *)w32.data)[i] == (float)given[i];
        CHECK(same, "get_matrix float32 is not W rounded to float32");

        int64_t gd = 0, gm = 0;
        uint64_t draw = 5, seed = 77;
        performer_favor_projection_kind kind = PERFORMER_PROJECTION_IID;
        performer_favor_norms norms = PERFORMER_NORMS_FIXED;
        OK(performer_favor_projection_get_dim(p, &gd), "get_dim");
        OK(performer_favor_projection_get_num_features(p, &gm), "get_num_features");
        OK(performer_favor_projection_get_draw(p, &draw), "get_draw");
        CHECK(gd == d && gm == m && draw == 0, "caller W: dim %lld m %lld draw %llu", (long long)gd, (long long)gm,
              (unsigned long long)draw);
        expect_status("redraw of a caller W", performer_favor_projection_redraw(p), PERFORMER_ERROR_INVALID_ARGUMENT, "caller");
        expect_status("seed of a caller W", performer_favor_projection_get_seed(p, &seed), PERFORMER_ERROR_INVALID_ARGUMENT, "seed");
        expect_status("kind of a caller W", performer_favor_projection_get_kind(p, &kind), PERFORMER_ERROR_INVALID_ARGUMENT, "kind");
        expect_status("norms of a caller W", performer_favor_projection_get_norms(p, &norms), PERFORMER_ERROR_INVALID_ARGUMENT, "norms");
        CHECK(seed == 77 && kind == PERFORMER_PROJECTION_IID && norms == PERFORMER_NORMS_FIXED, "a failed getter wrote its value");
        double *after = matrix_of(p, m, d);
        CHECK(memcmp(given, after, sizeof(double) * m * d) == 0, "a failed redraw changed W");
        free(given); free(back); free(after); free(w32.data); free(storage.data);
        performer_favor_projection_destroy(p);
    }
}

static void projection_errors(void) {
    performer_favor_projection_t p = (performer_favor_projection_t)0x1;
    expect_status("create NULL", performer_favor_projection_create(NULL, 4, 4, 0, 0, 0), PERFORMER_ERROR_NULL_POINTER, "projection");
    expect_status("m = 0", performer_favor_projection_create(&p, 4, 0, 0, 0, 0), PERFORMER_ERROR_INVALID_ARGUMENT, "num_features");
    expect_status("dim = 0", performer_favor_projection_create(&p, 0, 4, 0, 0, 0), PERFORMER_ERROR_INVALID_ARGUMENT, "dim");
    expect_status("dim < 0", performer_favor_projection_create(&p, -3, 4, 1, 0, 0), PERFORMER_ERROR_INVALID_ARGUMENT, "dim");
    expect_status("kind 2", performer_favor_projection_create(&p, 4, 4, (performer_favor_projection_kind)2, 0, 0),
                 PERFORMER_ERROR_INVALID_ARGUMENT, "kind");
    expect_status("kind -1", performer_favor_projection_create(&p, 4, 4, (performer_favor_projection_kind)-1, 0, 0),
                 PERFORMER_ERROR_INVALID_ARGUMENT, "kind");
    expect_status("norms 2", performer_favor_projection_create(&p, 4, 4, 0, (performer_favor_norms)2, 0),
                 PERFORMER_ERROR_INVALID_ARGUMENT, "norms");
    expect_status("huge m x D", performer_favor_projection_create(&p, 1 << 21, 1 << 21, 1, 0, 0),
                 PERFORMER_ERROR_SIZE_OVERFLOW, "too large");
    expect_status("huge orthogonal blocks", performer_favor_projection_create(&p, 1 << 21, 1, 0, 0, 0),
                 PERFORMER_ERROR_SIZE_OVERFLOW, "too large");
    CHECK(p == (performer_favor_projection_t)0x1, "a failed create wrote *projection");

    performer_tensor_t w = tensor_new(PERFORMER_FLOAT64, 2, 1, 3, 4);
    fill(&w, 3, 1.0);
    expect_status("from_matrix NULL w", performer_favor_projection_create_from_matrix(&p, NULL), PERFORMER_ERROR_NULL_POINTER, "W");
    expect_status("from_matrix NULL out", performer_favor_projection_create_from_matrix(NULL, &w), PERFORMER_ERROR_NULL_POINTER, "projection");
    expect_status("from_matrix 2 x 1 x m x D", performer_favor_projection_create_from_matrix(&p, &w),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "W.shape[0]");
    w.shape[0] = 1; w.shape[2] = 0;
    expect_status("from_matrix m = 0", performer_favor_projection_create_from_matrix(&p, &w),
                 PERFORMER_ERROR_INVALID_ARGUMENT, "num_features");
    w.shape[2] = 3;
    ((double *)w.data)[5] = NAN;
    expect_status("from_matrix NaN", performer_favor_projection_create_from_matrix(&p, &w), PERFORMER_ERROR_INVALID_ARGUMENT,
                 "W[1][1]");
    ((double *)w.data)[5] = 0;
    w.dtype = 5;
    expect_status("from_matrix dtype", performer_favor_projection_create_from_matrix(&p, &w), PERFORMER_ERROR_DTYPE_MISMATCH, "dtype");
    w.dtype = PERFORMER_FLOAT64;
    CHECK(p == (performer_favor_projection_t)0x1, "a failed create_from_matrix wrote *projection");

    performer_favor_projection_t q = make(4, 3, 0, 0, 1);
    performer_tensor_t out = tensor_new(PERFORMER_FLOAT64, 1, 1, 3, 5);
    fill_value(&out, SENTINEL);
    expect_status("get_matrix D mismatch", performer_favor_projection_get_matrix(q, &out), PERFORMER_ERROR_SHAPE_MISMATCH, "dim");
    out.shape[3] = 4; out.strides[2] = 0;
    expect_status("get_matrix self-overlapping out", performer_favor_projection_get_matrix(q, &out), PERFORMER_ERROR_ALIASING, "out");
    out.strides[2] = 4;
    expect_status("get_matrix NULL projection", performer_favor_projection_get_matrix(NULL, &out), PERFORMER_ERROR_NULL_POINTER,
                 "projection");
    expect_status("get_matrix NULL out", performer_favor_projection_get_matrix(q, NULL), PERFORMER_ERROR_NULL_POINTER, "out");
    CHECK(is_value(&out, SENTINEL), "a failed get_matrix wrote out");
    int64_t value = 0;
    expect_status("get_dim NULL", performer_favor_projection_get_dim(NULL, &value), PERFORMER_ERROR_NULL_POINTER, "projection");
    expect_status("get_dim NULL value", performer_favor_projection_get_dim(q, NULL), PERFORMER_ERROR_NULL_POINTER, "value");
    expect_status("redraw NULL", performer_favor_projection_redraw(NULL), PERFORMER_ERROR_NULL_POINTER, "projection");
    int64_t count = 0;
    OK(performer_favor_feature_count(q, PERFORMER_FAVOR_HYPERBOLIC, &count), "feature_count");
    CHECK(count == 6, "feature_count hyperbolic, m = 3: %lld", (long long)count);
    OK(performer_favor_feature_count(q, PERFORMER_FAVOR_RELU, &count), "feature_count");
    CHECK(count == 3, "feature_count relu, m = 3: %lld", (long long)count);
    expect_status("feature_count kind 4", performer_favor_feature_count(q, (performer_favor_feature_kind)4, &count),
                 PERFORMER_ERROR_INVALID_ARGUMENT, "feature kind");
    performer_favor_projection_destroy(NULL);
    performer_favor_projection_destroy(q);
    free(w.data); free(out.data);
}

/* Concurrent redraws and reads of one handle: every read W is one whole draw. */
enum { CD = 4, CM = 6, DRAWS = 40 };
static performer_favor_projection_t shared;
static double draws[DRAWS + 1][CM * CD];
static int torn;

static void *reader_main(void *arg) {
    (void)arg;
    for (int round = 0; round < 400; round++) {
        performer_tensor_t w = tensor_new(PERFORMER_FLOAT64, 1, 1, CM, CD);
        if (performer_favor_projection_get_matrix(shared, &w) != PERFORMER_OK) torn = 1;
        int found = 0;
        for (int i = 0; i <= DRAWS && !found; i++) found = memcmp(draws[i], w.data, sizeof draws[i]) == 0;
        if (!found) torn = 1;
        free(w.data);
    }
    return NULL;
}

static void concurrency(void) {
    performer_favor_projection_t p = make(CD, CM, 0, 0, 5);
    if (!p) return;
    for (int i = 0; i <= DRAWS; i++) {
        double *w = matrix_of(p, CM, CD);
        memcpy(draws[i], w, sizeof draws[i]);
        free(w);
        if (i < DRAWS) performer_favor_projection_redraw(p);
    }
    performer_favor_projection_destroy(p);
    shared = make(CD, CM, 0, 0, 5);
    pthread_t readers[2];
    for (int i = 0; i < 2; i++) pthread_create(&readers[i], NULL, reader_main, NULL);
    int ok = 1;
    for (int i = 0; i < DRAWS; i++) ok &= performer_favor_projection_redraw(shared) == PERFORMER_OK;
    for (int i = 0; i < 2; i++) pthread_join(readers[i], NULL);
    CHECK(ok && !torn, "concurrent redraw + get_matrix: a read W was no whole draw (or a call failed)");
    performer_favor_projection_destroy(shared);
}

/* ---------------------------------------------------------------- feature maps */

/* phi(x) of one row in float64 (ALGORITHMS.md section 3): w is m x d, sigma = scale^(1/2). */
static void reference_features(int kind, const double *w, int64_t m, int64_t d, const double *x, double sigma,
                               double kappa, double *phi) {
    double n = 0;
    for (int64_t j = 0; j < d; j++) n += (x[j] * sigma) * (x[j] * sigma);
    for (int64_t f = 0; f < m; f++) {
        double u = 0;
        for (int64_t j = 0; j < d; j++) u += w[f * d + j] * x[j] * sigma;
        switch (kind) {
        case PERFORMER_FAVOR_POSITIVE: phi[f] = exp(u - n / 2) / sqrt((double)m); break;
        case PERFORMER_FAVOR_HYPERBOLIC:
            phi[f] = exp(u - n / 2) / sqrt(2.0 * (double)m);
            phi[m + f] = exp(-u - n / 2) / sqrt(2.0 * (double)m);
            break;
        case PERFORMER_FAVOR_TRIGONOMETRIC:
            phi[f] = exp(n / 2) / sqrt((double)m) * sin(u);
            phi[m + f] = exp(n / 2) / sqrt((double)m) * cos(u);
            break;
        default: phi[f] = (u > 0 ? u : 0) + kappa; break;
        }
    }
}

static int64_t count_for(int kind, int64_t m) {
    return kind == PERFORMER_FAVOR_HYPERBOLIC || kind == PERFORMER_FAVOR_TRIGONOMETRIC ? 2 * m : m;
}

static void features(int dtype, int kind, int custom) {
    enum { b = 2, h = 3, n = 5, d = 4, m = 6 };
    char what[80];
    snprintf(what, sizeof what, "features %s kind %d%s", dtype ? "float64" : "float32", kind, custom ? " custom" : "");
    performer_favor_projection_t p = make(d, m, custom ? 1 : 0, 0, 11);
    if (!p) return;
    double *w = matrix_of(p, m, d);
    int64_t c = count_for(kind, m);
    performer_tensor_t x = tensor_transposed(dtype, b, h, n, d), out = tensor_transposed(dtype, b, h, n, c);
    fill(&x, 21 + (uint64_t)kind, 1.5);
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    o.features = kind;
    double scale = 1 / sqrt((double)d), kappa = 1e-3;
    if (custom) { o.has_scale = 1; o.scale = scale = 0.7; o.relu_offset = kappa = 0.25; }
    OK(performer_favor_features(&x, p, &out, &o), what);

    double *xs = doubles_of(&x), *ref = malloc(sizeof(double) * b * h * n * c);
    for (int64_t r = 0; r < b * h * n; r++) reference_features(kind, w, m, d, xs + r * d, sqrt(scale), kappa, ref + r * c);
    double e = rel_error(&out, ref), tol = dtype == PERFORMER_FLOAT32 ? 1e-5 : 1e-13;
    CHECK(e <= tol, "%s: relative error %g > %g", what, e, tol);

    /* Backward (float64): central differences of L = sum g * phi(x). */
    if (dtype == PERFORMER_FLOAT64) {
        performer_tensor_t g = tensor_new(dtype, b, h, n, c), dx = tensor_new(dtype, b, h, n, d);
        fill(&g, 31, 1.0);
        OK(performer_favor_features_backward(&x, p, &g, &dx, &o), "features_backward");
        double *gs = doubles_of(&g), *numeric = malloc(sizeof(double) * b * h * n * d), phi[2 * m];
        for (int64_t r = 0; r < b * h * n; r++) {
            for (int64_t j = 0; j < d; j++) {
                double row[d], loss[2];
                for (int sign = 0; sign < 2; sign++) {
                    memcpy(row, xs + r * d, sizeof row);
                    row[j] += sign ? -1e-6 : 1e-6;
                    reference_features(kind, w, m, d, row, sqrt(scale), kappa, phi);
                    loss[sign] = 0;
                    for (int64_t f = 0; f < c; f++) loss[sign] += gs[r * c + f] * phi[f];
                }
                numeric[r * d + j] = (loss[0] - loss[1]) / 2e-6;
            }
        }
        double ge = rel_error(&dx, numeric);
        CHECK(ge <= 1e-7, "%s backward: relative error %g vs finite differences", what, ge);
        free(gs); free(numeric); free(g.data); free(dx.data);
    }
    free(xs); free(ref); free(w); free(x.data); free(out.data);
    performer_favor_projection_destroy(p);
}

static void feature_errors(void) {
    enum { d = 4, m = 3 };
    const int f = PERFORMER_FLOAT32;
    performer_favor_projection_t p = make(d, m, 0, 0, 1);
    performer_tensor_t x = tensor_new(f, 1, 2, 3, d), out = tensor_new(f, 1, 2, 3, m), x5 = tensor_new(f, 1, 2, 3, 5);
    performer_tensor_t out64 = tensor_new(PERFORMER_FLOAT64, 1, 2, 3, m), out2m = tensor_new(f, 1, 2, 3, 2 * m);
    fill(&x, 1, 1.0); fill(&x5, 2, 1.0);
    fill_value(&out, SENTINEL); fill_value(&out2m, SENTINEL);
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    CHECK(o.size == sizeof o && o.causal == 0 && o.features == PERFORMER_FAVOR_POSITIVE && o.has_scale == 0 &&
          o.eps == 0 && o.relu_offset == 1e-3 && o.kv_lengths == NULL && o.kv_starts == NULL, "favor options_init defaults");
    performer_favor_options_init(NULL);

    expect_status("x NULL", performer_favor_features(NULL, p, &out, &o), PERFORMER_ERROR_NULL_POINTER, "x is NULL");
    expect_status("projection NULL", performer_favor_features(&x, NULL, &out, &o), PERFORMER_ERROR_NULL_POINTER, "projection");
    expect_status("out NULL", performer_favor_features(&x, p, NULL, &o), PERFORMER_ERROR_NULL_POINTER, "out is NULL");
    expect_status("D mismatch", performer_favor_features(&x5, p, &out, &o), PERFORMER_ERROR_SHAPE_MISMATCH, "projection.dim");
    expect_status("out C", performer_favor_features(&x, p, &out2m, &o), PERFORMER_ERROR_SHAPE_MISMATCH, "features");
    expect_status("out dtype", performer_favor_features(&x, p, &out64, &o), PERFORMER_ERROR_DTYPE_MISMATCH, "out.dtype");
    o.features = 4;
    expect_status("features 4", performer_favor_features(&x, p, &out, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "options->features");
    o.features = -1;
    expect_status("features -1", performer_favor_features(&x, p, &out, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "options->features");
    o.features = 0; o.has_scale = 1; o.scale = NAN;
    expect_status("scale NaN", performer_favor_features(&x, p, &out, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "scale");
    o.scale = -1;
    expect_status("scale < 0", performer_favor_features(&x, p, &out, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "scale");
    o.has_scale = 0; o.relu_offset = -1; o.features = PERFORMER_FAVOR_RELU;
    expect_status("relu_offset < 0", performer_favor_features(&x, p, &out, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "relu_offset");
    performer_favor_options_init(&o);
    o.size = 8;
    expect_status("options size", performer_favor_features(&x, p, &out, &o), PERFORMER_ERROR_UNSUPPORTED_VERSION, "options->size");
    performer_favor_options_init(&o);
    /* out written over x: the 1 x 2 x 3 x 3 view of x's own memory. */
    performer_tensor_t alias = out;
    alias.data = x.data;
    expect_status("out aliases x", performer_favor_features(&x, p, &alias, &o), PERFORMER_ERROR_ALIASING, "overlaps");
    CHECK(is_value(&out, SENTINEL) && is_value(&out2m, SENTINEL), "a failed features call wrote its output");
    performer_tensor_t dx = tensor_new(f, 1, 2, 3, d);
    fill_value(&dx, SENTINEL);
    expect_status("backward dfeatures C", performer_favor_features_backward(&x, p, &out2m, &dx, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "dfeatures");
    expect_status("backward dx NULL", performer_favor_features_backward(&x, p, &out, NULL, &o), PERFORMER_ERROR_NULL_POINTER, "dx");
    CHECK(is_value(&dx, SENTINEL), "a failed features backward wrote dx");
    /* NULL options: the defaults. */
    OK(performer_favor_features(&x, p, &out, NULL), "features, NULL options");
    free(x.data); free(out.data); free(x5.data); free(out64.data); free(out2m.data); free(dx.data);
    performer_favor_projection_destroy(p);
}

/* ---------------------------------------------------------------- the decoder */

enum { DB = 2, DH = 3, DD = 4, DM = 3, DMF = 5, T = 7 };

/* The float64 causal reference: out[i] = sum_{j<=i} (phi(q_i).phi(k_j)) v_j / (sum ... + eps), per
 * head, from the given W. q, k: DB x DH x T x DD, v DB x DH x T x DM (row-major doubles). */
static void decoder_reference(int kind, const double *w, double scale, double kappa, double eps, const double *q,
                              const double *k, const double *v, double *out, double *s_final, double *z_final) {
    int64_t c = count_for(kind, DMF);
    double pq[2 * DMF], pk[2 * DMF];
    for (int head = 0; head < DB * DH; head++) {
        double s[2 * DMF][DM], z[2 * DMF];
        memset(s, 0, sizeof s); memset(z, 0, sizeof z);
        for (int i = 0; i < T; i++) {
            const int64_t row = head * T + i;
            reference_features(kind, w, DMF, DD, k + row * DD, sqrt(scale), kappa, pk);
            for (int f = 0; f < c; f++) {
                z[f] += pk[f];
                for (int a = 0; a < DM; a++) s[f][a] += pk[f] * v[row * DM + a];
            }
            reference_features(kind, w, DMF, DD, q + row * DD, sqrt(scale), kappa, pq);
            double den = eps;
            for (int f = 0; f < c; f++) den += pq[f] * z[f];
            for (int a = 0; a < DM; a++) {
                double num = 0;
                for (int f = 0; f < c; f++) num += pq[f] * s[f][a];
                out[row * DM + a] = den == 0 ? 0 : num / den;
            }
        }
        for (int f = 0; f < c; f++) {
            z_final[head * c + f] = z[f];
            for (int a = 0; a < DM; a++) s_final[(head * c + f) * DM + a] = s[f][a];
        }
    }
}

/* Steps tokens [from, to) through dec, writing out's positions. */
static int run_steps(performer_favor_decoder_t dec, const performer_tensor_t *q, const performer_tensor_t *k,
                     const performer_tensor_t *v, performer_tensor_t *out, int from, int to) {
    int ok = 1;
    for (int i = from; i < to; i++) {
        performer_tensor_t qi = position(q, i), ki = position(k, i), vi = position(v, i), oi = position(out, i);
        ok &= performer_favor_decoder_step(dec, &qi, &ki, &vi, &oi) == PERFORMER_OK;
    }
    return ok;
}

static void decoder_lifecycle(int dtype, int kind) {
    char what[64];
    snprintf(what, sizeof what, "decoder %s kind %d", dtype ? "float64" : "float32", kind);
    const int64_t c = count_for(kind, DMF);
    const double eps = kind == PERFORMER_FAVOR_TRIGONOMETRIC ? 0.0 : 1e-3, tol = dtype ? 1e-11 : 2e-5;
    performer_favor_projection_t p = make(DD, DMF, 0, 0, 99);
    if (!p) return;
    double *w = matrix_of(p, DMF, DD);
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    o.features = kind;
    o.eps = eps;
    performer_favor_decoder_t dec = NULL;
    OK(performer_favor_decoder_create(&dec, p, (performer_dtype)dtype, DB, DH, DM, &o), what);
    if (!dec) return;
    /* Redrawing the projection afterwards does not change the decoder (it copied W). */
    OK(performer_favor_projection_redraw(p), "redraw after decoder create");

    performer_tensor_t q = tensor_transposed(dtype, DB, DH, T, DD), k = tensor_new(dtype, DB, DH, T, DD);
    performer_tensor_t v = tensor_new(dtype, DB, DH, T, DM), out = tensor_new(dtype, DB, DH, T, DM);
    performer_tensor_t out2 = tensor_new(dtype, DB, DH, T, DM);
    fill(&q, 41, 0.8); fill(&k, 42, 0.8); fill(&v, 43, 1.0);
    double *qs = doubles_of(&q), *ks = doubles_of(&k), *vs = doubles_of(&v);
    double *ref = malloc(sizeof(double) * DB * DH * T * DM), *ref_s = malloc(sizeof(double) * DB * DH * c * DM);
    double *ref_z = malloc(sizeof(double) * DB * DH * c);
    decoder_reference(kind, w, 1 / sqrt((double)DD), 1e-3, eps, qs, ks, vs, ref, ref_s, ref_z);

    /* A new state: S~ = 0, z~ = 0, c = -inf (0 for relu). */
    performer_tensor_t st = tensor_new(dtype, DB, DH, c, DM), zt = tensor_new(dtype, DB, DH, c, 1);
    performer_tensor_t ct = tensor_new(dtype, DB, DH, c, 1);
    OK(performer_favor_decoder_get_state(dec, &st, &zt, &ct), "get_state");
    CHECK(is_value(&st, 0) && is_value(&zt, 0) && is_value(&ct, kind == PERFORMER_FAVOR_RELU ? 0.0 : -INFINITY),
          "%s: a new decoder's state is not empty", what);

    CHECK(run_steps(dec, &q, &k, &v, &out, 0, T), "%s steps: %s", what, performer_last_error());
    double e = rel_error(&out, ref);
    CHECK(e <= tol, "%s: steps vs float64 causal reference: relative error %g", what, e);

    /* The scaled state is the mathematical one: S = diag(e^c) S~, z = e^c z~. */
    OK(performer_favor_decoder_get_state(dec, &st, &zt, &ct), "get_state");
    performer_tensor_t sm = tensor_new(PERFORMER_FLOAT64, DB, DH, c, DM), zm = tensor_new(PERFORMER_FLOAT64, DB, DH, c, 1);
    FOR4(&st) set_at(&sm, i0, i1, i2, i3, exp(at(&ct, i0, i1, i2, 0)) * at(&st, i0, i1, i2, i3));
    FOR4(&zt) set_at(&zm, i0, i1, i2, i3, exp(at(&ct, i0, i1, i2, 0)) * at(&zt, i0, i1, i2, i3));
    double es = rel_error(&sm, ref_s), ez = rel_error(&zm, ref_z);
    CHECK(es <= tol && ez <= tol, "%s: state vs reference: S %g, z %g", what, es, ez);

    /* Pieces: 3 steps, carry the scaled triple to another decoder, 4 more = one run. */
    performer_favor_decoder_t first = NULL, second = NULL, math = NULL;
    OK(performer_favor_decoder_create(&first, p, (performer_dtype)dtype, DB, DH, DM, &o), "create first");
    OK(performer_favor_decoder_create(&second, p, (performer_dtype)dtype, DB, DH, DM, &o), "create second");
    OK(performer_favor_decoder_create(&math, p, (performer_dtype)dtype, DB, DH, DM, &o), "create math");
    /* Those use the redrawn W: give them the original through a caller-matrix projection. */
    performer_favor_decoder_destroy(first); performer_favor_decoder_destroy(second); performer_favor_decoder_destroy(math);
    performer_tensor_t wt = tensor_new(PERFORMER_FLOAT64, 1, 1, DMF, DD);
    memcpy(wt.data, w, sizeof(double) * DMF * DD);
    performer_favor_projection_t original = NULL;
    OK(performer_favor_projection_create_from_matrix(&original, &wt), "from_matrix(original W)");
    OK(performer_favor_decoder_create(&first, original, (performer_dtype)dtype, DB, DH, DM, &o), "create first");
    OK(performer_favor_decoder_create(&second, original, (performer_dtype)dtype, DB, DH, DM, &o), "create second");
    OK(performer_favor_decoder_create(&math, original, (performer_dtype)dtype, DB, DH, DM, &o), "create math");
    CHECK(run_steps(first, &q, &k, &v, &out2, 0, 3), "first piece");
    OK(performer_favor_decoder_get_state(first, &st, &zt, &ct), "get_state first");
    OK(performer_favor_decoder_set_state(second, &st, &zt, &ct), "set_state second");
    CHECK(run_steps(second, &q, &k, &v, &out2, 3, T), "second piece");
    double *one = doubles_of(&out);
    double ep = rel_error(&out2, one);
    CHECK(ep <= tol, "%s: pieces with the carried state vs one run: %g", what, ep);
    /* The mathematical state (S, z, 0) is a valid state too. */
    if (kind != PERFORMER_FAVOR_TRIGONOMETRIC || dtype == PERFORMER_FLOAT64) {
        FOR4(&st) set_at(&st, i0, i1, i2, i3, exp(at(&ct, i0, i1, i2, 0)) * at(&st, i0, i1, i2, i3));
        FOR4(&zt) set_at(&zt, i0, i1, i2, i3, exp(at(&ct, i0, i1, i2, 0)) * at(&zt, i0, i1, i2, i3));
        fill_value(&ct, 0);
        OK(performer_favor_decoder_set_state(math, &st, &zt, &ct), "set_state (S, z, 0)");
        fill_value(&out2, SENTINEL);
        CHECK(run_steps(math, &q, &k, &v, &out2, 3, T), "math piece");
        performer_tensor_t tail = out2, tail_one = out;
        tail.shape[2] = tail_one.shape[2] = T - 3;
        tail.data = (char *)out2.data + 3 * DM * elem_size(dtype);
        tail_one.data = (char *)out.data + 3 * DM * elem_size(dtype);
        double *tail_ref = doubles_of(&tail_one);
        double em = rel_error(&tail, tail_ref);
        CHECK(em <= tol, "%s: from the mathematical state (S, z, 0): %g", what, em);
        free(tail_ref);
    }

    /* reset: the first output again. */
    OK(performer_favor_decoder_reset(dec), "reset");
    performer_tensor_t o0 = tensor_new(dtype, DB, DH, 1, DM);
    CHECK(run_steps(dec, &q, &k, &v, &o0, 0, 1), "step after reset");
    performer_tensor_t first_out = position(&out, 0);
    double *fo = doubles_of(&first_out);
    CHECK(rel_error(&o0, fo) == 0, "%s: step after reset differs from the first step", what);

    free(fo); free(one); free(o0.data); free(wt.data);
    performer_favor_decoder_destroy(first); performer_favor_decoder_destroy(second); performer_favor_decoder_destroy(math);
    performer_favor_projection_destroy(original);
    free(qs); free(ks); free(vs); free(ref); free(ref_s); free(ref_z); free(w);
    free(q.data); free(k.data); free(v.data); free(out.data); free(out2.data); free(st.data); free(zt.data); free(ct.data);
    free(sm.data); free(zm.data);
    performer_favor_decoder_destroy(dec);
    performer_favor_projection_destroy(p);
}

/* Scales every row of a 1 x 1 x n x d tensor to Euclidean norm `norm`. */
static void set_row_norms(performer_tensor_t *t, double norm) {
    for (int64_t i = 0; i < t->shape[2]; i++) {
        double sum = 0;
        for (int64_t j = 0; j < t->shape[3]; j++) sum += at(t, 0, 0, i, j) * at(t, 0, 0, i, j);
        for (int64_t j = 0; j < t->shape[3]; j++) set_at(t, 0, 0, i, j, at(t, 0, 0, i, j) * norm / sqrt(sum));
    }
}

/* Inputs of norm 30: the decoder's outputs are finite and equal the mathematical function,
 * evaluated here in float64 in log space (positive features, eps = 0: the 1/m factors cancel). */
static void decoder_large_norms(int dtype, int kind) {
    char what[64];
    snprintf(what, sizeof what, "norm-30 decoder %s kind %d", dtype ? "float64" : "float32", kind);
    performer_favor_projection_t p = make(DD, DMF, 0, 0, 3);
    if (!p) return;
    double *w = matrix_of(p, DMF, DD);
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    o.features = kind;
    performer_favor_decoder_t dec = NULL;
    OK(performer_favor_decoder_create(&dec, p, (performer_dtype)dtype, 1, 1, DM, &o), what);
    if (!dec) return;
    performer_tensor_t q = tensor_new(dtype, 1, 1, T, DD), k = tensor_new(dtype, 1, 1, T, DD);
    performer_tensor_t v = tensor_new(dtype, 1, 1, T, DM), out = tensor_new(dtype, 1, 1, T, DM);
    fill(&q, 61, 1.0); fill(&k, 62, 1.0); fill(&v, 63, 1.0);
    set_row_norms(&q, 30);
    set_row_norms(&k, 30);
    CHECK(run_steps(dec, &q, &k, &v, &out, 0, T), "%s steps: %s", what, performer_last_error());
    double *qs = doubles_of(&q), *ks = doubles_of(&k), *vs = doubles_of(&v), ref[T * DM];
    const double sigma = sqrt(1 / sqrt((double)DD));
    const int64_t c = count_for(kind, DMF);
    double aq[2 * DMF], ak[T][2 * DMF];
    for (int i = 0; i < T; i++) {
        for (int which = 0; which < 2; which++) {
            const double *x = (which ? ks : qs) + i * DD;
            double *a = which ? ak[i] : aq, n = 0;
            for (int j = 0; j < DD; j++) n += (x[j] * sigma) * (x[j] * sigma);
            for (int f = 0; f < DMF; f++) {
                double u = 0;
                for (int j = 0; j < DD; j++) u += w[f * DD + j] * x[j] * sigma;
                a[f] = u - n / 2;
                if (kind == PERFORMER_FAVOR_HYPERBOLIC) a[DMF + f] = -u - n / 2;
            }
        }
        double top = -INFINITY;
        for (int j = 0; j <= i; j++) for (int f = 0; f < c; f++) if (aq[f] + ak[j][f] > top) top = aq[f] + ak[j][f];
        double den = 0, num[DM] = {0};
        for (int j = 0; j <= i; j++) {
            double weight = 0;
            for (int f = 0; f < c; f++) weight += exp(aq[f] + ak[j][f] - top);
            den += weight;
            for (int a = 0; a < DM; a++) num[a] += weight * vs[j * DM + a];
        }
        for (int a = 0; a < DM; a++) ref[i * DM + a] = num[a] / den;
    }
    double e = rel_error(&out, ref), tol = dtype ? 1e-12 : 1e-5;
    CHECK(e <= tol, "%s: relative error %g vs the float64 log-space evaluation", what, e);
    free(qs); free(ks); free(vs); free(w); free(q.data); free(k.data); free(v.data); free(out.data);
    performer_favor_decoder_destroy(dec);
    performer_favor_projection_destroy(p);
}

static void decoder_errors(void) {
    const int f = PERFORMER_FLOAT32;
    performer_favor_projection_t p = make(DD, DMF, 0, 0, 8);
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    performer_favor_decoder_t dec = (performer_favor_decoder_t)0x1;
    expect_status("create NULL decoder", performer_favor_decoder_create(NULL, p, f, 1, 1, 1, &o), PERFORMER_ERROR_NULL_POINTER, "decoder");
    expect_status("create NULL projection", performer_favor_decoder_create(&dec, NULL, f, 1, 1, 1, &o), PERFORMER_ERROR_NULL_POINTER,
                 "projection");
    expect_status("create dtype", performer_favor_decoder_create(&dec, p, (performer_dtype)4, 1, 1, 1, &o),
                 PERFORMER_ERROR_DTYPE_MISMATCH, "dtype");
    expect_status("create batch < 0", performer_favor_decoder_create(&dec, p, f, -1, 1, 1, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "batch");
    expect_status("create value_dim < 0", performer_favor_decoder_create(&dec, p, f, 1, 1, -2, &o), PERFORMER_ERROR_INVALID_ARGUMENT,
                 "value_dim");
    o.eps = -1;
    expect_status("create eps < 0", performer_favor_decoder_create(&dec, p, f, 1, 1, 1, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "eps");
    o.eps = NAN;
    expect_status("create eps NaN", performer_favor_decoder_create(&dec, p, f, 1, 1, 1, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "eps");
    performer_favor_options_init(&o);
    o.features = 9;
    expect_status("create features 9", performer_favor_decoder_create(&dec, p, f, 1, 1, 1, &o), PERFORMER_ERROR_INVALID_ARGUMENT,
                 "options->features");
    performer_favor_options_init(&o);
    o.size = 0;
    expect_status("create options size", performer_favor_decoder_create(&dec, p, f, 1, 1, 1, &o), PERFORMER_ERROR_UNSUPPORTED_VERSION,
                 "options->size");
    expect_status("create huge state", performer_favor_decoder_create(&dec, p, f, 1 << 30, 1 << 30, 1 << 30, NULL),
                 PERFORMER_ERROR_SIZE_OVERFLOW, "state");
    CHECK(dec == (performer_favor_decoder_t)0x1, "a failed create wrote *decoder");
    dec = NULL;

    OK(performer_favor_decoder_create(&dec, p, f, DB, DH, DM, NULL), "create (NULL options)");
    if (!dec) return;
    performer_tensor_t q = tensor_new(f, DB, DH, 1, DD), k = tensor_new(f, DB, DH, 1, DD), v = tensor_new(f, DB, DH, 1, DM);
    performer_tensor_t out = tensor_new(f, DB, DH, 1, DM), q64 = tensor_new(PERFORMER_FLOAT64, DB, DH, 1, DD);
    performer_tensor_t q5 = tensor_new(f, DB, DH, 1, DD + 1);
    fill(&q, 1, 1.0); fill(&k, 2, 1.0); fill(&v, 3, 1.0);
    OK(performer_favor_decoder_step(dec, &q, &k, &v, &out), "a first step");
    performer_tensor_t st = tensor_new(f, DB, DH, DMF, DM), zt = tensor_new(f, DB, DH, DMF, 1), ct = tensor_new(f, DB, DH, DMF, 1);
    OK(performer_favor_decoder_get_state(dec, &st, &zt, &ct), "get_state");
    double *s_before = doubles_of(&st), *c_before = doubles_of(&ct);
    fill_value(&out, SENTINEL);
    expect_status("step NULL decoder", performer_favor_decoder_step(NULL, &q, &k, &v, &out), PERFORMER_ERROR_NULL_POINTER, "decoder");
    expect_status("step NULL q", performer_favor_decoder_step(dec, NULL, &k, &v, &out), PERFORMER_ERROR_NULL_POINTER, "q is NULL");
    expect_status("step q float64", performer_favor_decoder_step(dec, &q64, &k, &v, &out), PERFORMER_ERROR_DTYPE_MISMATCH, "q.dtype");
    expect_status("step q D + 1", performer_favor_decoder_step(dec, &q5, &k, &v, &out), PERFORMER_ERROR_SHAPE_MISMATCH, "q.shape[3]");
    expect_status("step v as k", performer_favor_decoder_step(dec, &q, &k, &k, &out), PERFORMER_ERROR_SHAPE_MISMATCH, "v.shape[3]");
    performer_tensor_t alias = out;
    alias.data = v.data;
    expect_status("step out aliases v", performer_favor_decoder_step(dec, &q, &k, &v, &alias), PERFORMER_ERROR_ALIASING, "overlaps");
    CHECK(is_value(&out, SENTINEL), "a failed step wrote out");

    /* Bad states are refused; the state stays as it was. */
    performer_tensor_t bad_s = tensor_new(f, DB, DH, DMF, DM), bad_z = tensor_new(f, DB, DH, DMF, 1), bad_c = tensor_new(f, DB, DH, DMF, 1);
    fill(&bad_s, 4, 1.0); fill(&bad_z, 5, 1.0);
    set_at(&bad_c, 1, 2, 3, 0, INFINITY);
    expect_status("set_state c = +inf", performer_favor_decoder_set_state(dec, &bad_s, &bad_z, &bad_c), PERFORMER_ERROR_INVALID_ARGUMENT, "c[");
    set_at(&bad_c, 1, 2, 3, 0, -INFINITY);
    expect_status("set_state c = -inf with S != 0", performer_favor_decoder_set_state(dec, &bad_s, &bad_z, &bad_c),
                 PERFORMER_ERROR_INVALID_ARGUMENT, "-inf");
    set_at(&bad_c, 1, 2, 3, 0, 0);
    set_at(&bad_s, 0, 1, 2, 1, NAN);
    expect_status("set_state S NaN", performer_favor_decoder_set_state(dec, &bad_s, &bad_z, &bad_c), PERFORMER_ERROR_INVALID_ARGUMENT,
                 "not finite");
    expect_status("set_state z as c shape", performer_favor_decoder_set_state(dec, &bad_s, &bad_s, &bad_c),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "z.shape[3]");
    expect_status("set_state NULL c", performer_favor_decoder_set_state(dec, &bad_s, &bad_z, NULL), PERFORMER_ERROR_NULL_POINTER, "c is NULL");
    OK(performer_favor_decoder_get_state(dec, &st, &zt, &ct), "get_state after failed set_state");
    CHECK(rel_error(&st, s_before) == 0 && rel_error(&ct, c_before) == 0, "a failed set_state changed the state");
    /* get_state: z written over c's memory, S with a zero stride. */
    fill_value(&st, SENTINEL);
    performer_tensor_t z_on_c = zt;
    z_on_c.data = ct.data;
    expect_status("get_state z overlaps c", performer_favor_decoder_get_state(dec, &st, &z_on_c, &ct), PERFORMER_ERROR_ALIASING, "overlaps");
    performer_tensor_t s_zero = st;
    s_zero.strides[3] = 0;
    expect_status("get_state S self-overlap", performer_favor_decoder_get_state(dec, &s_zero, &zt, &ct), PERFORMER_ERROR_ALIASING, "S");
    expect_status("get_state NULL decoder", performer_favor_decoder_get_state(NULL, &st, &zt, &ct), PERFORMER_ERROR_NULL_POINTER, "decoder");
    CHECK(is_value(&st, SENTINEL), "a failed get_state wrote S");
    expect_status("reset NULL", performer_favor_decoder_reset(NULL), PERFORMER_ERROR_NULL_POINTER, "decoder");
    performer_favor_decoder_destroy(dec);
    performer_favor_decoder_destroy(NULL);

    /* relu needs c = 0; trigonometric one c per head. */
    for (int kind = PERFORMER_FAVOR_TRIGONOMETRIC; kind <= PERFORMER_FAVOR_RELU; kind++) {
        performer_favor_options_init(&o);
        o.features = kind;
        int64_t c = count_for(kind, DMF);
        performer_favor_decoder_t d2 = NULL;
        OK(performer_favor_decoder_create(&d2, p, f, 1, 1, DM, &o), "create");
        performer_tensor_t s2 = tensor_new(f, 1, 1, c, DM), z2 = tensor_new(f, 1, 1, c, 1), c2 = tensor_new(f, 1, 1, c, 1);
        fill_value(&c2, 0);
        set_at(&c2, 0, 0, 1, 0, 2.0);
        expect_status(kind == PERFORMER_FAVOR_RELU ? "relu c != 0" : "trigonometric c not per head",
                     performer_favor_decoder_set_state(d2, &s2, &z2, &c2), PERFORMER_ERROR_INVALID_ARGUMENT,
                     kind == PERFORMER_FAVOR_RELU ? "relu" : "trigonometric");
        free(s2.data); free(z2.data); free(c2.data);
        performer_favor_decoder_destroy(d2);
    }
    free(q.data); free(k.data); free(v.data); free(out.data); free(q64.data); free(q5.data);
    free(st.data); free(zt.data); free(ct.data); free(bad_s.data); free(bad_z.data); free(bad_c.data);
    free(s_before); free(c_before);
    performer_favor_projection_destroy(p);
}

/* ---------------------------------------------------------------- attention (performer_favor_forward / _backward) */

enum { AB = 2, AH = 4, AHK = 2, AD = 4, AM = 3, AMF = 5, AL = 9 };

/* The float64 reference with materialized features: for each query head, phi(Q) (N x C) and
 * phi(K) (L x C) of key head h / (H / Hk); out_i = sum_j A_ij v_j / (sum_j A_ij + eps) with
 * A = phi(Q) phi(K)^T over the keys row i sees (j < lengths[b], and j <= i when causal),
 * starting from the mathematical state (s0, z0) when given (causal). q: AB x AH x n x AD,
 * k: AB x AHK x AL x AD, v: AB x AHK x AL x AM (row-major doubles); s_final / z_final (may be
 * NULL) receive the mathematical final state. */
static void attention_reference(int kind, const double *w, double eps, int causal, int64_t n, const int64_t *lengths,
                                const double *q, const double *k, const double *v, const double *s0, const double *z0,
                                double *out, double *s_final, double *z_final) {
    const int64_t c = count_for(kind, AMF);
    const double sigma = sqrt(1 / sqrt((double)AD));
    double *pq = malloc(sizeof(double) * (size_t)(n * c)), *pk = malloc(sizeof(double) * AL * (size_t)c);
    for (int b = 0; b < AB; b++) {
        for (int h = 0; h < AH; h++) {
            const int hk = h / (AH / AHK), head = b * AH + h, khead = b * AHK + hk;
            const int64_t len = lengths ? lengths[b] : AL;
            for (int64_t i = 0; i < n; i++) reference_features(kind, w, AMF, AD, q + (head * n + i) * AD, sigma, 1e-3, pq + i * c);
            for (int64_t j = 0; j < AL; j++) {
                reference_features(kind, w, AMF, AD, k + (khead * AL + j) * AD, sigma, 1e-3, pk + j * c);
                if (j >= len) for (int64_t f = 0; f < c; f++) pk[j * c + f] = 0;
            }
            for (int64_t i = 0; i < n; i++) {
                double den = eps, num[AM] = {0};
                if (s0) {
                    for (int64_t f = 0; f < c; f++) {
                        den += pq[i * c + f] * z0[head * c + f];
                        for (int a = 0; a < AM; a++) num[a] += pq[i * c + f] * s0[(head * c + f) * AM + a];
                    }
                }
                for (int64_t j = 0; j < AL && (!causal || j <= i); j++) {
                    double weight = 0;
                    for (int64_t f = 0; f < c; f++) weight += pq[i * c + f] * pk[j * c + f];
                    den += weight;
                    for (int a = 0; a < AM; a++) num[a] += weight * v[(khead * AL + j) * AM + a];
                }
                for (int a = 0; a < AM; a++) out[(head * n + i) * AM + a] = den == 0 ? 0 : num[a] / den;
            }
            if (s_final) {
                for (int64_t f = 0; f < c; f++) {
                    z_final[head * c + f] = s0 ? z0[head * c + f] : 0;
                    for (int a = 0; a < AM; a++) s_final[(head * c + f) * AM + a] = s0 ? s0[(head * c + f) * AM + a] : 0;
                    for (int64_t j = 0; j < AL; j++) {
                        z_final[head * c + f] += pk[j * c + f];
                        for (int a = 0; a < AM; a++) s_final[(head * c + f) * AM + a] += pk[j * c + f] * v[(khead * AL + j) * AM + a];
                    }
                }
            }
        }
    }
    free(pq); free(pk);
}

/* sum of g * reference output (the loss whose gradient the backward computes). */
static double reference_loss(int kind, const double *w, double eps, int causal, int64_t n, const int64_t *lengths,
                             const double *q, const double *k, const double *v, const double *g) {
    double *out = malloc(sizeof(double) * AB * AH * (size_t)n * AM), loss = 0;
    attention_reference(kind, w, eps, causal, n, lengths, q, k, v, NULL, NULL, out, NULL, NULL);
    for (int64_t i = 0; i < AB * AH * n * AM; i++) loss += g[i] * out[i];
    free(out);
    return loss;
}

/* Central differences of reference_loss with respect to every entry of x (one of q, k, v). */
static double *numeric_gradient(int kind, const double *w, double eps, int causal, int64_t n, const int64_t *lengths,
                                double *q, double *k, double *v, const double *g, double *x, int64_t count) {
    double *grad = malloc(sizeof(double) * (size_t)count);
    for (int64_t i = 0; i < count; i++) {
        const double keep = x[i], h = 1e-6;
        x[i] = keep + h;
        double plus = reference_loss(kind, w, eps, causal, n, lengths, q, k, v, g);
        x[i] = keep - h;
        double minus = reference_loss(kind, w, eps, causal, n, lengths, q, k, v, g);
        x[i] = keep;
        grad[i] = (plus - minus) / (2 * h);
    }
    return grad;
}

/* The scaled state as the mathematical one: S = e^c S~, z = e^c z~ (row-major doubles). */
static void math_state(const performer_tensor_t *st, const performer_tensor_t *zt, const performer_tensor_t *ct,
                       double *s, double *z) {
    int64_t i = 0;
    FOR4(st) s[i++] = exp(at(ct, i0, i1, i2, 0)) * at(st, i0, i1, i2, i3);
    i = 0;
    FOR4(zt) z[i++] = exp(at(ct, i0, i1, i2, 0)) * at(zt, i0, i1, i2, i3);
}

static performer_tensor_t positions(const performer_tensor_t *t, int64_t from, int64_t count) {
    performer_tensor_t x = *t;
    x.shape[2] = count;
    x.data = (char *)t->data + (size_t)(from * t->strides[2]) * elem_size(t->dtype);
    return x;
}

static void attention(int dtype, int kind, int causal, int padded) {
    char what[96];
    snprintf(what, sizeof what, "attention %s kind %d %s%s", dtype ? "float64" : "float32", kind,
             causal ? "causal" : "bidirectional", padded ? " kv_lengths" : "");
    const int64_t n = causal ? AL : 6, c = count_for(kind, AMF);
    const int64_t lengths[AB] = {AL, 5};
    const double eps = kind == PERFORMER_FAVOR_TRIGONOMETRIC ? 0.0 : 1e-3;
    const double tol = dtype ? 1e-11 : 1e-5;
    performer_favor_projection_t p = make(AD, AMF, 0, 0, 17);
    if (!p) return;
    double *w = matrix_of(p, AMF, AD);
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    o.features = kind;
    o.eps = eps;
    o.causal = causal;
    o.kv_lengths = padded ? lengths : NULL;

    /* q through a transposed view; k, v contiguous. */
    performer_tensor_t q = tensor_transposed(dtype, AB, AH, n, AD), k = tensor_new(dtype, AB, AHK, AL, AD);
    performer_tensor_t v = tensor_new(dtype, AB, AHK, AL, AM), out = tensor_transposed(dtype, AB, AH, n, AM);
    fill(&q, 71 + (uint64_t)kind, 0.8); fill(&k, 72, 0.8); fill(&v, 73, 1.0);
    double *qs = doubles_of(&q), *ks = doubles_of(&k), *vs = doubles_of(&v);
    double *ref = malloc(sizeof(double) * AB * AH * (size_t)n * AM);
    attention_reference(kind, w, eps, causal, n, padded ? lengths : NULL, qs, ks, vs, NULL, NULL, ref, NULL, NULL);
    OK(performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), what);
    double e = rel_error(&out, ref);
    CHECK(e <= tol, "%s: forward vs float64 materialized reference: relative error %g > %g", what, e, tol);

    /* Backward. float64: central differences of the reference; float32: against the float64 call. */
    performer_tensor_t g = tensor_new(dtype, AB, AH, n, AM);
    fill(&g, 74, 1.0);
    performer_tensor_t dq = tensor_new(dtype, AB, AH, n, AD), dk = tensor_new(dtype, AB, AHK, AL, AD);
    performer_tensor_t dv = tensor_new(dtype, AB, AHK, AL, AM);
    OK(performer_favor_backward(&q, &k, &v, &g, p, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &o), what);
    double *gs = doubles_of(&g);
    if (dtype == PERFORMER_FLOAT64) {
        const int64_t *len = padded ? lengths : NULL;
        double *nq = numeric_gradient(kind, w, eps, causal, n, len, qs, ks, vs, gs, qs, AB * AH * n * AD);
        double *nk = numeric_gradient(kind, w, eps, causal, n, len, qs, ks, vs, gs, ks, AB * AHK * AL * AD);
        double *nv = numeric_gradient(kind, w, eps, causal, n, len, qs, ks, vs, gs, vs, AB * AHK * AL * AM);
        double eq = rel_error(&dq, nq), ek = rel_error(&dk, nk), ev = rel_error(&dv, nv);
        CHECK(eq <= 1e-6 && ek <= 1e-6 && ev <= 1e-6, "%s backward vs finite differences: dq %g, dk %g, dv %g", what,
              eq, ek, ev);
        free(nq); free(nk); free(nv);
    } else {
        performer_tensor_t q64 = tensor_new(PERFORMER_FLOAT64, AB, AH, n, AD), k64 = tensor_new(PERFORMER_FLOAT64, AB, AHK, AL, AD);
        performer_tensor_t v64 = tensor_new(PERFORMER_FLOAT64, AB, AHK, AL, AM), g64 = tensor_new(PERFORMER_FLOAT64, AB, AH, n, AM);
        performer_tensor_t dq64 = tensor_new(PERFORMER_FLOAT64, AB, AH, n, AD), dk64 = tensor_new(PERFORMER_FLOAT64, AB, AHK, AL, AD);
        performer_tensor_t dv64 = tensor_new(PERFORMER_FLOAT64, AB, AHK, AL, AM);
        memcpy(q64.data, qs, sizeof(double) * (size_t)count_of(&q64)); memcpy(k64.data, ks, sizeof(double) * (size_t)count_of(&k64));
        memcpy(v64.data, vs, sizeof(double) * (size_t)count_of(&v64)); memcpy(g64.data, gs, sizeof(double) * (size_t)count_of(&g64));
        OK(performer_favor_backward(&q64, &k64, &v64, &g64, p, &dq64, &dk64, &dv64, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &o),
           "float64 backward");
        double eq = rel_error(&dq, dq64.data), ek = rel_error(&dk, dk64.data), ev = rel_error(&dv, dv64.data);
        double gtol = kind == PERFORMER_FAVOR_TRIGONOMETRIC ? 1e-4 : 1e-5;
        CHECK(eq <= gtol && ek <= gtol && ev <= gtol, "%s backward vs float64: dq %g, dk %g, dv %g", what, eq, ek, ev);
        free(q64.data); free(k64.data); free(v64.data); free(g64.data); free(dq64.data); free(dk64.data); free(dv64.data);
    }

    if (causal) {
        /* Pieces: positions [0, 4) then [4, N) with the carried scaled state = one call, for the
         * outputs, the final state (= the reference's mathematical state) and the gradients
         * (the second piece's dS0/dz0 is the first piece's dS_N/dz_N). */
        const int64_t cut = 4, rest = n - cut;
        performer_tensor_t s1 = tensor_new(dtype, AB, AH, c, AM), z1 = tensor_new(dtype, AB, AH, c, 1), c1 = tensor_new(dtype, AB, AH, c, 1);
        performer_tensor_t s2 = tensor_new(dtype, AB, AH, c, AM), z2 = tensor_new(dtype, AB, AH, c, 1), c2 = tensor_new(dtype, AB, AH, c, 1);
        performer_tensor_t pieces = tensor_new(dtype, AB, AH, n, AM);
        performer_tensor_t q1 = positions(&q, 0, cut), k1 = positions(&k, 0, cut), v1 = positions(&v, 0, cut);
        performer_tensor_t q2 = positions(&q, cut, rest), k2 = positions(&k, cut, rest), v2 = positions(&v, cut, rest);
        performer_tensor_t o1 = positions(&pieces, 0, cut), o2 = positions(&pieces, cut, rest);
        int64_t piece_lengths[2][AB];
        for (int b = 0; b < AB; b++) {
            int64_t len = padded ? lengths[b] : AL;
            piece_lengths[0][b] = len < cut ? len : cut;
            piece_lengths[1][b] = len - cut < 0 ? 0 : len - cut;
        }
        performer_favor_options_t o1opt = o, o2opt = o;
        if (padded) { o1opt.kv_lengths = piece_lengths[0]; o2opt.kv_lengths = piece_lengths[1]; }
        OK(performer_favor_forward(&q1, &k1, &v1, p, &o1, NULL, NULL, NULL, &s1, &z1, &c1, &o1opt), "first piece");
        OK(performer_favor_forward(&q2, &k2, &v2, p, &o2, &s1, &z1, &c1, &s2, &z2, &c2, &o2opt), "second piece");
        double *one = doubles_of(&out);
        double ep = rel_error(&pieces, one);
        CHECK(ep <= (dtype ? 1e-12 : 1e-5), "%s: two pieces with the carried state vs one call: %g", what, ep);
        /* In place: the second piece's final state written over its initial state. */
        performer_tensor_t again = tensor_new(dtype, AB, AH, rest, AM);
        OK(performer_favor_forward(&q1, &k1, &v1, p, &o1, NULL, NULL, NULL, &s1, &z1, &c1, &o1opt), "first piece again");
        OK(performer_favor_forward(&q2, &k2, &v2, p, &again, &s1, &z1, &c1, &s1, &z1, &c1, &o2opt), "second piece in place");
        double *o2ref = doubles_of(&o2);
        CHECK(rel_error(&again, o2ref) == 0, "%s: final state over the initial state changes the outputs", what);
        double *sm = malloc(sizeof(double) * AB * AH * (size_t)(c * AM)), *zm = malloc(sizeof(double) * AB * AH * (size_t)c);
        double *sr = malloc(sizeof(double) * AB * AH * (size_t)(c * AM)), *zr = malloc(sizeof(double) * AB * AH * (size_t)c);
        double *sm2 = malloc(sizeof(double) * AB * AH * (size_t)(c * AM)), *zm2 = malloc(sizeof(double) * AB * AH * (size_t)c);
        math_state(&s2, &z2, &c2, sm, zm);
        math_state(&s1, &z1, &c1, sm2, zm2);
        attention_reference(kind, w, eps, causal, n, padded ? lengths : NULL, qs, ks, vs, NULL, NULL, ref, sr, zr);
        performer_tensor_t smt = tensor_new(PERFORMER_FLOAT64, AB, AH, c, AM), zmt = tensor_new(PERFORMER_FLOAT64, AB, AH, c, 1);
        memcpy(smt.data, sm, sizeof(double) * (size_t)count_of(&smt)); memcpy(zmt.data, zm, sizeof(double) * (size_t)count_of(&zmt));
        double es = rel_error(&smt, sr), ez = rel_error(&zmt, zr);
        CHECK(es <= tol && ez <= tol, "%s: final state vs the reference's: S %g, z %g", what, es, ez);
        memcpy(smt.data, sm2, sizeof(double) * (size_t)count_of(&smt)); memcpy(zmt.data, zm2, sizeof(double) * (size_t)count_of(&zmt));
        CHECK(rel_error(&smt, sm) <= 1e-12 && rel_error(&zmt, zm) <= 1e-12, "%s: in-place final state differs", what);

        /* Backward in pieces. Recompute the first piece's state into s1 (overwritten above). */
        OK(performer_favor_forward(&q1, &k1, &v1, p, &o1, NULL, NULL, NULL, &s1, &z1, &c1, &o1opt), "first piece (3)");
        performer_tensor_t g1 = positions(&g, 0, cut), g2 = positions(&g, cut, rest);
        performer_tensor_t pdq = tensor_new(dtype, AB, AH, n, AD), pdk = tensor_new(dtype, AB, AHK, AL, AD), pdv = tensor_new(dtype, AB, AHK, AL, AM);
        performer_tensor_t dq1 = positions(&pdq, 0, cut), dk1 = positions(&pdk, 0, cut), dv1 = positions(&pdv, 0, cut);
        performer_tensor_t dq2 = positions(&pdq, cut, rest), dk2 = positions(&pdk, cut, rest), dv2 = positions(&pdv, cut, rest);
        performer_tensor_t ds0 = tensor_new(dtype, AB, AH, c, AM), dz0 = tensor_new(dtype, AB, AH, c, 1);
        OK(performer_favor_backward(&q2, &k2, &v2, &g2, p, &dq2, &dk2, &dv2, &s1, &z1, &c1, NULL, NULL, &ds0, &dz0, &o2opt),
           "second piece backward");
        OK(performer_favor_backward(&q1, &k1, &v1, &g1, p, &dq1, &dk1, &dv1, NULL, NULL, NULL, &ds0, &dz0, NULL, NULL, &o1opt),
           "first piece backward");
        double *rdq = doubles_of(&dq), *rdk = doubles_of(&dk), *rdv = doubles_of(&dv);
        double bq = rel_error(&pdq, rdq), bk = rel_error(&pdk, rdk), bv = rel_error(&pdv, rdv);
        double btol = dtype ? 1e-11 : (kind == PERFORMER_FAVOR_TRIGONOMETRIC ? 1e-4 : 1e-5);
        CHECK(bq <= btol && bk <= btol && bv <= btol, "%s: backward in pieces vs one call: dq %g, dk %g, dv %g", what, bq, bk,
              bv);
        free(rdq); free(rdk); free(rdv); free(pdq.data); free(pdk.data); free(pdv.data); free(ds0.data); free(dz0.data);
        free(one); free(o2ref); free(sm); free(zm); free(sr); free(zr); free(sm2); free(zm2); free(smt.data); free(zmt.data);
        free(again.data); free(pieces.data);
        free(s1.data); free(z1.data); free(c1.data); free(s2.data); free(z2.data); free(c2.data);
    }
    free(gs); free(g.data); free(dq.data); free(dk.data); free(dv.data);
    free(qs); free(ks); free(vs); free(ref); free(w);
    free(q.data); free(k.data); free(v.data); free(out.data);
    performer_favor_projection_destroy(p);
}

/* The causal forward equals decoder steps, and its final state loads into a decoder. */
static void attention_vs_decoder(int dtype) {
    const int f = dtype;
    performer_favor_projection_t p = make(AD, AMF, 0, 0, 23);
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    o.causal = 1;
    performer_tensor_t q = tensor_new(f, 1, AH, AL, AD), k = tensor_new(f, 1, AH, AL, AD), v = tensor_new(f, 1, AH, AL, AM);
    performer_tensor_t out = tensor_new(f, 1, AH, AL, AM), steps = tensor_new(f, 1, AH, AL, AM);
    performer_tensor_t st = tensor_new(f, 1, AH, AMF, AM), zt = tensor_new(f, 1, AH, AMF, 1), ct = tensor_new(f, 1, AH, AMF, 1);
    fill(&q, 81, 1.0); fill(&k, 82, 1.0); fill(&v, 83, 1.0);
    const int64_t cut = 5;
    performer_tensor_t q1 = positions(&q, 0, cut), k1 = positions(&k, 0, cut), v1 = positions(&v, 0, cut), o1 = positions(&out, 0, cut);
    OK(performer_favor_forward(&q1, &k1, &v1, p, &o1, NULL, NULL, NULL, &st, &zt, &ct, &o), "prefix forward");
    performer_favor_decoder_t dec = NULL;
    OK(performer_favor_decoder_create(&dec, p, (performer_dtype)f, 1, AH, AM, &o), "decoder");
    if (!dec) return;
    OK(performer_favor_decoder_set_state(dec, &st, &zt, &ct), "decoder set_state from the forward's final state");
    for (int64_t i = cut; i < AL; i++) {
        performer_tensor_t qi = position(&q, i), ki = position(&k, i), vi = position(&v, i), oi = position(&steps, i);
        OK(performer_favor_decoder_step(dec, &qi, &ki, &vi, &oi), "step");
    }
    OK(performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), "one call");
    performer_tensor_t tail = positions(&steps, cut, AL - cut), tail_one = positions(&out, cut, AL - cut);
    double *ref = doubles_of(&tail_one);
    double e = rel_error(&tail, ref);
    CHECK(e <= (dtype ? 1e-12 : 1e-5), "%s: forward prefix + decoder steps vs one call: %g", dtype ? "float64" : "float32", e);
    free(ref);
    performer_favor_decoder_destroy(dec);
    performer_favor_projection_destroy(p);
    free(q.data); free(k.data); free(v.data); free(out.data); free(steps.data); free(st.data); free(zt.data); free(ct.data);
}

/* Norm-30 queries and keys: finite, and equal to the float64 log-space evaluation of the
 * mathematical function (positive features, eps = 0, bidirectional and causal). */
/* The positive features' exponents a_f(x_i) = w_f . x_i sigma - |x_i sigma|^2 / 2 of n rows of
 * x (n x d) under W (m x d), sigma = D^(-1/4), into a (n x m), in float64. */
static void positive_exponents(const double *w, const double *x, int n, int d, int m, double *a) {
    const double sigma = sqrt(1 / sqrt((double)d));
    for (int i = 0; i < n; i++) {
        double nn = 0;
        for (int j = 0; j < d; j++) nn += (x[i * d + j] * sigma) * (x[i * d + j] * sigma);
        for (int f = 0; f < m; f++) {
            double u = 0;
            for (int j = 0; j < d; j++) u += w[f * d + j] * x[i * d + j] * sigma;
            a[i * m + f] = u - nn / 2;
        }
    }
}

static void attention_large_norms(int dtype, int causal) {
    enum { n = 12, d = 16, m = 32, mv = 4 };
    char what[64];
    snprintf(what, sizeof what, "norm-30 attention %s %s", dtype ? "float64" : "float32", causal ? "causal" : "bidirectional");
    performer_favor_projection_t p = make(d, m, 0, 0, 5);
    if (!p) return;
    double *w = matrix_of(p, m, d);
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    o.causal = causal;
    performer_tensor_t q = tensor_new(dtype, 1, 1, n, d), k = tensor_new(dtype, 1, 1, n, d);
    performer_tensor_t v = tensor_new(dtype, 1, 1, n, mv), out = tensor_new(dtype, 1, 1, n, mv);
    fill(&q, 91, 1.0); fill(&k, 92, 1.0); fill(&v, 93, 1.0);
    set_row_norms(&q, 30);
    set_row_norms(&k, 30);
    OK(performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), what);
    double *qs = doubles_of(&q), *ks = doubles_of(&k), *vs = doubles_of(&v), ref[n * mv];
    double aq[n][m], ak[n][m];
    positive_exponents(w, qs, n, d, m, &aq[0][0]);
    positive_exponents(w, ks, n, d, m, &ak[0][0]);
    for (int i = 0; i < n; i++) {
        const int last = causal ? i : n - 1;
        double top = -INFINITY, den = 0, num[mv] = {0};
        for (int j = 0; j <= last; j++) for (int f = 0; f < m; f++) if (aq[i][f] + ak[j][f] > top) top = aq[i][f] + ak[j][f];
        for (int j = 0; j <= last; j++) {
            double weight = 0;
            for (int f = 0; f < m; f++) weight += exp(aq[i][f] + ak[j][f] - top);
            den += weight;
            for (int a = 0; a < mv; a++) num[a] += weight * vs[j * mv + a];
        }
        for (int a = 0; a < mv; a++) ref[i * mv + a] = num[a] / den;
    }
    double e = rel_error(&out, ref);
    CHECK(e <= (dtype ? 1e-12 : 1e-5), "%s: relative error %g vs the float64 log-space evaluation", what, e);
    /* The plain features underflow here: the stabilized form is what keeps this exact. */
    performer_tensor_t phi = tensor_new(PERFORMER_FLOAT64, 1, 1, n, m), q64 = tensor_new(PERFORMER_FLOAT64, 1, 1, n, d);
    memcpy(q64.data, qs, sizeof(double) * n * d);
    OK(performer_favor_features(&q64, p, &phi, NULL), "features");
    performer_tensor_t dq = tensor_new(dtype, 1, 1, n, d), dk = tensor_new(dtype, 1, 1, n, d), dv = tensor_new(dtype, 1, 1, n, mv);
    OK(performer_favor_backward(&q, &k, &v, &v, p, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &o), "backward");
    int finite = 1;
    FOR4(&dq) finite &= isfinite(at(&dq, i0, i1, i2, i3));
    FOR4(&dk) finite &= isfinite(at(&dk, i0, i1, i2, i3));
    FOR4(&dv) finite &= isfinite(at(&dv, i0, i1, i2, i3));
    CHECK(finite, "%s: backward is not finite", what);
    free(qs); free(ks); free(vs); free(w); free(phi.data); free(q64.data); free(dq.data); free(dk.data); free(dv.data);
    free(q.data); free(k.data); free(v.data); free(out.data);
    performer_favor_projection_destroy(p);
}

/* performer_favor_forward_with_row_scales, positive features, at norms 1 and 30: out is the
 * same bits as performer_favor_forward's; log(den_i) + U_i is the log of the float64 log-space
 * denominator sum_{j visible} sum_f e^{a_f(q_i) + a_f(k_j)} / m; U_i bounds every such
 * exponent (so every scaled term is <= nu); errors write nothing. */
static void attention_row_scales(int dtype, int causal, int large) {
    enum { n = 40, d = 16, m = 32, mv = 4 };
    char what[80];
    snprintf(what, sizeof what, "row scales %s %s norm %d", dtype ? "float64" : "float32",
             causal ? "causal" : "bidirectional", large ? 30 : 1);
    performer_favor_projection_t p = make(d, m, 0, 0, 7);
    if (!p) return;
    double *w = matrix_of(p, m, d);
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    o.causal = causal;
    performer_tensor_t q = tensor_new(dtype, 1, 1, n, d), k = tensor_new(dtype, 1, 1, n, d);
    performer_tensor_t v = tensor_new(dtype, 1, 1, n, mv), out = tensor_new(dtype, 1, 1, n, mv);
    performer_tensor_t plain = tensor_new(dtype, 1, 1, n, mv);
    performer_tensor_t units = tensor_new(dtype, 1, 1, n, 1), dens = tensor_new(dtype, 1, 1, n, 1);
    fill(&q, 191, 1.0); fill(&k, 192, 1.0); fill(&v, 193, 1.0);
    set_row_norms(&q, large ? 30 : 1);
    set_row_norms(&k, large ? 30 : 1);
    OK(performer_favor_forward(&q, &k, &v, p, &plain, NULL, NULL, NULL, NULL, NULL, NULL, &o), what);
    OK(performer_favor_forward_with_row_scales(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &units, &dens, &o),
       what);
    CHECK(memcmp(out.data, plain.data, elem_size(dtype) * n * mv) == 0, "%s: out differs from performer_favor_forward", what);
    double *qs = doubles_of(&q), *ks = doubles_of(&k), aq[n][m], ak[n][m];
    positive_exponents(w, qs, n, d, m, &aq[0][0]);
    positive_exponents(w, ks, n, d, m, &ak[0][0]);
    double worst_log = 0, worst_bound = 0, scale = 0;
    int finite = 1;
    for (int i = 0; i < n; i++) {
        const int last = causal ? i : n - 1;
        double top = -INFINITY, sum = 0;
        for (int j = 0; j <= last; j++) for (int f = 0; f < m; f++) top = fmax(top, aq[i][f] + ak[j][f]);
        for (int j = 0; j <= last; j++) for (int f = 0; f < m; f++) sum += exp(aq[i][f] + ak[j][f] - top);
        const double want = log(sum / m) + top, u = at(&units, 0, 0, i, 0), den = at(&dens, 0, 0, i, 0);
        finite &= isfinite(u) && isfinite(den) && den > 0;
        worst_log = fmax(worst_log, fabs(log(den) + u - want));
        scale = fmax(scale, fabs(want));
        worst_bound = fmax(worst_bound, (top - u) / (1 + fabs(top)));
    }
    CHECK(finite, "%s: a row unit or denominator is not finite and positive", what);
    /* Relative to the largest log (175-185 at norm 30, where a float32 spacing is 1.5e-5; under 4 at
     * norm 1): on AVX-512 the float32 sum lands 1.3 spacings off (2.0e-5). */
    CHECK(worst_log <= (dtype ? 1e-11 : 2e-5) * fmax(1, scale / 64), "%s: log(den) + U is off the reference by %g (largest |log| %g)",
          what, worst_log, scale);
    CHECK(worst_bound <= (dtype ? 1e-14 : 1e-6), "%s: U is below a visible exponent by %g (relative)", what, worst_bound);
    free(qs); free(ks); free(w);

    if (!dtype && causal && !large) {
        /* Errors: nothing written (the sentinel stays), the argument named. */
        performer_tensor_t d64 = tensor_new(PERFORMER_FLOAT64, 1, 1, n, 1), bad = tensor_new(dtype, 1, 1, n + 1, 1);
        FOR4(&dens) set_at(&dens, i0, i1, i2, i3, -7);
        FOR4(&out) set_at(&out, i0, i1, i2, i3, -7);
        performer_tensor_t alias = out;
        alias.shape[3] = 1;
        alias.strides[2] = mv;
        expect_status("row_units alone", performer_favor_forward_with_row_scales(&q, &k, &v, p, &out, NULL, NULL, NULL,
                      NULL, NULL, NULL, &units, NULL, &o), PERFORMER_ERROR_NULL_POINTER, "row_denominators");
        expect_status("row_units shape", performer_favor_forward_with_row_scales(&q, &k, &v, p, &out, NULL, NULL, NULL,
                      NULL, NULL, NULL, &bad, &dens, &o), PERFORMER_ERROR_SHAPE_MISMATCH, "row_units");
        expect_status("row_denominators dtype", performer_favor_forward_with_row_scales(&q, &k, &v, p, &out, NULL, NULL,
                      NULL, NULL, NULL, NULL, &units, &d64, &o), PERFORMER_ERROR_DTYPE_MISMATCH, "row_denominators");
        expect_status("row_units over out", performer_favor_forward_with_row_scales(&q, &k, &v, p, &out, NULL, NULL, NULL,
                      NULL, NULL, NULL, &alias, &dens, &o), PERFORMER_ERROR_ALIASING, "row_units");
        int untouched = 1;
        FOR4(&dens) untouched &= at(&dens, i0, i1, i2, i3) == -7;
        FOR4(&out) untouched &= at(&out, i0, i1, i2, i3) == -7;
        CHECK(untouched, "%s: an error call wrote an output", what);
        free(d64.data); free(bad.data);
    }
    free(q.data); free(k.data); free(v.data); free(out.data); free(plain.data); free(units.data); free(dens.data);
    performer_favor_projection_destroy(p);
}

static void attention_errors(void) {
    const int f = PERFORMER_FLOAT32;
    enum { n = 6, d = 4, m = 5, mv = 3 };
    performer_favor_projection_t p = make(d, m, 0, 0, 3), p5 = make(d + 1, m, 0, 0, 3);
    performer_tensor_t q = tensor_new(f, 2, 2, n, d), k = tensor_new(f, 2, 2, n, d), v = tensor_new(f, 2, 2, n, mv);
    performer_tensor_t out = tensor_new(f, 2, 2, n, mv), k7 = tensor_new(f, 2, 2, n + 1, d), v7 = tensor_new(f, 2, 2, n + 1, mv);
    performer_tensor_t s = tensor_new(f, 2, 2, m, mv), z = tensor_new(f, 2, 2, m, 1), c = tensor_new(f, 2, 2, m, 1);
    performer_tensor_t s2m = tensor_new(f, 2, 2, 2 * m, mv), z2m = tensor_new(f, 2, 2, 2 * m, 1), c2m = tensor_new(f, 2, 2, 2 * m, 1);
    performer_tensor_t sn = tensor_new(f, 2, 2, m, mv), zn = tensor_new(f, 2, 2, m, 1), cn = tensor_new(f, 2, 2, m, 1);
    performer_tensor_t q64 = tensor_new(PERFORMER_FLOAT64, 2, 2, n, d);
    fill(&q, 1, 1.0); fill(&k, 2, 1.0); fill(&v, 3, 1.0); fill(&k7, 4, 1.0); fill(&v7, 5, 1.0);
    fill(&s, 6, 1.0); fill(&z, 7, 1.0); fill_value(&c, 0); fill_value(&c2m, 0);
    fill_value(&out, SENTINEL); fill_value(&sn, SENTINEL); fill_value(&zn, SENTINEL); fill_value(&cn, SENTINEL);
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    o.causal = 1;
#define FWD(...) performer_favor_forward(__VA_ARGS__)
    expect_status("fwd NULL q", FWD(NULL, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), PERFORMER_ERROR_NULL_POINTER, "q is NULL");
    expect_status("fwd NULL projection", FWD(&q, &k, &v, NULL, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_NULL_POINTER, "projection");
    expect_status("fwd NULL out", FWD(&q, &k, &v, p, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &o), PERFORMER_ERROR_NULL_POINTER, "out is NULL");
    expect_status("fwd projection D mismatch", FWD(&q, &k, &v, p5, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "projection.dim");
    expect_status("fwd q float64", FWD(&q64, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), PERFORMER_ERROR_DTYPE_MISMATCH,
                 "dtype");
    expect_status("fwd causal N != L", FWD(&q, &k7, &v7, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "causal");
    expect_status("fwd initial triple without c", FWD(&q, &k, &v, p, &out, &s, &z, NULL, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_NULL_POINTER, "c0");
    expect_status("fwd final triple without S", FWD(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, &zn, &cn, &o),
                 PERFORMER_ERROR_NULL_POINTER, "S_N");
    /* A hyperbolic state has C = 2m: an m-row state is refused, and the other way round. */
    o.features = PERFORMER_FAVOR_HYPERBOLIC;
    expect_status("fwd state C = m for hyperbolic", FWD(&q, &k, &v, p, &out, &s, &z, &c, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "S0");
    o.features = PERFORMER_FAVOR_POSITIVE;
    expect_status("fwd state C = 2m for positive", FWD(&q, &k, &v, p, &out, &s2m, &z2m, &c2m, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "S0");
    expect_status("fwd final state C = 2m", FWD(&q, &k, &v, p, &out, NULL, NULL, NULL, &s2m, &z2m, &c2m, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "S_N");
    set_at(&c, 1, 0, 2, 0, NAN);
    expect_status("fwd c0 NaN", FWD(&q, &k, &v, p, &out, &s, &z, &c, NULL, NULL, NULL, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "c0[");
    set_at(&c, 1, 0, 2, 0, -INFINITY);
    expect_status("fwd c0 = -inf over a nonzero row", FWD(&q, &k, &v, p, &out, &s, &z, &c, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_INVALID_ARGUMENT, "-inf");
    set_at(&c, 1, 0, 2, 0, 0);
    set_at(&s, 0, 1, 1, 1, INFINITY);
    expect_status("fwd S0 not finite", FWD(&q, &k, &v, p, &out, &s, &z, &c, NULL, NULL, NULL, &o), PERFORMER_ERROR_INVALID_ARGUMENT,
                 "not finite");
    fill(&s, 6, 1.0);
    o.features = PERFORMER_FAVOR_RELU;
    set_at(&c, 0, 0, 0, 0, 1.5);
    expect_status("fwd relu c0 != 0", FWD(&q, &k, &v, p, &out, &s, &z, &c, NULL, NULL, NULL, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "relu");
    set_at(&c, 0, 0, 0, 0, 0);
    o.features = 7;
    expect_status("fwd features 7", FWD(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), PERFORMER_ERROR_INVALID_ARGUMENT,
                 "options->features");
    o.features = 0;
    o.eps = -1;
    expect_status("fwd eps < 0", FWD(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "eps");
    o.eps = 0;
    o.has_scale = 1; o.scale = -2;
    expect_status("fwd scale < 0", FWD(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "scale");
    o.has_scale = 0;
    int64_t bad_lengths[2] = {3, n + 1};
    o.kv_lengths = bad_lengths;
    expect_status("fwd kv_lengths > L", FWD(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), PERFORMER_ERROR_INVALID_ARGUMENT,
                 "kv_lengths[1]");
    o.kv_lengths = NULL;
    o.size = 4;
    expect_status("fwd options size", FWD(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_UNSUPPORTED_VERSION, "options->size");
    o.size = sizeof o;
    performer_tensor_t alias = out;
    alias.data = v.data;
    expect_status("fwd out aliases v", FWD(&q, &k, &v, p, &alias, NULL, NULL, NULL, NULL, NULL, NULL, &o), PERFORMER_ERROR_ALIASING,
                 "overlaps");
    performer_tensor_t zn_on_out = zn;
    zn_on_out.data = out.data;
    expect_status("fwd z_N overlaps out", FWD(&q, &k, &v, p, &out, NULL, NULL, NULL, &sn, &zn_on_out, &cn, &o),
                 PERFORMER_ERROR_ALIASING, "overlaps");
    CHECK(is_value(&out, SENTINEL) && is_value(&sn, SENTINEL) && is_value(&zn, SENTINEL) && is_value(&cn, SENTINEL),
          "a failed favor_forward wrote an output");
    OK(FWD(&q, &k, &v, p, &out, &s, &z, &c, &sn, &zn, &cn, &o), "the valid call");
    CHECK(!is_value(&out, SENTINEL) && !is_value(&cn, SENTINEL), "the valid call wrote nothing");
    OK(FWD(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, NULL), "NULL options (bidirectional)");
#undef FWD

    /* Backward. */
    performer_tensor_t g = tensor_new(f, 2, 2, n, mv), dq = tensor_new(f, 2, 2, n, d), dk = tensor_new(f, 2, 2, n, d);
    performer_tensor_t dv = tensor_new(f, 2, 2, n, mv), ds = tensor_new(f, 2, 2, m, mv), dz = tensor_new(f, 2, 2, m, 1);
    performer_tensor_t gs = tensor_new(f, 2, 2, m, mv), gz = tensor_new(f, 2, 2, m, 1);
    fill(&g, 8, 1.0); fill(&gs, 9, 1.0); fill(&gz, 10, 1.0);
    fill_value(&dq, SENTINEL); fill_value(&dk, SENTINEL); fill_value(&dv, SENTINEL); fill_value(&ds, SENTINEL); fill_value(&dz, SENTINEL);
#define BWD(...) performer_favor_backward(__VA_ARGS__)
    expect_status("bwd NULL dout", BWD(&q, &k, &v, NULL, p, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_NULL_POINTER, "dout");
    expect_status("bwd NULL projection", BWD(&q, &k, &v, &g, NULL, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_NULL_POINTER, "projection");
    expect_status("bwd projection D mismatch", BWD(&q, &k, &v, &g, p5, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "projection.dim");
    expect_status("bwd dS0 without an initial state", BWD(&q, &k, &v, &g, p, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, &ds, &dz, &o),
                 PERFORMER_ERROR_INVALID_ARGUMENT, "initial state");
    expect_status("bwd dS_N pair half NULL", BWD(&q, &k, &v, &g, p, &dq, &dk, &dv, NULL, NULL, NULL, &gs, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_NULL_POINTER, "dz_N");
    expect_status("bwd initial triple half NULL", BWD(&q, &k, &v, &g, p, &dq, &dk, &dv, &s, NULL, &c, NULL, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_NULL_POINTER, "z0");
    set_at(&gs, 0, 0, 0, 0, NAN);
    expect_status("bwd dS_N NaN", BWD(&q, &k, &v, &g, p, &dq, &dk, &dv, NULL, NULL, NULL, &gs, &gz, NULL, NULL, &o),
                 PERFORMER_ERROR_INVALID_ARGUMENT, "dS_N");
    set_at(&gs, 0, 0, 0, 0, 0);
    o.features = PERFORMER_FAVOR_HYPERBOLIC;
    expect_status("bwd dS_N C mismatch", BWD(&q, &k, &v, &g, p, &dq, &dk, &dv, NULL, NULL, NULL, &gs, &gz, NULL, NULL, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "dS_N");
    o.features = PERFORMER_FAVOR_POSITIVE;
    performer_tensor_t dk_on_dq = dk;
    dk_on_dq.data = dq.data;
    expect_status("bwd dk overlaps dq", BWD(&q, &k, &v, &g, p, &dq, &dk_on_dq, &dv, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_ALIASING, "overlaps");
    CHECK(is_value(&dq, SENTINEL) && is_value(&dk, SENTINEL) && is_value(&dv, SENTINEL) && is_value(&ds, SENTINEL) &&
              is_value(&dz, SENTINEL), "a failed favor_backward wrote an output");
    OK(BWD(&q, &k, &v, &g, p, &dq, &dk, &dv, &s, &z, &c, &gs, &gz, &ds, &dz, &o), "the valid backward");
    CHECK(!is_value(&ds, SENTINEL) && !is_value(&dq, SENTINEL), "the valid backward wrote nothing");
#undef BWD
    performer_tensor_t all[] = {q, k, v, out, k7, v7, s, z, c, s2m, z2m, c2m, sn, zn, cn, q64, g, dq, dk, dv, ds, dz, gs, gz};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i].data);
    performer_favor_projection_destroy(p);
    performer_favor_projection_destroy(p5);
}

/* kv_starts through the ABI: each batch row equals the call on its unpadded keys alone
 * (bidirectional: keys [start, length); causal, N = L: left padding, queries from the start
 * on), padded keys get dk = dv = 0, an empty range is allowed; bad starts fail naming
 * kv_starts[b] and write nothing; the struct before kv_starts is still accepted. */
static void attention_key_starts(void) {
    enum { n = 8, d = 4, m = 6, mv = 3, b2 = 2, h2 = 2 };
    const int f = PERFORMER_FLOAT64;
    const int64_t starts[b2] = {3, 8}, lengths[b2] = {7, 8};
    performer_favor_projection_t p = make(d, m, 0, 0, 11);
    for (int causal = 0; causal < 2; causal++) {
        performer_tensor_t q = tensor_new(f, b2, h2, n, d), k = tensor_new(f, b2, h2, n, d), v = tensor_new(f, b2, h2, n, mv);
        performer_tensor_t g = tensor_new(f, b2, h2, n, mv), out = tensor_new(f, b2, h2, n, mv);
        performer_tensor_t dq = tensor_new(f, b2, h2, n, d), dk = tensor_new(f, b2, h2, n, d), dv = tensor_new(f, b2, h2, n, mv);
        fill(&q, 41, 1.0); fill(&k, 42, 1.0); fill(&v, 43, 1.0); fill(&g, 44, 1.0);
        performer_favor_options_t o;
        performer_favor_options_init(&o);
        o.causal = causal;
        o.eps = 1e-6;
        o.kv_starts = starts;
        o.kv_lengths = causal ? NULL : lengths;
        OK(performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), "kv_starts forward");
        OK(performer_favor_backward(&q, &k, &v, &g, p, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &o),
           "kv_starts backward");
        const int64_t ends[b2] = {causal ? n : lengths[0], causal ? n : lengths[1]};
        CHECK(padded_rows_zero(&dk, starts, ends) && padded_rows_zero(&dv, starts, ends),
              "causal=%d: a padded key has a gradient", causal);
        for (int64_t b = 0; b < b2; b++) {
            int64_t s = starts[b], e = ends[b], first = causal ? s : 0;
            if (e == s) continue;
            performer_tensor_t qb = batch_rows(&q, b, first, n), kb = batch_rows(&k, b, s, e);
            performer_tensor_t vb = batch_rows(&v, b, s, e), gb = batch_rows(&g, b, first, n);
            performer_tensor_t out1 = tensor_new(f, 1, h2, n - first, mv), dq1 = tensor_new(f, 1, h2, n - first, d);
            performer_tensor_t dk1 = tensor_new(f, 1, h2, e - s, d), dv1 = tensor_new(f, 1, h2, e - s, mv);
            performer_favor_options_t o1;
            performer_favor_options_init(&o1);
            o1.causal = causal;
            o1.eps = 1e-6;
            OK(performer_favor_forward(&qb, &kb, &vb, p, &out1, NULL, NULL, NULL, NULL, NULL, NULL, &o1), "unpadded forward");
            OK(performer_favor_backward(&qb, &kb, &vb, &gb, p, &dq1, &dk1, &dv1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &o1),
               "unpadded backward");
            double e1 = batch_rows_difference(&out, b, first, &out1), e2 = batch_rows_difference(&dq, b, first, &dq1);
            double e3 = batch_rows_difference(&dk, b, s, &dk1), e4 = batch_rows_difference(&dv, b, s, &dv1);
            CHECK(e1 <= 1e-12 && e2 <= 1e-12 && e3 <= 1e-12 && e4 <= 1e-12,
                  "causal=%d b=%lld: vs unpadded rows: out %g dq %g dk %g dv %g", causal, (long long)b, e1, e2, e3, e4);
            free(out1.data); free(dq1.data); free(dk1.data); free(dv1.data);
        }

        if (causal) {
            /* Bad starts: nothing written. */
            fill_value(&out, SENTINEL);
            const int64_t bad[][b2] = {{-1, 0}, {0, n + 1}, {8, 0}};
            const char *needles[] = {"kv_starts[0] = -1", "kv_starts[1] = 9 is not in 0...8",
                                     "kv_starts[0] = 8 is past kv_lengths[0] = 7"};
            for (int i = 0; i < 3; i++) {
                o.kv_starts = bad[i];
                o.kv_lengths = i == 2 ? lengths : NULL;
                expect_status(needles[i], performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o),
                              PERFORMER_ERROR_INVALID_ARGUMENT, needles[i]);
            }
            CHECK(is_value(&out, SENTINEL), "a failed favor_forward with bad kv_starts wrote out");
            /* The struct before kv_starts: accepted, its kv_starts bytes never read. */
            performer_tensor_t out2 = tensor_new(f, b2, h2, n, mv);
            o.kv_lengths = lengths;
            o.kv_starts = NULL;
            OK(performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), "current size");
            o.size = offsetof(performer_favor_options_t, kv_starts);
            o.kv_starts = (const int64_t *)(uintptr_t)16;
            OK(performer_favor_forward(&q, &k, &v, p, &out2, NULL, NULL, NULL, NULL, NULL, NULL, &o), "old size");
            CHECK(memcmp(out.data, out2.data, sizeof(double) * b2 * h2 * n * mv) == 0, "old-size options: another result");
            free(out2.data);
        }
        performer_tensor_t all[] = {q, k, v, g, out, dq, dk, dv};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i].data);
    }
    performer_favor_projection_destroy(p);
}

/* ---------------------------------------------------------------- speed (printed, not asserted) */

/* performer_favor_state / _backward: the state of keys without queries equals the causal
 * forward's final state (per query head, Hs = H = 2 over Hk = 1, key lengths); Hs = Hk is that
 * state of every head of the group; two pieces with the state updated in place = one call; the
 * state backward equals the causal backward with dout = 0 and the same dS_N, dz_N; bad input
 * writes nothing. */
static void state_only(int dtype, int kind) {
    enum { n = 10, d = 4, m = 6, mv = 3, h = 2 };
    char what[64];
    snprintf(what, sizeof what, "favor_state %s kind %d", dtype ? "float64" : "float32", kind);
    const double tol = dtype ? 1e-12 : 2e-5;
    const int64_t cf = count_for(kind, m);
    performer_favor_projection_t p = make(d, m, 0, 0, 8);
    if (!p) return;
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    o.features = kind;
    o.causal = 1;
    int64_t lengths[2] = {n, 7};
    o.kv_lengths = lengths;
    performer_tensor_t q = tensor_new(dtype, 2, h, n, d), k = tensor_transposed(dtype, 2, 1, n, d), v = tensor_new(dtype, 2, 1, n, mv);
    performer_tensor_t out = tensor_new(dtype, 2, h, n, mv);
    performer_tensor_t sn = tensor_new(dtype, 2, h, cf, mv), zn = tensor_new(dtype, 2, h, cf, 1), cn = tensor_new(dtype, 2, h, cf, 1);
    performer_tensor_t s = tensor_transposed(dtype, 2, h, cf, mv), z = tensor_new(dtype, 2, h, cf, 1), c = tensor_new(dtype, 2, h, cf, 1);
    performer_tensor_t s1 = tensor_new(dtype, 2, 1, cf, mv), z1 = tensor_new(dtype, 2, 1, cf, 1), c1 = tensor_new(dtype, 2, 1, cf, 1);
    fill(&q, 11, 0.8); fill(&k, 12, 0.8); fill(&v, 13, 1.0);
    OK(performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, &sn, &zn, &cn, &o), what);
    OK(performer_favor_state(&k, &v, p, NULL, NULL, NULL, &s, &z, &c, &o), what);
    double *want_s = doubles_of(&sn), *want_z = doubles_of(&zn), *want_c = doubles_of(&cn);
    CHECK(rel_error(&s, want_s) <= tol && rel_error(&z, want_z) <= tol && rel_error(&c, want_c) == 0,
          "%s: state vs the causal forward's final state: S %g z %g c %g", what, rel_error(&s, want_s),
          rel_error(&z, want_z), rel_error(&c, want_c));
    /* Hs = Hk = 1: the state of each head of the group. */
    OK(performer_favor_state(&k, &v, p, NULL, NULL, NULL, &s1, &z1, &c1, &o), what);
    int same = 1;
    FOR4(&s) same &= at(&s, i0, i1, i2, i3) == at(&s1, i0, 0, i2, i3);
    FOR4(&c) same &= at(&c, i0, i1, i2, i3) == at(&c1, i0, 0, i2, i3);
    CHECK(same, "%s: Hs = Hk state differs from the per-query-head state", what);
    /* Two pieces, the second updating the first's state in place (no key lengths). */
    o.kv_lengths = NULL;
    OK(performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, &sn, &zn, &cn, &o), what);
    performer_tensor_t ka = positions(&k, 0, 4), va = positions(&v, 0, 4), kb = positions(&k, 4, n - 4), vb = positions(&v, 4, n - 4);
    OK(performer_favor_state(&ka, &va, p, NULL, NULL, NULL, &s, &z, &c, &o), what);
    OK(performer_favor_state(&kb, &vb, p, &s, &z, &c, &s, &z, &c, &o), what);
    free(want_s); free(want_z); free(want_c);
    want_s = doubles_of(&sn); want_z = doubles_of(&zn); want_c = doubles_of(&cn);
    CHECK(rel_error(&s, want_s) <= tol && rel_error(&z, want_z) <= tol && rel_error(&c, want_c) == 0,
          "%s: pieces in place vs one call: S %g z %g", what, rel_error(&s, want_s), rel_error(&z, want_z));
    /* Backward = the causal backward with dout = 0 and the same state gradient. */
    performer_tensor_t g = tensor_new(dtype, 2, h, n, mv), ds = tensor_new(dtype, 2, h, cf, mv), dz = tensor_new(dtype, 2, h, cf, 1);
    performer_tensor_t dq = tensor_new(dtype, 2, h, n, d), dk = tensor_new(dtype, 2, 1, n, d), dv = tensor_new(dtype, 2, 1, n, mv);
    performer_tensor_t dk2 = tensor_transposed(dtype, 2, 1, n, d), dv2 = tensor_new(dtype, 2, 1, n, mv);
    performer_tensor_t ds0 = tensor_new(dtype, 2, h, cf, mv), dz0 = tensor_new(dtype, 2, h, cf, 1);
    performer_tensor_t ds02 = tensor_new(dtype, 2, h, cf, mv), dz02 = tensor_new(dtype, 2, h, cf, 1);
    fill_value(&g, 0); fill(&ds, 14, 1.0); fill(&dz, 15, 1.0);
    /* The initial state: the first piece's (S, z, c) above, in s, z, c. */
    OK(performer_favor_state(&ka, &va, p, NULL, NULL, NULL, &s, &z, &c, &o), what);
    o.kv_lengths = lengths;
    OK(performer_favor_backward(&q, &k, &v, &g, p, &dq, &dk, &dv, &s, &z, &c, &ds, &dz, &ds0, &dz0, &o), what);
    OK(performer_favor_state_backward(&k, &v, p, &ds, &dz, &dk2, &dv2, &ds02, &dz02, &s, &z, &c, &o), what);
    double *wk = doubles_of(&dk), *wv = doubles_of(&dv), *ws0 = doubles_of(&ds0), *wz0 = doubles_of(&dz0);
    CHECK(rel_error(&dk2, wk) <= tol * 10 && rel_error(&dv2, wv) <= tol && rel_error(&ds02, ws0) <= tol &&
          rel_error(&dz02, wz0) <= tol, "%s: state backward vs causal backward: dk %g dv %g dS0 %g dz0 %g", what,
          rel_error(&dk2, wk), rel_error(&dv2, wv), rel_error(&ds02, ws0), rel_error(&dz02, wz0));
    /* Bad input writes nothing. */
    performer_tensor_t s3 = tensor_new(dtype, 2, h, cf + 1, mv), z3 = tensor_new(dtype, 2, h, cf + 1, 1), c3 = tensor_new(dtype, 2, h, cf + 1, 1);
    fill_value(&s3, SENTINEL); fill_value(&z3, SENTINEL); fill_value(&c3, SENTINEL);
    expect_status("state C + 1 features", performer_favor_state(&k, &v, p, NULL, NULL, NULL, &s3, &z3, &c3, &o),
                  PERFORMER_ERROR_SHAPE_MISMATCH, "S_out");
    CHECK(is_value(&s3, SENTINEL) && is_value(&z3, SENTINEL) && is_value(&c3, SENTINEL), "%s: failed call wrote", what);
    fill_value(&s, SENTINEL); fill_value(&z, SENTINEL); fill_value(&c, SENTINEL);
    expect_status("state NULL c_out", performer_favor_state(&k, &v, p, NULL, NULL, NULL, &s, &z, NULL, &o),
                  PERFORMER_ERROR_NULL_POINTER, "c_out");
    expect_status("state partial initial", performer_favor_state(&k, &v, p, &sn, NULL, &cn, &s, &z, &c, &o),
                  PERFORMER_ERROR_NULL_POINTER, "z0");
    expect_status("state NULL projection", performer_favor_state(&k, &v, NULL, NULL, NULL, NULL, &s, &z, &c, &o),
                  PERFORMER_ERROR_NULL_POINTER, "projection");
    expect_status("state c_out over z_out", performer_favor_state(&k, &v, p, NULL, NULL, NULL, &s, &z, &z, &o),
                  PERFORMER_ERROR_ALIASING, "overlaps");
    CHECK(is_value(&s, SENTINEL) && is_value(&z, SENTINEL) && is_value(&c, SENTINEL), "%s: failed call wrote", what);
    fill_value(&dk2, SENTINEL); fill_value(&dv2, SENTINEL);
    expect_status("state backward dS0 without S0",
                  performer_favor_state_backward(&k, &v, p, &ds, &dz, &dk2, &dv2, &ds02, &dz02, NULL, NULL, NULL, &o),
                  PERFORMER_ERROR_INVALID_ARGUMENT, "no initial state");
    expect_status("state backward NULL dz_out",
                  performer_favor_state_backward(&k, &v, p, &ds, NULL, &dk2, &dv2, NULL, NULL, NULL, NULL, NULL, &o),
                  PERFORMER_ERROR_NULL_POINTER, "dz_out");
    CHECK(is_value(&dk2, SENTINEL) && is_value(&dv2, SENTINEL), "%s: failed backward wrote", what);
    free(want_s); free(want_z); free(want_c); free(wk); free(wv); free(ws0); free(wz0);
    performer_tensor_t all[] = {q, k, v, out, sn, zn, cn, s, z, c, s1, z1, c1, g, ds, dz, dq, dk, dv, dk2, dv2,
                                ds0, dz0, ds02, dz02, s3, z3, c3};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i].data);
    performer_favor_projection_destroy(p);
}

/* A bidirectional call against a memory: the favor_state (Hs = AH) of keys [0, MCUT) as the
 * initial state of a call over keys [MCUT, AL) gives the one call over all AL keys (float64
 * reference; with key lengths split between the two), its final state is the state of all the
 * keys, L = 0 attends to the memory alone; the backward's dq, dk, dv are the one call's, and
 * its dS0/dz0 through favor_state_backward give the one call's dk, dv of the memory's keys;
 * dS0 against central differences (float64); the final state in place changes nothing. */
static void attention_memory(int dtype, int kind, int padded) {
    enum { MCUT = 4, N = 6 };
    char what[96];
    snprintf(what, sizeof what, "memory %s kind %d%s", dtype ? "float64" : "float32", kind, padded ? " kv_lengths" : "");
    const int64_t c = count_for(kind, AMF), rest = AL - MCUT;
    const int64_t lengths[AB] = {AL, 5}, mlen[AB] = {MCUT, MCUT}, clen[AB] = {rest, 5 - MCUT};
    const double eps = kind == PERFORMER_FAVOR_TRIGONOMETRIC ? 0.0 : 1e-3;
    const double tol = dtype ? 1e-11 : (kind == PERFORMER_FAVOR_TRIGONOMETRIC ? 1e-4 : 2e-5);
    performer_favor_projection_t p = make(AD, AMF, 0, 0, 19);
    if (!p) return;
    double *w = matrix_of(p, AMF, AD);
    performer_favor_options_t o, om, oc;
    performer_favor_options_init(&o);
    o.features = kind;
    o.eps = eps;
    o.kv_lengths = padded ? lengths : NULL;
    om = o; oc = o;
    om.kv_lengths = padded ? mlen : NULL;
    oc.kv_lengths = padded ? clen : NULL;
    performer_tensor_t q = tensor_transposed(dtype, AB, AH, N, AD), k = tensor_new(dtype, AB, AHK, AL, AD);
    performer_tensor_t v = tensor_new(dtype, AB, AHK, AL, AM), out = tensor_new(dtype, AB, AH, N, AM);
    performer_tensor_t one = tensor_new(dtype, AB, AH, N, AM), alone = tensor_new(dtype, AB, AH, N, AM);
    performer_tensor_t s0 = tensor_transposed(dtype, AB, AH, c, AM), z0 = tensor_new(dtype, AB, AH, c, 1), c0 = tensor_new(dtype, AB, AH, c, 1);
    performer_tensor_t sn = tensor_new(dtype, AB, AH, c, AM), zn = tensor_new(dtype, AB, AH, c, 1), cn = tensor_new(dtype, AB, AH, c, 1);
    fill(&q, 91 + (uint64_t)kind, 0.8); fill(&k, 92, 0.8); fill(&v, 93, 1.0);
    performer_tensor_t km = positions(&k, 0, MCUT), vm = positions(&v, 0, MCUT);
    performer_tensor_t kc = positions(&k, MCUT, rest), vc = positions(&v, MCUT, rest);
    OK(performer_favor_state(&km, &vm, p, NULL, NULL, NULL, &s0, &z0, &c0, &om), what);
    OK(performer_favor_forward(&q, &kc, &vc, p, &out, &s0, &z0, &c0, &sn, &zn, &cn, &oc), what);
    double *qs = doubles_of(&q), *ks = doubles_of(&k), *vs = doubles_of(&v);
    double *ref = malloc(sizeof(double) * AB * AH * N * AM);
    double *sr = malloc(sizeof(double) * AB * AH * (size_t)(c * AM)), *zr = malloc(sizeof(double) * AB * AH * (size_t)c);
    double *sm = malloc(sizeof(double) * AB * AH * (size_t)(c * AM)), *zm = malloc(sizeof(double) * AB * AH * (size_t)c);
    attention_reference(kind, w, eps, 0, N, padded ? lengths : NULL, qs, ks, vs, NULL, NULL, ref, sr, zr);
    double e = rel_error(&out, ref);
    CHECK(e <= tol, "%s: memory + keys vs the float64 reference over all keys: %g", what, e);
    OK(performer_favor_forward(&q, &k, &v, p, &one, NULL, NULL, NULL, NULL, NULL, NULL, &o), what);
    double *ones = doubles_of(&one);
    CHECK(rel_error(&out, ones) <= tol, "%s: memory + keys vs one call: %g", what, rel_error(&out, ones));
    math_state(&sn, &zn, &cn, sm, zm);
    performer_tensor_t smt = tensor_new(PERFORMER_FLOAT64, AB, AH, c, AM), zmt = tensor_new(PERFORMER_FLOAT64, AB, AH, c, 1);
    memcpy(smt.data, sm, sizeof(double) * (size_t)count_of(&smt)); memcpy(zmt.data, zm, sizeof(double) * (size_t)count_of(&zmt));
    CHECK(rel_error(&smt, sr) <= tol && rel_error(&zmt, zr) <= tol, "%s: final state vs the reference: S %g z %g", what,
          rel_error(&smt, sr), rel_error(&zmt, zr));
    /* L = 0: the memory alone (the reference with every key past MCUT removed). */
    performer_tensor_t k0 = positions(&k, AL, 0), v0 = positions(&v, AL, 0);
    performer_favor_options_t o0 = o;
    o0.kv_lengths = NULL;
    OK(performer_favor_forward(&q, &k0, &v0, p, &alone, &s0, &z0, &c0, NULL, NULL, NULL, &o0), what);
    attention_reference(kind, w, eps, 0, N, mlen, qs, ks, vs, NULL, NULL, ref, NULL, NULL);
    CHECK(rel_error(&alone, ref) <= tol, "%s: L = 0 vs the memory's keys alone: %g", what, rel_error(&alone, ref));
    /* In place: the final state over the memory; same outputs and state. */
    performer_tensor_t s1 = tensor_transposed(dtype, AB, AH, c, AM), z1 = tensor_new(dtype, AB, AH, c, 1), c1 = tensor_new(dtype, AB, AH, c, 1);
    OK(performer_favor_state(&km, &vm, p, NULL, NULL, NULL, &s1, &z1, &c1, &om), what);
    OK(performer_favor_forward(&q, &kc, &vc, p, &alone, &s1, &z1, &c1, &s1, &z1, &c1, &oc), what);
    double *outs = doubles_of(&out), *sns = doubles_of(&sn), *cns = doubles_of(&cn);
    CHECK(rel_error(&alone, outs) == 0 && rel_error(&s1, sns) == 0 && rel_error(&c1, cns) == 0,
          "%s: the final state written over the memory changed the result", what);

    /* Backward: the call's gradients and the memory's through favor_state_backward = the one call's. */
    performer_tensor_t g = tensor_new(dtype, AB, AH, N, AM);
    fill(&g, 94, 1.0);
    performer_tensor_t dq = tensor_new(dtype, AB, AH, N, AD), dk = tensor_new(dtype, AB, AHK, AL, AD), dv = tensor_new(dtype, AB, AHK, AL, AM);
    performer_tensor_t wq = tensor_new(dtype, AB, AH, N, AD), wk = tensor_new(dtype, AB, AHK, AL, AD), wv = tensor_new(dtype, AB, AHK, AL, AM);
    performer_tensor_t ds0 = tensor_new(dtype, AB, AH, c, AM), dz0 = tensor_new(dtype, AB, AH, c, 1);
    performer_tensor_t dkc = positions(&dk, MCUT, rest), dvc = positions(&dv, MCUT, rest);
    performer_tensor_t dkm = positions(&dk, 0, MCUT), dvm = positions(&dv, 0, MCUT);
    OK(performer_favor_backward(&q, &kc, &vc, &g, p, &dq, &dkc, &dvc, &s0, &z0, &c0, NULL, NULL, &ds0, &dz0, &oc), what);
    OK(performer_favor_state_backward(&km, &vm, p, &ds0, &dz0, &dkm, &dvm, NULL, NULL, NULL, NULL, NULL, &om), what);
    OK(performer_favor_backward(&q, &k, &v, &g, p, &wq, &wk, &wv, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &o), what);
    double *rq = doubles_of(&wq), *rk = doubles_of(&wk), *rv = doubles_of(&wv);
    double btol = dtype ? 1e-10 : (kind == PERFORMER_FAVOR_TRIGONOMETRIC ? 2e-4 : 2e-5);
    CHECK(rel_error(&dq, rq) <= btol && rel_error(&dk, rk) <= btol && rel_error(&dv, rv) <= btol,
          "%s: backward against a memory vs one call: dq %g dk %g dv %g", what, rel_error(&dq, rq), rel_error(&dk, rk),
          rel_error(&dv, rv));
    if (dtype == PERFORMER_FLOAT64) {
        /* dS0 (c0 held fixed) by central differences of sum(g * out) over S~0 and z~0. */
        double *gs = doubles_of(&g), worst = 0, scale = 1e-300;
        performer_tensor_t *xs[2] = {&s0, &z0}, *gx[2] = {&ds0, &dz0};
        for (int which = 0; which < 2; which++) {
            performer_tensor_t *x = xs[which];
            FOR4(x) {
                const double keep = at(x, i0, i1, i2, i3), h = 1e-6;
                double loss[2];
                for (int side = 0; side < 2; side++) {
                    set_at(x, i0, i1, i2, i3, keep + (side ? -h : h));
                    performer_favor_forward(&q, &kc, &vc, p, &alone, &s0, &z0, &c0, NULL, NULL, NULL, &oc);
                    double *a = doubles_of(&alone), sum = 0;
                    for (int64_t i = 0; i < AB * AH * N * AM; i++) sum += gs[i] * a[i];
                    free(a);
                    loss[side] = sum;
                }
                set_at(x, i0, i1, i2, i3, keep);
                double want = (loss[0] - loss[1]) / (2 * h), got = at(gx[which], i0, i1, i2, i3);
                if (fabs(got - want) > worst) worst = fabs(got - want);
                if (fabs(want) > scale) scale = fabs(want);
            }
        }
        CHECK(worst / scale <= 1e-6, "%s: dS0/dz0 vs central differences: %g", what, worst / scale);
        free(gs);
    }
    free(rq); free(rk); free(rv); free(qs); free(ks); free(vs); free(ref); free(sr); free(zr); free(sm); free(zm);
    free(ones); free(outs); free(sns); free(cns); free(w);
    performer_tensor_t all[] = {q, k, v, out, one, alone, s0, z0, c0, sn, zn, cn, smt, zmt, s1, z1, c1, g, dq, dk, dv,
                                wq, wk, wv, ds0, dz0};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i].data);
    performer_favor_projection_destroy(p);
}

static void step_speed(void) {
    enum { SH = 8, SD = 64, SM = 64, SMF = 256, STEPS = 1000 };
    performer_favor_projection_t p = make(SD, SMF, 0, 0, 1);
    performer_favor_decoder_t dec = NULL;
    performer_status s = performer_favor_decoder_create(&dec, p, PERFORMER_FLOAT32, 1, SH, SM, NULL);
    CHECK(s == PERFORMER_OK, "speed decoder: %s", performer_last_error());
    if (s != PERFORMER_OK) return;
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, 1, SH, 1, SD), k = tensor_new(PERFORMER_FLOAT32, 1, SH, 1, SD);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT32, 1, SH, 1, SM), o = tensor_new(PERFORMER_FLOAT32, 1, SH, 1, SM);
    fill(&q, 51, 1.0); fill(&k, 52, 1.0); fill(&v, 53, 1.0);
    for (int i = 0; i < 50; i++) s |= performer_favor_decoder_step(dec, &q, &k, &v, &o);
    double best;
    BEST_US_PER_CALL(best, 3, STEPS, s, performer_favor_decoder_step(dec, &q, &k, &v, &o));
    CHECK(s == PERFORMER_OK, "speed steps: %s", performer_last_error());
    printf("FAVOR+ decoder step (float32, B=1, H=8, D=M=64, m=256, %s): %.2f us/token (best of 3 x %d)\n",
           performer_kernel_isa(), best, STEPS);
    performer_favor_decoder_destroy(dec);
    performer_favor_projection_destroy(p);
    free(q.data); free(k.data); free(v.data); free(o.data);
}

/* performer_favor_initial_state_gradient: the initial triple's gradient from q, c0, the forward's
 * row scales, out and dout equals the backward's dS0, dz0 (no final-state gradient), GQA (H = 2,
 * Hk = 1), causal and not, every kind; a strided dS0 (transposed layout); errors write nothing. */
static void initial_state_gradient(int dtype, int kind, int causal) {
    enum { n = 37, d = 8, m = 6, mv = 3, h = 2 };
    char what[80];
    snprintf(what, sizeof what, "initial state gradient %s kind %d %s", dtype ? "float64" : "float32", kind,
             causal ? "causal" : "bidirectional");
    performer_favor_projection_t p = make(d, m, 0, 0, 13);
    if (!p) return;
    const int64_t cf = count_for(kind, m);
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    o.causal = causal;
    o.features = kind;
    o.eps = 1e-3;
    performer_tensor_t q = tensor_new(dtype, 1, h, n, d), k = tensor_new(dtype, 1, 1, n, d), v = tensor_new(dtype, 1, 1, n, mv);
    performer_tensor_t kp = tensor_new(dtype, 1, 1, 9, d), vp = tensor_new(dtype, 1, 1, 9, mv);
    performer_tensor_t out = tensor_new(dtype, 1, h, n, mv), dout = tensor_new(dtype, 1, h, n, mv);
    performer_tensor_t units = tensor_new(dtype, 1, h, n, 1), dens = tensor_new(dtype, 1, h, n, 1);
    performer_tensor_t s0 = tensor_new(dtype, 1, h, cf, mv), z0 = tensor_new(dtype, 1, h, cf, 1), c0 = tensor_new(dtype, 1, h, cf, 1);
    performer_tensor_t dq = tensor_new(dtype, 1, h, n, d), dk = tensor_new(dtype, 1, 1, n, d), dv = tensor_new(dtype, 1, 1, n, mv);
    performer_tensor_t bs = tensor_new(dtype, 1, h, cf, mv), bz = tensor_new(dtype, 1, h, cf, 1);
    performer_tensor_t gs = tensor_transposed(dtype, 1, h, cf, mv), gz = tensor_new(dtype, 1, h, cf, 1);
    fill(&q, 301, 0.8); fill(&k, 302, 0.8); fill(&v, 303, 1.0); fill(&kp, 304, 0.8); fill(&vp, 305, 1.0);
    fill(&dout, 306, 1.0);
    /* The initial triple: the state of 9 earlier keys, one per query head. */
    OK(performer_favor_state(&kp, &vp, p, NULL, NULL, NULL, &s0, &z0, &c0, &o), what);
    OK(performer_favor_forward_with_row_scales(&q, &k, &v, p, &out, &s0, &z0, &c0, NULL, NULL, NULL, &units, &dens, &o),
       what);
    OK(performer_favor_backward(&q, &k, &v, &dout, p, &dq, &dk, &dv, &s0, &z0, &c0, NULL, NULL, &bs, &bz, &o), what);
    OK(performer_favor_initial_state_gradient(&q, p, &c0, &units, &dens, &out, &dout, &gs, &gz, &o), what);
    double *ws = doubles_of(&bs), *wz = doubles_of(&bz);
    const double tol = dtype ? 1e-10 : 2e-4;
    CHECK(max_relative_error(&gs, ws, 1e-6) <= tol && max_relative_error(&gz, wz, 1e-6) <= tol,
          "%s: vs the backward: dS0 %g dz0 %g", what, max_relative_error(&gs, ws, 1e-6), max_relative_error(&gz, wz, 1e-6));
    if (!dtype && !causal && kind == 0) {
        /* Errors: the argument named, nothing written. */
        performer_tensor_t c_bad = tensor_new(dtype, 1, h, cf + 1, 1), u_bad = tensor_new(dtype, 1, h, n - 1, 1);
        performer_tensor_t h16 = tensor_new(PERFORMER_FLOAT16, 1, h, n, d), alias = out;
        alias.shape[2] = cf;
        fill_value(&gs, SENTINEL); fill_value(&gz, SENTINEL);
        expect_status("isg NULL projection", performer_favor_initial_state_gradient(&q, NULL, &c0, &units, &dens, &out,
                      &dout, &gs, &gz, &o), PERFORMER_ERROR_NULL_POINTER, "projection");
        expect_status("isg NULL c0", performer_favor_initial_state_gradient(&q, p, NULL, &units, &dens, &out, &dout, &gs,
                      &gz, &o), PERFORMER_ERROR_NULL_POINTER, "c0");
        expect_status("isg c0 shape", performer_favor_initial_state_gradient(&q, p, &c_bad, &units, &dens, &out, &dout,
                      &gs, &gz, &o), PERFORMER_ERROR_SHAPE_MISMATCH, "c0");
        expect_status("isg row_units shape", performer_favor_initial_state_gradient(&q, p, &c0, &u_bad, &dens, &out,
                      &dout, &gs, &gz, &o), PERFORMER_ERROR_SHAPE_MISMATCH, "row_units");
        expect_status("isg half q", performer_favor_initial_state_gradient(&h16, p, &c0, &units, &dens, &out, &dout,
                      &gs, &gz, &o), PERFORMER_ERROR_DTYPE_MISMATCH, "dtype");
        expect_status("isg dz0 over out", performer_favor_initial_state_gradient(&q, p, &c0, &units, &dens, &out, &dout,
                      &gs, &alias, &o), PERFORMER_ERROR_SHAPE_MISMATCH, "dz0");
        alias.shape[3] = 1;
        expect_status("isg dz0 overlaps out", performer_favor_initial_state_gradient(&q, p, &c0, &units, &dens, &out,
                      &dout, &gs, &alias, &o), PERFORMER_ERROR_ALIASING, "dz0");
        set_at(&dens, 0, 1, 3, 0, NAN);
        expect_status("isg NaN denominator", performer_favor_initial_state_gradient(&q, p, &c0, &units, &dens, &out,
                      &dout, &gs, &gz, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "row_denominators[0, 1, 3, 0]");
        o.size = 8;
        expect_status("isg options size", performer_favor_initial_state_gradient(&q, p, &c0, &units, &dens, &out,
                      &dout, &gs, &gz, &o), PERFORMER_ERROR_UNSUPPORTED_VERSION, "options->size");
        CHECK(is_value(&gs, SENTINEL) && is_value(&gz, SENTINEL), "%s: a failed call wrote", what);
        free(c_bad.data); free(u_bad.data); free(h16.data);
    }
    free(ws); free(wz);
    performer_tensor_t all[] = {q, k, v, kp, vp, out, dout, units, dens, s0, z0, c0, dq, dk, dv, bs, bz, gs, gz};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i].data);
    performer_favor_projection_destroy(p);
}

int main(void) {
    projections();
    from_matrix();
    projection_errors();
    concurrency();
    for (int dtype = 0; dtype < 2; dtype++)
        for (int kind = 0; kind < 4; kind++)
            for (int custom = 0; custom < 2; custom++) features(dtype, kind, custom);
    feature_errors();
    for (int dtype = 0; dtype < 2; dtype++)
        for (int kind = 0; kind < 4; kind++) decoder_lifecycle(dtype, kind);
    for (int dtype = 0; dtype < 2; dtype++)
        for (int kind = 0; kind < 2; kind++) decoder_large_norms(dtype, kind);
    decoder_errors();
    for (int dtype = 0; dtype < 2; dtype++)
        for (int kind = 0; kind < 4; kind++)
            for (int causal = 0; causal < 2; causal++)
                for (int padded = 0; padded < 2; padded++) attention(dtype, kind, causal, padded);
    for (int dtype = 0; dtype < 2; dtype++) {
        attention_vs_decoder(dtype);
        for (int causal = 0; causal < 2; causal++) {
            attention_large_norms(dtype, causal);
            for (int large = 0; large < 2; large++) attention_row_scales(dtype, causal, large);
        }
    }
    attention_errors();
    attention_key_starts();
    for (int dtype = 0; dtype < 2; dtype++)
        for (int kind = 0; kind < 4; kind++) state_only(dtype, kind);
    for (int dtype = 0; dtype < 2; dtype++)
        for (int kind = 0; kind < 4; kind++)
            for (int padded = 0; padded < 2; padded++) attention_memory(dtype, kind, padded);
    for (int dtype = 0; dtype < 2; dtype++)
        for (int kind = 0; kind < 4; kind++)
            for (int causal = 0; causal < 2; causal++) initial_state_gradient(dtype, kind, causal);
    step_speed();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
