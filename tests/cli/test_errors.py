"""Every mistake a user is likely to make stops `python run.py` before training, with one line on stderr, the
right exit status (2: a bad value, 1: the environment) and no traceback, and nothing trained (a new run folder
gets only a `failed` results.json with the error).

The cases call run.py's entry function in this process (the `cli` fixture); tests/cli/test_train.py runs the
real process. Words in capitals in a case's arguments are files the fixture makes: a file where a folder should
be, Fashion-MNIST copies with one file truncated, a checkpoint that would run code, one of another architecture.
"""

import gzip
import json
import os
from pathlib import Path

import pytest
import torch

from metaformer import create_model
from metaformer.engine import command_line
from metaformer.engine.data import FASHION_MNIST_DEFAULT
from metaformer.engine.data.datasets import FASHION_MNIST_FILES

TRAIN_IMAGES, VAL_LABELS = FASHION_MNIST_FILES["train_images"], FASHION_MNIST_FILES["val_labels"]

CASES = {
    "unknown mixer": (["mixer=poool"], 2, "unknown mixer 'poool'; registered: attn, dwconv"),
    "mixer list too short": (["mixer=[pool,pool,attn]"], 2, "has 3 entries but the model has 4 stages"),
    "unknown norm": (["norm=layernorm"], 2, "unknown norm 'layernorm'; registered: bn, gn"),
    "norm list too long": (
        ["norm=[gn,gn,bn,bn,bn]"],
        2,
        "norm has 5 entries but the model has 4 stages: give one value or a list of 4",
    ),
    "a per-stage model list too short": (
        ["+model.dims=[32,64,128]"],
        2,
        "dims has 3 entries but the model has 4 stages",
    ),
    "unknown act": (["act=swish"], 2, "unknown act 'swish'; registered: "),
    "unknown model": (
        ["model=poolformer_s13"],
        2,
        "unknown model 'poolformer_s13'; choose from: ",
    ),
    "unknown data": (
        ["data=mnist"],
        2,
        "unknown data 'mnist'; choose from: cifar10, cifar100, fashion_mnist",
    ),
    "a negative learning rate": (["optim.lr=-1"], 2, "optim (adamw): Invalid learning rate: -1.0"),
    "two of Hydra's modes": (
        ["-m", "seed=0,1", "--info"],
        2,
        "--multirun and --info cannot be combined: give one of them",
    ),
    "unknown model in a sweep": (
        ["-m", "model=poolformer_s12,poolformer_x"],
        2,
        "unknown model 'poolformer_x'",
    ),
    "an option pool does not take": (
        ["+mixer_options.pool.kernel_size=3"],
        2,
        "mixer 'pool' has no option 'kernel_size' (mixer_options.pool.kernel_size); its options: pool_size, "
        "subtract_input",
    ),
    "a misspelt mixer option": (
        ["mixer_options.pool.pool_sise=5"],
        2,
        "mixer 'pool' has no option 'pool_sise'",
    ),
    "options of an unknown mixer": (
        ["mixer_options.gated.kernel_size=5"],
        2,
        "mixer_options has an entry for unknown mixer 'gated'; registered: attn",
    ),
    "BatchNorm with one value per channel": (
        ["QUICK", "norm=bn", "trainer.batch_size=1"],
        2,
        "norm=bn normalises over the batch, and trainer.batch_size=1 at stage 4's 1x1 grid gives it one value",
    ),
    "a resolution-bound mixer at another size": (
        ["QUICK", "mixer=[pool,pool,mlp,mlp]", "+model.img_size=64"],
        2,
        "model.img_size=64 does not fit data.img_size=32: mixer 'mlp' was built for a 4x4 feature map but "
        "received 2x2",
    ),
    "a value of the wrong type": (
        ["optim.lr=abc"],
        2,
        "'abc' of type 'str' could not be converted to Float; full_key: optim.lr",
    ),
    "a float where an int goes": (["trainer.epochs=1.5"], 2, "full_key: trainer.epochs"),
    "a value of the wrong type in a sweep": (["-m", "seed=0,x"], 2, "to Integer; full_key: seed"),
    "an option the model does not have": (
        ["+model.bogus=1"],
        2,
        "unknown key model.bogus; model takes: name",
    ),
    "an option the trainer does not have": (
        ["+trainer.bogus=1"],
        2,
        "unknown key trainer.bogus; trainer takes: epochs",
    ),
    "a misspelt optimizer option": (
        ["+optim.weight_decy=0.1"],
        2,
        "unknown key optim.weight_decy; did you mean optim.weight_decay? (optim takes: opt, lr",
    ),
    "an unset value": (["trainer.epochs=???"], 2, "trainer.epochs is not set (a data set's recipe"),
    "zero epochs": (["trainer.epochs=0"], 2, "trainer.epochs must be a positive integer, got 0"),
    "negative epochs": (["trainer.epochs=-3"], 2, "trainer.epochs must be a positive integer, got -3"),
    "zero batch size": (["trainer.batch_size=0"], 2, "trainer.batch_size must be a positive integer, got 0"),
    "negative batch size": (
        ["trainer.batch_size=-8"],
        2,
        "trainer.batch_size must be a positive integer, got -8",
    ),
    "missing imagenet root": (
        ["data=imagenet", "data.root=/nonexistent/imagenet"],
        1,
        "/nonexistent/imagenet",
    ),
    "imagenet without a root": (["data=imagenet"], 2, "data.root"),
    "missing fashion-mnist": (["data.root=/nonexistent/fmnist"], 1, "/nonexistent/fmnist"),
    "truncated gzip file": (
        ["data.root=TRUNCATED_GZ"],
        1,
        f"TRUNCATED_GZ/{TRAIN_IMAGES}.gz is truncated or corrupt",
    ),
    "truncated IDX file": (
        ["data.root=TRUNCATED_IDX"],
        1,
        f"TRUNCATED_IDX/{VAL_LABELS} is truncated or corrupt",
    ),
    "unwritable output": (["hydra.run.dir=BLOCKER/run"], 1, "cannot write the output folder"),
    "launcher not installed": (["hydra/launcher=submitit_slurm"], 1, "pip install hydra-submitit-launcher"),
    "a checkpoint that would run code": (
        ["QUICK", "resume=EVIL_PT"],
        1,
        "refusing to load EVIL_PT: not a weights-only checkpoint",
    ),
    "a checkpoint of another architecture": (
        ["QUICK", "norm=gn", "resume=ATTN_PT"],
        2,
        "ATTN_PT does not match the configured model (it was trained with model=poolformer_cpu "
        "mixer=[pool,pool,attn,attn] norm=gn): 18 unexpected keys [stages.2.blocks.0.token_mixer.qkv.weight",
    ),
}


