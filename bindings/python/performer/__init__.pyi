# Type stubs of the performer package (the public API of performer/__init__.py).
from typing import Any, Optional, Sequence, Tuple, Union, overload

import numpy as np
from numpy.typing import NDArray

from typing import Literal

# Anything with the buffer protocol: NumPy arrays, memoryviews, ...
_Buffer = Any
_Floating = Union[np.float32, np.float64]
# Softmax, linear and FAVOR+ attention also take float16 tokens (computed in float32); their
# lse, states and denominators are then float32 (_Floating).
_TokenFloating = Union[np.float32, np.float64, np.float16]

__version__: str
__all__: list[str]

@overload
def softmax_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., scale: Optional[float] = ...,
    kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ..., return_lse: Literal[False] = ...,
    out: Optional[_Buffer] = ..., lse: Optional[_Buffer] = ...,
) -> NDArray[_TokenFloating]: ...
@overload
def softmax_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., scale: Optional[float] = ...,
    kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ..., return_lse: Literal[True],
    out: Optional[_Buffer] = ..., lse: Optional[_Buffer] = ...,
) -> Tuple[NDArray[_TokenFloating], NDArray[_TokenFloating]]: ...
@overload
def softmax_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., scale: Optional[float] = ...,
    kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ..., return_lse: bool = ...,
    out: Optional[_Buffer] = ..., lse: Optional[_Buffer] = ...,
) -> Union[NDArray[_TokenFloating], Tuple[NDArray[_TokenFloating], NDArray[_TokenFloating]]]: ...
def softmax_attention_backward(
    q: _Buffer, k: _Buffer, v: _Buffer, out: _Buffer, lse: _Buffer, dout: _Buffer, *,
    causal: bool = ..., scale: Optional[float] = ..., kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ...,
    dq: Optional[_Buffer] = ..., dk: Optional[_Buffer] = ..., dv: Optional[_Buffer] = ...,
) -> Tuple[NDArray[_TokenFloating], NDArray[_TokenFloating], NDArray[_TokenFloating]]: ...
def softmax_merge(
    out_a: _Buffer, lse_a: _Buffer, out_b: _Buffer, lse_b: _Buffer, *,
    out: Optional[_Buffer] = ..., lse: Optional[_Buffer] = ...,
) -> Tuple[NDArray[_Floating], NDArray[_Floating]]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def set_output_cache_limit(nbytes: int) -> int: ...
def get_output_cache_limit() -> int: ...
# Present when the loaded libperformer.so exports performer_kernel_isa().
def kernel_isa() -> str: ...
# Present when the loaded libperformer.so exports performer_live_handle_count().
def live_handle_count() -> int: ...

# Linear attention ("Transformers are RNNs").
_FeatureMap = Literal["elu+1", "relu", "identity"]
_State = Tuple[NDArray[_Floating], NDArray[_Floating]]

@overload
def linear_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., feature_map: _FeatureMap = ...,
    eps: float = ..., kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ...,
    initial_state: Optional[Tuple[_Buffer, _Buffer]] = ..., return_state: Literal[False] = ...,
    normalize: bool = ..., return_denominators: Literal[False] = ...,
    out: Optional[_Buffer] = ..., final_state: Optional[Tuple[_Buffer, _Buffer]] = ...,
    denominators: Optional[_Buffer] = ...,
) -> NDArray[_TokenFloating]: ...
@overload
def linear_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., feature_map: _FeatureMap = ...,
    eps: float = ..., kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ...,
    initial_state: Optional[Tuple[_Buffer, _Buffer]] = ..., return_state: Literal[True],
    normalize: bool = ..., return_denominators: Literal[False] = ...,
    out: Optional[_Buffer] = ..., final_state: Optional[Tuple[_Buffer, _Buffer]] = ...,
    denominators: Optional[_Buffer] = ...,
) -> Tuple[NDArray[_TokenFloating], _State]: ...
@overload
def linear_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., feature_map: _FeatureMap = ...,
    eps: float = ..., kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ...,
    initial_state: Optional[Tuple[_Buffer, _Buffer]] = ..., return_state: Literal[False] = ...,
    normalize: bool = ..., return_denominators: Literal[True],
    out: Optional[_Buffer] = ..., final_state: Optional[Tuple[_Buffer, _Buffer]] = ...,
    denominators: Optional[_Buffer] = ...,
) -> Tuple[NDArray[_TokenFloating], NDArray[_Floating]]: ...
@overload
def linear_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., feature_map: _FeatureMap = ...,
    eps: float = ..., kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ...,
    initial_state: Optional[Tuple[_Buffer, _Buffer]] = ..., return_state: Literal[True],
    normalize: bool = ..., return_denominators: Literal[True],
    out: Optional[_Buffer] = ..., final_state: Optional[Tuple[_Buffer, _Buffer]] = ...,
    denominators: Optional[_Buffer] = ...,
) -> Tuple[NDArray[_TokenFloating], _State, NDArray[_Floating]]: ...
@overload
def linear_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, *, causal: bool = ..., feature_map: _FeatureMap = ...,
    eps: float = ..., kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ...,
    initial_state: Optional[Tuple[_Buffer, _Buffer]] = ..., return_state: bool = ...,
    normalize: bool = ..., return_denominators: bool = ...,
    out: Optional[_Buffer] = ..., final_state: Optional[Tuple[_Buffer, _Buffer]] = ...,
    denominators: Optional[_Buffer] = ...,
) -> Union[NDArray[_TokenFloating], Tuple[NDArray[_TokenFloating], _State], Tuple[NDArray[_TokenFloating], NDArray[_Floating]],
           Tuple[NDArray[_TokenFloating], _State, NDArray[_Floating]]]: ...
