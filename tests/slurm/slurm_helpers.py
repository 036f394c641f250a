"""A real one-node SLURM for the cluster-path tests (scripts/slurm-local.sh), and sweeps submitted to it.

The `slurm` fixture (made visible by conftest.py) uses the cluster when it is up (`make test` starts it first;
after `sudo bash scripts/slurm-local.sh up` any user can run these tests), else brings it up, as root, and takes
it down at the end. When it is not up and cannot start (no root, no packages) the tests skip with the reason; in
CI (CI=true) they fail instead: CI runs as root on a machine that can install SLURM.
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"
STATE = Path(os.environ.get("SLURM_LOCAL_DIR", "/tmp/slurm-local"))

# The README's launcher settings for the local cluster: partition `debug`, one CPU per job.
LAUNCHER = [
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
]
# A run of seconds: a small synthetic data set, one epoch of two batches.
TINY = ["data=synthetic", "data.num_train=64", "data.num_val=32", "trainer.batch_size=16", "trainer.epochs=1"]
TINY += ["trainer.limit_train_batches=2"]
# Runs long enough to be signalled in the middle (16 batches an epoch; add trainer.epochs).
LONGER = ["data=synthetic", "data.num_train=256", "data.num_val=32", "trainer.batch_size=16"]
# The timeouts below only bound a hang: `make test-slurm` runs the tests side by side, so a sweep's jobs may wait
# in the queue behind another test's, and a CI machine may be several times slower than a workstation.
STILL_RUNNING = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUSPENDED", "RESIZING"}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the local SLURM cluster is needed in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm() -> Iterator[dict[str, str]]:
    """The environment for commands that talk to the local cluster (SLURM_CONF, the project on PYTHONPATH)."""
    was_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    if not was_up:
        if os.geteuid() != 0:
            _unavailable(
                "the local SLURM cluster is not up and needs root: sudo bash scripts/slurm-local.sh up"
            )
        up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=600)
        if up.returncode != 0:
            _unavailable(f"scripts/slurm-local.sh up failed: {(up.stderr or up.stdout).strip()[-500:]}")
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RANK", "WORLD_SIZE")}
    env["SLURM_CONF"] = str(STATE / "slurm.conf")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"  # two jobs share the two cores; one torch thread each
    env["WANDB_MODE"] = "offline"
    yield env
    if not was_up:
        subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, timeout=120)


def start_sweep(env: dict[str, str], cwd: Path, *overrides: str) -> subprocess.Popen:
    """Start the README's sweep command, `python run.py -m hydra/launcher=submitit_slurm ... OVERRIDES`."""
    argv = [sys.executable, str(ROOT / "run.py"), "-m", *LAUNCHER, *overrides]
    return subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def sweep(
    env: dict[str, str], cwd: Path, *overrides: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the sweep command to its end; stdout holds stdout and stderr."""
    proc = start_sweep(env, cwd, *overrides)
    out, _ = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def slurm_job(sweep_dir: Path, job: int, timeout: float = 180) -> str:
    """The SLURM id (ARRAY_TASK) of Hydra job number `job`, from the folder submitit makes for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted((sweep_dir / ".submitit").glob(f"*_{job}"))
        if found:
            return found[-1].name
        time.sleep(0.2)
    raise AssertionError(f"no SLURM job for job {job} under {sweep_dir / '.submitit'}")


def wait_until(condition, what: str, timeout: float = 300, proc: subprocess.Popen | None = None) -> None:
    """Poll `condition()` until true; fail with `what` after `timeout` s, or if `proc` ended before."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}:\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def epochs_done(run_dir: Path) -> int:
    """Rows in the run's metrics.csv: its finished epochs."""
    metrics = run_dir / "metrics.csv"
    return max(0, len(metrics.read_text().splitlines()) - 1) if metrics.exists() else 0


def sacct_states(env: dict[str, str], job: str) -> list[str]:
    """Every state `sacct` recorded for a job, requeues included (--duplicates), oldest first."""
    out = subprocess.run(
        ["sacct", "--duplicates", "-X", "-n", "-P", "-o", "State", "-j", job],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def wait_for_jobs(env: dict[str, str], job: str, timeout: float = 300) -> None:
    """Wait until SLURM has no job of `job` (an array id covers its tasks) pending or running."""

    def ended() -> bool:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], env=env, capture_output=True, text=True)
        return not set(out.stdout.split()) & STILL_RUNNING

    wait_until(ended, f"SLURM job {job} to end", timeout)
