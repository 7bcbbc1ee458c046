/* test_linear.c: libperformer's linear-attention C ABI (performer.h section 6).
 *   - forward against a float64 reference built from explicit N x L masked similarity
 *     matrices, every feature map, causal or not, key lengths, GQA, initial/final state;
 *   - backward against central finite differences of that reference, including the gradient
 *     w.r.t. the initial state and through a gradient of the final state;
 *   - strided views; one call = two pieces with carried state;
 *   - the query-side initial-state gradient vs a float64 formula and vs the backward's;
 *   - bad input: NULLs, half state pairs, state shapes, eps, feature map, options size, ...;
 *     outputs and decoder state untouched on error;
 *   - the decoder: create/step/prefill/get/set/reset/destroy, errors, prefill + steps = one
 *     causal call, distinct decoders on concurrent threads;
 *   - prints the decoder's microseconds per token (B = 1, H = 8, D = M = 64, float32).
 * Prints "N passed, M failed" last and exits nonzero on any failure. */
#define _GNU_SOURCE
#include "test_support.h"

#include <pthread.h>

/* ---------------------------------------------------------------- tensors */

/* positive != 0: values in [0.1, 1.1) (features for the identity map, whose denominators must
 * stay away from 0). */
static void fill(performer_tensor_t *t, uint64_t seed, int positive) {
    int64_t i = 0;
    FOR4(t) {
        double x = value_at(seed, i++);
        set_at(t, i0, i1, i2, i3, positive ? 0.1 + fabs(x) : x);
    }
}

/* max |t - ref| / max(max |ref|, 1e-30). */
static double rel_error(const performer_tensor_t *t, const double *ref) { return max_relative_error(t, ref, 1e-30); }

/* Positions [from, to) of a rank-4 tensor. */
static performer_tensor_t positions(const performer_tensor_t *t, int64_t from, int64_t to) {
    performer_tensor_t x = position(t, from);
    x.shape[2] = to - from;
    return x;
}

/* ---------------------------------------------------------------- the float64 reference */

enum { B = 2, H = 4, HK = 2, NMAX = 9, D = 4, M = 3 }; /* C = D */

typedef struct {
    int causal, fmap;
    double eps;
    const int64_t *lengths; /* B entries or NULL */
    int64_t n, l;
    int unnormalized;       /* options.normalize = 0: out = the numerator */
    double *den;            /* NULL, or receives the denominators B*H*n (without eps) */
} config;

static double phi(int fmap, double x) {
    if (fmap == PERFORMER_FEATURE_ELU_PLUS_ONE) return x > 0 ? x + 1 : exp(x);
    if (fmap == PERFORMER_FEATURE_RELU) return x > 0 ? x : 0;
    return x;
}

/* Contiguous float64 arrays: q B*H*n*D, k B*HK*l*D, v B*HK*l*M, s0 B*H*D*M and z0 B*H*D (or
 * NULL: zeros) -> out B*H*n*M and, when sn is not NULL, sn/zn. The attention matrix A of each
 * head is built in full, with its mask (causal: j <= i; keys j >= length removed). */
static void reference(const config *c, const double *q, const double *k, const double *v, const double *s0,
                      const double *z0, double *out, double *sn, double *zn) {
    int64_t n = c->n, l = c->l;
    double a[NMAX][NMAX], fq[NMAX][D], fk[NMAX][D];
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            int64_t hk = h / (H / HK), limit = c->lengths ? c->lengths[b] : l;
            const double *qh = q + (b * H + h) * n * D, *kh = k + (b * HK + hk) * l * D, *vh = v + (b * HK + hk) * l * M;
            const double *sh = s0 ? s0 + (b * H + h) * D * M : NULL, *zh = z0 ? z0 + (b * H + h) * D : NULL;
            for (int64_t i = 0; i < n; i++) for (int64_t d = 0; d < D; d++) fq[i][d] = phi(c->fmap, qh[i * D + d]);
            for (int64_t j = 0; j < l; j++) for (int64_t d = 0; d < D; d++) fk[j][d] = phi(c->fmap, kh[j * D + d]);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < l; j++) {
                    a[i][j] = 0;
                    if (j >= limit || (c->causal && j > i)) continue;
                    for (int64_t d = 0; d < D; d++) a[i][j] += fq[i][d] * fk[j][d];
                }
            for (int64_t i = 0; i < n; i++) {
                double den = 0;
                for (int64_t j = 0; j < l; j++) den += a[i][j];
                if (zh) for (int64_t d = 0; d < D; d++) den += fq[i][d] * zh[d];
                if (c->den) c->den[(b * H + h) * n + i] = den;
                den += c->eps;
                for (int64_t m = 0; m < M; m++) {
                    double num = 0;
                    for (int64_t j = 0; j < l; j++) num += a[i][j] * vh[j * M + m];
                    if (sh) for (int64_t d = 0; d < D; d++) num += fq[i][d] * sh[d * M + m];
                    out[((b * H + h) * n + i) * M + m] = c->unnormalized ? num : den == 0 ? 0 : num / den;
                }
            }
            if (!sn) continue;
            for (int64_t d = 0; d < D; d++) {
                double z = zh ? zh[d] : 0;
                for (int64_t j = 0; j < limit; j++) z += fk[j][d];
                zn[(b * H + h) * D + d] = z;
                for (int64_t m = 0; m < M; m++) {
                    double s = sh ? sh[d * M + m] : 0;
                    for (int64_t j = 0; j < limit; j++) s += fk[j][d] * vh[j * M + m];
                    sn[((b * H + h) * D + d) * M + m] = s;
                }
            }
        }
}

/* The scalar loss sum(dout * out) + sum(gs * S_N) + sum(gz * z_N) (gs, gz NULL: not in the loss). */
typedef struct {
    const config *c;
    double *q, *k, *v, *s0, *z0;          /* the inputs, perturbed in place by the difference quotient */
    const double *dout, *gs, *gz;
} loss_inputs;

static double loss(const loss_inputs *in) {
    int64_t n = in->c->n;
    double *out = malloc(sizeof(double) * B * H * n * M), sn[B * H * D * M], zn[B * H * D];
    reference(in->c, in->q, in->k, in->v, in->s0, in->z0, out, sn, zn);
    double total = 0;
    for (int64_t i = 0; i < B * H * n * M; i++) total += in->dout[i] * out[i];
    if (in->gs) for (int64_t i = 0; i < B * H * D * M; i++) total += in->gs[i] * sn[i];
    if (in->gz) for (int64_t i = 0; i < B * H * D; i++) total += in->gz[i] * zn[i];
    free(out);
    return total;
}

/* Central differences of loss() w.r.t. every element of x (count elements) into grad. */
static void numeric_gradient(const loss_inputs *in, double *x, int64_t count, double *grad) {
    const double step = 1e-6;
    for (int64_t i = 0; i < count; i++) {
        double saved = x[i];
        x[i] = saved + step;
        double up = loss(in);
        x[i] = saved - step;
        double down = loss(in);
        x[i] = saved;
        grad[i] = (up - down) / (2 * step);
    }
}

/* ---------------------------------------------------------------- results against the reference */

