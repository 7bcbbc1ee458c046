"""A middle rank's work in performer.torch.distributed's causal state passing, in one process:
the former composition (state pass + state backward beside the local calls) against the folded
one (state pass + query-side initial-state gradient; the local backward takes the final-state
gradient), both against the rank's share of the single-process work (causal forward + backward
over its positions, no state).

    python benchmarks/state_fold.py [--n 16384] [--heads 8] [--dim 64] [--features 256] [--rounds 7] [--threads 2]

The three compositions alternate round by round (so that slow phases of a shared machine hit
all alike); the table gives medians and each one's ratio to the share: the extra-work factor
that bounds the parallel efficiency at 1 / factor. No communication is timed (the states are
fixed arrays here); the compositions call what distributed.py calls, in its order.
"query side" is the library's one-pass kernel (performer.linear_initial_state_gradient, what
distributed.py calls); "NumPy query side" is the composition it replaced (NumPy's g = dout/d and
-g.out as width-(M + 1) values, then linear_state over the queries), kept here for the ratio.
"""
import argparse
import statistics
import time

import numpy as np
import performer
from performer.torch.distributed import _query_state_gradient


def timed(call, clock):
    start = clock()
    call()
    return clock() - start


def measure(name, calls, rounds, clock):
    for call in calls.values():
        call()  # warm-up: scratch, thread pool
    samples = {label: [] for label in calls}
    for _ in range(rounds):
        for label, call in calls.items():
            samples[label].append(timed(call, clock))
    medians = {label: statistics.median(times) for label, times in samples.items()}
    share = medians["share"]
    print("| %s | %.1f | %.1f (%.2f) | %.1f (%.2f) | %.1f | %.1f | %.1f (%.2f) | %.1f (%.2f) |"
          % (name, 1e3 * share, 1e3 * medians["former"], medians["former"] / share, 1e3 * medians["folded"],
             medians["folded"] / share, 1e3 * medians["state"], 1e3 * medians["state backward"],
             1e3 * medians["query side"], medians["query side"] / medians["state"],
             1e3 * medians["NumPy query side"], medians["NumPy query side"] / medians["state"]))


def numpy_query_side(q, out, den, dout, eps, feature_map):
    """The former _query_state_gradient (before the library kernel): NumPy preparation of the
    width-(M + 1) values [g_i, -(g_i . out_i)], then one state pass over the queries."""
    b, h, n, m = out.shape
    d = den + np.asarray(eps, den.dtype)
    weights = np.empty((b, h, n, m + 1), dtype=out.dtype)
    g = weights[..., :m]
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(dout, d[..., None], out=g)
    empty = d == 0
    if empty.any():
        g[empty] = 0
    w = weights[..., m]
    np.einsum("bhnm,bhnm->bhn", g, out, out=w)
    np.negative(w, out=w)
    s, _ = performer.linear_state(q, weights, feature_map=feature_map)
    return s[..., :m], s[..., m]


def linear_calls(q, k, v, dout, state):
    def share():
        performer.linear_attention(q, k, v, causal=True)
        performer.linear_attention_backward(q, k, v, dout, causal=True)

    def former():
        performer.linear_state(k, v)
        performer.linear_attention(q, k, v, causal=True, initial_state=state)
        performer.linear_attention_backward(q, k, v, dout, causal=True, initial_state=state)
        performer.linear_state_backward(k, v, *state)

    def folded():
        performer.linear_state(k, v)
        out, den = performer.linear_attention(q, k, v, causal=True, initial_state=state, return_denominators=True)
        _query_state_gradient(q, out, den, dout, 1e-6, "elu+1")
        performer.linear_attention_backward(q, k, v, dout, causal=True, initial_state=state, dstate=state)

    out, den = performer.linear_attention(q, k, v, causal=True, initial_state=state, return_denominators=True)
    return {"share": share, "former": former, "folded": folded, "state": lambda: performer.linear_state(k, v),
            "state backward": lambda: performer.linear_state_backward(k, v, *state),
            "query side": lambda: _query_state_gradient(q, out, den, dout, 1e-6, "elu+1"),
            "NumPy query side": lambda: numpy_query_side(q, out, den, dout, 1e-6, "elu+1")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="library threads (0: the default)")
    parser.add_argument("--cpu", action="store_true",
                        help="time the process's CPU time (all threads) instead of the wall clock: the work done, "
                             "less sensitive to other processes on a loaded machine")
    options = parser.parse_args()
    if options.threads:
        performer.set_num_threads(options.threads)
    rng = np.random.default_rng(0)
    shape = (1, options.heads, options.n, options.dim)
    q, k, v, dout = ((0.5 * rng.standard_normal(shape)).astype(np.float32) for _ in range(4))
    state = performer.linear_state(k, v)
    print("n = %d, B = 1, H = %d, D = M = %d, float32, threads %s, medians of %d rounds, %s"
          % (options.n, options.heads, options.dim, options.threads or "default", options.rounds,
             "CPU time" if options.cpu else "wall clock"))
    print("| attention | share: causal fwd + bwd (ms) | former rank (ms, / share) | folded rank (ms, / share) "
          "| state (ms) | state backward (ms) | query-side gradient (ms, / state) "
          "| NumPy query side, former (ms, / state) |")
    print("|---|---|---|---|---|---|---|---|")
    measure("linear elu+1 causal", linear_calls(q, k, v, dout, state), options.rounds,
            time.process_time if options.cpu else time.perf_counter)


if __name__ == "__main__":
    main()
