"""FAVOR+ attention in Python: one call against the materialized-feature formula, a long causal
sequence processed in pieces with the carried state (S~, z~, c), a decoder continuing from that
state, and the backward pass -- each result checked here, so this example fails loudly if they
ever differ. Also shows how far FAVOR+ is from exact softmax attention at this m.

    .build/pyvenv/bin/python examples/python/favor_attention.py
"""

import numpy as np

import performer

B, H, N, D, M, m = 1, 4, 96, 16, 16, 128
rng = np.random.default_rng(0)
q = (rng.standard_normal((B, H, N, D)) * 0.4).astype(np.float32)
k = (rng.standard_normal((B, H, N, D)) * 0.4).astype(np.float32)
v = rng.standard_normal((B, H, N, M)).astype(np.float32)
projection = performer.FavorProjection(D, m, seed=3)

# Bidirectional: out = phi(Q) phi(K)^T V / rowsum, computed here from the features in float64.
out = performer.favor_attention(q, k, v, projection)
fq = performer.favor_features(q.astype(np.float64), projection)
fk = performer.favor_features(k.astype(np.float64), projection, is_query=False)
a = fq @ fk.transpose(0, 1, 3, 2)
expected = (a @ v.astype(np.float64)) / a.sum(-1, keepdims=True)
error = np.linalg.norm(out - expected) / np.linalg.norm(expected)
print("bidirectional vs materialized phi(Q)phi(K)^T: relative error %.2e" % error)
assert error <= 1e-5

# How close to exact softmax attention (same scale 1/sqrt(D)) with m = 128 features?
exact = performer.softmax_attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64))
print("FAVOR+ (m=%d) vs exact softmax attention: relative error %.3f"
      % (m, np.linalg.norm(out - exact) / np.linalg.norm(exact)))

# Causal, in three pieces with the carried state = one call.
one = performer.favor_attention(q, k, v, projection, causal=True)
state, pieces = None, []
for start, stop in ((0, 40), (40, 41), (41, N)):
    o, state = performer.favor_attention(q[:, :, start:stop], k[:, :, start:stop], v[:, :, start:stop], projection,
                                         causal=True, initial_state=state, return_state=True)
    pieces.append(o)
error = np.abs(np.concatenate(pieces, axis=2) - one).max() / np.abs(one).max()
print("causal: three pieces with the carried state vs one call: %.2e" % error)
assert error <= 1e-5
S, z, c = state
print("final state: S~ %s, z~ %s, c %s (S = exp(c) S~)" % (S.shape, z.shape, c.shape))

# The decoder continues from a prompt's state, token by token.
prompt = 64
_, state = performer.favor_attention(q[:, :, :prompt], k[:, :, :prompt], v[:, :, :prompt], projection,
                                     causal=True, return_state=True)
decoder = performer.FavorDecoder(projection, B, H, M)
decoder.state = state
steps = np.stack([decoder.step(q[:, :, i], k[:, :, i], v[:, :, i]) for i in range(prompt, N)], axis=2)
error = np.abs(steps - one[:, :, prompt:]).max() / np.abs(one).max()
print("prompt through favor_attention, then %d decoder steps vs one call: %.2e" % (N - prompt, error))
assert error <= 1e-5

# Backward: dLoss/dq, dk, dv for loss = sum(out * g), checked against a finite difference.
g = rng.standard_normal(one.shape)
q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
dq, dk, dv = performer.favor_attention_backward(q64, k64, v64, g, projection, causal=True)
h = 1e-6
bumped = q64.copy()
bumped[0, 1, 5, 3] += h
numeric = ((performer.favor_attention(bumped, k64, v64, projection, causal=True) * g).sum()
           - (performer.favor_attention(q64, k64, v64, projection, causal=True) * g).sum()) / h
print("dq[0, 1, 5, 3] = %.6f, finite difference %.6f" % (dq[0, 1, 5, 3], numeric))
assert abs(dq[0, 1, 5, 3] - numeric) <= 1e-4 * max(1.0, abs(numeric))
print("ok")
