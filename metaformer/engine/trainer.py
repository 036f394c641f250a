"""`train(cfg)`: one run from a composed config to a finished run folder.

The order matters and is the whole story: validate (nothing written yet), join the process group, build the
parts (data, model, optimizer, scheduler, EMA: `parts.py`), resume the run's state (`state.py`) from `last.pt`
when the run folder has one (`resume` is true by default, so the same command continues a stopped run), write
`results.json` with `status: running`, then epochs of train / evaluate (`loop.py`) / log / checkpoint, and
finally `results.json` again with the outcome. `Trainer` only wires these together and decides when to stop.

How runs end: a NaN/inf loss ends the run as `diverged`, with the step where it appeared (a normal return, so a
sweep goes on); an exception ends it as `failed` and is re-raised. SIGTERM and SIGUSR1 (a cluster's "stop now")
stop training after the current optimizer step, save `last.pt` there, mark the run `preempted` and exit with
128 + the signal number, after a SLURM requeue when `trainer.requeue=true` (the signals and the requeue are in
`preemption.py`); running the same command again continues it exactly. Ctrl-C ends a run as `preempted` at once,
resumable from the last epoch's `last.pt`. A job refused before training writes nothing into a folder that holds
a run, and a `failed` results.json into a new one (`results.record_refusal`).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from timm.utils import random_seed

from metaformer.block import MetaFormerBlock
from metaformer.engine import distributed as D
from metaformer.engine.checkpoint import (
    BEST,
    LAST,
    find_resume,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from metaformer.engine.data.loaders import mix_seed
from metaformer.engine.loggers import METRICS_FILE, format_epoch
from metaformer.engine.loop import EpochStats, evaluate, train_one_epoch
from metaformer.engine.parts import build_loggers, build_parts, plain_config
from metaformer.engine.preemption import StopProtocol, StopRequest
from metaformer.engine.results import record_refusal, run_dir_of, save_hydra_files, write_results
from metaformer.engine.state import TrainState
from metaformer.engine.validation import RunSpec, degenerate_mixing, validate

__all__ = ["Trainer", "train"]

log = logging.getLogger(__name__)


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    # Reseeding from (seed, epoch) makes every epoch reproducible, so a resumed run draws the same drop-path
    # masks, Mixup coefficients and loader seeds as one that never stopped (the data order has its own stream).
    random_seed(mix_seed(seed, epoch) % 2**31, rank)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train the model `cfg` describes into its run folder; return the final results.json record.

    A run that is refused before it starts (a bad config, missing or corrupt data, a checkpoint that is unsafe,
    corrupt or of another model) raises ConfigError and writes nothing: an existing run folder stays exactly as
    it was. Only a run that started writes `.hydra/` and `results.json`.
    """
    start = time.time()
    # Rank 0 validates with its run folder; the others learn the folder after joining the group.
    run_dir = run_dir_of(cfg) if D.env_rank() == 0 else None
    try:
        spec = validate(cfg, run_dir)
    except Exception as e:
        record_refusal(cfg, run_dir, e)
        raise
    warning = degenerate_mixing(cfg, spec)
    if warning and D.env_rank() == 0:
        log.warning(warning)
    dist = D.init_distributed(cfg.trainer.device)
    try:
        run_dir = Path(D.broadcast_object(str(run_dir) if run_dir else None))
        with StopRequest() as stop:
            if cfg.trainer.get("pack_seeds", 1) > 1:  # seeds packed into one vmapped model
                from metaformer.engine.packed import train_packed  # imports this module

                return train_packed(cfg, spec, dist, run_dir, start, stop)
            try:
                run = Trainer(cfg, spec, dist, run_dir, start, stop)
            except Exception as e:
                record_refusal(cfg, run_dir if dist.is_main else None, e, spec)
                raise
            if dist.is_main:
                save_hydra_files(run_dir, cfg)
            return run.fit()
    finally:
        D.cleanup()


