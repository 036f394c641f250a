"""The files a run folder holds: results.json (atomic, strict JSON, contract keys first), metrics.csv across
resumes, checkpoints in timm's layout (written atomically, read weights-only, checked against the model), and
where `resume` looks."""

import json
import math
import os
import random

import numpy as np
import pytest
import torch
from timm.models import load_checkpoint
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from metaformer import create_model, load_pretrained
from metaformer.engine import checkpoint
from metaformer.engine.checkpoint import (
    CheckpointError,
    check_state_dict,
    find_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from metaformer.engine.loggers import MetricsCSV, wandb_mode
from metaformer.engine.loop import EpochStats, Stepper
from metaformer.engine.results import RESULT_KEYS, read_results, write_results
from metaformer.engine.state import TrainState


def test_results_json_has_every_contract_key_first_and_stays_strict_json(tmp_path):
    write_results(tmp_path, {"status": "diverged", "loss": math.nan, "top1": 12.5, "extra": math.inf})
    text = (tmp_path / "results.json").read_text()
    record = json.loads(text)  # NaN/inf would make this non-standard JSON
    assert list(record)[: len(RESULT_KEYS)] == list(RESULT_KEYS)
    assert record["status"] == "diverged" and record["loss"] is None and record["extra"] is None
    assert record["top1"] == 12.5 and record["label"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind
    assert read_results(tmp_path) == record


def test_metrics_csv_keeps_the_rows_up_to_the_resumed_epoch_and_appends(tmp_path):
    first = MetricsCSV(tmp_path)
    for epoch in (1, 2, 3):
        first.log({"epoch": epoch, "train_loss": 1.0 / epoch})
    resumed = MetricsCSV(tmp_path, resume_epoch=2)  # epoch 3's row was written, its checkpoint was not
    resumed.log({"epoch": 3, "train_loss": 0.3, "top1": 90.0})
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,top1"
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3"]
    assert lines[-1].endswith(",90.0")


def test_checkpoints_load_with_timm_and_resume_finds_last_pt(tmp_path):
    model = create_model("poolformer_cpu")
    save_checkpoint(
        tmp_path / "best.pt", {"state_dict": model.state_dict(), "epoch": 3, "arch": "poolformer_cpu"}
    )
    other = create_model("poolformer_cpu")
    load_checkpoint(other, str(tmp_path / "best.pt"))
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True)
    )

    assert find_resume(False, tmp_path) is None
    assert find_resume(True, tmp_path) is None  # nothing to resume yet: start from scratch
    (tmp_path / "last.pt").write_bytes(b"")
    assert find_resume(True, tmp_path) == tmp_path / "last.pt"
    assert find_resume(str(tmp_path), tmp_path / "elsewhere") == tmp_path / "last.pt"
    assert find_resume(str(tmp_path / "best.pt"), tmp_path) == tmp_path / "best.pt"


@pytest.mark.parametrize(
    ("configured", "env", "key", "expected"),
    [
        (None, None, None, "offline"),
        (None, None, "k" * 40, "online"),
        (None, "disabled", "k" * 40, "disabled"),
        ("offline", "online", "k" * 40, "offline"),
    ],
)
def test_wandb_runs_offline_without_a_key_and_honours_wandb_mode(
    monkeypatch, tmp_path, configured, env, key, expected
):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    for name, value in (("WANDB_MODE", env), ("WANDB_API_KEY", key)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert wandb_mode(configured) == expected


def test_a_checkpoint_write_killed_midway_leaves_the_previous_one_readable(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"state_dict": {"w": torch.ones(3)}, "epoch": 1})
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))

    def dies_halfway(obj, f):  # the process is killed while the file is being written
        f.write(b"PK\x03\x04 half a zip archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"state_dict": {"w": torch.zeros(3)}, "epoch": 2})
    assert checkpoint.load_checkpoint(path)["epoch"] == 1 and torch.equal(
        checkpoint.load_checkpoint(path)["state_dict"]["w"], torch.ones(3)
    )
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind
    monkeypatch.undo()
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    save_checkpoint(path, {"state_dict": {"w": torch.zeros(3)}, "epoch": 2})
    assert synced and checkpoint.load_checkpoint(path)["epoch"] == 2  # flushed to disk before the rename


class RunsCode:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path):
    marker, path = tmp_path / "marker", tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, path)
    with pytest.raises(
        CheckpointError, match=r"^refusing to load .*evil.pt: not a weights-only checkpoint"
    ) as e:
        checkpoint.load_checkpoint(path)
    assert "\n" not in str(e.value) and "exec" in str(e.value) and e.value.exit_code == 1
    with pytest.raises(ValueError, match="not a weights-only checkpoint"):
        load_pretrained(create_model("poolformer_cpu"), path)
    assert not marker.exists()


