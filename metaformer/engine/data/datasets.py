"""Where the images come from: one reader and one cheap check per data set.

Fashion-MNIST, CIFAR-10/100 and the synthetic set are read whole into uint8 NCHW tensors (`TensorSplits`);
ImageNet stays on disk as ImageFolder trees with timm's transforms. Each `check_*` validates a data set's root
without reading the images, so the CLI can fail before training; each error says which path was wrong and how
to get the data. Fashion-MNIST's gzipped IDX files are parsed here (a few lines of numpy) because torchvision's
IDX reader only opens uncompressed files; CIFAR's pickle batches are read here, with torchvision's file lists,
because torchvision's `CIFAR10` refuses any file whose md5 differs from the official archive (a re-packed or test
copy), and is used only to download. A file that is there but truncated or corrupt raises `DataFileError` naming
it; the Fashion-MNIST check finds a truncated IDX or gzip file from its header and size, without reading it.
"""

from __future__ import annotations

import functools
import gzip
import math
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor
from torchvision import datasets as tv_datasets

from metaformer.errors import one_line

# Where Debian's `dataset-fashion-mnist` installs the four IDX files, and where downloads go when data.root is unset.
FASHION_MNIST_DEFAULT = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_ROOT = Path("~/.cache/metaformer/datasets").expanduser()

FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "val_images": "t10k-images-idx3-ubyte",
    "val_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_CLASSES = {"cifar10": tv_datasets.CIFAR10, "cifar100": tv_datasets.CIFAR100}
IMAGE_EXTENSIONS = tuple(ext.lower() for ext in tv_datasets.folder.IMG_EXTENSIONS)


class DataFileError(OSError):
    """A data file that exists but cannot be read as its format says: truncated, corrupt or of another format."""


@dataclass
class TensorSplits:
    """A small data set in memory: uint8 images (N, C, H, W) and int64 labels (N,) for train and val."""

    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor

    def resized(self, size: int) -> TensorSplits:
        """Return the splits with images resized (bilinear, antialiased) to size x size, or self if they are."""
        if self.train_images.shape[-2:] == (size, size):
            return self
        return TensorSplits(
            _resize(self.train_images, size),
            self.train_labels,
            _resize(self.val_images, size),
            self.val_labels,
        )

    def to(self, device: torch.device | str | None) -> TensorSplits:
        """Return the splits on `device` (the loader then slices and augments there)."""
        if device is None:
            return self
        return TensorSplits(*(t.to(device) for t in vars(self).values()))


# Fashion-MNIST -------------------------------------------------------------------------------------------------


REFETCH = "re-fetch the data set (apt-get install --reinstall dataset-fashion-mnist, or copy the files again)"


def _open_idx(path: Path):
    return (gzip.open if path.suffix == ".gz" else open)(path, "rb")


def _idx_shape(path: Path, head: bytes) -> tuple[int, ...]:
    """The shape an IDX header promises; raise DataFileError if `head` is not a uint8 IDX header."""
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] != 0x08 or len(head) < 4 + 4 * head[3]:
        raise DataFileError(f"{path} is not a uint8 IDX file (header {head[:4].hex() or 'empty'}); {REFETCH}")
    ndim = head[3]
    return struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])


