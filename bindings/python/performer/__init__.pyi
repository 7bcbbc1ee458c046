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
