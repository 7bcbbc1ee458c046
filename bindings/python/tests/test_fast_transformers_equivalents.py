"""The fast-transformers equivalents that docs/PYTORCH.md shows, run against references written
here in PyTorch after fast-transformers' own formulas (its package is not needed): the
un-normalized `causal_dot_product`, the `LinearAttention` and `CausalLinearAttention` layers
(B x L x H x E tensors, read and written in place through strides) and the recurrent layer
(a state the caller owns, passed in and out on every token)."""

import os

import numpy as np
import pytest

try:
    import torch
except ImportError:
    if os.environ.get("PERFORMER_REQUIRE_TORCH") == "1":
        raise
    pytest.skip("PyTorch is not installed", allow_module_level=True)

import performer
import performer.torch as pt

B, L, H, E, M = 2, 37, 3, 8, 5
EPS = 1e-6


def elu1(x):
    return torch.nn.functional.elu(x) + 1


def blhe(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def reference_causal_dot_product(q, k, v):
    """fast_transformers.causal_product.causal_dot_product: B x H x L x E -> B x H x L x M,
    out_i = sum_{j <= i} (q_i . k_j) v_j (materialized, lower-triangular)."""
    scores = q @ k.transpose(-1, -2)
    return torch.tril(scores) @ v


def reference_linear_attention(q, k, v, key_lengths=None, causal=False):
    """fast_transformers' LinearAttention / CausalLinearAttention on B x L x H x E tensors with
    the elu+1 feature map; masked keys have their features zeroed."""
    Q, K = elu1(q), elu1(k)
    if key_lengths is not None:
        keep = (torch.arange(K.shape[1])[None, :] < torch.as_tensor(key_lengths)[:, None]).to(K.dtype)
        K = K * keep[:, :, None, None]
    if causal:
        Qh, Kh, Vh = (t.transpose(1, 2) for t in (Q, K, v))
        numerator = reference_causal_dot_product(Qh, Kh, Vh)
        denominator = torch.einsum("bhle,bhle->bhl", Qh, Kh.cumsum(2))
        return (numerator / (denominator[..., None] + EPS)).transpose(1, 2)
    KV = torch.einsum("bshd,bshm->bhmd", K, v)
    Z = 1 / (torch.einsum("blhd,bhd->blh", Q, K.sum(dim=1)) + EPS)
    return torch.einsum("blhd,bhmd,blh->blhm", Q, KV, Z)


def test_causal_dot_product_is_the_unnormalized_identity_product():
    q, k, v = blhe(B, H, L, E, seed=1), blhe(B, H, L, E, seed=2), blhe(B, H, L, M, seed=3)
    for t in (q, k, v):
        t.requires_grad_(True)
    ours = pt.linear_attention(q, k, v, causal=True, feature_map="identity", normalize=False)
    ref = reference_causal_dot_product(q, k, v)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    dout = blhe(B, H, L, M, seed=4)
    ours_grads = torch.autograd.grad(ours, (q, k, v), dout)
    ref_grads = torch.autograd.grad(ref, (q, k, v), dout)
    for a, b in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_layers_on_blhe_tensors(causal):
    """The layers' B x L x H x E tensors go in as transposed views (no copy); gradients flow."""
    q, k, v = blhe(B, L, H, E, seed=5), blhe(B, L, H, E, seed=6), blhe(B, L, H, M, seed=7)
    for t in (q, k, v):
        t.requires_grad_(True)
    key_lengths = None if causal else [L, 20]
    out = pt.linear_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal,
                              eps=EPS, kv_lengths=key_lengths).transpose(1, 2)
    ref = reference_linear_attention(q, k, v, key_lengths, causal)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    dout = blhe(B, L, H, M, seed=8)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), dout), torch.autograd.grad(ref, (q, k, v), dout)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_inference_writes_a_blhm_buffer_in_place():
    """Without autograd: the NumPy-level call reads B x L x H x E and writes B x L x H x M
    buffers through strides (out=), the layout fast-transformers returns, with no copy."""
    q, k, v = (blhe(B, L, H, d, seed=s).float() for d, s in ((E, 9), (E, 10), (M, 11)))
    out = torch.full((B, L, H, M), float("nan"))
    as_bhle = lambda t: t.numpy().transpose(0, 2, 1, 3)  # noqa: E731
    result = performer.linear_attention(as_bhle(q), as_bhle(k), as_bhle(v), causal=True, eps=EPS,
                                        out=as_bhle(out))
    assert np.shares_memory(result, out.numpy())
    ref = reference_linear_attention(q.double(), k.double(), v.double(), causal=True)
    torch.testing.assert_close(out.double(), ref, rtol=2e-5, atol=1e-6)


def test_recurrent_layer_with_the_callers_state():
    """fast_transformers' RecurrentLinearAttention: per token Z += phi(k), S += phi(k) v^T,
    out = phi(q)^T S / (phi(q) . Z + eps); the caller owns (S, Z) and passes it on each call."""
    q, k, v = blhe(B, L, H, E, seed=12), blhe(B, L, H, E, seed=13), blhe(B, L, H, M, seed=14)
    decoder = pt.LinearDecoder(B, H, E, M, eps=EPS, dtype=torch.float64)
    S, Z = torch.zeros(B, H, E, M, dtype=torch.float64), torch.zeros(B, H, E, dtype=torch.float64)
    S_ref, Z_ref = S.clone(), Z.clone()
    for i in range(L):
        out = decoder.step(q[:, i], k[:, i], v[:, i], state=(S, Z))
        Q, K = elu1(q[:, i]), elu1(k[:, i])
        Z_ref = Z_ref + K
        S_ref = S_ref + torch.einsum("bhe,bhm->bhem", K, v[:, i])
        ref = torch.einsum("bhe,bhem->bhm", Q, S_ref) / (torch.einsum("bhe,bhe->bh", Q, Z_ref)[..., None] + EPS)
        torch.testing.assert_close(out, ref, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(S, S_ref, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(Z, Z_ref, rtol=1e-11, atol=1e-12)
    # The whole sequence at once gives the last token's output as well.
    whole = reference_linear_attention(q, k, v, causal=True)
    torch.testing.assert_close(out, whole[:, -1], rtol=1e-10, atol=1e-12)
