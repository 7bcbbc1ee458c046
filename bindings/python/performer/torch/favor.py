"""FAVOR+ (Performer) attention on tensors (ALGORITHMS.md section 3): performer::favor and
performer::favor_state. The projection is a performer.FavorProjection or its m x D matrix W as a
tensor (what FavorAttention keeps as a buffer)."""

import torch

import performer as _performer
from performer import _common
from performer import favor as _favor

from . import _autocast, _ops
from ._direct import direct
from ._functorch import functorch_active
from ._tensors import check, key_tensor
from .linear import _STATE_NAMES, heads_arg, state_arg
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
    if kv_lengths is not None or kv_starts is not None:
        kv_lengths, kv_starts = key_tensor("kv_lengths", kv_lengths), key_tensor("kv_starts", kv_starts)
    if _autocast.requested():
        q, k, v, *state = _autocast.widen((q, k, v) + state)
        state, W = tuple(state), W if W is None else _autocast.widen((W,))[0]
    if direct(q, k, v, *state, W):
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
    if kv_lengths is not None or kv_starts is not None:
        kv_lengths, kv_starts = key_tensor("kv_lengths", kv_lengths), key_tensor("kv_starts", kv_starts)
    if _autocast.requested():
        k, v, *state = _autocast.widen((k, v) + state)
        state, W = tuple(state), W if W is None else _autocast.widen((W,))[0]
    if direct(k, v, *state, W):
        return _ops.favor_state_forward(k, v, W if held is None else held, *state, hs, code, scale, relu_offset,
                                        kv_lengths, kv_starts)
    W = matrix_of(held) if W is None else W
    check(("k", "v") + _STATE_NAMES + ("W",), (k, v) + state + (W,))
    op = _ops.FAVOR_STATE.apply if functorch_active() else _ops.ops.favor_state
    return op(k, v, W, *state, hs, code, scale, relu_offset, kv_lengths, kv_starts)
