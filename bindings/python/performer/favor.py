"""FAVOR+ (Performer random features): the projection, the feature map, attention forward and
backward, and state-only calls."""

import numpy as _np

from . import _performer as _ext
from ._common import (_PAIR, _TRIPLE, _check_exact, _check_state_arity, _checked_qkv, _choice, _empty, _key_array,
                      _lse_dtype, _ndarray, _options, _output, _outputs, _qkv, _real, _scale, _size, _state_arrays,
                      _state_reference, _tensor)

#: Names and C codes (performer.h section 7).
_PROJECTION_KINDS = {"orthogonal": 0, "iid": 1}
_NORMS = {"chi": 0, "fixed": 1}
_FAVOR_FEATURES = {"positive": 0, "hyperbolic": 1, "trigonometric": 2, "relu": 3}


def _favor_count(features_code, num_features):
    return 2 * num_features if features_code in (1, 2) else num_features


def _projection_arg(projection):
    if not isinstance(projection, FavorProjection):
        raise TypeError("projection must be a performer.FavorProjection, not %s" % type(projection).__name__)
    return projection


class FavorProjection(_ext.FavorProjection):
    """The random projection W (``num_features`` x ``dim``, m x D) of FAVOR+ features.

    Drawn from the seeded generator that docs/FAVOR.md specifies, so a given
    ``(dim, num_features, kind, norms, seed)`` and draw number gives the same W on every build:

    kind : "orthogonal" (default: ceil(m/D) stacked Haar-random orthogonal D x D blocks, the
        first m rows) or "iid" (independent standard Gaussian entries)
    norms : "chi" (default: every row distributed as a standard Gaussian vector; iid rows are
        left as drawn) or "fixed" (every row has norm sqrt(D))
    seed : int in 0 .. 2**64 - 1

    :meth:`redraw` replaces W by the generator's next draw (``draw`` + 1); it never looks at
    data. :meth:`from_matrix` wraps a W of your own (it cannot be redrawn). The first rows do
    not depend on ``num_features``. Safe to share between threads (a redraw is atomic).
    """

    def __init__(self, dim, num_features, *, kind="orthogonal", norms="chi", seed=0):
        dim = _size("dim", dim)
        num_features = _size("num_features", num_features)
        kind_code = _choice("kind", kind, _PROJECTION_KINDS)
        norms_code = _choice("norms", norms, _NORMS)
        seed = _size("seed", seed)
        if not 0 <= seed < (1 << 64):
            raise ValueError("seed = %d must be in 0 .. 2**64 - 1" % seed)
        for name, value in (("dim", dim), ("num_features", num_features)):
            if value < 1:
                raise ValueError("%s = %d: must be at least 1" % (name, value))
            if value >= (1 << 63):
                raise ValueError("%s = %d does not fit in 64 bits" % (name, value))
        self._create(dim, num_features, kind_code, norms_code, seed)

    @classmethod
    def from_matrix(cls, W):
        """A projection whose W is ``W``: an m x D array (float32, float64 or float16, finite;
        any buffer, any strides), copied (exactly: every such entry is a float64). It has no generator: ``seed``, ``kind`` and ``norms``
        are None and :meth:`redraw` raises ValueError."""
        if not _is_rank(W, 2):
            with memoryview(W) as view:
                found = tuple(view.shape)
            raise ValueError("W must have 2 dimensions (num_features x dim), but it has %d (shape %s)"
                             % (len(found), found))
        _, shape = _tensor("W", W, 2)
        if shape[0] < 1 or shape[1] < 1:
            raise ValueError("W has shape %s: need at least one row (num_features) and one column (dim)"
                             % (shape,))
        self = cls.__new__(cls)
        self._create_from_matrix(_np.asarray(W)[None, None])
        return self

    dim = property(lambda self: self._info()[0], doc="D, the input (head) dimension: columns of W")
    num_features = property(lambda self: self._info()[1], doc="m, the number of random features: rows of W")
    kind = property(lambda self: _name_of(_PROJECTION_KINDS, self._info()[2]),
                    doc='"orthogonal" or "iid"; None for a caller\'s W')
    norms = property(lambda self: _name_of(_NORMS, self._info()[3]), doc='"chi" or "fixed"; None for a caller\'s W')
    seed = property(lambda self: self._info()[4], doc="the generator seed; None for a caller's W")
    draw = property(lambda self: self._info()[5], doc="which draw W is: 0 at creation, + 1 per redraw")

    @property
    def matrix(self):
        """W as a new m x D float64 NumPy array (a copy)."""
        dim, num_features = self._info()[:2]
        out = _np.empty((num_features, dim), dtype=_np.float64)
        self._get_matrix(out[None, None])
        return out

    def redraw(self):
        """Replaces W by the generator's next draw (``draw`` + 1). Raises ValueError for a
        projection made by :meth:`from_matrix`. Decoders created before keep their W."""
        self._redraw()

    def __repr__(self):
        dim, m, kind, norms, seed, draw = self._info()
        if seed is None:
            return "FavorProjection.from_matrix(<%d x %d>)" % (m, dim)
        return ("FavorProjection(dim=%d, num_features=%d, kind=%r, norms=%r, seed=%d)%s"
                % (dim, m, _name_of(_PROJECTION_KINDS, kind), _name_of(_NORMS, norms), seed,
                   "" if draw == 0 else " [draw %d]" % draw))


