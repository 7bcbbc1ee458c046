"""performer.torch.register_transformers_attention: tiny Hugging Face models (Llama with GQA, GPT-2) built
from configs run with attn_implementation="performer" and give the logits, gradients and generated tokens
of the same models on SDPA; masks the library cannot express raise.

The test command (run.sh) installs torch and transformers; elsewhere these tests skip without them.
"""

import copy
import os

import pytest

try:
    import torch
    import transformers
except ImportError:
    if os.environ.get("PERFORMER_REQUIRE_TORCH") == "1":
        raise
    pytest.skip("PyTorch or transformers is not installed", allow_module_level=True)

import performer.torch as pt
from performer.torch import transformers as glue
from transformers import AttentionInterface, AutoModelForCausalLM, GPT2Config, LlamaConfig
from transformers import masking_utils

NAME = pt.register_transformers_attention("performer")


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def llama_config():
    return LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       initializer_range=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def gpt2_config(attn_pdrop=0.0):
    return GPT2Config(vocab_size=97, n_embd=64, n_layer=2, n_head=4, n_positions=64, attn_pdrop=attn_pdrop,
                      resid_pdrop=0.0, embd_pdrop=0.0, initializer_range=0.5, pad_token_id=0, bos_token_id=1,
                      eos_token_id=2)


CONFIGS = {"llama": llama_config, "gpt2": gpt2_config}


def model_pair(config):
    """The same random weights on SDPA and on performer, float32, eval mode (no dropout). Each model gets
    its own copy of the config: from_config records the attention implementation in the config object."""
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="sdpa").float().eval()
    model = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=NAME).float().eval()
    model.load_state_dict(reference.state_dict())
    assert reference.config._attn_implementation == "sdpa" and model.config._attn_implementation == NAME
    return reference, model


def batch(padding, B=3, N=13, vocab=97):
    """Token ids and a 2D padding mask: rows padded by 0, 3 and 6 tokens on ``padding``'s side."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (B, N), generator=g)
    mask = torch.ones(B, N, dtype=torch.long)
    if padding != "none":
        for b in range(B):
            pad = 3 * b
            if padding == "left":
                mask[b, :pad] = 0
            else:
                mask[b, N - pad:] = 0
    return ids, mask


def assert_trains_like_sdpa(reference, model, got, expected, mask):
    """got (model's output with labels) has expected's logits on the real tokens (padded query
    positions see no key, left, or are ignored by the loss) and, after both losses' backward, every
    parameter's gradient."""
    real = mask.bool()
    assert rel_err(got.logits[real], expected.logits[real]) <= 1e-5
    expected.loss.backward()
    got.loss.backward()
    reference_grads = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name
        assert rel_err(parameter.grad, reference_grads[name].grad) <= 1e-4, name


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_logits_and_gradients_equal_sdpa(arch, padding):
    reference, model = model_pair(CONFIGS[arch]())
    ids, mask = batch(padding)
    labels = ids.masked_fill(mask == 0, -100)
    kwargs = {} if padding == "none" else {"attention_mask": mask}
    assert_trains_like_sdpa(reference, model, model(ids, labels=labels, **kwargs),
                            reference(ids, labels=labels, **kwargs), mask)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_greedy_generate_equals_sdpa_left_padded(arch, cache):
    reference, model = model_pair(CONFIGS[arch]())
    ids, mask = batch("left", N=9)
    options = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    if cache == "static":
        options["cache_implementation"] = "static"
    with torch.no_grad():
        expected = reference.generate(ids, **options)
        got = model.generate(ids, **options)
    assert got.shape == (3, 17)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize("padding", ["none", "left"])
def test_compiled_model_is_one_graph_and_trains_like_sdpa(arch, padding):
    # While tracing, transformers hands the mask function a composed one (its packed-sequence check)
    # even without packing, and the padding ranges cannot be branched on: both stay in the graph.
    reference, model = model_pair(CONFIGS[arch]())
    ids, mask = batch(padding)
    labels = ids.masked_fill(mask == 0, -100)
    kwargs = {} if padding == "none" else {"attention_mask": mask}
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(ids, labels=labels, use_cache=False, **kwargs)
    on_sdpa = torch._dynamo.explain(reference)(ids, labels=labels, use_cache=False, **kwargs)
    # As many graphs as on SDPA (GPT-2's loss breaks the graph in transformers itself), so fullgraph
    # compiles wherever it does on SDPA (Llama).
    assert explained.graph_break_count == on_sdpa.graph_break_count, explained.break_reasons
    assert arch == "gpt2" or explained.graph_count == 1
    compiled = torch.compile(model, fullgraph=on_sdpa.graph_break_count == 0)
    assert_trains_like_sdpa(reference, model, compiled(ids, labels=labels, use_cache=False, **kwargs),
                            reference(ids, labels=labels, use_cache=False, **kwargs), mask)


def test_compiled_model_refuses_packed_sequences_and_holes_when_it_runs():
    _, model = model_pair(llama_config())
    ids = torch.randint(3, 97, (1, 8))
    compiled = torch.compile(model, fullgraph=True)
    single = compiled(ids, position_ids=torch.arange(8)[None], use_cache=False).logits
    assert torch.isfinite(single).all()
    with pytest.raises(RuntimeError, match="not causal within one key range per batch row"):
        compiled(ids, position_ids=torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]]), use_cache=False)
    holed = torch.ones(1, 8, dtype=torch.long)
    holed[0, 3] = 0
    with pytest.raises(RuntimeError, match=r"attention_mask \(padding\): a row attends to keys with a hole"):
        compiled(ids, attention_mask=holed, use_cache=False)