static void results(int dtype, int fmap, int causal, int with_lengths, int with_state) {
    config c = {causal, fmap, fmap == PERFORMER_FEATURE_IDENTITY ? 0.0 : 1e-6, NULL, 6, causal ? 6 : 9, 0, NULL};
    int64_t lengths[B] = {causal ? 4 : 7, c.l};
    if (with_lengths) { c.lengths = lengths; if (fmap != PERFORMER_FEATURE_IDENTITY) lengths[1] = 0; }
    int stated = causal && with_state;
    int positive = fmap == PERFORMER_FEATURE_IDENTITY;
    char what[128];
    snprintf(what, sizeof what, "%s fmap=%d causal=%d lengths=%d state=%d", dtype ? "float64" : "float32", fmap, causal,
             with_lengths, stated);

    performer_tensor_t q = tensor_new(dtype, B, H, c.n, D), k = tensor_new(dtype, B, HK, c.l, D);
    performer_tensor_t v = tensor_new(dtype, B, HK, c.l, M), out = tensor_new(dtype, B, H, c.n, M);
    performer_tensor_t dout = tensor_new(dtype, B, H, c.n, M);
    performer_tensor_t s0 = tensor_new(dtype, B, H, D, M), z0 = tensor_new(dtype, B, H, D, 1);
    performer_tensor_t sn = tensor_new(dtype, B, H, D, M), zn = tensor_new(dtype, B, H, D, 1);
    performer_tensor_t gs = tensor_new(dtype, B, H, D, M), gz = tensor_new(dtype, B, H, D, 1);
    performer_tensor_t ds0 = tensor_new(dtype, B, H, D, M), dz0 = tensor_new(dtype, B, H, D, 1);
    performer_tensor_t dq = tensor_new(dtype, B, H, c.n, D), dk = tensor_new(dtype, B, HK, c.l, D);
    performer_tensor_t dv = tensor_new(dtype, B, HK, c.l, M);
    fill(&q, 1, positive); fill(&k, 2, positive); fill(&v, 3, 0); fill(&dout, 4, 0);
    fill(&s0, 5, 0); fill(&z0, 6, 1); fill(&gs, 7, 0); fill(&gz, 8, 0);
    /* S_0 = sum of phi(k) v^T over some earlier keys keeps z_0 >= 0; any values are valid math. */

    performer_linear_options_t o;
    performer_linear_options_init(&o);
    o.causal = causal; o.feature_map = fmap; o.eps = c.eps; o.kv_lengths = c.lengths;

    double *qd = doubles_of(&q), *kd = doubles_of(&k), *vd = doubles_of(&v), *doutd = doubles_of(&dout);
    double *s0d = doubles_of(&s0), *z0d = doubles_of(&z0), *gsd = doubles_of(&gs), *gzd = doubles_of(&gz);
    double *ref_out = malloc(sizeof(double) * B * H * c.n * M), ref_sn[B * H * D * M], ref_zn[B * H * D];
    reference(&c, qd, kd, vd, stated ? s0d : NULL, stated ? z0d : NULL, ref_out, ref_sn, ref_zn);

    double tol = dtype == PERFORMER_FLOAT32 ? 1e-5 : 1e-12;
    performer_status s = performer_linear_forward(&q, &k, &v, &out, stated ? &s0 : NULL, stated ? &z0 : NULL,
                                                  causal ? &sn : NULL, causal ? &zn : NULL, &o);
    CHECK(s == PERFORMER_OK, "%s forward: %s", what, performer_last_error());
    double e = rel_error(&out, ref_out);
    CHECK(e <= tol, "%s forward: out relative error %g", what, e);
    if (causal) {
        double es = rel_error(&sn, ref_sn), ez = rel_error(&zn, ref_zn);
        CHECK(es <= tol && ez <= tol, "%s forward: final state errors %g %g", what, es, ez);
    }

    /* Backward against finite differences of the reference (float64 throughout). */
    loss_inputs in = {&c, qd, kd, vd, stated ? s0d : NULL, stated ? z0d : NULL, doutd,
                      causal ? gsd : NULL, causal ? gzd : NULL};
    double *nq = malloc(sizeof(double) * B * H * c.n * D), *nk = malloc(sizeof(double) * B * HK * c.l * D);
    double *nv = malloc(sizeof(double) * B * HK * c.l * M), ns0[B * H * D * M], nz0[B * H * D];
    numeric_gradient(&in, qd, B * H * c.n * D, nq);
    numeric_gradient(&in, kd, B * HK * c.l * D, nk);
    numeric_gradient(&in, vd, B * HK * c.l * M, nv);
    if (stated) {
        numeric_gradient(&in, s0d, B * H * D * M, ns0);
        numeric_gradient(&in, z0d, B * H * D, nz0);
    }
    s = performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, stated ? &s0 : NULL, stated ? &z0 : NULL,
                                  causal ? &gs : NULL, causal ? &gz : NULL, stated ? &ds0 : NULL, stated ? &dz0 : NULL,
                                  &o);
    CHECK(s == PERFORMER_OK, "%s backward: %s", what, performer_last_error());
    double gtol = dtype == PERFORMER_FLOAT32 ? 1e-4 : 1e-6;
    double e1 = rel_error(&dq, nq), e2 = rel_error(&dk, nk), e3 = rel_error(&dv, nv);
    CHECK(e1 <= gtol && e2 <= gtol && e3 <= gtol, "%s backward vs finite differences: dq %g dk %g dv %g", what, e1, e2, e3);
    if (stated) {
        double e4 = rel_error(&ds0, ns0), e5 = rel_error(&dz0, nz0);
        CHECK(e4 <= gtol && e5 <= gtol, "%s backward: dS0 %g dz0 %g", what, e4, e5);
    }

    /* Strided views: q and out as B x N x H x features buffers; S_0 and S_N transposed (M x C). */
    performer_tensor_t qs = tensor_new(dtype, B, c.n, H, D), os = tensor_new(dtype, B, c.n, H, M);
    performer_tensor_t s0t = tensor_new(dtype, B, H, M, D), snt = tensor_new(dtype, B, H, M, D);
    int64_t t;
    t = qs.strides[1]; qs.strides[1] = qs.strides[2]; qs.strides[2] = t; qs.shape[1] = H; qs.shape[2] = c.n;
    t = os.strides[1]; os.strides[1] = os.strides[2]; os.strides[2] = t; os.shape[1] = H; os.shape[2] = c.n;
    t = s0t.strides[2]; s0t.strides[2] = s0t.strides[3]; s0t.strides[3] = t; s0t.shape[2] = D; s0t.shape[3] = M;
    t = snt.strides[2]; snt.strides[2] = snt.strides[3]; snt.strides[3] = t; snt.shape[2] = D; snt.shape[3] = M;
    FOR4(&q) set_at(&qs, i0, i1, i2, i3, at(&q, i0, i1, i2, i3));
    FOR4(&s0) set_at(&s0t, i0, i1, i2, i3, at(&s0, i0, i1, i2, i3));
    s = performer_linear_forward(&qs, &k, &v, &os, stated ? &s0t : NULL, stated ? &z0 : NULL, causal ? &snt : NULL,
                                 causal ? &zn : NULL, &o);
    CHECK(s == PERFORMER_OK, "%s strided forward: %s", what, performer_last_error());
    e = rel_error(&os, ref_out);
    CHECK(e <= tol, "%s strided forward: error %g", what, e);
    if (causal) CHECK(rel_error(&snt, ref_sn) <= tol, "%s strided final state", what);

    /* Pieces: positions [0, 2) then [2, n) carrying the state = one call. */
    if (causal && !with_lengths) {
        performer_tensor_t mid_s = tensor_new(dtype, B, H, D, M), mid_z = tensor_new(dtype, B, H, D, 1);
        performer_tensor_t piece_out = tensor_new(dtype, B, H, c.n, M);
        performer_tensor_t q1 = positions(&q, 0, 2), k1 = positions(&k, 0, 2), v1 = positions(&v, 0, 2);
        performer_tensor_t o1 = positions(&piece_out, 0, 2);
        performer_tensor_t q2 = positions(&q, 2, c.n), k2 = positions(&k, 2, c.n), v2 = positions(&v, 2, c.n);
        performer_tensor_t o2 = positions(&piece_out, 2, c.n);
        s = performer_linear_forward(&q1, &k1, &v1, &o1, stated ? &s0 : NULL, stated ? &z0 : NULL, &mid_s, &mid_z, &o);
        performer_status s2 = performer_linear_forward(&q2, &k2, &v2, &o2, &mid_s, &mid_z, &sn, &zn, &o);
        CHECK(s == PERFORMER_OK && s2 == PERFORMER_OK, "%s pieces: %s", what, performer_last_error());
        e = rel_error(&piece_out, ref_out);
        CHECK(e <= tol, "%s pieces with carried state: error %g", what, e);
        CHECK(rel_error(&sn, ref_sn) <= tol && rel_error(&zn, ref_zn) <= tol, "%s pieces: final state", what);
        free(mid_s.data); free(mid_z.data); free(piece_out.data);
    }

    performer_tensor_t *all[] = {&q, &k, &v, &out, &dout, &s0, &z0, &sn, &zn, &gs, &gz, &ds0, &dz0, &dq, &dk, &dv,
                                 &qs, &os, &s0t, &snt};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->data);
    free(qd); free(kd); free(vd); free(doutd); free(s0d); free(z0d); free(gsd); free(gzd);
    free(ref_out); free(nq); free(nk); free(nv);
}

/* Padded keys must not change any unpadded output, whatever their values. */
static void padding_has_no_effect(void) {
    enum { n = 7 };
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT64, B, H, n, D), k = tensor_new(PERFORMER_FLOAT64, B, HK, n, D);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT64, B, HK, n, M);
    performer_tensor_t o1 = tensor_new(PERFORMER_FLOAT64, B, H, n, M), o2 = tensor_new(PERFORMER_FLOAT64, B, H, n, M);
    fill(&q, 21, 0);
    const int64_t lengths[B] = {3, 5};
    performer_linear_options_t o;
    performer_linear_options_init(&o);
    o.kv_lengths = lengths;
    for (int causal = 0; causal < 2; causal++) {
        o.causal = causal;
        fill(&k, 22, 0); fill(&v, 23, 0);
        CHECK(performer_linear_forward(&q, &k, &v, &o1, NULL, NULL, NULL, NULL, &o) == PERFORMER_OK, "padding 1");
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < HK; h++)
                for (int64_t j = lengths[b]; j < n; j++) {
                    for (int64_t d = 0; d < D; d++) set_at(&k, b, h, j, d, 100.0 * (double)(j + d));
                    for (int64_t m = 0; m < M; m++) set_at(&v, b, h, j, m, -1e6);
                }
        CHECK(performer_linear_forward(&q, &k, &v, &o2, NULL, NULL, NULL, NULL, &o) == PERFORMER_OK, "padding 2");
        CHECK(memcmp(o1.data, o2.data, sizeof(double) * B * H * n * M) == 0,
              "causal=%d: padded keys changed an output", causal);
    }
    free(q.data); free(k.data); free(v.data); free(o1.data); free(o2.data);
}

/* kv_starts through the ABI: each batch row equals the call on its unpadded keys alone
 * (non-causal: keys [start, length); causal, N = L: left padding, queries from the start on),
 * padded keys get dk = dv = 0, and an empty range is allowed. */
static void key_starts(void) {
    enum { n = 8 };
    const int f = PERFORMER_FLOAT64;
    const int64_t starts[B] = {3, 8}, lengths[B] = {7, 8};
    for (int causal = 0; causal < 2; causal++) {
        performer_tensor_t q = tensor_new(f, B, H, n, D), k = tensor_new(f, B, HK, n, D), v = tensor_new(f, B, HK, n, M);
        performer_tensor_t dout = tensor_new(f, B, H, n, M), out = tensor_new(f, B, H, n, M);
        performer_tensor_t dq = tensor_new(f, B, H, n, D), dk = tensor_new(f, B, HK, n, D), dv = tensor_new(f, B, HK, n, M);
        fill(&q, 31, 0); fill(&k, 32, 0); fill(&v, 33, 0); fill(&dout, 34, 0);
        performer_linear_options_t o;
        performer_linear_options_init(&o);
        o.causal = causal;
        o.kv_starts = starts;
        o.kv_lengths = causal ? NULL : lengths;
        OK(performer_linear_forward(&q, &k, &v, &out, NULL, NULL, NULL, NULL, &o), "kv_starts forward");
        OK(performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, &o),
           "kv_starts backward");
        const int64_t ends[B] = {causal ? n : lengths[0], causal ? n : lengths[1]};
        CHECK(padded_rows_zero(&dk, starts, ends) && padded_rows_zero(&dv, starts, ends),
              "causal=%d: a padded key has a gradient", causal);
        for (int64_t b = 0; b < B; b++) {
            int64_t s = starts[b], e = ends[b], first = causal ? s : 0;
            if (e == s) continue; /* every key masked: covered by the zero checks above */
            performer_tensor_t qb = batch_rows(&q, b, first, n), kb = batch_rows(&k, b, s, e);
            performer_tensor_t vb = batch_rows(&v, b, s, e), doutb = batch_rows(&dout, b, first, n);
            performer_tensor_t out1 = tensor_new(f, 1, H, n - first, M), dq1 = tensor_new(f, 1, H, n - first, D);
            performer_tensor_t dk1 = tensor_new(f, 1, HK, e - s, D), dv1 = tensor_new(f, 1, HK, e - s, M);
            performer_linear_options_t o1;
            performer_linear_options_init(&o1);
            o1.causal = causal;
            OK(performer_linear_forward(&qb, &kb, &vb, &out1, NULL, NULL, NULL, NULL, &o1), "unpadded forward");
            OK(performer_linear_backward(&qb, &kb, &vb, &doutb, &dq1, &dk1, &dv1, NULL, NULL, NULL, NULL, NULL, NULL, &o1),
               "unpadded backward");
            double e1 = batch_rows_difference(&out, b, first, &out1), e2 = batch_rows_difference(&dq, b, first, &dq1);
            double e3 = batch_rows_difference(&dk, b, s, &dk1), e4 = batch_rows_difference(&dv, b, s, &dv1);
            CHECK(e1 <= 1e-12 && e2 <= 1e-12 && e3 <= 1e-12 && e4 <= 1e-12,
                  "causal=%d b=%lld: vs unpadded rows: out %g dq %g dk %g dv %g", causal, (long long)b, e1, e2, e3, e4);
            free(out1.data); free(dq1.data); free(dk1.data); free(dv1.data);
        }
        free(q.data); free(k.data); free(v.data); free(dout.data); free(out.data);
        free(dq.data); free(dk.data); free(dv.data);
    }
}

/* ---------------------------------------------------------------- errors */

/* The call failed with `want`, its message contains `needle`, and every tensor in `outputs`
 * still holds SENTINEL. */
