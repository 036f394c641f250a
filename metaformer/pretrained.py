"""Loading MetaFormer weights: this project's checkpoints, timm's `timm/models/metaformer.py` models (PoolFormer
v1 and the sequel's PoolFormerV2, ConvFormer, CAFormer), the official PoolFormer release (sail-sg/poolformer) and
the sequel's official release (sail-sg/metaformer: IdentityFormer, RandFormer, PoolFormerV2, ConvFormer, CAFormer).

The layout is detected from the keys and remapped onto ours (which follows timm's stage/block names). Linear
weights of a checkpoint (the sequel's release writes its channel MLPs and separable convolutions' 1x1 layers as
`nn.Linear`, timm its attention stages' MLPs) load into our 1x1 convolutions, reshaped.
Files are read with `torch.load(weights_only=True)` or safetensors: no arbitrary objects are unpickled.
Note: timm's PoolFormer averages the last map and then applies a LayerNorm, whereas the paper, the official
release and this project normalise the whole map (GroupNorm, 1 group) and then average; with the same weights
the stage features are identical and the logits differ slightly.

Dense-prediction backbones (`metaformer.dense`): the official `fork_feat` norms `norm0/norm2/norm4/norm6` load into
the backbone's `out_norms.0-3`; the official detection and segmentation checkpoints (mmdet/mmseg, keys under
`backbone.`) give their backbone part; a classification checkpoint loads into a backbone with its final norm and
head ignored and the backbone's output norms reported missing, not refused.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metaformer.errors import one_line

StateDict = Mapping[str, torch.Tensor]


@dataclass
class LoadReport:
    """What `load_pretrained` did: the detected layout and the keys that did not match."""

    layout: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(
        default_factory=list
    )  # checkpoint keys the model does not use (a backbone's head)


def read_checkpoint(path: str | Path) -> Any:
    """Read a torch checkpoint onto the CPU with `weights_only=True`; raise one line if it is unsafe or unreadable.

    A file that needs more than containers, numbers, strings and tensors (a pickle that would import a class or
    call a function, e.g. to run code) is refused before anything in it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"refusing to load {path}: not a weights-only checkpoint, it asks to build objects that could run "
            f"code ({_unpickling_reason(e)}); if you trust its source, convert it with "
            f"torch.load(path, weights_only=False) yourself and save its tensors"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(
            f"cannot read the checkpoint {path}: {_first_sentence(e)} (truncated or corrupt?)"
        ) from e


def _unpickling_reason(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), None)
    return (reason or (lines[-1] if lines else type(error).__name__)).rstrip(".")


def _first_sentence(error: Exception) -> str:
    return one_line(str(error) or type(error).__name__).split(". ")[0].rstrip(".")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a .safetensors file or a torch checkpoint (weights only), unwrapping it."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        from safetensors.torch import load_file

        return load_file(str(path))
    return unwrap(read_checkpoint(path))


