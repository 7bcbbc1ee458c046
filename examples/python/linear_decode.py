"""Causal linear attention as an RNN with libperformer: prefill a prompt, then decode token by
token, and check that the result equals one causal call over the whole sequence.

Run after `pip install ./bindings/python`:  python examples/python/linear_decode.py
"""
import numpy as np

import performer

rng = np.random.default_rng(0)
B, H, D, M = 1, 8, 64, 64          # batch, heads, head dim of q/k, head dim of v
prompt, new = 100, 20              # prompt tokens, then tokens decoded one at a time
N = prompt + new
q = rng.standard_normal((B, H, N, D)).astype(np.float32)
k = rng.standard_normal((B, H, N, D)).astype(np.float32)
v = rng.standard_normal((B, H, N, M)).astype(np.float32)

# The whole sequence at once (the chunked causal kernel), and its final state (S, z).
full, (S, z) = performer.linear_attention(q, k, v, causal=True, return_state=True)

# The same as an RNN: the decoder keeps S (B x H x D x M) and z (B x H x D) and costs the same
# per token at any position.
decoder = performer.LinearDecoder(B, H, D, M)
outputs = [decoder.prefill(q[:, :, :prompt], k[:, :, :prompt], v[:, :, :prompt])]
for t in range(prompt, N):
    o = decoder.step(q[:, :, t], k[:, :, t], v[:, :, t])      # B x H x M
    outputs.append(o[:, :, None])
decoded = np.concatenate(outputs, axis=2)

err = np.abs(decoded - full).max() / np.abs(full).max()
S_dec, z_dec = decoder.state
err_state = np.abs(S_dec - S).max() / np.abs(S).max()
print("libperformer %s: prefill %d + decode %d tokens vs one causal call: relative error %.2g "
      "(outputs), %.2g (state)" % (performer.__version__, prompt, new, err, err_state))
assert err < 1e-5 and err_state < 1e-5, "decoding differs from the one-call forward"
print("ok")
