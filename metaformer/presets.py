"""The PoolFormer family as the paper defines it (Table 1), the sequel's families, small CPU presets, `create_model`.

The sequel ("MetaFormer Baselines for Vision", docs/paper_v2.md): IdentityFormer, RandFormer and PoolFormerV2
(S12-M48), ConvFormer and CAFormer (S18-B36), each the same `MetaFormer` with the sequel's options (`_V2`), equal
to timm's `timm/models/metaformer.py` model of the same name (parameters, MACs and logits with its weights) and,
for IdentityFormer and RandFormer (not in timm), to sail-sg/metaformer's definitions. Their drop path rates (and
CAFormer's head dropout) are the official training scripts' (sail-sg/metaformer `scripts/`).

A preset is a dict of keyword values for `MetaFormer`; the architecture lives once in `model.py`. The presets
are also registered in timm's model registry as `ablation_<name>`, each with its `pretrained_cfg` (input size,
mean/std, crop), and built through timm's `build_model_with_cfg`, so `timm.create_model` builds them with
`features_only=True` / `out_indices` (timm's feature wrappers) and any `create_model` override;
`register_timm_model` registers a build of your own (a hybrid, another mixer) under a name of your choice.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from timm.models import build_model_with_cfg, register_model
from timm.models._builder import pretrained_cfg_for_features
from torch import nn

from metaformer.model import MetaFormer

M = TypeVar("M", bound=MetaFormer)

_S = {"dims": (64, 128, 320, 512)}
_M = {"dims": (96, 192, 384, 768)}

_CPU = {
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
}

# The sequel's block and macro design (sail-sg/metaformer, timm's MetaFormer defaults): a norm after the stem and
# before each downsampling conv (LayerNorm over channels, no bias), StarReLU in a bias-free channel MLP, no layer
# scale, res scale in stages 3-4, every norm with eps 1e-6, and the head averages first, then a LayerNorm (with bias).
_V2 = {
    "act": "starrelu",
    "mlp_bias": False,
    "layer_scale_init": None,
    "res_scale_init": (None, None, 1.0, 1.0),
    "norm_eps": 1e-6,
    "stem_norm": "ln_nobias",
    "down_norm": "ln_nobias",
    "head_norm": "ln",
    "head_pool_first": True,
}
# IdentityFormer, RandFormer, PoolFormerV2: GroupNorm(1) without bias in the blocks, a linear classifier.
_V2_GN = {**_V2, "norm": "gn_nobias"}
# ConvFormer, CAFormer: LayerNorm over channels without bias in the blocks, the MLP classifier.
_V2_LN = {**_V2, "norm": "ln_nobias", "mlp_head": True}
_SEPCONV = {"sepconv": {"act": "starrelu"}}  # ConvFormer's separable conv: StarReLU, no biases (its default)
_ATTN = {"attn": {"head_dim": 32, "qkv_bias": False, "proj_bias": False}}  # CAFormer's attention

_SIZES_12_48 = {  # depths, dims, drop path rate of the official training scripts (IdentityFormer/PoolFormerV2)
    "s12": ((2, 2, 6, 2), _S["dims"], 0.1),
    "s24": ((4, 4, 12, 4), _S["dims"], 0.1),
    "s36": ((6, 6, 18, 6), _S["dims"], 0.2),
    "m36": ((6, 6, 18, 6), _M["dims"], 0.3),
    "m48": ((8, 8, 24, 8), _M["dims"], 0.4),
}
_RANDFORMER_DPR = {"m48": 0.3}  # scripts/randformer/train_randformer_m48.sh: 0.3, the others as above
_SIZES_18_36 = {  # depths, dims (ConvFormer and CAFormer)
    "s18": ((3, 3, 9, 3), (64, 128, 320, 512)),
    "s36": ((3, 12, 18, 3), (64, 128, 320, 512)),
    "m36": ((3, 12, 18, 3), (96, 192, 384, 576)),
    "b36": ((3, 12, 18, 3), (128, 256, 512, 768)),
}
_CONVFORMER_DPR = {"s18": 0.2, "s36": 0.3, "m36": 0.4, "b36": 0.6}
_CAFORMER_DPR_HEAD_DROPOUT = {"s18": (0.15, 0.0), "s36": (0.3, 0.4), "m36": (0.4, 0.4), "b36": (0.6, 0.5)}
V2_FAMILIES = ("identityformer", "randformer", "poolformerv2", "convformer", "caformer")


def _v2_presets() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {}
    for size, (depths, dims, dpr) in _SIZES_12_48.items():
        shape = {"depths": depths, "dims": dims, "drop_path_rate": dpr}
        presets[f"identityformer_{size}"] = {**_V2_GN, **shape, "mixer": "identity"}
        presets[f"randformer_{size}"] = {
            **_V2_GN,
            **shape,
            "drop_path_rate": _RANDFORMER_DPR.get(size, dpr),
            # a frozen softmax-of-uniform token matrix of each stage's H*W tokens (RandomMixing) in stages 3-4
            "mixer": ["identity", "identity", "random", "random"],
        }
        presets[f"poolformerv2_{size}"] = {**_V2_GN, **shape, "mixer": "pool"}
    for size, (depths, dims) in _SIZES_18_36.items():
        shape = {"depths": depths, "dims": dims}
        presets[f"convformer_{size}"] = {
            **_V2_LN,
            **shape,
            "mixer": "sepconv",
            "mixer_options": _SEPCONV,
            "drop_path_rate": _CONVFORMER_DPR[size],
        }
        dpr, head_dropout = _CAFORMER_DPR_HEAD_DROPOUT[size]
        presets[f"caformer_{size}"] = {
            **_V2_LN,
            **shape,
            "mixer": ["sepconv", "sepconv", "attn", "attn"],
            "mixer_options": {**_SEPCONV, **_ATTN},
            "drop_path_rate": dpr,
            "head_dropout": head_dropout,
        }
    return presets


PRESETS: dict[str, dict[str, Any]] = {
    "poolformer_s12": {**_S, "depths": (2, 2, 6, 2), "layer_scale_init": 1e-5, "drop_path_rate": 0.1},
    "poolformer_s24": {**_S, "depths": (4, 4, 12, 4), "layer_scale_init": 1e-5, "drop_path_rate": 0.1},
    "poolformer_s36": {**_S, "depths": (6, 6, 18, 6), "layer_scale_init": 1e-6, "drop_path_rate": 0.2},
    "poolformer_m36": {**_M, "depths": (6, 6, 18, 6), "layer_scale_init": 1e-6, "drop_path_rate": 0.3},
    "poolformer_m48": {**_M, "depths": (8, 8, 24, 8), "layer_scale_init": 1e-6, "drop_path_rate": 0.4},
    # 28-32 px inputs (Fashion-MNIST, CIFAR): a 3x3 stride-2 stem gives stages at 14, 7, 4, 2 for 28 px.
    "poolformer_cpu": _CPU,
    # The main job's model: the same stages on 4x4 patches (a 4x4 stride-4 stem), at 7, 4, 2, 1 px for 28 px:
    # a quarter of the MACs and about 2.4x the training throughput of the 14 px stages on a 2-core CPU. Its block
    # is BatchNorm + ReLU, which learn faster than the paper's GroupNorm + GELU in a few epochs on this data.
    # Its last stage is a 1x1 grid: pooling there is pool(x) - x = 0, so it mixes no tokens (by design).
    "poolformer_cpu_patch4": {
        **_CPU,
        "stem_kernel": 4,
        "stem_stride": 4,
        "stem_padding": 0,
        "norm": "bn",
        "act": "relu",
    },
    **_v2_presets(),
    # The sequel's PoolFormerV2 block and macro design (stem/downsampling norms, StarReLU, res scale, pooled-first
    # LayerNorm head) on poolformer_cpu's stages: the baseline of the sequel's ablations at the mini scale
    # (conf/ablation_v2/).
    "poolformerv2_cpu": {**_CPU, **_V2_GN, "mixer": "pool"},
}
# What every preset shares: MetaFormer's own defaults (read from its signature, not copied).
_COMMON = {
    k: inspect.signature(MetaFormer).parameters[k].default for k in ("mixer", "norm", "act", "mlp_ratios")
}
TIMM_PREFIX = "ablation_"


def _cfg(**fields: Any) -> dict[str, Any]:
    """A preset's timm `pretrained_cfg`: ImageNet at 224 px unless said otherwise (the official crop_pct)."""
    return {
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "num_classes": 1000,
        "first_conv": "stem.conv",
        "classifier": "head",
        "fixed_input_size": False,
        "paper_ids": "arXiv:2111.11418",
        **fields,
    }


