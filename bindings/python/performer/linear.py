"""Linear attention ("Transformers are RNNs"): forward, backward and state-only calls."""

import numpy as _np

from . import _performer as _ext
from ._common import (_PAIR, _check_exact, _check_state_arity, _checked_qkv, _empty, _key_array, _lse_dtype,
                      _ndarray, _options, _output, _outputs, _qkv, _real, _size, _state_arrays, _state_reference,
                      _tensor)

#: Feature-map names and their performer_feature_map codes.
_FEATURE_MAPS = {"elu+1": 0, "relu": 1, "identity": 2}


def _feature_map(feature_map):
    if not isinstance(feature_map, str):
        raise TypeError("feature_map must be a str ('elu+1', 'relu' or 'identity'), not %s"
                        % type(feature_map).__name__)
    try:
        return _FEATURE_MAPS[feature_map]
    except KeyError:
        raise ValueError("feature_map must be 'elu+1', 'relu' or 'identity', not %r" % feature_map) from None


def _linear_setup(q, k, v, causal, feature_map, eps, kv_lengths, kv_starts):
    dtype, qs, ks, vs = _qkv(q, k, v)
    causal, _, kv_lengths = _options(causal, None, kv_lengths, qs[0])
    if kv_starts is not None:
        kv_starts = _key_array("kv_starts", kv_starts, qs[0])
    return dtype, qs, ks, vs, causal, _feature_map(feature_map), _real("eps", eps), kv_lengths, kv_starts


def linear_attention(q, k, v, *, causal=False, feature_map="elu+1", eps=1e-6, kv_lengths=None,
                     initial_state=None, return_state=False, normalize=True, return_denominators=False,
                     kv_starts=None, out=None, final_state=None, denominators=None):
    """Linear attention ("Transformers are RNNs"):
    ``out_i = phi(q_i)^T S / (phi(q_i)^T z + eps)`` with ``S = S0 + sum_j phi(k_j) v_j^T`` and
    ``z = z0 + sum_j phi(k_j)`` over all keys, or over keys ``j <= i`` when causal.

    Parameters
    ----------
    q : buffer, B x H x N x D, float32, float64 or float16 (float16 is computed in float32
        and rounded once; its states and denominators are float32: docs/HALF_PRECISION.md)
    k : buffer, B x Hk x L x D, same dtype; Hk must divide H (query head h reads key head
        h // (H // Hk))
    v : buffer, B x Hk x L x M, same dtype
    causal : bool
        Query i sees keys j <= i only; needs N == L.
    feature_map : "elu+1" (default, elu(x) + 1), "relu" (max(x, 0)) or "identity" (q and k
        already hold features; gradients are then w.r.t. them). C = D for all three.
    eps : float, finite and >= 0 (0 allowed); added to every denominator (ignored when
        normalize is False).
    kv_lengths : sequence of B ints in 0..L, or None
        Key padding: keys j >= kv_lengths[b] are removed by zeroing phi(k_j) (not v_j, which
        would leave them in the denominator).
    kv_starts : sequence of B ints in 0..L, or None
        Left padding: keys j < kv_starts[b] are removed the same way; each start must be <=
        its row's length (L without kv_lengths). Their dk, dv are 0.
    initial_state : (S0, z0) or None
        S0: B x H x C x M, z0: B x H x C, one state per query head; None means zeros. Causal:
        the state a previous piece ended with. Non-causal: a memory of earlier keys (e.g. from
        :func:`linear_state`) that every query also sees; L may be 0.
    return_state : bool
        Also return the final state (S_N, z_N), e.g. to continue with the next piece of a
        sequence (``initial_state=``) or to prime a :class:`LinearDecoder`.
    normalize : bool
        False: ``out_i = phi(q_i)^T S_i = sum_j (phi(q_i).phi(k_j)) v_j`` (plus
        ``phi(q_i)^T S0``), with no denominator and no division, so features of any sign work
        (fast-transformers' ``causal_dot_product`` with feature_map="identity").
    return_denominators : bool
        Also return ``den_i = phi(q_i)^T z_i`` (B x H x N, without eps).
    out, final_state, denominators : writable buffers or None
        Write the results there instead of new arrays (any strides, e.g. a B x N x H x M
        buffer transposed to B x H x N x M; final_state a pair (S, z)); passing final_state or
        denominators implies return_state / return_denominators. Overlaps are refused.

    Returns
    -------
    out : numpy.ndarray, B x H x N x M; with return_state and/or return_denominators a tuple
    ``(out, (S_N, z_N))``, ``(out, den)`` or ``(out, (S_N, z_N), den)``.

    Raises TypeError for unsupported or mixed dtypes and wrong argument types, ValueError for
    wrong ranks, shapes or option values; the message names the argument.
    """
    if (initial_state is None and final_state is None and denominators is None and not return_state
            and not return_denominators and kv_lengths is None and kv_starts is None and type(eps) is float):
        # The common call (no state, no denominators, no key ranges): nothing to convert but the
        # feature map's name; the extension reads causal and normalize as truth values, as
        # bool() would, and the library checks the rest with the same messages.
        fmap = _FEATURE_MAPS.get(feature_map) if type(feature_map) is str else None
        if fmap is not None:
            dtype, qs, _, vs = _qkv(q, k, v)
            if out is None:
                out = _empty(qs[:3] + vs[3:], dtype)
            _ext.linear_forward(q, k, v, out, None, None, None, None, None, causal, fmap, eps, normalize, None)
            return out
    dtype, qs, ks, vs, causal, fmap, eps, kv_lengths, kv_starts = _linear_setup(
        q, k, v, causal, feature_map, eps, kv_lengths, kv_starts)
    B, H, N, D = qs
    M = vs[3]
    s_shape = (B, H, D, M)
    sd, ref = _lse_dtype(dtype), _state_reference(dtype)  # float32 states for float16
    s0 = z0 = sn = zn = den = None
    if initial_state is not None:
        s0, z0 = _state_arrays("initial_state", initial_state, sd, s_shape, _PAIR, ref)
    return_state = return_state or final_state is not None
    return_denominators = return_denominators or denominators is not None
    if return_state:
        sn, zn = _outputs("final_state", final_state, (s_shape, s_shape[:3]), sd, _PAIR)
    if return_denominators:
        den = _output(denominators, (B, H, N), sd)
    out = _output(out, (B, H, N, M), dtype)
    _ext.linear_forward(q, k, v, out, s0, z0, sn, zn, den, causal, fmap, eps, bool(normalize), kv_lengths,
                        kv_starts)
    result = (out,) + (((sn, zn),) if return_state else ()) + ((den,) if return_denominators else ())
    return result if len(result) > 1 else out


