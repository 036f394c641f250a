"""`train(cfg)`: one run from a composed config to a finished run folder.

The order matters and is the whole story: validate (nothing written yet), join the process group, build data and
model, write `results.json` with `status: running`, resume from `last.pt` when the run folder has one (`resume`
is true by default, so the same command continues a stopped run), then epochs of train / evaluate / log /
checkpoint, and finally `results.json` again with the outcome. timm supplies the optimizer, the scheduler,
Mixup/CutMix, the losses, EMA and the accuracy; this module only wires them to the config.

How runs end: a NaN/inf loss ends the run as `diverged`, with the step where it appeared (a normal return, so a
sweep goes on); an exception ends it as `failed` and is re-raised. SIGTERM and SIGUSR1 (a cluster's "stop now")
stop training after the current optimizer step, save `last.pt` there, mark the run `preempted` and exit with
128 + the signal number, after a SLURM requeue when `trainer.requeue=true` (the signals and the requeue are in
`preemption.py`); running the same command again continues it exactly. Ctrl-C ends a run as `preempted` at once,
resumable from the last epoch's `last.pt`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, random_seed
from torch import nn

from metaformer.engine import distributed as D
from metaformer.engine.checkpoint import (
    BEST,
    LAST,
    CheckpointError,
    check_state_dict,
    find_resume,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from metaformer.engine.config import ConfigError, RunSpec, validate
from metaformer.engine.loggers import METRICS_FILE, MetricsCSV, WandbLogger, format_epoch
from metaformer.engine.loop import EpochStats, Stepper, evaluate, train_one_epoch
from metaformer.engine.preemption import StopRequest, requeue, slurm_job_id
from metaformer.engine.results import RESULTS_FILE, git_state, run_identity, write_results
from metaformer.engine.schema import OPTIM_OWN_KEYS
from metaformer.fast import Settings, bf16_supported, fast_settings, resolve_precision, with_overrides

log = logging.getLogger(__name__)

# Environment variables: torch threads per process; a folder where every rank saves its final weights (for
# debugging DDP: all ranks must end with the same weights).
THREADS_ENV = "METAFORMER_THREADS"
RANK_WEIGHTS_ENV = "METAFORMER_SAVE_RANK_WEIGHTS"


def run_dir_of(cfg: DictConfig) -> Path:
    """The run folder: `output_dir` from the config, which defaults to Hydra's output folder."""
    out = OmegaConf.select(cfg, "output_dir", throw_on_resolution_failure=False)
    if not out:
        raise ConfigError("no output folder: run through run.py (Hydra) or set output_dir=PATH")
    return Path(str(out)).resolve()


