"""Every mistake the issue lists stops `python run.py` before training, with one line on stderr and no traceback.

The cases run as concurrent subprocesses (each pays for importing torch), then each is checked on its own. Words
in capitals in a case's arguments are files the fixture makes: a file where a folder should be, Fashion-MNIST
copies with one file truncated, a checkpoint that would run code, one of another architecture.
"""

import gzip
import os
import subprocess

import pytest
import torch
from cli_helpers import QUICK, cli_env, command

from metaformer import create_model
from metaformer.engine.data import FASHION_MNIST_DEFAULT
from metaformer.engine.data.datasets import FASHION_MNIST_FILES

TRAIN_IMAGES, VAL_LABELS = FASHION_MNIST_FILES["train_images"], FASHION_MNIST_FILES["val_labels"]

CASES = {
    "unknown mixer": (["mixer=poool"], 2, "unknown mixer 'poool'; choose from: attn, dwconv"),
    "mixer list too short": (["mixer=[pool,pool,attn]"], 2, "has 3 entries but the model has 4 stages"),
    "unknown norm": (["norm=layernorm"], 2, "unknown norm 'layernorm'; choose from: bn, gn"),
    "norm list too long": (
        ["norm=[gn,gn,bn,bn,bn]"],
        2,
        "norm=[gn,gn,bn,bn,bn] has 5 entries but the model has 4",
    ),
    "a per-stage model list too short": (
        ["+model.dims=[32,64,128]"],
        2,
        "model.dims=[32,64,128] has 3 entries but",
    ),
    "unknown act": (["act=swish"], 2, "unknown act 'swish'; choose from: gelu"),
    "unknown model": (
        ["model=poolformer_s13"],
        2,
        "unknown model 'poolformer_s13'; choose from: poolformer_cpu",
    ),
    "unknown data": (
        ["data=mnist"],
        2,
        "unknown data 'mnist'; choose from: cifar10, cifar100, fashion_mnist",
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
        "unknown mixer 'gated' in mixer_opt",
    ),
    "a resolution-bound mixer at another size": (
        [*QUICK, "mixer=[pool,pool,mlp,mlp]", "+model.img_size=64"],
        2,
        "model.img_size=64 does not fit data.img_size=32: mixer 'mlp' was built for a 8x8 feature map but "
        "received 4x4",
    ),
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
        [*QUICK, "resume=EVIL_PT"],
        1,
        "refusing to load EVIL_PT: not a weights-only checkpoint",
    ),
    "a checkpoint of another architecture": (
        [*QUICK, "resume=ATTN_PT"],
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
def outcomes(tmp_path_factory):
    base = tmp_path_factory.mktemp("errors")
    names = _placeholders(base)
    procs = {}
    for name, (args, _, _) in CASES.items():
        if "TRUNCATED" in " ".join(args) and "TRUNCATED_GZ" not in names:
            continue  # no Fashion-MNIST here to copy
        cwd = base / name.replace(" ", "_")
        cwd.mkdir()
        args = [_fill(a, names) for a in args]
        procs[name] = (cwd, subprocess.Popen(command(*args), cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True))  # fmt: skip
    results = {"names": names, "marker": base / "the_code_ran"}
    for name, (cwd, proc) in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (cwd, proc.returncode, out, err)
    return results


@pytest.mark.parametrize("case", list(CASES))
def test_mistake_exits_with_one_clear_line(outcomes, case):
    args, code, expected = CASES[case]
    if case not in outcomes:
        pytest.skip(f"{FASHION_MNIST_DEFAULT} is absent")
    cwd, returncode, _, stderr = outcomes[case]
    expected = _fill(expected, outcomes["names"])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == code, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("run.py: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in stderr
    assert not list(cwd.rglob("metrics.csv"))  # nothing trained


def test_the_refused_checkpoint_carries_code_that_did_not_run(outcomes):
    assert "a checkpoint that would run code" in outcomes
    assert not outcomes["marker"].exists()  # run.py refused it before anything in it ran
    torch.load(outcomes["names"]["EVIL_PT"], weights_only=False)  # what an unguarded loader would do
    assert outcomes["marker"].read_text() == "the code ran"