static void expect_error(const char *what, performer_status got, performer_status want, const char *needle,
                         performer_tensor_t *const *outputs, int count) {
    expect_status(what, got, want, needle);
    for (int i = 0; i < count; i++) CHECK(is_value(outputs[i], SENTINEL), "%s: output %d was written on error", what, i);
}

static void forward_errors(void) {
    enum { n = 5 };
    const int f = PERFORMER_FLOAT32;
    performer_tensor_t q = tensor_new(f, B, H, n, D), k = tensor_new(f, B, HK, n, D), v = tensor_new(f, B, HK, n, M);
    performer_tensor_t out = tensor_new(f, B, H, n, M), s0 = tensor_new(f, B, H, D, M), z0 = tensor_new(f, B, H, D, 1);
    performer_tensor_t sn = tensor_new(f, B, H, D, M), zn = tensor_new(f, B, H, D, 1);
    fill(&q, 1, 0); fill(&k, 2, 0); fill(&v, 3, 0); fill(&s0, 4, 0); fill(&z0, 5, 1);
    fill_value(&out, SENTINEL); fill_value(&sn, SENTINEL); fill_value(&zn, SENTINEL);
    /* Descriptors of the outputs as allocated (the tests below change the ones they pass). */
    performer_tensor_t pristine[] = {out, sn, zn};
    performer_tensor_t *outs[] = {&pristine[0], &pristine[1], &pristine[2]};
    performer_linear_options_t o;
    performer_linear_options_init(&o);
    o.causal = 1;
    performer_tensor_t saved;
    char what[96];

#define FWD(qq, kk, vv, oo, a, b, c2, d2, opt) performer_linear_forward(qq, kk, vv, oo, a, b, c2, d2, opt)
    expect_error("q NULL", FWD(NULL, &k, &v, &out, &s0, &z0, &sn, &zn, &o), PERFORMER_ERROR_NULL_POINTER, "q is NULL", outs, 3);
    expect_error("k NULL", FWD(&q, NULL, &v, &out, &s0, &z0, &sn, &zn, &o), PERFORMER_ERROR_NULL_POINTER, "k is NULL", outs, 3);
    expect_error("v NULL", FWD(&q, &k, NULL, &out, &s0, &z0, &sn, &zn, &o), PERFORMER_ERROR_NULL_POINTER, "v is NULL", outs, 3);
    expect_error("out NULL", FWD(&q, &k, &v, NULL, &s0, &z0, &sn, &zn, &o), PERFORMER_ERROR_NULL_POINTER, "out is NULL", outs, 3);
    expect_error("z0 without S0", FWD(&q, &k, &v, &out, NULL, &z0, &sn, &zn, &o), PERFORMER_ERROR_NULL_POINTER,
                 "S0 is NULL but z0 is not", outs, 3);
    expect_error("S0 without z0", FWD(&q, &k, &v, &out, &s0, NULL, &sn, &zn, &o), PERFORMER_ERROR_NULL_POINTER,
                 "z0 is NULL but S0 is not", outs, 3);
    expect_error("S_N without z_N", FWD(&q, &k, &v, &out, &s0, &z0, &sn, NULL, &o), PERFORMER_ERROR_NULL_POINTER,
                 "z_N is NULL", outs, 3);
    saved = s0; s0.data = NULL;
    expect_error("S0.data NULL", FWD(&q, &k, &v, &out, &s0, &z0, &sn, &zn, &o), PERFORMER_ERROR_NULL_POINTER,
                 "S0.data is NULL", outs, 3);
    s0 = saved;

    /* State shapes that do not match B x H x C x M / B x H x C x 1. */
    struct { performer_tensor_t *t; int axis; int64_t value; const char *needle; } shapes[] = {
        {&s0, 2, D - 1, "S0.shape[2] = 3"}, {&s0, 3, M + 1, "S0.shape[3] = 4"}, {&s0, 1, HK, "S0.shape[1] = 2"},
        {&z0, 3, 2, "z0.shape[3] = 2"},     {&z0, 0, 1, "z0.shape[0] = 1"},     {&sn, 3, M - 1, "S_N.shape[3] = 2"},
        {&zn, 2, D + 1, "z_N.shape[2] = 5"},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        saved = *shapes[i].t;
        shapes[i].t->shape[shapes[i].axis] = shapes[i].value;
        expect_error(shapes[i].needle, FWD(&q, &k, &v, &out, &s0, &z0, &sn, &zn, &o), PERFORMER_ERROR_SHAPE_MISMATCH,
                     shapes[i].needle, outs, 3);
        *shapes[i].t = saved;
    }
    saved = z0; z0.dtype = PERFORMER_FLOAT64;
    expect_error("z0 float64", FWD(&q, &k, &v, &out, &s0, &z0, &sn, &zn, &o), PERFORMER_ERROR_DTYPE_MISMATCH,
                 "z0.dtype = float64 but q.dtype = float32", outs, 3);
    z0 = saved;
    saved = sn; sn.reserved = 3;
    expect_error("S_N reserved", FWD(&q, &k, &v, &out, &s0, &z0, &sn, &zn, &o), PERFORMER_ERROR_INVALID_ARGUMENT,
                 "S_N.reserved = 3", outs, 3);
    sn = saved;

    /* Causal needs N = L. */
    performer_tensor_t k4 = positions(&k, 0, n - 1), v4 = positions(&v, 0, n - 1);
    expect_error("causal N != L", FWD(&q, &k4, &v4, &out, NULL, NULL, NULL, NULL, &o), PERFORMER_ERROR_SHAPE_MISMATCH,
                 "causal linear attention needs as many queries as keys", outs, 3);
    performer_tensor_t k3 = k, v3 = v;
    k3.shape[1] = 3; v3.shape[1] = 3;
    expect_error("H % Hk", FWD(&q, &k3, &v3, &out, NULL, NULL, NULL, NULL, &o), PERFORMER_ERROR_SHAPE_MISMATCH,
                 "is not a multiple of k.shape[1] = 3", outs, 3);

    /* eps, feature map, key lengths, options size. */
    const double bad_eps[] = {-1e-6, -INFINITY, INFINITY, NAN};
    for (int i = 0; i < 4; i++) {
        o.eps = bad_eps[i];
        snprintf(what, sizeof what, "eps %g", bad_eps[i]);
        expect_error(what, FWD(&q, &k, &v, &out, &s0, &z0, &sn, &zn, &o), PERFORMER_ERROR_INVALID_ARGUMENT, "eps = ",
                     outs, 3);
    }
    performer_linear_options_init(&o);
    o.causal = 1;
    const int bad_maps[] = {3, -1, 1000};
    for (int i = 0; i < 3; i++) {
        o.feature_map = bad_maps[i];
        snprintf(what, sizeof what, "feature_map %d", bad_maps[i]);
        char needle[64];
        snprintf(needle, sizeof needle, "options->feature_map = %d is not a performer_feature_map", bad_maps[i]);
        expect_error(what, FWD(&q, &k, &v, &out, &s0, &z0, &sn, &zn, &o), PERFORMER_ERROR_INVALID_ARGUMENT, needle,
                     outs, 3);
    }
    o.feature_map = PERFORMER_FEATURE_RELU;
    const int64_t bad_lengths[B] = {2, n + 1};
    o.kv_lengths = bad_lengths;
    expect_error("kv_lengths", FWD(&q, &k, &v, &out, &s0, &z0, &sn, &zn, &o), PERFORMER_ERROR_INVALID_ARGUMENT,
                 "kv_lengths[1] = 6", outs, 3);
    o.kv_lengths = NULL;
    /* kv_starts: each in 0..L and at most its row's length; nothing written. */
    const int64_t starts_lengths[B] = {2, 5};
    const int64_t bad_starts[][B] = {{3, -1}, {6, 0}, {3, 0}};
    const char *start_needles[] = {"kv_starts[1] = -1 is not in 0...5", "kv_starts[0] = 6 is not in 0...5",
                                   "kv_starts[0] = 3 is past kv_lengths[0] = 2"};
    for (int i = 0; i < 3; i++) {
        o.kv_starts = bad_starts[i];
        o.kv_lengths = i == 2 ? starts_lengths : NULL;
        expect_error(start_needles[i], FWD(&q, &k, &v, &out, &s0, &z0, &sn, &zn, &o), PERFORMER_ERROR_INVALID_ARGUMENT,
                     start_needles[i], outs, 3);
    }
    /* The struct before kv_starts (ending at kv_lengths) is still accepted; its kv_starts
     * bytes are not read (a bogus pointer there would crash or change the result). */
    o.kv_lengths = starts_lengths;
    o.kv_starts = NULL;
    performer_tensor_t out_new = tensor_new(f, B, H, n, M), out_old = tensor_new(f, B, H, n, M);
    OK(FWD(&q, &k, &v, &out_new, NULL, NULL, NULL, NULL, &o), "current-size options");
    o.size = offsetof(performer_linear_options_t, kv_starts);
    o.kv_starts = (const int64_t *)(uintptr_t)16;
    OK(FWD(&q, &k, &v, &out_old, NULL, NULL, NULL, NULL, &o), "old-size options");
    CHECK(memcmp(out_new.data, out_old.data, sizeof(float) * B * H * n * M) == 0, "old-size options: another result");
    free(out_new.data); free(out_old.data);
    performer_linear_options_init(&o);
    o.causal = 1;
    o.feature_map = PERFORMER_FEATURE_RELU;
    size_t bad_sizes[] = {0, 8, offsetof(performer_linear_options_t, kv_lengths), sizeof(performer_linear_options_t) + 8,
                          sizeof(performer_softmax_options_t) + 1};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        o.size = bad_sizes[i];
        snprintf(what, sizeof what, "options.size %zu", bad_sizes[i]);
        expect_error(what, FWD(&q, &k, &v, &out, &s0, &z0, &sn, &zn, &o), PERFORMER_ERROR_UNSUPPORTED_VERSION,
                     "performer_linear_options_t", outs, 3);
    }
    performer_linear_options_init(&o);
    o.causal = 1;

    /* Aliasing: the final state over the initial one, over out, or S_N over z_N. */
    expect_error("S_N = S0", FWD(&q, &k, &v, &out, &s0, &z0, &s0, &zn, &o), PERFORMER_ERROR_ALIASING, "S_N overlaps input S0",
                 outs, 3);
    performer_tensor_t zn_in_sn = zn;
    zn_in_sn.data = (float *)sn.data + 2;
    fill_value(&zn_in_sn, SENTINEL);
    expect_error("z_N in S_N", FWD(&q, &k, &v, &out, &s0, &z0, &sn, &zn_in_sn, &o), PERFORMER_ERROR_ALIASING, "overlaps output",
                 outs, 3);
    performer_tensor_t sn_over_out = sn;
    sn_over_out.data = out.data;
    expect_error("S_N over out", FWD(&q, &k, &v, &out, &s0, &z0, &sn_over_out, &zn, &o), PERFORMER_ERROR_ALIASING,
                 "overlaps output", outs, 3);
    performer_tensor_t self = zn;
    self.strides[2] = 0;
    expect_error("z_N zero stride", FWD(&q, &k, &v, &out, &s0, &z0, &sn, &self, &o), PERFORMER_ERROR_ALIASING, "z_N.strides",
                 outs, 3);
