# Type stubs of performer.torch (the public API of performer/torch.py; needs PyTorch).
from typing import Any, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from performer import FavorProjection

__all__: list[str]

_Lengths = Union[Sequence[int], Tensor, None]

class SoftmaxAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, q: Tensor, k: Tensor, v: Tensor, causal: bool = ..., scale: Optional[float] = ...,
        kv_lengths: _Lengths = ..., kv_starts: _Lengths = ...,
    ) -> Tensor: ...
    @staticmethod
    def backward(ctx: Any, dout: Tensor) -> Tuple[Optional[Tensor], ...]: ...
    @staticmethod
    def apply(  # type: ignore[override]
        q: Tensor, k: Tensor, v: Tensor, causal: bool = ..., scale: Optional[float] = ...,
        kv_lengths: _Lengths = ..., kv_starts: _Lengths = ...,
    ) -> Tensor: ...

def softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool = ..., scale: Optional[float] = ...,
    kv_lengths: _Lengths = ..., kv_starts: _Lengths = ...,
) -> Tensor: ...

class SoftmaxAttention(torch.nn.Module):
    causal: bool
    scale: Optional[float]
    def __init__(self, causal: bool = ..., scale: Optional[float] = ...) -> None: ...
    def forward(self, q: Tensor, k: Tensor, v: Tensor, kv_lengths: _Lengths = ..., kv_starts: _Lengths = ...) -> Tensor: ...

class FavorAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, q: Tensor, k: Tensor, v: Tensor, projection: FavorProjection, causal: bool = ...,
        features: str = ..., scale: Optional[float] = ..., eps: float = ..., kv_lengths: _Lengths = ...,
        relu_offset: float = ..., kv_starts: _Lengths = ...,
    ) -> Tensor: ...
    @staticmethod
    def backward(ctx: Any, dout: Tensor) -> Tuple[Optional[Tensor], ...]: ...
    @staticmethod
    def apply(  # type: ignore[override]
        q: Tensor, k: Tensor, v: Tensor, projection: FavorProjection, causal: bool = ..., features: str = ...,
        scale: Optional[float] = ..., eps: float = ..., kv_lengths: _Lengths = ..., relu_offset: float = ...,
        kv_starts: _Lengths = ...,
    ) -> Tensor: ...

def favor_attention(
    q: Tensor, k: Tensor, v: Tensor, projection: FavorProjection, *, causal: bool = ..., features: str = ...,
    scale: Optional[float] = ..., eps: float = ..., kv_lengths: _Lengths = ..., relu_offset: float = ...,
    kv_starts: _Lengths = ...,
) -> Tensor: ...

class FavorAttention(torch.nn.Module):
    projection: FavorProjection
    causal: bool
    features: str
    scale: Optional[float]
    eps: float
    relu_offset: float
    def __init__(
        self, dim: int, num_features: int = ..., *, causal: bool = ..., features: str = ...,
        scale: Optional[float] = ..., eps: float = ..., relu_offset: float = ..., kind: str = ..., norms: str = ...,
        seed: int = ...,
    ) -> None: ...
    def redraw(self) -> None: ...
    def forward(self, q: Tensor, k: Tensor, v: Tensor, kv_lengths: _Lengths = ..., kv_starts: _Lengths = ...) -> Tensor: ...

def register_transformers_attention(name: str = ...) -> str: ...
def use_torch_threads(enabled: bool = ...) -> bool: ...
def torch_threads_in_use() -> bool: ...
