"""The typed schema of the run config: one dataclass per config group, registered in Hydra's ConfigStore.

The YAML files of a group are presets over its dataclass (`defaults: [schema, _self_]`), so the defaults live
here, once, and OmegaConf refuses a value of the wrong type (`optim.lr=abc`) or a key the code does not read
(`+trainer.bogus=1`, `+optim.weight_decy=0.1`) with the key's name, before any training code runs. Checks of
values (a positive epoch count, a known precision) are made by `metaformer.engine.config.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class TrainerConfig:
    """How to train. batch_size is per process (timm's convention); the lr scales with the global batch
    (batch_size x processes x accumulation). Data sets' recipes (conf/recipe/<data>.yaml) override these."""

    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int | None = None  # null: 2 x batch_size
    accumulation: int = 1  # gradient accumulation steps per optimizer step
    # auto (bf16 where the CPU/GPU has native bf16, else fp32) | fp32 | bf16 (autocast) | fp16 (+ grad scaler, GPU)
    precision: str = "auto"
    # torch.compile the model (a C++ compiler on the CPU); null: as `fast` says
    compile: bool | None = None
    channels_last: bool | None = None  # channels-last memory format; null: as `fast` says
    # One switch for speed (metaformer/fast.py): bf16 autocast where the hardware has bf16 (else fp32; replaces
    # precision), channels_last, torch.compile where a compiler is there; explicit channels_last/compile win.
    fast: bool = False
    grad_clip: float | None = None  # max gradient norm; null: no clipping
    eval_interval: int = 1  # evaluate every N epochs, and always after the last
    # Cut epochs short: an int is a number of batches, a float in (0, 1] a fraction.
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    ema: bool = False  # timm's ModelEmaV3; with it the EMA weights are evaluated and pick best.pt
    ema_decay: float = 0.9998  # the decay it reaches; with the warmup, 1 - (1 + step)^(-2/3) until then
    ema_warmup: bool = True  # timm's EMA warmup (0.95 after 100 steps, 0.99 after 1000): useful from epoch 1
    sync_bn: bool = False  # SyncBatchNorm under DDP (for norm=bn)
    device: str = "auto"  # auto (CUDA when there is one) | cpu | cuda | cuda:N
    # torch threads; null: all cores, split between parallel jobs (joblib, torchrun)
    threads: int | None = None
    deterministic: bool | None = None  # null: on for the CPU, off for CUDA (cudnn.benchmark)
    log_interval: int = 50  # steps between progress-bar updates and NaN checks
    save_checkpoints: bool = True  # last.pt every epoch, best.pt at each new best top-1
    # SLURM: after SIGTERM/SIGUSR1 saved last.pt, `scontrol requeue` the job (sbatch --requeue)
    requeue: bool = False


@dataclass
class OptimConfig:
    """An optimizer by timm's name, built by create_optimizer_v2 (no weight decay on norms and biases).
    `lr: null` applies the linear scaling rule lr = base_lr x global batch / base_batch. The options below
    `weight_decay` go to the optimizer when set (null: the optimizer's own default)."""

    opt: str = "adamw"
    lr: float | None = None
    base_lr: float = 1e-3
    base_batch: int = 1024
    weight_decay: float = 0.05
    betas: list[float] | None = None  # Adam-like optimizers
    eps: float | None = None
    momentum: float | None = None  # SGD-like optimizers
    nesterov: bool | None = None


# The keys of OptimConfig that are not optimizer keywords.
OPTIM_OWN_KEYS = ("opt", "lr", "base_lr", "base_batch", "weight_decay")


@dataclass
class LoggerConfig:
    """Where metrics go besides metrics.csv and results.json (always written): `csv` (nothing else) or `wandb`."""

    name: str = "csv"
    project: str = "metaformer"
    entity: str | None = None
    group: str | None = None  # null: the sweep folder under -m, none otherwise
    run_name: str | None = None  # null: wandb's name (or sweep/job number under -m)
    tags: list[str] = field(default_factory=list)
    # online | offline | disabled; null: WANDB_MODE, else online with a key, else offline
    mode: str | None = None
    dir: str | None = None  # null: WANDB_DIR, else the run folder


# The typed groups: each config group's node and the dataclass that says which keys it has.
SCHEMAS = {"trainer": TrainerConfig, "optim": OptimConfig, "logger": LoggerConfig}


def register() -> None:
    """Put the schemas in Hydra's ConfigStore as `<group>/schema`, which each group's YAML files build on."""
    cs = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        cs.store(group=group, name="schema", node=schema)


register()
