"""A middle rank's work in performer.torch.distributed's causal FAVOR+ state passing, in one
process: the former composition (state pass + local forward + local backward + state backward)
against the folded one (state pass + local forward returning its row scales + query-side
initial-triple gradient + local backward taking the final-triple gradient), both against the
rank's share of the single-process work (causal forward + backward over its positions, no state).

    python benchmarks/favor_fold.py [--n 16384] [--heads 8] [--dim 64] [--features 256] [--rounds 7] [--threads 2] [--cpu]

The compositions alternate round by round (slow phases of a shared machine hit all alike); the
table gives medians and each one's ratio to the share: the extra-work factor that bounds the
parallel efficiency at 1 / factor. No communication is timed (the triples are fixed arrays);
the compositions call what distributed.py calls, in its order. benchmarks/state_fold.py is the
same for linear attention.
"""
import argparse
import time

import numpy as np
import performer
from performer.torch.distributed import _favor_query_state_gradient
from state_fold import measure


def favor_calls(q, k, v, dout, p, state):
    def share():
        performer.favor_attention(q, k, v, p, causal=True)
        performer.favor_attention_backward(q, k, v, dout, p, causal=True)

    def former():
        performer.favor_state(k, v, p)
        performer.favor_attention(q, k, v, p, causal=True, initial_state=state)
        performer.favor_attention_backward(q, k, v, dout, p, causal=True, initial_state=state)
        performer.favor_state_backward(k, v, p, *state[:2])

    def folded():
        performer.favor_state(k, v, p)
        out, final, (units, dens) = performer.favor_attention(q, k, v, p, causal=True, initial_state=state,
                                                              return_state=True, return_row_scales=True)
        _favor_query_state_gradient(q, p, "positive", None, 1e-3, state[2], units, dens, out, dout)
        performer.favor_attention_backward(q, k, v, dout, p, causal=True, initial_state=state, dstate=state[:2])

    out, (units, dens) = performer.favor_attention(q, k, v, p, causal=True, initial_state=state,
                                                   return_row_scales=True)
    return {"share": share, "former": former, "folded": folded, "state": lambda: performer.favor_state(k, v, p),
            "state backward": lambda: performer.favor_state_backward(k, v, p, *state[:2]),
            "query side": lambda: _favor_query_state_gradient(q, p, "positive", None, 1e-3, state[2], units,
                                                              dens, out, dout)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--features", type=int, default=256, help="m, the random features")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="library threads (0: the default)")
    parser.add_argument("--cpu", action="store_true",
                        help="time the process's CPU time (all threads) instead of the wall clock")
    options = parser.parse_args()
    if options.threads:
        performer.set_num_threads(options.threads)
    rng = np.random.default_rng(0)
    shape = (1, options.heads, options.n, options.dim)
    q, k, v, dout = ((0.5 * rng.standard_normal(shape)).astype(np.float32) for _ in range(4))
    p = performer.FavorProjection(options.dim, options.features, seed=1)
    # The initial triple of n earlier keys: what a middle rank receives.
    state = performer.favor_state(*((0.5 * rng.standard_normal(shape)).astype(np.float32) for _ in range(2)), p)
    print("n = %d, B = 1, H = %d, D = M = %d, m = %d, float32, threads %s, medians of %d rounds, %s"
          % (options.n, options.heads, options.dim, options.features, options.threads or "default", options.rounds,
             "CPU time" if options.cpu else "wall clock"))
    print("| attention | share: causal fwd + bwd (ms) | former rank (ms, / share) | folded rank (ms, / share) "
          "| state (ms) | state backward (ms) | query-side gradient (ms) |")
    print("|---|---|---|---|---|---|---|")
    measure("FAVOR+ positive causal", favor_calls(q, k, v, dout, p, state), options.rounds,
            time.process_time if options.cpu else time.perf_counter)


if __name__ == "__main__":
    main()
