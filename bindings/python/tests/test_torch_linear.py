"""performer.torch's linear attention and FAVOR+ against references written in PyTorch (the
materialized phi(Q) phi(K)^T, autograd for the gradients), carried states, and the tensor
decoders against the whole-sequence ops."""

import os

import pytest

try:
    import torch
except ImportError:
    if os.environ.get("PERFORMER_REQUIRE_TORCH") == "1":
        raise
    pytest.skip("PyTorch is not installed", allow_module_level=True)

import performer
import performer.torch as pt


def randn(*shape, seed=0, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def visible(L, B, kv_lengths, kv_starts):
    """B x L: key j of batch b is visible (kv_starts[b] <= j < kv_lengths[b])."""
    j = torch.arange(L)[None, :]
    lengths = torch.as_tensor(kv_lengths if kv_lengths is not None else [L] * B)[:, None]
    starts = torch.as_tensor(kv_starts if kv_starts is not None else [0] * B)[:, None]
    return (j >= starts) & (j < lengths)


def linear_reference(q, k, v, causal=False, feature_map="elu+1", eps=1e-6, normalize=True, kv_lengths=None,
                     kv_starts=None, initial_state=None):
    phi = {"elu+1": lambda x: torch.nn.functional.elu(x) + 1, "relu": torch.relu, "identity": lambda x: x}[feature_map]
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    fq, fk = phi(q), phi(k)
    keep = visible(k.shape[2], q.shape[0], kv_lengths, kv_starts)
    fk = fk * keep[:, None, :, None].to(fk.dtype)
    a = fq @ fk.transpose(-1, -2)
    if causal:
        a = torch.tril(a)
    num, den = a @ v, a.sum(-1)
    if initial_state is not None:
        S0, z0 = initial_state
        num = num + fq @ S0
        den = den + (fq * z0[:, :, None, :]).sum(-1)
    return num if not normalize else num / (den + eps)[..., None]


def favor_reference(q, k, v, W, causal=False, kv_lengths=None, kv_starts=None):
    D = q.shape[-1]
    s = D ** -0.25
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)

    def phi(x):
        xh = x * s
        return torch.exp(xh @ W.T - (xh * xh).sum(-1, keepdim=True) / 2) / W.shape[0] ** 0.5

    fq, fk = phi(q), phi(k) * visible(k.shape[2], q.shape[0], kv_lengths, kv_starts)[:, None, :, None]
    a = fq @ fk.transpose(-1, -2)
    if causal:
        a = torch.tril(a)
    den = a.sum(-1, keepdim=True)
    return (a @ v) / torch.where(den > 0, den, torch.ones_like(den))  # a row without keys is 0


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("feature_map,normalize", [("elu+1", True), ("relu", True), ("identity", False)])
@pytest.mark.parametrize("keys", [{}, {"kv_lengths": [6, 3], "kv_starts": [2, 0]}])
@pytest.mark.parametrize("state", [False, True])
def test_linear_attention_equals_the_materialized_reference(causal, feature_map, normalize, keys, state):
    q, k, v = randn(2, 4, 6, 5, seed=1), randn(2, 2, 6, 5, seed=2), randn(2, 2, 6, 3, seed=3)
    initial = (randn(2, 4, 5, 3, seed=4).abs(), randn(2, 4, 5, seed=5).abs()) if state else None
    options = dict(causal=causal, feature_map=feature_map, normalize=normalize, **keys)
    ours = pt.linear_attention(q, k, v, initial_state=initial, **options)
    ref = linear_reference(q, k, v, initial_state=initial, **options)
    assert rel_err(ours, ref) < 1e-12
    g = torch.randn_like(ref)
    inputs = (q, k, v) + (initial if state else ())
    theirs = torch.autograd.grad((ref * g).sum(), inputs, allow_unused=True)  # z0 is unused without normalize
    for x, a, b in zip(inputs, torch.autograd.grad((ours * g).sum(), inputs), theirs):
        assert rel_err(a, torch.zeros_like(x) if b is None else b) < 1e-10


def test_linear_pieces_with_a_carried_state_equal_the_whole_and_the_numpy_api():
    q, k, v = randn(1, 2, 8, 4, seed=1), randn(1, 2, 8, 4, seed=2), randn(1, 2, 8, 3, seed=3)
    whole, (S, z) = pt.linear_attention(q, k, v, causal=True, return_state=True)
    first, state = pt.linear_attention(q[:, :, :5], k[:, :, :5], v[:, :, :5], causal=True, return_state=True)
    second, (S2, z2) = pt.linear_attention(q[:, :, 5:], k[:, :, 5:], v[:, :, 5:], causal=True,
                                           initial_state=state, return_state=True)
    assert rel_err(torch.cat([first, second], 2), whole) < 1e-13 and rel_err(S2, S) < 1e-13
    np_out, (np_S, _) = performer.linear_attention(*(t.detach().numpy() for t in (q, k, v)), causal=True,
                                                   return_state=True)
    assert torch.equal(whole.detach(), torch.from_numpy(np_out)) and torch.equal(S.detach(), torch.from_numpy(np_S))
    # The gradient flows through the carried state into the first piece's keys.
    second.sum().backward()
    assert k.grad[:, :, :5].abs().sum() > 0
    Sk, zk = pt.linear_state(k[:, :, :5], v[:, :, :5], heads=2)
    assert rel_err(Sk, state[0]) < 1e-13 and rel_err(zk, state[1]) < 1e-13


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("keys", [{}, {"kv_lengths": [7, 4]}, {"kv_starts": [0, 3]}])
def test_favor_equals_the_materialized_reference(causal, keys):
    q, k, v = randn(2, 4, 7, 4, seed=1, scale=0.5), randn(2, 2, 7, 4, seed=2, scale=0.5), randn(2, 2, 7, 3, seed=3)
    projection = performer.FavorProjection(4, 8, seed=3)
    W = torch.from_numpy(projection.matrix)
    ref = favor_reference(q, k, v, W, causal, **keys)
    g = torch.randn_like(ref)
    theirs = torch.autograd.grad((ref * g).sum(), (q, k, v))
    for p in (W, projection, W.float(), W.t().contiguous().t()):  # a FavorProjection, or W with any dtype/strides
        ours = pt.favor_attention(q, k, v, p, causal=causal, **keys)
        assert rel_err(ours, ref) < (1e-6 if p is not W and isinstance(p, torch.Tensor) and p.dtype == torch.float32
                                     else 1e-12)
        for a, b in zip(torch.autograd.grad((ours * g).sum(), (q, k, v)), theirs):
            assert rel_err(a, b) < 1e-5


