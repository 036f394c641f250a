"""`train(cfg)` called from Python, as a notebook would: a run folder from a composed config with a complete,
weights-only last.pt, an exception in the middle of training recorded as `failed` in results.json before it
propagates, and submitit's preemption signal saving a checkpoint before submitit's own handler requeues the job."""

import dataclasses
import functools
import os
import signal
import stat
import subprocess

import pytest
import torch
from omegaconf import OmegaConf

from metaformer.engine import read_results, train
from metaformer.engine.checkpoint import load_checkpoint
from metaformer.engine.data import DATASETS, DataSource, register_dataset
from metaformer.engine.parts import run_settings
from metaformer.engine.preemption import slurm_job_id
from metaformer.fast import Settings, fast_settings, resolve_precision
from tests.signals import register_signalling

QUICK = [
    "data=synthetic",
    "data.num_train=64",
    "data.num_val=32",
    "trainer.batch_size=16",
    "trainer.threads=1",
]


class BreaksInEpoch:
    """A train loader that raises when epoch `epoch` starts: a disk that vanishes mid-run."""

    def __init__(self, loader, epoch: int) -> None:
        self.loader, self.epoch, self.current = loader, epoch, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.current = epoch
        self.loader.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self.current == self.epoch:
            raise OSError("input/output error while reading a batch")
        return iter(self.loader)


@pytest.fixture
def flaky_dataset():
    synthetic = DATASETS.get("synthetic")

    def build(*args, **kwargs):
        data = synthetic.build(*args, **kwargs)
        return dataclasses.replace(data, train=BreaksInEpoch(data.train, epoch=1), name="flaky")

    register_dataset("flaky", DataSource(synthetic.check, build), override=True)
    yield "flaky"


def test_train_from_python_with_ema_accumulation_and_clipping(tmp_path, compose_cfg):
    overrides = ["trainer.epochs=2", "trainer.ema=true", "trainer.accumulation=2", "trainer.grad_clip=1.0"]
    record = train(compose_cfg(*QUICK, *overrides, f"output_dir={tmp_path}"))
    assert record["status"] == "completed" and record["epochs"] == 2
    assert read_results(tmp_path)["best_top1"] == record["best_top1"]
    assert record["global_batch"] == 2 * 16
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert "top1_ema" in rows[0].split(",") and len(rows) == 3
    last = load_checkpoint(tmp_path / "last.pt")  # weights only
    parts = {
        "state_dict",
        "state_dict_ema",
        "optimizer",
        "scheduler",
        "scaler",
        "epoch",
        "batch",
        "num_updates",
    }
    assert parts | {"rng", "config", "best", "final"} <= set(last)
    assert last["state_dict_ema"].keys() == last["state_dict"].keys()
    assert last["num_updates"] == 2 * 2  # 4 batches per epoch, one optimizer step per 2
    assert (last["epoch"], last["batch"], last["scaler"]) == (2, 0, None)  # an epoch boundary; no fp16 scaler
    assert last["optimizer"]["state"] and last["scheduler"]["t_initial"] == 2 * 2
    assert set(last["rng"][0]) == {"torch", "cuda", "numpy", "python"}
    config = last["config"]  # resolved, plain containers
    assert (
        config["output_dir"] == str(tmp_path)
        and config["trainer"]["ema"] is True
        and config["mixer"] is None  # null: the preset's
    )


def test_an_exception_mid_run_is_recorded_as_failed_and_raised(tmp_path, flaky_dataset, compose_cfg):
    cfg = compose_cfg(*QUICK, f"data.name={flaky_dataset}", "trainer.epochs=3", f"output_dir={tmp_path}")
    with pytest.raises(OSError, match="input/output error"):
        train(cfg)
    res = read_results(tmp_path)
    assert res["status"] == "failed" and res["epochs"] == 1  # the first epoch finished, the second broke
    assert res["error"] == "OSError: input/output error while reading a batch"
    assert res["best_top1"] is not None and (tmp_path / "last.pt").is_file()


class SignallingSynthetic:
    """`send(signum, epoch, batch)`: the synthetic data set sends this process a real signal when batch `batch`
    of epoch `epoch` is read (tests/signals.py); `restore()`: the plain data set again."""

    def __init__(self) -> None:
        self.original = DATASETS.get("synthetic")
        self.send = functools.partial(register_signalling, "synthetic")

    def restore(self) -> None:
        register_dataset("synthetic", self.original, override=True)


@pytest.fixture
def signalling_synthetic():
    """A SignallingSynthetic, restored after the test."""
    data = SignallingSynthetic()
    yield data
    data.restore()


def fake_scontrol(folder, monkeypatch):
    """An `scontrol` first on PATH that records its arguments in folder/calls, one call a line."""
    folder.mkdir()
    script = folder / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {folder / "calls"}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder / "calls"


