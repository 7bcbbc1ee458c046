"""Per-call cost at tiny sizes, through Python: what a decode loop or a small model pays per
attention call besides the arithmetic (argument handling, output allocation, handing work to
threads). Medians of repeated batches of calls; PyTorch's SDPA beside our ops when installed.

    python benchmarks/overhead.py              # prints a Markdown table
    python benchmarks/overhead.py --write      # also writes benchmarks/results/overhead.md
    python benchmarks/overhead.py --cpu        # the calling thread's CPU time instead of wall time
                                               # (steadier on a loaded host; tiny calls run inline)

Not a test: nothing is asserted. The machine is shared; run it a few times and compare medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

import performer

RESULTS = Path(__file__).resolve().parent / "results"
_LIBRARIES = []


CLOCK = time.perf_counter


def per_call_us(fn: Callable[[], object], calls: int = 2000, rounds: int = 9) -> float:
    """Median over `rounds` of the mean time of `calls` back-to-back calls, in microseconds."""
    for _ in range(calls // 4):
        fn()
    times = []
    for _ in range(rounds):
        start = CLOCK()
        for _ in range(calls):
            fn()
        times.append((CLOCK() - start) / calls * 1e6)
    return statistics.median(times)


def numpy_cases() -> list[tuple[str, Callable[[], object]]]:
    rng = np.random.default_rng(0)

    def a(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    q1, k1, v1 = a(1, 1, 1, 64), a(1, 1, 1, 64), a(1, 1, 1, 64)
    q8, k8, v8 = a(1, 8, 1, 64), a(1, 8, 1, 64), a(1, 8, 1, 64)
    out8, lse8 = performer.softmax_attention(q8, k8, v8, return_lse=True)
    out1, lse1 = performer.softmax_attention(q1, k1, v1, return_lse=True)
    projection = performer.FavorProjection(64, 64, seed=0)
    B, H, D, M = 1, 8, 64, 64
    decoder = performer.LinearDecoder(B, H, D, M)
    token = a(B, H, D), a(B, H, D), a(B, H, M)
    step_out = np.empty((B, H, M), np.float32)
    S, z = np.zeros((B, H, D, M), np.float32), np.zeros((B, H, D), np.float32)
    favor_decoder = performer.FavorDecoder(projection, B, H, M)
    return [
        ("softmax_attention 1x1x1x64", lambda: performer.softmax_attention(q1, k1, v1)),
        ("softmax_attention 1x8x1x64", lambda: performer.softmax_attention(q8, k8, v8)),
        ("softmax_attention_backward 1x1x1x64",
         lambda: performer.softmax_attention_backward(q1, k1, v1, out1, lse1, out1)),
        ("softmax_attention_backward 1x8x1x64",
         lambda: performer.softmax_attention_backward(q8, k8, v8, out8, lse8, out8)),
        ("linear_attention 1x1x1x64", lambda: performer.linear_attention(q1, k1, v1)),
        ("linear_attention causal 1x1x1x64", lambda: performer.linear_attention(q1, k1, v1, causal=True)),
        ("linear_attention_backward 1x1x1x64", lambda: performer.linear_attention_backward(q1, k1, v1, out1)),
        ("favor_attention 1x1x1x64 (m=64)", lambda: performer.favor_attention(q1, k1, v1, projection)),
        ("LinearDecoder.step B=1 H=8 D=M=64 (out=)", lambda: decoder.step(*token, step_out)),
        ("LinearDecoder.step on a caller state", lambda: decoder.step(*token, step_out, state=(S, z))),
        ("LinearDecoder.state (get, 8x64x64)", lambda: decoder.state),
        ("LinearDecoder.set_state (8x64x64)", lambda: decoder.set_state(S, z)),
        ("numpy: copy of S and z (reference)", lambda: (S.copy(), z.copy())),
        ("FavorDecoder.step B=1 H=8 D=M=64 m=64 (out=)", lambda: favor_decoder.step(*token, step_out)),
    ]


def reference_cases() -> list[tuple[str, Callable[[], object]]]:
    """PyTorch's SDPA at 1x1x1x64 when torch is installed: the yardstick of a loaded host (the
    targets were set where it read ~7 µs), also in --numpy-only runs."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return []
    q1 = torch.randn(1, 1, 1, 64)
    return [("torch SDPA 1x1x1x64 (reference)", lambda: F.scaled_dot_product_attention(q1, q1, q1))]