def linear_attention_backward(q, k, v, dout, *, causal=False, feature_map="elu+1", eps=1e-6,
                              kv_lengths=None, initial_state=None, dstate=None, normalize=True, kv_starts=None,
                              dq=None, dk=None, dv=None):
    """Gradients of :func:`linear_attention` (pass the forward's arguments, normalize included).

    ``dout`` = dLoss/dout (B x H x N x M). ``dstate`` = (dS_N, dz_N), the gradient of the loss
    w.r.t. the final state (B x H x C x M, B x H x C) when the loss also depends on it (None:
    zeros). Nothing from the forward is needed: it is recomputed in O(N) memory.

    Returns ``(dq, dk, dv)``, or ``(dq, dk, dv, (dS0, dz0))`` when an initial_state was given
    (the gradient w.r.t. it). With grouped-query attention dk and dv sum over the query heads
    that share a key head. ``dq=``, ``dk=``, ``dv=``: writable buffers (any strides) to write
    the gradients into instead of new arrays. Raises TypeError/ValueError naming the argument.
    """
    dtype, qs, ks, vs, causal, fmap, eps, kv_lengths, kv_starts = _linear_setup(
        q, k, v, causal, feature_map, eps, kv_lengths, kv_starts)
    B, H, N, D = qs
    M = vs[3]
    s_shape = (B, H, D, M)
    if not (type(dout) is _ndarray and dout.dtype is dtype and dout.shape == (B, H, N, M)):
        _checked_qkv(q, k, v)
        _, ds = _tensor("dout", dout, 4, dtype)
        _check_exact("dout", ds, (B, H, N, M), "(B, H, N, M)")
    sd, ref = _lse_dtype(dtype), _state_reference(dtype)  # float32 states for float16
    s0 = z0 = gs = gz = ds0 = dz0 = None
    if initial_state is not None:
        s0, z0 = _state_arrays("initial_state", initial_state, sd, s_shape, _PAIR, ref)
        ds0 = _np.empty(s_shape, dtype=sd)
        dz0 = _np.empty(s_shape[:3], dtype=sd)
    if dstate is not None:
        gs, gz = _state_arrays("dstate", dstate, sd, s_shape, _PAIR, ref)
    dq, dk, dv = _output(dq, qs, dtype), _output(dk, ks, dtype), _output(dv, vs, dtype)
    _ext.linear_backward(q, k, v, dout, dq, dk, dv, s0, z0, gs, gz, ds0, dz0, causal, fmap, eps, bool(normalize),
                         kv_lengths, kv_starts)
    if initial_state is not None:
        return dq, dk, dv, (ds0, dz0)
    return dq, dk, dv


def _linear_state_setup(k, v, feature_map, kv_lengths, initial_state, heads):
    """dtype, k's and v's shapes, the state's shape (B, Hs, C, M) and the options of a
    state-only call; Hs is ``heads``, else initial_state's S.shape[1], else Hk."""
    dtype, ks = _tensor("k", k, 4, reference="k")
    _, vs = _tensor("v", v, 4, dtype, reference="k")
    if heads is None and initial_state is not None:
        _check_state_arity("initial_state", initial_state, _PAIR)
        heads = _np.shape(initial_state[0])[1] if _np.ndim(initial_state[0]) == 4 else ks[1]
    hs = ks[1] if heads is None else _size("heads", heads)
    _, _, kv_lengths = _options(False, None, kv_lengths, ks[0])
    return dtype, ks, vs, (ks[0], hs, ks[3], vs[3]), _feature_map(feature_map), kv_lengths


