"""Argument handling the algorithms share: buffer arguments (dtype, rank, shape), shape checks
made before results are allocated, key arrays, options, outputs and state tuples."""

import sys as _sys
from math import prod as _prod

import numpy as _np

from . import _performer as _ext

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
_ndarray = _np.ndarray
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


def _qkv(q, k, v):
    """(dtype, q's shape, k's shape, v's shape) of q, k, v: what allocating the results needs.

    One validation: when q, k and v are NumPy arrays of one library dtype and rank 4 (a call's
    usual case) nothing else is checked here -- the library checks the shapes against each other
    and raises the same messages as _check_qkv. Anything else takes the full checks, whose
    messages name the argument, before anything is allocated."""
    if type(q) is _ndarray and type(k) is _ndarray and type(v) is _ndarray:
        dtype = q.dtype
        if ((dtype is _FLOAT32 or dtype is _FLOAT64 or dtype is _FLOAT16) and k.dtype is dtype and v.dtype is dtype
                and q.ndim == 4 and k.ndim == 4 and v.ndim == 4):
            return dtype, q.shape, k.shape, v.shape
    return _checked_qkv(q, k, v)


def _checked_qkv(q, k, v):
    """_qkv's full checks (also the first checks of a call whose other arguments fail a fast test,
    so that errors keep their argument order)."""
    dtype, qs = _tensor("q", q, 4)
    _, ks = _tensor("k", k, 4, dtype)
    _, vs = _tensor("v", v, 4, dtype)
    _check_qkv(qs, ks, vs)
    return dtype, qs, ks, vs


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
    return causal, scale, None if kv_lengths is None else _key_array("kv_lengths", kv_lengths, batch)


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


# Outputs of at least this many bytes take recycled memory (_output_pool.c): the operating system
# zeroes a fresh mapping page by page on the kernel's first write, 2-3 ms of a 15 ms call for a
# 32 MiB output; smaller ones come from the C library's heap, which recycles them itself.
_RECYCLED_OUTPUT_BYTES = 4 << 20


def _empty(shape, dtype, _small=_RECYCLED_OUTPUT_BYTES, _huge=_sys.maxsize, _np_empty=_np.empty, _prod=_prod):
    """A new C-contiguous array of `shape` (a tuple) and `dtype` (a numpy.dtype), uninitialized:
    a large one over memory a dead output left (performer.set_output_cache_limit). (The defaults
    are locals: a tiny call allocates its outputs here, ~0.2 us each.)"""
    nbytes = _prod(shape) * dtype.itemsize
    if nbytes < _small or nbytes >= _huge:  # beyond sys.maxsize: NumPy's own error
        return _np_empty(shape, dtype)
    return _np.asarray(_ext._output_block(tuple(shape), dtype.str, nbytes))


def _output(given, shape, dtype):
    """A new array of `shape` and `dtype` when `given` is None, else `given` itself: a caller's
    buffer (any strides, e.g. a B x N x H x M array seen as B x H x N x M), which the library
    checks (shape, dtype, writability, overlaps) before it writes anything."""
    return _empty(shape, dtype) if given is None else given


def _outputs(name, given, shapes, dtype, labels):
    """`_output` for a tuple of outputs (a state): new arrays, or the caller's tuple."""
    if given is None:
        return tuple(_empty(shape, dtype) for shape in shapes)
    _check_state_arity(name, given, labels)
    return tuple(given)


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


def _size(name, value):
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError("%s must be an int, not %s" % (name, type(value).__name__))
    return value.__index__()


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

