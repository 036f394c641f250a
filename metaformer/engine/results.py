"""The run folder's `results.json`: one flat record per run, the contract `analysis/` reads (docs/run-folder.md).

It is written when a run starts (`status: running`) and rewritten when it ends (completed, diverged, failed or
preempted), always atomically (a temporary file renamed over the old one), so a reader never sees half a file.
Keys are only ever added, never renamed. Non-finite numbers are written as null to keep the file strict JSON.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

RESULTS_FILE = "results.json"
PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The keys every results.json has (null where a run has no value), in the order they are written.
RESULT_KEYS = (
    "status", "top1", "top5", "best_top1", "best_top5", "best_epoch", "loss", "epochs", "params_m", "gmacs",
    "train_img_per_s", "wall_s", "mixers", "norm", "act", "seed", "model", "data", "label", "ablation", "group",
    "paper_top1", "git_commit",
)  # fmt: skip


def git_state(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """`git_commit` (the project's HEAD, None outside git) and `git_dirty` (tracked files changed since)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": bool(dirty) if commit else None}


def run_identity(cfg: DictConfig, mixers: Any, data_name: str | None) -> dict[str, Any]:
    """The keys that say what was trained: model, mixers, norm, act, seed, data and the ablation row."""
    ablation = cfg.get("ablation") or {}
    return {
        "mixers": [mixers] if isinstance(mixers, str) else [str(m) for m in mixers],
        "norm": _name_or_names(cfg.norm),  # one name, or one per stage
        "act": _name_or_names(cfg.act),
        "seed": cfg.seed,
        "model": cfg.model.name,
        "data": data_name,
        "label": ablation.get("label"),
        "ablation": ablation.get("name"),
        "group": ablation.get("group"),
        "paper_top1": ablation.get("paper_top1"),
    }


def _name_or_names(value: Any) -> str | list[str]:
    return value if isinstance(value, str) else [str(v) for v in value]


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(run_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write `results` to `run_dir/results.json` atomically, contract keys first; return the path."""
    path = Path(run_dir) / RESULTS_FILE
    record = {key: _finite(results.get(key)) for key in RESULT_KEYS}
    record.update({k: _finite(v) for k, v in results.items() if k not in record})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_results(run_dir: str | Path) -> dict[str, Any]:
    """The results.json of a run folder."""
    return json.loads((Path(run_dir) / RESULTS_FILE).read_text())
