"""`trainer.pack_seeds=K`: the seeds `seed, seed+1, ..., seed+K-1` of one configuration trained in one process as
one vmapped model (`packing.PackedStepper`), each into an ordinary run folder of its own, `<run_dir>/seed_<S>/`.

Each seed is an unpacked run in all but the training step: `PackedRun` builds one `Trainer` per seed from the
config with `seed=S` (so each gets the initial weights, data order, optimizer, scheduler and EMA its own run would
get: `parts.build_parts` after `random_seed(S, 0)`, the loaders' permutation from (S, epoch)), resumes each from
its own `last.pt`, and writes each folder's `results.json`, `metrics.csv`, `last.pt` / `best.pt`, `.hydra/` and
`run.log` with the trainer's own code; an unpacked run (`seed=S trainer.pack_seeds=1 hydra.run.dir=<run_dir>/seed_S`)
continues from such a `last.pt`, and the analysis reads the folders as it reads any others (their overrides say
`seed=S`, without `trainer.pack_seeds`). Only the training epochs are packed: at each epoch's start the seeds'
models and optimizer states are stacked into one `PackedStepper`, at its end written back into each seed's parts,
which then evaluate (unpacked, so the metrics are each model's own), log and checkpoint.

Seeds at different points (a kill between two seeds' checkpoints, or K raised for a folder whose first seeds are
done) catch up: the seeds furthest behind train first, packed among themselves, up to the next ones. A seed whose
loss turns NaN/inf ends `diverged` at that check, as its own run would, and the others go on. A signal stops
every seed after the same step, each saving its `last.pt` there.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from metaformer.engine import distributed as D
from metaformer.engine.checkpoint import LAST
from metaformer.engine.loggers import PROGRESS_INTERVAL_S, ProgressLog, progress
from metaformer.engine.loop import EpochStats, Stepper
from metaformer.engine.packing import PackedStepper, pack_seeds_of, stack_images
from metaformer.engine.preemption import StopRequest
from metaformer.engine.results import RESULTS_FILE, read_results, record_refusal, write_results
from metaformer.engine.trainer import Trainer, _seed_epoch
from metaformer.engine.validation import RunSpec, check_writable
from metaformer.errors import ConfigError

__all__ = ["PackedRun", "seed_dir", "train_packed", "train_packed_epoch"]

log = logging.getLogger(__name__)


def seed_dir(run_dir: Path, seed: int) -> Path:
    """The run folder of seed `seed` in a packed run's folder."""
    return Path(run_dir) / f"seed_{seed}"


def seed_config(cfg: DictConfig, seed: int, run_dir: Path) -> DictConfig:
    """The config of one seed's run: `seed=S`, `trainer.pack_seeds=1`, its own folder."""
    own = copy.deepcopy(cfg)
    own.seed = seed
    own.trainer.pack_seeds = 1
    own.output_dir = str(seed_dir(run_dir, seed))
    return own


def seed_overrides(overrides: Sequence[str], seed: int) -> list[str]:
    """The command-line overrides of one seed's run: `seed=S`, and no `trainer.pack_seeds` (the analysis
    labels a configuration by its overrides, seed aside: a packed seed's folder reads as its unpacked run's)."""
    key = lambda o: o.split("=", 1)[0].lstrip("+~")  # noqa: E731
    return [o for o in overrides if key(o) not in ("seed", "trainer.pack_seeds")] + [f"seed={seed}"]


