"""Hugging Face transformers glue: libperformer's exact softmax attention as an attention implementation.

``register_transformers_attention(name="performer")`` registers two functions under ``name``:

- in ``AttentionMaskInterface``, :func:`attention_mask`: instead of a B x 1 x N x L boolean tensor it
  returns a :class:`KeyRanges` -- per batch row one contiguous key range [start, end) taken from the 2D
  padding mask, whether the mask is causal, and how many keys the causal alignment covers. It refuses
  (ValueError naming the mask) anything that is not "causal (or bidirectional) within one key range per
  batch row": sliding windows, chunks, packed sequences, padding with holes.
- in ``AttentionInterface``, :func:`attention_forward`: calls :func:`performer.torch.softmax_attention`
  with that descriptor (GQA natively, bottom-right causal alignment, kv_starts / kv_lengths).

Register both: transformers builds no mask at all for an implementation without a mask function, and
the padding would be lost -- the attention function refuses to run then instead of guessing.
"""

import torch as _torch

from . import _autocast
from ._apply import unwrap
from ._direct import route
from ._tensors import DTYPE_CODES, key_lists
from .softmax import apply_softmax, model_layout_forward, softmax_attention

__all__ = ["KeyRanges", "attention_forward", "attention_mask", "register_transformers_attention"]


class KeyRanges:
    """What a mask means to libperformer, for all layers of one forward pass.

    ``keys``: the attention reads keys [0, keys) of the key tensor (with a static cache the slots after
    the last written one are unused; causally, no query sees past it). ``causal``: query i sees key j iff
    j <= i + keys - N (bottom-right aligned). ``kv_starts`` / ``kv_lengths``: B ints, or None when no row
    is padded on that side: row b sees keys [kv_starts[b], kv_lengths[b]) only (left / right padding).

    ``shape`` is that of the dense mask it stands for, (B, 1, N, kv_length), and ``ndim`` 4: models and
    ``generate()`` (which builds the masks ahead for a static cache and hands them to the model) look at
    those, and :func:`attention_mask` passes a KeyRanges it is given back unchanged.
    """

    __slots__ = ("keys", "causal", "kv_starts", "kv_lengths", "shape")

    def __init__(self, keys, causal, kv_starts=None, kv_lengths=None, shape=None):
        self.keys, self.causal, self.kv_starts, self.kv_lengths = keys, causal, kv_starts, kv_lengths
        self.shape = shape

    @property
    def ndim(self):
        return 4

    def __repr__(self):
        return "KeyRanges(keys=%d, causal=%s, kv_starts=%s, kv_lengths=%s, shape=%s)" % (
            self.keys, self.causal, self.kv_starts, self.kv_lengths, self.shape)


def _mask_kind(mask_function, traced, kwargs):
    """(causal, composed): True for transformers' causal mask function, False for its bidirectional
    one (composed None). Any other function: while tracing, the kind transformers' call site implies
    (only its bidirectional ones pass allow_is_bidirectional_skip) and the function itself, whose
    pattern the graph then checks (_check_traced_pattern); in eager calls, ValueError."""
    from transformers import masking_utils

    if mask_function is masking_utils.causal_mask_function:
        return True, None
    if mask_function is masking_utils.bidirectional_mask_function:
        return False, None
    if traced:
        return "allow_is_bidirectional_skip" not in kwargs, mask_function
    name = getattr(mask_function, "__qualname__", None) or type(mask_function).__name__
    raise ValueError(
        "mask_function=%s: performer attention expresses only a causal or bidirectional mask within one "
        "contiguous key range per batch row; this mask (a sliding window, chunks, packed sequences, an "
        "or/and overlay, ...) cannot be computed exactly with it -- use attn_implementation=\"sdpa\" for "
        "this model" % name)


