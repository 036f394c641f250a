"""The sequel's families ("MetaFormer Baselines for Vision", docs/paper_v2.md) against timm and the official release.

PoolFormerV2, ConvFormer and CAFormer are compared with timm's model of the same name; IdentityFormer and RandFormer
(not in timm) with timm's PoolFormerV2 of the same size whose pooling is replaced by the identity, or by
sail-sg/metaformer's RandomMixing (written here from its definition). Parameters and MACs are counted on the meta
device at 224 px; logits with timm's (randomised) weights at 64 px, the smallest size of each family.
"""

import pytest
import timm
import torch
from timm.models.metaformer import checkpoint_filter_fn
from torch import nn

from metaformer import count_params, create_model, list_models, load_pretrained, preset_config, profile
from metaformer.presets import V2_FAMILIES
from metaformer.pretrained import convert_state_dict

V2 = [n for n in list_models() if n.startswith(V2_FAMILIES) and n != "poolformerv2_cpu"]

# sail-sg/metaformer's README (the sequel's Tables): params (M; RandFormer: + frozen random parameters), MACs (G)
# at 224 px, as printed (ConvFormer and CAFormer to the nearest million).
PAPER = {
    **{f"identityformer_{s}": (p, m, 0) for s, p, m in [
        ("s12", 11.9, 1.8), ("s24", 21.3, 3.4), ("s36", 30.8, 5.0), ("m36", 56.1, 8.8), ("m48", 73.3, 11.5)]},
    **{f"randformer_{s}": (p, m, f) for s, p, m, f in [
        ("s12", 11.9, 1.9, 0.2), ("s24", 21.3, 3.5, 0.5), ("s36", 30.8, 5.2, 0.7), ("m36", 56.1, 9.0, 0.7),
        ("m48", 73.3, 11.9, 0.9)]},
    **{f"poolformerv2_{s}": (p, m, 0) for s, p, m in [
        ("s12", 11.9, 1.8), ("s24", 21.3, 3.4), ("s36", 30.8, 5.0), ("m36", 56.1, 8.8), ("m48", 73.3, 11.5)]},
    **{f"convformer_{s}": (p, m, 0) for s, p, m in [
        ("s18", 27, 3.9), ("s36", 40, 7.6), ("m36", 57, 12.8), ("b36", 100, 22.6)]},
    **{f"caformer_{s}": (p, m, 0) for s, p, m in [
        ("s18", 26, 4.1), ("s36", 39, 8.0), ("m36", 56, 13.2), ("b36", 99, 23.2)]},
}  # fmt: skip


