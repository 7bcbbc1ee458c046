#!/usr/bin/env python3
"""libperformer benchmark: our kernels against the machine's matrix-multiply peak and the peers
that are installed, measured in one process.

    python benchmarks/bench.py                      # every suite, default sizes
    python benchmarks/bench.py --suite softmax --sizes 256,1024,4096
    python benchmarks/bench.py --quick              # small sizes, for a smoke run

For each case it prints the median time over repeated runs, the achieved GFLOP/s, that as a
fraction of numpy's float32 GEMM measured in the same run (the practical peak), the extra peak
memory of one call (measured in a fresh subprocess), and the same figures for every installed
peer (PyTorch's scaled_dot_product_attention, a PyTorch recurrent step, performer-pytorch's
FastAttention, fast-transformers' linear-attention modules and causal_dot_product). It writes the
table as Markdown to benchmarks/results/<suite>.md and, when matplotlib is installed, a PNG plot
beside it.

Not a test: the numbers depend on the machine and its load. Ratios in one run are what count.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------------------
# Timing and memory


def median_time(fn: Callable[[], object], *, min_runs: int = 5, budget_s: float = 8.0) -> float:
    """Median wall time of fn() in seconds, after one warm-up call; at least min_runs runs
    (at least 3 when a single run exceeds the budget)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