@overload
def linear_attention_backward(
    q: _Buffer, k: _Buffer, v: _Buffer, dout: _Buffer, *, causal: bool = ...,
    feature_map: _FeatureMap = ..., eps: float = ..., kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ...,
    initial_state: None = ..., dstate: Optional[Tuple[_Buffer, _Buffer]] = ..., normalize: bool = ...,
    dq: Optional[_Buffer] = ..., dk: Optional[_Buffer] = ..., dv: Optional[_Buffer] = ...,
) -> Tuple[NDArray[_TokenFloating], NDArray[_TokenFloating], NDArray[_TokenFloating]]: ...
@overload
def linear_attention_backward(
    q: _Buffer, k: _Buffer, v: _Buffer, dout: _Buffer, *, causal: bool = ...,
    feature_map: _FeatureMap = ..., eps: float = ..., kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ...,
    initial_state: Tuple[_Buffer, _Buffer], dstate: Optional[Tuple[_Buffer, _Buffer]] = ..., normalize: bool = ...,
    dq: Optional[_Buffer] = ..., dk: Optional[_Buffer] = ..., dv: Optional[_Buffer] = ...,
) -> Tuple[NDArray[_TokenFloating], NDArray[_TokenFloating], NDArray[_TokenFloating], _State]: ...
def linear_state(
    k: _Buffer, v: _Buffer, *, feature_map: _FeatureMap = ..., kv_lengths: Optional[Sequence[int]] = ...,
    initial_state: Optional[Tuple[_Buffer, _Buffer]] = ..., heads: Optional[int] = ...,
    kv_starts: Optional[Sequence[int]] = ...,
) -> _State: ...
@overload
def linear_state_backward(
    k: _Buffer, v: _Buffer, dS: _Buffer, dz: _Buffer, *, feature_map: _FeatureMap = ...,
    kv_lengths: Optional[Sequence[int]] = ..., initial_state: None = ..., heads: Optional[int] = ...,
    kv_starts: Optional[Sequence[int]] = ...,
) -> Tuple[NDArray[_TokenFloating], NDArray[_TokenFloating]]: ...
@overload
def linear_state_backward(
    k: _Buffer, v: _Buffer, dS: _Buffer, dz: _Buffer, *, feature_map: _FeatureMap = ...,
    kv_lengths: Optional[Sequence[int]] = ..., initial_state: Tuple[_Buffer, _Buffer], heads: Optional[int] = ...,
    kv_starts: Optional[Sequence[int]] = ...,
) -> Tuple[NDArray[_TokenFloating], NDArray[_TokenFloating], _State]: ...
def linear_initial_state_gradient(
    q: _Buffer, out: _Buffer, dout: _Buffer, denominators: Optional[_Buffer], *, feature_map: _FeatureMap = ...,
    eps: float = ..., normalize: bool = ...,
) -> _State: ...

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
    @property
    def state_dtype(self) -> np.dtype[Any]: ...
    def step(self, q: _Buffer, k: _Buffer, v: _Buffer, out: Optional[_Buffer] = ...,
             *, state: Optional[Tuple[_Buffer, _Buffer]] = ...) -> NDArray[_Floating]: ...
    def prefill(self, q: _Buffer, k: _Buffer, v: _Buffer) -> NDArray[_Floating]: ...
    def reset(self) -> None: ...
    @property
    def state(self) -> _State: ...
    @state.setter
    def state(self, pair: Tuple[_Buffer, _Buffer]) -> None: ...
    def set_state(self, S: _Buffer, z: _Buffer) -> None: ...

