"""performer.torch in half precision (issue 10 on the PyTorch side): bfloat16 and float16 tensors through
exact softmax attention (function, op, module, Hugging Face attention), forward and backward, against a
float64 reference with FlashAttention's accuracy rule; torch.autocast("cpu") side by side with SDPA;
torch.func (grad, vjp, jacrev, vmap) through every op; linear attention and FAVOR+ half tensors equal
to the float32 computation rounded once.

The accuracy rule: against a float64 reference computed from the same (half) inputs, the max error of
our half output and of every gradient is at most 2x the max error of PyTorch's own
scaled_dot_product_attention run in that half dtype (the straightforward half implementation).
"""

import copy
import os

import pytest

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    if os.environ.get("PERFORMER_REQUIRE_TORCH") == "1":
        raise
    pytest.skip("PyTorch is not installed", allow_module_level=True)

import performer.torch as pt

HALF = [torch.bfloat16, torch.float16]
# Unit roundoff of each dtype: the relative error bounds below are stated in it.
UNIT = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}


def qkv(dtype, B=2, H=4, Hk=2, N=37, L=37, D=32, M=24, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(B, H, N, D, generator=g), torch.randn(B, Hk, L, D, generator=g),
               torch.randn(B, Hk, L, M, generator=g)]
    return [t.to(dtype).requires_grad_(requires_grad) for t in tensors]


def mask_of(N, L, causal, B=1, kv_lengths=None, kv_starts=None):
    """Boolean B x 1 x N x L mask: bottom-right causal and the key ranges."""
    j = torch.arange(L)
    mask = torch.ones(B, 1, N, L, dtype=torch.bool)
    if causal:
        mask &= (j[None, :] <= torch.arange(N)[:, None] + (L - N))
    for b in range(B):
        if kv_lengths is not None:
            mask[b] &= j < kv_lengths[b]
        if kv_starts is not None:
            mask[b] &= j >= kv_starts[b]
    return mask


def reference(q, k, v, mask):
    """float64 softmax attention (rows without keys: zero) and its gradients for a fixed dout."""
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    group = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = (q @ kk.transpose(-1, -2)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~mask, float("-inf"))
    p = torch.softmax(scores, -1).nan_to_num(0.0)
    out = p @ vv
    lse = torch.logsumexp(scores, -1)
    return out, lse, (q, k, v)


def grads(out, inputs, dout):
    return torch.autograd.grad(out, inputs, dout.to(out.dtype))


def max_err(a, b):
    return (a.detach().double() - b.detach().double()).abs().max().item()


