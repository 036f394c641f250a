"""The resumable state of a run: one object whose `state_dict()` is last.pt and whose `load_state_dict()` reads
it back, so what a checkpoint holds is written down once.

The state is the stepper's stateful parts (model, EMA, optimizer, scheduler, fp16 scaler, update count) and the
run's counters (`TrainState`'s saved fields: epoch, batch, best and final metrics, time and images so far, the
cut epoch's progress and every rank's random-generator states). The weights keep timm's layout (`state_dict`,
`state_dict_ema`, `epoch`, `arch`, `metric`), so `timm.models.load_checkpoint` reads last.pt and best.pt.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaformer.engine.checkpoint import CheckpointError, check_state_dict
from metaformer.engine.loop import EpochStats, Stepper

NO_BEST = {"best_top1": None, "best_top5": None, "best_epoch": None}
NO_FINAL = {"top1": None, "top5": None, "loss": None}


def _saved(**kwargs: Any) -> Any:
    """A field of TrainState that last.pt holds."""
    return field(metadata={"saved": True}, **kwargs)


@dataclass
class TrainState:
    """Where a run is: its stepper and the counters that last.pt saves next to the weights."""

    step: Stepper  # model, EMA, optimizer, scheduler, scaler and the update count
    arch: str
    config: dict[str, Any]  # the resolved config, as plain containers
    epoch: int = _saved(default=0)  # epochs completed
    batch: int = _saved(default=0)  # batches done in epoch `epoch + 1`: 0 at an epoch boundary
    best: dict[str, Any] = _saved(default_factory=lambda: dict(NO_BEST))
    final: dict[str, Any] = _saved(default_factory=lambda: dict(NO_FINAL))  # the last evaluation's metrics
    wall_s: float = _saved(default=0.0)  # wall seconds of the attempts before this one
    train_images: int = _saved(default=0)
    train_seconds: float = _saved(default=0.0)
    epoch_progress: dict[str, Any] | None = _saved(default=None)  # the cut epoch's loss_sum, images, seconds
    rng: list[dict[str, Any]] = _saved(default_factory=list)  # every rank's generator states, in rank order
    started: float = field(default_factory=time.time)  # when this attempt started

    def wall_total(self) -> float:
        """Wall seconds of this attempt and every earlier one."""
        return self.wall_s + time.time() - self.started

    def _stateful(self) -> dict[str, Any]:
        """The stepper's parts with a state_dict of their own, by their key in last.pt (None: not in this run)."""
        s = self.step
        return {
            "state_dict": s.module,
            "state_dict_ema": s.ema.module if s.ema is not None else None,
            "optimizer": s.optimizer,
            "scheduler": s.scheduler,
            "scaler": s.scaler,
        }

    def weights(self) -> dict[str, Any]:
        """best.pt: the weights (and EMA weights) in timm's layout, with the epoch, top-1 and config."""
        stateful = self._stateful()
        return {
            "arch": self.arch,
            "epoch": self.epoch,
            "state_dict": stateful["state_dict"].state_dict(),
            "state_dict_ema": stateful["state_dict_ema"].state_dict() if self.step.ema is not None else None,
            "metric": self.final["top1"],
            "config": self.config,
        }

    def state_dict(self) -> dict[str, Any]:
        """last.pt: the weights, every stateful part, the update count and the saved counters."""
        parts = {k: v.state_dict() if v is not None else None for k, v in self._stateful().items()}
        counters = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("saved")
        }
        counters["wall_s"] = self.wall_total()
        return {**self.weights(), **parts, "num_updates": self.step.num_updates, **counters}

    def load_state_dict(self, state: Mapping[str, Any], path: str | Path = "last.pt") -> None:
        """Continue from `state` (a last.pt); raise CheckpointError (one line), which refuses the run, if it is
        not a run's last.pt or does not fit this run's model, optimizer or scheduler."""
        if "optimizer" not in state or "num_updates" not in state:
            raise CheckpointError(f"{path} holds weights only (a best.pt?); resume from a run's last.pt")
        stateful = self._stateful()
        trained_with = state.get("config")
        check_state_dict(stateful["state_dict"].state_dict(), state["state_dict"], path, trained_with)
        ema = stateful["state_dict_ema"]
        if ema is not None and state.get("state_dict_ema"):
            check_state_dict(ema.state_dict(), state["state_dict_ema"], path, trained_with)
        saved = [f.name for f in dataclasses.fields(self) if f.metadata.get("saved")]
        missing = [k for k in saved if k not in state]
        if missing:
            raise CheckpointError(f"{path} was written by an older trainer (no {', '.join(missing)}); set "
                                  f"resume=false to start over")  # fmt: skip
        try:
            for key, part in stateful.items():
                if part is not None and state.get(key):
                    part.load_state_dict(state[key])
        except (ValueError, KeyError, TypeError) as e:
            optim, sched = self.config.get("optim", {}), self.config.get("sched", {})
            raise CheckpointError(
                f"the optimizer/scheduler state in {path} does not fit optim.opt={optim.get('opt')} "
                f"sched.sched={sched.get('sched')} ({' '.join(str(e).split())}); resume with the config it was "
                f"trained with, or set resume=false to start over",
                exit_code=2,
            ) from e
        self.step.num_updates = int(state["num_updates"])
        for name in saved:
            setattr(self, name, state[name])
        self.epoch, self.batch = int(self.epoch), int(self.batch)

    def cut_epoch(self, rank: int, is_main: bool) -> EpochStats | None:
        """The epoch a mid-epoch checkpoint cut short, for `train_one_epoch(resume_from=...)`; None at an epoch
        boundary. Rank 0 carries the summed loss and image count of all ranks."""
        if not self.batch or self.epoch_progress is None:
            return None
        p = self.epoch_progress
        return EpochStats(
            math.nan, int(p["images"]) if is_main else 0, float(p["seconds"]), stopped_after=self.batch,
            loss_sum=float(p["loss_sum"]) if is_main else 0.0,
        )  # fmt: skip

    def mark_cut(self, stats: EpochStats, loss_sum: float, images: int) -> None:
        """Record an epoch cut short after `stats.stopped_after` batches (all ranks' loss sum and images)."""
        self.batch = stats.stopped_after or 0
        self.epoch_progress = {"loss_sum": loss_sum, "images": images, "seconds": stats.seconds}

    def end_epoch(self, stats: EpochStats) -> None:
        """Count a finished epoch: the next checkpoint is at an epoch boundary."""
        self.epoch += 1
        self.batch, self.epoch_progress = 0, None
        self.train_images += stats.images
        self.train_seconds += stats.seconds
