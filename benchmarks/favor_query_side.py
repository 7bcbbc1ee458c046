"""Rank 1's query-side gradient Q of distributed causal FAVOR+ (docs/DISTRIBUTED.md), in one
process at the benchmark's size per rank: the former path (torch forms the n x C scaled
features, one baddbmm and exp_, then linear_initial_state_gradient with the identity map)
against the library call performer.favor_initial_state_gradient (one pass over the queries, no
n x C array), with the state pass S (favor_state over as many keys) for scale.

    python benchmarks/favor_query_side.py [--n 16384] [--heads 8] [--dim 64] [--features 256] [--rounds 9]

One library thread and one torch thread (a rank of benchmarks/distributed.py). The three calls
alternate round by round (slow phases of a shared host hit all alike); process CPU time,
medians and ranges; the two Q results are compared (float32 rounding).
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import performer
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bindings", "python", "tests"))
from test_favor_initial_state_gradient import torch_built  # noqa: E402  (the former path, kept as the tests' reference)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=9)
    options = parser.parse_args()
    performer.set_num_threads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    shape = (1, options.heads, options.n, options.dim)
    q, k, v, dout = ((0.5 * rng.standard_normal(shape)).astype(np.float32) for _ in range(4))
    p = performer.FavorProjection(options.dim, options.features, seed=1)
    state = performer.favor_state(*((0.5 * rng.standard_normal(shape)).astype(np.float32) for _ in range(2)), p,
                                  heads=options.heads)
    out, (units, dens) = performer.favor_attention(q, k, v, p, causal=True, initial_state=state,
                                                   return_row_scales=True)
    calls = {
        "former Q (torch features + linear kernel)": lambda: torch_built(q, p.matrix, "positive", state[2], units,
                                                                          dens, out, dout),
        "Q (favor_initial_state_gradient)": lambda: performer.favor_initial_state_gradient(q, p, state[2],
                                                                                          (units, dens), out, dout),
        "S (favor_state)": lambda: performer.favor_state(k, v, p),
    }
    old, new = list(calls.values())[0](), list(calls.values())[1]()
    worst = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(old, new))
    samples = {label: [] for label in calls}
    for _ in range(options.rounds):
        for label, call in calls.items():
            start = time.process_time()
            call()
            samples[label].append(time.process_time() - start)
    print("n = %d, B = 1, H = %d, D = M = %d, m = %d, float32, 1 thread, process CPU time, %d alternating rounds; "
          "former vs new Q: max difference %.1e of the largest entry"
          % (options.n, options.heads, options.dim, options.features, options.rounds, worst))
    print("| call | median (ms) | range (ms) |")
    print("|---|---|---|")
    for label, times in samples.items():
        print("| %s | %.0f | %.0f-%.0f |" % (label, 1e3 * statistics.median(times), 1e3 * min(times), 1e3 * max(times)))
    med = {label: statistics.median(times) for label, times in samples.items()}
    labels = list(calls)
    print("former / new Q: %.2f; Q / S: %.2f (former %.2f)" % (med[labels[0]] / med[labels[1]],
                                                              med[labels[1]] / med[labels[2]],
                                                              med[labels[0]] / med[labels[2]]))


if __name__ == "__main__":
    main()
