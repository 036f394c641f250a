"""Tests of metaformer.engine.data: real Fashion-MNIST, CIFAR and ImageNet trees written here, sharding, augmentation.

CIFAR and ImageNet cannot be downloaded here, so the tests write tiny copies in the on-disk formats torchvision
and ImageFolder read (pickle batches, JPEG folders); Fashion-MNIST is the real one Debian installs.
"""

from __future__ import annotations

import gzip
import pickle
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from metaformer.engine.data import FASHION_MNIST_DEFAULT, build_data, check_data
from metaformer.engine.data import datasets as ds
from metaformer.engine.data.augment import BatchTransform, random_crop, random_erase, random_hflip

CONF = Path(__file__).resolve().parents[2] / "conf"
FMNIST_NAMES = list(ds.FASHION_MNIST_FILES.values())


def group_cfg(group: str, preset: str, **overrides):
    """Return conf/<group>/<preset>.yaml over its schema, as the CLI composes it, with overrides (a plain config)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        composed = compose("config", overrides=[f"{group}={preset}"])[group]
    return OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(composed)), overrides)


def data_cfg(preset: str, **overrides):
    """Return conf/data/<name>.yaml with overrides, as the CLI would compose it."""
    return group_cfg("data", preset, **overrides)


def aug_cfg(preset: str, **overrides):
    """Return conf/aug/<name>.yaml with overrides."""
    return group_cfg("aug", preset, **overrides)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzipped when the name ends in .gz."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fake_fashion(folder: Path, gz: bool = True, n_train: int = 40, n_val: int = 12) -> None:
    """Write four tiny Fashion-MNIST IDX files (28x28 images, labels 0-9) into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10,
        rng.integers(0, 256, (n_val, 28, 28)), np.arange(n_val) % 10,
    ]  # fmt: skip
    for stem, array in zip(FMNIST_NAMES, arrays, strict=True):
        write_idx(folder / (stem + (".gz" if gz else "")), array)


def write_fake_cifar(root: Path, name: str = "cifar10", per_batch: int = 4, n_test: int = 6) -> np.ndarray:
    """Write CIFAR pickle batches in torchvision's layout; return the first train batch's raw (N, 3072) data."""
    cls = ds.CIFAR_CLASSES[name]
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    rng = np.random.default_rng(1)
    first = None
    for fname, n in [(f, per_batch) for f, _ in cls.train_list] + [(f, n_test) for f, _ in cls.test_list]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        first = data if first is None else first
        with open(folder / fname, "wb") as f:
            pickle.dump({"data": data, label_key: list(rng.integers(0, 10, n))}, f)
    return first


