"""Strong scaling of performer.torch.distributed on one machine: 1 process x 1 thread against
P processes x 1 thread (gloo on the loopback address, a file:// rendezvous), the same whole
sequence. Forward + backward per call; B = 1, H = 8, D = M = 64 by default:

    causal linear attention (elu+1)        N = 65536
    causal FAVOR+ (positive, m = 256)      N = 32768
    causal exact softmax (zigzag layout)   N = 16384

The single-process and the P-process measurements ALTERNATE: each of --rounds rounds times
every case once alone (rank 0 of the spawned group runs the plain single-process calls while the
other ranks wait in a barrier) and then across the P processes, so that the host's drift hits
both alike. Prints, per case: the single-process time, the distributed time (slowest rank),
parallel efficiency T1 / (P * TP) from the medians over all rounds, the same from process CPU
time (the work each process did, waiting excluded: on a machine whose scheduler shares CPU per
session -- Linux autogroup -- P processes of one session get no more CPU than one, and the
wall-clock efficiency cannot exceed 1/P), the median (and range) of the per-round efficiencies
-- the robust figure: a round's two measurements are minutes apart at most -- and the payload
bytes each rank sent per call (bytes_sent()).

    python benchmarks/distributed.py                 # P = 2, the sizes above, 3 rounds
    python benchmarks/distributed.py --divide 8      # every N / 8 (a loaded machine, a smoke run)
    python benchmarks/distributed.py --rounds 5 --reps 1
    python benchmarks/distributed.py --write         # also appends the table to benchmarks/results/distributed.md

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


def _worker(rank, world, rendezvous, divide, reps, rounds, queue):
    import torch
    import torch.distributed as dist
    import performer
    import performer.torch.distributed as pd
    torch.set_num_threads(1)
    performer.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + rendezvous, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=1800))
    projection = performer.FavorProjection(D, 256, seed=0)
    prepared = []
    for name, n in cases(divide):
        layout = "zigzag" if name.startswith("softmax") else "contiguous"
        positions = pd.layout_positions(n, world, rank, layout).numpy()
        q, k, v, dout = (torch.from_numpy(x) for x in _inputs(n, positions))
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]

        def step(name=name, leaves=leaves, dout=dout):
            out = _call(name, pd, *leaves, projection)
            out.backward(dout)
            for x in leaves:
                x.grad = None

        # Rank 0 also times the plain single-process call on the whole sequence, alone.
        single_step = _single_step(name, *_inputs(n), projection) if rank == 0 else None
        prepared.append((name, n, step, single_step))
    # Per case: per round, the single process's (wall, CPU) and the slowest rank's (wall, CPU).
    results = {name: {"single": [], "many": [], "sent": 0.0} for name, _ in cases(divide)}
    for r in range(rounds):
        for name, n, step, single_step in prepared:
            if r == 0:
                step()  # warm-up (scratch, thread pool, gloo's connections)
                if rank == 0:
                    single_step()
            dist.barrier()
            if rank == 0:
                results[name]["single"].append(_time(single_step, reps))
            dist.barrier()  # the other ranks wait here while rank 0 runs alone
            before = pd.bytes_sent()
            seconds, cpu = [], []
            for _ in range(reps):
                dist.barrier()
                start, start_cpu = time.perf_counter(), time.process_time()
                step()
                seconds.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            results[name]["sent"] = (pd.bytes_sent() - before) / reps
            slowest = torch.tensor(seconds + cpu, dtype=torch.float64)
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            results[name]["many"].append((statistics.median(slowest[:reps].tolist()),
                                          statistics.median(slowest[reps:].tolist())))
    dist.destroy_process_group()
    if rank == 0:
        queue.put([(name, n, results[name]) for name, n in cases(divide)])


def _row(world, name, n, result):
    """One table row: efficiencies from the medians over rounds and the median (min-max) of the
    per-round efficiencies."""
    single, many = result["single"], result["many"]
    t1, c1 = (statistics.median(x[i] for x in single) for i in (0, 1))
    tp, cp = (statistics.median(x[i] for x in many) for i in (0, 1))
    per_round = [[100 * s[i] / (world * m[i]) for s, m in zip(single, many)] for i in (0, 1)]

    def spread(values):
        return "%.0f%% (%.0f-%.0f)" % (statistics.median(values), min(values), max(values))
    return "| %s | %d | %.3f | %.3f | %.0f%% | %.3f | %.3f | %.0f%% | %s | %s | %s |" % (
        name, n, t1, tp, 100 * t1 / (world * tp), c1, cp, 100 * c1 / (world * cp), "{:,}".format(int(result["sent"])),
        spread(per_round[0]), spread(per_round[1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--reps", type=int, default=1, help="calls per measurement (median) in each round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds: all cases alone, then distributed")
    parser.add_argument("--divide", type=int, default=1, help="divide every N by this")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(args.world, os.path.join(tmp, "r"), args.divide, args.reps, args.rounds, queue),
                 nprocs=args.world)
        rows = queue.get()
    lines = ["| case | N | 1 x 1 thread (s) | %d x 1 thread (s) | efficiency | CPU s, 1 process | CPU s, slowest rank "
             "| CPU efficiency | bytes sent per rank per call | efficiency per round: median (min-max) "
             "| CPU efficiency per round: median (min-max) |" % args.world,
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(args.world, name, n, result) for name, n, result in rows]
    load = os.getloadavg()
    lines.append("")
    lines.append("B = %d, H = %d, D = M = %d, float32, forward + backward; %d alternating rounds (every case alone, "
                 "then on %d processes), %d call%s per measurement; times: medians over the rounds; load average "
                 "%.1f / %.1f / %.1f on %d CPUs at the end." % (B, H, D, args.rounds, args.world, args.reps,
                                                              "s" if args.reps > 1 else "", *load, os.cpu_count()))
    table = "\n".join(lines)
    print(table)
    if args.write:
        RESULTS.mkdir(exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with open(RESULTS / "distributed.md", "a") as results:
            results.write("\n## %s\n\n`python benchmarks/distributed.py %s`\n\n%s\n"
                          % (stamp, " ".join(sys.argv[1:]), table))


if __name__ == "__main__":
    sys.exit(main())
