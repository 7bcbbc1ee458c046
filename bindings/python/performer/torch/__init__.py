"""performer.torch: libperformer's attention kernels as PyTorch autograd Functions and Modules.

Needs PyTorch (an optional dependency of the ``performer`` package); importing this module
without it raises ImportError.

Tensors must be on the CPU, with dtype float32 or float64 and any strides: the kernels read
them in place through NumPy views (``tensor.detach().numpy()`` shares the tensor's memory), and
the results are NumPy arrays wrapped as tensors with ``torch.from_numpy`` -- no copies either way.

Shapes are the ``performer`` package's, which are also those of
``torch.nn.functional.scaled_dot_product_attention``::

    q    B x H  x N x D      (N query positions)
    k    B x Hk x L x D      (L key positions; Hk divides H: grouped-query attention,
    v    B x Hk x L x M       query head h reads key/value head h // (H // Hk))
    out  B x H  x N x M

Causal masking is bottom-right aligned: query i sees key j iff j <= i + (L - N). PyTorch's
``scaled_dot_product_attention(is_causal=True)`` is top-left aligned (j <= i); the two agree
only when N == L.

Errors in the arguments raise the same TypeError/ValueError (and messages) as the
``performer`` functions; a tensor that is not on the CPU, not strided, or of a dtype NumPy
cannot hold raises TypeError naming the argument.
"""

try:
    import torch as _torch
except ImportError as _error:
    raise ImportError(
        "performer.torch needs PyTorch, which is not installed (%s). Install it (for example "
        "`pip install torch`), or use the NumPy functions in `performer` directly." % _error
    ) from _error

from torch.autograd.function import once_differentiable as _once_differentiable

import performer as _performer

__all__ = [
    "SoftmaxAttentionFunction",
    "softmax_attention",
    "SoftmaxAttention",
    "FavorAttentionFunction",
    "favor_attention",
    "FavorAttention",
    "register_transformers_attention",
    "use_torch_threads",
    "torch_threads_in_use",
]


# ---------------------------------------------------------------------------------------------
# Tensor <-> NumPy, without copies. Shared by every Function of this module.
# ---------------------------------------------------------------------------------------------

def _to_numpy(name, tensor):
    """A NumPy view of a CPU tensor's memory (same strides; no copy), detached from autograd.

    Raises TypeError naming the argument for anything the kernels cannot read in place;
    dtype and shape are left to the ``performer`` functions, so their errors are the same."""
    if not isinstance(tensor, _torch.Tensor):
        raise TypeError("%s must be a torch.Tensor, not %s" % (name, type(tensor).__name__))
    if tensor.layout != _torch.strided:
        raise TypeError("%s has layout %s; performer.torch needs a dense (strided) tensor"
                        % (name, tensor.layout))
    if tensor.device.type != "cpu":
        raise TypeError("%s is on device %s; performer.torch computes on the CPU: move the "
                        "tensors there first (tensor.cpu())" % (name, tensor.device))
    tensor = tensor.detach()
    if tensor.is_neg():
        # A lazily negated view (torch._neg_view) has no memory holding its values.
        tensor = tensor.resolve_neg()
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError) as error:
        raise TypeError("%s has dtype %s; expected torch.float32 or torch.float64"
                        % (name, tensor.dtype)) from error


def _to_tensor(array):
    """Wraps a NumPy result (owned by nobody else) as a tensor sharing its memory."""
    return _torch.from_numpy(array)


def _kv_lengths(kv_lengths):
    """kv_lengths (or kv_starts) as something performer accepts: a tensor becomes a NumPy int array (B ints,
    copied from any device -- it is tiny); anything else is passed on to be checked there."""
    if isinstance(kv_lengths, _torch.Tensor):
        return kv_lengths.detach().cpu().numpy()
    return kv_lengths


def _needs_grad(*tensors):
    return _torch.is_grad_enabled() and any(
        isinstance(t, _torch.Tensor) and t.requires_grad for t in tensors)


def _input_grads(ctx, grads):
    """The tensors of ``grads`` for the inputs whose gradients autograd asked for, else None."""
    return tuple(_to_tensor(g) if g is not None and ctx.needs_input_grad[i] else None
                 for i, g in enumerate(grads))


# ---------------------------------------------------------------------------------------------
# Exact softmax attention (ALGORITHMS.md section 1)
# ---------------------------------------------------------------------------------------------

