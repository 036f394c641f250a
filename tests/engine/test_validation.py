"""conf/ composes the way the README says, and `validate` turns every bad value into one informative line; the
command-line checks before Hydra (`command_line`) answer what Hydra would answer in several lines."""

from pathlib import Path

import pytest
from torch import nn

from metaformer import list_models
from metaformer.engine import ConfigError, validate
from metaformer.engine.command_line import check_composes, check_overrides, normalize_argv
from metaformer.engine.results import read_results, run_identity, write_results
from metaformer.engine.validation import check_mixer_options, check_writable, degenerate_mixing, model_kwargs
from mixers import register_mixer
from mixers.registry import MIXERS

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_the_main_job_is_the_cpu_preset_on_fashion_mnist_with_its_short_recipe(compose_cfg):
    cfg = compose_cfg()
    assert (cfg.model.name, cfg.data.name, cfg.mixer, cfg.norm, cfg.act) == (
        "poolformer_cpu_patch4", "fashion_mnist", None, None, None,
    )  # fmt: skip
    spec = validate(cfg)  # the block is the preset's: BatchNorm + ReLU, not the recipe's
    assert (spec.mixers, spec.norms, spec.acts) == (["pool"] * 4, ["bn"] * 4, ["relu"] * 4)
    assert spec.resolutions == [(7, 7), (4, 4), (2, 2), (1, 1)]
    assert degenerate_mixing(cfg, spec) is None  # the preset's own pooling on 1x1 goes unremarked
    assert cfg.aug.hflip == 0 and cfg.aug.mixup == 0  # aug=none: see conf/recipe/fashion_mnist.yaml
    assert compose_cfg("aug=light").aug.hflip > 0
    assert (cfg.optim.opt, cfg.optim.weight_decay, cfg.sched.sched) == ("adamw", 0.05, "cosine")
    assert cfg.logger.name == "csv" and cfg.resume is True


def test_the_missions_command_trains_groupnorm_with_the_main_jobs_other_choices(compose_cfg):
    cfg = compose_cfg("mixer=[pool,pool,attn,attn]", "norm=gn")
    spec = validate(cfg)
    assert (spec.mixers, spec.norms, spec.acts) == (
        ["pool", "pool", "attn", "attn"],
        ["gn"] * 4,
        ["relu"] * 4,
    )
    main = compose_cfg()
    for key in ("trainer", "optim", "sched", "aug", "data"):
        assert cfg[key] == main[key]
    warning = degenerate_mixing(cfg, spec)  # the user's attention lands on the 1x1 grid: said once
    assert warning.startswith("stage 4 (attn) runs on a 1x1 grid (grids 7/4/2/1 px")
    tokens = compose_cfg("model=poolformer_cpu", "mixer=[pool,pool,attn,attn]", "norm=gn")
    assert degenerate_mixing(tokens, validate(tokens)) is None  # grids 14/7/4/2


def test_every_preset_has_a_model_config_that_keeps_the_presets_values(compose_cfg):
    presets = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
    assert presets == list_models()
    kw = validate(compose_cfg("model=poolformer_s12")).model_kwargs
    assert "drop_path_rate" not in kw and "depths" not in kw  # unset: the preset's (metaformer/presets.py)
    assert validate(compose_cfg("model.drop_path_rate=0.3")).model_kwargs["drop_path_rate"] == 0.3


def test_a_mixer_list_and_any_norm_act_reach_create_model(compose_cfg):
    cfg = compose_cfg("mixer=[pool,pool,attn,attn]", "norm=ln", "act=relu", "mixer_options.pool.pool_size=5")
    spec = validate(cfg)
    assert spec.mixers == ["pool", "pool", "attn", "attn"]
    kw = spec.model_kwargs
    assert (kw["mixer"], kw["norm"], kw["act"]) == (["pool", "pool", "attn", "attn"], "ln", "relu")
    assert kw["mixer_options"] == {"pool": {"pool_size": 5}}  # the rest are the mixers' own defaults
    assert "drop_path_rate" not in kw and "name" not in kw


def test_extra_model_keys_are_create_model_keywords(compose_cfg):
    cfg = compose_cfg(
        "model.drop_path_rate=0.2", "+model.residual=false", "+model.pos_embed=[false,false,true,false]"
    )
    kw = model_kwargs(cfg)
    assert kw["residual"] is False and kw["pos_embed"] == [False, False, True, False]
    assert kw["drop_path_rate"] == 0.2 and "mixer" not in kw  # null: the preset's