def transformers_cases() -> list[tuple[str, Callable[[], object]]]:
    """One decoding step of a Hugging Face layer (1 query against a 64-token cache, GQA 8 on 2,
    D = 32, as transformers hands them over) under no_grad: transformers' sdpa_attention_forward
    against performer's attention_forward, and each side's mask function for the step (called
    once per forward, not per layer)."""
    try:
        import torch
        from transformers import masking_utils
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        from performer.torch import transformers as glue
    except ImportError:
        return []
    L = 64
    q = torch.randn(1, 1, 8, 32).transpose(1, 2)
    k, v = torch.randn(1, 2, L, 32), torch.randn(1, 2, L, 32)
    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups = True, 4
    padding = torch.ones(1, L, dtype=torch.long)
    step = dict(batch_size=1, q_length=1, kv_length=L, q_offset=L - 1, kv_offset=0,
                mask_function=masking_utils.causal_mask_function, attention_mask=padding)
    ranges = glue.attention_mask(**step)
    sdpa_mask = masking_utils.sdpa_mask(**step)

    def no_grad(fn):
        def call():
            with torch.no_grad():
                return fn()
        return call

    return [
        ("transformers sdpa_attention_forward, decode step (reference)",
         no_grad(lambda: sdpa_attention_forward(module, q, k, v, sdpa_mask, scaling=0.17))),
        ("performer.torch.transformers.attention_forward, decode step",
         no_grad(lambda: glue.attention_forward(module, q, k, v, ranges, scaling=0.17))),
        ("transformers sdpa_mask, decode step (reference)", lambda: masking_utils.sdpa_mask(**step)),
        ("performer.torch.transformers.attention_mask, decode step", lambda: glue.attention_mask(**step)),
    ]


