"""Fixtures of the model-library tests."""

import re
from collections.abc import Callable

import pytest
import torch


def _to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename timm's / our keys to the sail-sg/poolformer release layout (patch_embed, network.N, layer_scale_1,
    and the fork_feat norms norm0, norm2, norm4, norm6 of a backbone)."""
    out = {}
    for k, v in state_dict.items():
        k = k.replace("stem.conv.", "patch_embed.proj.")
        k = re.sub(r"layer_scale([12])\.scale$", r"layer_scale_\1", k)
        k = re.sub(
            r"stages\.(\d+)\.downsample\.conv\.", lambda m: f"network.{2 * int(m.group(1)) - 1}.proj.", k
        )
        k = re.sub(r"stages\.(\d+)\.blocks\.", lambda m: f"network.{2 * int(m.group(1))}.", k)
        k = re.sub(r"^out_norms\.(\d)\.", lambda m: f"norm{2 * int(m.group(1))}.", k)
        k = k.replace("head.norm.", "norm.").replace("head.fc.", "head.")
        out[k] = v
    return out


@pytest.fixture
def to_official() -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """A state dict renamed to the official PoolFormer release's layout."""
    return _to_official


# sail-sg/metaformer writes these 1x1 layers as nn.Linear (channels-last), timm and this project as 1x1 convs.
_LINEAR_IN_V2_RELEASE = re.compile(r"\.(mlp\.fc[12]|token_mixer\.pwconv[12])\.weight$")


def _to_official_v2(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename timm's / our keys to the sail-sg/metaformer release's layout (the inverse of timm's
    `checkpoint_filter_fn`): `downsample_layers.0.{conv,post_norm}` for the stem, `downsample_layers.i.{pre_norm,conv}`,
    `stages.i.j` for the blocks, `norm` and `head` for the classifier, and Linear weights for the 1x1 layers."""
    out = {}
    for k, v in state_dict.items():
        k = k.replace("stem.conv.", "downsample_layers.0.conv.").replace(
            "stem.norm.", "downsample_layers.0.post_norm."
        )
        k = re.sub(r"^stages\.(\d+)\.downsample\.norm\.", r"downsample_layers.\1.pre_norm.", k)
        k = re.sub(r"^stages\.(\d+)\.downsample\.conv\.", r"downsample_layers.\1.conv.", k)
        k = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", k)
        k = re.sub(r"^head\.fc\.", "head.", re.sub(r"^head\.norm\.", "norm.", k))  # output norm first
        if _LINEAR_IN_V2_RELEASE.search(k) and v.dim() == 4:
            v = v.flatten(1)
        out[k] = v
    return out


@pytest.fixture
def to_official_v2() -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """A state dict renamed to the sequel's official release's layout (sail-sg/metaformer)."""
    return _to_official_v2
