"""Linear attention ("Transformers are RNNs", ALGORITHMS.md section 2) on tensors: performer::linear
and performer::linear_state."""

import torch
from torch.autograd.function import once_differentiable

from performer import _common
from performer import _performer as _ext
from performer import linear as _linear

from . import _autocast, _ops
from ._apply import c_apply, unwrap, unwrap_each
from ._direct import route
from ._functorch import functorch_active
from ._outputs import new_output
from ._tensors import check, key_lists, key_tensors

__all__ = ["linear_attention", "linear_state"]

_STATE_NAMES = ("initial_state[0] (S)", "initial_state[1] (z)", "initial_state[2] (c)")


def state_arg(name, value, labels):
    """A state argument (None, or a tuple/list of len(labels) tensors) as a tuple, else TypeError."""
    if value is None:
        return (None,) * len(labels)
    _common._check_state_arity(name, value, labels)
    return tuple(value)


def heads_arg(heads, initial_state, k):
    """Hs of a state-only call: heads, else the initial state's S.shape[1], else k.shape[1]."""
    if heads is not None:
        return _common._size("heads", heads)
    if isinstance(initial_state[0], torch.Tensor) and initial_state[0].dim() == 4:
        return initial_state[0].shape[1]
    _ops.rank("k", k, 4)
    return k.shape[1]


def state_grads(q, S0):
    """dS0, dz0 tensors for a backward with an initial state S0 (float32 for half tokens)."""
    B, H, D, M = S0.shape
    return _ops._wide_empty(q, (B, H, D, M)), _ops._wide_empty(q, (B, H, D))


class _LinearFunction(torch.autograd.Function):
    """performer::linear's autograd (the same kernels and formula) for eager calls (see
    softmax.py's _SoftmaxFunction): returns (out, S, z), S and z None without return_state.
    kv_lengths / kv_starts: None or lists. The backward passes its tensors to the extension as
    they are (the forward's, checked there, and autograd's, shaped like the outputs)."""

    @staticmethod
    def forward(ctx, q, k, v, S0, z0, causal, feature_map, eps, normalize, kv_lengths, kv_starts, return_state):
        out, S, z = _ops.linear_forward(q, k, v, S0, z0, causal, feature_map, eps, normalize, kv_lengths, kv_starts,
                                        return_state)
        ctx.save_for_backward(q, k, v, S0, z0)
        ctx.options = (causal, feature_map, eps, normalize, kv_lengths, kv_starts, return_state)
        return out, S, z

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dS, dz):
        q, k, v, S0, z0 = ctx.saved_tensors
        causal, feature_map, eps, normalize, kv_lengths, kv_starts, return_state = ctx.options
        if not return_state:
            dS = dz = None
        dq, dk, dv = new_output(q, q.shape), new_output(q, k.shape), new_output(q, v.shape)
        dS0, dz0 = (None, None) if S0 is None else state_grads(q, S0)
        _ext.linear_backward(q, k, v, dout, dq, dk, dv, S0, z0, dS, dz, dS0, dz0, causal, feature_map, eps, normalize,
                             kv_lengths, kv_starts)
        return dq, dk, dv, dS0, dz0, None, None, None, None, None, None, None


apply_linear = c_apply(_LinearFunction)


class _LinearStateFunction(torch.autograd.Function):
    """performer::linear_state's autograd (the same kernels and formula) for eager calls, as
    _LinearFunction for linear_attention: returns (S, z). kv_lengths / kv_starts: None or lists."""

    @staticmethod
    def forward(ctx, k, v, S0, z0, heads, feature_map, kv_lengths, kv_starts):
        S, z = _ops.linear_state_forward(k, v, S0, z0, heads, feature_map, kv_lengths, kv_starts)
        ctx.save_for_backward(k, v)
        ctx.options = (S0 is not None, feature_map, kv_lengths, kv_starts)
        return S, z

    @staticmethod
    @once_differentiable
    def backward(ctx, dS, dz):
        k, v = ctx.saved_tensors
        initial, feature_map, kv_lengths, kv_starts = ctx.options
        dk, dv, dS0, dz0 = _ops.linear_state_backward_kernel(k, v, dS, dz, initial, feature_map, kv_lengths,
                                                             kv_starts)
        return (dk, dv) + ((dS0, dz0) if initial else (None, None)) + (None,) * 4


apply_linear_state = c_apply(_LinearStateFunction)


