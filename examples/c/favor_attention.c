/* favor_attention.c: causal FAVOR+ (Performer) attention over a long sequence, processed in
 * two pieces: the first piece returns its final state (S~, z~, c), the second continues from
 * it. The outputs must equal one causal performer_favor_forward over the whole sequence.
 * Exits nonzero on a mismatch.
 *
 *   cc -std=c99 -I include examples/c/favor_attention.c -L .build/release -lperformer \
 *      -Wl,-rpath,$PWD/.build/release -lm -o favor_attention
 *   ./favor_attention
 */
#include "performer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* m = 32 random features of dimension D = 16; positive features: C = m. */
enum { B = 2, H = 4, D = 16, M = 16, FEATURES = 32, N = 48, FIRST = 20 };

/* A contiguous B x H x positions x width float32 view of `data`. */
static performer_tensor_t view(float *data, int positions, int width) {
    performer_tensor_t t = {data, PERFORMER_FLOAT32, 0, {B, H, positions, width},
                            {(int64_t)H * positions * width, (int64_t)positions * width, width, 1}};
    return t;
}

/* Positions [from, from + count) of a view: the same memory, axis 2 shortened. */
static performer_tensor_t slice(performer_tensor_t t, int from, int count) {
    t.data = (float *)t.data + from * t.strides[2];
    t.shape[2] = count;
    return t;
}

static int check(performer_status status, const char *what) {
    if (status == PERFORMER_OK) return 0;
    fprintf(stderr, "%s failed: %s (%s)\n", what, performer_status_string(status), performer_last_error());
    return 1;
}

int main(void) {
    static float q[B * H * N * D], k[B * H * N * D], v[B * H * N * M];
    static float whole[B * H * N * M], pieces[B * H * N * M];
    static float s[B * H * FEATURES * M], z[B * H * FEATURES], c[B * H * FEATURES];
    unsigned seed = 7;
    for (int i = 0; i < B * H * N * D; i++) {
        seed = seed * 1103515245u + 12345u;
        q[i] = (float)((seed >> 8) % 2000) / 1000.0f - 1.0f;
        seed = seed * 1103515245u + 12345u;
        k[i] = (float)((seed >> 8) % 2000) / 1000.0f - 1.0f;
    }
    for (int i = 0; i < B * H * N * M; i++) {
        seed = seed * 1103515245u + 12345u;
        v[i] = (float)((seed >> 8) % 2000) / 1000.0f - 1.0f;
    }

    /* W: 32 x 16, orthogonal blocks with chi norms, seed 2024 (the same W on every build). */
    performer_favor_projection_t projection = NULL;
    if (check(performer_favor_projection_create(&projection, D, FEATURES, PERFORMER_PROJECTION_ORTHOGONAL,
                                                PERFORMER_NORMS_CHI, 2024), "projection_create")) return 1;

    performer_favor_options_t options;
    performer_favor_options_init(&options);  /* positive features, scale 1/sqrt(D), eps 0 */
    options.causal = 1;

    performer_tensor_t tq = view(q, N, D), tk = view(k, N, D), tv = view(v, N, M);
    performer_tensor_t tw = view(whole, N, M), tp = view(pieces, N, M);
    /* The state: S~ B x H x C x M, z~ and c B x H x C x 1. */
    performer_tensor_t ts = view(s, FEATURES, M), tz = view(z, FEATURES, 1), tc = view(c, FEATURES, 1);

    /* One call over all N positions. */
    if (check(performer_favor_forward(&tq, &tk, &tv, projection, &tw, NULL, NULL, NULL, NULL, NULL, NULL, &options),
              "favor_forward (one call)")) return 1;

    /* Two pieces: [0, FIRST) writes its final state; [FIRST, N) starts from it and writes its
     * own final state over it (allowed: the state is updated in place). */
    performer_tensor_t q1 = slice(tq, 0, FIRST), k1 = slice(tk, 0, FIRST), v1 = slice(tv, 0, FIRST);
    performer_tensor_t o1 = slice(tp, 0, FIRST);
    performer_tensor_t q2 = slice(tq, FIRST, N - FIRST), k2 = slice(tk, FIRST, N - FIRST), v2 = slice(tv, FIRST, N - FIRST);
    performer_tensor_t o2 = slice(tp, FIRST, N - FIRST);
    if (check(performer_favor_forward(&q1, &k1, &v1, projection, &o1, NULL, NULL, NULL, &ts, &tz, &tc, &options),
              "favor_forward (first piece)")) return 1;
    if (check(performer_favor_forward(&q2, &k2, &v2, projection, &o2, &ts, &tz, &tc, &ts, &tz, &tc, &options),
              "favor_forward (second piece)")) return 1;

    double worst = 0, scale = 0;
    for (int i = 0; i < B * H * N * M; i++) {
        double e = fabs((double)pieces[i] - (double)whole[i]);
        if (!(e <= worst)) worst = e;  /* NaN counts as a mismatch */
        if (fabs(whole[i]) > scale) scale = fabs(whole[i]);
    }
    double relative = worst / scale;
    printf("causal FAVOR+ (B=%d, H=%d, N=%d, D=%d, M=%d, m=%d, positive): two pieces with the carried state vs "
           "one call: max relative difference %.3g\n", B, H, N, D, M, FEATURES, relative);
    printf("state of the first head after the sequence: c[0] = %.4f, z~[0] = %.4f (z[0] = e^c z~ = %.4g)\n",
           (double)c[0], (double)z[0], exp((double)c[0]) * z[0]);
    performer_favor_projection_destroy(projection);
    if (!(relative <= 1e-5)) {
        fprintf(stderr, "MISMATCH: pieces differ from one call by %g (relative)\n", relative);
        return 1;
    }
    printf("OK\n");
    return 0;
}
