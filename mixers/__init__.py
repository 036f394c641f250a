"""Token mixers: every one maps an NCHW tensor to one of the same shape, so any mixer fits any stage.

A mixer is built as `builder(dim, **options)`; a builder that declares a `resolution` parameter also receives its
stage's feature-map size `(H, W)` (spatial MLP, global filter, random matrix are bound to it). Options reach a
mixer by keyword, per mixer name (`{"pool": {"pool_size": 5}}`), never as one bag shared by all mixers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from mixers.registry import MIXERS, Registry, register_mixer


def list_mixers() -> list[str]:
    """Names of the registered token mixers."""
    return MIXERS.names()


def build_mixer(
    name: str | Callable[..., nn.Module],
    dim: int,
    resolution: tuple[int, int] | None = None,
    **options: Any,
) -> nn.Module:
    """Build mixer `name` (registered name, `pkg.mod:Class` path or callable) for `dim` channels."""
    builder = MIXERS.get(name)
    if resolution is not None and _accepts(builder, "resolution"):
        options["resolution"] = tuple(resolution)
    try:
        return builder(dim, **options)
    except TypeError as e:
        raise ValueError(f"mixer '{_name(name)}' rejected options {sorted(options)}: {e}") from e


def _accepts(builder: Callable[..., Any], param: str) -> bool:
    target = builder.__init__ if inspect.isclass(builder) else builder
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return param in params


def _name(name: object) -> str:
    return name if isinstance(name, str) else getattr(name, "__qualname__", repr(name))


# Importing the families registers them.
from mixers import attention, conv, fourier, identity, pooling, token_matrix  # noqa: E402, F401

__all__ = ["MIXERS", "Registry", "build_mixer", "list_mixers", "register_mixer"]
