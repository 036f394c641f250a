"""Where a run's numbers go: `metrics.csv` always, the console, and wandb when `logger=wandb`.

`metrics.csv` gets one row per epoch and survives resumes (rows past the checkpoint are dropped, new rows are
appended). wandb logs the config, each epoch's row and the final results as its summary; without an API key it
runs offline (`WANDB_MODE` wins when set), and jobs of one multirun share a wandb group named after the sweep.
The console shows a progress bar on an interactive terminal and one plain line per epoch everywhere; without a
terminal (a pipe, a file, SLURM, a sweep) `ProgressLog` logs a progress line at a steady interval instead, so
run.log and the job's output show that a long epoch is moving.
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"


class MetricsCSV:
    """Appends one row per epoch to `run_dir/metrics.csv`; the header grows if later rows bring new columns."""

    def __init__(self, run_dir: Path, resume_epoch: int = 0) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.rows: list[dict[str, Any]] = []
        if resume_epoch and self.path.is_file():
            with self.path.open(newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= resume_epoch]
        self._write()

    def log(self, row: dict[str, Any]) -> None:
        """Add the row of one epoch and rewrite the file."""
        self.rows.append(row)
        self._write()

    def _write(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns or ["epoch"])
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)


def has_wandb_key() -> bool:
    """True when wandb could log in: WANDB_API_KEY or an api.wandb.ai entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(configured: str | None) -> str:
    """`logger.mode` if set, else WANDB_MODE if set, else online with an API key and offline without."""
    return configured or os.environ.get("WANDB_MODE") or ("online" if has_wandb_key() else "offline")


class WandbLogger:
    """Logs the resolved config, one row per epoch, and the final results as the run summary."""

    def __init__(self, cfg: DictConfig, run_dir: Path, group: str | None, name: str | None) -> None:
        import wandb  # slow to import: only when asked for

        lcfg = cfg.logger
        mode = wandb_mode(lcfg.get("mode"))
        wandb_dir = Path(lcfg.get("dir") or os.environ.get("WANDB_DIR") or run_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=lcfg.get("project"),
            entity=lcfg.get("entity"),
            group=lcfg.get("group") or group,
            name=lcfg.get("run_name") or name,
            tags=list(lcfg.get("tags") or []),
            config=OmegaConf.to_container(cfg, resolve=True),
            dir=str(wandb_dir),
            mode=mode,
        )
        log.info("wandb: %s run in %s", mode, self.run.dir)

    def log(self, row: dict[str, Any]) -> None:
        """Log one epoch's row, stepped by epoch."""
        self.run.log({k: v for k, v in row.items() if v is not None}, step=int(row["epoch"]))

    def finish(self, results: dict[str, Any]) -> None:
        """Store the final results as the summary and close the run."""
        self.run.summary.update({k: v for k, v in results.items() if v is not None})
        self.run.finish(exit_code=0 if results.get("status") in ("completed", "diverged") else 1)


def progress(total: int, desc: str, enabled: bool) -> tqdm:
    """A progress bar on an interactive terminal; a silent counter otherwise."""
    return tqdm(
        total=total, desc=desc, leave=False, dynamic_ncols=True, disable=not (enabled and sys.stderr.isatty())
    )


# Seconds between progress lines without a terminal (`train_one_epoch(..., progress_interval_s=...)`).
PROGRESS_INTERVAL_S = 30.0


def format_duration(seconds: float) -> str:
    """`0:41`, `12:05`, `1:02:03`: minutes and seconds, with hours when there are some."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLog:
    """A progress line through `logging` (the console and run.log) every `interval_s` seconds of a pass over
    `total` batches: `epoch 2/4: batch 300/469 (64%), loss 0.512, 2700 img/s, eta 0:41`.

    For when no progress bar is shown: off (no lines, no clock reads) when `interval_s` is None or <= 0.
    `start` is the batch the pass begins at (a resumed epoch's), `scale` multiplies this process's images into
    the images/s of the whole job (the number of processes under DDP), and `clock` is the time source (tests
    give a fake one).
    """

    def __init__(
        self,
        desc: str,
        total: int | None,
        interval_s: float | None = PROGRESS_INTERVAL_S,
        start: int = 0,
        scale: int = 1,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self.desc, self.total, self.start, self.scale = desc, total, start, scale
        self.enabled = interval_s is not None and interval_s > 0
        self.interval_s = interval_s or 0.0
        self.clock, self.logger = clock, logger
        self.began = clock() if self.enabled else 0.0
        self.next_at = self.began + self.interval_s

    def update(self, batch: int, images: int, loss: Callable[[], float] | None = None) -> str | None:
        """After `batch` batches (1-based, counting from the pass's first, resumed ones included) and `images`
        images since this object was made: log a line if the interval has passed, and return it (else None).
        `loss` is called only then (it may synchronise with the device)."""
        if not self.enabled:
            return None
        now = self.clock()
        if now < self.next_at or (self.total is not None and batch >= self.total):
            return None  # the pass's last batch is followed by its own summary line
        self.next_at = now + self.interval_s
        elapsed = now - self.began
        parts = [
            f"batch {batch}/{self.total} ({100 * batch / self.total:.0f}%)"
            if self.total
            else f"batch {batch}"
        ]
        if loss is not None:
            parts.append(f"loss {loss():.4g}")
        if elapsed > 0:
            parts.append(f"{images * self.scale / elapsed:.0f} img/s")
            done = batch - self.start
            if self.total and done > 0:
                parts.append(f"eta {format_duration((self.total - batch) * elapsed / done)}")
        line = f"{self.desc}: {', '.join(parts)}"
        self.logger.info(line)
        return line


def format_epoch(row: dict[str, Any], epochs: int) -> str:
    """One plain line for the console and run.log: the epoch's losses, accuracy, lr and speed."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"train_loss {row['train_loss']:.4f}"]
    if row.get("val_loss") is not None:
        parts += [f"val_loss {row['val_loss']:.4f}", f"top1 {row['top1']:.2f}", f"top5 {row['top5']:.2f}"]
    if row.get("top1_ema") is not None:
        parts.append(f"top1_ema {row['top1_ema']:.2f}")
    parts += [f"lr {row['lr']:.2e}", f"{row['train_img_per_s']:.0f} img/s", f"{row['epoch_s']:.1f}s"]
    return "  ".join(parts)