def test_favor_state_pieces_and_favor_state():
    q, k, v = randn(1, 2, 8, 4, seed=1), randn(1, 2, 8, 4, seed=2), randn(1, 2, 8, 3, seed=3)
    W = torch.from_numpy(performer.FavorProjection(4, 6, seed=1).matrix)
    whole = pt.favor_attention(q, k, v, W, causal=True)
    first, state = pt.favor_attention(q[:, :, :5], k[:, :, :5], v[:, :, :5], W, causal=True, return_state=True)
    second = pt.favor_attention(q[:, :, 5:], k[:, :, 5:], v[:, :, 5:], W, causal=True, initial_state=state)
    assert rel_err(torch.cat([first, second], 2), whole) < 1e-12
    S, z, c = pt.favor_state(k[:, :, :5], v[:, :, :5], W)
    e, e2 = torch.exp(c), torch.exp(state[2])
    assert rel_err(S * e[..., None], state[0] * e2[..., None]) < 1e-12


def test_a_w_changed_in_place_is_seen_by_the_next_call():
    q, k, v = (t.detach() for t in (randn(1, 1, 3, 4, seed=1), randn(1, 1, 3, 4, seed=2), randn(1, 1, 3, 2, seed=3)))
    W = torch.randn(5, 4, dtype=torch.float64)
    before = pt.favor_attention(q, k, v, W)
    W.mul_(0.5)
    assert rel_err(pt.favor_attention(q, k, v, W), favor_reference(q, k, v, W)) < 1e-12
    assert not torch.equal(before, pt.favor_attention(q, k, v, W))


# --- decoders ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_decoder_steps_equal_causal_linear_attention(dtype):
    B, H, Hk, N, D, M = 2, 4, 2, 6, 5, 3
    q, k, v = (torch.randn(*s, dtype=dtype) for s in ((B, H, N, D), (B, Hk, N, D), (B, Hk, N, M)))
    whole, (S, z) = pt.linear_attention(q, k, v, causal=True, return_state=True)
    decoder = pt.LinearDecoder(B, H, D, M, key_heads=Hk, dtype=dtype)
    assert decoder.dtype is dtype
    outs = [decoder.step(q[:, :, i], k[:, :, i], v[:, :, i]) for i in range(N)]
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert rel_err(torch.stack(outs, 2), whole) < tol
    assert all(rel_err(a, b) < tol for a, b in zip(decoder.state, (S, z)))
    # A caller-owned state (strided, B x H x ... as views of a larger buffer): the same outputs.
    own = (torch.zeros(B, H, D, M + 1, dtype=dtype)[..., :M], torch.zeros(B, H, D, dtype=dtype))
    out = torch.empty(B, H, M, dtype=dtype)
    for i in range(N):
        decoder.step(q[:, :, i], k[:, :, i], v[:, :, i], out, state=own)
    assert torch.equal(out, outs[-1]) and torch.equal(own[0], decoder.state[0])
    decoder.reset()
    assert rel_err(decoder.prefill(q, k, v), whole) < tol
    decoder.state = (S, z)
    assert torch.equal(decoder.state[0], S)
    with pytest.raises(RuntimeError, match="not differentiable"):
        decoder.step(q[:, :, 0].requires_grad_(), k[:, :, 0], v[:, :, 0])
    with pytest.raises(TypeError, match="^q has dtype"):
        decoder.step(q[:, :, 0].half(), k[:, :, 0], v[:, :, 0])


def test_favor_decoder_steps_equal_causal_favor_attention():
    B, H, N, D, M = 1, 2, 5, 4, 3
    q, k, v = (torch.randn(*s, dtype=torch.float64) for s in ((B, H, N, D), (B, H, N, D), (B, H, N, M)))
    W = torch.from_numpy(performer.FavorProjection(D, 8, seed=2).matrix)
    whole, state = pt.favor_attention(q, k, v, W, causal=True, return_state=True)
    decoder = pt.FavorDecoder(W, B, H, M, dtype=torch.float64)
    outs = [decoder.step(q[:, :, i], k[:, :, i], v[:, :, i]) for i in range(N)]
    assert rel_err(torch.stack(outs, 2), whole) < 1e-12
    own = tuple(t.clone() for t in pt.favor_attention(q[:, :, :2], k[:, :, :2], v[:, :, :2], W, causal=True,
                                                      return_state=True)[1])
    fresh = pt.FavorDecoder(W, B, H, M, dtype=torch.float64)
    for i in range(2, N):
        out = fresh.step(q[:, :, i], k[:, :, i], v[:, :, i], state=own)
    assert rel_err(out, outs[-1]) < 1e-12
    e, e2 = torch.exp(own[2]), torch.exp(state[2])
    assert rel_err(own[0] * e[..., None], state[0] * e2[..., None]) < 1e-12
