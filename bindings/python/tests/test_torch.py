"""performer.torch: exact softmax attention through the performer::softmax op, checked against
PyTorch (SDPA); FAVOR+ and linear attention also have test_torch_ops.py, test_torch_linear.py and
test_torch_modules.py.

The test command (bindings/python/tests/run.sh) installs PyTorch and sets
PERFORMER_REQUIRE_TORCH=1, so there these tests run; elsewhere the ones that need PyTorch skip
when it is not installed, and the few at the top run either way.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import performer
import reference

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, os.pardir, os.pardir, os.pardir))
EXAMPLE = os.path.join(REPO, "examples", "python", "torch_training.py")


def run_python(code, *args):
    return subprocess.run([sys.executable, "-c", code] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=600)


# ---------------------------------------------------------------------------------------------
# With or without PyTorch
# ---------------------------------------------------------------------------------------------

def test_performer_does_not_import_torch():
    result = run_python("import sys, performer; print('torch' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_import_without_torch_raises_a_clear_import_error():
    # sys.modules["torch"] = None makes `import torch` fail as if it were not installed.
    code = ("import sys\nsys.modules['torch'] = None\nimport performer\n"
            "try:\n    import performer.torch\nexcept ImportError as e:\n    print('ImportError:', e)\n"
            "else:\n    print('imported')\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ImportError: performer.torch needs PyTorch, which is not installed")
    assert "pip install torch" in result.stdout


def test_training_example_runs():
    result = subprocess.run([sys.executable, EXAMPLE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "PyTorch is not installed" in result.stdout
    else:
        assert "loss decreased" in result.stdout and "ok" in result.stdout.split()


# ---------------------------------------------------------------------------------------------
# With PyTorch
# ---------------------------------------------------------------------------------------------

try:
    import torch
except ImportError:
    # The test command installs PyTorch; there a missing torch is a failure, not a skip.
    if os.environ.get("PERFORMER_REQUIRE_TORCH") == "1":
        raise
    torch = None
    pt = None
else:
    import performer.torch as pt
    import torch.nn.functional as F

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def make_qkv(dtype=None, B=2, H=4, Hk=2, N=5, L=7, D=4, M=3, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    dtype = dtype or torch.float64
    tensors = (torch.randn(B, H, N, D, generator=g, dtype=dtype),
               torch.randn(B, Hk, L, D, generator=g, dtype=dtype),
               torch.randn(B, Hk, L, M, generator=g, dtype=dtype))
    return tuple(t.requires_grad_(requires_grad) for t in tensors)


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def bottom_right_mask(N, L):
    i = torch.arange(N)[:, None]
    j = torch.arange(L)[None, :]
    return j <= i + (L - N)


# --- gradcheck (float64) ---------------------------------------------------------------------

GRADCHECK_CASES = [
    # (H, Hk, N, L, causal, scale, kv_lengths)
    (4, 2, 5, 7, False, None, None),
    (4, 2, 5, 7, True, None, None),
    (2, 2, 6, 6, True, 0.7, None),
    (4, 1, 7, 4, True, None, None),        # N > L causal: the first 3 rows see no key
    (4, 4, 5, 7, False, None, [7, 3]),
    (4, 2, 5, 7, True, 1.3, [0, 6]),       # batch 0 fully masked: zero output and gradients
]


@needs_torch
@pytest.mark.parametrize("H,Hk,N,L,causal,scale,kv_lengths", GRADCHECK_CASES)
def test_gradcheck_float64(H, Hk, N, L, causal, scale, kv_lengths):
    q, k, v = make_qkv(H=H, Hk=Hk, N=N, L=L)

    def f(q, k, v):
        return pt.softmax_attention(q, k, v, causal=causal, scale=scale, kv_lengths=kv_lengths)

    assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-8, rtol=1e-6)


@needs_torch
@pytest.mark.parametrize("causal", [False, True])
def test_matches_float64_reference(causal):
    q, k, v = make_qkv(N=7, L=4)
    out = pt.softmax_attention(q, k, v, causal=causal, kv_lengths=[4, 2])
    dout = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    args = [t.detach().numpy() for t in (q, k, v)]
    ref_out = reference.forward(*args, causal=causal, kv_lengths=[4, 2])[0]
    ref = reference.backward(*args, dout.numpy(), causal=causal, kv_lengths=[4, 2])
    np.testing.assert_allclose(out.detach().numpy(), ref_out, rtol=1e-12, atol=1e-12)
    for got, want in zip((dq, dk, dv), ref):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-11, atol=1e-12)


@needs_torch
def test_rows_without_keys_are_zero_with_zero_gradients():
    q, k, v = make_qkv(N=6, L=3)  # causal, N > L: rows 0..2 see no key
    out = pt.softmax_attention(q, k, v, causal=True)
    dq, = torch.autograd.grad(out.sum(), (q,))
    assert torch.all(out[:, :, :3] == 0) and torch.all(out[:, :, 3:] != 0)
    assert torch.all(dq[:, :, :3] == 0) and torch.isfinite(dq).all()


# --- PyTorch's own scaled_dot_product_attention (float32) ------------------------------------

def sdpa_case(q, k, v, mask=None, is_causal=False, scale=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale,
                                          enable_gqa=True)


def compare_with_sdpa(ours, theirs, inputs, tol=1e-5, seed=1):
    g = torch.Generator().manual_seed(seed)
    dout = torch.randn(ours.shape, generator=g, dtype=ours.dtype)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert rel_err(ours, theirs) <= tol
    for a, b in zip(torch.autograd.grad(ours, inputs, dout), torch.autograd.grad(theirs, inputs, dout)):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert rel_err(a, b) <= tol


@needs_torch
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("H,Hk", [(4, 4), (4, 2), (6, 1)])
def test_equals_sdpa_when_n_equals_l(causal, H, Hk):
    q, k, v = make_qkv(torch.float32, B=2, H=H, Hk=Hk, N=67, L=67, D=32, M=24)
    ours = pt.softmax_attention(q, k, v, causal=causal)
    theirs = sdpa_case(q, k, v, is_causal=causal)
    compare_with_sdpa(ours, theirs, (q, k, v))


@needs_torch
@pytest.mark.parametrize("N,L", [(19, 83), (1, 50), (40, 41)])
def test_causal_with_n_below_l_equals_sdpa_with_bottom_right_mask(N, L):
    q, k, v = make_qkv(torch.float32, B=2, H=4, Hk=2, N=N, L=L, D=16, M=16)
    ours = pt.softmax_attention(q, k, v, causal=True)
    theirs = sdpa_case(q, k, v, mask=bottom_right_mask(N, L))
    compare_with_sdpa(ours, theirs, (q, k, v))
    # ... and not PyTorch's top-left is_causal, which masks more.
    assert rel_err(ours, sdpa_case(q, k, v, is_causal=True)) > 1e-2


@needs_torch
def test_scale_and_kv_lengths_equal_sdpa_with_masks():
    B, N, L = 3, 20, 30
    q, k, v = make_qkv(torch.float32, B=B, H=2, Hk=2, N=N, L=L, D=8, M=8)
    lengths = torch.tensor([30, 17, 25])
    ours = pt.softmax_attention(q, k, v, causal=True, scale=0.3, kv_lengths=lengths)
    mask = bottom_right_mask(N, L)[None, None] & (torch.arange(L)[None, None, None, :] < lengths[:, None, None, None])
    theirs = sdpa_case(q, k, v, mask=mask, scale=0.3)
    compare_with_sdpa(ours, theirs, (q, k, v))



@needs_torch
def test_key_ranges_equal_sdpa_with_left_and_right_padding_masks():
    """kv_starts and kv_lengths (left, right and both-side padding, one row left with no key)
    against SDPA given the same key mask, forward and gradients; fully masked rows are 0 here
    where SDPA gives NaN, so those rows are compared separately."""
    B, N, L = 4, 12, 16
    q, k, v = make_qkv(torch.float32, B=B, H=4, Hk=2, N=N, L=L, D=8, M=8)
    starts, lengths = torch.tensor([0, 2, 3, 9]), torch.tensor([16, 16, 11, 9])
    keys = torch.arange(L)[None, None, None, :]
    visible = (keys >= starts[:, None, None, None]) & (keys < lengths[:, None, None, None])
    for causal in (False, True):
        ours = pt.softmax_attention(q, k, v, causal=causal, kv_starts=starts, kv_lengths=lengths)
        mask = visible & (bottom_right_mask(N, L)[None, None] if causal else True)
        seen = mask.any(-1, keepdim=True)  # B x 1 x N x 1: rows that see a key
        assert not seen[3].any()
        live = slice(0, 3)  # the batch rows with keys; row 3's range is empty
        theirs = sdpa_case(q[live], k[live], v[live], mask=mask[live])
        compare_with_sdpa(ours[live], theirs, (q, k, v))
        assert torch.equal(ours[3], torch.zeros_like(ours[3]))
        dq, dk = torch.autograd.grad(
            pt.softmax_attention(q, k, v, causal=causal, kv_starts=starts, kv_lengths=lengths).sum(), (q, k))
        assert torch.equal(dq[3], torch.zeros_like(dq[3]))
        assert torch.equal(dk[1, :, :2], torch.zeros_like(dk[1, :, :2]))  # left padding: no gradient


# --- Strides, no copies ----------------------------------------------------------------------

@needs_torch
def test_raw_view_is_the_tensors_memory_and_strides_without_numpy(monkeypatch):
    from performer.torch._tensors import view
    x = torch.randn(2, 9, 4, 8)
    t = x.transpose(1, 2)  # B x N x H x D -> B x H x N x D, not contiguous
    assert view("q", t) == (t.data_ptr(), t.shape, t.stride(), 0, True)
    expanded = torch.randn(1, 1, 5, 8, dtype=torch.float64).expand(2, 4, 5, 8)
    assert view("k", expanded)[2][:2] == (0, 0) and view("k", expanded)[3] == 1

    def no_numpy(self, *args, **kwargs):
        raise AssertionError("tensor.numpy() called")

    monkeypatch.setattr(torch.Tensor, "numpy", no_numpy)
    q, k, v = make_qkv()
    pt.softmax_attention(q, k, v).sum().backward()
    with torch.no_grad():
        pt.softmax_attention(t, t, t)


@needs_torch
@pytest.mark.parametrize("causal", [False, True])
def test_transposed_inputs_equal_contiguous_and_sdpa(causal):
    g = torch.Generator().manual_seed(3)
    B, N, H, D = 2, 33, 4, 16
    # Activations as a model holds them (B x N x H x D), transposed to B x H x N x D views.
    xq, xk, xv = (torch.randn(B, N, H, D, generator=g, requires_grad=True) for _ in range(3))
    q, k, v = (x.transpose(1, 2) for x in (xq, xk, xv))
    assert not q.is_contiguous()
    ours = pt.softmax_attention(q, k, v, causal=causal)
    contiguous = pt.softmax_attention(q.contiguous(), k.contiguous(), v.contiguous(), causal=causal)
    assert torch.equal(ours, contiguous)
    compare_with_sdpa(ours, sdpa_case(q, k, v, is_causal=causal), (xq, xk, xv))


@needs_torch
def test_expanded_and_sliced_inputs():
    q, k, v = make_qkv(torch.float64, H=4, Hk=4, N=6, L=9, requires_grad=False)
    k1 = torch.randn(2, 1, 9, 4, dtype=torch.float64, requires_grad=True)
    big_v = torch.randn(2, 4, 18, 6, dtype=torch.float64, requires_grad=True)
    kk, vv = k1.expand(2, 4, 9, 4), big_v[:, :, ::2, 1:4]
    q.requires_grad_()
    ours = pt.softmax_attention(q, kk, vv)
    theirs = sdpa_case(q, kk, vv)
    compare_with_sdpa(ours, theirs, (q, k1, big_v), tol=1e-12)


@needs_torch
def test_backward_with_broadcast_and_strided_output_gradients():
    q, k, v = make_qkv()
    # out.sum() sends back a zero-strided gradient; out.t() a transposed one.
    out = pt.softmax_attention(q, k, v)
    g1 = torch.autograd.grad(out.sum(), (q, k, v))
    g2 = torch.autograd.grad(pt.softmax_attention(q, k, v).transpose(2, 3).sum(), (q, k, v))
    ref = reference.backward(*[t.detach().numpy() for t in (q, k, v)], np.ones(out.shape))
    for a, b, want in zip(g1, g2, ref):
        np.testing.assert_allclose(a.numpy(), want, rtol=1e-11, atol=1e-12)
        assert torch.equal(a, b)


# --- Gradients only where asked, no_grad, double backward --------------------------------------

@needs_torch
def test_only_requested_gradients():
    q, k, v = make_qkv(requires_grad=False)
    k.requires_grad_()
    out = pt.softmax_attention(q, k, v, causal=True)
    assert out.requires_grad and out.grad_fn is not None
    out.square().sum().backward()
    assert q.grad is None and v.grad is None and k.grad is not None
    expected = reference.backward(*[t.detach().numpy() for t in (q, k, v)], 2 * out.detach().numpy(),
                                  causal=True)[1]
    np.testing.assert_allclose(k.grad.numpy(), expected, rtol=1e-11, atol=1e-12)


@needs_torch
def test_no_grad_and_inputs_without_grad_give_plain_tensors():
    q, k, v = make_qkv()
    with_grad = pt.softmax_attention(q, k, v)
    with torch.no_grad():
        out = pt.softmax_attention(q, k, v)
    assert not out.requires_grad and out.grad_fn is None
    assert torch.equal(out, with_grad.detach())
    plain = pt.softmax_attention(*(t.detach() for t in (q, k, v)))
    assert not plain.requires_grad and torch.equal(plain, out)


@needs_torch
def test_not_twice_differentiable():
    q, k, v = make_qkv()
    out = pt.softmax_attention(q, k, v)
    dq, = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError):
        dq.sum().backward()


@needs_torch
def test_eager_autograd_and_the_registered_ops_autograd_agree():
    q, k, v = make_qkv()
    g = torch.randn(2, 4, 5, 3, dtype=torch.float64)
    out = pt.softmax_attention(q, k, v, causal=True, scale=0.5, kv_lengths=[7, 6])
    assert type(out.grad_fn).__name__ == "_SoftmaxFunctionBackward"  # the eager path
    out2, lse = torch.ops.performer.softmax(q, k, v, True, 0.5, torch.tensor([7, 6]), None)
    assert "performer_softmax" in type(out2.grad_fn).__name__ and not lse.requires_grad
    assert torch.equal(out, out2)
    for a, b in zip(torch.autograd.grad((out * g).sum(), (q, k, v)), torch.autograd.grad((out2 * g).sum(), (q, k, v))):
        assert torch.equal(a, b)


# --- Module and training -------------------------------------------------------------------

@needs_torch
def test_module():
    module = pt.SoftmaxAttention(causal=True, scale=0.25)
    assert "causal=True, scale=0.25" in repr(module)
    assert list(module.parameters()) == [] and module.state_dict() == {}
    q, k, v = make_qkv()
    assert torch.equal(module(q, k, v, kv_lengths=[5, 6]),
                       pt.softmax_attention(q, k, v, causal=True, scale=0.25, kv_lengths=[5, 6]))
    assert pt.SoftmaxAttention().causal is False and pt.SoftmaxAttention().scale is None


if torch is not None:

    class TinyAttentionModel(torch.nn.Module):
        """Token embedding -> one causal self-attention block (GQA) -> vocabulary logits."""

        def __init__(self, attention, vocab=8, width=32, heads=4, kv_heads=2):
            super().__init__()
            self.heads, self.kv_heads, self.head_dim = heads, kv_heads, width // heads
            self.embed = torch.nn.Embedding(vocab, width)
            self.position = torch.nn.Parameter(0.1 * torch.randn(64, width))
            self.q = torch.nn.Linear(width, width)
            self.kv = torch.nn.Linear(width, 2 * kv_heads * self.head_dim)
            self.attention = attention
            self.head = torch.nn.Linear(width, vocab)

        def forward(self, tokens):
            B, N = tokens.shape
            x = self.embed(tokens) + self.position[:N]
            q = self.q(x).view(B, N, self.heads, self.head_dim).transpose(1, 2)
            k, v = self.kv(x).view(B, N, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            y = self.attention(q, k, v).transpose(1, 2).reshape(B, N, -1)
            return self.head(x + y)


def copy_task_batch(generator, B=32, N=8, vocab=8):
    # The second half of each sequence repeats the first: predictable only by attending back.
    first = torch.randint(1, vocab, (B, N // 2), generator=generator)
    return torch.cat([first, first], dim=1)


@needs_torch
def test_training_step_gradients_equal_sdpa_model():
    torch.manual_seed(0)
    ours = TinyAttentionModel(pt.SoftmaxAttention(causal=True))
    theirs = TinyAttentionModel(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                                enable_gqa=True))
    theirs.load_state_dict(ours.state_dict())
    tokens = copy_task_batch(torch.Generator().manual_seed(1))
    for model in (ours, theirs):
        logits = model(tokens[:, :-1])
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)).backward()
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert rel_err(a.grad, b.grad) <= 1e-5, name


@needs_torch
def test_tiny_training_loop_loss_decreases():
    torch.manual_seed(0)
    model = TinyAttentionModel(pt.SoftmaxAttention(causal=True))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    generator = torch.Generator().manual_seed(2)
    losses = []
    for _ in range(100):
        tokens = copy_task_batch(generator)
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.7 * first, (first, last)


# --- Errors: the performer package's, through the wrappers --------------------------------------

def raised(function, *args, **kwargs):
    with pytest.raises((TypeError, ValueError)) as info:
        function(*args, **kwargs)
    return type(info.value), str(info.value)


@needs_torch
@pytest.mark.parametrize("make_args,options", [
    (lambda q, k, v: (q[0], k, v), {}),                                 # q of rank 3
    (lambda q, k, v: (q, k[:, :, :, :3], v), {}),                       # head dims differ
    (lambda q, k, v: (q, k, v[:, :, :5]), {}),                          # keys differ
    (lambda q, k, v: (q[:, :3], k, v), {}),                             # 3 heads, 2 key heads
    (lambda q, k, v: (q, k.float(), v), {}),                            # mixed dtypes
    (lambda q, k, v: (q.half(), k.half(), v), {}),                      # float16 mixed with float32
    (lambda q, k, v: (q.int(), k.int(), v.int()), {}),                  # int32
    (lambda q, k, v: (q, k, v), {"kv_lengths": [1, 2, 3]}),             # B = 2
    (lambda q, k, v: (q, k, v), {"kv_lengths": [1, 8]}),                # > L
    (lambda q, k, v: (q, k, v), {"kv_lengths": [1.0, 2.0]}),            # not ints
    (lambda q, k, v: (q, k, v), {"scale": "x"}),
    (lambda q, k, v: (q, k, v), {"scale": float("nan")}),
])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_errors_are_the_packages(make_args, options, requires_grad):
    q, k, v = make_args(*make_qkv(requires_grad=requires_grad))
    if q.dtype == torch.int32:
        # NumPy-free: the dtype is refused by performer.torch itself, in torch's words.
        expected = (TypeError, "q has dtype torch.int32; expected torch.float32, torch.float64, torch.float16 or "
                               "torch.bfloat16")
    elif options.get("kv_lengths") == [1.0, 2.0]:
        expected = (TypeError, "kv_lengths must hold ints, not torch.float32")
    else:
        expected = raised(performer.softmax_attention, *(t.detach().numpy() for t in (q, k, v)), **options)
    assert raised(pt.softmax_attention, q, k, v, **options) == expected
    module_options = {o: x for o, x in options.items() if o != "kv_lengths"}
    assert raised(lambda: pt.SoftmaxAttention(**module_options)(q, k, v, options.get("kv_lengths"))) == expected


@needs_torch
def test_errors_for_what_numpy_cannot_view():
    q, k, v = make_qkv()
    error, message = raised(pt.softmax_attention, q.detach().numpy(), k, v)
    assert error is TypeError and message == "q must be a torch.Tensor, not ndarray"
    error, message = raised(pt.softmax_attention, q, k.to("meta"), v)
    assert error is TypeError and message.startswith("k is on device meta; performer.torch computes on the CPU")
    error, message = raised(pt.softmax_attention, q, k, v.bfloat16())
    assert error is TypeError and message == "v has dtype bfloat16 but q has float64"
    error, message = raised(pt.softmax_attention, q, k, v.to(torch.complex64))
    assert error is TypeError and message == ("v has dtype torch.complex64; expected torch.float32, torch.float64, "
                                              "torch.float16 or torch.bfloat16")
    error, message = raised(pt.softmax_attention, q.to_sparse(), k, v)
    assert error is TypeError and message.startswith("q has layout torch.sparse_coo")


@needs_torch
def test_module_rejects_a_bad_scale_at_construction():
    with pytest.raises(TypeError, match="^scale must be None or a real number, not str$"):
        pt.SoftmaxAttention(scale="x")


# --- FAVOR+ ------------------------------------------------------------------------------------

def torch_favor_reference(q, k, v, W, causal=False, kv_lengths=None):
    """FAVOR+ (positive features) written in PyTorch with the materialized phi(Q) phi(K)^T:
    its autograd gives reference gradients."""
    D = q.shape[-1]
    s = D ** -0.25
    W = torch.as_tensor(W, dtype=q.dtype)
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)

    def phi(x):
        xh = x * s
        return torch.exp(xh @ W.T - (xh * xh).sum(-1, keepdim=True) / 2) / W.shape[0] ** 0.5

    fq, fk = phi(q), phi(k)
    if kv_lengths is not None:
        keep = torch.arange(k.shape[2])[None, :] < torch.as_tensor(kv_lengths)[:, None]
        fk = fk * keep[:, None, :, None]
    a = fq @ fk.transpose(-1, -2)
    if causal:
        a = torch.tril(a)
    return (a @ v) / a.sum(-1, keepdim=True)


@needs_torch
@pytest.mark.parametrize("causal,H,Hk,kv_lengths", [(False, 4, 2, None), (True, 4, 2, None), (False, 2, 1, [7, 4]),
                                                    (True, 2, 2, [5, 7])])
def test_favor_gradcheck_and_reference(causal, H, Hk, kv_lengths):
    q, k, v = make_qkv(H=H, Hk=Hk, N=7, L=7, D=4, M=3)
    q, k = (0.5 * q).detach().requires_grad_(), (0.5 * k).detach().requires_grad_()
    p = performer.FavorProjection(4, 8, seed=3)

    def f(q, k, v):
        return pt.favor_attention(q, k, v, p, causal=causal, kv_lengths=kv_lengths)

    assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-8, rtol=1e-6)
    g = torch.randn(2, H, 7, 3, dtype=torch.float64)
    ours = torch.autograd.grad((f(q, k, v) * g).sum(), (q, k, v))
    ref_out = torch_favor_reference(q, k, v, p.matrix, causal, kv_lengths)
    theirs = torch.autograd.grad((ref_out * g).sum(), (q, k, v))
    assert rel_err(f(q, k, v), ref_out) < 1e-12
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) < 1e-10


@needs_torch
def test_favor_module_redraw_and_no_grad():
    torch.manual_seed(0)
    module = pt.FavorAttention(8, 16, causal=True, seed=5)
    assert "num_features=16" in repr(module) and "causal=True" in repr(module)
    q, k, v = make_qkv(dtype=torch.float32, H=2, Hk=2, N=6, L=6, D=8, M=4)
    out = module(q, k, v)
    assert out.dtype == torch.float32 and out.requires_grad
    W = module.projection.matrix
    # A redraw after the forward does not change the W of its backward.
    module.redraw()
    out.sum().backward()
    ref = torch_favor_reference(q, k, v, W, causal=True)
    grads = torch.autograd.grad(ref.sum(), (q, k, v))
    for a, b in zip((q.grad, k.grad, v.grad), grads):
        assert rel_err(a, b) < 1e-4
    with torch.no_grad():
        redrawn = module(q, k, v)
    assert not redrawn.requires_grad and rel_err(redrawn, out) > 1e-3  # the new W gives another estimate
    with pytest.raises(ValueError, match="features"):
        pt.FavorAttention(8, features="softmax")


# --- Hugging Face transformers: a real model built from a config ------------------------------

@needs_torch
def test_llama_from_config_with_our_attention_equals_sdpa():
    """A random-initialized small Llama (GQA: 4 query heads on 2 key heads), its attention routed
    through performer.torch.softmax_attention by register_transformers_attention, gives the
    logits and gradients of the same model on SDPA (no padding; test_transformers.py has the
    padded, GPT-2 and generate() cases). Each model gets its own config: from_config writes the
    attention implementation into the config object, and a shared one would make the reference
    run our attention too."""
    import copy

    from transformers import AutoModelForCausalLM, LlamaConfig

    name = pt.register_transformers_attention("performer_test_causal")
    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         initializer_range=0.5)  # large weights: attention far from uniform
    torch.manual_seed(0)
    reference_model = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="sdpa").float()
    model = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=name).float()
    assert reference_model.config._attn_implementation == "sdpa"
    model.load_state_dict(reference_model.state_dict())
    ids = torch.randint(0, config.vocab_size, (2, 17))
    expected, got = reference_model(ids, labels=ids), model(ids, labels=ids)
    assert rel_err(got.logits, expected.logits) <= 1e-5
    expected.loss.backward()
    got.loss.backward()
    reference_grads = dict(reference_model.named_parameters())
    for name, parameter in model.named_parameters():
        assert rel_err(parameter.grad, reference_grads[name].grad) <= 1e-4, name
