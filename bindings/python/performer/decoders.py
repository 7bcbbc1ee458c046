"""Recurrent decoders: causal linear attention and causal FAVOR+ one token at a time."""

import numpy as _np

from . import _performer as _ext
from ._common import (_PAIR, _TRIPLE, _check_state_arity, _choice, _empty, _lse_dtype, _real, _scale, _size,
                      _tensor)
from .favor import _FAVOR_FEATURES, _favor_count, _projection_arg
from .linear import _feature_map

#: The decoders' token dtypes and their performer_dtype codes. A float16 decoder keeps its state
#: in float32 (docs/HALF_PRECISION.md).
_DECODER_CODES = {_np.dtype(_np.float32): 0, _np.dtype(_np.float64): 1, _np.dtype(_np.float16): 2}


def _decoder_dtype(dtype):
    """A decoder's dtype argument as a numpy dtype: float32, float64 or float16."""
    try:
        np_dtype = _np.dtype(dtype)
    except TypeError:
        raise TypeError("dtype must be 'float32', 'float64' or 'float16', not %r" % (dtype,)) from None
    if np_dtype not in _DECODER_CODES:
        raise TypeError("dtype must be 'float32', 'float64' or 'float16', not %s" % np_dtype)
    return np_dtype


def _check_int64(**sizes):
    """Raises ValueError for the first size (in argument order) outside int64_t."""
    for name, value in sizes.items():
        if not -(1 << 63) <= value < (1 << 63):
            raise ValueError("%s = %d does not fit in 64 bits" % (name, value))


class _Decoder:
    """What LinearDecoder and FavorDecoder share. A subclass's __init__ sets the fields read
    here, and _STATE names its state's arrays (S first)."""

    batch = property(lambda self: self._batch, doc="B")
    heads = property(lambda self: self._heads, doc="H")
    dim = property(lambda self: self._dim, doc="D, the head dim of q and k")
    value_dim = property(lambda self: self._value_dim, doc="M, the head dim of v and the output")
    eps = property(lambda self: self._eps, doc="eps")
    dtype = property(lambda self: self._dtype, doc="numpy dtype of the tokens (q, k, v, out)")
    state_dtype = property(lambda self: self._state_dtype,
                           doc="numpy dtype of the state: the token dtype, float32 for float16 tokens")

    def _dtype_code(self, dtype):
        """(performer_dtype code, numpy dtype) of a dtype argument, and the state's dtype set;
        performer.torch's decoders take torch dtypes (bfloat16 too) instead."""
        np_dtype = _decoder_dtype(dtype)
        self._state_dtype = _lse_dtype(np_dtype)
        return _DECODER_CODES[np_dtype], np_dtype


    def _assign_state(self, value):
        _check_state_arity("state", value, self._STATE)
        self.set_state(*value)


