"""performer.torch.favor_attention against a memory state (non-causal, issue 8 item 4): the queries
attend to the keys the state was built from plus the call's own, as one call over the concatenated
keys; gradients reach q, k, v and the memory's S~ and z~ (gradcheck in float64)."""

import os

import pytest

try:
    import torch
except ImportError:
    if os.environ.get("PERFORMER_REQUIRE_TORCH") == "1":
        raise
    pytest.skip("PyTorch is not installed", allow_module_level=True)

import performer.torch as pt


def tensors(dtype, B=2, H=2, N=5, L1=7, L2=4, D=8, M=6, m=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, N, D, generator=g, dtype=dtype) * 0.5
    k1, k2 = (torch.randn(B, H, L, D, generator=g, dtype=dtype) * 0.5 for L in (L1, L2))
    v1, v2 = (torch.randn(B, H, L, M, generator=g, dtype=dtype) for L in (L1, L2))
    W = torch.randn(m, D, generator=g, dtype=dtype)
    return q, k1, v1, k2, v2, W


@pytest.mark.parametrize("features", ["positive", "hyperbolic", "relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_memory_equals_concatenated_keys(features, dtype):
    q, k1, v1, k2, v2, W = tensors(dtype)
    memory = pt.favor_state(k1, v1, W, features=features)
    out, final = pt.favor_attention(q, k2, v2, W, features=features, initial_state=memory, return_state=True)
    whole = pt.favor_attention(q, torch.cat([k1, k2], 2), torch.cat([v1, v2], 2), W, features=features)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, whole, rtol=tolerance, atol=tolerance)
    # The final state is the memory plus the call's keys: the state of all keys.
    expected = pt.favor_state(torch.cat([k1, k2], 2), torch.cat([v1, v2], 2), W, features=features)
    for got, want in zip(final, expected):
        torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)


def test_memory_gradients_gradcheck():
    q, k1, v1, k2, v2, W = tensors(torch.float64, B=1, N=3, L1=4, L2=3, D=4, M=3, m=6)
    S, z, c = pt.favor_state(k1, v1, W)
    inputs = [t.clone().requires_grad_() for t in (q, k2, v2, S, z)]

    def f(q, k, v, S, z):
        # The final state unscaled (S~ e^c): smooth in k, whose largest exponent may move c.
        out, (S_n, z_n, c_n) = pt.favor_attention(q, k, v, W, initial_state=(S, z, c), return_state=True)
        return out, S_n * c_n.exp()[..., None], z_n * c_n.exp()

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


def test_memory_gradients_equal_concatenated_call():
    q, k1, v1, k2, v2, W = tensors(torch.float64)
    k1, v1, k2, v2, q = (t.clone().requires_grad_() for t in (k1, v1, k2, v2, q))
    memory = pt.favor_state(k1, v1, W)
    out = pt.favor_attention(q, k2, v2, W, initial_state=memory)
    dout = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad(out, (q, k1, v1, k2, v2), dout)
    whole = pt.favor_attention(q, torch.cat([k1, k2], 2), torch.cat([v1, v2], 2), W)
    want = torch.autograd.grad(whole, (q, k1, v1, k2, v2), dout)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