# FAVOR+ (Performer random features).
_FavorFeatures = Literal["positive", "hyperbolic", "trigonometric", "relu"]
_FavorState = Tuple[NDArray[_Floating], NDArray[_Floating], NDArray[_Floating]]

class FavorProjection:
    def __init__(
        self, dim: int, num_features: int, *, kind: Literal["orthogonal", "iid"] = ...,
        norms: Literal["chi", "fixed"] = ..., seed: int = ...,
    ) -> None: ...
    @classmethod
    def from_matrix(cls, W: _Buffer) -> "FavorProjection": ...
    @property
    def matrix(self) -> NDArray[np.float64]: ...
    def redraw(self) -> None: ...
    @property
    def dim(self) -> int: ...
    @property
    def num_features(self) -> int: ...
    @property
    def kind(self) -> Optional[Literal["orthogonal", "iid"]]: ...
    @property
    def norms(self) -> Optional[Literal["chi", "fixed"]]: ...
    @property
    def seed(self) -> Optional[int]: ...
    @property
    def draw(self) -> int: ...

def favor_features(
    x: _Buffer, projection: FavorProjection, *, features: _FavorFeatures = ..., scale: Optional[float] = ...,
    is_query: bool = ..., relu_offset: float = ...,
    out: Optional[_Buffer] = ...,
) -> NDArray[_TokenFloating]: ...

@overload
def favor_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, projection: FavorProjection, *, causal: bool = ...,
    features: _FavorFeatures = ..., scale: Optional[float] = ..., eps: float = ...,
    kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ..., initial_state: Optional[Tuple[_Buffer, _Buffer, _Buffer]] = ...,
    return_state: Literal[False] = ..., relu_offset: float = ...,
    out: Optional[_Buffer] = ..., final_state: Optional[Tuple[_Buffer, _Buffer, _Buffer]] = ...,
    return_row_scales: Literal[False] = ..., row_scales: None = ...,
) -> NDArray[_TokenFloating]: ...
@overload
def favor_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, projection: FavorProjection, *, causal: bool = ...,
    features: _FavorFeatures = ..., scale: Optional[float] = ..., eps: float = ...,
    kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ..., initial_state: Optional[Tuple[_Buffer, _Buffer, _Buffer]] = ...,
    return_state: Literal[True], relu_offset: float = ...,
    out: Optional[_Buffer] = ..., final_state: Optional[Tuple[_Buffer, _Buffer, _Buffer]] = ...,
    return_row_scales: Literal[False] = ..., row_scales: None = ...,
) -> Tuple[NDArray[_TokenFloating], _FavorState]: ...
@overload
def favor_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, projection: FavorProjection, *, causal: bool = ...,
    features: _FavorFeatures = ..., scale: Optional[float] = ..., eps: float = ...,
    kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ..., initial_state: Optional[Tuple[_Buffer, _Buffer, _Buffer]] = ...,
    return_state: bool = ..., relu_offset: float = ...,
    out: Optional[_Buffer] = ..., final_state: Optional[Tuple[_Buffer, _Buffer, _Buffer]] = ...,
    return_row_scales: Literal[True], row_scales: Optional[Tuple[_Buffer, _Buffer]] = ...,
) -> Union[Tuple[NDArray[_TokenFloating], Tuple[NDArray[_Floating], NDArray[_Floating]]],
           Tuple[NDArray[_TokenFloating], _FavorState, Tuple[NDArray[_Floating], NDArray[_Floating]]]]: ...
@overload
def favor_attention(
    q: _Buffer, k: _Buffer, v: _Buffer, projection: FavorProjection, *, causal: bool = ...,
    features: _FavorFeatures = ..., scale: Optional[float] = ..., eps: float = ...,
    kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ..., initial_state: Optional[Tuple[_Buffer, _Buffer, _Buffer]] = ...,
    return_state: bool = ..., relu_offset: float = ...,
    out: Optional[_Buffer] = ..., final_state: Optional[Tuple[_Buffer, _Buffer, _Buffer]] = ...,
    return_row_scales: bool = ..., row_scales: Optional[Tuple[_Buffer, _Buffer]] = ...,
) -> Union[NDArray[_TokenFloating], Tuple[NDArray[_TokenFloating], _FavorState],
           Tuple[NDArray[_TokenFloating], Tuple[NDArray[_Floating], NDArray[_Floating]]],
           Tuple[NDArray[_TokenFloating], _FavorState, Tuple[NDArray[_Floating], NDArray[_Floating]]]]: ...
