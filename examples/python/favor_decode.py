"""FAVOR+ in a few lines: a seeded projection, the positive random features, and a token-by-token
decoder whose outputs equal causal attention computed from the materialized features
phi(Q) phi(K)^T -- checked here, so this example fails loudly if they ever differ.

    .build/pyvenv/bin/python examples/python/favor_decode.py
"""

import numpy as np

import performer

B, H, N, D, M, m = 1, 4, 32, 16, 16, 64
rng = np.random.default_rng(0)
q = rng.standard_normal((B, H, N, D)) * 0.5
k = rng.standard_normal((B, H, N, D)) * 0.5
v = rng.standard_normal((B, H, N, M))

projection = performer.FavorProjection(D, m, seed=1)     # orthogonal rows, chi norms
print(projection, "W:", projection.matrix.shape)

# phi(x) = exp(W x^ - |x^|^2 / 2) / sqrt(m): phi(q).phi(k) estimates exp(q.k / sqrt(D)).
fq = performer.favor_features(q, projection)
fk = performer.favor_features(k, projection, is_query=False)
print("kernel estimate vs exact, first pair: %.4f vs %.4f"
      % ((fq[0, 0, 0] * fk[0, 0, 0]).sum(), np.exp(q[0, 0, 0] @ k[0, 0, 0] / np.sqrt(D))))

# Causal attention from the materialized features ...
a = np.tril(fq @ fk.transpose(0, 1, 3, 2))
expected = (a @ v) / a.sum(-1, keepdims=True)

# ... equals the decoder, one token at a time, O(m * M) per token.
decoder = performer.FavorDecoder(projection, B, H, M, dtype="float64")
out = np.stack([decoder.step(q[:, :, i], k[:, :, i], v[:, :, i]) for i in range(N)], axis=2)
error = np.abs(out - expected).max()
print("decoder vs materialized causal FAVOR+: max abs difference %.2e" % error)
S, z, c = decoder.state
print("state: S~ %s, z~ %s, c %s (S = exp(c) S~)" % (S.shape, z.shape, c.shape))
assert error < 1e-10, error
print("ok")
