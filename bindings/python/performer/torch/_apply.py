"""autograd.Function.apply for the eager paths (_direct.eager() true), a few microseconds cheaper.

The public ``Function.apply`` is a Python wrapper that binds defaults (none here: the eager Functions
have no setup_context) and, outside torch.func, unwraps dead functorch wrappers through a pytree pass
before calling the C method ``torch._C._FunctionBase.apply``. The eager paths call that C method
themselves and unwrap only their tensors (``unwrap``). Both are private to PyTorch, which is not
pinned: without them, ``c_apply`` returns the public apply and ``unwrap`` is the identity (the public
apply unwraps itself)."""

import torch


def _internals():
    try:
        return torch._C._FunctionBase.__dict__["apply"], torch._C._functorch.unwrap_if_dead
    except (AttributeError, KeyError, TypeError):
        return None, None


_C_APPLY, _UNWRAP = _internals()


def c_apply(function):
    """The apply of an autograd.Function subclass without the Python wrapper, or its public apply."""
    if _C_APPLY is None:
        return function.apply
    try:
        return _C_APPLY.__get__(None, function)
    except TypeError:
        return function.apply


def _identity(tensor):
    return tensor


#: unwrap(tensor): a dead functorch wrapper's tensor (or the tensor); not None.
unwrap = _UNWRAP if _UNWRAP is not None else _identity


def unwrap_each(tensors):
    """unwrap() of each tensor, None kept: the optional state arguments."""
    return tuple(None if t is None else unwrap(t) for t in tensors)