class SoftmaxAttentionFunction(_torch.autograd.Function):
    """``out = softmax(scale * q @ k^T + mask) @ v`` with libperformer's kernels.

    ``SoftmaxAttentionFunction.apply(q, k, v, causal=False, scale=None, kv_lengths=None,
    kv_starts=None)``;
    the arguments are those of :func:`performer.softmax_attention`, with q, k, v CPU tensors.
    The forward keeps q, k, v, out and the row log-sum-exp (B x H x N) for the backward, which
    recomputes the attention probabilities from them (no N x L matrix is stored). Gradients
    flow to q, k and v; causal, scale, kv_lengths and kv_starts get none. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, q, k, v, causal=False, scale=None, kv_lengths=None, kv_starts=None):
        lengths, starts = _kv_lengths(kv_lengths), _kv_lengths(kv_starts)
        out, lse = _performer.softmax_attention(
            _to_numpy("q", q), _to_numpy("k", k), _to_numpy("v", v),
            causal=causal, scale=scale, kv_lengths=lengths, kv_starts=starts, return_lse=True)
        out = _to_tensor(out)
        ctx.save_for_backward(q, k, v, out, _to_tensor(lse))
        ctx.options = dict(causal=causal, scale=scale, kv_lengths=lengths, kv_starts=starts)
        return out

    @staticmethod
    @_once_differentiable
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        grads = _performer.softmax_attention_backward(
            _to_numpy("q", q), _to_numpy("k", k), _to_numpy("v", v), _to_numpy("out", out),
            _to_numpy("lse", lse), _to_numpy("dout", dout), **ctx.options)
        return _input_grads(ctx, grads) + (None, None, None, None)


def softmax_attention(q, k, v, *, causal=False, scale=None, kv_lengths=None, kv_starts=None):
    """Exact softmax attention of CPU tensors, differentiable with respect to q, k and v.

    q: B x H x N x D, k: B x Hk x L x D, v: B x Hk x L x M (Hk divides H), float32 or
    float64, any strides; returns out: B x H x N x M of the same dtype.

    causal: bottom-right aligned (query i sees key j iff j <= i + L - N; PyTorch's
    ``is_causal`` is top-left aligned and agrees only when N == L). scale: None means
    1 / sqrt(D). kv_lengths: B ints (a sequence or an integer tensor); keys
    j >= kv_lengths[b] are masked. kv_starts: B ints, the same forms; keys j < kv_starts[b] are
    masked too (left padding, as Hugging Face ``generate()`` pads). A query row with no
    visible key is zero, with zero gradients.

    When no input requires a gradient (or under ``torch.no_grad()``), the forward alone runs,
    without keeping the log-sum-exp.
    """
    if _needs_grad(q, k, v):
        return SoftmaxAttentionFunction.apply(q, k, v, causal, scale, kv_lengths, kv_starts)
    out = _performer.softmax_attention(
        _to_numpy("q", q), _to_numpy("k", k), _to_numpy("v", v),
        causal=causal, scale=scale, kv_lengths=_kv_lengths(kv_lengths), kv_starts=_kv_lengths(kv_starts))
    return _to_tensor(out)


class SoftmaxAttention(_torch.nn.Module):
    """Exact softmax attention as a module without parameters: ``forward(q, k, v,
    kv_lengths=None, kv_starts=None)`` is :func:`softmax_attention` with this module's ``causal`` and
    ``scale`` (see there for shapes, masking and the causal alignment)."""

    def __init__(self, causal=False, scale=None):
        super().__init__()
        self.causal = bool(causal)
        if scale is not None:
            try:
                scale = float(scale)
            except (TypeError, ValueError):
                raise TypeError("scale must be None or a real number, not %s" % type(scale).__name__) from None
        self.scale = scale

    def forward(self, q, k, v, kv_lengths=None, kv_starts=None):
        return softmax_attention(q, k, v, causal=self.causal, scale=self.scale, kv_lengths=kv_lengths,
                                 kv_starts=kv_starts)

    def extra_repr(self):
        return "causal=%s, scale=%s" % (self.causal, self.scale)


# ---------------------------------------------------------------------------------------------
# FAVOR+ (Performer) attention (ALGORITHMS.md section 3)
# ---------------------------------------------------------------------------------------------

class FavorAttentionFunction(_torch.autograd.Function):
    """FAVOR+ attention with libperformer's kernels:
    ``FavorAttentionFunction.apply(q, k, v, projection, causal=False, features="positive",
    scale=None, eps=0.0, kv_lengths=None, relu_offset=1e-3, kv_starts=None)``, the arguments of
    :func:`performer.favor_attention` (without a carried state) with q, k, v CPU tensors.
    The forward keeps only q, k and v: the backward recomputes the rest in O(N) memory.
    Gradients flow to q, k and v (through the features and the denominator); the projection W
    and the options get none. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, q, k, v, projection, causal=False, features="positive", scale=None, eps=0.0, kv_lengths=None,
                relu_offset=1e-3, kv_starts=None):
        options = dict(causal=causal, features=features, scale=scale, eps=eps, kv_lengths=_kv_lengths(kv_lengths),
                       relu_offset=relu_offset, kv_starts=_kv_lengths(kv_starts))
        # A copy of W now: a redraw between forward and backward must not change the W the
        # gradient is taken with.
        pinned = _performer.FavorProjection.from_matrix(projection.matrix)
        out = _performer.favor_attention(_to_numpy("q", q), _to_numpy("k", k), _to_numpy("v", v), pinned, **options)
        ctx.save_for_backward(q, k, v)
        ctx.projection = pinned
        ctx.options = options
        return _to_tensor(out)

    @staticmethod
    @_once_differentiable
    def backward(ctx, dout):
        q, k, v = ctx.saved_tensors
        grads = _performer.favor_attention_backward(
            _to_numpy("q", q), _to_numpy("k", k), _to_numpy("v", v), _to_numpy("dout", dout), ctx.projection,
            **ctx.options)
        return _input_grads(ctx, grads) + (None,) * 8


