"""`python run.py` trains for real: Fashion-MNIST learns, the run folder holds what DESIGN.md promises, runs
resume exactly, SIGTERM leaves a resumable `preempted` run, and a NaN ends a run as `diverged` with exit code 0."""

import csv
import json
import signal
import subprocess
import time

import pytest
import torch
from cli_helpers import QUICK, cli_env, command

from metaformer.engine.results import RESULT_KEYS


def results_of(folder):
    return json.loads((folder / "results.json").read_text())


def metrics_of(folder):
    with (folder / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def weights_of(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_short_fashion_mnist_run_learns_and_fills_its_run_folder(run_cli, tmp_path):
    proc = run_cli(
        "trainer.epochs=2", "trainer.batch_size=64", "trainer.limit_train_batches=40",
        "trainer.limit_val_batches=10", "hydra.run.dir=run",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    names = {p.name for p in run.iterdir()}
    assert {"results.json", "metrics.csv", "last.pt", "best.pt", ".hydra", "run.log"} <= names
    assert {"config.yaml", "overrides.yaml"} <= {p.name for p in (run / ".hydra").iterdir()}

    res = results_of(run)
    assert set(RESULT_KEYS) <= set(res)
    assert res["status"] == "completed" and res["epochs"] == 2
    assert res["top1"] > 60, res  # chance is 10%
    assert res["best_top1"] >= res["top1"] and 0 < res["top1"] <= res["top5"] <= 100
    assert res["mixers"] == ["pool"] * 4 and (res["norm"], res["act"], res["seed"]) == ("gn", "gelu", 0)
    assert (res["model"], res["data"]) == ("poolformer_cpu", "fashion_mnist")
    assert res["params_m"] > 0.5 and res["gmacs"] > 0 and res["train_img_per_s"] > 0 and res["wall_s"] > 0
    assert res["loss"] > 0 and res["label"] is None

    rows = metrics_of(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert "epoch 2/2" in (run / "run.log").read_text()


@pytest.mark.slow
def test_resume_continues_exactly_where_the_run_stopped(run_cli, tmp_path):
    # A constant lr keeps the schedule independent of the epoch count, so 1 + 1 epochs must equal 2 epochs.
    same = [*QUICK, "sched=constant", "trainer.limit_train_batches=3"]
    straight = run_cli(*same, "trainer.epochs=2", "hydra.run.dir=straight")
    first = run_cli(*same, "trainer.epochs=1", "hydra.run.dir=parted")
    second = run_cli(*same, "trainer.epochs=2", "resume=true", "hydra.run.dir=parted")
    elsewhere = run_cli(*same, "trainer.epochs=3", f"resume={tmp_path / 'parted'}", "hydra.run.dir=third")
    for proc in (straight, first, second, elsewhere):
        assert proc.returncode == 0, proc.stderr

    parted = tmp_path / "parted"
    assert results_of(parted)["epochs"] == 2 and results_of(parted)["status"] == "completed"
    assert [r["epoch"] for r in metrics_of(parted)] == ["1", "2"]
    assert "resumed from" in second.stdout
    assert same_weights(weights_of(parted / "last.pt"), weights_of(tmp_path / "straight" / "last.pt"))
    assert metrics_of(parted)[1]["top1"] == metrics_of(tmp_path / "straight")[1]["top1"]

    third = tmp_path / "third"  # resume=PATH: a new folder that carries the history on
    assert [r["epoch"] for r in metrics_of(third)] == ["1", "2", "3"]
    assert results_of(third)["epochs"] == 3


@pytest.mark.slow
def test_sigterm_leaves_a_preempted_run_that_resumes(run_cli, tmp_path):
    args = [*QUICK, "trainer.epochs=1000", "hydra.run.dir=run"]
    proc = subprocess.Popen(command(*args), cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    run = tmp_path / "run"
    deadline = time.time() + 120
    while not (run / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    res = results_of(run)
    assert res["status"] == "preempted" and res["epochs"] >= 1 and "signal" in res["error"]

    again = run_cli(*QUICK, f"trainer.epochs={res['epochs'] + 1}", "resume=true", "hydra.run.dir=run")
    assert again.returncode == 0, again.stderr
    assert results_of(run)["status"] == "completed" and results_of(run)["epochs"] == res["epochs"] + 1


def test_a_nan_loss_ends_the_run_as_diverged_with_exit_code_0(run_cli, tmp_path):
    proc = run_cli(
        *QUICK, "optim.lr=1e30", "sched=constant", "trainer.precision=fp32", "trainer.log_interval=1",
        "trainer.epochs=3", "trainer.limit_train_batches=4", "hydra.run.dir=run",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = results_of(tmp_path / "run")
    assert res["status"] == "diverged" and res["epochs"] < 3 and res["loss"] is None
    assert "NaN/inf" in proc.stdout
