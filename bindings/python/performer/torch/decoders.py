"""Token-by-token causal decoders on tensors: performer.LinearDecoder / performer.FavorDecoder whose
steps take and return CPU tensors (raw views, no NumPy). Inference only: a step is not
differentiable (train with linear_attention / favor_attention and their states)."""

import torch

import performer as _performer
from performer import _common

from ._ops import projection_of
from ._tensors import MAKES_TENSORS as _MAKES_TENSORS
from ._tensors import view

__all__ = ["LinearDecoder", "FavorDecoder"]

_grad_enabled = torch.is_grad_enabled
_Tensor = torch.Tensor
_empty = torch.empty
_default_dtype = torch.get_default_dtype
#: Token dtypes: performer_dtype code, NumPy dtype (none for bfloat16), state dtype.
_DTYPES = {torch.float32: (0, "float32", torch.float32), torch.float64: (1, "float64", torch.float64),
           torch.float16: (2, "float16", torch.float32), torch.bfloat16: (3, None, torch.float32)}
_STATE_NAMES = ("state[0] (S)", "state[1] (z)", "state[2] (c)")


def _torch_dtype(dtype):
    if isinstance(dtype, str) and dtype in ("float32", "float64", "float16", "bfloat16"):
        return getattr(torch, dtype)
    if dtype in _DTYPES:
        return dtype
    raise TypeError("dtype must be torch.float32, torch.float64, torch.bfloat16 or torch.float16, not %r" % (dtype,))


def _no_grad_needed(*tensors):
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors if isinstance(t, torch.Tensor)):
        raise RuntimeError("decoder steps are not differentiable: use linear_attention / favor_attention "
                           "(initial_state=, return_state=) to train, or step under torch.no_grad()")


class _TensorDecoder:
    """What both decoders share: tensors in and out; the state as tensors."""

    def _dtype_code(self, dtype):
        dtype = _torch_dtype(dtype)
        code, name, state = _DTYPES[dtype]
        self._torch_dtype, self._torch_state_dtype = dtype, state
        self._state_dtype = None
        return code, name  # the NumPy layer's dtype, which these decoders do not use

    @property
    def dtype(self):
        """torch dtype of the tokens (q, k, v and the outputs)."""
        return self._torch_dtype

    @property
    def state_dtype(self):
        """torch dtype of the state: the token dtype, or torch.float32 for bfloat16 / float16
        tokens (docs/HALF_PRECISION.md)."""
        return self._torch_state_dtype

    def _tokens(self, q, k, v, out):
        if _grad_enabled() and (getattr(q, "requires_grad", False) or getattr(k, "requires_grad", False)
                                or getattr(v, "requires_grad", False)):
            _no_grad_needed(q, k, v)
        if type(q) is _Tensor and type(k) is _Tensor and type(v) is _Tensor and type(out) is _Tensor:
            return q, k, v, out  # the extension reads plain tensors itself (_tensors.py)
        return view("q", q), view("k", k), view("v", v), view("out", out)

    #: The extension steps on a caller's state itself (LinearDecoder; FAVOR+ has no such C call).
    _C_STATE_STEP = False

    def step(self, q, k, v, out=None, *, state=None):
        """One token (see the class): out, a new tensor or ``out``; ``state``: the caller's state
        tensors, read and updated in place, instead of the decoder's own."""
        if (type(q) is _Tensor and type(k) is _Tensor and type(v) is _Tensor
                and (type(out) is _Tensor or (out is None and _MAKES_TENSORS))
                and not (_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))):
            # The common step, one extension call: it reads plain tensors itself, makes out when
            # None (cheaper than torch.empty from here), and reads a caller's plain state tensors.
            if state is None:
                return self._tensor_step(q, k, v, out, None, None)
            if (self._C_STATE_STEP and type(state) in (tuple, list) and len(state) == 2
                    and type(state[0]) is _Tensor and type(state[1]) is _Tensor):
                return self._tensor_step(q, k, v, out, state[0], state[1])
        if out is None:
            # Sizes as separate ints, and no dtype argument when the dtype is PyTorch's default:
            # PyTorch parses those faster (~1.5 us and ~0.7 us a step).
            dtype = self._torch_dtype
            out = _empty(*self._out_shape) if dtype is _default_dtype() else _empty(*self._out_shape, dtype=dtype)
        views = self._tokens(q, k, v, out)
        if state is None:
            self._step(*views)
        else:
            _common._check_state_arity("state", state, self._STATE)
            self._step_on(views, [view(n, t) for n, t in zip(_STATE_NAMES, state)])
        return out

    def _state_tensors(self):
        return (torch.empty(self._s_shape, dtype=self._torch_state_dtype),) + tuple(
            torch.empty(self._s_shape[:3], dtype=self._torch_state_dtype) for _ in self._STATE[1:])

    @property
    def state(self):
        """The state as new tensors (S first; see the performer decoder's ``state``). Assign a
        tuple of tensors to replace it (copied)."""
        tensors = self._state_tensors()
        self._get_state(*(view(n, t) for n, t in zip(_STATE_NAMES, tensors)))
        return tensors

    @state.setter
    def state(self, value):
        _common._check_state_arity("state", value, self._STATE)
        self.set_state(*value)

    def set_state(self, *state):
        """Replaces the state with the given tensors (copied); see the performer decoder's set_state."""
        self._set_state(*(view(n, t) for n, t in zip(_STATE_NAMES, state)))


