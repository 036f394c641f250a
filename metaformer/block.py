"""The MetaFormer block: `x + drop_path(ls1 * mixer(norm1(x)))`, then `x + drop_path(ls2 * mlp(norm2(x)))`.

Module names follow timm's MetaFormer (`norm1`, `token_mixer`, `layer_scale1.scale`, `mlp.fc1`, ...) so timm's
PoolFormer weights load without renaming. The switches the paper ablates live here: no residual, no channel MLP,
no layer scale, and MetaFormer v2's res scale, bias-free channel MLP (`mlp_bias=False`) and norm eps (1e-6).

On channels-last input the channel MLP runs as `F.linear` over the channels of an NHWC view (no copies): the same
`(hidden, dim, 1, 1)` convolution weights, the same arithmetic, several times faster on a CPU than oneDNN's 1x1
convolutions at these small grids (experiments/BENCHMARKS.md). NCHW input keeps the convolutions, which are the
faster choice in that layout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from timm.models.metaformer import Scale
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from metaformer.norms import build_norm
from mixers import build_mixer
from mixers.acts import get_act


class MetaFormerBlock(nn.Module):
    """Token-mixer sub-block and channel-MLP sub-block, each with norm, layer scale, drop path, residual."""

    def __init__(
        self,
        dim: int,
        mixer: str | Callable[..., nn.Module] = "pool",
        mixer_options: Mapping[str, Any] | None = None,
        resolution: tuple[int, int] | None = None,
        norm: str | Callable[..., nn.Module] = "gn",
        act: str | Callable[..., nn.Module] = "gelu",
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init: float | None = 1e-5,
        res_scale_init: float | None = None,
        residual: bool = True,
        channel_mlp: bool = True,
        mlp_bias: bool = True,
        norm_eps: float | None = None,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.norm1 = build_norm(norm, dim, norm_eps)
        self.token_mixer = build_mixer(mixer, dim, resolution, **dict(mixer_options or {}))
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale1 = _scale(dim, layer_scale_init)
        self.res_scale1 = _scale(dim, res_scale_init)
        self.channel_mlp = channel_mlp
        if channel_mlp:
            self.norm2 = build_norm(norm, dim, norm_eps)
            self.mlp = Mlp(
                dim, int(mlp_ratio * dim), act_layer=get_act(act), bias=mlp_bias, drop=drop, use_conv=True
            )
            self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
            self.layer_scale2 = _scale(dim, layer_scale_init)
            self.res_scale2 = _scale(dim, res_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._add(self.res_scale1(x), self.layer_scale1(self.drop_path1(self.token_mixer(self.norm1(x)))))
        if self.channel_mlp:
            x = self._add(self.res_scale2(x), self.layer_scale2(self.drop_path2(self._mlp(self.norm2(x)))))
        return x

    def _add(self, shortcut: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        return shortcut + branch if self.residual else branch

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        # TorchScript and FX symbolic tracing (timm's feature extraction) take the convolutions: the layout test
        # is control flow on a tensor property, which neither can record. torch.compile and export see it.
        if torch.jit.is_scripting():
            return self.mlp(x)
        return self._mlp_any_layout(x)

    @torch.jit.unused
    def _mlp_any_layout(self, x: torch.Tensor) -> torch.Tensor:
        if is_fx_symbolic_tracing():
            return self.mlp(x)
        return channel_mlp(self.mlp, x)


def _scale(dim: int, init: float | None) -> nn.Module:
    return nn.Identity() if init is None else Scale(dim, init_value=init, use_nchw=True)


def channel_mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`mlp(x)` for timm's convolutional `Mlp`; on channels-last `x`, as linear layers over an NHWC view.

    The permutes are views (a channels-last NCHW tensor is a contiguous NHWC one), the weights are views of the
    1x1 convolution weights, so parameters, state dicts and gradients are the convolutions' own.
    """
    if not (is_channels_last(x) and isinstance(mlp, Mlp) and isinstance(mlp.norm, nn.Identity)):
        return mlp(x)
    fc1, fc2 = mlp.fc1, mlp.fc2
    h = F.linear(x.permute(0, 2, 3, 1), fc1.weight.flatten(1), fc1.bias)
    h = mlp.drop1(mlp.act(h))
    return mlp.drop2(F.linear(h, fc2.weight.flatten(1), fc2.bias)).permute(0, 3, 1, 2)


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-d tensor stored channels-last (NHWC-contiguous). At a 1x1 grid NCHW and NHWC storage are
    the same, and the linear channel MLP is the faster one there too (a 1x1 convolution costs several times more)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