def _hydra_launcher() -> tuple[int, str | None]:
    """(parallel jobs the launcher runs at once, the sweep folder's name) when running under a Hydra multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return 1, None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return 1, None
    n_jobs = OmegaConf.select(hc, "launcher.n_jobs", default=1) or 1
    if n_jobs < 0:  # joblib: -1 is all cores, -2 all but one, ...
        n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return int(n_jobs), str(hc.sweep.dir)[-128:]  # wandb's limit on a group name


def _set_threads(cfg: DictConfig, dist: D.DistInfo, parallel_jobs: int) -> None:
    requested = cfg.trainer.get("threads") or os.environ.get(THREADS_ENV)
    sharing = parallel_jobs * (dist.local_world_size if dist.device.type == "cpu" else 1)
    if requested or sharing > 1:
        torch.set_num_threads(D.split_threads(int(requested) if requested else None, sharing))


def _set_determinism(cfg: DictConfig, device: torch.device) -> None:
    deterministic = cfg.trainer.get("deterministic")
    if deterministic is None:
        deterministic = device.type == "cpu"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    # Reseeding from (seed, epoch, rank) makes every epoch reproducible, so a resumed run draws the same
    # drop-path masks, Mixup coefficients and loader seeds as one that never stopped.
    random_seed(seed * 10_007 + epoch * 1_009, rank)


def run_settings(t: DictConfig, device: torch.device) -> Settings:
    """How the model runs: `trainer.fast=true` picks it for the hardware (metaformer.fast), else `precision`
    (`auto`: bf16 where the hardware has it); `channels_last` / `compile` set to true or false win over either,
    null leaves them to the switch."""
    if t.precision == "bf16" and not t.get("fast") and not bf16_supported(device):
        log.warning("bf16 on a %s without native bf16 is emulated and far slower than fp32: "
                    "use trainer.precision=auto (or fp32)", device.type)  # fmt: skip
    base = fast_settings(device) if t.get("fast") else Settings(resolve_precision(t.precision, device))
    return with_overrides(base, channels_last=t.get("channels_last"), compile=t.get("compile"))


def _limit(limit: int | float | None, total: int) -> int:
    if limit is None:
        return total
    if isinstance(limit, float):
        return max(1, int(total * limit))
    return min(total, int(limit))


def _loss_fns(aug_cfg: DictConfig | None, num_classes: int) -> tuple[Mixup | None, nn.Module]:
    """timm's Mixup/CutMix and the loss that goes with it: soft targets, label smoothing, or plain CE."""
    from metaformer.engine.data import aug_config

    aug = aug_config(aug_cfg)  # unset keys (or no aug group at all) mean off
    if aug.mixup > 0 or aug.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=aug.mixup,
            cutmix_alpha=aug.cutmix,
            prob=aug.mixup_prob,
            switch_prob=aug.mixup_switch_prob,
            label_smoothing=aug.label_smoothing,
            num_classes=num_classes,
        )
        return mixup, SoftTargetCrossEntropy()
    if aug.label_smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=aug.label_smoothing)
    return None, nn.CrossEntropyLoss()


def _learning_rate(optim: DictConfig, global_batch: int) -> float:
    """`optim.lr`, or timm's linear scaling rule: base_lr x global batch / base_batch (1e-3 x batch / 1024)."""
    if optim.get("lr") is not None:
        return float(optim.lr)
    return float(optim.base_lr) * global_batch / float(optim.get("base_batch", 1024))


def _build_optimizer(model: nn.Module, optim: DictConfig, lr: float) -> torch.optim.Optimizer:
    kwargs = OmegaConf.to_container(optim, resolve=True)
    assert isinstance(kwargs, dict)
    options = {
        k: v for k, v in kwargs.items() if k not in OPTIM_OWN_KEYS and v is not None
    }  # null: its default
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    return create_optimizer_v2(model, opt=optim.opt, lr=lr, weight_decay=optim.weight_decay, **options)


def _build_scheduler(
    optimizer: torch.optim.Optimizer, sched: DictConfig, epochs: int, updates_per_epoch: int
):
    kwargs = OmegaConf.to_container(sched, resolve=True)
    assert isinstance(kwargs, dict)
    name = kwargs.pop("sched")
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=name, num_epochs=epochs, updates_per_epoch=updates_per_epoch, **kwargs
    )
    return scheduler


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
                run = _Run(cfg, spec, dist, run_dir, start, stop)
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
    message = " ".join(str(error).split())
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


