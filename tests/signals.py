"""Test-only data that stops a run with a real signal at an exact point: the synthetic data set, wrapped so that
reading batch B of epoch E sends this process a signal (SIGTERM, SIGUSR1, SIGKILL, ...). The trainer asks
whether to stop after each optimizer step, so a caught signal stops the run after batch B (which trains)."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterator
from typing import Any

from metaformer.engine.data import DATASETS, DataSource, register_dataset


class SignalsAt:
    """A train loader that sends `signum` to this process when batch `batch` (1-based) of epoch `epoch`
    (1-based) is read."""

    def __init__(self, loader: Any, signum: int, epoch: int, batch: int) -> None:
        self.loader, self.signum, self.at = loader, signum, (epoch, batch)
        self.current, self.start = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.current, self.start = epoch, start_batch
        self.loader.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator:
        for number, batch in enumerate(self.loader, start=self.start + 1):
            if (self.current + 1, number) == self.at:
                os.kill(os.getpid(), self.signum)
            yield batch


def signal_at(spec: str) -> tuple[int, int, int]:
    """`TERM@1.2` -> (SIGTERM, epoch 1, batch 2)."""
    name, _, where = spec.partition("@")
    epoch, _, batch = where.partition(".")
    return int(getattr(signal, "SIG" + name.upper().removeprefix("SIG"))), int(epoch), int(batch)


def register_signalling(name: str, signum: int, epoch: int, batch: int) -> None:
    """Make `data.name=<name>` the synthetic data set whose train loader signals at (epoch, batch)."""
    synthetic = DATASETS.get("synthetic")

    def build(*args: Any, **kwargs: Any) -> Any:
        data = synthetic.build(*args, **kwargs)
        return dataclasses.replace(data, train=SignalsAt(data.train, signum, epoch, batch))

    register_dataset(name, DataSource(synthetic.check, build, synthetic.fixed), override=True)
