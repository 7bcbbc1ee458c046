"""libperformer's kernels as torch.library operators (namespace ``performer``): a CPU kernel that
passes raw views to the C extension, a fake (meta) kernel giving the output shapes for
torch.compile / torch.export, and the autograd formula, which calls the backward ops.

The ops are defined with torch.library.Library rather than torch.library.custom_op: the dispatcher
then calls the Python kernel directly, a few microseconds cheaper per call (benchmarks/overhead.py).
Outputs a call did not ask for (a state without return_state, an initial state's gradient without
an initial state) are empty tensors: a schema cannot return None.

Shapes and options are those of the ``performer`` functions; the library checks everything (and
writes nothing on error). Before allocating, a kernel checks only the ranks its output shapes are
read from.
"""

import torch
from torch.utils.weak import WeakIdKeyDictionary

from performer import _common
from performer import FavorProjection
from performer import _performer as _ext

from . import _autocast
from ._direct import plain_cpu
from ._functorch import backward_call, function
from ._outputs import new_output
from ._tensors import HALF, check_dtype, key_lists, view, wide_dtype

LIB = torch.library.Library("performer", "DEF")

LIB.define("softmax(Tensor q, Tensor k, Tensor v, bool causal, float? scale, Tensor? kv_lengths, "
           "Tensor? kv_starts) -> (Tensor, Tensor)")
LIB.define("softmax_backward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dout, bool causal, "
           "float? scale, Tensor? kv_lengths, Tensor? kv_starts) -> (Tensor, Tensor, Tensor)")
LIB.define("linear(Tensor q, Tensor k, Tensor v, Tensor? S0, Tensor? z0, bool causal, int feature_map, float eps, "
           "bool normalize, Tensor? kv_lengths, Tensor? kv_starts, bool return_state) -> (Tensor, Tensor, Tensor)")
LIB.define("linear_backward(Tensor q, Tensor k, Tensor v, Tensor dout, Tensor? S0, Tensor? z0, Tensor? dS, "
           "Tensor? dz, bool causal, int feature_map, float eps, bool normalize, Tensor? kv_lengths, "
           "Tensor? kv_starts) -> (Tensor, Tensor, Tensor, Tensor, Tensor)")
LIB.define("linear_state(Tensor k, Tensor v, Tensor? S0, Tensor? z0, int heads, int feature_map, "
           "Tensor? kv_lengths, Tensor? kv_starts) -> (Tensor, Tensor)")
LIB.define("linear_state_backward(Tensor k, Tensor v, Tensor dS, Tensor dz, bool initial_state, int feature_map, "
           "Tensor? kv_lengths, Tensor? kv_starts) -> (Tensor, Tensor, Tensor, Tensor)")
LIB.define("favor(Tensor q, Tensor k, Tensor v, Tensor W, Tensor? S0, Tensor? z0, Tensor? c0, bool causal, "
           "int features, float? scale, float eps, float relu_offset, Tensor? kv_lengths, Tensor? kv_starts, "
           "bool return_state) -> (Tensor, Tensor, Tensor, Tensor)")
LIB.define("favor_backward(Tensor q, Tensor k, Tensor v, Tensor dout, Tensor W, Tensor? S0, Tensor? z0, "
           "Tensor? c0, Tensor? dS, Tensor? dz, bool causal, int features, float? scale, float eps, "
           "float relu_offset, Tensor? kv_lengths, Tensor? kv_starts) -> (Tensor, Tensor, Tensor, Tensor, Tensor)")
LIB.define("favor_state(Tensor k, Tensor v, Tensor W, Tensor? S0, Tensor? z0, Tensor? c0, int heads, int features, "
           "float? scale, float relu_offset, Tensor? kv_lengths, Tensor? kv_starts) -> (Tensor, Tensor, Tensor)")
LIB.define("favor_state_backward(Tensor k, Tensor v, Tensor W, Tensor dS, Tensor dz, Tensor? S0, Tensor? z0, "
           "Tensor? c0, int features, float? scale, float relu_offset, Tensor? kv_lengths, Tensor? kv_starts) "
           "-> (Tensor, Tensor, Tensor, Tensor)")

ops = torch.ops.performer


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

_LAYOUTS = {4: "B x H x N x features", 3: "B x H x N", 2: "num_features x dim"}