CASES = [
    dict(causal=False),
    dict(causal=True),
    dict(causal=True, N=19, L=37),                       # bottom-right alignment, N != L
    dict(causal=False, H=4, Hk=1),                       # GQA 4:1
    dict(causal=True, kv_lengths=[30, 37], kv_starts=[0, 5]),
]


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
@pytest.mark.parametrize("case", CASES, ids=["full", "causal", "causal_N_ne_L", "gqa", "key_ranges"])
def test_half_output_and_gradients_within_twice_sdpa_error(dtype, case):
    case = dict(case)
    causal, kv_lengths, kv_starts = case.pop("causal"), case.pop("kv_lengths", None), case.pop("kv_starts", None)
    q, k, v = qkv(dtype, **case)
    B, N, L = q.shape[0], q.shape[2], k.shape[2]
    mask = mask_of(N, L, causal, B, kv_lengths, kv_starts)
    dout = torch.randn(q.shape[:3] + (v.shape[3],), generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    ref_out, ref_lse, ref_inputs = reference(q, k, v, mask)
    ref_grads = grads(ref_out, ref_inputs, dout)

    out, lse = pt.softmax_attention(q, k, v, causal=causal, kv_lengths=kv_lengths, kv_starts=kv_starts,
                                    return_lse=True)
    assert out.dtype == dtype and lse.dtype == torch.float32
    ours = [out] + list(grads(out, (q, k, v), dout))
    assert all(g.dtype == dtype for g in ours)

    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    theirs = [sdpa] + list(grads(sdpa, (q, k, v), dout))

    for name, a, b, r in zip(("out", "dq", "dk", "dv"), ours, theirs, [ref_out] + list(ref_grads)):
        ours_err, sdpa_err = max_err(a, r), max_err(b, r)
        assert ours_err <= 2 * sdpa_err, (name, ours_err, sdpa_err)
        # Stated bound: a few units of roundoff of the largest value (one rounding of a float32 result).
        assert ours_err <= 4 * UNIT[dtype] * r.abs().max().item(), (name, ours_err)
    # lse is float32, computed in float32: float32 accuracy, not half's.
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    assert max_err(lse[finite], ref_lse[finite]) <= 1e-5 * ref_lse[finite].abs().max().item() + 1e-6


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
def test_half_through_op_module_and_no_grad_path_agree(dtype):
    q, k, v = qkv(dtype, requires_grad=False)
    expected = pt.softmax_attention(q, k, v, causal=True)                   # direct path (no gradient)
    out, lse = torch.ops.performer.softmax(q, k, v, True, None, None, None)  # the dispatcher
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert torch.equal(out, expected)
    assert torch.equal(pt.SoftmaxAttention(causal=True)(q, k, v), expected)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    assert torch.equal(pt.softmax_attention(qg, kg, vg, causal=True), expected)  # autograd path
    # Strided half tensors are read in place: a B x N x H x D activation seen as B x H x N x D.
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)
    assert not qt.is_contiguous()
    assert torch.equal(pt.softmax_attention(qt, k, v, causal=True), expected)


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
def test_half_gradients_of_op_equal_function(dtype):
    q, k, v = qkv(dtype)
    dout = torch.randn(2, 4, 37, 24).to(dtype)
    a = grads(pt.softmax_attention(q, k, v), (q, k, v), dout)
    out, _ = torch.ops.performer.softmax(q, k, v, False, None, None, None)
    b = grads(out, (q, k, v), dout)
    for x, y in zip(a, b):
        assert x.dtype == dtype and torch.equal(x, y)


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
def test_half_opcheck_and_compile(dtype):
    q, k, v = qkv(dtype, B=1, H=2, Hk=1, N=5, L=7, D=8, M=4)
    permuted = q.detach().transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()
    for args in [(q, k, v, True, None, None, None),
                 (permuted, k, v, False, 0.5, torch.tensor([6]), torch.tensor([1]))]:
        result = torch.library.opcheck(torch.ops.performer.softmax, args)
        assert set(result.values()) == {"SUCCESS"}, result
    torch._dynamo.reset()
    compiled = torch.compile(lambda q, k, v: pt.softmax_attention(q, k, v, causal=True), backend="aot_eager",
                             fullgraph=True)
    out = compiled(q, k, v)
    want = pt.softmax_attention(q, k, v, causal=True)
    assert out.dtype == dtype and torch.equal(out, want)
    dout = torch.randn(out.shape).to(dtype)
    for a, b in zip(grads(out, (q, k, v), dout), grads(want, (q, k, v), dout)):
        assert torch.equal(a, b)


def test_half_large_scores_do_not_overflow_float16():
    # |q.k| far past float16's 65504: the scores are float32, the result is the max-score key's value.
    q = torch.full((1, 1, 2, 64), 60.0, dtype=torch.float16)
    k = torch.full((1, 1, 3, 64), 60.0, dtype=torch.float16)
    k[0, 0, 1] = 59.0
    v = torch.arange(3 * 8, dtype=torch.float16).reshape(1, 1, 3, 8)
    out, lse = pt.softmax_attention(q, k, v, scale=1.0, return_lse=True)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    # Keys 0 and 2 tie at the maximum (230400); key 1 is e^-7560 smaller.
    assert torch.equal(out[0, 0, 0], ((v[0, 0, 0].float() + v[0, 0, 2].float()) / 2).half())


