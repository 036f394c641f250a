"""`train(cfg)` called from Python, as a notebook would: a run folder from a composed config, and an exception
in the middle of training recorded as `failed` in results.json before it propagates."""

import dataclasses
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from metaformer.engine import read_results, train
from metaformer.engine.data import DATASETS, DataSource, register_dataset

CONF = Path(__file__).resolve().parents[2] / "conf"
QUICK = ["data=synthetic", "data.num_train=64", "data.num_val=32", "trainer.batch_size=16"]


def cfg_of(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


class BreaksInEpoch:
    """A train loader that raises when epoch `epoch` starts: a disk that vanishes mid-run."""

    def __init__(self, loader, epoch: int) -> None:
        self.loader, self.epoch, self.current = loader, epoch, 0

    def set_epoch(self, epoch: int) -> None:
        self.current = epoch
        self.loader.set_epoch(epoch)

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


def test_train_from_python_with_ema_accumulation_and_clipping(tmp_path):
    overrides = ["trainer.epochs=2", "trainer.ema=true", "trainer.accumulation=2", "trainer.grad_clip=1.0"]
    record = train(cfg_of(*QUICK, *overrides, f"output_dir={tmp_path}"))
    assert record["status"] == "completed" and record["epochs"] == 2
    assert read_results(tmp_path)["best_top1"] == record["best_top1"]
    assert record["global_batch"] == 2 * 16
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert "top1_ema" in rows[0].split(",") and len(rows) == 3
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    assert last["state_dict_ema"].keys() == last["state_dict"].keys()
    assert last["num_updates"] == 2 * 2  # 4 batches per epoch, one optimizer step per 2


def test_an_exception_mid_run_is_recorded_as_failed_and_raised(tmp_path, flaky_dataset):
    cfg = cfg_of(*QUICK, f"data.name={flaky_dataset}", "trainer.epochs=3", f"output_dir={tmp_path}")
    with pytest.raises(OSError, match="input/output error"):
        train(cfg)
    res = read_results(tmp_path)
    assert res["status"] == "failed" and res["epochs"] == 1  # the first epoch finished, the second broke
    assert res["error"] == "OSError: input/output error while reading a batch"
    assert res["best_top1"] is not None and (tmp_path / "last.pt").is_file()
