"""What the adaptive study and the search share: a Hydra sweeper that launches batches of jobs through whatever
launcher is configured (basic, joblib, submitit), names each job's run folder itself (`hydra.sweep.subdir`), reads
the jobs' `results.json` back from their folders (so it works the same under every launcher, in-process or not)
and keeps its state in the sweep folder, so that the same command run again continues: a job whose folder holds
a run that ended (completed, diverged, failed) is not run again, and one that was stopped (no results.json, or
`running` / `preempted`) is launched again into its folder, where run.py resumes it from `last.pt`.

A sweeper's options are `hydra.sweeper.*` (conf/hydra/sweeper/NAME.yaml): the top level of the run config is the
run's own (metaformer/engine/schema.py refuses keys it does not know). Bad input ends the command with one line
and exit status 2 (`metaformer.errors.fail`), before any job is launched.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from metaformer.errors import closest_key, fail, one_line

log = logging.getLogger(__name__)

# results.json statuses of a run that ended: its job is not launched again.
ENDED = ("completed", "diverged", "failed")


@dataclass(frozen=True)
class Job:
    """One training run: its folder under the sweep folder, its task overrides (the command's fixed ones and its
    own) and, where the sweeper knows it, its expected cost (any unit: GMACs, say), which orders a batch."""

    subdir: str
    overrides: tuple[str, ...]
    cost: float = 0.0


def slug(text: str) -> str:
    """A folder name for an override value: letters, digits, `_`, `.` and `-` (`[pool,pool,attn,attn]` ->
    `pool-pool-attn-attn`)."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-.") or "x"


def refuse(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit status 2."""
    fail(message, 2)


def check_options(sweeper: str, given: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse (one line, exit 2) an option `hydra.sweeper.KEY` that sweeper `sweeper` does not take."""
    known = sorted(known)
    for key in given:
        guess = closest_key(key, known)
        hint = f"did you mean hydra.sweeper.{guess}? " if guess else ""
        refuse(
            f"the {sweeper} sweeper has no option hydra.sweeper.{key}; {hint}its options: {', '.join(known)}"
        )


class FolderSweeper(Sweeper):
    """A sweeper whose jobs are named run folders in the sweep folder; subclasses implement `sweep`."""

    name = "folder"

    def __init__(self, max_batch_size: int | None = None) -> None:
        super().__init__()
        if max_batch_size is not None and max_batch_size < 1:
            refuse(f"hydra.sweeper.max_batch_size={max_batch_size}: give a positive number of jobs, or null")
        self.max_batch_size = max_batch_size
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # The sweep folder and the command line.

    @property
    def sweep_dir(self) -> Path:
        assert self.config is not None
        return Path(str(self.config.hydra.sweep.dir))

    def parse(self, arguments: Sequence[str]) -> tuple[list[str], list[list[str]]]:
        """Split the command's overrides into the fixed ones (as typed) and the swept ones, each expanded into its
        values as `key=value` overrides (`+ablation=glob(*)`: one per file of conf/ablation)."""
        loader = self.hydra_context.config_loader if self.hydra_context is not None else None
        try:
            parsed: list[Override] = OverridesParser.create(config_loader=loader).parse_overrides(
                list(arguments)
            )
        except Exception as e:  # Hydra's parser: a malformed override
            refuse(one_line(e))
        fixed, swept = [], []
        for o in parsed:
            if not o.is_sweep_override():
                fixed.append(o.input_line)
            elif o.is_discrete_sweep():
                key = o.get_key_element()
                swept.append([f"{key}={value}" for value in o.sweep_string_iterator()])
            else:
                refuse(f"the {self.name} sweeper takes lists and globs, not {o.input_line}")
        return fixed, swept

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """The config a job with these task overrides would run (Hydra's node included), without running it."""
        assert self.hydra_context is not None and self.config is not None
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    # Jobs.

    def folder(self, subdir: str) -> Path:
        return self.sweep_dir / subdir

    def status(self, subdir: str) -> str | None:
        """results.json's status in the job's folder; None when there is none (or it is unreadable)."""
        try:
            record = json.loads((self.folder(subdir) / "results.json").read_text())
        except (OSError, ValueError):
            return None
        return record.get("status") if isinstance(record, dict) else None

    def ended(self, subdir: str) -> bool:
        """Whether the job's run ended (completed, diverged or failed): a rerun does not launch it again."""
        return self.status(subdir) in ENDED

    def results(self, subdir: str) -> dict[str, Any]:
        """The job's results.json (an empty dict when it has none)."""
        try:
            record = json.loads((self.folder(subdir) / "results.json").read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def launch(self, jobs: Sequence[Job]) -> dict[str, dict[str, Any]]:
        """Launch the jobs whose runs have not ended, in batches of `max_batch_size` (all at once by default),
        through the configured launcher; return every job's results.json by subdir. A job that raised is a
        run with a `failed` results.json (run.py writes it) or none: its return value is never read.
        The costliest jobs go first (a stable sort on `Job.cost`): a launcher with fewer workers than jobs hands
        them out in order, so a batch ends on short jobs instead of one long job running while the others wait."""
        todo = sorted((job for job in jobs if not self.ended(job.subdir)), key=lambda job: -job.cost)
        size = self.max_batch_size or max(len(todo), 1)
        for start in range(0, len(todo), size):
            batch = todo[start : start + size]
            overrides = [[*job.overrides, f"hydra.sweep.subdir={job.subdir}"] for job in batch]
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
            self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(batch)
        return {job.subdir: self.results(job.subdir) for job in jobs}

    # State files in the sweep folder.

    def read_state(self, name: str) -> dict[str, Any] | None:
        path = self.sweep_dir / name
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            fail(f"{path}: unreadable ({one_line(e)}); move it away to start over", 1)
        return state if isinstance(state, dict) else None

    def write_state(self, name: str, state: Mapping[str, Any]) -> Path:
        """Write a JSON state file atomically (a temporary file renamed over the old one)."""
        path = self.sweep_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=2, default=str) + "\n")
        tmp.replace(path)
        return path

    def save_multirun_yaml(self) -> None:
        """multirun.yaml, as Hydra's basic sweeper writes it: the sweep's composed config."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")


def override_key(override: str) -> str:
    """`+ablation=act_relu` -> `ablation`."""
    return override.partition("=")[0].lstrip("+~")
