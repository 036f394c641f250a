"""The timm model contract, checked as timm's own model tests check it, on every preset and on hybrid builds."""

import re

import pytest
import timm
import torch
from timm.data import resolve_data_config
from timm.models import FeatureListNet, get_notrace_functions, get_notrace_modules
from timm.models._features import FeatureGetterNet
from timm.optim import create_optimizer_v2
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from metaformer import list_models
from metaformer.presets import register_timm_model

# Small builds of the PoolFormer presets, the sequel's block on the CPU stages (poolformerv2_cpu) and the sequel's
# CAFormer and RandFormer at their smallest size (the contract does not depend on size; CAFormer has the
# stem/downsampling norms, the MLP head, separable convolutions and attention; RandFormer is bound to its input
# size), and the paper's hybrids. The other presets of the sequel: tests/metaformer/test_presets_v2.py.
SMALL = {"depths": (1, 1, 1, 1), "dims": (16, 32, 48, 64)}
CONTRACT_PRESETS = [n for n in list_models() if n.startswith("poolformer_")] + [
    "poolformerv2_cpu",
    "caformer_s18",
    "randformer_s12",
]
BUILDS = {name: (name, SMALL) for name in CONTRACT_PRESETS} | {
    "hybrid": ("poolformer_s12", {**SMALL, "mixer": ["pool", "pool", "attn", "attn"]}),
    "hybrid_ln_pos": (
        "poolformer_s12",
        {
            **SMALL,
            "mixer": ["pool", "pool", "attn", "attn"],
            "norm": "ln",
            "pos_embed": [False, False, True, False],
            "img_size": 64,  # a position embedding fixes the input size
        },
    ),
}


def build(key, **kwargs):
    preset, overrides = BUILDS[key]
    return timm.create_model(f"ablation_{preset}", **{**overrides, **kwargs})


def sample_input(model, batch=2):
    c, h, w = model.pretrained_cfg["input_size"]
    if not model.pretrained_cfg["fixed_input_size"]:
        h, w = min(h, 64), min(w, 64)
    return torch.randn(batch, c, h, w)


@pytest.mark.parametrize("name", CONTRACT_PRESETS)  # the sequel's others: test_presets_v2.py
def test_pretrained_cfg_of_every_preset(name):
    with torch.device("meta"):  # the cfg needs the architecture, not the weights
        model = timm.create_model(f"ablation_{name}")
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    registered = timm.models.get_pretrained_cfg(f"ablation_{name}").to_dict()
    for key in (
        "input_size",
        "pool_size",
        "num_classes",
        "mean",
        "std",
        "crop_pct",
        "interpolation",
        "first_conv",
    ):
        assert cfg[key] == registered[key], key  # the registry describes the default build exactly
    assert cfg["pool_size"] == model.stage_resolutions[-1]
    assert cfg["input_size"] == (model.in_chans, *model.img_size)
    assert (
        f"{cfg['first_conv']}.weight" in model.state_dict()
        and f"{cfg['classifier']}.weight" in model.state_dict()
    )
    assert cfg["fixed_input_size"] is name.startswith("randformer")  # its random matrices are bound to 224 px
    data = resolve_data_config(model=model)
    if "_cpu" in name:  # Fashion-MNIST: grey 28 px, its own statistics, no crop
        assert data["input_size"] == (1, 28, 28) and data["mean"] == (0.2860,) and data["std"] == (0.3530,)
        assert (data["crop_pct"], data["interpolation"], cfg["num_classes"]) == (1.0, "bilinear", 10)
    else:
        assert data["input_size"] == (3, 224, 224) and data["mean"] == (0.485, 0.456, 0.406)
        crop = 1.0 if not name.startswith("poolformer_") else 0.95 if name.startswith("poolformer_m") else 0.9
        assert data["crop_pct"] == crop  # the sequel's models: timm's and the official crop_pct, 1.0


