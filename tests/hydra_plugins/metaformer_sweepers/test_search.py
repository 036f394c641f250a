"""The search (+search=NAME, hydra/sweeper=search): Optuna's ask-and-tell over per-stage mixers, the study in the
sweep folder's optuna.db. Over-budget candidates cost no training, a rerun continues the same study without
training a finished trial again, a failed or diverged run is told as FAIL and the search goes on, bad input is one
line and exit 2 before any training; tiny real runs through the basic and joblib launchers."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

# Stages 3 and 4 choose pool or attention (four candidates); at 32 px on the default model the all-pool one
# takes 0.00570 GMACs, [pool,pool,pool,attn] 0.00599, [pool,pool,attn,pool] 0.00676, [pool,pool,attn,attn] 0.00706.
SPACE = "hydra.sweeper.space.mixer=[[pool],[pool],[pool,attn],[pool,attn]]"
BUDGET = "hydra.sweeper.max_gmacs=0.0068"  # three candidates in, one over


def study_of(sweep):
    return optuna.load_study(study_name="search", storage=f"sqlite:///{sweep / 'optuna.db'}")


def trained(study):
    return [t for t in study.get_trials() if "subdir" in t.user_attrs]


def search(tmp_path, *extra):
    """The recorded search's config, cut down: its trials one at a time (batch_size null and one job)."""
    return ("-m", "+search=hybrid", SPACE, "hydra.sweeper.references=[]", "hydra.sweeper.sampler=random",
            "hydra.sweeper.batch_size=null", f"hydra.sweep.dir={tmp_path / 'sweep'}", *extra)  # fmt: skip


def made_up(pairs):
    mixers = pairs["mixer"].strip("[]").split(",")
    if mixers[0] == "identity":
        return {"status": "diverged", "top1": None, "gmacs": 0.006, "error": "loss is nan"}
    return {
        "top1": 50.0 + 10 * mixers.count("attn") + 5 * (mixers[1] == "attn"),
        "gmacs": 0.0057 + 0.001 * mixers.count("attn"),
    }


@pytest.mark.slow
@pytest.mark.xdist_group("loky")  # joblib's two worker processes, started once for both tests
def test_over_budget_candidates_are_not_trained_and_a_rerun_continues_the_study_under_joblib(
    cli, tmp_path, quick
):
    sweep = tmp_path / "sweep"
    out = cli(*search(tmp_path, BUDGET, "hydra.sweeper.n_trials=1", *quick))  # the basic launcher
    assert out.code == 0, out.err
    first = {p: p.stat().st_mtime_ns for p in sweep.glob("trial_*/results.json")}
    assert len(first) == 1
    # The same search again with three trials: the two new ones train at once, in two joblib worker processes.
    joblib = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    out = cli(*search(tmp_path, BUDGET, "hydra.sweeper.n_trials=3", *joblib, *quick))
    assert out.code == 0, out.err
    study = study_of(sweep)
    runs = {t.user_attrs["subdir"]: t for t in trained(study)}
    folders = sorted(p.parent.name for p in sweep.glob("trial_*/results.json"))
    assert sorted(runs) == folders and len(folders) == 3  # a folder per in-budget trial, none for the others
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["gmacs"] <= 0.0068 for t in runs.values())
    over = [t for t in study.get_trials() if t.state == TrialState.PRUNED]
    assert over and all(
        "over the budget" in t.user_attrs["rejected"] and "subdir" not in t.user_attrs for t in over
    )
    assert {p: p.stat().st_mtime_ns for p in first} == first  # the first trial was not trained again
    for name, t in runs.items():  # Optuna was told what the run folder says
        record = json.loads((sweep / name / "results.json").read_text())
        assert record["status"] == "completed" and t.values == [record["top1"], record["gmacs"]]
        assert abs(record["gmacs"] - t.user_attrs["gmacs"]) < 1e-9  # the meta-device count is the run's
    assert "Pareto front" in out.out