def _name_of(table, code):
    if code is None:
        return None
    return next(name for name, value in table.items() if value == code)


def _is_rank(obj, ndim):
    try:
        with memoryview(obj) as view:
            return view.ndim == ndim
    except (TypeError, ValueError, BufferError, NotImplementedError):
        return True  # let _tensor raise its TypeError


def favor_features(x, projection, *, features="positive", scale=None, is_query=True, relu_offset=1e-3, out=None):
    """The FAVOR+ feature map phi(x) of every row of x (docs/ALGORITHMS.md section 3).

    With x^ = x * scale**0.5 (scale 1/sqrt(D) unless given), u = W x^ and n = |x^|**2:

    - "positive" (default): phi = exp(u - n/2) / sqrt(m), C = m
    - "hyperbolic": phi = [exp(u - n/2), exp(-u - n/2)] / sqrt(2m), C = 2m
    - "trigonometric": phi = exp(n/2) / sqrt(m) * [sin u, cos u], C = 2m
    - "relu": phi = max(u, 0) + relu_offset, C = m

    so that ``phi(q) @ phi(k)`` estimates exp(scale * q.k) for the first three.

    Parameters
    ----------
    x : buffer, B x H x N x D, float32, float64 or float16 (any strides); D = projection.dim
    projection : FavorProjection
    is_query : bool
        Accepted for symmetry with attention code; it does not change the result. The map is
        the same mathematical phi for queries and keys: the query/key difference of FAVOR+
        implementations is only in the stabilizer (a per-row vs a running shift), which is
        internal to attention and the decoder and cancels in their outputs. These are the
        unshifted values: exponential features overflow to inf or underflow to 0 where their
        value is not representable.
    relu_offset : float, kappa of "relu" (finite, >= 0)

    Returns phi(x), a new B x H x N x C array of x's dtype, or ``out`` (a writable buffer of
    that shape, any strides) when given. Raises TypeError/ValueError naming the argument.
    """
    dtype, shape = _tensor("x", x, 4)
    projection = _projection_arg(projection)
    code = _choice("features", features, _FAVOR_FEATURES)
    if not isinstance(is_query, bool):
        raise TypeError("is_query must be a bool, not %s" % type(is_query).__name__)
    dim, num_features = projection._info()[:2]
    if shape[3] != dim:
        raise ValueError("x.shape[3] = %d but projection.dim = %d" % (shape[3], dim))
    out = _output(out, shape[:3] + (_favor_count(code, num_features),), dtype)
    _ext.favor_features(x, projection, out, code, _scale(scale), _real("relu_offset", relu_offset))
    return out


