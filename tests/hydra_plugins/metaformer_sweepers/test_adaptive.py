"""The adaptive study (hydra/sweeper=adaptive): rounds of seeds, only undecided rows get more, a rerun continues,
the budget stops it, bad input is one line and exit 2. Scheduling runs in-process with made-up results (a fake
launcher); one study trains tiny real runs through Hydra's basic launcher."""

from __future__ import annotations

import json

import pytest
import yaml

# glob, not a list: run.py checks each value of a list by composing it, which costs half a second a value.
ROWS = "+ablation=glob([baseline,act_relu,mixer_identity,norm_bn])"
# Made-up top-1 by row: identity far better, ReLU the same within ±0.05 (equivalent), BN unclear (noisy).
NOISE = [0.3, -0.2, 0.1, -0.4, 0.25, 0.0]
SHIFT = {"baseline": 0.0, "mixer_identity": 5.0, "act_relu": 0.0, "norm_bn": 0.5}
SPREAD = {"baseline": 0.0, "mixer_identity": 0.05, "act_relu": 0.02, "norm_bn": 1.5}


def made_up(pairs):
    row, seed = pairs["ablation"], int(pairs["seed"])
    sign = 1 if seed % 2 else -1
    return {"top1": 80 + NOISE[seed] + SHIFT[row] + sign * SPREAD[row] * (1 + seed % 3), "label": row}


def study(tmp_path):
    return json.loads((tmp_path / "sweep" / "study.json").read_text())


def args(tmp_path, *extra):
    # looks at 3, 4 and 5 seeds with equal alpha shares: a schedule whose rounds the tests below spell out
    return ("-m", "hydra/sweeper=adaptive", ROWS, "data=synthetic", f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "hydra.sweeper.futility=0", "hydra.sweeper.first=3", "hydra.sweeper.max_looks=3",
            "hydra.sweeper.spending=pocock", *extra)  # fmt: skip


