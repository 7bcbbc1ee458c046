"""Where one call of performer.torch.distributed spends its time, per rank and phase.

Spawns P processes x 1 thread (gloo on a file:// rendezvous, as benchmarks/distributed.py) and
times one causal forward + backward of linear attention or FAVOR+ per round, split into phases:
the library calls (state pass, local forward, query-side gradient, local backward), the time a
rank is blocked in an all_gather (waiting for another rank to compute what it sends -- the
dependency -- plus the transfer, about 1 ms here), the NumPy glue (state sums and combinations,
packing, tensor views) and the rest (autograd, Python). Wall clock and process CPU time per
phase; medians over the rounds. The timing wraps the module's functions from outside
(nothing is added to the library's path); the wrappers cost microseconds per call.
--groups 1 8 alternates round by round between the given head-group counts (1: the state
passing unpipelined; distributed.py's _PIPELINE_GROUPS, 8 by default), in the same processes.

    python benchmarks/distributed_profile.py linear [--n 65536] [--rounds 5] [--world 2] [--groups 1 4]
    python benchmarks/distributed_profile.py favor  [--n 32768] [--features 256]

n is the whole sequence; each rank holds n / P positions. B = 1, H = 8, D = M = 64, float32.
"""

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time

import numpy as np

B, H, D = 1, 8, 64

# performer-level calls, labelled by what they are in the distributed algorithm.
LIBRARY = {
    "linear_state": "state pass", "favor_state": "state pass",
    "linear_attention": "local forward", "favor_attention": "local forward",
    "linear_attention_backward": "local backward", "favor_attention_backward": "local backward",
    "linear_initial_state_gradient": "query-side gradient", "favor_initial_state_gradient": "query-side gradient",
}
# distributed.py's own helpers.
HELPERS = {
    "_query_state_gradient": "query-side gradient", "_favor_query_state_gradient": "query-side gradient",
    "_sum_states": "state sums (NumPy)", "_combine_favor": "state sums (NumPy)",
    "_pack": "pack/unpack", "_unpack": "pack/unpack", "_to_numpy": "tensor views", "_input_grads": "tensor views",
}


class _Recorder:
    """Exclusive wall and CPU time per label (a nested timed call is not counted twice), and
    the wall-clock entry and exit (time.time: one clock for all processes) of every all_gather."""

    def __init__(self):
        self.stack = []
        self.reset()

    def reset(self):
        self.wall, self.cpu, self.phase = {}, {}, "forward"

    def add(self, label, wall, cpu):
        self.wall[label] = self.wall.get(label, 0.0) + wall
        self.cpu[label] = self.cpu.get(label, 0.0) + cpu
        if self.stack:  # counted as this label's, not the caller's
            self.stack[-1][0] += wall
            self.stack[-1][1] += cpu

    def wrap(self, label, fn):
        def timed(*args, **kwargs):
            start, start_cpu = time.perf_counter(), time.process_time()
            self.stack.append([0.0, 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                child_wall, child_cpu = self.stack.pop()
                wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
                self.wall[label] = self.wall.get(label, 0.0) + wall - child_wall
                self.cpu[label] = self.cpu.get(label, 0.0) + cpu - child_cpu
                if self.stack:
                    self.stack[-1][0] += wall
                    self.stack[-1][1] += cpu
        return timed

    def _blocked(self, fn, *args):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn(*args)
        self.add("all_gather: blocked (%s)" % self.phase, time.perf_counter() - start, time.process_time() - start_cpu)
        return result

    def wrap_gather(self, fn):
        """A blocking all_gather: the time in it is waiting for the last rank to arrive plus the transfer."""
        return lambda group, array: self._blocked(fn, group, array)

    def wrap_start_gather(self, fn):
        """A posted all_gather: the time in its wait() (the collective not done yet: a rank
        still computing what it sends, or the transfer)."""
        def start(group, array):
            wait = fn(group, array)
            return lambda: self._blocked(wait)
        return start


class _Library:
    """performer with the LIBRARY calls timed."""

    def __init__(self, module, recorder):
        self._module, self._recorder = module, recorder

    def __getattr__(self, name):
        value = getattr(self._module, name)
        return self._recorder.wrap(LIBRARY[name], value) if name in LIBRARY else value


def _instrument(pd, recorder):
    import performer
    pd._performer = _Library(performer, recorder)
    for name, label in HELPERS.items():
        setattr(pd, name, recorder.wrap(label, getattr(pd, name)))
    pd._Group.all_gather = recorder.wrap_gather(pd._Group.all_gather)
    if hasattr(pd._Group, "start_all_gather"):
        pd._Group.start_all_gather = recorder.wrap_start_gather(pd._Group.start_all_gather)


def _worker(rank, world, rendezvous, kind, n, features, rounds, variants, queue):
    import torch
    import torch.distributed as dist
    import performer
    import performer.torch.distributed as pd
    torch.set_num_threads(1)
    performer.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + rendezvous, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600))
    recorder = _Recorder()
    _instrument(pd, recorder)
    projection = performer.FavorProjection(D, features, seed=0)
    positions = pd.layout_positions(n, world, rank).numpy()
    g = np.random.default_rng(0)
    q, k, v, dout = (torch.from_numpy(np.ascontiguousarray((g.standard_normal((B, H, n, D)).astype(np.float32)
                                                            * 0.5)[:, :, positions])) for _ in range(4))
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]

    def call():
        if kind == "linear":
            return pd.linear_attention(*leaves, causal=True)
        return pd.favor_attention(*leaves, projection, causal=True)

    rows = {groups: [] for groups in variants}
    for r in range(rounds + 1):  # the first round warms up
      for groups in variants:  # alternating, so that the host's drift hits every variant alike
        if groups:
            pd._PIPELINE_GROUPS = groups
        dist.barrier()
        recorder.reset()
        start, start_cpu = time.perf_counter(), time.process_time()
        out = call()
        middle, middle_cpu = time.perf_counter(), time.process_time()
        recorder.phase = "backward"
        out.backward(dout)
        end, end_cpu = time.perf_counter(), time.process_time()
        row = {"wall": dict(recorder.wall), "cpu": dict(recorder.cpu),
               "total": (end - start, end_cpu - start_cpu), "forward": (middle - start, middle_cpu - start_cpu),
               "backward": (end - middle, end_cpu - middle_cpu)}
        for x in leaves:
            x.grad = None
        if r:
            rows[groups].append(row)
    dist.destroy_process_group()
    queue.put((rank, rows))


