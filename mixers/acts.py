"""Activations by name, for the channel MLP and for mixers that have one (sepconv): GELU (the paper's), ReLU,
SiLU, StarReLU and squared ReLU."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timm.models.metaformer import SquaredReLU, StarReLU
from torch import nn

from mixers.registry import Registry

ACTS = Registry("act")


def register_act(name: str, builder: Callable[..., Any] | None = None, *, override: bool = False) -> Any:
    """Register an activation builder `builder() -> nn.Module` under `name` (decorator or call)."""
    return ACTS.register(name, builder, override=override)


def list_acts() -> list[str]:
    """Names of the registered activations."""
    return ACTS.names()


def get_act(name: str | Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Return the activation builder (a zero-argument callable) for `name`."""
    return ACTS.get(name)


register_act("gelu", nn.GELU)
register_act("relu", nn.ReLU)
register_act("silu", nn.SiLU)
register_act("starrelu", StarReLU)
register_act("squared_relu", SquaredReLU)
