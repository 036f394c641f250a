"""Normalization layers by name, all on NCHW tensors: the paper's Table 5 norms and MetaFormer v2's no-bias ones.

`gn` is GroupNorm with one group, the paper's "Modified Layer Normalization" (statistics over channels and
positions of a sample); `ln` normalises over channels only, per position (vanilla LN).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timm.layers import LayerNorm2d
from timm.models.metaformer import GroupNorm1NoBias, LayerNorm2dNoBias
from torch import nn

from mixers.registry import Registry

NORMS = Registry("norm")


def register_norm(name: str, builder: Callable[..., Any] | None = None, *, override: bool = False) -> Any:
    """Register a norm builder `builder(dim) -> nn.Module` under `name` (decorator or call)."""
    return NORMS.register(name, builder, override=override)


def list_norms() -> list[str]:
    """Names of the registered norms."""
    return NORMS.names()


def build_norm(name: str | Callable[..., nn.Module], dim: int) -> nn.Module:
    """Build norm `name` for `dim` channels."""
    return NORMS.get(name)(dim)


register_norm("gn", lambda dim: nn.GroupNorm(1, dim))
register_norm(
    "gn_nobias", lambda dim: GroupNorm1NoBias(dim, eps=1e-5)
)  # nn.GroupNorm has no bias= before torch 2.12
register_norm("ln", lambda dim: LayerNorm2d(dim, eps=1e-5))
register_norm("ln_nobias", lambda dim: LayerNorm2dNoBias(dim, eps=1e-5))
register_norm("bn", nn.BatchNorm2d)
register_norm("none", lambda dim: nn.Identity())