def _favor_setup(q, k, v, projection, causal, features, scale, eps, kv_lengths, relu_offset, kv_starts):
    dtype, qs, ks, vs = _qkv(q, k, v)
    projection = _projection_arg(projection)
    dim, num_features = projection._info()[:2]
    if qs[3] != dim:
        _checked_qkv(q, k, v)
        raise ValueError("q.shape[3] = %d but projection.dim = %d (head dim)" % (qs[3], dim))
    code = _choice("features", features, _FAVOR_FEATURES)
    causal, _, kv_lengths = _options(causal, None, kv_lengths, qs[0])
    # Both key arrays travel as one pair: (kv_lengths, kv_starts).
    keys = (kv_lengths, _key_array("kv_starts", kv_starts, qs[0]))
    s_shape = (qs[0], qs[1], _favor_count(code, num_features), vs[3])
    return (dtype, qs, ks, vs, projection, causal, code, _scale(scale), _real("eps", eps), keys,
            _real("relu_offset", relu_offset), s_shape)


def favor_attention(q, k, v, projection, *, causal=False, features="positive", scale=None, eps=0.0,
                    kv_lengths=None, initial_state=None, return_state=False, relu_offset=1e-3, kv_starts=None,
                    out=None, final_state=None, return_row_scales=False, row_scales=None):
    """FAVOR+ (Performer) attention: linear attention on the random features phi of
    :func:`favor_features` (docs/ALGORITHMS.md section 3)::

        out_i = sum_j phi(q_i).phi(k_j) v_j / (sum_j phi(q_i).phi(k_j) + eps)

    over every key (kv_starts[b] <= j < kv_lengths[b]), or over keys j <= i when causal. With the positive
    (default), hyperbolic or trigonometric features this estimates softmax attention with the
    same scale. It is evaluated in the stabilized form of docs/FAVOR.md section 4, so it equals
    this mathematical function to rounding even where the features under- or overflow (|q|,
    |k| of 30 and more); one call, pieces with a carried state and :class:`FavorDecoder` steps
    agree.

    Parameters
    ----------
    q : buffer, B x H x N x D, float32, float64 or float16 (any strides; float16 is computed in
        float32 and rounded once, its states are float32); D = projection.dim
    k : buffer, B x Hk x L x D, same dtype; Hk must divide H (query head h reads key head
        h // (H // Hk))
    v : buffer, B x Hk x L x M, same dtype
    projection : FavorProjection (its W at the time of the call)
    causal : bool
        Query i sees keys j <= i only; needs N == L.
    features : "positive" (default), "hyperbolic", "trigonometric" or "relu"
    scale : float or None (1/sqrt(D)); x^ = x * scale**0.5 for queries and keys
    eps : float, finite and >= 0 (default 0), in the units of the mathematical features. A row
        whose denominator underflows or is 0 outputs zeros (never NaN or Inf).
    kv_lengths : sequence of B ints in 0..L, or None: keys j >= kv_lengths[b] are removed
        (their features are zero).
    kv_starts : sequence of B ints in 0..L, or None: keys j < kv_starts[b] are removed too
        (left padding); each start must be <= its row's length (L without kv_lengths).
    initial_state : (S, z, c) or None
        A scaled state: S~ B x H x C x M, z~ and c B x H x C, standing for
        S = exp(c)[..., None] * S~, z = exp(c) * z~ (C = m, or 2m for hyperbolic and
        trigonometric). c = -inf marks an empty feature; (S, z, zeros) is a valid state too.
        Causal: the state to continue from (the previous piece's ``return_state``, or a
        :class:`FavorDecoder`'s ``state``). Non-causal: a memory of earlier keys (e.g. from
        :func:`favor_state`) that every query also sees, as linear_attention's: the output is
        that of one call over the memory's keys and these (L may be 0); the shifts c of the
        memory and of these keys are merged as docs/FAVOR.md section 4 says.
    return_state : bool
        Also return the final scaled state (S~, z~, c) in that form (non-causal: the memory
        plus every visible key).
    relu_offset : float, kappa of "relu" (finite, >= 0)
    return_row_scales : bool
        Also return, per query row, its unit U_i and scaled denominator den_i (each B x H x N,
        in the state dtype: float32 for float16 tokens): the mathematical denominator
        ``sum_j phi(q_i).phi(k_j) + eps`` is ``exp(U_i) * den_i``, and ``U_i >= a_f(q_i) + c_f``
        for the state the row read (docs/FAVOR.md section 4). A row that outputs zeros gets
        den_i = 0. The output is the same, bit for bit. Used to form the initial state's
        gradient from the queries (performer.torch.distributed).
    out, final_state, row_scales : writable buffers or None
        Write the output (and the final state, a triple, implying return_state; the row
        scales, a pair (U, den), implying return_row_scales) there instead of new arrays; any
        strides. Overlaps are refused.

    Returns
    -------
    out : numpy.ndarray, B x H x N x M, the inputs' dtype; ``(out, (S, z, c))`` when
    return_state; ``(out, (U, den))`` when return_row_scales; ``(out, (S, z, c), (U, den))``
    with both.

    Raises TypeError for unsupported or mixed dtypes and wrong argument types, ValueError for
    wrong ranks, shapes (e.g. a projection whose dim is not D, a state whose C is not the
    feature count) or option values; the message names the argument.
    """
    (dtype, qs, ks, vs, projection, causal, code, scale, eps, keys, relu_offset,
     s_shape) = _favor_setup(q, k, v, projection, causal, features, scale, eps, kv_lengths, relu_offset, kv_starts)
    s0 = z0 = c0 = sn = zn = cn = None
    if initial_state is not None:
        s0, z0, c0 = _state_arrays("initial_state", initial_state, _lse_dtype(dtype), s_shape, _TRIPLE,
                                    _state_reference(dtype))
    return_state = return_state or final_state is not None
    if return_state:
        sn, zn, cn = _outputs("final_state", final_state, (s_shape, s_shape[:3], s_shape[:3]),
                              _lse_dtype(dtype), _TRIPLE)
    units = dens = None
    return_row_scales = return_row_scales or row_scales is not None
    if return_row_scales:
        units, dens = _outputs("row_scales", row_scales, (qs[:3], qs[:3]), _lse_dtype(dtype), ("U", "den"))
    out = _output(out, (qs[0], qs[1], qs[2], vs[3]), dtype)
    _ext.favor_forward(q, k, v, projection, out, s0, z0, c0, sn, zn, cn, causal, code, scale, eps, relu_offset,
                       *keys, units, dens)
    result = (out,) + (((sn, zn, cn),) if return_state else ()) + (((units, dens),) if return_row_scales else ())
    return result if len(result) > 1 else out


