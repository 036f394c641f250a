"""The MetaFormer model: a conv stem, four stages of MetaFormer blocks, final norm, average pool, linear head.

Every per-stage field takes one value for all stages or a list with one value per stage, so
`mixer=["pool", "pool", "attn", "attn"]` with `norm="gn"` is one call. Tensors stay NCHW through every stage and
every mixer. The head follows the paper and the official release: norm over the whole last feature map, then
the spatial mean, then the classifier (timm's current PoolFormer pools first and normalises after).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn

from metaformer.acts import ACTS
from metaformer.block import MetaFormerBlock
from metaformer.norms import NORMS, build_norm
from mixers import MIXERS

PerStage = Any  # one value for all stages, or a sequence with one value per stage


def per_stage(value: PerStage, field: str, num_stages: int) -> list[Any]:
    """Expand `value` to one entry per stage; a sequence of the wrong length is a ValueError."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = list(value)
        if len(values) != num_stages:
            raise ValueError(
                f"{field} has {len(values)} entries but the model has {num_stages} stages: "
                f"give one value or a list of {num_stages}"
            )
        return values
    return [value] * num_stages


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


class MetaFormerStage(nn.Module):
    """Optional downsampling conv, optional learnable position embedding, then `depth` blocks."""

    def __init__(
        self,
        downsample: nn.Module,
        blocks: list[MetaFormerBlock],
        dim: int,
        resolution: tuple[int, int],
        pos_embed: bool = False,
    ) -> None:
        super().__init__()
        self.downsample = downsample
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, *resolution)) if pos_embed else None
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.pos_embed is not None:
            if self.pos_embed.shape[-2:] != x.shape[-2:]:
                raise ValueError(
                    f"position embedding was built for {tuple(self.pos_embed.shape[-2:])} but the stage "
                    f"received {tuple(x.shape[-2:])}; build the model with the input's img_size"
                )
            x = x + self.pos_embed
        return self.blocks(x)