def test_the_data_set_brings_its_recipe_and_the_command_line_still_wins(compose_cfg):
    imagenet = compose_cfg("data=imagenet", "data.root=/data/imagenet")
    assert imagenet.trainer.epochs == 300 and imagenet.sched.warmup_epochs == 5
    assert imagenet.aug.mixup == 0.8 and imagenet.aug.label_smoothing == 0.1  # the paper's augmentation
    mine = compose_cfg("data=imagenet", "aug=none", "trainer.epochs=7")
    assert mine.aug.mixup == 0 and mine.trainer.epochs == 7
    assert compose_cfg("data=synthetic").trainer.epochs < compose_cfg().trainer.epochs


def test_an_ablation_row_is_a_global_override_and_lands_in_the_results_identity(tmp_path, compose_cfg):
    from metaformer.engine.results import run_identity

    row = tmp_path / "ablation"
    row.mkdir()
    (row / "demo.yaml").write_text(
        "# @package _global_\nablation: {name: demo, group: components, label: no residual, paper_top1: 0.1}\n"
        "model:\n  residual: false\n"
    )
    cfg = compose_cfg(f"hydra.searchpath=[file://{tmp_path}]", "+ablation=demo")
    assert model_kwargs(cfg)["residual"] is False
    ident = run_identity(cfg, "fashion_mnist", validate(cfg))
    assert (ident["ablation"], ident["group"], ident["label"], ident["paper_top1"]) == (
        "demo", "components", "no residual", 0.1,
    )  # fmt: skip
    plain = run_identity(compose_cfg(), "fashion_mnist", validate(compose_cfg()))
    assert plain["label"] is plain["ablation"] is plain["paper_top1"] is None
    assert (plain["mixers"], plain["norm"], plain["act"]) == (["pool"] * 4, "bn", "relu")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["mixer=poool"], "unknown mixer 'poool'; registered: attn, "),
        (["mixer=[pool,pool,attn]"], "has 3 entries but the model has 4 stages"),
        (["norm=layernorm"], "unknown norm 'layernorm'; registered: bn, gn"),
        (["act=swish"], "unknown act 'swish'; registered: "),
        (["model=poolformer_s99"], None),  # Hydra's own error: no such config in the model group
        (["trainer.epochs=0"], "trainer.epochs must be a positive integer, got 0"),
        (["trainer.precision=fp8"], "unknown trainer.precision 'fp8'; choose from: auto, fp32, bf16, fp16"),
        (["trainer.limit_train_batches=1.5"], "a float is a fraction of the epoch"),
        (["optim.opt=adamz"], "unknown optim.opt 'adamz'"),
        (["data=cifar10", "data.root=/nonexistent/cifar"], "/nonexistent/cifar"),
        (["resume=/nonexistent/run"], "resume=/nonexistent/run: no such file or folder"),
    ],
)
def test_validation_names_the_problem_and_the_choices(overrides, expected, compose_cfg):
    if expected is None:
        with pytest.raises(Exception, match="poolformer_s99"):
            compose_cfg(*overrides)
        return
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*overrides))
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_a_depths_override_changes_the_number_of_stages_a_mixer_list_needs(compose_cfg):
    cfg = compose_cfg("+model.depths=[1,1,1]", "+model.dims=[8,16,32]", "mixer=[pool,pool,attn]")
    assert validate(cfg).mixers == ["pool", "pool", "attn"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["+model.bogus=1"], "unknown key model.bogus; model takes: name, depths, dims"),
        (["+foo=1"], "unknown key foo; the top level takes: mixer, norm, act, mixer_options"),
        (["+sched.bogus=1"], "unknown key sched.bogus; sched takes: sched, warmup_epochs"),
        (["+aug.flip=0.5"], "unknown key aug.flip; did you mean aug.hflip"),
        (["seed=x"], "could not be converted to Integer; full_key: seed"),
        (["aug.hflip=x"], "could not be converted to Float; full_key: aug.hflip"),
        (["model.drop_path_rate=x"], "could not be converted to Float; full_key: model.drop_path_rate"),
        (["-m", "seed=0,x"], "could not be converted to Integer; full_key: seed"),  # each swept value
        (["-m", "mixer=[pool,pool],[pool]", "trainer.epochs=1,x"], "full_key: trainer.epochs"),
    ],
)
def test_the_schema_refuses_unknown_keys_and_wrong_types_naming_the_key(overrides, expected):
    with pytest.raises(ConfigError, match="^.*" + expected.replace("[", r"\[")) as err:
        check_composes(overrides)
    assert "\n" not in str(err.value)


