"""Exact softmax attention at the Hugging Face Llama benchmark's shape (issue 9): ours vs PyTorch's SDPA.

    python benchmarks/softmax_d32.py [--sizes 512,2048] [--threads 1,2] [--dims 32] [--rounds 7]
                                     [--executor own|torch]

B = 1, H = 8 query heads on Hk = 2 key heads (GQA), causal, float32, q, k, v contiguous B x H x N x D
(what Llama's rotary hands the attention). In one process, for each thread count
(torch.set_num_threads and performer's count alike) and N, alternating (the order reversed every
round): SDPA forward (no grad) and forward+backward (autograd, enable_gqa, is_causal), our bare
kernels forward and forward+backward (the C extension on preallocated tensors). backward = the
medians' difference. Each cell is the median of `rounds` runs, wall and process CPU time (at 2
threads CPU time counts both threads, and PyTorch's OpenMP workers spinning). GF/s counts
4 * N^2/2 * D * H flops for the forward (causal half) and 2.5x that for the backward; the
machine's rate of the moment is NumPy's 1-thread 1024^3 sgemm, measured between the rows.
Not a test: it prints a table.
"""
import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # NumPy's sgemm: 1 thread (the reference rate)

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import performer  # noqa: E402
from performer import _performer as ext  # noqa: E402

HEADS, KEY_HEADS = 8, 2


def clocks(body):
    wall, cpu = time.perf_counter(), time.process_time()
    body()
    return time.perf_counter() - wall, time.process_time() - cpu


def sgemm_rate(size=1024, runs=3):
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    a @ a
    best = min(clocks(lambda: a @ a)[1] for _ in range(runs))
    return 2 * size ** 3 / best / 1e9


def calls(n, d):
    """{name: f()} for the four timed calls at one shape."""
    generator = torch.Generator().manual_seed(n * 100 + d)
    q = torch.randn(1, HEADS, n, d, generator=generator)
    k = torch.randn(1, KEY_HEADS, n, d, generator=generator)
    v = torch.randn(1, KEY_HEADS, n, d, generator=generator)
    dout = torch.randn(1, HEADS, n, d, generator=generator)
    scale = d ** -0.5
    out, lse = torch.empty_like(q), q.new_empty(1, HEADS, n)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    # The extension reads buffers: NumPy views of the same memory (no copy).
    qa, ka, va, outa, lsea, douta, dqa, dka, dva = (t.numpy() for t in (q, k, v, out, lse, dout, dq, dk, dv))

    def sdpa_forward():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)

    def sdpa_both():
        qq, kk, vv = (t.detach().requires_grad_() for t in (q, k, v))
        F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, scale=scale, enable_gqa=True).backward(dout)

    def ours_forward():
        ext.softmax_forward(qa, ka, va, outa, None, True, scale, None, None)

    def ours_both():
        ext.softmax_forward(qa, ka, va, outa, lsea, True, scale, None, None)
        ext.softmax_backward(qa, ka, va, outa, lsea, douta, dqa, dka, dva, True, scale, None, None)

    return {"sdpa fwd": sdpa_forward, "sdpa fwd+bwd": sdpa_both, "ours fwd": ours_forward, "ours fwd+bwd": ours_both}


def check(n, d):
    """Our kernels against SDPA once (a benchmark of wrong results is worthless)."""
    generator = torch.Generator().manual_seed(7)
    q = torch.randn(1, HEADS, n, d, generator=generator, dtype=torch.float64)
    k, v = (torch.randn(1, KEY_HEADS, n, d, generator=generator, dtype=torch.float64) for _ in range(2))
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    out = torch.empty(1, HEADS, n, d)
    ext.softmax_forward(q.float().numpy(), k.float().numpy(), v.float().numpy(), out.numpy(), None, True,
                        d ** -0.5, None, None)
    error = (out.double() - reference).abs().max().item()
    assert error < 1e-4, "ours differs from SDPA by %g at N=%d D=%d" % (error, n, d)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="512,2048")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--dims", default="32")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--executor", choices=("own", "torch"), default="own",
                        help="own: the library's worker threads; torch: PyTorch's OpenMP pool (performer.torch)")
    options = parser.parse_args()
    print("# torch %s, performer %s (%s), load %.1f, executor %s, OPENBLAS_NUM_THREADS=%s" % (
        torch.__version__, performer.__version__, performer.kernel_isa(), os.getloadavg()[0], options.executor,
        os.environ["OPENBLAS_NUM_THREADS"]))
    print("| threads | N | D | pass | sdpa ms (wall) | ours ms (wall) | sdpa CPU ms | ours CPU ms | s (CPU) "
          "| ours GF/s (CPU) | sgemm GF/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for threads in (int(x) for x in options.threads.split(",")):
        torch.set_num_threads(threads)
        if options.executor == "torch":
            from performer.torch import _threads
            _threads.use_torch_threads(True)
            performer.set_num_threads(0)
        else:
            performer.set_num_threads(threads)
        for n in (int(x) for x in options.sizes.split(",")):
            for d in (int(x) for x in options.dims.split(",")):
                check(n, d)
                timed = calls(n, d)
                names = list(timed)
                samples = {name: [] for name in names}
                for name in names:
                    timed[name]()  # warm up
                for r in range(options.rounds):
                    for name in (names if r % 2 == 0 else names[::-1]):
                        samples[name].append(clocks(timed[name]))
                rate = sgemm_rate()
                med = {name: [statistics.median(x[i] for x in samples[name]) * 1e3 for i in (0, 1)] for name in names}
                forward_flops = 2.0 * HEADS * n * n * d
                for pass_, flops in (("fwd", forward_flops), ("bwd", 2.5 * forward_flops),
                                     ("fwd+bwd", 3.5 * forward_flops)):
                    if pass_ == "bwd":
                        sdpa = [b - a for a, b in zip(med["sdpa fwd"], med["sdpa fwd+bwd"])]
                        ours = [b - a for a, b in zip(med["ours fwd"], med["ours fwd+bwd"])]
                    else:
                        sdpa, ours = med["sdpa " + pass_], med["ours " + pass_]
                    print("| %d | %d | %d | %s | %.2f | %.2f | %.2f | %.2f | %.2fx | %.1f | %.1f |" % (
                        threads, n, d, pass_, sdpa[0], ours[0], sdpa[1], ours[1], sdpa[1] / ours[1],
                        flops / ours[1] / 1e6, rate), flush=True)


if __name__ == "__main__":
    main()