def test_half_dtype_errors_name_the_argument():
    q, k, v = qkv(torch.bfloat16, requires_grad=False)
    with pytest.raises(TypeError, match="^k has dtype float16 but q has bfloat16$"):
        pt.softmax_attention(q, k.half(), v)
    with pytest.raises(TypeError, match="^v has dtype float32 but q has bfloat16$"):
        pt.softmax_attention(q, k, v.float())
    with pytest.raises(TypeError, match="^v has dtype float32 but q has bfloat16$"):
        torch.ops.performer.softmax(q, k, v.float(), False, None, None, None)
    with pytest.raises(TypeError, match="^q has dtype torch.int32; expected torch.float32, torch.float64, "):
        pt.softmax_attention(q.int(), k, v)


# ---------------------------------------------------------------------------------------------
# Linear attention and FAVOR+ in half: the library stages half tokens through its float32 kernels
# (states float32) and rounds each result once, so a half call equals the float32 call on the
# same (half-valued) inputs rounded to the half dtype, bit for bit -- values and gradients.
# ---------------------------------------------------------------------------------------------

def _half_calls(W):
    return {
        "linear": lambda q, k, v: pt.linear_attention(q, k, v, causal=False),
        "linear_causal_state": lambda q, k, v: pt.linear_attention(q, k, v, causal=True, return_state=True),
        "linear_state": lambda q, k, v: pt.linear_state(k, v),
        "favor": lambda q, k, v: pt.favor_attention(q, k, v, W),
        "favor_causal_state": lambda q, k, v: pt.favor_attention(q, k, v, W, causal=True, return_state=True),
        "favor_state": lambda q, k, v: pt.favor_state(k, v, W),
    }


STATE_ONLY = {"linear_state", "favor_state"}


def _flat(result):
    """The tensors of a result, nested tuples (out, (S, z)) flattened in order."""
    if isinstance(result, (tuple, list)):
        return [t for part in result for t in _flat(part)]
    return [result]


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
@pytest.mark.parametrize("name", ["linear", "linear_causal_state", "linear_state", "favor", "favor_causal_state",
                                  "favor_state"])
def test_linear_and_favor_half_equal_float32_rounded_once(dtype, name):
    q, k, v = qkv(dtype, H=2, Hk=2, N=21, L=21, D=16, M=16)
    W = torch.randn(24, 16, generator=torch.Generator().manual_seed(3))
    call = _half_calls(W)[name]
    wide = [t.detach().float().requires_grad_() for t in (q, k, v)]
    half_results, wide_results = _flat(call(q, k, v)), _flat(call(*wide))
    douts = []
    for index, (h, w) in enumerate(zip(half_results, wide_results)):
        # Tokens come back in the half dtype, states in float32 (issue 10 item 2).
        expected_dtype = dtype if (index == 0 and name not in STATE_ONLY) else torch.float32
        assert h.dtype == expected_dtype, (name, index, h.dtype)
        assert torch.equal(h, w.to(h.dtype)), (name, index)
        douts.append(torch.randn(h.shape, generator=torch.Generator().manual_seed(10 + index)).to(h.dtype))
    inputs = (q, k, v) if name not in STATE_ONLY else (k, v)
    wide_inputs = tuple(wide) if name not in STATE_ONLY else tuple(wide[1:])
    # FAVOR+'s stabilizer c is not differentiable (no grad_fn): only the results that are.
    used = [i for i, h in enumerate(half_results) if h.requires_grad]
    half_grads = torch.autograd.grad([half_results[i] for i in used], inputs, [douts[i] for i in used])
    wide_grads = torch.autograd.grad([wide_results[i] for i in used], wide_inputs,
                                     [douts[i].float() for i in used])
    for g_half, g_wide in zip(half_grads, wide_grads):
        assert g_half.dtype == dtype
        assert torch.equal(g_half, g_wide.to(dtype)), name


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
def test_half_linear_op_and_error_for_half_state(dtype):
    q, k, v = qkv(dtype, H=2, requires_grad=False)
    out, S, z = torch.ops.performer.linear(q, k, v, None, None, True, 0, 1e-6, True, None, None, True)
    assert out.dtype == dtype and S.dtype == z.dtype == torch.float32
    with pytest.raises(TypeError, match=r"^S0.dtype = b?float16 but must be float32 when q.dtype = b?float16"):
        torch.ops.performer.linear(q, k, v, S.to(dtype), z, True, 0, 1e-6, True, None, None, False)


