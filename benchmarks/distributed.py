"""Strong scaling of performer.torch.distributed on one machine: 1 process x 1 thread against
P processes x 1 thread (gloo on the loopback address, a file:// rendezvous), the same whole
sequence. Forward + backward per call; B = 1, H = 8, D = M = 64 by default:

    causal linear attention (elu+1)        N = 65536
    causal FAVOR+ (positive, m = 256)      N = 32768
    causal exact softmax (zigzag layout)   N = 16384

Prints, per case: the single-process time, the distributed time (slowest rank), parallel
efficiency T1 / (P * TP), the same from process CPU time (the work each process did, waiting
excluded: on a machine whose scheduler shares CPU per session -- Linux autogroup -- P processes
of one session get no more CPU than one, and the wall-clock efficiency cannot exceed 1/P), and
the payload bytes each rank sent per call (bytes_sent()).

    python benchmarks/distributed.py                 # P = 2, the sizes above
    python benchmarks/distributed.py --divide 8      # every N / 8 (a loaded machine, a smoke run)
    python benchmarks/distributed.py --write         # also writes benchmarks/results/distributed.md

Not a test: nothing is asserted. The machine is shared; the figures are medians of a few
calls and move with the load.
"""

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
B, H, D = 1, 8, 64


def cases(divide):
    div = divide
    return [("linear causal", 65536 // div), ("favor causal m=256", 32768 // div), ("softmax causal zigzag", 16384 // div)]


def _inputs(n, positions=None):
    g = np.random.default_rng(0)
    q, k, v, dout = (g.standard_normal((B, H, n, D)).astype(np.float32) * 0.5 for _ in range(4))
    if positions is not None:
        q, k, v, dout = (np.ascontiguousarray(x[:, :, positions]) for x in (q, k, v, dout))
    return q, k, v, dout


def _call(name, pd, q, k, v, projection):
    """The distributed call of a case on this rank's slice."""
    if name.startswith("linear"):
        return pd.linear_attention(q, k, v, causal=True)
    if name.startswith("favor"):
        return pd.favor_attention(q, k, v, projection, causal=True)
    return pd.softmax_attention(q, k, v, causal=True, layout="zigzag")


def _single_step(name, q, k, v, dout, projection):
    """The single-process forward + backward of a case, straight through the NumPy API."""
    import performer
    if name.startswith("linear"):
        return lambda: (performer.linear_attention(q, k, v, causal=True),
                        performer.linear_attention_backward(q, k, v, dout, causal=True))
    if name.startswith("favor"):
        return lambda: (performer.favor_attention(q, k, v, projection, causal=True),
                        performer.favor_attention_backward(q, k, v, dout, projection, causal=True))

    def softmax():
        out, lse = performer.softmax_attention(q, k, v, causal=True, return_lse=True)
        performer.softmax_attention_backward(q, k, v, out, lse, dout, causal=True)
    return softmax


def _time(fn, reps):
    """Median wall and process-CPU seconds of fn()."""
    times, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), statistics.median(cpu)


def _worker(rank, world, rendezvous, divide, reps, queue):
    import torch
    import torch.distributed as dist
    import performer
    import performer.torch.distributed as pd
    torch.set_num_threads(1)
    performer.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + rendezvous, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600))
    projection = performer.FavorProjection(D, 256, seed=0)
    results = []
    for name, n in cases(divide):
        layout = "zigzag" if name.startswith("softmax") else "contiguous"
        positions = pd.layout_positions(n, world, rank, layout).numpy()
        q, k, v, dout = (torch.from_numpy(x) for x in _inputs(n, positions))
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]

        def step():
            out = _call(name, pd, *leaves, projection)
            out.backward(dout)

        step()  # warm-up
        dist.barrier()
        before = pd.bytes_sent()
        seconds, cpu = [], []
        for _ in range(reps):
            dist.barrier()
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        sent = (pd.bytes_sent() - before) / reps
        slowest = torch.tensor(seconds + cpu, dtype=torch.float64)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        results.append((name, n, statistics.median(slowest[:reps].tolist()), statistics.median(slowest[reps:].tolist()),
                        sent))
    dist.destroy_process_group()
    if rank == 0:
        queue.put(results)


def single(divide, reps):
    """1 process x 1 thread, the plain single-process calls."""
    import performer
    performer.set_num_threads(1)
    projection = performer.FavorProjection(D, 256, seed=0)
    results = []
    for name, n in cases(divide):
        step = _single_step(name, *_inputs(n), projection)
        step()
        results.append((name, n, *_time(step, reps)))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--divide", type=int, default=1, help="divide every N by this")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    import torch.multiprocessing as mp

    one = single(args.divide, args.reps)
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(args.world, os.path.join(tmp, "r"), args.divide, args.reps, queue), nprocs=args.world)
        many = queue.get()
    lines = ["| case | N | 1 x 1 thread (s) | %d x 1 thread (s) | efficiency | CPU s, 1 process | CPU s, slowest rank "
             "| CPU efficiency | bytes sent per rank per call |" % args.world,
             "|---|---|---|---|---|---|---|---|---|"]
    for (name, n, t1, c1), (_, _, tp, cp, sent) in zip(one, many):
        lines.append("| %s | %d | %.3f | %.3f | %.0f%% | %.3f | %.3f | %.0f%% | %s |" % (
            name, n, t1, tp, 100 * t1 / (args.world * tp), c1, cp, 100 * c1 / (args.world * cp),
            "{:,}".format(int(sent))))
    load = os.getloadavg()
    lines.append("")
    lines.append("B = %d, H = %d, D = M = %d, float32, forward + backward, median of %d calls; load average "
                 "%.1f / %.1f / %.1f on %d CPUs while measuring." % (B, H, D, args.reps, *load, os.cpu_count()))
    table = "\n".join(lines)
    print(table)
    if args.write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "distributed.md").write_text("# performer.torch.distributed: strong scaling\n\n"
                                                "`python benchmarks/distributed.py --write`\n\n" + table + "\n")


if __name__ == "__main__":
    sys.exit(main())
