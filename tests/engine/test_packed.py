"""`trainer.pack_seeds=K`: K seeds trained as one vmapped model match their separate runs step for step (within
float rounding), write ordinary run folders that the analysis reads as separate runs and that an unpacked run
resumes, continue exactly after a signal, end a seed whose loss turns NaN alone, and refuse what a pack cannot
train (BatchNorm, random masks, Mixup, non-elementwise optimizers) with one line."""

import itertools
import math
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from analysis import collect_runs
from metaformer.engine import distributed as D
from metaformer.engine import read_results, train, validate
from metaformer.engine.checkpoint import load_checkpoint
from metaformer.engine.data import DATASETS, register_dataset
from metaformer.engine.loop import train_one_epoch
from metaformer.engine.packed import PackedRun, seed_config, seed_dir, train_packed_epoch
from metaformer.engine.packed_bench import measure
from metaformer.engine.packing import PackedStepper
from metaformer.engine.preemption import StopRequest
from metaformer.engine.trainer import Trainer
from metaformer.errors import ConfigError
from tests.signals import register_signalling

# The mini experiment's model (poolformer_cpu: GroupNorm, GELU, 28 px, one channel) cut to one block a stage and
# narrow stages, on synthetic data; the mini's settings: fp32, channels-last, AdamW with weight decay.
TINY = [
    "model=poolformer_cpu",
    "model.depths=[1,1,1,1]",
    "model.dims=[8,16,24,32]",
    "data=synthetic",
    "data.img_size=28",
    "data.in_chans=1",
    "data.num_train=96",
    "data.num_val=32",
    "trainer.batch_size=16",
    "trainer.threads=1",
    "trainer.precision=fp32",
    "trainer.channels_last=true",
    "optim.lr=3e-3",
]
ROW_KEYS = ("epoch", "lr", "train_loss", "val_loss", "top1", "top5")


def rows_of(folder: Path) -> list[dict[str, str]]:
    header, *rows = (folder / "metrics.csv").read_text().splitlines()
    return [
        {k: v for k, v in zip(header.split(","), r.split(","), strict=True) if k in ROW_KEYS} for r in rows
    ]


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder / "last.pt")["state_dict"]


def test_packed_seeds_match_their_separate_runs_step_for_step(tmp_path, compose_cfg):
    # Per-seed clipping at a norm the first steps exceed, AdamW with decay on weights only: both must carry over.
    cfg = compose_cfg(*TINY, "trainer.pack_seeds=2", "trainer.grad_clip=0.5", "trainer.ema=true", "trainer.epochs=1",
                      f"output_dir={tmp_path / 'packed'}")  # fmt: skip
    spec, dist, steps = validate(cfg), D.init_distributed("cpu"), 5
    separate = []
    for seed in (0, 1):
        own = seed_config(cfg, seed, tmp_path / "separate")
        Path(own.output_dir).mkdir(parents=True)
        t = Trainer(own, spec, dist, Path(own.output_dir), time.time())
        losses, loss_fn = [], t.step.loss_fn
        t.step.loss_fn = lambda out, y, f=loss_fn, seen=losses: seen.append(f(out, y)) or seen[-1]
        t.parts.data.train.set_epoch(0)
        train_one_epoch(t.step, t.parts.data.train, steps, log_interval=1)
        separate.append((torch.tensor([loss.item() for loss in losses]), t.step.module, t.step.ema.module))

    folders = [seed_dir(tmp_path / "packed", s) for s in (0, 1)]
    for folder in folders:
        folder.mkdir(parents=True)
    configs = [seed_config(cfg, s, tmp_path / "packed") for s in (0, 1)]
    members = PackedRun(configs, spec, dist, folders, time.time(), StopRequest()).members
    s0 = members[0].step
    pack = PackedStepper([t.step.module for t in members], [t.step.optimizer for t in members], s0.loss_fn,
                         channels_last=True, grad_clip=s0.grad_clip, emas=[t.step.ema for t in members])  # fmt: skip
    # The unpacked optimizer's groups: no weight decay on norms, biases and layer scales.
    names = {id(p): n for n, p in members[0].step.module.named_parameters()}
    expected = [
        (g["weight_decay"], sorted(names[id(p)] for p in g["params"])) for g in s0.optimizer.param_groups
    ]
    packed_names = {id(p): n for n, p in pack.params.items()}
    groups = [(g["weight_decay"], sorted(packed_names[id(p)] for p in g["params"])) for g in pack.optimizer.param_groups]  # fmt: skip
    assert groups == expected and {wd for wd, _ in groups} == {0.0, 0.05}
    for t in members:
        t.parts.data.train.set_epoch(0)
    losses = []
    train_packed_epoch(pack, [t.step for t in members], [t.parts.data.train for t in members], steps,
                       log_interval=1, on_step=lambda i, k_losses: losses.append(k_losses))  # fmt: skip
    pack.unpack()
    packed = torch.stack(losses)  # (steps, seeds)
    for k, (alone, model, ema) in enumerate(separate):
        # The same arithmetic in other kernels (vmap's batched matmuls and grouped convolutions): the losses
        # agree to a few float32 ulps (2.4e-7 at 2.3) and the weights, after Adam steps, to about 1e-5.
        torch.testing.assert_close(packed[:, k], alone, rtol=1e-5, atol=1e-6)
        assert not torch.equal(packed[0, 0], packed[0, 1])  # the seeds differ: their own weights and data
        mine = dict(members[k].step.module.named_parameters())
        for name, p in model.named_parameters():
            torch.testing.assert_close(mine[name], p, rtol=0, atol=5e-4)
        averaged = members[k].step.ema.module.state_dict()  # timm's EMA (with its warmup), per seed
        for name, v in ema.state_dict().items():
            torch.testing.assert_close(averaged[name], v, rtol=0, atol=5e-4)
    assert members[0].step.num_updates == steps and members[1].step.optimizer.state  # written back