def _check_traced_pattern(mask_function, causal, batch_size, q_length, keys, q_offset, kv_offset):
    """Under torch.compile / torch.export: an assertion in the graph that ``mask_function`` (a composed
    function transformers builds only while tracing, e.g. its packed-sequence check, which it skips in
    eager calls when each row holds one sequence) allows exactly the causal (or full) pattern over the
    keys read. Evaluated as transformers' sdpa_mask does while tracing: B x 1 x N x keys booleans, once
    per forward. A mask it does not match raises RuntimeError when the compiled code runs. (No double
    quotes in the message: Inductor writes it into C++ source unescaped.)"""
    b = _torch.arange(batch_size).view(-1, 1, 1, 1)
    h = _torch.arange(1).view(1, -1, 1, 1)
    q = _torch.arange(q_length).view(1, 1, -1, 1) + q_offset
    kv = _torch.arange(keys).view(1, 1, 1, -1) + kv_offset
    allowed = mask_function(b, h, q, kv)
    expected = kv <= q if causal else _torch.ones((), dtype=_torch.bool)
    _torch._assert_async((allowed == expected).all(),
                         "attention_mask: the traced mask_function is not %s within one key range per batch row "
                         "(packed sequences, a sliding window, an overlay?); performer attention cannot compute "
                         "it exactly -- use attn_implementation='sdpa' for this model"
                         % ("causal" if causal else "full"))


def _row_ranges(allowed, what, traced=False):
    """Per row of the B x W boolean ``allowed``: (first, end) of its True entries as int64 tensors, after
    checking they are contiguous (ValueError naming ``what`` and the row otherwise; traced: an
    assertion in the graph, RuntimeError when it runs). Empty rows: (0, 0)."""
    width = allowed.shape[-1]
    index = _torch.arange(width)
    count = allowed.sum(-1)
    first = _torch.where(allowed, index, width).amin(-1)
    last = _torch.where(allowed, index, -1).amax(-1)
    holes = (count > 0) & (last - first + 1 != count)
    if traced:
        _torch._assert_async(~holes.any(), "%s: a row attends to keys with a hole in its range; performer "
                                           "attention needs one contiguous key range per batch row (left or "
                                           "right padding only)" % what)
    elif bool(holes.any()):
        row = int(holes.nonzero()[0, 0])
        raise ValueError(
            "%s: row %d attends to %d keys spread over [%d, %d] (a hole in the row); performer attention "
            "needs one contiguous key range per batch row (left or right padding only)"
            % (what, row, int(count[row]), int(first[row]), int(last[row])))
    empty = count == 0
    return first.masked_fill(empty, 0), (last + 1).masked_fill(empty, 0)


def _compact(starts, ends, keys):
    """kv_starts / kv_lengths as the attention takes them: None when no row needs them."""
    return (None if bool((starts == 0).all()) else starts,
            None if bool((ends == keys).all()) else ends)


def attention_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                   attention_mask=None, **kwargs):
    """The ``AttentionMaskInterface`` function: a :class:`KeyRanges` for the mask transformers asks for.

    Called by ``masking_utils.create_causal_mask`` (and ``create_bidirectional_mask``) with the query
    length and offset, the key length and offset (from the cache) and the 2D padding mask (B x S, True =
    a real token; positions past S are padding). Cost: O(B * S), no N x L tensor.
    """
    traced = _torch.compiler.is_compiling()
    causal, composed = (True, None) if mask_function is None else _mask_kind(mask_function, traced, kwargs)
    shape = (batch_size, 1, q_length, kv_length)
    if isinstance(attention_mask, KeyRanges):
        # Made by this function ahead of the forward (generate() with a static cache).
        if attention_mask.shape != shape or attention_mask.causal != causal:
            raise ValueError("attention_mask is %r, made for another call (this one: shape %s, causal=%s)"
                             % (attention_mask, shape, causal))
        return attention_mask
    q_offset, kv_offset = int(q_offset), int(kv_offset)
    keys = kv_length
    if causal:
        # Keys the last query sees; the causal diagonal is bottom-right aligned on them.
        keys = q_offset + q_length - kv_offset
        if not 0 < keys <= kv_length:
            raise ValueError(
                "causal mask with q_offset=%d, q_length=%d, kv_offset=%d, kv_length=%d: the last query would "
                "see %d of %d keys; performer attention cannot align that" % (
                    q_offset, q_length, kv_offset, kv_length, keys, kv_length))
    if composed is not None:
        _check_traced_pattern(composed, causal, batch_size, q_length, keys, q_offset, kv_offset)
    starts = ends = None
    if attention_mask is not None:
        if attention_mask.ndim != 2:
            raise ValueError("attention_mask has shape %s; expected the 2D padding mask (batch x keys)"
                             % (tuple(attention_mask.shape),))
        window = attention_mask[:, kv_offset:kv_offset + keys]
        # No padding (every decoding step of an unpadded batch): one reduction, ~10 us instead of ~90.
        # Traced, the ranges stay tensors (no branch on their values).
        if traced or window.shape[-1] < keys or not bool(window.all()):
            padding = window.to(device="cpu", dtype=_torch.bool)
            if padding.shape[-1] < keys:  # transformers pads a short 2D mask with False
                padding = _torch.nn.functional.pad(padding, (0, keys - padding.shape[-1]))
            starts, ends = _row_ranges(padding, "attention_mask (padding)", traced)
            if not traced:
                starts, ends = _compact(starts, ends, keys)
    return KeyRanges(keys, causal, starts, ends, shape)