def linear_state(k, v, *, feature_map="elu+1", kv_lengths=None, initial_state=None, heads=None, kv_starts=None):
    """The state of keys and values without queries:
    ``S = S0 + sum_j phi(k_j) v_j^T`` (B x Hs x C x M) and ``z = z0 + sum_j phi(k_j)``
    (B x Hs x C) over the visible keys (``j < kv_lengths[b]``).

    k is B x Hk x L x D, v B x Hk x L x M. ``heads`` = Hs, a multiple of Hk (default: the
    initial state's, else Hk): state head h takes key head h // (Hs // Hk). Hs = H gives the
    per-query-head state of :func:`linear_attention`, so (S, z) can be its ``initial_state``
    (causal: the state after these keys; non-causal: a memory). Returns ``(S, z)``.
    """
    dtype, ks, vs, s_shape, fmap, kv_lengths = _linear_state_setup(k, v, feature_map, kv_lengths, initial_state,
                                                                   heads)
    sd, ref = _lse_dtype(dtype), _state_reference(dtype)  # float32 states for float16
    s0 = z0 = None
    if initial_state is not None:
        s0, z0 = _state_arrays("initial_state", initial_state, sd, s_shape, _PAIR, ref)
    s = _np.empty(s_shape, dtype=sd)
    z = _np.empty(s_shape[:3], dtype=sd)
    _ext.linear_state(k, v, s0, z0, s, z, fmap, kv_lengths, kv_starts)
    return s, z


def linear_state_backward(k, v, dS, dz, *, feature_map="elu+1", kv_lengths=None, initial_state=None, heads=None,
                          kv_starts=None):
    """Gradients of :func:`linear_state` (pass its arguments) given ``dS``, ``dz`` = dLoss/dS
    (B x Hs x C x M) and dLoss/dz (B x Hs x C). Returns ``(dk, dv)``, or
    ``(dk, dv, (dS0, dz0))`` when an initial_state was given (its gradient, equal to dS, dz).
    dk and dv sum over the Hs // Hk state heads of each key head."""
    if heads is None and initial_state is None:
        heads = _np.shape(dS)[1] if _np.ndim(dS) == 4 else None
    dtype, ks, vs, s_shape, fmap, kv_lengths = _linear_state_setup(k, v, feature_map, kv_lengths, initial_state,
                                                                   heads)
    sd, ref = _lse_dtype(dtype), _state_reference(dtype)  # float32 states for float16
    gs, gz = _state_arrays("dstate", (dS, dz), sd, s_shape, _PAIR, ref)
    ds0 = dz0 = None
    if initial_state is not None:
        _state_arrays("initial_state", initial_state, sd, s_shape, _PAIR, ref)
        ds0 = _np.empty(s_shape, dtype=sd)
        dz0 = _np.empty(s_shape[:3], dtype=sd)
    dk, dv = _empty(ks, dtype), _empty(vs, dtype)
    _ext.linear_state_backward(k, v, gs, gz, dk, dv, ds0, dz0, fmap, kv_lengths, kv_starts)
    if initial_state is not None:
        return dk, dv, (ds0, dz0)
    return dk, dv


def linear_initial_state_gradient(q, out, dout, denominators, *, feature_map="elu+1", eps=1e-6, normalize=True):
    """The gradient of the loss w.r.t. a forward's initial state from the query side alone:
    ``dS0 = sum_i phi(q_i) g_i^T`` (B x H x C x M) and ``dz0 = -sum_i phi(q_i) (g_i . out_i)``
    (B x H x C), ``g_i = dout_i / (den_i + eps)``. Equal, to rounding, to the ``(dS0, dz0)`` of
    :func:`linear_attention_backward` without ``dstate``, in one pass over the query rows
    without the keys (distributed linear attention's initial-state gradient).

    q: B x H x N x D; out, dout: B x H x N x M, the forward's output and dLoss/dout;
    denominators: B x H x N, the forward's ``return_denominators`` (None allowed only with
    normalize=False, where ``dz0`` is 0). feature_map, eps, normalize: the forward's (causal and
    key masks do not change the formula). A row whose ``den_i + eps`` is 0 adds nothing, as in
    the backward. Float16 q, out, dout take float32 denominators and return float32 gradients.
    Returns ``(dS0, dz0)``; raises TypeError/ValueError naming the argument.
    """
    if denominators is None and normalize:
        raise ValueError("denominators is required when normalize=True (the forward's return_denominators)")
    dtype, qs = _tensor("q", q, 4)
    _, out_shape = _tensor("out", out, 4, dtype)
    B, H, N, D = qs
    sd = _lse_dtype(dtype)  # float32 state gradients for float16
    ds0 = _np.empty((B, H, D, out_shape[3]), dtype=sd)
    dz0 = _np.empty((B, H, D), dtype=sd)
    _ext.linear_initial_state_gradient(q, out, dout, denominators, ds0, dz0, _feature_map(feature_map),
                                       _real("eps", eps), bool(normalize))
    return ds0, dz0
