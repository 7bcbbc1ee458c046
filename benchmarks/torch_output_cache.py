"""performer.torch calls with new results each time (as a user gets them), the output cache on
(the default) against off (performer.set_output_cache_limit(0): plain PyTorch tensors), alternated
in this one process; medians over rounds of the per-call time. Not a test.

    python benchmarks/torch_output_cache.py [N] [ROUNDS] [--threads 1,2]

Cases (B = 1, H = 8, D = M = 64, float32): linear attention forward non-causal and causal (a
32 MiB output at N = 16384), FAVOR+ forward causal (m = 64 features), and the causal linear
attention forward + backward (dq, dk, dv of 32 MiB each) through autograd.
"""
import argparse
import statistics
import time

import torch

import performer
import performer.torch as pt

B, H, D = 1, 8, 64
CACHE_LIMIT = 256 << 20


def cases(n):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.rand(B, H, n, D, generator=g) for _ in range(3))
    projection = performer.FavorProjection(D, D, seed=0)
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]

    def forward_backward():
        out = pt.linear_attention(*leaves, causal=True)
        out.backward(torch.ones_like(out))
        for x in leaves:
            x.grad = None

    return {
        "linear fwd": lambda: pt.linear_attention(q, k, v),
        "linear causal fwd": lambda: pt.linear_attention(q, k, v, causal=True),
        "favor causal fwd": lambda: pt.favor_attention(q, k, v, projection, causal=True),
        "linear causal fwd+bwd": forward_backward,
    }


def seconds(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=16384)
    parser.add_argument("rounds", type=int, nargs="?", default=9)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    print("torch %s, performer %s, N = %d, %d rounds (medians, ms)" % (torch.__version__, performer.__version__,
                                                                     args.n, args.rounds))
    print("| threads | case | cache off | cache on | on / off |")
    print("|---|---|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for name, call in cases(args.n).items():
            times = {"off": [], "on": []}
            for round_ in range(args.rounds):
                for setting in (("off", "on") if round_ % 2 == 0 else ("on", "off")):
                    performer.set_output_cache_limit(0 if setting == "off" else CACHE_LIMIT)
                    call()  # the first call after a switch fills the cache (or empties it)
                    times[setting].append(seconds(call))
            off, on = (1e3 * statistics.median(times[s]) for s in ("off", "on"))
            print("| %d | %s | %.2f | %.2f | %.2f |" % (threads, name, off, on, on / off))
    performer.set_output_cache_limit(CACHE_LIMIT)


if __name__ == "__main__":
    main()