def test_open_keys_are_accepted_where_the_code_reads_them(compose_cfg):
    check_composes(
        ["+sched.decay_rate=0.5", "+model.residual=false", "model.residual=false", "-m", "seed=0,1"]
    )
    check_composes(normalize_argv(["mixer_options.pool.pool_size=5", "+mixer_options.attn.head_dim=16"]))
    check_composes(["-m", "mixer=[pool,pool,pool,pool],[pool,pool,attn,attn]", "seed=0,1,2"])  # README sweeps
    check_composes(["-m", "+experiment=mini", "+ablation=glob(*)", "seed=0,1"])
    cfg = compose_cfg(*normalize_argv(["mixer=[pool,pool,attn,attn]", "mixer_options.attn.head_dim=16"]))
    assert validate(cfg).model_kwargs["mixer_options"] == {"attn": {"head_dim": 16}}


def test_an_unwritable_output_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot write the output folder") as err:
        check_writable(blocker / "run")
    assert err.value.exit_code == 1
    with pytest.raises(ConfigError, match="cannot write the output folder"):
        check_writable(blocker / "run", create=False)
    check_writable(tmp_path / "later" / "run", create=False)
    assert sorted(tmp_path.iterdir()) == [blocker]  # proved without making it, nothing left behind
    check_writable(tmp_path / "fine" / "run")
    assert (tmp_path / "fine" / "run").is_dir()


def test_a_mixer_option_reaches_create_model_and_its_defaults_are_the_mixers(compose_cfg):
    cfg = compose_cfg("mixer=sepconv", "+mixer_options.sepconv.kernel_size=5")
    assert validate(cfg).model_kwargs["mixer_options"] == {"sepconv": {"kernel_size": 5}}
    assert compose_cfg().mixer_options == {}  # nothing copied: the mixers' signatures hold the defaults


def test_overrides_hydra_would_refuse_in_many_lines_are_caught_in_one(monkeypatch):
    fine = ["-m", "model=poolformer_s12,poolformer_s24", "data=synthetic", "seed=0,1", "+ablation=glob(*)",
            "+ablation=norm_bn", "+mixer_options.pool.pool_size=5",
            "hydra/launcher=basic", "hydra.run.dir=x", "~logger"]  # fmt: skip
    check_overrides(fine)
    with pytest.raises(ConfigError, match="^unknown optim 'adam'; choose from: adamw, sgd$"):
        check_overrides(["optim=adam"])
    with pytest.raises(ConfigError, match="^unknown ablation 'norm_gn'; choose from: act_relu, act_silu"):
        check_overrides(["+ablation=norm_gn"])
    with pytest.raises(ConfigError, match="^mixer 'random' has no option 'size' .*; it takes no options$"):
        check_mixer_options("random", ["size"])
    check_overrides(
        ["optim=adam", "hydra.searchpath=[file:///my/conf]"]
    )  # configs from elsewhere: Hydra judges

    monkeypatch.setattr(MIXERS, "_builders", dict(MIXERS._builders))  # the registration ends with the test

    @register_mixer("test_gated", override=True)
    class Gated(nn.Module):
        def __init__(self, dim: int, kernel_size: int = 3) -> None:
            super().__init__()

    check_mixer_options("test_gated", ["kernel_size"])
    with pytest.raises(
        ConfigError, match="^mixer 'test_gated' has no option 'kernel'.*; its options: kernel_size$"
    ):
        check_mixer_options("test_gated", ["kernel"])


def test_norm_and_act_take_one_name_per_stage_too(tmp_path, compose_cfg):
    cfg = compose_cfg("norm=[gn,gn,bn,bn]", "act=[gelu,gelu,relu,relu]", "data=synthetic")
    kw = validate(cfg).model_kwargs
    assert kw["norm"] == ["gn", "gn", "bn", "bn"] and kw["act"] == ["gelu", "gelu", "relu", "relu"]
    write_results(tmp_path, run_identity(cfg, "synthetic", validate(cfg)))  # plain lists in results.json
    assert read_results(tmp_path)["norm"] == ["gn", "gn", "bn", "bn"]
    with pytest.raises(ConfigError, match=r"^act has 2 entries but the model has 4 stages: give one"):
        validate(compose_cfg("act=[gelu,relu]", "data=synthetic"))
    with pytest.raises(ConfigError, match=r"^residual has 2 entries but the model has 4"):
        validate(compose_cfg("+model.residual=[true,false]", "data=synthetic"))
