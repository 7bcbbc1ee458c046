"""Exact softmax attention with libperformer from Python, checked against NumPy.

Run after `pip install ./bindings/python`:  python examples/python/softmax_attention.py
"""
import numpy as np

import performer

rng = np.random.default_rng(0)
B, H, N, L, D, M = 2, 4, 6, 10, 16, 8
q = rng.standard_normal((B, H, N, D)).astype(np.float32)
k = rng.standard_normal((B, H, L, D)).astype(np.float32)
v = rng.standard_normal((B, H, L, M)).astype(np.float32)

# Causal with N < L: bottom-right aligned, query i sees keys j <= i + (L - N).
out, lse = performer.softmax_attention(q, k, v, causal=True, return_lse=True)

# The same in NumPy, float64, materializing the N x L scores.
scores = np.einsum("bhnd,bhld->bhnl", q.astype(np.float64), k.astype(np.float64)) / np.sqrt(D)
visible = np.arange(L)[None, :] <= np.arange(N)[:, None] + (L - N)
scores = np.where(visible, scores, -np.inf)
ref_lse = np.log(np.exp(scores - scores.max(-1, keepdims=True)).sum(-1)) + scores.max(-1)
ref_out = np.einsum("bhnl,bhlm->bhnm", np.exp(scores - ref_lse[..., None]), v.astype(np.float64))

err_out = np.abs(out - ref_out).max()
err_lse = np.abs(lse - ref_lse).max()
print("libperformer %s, out %s %s" % (performer.__version__, out.shape, out.dtype))
print("max |out - reference| = %.3g, max |lse - reference| = %.3g" % (err_out, err_lse))
assert err_out < 1e-5 and err_lse < 1e-5, "result differs from the NumPy reference"

# Gradients of sum(out * dout) with respect to q, k, v.
dout = np.ones_like(out)
dq, dk, dv = performer.softmax_attention_backward(q, k, v, out, lse, dout, causal=True)
print("dq %s, dk %s, dv %s" % (dq.shape, dk.shape, dv.shape))
print("ok")