def favor_attention_backward(q, k, v, dout, projection, *, causal=False, features="positive", scale=None, eps=0.0,
                             kv_lengths=None, initial_state=None, dstate=None, relu_offset=1e-3, kv_starts=None,
                             dq=None, dk=None, dv=None):
    """Gradients of :func:`favor_attention` (pass the forward's arguments and options).

    ``dout`` = dLoss/dout (B x H x N x M). ``dstate`` = (dS, dz), the gradient of the loss
    w.r.t. the final scaled state (S~: B x H x C x M, z~: B x H x C, with its c held fixed)
    when the loss also depends on it (causal or not; None: zeros). Gradients flow to q, k and v
    through phi and the denominator; W and the stabilizer c get none. The forward is
    recomputed (no per-position state is stored).

    Returns ``(dq, dk, dv)``, or ``(dq, dk, dv, (dS0, dz0))`` when an initial_state was given
    (the gradient w.r.t. its S~ and z~, c held fixed). With grouped-query attention dk and dv
    sum over the query heads that share a key head. ``dq=``, ``dk=``, ``dv=``: writable
    buffers (any strides) for the gradients. Raises TypeError/ValueError naming the argument.
    """
    (dtype, qs, ks, vs, projection, causal, code, scale, eps, keys, relu_offset,
     s_shape) = _favor_setup(q, k, v, projection, causal, features, scale, eps, kv_lengths, relu_offset, kv_starts)
    if not (type(dout) is _ndarray and dout.dtype is dtype and dout.shape == qs[:3] + vs[3:]):
        _checked_qkv(q, k, v)
        _, ds = _tensor("dout", dout, 4, dtype)
        _check_exact("dout", ds, (qs[0], qs[1], qs[2], vs[3]), "(B, H, N, M)")
    s0 = z0 = c0 = gs = gz = ds0 = dz0 = None
    if initial_state is not None:
        s0, z0, c0 = _state_arrays("initial_state", initial_state, _lse_dtype(dtype), s_shape, _TRIPLE,
                                    _state_reference(dtype))
        ds0 = _np.empty(s_shape, dtype=_lse_dtype(dtype))
        dz0 = _np.empty(s_shape[:3], dtype=_lse_dtype(dtype))
    if dstate is not None:
        gs, gz = _state_arrays("dstate", dstate, _lse_dtype(dtype), s_shape, _PAIR, _state_reference(dtype))
    dq, dk, dv = _output(dq, qs, dtype), _output(dk, ks, dtype), _output(dv, vs, dtype)
    _ext.favor_backward(q, k, v, dout, projection, dq, dk, dv, s0, z0, c0, gs, gz, ds0, dz0, causal, code, scale,
                        eps, relu_offset, *keys)
    if initial_state is not None:
        return dq, dk, dv, (ds0, dz0)
    return dq, dk, dv


