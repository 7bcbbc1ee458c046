"""torch.func (grad, vjp, jacrev, vmap) through the performer ops.

The autograd formula that torch.library.register_autograd attaches to an op is an
autograd.Function without a setup_context, which functorch refuses. Under a torch.func transform
the public functions therefore apply a Function of their own (setup_context style, which functorch
supports) around the same op, with the same setup and formula; its forward calls the op on the
tensors functorch unwraps, and the formula's backward op goes through ``_Once``, whose own
backward raises (first derivatives only, as outside torch.func). vmap is generated from the
forward (PyTorch's per-sample fallback for the op). Forward-mode AD (jvp, jacfwd) has no formula
and PyTorch raises."""

import torch

functorch_active = torch._C._are_functorch_transforms_active


class _Once(torch.autograd.Function):
    """A backward op, called so that differentiating it again raises instead of being refused
    (or silently zero) under torch.func."""

    generate_vmap_rule = True

    @staticmethod
    def forward(op, *args):
        return op(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.op_name = str(inputs[0])

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("%s is not differentiable: performer.torch gives first derivatives only (no double "
                           "backward, no torch.func.grad of a gradient through its ops)" % ctx.op_name)


def backward_call(op, *args):
    """op(*args) for a registered autograd formula: through _Once under a torch.func transform."""
    if functorch_active():
        return _Once.apply(op, *args)
    return op(*args)


def function(name, op, setup_context, backward):
    """A functorch-compatible autograd.Function calling op, with the op's registered formula."""
    return type(name, (torch.autograd.Function,), {
        "generate_vmap_rule": True,
        "forward": staticmethod(lambda *args: op(*args)),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward),
    })
