"""Exact softmax attention on tensors (ALGORITHMS.md section 1): performer::softmax."""

import torch
from torch.autograd.function import once_differentiable

from . import _autocast, _ops
from ._direct import direct, eager
from ._functorch import functorch_active
from ._tensors import check, key_tensor

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
    torch.autograd.Function costs less per call than the op's registered Python formula."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, kv_lengths, kv_starts):
        out, lse = _ops.softmax_forward(q, k, v, causal, scale, kv_lengths, kv_starts, True)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.options = (causal, scale, kv_lengths, kv_starts)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _ops.softmax_backward_kernel(q, k, v, out, lse, dout, *ctx.options)
        return dq, dk, dv, None, None, None, None


# autograd.Function.apply without its Python wrapper, which binds no defaults here (no setup_context)
# and, outside torch.func, unwraps dead functorch wrappers through pytree before calling this C
# method: the eager path (no transform active, checked by eager()) unwraps q, k, v itself.
try:
    _apply_softmax = torch._C._FunctionBase.__dict__["apply"].__get__(None, _SoftmaxFunction)
    _unwrap_if_dead = torch._C._functorch.unwrap_if_dead
except (AttributeError, KeyError, TypeError):  # a PyTorch without these internals: the public apply
    _apply_softmax = _SoftmaxFunction.apply

    def _unwrap_if_dead(tensor):
        return tensor


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
    if kv_lengths is not None or kv_starts is not None:
        kv_lengths, kv_starts = key_tensor("kv_lengths", kv_lengths), key_tensor("kv_starts", kv_starts)
    if _autocast.requested():
        q, k, v = _autocast.lower((q, k, v))
    if direct(q, k, v):
        out, lse = _ops.softmax_forward(q, k, v, causal, scale, kv_lengths, kv_starts, return_lse)
    elif eager(q, k, v):
        out, lse = _apply_softmax(_unwrap_if_dead(q), _unwrap_if_dead(k), _unwrap_if_dead(v), causal, scale,
                                  kv_lengths, kv_starts)
    else:
        check(("q", "k", "v"), (q, k, v))
        if functorch_active():
            out, lse = _ops.SOFTMAX.apply(q, k, v, causal, scale, kv_lengths, kv_starts)
        else:
            out, lse = _ops.ops.softmax(q, k, v, causal, scale, kv_lengths, kv_starts)
    return (out, lse) if return_lse else out
