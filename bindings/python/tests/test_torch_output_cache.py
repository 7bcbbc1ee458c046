"""performer.torch's large results (>= 4 MiB) come from the output cache (performer/torch/_outputs.py):
every op's forward and backward results, in every dtype, have the values of the same call with the
cache off, bit for bit; a dead result's memory goes to the next result of its size; a live view keeps
it; gradients keep their inputs' strides; such tensors pickle, save, share and take part in autograd
and torch.compile; small results, fake tensors and a cache limit of 0 give plain PyTorch tensors."""

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
from helpers import MIB, empty_output_cache  # noqa: F401  (the fixture, used by pytestmark)
from performer.torch import transformers as glue

BLOCK = 4 * MIB  # 1 x 2 x 8192 x 64 float32
contents = performer._ext._output_cache_contents
pytestmark = pytest.mark.usefixtures("empty_output_cache")  # each test starts and ends with it empty


def inputs(n=8192, l=16, dtype=torch.float32, grad=False, seed=0):
    """q of 4 MiB (float32) against a few keys: large results at small cost."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 2, rows, 64, generator=g).to(dtype).requires_grad_(grad) for rows in (n, l, l))
    return q, k, v


def cached(tensor):
    """Whether tensor's memory is a block of the cache (2 MiB aligned; plain tensors of PyTorch's
    allocator are 64-byte aligned and only by chance 2 MiB aligned, so the tests also check reuse)."""
    return tensor.untyped_storage().data_ptr() % (2 * MIB) == 0


def uncached(call):
    """call() with the cache off: plain PyTorch tensors."""
    previous = performer.set_output_cache_limit(0)
    try:
        return call()
    finally:
        performer.set_output_cache_limit(previous)


def flat(result):
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for part in result for t in flat(part)]


def projection():
    return performer.FavorProjection(64, 64, seed=3)


FORWARDS = {
    "softmax_attention": lambda q, k, v: pt.softmax_attention(q, k, v, return_lse=True),
    "softmax_attention causal": lambda q, k, v: pt.softmax_attention(q, k, v, causal=True),
    "linear_attention": lambda q, k, v: pt.linear_attention(q, k, v, return_state=True),
    "linear_attention causal": lambda q, k, v: pt.linear_attention(q, q, q, causal=True),
    "favor_attention": lambda q, k, v: pt.favor_attention(q, k, v, projection()),
}


@pytest.mark.parametrize("name", FORWARDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_large_forward_results_come_from_the_cache_with_the_values_of_plain_tensors(name, dtype):
    q, k, v = inputs(n=16384 if dtype.itemsize == 2 else 8192, dtype=dtype)  # >= 4 MiB
    got = flat(FORWARDS[name](q, k, v))
    want = flat(uncached(lambda: FORWARDS[name](q, k, v)))
    assert cached(got[0]), name
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
        assert torch.equal(a, b)
    assert not any(cached(t) for t in want)


@pytest.mark.parametrize("name", ["softmax_attention", "linear_attention", "favor_attention", "linear_state"])
def test_large_gradients_come_from_the_cache_with_the_values_of_plain_tensors(name):
    call = {"softmax_attention": lambda q, k, v: pt.softmax_attention(q, k, v, causal=True),
            "linear_attention": lambda q, k, v: pt.linear_attention(q, k, v, causal=True),
            "favor_attention": lambda q, k, v: pt.favor_attention(q, k, v, projection()),
            "linear_state": lambda q, k, v: pt.linear_state(k, v, heads=2)[0] + q.sum()}[name]

    def grads():
        q, k, v = inputs(n=8192, l=8192, grad=True)
        out = call(q, k, v)
        out.backward(torch.ones_like(out))
        return q.grad, k.grad, v.grad

    got, want = grads(), uncached(grads)
    # (q's gradient in linear_state is autograd's, of q.sum())
    assert all(cached(g) for g in (got[1:] if name == "linear_state" else got)), name
    for a, b in zip(got, want):
        assert torch.equal(a, b), name


def test_the_ops_results_come_from_the_cache_too():
    q, k, v = inputs()
    out, lse = torch.ops.performer.softmax(q, k, v, False, None, None, None)
    assert cached(out) and not cached(lse)  # lse: 64 KiB
    dq, dk, dv = torch.ops.performer.softmax_backward(q, k, v, out, lse, out, False, None, None, None)
    assert cached(dq)
    want = uncached(lambda: torch.ops.performer.softmax_backward(q, k, v, out, lse, out, False, None, None, None))
    assert torch.equal(dq, want[0]) and torch.equal(dk, want[1]) and torch.equal(dv, want[2])


def test_a_dead_result_leaves_its_memory_to_the_next_one_of_its_size():
    q, k, v = inputs()
    out = pt.linear_attention(q, k, v)
    first = out.data_ptr()
    del out
    assert contents() == (BLOCK, 1)
    again = pt.linear_attention(q, k, v)
    assert again.data_ptr() == first
    assert contents() == (0, 0)


def test_a_live_view_keeps_the_memory_from_reuse():
    q, k, v = inputs()
    out = pt.softmax_attention(q, k, v)
    first = out.data_ptr()
    view = out[0, 1, ::3]
    kept = view.clone()
    del out
    assert contents() == (0, 0)
    other = pt.softmax_attention(2 * q, k, v)
    assert other.data_ptr() != first
    assert torch.equal(view, kept)
    del view
    assert contents() == (BLOCK, 1)


def test_gradients_in_the_model_layout_keep_their_inputs_strides():
    # transformers hands the attention q, k, v as B x H x N x D views of B x N x H x D memory.
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 8192, 4, 32, generator=g).transpose(1, 2).requires_grad_()
    k, v = (torch.randn(1, 8192, 2, 32, generator=g).transpose(1, 2).requires_grad_() for _ in range(2))
    out = glue.attention_forward(None, q, k, v, glue.attention_mask(1, 8192, 8192))[0]
    assert out.shape == (1, 8192, 4, 32) and out.is_contiguous() and cached(out)
    out.sum().backward()
    assert q.grad.stride() == q.stride() and k.grad.stride() == k.stride() and cached(q.grad)


def test_small_results_fake_tensors_and_a_zero_limit_give_plain_resizable_tensors():
    q, k, v = inputs(n=64)
    small = pt.softmax_attention(q, k, v)
    small.resize_(4, 2, 64, 64)  # a plain tensor's storage grows
    assert contents() == (0, 0)
    q, k, v = inputs()
    plain = uncached(lambda: pt.softmax_attention(q, k, v))
    plain.resize_(2, 2, 8192, 64)
    cached_out = pt.softmax_attention(q, k, v)
    with pytest.raises(RuntimeError, match="not resizable"):  # the documented cost of a cached result
        cached_out.resize_(2, 2, 8192, 64)
    cached_out.resize_(1, 2, 4096, 64)  # within its memory: fine
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fq, fk, fv = (mode.from_tensor(t) for t in inputs())
        fake = torch.ops.performer.softmax(fq, fk, fv, False, None, None, None)[0]
    assert type(fake).__name__ == "FakeTensor" and fake.shape == (1, 2, 8192, 64)


def test_cached_results_pickle_save_share_and_survive_the_limit_of_zero():
    q, k, v = inputs(n=16384, dtype=torch.bfloat16)
    out = pt.softmax_attention(q, k, v)
    assert cached(out) and out.dtype == torch.bfloat16
    kept = out.clone()
    assert torch.equal(pickle.loads(pickle.dumps(out)), kept)
    buffer = io.BytesIO()
    torch.save(out, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer), kept)
    performer.set_output_cache_limit(0)
    assert torch.equal(out, kept)
    del out
    assert contents() == (0, 0)  # died under a limit of 0: freed
    performer.set_output_cache_limit(256 * MIB)
    shared = pt.linear_attention(*inputs())
    values = shared.clone()
    shared.share_memory_()  # moves the values into shared memory; the block goes back to the cache
    assert shared.is_shared() and torch.equal(shared, values)
    assert contents() == (BLOCK, 1)


def test_compiled_calls_return_cached_results_equal_to_eager():
    q, k, v = inputs()
    compiled = torch.compile(lambda a, b, c: pt.linear_attention(a, b, c) * 2, fullgraph=True)
    got = pt.linear_attention(q, k, v)
    assert cached(got)
    assert torch.equal(compiled(q, k, v), got * 2)
    with torch.inference_mode():
        assert torch.equal(pt.linear_attention(q, k, v), got)


def test_export_with_a_dynamic_length_puts_no_guard_on_the_result_size():
    # The fake kernels' result sizes are symbolic: testing them against the cache's 4 MiB would
    # restrict the exported length (n <= 524287 here) or recompile at that size.
    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return pt.linear_attention(q, k, v) + pt.softmax_attention(q, k, v)

    q, k, v = inputs(l=8192)
    n = torch.export.Dim("n", min=2, max=1 << 20)
    exported = torch.export.export(Attention(), (q, k, v), dynamic_shapes=({2: n}, {2: n}, {2: n}))
    assert str(exported.range_constraints).endswith("VR[2, 1048576]}")
    small = inputs(n=16, l=16)
    assert torch.allclose(exported.module()(*small), Attention()(*small))
    assert torch.equal(exported.module()(q, k, v), Attention()(q, k, v))
