"""torch tensors handed to the extension as they are (performer.torch registers torch.Tensor with
_performer._register_tensor_type): the extension reads a plain CPU tensor's data_ptr, shape and
strides itself and asks performer.torch's view() about any other tensor. Same results and the same
errors, naming the argument, as the raw views; no reference kept."""

import gc
import os
import sys

import numpy as np
import pytest

try:
    import torch
except ImportError:
    if os.environ.get("PERFORMER_REQUIRE_TORCH"):
        raise
    pytest.skip("PyTorch is not installed", allow_module_level=True)

import performer  # noqa: E402
import performer.torch  # noqa: E402  (registers the tensor type)
from performer import _performer  # noqa: E402
from performer.torch._tensors import view  # noqa: E402


def _qkv(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 5, 4, generator=g, dtype=dtype)
    k = torch.randn(2, 3, 7, 4, generator=g, dtype=dtype)
    v = torch.randn(2, 3, 7, 6, generator=g, dtype=dtype)
    return q, k, v


def _forward(q, k, v, out, lse=None, causal=False):
    _performer.softmax_forward(q, k, v, out, lse, causal, None, None)
    return out


def test_tensors_equal_raw_views():
    q, k, v = _qkv()
    k_t = k.transpose(2, 3).contiguous().transpose(2, 3)   # strided
    v_neg = torch._neg_view(-v)                              # lazily negated: resolved, not misread
    expected = torch.empty(2, 3, 5, 6, dtype=q.dtype)
    _forward(view("q", q), view("k", k_t), view("v", v), view("out", expected))
    out = torch.empty(2, 3, 5, 6, dtype=q.dtype)
    _forward(q, k_t, v_neg, out)
    assert v_neg.is_neg()
    assert torch.equal(out, expected)
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, reference)


def test_subclass_goes_through_view():
    q, k, v = _qkv()
    out = torch.empty(2, 3, 5, 6, dtype=q.dtype)
    _forward(torch.nn.Parameter(q), k, v, out)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v))


def test_negated_views_are_read_from_a_copy_kept_alive():
    """A lazily negated tensor has no memory holding its values: a subclass (through view()) and a
    raw view of one read the resolved copy, which the view keeps alive for the call; many calls with
    the copies freed in between (allocator reuse) give the same answer."""
    q, k, v = _qkv()
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for _ in range(20):
        out = torch.empty(2, 3, 5, 6, dtype=q.dtype)
        subclass = torch._neg_view(-v).as_subclass(torch.nn.Parameter)
        assert subclass.is_neg() and type(subclass) is torch.nn.Parameter
        _forward(q, k, subclass, out)
        torch.testing.assert_close(out, expected)
        raw = view("v", torch._neg_view(-v))
        assert len(raw) == 6 and raw[4] is False   # the owner rides along; read-only
        out2 = torch.empty(2, 3, 5, 6, dtype=q.dtype)
        _forward(view("q", q), view("k", k), raw, view("out", out2))
        torch.testing.assert_close(out2, expected)
        del subclass, raw


def test_negated_output_refused():
    q, k, v = _qkv()
    out = torch._neg_view(torch.zeros(2, 3, 5, 6, dtype=q.dtype))
    with pytest.raises(ValueError, match="^out is a lazily negated view"):
        _forward(q, k, v, out)
    with pytest.raises(ValueError, match="^out: cannot write into a read-only tensor"):
        _forward(view("q", q), view("k", k), view("v", v), view("out", out))


def test_errors_name_the_argument():
    q, k, v = _qkv()
    out = torch.full((2, 3, 5, 6), 7.0, dtype=q.dtype)
    with pytest.raises(TypeError, match="^k has dtype torch.int64; expected"):
        _forward(q, k.long(), v, out)
    with pytest.raises(TypeError, match="^v has dtype float32 but q has float64"):
        _forward(q, k, v.float(), out)
    with pytest.raises(TypeError, match="^v is on device meta"):
        _forward(q, k, v.to("meta"), out)
    with pytest.raises(ValueError, match="^q must have 4 dimensions \\(shape of the tensor"):
        _forward(q[0], k, v, out)
    with pytest.raises(ValueError, match="^out"):
        _forward(q, k, v, out[..., :2])
    assert bool((out == 7.0).all())  # nothing written


def test_no_references_kept():
    q, k, v = _qkv()
    out = torch.empty(2, 3, 5, 6, dtype=q.dtype)
    bad = k.long()
    negated = torch._neg_view(-v)
    tracked = [q, k, v, out, bad, negated]
    calls = [lambda: _forward(q, k, negated, out), lambda: _forward(q, k, v, out)]
    failing = [lambda: _forward(q, bad, v, out), lambda: _forward(q, k, v, out[..., :2])]
    gc.collect()
    before = [sys.getrefcount(t) for t in tracked]
    for _ in range(50):
        for call in calls:
            call()
        for call in failing:
            with pytest.raises((TypeError, ValueError)):
                call()
    gc.collect()
    assert [sys.getrefcount(t) for t in tracked] == before


