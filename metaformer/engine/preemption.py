"""Preemption: the signals that stop a run so it can continue later, and SLURM's requeue.

SIGTERM (SLURM's signal when it preempts or cancels a job) and SIGUSR1 (`sbatch --signal=USR1@120`, ahead of the
time limit) are caught while a run trains: `StopRequest` only records them, and the trainer stops after the
current optimizer step, saves last.pt there and ends the run as `preempted`. Under submitit
(hydra-submitit-launcher) its own preemption signal is caught too, and handed on to submitit's handler after the
checkpoint, which requeues the job. With `trainer.requeue=true` under plain SLURM, `requeue` asks `scontrol` to
put the job back in the queue; a signal that goes on to an earlier handler (submitit's) is requeued by that
handler alone, since a second `scontrol requeue` of the same job fails.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# The signals that preempt a run: SLURM's SIGTERM, and SIGUSR1 as `sbatch --signal=USR1@90` sends it.
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """While entered, SIGTERM and SIGUSR1 (and submitit's signal, under submitit) only record that a stop was
    asked for; training stops at the next optimizer step and saves. A no-op off the main thread."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    @staticmethod
    def submitit_signal() -> int | None:
        """submitit's preemption signal (its handler checkpoints and requeues on it) when submitit runs this job."""
        if not os.environ.get("SUBMITIT_EXECUTOR"):
            return None
        name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
        return getattr(signal, f"SIG{name}", None)

    @classmethod
    def signals(cls) -> list[int]:
        """The signals caught: PREEMPT_SIGNALS, plus submitit's preemption signal when submitit runs this job."""
        caught = list(PREEMPT_SIGNALS)
        extra = cls.submitit_signal()
        if extra is not None and extra not in caught:
            caught.append(extra)
        return caught

    def __enter__(self) -> StopRequest:
        for sig in self.signals():
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. joblib's threading backend)
                break
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    @property
    def name(self) -> str:
        """The received signal's name, e.g. SIGUSR1."""
        return signal.Signals(self.signum).name if self.signum is not None else "none"

    @property
    def earlier_handler(self) -> Callable[[int, Any], Any] | None:
        """The Python handler installed before ours for the received signal (submitit's), if any."""
        previous = self.previous.get(self.signum) if self.signum is not None else None
        return previous if callable(previous) else None

    @property
    def requeued_by_earlier_handler(self) -> bool:
        """True when the earlier handler requeues the job itself: submitit's, for its preemption signal. (submitit
        only logs and bypasses SIGTERM, e.g. when a site signals the batch script and SLURM ends the step.)"""
        return self.earlier_handler is not None and self.signum == self.submitit_signal()

    def hand_on(self) -> None:
        """Call the handler that was installed before ours for the received signal (submitit's requeue)."""
        handler = self.earlier_handler
        if handler is not None:
            handler(self.signum, None)


def slurm_job_id() -> str | None:
    """The SLURM job to requeue: `ARRAYJOB_TASK` for an array task, else SLURM_JOB_ID; None outside SLURM."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def requeue(job: str) -> str | None:
    """`scontrol requeue JOB`; return None when it worked, else the problem in one line."""
    command = ["scontrol", "requeue", job]
    log.info("requeueing SLURM job %s: %s", job, " ".join(command))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        problem = None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")
    except (OSError, subprocess.SubprocessError) as e:
        problem = f"{type(e).__name__}: {e}"
    if problem:
        log.warning("could not requeue SLURM job %s: %s", job, problem)
        return " ".join(problem.split())
    return None