class LinearDecoder(_TensorDecoder, _performer.LinearDecoder):
    """:class:`performer.LinearDecoder` on CPU tensors: ``step(q, k, v, out=None, *, state=None)``
    with q B x H x D, k B x Hk x D, v B x Hk x M returns out (B x H x M, a new tensor or ``out``);
    ``state=(S, z)``: tensors the caller owns (B x H x D x M, B x H x D), read and updated in place,
    instead of the decoder's own state. ``prefill(q, k, v)`` runs a prompt (rank 4). dtype:
    torch.float32 (default), torch.float64, torch.bfloat16 or torch.float16: of the tokens; the
    state is float32 for bfloat16 / float16 tokens (:attr:`state_dtype`), each output the float32
    step's on the widened tokens rounded once."""

    def __init__(self, batch, heads, dim, value_dim, *, feature_map="elu+1", eps=1e-6, key_heads=None,
                 dtype=torch.float32):
        super().__init__(batch, heads, dim, value_dim, feature_map=feature_map, eps=eps, key_heads=key_heads,
                         dtype=dtype)

    _C_STATE_STEP = True

    def _step_on(self, views, state_views):
        self._step_state(*views, *state_views)

    def prefill(self, q, k, v):
        if not isinstance(q, torch.Tensor) or q.dim() != 4:
            view("q", q)
            raise ValueError("q must have 4 dimensions (B x H x N x D), but it has %d" % q.dim())
        out = torch.empty((q.shape[0], q.shape[1], q.shape[2], self._value_dim), dtype=self._torch_dtype)
        self._prefill(*self._tokens(q, k, v, out))
        return out


class FavorDecoder(_TensorDecoder, _performer.FavorDecoder):
    """:class:`performer.FavorDecoder` on CPU tensors. projection: a FavorProjection or W (an
    m x D tensor; copied at creation). ``step(q, k, v, out=None, *, state=None)``: q, k B x H x D,
    v B x H x M -> out B x H x M; ``state=(S~, z~, c)``: tensors the caller owns, loaded before the
    step and written back after it (the C ABI has no FAVOR+ step on a caller's state, so this
    copies the state twice, and leaves the decoder's own state equal to it). dtype: torch.float32 (default),
    torch.float64, torch.bfloat16 or torch.float16 (tokens; the state is float32 for the half dtypes)."""

    def __init__(self, projection, batch, heads, value_dim, *, features="positive", scale=None, eps=0.0,
                 relu_offset=1e-3, dtype=torch.float32):
        if isinstance(projection, torch.Tensor):
            projection = projection_of(projection)
        super().__init__(projection, batch, heads, value_dim, features=features, scale=scale, eps=eps,
                         relu_offset=relu_offset, dtype=dtype)

    def _step_on(self, views, state_views):
        self._set_state(*state_views)
        self._step(*views)
        self._get_state(*state_views)