def sgemm_peak(n: int = 2048, runs: int = 7) -> float:
    """numpy float32 GEMM GFLOP/s on square n×n matrices (the machine's practical peak)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    seconds = median_time(lambda: a @ b, min_runs=runs)
    # OpenBLAS's threads spin for tens of ms after a GEMM; the case timed next would share the
    # cores with them (a 30 ms call ran 1.3x slower right after it, benchmarks/ft_goals.py).
    time.sleep(0.15)
    return 2 * n**3 / seconds / 1e9


def peak_memory_mb(suite: str, case: str, impl: str, n: int, threads: int) -> float | None:
    """Extra peak RSS of one call, in MiB, measured in a fresh interpreter (inputs excluded)."""
    cmd = [sys.executable, __file__, "--memory-probe", json.dumps([suite, case, impl, n, threads])]
    env = dict(os.environ)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(field)


# ----------------------------------------------------------------------------------------
# Cases


@dataclass
class Impl:
    """One implementation of a case: prepare(n) builds inputs and returns the call to time."""

    name: str
    prepare: Callable[[int], Callable[[], object]]
    max_n: int | None = None  # larger sizes are skipped (a peer too slow to time there)


@dataclass
class Case:
    """flops(n) is the work of one call; a call that is too short to time alone is repeated
    `repeat` times inside the timed function (its impls loop), and times are per call."""

    name: str
    flops: Callable[[int], float]
    impls: list[Impl] = field(default_factory=list)
    repeat: int = 1
    unit: str = "ms"


def repeated(fn: Callable[[], object], times: int) -> Callable[[], None]:
    def loop() -> None:
        for _ in range(times):
            fn()

    return loop


def softmax_cases(threads: int) -> list[Case]:
    """Exact softmax attention, B=1, H=8, D=M=64, N=L, float32; plus multi-query attention
    (one key head for the 8 query heads) fwd+bwd up to N=4096."""
    import performer

    B, H, D = 1, 8, 64
    MQA_MAX_N = 4096

    def inputs(n: int, seed: int = 0, key_heads: int = H):
        rng = np.random.default_rng(seed)
        q, dout = (rng.standard_normal((B, H, n, D), dtype=np.float32) for _ in range(2))
        k, v = (rng.standard_normal((B, key_heads, n, D), dtype=np.float32) for _ in range(2))
        return q, k, v, dout

    def ours_forward(causal: bool):
        def prepare(n: int):
            q, k, v, _ = inputs(n)
            return lambda: performer.softmax_attention(q, k, v, causal=causal)

        return Impl("libperformer", prepare)

    def ours_training(causal: bool, key_heads: int = H):
        def prepare(n: int):
            q, k, v, dout = inputs(n, key_heads=key_heads)

            def step():
                out, lse = performer.softmax_attention(q, k, v, causal=causal, return_lse=True)
                return performer.softmax_attention_backward(q, k, v, out, lse, dout, causal=causal)

            return step

        return Impl("libperformer", prepare, max_n=MQA_MAX_N if key_heads != H else None)

    peers: list[Callable[..., Impl]] = []
    try:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(threads)

        def torch_impl(causal: bool, training: bool, key_heads: int = H) -> Impl:
            grouped = key_heads != H

            def prepare(n: int):
                q, k, v, dout = (torch.from_numpy(x) for x in inputs(n, key_heads=key_heads))
                if not training:
                    def forward():
                        with torch.no_grad():
                            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=grouped)

                    return forward
                qg, kg, vg = (x.clone().requires_grad_(True) for x in (q, k, v))

                def step():
                    for x in (qg, kg, vg):
                        x.grad = None
                    out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal, enable_gqa=grouped)
                    out.backward(dout)
                    return qg.grad

                return step

            name = f"torch {torch.__version__} SDPA" + (" (enable_gqa)" if grouped else "")
            return Impl(name, prepare, max_n=MQA_MAX_N if grouped else None)

        peers.append(torch_impl)
    except ImportError:
        pass

    def forward_flops(causal: bool):
        # Two N×L×D products; a causal mask halves the work (N = L).
        return lambda n: B * H * 4.0 * n * n * D * (0.5 if causal else 1.0)

    cases = []
    for causal in (False, True):
        label = "causal" if causal else "full"
        fwd = forward_flops(causal)
        cases.append(Case(f"softmax fwd {label}", fwd, [ours_forward(causal)] + [p(causal, False) for p in peers]))
        # Backward = 5 products (2.5× forward), the FlashAttention convention.
        cases.append(Case(f"softmax fwd+bwd {label}", lambda n, f=fwd: 3.5 * f(n),
                          [ours_training(causal)] + [p(causal, True) for p in peers]))
    cases.append(Case("softmax fwd+bwd MQA (Hk=1)", lambda n: 3.5 * forward_flops(False)(n),
                      [ours_training(False, key_heads=1)] + [p(False, True, key_heads=1) for p in peers]))
    return cases


def linear_cases(threads: int) -> list[Case]:
    """Linear attention (elu+1), B=1, H=8, D=M=64, N=L, float32.

    FLOPs: the recurrent form's 4·N·C·M per head (a rank-1 state update and a read-out per
    token, C = D), forward; fwd+bwd counts 3× that (the backward is two such sweeps)."""
    import performer

    B, H, D = 1, 8, 64

    def inputs(n: int, seed: int = 1):
        rng = np.random.default_rng(seed)
        return tuple(rng.standard_normal((B, H, n, D), dtype=np.float32) for _ in range(4))

    def ours(causal: bool, training: bool) -> Impl:
        def prepare(n: int):
            q, k, v, dout = inputs(n)
            if not training:
                return lambda: performer.linear_attention(q, k, v, causal=causal)

            def step():
                performer.linear_attention(q, k, v, causal=causal)
                return performer.linear_attention_backward(q, k, v, dout, causal=causal)

            return step

        return Impl("libperformer", prepare)

    def flops(n: int) -> float:
        return B * H * 4.0 * n * D * D

    def fast_transformers(causal: bool, training: bool) -> Impl | None:
        """fast-transformers' own module (B x N x H x D, its native layout), when installed."""
        try:
            import torch
            from fast_transformers.attention.causal_linear_attention import CausalLinearAttention
            from fast_transformers.attention.linear_attention import LinearAttention
            from fast_transformers.masking import FullMask, LengthMask, TriangularCausalMask
        except ImportError:
            return None

        def prepare(n: int):
            q, k, v, dout = (torch.from_numpy(x).transpose(1, 2).contiguous() for x in inputs(n))
            module = (CausalLinearAttention if causal else LinearAttention)(D)
            mask = TriangularCausalMask(n) if causal else FullMask(n)
            lengths = LengthMask(torch.full((B,), n, dtype=torch.int64), max_len=n)
            if not training:
                def forward():
                    with torch.no_grad():
                        return module(q, k, v, mask, lengths, lengths)
                return forward
            q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)

            def step():
                for t in (q, k, v):
                    t.grad = None
                module(q, k, v, mask, lengths, lengths).backward(dout)

            return step

        return Impl("fast-transformers", prepare)

    cases = []
    for causal in (False, True):
        label = "causal" if causal else "full"
        for training in (False, True):
            impls = [ours(causal, training), fast_transformers(causal, training)]
            cases.append(Case(f"linear {'fwd+bwd' if training else 'fwd'} {label}",
                              (lambda n: 3 * flops(n)) if training else flops, [i for i in impls if i]))
    return cases