def test_half_state_dtypes_are_float32_in_fake_kernels():
    """The outputs of a half linear / FAVOR+ call (states float32, issue 10 item 2) as the fake kernels
    give them to torch.compile: checked without data."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from performer.torch import _ops

    assert {"linear", "favor"} <= _ops.LIBRARY_HALF

    with FakeTensorMode():
        q = torch.empty(1, 2, 8, 4, dtype=torch.bfloat16)
        W = torch.empty(6, 4, dtype=torch.bfloat16)
        out, S, z = torch.ops.performer.linear(q, q, q, None, None, True, 0, 1e-6, True, None, None, True)
        assert out.dtype == torch.bfloat16 and S.dtype == z.dtype == torch.float32
        out, S, z, c = torch.ops.performer.favor(q, q, q, W, None, None, None, True, 0, None, 0.0, 1e-3, None,
                                                 None, True)
        assert out.dtype == torch.bfloat16 and S.dtype == z.dtype == c.dtype == torch.float32
        S, z = torch.ops.performer.linear_state(q, q, None, None, 2, 0, None, None)
        assert S.dtype == torch.float32
        with pytest.raises(TypeError, match=r"^initial_state\[0\] \(S\) has dtype bfloat16 but must be float32"):
            torch.ops.performer.linear(q, q, q, S.bfloat16(), z, True, 0, 1e-6, True, None, None, False)


# ---------------------------------------------------------------------------------------------
# torch.autocast("cpu")
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
def test_sdpa_under_cpu_autocast_is_what_we_follow(dtype):
    """What SDPA does under CPU autocast (PyTorch's policy, which the softmax op copies): float32 and
    half inputs are cast to the autocast dtype, the result is in it; float64 is left alone; the
    gradients reach the float32 leaves as float32."""
    q, k, v = qkv(torch.float32)
    with torch.autocast("cpu", dtype=dtype):
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        mixed = F.scaled_dot_product_attention(q, k.to(dtype), v, enable_gqa=True)
        wide = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), enable_gqa=True)
    assert out.dtype == dtype and mixed.dtype == dtype and wide.dtype == torch.float64
    assert grads(out, (q, k, v), torch.ones(out.shape))[0].dtype == torch.float32


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
@pytest.mark.parametrize("how", ["function", "op", "module", "compiled"])
def test_softmax_under_autocast_behaves_as_sdpa(dtype, how):
    q, k, v = qkv(torch.float32)
    dout = torch.randn(2, 4, 37, 24)
    kv = torch.tensor([30, 37])
    mask = mask_of(37, 37, True, 2, kv_lengths=[30, 37])

    def ours(q, k, v):
        if how == "op":
            return torch.ops.performer.softmax(q, k, v, True, None, kv, None)[0]
        if how == "module":
            return pt.SoftmaxAttention(causal=True)(q, k, v, kv_lengths=kv)
        return pt.softmax_attention(q, k, v, causal=True, kv_lengths=kv)

    if how == "compiled":
        torch._dynamo.reset()
        ours = torch.compile(ours, backend="aot_eager", fullgraph=True)
    with torch.autocast("cpu", dtype=dtype):
        out = ours(q, k, v)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        # Inputs of mixed dtypes (an autocast Linear's output beside a float32 tensor) are cast too.
        out_mixed = ours(q, k.to(dtype), v)
        # without autograd: the same dtype and values
        with torch.no_grad():
            out_ng = ours(q, k, v)
    assert out.dtype == ref.dtype == out_mixed.dtype == out_ng.dtype == dtype
    assert torch.equal(out_ng, out.detach()) and torch.equal(out_mixed.detach(), out.detach())
    # The computation is the half one: our result equals the half call on the cast inputs.
    assert torch.equal(out.detach(), pt.softmax_attention(q.to(dtype), k.to(dtype), v.to(dtype), causal=True,
                                                          kv_lengths=kv).detach())
    assert max_err(out, ref) <= 4 * UNIT[dtype] * ref.abs().max().item()
    ours_grads, sdpa_grads = grads(out, (q, k, v), dout), grads(ref, (q, k, v), dout)
    for a, b in zip(ours_grads, sdpa_grads):
        assert a.dtype == b.dtype == torch.float32
        assert max_err(a, b) <= 8 * UNIT[dtype] * b.abs().max().item()


def test_autocast_leaves_float64_alone_and_off_means_off():
    q, k, v = qkv(torch.float64, requires_grad=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert pt.softmax_attention(q, k, v).dtype == torch.float64
        assert torch.ops.performer.softmax(q, k, v, False, None, None, None)[0].dtype == torch.float64
        with torch.autocast("cpu", enabled=False):
            assert pt.softmax_attention(q.float(), k.float(), v.float()).dtype == torch.float32


def test_linear_and_favor_under_autocast_run_in_float32():
    """On autocast's float32 list: under autocast their half inputs are widened, so mixed dtypes from
    autocast layers run, and the result is float32 (outside autocast half tensors run in half)."""
    q, k, v = qkv(torch.float32, H=2)
    W = torch.randn(16, 32)
    expected = pt.linear_attention(q, k, v, causal=True)
    expected_favor = pt.favor_attention(q, k, v, W, causal=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pt.linear_attention(q, k.bfloat16(), v, causal=True)
        op = torch.ops.performer.linear(q, k.bfloat16(), v, None, None, True, 0, 1e-6, True, None, None, False)[0]
        same = pt.linear_attention(q, k, v, causal=True)
        favor = pt.favor_attention(q, k, v.bfloat16(), W, causal=True)
        S, z = pt.linear_state(k.bfloat16(), v)
    assert out.dtype == op.dtype == favor.dtype == S.dtype == torch.float32
    assert torch.equal(same, expected) and torch.equal(op, out)
    assert torch.equal(out, pt.linear_attention(q, k.bfloat16().float(), v, causal=True))
    assert torch.equal(favor, pt.favor_attention(q, k, v.bfloat16().float(), W, causal=True))
    assert max_err(favor, expected_favor) < 0.1  # bf16-rounded v


def test_llama_under_autocast_matches_sdpa():
    transformers = pytest.importorskip("transformers")
    name = pt.register_transformers_attention("performer")
    config = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      initializer_range=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    reference = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="sdpa")
    model = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=name)
    model.load_state_dict(reference.state_dict())
    ids = torch.randint(3, 97, (2, 21), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 21, dtype=torch.long)
    mask[1, :5] = 0  # left padding
    results = []
    for m in (reference, model):
        m.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
        out.loss.backward()
        results.append((out.logits.detach(), out.loss.detach(),
                        {n: p.grad.clone() for n, p in m.named_parameters()}))
    (ref_logits, ref_loss, ref_grads), (logits, loss, model_grads) = results
    assert logits.dtype == ref_logits.dtype
    valid = mask.bool()
    # bf16 activations: the two differ by bf16 roundings of the attention outputs, no more.
    scale = ref_logits[valid].abs().max().item()
    assert max_err(logits[valid], ref_logits[valid]) <= 0.05 * scale
    assert abs(loss.item() - ref_loss.item()) <= 0.01 * abs(ref_loss.item())
    for n, g in ref_grads.items():
        assert model_grads[n].dtype == g.dtype == torch.float32
        assert max_err(model_grads[n], g) <= 0.1 * g.abs().max().item() + 1e-6, n
    # Inference under autocast too (a generate() step).
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
    assert tokens.shape == (2, 24)


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
def test_llama_in_half_matches_sdpa(dtype):
    """A model stored in bf16/f16 (model.to(dtype)) runs its attention in that dtype, zero-copy."""
    transformers = pytest.importorskip("transformers")
    name = pt.register_transformers_attention("performer")
    config = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      initializer_range=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    reference = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="sdpa")
    model = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=name)
    model.load_state_dict(reference.state_dict())
    reference, model = reference.to(dtype), model.to(dtype)
    ids = torch.randint(3, 97, (2, 21), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 21, dtype=torch.long)
    mask[1, :5] = 0  # left padding
    valid = mask.bool()
    exact = copy.deepcopy(reference).float()  # float32 copy of the same (rounded) weights
    with torch.no_grad():
        want = exact(ids, attention_mask=mask).logits[valid]
        got = model(ids, attention_mask=mask).logits[valid]
        theirs = reference(ids, attention_mask=mask).logits[valid]
    assert got.dtype == theirs.dtype == dtype
    assert max_err(got, want) <= 2 * max_err(theirs, want)
    out = model(ids, labels=ids)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.dtype == dtype for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# torch.func
# ---------------------------------------------------------------------------------------------

def test_func_grad_and_vjp_of_softmax_equal_sdpa():
    q, k, v = qkv(torch.float64, requires_grad=False)

    def ours(q, k, v):
        return pt.softmax_attention(q, k, v, causal=True)

    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    loss = lambda f: (lambda q, k, v: f(q, k, v).pow(2).sum())  # noqa: E731
    a = torch.func.grad(loss(ours), argnums=(0, 1, 2))(q, k, v)
    b = torch.func.grad(loss(sdpa), argnums=(0, 1, 2))(q, k, v)
    for x, y in zip(a, b):
        assert max_err(x, y) <= 1e-12 * y.abs().max().item()
    dout = torch.randn(2, 4, 37, 24, dtype=torch.float64)
    out, vjp = torch.func.vjp(ours, q, k, v)
    ref_out, ref_vjp = torch.func.vjp(sdpa, q, k, v)
    assert max_err(out, ref_out) <= 1e-12
    for x, y in zip(vjp(dout), ref_vjp(dout)):
        assert max_err(x, y) <= 1e-12 * y.abs().max().item()


def test_func_grad_of_half_softmax():
    q, k, v = qkv(torch.bfloat16, requires_grad=False)
    g = torch.func.grad(lambda q: pt.softmax_attention(q, k, v).float().pow(2).sum())(q)
    qq = q.clone().requires_grad_()
    pt.softmax_attention(qq, k, v).float().pow(2).sum().backward()
    assert g.dtype == torch.bfloat16 and torch.equal(g, qq.grad)


def _autograd_grads(f, inputs, dout=None):
    """torch.autograd's gradients of f at inputs (zeros for an input f does not use)."""
    leaves = [t.clone().requires_grad_() for t in inputs]
    found = torch.autograd.grad(f(*leaves), leaves, dout, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, found)]


