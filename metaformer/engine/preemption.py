"""Preemption: the signals that stop a run so it can continue later, when to stop, and SLURM's requeue.

SIGTERM (SLURM's signal when it preempts or cancels a job) and SIGUSR1 (`sbatch --signal=USR1@120`, 120 s ahead
of the time limit) are caught while a run trains: `StopRequest` only records them; `StopProtocol` tells the
trainer after each optimizer step whether to stop (every rank gets the same answer), the trainer saves last.pt
there and ends the run as `preempted`, and `StopProtocol.exit` requeues the job and exits 128 + the signal. Under submitit
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
from pathlib import Path
from typing import Any, NoReturn

import torch

from metaformer.engine import distributed as D
from metaformer.engine.results import write_results

log = logging.getLogger(__name__)

# The signals that preempt a run: SLURM's SIGTERM, and SIGUSR1 as `sbatch --signal=USR1@120` sends it.
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


class StopProtocol:
    """When a run stops for a signal, and what happens after: every rank agrees on a stop (under DDP the answer
    costs a collective, so it is asked every `every` optimizer steps), and a stopped run requeues its SLURM job
    when asked to (`requeue`) or hands the signal on to submitit's handler, then exits 128 + the signal."""

    def __init__(self, request: StopRequest, dist: D.DistInfo, every: int, requeue: bool) -> None:
        self.request, self.dist, self.every, self.requeue = request, dist, every, requeue
        self._steps = 0

    @property
    def name(self) -> str:
        """The received signal's name (SIGTERM, ...), 'none' before one."""
        return self.request.name

    def after_step(self) -> bool:
        """Asked after each optimizer step: stop here?"""
        if not self.dist.distributed:
            return self.request.signum is not None
        self._steps += 1
        return self._steps % self.every == 0 and self.agreed()

    def agreed(self) -> bool:
        """True on every rank when a stop signal reached any rank (a collective under DDP)."""
        asked = self.request.signum is not None
        if not self.dist.distributed:
            return asked
        flag = torch.tensor([1.0 if asked else 0.0], device=self.dist.device)
        return D.all_reduce_sum(flag).item() > 0

    def exit(self, record: dict[str, Any], run_dir: Path) -> NoReturn:
        """After the `preempted` record was written: requeue the job if asked (plain SLURM) or hand the signal on
        (submitit requeues), then exit 128 + the signal. A signal whose earlier handler requeues the job
        (submitit's, for its own signal) is not requeued here too."""
        signum = self.request.signum
        job = slurm_job_id()
        handed_on = self.request.requeued_by_earlier_handler
        if self.requeue and job and self.dist.is_main and signum is not None and not handed_on:
            problem = requeue(job)
            record = {**record, "requeued": problem is None, "requeue_job": job}
            if problem:
                record["requeue_error"] = problem
            write_results(run_dir, record)
        if signum is not None:
            self.request.hand_on()
        raise SystemExit(128 + (signum if signum is not None else signal.SIGINT))


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