def test_a_truncated_checkpoint_is_reported_in_one_line(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"state_dict": create_model("poolformer_cpu").state_dict()})
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"last.pt is truncated or corrupt .*resume=false") as e:
        checkpoint.load_checkpoint(path)
    assert e.value.exit_code == 1 and "\n" not in str(e.value)


def test_a_checkpoint_of_another_architecture_is_refused_with_the_keys_named(tmp_path):
    pool = create_model("poolformer_cpu").state_dict()
    attn = create_model("poolformer_cpu", mixer=["pool", "pool", "pool", "attn"], num_classes=7).state_dict()
    check_state_dict(pool, pool, "same.pt")
    with pytest.raises(CheckpointError) as e:
        check_state_dict(pool, attn, "other.pt", {"model": {"name": "poolformer_cpu"}, "mixer": "attn"})
    message = str(e.value)
    assert message.startswith("other.pt does not match the configured model (it was trained with ")
    assert "unexpected keys [stages.3.blocks.0.token_mixer.qkv.weight" in message
    assert "head.weight (7, 192) vs (10, 192)" in message and e.value.exit_code == 2
    with pytest.raises(
        CheckpointError, match=r"keys missing from it \[stages.3.blocks.0.token_mixer.qkv.weight"
    ):
        check_state_dict(attn, pool, "other.pt")


def test_random_generator_states_survive_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "rng.pt", {"state_dict": {}, "rng": [rng_state()]})
    expected = (torch.rand(3), np.random.standard_normal(3), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    set_rng_state(checkpoint.load_checkpoint(tmp_path / "rng.pt")["rng"][0])
    drawn = (torch.rand(3), np.random.standard_normal(3), random.random())
    assert (
        torch.equal(drawn[0], expected[0])
        and np.array_equal(drawn[1], expected[1])
        and drawn[2] == expected[2]
    )


def _state(opt: str = "adamw", weight_decay: float = 0.0) -> TrainState:
    """A TrainState of a tiny model with EMA, an optimizer and a cosine schedule."""
    model = torch.nn.Linear(4, 3)
    optimizer = create_optimizer_v2(model, opt=opt, lr=0.1, weight_decay=weight_decay)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=2, updates_per_epoch=2)
    step = Stepper(model, model, optimizer, torch.nn.functional.cross_entropy, torch.device("cpu"),
                   scheduler=scheduler, ema=ModelEmaV3(model, decay=0.9))  # fmt: skip
    return TrainState(step, "tiny", {"optim": {"opt": opt}, "sched": {"sched": "cosine"}})


def test_the_train_state_is_what_last_pt_holds_and_reads_back(tmp_path):
    saved = _state()
    loss = saved.step.model(torch.randn(8, 4)).sum()
    loss.backward()
    saved.step.optimizer.step()
    saved.step.num_updates = 1
    saved.step.scheduler.step_update(num_updates=1)
    saved.step.ema.update(saved.step.module, step=1)
    saved.mark_cut(EpochStats(math.nan, 8, 0.5, stopped_after=1), loss_sum=2.5, images=8)
    saved.best, saved.rng = {"best_top1": 50.0, "best_top5": 90.0, "best_epoch": 1}, [rng_state()]
    save_checkpoint(tmp_path / "last.pt", saved.state_dict())
    save_checkpoint(tmp_path / "best.pt", saved.weights())

    resumed = _state()
    resumed.load_state_dict(checkpoint.load_checkpoint(tmp_path / "last.pt"), tmp_path / "last.pt")
    again = resumed.state_dict()
    for key in ("state_dict", "state_dict_ema"):
        assert same_tensors(again[key], saved.state_dict()[key]), key
    exp_avg = saved.step.optimizer.state[saved.step.module.weight]["exp_avg"]
    assert again["optimizer"]["state"][0]["exp_avg"].equal(exp_avg) and exp_avg.abs().sum() > 0
    assert again["scheduler"] == saved.step.scheduler.state_dict() and resumed.step.num_updates == 1
    assert (resumed.epoch, resumed.batch, resumed.best["best_top1"]) == (0, 1, 50.0)
    cut = resumed.cut_epoch(rank=0, is_main=True)
    assert (cut.stopped_after, cut.images, cut.loss_sum) == (1, 8, 2.5)
    assert resumed.wall_s >= 0 and resumed.rng[0]["python"] == saved.rng[0]["python"]

    with pytest.raises(CheckpointError, match=r"best.pt holds weights only"):
        _state().load_state_dict(checkpoint.load_checkpoint(tmp_path / "best.pt"), tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match=r"does not fit optim.opt=sgd") as e:  # other parameter groups
        _state("sgd", weight_decay=0.05).load_state_dict(
            checkpoint.load_checkpoint(tmp_path / "last.pt"), tmp_path / "last.pt"
        )
    assert e.value.exit_code == 2


def same_tensors(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