def test_decoder_step_with_tensors_and_arrays():
    decoder = performer.torch.LinearDecoder(1, 2, 4, 3, dtype=torch.float64)
    q, k, v = torch.rand(1, 2, 4, dtype=torch.float64), torch.rand(1, 2, 4, dtype=torch.float64), \
        torch.rand(1, 2, 3, dtype=torch.float64)
    out = decoder.step(q, k, v)
    twin = performer.LinearDecoder(1, 2, 4, 3, dtype="float64")
    np.testing.assert_allclose(out.numpy(), twin.step(q.numpy(), k.numpy(), v.numpy()), rtol=0, atol=0)
    with pytest.raises(TypeError, match="^q must be a torch.Tensor"):
        decoder.step(q.numpy(), k, v)


def _register(to_dlpack):
    from performer.torch import _tensors
    _performer._register_tensor_type(torch.Tensor, _tensors.DTYPE_CODES, view, to_dlpack, _tensors._FROM_DLPACK)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_decoder_step_output_made_by_the_extension(dtype):
    """step() without out= on plain tensors: the extension makes the output (PyTorch's from_dlpack),
    a contiguous, aligned, writable CPU tensor of the decoder's dtype, owned by the caller alone,
    equal to a step with out=; a step that fails leaves nothing behind."""
    from performer.torch import _tensors
    assert _tensors.MAKES_TENSORS  # this PyTorch has from_dlpack: the extension's path is tested
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 4, generator=g).to(dtype) for _ in range(3))
    made, given = (performer.torch.LinearDecoder(2, 3, 4, 4, dtype=dtype) for _ in range(2))
    for _ in range(3):
        out = made.step(q, k, v)
        expected = given.step(q, k, v, torch.full((2, 3, 4), 7.0, dtype=dtype))
        assert type(out) is torch.Tensor and out.dtype is dtype and out.shape == (2, 3, 4)
        assert out.is_contiguous() and out.device.type == "cpu" and out.data_ptr() % 64 == 0
        assert torch.equal(out, expected) and not out.requires_grad and sys.getrefcount(out) == 2
    del made
    gc.collect()
    out.mul_(2)  # the tensor owns its memory: it outlives the decoder
    assert torch.equal(out, expected * 2)
    favor = performer.torch.FavorDecoder(torch.randn(5, 4, generator=g), 2, 3, 4, dtype=dtype)
    assert favor.step(q, k, v).dtype is dtype
    with pytest.raises(ValueError, match="v.shape"):
        given.step(q, k, v[..., :3])


def test_decoder_step_on_a_caller_state_in_one_extension_call():
    """A step on the caller's plain state tensors: read by the extension itself, the same bits as
    the decoder's own state, errors naming the state as performer.torch does."""
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 4, generator=g, dtype=torch.float64) for _ in range(3))
    own = performer.torch.LinearDecoder(1, 2, 4, 3, dtype=torch.float64)
    caller = performer.torch.LinearDecoder(1, 2, 4, 3, dtype=torch.float64)
    S = torch.zeros(1, 4, 2, 3, dtype=torch.float64).transpose(1, 2)  # any strides
    z = torch.zeros(1, 2, 4, dtype=torch.float64)
    for parameter in (False, True):  # plain tensors, then Parameters (the view() path)
        state = (torch.nn.Parameter(S, requires_grad=False), torch.nn.Parameter(z, requires_grad=False)) \
            if parameter else (S, z)
        with torch.no_grad():
            out = caller.step(q, k, v[..., :3], state=state)
        assert torch.equal(out, own.step(q, k, v[..., :3]))
        assert torch.equal(S, own.state[0]) and torch.equal(z, own.state[1])
    assert torch.equal(caller.state[0], torch.zeros(1, 2, 4, 3, dtype=torch.float64))  # untouched
    with pytest.raises(TypeError, match=r"^state\[0\] \(S\) has dtype float32"):
        caller.step(q, k, v[..., :3], state=(S.float(), z))
    with pytest.raises(ValueError, match=r"state\[1\] \(z\)|z"):
        caller.step(q, k, v[..., :3], state=(S, z[..., :3]))
    assert torch.equal(S, own.state[0])  # nothing written on error


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dlpack_and_attribute_reading_agree(dtype):
    """A plain tensor is read through PyTorch's to_dlpack when performer.torch found it, else through
    its attributes: the same shapes, strides (permuted, expanded, size-1 dims, offsets) and results."""
    import torch.nn.functional as F
    q, k, v = (t.to(dtype) for t in _qkv())
    cases = [(q, k, v), (q[:, :, 1:4], k.transpose(2, 3).contiguous().transpose(2, 3), v[..., ::2]),
             (q[:, :1].expand(2, 3, 5, 4), k[:1].expand(2, 3, 7, 4), torch._neg_view(-v)),
             (q[:, :, :1], k[:, :, :1], v[:, :, :1])]
    assert getattr(torch._C, "_to_dlpack", None) is not None  # this PyTorch has it: the fast path is tested
    results = {}
    try:
        for to_dlpack in (None, torch._C._to_dlpack):
            _register(to_dlpack)
            outs = []
            for a, b, c in cases:
                out = torch.full((a.shape[0], a.shape[1], a.shape[2], c.shape[3]), 7.0, dtype=dtype)
                outs.append(_forward(a, b, c, out))
                outs.append(performer.torch.softmax_attention(a, b, c, kv_lengths=[1, 1]))
            results[to_dlpack is None] = outs
    finally:
        _register(getattr(torch._C, "_to_dlpack", None))
    assert all(torch.equal(x, y) for x, y in zip(results[True], results[False]))
    for (a, b, c), out in zip(cases, results[False][::2]):
        torch.testing.assert_close(out.double(), F.scaled_dot_product_attention(a.double(), b.double(), c.double()),
                                   atol=1e-2, rtol=1e-2)


