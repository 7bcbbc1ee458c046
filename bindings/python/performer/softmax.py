"""Exact softmax attention: forward, backward and the merge of partial results."""

from . import _performer as _ext
from ._common import (_FLOAT16, _check_exact, _checked_qkv, _empty, _key_array, _lse_dtype, _ndarray, _options,
                      _output, _qkv, _tensor)



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
    dtype, qs, _, vs = _qkv(q, k, v)
    causal, scale, kv_lengths = _options(causal, scale, kv_lengths, qs[0])
    if kv_starts is not None:
        kv_starts = _key_array("kv_starts", kv_starts, qs[0])
    return_lse = return_lse or lse is not None
    if out is None:
        out = _empty(qs[:3] + vs[3:], dtype)
    lse = _output(lse, qs[:3], _lse_dtype(dtype)) if return_lse else None
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
    dtype, qs, ks, vs = _qkv(q, k, v)
    out_shape = qs[:3] + vs[3:]
    if not (type(out) is _ndarray and type(lse) is _ndarray and type(dout) is _ndarray and out.dtype is dtype
            and dout.dtype is dtype and lse.dtype is _lse_dtype(dtype) and out.shape == out_shape
            and dout.shape == out_shape and lse.shape == out_shape[:3]):
        _check_backward_arguments(q, k, v, out, lse, dout)
    causal, scale, kv_lengths = _options(causal, scale, kv_lengths, qs[0])
    if kv_starts is not None:
        kv_starts = _key_array("kv_starts", kv_starts, qs[0])
    dq, dk, dv = _output(dq, qs, dtype), _output(dk, ks, dtype), _output(dv, vs, dtype)
    _ext.softmax_backward(q, k, v, out, lse, dout, dq, dk, dv, causal, scale, kv_lengths, kv_starts)
    return dq, dk, dv


def _check_backward_arguments(q, k, v, out, lse, dout):
    """Every check of the backward's tensors, in argument order, raising the first failure's
    message; the fast test in softmax_attention_backward covers the usual case."""
    dtype, qs, _, vs = _checked_qkv(q, k, v)
    out_shape = (qs[0], qs[1], qs[2], vs[3])
    _, os_ = _tensor("out", out, 4, dtype)
    _check_exact("out", os_, out_shape, "(B, H, N, M)")
    _, ls = _tensor("lse", lse, 3, _lse_dtype(dtype), "q" if dtype != _FLOAT16 else "the lse of a float16 call")
    _check_exact("lse", ls, out_shape[:3], "(B, H, N)")
    _, ds = _tensor("dout", dout, 4, dtype)
    _check_exact("dout", ds, out_shape, "(B, H, N, M)")


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

    float16 outs (computed in float32, each out element rounded once) take and give float32
    lses. Raises TypeError for unsupported or mixed dtypes, ValueError for shapes, an lse that is
    NaN or +inf, or overlaps; the message names the argument. Nothing is written on error.
    """
    dtype, os_ = _tensor("out_a", out_a, 4)
    # float16 outs come with float32 lses (as softmax_attention returns them).
    sd = _lse_dtype(dtype)
    ref = "out_a" if sd == dtype else "the lse of a float16 call"
    _, ls = _tensor("lse_a", lse_a, 3, sd, ref)
    _check_exact("lse_a", ls, os_[:3], "(B, H, N) of out_a")
    _, bs = _tensor("out_b", out_b, 4, dtype, "out_a")
    _check_exact("out_b", bs, os_, "(B, H, N, M) of out_a")
    _, ls = _tensor("lse_b", lse_b, 3, sd, ref)
    _check_exact("lse_b", ls, os_[:3], "(B, H, N) of out_a")
    out = _output(out, os_, dtype)
    lse = _output(lse, os_[:3], sd)
    _ext.softmax_merge(out_a, lse_a, out_b, lse_b, out, lse)
    return out, lse
