"""Direct float64 softmax attention (materialized N x L scores), the tests' reference.

Implements docs ALGORITHMS.md section 1 independently of libperformer: bottom-right causal
alignment, per-batch key lengths, grouped-query heads, zero rows (and lse = -inf) for
fully masked queries.
"""

import numpy as np


def _setup(q, k, v, causal, scale, kv_lengths):
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    B, H, N, D = q.shape
    Hk, L = k.shape[1], k.shape[2]
    group = H // Hk
    s = 1.0 / np.sqrt(D) if scale is None else float(scale)
    kk = np.repeat(k, group, axis=1)  # query head h reads key head h // group
    vv = np.repeat(v, group, axis=1)
    i = np.arange(N)[:, None]
    j = np.arange(L)[None, :]
    mask = np.ones((B, 1, N, L), dtype=bool)
    if causal:
        mask &= (j <= i + (L - N))[None, None]
    if kv_lengths is not None:
        lengths = np.asarray(kv_lengths).reshape(B, 1, 1, 1)
        mask &= j[None, None] < lengths
    return q, kk, vv, s, mask, group


def forward(q, k, v, causal=False, scale=None, kv_lengths=None):
    """Returns (out, lse, P) in float64."""
    q, kk, vv, s, mask, _ = _setup(q, k, v, causal, scale, kv_lengths)
    scores = np.where(mask, s * np.einsum("bhnd,bhld->bhnl", q, kk), -np.inf)
    row_max = scores.max(axis=-1, keepdims=True, initial=-np.inf)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    p = np.exp(scores - row_max)
    total = p.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        lse = np.where(total > 0, np.log(np.where(total > 0, total, 1.0)) + row_max, -np.inf)[..., 0]
    p = p / np.where(total > 0, total, 1.0)
    out = np.einsum("bhnl,bhlm->bhnm", p, vv)
    return out, lse, p


def backward(q, k, v, dout, causal=False, scale=None, kv_lengths=None):
    """Returns (dq, dk, dv) in float64 for loss gradient dout."""
    qq, kk, vv, s, _, group = _setup(q, k, v, causal, scale, kv_lengths)
    dout = np.asarray(dout, dtype=np.float64)
    out, _, p = forward(q, k, v, causal, scale, kv_lengths)
    B, Hk, L, M = vv.shape[0], np.shape(k)[1], vv.shape[2], vv.shape[3]
    D = qq.shape[3]
    dvv = np.einsum("bhnl,bhnm->bhlm", p, dout)
    dp = np.einsum("bhnm,bhlm->bhnl", dout, vv)
    delta = (dout * out).sum(axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = s * np.einsum("bhnl,bhld->bhnd", ds, kk)
    dkk = s * np.einsum("bhnl,bhnd->bhld", ds, qq)
    dk = dkk.reshape(B, Hk, group, L, D).sum(axis=2)
    dv = dvv.reshape(B, Hk, group, L, M).sum(axis=2)
    return dq, dk, dv
