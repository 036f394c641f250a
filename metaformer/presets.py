"""The PoolFormer family as the paper defines it (Table 1), a small CPU preset, and `create_model`.

A preset is a dict of keyword values for `MetaFormer`; the architecture lives once in `model.py`. The presets
are also registered in timm's model registry as `ablation_<name>`, so `timm.create_model` builds them.
"""

from __future__ import annotations

from typing import Any

from timm.models import register_model

from metaformer.model import MetaFormer

_S = {"dims": (64, 128, 320, 512)}
_M = {"dims": (96, 192, 384, 768)}

PRESETS: dict[str, dict[str, Any]] = {
    "poolformer_s12": {**_S, "depths": (2, 2, 6, 2), "layer_scale_init": 1e-5, "drop_path_rate": 0.1},
    "poolformer_s24": {**_S, "depths": (4, 4, 12, 4), "layer_scale_init": 1e-5, "drop_path_rate": 0.1},
    "poolformer_s36": {**_S, "depths": (6, 6, 18, 6), "layer_scale_init": 1e-6, "drop_path_rate": 0.2},
    "poolformer_m36": {**_M, "depths": (6, 6, 18, 6), "layer_scale_init": 1e-6, "drop_path_rate": 0.3},
    "poolformer_m48": {**_M, "depths": (8, 8, 24, 8), "layer_scale_init": 1e-6, "drop_path_rate": 0.4},
    # 28-32 px inputs (Fashion-MNIST, CIFAR): a 3x3 stride-2 stem gives stages at 14, 7, 4, 2 for 28 px.
    "poolformer_cpu": {
        "dims": (32, 64, 128, 192),
        "depths": (2, 2, 4, 2),
        "layer_scale_init": 1e-5,
        "drop_path_rate": 0.0,
        "stem_kernel": 3,
        "stem_stride": 2,
        "stem_padding": 1,
        "img_size": 28,
        "in_chans": 1,
        "num_classes": 10,
    },
}
_COMMON = {"mixer": "pool", "norm": "gn", "act": "gelu", "mlp_ratios": 4.0}
TIMM_PREFIX = "ablation_"


def list_models() -> list[str]:
    """Names of the model presets."""
    return sorted(PRESETS)


def preset_config(name: str) -> dict[str, Any]:
    """The keyword values of preset `name` (a copy)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model '{name}'; presets: {', '.join(list_models())}")
    return {**_COMMON, **PRESETS[name]}


def create_model(name: str, **overrides: Any) -> MetaFormer:
    """Build preset `name` with any field overridden (mixer, norm, act, depths, num_classes, img_size, ...)."""
    kwargs = preset_config(name)
    kwargs.update({k: v for k, v in overrides.items() if v is not None or k in _NULLABLE})
    try:
        return MetaFormer(**kwargs)
    except TypeError as e:
        raise ValueError(f"model '{name}': {e}") from e


# Fields where None is a real value (None turns the feature off), not "keep the preset's".
_NULLABLE = {"layer_scale_init", "res_scale_init", "head_norm", "mixer_options"}


def _timm_entry(name: str):
    def build(pretrained: bool = False, **kwargs: Any) -> MetaFormer:
        if pretrained:
            raise ValueError(
                f"{TIMM_PREFIX}{name} has no hub weights here; build it and call "
                f"metaformer.load_pretrained(model, path) with a timm or official PoolFormer checkpoint"
            )
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        return create_model(name, **kwargs)

    build.__name__ = f"{TIMM_PREFIX}{name}"
    build.__qualname__ = build.__name__
    build.__doc__ = f"PoolFormer preset '{name}' from the MetaFormer ablation framework."
    build.__module__ = __name__
    return build


for _name in PRESETS:
    globals()[f"{TIMM_PREFIX}{_name}"] = register_model(_timm_entry(_name))
