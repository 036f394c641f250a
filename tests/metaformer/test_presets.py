"""Presets against the paper's Table 1 and Table 5: parameters, MACs, layer scale, drop path."""

import pytest
import torch

from metaformer import create_model, preset_config, profile


def on_meta(name: str, **overrides) -> torch.nn.Module:
    """Build a model on the meta device: shapes only, no memory, and counting its MACs costs milliseconds."""
    with torch.device("meta"):
        return create_model(name, **overrides)


# The paper's Table 1 (docs/paper.md): params (M), MACs (G) at 224.
PAPER = {
    "poolformer_s12": (11.9, 1.8),
    "poolformer_s24": (21.4, 3.4),
    "poolformer_s36": (30.8, 5.0),
    "poolformer_m36": (56.1, 8.8),
    "poolformer_m48": (73.4, 11.6),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_params_and_macs_match_the_paper_within_1_percent(name):
    params_m, gmacs = PAPER[name]
    stats = profile(on_meta(name))
    assert stats["params_m"] == pytest.approx(params_m, rel=0.01)
    assert stats["gmacs"] == pytest.approx(gmacs, rel=0.01)


@pytest.mark.parametrize(
    "name, depths, ls, dpr",
    [
        ("poolformer_s12", (2, 2, 6, 2), 1e-5, 0.1),
        ("poolformer_s24", (4, 4, 12, 4), 1e-5, 0.1),
        ("poolformer_s36", (6, 6, 18, 6), 1e-6, 0.2),
        ("poolformer_m36", (6, 6, 18, 6), 1e-6, 0.3),
        ("poolformer_m48", (8, 8, 24, 8), 1e-6, 0.4),
    ],
)
def test_preset_hyperparameters(name, depths, ls, dpr):
    cfg = preset_config(name)
    assert tuple(cfg["depths"]) == depths
    assert (cfg["layer_scale_init"], cfg["drop_path_rate"], cfg["mlp_ratios"]) == (ls, dpr, 4.0)
    assert (cfg["mixer"], cfg["norm"], cfg["act"]) == ("pool", "gn", "gelu")


# The paper's Table 5 (docs/paper.md; S12 at 224): rows whose cost differs from the baseline, as the paper prints them
# (one decimal); the hybrids also within 2%.
TABLE5 = [
    ({"mixer": "random"}, 11.9, 3.3),
    ({"channel_mlp": False}, 2.5, 0.2),
    ({"mixer": ["pool", "pool", "pool", "attn"], "norm": "ln", "pos_embed": [0, 0, 0, 1]}, 14.0, 1.9),
    ({"mixer": ["pool", "pool", "attn", "attn"], "norm": "ln", "pos_embed": [0, 0, 1, 0]}, 16.5, 2.5),
    ({"mixer": ["pool", "pool", "pool", "mlp"]}, 11.9, 1.8),
    ({"mixer": ["pool", "pool", "mlp", "mlp"]}, 12.2, 1.9),
]


@pytest.mark.parametrize("overrides, params_m, gmacs", TABLE5)
def test_table5_costs(overrides, params_m, gmacs):
    if "pos_embed" in overrides:
        overrides = {**overrides, "pos_embed": [bool(p) for p in overrides["pos_embed"]]}
    stats = profile(on_meta("poolformer_s12", **overrides))
    assert (round(stats["params_m"], 1), round(stats["gmacs"], 1)) == (params_m, gmacs)
    if isinstance(overrides.get("mixer"), list):
        assert stats["params_m"] == pytest.approx(params_m, rel=0.02)
        assert stats["gmacs"] == pytest.approx(gmacs, rel=0.02)


def test_profile_at_another_size_and_on_a_real_device():
    model = create_model("poolformer_cpu")  # pooling and convolutions only: MACs grow with the pixels
    small, large = profile(model, img_size=32)["gmacs"], profile(model, img_size=64)["gmacs"]
    assert large == pytest.approx(4 * small, rel=0.01)
    hybrid = {"mixer": ["pool", "attn", "mlp", "attn"]}  # the meta device counts what real weights count
    assert profile(create_model("poolformer_cpu", **hybrid)) == profile(on_meta("poolformer_cpu", **hybrid))


def test_the_main_jobs_preset_is_the_cpu_preset_on_4x4_patches():
    # patch4's block is the main job's (BatchNorm + ReLU); poolformer_cpu with that block has its layout
    cpu, patch4 = create_model("poolformer_cpu", norm="bn", act="relu"), create_model("poolformer_cpu_patch4")
    assert (patch4.stage_norms, patch4.stage_acts) == (["bn"] * 4, ["relu"] * 4)
    assert cpu.stage_resolutions == [(14, 14), (7, 7), (4, 4), (2, 2)]
    assert patch4.stage_resolutions == [(7, 7), (4, 4), (2, 2), (1, 1)]
    assert patch4.stem.conv.kernel_size == patch4.stem.conv.stride == (4, 4)
    # the same blocks and layout: only the stem's kernel differs
    shapes = {k: v.shape for k, v in cpu.state_dict().items()}
    differ = {k for k, v in patch4.state_dict().items() if shapes.pop(k) != v.shape}
    assert differ == {"stem.conv.weight"} and not shapes
    assert patch4(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert profile(patch4)["gmacs"] < 0.3 * profile(cpu)["gmacs"]