class LinearDecoder(_Decoder, _ext.LinearDecoder):
    """Causal linear attention as an RNN: holds the state S (B x H x C x M) and z (B x H x C)
    of ``batch`` x ``heads`` query heads and takes one token per :meth:`step`::

        S <- S + phi(k) v^T;  z <- z + phi(k);  o = phi(q)^T S / (phi(q)^T z + eps)

    at O(C * M) per head whatever the position, without allocating in the library.

    Parameters
    ----------
    batch, heads, dim, value_dim : int
        B, H, D (the head dim of q and k; C = D) and M (of v and the output).
    feature_map : "elu+1" (default), "relu" or "identity"
    eps : float, finite and >= 0
    key_heads : int or None
        Hk for grouped-query attention (must divide heads); None means heads. Each query
        head keeps its own state, built from the keys and values of key head h // (H // Hk).
    dtype : "float32" (default), "float64" or "float16": the dtype of the tokens (q, k, v and the
        output); the state (S, z) has it too, except that a float16 decoder keeps its state in
        float32 (:attr:`state_dtype`; docs/HALF_PRECISION.md): each output is then the float32
        step's on the widened tokens, rounded once.

    Prefill, then decode: :meth:`prefill` runs a prompt (B x H x N x D, ...) through the
    causal chunked kernel and keeps its final state; or assign the final state of
    ``linear_attention(..., causal=True, return_state=True)`` to :attr:`state`.

    One decoder may be used by one thread at a time (a concurrent call raises RuntimeError);
    distinct decoders may run in parallel (steps release the GIL).
    """

    def __init__(self, batch, heads, dim, value_dim, *, feature_map="elu+1", eps=1e-6, key_heads=None,
                 dtype="float32"):
        batch = _size("batch", batch)
        heads = _size("heads", heads)
        dim = _size("dim", dim)
        value_dim = _size("value_dim", value_dim)
        key_heads = heads if key_heads is None else _size("key_heads", key_heads)
        code, np_dtype = self._dtype_code(dtype)
        fmap = _feature_map(feature_map)
        eps = _real("eps", eps)
        _check_int64(batch=batch, heads=heads, key_heads=key_heads, dim=dim, value_dim=value_dim)
        super().__init__(code, batch, heads, key_heads, dim, value_dim, fmap, eps)
        self._batch, self._heads, self._key_heads = batch, heads, key_heads
        self._dim, self._value_dim = dim, value_dim
        self._feature_map, self._eps, self._dtype = feature_map, eps, np_dtype
        self._out_shape = (batch, heads, value_dim)
        self._s_shape = (batch, heads, dim, value_dim)
        self._z_shape = (batch, heads, dim)

    _STATE = _PAIR
    # batch, value_dim, eps, dtype: _Decoder's; heads and dim documented for GQA and C = D.
    heads = property(lambda self: self._heads, doc="H, the query heads")
    key_heads = property(lambda self: self._key_heads, doc="Hk, the key/value heads")
    dim = property(lambda self: self._dim, doc="D, the head dim of q and k (= C)")
    feature_map = property(lambda self: self._feature_map, doc="the feature map's name")

    def step(self, q, k, v, out=None, *, state=None):
        """One token: q (B x H x D), k (B x Hk x D), v (B x Hk x M) -> out (B x H x M), a new
        array, or ``out`` (a writable B x H x M array of the decoder's dtype) when given.
        Any strides. On error (TypeError/ValueError naming the argument) nothing changes.

        ``state=(S, z)``: step on a state the caller owns instead of the decoder's own --
        writable arrays S (B x H x C x M) and z (B x H x C) of the decoder's dtype, any
        strides (float32 for a float16 decoder), read and updated in place (the decoder's own
        state is not touched). The
        same arithmetic as the decoder's own state, so the same bits: one decoder can serve
        many sequences, or a recurrent layer can pass its state in and out."""
        out = _np.empty(self._out_shape, self._dtype) if out is None else out
        if state is None:
            return self._step(q, k, v, out)
        _check_state_arity("state", state, self._STATE)
        return self._step_state(q, k, v, out, state[0], state[1])

    def prefill(self, q, k, v):
        """Runs a prompt -- q B x H x N x D, k B x Hk x N x D, v B x Hk x N x M -- from the
        current state (the causal forward, at its speed) and keeps its final state.
        Returns its outputs, B x H x N x M. The same as N calls of :meth:`step`."""
        dtype, qs = _tensor("q", q, 4, self._dtype, "the decoder")
        return self._prefill(q, k, v, _empty((qs[0], qs[1], qs[2], self._value_dim), dtype))

    def reset(self):
        """Sets the state to zero (a new sequence)."""
        self._reset()

    @property
    def state(self):
        """(S, z): copies of the state, S B x H x C x M and z B x H x C. Assign a pair to
        replace it (see :meth:`set_state`)."""
        # One extension call allocates both arrays and copies into them: a get is the copy.
        return self._state_copy(self._s_shape, self._z_shape, self._state_dtype)

    @state.setter
    def state(self, pair):
        self._assign_state(pair)

    def set_state(self, S, z):
        """Replaces the state with S (B x H x C x M) and z (B x H x C), e.g. the final state of
        ``linear_attention(..., causal=True, return_state=True)``. The arrays are copied."""
        self._set_state(S, z)

    def __repr__(self):
        return ("LinearDecoder(batch=%d, heads=%d, dim=%d, value_dim=%d, feature_map=%r, eps=%r, "
                "key_heads=%d, dtype=%r)" % (self._batch, self._heads, self._dim, self._value_dim,
                                             self._feature_map, self._eps, self._key_heads,
                                             str(self.dtype)))