def test_pretrained_cfg_follows_overrides():
    cifar = timm.create_model("ablation_poolformer_cpu", in_chans=3, img_size=32, num_classes=100)
    data = resolve_data_config(model=cifar)
    assert data["input_size"] == (3, 32, 32) and len(data["mean"]) == 3  # the 1-channel stats do not fit
    assert cifar.pretrained_cfg["num_classes"] == 100 and cifar.pretrained_cfg["pool_size"] == (2, 2)


@pytest.mark.parametrize("mixer", ["mlp", "fft", "random"])
def test_resolution_bound_mixers_mark_a_fixed_input_size(mixer):
    model = timm.create_model("ablation_poolformer_cpu", mixer=["pool", "pool", mixer, mixer])
    assert model.pretrained_cfg["fixed_input_size"] is True
    assert timm.models.get_model_input_config(model)["fixed_input_size"] is True
    model(torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match=f"mixer '{mixer}' was built for a 4x4 feature map but received 5x5"):
        model(torch.randn(1, 1, 40, 40))


def test_position_embedding_marks_a_fixed_input_size():
    model = timm.create_model("ablation_poolformer_cpu", pos_embed=[False, False, True, False])
    assert model.pretrained_cfg["fixed_input_size"] is True
    with pytest.raises(
        ValueError, match="position embedding was built for a 4x4 feature map but the stage received"
    ):
        model(torch.randn(1, 1, 40, 40))


def test_register_timm_model_builds_by_name():
    name = register_timm_model(
        "test_ablation_mlp_cpu", "poolformer_cpu", mixer=["pool", "pool", "mlp", "attn"]
    )
    assert name in timm.list_models("test_ablation_*")
    assert timm.models.get_pretrained_cfg_value(name, "fixed_input_size") is True
    model = timm.create_model(name, num_classes=3)
    assert model.stage_mixers == ["pool", "pool", "mlp", "attn"] and model.num_classes == 3
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)


@pytest.mark.parametrize("key", BUILDS)
def test_head_contract(key):
    model = build(key).eval()
    x = sample_input(model)
    features = model.forward_features(x)
    h, w = features.shape[-2:]
    assert features.shape[1] == model.num_features == model.head_hidden_size
    assert model.forward_head(features, pre_logits=True).shape == (2, model.head_hidden_size)
    assert model.get_classifier() is model.head and model(x).shape == (2, model.num_classes)
    model.reset_classifier(0)
    assert model.num_classes == 0 and model(x).shape == (2, model.num_features)
    model.reset_classifier(0, "")
    assert model(x).shape == (2, model.num_features, h, w)
    model.reset_classifier(7, "avg")
    assert model(x).shape == (2, 7)
    unpooled = build(key, num_classes=0, global_pool="").eval()
    assert unpooled(x).shape == (2, model.num_features, h, w)


def test_global_pool_choices_are_checked():
    with pytest.raises(ValueError, match="global_pool 'max' is not supported; choose 'avg'"):
        build("poolformer_cpu", global_pool="max")
    with pytest.raises(ValueError, match="use num_classes=0"):
        build("poolformer_cpu", global_pool="")
    with pytest.raises(ValueError, match="use num_classes=0"):
        build("poolformer_cpu").reset_classifier(5, "")


@pytest.mark.parametrize("key", ["poolformer_s12", "hybrid_ln_pos"])
def test_grad_checkpointing_recomputes_stages_and_keeps_gradients(key):
    torch.manual_seed(0)
    model = build(key, drop_path_rate=0.0)
    x = sample_input(model)
    calls, stage_forward = [], model.stages[1].forward
    model.stages[1].forward = lambda x: calls.append(1) or stage_forward(x)  # counts runs, recomputation too

    def grads():
        model.zero_grad()
        model(x).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain, plain_calls = grads(), len(calls)
    model.set_grad_checkpointing()
    checkpointed = grads()
    assert (plain_calls, len(calls) - plain_calls) == (1, 2)  # the stage ran again in the backward pass
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b)


