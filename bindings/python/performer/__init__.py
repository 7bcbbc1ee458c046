"""performer: exact softmax attention and linear attention on the CPU (libperformer), forward
and backward, plus a recurrent (RNN) decoder for causal linear attention.

Tensors are any objects with the buffer protocol -- NumPy arrays, memoryviews, PyTorch CPU
tensors through ``tensor.detach().numpy()`` -- of dtype float32 or float64, with any strides
(transposed, sliced and negatively strided views are read in place, without a copy).
Results are new C-contiguous NumPy arrays of the inputs' dtype.

Shapes::

    q    B x H  x N x D      (N query positions)
    k    B x Hk x L x D      (L key positions; Hk divides H: grouped-query attention,
    v    B x Hk x L x M       query head h reads key/value head h // (H // Hk))
    out  B x H  x N x M
    lse  B x H  x N          (row log-sum-exp of the scaled, masked scores)

Causal masking is bottom-right aligned: query i sees key j iff j <= i + (L - N), so with a
cache of L keys and N new queries the last query sees every key. PyTorch's
``scaled_dot_product_attention(is_causal=True)`` is top-left aligned (j <= i); the two agree
only when N == L.

Linear attention (``linear_attention``, ``linear_attention_backward``, ``LinearDecoder``) uses
the same q, k, v, out shapes; its state is S (B x H x C x M) and z (B x H x C), C = D.
``linear_state`` / ``linear_state_backward`` give the state of keys without queries; causal or
not, a call may start from a state (non-causal: a memory), and ``normalize=False`` gives the
un-normalized product. See docs/LINEAR.md.

FAVOR+ (Performer): ``FavorProjection`` (seeded random projections W, m x D),
``favor_features`` (the feature maps phi), ``favor_attention`` / ``favor_attention_backward``
(bidirectional or causal, with a carried state) and ``FavorDecoder`` (causal FAVOR+ attention
token by token), the state being the stabilized triple (S~, z~, c); ``favor_state`` /
``favor_state_backward`` give that triple for keys without queries. See docs/FAVOR.md.

``softmax_merge`` merges partial softmax results over disjoint key sets by their log-sum-exp.
With PyTorch, ``performer.torch`` wraps the kernels as autograd Functions, and
``performer.torch.distributed`` splits one sequence across processes (docs/DISTRIBUTED.md).

The computation runs without the GIL on the library's own threads (see set_num_threads).
"""

import sys as _sys

import numpy as _np

from . import _performer as _ext

__all__ = [
    "softmax_attention",
    "softmax_attention_backward",
    "softmax_merge",
    "linear_attention",
    "linear_attention_backward",
    "linear_state",
    "linear_state_backward",
    "favor_state",
    "favor_state_backward",
    "LinearDecoder",
    "FavorProjection",
    "favor_features",
    "favor_attention",
    "favor_attention_backward",
    "FavorDecoder",
    "set_num_threads",
    "get_num_threads",
    "__version__",
]

#: The version of the loaded libperformer.so (performer_version_string()).
__version__ = _ext.version_string()

_FLOAT32, _FLOAT64, _FLOAT16 = _np.dtype(_np.float32), _np.dtype(_np.float64), _np.dtype(_np.float16)
# float16 is storage only: softmax attention computes it in float32 (docs/HALF_PRECISION.md);
# the functions that do not take it yet raise TypeError from the library.
_FLOAT_FORMATS = {"f": _FLOAT32, "d": _FLOAT64, "e": _FLOAT16}


def _lse_dtype(dtype):
    """The row log-sum-exp's dtype: float32 for a float16 call, else the call's. The states,
    state gradients and denominators of linear and FAVOR+ attention follow the same rule."""
    return _FLOAT32 if dtype == _FLOAT16 else dtype


def _state_reference(dtype):
    """What a state argument's dtype is compared with, in messages."""
    return "the state of a float16 call" if dtype == _FLOAT16 else "q"
_NATIVE_PREFIXES = "@=" + ("<" if _sys.byteorder == "little" else ">!")


def _format_name(fmt):
    try:
        return str(_np.dtype(fmt))
    except TypeError:
        return "format %r" % fmt


