"""performer.torch's eager autograd paths (an autograd.Function over the kernels, called through
autograd's C apply, _direct.py / _apply.py) against the registered ops' autograd: the same outputs and
gradients bit for bit, for softmax, linear attention and FAVOR+, with states, key ranges, GQA and
permuted strides; float64 gradcheck through the eager path; and the public-apply fallback taken when
PyTorch lacks the private pieces."""

import os
import subprocess
import sys

import pytest

try:
    import torch
except ImportError:
    if os.environ.get("PERFORMER_REQUIRE_TORCH") == "1":
        raise
    pytest.skip("PyTorch is not installed", allow_module_level=True)

import performer
import performer.torch as pt
from performer import linear as _linear

ops = torch.ops.performer
B, H, Hk, N, D, M = 2, 4, 2, 5, 4, 3


def tensor(*shape, seed, permuted=False, scale=1.0):
    """A float64 leaf requiring grad; permuted: B x H x N x F laid out as B x N x H x F (transposed view)."""
    g = torch.Generator().manual_seed(seed)
    if permuted and len(shape) == 4:
        t = torch.randn(shape[0], shape[2], shape[1], shape[3], generator=g, dtype=torch.float64).transpose(1, 2)
    else:
        t = torch.randn(*shape, generator=g, dtype=torch.float64)
    return (scale * t).detach().requires_grad_()


def inputs(permuted, scale=1.0):
    return (tensor(B, H, N, D, seed=1, permuted=permuted, scale=scale),
            tensor(B, Hk, N, D, seed=2, permuted=permuted, scale=scale),
            tensor(B, Hk, N, M, seed=3, permuted=permuted))


def assert_same(eager_outs, op_outs, leaves):
    """Equal outputs, and equal gradients of the same weighted sum of them, with respect to leaves."""
    assert len(eager_outs) == len(op_outs)
    for a, b in zip(eager_outs, op_outs):
        assert a.shape == b.shape and torch.equal(a, b)
    weights = [torch.randn(a.shape, generator=torch.Generator().manual_seed(9 + i), dtype=a.dtype)
               for i, a in enumerate(eager_outs)]
    differentiable = [i for i, a in enumerate(eager_outs) if a.requires_grad]
    assert differentiable == [i for i, b in enumerate(op_outs) if b.requires_grad]

    def grads(outs):
        loss = sum((outs[i] * weights[i]).sum() for i in differentiable)
        return torch.autograd.grad(loss, leaves, allow_unused=True)

    for x, a, b in zip(leaves, grads(eager_outs), grads(op_outs)):
        assert (a is None) == (b is None), x.shape
        if a is not None:
            assert torch.equal(a, b)


KEYS = [{}, {"kv_lengths": [5, 3]}, {"kv_starts": [1, 0], "kv_lengths": [5, 4]}]


def key_args(keys):
    return [None if keys.get(n) is None else torch.tensor(keys[n]) for n in ("kv_lengths", "kv_starts")]


