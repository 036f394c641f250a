"""From the `data` and `aug` config groups to a `Data`: the one object the training loop gets.

`DATASETS` maps a config's `data.name` to a `DataSource`: a cheap `check` (config and files, no loading) that
the CLI runs before training through `check_data`, and a `build` that returns train and val loaders for one rank.
Users add data sets from their own code with `register_dataset`, or name a `DataSource` by import path
(`data.name=mypkg.data:source`). Configs may be DictConfigs or plain dicts; unset optional keys take the defaults
below, and required ones fail with the key's name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import torch
from omegaconf import DictConfig, OmegaConf

from metaformer.engine.data.augment import BatchTransform
from metaformer.engine.data.datasets import (
    TensorSplits,
    check_cifar,
    check_fashion_mnist,
    check_imagenet,
    check_synthetic,
    imagenet_datasets,
    load_cifar,
    load_fashion_mnist,
    load_synthetic,
)
from metaformer.engine.data.loaders import FolderLoader, TensorLoader
from metaformer.engine.schema import AugConfig, DataConfig, ImageFolderDataConfig, SyntheticDataConfig
from mixers.registry import Registry

log = logging.getLogger(__name__)

# Defaults for keys a data config may leave out (a config built in Python rather than composed by Hydra): the
# values are the schema's (metaformer/engine/schema.py), where they are written.
DATA_DEFAULTS: dict[str, Any] = {
    "root": None,
    "download": DataConfig.download,
    "num_workers": DataConfig.num_workers,
    "seed": SyntheticDataConfig.seed,
    **{
        key: getattr(ImageFolderDataConfig, key)
        for key in ("train_split", "val_split", "interpolation", "crop_pct")
    },
}
DATA_REQUIRED = (
    "name",
    "in_chans",
    "img_size",
    "mean",
    "std",
)  # and num_classes, which imagenet may leave null
AUG_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(AugConfig)}


class Loader(Protocol):
    """What `Data.train` and `Data.val` are: batches for this rank, a length, and a reshuffle per epoch."""

    num_samples: int

    def __iter__(self) -> Any: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...


@dataclass
class Data:
    """The data the training loop needs: loaders for this rank and the facts that size the model."""

    train: Loader
    val: Loader
    name: str
    num_classes: int
    in_chans: int
    img_size: int
    num_train: int  # samples in the whole train split, all ranks together
    num_val: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class DataSource:
    """A data set by name: `check(cfg)` validates without loading, `build(cfg, aug, ...)` returns a `Data`."""

    check: Callable[[DictConfig], None]
    build: Callable[..., Data]
    fixed: Mapping[str, int] = field(default_factory=dict)  # config values this data set cannot change

    def __call__(self, *args: Any, **kwargs: Any) -> Data:
        return self.build(*args, **kwargs)


DATASETS = Registry("dataset")


def register_dataset(name: str, source: DataSource, *, override: bool = False) -> DataSource:
    """Make `data.name=<name>` build from `source`."""
    return DATASETS.register(name, source, override=override)


def data_config(cfg: DictConfig | Mapping[str, Any]) -> DictConfig:
    """Return the data config resolved, with defaults for unset optional keys; raise on missing required ones."""
    cfg = _with_defaults(cfg, DATA_DEFAULTS)
    for key in (*DATA_REQUIRED, "num_classes"):
        if key not in cfg or OmegaConf.is_missing(cfg, key) or (key in DATA_REQUIRED and cfg[key] is None):
            raise ValueError(f"data.{key} is required (see conf/data/*.yaml); set data.{key}=...")
    return cfg


def aug_config(cfg: DictConfig | Mapping[str, Any] | None) -> DictConfig:
    """Return the aug config resolved, with every unset key off (see conf/aug/*.yaml)."""
    aug = _with_defaults(cfg or {}, AUG_DEFAULTS)
    for key in ("hflip", "reprob", "mixup_prob", "mixup_switch_prob"):
        if not 0.0 <= float(aug[key]) <= 1.0:
            raise ValueError(f"aug.{key} is a probability in [0, 1], got {aug[key]}")
    if int(aug.random_crop_padding) < 0:
        raise ValueError(f"aug.random_crop_padding must be >= 0 pixels, got {aug.random_crop_padding}")
    return aug


def check_data(data_cfg: DictConfig | Mapping[str, Any]) -> None:
    """Validate the data config and its files without loading images; raise with what to fix."""
    _checked_source(data_config(data_cfg))


def build_data(
    data_cfg: DictConfig | Mapping[str, Any],
    aug_cfg: DictConfig | Mapping[str, Any] | None,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    *,
    device: torch.device | str | None = None,
    local_world_size: int = 1,
) -> Data:
    """Return train/val loaders for `rank` of `world_size`; `batch_size` is per rank. In-memory data sets
    are moved to `device` once (default: CPU) and batched and augmented there. `data.num_workers: null` means
    `default_workers(local_world_size)` loader processes per rank."""
    cfg, aug = data_config(data_cfg), aug_config(aug_cfg)
    if cfg.num_workers is None:
        cfg.num_workers = default_workers(local_world_size)
    source = _checked_source(cfg)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if batch_size < 1 or eval_batch_size < 1:
        raise ValueError(
            f"batch sizes must be >= 1, got batch_size={batch_size}, eval_batch_size={eval_batch_size}"
        )
    data = source(cfg, aug, batch_size, eval_batch_size, seed, rank, world_size, device)
    if len(data.train) == 0:
        raise ValueError(
            f"{cfg.name}: {data.num_train} training images make no full batch of {batch_size} on each of "
            f"{world_size} rank(s); lower the batch size or use more data"
        )
    return data


def default_workers(local_world_size: int = 1) -> int:
    """DataLoader workers per process: the cores this process may run on (its CPU affinity, which SLURM and
    containers restrict) shared by the `local_world_size` processes of this node, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_world_size))


def in_memory(load: Callable[[DictConfig], TensorSplits]) -> Callable[..., Data]:
    """Return a `DataSource.build` that loads `TensorSplits` with `load` and batches them as tensors."""

    def build(
        cfg: DictConfig,
        aug: DictConfig,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        rank: int,
        world_size: int,
        device: torch.device | str | None,
    ) -> Data:
        splits = load(cfg).resized(int(cfg.img_size)).to(device)
        mean, std = _stats(cfg)
        if aug.randaugment:
            log.warning(
                "aug.randaugment=%s is applied to image-folder data (imagenet) only; %s is augmented per batch "
                "with crop, flip and erasing",
                aug.randaugment,
                cfg.name,
            )
        train_tf = BatchTransform(
            mean, std, crop_padding=aug.random_crop_padding, hflip=aug.hflip, reprob=aug.reprob
        )
        shard = dict(seed=seed, rank=rank, world_size=world_size)
        train = TensorLoader(
            splits.train_images, splits.train_labels, batch_size, train_tf, train=True, **shard
        )
        val_tf = BatchTransform(mean, std)
        val = TensorLoader(
            splits.val_images, splits.val_labels, eval_batch_size, val_tf, train=False, **shard
        )
        return Data(
            train=train,
            val=val,
            name=str(cfg.name),
            num_classes=int(cfg.num_classes),
            in_chans=splits.train_images.shape[1],
            img_size=splits.train_images.shape[-1],
            num_train=len(splits.train_labels),
            num_val=len(splits.val_labels),
            mean=mean,
            std=std,
        )

    return build


def build_image_folder(
    cfg: DictConfig,
    aug: DictConfig,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    rank: int,
    world_size: int,
    device: torch.device | str | None,
) -> Data:
    """Return DataLoaders with workers over root/<train_split> and root/<val_split> (timm transforms)."""
    mean, std = _stats(cfg)
    train_ds, val_ds = imagenet_datasets(cfg, aug, mean, std)
    shard = dict(num_workers=int(cfg.num_workers), seed=seed, rank=rank, world_size=world_size)
    return Data(
        train=FolderLoader(train_ds, batch_size, train=True, **shard),
        val=FolderLoader(val_ds, eval_batch_size, train=False, **shard),
        name=str(cfg.name),
        num_classes=len(train_ds.classes),
        in_chans=3,
        img_size=int(cfg.img_size),
        num_train=len(train_ds),
        num_val=len(val_ds),
        mean=mean,
        std=std,
    )


register_dataset(
    "fashion_mnist",
    DataSource(check_fashion_mnist, in_memory(load_fashion_mnist), {"num_classes": 10, "in_chans": 1}),
)
register_dataset(
    "cifar10", DataSource(check_cifar, in_memory(load_cifar), {"num_classes": 10, "in_chans": 3})
)
register_dataset(
    "cifar100", DataSource(check_cifar, in_memory(load_cifar), {"num_classes": 100, "in_chans": 3})
)
register_dataset("synthetic", DataSource(check_synthetic, in_memory(load_synthetic)))
register_dataset("imagenet", DataSource(check_imagenet, build_image_folder, {"in_chans": 3}))


def _checked_source(cfg: DictConfig) -> DataSource:
    source = DATASETS.get(cfg.name)
    for key, value in getattr(source, "fixed", {}).items():
        if cfg[key] is not None and int(cfg[key]) != value:
            raise ValueError(f"{cfg.name} has {key}={value}, but data.{key}={cfg[key]}; remove the override")
        cfg[key] = value
    if int(cfg.img_size) < 1 or int(cfg.in_chans) < 1:
        raise ValueError(f"data.img_size and data.in_chans must be >= 1, got {cfg.img_size}, {cfg.in_chans}")
    _stats(cfg)
    if OmegaConf.is_missing(cfg, "root"):
        raise ValueError(f"data.root is required for {cfg.name}: set data.root=PATH to the data set's folder")
    check = getattr(source, "check", None)
    if check is not None:
        check(cfg)
    return source


def _stats(cfg: DictConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return data.mean and data.std as one float per channel (a scalar or a 1-list is broadcast)."""
    out = []
    for key in ("mean", "std"):
        value = cfg[key]
        values = [float(value)] if isinstance(value, int | float) else [float(v) for v in value]
        if len(values) == 1:
            values *= int(cfg.in_chans)
        if len(values) != int(cfg.in_chans) or (key == "std" and min(values) <= 0):
            raise ValueError(
                f"data.{key} needs one {'positive ' if key == 'std' else ''}value per channel "
                f"(in_chans={cfg.in_chans}), got {value}"
            )
        out.append(tuple(values))
    return out[0], out[1]


def _with_defaults(cfg: DictConfig | Mapping[str, Any], defaults: Mapping[str, Any]) -> DictConfig:
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return OmegaConf.merge(OmegaConf.create(dict(defaults)), OmegaConf.create(dict(cfg)))
