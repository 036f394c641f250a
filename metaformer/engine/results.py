"""The run folder's own files: `results.json` (one flat record per run, the contract `analysis/` reads,
docs/run-folder.md) and `.hydra/`, and where the folder is.

results.json is written when a run starts (`status: running`) and rewritten when it ends (completed, diverged,
failed or preempted), always atomically (a temporary file renamed over the old one), so a reader never sees half a
file. Keys are only ever added, never renamed. Non-finite numbers are written as null to keep the file strict JSON.
A job refused before training writes nothing into a folder that holds a run, and a `failed` results.json into a
new one (`record_refusal`), so a sweep's table lists it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from metaformer.engine.checkpoint import LAST
from metaformer.errors import ConfigError, one_line

if TYPE_CHECKING:
    from metaformer.engine.validation import RunSpec

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


def run_identity(cfg: DictConfig, data_name: str | None, spec: RunSpec | None = None) -> dict[str, Any]:
    """The keys that say what was trained: model, mixers, norm, act (the built model's, per stage or one name
    when every stage has the same; the config's own when `spec` is None: a refused run), seed, data, the row."""
    ablation = cfg.get("ablation") or {}
    block = (
        {"mixers": spec.mixers, "norm": _one_or_all(spec.norms), "act": _one_or_all(spec.acts)}
        if spec is not None
        else {
            "mixers": _name_or_names(cfg.get("mixer")),
            "norm": _name_or_names(cfg.get("norm")),
            "act": _name_or_names(cfg.get("act")),
        }
    )
    return {
        **block,
        "seed": cfg.seed,
        "model": cfg.model.name,
        "data": data_name,
        "label": ablation.get("label"),
        "ablation": ablation.get("name"),
        "group": ablation.get("group"),
        "paper_top1": ablation.get("paper_top1"),
    }


def _one_or_all(names: list[str]) -> str | list[str]:
    return names[0] if len(set(names)) == 1 else list(names)


def _name_or_names(value: Any) -> str | list[str] | None:
    return value if value is None or isinstance(value, str) else [str(v) for v in value]


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


def run_dir_of(cfg: DictConfig) -> Path:
    """The run folder: `output_dir` from the config, which defaults to Hydra's output folder."""
    out = OmegaConf.select(cfg, "output_dir", throw_on_resolution_failure=False)
    if not out:
        raise ConfigError("no output folder: run through run.py (Hydra) or set output_dir=PATH")
    return Path(str(out)).resolve()


def save_hydra_files(run_dir: Path, cfg: DictConfig) -> None:
    """Write `.hydra/` (config.yaml, hydra.yaml, overrides.yaml) as Hydra does, once the run has started.

    conf/config.yaml sets `hydra.output_subdir: null`, so that Hydra does not write them before the job runs:
    a refused command must not overwrite the files of the run it was pointed at. Outside Hydra, or when the
    user set `hydra.output_subdir` (Hydra then wrote them), nothing is written here.
    """
    if not HydraConfig.initialized() or HydraConfig.get().output_subdir is not None:
        return
    hydra_cfg = HydraConfig.instance().cfg
    assert hydra_cfg is not None
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"config.yaml": cfg, "hydra.yaml": hydra_cfg, "overrides.yaml": hydra_cfg.hydra.overrides.task}
    for name, node in files.items():
        (folder / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")


def record_refusal(
    cfg: DictConfig, run_dir: Path | None, error: Exception, spec: RunSpec | None = None
) -> None:
    """Leave a `failed` results.json with the error (and `.hydra/`, which the analysis looks for) in a new run
    folder whose job was refused before training (one job of a sweep, say), so the analysis lists it. A folder
    that already holds a run (results.json or last.pt) is left exactly as it was, and so is one that is not
    there."""
    if run_dir is None or not run_dir.is_dir() or any((run_dir / f).exists() for f in (RESULTS_FILE, LAST)):
        return
    message = one_line(error)
    try:
        identity = run_identity(cfg, cfg.data.get("name"), spec)
    except Exception:  # a config too broken to describe: the error says why
        identity = {}
    error_text = message if isinstance(error, ConfigError) else f"{type(error).__name__}: {message}"
    with contextlib.suppress(OSError):
        save_hydra_files(run_dir, cfg)
        write_results(
            run_dir, {"status": "failed", "epochs": 0, **identity, **git_state(), "error": error_text}
        )