def write_image_tree(root: Path, classes=("cat", "dog"), per_class: int = 4) -> None:
    """Write root/{train,val}/<class>/*.JPEG as real JPEG files of varied sizes."""
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (200 + 20 * i, 260, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{cls}_{i}.JPEG", quality=90)


def train_indices(data) -> list[list[int]]:
    return [idx.tolist() for idx in data.train.batch_indices()]


# Fashion-MNIST: the real data set ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion():
    if not ds.locate_fashion_mnist(FASHION_MNIST_DEFAULT):
        pytest.skip(
            f"{FASHION_MNIST_DEFAULT} is absent: `apt-get install dataset-fashion-mnist` to run this test"
        )
    return build_data(
        data_cfg("fashion_mnist"), aug_cfg("none"), batch_size=256, eval_batch_size=1000, seed=0
    )


def test_real_fashion_mnist_is_found_without_settings_and_normalized(fashion):
    assert (fashion.name, fashion.num_train, fashion.num_val) == ("fashion_mnist", 60000, 10000)
    assert (fashion.num_classes, fashion.in_chans, fashion.img_size) == (10, 1, 28)
    assert len(fashion.train) == 60000 // 256 and len(fashion.val) == 10
    images, labels = next(iter(fashion.train))
    assert images.shape == (256, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.int64
    val_images = torch.cat([x for x, _ in fashion.val])
    val_labels = torch.cat([y for _, y in fashion.val])
    assert (
        val_labels.min() == 0 and val_labels.max() == 9 and torch.bincount(val_labels).tolist() == [1000] * 10
    )
    assert abs(val_images.mean().item()) < 0.05 and 0.9 < val_images.std().item() < 1.1


def test_idx_reader_matches_torchvision(tmp_path):
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    array = np.random.default_rng(3).integers(0, 256, (5, 7, 9))
    write_idx(tmp_path / "raw-idx3-ubyte", array)
    write_idx(tmp_path / "gz-idx3-ubyte.gz", array)
    expected = read_sn3_pascalvincent_tensor(str(tmp_path / "raw-idx3-ubyte")).numpy()
    np.testing.assert_array_equal(ds.read_idx(tmp_path / "raw-idx3-ubyte"), expected)
    np.testing.assert_array_equal(ds.read_idx(tmp_path / "gz-idx3-ubyte.gz"), expected)


def test_an_unchanged_idx_file_is_read_once_per_process_and_a_changed_one_again(tmp_path, monkeypatch):
    opened = []
    real_open = ds._open_idx
    monkeypatch.setattr(ds, "_open_idx", lambda path: opened.append(path) or real_open(path))
    path = tmp_path / "labels-idx1-ubyte.gz"
    write_idx(path, np.arange(6))
    first = ds.read_idx(path)
    assert ds.read_idx(path) is first and opened == [path]  # a sweep's next run in this process: no unzipping
    assert not first.flags.writeable  # callers copy before they change anything
    write_idx(path, np.arange(7))  # the file replaced (another size)
    np.testing.assert_array_equal(ds.read_idx(path), np.arange(7))
    assert opened == [path, path]


@pytest.mark.parametrize("layout", ["flat_gz", "flat_raw", "torchvision"])
def test_fashion_mnist_explicit_root_layouts(tmp_path, layout):
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    write_fake_fashion(folder, gz=layout == "flat_gz")
    cfg = data_cfg("fashion_mnist", root=str(tmp_path), img_size=32)
    check_data(cfg)
    data = build_data(cfg, aug_cfg("light"), batch_size=8, eval_batch_size=5, seed=0)
    assert (data.num_train, data.num_val, len(data.train), len(data.val)) == (40, 12, 5, 3)
    images, labels = next(iter(data.train))
    assert images.shape == (8, 1, 32, 32)  # resized once at load from 28
    assert labels.min() >= 0 and labels.max() < 10


def test_fashion_mnist_copies_of_the_real_files_in_a_root(tmp_path):
    if not ds.locate_fashion_mnist(FASHION_MNIST_DEFAULT):
        pytest.skip(f"{FASHION_MNIST_DEFAULT} is absent")
    for name in FMNIST_NAMES:
        shutil.copy(FASHION_MNIST_DEFAULT / f"{name}.gz", tmp_path)
    check_data(data_cfg("fashion_mnist", root=str(tmp_path)))
    assert ds.locate_fashion_mnist(tmp_path)["val_labels"].parent == tmp_path


def test_fashion_mnist_bad_root_says_how_to_get_it(tmp_path):
    cfg = data_cfg("fashion_mnist", root=str(tmp_path / "nowhere"))
    for call in (lambda: check_data(cfg), lambda: build_data(cfg, None, 8, 8, 0)):
        with pytest.raises(FileNotFoundError) as err:
            call()
        message = str(err.value)
        assert "\n" not in message and str(tmp_path / "nowhere") in message
        for hint in ("apt-get install dataset-fashion-mnist", "data.root=", "data.download=true"):
            assert hint in message


def test_fashion_mnist_discovery_order_without_root(tmp_path, monkeypatch):
    debian, cache = tmp_path / "debian", tmp_path / "cache"
    monkeypatch.setattr(ds, "FASHION_MNIST_DEFAULT", debian)
    monkeypatch.setattr(ds, "DOWNLOAD_ROOT", cache)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        check_data(data_cfg("fashion_mnist"))
    write_fake_fashion(cache, n_train=30)
    assert build_data(data_cfg("fashion_mnist"), None, 8, 8, 0).num_train == 30
    write_fake_fashion(debian, n_train=20)  # Debian's folder comes first
    assert build_data(data_cfg("fashion_mnist"), None, 8, 8, 0).num_train == 20


def test_fashion_mnist_download_goes_through_torchvision(tmp_path, monkeypatch):
    calls = []

    class FakeFashionMNIST:  # what torchvision leaves behind: uncompressed files in root/FashionMNIST/raw
        def __init__(self, root, train, download):
            calls.append((root, download))
            write_fake_fashion(Path(root) / "FashionMNIST" / "raw", gz=False)

    monkeypatch.setattr(ds.tv_datasets, "FashionMNIST", FakeFashionMNIST)
    cfg = data_cfg("fashion_mnist", root=str(tmp_path), download=True)
    check_data(cfg)  # nothing there yet, but download is allowed
    assert build_data(cfg, None, 8, 8, 0).num_train == 40 and calls == [(str(tmp_path), True)]

    def offline(root, train, download):
        raise OSError("no network")

    monkeypatch.setattr(ds.tv_datasets, "FashionMNIST", offline)
    with pytest.raises(FileNotFoundError, match="download into .* failed: no network"):
        build_data(data_cfg("fashion_mnist", root=str(tmp_path / "empty"), download=True), None, 8, 8, 0)


# CIFAR ---------------------------------------------------------------------------------------------------------


def test_cifar10_from_pickle_batches(tmp_path):
    from torchvision.datasets import CIFAR10

    first = write_fake_cifar(tmp_path)
    with pytest.raises(RuntimeError, match="corrupted"):  # why we read the batches ourselves: md5 checks
        CIFAR10(str(tmp_path), download=False)
    cfg = data_cfg("cifar10", root=str(tmp_path), mean=[0, 0, 0], std=[1, 1, 1])
    check_data(cfg)
    data = build_data(cfg, aug_cfg("light"), batch_size=4, eval_batch_size=4, seed=0)
    assert (data.num_train, data.num_val, data.num_classes, data.in_chans, data.img_size) == (
        20,
        6,
        10,
        3,
        32,
    )
    assert len(data.train) == 5 and [len(y) for _, y in data.val] == [4, 2]
    # With mean 0 and std 1 the val pixels are the raw bytes / 255, in CIFAR's channel-major row layout.
    val = build_data(cfg, None, 4, 20, 0).val
    loader = build_data(data_cfg("cifar10", root=str(tmp_path), mean=0, std=1), None, 20, 20, 0).train
    train_images = torch.cat([x for x, _ in loader])  # shuffled: compare as a set of images
    expected = torch.from_numpy(first.reshape(-1, 3, 32, 32)).float() / 255
    for image in expected:
        assert (train_images - image).abs().amax(dim=(1, 2, 3)).min() < 1e-6
    assert next(iter(val))[0].shape == (6, 3, 32, 32)


def test_cifar100_fine_labels(tmp_path):
    write_fake_cifar(tmp_path, "cifar100", per_batch=10)
    data = build_data(data_cfg("cifar100", root=str(tmp_path)), None, 5, 5, 0)
    assert (data.num_train, data.num_val, data.num_classes) == (10, 6, 100)


def test_cifar_missing_files_say_what_to_do(tmp_path):
    cfg = data_cfg("cifar10", root=str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        check_data(cfg)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value) and "data.download=true" in str(err.value)
    check_data(data_cfg("cifar10", root=str(tmp_path), download=True))  # allowed to fetch it


# ImageNet (ImageFolder + timm transforms) ----------------------------------------------------------------------


def test_imagenet_folder_with_paper_augmentation(tmp_path):
    write_image_tree(tmp_path)
    cfg = data_cfg("imagenet", root=str(tmp_path), num_classes=2, num_workers=0)
    check_data(cfg)
    data = build_data(cfg, aug_cfg("paper"), batch_size=2, eval_batch_size=3, seed=0)
    assert (data.num_classes, data.in_chans, data.img_size, data.num_train, data.num_val) == (2, 3, 224, 8, 8)
    assert len(data.train) == 4 and len(data.val) == 3
    images, labels = next(iter(data.train))
    assert images.shape == (2, 3, 224, 224) and images.dtype == torch.float32 and labels.dtype == torch.int64
    val = [(x, y) for x, y in data.val]
    assert [len(y) for _, y in val] == [3, 3, 2]
    assert torch.cat([y for _, y in val]).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    train_tf = repr(data.train.loader.dataset.dataset.transform)  # under SeededSamples
    assert "RandAugment" in train_tf and "RandomErasing" in train_tf and "BICUBIC" in train_tf.upper()
    val_tf = repr(data.val.loader.dataset.dataset.transform)
    assert "size=248" in val_tf and "CenterCrop(size=(224, 224))" in val_tf


def test_check_data_fails_fast_on_bad_imagenet_roots(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nonexistent'} does not exist; set data.root="):
        check_data(data_cfg("imagenet", root=str(tmp_path / "nonexistent")))
    with pytest.raises(ValueError, match="data.root is required for imagenet"):
        check_data(data_cfg("imagenet"))  # root: ??? in the yaml
    write_image_tree(tmp_path / "tree")
    with pytest.raises(ValueError, match="has 2 class folders but data.num_classes=1000"):
        check_data(data_cfg("imagenet", root=str(tmp_path / "tree")))
    shutil.rmtree(tmp_path / "tree" / "val")
    with pytest.raises(FileNotFoundError, match="val is missing"):
        check_data(data_cfg("imagenet", root=str(tmp_path / "tree"), num_classes=None))


def test_imagenet_shards_train_by_sampler_and_val_without_padding(tmp_path):
    write_image_tree(tmp_path, classes=("a", "b", "c"), per_class=3)  # 9 images: odd on purpose
    cfg = data_cfg("imagenet", root=str(tmp_path), num_classes=3, num_workers=0)
    ranks = [build_data(cfg, aug_cfg("light"), 2, 4, seed=0, rank=r, world_size=2) for r in range(2)]
    assert [len(d.train) for d in ranks] == [2, 2]
    train = [list(iter(d.train.sampler)) for d in ranks]
    assert not set(train[0]) & set(train[1])
    val = [d.val.loader.dataset.indices for d in ranks]
    assert sorted(val[0] + val[1]) == list(range(9)) and sum(d.val.num_samples for d in ranks) == 9


def test_a_resumed_epoch_on_an_image_folder_opens_only_the_rest_and_gives_the_same_batches(tmp_path):
    write_image_tree(tmp_path, classes=("a", "b", "c"), per_class=4)  # 12 train images: 6 batches of 2
    cfg = data_cfg("imagenet", root=str(tmp_path), num_classes=3, img_size=32, num_workers=0)

    def loader(num_workers=0):
        data = build_data(OmegaConf.merge(cfg, {"num_workers": num_workers}), aug_cfg("light"), 2, 4, seed=0)
        return data.train

    def counting(train, opened):
        folder = train.loader.dataset.dataset  # the ImageFolder under SeededSamples
        read = folder.loader
        folder.loader = lambda path: opened.append(path) or read(path)

    whole, opened_whole = loader(), []
    counting(whole, opened_whole)
    whole.set_epoch(1)
    batches = list(whole)
    assert len(batches) == len(whole) == 6 and len(opened_whole) == 12

    resumed, opened = loader(), []  # a new process that continues epoch 2 after its 4th batch
    counting(resumed, opened)
    resumed.set_epoch(1, start_batch=4)
    rest = list(resumed)
    assert len(resumed) == 6 and len(rest) == 2
    assert opened == opened_whole[8:]  # the skipped batches' images were never opened
    for (x, y), (x0, y0) in zip(rest, batches[4:], strict=True):
        assert torch.equal(y, y0) and torch.equal(x, x0)  # augmentation included

    workers = loader(num_workers=2)  # the same batches whichever worker process reads them
    workers.set_epoch(1, start_batch=3)
    for (x, y), (x0, y0) in zip(list(workers), batches[3:], strict=True):
        assert torch.equal(y, y0) and torch.equal(x, x0)


def test_a_resumed_epoch_in_memory_gives_the_same_augmented_batches():
    data = build_data(data_cfg("synthetic", num_train=64), aug_cfg("light"), 8, 16, seed=3)
    data.train.set_epoch(2)
    batches = list(data.train)
    data.train.set_epoch(2, start_batch=5)
    rest = list(data.train)
    assert len(rest) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(rest, batches[5:], strict=True))


@pytest.mark.filterwarnings(
    "ignore:This DataLoader will create"
)  # torch's warning for the explicit 5 on 2 cores
def test_loader_workers_follow_the_cores_of_this_process_and_an_explicit_value_wins(tmp_path, monkeypatch):
    write_image_tree(tmp_path)
    cfg = data_cfg("imagenet", root=str(tmp_path), num_classes=2)
    assert cfg.num_workers is None  # the preset leaves it to the machine

    def workers(cores, local_world_size, **overrides):
        monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
        data = build_data(
            OmegaConf.merge(cfg, overrides), None, 2, 4, seed=0, local_world_size=local_world_size
        )
        return data.train.loader.num_workers, data.val.loader.num_workers

    assert workers(2, 1) == (2, 2)  # not 8 on a 2-core machine
    assert workers(16, 4) == (4, 4)  # torchrun --nproc_per_node=4 shares the node's 16 cores
    assert workers(2, 8) == (1, 1)
    assert workers(2, 1, num_workers=5) == (5, 5) and workers(16, 1, num_workers=0) == (0, 0)


# Synthetic, sharding and epochs --------------------------------------------------------------------------------


def test_synthetic_is_deterministic_by_its_seed():
    def first_val_batch(seed):
        return next(iter(build_data(data_cfg("synthetic", seed=seed), None, 16, 64, seed=0).val))

    (a, la), (b, lb), (c, _) = first_val_batch(0), first_val_batch(0), first_val_batch(1)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    data = build_data(data_cfg("synthetic", in_chans=2, img_size=20, num_classes=4), None, 16, 16, 0)
    images, labels = next(iter(data.train))
    assert images.shape == (16, 2, 20, 20) and labels.max() < 4 and data.in_chans == 2


def test_train_shards_are_disjoint_equal_and_match_one_process():
    cfg = data_cfg("synthetic", num_train=103, num_val=37)
    ranks = [build_data(cfg, None, 8, 10, seed=5, rank=r, world_size=2) for r in range(2)]
    single = build_data(cfg, None, 16, 10, seed=5)
    assert len(ranks[0].train) == len(ranks[1].train) == len(single.train) == 103 // 16
    idx0, idx1 = train_indices(ranks[0]), train_indices(ranks[1])
    assert not {i for b in idx0 for i in b} & {i for b in idx1 for i in b}
    # step i on both ranks together is step i of one process with the batch of both
    assert [sorted(a + b) for a, b in zip(idx0, idx1, strict=True)] == [
        sorted(s) for s in train_indices(single)
    ]
    sizes = [len(y) for d in ranks for _, y in d.train]
    assert set(sizes) == {8}


@pytest.mark.parametrize("world_size", [2, 3])
def test_val_shards_partition_the_val_set_and_sum_to_the_single_process_metric(world_size):
    cfg = data_cfg("synthetic", num_train=64, num_val=37)
    ranks = [build_data(cfg, None, 8, 5, seed=0, rank=r, world_size=world_size) for r in range(world_size)]
    indices = [i for d in ranks for b in d.val.batch_indices() for i in b.tolist()]
    assert sorted(indices) == list(range(37)) and sum(d.val.num_samples for d in ranks) == 37

    def counts(loader):  # a fixed "classifier" stands in for the model
        pairs = [((x.mean(dim=(1, 2, 3)) > 0).long() == y % 2, y) for x, y in loader]
        return sum(int(c.sum()) for c, _ in pairs), sum(len(y) for _, y in pairs)

    single = counts(build_data(cfg, None, 8, 5, seed=0).val)
    per_rank = [counts(d.val) for d in ranks]
    assert (sum(c for c, _ in per_rank), sum(n for _, n in per_rank)) == single


def test_set_epoch_reshuffles_deterministically():
    cfg = data_cfg("synthetic", num_train=64)
    data = build_data(cfg, aug_cfg("light"), 8, 8, seed=0)
    epoch0 = train_indices(data)
    data.train.set_epoch(1)
    epoch1 = train_indices(data)
    assert epoch0 != epoch1 and sorted(sum(epoch0, [])) == sorted(sum(epoch1, []))
    other = build_data(cfg, aug_cfg("light"), 8, 8, seed=0)
    other.train.set_epoch(1)
    assert train_indices(other) == epoch1
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(data.train, other.train, strict=True))
    data.train.set_epoch(0)
    assert train_indices(data) == epoch0
    assert train_indices(build_data(cfg, None, 8, 8, seed=1)) != epoch0


# Batch augmentation --------------------------------------------------------------------------------------------


def test_batch_augmentation_keeps_shapes_and_changes_pixels():
    cfg = data_cfg("synthetic", num_train=64)
    plain = next(iter(build_data(cfg, aug_cfg("none"), 32, 8, seed=0).train))
    augmented = next(iter(build_data(cfg, aug_cfg("paper"), 32, 8, seed=0).train))
    assert augmented[0].shape == plain[0].shape and augmented[0].dtype == torch.float32
    assert torch.equal(augmented[1], plain[1])  # same permutation, same labels
    changed = (augmented[0] != plain[0]).flatten(1).any(dim=1)
    assert changed.float().mean() > 0.5


def test_random_crop_is_a_window_of_the_zero_padded_image():
    images = torch.randint(1, 256, (16, 2, 10, 12), dtype=torch.uint8)
    out = random_crop(images, 3, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (3, 3, 3, 3))
    windows = [padded[:, :, dy : dy + 10, dx : dx + 12] for dy in range(7) for dx in range(7)]
    for i in range(16):
        assert any(torch.equal(out[i], w[i]) for w in windows)
    assert (out == 0).any()  # some crops reach into the padding


def test_flip_and_erase_probabilities():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8)
    assert torch.equal(random_hflip(images, 1.0, gen), images.flip(3))
    assert torch.equal(random_hflip(images, 0.0, gen), images)
    floats = torch.zeros(8, 3, 16, 16)
    erased = random_erase(floats, 1.0, gen)
    per_image = (erased != 0).flatten(1).float().mean(dim=1)
    assert erased.shape == floats.shape and (per_image > 0).all() and (per_image < 0.5).all()
    assert torch.equal(random_erase(floats, 0.0, gen), floats)
    transform = BatchTransform([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    assert torch.allclose(transform(images, gen), (images.float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_in_memory_batches_are_fast():
    # 100 batches of 256 with crop + flip take ~0.1 s; a per-sample Python loop would take tens of seconds. One
    # thread, because on a shared 2-core machine a busy second core makes every small parallel op wait.
    cfg = data_cfg("synthetic", num_train=25600, num_val=16, in_chans=1, img_size=28)
    data = build_data(cfg, aug_cfg("light"), 256, 16, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        assert sum(1 for _ in data.train) == 100
        assert time.perf_counter() - start < 5.0
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_in_memory_data_on_the_gpu_gives_the_cpu_batches():
    cfg = data_cfg("synthetic", num_train=64)
    cpu = build_data(cfg, aug_cfg("paper"), 16, 16, seed=0)
    gpu = build_data(cfg, aug_cfg("paper"), 16, 16, seed=0, device="cuda")
    for (x, y), (gx, gy) in zip(cpu.train, gpu.train, strict=True):
        assert gx.is_cuda and gy.is_cuda
        assert torch.allclose(x, gx.cpu(), atol=1e-5) and torch.equal(y, gy.cpu())


def test_check_data_reads_no_images(tmp_path, monkeypatch):
    write_fake_fashion(tmp_path)
    write_fake_cifar(tmp_path)

    def no_reading(*args):
        raise AssertionError("check_data must not read the data")

    monkeypatch.setattr(ds, "read_idx", no_reading)
    monkeypatch.setattr(ds, "read_cifar_batches", no_reading)
    check_data(data_cfg("fashion_mnist", root=str(tmp_path)))
    check_data(data_cfg("cifar10", root=str(tmp_path)))
    with pytest.raises(AssertionError):
        build_data(data_cfg("cifar10", root=str(tmp_path)), None, 4, 4, seed=0)


# Configs and errors --------------------------------------------------------------------------------------------


def test_every_config_file_validates_and_aug_has_the_loop_keys():
    for path in sorted((CONF / "aug").glob("*.yaml")):
        aug = aug_cfg(path.stem)
        for key in (
            "mixup",
            "cutmix",
            "mixup_prob",
            "mixup_switch_prob",
            "label_smoothing",
            "hflip",
            "reprob",
        ):
            assert key in aug, f"{path.name} lacks {key}"
    paper = aug_cfg("paper")
    assert (paper.randaugment, paper.mixup, paper.cutmix, paper.label_smoothing, paper.reprob) == (
        "rand-m9-mstd0.5-inc1", 0.8, 1.0, 0.1, 0.25,
    )  # fmt: skip
    names = {p.stem for p in (CONF / "data").glob("*.yaml")}
    assert names == {"fashion_mnist", "cifar10", "cifar100", "imagenet", "synthetic"}
    for name in names:
        assert OmegaConf.load(CONF / "data" / f"{name}.yaml").name == name


def test_plain_dicts_are_accepted():
    cfg = {"name": "synthetic", "num_train": 32, "num_val": 8, "num_classes": 3, "in_chans": 1, "img_size": 8,
           "mean": 0.5, "std": 0.5}  # fmt: skip
    data = build_data(cfg, {"hflip": 0.5}, 8, 8, seed=0)
    assert (data.num_train, data.num_classes, data.in_chans, data.mean) == (32, 3, 1, (0.5,))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "mnistt"}, "unknown dataset 'mnistt'; registered: cifar10, cifar100, fashion_mnist"),
        ({"in_chans": 3}, "fashion_mnist has in_chans=1, but data.in_chans=3"),
        ({"mean": [0.1, 0.2]}, "data.mean needs one value per channel"),
        ({"std": [0.0]}, "data.std needs one positive value per channel"),
        ({"img_size": None}, "data.img_size is required"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_data(data_cfg("fashion_mnist", **overrides))


def test_loader_argument_errors():
    cfg = data_cfg("synthetic", num_train=10)
    with pytest.raises(ValueError, match="make no full batch of 8 on each of 2 rank"):
        build_data(cfg, None, 8, 8, seed=0, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank must be in"):
        build_data(cfg, None, 2, 2, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="aug.hflip is a probability"):
        build_data(cfg, {"hflip": 2}, 2, 2, seed=0)


@pytest.mark.parametrize("gz", [True, False])
def test_a_truncated_fashion_mnist_file_is_named_by_the_check_and_the_reader(tmp_path, gz):
    write_fake_fashion(tmp_path, gz=gz)
    name = FMNIST_NAMES[0] + (".gz" if gz else "")
    whole = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(whole[: len(whole) - 50])
    cfg = data_cfg("fashion_mnist", root=str(tmp_path))
    with pytest.raises(ds.DataFileError, match=rf"^{tmp_path / name} is truncated or corrupt"):
        check_data(cfg)
    with pytest.raises(ds.DataFileError, match=rf"^{tmp_path / name} is truncated or corrupt"):
        ds.read_idx(tmp_path / name)
    (tmp_path / name).write_bytes(b"XX" + whole[2:])  # not gzip, not IDX
    with pytest.raises(ds.DataFileError, match=str(tmp_path / name)):
        check_data(cfg)


def test_a_corrupt_cifar_batch_is_named(tmp_path):
    write_fake_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(ds.DataFileError, match=rf"^{batch} is truncated or corrupt"):
        build_data(data_cfg("cifar10", root=str(tmp_path)), None, 4, 4, 0)
