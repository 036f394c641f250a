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
a run, and a `failed` results.json into a new one (`record_refusal`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from timm.utils import random_seed

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
from metaformer.engine.config import ConfigError, RunSpec, validate
from metaformer.engine.loggers import METRICS_FILE, format_epoch
from metaformer.engine.loop import EpochStats, evaluate, train_one_epoch
from metaformer.engine.parts import build_loggers, build_parts, plain_config, run_settings
from metaformer.engine.preemption import StopRequest, requeue, slurm_job_id
from metaformer.engine.results import RESULTS_FILE, git_state, run_identity, write_results
from metaformer.engine.state import TrainState
from metaformer.errors import one_line

__all__ = ["Trainer", "record_refusal", "run_dir_of", "run_settings", "save_hydra_files", "train"]

log = logging.getLogger(__name__)

# A folder where every rank saves its final weights (for debugging DDP: all ranks must end with the same weights).
RANK_WEIGHTS_ENV = "METAFORMER_SAVE_RANK_WEIGHTS"


def run_dir_of(cfg: DictConfig) -> Path:
    """The run folder: `output_dir` from the config, which defaults to Hydra's output folder."""
    out = OmegaConf.select(cfg, "output_dir", throw_on_resolution_failure=False)
    if not out:
        raise ConfigError("no output folder: run through run.py (Hydra) or set output_dir=PATH")
    return Path(str(out)).resolve()


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    # Reseeding from (seed, epoch, rank) makes every epoch reproducible, so a resumed run draws the same
    # drop-path masks, Mixup coefficients and loader seeds as one that never stopped.
    random_seed(seed * 10_007 + epoch * 1_009, rank)


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
    dist = D.init_distributed(cfg.trainer.device)
    try:
        run_dir = Path(D.broadcast_object(str(run_dir) if run_dir else None))
        with StopRequest() as stop:
            try:
                run = Trainer(cfg, spec, dist, run_dir, start, stop)
            except Exception as e:
                record_refusal(cfg, run_dir if dist.is_main else None, e, spec.mixers)
                raise
            if dist.is_main:
                save_hydra_files(run_dir, cfg)
            return run.fit()
    finally:
        D.cleanup()


def record_refusal(cfg: DictConfig, run_dir: Path | None, error: Exception, mixers: Any = None) -> None:
    """Leave a `failed` results.json with the error (and `.hydra/`, which the analysis looks for) in a new run
    folder whose job was refused before training (one job of a sweep, say), so the analysis lists it. A folder
    that already holds a run (results.json or last.pt) is left exactly as it was, and so is one that is not
    there."""
    if run_dir is None or not run_dir.is_dir() or any((run_dir / f).exists() for f in (RESULTS_FILE, LAST)):
        return
    message = one_line(error)
    try:
        identity = run_identity(cfg, mixers if mixers is not None else cfg.mixer, cfg.data.get("name"))
    except Exception:  # a config too broken to describe: the error says why
        identity = {}
    error_text = message if isinstance(error, ConfigError) else f"{type(error).__name__}: {message}"
    with contextlib.suppress(OSError):
        save_hydra_files(run_dir, cfg)
        write_results(
            run_dir, {"status": "failed", "epochs": 0, **identity, **git_state(), "error": error_text}
        )


def save_hydra_files(run_dir: Path, cfg: DictConfig) -> None:
    """Write `.hydra/` (config.yaml, hydra.yaml, overrides.yaml) as Hydra does, once the run has started.

    conf/config.yaml sets `hydra.output_subdir: null`, so that Hydra does not write them before the job runs:
    a refused command must not overwrite the files of the run it was pointed at. Outside Hydra, or when the
    user set `hydra.output_subdir` (Hydra then wrote them), nothing is written here.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or HydraConfig.get().output_subdir is not None:
        return
    hydra_cfg = HydraConfig.instance().cfg
    assert hydra_cfg is not None
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"config.yaml": cfg, "hydra.yaml": hydra_cfg, "overrides.yaml": hydra_cfg.hydra.overrides.task}
    for name, node in files.items():
        (folder / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")


class Trainer:
    """One run, from its built parts to the final results: `fit()` runs the remaining epochs; between them it
    logs, checkpoints the `TrainState` and watches for a stop signal."""

    def __init__(
        self,
        cfg: DictConfig,
        spec: RunSpec,
        dist: D.DistInfo,
        run_dir: Path,
        start: float,
        stop: StopRequest | None = None,
    ) -> None:
        self.cfg, self.dist, self.run_dir = cfg, dist, run_dir
        self.stop = stop or StopRequest()
        self._stop_checks = 0
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
        st, p = self.state, self.parts
        seconds = st.train_seconds
        return {
            "status": status,
            **st.final,
            **st.best,
            "epochs": st.epoch,
            "train_img_per_s": round(st.train_images / seconds, 1) if seconds else None,
            "wall_s": round(st.wall_total(), 1),
            **p.identity,
            "world_size": self.dist.world_size,
            "global_batch": p.global_batch,
            "lr": p.lr,
            "precision": p.settings.precision,
            "settings": p.settings.describe(),
            "threads": torch.get_num_threads(),
            "run_dir": str(self.run_dir),
            **extra,
        }

    def _write(self, status: str, **extra: Any) -> dict[str, Any]:
        record = self.results(status, **extra)
        if self.dist.is_main:
            write_results(self.run_dir, record)
        return record

    def fit(self) -> dict[str, Any]:
        """Run the remaining epochs and return the final results record."""
        t, p = self.cfg.trainer, self.parts
        if self.dist.is_main:
            self._write("running")
            log.info(
                "%s (%s) mixers=%s norm=%s act=%s: %.2fM params, %.3f GMACs on %s (%d train / %d val images), "
                "device %s x%d, global batch %d, lr %.2e, %s",
                self.cfg.model.name, p.data.name, p.mixers, self.cfg.norm,
                self.cfg.act, p.identity["params_m"], p.identity["gmacs"], p.data.name,
                p.data.num_train, p.data.num_val, self.dist.device.type, self.dist.world_size,
                p.global_batch, p.lr, p.settings.describe(),
            )  # fmt: skip
        status, extra = "completed", {}
        try:
            while self.state.epoch < t.epochs:
                if self._stop_agreed():  # asked between epochs: last.pt is this boundary's
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
            self._after_preemption(record)
        return record

    def _should_stop(self) -> bool:
        """Asked after each optimizer step: stop here? Every rank gets the same answer (checked every
        `log_interval` steps under DDP, where asking costs a collective)."""
        if not self.dist.distributed:
            return self.stop.signum is not None
        self._stop_checks += 1
        return self._stop_checks % self.cfg.trainer.log_interval == 0 and self._stop_agreed()

    def _stop_agreed(self) -> bool:
        """True on every rank when a stop signal reached any rank."""
        asked = self.stop.signum is not None
        if not self.dist.distributed:
            return asked
        flag = torch.tensor([1.0 if asked else 0.0], device=self.dist.device)
        return D.all_reduce_sum(flag).item() > 0

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

    def _after_preemption(self, record: dict[str, Any]) -> None:
        """Requeue the job if asked (SLURM) or hand the signal on (submitit requeues), then exit 128 + signal.
        A signal whose earlier handler requeues the job (submitit's, for its own signal) is not requeued here too."""
        signum = self.stop.signum
        job = slurm_job_id()
        handed_on = self.stop.requeued_by_earlier_handler
        if (
            self.cfg.trainer.get("requeue")
            and job
            and self.dist.is_main
            and signum is not None
            and not handed_on
        ):
            problem = requeue(job)
            record = {**record, "requeued": problem is None, "requeue_job": job}
            if problem:
                record["requeue_error"] = problem
            write_results(self.run_dir, record)
        if signum is not None:
            self.stop.hand_on()
        raise SystemExit(128 + (signum if signum is not None else signal.SIGINT))

    def _finish(self, status: str, **extra: Any) -> dict[str, Any]:
        record = self._write(status, **extra)
        self._save_rank_weights()
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
        t, s, p, st = self.cfg.trainer, self.step, self.parts, self.state
        partial, self.partial = self.partial, None
        _seed_epoch(self.cfg.seed, epoch, self.dist.rank)
        if partial is not None and self.partial_rng is not None:
            set_rng_state(self.partial_rng)  # the generators as they were when the epoch was cut
        # A resumed epoch starts at the batch where it was cut; the loader skips the ones before unread.
        p.data.train.set_epoch(epoch, start_batch=(partial.stopped_after or 0) if partial else 0)
        stats: EpochStats = train_one_epoch(
            s, p.data.train, p.train_batches, desc=f"epoch {epoch + 1}/{t.epochs}",
            log_interval=t.log_interval, show_progress=self.dist.is_main, should_stop=self._should_stop,
            resume_from=partial,
        )  # fmt: skip
        if stats.diverged:
            st.final["loss"] = None
            self.diverged_at = (epoch + 1, stats.diverged_batch or p.train_batches)
            return "diverged"
        if stats.stopped_after is not None:
            self.partial = stats
            self._checkpoint_mid_epoch(stats)
            return "stopped"
        st.end_epoch(stats)
        if s.scheduler is not None:
            s.scheduler.step(st.epoch)
        lr = s.optimizer.param_groups[0]["lr"]  # at the epoch's last step, as timm's train.py logs it
        row: dict[str, Any] = {"epoch": st.epoch, "lr": lr, "train_loss": stats.loss}
        improved = False
        if st.epoch % t.eval_interval == 0 or st.epoch == t.epochs:
            metrics, improved = self._evaluate()
            row.update(metrics)
        row.update(
            train_img_per_s=round(stats.img_per_s, 1),
            epoch_s=round(stats.seconds, 2),
            wall_s=round(st.wall_total(), 1),
        )
        rng = self._rng_states() if self._saves() else None  # a collective: every rank
        if self.dist.is_main:
            log.info(format_epoch(row, t.epochs))
            self.metrics.log(row)
            if self.wandb is not None:
                self.wandb.log(row)
            if rng is not None:
                st.rng = rng
                self._checkpoint(improved)
        return "done"

    def _evaluate(self) -> tuple[dict[str, Any], bool]:
        """Evaluate the model (and its EMA); return the metrics and whether top-1 is a new best."""
        s, st = self.step, self.state
        show, data, limit = self.dist.is_main, self.parts.data.val, self.parts.val_batches
        metrics = evaluate(s.module, data, s, limit, show_progress=show)
        if metrics is None:
            return {}, False
        if s.ema is not None:
            ema = evaluate(s.ema.module, data, s, limit, show_progress=show)
            metrics.update({f"{k}_ema": v for k, v in (ema or {}).items()})
        # With EMA the averaged weights are the model (as in timm's train.py): they decide the best epoch.
        key = "_ema" if s.ema is not None and "top1_ema" in metrics else ""
        top1, top5 = metrics[f"top1{key}"], metrics[f"top5{key}"]
        st.final = {"top1": top1, "top5": top5, "loss": metrics[f"val_loss{key}"]}
        improved = st.best["best_top1"] is None or top1 > st.best["best_top1"]
        if improved:
            st.best = {"best_top1": top1, "best_top5": top5, "best_epoch": st.epoch}
        return metrics, improved

    def _saves(self) -> bool:
        return bool(self.cfg.trainer.get("save_checkpoints", True))

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

    def _save_rank_weights(self) -> None:
        folder = os.environ.get(RANK_WEIGHTS_ENV)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            torch.save(self.step.module.state_dict(), Path(folder) / f"rank{self.dist.rank}.pt")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
