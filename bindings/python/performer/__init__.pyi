# Type stubs of the performer package (the public API of performer/__init__.py).
from typing import Any, Optional, Sequence, Tuple, Union, overload

import numpy as np
from numpy.typing import NDArray

from typing import Literal

# Anything with the buffer protocol: NumPy arrays, memoryviews, ...
_Buffer = Any
_Floating = Union[np.float32, np.float64]

__version__: str
__all__: list[str]

@overload
def softmax_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., scale: Optional[float] = ...,
    kv_lengths: Optional[Sequence[int]] = ..., return_lse: Literal[False] = ...,
) -> NDArray[_Floating]: ...
@overload
def softmax_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., scale: Optional[float] = ...,
    kv_lengths: Optional[Sequence[int]] = ..., return_lse: Literal[True],
) -> Tuple[NDArray[_Floating], NDArray[_Floating]]: ...
@overload
def softmax_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., scale: Optional[float] = ...,
    kv_lengths: Optional[Sequence[int]] = ..., return_lse: bool = ...,
) -> Union[NDArray[_Floating], Tuple[NDArray[_Floating], NDArray[_Floating]]]: ...
def softmax_attention_backward(
    q: _Buffer, k: _Buffer, v: _Buffer, out: _Buffer, lse: _Buffer, dout: _Buffer, *,
    causal: bool = ..., scale: Optional[float] = ..., kv_lengths: Optional[Sequence[int]] = ...,
) -> Tuple[NDArray[_Floating], NDArray[_Floating], NDArray[_Floating]]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
# Present when the loaded libperformer.so exports performer_kernel_isa().
def kernel_isa() -> str: ...

# Linear attention ("Transformers are RNNs").
_FeatureMap = Literal["elu+1", "relu", "identity"]
_State = Tuple[NDArray[_Floating], NDArray[_Floating]]

@overload
def linear_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., feature_map: _FeatureMap = ...,
    eps: float = ..., kv_lengths: Optional[Sequence[int]] = ...,
    initial_state: Optional[Tuple[_Buffer, _Buffer]] = ..., return_state: Literal[False] = ...,
) -> NDArray[_Floating]: ...
@overload
def linear_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., feature_map: _FeatureMap = ...,
    eps: float = ..., kv_lengths: Optional[Sequence[int]] = ...,
    initial_state: Optional[Tuple[_Buffer, _Buffer]] = ..., return_state: Literal[True],
) -> Tuple[NDArray[_Floating], _State]: ...
@overload
def linear_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., feature_map: _FeatureMap = ...,
    eps: float = ..., kv_lengths: Optional[Sequence[int]] = ...,
    initial_state: Optional[Tuple[_Buffer, _Buffer]] = ..., return_state: bool = ...,
) -> Union[NDArray[_Floating], Tuple[NDArray[_Floating], _State]]: ...
@overload
def linear_attention_backward(
    q: _Buffer, k: _Buffer, v: _Buffer, dout: _Buffer, *, causal: bool = ...,
    feature_map: _FeatureMap = ..., eps: float = ..., kv_lengths: Optional[Sequence[int]] = ...,
    initial_state: None = ..., dstate: Optional[Tuple[_Buffer, _Buffer]] = ...,
) -> Tuple[NDArray[_Floating], NDArray[_Floating], NDArray[_Floating]]: ...
@overload
def linear_attention_backward(
    q: _Buffer, k: _Buffer, v: _Buffer, dout: _Buffer, *, causal: bool = ...,
    feature_map: _FeatureMap = ..., eps: float = ..., kv_lengths: Optional[Sequence[int]] = ...,
    initial_state: Tuple[_Buffer, _Buffer], dstate: Optional[Tuple[_Buffer, _Buffer]] = ...,
) -> Tuple[NDArray[_Floating], NDArray[_Floating], NDArray[_Floating], _State]: ...

class LinearDecoder:
    def __init__(
        self, batch: int, heads: int, dim: int, value_dim: int, *, feature_map: _FeatureMap = ...,
        eps: float = ..., key_heads: Optional[int] = ..., dtype: Union[str, type, np.dtype[Any]] = ...,
    ) -> None: ...
    @property
    def batch(self) -> int: ...
    @property
    def heads(self) -> int: ...
    @property
    def key_heads(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def value_dim(self) -> int: ...
    @property
    def feature_map(self) -> str: ...
    @property
    def eps(self) -> float: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    def step(self, q: _Buffer, k: _Buffer, v: _Buffer, out: Optional[_Buffer] = ...) -> NDArray[_Floating]: ...
    def prefill(self, q: _Buffer, k: _Buffer, v: _Buffer) -> NDArray[_Floating]: ...
    def reset(self) -> None: ...
    @property
    def state(self) -> _State: ...
    @state.setter
    def state(self, pair: Tuple[_Buffer, _Buffer]) -> None: ...
    def set_state(self, S: _Buffer, z: _Buffer) -> None: ...
