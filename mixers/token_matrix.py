"""Mixers that multiply the token axis by an N x N matrix: the spatial FC and the frozen random matrix.

Both are bound to the stage's token count N = H*W (docs/paper.md: Table 5's "spatial FC" and "global random matrix").
"""

from __future__ import annotations

import torch
from torch import nn

from mixers.base import ResolutionBound
from mixers.registry import register_mixer


@register_mixer("mlp")
class SpatialFC(ResolutionBound):
    """One fully connected layer across the H*W tokens, shared by all channels (ResMLP-style)."""

    mixer_name = "mlp"

    def __init__(self, dim: int, resolution: tuple[int, int] | None = None, bias: bool = True) -> None:
        super().__init__(resolution)
        self.fc = nn.Linear(self.num_tokens, self.num_tokens, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return self.fc(x.flatten(2)).view_as(x)


@register_mixer("random")
class RandomMixing(ResolutionBound):
    """X' = W X over tokens with W = softmax(U[0,1)) per row, frozen: a buffer, saved but never trained."""

    mixer_name = "random"

    def __init__(self, dim: int, resolution: tuple[int, int] | None = None) -> None:
        super().__init__(resolution)
        n = self.num_tokens
        self.register_buffer("random_matrix", torch.softmax(torch.rand(n, n), dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        mixed = torch.matmul(x.flatten(2), self.random_matrix.to(x.dtype).t())
        return mixed.view_as(x)