def test_group_matcher_gives_layer_decay_groups_by_depth():
    model = build("hybrid_ln_pos")
    groups = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    scale = {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    assert (
        scale["stem.conv.weight"]
        < scale["stages.0.blocks.0.mlp.fc1.weight"]
        < scale["stages.3.blocks.0.norm1.weight"]
    )
    assert scale["stages.2.pos_embed"] == scale["stages.2.blocks.0.norm1.weight"]
    assert scale["head.weight"] == 1.0
    coarse = timm.models.group_parameters(model, model.group_matcher(coarse=True))
    assert len(coarse) == 1 + 4 + 1  # stem, four stages, then the final norm and head together


def test_no_weight_decay_covers_position_embeddings():
    model = build("hybrid_ln_pos")
    assert model.no_weight_decay() == {"stages.2.pos_embed"}
    groups = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05).param_groups
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.stages[2].pos_embed) in no_decay and id(model.stem.conv.weight) not in no_decay


@pytest.mark.parametrize("key", ["poolformer_cpu", "poolformer_s12", "hybrid", "caformer_s18"])
def test_features_only_uses_timms_wrappers(key):
    model = build(key, features_only=True, out_indices=(1, 3)).eval()
    assert isinstance(model, FeatureListNet)
    x = sample_input(model)
    reductions = model.feature_info.reduction()
    outputs = model(x)
    assert [o.shape[1] for o in outputs] == model.feature_info.channels()
    assert [o.shape[-1] for o in outputs] == [-(-x.shape[-1] // r) for r in reductions]
    assert "num_classes" not in model.pretrained_cfg and model.pretrained_cfg["input_size"][0] == x.shape[1]
    torch.manual_seed(0)
    getter = build(key, features_only=True, feature_cls="getter").eval()
    assert isinstance(getter, FeatureGetterNet)
    torch.manual_seed(0)
    reference = build(key).eval()  # the same initial weights
    with torch.no_grad():
        for a, b in zip(getter(x), reference.forward_intermediates(x, intermediates_only=True), strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("key", ["poolformer_s12", "hybrid_ln_pos", "caformer_s18"])
def test_forward_intermediates_and_pruning(key):
    model = build(key).eval()
    x = sample_input(model)
    with torch.no_grad():
        final, stages = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [s.shape[1] for s in stages] == [info["num_chs"] for info in model.feature_info]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        torch.testing.assert_close(last_two[1], stages[3])
        early = model.forward_intermediates(x, indices=[0, 1], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[1], stages[1])
        normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], model.norm(stages[3]))
    with pytest.raises(ValueError, match="output_fmt 'NHWC' is not supported"):
        model.forward_intermediates(x, output_fmt="NHWC")
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert len(model.stages) == 2 and model.num_features == model.feature_info[1]["num_chs"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), stages[1])  # no norm, no pool, no head left


@pytest.mark.parametrize("key", ["poolformer_cpu", "hybrid_ln_pos", "fixed_mlp", "caformer_s18"])
def test_fx_trace_and_torch_export_match_eager(key):
    model = (
        timm.create_model("ablation_poolformer_cpu", mixer=["pool", "pool", "mlp", "random"])
        if key == "fixed_mlp"
        else build(key)
    ).eval()
    x = sample_input(model, batch=1)
    tracer = {"leaf_modules": get_notrace_modules(), "autowrap_functions": get_notrace_functions()}
    _, nodes = get_graph_node_names(model, tracer_kwargs=tracer)
    traced = create_feature_extractor(model, return_nodes=[nodes[-1]], tracer_kwargs=tracer)
    exported = torch.export.export(model, (x,)).module()
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(next(iter(traced(x).values())), expected)
        torch.testing.assert_close(exported(x), expected)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_of_a_preset_and_a_hybrid():
    for key in ("poolformer_s12", "hybrid", "caformer_s18"):
        with timm.layers.set_scriptable(True):
            model = build(key).eval()
        x = sample_input(model, batch=1)
        with torch.no_grad():
            torch.testing.assert_close(torch.jit.script(model)(x), model(x))


def test_module_names_in_feature_info_exist():
    model = build("hybrid")
    names = dict(model.named_modules())
    assert all(info["module"] in names for info in model.feature_info)
    assert all(re.fullmatch(r"stages\.\d", info["module"]) for info in model.feature_info)