def causal_product_cases(threads: int) -> list[Case]:
    """The un-normalized causal product O_i = sum_{j<=i} (q_i . k_j) v_j (fast-transformers'
    causal_dot_product: features given directly), B=1, H=8, D=M=64, float32: ours is
    linear_attention(feature_map="identity", normalize=False, causal=True). FLOPs as linear."""
    import performer

    B, H, D = 1, 8, 64

    def inputs(n: int, seed: int = 2):
        rng = np.random.default_rng(seed)
        return tuple(rng.standard_normal((B, H, n, D), dtype=np.float32) for _ in range(4))

    def ours(training: bool) -> Impl:
        options = dict(causal=True, feature_map="identity", normalize=False)

        def prepare(n: int):
            q, k, v, dout = inputs(n)
            if not training:
                return lambda: performer.linear_attention(q, k, v, **options)

            def step():
                performer.linear_attention(q, k, v, **options)
                return performer.linear_attention_backward(q, k, v, dout, **options)

            return step

        return Impl("libperformer", prepare)

    def fast_transformers(training: bool) -> Impl | None:
        try:
            import torch
            from fast_transformers.causal_product import causal_dot_product
        except ImportError:
            return None

        def prepare(n: int):
            q, k, v, dout = (torch.from_numpy(x) for x in inputs(n))
            if not training:
                def forward():
                    with torch.no_grad():
                        return causal_dot_product(q, k, v)
                return forward
            q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)

            def step():
                for t in (q, k, v):
                    t.grad = None
                causal_dot_product(q, k, v).backward(dout)

            return step

        return Impl("fast-transformers", prepare)

    def flops(n: int) -> float:
        return B * H * 4.0 * n * D * D

    cases = []
    for training in (False, True):
        impls = [i for i in (ours(training), fast_transformers(training)) if i]
        cases.append(Case(f"causal product {'fwd+bwd' if training else 'fwd'}",
                          (lambda n: 3 * flops(n)) if training else flops, impls))
    return cases


def favor_cases(threads: int) -> list[Case]:
    """FAVOR+ attention: positive features, m = 256 orthogonal chi-norm features, B=1, H=8,
    D=M=64, N=L, float32.

    FLOPs (per head, the mathematical work, the same for causal and bidirectional): the two
    projections X̂Wᵀ of queries and keys, 2·2·N·m·D, plus the state build φ(K)ᵀV, φ(K)ᵀ1 and the
    read-out φ(Q)S, φ(Q)z, 4·N·m·M (C = m); exponentials are not counted. fwd+bwd counts 3×
    the forward (the linear-attention convention). The "features" case is the feature map
    alone (favor_features of q: 2·N·m·D per head), to show the fraction of the GEMM peak the
    projection reaches.

    Peer, when importable: performer-pytorch's FastAttention(dim_heads=64, nb_features=256)
    on the CPU (its own orthogonal projection, its softmax_kernel features). Bidirectional it
    runs two einsums. Causal it uses fast-transformers' CausalDotProduct kernel when
    `fast_transformers.causal_product.causal_product_cuda` imports, else -- the usual case on
    a CPU-only install -- its pure-PyTorch fallback causal_linear_attention_noncuda (cumulative
    sums over 128 pieces, materializing a C×M context per position); the row label says which.
    """
    import performer

    B, H, D, m = 1, 8, 64, 256
    projection = performer.FavorProjection(D, m, seed=0)

    def inputs(n: int, seed: int = 3):
        rng = np.random.default_rng(seed)
        # Entries of sd 0.5: |x̂|² ≈ 2 at D = 64, where the estimate is usable.
        q, k = ((0.5 * rng.standard_normal((B, H, n, D))).astype(np.float32) for _ in range(2))
        v, dout = (rng.standard_normal((B, H, n, D), dtype=np.float32) for _ in range(2))
        return q, k, v, dout

    def ours(causal: bool, training: bool) -> Impl:
        def prepare(n: int):
            q, k, v, dout = inputs(n)
            if not training:
                return lambda: performer.favor_attention(q, k, v, projection, causal=causal)

            def step():
                performer.favor_attention(q, k, v, projection, causal=causal)
                return performer.favor_attention_backward(q, k, v, dout, projection, causal=causal)

            return step

        return Impl("libperformer", prepare)

    def features(n: int):
        q = inputs(n)[0]
        return lambda: performer.favor_features(q, projection)

    def flops(n: int) -> float:
        return B * H * (4.0 * n * m * D + 4.0 * n * m * D)

    peers: list[Callable[[bool, bool], Impl]] = []
    try:
        import contextlib
        import io
        import torch
        from performer_pytorch import FastAttention

        torch.set_num_threads(threads)
        try:
            import fast_transformers.causal_product.causal_product_cuda  # noqa: F401
            causal_kind = "fast-transformers CausalDotProduct"
        except ImportError:
            causal_kind = "causal_linear_attention_noncuda fallback"
        try:
            from importlib.metadata import version
            peer_version = version("performer-pytorch")
        except Exception:
            peer_version = "?"

        def peer(causal: bool, training: bool) -> Impl:
            def prepare(n: int):
                with contextlib.redirect_stdout(io.StringIO()):  # its notice about the fallback
                    attention = FastAttention(dim_heads=D, nb_features=m, causal=causal)
                q, k, v, dout = (torch.from_numpy(x) for x in inputs(n))
                if not training:
                    def forward():
                        with torch.no_grad():
                            return attention(q, k, v)

                    return forward
                qg, kg, vg = (x.clone().requires_grad_(True) for x in (q, k, v))

                def step():
                    attention(qg, kg, vg).backward(dout)
                    return qg.grad

                return step

            label = f"performer-pytorch {peer_version} FastAttention"
            # Its pure-PyTorch causal fallback takes minutes per call beyond N = 4096.
            slow = causal and "fallback" in causal_kind
            return Impl(label + (f" ({causal_kind})" if causal else ""), prepare, max_n=4096 if slow else None)

        peers.append(peer)
    except ImportError:
        pass

    cases = [Case("favor features (q)", lambda n: B * H * 2.0 * n * m * D, [Impl("libperformer", features)])]
    for causal in (False, True):
        label = "causal" if causal else "full"
        cases.append(Case(f"favor fwd {label}", flops, [ours(causal, False)] + [p(causal, False) for p in peers]))
        cases.append(Case(f"favor fwd+bwd {label}", lambda n: 3 * flops(n),
                          [ours(causal, True)] + [p(causal, True) for p in peers]))
    return cases


