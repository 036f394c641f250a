"""One training epoch and one evaluation pass: the inner loops, with nothing about files or configs in them.

`train_one_epoch` runs mixed precision (bf16 autocast on CPU or GPU, fp16 with a grad scaler on GPU), gradient
accumulation (skipping DDP's all-reduce on the steps that only accumulate), clipping, per-step lr updates of timm's
scheduler, and EMA updates. It checks the loss for NaN/inf every `log_interval` steps, agreeing across ranks, so a
diverged run stops everywhere at once. `evaluate` sums loss and correct counts over all ranks: exact top-1/top-5.
Both show a progress bar on a terminal; without one (output to a pipe or a file: a sweep, SLURM, `tee`) they log a
progress line every `progress_interval_s` seconds instead (`ProgressLog`), which reaches run.log.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from timm.utils import accuracy
from torch import nn

from metaformer.engine.distributed import all_reduce_sum
from metaformer.engine.loggers import PROGRESS_INTERVAL_S, ProgressLog, progress
from metaformer.fast import autocast


@dataclass
class Stepper:
    """The parts one optimisation step needs, and the count of steps taken so far."""

    model: nn.Module  # what runs forward: possibly wrapped in DDP and/or compiled
    module: nn.Module  # the bare model: EMA reads it, checkpoints save it
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    device: torch.device
    precision: str = "fp32"
    scheduler: Any = None
    mixup: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    ema: Any = None
    scaler: torch.amp.GradScaler | None = None
    ddp: nn.Module | None = None
    accumulation: int = 1
    grad_clip: float | None = None
    channels_last: bool = False
    num_updates: int = 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context for this precision (a no-op for fp32)."""
        return autocast(self.precision, self.device)

    def to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move a batch to the device, channels-last when asked."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)


@dataclass
class EpochStats:
    """What one training epoch did: mean loss, images seen (all ranks), seconds, and whether it diverged.

    An epoch cut short by `should_stop` has `stopped_after` (batches done) and this rank's running `loss_sum`
    and `images`, which `train_one_epoch(..., resume_from=stats)` continues from. A diverged one has
    `diverged_batch`: the first batch (1-based) whose loss was NaN/inf on this rank, or the one that found it.
    """

    loss: float
    images: int
    seconds: float
    diverged: bool = False
    diverged_batch: int | None = None
    stopped_after: int | None = None
    loss_sum: float = 0.0

    @property
    def img_per_s(self) -> float:
        """Training throughput over all ranks."""
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _loss_is_finite(loss_sum: torch.Tensor) -> bool:
    """True on every rank unless some rank's running loss is NaN or inf."""
    bad = torch.tensor([0.0 if torch.isfinite(loss_sum).item() else 1.0], device=loss_sum.device)
    return all_reduce_sum(bad).item() == 0


def _first_nonfinite(losses: torch.Tensor, first: int, count: int) -> int | None:
    """The 1-based batch number of the first non-finite loss among `count` losses of batches `first`, ..."""
    bad = (~torch.isfinite(losses[:count])).nonzero()
    return first + int(bad[0].item()) + 1 if len(bad) else None


