"""Every mistake the issue lists stops `python run.py` before training, with one line on stderr and no traceback.

The cases run as concurrent subprocesses (each pays for importing torch), then each is checked on its own.
"""

import subprocess

import pytest
from cli_helpers import cli_env, command

CASES = {
    "unknown mixer": (["mixer=poool"], 2, "unknown mixer 'poool'; choose from: attn, dwconv"),
    "mixer list too short": (["mixer=[pool,pool,attn]"], 2, "has 3 entries but the model has 4 stages"),
    "unknown norm": (["norm=layernorm"], 2, "unknown norm 'layernorm'; choose from: bn, gn"),
    "unknown act": (["act=swish"], 2, "unknown act 'swish'; choose from: gelu"),
    "zero epochs": (["trainer.epochs=0"], 2, "trainer.epochs must be a positive integer, got 0"),
    "negative epochs": (["trainer.epochs=-3"], 2, "trainer.epochs must be a positive integer, got -3"),
    "missing imagenet root": (
        ["data=imagenet", "data.root=/nonexistent/imagenet"],
        1,
        "/nonexistent/imagenet",
    ),
    "imagenet without a root": (["data=imagenet"], 2, "data.root"),
    "missing fashion-mnist": (["data.root=/nonexistent/fmnist"], 1, "/nonexistent/fmnist"),
    "unwritable output": (["hydra.run.dir=BLOCKER/run"], 1, "cannot write the output folder"),
    "launcher not installed": (["hydra/launcher=submitit_slurm"], 1, "pip install hydra-submitit-launcher"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    base = tmp_path_factory.mktemp("errors")
    blocker = base / "blocker"
    blocker.write_text("a file, not a folder")
    procs = {}
    for name, (args, _, _) in CASES.items():
        cwd = base / name.replace(" ", "_")
        cwd.mkdir()
        args = [a.replace("BLOCKER", str(blocker)) for a in args]
        procs[name] = (cwd, subprocess.Popen(command(*args), cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True))  # fmt: skip
    results = {}
    for name, (cwd, proc) in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (cwd, proc.returncode, out, err)
    return results


@pytest.mark.parametrize("case", list(CASES))
def test_mistake_exits_with_one_clear_line(outcomes, case):
    _, code, expected = CASES[case]
    cwd, returncode, _, stderr = outcomes[case]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == code, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("run.py: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in stderr
    assert not list(cwd.rglob("metrics.csv"))  # nothing trained
