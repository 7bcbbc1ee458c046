"""performer.torch as torch.library ops: gradcheck (float64) of every op with and without states
and key ranges, torch.library.opcheck on contiguous and permuted strides, and argument errors
that name the argument (never a dtype error for something else) on every path."""

import os

import pytest

try:
    import torch
except ImportError:
    if os.environ.get("PERFORMER_REQUIRE_TORCH") == "1":
        raise
    pytest.skip("PyTorch is not installed", allow_module_level=True)

import performer.torch as pt

ops = torch.ops.performer


def randn(*shape, seed=0, requires_grad=True, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_(requires_grad)


def qkv(H=4, Hk=2, N=5, L=5, D=4, M=3, B=2, scale=1.0):
    return (randn(B, H, N, D, seed=1, scale=scale), randn(B, Hk, L, D, seed=2, scale=scale),
            randn(B, Hk, L, M, seed=3))


def gradcheck(f, inputs):
    return torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


def mathematical(S, z, c):
    """The FAVOR+ state S = exp(c) S~, z = exp(c) z~: its gradient does not depend on the
    stabilizer c, which is held fixed (c gets no gradient)."""
    e = torch.exp(c)
    return S * e[..., None], z * e


# --- gradcheck ------------------------------------------------------------------------------

@pytest.mark.parametrize("causal,keys", [(False, {}), (True, {}), (False, {"kv_lengths": [4, 2]}),
                                         (True, {"kv_starts": [1, 0], "kv_lengths": torch.tensor([5, 3])})])
def test_softmax_gradcheck(causal, keys):
    q, k, v = qkv(N=4, L=5)
    assert gradcheck(lambda q, k, v: pt.softmax_attention(q, k, v, causal=causal, **keys), (q, k, v))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("state", [False, True])
@pytest.mark.parametrize("keys", [{}, {"kv_lengths": [5, 3], "kv_starts": [0, 1]}])
@pytest.mark.parametrize("normalize", [True, False])
def test_linear_gradcheck(causal, state, keys, normalize):
    q, k, v = qkv()
    S0, z0 = randn(2, 4, 4, 3, seed=4).abs().detach().requires_grad_(), randn(2, 4, 4, seed=5).abs().detach()
    z0.requires_grad_()

    def f(q, k, v, S0, z0):
        result = pt.linear_attention(q, k, v, causal=causal, normalize=normalize, initial_state=(S0, z0) if state
                                     else None, return_state=state, **keys)
        return (result[0],) + result[1] if state else result

    assert gradcheck(f, (q, k, v, S0, z0))


@pytest.mark.parametrize("state", [False, True])
@pytest.mark.parametrize("heads", [None, 4])
def test_linear_state_gradcheck(state, heads):
    _, k, v = qkv()
    hs = heads or 2
    S0, z0 = randn(2, hs, 4, 3, seed=4), randn(2, hs, 4, seed=5)
    initial = (S0, z0) if state else None
    assert gradcheck(lambda k, v, S0, z0: pt.linear_state(k, v, initial_state=initial and (S0, z0), heads=heads,
                                                          kv_lengths=[5, 4], feature_map="relu"), (k, v, S0, z0))


@pytest.mark.parametrize("causal,features,keys", [(False, "positive", {}), (True, "hyperbolic", {}),
                                                  (False, "trigonometric", {"kv_starts": [2, 0]}),
                                                  (True, "relu", {"kv_lengths": [4, 5]})])
def test_favor_gradcheck(causal, features, keys):
    q, k, v = qkv(scale=0.5)
    W = randn(6, 4, seed=7, requires_grad=False)
    assert gradcheck(lambda q, k, v: pt.favor_attention(q, k, v, W, causal=causal, features=features, **keys),
                     (q, k, v))


def test_favor_gradcheck_with_states():
    q, k, v = qkv(scale=0.5)
    W = randn(6, 4, seed=7, requires_grad=False)
    with torch.no_grad():
        S0, z0, c0 = pt.favor_state(k, v, W, heads=4)
    S0.requires_grad_(), z0.requires_grad_()

    def f(q, k, v, S0, z0):
        out, state = pt.favor_attention(q, k, v, W, causal=True, initial_state=(S0, z0, c0), return_state=True,
                                        kv_lengths=[5, 4])
        return (out,) + mathematical(*state)

    assert gradcheck(f, (q, k, v, S0, z0))
    assert gradcheck(lambda k, v, S0, z0: mathematical(*pt.favor_state(k, v, W, initial_state=(S0, z0, c0),
                                                                       kv_starts=[1, 0])), (k, v, S0, z0))
    assert gradcheck(lambda k, v: mathematical(*pt.favor_state(k, v, W, features="hyperbolic")), (k, v))


def test_initial_state_c_and_w_get_no_gradient():
    q, k, v = qkv(scale=0.5)
    W = randn(6, 4, seed=7)
    S0, z0, c0 = (t.detach().requires_grad_() for t in pt.favor_state(k, v, W, heads=4))
    out, (S, z, c) = pt.favor_attention(q, k, v, W, causal=True, initial_state=(S0, z0, c0), return_state=True)
    assert not c.requires_grad
    (out.sum() + S.sum()).backward()
    assert W.grad is None and c0.grad is None and S0.grad is not None


# --- opcheck --------------------------------------------------------------------------------

def _permuted(x):
    """x's values in B x N x H x D memory, seen as B x H x N x D (permuted strides)."""
    return x.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(x.requires_grad)


@pytest.mark.parametrize("layout", ["contiguous", "permuted"])
def test_opcheck(layout):
    arrange = _permuted if layout == "permuted" else (lambda x: x)
    q, k, v = (arrange(t) for t in qkv())
    W = randn(6, 4, seed=7, requires_grad=False)
    lengths = torch.tensor([4, 5])
    S0, z0 = randn(2, 4, 4, 3, seed=4).abs(), randn(2, 4, 4, seed=5).abs()
    out, lse = ops.softmax(q, k, v, True, None, lengths, None)
    d = (q.detach(), k.detach(), v.detach())
    cases = [
        (ops.softmax.default, (q, k, v, True, None, lengths, None)),
        (ops.softmax_backward.default, d + (out.detach(), lse, torch.randn_like(out), True, None, lengths, None)),
        (ops.linear.default, (q, k, v, S0, z0, True, 0, 1e-6, True, None, lengths, True)),
        (ops.linear_backward.default, d + (torch.randn_like(out), S0.detach(), z0.detach(), None, None, False, 1,
                                           1e-6, True, lengths, None)),
        (ops.linear_state.default, (k, v, None, None, 4, 0, lengths, None)),
        (ops.favor.default, (q, k, v, W, None, None, None, True, 0, None, 0.0, 1e-3, None, lengths, True)),
        (ops.favor_state.default, (k, v, W, None, None, None, 2, 1, None, 1e-3, lengths, None)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


# --- errors ---------------------------------------------------------------------------------

def message(function, *args, **kwargs):
    with pytest.raises((TypeError, ValueError, RuntimeError)) as info:
        function(*args, **kwargs)
    return type(info.value), str(info.value)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_errors_name_the_argument(requires_grad):
    q, k, v = (t.detach().requires_grad_(requires_grad) for t in qkv())
    W = randn(6, 4, seed=7, requires_grad=False)
    assert message(pt.linear_attention, q, k, v, initial_state=(torch.zeros(2, 4, 5, 3, dtype=torch.float64),
                                                                 torch.zeros(2, 4, 4, dtype=torch.float64)))[0] \
        is ValueError
    assert message(pt.linear_attention, q, k, v, initial_state=(1, 2)) == \
        (TypeError, "initial_state[0] (S) must be a torch.Tensor, not int")
    assert message(pt.linear_attention, q, k.float(), v) == (TypeError, "k has dtype float32 but q has float64")
    assert message(pt.favor_attention, q, k, v, W.float()[:, :3]) == \
        (ValueError, "q.shape[3] = 4 but projection.dim = 3")
    assert message(pt.favor_attention, q, k, v, "W") == \
        (TypeError, "projection must be a performer.FavorProjection or an m x D tensor W, not str")
    assert message(pt.favor_attention, q, k, v, W, initial_state=(1, 2)) == \
        (TypeError, "initial_state must be a triple (S, z, c) of arrays, not tuple")
    assert message(pt.linear_attention, q, k, v, feature_map="gelu")[0] is ValueError
    assert message(pt.linear_state, k, v.int()) == \
        (TypeError, "v has dtype torch.int32; expected torch.float32, torch.float64, torch.float16 or torch.bfloat16")
    assert message(pt.softmax_attention, q, k, v, kv_starts=[[0, 1]])[0] is ValueError


def test_a_wrapper_without_data_is_not_called_a_dtype_error():
    from performer.torch._tensors import view
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = torch.empty(2, 4, 5, 4)
    error, text = message(view, "q", fake)
    assert error is TypeError and "dtype" not in text and text.startswith("q (FakeTensor) has no data")


def test_export_rejects_mismatched_dtypes_at_trace_time():
    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return pt.softmax_attention(q, k, v)

    q, k, v = (t.detach().float() for t in qkv())
    with pytest.raises(Exception, match="k has dtype float64 but q has float32"):
        torch.export.export(Attention(), (q, k.double(), v))


def test_vmap_runs_the_op_per_batch_entry():
    q = randn(3, 2, 4, 5, 8, requires_grad=False)
    out = torch.func.vmap(lambda x: pt.softmax_attention(x, x, x, causal=True))(q)
    assert torch.equal(out, torch.stack([pt.softmax_attention(x, x, x, causal=True) for x in q]))