class Downsampling(nn.Module):
    """A strided convolution between stages (3x3, stride 2, padding 1 in the paper)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MetaFormer(nn.Module):
    """A four-stage MetaFormer with any token mixer, norm and activation in any stage.

    Every argument marked "per stage" takes one value for all stages or a list of `num_stages` values.

    Args:
        depths: blocks per stage (per stage).
        dims: channels per stage (per stage).
        mixer: token mixer by registered name (`mixers.list_mixers()`), `pkg.module:Class` path or callable
            (per stage), e.g. `["pool", "pool", "attn", "attn"]`.
        mixer_options: options per mixer name, `{"pool": {"pool_size": 5}}`, given to every stage that uses that
            mixer (or a list of such dicts, per stage).
        norm: norm by registered name (`metaformer.list_norms()`), e.g. `gn` (GroupNorm(1), the paper's) (per
            stage).
        act: activation of the channel MLP by registered name (`metaformer.list_acts()`) (per stage).
        mlp_ratios: hidden width of the channel MLP as a multiple of the stage's channels (per stage).
        layer_scale_init: initial value of the layer scale after each sub-block; None: no layer scale (per stage).
        res_scale_init: initial value of a scale on the residual branch; None: none (per stage).
        residual: keep the two skip connections of every block (per stage); False is Table 5's ablation.
        channel_mlp: keep the channel-MLP sub-block (per stage); False is Table 5's ablation.
        pos_embed: a learnable position embedding before the stage (per stage).
        num_classes: classifier outputs; 0: no classifier (the model returns the pooled features).
        in_chans: input image channels.
        img_size: input size (an int or (H, W)); resolution-bound mixers (mlp, fft, random) and position
            embeddings are built for it.
        drop_rate: dropout in the channel MLP and before the head.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this rate.
        stem_kernel, stem_stride, stem_padding: the stem convolution (7, 4, 2 in the paper).
        down_kernel, down_stride, down_padding: the convolution between stages (3, 2, 1 in the paper).
        head_norm: the norm before the head; None: the last stage's norm.
        num_stages: the number of stages (4 in the paper).
    """

    def __init__(
        self,
        depths: PerStage = (2, 2, 6, 2),
        dims: PerStage = (64, 128, 320, 512),
        mixer: PerStage = "pool",
        mixer_options: PerStage = None,
        norm: PerStage = "gn",
        act: PerStage = "gelu",
        mlp_ratios: PerStage = 4.0,
        layer_scale_init: PerStage = 1e-5,
        res_scale_init: PerStage = None,
        residual: PerStage = True,
        channel_mlp: PerStage = True,
        pos_embed: PerStage = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int | Sequence[int] = 224,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        stem_kernel: int = 7,
        stem_stride: int = 4,
        stem_padding: int = 2,
        down_kernel: int = 3,
        down_stride: int = 2,
        down_padding: int = 1,
        head_norm: str | Callable[..., nn.Module] | None = None,
        num_stages: int = 4,
    ) -> None:
        super().__init__()
        n = num_stages
        depths, dims = per_stage(depths, "depths", n), per_stage(dims, "dims", n)
        mixers, norms, acts = (
            per_stage(mixer, "mixer", n),
            per_stage(norm, "norm", n),
            per_stage(act, "act", n),
        )
        options = [_check_mixer_options(o) for o in per_stage(mixer_options, "mixer_options", n)]
        mlp_ratios = per_stage(mlp_ratios, "mlp_ratios", n)
        ls_inits = per_stage(layer_scale_init, "layer_scale_init", n)
        rs_inits = per_stage(res_scale_init, "res_scale_init", n)
        residuals = per_stage(residual, "residual", n)
        channel_mlps = per_stage(channel_mlp, "channel_mlp", n)
        pos_embeds = per_stage(pos_embed, "pos_embed", n)
        for kind, names in (("mixer", mixers), ("norm", norms), ("act", acts)):
            _check_names(kind, names)

        self.num_classes, self.in_chans, self.num_stages = num_classes, in_chans, n
        self.img_size = _pair(img_size)
        self.stage_mixers = [_label(m) for m in mixers]
        self.stage_norms = [_label(m) for m in norms]
        self.stage_acts = [_label(m) for m in acts]
        self.num_features = dims[-1]

        self.stem = _Stem(in_chans, dims[0], stem_kernel, stem_stride, stem_padding)
        res = tuple(conv_out(s, stem_kernel, stem_stride, stem_padding) for s in self.img_size)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linear over all blocks
        stages, self.stage_resolutions, self.feature_info = [], [], []
        for i in range(n):
            if i == 0:
                downsample: nn.Module = nn.Identity()
            else:
                downsample = Downsampling(dims[i - 1], dims[i], down_kernel, down_stride, down_padding)
                res = tuple(conv_out(s, down_kernel, down_stride, down_padding) for s in res)
            blocks = [
                MetaFormerBlock(
                    dims[i],
                    mixer=mixers[i],
                    mixer_options=options[i].get(mixers[i]) if isinstance(mixers[i], str) else None,
                    resolution=res,
                    norm=norms[i],
                    act=acts[i],
                    mlp_ratio=mlp_ratios[i],
                    drop=drop_rate,
                    drop_path=rates[sum(depths[:i]) + j],
                    layer_scale_init=ls_inits[i],
                    res_scale_init=rs_inits[i],
                    residual=residuals[i],
                    channel_mlp=channel_mlps[i],
                )
                for j in range(depths[i])
            ]
            stages.append(MetaFormerStage(downsample, blocks, dims[i], res, pos_embed=pos_embeds[i]))
            self.stage_resolutions.append(res)
            self.feature_info.append({"num_chs": dims[i], "resolution": res, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.norm = build_norm(head_norm or norms[-1], dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage outputs (NCHW), for detection and segmentation backbones (the paper's fork_feat)."""
        outs = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, before the final norm."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Norm over the whole map, spatial mean, dropout, classifier."""
        x = self.head_drop(self.norm(x).mean((-2, -1)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The classification layer (timm's convention)."""
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier for `num_classes` outputs (0 removes it), as timm's models do."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            _init_weights(self.head)


class _Stem(nn.Module):
    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, dim, kernel, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d | nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _label(obj: object) -> str:
    return obj if isinstance(obj, str) else getattr(obj, "__qualname__", repr(obj))


def _check_names(kind: str, names: list[Any]) -> None:
    registry = {"mixer": MIXERS, "norm": NORMS, "act": ACTS}[kind]
    for name in names:
        registry.get(name)  # raises ValueError listing the registered names


def _check_mixer_options(options: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    options = dict(options or {})
    for name, opts in options.items():
        if name not in MIXERS and ":" not in name:
            raise ValueError(
                f"mixer_options has an entry for unknown mixer '{name}'; registered: {', '.join(MIXERS.names())}"
            )
        if not isinstance(opts, Mapping):
            raise ValueError(f"mixer_options.{name} must be a mapping of option -> value, got {opts!r}")
    return {name: dict(opts) for name, opts in options.items()}