class FavorDecoder(_Decoder, _ext.FavorDecoder):
    """Causal FAVOR+ attention one token at a time: for ``batch`` x ``heads`` heads, each
    :meth:`step` adds the token's key and value to the state and reads it with its query::

        S <- S + phi(k) v^T;  z <- z + phi(k);  out = phi(q)^T S / (phi(q)^T z + eps)

    (key j <= i), at O(C * M) per head and token. The state is kept in the stabilized form of
    docs/FAVOR.md section 4 -- (S~, z~, c) with S = diag(exp(c)) S~ and z = exp(c) * z~ -- so
    that steps stay finite and exact for large |q|, |k|; a row whose denominator underflows
    outputs 0.

    Parameters
    ----------
    projection : FavorProjection, copied at creation (a later redraw does not affect this
        decoder)
    batch, heads, value_dim : int, B, H and M
    features : "positive" (default), "hyperbolic", "trigonometric" or "relu"
    scale : float or None (1/sqrt(D))
    eps : float, finite and >= 0, in the units of the mathematical features (default 0)
    relu_offset : float, kappa of "relu"
    dtype : "float32" (default), "float64" or "float16" (tokens; a float16 decoder keeps its state
        (S~, z~, c) in float32, :attr:`state_dtype`)

    One decoder may be used by one thread at a time (a concurrent call raises RuntimeError).
    """

    def __init__(self, projection, batch, heads, value_dim, *, features="positive", scale=None, eps=0.0,
                 relu_offset=1e-3, dtype="float32"):
        projection = _projection_arg(projection)
        batch = _size("batch", batch)
        heads = _size("heads", heads)
        value_dim = _size("value_dim", value_dim)
        code = _choice("features", features, _FAVOR_FEATURES)
        code_dtype, np_dtype = self._dtype_code(dtype)
        _check_int64(batch=batch, heads=heads, value_dim=value_dim)
        eps = _real("eps", eps)
        scale = _scale(scale)
        relu_offset = _real("relu_offset", relu_offset)
        super().__init__(projection, code_dtype, batch, heads, value_dim, code, scale, eps, relu_offset)
        dim, num_features = projection._info()[:2]
        count = _favor_count(code, num_features)
        self._projection = projection
        self._batch, self._heads, self._dim, self._value_dim = batch, heads, dim, value_dim
        self._features, self._scale, self._eps, self._relu_offset = features, scale, eps, relu_offset
        self._dtype, self._count = np_dtype, count
        self._out_shape = (batch, heads, value_dim)
        self._s_shape = (batch, heads, count, value_dim)

    _STATE = _TRIPLE
    # batch, heads, dim, value_dim, eps, dtype: _Decoder's.
    projection = property(lambda self: self._projection, doc="the FavorProjection it was created from")
    num_features = property(lambda self: self._count, doc="C, the features per head (m or 2m)")
    features = property(lambda self: self._features, doc="the feature kind's name")
    scale = property(lambda self: self._scale, doc="scale, or None for 1/sqrt(D)")

    def step(self, q, k, v, out=None):
        """One token: q, k (B x H x D), v (B x H x M) -> out (B x H x M), a new array, or
        ``out`` (a writable B x H x M array of the decoder's dtype) when given. Any strides.
        On error (TypeError/ValueError naming the argument) nothing changes."""
        return self._step(q, k, v, _np.empty(self._out_shape, self._dtype) if out is None else out)

    def reset(self):
        """Empties the state (a new sequence)."""
        self._reset()

    @property
    def state(self):
        """(S~, z~, c): copies of the scaled state, S~ B x H x C x M, z~ and c B x H x C, with
        the mathematical state S = exp(c)[..., None] * S~, z = exp(c) * z~. c = -inf marks a
        feature no key has reached yet (relu: c = 0; trigonometric: one c per head). Assign a
        triple to replace it (see :meth:`set_state`)."""
        z_shape = self._s_shape[:3]
        return self._state_copy(self._s_shape, z_shape, z_shape, self._state_dtype)

    @state.setter
    def state(self, triple):
        self._assign_state(triple)

    def set_state(self, S, z, c):
        """Replaces the state with (S, z, c) (shapes as :attr:`state`; copied). S and z must be
        finite, c finite or -inf (then that feature's S row and z entry must be 0); passing
        c = 0 loads a mathematical state (S, z) as it is. Raises ValueError otherwise."""
        self._set_state(S, z, c)

    def __repr__(self):
        return ("FavorDecoder(%r, batch=%d, heads=%d, value_dim=%d, features=%r, scale=%r, eps=%r, dtype=%r)"
                % (self._projection, self._batch, self._heads, self._value_dim, self._features, self._scale,
                   self._eps, str(self.dtype)))
