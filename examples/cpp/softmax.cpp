// softmax.cpp: softmax attention from C++, linked directly against libperformer, on tensors
// stored the way many models keep them, B x N x H x D (tokens outermost), passed as the
// B x H x N x D views the library takes by swapping strides: no copy.
//
//   c++ -std=c++17 -I include examples/cpp/softmax.cpp -L .build/release -lperformer
//       -Wl,-rpath,$PWD/.build/release -o softmax_cpp && ./softmax_cpp
#include "performer.h"

#include <cmath>
#include <cstdio>
#include <vector>

constexpr int64_t B = 2, N = 5, H = 3, D = 4;  // L = N keys, M = D

// A B x N x H x D buffer seen as B x H x N x D: shape and strides of the view.
performer_tensor_t tokens_major(std::vector<float> &buffer) {
    return performer_tensor_t{buffer.data(), PERFORMER_FLOAT32, 0, {B, H, N, D}, {N * H * D, D, H * D, 1}};
}

float &element(std::vector<float> &buffer, int64_t b, int64_t h, int64_t n, int64_t d) {
    return buffer[((b * N + n) * H + h) * D + d];
}

int main() {
    std::vector<float> q(B * N * H * D), k(q.size()), v(q.size()), out(q.size());
    for (size_t i = 0; i < q.size(); i++) {
        q[i] = std::sin(0.37f * i);
        k[i] = std::cos(0.23f * i);
        v[i] = std::sin(0.11f * i + 1.0f);
    }
    performer_tensor_t tq = tokens_major(q), tk = tokens_major(k), tv = tokens_major(v), tout = tokens_major(out);
    performer_softmax_options_t options;
    performer_softmax_options_init(&options);
    options.causal = 1;
    if (performer_softmax_forward(&tq, &tk, &tv, &tout, nullptr, &options) != PERFORMER_OK) {
        std::fprintf(stderr, "performer_softmax_forward: %s\n", performer_last_error());
        return 1;
    }

    // Reference in double, straight from the definition, reading the same B x N x H x D buffers.
    double worst = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < N; i++) {
                std::vector<double> weight(i + 1);  // causal with N = L: keys 0..i
                double sum = 0;
                for (int64_t j = 0; j <= i; j++) {
                    double score = 0;
                    for (int64_t d = 0; d < D; d++) score += element(q, b, h, i, d) * element(k, b, h, j, d);
                    weight[j] = std::exp(score / std::sqrt(double(D)));
                    sum += weight[j];
                }
                for (int64_t d = 0; d < D; d++) {
                    double expected = 0;
                    for (int64_t j = 0; j <= i; j++) expected += weight[j] / sum * element(v, b, h, j, d);
                    worst = std::fmax(worst, std::fabs(expected - element(out, b, h, i, d)));
                }
            }
    std::printf("libperformer %s (%s kernels): B=%lld N=%lld H=%lld D=%lld, largest difference %.3g\n",
                performer_version_string(), performer_kernel_isa(), (long long)B, (long long)N, (long long)H,
                (long long)D, worst);
    if (!(worst < 1e-5)) {
        std::fprintf(stderr, "MISMATCH\n");
        return 1;
    }
    return 0;
}