class OfficialRandomMixing(nn.Module):
    """sail-sg/metaformer's RandomMixing, on NCHW: a frozen parameter softmax(U[0,1)) of N x N, `W @ tokens`."""

    def __init__(self, num_tokens: int) -> None:
        super().__init__()
        matrix = torch.softmax(torch.rand(num_tokens, num_tokens), dim=-1)
        self.random_matrix = nn.Parameter(matrix, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        mixed = torch.einsum("mn, bnc -> bmc", self.random_matrix, tokens)
        return mixed.reshape(b, h, w, c).permute(0, 3, 1, 2)


def timm_reference(name: str, img_size: int = 224, **kwargs) -> nn.Module:
    """timm's model of `name`; for IdentityFormer / RandFormer, timm's PoolFormerV2 with their token mixers."""
    family, size = name.split("_")
    if family not in ("identityformer", "randformer"):
        return timm.create_model(name, **kwargs)
    model = timm.create_model(f"poolformerv2_{size}", **kwargs)
    for i, stage in enumerate(model.stages):
        tokens = (img_size // 2 ** (i + 2)) ** 2
        for block in stage.blocks:
            random = family == "randformer" and i >= 2
            block.token_mixer = OfficialRandomMixing(tokens) if random else nn.Identity()
    return model


@pytest.fixture
def no_init_on_meta(monkeypatch):
    """timm's weight init on meta tensors costs most of a meta build and sets nothing: skip it."""
    monkeypatch.setattr(timm.models.metaformer, "trunc_normal_", lambda tensor, **kwargs: tensor)


@pytest.mark.parametrize("name", V2)
def test_params_macs_and_weights_equal_timm_and_the_paper(name, no_init_on_meta):
    with torch.device("meta"):
        ours, ref = create_model(name), timm_reference(name)
    stats = profile(ours)
    frozen = sum(b.numel() for n, b in ours.named_buffers() if n.endswith("random_matrix"))
    ref_frozen = sum(p.numel() for p in ref.parameters() if not p.requires_grad)
    assert (
        frozen == ref_frozen
    )  # the random matrices: buffers here, frozen parameters in the official release
    assert round(stats["params_m"] * 1e6) + frozen == count_params(ref)
    if name.startswith(("poolformerv2", "convformer", "caformer")):  # timm's own model: the same MACs
        assert stats["gmacs"] == pytest.approx(profile(ref)["gmacs"], rel=1e-9)
    # (IdentityFormer/RandFormer: timm's PoolFormerV2 with their mixers at S12, test_logits_... below)
    params_m, gmacs, frozen_m = PAPER[name]
    digits = 0 if name.startswith(("convformer", "caformer")) else 1
    assert (round(stats["params_m"], digits), round(stats["gmacs"], 1)) == (params_m, gmacs)
    assert round(frozen / 1e6, 1) == frozen_m
    # timm's weights fit ours key for key, shape for shape (timm's Linear MLPs in attention stages reshaped)
    layout, converted = convert_state_dict(ref.state_dict())
    own = ours.state_dict()
    assert layout == "timm" and set(converted) == set(own)
    assert all(v.numel() == own[k].numel() for k, v in converted.items())
    # the registered timm cfg describes the default build
    cfg = timm.models.get_pretrained_cfg(f"ablation_{name}").to_dict()
    keys = ("input_size", "pool_size", "num_classes", "classifier", "fixed_input_size")
    assert {k: cfg[k] for k in keys} == {k: ours.pretrained_cfg[k] for k in keys}
    assert (cfg["crop_pct"], cfg["paper_ids"]) == (1.0, "arXiv:2210.13452")


def randomised(model: nn.Module) -> nn.Module:
    """Every norm weight, scale, StarReLU and bias away from its trivial initial value."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 or name.endswith("scale"):
                if name.endswith(("weight", "scale")):
                    p.copy_(torch.rand_like(p) * 0.5 + 0.75)
                else:
                    p.copy_(torch.randn_like(p) * 0.1)
    return model


SMALLEST = ["identityformer_s12", "randformer_s12", "poolformerv2_s12", "convformer_s18", "caformer_s18"]


@pytest.mark.parametrize("name", SMALLEST)
def test_logits_equal_timm_with_its_weights_and_the_official_layout(name, to_official_v2):
    size = 64  # RandFormer's matrices are built for it: 4x4 and 2x2 tokens in stages 3-4
    torch.manual_seed(0)
    ref = randomised(timm_reference(name, img_size=size, drop_path_rate=0.0))
    ours = create_model(name, img_size=size, drop_path_rate=0.0)
    report = load_pretrained(ours, ref.state_dict())
    assert report.layout == "timm" and not report.missing and not report.unexpected
    x = torch.randn(2, 3, size, size)
    for train in (False, True):  # no BatchNorm and no dropout at rate 0: the same in both modes, as in timm
        ours.train(train), ref.train(train)
        with torch.no_grad():
            assert (ours(x) - ref(x)).abs().max() < 1e-4, train
    # sail-sg/metaformer's layout (Linear 1x1 layers, downsample_layers, stages.i.j) of the same weights
    official = to_official_v2(ref.state_dict())
    assert "downsample_layers.0.post_norm.weight" in official and "stages.0.0.mlp.fc1.weight" in official
    if name != "identityformer_s12" and name != "randformer_s12":  # timm converts it back to its own, exactly
        back = checkpoint_filter_fn(official, ref)
        assert set(back) == set(ref.state_dict())
        assert all(torch.equal(back[k], v) for k, v in ref.state_dict().items())
    with torch.no_grad():
        for p in ours.parameters():
            p.zero_()
    assert load_pretrained(ours.eval(), official).layout == "official_v2"  # strict: every tensor replaced
    with torch.no_grad():
        assert (ours(x) - ref.eval()(x)).abs().max() < 1e-4
    if name.startswith(("identityformer", "randformer")):  # their MACs are the swapped reference's
        assert profile(ours)["gmacs"] == pytest.approx(profile(ref, img_size=size)["gmacs"], rel=1e-9)


def test_the_sequels_options_reach_every_layer():
    with torch.device("meta"):
        v2, cafe = create_model("poolformerv2_s12"), create_model("caformer_s18")
    norms = [m for m in v2.modules() if isinstance(m, nn.GroupNorm | nn.LayerNorm)]
    assert len(norms) == 1 + 3 + 2 * 12 + 1 and all(m.eps == 1e-6 for m in norms)  # stem, down, blocks, head
    assert (
        v2.stem.norm.bias is None and v2.stages[1].downsample.norm.bias is None and v2.norm.bias is not None
    )
    block = v2.stages[2].blocks[0]
    assert block.mlp.fc1.bias is None and type(block.mlp.act).__name__ == "StarReLU"
    assert isinstance(block.layer_scale1, nn.Identity) and block.res_scale1.scale.shape == (320,)
    assert isinstance(v2.stages[1].blocks[0].res_scale1, nn.Identity)
    attn = cafe.stages[2].blocks[0].token_mixer
    assert attn.qkv.bias is None and attn.proj.bias is None and attn.num_heads == 10
    assert type(cafe.stages[0].blocks[0].token_mixer.act1).__name__ == "StarReLU"
    assert type(cafe.head).__name__ == "MlpHead" and cafe.head.fc1.out_features == 4 * 512


def test_mixer_options_merge_with_the_presets():
    with torch.device("meta"):
        wider = create_model("caformer_s18", mixer_options={"attn": {"head_dim": 64}})
        plain = create_model("caformer_s18", mixer_options=None)
    attn = wider.stages[2].blocks[0].token_mixer
    assert (attn.num_heads, attn.proj.bias) == (5, None)  # head_dim given, proj_bias=False kept
    assert type(wider.stages[0].blocks[0].token_mixer.act1).__name__ == "StarReLU"
    assert plain.stages[2].blocks[0].token_mixer.proj.bias is not None  # None: the mixers' own defaults
    assert preset_config("caformer_s18")["mixer_options"]["attn"] == {
        "head_dim": 32,
        "qkv_bias": False,
        "proj_bias": False,
    }


def test_the_mlp_head_follows_reset_classifier_and_head_dropout_needs_it():
    model = create_model("caformer_s18", dims=(16, 32, 48, 64), depths=1, num_classes=3)
    x = torch.randn(1, 3, 64, 64)
    assert model(x).shape == (1, 3) and model.head.fc2.out_features == 3
    model.reset_classifier(5)
    assert type(model.head).__name__ == "MlpHead" and model(x).shape == (1, 5)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (1, 64)
    with pytest.raises(ValueError, match="head_dropout is the MLP classifier's dropout"):
        create_model("poolformerv2_s12", head_dropout=0.1)


def test_v1_presets_keep_the_papers_head_and_stem():
    with torch.device("meta"):
        v1 = create_model("poolformer_s12")
    assert isinstance(v1.stem.norm, nn.Identity) and isinstance(v1.stages[1].downsample.norm, nn.Identity)
    assert not v1.head_pool_first and isinstance(v1.head, nn.Linear) and v1.norm.eps == 1e-5
    assert v1.stages[0].blocks[0].mlp.fc1.bias is not None
