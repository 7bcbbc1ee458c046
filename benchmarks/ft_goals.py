#!/usr/bin/env python3
"""Issue 8's goals against fast-transformers (FT), as paired ratios on a shared machine.

    python benchmarks/ft_goals.py [N] [ROUNDS] [--fb] [--torch]

Per round: a 1024³ numpy GEMM, REPEATS of our calls back to back and REPEATS of FT's (which
side goes first alternates), the GEMM again; prints the median over rounds of ours/FT (the goal's
ratio) and of each side's fraction of that round's GEMM peak, so load that comes and goes hits
both sides of a ratio alike. The calls start SETTLE_S after the GEMM: numpy's OpenBLAS threads
keep spinning on the two cores for tens of milliseconds after a GEMM returns (our causal linear
call at N = 16384 took 1.3x as long right after it as 0.1 s later). Cases (B=1, H=8,
D=M=64, float32, 2 threads, new outputs each call as a user gets them): the un-normalized causal product vs
FT's causal_dot_product (--fb: forward+backward), linear attention causal and not vs FT's
CausalLinearAttention / LinearAttention modules. --torch: ours through performer.torch on the
tensors FT gets (what a user switching from FT runs; with --fb, autograd), not through NumPy.
Needs torch and fast-transformers. The
arithmetic these ratios are judged against: benchmarks/results/ft_goals.md.
"""
import statistics
import sys
import time

import numpy as np
import torch

import performer
import performer.torch as pt
from fast_transformers.attention.causal_linear_attention import CausalLinearAttention
from fast_transformers.attention.linear_attention import LinearAttention
from fast_transformers.causal_product import causal_dot_product
from fast_transformers.masking import FullMask, LengthMask, TriangularCausalMask

B, H, D = 1, 8, 64
CAUSAL_PRODUCT = dict(causal=True, feature_map="identity", normalize=False)
SETTLE_S = 0.15
REPEATS = 3


def seconds(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def cases(n, forward_backward, through_torch):
    """{name: (ours, FT's)}: zero-argument calls on the same random inputs."""
    rng = np.random.default_rng(1)
    q, k, v, dout = (rng.standard_normal((B, H, n, D), dtype=np.float32) for _ in range(4))
    if forward_backward:
        inputs = [torch.from_numpy(x).requires_grad_(True) for x in (q, k, v)]
        grad = torch.from_numpy(dout)

        def ft_product_fb():
            for x in inputs:
                x.grad = None
            causal_dot_product(*inputs).backward(grad)

        def ours_product_fb():
            if through_torch:
                for x in inputs:
                    x.grad = None
                pt.linear_attention(*inputs, **CAUSAL_PRODUCT).backward(grad)
                return
            performer.linear_attention(q, k, v, **CAUSAL_PRODUCT)
            performer.linear_attention_backward(q, k, v, dout, **CAUSAL_PRODUCT)

        return {"cp fwd+bwd": (ours_product_fb, ft_product_fb)}

    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    # FT's modules take B x N x H x D.
    mq, mk, mv = (torch.from_numpy(x).transpose(1, 2).contiguous() for x in (q, k, v))
    lengths = LengthMask(torch.full((B,), n, dtype=torch.int64), max_len=n)
    causal_mask, full_mask = TriangularCausalMask(n), FullMask(n)
    causal_module, full_module = CausalLinearAttention(D), LinearAttention(D)

    def ft_causal():
        with torch.no_grad():
            return causal_module(mq, mk, mv, causal_mask, lengths, lengths)

    def ft_full():
        with torch.no_grad():
            return full_module(mq, mk, mv, full_mask, lengths, lengths)

    def ft_product():
        with torch.no_grad():
            return causal_dot_product(tq, tk, tv)

    ours = pt.linear_attention if through_torch else performer.linear_attention
    if through_torch:
        q, k, v = tq, tk, tv
    return {"cp fwd": (lambda: ours(q, k, v, **CAUSAL_PRODUCT), ft_product),
            "linear causal fwd": (lambda: ours(q, k, v, causal=True), ft_causal),
            "linear full fwd": (lambda: ours(q, k, v), ft_full)}


def main():
    torch.set_num_threads(2)
    performer.set_num_threads(2)
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 16384
    rounds = int(args[1]) if len(args) > 1 else 5
    forward_backward = "--fb" in sys.argv
    through_torch = "--torch" in sys.argv
    # Counted work: 4·N·D·M per head for a forward, three times that with the backward.
    flops = B * H * 4.0 * n * D * D * (3 if forward_backward else 1)
    gemm = np.ones((1024, 1024), np.float32)
    for name, (ours, ft) in cases(n, forward_backward, through_torch).items():
        ours()
        ft()
        ratios, ours_share, ft_share = [], [], []
        for round_index in range(rounds):
            before = seconds(lambda: gemm @ gemm)
            time.sleep(SETTLE_S)
            # Each side runs REPEATS calls back to back and keeps their median: the first call
            # after the other side's may share the cores with its still-spinning workers
            # (PyTorch's OpenMP pool after FT) or wake its own sleeping ones; which side goes
            # first alternates between rounds.
            first, second = (ft, ours) if round_index % 2 else (ours, ft)
            first_times = [seconds(first) for _ in range(REPEATS)]
            second_times = [seconds(second) for _ in range(REPEATS)]
            ours_times, ft_times = (second_times, first_times) if round_index % 2 else (first_times, second_times)
            ours_time, ft_time = statistics.median(ours_times), statistics.median(ft_times)
            after = seconds(lambda: gemm @ gemm)
            peak = 2 * 1024 ** 3 / min(before, after) / 1e9
            ratios.append(ours_time / ft_time)
            ours_share.append(flops / ours_time / 1e9 / peak)
            ft_share.append(flops / ft_time / 1e9 / peak)
        print(f"N={n} {name:18s} ours/FT median {statistics.median(ratios):.3f} (min {min(ratios):.3f})  "
              f"ours {statistics.median(ours_share):.0%} FT {statistics.median(ft_share):.0%} of paired peak",
              flush=True)


if __name__ == "__main__":
    main()
