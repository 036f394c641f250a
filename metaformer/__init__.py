"""MetaFormer models with any token mixer, norm and activation per stage; the PoolFormer family as presets.

from metaformer import create_model
model = create_model("poolformer_s12", mixer=["pool", "pool", "attn", "attn"], norm="gn")

The names below are imported on first use (PEP 562), so `import metaformer.registry` (which the `mixers` package
needs) does not load the model, and `mixers` and `metaformer` can be imported in either order.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Eager, unlike the rest: `metaformer.profile` is both a submodule and this function, and a lazy name would lose
# to the submodule once anything imported it. It needs only torch.
from metaformer.profile import count_params, profile

# Public name -> the submodule that defines it.
_EXPORTS = {
    "ACTS": "acts",
    "list_acts": "acts",
    "register_act": "acts",
    "MetaFormerBlock": "block",
    "MetaFormer": "model",
    "per_stage": "model",
    "NORMS": "norms",
    "list_norms": "norms",
    "register_norm": "norms",
    "PRESETS": "presets",
    "create_model": "presets",
    "list_models": "presets",
    "preset_config": "presets",
    "LoadReport": "pretrained",
    "load_pretrained": "pretrained",
    "Registry": "registry",
}

__all__ = [
    "ACTS",
    "NORMS",
    "PRESETS",
    "LoadReport",
    "MetaFormer",
    "MetaFormerBlock",
    "Registry",
    "count_params",
    "create_model",
    "list_acts",
    "list_models",
    "list_norms",
    "load_pretrained",
    "per_stage",
    "preset_config",
    "profile",
    "register_act",
    "register_norm",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'metaformer' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"metaformer.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from metaformer.acts import ACTS, list_acts, register_act
    from metaformer.block import MetaFormerBlock
    from metaformer.model import MetaFormer, per_stage
    from metaformer.norms import NORMS, list_norms, register_norm
    from metaformer.presets import PRESETS, create_model, list_models, preset_config
    from metaformer.pretrained import LoadReport, load_pretrained
    from metaformer.registry import Registry
