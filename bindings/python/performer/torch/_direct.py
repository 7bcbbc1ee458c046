"""When an eager call may skip the dispatcher (item 7 of issue 9: a few microseconds per call).

The direct path calls the ops' CPU kernels itself. It is taken only when nothing needs to see the
op: not while torch.compile / torch.export trace (torch.compiler.is_compiling is checked first,
so Dynamo folds the rest away), no torch.func transform, no dispatch or function mode (make_fx,
FakeTensorMode, DeviceContext), plain tensors only (no subclass, no Parameter) and no input that
needs a gradient. Everything else goes through torch.ops.performer.

eager() is the same without the gradient condition: softmax_attention then runs its autograd
through a torch.autograd.Function over the same kernels (about 3x cheaper per call than the
op's registered Python autograd formula), since PyTorch's autograd never sees the difference
outside tracing."""

import torch

_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled
_functorch_active = torch._C._are_functorch_transforms_active
_dispatch_modes = torch._C._len_torch_dispatch_stack
_function_mode = torch._C._is_torch_function_mode_enabled
_Tensor = torch.Tensor


def eager(*tensors):
    """True when nothing traces or transforms the call and the tensors (None allowed) are plain:
    an autograd.Function calling the kernels directly may then stand in for the op."""
    if _is_compiling():
        return False
    if _functorch_active() or _dispatch_modes() or _function_mode():
        return False
    for t in tensors:
        if t is not None and type(t) is not _Tensor:
            return False
    return True


def direct(*tensors):
    """True when the tensors (None allowed) may go to the kernels without the dispatcher."""
    if _is_compiling():
        return False
    if _functorch_active() or _dispatch_modes() or _function_mode():
        return False
    if _grad_enabled():
        for t in tensors:
            if t is not None and (type(t) is not _Tensor or t.requires_grad):
                return False
    else:
        for t in tensors:
            if t is not None and type(t) is not _Tensor:
                return False
    return True


def plain_cpu(args):
    """True when an op's Autograd kernel may call its CPU kernel itself (no redispatch): no torch.func
    transform, no dispatch or function mode, and every tensor among args a plain CPU tensor (a fake,
    functional or meta tensor, a subclass, goes down the dispatcher). The caller checked that no
    gradient is needed."""
    if _functorch_active() or _dispatch_modes() or _function_mode():
        return False
    for a in args:
        if isinstance(a, _Tensor) and (type(a) is not _Tensor or not a.is_cpu):
            return False
    return True