def save_seed_hydra_files(folder: Path, cfg: DictConfig, seed: int) -> None:
    """`.hydra/` of one seed's folder, as `results.save_hydra_files` writes a run's (under Hydra only)."""
    if not HydraConfig.initialized() or HydraConfig.get().output_subdir is not None:
        return
    hydra_cfg = HydraConfig.instance().cfg
    assert hydra_cfg is not None
    overrides = seed_overrides([str(o) for o in hydra_cfg.hydra.overrides.task], seed)
    target = folder / ".hydra"
    target.mkdir(parents=True, exist_ok=True)
    files = {"config.yaml": cfg, "hydra.yaml": hydra_cfg, "overrides.yaml": OmegaConf.create(overrides)}
    for name, node in files.items():
        (target / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")


def train_packed(
    cfg: DictConfig, spec: RunSpec, dist: D.DistInfo, run_dir: Path, start: float, stop: StopRequest
) -> dict[str, Any]:
    """Train the seeds of `cfg` packed (see the module's doc) and return a summary: `status` (completed when
    every seed completed, else the first other status), `best_top1` (the seeds' mean), `runs` (each seed's
    results.json record)."""
    seeds = pack_seeds_of(cfg)
    folders = [seed_dir(run_dir, s) for s in seeds]
    configs = [seed_config(cfg, s, run_dir) for s in seeds]
    _claim_folder(run_dir)
    for folder in folders:
        check_writable(folder)
    with _seed_logs(folders):
        try:
            run = PackedRun(configs, spec, dist, folders, start, stop)
        except Exception as e:  # refused before training: a failed record in each new seed folder
            for folder, own in zip(folders, configs, strict=True):
                record_refusal(own, folder, e, spec)
            raise
        for folder, own, seed in zip(folders, configs, seeds, strict=True):
            save_seed_hydra_files(folder, own, seed)
        records = run.fit()
    done = [r for r in records if r.get("best_top1") is not None]
    status = next((r["status"] for r in records if r["status"] != "completed"), "completed")
    best = sum(r["best_top1"] for r in done) / len(done) if done else None
    return {"status": status, "best_top1": best, "seeds": seeds, "runs": records}


def _claim_folder(run_dir: Path) -> None:
    """Refuse a folder that holds an unpacked run (its seeds' folders would sit inside a run, where the analysis
    does not look); drop the record of a command refused there before (`record_refusal`'s failed results.json
    and .hydra/, which would hide the seeds' folders from the analysis in the same way)."""
    results = run_dir / RESULTS_FILE
    try:
        record = read_results(run_dir) if results.is_file() else None
    except (OSError, ValueError):
        record = {}
    refused = record is not None and record.get("status") == "failed" and not record.get("epochs")
    if (run_dir / LAST).exists() or (record is not None and not refused):
        raise ConfigError(
            f"{run_dir} holds an unpacked run ({LAST if (run_dir / LAST).exists() else RESULTS_FILE}); a packed run "
            f"writes seed_<S>/ folders: give it a folder of its own (hydra.run.dir=...)"
        )
    if refused:
        results.unlink(missing_ok=True)
        shutil.rmtree(run_dir / ".hydra", ignore_errors=True)


@contextlib.contextmanager
def _seed_logs(folders: Sequence[Path]) -> Iterator[None]:
    """Each seed folder's `run.log`: the packed run's console log, as a run folder has its own."""
    root = logging.getLogger()
    formatter = next((h.formatter for h in root.handlers if isinstance(h, logging.FileHandler)), None)
    handlers = []
    for folder in folders:
        handler = logging.FileHandler(folder / "run.log")
        handler.setFormatter(
            formatter or logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        )
        root.addHandler(handler)
        handlers.append(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()


class PackedRun:
    """The seeds of one packed run: a `Trainer` per seed (its parts, state, folder and records) and the loop that
    trains them together. `fit()` returns every seed's final results.json record."""

    def __init__(
        self,
        configs: Sequence[DictConfig],
        spec: RunSpec,
        dist: D.DistInfo,
        folders: Sequence[Path],
        start: float,
        stop: StopRequest,
    ) -> None:
        self.members = [
            Trainer(own, spec, dist, folder, start, stop)
            for own, folder in zip(configs, folders, strict=True)
        ]
        self.seeds = [int(t.cfg.seed) for t in self.members]
        self.epochs = int(configs[0].trainer.epochs)
        self.stop = self.members[0].stop  # one StopRequest, so every member's protocol answers alike
        self.records: dict[int, dict[str, Any]] = {}  # member index -> final record, once it ended

    def _extra(self) -> dict[str, Any]:
        return {"packed_seeds": self.seeds}

    def describe(self) -> str:
        """The start-up line: the first seed's (the model, data and settings every seed shares) and the pack."""
        folder = self.members[0].run_dir.parent
        return (
            f"{self.members[0].describe()}; packed: seeds {', '.join(map(str, self.seeds))} as one vmapped model, "
            f"run folders {folder}/seed_<S>"
        )

    def _active(self) -> list[int]:
        return [
            i for i, t in enumerate(self.members) if i not in self.records and t.state.epoch < self.epochs
        ]

    def _end(self, i: int, status: str, **extra: Any) -> None:
        self.records[i] = self.members[i]._finish(status, **extra, **self._extra())

    def fit(self) -> list[dict[str, Any]]:
        """Train every seed to the configured epochs; return their final records (in seed order). A signal ends
        every seed as `preempted` and exits 128 + the signal, as an unpacked run does."""
        for t in self.members:
            if t.dist.is_main:
                t._write("running", **self._extra())
        log.info(self.describe())
        preempted = False
        try:
            while active := self._active():
                if self.stop.agreed():  # between epochs: every last.pt is at its seed's boundary
                    preempted = True
                    break
                if self._segment(active) == "stopped":
                    preempted = True
                    break
        except KeyboardInterrupt:
            for i in self._active():
                self._end(i, "preempted", error="interrupted (KeyboardInterrupt)")
        except Exception as e:
            error = f"{type(e).__name__}: {' '.join(str(e).split())}"
            for i in self._active():
                self._end(i, "failed", error=error)
            raise
        for i, t in enumerate(self.members):
            if i not in self.records:
                done = t.state.epoch >= self.epochs
                status, extra = (
                    ("completed", {}) if done or not preempted else ("preempted", t._preempted_info())
                )
                self._end(i, status, **extra)
        records = [self.records[i] for i in range(len(self.members))]
        if preempted:
            self._exit(records)
        return records

    def _exit(self, records: list[dict[str, Any]]) -> None:
        """Requeue the job when asked (once), write what the requeue did into every stopped seed's record, then
        exit 128 + the signal (StopProtocol.exit)."""
        stopped = [i for i, r in enumerate(records) if r["status"] == "preempted"]
        first = stopped[0] if stopped else 0
        try:
            self.stop.exit(records[first], self.members[first].run_dir)
        except SystemExit:
            written = read_results(self.members[first].run_dir)
            requeue = {k: v for k, v in written.items() if k.startswith("requeue")}
            for i in stopped[1:]:
                if requeue and self.members[i].dist.is_main:
                    write_results(self.members[i].run_dir, {**records[i], **requeue})
            raise

    def _segment(self, active: list[int]) -> str:
        """Train the seeds furthest behind, packed, to the end of their epoch, or to the batch where the next
        seeds are (catching up); then each seed's epoch end: evaluate, log, checkpoint. Returns 'stopped' when a
        signal stopped it (every seed's last.pt saved at that step), else 'done'."""
        position = {i: _position(self.members[i]) for i in active}
        here = min(position.values())
        lead = [i for i in active if position[i] == here]
        ahead = sorted(p for p in position.values() if p > here)
        stop_at = ahead[0][1] if ahead and ahead[0][0] == here[0] else None
        epoch = here[0]
        members = [self.members[i] for i in lead]
        first = members[0]
        partials = [t.partial for t in members]
        for t in members:
            t.partial = None
            t.parts.data.train.set_epoch(epoch, start_batch=here[1])
        step = first.step
        pack = PackedStepper(
            [t.step.module for t in members], [t.step.optimizer for t in members], step.loss_fn,
            channels_last=step.channels_last, grad_clip=step.grad_clip, emas=[t.step.ema for t in members],
        )  # fmt: skip
        trainer = first.cfg.trainer
        stats, signalled = train_packed_epoch(
            pack, [t.step for t in members], [t.parts.data.train for t in members], first.parts.train_batches,
            desc=f"epoch {epoch + 1}/{self.epochs}", log_interval=trainer.log_interval,
            show_progress=first.dist.is_main, should_stop=self.stop.after_step, resume_from=partials,
            stop_at=stop_at,
        )  # fmt: skip
        pack.unpack()
        for i, t, s in zip(lead, members, stats, strict=True):
            if s.diverged:
                t.state.final["loss"] = None
                t.diverged_at = (epoch + 1, s.diverged_batch or t.parts.train_batches)
                info = t._diverged_info()
                log.warning("seed %d: %s: stopping (status diverged)", t.cfg.seed, info["error"])
                self._end(i, "diverged", **info)
            elif s.stopped_after is not None:
                t.partial = s
                if signalled:
                    _seed_epoch(t.cfg.seed, epoch, t.dist.rank)  # the generators as its own run's, unused
                    t._checkpoint_mid_epoch(s)
            else:
                self._end_epoch(t, epoch, s)
        return "stopped" if signalled else "done"

    def _end_epoch(self, t: Trainer, epoch: int, stats: EpochStats) -> None:
        """One seed's finished epoch, closed by its own trainer (count, scheduler, evaluation, log, checkpoint),
        with its generators as its own run leaves them (evaluation draws nothing)."""
        _seed_epoch(t.cfg.seed, epoch, t.dist.rank)
        t.end_epoch(stats, prefix=f"seed {t.cfg.seed}: ")


def _position(t: Trainer) -> tuple[int, int]:
    """Where a seed's run is: (epochs completed, batches done in the next epoch)."""
    return t.state.epoch, (t.partial.stopped_after or 0) if t.partial is not None else 0


def train_packed_epoch(
    pack: PackedStepper,
    steps: Sequence[Stepper],
    loaders: Sequence[Any],
    num_batches: int,
    *,
    desc: str = "train",
    log_interval: int = 50,
    show_progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    resume_from: Sequence[EpochStats | None] | None = None,
    stop_at: int | None = None,
    progress_interval_s: float | None = PROGRESS_INTERVAL_S,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[list[EpochStats], bool]:
    """`loop.train_one_epoch` for K packed seeds: seed k trains on `loaders[k]`'s batches, its `steps[k]` (its own
    run's Stepper) counts the updates and steps the scheduler. Returns each seed's EpochStats and whether
    `should_stop` cut the epoch (each seed's stats then has `stopped_after`, as with `stop_at`, a batch to stop
    after). A seed whose loss turns NaN/inf is reported diverged at the batch where it did (checked every
    `log_interval` batches, as the unpacked loop does) and trains on, ignored, while the others go on.
    `on_step(batch, losses)`, when given, sees each batch's K losses (1-based batch number)."""
    k, s0 = pack.k, steps[0]
    resume_from = list(resume_from or [None] * k)
    cut = resume_from[0]
    done = (cut.stopped_after or 0) if cut is not None else 0
    end = stop_at if stop_at is not None else num_batches
    loss_sum = torch.tensor([r.loss_sum if r is not None else 0.0 for r in resume_from], dtype=torch.float64)
    loss_sum = loss_sum.to(s0.device)
    seen = cut.images if cut is not None else 0  # per seed: every seed trains on as many images
    start = time.perf_counter() - (cut.seconds if cut is not None else 0.0)
    window = torch.zeros(log_interval, k, dtype=torch.float64, device=s0.device)
    checked = done
    diverged: dict[int, int] = {}  # seed index -> the first batch (1-based) whose loss was NaN/inf
    bar = progress(num_batches, desc, show_progress)
    bar.update(done)
    interval = progress_interval_s if show_progress and bar.disable else None
    ticker = ProgressLog(desc, num_batches, interval, start=done)
    session_images = 0
    signalled = False

    def note_nonfinite(upto: int) -> None:
        for j in (~torch.isfinite(loss_sum)).nonzero().flatten().tolist():
            if j not in diverged:
                bad = (~torch.isfinite(window[: upto - checked, j])).nonzero()
                diverged[j] = checked + int(bad[0].item()) + 1 if len(bad) else upto

    pack.optimizer.zero_grad(set_to_none=True)
    batches = zip(*(itertools.islice(loader, end - done) for loader in loaders), strict=True)
    i = done - 1
    for i, pairs in enumerate(batches, start=done):
        xs, ys = zip(*(s.to_device(x, y) for s, (x, y) in zip(steps, pairs, strict=True)), strict=True)
        x, y = stack_images(xs, pack.channels_last), torch.stack(ys)
        group_end = (i + 1) % s0.accumulation == 0 or i + 1 == num_batches
        with s0.autocast():
            losses = pack.losses(x, y)
        (losses.sum() / s0.accumulation).backward()  # each seed's gradient is its own loss's
        if group_end:
            _optimizer_step(pack, steps)
        if on_step is not None:
            on_step(i + 1, losses.detach())
        batch = x.shape[1]
        loss_sum += losses.detach().double() * batch
        window[i - checked] = losses.detach()
        seen += batch
        session_images += batch * k
        bar.update()
        ticker.update(i + 1, session_images, lambda ls=loss_sum, n=seen: ls.mean().item() / n)
        if (i + 1) % log_interval == 0:
            note_nonfinite(i + 1)
            if len(diverged) == k:
                break
            checked = i + 1
            bar.set_postfix(loss=f"{losses.detach().mean().item():.4f}")
        if group_end and i + 1 < num_batches and should_stop is not None and should_stop():
            signalled = True
            break
    bar.close()
    if s0.device.type == "cuda":
        torch.cuda.synchronize(s0.device)
    seconds = time.perf_counter() - start
    last = i + 1
    stopped = signalled or (stop_at is not None and last == stop_at < num_batches)
    if not stopped and len(diverged) < k:
        note_nonfinite(last)  # the window since the last check
    stats = []
    for j in range(k):
        if j in diverged:
            stats.append(EpochStats(math.nan, seen, seconds, True, diverged_batch=diverged[j]))
        elif stopped:
            stats.append(EpochStats(math.nan, seen, seconds, stopped_after=last, loss_sum=loss_sum[j].item()))
        else:
            stats.append(EpochStats(loss_sum[j].item() / seen if seen else math.nan, seen, seconds))
    return stats, signalled


def _optimizer_step(pack: PackedStepper, steps: Sequence[Stepper]) -> None:
    """One optimizer step of every seed (loop._optimizer_step's order: clip, step, count, schedule, EMA)."""
    first = steps[0]
    updates = first.num_updates + 1
    decay = first.ema.get_decay(updates) if first.ema is not None else None
    pack.step(decay)
    for s in steps:
        s.num_updates = updates
        if s.scheduler is not None:
            s.scheduler.step_update(num_updates=updates)
    pack.set_lr(first.optimizer)
