"""performer: exact softmax attention and linear attention on the CPU (libperformer), forward
and backward, plus a recurrent (RNN) decoder for causal linear attention.

Tensors are any objects with the buffer protocol -- NumPy arrays, memoryviews, PyTorch CPU
tensors through ``tensor.detach().numpy()`` -- of dtype float32 or float64, with any strides
(transposed, sliced and negatively strided views are read in place, without a copy).
Results are new C-contiguous NumPy arrays of the inputs' dtype (those of 4 MiB or more over
memory a dead result left: see set_output_cache_limit).

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
``linear_state`` / ``linear_state_backward`` give the state of keys without queries, and
``linear_initial_state_gradient`` the initial state's gradient from the queries alone; causal or
not, a call may start from a state (non-causal: a memory), and ``normalize=False`` gives the
un-normalized product. See docs/LINEAR.md.

FAVOR+ (Performer): ``FavorProjection`` (seeded random projections W, m x D),
``favor_features`` (the feature maps phi), ``favor_attention`` / ``favor_attention_backward``
(bidirectional or causal, with a carried state) and ``FavorDecoder`` (causal FAVOR+ attention
token by token), the state being the stabilized triple (S~, z~, c); ``favor_state`` /
``favor_state_backward`` give that triple for keys without queries, and
``favor_initial_state_gradient`` its gradient from the queries alone. See docs/FAVOR.md.

``softmax_merge`` merges partial softmax results over disjoint key sets by their log-sum-exp.
With PyTorch, ``performer.torch`` wraps the kernels as autograd Functions, and
``performer.torch.distributed`` splits one sequence across processes (docs/DISTRIBUTED.md).

The computation runs without the GIL on the library's own threads (see set_num_threads).
"""

from . import _performer as _ext
from .decoders import FavorDecoder, LinearDecoder
from .favor import (FavorProjection, favor_attention, favor_attention_backward, favor_features, favor_state,
                    favor_state_backward)
from .favor import favor_initial_state_gradient
from .linear import (linear_attention, linear_attention_backward, linear_initial_state_gradient, linear_state,
                     linear_state_backward)
from .softmax import softmax_attention, softmax_attention_backward, softmax_merge

__all__ = [
    "softmax_attention",
    "softmax_attention_backward",
    "softmax_merge",
    "linear_attention",
    "linear_attention_backward",
    "linear_state",
    "linear_state_backward",
    "linear_initial_state_gradient",
    "favor_state",
    "favor_state_backward",
    "favor_initial_state_gradient",
    "LinearDecoder",
    "FavorProjection",
    "favor_features",
    "favor_attention",
    "favor_attention_backward",
    "FavorDecoder",
    "set_num_threads",
    "get_num_threads",
    "set_output_cache_limit",
    "get_output_cache_limit",
    "__version__",
]

#: The version of the loaded libperformer.so (performer_version_string()).
__version__ = _ext.version_string()


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


def set_output_cache_limit(nbytes):
    """Bounds the memory kept from dead outputs to ``nbytes`` bytes (default 256 MiB) and returns
    the previous bound; 0 keeps none and frees what is kept.

    A result of 4 MiB or more lives in memory that, when the last array over it dies, is kept
    for a later result of about its size instead of being returned to the system: a fresh mapping
    costs the operating system's zeroing of every page on first write (2-3 ms of a 15 ms call at
    32 MiB), a kept one is already mapped. The oldest kept memory is freed first when a new block
    would exceed the bound. Such results are ordinary C-contiguous arrays whose ``base`` is the
    block (``flags.owndata`` is False); ``performer.torch`` results of that size are tensors over
    such blocks (``torch.from_numpy``), whose storage cannot grow (``resize_``); with a bound of 0
    they are PyTorch's own tensors. Raises TypeError for a non-int, ValueError below 0."""
    if isinstance(nbytes, bool) or not hasattr(nbytes, "__index__"):
        raise TypeError("nbytes must be an int, not %s" % type(nbytes).__name__)
    nbytes = nbytes.__index__()
    if not 0 <= nbytes <= 2 ** 62:
        raise ValueError("nbytes must be in 0 .. 2**62, not %d" % nbytes)
    return _ext._output_cache_limit(nbytes)


def get_output_cache_limit():
    """The bound on memory kept from dead outputs (set_output_cache_limit), in bytes."""
    return _ext._output_cache_limit()


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


# The names keep the module they were defined in before the split by algorithm (reprs, pickles).
for _name in __all__:
    if callable(globals()[_name]):
        globals()[_name].__module__ = __name__
del _name
