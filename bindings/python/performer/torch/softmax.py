"""Exact softmax attention on tensors (ALGORITHMS.md section 1): performer::softmax."""

import torch
from torch.autograd.function import once_differentiable

from performer import _performer as _ext

from . import _autocast, _ops
from ._apply import c_apply, unwrap
from ._direct import route
from ._functorch import functorch_active
from ._outputs import new_output, output_like
from ._tensors import check, key_lists, key_tensors

__all__ = ["softmax_attention"]


def scale_arg(scale):
    """None or a real number, as a float."""
    if scale is None:
        return None
    if isinstance(scale, (str, bytes)):
        raise TypeError("scale must be None or a real number, not %s" % type(scale).__name__)
    try:
        return float(scale)
    except (TypeError, ValueError):
        raise TypeError("scale must be None or a real number, not %s" % type(scale).__name__) from None


class _SoftmaxFunction(torch.autograd.Function):
    """performer::softmax's autograd (the same kernels and formula) for eager calls: a
    torch.autograd.Function costs less per call than the op's registered Python formula.

    model_layout=False: q, k, v and out B x H x N x features, as the op; returns (out, lse).
    model_layout=True (transformers.py): out is B x N x H x M, written through strides straight into
    the tensor a model consumes (no transposed copy), the gradients are laid out like q, k, v
    (empty_like, so that the rotary and projection backwards read them without copies), and lse
    is made only when a gradient is needed (else None). kv_lengths / kv_starts: None or lists."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, kv_lengths, kv_starts, model_layout):
        if model_layout:
            out, lse = model_layout_forward(q, k, v, causal, scale, kv_lengths, kv_starts,
                                            any(ctx.needs_input_grad[:3]))
        else:
            out, lse = _ops.softmax_forward(q, k, v, causal, scale, kv_lengths, kv_starts, True)
        if lse is not None:
            ctx.save_for_backward(q, k, v, out, lse)
            ctx.options = (causal, scale, kv_lengths, kv_starts, model_layout)
            ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        causal, scale, kv_lengths, kv_starts, model_layout = ctx.options
        if model_layout:
            dq, dk, dv = output_like(q), output_like(k), output_like(v)
            _ext.softmax_backward(q, k, v, out.transpose(1, 2), lse, dout.transpose(1, 2), dq, dk, dv, causal,
                                  scale, kv_lengths, kv_starts)
        else:
            dq, dk, dv = _ops.softmax_backward_kernel(q, k, v, out, lse, dout, causal, scale, kv_lengths, kv_starts)
        return dq, dk, dv, None, None, None, None, None


apply_softmax = c_apply(_SoftmaxFunction)


def model_layout_forward(q, k, v, causal, scale, kv_lengths, kv_starts, with_lse):
    """(out, lse) of the kernel with out B x N x H x M, the layout a model consumes, written through
    strides (no transposed copy); lse only with_lse, else None. kv_lengths / kv_starts: None or lists."""
    out = new_output(q, (q.shape[0], q.shape[2], q.shape[1], v.shape[3]))
    lse = _ops._wide_empty(q, q.shape[:3]) if with_lse else None
    _ext.softmax_forward(q, k, v, out.transpose(1, 2), lse, causal, scale, kv_lengths, kv_starts)
    return out, lse


def softmax_attention(q, k, v, *, causal=False, scale=None, kv_lengths=None, kv_starts=None, return_lse=False):
    """Exact softmax attention of CPU tensors, differentiable with respect to q, k and v.

    q: B x H x N x D, k: B x Hk x L x D, v: B x Hk x L x M (Hk divides H), float32, float64,
    float16 or bfloat16 (one dtype; half is computed in float32 and rounded once), any strides;
    returns out: B x H x N x M of the same dtype, or ``(out, lse)`` with return_lse (lse:
    B x H x N, float32 for half inputs, the row log-sum-exp of the scaled, masked scores; -inf
    for a row without keys; not differentiable). Under ``torch.autocast("cpu")`` float32 and
    half inputs are cast to the autocast dtype first, as scaled_dot_product_attention does.

    causal: bottom-right aligned (query i sees key j iff j <= i + L - N; PyTorch's
    ``is_causal`` is top-left aligned and agrees only when N == L). scale: None means
    1 / sqrt(D). kv_lengths: B ints (a sequence or an integer tensor); keys
    j >= kv_lengths[b] are masked. kv_starts: B ints, the same forms; keys j < kv_starts[b] are
    masked too (left padding, as Hugging Face ``generate()`` pads). A query row with no
    visible key is zero, with zero gradients.

    The op is ``torch.ops.performer.softmax``; an eager call without gradients skips the
    dispatcher (and, without return_lse, the log-sum-exp).
    """
    causal = bool(causal)
    if scale is not None:
        scale = scale_arg(scale)
    kv_lengths, kv_starts = key_tensors(kv_lengths, kv_starts)
    if _autocast.requested():
        q, k, v = _autocast.lower((q, k, v))
    grad = route(q, k, v)
    if grad is not None:
        kv_lengths, kv_starts = key_lists(kv_lengths, kv_starts)
        if grad:
            out, lse = apply_softmax(unwrap(q), unwrap(k), unwrap(v), causal, scale, kv_lengths, kv_starts, False)
        else:
            out, lse = _ops.softmax_forward(q, k, v, causal, scale, kv_lengths, kv_starts, return_lse)
    else:
        check(("q", "k", "v"), (q, k, v))
        if functorch_active():
            out, lse = _ops.SOFTMAX.apply(q, k, v, causal, scale, kv_lengths, kv_starts)
        else:
            out, lse = _ops.ops.softmax(q, k, v, causal, scale, kv_lengths, kv_starts)
    return (out, lse) if return_lse else out
