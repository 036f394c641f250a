"""The model: any mixer x any norm in any stage, per-stage fields, switches, features, user plugins."""

import textwrap

import pytest
import timm
import torch
from torch import nn

from metaformer import create_model, list_acts, list_models, list_norms
from mixers import MIXERS, list_mixers

TINY = dict(dims=(8, 16, 16, 32), depths=(1, 1, 1, 1), img_size=32, num_classes=5, drop_path_rate=0.0)


@pytest.mark.parametrize("norm", sorted(list_norms()))
@pytest.mark.parametrize("name", sorted(list_mixers()))
def test_every_mixer_with_every_norm_in_every_stage(name, norm):
    torch.manual_seed(0)
    mixer = [name] * 4  # every stage, with its own width and feature-map size, in one model
    model = create_model("poolformer_s12", mixer=mixer, norm=norm, in_chans=3, **TINY)
    assert model.stage_mixers == mixer
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("act", sorted(list_acts()))
def test_every_activation(act):
    model = create_model("poolformer_s12", act=act, **TINY)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_readme_calls():
    h = create_model("poolformer_s12", mixer=["pool", "pool", "attn", "attn"], norm="gn", num_classes=10)
    assert h.stage_mixers == ["pool", "pool", "attn", "attn"]
    assert isinstance(h.stages[2].blocks[0].norm1, nn.GroupNorm)  # attention stages keep GroupNorm, NCHW
    x = create_model("poolformer_s12", mixer="fft", norm="bn", act="relu", num_classes=10)
    assert isinstance(x.stages[0].blocks[0].mlp.act, nn.ReLU)
    assert x(torch.randn(1, 3, 224, 224)).shape == (1, 10)


def test_list_models():
    v2 = {
        f"{family}_{size}"
        for family in ("identityformer", "randformer", "poolformerv2")
        for size in SIZES_12_48
    }
    v2 |= {
        f"{family}_{size}" for family in ("convformer", "caformer") for size in ("s18", "s36", "m36", "b36")
    }
    assert set(list_models()) == {
        "poolformer_cpu",
        "poolformer_cpu_patch4",
        "poolformerv2_cpu",
        *(f"poolformer_{size}" for size in SIZES_12_48),
        *v2,
    }


SIZES_12_48 = ("s12", "s24", "s36", "m36", "m48")


@pytest.mark.parametrize(
    "field, value", [("mixer", ["pool", "attn"]), ("depths", [1, 1, 1]), ("norm", ["gn"] * 5)]
)
def test_per_stage_list_of_wrong_length(field, value):
    with pytest.raises(ValueError, match=f"{field} has {len(value)} entries but the model has 4 stages"):
        create_model("poolformer_s12", **{**TINY, field: value})


@pytest.mark.parametrize("field, bad", [("mixer", "poool"), ("norm", "layernorm"), ("act", "tanhh")])
def test_unknown_names_list_the_choices(field, bad):
    with pytest.raises(ValueError, match=f"unknown {field} '{bad}'; registered: "):
        create_model("poolformer_s12", **{**TINY, field: bad})


def test_unknown_preset():
    with pytest.raises(
        ValueError, match="unknown model 'poolformer_s13'; presets: caformer_b36, caformer_m36"
    ):
        create_model("poolformer_s13")


def test_per_stage_fields_and_mixer_options_by_name():
    model = create_model(
        "poolformer_s12",
        **{**TINY, "depths": (1, 2, 1, 1)},
        mixer=["pool", "attn", "dwconv", "pool"],
        mixer_options={"pool": {"pool_size": 5}, "attn": {"head_dim": 8}, "dwconv": {"kernel_size": 7}},
        mlp_ratios=[1, 2, 3, 4],
        layer_scale_init=[None, 1e-2, 1e-3, 1e-4],
    )
    s = model.stages
    assert s[0].blocks[0].token_mixer.pool.kernel_size == 5
    assert s[1].blocks[1].token_mixer.num_heads == 2
    assert s[2].blocks[0].token_mixer.conv.kernel_size == (7, 7)
    assert [st.blocks[0].mlp.fc1.out_channels for st in s] == [8, 32, 48, 128]
    assert isinstance(s[0].blocks[0].layer_scale1, nn.Identity)
    assert s[1].blocks[0].layer_scale1.scale.detach().eq(1e-2).all()


def test_mixer_options_can_differ_per_stage():
    model = create_model(
        "poolformer_s12", **TINY, mixer_options=[{"pool": {"pool_size": k}} for k in (3, 5, 7, 9)]
    )
    assert [st.blocks[0].token_mixer.pool.kernel_size for st in model.stages] == [3, 5, 7, 9]


def test_mixer_options_for_unknown_mixer_is_an_error():
    with pytest.raises(ValueError, match="mixer_options has an entry for unknown mixer 'pol'"):
        create_model("poolformer_s12", **TINY, mixer_options={"pol": {"pool_size": 5}})


