"""Reading run folders into a DataFrame of runs: statuses, labels, overrides, unknown keys, CSV input."""

import json
import math

import pytest

from analysis import AnalysisError, collect_runs, find_run_dirs
from analysis.collect import config_overrides, shared_overrides


def test_finds_every_job_in_natural_order(multirun):
    dirs = find_run_dirs(multirun)
    assert [d.name for d in dirs] == [str(i) for i in range(11)]


def test_one_row_per_run_with_status_and_folder(multirun):
    runs = collect_runs([multirun])
    assert len(runs) == 11
    by_job = runs.set_index(runs["folder"].map(lambda f: int(f.rsplit("/", 1)[1])))
    assert by_job.loc[5, "status"] == "diverged"
    assert by_job.loc[7, "status"] == "failed"
    assert by_job.loc[8, "status"] == "incomplete"
    assert "no results.json" in by_job.loc[8, "problem"]
    assert by_job.loc[8, "epochs_logged"] == 1
    assert by_job["usable"].sum() == 7
    assert not by_job.loc[[5, 7, 8, 9], "usable"].any()
    assert by_job.loc[3, "top1"] == 72.0 and by_job.loc[3, "config"] == "baseline"
    assert by_job.loc[4, "extra_metric"] == pytest.approx(0.4)  # unknown keys are kept as data


def test_run_without_results_borrows_its_siblings_label_and_seed_from_overrides(multirun):
    runs = collect_runs([multirun])
    crashed = runs[runs["status"] == "incomplete"].iloc[0]
    assert crashed["config"] == "[pool, pool, attn, attn]"
    assert crashed["group"] == "hybrid"
    assert crashed["data"] == "fashion_mnist"
    assert crashed["seed"] == 2


def test_overlapping_paths_name_each_run_once(multirun):
    runs = collect_runs([multirun, multirun / "2026-11-25" / "10-00-00" / "3"])
    assert len(runs) == 11


def test_overrides_every_configuration_shares_leave_the_labels(tmp_path, make_run):
    for i, extra in enumerate([[], ["norm=ln"], ["'mixer=[pool, attn]'"]]):
        overrides = ["experiment=mini", "trainer.epochs=1", f"seed={i}", *extra]
        make_run(tmp_path / str(i), overrides, {"status": "completed", "top1": 70.0})
    runs = collect_runs([tmp_path])
    assert runs["config"].tolist() == ["default", "norm=ln", "mixer=[pool, attn]"]  # a value with a space
    assert shared_overrides(runs["overrides"]) == ["experiment=mini", "trainer.epochs=1"]
    assert shared_overrides(["a=1 b=2"]) == []  # one configuration: nothing to factor out


def test_configuration_from_overrides_without_seed_or_hydra():
    overrides = [
        "seed=3",
        "norm=ln",
        "+mixer=[pool,pool,attn,attn]",
        "hydra.launcher.n_jobs=2",
        "hydra/launcher=joblib",
    ]
    assert config_overrides(overrides) == "mixer=[pool,pool,attn,attn] norm=ln"
    assert config_overrides(["seed=1", "logger=wandb"]) == ""


def test_unlabelled_runs_are_named_by_overrides_or_default(tmp_path, make_run):
    for i, (overrides, top1) in enumerate(
        [(["seed=0"], 60.0), (["seed=1"], 62.0), (["seed=0", "norm=ln"], 58.0)]
    ):
        make_run(tmp_path / str(i), overrides, {"status": "completed", "top1": top1})
    runs = collect_runs([tmp_path])
    assert runs["config"].tolist() == ["default", "default", "norm=ln"]
    assert math.isnan(runs.loc[0, "params_m"])  # missing optional keys are tolerated


def test_unreadable_or_statusless_results_are_not_usable(tmp_path, make_run):
    make_run(tmp_path / "0", ["seed=0"], None)
    (tmp_path / "0" / "results.json").write_text("{not json")
    make_run(tmp_path / "1", ["seed=1"], {"top1": 70.0})
    make_run(tmp_path / "2", ["seed=2"], {"status": "completed", "top1": None})
    make_run(tmp_path / "3", ["seed=3"], {"status": "running", "top1": None})  # killed (SIGKILL, OOM) mid-run
    runs = collect_runs([tmp_path])
    assert runs["status"].tolist() == ["unreadable", "unknown", "completed", "running"]
    assert not runs["usable"].any()
    assert "top1 is missing" in runs.loc[2, "problem"]
    assert "still running, or killed" in runs.loc[3, "problem"]


def test_missing_path_and_empty_folder_are_clear_errors(tmp_path):
    with pytest.raises(AnalysisError, match="no such file or folder"):
        collect_runs([tmp_path / "nope"])
    with pytest.raises(AnalysisError, match="holds no runs"):
        collect_runs([tmp_path])


def test_wandb_style_csv_export(tmp_path, make_results):
    rows = [make_results("baseline", 0, "completed", 70.0), make_results("baseline", 1, "completed", 72.0)]
    lines = ["Name,State,top1,label,seed,params_m"] + [
        f"run-{r['seed']},{state},{r['top1']},{r['label']},{r['seed']},{r['params_m']}"
        for r, state in zip(rows, ["finished", "crashed"], strict=True)
    ]
    (tmp_path / "export.csv").write_text("\n".join(lines) + "\n")
    runs = collect_runs([tmp_path / "export.csv"])
    assert runs["status"].tolist() == ["completed", "failed"]
    assert runs["usable"].tolist() == [True, False]
    assert runs["folder"].tolist()[0].endswith("export.csv:run-0")
    json.dumps(runs["config"].tolist())  # plain strings