#undef FWD

    /* The defaults with options NULL: non-causal elu+1, eps 1e-6. */
    performer_status s = performer_linear_forward(&q, &k, &v, &out, NULL, NULL, NULL, NULL, NULL);
    CHECK(s == PERFORMER_OK, "options NULL: %s", performer_last_error());
    CHECK(!is_value(&out, SENTINEL), "options NULL wrote no output");

    /* Backward: required arguments, half pairs, dS0 shape, dtype. */
    performer_tensor_t dout = tensor_new(f, B, H, n, M), dq = tensor_new(f, B, H, n, D);
    performer_tensor_t dk = tensor_new(f, B, HK, n, D), dv = tensor_new(f, B, HK, n, M);
    performer_tensor_t ds0 = tensor_new(f, B, H, D, M), dz0 = tensor_new(f, B, H, D, 1);
    fill(&dout, 9, 0);
    fill_value(&dq, SENTINEL); fill_value(&dk, SENTINEL); fill_value(&dv, SENTINEL);
    fill_value(&ds0, SENTINEL); fill_value(&dz0, SENTINEL);
    performer_tensor_t bpristine[] = {dq, dk, dv, ds0, dz0};
    performer_tensor_t *bouts[] = {&bpristine[0], &bpristine[1], &bpristine[2], &bpristine[3], &bpristine[4]};
    performer_tensor_t *args[] = {&q, &k, &v, &dout, &dq, &dk, &dv};
    const char *names[] = {"q", "k", "v", "dout", "dq", "dk", "dv"};
    for (int i = 0; i < 7; i++) {
        performer_tensor_t *a[7];
        for (int j = 0; j < 7; j++) a[j] = j == i ? NULL : args[j];
        char needle[32];
        snprintf(what, sizeof what, "backward %s NULL", names[i]);
        snprintf(needle, sizeof needle, "%s is NULL", names[i]);
        expect_error(what, performer_linear_backward(a[0], a[1], a[2], a[3], a[4], a[5], a[6], &s0, &z0, &sn, &zn, &ds0, &dz0, &o),
                     PERFORMER_ERROR_NULL_POINTER, needle, bouts, 5);
    }
    expect_error("backward dz0 without dS0",
                 performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, &s0, &z0, NULL, NULL, NULL, &dz0, &o),
                 PERFORMER_ERROR_NULL_POINTER, "dS0 is NULL but dz0 is not", bouts, 5);
    expect_error("backward dS_N without dz_N",
                 performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, &s0, &z0, &sn, NULL, &ds0, &dz0, &o),
                 PERFORMER_ERROR_NULL_POINTER, "dz_N is NULL but dS_N is not", bouts, 5);
    saved = ds0; ds0.shape[3] = M + 2;
    expect_error("backward dS0 shape",
                 performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, &s0, &z0, NULL, NULL, &ds0, &dz0, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "dS0.shape[3] = 5", bouts, 5);
    ds0 = saved;
    saved = dz0; dz0.shape[2] = 1;
    expect_error("backward dz0 shape",
                 performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, &s0, &z0, NULL, NULL, &ds0, &dz0, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "dz0.shape[2] = 1", bouts, 5);
    dz0 = saved;
    saved = sn; sn.shape[1] = 1;
    expect_error("backward dS_N shape",
                 performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, &s0, &z0, &sn, &zn, &ds0, &dz0, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "dS_N.shape[1] = 1", bouts, 5);
    sn = saved;
    saved = dv; dv.shape[3] = M - 1;
    expect_error("backward dv shape",
                 performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "dv.shape[3] = 2", bouts, 5);
    dv = saved;
    saved = dz0; dz0.dtype = PERFORMER_FLOAT64;
    expect_error("backward dz0 float64",
                 performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, &s0, &z0, NULL, NULL, &ds0, &dz0, &o),
                 PERFORMER_ERROR_DTYPE_MISMATCH, "dz0.dtype = float64", bouts, 5);
    dz0 = saved;
    expect_error("backward dS0 over S0",
                 performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, &s0, &z0, NULL, NULL, &s0, &dz0, &o),
                 PERFORMER_ERROR_ALIASING, "dS0 overlaps input S0", bouts, 5);
    o.causal = 1; o.eps = -1;
    expect_error("backward eps -1",
                 performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_INVALID_ARGUMENT, "eps = -1", bouts, 5);
    o.eps = 0; o.size = 4;
    expect_error("backward options size 4",
                 performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, &o),
                 PERFORMER_ERROR_UNSUPPORTED_VERSION, "options->size = 4", bouts, 5);

    performer_tensor_t *all[] = {&q, &k, &v, &out, &s0, &z0, &sn, &zn, &dout, &dq, &dk, &dv, &ds0, &dz0};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->data);
}

static void options_init(void) {
    performer_linear_options_t o;
    memset(&o, 0xAB, sizeof o);
    performer_linear_options_init(&o);
    CHECK(o.size == sizeof o && o.causal == 0 && o.feature_map == PERFORMER_FEATURE_ELU_PLUS_ONE && o.eps == 1e-6 &&
              o.kv_lengths == NULL && o.kv_starts == NULL && o.normalize == 1,
          "performer_linear_options_init defaults");
    performer_linear_options_init(NULL);
    CHECK(1, "performer_linear_options_init(NULL) returned");
}

/* ---------------------------------------------------------------- un-normalized, state only, memory */

/* normalize = 0 with the denominators output (mixed-sign identity features; causal, and
 * non-causal against a memory state); an options struct of the size before `normalize` gets
 * normalize = 1; performer_linear_state equals the reference's final state (Hs = H from S0, and
 * Hs = Hk) and its backward the direct formulas; state-call errors. */
