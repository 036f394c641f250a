"""PoolFormer's pooling mixer: average pooling minus the input (the block adds the input back)."""

from __future__ import annotations

import torch
from torch import nn

from mixers.registry import register_mixer


@register_mixer("pool")
class Pooling(nn.Module):
    """AvgPool(k, stride 1, pad k//2, padding not counted) - x; `subtract_input=False` gives the plain average."""

    def __init__(self, dim: int, pool_size: int = 3, subtract_input: bool = True) -> None:
        super().__init__()
        if pool_size < 1 or pool_size % 2 == 0:
            raise ValueError(f"mixer 'pool': pool_size must be odd and positive, got {pool_size}")
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)
        self.subtract_input = subtract_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(x)
        return y - x if self.subtract_input else y