def rank(name, tensor, ndim):
    """Raises ValueError unless tensor has ndim dimensions (checked before shapes are read)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError("%s must be a torch.Tensor, not %s" % (name, type(tensor).__name__))
    if tensor.dim() != ndim:
        raise ValueError("%s must have %d dimensions (%s), but it has %d (shape %s)"
                         % (name, ndim, _LAYOUTS[ndim], tensor.dim(), tuple(tensor.shape)))


_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
                torch.bfloat16: "bfloat16"}


def fake_checks(q, k, v, *others):
    """The library's checks a fake kernel can make without data, with its messages, so that
    torch.compile / torch.export reject at trace time what the CPU kernel would: one dtype for q,
    k, v and, for others ((name, tensor) pairs of states, None skipped), that dtype or, in a half
    call, float32; with q, the q/k/v shapes."""
    reference = ("q", q) if q is not None else ("k", k)
    dtype = reference[1].dtype
    for name, tensor in [("k", k), ("v", v)]:
        if tensor.dtype != dtype:
            raise TypeError("%s has dtype %s but %s has %s" % (name, _DTYPE_NAMES.get(tensor.dtype, tensor.dtype),
                                                              reference[0], _DTYPE_NAMES[dtype]))
    wide = wide_dtype(dtype)
    for name, tensor in others:
        if tensor is not None and tensor.dtype != wide:
            got = _DTYPE_NAMES.get(tensor.dtype, tensor.dtype)
            if wide == dtype:
                raise TypeError("%s has dtype %s but %s has %s" % (name, got, reference[0], _DTYPE_NAMES[dtype]))
            raise TypeError("%s has dtype %s but must be float32 (the state of a %s call)"
                            % (name, got, _DTYPE_NAMES[dtype]))
    if q is not None:
        _common._check_qkv(tuple(q.shape), tuple(k.shape), tuple(v.shape))


# The algorithms whose library functions take float16/bfloat16 (docs/HALF_PRECISION.md). The
# torch layer is dtype-generic (half tensors go zero-copy, states and lse are float32); an
# algorithm not listed here would be refused before anything is allocated.
LIBRARY_HALF = {"softmax", "linear", "favor"}
_ALGORITHMS = {"linear": "linear attention", "favor": "FAVOR+"}


def _half_gate(algorithm, name, tensor):
    """TypeError when tensor is half and the library has no half path for the algorithm yet."""
    if tensor.dtype in HALF and algorithm not in LIBRARY_HALF:
        raise TypeError("%s.dtype = %s is not supported by %s in this libperformer yet (float32 and float64 "
                        "only; docs/HALF_PRECISION.md)" % (name, _DTYPE_NAMES[tensor.dtype], _ALGORITHMS[algorithm]))


def _wide_empty(like, shape):
    """A float32 companion (lse, state) of a half tensor, else one of like's dtype."""
    return new_output(like, shape, torch.float32 if like.dtype in HALF else None)


def _views(names, tensors):
    """Raw views of optional tensors (None stays None)."""
    return [None if t is None else view(n, t) for n, t in zip(names, tensors)]


def _empty(like):
    return like.new_empty(0)


_grad_enabled = torch.is_grad_enabled
_any_requires_grad = torch._C._any_requires_grad


def register_autograd(name, backward, setup_context, cpu_kernel):
    """torch.library.register_autograd for op performer::name, plus a shortcut: a call that needs no
    gradient on plain CPU tensors runs cpu_kernel from the Autograd kernel itself. Through the
    dispatcher, register_autograd's kernel redispatches below autograd, a second Python kernel call
    with every argument converted again (about half of a tiny call's cost). Anything else -- a
    gradient, fake, functional or meta tensors, a mode -- takes register_autograd's own kernel,
    made by the same function register_autograd uses."""
    op = getattr(ops, name).default
    try:
        generic = torch._library.autograd.make_autograd_impl(op, torch._library.autograd.Info(backward, setup_context))
    except (AttributeError, TypeError):
        # A PyTorch whose private helper moved or changed: the public registration, without the
        # shortcut (correct, a few tens of microseconds slower per dispatcher call).
        torch.library.register_autograd("performer::" + name, backward, setup_context=setup_context, lib=LIB)
        return

    def kernel(keyset, *args):
        if not (_grad_enabled() and _any_requires_grad(*args)) and plain_cpu(args):
            return cpu_kernel(*args)
        return generic(keyset, *args)

    LIB.impl(name, kernel, "Autograd", with_keyset=True)


