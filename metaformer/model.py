"""The MetaFormer model: a conv stem, four stages of MetaFormer blocks, final norm, average pool, linear head.

Every per-stage field takes one value for all stages or a list with one value per stage, so
`mixer=["pool", "pool", "attn", "attn"]` with `norm="gn"` is one call. Tensors stay NCHW through every stage and
every mixer. The head follows the paper and the official release: norm over the whole last feature map, then
the spatial mean, then the classifier (timm's current PoolFormer pools first and normalises after).

The sequel's models ("MetaFormer Baselines for Vision": IdentityFormer, RandFormer, PoolFormerV2, ConvFormer,
CAFormer; docs/paper_v2.md) are options of the same model: a norm after the stem (`stem_norm`) and before each
downsampling conv (`down_norm`), bias-free channel MLPs (`mlp_bias=False`), norms with eps 1e-6 (`norm_eps`), the
mean before the final norm (`head_pool_first=True`) and the MLP classifier (`mlp_head=True`: Linear, squared ReLU,
LayerNorm, dropout, Linear), besides StarReLU (`act="starrelu"`) and res scale (`res_scale_init`).

The model honours timm's model contract: `pretrained_cfg` describing this build (input size, pool size, a fixed
input size where a mixer or position embedding is bound to the resolution), `feature_info`,
`forward_intermediates`, `prune_intermediate_layers`, `reset_classifier(num_classes, global_pool)`,
`set_grad_checkpointing`, `group_matcher` and `no_weight_decay`; it traces with torch.fx and torch.export.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_function, register_notrace_module, trunc_normal_
from timm.models import PretrainedCfg
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from metaformer.block import MetaFormerBlock
from metaformer.norms import NORMS, build_norm
from mixers import MIXERS
from mixers.acts import ACTS, get_act
from mixers.base import ResolutionBound

# Mixers bound to a resolution check the input's shape in Python; torch.fx calls them as single leaf modules.
register_notrace_module(ResolutionBound)

GLOBAL_POOLS = ("avg", "")

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
            x = add_pos_embed(x, self.pos_embed)
        return self.blocks(x)


@register_notrace_function  # a shape check in Python: torch.fx records the call, not its branches
def add_pos_embed(x: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
    """`x + pos_embed`, refusing a feature map of another size with a clear error."""
    if pos_embed.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"position embedding was built for a {pos_embed.shape[-2]}x{pos_embed.shape[-1]} feature map but the "
            f"stage received {x.shape[-2]}x{x.shape[-1]}; build the model with the input's img_size"
        )
    return x + pos_embed


class Downsampling(nn.Module):
    """A strided convolution between stages (3x3, stride 2, padding 1 in the paper), after an optional norm (the
    sequel's pre-norm: `norm` over the input channels, then the convolution)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel: int,
        stride: int,
        padding: int,
        norm: str | Callable[..., nn.Module] | None = None,
        norm_eps: float | None = None,
    ) -> None:
        super().__init__()
        self.norm = build_norm(norm, in_chs, norm_eps) if norm is not None else nn.Identity()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