def _phases(rows, world):
    """Per rank, per phase: median (wall ms, CPU ms) over the rounds."""
    table = {}
    for rank in range(world):
        samples = {}
        for row in rows[rank]:
            phases = {label: (row["wall"][label], row["cpu"][label]) for label in row["wall"]}
            accounted = [sum(p[0] for p in phases.values()), sum(p[1] for p in phases.values())]
            phases["autograd, Python (the rest)"] = (row["total"][0] - accounted[0], row["total"][1] - accounted[1])
            phases["= forward"] = row["forward"]
            phases["= backward"] = row["backward"]
            phases["= total"] = row["total"]
            for label, value in phases.items():
                samples.setdefault(label, []).append(value)
        table[rank] = {label: (1e3 * statistics.median(w for w, _ in values),
                               1e3 * statistics.median(c for _, c in values)) for label, values in samples.items()}
    return table


def _print(table, world, title):
    order = ["state pass", "all_gather: blocked (forward)", "state sums (NumPy)", "local forward", "query-side gradient",
             "all_gather: blocked (backward)", "local backward", "pack/unpack", "tensor views",
             "autograd, Python (the rest)", "= forward", "= backward", "= total"]
    labels = {label for rank in table for label in table[rank]}
    labels = [l for l in order if l in labels] + sorted(l for l in labels if l not in order)
    print(title)
    print("| phase | " + " | ".join("rank %d wall (ms) | rank %d CPU (ms)" % (r, r) for r in range(world)) + " |")
    print("|---|" + "---|---|" * world)
    for label in labels:
        print("| %s | %s |" % (label, " | ".join("%.1f | %.1f" % table[r].get(label, (0.0, 0.0)) for r in range(world))))
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("linear", "favor"))
    parser.add_argument("--n", type=int, default=None, help="whole sequence (default 65536 linear, 32768 favor)")
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--groups", type=int, nargs="*", default=[],
                        help="head-group counts to alternate (distributed.py's _PIPELINE_GROUPS; 1 = not pipelined); "
                             "default: the module's own")
    args = parser.parse_args()
    n = args.n or (65536 if args.kind == "linear" else 32768)
    variants = args.groups or [0]
    import torch.multiprocessing as mp
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(args.world, os.path.join(tmp, "r"), args.kind, n, args.features, args.rounds, variants,
                                queue), nprocs=args.world)
        rows_by_rank = dict(queue.get() for _ in range(args.world))
    print("%s causal, N = %d over %d processes x 1 thread, B = %d, H = %d, D = M = %d%s, float32; medians of %d "
          "rounds%s; load %.1f / %.1f / %.1f on %d CPUs at the end" % (
              "linear attention (elu+1)" if args.kind == "linear" else "FAVOR+ positive", n, args.world, B, H, D,
              ", m = %d" % args.features if args.kind == "favor" else "", args.rounds,
              " (variants alternating round by round)" if len(variants) > 1 else "", *os.getloadavg(), os.cpu_count()))
    print()
    for groups in variants:
        table = _phases({rank: rows_by_rank[rank][groups] for rank in range(args.world)}, args.world)
        _print(table, args.world, "head groups: %s" % (groups or "the module's default"))


if __name__ == "__main__":
    sys.exit(main())
