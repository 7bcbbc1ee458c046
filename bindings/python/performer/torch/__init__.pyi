# Type stubs of performer.torch (the public API of the performer/torch package; needs PyTorch).
from typing import Literal, Optional, Sequence, Tuple, Union, overload

import torch
from torch import Tensor

from performer import FavorProjection
from performer import FavorDecoder as _FavorDecoder
from performer import LinearDecoder as _LinearDecoder

__all__: list[str]

_Lengths = Union[Sequence[int], Tensor, None]
_Pair = Tuple[Tensor, Tensor]
_Triple = Tuple[Tensor, Tensor, Tensor]
_Projection = Union[FavorProjection, Tensor]

@overload
def softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool = ..., scale: Optional[float] = ...,
    kv_lengths: _Lengths = ..., kv_starts: _Lengths = ..., return_lse: Literal[False] = ...,
) -> Tensor: ...
@overload
def softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool = ..., scale: Optional[float] = ...,
    kv_lengths: _Lengths = ..., kv_starts: _Lengths = ..., return_lse: Literal[True],
) -> Tuple[Tensor, Tensor]: ...

@overload
def linear_attention(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool = ..., feature_map: str = ..., eps: float = ...,
    normalize: bool = ..., kv_lengths: _Lengths = ..., kv_starts: _Lengths = ...,
    initial_state: Optional[_Pair] = ..., return_state: Literal[False] = ...,
) -> Tensor: ...
@overload
def linear_attention(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool = ..., feature_map: str = ..., eps: float = ...,
    normalize: bool = ..., kv_lengths: _Lengths = ..., kv_starts: _Lengths = ...,
    initial_state: Optional[_Pair] = ..., return_state: Literal[True],
) -> Tuple[Tensor, _Pair]: ...

def linear_state(
    k: Tensor, v: Tensor, *, feature_map: str = ..., kv_lengths: _Lengths = ..., kv_starts: _Lengths = ...,
    initial_state: Optional[_Pair] = ..., heads: Optional[int] = ...,
) -> _Pair: ...

@overload
def favor_attention(
    q: Tensor, k: Tensor, v: Tensor, projection: _Projection, *, causal: bool = ..., features: str = ...,
    scale: Optional[float] = ..., eps: float = ..., kv_lengths: _Lengths = ..., relu_offset: float = ...,
    kv_starts: _Lengths = ..., initial_state: Optional[_Triple] = ..., return_state: Literal[False] = ...,
) -> Tensor: ...
@overload
def favor_attention(
    q: Tensor, k: Tensor, v: Tensor, projection: _Projection, *, causal: bool = ..., features: str = ...,
    scale: Optional[float] = ..., eps: float = ..., kv_lengths: _Lengths = ..., relu_offset: float = ...,
    kv_starts: _Lengths = ..., initial_state: Optional[_Triple] = ..., return_state: Literal[True],
) -> Tuple[Tensor, _Triple]: ...

def favor_state(
    k: Tensor, v: Tensor, projection: _Projection, *, features: str = ..., scale: Optional[float] = ...,
    kv_lengths: _Lengths = ..., kv_starts: _Lengths = ..., initial_state: Optional[_Triple] = ...,
    heads: Optional[int] = ..., relu_offset: float = ...,
) -> _Triple: ...

class SoftmaxAttention(torch.nn.Module):
    causal: bool
    scale: Optional[float]
    def __init__(self, causal: bool = ..., scale: Optional[float] = ...) -> None: ...
    def forward(self, q: Tensor, k: Tensor, v: Tensor, kv_lengths: _Lengths = ..., kv_starts: _Lengths = ...) -> Tensor: ...

class LinearAttention(torch.nn.Module):
    causal: bool
    feature_map: str
    eps: float
    normalize: bool
    def __init__(self, causal: bool = ..., feature_map: str = ..., eps: float = ..., normalize: bool = ...) -> None: ...
    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, kv_lengths: _Lengths = ..., kv_starts: _Lengths = ...,
        initial_state: Optional[_Pair] = ..., return_state: bool = ...,
    ) -> Union[Tensor, Tuple[Tensor, _Pair]]: ...

class FavorAttention(torch.nn.Module):
    W: Tensor
    dim: int
    num_features: int
    kind: str
    norms: str
    seed: int
    draw: int
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
    @property
    def projection(self) -> FavorProjection: ...
    def redraw(self) -> None: ...
    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, kv_lengths: _Lengths = ..., kv_starts: _Lengths = ...,
        initial_state: Optional[_Triple] = ..., return_state: bool = ...,
    ) -> Union[Tensor, Tuple[Tensor, _Triple]]: ...

class LinearDecoder(_LinearDecoder):
    def __init__(
        self, batch: int, heads: int, dim: int, value_dim: int, *, feature_map: str = ..., eps: float = ...,
        key_heads: Optional[int] = ..., dtype: torch.dtype = ...,
    ) -> None: ...
    @property
    def dtype(self) -> torch.dtype: ...  # type: ignore[override]
    @property
    def state_dtype(self) -> torch.dtype: ...  # type: ignore[override]
    def step(  # type: ignore[override]
        self, q: Tensor, k: Tensor, v: Tensor, out: Optional[Tensor] = ..., *, state: Optional[_Pair] = ...,
    ) -> Tensor: ...
    def prefill(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor: ...  # type: ignore[override]
    @property
    def state(self) -> _Pair: ...  # type: ignore[override]
    @state.setter
    def state(self, value: _Pair) -> None: ...
    def set_state(self, S: Tensor, z: Tensor) -> None: ...  # type: ignore[override]

class FavorDecoder(_FavorDecoder):
    def __init__(
        self, projection: _Projection, batch: int, heads: int, value_dim: int, *, features: str = ...,
        scale: Optional[float] = ..., eps: float = ..., relu_offset: float = ..., dtype: torch.dtype = ...,
    ) -> None: ...
    @property
    def dtype(self) -> torch.dtype: ...  # type: ignore[override]
    @property
    def state_dtype(self) -> torch.dtype: ...  # type: ignore[override]
    def step(  # type: ignore[override]
        self, q: Tensor, k: Tensor, v: Tensor, out: Optional[Tensor] = ..., *, state: Optional[_Triple] = ...,
    ) -> Tensor: ...
    @property
    def state(self) -> _Triple: ...  # type: ignore[override]
    @state.setter
    def state(self, value: _Triple) -> None: ...
    def set_state(self, S: Tensor, z: Tensor, c: Tensor) -> None: ...  # type: ignore[override]

def register_transformers_attention(name: str = ...) -> str: ...
def use_torch_threads(enabled: bool = ...) -> bool: ...
def torch_threads_in_use() -> bool: ...
