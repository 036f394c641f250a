"""`python run.py` trains for real: Fashion-MNIST learns, the run folder holds what docs/run-folder.md promises, two runs of
one config agree exactly, a run killed (SIGKILL) or preempted (SIGTERM, SIGUSR1) mid-epoch and started again ends
with the same weights and metrics as one left alone, SLURM requeue is asked for, and a NaN ends one job of a sweep
as `diverged` (with its step) while the others go on."""

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from analysis import collect_runs
from analysis.table import excluded_runs
from metaformer.engine.results import RESULT_KEYS

SIGNALLING_RUN = Path(__file__).with_name("signalling_run.py")


def results_of(folder):
    return json.loads((folder / "results.json").read_text())


def metrics_of(folder):
    with (folder / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def weights_of(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_short_fashion_mnist_run_learns_and_fills_its_run_folder(run_cli, tmp_path):
    proc = run_cli(
        "trainer.epochs=2", "trainer.batch_size=64", "trainer.limit_train_batches=20",
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
    assert res["mixers"] == ["pool"] * 4 and (res["norm"], res["act"], res["seed"]) == ("bn", "relu", 0)
    assert (res["model"], res["data"]) == ("poolformer_cpu_patch4", "fashion_mnist")
    assert res["params_m"] > 0.5 and res["gmacs"] > 0 and res["train_img_per_s"] > 0 and res["wall_s"] > 0
    assert res["loss"] > 0 and res["label"] is None

    rows = metrics_of(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert "epoch 2/2" in (run / "run.log").read_text()


# Randomness everywhere a resumed run could drift: crop/flip (the loader's generator), Mixup/CutMix (numpy),
# drop path (torch), and a cosine schedule; 2 epochs of 3 batches, so optimizer step 4 is batch 1 of epoch 2.
EXACT = [
    "trainer.epochs=2", "trainer.limit_train_batches=3", "aug=light", "aug.mixup=0.4", "aug.cutmix=0.4",
    "model.drop_path_rate=0.1", "norm=bn",  # the main job's norm: its running statistics resume too
]  # fmt: skip
COMPARED = ("top1", "top5", "loss", "best_top1", "best_top5", "best_epoch", "epochs", "status")
ROW_KEYS = ("epoch", "lr", "train_loss", "val_loss", "top1", "top5")


def fake_scontrol(folder):
    """An `scontrol` that records its arguments, first on PATH."""
    folder.mkdir()
    script = folder / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {folder / "calls"}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder / "calls"


def start_signalled(when: str, *args: str, cwd, env) -> subprocess.Popen:
    """Start `python run.py ARGS` as a real process whose data sends it a real signal at an exact point
    (`when`: SIG@EPOCH.BATCH, see tests/cli/signalling_run.py)."""
    return subprocess.Popen(
        [sys.executable, str(SIGNALLING_RUN), when, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_killed_and_preempted_runs_resume_to_the_same_weights_and_metrics(
    tmp_path, processes, quick, cli, monkeypatch
):
    """Three real processes stopped by real signals at exact points (SIGKILL; SIGTERM; SIGUSR1 under SLURM); the
    same commands again (run.py's entry, in this process) continue them to the weights and metrics of a run left
    alone, which a second run of the same config matches exactly; resume=PATH carries a finished run on."""
    cli_env, exact = processes.env, [*quick, *EXACT]
    calls = fake_scontrol(tmp_path / "bin")
    slurm = {"SLURM_JOB_ID": "4242", "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    interrupted = {  # name: (extra overrides, environment, the signal sent when batch B of epoch E is read)
        "killed": ([], cli_env(), "KILL@2.2"),  # at batch 2 of epoch 2: last.pt is epoch 1's
        "term": ([], cli_env(), "TERM@1.2"),  # mid-epoch 1: saves after batch 2
        "usr1": (["trainer.requeue=true"], cli_env(**slurm), "USR1@2.1"),  # mid-epoch 2: saves after batch 1
    }
    signalled = {
        n: start_signalled(when, *exact, *x, f"hydra.run.dir={n}", cwd=tmp_path, env=e)
        for n, (x, e, when) in interrupted.items()
    }
    monkeypatch.chdir(tmp_path)
    for name in ("alone", "again"):  # while those run: two runs of the config left alone, in this process
        done = cli(*exact, f"hydra.run.dir={name}")
        assert done.code == 0, done.err
    first = processes.finish(signalled)
    assert first["killed"].returncode == -9, first["killed"].stderr
    assert (first["term"].returncode, first["usr1"].returncode) == (128 + 15, 128 + 10), first["term"].stderr

    # Preemption: a checkpoint at the step, status preempted, and (under SLURM, when asked) a requeue.
    for name, signal_name, epochs, batch in (("term", "SIGTERM", 0, 2), ("usr1", "SIGUSR1", 1, 1)):
        res = results_of(tmp_path / name)
        assert (res["status"], res["signal"], res["epochs"]) == ("preempted", signal_name, epochs), res
        ckpt = torch.load(tmp_path / name / "last.pt", weights_only=True)
        assert (ckpt["epoch"], ckpt["batch"]) == (epochs, batch)
    assert calls.read_text().split() == ["requeue", "4242"]
    assert results_of(tmp_path / "usr1")["requeued"] is True
    assert results_of(tmp_path / "killed")["status"] == "running"  # SIGKILL leaves no time to write anything

    # The same commands again continue the runs (resume=true is the default); resume=PATH starts a new folder.
    with monkeypatch.context() as env:
        for key, value in slurm.items():
            env.setenv(key, value)
        again = {n: cli(*exact, *x, f"hydra.run.dir={n}") for n, (x, *_) in interrupted.items()}
    again["elsewhere"] = cli(
        *exact, "trainer.epochs=3", f"resume={tmp_path / 'alone'}", "hydra.run.dir=third"
    )
    for done in again.values():
        assert done.code == 0, done.err
    assert "resumed from" in again["usr1"].out and "batch 1 of epoch 2" in again["usr1"].out

    alone = tmp_path / "alone"
    reference = {k: results_of(alone)[k] for k in COMPARED}
    rows = [{k: r[k] for k in ROW_KEYS} for r in metrics_of(alone)]
    for name in ("again", *interrupted):  # `again`: determinism, two runs of one config agree exactly
        assert {k: results_of(tmp_path / name)[k] for k in COMPARED} == reference, name
        assert [{k: r[k] for k in ROW_KEYS} for r in metrics_of(tmp_path / name)] == rows, name
        assert same_weights(weights_of(tmp_path / name / "last.pt"), weights_of(alone / "last.pt")), name
    assert calls.read_text().split() == ["requeue", "4242"]  # the runs that completed did not requeue

    third = tmp_path / "third"  # resume=PATH: a new folder that carries the history on
    assert [r["epoch"] for r in metrics_of(third)] == ["1", "2", "3"]
    assert results_of(third)["epochs"] == 3


def test_a_nan_loss_ends_one_job_of_a_sweep_as_diverged_and_the_analysis_lists_it(
    tmp_path, cli, quick, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    done = cli(
        "-m", "optim.lr=1e-3,1e30", *quick, "sched=constant", "trainer.precision=fp32", "trainer.epochs=3",
        "trainer.limit_train_batches=4", "hydra.sweep.dir=sweep",
    )  # fmt: skip
    assert done.code == 0, done.err
    fine, bad = results_of(tmp_path / "sweep" / "0"), results_of(tmp_path / "sweep" / "1")
    assert fine["status"] == "completed" and fine["epochs"] == 3  # the other job went on
    assert bad["status"] == "diverged" and bad["epochs"] < 3 and bad["loss"] is None
    assert bad["diverged_step"] == 4 * (bad["diverged_epoch"] - 1) + bad["diverged_batch"]
    assert f"at step {bad['diverged_step']} " in bad["error"] and "NaN/inf" in done.out
    excluded = excluded_runs(collect_runs([tmp_path / "sweep"]))
    assert list(excluded["status"]) == ["diverged"] and excluded["folder"][0].endswith("sweep/1")
