/* linear_decode.c: causal linear attention as an RNN. A decoder is primed with a prompt
 * ("prefill"), then decodes a few tokens one at a time; the outputs must equal one causal
 * performer_linear_forward over the whole sequence. Exits nonzero on a mismatch.
 *
 *   cc -std=c99 -I include examples/c/linear_decode.c -L .build/release -lperformer \
 *      -Wl,-rpath,$PWD/.build/release -lm -o linear_decode
 *   ./linear_decode
 */
#include "performer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { B = 1, H = 4, HK = 2, D = 8, M = 8, PROMPT = 12, NEW = 5, N = PROMPT + NEW };

/* A contiguous B x heads x positions x width float32 view of `data`. */
static performer_tensor_t view(float *data, int heads, int positions, int width) {
    performer_tensor_t t = {data, PERFORMER_FLOAT32, 0, {B, heads, positions, width},
                            {(int64_t)heads * positions * width, (int64_t)positions * width, width, 1}};
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
    static float q[B * H * N * D], k[B * HK * N * D], v[B * HK * N * M];
    static float expected[B * H * N * M], decoded[B * H * N * M];
    unsigned seed = 1;
    for (int i = 0; i < B * H * N * D; i++) q[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16 & 0x7fff) / 16384.0f - 1.0f;
    for (int i = 0; i < B * HK * N * D; i++) k[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16 & 0x7fff) / 16384.0f - 1.0f;
    for (int i = 0; i < B * HK * N * M; i++) v[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16 & 0x7fff) / 16384.0f - 1.0f;
    performer_tensor_t tq = view(q, H, N, D), tk = view(k, HK, N, D), tv = view(v, HK, N, M);

    /* The whole sequence in one causal call (elu+1 features, eps 1e-6: the defaults). */
    performer_linear_options_t options;
    performer_linear_options_init(&options);
    options.causal = 1;
    performer_tensor_t texpected = view(expected, H, N, M);
    if (check(performer_linear_forward(&tq, &tk, &tv, &texpected, NULL, NULL, NULL, NULL, &options), "forward"))
        return 1;

    /* The same as an RNN: prefill the prompt, then one token per step. */
    performer_linear_decoder_t decoder = NULL;
    if (check(performer_linear_decoder_create(&decoder, PERFORMER_FLOAT32, B, H, HK, D, M, PERFORMER_FEATURE_ELU_PLUS_ONE,
                                              1e-6),
              "decoder_create"))
        return 1;
    performer_tensor_t tdecoded = view(decoded, H, N, M);
    performer_tensor_t qp = slice(tq, 0, PROMPT), kp = slice(tk, 0, PROMPT), vp = slice(tv, 0, PROMPT);
    performer_tensor_t op = slice(tdecoded, 0, PROMPT);
    int failed = check(performer_linear_decoder_prefill(decoder, &qp, &kp, &vp, &op), "prefill");
    for (int t = PROMPT; t < N && !failed; t++) {
        performer_tensor_t qt = slice(tq, t, 1), kt = slice(tk, t, 1), vt = slice(tv, t, 1), ot = slice(tdecoded, t, 1);
        failed = check(performer_linear_decoder_step(decoder, &qt, &kt, &vt, &ot), "step");
    }
    /* The decoder's state is the final state of the whole sequence: S (B x H x C x M), z (B x H x C x 1). */
    static float s[B * H * D * M], z[B * H * D];
    performer_tensor_t ts = view(s, H, D, M), tz = view(z, H, D, 1);
    failed = failed || check(performer_linear_decoder_get_state(decoder, &ts, &tz), "get_state");
    performer_linear_decoder_destroy(decoder);
    if (failed) return 1;

    double worst = 0;
    for (int i = 0; i < B * H * N * M; i++) worst = fmax(worst, fabs((double)decoded[i] - (double)expected[i]));
    printf("libperformer %s: prefill %d tokens + %d decoded steps vs one causal forward: max |difference| = %.3g\n",
           performer_version_string(), PROMPT, NEW, worst);
    printf("state: z[0] = %.4f (the sum of phi(k_j)[0] over the %d keys of head 0)\n", z[0], N);
    if (!(worst <= 1e-5)) {
        fprintf(stderr, "mismatch\n");
        return 1;
    }
    printf("ok\n");
    return 0;
}