def linear_attention(q, k, v, *, causal=False, feature_map="elu+1", eps=1e-6, normalize=True, kv_lengths=None,
                     kv_starts=None, initial_state=None, return_state=False):
    """Linear attention of CPU tensors: ``out_i = phi(q_i)^T S / (phi(q_i)^T z + eps)`` with
    ``S = S0 + sum_j phi(k_j) v_j^T``, ``z = z0 + sum_j phi(k_j)`` over all keys, or keys j <= i
    when causal (then N == L). Differentiable with respect to q, k, v and the initial state.

    q: B x H x N x D, k: B x Hk x L x D, v: B x Hk x L x M (Hk divides H), float32 or float64,
    any strides. feature_map: "elu+1", "relu" or "identity". normalize=False: no denominator
    (``phi(q_i)^T S_i``). kv_lengths / kv_starts: B ints (sequence or integer tensor), keys
    outside kv_starts[b] <= j < kv_lengths[b] removed. initial_state: (S0, z0), S0 B x H x D x M,
    z0 B x H x D (causal: the previous piece's final state; non-causal: a memory every query
    sees). Returns out (B x H x N x M), or ``(out, (S, z))`` with return_state (the final state,
    differentiable). The op is ``torch.ops.performer.linear``; see performer.linear_attention.
    """
    causal, normalize, return_state = bool(causal), bool(normalize), bool(return_state)
    fmap = _linear._feature_map(feature_map)
    if type(eps) is not float:
        eps = _common._real("eps", eps)
    S0, z0 = (None, None) if initial_state is None else state_arg("initial_state", initial_state, _common._PAIR)
    kv_lengths, kv_starts = key_tensors(kv_lengths, kv_starts)
    if _autocast.requested():
        q, k, v, S0, z0 = _autocast.widen((q, k, v, S0, z0))
    grad = route(q, k, v, S0, z0)
    if grad is not None:
        kv_lengths, kv_starts = key_lists(kv_lengths, kv_starts)
        if grad:
            S0, z0 = unwrap_each((S0, z0))
            out, S, z = apply_linear(unwrap(q), unwrap(k), unwrap(v), S0, z0, causal, fmap, eps, normalize,
                                     kv_lengths, kv_starts, return_state)
        else:
            out, S, z = _ops.linear_forward(q, k, v, S0, z0, causal, fmap, eps, normalize, kv_lengths, kv_starts,
                                            return_state)
    else:
        check(("q", "k", "v") + _STATE_NAMES, (q, k, v, S0, z0))
        op = _ops.LINEAR.apply if functorch_active() else _ops.ops.linear
        out, S, z = op(q, k, v, S0, z0, causal, fmap, eps, normalize, kv_lengths, kv_starts, return_state)
    return (out, (S, z)) if return_state else out


def linear_state(k, v, *, feature_map="elu+1", kv_lengths=None, kv_starts=None, initial_state=None, heads=None):
    """The linear-attention state of keys and values without queries, differentiable:
    ``(S, z)`` with S = S0 + sum_j phi(k_j) v_j^T (B x Hs x D x M) and z = z0 + sum_j phi(k_j)
    (B x Hs x D) over the visible keys. heads = Hs, a multiple of Hk (default: the initial
    state's, else Hk); Hs = H gives a state usable as linear_attention's initial_state. The op
    is ``torch.ops.performer.linear_state``; see performer.linear_state."""
    fmap = _linear._feature_map(feature_map)
    S0, z0 = state_arg("initial_state", initial_state, _common._PAIR)
    hs = heads_arg(heads, (S0, z0), k)
    kv_lengths, kv_starts = key_tensors(kv_lengths, kv_starts)
    if _autocast.requested():
        k, v, S0, z0 = _autocast.widen((k, v, S0, z0))
    grad = route(k, v, S0, z0)
    if grad is not None:
        kv_lengths, kv_starts = key_lists(kv_lengths, kv_starts)
        if grad:
            S0, z0 = unwrap_each((S0, z0))
            return apply_linear_state(unwrap(k), unwrap(v), S0, z0, hs, fmap, kv_lengths, kv_starts)
        return _ops.linear_state_forward(k, v, S0, z0, hs, fmap, kv_lengths, kv_starts)
    check(("k", "v") + _STATE_NAMES, (k, v, S0, z0))
    op = _ops.LINEAR_STATE.apply if functorch_active() else _ops.ops.linear_state
    return op(k, v, S0, z0, hs, fmap, kv_lengths, kv_starts)