FUNCS = {
    "linear": lambda q, k, v, S0, z0: pt.linear_attention(q, k, v, causal=True, initial_state=(S0, z0),
                                                          return_state=True),
    "linear_full": lambda q, k, v, S0, z0: pt.linear_attention(q, k, v, kv_lengths=[30, 37]),
    "linear_state": lambda q, k, v, S0, z0: pt.linear_state(k, v, initial_state=(S0, z0)),
}


def _scalar(result):
    """A scalar loss of every floating tensor of a result (tensors nested in tuples)."""
    return sum(t.pow(2).sum() for t in torch.utils._pytree.tree_leaves(result) if t.numel())


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_func_grad_of_linear_equals_autograd(name):
    q, k, v = qkv(torch.float64, H=2, requires_grad=False)
    S0, z0 = torch.randn(2, 2, 32, 24, dtype=torch.float64), torch.rand(2, 2, 32, dtype=torch.float64)
    f = lambda *args: _scalar(FUNCS[name](*args))  # noqa: E731
    a = torch.func.grad(f, argnums=(0, 1, 2, 3, 4))(q, k, v, S0, z0)
    b = _autograd_grads(f, (q, k, v, S0, z0))
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("state", [False, True])
def test_func_grad_and_vjp_of_favor_equal_autograd(state):
    q, k, v = qkv(torch.float64, H=2, requires_grad=False)
    W = torch.randn(16, 32, dtype=torch.float64) * 0.3
    S0, z0, c0 = pt.favor_state(k, v, W)

    if state:
        def f(q, k, v):
            return pt.favor_state(k, v, W, initial_state=(S0, z0, c0))[0]
    else:
        def f(q, k, v):
            return pt.favor_attention(q, k, v, W, causal=True)

    a = torch.func.grad(lambda *t: f(*t).pow(2).sum(), argnums=(0, 1, 2))(q, k, v)
    b = _autograd_grads(lambda *t: f(*t).pow(2).sum(), (q, k, v))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    out, vjp = torch.func.vjp(f, q, k, v)
    dout = torch.randn(out.shape, dtype=torch.float64)
    for x, y in zip(vjp(dout), _autograd_grads(f, (q, k, v), dout)):
        assert torch.equal(x, y)


