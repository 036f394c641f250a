"""The issue's other commands: torchrun on 2 CPU processes, multiruns (basic and joblib launchers), wandb offline,
and the ImageNet and CIFAR configs on small data sets built here in their real on-disk formats. torchrun runs its
two real processes; the others call run.py's entry in this process (joblib's jobs run in its worker processes)."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def results_of(folder):
    return json.loads((folder / "results.json").read_text())


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_one_model(tmp_path, processes):
    QUICK, cli_env = processes.quick, processes.env
    # Each rank saves its final weights into the folder (rank_weights_run.py); rank 0 alone writes the run folder.
    # GroupNorm: BatchNorm's running statistics are each rank's own without trainer.sync_bn.
    weights = tmp_path / "rank_weights"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(Path(__file__).with_name("rank_weights_run.py")), str(weights), *QUICK, "norm=gn", "trainer.epochs=2",
         "hydra.run.dir=run"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = torch.load(weights / "rank0.pt", weights_only=True)
    rank1 = torch.load(weights / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(last[k], rank0[k]) for k in rank0)

    written = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("results.json")]
    assert written == ["run/results.json"]
    assert len(list(tmp_path.rglob("metrics.csv"))) == 1 and len(list(tmp_path.rglob(".hydra"))) == 1
    res = results_of(tmp_path / "run")
    assert res["status"] == "completed" and res["world_size"] == 2 and res["global_batch"] == 2 * 16
    assert res["epochs"] == 2


@pytest.fixture
def here(cli, tmp_path, monkeypatch):
    """run.py's entry in this process, in tmp_path (relative run folders land there)."""
    monkeypatch.chdir(tmp_path)
    return cli


@pytest.mark.slow
def test_a_multirun_over_mixer_lists_writes_one_run_folder_per_job(here, tmp_path, quick):
    done = here("-m", "mixer=[pool,pool,pool,pool],[pool,pool,attn,attn]", *quick, "hydra.sweep.dir=sweep")
    assert done.code == 0, done.err
    jobs = {p.parent.name: results_of(p.parent) for p in (tmp_path / "sweep").glob("*/results.json")}
    assert sorted(jobs) == ["0", "1"]
    assert jobs["0"]["mixers"] == ["pool"] * 4 and jobs["1"]["mixers"] == ["pool", "pool", "attn", "attn"]
    assert all(r["status"] == "completed" for r in jobs.values())
    assert jobs["1"]["params_m"] > jobs["0"]["params_m"]  # attention has weights, pooling has none


@pytest.mark.slow
@pytest.mark.xdist_group("loky")  # joblib's two worker processes, started once for both tests
def test_joblib_runs_seeds_in_parallel_and_splits_the_cpu_threads(cli, tmp_path, quick, monkeypatch):
    monkeypatch.delenv(
        "OMP_NUM_THREADS", raising=False
    )  # the worker processes inherit it: let the launcher decide
    # Not `here`: joblib's workers outlive this test (the group's next test reuses them) and keep the working
    # directory they started in, and a passing test's tmp_path is deleted at its teardown.
    sweep = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    done = cli("-m", "seed=0,1", *quick, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", sweep)
    assert done.code == 0, done.err
    jobs = [results_of(tmp_path / "sweep" / str(i)) for i in (0, 1)]
    assert [r["seed"] for r in jobs] == [0, 1] and all(r["status"] == "completed" for r in jobs)
    assert all(r["threads"] == max(1, (os.cpu_count() or 1) // 2) for r in jobs)


@pytest.mark.slow
def test_wandb_logs_offline_without_an_api_key(here, tmp_path, quick, monkeypatch):
    for key, value in {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wb"),
        "HOME": str(tmp_path),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    done = here(*quick, "logger=wandb", "hydra.run.dir=run")
    assert done.code == 0, done.err
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # wandb-core keeps an offline run in one protobuf log (run-<id>.wandb) until `wandb sync`; the summary
    # record carries results.json's keys, which no per-epoch row has. Its service may still be writing the log
    # when finish() returns: it is whole once the service stops, as it does when a real run's process exits.
    import wandb

    wandb.teardown()
    log = next(runs[0].glob("run-*.wandb")).read_bytes()
    res = results_of(tmp_path / "run")
    for key in (b"best_top1", b"git_commit", b"params_m", b"mixers"):
        assert key in log, key
    assert json.dumps(res["best_top1"]).encode() in log and b'"completed"' in log
    assert b"mixer_options" in log  # the config


def _image_folder(root, classes=("cat", "dog"), per_class=2, size=40):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.JPEG", format="JPEG")


@pytest.mark.slow
def test_the_imagenet_command_trains_s12_on_an_image_folder_tree(here, tmp_path):
    _image_folder(tmp_path / "imagenet")
    done = here(
        "model=poolformer_s12", "data=imagenet", f"data.root={tmp_path / 'imagenet'}", "data.num_classes=null",
        "data.num_workers=0", "trainer.epochs=1", "trainer.batch_size=2", "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1", "hydra.run.dir=run",
    )  # fmt: skip
    assert done.code == 0, done.err
    res = results_of(tmp_path / "run")
    assert (res["status"], res["model"], res["data"]) == ("completed", "poolformer_s12", "imagenet")
    assert round(res["gmacs"], 1) == 1.8  # S12 at 224 px, as in the paper
    head = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["state_dict"]["head.weight"]
    assert head.shape[0] == 2  # the classes were found in the folders


def test_cifar10_reads_the_python_pickle_layout(here, tmp_path):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 255, (8, 3072), dtype=np.uint8), "labels": list(range(8))}
        (folder / name).write_bytes(pickle.dumps(batch))
    done = here(
        "data=cifar10", f"data.root={tmp_path / 'cifar'}", "trainer.batch_size=8", "trainer.epochs=1",
        "hydra.run.dir=run",
    )  # fmt: skip
    assert done.code == 0, done.err
    res = results_of(tmp_path / "run")
    assert res["status"] == "completed" and res["data"] == "cifar10" and res["epochs"] == 1