_V2_CFG = _cfg(crop_pct=1.0, paper_ids="arXiv:2210.13452")  # timm's and the official cfg: no crop
_FASHION_MNIST_CFG = _cfg(
    input_size=(1, 28, 28),
    pool_size=(2, 2),
    num_classes=10,
    crop_pct=1.0,
    interpolation="bilinear",
    mean=(0.2860,),
    std=(0.3530,),
)
# The data each preset expects; the fields a build decides (input/pool size, classes) are checked against the
# built model in the tests.
PRESET_CFGS: dict[str, dict[str, Any]] = {
    "poolformer_s12": _cfg(),
    "poolformer_s24": _cfg(),
    "poolformer_s36": _cfg(),
    "poolformer_m36": _cfg(crop_pct=0.95),
    "poolformer_m48": _cfg(crop_pct=0.95),
    # Fashion-MNIST: 1 channel, 28 px, its own mean/std (conf/data/fashion_mnist.yaml), no crop.
    "poolformer_cpu": _FASHION_MNIST_CFG,
    "poolformer_cpu_patch4": {**_FASHION_MNIST_CFG, "pool_size": (1, 1)},
    **{
        name: {
            **_V2_CFG,
            "fixed_input_size": name.startswith("randformer"),  # its random matrices are bound to 224 px
            **({"classifier": "head.fc2"} if PRESETS[name].get("mlp_head") else {}),
        }
        for name in PRESETS
        if name.startswith(V2_FAMILIES) and name != "poolformerv2_cpu"
    },
    "poolformerv2_cpu": {**_FASHION_MNIST_CFG, "paper_ids": "arXiv:2210.13452"},
}
_DATA_FIELDS = ("crop_pct", "interpolation", "mean", "std", "paper_ids")


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
    return build_preset(name, MetaFormer, **overrides)