def test_func_jacrev_and_vmap_of_softmax():
    q, k, v = qkv(torch.float64, B=1, H=1, Hk=1, N=3, L=4, D=2, M=2, requires_grad=False)
    jac = torch.func.jacrev(lambda q: pt.softmax_attention(q, k, v))(q)
    ref = torch.func.jacrev(lambda q: F.scaled_dot_product_attention(q, k, v))(q)
    assert max_err(jac, ref) <= 1e-12
    batch = torch.stack([q, 2 * q])
    out = torch.func.vmap(lambda q: pt.softmax_attention(q, k, v))(batch)
    assert torch.equal(out[1], pt.softmax_attention(2 * q, k, v))
    # grad of a vmapped loss
    g = torch.func.grad(lambda b: torch.func.vmap(lambda q: pt.softmax_attention(q, k, v))(b).sum())(batch)
    assert torch.equal(g[0], torch.func.grad(lambda q: pt.softmax_attention(q, k, v).sum())(q))


def test_func_second_derivatives_and_forward_mode_raise_clearly():
    q, k, v = qkv(torch.float64, requires_grad=False)
    inner = torch.func.grad(lambda q: pt.softmax_attention(q, k, v).sum())
    with pytest.raises(RuntimeError, match="softmax_backward is not differentiable: performer.torch gives first"):
        torch.func.grad(lambda q: inner(q).sum())(q)
    inner = torch.func.grad(lambda q: pt.linear_attention(q, q, q).sum())
    with pytest.raises(RuntimeError, match="linear_backward is not differentiable"):
        torch.func.grad(lambda q: inner(q).sum())(q[:, :2])
    with pytest.raises(NotImplementedError, match="jvp"):
        torch.func.jvp(lambda q: pt.softmax_attention(q, k, v), (q,), (q,))


