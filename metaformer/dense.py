"""Dense prediction: a MetaFormer backbone for detection and segmentation, with torchvision's FPN and heads.

`MetaFormerBackbone` is the official release's `fork_feat` mode: the stage outputs, each through its own norm
(`out_norms`, loaded from the official `norm0/norm2/norm4/norm6`), and no classifier. `build_retinanet` puts
torchvision's FeaturePyramidNetwork and RetinaNet on it (the paper's COCO detector), `build_semantic_fpn` the
Semantic FPN segmenter (the paper's ADE20K model): torchvision's FPN over the four stages and a light per-pixel
head. Any mixer, norm and activation per stage works, as in classification.
"""

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import Conv2dNormActivation, FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from metaformer.model import MetaFormer
from metaformer.norms import build_norm
from metaformer.presets import build_preset


class MetaFormerBackbone(MetaFormer):
    """A MetaFormer without classifier that returns the outputs of stages `out_indices`, each through its own norm.

    Stages after the last index are dropped. Loading a classification checkpoint with `load_pretrained` ignores
    its final norm and head (and dropped stages) and reports the output norms as missing (they start fresh).
    """

    checkpoint_optional = ("out_norms.",)

    def __init__(self, out_indices: Sequence[int] = (0, 1, 2, 3), **kwargs: Any) -> None:
        kwargs.update(num_classes=0, global_pool="")
        super().__init__(**kwargs)
        num_stages = len(self.stages)
        self.out_indices = self.prune_intermediate_layers(list(out_indices), prune_norm=True)
        self.checkpoint_ignore = (
            "norm.",
            "head.",
            *(f"stages.{i}." for i in range(len(self.stages), num_stages)),
        )
        self.fixed_input_size = self._traits["fixed_input_size"] = self.bound_to_input_size()
        self.feature_channels = [self.feature_info[i]["num_chs"] for i in self.out_indices]
        self.out_norms = nn.ModuleList(
            build_norm(self.stage_norm_layers[i], self.feature_info[i]["num_chs"])
            if i in self.out_indices
            else nn.Identity()
            for i in range(len(self.stages))
        )
        self.pretrained_cfg = {**self.pretrained_cfg, **self.input_cfg()}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """The normed outputs of stages `out_indices`, NCHW."""
        return self.forward_intermediates(x, indices=self.out_indices, norm=True, intermediates_only=True)

    def norm_intermediate(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Each stage's output through its own norm (the official fork_feat)."""
        return self.out_norms[index](x)


def create_backbone(
    name: str = "poolformer_s12", out_indices: Sequence[int] = (0, 1, 2, 3), **overrides: Any
) -> MetaFormerBackbone:
    """Preset `name` as a dense backbone returning the normed outputs of stages `out_indices` (any override)."""
    return build_preset(name, MetaFormerBackbone, out_indices=tuple(out_indices), **overrides)


class MetaFormerFPN(nn.Module):
    """A MetaFormer backbone and torchvision's FeaturePyramidNetwork: an OrderedDict of maps, `out_channels` wide."""

    def __init__(
        self, body: MetaFormerBackbone, out_channels: int = 256, extra_blocks: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.feature_channels, out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(x)
        return self.fpn(
            OrderedDict((f"p{i + 2}", f) for i, f in zip(self.body.out_indices, features, strict=True))
        )


def _backbone(backbone: str | MetaFormerBackbone, out_indices: Sequence[int], options: dict[str, Any] | None):
    if isinstance(backbone, MetaFormerBackbone):
        return backbone
    if not isinstance(backbone, str):
        raise ValueError(
            f"backbone must be a preset name or a MetaFormerBackbone, got {type(backbone).__name__}"
        )
    return create_backbone(backbone, out_indices, **(options or {}))


def build_retinanet(
    num_classes: int,
    backbone: str | MetaFormerBackbone = "poolformer_s12",
    fpn_channels: int = 256,
    min_size: int = 800,
    max_size: int = 1333,
    backbone_options: dict[str, Any] | None = None,
    **retinanet_options: Any,
) -> RetinaNet:
    """torchvision's RetinaNet on a MetaFormer backbone and FPN, as the paper's COCO detector.

    The FPN takes stages 1-3 (strides 8, 16, 32) and adds P6 and P7 from the last stage (mmdetection's
    `add_extra_convs='on_input'`); anchors are 4x each level's stride, 3 scales x 3 ratios. `num_classes` as
    torchvision's RetinaNet counts them. The model takes a list of [0, 1] images (normalised with the backbone's
    `pretrained_cfg` mean/std) and, in training, targets with `boxes` (x1, y1, x2, y2) and `labels`; it returns
    the losses in training and the detections in eval mode. `min_size` / `max_size` set torchvision's resize.
    """
    body = _backbone(backbone, (1, 2, 3), backbone_options)
    if body.fixed_input_size:
        raise ValueError(
            "a detector resizes and pads its images, but this backbone is bound to one input size (a mixer such "
            "as mlp, fft or random, or a position embedding): use resolution-free mixers in every stage"
        )
    extra = LastLevelP6P7(body.feature_channels[-1], fpn_channels)
    strides = [body.feature_info[i]["reduction"] for i in body.out_indices]
    strides += [strides[-1] * 2, strides[-1] * 4]
    anchors = AnchorGenerator(
        tuple((4 * s, int(4 * s * 2 ** (1 / 3)), int(4 * s * 2 ** (2 / 3))) for s in strides),
        ((0.5, 1.0, 2.0),) * len(strides),
    )
    cfg = body.pretrained_cfg
    retinanet_options = {"image_mean": list(cfg["mean"]), "image_std": list(cfg["std"]), **retinanet_options}
    return RetinaNet(
        MetaFormerFPN(body, fpn_channels, extra),
        num_classes,
        min_size=min_size,
        max_size=max_size,
        anchor_generator=anchors,
        **retinanet_options,
    )


class SemanticFPN(nn.Module):
    """Semantic FPN (Kirillov et al., 2019): an FPN over the four stages and a light per-pixel head.

    Each pyramid level goes through 3x3 conv-GroupNorm-ReLU blocks with 2x upsampling until it reaches the first
    level's scale (stride 4); the levels are summed, classified per pixel by a 1x1 conv and upsampled to the
    input's size. Input: normalised images (B, C, H, W); output: `{"out": logits (B, num_classes, H, W)}`, as
    torchvision's segmentation models return.
    """

    def __init__(
        self,
        backbone: MetaFormerBackbone,
        num_classes: int,
        fpn_channels: int = 256,
        head_channels: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.fpn = FeaturePyramidNetwork(backbone.feature_channels, fpn_channels)
        strides = [backbone.feature_info[i]["reduction"] for i in backbone.out_indices]
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            steps = max(1, round(math.log2(stride / strides[0])))
            layers: list[nn.Module] = []
            for k in range(steps):
                layers.append(
                    Conv2dNormActivation(
                        fpn_channels if k == 0 else head_channels,
                        head_channels,
                        3,
                        norm_layer=lambda c: nn.GroupNorm(math.gcd(32, c), c),
                    )
                )
                if stride != strides[0]:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(head_channels, num_classes, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        levels = list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features))).values())
        out = self.scale_heads[0](levels[0])
        for head, level in zip(self.scale_heads[1:], levels[1:], strict=True):
            out = out + F.interpolate(head(level), size=out.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(out)
        return {"out": F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)}


def build_semantic_fpn(
    num_classes: int,
    backbone: str | MetaFormerBackbone = "poolformer_s12",
    fpn_channels: int = 256,
    head_channels: int = 128,
    dropout: float = 0.1,
    backbone_options: dict[str, Any] | None = None,
) -> SemanticFPN:
    """Semantic FPN on a MetaFormer backbone (all four stages), as the paper's ADE20K segmenter (150 classes)."""
    body = _backbone(backbone, (0, 1, 2, 3), backbone_options)
    if len(body.out_indices) < 2:
        raise ValueError(
            f"Semantic FPN needs at least two backbone stages, got out_indices {body.out_indices}"
        )
    return SemanticFPN(body, num_classes, fpn_channels, head_channels, dropout)


__all__ = [
    "MetaFormerFPN",
    "MetaFormerBackbone",
    "SemanticFPN",
    "build_retinanet",
    "build_semantic_fpn",
    "create_backbone",
]