def _favor_state_setup(k, v, projection, features, scale, kv_lengths, kv_starts, relu_offset, initial_state, heads):
    """dtype, k's and v's shapes, the state's shape (B, Hs, C, M) and the options of a FAVOR+
    state-only call; Hs is ``heads``, else initial_state's S.shape[1], else Hk."""
    dtype, ks = _tensor("k", k, 4, reference="k")
    _, vs = _tensor("v", v, 4, dtype, reference="k")
    projection = _projection_arg(projection)
    dim, num_features = projection._info()[:2]
    if ks[3] != dim:
        raise ValueError("k.shape[3] = %d but projection.dim = %d (head dim)" % (ks[3], dim))
    if heads is None and initial_state is not None:
        _check_state_arity("initial_state", initial_state, _TRIPLE)
        heads = _np.shape(initial_state[0])[1] if _np.ndim(initial_state[0]) == 4 else ks[1]
    hs = ks[1] if heads is None else _size("heads", heads)
    code = _choice("features", features, _FAVOR_FEATURES)
    _, _, kv_lengths = _options(False, None, kv_lengths, ks[0])
    keys = (kv_lengths, _key_array("kv_starts", kv_starts, ks[0]))
    s_shape = (ks[0], hs, _favor_count(code, num_features), vs[3])
    return dtype, ks, vs, projection, code, _scale(scale), keys, _real("relu_offset", relu_offset), s_shape


def favor_state(k, v, projection, *, features="positive", scale=None, kv_lengths=None, kv_starts=None,
                initial_state=None, heads=None, relu_offset=1e-3):
    """The scaled FAVOR+ state of keys and values without queries: ``(S, z, c)`` with
    ``exp(c)[..., None] * S = S0 + sum_j phi(k_j) v_j^T`` and ``exp(c) * z = z0 + sum_j phi(k_j)``
    over the visible keys (kv_starts[b] <= j < kv_lengths[b]) -- the final state of a causal
    :func:`favor_attention` over the same keys, to rounding, computed with the same max-shift
    (finite at any input norm) and without queries.

    k is B x Hk x L x D, v B x Hk x L x M. ``heads`` = Hs, a multiple of Hk (default: the
    initial state's, else Hk): state head h takes key head h // (Hs // Hk). Hs = H gives the
    per-query-head state, usable as a causal ``initial_state`` or a :class:`FavorDecoder`
    state. ``initial_state`` = (S0~, z0~, c0) (as favor_attention's) or None. Returns
    ``(S, z, c)``: S B x Hs x C x M, z and c B x Hs x C.
    """
    (dtype, ks, vs, projection, code, scale, keys, relu_offset,
     s_shape) = _favor_state_setup(k, v, projection, features, scale, kv_lengths, kv_starts, relu_offset,
                                   initial_state, heads)
    sd, ref = _lse_dtype(dtype), _state_reference(dtype)  # float32 states for float16
    s0 = z0 = c0 = None
    if initial_state is not None:
        s0, z0, c0 = _state_arrays("initial_state", initial_state, sd, s_shape, _TRIPLE, ref)
    s = _np.empty(s_shape, dtype=sd)
    z = _np.empty(s_shape[:3], dtype=sd)
    c = _np.empty(s_shape[:3], dtype=sd)
    _ext.favor_state(k, v, projection, s0, z0, c0, s, z, c, code, scale, relu_offset, *keys)
    return s, z, c


