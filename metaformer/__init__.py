"""MetaFormer models with any token mixer, norm and activation per stage; the PoolFormer family as presets.

from metaformer import create_model
model = create_model("poolformer_s12", mixer=["pool", "pool", "attn", "attn"], norm="gn")

Importing this package registers the presets in timm's model registry (`timm.create_model("ablation_...")`).
It builds on `mixers` (token mixers, the registry class, activations), which imports nothing from here.
"""

from __future__ import annotations

from metaformer.block import MetaFormerBlock
from metaformer.model import MetaFormer, per_stage
from metaformer.norms import NORMS, list_norms, register_norm
from metaformer.presets import PRESETS, create_model, list_models, preset_config
from metaformer.pretrained import LoadReport, load_pretrained
from metaformer.profile import count_params, profile
from mixers.acts import ACTS, list_acts, register_act
from mixers.registry import Registry

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