def test_compiled_generate_with_a_static_cache_equals_sdpa():
    # transformers' recipe for compiled decoding: a static cache and a compiled forward.
    reference, model = model_pair(llama_config())
    ids, mask = batch("left", B=2, N=9)
    options = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0,
                   cache_implementation="static")
    with torch.no_grad():
        expected = reference.generate(ids, **options)
        model.forward = torch.compile(model.forward)
        got = model.generate(ids, **options)
    assert torch.equal(got, expected)


def test_mask_descriptor_is_small_and_right_for_a_static_cache():
    # The key ranges for a static cache of 32 slots with 9 tokens written and 1 new query: keys [0, 10),
    # rows from their first real token.
    mask = torch.tensor([[1] * 9, [0, 0, 0] + [1] * 6]).bool()
    mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.bool)], 1)
    ranges = glue.attention_mask(batch_size=2, q_length=1, kv_length=32, q_offset=torch.tensor(9), kv_offset=0,
                                 mask_function=masking_utils.causal_mask_function, attention_mask=mask)
    assert ranges.keys == 10 and ranges.causal
    assert ranges.kv_starts.tolist() == [0, 3] and ranges.kv_lengths is None


@pytest.mark.parametrize("dtype", [torch.long, torch.bool, torch.float32])
def test_mask_of_unpadded_rows_takes_the_short_path_to_the_same_ranges(dtype):
    # All-ones windows (every step of an unpadded batch) skip the per-row range search; a window
    # shorter than the keys (transformers pads it with False), a zero anywhere, or padding only
    # outside the window read by this call still give what the general path gives.
    def ranges(mask, kv_length=8, q_length=1, q_offset=7, kv_offset=0):
        r = glue.attention_mask(batch_size=mask.shape[0], q_length=q_length, kv_length=kv_length,
                                q_offset=q_offset, kv_offset=kv_offset,
                                mask_function=masking_utils.causal_mask_function, attention_mask=mask.to(dtype))
        return (r.keys, r.causal, None if r.kv_starts is None else r.kv_starts.tolist(),
                None if r.kv_lengths is None else r.kv_lengths.tolist())

    ones = torch.ones(2, 8)
    assert ranges(ones) == (8, True, None, None)
    assert ranges(ones[:, :6]) == (8, True, None, [6, 6])
    right = ones.clone()
    right[1, 6:] = 0
    assert ranges(right) == (8, True, None, [8, 6])
    left = ones.clone()
    left[0, :2] = 0
    assert ranges(left) == (8, True, [2, 0], None)
    assert ranges(left, q_offset=7, kv_offset=2, kv_length=6) == (6, True, None, None)
    assert ranges(torch.ones(2, 12), q_length=4, q_offset=4) == (8, True, None, None)


def test_four_d_tensor_mask_is_read_and_checked():
    # A 4D mask built by transformers' sdpa_mask (left and right padding) gives the KeyRanges' result.
    g = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(2, 4, 6, 8, generator=g), torch.randn(2, 2, 6, 8, generator=g), torch.randn(2, 2, 6, 8,
                                                                                                         generator=g)
    padding = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]]).bool()
    dense = masking_utils.sdpa_mask(batch_size=2, q_length=6, kv_length=6, attention_mask=padding,
                                    allow_is_causal_skip=False)
    ranges = glue.attention_mask(batch_size=2, q_length=6, kv_length=6, attention_mask=padding,
                                 mask_function=masking_utils.causal_mask_function)
    module = torch.nn.Module()
    from_dense, _ = glue.attention_forward(module, q, k, v, dense)
    from_ranges, _ = glue.attention_forward(module, q, k, v, ranges)
    assert torch.equal(from_dense, from_ranges)
    additive = torch.zeros(dense.shape).masked_fill(~dense, torch.finfo(torch.float32).min)
    assert torch.equal(glue.attention_forward(module, q, k, v, additive)[0], from_ranges)
    holed = dense.clone()
    holed[0, 0, 5, 3] = False
    with pytest.raises(ValueError, match="attention_mask"):
        glue.attention_forward(module, q, k, v, holed)
    with pytest.raises(ValueError, match="bias"):
        glue.attention_forward(module, q, k, v, additive + 0.5 * torch.randn(additive.shape, generator=g))


