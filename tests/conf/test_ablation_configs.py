"""conf/ablation/: one config per row of the paper's Table 5 (plus rows beyond it) that composes, validates,
builds, and costs what the paper says at the paper's scale."""

import inspect
from pathlib import Path

import pytest
import torch

from metaformer import MetaFormer, create_model, profile
from metaformer.engine.validation import validate

CONF = Path(__file__).resolve().parents[2] / "conf"
ROWS = sorted(p.stem for p in (CONF / "ablation").glob("*.yaml"))

# docs/paper.md, Table 5: label -> (params M, MACs G, top-1) for PoolFormer-S12 on ImageNet-1k.
TABLE5 = {
    "baseline": (11.9, 1.8, 77.2),
    "identity": (11.9, 1.8, 74.3),
    "global random matrix": (11.9, 3.3, 75.8),
    "depthwise conv": (11.9, 1.8, 78.1),
    "pool size 5": (11.9, 1.8, 77.2),
    "pool size 7": (11.9, 1.8, 77.1),
    "pool size 9": (11.9, 1.8, 76.8),
    "LN (channel only)": (11.9, 1.8, 76.5),
    "BN": (11.9, 1.8, 76.4),
    "no norm": (11.9, 1.8, 46.1),
    "ReLU": (11.9, 1.8, 76.4),
    "SiLU": (11.9, 1.8, 77.2),
    "no residual connection": (11.9, 1.8, 0.1),
    "no channel MLP": (2.5, 0.2, 5.7),
    "[pool, pool, pool, attn]": (14.0, 1.9, 78.3),
    "[pool, pool, attn, attn]": (16.5, 2.5, 81.0),
    "[pool, pool, pool, spatial FC]": (11.9, 1.8, 77.5),
    "[pool, pool, spatial FC, spatial FC]": (12.2, 1.9, 77.9),
}
BEYOND = {"fft", "fnet", "sepconv", "attn", "mlp"}


@pytest.fixture
def compose_row(compose_cfg):
    """Compose conf/ with the ablation row `row` and any overrides."""
    return lambda row, *overrides: compose_cfg(f"+ablation={row}", *overrides)


def test_every_paper_row_and_the_extra_mixers_are_there(compose_row):
    rows = [compose_row(row) for row in ROWS]  # each row composed once
    labels = {cfg.ablation.label for cfg in rows}
    assert set(TABLE5) <= labels
    extra_mixers = {cfg.mixer for cfg in rows if cfg.ablation.paper_top1 is None}
    assert extra_mixers == BEYOND
    assert len(labels) == len(ROWS)  # labels are unique: they identify rows in the table


@pytest.mark.parametrize("row", ROWS)
def test_row_composes_validates_and_trains_a_step_at_the_mini_scale(row, compose_row):
    cfg = compose_row(row, "+experiment=mini")
    assert cfg.ablation.name == row
    paper = TABLE5.get(cfg.ablation.label)
    assert cfg.ablation.paper_top1 == (paper[2] if paper else None)
    spec = validate(cfg)
    model = create_model(cfg.model.name, **spec.model_kwargs)  # the CPU preset: 28 px, 1 channel, 10 classes
    if row.startswith("pool_size_"):
        assert model.stages[0].blocks[0].token_mixer.pool.kernel_size == int(row.rsplit("_", 1)[1])
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "row",
    [
        r
        for r in ROWS
        if not r.startswith("mixer_") or r in {"mixer_identity", "mixer_random", "mixer_dwconv"}
    ],
)
def test_row_costs_what_the_paper_says_at_s12(row, compose_row):
    cfg = compose_row(row, "model=poolformer_s12")
    if cfg.ablation.label not in TABLE5:
        pytest.skip("not a paper row")
    params_m, gmacs, _ = TABLE5[cfg.ablation.label]
    with torch.device("meta"):  # parameters and MACs need the shapes, not the weights
        stats = profile(create_model("poolformer_s12", **validate(cfg).model_kwargs))
    assert (round(stats["params_m"], 1), round(stats["gmacs"], 1)) == (params_m, gmacs)