static void unnormalized_and_state(int dtype) {
    enum { n = 6 };
    const char *name = dtype ? "float64" : "float32";
    double tol = dtype == PERFORMER_FLOAT32 ? 1e-5 : 1e-12;
    performer_tensor_t q = tensor_new(dtype, B, H, n, D), k = tensor_new(dtype, B, HK, n, D), v = tensor_new(dtype, B, HK, n, M);
    performer_tensor_t out = tensor_new(dtype, B, H, n, M), den = tensor_new(dtype, B, H, n, 1);
    performer_tensor_t s0 = tensor_new(dtype, B, H, D, M), z0 = tensor_new(dtype, B, H, D, 1);
    fill(&q, 21, 0); fill(&k, 22, 0); fill(&v, 23, 0); fill(&s0, 24, 0); fill(&z0, 25, 0);
    double *qd = doubles_of(&q), *kd = doubles_of(&k), *vd = doubles_of(&v), *s0d = doubles_of(&s0), *z0d = doubles_of(&z0);
    double ref_out[B * H * n * M], ref_den[B * H * n], ref_sn[B * H * D * M], ref_zn[B * H * D];
    const int64_t lengths[B] = {n, 3};
    performer_linear_options_t o;
    for (int causal = 0; causal < 2; causal++) {
        config c = {causal, PERFORMER_FEATURE_IDENTITY, 0.5, lengths, n, n, 1, ref_den};
        reference(&c, qd, kd, vd, s0d, z0d, ref_out, NULL, NULL);
        performer_linear_options_init(&o);
        o.causal = causal; o.feature_map = PERFORMER_FEATURE_IDENTITY; o.eps = 0.5; o.kv_lengths = lengths;
        o.normalize = 0;
        performer_status st = performer_linear_forward_with_denominators(&q, &k, &v, &out, &s0, &z0, NULL, NULL, &den, &o);
        CHECK(st == PERFORMER_OK, "%s unnormalized causal=%d: %s", name, causal, performer_last_error());
        CHECK(rel_error(&out, ref_out) <= tol, "%s unnormalized causal=%d: out error %g", name, causal, rel_error(&out, ref_out));
        CHECK(rel_error(&den, ref_den) <= tol, "%s unnormalized causal=%d: den error %g", name, causal, rel_error(&den, ref_den));
    }

    /* The size before `normalize`: normalize = 0 in the bytes past it must be ignored. */
    config cn = {1, PERFORMER_FEATURE_ELU_PLUS_ONE, 1e-6, NULL, n, n, 0, NULL};
    reference(&cn, qd, kd, vd, NULL, NULL, ref_out, NULL, NULL);
    performer_linear_options_init(&o);
    o.causal = 1; o.normalize = 0;
    o.size = offsetof(performer_linear_options_t, normalize);
    CHECK(performer_linear_forward(&q, &k, &v, &out, NULL, NULL, NULL, NULL, &o) == PERFORMER_OK, "%s old options size: %s",
          name, performer_last_error());
    CHECK(rel_error(&out, ref_out) <= tol, "%s old options size normalizes: error %g", name, rel_error(&out, ref_out));

    /* State only, Hs = H from S0 (elu+1, key lengths): the reference's final state. */
    config cs = {1, PERFORMER_FEATURE_ELU_PLUS_ONE, 1e-6, lengths, n, n, 0, NULL};
    reference(&cs, qd, kd, vd, s0d, z0d, ref_out, ref_sn, ref_zn);
    performer_linear_options_init(&o);
    o.kv_lengths = lengths;
    performer_tensor_t sn = tensor_new(dtype, B, H, D, M), zn = tensor_new(dtype, B, H, D, 1);
    CHECK(performer_linear_state(&k, &v, &s0, &z0, &sn, &zn, &o) == PERFORMER_OK, "%s state: %s", name, performer_last_error());
    CHECK(rel_error(&sn, ref_sn) <= tol && rel_error(&zn, ref_zn) <= tol, "%s state: errors %g %g", name,
          rel_error(&sn, ref_sn), rel_error(&zn, ref_zn));
    /* In place over S0, z0 (same layout). */
    CHECK(performer_linear_state(&k, &v, &s0, &z0, &s0, &z0, &o) == PERFORMER_OK, "%s state in place: %s", name,
          performer_last_error());
    CHECK(rel_error(&s0, ref_sn) <= tol && rel_error(&z0, ref_zn) <= tol, "%s state in place", name);
    /* Hs = Hk from zeros: the key sums, the same for every query head of a group. */
    performer_tensor_t sk = tensor_new(dtype, B, HK, D, M), zk = tensor_new(dtype, B, HK, D, 1);
    reference(&cs, qd, kd, vd, NULL, NULL, ref_out, ref_sn, ref_zn);
    CHECK(performer_linear_state(&k, &v, NULL, NULL, &sk, &zk, &o) == PERFORMER_OK, "%s state Hs = Hk: %s", name,
          performer_last_error());
    double worst = 0, scale = 1;
    FOR4(&sk) for (int g = 0; g < H / HK; g++)
        worst = fmax(worst, fabs(at(&sk, i0, i1, i2, i3) - ref_sn[((i0 * H + i1 * (H / HK) + g) * D + i2) * M + i3]));
    FOR4(&zk) for (int g = 0; g < H / HK; g++) {
        double want = ref_zn[(i0 * H + i1 * (H / HK) + g) * D + i2];
        worst = fmax(worst, fabs(at(&zk, i0, i1, i2, i3) - want));
        scale = fmax(scale, fabs(want));
    }
    CHECK(worst <= tol * scale, "%s state Hs = Hk: error %g", name, worst);

    /* Backward with Hs = H: dk = phi'(k) (sum over the group of dS v + dz), dv = sum of dS^T phi(k). */
    performer_tensor_t gs = tensor_new(dtype, B, H, D, M), gz = tensor_new(dtype, B, H, D, 1);
    performer_tensor_t dk = tensor_new(dtype, B, HK, n, D), dv = tensor_new(dtype, B, HK, n, M);
    performer_tensor_t ds0 = tensor_new(dtype, B, H, D, M), dz0 = tensor_new(dtype, B, H, D, 1);
    fill(&gs, 26, 0); fill(&gz, 27, 0);
    CHECK(performer_linear_state_backward(&k, &v, &gs, &gz, &dk, &dv, &ds0, &dz0, &o) == PERFORMER_OK,
          "%s state backward: %s", name, performer_last_error());
    double ref_dk[B * HK * n * D], ref_dv[B * HK * n * M];
    for (int64_t b = 0; b < B; b++)
        for (int64_t hk = 0; hk < HK; hk++)
            for (int64_t j = 0; j < n; j++) {
                const double *kj = kd + ((b * HK + hk) * n + j) * D, *vj = vd + ((b * HK + hk) * n + j) * M;
                int visible = j < lengths[b];
                for (int64_t d = 0; d < D; d++) {
                    double g = 0;
                    for (int64_t h = hk * (H / HK); h < (hk + 1) * (H / HK); h++) {
                        g += at(&gz, b, h, d, 0);
                        for (int64_t m = 0; m < M; m++) g += at(&gs, b, h, d, m) * vj[m];
                    }
                    ref_dk[((b * HK + hk) * n + j) * D + d] = visible ? (kj[d] > 0 ? 1 : exp(kj[d])) * g : 0;
                }
                for (int64_t m = 0; m < M; m++) {
                    double g = 0;
                    for (int64_t h = hk * (H / HK); h < (hk + 1) * (H / HK); h++)
                        for (int64_t d = 0; d < D; d++) g += at(&gs, b, h, d, m) * phi(PERFORMER_FEATURE_ELU_PLUS_ONE, kj[d]);
                    ref_dv[((b * HK + hk) * n + j) * M + m] = visible ? g : 0;
                }
            }
    double *gsd = doubles_of(&gs), *gzd = doubles_of(&gz);
    CHECK(rel_error(&dk, ref_dk) <= tol && rel_error(&dv, ref_dv) <= tol, "%s state backward: errors %g %g", name,
          rel_error(&dk, ref_dk), rel_error(&dv, ref_dv));
    CHECK(rel_error(&ds0, gsd) == 0 && rel_error(&dz0, gzd) == 0, "%s state backward: dS0 = dS, dz0 = dz", name);

    /* Errors: nothing written. */
    performer_tensor_t s3 = tensor_new(dtype, B, 3, D, M), z3 = tensor_new(dtype, B, 3, D, 1);
    fill_value(&sn, SENTINEL); fill_value(&zn, SENTINEL); fill_value(&dk, SENTINEL); fill_value(&dv, SENTINEL);
    performer_tensor_t *outs[] = {&sn, &zn, &dk, &dv};
    expect_error("state Hs = 3", performer_linear_state(&k, &v, NULL, NULL, &s3, &z3, &o), PERFORMER_ERROR_SHAPE_MISMATCH,
                 "S_out.shape[1] = 3", outs, 4);
    expect_error("state S_out NULL", performer_linear_state(&k, &v, NULL, NULL, NULL, &zn, &o), PERFORMER_ERROR_NULL_POINTER,
                 "S_out is NULL", outs, 4);
    performer_tensor_t s0t = s0; /* S0's memory with other strides: not an in-place update */
    s0t.strides[2] = 1; s0t.strides[3] = D;
    performer_tensor_t snt = sn;
    snt.data = s0.data;
    expect_error("state S_out over S0", performer_linear_state(&k, &v, &s0t, &z0, &snt, &zn, &o), PERFORMER_ERROR_ALIASING,
                 "overlaps input S0", outs, 4);
    expect_error("state backward dk over k", performer_linear_state_backward(&k, &v, &gs, &gz, &k, &dv, NULL, NULL, &o),
                 PERFORMER_ERROR_ALIASING, "dk", outs, 4);
    expect_error("state backward dS shape", performer_linear_state_backward(&k, &v, &s3, &gz, &dk, &dv, NULL, NULL, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "dS_out.shape[1]", outs, 4);

    performer_tensor_t *all[] = {&q, &k, &v, &out, &den, &s0, &z0, &sn, &zn, &sk, &zk, &gs, &gz, &dk, &dv, &ds0, &dz0, &s3, &z3};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->data);
    double *doubles[] = {qd, kd, vd, s0d, z0d, gsd, gzd};
    for (size_t i = 0; i < sizeof doubles / sizeof doubles[0]; i++) free(doubles[i]);
}

/* ---------------------------------------------------------------- the initial state's gradient, query side */

/* performer_linear_initial_state_gradient: against the float64 formula on the forward's own
 * out and denominators, and against performer_linear_backward's dS0, dz0 (GQA, causal and not,
 * every feature map, key lengths that it ignores); normalize = 0 with NULL denominators; a zero
 * denominator (relu, eps = 0, a query with no positive feature) adds nothing; strided dS0;
 * errors write nothing. */
static void initial_state_gradient(int dtype) {
    enum { n = 7 };
    const char *name = dtype ? "float64" : "float32";
    double tol = dtype == PERFORMER_FLOAT32 ? 2e-5 : 1e-11;
    performer_tensor_t q = tensor_new(dtype, B, H, n, D), k = tensor_new(dtype, B, HK, n, D), v = tensor_new(dtype, B, HK, n, M);
    performer_tensor_t out = tensor_new(dtype, B, H, n, M), den = tensor_new(dtype, B, H, n, 1), dout = tensor_new(dtype, B, H, n, M);
    performer_tensor_t s0 = tensor_new(dtype, B, H, D, M), z0 = tensor_new(dtype, B, H, D, 1);
    performer_tensor_t dq = tensor_new(dtype, B, H, n, D), dk = tensor_new(dtype, B, HK, n, D), dv = tensor_new(dtype, B, HK, n, M);
    performer_tensor_t bs = tensor_new(dtype, B, H, D, M), bz = tensor_new(dtype, B, H, D, 1);
    performer_tensor_t gs = tensor_new(dtype, B, H, D, M), gz = tensor_new(dtype, B, H, D, 1);
    /* dS0 transposed in memory (C x M seen through M x C storage): a strided output. */
    performer_tensor_t gst = tensor_new(dtype, B, H, M, D);
    gst.shape[2] = D; gst.shape[3] = M; gst.strides[2] = 1; gst.strides[3] = D;
    fill(&q, 31, 0); fill(&k, 32, 0); fill(&v, 33, 0); fill(&dout, 34, 0); fill(&s0, 35, 1); fill(&z0, 36, 1);
    const int64_t lengths[B] = {n, 4};
    performer_linear_options_t o;
    for (int fmap = 0; fmap < 3; fmap++)
        for (int causal = 0; causal < 2; causal++) {
            performer_linear_options_init(&o);
            o.causal = causal; o.feature_map = fmap; o.kv_lengths = lengths; o.eps = 0.25;
            if (fmap == PERFORMER_FEATURE_IDENTITY) { fill(&q, 31, 1); fill(&k, 32, 1); }
            OK(performer_linear_forward_with_denominators(&q, &k, &v, &out, &s0, &z0, NULL, NULL, &den, &o), "forward");
            OK(performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, &s0, &z0, NULL, NULL, &bs, &bz, &o), "backward");
            OK(performer_linear_initial_state_gradient(&q, &out, &dout, &den, &gst, &gz, &o), "initial_state_gradient");
            double ref_s[B * H * D * M] = {0}, ref_z[B * H * D] = {0};
            for (int64_t b = 0; b < B; b++)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t i = 0; i < n; i++) {
                        double d = at(&den, b, h, i, 0) + o.eps, w = 0;
                        for (int64_t m = 0; m < M; m++) w += at(&dout, b, h, i, m) / d * at(&out, b, h, i, m);
                        for (int64_t f = 0; f < D; f++) {
                            double p = phi(fmap, at(&q, b, h, i, f));
                            for (int64_t m = 0; m < M; m++) ref_s[((b * H + h) * D + f) * M + m] += p * at(&dout, b, h, i, m) / d;
                            ref_z[(b * H + h) * D + f] -= p * w;
                        }
                    }
            double *bsd = doubles_of(&bs), *bzd = doubles_of(&bz);
            CHECK(rel_error(&gst, ref_s) <= tol && rel_error(&gz, ref_z) <= tol, "%s fmap=%d causal=%d: vs formula %g %g",
                  name, fmap, causal, rel_error(&gst, ref_s), rel_error(&gz, ref_z));
            CHECK(rel_error(&gst, bsd) <= tol && rel_error(&gz, bzd) <= tol, "%s fmap=%d causal=%d: vs backward %g %g",
                  name, fmap, causal, rel_error(&gst, bsd), rel_error(&gz, bzd));
            free(bsd); free(bzd);
        }
    fill(&q, 31, 0); fill(&k, 32, 0);

    /* Un-normalized: denominators may be NULL; dS0 = sum phi(q) dout^T, dz0 = 0 (the backward's). */
    performer_linear_options_init(&o);
    o.causal = 1; o.normalize = 0; o.feature_map = PERFORMER_FEATURE_IDENTITY;
    OK(performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, &s0, &z0, NULL, NULL, &bs, &bz, &o), "backward unnormalized");
    OK(performer_linear_initial_state_gradient(&q, &out, &dout, NULL, &gs, &gz, &o), "unnormalized");
    double *bsd = doubles_of(&bs);
    CHECK(rel_error(&gs, bsd) <= tol && is_value(&gz, 0), "%s unnormalized: dS0 error %g, dz0 zero %d", name,
          rel_error(&gs, bsd), is_value(&gz, 0));
    free(bsd);

    /* relu, eps = 0, a query row with no positive feature: den = 0, out = 0, and no gradient. */
    performer_linear_options_init(&o);
    o.causal = 1; o.feature_map = PERFORMER_FEATURE_RELU; o.eps = 0;
    for (int64_t f = 0; f < D; f++) set_at(&q, 0, 0, 0, f, -1.0 - (double)f);
    OK(performer_linear_forward_with_denominators(&q, &k, &v, &out, &s0, &z0, NULL, NULL, &den, &o), "relu forward");
    OK(performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, &s0, &z0, NULL, NULL, &bs, &bz, &o), "relu backward");
    OK(performer_linear_initial_state_gradient(&q, &out, &dout, &den, &gs, &gz, &o), "relu zero denominator");
    bsd = doubles_of(&bs);
    double *bzd = doubles_of(&bz);
    int finite = 1;
    FOR4(&gs) finite &= isfinite(at(&gs, i0, i1, i2, i3));
    FOR4(&gz) finite &= isfinite(at(&gz, i0, i1, i2, i3));
    CHECK(finite && rel_error(&gs, bsd) <= tol && rel_error(&gz, bzd) <= tol, "%s zero denominator: finite %d, %g %g",
          name, finite, rel_error(&gs, bsd), rel_error(&gz, bzd));
    free(bsd); free(bzd);

    /* Errors: nothing written. */
    performer_tensor_t s3 = tensor_new(dtype, B, 3, D, M), den3 = tensor_new(dtype, B, H, n - 1, 1);
    performer_tensor_t other = tensor_new(dtype == PERFORMER_FLOAT32 ? PERFORMER_FLOAT64 : PERFORMER_FLOAT32, B, H, D, 1);
    performer_linear_options_init(&o);
    fill_value(&gs, SENTINEL); fill_value(&gz, SENTINEL);
    performer_tensor_t *outs[] = {&gs, &gz};
    expect_error("isg den NULL", performer_linear_initial_state_gradient(&q, &out, &dout, NULL, &gs, &gz, &o),
                 PERFORMER_ERROR_NULL_POINTER, "denominators", outs, 2);
    expect_error("isg dS0 NULL", performer_linear_initial_state_gradient(&q, &out, &dout, &den, NULL, &gz, &o),
                 PERFORMER_ERROR_NULL_POINTER, "dS0", outs, 2);
    expect_error("isg dS0 heads", performer_linear_initial_state_gradient(&q, &out, &dout, &den, &s3, &gz, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "dS0.shape[1] = 3", outs, 2);
    expect_error("isg den rows", performer_linear_initial_state_gradient(&q, &out, &dout, &den3, &gs, &gz, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "denominators.shape[2]", outs, 2);
    expect_error("isg dout shape", performer_linear_initial_state_gradient(&q, &out, &den3, &den, &gs, &gz, &o),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "dout.shape", outs, 2);
    expect_error("isg dz0 dtype", performer_linear_initial_state_gradient(&q, &out, &dout, &den, &gs, &other, &o),
                 PERFORMER_ERROR_DTYPE_MISMATCH, "dz0", outs, 2);
    performer_tensor_t over = gs;
    over.data = q.data;
    expect_error("isg dS0 over q", performer_linear_initial_state_gradient(&q, &out, &dout, &den, &over, &gz, &o),
                 PERFORMER_ERROR_ALIASING, "dS0", outs, 2);
    o.eps = -1;
    expect_error("isg eps", performer_linear_initial_state_gradient(&q, &out, &dout, &den, &gs, &gz, &o),
                 PERFORMER_ERROR_INVALID_ARGUMENT, "eps", outs, 2);
    performer_linear_options_init(&o);
    o.feature_map = 7;
    expect_error("isg feature map", performer_linear_initial_state_gradient(&q, &out, &dout, &den, &gs, &gz, &o),
                 PERFORMER_ERROR_INVALID_ARGUMENT, "feature_map", outs, 2);

    performer_tensor_t *all[] = {&q, &k, &v, &out, &den, &dout, &s0, &z0, &dq, &dk, &dv, &bs, &bz, &gs, &gz, &gst, &s3,
                                 &den3, &other};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->data);
}

