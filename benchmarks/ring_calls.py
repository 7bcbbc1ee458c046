"""Rank 0's softmax calls in ring attention at P = 2, zigzag, causal (performer.torch.distributed):
one call per key run (as before) against key runs joined into one call where one call computes
the same thing (the bottom-right causal mask), forward + backward, alternating in one process.

    PERFORMER_NUM_THREADS=1 python benchmarks/ring_calls.py [chunk rows, default 4096 = N/4] [rounds]
"""
import time, sys, numpy as np, performer
c = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
rng = np.random.default_rng(0)
H, D = 8, 64
q = rng.standard_normal((1, H, 2 * c, D), dtype=np.float32)
kown = rng.standard_normal((1, H, 2 * c, D), dtype=np.float32); vown = rng.standard_normal((1, H, 2 * c, D), dtype=np.float32)
koth = rng.standard_normal((1, H, 2 * c, D), dtype=np.float32); voth = rng.standard_normal((1, H, 2 * c, D), dtype=np.float32)
dout = rng.standard_normal((1, H, 2 * c, D), dtype=np.float32)
R = lambda a, s, n: a[:, :, s:s + n]
def run(plan):
    out = np.zeros((1, H, 2 * c, D), np.float32); lse = np.full((1, H, 2 * c), -np.inf, np.float32)
    for qs, (kb, vb), ks, kn, causal in plan:
        o, l = performer.softmax_attention(R(q, qs, c), R(kb, ks, kn), R(vb, ks, kn), causal=causal, return_lse=True)
        performer.softmax_merge(R(out, qs, c), lse[:, :, qs:qs + c], o, l, out=R(out, qs, c), lse=lse[:, :, qs:qs + c])
    for qs, (kb, vb), ks, kn, causal in plan:
        performer.softmax_attention_backward(R(q, qs, c), R(kb, ks, kn), R(vb, ks, kn), R(out, qs, c),
                                             lse[:, :, qs:qs + c], R(dout, qs, c), causal=causal)
    return out
own, oth = (kown, vown), (koth, voth)
separate = [(0, own, 0, c, True), (c, own, 0, c, False), (c, own, c, c, True), (c, oth, 0, c, False), (c, oth, c, c, False)]
joined = [(0, own, 0, c, True), (c, own, 0, 2 * c, True), (c, oth, 0, 2 * c, False)]
a, b = run(separate), run(joined)
print("max diff", np.abs(a - b).max())
ts = {"separate": [], "joined": []}
for r in range(int(sys.argv[2]) if len(sys.argv) > 2 else 5):
    for name, plan in (("separate", separate), ("joined", joined)) if r % 2 == 0 else (("joined", joined), ("separate", separate)):
        t = time.perf_counter(); run(plan); ts[name].append(time.perf_counter() - t)
m = {k: float(np.median(v)) for k, v in ts.items()}
print({k: round(v, 3) for k, v in m.items()}, "joined/separate = %.3f" % (m["joined"] / m["separate"]))