def test_gradients_are_clipped_per_seed_as_clip_grad_norm_clips_each_seeds_own():
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)) for _ in range(3)]
    grads = [
        [torch.randn_like(p) * scale for p in m.parameters()]
        for m, scale in zip(models, (0.1, 1, 10), strict=True)
    ]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    pack = PackedStepper(models, optimizers, torch.nn.functional.cross_entropy, grad_clip=1.0)
    for k, (name, p) in itertools.product(range(3), pack.params.items()):
        index = [n for n, _ in models[k].named_parameters()].index(name)
        p.grad = p.grad if p.grad is not None else torch.zeros_like(p)
        p.grad[k] = grads[k][index]
    norms = pack.clip_()
    for k, m in enumerate(models):
        for p, g in zip(m.parameters(), grads[k], strict=True):
            p.grad = g.clone()
        torch.testing.assert_close(norms[k], torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0))
        for name, p in m.named_parameters():
            torch.testing.assert_close(pack.params[name].grad[k], p.grad)
    assert norms[0] < 1 < norms[2]  # one seed left alone, one clipped


@pytest.fixture
def signalling_synthetic():
    """`arm(signum, epoch, batch)`: the synthetic data set sends this process `signum` when that batch is read
    (tests/signals.py); `arm(None)`: the plain data set again (also after the test)."""
    original = DATASETS.get("synthetic")

    def arm(signum, epoch=0, batch=0):
        register_dataset("synthetic", original, override=True)
        if signum is not None:
            register_signalling("synthetic", signum, epoch, batch)

    yield arm
    arm(None)


def test_a_signalled_packed_run_resumes_exactly_and_an_unpacked_run_continues_a_seed(
    tmp_path, compose_cfg, signalling_synthetic
):
    run = [*TINY, "trainer.pack_seeds=2", "trainer.epochs=2", "trainer.limit_train_batches=3"]
    alone = tmp_path / "alone"
    record = train(compose_cfg(*run, f"output_dir={alone}"))
    assert record["status"] == "completed" and record["seeds"] == [0, 1]

    stopped = tmp_path / "stopped"
    signalling_synthetic(signal.SIGTERM, 2, 2)  # stops after batch 2 of epoch 2
    with pytest.raises(SystemExit) as e:
        train(compose_cfg(*run, f"output_dir={stopped}"))
    assert e.value.code == 128 + signal.SIGTERM
    for seed in (0, 1):
        res = read_results(seed_dir(stopped, seed))
        assert (res["status"], res["signal"], res["epochs"], res["seed"]) == ("preempted", "SIGTERM", 1, seed)
        ckpt = load_checkpoint(seed_dir(stopped, seed) / "last.pt")
        assert (ckpt["epoch"], ckpt["batch"], ckpt["num_updates"]) == (1, 2, 5)
    # An unpacked run of seed 1 continues from the packed run's last.pt (a copy of its folder).
    single = tmp_path / "single_seed_1"
    single.mkdir()
    (single / "last.pt").write_bytes((seed_dir(stopped, 1) / "last.pt").read_bytes())
    signalling_synthetic(None)
    one = train(compose_cfg(*TINY, "seed=1", "trainer.epochs=2", "trainer.limit_train_batches=3",
                            f"output_dir={single}"))  # fmt: skip

    # A kill between two seeds' checkpoints leaves them at different points: the one behind catches up alone.
    behind = tmp_path / "behind"
    shutil.copytree(stopped, behind)
    (seed_dir(behind, 1) / "last.pt").unlink()  # seed 1 starts over, seed 0 is at batch 2 of epoch 2
    assert train(compose_cfg(*run, f"output_dir={behind}"))["status"] == "completed"

    record = train(compose_cfg(*run, f"output_dir={stopped}"))  # the same command again
    assert record["status"] == "completed"
    for seed in (0, 1):
        res, ref = read_results(seed_dir(stopped, seed)), read_results(seed_dir(alone, seed))
        keys = ("status", "top1", "top5", "loss", "best_top1", "epochs", "seed", "packed_seeds")
        assert {k: res[k] for k in keys} == {k: ref[k] for k in keys}
        assert rows_of(seed_dir(stopped, seed)) == rows_of(seed_dir(alone, seed))
        a, b = weights_of(seed_dir(stopped, seed)), weights_of(seed_dir(alone, seed))
        assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    assert rows_of(seed_dir(behind, 0)) == rows_of(seed_dir(alone, 0))
    a, b = weights_of(seed_dir(behind, 1)), weights_of(seed_dir(alone, 1))
    assert all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)  # trained in a pack of one, then of two
    assert [r["epoch"] for r in rows_of(seed_dir(behind, 1))] == ["1", "2"]
    assert (one["status"], one["epochs"], one["seed"]) == ("completed", 2, 1)
    a, b = weights_of(single), weights_of(seed_dir(alone, 1))
    assert all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)  # packed and unpacked kernels round apart