def test_padding_with_a_hole_raises():
    _, model = model_pair(llama_config())
    ids, mask = batch("none")
    mask[1, 4] = 0
    with pytest.raises(ValueError, match=r"attention_mask \(padding\): row 1 .* hole"):
        model(ids, attention_mask=mask)


def test_masks_it_cannot_express_raise():
    with pytest.raises(ValueError, match="mask_function=.*sliding window"):
        glue.attention_mask(batch_size=1, q_length=4, kv_length=4,
                            mask_function=masking_utils.sliding_window_causal_mask_function(2))
    # Packed sequences (position ids restarting inside a row) become a remapped mask function.
    _, model = model_pair(llama_config())
    ids = torch.randint(3, 97, (1, 8))
    with pytest.raises(ValueError, match="mask_function"):
        model(ids, position_ids=torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]]), use_cache=False)


def test_attention_without_its_mask_function_refuses_to_drop_padding():
    AttentionInterface.register("performer_without_mask", glue.attention_forward)
    config = llama_config()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="performer_without_mask").eval()
    ids, mask = batch("left")
    with pytest.raises(ValueError, match="register_transformers_attention"):
        model(ids, attention_mask=mask)


def test_attention_dropout_in_training_raises():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(gpt2_config(attn_pdrop=0.1), attn_implementation=NAME).train()
    ids, _ = batch("none")
    with pytest.raises(ValueError, match="dropout"):
        model(ids)
    model.eval()
    assert torch.isfinite(model(ids).logits).all()  # eval mode passes dropout=0


def reference_attention(q, k, v, causal, starts, ends):
    """float64 B x N x H x M softmax attention with GQA, bottom-right causal alignment and key ranges
    [starts[b], ends[b]); a row without keys is zero."""
    B, H, N, D = q.shape
    L = k.shape[2]
    k, v = k.repeat_interleave(H // k.shape[1], 1), v.repeat_interleave(H // v.shape[1], 1)
    scores = q @ k.transpose(-1, -2) / D ** 0.5
    j = torch.arange(L)
    allowed = (j >= torch.tensor(starts)[:, None, None, None]) & (j < torch.tensor(ends)[:, None, None, None])
    if causal:
        allowed = allowed & (j <= torch.arange(N)[:, None] + (L - N))
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)
    return (weights @ v).transpose(1, 2)


@pytest.mark.parametrize("causal", [True, False])
def test_layer_call_writes_the_model_layout_and_matches_a_reference(causal):
    # q laid out B x N x H x D as Llama's projections make it; N < L (a cache) and left/right padding.
    B, H, Hk, N, L, D = 3, 4, 2, 5, 7, 8
    g = torch.Generator().manual_seed(3)
    q = torch.randn(B, N, H, D, generator=g, dtype=torch.float64).transpose(1, 2).requires_grad_()
    k = torch.randn(B, Hk, L, D, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, Hk, L, D, generator=g, dtype=torch.float64, requires_grad=True)
    starts, ends = [0, 2, 7], [7, 5, 7]  # row 2 has no key: zero output and gradients
    ranges = glue.KeyRanges(L, causal, torch.tensor(starts), torch.tensor(ends), shape=(B, 1, N, L))
    out, weights = glue.attention_forward(None, q, k, v, ranges)
    assert weights is None and out.shape == (B, N, H, D) and out.is_contiguous()
    expected = reference_attention(q, k, v, causal, starts, ends)
    assert rel_err(out, expected) <= 1e-12
    with torch.no_grad():  # the path without the log-sum-exp
        assert rel_err(glue.attention_forward(None, q, k, v, ranges)[0], expected) <= 1e-12
    dout = torch.randn(out.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(out, (q, k, v), dout)
    wanted = torch.autograd.grad(expected, (q, k, v), dout)
    for name, a, b in zip("qkv", got, wanted):
        assert rel_err(a, b) <= 1e-12, name
    assert got[0].stride() == q.stride()  # the gradient in q's layout: no copy on the way back
