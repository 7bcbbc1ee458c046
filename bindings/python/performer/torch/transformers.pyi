from typing import Any, Optional, Tuple

import torch
from torch import Tensor

class KeyRanges:
    keys: int
    causal: bool
    kv_starts: Optional[Tensor]
    kv_lengths: Optional[Tensor]
    shape: Optional[Tuple[int, int, int, int]]
    @property
    def ndim(self) -> int: ...
    def __init__(self, keys: int, causal: bool, kv_starts: Optional[Tensor] = ...,
                 kv_lengths: Optional[Tensor] = ..., shape: Optional[Tuple[int, int, int, int]] = ...) -> None: ...

def attention_mask(
    batch_size: int, q_length: int, kv_length: int, q_offset: Any = ..., kv_offset: int = ...,
    mask_function: Any = ..., attention_mask: Optional[Tensor] = ..., **kwargs: Any,
) -> KeyRanges: ...
def attention_forward(
    module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor,
    attention_mask: "Optional[Tensor | KeyRanges]", dropout: float = ..., scaling: Optional[float] = ...,
    is_causal: Optional[bool] = ..., **kwargs: Any,
) -> Tuple[Tensor, None]: ...
def register_transformers_attention(name: str = ...) -> str: ...
