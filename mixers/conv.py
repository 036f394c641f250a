"""Convolutional mixers: Table 5's depthwise convolution and ConvFormer's separable convolution."""

from __future__ import annotations

import torch
from torch import nn

from mixers.acts import ACTS
from mixers.registry import register_mixer


@register_mixer("dwconv")
class DepthwiseConv(nn.Module):
    """Depthwise k x k convolution with same padding."""

    def __init__(self, dim: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@register_mixer("sepconv")
class SepConv(nn.Module):
    """ConvFormer's separable conv: 1x1 expand, activation, k x k depthwise, 1x1 project (NCHW throughout).
    `act` is any registered activation (mixers.acts.list_acts(): gelu, relu, silu, starrelu, ...)."""

    def __init__(
        self,
        dim: int,
        expansion_ratio: float = 2.0,
        kernel_size: int = 7,
        act: str = "gelu",
        bias: bool = False,
    ) -> None:
        super().__init__()
        try:
            act_layer = ACTS.get(act)
        except ValueError as e:
            raise ValueError(f"mixer 'sepconv': {e}") from None
        hidden = int(expansion_ratio * dim)
        self.pwconv1 = nn.Conv2d(dim, hidden, 1, bias=bias)
        self.act = act_layer()
        self.dwconv = nn.Conv2d(
            hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden, bias=bias
        )
        self.pwconv2 = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pwconv2(self.dwconv(self.act(self.pwconv1(x))))
