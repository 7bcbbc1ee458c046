"""FAVOR+ (Performer) attention on tensors (ALGORITHMS.md section 3): performer::favor and
performer::favor_state. The projection is a performer.FavorProjection or its m x D matrix W as a
tensor (what FavorAttention keeps as a buffer)."""

import torch
from torch.autograd.function import once_differentiable

import performer as _performer
from performer import _common
from performer import _performer as _ext
from performer import favor as _favor

from . import _autocast, _ops
from ._apply import c_apply, unwrap, unwrap_each
from ._direct import route
from ._functorch import functorch_active
from ._outputs import new_output
from ._tensors import check, key_lists, key_tensors
from .linear import _STATE_NAMES, heads_arg, state_arg, state_grads
from .softmax import scale_arg

__all__ = ["favor_attention", "favor_state"]


def projection_args(projection):
    """(W tensor or None, FavorProjection for the direct path) of a projection argument."""
    if isinstance(projection, torch.Tensor):
        return projection, None
    if isinstance(projection, _performer.FavorProjection):
        return None, projection
    raise TypeError("projection must be a performer.FavorProjection or an m x D tensor W, not %s"
                    % type(projection).__name__)


def matrix_of(projection):
    """W of a FavorProjection as a float64 tensor, made once per draw (kept on the projection)."""
    draw = projection.draw
    cached = projection.__dict__.get("_torch_matrix")
    if cached is None or cached[0] != draw:
        cached = (draw, torch.from_numpy(projection.matrix))
        projection.__dict__["_torch_matrix"] = cached
    return cached[1]


def _favor_options(features, scale, eps, relu_offset):
    code = _common._choice("features", features, _favor._FAVOR_FEATURES)
    return code, scale_arg(scale), _common._real("eps", eps), _common._real("relu_offset", relu_offset)


class _FavorFunction(torch.autograd.Function):
    """performer::favor's autograd (the same kernels and formula) for eager calls (see softmax.py's
    _SoftmaxFunction): returns (out, S~, z~, c), the state None without return_state. W is an input
    (saved, so that an in-place change before the backward is caught as for the op) and projection
    the FavorProjection holding it, made once for both passes. kv_lengths / kv_starts: None or lists."""

    @staticmethod
    def forward(ctx, q, k, v, W, S0, z0, c0, projection, causal, features, scale, eps, relu_offset, kv_lengths,
                kv_starts, return_state):
        out, S, z, c = _ops.favor_forward(q, k, v, projection, S0, z0, c0, causal, features, scale, eps, relu_offset,
                                          kv_lengths, kv_starts, return_state)
        ctx.save_for_backward(q, k, v, W, S0, z0, c0)
        ctx.projection = projection
        ctx.options = (causal, features, scale, eps, relu_offset, kv_lengths, kv_starts, return_state)
        if c is not None:
            ctx.mark_non_differentiable(c)
        return out, S, z, c

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dS, dz, _dc):
        q, k, v, _, S0, z0, c0 = ctx.saved_tensors
        causal, features, scale, eps, relu_offset, kv_lengths, kv_starts, return_state = ctx.options
        if not return_state:
            dS = dz = None
        dq, dk, dv = new_output(q, q.shape), new_output(q, k.shape), new_output(q, v.shape)
        dS0, dz0 = (None, None) if S0 is None else state_grads(q, S0)
        _ext.favor_backward(q, k, v, dout, ctx.projection, dq, dk, dv, S0, z0, c0, dS, dz, dS0, dz0, causal,
                            features, scale, eps, relu_offset, kv_lengths, kv_starts)
        return (dq, dk, dv, None, dS0, dz0) + (None,) * 10


apply_favor = c_apply(_FavorFunction)


class _FavorStateFunction(torch.autograd.Function):
    """performer::favor_state's autograd (the same kernels and formula) for eager calls, as
    _FavorFunction for favor_attention: returns (S~, z~, c), c not differentiable. W is saved (an
    in-place change before the backward is caught, as for the op), projection holds it."""

    @staticmethod
    def forward(ctx, k, v, W, S0, z0, c0, projection, heads, features, scale, relu_offset, kv_lengths, kv_starts):
        S, z, c = _ops.favor_state_forward(k, v, projection, S0, z0, c0, heads, features, scale, relu_offset,
                                           kv_lengths, kv_starts)
        ctx.save_for_backward(k, v, W, S0, z0, c0)
        ctx.projection = projection
        ctx.options = (features, scale, relu_offset, kv_lengths, kv_starts)
        ctx.mark_non_differentiable(c)
        return S, z, c

    @staticmethod
    @once_differentiable
    def backward(ctx, dS, dz, _dc):
        k, v, _, S0, z0, c0 = ctx.saved_tensors
        features, scale, relu_offset, kv_lengths, kv_starts = ctx.options
        dk, dv, dS0, dz0 = _ops.favor_state_backward_kernel(k, v, ctx.projection, dS, dz, S0, z0, c0, features,
                                                            scale, relu_offset, kv_lengths, kv_starts)
        if S0 is None:
            dS0 = dz0 = None
        return (dk, dv, None, dS0, dz0) + (None,) * 8