# What each row builds under +experiment=mini (poolformer_cpu, the paper's block): per-stage mixers, norm, act,
# and the model keywords it sets. Written out, so that a change in how rows compose shows up here.
P4, PAPER = ["pool"] * 4, ("gn", "gelu")
BLOCKS = {
    "baseline": (P4, *PAPER, {}),
    "act_relu": (P4, "gn", "relu", {}),
    "act_silu": (P4, "gn", "silu", {}),
    "norm_bn": (P4, "bn", "gelu", {}),
    "norm_ln": (P4, "ln", "gelu", {}),
    "norm_none": (P4, "none", "gelu", {}),
    "no_residual": (P4, *PAPER, {"residual": False}),
    "no_channel_mlp": (P4, *PAPER, {"channel_mlp": False}),
    "pool_size_5": (P4, *PAPER, {"mixer_options": {"pool": {"pool_size": 5}}}),
    "pool_size_7": (P4, *PAPER, {"mixer_options": {"pool": {"pool_size": 7}}}),
    "pool_size_9": (P4, *PAPER, {"mixer_options": {"pool": {"pool_size": 9}}}),
    "hybrid_pool_pool_attn_attn": (
        ["pool", "pool", "attn", "attn"],
        "ln",
        "gelu",
        {"pos_embed": [0, 0, 1, 0]},
    ),
    "hybrid_pool_pool_pool_attn": (
        ["pool", "pool", "pool", "attn"],
        "ln",
        "gelu",
        {"pos_embed": [0, 0, 0, 1]},
    ),
    "hybrid_pool_pool_mlp_mlp": (["pool", "pool", "mlp", "mlp"], *PAPER, {}),
    "hybrid_pool_pool_pool_mlp": (["pool", "pool", "pool", "mlp"], *PAPER, {}),
    "mixer_attn": (["attn"] * 4, "ln", "gelu", {"pos_embed": [1, 0, 0, 0]}),  # a ViT-like MetaFormer
    **{f"mixer_{m}": ([m] * 4, *PAPER, {}) for m in ("dwconv", "fft", "fnet", "identity", "mlp", "random")},
    "mixer_sepconv": (["sepconv"] * 4, *PAPER, {}),
}


@pytest.mark.parametrize("row", ROWS)
def test_each_row_builds_the_papers_block_with_one_part_changed(row, compose_row):
    mixers, norm, act, changed = BLOCKS[row]
    spec = validate(compose_row(row, "+experiment=mini"))
    assert (spec.mixers, spec.norms, spec.acts) == (mixers, [norm] * 4, [act] * 4)
    block = ("mixer", "norm", "act")  # checked above, built
    kwargs = {k: v for k, v in spec.model_kwargs.items() if v != {} and k not in block}
    expected = {k: [bool(x) for x in v] if k == "pos_embed" else v for k, v in changed.items()}
    assert kwargs == expected  # the row's own keys, and nothing to undo


def test_the_baseline_row_is_the_models_own_block(compose_row):
    paper = {k: inspect.signature(MetaFormer).parameters[k].default for k in ("mixer", "norm", "act")}
    assert paper == {
        "mixer": "pool",
        "norm": "gn",
        "act": "gelu",
    }  # the paper's block is MetaFormer's default
    main = validate(compose_row("baseline"))  # on the main job's model, the rows change its block (BN + ReLU)
    assert (main.norms, main.acts) == (["bn"] * 4, ["relu"] * 4)
    assert validate(compose_row("norm_ln")).acts == ["relu"] * 4


def test_rows_compose_with_other_overrides(compose_row):
    cfg = compose_row("norm_bn", "seed=3", "trainer.epochs=1", "data=synthetic")
    assert (cfg.norm, cfg.seed, cfg.trainer.epochs, cfg.data.name) == ("bn", 3, 1, "synthetic")


@pytest.mark.parametrize("experiment", ["mini", "paper"])
def test_experiments_compose_with_every_row(experiment, compose_row):
    for row in ROWS:
        cfg = compose_row(row, f"+experiment={experiment}")
        assert cfg.ablation.name == row
    assert cfg.model.name == {"mini": "poolformer_cpu", "paper": "poolformer_s12"}[experiment]
    if experiment == "paper":
        assert (cfg.trainer.epochs, cfg.optim.weight_decay, cfg.sched.warmup_epochs) == (300, 0.05, 5)
        assert (cfg.aug.mixup, cfg.aug.cutmix, cfg.aug.label_smoothing, cfg.aug.reprob) == (
            0.8,
            1.0,
            0.1,
            0.25,
        )
        assert cfg.aug.randaugment.startswith("rand-m9")
