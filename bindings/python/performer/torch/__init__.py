"""performer.torch: libperformer's attention kernels on PyTorch tensors, differentiable, as
torch.library operators.

Needs PyTorch (an optional dependency of the ``performer`` package); importing this module
without it raises ImportError.

Tensors must be on the CPU, strided, with dtype float32 or float64 (exact softmax attention also
float16 and bfloat16: half storage, float32 arithmetic, lse float32) and any strides: their data
pointer, shape and strides go to the C library directly (no NumPy, no copy), and results are new
tensors. Under ``torch.autocast("cpu")`` softmax attention casts as scaled_dot_product_attention
does; the public functions work under torch.func (grad, vjp, jacrev, vmap). Every kernel is an
operator of the ``performer`` namespace (``torch.ops.performer.softmax``, ``linear``,
``linear_state``, ``favor``, ``favor_state`` and their ``*_backward``) with a fake (meta) kernel
and its autograd formula, so ``torch.compile(fullgraph=True)`` and ``torch.export`` see one op
per call. See docs/PYTORCH.md.

Shapes are the ``performer`` package's, which are also those of
``torch.nn.functional.scaled_dot_product_attention``::

    q    B x H  x N x D      (N query positions)
    k    B x Hk x L x D      (L key positions; Hk divides H: grouped-query attention,
    v    B x Hk x L x M       query head h reads key/value head h // (H // Hk))
    out  B x H  x N x M

Causal masking is bottom-right aligned: query i sees key j iff j <= i + (L - N). PyTorch's
``scaled_dot_product_attention(is_causal=True)`` is top-left aligned (j <= i); the two agree
only when N == L.

Errors in the arguments raise TypeError/ValueError naming the argument (the library's messages);
a tensor that is not on the CPU, not strided, or of another dtype raises TypeError saying which.
"""

try:
    import torch as _torch  # noqa: F401
except ImportError as _error:
    raise ImportError(
        "performer.torch needs PyTorch, which is not installed (%s). Install it (for example "
        "`pip install torch`), or use the NumPy functions in `performer` directly." % _error
    ) from _error

from . import _ops  # noqa: F401  (registers the torch.ops.performer operators)
from .decoders import FavorDecoder, LinearDecoder
from .favor import favor_attention, favor_state
from .linear import linear_attention, linear_state
from .modules import FavorAttention, LinearAttention, SoftmaxAttention
from .softmax import softmax_attention

__all__ = [
    "softmax_attention",
    "linear_attention",
    "linear_state",
    "favor_attention",
    "favor_state",
    "SoftmaxAttention",
    "LinearAttention",
    "FavorAttention",
    "LinearDecoder",
    "FavorDecoder",
]
__all__ += ["register_transformers_attention", "use_torch_threads", "torch_threads_in_use"]

# Hugging Face transformers glue (transformers is imported only when registering).
from .transformers import register_transformers_attention  # noqa: E402

# libperformer's parallel work on PyTorch's intra-op (OpenMP) threads; see _threads.py.
from ._threads import torch_threads_in_use, use_torch_threads  # noqa: E402
from ._threads import _install_default as _install_default_threads  # noqa: E402

_install_default_threads()