def read_idx(path: Path) -> np.ndarray:
    """Return the uint8 array stored in an IDX file, gzipped (.gz) or not: images (N, H, W) or labels (N,),
    read-only. A process reads an unchanged file once: a sweep's worker processes (joblib's) train run after run
    on the same files, and unzipping Fashion-MNIST takes about half a second."""
    try:
        stat = path.stat()
    except OSError:  # _read_idx names the problem
        return _read_idx(path, -1, -1)
    return _read_idx(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_idx(path: Path, mtime_ns: int, size: int) -> np.ndarray:
    """read_idx for one version of the file (its modification time and size are the cache's key)."""
    try:
        with _open_idx(path) as f:
            data = f.read()
    except (EOFError, zlib.error, OSError) as e:  # gzip.BadGzipFile is an OSError
        raise DataFileError(f"{path} is truncated or corrupt ({one_line(e)}); {REFETCH}") from e
    shape = _idx_shape(path, data[:64])
    offset = 4 + 4 * len(shape)
    if len(data) != offset + math.prod(shape):
        raise DataFileError(
            f"{path} is truncated or corrupt: its header promises {'x'.join(map(str, shape))} bytes of data, "
            f"it holds {len(data) - offset}; {REFETCH}"
        )
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def check_idx(path: Path) -> None:
    """Raise DataFileError unless `path` looks whole: its header, and its size (a .gz file's recorded size)
    match. Reads a few bytes; a .gz file whose recorded size disagrees is read in full to be sure."""
    try:
        with _open_idx(path) as f:
            head = f.read(64)
    except (EOFError, zlib.error, OSError) as e:
        raise DataFileError(f"{path} is truncated or corrupt ({one_line(e)}); {REFETCH}") from e
    shape = _idx_shape(path, head)
    size = 4 + 4 * len(shape) + math.prod(shape)
    if path.suffix != ".gz":
        if path.stat().st_size != size:
            read_idx(path)  # raises with the sizes
        return
    with open(path, "rb") as f:  # gzip ends with the uncompressed size modulo 2**32
        f.seek(-4, 2)
        recorded = struct.unpack("<I", f.read(4))[0]
    if recorded != size % 2**32:
        read_idx(path)  # raises unless the file is whole after all (e.g. several gzip members)


def locate_fashion_mnist(root: Path) -> dict[str, Path] | None:
    """Return the four IDX files in root or root/FashionMNIST/raw (gzipped or not), or None if any is missing."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        found = {}
        for key, stem in FASHION_MNIST_FILES.items():
            candidates = [folder / stem, folder / f"{stem}.gz"]
            found[key] = next((p for p in candidates if p.is_file()), None)
        if all(found.values()):
            return found
    return None


def _fashion_roots(cfg: DictConfig) -> list[Path]:
    return [Path(cfg.root).expanduser()] if cfg.root else [FASHION_MNIST_DEFAULT, DOWNLOAD_ROOT]


def _fashion_missing(cfg: DictConfig) -> str:
    where = " or ".join(str(p) for p in _fashion_roots(cfg))
    return (
        f"Fashion-MNIST not found in {where}: install it with `apt-get install dataset-fashion-mnist` "
        f"(Debian, puts it in {FASHION_MNIST_DEFAULT}), set data.root=PATH to a folder holding "
        f"{', '.join(FASHION_MNIST_FILES.values())} (each may be .gz), or set data.download=true"
    )


def check_fashion_mnist(cfg: DictConfig) -> None:
    """Raise FileNotFoundError unless the IDX files are found or data.download is set, DataFileError if one of
    the files found is truncated or corrupt."""
    paths = next((p for p in map(locate_fashion_mnist, _fashion_roots(cfg)) if p), None)
    if paths is None and not cfg.download:
        raise FileNotFoundError(_fashion_missing(cfg))
    for path in (paths or {}).values():
        check_idx(path)


def load_fashion_mnist(cfg: DictConfig) -> TensorSplits:
    """Return Fashion-MNIST from data.root, else Debian's folder, else the download cache (downloading if asked)."""
    paths = next((p for p in map(locate_fashion_mnist, _fashion_roots(cfg)) if p), None)
    if paths is None and cfg.download:
        root = _fashion_roots(cfg)[-1]
        try:
            tv_datasets.FashionMNIST(str(root), train=True, download=True)
        except Exception as e:  # torchvision raises URLError, RuntimeError, OSError, ... when offline
            raise FileNotFoundError(
                f"{_fashion_missing(cfg)} (download into {root} failed: {one_line(e)})"
            ) from e
        paths = locate_fashion_mnist(root)
    if paths is None:
        raise FileNotFoundError(_fashion_missing(cfg))
    arrays = {key: torch.from_numpy(read_idx(path).copy()) for key, path in paths.items()}
    return TensorSplits(
        arrays["train_images"][:, None], arrays["train_labels"].long(),
        arrays["val_images"][:, None], arrays["val_labels"].long(),
    )  # fmt: skip


# CIFAR-10 / CIFAR-100 ------------------------------------------------------------------------------------------


def _cifar_root(cfg: DictConfig) -> Path:
    return Path(cfg.root).expanduser() if cfg.root else DOWNLOAD_ROOT


def cifar_files(name: str, root: Path) -> tuple[list[Path], list[Path]]:
    """Return the train and test pickle batches torchvision's layout puts under root."""
    cls = CIFAR_CLASSES[name]
    folder = root / cls.base_folder
    return [folder / f for f, _ in cls.train_list], [folder / f for f, _ in cls.test_list]


def _cifar_missing(cfg: DictConfig, missing: Path) -> str:
    cls = CIFAR_CLASSES[cfg.name]
    return (
        f"{cfg.name} not found: {missing} does not exist; set data.root=PATH to the folder holding "
        f"{cls.base_folder}/ (torchvision's layout, from {cls.url}), or set data.download=true to fetch it there"
    )


def check_cifar(cfg: DictConfig) -> None:
    """Raise FileNotFoundError unless every pickle batch exists or data.download is set."""
    train, test = cifar_files(cfg.name, _cifar_root(cfg))
    missing = [p for p in train + test if not p.is_file()]
    if missing and not cfg.download:
        raise FileNotFoundError(_cifar_missing(cfg, missing[0]))


def read_cifar_batches(paths: list[Path]) -> tuple[Tensor, Tensor]:
    """Return uint8 images (N, 3, 32, 32) and int64 labels from CIFAR python pickle batches."""
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        except (pickle.UnpicklingError, EOFError, OSError, ValueError, KeyError, TypeError) as e:
            raise DataFileError(
                f"{path} is truncated or corrupt ({type(e).__name__}: {one_line(e)}); re-fetch the data set"
            ) from e
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64)


