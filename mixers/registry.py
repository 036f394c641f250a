"""The token mixers' registry: `register_mixer("name")` adds a mixer from user code, `MIXERS` holds them all.

The registry class is the project's one (`metaformer.registry.Registry`, shared with norms, activations and data
sets); this module is the mixers' instance of it, so a user extending the mixers reads only this folder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from metaformer.registry import Registry

MIXERS = Registry("mixer")


def register_mixer(
    name: str, builder: Callable[..., Any] | None = None, *, override: bool = False
) -> Callable[..., Any]:
    """Register a token mixer class or factory under `name` (decorator or call)."""
    return MIXERS.register(name, builder, override=override)


__all__ = ["MIXERS", "Registry", "register_mixer"]