# ------------------------------------------------------------------ decoders (issue 10 item 2)


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
def test_half_linear_decoder_is_the_float32_decoder_rounded(dtype):
    """A half tensor decoder: tokens in the half dtype, state float32; each output the float32
    decoder's on the widened tokens rounded once, the state the float32 decoder's bit for bit;
    prefill + steps, and steps on a caller-owned float32 state."""
    q, k, v = qkv(dtype, B=2, H=4, Hk=2, N=11, L=11, D=8, M=6, requires_grad=False)
    half = pt.LinearDecoder(2, 4, 8, 6, key_heads=2, dtype=dtype)
    single = pt.LinearDecoder(2, 4, 8, 6, key_heads=2, dtype=torch.float32)
    assert half.dtype == dtype and half.state_dtype == torch.float32
    wide = [t.float() for t in (q, k, v)]
    outs = [half.prefill(q[:, :, :4], k[:, :, :4], v[:, :, :4])]
    outs32 = [single.prefill(*(t[:, :, :4] for t in wide))]
    for t in range(4, 11):
        outs.append(half.step(q[:, :, t], k[:, :, t], v[:, :, t]).unsqueeze(2))
        outs32.append(single.step(*(x[:, :, t] for x in wide)).unsqueeze(2))
    out, out32 = torch.cat(outs, 2), torch.cat(outs32, 2)
    assert out.dtype == dtype and torch.equal(out, out32.to(dtype))
    state, state32 = half.state, single.state
    assert all(s.dtype == torch.float32 for s in state)
    assert all(torch.equal(a, b) for a, b in zip(state, state32))
    # The half causal forward over the same tokens: within one rounding of the output.
    forward = pt.linear_attention(q, k, v, causal=True)
    # One spacing of the half type at the larger magnitude (at least its smallest normal's).
    spacing = UNIT[dtype] * 2 * torch.maximum(out.float().abs(), forward.float().abs())
    assert torch.all((out.float() - forward.float()).abs() <= spacing + torch.finfo(dtype).tiny)
    caller = pt.LinearDecoder(2, 4, 8, 6, key_heads=2, dtype=dtype)
    S, z = torch.zeros(2, 4, 8, 6), torch.zeros(2, 4, 8)
    half.reset()
    for t in range(11):
        mine = caller.step(q[:, :, t], k[:, :, t], v[:, :, t], state=(S, z))
        assert torch.equal(mine, half.step(q[:, :, t], k[:, :, t], v[:, :, t]))
    assert all(torch.equal(a, b) for a, b in zip((S, z), half.state))
    with pytest.raises(TypeError, match=r"has dtype b?float16 but the decoder's state"):
        half.set_state(S.to(dtype), z.to(dtype))
    with pytest.raises(TypeError, match=r"q has dtype float32 but the decoder has b?float16"):
        half.step(wide[0][:, :, 0], k[:, :, 0], v[:, :, 0])


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
@pytest.mark.parametrize("features", ["positive", "hyperbolic", "trigonometric", "relu"])
def test_half_favor_decoder_is_the_float32_decoder_rounded(dtype, features):
    q, k, v = qkv(dtype, B=1, H=2, Hk=2, N=9, L=9, D=8, M=6, requires_grad=False)
    q, k = q * 0.5, k * 0.5
    W = torch.randn(16, 8, generator=torch.Generator().manual_seed(5))
    eps = 1e-3 if features == "trigonometric" else 0.0
    half = pt.FavorDecoder(W, 1, 2, 6, features=features, eps=eps, dtype=dtype)
    single = pt.FavorDecoder(W, 1, 2, 6, features=features, eps=eps, dtype=torch.float32)
    wide = [t.float() for t in (q, k, v)]
    out = torch.stack([half.step(q[:, :, t], k[:, :, t], v[:, :, t]) for t in range(9)], 2)
    out32 = torch.stack([single.step(*(x[:, :, t] for x in wide)) for t in range(9)], 2)
    assert out.dtype == dtype and torch.equal(out, out32.to(dtype))
    assert all(a.dtype == torch.float32 and torch.equal(a, b) for a, b in zip(half.state, single.state))
    # A caller-owned float32 state triple (loaded, stepped, written back).
    state = tuple(s.clone() for s in single.state)
    mine = half.step(q[:, :, 0], k[:, :, 0], v[:, :, 0], state=state)
    theirs = single.step(wide[0][:, :, 0], wide[1][:, :, 0], wide[2][:, :, 0])
    assert torch.equal(mine, theirs.to(dtype))
    assert all(torch.equal(a, b) for a, b in zip(state, single.state))
