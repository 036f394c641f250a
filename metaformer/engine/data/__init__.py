"""The data sets and loaders of the training engine: `build_data` turns the `data` and `aug` configs into a `Data`.

Small data sets (Fashion-MNIST, the default, found without any setting when Debian's `dataset-fashion-mnist` is
installed; CIFAR-10/100; a synthetic set for smoke tests) live in memory as uint8 tensors and are batched and
augmented per batch with tensor ops; ImageNet is an ImageFolder tree read by DataLoader workers with timm's
transforms. Both shard across ranks so that training stays in lockstep and validation sums to the exact
single-process metric. `check_data` validates a config and its files without loading them, to fail fast.

    data = build_data(cfg.data, cfg.aug, batch_size=128, eval_batch_size=256, seed=0, rank=0, world_size=1)
    for epoch in range(epochs):
        data.train.set_epoch(epoch)
        for images, labels in data.train: ...
"""

from metaformer.engine.data.build import (
    AUG_DEFAULTS,
    DATA_DEFAULTS,
    DATASETS,
    Data,
    DataSource,
    Loader,
    aug_config,
    build_data,
    check_data,
    data_config,
    register_dataset,
)
from metaformer.engine.data.datasets import DOWNLOAD_ROOT, FASHION_MNIST_DEFAULT, TensorSplits

__all__ = [
    "AUG_DEFAULTS",
    "DATA_DEFAULTS",
    "DATASETS",
    "DOWNLOAD_ROOT",
    "FASHION_MNIST_DEFAULT",
    "Data",
    "DataSource",
    "Loader",
    "TensorSplits",
    "aug_config",
    "build_data",
    "check_data",
    "data_config",
    "register_dataset",
]