/* ---------------------------------------------------------------- the decoder */

/* S and z of the decoder as contiguous doubles (B*H*D*M then B*H*D). */
static void decoder_state(performer_linear_decoder_t dec, int dtype, double *s, double *z) {
    performer_tensor_t st = tensor_new(dtype, B, H, D, M), zt = tensor_new(dtype, B, H, D, 1);
    performer_status status = performer_linear_decoder_get_state(dec, &st, &zt);
    CHECK(status == PERFORMER_OK, "get_state: %s", performer_last_error());
    double *a = doubles_of(&st), *b = doubles_of(&zt);
    memcpy(s, a, sizeof(double) * B * H * D * M);
    memcpy(z, b, sizeof(double) * B * H * D);
    free(a); free(b); free(st.data); free(zt.data);
}

static void decoder_lifecycle(int dtype, int fmap) {
    enum { n = 7, prompt = 3 };
    char what[64];
    snprintf(what, sizeof what, "decoder %s fmap=%d", dtype ? "float64" : "float32", fmap);
    int positive = fmap == PERFORMER_FEATURE_IDENTITY;
    double eps = 1e-6, tol = dtype == PERFORMER_FLOAT32 ? 1e-5 : 1e-12;
    performer_tensor_t q = tensor_new(dtype, B, H, n, D), k = tensor_new(dtype, B, HK, n, D), v = tensor_new(dtype, B, HK, n, M);
    performer_tensor_t s0 = tensor_new(dtype, B, H, D, M), z0 = tensor_new(dtype, B, H, D, 1);
    performer_tensor_t sn = tensor_new(dtype, B, H, D, M), zn = tensor_new(dtype, B, H, D, 1);
    performer_tensor_t ref = tensor_new(dtype, B, H, n, M), out = tensor_new(dtype, B, H, n, M);
    fill(&q, 31, positive); fill(&k, 32, positive); fill(&v, 33, 0); fill(&s0, 34, 0); fill(&z0, 35, 1);

    /* The one-call causal forward from (S_0, z_0): what every decoder path must equal. */
    performer_linear_options_t o;
    performer_linear_options_init(&o);
    o.causal = 1; o.feature_map = fmap; o.eps = eps;
    performer_status s = performer_linear_forward(&q, &k, &v, &ref, &s0, &z0, &sn, &zn, &o);
    CHECK(s == PERFORMER_OK, "%s reference forward: %s", what, performer_last_error());
    double *ref_out = doubles_of(&ref), *ref_s = doubles_of(&sn), *ref_z = doubles_of(&zn);

    performer_linear_decoder_t dec = NULL;
    s = performer_linear_decoder_create(&dec, (performer_dtype)dtype, B, H, HK, D, M, (performer_feature_map)fmap, eps);
    CHECK(s == PERFORMER_OK && dec != NULL, "%s create: %s", what, performer_last_error());
    if (dec == NULL) return;
    double st[B * H * D * M], zt[B * H * D];
    decoder_state(dec, dtype, st, zt);
    int zero = 1;
    for (int i = 0; i < B * H * D * M; i++) zero &= st[i] == 0;
    for (int i = 0; i < B * H * D; i++) zero &= zt[i] == 0;
    CHECK(zero, "%s: a new decoder's state is not zero", what);

    /* set_state(S_0, z_0) then n steps = the forward. */
    CHECK(performer_linear_decoder_set_state(dec, &s0, &z0) == PERFORMER_OK, "%s set_state: %s", what, performer_last_error());
    for (int64_t t = 0; t < n; t++) {
        performer_tensor_t qt = position(&q, t), kt = position(&k, t), vt = position(&v, t), ot = position(&out, t);
        s = performer_linear_decoder_step(dec, &qt, &kt, &vt, &ot);
        CHECK(s == PERFORMER_OK, "%s step %lld: %s", what, (long long)t, performer_last_error());
    }
    double e = rel_error(&out, ref_out);
    CHECK(e <= tol, "%s: steps vs one causal call: error %g", what, e);
    decoder_state(dec, dtype, st, zt);
    performer_tensor_t st_view = tensor_new(PERFORMER_FLOAT64, B, H, D, M), zt_view = tensor_new(PERFORMER_FLOAT64, B, H, D, 1);
    memcpy(st_view.data, st, sizeof st); memcpy(zt_view.data, zt, sizeof zt);
    CHECK(rel_error(&st_view, ref_s) <= tol && rel_error(&zt_view, ref_z) <= tol, "%s: state after steps", what);

    /* set_state(S_0, z_0), prefill the prompt, then step the rest = the forward. */
    fill_value(&out, 0);
    CHECK(performer_linear_decoder_set_state(dec, &s0, &z0) == PERFORMER_OK, "%s set_state", what);
    performer_tensor_t qp = positions(&q, 0, prompt), kp = positions(&k, 0, prompt), vp = positions(&v, 0, prompt);
    performer_tensor_t op = positions(&out, 0, prompt);
    s = performer_linear_decoder_prefill(dec, &qp, &kp, &vp, &op);
    CHECK(s == PERFORMER_OK, "%s prefill: %s", what, performer_last_error());
    for (int64_t t = prompt; t < n; t++) {
        performer_tensor_t qt = position(&q, t), kt = position(&k, t), vt = position(&v, t), ot = position(&out, t);
        CHECK(performer_linear_decoder_step(dec, &qt, &kt, &vt, &ot) == PERFORMER_OK, "%s step after prefill", what);
    }
    e = rel_error(&out, ref_out);
    CHECK(e <= tol, "%s: prefill + steps vs one causal call: error %g", what, e);

    /* reset = a fresh decoder: from zeros, the forward without an initial state. */
    CHECK(performer_linear_decoder_reset(dec) == PERFORMER_OK, "%s reset", what);
    decoder_state(dec, dtype, st, zt);
    zero = 1;
    for (int i = 0; i < B * H * D * M; i++) zero &= st[i] == 0;
    for (int i = 0; i < B * H * D; i++) zero &= zt[i] == 0;
    CHECK(zero, "%s: reset left a nonzero state", what);
    s = performer_linear_forward(&q, &k, &v, &ref, NULL, NULL, NULL, NULL, &o);
    performer_tensor_t qa = positions(&q, 0, n);
    s = s == PERFORMER_OK ? performer_linear_decoder_prefill(dec, &qa, &k, &v, &out) : s;
    CHECK(s == PERFORMER_OK, "%s reset + prefill: %s", what, performer_last_error());
    double *ref2 = doubles_of(&ref);
    CHECK(rel_error(&out, ref2) <= tol, "%s: reset + prefill of everything = forward from zeros", what);
    free(ref2);

    /* Errors: the state and out stay as they were. */
    double before_s[B * H * D * M], before_z[B * H * D], after_s[B * H * D * M], after_z[B * H * D];
    decoder_state(dec, dtype, before_s, before_z);
    performer_tensor_t o1 = position(&out, 0);
    fill_value(&o1, SENTINEL);
    performer_tensor_t *outs[] = {&o1};
    performer_tensor_t q0 = position(&q, 0), k0 = position(&k, 0), v0 = position(&v, 0);
    expect_error("step NULL decoder", performer_linear_decoder_step(NULL, &q0, &k0, &v0, &o1), PERFORMER_ERROR_NULL_POINTER,
                 "decoder is NULL", outs, 1);
    expect_error("step q NULL", performer_linear_decoder_step(dec, NULL, &k0, &v0, &o1), PERFORMER_ERROR_NULL_POINTER,
                 "q is NULL", outs, 1);
    expect_error("step out NULL", performer_linear_decoder_step(dec, &q0, &k0, &v0, NULL), PERFORMER_ERROR_NULL_POINTER,
                 "out is NULL", outs, 1);
    performer_tensor_t q2 = positions(&q, 0, 2);
    expect_error("step two positions", performer_linear_decoder_step(dec, &q2, &k0, &v0, &o1), PERFORMER_ERROR_SHAPE_MISMATCH,
                 "q.shape[2] = 2", outs, 1);
    performer_tensor_t kfull = k0;
    kfull.shape[1] = H;
    expect_error("step k with H heads", performer_linear_decoder_step(dec, &q0, &kfull, &v0, &o1),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "k.shape[1] = 4", outs, 1);
    performer_tensor_t vbad = v0;
    vbad.dtype = 1 - dtype;
    expect_error("step v dtype", performer_linear_decoder_step(dec, &q0, &k0, &vbad, &o1), PERFORMER_ERROR_DTYPE_MISMATCH,
                 "v.dtype", outs, 1);
    performer_tensor_t oq = q0;
    oq.shape[3] = M;
    expect_error("step out over q", performer_linear_decoder_step(dec, &q0, &k0, &v0, &oq), PERFORMER_ERROR_ALIASING,
                 "overlaps input q", outs, 1);
    expect_error("prefill NULL decoder", performer_linear_decoder_prefill(NULL, &q0, &k0, &v0, &o1),
                 PERFORMER_ERROR_NULL_POINTER, "decoder is NULL", outs, 1);
    performer_tensor_t k1 = positions(&k, 0, 2), v1 = positions(&v, 0, 2);
    expect_error("prefill N != L", performer_linear_decoder_prefill(dec, &q0, &k1, &v1, &o1),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "as many queries as keys", outs, 1);
    decoder_state(dec, dtype, after_s, after_z);
    CHECK(memcmp(before_s, after_s, sizeof before_s) == 0 && memcmp(before_z, after_z, sizeof before_z) == 0,
          "%s: a failed step or prefill changed the state", what);

    performer_tensor_t sb = tensor_new(dtype, B, H, D, M), zb = tensor_new(dtype, B, H, D, 1);
    fill_value(&sb, SENTINEL); fill_value(&zb, SENTINEL);
    performer_tensor_t *souts[] = {&sb, &zb};
    expect_error("get_state NULL decoder", performer_linear_decoder_get_state(NULL, &sb, &zb), PERFORMER_ERROR_NULL_POINTER,
                 "decoder is NULL", souts, 2);
    expect_error("get_state z NULL", performer_linear_decoder_get_state(dec, &sb, NULL), PERFORMER_ERROR_NULL_POINTER,
                 "z is NULL", souts, 2);
    performer_tensor_t zwrong = zb;
    zwrong.shape[3] = 2;
    expect_error("get_state z shape", performer_linear_decoder_get_state(dec, &sb, &zwrong), PERFORMER_ERROR_SHAPE_MISMATCH,
                 "z.shape[3] = 2", souts, 2);
    performer_tensor_t z_in_s = zb;
    z_in_s.data = sb.data;
    expect_error("get_state z over S", performer_linear_decoder_get_state(dec, &sb, &z_in_s), PERFORMER_ERROR_ALIASING,
                 "overlaps", souts, 2);
    performer_tensor_t swrong = s0;
    swrong.shape[2] = D + 1;
    expect_error("set_state S shape", performer_linear_decoder_set_state(dec, &swrong, &z0), PERFORMER_ERROR_SHAPE_MISMATCH,
                 "S.shape[2] = 5", souts, 2);
    performer_tensor_t sdtype = s0;
    sdtype.dtype = 1 - dtype;
    expect_error("set_state S dtype", performer_linear_decoder_set_state(dec, &sdtype, &z0), PERFORMER_ERROR_DTYPE_MISMATCH,
                 "S.dtype", souts, 2);
    expect_error("set_state NULL decoder", performer_linear_decoder_set_state(NULL, &s0, &z0), PERFORMER_ERROR_NULL_POINTER,
                 "decoder is NULL", souts, 2);
    expect_error("set_state S NULL", performer_linear_decoder_set_state(dec, NULL, &z0), PERFORMER_ERROR_NULL_POINTER,
                 "S is NULL", souts, 2);
    expect_error("reset NULL decoder", performer_linear_decoder_reset(NULL), PERFORMER_ERROR_NULL_POINTER, "decoder is NULL",
                 souts, 2);
    decoder_state(dec, dtype, after_s, after_z);
    CHECK(memcmp(before_s, after_s, sizeof before_s) == 0 && memcmp(before_z, after_z, sizeof before_z) == 0,
          "%s: a failed state call changed the state", what);

    performer_linear_decoder_destroy(dec);
    performer_tensor_t *all[] = {&q, &k, &v, &s0, &z0, &sn, &zn, &ref, &out, &st_view, &zt_view, &sb, &zb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->data);
    free(ref_out); free(ref_s); free(ref_z);
}