def test_the_analysis_reads_a_packed_runs_folders_as_the_seeds_runs(tmp_path, cli):
    quick = [*TINY, "trainer.epochs=1", "trainer.limit_train_batches=2"]
    assert cli(*quick, "seed=5", "trainer.pack_seeds=3", f"hydra.run.dir={tmp_path / 'packed'}").code == 0
    assert cli(*quick, "seed=6", f"hydra.run.dir={tmp_path / 'single'}").code == 0
    assert sorted(p.name for p in (tmp_path / "packed").iterdir() if p.is_dir()) == [
        "seed_5",
        "seed_6",
        "seed_7",
    ]
    runs = collect_runs([tmp_path])
    assert sorted(runs["seed"]) == [5, 6, 6, 7] and set(runs["status"]) == {"completed"}
    assert runs["config"].nunique() == 1  # one configuration: trainer.pack_seeds is not part of it
    (repeat,) = runs.loc[runs["duplicate_of"].notna(), "seed"]  # seed 6 twice: one run per (config, seed)
    assert repeat == 6
    assert "seed 5: epoch 1/1" in (tmp_path / "packed" / "seed_5" / "run.log").read_text()  # its console log


def test_a_seed_whose_loss_turns_nan_ends_alone(tmp_path, compose_cfg):
    cfg = compose_cfg(*TINY, "trainer.pack_seeds=2", "trainer.epochs=1", f"output_dir={tmp_path}")
    folders = [seed_dir(tmp_path, s) for s in (0, 1)]
    for folder in folders:
        folder.mkdir()
    configs = [seed_config(cfg, s, tmp_path) for s in (0, 1)]
    members = PackedRun(
        configs, validate(cfg), D.init_distributed("cpu"), folders, time.time(), StopRequest()
    ).members
    pack = PackedStepper([t.step.module for t in members], [t.step.optimizer for t in members],
                         members[0].step.loss_fn, channels_last=True)  # fmt: skip
    with torch.no_grad():
        pack.params["head.weight"][1].fill_(math.nan)
    for t in members:
        t.parts.data.train.set_epoch(0)
    stats, _ = train_packed_epoch(pack, [t.step for t in members], [t.parts.data.train for t in members], 4,
                                  log_interval=2)  # fmt: skip
    assert stats[1].diverged and stats[1].diverged_batch == 1
    assert not stats[0].diverged and math.isfinite(stats[0].loss)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["model=poolformer_cpu_patch4"], "BatchNorm's running statistics cannot be vmapped"),
        (["model.drop_path_rate=0.1"], "DropPath draws random masks"),
        (["aug=light", "aug.mixup=0.2"], "Mixup/CutMix"),
        (["optim.opt=lamb"], "optim.opt=lamb is not elementwise"),
        (["trainer.compile=true"], "trainer.compile=false"),
        (["resume=/tmp"], "resume=/tmp is for one run"),
    ],
)
def test_what_a_pack_cannot_train_is_refused_in_one_line(compose_cfg, overrides, says):
    with pytest.raises(ConfigError, match=says.replace("(", r"\(")) as e:
        validate(compose_cfg(*TINY, "trainer.pack_seeds=2", *overrides))
    assert e.value.exit_code == 2 and "\n" not in str(e.value)


def test_a_refused_pack_exits_2_with_one_line(cli, tmp_path):
    out = cli(*TINY, "model=poolformer_cpu_patch4", "trainer.pack_seeds=4", f"hydra.run.dir={tmp_path / 'r'}")
    assert out.code == 2 and len(out.lines) == 1 and "norm=gn" in out.lines[0]


def test_the_benchmark_times_a_pack_against_separate_seeds():
    result = measure(k=2, batch_size=4, steps=1, rounds=2)
    assert result["ratio_median"] > 0 and len(result["ratios"]) == 2 and result["packed_img_per_s"] > 0


def test_a_pack_is_refused_in_an_unpacked_runs_folder_which_it_leaves_alone(
    tmp_path, compose_cfg, folder_snapshot
):
    (tmp_path / "last.pt").write_bytes(b"an unpacked run's checkpoint")
    before = folder_snapshot(tmp_path)
    with pytest.raises(ConfigError, match="holds an unpacked run"):
        train(compose_cfg(*TINY, "trainer.pack_seeds=2", "trainer.epochs=1", f"output_dir={tmp_path}"))
    assert folder_snapshot(tmp_path) == before