@pytest.mark.parametrize("permuted", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("keys", KEYS)
def test_softmax_eager_equals_op(permuted, causal, keys):
    q, k, v = inputs(permuted)
    out = pt.softmax_attention(q, k, v, causal=causal, scale=0.7, **keys)
    assert type(out.grad_fn).__name__ == "_SoftmaxFunctionBackward"
    ref, _ = ops.softmax(q, k, v, causal, 0.7, *key_args(keys))
    assert "performer_softmax" in type(ref.grad_fn).__name__
    assert_same([out], [ref], (q, k, v))


@pytest.mark.parametrize("permuted", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("keys", KEYS)
@pytest.mark.parametrize("state,return_state", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("feature_map,normalize", [("elu+1", True), ("identity", False)])
def test_linear_eager_equals_op(permuted, causal, keys, state, return_state, feature_map, normalize):
    q, k, v = inputs(permuted)
    S0 = tensor(B, H, D, M, seed=4).abs().detach().requires_grad_() if state else None
    z0 = tensor(B, H, D, seed=5).abs().detach().requires_grad_() if state else None
    result = pt.linear_attention(q, k, v, causal=causal, feature_map=feature_map, normalize=normalize, **keys,
                                 initial_state=(S0, z0) if state else None, return_state=return_state)
    ours = [result[0], *result[1]] if return_state else [result]
    assert type(ours[0].grad_fn).__name__ == "_LinearFunctionBackward"
    out, S, z = ops.linear(q, k, v, S0, z0, causal, _linear._feature_map(feature_map), 1e-6, normalize,
                           *key_args(keys), return_state)
    theirs = [out, S, z] if return_state else [out]
    leaves = (q, k, v) + ((S0, z0) if state else ())
    assert_same(ours, theirs, leaves)


@pytest.mark.parametrize("permuted", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("keys", KEYS)
@pytest.mark.parametrize("state,return_state", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("held", [False, True])
def test_favor_eager_equals_op(permuted, causal, keys, state, return_state, held):
    q, k, v = inputs(permuted, scale=0.5)
    projection = performer.FavorProjection(D, 6, seed=2)
    W = torch.from_numpy(projection.matrix)
    initial = None
    if state:
        k0, v0 = tensor(B, Hk, 3, D, seed=6, scale=0.5), tensor(B, Hk, 3, M, seed=7)
        S0, z0, c0 = (t.detach() for t in pt.favor_state(k0, v0, W, heads=H))
        initial = (S0.requires_grad_(), z0.requires_grad_(), c0)
    result = pt.favor_attention(q, k, v, projection if held else W, causal=causal, **keys, initial_state=initial,
                                return_state=return_state)
    ours = [result[0], *result[1]] if return_state else [result]
    assert type(ours[0].grad_fn).__name__ == "_FavorFunctionBackward"
    state_args = initial if state else (None, None, None)
    theirs = ops.favor(q, k, v, W, *state_args, causal, 0, None, 0.0, 1e-3, *key_args(keys), return_state)
    theirs = list(theirs) if return_state else [theirs[0]]
    assert not ours[-1].requires_grad if return_state else True  # c is not differentiable
    assert_same(ours, theirs, (q, k, v) + (initial[:2] if state else ()))


@pytest.mark.parametrize("permuted", [False, True])
@pytest.mark.parametrize("keys", KEYS)
@pytest.mark.parametrize("state", [False, True])
@pytest.mark.parametrize("feature_map", ["elu+1", "relu"])
def test_linear_state_eager_equals_op(permuted, keys, state, feature_map):
    _, k, v = inputs(permuted)
    S0 = tensor(B, H, D, M, seed=4).abs().detach().requires_grad_() if state else None
    z0 = tensor(B, H, D, seed=5).abs().detach().requires_grad_() if state else None
    S, z = pt.linear_state(k, v, feature_map=feature_map, **keys, initial_state=(S0, z0) if state else None, heads=H)
    assert type(S.grad_fn).__name__ == "_LinearStateFunctionBackward"
    theirs = ops.linear_state(k, v, S0, z0, H, _linear._feature_map(feature_map), *key_args(keys))
    assert "performer_linear_state" in type(theirs[0].grad_fn).__name__
    assert_same([S, z], list(theirs), (k, v) + ((S0, z0) if state else ()))


@pytest.mark.parametrize("permuted", [False, True])
@pytest.mark.parametrize("keys", KEYS)
@pytest.mark.parametrize("state", [False, True])
@pytest.mark.parametrize("held", [False, True])
def test_favor_state_eager_equals_op(permuted, keys, state, held):
    _, k, v = inputs(permuted, scale=0.5)
    projection = performer.FavorProjection(D, 6, seed=2)
    W = torch.from_numpy(projection.matrix)
    initial = (None, None, None)
    if state:
        k0, v0 = tensor(B, Hk, 3, D, seed=6, scale=0.5), tensor(B, Hk, 3, M, seed=7)
        S0, z0, c0 = (t.detach() for t in pt.favor_state(k0, v0, W, heads=H))
        initial = (S0.requires_grad_(), z0.requires_grad_(), c0)
    ours = pt.favor_state(k, v, projection if held else W, **keys, initial_state=initial if state else None, heads=H)
    assert type(ours[0].grad_fn).__name__ == "_FavorStateFunctionBackward"
    assert not ours[2].requires_grad  # c is not differentiable
    theirs = ops.favor_state(k, v, W, *initial, H, 0, None, 1e-3, *key_args(keys))
    assert "performer_favor_state" in type(theirs[0].grad_fn).__name__
    assert_same(list(ours), list(theirs), (k, v) + (initial[:2] if state else ()))


def test_eager_state_backward_sees_w_changed_in_place():
    _, k, v = inputs(False)
    W = torch.randn(6, D, dtype=torch.float64)
    S, z, c = pt.favor_state(k, v, W)
    W.mul_(0.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        S.sum().backward()


def test_eager_state_paths_gradcheck_float64():
    _, k, v = inputs(True, scale=0.5)
    S0, z0 = tensor(B, H, D, M, seed=4).abs(), tensor(B, H, D, seed=5).abs()
    W = torch.from_numpy(performer.FavorProjection(D, 6, seed=2).matrix)

    def check(f, args):
        assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-8, rtol=1e-6)

    def linear(k, v, S0, z0):
        S, z = pt.linear_state(k, v, kv_starts=[1, 0], kv_lengths=[5, 4], initial_state=(S0, z0))
        assert type(S.grad_fn).__name__ == "_LinearStateFunctionBackward"
        return S, z

    check(linear, (k, v, S0, z0))
    k1, v1 = tensor(B, Hk, 3, D, seed=6, scale=0.5), tensor(B, Hk, 3, M, seed=7)
    S1, z1, c1 = (t.detach() for t in pt.favor_state(k1, v1, W, heads=H))

    def favor(k, v, S1, z1):
        S, z, c = pt.favor_state(k, v, W, kv_lengths=[5, 3], initial_state=(S1, z1, c1), heads=H)
        assert type(S.grad_fn).__name__ == "_FavorStateFunctionBackward"
        e = torch.exp(c)  # the state S = exp(c) S~, z = exp(c) z~ (c held fixed)
        return S * e[..., None], z * e

    check(favor, (k, v, S1.requires_grad_(), z1.requires_grad_()))


def test_eager_paths_gradcheck_float64():
    q, k, v = inputs(True, scale=0.5)
    S0, z0 = tensor(B, H, D, M, seed=4).abs(), tensor(B, H, D, seed=5).abs()
    S0, z0 = S0.detach().requires_grad_(), z0.detach().requires_grad_()
    W = torch.from_numpy(performer.FavorProjection(D, 6, seed=2).matrix)

    def check(f, args):
        assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-8, rtol=1e-6)

    check(lambda q, k, v: pt.softmax_attention(q, k, v, causal=True, kv_starts=[1, 0]), (q, k, v))

    def linear(q, k, v, S0, z0):
        out, (S, z) = pt.linear_attention(q, k, v, causal=True, kv_lengths=[5, 4], initial_state=(S0, z0),
                                          return_state=True)
        assert type(out.grad_fn).__name__ == "_LinearFunctionBackward"
        return out, S, z

    check(linear, (q, k, v, S0, z0))

    def favor(q, k, v):
        out, (S, z, c) = pt.favor_attention(q, k, v, W, causal=True, kv_starts=[0, 2], return_state=True)
        assert type(out.grad_fn).__name__ == "_FavorFunctionBackward"
        e = torch.exp(c)  # the state S = exp(c) S~, z = exp(c) z~ (c, the stabilizer, is held fixed)
        return out, S * e[..., None], z * e

    check(favor, (q, k, v))


def test_eager_linear_and_favor_are_not_twice_differentiable():
    q, k, v = inputs(False)
    W = torch.from_numpy(performer.FavorProjection(D, 6, seed=2).matrix)
    for out in (pt.linear_attention(q, k, v), pt.favor_attention(q, k, v, W)):
        dq, = torch.autograd.grad(out.sum(), q, create_graph=True)
        with pytest.raises(RuntimeError):
            dq.sum().backward()


def test_favor_eager_backward_sees_w_changed_in_place():
    q, k, v = inputs(False)
    W = torch.randn(6, D, dtype=torch.float64)
    out = pt.favor_attention(q, k, v, W)
    W.mul_(0.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_favor_eager_backward_uses_the_draw_of_its_forward():
    q, k, v = inputs(False, scale=0.5)
    projection = performer.FavorProjection(D, 6, seed=2)
    first = torch.from_numpy(projection.matrix)
    out = pt.favor_attention(q, k, v, projection)
    projection.redraw()
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    expected = torch.autograd.grad(ops.favor(q, k, v, first, None, None, None, False, 0, None, 0.0, 1e-3, None,
                                             None, False)[0].sum(), (q, k, v))
    assert all(torch.equal(a, b) for a, b in zip(grads, expected))


FALLBACK = r"""
import torch
saved = torch._C._FunctionBase
torch._C._FunctionBase = type("WithoutApply", (), {})
del torch._C._functorch.unwrap_if_dead
import performer, performer.torch as pt
from performer.torch import _apply, favor, linear, softmax
torch._C._FunctionBase = saved
assert _apply.unwrap is _apply._identity
assert softmax.apply_softmax == softmax._SoftmaxFunction.apply
assert linear.apply_linear == linear._LinearFunction.apply
assert favor.apply_favor == favor._FavorFunction.apply
assert linear.apply_linear_state == linear._LinearStateFunction.apply
assert favor.apply_favor_state == favor._FavorStateFunction.apply
ops = torch.ops.performer
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3))
W = torch.randn(5, 4, generator=g, dtype=torch.float64)
cases = [
    (lambda q, k, v: pt.softmax_attention(q, k, v, causal=True),
     lambda q, k, v: ops.softmax(q, k, v, True, None, None, None)[0]),
    (lambda q, k, v: pt.linear_attention(q, k, v, causal=True),
     lambda q, k, v: ops.linear(q, k, v, None, None, True, 0, 1e-6, True, None, None, False)[0]),
    (lambda q, k, v: pt.favor_attention(q, k, v, W),
     lambda q, k, v: ops.favor(q, k, v, W, None, None, None, False, 0, None, 0.0, 1e-3, None, None, False)[0]),
    (lambda q, k, v: pt.linear_state(k + q, v)[0],
     lambda q, k, v: ops.linear_state(k + q, v, None, None, 2, 0, None, None)[0]),
    (lambda q, k, v: pt.favor_state(k + q, v, W)[0],
     lambda q, k, v: ops.favor_state(k + q, v, W, None, None, None, 2, 0, None, 1e-3, None, None)[0]),
]
for eager, op in cases:
    a, b = eager(q, k, v), op(q, k, v)
    assert type(a.grad_fn).__name__.startswith("_"), a.grad_fn
    assert torch.equal(a, b)
    assert all(torch.equal(x, y) for x, y in zip(torch.autograd.grad(a.sum(), (q, k, v)),
                                                  torch.autograd.grad(b.sum(), (q, k, v))))
    if eager is not cases[-1][0]:  # S~ alone, c held fixed, is not a function gradcheck can check
        assert torch.autograd.gradcheck(eager, (q, k, v))
print("fallback ok")
"""


def test_public_apply_fallback_without_pytorch_internals():
    result = subprocess.run([sys.executable, "-c", FALLBACK], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "fallback ok" in result.stdout
