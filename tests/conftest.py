"""Shared fixtures: composing a config in-process, running `python run.py` in-process or as a real process.

Most configuration and error tests call Hydra's compose API or run.py's own entry function (`cli`) in this
process, which costs milliseconds; `run_cli` and `processes` start real processes (about 5 s of imports each) and
are kept for the end-to-end paths: a real training run, runs killed or preempted by real signals, torchrun,
`--help` with only what run.py imports. Sweeps, resumed runs and the other launch paths run in-process.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
RUN = ROOT / "run.py"

# A run that takes a second or two: a small synthetic data set, one epoch of two batches.
QUICK = [
    "data=synthetic",
    "data.num_train=64",
    "data.num_val=32",
    "trainer.batch_size=16",
    "trainer.epochs=1",
    "trainer.limit_train_batches=2",
]


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# The suite's run folders take about 300 MB at a time under the temporary directory (passing tests' folders are
# deleted at teardown: pyproject.toml); below this, tests would fail on a full disk with messages that hide it.
MIN_FREE_BYTES = 1 << 30


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, in one line, when the disk the tests write to is nearly full."""
    where = tempfile.gettempdir()
    free = shutil.disk_usage(where).free
    if free < MIN_FREE_BYTES:
        pytest.exit(f"only {free / 2**30:.2f} GB free under {where}; the tests need about 1 GB", returncode=1)


@pytest.fixture(autouse=True)
def one_torch_thread() -> None:
    """Run each in-process test on one torch thread: the models here are tiny, and on a CPU shared with other
    jobs two OpenMP threads that wait on each other make a 20 ms forward and backward take seconds."""
    torch = sys.modules.get("torch")  # never imported here: the analysis tests run without torch
    if torch is not None:
        torch.set_num_threads(1)


@pytest.fixture
def fashion_mnist_present() -> Path:
    """Debian's Fashion-MNIST (`make data` installs it); the test is skipped where it is absent."""
    if not FASHION_MNIST.is_dir():
        pytest.skip(f"{FASHION_MNIST} is absent: apt-get install dataset-fashion-mnist")
    return FASHION_MNIST


@pytest.fixture
def quick() -> list[str]:
    """Overrides for a run of seconds (see QUICK)."""
    return list(QUICK)


# Composed configs by overrides, for this test process: conf/ does not change during a run, composing takes about
# 0.1 s and many tests compose the same rows; each test gets its own copy.
_COMPOSED: dict[tuple[str, ...], DictConfig] = {}


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """Compose conf/config.yaml with overrides, as `python run.py OVERRIDES` would (without Hydra's runtime)."""
    from metaformer.engine.command_line import normalize_argv

    def make(*overrides: str) -> DictConfig:
        if overrides not in _COMPOSED:
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                _COMPOSED[overrides] = compose("config", overrides=normalize_argv(list(overrides)))
        return copy.deepcopy(_COMPOSED[overrides])

    return make


@dataclass
class Outcome:
    """What `python run.py ARGS` did: its exit status and what it printed."""

    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """The non-blank lines of stderr."""
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def cli(capsys, monkeypatch) -> Callable[..., Outcome]:
    """Run run.py's entry function in this process (as `python run.py ARGS` would run); return its Outcome."""
    import run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def call(*args: str) -> Outcome:
        capsys.readouterr()
        try:
            run.cli(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return call


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: the project importable, wandb offline, no distributed leftovers."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HYDRA_FULL_ERROR", "RANK", "WORLD_SIZE", "LOCAL_RANK")
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    # One torch thread per run: on a CPU shared with other jobs, two OpenMP threads that wait on each other
    # slow a run down tenfold, and these runs are too small to gain from a second thread anyway.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("WANDB_MODE", "offline")
    env["WANDB_SILENT"] = "true"
    env.update(extra)
    return env


class Processes:
    """`python run.py ARGS` as real processes: started without waiting (independent runs share the cores),
    then finished together."""

    run_py = RUN
    quick = QUICK
    env = staticmethod(cli_env)

    @staticmethod
    def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start `python run.py ARGS` in `cwd`."""
        return subprocess.Popen(
            [sys.executable, str(RUN), *args], cwd=cwd, env=env or cli_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    @staticmethod
    def finish(
        procs: dict[str, subprocess.Popen], timeout: float = 300
    ) -> dict[str, subprocess.CompletedProcess]:
        """Wait for started runs; return each as a CompletedProcess (returncode, stdout, stderr)."""
        done = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=timeout)
            done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        return done


@pytest.fixture
def processes() -> type[Processes]:
    """Real `python run.py` processes (see Processes), for the end-to-end tests."""
    return Processes


@pytest.fixture
def run_cli(tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """Run `python run.py ARGS` as a real process in tmp_path; return the completed process."""

    def run(
        *args: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(RUN), *args], cwd=tmp_path, env=env or cli_env(), capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    return run


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes), for comparing a folder before and after."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def folder_snapshot() -> Callable[[Path], dict[str, bytes]]:
    """`snapshot` as a fixture."""
    return snapshot