def unwrap(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """Take the model weights out of a training checkpoint and strip DDP's/compile's key prefixes."""
    for key in ("model", "state_dict", "model_state"):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    out = {}
    for k, v in checkpoint.items():
        if isinstance(v, torch.Tensor):
            out[re.sub(r"^(module\.|_orig_mod\.)+", "", k)] = v
    return out


def detect_layout(state_dict: StateDict) -> str:
    """'official' (sail-sg/poolformer), 'official_v2' (sail-sg/metaformer), 'timm' (timm's metaformer.py models)
    or 'metaformer' (this project)."""
    keys = set(state_dict)
    if any(k.startswith(("network.", "patch_embed.")) for k in keys):
        return "official"
    if any(k.startswith("downsample_layers.") for k in keys):
        return "official_v2"
    if any(k.startswith(("head.fc.", "head.norm.")) for k in keys):
        return "timm"
    return "metaformer"


def _from_official(key: str) -> str:
    key = key.replace("patch_embed.proj.", "stem.conv.")
    key = re.sub(r"^norm([0246])\.", lambda m: f"out_norms.{int(m.group(1)) // 2}.", key)  # fork_feat norms
    key = re.sub(r"layer_scale_([12])$", r"layer_scale\1.scale", key)
    m = re.match(r"network\.(\d+)\.(.*)$", key)
    if m:
        idx, rest = int(m.group(1)), m.group(2)
        if idx % 2 == 0:  # a stage's blocks
            key = f"stages.{idx // 2}.blocks.{rest}"
        else:  # the downsampling embedding before the next stage
            key = f"stages.{idx // 2 + 1}.downsample.{rest.replace('proj.', 'conv.')}"
    return key


def _from_official_v2(key: str) -> str:
    """sail-sg/metaformer's keys: `downsample_layers.0` (the stem: conv, post_norm), `downsample_layers.i`
    (pre_norm, conv), `stages.i.j` (blocks), `norm` and `head` (Linear or MlpHead) as ours."""
    key = re.sub(r"^downsample_layers\.0\.conv\.", "stem.conv.", key)
    key = re.sub(r"^downsample_layers\.0\.post_norm\.", "stem.norm.", key)
    key = re.sub(r"^downsample_layers\.(\d+)\.pre_norm\.", r"stages.\1.downsample.norm.", key)
    key = re.sub(r"^downsample_layers\.(\d+)\.conv\.", r"stages.\1.downsample.conv.", key)
    return re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", key)


def _from_timm(key: str) -> str:
    return re.sub(r"^head\.fc\.", "head.", re.sub(r"^head\.norm\.", "norm.", key))


_REMAP = {
    "official": _from_official,
    "official_v2": _from_official_v2,
    "timm": _from_timm,
    "metaformer": lambda k: k,
}


def convert_state_dict(state_dict: StateDict) -> tuple[str, dict[str, torch.Tensor]]:
    """Detect the layout and return (layout, state dict renamed to this project's keys)."""
    layout = detect_layout(state_dict)
    return layout, {_REMAP[layout](k): v for k, v in state_dict.items()}


def split_backbone(state_dict: StateDict) -> tuple[dict[str, torch.Tensor], list[str]]:
    """From a detector or segmenter checkpoint (keys under `backbone.`), the backbone's keys and the rest's names."""
    if not any(k.startswith("backbone.") for k in state_dict):
        return dict(state_dict), []
    backbone = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
    return backbone, [k for k in state_dict if not k.startswith("backbone.")]


def _fit(value: torch.Tensor, own: torch.Tensor | None) -> torch.Tensor:
    """A Linear weight (out, in) for our 1x1 convolution (out, in, 1, 1); anything else as it is."""
    if own is not None and own.dim() == 4 and own.shape[2:] == (1, 1) and value.shape == own.shape[:2]:
        return value.reshape(own.shape)
    return value


def load_pretrained(model: nn.Module, source: str | Path | StateDict, strict: bool = True) -> LoadReport:
    """Load weights of any supported layout into `model`; strict by default, with a clear report of mismatches.

    A model may declare `checkpoint_ignore` (prefixes of checkpoint keys it has no use for, dropped and reported
    as `ignored`) and `checkpoint_optional` (prefixes of its own keys that may be missing, reported but not
    refused), as the dense backbone does for classification checkpoints.
    """
    state_dict = read_state_dict(source) if isinstance(source, str | Path) else unwrap(source)
    state_dict, ignored = split_backbone(state_dict)
    layout, converted = convert_state_dict(state_dict)
    drop = tuple(getattr(model, "checkpoint_ignore", ()))
    ignored += [k for k in converted if k.startswith(drop)]
    converted = {k: v for k, v in converted.items() if not k.startswith(drop)}
    own = model.state_dict()
    converted = {k: _fit(v, own.get(k)) for k, v in converted.items()}
    shape_errors = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in converted.items()
        if k in own and own[k].shape != v.shape
    ]
    if shape_errors:
        raise ValueError(
            f"{layout} checkpoint does not fit the model ({len(shape_errors)} shape mismatches, e.g. "
            f"{'; '.join(shape_errors[:3])}); build the model with the checkpoint's num_classes/dims, or "
            f"call model.reset_classifier(n) after loading"
        )
    result = model.load_state_dict(converted, strict=False)
    report = LoadReport(layout, list(result.missing_keys), list(result.unexpected_keys), ignored)
    optional = tuple(getattr(model, "checkpoint_optional", ()))
    missing = [k for k in report.missing if not k.startswith(optional)]
    if strict and (missing or report.unexpected):
        raise ValueError(
            f"{layout} checkpoint does not match the model: {len(missing)} missing keys "
            f"{missing[:5]}, {len(report.unexpected)} unexpected keys {report.unexpected[:5]}; "
            f"pass strict=False to load the rest"
        )
    return report