def favor_count(features, num_features):
    """C: features per head (2m for hyperbolic (1) and trigonometric (2), else m)."""
    return 2 * num_features if features in (1, 2) else num_features


# Projections made from W tensors, kept per tensor object and remade when its memory or
# version changes: a call costs no copy of W (the C ABI takes W through a projection handle).
_projections = WeakIdKeyDictionary()


def projection_of(W):
    """A performer.FavorProjection holding the m x D tensor W (float32/float64, finite)."""
    rank("W", W, 2)
    try:
        key = (W._version, W.data_ptr(), W.shape, W.stride(), W.dtype)
    except RuntimeError:  # an inference tensor has no version: no caching
        key = None
    entry = _projections.get(W) if key is not None else None
    if entry is not None and entry[0] == key:
        return entry[1]
    if W.shape[0] < 1 or W.shape[1] < 1:
        raise ValueError("W has shape %s: need at least one row (num_features) and one column (dim)"
                         % (tuple(W.shape),))
    address, shape, strides, code, _ = view("W", W)
    projection = FavorProjection.__new__(FavorProjection)
    projection._create_from_matrix((address, (1, 1) + tuple(shape), (0, 0) + tuple(strides), code, False))
    if key is not None:
        _projections[W] = (key, projection)
    return projection


# ---------------------------------------------------------------------------------------------
# Exact softmax attention
# ---------------------------------------------------------------------------------------------

def softmax_shapes(q, k, v):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        rank("q", q, 4)
        rank("k", k, 4)
        rank("v", v, 4)
    check_dtype("q", q)
    B, H, N, _ = q.shape  # plain tuples: slicing a torch.Size costs microseconds
    return (B, H, N, v.shape[3]), (B, H, N)


def softmax_forward(q, k, v, causal, scale, kv_lengths, kv_starts, with_lse):
    """(out, lse) of softmax attention; lse is None unless with_lse (the direct eager path's saving).
    The tensors go to the extension as they are: it reads them (_tensors.py, register)."""
    if q.dim() != 4 or v.dim() != 4:
        view("q", q), view("k", k), view("v", v)  # a dtype or device error first, as the extension
        softmax_shapes(q, k, v)  # raises
    B, H, N, _ = q.shape
    out = new_output(q, (B, H, N, v.shape[3]))
    lse = _wide_empty(q, (B, H, N)) if with_lse else None
    kv_lengths, kv_starts = key_lists(kv_lengths, kv_starts)
    _ext.softmax_forward(q, k, v, out, lse, causal, scale, kv_lengths, kv_starts)
    return out, lse


@torch.library.impl(LIB, "softmax", "CPU")
def _softmax(q, k, v, causal, scale, kv_lengths, kv_starts):
    return softmax_forward(q, k, v, causal, scale, kv_lengths, kv_starts, True)


@torch.library.register_fake("performer::softmax", lib=LIB)
def _softmax_fake(q, k, v, causal, scale, kv_lengths, kv_starts):
    out_shape, lse_shape = softmax_shapes(q, k, v)
    fake_checks(q, k, v)
    return q.new_empty(out_shape), _wide_empty(q, lse_shape)


@torch.library.impl(LIB, "softmax_backward", "CPU")
def softmax_backward_kernel(q, k, v, out, lse, dout, causal, scale, kv_lengths, kv_starts):
    rank("q", q, 4), rank("k", k, 4), rank("v", v, 4)
    dq, dk, dv = new_output(q, q.shape), new_output(q, k.shape), new_output(q, v.shape)
    _ext.softmax_backward(q, k, v, out, lse, dout, dq, dk, dv, causal, scale, *key_lists(kv_lengths, kv_starts))
    return dq, dk, dv


@torch.library.register_fake("performer::softmax_backward", lib=LIB)
def _softmax_backward_fake(q, k, v, out, lse, dout, causal, scale, kv_lengths, kv_starts):
    return q.new_empty(q.shape), q.new_empty(k.shape), q.new_empty(v.shape)