def train_one_epoch(
    s: Stepper,
    loader: Iterable,
    num_batches: int,
    desc: str = "train",
    log_interval: int = 50,
    show_progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    resume_from: EpochStats | None = None,
    progress_interval_s: float | None = PROGRESS_INTERVAL_S,
) -> EpochStats:
    """Train over `num_batches` batches of `loader`; return the epoch's statistics.

    With `show_progress` (the main process) a progress bar runs on a terminal; where stderr is no terminal, a line
    `desc: batch 300/469 (64%), loss 0.512, 2700 img/s, eta 0:41` is logged every `progress_interval_s` seconds
    (None or 0: never).

    `should_stop` is asked after every optimizer step; when it says yes the epoch ends there, cut short. With
    `resume_from` (such a cut-short epoch), `loader` must begin where it stopped (the engine's loaders do after
    `set_epoch(epoch, start_batch=resume_from.stopped_after)`, without reading the batches before), and its loss
    and image counts carry on.
    """
    s.model.train()
    done = (resume_from.stopped_after or 0) if resume_from is not None else 0
    carried = resume_from.loss_sum if resume_from is not None else 0.0
    loss_sum = torch.full((), carried, dtype=torch.float64, device=s.device)
    seen = resume_from.images if resume_from is not None else 0
    start = time.perf_counter() - (resume_from.seconds if resume_from is not None else 0.0)
    # This check window's per-batch losses, so a NaN/inf is reported at the batch where it appeared.
    window = torch.zeros(log_interval, dtype=torch.float64, device=s.device)
    checked = done  # batches before this one were found finite
    bar = progress(num_batches, desc, show_progress)
    bar.update(done)
    ticker = _ticker(desc, num_batches, show_progress and bar.disable, progress_interval_s, start=done)
    session_images = 0  # images this call has trained on (the ticker's images/s)
    s.optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(itertools.islice(loader, num_batches - done), start=done):
        x, y = s.to_device(x, y)
        if s.mixup is not None:
            if len(x) % 2:  # timm's Mixup pairs samples: drop one from an odd batch
                x, y = x[:-1], y[:-1]
            x, y = s.mixup(x, y)
        group_end = (i + 1) % s.accumulation == 0 or i + 1 == num_batches
        sync = contextlib.nullcontext() if group_end or s.ddp is None else s.ddp.no_sync()
        with sync:
            with s.autocast():
                loss = s.loss_fn(s.model(x), y)
            scaled = loss / s.accumulation
            (s.scaler.scale(scaled) if s.scaler is not None else scaled).backward()
        if group_end:
            _optimizer_step(s)
        loss_sum += loss.detach().double() * len(x)
        window[i - checked] = loss.detach()
        seen += len(x)
        session_images += len(x)
        bar.update()
        ticker.update(
            i + 1, session_images, lambda ls=loss_sum, n=seen: ls.item() / n
        )  # read only when logged
        if (i + 1) % log_interval == 0:
            if not _loss_is_finite(loss_sum):
                bar.close()
                bad = _first_nonfinite(window, checked, i + 1 - checked) or i + 1
                return EpochStats(math.nan, seen, time.perf_counter() - start, True, diverged_batch=bad)
            checked = i + 1
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{s.optimizer.param_groups[0]['lr']:.2e}")
        if group_end and i + 1 < num_batches and should_stop is not None and should_stop():
            bar.close()
            seconds = time.perf_counter() - start
            return EpochStats(math.nan, seen, seconds, stopped_after=i + 1, loss_sum=loss_sum.item())
    bar.close()
    if s.device.type == "cuda":
        torch.cuda.synchronize(s.device)
    seconds = time.perf_counter() - start
    totals = all_reduce_sum(
        torch.stack([loss_sum, torch.tensor(float(seen), dtype=torch.float64, device=s.device)])
    )
    mean_loss = (totals[0] / totals[1]).item() if totals[1] > 0 else math.nan
    if not math.isfinite(mean_loss):
        bad = _first_nonfinite(window, checked, num_batches - checked) or num_batches
        return EpochStats(mean_loss, int(totals[1].item()), seconds, True, diverged_batch=bad)
    return EpochStats(mean_loss, int(totals[1].item()), seconds)


def _optimizer_step(s: Stepper) -> None:
    if s.grad_clip:
        if s.scaler is not None:
            s.scaler.unscale_(s.optimizer)
        nn.utils.clip_grad_norm_(s.module.parameters(), s.grad_clip)
    if s.scaler is not None:
        s.scaler.step(s.optimizer)
        s.scaler.update()
    else:
        s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    s.num_updates += 1
    if s.scheduler is not None:
        s.scheduler.step_update(num_updates=s.num_updates)
    if s.ema is not None:
        s.ema.update(s.module, step=s.num_updates)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    s: Stepper,
    num_batches: int | None = None,
    show_progress: bool = False,
    progress_interval_s: float | None = PROGRESS_INTERVAL_S,
) -> dict[str, float] | None:
    """Cross-entropy loss and top-1/top-5 accuracy (percent) over this rank's shard, summed over all ranks.
    Progress: a bar on a terminal, else a line every `progress_interval_s` seconds, as in `train_one_epoch`."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=s.device)  # loss, correct@1, correct@5, count
    batches = loader if num_batches is None else itertools.islice(loader, num_batches)
    total = num_batches if num_batches is not None else _safe_len(loader)
    with progress(total, "eval", show_progress) as bar:
        ticker = _ticker("eval", total, show_progress and bar.disable, progress_interval_s)
        done = images = 0  # the ticker's counts, without reading the device
        for x, y in batches:
            x, y = s.to_device(x, y)
            with s.autocast():
                logits = model(x)
            logits = logits.float()
            top1, top5 = accuracy(logits, y, topk=(1, min(5, logits.shape[1])))
            n = y.numel()
            # timm's accuracy is a percentage of the batch: turn it back into counts that sum exactly.
            sums += torch.stack(
                [
                    F.cross_entropy(logits, y, reduction="sum"),
                    (top1 * n / 100).round(),
                    (top5 * n / 100).round(),
                    torch.tensor(n, device=s.device),
                ]  # fmt: skip
            ).double()
            bar.update()
            done, images = done + 1, images + n
            ticker.update(done, images)
    loss, correct1, correct5, count = all_reduce_sum(sums).tolist()
    if count == 0:
        return None
    return {"val_loss": loss / count, "top1": 100 * correct1 / count, "top5": 100 * correct5 / count}


def _ticker(
    desc: str, total: int | None, wanted: bool, interval_s: float | None, start: int = 0
) -> ProgressLog:
    """The progress lines for a pass without a progress bar: on the main process when `wanted`."""
    scale = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return ProgressLog(desc, total, interval_s if wanted else None, start=start, scale=scale)


def _safe_len(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None