def test_drop_path_grows_linearly_over_all_blocks():
    model = create_model("poolformer_s12")  # 12 blocks, peak 0.1
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for st in model.stages for b in st.blocks]
    assert rates == pytest.approx([0.1 * i / 11 for i in range(12)])


def test_residual_and_channel_mlp_switches():
    model = create_model("poolformer_s12", **TINY, residual=False, channel_mlp=False, layer_scale_init=None)
    block = model.stages[0].blocks[0]
    assert not hasattr(block, "mlp")
    x = torch.randn(1, 8, 8, 8)
    assert torch.allclose(block(x), block.token_mixer(block.norm1(x)))  # no skip connection


def test_res_scale_metaformer_v2():
    model = create_model("poolformer_s12", **TINY, res_scale_init=1.0)
    assert model.stages[0].blocks[0].res_scale1.scale.detach().eq(1.0).all()


def test_pos_embed_bound_to_its_stage():
    model = create_model("poolformer_s12", **TINY, pos_embed=[False, False, True, False])
    assert model.stages[0].pos_embed is None
    assert model.stages[2].pos_embed.shape == (1, 16, 2, 2)  # 32 px: stem /4 -> 8, then 4, 2
    with pytest.raises(ValueError, match="position embedding was built for"):
        model(torch.randn(1, 3, 64, 64))


def test_stage_features_for_dense_prediction():
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = create_model("poolformer_s12", num_classes=0)
        x = torch.empty(1, 3, 224, 224)
    feats = model.forward_stages(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 56, 56), (128, 28, 28), (320, 14, 14), (512, 7, 7)]
    assert model.forward_features(x).shape == (1, 512, 7, 7)
    assert model(x).shape == (1, 512)  # num_classes=0: pooled features


def test_resolution_bound_model_rejects_other_input_size():
    model = create_model("poolformer_cpu", mixer=["pool", "pool", "mlp", "mlp"])
    assert model.stage_resolutions == [(14, 14), (7, 7), (4, 4), (2, 2)]
    model(torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match="mixer 'mlp' was built for a 4x4 feature map but received 5x5"):
        model(torch.randn(1, 1, 40, 40))  # 20, 10, 5, 3


def test_cpu_preset_takes_28_and_32_px():
    assert create_model("poolformer_cpu")(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    cifar = create_model("poolformer_cpu", in_chans=3, img_size=32, num_classes=100, mixer="fft")
    assert cifar(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_user_mixer_defined_outside_the_repository(tmp_path, monkeypatch):
    (tmp_path / "lab_mixers.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            from mixers import register_mixer

            @register_mixer("gated")
            class Gated(nn.Module):
                def __init__(self, dim, kernel_size=3):
                    super().__init__()
                    self.gate = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

                def forward(self, x):
                    return x * torch.sigmoid(self.gate(x))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import lab_mixers  # noqa: F401  (registers "gated")

    try:
        model = create_model(
            "poolformer_s12",
            **TINY,
            mixer=["pool", "pool", "gated", "attn"],
            mixer_options={"gated": {"kernel_size": 5}},
        )
        assert type(model.stages[2].blocks[0].token_mixer).__name__ == "Gated"
        assert model.stages[2].blocks[0].token_mixer.gate.kernel_size == (5, 5)
        model(torch.randn(1, 3, 32, 32)).sum().backward()
        by_path = create_model("poolformer_s12", **TINY, mixer="lab_mixers:Gated")
        assert model.stage_mixers[2] == "gated" and by_path.stage_mixers[0] == "lab_mixers:Gated"
    finally:
        MIXERS._builders.pop("gated", None)


def test_register_norm_and_act_from_user_code():
    from metaformer import ACTS, NORMS, register_act, register_norm

    register_norm("test_in", lambda dim: nn.InstanceNorm2d(dim, affine=True))
    register_act("test_tanh", nn.Tanh)
    try:
        model = create_model("poolformer_s12", **TINY, norm="test_in", act="test_tanh")
        assert isinstance(model.stages[0].blocks[0].norm1, nn.InstanceNorm2d)
        with pytest.raises(ValueError, match="already registered"):
            register_act("test_tanh", nn.ReLU)
    finally:
        NORMS._builders.pop("test_in")
        ACTS._builders.pop("test_tanh")


def test_presets_are_in_timms_registry():
    model = timm.create_model(
        "ablation_poolformer_s12", num_classes=7, mixer=["pool", "pool", "pool", "attn"]
    )
    assert model.stage_mixers[-1] == "attn" and model.num_classes == 7
    assert "ablation_poolformer_m48" in timm.list_models("ablation_*")
    with pytest.raises(ValueError, match="load_pretrained"):
        timm.create_model("ablation_poolformer_s12", pretrained=True)
