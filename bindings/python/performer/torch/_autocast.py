"""torch.autocast("cpu") for the performer ops.

Exact softmax follows scaled_dot_product_attention under CPU autocast (PyTorch 2.13, checked in
test_torch_half.py): float32, float16 and bfloat16 inputs are cast to the autocast dtype, the op
runs and returns in it; float64 is left alone. Linear attention and FAVOR+ are on autocast's
float32 list (half inputs widened, float32/float64 left alone; the result float32): their states
and denominators are sums over the whole prefix, which a model under autocast gets as precise as
the float32 path; half tensors passed outside autocast run in half (float32 states).

Two ways in, one rule: an AutocastCPU kernel per op for calls through the dispatcher
(torch.ops.performer.*, torch.compile, torch.export) and the same cast (``lower``/``widen``)
in the public functions when ``requested()``, since their eager paths skip the dispatcher."""

import torch

from ._tensors import HALF

enabled = torch.is_autocast_enabled
_AUTOCAST_CPU = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)
_CASTABLE = (torch.float32, torch.float16, torch.bfloat16)


def lower(tensors):
    """softmax's policy: castable tensors to the CPU autocast dtype (None and float64 as they are)."""
    dtype = torch.get_autocast_dtype("cpu")
    return [t.to(dtype) if t is not None and t.dtype in _CASTABLE and t.dtype != dtype else t for t in tensors]


def widen(tensors):
    """linear attention's and FAVOR+'s policy: half tensors to float32."""
    return [t.float() if t is not None and t.dtype in HALF else t for t in tensors]


_any_enabled = torch._C._is_any_autocast_enabled
_is_compiling = torch.compiler.is_compiling


def requested():
    """True when an eager call must apply the autocast policy itself (CPU autocast on). Not while
    torch.compile / torch.export trace: the op's AutocastCPU kernel is traced there."""
    return _any_enabled() and not _is_compiling() and enabled("cpu")


def register(lib, name, policy, count):
    """The AutocastCPU kernel of op performer::name: its first count arguments cast by policy, the
    op run with autocast excluded (as torch.library.register_autocast, whose dtype is fixed)."""
    op = getattr(torch.ops.performer, name).default

    def kernel(_keyset, *args):
        args = policy(args[:count]) + list(args[count:])
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_CPU):
            return op(*args)

    lib.impl(name, kernel, "AutocastCPU", with_keyset=True)