class _Run:
    """The state of one run between setup and the final results: built once by `train`, then `fit()`."""

    def __init__(
        self,
        cfg: DictConfig,
        spec: RunSpec,
        dist: D.DistInfo,
        run_dir: Path,
        start: float,
        stop: StopRequest | None = None,
    ) -> None:
        from metaformer import create_model, profile
        from metaformer.engine.data import build_data
        from metaformer.engine.data.datasets import DataFileError

        self.cfg, self.spec, self.dist, self.run_dir, self.start = cfg, spec, dist, run_dir, start
        self.stop = stop or StopRequest()
        self._stop_checks = 0
        t = cfg.trainer
        parallel_jobs, self.sweep = _hydra_launcher()
        _set_threads(cfg, dist, parallel_jobs)
        _set_determinism(cfg, dist.device)

        random_seed(cfg.seed, 0)  # the same initial weights on every rank
        try:
            self.data = build_data(
                cfg.data, cfg.get("aug"), t.batch_size, t.get("eval_batch_size") or 2 * t.batch_size, cfg.seed,
                rank=dist.rank, world_size=dist.world_size, device=dist.device, local_world_size=dist.local_world_size,
            )  # fmt: skip
        except DataFileError as e:  # a data file that is there but truncated or corrupt
            raise ConfigError(" ".join(str(e).split()), exit_code=1) from e
        try:
            sized = {
                "num_classes": self.data.num_classes,
                "in_chans": self.data.in_chans,
                "img_size": self.data.img_size,
            }
            model = create_model(cfg.model.name, **{**sized, **spec.model_kwargs})  # model.* keys win
        except (ValueError, TypeError) as e:
            raise ConfigError(" ".join(str(e).split())) from e
        self.mixers = list(getattr(model, "stage_mixers", spec.mixers))
        self.identity = {**run_identity(cfg, self.mixers, self.data.name), **git_state()}
        try:  # a forward pass at the data's size: resolution-bound mixers refuse maps of another size
            self.identity.update(profile(model, img_size=self.data.img_size, in_chans=self.data.in_chans))
        except ValueError as e:
            raise ConfigError(_size_mismatch(cfg, self.data.img_size, e)) from e

        self.train_batches = _limit(t.get("limit_train_batches"), len(self.data.train))
        self.val_batches = t.get("limit_val_batches")
        if isinstance(self.val_batches, float):
            self.val_batches = _limit(self.val_batches, len(self.data.val))
        updates_per_epoch = math.ceil(self.train_batches / t.accumulation)
        self.global_batch = t.batch_size * dist.world_size * t.accumulation
        self.lr = _learning_rate(cfg.optim, self.global_batch)

        if t.get("sync_bn") and dist.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(dist.device)
        self.settings = run_settings(t, dist.device)
        if self.settings.channels_last:
            model.to(memory_format=torch.channels_last)
        module = model
        optimizer = _build_optimizer(module, cfg.optim, self.lr)
        # timm's warmup: decay = min(ema_decay, 1 - (1 + step)^-2/3), so the average follows the model early on
        ema = ModelEmaV3(module, decay=t.ema_decay, use_warmup=t.ema_warmup) if t.get("ema") else None
        ddp = None
        if dist.distributed:
            ddp_ids = [dist.device.index] if dist.device.type == "cuda" else None
            model = ddp = nn.parallel.DistributedDataParallel(module, device_ids=ddp_ids)
        if self.settings.compile:
            model = torch.compile(model)
        mixup, loss_fn = _loss_fns(cfg.get("aug"), self.data.num_classes)
        self.step = Stepper(
            model=model, module=module, optimizer=optimizer, loss_fn=loss_fn, device=dist.device,
            precision=self.settings.precision,
            scheduler=_build_scheduler(optimizer, cfg.sched, t.epochs, updates_per_epoch),
            mixup=mixup, ema=ema, ddp=ddp, accumulation=t.accumulation, grad_clip=t.get("grad_clip"),
            channels_last=self.settings.channels_last,
            scaler=torch.amp.GradScaler(dist.device.type) if self.settings.precision == "fp16" else None,
        )  # fmt: skip

        self.epoch = 0  # epochs completed
        self.best = {"best_top1": None, "best_top5": None, "best_epoch": None}
        self.final: dict[str, Any] = {"top1": None, "top5": None, "loss": None}
        self.wall_before = 0.0  # wall seconds of earlier attempts, when resumed
        self.train_images, self.train_seconds = 0, 0.0
        self.partial: EpochStats | None = None  # the cut-short epoch a mid-epoch checkpoint resumes
        self.partial_rng: dict[str, Any] | None = None  # and this rank's random generators at the cut
        self.diverged_at: tuple[int, int] | None = None  # (epoch, batch) of the first NaN/inf loss
        self.config = _plain_config(cfg)  # the resolved config, as plain containers, for the checkpoints
        self._resume()
        self.metrics = MetricsCSV(run_dir, resume_epoch=self.epoch) if dist.is_main else None
        self.wandb = self._wandb() if dist.is_main and cfg.logger.get("name") == "wandb" else None

    def _wandb(self) -> WandbLogger:
        from hydra.core.hydra_config import HydraConfig

        name = None
        if HydraConfig.initialized() and self.sweep:
            name = f"{self.sweep}/{HydraConfig.get().job.num}"
        return WandbLogger(self.cfg, self.run_dir, group=self.sweep, name=name)

    def _resume(self) -> None:
        path = find_resume(self.cfg.get("resume"), self.run_dir)
        if path is None:  # resume=false, or a new run folder
            return
        ckpt = load_checkpoint(path)
        s = self.step
        if "optimizer" not in ckpt or "num_updates" not in ckpt:
            raise CheckpointError(f"{path} holds weights only (a best.pt?); resume from a run's last.pt")
        check_state_dict(s.module.state_dict(), ckpt["state_dict"], path, ckpt.get("config"))
        s.module.load_state_dict(ckpt["state_dict"])
        if s.ema is not None and ckpt.get("state_dict_ema"):
            check_state_dict(s.ema.module.state_dict(), ckpt["state_dict_ema"], path, ckpt.get("config"))
            s.ema.module.load_state_dict(ckpt["state_dict_ema"])
        try:
            s.optimizer.load_state_dict(ckpt["optimizer"])
            if s.scheduler is not None and ckpt.get("scheduler"):
                s.scheduler.load_state_dict(ckpt["scheduler"])
            if s.scaler is not None and ckpt.get("scaler"):
                s.scaler.load_state_dict(ckpt["scaler"])
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"the optimizer/scheduler state in {path} does not fit optim.opt={self.cfg.optim.opt} "
                f"sched.sched={self.cfg.sched.sched} ({' '.join(str(e).split())}); resume with the config it was "
                f"trained with, or set resume=false to start over",
                exit_code=2,
            ) from e
        self.epoch, s.num_updates = int(ckpt["epoch"]), int(ckpt["num_updates"])
        self.best = ckpt["best"]
        self.final = ckpt.get("final", self.final)
        self.wall_before = float(ckpt.get("wall_s", 0.0))
        self.train_images, self.train_seconds = ckpt.get("train_images", 0), ckpt.get("train_seconds", 0.0)
        batch = int(ckpt.get("batch") or 0)
        if batch:  # saved mid-epoch, after `batch` batches of epoch `epoch + 1`: continue from there
            progress = ckpt["epoch_progress"]
            mine = self.dist.is_main  # rank 0 carries the summed loss and count of the cut epoch
            self.partial = EpochStats(
                math.nan, int(progress["images"]) if mine else 0, float(progress["seconds"]),
                stopped_after=batch, loss_sum=float(progress["loss_sum"]) if mine else 0.0,
            )  # fmt: skip
            states = ckpt.get("rng") or []
            if len(states) == self.dist.world_size:
                self.partial_rng = states[self.dist.rank]
            elif self.dist.is_main:
                log.warning(
                    "%s was saved by %d processes, this run has %d: random draws of the resumed epoch will differ",
                    path, len(states), self.dist.world_size,
                )  # fmt: skip
        source = path.parent
        copy_history = source.resolve() != self.run_dir and not (self.run_dir / METRICS_FILE).exists()
        if self.dist.is_main and copy_history and (source / METRICS_FILE).is_file():
            shutil.copy(source / METRICS_FILE, self.run_dir / METRICS_FILE)
        if self.dist.is_main:
            where = f", batch {batch} of epoch {self.epoch + 1}" if batch else ""
            log.info("resumed from %s after epoch %d%s", path, self.epoch, where)

    def results(self, status: str, **extra: Any) -> dict[str, Any]:
        """The results.json record as of now."""
        seconds = self.train_seconds
        return {
            "status": status,
            **self.final,
            **self.best,
            "epochs": self.epoch,
            "train_img_per_s": round(self.train_images / seconds, 1) if seconds else None,
            "wall_s": round(self.wall_before + time.time() - self.start, 1),
            **self.identity,
            "world_size": self.dist.world_size,
            "global_batch": self.global_batch,
            "lr": self.lr,
            "precision": self.settings.precision,
            "settings": self.settings.describe(),
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
        t = self.cfg.trainer
        if self.dist.is_main:
            self._write("running")
            log.info(
                "%s (%s) mixers=%s norm=%s act=%s: %.2fM params, %.3f GMACs on %s (%d train / %d val images), "
                "device %s x%d, global batch %d, lr %.2e, %s",
                self.cfg.model.name, self.data.name, self.mixers, self.cfg.norm,
                self.cfg.act, self.identity["params_m"], self.identity["gmacs"], self.data.name,
                self.data.num_train, self.data.num_val, self.dist.device.type, self.dist.world_size,
                self.global_batch, self.lr, self.settings.describe(),
            )  # fmt: skip
        status, extra = "completed", {}
        try:
            while self.epoch < t.epochs:
                if self._stop_agreed():  # asked between epochs: last.pt is this boundary's
                    status, extra = "preempted", self._preempted_info()
                    break
                outcome = self._epoch(self.epoch)
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
        where = f"after batch {self.partial.stopped_after} of epoch {self.epoch + 1}" if self.partial else (
            f"after epoch {self.epoch}"
        )  # fmt: skip
        saved = "last.pt saved there" if self._saves() else "no checkpoint (trainer.save_checkpoints=false)"
        return {"error": f"stopped by signal {self.stop.name} {where}; {saved}", "signal": self.stop.name}

    def _diverged_info(self) -> dict[str, Any]:
        assert self.diverged_at is not None
        epoch, batch = self.diverged_at
        step = (epoch - 1) * self.train_batches + batch
        return {
            "diverged_epoch": epoch,
            "diverged_batch": batch,
            "diverged_step": step,
            "error": f"the training loss became NaN/inf at step {step} (epoch {epoch}, batch {batch})",
        }

    def _after_preemption(self, record: dict[str, Any]) -> None:
        """Requeue the job if asked (SLURM) or hand the signal on (submitit requeues), then exit 128 + signal.
        A signal that an earlier handler takes over is not requeued here too: that handler requeues the job."""
        signum = self.stop.signum
        job = slurm_job_id()
        handed_on = self.stop.earlier_handler is not None
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
        t, s = self.cfg.trainer, self.step
        partial, self.partial = self.partial, None
        _seed_epoch(self.cfg.seed, epoch, self.dist.rank)
        if partial is not None and self.partial_rng is not None:
            set_rng_state(self.partial_rng)  # the generators as they were when the epoch was cut
        # A resumed epoch starts at the batch where it was cut; the loader skips the ones before unread.
        self.data.train.set_epoch(epoch, start_batch=(partial.stopped_after or 0) if partial else 0)
        stats: EpochStats = train_one_epoch(
            s, self.data.train, self.train_batches, desc=f"epoch {epoch + 1}/{t.epochs}",
            log_interval=t.log_interval, show_progress=self.dist.is_main, should_stop=self._should_stop,
            resume_from=partial,
        )  # fmt: skip
        if stats.diverged:
            self.final["loss"] = None
            self.diverged_at = (epoch + 1, stats.diverged_batch or self.train_batches)
            return "diverged"
        if stats.stopped_after is not None:
            self.partial = stats
            self._checkpoint_mid_epoch(stats)
            return "stopped"
        self.epoch = epoch + 1
        self.train_images += stats.images
        self.train_seconds += stats.seconds
        if s.scheduler is not None:
            s.scheduler.step(self.epoch)
        lr = s.optimizer.param_groups[0]["lr"]  # at the epoch's last step, as timm's train.py logs it
        row: dict[str, Any] = {"epoch": self.epoch, "lr": lr, "train_loss": stats.loss}
        improved = False
        if self.epoch % t.eval_interval == 0 or self.epoch == t.epochs:
            metrics, improved = self._evaluate()
            row.update(metrics)
        row.update(
            train_img_per_s=round(stats.img_per_s, 1),
            epoch_s=round(stats.seconds, 2),
            wall_s=round(self.wall_before + time.time() - self.start, 1),
        )
        rng = self._rng_states() if self._saves() else None  # a collective: every rank
        if self.dist.is_main:
            log.info(format_epoch(row, t.epochs))
            self.metrics.log(row)
            if self.wandb is not None:
                self.wandb.log(row)
            if rng is not None:
                self._checkpoint(improved, rng)
        return "done"

    def _evaluate(self) -> tuple[dict[str, Any], bool]:
        """Evaluate the model (and its EMA); return the metrics and whether top-1 is a new best."""
        s = self.step
        show = self.dist.is_main
        metrics = evaluate(s.module, self.data.val, s, self.val_batches, show_progress=show)
        if metrics is None:
            return {}, False
        if s.ema is not None:
            ema = evaluate(s.ema.module, self.data.val, s, self.val_batches, show_progress=show)
            metrics.update({f"{k}_ema": v for k, v in (ema or {}).items()})
        # With EMA the averaged weights are the model (as in timm's train.py): they decide the best epoch.
        key = "_ema" if s.ema is not None and "top1_ema" in metrics else ""
        top1, top5 = metrics[f"top1{key}"], metrics[f"top5{key}"]
        self.final = {"top1": top1, "top5": top5, "loss": metrics[f"val_loss{key}"]}
        improved = self.best["best_top1"] is None or top1 > self.best["best_top1"]
        if improved:
            self.best = {"best_top1": top1, "best_top5": top5, "best_epoch": self.epoch}
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

    def _weights(self) -> dict[str, Any]:
        s = self.step
        return {
            "arch": self.cfg.model.name,
            "epoch": self.epoch,
            "state_dict": s.module.state_dict(),
            "state_dict_ema": s.ema.module.state_dict() if s.ema is not None else None,
            "metric": self.final["top1"],
            "config": self.config,
        }

    def _checkpoint(self, improved: bool, rng: list[dict[str, Any]], **position: Any) -> None:
        """Save last.pt (and best.pt when `improved`); `position` marks a mid-epoch checkpoint."""
        s = self.step
        weights = self._weights()
        if improved:
            save_checkpoint(self.run_dir / BEST, weights)
        save_checkpoint(
            self.run_dir / LAST,
            {
                **weights,
                "batch": 0,  # batches done in epoch `epoch + 1`: 0 at an epoch boundary
                "optimizer": s.optimizer.state_dict(),
                "scheduler": s.scheduler.state_dict() if s.scheduler is not None else None,
                "scaler": s.scaler.state_dict() if s.scaler is not None else None,
                "num_updates": s.num_updates,
                "rng": rng,
                "best": self.best,
                "final": self.final,
                "wall_s": self.wall_before + time.time() - self.start,
                "train_images": self.train_images,
                "train_seconds": self.train_seconds,
                **position,
            },
        )

    def _checkpoint_mid_epoch(self, stats: EpochStats) -> None:
        """Save last.pt after `stats.stopped_after` batches of the current epoch, with what resuming there needs."""
        if not self._saves():
            return
        totals = D.all_reduce_sum(
            torch.tensor([stats.loss_sum, float(stats.images)], dtype=torch.float64, device=self.dist.device)
        ).tolist()
        rng = self._rng_states()
        if self.dist.is_main:
            progress = {"loss_sum": totals[0], "images": int(totals[1]), "seconds": stats.seconds}
            self._checkpoint(False, rng, batch=stats.stopped_after, epoch_progress=progress)

    def _save_rank_weights(self) -> None:
        folder = os.environ.get(RANK_WEIGHTS_ENV)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            torch.save(self.step.module.state_dict(), Path(folder) / f"rank{self.dist.rank}.pt")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain containers (what a weights-only checkpoint can hold), resolved where it can be."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that needs Hydra's runtime, outside a Hydra run
        plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    return plain


def _size_mismatch(cfg: DictConfig, data_size: int, error: ValueError) -> str:
    """One line for a model whose feature maps do not fit the data's images."""
    reason = " ".join(str(error).split())
    model_size = cfg.model.get("img_size")
    if model_size is not None and model_size != data_size:
        return (
            f"model.img_size={model_size} does not fit data.img_size={data_size}: {reason}; remove model.img_size "
            f"(the model then takes the data's size) or set data.img_size={model_size}"
        )
    return f"the model does not fit data.img_size={data_size}: {reason}"