class MlpHead(nn.Module):
    """The sequel's classifier (ConvFormer, CAFormer): Linear to `mlp_ratio` x dim, activation (squared ReLU),
    LayerNorm, dropout, Linear; the module names of timm's and sail-sg/metaformer's `MlpHead`."""

    def __init__(
        self,
        dim: int,
        num_classes: int,
        mlp_ratio: float = 4.0,
        act: str | Callable[..., nn.Module] = "squared_relu",
        eps: float = 1e-6,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = get_act(act)()
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.head_drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.head_drop(self.norm(self.act(self.fc1(x)))))


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
        mlp_bias: biases in the channel MLP's two layers (False in the sequel).
        norm_eps: eps of every norm in the model (stages, stem, downsampling, head; 1e-6 in the sequel); None:
            each norm's own default (1e-5 for the built-in ones).
        stem_norm: a norm after the stem convolution (the sequel's post-norm, `ln_nobias`); None: none.
        down_norm: a norm before each downsampling convolution (the sequel's pre-norm); None: none.
        head_pool_first: average the last map, then apply the head norm (the sequel, timm); False: norm the whole
            map, then average (the PoolFormer paper's head).
        mlp_head: the sequel's MLP classifier (ConvFormer, CAFormer) instead of one Linear layer.
        head_mlp_ratio, head_act, head_dropout: the MLP classifier's hidden width (x channels), activation and
            dropout before its last layer (the official `head_dropout`); only with `mlp_head=True`.
    """

    # timm's own attributes, never compiled by TorchScript
    __jit_unused_properties__ = ["default_cfg"]

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
        global_pool: str = "avg",
        mlp_bias: bool = True,
        norm_eps: float | None = None,
        stem_norm: str | Callable[..., nn.Module] | None = None,
        down_norm: str | Callable[..., nn.Module] | None = None,
        head_pool_first: bool = False,
        mlp_head: bool = False,
        head_mlp_ratio: float = 4.0,
        head_act: str | Callable[..., nn.Module] = "squared_relu",
        head_dropout: float = 0.0,
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
        _check_names("norm", [n for n in (stem_norm, down_norm, head_norm) if n is not None])
        _check_names("act", [head_act])
        _check_head(num_classes, global_pool)
        if head_dropout and not mlp_head:
            raise ValueError(
                "head_dropout is the MLP classifier's dropout (mlp_head=True); the linear head's is drop_rate"
            )

        self.num_classes, self.in_chans, self.num_stages = num_classes, in_chans, n
        self.global_pool = global_pool
        self.img_size = _pair(img_size)
        self.stage_mixers = [_label(m) for m in mixers]
        self.stage_norms = [_label(m) for m in norms]
        self.stage_acts = [_label(m) for m in acts]
        self.stage_norm_layers = norms  # the norms as given (names or builders), for per-stage output norms
        self.num_features = self.head_hidden_size = dims[-1]
        self.grad_checkpointing = False
        self.head_pool_first, self.mlp_head = head_pool_first, mlp_head
        self.head_options = {
            "mlp_ratio": head_mlp_ratio,
            "act": head_act,
            "eps": 1e-6 if norm_eps is None else norm_eps,
            "drop": head_dropout,
        }

        self.stem = _Stem(in_chans, dims[0], stem_kernel, stem_stride, stem_padding, stem_norm, norm_eps)
        res = tuple(conv_out(s, stem_kernel, stem_stride, stem_padding) for s in self.img_size)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linear over all blocks
        stages, self.stage_resolutions, self.feature_info = [], [], []
        reduction = stem_stride
        for i in range(n):
            if i == 0:
                downsample: nn.Module = nn.Identity()
            else:
                downsample = Downsampling(
                    dims[i - 1], dims[i], down_kernel, down_stride, down_padding, down_norm, norm_eps
                )
                res = tuple(conv_out(s, down_kernel, down_stride, down_padding) for s in res)
                reduction *= down_stride
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
                    mlp_bias=mlp_bias,
                    norm_eps=norm_eps,
                )
                for j in range(depths[i])
            ]
            stages.append(MetaFormerStage(downsample, blocks, dims[i], res, pos_embed=pos_embeds[i]))
            self.stage_resolutions.append(res)
            self.feature_info.append(
                {"num_chs": dims[i], "reduction": reduction, "module": f"stages.{i}", "resolution": res}
            )
        self.stages = nn.Sequential(*stages)
        self.norm = build_norm(head_norm or norms[-1], dims[-1], norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._classifier(num_classes)
        self.apply(_init_weights)

        # A mixer or position embedding built for one feature-map size fixes the input size, as timm marks it.
        self.fixed_input_size = self.bound_to_input_size()
        self._traits = {
            "img_size": self.img_size,
            "fixed_input_size": self.fixed_input_size,
            "first_conv": "stem.conv",
        }
        mean, std = _default_stats(in_chans)
        self.pretrained_cfg = PretrainedCfg(
            crop_pct=0.9, interpolation="bicubic", mean=mean, std=std, **self.input_cfg()
        ).to_dict()

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name for `pretrained_cfg`."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict[str, Any]) -> None:
        self.pretrained_cfg = cfg

    def bound_to_input_size(self) -> bool:
        """Whether a mixer or a position embedding was built for one feature-map size (timm's fixed_input_size)."""
        return any(
            isinstance(m, ResolutionBound) or getattr(m, "resolution", None) is not None
            for m in self.stages.modules()
        ) or any(stage.pos_embed is not None for stage in self.stages)

    def input_cfg(self) -> dict[str, Any]:
        """The `pretrained_cfg` fields this build decides: input and pool size, fixed size, classes, layer names."""
        return {
            "input_size": (self.in_chans, *self.img_size),
            "pool_size": self.stage_resolutions[len(self.stages) - 1],
            "fixed_input_size": self.fixed_input_size,
            "num_classes": self.num_classes,
            "first_conv": "stem.conv",
            "classifier": "head.fc2" if self.mlp_head else "head",
        }

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four raw stage outputs (NCHW); `forward_intermediates(x, intermediates_only=True)` does the same."""
        return self.forward_intermediates(x, intermediates_only=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, before the final norm."""
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for stage in self.stages:
                x = checkpoint(stage, x, use_reentrant=False)
            return x
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Norm over the whole map, spatial mean (global_pool 'avg'; '' keeps the map), dropout, classifier.

        With `head_pool_first` the mean comes first and the norm sees the pooled (C, 1, 1) features.
        """
        if self.head_pool_first:
            if self.global_pool == "avg":
                x = self.norm(x.mean((-2, -1), keepdim=True)).flatten(1)
            else:
                x = self.norm(x)
        else:
            x = self.norm(x)
            if self.global_pool == "avg":
                x = x.mean((-2, -1))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs at `indices` (None: all, n: the last n, a list: those), timm's feature API.

        `norm=True` puts the last stage's output through the final norm; `stop_early` skips the stages after the
        last one asked for; the first value returned (unless `intermediates_only`) is `forward_features`' output.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt '{output_fmt}' is not supported: MetaFormer features are NCHW")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[: max_index + 1]
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
            if i in take_indices:
                intermediates.append(self.norm_intermediate(i, x) if norm else x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def norm_intermediate(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """What `norm=True` does to stage `index`'s output: the final norm on the last stage, as timm's models do."""
        return self.norm(x) if index == len(self.stages) - 1 else x

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last of `indices` (and the final norm / head); return the absolute indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        if max_index < len(self.stages) - 1:
            self.stages = self.stages[: max_index + 1]
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            prune_norm = prune_head = True  # both were sized for the last stage
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def get_classifier(self) -> nn.Module:
        """The classification layer (timm's convention)."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier for `num_classes` outputs (0 removes it); global_pool '' keeps the map."""
        _check_head(num_classes, self.global_pool if global_pool is None else global_pool)
        if global_pool is not None:
            self.global_pool = global_pool
        self.num_classes = num_classes
        ref = self.stem.conv.weight
        self.head = self._classifier(num_classes).to(device=ref.device, dtype=ref.dtype)
        self.head.apply(_init_weights)

    def _classifier(self, num_classes: int) -> nn.Module:
        """The classifier for `num_classes` outputs: one Linear layer, or the MLP head; 0: none."""
        if num_classes <= 0:
            return nn.Identity()
        if self.mlp_head:
            return MlpHead(self.num_features, num_classes, **self.head_options)
        return nn.Linear(self.num_features, num_classes)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's activations in the backward pass instead of storing them (less memory)."""
        self.grad_checkpointing = enable

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups by depth, for timm's layer-wise lr decay: stem, then stages (or blocks), then head."""
        return {
            "stem": r"^stem",
            "blocks": r"^stages\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.(?:downsample|pos_embed)", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        }

    def no_weight_decay(self) -> set[str]:
        """Parameters kept out of weight decay besides norms and biases: the position embeddings."""
        return {f"stages.{i}.pos_embed" for i, stage in enumerate(self.stages) if stage.pos_embed is not None}


class _Stem(nn.Module):
    """The stem convolution, then an optional norm (the sequel's post-norm)."""

    def __init__(
        self,
        in_chans: int,
        dim: int,
        kernel: int,
        stride: int,
        padding: int,
        norm: str | Callable[..., nn.Module] | None = None,
        norm_eps: float | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, dim, kernel, stride=stride, padding=padding)
        self.norm = build_norm(norm, dim, norm_eps) if norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d | nn.Linear) and not m.weight.is_meta:  # meta tensors have no values to set
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _default_stats(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's mean and std for RGB; for other channel counts, ImageNet's values averaged over its channels."""
    if in_chans == 3:
        return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)
    mean, std = sum(IMAGENET_DEFAULT_MEAN) / 3, sum(IMAGENET_DEFAULT_STD) / 3
    return (round(mean, 4),) * in_chans, (round(std, 4),) * in_chans


def _check_head(num_classes: int, global_pool: str) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(
            f"global_pool '{global_pool}' is not supported; choose 'avg' (the spatial mean) or ''"
        )
    if not global_pool and num_classes > 0:
        raise ValueError(
            "global_pool '' returns the unpooled feature map, which takes no linear classifier: use num_classes=0"
        )


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
