# Type stubs of performer.torch (the public API of performer/torch.py; needs PyTorch).
from typing import Any, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__: list[str]

_Lengths = Union[Sequence[int], Tensor, None]

class SoftmaxAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, q: Tensor, k: Tensor, v: Tensor, causal: bool = ..., scale: Optional[float] = ...,
        kv_lengths: _Lengths = ...,
    ) -> Tensor: ...
    @staticmethod
    def backward(ctx: Any, dout: Tensor) -> Tuple[Optional[Tensor], ...]: ...
    @staticmethod
    def apply(  # type: ignore[override]
        q: Tensor, k: Tensor, v: Tensor, causal: bool = ..., scale: Optional[float] = ...,
        kv_lengths: _Lengths = ...,
    ) -> Tensor: ...

def softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool = ..., scale: Optional[float] = ...,
    kv_lengths: _Lengths = ...,
) -> Tensor: ...

class SoftmaxAttention(torch.nn.Module):
    causal: bool
    scale: Optional[float]
    def __init__(self, causal: bool = ..., scale: Optional[float] = ...) -> None: ...
    def forward(self, q: Tensor, k: Tensor, v: Tensor, kv_lengths: _Lengths = ...) -> Tensor: ...
