"""Run `python run.py ...` the way a user does, in a subprocess with its own working folder (helpers + fixture)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "run.py"

# A run that takes seconds: a small synthetic data set, one epoch of two batches.
QUICK = [
    "data=synthetic",
    "data.num_train=64",
    "data.num_val=32",
    "trainer.batch_size=16",
    "trainer.epochs=1",
    "trainer.limit_train_batches=2",
]


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
    env.setdefault("METAFORMER_THREADS", "1")
    env.setdefault("WANDB_MODE", "offline")
    env["WANDB_SILENT"] = "true"
    env.update(extra)
    return env


def command(*args: str) -> list[str]:
    """The argv of `python run.py ARGS`."""
    return [sys.executable, str(RUN), *args]


def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `python run.py ARGS` in `cwd` without waiting (so independent runs share the CPU's cores)."""
    return subprocess.Popen(
        command(*args),
        cwd=cwd,
        env=env or cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: dict, timeout: float = 300) -> dict[str, subprocess.CompletedProcess]:
    """Wait for started runs; return each as a CompletedProcess (returncode, stdout, stderr)."""
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=timeout)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


@pytest.fixture
def run_cli(tmp_path):
    """Run `python run.py ARGS` in tmp_path; return the completed process (stdout, stderr, returncode)."""

    def run(
        *args: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            command(*args),
            cwd=tmp_path,
            env=env or cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
