"""The parts of a run, built from the config: data, model, optimizer, scheduler, loss, EMA, precision and the
loggers. Nothing here trains; `trainer.py` wires these parts to the loop (`loop.py`) and the run's state.

timm supplies the optimizer, the scheduler, Mixup/CutMix, the losses and EMA; this module only maps the config's
keys onto them. A part the config cannot build (a model that does not fit the data, a data file that is corrupt)
raises ConfigError with one line.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, random_seed
from torch import nn

from metaformer.engine import distributed as D
from metaformer.engine.data import aug_config, build_data
from metaformer.engine.data.datasets import DataFileError
from metaformer.engine.loggers import MetricsCSV, WandbLogger
from metaformer.engine.loop import Stepper
from metaformer.engine.results import git_state, run_identity
from metaformer.engine.schema import OPTIM_OWN_KEYS
from metaformer.engine.validation import RunSpec, build_model, data_sizes
from metaformer.errors import ConfigError, one_line
from metaformer.fast import (
    Settings,
    bf16_supported,
    compile_model,
    fast_settings,
    resolve_precision,
    with_overrides,
)
from metaformer.profile import profile

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """What a run trains with, built once: the data, the stepper (model, optimizer, scheduler, loss, EMA,
    scaler) and the facts results.json records about them."""

    data: Any  # metaformer.engine.data.Data
    step: Stepper
    settings: Settings
    mixers: list[str]
    identity: dict[
        str, Any
    ]  # results.json's keys that say what was trained (model, mixers, ..., params, GMACs)
    lr: float
    global_batch: int
    train_batches: int  # optimizer batches per epoch (trainer.limit_train_batches applied)
    val_batches: int | None
    sweep: str | None  # the Hydra sweep folder's name under a multirun (wandb's group)


def build_parts(cfg: DictConfig, spec: RunSpec, dist: D.DistInfo) -> Parts:
    """Set threads and determinism for this process, then build every part of the run from `cfg`."""
    t = cfg.trainer
    parallel_jobs, sweep = _hydra_launcher()
    _set_threads(cfg, dist, parallel_jobs)
    _set_determinism(cfg, dist.device)

    random_seed(cfg.seed, 0)  # the same initial weights on every rank
    try:
        data = build_data(
            cfg.data, cfg.get("aug"), t.batch_size, t.get("eval_batch_size") or 2 * t.batch_size, cfg.seed,
            rank=dist.rank, world_size=dist.world_size, device=dist.device, local_world_size=dist.local_world_size,
        )  # fmt: skip
    except DataFileError as e:  # a data file that is there but truncated or corrupt
        raise ConfigError(one_line(e), exit_code=1) from e
    model = build_model(cfg.model.name, spec.model_kwargs, data_sizes(data))
    mixers = list(model.stage_mixers)
    identity = {**run_identity(cfg, data.name, spec), **git_state()}
    try:  # a forward pass at the data's size: resolution-bound mixers refuse maps of another size
        identity.update(profile(model, img_size=data.img_size, in_chans=data.in_chans))
    except ValueError as e:
        raise ConfigError(_size_mismatch(cfg, data.img_size, e)) from e

    train_batches = _limit(t.get("limit_train_batches"), len(data.train))
    val_batches = t.get("limit_val_batches")
    if isinstance(val_batches, float):
        val_batches = _limit(val_batches, len(data.val))
    updates_per_epoch = math.ceil(train_batches / t.accumulation)
    global_batch = t.batch_size * dist.world_size * t.accumulation
    lr = _learning_rate(cfg.optim, global_batch)

    if t.get("sync_bn") and dist.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(dist.device)
    settings = run_settings(t, dist.device)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    module = model
    try:
        optimizer = _build_optimizer(module, cfg.optim, lr)
    except (ValueError, TypeError) as e:  # the optimizer's own checks: lr, betas, eps, ...
        raise ConfigError(f"optim ({cfg.optim.opt}): {one_line(e)}") from e
    # timm's warmup: decay = min(ema_decay, 1 - (1 + step)^-2/3), so the average follows the model early on
    ema = ModelEmaV3(module, decay=t.ema_decay, use_warmup=t.ema_warmup) if t.get("ema") else None
    ddp = None
    if dist.distributed:
        ddp_ids = [dist.device.index] if dist.device.type == "cuda" else None
        model = ddp = nn.parallel.DistributedDataParallel(module, device_ids=ddp_ids)
    if settings.compile:
        model = compile_model(model)  # with the persistent compile cache
    mixup, loss_fn = _loss_fns(cfg.get("aug"), data.num_classes)
    step = Stepper(
        model=model, module=module, optimizer=optimizer, loss_fn=loss_fn, device=dist.device,
        precision=settings.precision,
        scheduler=_build_scheduler(optimizer, cfg.sched, t.epochs, updates_per_epoch),
        mixup=mixup, ema=ema, ddp=ddp, accumulation=t.accumulation, grad_clip=t.get("grad_clip"),
        channels_last=settings.channels_last,
        scaler=torch.amp.GradScaler(dist.device.type) if settings.precision == "fp16" else None,
    )  # fmt: skip
    return Parts(data, step, settings, mixers, identity, lr, global_batch, train_batches, val_batches, sweep)


def build_loggers(
    cfg: DictConfig, run_dir: Path, resume_epoch: int, sweep: str | None
) -> tuple[MetricsCSV, WandbLogger | None]:
    """metrics.csv (kept up to `resume_epoch`, the epochs a resumed run has done) and wandb when logger=wandb."""
    metrics = MetricsCSV(run_dir, resume_epoch=resume_epoch)
    if cfg.logger.get("name") != "wandb":
        return metrics, None
    name = f"{sweep}/{HydraConfig.get().job.num}" if HydraConfig.initialized() and sweep else None
    return metrics, WandbLogger(cfg, run_dir, group=sweep, name=name)


def run_settings(t: DictConfig, device: torch.device) -> Settings:
    """How the model runs: `trainer.fast=true` picks it for the hardware (metaformer.fast), else `precision`
    (`auto`: bf16 where the hardware has it); `channels_last` / `compile` set to true or false win over either,
    null leaves them to the switch."""
    if t.precision == "bf16" and not t.get("fast") and not bf16_supported(device):
        log.warning("bf16 on a %s without native bf16 is emulated and far slower than fp32: "
                    "use trainer.precision=auto (or fp32)", device.type)  # fmt: skip
    base = fast_settings(device) if t.get("fast") else Settings(resolve_precision(t.precision, device))
    return with_overrides(base, channels_last=t.get("channels_last"), compile=t.get("compile"))


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain containers (what a weights-only checkpoint can hold), resolved where it can be."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that needs Hydra's runtime, outside a Hydra run
        plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    return plain


def _hydra_launcher() -> tuple[int, str | None]:
    """(parallel jobs the launcher runs at once, the sweep folder's name) when running under a Hydra multirun."""
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
    requested = cfg.trainer.threads
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


def _limit(limit: int | float | None, total: int) -> int:
    if limit is None:
        return total
    if isinstance(limit, float):
        return max(1, int(total * limit))
    return min(total, int(limit))


def _loss_fns(aug_cfg: DictConfig | None, num_classes: int) -> tuple[Mixup | None, nn.Module]:
    """timm's Mixup/CutMix and the loss that goes with it: soft targets, label smoothing, or plain CE."""
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
    return float(optim.base_lr) * global_batch / float(optim.base_batch)


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


def _size_mismatch(cfg: DictConfig, data_size: int, error: ValueError) -> str:
    """One line for a model whose feature maps do not fit the data's images."""
    reason = one_line(error)
    model_size = cfg.model.get("img_size")
    if model_size is not None and model_size != data_size:
        return (
            f"model.img_size={model_size} does not fit data.img_size={data_size}: {reason}; remove model.img_size "
            f"(the model then takes the data's size) or set data.img_size={model_size}"
        )
    return f"the model does not fit data.img_size={data_size}: {reason}"
