"""When an eager call may skip the dispatcher (item 7 of issue 9: a few microseconds per call).

The eager paths call the ops' CPU kernels themselves. They are taken only when nothing needs to see
the op: not while torch.compile / torch.export trace (torch.compiler.is_compiling is checked first,
so Dynamo folds the rest away), no torch.func transform, no dispatch or function mode (make_fx,
FakeTensorMode, DeviceContext), plain tensors only (no subclass, no Parameter). Everything else goes
through torch.ops.performer.

route() says that much and, for such a call, whether it needs a gradient: one that does not runs
the kernel directly; one that does runs its autograd through a torch.autograd.Function over the same kernels (several
times cheaper per call than the op's registered Python autograd formula), since PyTorch's autograd
never sees the difference outside tracing."""

import torch

_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled
_functorch_active = torch._C._are_functorch_transforms_active
_dispatch_modes = torch._C._len_torch_dispatch_stack
_function_mode = torch._C._is_torch_function_mode_enabled
_Tensor = torch.Tensor


def untraced():
    """True when no torch.func transform, dispatch mode or function mode would see the call."""
    return not (_functorch_active() or _dispatch_modes() or _function_mode())


def eager(*tensors):
    """True when nothing traces or transforms the call and the tensors (None allowed) are plain:
    the kernels, or an autograd.Function calling them, may then stand in for the op."""
    return route(*tensors) is not None


def route(*tensors):
    """Where a call goes, in one pass (a tiny call's saving): None when the call must go through
    the op (something traces or transforms it, or a tensor is not plain; None allowed), else
    whether autograd records and a tensor requires a gradient (an autograd.Function over the
    kernels) or not (the kernels directly)."""
    if _is_compiling() or not untraced():
        return None
    grad = _grad_enabled()
    needed = False
    for t in tensors:
        if t is not None:
            if type(t) is not _Tensor:
                return None
            if grad and not needed and t.requires_grad:
                needed = True
    return needed


def plain_cpu(args):
    """True when an op's Autograd kernel may call its CPU kernel itself (no redispatch): nothing
    traces (untraced()) and every tensor among args is a plain CPU tensor (a fake, functional or
    meta tensor, a subclass, goes down the dispatcher). The caller checked that no gradient is
    needed."""
    if not untraced():
        return False
    for a in args:
        if isinstance(a, _Tensor) and (type(a) is not _Tensor or not a.is_cpu):
            return False
    return True