class RunsCode:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('the code ran')",)


def _fashion_copy(folder, truncate: str, gz: bool) -> None:
    """Fashion-MNIST's four files in `folder` (links), with `truncate` a truncated copy (.gz, or decompressed)."""
    folder.mkdir()
    for stem in FASHION_MNIST_FILES.values():
        source = FASHION_MNIST_DEFAULT / f"{stem}.gz"
        if stem != truncate:
            os.symlink(source, folder / source.name)
        elif gz:
            data = source.read_bytes()
            (folder / source.name).write_bytes(data[: len(data) // 2])
        else:
            data = gzip.decompress(source.read_bytes())
            (folder / stem).write_bytes(data[:-100])


def _placeholders(base):
    blocker = base / "blocker"
    blocker.write_text("a file, not a folder")
    evil = base / "evil.pt"
    torch.save({"state_dict": {}, "payload": RunsCode(base / "the_code_ran")}, evil)
    attn = create_model(
        "poolformer_cpu", mixer=["pool", "pool", "attn", "attn"], num_classes=10, in_chans=3, img_size=32
    )
    attn_pt = base / "attn.pt"
    config = {"model": {"name": "poolformer_cpu"}, "mixer": ["pool", "pool", "attn", "attn"], "norm": "gn"}
    torch.save({"state_dict": attn.state_dict(), "optimizer": {}, "num_updates": 3, "epoch": 1, "config": config},
               attn_pt)  # fmt: skip
    names = {"BLOCKER": blocker, "EVIL_PT": evil, "ATTN_PT": attn_pt}
    if FASHION_MNIST_DEFAULT.is_dir():
        _fashion_copy(base / "truncated_gz", TRAIN_IMAGES, gz=True)
        _fashion_copy(base / "truncated_idx", VAL_LABELS, gz=False)
        names.update(TRUNCATED_GZ=base / "truncated_gz", TRUNCATED_IDX=base / "truncated_idx")
    return {k: str(v) for k, v in names.items()}


def _fill(text: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        text = text.replace(key, value)
    return text


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    """The files the cases name, made once."""
    base = tmp_path_factory.mktemp("errors")
    return {**_placeholders(base), "MARKER": str(base / "the_code_ran")}


@pytest.mark.parametrize("case", list(CASES))
def test_mistake_exits_with_one_clear_line(case, names, cli, quick, tmp_path, monkeypatch):
    args, code, expected = CASES[case]
    args = [a for arg in args for a in (quick if arg == "QUICK" else [arg])]  # QUICK: a run of seconds
    if "TRUNCATED" in " ".join(args) and "TRUNCATED_GZ" not in names:
        pytest.skip(f"{FASHION_MNIST_DEFAULT} is absent")
    monkeypatch.chdir(tmp_path)  # Hydra's outputs/ and multirun/ go here
    if case == "launcher not installed":  # it may be installed here: make it look absent
        plugins = {
            **command_line.LAUNCHER_PLUGINS,
            "submitit_slurm": ("hydra_plugins.absent_launcher", "hydra-submitit-launcher"),
        }
        monkeypatch.setattr(command_line, "LAUNCHER_PLUGINS", plugins)
    outcome = cli(*(_fill(a, names) for a in args))
    expected = _fill(expected, names)
    assert outcome.code == code, outcome.err
    assert len(outcome.lines) == 1, outcome.err
    assert outcome.lines[0].startswith("run.py: error: ") and expected in outcome.lines[0], outcome.lines[0]
    assert "Traceback" not in outcome.err
    assert not list(tmp_path.rglob("metrics.csv")) and not list(tmp_path.rglob("last.pt"))  # nothing ran
    for path in tmp_path.rglob("results.json"):  # a new run folder records the refusal
        record = json.loads(path.read_text())
        assert record["status"] == "failed" and record["error"] in outcome.lines[0], record
    if case == "a checkpoint that would run code":
        marker = Path(names["MARKER"])
        assert not marker.exists()  # run.py refused it before anything in it ran
        torch.load(names["EVIL_PT"], weights_only=False)  # what an unguarded loader would do
        assert marker.read_text() == "the code ran"