DECODE_STEPS = 200


def decode_cases(threads: int) -> list[Case]:
    """One generated token at position n (B=1, H=8, D=M=64, float32), through Python: the
    linear-attention and FAVOR+ (m = 256, positive; the state of an n-token prompt loaded
    first) decoders (constant cost) beside softmax attention over a KV cache of n keys (cost
    grows with n). FLOPs per token: 4·C·M per head (linear decoder), 4·m·D + 4·m·M (FAVOR+),
    4·n·D (softmax)."""
    import performer

    B, H, D = 1, 8, 64
    rng = np.random.default_rng(2)

    def token():
        return tuple(rng.standard_normal((B, H, D), dtype=np.float32) for _ in range(3))

    def linear_decoder(n: int):
        decoder = performer.LinearDecoder(B, H, D, D)
        prefix = rng.standard_normal((B, H, n, D), dtype=np.float32)
        decoder.prefill(prefix, prefix, prefix)
        q, k, v = token()
        out = np.empty((B, H, D), dtype=np.float32)
        # A step costs the same at every position; the timed loop advances a few hundred.
        return repeated(lambda: decoder.step(q, k, v, out=out), DECODE_STEPS)

    def softmax_cache(n: int):
        k, v = (rng.standard_normal((B, H, n, D), dtype=np.float32) for _ in range(2))
        q = rng.standard_normal((B, H, 1, D), dtype=np.float32)
        return repeated(lambda: performer.softmax_attention(q, k, v, causal=True), DECODE_STEPS)

    m = 256
    projection = performer.FavorProjection(D, m, seed=0)

    def favor_decoder(n: int):
        decoder = performer.FavorDecoder(projection, B, H, D)
        prefix = (0.5 * rng.standard_normal((B, H, n, D))).astype(np.float32)
        _, state = performer.favor_attention(prefix, prefix, prefix, projection, causal=True, return_state=True)
        decoder.state = state
        q, k, v = token()
        out = np.empty((B, H, D), dtype=np.float32)
        return repeated(lambda: decoder.step(q, k, v, out=out), DECODE_STEPS)

    linear = Case("decode: linear decoder step", lambda n: B * H * 4.0 * D * D,
                  [Impl("libperformer", linear_decoder)], repeat=DECODE_STEPS, unit="µs")
    # FAVOR+ step per head: project q and k (2·2·m·D), update and read the state (4·m·M).
    favor = Case("decode: FAVOR+ decoder step (m=256)", lambda n: B * H * (4.0 * m * D + 4.0 * m * D),
                 [Impl("libperformer", favor_decoder)], repeat=DECODE_STEPS, unit="µs")
    softmax = Case("decode: softmax over KV cache", lambda n: B * H * 4.0 * n * D,
                   [Impl("libperformer", softmax_cache)], repeat=DECODE_STEPS, unit="µs")
    try:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(threads)

        def torch_recurrent(n: int):
            s = torch.randn(B, H, D, D)
            z = torch.randn(B, H, D).abs()
            q, k, v = (torch.from_numpy(x) for x in token())

            def step():
                with torch.no_grad():
                    fq, fk = F.elu(q) + 1, F.elu(k) + 1
                    s.add_(fk.unsqueeze(-1) * v.unsqueeze(-2))
                    z.add_(fk)
                    num = torch.einsum("bhc,bhcm->bhm", fq, s)
                    return num / (torch.einsum("bhc,bhc->bh", fq, z).unsqueeze(-1) + 1e-6)

            return repeated(step, DECODE_STEPS)

        def torch_cache(n: int):
            k, v = (torch.randn(B, H, n, D) for _ in range(2))
            q = torch.randn(B, H, 1, D)

            def step():
                with torch.no_grad():
                    return F.scaled_dot_product_attention(q, k, v)

            return repeated(step, DECODE_STEPS)

        def torch_favor_recurrent(n: int):
            w = torch.from_numpy(projection.matrix.astype(np.float32))
            s = torch.zeros(B, H, m, D)
            z = torch.zeros(B, H, m)
            q, k, v = (torch.from_numpy(x) for x in token())
            scale = D ** -0.25

            def features(x):
                xh = x * scale
                return torch.exp(xh @ w.T - (xh * xh).sum(-1, keepdim=True) / 2) / m ** 0.5

            def step():
                with torch.no_grad():
                    fq, fk = features(q), features(k)
                    s.add_(fk.unsqueeze(-1) * v.unsqueeze(-2))
                    z.add_(fk)
                    num = torch.einsum("bhc,bhcm->bhm", fq, s)
                    return num / torch.einsum("bhc,bhc->bh", fq, z).unsqueeze(-1)

            return repeated(step, DECODE_STEPS)

        linear.impls.append(Impl(f"torch {torch.__version__} recurrent step", torch_recurrent))
        favor.impls.append(Impl(f"torch {torch.__version__} recurrent step (unstabilized)", torch_favor_recurrent))
        softmax.impls.append(Impl(f"torch {torch.__version__} SDPA", torch_cache))
    except ImportError:
        pass
    return [linear, favor, softmax]


