"""Where the threads go when libperformer's kernels run inside a PyTorch process (issue 9, item 5).

    python benchmarks/threads_profile.py [--sizes 512,2048] [--rounds 15] [--between]

Shape: one attention layer of the small Llama of benchmarks/hf_llama.py (B=1, H=8, Hk=2, D=32, causal,
float32), q/k/v contiguous, outputs preallocated; the kernels are called through the C extension (no
autograd, no glue). Two parts:

1. Regions per call: a counting executor (ctypes, installed through performer_set_executor, running the
   tasks one after another on the caller) records every parallel region a call opens and its task count,
   at 2 threads. Each region is one GOMP_parallel (with its closing barrier) under performer.torch's
   executor, and one wake-up/wait of the library's own pool otherwise.
2. Time per call, alternating in this one process (the modes take turns each round; medians):
     torch 1         1 thread (torch.set_num_threads(1); performer follows it)
     torch 2         2 threads on PyTorch's OpenMP pool (performer.torch's default)
     own 2           2 threads on the library's own workers (performer.set_num_threads(2))
     sdpa 1, sdpa 2  torch's scaled_dot_product_attention (enable_gqa, is_causal) at 1 and 2 threads
   Columns: wall ms; CPU ms of the whole process; CPU ms of the calling thread; CPU ms of every other
   thread (workers computing, or spinning: process minus caller). --between runs a PyTorch matmul
   (n x 256 by 256 x 256, at the mode's thread count) before each timed call, untimed, as a model does:
   PyTorch's OpenMP workers then spin when our call starts, as they would between a model's ops.
On a shared host read CPU time and the ratios; wall times include queueing.
"""
import argparse
import ctypes
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F

import performer
import performer.torch as pt
from performer import _performer as ext
from performer.torch import _threads

B, H, HK, D = 1, 8, 2, 32


def timed(fn):
    """(wall, process CPU, calling thread CPU, other threads CPU) seconds of fn(). Both CPU clocks are
    exact (clock_gettime), not sampled at scheduler ticks as /proc/.../schedstat of a running thread is."""
    start, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
    fn()
    own, cpu = time.thread_time() - own, time.process_time() - cpu
    return time.perf_counter() - start, cpu, own, cpu - own


class Problem:
    def __init__(self, n):
        g = torch.Generator().manual_seed(n)
        self.q = torch.randn(B, H, n, D, generator=g)
        self.k = torch.randn(B, HK, n, D, generator=g)
        self.v = torch.randn(B, HK, n, D, generator=g)
        self.out, self.lse = torch.empty_like(self.q), torch.empty(B, H, n)
        self.dout = torch.randn(B, H, n, D, generator=g)
        self.dq, self.dk, self.dv = torch.empty_like(self.q), torch.empty_like(self.k), torch.empty_like(self.v)
        self.scale = 1 / math.sqrt(D)
        self.x, self.w = torch.randn(n, 256, generator=g), torch.randn(256, 256, generator=g)

    def forward(self):
        ext.softmax_forward(self.q, self.k, self.v, self.out, self.lse, True, self.scale, None, None)

    def backward(self):
        ext.softmax_backward(self.q, self.k, self.v, self.out, self.lse, self.dout, self.dq, self.dk, self.dv,
                             True, self.scale, None, None)

    def sdpa_forward(self):
        with torch.no_grad():
            F.scaled_dot_product_attention(self.q, self.k, self.v, is_causal=True, enable_gqa=True)

    def sdpa_fwd_bwd(self):
        q, k, v = (t.detach().requires_grad_() for t in (self.q, self.k, self.v))
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).backward(self.dout)

    def fwd_bwd(self):
        self.forward()
        self.backward()

    def projection(self):
        torch.mm(self.x, self.w)


# --- 1. regions per call -------------------------------------------------------------------------

TASK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int)
NUM_THREADS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
PARALLEL_FOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class Executor(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("context", ctypes.c_void_p), ("num_threads", NUM_THREADS),
                ("parallel_for", PARALLEL_FOR)]


def count_regions(problem):
    """{call name: [task count of each region]} at 2 threads, through a counting executor."""
    library = ctypes.CDLL(os.path.join(os.path.dirname(performer.__file__), "libperformer.so"))
    library.performer_set_executor.argtypes = [ctypes.c_void_p]
    regions = []

    def parallel_for(context, n, task, task_context):
        regions.append(n)
        run = ctypes.cast(task, TASK)
        for i in range(n):
            run(task_context, i)

    callbacks = (NUM_THREADS(lambda context: 2), PARALLEL_FOR(parallel_for))
    executor = Executor(ctypes.sizeof(Executor), None, *callbacks)
    _threads.use_torch_threads(False)
    performer.set_num_threads(0)
    assert library.performer_set_executor(ctypes.byref(executor)) == 0
    counts = {}
    try:
        for name in ("forward", "backward"):
            regions.clear()
            getattr(problem, name)()
            counts[name] = list(regions)
    finally:
        library.performer_set_executor(None)
    return counts


# --- 2. time per call ----------------------------------------------------------------------------

def set_mode(mode):
    threads = 1 if mode.endswith("1") else 2
    torch.set_num_threads(threads)
    if mode.startswith("own"):
        _threads.use_torch_threads(False)
        performer.set_num_threads(threads)
        return
    _threads.use_torch_threads(True)
    performer.set_num_threads(0)


def profile(problem, modes, rounds, between):
    """{(mode, pass): (wall, cpu, caller cpu, others cpu) medians}."""
    calls = {"forward": {"ours": problem.forward, "sdpa": problem.sdpa_forward},
             "fwd+bwd": {"ours": problem.fwd_bwd, "sdpa": problem.sdpa_fwd_bwd}}
    samples = {}
    order = list(modes)
    for _ in range(rounds + 1):  # the first round warms up
        for mode in order:
            set_mode(mode)
            for label, fns in calls.items():
                fn = fns["sdpa" if mode.startswith("sdpa") else "ours"]
                if between:
                    problem.projection()
                samples.setdefault((mode, label), []).append(timed(fn))
        order.reverse()
    return {key: tuple(statistics.median(x[i] for x in s[1:]) for i in range(4)) for key, s in samples.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="512,2048")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--between", action="store_true", help="a PyTorch matmul before each timed call")
    parser.add_argument("--modes", default="torch 1,torch 2,own 2,sdpa 1,sdpa 2")
    options = parser.parse_args()
    modes = options.modes.split(",")
    print("torch %s, performer %s (%s), %d CPUs, load average %.1f, OMP_WAIT_POLICY=%s GOMP_SPINCOUNT=%s" % (
        torch.__version__, performer.__version__, performer.kernel_isa(), os.cpu_count(), os.getloadavg()[0],
        os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT")))
    for n in (int(s) for s in options.sizes.split(",")):
        problem = Problem(n)
        counts = count_regions(problem)
        print("N=%d regions per call at 2 threads (tasks each): %s" % (
            n, ", ".join("%s %d %s" % (name, len(r), r) for name, r in counts.items())))
        result = profile(problem, modes, options.rounds, options.between)
        print("| N | mode | pass | wall ms | CPU ms | caller CPU ms | other threads CPU ms |")
        print("|---|---|---|---|---|---|---|")
        for (mode, label), (wall, cpu, own, others) in result.items():
            print("| %d | %s | %s | %.2f | %.2f | %.2f | %.2f |" % (n, mode, label, wall * 1e3, cpu * 1e3, own * 1e3,
                                                                 others * 1e3), flush=True)
    set_mode("torch 2")


if __name__ == "__main__":
    main()
