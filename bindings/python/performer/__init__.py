"""performer: exact softmax attention on the CPU (libperformer), forward and backward.

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

The computation runs without the GIL on the library's own threads (see set_num_threads).
"""

import sys as _sys

import numpy as _np

from . import _performer as _ext

__all__ = [
    "softmax_attention",
    "softmax_attention_backward",
    "set_num_threads",
    "get_num_threads",
    "__version__",
]

#: The version of the loaded libperformer.so (performer_version_string()).
__version__ = _ext.version_string()

_FLOAT_FORMATS = {"f": _np.dtype(_np.float32), "d": _np.dtype(_np.float64)}
_NATIVE_PREFIXES = "@=" + ("<" if _sys.byteorder == "little" else ">!")


def _format_name(fmt):
    try:
        return str(_np.dtype(fmt))
    except TypeError:
        return "format %r" % fmt


def _tensor(name, obj, ndim, dtype=None, reference="q"):
    """Returns (dtype, shape) of a buffer argument, raising TypeError/ValueError naming it."""
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
            raise TypeError("%s has dtype %s; expected float32 or float64 in native byte order"
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
    if kv_lengths is not None:
        lengths = _np.asarray(kv_lengths)
        if lengths.ndim != 1:
            raise ValueError("kv_lengths must be a sequence of B = %d ints, but it has shape %s"
                             % (batch, lengths.shape))
        if lengths.size == 0:
            lengths = lengths.astype(_np.int64)
        if lengths.dtype.kind not in "iu":
            raise TypeError("kv_lengths must hold ints, not %s" % lengths.dtype)
        if lengths.shape[0] != batch:
            raise ValueError("kv_lengths has %d entries but batch = %d" % (lengths.shape[0], batch))
        if lengths.dtype.kind == "u" and lengths.size and int(lengths.max()) > _np.iinfo(_np.int64).max:
            raise ValueError("kv_lengths holds a value beyond int64")
        kv_lengths = _np.ascontiguousarray(lengths, dtype=_np.int64)
    return causal, scale, kv_lengths


def softmax_attention(q, k, v, *, causal=False, scale=None, kv_lengths=None, return_lse=False):
    """Exact softmax attention: ``out = softmax(scale * q @ k^T + mask) @ v``.

    Parameters
    ----------
    q : buffer, B x H x N x D, float32 or float64
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
    return_lse : bool
        Also return the row log-sum-exp of the scaled, masked scores (needed by the backward).

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
    out = _np.empty((qs[0], qs[1], qs[2], vs[3]), dtype=dtype)
    lse = _np.empty((qs[0], qs[1], qs[2]), dtype=dtype) if return_lse else None
    _ext.softmax_forward(q, k, v, out, lse, causal, scale, kv_lengths)
    return (out, lse) if return_lse else out


def softmax_attention_backward(q, k, v, out, lse, dout, *, causal=False, scale=None, kv_lengths=None):
    """Gradients of exact softmax attention.

    Given the inputs of :func:`softmax_attention`, its results ``out`` (B x H x N x M) and
    ``lse`` (B x H x N, from ``return_lse=True``), and ``dout`` = dLoss/dout (B x H x N x M),
    returns ``(dq, dk, dv)`` = dLoss/dq (B x H x N x D), dLoss/dk (B x Hk x L x D),
    dLoss/dv (B x Hk x L x M) as new NumPy arrays of the inputs' dtype. The options
    (causal -- bottom-right aligned, see :func:`softmax_attention` -- scale, kv_lengths) must be
    the forward's. Fully masked query rows get zero gradients.

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
    _, ls = _tensor("lse", lse, 3, dtype)
    _check_exact("lse", ls, out_shape[:3], "(B, H, N)")
    _, ds = _tensor("dout", dout, 4, dtype)
    _check_exact("dout", ds, out_shape, "(B, H, N, M)")
    causal, scale, kv_lengths = _options(causal, scale, kv_lengths, qs[0])
    dq = _np.empty(qs, dtype=dtype)
    dk = _np.empty(ks, dtype=dtype)
    dv = _np.empty(vs, dtype=dtype)
    _ext.softmax_backward(q, k, v, out, lse, dout, dq, dk, dv, causal, scale, kv_lengths)
    return dq, dk, dv


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