def _ranges_from_tensor(mask, batch, n, length):
    """A KeyRanges equal to a 4D boolean or additive mask (B or 1) x (1 or H) x N x >=L, or ValueError.

    For masks transformers did not build with :func:`attention_mask` (a user's 4D mask): each batch row
    must be causal or full within one key range, the same for every head. Costs O(N * L) per layer."""
    if mask.ndim != 4:
        raise ValueError("attention_mask has shape %s; expected 4D (batch, heads, queries, keys)"
                         % (tuple(mask.shape),))
    mask = mask[..., :length]
    if mask.dtype == _torch.bool:
        allowed = mask
    else:
        blocked = mask <= _torch.finfo(mask.dtype).min / 2
        if not bool(((mask == 0) | blocked).all()):
            raise ValueError("attention_mask is an additive mask with values other than 0 and -inf (a bias); "
                             "performer attention can only mask keys, not add a bias to scores")
        allowed = ~blocked
    allowed = allowed.expand(batch, -1, n, length).cpu()
    if not bool((allowed == allowed[:, :1]).all()):
        raise ValueError("attention_mask differs between heads; performer attention masks all heads alike")
    allowed = allowed[:, 0]
    # The last query row sees the whole key range; the mask must then be that range, causal or not.
    starts, ends = _row_ranges(allowed[:, -1], "attention_mask (last query row)")
    j = _torch.arange(length)
    in_range = (j >= starts[:, None, None]) & (j < ends[:, None, None])
    causal_part = j[None, :] <= _torch.arange(n)[:, None] + (length - n)
    for causal, expected in ((True, in_range & causal_part), (False, in_range.expand(-1, n, -1))):
        if bool((allowed == expected).all()):
            return KeyRanges(length, causal, *_compact(starts, ends, length), shape=(batch, 1, n, length))
    raise ValueError("attention_mask is neither causal nor full within one key range per batch row (holes, "
                     "or a diagonal that is not bottom-right aligned); performer attention cannot express it")


def attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                      **kwargs):
    """The ``AttentionInterface`` function: ``softmax_attention`` on transformers' B x H x N x D query and
    B x Hk x L x D key/value (GQA: Hk divides H), returning (B x N x H x M output, None).

    ``attention_mask``: a :class:`KeyRanges` (from :func:`attention_mask`), a 4D boolean/additive tensor
    (checked to be expressible), or None (no mask was built: causal per ``is_causal`` /
    ``module.is_causal``, only where that is unambiguous). Attention dropout is not supported: ValueError
    if ``dropout`` > 0 (transformers passes the config's dropout in training mode only).
    """
    if dropout:
        raise ValueError("dropout=%s: performer attention has no attention dropout; set the config's attention "
                         "dropout (attention_dropout, attn_pdrop, ...) to 0 to train with it" % dropout)
    for name in ("softcap", "sliding_window", "position_bias", "s_aux"):
        if kwargs.get(name) is not None:
            raise ValueError("%s=%r: performer attention supports none" % (name, kwargs[name]))
    n, length = query.shape[2], key.shape[2]
    if attention_mask is None:
        config = getattr(module, "config", None)
        implementation = getattr(config, "_attn_implementation", None)
        if implementation is not None:
            from transformers import AttentionMaskInterface
            if implementation not in AttentionMaskInterface._global_mapping:
                raise ValueError(
                    "attn_implementation=%r has no mask function in transformers' AttentionMaskInterface, so "
                    "the model built no mask and padding would be ignored: register both with "
                    "performer.torch.register_transformers_attention(%r)" % (implementation, implementation))
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        causal = bool(causal) and n > 1
        if causal and n != length:
            raise ValueError("attention_mask is None with %d queries and %d keys: the causal alignment is "
                             "ambiguous; pass a mask" % (n, length))
        ranges = KeyRanges(length, causal, shape=(query.shape[0], 1, n, length))
    elif isinstance(attention_mask, KeyRanges):
        ranges = attention_mask
        if ranges.keys > length:
            raise ValueError("attention_mask covers %d keys but the key tensor has %d" % (ranges.keys, length))
    elif isinstance(attention_mask, _torch.Tensor):
        ranges = _ranges_from_tensor(attention_mask, query.shape[0], n, length)
    else:
        raise TypeError("attention_mask is a %s; expected None, a tensor or performer's KeyRanges (register the "
                        "mask function with register_transformers_attention)" % type(attention_mask).__name__)
    keys = ranges.keys
    if keys != length:  # a static cache's unused slots (slicing costs ~2 us per tensor otherwise)
        key, value = key[:, :, :keys], value[:, :, :keys]
    return _layer_attention(query, key, value, ranges.causal, scaling, ranges.kv_lengths, ranges.kv_starts), None


def _layer_attention(q, k, v, causal, scale, kv_lengths, kv_starts):
    """B x N x H x M attention output of B x H x N x D q and B x Hk x L x D k, v: softmax.py's
    autograd Function (without gradients, its kernel) in its model layout (out written through
    strides into the B x N x H x M tensor, no transposed copy) in plain eager calls; under
    torch.compile / torch.func / autocast or for other tensors (anything softmax_attention handles
    specially, with its messages), softmax_attention and a copy."""
    grad = route(q, k, v)
    if (grad is not None and not _autocast.requested() and q.dim() == 4 and v.dim() == 4
            and q.dtype in DTYPE_CODES and q.is_cpu):
        scale = None if scale is None else float(scale)
        kv_lengths, kv_starts = key_lists(kv_lengths, kv_starts)
        if grad:
            return apply_softmax(unwrap(q), unwrap(k), unwrap(v), bool(causal), scale, kv_lengths, kv_starts,
                                 True)[0]
        # No gradient (generate(), evaluation): the kernel alone, ~5 us less per layer and token.
        return model_layout_forward(q, k, v, bool(causal), scale, kv_lengths, kv_starts, False)[0]
    out = softmax_attention(q, k, v, causal=causal, scale=scale, kv_lengths=kv_lengths, kv_starts=kv_starts)
    return out.transpose(1, 2).contiguous()


def register_transformers_attention(name="performer"):
    """Registers :func:`attention_forward` in transformers' ``AttentionInterface`` and :func:`attention_mask`
    in its ``AttentionMaskInterface`` under ``name`` (globally), so that
    ``AutoModelForCausalLM.from_config(config, attn_implementation=name)`` (or ``from_pretrained``, or
    ``model.set_attn_implementation(name)``) runs its attention with libperformer. Returns ``name``."""
    if not isinstance(name, str) or not name:
        raise TypeError("name must be a non-empty str, not %r" % (name,))
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(name, attention_forward)
    AttentionMaskInterface.register(name, attention_mask)
    return name