SUITES: dict[str, Callable[[int], list[Case]]] = {
    "softmax": softmax_cases,
    "linear": linear_cases,
    "causal_product": causal_product_cases,
    "favor": favor_cases,
    "decode": decode_cases,
}
DEFAULT_SIZES = {
    "softmax": [256, 1024, 4096, 16384],
    "linear": [256, 1024, 4096, 16384, 65536],
    "causal_product": [1024, 4096, 16384],
    "favor": [1024, 4096, 16384, 65536],
    "decode": [1024, 4096, 16384],
}


def find_impl(suite: str, case_name: str, impl_name: str, threads: int) -> Impl:
    for case in SUITES[suite](threads):
        if case.name == case_name:
            for impl in case.impls:
                if impl.name == impl_name:
                    return impl
    raise KeyError(f"{suite}/{case_name}/{impl_name}")


def memory_probe(spec: str) -> None:
    suite, case_name, impl_name, n, threads = json.loads(spec)
    set_threads(threads)
    call = find_impl(suite, case_name, impl_name, threads).prepare(n)
    # Preparing the inputs already raised the high-water mark (float64 temporaries): reset it,
    # so the peak measured is the call's own (outputs and scratch) above what is resident now.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_mb("VmRSS")
    call()
    print(max(0.0, status_mb("VmHWM") - before))


def set_threads(threads: int) -> None:
    import performer

    performer.set_num_threads(threads)


# ----------------------------------------------------------------------------------------
# Report


