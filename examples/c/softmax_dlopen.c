/* softmax_dlopen.c: load libperformer at run time, check its ABI version, run a small causal
 * softmax attention forward and backward, and compare with a double-precision reference.
 *
 *   cc -std=c99 -I include examples/c/softmax_dlopen.c -ldl -lm -o softmax_dlopen
 *   ./softmax_dlopen .build/release/libperformer.so
 */
#include "performer.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { N = 3, L = 4, D = 2 }; /* one batch, one head, M = D */

typedef performer_status (*forward_fn)(const performer_tensor_t *, const performer_tensor_t *,
                                       const performer_tensor_t *, performer_tensor_t *, performer_tensor_t *,
                                       const performer_softmax_options_t *);
typedef performer_status (*backward_fn)(const performer_tensor_t *, const performer_tensor_t *,
                                        const performer_tensor_t *, const performer_tensor_t *,
                                        const performer_tensor_t *, const performer_tensor_t *, performer_tensor_t *,
                                        performer_tensor_t *, performer_tensor_t *,
                                        const performer_softmax_options_t *);

static performer_tensor_t matrix(double *data, int rows, int cols) {
    performer_tensor_t t = {data, PERFORMER_FLOAT64, 0, {1, 1, rows, cols}, {rows * cols, rows * cols, cols, 1}};
    return t;
}

/* The reference: causal (query i sees key j iff j <= i + L - N), scale 1/sqrt(D); the output
 * and, given dout, the gradients (ALGORITHMS.md §1). */
static void reference(double q[N][D], double k[L][D], double v[L][D], double dout[N][D],
                      double out[N][D], double dq[N][D], double dk[L][D], double dv[L][D]) {
    double p[N][L], ds[N][L], s = 1 / sqrt((double)D);
    memset(dk, 0, sizeof(double) * L * D);
    memset(dv, 0, sizeof(double) * L * D);
    for (int i = 0; i < N; i++) {
        double sum = 0, delta = 0;
        for (int j = 0; j < L; j++) {
            p[i][j] = 0;
            if (j <= i + L - N) p[i][j] = exp(s * (q[i][0] * k[j][0] + q[i][1] * k[j][1]));
            sum += p[i][j];
        }
        for (int j = 0; j < L; j++) p[i][j] /= sum;
        for (int m = 0; m < D; m++) {
            out[i][m] = 0;
            for (int j = 0; j < L; j++) out[i][m] += p[i][j] * v[j][m];
            delta += dout[i][m] * out[i][m];
        }
        for (int j = 0; j < L; j++) {
            double dp = dout[i][0] * v[j][0] + dout[i][1] * v[j][1];
            ds[i][j] = p[i][j] * (dp - delta);
        }
    }
    for (int i = 0; i < N; i++)
        for (int d = 0; d < D; d++) {
            dq[i][d] = 0;
            for (int j = 0; j < L; j++) dq[i][d] += s * ds[i][j] * k[j][d];
        }
    for (int j = 0; j < L; j++)
        for (int d = 0; d < D; d++)
            for (int i = 0; i < N; i++) {
                dk[j][d] += s * ds[i][j] * q[i][d];
                dv[j][d] += p[i][j] * dout[i][d];
            }
}

static double worst(const double *a, const double *b, int n) {
    double w = 0;
    for (int i = 0; i < n; i++) w = fabs(a[i] - b[i]) > w ? fabs(a[i] - b[i]) : w;
    return w;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "libperformer.so";
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }

    /* POSIX's way to turn dlsym's void * into a function pointer without a pedantic warning. */
    int (*abi_version)(void);
    *(void **)&abi_version = dlsym(lib, "performer_abi_version");
    if (!abi_version || abi_version() != PERFORMER_ABI_VERSION) {
        fprintf(stderr, "%s: ABI version %d, this program needs %d\n", path, abi_version ? abi_version() : -1,
                PERFORMER_ABI_VERSION);
        return 1;
    }
    forward_fn forward;
    backward_fn backward;
    void (*options_init)(performer_softmax_options_t *);
    const char *(*last_error)(void);
    *(void **)&forward = dlsym(lib, "performer_softmax_forward");
    *(void **)&backward = dlsym(lib, "performer_softmax_backward");
    *(void **)&options_init = dlsym(lib, "performer_softmax_options_init");
    *(void **)&last_error = dlsym(lib, "performer_last_error");
    if (!forward || !backward || !options_init || !last_error) { fprintf(stderr, "dlsym failed\n"); return 1; }

    double q[N][D] = {{0.1, -0.4}, {0.7, 0.2}, {-0.3, 0.5}};
    double k[L][D] = {{0.2, 0.1}, {-0.6, 0.3}, {0.4, -0.2}, {0.9, 0.8}};
    double v[L][D] = {{1.0, 0.0}, {0.0, 1.0}, {0.5, -0.5}, {-1.0, 2.0}};
    double dout[N][D] = {{0.3, -0.1}, {0.2, 0.4}, {-0.5, 0.6}};
    double out[N][D], lse[N], dq[N][D], dk[L][D], dv[L][D];
    double ref_out[N][D], ref_dq[N][D], ref_dk[L][D], ref_dv[L][D];

    performer_tensor_t tq = matrix(&q[0][0], N, D), tk = matrix(&k[0][0], L, D), tv = matrix(&v[0][0], L, D);
    performer_tensor_t tout = matrix(&out[0][0], N, D), tlse = matrix(lse, N, 1), tdout = matrix(&dout[0][0], N, D);
    performer_tensor_t tdq = matrix(&dq[0][0], N, D), tdk = matrix(&dk[0][0], L, D), tdv = matrix(&dv[0][0], L, D);
    performer_softmax_options_t options;
    options_init(&options);
    options.causal = 1;

    if (forward(&tq, &tk, &tv, &tout, &tlse, &options) != PERFORMER_OK ||
        backward(&tq, &tk, &tv, &tout, &tlse, &tdout, &tdq, &tdk, &tdv, &options) != PERFORMER_OK) {
        fprintf(stderr, "libperformer: %s\n", last_error());
        return 1;
    }
    reference(q, k, v, dout, ref_out, ref_dq, ref_dk, ref_dv);
    for (int i = 0; i < N; i++) printf("out[%d] = % .6f % .6f   lse = %.6f\n", i, out[i][0], out[i][1], lse[i]);
    double error = worst(&out[0][0], &ref_out[0][0], N * D);
    double e = worst(&dq[0][0], &ref_dq[0][0], N * D);
    error = e > error ? e : error;
    e = worst(&dk[0][0], &ref_dk[0][0], L * D);
    error = e > error ? e : error;
    e = worst(&dv[0][0], &ref_dv[0][0], L * D);
    error = e > error ? e : error;
    printf("largest difference from the reference (out, dq, dk, dv): %.3g\n", error);
    dlclose(lib);
    if (!(error < 1e-12)) { fprintf(stderr, "MISMATCH\n"); return 1; }
    return 0;
}