def test_a_diverged_run_is_told_as_fail_and_the_search_goes_on_two_at_a_time(cli, fake_launcher, tmp_path):
    fake = fake_launcher(made_up)
    space = "hydra.sweeper.space.mixer=[[pool,identity],[pool,attn],[pool,attn],[pool]]"
    out = cli(
        *search(tmp_path, space, "hydra.sweeper.n_trials=4", "hydra.sweeper.batch_size=2", "data=synthetic")
    )
    assert out.code == 0, out.err
    assert fake.batches == [2, 2]  # two trials asked, trained together, then told
    study = study_of(tmp_path / "sweep")
    runs = trained(study)
    assert len(runs) == 4 == len(fake.launched) == len(set(fake.launched))
    diverged = [t for t in runs if t.params["mixer.1"] == "identity"]
    assert diverged and all(
        t.state == TrialState.FAIL and t.user_attrs["status"] == "diverged" for t in diverged
    )
    assert all(t.state == TrialState.COMPLETE for t in runs if t not in diverged)
    assert runs[-1].number > diverged[0].number or len(diverged) == len(
        runs
    )  # trials went on after a failure


def test_a_batch_launches_its_costliest_candidates_first_and_tells_them_in_trial_order(
    cli, fake_launcher, tmp_path
):
    fake = fake_launcher(made_up)
    out = cli(*search(tmp_path, "hydra.sweeper.n_trials=4", "hydra.sweeper.batch_size=4", "data=synthetic"))
    assert out.code == 0, out.err
    assert fake.batches == [4]  # the space's four candidates, asked together
    runs = trained(study_of(tmp_path / "sweep"))
    gmacs = {t.user_attrs["subdir"]: t.user_attrs["gmacs"] for t in runs}
    assert [gmacs[subdir] for subdir in fake.launched] == sorted(gmacs.values(), reverse=True)
    asked = [t.user_attrs["subdir"] for t in runs]  # trial numbers: the order Optuna asked in
    assert fake.launched != asked  # (this seed's asks are not already in that order)
    assert all(t.state == TrialState.COMPLETE for t in runs)
    # told in the order asked, whatever the order launched: the study's trials complete by number
    completed = sorted(runs, key=lambda t: t.datetime_complete)
    assert [t.number for t in completed] == sorted(t.number for t in runs)


def test_a_killed_search_trains_the_interrupted_trial_again_and_no_finished_one(cli, fake_launcher, tmp_path):
    fake = fake_launcher(made_up)
    fake.interrupt_after = 2
    with pytest.raises(KeyboardInterrupt):
        cli(*search(tmp_path, "hydra.sweeper.n_trials=4", "data=synthetic"))
    study = study_of(tmp_path / "sweep")
    assert [t.state for t in trained(study)] == [TrialState.COMPLETE] * 2 + [TrialState.RUNNING]
    killed = trained(study)[-1].user_attrs["subdir"]
    fake.interrupt_after = None
    assert cli(*search(tmp_path, "hydra.sweeper.n_trials=4", "data=synthetic")).code == 0
    runs = trained(study_of(tmp_path / "sweep"))
    assert len(runs) == 4 and all(t.state == TrialState.COMPLETE for t in runs)
    assert fake.launched[2] == killed and len(fake.launched) == len(set(fake.launched)) == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "hydra.sweeper.space.mixer=[pool,conv9]",
            "unknown mixer 'conv9' in hydra.sweeper.space.mixer; choose from:",
        ),
        ("hydra.sweeper.space.mixer=[]", "hydra.sweeper.space.mixer is an empty choice list"),
        (
            "hydra.sweeper.max_gmacs=0.005",
            "max_gmacs=0.005 is below every candidate's cost: the cheapest, "
            "mixer=[pool,pool,pool,pool], takes 0.005695 GMACs",
        ),  # fmt: skip
        ("hydra.sweeper.objectives=[top1,flops]", "unknown objective 'flops' in hydra.sweeper.objectives"),
        ("+hydra.sweeper.n_trial=3", "no option hydra.sweeper.n_trial; did you mean hydra.sweeper.n_trials?"),
        ("seed=0,1", "the search sweeper takes no swept values (seed)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_training(cli, fake_launcher, tmp_path, extra, message):
    fake = fake_launcher(made_up)
    out = cli("-m", "+search=hybrid", "data=synthetic", f"hydra.sweep.dir={tmp_path / 'sweep'}", extra)
    assert out.code == 2 and len(out.lines) == 1 and message in out.lines[0], out.err
    assert fake.launched == [] and not (tmp_path / "sweep").exists()
