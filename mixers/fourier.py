"""Fourier mixers: GFNet's learnable global filter and FNet's parameter-free Fourier transform.

FFTs run in float32 (CPU FFTs do not take bf16); the output is cast back to the input's dtype.
"""

from __future__ import annotations

import torch
from torch import nn

from mixers.base import ResolutionBound
from mixers.registry import register_mixer


@register_mixer("fft")
class GlobalFilter(ResolutionBound):
    """irfft2(rfft2(x) * K) with a learnable complex K of shape (C, H, W//2+1); bound to the resolution."""

    mixer_name = "fft"

    def __init__(self, dim: int, resolution: tuple[int, int] | None = None, init_std: float = 0.02) -> None:
        super().__init__(resolution)
        h, w = self.resolution
        self.complex_weight = nn.Parameter(torch.randn(dim, h, w // 2 + 1, 2) * init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        h, w = self.resolution
        spec = torch.fft.rfft2(x.float(), dim=(-2, -1), norm="ortho")
        # contiguous(): model.to(memory_format=torch.channels_last) also restrides this 4-D parameter
        spec = spec * torch.view_as_complex(self.complex_weight.float().contiguous())
        return torch.fft.irfft2(spec, s=(h, w), dim=(-2, -1), norm="ortho").to(x.dtype)


@register_mixer("fnet")
class FNetMixer(nn.Module):
    """Real part of the FFT over channels and both spatial axes (FNet); orthonormal so scales stay stable."""

    def __init__(self, dim: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fftn(x.float(), dim=(1, 2, 3), norm="ortho").real.to(x.dtype)