def favor_state_backward(k, v, projection, dS, dz, *, features="positive", scale=None, kv_lengths=None,
                         kv_starts=None, initial_state=None, heads=None, relu_offset=1e-3):
    """Gradients of :func:`favor_state` (pass its arguments) given ``dS``, ``dz`` = dLoss/dS~
    (B x Hs x C x M) and dLoss/dz~ (B x Hs x C), with the shifts c held fixed (as
    :func:`favor_attention_backward` treats state gradients). Returns ``(dk, dv)``, or
    ``(dk, dv, (dS0, dz0))`` when an initial_state was given (the gradient w.r.t. its S~ and z~,
    c0 held fixed). dk and dv sum over the Hs // Hk state heads of each key head."""
    if heads is None and initial_state is None:
        heads = _np.shape(dS)[1] if _np.ndim(dS) == 4 else None
    (dtype, ks, vs, projection, code, scale, keys, relu_offset,
     s_shape) = _favor_state_setup(k, v, projection, features, scale, kv_lengths, kv_starts, relu_offset,
                                   initial_state, heads)
    sd, ref = _lse_dtype(dtype), _state_reference(dtype)  # float32 states for float16
    gs, gz = _state_arrays("dstate", (dS, dz), sd, s_shape, _PAIR, ref)
    s0 = z0 = c0 = ds0 = dz0 = None
    if initial_state is not None:
        s0, z0, c0 = _state_arrays("initial_state", initial_state, sd, s_shape, _TRIPLE, ref)
        ds0 = _np.empty(s_shape, dtype=sd)
        dz0 = _np.empty(s_shape[:3], dtype=sd)
    dk, dv = _empty(ks, dtype), _empty(vs, dtype)
    _ext.favor_state_backward(k, v, projection, gs, gz, dk, dv, ds0, dz0, s0, z0, c0, code, scale, relu_offset,
                              *keys)
    if initial_state is not None:
        return dk, dv, (ds0, dz0)
    return dk, dv


def favor_initial_state_gradient(q, projection, c0, row_scales, out, dout, *, features="positive", scale=None,
                                 relu_offset=1e-3):
    """The gradient of the loss w.r.t. a forward's initial scaled triple (S~0, z~0), c0 held
    fixed, from the query side alone: with the forward's row scales ``(U, den)``
    (``return_row_scales``), ``Q_if = phi_f(q_i) exp(c0_f - U_i)`` (``nu exp(a_f(q_i) + c0_f -
    U_i)`` for the exponential kinds: finite at any norm) and ``g_i = dout_i / den_i``,
    ``dS0 = sum_i Q_i g_i^T`` (B x H x C x M) and ``dz0 = -sum_i Q_i (g_i . out_i)`` (B x H x C).
    Equal, to rounding, to the ``(dS0, dz0)`` of :func:`favor_attention_backward` without
    ``dstate``, in one pass over the query rows without the keys and without an N x C array
    (distributed FAVOR+'s initial-state gradient).

    q: B x H x N x D; c0: B x H x C, the initial state's shifts; row_scales: ``(U, den)``, each
    B x H x N; out, dout: B x H x N x M, the forward's output and dLoss/dout. features, scale,
    relu_offset: the forward's (causal, eps and key masks do not change the formula). A row with
    den_i = 0 or U_i = -inf (it output zeros) adds nothing. float32 or float64, every array of
    q's dtype. Returns ``(dS0, dz0)``; raises TypeError/ValueError naming the argument.
    """
    dtype, qs = _tensor("q", q, 4)
    if dtype not in (_np.dtype(_np.float32), _np.dtype(_np.float64)):
        raise TypeError("q.dtype = %s: favor_initial_state_gradient takes float32 or float64" % dtype)
    _, out_shape = _tensor("out", out, 4, dtype)
    projection = _projection_arg(projection)
    code = _choice("features", features, _FAVOR_FEATURES)
    _check_state_arity("row_scales", row_scales, ("U", "den"))
    units, dens = row_scales
    B, H = qs[:2]
    count = _favor_count(code, projection._info()[1])
    ds0 = _np.empty((B, H, count, out_shape[3]), dtype=dtype)
    dz0 = _np.empty((B, H, count), dtype=dtype)
    _ext.favor_initial_state_gradient(q, projection, c0, units, dens, out, dout, ds0, dz0, code, _scale(scale),
                                      _real("relu_offset", relu_offset))
    return ds0, dz0
