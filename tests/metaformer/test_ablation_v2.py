"""conf/ablation_v2/: the sequel's ablations over the PoolFormerV2 block at the mini scale (poolformerv2_cpu)."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from metaformer import create_model
from metaformer.engine.validation import validate

CONF = Path(__file__).resolve().parents[2] / "conf"
ROWS = sorted(p.stem for p in (CONF / "ablation_v2").glob("*.yaml"))
V2_BLOCK = (["pool"] * 4, ["gn_nobias"] * 4, ["starrelu"] * 4)

# row -> (mixers per stage, norm, act, the model keywords it sets besides the preset's name, paper top-1)
ROW_BLOCKS = {
    "baseline": (["pool"] * 4, "gn_nobias", "starrelu", {}, 78.0),
    "act_gelu": (["pool"] * 4, "gn_nobias", "gelu", {}, None),
    "act_relu": (["pool"] * 4, "gn_nobias", "relu", {}, None),
    "act_squared_relu": (["pool"] * 4, "gn_nobias", "squared_relu", {}, None),
    "scale_none": (["pool"] * 4, "gn_nobias", "starrelu", {"res_scale_init": None}, None),
    "scale_layerscale": (
        ["pool"] * 4,
        "gn_nobias",
        "starrelu",
        {"res_scale_init": None, "layer_scale_init": 1e-5},
        None,
    ),
    "biases": (
        ["pool"] * 4,
        "gn",
        "starrelu",
        {"mlp_bias": True, "stem_norm": "ln", "down_norm": "ln"},
        None,
    ),
    "mixer_identity": (["identity"] * 4, "gn_nobias", "starrelu", {}, 74.6),
    "mixer_random": (["identity", "identity", "random", "random"], "gn_nobias", "starrelu", {}, 76.6),
    "mixer_sepconv": (["sepconv"] * 4, "gn_nobias", "starrelu", {}, None),
    "mixer_sepconv_attn": (["sepconv", "sepconv", "attn", "attn"], "gn_nobias", "starrelu", {}, None),
    "mixer_pool_attn": (["pool", "pool", "attn", "attn"], "gn_nobias", "starrelu", {}, None),
}


def test_every_row_is_listed_here():
    assert sorted(ROW_BLOCKS) == ROWS


def test_rows_compose_on_the_v2_cpu_preset_with_one_part_of_its_block_changed():
    labels = set()
    with initialize_config_dir(
        config_dir=str(CONF), version_base="1.3"
    ):  # once for all rows: the cost is here
        for row in ROWS:
            cfg = compose("config", overrides=[f"+ablation_v2={row}", "+experiment=mini"])
            mixers, norm, act, changed, top1 = ROW_BLOCKS[row]
            assert (cfg.ablation.name, cfg.ablation.paper_top1, cfg.model.name) == (
                row,
                top1,
                "poolformerv2_cpu",
            )
            spec = validate(cfg)
            assert (spec.mixers, spec.norms, spec.acts) == (mixers, [norm] * 4, [act] * 4), row
            block = ("mixer", "norm", "act", "mixer_options")
            assert {k: v for k, v in spec.model_kwargs.items() if k not in block} == changed, row
            labels.add(cfg.ablation.label)
    assert len(labels) == len(ROWS)  # labels identify rows in the table


def test_the_caformer_row_trains_a_step_with_cafomers_mixers(compose_cfg):
    spec = validate(compose_cfg("+ablation_v2=mixer_sepconv_attn", "+experiment=mini"))
    model = create_model("poolformerv2_cpu", **spec.model_kwargs)
    attn = model.stages[2].blocks[0].token_mixer
    assert attn.proj.bias is None and type(model.stages[0].blocks[0].token_mixer.act1).__name__ == "StarReLU"
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("preset", ["poolformerv2_cpu"])
def test_the_v2_cpu_preset_is_poolformer_cpu_with_the_sequels_block(preset):
    v2, v1 = create_model(preset), create_model("poolformer_cpu")
    assert (v2.stage_mixers, v2.stage_norms, v2.stage_acts) == V2_BLOCK
    assert v2.stage_resolutions == v1.stage_resolutions == [(14, 14), (7, 7), (4, 4), (2, 2)]
    assert v2.pretrained_cfg["input_size"] == (1, 28, 28) and v2.num_classes == 10
    assert v2.stem.norm.eps == 1e-6 and v2.head_pool_first