/* performer_linear_decoder_step_with_state: a caller's state, stepped in place, gives the bits
 * of the decoder's own; the decoder's own state is not touched; bad states are refused. */
static void decoder_caller_state(int dtype, int fmap) {
    enum { n = 5 };
    char what[64];
    snprintf(what, sizeof what, "caller state %s fmap=%d", dtype ? "float64" : "float32", fmap);
    size_t es = elem_size(dtype);
    performer_tensor_t q = tensor_new(dtype, B, H, n, D), k = tensor_new(dtype, B, HK, n, D), v = tensor_new(dtype, B, HK, n, M);
    performer_tensor_t s0 = tensor_new(dtype, B, H, D, M), z0 = tensor_new(dtype, B, H, D, 1);
    performer_tensor_t cs = tensor_new(dtype, B, H, D, M), cz = tensor_new(dtype, B, H, D, 1);
    performer_tensor_t own = tensor_new(dtype, B, H, n, M), mine = tensor_new(dtype, B, H, n, M);
    fill(&q, 61, 0); fill(&k, 62, 0); fill(&v, 63, 0); fill(&s0, 64, 0); fill(&z0, 65, 1);
    memcpy(cs.data, s0.data, es * B * H * D * M);
    memcpy(cz.data, z0.data, es * B * H * D);
    performer_linear_decoder_t dec = NULL, other = NULL;
    performer_status s = performer_linear_decoder_create(&dec, (performer_dtype)dtype, B, H, HK, D, M, (performer_feature_map)fmap, 1e-6);
    s |= performer_linear_decoder_create(&other, (performer_dtype)dtype, B, H, HK, D, M, (performer_feature_map)fmap, 1e-6);
    CHECK(s == PERFORMER_OK, "%s create: %s", what, performer_last_error());
    if (s != PERFORMER_OK) return;
    CHECK(performer_linear_decoder_set_state(dec, &s0, &z0) == PERFORMER_OK, "%s set_state", what);
    for (int64_t t = 0; t < n; t++) {
        performer_tensor_t qt = position(&q, t), kt = position(&k, t), vt = position(&v, t);
        performer_tensor_t ot = position(&own, t), mt = position(&mine, t);
        s = performer_linear_decoder_step(dec, &qt, &kt, &vt, &ot);
        s |= performer_linear_decoder_step_with_state(other, &qt, &kt, &vt, &mt, &cs, &cz);
        CHECK(s == PERFORMER_OK, "%s step %lld: %s", what, (long long)t, performer_last_error());
    }
    CHECK(memcmp(own.data, mine.data, es * B * H * n * M) == 0, "%s: outputs differ from the own-state steps", what);
    performer_tensor_t ds = tensor_new(dtype, B, H, D, M), dz = tensor_new(dtype, B, H, D, 1);
    CHECK(performer_linear_decoder_get_state(dec, &ds, &dz) == PERFORMER_OK, "%s get_state", what);
    CHECK(memcmp(ds.data, cs.data, es * B * H * D * M) == 0 && memcmp(dz.data, cz.data, es * B * H * D) == 0,
          "%s: the caller's state differs from the decoder's own", what);
    CHECK(performer_linear_decoder_get_state(other, &ds, &dz) == PERFORMER_OK, "%s get_state", what);
    int zero = 1;
    for (int64_t i = 0; i < B * H * D * M; i++) zero &= at(&ds, i / (H * D * M), i / (D * M) % H, i / M % D, i % M) == 0;
    CHECK(zero, "%s: step_with_state changed the decoder's own state", what);

    /* Bad states: nothing written (out keeps its sentinel, S its values). */
    performer_tensor_t qt = position(&q, 0), kt = position(&k, 0), vt = position(&v, 0), ot = position(&mine, 0);
    fill_value(&ot, SENTINEL);
    performer_tensor_t *outs[] = {&ot};
    memcpy(ds.data, cs.data, es * B * H * D * M);
    expect_error("step_with_state NULL z", performer_linear_decoder_step_with_state(other, &qt, &kt, &vt, &ot, &cs, NULL),
                 PERFORMER_ERROR_NULL_POINTER, "z", outs, 1);
    performer_tensor_t narrow = cs;
    narrow.shape[3] = M - 1;
    expect_error("step_with_state S shape", performer_linear_decoder_step_with_state(other, &qt, &kt, &vt, &ot, &narrow, &cz),
                 PERFORMER_ERROR_SHAPE_MISMATCH, "S.shape[3]", outs, 1);
    performer_tensor_t z_in_s = cz;
    z_in_s.data = cs.data;
    expect_error("step_with_state z over S", performer_linear_decoder_step_with_state(other, &qt, &kt, &vt, &ot, &cs, &z_in_s),
                 PERFORMER_ERROR_ALIASING, "z", outs, 1);
    performer_tensor_t wrong = tensor_new(1 - dtype, B, H, D, 1);
    expect_error("step_with_state z dtype", performer_linear_decoder_step_with_state(other, &qt, &kt, &vt, &ot, &cs, &wrong),
                 PERFORMER_ERROR_DTYPE_MISMATCH, "z", outs, 1);
    CHECK(memcmp(ds.data, cs.data, es * B * H * D * M) == 0, "%s: a refused call changed S", what);
    performer_linear_decoder_destroy(dec);
    performer_linear_decoder_destroy(other);
    free(q.data); free(k.data); free(v.data); free(s0.data); free(z0.data); free(cs.data); free(cz.data);
    free(own.data); free(mine.data); free(ds.data); free(dz.data); free(wrong.data);
}

