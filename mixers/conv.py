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
    """ConvFormer's separable conv: 1x1 expand, activation, k x k depthwise, [activation,] 1x1 project (NCHW).

    `act` (the first activation, `act1`) and `act2` (after the depthwise conv; None: none, as ConvFormer) are any
    registered activation (mixers.acts.list_acts(): gelu, relu, silu, starrelu, ...). Module names follow timm's
    and sail-sg/metaformer's SepConv (`pwconv1`, `act1`, `dwconv`, `act2`, `pwconv2`) so their weights load as they
    are; checkpoints saved before the rename (`act.scale`) load too.
    """

    __jit_unused_properties__ = ["act"]  # the alias is for Python callers; TorchScript skips it

    def __init__(
        self,
        dim: int,
        expansion_ratio: float = 2.0,
        kernel_size: int = 7,
        act: str = "gelu",
        act2: str | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        try:
            act_layer = ACTS.get(act)
            act2_layer = ACTS.get(act2) if act2 is not None else nn.Identity
        except ValueError as e:
            raise ValueError(f"mixer 'sepconv': {e}") from None
        hidden = int(expansion_ratio * dim)
        self.pwconv1 = nn.Conv2d(dim, hidden, 1, bias=bias)
        self.act1 = act_layer()
        self.dwconv = nn.Conv2d(
            hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden, bias=bias
        )
        self.act2 = act2_layer()
        self.pwconv2 = nn.Conv2d(hidden, dim, 1, bias=bias)

    @property
    def act(self) -> nn.Module:
        """The first activation (`act1`), under its earlier name."""
        return self.act1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pwconv2(self.act2(self.dwconv(self.act1(self.pwconv1(x)))))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        for key in [k for k in state_dict if k.startswith(f"{prefix}act.")]:  # saved before act -> act1
            state_dict[f"{prefix}act1.{key.removeprefix(f'{prefix}act.')}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