@overload
def favor_attention_backward(
    q: _Buffer, k: _Buffer, v: _Buffer, dout: _Buffer, projection: FavorProjection, *, causal: bool = ...,
    features: _FavorFeatures = ..., scale: Optional[float] = ..., eps: float = ...,
    kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ..., initial_state: None = ...,
    dstate: Optional[Tuple[_Buffer, _Buffer]] = ..., relu_offset: float = ...,
    dq: Optional[_Buffer] = ..., dk: Optional[_Buffer] = ..., dv: Optional[_Buffer] = ...,
) -> Tuple[NDArray[_TokenFloating], NDArray[_TokenFloating], NDArray[_TokenFloating]]: ...
@overload
def favor_attention_backward(
    q: _Buffer, k: _Buffer, v: _Buffer, dout: _Buffer, projection: FavorProjection, *, causal: bool = ...,
    features: _FavorFeatures = ..., scale: Optional[float] = ..., eps: float = ...,
    kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ..., initial_state: Tuple[_Buffer, _Buffer, _Buffer],
    dstate: Optional[Tuple[_Buffer, _Buffer]] = ..., relu_offset: float = ...,
    dq: Optional[_Buffer] = ..., dk: Optional[_Buffer] = ..., dv: Optional[_Buffer] = ...,
) -> Tuple[NDArray[_TokenFloating], NDArray[_TokenFloating], NDArray[_TokenFloating], _State]: ...
def favor_state(
    k: _Buffer, v: _Buffer, projection: FavorProjection, *, features: _FavorFeatures = ...,
    scale: Optional[float] = ..., kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ...,
    initial_state: Optional[Tuple[_Buffer, _Buffer, _Buffer]] = ..., heads: Optional[int] = ...,
    relu_offset: float = ...,
) -> Tuple[NDArray[_Floating], NDArray[_Floating], NDArray[_Floating]]: ...
@overload
def favor_state_backward(
    k: _Buffer, v: _Buffer, projection: FavorProjection, dS: _Buffer, dz: _Buffer, *, features: _FavorFeatures = ...,
    scale: Optional[float] = ..., kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ...,
    initial_state: None = ..., heads: Optional[int] = ..., relu_offset: float = ...,
) -> Tuple[NDArray[_TokenFloating], NDArray[_TokenFloating]]: ...
@overload
def favor_state_backward(
    k: _Buffer, v: _Buffer, projection: FavorProjection, dS: _Buffer, dz: _Buffer, *, features: _FavorFeatures = ...,
    scale: Optional[float] = ..., kv_lengths: Optional[Sequence[int]] = ..., kv_starts: Optional[Sequence[int]] = ...,
    initial_state: Tuple[_Buffer, _Buffer, _Buffer], heads: Optional[int] = ..., relu_offset: float = ...,
) -> Tuple[NDArray[_TokenFloating], NDArray[_TokenFloating], _State]: ...
def favor_initial_state_gradient(
    q: _Buffer, projection: FavorProjection, c0: _Buffer, row_scales: Tuple[_Buffer, _Buffer], out: _Buffer,
    dout: _Buffer, *, features: _FavorFeatures = ..., scale: Optional[float] = ..., relu_offset: float = ...,
) -> Tuple[NDArray[_Floating], NDArray[_Floating]]: ...

class FavorDecoder:
    def __init__(
        self, projection: FavorProjection, batch: int, heads: int, value_dim: int, *,
        features: _FavorFeatures = ..., scale: Optional[float] = ..., eps: float = ..., relu_offset: float = ...,
        dtype: Union[str, type, np.dtype[Any]] = ...,
    ) -> None: ...
    @property
    def projection(self) -> FavorProjection: ...
    @property
    def batch(self) -> int: ...
    @property
    def heads(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def value_dim(self) -> int: ...
    @property
    def num_features(self) -> int: ...
    @property
    def features(self) -> str: ...
    @property
    def scale(self) -> Optional[float]: ...
    @property
    def eps(self) -> float: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def state_dtype(self) -> np.dtype[Any]: ...
    def step(self, q: _Buffer, k: _Buffer, v: _Buffer, out: Optional[_Buffer] = ...) -> NDArray[_Floating]: ...
    def reset(self) -> None: ...
    @property
    def state(self) -> _FavorState: ...
    @state.setter
    def state(self, triple: Tuple[_Buffer, _Buffer, _Buffer]) -> None: ...
    def set_state(self, S: _Buffer, z: _Buffer, c: _Buffer) -> None: ...