def _tensor(name, obj, ndim, dtype=None, reference="q"):
    """Returns (dtype, shape) of a buffer argument, raising TypeError/ValueError naming it."""
    if type(obj) is _np.ndarray:
        # The common case, without a memoryview (a third of a tiny call's cost); anything
        # unusual (another dtype, byte order or rank) takes the general path for its message.
        found = obj.dtype
        if (found is _FLOAT32 or found is _FLOAT64 or found is _FLOAT16) and obj.ndim == ndim and (dtype is None or found == dtype):
            return found, obj.shape
    try:
        view = memoryview(obj)
    except (TypeError, ValueError, BufferError, NotImplementedError) as error:
        hint = ""
        if type(obj).__module__.split(".")[0] == "torch":
            hint = " (pass tensor.detach().numpy() for a CPU tensor)"
        raise TypeError(
            "%s must be a float32 or float64 array with the buffer protocol (a NumPy array or "
            "memoryview), not %s%s" % (name, type(obj).__name__, hint)
        ) from error
    with view:
        fmt, shape = view.format, view.shape
    found = _FLOAT_FORMATS.get(fmt[1:] if fmt[:1] and fmt[0] in _NATIVE_PREFIXES else fmt)
    if found is None:
        if dtype is None:
            raise TypeError("%s has dtype %s; expected float32, float64 or float16 in native byte order"
                            % (name, _format_name(fmt)))
        raise TypeError("%s has dtype %s but %s has %s" % (name, _format_name(fmt), reference, dtype))
    if dtype is not None and found != dtype:
        raise TypeError("%s has dtype %s but %s has %s" % (name, found, reference, dtype))
    if len(shape) != ndim:
        layout = "B x H x N x features" if ndim == 4 else "B x H x N"
        raise ValueError("%s must have %d dimensions (%s), but it has %d (shape %s)"
                         % (name, ndim, layout, len(shape), tuple(shape)))
    return found, tuple(shape)


def _check_dim(name, shape, axis, other_name, other_shape, other_axis, meaning):
    if shape[axis] != other_shape[other_axis]:
        raise ValueError("%s.shape[%d] = %d but %s.shape[%d] = %d (%s)"
                         % (name, axis, shape[axis], other_name, other_axis, other_shape[other_axis], meaning))


def _check_qkv(q, k, v):
    # The same checks and messages as the C library's, made before allocating results.
    _check_dim("k", k, 0, "q", q, 0, "batch")
    _check_dim("k", k, 3, "q", q, 3, "head dim")
    _check_dim("v", v, 0, "q", q, 0, "batch")
    _check_dim("v", v, 1, "k", k, 1, "key heads")
    _check_dim("v", v, 2, "k", k, 2, "keys")
    if k[1] == 0:
        raise ValueError("k.shape[1] = 0: need at least one key head")
    if q[1] % k[1] != 0:
        raise ValueError("q.shape[1] = %d heads is not a multiple of k.shape[1] = %d key heads"
                         % (q[1], k[1]))


def _check_exact(name, shape, expected, described):
    if shape != expected:
        raise ValueError("%s has shape %s but must be %s = %s" % (name, shape, described, expected))


def _options(causal, scale, kv_lengths, batch):
    causal = bool(causal)
    if scale is not None:
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise TypeError("scale must be None or a real number, not %s" % type(scale).__name__) from None
    return causal, scale, _key_array("kv_lengths", kv_lengths, batch)