def run_suite(suite: str, sizes: list[int], threads: int, peak: float, measure_memory: bool) -> list[dict]:
    rows = []
    for case in SUITES[suite](threads):
        for n in sizes:
            for impl in case.impls:
                if impl.max_n is not None and n > impl.max_n:
                    continue
                call = impl.prepare(n)
                seconds = median_time(call) / case.repeat
                del call
                # The machine is shared: a GEMM timed right after each case is the peak that
                # case is compared with, so load that comes and goes cancels in the ratio.
                local_peak = sgemm_peak(1024, runs=5)
                gflops = case.flops(n) / seconds / 1e9
                memory = peak_memory_mb(suite, case.name, impl.name, n, threads) if measure_memory else None
                row = dict(case=case.name, n=n, impl=impl.name, ms=seconds * 1e3, unit=case.unit, gflops=gflops,
                           peak_fraction=gflops / local_peak, memory_mb=memory)
                rows.append(row)
                mem = "-" if memory is None else f"{memory:.1f}"
                shown = seconds * (1e6 if case.unit == "µs" else 1e3)
                print(f"{case.name:30s} N={n:<6d} {impl.name:30s} {shown:10.2f} {case.unit} "
                      f"{gflops:8.1f} GFLOP/s {gflops / local_peak:6.1%} of peak  +{mem} MiB", flush=True)
    return rows


def write_markdown(suite: str, rows: list[dict], peak: float, threads: int) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{suite}.md"
    lines = [
        f"# {suite} benchmark",
        "",
        f"{threads} threads; numpy float32 GEMM peak measured at the start of the run: {peak:.1f} GFLOP/s. "
        "Times are medians of repeated runs. \"of peak\" divides a case's rate by a 1024³ numpy GEMM "
        "timed right after it (the machine is shared, so the peak is paired with each case). "
        "Memory is the extra peak RSS of one call, measured in a fresh process.",
        "",
        "| case | N | implementation | time | GFLOP/s | of peak | extra memory (MiB) | time vs ours |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    ours = {(r["case"], r["n"]): r["ms"] for r in rows if r["impl"] == "libperformer"}
    for r in rows:
        mem = "-" if r["memory_mb"] is None else f"{r['memory_mb']:.1f}"
        ratio = r["ms"] / ours[(r["case"], r["n"])] if (r["case"], r["n"]) in ours else float("nan")
        shown = f"{r['ms'] * 1e3:.1f} µs" if r["unit"] == "µs" else f"{r['ms']:.2f} ms"
        lines.append(f"| {r['case']} | {r['n']} | {r['impl']} | {shown} | {r['gflops']:.1f} | "
                     f"{r['peak_fraction']:.0%} | {mem} | {ratio:.2f}× |")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_plot(suite: str, rows: list[dict], peak: float) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cases = sorted({r["case"] for r in rows}, key=[r["case"] for r in rows].index)
    fig, axes = plt.subplots(1, len(cases), figsize=(4.5 * len(cases), 4), squeeze=False)
    for ax, case in zip(axes[0], cases):
        for impl in sorted({r["impl"] for r in rows if r["case"] == case}):
            pts = [(r["n"], r["gflops"]) for r in rows if r["case"] == case and r["impl"] == impl]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl)
        ax.axhline(peak, color="gray", linestyle="--", label="numpy sgemm")
        ax.set_xscale("log", base=2)
        ax.set_title(case)
        ax.set_xlabel("N")
        ax.set_ylabel("GFLOP/s")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = RESULTS / f"{suite}.png"
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", action="append", choices=sorted(SUITES), help="suite(s) to run; default all")
    parser.add_argument("--sizes", help="comma-separated N values (default per suite)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return

    import performer

    set_threads(args.threads)
    peak = sgemm_peak()
    isa = performer.kernel_isa() if hasattr(performer, "kernel_isa") else "?"
    print(f"libperformer {performer.__version__} ({isa} kernels), {args.threads} threads; "
          f"numpy sgemm peak {peak:.1f} GFLOP/s")
    for suite in args.suite or sorted(SUITES):
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else DEFAULT_SIZES[suite]
        if args.quick:
            sizes = [s for s in sizes if s <= 1024] or sizes[:1]
        rows = run_suite(suite, sizes, args.threads, peak, not args.no_memory)
        print(f"wrote {write_markdown(suite, rows, peak, args.threads)}")
        plot = write_plot(suite, rows, peak)
        if plot:
            print(f"wrote {plot}")


if __name__ == "__main__":
    main()