def favor_attention(q, k, v, projection, *, causal=False, features="positive", scale=None, eps=0.0, kv_lengths=None,
                    relu_offset=1e-3, kv_starts=None):
    """FAVOR+ attention of CPU tensors, differentiable with respect to q, k and v.

    q: B x H x N x D (D = projection.dim), k: B x Hk x L x D, v: B x Hk x L x M (Hk divides
    H), float32 or float64, any strides; returns B x H x N x M. The options are those of
    :func:`performer.favor_attention` (causal needs N == L; kv_lengths and kv_starts may be
    integer tensors). When no input requires a gradient the forward alone runs.
    """
    if _needs_grad(q, k, v):
        return FavorAttentionFunction.apply(q, k, v, projection, causal, features, scale, eps, kv_lengths,
                                            relu_offset, kv_starts)
    out = _performer.favor_attention(
        _to_numpy("q", q), _to_numpy("k", k), _to_numpy("v", v), projection, causal=causal, features=features,
        scale=scale, eps=eps, kv_lengths=_kv_lengths(kv_lengths), relu_offset=relu_offset,
        kv_starts=_kv_lengths(kv_starts))
    return _to_tensor(out)


class FavorAttention(_torch.nn.Module):
    """FAVOR+ attention as a module without trainable parameters. It owns a
    :class:`performer.FavorProjection` (``dim`` x ``num_features``: orthogonal rows with chi
    norms unless ``kind``/``norms`` say otherwise, drawn from ``seed``); :meth:`redraw` draws
    the next W (the paper's periodic feature redrawing -- call it, e.g., every few hundred
    training steps; it never happens on its own). ``forward(q, k, v, kv_lengths=None,
    kv_starts=None)`` is
    :func:`favor_attention` with this module's options.
    """

    def __init__(self, dim, num_features=256, *, causal=False, features="positive", scale=None, eps=0.0,
                 relu_offset=1e-3, kind="orthogonal", norms="chi", seed=0):
        super().__init__()
        self.projection = _performer.FavorProjection(dim, num_features, kind=kind, norms=norms, seed=seed)
        self.causal = bool(causal)
        _performer._choice("features", features, _performer._FAVOR_FEATURES)
        self.features = features
        self.scale = None if scale is None else _performer._real("scale", scale)
        self.eps = _performer._real("eps", eps)
        self.relu_offset = _performer._real("relu_offset", relu_offset)

    def redraw(self):
        """Replaces W by the projection's next draw."""
        self.projection.redraw()

    def forward(self, q, k, v, kv_lengths=None, kv_starts=None):
        return favor_attention(q, k, v, self.projection, causal=self.causal, features=self.features, scale=self.scale,
                               eps=self.eps, kv_lengths=kv_lengths, relu_offset=self.relu_offset, kv_starts=kv_starts)

    def extra_repr(self):
        return "dim=%d, num_features=%d, causal=%s, features=%r, scale=%s, eps=%s, seed=%s, draw=%d" % (
            self.projection.dim, self.projection.num_features, self.causal, self.features, self.scale, self.eps,
            self.projection.seed, self.projection.draw)


# Hugging Face transformers glue (transformers is imported only when registering).
from .transformers import register_transformers_attention  # noqa: E402

# libperformer's parallel work on PyTorch's intra-op (OpenMP) threads; see _threads.py.
from ._threads import torch_threads_in_use, use_torch_threads  # noqa: E402
from ._threads import _install_default as _install_default_threads  # noqa: E402

_install_default_threads()