def test_without_pytorchs_to_dlpack_the_attributes_are_read():
    import subprocess
    code = ("import torch; del torch._C._to_dlpack; del torch._C._from_dlpack\n"
            "import performer.torch as pt\n"
            "q = torch.randn(1, 2, 3, 4, dtype=torch.float64).transpose(1, 2)\n"
            "out = pt.softmax_attention(q, q, torch._neg_view(q))\n"
            "ref = torch.nn.functional.scaled_dot_product_attention(q, q, -q)\n"
            "assert torch.allclose(out, ref, atol=1e-12), (out - ref).abs().max()\n"
            "d = pt.LinearDecoder(1, 2, 4, 3, dtype=torch.float64)\n"
            "x = torch.rand(1, 2, 4, dtype=torch.float64)\n"
            "assert d.step(x, x, x[..., :3]).shape == (1, 2, 3)  # torch.empty from Python\n"
            "print('attributes ok')\n")
    result = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "attributes ok" in result.stdout


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decoder_step_output_has_the_decoders_dtype_whatever_the_default(dtype):
    """step() without out= leaves out PyTorch's dtype argument when the decoder's dtype is the default."""
    q, k, v = (torch.rand(1, 2, 4, dtype=dtype) for _ in range(3))
    expected = performer.torch.LinearDecoder(1, 2, 4, 4, dtype=dtype).step(q, k, v)
    previous = torch.get_default_dtype()
    try:
        for default in (torch.float32, torch.float64):
            torch.set_default_dtype(default)
            out = performer.torch.LinearDecoder(1, 2, 4, 4, dtype=dtype).step(q, k, v)
            assert out.dtype is dtype and torch.equal(out, expected)
    finally:
        torch.set_default_dtype(previous)


def _vm_flags_of(address):
    """The VmFlags of the mapping holding `address`, from /proc/self/smaps."""
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                inside = start <= address < end
            elif inside and fields[0] == "VmFlags:":
                return fields[1:]
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux") or
                    not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"),
                    reason="huge-page advice is Linux's")
def test_large_outputs_are_advised_huge_pages_small_ones_not():
    # performer.torch's outputs come from PyTorch's allocator in 4 KiB pages; from 4 MiB on the
    # extension advises huge pages before the kernel writes them (first-touch faults: ~15 ms of a
    # new 32 MiB output at 1 thread, ~3.7 ms in 2 MiB pages). The outputs here live in anonymous
    # mappings of their own, so no earlier advice (NumPy's, on the heap) is on their memory.
    import mmap

    from performer.linear import _FEATURE_MAPS

    def linear_into(out, q, k, v):
        _performer.linear_forward(q, k, v, out, None, None, None, None, None, False, _FEATURE_MAPS["elu+1"], 1e-6,
                                  True, None, None)

    def mapped(shape):
        memory = mmap.mmap(-1, int(np.prod(shape)) * 4)
        return memory, torch.frombuffer(memory, dtype=torch.float32).view(*shape)

    g = torch.Generator().manual_seed(0)
    shape = (1, 4, 10240, 64)   # 10 MiB
    q, k, v = (torch.randn(*shape, generator=g) for _ in range(3))
    memory, out = mapped(shape)
    middle = out.data_ptr() + out.numel() * 2   # inside the output's page-aligned range
    assert "hg" not in _vm_flags_of(middle)
    performer.linear_attention(q.numpy(), k.numpy(), v.numpy(), out=out.numpy())
    assert "hg" not in _vm_flags_of(middle), "a NumPy-level out= is the caller's memory: no advice"
    expected = out.clone()
    linear_into(out, q, k, v)
    assert "hg" in _vm_flags_of(middle)
    assert torch.equal(out, expected)
    # Under 4 MiB: no advice.
    small_memory, small = mapped((1, 1, 10240, 64))   # 2.5 MiB
    linear_into(small, q[:, :1], k[:, :1], v[:, :1])
    assert "hg" not in _vm_flags_of(small.data_ptr() + small.numel() * 2)
    assert torch.equal(small, expected[:, :1])
    del out, small
    memory.close()
    small_memory.close()
