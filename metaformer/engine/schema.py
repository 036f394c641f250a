"""The typed schema of the run config: one dataclass per config group, registered in Hydra's ConfigStore.

The YAML files of a group are presets over its dataclass (`defaults: [schema, _self_]`), and conf/config.yaml
over `RunConfig`, so the defaults live here (or in the code they belong to), once, and OmegaConf refuses a value
of the wrong type (`optim.lr=abc`, `seed=x`) with the key's name, before any training code runs. `+key=value`
can add a key to any node, so `metaformer.engine.validation.check_schema` refuses a key the code would not read
(`+trainer.bogus=1`, `+optim.weight_decy=0.1`). Values are checked by building what the config describes
(`metaformer.engine.validation.validate`).

Open by design: `model` takes exactly the keywords of `create_model` (MetaFormer's signature, read here, not
copied), `mixer_options.NAME` whatever mixer NAME takes (its signature), `sched` any `create_scheduler_v2`
keyword, and `data` the keys of its data set (a data set of your own reads its own keys).
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from metaformer.engine.loggers import PROGRESS_INTERVAL_S
from metaformer.model import MetaFormer


@dataclass
class TrainerConfig:
    """How to train. batch_size is per process (timm's convention); the lr scales with the global batch
    (batch_size x processes x accumulation). Data sets' recipes (conf/recipe/<data>.yaml) override these."""

    epochs: int = MISSING  # set by the data set's recipe (conf/recipe/<data>.yaml)
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
    # seconds between progress lines when stderr is no terminal (a sweep, SLURM, tee); null or 0: none
    progress_interval_s: float | None = PROGRESS_INTERVAL_S
    save_checkpoints: bool = True  # last.pt every epoch, best.pt at each new best top-1
    # SLURM: after SIGTERM/SIGUSR1 saved last.pt, `scontrol requeue` the job (sbatch --requeue)
    requeue: bool = False
    # Train seeds seed, seed+1, ..., seed+K-1 in one process as one vmapped model, each into its own run folder
    # <run dir>/seed_<S>/ (metaformer/engine/packed.py); 1: this seed alone, in the run folder itself.
    pack_seeds: int = 1


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


# The keywords of create_model that are the top-level keys mixer/norm/act/mixer_options, not model.* keys.
MODEL_TOP_LEVEL = ("mixer", "mixer_options", "norm", "act")


def _model_schema() -> type:
    """`ModelConfig`: `name` (a preset, `metaformer.list_models()`) and every other keyword of MetaFormer, read
    from its signature. Unset keys (`???`) keep the preset's value (metaformer/presets.py); a plain int, float,
    bool or str keyword is typed, a per-stage one (a value or a list) is not. `+model.residual=false` and
    `model.residual=false` both set one."""
    hints = typing.get_type_hints(MetaFormer.__init__)
    plain = (int, float, bool, str)
    fields = [("name", str, MISSING)]
    for key in inspect.signature(MetaFormer.__init__).parameters:
        if key != "self" and key not in MODEL_TOP_LEVEL:
            kind = hints.get(key, Any)
            fields.append((key, kind if kind in plain else Any, field(default=MISSING)))
    cls = make_dataclass("ModelConfig", fields)
    cls.__module__ = __name__
    cls.__doc__ = _model_schema.__doc__
    return cls


ModelConfig = _model_schema()


@dataclass
class DataConfig:
    """A data set by registered name (`metaformer.engine.data.DATASETS`) and what sizes the model. The data set's
    own keys (imagenet's splits and crop, synthetic's sizes, yours) are added by its YAML file (open by design),
    and the data set checks them (`check_data`) before anything is loaded."""

    name: str = MISSING
    root: str | None = MISSING  # null: the data set's default place
    download: bool = False
    num_classes: int | None = MISSING  # null (imagenet): taken from the class folders
    in_chans: int = MISSING
    img_size: int = MISSING
    mean: Any = MISSING  # one value per channel, or one for all
    std: Any = MISSING
    num_workers: int | None = 0  # DataLoader workers per rank; null: the cores this process may use


@dataclass
class ImageFolderDataConfig(DataConfig):
    """An image-folder data set (imagenet): root/<train_split>/<class>/*, read by DataLoader workers."""

    train_split: str = "train"
    val_split: str = "val"
    crop_pct: float = 0.9  # eval: resize to img_size / crop_pct, center crop img_size
    interpolation: str = "bicubic"


@dataclass
class SyntheticDataConfig(DataConfig):
    """Random images generated in memory, fixed by their own seed (not the training seed)."""

    num_train: int = 512
    num_val: int = 128
    seed: int = 0


@dataclass
class AugConfig:
    """Augmentation; every key off by default. The data loaders read the first five (in-memory data sets get
    crop + flip + erasing per batch, image folders timm's transforms), the training loop the rest."""

    random_crop_padding: int = 0  # pixels of zero padding before a random crop; in-memory data sets only
    hflip: float = 0.0  # probability
    randaugment: str | None = None  # timm auto_augment string; image-folder data sets only
    reprob: float = 0.0  # random erasing probability ('pixel' mode)
    color_jitter: float = 0.0  # image-folder data sets only
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.0


@dataclass
class SchedConfig:
    """A learning-rate schedule by timm's name, built by create_scheduler_v2 and updated every optimizer step.
    Every key is passed to create_scheduler_v2 (`+sched.decay_rate=0.5` adds any other of its keywords)."""

    sched: str = "cosine"
    warmup_epochs: float = 5  # linear warmup from warmup_lr; a fraction of an epoch is fine
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    cooldown_epochs: int = 0
    step_on_epochs: bool = False


@dataclass
class AblationConfig:
    """What an ablation row (conf/ablation/*.yaml) says about itself, for the results table."""

    name: str = MISSING
    group: str = MISSING
    label: str = MISSING
    paper_top1: float | None = None  # the paper's ImageNet top-1 for this row; null: not run there


@dataclass
class RunConfig:
    """The top level of conf/config.yaml; the groups (model, data, ...) are typed by their own schemas."""

    # The block, per stage or one for all; null: the model preset's own (metaformer/presets.py). mixer: a token
    # mixer (`mixers.list_mixers()`), or one per stage ([pool,pool,attn,attn]); norm: `metaformer.list_norms()`
    # (gn: GroupNorm(1, C), the paper's); act: the channel MLP's activation (`metaformer.list_acts()`).
    mixer: Any = None
    norm: Any = None
    act: Any = None
    # Options per mixer name, for every stage that has that mixer: mixer_options.pool.pool_size=5. Open by design:
    # a mixer takes the keywords of its signature, which also holds their defaults.
    mixer_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    # true: continue from last.pt in this run's folder when it has one; false: start over; or the path of a run
    # folder / checkpoint to start from.
    resume: Any = True
    output_dir: str | None = None  # the run folder (Hydra's output folder)
    ablation: AblationConfig | None = None  # set by +ablation=NAME
    model: Any = MISSING
    data: Any = MISSING
    optim: Any = MISSING
    sched: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    aug: Any = None


# The typed groups: each config group's node and the dataclass that says which keys it has.
SCHEMAS = {
    "model": ModelConfig,
    "data": DataConfig,
    "aug": AugConfig,
    "sched": SchedConfig,
    "trainer": TrainerConfig,
    "optim": OptimConfig,
    "logger": LoggerConfig,
}


def register() -> None:
    """Put the schemas in Hydra's ConfigStore as `<group>/schema`, which each group's YAML files build on, and
    the top level as `run_schema`, which conf/config.yaml builds on."""
    cs = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        cs.store(group=group, name="schema", node=schema)
    cs.store(group="data", name="schema_image_folder", node=ImageFolderDataConfig)
    cs.store(group="data", name="schema_synthetic", node=SyntheticDataConfig)
    cs.store(name="run_schema", node=RunConfig)


register()
