"""State-only calls: the state backward's time against the state forward's, in one process.

    python benchmarks/state_backward.py [--n 16384] [--heads 8] [--dim 64] [--features 256] [--rounds 7]

The sequence-parallel functions (performer.torch.distributed) run `linear_state` /
`favor_state` on every rank's slice and their backward in the backward pass; their cost beside
the local attention bounds the parallel efficiency. Alternates forward and backward calls
(so that slow phases of a shared machine hit both alike) and reports the medians and the ratio
backward / forward, for linear attention (elu+1, C = D) and FAVOR+ (positive, m features);
and the causal attention forward + backward over the same positions (q = k), so that
(state + state backward) / (attention forward + backward) is a non-last rank's extra work.
"""
import argparse
import statistics
import time

import numpy as np
import performer


def timed(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(name, forward, backward, attention, rounds):
    calls = (forward, backward, attention)
    for call in calls:
        call()  # warm-up: scratch, thread pool
    samples = [[] for _ in calls]
    for _ in range(rounds):
        for call, times in zip(calls, samples):
            times.append(timed(call))
    tf, tb, ta = (statistics.median(times) for times in samples)
    print("| %s | %.1f | %.1f | %.2f | %.1f | %.2f |" % (name, 1e3 * tf, 1e3 * tb, tb / tf, 1e3 * ta, (tf + tb) / ta))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="library threads (0: the default)")
    options = parser.parse_args()
    if options.threads:
        performer.set_num_threads(options.threads)
    rng = np.random.default_rng(0)
    shape = (1, options.heads, options.n, options.dim)
    k = (0.5 * rng.standard_normal(shape)).astype(np.float32)
    v = rng.standard_normal(shape).astype(np.float32)
    print("N = %d, B = 1, H = %d, D = M = %d, float32, threads %s" % (options.n, options.heads, options.dim,
                                                                      options.threads or "default"))
    print("| call | state (ms) | state backward (ms) | backward / state | causal fwd + bwd (ms) | extra work |")
    print("|---|---|---|---|---|---|")

    ds, dz = (x.astype(np.float32) for x in (rng.standard_normal((1, options.heads, options.dim, options.dim)),
                                              rng.standard_normal((1, options.heads, options.dim))))
    dout = rng.standard_normal(shape).astype(np.float32)

    def linear():
        performer.linear_attention(k, k, v, causal=True)
        performer.linear_attention_backward(k, k, v, dout, causal=True)

    measure("linear elu+1", lambda: performer.linear_state(k, v),
            lambda: performer.linear_state_backward(k, v, ds, dz), linear, options.rounds)

    projection = performer.FavorProjection(options.dim, options.features, seed=1)
    m = options.features
    ds = rng.standard_normal((1, options.heads, m, options.dim)).astype(np.float32)
    dz = rng.standard_normal((1, options.heads, m)).astype(np.float32)

    def favor():
        performer.favor_attention(k, k, v, projection, causal=True)
        performer.favor_attention_backward(k, k, v, dout, projection, causal=True)

    measure("FAVOR+ positive m = %d" % m, lambda: performer.favor_state(k, v, projection),
            lambda: performer.favor_state_backward(k, v, projection, ds, dz), favor, options.rounds)


if __name__ == "__main__":
    main()
