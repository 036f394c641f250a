"""The files a run folder holds: results.json (atomic, strict JSON, contract keys first), metrics.csv across
resumes, checkpoints in timm's layout, and where `resume` looks."""

import json
import math

import pytest
import torch
from timm.models import load_checkpoint

from metaformer import create_model
from metaformer.engine.checkpoint import find_resume, save_checkpoint
from metaformer.engine.loggers import MetricsCSV, wandb_mode
from metaformer.engine.results import RESULT_KEYS, read_results, write_results


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