static void decoder_create_errors(void) {
    performer_linear_decoder_t untouched = (performer_linear_decoder_t)(uintptr_t)0x1234;
    performer_linear_decoder_t dec = untouched;
    struct {
        int dtype; int64_t b, h, hk, d, m; int fmap; double eps; performer_status want; const char *needle;
    } cases[] = {
        {4, 1, 4, 2, 8, 8, 0, 1e-6, PERFORMER_ERROR_DTYPE_MISMATCH, "dtype = 4"},
        {-1, 1, 4, 2, 8, 8, 0, 1e-6, PERFORMER_ERROR_DTYPE_MISMATCH, "dtype = -1"},
        {0, 1, 4, 2, 8, 8, 3, 1e-6, PERFORMER_ERROR_INVALID_ARGUMENT, "feature_map = 3"},
        {0, 1, 4, 2, 8, 8, -1, 1e-6, PERFORMER_ERROR_INVALID_ARGUMENT, "feature_map = -1"},
        {0, 1, 4, 2, 8, 8, 0, -1e-3, PERFORMER_ERROR_INVALID_ARGUMENT, "eps = -0.001"},
        {0, 1, 4, 2, 8, 8, 0, NAN, PERFORMER_ERROR_INVALID_ARGUMENT, "eps = nan"},
        {1, 1, 4, 3, 8, 8, 0, 1e-6, PERFORMER_ERROR_INVALID_ARGUMENT, "not a multiple of key_heads = 3"},
        {1, 1, 4, 0, 8, 8, 0, 1e-6, PERFORMER_ERROR_INVALID_ARGUMENT, "key_heads = 0"},
        {1, 1, 4, 2, 0, 8, 0, 1e-6, PERFORMER_ERROR_INVALID_ARGUMENT, "head dim must be at least 1"},
        {1, -1, 4, 2, 8, 8, 0, 1e-6, PERFORMER_ERROR_INVALID_ARGUMENT, "batch = -1"},
        {1, 1, 4, 2, 8, -5, 0, 1e-6, PERFORMER_ERROR_INVALID_ARGUMENT, "value_dim = -5"},
        {1, 1, 1, 1, 1, INT64_MAX, 0, 1e-6, PERFORMER_ERROR_SIZE_OVERFLOW, "value_dim = 9223372036854775807"},
        {1, 1, 1, 1, (int64_t)1 << 62, 1, 0, 1e-6, PERFORMER_ERROR_SIZE_OVERFLOW, "fit in 64 bits"},
        {1, (int64_t)1 << 32, (int64_t)1 << 32, 1, 8, 8, 0, 1e-6, PERFORMER_ERROR_SIZE_OVERFLOW, "64 bits"},
        {0, 7, 1, 1, (int64_t)1 << 56, ((int64_t)1 << 56) / 7 + 1, 0, 1e-6, PERFORMER_ERROR_SIZE_OVERFLOW, "64 bits"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        performer_status s = performer_linear_decoder_create(&dec, (performer_dtype)cases[i].dtype, cases[i].b, cases[i].h,
                                                             cases[i].hk, cases[i].d, cases[i].m,
                                                             (performer_feature_map)cases[i].fmap, cases[i].eps);
        const char *message = performer_last_error();
        CHECK(s == cases[i].want && strstr(message, cases[i].needle) != NULL, "create case %zu: %d \"%s\", want %d \"%s\"", i,
              (int)s, message, (int)cases[i].want, cases[i].needle);
        CHECK(dec == untouched, "create case %zu: *decoder was written on error", i);
    }
    performer_status s = performer_linear_decoder_create(NULL, PERFORMER_FLOAT32, 1, 1, 1, 4, 4, PERFORMER_FEATURE_RELU, 0);
    CHECK(s == PERFORMER_ERROR_NULL_POINTER && strstr(performer_last_error(), "decoder is NULL"), "create(NULL): %d", (int)s);
    performer_linear_decoder_destroy(NULL); /* must simply return */
    CHECK(1, "destroy(NULL) returned");

    /* Empty decoders are valid: B = 0, or H = 0, with empty tokens and NULL data. */
    s = performer_linear_decoder_create(&dec, PERFORMER_FLOAT32, 0, 4, 2, 8, 8, PERFORMER_FEATURE_ELU_PLUS_ONE, 0);
    CHECK(s == PERFORMER_OK, "create B = 0: %s", performer_last_error());
    if (s == PERFORMER_OK) {
        performer_tensor_t q = {NULL, PERFORMER_FLOAT32, 0, {0, 4, 1, 8}, {0, 0, 0, 1}};
        performer_tensor_t k = {NULL, PERFORMER_FLOAT32, 0, {0, 2, 1, 8}, {0, 0, 0, 1}};
        performer_tensor_t o = {NULL, PERFORMER_FLOAT32, 0, {0, 4, 1, 8}, {0, 0, 0, 1}};
        s = performer_linear_decoder_step(dec, &q, &k, &k, &o);
        CHECK(s == PERFORMER_OK, "step with B = 0: %s", performer_last_error());
        performer_linear_decoder_destroy(dec);
    }
}

/* ---------------------------------------------------------------- threads */

enum { THREADS = 6, TB = 1, TH = 8, THK = 4, TD = 16, TM = 12, TN = 40 };

typedef struct {
    const performer_tensor_t *q, *k, *v;
    float out[TB * TH * TN * TM];
    float fwd[TB * TH * TN * TM];
    performer_status status;
    char message[512];
} decode_job;

static void *decode_main(void *arg) {
    decode_job *job = arg;
    performer_linear_decoder_t dec = NULL;
    job->status = performer_linear_decoder_create(&dec, PERFORMER_FLOAT32, TB, TH, THK, TD, TM,
                                                  PERFORMER_FEATURE_ELU_PLUS_ONE, 1e-6);
    performer_tensor_t out = tensor_new(PERFORMER_FLOAT32, TB, TH, TN, TM);
    for (int64_t t = 0; t < TN && job->status == PERFORMER_OK; t++) {
        performer_tensor_t qt = position(job->q, t), kt = position(job->k, t), vt = position(job->v, t);
        performer_tensor_t ot = position(&out, t);
        job->status = performer_linear_decoder_step(dec, &qt, &kt, &vt, &ot);
    }
    if (job->status == PERFORMER_OK) memcpy(job->out, out.data, sizeof job->out);
    performer_linear_options_t o;
    performer_linear_options_init(&o);
    o.causal = 1;
    performer_tensor_t fwd = tensor_new(PERFORMER_FLOAT32, TB, TH, TN, TM);
    if (job->status == PERFORMER_OK) job->status = performer_linear_forward(job->q, job->k, job->v, &fwd, NULL, NULL, NULL, NULL, &o);
    if (job->status == PERFORMER_OK) memcpy(job->fwd, fwd.data, sizeof job->fwd);
    snprintf(job->message, sizeof job->message, "%s", job->status ? performer_last_error() : "");
    performer_linear_decoder_destroy(dec);
    free(out.data); free(fwd.data);
    return NULL;
}

static void concurrency(void) {
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, TB, TH, TN, TD), k = tensor_new(PERFORMER_FLOAT32, TB, THK, TN, TD);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT32, TB, THK, TN, TM);
    fill(&q, 41, 0); fill(&k, 42, 0); fill(&v, 43, 0);
    static decode_job serial, jobs[THREADS];
    serial.q = &q; serial.k = &k; serial.v = &v;
    decode_main(&serial);
    CHECK(serial.status == PERFORMER_OK, "serial decode: %s", serial.message);
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++) {
        jobs[t].q = &q; jobs[t].k = &k; jobs[t].v = &v;
        CHECK(pthread_create(&threads[t], NULL, decode_main, &jobs[t]) == 0, "pthread_create");
    }
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    for (int t = 0; t < THREADS; t++) {
        CHECK(jobs[t].status == PERFORMER_OK, "thread %d: %s", t, jobs[t].message);
        CHECK(memcmp(jobs[t].out, serial.out, sizeof serial.out) == 0, "thread %d: decoder outputs differ from serial", t);
        CHECK(memcmp(jobs[t].fwd, serial.fwd, sizeof serial.fwd) == 0, "thread %d: forward differs from serial", t);
    }
    free(q.data); free(k.data); free(v.data);
}

/* ---------------------------------------------------------------- speed (printed, not asserted) */

static void step_speed(void) {
    enum { SH = 8, SD = 64, SM = 64, STEPS = 4000 };
    performer_linear_decoder_t dec = NULL;
    performer_status s = performer_linear_decoder_create(&dec, PERFORMER_FLOAT32, 1, SH, SH, SD, SM,
                                                         PERFORMER_FEATURE_ELU_PLUS_ONE, 1e-6);
    CHECK(s == PERFORMER_OK, "speed decoder: %s", performer_last_error());
    if (s != PERFORMER_OK) return;
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, 1, SH, 1, SD), k = tensor_new(PERFORMER_FLOAT32, 1, SH, 1, SD);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT32, 1, SH, 1, SM), o = tensor_new(PERFORMER_FLOAT32, 1, SH, 1, SM);
    fill(&q, 51, 0); fill(&k, 52, 0); fill(&v, 53, 0);
    for (int i = 0; i < 200; i++) s |= performer_linear_decoder_step(dec, &q, &k, &v, &o);
    double best;
    BEST_US_PER_CALL(best, 5, STEPS, s, performer_linear_decoder_step(dec, &q, &k, &v, &o));
    CHECK(s == PERFORMER_OK, "speed steps: %s", performer_last_error());
    printf("decoder step (float32, B=1, H=8, D=M=64, %s): %.2f us/token (best of 5 x %d)\n", performer_kernel_isa(), best,
           STEPS);
    performer_tensor_t st = tensor_new(PERFORMER_FLOAT32, 1, SH, SD, SM), zt = tensor_new(PERFORMER_FLOAT32, 1, SH, SD, 1);
    BEST_US_PER_CALL(best, 5, STEPS, s, performer_linear_decoder_step_with_state(dec, &q, &k, &v, &o, &st, &zt));
    CHECK(s == PERFORMER_OK, "speed caller-state steps: %s", performer_last_error());
    printf("decoder step on a caller state: %.2f us/token\n", best);
    BEST_US_PER_CALL(best, 5, STEPS, s, performer_linear_decoder_get_state(dec, &st, &zt));
    CHECK(s == PERFORMER_OK, "speed get_state: %s", performer_last_error());
    printf("decoder get_state (8 x 64 x 64 + 8 x 64 floats): %.2f us\n", best);
    free(st.data); free(zt.data);
    performer_linear_decoder_destroy(dec);
    free(q.data); free(k.data); free(v.data); free(o.data);
}

int main(void) {
    options_init();
    for (int dtype = 0; dtype < 2; dtype++)
        for (int fmap = 0; fmap < 3; fmap++)
            for (int causal = 0; causal < 2; causal++)
                for (int lengths = 0; lengths < 2; lengths++)
                    for (int state = 0; state <= causal; state++) results(dtype, fmap, causal, lengths, state);
    padding_has_no_effect();
    key_starts();
    forward_errors();
    for (int dtype = 0; dtype < 2; dtype++) unnormalized_and_state(dtype);
    for (int dtype = 0; dtype < 2; dtype++) initial_state_gradient(dtype);
    for (int dtype = 0; dtype < 2; dtype++)
        for (int fmap = 0; fmap < 3; fmap++) decoder_lifecycle(dtype, fmap), decoder_caller_state(dtype, fmap);
    decoder_create_errors();
    concurrency();
    step_speed();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