def build_preset(name: str, model_cls: type[M], **overrides: Any) -> M:
    """Build preset `name` as `model_cls` (MetaFormer or a subclass such as the dense backbone), with overrides."""
    kwargs = preset_config(name)
    overrides = {k: v for k, v in overrides.items() if v is not None or k in _NULLABLE}
    if isinstance(overrides.get("mixer_options"), Mapping) and isinstance(
        kwargs.get("mixer_options"), Mapping
    ):
        overrides["mixer_options"] = _merge_options(kwargs["mixer_options"], overrides["mixer_options"])
    kwargs.update(overrides)
    try:
        model = model_cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"model '{name}': {e}") from e
    model.pretrained_cfg = _build_cfg(name, model)
    return model


# Fields where None is a real value (None turns the feature off), not "keep the preset's".
_NULLABLE = {
    "layer_scale_init",
    "res_scale_init",
    "head_norm",
    "mixer_options",
    "stem_norm",
    "down_norm",
    "norm_eps",
}


def _merge_options(preset: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """A preset's mixer options with the given ones over them, per mixer and option: CAFormer's attention keeps
    `proj_bias=False` when `{"attn": {"head_dim": 64}}` is given. `mixer_options=None` drops the preset's."""
    merged = {name: dict(opts) for name, opts in preset.items()}
    for name, opts in given.items():
        merged[name] = {**merged.get(name, {}), **dict(opts)}
    return merged


def _build_cfg(name: str, model: MetaFormer) -> dict[str, Any]:
    """The preset's data fields (mean/std only where they fit the channel count) over the model's own cfg."""
    data = {k: PRESET_CFGS[name][k] for k in _DATA_FIELDS}
    if len(data["mean"]) != model.in_chans:
        data.pop("mean"), data.pop("std")
    return {**model.pretrained_cfg, **data, **model.input_cfg()}


# timm reads a module's `default_cfgs` when a model is registered; register_timm_model adds to it.
default_cfgs: dict[str, dict[str, Any]] = {}


def register_timm_model(timm_name: str, preset: str = "poolformer_s12", **overrides: Any) -> str:
    """Register preset + overrides in timm's registry as `timm_name`, so `timm.create_model(timm_name)` builds it.

    `register_timm_model("hybrid_s12", mixer=["pool", "pool", "attn", "attn"])`; the registered `pretrained_cfg`
    is the build's own (its input size, its pool size, a fixed input size for resolution-bound mixers).
    Returns the name.
    """
    with torch.device("meta"):  # the cfg needs the architecture, not the weights
        default_cfgs[timm_name] = create_model(preset, **overrides).pretrained_cfg
    _register(timm_name, preset, overrides)
    return timm_name


def _register(timm_name: str, preset: str, overrides: dict[str, Any]) -> Callable[..., nn.Module]:
    def build(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(
                f"{timm_name} has no hub weights here; build it and call "
                f"metaformer.load_pretrained(model, path) with a timm or official PoolFormer checkpoint"
            )
        built_cfg: dict[str, Any] = {}

        def make(**model_kwargs: Any) -> MetaFormer:
            model = create_model(preset, **{**overrides, **model_kwargs})
            built_cfg.update(model.pretrained_cfg)  # timm replaces it with the registry's after this returns
            return model

        overlay = kwargs.get("pretrained_cfg_overlay") or {}
        model = build_model_with_cfg(
            make,
            timm_name,
            False,
            feature_cfg={"out_indices": (0, 1, 2, 3), "flatten_sequential": True},
            **kwargs,
        )
        # timm set its registry cfg; keep its source fields, but describe this build (input size, classes, ...).
        cfg = {**model.pretrained_cfg, **built_cfg, **overlay}
        if isinstance(model, MetaFormer):
            model.pretrained_cfg = cfg
        else:  # one of timm's feature wrappers
            model.pretrained_cfg = model.default_cfg = pretrained_cfg_for_features(cfg)
        return model

    build.__name__ = build.__qualname__ = timm_name
    build.__doc__ = (
        f"MetaFormer preset '{preset}' with {overrides or 'no overrides'} (MetaFormer ablation framework)."
    )
    build.__module__ = __name__
    return register_model(build)


default_cfgs.update({f"{TIMM_PREFIX}{name}": dict(cfg) for name, cfg in PRESET_CFGS.items()})
for _name in PRESETS:
    globals()[f"{TIMM_PREFIX}{_name}"] = _register(f"{TIMM_PREFIX}{_name}", _name, {})