def load_cifar(cfg: DictConfig) -> TensorSplits:
    """Return CIFAR-10 or CIFAR-100 (by data.name) from data.root, downloading it there first if asked."""
    root = _cifar_root(cfg)
    train, test = cifar_files(cfg.name, root)
    missing = [p for p in train + test if not p.is_file()]
    if missing and cfg.download:
        try:
            CIFAR_CLASSES[cfg.name](str(root), train=True, download=True)
        except Exception as e:  # offline: URLError, OSError, ...
            raise FileNotFoundError(
                f"{_cifar_missing(cfg, missing[0])} (download failed: {one_line(e)})"
            ) from e
    elif missing:
        raise FileNotFoundError(_cifar_missing(cfg, missing[0]))
    return TensorSplits(*read_cifar_batches(train), *read_cifar_batches(test))


# Synthetic -----------------------------------------------------------------------------------------------------


def check_synthetic(cfg: DictConfig) -> None:
    """Raise ValueError unless the synthetic sizes are positive."""
    for key in ("num_train", "num_val", "num_classes"):
        if cfg[key] is None or int(cfg[key]) < 1:
            raise ValueError(f"data.{key} must be >= 1 for the synthetic data set, got {cfg[key]}")


def load_synthetic(cfg: DictConfig) -> TensorSplits:
    """Return random images with a learnable signal: a blocky per-class template plus noise, fixed by data.seed."""
    gen = torch.Generator().manual_seed(int(cfg.seed))  # data_config gave it the schema's default
    size, chans = int(cfg.img_size), int(cfg.in_chans)
    templates = torch.rand(int(cfg.num_classes), chans, 4, 4, generator=gen)
    templates = F.interpolate(templates, size=(size, size), mode="nearest")

    def split(n: int) -> tuple[Tensor, Tensor]:
        labels = torch.randint(0, int(cfg.num_classes), (n,), generator=gen)
        noise = torch.rand(n, chans, size, size, generator=gen)
        return ((0.5 * templates[labels] + 0.5 * noise) * 255).round().to(torch.uint8), labels

    return TensorSplits(*split(int(cfg.num_train)), *split(int(cfg.num_val)))


# ImageNet (ImageFolder) ----------------------------------------------------------------------------------------


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir())


def check_imagenet(cfg: DictConfig) -> None:
    """Raise unless root/<train_split> and root/<val_split> hold the same class folders, as many as num_classes."""
    hint = f"set data.root=PATH to a folder with {cfg.train_split}/<class>/*.JPEG and {cfg.val_split}/<class>/*.JPEG"
    if not cfg.root:
        raise ValueError(f"data.root is required for {cfg.name}; {hint}")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet root {root} does not exist; {hint}")
    classes = {}
    for split in (cfg.train_split, cfg.val_split):
        folder = root / split
        if not folder.is_dir() or not _class_dirs(folder):
            raise FileNotFoundError(
                f"ImageNet split folder {folder} is missing or has no class folders; {hint}"
            )
        classes[split] = _class_dirs(folder)
    if classes[cfg.train_split] != classes[cfg.val_split]:
        extra = sorted(set(classes[cfg.train_split]) ^ set(classes[cfg.val_split]))[:5]
        raise ValueError(
            f"{root}: {cfg.train_split}/ and {cfg.val_split}/ have different class folders (e.g. {extra}); "
            f"labels would not match: give both splits the same classes"
        )
    found = len(classes[cfg.train_split])
    if cfg.num_classes is not None and int(cfg.num_classes) != found:
        raise ValueError(
            f"{root / cfg.train_split} has {found} class folders but data.num_classes={cfg.num_classes}; "
            f"set data.num_classes={found} (or null) or fix data.root"
        )


def imagenet_datasets(
    cfg: DictConfig, aug: DictConfig, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[tv_datasets.ImageFolder, tv_datasets.ImageFolder]:
    """Return the train and val ImageFolders with timm's train (per `aug`) and eval (crop_pct) transforms."""
    from timm.data import create_transform

    common = dict(
        input_size=int(cfg.img_size),
        interpolation=cfg.interpolation,
        mean=mean,
        std=std,
    )
    train_tf = create_transform(
        is_training=True,
        no_aug=not _augments_folder(aug),
        hflip=float(aug.hflip),
        color_jitter=float(aug.color_jitter) or None,
        auto_augment=aug.randaugment or None,
        re_prob=float(aug.reprob),
        re_mode="pixel",
        **common,
    )
    val_tf = create_transform(is_training=False, crop_pct=float(cfg.crop_pct), **common)
    root = Path(cfg.root).expanduser()
    return (
        tv_datasets.ImageFolder(str(root / cfg.train_split), transform=train_tf),
        tv_datasets.ImageFolder(str(root / cfg.val_split), transform=val_tf),
    )


def _augments_folder(aug: DictConfig) -> bool:
    # Any augmentation turns on timm's training pipeline (RandomResizedCrop first); with all keys off (aug=none),
    # timm's no_aug resizes and center-crops the training images like the val ones.
    return bool(aug.randaugment or aug.hflip or aug.reprob or aug.color_jitter or aug.random_crop_padding)


def _resize(images: Tensor, size: int, chunk: int = 8192) -> Tensor:
    out = [
        F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for part in images.split(chunk)
    ]
    return torch.cat(out)
