"""A launcher that trains nothing: it writes each job's run folder with results made up by a function of the
job's overrides, so the sweepers' scheduling is tested in-process in milliseconds per job."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


class FakeLauncher:
    """Stands in for Hydra's launcher: `launch` writes `.hydra/` and a results.json per job, from `outcome`."""

    def __init__(self, sweep_dir: Path, outcome: Callable[[dict[str, str]], dict[str, Any]]) -> None:
        self.sweep_dir = sweep_dir
        self.outcome = outcome
        self.launched: list[str] = []  # every job's subdir, in launch order
        self.batches: list[int] = []  # the number of jobs of each launch call
        self.interrupt_after: int | None = None  # raise KeyboardInterrupt once this many jobs have launched

    def launch(self, job_overrides, initial_job_idx):
        self.batches.append(len(job_overrides))
        for overrides in job_overrides:
            pairs = dict(o.lstrip("+").split("=", 1) for o in overrides)
            subdir = pairs.pop("hydra.sweep.subdir")
            folder = self.sweep_dir / subdir
            (folder / ".hydra").mkdir(parents=True, exist_ok=True)
            task = [o for o in overrides if not o.startswith("hydra.")]
            (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(task))
            (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
            if self.interrupt_after is not None and len(self.launched) >= self.interrupt_after:
                (folder / "results.json").write_text(json.dumps({"status": "running"}))
                raise KeyboardInterrupt  # a kill while this job trains
            self.launched.append(subdir)
            record = {
                "status": "completed",
                "seed": int(pairs.get("seed", 0)),
                "epochs": 1,
                **self.outcome(pairs),
            }
            (folder / "results.json").write_text(json.dumps(record))
        return []


def _faked(real_setup: Callable[..., None], fake: FakeLauncher) -> Callable[..., None]:
    def setup(self, **kwargs):
        real_setup(self, **kwargs)
        self.launcher = fake

    return setup


@pytest.fixture
def fake_launcher(monkeypatch, tmp_path) -> Callable[..., FakeLauncher]:
    """`fake_launcher(outcome)`: every sweeper set up from now on launches through a FakeLauncher writing into
    tmp_path/sweep (give hydra.sweep.dir=<tmp_path>/sweep); returns it."""
    from hydra.core.plugins import Plugins

    def install(outcome: Callable[[dict[str, str]], dict[str, Any]]) -> FakeLauncher:
        fake = FakeLauncher(tmp_path / "sweep", outcome)
        # The classes Hydra instantiates: its plugin scan executes the modules again (a loader's load_module), so
        # they need not be the ones an import here would give.
        for cls in Plugins.instance().class_name_to_class.values():
            if cls.__module__.startswith("hydra_plugins.metaformer_sweepers"):
                monkeypatch.setattr(cls, "setup", _faked(cls.setup, fake))
        return fake

    return install
