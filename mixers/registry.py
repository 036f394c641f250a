"""The project's one name -> builder registry class, and the token mixers' instance of it.

`Registry` serves token mixers, norms, activations and data sets: users extend the framework from their own code
(`@register_mixer("gated")`, `register_norm(...)`) without editing ours; an unknown name fails with the list of
registered names, and a builder can also be named by an import path (`package.module:ClassName`) so a sweep can
point at code that was never registered. It lives here, in the lowest package (`mixers` imports nothing from
`metaformer`; `metaformer` builds on `mixers`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class Registry:
    """Maps names to builders (classes or factory functions) for one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(
        self, name: str, builder: Callable[..., Any] | None = None, *, override: bool = False
    ) -> Callable[..., Any]:
        """Register `builder` under `name`; usable as a decorator. Re-registering needs `override=True`."""

        def add(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders and not override and self._builders[name] is not obj:
                raise ValueError(
                    f"{self.kind} '{name}' is already registered ({self._builders[name].__qualname__}); "
                    f"pass override=True to replace it"
                )
            self._builders[name] = obj
            return obj

        return add if builder is None else add(builder)

    def get(self, name: str | Callable[..., Any]) -> Callable[..., Any]:
        """Return the builder for a registered name, an import path `pkg.mod:Attr`, or a callable as is."""
        if callable(name):
            return name
        if name in self._builders:
            return self._builders[name]
        if ":" in name:
            return _import_path(name, self.kind)
        raise ValueError(f"unknown {self.kind} '{name}'; registered: {', '.join(self.names())}")

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders


def _import_path(path: str, kind: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{kind} '{path}': cannot import module '{module_name}' ({e})") from e
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{kind} '{path}': module '{module_name}' has no attribute '{attr}'") from None
    if not callable(obj):
        raise ValueError(f"{kind} '{path}' is not a class or function")
    return obj


MIXERS = Registry("mixer")


def register_mixer(
    name: str, builder: Callable[..., Any] | None = None, *, override: bool = False
) -> Callable[..., Any]:
    """Register a token mixer class or factory under `name` (decorator or call)."""
    return MIXERS.register(name, builder, override=override)


__all__ = ["MIXERS", "Registry", "register_mixer"]