def _softmax_setup(ctx, inputs, output):
    q, k, v, causal, scale, kv_lengths, kv_starts = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, kv_lengths, kv_starts)
    ctx.options = (causal, scale)
    ctx.mark_non_differentiable(lse)


def _softmax_grad(ctx, dout, _dlse):
    q, k, v, out, lse, kv_lengths, kv_starts = ctx.saved_tensors
    causal, scale = ctx.options
    dq, dk, dv = backward_call(ops.softmax_backward, q, k, v, out, lse, dout, causal, scale, kv_lengths,
                               kv_starts)
    return dq, dk, dv, None, None, None, None


register_autograd("softmax", _softmax_grad, _softmax_setup, _softmax)


# ---------------------------------------------------------------------------------------------
# Linear attention
# ---------------------------------------------------------------------------------------------

def linear_shapes(q, k, v):
    """(out shape, state S shape) of linear attention."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        rank("q", q, 4)
        rank("k", k, 4)
        rank("v", v, 4)
    check_dtype("q", q)
    _half_gate("linear", "q", q)
    B, H, N, D = q.shape
    return (B, H, N, v.shape[3]), (B, H, D, v.shape[3])


def linear_forward(q, k, v, S0, z0, causal, feature_map, eps, normalize, kv_lengths, kv_starts, return_state):
    """(out, S, z) of linear attention; S, z are None without return_state (the direct eager path's
    saving; the op returns empty tensors instead). As softmax_forward: the extension checks the
    dtypes (linear attention takes every dtype it knows) and the shapes (~3 us less per call)."""
    if q.dim() != 4 or v.dim() != 4:
        view("q", q), view("k", k), view("v", v)  # a dtype or device error first, as the extension
        linear_shapes(q, k, v)  # raises
    B, H, N, D = q.shape
    M = v.shape[3]
    out = new_output(q, (B, H, N, M))
    S = z = None
    if return_state:
        S, z = _wide_empty(q, (B, H, D, M)), _wide_empty(q, (B, H, D))
    state = (None, None) if S0 is None and z0 is None else _views(("initial_state[0] (S)", "initial_state[1] (z)"),
                                                                   (S0, z0))
    final = (None, None) if S is None else _views(("final_state[0] (S)", "final_state[1] (z)"), (S, z))
    kv_lengths, kv_starts = key_lists(kv_lengths, kv_starts)
    _ext.linear_forward(q, k, v, out, *state, *final, None, causal, feature_map, eps, normalize, kv_lengths,
                        kv_starts)
    return out, S, z


@torch.library.impl(LIB, "linear", "CPU")
def _linear(q, k, v, S0, z0, causal, feature_map, eps, normalize, kv_lengths, kv_starts, return_state):
    out, S, z = linear_forward(q, k, v, S0, z0, causal, feature_map, eps, normalize, kv_lengths, kv_starts,
                               return_state)
    return (out, S, z) if return_state else (out, _empty(q), _empty(q))


@torch.library.register_fake("performer::linear", lib=LIB)
def _linear_fake(q, k, v, S0, z0, causal, feature_map, eps, normalize, kv_lengths, kv_starts, return_state):
    out_shape, s_shape = linear_shapes(q, k, v)
    fake_checks(q, k, v, ("initial_state[0] (S)", S0), ("initial_state[1] (z)", z0))
    if return_state:
        return q.new_empty(out_shape), _wide_empty(q, s_shape), _wide_empty(q, s_shape[:3])
    return q.new_empty(out_shape), _empty(q), _empty(q)


def _linear_grads_like(q, k, v, S0):
    rank("q", q, 4), rank("k", k, 4), rank("v", v, 4)
    grads = [new_output(q, q.shape), new_output(q, k.shape), new_output(q, v.shape)]
    if S0 is None:
        return grads + [_empty(q), _empty(q)]
    rank("initial_state[0] (S)", S0, 4)
    return grads + [_wide_empty(q, S0.shape), _wide_empty(q, S0.shape[:3])]


@torch.library.impl(LIB, "linear_backward", "CPU")
def _linear_backward(q, k, v, dout, S0, z0, dS, dz, causal, feature_map, eps, normalize, kv_lengths, kv_starts):
    views = [view("q", q), view("k", k), view("v", v), view("dout", dout)]
    state = _views(("initial_state[0] (S)", "initial_state[1] (z)", "dstate[0] (dS)", "dstate[1] (dz)"),
                   (S0, z0, dS, dz))
    grads = _linear_grads_like(q, k, v, S0)
    outs = _views(("dq", "dk", "dv", "dS0", "dz0"), grads if S0 is not None else grads[:3] + [None, None])
    _ext.linear_backward(*views, *outs[:3], *state, *outs[3:], causal, feature_map, eps, normalize,
                         *key_lists(kv_lengths, kv_starts))
    return tuple(grads)


@torch.library.register_fake("performer::linear_backward", lib=LIB)
def _linear_backward_fake(q, k, v, dout, S0, z0, dS, dz, causal, feature_map, eps, normalize, kv_lengths, kv_starts):
    return tuple(_linear_grads_like(q, k, v, S0))


def _linear_setup(ctx, inputs, output):
    q, k, v, S0, z0, causal, feature_map, eps, normalize, kv_lengths, kv_starts, return_state = inputs
    ctx.save_for_backward(q, k, v, S0, z0, kv_lengths, kv_starts)
    ctx.options = (causal, feature_map, eps, normalize, return_state)


def _linear_grad(ctx, dout, dS, dz):
    q, k, v, S0, z0, kv_lengths, kv_starts = ctx.saved_tensors
    causal, feature_map, eps, normalize, return_state = ctx.options
    if not return_state:
        dS = dz = None
    dq, dk, dv, dS0, dz0 = backward_call(ops.linear_backward, q, k, v, dout, S0, z0, dS, dz, causal, feature_map,
                                         eps, normalize, kv_lengths, kv_starts)
    if S0 is None:
        dS0 = dz0 = None
    return (dq, dk, dv, dS0, dz0) + (None,) * 7


register_autograd("linear", _linear_grad, _linear_setup, _linear)


def _linear_state_shape(k, v, heads):
    rank("k", k, 4)
    rank("v", v, 4)
    check_dtype("k", k)
    _half_gate("linear", "k", k)
    return (k.shape[0], heads, k.shape[3], v.shape[3])


@torch.library.impl(LIB, "linear_state", "CPU")
def linear_state_forward(k, v, S0, z0, heads, feature_map, kv_lengths, kv_starts):
    views = [view("k", k), view("v", v)]
    s_shape = _linear_state_shape(k, v, heads)
    S, z = _wide_empty(k, s_shape), _wide_empty(k, s_shape[:3])
    state = _views(("initial_state[0] (S)", "initial_state[1] (z)"), (S0, z0))
    _ext.linear_state(*views, *state, view("S", S), view("z", z), feature_map, *key_lists(kv_lengths, kv_starts))
    return S, z


@torch.library.register_fake("performer::linear_state", lib=LIB)
def _linear_state_fake(k, v, S0, z0, heads, feature_map, kv_lengths, kv_starts):
    s_shape = _linear_state_shape(k, v, heads)
    fake_checks(None, k, v, ("initial_state[0] (S)", S0), ("initial_state[1] (z)", z0))
    return _wide_empty(k, s_shape), _wide_empty(k, s_shape[:3])


def _state_grads_like(k, v, dS, initial_state):
    rank("k", k, 4), rank("v", v, 4), rank("dS", dS, 4)
    grads = [new_output(k, k.shape), new_output(k, v.shape)]
    if initial_state:
        return grads + [_wide_empty(k, dS.shape), _wide_empty(k, dS.shape[:3])]
    return grads + [_empty(k), _empty(k)]


@torch.library.impl(LIB, "linear_state_backward", "CPU")
def linear_state_backward_kernel(k, v, dS, dz, initial_state, feature_map, kv_lengths, kv_starts):
    views = [view("k", k), view("v", v), view("dS", dS), view("dz", dz)]
    grads = _state_grads_like(k, v, dS, initial_state)
    outs = _views(("dk", "dv", "dS0", "dz0"), grads if initial_state else grads[:2] + [None, None])
    _ext.linear_state_backward(*views, *outs, feature_map, *key_lists(kv_lengths, kv_starts))
    return tuple(grads)


@torch.library.register_fake("performer::linear_state_backward", lib=LIB)
def _linear_state_backward_fake(k, v, dS, dz, initial_state, feature_map, kv_lengths, kv_starts):
    return tuple(_state_grads_like(k, v, dS, initial_state))


def _linear_state_setup(ctx, inputs, output):
    k, v, S0, z0, heads, feature_map, kv_lengths, kv_starts = inputs
    ctx.save_for_backward(k, v, kv_lengths, kv_starts)
    ctx.options = (S0 is not None, feature_map)


def _linear_state_grad(ctx, dS, dz):
    k, v, kv_lengths, kv_starts = ctx.saved_tensors
    initial_state, feature_map = ctx.options
    dk, dv, dS0, dz0 = backward_call(ops.linear_state_backward, k, v, dS, dz, initial_state, feature_map,
                                     kv_lengths, kv_starts)
    if not initial_state:
        dS0 = dz0 = None
    return dk, dv, dS0, dz0, None, None, None, None


register_autograd("linear_state", _linear_state_grad, _linear_state_setup, linear_state_forward)


# ---------------------------------------------------------------------------------------------
# FAVOR+
# ---------------------------------------------------------------------------------------------

_TRIPLE = ("initial_state[0] (S)", "initial_state[1] (z)", "initial_state[2] (c)")


def _rows(W):
    """m of W, or of a FavorProjection (the direct eager path passes the caller's projection)."""
    if isinstance(W, FavorProjection):
        return W.num_features
    rank("W", W, 2)
    return W.shape[0]


def _projection(W):
    return W if isinstance(W, FavorProjection) else projection_of(W)


def favor_shapes(q, k, v, W, features):
    """(out shape, state S shape) of FAVOR+ attention."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        rank("q", q, 4)
        rank("k", k, 4)
        rank("v", v, 4)
    check_dtype("q", q)
    _half_gate("favor", "q", q)
    B, H, N, _ = q.shape
    M = v.shape[3]
    return (B, H, N, M), (B, H, favor_count(features, _rows(W)), M)


def favor_forward(q, k, v, W, S0, z0, c0, causal, features, scale, eps, relu_offset, kv_lengths, kv_starts, return_state):
    """(out, S, z, c) of FAVOR+ attention; the state is None without return_state (the direct eager
    path's saving; the op returns empty tensors instead)."""
    out_shape, s_shape = favor_shapes(q, k, v, W, features)
    projection = _projection(W)
    out = new_output(q, out_shape)
    if return_state:
        final = (_wide_empty(q, s_shape), _wide_empty(q, s_shape[:3]), _wide_empty(q, s_shape[:3]))
        final_views = _views(("final_state[0] (S)", "final_state[1] (z)", "final_state[2] (c)"), final)
    else:
        final = final_views = (None, None, None)
    state = (None, None, None) if S0 is None and z0 is None and c0 is None else _views(_TRIPLE, (S0, z0, c0))
    kv_lengths, kv_starts = key_lists(kv_lengths, kv_starts)
    _ext.favor_forward(q, k, v, projection, out, *state, *final_views, causal, features, scale, eps, relu_offset,
                       kv_lengths, kv_starts)
    return (out,) + final


@torch.library.impl(LIB, "favor", "CPU")
def _favor(q, k, v, W, S0, z0, c0, causal, features, scale, eps, relu_offset, kv_lengths, kv_starts, return_state):
    result = favor_forward(q, k, v, W, S0, z0, c0, causal, features, scale, eps, relu_offset, kv_lengths, kv_starts,
                           return_state)
    return result if return_state else (result[0], _empty(q), _empty(q), _empty(q))


def _fake_dim(name, x, W):
    if x.shape[3] != W.shape[1]:
        raise ValueError("%s.shape[3] = %d but projection.dim = %d" % (name, x.shape[3], W.shape[1]))


@torch.library.register_fake("performer::favor", lib=LIB)
def _favor_fake(q, k, v, W, S0, z0, c0, causal, features, scale, eps, relu_offset, kv_lengths, kv_starts,
                return_state):
    out_shape, s_shape = favor_shapes(q, k, v, W, features)
    fake_checks(q, k, v, *zip(_TRIPLE, (S0, z0, c0)))
    _fake_dim("q", q, W)
    if return_state:
        state = _wide_empty(q, s_shape), _wide_empty(q, s_shape[:3]), _wide_empty(q, s_shape[:3])
        return (q.new_empty(out_shape),) + state
    return q.new_empty(out_shape), _empty(q), _empty(q), _empty(q)


def _favor_grads_like(q, k, v, S0):
    return _linear_grads_like(q, k, v, S0)


@torch.library.impl(LIB, "favor_backward", "CPU")
def _favor_backward(q, k, v, dout, W, S0, z0, c0, dS, dz, causal, features, scale, eps, relu_offset, kv_lengths,
                    kv_starts):
    views = [view("q", q), view("k", k), view("v", v), view("dout", dout)]
    projection = projection_of(W)
    grads = _favor_grads_like(q, k, v, S0)
    outs = _views(("dq", "dk", "dv", "dS0", "dz0"), grads if S0 is not None else grads[:3] + [None, None])
    _ext.favor_backward(*views, projection, *outs[:3], *_views(_TRIPLE, (S0, z0, c0)),
                        *_views(("dstate[0] (dS)", "dstate[1] (dz)"), (dS, dz)), *outs[3:], causal, features, scale,
                        eps, relu_offset, *key_lists(kv_lengths, kv_starts))
    return tuple(grads)


@torch.library.register_fake("performer::favor_backward", lib=LIB)
def _favor_backward_fake(q, k, v, dout, W, S0, z0, c0, dS, dz, causal, features, scale, eps, relu_offset,
                         kv_lengths, kv_starts):
    return tuple(_favor_grads_like(q, k, v, S0))


def _favor_setup(ctx, inputs, output):
    (q, k, v, W, S0, z0, c0, causal, features, scale, eps, relu_offset, kv_lengths, kv_starts,
     return_state) = inputs
    # W itself is saved: a redraw assigns a new tensor, so the gradient is taken with this W.
    ctx.save_for_backward(q, k, v, W, S0, z0, c0, kv_lengths, kv_starts)
    ctx.options = (causal, features, scale, eps, relu_offset, return_state)
    ctx.mark_non_differentiable(output[3])


def _favor_grad(ctx, dout, dS, dz, _dc):
    q, k, v, W, S0, z0, c0, kv_lengths, kv_starts = ctx.saved_tensors
    causal, features, scale, eps, relu_offset, return_state = ctx.options
    if not return_state:
        dS = dz = None
    dq, dk, dv, dS0, dz0 = backward_call(ops.favor_backward, q, k, v, dout, W, S0, z0, c0, dS, dz, causal, features,
                                         scale, eps, relu_offset, kv_lengths, kv_starts)
    if S0 is None:
        dS0 = dz0 = None
    return (dq, dk, dv, None, dS0, dz0) + (None,) * 9


register_autograd("favor", _favor_grad, _favor_setup, _favor)


def _favor_state_shape(k, v, W, heads, features):
    rank("k", k, 4)
    rank("v", v, 4)
    check_dtype("k", k)
    _half_gate("favor", "k", k)
    return (k.shape[0], heads, favor_count(features, _rows(W)), v.shape[3])


@torch.library.impl(LIB, "favor_state", "CPU")
def favor_state_forward(k, v, W, S0, z0, c0, heads, features, scale, relu_offset, kv_lengths, kv_starts):
    views = [view("k", k), view("v", v)]
    s_shape = _favor_state_shape(k, v, W, heads, features)
    projection = _projection(W)
    S, z, c = _wide_empty(k, s_shape), _wide_empty(k, s_shape[:3]), _wide_empty(k, s_shape[:3])
    _ext.favor_state(*views, projection, *_views(_TRIPLE, (S0, z0, c0)), view("S", S), view("z", z), view("c", c),
                     features, scale, relu_offset, *key_lists(kv_lengths, kv_starts))
    return S, z, c


@torch.library.register_fake("performer::favor_state", lib=LIB)
def _favor_state_fake(k, v, W, S0, z0, c0, heads, features, scale, relu_offset, kv_lengths, kv_starts):
    s_shape = _favor_state_shape(k, v, W, heads, features)
    fake_checks(None, k, v, *zip(_TRIPLE, (S0, z0, c0)))
    _fake_dim("k", k, W)
    return _wide_empty(k, s_shape), _wide_empty(k, s_shape[:3]), _wide_empty(k, s_shape[:3])


@torch.library.impl(LIB, "favor_state_backward", "CPU")
def favor_state_backward_kernel(k, v, W, dS, dz, S0, z0, c0, features, scale, relu_offset, kv_lengths, kv_starts):
    """W: a tensor, or the FavorProjection holding it (the eager autograd.Function's)."""
    views = [view("k", k), view("v", v)]
    projection = _projection(W)
    grads = _state_grads_like(k, v, dS, S0 is not None)
    outs = _views(("dk", "dv", "dS0", "dz0"), grads if S0 is not None else grads[:2] + [None, None])
    _ext.favor_state_backward(*views, projection, view("dS", dS), view("dz", dz), *outs,
                              *_views(_TRIPLE, (S0, z0, c0)), features, scale, relu_offset,
                              *key_lists(kv_lengths, kv_starts))
    return tuple(grads)


@torch.library.register_fake("performer::favor_state_backward", lib=LIB)
def _favor_state_backward_fake(k, v, W, dS, dz, S0, z0, c0, features, scale, relu_offset, kv_lengths, kv_starts):
    return tuple(_state_grads_like(k, v, dS, S0 is not None))


def _favor_state_setup(ctx, inputs, output):
    k, v, W, S0, z0, c0, heads, features, scale, relu_offset, kv_lengths, kv_starts = inputs
    ctx.save_for_backward(k, v, W, S0, z0, c0, kv_lengths, kv_starts)
    ctx.options = (features, scale, relu_offset)
    ctx.mark_non_differentiable(output[2])


def _favor_state_grad(ctx, dS, dz, _dc):
    k, v, W, S0, z0, c0, kv_lengths, kv_starts = ctx.saved_tensors
    features, scale, relu_offset = ctx.options
    dk, dv, dS0, dz0 = backward_call(ops.favor_state_backward, k, v, W, dS, dz, S0, z0, c0, features, scale,
                                     relu_offset, kv_lengths, kv_starts)
    if S0 is None:
        dS0 = dz0 = None
    return (dk, dv, None, dS0, dz0) + (None,) * 7


register_autograd("favor_state", _favor_state_grad, _favor_state_setup, favor_state_forward)


# ---------------------------------------------------------------------------------------------
# The backward ops are not differentiable: an explicit error, not PyTorch's fallback (which warns
# and returns wrong second derivatives).
# ---------------------------------------------------------------------------------------------

def _no_double_backward(name):
    def setup(ctx, inputs, output):
        pass

    def backward(ctx, *grads):
        raise RuntimeError("performer::%s is not differentiable: performer.torch gives first derivatives only "
                           "(no double backward, no create_graph=True through its ops)" % name)

    torch.library.register_autograd("performer::" + name, backward, setup_context=setup, lib=LIB)


for _name in ("softmax_backward", "linear_backward", "linear_state_backward", "favor_backward",
              "favor_state_backward"):
    _no_double_backward(_name)


# ---------------------------------------------------------------------------------------------
# torch.func: the forward ops as functorch-compatible autograd.Functions (see _functorch.py),
# and torch.autocast("cpu") (see _autocast.py).
# ---------------------------------------------------------------------------------------------

SOFTMAX = function("PerformerSoftmax", ops.softmax, _softmax_setup, _softmax_grad)
LINEAR = function("PerformerLinear", ops.linear, _linear_setup, _linear_grad)
LINEAR_STATE = function("PerformerLinearState", ops.linear_state, _linear_state_setup, _linear_state_grad)
FAVOR = function("PerformerFavor", ops.favor, _favor_setup, _favor_grad)
FAVOR_STATE = function("PerformerFavorState", ops.favor_state, _favor_state_setup, _favor_state_grad)

_autocast.register(LIB, "softmax", _autocast.lower, 3)
_autocast.register(LIB, "linear", _autocast.widen, 5)
_autocast.register(LIB, "linear_state", _autocast.widen, 4)
_autocast.register(LIB, "favor", _autocast.widen, 7)
_autocast.register(LIB, "favor_state", _autocast.widen, 6)
