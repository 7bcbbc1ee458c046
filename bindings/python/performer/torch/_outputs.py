"""New result tensors of the ops' CPU kernels: a large one over the output cache.

PyTorch's CPU allocator gives a large tensor fresh pages from the system each time (glibc maps a
block of this size anew on every call), and the kernel's first write into each page then waits
for the system to zero it: at N = 16384, 10-17% of a linear-attention forward's time
(benchmarks/torch_output_cache.py).
A result of _CACHED_BYTES or more therefore lives in a block of the package's output cache
(performer.set_output_cache_limit; _output_pool.c), wrapped by torch.from_numpy: when the last
tensor over it dies, the block goes back to the cache, already mapped, for the next result of
about its size. Such a tensor's storage cannot grow (``resize_`` to more elements than it holds
raises PyTorch's "not resizable" error); with the cache limit at 0, results are plain
``new_empty`` tensors.

Fake, functional and other subclass tensors (torch.compile, torch.export, vmap) get
``new_empty``: only the real kernels' results come from the cache."""

import math

import numpy as _np
import torch

from performer import _common
from performer import _performer as _ext

_CACHED_BYTES = _common._RECYCLED_OUTPUT_BYTES
# The NumPy dtype of the block holding a result of each dtype (half: its 16 bits, viewed back).
_BLOCK_DTYPES = {torch.float32: _np.dtype(_np.float32), torch.float64: _np.dtype(_np.float64),
                 torch.float16: _np.dtype(_np.float16), torch.bfloat16: _np.dtype(_np.uint16)}
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def new_output(like, shape, dtype=None, _prod=math.prod, _cached=_CACHED_BYTES):
    """An uninitialized C-contiguous CPU tensor of ``shape`` and ``dtype`` (default: like's), as
    ``like.new_empty(shape, dtype=dtype)``. The type test comes first: a fake tensor's sizes may
    be symbolic, and comparing them would add a shape guard to a compiled or exported graph. (A
    tiny call's result costs ~0.3 us more than ``new_empty``.)"""
    wanted = like.dtype if dtype is None else dtype
    if type(like) in _PLAIN and _prod(shape) * wanted.itemsize >= _cached:
        tensor = _cached_output(like, shape, wanted)
        if tensor is not None:
            return tensor
    return like.new_empty(*shape) if dtype is None else like.new_empty(shape, dtype=dtype)


def _cached_output(like, shape, dtype):
    """A tensor over a block of the cache, or None (another dtype or device, or the cache off)."""
    block = _BLOCK_DTYPES.get(dtype)
    if block is None or not like.is_cpu or _ext._output_cache_limit() == 0:
        return None
    tensor = torch.from_numpy(_common._empty(tuple(shape), block))
    return tensor if tensor.dtype == dtype else tensor.view(dtype)


def output_like(tensor):
    """``torch.empty_like(tensor)`` (the same strides for a dense tensor, so that a gradient is laid
    out like its input), large ones from the output cache."""
    if tensor.is_contiguous():
        return new_output(tensor, tensor.shape)
    order = sorted(range(tensor.dim()), key=lambda d: -tensor.stride(d))
    sizes = [tensor.shape[d] for d in order]
    dense = all(tensor.stride(d) == math.prod(sizes[i + 1:]) for i, d in enumerate(order) if tensor.shape[d] > 1)
    if not dense:  # overlapping or with gaps: torch.empty_like makes it contiguous too
        return new_output(tensor, tensor.shape)
    return new_output(tensor, sizes).permute([order.index(d) for d in range(tensor.dim())])
