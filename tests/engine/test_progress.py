"""Without a terminal (output to a pipe or a file: a sweep, SLURM, `tee`), training and evaluation log a progress
line at a steady interval, through `logging` (so it reaches Hydra's run.log); on a terminal the progress bar
stays, and processes other than the main one stay quiet."""

import io
import logging
import sys

import pytest
import torch
from torch import nn

from metaformer.engine.loggers import PROGRESS_INTERVAL_S, ProgressLog, format_duration
from metaformer.engine.loop import Stepper, evaluate, train_one_epoch

LOGGER = "metaformer.engine.loggers"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def stepper() -> Stepper:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return Stepper(model, model, optimizer, nn.CrossEntropyLoss(), torch.device("cpu"))


def batches(n: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [
        (torch.randn(4, 3, 2, 2, generator=gen), torch.randint(0, 3, (4,), generator=gen)) for _ in range(n)
    ]


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and ": batch " in r.getMessage()]


def test_a_line_every_interval_with_rate_and_eta(caplog):
    clock = FakeClock()
    ticker = ProgressLog("epoch 2/4", 469, interval_s=30, clock=clock)
    caplog.set_level(logging.INFO, logger=LOGGER)
    lines = []
    for batch in range(1, 470):
        clock.now += 0.25  # 4 batches of 64 images a second: 117 s in all
        lines.append(ticker.update(batch, 64 * batch, loss=lambda: 0.5123))
    logged = [line for line in lines if line]
    assert [lines.index(line) + 1 for line in logged] == [120, 240, 360]  # at 30, 60 and 90 s
    assert logged[0] == "epoch 2/4: batch 120/469 (26%), loss 0.5123, 256 img/s, eta 1:27"
    assert progress_lines(caplog) == logged


def test_the_rate_counts_a_resumed_epoch_from_where_it_resumed():
    clock = FakeClock()
    ticker = ProgressLog("epoch 1/1", 100, interval_s=5, start=50, scale=2, clock=clock)
    clock.now += 10
    line = ticker.update(60, 40)  # 10 batches of 4 images in 10 s on each of 2 processes
    assert line == "epoch 1/1: batch 60/100 (60%), 8 img/s, eta 0:40"


@pytest.mark.parametrize("interval", [None, 0])
def test_no_lines_when_off(interval):
    clock = FakeClock()
    ticker = ProgressLog("eval", 10, interval_s=interval, clock=clock)
    clock.now += 3600
    assert not ticker.enabled and ticker.update(5, 20) is None


def test_durations():
    assert [format_duration(s) for s in (0, 41, 725, 3723, -1)] == [
        "0:00",
        "0:41",
        "12:05",
        "1:02:03",
        "0:00",
    ]
    assert PROGRESS_INTERVAL_S == 30


def test_training_without_a_terminal_logs_progress_lines(caplog, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or a file: no progress bar
    caplog.set_level(logging.INFO, logger=LOGGER)
    stats = train_one_epoch(
        stepper(), batches(), 10, desc="epoch 1/3", show_progress=True, progress_interval_s=1e-9
    )
    lines = progress_lines(caplog)
    assert len(lines) == 9  # every batch at this interval, but the last (the epoch's own line follows)
    assert lines[0].startswith("epoch 1/3: batch 1/10 (10%), loss ")
    assert lines[-1].startswith("epoch 1/3: batch 9/10 (90%), loss ") and " img/s, eta 0:" in lines[-1]
    loss = float(lines[-1].split("loss ")[1].split(",")[0])
    assert 0 < loss < 5 and stats.images == 40
    assert "it/s" not in sys.stderr.getvalue()  # and no bar


def test_evaluation_without_a_terminal_logs_progress_lines(caplog, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    caplog.set_level(logging.INFO, logger=LOGGER)
    s = stepper()
    metrics = evaluate(s.model, batches(5), s, show_progress=True, progress_interval_s=1e-9)
    assert metrics is not None
    lines = progress_lines(caplog)
    assert len(lines) == 4 and lines[0].startswith("eval: batch 1/5 (20%), ") and "loss" not in lines[0]


@pytest.mark.parametrize("where", ["a terminal", "another process"])
def test_no_lines_on_a_terminal_or_off_the_main_process(where, caplog, monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal() if where == "a terminal" else io.StringIO())
    caplog.set_level(logging.INFO, logger=LOGGER)
    train_one_epoch(stepper(), batches(), 10, show_progress=where == "a terminal", progress_interval_s=1e-9)
    assert progress_lines(caplog) == []
    if where == "a terminal":
        assert "train:" in sys.stderr.getvalue()  # tqdm's bar instead


def test_a_run_writes_the_lines_into_run_log(cli, quick, tmp_path, monkeypatch):
    """`python run.py` with its output going to a file: the lines reach Hydra's run.log (here at every batch)."""
    from metaformer.engine import loop

    every_batch = loop._ticker
    monkeypatch.setattr(
        loop,
        "_ticker",
        lambda desc, total, wanted, interval_s, start=0: every_batch(desc, total, wanted, 1e-9, start),
    )
    monkeypatch.chdir(tmp_path)
    outcome = cli(*quick, "trainer.limit_train_batches=3", "trainer.eval_batch_size=16", "hydra.run.dir=run")
    assert outcome.code == 0, outcome.err
    log = (tmp_path / "run" / "run.log").read_text()
    assert "epoch 1/1: batch 1/3 (33%), loss " in log and "epoch 1/1: batch 2/3 (67%), loss " in log
    assert "eval: batch 1/2 (50%)" in log
