"""Half precision through performer.torch: exact softmax attention on bfloat16 / float16 tensors beside our
float32 and PyTorch's SDPA in the same dtypes, in one process; or (--algorithm linear / favor) causal
linear attention or FAVOR+ (positive features, m = 256) beside our float32.

    python benchmarks/torch_half.py [--sizes 4096] [--threads 2] [--rounds 5] [--causal]
                                    [--dtypes float32,bfloat16,float16] [--algorithm softmax|linear|favor]

B = 1, H = 8, D = M = 64, not causal unless --causal. For each N: forward (no_grad) and forward+backward
of performer.torch.softmax_attention and of torch.nn.functional.scaled_dot_product_attention in float32,
bfloat16 and float16, timed alternately within each round (so a loaded machine hits every row alike);
medians. Ratios are against our float32 (> 1: faster than it) and against SDPA in the same dtype (> 1:
faster than SDPA). Only the ratios mean something on a shared machine. Linear attention and FAVOR+ are
always causal (the recurrence the issue's rows time) and have no SDPA column.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import performer
import performer.torch as pt

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make(n, dtype, grad):
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(1, 8, n, 64, generator=g).to(dtype) for _ in range(4))
    if grad:
        q, k, v = (t.requires_grad_() for t in (q, k, v))
    return q, k, v, dout


def step(impl, q, k, v, dout, causal, grad):
    if not grad:
        with torch.no_grad():
            impl(q, k, v, causal)
        return
    out = impl(q, k, v, causal)
    torch.autograd.backward(out, dout)
    q.grad = k.grad = v.grad = None


def ours(q, k, v, causal):
    return pt.softmax_attention(q, k, v, causal=causal)


def linear(q, k, v, causal):
    return pt.linear_attention(q, k, v, causal=True)


#: W of the FAVOR+ rows: m = 256 features of D = 64, as a float32 tensor (one per process).
_W = None


def favor(q, k, v, causal):
    global _W
    if _W is None:
        _W = torch.from_numpy(performer.FavorProjection(64, 256, seed=0).matrix)
    return pt.favor_attention(q, k, v, _W, causal=True)


def sdpa(q, k, v, causal):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="4096")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--algorithm", default="softmax", choices=("softmax", "linear", "favor"))
    parser.add_argument("--dtypes", default="float32,bfloat16,float16",
                        help="which of float32, bfloat16, float16 (float32 is always timed: the ratios need it)")
    args = parser.parse_args()
    dtypes = {name: DTYPES[name] for name in DTYPES if name == "float32" or name in args.dtypes.split(",")}
    torch.set_num_threads(args.threads)
    mine_impl = {"softmax": ours, "linear": linear, "favor": favor}[args.algorithm]
    impls = (mine_impl, sdpa) if args.algorithm == "softmax" else (mine_impl,)
    causal = args.causal or args.algorithm != "softmax"
    print("torch %s, libperformer %s, %s, %d threads (torch.set_num_threads; performer.torch follows it), "
          "B=1 H=8 D=M=64%s, causal=%s, median of %d alternated rounds"
          % (torch.__version__, performer.__version__, args.algorithm, args.threads,
             ", m=256" if args.algorithm == "favor" else "", causal, args.rounds))
    print()
    print("| N | pass | dtype | performer ms | SDPA ms | performer / our float32 speed | SDPA time / performer time |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(x) for x in args.sizes.split(",")):
        for grad in (False, True):
            rows = [(impl, name, dtype) for name, dtype in dtypes.items() for impl in impls]
            inputs = {(name, dtype): make(n, dtype, grad) for name, dtype in dtypes.items()}
            times = {(impl.__name__, name): [] for impl, name, _ in rows}
            for impl, name, dtype in rows:  # warm-up
                step(impl, *inputs[(name, dtype)], causal, grad)
            for _ in range(args.rounds):
                for impl, name, dtype in rows:
                    start = time.perf_counter()
                    step(impl, *inputs[(name, dtype)], causal, grad)
                    times[(impl.__name__, name)].append(time.perf_counter() - start)
            median = {key: statistics.median(values) for key, values in times.items()}
            for name in dtypes:
                mine = median[(mine_impl.__name__, name)]
                theirs = median.get(("sdpa", name))
                print("| %d | %s | %s | %.1f | %s | %.2f | %s |"
                      % (n, "fwd+bwd" if grad else "fwd", name, mine * 1e3,
                         "-" if theirs is None else "%.1f" % (theirs * 1e3),
                         median[(mine_impl.__name__, "float32")] / mine,
                         "-" if theirs is None else "%.2f" % (theirs / mine)))


if __name__ == "__main__":
    main()