def _key_array(name, values, batch):
    """kv_lengths or kv_starts (None, or B ints) as a contiguous int64 array, or None.
    The ranges (0..L, start <= length) are checked by the library."""
    if values is None:
        return None
    array = _np.asarray(values)
    if array.ndim != 1:
        raise ValueError("%s must be a sequence of B = %d ints, but it has shape %s"
                         % (name, batch, array.shape))
    if array.size == 0:
        array = array.astype(_np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError("%s must hold ints, not %s" % (name, array.dtype))
    if array.shape[0] != batch:
        raise ValueError("%s has %d entries but batch = %d" % (name, array.shape[0], batch))
    if array.dtype.kind == "u" and array.size and int(array.max()) > _np.iinfo(_np.int64).max:
        raise ValueError("%s holds a value beyond int64" % name)
    return _np.ascontiguousarray(array, dtype=_np.int64)


def _output(given, shape, dtype):
    """A new array of `shape` and `dtype` when `given` is None, else `given` itself: a caller's
    buffer (any strides, e.g. a B x N x H x M array seen as B x H x N x M), which the library
    checks (shape, dtype, writability, overlaps) before it writes anything."""
    return _np.empty(shape, dtype=dtype) if given is None else given


def _outputs(name, given, shapes, dtype, labels):
    """`_output` for a tuple of outputs (a state): new arrays, or the caller's tuple."""
    if given is None:
        return tuple(_np.empty(shape, dtype=dtype) for shape in shapes)
    _check_state_arity(name, given, labels)
    return tuple(given)


def softmax_attention(q, k, v, *, causal=False, scale=None, kv_lengths=None, return_lse=False, kv_starts=None,
                      out=None, lse=None):
    """Exact softmax attention: ``out = softmax(scale * q @ k^T + mask) @ v``.

    Parameters
    ----------
    q : buffer, B x H x N x D, float32, float64 or float16 (float16 is computed in float32
        and each output rounded once; the lse is then float32)
    k : buffer, B x Hk x L x D, same dtype; Hk must divide H (query head h reads key
        head h // (H // Hk): grouped-query / multi-query attention)
    v : buffer, B x Hk x L x M, same dtype (M may differ from D)
    causal : bool
        Mask keys in the future, bottom-right aligned: query i sees key j iff
        j <= i + (L - N). With N == L this is the usual lower triangle. Note that PyTorch's
        ``is_causal`` is top-left aligned (j <= i) and differs from this when N != L.
    scale : float or None
        Multiplies the scores; None means 1 / sqrt(D). Must be finite.
    kv_lengths : sequence of B ints in 0..L, or None
        Key padding: for batch b, keys j >= kv_lengths[b] are masked.
    kv_starts : sequence of B ints in 0..L, or None
        Left padding (Hugging Face ``generate()`` batches): for batch b, keys j < kv_starts[b]
        are masked too; each start must be <= its row's length (L without kv_lengths), and
        start == length masks every key. The causal mask keeps the original key indices.
    return_lse : bool
        Also return the row log-sum-exp of the scaled, masked scores (needed by the backward).
    out, lse : writable buffers or None
        Write the results there instead of new arrays (any strides: a B x N x H x M buffer
        transposed to B x H x N x M is written in place); passing lse implies return_lse.
        An output overlapping an input or another output is refused (ValueError).

    Returns
    -------
    out : numpy.ndarray, B x H x N x M, the inputs' dtype
    lse : numpy.ndarray, B x H x N (only when return_lse): ``log sum_j exp(scale q_i.k_j)``
        over the unmasked keys, -inf for a row with no unmasked key (whose out row is zero).

    Raises TypeError for unsupported or mixed dtypes, ValueError for wrong ranks, shapes,
    strides or options; the message names the argument.
    """
    dtype, qs = _tensor("q", q, 4)
    _, ks = _tensor("k", k, 4, dtype)
    _, vs = _tensor("v", v, 4, dtype)
    _check_qkv(qs, ks, vs)
    causal, scale, kv_lengths = _options(causal, scale, kv_lengths, qs[0])
    kv_starts = _key_array("kv_starts", kv_starts, qs[0])
    return_lse = return_lse or lse is not None
    out = _output(out, (qs[0], qs[1], qs[2], vs[3]), dtype)
    lse = _output(lse, (qs[0], qs[1], qs[2]), _lse_dtype(dtype)) if return_lse else None
    _ext.softmax_forward(q, k, v, out, lse, causal, scale, kv_lengths, kv_starts)
    return (out, lse) if return_lse else out


def softmax_attention_backward(q, k, v, out, lse, dout, *, causal=False, scale=None, kv_lengths=None,
                               kv_starts=None, dq=None, dk=None, dv=None):
    """Gradients of exact softmax attention.

    Given the inputs of :func:`softmax_attention`, its results ``out`` (B x H x N x M) and
    ``lse`` (B x H x N, from ``return_lse=True``), and ``dout`` = dLoss/dout (B x H x N x M),
    returns ``(dq, dk, dv)`` = dLoss/dq (B x H x N x D), dLoss/dk (B x Hk x L x D),
    dLoss/dv (B x Hk x L x M) as new NumPy arrays of the inputs' dtype. The options
    (causal -- bottom-right aligned, see :func:`softmax_attention` -- scale, kv_lengths,
    kv_starts) must be the forward's. Fully masked query rows get zero gradients; masked keys
    get zero dk, dv. ``dq=``, ``dk=``, ``dv=``: writable buffers (any strides) to write the
    gradients into instead of new arrays.

    Raises TypeError for unsupported or mixed dtypes, ValueError for wrong ranks, shapes,
    strides or options; the message names the argument.
    """
    dtype, qs = _tensor("q", q, 4)
    _, ks = _tensor("k", k, 4, dtype)
    _, vs = _tensor("v", v, 4, dtype)
    _check_qkv(qs, ks, vs)
    out_shape = (qs[0], qs[1], qs[2], vs[3])
    _, os_ = _tensor("out", out, 4, dtype)
    _check_exact("out", os_, out_shape, "(B, H, N, M)")
    _, ls = _tensor("lse", lse, 3, _lse_dtype(dtype), "q" if dtype != _FLOAT16 else "the lse of a float16 call")
    _check_exact("lse", ls, out_shape[:3], "(B, H, N)")
    _, ds = _tensor("dout", dout, 4, dtype)
    _check_exact("dout", ds, out_shape, "(B, H, N, M)")
    causal, scale, kv_lengths = _options(causal, scale, kv_lengths, qs[0])
    kv_starts = _key_array("kv_starts", kv_starts, qs[0])
    dq, dk, dv = _output(dq, qs, dtype), _output(dk, ks, dtype), _output(dv, vs, dtype)
    _ext.softmax_backward(q, k, v, out, lse, dout, dq, dk, dv, causal, scale, kv_lengths, kv_starts)
    return dq, dk, dv


def softmax_merge(out_a, lse_a, out_b, lse_b, *, out=None, lse=None):
    """Merges two partial softmax-attention results over disjoint key sets A and B.

    ``out_a, lse_a`` are :func:`softmax_attention`'s ``out`` (B x H x N x M) and ``lse``
    (B x H x N, ``return_lse=True``) of some queries against keys A; ``out_b, lse_b`` the same
    queries against keys B. Returns ``(out, lse)``, the result against A and B together::

        lse = log(exp(lse_a) + exp(lse_b))
        out = exp(lse_a - lse) * out_a + exp(lse_b - lse) * out_b

    Associative and commutative up to rounding: fold any number of partial results in any
    order (ring attention). A side whose lse is -inf saw no key and adds nothing (its out row is
    not read); a row that is -inf on both sides is 0 with lse -inf, never NaN. ``out=``,
    ``lse=``: writable buffers for the results, which may be ``out_a``/``lse_a`` or
    ``out_b``/``lse_b`` themselves (in place); any other overlap is refused (ValueError).

    Raises TypeError for unsupported or mixed dtypes, ValueError for shapes, an lse that is
    NaN or +inf, or overlaps; the message names the argument. Nothing is written on error.
    """
    dtype, os_ = _tensor("out_a", out_a, 4)
    _, ls = _tensor("lse_a", lse_a, 3, dtype, "out_a")
    _check_exact("lse_a", ls, os_[:3], "(B, H, N) of out_a")
    _, bs = _tensor("out_b", out_b, 4, dtype, "out_a")
    _check_exact("out_b", bs, os_, "(B, H, N, M) of out_a")
    _, ls = _tensor("lse_b", lse_b, 3, dtype, "out_a")
    _check_exact("lse_b", ls, os_[:3], "(B, H, N) of out_a")
    out = _output(out, os_, dtype)
    lse = _output(lse, os_[:3], dtype)
    _ext.softmax_merge(out_a, lse_a, out_b, lse_b, out, lse)
    return out, lse


# ---------------------------------------------------------------------------------------------
# Linear attention
# ---------------------------------------------------------------------------------------------

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


def _real(name, value):
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError("%s must be a real number, not %s" % (name, type(value).__name__))
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError("%s must be a real number, not %s" % (name, type(value).__name__)) from None


_PAIR = ("S", "z")  # linear attention's state; FAVOR+'s state gradient
_TRIPLE = ("S", "z", "c")  # FAVOR+'s scaled state


def _check_state_arity(name, value, labels):
    """Raises TypeError unless ``value`` is a tuple or list of len(labels) items."""
    if not isinstance(value, (tuple, list)) or len(value) != len(labels):
        raise TypeError("%s must be a %s (%s) of arrays, not %s"
                        % (name, "pair" if len(labels) == 2 else "triple", ", ".join(labels), type(value).__name__))


def _state_arrays(name, value, dtype, s_shape, labels, reference="q"):
    """Checks a state argument -- S (B x H x C x M) then z (and c) B x H x C, labelled by
    ``labels`` -- and returns it as a tuple."""
    _check_state_arity(name, value, labels)
    for index, (label, x) in enumerate(zip(labels, value)):
        what = "%s[%d] (%s)" % (name, index, label)
        if index == 0:
            _check_exact(what, _tensor(what, x, 4, dtype, reference)[1], s_shape, "(B, H, C, M)")
        else:
            _check_exact(what, _tensor(what, x, 3, dtype, reference)[1], s_shape[:3], "(B, H, C)")
    return tuple(value)


def _linear_setup(q, k, v, causal, feature_map, eps, kv_lengths, kv_starts):
    dtype, qs = _tensor("q", q, 4)
    _, ks = _tensor("k", k, 4, dtype)
    _, vs = _tensor("v", v, 4, dtype)
    _check_qkv(qs, ks, vs)
    causal, _, kv_lengths = _options(causal, None, kv_lengths, qs[0])
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
    dk = _np.empty(ks, dtype=dtype)
    dv = _np.empty(vs, dtype=dtype)
    _ext.linear_state_backward(k, v, gs, gz, dk, dv, ds0, dz0, fmap, kv_lengths, kv_starts)
    if initial_state is not None:
        return dk, dv, (ds0, dz0)
    return dk, dv


def _size(name, value):
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError("%s must be an int, not %s" % (name, type(value).__name__))
    return value.__index__()


def _decoder_dtype(dtype):
    """A decoder's dtype argument as a numpy dtype, float32 or float64."""
    try:
        np_dtype = _np.dtype(dtype)
    except TypeError:
        raise TypeError("dtype must be 'float32' or 'float64', not %r" % (dtype,)) from None
    if np_dtype not in (_np.dtype(_np.float32), _np.dtype(_np.float64)):
        raise TypeError("dtype must be 'float32' or 'float64', not %s" % np_dtype)
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
    dtype = property(lambda self: self._dtype, doc="numpy dtype of every array")

    def _state_copies(self):
        """New arrays (S B x H x C x M, then B x H x C ones) holding the state."""
        arrays = (_empty(self._s_shape, self._dtype),) + tuple(
            _empty(self._s_shape[:3], self._dtype) for _ in self._STATE[1:])
        self._get_state(*arrays)
        return arrays

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
    dtype : "float32" (default) or "float64": the dtype of every array passed and returned.

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
        np_dtype = _decoder_dtype(dtype)
        fmap = _feature_map(feature_map)
        eps = _real("eps", eps)
        code = 0 if np_dtype == _np.float32 else 1
        _check_int64(batch=batch, heads=heads, key_heads=key_heads, dim=dim, value_dim=value_dim)
        super().__init__(code, batch, heads, key_heads, dim, value_dim, fmap, eps)
        self._batch, self._heads, self._key_heads = batch, heads, key_heads
        self._dim, self._value_dim = dim, value_dim
        self._feature_map, self._eps, self._dtype = feature_map, eps, np_dtype
        self._out_shape = (batch, heads, value_dim)
        self._s_shape = (batch, heads, dim, value_dim)

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
        strides, read and updated in place (the decoder's own state is not touched). The
        same arithmetic as the decoder's own state, so the same bits: one decoder can serve
        many sequences, or a recurrent layer can pass its state in and out."""
        out = _empty(self._out_shape, self._dtype) if out is None else out
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
        return self._state_copies()

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
                                             str(self._dtype)))


_empty = _np.empty


# ---------------------------------------------------------------------------------------------
# FAVOR+ (Performer random features)
# ---------------------------------------------------------------------------------------------

#: Names and C codes (performer.h section 7).
_PROJECTION_KINDS = {"orthogonal": 0, "iid": 1}
_NORMS = {"chi": 0, "fixed": 1}
_FAVOR_FEATURES = {"positive": 0, "hyperbolic": 1, "trigonometric": 2, "relu": 3}


def _choice(name, value, table):
    names = ", ".join(repr(key) for key in table)
    if not isinstance(value, str):
        raise TypeError("%s must be a str (%s), not %s" % (name, names, type(value).__name__))
    try:
        return table[value]
    except KeyError:
        raise ValueError("%s must be one of %s, not %r" % (name, names, value)) from None


def _scale(scale):
    return None if scale is None else _real("scale", scale)


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
        """A projection whose W is ``W``: an m x D array (float32 or float64, finite; any
        buffer, any strides), copied. It has no generator: ``seed``, ``kind`` and ``norms``
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
    dtype, qs = _tensor("q", q, 4)
    _, ks = _tensor("k", k, 4, dtype)
    _, vs = _tensor("v", v, 4, dtype)
    _check_qkv(qs, ks, vs)
    projection = _projection_arg(projection)
    dim, num_features = projection._info()[:2]
    if qs[3] != dim:
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
                    out=None, final_state=None):
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
    out, final_state : writable buffers or None
        Write the output (and the final state, a triple, implying return_state) there instead
        of new arrays; any strides. Overlaps are refused.

    Returns
    -------
    out : numpy.ndarray, B x H x N x M, the inputs' dtype; ``(out, (S, z, c))`` when
    return_state.

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
    out = _output(out, (qs[0], qs[1], qs[2], vs[3]), dtype)
    _ext.favor_forward(q, k, v, projection, out, s0, z0, c0, sn, zn, cn, causal, code, scale, eps, relu_offset,
                       *keys)
    return (out, (sn, zn, cn)) if return_state else out


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
    dk = _np.empty(ks, dtype=dtype)
    dv = _np.empty(vs, dtype=dtype)
    _ext.favor_state_backward(k, v, projection, gs, gz, dk, dv, ds0, dz0, s0, z0, c0, code, scale, relu_offset,
                              *keys)
    if initial_state is not None:
        return dk, dv, (ds0, dz0)
    return dk, dv


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
    dtype : "float32" (default) or "float64"

    One decoder may be used by one thread at a time (a concurrent call raises RuntimeError).
    """

    def __init__(self, projection, batch, heads, value_dim, *, features="positive", scale=None, eps=0.0,
                 relu_offset=1e-3, dtype="float32"):
        projection = _projection_arg(projection)
        batch = _size("batch", batch)
        heads = _size("heads", heads)
        value_dim = _size("value_dim", value_dim)
        code = _choice("features", features, _FAVOR_FEATURES)
        np_dtype = _decoder_dtype(dtype)
        _check_int64(batch=batch, heads=heads, value_dim=value_dim)
        eps = _real("eps", eps)
        scale = _scale(scale)
        relu_offset = _real("relu_offset", relu_offset)
        super().__init__(projection, 0 if np_dtype == _np.float32 else 1, batch, heads, value_dim, code, scale, eps,
                         relu_offset)
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
        return self._step(q, k, v, _empty(self._out_shape, self._dtype) if out is None else out)

    def reset(self):
        """Empties the state (a new sequence)."""
        self._reset()

    @property
    def state(self):
        """(S~, z~, c): copies of the scaled state, S~ B x H x C x M, z~ and c B x H x C, with
        the mathematical state S = exp(c)[..., None] * S~, z = exp(c) * z~. c = -inf marks a
        feature no key has reached yet (relu: c = 0; trigonometric: one c per head). Assign a
        triple to replace it (see :meth:`set_state`)."""
        return self._state_copies()

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
                   self._eps, str(self._dtype)))



def set_num_threads(n):
    """Bounds the threads later calls use (the calling thread included) to ``n`` (1..1024);
    0 restores the default: the environment variable PERFORMER_NUM_THREADS, else the CPUs
    this process may run on. Raises ValueError for other values."""
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError("n must be an int, not %s" % type(n).__name__)
    _ext.set_num_threads(n.__index__())


def get_num_threads():
    """The number of threads calls use now."""
    return _ext.get_num_threads()


if hasattr(_ext, "kernel_isa"):

    def kernel_isa():
        """The instruction set of the kernels libperformer chose for this CPU at run time
        (performer_kernel_isa(), e.g. "avx2")."""
        return _ext.kernel_isa()

    __all__.append("kernel_isa")

if hasattr(_ext, "live_handle_count"):

    def live_handle_count():
        """The number of libperformer handles alive in the process: decoders and projections
        (LinearDecoder, FavorDecoder, FavorProjection objects not yet garbage-collected);
        performer_live_handle_count(). For leak checks."""
        return _ext.live_handle_count()

    __all__.append("live_handle_count")
