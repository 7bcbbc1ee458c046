"""performer.torch modules: SoftmaxAttention, LinearAttention, FavorAttention (W as a buffer,
redraw, state_dict, pickle, deepcopy, torch.save), and the ops under torch.compile(fullgraph=True)
and torch.export. Compilation is slow: one small model per algorithm, the aot_eager backend
(Dynamo's graph capture, the fake kernels and the autograd formulas, without code generation)."""

import copy
import io
import os
import pickle

import pytest

try:
    import torch
except ImportError:
    if os.environ.get("PERFORMER_REQUIRE_TORCH") == "1":
        raise
    pytest.skip("PyTorch is not installed", allow_module_level=True)

import performer
import performer.torch as pt


class Block(torch.nn.Module):
    """A projection to q, k, v (B x N x H x D memory, seen as B x H x N x D) and an attention."""

    def __init__(self, attention, heads=2, dim=8):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.qkv = torch.nn.Linear(16, 3 * heads * dim)
        self.attention = attention

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, self.dim).permute(2, 0, 3, 1, 4)
        return self.attention(q, k, v)


def models():
    torch.manual_seed(0)
    return [Block(pt.SoftmaxAttention(causal=True)), Block(pt.LinearAttention(causal=True)),
            Block(pt.FavorAttention(8, 16, causal=True, seed=3))]


def test_modules_equal_their_functions():
    q, k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 3)
    assert torch.equal(pt.LinearAttention(causal=True, feature_map="relu")(q, k, v),
                       pt.linear_attention(q, k, v, causal=True, feature_map="relu"))
    module = pt.FavorAttention(8, 16, seed=3)
    assert torch.equal(module(q, k, v), pt.favor_attention(q, k, v, performer.FavorProjection(8, 16, seed=3)))
    out, state = pt.LinearAttention(causal=True)(q, k, v, return_state=True)
    assert state[0].shape == (1, 2, 8, 3)
    assert "feature_map='elu+1'" in repr(pt.LinearAttention()) and "draw=0" in repr(module)
    with pytest.raises(ValueError, match="feature_map"):
        pt.LinearAttention(feature_map="gelu")


def test_favor_w_is_a_buffer_and_redraw_follows_the_generator():
    module = pt.FavorAttention(8, 16, seed=3)
    generator = performer.FavorProjection(8, 16, seed=3)
    assert torch.equal(module.W, torch.from_numpy(generator.matrix))
    assert [name for name, _ in module.named_buffers()] == ["W"] and list(module.parameters()) == []
    state = module.state_dict()
    assert set(state) == {"W", "_extra_state"} and state["_extra_state"]["draw"] == 0
    old = module.W
    module.redraw()
    generator.redraw()
    assert torch.equal(module.W, torch.from_numpy(generator.matrix)) and module.draw == 1
    assert not torch.equal(old, module.W)
    module.float()
    assert module.W.dtype == torch.float32
    module.redraw()
    assert module.W.dtype == torch.float32 and module.draw == 2


def _roundtrips(model):
    yield copy.deepcopy(model)
    yield pickle.loads(pickle.dumps(model))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    yield torch.load(buffer, weights_only=False)


def test_deepcopy_pickle_and_torch_save_of_a_model_holding_every_module():
    model = torch.nn.Sequential(*models())
    model[2].attention.redraw()
    x = torch.randn(2, 5, 16)
    for block in model:
        expected = block(x)
        for copied in _roundtrips(block):
            assert torch.equal(copied(x), expected)
    favor = model[2].attention
    for copied in _roundtrips(favor):
        assert copied.draw == 1 and torch.equal(copied.W, favor.W) and copied.W is not favor.W
        copied.redraw()
        assert copied.draw == 2
    favor.redraw()
    assert torch.equal(copied.W, favor.W)  # the copy's generator continues where the original's is


def test_state_dict_round_trip_into_another_seed():
    source = pt.FavorAttention(8, 16, seed=3)
    source.redraw()
    target = pt.FavorAttention(8, 16, seed=99)
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.W, source.W) and target.seed == 3 and target.draw == 1
    source.redraw()
    target.redraw()
    assert torch.equal(target.W, source.W)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target.load_state_dict(torch.load(buffer, weights_only=False))
    assert torch.equal(target.W, source.W)


def test_compile_fullgraph_forward_and_backward_equal_eager():
    x = torch.randn(2, 6, 16)
    for model in models():
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        out = compiled(x)
        (out * out).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        eager = model(x)
        (eager * eager).sum().backward()
        assert torch.allclose(out, eager, rtol=1e-5, atol=1e-6), type(model.attention).__name__
        for a, p in zip(grads, model.parameters()):
            assert torch.allclose(a, p.grad, rtol=1e-4, atol=1e-5), type(model.attention).__name__


def test_compiled_functions_with_states_and_key_ranges():
    q, k, v = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 3)
    W = torch.randn(6, 8)
    lengths = torch.tensor([5, 3])

    def f(q, k, v):
        out, (S, z) = pt.linear_attention(q, k, v, causal=True, return_state=True, kv_lengths=lengths)
        favor, _ = pt.favor_attention(q, k, v, W, causal=True, return_state=True)
        soft = pt.softmax_attention(q, k, v, kv_starts=[1, 0])
        return out + favor + soft, S.sum() + z.sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for a, b in zip(compiled(q, k, v), f(q, k, v)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_export_of_each_module():
    x = torch.randn(2, 5, 16)
    for model in models():
        exported = torch.export.export(model, (x,))
        targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
        assert any(t.startswith("performer.") for t in targets), targets
        assert torch.allclose(exported.module()(x), model(x))
