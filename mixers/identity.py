"""The identity mixer: no token mixing at all (Table 5's "identity" row, IdentityFormer)."""

from __future__ import annotations

import torch
from torch import nn

from mixers.registry import register_mixer


@register_mixer("identity")
class IdentityMixer(nn.Module):
    """Returns its input; the block's residual and channel MLP are all that remains."""

    def __init__(self, dim: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