apply_favor_state = c_apply(_FavorStateFunction)


def favor_attention(q, k, v, projection, *, causal=False, features="positive", scale=None, eps=0.0, kv_lengths=None,
                    relu_offset=1e-3, kv_starts=None, initial_state=None, return_state=False):
    """FAVOR+ attention of CPU tensors, differentiable with respect to q, k, v and the initial
    state's S~ and z~ (its c is held fixed and gets no gradient; W gets none).

    q: B x H x N x D (D = the projection's dim), k: B x Hk x L x D, v: B x Hk x L x M (Hk divides
    H), float32 or float64, any strides; returns B x H x N x M. projection: a
    performer.FavorProjection or W, an m x D float tensor (not copied per call). The options are
    those of :func:`performer.favor_attention` (causal needs N == L; kv_lengths and kv_starts may
    be integer tensors). initial_state=(S~, z~, c) and return_state: the scaled state, S~
    B x H x C x M, z~ and c B x H x C (a non-causal call attends to it as a memory besides its own
    keys, e.g. from favor_state); returns ``(out, (S~, z~, c))`` with return_state.
    The op is ``torch.ops.performer.favor`` (it takes W; pass a tensor under torch.compile).
    """
    causal, return_state = bool(causal), bool(return_state)
    code, scale, eps, relu_offset = _favor_options(features, scale, eps, relu_offset)
    state = state_arg("initial_state", initial_state, _common._TRIPLE)
    W, held = projection_args(projection)
    kv_lengths, kv_starts = key_tensors(kv_lengths, kv_starts)
    if _autocast.requested():
        q, k, v, *state = _autocast.widen((q, k, v) + state)
        state, W = tuple(state), W if W is None else _autocast.widen((W,))[0]
    grad = route(q, k, v, *state, W)
    if grad is not None:
        kv_lengths, kv_starts = key_lists(kv_lengths, kv_starts)
        if grad:
            # As the op: W of the projection's current draw, saved with the inputs.
            W = matrix_of(held) if W is None else W
            S0, z0, c0 = unwrap_each(state)
            out, S, z, c = apply_favor(unwrap(q), unwrap(k), unwrap(v), W, S0, z0, c0, _ops.projection_of(W), causal,
                                       code, scale, eps, relu_offset, kv_lengths, kv_starts, return_state)
        else:
            out, S, z, c = _ops.favor_forward(q, k, v, W if held is None else held, *state, causal, code, scale, eps,
                                              relu_offset, kv_lengths, kv_starts, return_state)
    else:
        W = matrix_of(held) if W is None else W
        check(("q", "k", "v") + _STATE_NAMES + ("W",), (q, k, v) + state + (W,))
        op = _ops.FAVOR.apply if functorch_active() else _ops.ops.favor
        out, S, z, c = op(q, k, v, W, *state, causal, code, scale, eps, relu_offset, kv_lengths, kv_starts,
                          return_state)
    return (out, (S, z, c)) if return_state else out


def favor_state(k, v, projection, *, features="positive", scale=None, kv_lengths=None, kv_starts=None,
                initial_state=None, heads=None, relu_offset=1e-3):
    """The scaled FAVOR+ state (S~, z~, c) of keys and values without queries (see
    :func:`performer.favor_state`), differentiable with respect to k, v and the initial
    state's S~, z~ (c held fixed). projection: FavorProjection or W tensor. The op is
    ``torch.ops.performer.favor_state``."""
    code, scale, _, relu_offset = _favor_options(features, scale, 0.0, relu_offset)
    state = state_arg("initial_state", initial_state, _common._TRIPLE)
    hs = heads_arg(heads, state, k)
    W, held = projection_args(projection)
    kv_lengths, kv_starts = key_tensors(kv_lengths, kv_starts)
    if _autocast.requested():
        k, v, *state = _autocast.widen((k, v) + state)
        state, W = tuple(state), W if W is None else _autocast.widen((W,))[0]
    grad = route(k, v, *state, W)
    if grad is not None:
        kv_lengths, kv_starts = key_lists(kv_lengths, kv_starts)
        if grad:
            # As the op: W of the projection's current draw, saved with the inputs.
            W = matrix_of(held) if W is None else W
            S0, z0, c0 = unwrap_each(state)
            return apply_favor_state(unwrap(k), unwrap(v), W, S0, z0, c0, _ops.projection_of(W), hs, code, scale,
                                     relu_offset, kv_lengths, kv_starts)
        return _ops.favor_state_forward(k, v, W if held is None else held, *state, hs, code, scale, relu_offset,
                                        kv_lengths, kv_starts)
    W = matrix_of(held) if W is None else W
    check(("k", "v") + _STATE_NAMES + ("W",), (k, v) + state + (W,))
    op = _ops.FAVOR_STATE.apply if functorch_active() else _ops.ops.favor_state
    return op(k, v, W, *state, hs, code, scale, relu_offset, kv_lengths, kv_starts)