def test_under_submitit_its_signal_saves_a_checkpoint_then_goes_to_submitit_which_alone_requeues(
    tmp_path, monkeypatch, compose_cfg, signalling_synthetic
):
    calls = fake_scontrol(tmp_path / "bin", monkeypatch)
    seen = []

    def submitit_handler(signum, frame):  # what submitit's does: requeue the job itself, then exit
        ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
        seen.append((signum, read_results(tmp_path / "run")["status"], ckpt["epoch"], ckpt["batch"]))
        subprocess.run(["scontrol", "requeue", "35_0"], check=True)  # fails in SLURM if already requeued
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "35")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    signalling_synthetic.send(signal.SIGUSR2, 2, 2)  # stops after batch 2 of epoch 2
    overrides = [*QUICK, "trainer.epochs=2", "trainer.requeue=true", f"output_dir={tmp_path / 'run'}"]
    try:
        with pytest.raises(SystemExit) as e:
            train(compose_cfg(*overrides))
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler  # ours is gone again
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert e.value.code == -1 and seen == [(signal.SIGUSR2, "preempted", 1, 2)]
    assert calls.read_text().splitlines() == ["requeue 35_0"]  # submitit's requeue only, not ours as well
    assert "requeued" not in read_results(tmp_path / "run")

    signalling_synthetic.restore()
    record = train(compose_cfg(*overrides))  # the requeued job: the same config again
    assert record["status"] == "completed" and record["epochs"] == 2


def test_under_submitit_a_sigterm_that_submitit_only_bypasses_is_requeued_by_us(
    tmp_path, monkeypatch, compose_cfg, signalling_synthetic
):
    # A site that signals the batch script: SLURM ends the step with SIGTERM, which submitit logs and bypasses.
    calls = fake_scontrol(tmp_path / "bin", monkeypatch)
    bypassed = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: bypassed.append(signum))
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "36")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    signalling_synthetic.send(signal.SIGTERM, 1, 2)
    overrides = [*QUICK, "trainer.epochs=2", "trainer.requeue=true", f"output_dir={tmp_path / 'run'}"]
    try:
        with pytest.raises(SystemExit) as e:
            train(compose_cfg(*overrides))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert e.value.code == 128 + signal.SIGTERM and bypassed == [signal.SIGTERM]
    assert calls.read_text().splitlines() == ["requeue 36"]
    assert read_results(tmp_path / "run")["requeued"] is True


def test_the_slurm_job_to_requeue(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    assert slurm_job_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "107")
    assert slurm_job_id() == "107"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "100")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert slurm_job_id() == "100_7"  # an array task is requeued by its array id and index


def _trainer_cfg(**keys):
    base = {"precision": "bf16", "channels_last": None, "compile": None, "fast": False}
    return OmegaConf.create({**base, **keys})


def test_fast_switch_resolves_for_the_hardware_and_explicit_keys_win():
    cpu = torch.device("cpu")
    assert run_settings(_trainer_cfg(), cpu) == Settings("bf16", channels_last=False, compile=False)
    assert run_settings(_trainer_cfg(fast=True), cpu) == fast_settings(cpu)
    assert run_settings(_trainer_cfg(fast=True, compile=False), cpu) == fast_settings(cpu, compile=False)
    assert (
        run_settings(_trainer_cfg(precision="fp32", channels_last=True), cpu).describe()
        == "fp32+channels_last"
    )


def test_precision_auto_follows_the_hardware_and_emulated_bf16_is_warned_about(monkeypatch, caplog):
    import metaformer.engine.parts as parts

    cpu = torch.device("cpu")
    assert run_settings(_trainer_cfg(precision="auto"), cpu).precision == resolve_precision("auto", cpu)
    monkeypatch.setattr(parts, "bf16_supported", lambda device: False)
    with caplog.at_level("WARNING", logger="metaformer.engine.parts"):
        assert run_settings(_trainer_cfg(precision="bf16"), cpu).precision == "bf16"
    assert "without native bf16" in caplog.text and "trainer.precision=auto" in caplog.text


def test_train_on_the_fast_path_records_its_settings(tmp_path, compose_cfg):
    record = train(
        compose_cfg(*QUICK, "trainer.fast=true", "trainer.compile=false", f"output_dir={tmp_path}")
    )
    assert record["status"] == "completed"
    expected = fast_settings("cpu", compile=False)
    assert record["settings"] == expected.describe() and record["precision"] == expected.precision
    assert "channels_last" in read_results(tmp_path)["settings"]


def test_ema_is_useful_after_one_short_epoch_of_the_cpu_preset(tmp_path, fashion_mnist_present, compose_cfg):
    # 30 steps of poolformer_cpu on Fashion-MNIST: with timm's EMA warmup (on by default) the average follows
    # the model; with a fixed decay of 0.9998 it would still be near its random initial weights (about 20%).
    overrides = [
        "trainer.epochs=1",
        "trainer.ema=true",
        "trainer.batch_size=64",
        "trainer.limit_train_batches=30",
    ]
    record = train(
        compose_cfg(*overrides, "trainer.limit_val_batches=8", "trainer.threads=1", f"output_dir={tmp_path}")
    )
    header, row = (tmp_path / "metrics.csv").read_text().splitlines()
    metrics = dict(zip(header.split(","), map(float, row.split(",")), strict=True))
    assert metrics["top1"] > 50, metrics  # chance is 10%
    assert abs(metrics["top1_ema"] - metrics["top1"]) < 5, metrics
    assert record["top1"] == metrics["top1_ema"]  # the EMA weights are the run's model