def test_after_the_first_round_only_the_undecided_row_gets_more_seeds(cli, fake_launcher, tmp_path):
    fake = fake_launcher(made_up)
    out = cli(*args(tmp_path))
    assert out.code == 0, out.err
    first = {f"{row}/seed_{s}" for row in SHIFT for s in range(3)}
    assert set(fake.launched[:12]) == first
    # Round 2 and 3: the baseline and the one undecided row, one seed each; the decided rows stop.
    assert fake.launched[12:] == ["baseline/seed_3", "norm_bn/seed_3", "baseline/seed_4", "norm_bn/seed_4"]
    state = study(tmp_path)
    assert [r["wanted"] for r in state["rounds"][1:]] == [
        {"baseline": [3], "norm_bn": [3]},
        {"baseline": [4], "norm_bn": [4]},
    ]
    outcome = {d["label"]: (d["outcome"], d["n"]) for d in state["decisions"] if not d["is_baseline"]}
    assert outcome == {
        "mixer_identity": ("better", 3),
        "act_relu": ("equivalent", 3),
        "norm_bn": ("undecided", 5),
    }
    assert state["finished"] and (tmp_path / "sweep" / "study.md").is_file()
    assert (tmp_path / "sweep" / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "group-sequential design of analysis/sequential.py" in out.out and "| norm_bn" in out.out


def test_a_rerun_continues_without_running_a_finished_job_again(cli, fake_launcher, tmp_path):
    fake = fake_launcher(made_up)
    fake.interrupt_after = 13  # killed while the second job of round 2 trains
    with pytest.raises(KeyboardInterrupt):
        cli(*args(tmp_path))
    assert len(fake.launched) == 13
    # Where the stopped study stands: round 1's decisions, in study.json and study.md.
    outcome = {d["label"]: d["outcome"] for d in study(tmp_path)["decisions"] if not d["is_baseline"]}
    assert outcome == {"mixer_identity": "better", "act_relu": "equivalent", "norm_bn": "undecided"}
    report = (tmp_path / "sweep" / "study.md").read_text()
    assert "1 rounds, 12 runs" in report and "Running: the same command continues the study." in report
    fake.interrupt_after = None
    assert cli(*args(tmp_path)).code == 0
    assert (
        len(fake.launched) == len(set(fake.launched)) == 16
    )  # the killed job ran once more, nothing else twice
    # The rerun finishes round 2 (the baseline's seed 3 ran, norm_bn's did not) before it takes look 2.
    assert fake.launched[13:] == ["norm_bn/seed_3", "baseline/seed_4", "norm_bn/seed_4"]
    assert (
        "Stopped: every row is decided, futile or at its last look."
        in (tmp_path / "sweep" / "study.md").read_text()
    )
    rounds = study(tmp_path)["rounds"]
    assert all(r["seconds"] >= 0 for r in rounds)  # the wall time of each round's launches
    assert [(r["round"], r["look"], r["launched"]) for r in rounds] == [
        (1, 1, 12),
        (2, 2, 1),
        (3, 3, 2),
    ]  # the rerun went on from round 2: the run the stop cut short, then round 3
    again, decisions = len(fake.launched), study(tmp_path)["decisions"]
    assert cli(*args(tmp_path)).code == 0
    assert len(fake.launched) == again  # a finished study: nothing to run, and no round added
    assert study(tmp_path)["rounds"] == rounds
    assert study(tmp_path)["decisions"] == decisions  # replayed to its last look, not stopped at look 1


def test_the_budget_stops_the_study_before_a_round_that_does_not_fit(cli, fake_launcher, tmp_path):
    fake = fake_launcher(made_up)
    assert cli(*args(tmp_path, "hydra.sweeper.max_runs=13")).code == 0
    assert len(fake.launched) == 12
    state = study(tmp_path)
    assert not state["finished"] and state["stop"].startswith("budget")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("hydra.sweeper.margin=-1", "hydra.sweeper.margin=-1: give 0 or more points"),
        (
            "hydra.sweeper.max_runs=11",
            "max_runs=11 is smaller than the first round: 4 rows x 3 seeds = 12 runs",
        ),
        ("+hydra.sweeper.marginn=1", "no option hydra.sweeper.marginn; did you mean hydra.sweeper.margin?"),
        ("seed=1", "the adaptive sweeper chooses the seeds"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_run(cli, fake_launcher, tmp_path, extra, message):
    fake = fake_launcher(made_up)
    out = cli(*args(tmp_path, extra))
    assert out.code == 2 and len(out.lines) == 1 and message in out.lines[0], out.err
    assert fake.launched == [] and not (tmp_path / "sweep").exists()  # no empty sweep folder left behind


@pytest.mark.slow
def test_a_real_study_trains_only_the_undecided_row_again(cli, tmp_path, quick):
    # Three rows of tiny real runs: `same` trains exactly the baseline's runs (Δ = 0 on every seed: no spread,
    # no test, undecided), `other` another learning rate (a wide margin makes it equivalent at the first look).
    rows = tmp_path / "rows.yaml"
    rows.write_text(yaml.safe_dump({"baseline": [], "same": ["logger=csv"], "other": ["optim.lr=0.001"]}))
    command = ("-m", "hydra/sweeper=adaptive", f"hydra.sweeper.rows_file={rows}", "hydra.sweeper.margin=1000",
               "hydra.sweeper.first=2", "hydra.sweeper.max_looks=2", "hydra.sweeper.futility=0", "optim.lr=0.01",
               "hydra.sweeper.spending=pocock",
               *quick, f"hydra.sweep.dir={tmp_path / 'sweep'}")  # fmt: skip
    out = cli(*command)
    assert out.code == 0, out.err
    sweep = tmp_path / "sweep"
    done = sorted(p.parent.relative_to(sweep).as_posix() for p in sweep.glob("*/seed_*/results.json"))
    assert done == ["baseline/seed_0", "baseline/seed_1", "baseline/seed_2", "other/seed_0", "other/seed_1",
                    "same/seed_0", "same/seed_1", "same/seed_2"]  # fmt: skip
    decided = {d["label"]: d["outcome"] for d in study(tmp_path)["decisions"] if not d["is_baseline"]}
    assert decided == {"same": "undecided", "other": "equivalent"}
    walls = [json.loads(p.read_text())["wall_s"] for p in sweep.glob("*/seed_*/results.json")]
    rounds = study(tmp_path)["rounds"]
    # each round's time covers its runs (the basic launcher runs them one at a time)
    assert sum(r["seconds"] for r in rounds) >= sum(walls)
    assert (
        f"2 rounds, 8 runs in 0:00:{round(sum(r['seconds'] for r in rounds)):02d} of rounds"
        in (sweep / "study.md").read_text()
    )
    stamps = {p: p.stat().st_mtime_ns for p in sweep.glob("*/seed_*/results.json")}
    assert cli(*command).code == 0  # the same command again: nothing is trained
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*/seed_*/results.json")} == stamps


def test_the_mini_study_config_selects_the_sweeper_and_a_folder_of_its_own():
    from hydra import compose, initialize_config_dir

    from metaformer.engine.command_line import CONF_DIR  # registers the schemas the configs name

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", ["+experiment=mini", "+study=mini"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("adaptive.AdaptiveSweeper")
    assert (cfg.hydra.sweep.dir, cfg.hydra.sweeper.max_runs, cfg.hydra.launcher.n_jobs) == (
        "multirun/mini_adaptive",
        200,
        2,
    )


def test_the_sweepers_yaml_restates_the_designs_defaults():
    # Hydra lists the options from the YAML; the design's defaults live in analysis.sequential.Design
    from dataclasses import fields

    from analysis.sequential import Design
    from metaformer.engine.command_line import CONF_DIR

    options = yaml.safe_load((CONF_DIR / "hydra" / "sweeper" / "adaptive.yaml").read_text())
    for field in fields(Design):
        if field.name != "rows":
            assert options[field.name] == field.default, field.name
