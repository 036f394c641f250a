"""Normalization layers by name, all on NCHW tensors: the paper's Table 5 norms and MetaFormer v2's no-bias ones.

`gn` is GroupNorm with one group, the paper's "Modified Layer Normalization" (statistics over channels and
positions of a sample); `ln` normalises over channels only, per position (vanilla LN). `gn_nobias` and
`ln_nobias` are the sequel's norms (sail-sg/metaformer's `LayerNormGeneral(bias=False)` over (C, H, W) and over C).

Every built-in norm takes an `eps` (1e-5 unless given; the sequel's models use 1e-6, `MetaFormer(norm_eps=1e-6)`).
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


def build_norm(name: str | Callable[..., nn.Module], dim: int, eps: float | None = None) -> nn.Module:
    """Build norm `name` for `dim` channels; `eps` (None: the norm's own default) goes to the builder."""
    builder = NORMS.get(name)
    if eps is None:
        return builder(dim)
    try:
        return builder(dim, eps=eps)
    except TypeError as e:
        raise ValueError(f"norm '{_label(name)}' does not take eps={eps}: {e}") from e


def _label(obj: object) -> str:
    return obj if isinstance(obj, str) else getattr(obj, "__qualname__", repr(obj))


register_norm("gn", lambda dim, eps=1e-5: nn.GroupNorm(1, dim, eps=eps))
register_norm(
    "gn_nobias", lambda dim, eps=1e-5: GroupNorm1NoBias(dim, eps=eps)
)  # nn.GroupNorm has no bias= before torch 2.12
register_norm("ln", lambda dim, eps=1e-5: LayerNorm2d(dim, eps=eps))
register_norm("ln_nobias", lambda dim, eps=1e-5: LayerNorm2dNoBias(dim, eps=eps))
register_norm("bn", nn.BatchNorm2d)
register_norm("none", lambda dim, eps=None: nn.Identity())