def torch_cases() -> list[tuple[str, Callable[[], object]]]:
    try:
        import torch
        import torch.nn.functional as F

        import performer.torch as pt
    except ImportError:
        return []
    q1 = torch.randn(1, 1, 1, 64)
    q8 = torch.randn(1, 8, 1, 64)
    g1 = q1.clone().requires_grad_()
    dout1 = torch.randn(1, 1, 1, 64)
    grad = torch.autograd.grad
    W = torch.randn(64, 64)
    ops = torch.ops.performer
    B, H, D, M = 1, 8, 64, 64
    token = torch.randn(B, H, D), torch.randn(B, H, D), torch.randn(B, H, M)
    step_out = torch.empty(B, H, M)
    S, z = torch.zeros(B, H, D, M), torch.zeros(B, H, D)
    decoder = pt.LinearDecoder(B, H, D, M)
    favor_decoder = pt.FavorDecoder(W, B, H, M)
    # The floors of any op: the dispatcher calling a Python kernel that does nothing, and the
    # allocation of one small output tensor.
    floor = torch.library.Library("performer_overhead_floor", "DEF")
    floor.define("nop(Tensor q) -> Tensor")
    floor.impl("nop", lambda q: q, "CPU")
    _LIBRARIES.append(floor)  # the op lives as long as its Library object
    nop = torch.ops.performer_overhead_floor.nop
    return [
        ("no-op custom op through the dispatcher (floor)", lambda: nop(q1)),
        ("torch.empty(1, 8, 64) (allocation floor)", lambda: torch.empty((B, H, M))),
        ("torch SDPA 1x1x1x64 (reference)", lambda: F.scaled_dot_product_attention(q1, q1, q1)),
        ("performer.torch.softmax_attention 1x1x1x64", lambda: pt.softmax_attention(q1, q1, q1)),
        ("torch.ops.performer.softmax 1x1x1x64 (dispatcher, with lse)",
         lambda: ops.softmax(q1, q1, q1, False, None, None, None)),
        ("performer.torch.softmax_attention 1x1x1x64, q requires grad (autograd op)",
         lambda: pt.softmax_attention(g1, q1, q1)),
        ("torch SDPA 1x1x1x64, q requires grad (reference)", lambda: F.scaled_dot_product_attention(g1, q1, q1)),
        ("performer.torch.linear_attention 1x1x1x64, q requires grad", lambda: pt.linear_attention(g1, q1, q1)),
        ("performer.torch.favor_attention 1x1x1x64 (W), q requires grad", lambda: pt.favor_attention(g1, q1, q1, W)),
        ("performer.torch.linear_state 1x1x1x64, k requires grad", lambda: pt.linear_state(g1, q1)),
        ("performer.torch.favor_state 1x1x1x64 (W), k requires grad", lambda: pt.favor_state(g1, q1, W)),
        ("torch SDPA 1x1x1x64 forward + backward to q (reference)",
         lambda: grad(F.scaled_dot_product_attention(g1, q1, q1), g1, dout1)),
        ("performer.torch.softmax_attention 1x1x1x64 forward + backward to q",
         lambda: grad(pt.softmax_attention(g1, q1, q1), g1, dout1)),
        ("performer.torch.linear_attention 1x1x1x64 forward + backward to q",
         lambda: grad(pt.linear_attention(g1, q1, q1), g1, dout1)),
        ("performer.torch.favor_attention 1x1x1x64 (W) forward + backward to q",
         lambda: grad(pt.favor_attention(g1, q1, q1, W), g1, dout1)),
        ("torch SDPA 1x8x1x64 (reference)", lambda: F.scaled_dot_product_attention(q8, q8, q8)),
        ("performer.torch.softmax_attention 1x8x1x64", lambda: pt.softmax_attention(q8, q8, q8)),
        ("performer.torch.linear_attention 1x1x1x64", lambda: pt.linear_attention(q1, q1, q1)),
        ("torch.ops.performer.linear 1x1x1x64 (dispatcher)",
         lambda: ops.linear(q1, q1, q1, None, None, False, 0, 1e-6, True, None, None, False)),
        ("performer.torch.favor_attention 1x1x1x64 (W 64x64 tensor)", lambda: pt.favor_attention(q1, q1, q1, W)),
        ("torch.ops.performer.favor 1x1x1x64 (dispatcher)",
         lambda: ops.favor(q1, q1, q1, W, None, None, None, False, 0, None, 0.0, 1e-3, None, None, False)),
        ("performer.torch.LinearDecoder.step B=1 H=8 D=M=64", lambda: decoder.step(*token)),
        ("performer.torch.LinearDecoder.step (out=)", lambda: decoder.step(*token, step_out)),
        ("performer.torch.LinearDecoder.step on a caller state", lambda: decoder.step(*token, step_out, state=(S, z))),
        ("performer.torch.FavorDecoder.step B=1 H=8 D=M=64 m=64", lambda: favor_decoder.step(*token)),
        ("performer.torch.FavorDecoder.step (out=)", lambda: favor_decoder.step(*token, step_out)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/overhead.md")
    parser.add_argument("--threads", type=int, default=0, help="performer.set_num_threads (0: default)")
    parser.add_argument("--cpu", action="store_true", help="time the calling thread's CPU time (time.thread_time)")
    parser.add_argument("--numpy-only", action="store_true", help="skip the torch cases")
    args = parser.parse_args()
    global CLOCK
    if args.cpu:
        CLOCK = time.thread_time
    performer.set_num_threads(args.threads)
    lines = [
        "# Per-call cost at tiny sizes (through Python)",
        "",
        f"libperformer {performer.__version__}, kernels {performer.kernel_isa()}, "
        f"{performer.get_num_threads()} threads, float32; median of 9 rounds of back-to-back calls"
        + (" (CPU time of the calling thread)." if args.cpu else "."),
        "",
        "| call | µs per call |",
        "|---|---:|",
    ]
    for name, fn in numpy_cases() + (reference_cases() if args.numpy_only else torch_cases() + transformers_cases()):
        lines.append(f"| {name} | {per_call_us(fn):.2f} |")
        print(lines[-1], flush=True)
    if args.write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "overhead.md").write_text("\n".join(lines) + "\n")
        print(f"wrote {RESULTS / 'overhead.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
