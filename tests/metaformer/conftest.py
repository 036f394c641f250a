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