class Trainer:
    """One run, from its built parts to the final results: `fit()` runs the remaining epochs; between them it
    logs, checkpoints the `TrainState` and asks the `StopProtocol` whether a signal stops the run."""

    def __init__(
        self,
        cfg: DictConfig,
        spec: RunSpec,
        dist: D.DistInfo,
        run_dir: Path,
        start: float,
        stop: StopRequest | None = None,
    ) -> None:
        self.cfg, self.spec, self.dist, self.run_dir = cfg, spec, dist, run_dir
        trainer = cfg.trainer
        self.stop = StopProtocol(stop or StopRequest(), dist, trainer.log_interval, bool(trainer.requeue))
        self.parts = build_parts(cfg, spec, dist)
        self.step = self.parts.step
        self.state = TrainState(self.step, cfg.model.name, plain_config(cfg), started=start)
        self.partial: EpochStats | None = None  # the cut-short epoch a mid-epoch checkpoint resumes
        self.partial_rng: dict[str, Any] | None = None  # and this rank's random generators at the cut
        self.diverged_at: tuple[int, int] | None = None  # (epoch, batch) of the first NaN/inf loss
        self._resume()
        self.metrics, self.wandb = (
            build_loggers(cfg, run_dir, self.state.epoch, self.parts.sweep) if dist.is_main else (None, None)
        )

    def _resume(self) -> None:
        path = find_resume(self.cfg.get("resume"), self.run_dir)
        if path is None:  # resume=false, or a new run folder
            return
        self.state.load_state_dict(load_checkpoint(path), path)
        self.partial = self.state.cut_epoch(self.dist.rank, self.dist.is_main)
        if self.partial is not None:  # saved mid-epoch: the random generators as they were at the cut
            if len(self.state.rng) == self.dist.world_size:
                self.partial_rng = self.state.rng[self.dist.rank]
            elif self.dist.is_main:
                log.warning(
                    "%s was saved by %d processes, this run has %d: random draws of the resumed epoch will differ",
                    path, len(self.state.rng), self.dist.world_size,
                )  # fmt: skip
        source = path.parent
        copy_history = source.resolve() != self.run_dir and not (self.run_dir / METRICS_FILE).exists()
        if self.dist.is_main and copy_history and (source / METRICS_FILE).is_file():
            shutil.copy(source / METRICS_FILE, self.run_dir / METRICS_FILE)
        if self.dist.is_main:
            where = f", batch {self.state.batch} of epoch {self.state.epoch + 1}" if self.partial else ""
            log.info("resumed from %s after epoch %d%s", path, self.state.epoch, where)

    def results(self, status: str, **extra: Any) -> dict[str, Any]:
        """The results.json record as of now."""
        state, parts = self.state, self.parts
        seconds = state.train_seconds
        return {
            "status": status,
            **state.final,
            **state.best,
            "epochs": state.epoch,
            "train_img_per_s": round(state.train_images / seconds, 1) if seconds else None,
            "wall_s": round(state.wall_total(), 1),
            **parts.identity,
            "world_size": self.dist.world_size,
            "global_batch": parts.global_batch,
            "lr": parts.lr,
            "precision": parts.settings.precision,
            "settings": parts.settings.describe(),
            "threads": torch.get_num_threads(),
            "run_dir": str(self.run_dir),
            **extra,
        }

    def _write(self, status: str, **extra: Any) -> dict[str, Any]:
        record = self.results(status, **extra)
        if self.dist.is_main:
            write_results(self.run_dir, record)
        return record

    def describe(self) -> str:
        """The start-up line: the model stage by stage (blocks x width @ token grid: mixer/norm/act), its size,
        the data and how many images an epoch trains and evaluates, and how it runs."""
        parts, spec = self.parts, self.spec
        stages = " | ".join(
            f"{depth}x{info['num_chs']} @ {h}x{w}: {mixer}/{norm}/{act}"
            for depth, info, (h, w), mixer, norm, act in zip(
                _depths(self.step.module), self.step.module.feature_info, spec.resolutions,
                spec.mixers, spec.norms, spec.acts, strict=True,
            )
        )  # fmt: skip
        data, batch = parts.data, self.cfg.trainer.batch_size
        trained = min(parts.train_batches * batch * self.dist.world_size, data.num_train)
        evaluated = data.num_val
        if parts.val_batches is not None:
            eval_batch = self.cfg.trainer.get("eval_batch_size") or 2 * batch
            evaluated = min(data.num_val, parts.val_batches * eval_batch * self.dist.world_size)
        return (
            f"{self.cfg.model.name}: {parts.identity['params_m']:.2f}M params, {parts.identity['gmacs']:.3g} GMACs; "
            f"stages (blocks x width @ grid: mixer/norm/act) {stages}; {data.name}: {trained} of {data.num_train} "
            f"train / {evaluated} of {data.num_val} val images an epoch; device {self.dist.device.type} "
            f"x{self.dist.world_size}, global batch {parts.global_batch}, lr {parts.lr:.2e}, {parts.settings.describe()}"
        )

    def fit(self) -> dict[str, Any]:
        """Run the remaining epochs and return the final results record."""
        if self.dist.is_main:
            self._write("running")
            log.info(self.describe())
        status, extra = "completed", {}
        try:
            while self.state.epoch < self.cfg.trainer.epochs:
                if self.stop.agreed():  # asked between epochs: last.pt is this boundary's
                    status, extra = "preempted", self._preempted_info()
                    break
                outcome = self._epoch(self.state.epoch)
                if outcome == "diverged":
                    status, extra = "diverged", self._diverged_info()
                    log.warning("%s: stopping (status diverged)", extra["error"])
                    break
                if outcome == "stopped":
                    status, extra = "preempted", self._preempted_info()
                    break
        except KeyboardInterrupt:
            status, extra = "preempted", {"error": "interrupted (KeyboardInterrupt)"}
        except Exception as e:
            self._finish("failed", error=f"{type(e).__name__}: {' '.join(str(e).split())}")
            raise
        record = self._finish(status, **extra)
        if status == "preempted":
            self.stop.exit(record, self.run_dir)
        return record

    def _preempted_info(self) -> dict[str, Any]:
        where = f"after batch {self.partial.stopped_after} of epoch {self.state.epoch + 1}" if self.partial else (
            f"after epoch {self.state.epoch}"
        )  # fmt: skip
        saved = "last.pt saved there" if self._saves() else "no checkpoint (trainer.save_checkpoints=false)"
        return {"error": f"stopped by signal {self.stop.name} {where}; {saved}", "signal": self.stop.name}

    def _diverged_info(self) -> dict[str, Any]:
        assert self.diverged_at is not None
        epoch, batch = self.diverged_at
        step = (epoch - 1) * self.parts.train_batches + batch
        return {
            "diverged_epoch": epoch,
            "diverged_batch": batch,
            "diverged_step": step,
            "error": f"the training loss became NaN/inf at step {step} (epoch {epoch}, batch {batch})",
        }

    def _finish(self, status: str, **extra: Any) -> dict[str, Any]:
        record = self._write(status, **extra)
        if self.wandb is not None:
            self.wandb.finish(record)
        if self.dist.is_main:
            log.info(
                "%s: %d epochs, top1 %s (best %s), %s img/s, %.0fs; results in %s",
                status, record["epochs"], _pct(record["top1"]), _pct(record["best_top1"]),
                record["train_img_per_s"], record["wall_s"], self.run_dir,
            )  # fmt: skip
        return record

    def _epoch(self, epoch: int) -> str:
        """Train, evaluate, log and checkpoint one epoch; return 'done', 'diverged', or 'stopped' (by a signal,
        mid-epoch, with last.pt saved at that step)."""
        trainer, step, parts, state = self.cfg.trainer, self.step, self.parts, self.state
        partial, self.partial = self.partial, None
        _seed_epoch(self.cfg.seed, epoch, self.dist.rank)
        if partial is not None and self.partial_rng is not None:
            set_rng_state(self.partial_rng)  # the generators as they were when the epoch was cut
        # A resumed epoch starts at the batch where it was cut; the loader skips the ones before unread.
        parts.data.train.set_epoch(epoch, start_batch=(partial.stopped_after or 0) if partial else 0)
        stats: EpochStats = train_one_epoch(
            step, parts.data.train, parts.train_batches, desc=f"epoch {epoch + 1}/{trainer.epochs}",
            log_interval=trainer.log_interval, show_progress=self.dist.is_main, should_stop=self.stop.after_step,
            resume_from=partial, progress_interval_s=trainer.progress_interval_s,
        )  # fmt: skip
        if stats.diverged:
            state.final["loss"] = None
            self.diverged_at = (epoch + 1, stats.diverged_batch or parts.train_batches)
            return "diverged"
        if stats.stopped_after is not None:
            self.partial = stats
            self._checkpoint_mid_epoch(stats)
            return "stopped"
        self.end_epoch(stats)
        return "done"

    def end_epoch(self, stats: EpochStats, prefix: str = "") -> None:
        """Close a finished epoch: count it, step the scheduler, evaluate when due, log the row (its console line
        after `prefix`) and checkpoint. Packed seeds (packed.py) close each seed's epoch here too."""
        trainer, step, state = self.cfg.trainer, self.step, self.state
        state.end_epoch(stats)
        if step.scheduler is not None:
            step.scheduler.step(state.epoch)
        lr = step.optimizer.param_groups[0]["lr"]  # at the epoch's last step, as timm's train.py logs it
        row: dict[str, Any] = {"epoch": state.epoch, "lr": lr, "train_loss": stats.loss}
        improved = False
        if state.epoch % trainer.eval_interval == 0 or state.epoch == trainer.epochs:
            metrics, improved = self._evaluate()
            row.update(metrics)
        row.update(
            train_img_per_s=round(stats.img_per_s, 1),
            epoch_s=round(stats.seconds, 2),
            wall_s=round(state.wall_total(), 1),
        )
        rng = self._rng_states() if self._saves() else None  # a collective: every rank
        if self.dist.is_main:
            log.info(prefix + format_epoch(row, trainer.epochs))
            self.metrics.log(row)
            if self.wandb is not None:
                self.wandb.log(row)
            if rng is not None:
                state.rng = rng
                self._checkpoint(improved)

    def _evaluate(self) -> tuple[dict[str, Any], bool]:
        """Evaluate the model (and its EMA); return the metrics and whether top-1 is a new best."""
        step, state = self.step, self.state
        show, data, limit = self.dist.is_main, self.parts.data.val, self.parts.val_batches
        every = self.cfg.trainer.progress_interval_s
        metrics = evaluate(step.module, data, step, limit, show_progress=show, progress_interval_s=every)
        if metrics is None:
            return {}, False
        if step.ema is not None:
            ema = evaluate(step.ema.module, data, step, limit, show_progress=show, progress_interval_s=every)
            metrics.update({f"{k}_ema": v for k, v in (ema or {}).items()})
        # With EMA the averaged weights are the model (as in timm's train.py): they decide the best epoch.
        key = "_ema" if step.ema is not None and "top1_ema" in metrics else ""
        top1, top5 = metrics[f"top1{key}"], metrics[f"top5{key}"]
        state.final = {"top1": top1, "top5": top5, "loss": metrics[f"val_loss{key}"]}
        improved = state.best["best_top1"] is None or top1 > state.best["best_top1"]
        if improved:
            state.best = {"best_top1": top1, "best_top5": top5, "best_epoch": state.epoch}
        return metrics, improved

    def _saves(self) -> bool:
        return bool(self.cfg.trainer.save_checkpoints)

    def _rng_states(self) -> list[dict[str, Any]]:
        """Every rank's random-generator states, in rank order (a collective under DDP)."""
        mine = rng_state()
        if not self.dist.distributed:
            return [mine]
        gathered: list[Any] = [None] * self.dist.world_size
        torch.distributed.all_gather_object(gathered, mine)
        return gathered

    def _checkpoint(self, improved: bool) -> None:
        """Save last.pt (the whole TrainState), and best.pt (its weights) when `improved`."""
        if improved:
            save_checkpoint(self.run_dir / BEST, self.state.weights())
        save_checkpoint(self.run_dir / LAST, self.state.state_dict())

    def _checkpoint_mid_epoch(self, stats: EpochStats) -> None:
        """Save last.pt after `stats.stopped_after` batches of the current epoch, with what resuming there needs."""
        if not self._saves():
            return
        totals = D.all_reduce_sum(
            torch.tensor([stats.loss_sum, float(stats.images)], dtype=torch.float64, device=self.dist.device)
        ).tolist()
        rng = self._rng_states()
        if self.dist.is_main:
            self.state.mark_cut(stats, loss_sum=totals[0], images=int(totals[1]))
            self.state.rng = rng
            self._checkpoint(False)


def _depths(model: torch.nn.Module) -> list[int]:
    """Blocks per stage."""
    return [sum(isinstance(m, MetaFormerBlock) for m in stage.modules()) for stage in model.stages]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
