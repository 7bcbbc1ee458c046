"""Tensors to the C extension without NumPy. A plain CPU tensor of a dtype in DTYPE_CODES goes as
it is: the extension reads it (_performer.c, get_torch_tensor; registered below). Any other
tensor, and the state arguments whose messages need their own names, go as a raw view
``(data_address, shape, strides, dtype_code, writable[, owner])`` read by _performer.c
(get_raw_view). The shape and strides (in elements) are the tensor's own, so any strides reach the
library without a copy; the caller keeps the tensor alive for the call. This is also the way in
for dtypes NumPy cannot hold (bfloat16)."""

import torch

from performer import _performer as _ext


# performer_dtype codes (performer.h). The half dtypes are storage types: the library computes
# in float32 (docs/HALF_PRECISION.md); which functions take them is the library's to say.
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
HALF = (torch.float16, torch.bfloat16)


def wide_dtype(dtype):
    """The dtype of the float32 companions of a half call (lse, recurrent states), else dtype."""
    return torch.float32 if dtype in HALF else dtype


_Tensor = torch.Tensor
_strided = torch.strided


def _refuse(name, tensor):
    """Raises the precise TypeError for a tensor view() cannot pass (the dtype error only for a dtype)."""
    if not isinstance(tensor, _Tensor):
        raise TypeError("%s must be a torch.Tensor, not %s" % (name, type(tensor).__name__))
    if tensor.layout != _strided:
        raise TypeError("%s has layout %s; performer.torch needs a dense (strided) tensor" % (name, tensor.layout))
    if tensor.device.type != "cpu":
        raise TypeError("%s is on device %s; performer.torch computes on the CPU: move the tensors there first "
                        "(tensor.cpu())" % (name, tensor.device))
    check_dtype(name, tensor)
    # A wrapper without memory of its own: vmap's BatchedTensor, a fake or functional tensor.
    raise TypeError("%s (%s) has no data this process can read in place (a tensor of torch.func.vmap, "
                    "torch.export or a tensor subclass?); call the performer.torch functions or "
                    "torch.ops.performer ops on it, which those transforms trace" % (name, type(tensor).__name__))


def check_dtype(name, tensor):
    """TypeError naming the argument unless tensor's dtype is one the extension knows."""
    if tensor.dtype not in DTYPE_CODES:
        raise TypeError("%s has dtype %s; expected torch.float32, torch.float64, torch.float16 or torch.bfloat16"
                        % (name, tensor.dtype))


def check(names, tensors):
    """Checks the metadata of tensors about to be passed to an op (None allowed): a torch.Tensor,
    strided, on the CPU, float32, float64, float16 or bfloat16 -- TypeError naming the argument
    otherwise. Reads no data, so it also runs on the fake and functional tensors of torch.compile /
    torch.export."""
    for name, tensor in zip(names, tensors):
        if tensor is not None and (not isinstance(tensor, _Tensor) or tensor.layout != _strided
                                   or tensor.device.type != "cpu" or tensor.dtype not in DTYPE_CODES):
            _refuse(name, tensor)


def view(name, tensor):
    """The raw view of a CPU float32/float64/float16/bfloat16 strided tensor, or TypeError naming the
    argument."""
    code = DTYPE_CODES.get(getattr(tensor, "dtype", None))
    if code is None or type(tensor) is not _Tensor or not tensor.is_cpu:
        if isinstance(tensor, _Tensor) and code is not None and tensor.is_cpu and tensor.layout is _strided:
            return _view_of_subclass(name, tensor, code)
        _refuse(name, tensor)
    if tensor.is_neg():
        return _view_of_resolved(tensor.resolve_neg(), code)
    try:
        # No layout check on this path (a few hundred ns per tensor): a plain torch.Tensor of
        # another layout (sparse, mkldnn, nested) has no strides and stride() raises; subclasses
        # (jagged nested tensors) take _view_of_subclass, which checks the layout.
        return (tensor.data_ptr(), tensor.shape, tensor.stride(), code, True)
    except RuntimeError:
        _refuse(name, tensor)


def _view_of_resolved(copy, code):
    # A lazily negated view (torch._neg_view) has no memory holding its values: the view is of
    # the resolved copy, which rides along as the view's sixth item (alive for the call), and is
    # read-only (written into, the copy would swallow the result).
    return (copy.data_ptr(), copy.shape, copy.stride(), code, False, copy)


def _view_of_subclass(name, tensor, code):
    # A tensor subclass (e.g. nn.Parameter) is read through its data, if it has any; one that
    # intercepts dispatch (FakeTensor, a functional or wrapper tensor) has none to read.
    if type(tensor).__torch_dispatch__ is not _Tensor.__torch_dispatch__:
        _refuse(name, tensor)
    try:
        tensor = tensor.detach()
        if tensor.is_neg():
            return _view_of_resolved(tensor.resolve_neg(), code)
        return (tensor.data_ptr(), tensor.shape, tensor.stride(), code, True)
    except RuntimeError:
        _refuse(name, tensor)


# The extension reads a plain CPU tensor of these dtypes itself -- dtype, data_ptr(), shape and
# stride() with the limited C API, no raw-view tuple: the ops pass tensors straight to it -- and
# calls view() for any other tensor (a subclass, a negated view resolved, the precise error).
# With PyTorch's (private) to_dlpack it reads the tensor from one DLPack capsule instead of four
# attribute calls; a PyTorch without it: the attribute calls. With its from_dlpack (private too)
# the extension makes a decoder step's output itself (MAKES_TENSORS), cheaper than torch.empty.
_FROM_DLPACK = getattr(torch._C, "_from_dlpack", None)
_ext._register_tensor_type(_Tensor, DTYPE_CODES, view, getattr(torch._C, "_to_dlpack", None), _FROM_DLPACK)
MAKES_TENSORS = _FROM_DLPACK is not None


def keys(name, values):
    """kv_lengths / kv_starts given to an op (None or an integer tensor of B entries; a sequence on
    the direct eager path) as a list of ints for the extension, which checks the count and ranges."""
    if not isinstance(values, _Tensor):
        return values
    if values.dim() != 1:
        raise ValueError("%s must be a sequence of B ints, but it has shape %s" % (name, tuple(values.shape)))
    if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
        raise TypeError("%s must hold ints, not %s" % (name, values.dtype))
    return values.tolist()


def key_lists(kv_lengths, kv_starts):
    """keys() of both key arguments of an op, at no cost when neither is given."""
    if kv_lengths is None and kv_starts is None:
        return None, None
    return keys("kv_lengths", kv_lengths), keys("kv_starts", kv_starts)


def key_tensors(kv_lengths, kv_starts):
    """key_tensor() of both key arguments of a public function, at no cost when neither is given."""
    if kv_lengths is None and kv_starts is None:
        return None, None
    return key_tensor("kv_lengths", kv_lengths), key_tensor("kv_starts", kv_starts)


def key_tensor(name, values):
    """kv_lengths / kv_starts as the public functions take them (None, a sequence of ints or an
    integer tensor) as the ops take them: None or an int64 tensor."""
    if values is None or isinstance(values, _Tensor):
        return values
    try:
        result = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError("%s must be None, a sequence of ints or an integer tensor, not %s"
                        % (name, type(values).__name__)) from error
    if result.numel() == 0:
        result = result.to(torch.int64)
    if result.dtype.is_floating_point or result.dtype.is_complex or result.dtype == torch.bool:
        raise TypeError("%s must hold ints, not %s" % (name, result.dtype))
    return result.to(torch.int64)
